//! Check `pg_checkpoints`: checkpoints by kind, their write and sync time, and buffers written.
//! PostgreSQL 17 moved these counters from `pg_stat_bgwriter` to `pg_stat_checkpointer` and
//! renamed them, so the statement depends on the server version (read once per connection).
//! One statement on a one-row view.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::util::{self, VersionCache};
use crate::catalog::{self, Sample};
use crate::check::{BoxFuture, Cadence, Check, Observation};
use crate::error::CheckError;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_CHECKPOINTS;

/// PostgreSQL 17 moved checkpoint statistics out of `pg_stat_bgwriter` (whose
/// `checkpoints_timed`, `checkpoints_req`, `checkpoint_write_time`, `checkpoint_sync_time` and
/// `buffers_checkpoint` columns were removed) into the new `pg_stat_checkpointer` view
/// (`num_timed`, `num_requested`, `write_time`, `sync_time`, `buffers_written`).
pub(crate) const PG_STAT_CHECKPOINTER_SINCE: u32 = 170_000;

const SQL_17: &str = "SELECT json_build_object('timed', num_timed, 'requested', num_requested, \
     'write_ms', write_time, 'sync_ms', sync_time, 'buffers_written', buffers_written, \
     'source', 'pg_stat_checkpointer')::text FROM pg_stat_checkpointer";

const SQL_OLD: &str = "SELECT json_build_object('timed', checkpoints_timed, 'requested', checkpoints_req, \
     'write_ms', checkpoint_write_time, 'sync_ms', checkpoint_sync_time, 'buffers_written', buffers_checkpoint, \
     'source', 'pg_stat_bgwriter')::text FROM pg_stat_bgwriter";

/// The statement for a server version.
pub(crate) fn sql_for(server_version_num: u32) -> &'static str {
    if server_version_num >= PG_STAT_CHECKPOINTER_SINCE {
        SQL_17
    } else {
        SQL_OLD
    }
}

/// Cumulative checkpoint counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoints {
    pub(crate) timed: u64,
    pub requested: u64,
    pub(crate) write_ms: f64,
    pub(crate) sync_ms: f64,
    pub(crate) buffers_written: u64,
    /// The view read: `pg_stat_checkpointer` (17+) or `pg_stat_bgwriter`.
    pub source: String,
}

pub(crate) struct CheckpointsCheck {
    pg: Arc<PgTarget>,
    version: VersionCache,
}

impl CheckpointsCheck {
    pub(crate) fn new(pg: Arc<PgTarget>) -> Self {
        CheckpointsCheck {
            pg,
            version: VersionCache::default(),
        }
    }
}

impl Check for CheckpointsCheck {
    fn id(&self) -> &str {
        ID
    }
    fn cadence(&self) -> Cadence {
        Cadence::Slow
    }
    fn target(&self) -> crate::check::CheckTarget {
        self.pg.check_target()
    }
    fn timeout(&self) -> Duration {
        util::timeout(&self.pg, 2)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            let v = self.version.get(&self.pg, &conn).await?;
            let c: Checkpoints =
                util::json_query(&self.pg, &conn, sql_for(v), "checkpoints").await?;
            Ok(Observation::PgCheckpoints(c))
        })
    }
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &Checkpoints, out: &mut Vec<Sample>) {
    out.push(Sample::new(
        &catalog::PG_CHECKPOINTS,
        &["timed"],
        o.timed as f64,
    ));
    out.push(Sample::new(
        &catalog::PG_CHECKPOINTS,
        &["requested"],
        o.requested as f64,
    ));
    out.push(Sample::new(
        &catalog::PG_CHECKPOINT_WRITE,
        &[],
        o.write_ms / 1000.0,
    ));
    out.push(Sample::new(
        &catalog::PG_CHECKPOINT_SYNC,
        &[],
        o.sync_ms / 1000.0,
    ));
    out.push(Sample::new(
        &catalog::PG_CHECKPOINT_BUFFERS,
        &[],
        o.buffers_written as f64,
    ));
}

/// The registry entry (the check list in `check/mod.rs`): On the primary.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    b.with_pg(CheckpointsCheck::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_gate_picks_the_view() {
        assert!(sql_for(160_004).contains("pg_stat_bgwriter"));
        assert!(sql_for(170_000).contains("pg_stat_checkpointer"));
        assert!(sql_for(180_001).contains("pg_stat_checkpointer"));
        let c: Checkpoints = util::decode(
            r#"{"timed": 3, "requested": 1, "write_ms": 1500, "sync_ms": 20.5, "buffers_written": 9, "source": "pg_stat_bgwriter"}"#,
            "x",
        )
        .unwrap();
        let mut out = Vec::new();
        samples(&c, &mut out);
        assert_eq!(out[2].num(), Some(1.5));
    }
}
