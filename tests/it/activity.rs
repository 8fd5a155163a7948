//! `pg_activity` against a real cluster under load and with secrets in other sessions' SQL, end
//! to end through the agent binary:
//!
//! - 300 sessions (one lock holder idle in its transaction, 259 waiting on its lock, 10
//!   `pg_sleep`s, 10 more idle in a transaction opened last, 20 idle): every count in `/metrics`
//!   is exact (not saturated by the detail cap) and the idle-in-transaction finding fires with
//!   269 long queries running.
//! - A literal `'hunter2'` in a slow query, in an `ALTER ROLE ... PASSWORD` stuck on a lock and
//!   in an idle transaction's last statement reaches none of `/findings`, `/metrics`,
//!   `agent diagnose` (text and JSON), the agent's log and the alerts it pushes; with
//!   `AGENT_RAW_QUERY_TEXT=on` it is in `/findings`' `raw_query_text` only.
//!
//! Sessions are tokio-postgres clients in this process (see `support::clients`), so 300 of them
//! cost 300 backends and no more processes.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::clients::Clients;
use support::*;

const SECRET: &str = "hunter2";

fn env_for(pg: &PgCluster, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("AGENT_DATABASE_URL", pg.monitor_url()),
        ("AGENT_INTERVAL", "3s".into()),
        ("AGENT_CONNECT_TIMEOUT", "1s".into()),
        ("AGENT_STATEMENT_TIMEOUT", "1500ms".into()),
        ("AGENT_SLOW_QUERY_THRESHOLD", "1s".into()),
        ("AGENT_IDLE_IN_TRANSACTION_THRESHOLD", "2s".into()),
        ("AGENT_LEADER_ELECTION", "off".into()),
        ("AGENT_APP_PROBES", "off".into()),
    ];
    env.extend(extra.iter().cloned());
    env
}

/// The active finding of `code` in a `/findings` body.
fn active<'a>(doc: &'a serde_json::Value, code: &str) -> Option<&'a serde_json::Value> {
    doc["findings"]
        .as_array()?
        .iter()
        .find(|f| f["code"] == code)
}

#[test]
fn counts_are_exact_past_the_detail_cap_and_idle_transactions_are_not_crowded_out() {
    let pg = PgCluster::start_with(ClusterOpts {
        max_connections: 340,
        ..Default::default()
    });
    let t = Instant::now();
    let c = Clients::open(&pg, 300, "rose_test_session");
    eprintln!("opened {} sessions in {:?}", c.len(), t.elapsed());
    c.run(0, "BEGIN; LOCK TABLE checkpoints IN ACCESS EXCLUSIVE MODE");
    for i in 1..=259 {
        c.start(i, "SELECT count(*) FROM checkpoints");
    }
    for i in 260..270 {
        c.start(i, "SELECT pg_sleep(120)");
    }
    wait_for(Duration::from_secs(30), || {
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rose_test_session' AND state = 'active'") == "269"
    })
    .expect("269 sessions active");
    // Opened after the 269 long queries: the details' old oldest-first cap of 100 hid them.
    for i in 270..280 {
        c.run(i, "BEGIN; SELECT 1");
    }
    let agent = Agent::start(&env_for(&pg, &[]));
    let want = [
        ("rose_pg_slow_queries", 269.0),
        ("rose_pg_blocked_sessions", 259.0),
        ("rose_pg_idle_in_transaction_sessions", 11.0),
        ("rose_pg_blocking_sessions", 1.0),
    ];
    let mut last = String::new();
    let exact = wait_for(Duration::from_secs(40), || {
        let m = agent.metrics();
        last = format!(
            "{:?}",
            want.iter().map(|(k, _)| (*k, m.get(k))).collect::<Vec<_>>()
        );
        want.iter().all(|(k, v)| m.get(k) == Some(*v))
            && m.get("rose_pg_idle_in_transaction_max_seconds")
                .is_some_and(|s| s >= 2.0)
    });
    assert!(
        exact.is_some(),
        "counts not exact within 40 s: {last}\n{}",
        agent.output()
    );
    eprintln!(
        "counts: {last}; pg_activity took {:?} s over 300 sessions",
        agent
            .metrics()
            .get(r#"rose_agent_check_duration_seconds{check="pg_activity"}"#)
    );
    // The idle-in-transaction finding fires although 269 long queries run.
    let mut doc = serde_json::Value::Null;
    let fired = wait_for(Duration::from_secs(20), || {
        doc = serde_json::from_str(&agent.get("/findings").1).unwrap_or_default();
        active(&doc, "idle_in_transaction").is_some()
    });
    assert!(fired.is_some(), "no idle_in_transaction finding: {doc:#}");
    let f = active(&doc, "idle_in_transaction").unwrap();
    assert!(
        f["summary"].as_str().unwrap().starts_with("11 session(s)"),
        "{f:#}"
    );
    let slow = active(&doc, "slow_queries").expect("slow_queries active");
    assert!(
        slow["summary"].as_str().unwrap().starts_with("269 queries"),
        "{slow:#}"
    );
    let lock = active(&doc, "lock_contention").expect("lock_contention active");
    assert!(
        lock["summary"]
            .as_str()
            .unwrap()
            .starts_with("259 session(s)"),
        "{lock:#}"
    );
}

#[test]
fn other_sessions_secrets_reach_no_output() {
    let pg = PgCluster::start();
    pg.psql("CREATE ROLE victim LOGIN");
    let c = Clients::open(&pg, 4, "rose_test_session");
    c.start(0, &format!("SELECT pg_sleep(60) /* */ , '{SECRET}'"));
    c.run(1, "BEGIN; ALTER ROLE victim CONNECTION LIMIT 7");
    c.start(2, &format!("ALTER ROLE victim PASSWORD '{SECRET}'"));
    c.run(3, &format!("BEGIN; SELECT '{SECRET}' AS s"));
    wait_for(Duration::from_secs(10), || {
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'ALTER ROLE victim PASSWORD%'") == "1"
    })
    .expect("ALTER ROLE ... PASSWORD waits on the lock");

    let hook = Webhook::start();
    let am = format!("http://127.0.0.1:{}", hook.port);
    let env = env_for(&pg, &[("AGENT_ALERTMANAGER_URL", am)]);
    let agent = Agent::start(&env);
    let wanted = ["slow_queries", "lock_contention", "idle_in_transaction"];
    let mut findings = String::new();
    let all_pushed = wait_for(Duration::from_secs(30), || {
        findings = agent.get("/findings").1;
        let doc: serde_json::Value = serde_json::from_str(&findings).unwrap_or_default();
        let bodies = hook.bodies().concat();
        wanted
            .iter()
            .all(|c| active(&doc, c).is_some() && bodies.contains(&format!("\"{c}\"")))
    });
    assert!(
        all_pushed.is_some(),
        "findings not active and pushed: {findings}\n{}",
        agent.output()
    );
    // The statements' shapes are shown, their literals are not.
    assert!(
        findings.contains("`ALTER ROLE victim PASSWORD ?`")
            && findings.contains("`SELECT pg_sleep(?) , ?`")
            && findings.contains("SELECT ? AS s`"),
        "{findings}"
    );
    let metrics = agent.get("/metrics").1;
    let (_, json, json_all) = diagnose(&env, &[]);
    let text = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["diagnose", "--format", "text"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&text.stdout),
        String::from_utf8_lossy(&text.stderr)
    );
    assert!(
        codes(&json).iter().any(|c| c == "lock_contention") && text.contains("PASSWORD ?"),
        "diagnose saw the sessions: {json:#}\n{text}"
    );
    for (what, body) in [
        ("/findings", findings.as_str()),
        ("/metrics", metrics.as_str()),
        ("diagnose --format json", json_all.as_str()),
        ("diagnose --format text", text.as_str()),
        ("agent log", agent.output().as_str()),
        ("pushed alerts", hook.bodies().concat().as_str()),
    ] {
        assert!(!body.contains(SECRET), "{what} shows the secret:\n{body}");
    }

    // Opted in: the raw text is in /findings' raw_query_text, still never logged or pushed.
    let hook2 = Webhook::start();
    let env2 = env_for(
        &pg,
        &[
            (
                "AGENT_ALERTMANAGER_URL",
                format!("http://127.0.0.1:{}", hook2.port),
            ),
            ("AGENT_RAW_QUERY_TEXT", "on".into()),
        ],
    );
    let agent2 = Agent::start(&env2);
    let mut doc = serde_json::Value::Null;
    let shown = wait_for(Duration::from_secs(30), || {
        doc = serde_json::from_str(&agent2.get("/findings").1).unwrap_or_default();
        active(&doc, "lock_contention").is_some_and(|f| {
            f["raw_query_text"]
                .as_str()
                .is_some_and(|q| q.contains(&format!("PASSWORD '{SECRET}'")))
        }) && hook2.bodies().concat().contains("\"lock_contention\"")
    });
    assert!(shown.is_some(), "raw text not in /findings: {doc:#}");
    for f in doc["findings"].as_array().unwrap() {
        for k in ["summary", "evidence"] {
            assert!(!f[k].as_str().unwrap_or("").contains(SECRET), "{f:#}");
        }
    }
    for (what, body) in [
        ("agent log", agent2.output()),
        ("pushed alerts", hook2.bodies().concat()),
    ] {
        assert!(!body.contains(SECRET), "{what} shows the secret:\n{body}");
    }
}
