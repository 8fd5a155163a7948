//! `agent diagnose` against real conditions: each reproduces a failure for real and asserts the
//! finding code, severity, exit code (Nagios: 0 ok, 1 warning, 2 critical, 3 unknown), and that
//! the monitoring password appears nowhere in the output.

use crate::support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::*;

/// The database side only: the app probe is off (tests of the app side start the stand-in).
fn env(url: String) -> Vec<(&'static str, String)> {
    vec![
        ("AGENT_DATABASE_URL", url),
        ("FEATURE_DATABASE_TYPE", "postgresql".into()),
        ("AGENT_APP_PROBES", "off".into()),
    ]
}

/// The codes and severities of a report, for messages.
fn summary(report: &serde_json::Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    (
                        f["code"].as_str().unwrap_or("").to_owned(),
                        f["severity"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_no_password(all: &str) {
    assert!(!all.contains(MONITOR_PASSWORD), "password leaked: {all}");
}

fn finding<'a>(report: &'a serde_json::Value, code: &str) -> &'a serde_json::Value {
    report["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["code"] == code))
        .unwrap_or_else(|| panic!("no {code} in {report:#}"))
}

#[test]
fn healthy_database_exits_0_and_walks_the_ladder() {
    let pg = PgCluster::start();
    let app = Standin::start(&[]);
    let mut e = env(pg.monitor_url());
    e.retain(|(k, _)| *k != "AGENT_APP_PROBES");
    e.push(("APP_BASE_URL", app.base_url()));
    let (code, report, all) = diagnose(&e, &[]);
    assert_eq!(code, 0, "{:?}\n{all}", summary(&report));
    assert_eq!(report["status"], "ok");
    assert_eq!(report["target"], format!("127.0.0.1:{}/rose", pg.port));
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for rung in [
        "config",
        "dns",
        "tcp",
        "tls",
        "auth",
        "database",
        "privileges",
        "connections",
        "pg_stat_statements",
        "schema",
        "sizes",
        "activity",
        "database_health",
        "replication",
        "app",
    ] {
        assert!(names.contains(&rung), "{rung} missing from {names:?}");
    }
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "ok" || c["status"] == "info"),
        "{report:#}"
    );
    assert_no_password(&all);
    // The text form reads the same way and has no colour when piped.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("diagnose")
        .env_clear()
        .env("AGENT_DATABASE_URL", pg.monitor_url())
        .env("APP_BASE_URL", app.base_url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("status: ok") && !text.contains('\x1b'),
        "{text}"
    );
}

#[test]
fn nothing_listening_is_connection_refused() {
    let port = free_port();
    let url = format!("postgresql://{MONITOR_USER}:{MONITOR_PASSWORD}@127.0.0.1:{port}/rose");
    let (code, report, all) = diagnose(&env(url), &[]);
    assert_eq!(code, 2, "{all}");
    let f = finding(&report, "connection_refused");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["runbook"], "docs/runbooks/connection_refused.md");
    assert!(
        f["steps"][0]
            .as_str()
            .unwrap()
            .contains("AGENT_DATABASE_URL"),
        "{f}"
    );
    let tcp = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tcp")
        .unwrap();
    assert_eq!(tcp["status"], "critical");
    let auth = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "auth")
        .unwrap();
    assert_eq!(auth["status"], "skipped");
    assert_no_password(&all);
}

#[test]
fn wrong_password_is_auth_failed() {
    let pg = PgCluster::start();
    let url = pg
        .monitor_url()
        .replace(MONITOR_PASSWORD, &format!("{MONITOR_PASSWORD}-wrong"));
    let (code, report, all) = diagnose(&env(url), &[]);
    assert_eq!(code, 2, "{all}");
    assert_eq!(finding(&report, "auth_failed")["severity"], "critical");
    assert_no_password(&all);
}

#[test]
fn unencoded_at_in_the_password_is_bad_database_url_and_unknown() {
    let url = format!("postgresql://{MONITOR_USER}:{MONITOR_PASSWORD}@x@127.0.0.1:5432/rose");
    let (code, report, all) = diagnose(&env(url), &[]);
    assert_eq!(code, 3, "{all}");
    assert_eq!(report["status"], "unknown");
    let f = finding(&report, "bad_database_url");
    assert!(
        f["evidence"].as_str().unwrap().contains("percent-encode"),
        "{f}"
    );
    assert_no_password(&all);
}

#[test]
fn missing_database_is_database_missing() {
    let pg = PgCluster::start_with(ClusterOpts {
        schema: false,
        ..Default::default()
    });
    let url = pg.monitor_url().replace("/rose?", "/no_such_db?");
    let (code, report, all) = diagnose(&env(url), &[]);
    assert_eq!(code, 2, "{all}");
    finding(&report, "database_missing");
    assert_no_password(&all);
}

#[test]
fn role_without_pg_monitor_is_privilege_missing() {
    let pg = PgCluster::start();
    pg.psql(&format!("REVOKE pg_monitor FROM {MONITOR_USER}"));
    let (code, report, all) = diagnose(&env(pg.monitor_url()), &[]);
    assert_eq!(code, 1, "{all}");
    let f = finding(&report, "privilege_missing");
    assert_eq!(f["severity"], "warning");
    assert!(
        f["steps"][0]
            .as_str()
            .unwrap()
            .contains("GRANT pg_monitor TO rose_monitor"),
        "{f}"
    );
    assert_no_password(&all);
}

#[test]
fn all_slots_held_is_too_many_connections() {
    let pg = PgCluster::start_with(ClusterOpts {
        max_connections: 6,
        superuser_reserved: 3,
        schema: false,
        ..Default::default()
    });
    pg.psql("CREATE ROLE app LOGIN PASSWORD 'app'");
    // Count the sessions by their backends' process titles ("postgres: app rose ..."): a polling
    // SQL session would itself take an ordinary slot and race the last session for it.
    let mut held = Sessions::hold(&pg, "app", "app", 3, "SELECT pg_sleep(60)");
    let backends = || {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter(|l| l.starts_with("postgres: app rose"))
            .count()
    };
    wait_for(Duration::from_secs(10), || backends() == 3).unwrap_or_else(|| {
        panic!(
            "sessions not held ({} backends): {}",
            backends(),
            held.errors()
        )
    });
    let (code, report, all) = diagnose(&env(pg.monitor_url()), &[]);
    assert_eq!(code, 2, "{all}");
    let f = finding(&report, "too_many_connections");
    assert!(
        f["steps"][0]
            .as_str()
            .unwrap()
            .contains("DATABASE_POOL_SIZE"),
        "{f}"
    );
    assert_no_password(&all);
}

#[test]
fn pool_budget_over_the_slots_is_reported() {
    let pg = PgCluster::start_with(ClusterOpts {
        max_connections: 25,
        superuser_reserved: 3,
        schema: false,
        ..Default::default()
    });
    let mut e = env(pg.monitor_url());
    e.push(("AGENT_APP_INSTANCES", "3".into()));
    let (code, report, all) = diagnose(&e, &[]);
    assert_eq!(code, 2, "{all}");
    let f = finding(&report, "pool_budget_exceeded");
    assert!(
        f["steps"][0]
            .as_str()
            .unwrap()
            .starts_with("pool demand 91 > 22 slots"),
        "{f}"
    );
}

#[test]
fn accept_and_hang_returns_within_the_timeout() {
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    let _keeper = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming().take(16) {
            held.push(s);
        }
    });
    let url = format!(
        "postgresql://{MONITOR_USER}:{MONITOR_PASSWORD}@127.0.0.1:{port}/rose?sslmode=disable"
    );
    let t = Instant::now();
    let (code, report, all) = diagnose(&env(url), &["--timeout", "3s"]);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(code, 2, "{all}");
    finding(&report, "connect_timeout");
    assert_no_password(&all);
}

/// Runs diagnose until `code` shows up (activity needs the sessions to be in place) and returns
/// the report; panics with what it saw otherwise.
fn diagnose_until(e: &[(&str, String)], code: &str) -> (i32, serde_json::Value, String) {
    let mut last = None;
    for _ in 0..20 {
        let r = diagnose(e, &[]);
        if codes(&r.1).iter().any(|c| c == code) {
            return r;
        }
        last = Some(r);
        std::thread::sleep(Duration::from_millis(250));
    }
    let (_, report, all) = last.unwrap();
    panic!("no {code}: {:?}\n{all}", summary(&report))
}

#[test]
fn slow_query_idle_in_transaction_and_lock_contention() {
    let pg = PgCluster::start();
    let mut e = env(pg.monitor_url());
    e.push(("AGENT_SLOW_QUERY_THRESHOLD", "1s".into()));
    e.push(("AGENT_IDLE_IN_TRANSACTION_THRESHOLD", "1s".into()));
    let _holder = pg.session("BEGIN; LOCK TABLE checkpoints IN ACCESS EXCLUSIVE MODE;");
    // The waiter must start after the lock is held, or it simply runs.
    wait_for(Duration::from_secs(10), || {
        pg.psql("SELECT count(*) FROM pg_locks WHERE relation = 'checkpoints'::regclass AND mode = 'AccessExclusiveLock' AND granted") == "1"
    })
    .expect("lock held");
    let _waiter = pg.session("SELECT count(*) FROM checkpoints;");
    let _sleeper = pg.session("SELECT pg_sleep(60);");
    wait_for(Duration::from_secs(10), || {
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") == "1"
    })
    .expect("waiter blocked");
    std::thread::sleep(Duration::from_millis(1200));
    let (code, report, all) = diagnose_until(&e, "lock_contention");
    assert_eq!(code, 1, "{:?}", summary(&report));
    for c in ["slow_queries", "idle_in_transaction", "lock_contention"] {
        let f = finding(&report, c);
        assert_eq!(f["severity"], "warning", "{c}");
    }
    assert!(
        finding(&report, "slow_queries")["evidence"]
            .as_str()
            .unwrap()
            .contains("pg_sleep"),
        "{all}"
    );
    assert!(
        finding(&report, "lock_contention")["steps"][0]
            .as_str()
            .unwrap()
            .contains("WHERE pid IN ("),
        "{all}"
    );
    assert_no_password(&all);
}

#[test]
fn schema_drift_dropped_index_migrations_behind_missing_task_path() {
    let pg = PgCluster::start();
    pg.psql("DROP INDEX checkpoints_thread_id_idx");
    let (code, report, all) = diagnose(&env(pg.monitor_url()), &[]);
    assert_eq!(code, 1, "{:?}\n{all}", summary(&report));
    let f = finding(&report, "missing_index");
    assert_eq!(
        f["steps"][0],
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoints_thread_id_idx ON checkpoints(thread_id);"
    );
    pg.psql("CREATE INDEX checkpoints_thread_id_idx ON checkpoints(thread_id); DELETE FROM checkpoint_migrations WHERE v > 7");
    let (code, report, _) = diagnose(&env(pg.monitor_url()), &[]);
    assert_eq!(code, 2, "{:?}", summary(&report));
    assert!(
        finding(&report, "schema_mismatch")["evidence"]
            .as_str()
            .unwrap()
            .contains("v7"),
        "{report:#}"
    );
    pg.psql("INSERT INTO checkpoint_migrations VALUES (8), (9); ALTER TABLE checkpoint_writes DROP COLUMN task_path");
    let (code, report, all) = diagnose(&env(pg.monitor_url()), &[]);
    assert_eq!(code, 2, "{:?}", summary(&report));
    assert!(
        finding(&report, "schema_mismatch")["evidence"]
            .as_str()
            .unwrap()
            .contains("task_path"),
        "{report:#}"
    );
    assert_no_password(&all);
}

#[test]
fn app_down_degraded_and_slow() {
    let pg = PgCluster::start_with(ClusterOpts {
        schema: true,
        ..Default::default()
    });
    let app = Standin::start(&[]);
    let mut e = env(pg.monitor_url());
    e.retain(|(k, _)| *k != "AGENT_APP_PROBES");
    e.push(("APP_BASE_URL", app.base_url()));
    app.set("mode=degraded&down=qdrant");
    let (code, report, _) = diagnose(&e, &[]);
    assert_eq!(code, 1, "{:?}", summary(&report));
    assert!(
        finding(&report, "app_degraded")["summary"]
            .as_str()
            .unwrap()
            .contains("qdrant"),
        "{report:#}"
    );
    assert!(
        finding(&report, "app_degraded")["evidence"]
            .as_str()
            .unwrap()
            .contains("Likely cause: qdrant"),
        "the service the app names is the cause: {report:#}"
    );
    app.set("mode=slow&delay_ms=300");
    let (code, report, _) = diagnose(&e, &[]);
    assert_eq!(code, 1, "{:?}", summary(&report));
    finding(&report, "app_slow");
    app.set("mode=refusing");
    let (code, report, all) = diagnose(&e, &[]);
    assert_eq!(code, 2, "{:?}", summary(&report));
    assert_eq!(finding(&report, "app_unreachable")["severity"], "critical");
    let app_rung = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "app")
        .unwrap();
    // The rung's status is the worst of what it found (issue 13 item 1), never `ok` above a
    // critical finding of its own.
    assert_eq!(
        app_rung["status"], "critical",
        "the app rung agrees with its finding: {app_rung}"
    );
    assert!(
        app_rung["detail"]
            .as_str()
            .unwrap_or("")
            .contains("app_unreachable"),
        "{app_rung}"
    );
    assert_no_password(&all);
}

#[test]
fn app_probes_run_even_when_the_database_is_down() {
    let app = Standin::start(&[]);
    app.set("mode=500");
    let url = format!(
        "postgresql://{MONITOR_USER}:{MONITOR_PASSWORD}@127.0.0.1:{}/rose",
        free_port()
    );
    let mut e = env(url);
    e.retain(|(k, _)| *k != "AGENT_APP_PROBES");
    e.push(("APP_BASE_URL", app.base_url()));
    let (code, report, all) = diagnose(&e, &[]);
    assert_eq!(code, 2);
    finding(&report, "connection_refused");
    let f = finding(&report, "app_unhealthy");
    assert!(
        f["evidence"]
            .as_str()
            .unwrap()
            .contains("Likely cause: the database"),
        "{f}"
    );
    assert_no_password(&all);
}

#[test]
fn the_budget_counts_the_app_instances_the_database_sees() {
    let pg = PgCluster::start_with(ClusterOpts {
        max_connections: 25,
        superuser_reserved: 3,
        ..Default::default()
    });
    pg.psql("CREATE ROLE app LOGIN PASSWORD 'app'");
    // Two "instances": one over TCP from 127.0.0.1, one over the Unix socket.
    let _tcp = Sessions::hold(&pg, "app", "app", 1, "SELECT pg_sleep(60)");
    let _local = Sessions::hold(&pg, "postgres", "", 1, "SELECT pg_sleep(60)");
    wait_for(Duration::from_secs(10), || {
        pg.psql("SELECT count(DISTINCT coalesce(host(client_addr), 'local')) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'") == "2"
    })
    .expect("two instances connected");
    let (code, report, all) = diagnose(&env(pg.monitor_url()), &[]);
    // A risk, not an outage: a warning, like its rule RosePoolBudgetExceeded.
    assert_eq!(code, 1, "{:?}\n{all}", summary(&report));
    let f = finding(&report, "pool_budget_exceeded");
    let ev = f["evidence"].as_str().unwrap();
    assert!(
        ev.contains("pool demand 61")
            && ev.contains("sees 2 app instance(s) while AGENT_APP_INSTANCES says 1"),
        "{ev}"
    );
}

/// Issue 13 item 4: only the agent's own DSN is wrong (the monitoring role's password) while the
/// app reports qdrant down: the app finding names qdrant, never the database; on `/findings` of
/// `agent run` too.
#[test]
fn the_monitoring_roles_failure_is_not_blamed_for_the_app() {
    let pg = PgCluster::start();
    let app = Standin::start(&[]);
    app.set("mode=degraded&down=qdrant");
    let wrong = pg
        .monitor_url()
        .replace(MONITOR_PASSWORD, "not-the-password");
    let mut e = env(wrong);
    e.retain(|(k, _)| *k != "AGENT_APP_PROBES");
    e.push(("APP_BASE_URL", app.base_url()));
    let (code, report, all) = diagnose(&e, &[]);
    assert_eq!(code, 2, "{:?}", summary(&report));
    finding(&report, "auth_failed");
    let ev = finding(&report, "app_degraded")["evidence"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ev.contains("Likely cause: qdrant"), "{ev}");
    assert!(!ev.contains("the database"), "{ev}");

    e.extend(fast_timing());
    let agent = Agent::start(&e);
    wait_for(Duration::from_secs(15), || {
        agent.get("/findings").1.contains("app_degraded")
    })
    .unwrap_or_else(|| panic!("{}", agent.output()));
    let (_, body) = agent.get("/findings");
    assert!(body.contains("Likely cause: qdrant"), "{body}");
    assert!(!body.contains("Likely cause: the database"), "{body}");
    assert_no_password(&all);
}
