//! "Were the conversations migrated?" (issue 19 part 1) with LangGraph's real savers: threads
//! written to SQLite by `SqliteSaver`, part of them copied by the runbook's own script
//! (`scripts/migrate_threads.py`: `SqliteSaver.list` into `PostgresSaver.put` + `put_writes`),
//! more written to SQLite after the switch; `agent diagnose` and `agent run` must count exactly
//! the missing and the stale threads, raise `migration_incomplete`, and show no thread id in
//! `/metrics` or any log; after the full procedure nothing is missing or stale.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

/// The WhatsApp interface's thread ids: senders' numbers.
const THREADS: [&str; 5] = [
    "+4917655502001",
    "+4917655502002",
    "+4917655502003",
    "+4917655502004",
    "+4917655502005",
];

/// Puts `n` checkpoints (each with a message in its state and a pending write) on each thread
/// through `SqliteSaver`, as the app's interfaces do.
const WRITE_PY: &str = r#"
import sys
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.base import empty_checkpoint
path, threads, n = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
with SqliteSaver.from_conn_string(path) as s:
    s.setup()
    for t in threads:
        cfg = {"configurable": {"thread_id": t, "checkpoint_ns": ""}}
        latest = s.get_tuple(cfg)
        msgs = list(latest.checkpoint["channel_values"].get("messages", [])) if latest else []
        parent = latest.config if latest else cfg
        for i in range(n):
            msgs.append(f"turn {len(msgs)}")
            cp = empty_checkpoint()
            v = f"{len(msgs):08d}.0"
            cp["channel_values"] = {"messages": list(msgs)}
            cp["channel_versions"] = {"messages": v}
            parent = s.put(parent, cp, {"source": "loop", "step": len(msgs)}, {"messages": v})
            s.put_writes(parent, [("messages", f"pending {len(msgs)}")], "task-1")
"#;

/// Each thread's newest checkpoint as each saver returns it: id, messages, pending writes.
const DUMP_PY: &str = r#"
import json, sqlite3, sys
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.postgres import PostgresSaver
path, dsn, threads = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
def dump(saver):
    out = {}
    for t in threads:
        tup = saver.get_tuple({"configurable": {"thread_id": t, "checkpoint_ns": ""}})
        out[t] = None if tup is None else [
            tup.config["configurable"]["checkpoint_id"],
            tup.checkpoint["channel_values"].get("messages"),
            [[c, v] for (_, c, v) in tup.pending_writes or []],
            len(list(saver.list({"configurable": {"thread_id": t}}))),
        ]
    return out
conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
src = SqliteSaver(conn)
src.is_setup = True
with PostgresSaver.from_conn_string(dsn) as dst:
    print(json.dumps({"sqlite": dump(src), "postgresql": dump(dst)}))
"#;

fn run_py(py: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("timeout")
        .arg("120")
        .arg(py)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(py: &Path, db: &Path, threads: &[&str], n: u32) {
    run_py(
        py,
        &[
            "-c",
            WRITE_PY,
            db.to_str().unwrap(),
            &threads.join(","),
            &n.to_string(),
        ],
        &[],
    );
}

/// The runbook's procedure, the script file itself.
fn migrate(py: &Path, db: &Path, dsn: &str, threads: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/migrate_threads.py");
    let mut args = vec![script.to_str().unwrap()];
    args.extend_from_slice(threads);
    run_py(
        py,
        &args,
        &[
            ("SHORT_TERM_MEMORY_DB_PATH", db.to_str().unwrap()),
            ("DATABASE_URL", dsn),
        ],
    )
}

fn finding<'a>(report: &'a serde_json::Value, code: &str) -> Option<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["code"] == code))
}

fn assert_no_thread_id(what: &str, text: &str) {
    for t in THREADS {
        // The whole id, and without its `+`.
        assert!(
            !text.contains(t) && !text.contains(&t[1..]),
            "{what} shows a thread id: {text}"
        );
    }
}

#[test]
fn missing_and_stale_threads_are_counted_and_the_runbook_copies_them() {
    let Some(py) = langgraph::migration_python() else {
        return;
    };
    let pg = PgCluster::start_with(ClusterOpts {
        schema: false,
        ..Default::default()
    });
    let dsn = langgraph::superuser_url(&pg);
    langgraph::setup(&py, &dsn);
    // The runbook's grant: the monitoring role reads the ids, not the conversations.
    pg.psql(&format!(
        "GRANT SELECT ON checkpoint_migrations TO {MONITOR_USER}; \
         GRANT SELECT (thread_id, checkpoint_ns, checkpoint_id) ON checkpoints TO {MONITOR_USER}"
    ));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("memory.db");

    // Before the switch: five conversations in SQLite; three migrated; then one of those
    // goes on in SQLite (an interface still builds SqliteSaver).
    write(&py, &db, &THREADS, 3);
    let out = migrate(&py, &db, &dsn, &THREADS[..3]);
    assert!(out.contains("threads=3 checkpoints_copied=9"), "{out}");
    assert_no_thread_id("the script's output", &out);
    write(&py, &db, &THREADS[1..2], 2);

    let env = vec![
        ("AGENT_DATABASE_URL", pg.monitor_url()),
        ("SHORT_TERM_MEMORY_DB_PATH", db.display().to_string()),
        ("FEATURE_DATABASE_TYPE", "postgresql".into()),
        ("AGENT_APP_PROBES", "off".into()),
        ("AGENT_INTERVAL", "1s".into()),
        ("AGENT_SLOW_INTERVAL", "1s".into()),
        ("AGENT_CHECKPOINT_GROWTH_WINDOW", "2s".into()),
    ];
    let (_, report, all) = diagnose(&env, &[]);
    let f = finding(&report, "migration_incomplete")
        .unwrap_or_else(|| panic!("no migration_incomplete: {report:#}"));
    assert_eq!(f["severity"], "critical", "{f:#}");
    let ev = f["evidence"].as_str().unwrap();
    assert!(
        ev.contains("threads: SQLite 5, PostgreSQL 3; only in SQLite: 2 (e.g. +49…04, +49…05); newer in SQLite than in PostgreSQL: 1 (e.g. +49…02)"),
        "{ev}"
    );
    assert_no_thread_id("agent diagnose", &all);

    let mut agent = Agent::start(&env);
    let want = [
        ("rose_migration_threads{store=\"sqlite\"}", 5.0),
        ("rose_migration_threads{store=\"postgresql\"}", 3.0),
        ("rose_migration_threads_missing", 2.0),
        ("rose_migration_threads_stale", 1.0),
    ];
    let seen = wait_for(Duration::from_secs(30), || {
        let m = agent.metrics();
        want.iter().all(|(k, v)| m.get(k) == Some(*v))
    });
    let (_, body) = agent.get("/metrics");
    assert!(seen.is_some(), "{body}");
    assert_no_thread_id("/metrics", &body);
    // The finding on the running agent too (active or pending its hold time).
    let found = wait_for(Duration::from_secs(30), || {
        agent.get("/findings").1.contains("migration_incomplete")
    });
    let (_, findings) = agent.get("/findings");
    assert!(found.is_some(), "{findings}");
    assert_no_thread_id("/findings", &findings);
    agent.terminate();
    assert_no_thread_id("the agent's log", &agent.output());

    // The runbook's procedure for everything: copies the two missing threads and the two
    // newer checkpoints, skips the rest.
    let out = migrate(&py, &db, &dsn, &[]);
    assert!(
        out.contains("threads=5 checkpoints_copied=8 checkpoints_skipped=9 writes_copied=8"),
        "{out}"
    );
    let dump: serde_json::Value = serde_json::from_str(&run_py(
        &py,
        &[
            "-c",
            DUMP_PY,
            db.to_str().unwrap(),
            &dsn,
            &THREADS.join(","),
        ],
        &[],
    ))
    .unwrap();
    assert_eq!(dump["sqlite"], dump["postgresql"], "{dump:#}");
    assert_eq!(dump["postgresql"][THREADS[1]][3], 5, "{dump:#}");
    assert_eq!(
        dump["postgresql"][THREADS[1]][2],
        serde_json::json!([["messages", "pending 5"]]),
        "{dump:#}"
    );

    let (_, report, _) = diagnose(&env, &[]);
    assert!(
        finding(&report, "migration_incomplete").is_none(),
        "{report:#}"
    );
    let agent = Agent::start(&env);
    let seen = wait_for(Duration::from_secs(30), || {
        let m = agent.metrics();
        m.get("rose_migration_threads{store=\"postgresql\"}") == Some(5.0)
            && m.get("rose_migration_threads_missing") == Some(0.0)
            && m.get("rose_migration_threads_stale") == Some(0.0)
    });
    assert!(seen.is_some(), "{}", agent.get("/metrics").1);
}
