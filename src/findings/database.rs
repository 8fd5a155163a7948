//! Rules over what a working connection shows: slots in use against the usable slots, the app's
//! worst-case pool demand against them, round trip (region), and recent restarts.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Code, Context, Finding, Severity, connections};
use crate::check::{Observation, pg};
use crate::snapshot::Snapshot;

pub(super) fn evaluate(snap: &Snapshot, cx: &Context, now: SystemTime, out: &mut Vec<Finding>) {
    // The budget check's view (plan limits, the instances the database sees) wins over the
    // configuration-only arithmetic when it is there.
    let budget = match snap.observation(crate::check::pg::connection_budget::ID) {
        Some(Observation::PgConnectionBudget(b)) => Some(b),
        _ => None,
    };
    if let Some(Observation::PgConnections(c)) = snap.observation(pg::connections::ID) {
        connections(c, budget, cx, out);
    } else if let Some(b) = budget {
        pool_budget(b.demand, b.slots, b.instances_used, budget, cx, out);
    }
    if let Some(Observation::PgConnectivity(c)) = snap.observation(pg::connectivity::ID) {
        connectivity(c, cx, now, out);
    }
    if let Some(Observation::PgStatements(s)) = snap.observation(pg::statements::ID)
        && s.availability != pg::statements::Availability::Available
    {
        let why = match s.availability {
            pg::statements::Availability::NotInstalled => {
                "the extension is not installed in this database"
            }
            pg::statements::Availability::NotLoaded => {
                "the extension is not in shared_preload_libraries"
            }
            pg::statements::Availability::PermissionDenied => "the monitoring role may not read it",
            pg::statements::Availability::Available => "",
        };
        out.push(Finding::new(
            Code::StatementsUnavailable,
            format!("pg_stat_statements cannot be read at {}", cx.target),
            format!("{why}: slow queries are seen live (pg_stat_activity) but have no per-statement history"),
            vec![
                s.fix.clone().unwrap_or_else(|| "CREATE EXTENSION pg_stat_statements;".into()),
                "Optional: the guide's checks work without it; it adds which statements cost the most over time".into(),
            ],
        ));
    }
}

/// Usable slots for ordinary roles: `max_connections - superuser_reserved_connections -
/// reserved_connections` (16+).
pub(crate) fn usable_slots(c: &pg::connections::Connections) -> u32 {
    c.slots()
}

/// Worst-case connections of the app fleet plus the agent.
pub(crate) fn pool_demand(cx: &Context) -> u32 {
    cx.instances * (cx.pool_size + cx.max_overflow + cx.checkpointer_pool_max_size.unwrap_or(0)) + 1
}

/// A pool size and overflow per instance that fit `slots` (keeping the app's 1:2 ratio).
pub(crate) fn suggested_pool(slots: u32, instances: u32) -> (u32, u32) {
    let per_instance = slots.saturating_sub(1) / instances.max(1);
    let pool = (per_instance / 3).max(1);
    (pool, per_instance.saturating_sub(pool))
}

fn connections(
    c: &pg::connections::Connections,
    budget: Option<&crate::check::pg::connection_budget::Budget>,
    cx: &Context,
    out: &mut Vec<Finding>,
) {
    let slots = usable_slots(c);
    let used = c.total();
    let t = &cx.target;
    if slots > 0 && f64::from(used) >= cx.connections_warn_ratio * f64::from(slots) {
        let full = used >= slots;
        out.push(
            Finding::new(
                Code::ConnectionsNearLimit,
                format!("{used} of {slots} usable connection slots in use at {t}"),
                format!(
                    "{used} client connections vs {slots} usable slots (max_connections {} - superuser_reserved_connections {}); threshold {:.0}%",
                    c.max_connections,
                    c.superuser_reserved,
                    cx.connections_warn_ratio * 100.0
                ),
                vec![
                    format!("Reduce DATABASE_POOL_SIZE (now {}) or DATABASE_MAX_OVERFLOW (now {})", cx.pool_size, cx.max_overflow),
                    "Look for idle sessions holding slots: SELECT application_name, client_addr, state, count(*) FROM pg_stat_activity GROUP BY 1, 2, 3 ORDER BY 4 DESC".into(),
                    "Upgrade the database plan (Railway Starter 22, Pro 97 connections) or add PgBouncer".into(),
                ],
            )
            .with_severity(if full { Severity::Critical } else { Severity::Warning }),
        );
    }
    let (budget_slots, instances) =
        budget.map_or((slots, cx.instances), |b| (b.slots, b.instances_used));
    connections::role_limit_tight(c, cx, out);
    connections::app_over_model(c, budget_slots.min(slots), instances, cx, out);
    match budget {
        Some(b) => pool_budget(b.demand, b.slots, b.instances_used, budget, cx, out),
        None => pool_budget(pool_demand(cx), slots, cx.instances, None, cx, out),
    }
}

fn pool_budget(
    demand: u32,
    slots: u32,
    instances: u32,
    budget: Option<&crate::check::pg::connection_budget::Budget>,
    cx: &Context,
    out: &mut Vec<Finding>,
) {
    if slots == 0 || demand <= slots {
        return;
    }
    let t = &cx.target;
    let cp = cx.checkpointer_pool_max_size.unwrap_or(0);
    let (pool, overflow, cp_target) = if cp == 0 {
        let (p, o) = suggested_pool(slots, instances);
        (p, o, 0)
    } else {
        let t = connections::pool_targets(
            slots.saturating_sub(1) / instances.max(1),
            cx.pool_size,
            cx.max_overflow,
            cp,
        );
        (t.pool_size, t.max_overflow, t.checkpointer_max_size)
    };
    let cp_step = if cp > 0 {
        format!(
            " and the checkpointer pool's max_size to {cp_target} (AGENT_CHECKPOINTER_POOL_MAX_SIZE, now {cp})"
        )
    } else {
        String::new()
    };
    let seen = match budget {
        Some(b) if b.instances_disagree => format!(
            "; the database sees {} app instance(s) while AGENT_APP_INSTANCES says {}: the larger counts",
            b.observed_instances, b.instances
        ),
        _ => String::new(),
    };
    out.push(Finding::new(
        Code::PoolBudgetExceeded,
        format!("Worst-case pool demand {demand} exceeds {slots} connection slots"),
        format!(
            "pool demand {demand} = {instances} instance(s) x (DATABASE_POOL_SIZE {} + DATABASE_MAX_OVERFLOW {}{}) + 1 agent > {slots} usable slots at {t}{seen}",
            cx.pool_size,
            cx.max_overflow,
            cx.checkpointer_pool_max_size.map(|n| format!(" + checkpointer pool {n}")).unwrap_or_default()
        ),
        vec![
            format!("pool demand {demand} > {slots} slots: lower DATABASE_POOL_SIZE to {pool} and DATABASE_MAX_OVERFLOW to {overflow}{cp_step} (per instance, {instances} instance(s))"),
            "Or upgrade the database plan for more connections (Railway Starter 22, Pro 97)".into(),
            "Or put PgBouncer in front of PostgreSQL so the pools share fewer server connections".into(),
        ],
    ));
}

fn connectivity(
    c: &pg::connectivity::Connectivity,
    cx: &Context,
    now: SystemTime,
    out: &mut Vec<Finding>,
) {
    if c.roundtrip_seconds > cx.region_latency_seconds {
        out.push(Finding::new(
            Code::RegionLatency,
            format!("Round trip to {} takes {:.0} ms", cx.target, c.roundtrip_seconds * 1000.0),
            format!(
                "round trip {:.1} ms > {:.0} ms threshold",
                c.roundtrip_seconds * 1000.0,
                cx.region_latency_seconds * 1000.0
            ),
            vec![
                "Check database region (should match app region): same provider region for the app service and the database".into(),
                "Use the provider's private network address when app and database share a project".into(),
            ],
        ));
    }
    if c.in_recovery {
        let src = cx.dsn_source;
        out.push(Finding::new(
            Code::ConnectedToStandby,
            format!("PostgreSQL at {} is a standby (in recovery): the app cannot write there", cx.target),
            format!(
                "pg_is_in_recovery() is true on the server {src} points at; LangGraph checkpoint writes fail with SQLSTATE 25006 (read-only transaction)"
            ),
            vec![
                format!("Point DATABASE_URL (and {src}) at the primary: after a failover the primary has another address (Railway: the database service's current DATABASE_URL)"),
                "If this standby should become the primary, promote it (`SELECT pg_promote();` or the provider's failover) and check the old primary is fenced".into(),
                "Check the app's logs for `cannot execute INSERT in a read-only transaction`: every checkpoint write since the switch was lost".into(),
                "To watch a standby on purpose, set it as DATABASE_READ_REPLICA_URL instead".into(),
            ],
        ));
    }
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let age = now_s - c.postmaster_start_time_seconds;
    // Only a restart the agent saw happen (the start time moved while it watched): a young
    // cluster, or an agent started after the restart, is no evidence of one.
    if c.previous_start_time_seconds.is_some()
        && c.postmaster_start_time_seconds > 0.0
        && (0.0..cx.restart_window_seconds).contains(&age)
    {
        out.push(Finding::new(
            Code::DatabaseRestarted,
            format!("PostgreSQL at {} restarted {:.0} s ago", cx.target, age),
            format!(
                "pg_postmaster_start_time moved while the agent watched ({} restart(s) seen); the server started {:.0} s ago (window {:.0} s)",
                c.restarts_observed, age, cx.restart_window_seconds
            ),
            vec![
                "Verify the app reconnected: check its health endpoint and error logs".into(),
                "Check the provider's status page and the server log for the cause (deploy, crash, OOM)".into(),
                "Test failover: the app should handle database restarts (guide, Next Steps)".into(),
            ],
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::findings::testutil::snap;

    fn conns(max: u32, reserved: u32, active: u32, idle: u32) -> Observation {
        let mut by_state = BTreeMap::new();
        by_state.insert("active".to_owned(), active);
        by_state.insert("idle".to_owned(), idle);
        Observation::PgConnections(pg::connections::Connections {
            max_connections: max,
            superuser_reserved: reserved,
            by_state,
            reserved: None,
            by_application: Default::default(),
            by_user: Default::default(),
            waiting_on_locks: 0,
            role: "rose_monitor".into(),
            role_connection_limit: None,
            role_sessions: 1,
            agent_sessions: 1,
            clients: vec![],
        })
    }

    fn codes(
        obs: Observation,
        id: &'static str,
        cx: &Context,
        now: SystemTime,
    ) -> Vec<(&'static str, Severity)> {
        let mut out = vec![];
        evaluate(&snap(vec![(id, Ok(obs))]), cx, now, &mut out);
        out.into_iter().map(|f| (f.code, f.severity)).collect()
    }

    #[test]
    fn connection_thresholds() {
        let cx = Context {
            pool_size: 2,
            max_overflow: 2,
            // Sessions of other roles (by_user is empty here): not the app's.
            app_role: Some("rose_app".into()),
            ..Context::default()
        };
        let now = SystemTime::now();
        for (max, reserved, active, idle, want) in [
            (100, 3, 10, 10, vec![]),
            (
                100,
                3,
                40,
                38,
                vec![("connections_near_limit", Severity::Warning)],
            ),
            (
                25,
                3,
                12,
                10,
                vec![("connections_near_limit", Severity::Critical)],
            ),
        ] {
            assert_eq!(
                codes(
                    conns(max, reserved, active, idle),
                    pg::connections::ID,
                    &cx,
                    now
                ),
                want,
                "{max} {active} {idle}"
            );
        }
    }

    #[test]
    fn pool_budget_on_the_starter_plan() {
        // Railway Starter: 22 connections; 3 instances x (10 + 20) + 1 = 91.
        let cx = Context {
            instances: 3,
            ..Context::default()
        };
        let mut out = vec![];
        evaluate(
            &snap(vec![(pg::connections::ID, Ok(conns(22, 0, 1, 0)))]),
            &cx,
            SystemTime::now(),
            &mut out,
        );
        let f = out
            .iter()
            .find(|f| f.code == "pool_budget_exceeded")
            .unwrap();
        assert!(f.steps[0].starts_with("pool demand 91 > 22 slots: lower DATABASE_POOL_SIZE to 2 and DATABASE_MAX_OVERFLOW to 5"), "{}", f.steps[0]);
        let (p, o) = suggested_pool(22, 3);
        assert!(3 * (p + o) < 22);
    }

    #[test]
    fn region_latency_and_restart() {
        let start = 1_700_000_000.0;
        let seen = |rtt: f64, previous: Option<f64>| {
            Observation::PgConnectivity(pg::connectivity::Connectivity {
                target: "t".into(),
                roundtrip_seconds: rtt,
                connect_seconds: 0.01,
                server_version_num: 150000,
                server_version: "15.0".into(),
                postmaster_start_time_seconds: start,
                in_recovery: false,
                restarts_observed: u64::from(previous.is_some()),
                previous_start_time_seconds: previous,
                batch_fallbacks: vec![],
                batch_prepares: 0,
            })
        };
        let obs = |rtt: f64| seen(rtt, Some(start - 3600.0));
        let cx = Context::default();
        let long_after = UNIX_EPOCH + Duration::from_secs_f64(start + 86_400.0);
        let just_after = UNIX_EPOCH + Duration::from_secs_f64(start + 60.0);
        assert_eq!(
            codes(obs(0.001), pg::connectivity::ID, &cx, long_after),
            vec![]
        );
        assert_eq!(
            codes(obs(0.080), pg::connectivity::ID, &cx, long_after),
            vec![("region_latency", Severity::Warning)]
        );
        assert_eq!(
            codes(obs(0.001), pg::connectivity::ID, &cx, just_after),
            vec![("database_restarted", Severity::Warning)]
        );
        // A cluster that is merely young (the agent never saw another start time) did not
        // restart as far as anyone knows (issue 13 item 3).
        assert_eq!(
            codes(seen(0.001, None), pg::connectivity::ID, &cx, just_after),
            vec![]
        );
    }

    #[test]
    fn a_standby_behind_the_primary_dsn_is_critical() {
        let o = Observation::PgConnectivity(pg::connectivity::Connectivity {
            target: "db:5432/rose".into(),
            roundtrip_seconds: 0.001,
            connect_seconds: 0.01,
            server_version_num: 150000,
            server_version: "15.0".into(),
            postmaster_start_time_seconds: 1.0,
            in_recovery: true,
            restarts_observed: 0,
            previous_start_time_seconds: None,
            batch_fallbacks: vec![],
            batch_prepares: 0,
        });
        let mut out = vec![];
        evaluate(
            &snap(vec![(pg::connectivity::ID, Ok(o))]),
            &Context::default(),
            SystemTime::now(),
            &mut out,
        );
        let f = out
            .iter()
            .find(|f| f.code == "connected_to_standby")
            .unwrap_or_else(|| panic!("{out:?}"));
        assert_eq!(f.severity, Severity::Critical);
        assert!(f.steps.iter().any(|s| s.contains("pg_promote()")), "{f:?}");
        assert!(
            f.steps
                .iter()
                .any(|s| s.contains("DATABASE_READ_REPLICA_URL")),
            "{f:?}"
        );
    }
}
