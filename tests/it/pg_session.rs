//! The agent's PostgreSQL session under what sits between it and the server (issue 14, items 2,
//! 3, 9, 10): PgBouncer 1.18 in session and transaction pooling, with and without
//! `ignore_startup_parameters = options`; a network blip that orphans backends under a role's
//! `CONNECTION LIMIT 3`; a distant database (a proxy adding 400 ms of round trip) at a 2 s
//! interval; a host name with several addresses. Real clusters, loopback only, every wait
//! bounded, everything stopped on drop.

use crate::support;

use std::collections::HashMap;
use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rose_agent::config::Config;
use rose_agent::pg::PgTarget;
use rose_agent::pg::leader::{DEFAULT_LOCK_KEY, Leadership};
use support::net::{PgBouncer, Proxy};
use support::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The agent's PostgreSQL target for `url`, built from the configuration as `agent run` does.
fn target(url: &str, extra: &[(&str, &str)]) -> PgTarget {
    let mut env: HashMap<&str, &str> = [
        ("AGENT_DATABASE_URL", url),
        ("AGENT_INTERVAL", "2s"),
        ("AGENT_STATEMENT_TIMEOUT", "500ms"),
        ("AGENT_LOCK_TIMEOUT", "200ms"),
    ]
    .into();
    env.extend(extra.iter().copied());
    let config = Config::load(None, &env).unwrap();
    let pg = rose_agent::run::pg_target(&config, None).unwrap();
    Arc::try_unwrap(pg).unwrap_or_else(|_| panic!("shared target"))
}

fn monitor_backends(pg: &PgCluster) -> u32 {
    pg.psql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{MONITOR_USER}'"
    ))
    .parse()
    .unwrap()
}

#[test]
fn behind_pgbouncer_in_every_pool_mode_the_agent_connects_and_its_limits_hold() {
    let pg = PgCluster::start();
    pg.psql(&format!(
        "CREATE TABLE scratch (x int); GRANT ALL ON scratch TO {MONITOR_USER}"
    ));
    let rt = rt();
    for mode in ["session", "transaction"] {
        for ignore_options in [false, true] {
            let case = format!("pool_mode={mode} ignore_options={ignore_options}");
            let Some(bouncer) = PgBouncer::start(&pg, mode, ignore_options, 2) else {
                return;
            };
            let t = target(&bouncer.monitor_url(), &[]);
            rt.block_on(async {
                // Default PgBouncer refused the startup parameter `options` (08P01).
                let conn = t
                    .conn()
                    .await
                    .unwrap_or_else(|e| panic!("{case}: {e}\n{}", bouncer.log()));
                assert!(!conn.direct, "{case}: the pooler went unnoticed");
                // Read-only, whatever the pool mode.
                for sql in ["INSERT INTO scratch VALUES (1)", "CREATE TABLE other (x int)"] {
                    let err = t.simple_query(&conn, sql).await.unwrap_err();
                    assert_eq!(err.sqlstate.as_deref(), Some("25006"), "{case}: {sql}: {err}");
                }
                // statement_timeout (500ms).
                let started = Instant::now();
                let err = t
                    .simple_query(&conn, "SELECT pg_sleep(5)")
                    .await
                    .unwrap_err();
                assert_eq!(err.sqlstate.as_deref(), Some("57014"), "{case}: {err}");
                assert!(started.elapsed() < Duration::from_millis(1500), "{case}");
                // lock_timeout (200ms): a blocked lock wait ends, nothing is left waiting.
                let holder = pg.session("BEGIN; LOCK TABLE scratch IN ACCESS EXCLUSIVE MODE;");
                wait_for(Duration::from_secs(5), || {
                    pg.psql("SELECT count(*) FROM pg_locks WHERE relation = 'scratch'::regclass AND mode = 'AccessExclusiveLock' AND granted") == "1"
                })
                .expect("the lock holder did not start");
                let started = Instant::now();
                let err = t
                    .simple_query(&conn, "SELECT count(*) FROM scratch")
                    .await
                    .unwrap_err();
                assert_eq!(err.sqlstate.as_deref(), Some("55P03"), "{case}: {err}");
                assert!(
                    started.elapsed() < Duration::from_millis(1000),
                    "{case}: lock wait took {:?}",
                    started.elapsed()
                );
                assert_eq!(
                    pg.psql(&format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{MONITOR_USER}' AND wait_event_type = 'Lock'")),
                    "0",
                    "{case}: an abandoned lock wait is left on the server"
                );
                drop(holder);
                // The shared connection still works after every failure (nothing left open).
                let rows = t.simple_query(&conn, "SELECT 1").await.unwrap();
                assert_eq!(rows[0][0].as_deref(), Some("1"), "{case}");
            });
            assert_eq!(pg.psql("SELECT count(*) FROM scratch"), "0", "{case}");
            assert_eq!(
                pg.psql("SELECT count(*) FROM pg_class WHERE relname = 'other'"),
                "0",
                "{case}"
            );
        }
    }
}

#[test]
fn behind_transaction_pooling_no_agent_fakes_leadership_or_blocks_a_direct_one() {
    let pg = PgCluster::start();
    // One server connection: every pooled statement lands on the same backend.
    let Some(bouncer) = PgBouncer::start(&pg, "transaction", false, 1) else {
        return;
    };
    let locks = || {
        pg.psql(&format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = '{}'::oid",
            (DEFAULT_LOCK_KEY as u64) & 0xffff_ffff
        ))
    };
    let rt = rt();
    rt.block_on(async {
        let a = Leadership::new(
            Some(Arc::new(target(&bouncer.monitor_url(), &[]))),
            true,
            DEFAULT_LOCK_KEY,
        );
        let b = Leadership::new(
            Some(Arc::new(target(&bouncer.monitor_url(), &[]))),
            true,
            DEFAULT_LOCK_KEY,
        );
        // No direct agent: each pooled agent runs the database-wide checks itself (no election
        // is possible through the pooler), and none leaves a session lock on the pooled backend.
        assert!(a.renew().await && b.renew().await);
        assert_eq!(
            locks(),
            "0",
            "a pooled agent took a session lock on a shared backend"
        );
        // A direct agent is not kept a follower by a lock left on an idle pooled connection.
        let direct = Arc::new(target(&pg.monitor_url(), &[]));
        let d = Leadership::new(Some(direct.clone()), true, DEFAULT_LOCK_KEY);
        assert!(d.renew().await, "the direct agent could not lead");
        // ... and the pooled agents follow it.
        assert!(!a.renew().await && !b.renew().await, "two leaders at once");
        assert!(d.is_leader());
        // The direct leader's session ends: the pooled agents take over at their next round.
        let generation = direct.current_generation().unwrap();
        direct.invalidate(generation);
        // Let the runtime run the socket task's abort (this thread then blocks in wait_for).
        tokio::time::sleep(Duration::from_millis(200)).await;
        wait_for(Duration::from_secs(5), || locks() == "0").expect("the lock was not freed");
        assert!(a.renew().await, "no one runs the database-wide checks");
    });
}

#[test]
fn orphans_of_network_blips_are_reclaimed_and_the_agent_reconnects_under_connection_limit_3() {
    let pg = PgCluster::start();
    pg.psql_db(
        "postgres",
        &format!("ALTER ROLE {MONITOR_USER} CONNECTION LIMIT 3"),
    );
    let proxy = Proxy::start(pg.port);
    let url = format!(
        "postgresql://{MONITOR_USER}:{MONITOR_PASSWORD}@127.0.0.1:{}/{DBNAME}?sslmode=disable",
        proxy.port
    );
    let agent = Agent::start(&fast_env(url.clone()));
    let up = |a: &Agent| a.metrics().get("rose_pg_up") == Some(1.0);
    wait_for(Duration::from_secs(10), || up(&agent))
        .unwrap_or_else(|| panic!("not up: {}", agent.output()));
    // Three blips, each long enough for the agent to give up on its connection (its queries
    // time out after ~0.5 s): before, each left a backend the server kept for the OS
    // keepalive's two hours, and the third filled the role's limit of 3.
    for blip in 1..=4 {
        proxy.freeze();
        wait_for(Duration::from_secs(10), || {
            agent.metrics().get("rose_pg_up") == Some(0.0)
        })
        .unwrap_or_else(|| panic!("blip {blip}: not noticed: {}", agent.output()));
        std::thread::sleep(Duration::from_secs(2));
        proxy.thaw();
        wait_for(Duration::from_secs(6), || up(&agent)).unwrap_or_else(|| {
            panic!(
                "blip {blip}: no reconnect ({} monitor backends): {}",
                monitor_backends(&pg),
                agent.output()
            )
        });
        // The reconnect terminated the agent's own previous backend.
        wait_for(Duration::from_secs(3), || monitor_backends(&pg) == 1).unwrap_or_else(|| {
            panic!(
                "blip {blip}: {} monitor backends after the reconnect",
                monitor_backends(&pg)
            )
        });
    }
    // An agent that never comes back (killed during a blip): its backend is reclaimed by the
    // server-side liveness settings (idle_session_timeout on 14+, keepalives) within the
    // liveness bound of a 1 s interval (10 s), instead of hours.
    proxy.freeze();
    drop(agent);
    let started = Instant::now();
    let took = wait_for(Duration::from_secs(20), || monitor_backends(&pg) == 0);
    proxy.thaw();
    let took = took.unwrap_or_else(|| {
        panic!(
            "the killed agent's backend was not reclaimed within 20 s: {}",
            pg.psql("SELECT pid, state, backend_start, state_change FROM pg_stat_activity WHERE usename = 'rose_monitor'")
        )
    });
    eprintln!(
        "orphan reclaimed after {:?} (bound 10 s + 1 s)",
        started.elapsed()
    );
    assert!(
        took <= Duration::from_secs(12),
        "reclaimed only after {took:?}"
    );
}

#[test]
fn a_distant_database_connects_at_a_2s_interval() {
    let pg = PgCluster::start();
    let proxy = Proxy::start(pg.port);
    // 200 ms each way: 400 ms round trip.
    proxy.set_delay(Duration::from_millis(200));
    let url = format!(
        "postgresql://{MONITOR_USER}:{MONITOR_PASSWORD}@127.0.0.1:{}/{DBNAME}?sslmode=disable",
        proxy.port
    );
    // The derived 500 ms of before: down every time, and the finding names the setting.
    let short = Agent::start(&[
        ("AGENT_DATABASE_URL", url.clone()),
        ("AGENT_INTERVAL", "2s".into()),
        ("AGENT_CONNECT_TIMEOUT", "500ms".into()),
    ]);
    wait_for(Duration::from_secs(10), || {
        short.get("/findings").1.contains("AGENT_CONNECT_TIMEOUT")
    })
    .unwrap_or_else(|| {
        panic!(
            "no finding naming AGENT_CONNECT_TIMEOUT: {}",
            short.get("/findings").1
        )
    });
    assert_eq!(short.metrics().get("rose_pg_up"), Some(0.0));
    drop(short);
    // The default at a 2 s interval: connected, and it stays connected.
    let agent = Agent::start(&[("AGENT_DATABASE_URL", url), ("AGENT_INTERVAL", "2s".into())]);
    wait_for(Duration::from_secs(12), || {
        agent.metrics().get("rose_pg_up") == Some(1.0)
    })
    .unwrap_or_else(|| panic!("not up: {}", agent.output()));
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            agent.metrics().get("rose_pg_up"),
            Some(1.0),
            "{}",
            agent.output()
        );
    }
}

#[test]
fn every_address_of_a_host_name_is_tried_in_order() {
    let pg = PgCluster::start();
    // 127.0.0.3 on the server's port accepts and never answers (a half-dead HA member).
    let silent = TcpListener::bind(("127.0.0.3", pg.port)).ok();
    let url = format!(
        "postgresql://{MONITOR_USER}:{MONITOR_PASSWORD}@localhost:{}/{DBNAME}?sslmode=disable",
        pg.port
    );
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut order = vec![ip("::1"), ip("127.0.0.2")];
    if silent.is_some() {
        order.push(ip("127.0.0.3"));
    }
    order.push(ip("127.0.0.1"));
    let rt = rt();
    rt.block_on(async {
        // `localhost` -> ::1 first while the server listens on 127.0.0.1 only, then an unused
        // address, then a silent one: the server is still found within the connect timeout.
        let t = target(&url, &[("AGENT_CONNECT_TIMEOUT", "3s")]).with_addresses(order);
        let started = Instant::now();
        let conn = t.conn().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(conn.direct);
        assert!(started.elapsed() < Duration::from_secs(3));
        let rows = t.simple_query(&conn, "SELECT 1").await.unwrap();
        assert_eq!(rows[0][0].as_deref(), Some("1"));
        // None answers: one error naming every address.
        let t = target(&url, &[]).with_addresses(vec![ip("::1"), ip("127.0.0.2")]);
        let Err(e) = t.conn().await else {
            panic!("connected to an address nothing listens on")
        };
        assert!(
            e.message.contains("[::1]") && e.message.contains("127.0.0.2"),
            "{e}"
        );
        assert!(!e.message.contains(MONITOR_PASSWORD));
    });
    drop(silent);
}
