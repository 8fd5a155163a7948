//! Check `pg_activity`: the guide's "slow queries" `pg_stat_activity` query, done properly.
//! Longest active query and oldest transaction, active queries over the threshold (default 2 s,
//! the guide's "response times >2s"), sessions idle in transaction and for how long, sessions
//! blocked by a lock and who blocks them (`pg_blocking_pids`, called only for sessions waiting
//! on a lock). Session details (pid, durations, application, wait event, query text truncated
//! to [`QUERY_TEXT_CHARS`]) go to the observation for findings, never into labels or logs.
//!
//! One statement over `pg_stat_activity` (client backends, not the agent's own), details capped
//! at [`MAX_SESSIONS`] rows: cost grows with sessions, never with tables.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BoxFuture, Check, Observation, pg_util};
use crate::catalog::{self, Sample};
use crate::error::CheckError;
use crate::pg::PgTarget;

pub const ID: &str = "pg_activity";

/// Longest query text kept per session (characters).
pub const QUERY_TEXT_CHARS: usize = 256;
/// Most sessions detailed per run (the oldest transactions first).
pub const MAX_SESSIONS: usize = 100;

fn sql() -> String {
    format!(
        "WITH a AS (SELECT pid, usename::text AS usename, application_name, state, wait_event_type, wait_event, \
         query_start, xact_start, state_change, query FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()), \
         w AS (SELECT pid, pg_blocking_pids(pid) AS blocked_by FROM a WHERE wait_event_type = 'Lock'), \
         b AS (SELECT DISTINCT unnest(blocked_by) AS pid FROM w) \
         SELECT json_build_object(\
         'non_idle', (SELECT count(*) FROM a WHERE state IS DISTINCT FROM 'idle'), \
         'sessions', (SELECT coalesce(json_agg(s), '[]') FROM (\
         SELECT a.pid, a.usename AS user, a.application_name AS application, a.state, \
         a.wait_event_type, a.wait_event, \
         extract(epoch FROM now() - a.query_start)::float8 AS query_seconds, \
         extract(epoch FROM now() - a.xact_start)::float8 AS transaction_seconds, \
         extract(epoch FROM now() - a.state_change)::float8 AS state_seconds, \
         coalesce(w.blocked_by, '{{}}') AS blocked_by, left(a.query, {QUERY_TEXT_CHARS}) AS query \
         FROM a LEFT JOIN w USING (pid) \
         WHERE a.state IS DISTINCT FROM 'idle' OR a.pid IN (SELECT pid FROM b) \
         ORDER BY coalesce(a.xact_start, a.query_start) NULLS LAST, a.pid LIMIT {MAX_SESSIONS}) s))::text"
    )
}

/// One client backend that is not plainly idle, or that blocks someone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub pid: i32,
    /// Role; `None` when the monitoring role may not see it.
    pub user: Option<String>,
    pub application: Option<String>,
    /// `pg_stat_activity.state`; `None` when hidden (role lacks `pg_read_all_stats`).
    pub state: Option<String>,
    pub wait_event_type: Option<String>,
    pub wait_event: Option<String>,
    /// Age of the current (or last) query.
    pub query_seconds: Option<f64>,
    /// Age of the open transaction, if any.
    pub transaction_seconds: Option<f64>,
    /// Time since the state last changed.
    pub state_seconds: Option<f64>,
    /// Pids holding the lock this session waits for (`pg_blocking_pids`).
    #[serde(default)]
    pub blocked_by: Vec<i32>,
    /// Query text, truncated to [`QUERY_TEXT_CHARS`] characters.
    pub query: Option<String>,
}

impl Session {
    pub fn is_active(&self) -> bool {
        self.state.as_deref() == Some("active")
    }
    pub fn is_idle_in_transaction(&self) -> bool {
        self.state
            .as_deref()
            .is_some_and(|s| s.starts_with("idle in transaction"))
    }
}

/// What one run saw, with the figures the metrics carry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    pub threshold_seconds: f64,
    pub active_query_max_seconds: f64,
    pub transaction_max_seconds: f64,
    pub idle_in_transaction_max_seconds: f64,
    pub idle_in_transaction_sessions: u32,
    /// Active queries older than the threshold.
    pub slow_queries: u32,
    /// Sessions waiting for a lock another session holds.
    pub blocked_sessions: u32,
    /// Pids that block at least one session.
    pub blockers: Vec<i32>,
    /// Client backends not idle (all of them, even past [`MAX_SESSIONS`]).
    pub non_idle_sessions: u32,
    /// True when more sessions existed than were detailed.
    pub truncated: bool,
    /// Details, oldest transaction first.
    pub sessions: Vec<Session>,
}

impl Activity {
    /// Active queries over the threshold, longest first.
    pub fn slow(&self) -> Vec<&Session> {
        let mut v: Vec<&Session> = self
            .sessions
            .iter()
            .filter(|s| s.is_active() && s.query_seconds.unwrap_or(0.0) > self.threshold_seconds)
            .collect();
        v.sort_by(|a, b| {
            b.query_seconds
                .partial_cmp(&a.query_seconds)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        v
    }
    /// Sessions blocked by another.
    pub fn blocked(&self) -> Vec<&Session> {
        self.sessions
            .iter()
            .filter(|s| !s.blocked_by.is_empty())
            .collect()
    }
}

#[derive(Debug, Deserialize)]
pub struct Raw {
    pub non_idle: u32,
    pub sessions: Vec<Session>,
}

/// Pure: the figures from the sessions seen.
pub fn summarize(raw: Raw, threshold: Duration) -> Activity {
    let t = threshold.as_secs_f64();
    let mut a = Activity {
        threshold_seconds: t,
        active_query_max_seconds: 0.0,
        transaction_max_seconds: 0.0,
        idle_in_transaction_max_seconds: 0.0,
        idle_in_transaction_sessions: 0,
        slow_queries: 0,
        blocked_sessions: 0,
        blockers: Vec::new(),
        non_idle_sessions: raw.non_idle,
        truncated: raw.sessions.len() >= MAX_SESSIONS && raw.non_idle as usize > raw.sessions.len(),
        sessions: Vec::new(),
    };
    let mut blockers = BTreeSet::new();
    for s in &raw.sessions {
        let q = s.query_seconds.unwrap_or(0.0).max(0.0);
        if s.is_active() {
            a.active_query_max_seconds = a.active_query_max_seconds.max(q);
            if q > t {
                a.slow_queries += 1;
            }
        }
        if let Some(x) = s.transaction_seconds {
            a.transaction_max_seconds = a.transaction_max_seconds.max(x.max(0.0));
        }
        if s.is_idle_in_transaction() {
            a.idle_in_transaction_sessions += 1;
            a.idle_in_transaction_max_seconds = a
                .idle_in_transaction_max_seconds
                .max(s.state_seconds.unwrap_or(0.0).max(0.0));
        }
        if !s.blocked_by.is_empty() {
            a.blocked_sessions += 1;
            blockers.extend(s.blocked_by.iter().copied());
        }
    }
    a.blockers = blockers.into_iter().collect();
    a.sessions = raw.sessions;
    a
}

pub struct ActivityCheck {
    pg: Arc<PgTarget>,
    threshold: Duration,
    sql: String,
}

impl ActivityCheck {
    pub fn new(pg: Arc<PgTarget>, threshold: Duration) -> Self {
        ActivityCheck {
            pg,
            threshold,
            sql: sql(),
        }
    }
}

impl Check for ActivityCheck {
    fn id(&self) -> &'static str {
        ID
    }
    fn timeout(&self) -> Duration {
        pg_util::timeout(&self.pg, 1)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            let raw: Raw = pg_util::json_query(&self.pg, &conn, &self.sql, "activity").await?;
            Ok(Observation::PgActivity(summarize(raw, self.threshold)))
        })
    }
}

/// Pure: the series of a successful run.
pub fn samples(o: &Activity, out: &mut Vec<Sample>) {
    let g = |def, v: f64, out: &mut Vec<Sample>| out.push(Sample::new(def, &[], v));
    g(
        &catalog::PG_ACTIVE_QUERY_MAX,
        o.active_query_max_seconds,
        out,
    );
    g(&catalog::PG_SLOW_QUERIES, f64::from(o.slow_queries), out);
    g(&catalog::PG_SLOW_QUERY_THRESHOLD, o.threshold_seconds, out);
    g(&catalog::PG_TRANSACTION_MAX, o.transaction_max_seconds, out);
    g(
        &catalog::PG_IDLE_IN_TX_MAX,
        o.idle_in_transaction_max_seconds,
        out,
    );
    g(
        &catalog::PG_IDLE_IN_TX,
        f64::from(o.idle_in_transaction_sessions),
        out,
    );
    g(&catalog::PG_BLOCKED, f64::from(o.blocked_sessions), out);
    g(&catalog::PG_BLOCKERS, o.blockers.len() as f64, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(pid: i32, state: &str, q: f64, x: Option<f64>, st: f64) -> Session {
        Session {
            pid,
            user: Some("rose".into()),
            application: Some("rose".into()),
            state: Some(state.into()),
            wait_event_type: None,
            wait_event: None,
            query_seconds: Some(q),
            transaction_seconds: x,
            state_seconds: Some(st),
            blocked_by: vec![],
            query: Some("SELECT 1".into()),
        }
    }

    #[test]
    fn slow_idle_and_blocked_are_counted() {
        let mut blocked = session(12, "active", 4.0, Some(4.0), 4.0);
        blocked.wait_event_type = Some("Lock".into());
        blocked.blocked_by = vec![11];
        let raw = Raw {
            non_idle: 4,
            sessions: vec![
                session(10, "active", 30.0, Some(31.0), 30.0),
                session(11, "idle in transaction", 0.1, Some(50.0), 45.0),
                blocked,
                session(13, "active", 0.5, Some(0.5), 0.5),
            ],
        };
        let a = summarize(raw, Duration::from_secs(2));
        assert_eq!(a.slow_queries, 2);
        assert_eq!(a.active_query_max_seconds, 30.0);
        assert_eq!(a.transaction_max_seconds, 50.0);
        assert_eq!(a.idle_in_transaction_max_seconds, 45.0);
        assert_eq!(a.idle_in_transaction_sessions, 1);
        assert_eq!(a.blocked_sessions, 1);
        assert_eq!(a.blockers, vec![11]);
        assert_eq!(a.slow()[0].pid, 10);
        assert_eq!(a.blocked()[0].pid, 12);
        assert!(!a.truncated);
        let mut out = Vec::new();
        samples(&a, &mut out);
        let get = |n: &str| out.iter().find(|s| s.def.name == n).and_then(Sample::num);
        assert_eq!(get("rose_pg_slow_queries"), Some(2.0));
        assert_eq!(get("rose_pg_blocked_sessions"), Some(1.0));
        assert_eq!(get("rose_pg_idle_in_transaction_max_seconds"), Some(45.0));
    }

    #[test]
    fn nothing_going_on_is_all_zeros_and_hidden_rows_do_not_panic() {
        let hidden = Session {
            pid: 1,
            user: None,
            application: None,
            state: None,
            wait_event_type: None,
            wait_event: None,
            query_seconds: None,
            transaction_seconds: None,
            state_seconds: None,
            blocked_by: vec![],
            query: None,
        };
        let a = summarize(
            Raw {
                non_idle: 1,
                sessions: vec![hidden],
            },
            Duration::from_secs(2),
        );
        assert_eq!(a.slow_queries, 0);
        assert_eq!(a.active_query_max_seconds, 0.0);
        let doc = r#"{"non_idle": 0, "sessions": []}"#;
        let r: Raw = pg_util::decode(doc, "x").unwrap();
        assert_eq!(summarize(r, Duration::from_secs(2)).blocked_sessions, 0);
    }
}
