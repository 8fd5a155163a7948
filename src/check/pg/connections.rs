//! Check `pg_connections`: client backends by state, by application_name and by role (top N,
//! the rest summed as `other`, so labels stay bounded), those waiting on locks, and the slot
//! settings (`max_connections`, `superuser_reserved_connections`, `reserved_connections` on 16+)
//! with the utilization of the slots ordinary roles can use. One statement over the client
//! sessions (`pg_stat_get_activity`, one row per backend: cost grows with sessions, never with
//! tables), counted by group in SQL and summed per label here ([`from_raw`]).
//! The four states an app cares about are always exported (0 when absent) so their series
//! never vanish.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::util::{self, label_text};
use crate::catalog::{self, Sample};
use crate::check::{BoxFuture, Check, Observation};
use crate::error::CheckError;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_CONNECTIONS;

/// `reserved_connections` is read with `missing_ok`: NULL before PostgreSQL 16 (feature
/// detection, no version gate needed). The sessions arrive counted by group
/// ([`util::session_groups_cte`]); [`from_raw`] sums them by state, application, role and client.
const SQL: &str = concat!(
    "WITH ",
    util::client_sessions_cte!(),
    ", ",
    util::session_groups_cte!(),
    " SELECT json_build_object(\
     'role', current_user, \
     'role_connection_limit', (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user), \
     'max_connections', current_setting('max_connections')::int, \
     'superuser_reserved', current_setting('superuser_reserved_connections')::int, \
     'reserved', current_setting('reserved_connections', true)::int, \
     'groups', (SELECT coalesce(json_agg(json_build_object('state', state, 'application', application_name, \
        'user', usename, 'address', address, 'lock', lock, 'sessions', n)), '[]') FROM g))::text"
);

/// States always exported, as label values.
pub(crate) const BASE_STATES: [&str; 4] = [
    "active",
    "idle",
    "idle_in_transaction",
    "idle_in_transaction_aborted",
];

/// The label value for everything past the top N.
pub(crate) const OTHER: &str = "other";

/// What one run saw: client backends only (no background workers, no WAL senders).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connections {
    pub(crate) max_connections: u32,
    pub(crate) superuser_reserved: u32,
    /// `reserved_connections` (PostgreSQL 16+); `None` before.
    pub(crate) reserved: Option<u32>,
    /// Client backends by state label (see [`state_label`]).
    pub(crate) by_state: BTreeMap<String, u32>,
    /// Client backends by application_name, top N plus `other` (label-safe values).
    pub by_application: BTreeMap<String, u32>,
    /// Client backends by role, top N plus `other`.
    pub(crate) by_user: BTreeMap<String, u32>,
    /// Client backends waiting on a heavyweight lock.
    pub waiting_on_locks: u32,
    /// The monitoring role, its `CONNECTION LIMIT` (`None`: unlimited) and its sessions.
    pub(crate) role: String,
    pub(crate) role_connection_limit: Option<u32>,
    pub(crate) role_sessions: u32,
    /// Sessions of agents (`application_name` rose-agent...), of any role.
    pub(crate) agent_sessions: u32,
    /// Who holds the connections: the largest groups by application, role and client address
    /// (at most [`MAX_CLIENT_GROUPS`]; in the snapshot, never in labels).
    pub(crate) clients: Vec<ClientGroup>,
}

/// Client groups kept in the observation.
pub(crate) const MAX_CLIENT_GROUPS: usize = 10;

/// Sessions of one (application_name, role, client address).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientGroup {
    pub(crate) application: String,
    pub(crate) role: String,
    pub(crate) address: String,
    pub(crate) sessions: u32,
}

impl ClientGroup {}

impl Connections {
    pub fn total(&self) -> u32 {
        self.by_state.values().sum()
    }

    /// Slots ordinary (non-superuser, non-reserved) roles can use.
    pub fn slots(&self) -> u32 {
        self.max_connections
            .saturating_sub(self.superuser_reserved)
            .saturating_sub(self.reserved.unwrap_or(0))
    }

    /// Client backends over [`Connections::slots`]; `None` with no slots at all.
    pub(crate) fn utilization(&self) -> Option<f64> {
        (self.slots() > 0).then(|| f64::from(self.total()) / f64::from(self.slots()))
    }
}

/// Maps a `pg_stat_activity.state` to a bounded label value.
pub(crate) fn state_label(state: &str) -> &'static str {
    match state {
        "active" => "active",
        "idle" => "idle",
        "idle in transaction" => "idle_in_transaction",
        "idle in transaction (aborted)" => "idle_in_transaction_aborted",
        "fastpath function call" => "fastpath_function_call",
        "disabled" => "disabled",
        _ => "unknown",
    }
}

pub(crate) struct ConnectionsCheck {
    pg: Arc<PgTarget>,
    top_n: usize,
}

impl ConnectionsCheck {
    pub(crate) fn with_top_n(pg: Arc<PgTarget>, top_n: u32) -> Self {
        ConnectionsCheck {
            pg,
            top_n: top_n as usize,
        }
    }
}

impl Check for ConnectionsCheck {
    fn id(&self) -> &str {
        ID
    }
    fn timeout(&self) -> Duration {
        util::timeout(&self.pg, 1)
    }
    fn target(&self) -> crate::check::CheckTarget {
        self.pg.check_target()
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            let raw: Raw = util::json_query(&self.pg, &conn, SQL, "connections").await?;
            Ok(Observation::PgConnections(from_raw(raw, self.top_n)))
        })
    }
}

/// The statement's document.
#[derive(Debug, Deserialize)]
pub struct Raw {
    pub(crate) max_connections: u32,
    pub(crate) superuser_reserved: u32,
    pub(crate) reserved: Option<u32>,
    #[serde(default)]
    pub(crate) role: String,
    #[serde(default)]
    pub(crate) role_connection_limit: Option<i64>,
    /// Client sessions counted by (state, application, role, address, waiting on a lock).
    #[serde(default)]
    pub(crate) groups: Vec<SessionGroup>,
}

/// Client sessions alike in what the check tells apart; `None` where the server shows NULL
/// (a state hidden from the role, a session without `application_name`, a socket client).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SessionGroup {
    #[serde(default)]
    pub(crate) state: Option<String>,
    #[serde(default)]
    pub(crate) application: Option<String>,
    #[serde(default)]
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) address: Option<String>,
    #[serde(default)]
    pub(crate) lock: bool,
    pub(crate) sessions: u32,
}

/// Pure: the observation from the statement's document.
pub fn from_raw(raw: Raw, top_n: usize) -> Connections {
    let mut by_state = BTreeMap::new();
    let mut by_application = BTreeMap::new();
    let mut by_user = BTreeMap::new();
    let mut clients: BTreeMap<(String, String, String), u32> = BTreeMap::new();
    let (mut waiting_on_locks, mut role_sessions, mut agent_sessions) = (0u32, 0u32, 0u32);
    for g in &raw.groups {
        let n = g.sessions;
        let app = g.application.clone().unwrap_or_default();
        let user = g.user.clone().unwrap_or_default();
        let state = state_label(g.state.as_deref().unwrap_or("unknown"));
        add(&mut by_state, state.to_owned(), n);
        add(&mut by_application, app.clone(), n);
        add(&mut by_user, user.clone(), n);
        let address = g.address.clone().unwrap_or_else(|| "local".to_owned());
        add(&mut clients, (app.clone(), user.clone(), address), n);
        if g.lock {
            waiting_on_locks = waiting_on_locks.saturating_add(n);
        }
        if g.user.as_deref() == Some(raw.role.as_str()) {
            role_sessions = role_sessions.saturating_add(n);
        }
        if app.starts_with("rose-agent") {
            agent_sessions = agent_sessions.saturating_add(n);
        }
    }
    let mut clients: Vec<ClientGroup> = clients
        .into_iter()
        .map(|((application, role, address), sessions)| ClientGroup {
            application,
            role,
            address,
            sessions,
        })
        .collect();
    // The largest first; ties by application, role, address (the map's order, kept by the
    // stable sort).
    clients.sort_by_key(|g| std::cmp::Reverse(g.sessions));
    clients.truncate(MAX_CLIENT_GROUPS);
    Connections {
        max_connections: raw.max_connections,
        superuser_reserved: raw.superuser_reserved,
        reserved: raw.reserved,
        by_state,
        by_application: top_n_other(by_application, top_n, "unset"),
        by_user: top_n_other(by_user, top_n, "unset"),
        waiting_on_locks,
        role: raw.role,
        role_connection_limit: raw
            .role_connection_limit
            .filter(|n| *n >= 0)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        role_sessions,
        agent_sessions,
        clients,
    }
}

/// Adds `n` to `key`'s count (saturating: counts come from the server's document).
fn add<K: Ord>(map: &mut BTreeMap<K, u32>, key: K, n: u32) {
    let c = map.entry(key).or_insert(0);
    *c = c.saturating_add(n);
}

/// Pure: keeps the `n` largest counts (ties broken by name) under label-safe names and sums the
/// rest as `other`. Names that collide after sanitizing are added together.
pub(crate) fn top_n_other(
    counts: BTreeMap<String, u32>,
    n: usize,
    empty: &str,
) -> BTreeMap<String, u32> {
    let mut v: Vec<(String, u32)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = BTreeMap::new();
    for (i, (name, count)) in v.into_iter().enumerate() {
        let mut key = label_text(&name, empty);
        if i >= n || key == OTHER {
            key = OTHER.to_owned();
        }
        add(&mut out, key, count);
    }
    out
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &Connections, out: &mut Vec<Sample>) {
    for s in BASE_STATES {
        if !o.by_state.contains_key(s) {
            out.push(Sample::new(&catalog::PG_CONNECTIONS, &[s], 0.0));
        }
    }
    for (s, n) in &o.by_state {
        out.push(Sample::owned(
            &catalog::PG_CONNECTIONS,
            vec![s.clone()],
            f64::from(*n),
        ));
    }
    for (a, n) in &o.by_application {
        out.push(Sample::owned(
            &catalog::PG_CONNECTIONS_BY_APP,
            vec![a.clone()],
            f64::from(*n),
        ));
    }
    for (u, n) in &o.by_user {
        out.push(Sample::owned(
            &catalog::PG_CONNECTIONS_BY_USER,
            vec![u.clone()],
            f64::from(*n),
        ));
    }
    out.push(Sample::new(
        &catalog::PG_LOCK_WAITS,
        &[],
        f64::from(o.waiting_on_locks),
    ));
    out.push(Sample::new(
        &catalog::PG_MAX_CONNECTIONS,
        &[],
        f64::from(o.max_connections),
    ));
    out.push(Sample::new(
        &catalog::PG_SUPERUSER_RESERVED,
        &[],
        f64::from(o.superuser_reserved),
    ));
    if let Some(r) = o.reserved {
        out.push(Sample::new(&catalog::PG_RESERVED, &[], f64::from(r)));
    }
    out.push(Sample::new(
        &catalog::PG_CONNECTION_SLOTS,
        &[],
        f64::from(o.slots()),
    ));
    if let Some(u) = o.utilization() {
        out.push(Sample::new(&catalog::PG_CONNECTION_UTILIZATION, &[], u));
    }
}

/// The registry entry (the check list in `check/mod.rs`): On the primary.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    b.with_pg(|pg| ConnectionsCheck::with_top_n(pg, b.config.checks.labels_top_n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(state: &str, app: &str, user: &str, address: Option<&str>, n: u32) -> SessionGroup {
        SessionGroup {
            state: (!state.is_empty()).then(|| state.to_owned()),
            application: Some(app.to_owned()),
            user: Some(user.to_owned()),
            address: address.map(str::to_owned),
            lock: false,
            sessions: n,
        }
    }

    fn raw() -> Raw {
        let mut waiting = group("active", "rose", "railway", Some("10.0.0.2"), 1);
        waiting.lock = true;
        Raw {
            max_connections: 100,
            superuser_reserved: 3,
            reserved: Some(2),
            role: "rose_monitor".into(),
            role_connection_limit: Some(3),
            groups: vec![
                group("active", "rose", "railway", Some("10.0.0.2"), 1),
                waiting,
                group("idle", "rose", "railway", Some("10.0.0.2"), 4),
                group("idle in transaction", "", "railway", None, 1),
                group("weird", "psql", "railway", None, 1),
                group("active", "rose-agent", "rose_monitor", Some("10.0.0.9"), 1),
                group("idle", "rose", "railway", Some("10.0.0.3"), 1),
            ],
        }
    }

    #[test]
    fn groups_are_summed_by_state_application_role_and_client() {
        let c = from_raw(raw(), 5);
        assert_eq!(c.by_state["active"], 3);
        assert_eq!(c.by_state["idle"], 5);
        assert_eq!(c.by_application["rose"], 7);
        assert_eq!(c.by_application["unset"], 1);
        assert_eq!(c.by_user["railway"], 9);
        assert_eq!(c.waiting_on_locks, 1);
        assert_eq!((c.role_sessions, c.agent_sessions), (1, 1));
        // Clients: the largest group first, a socket client as `local`.
        assert_eq!(
            (
                c.clients[0].application.as_str(),
                c.clients[0].address.as_str(),
                c.clients[0].sessions
            ),
            ("rose", "10.0.0.2", 6)
        );
        assert!(
            c.clients
                .iter()
                .any(|g| g.application.is_empty() && g.address == "local")
        );
        assert_eq!(c.clients.iter().map(|g| g.sessions).sum::<u32>(), 10);
        // A state the role may not see is `unknown`; counts from the server saturate.
        let mut r = raw();
        r.groups = vec![
            group("", "x", "y", None, u32::MAX),
            group("", "x", "y", None, 5),
        ];
        let c = from_raw(r, 5);
        assert_eq!(c.by_state["unknown"], u32::MAX);
    }

    #[test]
    fn states_are_labelled_and_slots_exclude_reserved() {
        let c = from_raw(raw(), 5);
        assert_eq!(c.by_state["idle_in_transaction"], 1);
        assert_eq!(c.by_state["unknown"], 1);
        assert_eq!(c.total(), 10);
        assert_eq!(c.slots(), 95);
        assert!((c.utilization().unwrap() - 10.0 / 95.0).abs() < 1e-9);
        let mut out = Vec::new();
        samples(&c, &mut out);
        let get = |name: &str, l: &[&str]| {
            out.iter()
                .find(|x| x.def.name == name && x.labels == l)
                .and_then(Sample::num)
        };
        assert_eq!(get("rose_pg_connections", &["active"]), Some(3.0));
        assert_eq!(
            get("rose_pg_connections", &["idle_in_transaction_aborted"]),
            Some(0.0)
        );
        assert_eq!(get("rose_pg_reserved_connections", &[]), Some(2.0));
        assert_eq!(
            get("rose_pg_connections_by_application", &["unset"]),
            Some(1.0)
        );
        assert_eq!(get("rose_pg_connections_waiting_on_locks", &[]), Some(1.0));
    }

    #[test]
    fn labels_beyond_the_top_n_are_summed_as_other() {
        let c = from_raw(raw(), 2);
        assert_eq!(c.by_application["rose"], 7);
        assert_eq!(c.by_application.len(), 3, "{:?}", c.by_application);
        assert_eq!(c.by_application[OTHER], 2);
        assert_eq!(c.by_application.values().sum::<u32>(), 10);
        // A client calling itself "other" cannot forge a separate series.
        let m = top_n_other(
            [("other".to_owned(), 3), ("a".to_owned(), 1)].into(),
            5,
            "unset",
        );
        assert_eq!(m[OTHER], 3);
    }

    #[test]
    fn before_16_there_is_no_reserved_series() {
        let mut r = raw();
        r.reserved = None;
        let c = from_raw(r, 5);
        assert_eq!(c.slots(), 97);
        let mut out = Vec::new();
        samples(&c, &mut out);
        assert!(
            out.iter()
                .all(|s| s.def.name != "rose_pg_reserved_connections")
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(util::decode::<Raw>("not json", "x").is_err());
        assert!(util::decode::<Raw>(r#"{"max_connections": "x"}"#, "x").is_err());
    }
}
