#!/usr/bin/env python3
"""Copy LangGraph conversation threads from the SQLite checkpointer to PostgreSQL with
LangGraph's own savers (docs/runbooks/migration_incomplete.md).

    SHORT_TERM_MEMORY_DB_PATH=/app/data/memory.db DATABASE_URL=postgresql://... \
        python scripts/migrate_threads.py [THREAD_ID ...]

Reads the SQLite file read-only (SqliteSaver.list, pending writes included) and writes every
checkpoint PostgreSQL does not have yet, oldest first, with PostgresSaver.put and put_writes.
Idempotent: a checkpoint already in PostgreSQL (same thread, namespace and id) is skipped, so
it can run again after SQLite was written to, and it never deletes or overwrites anything.
Without arguments it copies every thread; with arguments only those threads. It prints counts,
never thread ids (they are user identifiers, e.g. WhatsApp numbers).

Needs: langgraph-checkpoint-sqlite, langgraph-checkpoint-postgres, psycopg[binary].
"""
import os
import sqlite3
import sys
from collections import defaultdict

USAGE = (
    "usage: SHORT_TERM_MEMORY_DB_PATH=FILE DATABASE_URL=DSN "
    "python scripts/migrate_threads.py [THREAD_ID ...]"
)


def main() -> int:
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = os.environ["SHORT_TERM_MEMORY_DB_PATH"]
    dsn = os.environ["DATABASE_URL"]
    only = set(sys.argv[1:])
    # Read-only: the copy must not change the rollback file. SqliteSaver.setup() would write
    # (journal mode, CREATE TABLE), so mark it done: the tables exist in a used file.
    src_conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    src = SqliteSaver(src_conn)
    src.is_setup = True
    threads = [
        r[0]
        for r in src_conn.execute("SELECT DISTINCT thread_id FROM checkpoints ORDER BY thread_id")
    ]
    if only:
        threads = [t for t in threads if t in only]
    copied = skipped = writes = 0
    with PostgresSaver.from_conn_string(dsn) as dst:
        dst.setup()  # idempotent: creates or upgrades LangGraph's tables
        for thread_id in threads:
            # All namespaces of the thread; list() yields newest first, parents must go first.
            tuples = list(src.list({"configurable": {"thread_id": thread_id}}))
            for t in reversed(tuples):
                conf = t.config["configurable"]
                ns, cid = conf.get("checkpoint_ns", ""), conf["checkpoint_id"]
                key = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}}
                if dst.get_tuple(key) is not None:
                    skipped += 1
                    continue
                parent = (t.parent_config or {}).get("configurable", {}).get("checkpoint_id")
                put_conf = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
                if parent:
                    put_conf["configurable"]["checkpoint_id"] = parent
                # Every channel version: PostgresSaver stores the blobs put() is told are new.
                new_conf = dst.put(put_conf, t.checkpoint, t.metadata, dict(t.checkpoint["channel_versions"]))
                by_task = defaultdict(list)
                for task_id, channel, value in t.pending_writes or []:
                    by_task[task_id].append((channel, value))
                for task_id, ws in by_task.items():
                    dst.put_writes(new_conf, ws, task_id)
                    writes += len(ws)
                copied += 1
    src_conn.close()
    print(f"threads={len(threads)} checkpoints_copied={copied} checkpoints_skipped={skipped} writes_copied={writes}")
    return 0


if __name__ == "__main__" and sys.argv[1:2] in (["-h"], ["--help"]):
    print(USAGE)
    print(__doc__)
    sys.exit(0)

if __name__ == "__main__":
    sys.exit(main())
