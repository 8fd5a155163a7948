//! Database-side faults against real clusters (loopback only, every wait bounded). Each case
//! asserts that `/metrics` keeps answering well under a second, that the state is right within
//! one interval, that the agent does not panic, that it holds at most one backend, and that it
//! recovers within one interval after the fault ends.
//!
//! Database stopped/restarted and the accept-and-hang listener are in tests/it/run_core.rs.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// The agent's interval in these tests.
const INTERVAL: Duration = Duration::from_secs(1);
/// Longest a state change may take to show: one interval plus the bound on one run (connect
/// timeout + query timeout) plus polling slack.
const WITHIN_ONE_INTERVAL: Duration = Duration::from_millis(2500);
/// Longest recovery may take once the fault ends: the next tick (one interval) plus one
/// connection set-up (bounded by the connect timeout) plus polling slack. Connection backoff is
/// capped below one interval, counted from the start of the failed attempt, so the first tick
/// after the fault always tries again.
const RECOVERY: Duration = Duration::from_millis(2000);

/// Polls promptly-answered scrapes until `pred` holds; panics with the agent's output if it
/// does not within `limit`. Returns how long it took.
fn until(agent: &Agent, limit: Duration, what: &str, pred: impl Fn(&Metrics) -> bool) -> Duration {
    wait_for(limit, || pred(&prompt_scrape(agent)))
        .unwrap_or_else(|| panic!("{what}: not within {limit:?}\n{}", agent.output()))
}

fn up(m: &Metrics) -> bool {
    m.get("rose_pg_up") == Some(1.0)
}

fn down(m: &Metrics) -> bool {
    m.get("rose_pg_up") == Some(0.0)
}

fn errors(m: &Metrics, kind: &str) -> f64 {
    m.get(&format!(
        r#"rose_agent_check_errors_total{{check="pg_connectivity",kind="{kind}"}}"#
    ))
    .unwrap_or(0.0)
}

fn failed_attempts(m: &Metrics) -> f64 {
    m.get(r#"rose_agent_pg_connection_attempts_total{result="error"}"#)
        .unwrap_or(0.0)
}

fn assert_no_panic(agent: &Agent) {
    let out = agent.output();
    assert!(!out.contains("panicked"), "the agent panicked:\n{out}");
}

fn assert_at_most_one_backend(pg: &PgCluster) {
    let n = pg.agent_backends();
    assert!(n <= 1, "the agent holds {n} backends");
}

/// Terminates the agent's session, so its next check must open a new connection.
fn terminate_agent_session(pg: &PgCluster) {
    pg.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'rose-agent'",
    );
}

/// Every process of a cluster stopped with SIGSTOP; SIGCONT is sent on `thaw` or on drop, so the
/// cluster is resumed even when an assertion fails in between (and before the cluster itself is
/// dropped, as long as the guard is declared after it).
struct Frozen {
    pids: Vec<u32>,
}

impl Frozen {
    fn freeze(pg: &PgCluster) -> Frozen {
        let pid_file = std::fs::read_to_string(pg.data().join("postmaster.pid")).unwrap();
        let postmaster: u32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        // The postmaster first, so it forks nothing new while its children are being stopped.
        let mut guard = Frozen { pids: Vec::new() };
        guard.signal_stop(postmaster);
        for child in children_of(postmaster) {
            guard.signal_stop(child);
        }
        guard
    }

    fn signal_stop(&mut self, pid: u32) {
        // Recorded before the signal so Drop resumes it whatever happens next.
        self.pids.push(pid);
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
    }

    fn thaw(&mut self) {
        if self.pids.is_empty() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-CONT")
            .args(self.pids.iter().map(|p| p.to_string()))
            .status();
        self.pids.clear();
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw();
    }
}

/// Live processes whose parent is `parent` (from /proc/*/stat).
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn frozen_postmaster_is_reported_down_and_recovers_after_sigcont() {
    let pg = PgCluster::start();
    let agent = Agent::start(&fast_env(pg.monitor_url()));
    until(&agent, Duration::from_secs(10), "up", up);
    assert_at_most_one_backend(&pg);

    let mut frozen = Frozen::freeze(&pg);
    let frozen_at = Instant::now();
    assert!(
        frozen.pids.len() > 2,
        "postmaster and children: {:?}",
        frozen.pids
    );
    // The open session hangs: the client-side query timeout drops it; new connections are
    // accepted by the kernel but never answered: the connect timeout bounds each attempt.
    let took = until(&agent, WITHIN_ONE_INTERVAL, "down while frozen", down);
    eprintln!("frozen reported down after {took:?}");
    // Stays down, and /metrics stays prompt, for three more intervals.
    let until_t = Instant::now() + 3 * INTERVAL;
    while Instant::now() < until_t {
        let m = prompt_scrape(&agent);
        assert!(down(&m), "up while the cluster is frozen: {m:?}");
        assert_eq!(m.get("rose_pg_max_connections"), None, "stale value served");
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = agent.metrics();
    assert!(
        errors(&m, "query_timeout") + errors(&m, "connect_timeout") >= 1.0,
        "{m:?}"
    );
    // About one attempt per interval while frozen, never a burst.
    let intervals = frozen_at.elapsed().as_secs_f64() / INTERVAL.as_secs_f64();
    assert!(failed_attempts(&m) <= intervals + 1.0, "{m:?}");

    frozen.thaw();
    let thawed = Instant::now();
    until(&agent, RECOVERY, "up after SIGCONT", up);
    eprintln!("up again {:?} after SIGCONT", thawed.elapsed());
    // Abandoned attempts queued in the listen backlog are accepted after SIGCONT and fail
    // authentication (their client is gone); none of them may stay as an agent backend.
    for _ in 0..10 {
        assert_at_most_one_backend(&pg);
        prompt_scrape(&agent);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_no_panic(&agent);
}

#[test]
fn monitoring_password_changed_reports_auth_failed_then_recovers_when_restored() {
    let pg = PgCluster::start();
    let agent = Agent::start(&fast_env(pg.monitor_url()));
    until(&agent, Duration::from_secs(10), "up", up);
    assert_at_most_one_backend(&pg);

    pg.psql(&format!(
        "ALTER ROLE {MONITOR_USER} PASSWORD 'rotated-elsewhere-0xC0FFEE'"
    ));
    // A session that is already open stays authenticated after the password changes; only a new
    // connection is refused. Terminate the agent's session to force a reconnect, as a restart of
    // the server or a network blip would.
    terminate_agent_session(&pg);
    let took = until(&agent, WITHIN_ONE_INTERVAL, "auth_failed", |m| {
        down(m) && errors(m, "auth_failed") >= 1.0
    });
    eprintln!("auth_failed reported after {took:?}");
    assert_eq!(pg.agent_backends(), 0);
    // Still down and still auth_failed a few intervals later; scrapes stay prompt.
    let until_t = Instant::now() + 2 * INTERVAL;
    while Instant::now() < until_t {
        assert!(down(&prompt_scrape(&agent)));
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = agent.metrics();
    assert!(errors(&m, "auth_failed") >= 2.0, "{m:?}");
    assert_eq!(m.get("rose_pg_max_connections"), None, "stale value served");

    pg.psql(&format!(
        "ALTER ROLE {MONITOR_USER} PASSWORD '{MONITOR_PASSWORD}'"
    ));
    let restored = Instant::now();
    until(&agent, RECOVERY, "up after restore", up);
    eprintln!(
        "up again {:?} after the password was restored",
        restored.elapsed()
    );
    assert_at_most_one_backend(&pg);
    assert_no_panic(&agent);
}

#[test]
fn max_connections_exhausted_reports_too_many_connections_backs_off_and_recovers() {
    const MAX: u32 = 12;
    const RESERVED: u32 = 3;
    let pg = PgCluster::start_with(ClusterOpts {
        max_connections: MAX,
        superuser_reserved: RESERVED,
        // Backends of killed psql clients notice promptly instead of sleeping on.
        extra_conf: vec!["client_connection_check_interval=200ms".into()],
        ..Default::default()
    });
    let agent = Agent::start(&fast_env(pg.monitor_url()));
    until(&agent, Duration::from_secs(10), "up", up);
    assert_at_most_one_backend(&pg);

    // Superuser sessions take every non-reserved slot and one reserved slot, so that once the
    // agent's backend is gone the free slots are exactly the reserved ones: the agent (not a
    // superuser) is refused, while the test's own psql (superuser) can still get in.
    let holders = (MAX - RESERVED) as usize;
    let _sessions = Sessions::hold(&pg, "postgres", "", holders, "SELECT pg_sleep(120)");
    let held = || {
        pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'psql' AND query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()",
        )
        .parse::<usize>()
        .unwrap()
    };
    wait_for(Duration::from_secs(15), || held() == holders)
        .unwrap_or_else(|| panic!("holders did not connect: {} of {holders}", held()));
    // The agent's open session is unaffected so far.
    assert!(up(&prompt_scrape(&agent)));

    terminate_agent_session(&pg);
    let took = until(&agent, WITHIN_ONE_INTERVAL, "too_many_connections", |m| {
        down(m) && errors(m, "too_many_connections") >= 1.0
    });
    eprintln!("too_many_connections reported after {took:?}");

    // Backoff: about one connection attempt per interval, not a hammering loop.
    let before = failed_attempts(&agent.metrics());
    let window = Duration::from_secs(5);
    let started = Instant::now();
    while started.elapsed() < window {
        assert!(down(&prompt_scrape(&agent)));
        assert_at_most_one_backend(&pg);
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = agent.metrics();
    let attempts = failed_attempts(&m) - before;
    let intervals = window.as_secs_f64() / INTERVAL.as_secs_f64();
    eprintln!("{attempts} failed attempts in {window:?}");
    assert!(
        attempts >= 1.0 && attempts <= intervals + 1.0,
        "{attempts} attempts in {window:?}: {m:?}"
    );
    assert!(errors(&m, "too_many_connections") >= 3.0, "{m:?}");

    // The other clients go away: their backends are terminated.
    pg.psql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'psql' AND pid <> pg_backend_pid()",
    );
    let freed = Instant::now();
    until(&agent, RECOVERY, "up once slots are free", up);
    eprintln!("up again {:?} after the slots were freed", freed.elapsed());
    assert_at_most_one_backend(&pg);
    assert_no_panic(&agent);
}

/// Issue 14 item 8: after a stall longer than the freshness bound (the agent itself frozen, as a
/// paused VM or a frozen cgroup does, while the database hangs), the first scrapes after the
/// agent resumes must not serve the 1 it saw before the stall. The hung database keeps the
/// first check run after the stall from replacing the old outcome for a query timeout.
#[test]
fn after_a_stall_no_stale_up_is_served() {
    let pg = PgCluster::start();
    let mut env = fast_env(pg.monitor_url());
    env.push(("AGENT_APP_PROBES", "off".into()));
    let agent = Agent::start(&env);
    until(&agent, Duration::from_secs(10), "up", up);
    // Wait until a finding evaluation has run, so /findings has a status to lose.
    wait_for(Duration::from_secs(10), || {
        agent.get("/findings").1.contains("\"status\":\"ok\"")
    })
    .unwrap_or_else(|| panic!("no ok evaluation: {}", agent.output()));

    // Agent first (so it records nothing of the frozen database), then the cluster.
    let mut agent_frozen = Frozen { pids: Vec::new() };
    agent_frozen.signal_stop(agent.child.id());
    let mut db_frozen = Frozen::freeze(&pg);
    // Longer than the bound: 1 s interval + ~0.44 s timeout + 1 s slack.
    std::thread::sleep(Duration::from_secs(4));
    agent_frozen.thaw();
    let resumed = Instant::now();
    let mut scrapes = 0;
    while resumed.elapsed() < Duration::from_millis(350) {
        let (code, body) = agent.get("/metrics");
        assert_eq!(code, 200);
        let m = Metrics::parse(&body);
        assert!(
            !up(&m),
            "a stale rose_pg_up 1 served after the stall:\n{body}"
        );
        assert!(m.get("rose_agent_snapshot_age_seconds").is_some(), "{body}");
        assert_eq!(
            m.get(r#"rose_agent_check_stale{check="pg_connectivity"}"#),
            Some(1.0),
            "{body}"
        );
        assert_eq!(m.get("rose_pg_max_connections"), None, "stale value served");
        let (_, findings) = agent.get("/findings");
        assert!(
            findings.contains("\"status\":\"unknown\""),
            "findings over stale outcomes: {findings}"
        );
        scrapes += 1;
    }
    assert!(scrapes >= 3, "only {scrapes} scrapes");
    // The database still hangs: the agent says it is down (not stale) within one interval.
    let m = until(&agent, WITHIN_ONE_INTERVAL, "down while frozen", |m| {
        down(m) && m.get(r#"rose_agent_check_stale{check="pg_connectivity"}"#) == Some(0.0)
    });
    eprintln!("down (fresh) {m:?} after resume");
    db_frozen.thaw();
    until(&agent, RECOVERY + INTERVAL, "up after SIGCONT", up);
    assert_no_panic(&agent);
}

/// Issue 13 item 2: from the first scrape on, `/findings` never says ok while PostgreSQL is
/// down: `unknown` before the first evaluation, then the pending critical (`"status_pending":true`),
/// then the active one.
#[test]
fn findings_never_say_ok_while_the_database_is_down() {
    let port = free_port(); // nothing listens: refused
    let url = format!("postgresql://rose_monitor:x@127.0.0.1:{port}/rose?sslmode=disable");
    let mut env = fast_env(url);
    env.push(("AGENT_APP_PROBES", "off".into()));
    let agent = Agent::start(&env);
    let t = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while t.elapsed() < Duration::from_secs(5) {
        let (_, body) = agent.get("/findings");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let status = v["status"].as_str().unwrap_or("").to_owned();
        assert_ne!(status, "ok", "ok while the database is down: {body}");
        if status == "critical" {
            let pending = v["status_pending"].as_bool().unwrap();
            assert_eq!(
                pending,
                v["findings"].as_array().unwrap().is_empty(),
                "{body}"
            );
            seen.insert(if pending { "pending" } else { "active" });
        } else {
            assert_eq!(status, "unknown", "{body}");
            seen.insert("unknown");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen.contains("pending") && seen.contains("active"),
        "{seen:?}"
    );
    assert_no_panic(&agent);
}
