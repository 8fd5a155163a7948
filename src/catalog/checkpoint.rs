//! Checkpoint store metrics: the SQLite checkpointer file (`rose_sqlite_*`, check
//! `sqlite_checkpointer`) and where checkpoints grow on each side (`rose_checkpoint_*`, check
//! `checkpoint_migration`), and which threads make PostgreSQL grow (check `checkpoint_threads`).

metrics! {
    list CHECKPOINT;

    SQLITE_PRESENT = "rose_sqlite_file_present", Gauge, "1", [],
        "1 when SHORT_TERM_MEMORY_DB_PATH exists, else 0.";
    SQLITE_READABLE = "rose_sqlite_readable", Gauge, "1", [],
        "1 when the file opened read-only and answered a query, else 0.";
    SQLITE_ERROR = "rose_sqlite_error", Gauge, "1", ["kind"],
        "1 for the kind of the last open/read failure: missing, permission, not_a_database, corrupt, busy, io, other.";
    SQLITE_FILE_BYTES = "rose_sqlite_file_bytes", Gauge, "bytes", [],
        "Size of the SQLite checkpointer file (the main file, without WAL).";
    SQLITE_WAL_BYTES = "rose_sqlite_wal_bytes", Gauge, "bytes", [],
        "Size of its write-ahead log (-wal file; 0 when absent).";
    SQLITE_QUICK_CHECK_OK = "rose_sqlite_quick_check_ok", Gauge, "1", [],
        "1 when PRAGMA quick_check reported ok, 0 when it reported problems (absent when it ran out of time or could not run).";
    SQLITE_QUICK_CHECK_DURATION = "rose_sqlite_quick_check_duration_seconds", Gauge, "seconds", [],
        "Duration of the last quick_check (bounded; cut off at its budget).";
    SQLITE_TABLE_PRESENT = "rose_sqlite_table_present", Gauge, "1", ["table"],
        "1 when LangGraph's SQLite table (checkpoints, writes) exists, else 0.";
    SQLITE_ROWS = "rose_sqlite_rows_estimate", Gauge, "1", ["table"],
        "Highest rowid of the table: a cheap row-count estimate that rises with every insert.";
    SQLITE_JOURNAL_WAL = "rose_sqlite_journal_mode_wal", Gauge, "1", [],
        "1 when the file is in WAL mode (as LangGraph's SqliteSaver sets it), else 0.";
    SQLITE_GROWTH = "rose_sqlite_growth_bytes_per_second", Gauge, "bytes/s", [],
        "Growth of file plus WAL over the growth window, bytes per second (absent until two readings).";

    CHECKPOINT_STORE_BYTES = "rose_checkpoint_store_bytes", Gauge, "bytes", ["backend"],
        "Size of the checkpoint store per backend: sqlite (file + WAL) or postgresql (checkpoints, checkpoint_blobs, checkpoint_writes with indexes and TOAST); deriv() shows growth.";
    CHECKPOINT_STORE_ROWS = "rose_checkpoint_store_rows", Gauge, "1", ["backend"],
        "Row-count estimate of the checkpoint tables per backend (SQLite: max rowid; PostgreSQL: reltuples).";
    CHECKPOINT_STORE_WRITES = "rose_checkpoint_store_writes_total", Counter, "1", ["backend"],
        "Rows written to the checkpoint tables as the backend counts them (SQLite: max rowid; PostgreSQL: n_tup_ins + n_tup_upd, reset with statistics).";
    CHECKPOINT_STORE_GROWING = "rose_checkpoint_store_growing", Gauge, "1", ["backend"],
        "1 when the backend's checkpoint store grew within the growth window, 0 when it did not (absent until two readings).";
    CHECKPOINT_PG_TABLE_PRESENT = "rose_checkpoint_pg_table_present", Gauge, "1", ["table"],
        "1 when LangGraph's PostgreSQL table (checkpoints, checkpoint_blobs, checkpoint_writes) exists, else 0.";
    CHECKPOINT_CONFIGURED = "rose_checkpoint_backend_configured", Gauge, "1", ["backend"],
        "1 for the backend FEATURE_DATABASE_TYPE selects, 0 for the other.";
    CHECKPOINT_MISPLACED = "rose_checkpoint_writes_on_unconfigured_backend", Gauge, "1", [],
        "1 when checkpoints grow only on the backend FEATURE_DATABASE_TYPE does not select (migration not effective, or rollback still writing to PostgreSQL), else 0.";
    MIGRATION_THREADS = "rose_migration_threads", Gauge, "1", ["store"],
        "Conversation threads per checkpoint store (sqlite, postgresql), counted by the migration comparison; at most 10000 read per store (more: the figures are lower bounds).";
    MIGRATION_THREADS_MISSING = "rose_migration_threads_missing", Gauge, "1", [],
        "Threads in SQLite that PostgreSQL does not have (not migrated).";
    MIGRATION_THREADS_STALE = "rose_migration_threads_stale", Gauge, "1", [],
        "Threads whose newest checkpoint in SQLite is newer than in PostgreSQL (written to SQLite after the switch).";

    // --- which conversations grow PostgreSQL (check `checkpoint_threads`, slow cadence) ---
    CHECKPOINT_THREADS_READABLE = "rose_checkpoint_threads_readable", Gauge, "1", [],
        "1 when the monitoring role may read LangGraph's checkpoints and checkpoint_blobs (per-thread sizes known), 0 when it may not (see scripts/create-monitoring-role.sql).";
    CHECKPOINT_THREADS = "rose_checkpoint_threads", Gauge, "1", [],
        "Threads (conversations) with at least one checkpoint in PostgreSQL.";
    CHECKPOINT_THREAD_CHECKPOINTS = "rose_checkpoint_thread_checkpoints", Gauge, "1", ["quantile"],
        "Checkpoints per thread at the quantile (0.5 median, 0.99) over all threads; LangGraph keeps one per step.";
    CHECKPOINT_THREAD_MAX_CHECKPOINTS = "rose_checkpoint_thread_max_checkpoints", Gauge, "1", [],
        "Checkpoints of the thread with the most (no thread id is exported).";
    CHECKPOINT_THREAD_MAX_BYTES = "rose_checkpoint_thread_max_bytes", Gauge, "bytes", [],
        "Stored bytes of the largest thread: its checkpoint rows (checkpoint + metadata) plus its blobs, as stored (compressed).";
    CHECKPOINT_MAX_ROW_BYTES = "rose_checkpoint_max_row_bytes", Gauge, "bytes", [],
        "Stored bytes of the largest single checkpoint row (checkpoint + metadata).";
    CHECKPOINT_MAX_BLOB_BYTES = "rose_checkpoint_max_blob_bytes", Gauge, "bytes", [],
        "Stored bytes of the largest single checkpoint_blobs value (absent without blobs).";
}
