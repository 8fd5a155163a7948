//! Check `sqlite_checkpointer`: the SQLite checkpointer file at `SHORT_TERM_MEMORY_DB_PATH`
//! (the guide's rollback path). Present, readable, sizes of the file and its WAL, LangGraph's
//! tables (`checkpoints`, `writes`), journal mode, a bounded `PRAGMA quick_check`, and growth.
//!
//! The app must never be locked out, so the file is opened with `SQLITE_OPEN_READ_ONLY`,
//! `PRAGMA query_only`, a short busy timeout, and every statement runs under a progress-handler
//! deadline. In WAL mode (what LangGraph's `SqliteSaver` sets) readers never block the writer.
//! In rollback-journal mode a long read would hold a SHARED lock and stall the app's commits,
//! so there `quick_check` is skipped. The work runs on the blocking pool, one run at a time.
//!
//! A missing or unreadable file is a fact of the observation (`present`, `error`), not a check
//! failure: `rose_sqlite_readable` drops to 0.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::{BoxFuture, Cadence, Check, Observation};
use crate::catalog::{self, Sample};
use crate::config::Config;
use crate::error::{CheckError, ErrorKind};

pub const ID: &str = "sqlite_checkpointer";
/// LangGraph's SqliteSaver tables.
pub const TABLES: [&str; 2] = ["checkpoints", "writes"];
/// Budget of one `quick_check`; cut off there (reported as timed out, not as a problem).
pub const QUICK_CHECK_BUDGET: Duration = Duration::from_secs(2);
/// `quick_check` reads the whole file: run it at most this often.
pub const QUICK_CHECK_EVERY: Duration = Duration::from_secs(600);
/// Budget of the cheap statements (tables, pragmas, max rowid).
pub const READ_BUDGET: Duration = Duration::from_millis(500);
/// How long a statement waits for a lock before giving up (the agent yields, never waits long).
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// Why the file could not be read, from a fixed set (the `kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SqliteErrorKind {
    Missing,
    Permission,
    NotADatabase,
    Corrupt,
    Busy,
    Timeout,
    Io,
    Other,
}

impl SqliteErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SqliteErrorKind::Missing => "missing",
            SqliteErrorKind::Permission => "permission",
            SqliteErrorKind::NotADatabase => "not_a_database",
            SqliteErrorKind::Corrupt => "corrupt",
            SqliteErrorKind::Busy => "busy",
            SqliteErrorKind::Timeout => "timeout",
            SqliteErrorKind::Io => "io",
            SqliteErrorKind::Other => "other",
        }
    }
}

/// A read failure: kind and scrubbed text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SqliteFailure {
    pub kind: SqliteErrorKind,
    pub message: String,
}

/// The outcome of `PRAGMA quick_check`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum QuickCheck {
    Ok {
        seconds: f64,
    },
    /// Problems reported (at most 10 lines, truncated).
    Problems {
        seconds: f64,
        lines: Vec<String>,
    },
    /// Cut off at its budget.
    TimedOut {
        seconds: f64,
    },
    /// Not run this time, and why (`not_due`, `rollback_journal`, `unreadable`).
    Skipped {
        reason: &'static str,
    },
}

/// The cheap facts: sizes and counters, no integrity check. Shared with `checkpoint_migration`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct SqliteCounts {
    pub present: bool,
    pub file_bytes: u64,
    pub wal_bytes: u64,
    /// Highest rowid per LangGraph table (None when the table is missing or unreadable).
    pub checkpoints_max_rowid: Option<u64>,
    pub writes_max_rowid: Option<u64>,
    pub tables_present: Vec<String>,
    pub journal_mode: Option<String>,
    pub page_size: Option<u64>,
    pub page_count: Option<u64>,
    pub freelist_count: Option<u64>,
    pub error: Option<SqliteFailure>,
}

impl SqliteCounts {
    pub fn readable(&self) -> bool {
        self.present && self.error.is_none()
    }
    pub fn store_bytes(&self) -> u64 {
        self.file_bytes + self.wal_bytes
    }
    /// Rows written as the file counts them: the sum of the tables' highest rowids.
    pub fn writes(&self) -> Option<u64> {
        match (self.checkpoints_max_rowid, self.writes_max_rowid) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        }
    }
}

/// What a run saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SqliteStore {
    pub path: String,
    #[serde(flatten)]
    pub counts: SqliteCounts,
    pub tables_missing: Vec<String>,
    pub quick_check: QuickCheck,
    /// Growth of file + WAL over the growth window (None until two readings).
    pub growth: Option<super::checkpoint_migration::Growth>,
}

fn classify(e: &rusqlite::Error) -> SqliteErrorKind {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::NotADatabase) => SqliteErrorKind::NotADatabase,
        Some(C::DatabaseCorrupt) => SqliteErrorKind::Corrupt,
        Some(C::DatabaseBusy | C::DatabaseLocked) => SqliteErrorKind::Busy,
        Some(C::PermissionDenied | C::ReadOnly | C::AuthorizationForStatementDenied) => {
            SqliteErrorKind::Permission
        }
        Some(C::OperationInterrupted) => SqliteErrorKind::Timeout,
        Some(C::SystemIoFailure | C::CannotOpen | C::DiskFull) => SqliteErrorKind::Io,
        _ => SqliteErrorKind::Other,
    }
}

fn failure(e: &rusqlite::Error) -> SqliteFailure {
    SqliteFailure {
        kind: classify(e),
        message: e.to_string().chars().take(200).collect(),
    }
}

fn io_failure(e: &std::io::Error) -> SqliteFailure {
    SqliteFailure {
        kind: match e.kind() {
            std::io::ErrorKind::NotFound => SqliteErrorKind::Missing,
            std::io::ErrorKind::PermissionDenied => SqliteErrorKind::Permission,
            _ => SqliteErrorKind::Io,
        },
        message: e.to_string(),
    }
}

fn wal_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// Opens the file read-only, without creating it, with a short busy timeout.
pub fn open_read_only(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA query_only = 1")?;
    Ok(conn)
}

/// Interrupts whatever the connection runs once `budget` has passed.
fn set_deadline(conn: &mut Connection, budget: Duration) -> Result<(), rusqlite::Error> {
    let deadline = Instant::now() + budget;
    conn.progress_handler(1000, Some(move || Instant::now() > deadline))
}

fn pragma_u64(conn: &Connection, name: &str) -> Option<u64> {
    conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
        .ok()
        .and_then(|v| u64::try_from(v).ok())
}

/// Reads sizes and counters (blocking; bounded by [`READ_BUDGET`] per statement batch).
/// Returns the open connection for further reads when the file was readable.
pub fn read_counts(path: &Path) -> (SqliteCounts, Option<Connection>) {
    let mut c = SqliteCounts::default();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            c.present = true;
            c.file_bytes = m.len();
        }
        Ok(_) => {
            c.error = Some(SqliteFailure {
                kind: SqliteErrorKind::Other,
                message: "not a regular file".into(),
            });
            return (c, None);
        }
        Err(e) => {
            c.error = Some(io_failure(&e));
            return (c, None);
        }
    }
    c.wal_bytes = std::fs::metadata(wal_path(path))
        .map(|m| m.len())
        .unwrap_or(0);
    let mut conn = match open_read_only(path) {
        Ok(conn) => conn,
        Err(e) => {
            c.error = Some(failure(&e));
            return (c, None);
        }
    };
    if let Err(e) = set_deadline(&mut conn, READ_BUDGET) {
        c.error = Some(failure(&e));
        return (c, None);
    }
    let tables: Result<Vec<String>, rusqlite::Error> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('checkpoints', 'writes') ORDER BY name",
        )
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        });
    match tables {
        Ok(t) => c.tables_present = t,
        Err(e) => {
            c.error = Some(failure(&e));
            return (c, None);
        }
    }
    c.journal_mode = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
        .ok()
        .map(|m| m.to_ascii_lowercase());
    c.page_size = pragma_u64(&conn, "page_size");
    c.page_count = pragma_u64(&conn, "page_count");
    c.freelist_count = pragma_u64(&conn, "freelist_count");
    let max_rowid = |t: &str| -> Result<Option<u64>, rusqlite::Error> {
        conn.query_row(&format!("SELECT max(rowid) FROM \"{t}\""), [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .map(|v| Some(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)))
    };
    for t in TABLES {
        if !c.tables_present.iter().any(|p| p == t) {
            continue;
        }
        match max_rowid(t) {
            Ok(v) if t == "checkpoints" => c.checkpoints_max_rowid = v,
            Ok(v) => c.writes_max_rowid = v,
            Err(e) => {
                c.error = Some(failure(&e));
                return (c, None);
            }
        }
    }
    (c, Some(conn))
}

/// Runs `PRAGMA quick_check(10)` under a deadline (blocking).
pub fn quick_check(conn: &mut Connection, budget: Duration) -> QuickCheck {
    let started = Instant::now();
    if set_deadline(conn, budget).is_err() {
        return QuickCheck::Skipped {
            reason: "unreadable",
        };
    }
    let lines: Result<Vec<String>, rusqlite::Error> =
        conn.prepare("PRAGMA quick_check(10)").and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        });
    let seconds = started.elapsed().as_secs_f64();
    match lines {
        Ok(l) if l.len() == 1 && l[0] == "ok" => QuickCheck::Ok { seconds },
        Ok(l) => QuickCheck::Problems {
            seconds,
            lines: l
                .into_iter()
                .take(10)
                .map(|s| s.chars().take(200).collect())
                .collect(),
        },
        Err(e) if classify(&e) == SqliteErrorKind::Timeout => QuickCheck::TimedOut { seconds },
        Err(e) => QuickCheck::Problems {
            seconds,
            lines: vec![failure(&e).message],
        },
    }
}

/// Reads the whole store once (blocking).
pub fn read_store(path: &Path, run_quick_check: bool) -> (SqliteCounts, QuickCheck) {
    let (counts, conn) = read_counts(path);
    let qc = match conn {
        None => QuickCheck::Skipped {
            reason: "unreadable",
        },
        Some(_) if !run_quick_check => QuickCheck::Skipped { reason: "not_due" },
        Some(_) if counts.journal_mode.as_deref() != Some("wal") => QuickCheck::Skipped {
            reason: "rollback_journal",
        },
        Some(mut conn) => quick_check(&mut conn, QUICK_CHECK_BUDGET),
    };
    (counts, qc)
}

struct State {
    last_quick_check: Option<Instant>,
    growth: super::checkpoint_migration::GrowthTracker,
}

pub struct SqliteCheck {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    busy: Arc<AtomicBool>,
}

impl SqliteCheck {
    pub fn new(path: PathBuf, config: &Config) -> SqliteCheck {
        SqliteCheck {
            path,
            state: Arc::new(Mutex::new(State {
                last_quick_check: None,
                growth: super::checkpoint_migration::GrowthTracker::new(config.app.growth_window),
            })),
            busy: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Check for SqliteCheck {
    fn id(&self) -> &'static str {
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
                st.growth.push(
                    Instant::now(),
                    super::checkpoint_migration::Reading {
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
pub fn samples(o: &SqliteStore, out: &mut Vec<Sample>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_a_fact() {
        let (c, qc) = read_store(Path::new("/nonexistent/dir/memory.db"), true);
        assert!(!c.present);
        assert_eq!(c.error.unwrap().kind, SqliteErrorKind::Missing);
        assert_eq!(
            qc,
            QuickCheck::Skipped {
                reason: "unreadable"
            }
        );
    }

    #[test]
    fn samples_of_an_unreadable_file() {
        let o = SqliteStore {
            path: "/x".into(),
            counts: SqliteCounts {
                present: true,
                file_bytes: 10,
                error: Some(SqliteFailure {
                    kind: SqliteErrorKind::NotADatabase,
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
