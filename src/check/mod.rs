//! The check model. A check does its I/O once in [`Check::observe`] and returns a typed
//! [`Observation`]; pure functions in each check's module turn an observation into samples (and,
//! later, findings), so judgement is testable with struct literals and no database.
//!
//! [`registry`] builds the list of checks from the configuration; the scheduler and `diagnose`
//! both work from that list.

pub mod pg_connections;
pub mod pg_connectivity;
pub mod pg_database_size;
pub mod process;

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
}

/// What one successful run saw. One variant per check; serialized into `/findings` and reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Observation {
    PgConnectivity(pg_connectivity::Connectivity),
    PgConnections(pg_connections::Connections),
    PgDatabaseSize(pg_database_size::DatabaseSize),
    Process(process::ProcessStats),
}

impl Observation {
    /// The HTTP status an app probe saw, for span attributes.
    pub fn http_status(&self) -> Option<u16> {
        None
    }

    /// Pure: the series this observation exports.
    pub fn samples(&self, out: &mut Vec<Sample>) {
        match self {
            Observation::PgConnectivity(o) => pg_connectivity::samples(o, out),
            Observation::PgConnections(o) => pg_connections::samples(o, out),
            Observation::PgDatabaseSize(o) => pg_database_size::samples(o, out),
            Observation::Process(o) => process::samples(o, out),
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
