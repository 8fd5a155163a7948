//! Who holds the connections and which limit refuses them (issue 13 items 5 and 6), against a
//! real cluster: the monitoring role's `CONNECTION LIMIT` is told from the server's slots by
//! the facts of the last good check (not the message text), with `ALTER ROLE` as the step and
//! never the app's pool; connections the app holds beyond its modelled worst case are
//! attributed to their client and every knob gets a target number.

use crate::support;

use std::time::Duration;

use support::langgraph;
use support::*;

fn findings(agent: &Agent) -> serde_json::Value {
    serde_json::from_str(&agent.get("/findings").1).unwrap()
}

fn active<'a>(v: &'a serde_json::Value, code: &str) -> Option<&'a serde_json::Value> {
    v["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["code"] == code))
}

#[test]
fn the_monitoring_roles_limit_is_not_blamed_on_the_server() {
    let pg = PgCluster::start();
    pg.psql(&format!("ALTER ROLE {MONITOR_USER} CONNECTION LIMIT 2"));
    let mut env = fast_env(pg.monitor_url());
    env.push(("AGENT_APP_PROBES", "off".into()));
    let agent = Agent::start(&env);
    wait_for(Duration::from_secs(10), || {
        agent.metrics().get("rose_pg_up") == Some(1.0)
    })
    .unwrap_or_else(|| panic!("{}", agent.output()));
    // Another tool on the role (a second exporter) takes the last connection: warned before
    // anything is refused.
    let _other = Sessions::hold(
        &pg,
        MONITOR_USER,
        MONITOR_PASSWORD,
        1,
        "SELECT pg_sleep(60)",
    );
    wait_for(Duration::from_secs(10), || {
        active(&findings(&agent), "role_connection_limit").is_some()
    })
    .unwrap_or_else(|| panic!("no warning: {}", agent.output()));
    let v = findings(&agent);
    let f = active(&v, "role_connection_limit").unwrap();
    assert_eq!(f["severity"], "warning", "{f}");
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .contains("holds 2 of its CONNECTION LIMIT 2"),
        "{f}"
    );

    // The agent loses its session; the role's limit refuses the new one (SQLSTATE 53300).
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'rose-agent'");
    let _thief = Sessions::hold(
        &pg,
        MONITOR_USER,
        MONITOR_PASSWORD,
        1,
        "SELECT pg_sleep(60)",
    );
    wait_for(Duration::from_secs(15), || {
        active(&findings(&agent), "role_connection_limit")
            .is_some_and(|f| f["severity"] == "critical")
    })
    .unwrap_or_else(|| {
        panic!(
            "no critical role limit: {}\n{}",
            findings(&agent),
            agent.output()
        )
    });
    let v = findings(&agent);
    assert!(active(&v, "too_many_connections").is_none(), "{v:#}");
    let f = active(&v, "role_connection_limit").unwrap();
    let steps = f["steps"].to_string();
    assert!(
        steps.contains(&format!("ALTER ROLE {MONITOR_USER} CONNECTION LIMIT")),
        "{steps}"
    );
    assert!(
        !steps.contains("DATABASE_POOL_SIZE"),
        "the app's pool is not the cause: {steps}"
    );
    assert_eq!(
        agent
            .metrics()
            .get(r#"rose_finding_active{code="role_connection_limit",severity="critical"}"#),
        Some(1.0)
    );
}

#[test]
fn connections_beyond_the_model_are_attributed_with_a_number_per_knob() {
    let pg = PgCluster::start_with(ClusterOpts {
        max_connections: 45,
        ..Default::default()
    });
    // The checkpointer's pool, with the app's real libraries: LangGraph's AsyncPostgresSaver on
    // a psycopg AsyncConnectionPool of 36, as the app's role; the SQLAlchemy model is
    // 1 x (10 + 20) = 30.
    let Some(python) = langgraph::python() else {
        return;
    };
    langgraph::create_app_role(&pg, "public");
    let app_dsn = langgraph::app_url(&pg, None);
    let _pool = langgraph::CheckpointerPool::start(
        &python,
        &app_dsn,
        "rose-langgraph",
        36,
        Duration::from_secs(60),
    );
    let mut env = fast_env(pg.monitor_url());
    env.extend([
        ("AGENT_APP_PROBES", "off".into()),
        ("FEATURE_DATABASE_TYPE", "postgresql".into()),
        ("DATABASE_URL", app_dsn.clone()),
    ]);
    let agent = Agent::start(&env);
    wait_for(Duration::from_secs(15), || {
        active(&findings(&agent), "app_connections_over_model").is_some()
    })
    .unwrap_or_else(|| panic!("{}\n{}", findings(&agent), agent.output()));
    let v = findings(&agent);
    let f = active(&v, "app_connections_over_model").unwrap();
    let summary = f["summary"].as_str().unwrap();
    assert!(
        summary.contains("holds 36 connections, more than its modelled worst case 30"),
        "{f}"
    );
    assert!(
        f["evidence"].as_str().unwrap().contains(&format!(
            "rose-langgraph ({} from 127.0.0.1) 36",
            langgraph::APP_USER
        )),
        "{f}"
    );
    let steps = f["steps"].to_string();
    assert!(steps.contains("DATABASE_POOL_SIZE="), "{steps}");
    assert!(steps.contains("max_size="), "{steps}");
    assert!(
        steps.contains("AGENT_CHECKPOINTER_POOL_MAX_SIZE="),
        "{steps}"
    );
}
