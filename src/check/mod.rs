//! The check model. A check does its I/O once in [`Check::observe`] and returns a typed
//! [`Observation`]; pure functions in each check's module turn an observation into samples (and,
//! later, findings), so judgement is testable with struct literals and no database.
//!
//! [`registry`] builds the list of checks from the configuration; the scheduler and `diagnose`
//! both work from that list.

pub mod app_probe;
pub mod app_recovery;
pub mod checkpoint_migration;
pub mod host;
pub mod pg;
pub mod process;
pub mod query_text;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::catalog::Sample;
use crate::config::Config;
use crate::error::CheckError;
use crate::pg::PgTarget;

/// Whom a check describes, which decides where it runs in a fleet of agents sharing one
/// database (see [`crate::pg::leader`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This agent, its app instance or host, or its own view of the database: runs on every
    /// agent.
    Instance,
    /// The database as a whole: runs only on the fleet's leader, so N agents cost the database
    /// what one costs and the series are exported once.
    Database,
}

/// The database-wide checks: the same answer whichever agent asks. Everything else is
/// instance-local: `pg_connectivity` (this agent's own reachability and round trip),
/// `pg_privileges` (this agent's role), `pg_replica` (its own connection to the replica, which
/// must keep reporting while the primary, where the lock lives, is down),
/// `checkpoint_migration` (this instance's SQLite file beside the PostgreSQL tables), app
/// probes, host, SQLite and process.
pub const DATABASE_WIDE: &[&str] = &[
    "pg_activity",
    "pg_statements",
    "pg_table_sizes",
    "pg_database_size",
    "pg_schema",
    "pg_replication",
    "pg_database_stats",
    "pg_checkpoints",
    "pg_archiver",
    "pg_connection_budget",
    "pg_connections",
    "checkpoint_threads",
];

/// A boxed, sendable future: what [`Check::observe`] returns so checks can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How often a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Every `AGENT_INTERVAL`: cheap checks.
    Fast,
    /// Every `AGENT_SLOW_INTERVAL`: checks that cost the database more (sizes, statements).
    Slow,
    /// On the check's own interval (app probes, bounded by the app's rate limit).
    Every(Duration),
}

/// What one successful run saw. One variant per check; serialized into `/findings` and reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Observation {
    PgConnectivity(pg::connectivity::Connectivity),
    PgConnections(pg::connections::Connections),
    PgDatabaseSize(pg::database_size::DatabaseSize),
    Process(process::ProcessStats),
    PgConnectionBudget(pg::connection_budget::Budget),
    PgActivity(pg::activity::Activity),
    PgStatements(pg::statements::Statements),
    PgTableSizes(pg::table_sizes::TableSizes),
    PgSchema(pg::schema::SchemaReport),
    PgReplica(pg::replica::Replica),
    PgReplication(pg::replication::Replication),
    PgDatabaseStats(pg::database_stats::DatabaseStats),
    PgCheckpoints(pg::checkpoints::Checkpoints),
    PgArchiver(pg::archiver::Archiver),
    PgPrivileges(pg::privileges::Privileges),
    AppProbe(app_probe::ProbeResult),
    Host(host::HostStats),
    Sqlite(sqlite::SqliteStore),
    CheckpointMigration(checkpoint_migration::MigrationFacts),
    AppRecovery(app_recovery::Recovery),
    CheckpointThreads(pg::checkpoint_threads::CheckpointThreads),
}

impl Observation {
    /// The HTTP status an app probe saw, for span attributes.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Observation::AppProbe(p) => p.status_code,
            _ => None,
        }
    }

    /// Pure: the series this observation exports.
    pub fn samples(&self, out: &mut Vec<Sample>) {
        match self {
            Observation::PgConnectivity(o) => pg::connectivity::samples(o, out),
            Observation::PgConnections(o) => pg::connections::samples(o, out),
            Observation::PgDatabaseSize(o) => pg::database_size::samples(o, out),
            Observation::Process(o) => process::samples(o, out),
            Observation::PgConnectionBudget(o) => pg::connection_budget::samples(o, out),
            Observation::PgActivity(o) => pg::activity::samples(o, out),
            Observation::PgStatements(o) => pg::statements::samples(o, out),
            Observation::PgTableSizes(o) => pg::table_sizes::samples(o, out),
            Observation::PgSchema(o) => pg::schema::samples(o, out),
            Observation::PgReplica(o) => pg::replica::samples(o, out),
            Observation::PgReplication(o) => pg::replication::samples(o, out),
            Observation::PgDatabaseStats(o) => pg::database_stats::samples(o, out),
            Observation::PgCheckpoints(o) => pg::checkpoints::samples(o, out),
            Observation::PgArchiver(o) => pg::archiver::samples(o, out),
            Observation::PgPrivileges(o) => pg::privileges::samples(o, out),
            Observation::AppProbe(o) => app_probe::samples(o, out),
            Observation::Host(o) => host::samples(o, out),
            Observation::Sqlite(o) => sqlite::samples(o, out),
            Observation::CheckpointMigration(o) => checkpoint_migration::samples(o, out),
            Observation::AppRecovery(o) => app_recovery::samples(o, out),
            Observation::CheckpointThreads(o) => pg::checkpoint_threads::samples(o, out),
        }
    }
}

/// What a check talks to, for span attributes (OpenTelemetry semantic conventions).
#[derive(Debug, Clone, PartialEq)]
pub enum CheckTarget {
    /// Nothing remote (the agent's own process, the host, a local file).
    Local,
    /// A PostgreSQL server: `db.system`, `db.namespace`, `server.address`, `server.port`.
    Postgres {
        namespace: String,
        address: String,
        port: u16,
    },
    /// An HTTP endpoint: `http.request.method`, `url.full`, `server.address`, `server.port`.
    Http {
        method: String,
        url: String,
        address: String,
        port: u16,
    },
}

/// One unit of observation.
pub trait Check: Send + Sync + 'static {
    /// Stable snake_case id: the `check` label value.
    fn id(&self) -> &'static str;
    fn cadence(&self) -> Cadence {
        Cadence::Fast
    }
    /// Whether the check runs on every agent or only on the fleet's leader.
    fn scope(&self) -> Scope {
        if DATABASE_WIDE.contains(&self.id()) {
            Scope::Database
        } else {
            Scope::Instance
        }
    }
    /// Upper bound on one run; the scheduler cuts the run off there.
    fn timeout(&self) -> Duration;
    /// Does the I/O once. Must be cancel-safe: the scheduler may drop it at any await.
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>>;
    /// What the check talks to (for span attributes).
    fn target(&self) -> CheckTarget {
        CheckTarget::Local
    }
    /// The series a failed run exports (e.g. `rose_pg_up 0`); by default none, so a failed
    /// check exports no stale values.
    fn failure_samples(&self, _err: &CheckError, _out: &mut Vec<Sample>) {}
}

/// Builds every enabled check from the configuration. PostgreSQL checks share one target, so
/// the agent holds at most one backend.
pub fn registry(config: &Config, pg: Option<Arc<PgTarget>>) -> Vec<Arc<dyn Check>> {
    let mut checks: Vec<Arc<dyn Check>> = vec![Arc::new(process::ProcessCheck::new())];
    checks.push(Arc::new(host::HostCheck::new(config)));
    // Restarts seen by pg_connectivity and app health meet here (app_recovery).
    let watch = (pg.is_some() && !config.app.probes.is_empty())
        .then(|| Arc::new(app_recovery::Watch::default()));
    for probe in &config.app.probes {
        checks.push(Arc::new(
            app_probe::AppProbe::new(probe.clone()).with_recovery_watch(watch.clone()),
        ));
    }
    if let Some(w) = &watch {
        checks.push(Arc::new(app_recovery::RecoveryCheck::new(
            w.clone(),
            config.app.recovery_timeout,
        )));
    }
    if let Some(path) = &config.app.sqlite_path {
        checks.push(Arc::new(sqlite::SqliteCheck::new(path.clone(), config)));
    }
    if config.app.sqlite_path.is_some() || pg.is_some() {
        checks.push(Arc::new(checkpoint_migration::MigrationCheck::new(
            config,
            pg.clone(),
        )));
    }
    if let Some(pg) = pg {
        let _ = config;
        checks.push(Arc::new(
            pg::connectivity::ConnectivityCheck::new(pg.clone()).with_recovery_watch(watch),
        ));
        checks.push(Arc::new(pg::connections::ConnectionsCheck::with_top_n(
            pg.clone(),
            config.checks.labels_top_n,
        )));
        checks.extend(pg_checks(config, &pg));
        checks.push(Arc::new(
            pg::database_size::DatabaseSizeCheck::new(pg)
                .with_limit(config.checks.storage_limit.clone()),
        ));
    }
    // `AGENT_DISABLED_CHECKS`: a disabled check does not run at all.
    let disabled = &config.findings.disabled_checks;
    checks.retain(|c| !disabled.iter().any(|d| d == c.id()));
    checks
}

/// The guide's PostgreSQL checks (issue 3), each with its own statement(s), on the shared
/// primary target; plus the read replica's, on its own target, when one is configured.
fn pg_checks(config: &Config, pg: &Arc<PgTarget>) -> Vec<Arc<dyn Check>> {
    let c = &config.checks;
    let user = config
        .database
        .dsn
        .as_ref()
        .map(|d| d.user.clone())
        .unwrap_or_default();
    let place = pg::schema::LangGraphPlace::from_config(c);
    let mut v: Vec<Arc<dyn Check>> = vec![
        Arc::new(pg::connection_budget::BudgetCheck::new(
            pg.clone(),
            pg::connection_budget::AppPools {
                pool_size: config.app.pool_size,
                max_overflow: config.app.max_overflow,
                instances: config.app.instances,
                checkpointer_pool_max_size: config.app.checkpointer_pool_max_size.unwrap_or(0),
                plan: c.plan.clone(),
            },
        )),
        Arc::new(pg::activity::ActivityCheck::new(
            pg.clone(),
            c.slow_query_threshold,
            c.raw_query_text,
        )),
        Arc::new(pg::statements::StatementsCheck::new(
            pg.clone(),
            c.statements_top_n,
        )),
        Arc::new(pg::table_sizes::TableSizesCheck::new(
            pg.clone(),
            c.langgraph_schema,
            &place,
            &c.expectations,
        )),
        Arc::new(pg::schema::SchemaCheck::new(
            pg.clone(),
            c.langgraph_schema,
            &place,
            &c.expectations,
            &user,
        )),
        Arc::new(pg::replication::check(pg.clone())),
        Arc::new(pg::database_stats::check(pg.clone())),
        Arc::new(pg::checkpoints::CheckpointsCheck::new(pg.clone())),
        Arc::new(pg::archiver::check(pg.clone())),
        Arc::new(pg::privileges::check(pg.clone(), &place)),
    ];
    if c.langgraph_schema != crate::config::LangGraphSchema::Off {
        v.push(Arc::new(pg::checkpoint_threads::ThreadsCheck::new(
            pg.clone(),
            &place,
        )));
    }
    if let Some(replica) = pg::replica::target(config) {
        v.push(Arc::new(pg::replica::check(replica)));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_database_wide_checks_are_gated() {
        let config = crate::config::Config::load(
            None,
            &std::collections::HashMap::from([(
                "AGENT_DATABASE_URL".to_string(),
                "postgresql://u:p@127.0.0.1:1/db".to_string(),
            )]),
        )
        .unwrap();
        let pg = crate::run::pg_target(&config, None);
        let checks = registry(&config, pg);
        let database: Vec<_> = checks
            .iter()
            .filter(|c| c.scope() == Scope::Database)
            .map(|c| c.id())
            .collect();
        // Every listed id names a real check, and instance-local ones stay local.
        for id in DATABASE_WIDE {
            assert!(database.contains(id), "{id} is not a registered check");
        }
        for local in ["pg_connectivity", "pg_privileges", "agent_process"] {
            assert!(!database.contains(&local), "{local}");
        }
    }
}
