//! Check `pg_replication`: on the monitored server, every standby streaming from it
//! (`pg_stat_replication`): state, WAL not yet replayed (bytes) and `replay_lag`. One statement
//! over at most `max_wal_senders` rows; the view (which reads every session of
//! `pg_stat_activity` to join them) only when a WAL sender exists. The standby label is its `application_name` (the
//! standby's `cluster_name` or `walreceiver`), made unique with `#n` when repeated.
//!
//! The check remembers which standbys it has seen (by name and client address, counted) and
//! reports those that are gone ([`Replication::lost`]): a standby that disappears from a primary
//! is a lost failover target, and its slot may be holding WAL back. A standby removed on purpose
//! is forgotten [`STANDBY_MEMORY`] after it was last seen, or when the agent restarts.

use super::json::JsonCheck;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::util::label_text;
use crate::catalog::{self, Sample};
use crate::check::{BoxFuture, Check, Observation};
use crate::error::CheckError;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_REPLICATION;

/// Most standbys given their own series.
pub(crate) const MAX_STANDBYS: usize = 16;

const SQL: &str = "SELECT json_build_object(\
     'in_recovery', pg_is_in_recovery(), \
     'standbys', CASE WHEN EXISTS (SELECT 1 FROM pg_stat_get_wal_senders()) THEN (SELECT coalesce(json_agg(json_build_object(\
     'name', application_name, 'client_addr', client_addr::text, 'state', state, 'sync_state', sync_state, \
     'lag_bytes', pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, replay_lsn)::float8, \
     'replay_lag_seconds', extract(epoch FROM replay_lag)::float8, \
     'write_lag_seconds', extract(epoch FROM write_lag)::float8, \
     'flush_lag_seconds', extract(epoch FROM flush_lag)::float8) ORDER BY application_name, pid), '[]') \
     FROM pg_stat_replication) ELSE '[]'::json END)::text";

/// One standby as the primary sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standby {
    pub(crate) name: Option<String>,
    pub(crate) client_addr: Option<String>,
    /// `streaming`, `catchup`, `startup`, ...; `None` when hidden from the role.
    pub state: Option<String>,
    pub(crate) sync_state: Option<String>,
    /// WAL this server has that the standby has not replayed; `None` when hidden.
    pub lag_bytes: Option<f64>,
    pub(crate) replay_lag_seconds: Option<f64>,
    pub(crate) write_lag_seconds: Option<f64>,
    pub(crate) flush_lag_seconds: Option<f64>,
    /// Unique, bounded label value (filled in by [`label`]).
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replication {
    pub(crate) in_recovery: bool,
    pub standbys: Vec<Standby>,
    /// Standbys seen streaming earlier that are missing now (filled in by the check's memory).
    #[serde(default)]
    pub(crate) lost: Vec<LostStandby>,
}

/// A standby that streamed from this server while the agent watched and is gone now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LostStandby {
    /// Its `application_name` (or `unnamed`).
    pub(crate) name: String,
    pub(crate) client_addr: Option<String>,
    /// How many with this name and address are missing.
    pub(crate) missing: u32,
    /// Seconds since all of them were last seen.
    pub(crate) gone_seconds: f64,
}

/// How long a missing standby is reported after it was last seen.
pub(crate) const STANDBY_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// Standbys seen, by (name, client address): most seen at once and when that many were last seen.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    seen: BTreeMap<(String, Option<String>), (u32, Instant)>,
}

impl Memory {
    /// Pure over `now`: records `r`'s standbys and fills in the ones missing.
    pub(crate) fn remember(&mut self, mut r: Replication, now: Instant) -> Replication {
        let mut current: BTreeMap<(String, Option<String>), u32> = BTreeMap::new();
        for s in &r.standbys {
            let name = s.name.clone().unwrap_or_else(|| "unnamed".into());
            *current.entry((name, s.client_addr.clone())).or_default() += 1;
        }
        for (key, n) in &current {
            let e = self.seen.entry(key.clone()).or_insert((*n, now));
            if *n >= e.0 {
                *e = (*n, now);
            }
        }
        self.seen
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < STANDBY_MEMORY);
        r.lost = self
            .seen
            .iter()
            .filter_map(|((name, addr), (max, last))| {
                let have = current
                    .get(&(name.clone(), addr.clone()))
                    .copied()
                    .unwrap_or(0);
                (have < *max).then(|| LostStandby {
                    name: name.clone(),
                    client_addr: addr.clone(),
                    missing: max - have,
                    gone_seconds: now.saturating_duration_since(*last).as_secs_f64(),
                })
            })
            .collect();
        r
    }
}

/// Pure: gives every standby a unique, bounded label.
pub(crate) fn label(mut r: Replication) -> Replication {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for s in &mut r.standbys {
        let base = label_text(s.name.as_deref().unwrap_or(""), "unnamed");
        let n = seen.entry(base.clone()).or_insert(0);
        *n += 1;
        s.label = if *n == 1 { base } else { format!("{base}#{n}") };
    }
    r
}

/// The check: one statement, standbys labelled, missing ones remembered.
pub(crate) struct ReplicationCheck {
    inner: JsonCheck<Replication>,
    memory: Mutex<Memory>,
}

pub(crate) fn check(pg: Arc<PgTarget>) -> ReplicationCheck {
    ReplicationCheck {
        inner: JsonCheck::new(ID, pg, SQL, "replication", |_, r| {
            Observation::PgReplication(label(r))
        }),
        memory: Mutex::default(),
    }
}

impl Check for ReplicationCheck {
    fn id(&self) -> &str {
        ID
    }
    fn timeout(&self) -> Duration {
        self.inner.timeout()
    }
    fn target(&self) -> crate::check::CheckTarget {
        self.inner.pg.check_target()
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            match self.inner.observe().await? {
                Observation::PgReplication(r) => {
                    let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
                    Ok(Observation::PgReplication(m.remember(r, Instant::now())))
                }
                other => Ok(other),
            }
        })
    }
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &Replication, out: &mut Vec<Sample>) {
    out.push(Sample::new(
        &catalog::PG_REPLICATION_STANDBYS,
        &[],
        o.standbys.len() as f64,
    ));
    out.push(Sample::new(
        &catalog::PG_REPLICATION_STANDBYS_LOST,
        &[],
        o.lost.iter().map(|l| f64::from(l.missing)).sum(),
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

/// The registry entry (the check list in `check/mod.rs`): On the primary.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    b.with_pg(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_get_unique_labels_and_idle_caught_up_is_zero_lag() {
        let r: Replication = super::super::util::decode(
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

    fn standby(name: &str) -> Standby {
        Standby {
            name: Some(name.into()),
            client_addr: Some("127.0.0.1".into()),
            state: Some("streaming".into()),
            sync_state: Some("async".into()),
            lag_bytes: Some(0.0),
            replay_lag_seconds: None,
            write_lag_seconds: None,
            flush_lag_seconds: None,
            label: String::new(),
        }
    }

    #[test]
    fn a_standby_that_goes_away_is_lost_until_it_returns_or_is_forgotten() {
        let mut m = Memory::default();
        let t0 = Instant::now();
        let r = |names: &[&str]| Replication {
            in_recovery: false,
            standbys: names.iter().map(|n| standby(n)).collect(),
            lost: vec![],
        };
        assert!(
            m.remember(r(&["a", "walreceiver", "walreceiver"]), t0)
                .lost
                .is_empty()
        );
        let later = t0 + Duration::from_secs(30);
        let got = m.remember(r(&["walreceiver"]), later);
        assert_eq!(got.lost.len(), 2, "{:?}", got.lost);
        assert_eq!(got.lost[0].name, "a");
        assert_eq!(got.lost[1].missing, 1);
        assert_eq!(got.lost[1].gone_seconds, 30.0);
        let mut out = Vec::new();
        samples(&got, &mut out);
        let lost = out
            .iter()
            .find(|s| s.def.name == "rose_pg_replication_standbys_lost")
            .and_then(Sample::num);
        assert_eq!(lost, Some(2.0));
        // Back: nothing lost.
        assert!(
            m.remember(r(&["a", "walreceiver", "walreceiver"]), later)
                .lost
                .is_empty()
        );
        // Gone for longer than the memory: forgotten.
        let _ = m.remember(r(&[]), later + Duration::from_secs(1));
        let got = m.remember(r(&[]), later + STANDBY_MEMORY);
        assert!(got.lost.is_empty(), "{:?}", got.lost);
    }
}
