//! Check `pg_replication`: on the monitored server, every standby streaming from it
//! (`pg_stat_replication`): state, WAL not yet replayed (bytes) and `replay_lag`. One statement
//! over at most `max_wal_senders` rows. The standby label is its `application_name` (the
//! standby's `cluster_name` or `walreceiver`), made unique with `#n` when repeated.

use super::pg_json::JsonCheck;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Observation;
use super::pg_util::label_text;
use crate::catalog::{self, Sample};
use crate::pg::PgTarget;

pub const ID: &str = "pg_replication";

/// Most standbys given their own series.
pub const MAX_STANDBYS: usize = 16;

const SQL: &str = "SELECT json_build_object(\
     'in_recovery', pg_is_in_recovery(), \
     'standbys', (SELECT coalesce(json_agg(json_build_object(\
     'name', application_name, 'client_addr', client_addr::text, 'state', state, 'sync_state', sync_state, \
     'lag_bytes', pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, replay_lsn)::float8, \
     'replay_lag_seconds', extract(epoch FROM replay_lag)::float8, \
     'write_lag_seconds', extract(epoch FROM write_lag)::float8, \
     'flush_lag_seconds', extract(epoch FROM flush_lag)::float8) ORDER BY application_name, pid), '[]') \
     FROM pg_stat_replication))::text";

/// One standby as the primary sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standby {
    pub name: Option<String>,
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, `startup`, ...; `None` when hidden from the role.
    pub state: Option<String>,
    pub sync_state: Option<String>,
    /// WAL this server has that the standby has not replayed; `None` when hidden.
    pub lag_bytes: Option<f64>,
    pub replay_lag_seconds: Option<f64>,
    pub write_lag_seconds: Option<f64>,
    pub flush_lag_seconds: Option<f64>,
    /// Unique, bounded label value (filled in by [`label`]).
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replication {
    pub in_recovery: bool,
    pub standbys: Vec<Standby>,
}

/// Pure: gives every standby a unique, bounded label.
pub fn label(mut r: Replication) -> Replication {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for s in &mut r.standbys {
        let base = label_text(s.name.as_deref().unwrap_or(""), "unnamed");
        let n = seen.entry(base.clone()).or_insert(0);
        *n += 1;
        s.label = if *n == 1 { base } else { format!("{base}#{n}") };
    }
    r
}

/// The check: one statement, standbys labelled.
pub fn check(pg: Arc<PgTarget>) -> JsonCheck<Replication> {
    JsonCheck::new(ID, pg, SQL, "replication", |_, r| {
        Observation::PgReplication(label(r))
    })
}

/// Pure: the series of a successful run.
pub fn samples(o: &Replication, out: &mut Vec<Sample>) {
    out.push(Sample::new(
        &catalog::PG_REPLICATION_STANDBYS,
        &[],
        o.standbys.len() as f64,
    ));
    for s in o.standbys.iter().take(MAX_STANDBYS) {
        let l = vec![s.label.clone()];
        if let Some(b) = s.lag_bytes {
            out.push(Sample::owned(
                &catalog::PG_REPLICATION_LAG_BYTES,
                l.clone(),
                b.max(0.0),
            ));
        }
        let replay = match (s.replay_lag_seconds, s.lag_bytes) {
            (Some(x), _) => Some(x),
            (None, Some(b)) if b <= 0.0 => Some(0.0),
            _ => None,
        };
        if let Some(x) = replay {
            out.push(Sample::owned(&catalog::PG_REPLICATION_LAG, l, x));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_get_unique_labels_and_idle_caught_up_is_zero_lag() {
        let r: Replication = super::super::pg_util::decode(
            r#"{"in_recovery": false, "standbys": [
                {"name": "walreceiver", "client_addr": "127.0.0.1", "state": "streaming", "sync_state": "async",
                 "lag_bytes": 0, "replay_lag_seconds": null, "write_lag_seconds": null, "flush_lag_seconds": null},
                {"name": "walreceiver", "client_addr": "127.0.0.1", "state": "streaming", "sync_state": "async",
                 "lag_bytes": 4096, "replay_lag_seconds": 3.5, "write_lag_seconds": 0.1, "flush_lag_seconds": 0.2}]}"#,
            "x",
        )
        .unwrap();
        let r = label(r);
        assert_eq!(r.standbys[1].label, "walreceiver#2");
        let mut out = Vec::new();
        samples(&r, &mut out);
        assert_eq!(out[0].num(), Some(2.0));
        let lag = |l: &str| {
            out.iter()
                .find(|s| {
                    s.def.name == "rose_pg_replication_replay_lag_seconds"
                        && s.labels == vec![l.to_owned()]
                })
                .and_then(Sample::num)
        };
        assert_eq!(lag("walreceiver"), Some(0.0));
        assert_eq!(lag("walreceiver#2"), Some(3.5));
    }
}
