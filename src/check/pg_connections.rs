//! Check `pg_connections`: client backends by state from `pg_stat_activity`, with
//! `max_connections` and `superuser_reserved_connections`, in one statement. The four states an
//! app cares about are always exported (0 when absent) so their series never vanish.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{BoxFuture, Check, Observation};
use crate::catalog::{self, Sample};
use crate::error::{CheckError, ErrorKind};
use crate::pg::PgTarget;

pub const ID: &str = "pg_connections";

const SQL: &str = "SELECT current_setting('max_connections'), current_setting('superuser_reserved_connections'), \
     coalesce((SELECT json_object_agg(st, n) FROM (SELECT coalesce(state, 'unknown') AS st, count(*) AS n \
     FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1) s)::text, '{}')";

/// States always exported, as label values.
pub const BASE_STATES: [&str; 4] = [
    "active",
    "idle",
    "idle_in_transaction",
    "idle_in_transaction_aborted",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connections {
    pub max_connections: u32,
    pub superuser_reserved: u32,
    /// Client backends by state label (see [`state_label`]).
    pub by_state: BTreeMap<String, u32>,
}

impl Connections {
    pub fn total(&self) -> u32 {
        self.by_state.values().sum()
    }
}

/// Maps a `pg_stat_activity.state` to a bounded label value.
pub fn state_label(state: &str) -> &'static str {
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

pub struct ConnectionsCheck {
    pg: Arc<PgTarget>,
}

impl ConnectionsCheck {
    pub fn new(pg: Arc<PgTarget>) -> Self {
        ConnectionsCheck { pg }
    }
}

impl Check for ConnectionsCheck {
    fn id(&self) -> &'static str {
        ID
    }
    fn timeout(&self) -> Duration {
        self.pg.limits().connect_timeout
            + self.pg.limits().query_timeout
            + Duration::from_millis(100)
    }
    fn target(&self) -> super::CheckTarget {
        self.pg.check_target()
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            let rows = self.pg.simple_query(&conn, SQL).await?;
            let row = rows.first().ok_or_else(|| {
                CheckError::new(ErrorKind::Protocol, "connections query returned no row")
            })?;
            let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            parse(&text(0), &text(1), &text(2)).map(Observation::PgConnections)
        })
    }
}

/// Pure: turns the query's text columns into an observation.
pub fn parse(max: &str, reserved: &str, json: &str) -> Result<Connections, CheckError> {
    let raw: BTreeMap<String, u32> = serde_json::from_str(json).map_err(|e| {
        CheckError::new(
            ErrorKind::Protocol,
            format!("pg_stat_activity summary: {e}"),
        )
    })?;
    let mut by_state = BTreeMap::new();
    for (state, n) in raw {
        *by_state.entry(state_label(&state).to_owned()).or_insert(0) += n;
    }
    let num = |s: &str, what: &str| {
        s.parse::<u32>().map_err(|_| {
            CheckError::new(ErrorKind::Protocol, format!("{what} is not a number: {s}"))
        })
    };
    Ok(Connections {
        max_connections: num(max, "max_connections")?,
        superuser_reserved: num(reserved, "superuser_reserved_connections")?,
        by_state,
    })
}

/// Pure: the series of a successful run.
pub fn samples(o: &Connections, out: &mut Vec<Sample>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_labels_states() {
        let c = parse(
            "100",
            "3",
            r#"{"active": 2, "idle": 5, "idle in transaction": 1, "unknown": 1}"#,
        )
        .unwrap();
        assert_eq!(c.max_connections, 100);
        assert_eq!(c.by_state["idle_in_transaction"], 1);
        assert_eq!(c.total(), 9);
        let mut out = Vec::new();
        samples(&c, &mut out);
        let get = |s: &str| {
            out.iter()
                .find(|x| x.labels == vec![s.to_owned()])
                .and_then(Sample::num)
        };
        assert_eq!(get("active"), Some(2.0));
        assert_eq!(get("idle_in_transaction_aborted"), Some(0.0));
        assert_eq!(get("unknown"), Some(1.0));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(parse("x", "3", "{}").is_err());
        assert!(parse("1", "3", "not json").is_err());
    }
}
