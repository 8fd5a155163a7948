//! Rules over `pg_activity`: slow queries (the guide's "response times > 2s"), sessions idle in
//! a transaction, and sessions blocked on locks, with the sessions' pids, durations,
//! applications, normalized query text and query_id in the evidence so the steps can name them.
//! Counts are the check's, over all sessions; the named sessions are the worst three detailed.
//! Raw SQL (literals included) never enters the evidence, which is logged and pushed: with
//! `raw_query_text` on it goes to the finding's own `raw_query_text` field only.

use super::{Code, Context, Finding};
use crate::check::Observation;
use crate::check::pg::activity::{self, Activity, Session};
use crate::snapshot::Snapshot;

pub(super) fn evaluate(snap: &Snapshot, cx: &Context, out: &mut Vec<Finding>) {
    if let Some(Observation::PgActivity(a)) = snap.observation(activity::ID) {
        judge(a, cx, out);
    }
}

/// Pure: the findings of one activity observation.
pub(crate) fn judge(a: &Activity, cx: &Context, out: &mut Vec<Finding>) {
    let t = &cx.target;
    if a.slow_queries > 0 {
        let slow = worst(
            &a.sessions,
            |s| s.state.as_deref() == Some("active"),
            |s| s.query_seconds,
        );
        out.push(Finding::new(
            Code::SlowQueries,
            format!("{} quer{} running longer than {:.0} s at {t}", a.slow_queries, if a.slow_queries == 1 { "y" } else { "ies" }, a.threshold_seconds),
            format!(
                "{} active quer{} over the {:.1} s threshold; longest {:.1} s{}",
                a.slow_queries,
                if a.slow_queries == 1 { "y" } else { "ies" },
                a.threshold_seconds,
                a.active_query_max_seconds,
                describe(&slow)
            ),
            vec![
                "Check database region (should match app region): see rose_pg_roundtrip_seconds".into(),
                "Add indexes (LangGraph should handle this): check rose_pg_schema_object_present{kind=\"index\"} and `agent diagnose`".into(),
                format!(
                    "Look at the slow statement: SELECT pid, now() - query_start AS duration, wait_event_type, wait_event, query FROM pg_stat_activity WHERE state = 'active' ORDER BY duration DESC;{}",
                    slow.first().map(|s| format!(" if it must go: SELECT pg_cancel_backend({});", s.pid)).unwrap_or_default()
                ),
                "Enable query logging to identify slow queries (log_min_duration_statement = '2s', or pg_stat_statements)".into(),
                "Upgrade the database plan (more resources) if the load is legitimate".into(),
            ],
        ).with_raw_query_text(raw_text(&slow)));
    }
    if a.idle_in_transaction_sessions > 0
        && a.idle_in_transaction_max_seconds >= cx.idle_in_transaction_seconds
    {
        let idle = worst(
            &a.sessions,
            |s| {
                s.state
                    .as_deref()
                    .is_some_and(|st| st.starts_with("idle in transaction"))
            },
            |s| s.state_seconds,
        );
        out.push(Finding::new(
            Code::IdleInTransaction,
            format!(
                "{} session(s) idle in a transaction at {t}, the oldest for {:.0} s",
                a.idle_in_transaction_sessions, a.idle_in_transaction_max_seconds
            ),
            format!(
                "idle in transaction for {:.0} s >= {:.0} s threshold{}",
                a.idle_in_transaction_max_seconds,
                cx.idle_in_transaction_seconds,
                describe(&idle)
            ),
            vec![
                "Find the code path that opens a transaction and does not commit or roll back (the application_name and query above show where)".into(),
                idle.first()
                    .map(|s| format!("If it holds locks others need, end it: SELECT pg_terminate_backend({});", s.pid))
                    .unwrap_or_else(|| "If it holds locks others need, end it with pg_terminate_backend(pid)".into()),
                "Bound it for the app's role: ALTER ROLE <app role> SET idle_in_transaction_session_timeout = '60s';".into(),
            ],
        ).with_raw_query_text(raw_text(&idle)));
    }
    if a.blocked_sessions > 0 {
        let blocked = worst(
            &a.sessions,
            |s| !s.blocked_by.is_empty(),
            |s| s.state_seconds.or(s.query_seconds),
        );
        let blockers = a
            .blockers
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let hidden = (a.blocking_sessions as usize).saturating_sub(a.blockers.len());
        let more = if hidden > 0 {
            format!(" and {hidden} more")
        } else {
            String::new()
        };
        out.push(Finding::new(
            Code::LockContention,
            format!("{} session(s) blocked on locks at {t}", a.blocked_sessions),
            format!("{} blocked session(s), blocked by pid(s) {blockers}{more}{}", a.blocked_sessions, describe(&blocked)),
            vec![
                format!("See what the blocker(s) run: SELECT pid, state, now() - xact_start AS xact_age, query FROM pg_stat_activity WHERE pid IN ({blockers});"),
                "A blocker idle in a transaction is an app bug: fix the missing commit; meanwhile end it with pg_terminate_backend(pid)".into(),
                "Avoid long transactions and DDL on the checkpoint tables while the app runs (CREATE INDEX CONCURRENTLY, not CREATE INDEX)".into(),
            ],
        ).with_raw_query_text(raw_text(&blocked)));
    }
}

/// The (at most three) longest sessions matching `pick`, by `age`.
fn worst(
    sessions: &[Session],
    pick: impl Fn(&Session) -> bool,
    age: impl Fn(&Session) -> Option<f64>,
) -> Vec<Session> {
    let mut v: Vec<Session> = sessions.iter().filter(|s| pick(s)).cloned().collect();
    v.sort_by(|a, b| age(b).unwrap_or(0.0).total_cmp(&age(a).unwrap_or(0.0)));
    v.truncate(3);
    v
}

fn describe(sessions: &[Session]) -> String {
    if sessions.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = sessions
        .iter()
        .map(|s| {
            let mut d = format!("pid {}", s.pid);
            if let Some(app) = s.application.as_deref().filter(|a| !a.is_empty()) {
                d.push_str(&format!(" app {app}"));
            }
            if let Some(q) = s.query_seconds {
                d.push_str(&format!(" query {q:.1} s"));
            }
            if let (Some(t), Some(e)) = (&s.wait_event_type, &s.wait_event) {
                d.push_str(&format!(" waiting {t}/{e}"));
            }
            // Normalized text only (literals replaced by `?`): the evidence is logged and pushed.
            if let Some(q) = &s.query {
                let q: String = q.chars().take(80).collect();
                d.push_str(&format!(" `{q}`"));
            }
            if let Some(id) = &s.query_id {
                d.push_str(&format!(" query_id {id}"));
            }
            d
        })
        .collect();
    format!("; {}", parts.join("; "))
}

/// The raw SQL of the named sessions, when the check kept it (`raw_query_text` on).
fn raw_text(sessions: &[Session]) -> String {
    sessions
        .iter()
        .filter_map(|s| s.raw_query.as_ref().map(|q| format!("pid {}: {q}", s.pid)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(pid: i32, state: &str, query_s: f64, blocked_by: Vec<i32>) -> Session {
        Session {
            pid,
            user: Some("rose".into()),
            application: Some("rose-app".into()),
            state: Some(state.into()),
            wait_event_type: None,
            wait_event: None,
            query_seconds: Some(query_s),
            transaction_seconds: Some(query_s),
            state_seconds: Some(query_s),
            blocked_by,
            query: Some("SELECT pg_sleep(?)".into()),
            query_id: Some("-4242".into()),
            raw_query: None,
        }
    }

    fn activity(
        slow: u32,
        idle: u32,
        idle_max: f64,
        blocked: u32,
        sessions: Vec<Session>,
    ) -> Activity {
        Activity {
            threshold_seconds: 2.0,
            active_query_max_seconds: 5.0,
            transaction_max_seconds: 5.0,
            idle_in_transaction_max_seconds: idle_max,
            idle_in_transaction_sessions: idle,
            slow_queries: slow,
            blocked_sessions: blocked,
            blocking_sessions: u32::from(blocked > 0),
            blockers: if blocked > 0 { vec![42] } else { vec![] },
            non_idle_sessions: sessions.len() as u32,
            truncated: false,
            sessions,
        }
    }

    fn codes(a: Activity) -> Vec<Finding> {
        let mut out = vec![];
        judge(&a, &Context::default(), &mut out);
        out
    }

    #[test]
    fn table() {
        assert!(codes(activity(0, 0, 0.0, 0, vec![])).is_empty());
        let f = codes(activity(
            1,
            0,
            0.0,
            0,
            vec![session(7, "active", 5.0, vec![])],
        ));
        assert_eq!(f[0].code, "slow_queries");
        assert!(
            f[0].evidence.contains("pid 7") && f[0].evidence.contains("rose-app"),
            "{}",
            f[0].evidence
        );
        assert!(f[0].steps[2].contains("pg_cancel_backend(7)"));
        // Idle in transaction below the threshold is not a finding.
        assert!(
            codes(activity(
                0,
                1,
                10.0,
                0,
                vec![session(8, "idle in transaction", 10.0, vec![])]
            ))
            .is_empty()
        );
        let f = codes(activity(
            0,
            1,
            120.0,
            0,
            vec![session(8, "idle in transaction", 120.0, vec![])],
        ));
        assert_eq!(f[0].code, "idle_in_transaction");
        assert!(f[0].steps[1].contains("pg_terminate_backend(8)"));
        let f = codes(activity(
            0,
            0,
            0.0,
            1,
            vec![session(9, "active", 3.0, vec![42])],
        ));
        assert_eq!(f[0].code, "lock_contention");
        assert!(
            f[0].evidence.contains("pid(s) 42") && f[0].steps[0].contains("IN (42)"),
            "{f:?}"
        );
    }

    #[test]
    fn evidence_carries_normalized_text_and_raw_text_stays_in_its_own_field() {
        let mut s = session(7, "active", 5.0, vec![]);
        s.query = Some("ALTER ROLE x PASSWORD ?".into());
        let f = codes(activity(1, 0, 0.0, 0, vec![s.clone()]));
        assert!(
            f[0].evidence.contains("`ALTER ROLE x PASSWORD ?`")
                && f[0].evidence.contains("query_id -4242"),
            "{}",
            f[0].evidence
        );
        assert_eq!(f[0].raw_query_text, None);
        let v = serde_json::to_value(&f[0]).unwrap();
        assert!(v.get("raw_query_text").is_none(), "{v}");
        // Opted in: the raw text is in its own field, never in the evidence or the steps.
        s.raw_query = Some("ALTER ROLE x PASSWORD 'hunter2'".into());
        let f = codes(activity(1, 0, 0.0, 0, vec![s]));
        assert_eq!(
            f[0].raw_query_text.as_deref(),
            Some("pid 7: ALTER ROLE x PASSWORD 'hunter2'")
        );
        assert!(!f[0].evidence.contains("hunter2") && !f[0].summary.contains("hunter2"));
        assert!(f[0].steps.iter().all(|x| !x.contains("hunter2")));
    }

    #[test]
    fn more_blockers_than_listed_are_counted() {
        let mut a = activity(0, 0, 0.0, 259, vec![session(9, "active", 3.0, vec![42])]);
        a.blocking_sessions = 30;
        let f = codes(a);
        assert!(
            f[0].evidence.contains("259 blocked")
                && f[0].evidence.contains("pid(s) 42 and 29 more"),
            "{}",
            f[0].evidence
        );
    }
}
