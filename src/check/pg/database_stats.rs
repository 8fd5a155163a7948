//! Check `pg_database_stats`: the health of the database as a whole from its
//! `pg_stat_database` row (cache hit ratio, commits and rollbacks, deadlocks, temporary files)
//! and transaction ID age towards wraparound (`age(datfrozenxid)`, the oldest of any database,
//! since wraparound stops the whole cluster). One statement: one `pg_stat_database` row and the
//! few rows of `pg_database`.

use super::json::JsonCheck;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::{self, Sample};
use crate::check::Observation;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_DATABASE_STATS;

/// XIDs available before wraparound protection stops the cluster (2^31).
pub(crate) const XID_WRAPAROUND_LIMIT: f64 = 2_147_483_648.0;

const SQL: &str = "SELECT json_build_object(\
     'datname', d.datname, 'blks_hit', d.blks_hit, 'blks_read', d.blks_read, \
     'xact_commit', d.xact_commit, 'xact_rollback', d.xact_rollback, 'deadlocks', d.deadlocks, \
     'temp_bytes', d.temp_bytes, 'temp_files', d.temp_files, \
     'stats_reset', extract(epoch FROM d.stats_reset)::float8, \
     'xid_age', (SELECT age(datfrozenxid) FROM pg_database WHERE datname = current_database()), \
     'xid_age_max', (SELECT max(age(datfrozenxid)) FROM pg_database WHERE datallowconn), \
     'autovacuum_freeze_max_age', current_setting('autovacuum_freeze_max_age')::bigint)::text \
     FROM pg_stat_database d WHERE d.datname = current_database()";

/// The database's counters (cumulative since `stats_reset`) and XID ages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseStats {
    pub(crate) datname: String,
    pub(crate) blks_hit: u64,
    pub(crate) blks_read: u64,
    pub(crate) xact_commit: u64,
    pub xact_rollback: u64,
    pub(crate) deadlocks: u64,
    pub(crate) temp_bytes: u64,
    pub(crate) temp_files: u64,
    /// Unix time the counters were last reset, if ever.
    pub(crate) stats_reset: Option<f64>,
    /// age(datfrozenxid) of this database.
    pub(crate) xid_age: u64,
    /// The oldest of any database that accepts connections.
    pub xid_age_max: u64,
    pub(crate) autovacuum_freeze_max_age: u64,
}

impl DatabaseStats {
    /// blks_hit / (blks_hit + blks_read); `None` before any block was needed.
    pub(crate) fn cache_hit_ratio(&self) -> Option<f64> {
        let total = self.blks_hit + self.blks_read;
        (total > 0).then(|| self.blks_hit as f64 / total as f64)
    }
    pub(crate) fn wraparound_ratio(&self) -> f64 {
        self.xid_age_max as f64 / XID_WRAPAROUND_LIMIT
    }
}

/// The check: one statement, the document as is.
pub(crate) fn check(pg: Arc<PgTarget>) -> JsonCheck<DatabaseStats> {
    JsonCheck::new(ID, pg, SQL, "pg_stat_database", |_, s| {
        Observation::PgDatabaseStats(s)
    })
    .slow()
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &DatabaseStats, out: &mut Vec<Sample>) {
    if let Some(r) = o.cache_hit_ratio() {
        out.push(Sample::new(&catalog::PG_CACHE_HIT, &[], r));
    }
    out.push(Sample::new(
        &catalog::PG_BLOCKS,
        &["cache"],
        o.blks_hit as f64,
    ));
    out.push(Sample::new(
        &catalog::PG_BLOCKS,
        &["read"],
        o.blks_read as f64,
    ));
    out.push(Sample::new(
        &catalog::PG_TRANSACTIONS,
        &["commit"],
        o.xact_commit as f64,
    ));
    out.push(Sample::new(
        &catalog::PG_TRANSACTIONS,
        &["rollback"],
        o.xact_rollback as f64,
    ));
    out.push(Sample::new(&catalog::PG_DEADLOCKS, &[], o.deadlocks as f64));
    out.push(Sample::new(
        &catalog::PG_TEMP_BYTES,
        &[],
        o.temp_bytes as f64,
    ));
    out.push(Sample::new(
        &catalog::PG_TEMP_FILES,
        &[],
        o.temp_files as f64,
    ));
    out.push(Sample::new(&catalog::PG_XID_AGE, &[], o.xid_age_max as f64));
    out.push(Sample::new(
        &catalog::PG_XID_WRAPAROUND,
        &[],
        o.wraparound_ratio(),
    ));
}

/// The registry entry (the check list in `check/mod.rs`): On the primary.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    b.with_pg(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_empty_counters() {
        let mut s: DatabaseStats = super::super::util::decode(
            r#"{"datname": "rose", "blks_hit": 990, "blks_read": 10, "xact_commit": 90, "xact_rollback": 10,
                "deadlocks": 2, "temp_bytes": 0, "temp_files": 0, "stats_reset": null,
                "xid_age": 1000, "xid_age_max": 1073741824, "autovacuum_freeze_max_age": 200000000}"#,
            "x",
        )
        .unwrap();
        assert_eq!(s.cache_hit_ratio(), Some(0.99));
        assert_eq!(s.wraparound_ratio(), 0.5);
        s.blks_hit = 0;
        s.blks_read = 0;
        assert_eq!(s.cache_hit_ratio(), None);
        let mut out = Vec::new();
        samples(&s, &mut out);
        assert!(out.iter().all(|x| x.def.name != "rose_pg_cache_hit_ratio"));
    }
}
