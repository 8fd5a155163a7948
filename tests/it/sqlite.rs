//! The SQLite checkpointer check against real SQLite files: a healthy LangGraph file, a missing
//! file, corrupt files, and a file written by another process in WAL mode while the agent reads
//! (the writer must never see SQLITE_BUSY).

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rose_agent::check::sqlite::{QuickCheck, SqliteErrorKind, read_store};
use rusqlite::Connection;
use support::*;

/// LangGraph's SqliteSaver.setup() script.
const SETUP: &str = "PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS checkpoints (
    thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '', checkpoint_id TEXT NOT NULL,
    parent_checkpoint_id TEXT, type TEXT, checkpoint BLOB, metadata BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id));
CREATE TABLE IF NOT EXISTS writes (
    thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '', checkpoint_id TEXT NOT NULL,
    task_id TEXT NOT NULL, idx INTEGER NOT NULL, channel TEXT NOT NULL, type TEXT, value BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx));";

fn langgraph_db(path: &Path, rows: u32) -> Connection {
    let c = Connection::open(path).unwrap();
    c.execute_batch(SETUP).unwrap();
    for i in 0..rows {
        insert(&c, i);
    }
    c
}

fn insert(c: &Connection, i: u32) {
    c.execute(
        "INSERT INTO checkpoints (thread_id, checkpoint_id, type, checkpoint, metadata) VALUES (?1, ?2, 'msgpack', randomblob(300), x'00')",
        (format!("thread-{}", i % 7), format!("cp-{i:08}")),
    )
    .unwrap();
}

fn sqlite_agent(path: &Path) -> Agent {
    Agent::start(&[
        ("SHORT_TERM_MEMORY_DB_PATH", path.display().to_string()),
        ("AGENT_INTERVAL", "200ms".into()),
        ("AGENT_SLOW_INTERVAL", "200ms".into()),
        ("AGENT_APP_PROBES", "off".into()),
    ])
}

fn until(agent: &Agent, what: &str, f: impl Fn(&Metrics) -> bool) -> Metrics {
    let mut last = Metrics::default();
    let ok = wait_for(Duration::from_secs(10), || {
        last = agent.metrics();
        f(&last)
    });
    assert!(
        ok.is_some(),
        "{what}: not seen\n{:#?}\n{}",
        last.0
            .iter()
            .filter(|(k, _)| k.starts_with("rose_sqlite") || k.starts_with("rose_checkpoint"))
            .collect::<Vec<_>>(),
        agent.output()
    );
    last
}

#[test]
fn healthy_langgraph_file_is_readable_with_sizes_and_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let _app = langgraph_db(&path, 50);
    let agent = sqlite_agent(&path);
    let m = until(&agent, "readable", |m| {
        m.get("rose_sqlite_readable") == Some(1.0)
    });
    assert_eq!(m.get("rose_sqlite_file_present"), Some(1.0));
    assert!(m.get("rose_sqlite_file_bytes").unwrap() > 0.0);
    assert!(
        m.get("rose_sqlite_wal_bytes").unwrap() > 0.0,
        "the app holds the WAL open"
    );
    assert_eq!(m.get("rose_sqlite_journal_mode_wal"), Some(1.0));
    assert_eq!(
        m.get(r#"rose_sqlite_table_present{table="checkpoints"}"#),
        Some(1.0)
    );
    assert_eq!(
        m.get(r#"rose_sqlite_table_present{table="writes"}"#),
        Some(1.0)
    );
    assert_eq!(
        m.get(r#"rose_sqlite_rows_estimate{table="checkpoints"}"#),
        Some(50.0)
    );
    assert_eq!(m.get("rose_sqlite_quick_check_ok"), Some(1.0));
    assert!(
        m.get(r#"rose_checkpoint_store_bytes{backend="sqlite"}"#)
            .unwrap()
            > 0.0
    );
    assert_eq!(
        m.get(r#"rose_checkpoint_backend_configured{backend="sqlite"}"#),
        Some(1.0)
    );
    // The volume holding the file is watched.
    assert!(
        m.0.keys()
            .any(|k| k.starts_with("rose_host_disk_used_ratio{mount=")),
        "{m:?}"
    );
    // Growth shows once the window has two readings.
    until(&agent, "growth", |m| {
        m.get("rose_sqlite_growth_bytes_per_second").is_some()
    });
}

#[test]
fn missing_file_is_reported_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let agent = sqlite_agent(&path);
    let m = until(&agent, "missing", |m| {
        m.get(r#"rose_sqlite_error{kind="missing"}"#) == Some(1.0)
    });
    assert_eq!(m.get("rose_sqlite_file_present"), Some(0.0));
    assert_eq!(m.get("rose_sqlite_readable"), Some(0.0));
    assert_eq!(m.get("rose_sqlite_file_bytes"), None);
    assert!(!path.exists(), "the agent must not create the file");
    // It appears later (the app started): picked up without a restart.
    let _app = langgraph_db(&path, 3);
    until(&agent, "appeared", |m| {
        m.get("rose_sqlite_readable") == Some(1.0)
    });
}

#[test]
fn garbage_file_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    std::fs::write(&path, "this is not a database, just text\n".repeat(200)).unwrap();
    let agent = sqlite_agent(&path);
    let m = until(&agent, "not a database", |m| {
        m.get(r#"rose_sqlite_error{kind="not_a_database"}"#) == Some(1.0)
    });
    assert_eq!(m.get("rose_sqlite_readable"), Some(0.0));
    assert_eq!(m.get("rose_sqlite_file_present"), Some(1.0));
    assert!(!agent.output().contains("panicked"));
}

#[test]
fn damaged_pages_fail_quick_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    {
        let c = langgraph_db(&path, 400);
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    // Overwrite the middle of the file (b-tree pages) with garbage, header intact.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 40_000, "{}", bytes.len());
    let mid = bytes.len() / 2;
    for (i, b) in bytes[mid..mid + 8192].iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    std::fs::write(&path, &bytes).unwrap();

    let (counts, qc) = read_store(&path, true);
    let corrupt = match (&counts.error, &qc) {
        (_, QuickCheck::Problems { lines, .. }) => !lines.is_empty(),
        (Some(e), _) => e.kind == SqliteErrorKind::Corrupt,
        _ => false,
    };
    assert!(corrupt, "{counts:?} {qc:?}");

    let agent = sqlite_agent(&path);
    until(&agent, "corrupt", |m| {
        m.get("rose_sqlite_quick_check_ok") == Some(0.0)
            || m.get(r#"rose_sqlite_error{kind="corrupt"}"#) == Some(1.0)
    });
}

#[test]
fn wal_writer_is_never_blocked_while_the_agent_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    drop(langgraph_db(&path, 10));
    let agent = sqlite_agent(&path);
    until(&agent, "readable", |m| {
        m.get("rose_sqlite_readable") == Some(1.0)
    });

    // In-process readers too, running the agent's read path (with quick_check) flat out.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (p, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let (c, _) = read_store(&p, true);
                    assert!(c.error.is_none(), "reader failed: {c:?}");
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    // The writer: another process's view of the file, one transaction per insert, and a busy
    // timeout short enough that any lock the readers held would surface as SQLITE_BUSY.
    let writer = Connection::open(&path).unwrap();
    writer.busy_timeout(Duration::from_millis(20)).unwrap();
    writer.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
    let started = Instant::now();
    let mut inserts = 0u32;
    let mut busy = 0u32;
    while started.elapsed() < Duration::from_secs(3) {
        match writer.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_id, checkpoint) VALUES ('w', ?1, randomblob(500))",
            [format!("w-{inserts:08}")],
        ) {
            Ok(_) => inserts += 1,
            Err(e) => {
                busy += 1;
                eprintln!("writer error: {e}");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u32 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    eprintln!("{inserts} inserts, {reads} in-process reads, {busy} writer errors");
    assert_eq!(busy, 0, "the writer was blocked");
    assert!(
        inserts > 500 && reads > 5,
        "{inserts} inserts, {reads} reads"
    );
    let want = f64::from(10 + inserts);
    let m = until(&agent, "rows seen", |m| {
        m.get(r#"rose_sqlite_rows_estimate{table="checkpoints"}"#) == Some(want)
    });
    assert_eq!(m.get("rose_sqlite_readable"), Some(1.0));
    assert_eq!(
        m.get(r#"rose_checkpoint_store_growing{backend="sqlite"}"#),
        Some(1.0)
    );
}
