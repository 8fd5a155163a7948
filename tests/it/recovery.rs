//! Issue 14 item 11 against a real standby (`pg_basebackup -R`): a primary DSN that points at a
//! server in recovery is a critical `connected_to_standby` on every surface (`/findings`,
//! `rose_finding_active`, `agent diagnose`), and a standby that disappears from the primary is a
//! `standby_lost` warning with `rose_pg_replication_standbys_lost`.

use crate::support;

use std::time::Duration;

use support::*;

fn active(agent: &Agent, code: &str) -> bool {
    let (_, body) = agent.get("/findings");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["findings"]
        .as_array()
        .is_some_and(|a| a.iter().any(|f| f["code"] == code))
}

#[test]
fn a_standby_behind_the_primary_dsn_and_a_lost_standby_are_reported() {
    let primary = PgCluster::start();
    let (replica, method) = PgCluster::replica_of(&primary);
    eprintln!("standby made with {method}");
    assert!(replica.psql_ok("SELECT 1"));

    // The agent pointed at the standby as if it were the primary.
    let on_standby = Agent::start(&fast_env(replica.monitor_url()));
    wait_for(Duration::from_secs(20), || {
        active(&on_standby, "connected_to_standby")
    })
    .unwrap_or_else(|| panic!("no connected_to_standby: {}", on_standby.output()));
    let m = on_standby.metrics();
    assert_eq!(m.get("rose_pg_in_recovery"), Some(1.0));
    assert_eq!(
        m.get(r#"rose_finding_active{code="connected_to_standby",severity="critical"}"#),
        Some(1.0),
        "{m:?}"
    );
    let (_, body) = on_standby.get("/findings");
    assert!(body.contains("\"status\":\"critical\""), "{body}");
    assert!(body.contains("pg_promote()"), "{body}");
    let (code, report, all) = diagnose(&fast_env(replica.monitor_url()), &[]);
    assert_eq!(code, 2, "{all}");
    assert!(
        codes(&report).contains(&"connected_to_standby".to_owned()),
        "{all}"
    );
    drop(on_standby);

    // The agent on the primary sees the standby stream, then lose it.
    let on_primary = Agent::start(&fast_env(primary.monitor_url()));
    wait_for(Duration::from_secs(20), || {
        on_primary.metrics().get("rose_pg_replication_standbys") == Some(1.0)
    })
    .unwrap_or_else(|| panic!("standby never seen: {}", on_primary.output()));
    assert!(!active(&on_primary, "connected_to_standby"));
    assert!(!active(&on_primary, "standby_lost"));
    replica.stop();
    wait_for(Duration::from_secs(20), || {
        active(&on_primary, "standby_lost")
    })
    .unwrap_or_else(|| panic!("no standby_lost: {}", on_primary.output()));
    let m = on_primary.metrics();
    assert_eq!(
        m.get("rose_pg_replication_standbys_lost"),
        Some(1.0),
        "{m:?}"
    );
    assert_eq!(
        m.get(r#"rose_finding_active{code="standby_lost",severity="warning"}"#),
        Some(1.0),
        "{m:?}"
    );
    let (_, body) = on_primary.get("/findings");
    assert!(
        body.contains("rose_replica"),
        "the standby is named: {body}"
    );
    assert!(body.contains("pg_replication_slots"), "{body}");
}
