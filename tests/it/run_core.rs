//! `agent run` end to end against real PostgreSQL clusters: down/up semantics, a blackholed
//! listener, zero SQL per scrape, one backend, promtool's verdict on the exposition, and no
//! password in anything the agent prints.

use crate::support;

use std::net::TcpListener;
use std::time::Duration;

use support::*;

#[test]
fn database_stopped_and_restarted_is_reported_within_one_interval() {
    let pg = PgCluster::start();
    let agent = Agent::start(&fast_env(pg.monitor_url()));
    wait_for(Duration::from_secs(10), || {
        prompt_scrape(&agent).get("rose_pg_up") == Some(1.0)
    })
    .unwrap_or_else(|| panic!("never up: {}", agent.output()));
    // Ready once every check has run once: moments after the first, with many checks.
    wait_for(Duration::from_secs(5), || agent.get("/readyz").0 == 200).expect("ready");
    let m = agent.metrics();
    assert!(m.get("rose_pg_max_connections").is_some(), "{m:?}");
    assert!(
        m.get(r#"rose_pg_connections{state="active"}"#).is_some(),
        "{m:?}"
    );

    pg.stop();
    // One interval (1 s) plus the run's own bound; polls also prove /metrics stays prompt.
    let took = wait_for(Duration::from_secs(3), || {
        prompt_scrape(&agent).get("rose_pg_up") == Some(0.0)
    })
    .unwrap_or_else(|| panic!("still up after stop: {}", agent.output()));
    eprintln!("down reported after {took:?}");
    let m = agent.metrics();
    // No stale values from the failed checks.
    assert_eq!(m.get("rose_pg_max_connections"), None, "stale value served");
    assert_eq!(
        m.get(r#"rose_agent_check_success{check="pg_connectivity"}"#),
        Some(0.0)
    );
    assert!(
        m.0.keys()
            .any(|k| k.starts_with("rose_agent_check_errors_total{check=\"pg_connectivity\"")),
        "{m:?}"
    );

    pg.restart();
    let took = wait_for(Duration::from_secs(3), || {
        prompt_scrape(&agent).get("rose_pg_up") == Some(1.0)
    })
    .unwrap_or_else(|| panic!("not up again after restart: {}", agent.output()));
    eprintln!("up again after {took:?}");
    assert!(!agent.output().contains("panicked"), "{}", agent.output());
}

#[test]
fn accept_and_hang_listener_is_down_within_the_connect_timeout() {
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    // Accept connections and hold them open without ever answering.
    let _keeper = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming().take(64) {
            held.push(s);
        }
    });
    let url = format!("postgresql://u:pw@127.0.0.1:{port}/db?sslmode=disable");
    let agent = Agent::start(&fast_env(url));
    let took = wait_for(Duration::from_secs(3), || {
        prompt_scrape(&agent).get("rose_pg_up") == Some(0.0)
    })
    .unwrap_or_else(|| panic!("never reported down: {}", agent.output()));
    eprintln!("blackhole reported down after {took:?}");
    // The kind: the connect timeout (the first failure may be cut by the run's own bound on a
    // loaded machine; the next attempts are classified as connect timeouts).
    wait_for(Duration::from_secs(5), || {
        agent
            .metrics()
            .get(r#"rose_agent_check_errors_total{check="pg_connectivity",kind="connect_timeout"}"#)
            .is_some_and(|v| v >= 1.0)
    })
    .unwrap_or_else(|| panic!("no connect_timeout counted: {:?}", agent.metrics()));
    // It keeps serving promptly while every attempt hangs.
    for _ in 0..20 {
        prompt_scrape(&agent);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        agent.get("/readyz").0,
        200,
        "a completed (failed) first round still makes the agent ready"
    );
}

#[test]
fn scrapes_issue_no_sql_and_the_agent_holds_one_backend() {
    let pg = PgCluster::start_with(ClusterOpts {
        pg_stat_statements: true,
        ..Default::default()
    });
    let mut env = fast_env(pg.monitor_url());
    // A long interval: between two cycles, only scrapes happen.
    env[1] = ("AGENT_INTERVAL", "60s".into());
    let agent = Agent::start(&env);
    wait_for(Duration::from_secs(10), || agent.get("/readyz").0 == 200).expect("ready");
    let calls = || {
        pg.psql(&format!(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = '{MONITOR_USER}'"
        ))
    };
    let before = calls();
    assert_ne!(
        before, "0",
        "the agent's own cycle should show in pg_stat_statements"
    );
    for _ in 0..300 {
        let (code, _) = agent.get("/metrics");
        assert_eq!(code, 200);
    }
    assert_eq!(calls(), before, "scrapes issued SQL");
    assert_eq!(pg.agent_backends(), 1);
    // The session is the agent's, with the discipline applied.
    let app = pg.psql(&format!(
        "SELECT application_name FROM pg_stat_activity WHERE usename = '{MONITOR_USER}'"
    ));
    assert_eq!(app, "rose-agent");
}

#[test]
fn promtool_finds_nothing_wrong_with_the_exposition() {
    if !require_tool("promtool") {
        return;
    }
    let pg = PgCluster::start();
    let agent = Agent::start(&fast_env(pg.monitor_url()));
    wait_for(Duration::from_secs(10), || {
        agent.metrics().get("rose_pg_up") == Some(1.0)
    })
    .expect("up");
    wait_for(Duration::from_secs(10), || {
        agent
            .metrics()
            .get("rose_pg_database_size_bytes{datname=\"rose\"}")
            .is_some()
    })
    .expect("size");
    let (_, body) = agent.get("/metrics");
    promtool_check_metrics(&body);
}

#[test]
fn the_monitoring_password_reaches_no_output() {
    let pg = PgCluster::start();
    // A healthy run, a run with a wrong password (auth errors are logged), and --print-config.
    let mut agent = Agent::start(&fast_env(pg.monitor_url()));
    wait_for(Duration::from_secs(10), || {
        agent.metrics().get("rose_pg_up") == Some(1.0)
    })
    .expect("up");
    let wrong = pg
        .monitor_url()
        .replace(MONITOR_PASSWORD, &format!("{MONITOR_PASSWORD}x"));
    let bad = Agent::start(&fast_env(wrong.clone()));
    wait_for(Duration::from_secs(5), || {
        bad.metrics()
            .get(r#"rose_agent_check_errors_total{check="pg_connectivity",kind="auth_failed"}"#)
            .is_some()
    })
    .unwrap_or_else(|| panic!("no auth_failed: {}", bad.output()));
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["run", "--print-config"])
        .env_clear()
        .env("DATABASE_URL", &wrong)
        .output()
        .unwrap();
    assert!(printed.status.success());
    let mut everything = String::from_utf8_lossy(&printed.stdout).into_owned();
    everything.push_str(&String::from_utf8_lossy(&printed.stderr));
    assert!(everything.contains("rose_monitor:****@"), "{everything}");
    for a in [&agent, &bad] {
        everything.push_str(&a.get("/metrics").1);
        everything.push_str(&a.output());
    }
    assert_eq!(agent.terminate(), Some(0), "graceful shutdown exit code");
    everything.push_str(&agent.output());
    assert!(
        !everything.contains(MONITOR_PASSWORD),
        "password leaked:\n{everything}"
    );
    assert!(everything.contains("Shutdown complete."), "{everything}");
}

#[test]
fn bad_configuration_names_every_key_and_exits_64() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("run")
        .env_clear()
        .env(
            "DATABASE_URL",
            "postgresql://rose:p@ss/word@db:5432/railway",
        )
        .env("DATABASE_POOL_SIZE", "lots")
        .env("AGENT_INTERVAL", "often")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for k in [
        "DATABASE_URL",
        "DATABASE_POOL_SIZE",
        "AGENT_INTERVAL",
        "percent-encode",
    ] {
        assert!(err.contains(k), "{k} not in: {err}");
    }
    assert!(!err.contains("p@ss"), "{err}");
}
