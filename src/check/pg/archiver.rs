//! Check `pg_archiver`: WAL archiving (the guide's "Configure Backups"): whether `archive_mode`
//! is on, files archived, failed attempts and when the last success and failure happened. One
//! statement on the one-row `pg_stat_archiver`.

use super::json::JsonCheck;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::{self, Sample};
use crate::check::Observation;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_ARCHIVER;

const SQL: &str = "SELECT json_build_object('archive_mode', current_setting('archive_mode'), \
     'archived', archived_count, 'failed', failed_count, 'last_archived_wal', last_archived_wal, \
     'last_archived_time', extract(epoch FROM last_archived_time)::float8, \
     'last_failed_wal', last_failed_wal, \
     'last_failed_time', extract(epoch FROM last_failed_time)::float8)::text FROM pg_stat_archiver";

/// The archiver's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Archiver {
    /// `off`, `on` or `always`.
    pub(crate) archive_mode: String,
    pub(crate) archived: u64,
    pub(crate) failed: u64,
    pub(crate) last_archived_wal: Option<String>,
    pub(crate) last_archived_time: Option<f64>,
    pub(crate) last_failed_wal: Option<String>,
    pub(crate) last_failed_time: Option<f64>,
}

impl Archiver {
    pub fn enabled(&self) -> bool {
        self.archive_mode != "off"
    }
}

/// The check: one statement, the document as is.
pub(crate) fn check(pg: Arc<PgTarget>) -> JsonCheck<Archiver> {
    JsonCheck::new(ID, pg, SQL, "pg_stat_archiver", |_, a| {
        Observation::PgArchiver(a)
    })
    .slow()
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &Archiver, out: &mut Vec<Sample>) {
    out.push(Sample::new(
        &catalog::PG_ARCHIVE_ENABLED,
        &[],
        if o.enabled() { 1.0 } else { 0.0 },
    ));
    out.push(Sample::new(&catalog::PG_ARCHIVED, &[], o.archived as f64));
    out.push(Sample::new(
        &catalog::PG_ARCHIVE_FAILED,
        &[],
        o.failed as f64,
    ));
    if let Some(t) = o.last_failed_time {
        out.push(Sample::new(&catalog::PG_ARCHIVE_LAST_FAILURE, &[], t));
    }
    if let Some(t) = o.last_archived_time {
        out.push(Sample::new(&catalog::PG_ARCHIVE_LAST_SUCCESS, &[], t));
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
    fn samples_of_an_enabled_archiver() {
        let a = Archiver {
            archive_mode: "on".into(),
            archived: 5,
            failed: 2,
            last_archived_wal: None,
            last_archived_time: Some(100.0),
            last_failed_wal: Some("000000010000000000000003".into()),
            last_failed_time: Some(200.0),
        };
        assert!(a.enabled());
        let mut out = Vec::new();
        samples(&a, &mut out);
        assert_eq!(out.len(), 5);
    }
}
