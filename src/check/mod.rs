//! The check model. A check does its I/O once in [`Check::observe`] and returns a typed
//! [`Observation`]; pure functions in each check's module turn an observation into samples (and,
//! later, findings), so judgement is testable with struct literals and no database.
//!
//! The check contract lives in one list, [`checks!`] below: one line per check declares its
//! [`Observation`] variant and output type, its module, its [`Scope`], its `agent diagnose`
//! [`Rung`] and what it talks to ([`TargetKind`]). The list generates the observation enum, its
//! `samples` dispatch, [`Kind`] and the registry entries (each module's `build`);
//! [`registry`] builds the checks from the configuration and stamps each with its contract. The
//! scheduler and `diagnose` both work from that list. docs/architecture.md#adding-a-check walks
//! through adding one.

pub mod app_probe;
pub(crate) mod app_recovery;
pub mod checkpoint_migration;
pub(crate) mod history;
pub(crate) mod host;
pub mod pg;
pub(crate) mod process;
pub(crate) mod query_text;
pub(crate) mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::catalog::Sample;
use crate::config::Config;
use crate::error::CheckError;
use crate::findings::codes::Rung;
use crate::pg::PgTarget;

/// Whom a check describes, which decides where it runs in a fleet of agents sharing one
/// database (see [`crate::leader`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This agent, its app instance or host, or its own view of the database: runs on every
    /// agent.
    Instance,
    /// The database as a whole: runs only on the fleet's leader, so N agents cost the database
    /// what one costs and the series are exported once.
    Database,
}

/// What kind of peer a check talks to, as declared in the list; [`Check::target`] gives the
/// details (a test holds every check to its declaration, so every PostgreSQL check reports the
/// `db.*` span attributes docs/otel.md promises).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Local,
    Postgres,
    Http,
}

/// What the list declares about one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contract {
    pub(crate) scope: Scope,
    pub(crate) rung: Rung,
    pub(crate) target: TargetKind,
}

/// Declares every check, one line each:
///
/// `Variant(OutputType) in module::path, Scope, Rung, TargetKind;`
///
/// `module::path` (under `check::`) holds `OutputType`, `pub fn samples(&OutputType, &mut
/// Vec<Sample>)` (pure) and `pub fn build(&Build) -> Built` (the registry entry: zero, one or
/// several checks from the configuration). The line generates the [`Observation`] variant, its
/// `samples` dispatch, the [`Kind`] with its [`Contract`], `From<OutputType> for Observation`
/// and the entry in [`registry`] (in list order).
macro_rules! checks {
    ($($(#[$attr:meta])* $variant:ident($output:ident) in $($module:ident)::+, $scope:ident, $rung:ident, $target:ident;)+) => {
        /// What one successful run saw. One variant per check; serialized into `/findings` and
        /// reports.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "check", rename_all = "snake_case")]
        pub enum Observation {
            $($(#[$attr])* $variant($($module)::+::$output),)+
        }

        /// One line of the check list.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $($(#[$attr])* $variant,)+
        }

        impl Kind {
            /// Every check kind, in list (and registry) order.
            pub const ALL: &'static [Kind] = &[$($(#[$attr])* Kind::$variant,)+];

            /// What the list declares for this kind.
            pub const fn contract(self) -> Contract {
                match self {
                    $($(#[$attr])* Kind::$variant => Contract {
                        scope: Scope::$scope,
                        rung: Rung::$rung,
                        target: TargetKind::$target,
                    },)+
                }
            }

            /// The module's registry entry.
            fn build(self, b: &Build) -> Built {
                match self {
                    $($(#[$attr])* Kind::$variant => $($module)::+::build(b),)+
                }
            }
        }

        impl Observation {
            /// Pure: the series this observation exports.
            pub fn samples(&self, out: &mut Vec<Sample>) {
                match self {
                    $($(#[$attr])* Observation::$variant(o) => $($module)::+::samples(o, out),)+
                }
            }

            /// The list line this observation belongs to.
            pub fn kind(&self) -> Kind {
                match self {
                    $($(#[$attr])* Observation::$variant(_) => Kind::$variant,)+
                }
            }
        }

        $($(#[$attr])*
        impl From<$($module)::+::$output> for Observation {
            fn from(o: $($module)::+::$output) -> Observation {
                Observation::$variant(o)
            }
        })+
    };
}

checks! {
    // variant(output)                      module                   scope     rung            target
    Process(ProcessStats)                   in process,              Instance, Host,           Local;
    Host(HostStats)                         in host,                 Instance, Host,           Local;
    AppProbe(ProbeResult)                   in app_probe,            Instance, App,            Http;
    AppRecovery(Recovery)                   in app_recovery,         Instance, App,            Local;
    Sqlite(SqliteStore)                     in sqlite,               Instance, Sqlite,         Local;
    CheckpointMigration(MigrationFacts)     in checkpoint_migration, Instance, Migration,      Local;
    // This agent's own reachability and round trip.
    PgConnectivity(Connectivity)            in pg::connectivity,     Instance, Connections,    Postgres;
    PgConnections(Connections)              in pg::connections,      Database, Connections,    Postgres;
    PgConnectionBudget(Budget)              in pg::connection_budget, Database, Connections,   Postgres;
    PgActivity(Activity)                    in pg::activity,         Database, Activity,       Postgres;
    PgStatements(Statements)                in pg::statements,       Database, PgStatStatements, Postgres;
    PgTableSizes(TableSizes)                in pg::table_sizes,      Database, Sizes,          Postgres;
    PgSchema(SchemaReport)                  in pg::schema,           Database, Schema,         Postgres;
    PgReplication(Replication)              in pg::replication,      Database, Replication,    Postgres;
    PgDatabaseStats(DatabaseStats)          in pg::database_stats,   Database, DatabaseHealth, Postgres;
    PgCheckpoints(Checkpoints)              in pg::checkpoints,      Database, DatabaseHealth, Postgres;
    PgArchiver(Archiver)                    in pg::archiver,         Database, DatabaseHealth, Postgres;
    // This agent's role.
    PgPrivileges(Privileges)                in pg::privileges,       Instance, Privileges,     Postgres;
    CheckpointThreads(CheckpointThreads)    in pg::checkpoint_threads, Database, Sizes,        Postgres;
    // Its own connection to the replica, which must keep reporting while the primary (where the
    // leader lock lives) is down.
    PgReplica(Replica)                      in pg::replica,          Instance, Replication,    Postgres;
    PgDatabaseSize(DatabaseSize)            in pg::database_size,    Database, Sizes,          Postgres;
    // The walkthrough of docs/architecture.md#adding-a-check, registered like any other.
    #[cfg(test)]
    PgExample(Example)                      in pg::example,          Database, DatabaseHealth, Postgres;
}

/// A boxed, sendable future: what [`Check::observe`] returns so checks can be trait objects.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How often a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Every `AGENT_INTERVAL`: cheap checks.
    Fast,
    /// Every `AGENT_SLOW_INTERVAL`: what changes with a deploy or a migration (schema,
    /// privileges) and the cumulative counters Prometheus rates over minutes anyway.
    Slow,
    /// On the check's own interval: app probes (bounded by the app's rate limit), and the
    /// PostgreSQL reads that walk what the server holds (files, rows, pg_stat_statements
    /// entries), every [`pg::util::rare_interval`].
    Every(Duration),
}

impl Observation {
    /// The HTTP status an app probe saw, for span attributes.
    pub(crate) fn http_status(&self) -> Option<u16> {
        match self {
            Observation::AppProbe(p) => p.status_code,
            _ => None,
        }
    }
}

/// What a check talks to, for span attributes (vocabulary: defined beside the OTel naming).
pub(crate) use crate::catalog::otel::CheckTarget;

/// One unit of observation.
pub trait Check: Send + Sync + 'static {
    /// Stable snake_case id: the `check` label value.
    fn id(&self) -> &str;
    fn cadence(&self) -> Cadence {
        Cadence::Fast
    }
    /// The check's line in the list; set by [`registry`], which wraps every check it builds.
    /// A check never implements this.
    fn kind(&self) -> Option<Kind> {
        None
    }
    /// Whether the check runs on every agent or only on the fleet's leader (from the list).
    fn scope(&self) -> Scope {
        self.kind().map_or(Scope::Instance, |k| k.contract().scope)
    }
    /// The `agent diagnose` rung the check's outcome lands on (from the list).
    fn rung(&self) -> Option<Rung> {
        self.kind().map(|k| k.contract().rung)
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

/// What a module's `build` gets: the configuration and the shared targets.
pub(crate) struct Build<'a> {
    pub(crate) config: &'a Config,
    /// The primary's target, when a DSN is configured; PostgreSQL checks share it, so the
    /// agent holds at most one backend.
    pub(crate) pg: Option<&'a Arc<PgTarget>>,
    /// Restarts seen by `pg_connectivity` and app health meet here (`app_recovery`); present
    /// with both PostgreSQL and app probes.
    pub(crate) watch: Option<Arc<app_recovery::Watch>>,
}

/// What a module's `build` returns: zero, one or several checks.
pub(crate) type Built = Vec<Arc<dyn Check>>;

impl Build<'_> {
    /// One check on the primary, when there is one.
    pub(crate) fn with_pg<C: Check>(&self, f: impl FnOnce(Arc<PgTarget>) -> C) -> Built {
        self.pg.map(|pg| one(f(pg.clone()))).unwrap_or_default()
    }

    /// Where LangGraph's tables live, as configured.
    pub(crate) fn langgraph_place(&self) -> pg::schema::LangGraphPlace {
        pg::schema::LangGraphPlace::from_config(&self.config.checks)
    }
}

/// One check, boxed for the registry.
pub(crate) fn one(c: impl Check) -> Built {
    vec![Arc::new(c)]
}

/// A check stamped with its list line by [`registry`].
struct Registered {
    kind: Kind,
    inner: Arc<dyn Check>,
}

impl Check for Registered {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn cadence(&self) -> Cadence {
        self.inner.cadence()
    }
    fn kind(&self) -> Option<Kind> {
        Some(self.kind)
    }
    fn timeout(&self) -> Duration {
        self.inner.timeout()
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        self.inner.observe()
    }
    fn target(&self) -> CheckTarget {
        self.inner.target()
    }
    fn failure_samples(&self, err: &CheckError, out: &mut Vec<Sample>) {
        self.inner.failure_samples(err, out)
    }
}

/// Builds every enabled check from the configuration, in list order, each stamped with its
/// contract.
pub fn registry(config: &Config, pg: Option<Arc<PgTarget>>) -> Vec<Arc<dyn Check>> {
    let b = Build {
        config,
        pg: pg.as_ref(),
        watch: (pg.is_some() && !config.app.probes.is_empty())
            .then(|| Arc::new(app_recovery::Watch::default())),
    };
    let mut checks: Vec<Arc<dyn Check>> = Vec::new();
    for &kind in Kind::ALL {
        for inner in kind.build(&b) {
            checks.push(Arc::new(Registered { kind, inner }));
        }
    }
    // `AGENT_DISABLED_CHECKS`: a disabled check does not run at all.
    let disabled = &config.findings.disabled_checks;
    checks.retain(|c| !disabled.iter().any(|d| d == c.id()));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration that enables every check: both databases, SQLite, an app probe.
    fn everything() -> Config {
        let env: std::collections::HashMap<&str, &str> = [
            ("DATABASE_URL", "postgresql://u:p@127.0.0.1:1/db"),
            (
                "DATABASE_READ_REPLICA_URL",
                "postgresql://u:p@127.0.0.1:2/db",
            ),
            ("SHORT_TERM_MEMORY_DB_PATH", "/nonexistent/ck.db"),
            ("APP_BASE_URL", "http://127.0.0.1:3/"),
        ]
        .into();
        Config::load(None, &env).unwrap()
    }

    #[test]
    fn every_check_keeps_its_declared_contract() {
        let config = everything();
        let checks = registry(&config, crate::run::pg_target(&config, None));
        // Every list line is built by a configuration that enables everything.
        for kind in Kind::ALL {
            assert!(
                checks.iter().any(|c| c.kind() == Some(*kind)),
                "{kind:?} is not built"
            );
        }
        for c in &checks {
            let contract = c.kind().expect("stamped by the registry").contract();
            assert_eq!(c.scope(), contract.scope, "{}", c.id());
            assert_eq!(c.rung(), Some(contract.rung), "{}", c.id());
            // What the check talks to is what the list says: every PostgreSQL check reports
            // the `db.*` span attributes (docs/otel.md).
            let target = match c.target() {
                CheckTarget::Local => TargetKind::Local,
                CheckTarget::Postgres { .. } => TargetKind::Postgres,
                CheckTarget::Http { .. } => TargetKind::Http,
            };
            assert_eq!(target, contract.target, "{}", c.id());
        }
    }

    #[test]
    fn every_registered_check_id_is_written_in_the_catalog_and_can_be_disabled() {
        use crate::catalog::checks;
        let config = everything();
        let built = registry(&config, crate::run::pg_target(&config, None));
        let mut kinds = std::collections::HashSet::new();
        for c in &built {
            let id = c.id();
            kinds.insert(c.kind().expect("registry stamps every check"));
            if id == pg::example::ID {
                continue; // the unit tests' walkthrough, never built outside them
            }
            assert!(
                checks::ALL.contains(&id) || id.starts_with(checks::APP_PROBE_PREFIX),
                "{id} is not in catalog::checks"
            );
            assert_eq!(checks::disablable(id), id != process::ID, "{id}");
        }
        assert_eq!(kinds.len(), Kind::ALL.len(), "a list line built no check");
        // Every list line but the app probes (ids by prefix) and the example has its id there.
        assert_eq!(
            checks::ALL.len(),
            Kind::ALL.len() - 2,
            "an id without a check"
        );
    }

    /// Each PostgreSQL read at the cadence its answer moves at (docs/queries.md): what pages
    /// within a minute every interval, what changes with a deploy every slow interval, and the
    /// reads that walk what the server holds (files, rows, pg_stat_statements entries) every
    /// five slow intervals, at most 5 minutes.
    #[test]
    fn postgresql_reads_run_at_the_cadence_their_answer_moves_at() {
        let config = everything();
        let checks = registry(&config, crate::run::pg_target(&config, None));
        let cadence = |id: &str| {
            checks
                .iter()
                .find(|c| c.id() == id)
                .unwrap_or_else(|| panic!("{id} is not built"))
                .cadence()
        };
        let rare = pg::util::rare_interval(config.agent.slow_interval);
        assert_eq!(rare, std::time::Duration::from_secs(300));
        for id in [
            "pg_connectivity",
            "pg_connections",
            "pg_connection_budget",
            "pg_activity",
            "pg_replication",
        ] {
            assert!(matches!(cadence(id), Cadence::Fast), "{id}");
        }
        for id in [
            "pg_schema",
            "pg_privileges",
            "pg_database_stats",
            "pg_checkpoints",
            "pg_archiver",
            "checkpoint_migration",
        ] {
            assert!(matches!(cadence(id), Cadence::Slow), "{id}");
        }
        for id in [
            "pg_database_size",
            "pg_table_sizes",
            "pg_statements",
            "checkpoint_threads",
        ] {
            assert!(
                matches!(cadence(id), Cadence::Every(d) if d == rare),
                "{id}"
            );
        }
    }

    #[test]
    fn only_database_wide_checks_are_gated() {
        let config = everything();
        let checks = registry(&config, crate::run::pg_target(&config, None));
        let database: Vec<_> = checks
            .iter()
            .filter(|c| c.scope() == Scope::Database)
            .map(|c| c.id())
            .collect();
        // The same set as before the contract moved into the list (no behaviour change).
        for id in [
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
        ] {
            assert!(database.contains(&id), "{id} is not database-wide");
        }
        for local in [
            "pg_connectivity",
            "pg_privileges",
            "pg_replica",
            "checkpoint_migration",
            "agent_process",
            "host_resources",
            "sqlite_checkpointer",
            "app_recovery",
        ] {
            assert!(checks.iter().any(|c| c.id() == local), "{local} missing");
            assert!(!database.contains(&local), "{local}");
        }
    }
}
