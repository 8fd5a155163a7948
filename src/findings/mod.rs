//! Findings: what is wrong and what to do about it. One catalog of codes ([`CODES`]), each with a
//! stable snake_case code, a severity and a runbook under `docs/runbooks/<code>.md`; pure rules
//! ([`evaluate`]) that turn a snapshot's observations and errors into [`Finding`]s whose steps are
//! the migration guide's troubleshooting steps made concrete with the observed values.
//!
//! Judgement never does I/O: rules read the snapshot and take `now` as an argument, so they are
//! unit-tested with struct literals.

mod activity;
mod app;
mod checkpoint_bloat;
pub(crate) mod codes;
mod config;
mod connect;
pub(crate) mod connections;
mod database;
mod recovery;
mod schema;
pub(crate) mod silence;
pub mod state;
mod storage;

use std::time::SystemTime;

use serde::Serialize;

pub(crate) use codes::code_def;
pub use codes::{CODES, Code, Rung, Severity, markdown_table};

use crate::config::Config;
use crate::snapshot::Snapshot;

/// One thing that is wrong, with what to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Stable snake_case code: always a [`Code`]'s `as_str()` (set by [`Finding::new`]).
    pub(crate) code: &'static str,
    pub severity: Severity,
    /// One line.
    pub(crate) summary: String,
    /// Observed value vs threshold, with the sanitized target.
    pub(crate) evidence: String,
    /// Ordered steps, concrete with the observed values.
    pub(crate) steps: Vec<String>,
    /// `docs/runbooks/<code>.md`.
    pub(crate) runbook: String,
    /// What the finding is about when a code can apply to several things (an index, an
    /// endpoint); part of the finding's identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subject: Option<String>,
    /// Other sessions' raw SQL named in the evidence (literals included): only with
    /// `raw_query_text` configured. Shown by `/findings` and `agent diagnose`; never logged, never
    /// in pushed alerts (the evidence carries the normalized text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) raw_query_text: Option<String>,
}

impl Finding {
    /// A finding of a catalog code with its default severity.
    pub fn new(
        code: Code,
        summary: impl Into<String>,
        evidence: impl Into<String>,
        steps: Vec<String>,
    ) -> Finding {
        Finding {
            code: code.as_str(),
            severity: code.severity(),
            summary: summary.into(),
            evidence: crate::dsn::redact(&evidence.into()),
            steps,
            runbook: code.runbook(),
            subject: None,
            raw_query_text: None,
        }
    }

    pub(crate) fn with_severity(mut self, s: Severity) -> Finding {
        self.severity = s;
        self
    }

    /// Attaches other sessions' raw SQL (see [`Finding::raw_query_text`]); empty is none.
    pub(crate) fn with_raw_query_text(mut self, text: String) -> Finding {
        self.raw_query_text = (!text.is_empty()).then(|| crate::dsn::redact(&text));
        self
    }

    pub(crate) fn with_subject(mut self, s: impl Into<String>) -> Finding {
        self.subject = Some(s.into());
        self
    }

    /// Identity across cycles: code plus subject.
    pub(crate) fn key(&self) -> String {
        match &self.subject {
            Some(s) => format!("{}:{s}", self.code),
            None => self.code.to_owned(),
        }
    }
}

/// Thresholds and context the rules judge against.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// Sanitized `host:port/dbname`, or empty without PostgreSQL.
    pub(crate) target: String,
    /// Where the DSN came from (`AGENT_DATABASE_URL`, `DATABASE_URL`, ...), for steps.
    pub(crate) dsn_source: &'static str,
    pub(crate) pool_size: u32,
    pub(crate) max_overflow: u32,
    pub(crate) instances: u32,
    /// `max_size` of the checkpointer's psycopg pool per instance (`None`: not modelled).
    pub(crate) checkpointer_pool_max_size: Option<u32>,
    /// The app's role (the user of `DATABASE_URL`), when known.
    pub(crate) app_role: Option<String>,
    /// Connections in use over usable slots above which `connections_near_limit` fires.
    pub(crate) connections_warn_ratio: f64,
    /// Round trip above which the database is likely in another region.
    pub(crate) region_latency_seconds: f64,
    /// A server started less than this long ago counts as restarted.
    pub(crate) restart_window_seconds: f64,
    /// Idle in a transaction longer than this is a finding.
    pub(crate) idle_in_transaction_seconds: f64,
    /// Replay lag above this is a finding.
    pub(crate) replica_lag_seconds: f64,
    pub(crate) database_type: crate::config::DatabaseType,
    pub(crate) sqlite_path: Option<String>,
    /// Whether the agent has a DSN to monitor PostgreSQL with.
    pub(crate) dsn_configured: bool,
    /// `AGENT_*` variables set but not read (see `config::vars`).
    pub(crate) unknown_variables: Vec<crate::config::vars::UnknownVariable>,
}

impl Context {
    pub(crate) fn from_config(c: &Config) -> Context {
        Context {
            target: c
                .database
                .dsn
                .as_ref()
                .map(|d| d.target())
                .unwrap_or_default(),
            dsn_source: c.database.dsn_source,
            pool_size: c.app.pool_size,
            max_overflow: c.app.max_overflow,
            instances: c.app.instances,
            checkpointer_pool_max_size: c.app.checkpointer_pool_max_size,
            app_role: c.app.role.clone(),
            connections_warn_ratio: 0.8,
            region_latency_seconds: 0.03,
            restart_window_seconds: 600.0,
            idle_in_transaction_seconds: c.checks.idle_in_transaction_threshold.as_secs_f64(),
            replica_lag_seconds: 30.0,
            database_type: c.app.database_type,
            sqlite_path: c.app.sqlite_path.as_ref().map(|p| p.display().to_string()),
            dsn_configured: c.database.dsn.is_some(),
            unknown_variables: c.unknown_variables.0.clone(),
        }
    }
}

impl Default for Context {
    fn default() -> Self {
        Context {
            target: "db:5432/railway".into(),
            dsn_source: "DATABASE_URL",
            pool_size: 10,
            max_overflow: 20,
            instances: 1,
            checkpointer_pool_max_size: None,
            app_role: None,
            connections_warn_ratio: 0.8,
            region_latency_seconds: 0.03,
            restart_window_seconds: 600.0,
            idle_in_transaction_seconds: 60.0,
            replica_lag_seconds: 30.0,
            database_type: crate::config::DatabaseType::Postgresql,
            sqlite_path: None,
            dsn_configured: true,
            unknown_variables: Vec::new(),
        }
    }
}

/// The overall status of a set of findings: `ok`, `warning` or `critical` (info does not count).
pub fn status_of(severities: impl Iterator<Item = Severity>) -> &'static str {
    match severities.max() {
        Some(Severity::Critical) => "critical",
        Some(Severity::Warning) => "warning",
        _ => "ok",
    }
}

/// Pure: every finding the snapshot supports, most severe first.
pub(crate) fn evaluate(snap: &Snapshot, cx: &Context, now: SystemTime) -> Vec<Finding> {
    let mut out = Vec::new();
    config::evaluate(cx, &mut out);
    connect::evaluate(snap, cx, &mut out);
    database::evaluate(snap, cx, now, &mut out);
    activity::evaluate(snap, cx, &mut out);
    schema::evaluate(snap, cx, &mut out);
    app::evaluate(snap, cx, &mut out);
    storage::evaluate(snap, cx, &mut out);
    recovery::evaluate(snap, cx, &mut out);
    checkpoint_bloat::evaluate(snap, cx, &mut out);
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(b.code)));
    out
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Builds snapshots from outcomes for table tests.
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use crate::check::Observation;
    use crate::error::CheckError;
    use crate::snapshot::{CheckState, Freshness, Outcome, Snapshot};

    pub(crate) fn snap(entries: Vec<(&'static str, Result<Observation, CheckError>)>) -> Snapshot {
        let mut s = Snapshot {
            generation: 1,
            started: SystemTime::UNIX_EPOCH,
            expected: vec![],
            checks: Default::default(),
            deferred: Default::default(),
            retired: Default::default(),
        };
        for (id, result) in entries {
            s.checks.insert(
                id.into(),
                Arc::new(CheckState {
                    last: Outcome {
                        at: SystemTime::UNIX_EPOCH,
                        duration: Duration::ZERO,
                        result,
                    },
                    samples: vec![],
                    last_success: None,
                    runs: 1,
                    consecutive_failures: 0,
                    errors: Default::default(),
                    freshness: Freshness::default(),
                    last_good: None,
                }),
            );
        }
        s
    }
}
