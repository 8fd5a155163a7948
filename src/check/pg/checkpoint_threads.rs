//! Check `checkpoint_threads` (every [`util::rare_interval`]: five slow intervals, at most 5
//! minutes: the aggregate reads every checkpoint row, and a thread's size moves over hours):
//! which conversations make LangGraph's PostgreSQL
//! tables grow. LangGraph keeps a checkpoint per step, so a long conversation or a large state
//! grows `checkpoints` and `checkpoint_blobs` without bound, and the total alone does not say
//! which thread it is. Per thread: the number of checkpoints (median, p99, max), the bytes of
//! checkpoints plus blobs, and the largest single checkpoint row and blob.
//!
//! Two statements: a catalog probe (schema from [`LangGraphPlace`], tables present, SELECT
//! allowed), then one aggregate over both tables. The aggregate reads every row once
//! (`pg_column_size` of the stored, possibly compressed/TOASTed value: it never fetches TOAST)
//! and is bounded by the session's statement timeout (default 5 s). A full aggregate rather than
//! TABLESAMPLE: the maxima and per-thread sums need every row, and a sample misses exactly the
//! one runaway thread. Measured in `tests/checkpoint_bloat.rs` on 1,000,000 checkpoints (10,000
//! threads) plus 200,000 blobs: 0.28 to 0.33 s on PostgreSQL 15 (2 shared cores). Thread ids never leave the server: the statement returns only
//! counts and, for the few largest threads, the first 12 hex digits of md5(thread_id).
//!
//! Without SELECT on the tables (the least-privilege role does not have it) the check reports
//! that as its capability (`rose_checkpoint_threads_readable 0`), never a finding.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::schema::LangGraphPlace;
use super::util;
use crate::catalog::{self, Sample};
use crate::check::{BoxFuture, Cadence, Check, Observation};
use crate::error::CheckError;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::CHECKPOINT_THREADS;

/// How many of the largest threads (by bytes and by checkpoints) the statement names, hashed.
pub(crate) const TOP: usize = 3;

fn probe_sql(place: &LangGraphPlace) -> String {
    let oid = |t: &str| {
        format!(
            "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = lg.sch AND c.relname = '{t}' AND c.relkind IN ('r', 'p'))"
        )
    };
    format!(
        "WITH {}, t AS (SELECT lg.sch, (SELECT n.oid FROM pg_namespace n WHERE n.nspname = lg.sch) AS ns, \
         {} AS c, {} AS b FROM lg) \
         SELECT json_build_object('schema', sch, 'checkpoints', c IS NOT NULL, 'blobs', b IS NOT NULL, \
         'readable', coalesce(has_schema_privilege(ns, 'USAGE') AND has_table_privilege(c, 'SELECT') \
         AND (b IS NULL OR has_table_privilege(b, 'SELECT')), false))::text FROM t",
        place.cte(),
        oid("checkpoints"),
        oid("checkpoint_blobs")
    )
}

/// The aggregate over `schema`'s tables (`blobs`: whether `checkpoint_blobs` exists).
pub fn stats_sql(schema: &str, blobs: bool) -> String {
    let s = util::ident(schema);
    let b = if blobs {
        format!(
            "SELECT thread_id, sum(coalesce(pg_column_size(blob), 0))::float8 AS bytes, \
             max(coalesce(pg_column_size(blob), 0)) AS maxrow FROM {s}.checkpoint_blobs GROUP BY thread_id"
        )
    } else {
        "SELECT NULL::text AS thread_id, 0::float8 AS bytes, 0 AS maxrow WHERE false".to_owned()
    };
    format!(
        "WITH c AS (SELECT thread_id, count(*) AS n, \
         sum(pg_column_size(checkpoint) + coalesce(pg_column_size(metadata), 0))::float8 AS bytes, \
         max(pg_column_size(checkpoint) + coalesce(pg_column_size(metadata), 0)) AS maxrow \
         FROM {s}.checkpoints GROUP BY thread_id), \
         b AS ({b}), \
         t AS (SELECT thread_id, coalesce(c.n, 0) AS n, coalesce(c.bytes, 0) + coalesce(b.bytes, 0) AS bytes, \
         greatest(c.maxrow, b.maxrow) AS maxrow FROM c FULL JOIN b USING (thread_id)) \
         SELECT json_build_object('threads', (SELECT count(*) FROM c), \
         'median', (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY n) FROM c), \
         'p99', (SELECT percentile_disc(0.99) WITHIN GROUP (ORDER BY n) FROM c), \
         'max_checkpoints', (SELECT max(n) FROM c), \
         'max_thread_bytes', (SELECT max(bytes) FROM t), \
         'max_row_bytes', (SELECT max(maxrow) FROM c), \
         'max_blob_bytes', (SELECT max(maxrow) FROM b), \
         'top', (SELECT coalesce(json_agg(json_build_object('id', left(md5(thread_id), 12), \
         'checkpoints', n, 'bytes', bytes, 'max_row_bytes', maxrow)), '[]') FROM \
         (SELECT * FROM (SELECT * FROM t ORDER BY bytes DESC LIMIT {TOP}) x UNION \
          SELECT * FROM (SELECT * FROM t ORDER BY n DESC LIMIT {TOP}) y UNION \
          SELECT * FROM (SELECT * FROM t ORDER BY maxrow DESC NULLS LAST LIMIT {TOP}) z) top))::text"
    )
}

#[derive(Debug, Clone, Deserialize)]
struct Probe {
    schema: Option<String>,
    checkpoints: bool,
    blobs: bool,
    readable: bool,
}

/// One of the largest threads, named only by a hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopThread {
    /// First 12 hex digits of md5(thread_id): enough to find it, not the user's identifier.
    pub(crate) id: String,
    pub(crate) checkpoints: u64,
    pub(crate) bytes: f64,
    pub(crate) max_row_bytes: Option<u64>,
}

/// The per-thread distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadStats {
    pub(crate) threads: u64,
    pub(crate) median: Option<u64>,
    pub(crate) p99: Option<u64>,
    pub(crate) max_checkpoints: Option<u64>,
    /// Checkpoint rows plus blobs of the largest thread.
    pub(crate) max_thread_bytes: Option<f64>,
    /// Largest checkpoint row (checkpoint + metadata, as stored).
    pub(crate) max_row_bytes: Option<u64>,
    pub(crate) max_blob_bytes: Option<u64>,
    #[serde(default)]
    pub(crate) top: Vec<TopThread>,
}

/// What one run saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointThreads {
    /// The schema of LangGraph's tables.
    pub(crate) schema: String,
    /// False when the monitoring role may not read `checkpoints` (a capability, not a fault).
    pub(crate) readable: bool,
    /// `None` when the tables are absent or unreadable.
    pub(crate) stats: Option<ThreadStats>,
}

pub(crate) struct ThreadsCheck {
    pg: Arc<PgTarget>,
    probe: String,
    every: Duration,
}

impl ThreadsCheck {
    pub(crate) fn new(pg: Arc<PgTarget>, place: &LangGraphPlace) -> Self {
        ThreadsCheck {
            probe: probe_sql(place),
            pg,
            every: util::rare_interval(Duration::from_secs(60)),
        }
    }

    /// Reads every [`util::rare_interval`] of this slow interval.
    pub(crate) fn with_slow_interval(mut self, slow: Duration) -> Self {
        self.every = util::rare_interval(slow);
        self
    }
}

impl Check for ThreadsCheck {
    fn id(&self) -> &str {
        ID
    }
    fn cadence(&self) -> Cadence {
        Cadence::Every(self.every)
    }
    fn timeout(&self) -> Duration {
        util::timeout(&self.pg, 2)
    }
    fn target(&self) -> crate::check::CheckTarget {
        self.pg.check_target()
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            let p: Probe =
                util::json_query(&self.pg, &conn, &self.probe, "checkpoint threads").await?;
            let schema = p.schema.unwrap_or_else(|| "public".into());
            let unreadable = |schema| {
                Ok(Observation::CheckpointThreads(CheckpointThreads {
                    schema,
                    readable: false,
                    stats: None,
                }))
            };
            if !p.checkpoints {
                return Ok(Observation::CheckpointThreads(CheckpointThreads {
                    schema,
                    readable: true,
                    stats: None,
                }));
            }
            if !p.readable {
                return unreadable(schema);
            }
            let sql = stats_sql(&schema, p.blobs);
            match util::json_query::<ThreadStats>(&self.pg, &conn, &sql, "checkpoint threads").await
            {
                Ok(stats) => Ok(Observation::CheckpointThreads(CheckpointThreads {
                    schema,
                    readable: true,
                    stats: Some(stats),
                })),
                // Privileges changed between the probe and the aggregate.
                Err(e) if e.sqlstate.as_deref() == Some("42501") => unreadable(schema),
                Err(e) => Err(e),
            }
        })
    }
}

/// Pure: the series of a successful run. No thread id, hashed or not, is a label.
pub(crate) fn samples(o: &CheckpointThreads, out: &mut Vec<Sample>) {
    out.push(Sample::new(
        &catalog::CHECKPOINT_THREADS_READABLE,
        &[],
        if o.readable { 1.0 } else { 0.0 },
    ));
    let Some(s) = &o.stats else { return };
    out.push(Sample::new(
        &catalog::CHECKPOINT_THREADS,
        &[],
        s.threads as f64,
    ));
    for (q, v) in [("0.5", s.median), ("0.99", s.p99)] {
        if let Some(v) = v {
            out.push(Sample::new(
                &catalog::CHECKPOINT_THREAD_CHECKPOINTS,
                &[q],
                v as f64,
            ));
        }
    }
    let gauges = [
        (
            &catalog::CHECKPOINT_THREAD_MAX_CHECKPOINTS,
            s.max_checkpoints.map(|v| v as f64),
        ),
        (&catalog::CHECKPOINT_THREAD_MAX_BYTES, s.max_thread_bytes),
        (
            &catalog::CHECKPOINT_MAX_ROW_BYTES,
            s.max_row_bytes.map(|v| v as f64),
        ),
        (
            &catalog::CHECKPOINT_MAX_BLOB_BYTES,
            s.max_blob_bytes.map(|v| v as f64),
        ),
    ];
    for (def, v) in gauges {
        if let Some(v) = v {
            out.push(Sample::new(def, &[], v));
        }
    }
}

/// The registry entry (the check list in `check/mod.rs`): On the primary, unless the LangGraph schema checks are off.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    if b.config.checks.langgraph_schema == crate::config::LangGraphSchema::Off {
        return Vec::new();
    }
    let place = b.langgraph_place();
    b.with_pg(|pg| ThreadsCheck::new(pg, &place).with_slow_interval(b.config.agent.slow_interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_statement_and_exports_no_ids() {
        let s: ThreadStats = util::decode(
            r#"{"threads": 4, "median": 3, "p99": 1500, "max_checkpoints": 1500,
                "max_thread_bytes": 60000000.0, "max_row_bytes": 12000000, "max_blob_bytes": null,
                "top": [{"id": "0123456789ab", "checkpoints": 1500, "bytes": 6e7, "max_row_bytes": 12000000}]}"#,
            "x",
        )
        .unwrap();
        let mut out = Vec::new();
        samples(
            &CheckpointThreads {
                schema: "public".into(),
                readable: true,
                stats: Some(s),
            },
            &mut out,
        );
        let names: Vec<_> = out.iter().map(|s| s.def.name).collect();
        assert!(names.contains(&"rose_checkpoint_thread_max_checkpoints"));
        assert!(names.contains(&"rose_checkpoint_thread_max_bytes"));
        assert!(names.contains(&"rose_checkpoint_max_row_bytes"));
        assert!(!names.contains(&"rose_checkpoint_max_blob_bytes"));
        assert!(
            !out.iter()
                .any(|s| s.labels.iter().any(|l| l.contains("0123")))
        );
    }

    #[test]
    fn unreadable_is_a_capability_without_values() {
        let mut out = Vec::new();
        samples(
            &CheckpointThreads {
                schema: "public".into(),
                readable: false,
                stats: None,
            },
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].def.name, "rose_checkpoint_threads_readable");
        assert_eq!(out[0].num(), Some(0.0));
    }
}
