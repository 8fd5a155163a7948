//! The catalog of finding codes: one typed list ([`Code`]) with each code's default severity,
//! the `agent diagnose` rung its evidence comes from ([`Rung`]) and its one-line meaning. Codes
//! are stable API: alert rules, runbooks (`docs/runbooks/<code>.md`) and
//! `agent diagnose --format json` consumers key on them. A rule names a code as [`Code`], so a
//! misspelled code does not compile; `docs/findings.md` is generated from this list.

use serde::Serialize;

/// How bad a finding is. Critical pages, warning tickets, info is not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Declares an enum of names from one list: variant = "snake_case name", in order.
macro_rules! named {
    ($(#[$meta:meta])* $name:ident { $($(#[$doc:meta])* $variant:ident = $str:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$doc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $str,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

named! {
    /// The rungs of `agent diagnose`'s ladder, in ladder order (docs/diagnose.md): where a
    /// check's or a finding's evidence comes from. Checks declare theirs in the check list
    /// (`check::checks!`), codes in [`CODES`].
    Rung {
        Config = "config",
        Dns = "dns",
        Tcp = "tcp",
        Tls = "tls",
        Auth = "auth",
        Database = "database",
        Privileges = "privileges",
        Connections = "connections",
        PgStatStatements = "pg_stat_statements",
        Schema = "schema",
        Sizes = "sizes",
        Activity = "activity",
        DatabaseHealth = "database_health",
        Replication = "replication",
        App = "app",
        Sqlite = "sqlite",
        Migration = "migration",
        Host = "host",
    }
}

/// One finding code.
#[derive(Debug)]
pub struct CodeDef {
    pub id: Code,
    pub code: &'static str,
    pub severity: Severity,
    /// The diagnose rung the code's evidence comes from.
    pub rung: Rung,
    /// What the code means, one line.
    pub(crate) title: &'static str,
}

/// Declares [`Code`] and [`CODES`] from one list: `Variant = "code", severity, rung, "title";`.
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $severity:ident, $rung:ident, $title:literal;)+) => {
        named! {
            /// A finding code. Rules construct findings from these, so a typo is a compile error.
            Code { $($(#[$doc])* $variant = $code,)+ }
        }

        /// Every finding code, in catalog order.
        pub static CODES: &[CodeDef] = &[$(CodeDef {
            id: Code::$variant,
            code: $code,
            severity: Severity::$severity,
            rung: Rung::$rung,
            title: $title,
        },)+];
    };
}

impl Code {
    /// The code's catalog entry.
    pub(crate) fn def(self) -> &'static CodeDef {
        &CODES[self as usize]
    }
    pub(crate) fn severity(self) -> Severity {
        self.def().severity
    }
    /// `docs/runbooks/<code>.md`.
    pub(crate) fn runbook(self) -> String {
        format!("docs/runbooks/{}.md", self.as_str())
    }
}

codes! {
    // The guide's five troubleshooting issues.
    ConnectionRefused = "connection_refused", Critical, Tcp,
        "PostgreSQL refuses TCP connections (server down, wrong host or port, firewall)";
    AuthFailed = "auth_failed", Critical, Auth,
        "password authentication failed for the DSN's user";
    TooManyConnections = "too_many_connections", Critical, Connections,
        "PostgreSQL has no connection slots left";
    SlowQueries = "slow_queries", Warning, Activity,
        "queries run longer than the guide's 2 s";
    SchemaMismatch = "schema_mismatch", Critical, Schema,
        "the LangGraph schema does not match what the library expects";
    // Connection ladder.
    DnsFailure = "dns_failure", Critical, Dns,
        "the database host name does not resolve";
    ConnectTimeout = "connect_timeout", Critical, Tcp,
        "connecting to PostgreSQL does not finish within the timeout";
    TlsError = "tls_error", Critical, Tls,
        "the TLS handshake with PostgreSQL fails";
    DatabaseMissing = "database_missing", Critical, Database,
        "the database named in the DSN does not exist";
    HbaRejected = "hba_rejected", Critical, Auth,
        "pg_hba.conf rejects this client, user or database";
    PrivilegeMissing = "privilege_missing", Warning, Privileges,
        "the monitoring role cannot read some statistics";
    BadDatabaseUrl = "bad_database_url", Critical, Config,
        "the DSN cannot be parsed (e.g. unencoded special characters in the password)";
    NoDatabaseConfigured = "no_database_configured", Critical, Config,
        "FEATURE_DATABASE_TYPE=postgresql but the agent has no DSN: the database is not monitored";
    UnknownVariable = "unknown_variable", Warning, Config,
        "an AGENT_* variable is set that the agent does not read (a misspelling of one it does)";
    SilenceExpired = "silence_expired", Info, Config,
        "a configured silence ([findings] silence, AGENT_SILENCE) is past its until date: the finding counts again";
    // Capacity and activity.
    PoolBudgetExceeded = "pool_budget_exceeded", Warning, Connections,
        "the app's worst-case pool demand exceeds the connection slots";
    ConnectionsNearLimit = "connections_near_limit", Warning, Connections,
        "connections in use are close to the usable slots";
    IdleInTransaction = "idle_in_transaction", Warning, Activity,
        "sessions sit idle inside an open transaction";
    LockContention = "lock_contention", Warning, Activity,
        "sessions are blocked waiting on locks";
    // Schema.
    MissingTable = "missing_table", Critical, Schema,
        "a LangGraph checkpointer table is missing";
    MissingIndex = "missing_index", Warning, Schema,
        "a LangGraph thread_id index is missing";
    InvalidIndex = "invalid_index", Warning, Schema,
        "an index is INVALID (an interrupted CREATE INDEX CONCURRENTLY)";
    MigrationVersionUnreadable = "migration_version_unreadable", Warning, Schema,
        "the monitoring role cannot read checkpoint_migrations: a schema behind the library goes unnoticed";
    DuplicateIndex = "duplicate_index", Info, Schema,
        "two indexes cover the same columns";
    // Placement, restarts, replicas.
    RegionLatency = "region_latency", Warning, Connections,
        "the database round trip suggests another region than the app";
    DatabaseRestarted = "database_restarted", Warning, Connections,
        "PostgreSQL restarted while the agent watched";
    RoleConnectionLimit = "role_connection_limit", Warning, Connections,
        "the monitoring role is at (or one session from) its CONNECTION LIMIT";
    AppConnectionsOverModel = "app_connections_over_model", Warning, Connections,
        "the app holds more connections than its modelled worst case (a pool the budget does not count)";
    StatementsUnavailable = "statements_unavailable", Info, PgStatStatements,
        "pg_stat_statements cannot be read: no per-statement history for slow queries";
    ConnectedToStandby = "connected_to_standby", Critical, Connections,
        "the primary DSN points at a standby (in recovery): writes fail";
    StandbyLost = "standby_lost", Warning, Replication,
        "a standby that streamed from the primary is gone";
    ReplicaLag = "replica_lag", Warning, Replication,
        "the read replica lags behind the primary";
    // The app.
    AppUnreachable = "app_unreachable", Critical, App,
        "the app's health endpoint does not answer";
    AppUnhealthy = "app_unhealthy", Critical, App,
        "the app's health endpoint answers with an error";
    AppDegraded = "app_degraded", Warning, App,
        "the app reports services disconnected";
    AppSlow = "app_slow", Warning, App,
        "the app answers slower than the guide's latency targets";
    // The migration itself.
    MigrationNotEffective = "migration_not_effective", Warning, Migration,
        "checkpoints still go to SQLite although PostgreSQL is configured";
    MigrationPartial = "migration_partial", Warning, Migration,
        "checkpoints grow in both stores: an interface still writes the backend FEATURE_DATABASE_TYPE does not select (critical with several app instances)";
    MigrationIncomplete = "migration_incomplete", Warning, Migration,
        "conversation threads in SQLite are missing from PostgreSQL or newer there (critical when SQLite was written after the switch)";
    SqliteUnreadable = "sqlite_unreadable", Warning, Sqlite,
        "the SQLite checkpointer (the rollback path) cannot be read";
    AppNotRecovered = "app_not_recovered", Warning, App,
        "the app did not answer healthy within the bound after PostgreSQL restarted (the guide's \"Test Failover\")";
    // Storage.
    StorageNearLimit = "storage_near_limit", Warning, Sizes,
        "the database is close to its plan's storage limit or will reach it soon at the observed growth (critical when nearly full)";
    CheckpointBloat = "checkpoint_bloat", Warning, Sizes,
        "a conversation keeps too many checkpoints or too large a state: LangGraph's tables grow with it";
}

/// The catalog entry of a code.
pub(crate) fn code_def(code: &str) -> Option<&'static CodeDef> {
    CODES.iter().find(|d| d.code == code)
}

/// The table of every code for `docs/findings.md` (below its `## Codes` heading); a test keeps
/// the file current.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| code | default severity | diagnose rung | meaning | runbook |\n|---|---|---|---|---|\n",
    );
    for d in CODES {
        out.push_str(&format!(
            "| `{c}` | {s} | `{r}` | {t} | [runbooks/{c}.md](runbooks/{c}.md) |\n",
            c = d.code,
            s = d.severity.as_str(),
            r = d.rung.as_str(),
            t = d.title
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_and_the_enum_agree() {
        for (i, d) in CODES.iter().enumerate() {
            assert_eq!(Code::ALL[i], d.id);
            assert_eq!(d.id.as_str(), d.code);
            assert!(std::ptr::eq(d.id.def(), d));
        }
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for d in CODES {
            assert!(seen.insert(d.code), "{}", d.code);
            assert!(
                d.code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                d.code
            );
        }
    }
}
