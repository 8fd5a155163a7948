//! Check `pg_activity`: the guide's "slow queries" `pg_stat_activity` query, done properly.
//! Longest active query and oldest transaction, active queries over the threshold (default 2 s,
//! the guide's "response times >2s"), sessions idle in transaction and for how long, sessions
//! blocked by a lock and who blocks them (`pg_blocking_pids`, called only for sessions waiting
//! on a lock).
//!
//! Every count and maximum is computed in SQL over all client backends, however many there are;
//! only the session details are capped: at most [`PER_CATEGORY`] of each kind (slow, idle in
//! transaction, blocked, blocking), the worst first, so one kind never crowds out another.
//!
//! Query text: other sessions' SQL carries literals (`ALTER ROLE x PASSWORD '...'`), so a
//! session's `query` is the [`query_text::normalize`]d text (literals replaced by `?`, at most
//! [`QUERY_TEXT_CHARS`]) plus `query_id` on PostgreSQL 14+ when `compute_query_id` is on. The raw
//! text is kept only when `raw_query_text` is configured (default off), and then only for
//! `/findings` and `agent diagnose`, never for logs, labels or pushed alerts.
//!
//! One statement over the client sessions (`pg_stat_get_activity`, not the agent's own): cost grows with
//! sessions, never with tables.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::util::{self, VersionCache};
use crate::catalog::{self, Sample};
use crate::check::{BoxFuture, Check, Observation, query_text};
use crate::error::CheckError;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_ACTIVITY;

/// Longest query text kept per session (characters), normalized or raw.
pub(crate) const QUERY_TEXT_CHARS: usize = 256;
/// Longest query text read per session (characters): literals cut at the end are hidden, so
/// reading more than is shown keeps the tail of long statements readable.
pub(crate) const QUERY_TEXT_READ_CHARS: usize = 1024;
/// Most sessions detailed per run.
pub(crate) const MAX_SESSIONS: usize = 100;
/// Most sessions detailed per kind (slow, idle in transaction, blocked, blocking).
pub(crate) const PER_CATEGORY: usize = MAX_SESSIONS / 4;
/// Most blocking pids listed (all are counted).
pub(crate) const MAX_BLOCKER_PIDS: usize = 20;
/// `pg_stat_activity.query_id` exists from PostgreSQL 14 (filled when `compute_query_id` is on,
/// or `auto` with pg_stat_statements loaded).
pub(crate) const QUERY_ID_SINCE: u32 = 140_000;

/// The statement for a server version and slow-query threshold.
///
/// It opens with the sessions `pg_connections` reads too ([`util::client_sessions_cte`]), so a
/// cycle reads them once. Only sessions that are not idle are worked on (`w`), plus an idle
/// session that blocks another (a session-level advisory lock): with the app's pools open most
/// sessions are idle, and an idle session is never slow, in a transaction or waiting. The
/// detailed sessions' names and query text are looked up for them alone
/// (`pg_stat_get_activity(pid)`, from the same snapshot of the sessions as the statement's
/// other reads), and every count and maximum comes from one pass over `d`.
pub(crate) fn sql_for(server_version_num: u32, threshold: Duration) -> String {
    let t = threshold.as_secs_f64();
    let query_id = if server_version_num >= QUERY_ID_SINCE {
        "p.query_id::text"
    } else {
        "NULL::text"
    };
    let slow = format!("active AND qs > {t}");
    let cols = "pid, usesysid, application_name, state, wait_event_type, wait_event, query_start, \
         xact_start, state_change";
    format!(
        "WITH {}, \
         w AS (SELECT {cols}, \
         coalesce(CASE WHEN wait_event_type = 'Lock' THEN pg_blocking_pids(pid) END, '{{}}') AS blocked_by \
         FROM a WHERE state IS DISTINCT FROM 'idle' AND pid <> pg_backend_pid()), \
         b AS (SELECT DISTINCT unnest(blocked_by) AS pid FROM w), \
         d AS (SELECT x.*, \
         extract(epoch FROM now() - query_start)::float8 AS qs, \
         extract(epoch FROM now() - xact_start)::float8 AS xs, \
         extract(epoch FROM now() - state_change)::float8 AS ss, \
         coalesce(state = 'active', false) AS active, \
         coalesce(state LIKE 'idle in transaction%', false) AS idle_tx \
         FROM (SELECT * FROM w UNION ALL SELECT {cols}, '{{}}'::int[] FROM a \
         WHERE state = 'idle' AND pid IN (SELECT pid FROM b) AND pid <> pg_backend_pid()) x), \
         pick AS ((SELECT pid FROM d WHERE {slow} ORDER BY qs DESC, pid LIMIT {PER_CATEGORY}) \
         UNION (SELECT pid FROM d WHERE idle_tx ORDER BY ss DESC NULLS LAST, pid LIMIT {PER_CATEGORY}) \
         UNION (SELECT pid FROM d WHERE cardinality(blocked_by) > 0 ORDER BY ss DESC NULLS LAST, pid LIMIT {PER_CATEGORY}) \
         UNION (SELECT pid FROM d JOIN b USING (pid) ORDER BY xs DESC NULLS LAST, pid LIMIT {PER_CATEGORY})) \
         SELECT json_build_object(\
         'non_idle', count(*) FILTER (WHERE state IS DISTINCT FROM 'idle'), \
         'active_max', coalesce(max(greatest(qs, 0)) FILTER (WHERE active), 0), \
         'slow', count(*) FILTER (WHERE {slow}), \
         'transaction_max', coalesce(max(greatest(xs, 0)), 0), \
         'idle_tx', count(*) FILTER (WHERE idle_tx), \
         'idle_tx_max', coalesce(max(greatest(ss, 0)) FILTER (WHERE idle_tx), 0), \
         'blocked', count(*) FILTER (WHERE cardinality(blocked_by) > 0), \
         'blocking', (SELECT count(*) FROM b), \
         'blocker_pids', (SELECT coalesce(array_agg(pid ORDER BY pid), '{{}}') FROM (SELECT pid FROM b ORDER BY pid LIMIT {MAX_BLOCKER_PIDS}) x), \
         'notable', count(*) FILTER (WHERE {slow} OR idle_tx OR cardinality(blocked_by) > 0 OR pid IN (SELECT pid FROM b)), \
         'sessions', (SELECT coalesce(json_agg(s), '[]') FROM (\
         SELECT d.pid, pg_get_userbyid(d.usesysid)::text AS user, d.application_name AS application, d.state, \
         d.wait_event_type, d.wait_event, d.qs AS query_seconds, d.xs AS transaction_seconds, \
         d.ss AS state_seconds, d.blocked_by, t.query AS raw_query, t.query_id \
         FROM d JOIN pick USING (pid) LEFT JOIN LATERAL (SELECT left(p.query, {QUERY_TEXT_READ_CHARS}) AS query, \
         {query_id} AS query_id FROM pg_stat_get_activity(d.pid) p) t ON true \
         ORDER BY coalesce(d.xact_start, d.query_start) NULLS LAST, d.pid) s))::text FROM d",
        util::client_sessions_cte!()
    )
}

/// One client backend that is slow, idle in a transaction, blocked, or blocking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub(crate) pid: i32,
    /// Role; `None` when the monitoring role may not see it.
    pub(crate) user: Option<String>,
    pub application: Option<String>,
    /// `pg_stat_activity.state`; `None` when hidden (role lacks `pg_read_all_stats`).
    pub(crate) state: Option<String>,
    pub wait_event_type: Option<String>,
    pub(crate) wait_event: Option<String>,
    /// Age of the current (or last) query.
    pub query_seconds: Option<f64>,
    /// Age of the open transaction, if any.
    pub(crate) transaction_seconds: Option<f64>,
    /// Time since the state last changed.
    pub(crate) state_seconds: Option<f64>,
    /// Pids holding the lock this session waits for (`pg_blocking_pids`).
    #[serde(default)]
    pub blocked_by: Vec<i32>,
    /// Normalized query text (literals replaced by `?`), at most [`QUERY_TEXT_CHARS`].
    #[serde(default)]
    pub query: Option<String>,
    /// `pg_stat_activity.query_id` (PostgreSQL 14+, when computed).
    #[serde(default)]
    pub(crate) query_id: Option<String>,
    /// Raw query text, at most [`QUERY_TEXT_CHARS`]: only with `raw_query_text` configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_query: Option<String>,
}

impl Session {
    pub(crate) fn is_active(&self) -> bool {
        self.state.as_deref() == Some("active")
    }
}

/// What one run saw, with the figures the metrics carry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    pub(crate) threshold_seconds: f64,
    pub(crate) active_query_max_seconds: f64,
    pub(crate) transaction_max_seconds: f64,
    pub idle_in_transaction_max_seconds: f64,
    pub(crate) idle_in_transaction_sessions: u32,
    /// Active queries older than the threshold.
    pub slow_queries: u32,
    /// Sessions waiting for a lock another session holds.
    pub blocked_sessions: u32,
    /// Distinct sessions that block at least one session.
    pub(crate) blocking_sessions: u32,
    /// The blocking pids, lowest first, at most [`MAX_BLOCKER_PIDS`].
    pub blockers: Vec<i32>,
    /// Client backends not idle.
    pub(crate) non_idle_sessions: u32,
    /// True when more sessions were slow, idle in transaction, blocked or blocking than were
    /// detailed.
    pub(crate) truncated: bool,
    /// Details, oldest transaction first: at most [`PER_CATEGORY`] of each kind.
    pub(crate) sessions: Vec<Session>,
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

/// The statement's answer: figures over all sessions, and the capped details.
#[derive(Debug, Deserialize)]
pub struct Raw {
    pub(crate) non_idle: u32,
    pub(crate) active_max: f64,
    pub(crate) slow: u32,
    pub(crate) transaction_max: f64,
    pub(crate) idle_tx: u32,
    pub(crate) idle_tx_max: f64,
    pub(crate) blocked: u32,
    pub(crate) blocking: u32,
    #[serde(default)]
    pub(crate) blocker_pids: Vec<i32>,
    /// Sessions slow, idle in transaction, blocked or blocking (distinct).
    pub(crate) notable: u32,
    pub(crate) sessions: Vec<Session>,
}

/// Pure: the observation from the statement's answer. Query text is normalized; the raw text is
/// kept (bounded) only when `raw_text` is set.
pub fn summarize(raw: Raw, threshold: Duration, raw_text: bool) -> Activity {
    let sessions: Vec<Session> = raw
        .sessions
        .into_iter()
        .map(|mut s| {
            s.query = s
                .raw_query
                .as_deref()
                .map(|q| query_text::normalize(q, QUERY_TEXT_CHARS));
            s.raw_query = s
                .raw_query
                .filter(|_| raw_text)
                .map(|q| q.chars().take(QUERY_TEXT_CHARS).collect());
            s
        })
        .collect();
    let mut blockers = raw.blocker_pids;
    blockers.sort_unstable();
    blockers.dedup();
    blockers.truncate(MAX_BLOCKER_PIDS);
    Activity {
        threshold_seconds: threshold.as_secs_f64(),
        active_query_max_seconds: raw.active_max.max(0.0),
        transaction_max_seconds: raw.transaction_max.max(0.0),
        idle_in_transaction_max_seconds: raw.idle_tx_max.max(0.0),
        idle_in_transaction_sessions: raw.idle_tx,
        slow_queries: raw.slow,
        blocked_sessions: raw.blocked,
        blocking_sessions: raw.blocking,
        blockers,
        non_idle_sessions: raw.non_idle,
        truncated: raw.notable as usize > sessions.len(),
        sessions,
    }
}

pub(crate) struct ActivityCheck {
    pg: Arc<PgTarget>,
    threshold: Duration,
    raw_text: bool,
    version: VersionCache,
}

impl ActivityCheck {
    /// `raw_text`: keep other sessions' raw SQL too (`raw_query_text`, default off).
    pub(crate) fn new(pg: Arc<PgTarget>, threshold: Duration, raw_text: bool) -> Self {
        ActivityCheck {
            pg,
            threshold,
            raw_text,
            version: VersionCache::default(),
        }
    }
}

impl Check for ActivityCheck {
    fn id(&self) -> &str {
        ID
    }
    fn target(&self) -> crate::check::CheckTarget {
        self.pg.check_target()
    }
    fn timeout(&self) -> Duration {
        util::timeout(&self.pg, 1)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            let v = self.version.get(&self.pg, &conn).await?;
            let sql = sql_for(v, self.threshold);
            let raw: Raw = util::json_query(&self.pg, &conn, &sql, "activity")
                .await
                .map_err(withhold_decode_detail)?;
            Ok(Observation::PgActivity(summarize(
                raw,
                self.threshold,
                self.raw_text,
            )))
        })
    }
}

/// A decoding error may quote the document, which holds other sessions' raw SQL: keep the
/// position, drop the quote (the error is logged and exported as span status).
pub(crate) fn withhold_decode_detail(e: CheckError) -> CheckError {
    if e.kind != crate::error::ErrorKind::Protocol || e.sqlstate.is_some() {
        return e;
    }
    let at = e
        .message
        .rfind(" at line ")
        .map(|i| e.message[i..].to_owned())
        .unwrap_or_default();
    CheckError::new(
        e.kind,
        format!(
            "activity: the server's answer did not decode{at} (detail withheld: it quotes other sessions' SQL)"
        ),
    )
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &Activity, out: &mut Vec<Sample>) {
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
    g(&catalog::PG_BLOCKERS, f64::from(o.blocking_sessions), out);
}

/// The registry entry (the check list in `check/mod.rs`): On the primary.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    let c = &b.config.checks;
    b.with_pg(|pg| ActivityCheck::new(pg, c.slow_query_threshold, c.raw_query_text))
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
            query: None,
            query_id: None,
            raw_query: Some("ALTER ROLE x PASSWORD 'hunter2'".into()),
        }
    }

    fn raw(sessions: Vec<Session>) -> Raw {
        Raw {
            non_idle: 300,
            active_max: 30.0,
            slow: 269,
            transaction_max: 50.0,
            idle_tx: 11,
            idle_tx_max: 45.0,
            blocked: 259,
            blocking: 1,
            blocker_pids: vec![11],
            notable: 281,
            sessions,
        }
    }

    #[test]
    fn figures_come_from_all_rows_not_from_the_capped_details() {
        let mut blocked = session(12, "active", 4.0, Some(4.0), 4.0);
        blocked.wait_event_type = Some("Lock".into());
        blocked.blocked_by = vec![11];
        let a = summarize(
            raw(vec![
                session(10, "active", 30.0, Some(31.0), 30.0),
                session(11, "idle in transaction", 0.1, Some(50.0), 45.0),
                blocked,
            ]),
            Duration::from_secs(2),
            false,
        );
        assert_eq!(a.slow_queries, 269);
        assert_eq!(a.blocked_sessions, 259);
        assert_eq!(a.idle_in_transaction_sessions, 11);
        assert_eq!(a.active_query_max_seconds, 30.0);
        assert_eq!(a.transaction_max_seconds, 50.0);
        assert_eq!(a.idle_in_transaction_max_seconds, 45.0);
        assert_eq!(a.blockers, vec![11]);
        assert!(a.truncated);
        assert_eq!(a.slow()[0].pid, 10);
        assert_eq!(a.blocked()[0].pid, 12);
        let mut out = Vec::new();
        samples(&a, &mut out);
        let get = |n: &str| out.iter().find(|s| s.def.name == n).and_then(Sample::num);
        assert_eq!(get("rose_pg_slow_queries"), Some(269.0));
        assert_eq!(get("rose_pg_blocked_sessions"), Some(259.0));
        assert_eq!(get("rose_pg_idle_in_transaction_sessions"), Some(11.0));
        assert_eq!(get("rose_pg_blocking_sessions"), Some(1.0));
        assert_eq!(get("rose_pg_idle_in_transaction_max_seconds"), Some(45.0));
    }

    #[test]
    fn query_text_is_normalized_and_raw_text_only_on_request() {
        let a = summarize(
            raw(vec![session(10, "active", 30.0, None, 30.0)]),
            Duration::from_secs(2),
            false,
        );
        let s = &a.sessions[0];
        assert_eq!(s.query.as_deref(), Some("ALTER ROLE x PASSWORD ?"));
        assert_eq!(s.raw_query, None);
        let shown = serde_json::to_string(&a).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        let mut long = session(10, "active", 30.0, None, 30.0);
        long.raw_query = Some(format!("SELECT '{}'", "x".repeat(5000)));
        let a = summarize(raw(vec![long]), Duration::from_secs(2), true);
        assert_eq!(a.sessions[0].query.as_deref(), Some("SELECT ?"));
        assert_eq!(
            a.sessions[0]
                .raw_query
                .as_deref()
                .map(|q| q.chars().count()),
            Some(QUERY_TEXT_CHARS)
        );
    }

    #[test]
    fn statement_counts_in_sql_and_caps_each_kind() {
        let sql = sql_for(150_000, Duration::from_millis(1500));
        assert!(sql.contains("qs > 1.5"), "{sql}");
        assert!(sql.contains("query_id::text AS query_id"));
        assert_eq!(
            sql.matches(&format!("LIMIT {PER_CATEGORY})")).count(),
            4,
            "{sql}"
        );
        assert!(sql.contains(&format!("left(p.query, {QUERY_TEXT_READ_CHARS})")));
        assert!(!sql.contains(&format!("LIMIT {MAX_SESSIONS}")));
        // It opens with the sessions pg_connections reads: one read of them per cycle.
        assert!(sql.starts_with(&format!("WITH {}, ", util::client_sessions_cte!())));
        assert!(sql_for(130_000, Duration::from_secs(2)).contains("NULL::text AS query_id"));
    }

    #[test]
    fn a_decoding_error_never_quotes_the_document() {
        let doc = r#"{"non_idle": "ALTER ROLE x PASSWORD 'hunter2'"}"#;
        let e = util::decode::<Raw>(doc, "activity").unwrap_err();
        assert!(
            e.message.contains("hunter2"),
            "serde quotes it: {}",
            e.message
        );
        let e = withhold_decode_detail(e);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        assert!(e.message.contains("at line 1"), "{}", e.message);
    }

    #[test]
    fn hidden_rows_and_an_empty_server_do_not_panic() {
        let doc = r#"{"non_idle": 1, "active_max": 0, "slow": 0, "transaction_max": 0,
            "idle_tx": 0, "idle_tx_max": 0, "blocked": 0, "blocking": 0, "blocker_pids": [],
            "notable": 0, "sessions": [{"pid": 1, "user": null, "application": null,
            "state": null, "wait_event_type": null, "wait_event": null, "query_seconds": null,
            "transaction_seconds": null, "state_seconds": null, "blocked_by": [],
            "raw_query": null, "query_id": null}]}"#;
        let r: Raw = util::decode(doc, "x").unwrap();
        let a = summarize(r, Duration::from_secs(2), false);
        assert_eq!(a.slow_queries, 0);
        assert_eq!(a.sessions[0].query, None);
        assert!(!a.truncated);
    }
}
