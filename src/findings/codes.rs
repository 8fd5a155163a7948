//! The catalog of finding codes. Codes are stable API: alert rules, runbooks
//! (`docs/runbooks/<code>.md`) and `agent diagnose --format json` consumers key on them.

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

/// One finding code.
#[derive(Debug)]
pub struct CodeDef {
    pub code: &'static str,
    pub severity: Severity,
    /// What the code means, one line.
    pub title: &'static str,
}

const fn c(code: &'static str, severity: Severity, title: &'static str) -> CodeDef {
    CodeDef {
        code,
        severity,
        title,
    }
}

use Severity::{Critical, Info, Warning};

/// Every finding code.
pub static CODES: &[CodeDef] = &[
    // The guide's five troubleshooting issues.
    c(
        "connection_refused",
        Critical,
        "PostgreSQL refuses TCP connections (server down, wrong host or port, firewall)",
    ),
    c(
        "auth_failed",
        Critical,
        "password authentication failed for the DSN's user",
    ),
    c(
        "too_many_connections",
        Critical,
        "PostgreSQL has no connection slots left",
    ),
    c(
        "slow_queries",
        Warning,
        "queries run longer than the guide's 2 s",
    ),
    c(
        "schema_mismatch",
        Critical,
        "the LangGraph schema does not match what the library expects",
    ),
    // Connection ladder.
    c(
        "dns_failure",
        Critical,
        "the database host name does not resolve",
    ),
    c(
        "connect_timeout",
        Critical,
        "connecting to PostgreSQL does not finish within the timeout",
    ),
    c(
        "tls_error",
        Critical,
        "the TLS handshake with PostgreSQL fails",
    ),
    c(
        "database_missing",
        Critical,
        "the database named in the DSN does not exist",
    ),
    c(
        "hba_rejected",
        Critical,
        "pg_hba.conf rejects this client, user or database",
    ),
    c(
        "privilege_missing",
        Warning,
        "the monitoring role cannot read some statistics",
    ),
    c(
        "bad_database_url",
        Critical,
        "the DSN cannot be parsed (e.g. unencoded special characters in the password)",
    ),
    c(
        "no_database_configured",
        Critical,
        "FEATURE_DATABASE_TYPE=postgresql but the agent has no DSN: the database is not monitored",
    ),
    c(
        "unknown_variable",
        Warning,
        "an AGENT_* variable is set that the agent does not read (a misspelling of one it does)",
    ),
    c(
        "silence_expired",
        Info,
        "a configured silence ([findings] silence, AGENT_SILENCE) is past its until date: the finding counts again",
    ),
    // Capacity and activity.
    c(
        "pool_budget_exceeded",
        Warning,
        "the app's worst-case pool demand exceeds the connection slots",
    ),
    c(
        "connections_near_limit",
        Warning,
        "connections in use are close to the usable slots",
    ),
    c(
        "idle_in_transaction",
        Warning,
        "sessions sit idle inside an open transaction",
    ),
    c(
        "lock_contention",
        Warning,
        "sessions are blocked waiting on locks",
    ),
    // Schema.
    c(
        "missing_table",
        Critical,
        "a LangGraph checkpointer table is missing",
    ),
    c(
        "missing_index",
        Warning,
        "a LangGraph thread_id index is missing",
    ),
    c(
        "invalid_index",
        Warning,
        "an index is INVALID (an interrupted CREATE INDEX CONCURRENTLY)",
    ),
    c(
        "migration_version_unreadable",
        Warning,
        "the monitoring role cannot read checkpoint_migrations: a schema behind the library goes unnoticed",
    ),
    c(
        "duplicate_index",
        Info,
        "two indexes cover the same columns",
    ),
    // Placement, restarts, replicas.
    c(
        "region_latency",
        Warning,
        "the database round trip suggests another region than the app",
    ),
    c(
        "database_restarted",
        Warning,
        "PostgreSQL restarted while the agent watched",
    ),
    c(
        "role_connection_limit",
        Warning,
        "the monitoring role is at (or one session from) its CONNECTION LIMIT",
    ),
    c(
        "app_connections_over_model",
        Warning,
        "the app holds more connections than its modelled worst case (a pool the budget does not count)",
    ),
    c(
        "statements_unavailable",
        Info,
        "pg_stat_statements cannot be read: no per-statement history for slow queries",
    ),
    c(
        "connected_to_standby",
        Critical,
        "the primary DSN points at a standby (in recovery): writes fail",
    ),
    c(
        "standby_lost",
        Warning,
        "a standby that streamed from the primary is gone",
    ),
    c(
        "replica_lag",
        Warning,
        "the read replica lags behind the primary",
    ),
    // The app.
    c(
        "app_unreachable",
        Critical,
        "the app's health endpoint does not answer",
    ),
    c(
        "app_unhealthy",
        Critical,
        "the app's health endpoint answers with an error",
    ),
    c(
        "app_degraded",
        Warning,
        "the app reports services disconnected",
    ),
    c(
        "app_slow",
        Warning,
        "the app answers slower than the guide's latency targets",
    ),
    // The migration itself.
    c(
        "migration_not_effective",
        Warning,
        "checkpoints still go to SQLite although PostgreSQL is configured",
    ),
    c(
        "migration_partial",
        Warning,
        "checkpoints grow in both stores: an interface still writes the backend FEATURE_DATABASE_TYPE does not select (critical with several app instances)",
    ),
    c(
        "migration_incomplete",
        Warning,
        "conversation threads in SQLite are missing from PostgreSQL or newer there (critical when SQLite was written after the switch)",
    ),
    c(
        "sqlite_unreadable",
        Warning,
        "the SQLite checkpointer (the rollback path) cannot be read",
    ),
    c(
        "app_not_recovered",
        Warning,
        "the app did not answer healthy within the bound after PostgreSQL restarted (the guide's \"Test Failover\")",
    ),
    // Storage.
    c(
        "storage_near_limit",
        Warning,
        "the database is close to its plan's storage limit or will reach it soon at the observed growth (critical when nearly full)",
    ),
    c(
        "checkpoint_bloat",
        Warning,
        "a conversation keeps too many checkpoints or too large a state: LangGraph's tables grow with it",
    ),
];

/// The catalog entry of a code.
pub fn code_def(code: &str) -> Option<&'static CodeDef> {
    CODES.iter().find(|d| d.code == code)
}

/// The table of every code for `docs/findings.md` (below its `## Codes` heading); a test keeps
/// the file current.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| code | default severity | meaning | runbook |\n|---|---|---|---|\n");
    for d in CODES {
        out.push_str(&format!(
            "| `{c}` | {s} | {t} | [runbooks/{c}.md](runbooks/{c}.md) |\n",
            c = d.code,
            s = d.severity.as_str(),
            t = d.title
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
