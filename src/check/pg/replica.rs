//! Check `pg_replica`: the read replica of `DATABASE_READ_REPLICA_URL`, over its own single
//! connection. Reachable, in recovery (a standby) or not, WAL received but not replayed (bytes),
//! replay lag in seconds, replay paused. One statement of functions only (no table read).
//!
//! Lag in seconds is 0 when everything received has been replayed, else the age of the last
//! replayed transaction: an idle primary does not make a caught-up replica look late.

use super::json::JsonCheck;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::{self, Sample};
use crate::check::Observation;
use crate::config::Config;
use crate::pg::{Limits, PgTarget};

pub(crate) const ID: &str = crate::catalog::checks::PG_REPLICA;

const SQL: &str = "SELECT json_build_object(\
     'in_recovery', pg_is_in_recovery(), \
     'receive_lsn', pg_last_wal_receive_lsn()::text, \
     'replay_lsn', pg_last_wal_replay_lsn()::text, \
     'lag_bytes', pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8, \
     'last_replay_age_seconds', extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, \
     'paused', CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END, \
     'server_version_num', current_setting('server_version_num')::int)::text";

#[derive(Debug, Clone, Deserialize)]
pub struct Raw {
    pub(crate) in_recovery: bool,
    pub(crate) receive_lsn: Option<String>,
    pub(crate) replay_lsn: Option<String>,
    pub(crate) lag_bytes: Option<f64>,
    pub(crate) last_replay_age_seconds: Option<f64>,
    pub(crate) paused: Option<bool>,
    pub(crate) server_version_num: u32,
}

/// What one run saw on the replica.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replica {
    /// Sanitized `host:port/dbname` of the replica.
    pub(crate) target: String,
    pub in_recovery: bool,
    pub(crate) server_version_num: u32,
    pub(crate) receive_lsn: Option<String>,
    pub(crate) replay_lsn: Option<String>,
    /// Received but not replayed; `None` when not a standby.
    pub lag_bytes: Option<f64>,
    /// 0 when caught up, else the age of the last replayed transaction; `None` when not a
    /// standby or nothing was replayed yet.
    pub lag_seconds: Option<f64>,
    pub replay_paused: bool,
}

/// Pure: the observation from the statement's document.
pub fn from_raw(target: &str, r: Raw) -> Replica {
    let caught_up = r.lag_bytes.is_some_and(|b| b <= 0.0);
    let lag_seconds = if !r.in_recovery {
        None
    } else if caught_up {
        Some(0.0)
    } else {
        r.last_replay_age_seconds.map(|s| s.max(0.0))
    };
    Replica {
        target: target.to_owned(),
        in_recovery: r.in_recovery,
        server_version_num: r.server_version_num,
        receive_lsn: r.receive_lsn,
        replay_lsn: r.replay_lsn,
        lag_bytes: r.lag_bytes.map(|b| b.max(0.0)),
        lag_seconds,
        replay_paused: r.paused.unwrap_or(false),
    }
}

/// The replica's own target (one connection), when `DATABASE_READ_REPLICA_URL` is set; the same
/// timeouts as the primary's.
pub(crate) fn target(config: &Config) -> Option<Arc<PgTarget>> {
    let dsn = config.database.replica.clone()?;
    let limits = Limits::from_config(config);
    Some(Arc::new(PgTarget::new(dsn, limits)))
}

/// The check, on the replica's own target; a failed run says `rose_pg_replica_up 0`.
pub(crate) fn check(replica: Arc<PgTarget>) -> JsonCheck<Raw> {
    JsonCheck::new(ID, replica, SQL, "replica", |pg, r| {
        Observation::PgReplica(from_raw(pg.target(), r))
    })
    .on_failure(|out| out.push(Sample::new(&catalog::PG_REPLICA_UP, &[], 0.0)))
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &Replica, out: &mut Vec<Sample>) {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    out.push(Sample::new(&catalog::PG_REPLICA_UP, &[], 1.0));
    out.push(Sample::new(
        &catalog::PG_REPLICA_IN_RECOVERY,
        &[],
        b(o.in_recovery),
    ));
    if let Some(s) = o.lag_seconds {
        out.push(Sample::new(&catalog::PG_REPLICA_LAG, &[], s));
    }
    if let Some(x) = o.lag_bytes {
        out.push(Sample::new(&catalog::PG_REPLICA_LAG_BYTES, &[], x));
    }
    if o.in_recovery {
        out.push(Sample::new(
            &catalog::PG_REPLICA_PAUSED,
            &[],
            b(o.replay_paused),
        ));
    }
}

/// The registry entry (the check list in `check/mod.rs`): On the read replica's own target, when one is configured beside the primary.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    match (b.pg, target(b.config)) {
        (Some(_), Some(replica)) => crate::check::one(check(replica)),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> Raw {
        Raw {
            in_recovery: true,
            receive_lsn: Some("0/3000060".into()),
            replay_lsn: Some("0/3000000".into()),
            lag_bytes: Some(96.0),
            last_replay_age_seconds: Some(12.5),
            paused: Some(true),
            server_version_num: 170004,
        }
    }

    #[test]
    fn lag_is_the_replay_age_only_while_behind() {
        let r = from_raw("h:5432/db", raw());
        assert_eq!(r.lag_seconds, Some(12.5));
        assert!(r.replay_paused);
        let mut caught_up = raw();
        caught_up.lag_bytes = Some(0.0);
        assert_eq!(from_raw("h", caught_up).lag_seconds, Some(0.0));
        let mut primary = raw();
        primary.in_recovery = false;
        primary.lag_bytes = None;
        let p = from_raw("h", primary);
        assert_eq!(p.lag_seconds, None);
        let mut out = Vec::new();
        samples(&p, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].num(), Some(0.0));
    }
}
