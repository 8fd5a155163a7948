//! Check `pg_database_size`: the size of the monitored database (the guide's
//! `pg_database_size('railway')`), its growth per hour from the agent's own history, and against
//! the plan's storage limit (AGENT_PLAN / AGENT_STORAGE_LIMIT) the time until it is full. It
//! stats every file of the database (with 2,000 tables, about 12 ms of the server's time), so it
//! runs every [`util::rare_interval`]: five slow intervals, at most 5 minutes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::util::{self, History};
use crate::catalog::{self, Sample};
use crate::check::{BoxFuture, Cadence, Check, Observation};
use crate::config::StorageLimit;
use crate::error::CheckError;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_DATABASE_SIZE;

const SQL: &str = "SELECT json_build_object('datname', current_database(), \
     'bytes', pg_database_size(current_database()))::text";

/// The statement's document.
#[derive(Debug, serde::Deserialize)]
struct Raw {
    datname: String,
    bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatabaseSize {
    pub(crate) datname: String,
    pub(crate) bytes: u64,
    /// From the agent's history; `None` until two samples a second apart exist.
    pub(crate) growth_bytes_per_second: Option<f64>,
    /// The plan's storage limit, when one is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<StorageLimit>,
    /// Seconds until `bytes` reaches the limit at the observed growth (0 when at or over it);
    /// `None` without a limit or without growth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) full_seconds: Option<f64>,
}

/// Pure: seconds until `bytes` reaches `limit` growing at `growth` bytes per second; 0 when
/// already there, `None` when not growing (or no growth known yet).
pub(crate) fn full_seconds(bytes: u64, limit: u64, growth: Option<f64>) -> Option<f64> {
    if bytes >= limit {
        return Some(0.0);
    }
    match growth {
        Some(g) if g.is_finite() && g > 0.0 => Some((limit - bytes) as f64 / g),
        _ => None,
    }
}

pub(crate) struct DatabaseSizeCheck {
    pg: Arc<PgTarget>,
    history: Mutex<History>,
    limit: Option<StorageLimit>,
    every: Duration,
}

impl DatabaseSizeCheck {
    pub(crate) fn new(pg: Arc<PgTarget>) -> Self {
        DatabaseSizeCheck {
            pg,
            history: Mutex::new(History::default()),
            limit: None,
            every: util::rare_interval(Duration::from_secs(60)),
        }
    }

    /// Reads the size every [`util::rare_interval`] of this slow interval.
    pub(crate) fn with_slow_interval(mut self, slow: Duration) -> Self {
        self.every = util::rare_interval(slow);
        self
    }

    /// Measures the size against the plan's storage limit.
    pub(crate) fn with_limit(mut self, limit: Option<StorageLimit>) -> Self {
        self.limit = limit;
        self
    }
}

impl Check for DatabaseSizeCheck {
    fn id(&self) -> &str {
        ID
    }
    fn cadence(&self) -> Cadence {
        Cadence::Every(self.every)
    }
    fn timeout(&self) -> Duration {
        super::util::timeout(&self.pg, 1)
    }
    fn target(&self) -> crate::check::CheckTarget {
        self.pg.check_target()
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            let Raw { datname, bytes } =
                util::json_query(&self.pg, &conn, SQL, "database size").await?;
            let growth_bytes_per_second = self
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(util::unix_now(), bytes as f64);
            let full_seconds = self
                .limit
                .as_ref()
                .and_then(|l| full_seconds(bytes, l.bytes, growth_bytes_per_second));
            Ok(Observation::PgDatabaseSize(DatabaseSize {
                datname,
                bytes,
                growth_bytes_per_second,
                limit: self.limit.clone(),
                full_seconds,
            }))
        })
    }
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &DatabaseSize, out: &mut Vec<Sample>) {
    out.push(Sample::owned(
        &catalog::PG_DATABASE_SIZE,
        vec![o.datname.clone()],
        o.bytes as f64,
    ));
    if let Some(g) = o.growth_bytes_per_second {
        out.push(Sample::owned(
            &catalog::PG_DATABASE_GROWTH,
            vec![o.datname.clone()],
            g,
        ));
    }
    if let Some(l) = &o.limit {
        out.push(Sample::owned(
            &catalog::PG_STORAGE_LIMIT,
            vec![o.datname.clone()],
            l.bytes as f64,
        ));
    }
    if let Some(s) = o.full_seconds {
        out.push(Sample::owned(
            &catalog::PG_STORAGE_FULL,
            vec![o.datname.clone()],
            s,
        ));
    }
}

/// The registry entry (the check list in `check/mod.rs`): On the primary, with the plan's storage limit.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    b.with_pg(|pg| {
        DatabaseSizeCheck::new(pg)
            .with_limit(b.config.checks.storage_limit.clone())
            .with_slow_interval(b.config.agent.slow_interval)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_to_full_from_growth() {
        assert_eq!(full_seconds(600, 1000, Some(4.0)), Some(100.0));
        assert_eq!(full_seconds(1000, 1000, None), Some(0.0));
        assert_eq!(full_seconds(1200, 1000, Some(-3.0)), Some(0.0));
        assert_eq!(full_seconds(600, 1000, None), None);
        assert_eq!(full_seconds(600, 1000, Some(0.0)), None);
        assert_eq!(full_seconds(600, 1000, Some(-1.0)), None);
        assert_eq!(full_seconds(600, 1000, Some(f64::NAN)), None);
    }

    #[test]
    fn limit_and_time_to_full_series_only_when_known() {
        let mut o = DatabaseSize {
            datname: "railway".into(),
            bytes: 600,
            growth_bytes_per_second: None,
            limit: None,
            full_seconds: None,
        };
        let names = |o: &DatabaseSize| {
            let mut v = Vec::new();
            samples(o, &mut v);
            v.iter().map(|s| s.def.name).collect::<Vec<_>>()
        };
        assert_eq!(names(&o), ["rose_pg_database_size_bytes"]);
        o.limit = Some(StorageLimit {
            name: "custom".into(),
            bytes: 1000,
        });
        assert!(names(&o).contains(&"rose_pg_storage_limit_bytes"));
        assert!(!names(&o).contains(&"rose_pg_storage_full_seconds"));
        o.growth_bytes_per_second = Some(4.0);
        o.full_seconds = Some(100.0);
        assert!(names(&o).contains(&"rose_pg_storage_full_seconds"));
    }
}
