//! The agent's direct push of findings to a real Alertmanager (`AGENT_ALERTMANAGER_URL`): with
//! the database stopped the connection finding reaches the webhook receiver with its runbook_url
//! and steps; after a restart it resolves. With Alertmanager down, the agent keeps serving.

use crate::support;

use std::time::Duration;

use support::*;

fn am_config(webhook_port: u16) -> String {
    format!(
        r#"route:
  receiver: hook
  group_by: [alertname, instance]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{webhook_port}/hook
        send_resolved: true
"#
    )
}

#[test]
fn findings_reach_alertmanager_and_resolve() {
    if !require_tool("prometheus-alertmanager") {
        return;
    }
    let hook = Webhook::start();
    let am = Alertmanager::start(&am_config(hook.port));
    let pg = PgCluster::start();
    let mut env = fast_env(pg.monitor_url());
    env.extend([
        ("AGENT_FINDING_PENDING_CYCLES", "1".into()),
        ("AGENT_FINDING_RESOLVE_CYCLES", "1".into()),
        (
            "AGENT_ALERTMANAGER_URL",
            format!("http://127.0.0.1:{}", am.port),
        ),
        ("AGENT_INSTANCE", "rose-test:9188".into()),
        (
            "AGENT_RUNBOOK_BASE_URL",
            "https://runbooks.example/rose/".into(),
        ),
    ]);
    let agent = Agent::start(&env);
    wait_for(Duration::from_secs(10), || {
        agent.metrics().get("rose_pg_up") == Some(1.0)
    })
    .expect("up");
    pg.stop();
    let firing = wait_for(Duration::from_secs(20), || {
        hook.bodies()
            .iter()
            .any(|b| b.contains("\"status\":\"firing\"") && b.contains("connection_refused"))
    });
    assert!(
        firing.is_some(),
        "no firing notification: {:?}\n{}",
        hook.bodies(),
        agent.output()
    );
    let body = hook
        .bodies()
        .into_iter()
        .find(|b| b.contains("connection_refused"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let alert = &v["alerts"][0];
    // The rules' name and labels: one alert for the database, whichever agent pushes it.
    assert_eq!(alert["labels"]["alertname"], "RoseFinding");
    assert_eq!(alert["labels"]["code"], "connection_refused");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(
        alert["labels"]["rose_target"],
        format!("127.0.0.1:{}/{DBNAME}", pg.port).as_str()
    );
    assert!(alert["labels"].get("instance").is_none(), "{alert}");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "https://runbooks.example/rose/connection_refused.md"
    );
    assert!(
        alert["annotations"]["steps"]
            .as_str()
            .unwrap()
            .starts_with("1. Verify AGENT_DATABASE_URL"),
        "{alert}"
    );
    let m = agent.metrics();
    assert_eq!(
        m.get(r#"rose_finding_active{code="connection_refused",severity="critical"}"#),
        Some(1.0),
        "{m:?}"
    );

    pg.restart();
    let resolved = wait_for(Duration::from_secs(20), || {
        hook.bodies()
            .iter()
            .any(|b| b.contains("\"status\":\"resolved\"") && b.contains("connection_refused"))
    });
    assert!(
        resolved.is_some(),
        "no resolved notification: {:?}\n{}",
        hook.bodies(),
        agent.output()
    );
    assert!(!agent.output().contains(MONITOR_PASSWORD));
}

#[test]
fn alertmanager_down_never_blocks_the_agent() {
    let pg = PgCluster::start();
    let dead = free_port();
    let mut env = fast_env(pg.monitor_url());
    env.extend([
        ("AGENT_FINDING_PENDING_CYCLES", "1".into()),
        ("AGENT_ALERTMANAGER_URL", format!("http://127.0.0.1:{dead}")),
    ]);
    let agent = Agent::start(&env);
    wait_for(Duration::from_secs(10), || {
        agent.metrics().get("rose_pg_up") == Some(1.0)
    })
    .expect("up");
    pg.stop();
    wait_for(Duration::from_secs(15), || {
        agent
            .metrics()
            .get(r#"rose_agent_alertmanager_posts_total{result="error"}"#)
            .is_some_and(|v| v >= 1.0)
    })
    .unwrap_or_else(|| panic!("no failed post counted: {}", agent.output()));
    // The checks keep running and /metrics keeps answering.
    let runs = |m: &Metrics| {
        m.get(r#"rose_agent_check_runs_total{check="pg_connectivity"}"#)
            .unwrap_or(0.0)
    };
    let before = runs(&agent.metrics());
    std::thread::sleep(Duration::from_secs(3));
    assert!(runs(&agent.metrics()) >= before + 2.0, "checks stalled");
    let warned = agent
        .output()
        .matches("Cannot post alerts to Alertmanager")
        .count();
    assert_eq!(
        warned,
        1,
        "one warning per outage, not per post: {}",
        agent.output()
    );
}
