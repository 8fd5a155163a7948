//! One round trip per cycle: the JSON statements the PostgreSQL checks ask at about the same
//! instant are gathered into one statement.
//!
//! The scheduler starts every check of a cadence at the same tick (`scheduler::next_tick`), so
//! the checks of one cycle ask their statements within a few milliseconds of each other. The
//! first statement asked opens a *round*; every statement asked on the same connection within
//! [`gather_window`] of it joins the round; then the round runs once, as one statement (one
//! round trip, one `statement_timeout`, one implicit transaction), its parts in a canonical
//! order (sorted by text) so that the same checks give the same statement every cycle:
//!
//! ```sql
//! SELECT json_build_array((SELECT q.j::text FROM (<part 1>) AS q(j) LIMIT 1), ...)::text
//! ```
//!
//! - A common table expression that several parts open with (LangGraph's schema, the client
//!   sessions of `pg_stat_activity`) is defined once for the statement ([`hoist`]).
//! - On a direct session the statement is *prepared* once and executed every cycle after
//!   ([`Prepared`]): parsing and planning a 15 KB statement over the statistics views and the
//!   catalog costs the server several times its execution (measured: 8.4 ms of backend CPU a
//!   fast cycle over the simple protocol, 1.1 ms prepared), and a generic plan of a statement
//!   without parameters is what a custom one would be. The session's own limits apply (set at
//!   connect); PostgreSQL re-plans by itself after DDL on what the plan reads, and checks
//!   privileges at every execution, so a revoked privilege fails the next cycle as it would
//!   unprepared.
//! - Through a pooler (PgBouncer in transaction mode: a named statement may live on another
//!   server connection) it is one simple-protocol message, in the same message as the
//!   `SET LOCAL` limits, see [`super::guarded`].
//!
//! Each part is one check's own statement, unchanged; each check decodes its own element, so
//! each check still reports on its own (its success, its duration: the gather window plus the
//! shared round trip, its errors, its span). A statement that follows from another's answer
//! (pg_statements reads after it found the extension) joins the next round of the cycle.
//!
//! A part that fails fails the whole statement (PostgreSQL checks privileges and parses every
//! relation of a statement before it runs any of it). The checks guard what they can in SQL;
//! when the combined statement still fails at statement level, every check of the round runs
//! its own statement alone for that cycle (pipelined on the one connection, each under its own
//! `statement_timeout` and a short lock wait, [`FALLBACK_LOCK_TIMEOUT`]), counted in `rose_pg_batch_fallbacks_total{reason}`; a part that then
//! fails alone runs alone for the next [`ALONE_ROUNDS`] rounds, so a missing privilege costs one
//! more statement a cycle, not a failed batch every cycle, and a slow part stops holding the
//! others after one cycle (a part that runs alone is sent after the cycle's round has
//! answered, never ahead of it on the connection, with the same short lock wait). A lost
//! connection is not a fallback: every part fails as it would have alone.

mod hoist;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio_postgres::Statement;

use super::{Conn, Limits};
use crate::error::{CheckError, ErrorKind};

/// How long a round waits for the other statements of its cycle, at most
/// [`MAX_GATHER`] and a twentieth of `statement_timeout` (short test intervals have short
/// timeouts; the window must stay small against the interval).
pub(crate) fn gather_window(limits: &Limits) -> Duration {
    (limits.statement_timeout / 20).min(MAX_GATHER)
}

/// The longest gather window: the checks of a tick ask within a few milliseconds on an idle
/// machine; 50 ms leaves room for a loaded one (at 25 ms, a 2-core machine under pgbench split
/// one round in five) and is nothing against a 15 s interval.
pub(crate) const MAX_GATHER: Duration = Duration::from_millis(50);

/// The lock wait of a part that runs apart from its round: because the round failed, or because
/// the part failed alone lately. The round has already spent up to `lock_timeout` when it
/// fails, and the parts then share one connection in turn: with the full wait each, three parts
/// blocked by another session's lock (a migration's `ACCESS EXCLUSIVE`) would queue the healthy
/// parts (and the cycle's second round) behind three full waits and past the cycle's bound. At
/// this wait a blocked part fails at once with its own lock error, and the others answer in
/// that cycle.
pub(crate) const FALLBACK_LOCK_TIMEOUT: Duration = Duration::from_millis(50);

/// Rounds a part that failed alone runs alone before it is tried in the batch again (with a
/// 15 s interval, about two minutes).
pub(crate) const ALONE_ROUNDS: u32 = 8;

/// Most parts in one statement (`json_build_array` takes at most 100 arguments).
pub(crate) const MAX_PARTS: usize = 50;

/// Most combined statements kept prepared on one session. A session sees a handful: the fast
/// cycle's, the slow cycle's, the slow cycle with the 5-minute reads, the two second rounds, and
/// the same less a part that runs alone; a statement pushed out is closed on the server (its
/// plan, about 1 MB, freed), and prepared again if it comes back.
pub(crate) const MAX_PREPARED: usize = 8;

/// Why a round fell back to per-check statements (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The server refused the statement (a privilege, a missing relation or function...).
    Error,
    /// `statement_timeout` (SQLSTATE 57014) or another cancellation.
    Timeout,
    /// The answer did not decode as one document per part.
    Decode,
}

impl Reason {
    pub(crate) const ALL: [Reason; 3] = [Reason::Error, Reason::Timeout, Reason::Decode];
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Error => "error",
            Reason::Timeout => "timeout",
            Reason::Decode => "decode",
        }
    }
}

/// Pure: the reason a failed combined statement falls back, or `None` when it must not (the
/// connection is gone: every part would fail the same way alone).
pub(crate) fn fallback_reason(err: &CheckError) -> Option<Reason> {
    match err.kind {
        ErrorKind::ConnectionClosed | ErrorKind::QueryTimeout if err.sqlstate.is_none() => None,
        ErrorKind::Protocol if err.sqlstate.is_none() => Some(Reason::Decode),
        _ if err.sqlstate.as_deref().is_some_and(|s| s.starts_with("57")) => Some(Reason::Timeout),
        _ => Some(Reason::Error),
    }
}

/// Pure: the combined statement of `parts` (each a statement whose first row's first column is
/// a JSON document as text). The last element is the server's own time on the statement, in
/// seconds, from the message's arrival (`statement_timestamp()`) to after the last part
/// (arguments are evaluated in order): the round trip less that is the network's.
pub(crate) fn combined_sql(parts: &[String]) -> String {
    let (defs, parts) = hoist::hoist(parts);
    let with = if defs.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", defs.join(", "))
    };
    let cols = parts
        .iter()
        .map(|p| {
            let p = p.trim().trim_end_matches(';').trim_end();
            format!("(SELECT q.j::text FROM ({p}) AS q(j) LIMIT 1)")
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{with}SELECT json_build_array({cols}, \
         extract(epoch FROM clock_timestamp() - statement_timestamp())::float8::text)::text"
    )
}

/// Pure: the documents of a combined answer, one per part (`None` where a part had no row),
/// and the server's time on the statement.
pub(crate) fn split_answer(
    text: Option<&str>,
    parts: usize,
) -> Result<(Vec<Option<String>>, Duration), CheckError> {
    let bad = || {
        CheckError::new(
            ErrorKind::Protocol,
            format!("batch: the answer is not an array of {parts} documents"),
        )
    };
    let mut docs: Vec<Option<String>> =
        serde_json::from_str(text.ok_or_else(bad)?).map_err(|_| bad())?;
    if docs.len() != parts + 1 {
        return Err(bad());
    }
    let server = docs
        .pop()
        .flatten()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::ZERO, |s| Duration::from_secs_f64(s.min(3600.0)));
    Ok((docs, server))
}

/// Pure: the order in which a round's parts go into its statement: sorted by text (ties by
/// the order asked), so the same parts make the same statement whatever order they were asked
/// in. `order[k]` is the index, as asked, of the statement's `k`-th part.
pub(crate) fn canonical_order(parts: &[String]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|&a, &b| parts[a].cmp(&parts[b]).then(a.cmp(&b)));
    order
}

/// The combined statements prepared on one direct session, most recently used last; at most
/// [`MAX_PREPARED`]. Dropping a [`Statement`] closes it on the server.
#[derive(Default)]
pub(crate) struct Prepared {
    statements: Mutex<Recent<Statement>>,
}

impl Prepared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recent<Statement>> {
        self.statements.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Values by statement text, most recently used last, at most [`MAX_PREPARED`]: the oldest is
/// dropped to make room.
struct Recent<V> {
    entries: Vec<(String, V)>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            entries: Vec::new(),
        }
    }
}

impl<V: Clone> Recent<V> {
    fn get(&mut self, sql: &str) -> Option<V> {
        let i = self.entries.iter().position(|(s, _)| s == sql)?;
        let entry = self.entries.remove(i);
        let v = entry.1.clone();
        self.entries.push(entry);
        Some(v)
    }

    fn put(&mut self, sql: &str, v: V) {
        self.entries.retain(|(s, _)| s != sql);
        if self.entries.len() >= MAX_PREPARED {
            self.entries.remove(0);
        }
        self.entries.push((sql.to_owned(), v));
    }

    fn forget(&mut self, sql: &str) {
        self.entries.retain(|(s, _)| s != sql);
    }
}

/// Runs the combined statement `sql` prepared on a direct session: from the session's cache, or
/// prepared now and kept. Bounded like [`super::exec`]; a statement that failed is forgotten
/// (prepared again next time: the server may have changed under it). Also returns the time
/// spent preparing (a round trip of its own, not the cycle's).
async fn run_prepared(
    conn: &Conn,
    limits: &Limits,
    target: &str,
    sql: &str,
    prepares: &AtomicU64,
) -> (Result<Option<String>, CheckError>, Duration) {
    let deadline = super::query_deadline(limits, conn.connect_duration);
    let mut preparing = Duration::ZERO;
    let run = async {
        let cached = conn.prepared.lock().get(sql);
        let st = match cached {
            Some(st) => st,
            None => {
                let started = Instant::now();
                let st = conn.client.prepare(sql).await?;
                preparing = started.elapsed();
                prepares.fetch_add(1, Ordering::Relaxed);
                conn.prepared.lock().put(sql, st.clone());
                st
            }
        };
        conn.client.query(&st, &[]).await
    };
    let result = match tokio::time::timeout(deadline, run).await {
        Err(_) => Err(super::no_answer(target, deadline)),
        Ok(Err(e)) => {
            conn.prepared.lock().forget(sql);
            Err(CheckError::from_pg(&e, target))
        }
        Ok(Ok(rows)) => match rows.first() {
            None => Ok(None),
            Some(r) => r.try_get::<_, Option<String>>(0).map_err(|_| {
                CheckError::new(
                    ErrorKind::Protocol,
                    "batch: the combined statement's answer is not text",
                )
            }),
        },
    };
    (result, preparing)
}

/// What a round answered.
#[derive(Clone)]
enum Answer {
    /// One document per part, and the statement's round trip (send to answer) less the
    /// server's own time on it.
    Parts(Arc<Vec<Option<String>>>, Duration),
    /// The combined statement failed; `Some(reason)`: each part runs alone.
    Failed(CheckError, Option<Reason>),
}

struct Round {
    generation: u64,
    /// The first check to read a fallback answer counts it.
    counted: std::sync::atomic::AtomicBool,
    /// The parts asked so far; `None` once the round has closed and runs.
    parts: Arc<Mutex<Option<Vec<String>>>>,
    answer: Shared<BoxFuture<'static, Answer>>,
}

#[derive(Default)]
struct State {
    /// The latest round, while a check still waits on it (a finished round must not keep an
    /// old connection open).
    open: Option<std::sync::Weak<Round>>,
    /// Parts (by document name) that run alone, and for how many more rounds.
    alone: HashMap<String, u32>,
}

/// The batcher of one target (see the module doc).
#[derive(Default)]
pub struct Batcher {
    state: Mutex<State>,
    fallbacks: [AtomicU64; 3],
    /// Combined statements prepared so far, over every session ([`Prepared`]).
    prepares: Arc<AtomicU64>,
}

/// One part's answer: its document (`None`: no row) and the round trip of the statement that
/// carried it: of a combined statement, less the server's time on it (the network's share, as a
/// trivial statement alone would see it).
pub(crate) struct PartAnswer {
    pub(crate) doc: Option<String>,
    pub(crate) roundtrip: Duration,
}

impl Batcher {
    /// Fallbacks so far, by reason.
    pub fn fallbacks(&self) -> Vec<(Reason, u64)> {
        Reason::ALL
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, self.fallbacks[i].load(Ordering::Relaxed)))
            .collect()
    }

    /// Combined statements prepared so far (a steady cycle prepares none).
    pub fn prepares(&self) -> u64 {
        self.prepares.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the part named `what` runs alone this round (and counts the round down).
    fn take_alone(&self, what: &str) -> bool {
        let mut st = self.lock();
        match st.alone.get_mut(what) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    st.alone.remove(what);
                }
                true
            }
            _ => false,
        }
    }

    fn set_alone(&self, what: &str) {
        let mut st = self.lock();
        if st.alone.len() < 256 || st.alone.contains_key(what) {
            st.alone.insert(what.to_owned(), ALONE_ROUNDS);
        }
    }

    /// Joins the open round of this connection, or opens one. Returns the round and the part's
    /// index in it.
    fn join(
        &self,
        conn: Arc<Conn>,
        limits: &Limits,
        target: &str,
        sql: &str,
    ) -> (Arc<Round>, usize) {
        let mut st = self.lock();
        if let Some(r) = st.open.as_ref().and_then(|w| w.upgrade())
            && r.generation == conn.generation
        {
            let mut parts = r.parts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = parts.as_mut()
                && v.len() < MAX_PARTS
            {
                v.push(sql.to_owned());
                let i = v.len() - 1;
                drop(parts);
                return (r, i);
            }
        }
        let parts = Arc::new(Mutex::new(Some(vec![sql.to_owned()])));
        let generation = conn.generation;
        let answer = run_round(
            conn,
            parts.clone(),
            limits.clone(),
            target.to_owned(),
            gather_window(limits),
            self.prepares.clone(),
        )
        .boxed()
        .shared();
        let round = Arc::new(Round {
            generation,
            counted: Default::default(),
            parts,
            answer,
        });
        st.open = Some(Arc::downgrade(&round));
        (round, 0)
    }
}

/// The round itself: waits out the gather window, closes the round and runs its statement.
/// Driven by whichever of its parts' checks is still waiting on it (a cancelled check does not
/// cancel the others' round).
async fn run_round(
    conn: Arc<Conn>,
    parts: Arc<Mutex<Option<Vec<String>>>>,
    limits: Limits,
    target: String,
    window: Duration,
    prepares: Arc<AtomicU64>,
) -> Answer {
    tokio::time::sleep(window).await;
    let parts = parts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_default();
    let order = canonical_order(&parts);
    let sorted: Vec<String> = order.iter().map(|&i| parts[i].clone()).collect();
    // Through a pooler a lone part goes as it is (it needs no wrapping); on a direct session it
    // is wrapped too, so that its answer is text and its plan is kept like any round's.
    let single = parts.len() == 1;
    let started = Instant::now();
    let mut preparing = Duration::ZERO;
    let result = if conn.direct {
        let (r, p) = run_prepared(&conn, &limits, &target, &combined_sql(&sorted), &prepares).await;
        preparing = p;
        r
    } else {
        let sql = if single {
            parts[0].clone()
        } else {
            combined_sql(&sorted)
        };
        super::exec(&conn, &limits, &target, &sql)
            .await
            .map(|rows| rows.first().and_then(|r| r.first().cloned().flatten()))
    };
    // The round trip the cycle's statement takes once prepared (`rose_pg_roundtrip_seconds`).
    let elapsed = started.elapsed().saturating_sub(preparing);
    match result {
        Ok(doc) if single && !conn.direct => Answer::Parts(Arc::new(vec![doc]), elapsed),
        Ok(doc) => match split_answer(doc.as_deref(), parts.len()) {
            Ok((docs, server)) => {
                let mut asked = vec![None; parts.len()];
                for (k, d) in docs.into_iter().enumerate() {
                    asked[order[k]] = d;
                }
                Answer::Parts(Arc::new(asked), elapsed.saturating_sub(server))
            }
            Err(e) => Answer::Failed(e, Some(Reason::Decode)),
        },
        // A single part's error is its own: no fallback (it ran alone already).
        Err(e) if single => Answer::Failed(e, None),
        Err(e) => {
            let reason = fallback_reason(&e);
            Answer::Failed(e, reason)
        }
    }
}

impl super::PgTarget {
    /// One part as its own statement.
    async fn part_alone(&self, conn: &Conn, sql: &str) -> Result<PartAnswer, CheckError> {
        let started = Instant::now();
        let rows = self.simple_query(conn, sql).await?;
        Ok(PartAnswer {
            doc: rows.first().and_then(|r| r.first().cloned().flatten()),
            roundtrip: started.elapsed(),
        })
    }

    /// One part as its own statement apart from its round (the round failed, or the part runs
    /// alone): under [`FALLBACK_LOCK_TIMEOUT`], so a part blocked by another session's lock
    /// cannot hold the cycle's other parts behind it.
    async fn part_in_fallback(&self, conn: &Conn, sql: &str) -> Result<PartAnswer, CheckError> {
        let started = Instant::now();
        let limits = super::Limits {
            lock_timeout: self.limits.lock_timeout.min(FALLBACK_LOCK_TIMEOUT),
            ..self.limits.clone()
        };
        let rows = self.simple_query_under(conn, &limits, sql).await?;
        Ok(PartAnswer {
            doc: rows.first().and_then(|r| r.first().cloned().flatten()),
            roundtrip: started.elapsed(),
        })
    }

    /// Runs `sql` (a statement whose first row's first column is a JSON document as text) in
    /// this cycle's round (see [`crate::pg::batch`]): its document, `None` when it returned no
    /// row.
    pub(crate) async fn json_part(
        &self,
        conn: &Conn,
        sql: &str,
        what: &str,
    ) -> Result<PartAnswer, CheckError> {
        let batch = &self.batch;
        let Some(shared) = self.current().filter(|c| c.generation == conn.generation) else {
            return self.part_alone(conn, sql).await;
        };
        if batch.take_alone(what) {
            // Behind the cycle's round, never ahead of it: the server answers one connection's
            // statements in order, and a part that runs alone is one that failed (or was slow).
            tokio::time::sleep(gather_window(&self.limits)).await;
            let round = batch
                .lock()
                .open
                .as_ref()
                .and_then(|w| w.upgrade())
                .filter(|r| r.generation == conn.generation);
            if let Some(r) = round {
                let _ = r.answer.clone().await;
            }
            return self.part_in_fallback(conn, sql).await;
        }
        let (round, index) = batch.join(shared, &self.limits, &self.target, sql);
        match round.answer.clone().await {
            Answer::Parts(docs, roundtrip) => Ok(PartAnswer {
                doc: docs.get(index).cloned().flatten(),
                roundtrip,
            }),
            Answer::Failed(e, None) => {
                if super::needs_invalidate(conn, &e) {
                    self.invalidate(conn.generation);
                }
                Err(e)
            }
            Answer::Failed(e, Some(reason)) => {
                if !round.counted.swap(true, Ordering::Relaxed) {
                    batch.fallbacks[reason as usize].fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(target_db = %self.target, reason = reason.as_str(), sqlstate = e.sqlstate.as_deref().unwrap_or(""), "The cycle's combined statement failed; each check runs its own statement.");
                }
                match self.part_in_fallback(conn, sql).await {
                    Ok(a) => Ok(a),
                    Err(e) => {
                        batch.set_alone(what);
                        Err(e)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_wrapped_as_one_row_scalar_subqueries() {
        let sql = combined_sql(&["SELECT '1'::text".into(), " SELECT x FROM t ; ".into()]);
        assert_eq!(
            sql,
            "SELECT json_build_array((SELECT q.j::text FROM (SELECT '1'::text) AS q(j) LIMIT 1), \
             (SELECT q.j::text FROM (SELECT x FROM t) AS q(j) LIMIT 1), \
             extract(epoch FROM clock_timestamp() - statement_timestamp())::float8::text)::text"
        );
    }

    #[test]
    fn the_same_parts_make_the_same_statement_whatever_the_order_asked() {
        let asked = [
            "SELECT 'b'".to_owned(),
            "SELECT 'a'".into(),
            "SELECT 'c'".into(),
        ];
        let order = canonical_order(&asked);
        assert_eq!(order, vec![1, 0, 2]);
        let again = [
            "SELECT 'c'".to_owned(),
            "SELECT 'b'".into(),
            "SELECT 'a'".into(),
        ];
        let sorted = |p: &[String]| {
            combined_sql(
                &canonical_order(p)
                    .iter()
                    .map(|&i| p[i].clone())
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(sorted(&asked), sorted(&again));
        // The same text twice keeps both, in the order asked.
        assert_eq!(canonical_order(&["x".into(), "x".into()]), vec![0, 1]);
    }

    #[test]
    fn the_prepared_statements_kept_are_the_most_recently_used() {
        let mut r = Recent::<u32>::default();
        for i in 0..MAX_PREPARED as u32 {
            r.put(&format!("s{i}"), i);
        }
        // Using s0 makes s1 the oldest: the next one pushes s1 out, not s0.
        assert_eq!(r.get("s0"), Some(0));
        r.put("new", 99);
        assert_eq!(r.entries.len(), MAX_PREPARED);
        assert_eq!(r.get("s1"), None);
        assert_eq!(r.get("s0"), Some(0));
        assert_eq!(r.get("new"), Some(99));
        // A failed statement is forgotten (prepared again next time).
        r.forget("new");
        assert_eq!(r.get("new"), None);
        // The same text again replaces, never duplicates.
        r.put("s0", 7);
        assert_eq!(r.get("s0"), Some(7));
        assert_eq!(r.entries.iter().filter(|(s, _)| s == "s0").count(), 1);
    }

    #[test]
    fn the_answer_splits_into_one_document_per_part() {
        let (docs, server) = split_answer(Some(r#"["{\"a\":1}", null, "0.004"]"#), 2).unwrap();
        assert_eq!(docs, vec![Some(r#"{"a":1}"#.to_owned()), None]);
        assert_eq!(server, Duration::from_millis(4));
        // A server time that does not parse is no time, not an error.
        assert_eq!(
            split_answer(Some(r#"["{}", "-1"]"#), 1).unwrap().1,
            Duration::ZERO
        );
        assert!(split_answer(Some(r#"["{}", "0"]"#), 2).is_err());
        assert!(split_answer(Some("not json"), 1).is_err());
        assert!(split_answer(None, 1).is_err());
        // A decoding error never quotes the answer (it may hold other sessions' SQL).
        let e = split_answer(Some(r#"[1, "secret", "0"]"#), 2).unwrap_err();
        assert!(!e.message.contains("secret"), "{}", e.message);
    }

    #[test]
    fn a_lost_connection_is_not_a_fallback() {
        let closed = CheckError::new(ErrorKind::ConnectionClosed, "gone");
        assert_eq!(fallback_reason(&closed), None);
        let client_timeout = CheckError::new(ErrorKind::QueryTimeout, "no answer");
        assert_eq!(fallback_reason(&client_timeout), None);
        let mut denied = CheckError::new(ErrorKind::PrivilegeMissing, "denied");
        denied.sqlstate = Some("42501".into());
        assert_eq!(fallback_reason(&denied), Some(Reason::Error));
        let mut cancelled = CheckError::new(ErrorKind::QueryTimeout, "statement timeout");
        cancelled.sqlstate = Some("57014".into());
        assert_eq!(fallback_reason(&cancelled), Some(Reason::Timeout));
        assert_eq!(
            fallback_reason(&CheckError::new(ErrorKind::Protocol, "x")),
            Some(Reason::Decode)
        );
    }

    #[test]
    fn the_window_is_small_and_bounded() {
        let mut l = Limits {
            connect_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_millis(200),
            query_timeout: Duration::from_secs(6),
            max_backoff: Duration::from_secs(1),
            liveness: Duration::from_secs(60),
        };
        assert_eq!(gather_window(&l), MAX_GATHER);
        l.statement_timeout = Duration::from_millis(100);
        assert_eq!(gather_window(&l), Duration::from_millis(5));
        l.statement_timeout = Duration::from_secs(1);
        assert_eq!(gather_window(&l), MAX_GATHER);
    }
}
