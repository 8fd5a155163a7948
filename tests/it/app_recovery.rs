//! Does the app survive a database restart (issue 19 item 4, the guide's "Test Failover")? A
//! real cluster is stopped and started under the agent while the stand-in app answers 500 and
//! then healthy again: the agent reports how long after the restart the app recovered
//! (`rose_app_recovery_seconds`); an app that stays unhealthy past AGENT_APP_RECOVERY_TIMEOUT
//! raises `app_not_recovered`, which resolves when it answers healthy.

use crate::support;

use std::time::{Duration, Instant};

use support::*;

fn active(agent: &Agent, code: &str) -> Option<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_str(&agent.get("/findings").1).ok()?;
    doc["findings"]
        .as_array()?
        .iter()
        .find(|f| f["code"] == code)
        .cloned()
}

fn recovery(agent: &Agent) -> Option<f64> {
    agent.metrics().get("rose_app_recovery_seconds")
}

fn restarts(agent: &Agent) -> f64 {
    agent
        .metrics()
        .get("rose_pg_restarts_observed_total")
        .unwrap_or(0.0)
}

/// Stops and starts the cluster; returns once the agent has seen the restart.
fn restart(pg: &PgCluster, agent: &Agent) {
    let before = restarts(agent);
    pg.stop();
    std::thread::sleep(Duration::from_millis(500));
    pg.restart();
    let seen = wait_for(Duration::from_secs(20), || restarts(agent) > before);
    assert!(seen.is_some(), "restart not seen: {}", agent.output());
}

#[test]
fn recovery_time_after_a_restart_and_an_app_that_does_not_recover() {
    let pg = PgCluster::start();
    let app = Standin::start(&[]);
    let mut env = fast_env(pg.monitor_url());
    env.extend([
        ("APP_BASE_URL", app.base_url()),
        ("AGENT_APP_PROBE_INTERVAL", "1s".to_string()),
        ("AGENT_APP_PROBE_TIMEOUT", "400ms".to_string()),
        ("AGENT_APP_RECOVERY_TIMEOUT", "6s".to_string()),
        ("AGENT_FINDING_PENDING_CYCLES", "1".to_string()),
    ]);
    let agent = Agent::start(&env);
    let up = wait_for(Duration::from_secs(20), || {
        let m = agent.metrics();
        m.get("rose_pg_up") == Some(1.0)
            && m.0
                .iter()
                .any(|(k, v)| k.starts_with("rose_app_healthy") && *v == 1.0)
    });
    assert!(up.is_some(), "not up and healthy: {}", agent.output());
    assert_eq!(recovery(&agent), None, "no restart yet");

    // The app fails with the database and answers healthy again ~3 s after it is back.
    app.set("mode=500");
    restart(&pg, &agent);
    let back = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        recovery(&agent),
        None,
        "the app has not answered healthy yet"
    );
    app.set("mode=healthy");
    let mut got = None;
    wait_for(Duration::from_secs(15), || {
        got = recovery(&agent);
        got.is_some()
    });
    let Some(secs) = got else {
        panic!("no rose_app_recovery_seconds: {}", agent.output())
    };
    let bound = back.elapsed().as_secs_f64() + 2.0;
    eprintln!("recovered {secs:.2} s after the restart (unhealthy for 3 s after it was seen)");
    assert!(
        (3.0..bound).contains(&secs),
        "recovery {secs} s, expected 3..{bound}"
    );
    assert!(active(&agent, "app_not_recovered").is_none());

    // An app that stays unhealthy past the 6 s bound: the finding, with its steps.
    app.set("mode=500");
    restart(&pg, &agent);
    let over = wait_for(Duration::from_secs(5), || recovery(&agent).is_none());
    assert!(over.is_some(), "a new restart starts over");
    let mut f = None;
    wait_for(Duration::from_secs(20), || {
        f = active(&agent, "app_not_recovered");
        f.is_some()
    });
    let Some(f) = f else {
        panic!("no app_not_recovered: {}", agent.output())
    };
    assert_eq!(f["severity"], "warning", "{f:#}");
    assert!(f["steps"].to_string().contains("pool_pre_ping"), "{f:#}");

    // It comes back: the finding resolves and the (long) recovery time is reported.
    app.set("mode=healthy");
    let resolved = wait_for(Duration::from_secs(15), || {
        active(&agent, "app_not_recovered").is_none() && recovery(&agent).is_some()
    });
    assert!(resolved.is_some(), "{}", agent.output());
    let secs = recovery(&agent).unwrap();
    assert!(secs >= 6.0, "recovered after the bound: {secs}");
}
