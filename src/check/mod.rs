//! The check model. A check does its I/O once in [`Check::observe`] and returns a typed
//! [`Observation`]; pure functions in each check's module turn an observation into samples (and,
//! later, findings), so judgement is testable with struct literals and no database.
//!
//! [`registry`] builds the list of checks from the configuration; the scheduler and `diagnose`
//! both work from that list.

pub mod app_probe;
pub mod checkpoint_migration;
pub mod host;
pub mod pg_connections;
pub mod pg_connectivity;
pub mod pg_database_size;
pub mod process;
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
    PgConnectivity(pg_connectivity::Connectivity),
    PgConnections(pg_connections::Connections),
    PgDatabaseSize(pg_database_size::DatabaseSize),
    Process(process::ProcessStats),
    AppProbe(app_probe::ProbeResult),
    Host(host::HostStats),
    Sqlite(sqlite::SqliteStore),
    CheckpointMigration(checkpoint_migration::MigrationFacts),
}

impl Observation {
    /// Pure: the series this observation exports.
    pub fn samples(&self, out: &mut Vec<Sample>) {
        match self {
            Observation::PgConnectivity(o) => pg_connectivity::samples(o, out),
            Observation::PgConnections(o) => pg_connections::samples(o, out),
            Observation::PgDatabaseSize(o) => pg_database_size::samples(o, out),
            Observation::Process(o) => process::samples(o, out),
            Observation::AppProbe(o) => app_probe::samples(o, out),
            Observation::Host(o) => host::samples(o, out),
            Observation::Sqlite(o) => sqlite::samples(o, out),
            Observation::CheckpointMigration(o) => checkpoint_migration::samples(o, out),
        }
    }
}

/// One unit of observation.
pub trait Check: Send + Sync + 'static {
    /// Stable snake_case id: the `check` label value.
    fn id(&self) -> &'static str;
    fn cadence(&self) -> Cadence {
        Cadence::Fast
    }
    /// Upper bound on one run; the scheduler cuts the run off there.
    fn timeout(&self) -> Duration;
    /// Does the I/O once. Must be cancel-safe: the scheduler may drop it at any await.
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>>;
    /// The series a failed run exports (e.g. `rose_pg_up 0`); by default none, so a failed
    /// check exports no stale values.
    fn failure_samples(&self, _err: &CheckError, _out: &mut Vec<Sample>) {}
}

/// Builds every enabled check from the configuration. PostgreSQL checks share one target, so
/// the agent holds at most one backend.
pub fn registry(config: &Config, pg: Option<Arc<PgTarget>>) -> Vec<Arc<dyn Check>> {
    let mut checks: Vec<Arc<dyn Check>> = vec![Arc::new(process::ProcessCheck::new())];
    checks.push(Arc::new(host::HostCheck::new(config)));
    for probe in &config.app.probes {
        checks.push(Arc::new(app_probe::AppProbe::new(probe.clone())));
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
        checks.push(Arc::new(pg_connectivity::ConnectivityCheck::new(
            pg.clone(),
        )));
        checks.push(Arc::new(pg_connections::ConnectionsCheck::new(pg.clone())));
        checks.push(Arc::new(pg_database_size::DatabaseSizeCheck::new(pg)));
    }
    checks
}
