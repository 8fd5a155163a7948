//! The first hour with the real agent binary: findings silenced on purpose stay visible as
//! silenced but count toward no status, metric or alert, an expired silence is noted, a disabled
//! check does not run; and text logs put the message first and do not repeat a WARN per retry
//! while a real PostgreSQL is down.

use crate::support;

use std::time::Duration;

use support::*;

/// One finding silenced by AGENT_SILENCE (a misspelled variable the operator accepts), one
/// silence in the file past its date, one check disabled.
#[test]
fn silenced_findings_are_shown_but_not_counted() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "[findings]\nsilence = [{ code = \"slow_queries\", until = \"2020-01-31\", reason = \"load test week\" }]\n",
    )
    .unwrap();
    let mut env = fast_env(pg.monitor_url());
    env.extend([
        ("AGENT_CONFIG", cfg.display().to_string()),
        ("AGENT_APP_PROBES", "off".into()),
        // A misspelling of AGENT_INTERVAL: the finding `unknown_variable`, accepted here.
        ("AGENT_INTERAVL", "1s".into()),
        (
            "AGENT_SILENCE",
            "unknown_variable:AGENT_INTERAVL@2099-12-31".into(),
        ),
        ("AGENT_DISABLED_CHECKS", "pg_statements".into()),
    ]);
    let agent = Agent::start(&env);
    let mut last = serde_json::Value::Null;
    let seen = wait_for(Duration::from_secs(20), || {
        let (code, body) = agent.get("/findings");
        last = serde_json::from_str(&body).unwrap_or_default();
        code == 200
            && last["silenced"].as_array().is_some_and(|a| !a.is_empty())
            && last["findings"]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f["code"] == "silence_expired"))
    });
    assert!(seen.is_some(), "{last:#}\n{}", agent.output());
    let silenced = &last["silenced"][0];
    assert_eq!(silenced["code"], "unknown_variable", "{last:#}");
    assert_eq!(silenced["subject"], "AGENT_INTERAVL");
    assert_eq!(silenced["silenced"], true);
    assert_eq!(silenced["until"], "2099-12-31");
    assert_eq!(silenced["reason"], "set by AGENT_SILENCE");
    let counted = |k: &str| {
        last[k]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] == "unknown_variable")
            .count()
    };
    assert_eq!(counted("findings") + counted("pending"), 0, "{last:#}");
    let expired = last["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "silence_expired")
        .unwrap();
    assert!(
        expired["evidence"]
            .as_str()
            .unwrap()
            .contains("load test week"),
        "{expired}"
    );

    let m = agent.metrics();
    assert_eq!(
        m.get("rose_finding_silenced{code=\"unknown_variable\"}"),
        Some(1.0)
    );
    assert!(
        !m.0.keys().any(|k| k.starts_with("rose_finding_")
            && !k.starts_with("rose_finding_silenced")
            && k.contains("unknown_variable")),
        "a silenced finding is neither active nor pending"
    );
    assert!(
        m.get("rose_agent_check_success{check=\"pg_statements\"}")
            .is_none(),
        "a disabled check does not run"
    );
    assert!(
        m.get("rose_agent_check_success{check=\"pg_activity\"}")
            .is_some()
    );

    let (_, page) = agent.get("/");
    assert!(page.contains("id=\"silenced\""), "{page}");
    assert!(page.contains("SILENCED") && page.contains("set by AGENT_SILENCE"));
    assert!(page.contains("2099-12-31"));
}

/// A real PostgreSQL stopped for several intervals: the WARN lines stop growing after the first
/// failure of each check (no WARN per retry), and a check failure's line begins with its message
/// and stays short.
#[test]
fn an_outage_is_a_bounded_number_of_short_warn_lines() {
    let pg = PgCluster::start();
    let mut env = fast_env(pg.monitor_url());
    env.push(("AGENT_APP_PROBES", "off".into()));
    env.push(("AGENT_LOG_FORMAT", "text".into()));
    let agent = Agent::start(&env);
    wait_for(Duration::from_secs(15), || {
        agent.metrics().get("rose_pg_up").is_some_and(|v| v == 1.0)
    })
    .unwrap_or_else(|| panic!("never up: {}", agent.output()));
    pg.stop();
    let warns = |out: &str| out.lines().filter(|l| l.contains(" WARN ")).count();
    wait_for(Duration::from_secs(15), || {
        agent.output().contains("Check failed.")
    })
    .unwrap_or_else(|| panic!("no failure logged: {}", agent.output()));
    // Three more intervals for every check to report its first failure and findings to activate.
    std::thread::sleep(Duration::from_secs(4));
    let early = warns(&agent.output());
    // Eight more intervals of the same outage: several reconnect attempts.
    std::thread::sleep(Duration::from_secs(8));
    let out = agent.output();
    let late = warns(&out);
    assert!(
        late <= early + 2,
        "WARN lines grew from {early} to {late} during one outage:\n{out}"
    );
    assert!(late <= 40, "{late} WARN lines:\n{out}");
    let line = out
        .lines()
        .find(|l| l.contains("Check failed."))
        .unwrap()
        .to_owned();
    // `<time> WARN Check failed. ...`: the message right after the level.
    let mut words = line.split_whitespace();
    assert_eq!(words.nth(1), Some("WARN"), "{line}");
    assert_eq!(words.next(), Some("Check"), "{line}");
    assert!(line.len() < 300, "{} characters: {line}", line.len());
    assert!(
        line.contains("check=pg_"),
        "the line names its check: {line}"
    );
    assert!(
        !line.contains("otel.name"),
        "no span context in text: {line}"
    );
}

/// `agent diagnose` (JSON and text) shows a silenced finding as silenced, and it changes
/// neither the findings nor the exit code; without the silence the same finding counts.
#[test]
fn diagnose_shows_silenced_findings_apart() {
    let pg = PgCluster::start();
    let mut env = vec![
        ("AGENT_DATABASE_URL", pg.monitor_url()),
        ("AGENT_APP_PROBES", "off".into()),
        ("AGENT_INTERAVL", "1s".into()),
    ];
    let (_, report, all) = diagnose(&env, &[]);
    assert!(
        codes(&report).contains(&"unknown_variable".to_owned()),
        "{all}"
    );
    let unsilenced_status = report["status"].clone();

    env.push((
        "AGENT_SILENCE",
        "unknown_variable:AGENT_INTERAVL@2099-12-31".into(),
    ));
    let (_, report, all) = diagnose(&env, &[]);
    assert!(
        !codes(&report).contains(&"unknown_variable".to_owned()),
        "{all}"
    );
    assert_eq!(report["silenced"][0]["code"], "unknown_variable", "{all}");
    assert_eq!(report["silenced"][0]["reason"], "set by AGENT_SILENCE");
    // The misspelling is the only problem of this cluster: silenced, the status is ok.
    assert_eq!(unsilenced_status, "warning");
    assert_eq!(report["status"], "ok", "{all}");
    let (_, text) = diagnose_text(&env, &[]);
    assert!(
        text.contains("SILENCED unknown_variable:AGENT_INTERAVL")
            && text.contains("until 2099-12-31"),
        "{text}"
    );
}
