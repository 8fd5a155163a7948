//! Hot reload on SIGHUP: a changed interval in the configuration file takes effect without
//! dropping the snapshot; a broken file keeps the running configuration and logs every problem.

use crate::support;

use std::time::{Duration, Instant};

use support::*;

fn runs(agent: &Agent) -> f64 {
    agent
        .metrics()
        .get(r#"rose_agent_check_runs_total{check="agent_process"}"#)
        .unwrap_or(0.0)
}

/// Runs of the process check per second, over `window`.
fn rate(agent: &Agent, window: Duration) -> f64 {
    let (r0, t0) = (runs(agent), Instant::now());
    std::thread::sleep(window);
    (runs(agent) - r0) / t0.elapsed().as_secs_f64()
}

fn hup(agent: &Agent) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn sighup_applies_a_changed_interval_and_keeps_the_old_config_on_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "[agent]\ninterval = \"1s\"\n").unwrap();
    let agent = Agent::start(&[
        ("AGENT_CONFIG", file.display().to_string()),
        ("AGENT_APP_PROBES", "off".into()),
    ]);
    wait_for(Duration::from_secs(10), || agent.get("/readyz").0 == 200).expect("ready");
    let slow = rate(&agent, Duration::from_secs(3));
    eprintln!("1s interval: {slow:.2} runs/s");
    assert!(slow <= 1.5, "{slow}");

    std::fs::write(&file, "[agent]\ninterval = \"200ms\"\n").unwrap();
    let before = runs(&agent);
    hup(&agent);
    wait_for(Duration::from_secs(5), || {
        agent.output().contains("Configuration reloaded.")
    })
    .unwrap_or_else(|| panic!("no reload: {}", agent.output()));
    // The snapshot carried over: counters go on from where they were, readiness stays.
    assert!(runs(&agent) >= before, "snapshot dropped");
    assert_eq!(agent.get("/readyz").0, 200);
    let fast = rate(&agent, Duration::from_secs(3));
    eprintln!("200ms interval: {fast:.2} runs/s");
    assert!(fast >= 3.5, "{fast}: {}", agent.output());

    // Two problems in one file: both are logged, the 200 ms interval stays.
    std::fs::write(
        &file,
        "[agent]\ninterval = \"banana\"\nfinding_pending_cycles = 0\n",
    )
    .unwrap();
    hup(&agent);
    wait_for(Duration::from_secs(5), || {
        agent.output().matches("Reload rejected").count() >= 2
    })
    .unwrap_or_else(|| panic!("problems not logged: {}", agent.output()));
    let out = agent.output();
    assert!(out.contains("banana"), "{out}");
    assert!(out.contains("FINDING_PENDING_CYCLES"), "{out}");
    let kept = rate(&agent, Duration::from_secs(2));
    eprintln!("after a broken file: {kept:.2} runs/s");
    assert!(kept >= 3.5, "{kept}");
    assert_eq!(agent.get("/readyz").0, 200);

    // A file that does not parse at all is rejected too.
    std::fs::write(&file, "[agent\ninterval = ").unwrap();
    hup(&agent);
    wait_for(Duration::from_secs(5), || {
        agent.output().matches("Reload rejected").count() >= 3
    })
    .unwrap_or_else(|| panic!("{}", agent.output()));
    assert_eq!(agent.get("/healthz").0, 200);
    assert!(!agent.output().contains("panicked"));
}

#[test]
fn sighup_keeps_the_connection_and_the_lead_when_the_database_settings_did_not_change() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, "[agent]\ninterval = \"1s\"\n").unwrap();
    let agent = Agent::start(&[
        ("AGENT_CONFIG", file.display().to_string()),
        ("AGENT_APP_PROBES", "off".into()),
        ("AGENT_DATABASE_URL", pg.monitor_url()),
        ("AGENT_CONNECT_TIMEOUT", "400ms".into()),
        ("AGENT_STATEMENT_TIMEOUT", "400ms".into()),
    ]);
    wait_for(Duration::from_secs(10), || {
        agent.get("/readyz").0 == 200 && agent.metrics().get("rose_agent_leader") == Some(1.0)
    })
    .unwrap_or_else(|| panic!("{}", agent.output()));
    let connects = |a: &Agent| {
        a.metrics()
            .get(r#"rose_agent_pg_connection_attempts_total{result="ok"}"#)
            .unwrap_or(0.0)
    };
    let before = connects(&agent);
    std::fs::write(&file, "[agent]\ninterval = \"300ms\"\n").unwrap();
    hup(&agent);
    wait_for(Duration::from_secs(5), || {
        agent.output().contains("Configuration reloaded.")
    })
    .unwrap_or_else(|| panic!("{}", agent.output()));
    // Leader throughout, database-wide series never withdrawn, same connection.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        let m = agent.metrics();
        assert_eq!(m.get("rose_agent_leader"), Some(1.0), "{m:?}");
        assert!(m.get("rose_pg_max_connections").is_some(), "{m:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(connects(&agent), before, "reconnected on reload");
    assert_eq!(pg.agent_backends(), 1);
    let r = (
        agent
            .metrics()
            .get(r#"rose_agent_check_runs_total{check="pg_activity"}"#)
            .unwrap(),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let per_s = (agent
        .metrics()
        .get(r#"rose_agent_check_runs_total{check="pg_activity"}"#)
        .unwrap()
        - r.0)
        / r.1.elapsed().as_secs_f64();
    assert!(
        per_s >= 2.5,
        "the new interval drives the database-wide checks: {per_s}"
    );
    assert!(!agent.output().contains("Following"), "{}", agent.output());
}

/// Issue 14 item 12: 100 SIGHUPs in about a second (a config-management loop gone wrong) are
/// coalesced into a reload or two; the checks keep their phase (no run at once per reload), so
/// the database sees no burst of statements, and PostgreSQL never looks down.
#[test]
fn a_sighup_burst_is_one_reload_and_no_extra_statements() {
    let pg = PgCluster::start();
    let agent = Agent::start(&[
        ("AGENT_APP_PROBES", "off".into()),
        ("AGENT_DATABASE_URL", pg.monitor_url()),
        ("AGENT_INTERVAL", "2s".into()),
    ]);
    wait_for(Duration::from_secs(15), || agent.get("/readyz").0 == 200)
        .unwrap_or_else(|| panic!("{}", agent.output()));
    let runs = |a: &Agent| {
        a.metrics()
            .get(r#"rose_agent_check_runs_total{check="pg_activity"}"#)
            .unwrap_or(0.0)
    };
    let before = runs(&agent);
    let t0 = Instant::now();
    let pid = agent.child.id().to_string();
    let burst = std::thread::spawn(move || {
        for _ in 0..100 {
            let _ = std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status();
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let mut down = 0;
    while t0.elapsed() < Duration::from_secs(6) {
        let m = prompt_scrape(&agent);
        if m.get("rose_pg_up") != Some(1.0) {
            down += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    burst.join().unwrap();
    let elapsed = t0.elapsed().as_secs_f64();
    let reloads = agent.output().matches("Configuration reloaded.").count();
    let extra = runs(&agent) - before;
    eprintln!(
        "burst of 100 SIGHUPs: {reloads} reload(s), {extra} pg_activity runs in {elapsed:.1} s"
    );
    assert!(
        (1..=2).contains(&reloads),
        "{reloads} reloads: {}",
        agent.output()
    );
    assert_eq!(down, 0, "rose_pg_up was not 1 in {down} scrapes");
    // On a 2 s schedule: at most one run per tick (plus one for a tick at the edge).
    assert!(
        extra <= (elapsed / 2.0).ceil() + 1.0,
        "{extra} runs in {elapsed:.1} s: the reloads restarted the schedule"
    );
    assert_eq!(pg.agent_backends(), 1);
}
