//! Unit tests of the summary, the command splitter and the page (struct literals, no I/O).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::findings::state::{ActiveFinding, View};
use crate::findings::testutil::snap;
use crate::findings::{Code, Finding};

#[test]
fn commands_are_split_from_prose() {
    use Segment::{Command as C, Text as T};
    assert_eq!(
        split_commands(
            "Grant the monitoring role pg_monitor: `GRANT pg_monitor TO <monitoring role>;`"
        ),
        vec![
            T("Grant the monitoring role pg_monitor: "),
            C("GRANT pg_monitor TO <monitoring role>;")
        ]
    );
    assert_eq!(
        split_commands("DROP INDEX CONCURRENTLY IF EXISTS idx_a;  -- keeps idx_b"),
        vec![C(
            "DROP INDEX CONCURRENTLY IF EXISTS idx_a;  -- keeps idx_b"
        )]
    );
    assert_eq!(
        split_commands(
            "Bound it for the app's role: ALTER ROLE <app role> SET idle_in_transaction_session_timeout = '60s';"
        ),
        vec![
            T("Bound it for the app's role: "),
            C("ALTER ROLE <app role> SET idle_in_transaction_session_timeout = '60s';")
        ]
    );
    // A statement inside prose runs to its semicolon; the prose after it stays prose.
    assert_eq!(
        split_commands(
            "Look: SELECT 1 FROM t; and end stale ones with SELECT pg_terminate_backend(pid); then wait"
        ),
        vec![
            T("Look: "),
            C("SELECT 1 FROM t;"),
            T(" and end stale ones with "),
            C("SELECT pg_terminate_backend(pid);"),
            T(" then wait")
        ]
    );
    // Keywords in prose without a statement are prose.
    let s = "Avoid long transactions (CREATE INDEX CONCURRENTLY, not CREATE INDEX)";
    assert_eq!(split_commands(s), vec![T(s)]);
    let s = "an index is INVALID (an interrupted CREATE INDEX CONCURRENTLY)";
    assert_eq!(split_commands(s), vec![T(s)]);
    // After a colon, a statement without a semicolon runs to the end.
    assert_eq!(
        split_commands(
            "Look for idle sessions: SELECT state, count(*) FROM pg_stat_activity GROUP BY 1"
        ),
        vec![
            T("Look for idle sessions: "),
            C("SELECT state, count(*) FROM pg_stat_activity GROUP BY 1")
        ]
    );
    // Never panics on odd input (multi-byte characters, lone backticks).
    for s in ["é`", "`", "``", "SELECT", "x: SELECT é;", "ñ SELECT ;ü"] {
        let _ = split_commands(s);
    }
}

#[test]
fn escape_leaves_no_markup() {
    assert_eq!(
        html::escape(r#"<script>alert("x")</script> & 'q'"#),
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;"
    );
    assert_eq!(html::escape("a\u{1b}[31mb"), "a\u{fffd}[31mb");
}

fn about() -> About {
    About {
        version: "9.9.9".into(),
        instance: "host-1".into(),
        target: Some("127.0.0.1:5432/rose".into()),
        database_type: "postgresql".into(),
        app_url: "http://127.0.0.1:8000".into(),
        runbook_base: "https://runbooks.example/rose/".into(),
        interval: Duration::from_secs(15),
        connections_warn_ratio: 0.8,
    }
}

fn finding(code: Code, sev: Severity, summary: &str) -> Finding {
    Finding::new(
        code,
        summary,
        "<b>evidence</b>",
        vec!["Run this: SELECT 1;".into()],
    )
    .with_severity(sev)
}

#[test]
fn the_summary_has_the_findings_status_and_orders_findings() {
    let mut s = Reading::of(Arc::new(snap(vec![])));
    s.about = Arc::new(about());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    // Before any evaluation: unknown, with a reason.
    let sum = Summary::build(&s, now);
    assert_eq!(sum.status, "unknown");
    assert_eq!(sum.exit_code(), 3);
    assert!(sum.headline.contains("first"), "{}", sum.headline);

    let since = now - Duration::from_secs(90);
    s.findings = Arc::new(View {
        active: vec![ActiveFinding {
            finding: finding(Code::MissingIndex, Severity::Warning, "an index is missing"),
            since,
        }],
        pending: vec![finding(
            Code::ConnectionRefused,
            Severity::Critical,
            "PostgreSQL is down",
        )],
        silenced: vec![crate::findings::silence::SilencedFinding {
            finding: finding(
                Code::StatementsUnavailable,
                Severity::Warning,
                "statistics were reset",
            ),
            silenced: true,
            reason: "<accepted> for the load test".into(),
            until: Some("2027-01-31".into()),
        }],
        evaluated_at: Some(now - Duration::from_secs(2)),
        activated_total: 1,
        resolved_total: 0,
    });
    let sum = Summary::build(&s, now);
    // The same word as /findings: the worst, pending included.
    assert_eq!(sum.status, s.findings.status().status);
    assert_eq!(sum.status, "critical");
    assert!(sum.status_pending);
    assert_eq!(sum.exit_code(), 2);
    assert!(
        sum.headline.contains("PostgreSQL is down"),
        "{}",
        sum.headline
    );
    // Active first, then pending.
    assert_eq!(sum.findings[0].code, "missing_index");
    assert_eq!(sum.findings[0].state, "active");
    assert_eq!(sum.findings[0].since_seconds, Some(90.0));
    assert_eq!(sum.findings[1].state, "pending");
    // Silenced findings apart, not among the counted ones, with reason and end.
    assert_eq!(sum.findings.len(), 2);
    assert_eq!(sum.silenced.len(), 1);
    assert_eq!(sum.silenced[0].until.as_deref(), Some("2027-01-31"));
    let text = sum.to_text(false);
    assert!(text.contains("SILENCED statements_unavailable"), "{text}");
    assert!(text.contains("until 2027-01-31"), "{text}");
    // The runbook URL is the alert pusher's.
    assert_eq!(
        sum.findings[0].runbook_url,
        "https://runbooks.example/rose/missing_index.md"
    );
    assert_eq!(sum.evaluated_age_seconds, Some(2.0));
    assert_eq!(sum.agent.target.as_deref(), Some("127.0.0.1:5432/rose"));

    // The page: escaped, the status in words, steps with their command in a code block.
    let page = html::render(&sum);
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("http-equiv=\"refresh\" content=\"15\""));
    assert!(page.contains("data-status=\"critical\""));
    assert!(page.contains("✖ CRITICAL"));
    assert!(page.contains("&lt;b&gt;evidence&lt;/b&gt;"));
    assert!(page.contains("id=\"silenced\""), "{page}");
    assert!(page.contains("&lt;accepted&gt; for the load test until <time>2027-01-31</time>"));
    assert!(!page.contains("<b>evidence"));
    assert!(page.contains("<pre><code>SELECT 1;</code></pre>"));
    assert!(page.contains("href=\"https://runbooks.example/rose/missing_index.md\""));
    assert!(!page.contains("<script"));

    // The terminal text: colour only when asked.
    let plain = sum.to_text(false);
    assert!(plain.starts_with("CRITICAL (pending)"), "{plain}");
    assert!(!plain.contains('\x1b'));
    assert!(sum.to_text(true).contains("\x1b[1;31mCRITICAL"));

    // JSON round trip (what `agent status` reads from /status).
    let back: Summary = serde_json::from_str(&serde_json::to_string(&sum).unwrap()).unwrap();
    assert_eq!(back, sum);
}

#[test]
fn stale_outcomes_make_the_status_unknown() {
    use crate::snapshot::Freshness;
    let mut s = snap(vec![(
        "pg_connectivity",
        Err(crate::error::CheckError::new(
            crate::error::ErrorKind::Other,
            "postgresql://u:hunter2@h/db refused",
        )),
    )]);
    let st = Arc::make_mut(s.checks.get_mut("pg_connectivity").unwrap());
    st.freshness = Freshness {
        max_age: Some(Duration::from_secs(10)),
        unknown: vec![],
    };
    let mut s = Reading::of(Arc::new(s));
    s.findings = Arc::new(View {
        evaluated_at: Some(SystemTime::UNIX_EPOCH),
        ..View::default()
    });
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
    let sum = Summary::build(&s, now);
    assert_eq!(sum.status, "unknown");
    assert_eq!(sum.stale_checks, vec!["pg_connectivity"]);
    assert!(sum.headline.contains("out of date"));
    assert_eq!(sum.checks[0].outcome, "stale");
    // No password from an error message reaches the summary.
    let text = serde_json::to_string(&sum).unwrap() + &html::render(&sum);
    assert!(!text.contains("hunter2"));
}

#[test]
fn humane_units() {
    assert_eq!(human_duration(0.0123), "12 ms");
    assert_eq!(human_duration(2.5), "2.5 s");
    assert_eq!(human_duration(125.0), "2m 5s");
    assert_eq!(human_duration(7300.0), "2h 1m");
    assert_eq!(human_duration(f64::NAN), "-");
    assert_eq!(human_bytes(512.0), "512 B");
    assert_eq!(human_bytes(1536.0), "1.5 KiB");
    assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    assert_eq!(
        rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(86_400)),
        "1970-01-02T00:00:00Z"
    );
}
