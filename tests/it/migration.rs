//! "Did the migration take effect?" against a real PostgreSQL cluster (LangGraph schema loaded)
//! and a real SQLite file: the checks run on the real scheduler into the real snapshot, and the
//! `checkpoint_migration` observation must carry the facts. The partial migration (both stores
//! grow) runs the app's real savers (`PostgresSaver`, `SqliteSaver`) against `agent run` and
//! `agent diagnose`.

use crate::support;

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
use support::langgraph_sqlite::HeldApp;
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

/// The partial-migration scenario (issue 13 item 7) with the app's real libraries: PostgreSQL's
/// tables made by `PostgresSaver.setup()`, one interface writing PostgreSQL through
/// `PostgresSaver.put`, another (WhatsApp: phone-number thread ids) still writing the SQLite
/// file through `SqliteSaver` as the app's own uid.
struct PartialScenario {
    pg: PgCluster,
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    _pg_writer: support::langgraph::PgWriter,
    sqlite_writer: Option<(Arc<AtomicBool>, std::thread::JoinHandle<HeldApp>)>,
}

/// The WhatsApp interface's thread ids: a sender's number (`str.format` pattern).
const WHATSAPP_THREAD: &str = "+4917655501{:02}";

impl PartialScenario {
    /// `None` (a skip) when python3 is missing outside CI.
    fn start() -> Option<PartialScenario> {
        let py = support::langgraph::python()?;
        let pg = PgCluster::start_with(ClusterOpts {
            schema: false,
            ..Default::default()
        });
        let dsn = support::langgraph::superuser_url(&pg);
        support::langgraph::setup(&py, &dsn);
        pg.psql(&format!(
            "GRANT SELECT ON checkpoint_migrations TO {MONITOR_USER}"
        ));
        let pg_writer = support::langgraph::PgWriter::start(
            &py,
            &dsn,
            "web-{}",
            Duration::from_millis(200),
            Duration::from_secs(180),
        );
        let dir = support::langgraph_sqlite::app_dir(true);
        let db = dir.path().join("memory.db");
        let (held, _) = HeldApp::start_env(
            &db,
            3,
            &[
                ("ROSE_TEST_THREAD", WHATSAPP_THREAD),
                ("ROSE_TEST_META_INTERFACE", "whatsapp"),
            ],
        );
        let mut s = PartialScenario {
            pg,
            _dir: dir,
            db,
            _pg_writer: pg_writer,
            sqlite_writer: None,
        };
        s.resume_sqlite(held);
        Some(s)
    }

    /// The WhatsApp interface puts a checkpoint every 300 ms (bounded: 3 minutes).
    fn resume_sqlite(&mut self, mut held: HeldApp) {
        let stop = Arc::new(AtomicBool::new(false));
        let t = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let until = std::time::Instant::now() + Duration::from_secs(180);
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                    held.put(1);
                    std::thread::sleep(Duration::from_millis(300));
                }
                held
            })
        };
        self.sqlite_writer = Some((stop, t));
    }

    /// The interface stops writing (the file stays open: nothing changes in it any more).
    fn pause_sqlite(&mut self) -> HeldApp {
        let (stop, t) = self.sqlite_writer.take().unwrap();
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap()
    }

    fn env(&self, instances: u32) -> Vec<(&'static str, String)> {
        vec![
            ("AGENT_DATABASE_URL", self.pg.monitor_url()),
            ("SHORT_TERM_MEMORY_DB_PATH", self.db.display().to_string()),
            ("FEATURE_DATABASE_TYPE", "postgresql".into()),
            ("AGENT_APP_INSTANCES", instances.to_string()),
            // Small pools: three instances fit the cluster's slots, so the status and exit code
            // come from the migration alone.
            ("DATABASE_POOL_SIZE", "2".into()),
            ("DATABASE_MAX_OVERFLOW", "0".into()),
            ("AGENT_INTERVAL", "1s".into()),
            ("AGENT_SLOW_INTERVAL", "1s".into()),
            ("AGENT_CHECKPOINT_GROWTH_WINDOW", "4s".into()),
            ("AGENT_APP_PROBES", "off".into()),
        ]
    }
}

impl Drop for PartialScenario {
    fn drop(&mut self) {
        if let Some((stop, t)) = self.sqlite_writer.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
    }
}

/// `/findings` until an active `code` appears (bounded); the finding and the whole answer.
fn wait_active(agent: &Agent, code: &str) -> (serde_json::Value, serde_json::Value) {
    let mut last = serde_json::Value::Null;
    let found = wait_for(Duration::from_secs(30), || {
        let (status, body) = agent.get("/findings");
        last = serde_json::from_str(&body).unwrap_or_default();
        status == 200
            && last["findings"]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f["code"] == code))
    });
    assert!(
        found.is_some(),
        "{code} never active: {last:#}\n{}",
        agent.output()
    );
    let f = last["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == code)
        .unwrap()
        .clone();
    (f, last)
}

/// What every surface must say about a partial migration of this severity.
fn assert_partial(f: &serde_json::Value, severity: &str, db: &Path) {
    assert_eq!(f["severity"], severity, "{f:#}");
    let evidence = f["evidence"].as_str().unwrap();
    // Which store grows, by how much.
    let grew = |store: &str| {
        evidence
            .split("; ")
            .find(|p| p.starts_with(store))
            .is_some_and(|p| p.contains(" rows, +"))
    };
    assert!(grew("PostgreSQL +"), "{evidence}");
    assert!(grew(&format!("SQLite {} +", db.display())), "{evidence}");
    // Who still writes SQLite, without a whole phone number.
    assert!(
        evidence.contains("phone-number thread ids")
            && evidence.contains("+49…")
            && evidence.contains("interface=whatsapp"),
        "{evidence}"
    );
    assert!(!evidence.contains("+491765550"), "{evidence}");
    let steps: Vec<&str> = f["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        steps[0].starts_with("Find the interface that still writes SQLite"),
        "{steps:#?}"
    );
    assert!(
        steps[1].contains("Step 3") && steps[1].contains("SqliteSaver"),
        "{steps:#?}"
    );
    assert_eq!(f["runbook"], "docs/runbooks/migration_partial.md");
}

/// Issue 13 item 7: FEATURE_DATABASE_TYPE=postgresql, PostgreSQL's checkpoints grow and the
/// SQLite file still grows. `/findings`, `rose_finding_active` and `agent diagnose` (JSON,
/// text, exit code) report `migration_partial`: warning with one app instance, critical with
/// three; and nothing when only PostgreSQL grows.
#[test]
fn partial_migration_is_reported_on_every_surface() {
    let Some(mut s) = PartialScenario::start() else {
        return;
    };
    for (instances, severity, exit) in [(1, "warning", 1), (3, "critical", 2)] {
        let env = s.env(instances);
        let agent = Agent::start(&env);
        let (f, all) = wait_active(&agent, "migration_partial");
        assert_partial(&f, severity, &s.db);
        assert_eq!(all["status"], severity, "{all:#}");
        assert!(
            !all["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["code"] == "migration_not_effective"),
            "{all:#}"
        );
        let m = agent.metrics();
        assert_eq!(
            m.get(&format!(
                "rose_finding_active{{code=\"migration_partial\",severity=\"{severity}\"}}"
            )),
            Some(1.0),
            "{:?}",
            m.names()
        );
        drop(agent);

        let (code, report, out) = diagnose(&env, &[]);
        let f = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == "migration_partial")
            .unwrap_or_else(|| panic!("no migration_partial: {out}"));
        assert_partial(f, severity, &s.db);
        assert_eq!(code, exit, "{out}");
        let others: Vec<&serde_json::Value> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] != "migration_partial" && f["severity"] != "info")
            .collect();
        assert!(
            others.is_empty(),
            "the exit code must be the migration's: {others:#?}"
        );
        let rung = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "migration")
            .unwrap();
        assert_eq!(rung["status"], severity, "{rung:#}");
        let (code, text) = diagnose_text(&env, &[]);
        assert_eq!(code, exit, "{text}");
        let mark = if severity == "critical" {
            "CRITICAL migration_partial  Partial migration"
        } else {
            "WARNING  migration_partial  Partial migration"
        };
        assert!(text.contains(mark), "{text}");
        assert!(text.contains(&format!("status: {severity}")), "{text}");
    }

    // The interface is fixed: only PostgreSQL grows. Nothing fires, not even pending.
    let held = s.pause_sqlite();
    let env = s.env(3);
    let agent = Agent::start(&env);
    let mut seen = vec![];
    let start = std::time::Instant::now();
    // Two growth windows and the pending cycles: long enough for the finding to show.
    while start.elapsed() < Duration::from_secs(10) {
        let (_, body) = agent.get("/findings");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        for list in ["findings", "pending"] {
            for f in v[list].as_array().into_iter().flatten() {
                let code = f["code"].as_str().unwrap_or("").to_owned();
                if code.starts_with("migration_") && !seen.contains(&code) {
                    seen.push(code);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen.is_empty(), "{seen:?}\n{}", agent.output());
    let (growing_pg, growing_sq) = (
        agent
            .metrics()
            .get("rose_checkpoint_store_growing{backend=\"postgresql\"}"),
        agent
            .metrics()
            .get("rose_checkpoint_store_growing{backend=\"sqlite\"}"),
    );
    assert_eq!(
        (growing_pg, growing_sq),
        (Some(1.0), Some(0.0)),
        "PostgreSQL must be seen growing, SQLite still"
    );
    drop(agent);
    let (_, report, out) = diagnose(&env, &[]);
    assert!(
        !codes(&report).iter().any(|c| c.starts_with("migration_")),
        "{out}"
    );
    assert!(held.close());
}
