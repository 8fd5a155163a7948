//! One round trip per cycle (issue 18): the PostgreSQL checks of a cycle share one combined
//! statement (`rose_agent::pg::batch`), and a failure in one part stays in that part. Real
//! clusters (whatever `ROSE_PG_BIN` points at: run with PostgreSQL 13 and 18 too), real
//! PgBouncer in transaction mode; the statements are counted by pg_stat_statements.
//!
//! Each test runs the registry of `agent run` in-process, a cycle at a time (every PostgreSQL
//! check at once, as the scheduler's aligned ticks start them), so the server-side statement
//! count of one cycle is exact.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;

use rose_agent::catalog::Sample;
use rose_agent::check::{self, Check, Observation};
use rose_agent::config::Config;
use rose_agent::error::CheckError;
use rose_agent::pg::PgTarget;
use rose_agent::scheduler::run_once;
use support::net::PgBouncer;
use support::*;

type Run = (String, Result<Observation, CheckError>, Vec<Sample>);

/// The PostgreSQL checks of `agent run`'s registry on `url`, and their target.
struct Cycle {
    rt: tokio::runtime::Runtime,
    checks: Vec<Arc<dyn Check>>,
    pg: Arc<PgTarget>,
}

impl Cycle {
    fn new(url: String) -> Cycle {
        let env: HashMap<String, String> = [
            ("AGENT_DATABASE_URL", url),
            ("AGENT_INTERVAL", "10s".into()),
            ("AGENT_STATEMENT_TIMEOUT", "2s".into()),
            ("AGENT_CONNECT_TIMEOUT", "2s".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let config = Config::load(None, &env).unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (checks, pg) = {
            let _guard = rt.enter();
            let pg = rose_agent::run::pg_target(&config, None).unwrap();
            let checks = check::registry(&config, Some(pg.clone()))
                .into_iter()
                .filter(|c| c.id().starts_with("pg_") || c.id().starts_with("checkpoint_"))
                .collect();
            (checks, pg)
        };
        Cycle { rt, checks, pg }
    }

    /// Runs every check at once, as one tick of the scheduler does.
    fn run(&self) -> Vec<Run> {
        self.rt.block_on(async {
            let runs = self.checks.iter().map(|c| async move {
                let (outcome, samples) = run_once(c.as_ref()).await;
                (c.id().to_owned(), outcome.result, samples)
            });
            futures_util::future::join_all(runs).await
        })
    }

    fn prepares(&self) -> u64 {
        self.pg.batch().prepares()
    }

    fn fallbacks(&self, reason: &str) -> u64 {
        self.pg
            .batch()
            .fallbacks()
            .into_iter()
            .find(|(r, _)| r.as_str() == reason)
            .map_or(0, |(_, n)| n)
    }
}

fn failed(runs: &[Run]) -> Vec<String> {
    runs.iter()
        .filter_map(|(id, r, _)| r.as_ref().err().map(|e| format!("{id}: {e}")))
        .collect()
}

fn observation<'a>(runs: &'a [Run], id: &str) -> &'a Observation {
    let (_, r, _) = runs.iter().find(|(i, _, _)| *i == id).unwrap();
    r.as_ref().unwrap_or_else(|e| panic!("{id}: {e}"))
}

/// Statements of the monitoring role since the last reset, leaving out the `SET`s a pooled
/// session sends in the same message.
fn monitor_statements(pg: &PgCluster) -> u64 {
    pg.psql(&format!(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
         WHERE r.rolname = '{MONITOR_USER}' AND s.query NOT ILIKE 'SET %'"
    ))
    .parse()
    .unwrap()
}

fn reset_statements(pg: &PgCluster) {
    pg.psql("SELECT pg_stat_statements_reset()");
}

fn cluster() -> PgCluster {
    PgCluster::start_with(ClusterOpts {
        pg_stat_statements: true,
        ..ClusterOpts::default()
    })
}

/// A cycle after the first (which opens the connection and reads the server version): every
/// PostgreSQL check reports, and the server ran one statement per round (the checks that read
/// after a first answer, pg_statements and pg_schema's migrations, join a second round).
#[test]
fn a_cycle_of_every_postgresql_check_costs_the_server_two_statements() {
    let pg = cluster();
    let c = Cycle::new(pg.monitor_url());
    let first = c.run();
    assert_eq!(failed(&first), Vec::<String>::new());
    assert!(c.checks.len() >= 12, "{}", c.checks.len());
    reset_statements(&pg);
    let runs = c.run();
    assert_eq!(failed(&runs), Vec::<String>::new());
    let n = monitor_statements(&pg);
    // Before batching: one statement per check and two for pg_statements, pg_schema and
    // checkpoint_threads (about 16). A loaded machine may split a round once: at most 3.
    assert!(
        (1..=3).contains(&n),
        "{n} statements for one cycle of {}",
        runs.len()
    );
    assert_eq!(c.fallbacks("error") + c.fallbacks("timeout"), 0);
    // The per-check series keep their shape (the scheduler exports these per check).
    let Observation::PgConnectivity(conn) = observation(&runs, "pg_connectivity") else {
        panic!("pg_connectivity")
    };
    assert!(conn.server_version_num >= 130_000, "{conn:?}");
    assert!(
        conn.roundtrip_seconds >= 0.0 && conn.roundtrip_seconds < 0.5,
        "{conn:?}"
    );
    let (_, _, samples) = runs
        .iter()
        .find(|(i, _, _)| *i == "pg_connectivity")
        .unwrap();
    assert!(
        samples
            .iter()
            .any(|s| s.def.name == "rose_pg_batch_fallbacks_total"),
        "no fallback counter"
    );
}

/// On a direct session the cycle's statement is parsed and planned once: later cycles execute
/// the prepared statement (no new prepare, the server counts one call of the same text per
/// cycle), whatever order the checks asked in. Parsing and planning were most of the server's
/// CPU for a cycle (docs/performance.md).
#[test]
fn on_a_direct_session_the_cycle_statement_is_planned_once() {
    let pg = cluster();
    let c = Cycle::new(pg.monitor_url());
    assert_eq!(failed(&c.run()), Vec::<String>::new());
    assert_eq!(failed(&c.run()), Vec::<String>::new());
    let after_two = c.prepares();
    // The first cycle's rounds and the second's (the version cache changes what some ask).
    assert!((1..=6).contains(&after_two), "{after_two} prepares");
    reset_statements(&pg);
    for _ in 0..4 {
        assert_eq!(failed(&c.run()), Vec::<String>::new());
    }
    assert_eq!(c.prepares(), after_two, "a steady cycle prepared again");
    let per_text: Vec<u64> = pg
        .psql(&format!(
            "SELECT calls FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
             WHERE r.rolname = '{MONITOR_USER}' AND s.query LIKE '%json_build_array(%' \
             ORDER BY calls DESC"
        ))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        per_text.first().is_some_and(|n| *n >= 4),
        "the same statement each cycle: {per_text:?}"
    );
    // The lookups several checks open with are defined once for the statement: LangGraph's
    // schema (five checks), the client sessions (pg_activity, pg_connections,
    // pg_connection_budget: one read of them per statement) and their groups (the last two).
    let biggest = pg.psql(&format!(
        "SELECT query FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
         WHERE r.rolname = '{MONITOR_USER}' AND s.query LIKE '%json_build_array(%' \
         ORDER BY length(query) DESC LIMIT 1"
    ));
    assert_eq!(biggest.matches("lg(sch, src) AS (").count(), 1, "{biggest}");
    assert!(
        biggest.starts_with("WITH a AS (SELECT pid, datid"),
        "{biggest}"
    );
    assert_eq!(
        biggest.matches("pg_stat_get_activity(NULL)").count(),
        1,
        "{biggest}"
    );
    assert!(!biggest.contains("pg_stat_activity"), "{biggest}");
    assert_eq!(biggest.matches(" g AS (").count(), 1, "{biggest}");
    let runs = c.run();
    let Observation::PgConnectivity(conn) = observation(&runs, "pg_connectivity") else {
        panic!("pg_connectivity")
    };
    assert_eq!(conn.batch_prepares, after_two);
}

/// A privilege revoked mid-run fails the combined statement; each check then runs alone for that
/// cycle (counted), the one that lost its privilege fails or reports the gap alone, and the next
/// cycles run it apart instead of failing the batch again.
#[test]
fn a_privilege_revoked_mid_run_stays_in_its_own_check() {
    let pg = cluster();
    let c = Cycle::new(pg.monitor_url());
    assert_eq!(failed(&c.run()), Vec::<String>::new());
    pg.psql("REVOKE SELECT ON pg_catalog.pg_stat_archiver FROM PUBLIC");
    pg.psql("REVOKE EXECUTE ON FUNCTION pg_stat_statements(boolean) FROM PUBLIC");
    let runs = c.run();
    let failures = failed(&runs);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].starts_with("pg_archiver:") && failures[0].contains("42501"),
        "{failures:?}"
    );
    // pg_statements reports the missing grant as a capability, not a failure.
    let Observation::PgStatements(s) = observation(&runs, "pg_statements") else {
        panic!("pg_statements")
    };
    assert_eq!(
        serde_json::to_value(s.availability).unwrap(),
        "permission_denied",
        "{s:?}"
    );
    let after_first = c.fallbacks("error");
    assert!(after_first >= 1, "no fallback counted");
    // Next cycle: the two run alone, the rest in one statement; no new fallback.
    reset_statements(&pg);
    let runs = c.run();
    assert_eq!(failed(&runs).len(), 1, "{:?}", failed(&runs));
    assert_eq!(c.fallbacks("error"), after_first);
    let n = monitor_statements(&pg);
    // The round, the two alone, the second round; one more if a loaded machine splits a round.
    // Failing the round again would be it plus every check alone: 15 or more.
    assert!(
        n <= 6,
        "{n} statements: the failing parts did not run apart"
    );
    // Granted again: back to every check.
    pg.psql("GRANT SELECT ON pg_catalog.pg_stat_archiver TO PUBLIC");
    assert_eq!(failed(&c.run()), Vec::<String>::new());
}

/// pg_stat_statements dropped between two cycles: pg_statements reports it absent, every other
/// check reports as before, and nothing falls back.
#[test]
fn an_extension_dropped_mid_run_stays_in_its_own_check() {
    let pg = cluster();
    let c = Cycle::new(pg.monitor_url());
    let runs = c.run();
    assert_eq!(failed(&runs), Vec::<String>::new());
    let Observation::PgStatements(s) = observation(&runs, "pg_statements") else {
        panic!("pg_statements")
    };
    assert_eq!(serde_json::to_value(s.availability).unwrap(), "available");
    pg.psql("DROP EXTENSION pg_stat_statements");
    let runs = c.run();
    assert_eq!(failed(&runs), Vec::<String>::new());
    let Observation::PgStatements(s) = observation(&runs, "pg_statements") else {
        panic!("pg_statements")
    };
    assert_eq!(
        serde_json::to_value(s.availability).unwrap(),
        "not_installed"
    );
    assert_eq!(c.fallbacks("error") + c.fallbacks("timeout"), 0);
}

/// Through PgBouncer in transaction mode the combined statement travels in the same message as
/// the `SET LOCAL` limits: one server transaction per round, every check reports.
#[test]
fn through_pgbouncer_in_transaction_mode_a_cycle_is_one_statement() {
    let pg = cluster();
    let Some(bouncer) = PgBouncer::start(&pg, "transaction", false, 2) else {
        return;
    };
    let c = Cycle::new(bouncer.monitor_url());
    assert_eq!(failed(&c.run()), Vec::<String>::new(), "{}", bouncer.log());
    reset_statements(&pg);
    let runs = c.run();
    assert_eq!(failed(&runs), Vec::<String>::new());
    let n = monitor_statements(&pg);
    assert!((1..=3).contains(&n), "{n} statements through the pooler");
    let combined: u64 = pg
        .psql(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%json_build_array%'",
        )
        .parse()
        .unwrap();
    assert!(combined >= 1, "no combined statement reached the server");
    // A named statement could live on another server connection of the pool: none is prepared.
    assert_eq!(c.prepares(), 0);
}

/// A part that cannot finish (a table's lock held by another session, so `pg_table_sizes` runs
/// into `lock_timeout`) fails the round; every other check still reports in that same cycle,
/// within its own bound, and from the next cycle the blocked one runs apart.
#[test]
fn a_blocked_part_does_not_hold_the_others_beyond_one_cycle() {
    let pg = cluster();
    let c = Cycle::new(pg.monitor_url());
    assert_eq!(failed(&c.run()), Vec::<String>::new());
    let _lock = pg.session("BEGIN; LOCK TABLE checkpoints IN ACCESS EXCLUSIVE MODE;");
    assert!(
        wait_for(std::time::Duration::from_secs(10), || pg.psql(
            "SELECT count(*) FROM pg_locks WHERE relation = 'checkpoints'::regclass AND mode = 'AccessExclusiveLock' AND granted"
        ) == "1")
        .is_some(),
        "the lock was not taken"
    );
    for cycle in 0..2 {
        let started = std::time::Instant::now();
        let runs = c.run();
        let failures = failed(&runs);
        // Only the checks that read the locked table itself fail (as they would alone).
        let touch = [
            "pg_table_sizes:",
            "pg_schema:",
            "checkpoint_threads:",
            "checkpoint_migration:",
        ];
        assert!(
            failures.iter().any(|f| f.starts_with("pg_table_sizes:"))
                && failures
                    .iter()
                    .all(|f| touch.iter().any(|t| f.starts_with(t))),
            "cycle {cycle}: {failures:?}"
        );
        assert!(failures.len() < runs.len() / 2, "{failures:?}");
        // Each check within its own timeout: the round's lock_timeout, then its own statement.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(c.fallbacks("error"), 1, "the second cycle fell back again");
}
