//! The guide's PostgreSQL checks against real clusters: each condition is produced for real
//! (a `pg_sleep` past the threshold, a session idle in transaction, a lock-blocked session, a
//! dropped or invalid index, migrations behind, a missing column, a pool budget over the slots,
//! a streaming replica with paused replay) and then seen in the observation and the samples.
//! Runs on whatever `ROSE_PG_BIN` points at (scripts/pg-matrix runs it for 13..18).
//!
//! Most tests run the checks in-process (the same registry `agent run` builds) so they can read
//! the observations findings will judge; one runs the agent binary and reads `/metrics`.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rose_agent::catalog::Sample;
use rose_agent::check::{self, Check, Observation};
use rose_agent::config::Config;
use rose_agent::error::CheckError;
use rose_agent::scheduler::run_once;
use support::*;

/// The registry of `agent run`, driven by hand.
struct Checks {
    rt: tokio::runtime::Runtime,
    checks: Vec<Arc<dyn Check>>,
}

type Run = (Result<Observation, CheckError>, Vec<Sample>);

impl Checks {
    fn new(pg: &PgCluster, extra: &[(&str, String)]) -> Checks {
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("AGENT_DATABASE_URL".into(), pg.monitor_url());
        env.insert("AGENT_INTERVAL".into(), "10s".into());
        env.insert("AGENT_STATEMENT_TIMEOUT".into(), "2s".into());
        env.insert("AGENT_CONNECT_TIMEOUT".into(), "2s".into());
        for (k, v) in extra {
            env.insert((*k).to_owned(), v.clone());
        }
        let config = Config::load(None, &env).unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let checks = {
            let _guard = rt.enter();
            let pg = rose_agent::run::pg_target(&config, None);
            check::registry(&config, pg)
        };
        Checks { rt, checks }
    }

    fn ids(&self) -> Vec<&str> {
        self.checks.iter().map(|c| c.id()).collect()
    }

    fn run(&self, id: &str) -> Run {
        let c = self
            .checks
            .iter()
            .find(|c| c.id() == id)
            .unwrap_or_else(|| panic!("no check {id}"));
        let (outcome, samples) = self.rt.block_on(run_once(c.as_ref()));
        (outcome.result, samples)
    }

    /// The observation of a run that must succeed.
    fn ok(&self, id: &str) -> (Observation, Vec<Sample>) {
        let (r, s) = self.run(id);
        (r.unwrap_or_else(|e| panic!("{id} failed: {e}")), s)
    }

    /// Runs `id` until `f` accepts the result, for at most `limit`; returns the last result.
    fn until(
        &self,
        id: &str,
        limit: Duration,
        mut f: impl FnMut(&Observation, &[Sample]) -> bool,
    ) -> (Observation, Vec<Sample>) {
        let start = Instant::now();
        loop {
            let (r, s) = self.run(id);
            match r {
                Ok(o) if f(&o, &s) => return (o, s),
                Ok(o) => assert!(
                    start.elapsed() < limit,
                    "{id}: condition not met within {limit:?}: {o:#?}"
                ),
                // A connection dropped by a restart: the next run reconnects.
                Err(e) => assert!(start.elapsed() < limit, "{id} failed: {e}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One cycle: every check once, in registry order; returns the wall time.
    fn cycle(&self) -> (Duration, Vec<(&str, bool)>) {
        let (took, results) = self.timed_cycle();
        (
            took,
            results.into_iter().map(|(id, ok, _)| (id, ok)).collect(),
        )
    }

    /// One cycle with each check's own duration.
    fn timed_cycle(&self) -> (Duration, Vec<(&str, bool, Duration)>) {
        let t = Instant::now();
        let mut results = Vec::new();
        for c in &self.checks {
            let (outcome, _) = self.rt.block_on(run_once(c.as_ref()));
            results.push((c.id(), outcome.result.is_ok(), outcome.duration));
        }
        (t.elapsed(), results)
    }
}

/// The value of `name{labels}` among samples.
fn value(samples: &[Sample], name: &str, labels: &[&str]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.def.name == name && s.labels == labels)
        .and_then(Sample::num)
}

macro_rules! obs {
    ($o:expr, $v:ident) => {
        match &$o {
            Observation::$v(x) => x.clone(),
            other => panic!("unexpected observation {other:?}"),
        }
    };
}

#[test]
fn slow_query_idle_in_transaction_and_lock_blocked_session() {
    let pg = PgCluster::start();
    let checks = Checks::new(&pg, &[("AGENT_SLOW_QUERY_THRESHOLD", "1s".into())]);
    // Nothing going on: zeros, not absent series.
    let (_, s) = checks.ok("pg_activity");
    assert_eq!(value(&s, "rose_pg_slow_queries", &[]), Some(0.0));
    assert_eq!(value(&s, "rose_pg_blocked_sessions", &[]), Some(0.0));

    let _holder = pg.session("BEGIN; LOCK TABLE checkpoints IN ACCESS EXCLUSIVE MODE;");
    wait_for(Duration::from_secs(10), || {
        pg.psql("SELECT count(*) FROM pg_locks WHERE relation = 'checkpoints'::regclass AND granted AND mode = 'AccessExclusiveLock'") == "1"
    })
    .expect("lock taken");
    let _waiter = pg.session("SELECT count(*) FROM checkpoints;");
    let _sleeper = pg.session("SELECT pg_sleep(120) /* rose-test-sleeper */;");
    let holder_pid: i32 = pg
        .psql("SELECT pid FROM pg_stat_activity WHERE state = 'idle in transaction' AND application_name = 'rose_test_session'")
        .parse()
        .unwrap();

    let (o, s) = checks.until("pg_activity", Duration::from_secs(15), |o, _| {
        let a = obs!(o, PgActivity);
        a.blocked_sessions == 1 && a.slow_queries >= 2 && a.idle_in_transaction_max_seconds > 1.0
    });
    let a = obs!(o, PgActivity);
    assert_eq!(a.blockers, vec![holder_pid], "{a:#?}");
    let blocked = a.blocked();
    assert_eq!(blocked[0].blocked_by, vec![holder_pid]);
    assert_eq!(blocked[0].wait_event_type.as_deref(), Some("Lock"));
    assert_eq!(blocked[0].application.as_deref(), Some("rose_test_session"));
    let sleeper = a
        .slow()
        .into_iter()
        .find(|x| {
            x.query
                .as_deref()
                .is_some_and(|q| q.contains("SELECT pg_sleep(?)"))
        })
        .unwrap_or_else(|| panic!("sleeper not among slow queries: {a:#?}"));
    assert!(sleeper.query_seconds.unwrap() > 1.0);
    // Normalized: the literal and the comment are gone; the raw text is not kept by default.
    assert!(
        sleeper
            .query
            .as_deref()
            .is_some_and(|q| !q.contains("120") && !q.contains("rose-test-sleeper"))
            && sleeper.raw_query.is_none(),
        "{sleeper:#?}"
    );
    assert!(value(&s, "rose_pg_active_query_max_seconds", &[]).unwrap() > 1.0);
    assert!(value(&s, "rose_pg_slow_queries", &[]).unwrap() >= 2.0);
    assert!(value(&s, "rose_pg_idle_in_transaction_max_seconds", &[]).unwrap() > 1.0);
    assert_eq!(value(&s, "rose_pg_blocked_sessions", &[]), Some(1.0));
    assert_eq!(value(&s, "rose_pg_blocking_sessions", &[]), Some(1.0));
    // Query text is in the observation, never in a label.
    assert!(
        s.iter()
            .all(|x| x.labels.iter().all(|l| !l.contains("pg_sleep")))
    );

    let (o, s) = checks.ok("pg_connections");
    let c = obs!(o, PgConnections);
    assert_eq!(c.waiting_on_locks, 1, "{c:#?}");
    assert_eq!(
        c.by_application.get("rose_test_session"),
        Some(&3),
        "{c:#?}"
    );
    assert_eq!(
        value(&s, "rose_pg_connections", &["idle_in_transaction"]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rose_pg_connections_by_user", &["postgres"]),
        Some(3.0)
    );
    assert_eq!(
        value(&s, "rose_pg_connections_by_user", &[MONITOR_USER]),
        Some(1.0)
    );

    // An idle session (no transaction) that holds a session-level advisory lock blocks another:
    // the idle blocker is named and detailed too, though idle sessions are otherwise skipped.
    drop((_holder, _waiter, _sleeper));
    let _advisory = pg.session("SELECT pg_advisory_lock(4242);");
    let mut idle_pid = 0i32;
    wait_for(Duration::from_secs(10), || {
        let pid = pg.psql(
            "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND a.state = 'idle'",
        );
        idle_pid = pid.parse().unwrap_or(0);
        idle_pid != 0
    })
    .expect("advisory lock held by an idle session");
    let _queued = pg.session("SELECT pg_advisory_lock(4242);");
    let (o, _) = checks.until("pg_activity", Duration::from_secs(15), |o, _| {
        obs!(o, PgActivity).blocked_sessions == 1
    });
    let a = obs!(o, PgActivity);
    assert_eq!(a.blockers, vec![idle_pid], "{a:#?}");
    let doc = serde_json::to_value(&a).unwrap();
    let blocker = doc["sessions"]
        .as_array()
        .and_then(|v| v.iter().find(|x| x["pid"] == idle_pid))
        .unwrap_or_else(|| panic!("the idle blocker is detailed: {a:#?}"));
    assert_eq!(blocker["state"], "idle", "{blocker:#}");
    assert_eq!(blocker["user"], "postgres", "{blocker:#}");
    assert!(
        blocker["query"]
            .as_str()
            .is_some_and(|q| q.contains("pg_advisory_lock(?)")),
        "{blocker:#}"
    );
}

#[test]
fn schema_drift_is_reported_object_by_object() {
    let pg = PgCluster::start();
    let checks = Checks::new(&pg, &[]);
    let present = |s: &[Sample], kind: &str, name: &str| {
        value(s, "rose_pg_schema_object_present", &[kind, name])
    };

    // A migrated database: everything there, v9 of 9, ten rows, the full variant.
    let (o, s) = checks.ok("pg_schema");
    let r = obs!(o, PgSchema);
    assert!(r.missing().is_empty(), "{r:#?}");
    assert_eq!(r.objects.len(), 8);
    for t in [
        "checkpoint_migrations",
        "checkpoints",
        "checkpoint_blobs",
        "checkpoint_writes",
    ] {
        assert_eq!(present(&s, "table", t), Some(1.0), "{t}");
    }
    assert_eq!(
        present(&s, "column", "checkpoint_writes.task_path"),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rose_pg_schema_migration_version", &[]),
        Some(9.0)
    );
    assert_eq!(
        value(&s, "rose_pg_schema_migration_expected", &[]),
        Some(9.0)
    );
    assert_eq!(value(&s, "rose_pg_schema_migration_rows", &[]), Some(10.0));
    assert_eq!(
        value(&s, "rose_pg_schema_variant_info", &["full"]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rose_pg_schema_duplicate_indexes", &[]),
        Some(0.0)
    );

    // Nothing changed: the catalog is not read again (its fingerprint holds); every run below
    // follows DDL, which the fingerprint sees (else the drift would go unreported).
    let reads = r.catalog_reads;
    let (o, _) = checks.ok("pg_schema");
    assert_eq!(
        obs!(o, PgSchema).catalog_reads,
        reads,
        "read again without DDL"
    );

    // The guide's own suggestion duplicates LangGraph's index.
    pg.psql("CREATE INDEX idx_checkpoints_thread_id ON checkpoints(thread_id)");
    let (o, s) = checks.ok("pg_schema");
    let r = obs!(o, PgSchema);
    assert_eq!(r.catalog_reads, reads + 1, "the new index went unseen");
    assert_eq!(
        value(&s, "rose_pg_schema_duplicate_indexes", &[]),
        Some(1.0)
    );
    assert_eq!(r.duplicate_indexes[0].table, "checkpoints");
    assert_eq!(r.duplicate_indexes[0].columns, vec!["thread_id".to_owned()]);
    assert_eq!(
        r.duplicate_indexes[0].indexes,
        vec![
            "checkpoints_thread_id_idx".to_owned(),
            "idx_checkpoints_thread_id".to_owned()
        ]
    );

    // Dropped LangGraph index.
    pg.psql("DROP INDEX checkpoints_thread_id_idx");
    let (o, s) = checks.ok("pg_schema");
    assert_eq!(present(&s, "index", "checkpoints_thread_id_idx"), Some(0.0));
    let r = obs!(o, PgSchema);
    let idx = r
        .objects
        .iter()
        .find(|x| x.name == "checkpoints_thread_id_idx")
        .unwrap();
    assert_eq!(
        idx.problem,
        Some(rose_agent::check::pg::schema::ObjectProblem::Missing)
    );
    assert_eq!(idx.table, "checkpoints");

    // An invalid index: a failed CREATE UNIQUE INDEX CONCURRENTLY on duplicate data leaves one
    // behind under the expected name.
    pg.psql("INSERT INTO checkpoint_writes (thread_id, checkpoint_id, task_id, idx, channel, blob) VALUES ('t', 'c1', 'a', 0, 'x', ''), ('t', 'c2', 'a', 0, 'x', '')");
    pg.psql("DROP INDEX checkpoint_writes_thread_id_idx");
    assert!(
        !pg.psql_ok("CREATE UNIQUE INDEX CONCURRENTLY checkpoint_writes_thread_id_idx ON checkpoint_writes(thread_id)"),
        "the unique index should fail on duplicate data"
    );
    let (o, s) = checks.ok("pg_schema");
    assert_eq!(
        present(&s, "index", "checkpoint_writes_thread_id_idx"),
        Some(0.0)
    );
    assert_eq!(value(&s, "rose_pg_schema_invalid_indexes", &[]), Some(1.0));
    let r = obs!(o, PgSchema);
    assert_eq!(r.invalid_indexes[0].name, "checkpoint_writes_thread_id_idx");
    assert!(!r.invalid_indexes[0].valid);
    assert!(matches!(
        r.objects
            .iter()
            .find(|x| x.name == "checkpoint_writes_thread_id_idx")
            .unwrap()
            .problem,
        Some(rose_agent::check::pg::schema::ObjectProblem::Invalid { .. })
    ));

    // Migrations behind (v 0..7 only) and the task_path column missing.
    pg.psql("DELETE FROM checkpoint_migrations WHERE v > 7");
    pg.psql("ALTER TABLE checkpoint_writes DROP COLUMN task_path");
    let (o, s) = checks.ok("pg_schema");
    assert_eq!(
        value(&s, "rose_pg_schema_migration_version", &[]),
        Some(7.0)
    );
    assert_eq!(
        value(&s, "rose_pg_schema_migration_expected", &[]),
        Some(9.0)
    );
    assert_eq!(value(&s, "rose_pg_schema_migration_rows", &[]), Some(8.0));
    assert_eq!(
        present(&s, "column", "checkpoint_writes.task_path"),
        Some(0.0)
    );
    let lg = obs!(o, PgSchema).langgraph.unwrap();
    assert_eq!(lg.behind(), Some(true));

    // Sizes of the watched tables only.
    let (o, s) = checks.ok("pg_table_sizes");
    let t = obs!(o, PgTableSizes);
    assert_eq!(t.tables.len(), 4, "{t:#?}");
    assert!(
        value(
            &s,
            "rose_pg_table_size_bytes",
            &["checkpoint_writes", "table"]
        )
        .unwrap()
            > 0.0
    );
    let (o, _) = checks.ok("pg_table_sizes");
    assert!(
        obs!(o, PgTableSizes).tables[0]
            .growth_bytes_per_second
            .is_none(),
        "under a second apart: no rate yet"
    );
}

#[test]
fn shallow_schema_unreadable_migrations_and_privileges() {
    let pg = PgCluster::start_with(ClusterOpts {
        schema: false,
        ..Default::default()
    });
    let checks = Checks::new(&pg, &[]);
    // Nothing set up: every table missing, the schema unknown.
    let (o, s) = checks.ok("pg_schema");
    let r = obs!(o, PgSchema);
    assert_eq!(r.missing().len(), 8, "{r:#?}");
    assert_eq!(
        value(&s, "rose_pg_schema_variant_info", &["unknown"]),
        Some(1.0)
    );
    assert_eq!(value(&s, "rose_pg_schema_migration_version", &[]), None);
    assert!(
        r.langgraph
            .unwrap()
            .migrations_note
            .unwrap()
            .contains("setup()")
    );

    // ShallowPostgresSaver's schema, v0..v7.
    pg.psql(
        "CREATE TABLE checkpoint_migrations (v INTEGER PRIMARY KEY); \
         CREATE TABLE checkpoints (thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '', type TEXT, checkpoint JSONB NOT NULL, metadata JSONB NOT NULL DEFAULT '{}', PRIMARY KEY (thread_id, checkpoint_ns)); \
         CREATE TABLE checkpoint_blobs (thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '', channel TEXT NOT NULL, type TEXT NOT NULL, blob BYTEA, PRIMARY KEY (thread_id, checkpoint_ns, channel)); \
         CREATE TABLE checkpoint_writes (thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '', checkpoint_id TEXT NOT NULL, task_id TEXT NOT NULL, idx INTEGER NOT NULL, channel TEXT NOT NULL, type TEXT, blob BYTEA NOT NULL, PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)); \
         CREATE INDEX checkpoints_thread_id_idx ON checkpoints(thread_id); \
         CREATE INDEX checkpoint_blobs_thread_id_idx ON checkpoint_blobs(thread_id); \
         CREATE INDEX checkpoint_writes_thread_id_idx ON checkpoint_writes(thread_id); \
         ALTER TABLE checkpoint_writes ADD COLUMN task_path TEXT NOT NULL DEFAULT ''; \
         INSERT INTO checkpoint_migrations SELECT generate_series(0, 7);",
    );
    // The monitoring role was not granted SELECT on it: a capability with the grant, no error.
    let (o, s) = checks.ok("pg_schema");
    let r = obs!(o, PgSchema);
    assert!(r.missing().is_empty(), "{r:#?}");
    assert_eq!(
        value(&s, "rose_pg_schema_variant_info", &["shallow"]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rose_pg_schema_migration_expected", &[]),
        Some(7.0)
    );
    assert_eq!(value(&s, "rose_pg_schema_migration_version", &[]), None);
    let lg = r.langgraph.unwrap();
    let note = lg.migrations_note.unwrap();
    assert!(note.contains("SQLSTATE 42501"), "{note}");
    assert_eq!(
        lg.migrations_grant.as_deref(),
        Some("GRANT SELECT ON \"public\".\"checkpoint_migrations\" TO \"rose_monitor\";"),
        "{note}"
    );
    let (o, s) = checks.ok("pg_privileges");
    assert_eq!(
        value(&s, "rose_pg_capability", &["migrations_readable"]),
        Some(0.0)
    );
    assert_eq!(value(&s, "rose_pg_capability", &["pg_monitor"]), Some(1.0));
    let p = obs!(o, PgPrivileges);
    assert!(p.missing().iter().any(|c| {
        c.fix
            .as_deref()
            .is_some_and(|f| f.contains("checkpoint_migrations"))
    }));

    // Granted: version 7 of 7.
    pg.psql(&format!(
        "GRANT SELECT ON checkpoint_migrations TO {MONITOR_USER}"
    ));
    let (o, s) = checks.ok("pg_schema");
    assert_eq!(
        value(&s, "rose_pg_schema_migration_version", &[]),
        Some(7.0)
    );
    assert_eq!(obs!(o, PgSchema).langgraph.unwrap().behind(), Some(false));

    // Without pg_monitor the role sees less, and says so.
    pg.psql(&format!("REVOKE pg_monitor FROM {MONITOR_USER}"));
    let (o, s) = checks.ok("pg_privileges");
    assert_eq!(value(&s, "rose_pg_capability", &["pg_monitor"]), Some(0.0));
    assert_eq!(
        value(&s, "rose_pg_capability", &["read_all_stats"]),
        Some(0.0)
    );
    let p = obs!(o, PgPrivileges);
    assert!(
        p.missing()
            .iter()
            .any(|c| c.fix.as_deref() == Some("GRANT pg_monitor TO \"rose_monitor\";"))
    );
}

#[test]
fn expectations_file_for_another_app() {
    let pg = PgCluster::start_with(ClusterOpts {
        schema: false,
        ..Default::default()
    });
    pg.psql("CREATE SCHEMA shop; CREATE TABLE shop.orders (id int PRIMARY KEY, created_at timestamptz); CREATE INDEX orders_created_idx ON shop.orders (id)");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expect.toml");
    std::fs::write(
        &file,
        "[[tables]]\nname = \"orders\"\nschema = \"shop\"\ncolumns = [\"id\", \"created_at\", \"customer_id\"]\n\n\
         [[tables]]\nname = \"customers\"\nschema = \"shop\"\n\n\
         [[indexes]]\nname = \"orders_created_idx\"\ntable = \"orders\"\nschema = \"shop\"\ncolumns = [\"created_at\"]\n",
    )
    .unwrap();
    let checks = Checks::new(
        &pg,
        &[
            ("AGENT_LANGGRAPH_SCHEMA", "off".into()),
            ("AGENT_SCHEMA_EXPECTATIONS", file.display().to_string()),
        ],
    );
    let (o, s) = checks.ok("pg_schema");
    let present =
        |kind: &str, name: &str| value(&s, "rose_pg_schema_object_present", &[kind, name]);
    assert_eq!(present("table", "shop.orders"), Some(1.0));
    assert_eq!(present("column", "shop.orders.created_at"), Some(1.0));
    assert_eq!(present("column", "shop.orders.customer_id"), Some(0.0));
    assert_eq!(present("table", "shop.customers"), Some(0.0));
    assert_eq!(
        present("index", "shop.orders_created_idx"),
        Some(0.0),
        "wrong columns"
    );
    let r = obs!(o, PgSchema);
    assert!(r.langgraph.is_none());
    assert_eq!(value(&s, "rose_pg_schema_migration_expected", &[]), None);
    let (o, _) = checks.ok("pg_table_sizes");
    assert_eq!(obs!(o, PgTableSizes).tables.len(), 1);
}

#[test]
fn pool_budget_over_the_slots_of_a_small_server() {
    let pg = PgCluster::start_with(ClusterOpts {
        max_connections: 20,
        superuser_reserved: 3,
        ..Default::default()
    });
    let major = pg.major();
    // The guide's defaults (pool 10 + overflow 20) and two instances: 61 wanted, 17 there.
    let checks = Checks::new(&pg, &[("AGENT_APP_INSTANCES", "2".into())]);
    let (o, s) = checks.ok("pg_connection_budget");
    let b = obs!(o, PgConnectionBudget);
    assert_eq!(b.demand, 61);
    assert_eq!(b.server_max_connections, 20);
    let reserved = if major >= 16 {
        b.reserved.expect("reserved_connections on 16+")
    } else {
        0
    };
    assert_eq!(b.reserved.is_some(), major >= 16);
    assert_eq!(b.slots, 17 - reserved);
    assert!(b.over());
    assert_eq!(
        value(&s, "rose_pg_connection_budget_demand", &[]),
        Some(61.0)
    );
    assert_eq!(
        value(&s, "rose_pg_connection_budget_slots", &[]),
        Some(f64::from(17 - reserved))
    );
    assert!(value(&s, "rose_pg_connection_budget_headroom", &[]).unwrap() < 0.0);

    // Measured against the Pro plan (97) instead, with a smaller pool: fits.
    let checks = Checks::new(
        &pg,
        &[
            ("AGENT_PLAN", "pro".into()),
            ("DATABASE_POOL_SIZE", "5".into()),
            ("DATABASE_MAX_OVERFLOW", "5".into()),
        ],
    );
    let (o, _) = checks.ok("pg_connection_budget");
    let b = obs!(o, PgConnectionBudget);
    assert_eq!((b.demand, b.slots_source.as_str()), (11, "plan:pro"));
    assert_eq!(b.slots, 94 - reserved);
    assert!(!b.over());

    // Utilization of the real server's slots.
    let _held: Vec<BgSession> = (0..5).map(|_| pg.session("SELECT 1;")).collect();
    let (o, s) = checks.until("pg_connections", Duration::from_secs(10), |o, _| {
        obs!(o, PgConnections).total() >= 6
    });
    let c = obs!(o, PgConnections);
    assert_eq!(c.slots(), 17 - reserved);
    let u = value(&s, "rose_pg_connection_utilization_ratio", &[]).unwrap();
    assert!(
        (u - f64::from(c.total()) / f64::from(17 - reserved)).abs() < 1e-9,
        "{u}"
    );
    assert_eq!(
        value(&s, "rose_pg_reserved_connections", &[]).is_some(),
        major >= 16
    );
}

#[test]
fn replica_streams_and_its_lag_is_seen_on_both_sides() {
    let primary = PgCluster::start();
    let (replica, method) = PgCluster::replica_of(&primary);
    eprintln!(
        "replica of PostgreSQL {} made with {method}",
        primary.major()
    );
    let checks = Checks::new(
        &primary,
        &[("DATABASE_READ_REPLICA_URL", replica.monitor_url())],
    );
    assert!(checks.ids().contains(&"pg_replica"));

    // Streaming, caught up.
    primary.psql("CREATE TABLE lag_probe (n int); INSERT INTO lag_probe VALUES (1)");
    let (o, s) = checks.until("pg_replica", Duration::from_secs(20), |o, _| {
        let r = obs!(o, PgReplica);
        r.in_recovery && r.lag_seconds == Some(0.0)
    });
    assert_eq!(value(&s, "rose_pg_replica_up", &[]), Some(1.0));
    assert_eq!(value(&s, "rose_pg_replica_in_recovery", &[]), Some(1.0));
    assert_eq!(value(&s, "rose_pg_replica_lag_seconds", &[]), Some(0.0));
    assert!(!obs!(o, PgReplica).replay_paused);
    let (o, s) = checks.until("pg_replication", Duration::from_secs(20), |o, _| {
        obs!(o, PgReplication)
            .standbys
            .iter()
            .any(|s| s.state.as_deref() == Some("streaming"))
    });
    assert_eq!(obs!(o, PgReplication).standbys[0].label, "rose_replica");
    assert_eq!(value(&s, "rose_pg_replication_standbys", &[]), Some(1.0));

    // Replay paused while the primary writes: lag in bytes and seconds on the replica, and
    // WAL not replayed as seen from the primary.
    assert!(replica.psql_ok("SELECT pg_wal_replay_pause()"));
    std::thread::sleep(Duration::from_millis(1100));
    primary.psql("INSERT INTO lag_probe SELECT generate_series(1, 20000)");
    let (o, s) = checks.until("pg_replica", Duration::from_secs(20), |o, _| {
        let r = obs!(o, PgReplica);
        r.lag_bytes.unwrap_or(0.0) > 0.0 && r.lag_seconds.unwrap_or(0.0) > 1.0
    });
    assert!(obs!(o, PgReplica).replay_paused);
    assert_eq!(value(&s, "rose_pg_replica_replay_paused", &[]), Some(1.0));
    assert!(value(&s, "rose_pg_replica_lag_seconds", &[]).unwrap() > 1.0);
    assert!(value(&s, "rose_pg_replica_lag_bytes", &[]).unwrap() > 0.0);
    let (_, s) = checks.until("pg_replication", Duration::from_secs(20), |o, _| {
        obs!(o, PgReplication)
            .standbys
            .iter()
            .any(|s| s.lag_bytes.unwrap_or(0.0) > 0.0)
    });
    assert!(value(&s, "rose_pg_replication_lag_bytes", &["rose_replica"]).unwrap() > 0.0);

    // Resumed: caught up again.
    assert!(replica.psql_ok("SELECT pg_wal_replay_resume()"));
    checks.until("pg_replica", Duration::from_secs(20), |o, _| {
        obs!(o, PgReplica).lag_seconds == Some(0.0)
    });

    // Replica gone: rose_pg_replica_up 0, the primary's checks unaffected.
    replica.stop();
    let (r, s) = checks.run("pg_replica");
    assert!(r.is_err());
    assert_eq!(value(&s, "rose_pg_replica_up", &[]), Some(0.0));
    assert!(checks.run("pg_connectivity").0.is_ok());
}

#[test]
fn statements_top_n_and_cycle_cost_flat_with_2000_extra_tables() {
    let pg = PgCluster::start_with(ClusterOpts {
        pg_stat_statements: true,
        ..Default::default()
    });
    let checks = Checks::new(&pg, &[("AGENT_STATEMENTS_TOP_N", "3".into())]);
    for i in 0..12 {
        pg.psql(&format!(
            "SELECT {i} + count(*) FROM checkpoints WHERE thread_id = 'x{i}'"
        ));
    }
    let (o, s) = checks.ok("pg_statements");
    let st = obs!(o, PgStatements);
    assert_eq!(
        st.availability,
        rose_agent::check::pg::statements::Availability::Available
    );
    assert!(st.all_users_visible);
    assert!(st.tracked >= 5, "{st:#?}");
    assert!(!st.top.is_empty() && st.top.len() <= 6, "{st:#?}");
    assert_eq!(value(&s, "rose_pg_statements_available", &[]), Some(1.0));
    let ids: std::collections::BTreeSet<&String> = s
        .iter()
        .filter(|x| x.def.name == "rose_pg_statement_calls_total")
        .map(|x| &x.labels[0])
        .collect();
    assert!(
        !ids.is_empty() && ids.len() <= 6,
        "queryid series bounded by 2 x top N: {ids:?}"
    );

    // Statements per cycle, counted by the server, before and after 2,000 unrelated tables.
    let calls = || -> u64 {
        pg.psql(&format!(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = '{MONITOR_USER}'"
        ))
        .parse()
        .unwrap()
    };
    let measure = || {
        checks.cycle(); // warm: connection open, version cached
        let before = calls();
        let (took, mut results) = checks.timed_cycle();
        let n = calls() - before;
        assert!(results.iter().all(|(_, ok, _)| *ok), "{results:?}");
        results.sort_by_key(|r| std::cmp::Reverse(r.2));
        eprintln!("slowest checks: {:?}", &results[..3]);
        (n, took)
    };
    let (n0, t0) = measure();
    let start = Instant::now();
    pg.create_extra_tables(2000);
    let relations = pg.psql("SELECT count(*) FROM pg_class");
    eprintln!(
        "created 2000 extra tables in {:?} ({relations} relations)",
        start.elapsed()
    );
    let (n1, t1) = measure();
    eprintln!(
        "PostgreSQL {}: {} checks, {n0} statements per cycle in {t0:?}; with 2000 extra tables {n1} in {t1:?}",
        pg.major(),
        checks.ids().len()
    );
    assert_eq!(n0, n1, "statements per cycle grew with unrelated tables");
    // app_recovery reads only the agent's memory (restarts and app verdicts), no statement.
    let issuing = checks
        .ids()
        .iter()
        .filter(|id| **id != "app_recovery")
        .count();
    // Run one after another, each check is its own round (pg::batch); pg_schema reads the
    // migration version in the same round as its catalog once it knows where: one fewer.
    assert!(
        n0 >= issuing as u64 - 2,
        "every database check issues a statement"
    );
}

#[test]
fn statements_absent_or_not_loaded_is_a_capability_not_an_error() {
    let pg = PgCluster::start();
    let checks = Checks::new(&pg, &[]);
    let (o, s) = checks.ok("pg_statements");
    let st = obs!(o, PgStatements);
    assert_eq!(
        st.availability,
        rose_agent::check::pg::statements::Availability::NotInstalled
    );
    assert!(st.fix.unwrap().contains("CREATE EXTENSION"));
    assert_eq!(value(&s, "rose_pg_statements_available", &[]), Some(0.0));
    let (_, s) = checks.ok("pg_privileges");
    assert_eq!(
        value(&s, "rose_pg_capability", &["pg_stat_statements"]),
        Some(0.0)
    );

    pg.psql("CREATE EXTENSION pg_stat_statements");
    let (o, _) = checks.ok("pg_statements");
    let st = obs!(o, PgStatements);
    assert_eq!(
        st.availability,
        rose_agent::check::pg::statements::Availability::NotLoaded
    );
    assert!(st.fix.unwrap().contains("shared_preload_libraries"));
}

#[test]
fn health_checkpoints_archiver_and_restart_on_this_version() {
    let pg = PgCluster::start();
    let major = pg.major();
    let checks = Checks::new(&pg, &[]);
    // Every check of the registry works on this server version.
    let (took, results) = checks.cycle();
    let failed: Vec<_> = results.iter().filter(|(_, ok)| !ok).collect();
    assert!(failed.is_empty(), "PostgreSQL {major}: {failed:?}");
    eprintln!(
        "PostgreSQL {major}: first cycle of {} checks in {took:?}",
        results.len()
    );

    let (o, s) = checks.ok("pg_checkpoints");
    let c = obs!(o, PgCheckpoints);
    assert_eq!(
        c.source,
        if major >= 17 {
            "pg_stat_checkpointer"
        } else {
            "pg_stat_bgwriter"
        }
    );
    let before = c.requested;
    assert!(value(&s, "rose_pg_checkpoints_total", &["timed"]).is_some());
    pg.psql("CHECKPOINT");
    checks.until("pg_checkpoints", Duration::from_secs(10), |o, _| {
        obs!(o, PgCheckpoints).requested > before
    });

    let (o, _) = checks.ok("pg_database_stats");
    let rollbacks = obs!(o, PgDatabaseStats).xact_rollback;
    pg.psql("BEGIN; SELECT 1; ROLLBACK;");
    let (o, s) = checks.until("pg_database_stats", Duration::from_secs(10), |o, _| {
        obs!(o, PgDatabaseStats).xact_rollback > rollbacks
    });
    let d = obs!(o, PgDatabaseStats);
    assert!(d.xid_age_max > 0 && d.xid_age_max < 1_000_000_000);
    assert!(value(&s, "rose_pg_xid_wraparound_ratio", &[]).unwrap() < 0.5);
    let hit = value(&s, "rose_pg_cache_hit_ratio", &[]).unwrap();
    assert!((0.0..=1.0).contains(&hit));

    let (o, s) = checks.ok("pg_archiver");
    assert!(!obs!(o, PgArchiver).enabled());
    assert_eq!(
        value(&s, "rose_pg_wal_archive_failures_total", &[]),
        Some(0.0)
    );

    let (o, _) = checks.ok("pg_privileges");
    let p = obs!(o, PgPrivileges);
    let missing: Vec<&str> = p.missing().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(missing, vec!["pg_stat_statements"], "{p:#?}");

    // A restart is counted once.
    let (o, s) = checks.ok("pg_connectivity");
    assert_eq!(obs!(o, PgConnectivity).restarts_observed, 0);
    assert_eq!(value(&s, "rose_pg_restarts_observed_total", &[]), Some(0.0));
    pg.stop();
    std::thread::sleep(Duration::from_millis(1100));
    pg.restart();
    let (o, s) = checks.until("pg_connectivity", Duration::from_secs(15), |o, _| {
        obs!(o, PgConnectivity).restarts_observed == 1
    });
    assert!(
        obs!(o, PgConnectivity)
            .previous_start_time_seconds
            .is_some()
    );
    assert_eq!(value(&s, "rose_pg_restarts_observed_total", &[]), Some(1.0));
}

#[test]
fn the_agent_exports_the_guides_names_and_promtool_accepts_them() {
    let pg = PgCluster::start_with(ClusterOpts {
        pg_stat_statements: true,
        ..Default::default()
    });
    let _idle = pg.session("BEGIN; SELECT 1;");
    let _sleeper = pg.session("SELECT pg_sleep(120);");
    let mut env = fast_env(pg.monitor_url());
    env.extend([
        ("AGENT_SLOW_INTERVAL", "2s".into()),
        ("AGENT_SLOW_QUERY_THRESHOLD", "500ms".into()),
        ("AGENT_PLAN", "starter".into()),
    ]);
    let agent = Agent::start(&env);
    let ready = wait_for(Duration::from_secs(20), || {
        let m = agent.metrics();
        m.get("rose_pg_slow_queries").unwrap_or(0.0) >= 1.0
            && m.get("rose_pg_idle_in_transaction_max_seconds")
                .unwrap_or(0.0)
                > 0.0
            && m.get("rose_pg_statements_available") == Some(1.0)
            && m.get(r#"rose_pg_table_size_bytes{table="checkpoints",part="table"}"#)
                .is_some()
    });
    let m = agent.metrics();
    ready.unwrap_or_else(|| panic!("conditions not seen: {m:?}\n{}", agent.output()));
    for name in [
        "rose_pg_active_query_max_seconds",
        "rose_pg_slow_queries",
        "rose_pg_idle_in_transaction_max_seconds",
        "rose_pg_blocked_sessions",
        "rose_pg_schema_migration_version",
        "rose_pg_schema_migration_expected",
        "rose_pg_connection_budget_demand",
        "rose_pg_connection_budget_slots",
        "rose_pg_roundtrip_seconds",
    ] {
        assert!(m.get(name).is_some(), "{name} missing: {m:?}");
    }
    assert_eq!(
        m.get(r#"rose_pg_schema_object_present{kind="column",name="checkpoint_writes.task_path"}"#),
        Some(1.0)
    );
    assert_eq!(
        m.get(r#"rose_pg_schema_object_present{kind="index",name="checkpoints_thread_id_idx"}"#),
        Some(1.0)
    );
    assert_eq!(m.get("rose_pg_schema_migration_version"), Some(9.0));
    assert_eq!(m.get("rose_pg_connection_budget_demand"), Some(31.0));
    assert_eq!(m.get("rose_pg_connection_budget_slots"), Some(19.0));
    // Every check succeeds; the agent still holds one backend.
    let failing: Vec<_> =
        m.0.iter()
            .filter(|(k, v)| k.starts_with("rose_agent_check_success") && **v != 1.0)
            .collect();
    assert!(failing.is_empty(), "{failing:?}\n{}", agent.output());
    assert_eq!(pg.agent_backends(), 1);
    let (_, body) = agent.get("/metrics");
    assert!(
        !body.contains("pg_sleep"),
        "query text leaked into the exposition"
    );
    assert!(!body.contains(MONITOR_PASSWORD));
    if require_tool("promtool") {
        promtool_check_metrics(&body);
    }
}
