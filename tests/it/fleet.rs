//! A fleet of agents against one real cluster: exactly one leads (through the PostgreSQL
//! advisory lock), the database-wide statements per cycle are one agent's, and killing the leader
//! moves leadership, and the database-wide series, within one interval.

use crate::support;

use std::time::{Duration, Instant};

use support::*;

const INTERVAL_MS: u64 = 500;

fn env(url: String) -> Vec<(&'static str, String)> {
    vec![
        ("AGENT_DATABASE_URL", url),
        ("AGENT_INTERVAL", format!("{INTERVAL_MS}ms")),
        // Everything on one cadence, so "per cycle" is one number.
        ("AGENT_SLOW_INTERVAL", format!("{INTERVAL_MS}ms")),
        ("AGENT_CONNECT_TIMEOUT", "400ms".into()),
        ("AGENT_STATEMENT_TIMEOUT", "400ms".into()),
        ("AGENT_APP_PROBES", "off".into()),
    ]
}

/// Statements that carry a database-wide check: the checks of a cycle share one statement
/// (`pg::batch`), instance-local and database-wide parts together, so a statement counts when it
/// reads what only database-wide checks read (`pg_stat_archiver`, `pg_stat_replication`,
/// `pg_database_size`); a follower's statements (connectivity, privileges, migration facts,
/// the election's `pg_try_advisory_lock`) never do.
fn database_wide_calls(pg: &PgCluster) -> f64 {
    pg.psql(&format!(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
         WHERE r.rolname = '{MONITOR_USER}' \
           AND (s.query LIKE '%pg_stat_archiver%' OR s.query LIKE '%pg_stat_replication%' \
                OR s.query LIKE '%pg_database_size(%')"
    ))
    .trim()
    .parse()
    .unwrap()
}

/// Sum of `pg_activity` runs over the live agents: database-wide cycles so far.
fn cycles(agents: &[&Agent]) -> f64 {
    agents
        .iter()
        .map(|a| {
            a.metrics()
                .get(r#"rose_agent_check_runs_total{check="pg_activity"}"#)
                .unwrap_or(0.0)
        })
        .sum()
}

/// Statements per database-wide cycle over `window`.
fn per_cycle(pg: &PgCluster, agents: &[&Agent], window: Duration) -> f64 {
    let c0 = cycles(agents);
    pg.psql("SELECT pg_stat_statements_reset()");
    std::thread::sleep(window);
    let calls = database_wide_calls(pg);
    let c1 = cycles(agents);
    assert!(c1 - c0 >= 5.0, "too few cycles: {c0} -> {c1}");
    calls / (c1 - c0)
}

fn leaders(agents: &[&Agent]) -> Vec<usize> {
    agents
        .iter()
        .enumerate()
        .filter(|(_, a)| a.metrics().get("rose_agent_leader") == Some(1.0))
        .map(|(i, _)| i)
        .collect()
}

fn exports_database_wide(a: &Agent) -> bool {
    http_get(a.port, "/metrics")
        .map(|(_, body)| {
            Metrics::parse(&body)
                .get("rose_pg_max_connections")
                .is_some()
        })
        .unwrap_or(false)
}

#[test]
fn a_fleet_costs_the_database_one_agent_and_leadership_moves_within_one_interval() {
    let pg = PgCluster::start_with(ClusterOpts {
        pg_stat_statements: true,
        ..Default::default()
    });
    let mut a = Agent::start(&env(pg.monitor_url()));
    wait_for(Duration::from_secs(10), || {
        a.metrics().get("rose_agent_leader") == Some(1.0) && a.get("/readyz").0 == 200
    })
    .unwrap_or_else(|| panic!("a single agent did not lead: {}", a.output()));
    assert!(exports_database_wide(&a));
    let single = per_cycle(&pg, &[&a], Duration::from_secs(6));
    eprintln!("one agent: {single:.2} database-wide statements per cycle");
    // One statement a cycle, two when a loaded machine splits a round.
    assert!((0.8..=2.5).contains(&single), "{single}");

    let b = Agent::start(&env(pg.monitor_url()));
    let c = Agent::start(&env(pg.monitor_url()));
    for f in [&b, &c] {
        wait_for(Duration::from_secs(10), || {
            f.metrics().get("rose_agent_leader") == Some(0.0) && f.get("/readyz").0 == 200
        })
        .unwrap_or_else(|| panic!("follower not ready: {}", f.output()));
        let m = f.metrics();
        assert_eq!(
            m.get("rose_pg_max_connections"),
            None,
            "follower exports {m:?}"
        );
        assert_eq!(
            m.get(r#"rose_agent_check_success{check="pg_activity"}"#),
            None
        );
        // Instance-local checks keep running on followers.
        assert_eq!(m.get("rose_pg_up"), Some(1.0), "{m:?}");
    }
    // Exactly one leader, polled.
    let all = [&a, &b, &c];
    for _ in 0..10 {
        assert_eq!(leaders(&all), vec![0]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let fleet = per_cycle(&pg, &all, Duration::from_secs(6));
    eprintln!("three agents: {fleet:.2} database-wide statements per cycle");
    // A follower that ran database-wide parts would make it about three times one agent's.
    assert!(
        (fleet - single).abs() <= (single * 0.10).max(0.5),
        "fleet {fleet:.2} vs single {single:.2} per cycle"
    );
    assert_eq!(pg.agent_backends(), 3, "one backend per agent");

    // Kill the leader; a follower leads, and exports the database-wide series, within one
    // interval (+ the run and the poll).
    assert!(exports_database_wide(&a));
    a.child.kill().unwrap();
    let killed = Instant::now();
    a.child.wait().unwrap();
    let survivors = [&b, &c];
    let mut took = None;
    while killed.elapsed() < Duration::from_secs(5) {
        let ls = leaders(&survivors);
        assert!(ls.len() <= 1, "two leaders: {ls:?}");
        let exporting: Vec<_> = survivors
            .iter()
            .filter(|s| exports_database_wide(s))
            .collect();
        assert!(
            exporting.len() <= 1,
            "two agents export database-wide series"
        );
        if ls.len() == 1 && exporting.len() == 1 {
            took = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = took.unwrap_or_else(|| panic!("no takeover: {}\n{}", b.output(), c.output()));
    eprintln!("takeover after {took:?}");
    assert!(
        took <= Duration::from_millis(INTERVAL_MS + 400),
        "takeover took {took:?}"
    );
    for _ in 0..10 {
        assert_eq!(leaders(&survivors).len(), 1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = per_cycle(&pg, &survivors, Duration::from_secs(4));
    eprintln!("two agents after the takeover: {after:.2} per cycle");
    assert!(
        (after - single).abs() <= single * 0.10,
        "{after} vs {single}"
    );
    for s in survivors {
        assert!(!s.output().contains("panicked"), "{}", s.output());
    }
}

#[test]
fn election_off_makes_every_agent_run_everything() {
    let pg = PgCluster::start();
    let mut e = env(pg.monitor_url());
    e.push(("AGENT_LEADER_ELECTION", "off".into()));
    let a = Agent::start(&e);
    let b = Agent::start(&e);
    for x in [&a, &b] {
        wait_for(Duration::from_secs(10), || {
            x.get("/readyz").0 == 200 && exports_database_wide(x)
        })
        .unwrap_or_else(|| panic!("{}", x.output()));
        assert_eq!(x.metrics().get("rose_agent_leader"), Some(1.0));
    }
}
