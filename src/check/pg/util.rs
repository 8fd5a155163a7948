//! Helpers the PostgreSQL checks share: running one statement whose single column is a JSON
//! document (so NULLs, numbers and arrays arrive typed, whatever the server version), quoting
//! literals for statements built from configuration, a per-connection cache of the server
//! version for version-gated checks, and the size history behind growth rates.

use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::check::history;
use crate::error::{CheckError, ErrorKind};
use crate::pg::{Conn, PgTarget};

/// The interval of the reads whose cost grows with what the server holds, not with what the
/// agent asks: the database's size (a `stat` of every file: about 12 ms with 2,000 tables) and
/// `pg_stat_statements` (every entry, up to `pg_stat_statements.max`, 5,000 by default: about
/// 3 ms for 2,000 entries, more under load). Five slow intervals, at most [`RARE_INTERVAL_MAX`],
/// never more often than the slow interval. What they report moves over hours (a database
/// fills, a query's share of the time shifts): the growth rate is an hour's average and the
/// counters are cumulative, so Prometheus' rates over them hold. Ticks are aligned to the
/// agent's start, so such a read joins a slow cycle's round.
pub(crate) fn rare_interval(slow: Duration) -> Duration {
    (slow * 5).min(RARE_INTERVAL_MAX).max(slow)
}

/// The longest default [`rare_interval`].
pub(crate) const RARE_INTERVAL_MAX: Duration = Duration::from_secs(300);

/// The client sessions as the common table expression `a`, which `pg_activity`,
/// `pg_connections` and `pg_connection_budget` all open with, word for word: in a cycle's
/// combined statement it is defined once and the sessions read once for the three
/// ([`crate::pg::batch`]). It calls `pg_stat_get_activity(NULL)`, the function under the
/// `pg_stat_activity` view, without the view's per-session joins to `pg_database` and
/// `pg_authid`: names are looked up per group ([`session_groups_cte`]) or per detailed session.
/// No query text: `pg_activity` reads it only for the sessions it details. With 300 sessions,
/// each read of the view with its joins was about a fifth of a fast cycle.
macro_rules! client_sessions_cte {
    () => {
        "a AS (SELECT pid, datid, usesysid, state, application_name, wait_event_type, wait_event, \
         client_addr, query_start, xact_start, state_change \
         FROM pg_stat_get_activity(NULL) WHERE backend_type = 'client backend')"
    };
}
pub(crate) use client_sessions_cte;

/// The client sessions of `a` ([`client_sessions_cte`]) counted by what `pg_connections` and
/// `pg_connection_budget` tell apart, as the common table expression `g`: a handful of rows
/// however many sessions the app's pools hold, each with its role's name looked up once.
/// `here`: on the agent's database; `own`: the agent's own session; `lock`: waiting on a
/// heavyweight lock.
macro_rules! session_groups_cte {
    () => {
        "g AS (SELECT datid = (SELECT oid FROM pg_database WHERE datname = current_database()) AS here, \
         own, state, application_name, pg_get_userbyid(usesysid)::text AS usename, address, lock, n \
         FROM (SELECT datid, pid = pg_backend_pid() AS own, state, application_name, usesysid, \
         host(client_addr) AS address, coalesce(wait_event_type = 'Lock', false) AS lock, count(*) AS n \
         FROM a GROUP BY 1, 2, 3, 4, 5, 6, 7) g0)"
    };
}
pub(crate) use session_groups_cte;

/// Bound of one run of a check that issues `statements` statements.
///
/// Each statement's client-side bound is [`crate::pg::query_deadline`]: the statement limit
/// plus at most one more connect timeout for the network.
pub(crate) fn timeout(pg: &PgTarget, statements: u32) -> Duration {
    let l = pg.limits();
    l.connect_timeout
        + crate::pg::query_deadline(l, l.connect_timeout) * statements.max(1)
        + Duration::from_millis(100)
}

/// Runs `sql`, whose first row's first column is a JSON document, and decodes it. The
/// statement runs in this cycle's combined statement ([`crate::pg::batch`]): one round trip
/// for all the checks of a cycle.
pub(crate) async fn json_query<T: DeserializeOwned>(
    pg: &PgTarget,
    conn: &Conn,
    sql: &str,
    what: &str,
) -> Result<T, CheckError> {
    json_query_timed(pg, conn, sql, what).await.map(|(t, _)| t)
}

/// [`json_query`], with the round trip of the statement that carried it (the cycle's combined
/// statement, from send to answer).
pub(crate) async fn json_query_timed<T: DeserializeOwned>(
    pg: &PgTarget,
    conn: &Conn,
    sql: &str,
    what: &str,
) -> Result<(T, Duration), CheckError> {
    let a = pg.json_part(conn, sql, what).await?;
    let text = a
        .doc
        .ok_or_else(|| CheckError::new(ErrorKind::Protocol, format!("{what}: no row")))?;
    Ok((decode(&text, what)?, a.roundtrip))
}

/// Decodes a JSON document from the server.
pub fn decode<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, CheckError> {
    serde_json::from_str(text)
        .map_err(|e| CheckError::new(ErrorKind::Protocol, format!("{what}: {e}")))
}

/// A string literal safe whatever `standard_conforming_strings` is: `E'...'` with quotes and
/// backslashes escaped. Configuration never reaches SQL any other way.
pub(crate) fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A quoted identifier (`"name"` with embedded quotes doubled).
pub(crate) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\0', "").replace('"', "\"\""))
}

/// The server version, fetched once per connection (a statement only after a reconnect).
#[derive(Default)]
pub(crate) struct VersionCache(Mutex<Option<(u64, u32)>>);

impl VersionCache {
    pub(crate) async fn get(&self, pg: &PgTarget, conn: &Conn) -> Result<u32, CheckError> {
        if let Some((g, v)) = *self.0.lock().unwrap_or_else(|p| p.into_inner())
            && g == conn.generation
        {
            return Ok(v);
        }
        let rows = pg
            .simple_query(conn, "SELECT current_setting('server_version_num')")
            .await?;
        let v: u32 = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                CheckError::new(ErrorKind::Protocol, "server_version_num is not a number")
            })?;
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((conn.generation, v));
        Ok(v)
    }
}

/// Size samples of one object over time, for a growth rate from the agent's own history: the
/// checks' one [`super::history::History`] over the last hour, measured against the oldest
/// point in it.
#[derive(Debug)]
pub(crate) struct History(history::History<f64>);

/// How far back the history reaches: the rate is measured over at most this window.
pub(crate) const HISTORY_WINDOW_SECONDS: f64 = 3600.0;

impl Default for History {
    fn default() -> Self {
        History(history::History::new(
            Duration::from_secs_f64(HISTORY_WINDOW_SECONDS),
            history::Baseline::Recent,
        ))
    }
}

impl History {
    /// Records `value` at unix time `at` and returns the growth per second over the retained
    /// window, once two samples at least a second apart exist.
    pub(crate) fn push(&mut self, at: f64, value: f64) -> Option<f64> {
        let first = self.0.push(at, value);
        growth_per_second(first, (at, value))
    }
}

/// Pure: growth per second (the base unit) between two `(unix seconds, value)` points.
pub(crate) fn growth_per_second(first: Option<(f64, f64)>, last: (f64, f64)) -> Option<f64> {
    let (t0, v0) = first?;
    let dt = last.0 - t0;
    (dt >= 1.0).then(|| (last.1 - v0) / dt)
}

/// Histories by name, behind a lock, for checks that track several objects.
#[derive(Debug, Default)]
pub(crate) struct Histories(Mutex<std::collections::BTreeMap<String, History>>);

impl Histories {
    pub(crate) fn push(&self, name: &str, at: f64, value: f64) -> Option<f64> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_owned()).or_default().push(at, value)
    }
}

/// Unix time now, in seconds.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Caps free text from the server used as a label value (application names, roles).
pub(crate) fn label_text(s: &str, empty: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        return empty.to_owned();
    }
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_LABEL_CHARS)
        .collect()
}

/// Longest label value taken from server text.
pub(crate) const MAX_LABEL_CHARS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_reads_come_every_five_slow_intervals_at_most_five_minutes() {
        let s = Duration::from_secs;
        assert_eq!(rare_interval(s(60)), s(300));
        assert_eq!(rare_interval(s(1)), s(5));
        assert_eq!(rare_interval(s(120)), s(300));
        // Never more often than the slow interval.
        assert_eq!(rare_interval(s(600)), s(600));
    }

    #[test]
    fn literals_and_identifiers_are_quoted() {
        assert_eq!(lit("a'b\\c"), "E'a''b\\\\c'");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn growth_needs_two_points_and_uses_the_window() {
        let mut h = History::default();
        assert_eq!(h.push(1000.0, 100.0), None);
        assert_eq!(h.push(1000.5, 100.0), None);
        // 1,000 bytes in half an hour: 2,000 per hour, 0.56 per second.
        assert_eq!(h.push(1000.0 + 1800.0, 1100.0), Some(1000.0 / 1800.0));
        // Points older than the window go, keeping the rate recent.
        h.push(1000.0 + 7200.0, 1100.0);
        let g = h.push(1000.0 + 7200.0 + 1800.0, 2100.0).unwrap();
        assert!((g - 1000.0 / 1800.0).abs() < 1e-9, "{g}");
        // The clock going back restarts the history instead of a negative rate.
        assert_eq!(h.push(10.0, 5.0), None);
    }

    #[test]
    fn a_short_interval_keeps_a_bounded_history_and_the_same_rate() {
        let mut h = History::default();
        let mut rate = None;
        for i in 0..200_000u32 {
            let at = f64::from(i) * 0.01; // 2,000 s at a 10 ms interval, growing 1 per second
            rate = h.push(at, at);
        }
        assert!(
            h.0.len() <= 2 * history::HISTORY_SPACING + 2,
            "{}",
            h.0.len()
        );
        assert!((rate.unwrap() - 1.0).abs() < 1e-9, "{rate:?}");
        // Past the window, the rate still covers about the last hour.
        for i in 200_000..600_000u32 {
            let at = f64::from(i) * 0.01;
            rate = h.push(at, if at < 3000.0 { at } else { 3000.0 });
        }
        assert!(
            h.0.len() <= 2 * history::HISTORY_SPACING + 2,
            "{}",
            h.0.len()
        );
        let (t0, _) = h.0.first().unwrap();
        assert!(6000.0 - t0 <= HISTORY_WINDOW_SECONDS + 30.0, "{t0}");
        assert!(rate.unwrap() >= 0.0 && rate.unwrap() < 1.0);
    }

    #[test]
    fn label_text_is_bounded() {
        assert_eq!(label_text("", "unset"), "unset");
        assert_eq!(label_text(&"x".repeat(500), "unset").len(), MAX_LABEL_CHARS);
        assert_eq!(label_text("app\nname", "unset"), "appname");
    }
}
