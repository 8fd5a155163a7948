//! "Did the migration take effect?" against a real PostgreSQL cluster (LangGraph schema loaded)
//! and a real SQLite file: the checks run on the real scheduler into the real snapshot, and the
//! `checkpoint_migration` observation must carry the facts.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rose_agent::check::Observation;
use rose_agent::check::checkpoint_migration::MigrationFacts;
use rose_agent::config::Config;
use rose_agent::snapshot::Store;
use rusqlite::Connection;
use support::*;
use tokio_util::sync::CancellationToken;

fn sqlite_file(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE checkpoints (thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '',
           checkpoint_id TEXT NOT NULL, parent_checkpoint_id TEXT, type TEXT, checkpoint BLOB,
           metadata BLOB, PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id));
         CREATE TABLE writes (thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '',
           checkpoint_id TEXT NOT NULL, task_id TEXT NOT NULL, idx INTEGER NOT NULL,
           channel TEXT NOT NULL, type TEXT, value BLOB,
           PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx));",
    )
    .unwrap();
    c
}

/// Runs the agent's checks in-process until `f` accepts the migration facts (bounded).
fn watch_until(
    env: &[(&str, &str)],
    during: impl FnMut() + Send + 'static,
    f: impl Fn(&MigrationFacts) -> bool,
) -> (MigrationFacts, Vec<rose_agent::catalog::Sample>) {
    let env: HashMap<&str, &str> = env.iter().copied().collect();
    let config = Config::load(None, &env).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let bg = {
        let stop = stop.clone();
        let mut during = during;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                during();
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let result = rt.block_on(async {
        let store = Store::new(vec![]);
        let pg = rose_agent::run::pg_target(&config, Some(store.clone()));
        let checks = rose_agent::check::registry(&config, pg);
        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        rose_agent::scheduler::spawn_all(
            &mut tasks,
            &checks,
            config.agent.interval,
            config.agent.slow_interval,
            &store,
            &cancel,
        );
        let mut last = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            let snap = store.current();
            if let Some(Observation::CheckpointMigration(m)) =
                snap.observation("checkpoint_migration")
            {
                if f(m) {
                    let samples =
                        rose_agent::render::all_samples(&snap, std::time::SystemTime::now());
                    cancel.cancel();
                    return Ok((m.clone(), samples));
                }
                last = Some(m.clone());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cancel.cancel();
        Err(last)
    });
    stop.store(true, Ordering::Relaxed);
    bg.join().unwrap();
    result.unwrap_or_else(|last| panic!("facts never matched; last: {last:#?}"))
}

fn value(samples: &[rose_agent::catalog::Sample], name: &str, labels: &[&str]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.def.name == name && s.labels == labels)
        .and_then(|s| s.num())
}

fn env<'a>(url: &'a str, sqlite: &'a str, db_type: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AGENT_DATABASE_URL", url),
        ("SHORT_TERM_MEMORY_DB_PATH", sqlite),
        ("FEATURE_DATABASE_TYPE", db_type),
        ("AGENT_INTERVAL", "1s"),
        ("AGENT_SLOW_INTERVAL", "1s"),
        ("AGENT_CONNECT_TIMEOUT", "300ms"),
        ("AGENT_STATEMENT_TIMEOUT", "300ms"),
        ("AGENT_CHECKPOINT_GROWTH_WINDOW", "30s"),
        ("AGENT_APP_PROBES", "off"),
    ]
}

/// A writer that keeps adding checkpoints to the SQLite file, as the app's interfaces do when
/// they build `SqliteSaver` directly.
fn sqlite_writer(path: &Path) -> impl FnMut() + Send + 'static {
    let c = sqlite_file(path);
    let mut i = 0u32;
    move || {
        i += 1;
        c.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_id, checkpoint) VALUES ('t', ?1, randomblob(2000))",
            [format!("cp-{i:08}")],
        )
        .unwrap();
    }
}

#[test]
fn sqlite_growing_while_postgresql_stays_still_is_not_effective() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let url = pg.monitor_url();
    let sqlite = path.display().to_string();
    let (facts, samples) = watch_until(
        &env(&url, &sqlite, "postgresql"),
        sqlite_writer(&path),
        |m| m.migration_not_effective,
    );
    let sq = facts.sqlite.as_ref().unwrap();
    let pgs = facts.postgresql.as_ref().unwrap();
    assert!(sq.growth.unwrap().growing, "{facts:#?}");
    assert!(sq.growth.unwrap().writes_delta.unwrap() > 0);
    assert!(!pgs.growth.unwrap().growing, "{facts:#?}");
    assert!(facts.pg_tables_missing.is_empty(), "the schema is loaded");
    assert_eq!(pgs.tables_present.len(), 3);
    assert!(!facts.rollback_not_effective);
    // The same facts as series.
    assert_eq!(
        value(
            &samples,
            "rose_checkpoint_writes_on_unconfigured_backend",
            &[]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "rose_checkpoint_store_growing", &["sqlite"]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "rose_checkpoint_store_growing", &["postgresql"]),
        Some(0.0)
    );
    assert!(value(&samples, "rose_checkpoint_store_bytes", &["postgresql"]).unwrap() > 0.0);
    assert!(value(&samples, "rose_checkpoint_store_bytes", &["sqlite"]).unwrap() > 0.0);
    assert_eq!(
        value(
            &samples,
            "rose_checkpoint_backend_configured",
            &["postgresql"]
        ),
        Some(1.0)
    );
}

#[test]
fn missing_postgresql_tables_are_named_and_not_effective() {
    let pg = PgCluster::start_with(ClusterOpts {
        schema: false,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let url = pg.monitor_url();
    let sqlite = path.display().to_string();
    let (facts, samples) = watch_until(
        &env(&url, &sqlite, "postgresql"),
        sqlite_writer(&path),
        |m| m.migration_not_effective,
    );
    assert_eq!(
        facts.pg_tables_missing,
        vec!["checkpoints", "checkpoint_blobs", "checkpoint_writes"]
    );
    assert_eq!(
        value(
            &samples,
            "rose_checkpoint_pg_table_present",
            &["checkpoints"]
        ),
        Some(0.0)
    );
}

#[test]
fn postgresql_growing_is_effective_and_flags_a_rollback_that_did_not_take() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    drop(sqlite_file(&path));
    let url = pg.monitor_url();
    let sqlite = path.display().to_string();
    let port = pg.port;
    let (bin, root) = (pg.bin.clone(), pg.socket_dir());
    let pg_writer = move || {
        // A new session per insert: its statistics are flushed when it ends.
        let out = std::process::Command::new(bin.join("psql"))
            .args(["-X", "-q", "-U", "postgres", "-h"])
            .arg(&root)
            .args(["-p", &port.to_string(), "-d", DBNAME, "-c"])
            .arg(
                "INSERT INTO checkpoints (thread_id, checkpoint_id, checkpoint) VALUES ('t', gen_random_uuid()::text, '{}')",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Configured postgresql and PostgreSQL grows while SQLite stays still: effective.
    let (facts, _) = watch_until(&env(&url, &sqlite, "postgresql"), pg_writer.clone(), |m| {
        m.postgresql
            .as_ref()
            .and_then(|p| p.growth)
            .is_some_and(|g| g.growing)
            && m.sqlite.as_ref().and_then(|s| s.growth).is_some()
    });
    assert!(!facts.migration_not_effective, "{facts:#?}");
    assert!(!facts.rollback_not_effective);
    // Rolled back to sqlite, but checkpoints still land in PostgreSQL.
    let (facts, samples) = watch_until(&env(&url, &sqlite, "sqlite"), pg_writer, |m| {
        m.rollback_not_effective
    });
    assert!(!facts.sqlite.unwrap().growth.unwrap().growing);
    assert_eq!(
        value(
            &samples,
            "rose_checkpoint_writes_on_unconfigured_backend",
            &[]
        ),
        Some(1.0)
    );
}
