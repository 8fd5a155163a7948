//! Who holds the connections, against which budget, and which limit refuses a new one
//! (issue 13 items 5 and 6). Pure over a `pg_connections` observation (the last good one when
//! the connection itself fails) and the configuration:
//!
//! - SQLSTATE 53300 is the same for the server's `max_connections` and a role's `CONNECTION
//!   LIMIT`; the role's limit and the sessions it held tell them apart, never the message text.
//! - The app's connections are attributed by role (the user of `DATABASE_URL`) or, without it,
//!   as every session that is not an agent's; when they exceed the modelled worst case
//!   (instances x (pool + overflow + checkpointer pool)) a pool the model does not count is
//!   named, with a target number for each knob.

use super::{Code, Context, Finding, Severity};
use crate::check::pg::connections::{ClientGroup, Connections};

/// Connections kept free on the monitoring role for `agent diagnose` or the new pod of a
/// rolling update.
pub(crate) const ROLE_HEADROOM: u32 = 1;

/// Which limit refused (or will refuse) a new session of the monitoring role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The role's `CONNECTION LIMIT`.
    Role,
    /// The server's usable slots.
    Server,
    /// No facts to tell (never connected, or both were at their edge).
    Unknown,
}

/// Pure: which limit a refused session most likely hit, from the last good observation.
pub(crate) fn refusing_limit(c: Option<&Connections>) -> Limit {
    let Some(c) = c else { return Limit::Unknown };
    let server_full = c.total() + 1 >= c.slots();
    let role_full = c
        .role_connection_limit
        .is_some_and(|l| c.role_sessions + 1 > l);
    match (role_full, server_full) {
        (true, false) => Limit::Role,
        (false, true) => Limit::Server,
        // The role has a limit and the server had room: the role's limit is the one in reach.
        (false, false) if c.role_connection_limit.is_some() => Limit::Role,
        (false, false) => Limit::Server,
        (true, true) => Limit::Unknown,
    }
}

/// Pure: the monitoring role's sessions as text, e.g. `3 of its CONNECTION LIMIT 3 (2 agents)`.
fn role_usage(c: &Connections, limit: u32) -> String {
    format!(
        "the role {} holds {} of its CONNECTION LIMIT {limit} ({} agent session(s) of any role on the server)",
        c.role, c.role_sessions, c.agent_sessions
    )
}

/// The steps for a monitoring role at its limit.
fn role_steps(c: &Connections, limit: u32) -> Vec<String> {
    let needed = c.role_sessions.max(c.agent_sessions) + ROLE_HEADROOM + 1;
    vec![
        format!(
            "Raise the monitoring role's limit (one per agent, plus one for `agent diagnose` and one for a rolling update): ALTER ROLE {} CONNECTION LIMIT {};",
            c.role,
            needed.max(limit + 1)
        ),
        format!(
            "Look for sessions the role left behind (a network blip orphans them until TCP keepalive): SELECT pid, application_name, client_addr, backend_start, state_change FROM pg_stat_activity WHERE usename = '{}' ORDER BY backend_start; end stale ones with SELECT pg_terminate_backend(pid);",
            c.role
        ),
        "Check nothing else logs in as the monitoring role (a second exporter, a dashboard): give each tool its own role".into(),
        "The app is not affected: its pool uses another role and the server still has free slots".into(),
    ]
}

/// The finding for a session refused by the monitoring role's own `CONNECTION LIMIT`.
pub(crate) fn role_limit_refused(c: &Connections, cx: &Context, message: &str) -> Finding {
    let limit = c.role_connection_limit.unwrap_or(0);
    Finding::new(
        Code::RoleConnectionLimit,
        format!(
            "The monitoring role {} is at its CONNECTION LIMIT {limit}: the agent cannot connect to {}",
            c.role, cx.target
        ),
        format!(
            "{}: {message}; at the last good check {} while the server had {} of {} usable slots in use",
            cx.target,
            role_usage(c, limit),
            c.total(),
            c.slots()
        ),
        role_steps(c, limit),
    )
    .with_severity(Severity::Critical)
}

/// Pure: a warning before the role's limit refuses `agent diagnose` or a new agent.
pub(crate) fn role_limit_tight(c: &Connections, cx: &Context, out: &mut Vec<Finding>) {
    let Some(limit) = c.role_connection_limit else {
        return;
    };
    if c.role_sessions + ROLE_HEADROOM <= limit {
        return;
    }
    out.push(Finding::new(
        Code::RoleConnectionLimit,
        format!(
            "The monitoring role {} has no connection to spare under its CONNECTION LIMIT {limit}",
            c.role
        ),
        format!(
            "{}: {}; `agent diagnose`, a rolling update's new agent or another tool on the role will be refused (SQLSTATE 53300)",
            cx.target,
            role_usage(c, limit)
        ),
        role_steps(c, limit),
    ));
}

/// Pure: the sessions attributed to the app: its role's when known, else every session that
/// is not an agent's or the monitoring role's.
pub(crate) fn app_sessions(c: &Connections, cx: &Context) -> u32 {
    if let Some(role) = cx.app_role.as_deref()
        && role != c.role
    {
        // Top N roles by sessions: a role not among them holds few.
        return c.by_user.get(role).copied().unwrap_or(0);
    }
    let monitor = if cx.app_role.as_deref() == Some(c.role.as_str()) {
        0
    } else {
        c.role_sessions.saturating_sub(c.agent_sessions)
    };
    c.total()
        .saturating_sub(c.agent_sessions)
        .saturating_sub(monitor)
}

/// Pure: who holds the connections, largest first, e.g. `rose-langgraph (rose_app from
/// 10.0.0.5) 36; rose-agent (rose_monitor from 10.0.0.6) 1`.
pub(crate) fn holders(c: &Connections) -> String {
    let name = |g: &ClientGroup| {
        if g.application.is_empty() {
            "(no application_name)".to_owned()
        } else {
            g.application.clone()
        }
    };
    c.clients
        .iter()
        .map(|g| {
            format!(
                "{} ({} from {}) {}",
                name(g),
                if g.role.is_empty() { "?" } else { &g.role },
                g.address,
                g.sessions
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Target sizes per app instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Targets {
    pub(crate) pool_size: u32,
    pub(crate) max_overflow: u32,
    pub(crate) checkpointer_max_size: u32,
}

/// Pure: sizes per instance that fit `per_instance` connections, keeping the proportions of
/// the current sizes (the checkpointer pool at least 1; the SQLAlchemy pool split 1:2 between
/// `pool_size` and `max_overflow`, as the app's defaults 10/20).
pub(crate) fn pool_targets(
    per_instance: u32,
    pool: u32,
    overflow: u32,
    checkpointer: u32,
) -> Targets {
    let now = pool + overflow + checkpointer;
    if now <= per_instance {
        return Targets {
            pool_size: pool,
            max_overflow: overflow,
            checkpointer_max_size: checkpointer,
        };
    }
    let cp = if checkpointer == 0 {
        0
    } else {
        ((u64::from(checkpointer) * u64::from(per_instance) / u64::from(now.max(1))) as u32).max(1)
    };
    let rest = per_instance.saturating_sub(cp).max(1);
    let pool_size = (rest / 3).max(1);
    Targets {
        pool_size,
        max_overflow: rest.saturating_sub(pool_size),
        checkpointer_max_size: cp,
    }
}

/// The steps that size every pool to fit `slots`, given what holds the connections now.
pub(crate) fn sizing_steps(
    c: &Connections,
    slots: u32,
    instances: u32,
    cx: &Context,
) -> Vec<String> {
    let app = app_sessions(c, cx);
    let others = c
        .total()
        .saturating_sub(app)
        .saturating_sub(c.agent_sessions);
    let per_instance = slots
        .saturating_sub(c.agent_sessions.max(1))
        .saturating_sub(others)
        / instances.max(1);
    let sqlalchemy = cx.pool_size + cx.max_overflow;
    // A pool the model does not count (no AGENT_CHECKPOINTER_POOL_MAX_SIZE): what the app holds
    // beyond its SQLAlchemy pools, per instance.
    let checkpointer = cx
        .checkpointer_pool_max_size
        .unwrap_or_else(|| app.saturating_sub(instances * sqlalchemy) / instances.max(1));
    let t = pool_targets(per_instance, cx.pool_size, cx.max_overflow, checkpointer);
    let mut steps = vec![format!(
        "Per app instance ({instances}) {per_instance} connection(s) fit ({slots} usable slots - {} agent(s) - {others} other session(s)): set DATABASE_POOL_SIZE={} (now {}) and DATABASE_MAX_OVERFLOW={} (now {})",
        c.agent_sessions.max(1),
        t.pool_size,
        cx.pool_size,
        t.max_overflow,
        cx.max_overflow
    )];
    if checkpointer > 0 {
        steps.push(format!(
            "Size the checkpointer's psycopg pool (AsyncPostgresSaver's AsyncConnectionPool) to max_size={} per instance (now {}{}) and set AGENT_CHECKPOINTER_POOL_MAX_SIZE={} so the budget counts it",
            t.checkpointer_max_size,
            checkpointer,
            if cx.checkpointer_pool_max_size.is_some() { "" } else { ", observed: not in AGENT_CHECKPOINTER_POOL_MAX_SIZE" },
            t.checkpointer_max_size
        ));
    }
    steps.push("Or upgrade the database plan for more connections (Railway Starter 22, Pro 97), or put PgBouncer (transaction pooling) between the app and PostgreSQL".into());
    steps
}

/// Pure: the app holds more connections than its modelled worst case.
pub(crate) fn app_over_model(
    c: &Connections,
    slots: u32,
    instances: u32,
    cx: &Context,
    out: &mut Vec<Finding>,
) {
    let app = app_sessions(c, cx);
    let per_instance = cx.pool_size + cx.max_overflow + cx.checkpointer_pool_max_size.unwrap_or(0);
    let model = instances.saturating_mul(per_instance);
    if app <= model {
        return;
    }
    let who = match cx.app_role.as_deref() {
        Some(r) => format!("the app's role {r}"),
        None => "sessions other than the agents'".to_owned(),
    };
    out.push(Finding::new(
        Code::AppConnectionsOverModel,
        format!("The app holds {app} connections, more than its modelled worst case {model}"),
        format!(
            "{app} connection(s) of {who} > {instances} instance(s) x (DATABASE_POOL_SIZE {} + DATABASE_MAX_OVERFLOW {} + checkpointer pool {}) = {model} at {}; holders: {}",
            cx.pool_size,
            cx.max_overflow,
            cx.checkpointer_pool_max_size.map_or("not counted".into(), |n| n.to_string()),
            cx.target,
            holders(c)
        ),
        sizing_steps(c, slots, instances, cx),
    ));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn conns(total_idle: u32, role_limit: Option<u32>, role_sessions: u32) -> Connections {
        Connections {
            max_connections: 40,
            superuser_reserved: 3,
            reserved: None,
            by_state: BTreeMap::from([("idle".to_owned(), total_idle)]),
            by_application: BTreeMap::new(),
            by_user: BTreeMap::from([("rose_app".to_owned(), total_idle.saturating_sub(1))]),
            waiting_on_locks: 0,
            role: "rose_monitor".into(),
            role_connection_limit: role_limit,
            role_sessions,
            agent_sessions: role_sessions,
            clients: vec![
                ClientGroup {
                    application: "rose-langgraph".into(),
                    role: "rose_app".into(),
                    address: "127.0.0.1".into(),
                    sessions: total_idle.saturating_sub(1),
                },
                ClientGroup {
                    application: "rose-agent".into(),
                    role: "rose_monitor".into(),
                    address: "127.0.0.1".into(),
                    sessions: 1,
                },
            ],
        }
    }

    #[test]
    fn the_role_limit_is_told_from_the_server_limit_by_facts() {
        assert_eq!(refusing_limit(None), Limit::Unknown);
        // The role held 3 of 3 while the server had room.
        assert_eq!(refusing_limit(Some(&conns(5, Some(3), 3))), Limit::Role);
        // The server was full, the role had room.
        assert_eq!(refusing_limit(Some(&conns(37, Some(3), 1))), Limit::Server);
        // No role limit: the server.
        assert_eq!(refusing_limit(Some(&conns(37, None, 1))), Limit::Server);
        // Both at their edge: cannot tell.
        assert_eq!(refusing_limit(Some(&conns(37, Some(1), 1))), Limit::Unknown);
    }

    #[test]
    fn a_role_at_its_limit_gets_the_alter_role_never_the_apps_pool() {
        let cx = Context::default();
        let f = role_limit_refused(&conns(5, Some(3), 3), &cx, "53300");
        assert_eq!(
            (f.code, f.severity),
            ("role_connection_limit", Severity::Critical)
        );
        assert!(
            f.steps[0].contains("ALTER ROLE rose_monitor CONNECTION LIMIT 5;"),
            "{:?}",
            f.steps
        );
        assert!(
            f.steps.iter().all(|s| !s.contains("DATABASE_POOL_SIZE")),
            "{:?}",
            f.steps
        );
        let mut out = vec![];
        role_limit_tight(&conns(5, Some(3), 3), &cx, &mut out);
        assert_eq!(out[0].severity, Severity::Warning);
        let mut out = vec![];
        role_limit_tight(&conns(5, Some(3), 2), &cx, &mut out);
        assert!(out.is_empty(), "two agents leave one for diagnose: {out:?}");
    }

    #[test]
    fn connections_beyond_the_model_name_the_holder_and_every_knob() {
        // The case: 36 of 37 connections from the checkpointer pool, model 30.
        let cx = Context {
            app_role: Some("rose_app".into()),
            ..Context::default()
        };
        let c = conns(37, None, 1);
        let mut out = vec![];
        app_over_model(&c, c.slots(), 1, &cx, &mut out);
        let f = &out[0];
        assert_eq!(f.code, "app_connections_over_model");
        assert!(
            f.summary
                .contains("36 connections, more than its modelled worst case 30"),
            "{}",
            f.summary
        );
        assert!(
            f.evidence
                .contains("rose-langgraph (rose_app from 127.0.0.1) 36"),
            "{}",
            f.evidence
        );
        // 37 usable slots - 1 agent = 36 per instance; the SQLAlchemy pools (30) plus the
        // unmodelled 6 = 36: fits, so the sizes stay and the checkpointer gets counted.
        assert!(f.steps[0].contains("36 connection(s) fit"), "{:?}", f.steps);
        assert!(f.steps[1].contains("max_size=6"), "{:?}", f.steps);
        assert!(
            f.steps[1].contains("AGENT_CHECKPOINTER_POOL_MAX_SIZE=6"),
            "{:?}",
            f.steps
        );
        // Within the model: nothing.
        let mut out = vec![];
        app_over_model(&conns(20, None, 1), 37, 1, &cx, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn targets_fit_and_keep_proportions() {
        let t = pool_targets(19, 10, 20, 4);
        assert!(
            t.pool_size + t.max_overflow + t.checkpointer_max_size <= 19,
            "{t:?}"
        );
        assert_eq!(t.checkpointer_max_size, 2);
        assert_eq!((t.pool_size, t.max_overflow), (5, 12));
        let t = pool_targets(100, 10, 20, 4);
        assert_eq!(
            (t.pool_size, t.max_overflow, t.checkpointer_max_size),
            (10, 20, 4)
        );
        let t = pool_targets(0, 10, 20, 0);
        assert_eq!(
            (t.pool_size, t.max_overflow, t.checkpointer_max_size),
            (1, 0, 0)
        );
    }
}
