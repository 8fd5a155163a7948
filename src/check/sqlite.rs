//! Check `sqlite_checkpointer`: the SQLite checkpointer file at `SHORT_TERM_MEMORY_DB_PATH`
//! (the guide's rollback path). Present, readable, sizes of the file and its WAL, LangGraph's
//! tables (`checkpoints`, `writes`), journal mode, a bounded `PRAGMA quick_check`, and growth.
//!
//! The file is read with the read-only driver in [`crate::sqlite`], which never creates,
//! writes, deletes or chowns anything beside the database. The work runs on the blocking pool,
//! one run at a time.
//!
//! A missing or unreadable file is a fact of the observation (`present`, `error`), not a check
//! failure: `rose_sqlite_readable` drops to 0.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BoxFuture, Cadence, Check, Observation};
use crate::catalog::{self, Sample};
use crate::config::Config;
use crate::error::{CheckError, ErrorKind};
// The driver's types this check's observation carries, under the check's name too.
pub(crate) use crate::sqlite::QuickCheck;
pub(crate) use crate::sqlite::SqliteCounts;
use crate::sqlite::{QUICK_CHECK_BUDGET, READ_BUDGET, TABLES, read_store};

pub(crate) const ID: &str = crate::catalog::checks::SQLITE_CHECKPOINTER;
/// `quick_check` reads the whole file: run it at most this often.
pub(crate) const QUICK_CHECK_EVERY: Duration = Duration::from_secs(600);

/// What a run saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SqliteStore {
    pub(crate) path: String,
    #[serde(flatten)]
    pub(crate) counts: SqliteCounts,
    pub(crate) tables_missing: Vec<String>,
    pub(crate) quick_check: QuickCheck,
    /// Growth of file + WAL over the growth window (None until two readings).
    pub(crate) growth: Option<super::history::Growth>,
}

struct State {
    last_quick_check: Option<Instant>,
    growth: super::history::StoreHistory,
}

pub(crate) struct SqliteCheck {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    busy: Arc<AtomicBool>,
}

impl SqliteCheck {
    pub(crate) fn new(path: PathBuf, config: &Config) -> SqliteCheck {
        SqliteCheck {
            path,
            state: Arc::new(Mutex::new(State {
                last_quick_check: None,
                growth: super::history::StoreHistory::store(config.app.growth_window),
            })),
            busy: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Check for SqliteCheck {
    fn id(&self) -> &str {
        ID
    }
    fn cadence(&self) -> Cadence {
        Cadence::Slow
    }
    fn timeout(&self) -> Duration {
        QUICK_CHECK_BUDGET + READ_BUDGET * 4 + Duration::from_secs(1)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            if self.busy.swap(true, Ordering::AcqRel) {
                return Err(CheckError::new(
                    ErrorKind::Io,
                    "the previous SQLite read is still running",
                ));
            }
            let due = {
                let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.last_quick_check
                    .is_none_or(|t| t.elapsed() >= QUICK_CHECK_EVERY)
            };
            let (path, busy) = (self.path.clone(), self.busy.clone());
            let (counts, qc) = tokio::task::spawn_blocking(move || {
                let r = read_store(&path, due);
                busy.store(false, Ordering::Release);
                r
            })
            .await
            .map_err(|e| CheckError::new(ErrorKind::Other, format!("SQLite read: {e}")))?;
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if !matches!(qc, QuickCheck::Skipped { .. }) {
                st.last_quick_check = Some(Instant::now());
            }
            let growth = counts.present.then(|| {
                st.growth.push_reading(
                    super::history::monotonic_seconds(),
                    super::history::Reading {
                        bytes: counts.store_bytes(),
                        writes: counts.writes(),
                    },
                )
            });
            let tables_missing = if counts.readable() {
                TABLES
                    .iter()
                    .filter(|t| !counts.tables_present.iter().any(|p| p == *t))
                    .map(|t| (*t).to_owned())
                    .collect()
            } else {
                vec![]
            };
            Ok(Observation::Sqlite(SqliteStore {
                path: self.path.display().to_string(),
                counts,
                tables_missing,
                quick_check: qc,
                growth: growth.flatten(),
            }))
        })
    }
}

/// Pure: the series of a run.
pub(crate) fn samples(o: &SqliteStore, out: &mut Vec<Sample>) {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    let c = &o.counts;
    out.push(Sample::new(&catalog::SQLITE_PRESENT, &[], b(c.present)));
    out.push(Sample::new(&catalog::SQLITE_READABLE, &[], b(c.readable())));
    if let Some(e) = &c.error {
        out.push(Sample::new(&catalog::SQLITE_ERROR, &[e.kind.as_str()], 1.0));
    }
    if !c.present {
        return;
    }
    out.push(Sample::new(
        &catalog::SQLITE_FILE_BYTES,
        &[],
        c.file_bytes as f64,
    ));
    out.push(Sample::new(
        &catalog::SQLITE_WAL_BYTES,
        &[],
        c.wal_bytes as f64,
    ));
    if c.readable() {
        for t in TABLES {
            let present = c.tables_present.iter().any(|p| p == t);
            out.push(Sample::new(
                &catalog::SQLITE_TABLE_PRESENT,
                &[t],
                b(present),
            ));
        }
        for (t, v) in [
            ("checkpoints", c.checkpoints_max_rowid),
            ("writes", c.writes_max_rowid),
        ] {
            if let Some(v) = v {
                out.push(Sample::new(&catalog::SQLITE_ROWS, &[t], v as f64));
            }
        }
        if let Some(m) = &c.journal_mode {
            out.push(Sample::new(
                &catalog::SQLITE_JOURNAL_WAL,
                &[],
                b(m == "wal"),
            ));
        }
    }
    match &o.quick_check {
        QuickCheck::Ok { seconds } => {
            out.push(Sample::new(&catalog::SQLITE_QUICK_CHECK_OK, &[], 1.0));
            out.push(Sample::new(
                &catalog::SQLITE_QUICK_CHECK_DURATION,
                &[],
                *seconds,
            ));
        }
        QuickCheck::Problems { seconds, .. } => {
            out.push(Sample::new(&catalog::SQLITE_QUICK_CHECK_OK, &[], 0.0));
            out.push(Sample::new(
                &catalog::SQLITE_QUICK_CHECK_DURATION,
                &[],
                *seconds,
            ));
        }
        QuickCheck::TimedOut { seconds } => out.push(Sample::new(
            &catalog::SQLITE_QUICK_CHECK_DURATION,
            &[],
            *seconds,
        )),
        QuickCheck::Skipped { .. } => {}
    }
    if let Some(g) = &o.growth {
        out.push(Sample::new(
            &catalog::SQLITE_GROWTH,
            &[],
            g.bytes_per_second(),
        ));
    }
}

/// The registry entry (the check list in `check/mod.rs`): With a SQLite checkpointer path.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    b.config
        .app
        .sqlite_path
        .iter()
        .flat_map(|p| crate::check::one(SqliteCheck::new(p.clone(), b.config)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_an_unreadable_file() {
        let o = SqliteStore {
            path: "/x".into(),
            counts: SqliteCounts {
                present: true,
                file_bytes: 10,
                error: Some(crate::sqlite::SqliteFailure {
                    kind: crate::sqlite::SqliteErrorKind::NotADatabase,
                    message: "file is not a database".into(),
                }),
                ..Default::default()
            },
            tables_missing: vec![],
            quick_check: QuickCheck::Skipped {
                reason: "unreadable",
            },
            growth: None,
        };
        let mut out = vec![];
        samples(&o, &mut out);
        let names: Vec<_> = out.iter().map(|s| (s.def.name, s.num())).collect();
        assert!(names.contains(&("rose_sqlite_readable", Some(0.0))));
        assert!(names.contains(&("rose_sqlite_error", Some(1.0))));
        assert!(names.contains(&("rose_sqlite_file_bytes", Some(10.0))));
        assert!(!names.iter().any(|n| n.0 == "rose_sqlite_table_present"));
    }
}
