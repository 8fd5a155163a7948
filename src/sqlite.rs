//! The read-only SQLite driver for LangGraph's checkpointer file (floor 2: used by the
//! `sqlite_checkpointer` check and by `checkpoint_migration`): how the file is opened, bounded
//! reads of its sizes, counters, tables and newest checkpoints, and a bounded
//! `PRAGMA quick_check`.
//!
//! The agent never hurts the file: it never creates, writes, deletes or chowns the database or
//! any file beside it (`-wal`, `-shm`, `-journal`), whoever it runs as. A read-only connection
//! to a WAL-mode file would create `-wal`/`-shm` owned by the agent (then the app, another uid,
//! cannot write), so the way of opening follows the files' state ([`choose_mode`]): a cleanly
//! closed WAL file is read `immutable=1` (no lock, no file but the database), a live one as a
//! WAL reader with a read-only `-shm`. Every statement runs under a progress-handler deadline
//! with a short busy timeout and `PRAGMA query_only`. In WAL mode (what LangGraph's
//! `SqliteSaver` sets) readers never block the writer. In rollback-journal mode a long read
//! would hold a SHARED lock and stall the app's commits, so there `quick_check` is skipped.
//! A read the app disturbed is retried and reported as `busy`, never as corruption.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

/// LangGraph's SqliteSaver tables.
pub(crate) const TABLES: [&str; 2] = ["checkpoints", "writes"];
/// Budget of one `quick_check`; cut off there (reported as timed out, not as a problem).
pub(crate) const QUICK_CHECK_BUDGET: Duration = Duration::from_secs(2);
/// Budget of the cheap statements (tables, pragmas, max rowid).
pub(crate) const READ_BUDGET: Duration = Duration::from_millis(500);
/// How long a statement waits for a lock before giving up (the agent yields, never waits long).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(100);

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
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) message: String,
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
    pub(crate) present: bool,
    pub(crate) file_bytes: u64,
    pub(crate) wal_bytes: u64,
    /// Highest rowid per LangGraph table (None when the table is missing or unreadable).
    pub checkpoints_max_rowid: Option<u64>,
    pub(crate) writes_max_rowid: Option<u64>,
    pub(crate) tables_present: Vec<String>,
    pub(crate) journal_mode: Option<String>,
    pub(crate) page_size: Option<u64>,
    pub(crate) page_count: Option<u64>,
    pub(crate) freelist_count: Option<u64>,
    pub error: Option<SqliteFailure>,
    /// How the last read opened the file (chosen from the files' state, see [`choose_mode`]).
    pub open_mode: Option<OpenMode>,
    /// The newest checkpoints (by rowid, at most [`RECENT_ROWS`]): which interface still
    /// writes here (`checkpoint_migration` summarizes them). Never serialized: a thread id can
    /// be a phone number.
    #[serde(skip)]
    pub(crate) recent: Vec<RecentCheckpoint>,
    /// Each thread's newest checkpoint id (root namespace), in byte order of the thread id, at
    /// most the cap asked for plus one (so `len() > cap` says "more"); `None` unless asked
    /// ([`read_counts_with_threads`]) or when that best-effort read failed. Never serialized:
    /// a thread id can be a phone number.
    #[serde(skip)]
    pub(crate) threads: Option<Vec<(String, String)>>,
}

/// How many of the newest checkpoints a read looks at (an index walk from the end of the
/// rowid b-tree: as cheap as `max(rowid)`).
pub(crate) const RECENT_ROWS: u32 = 20;
/// Bytes of a checkpoint's `metadata` read (LangGraph's JSON; a longer one is cut and then
/// not parsed).
pub(crate) const RECENT_METADATA_BYTES: u32 = 2048;

/// One of the newest checkpoints: its thread id (cut at 128 characters) and the start of its
/// metadata (LangGraph writes JSON).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecentCheckpoint {
    pub(crate) thread_id: String,
    pub(crate) metadata: Option<String>,
}

impl SqliteCounts {
    pub(crate) fn readable(&self) -> bool {
        self.present && self.error.is_none()
    }
    pub(crate) fn store_bytes(&self) -> u64 {
        self.file_bytes + self.wal_bytes
    }
    /// Rows written as the file counts them: the sum of the tables' highest rowids.
    pub(crate) fn writes(&self) -> Option<u64> {
        match (self.checkpoints_max_rowid, self.writes_max_rowid) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        }
    }
}

fn classify(e: &rusqlite::Error) -> SqliteErrorKind {
    use rusqlite::ErrorCode as C;
    use rusqlite::ffi;
    if let rusqlite::Error::SqliteFailure(f, _) = e
        && matches!(
            f.extended_code,
            // The app is mid-recovery, or the read-only `-shm` has no usable read mark yet:
            // the next read succeeds. Not a permission problem.
            ffi::SQLITE_READONLY_CANTINIT
                | ffi::SQLITE_READONLY_RECOVERY
                | ffi::SQLITE_READONLY_ROLLBACK
                | ffi::SQLITE_READONLY_CANTLOCK
        )
    {
        return SqliteErrorKind::Busy;
    }
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

/// `path` with a suffix (`-wal`, `-shm`, `-journal`): the files SQLite keeps beside it.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

// === How the file is opened ===
//
// The agent must never create, modify, delete or chown a file beside the database (issue 14
// item 1): a `-wal`/`-shm` the agent creates belongs to the agent's uid, and the app's next
// write fails with "attempt to write a readonly database". `SQLITE_OPEN_READ_ONLY` does not
// prevent it: a read-only connection to a WAL-mode file creates both. So the way of opening is
// chosen from the state of the files (`FileState`), by a pure rule (`choose_mode`).

/// How a read opens the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenMode {
    /// A WAL-mode file without `-wal`/`-shm` (closed cleanly: the rollback copy while the app
    /// runs on PostgreSQL), or an empty file: `immutable=1`. SQLite opens nothing but the file,
    /// takes no lock, never looks for a WAL. Since nothing stops the app from opening the file
    /// meanwhile, the read counts only when the files did not change during it.
    Immutable,
    /// A WAL-mode file with `-wal` and `-shm` (the app has it open, or crashed): a reader in
    /// SQLite's WAL protocol with `readonly_shm=1`, so the `-shm` is opened read-only and never
    /// created or written, and a read lock on the file held from before the `-wal`/`-shm` were
    /// seen, so the app cannot delete them in between (SQLite would create them again).
    SharedWal,
    /// A rollback-journal file: an ordinary read-only connection (never creates a file; its
    /// SHARED lock is why `quick_check` is skipped there).
    Rollback,
}

/// Identity and change stamp of one file (what a read must leave as it found).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Stamp {
    pub(crate) ino: u64,
    pub(crate) len: u64,
    pub(crate) mtime_ns: i128,
    pub(crate) ctime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// The state of the database and the files beside it, as seen before and after a read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FileState {
    pub(crate) db: Option<Stamp>,
    /// Header bytes 18 and 19 are 2: the file is in WAL mode.
    pub(crate) wal_mode: bool,
    /// The header's file change counter (bytes 24..28): bumped by every rollback-mode commit.
    pub(crate) change_counter: Option<u32>,
    pub(crate) wal: Option<Stamp>,
    pub(crate) shm: bool,
    pub(crate) journal: bool,
}

impl FileState {
    /// Reads it (stat and the 100-byte header; opens nothing for writing, creates nothing).
    pub(crate) fn read(path: &Path) -> FileState {
        use std::io::Read;
        let mut st = FileState {
            db: std::fs::metadata(path).ok().map(|m| Stamp::of(&m)),
            wal: std::fs::metadata(beside(path, "-wal"))
                .ok()
                .map(|m| Stamp::of(&m)),
            shm: std::fs::symlink_metadata(beside(path, "-shm")).is_ok(),
            journal: std::fs::symlink_metadata(beside(path, "-journal")).is_ok(),
            ..FileState::default()
        };
        let mut header = [0u8; 100];
        if let Ok(mut f) = std::fs::File::open(path)
            && f.read_exact(&mut header).is_ok()
            && header.starts_with(b"SQLite format 3\0")
        {
            st.wal_mode = header[18] == 2 && header[19] == 2;
            st.change_counter = Some(u32::from_be_bytes([
                header[24], header[25], header[26], header[27],
            ]));
        }
        st
    }
}

/// Pure: how to open a file in this state.
pub(crate) fn choose_mode(st: &FileState) -> OpenMode {
    if st.wal_mode && st.wal.is_some() && st.shm {
        OpenMode::SharedWal
    } else if st.wal_mode || st.change_counter.is_none() {
        // WAL mode with no live WAL (a lone `-wal` without `-shm` is an unfinished crash
        // state SQLite would need to write to recover; its content is ignored), or an empty
        // or foreign file (immutable reports it as not a database without touching anything).
        OpenMode::Immutable
    } else {
        OpenMode::Rollback
    }
}

/// Pure: whether a read in `mode` may be kept, given the state before and after it.
/// An immutable read saw a consistent file only if nothing changed; the other modes are
/// made consistent by SQLite's locks, so only an error that came with a change is discarded.
pub(crate) fn read_is_stable(
    mode: OpenMode,
    before: &FileState,
    after: &FileState,
    failed: bool,
) -> bool {
    match mode {
        OpenMode::Immutable => before == after,
        _ => !failed || before == after,
    }
}

/// `file:` URI of a path, every byte outside the unreserved set and `/` percent-encoded.
fn file_uri(path: &Path, params: &str) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut s = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if !params.is_empty() {
        s.push('?');
        s.push_str(params);
    }
    s
}

/// Opens the file read-only in `mode`, without creating it or anything beside it, with a
/// short busy timeout.
pub(crate) fn open(path: &Path, mode: OpenMode) -> Result<Connection, rusqlite::Error> {
    let params = match mode {
        OpenMode::Immutable => "immutable=1",
        OpenMode::SharedWal => "readonly_shm=1",
        OpenMode::Rollback => "",
    };
    let conn = Connection::open_with_flags(
        file_uri(path, params),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // A read-only connection cannot checkpoint anyway; say so, so closing never tries.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA query_only = 1")?;
    Ok(conn)
}

/// A shared open-file-description lock (`F_OFD_SETLK`) on the whole database file, held while
/// a [`OpenMode::SharedWal`] connection opens and reads. The app's last connection deletes
/// `-wal`/`-shm` on close only under an exclusive lock, so with this held they cannot vanish
/// between the agent seeing them and SQLite opening them (SQLite would then create them, owned
/// by the agent). An OFD lock, unlike a POSIX record lock, belongs to this descriptor only:
/// SQLite's own unlocks and closes in the process neither drop it nor are dropped by it.
fn wal_guard(path: &Path) -> std::io::Result<std::fs::File> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::libc;
    let f = std::fs::File::open(path)?;
    let lock = libc::flock {
        l_type: libc::F_RDLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        // 0: to the end of the file, however it grows.
        l_len: 0,
        // Must be 0 for OFD locks.
        l_pid: 0,
    };
    fcntl(&f, FcntlArg::F_OFD_SETLK(&lock)).map_err(std::io::Error::from)?;
    Ok(f)
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

/// How many times a read is tried when the app changed the file under it or held a lock.
pub(crate) const READ_ATTEMPTS: u32 = 3;

/// Sizes and counters (blocking; bounded by [`READ_BUDGET`] per statement batch) plus every
/// thread's newest checkpoint id, at most `cap + 1` threads (`checkpoint_migration`'s comparison
/// with PostgreSQL; same open modes, same deadline as [`read_store`]).
pub(crate) fn read_counts_with_threads(path: &Path, cap: u32) -> SqliteCounts {
    read_store_opts(path, false, Some(cap)).0
}

/// One attempt in `mode`: counts, then `quick_check` when asked and possible.
fn read_once(
    path: &Path,
    st: &FileState,
    mode: OpenMode,
    run_quick_check: bool,
    threads_cap: Option<u32>,
) -> (SqliteCounts, QuickCheck) {
    let mut c = SqliteCounts {
        present: true,
        file_bytes: st.db.map(|d| d.len).unwrap_or(0),
        wal_bytes: st.wal.map(|w| w.len).unwrap_or(0),
        open_mode: Some(mode),
        ..SqliteCounts::default()
    };
    let unreadable = QuickCheck::Skipped {
        reason: "unreadable",
    };
    let _guard = match mode {
        OpenMode::SharedWal => match wal_guard(path) {
            Ok(g) => Some(g),
            Err(e) => {
                // Held exclusively: the app is closing the file (or changing its journal
                // mode). Transient.
                c.error = Some(SqliteFailure {
                    kind: SqliteErrorKind::Busy,
                    message: format!("the app holds the file locked: {e}"),
                });
                return (c, unreadable);
            }
        },
        _ => None,
    };
    if mode == OpenMode::SharedWal {
        // Seen again under the lock: from here on they cannot go away.
        let now = FileState::read(path);
        if now.wal.is_none() || !now.shm {
            c.error = Some(SqliteFailure {
                kind: SqliteErrorKind::Busy,
                message: "the app closed the file while it was being read".into(),
            });
            return (c, unreadable);
        }
    }
    let mut conn = match open(path, mode) {
        Ok(conn) => conn,
        Err(e) => {
            c.error = Some(failure(&e));
            return (c, unreadable);
        }
    };
    if let Err(e) = set_deadline(&mut conn, READ_BUDGET) {
        c.error = Some(failure(&e));
        return (c, unreadable);
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
            return (c, unreadable);
        }
    }
    // An immutable connection reports its own journal mode, not the file's: the header says.
    c.journal_mode = if st.wal_mode {
        Some("wal".into())
    } else {
        conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .ok()
            .map(|m| m.to_ascii_lowercase())
    };
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
                return (c, unreadable);
            }
        }
    }
    if c.tables_present.iter().any(|t| t == "checkpoints") {
        // Best effort: a failure here leaves the hint empty, the counts stand.
        c.recent = recent_checkpoints(&conn).unwrap_or_default();
        if let Some(cap) = threads_cap {
            // Best effort as well: past the deadline it is `None`, the counts stand.
            c.threads = thread_heads(&conn, cap).ok();
        }
    }
    let qc = if !run_quick_check {
        QuickCheck::Skipped { reason: "not_due" }
    } else if c.journal_mode.as_deref() != Some("wal") {
        QuickCheck::Skipped {
            reason: "rollback_journal",
        }
    } else {
        quick_check(&mut conn, QUICK_CHECK_BUDGET)
    };
    (c, qc)
}

/// The newest [`RECENT_ROWS`] checkpoints' thread ids and metadata (on the connection
/// [`read_once`] opened, under its deadline).
fn recent_checkpoints(conn: &Connection) -> Result<Vec<RecentCheckpoint>, rusqlite::Error> {
    use rusqlite::types::ValueRef;
    let text = |v: ValueRef<'_>| match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(String::from_utf8_lossy(b).into_owned()),
        ValueRef::Integer(i) => Some(i.to_string()),
        _ => None,
    };
    let mut st = conn.prepare(&format!(
        "SELECT substr(thread_id, 1, 128), substr(metadata, 1, {RECENT_METADATA_BYTES}) \
         FROM checkpoints ORDER BY rowid DESC LIMIT {RECENT_ROWS}"
    ))?;
    st.query_map([], |r| {
        Ok(RecentCheckpoint {
            thread_id: text(r.get_ref(0)?).unwrap_or_default(),
            metadata: text(r.get_ref(1)?),
        })
    })?
    .collect()
}

/// Each thread's newest root checkpoint id, first `cap + 1` threads in byte order (SQLite's
/// BINARY collation, the same order as PostgreSQL's `COLLATE "C"`).
fn thread_heads(conn: &Connection, cap: u32) -> Result<Vec<(String, String)>, rusqlite::Error> {
    use rusqlite::types::ValueRef;
    let text = |v: ValueRef<'_>| match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        _ => String::new(),
    };
    let limit = u64::from(cap) + 1;
    // The primary key (thread_id, checkpoint_ns, checkpoint_id) serves the grouping and order.
    let mut st = conn.prepare(&format!(
        "SELECT thread_id, max(checkpoint_id) FROM checkpoints WHERE checkpoint_ns = '' \
         GROUP BY thread_id ORDER BY thread_id LIMIT {limit}"
    ))?;
    st.query_map([], |r| Ok((text(r.get_ref(0)?), text(r.get_ref(1)?))))?
        .collect()
}

/// Runs `PRAGMA quick_check(10)` under a deadline (blocking).
pub(crate) fn quick_check(conn: &mut Connection, budget: Duration) -> QuickCheck {
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
        Err(e) if classify(&e) == SqliteErrorKind::Busy => QuickCheck::Skipped { reason: "busy" },
        Err(e) => QuickCheck::Problems {
            seconds,
            lines: vec![failure(&e).message],
        },
    }
}

/// Reads the whole store (blocking). Never creates, writes, deletes or chowns any file: the
/// way of opening follows the files' state ([`choose_mode`]); a read the app disturbed (the
/// files changed under an immutable read, a lock, a recovery) is tried again, up to
/// [`READ_ATTEMPTS`] times, and is reported as `busy`, never as corruption.
pub fn read_store(path: &Path, run_quick_check: bool) -> (SqliteCounts, QuickCheck) {
    read_store_opts(path, run_quick_check, None)
}

fn read_store_opts(
    path: &Path,
    run_quick_check: bool,
    threads_cap: Option<u32>,
) -> (SqliteCounts, QuickCheck) {
    let unreadable = QuickCheck::Skipped {
        reason: "unreadable",
    };
    let mut c = SqliteCounts::default();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            c.present = true;
            c.error = Some(SqliteFailure {
                kind: SqliteErrorKind::Other,
                message: "not a regular file".into(),
            });
            return (c, unreadable);
        }
        Err(e) => {
            c.error = Some(io_failure(&e));
            return (c, unreadable);
        }
    }
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = FileState::read(path);
        if before.db.is_none() {
            c = SqliteCounts::default();
            c.error = std::fs::metadata(path).err().map(|e| io_failure(&e));
            return (c, unreadable);
        }
        let mode = choose_mode(&before);
        let (mut counts, mut qc) = read_once(path, &before, mode, run_quick_check, threads_cap);
        let after = FileState::read(path);
        let failed = counts.error.is_some();
        let stable = read_is_stable(mode, &before, &after, failed);
        let transient = counts
            .error
            .as_ref()
            .is_some_and(|e| e.kind == SqliteErrorKind::Busy);
        let done =
            (stable && !transient) || attempt >= READ_ATTEMPTS || started.elapsed() > READ_BUDGET;
        if !done {
            std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
            continue;
        }
        if !stable {
            counts.error = Some(SqliteFailure {
                kind: SqliteErrorKind::Busy,
                message: "the app changed the file during every read; read again next cycle".into(),
            });
            qc = QuickCheck::Skipped { reason: "busy" };
        }
        if counts.error.is_some() && !matches!(qc, QuickCheck::Skipped { .. }) {
            qc = unreadable;
        }
        return (counts, qc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(wal_mode: bool, wal: bool, shm: bool) -> FileState {
        FileState {
            db: Some(Stamp::default()),
            wal_mode,
            change_counter: Some(1),
            wal: wal.then(Stamp::default),
            shm,
            journal: false,
        }
    }

    #[test]
    fn mode_follows_the_files_state() {
        // Closed cleanly (the rollback copy): nothing beside it, so nothing may appear.
        assert_eq!(choose_mode(&state(true, false, false)), OpenMode::Immutable);
        // Live (or crashed) WAL: read it as a WAL reader.
        assert_eq!(choose_mode(&state(true, true, true)), OpenMode::SharedWal);
        // Half a WAL: SQLite would have to create the missing one.
        assert_eq!(choose_mode(&state(true, true, false)), OpenMode::Immutable);
        assert_eq!(choose_mode(&state(true, false, true)), OpenMode::Immutable);
        assert_eq!(choose_mode(&state(false, false, false)), OpenMode::Rollback);
        // Empty or foreign: no header to trust.
        let mut empty = state(false, false, false);
        empty.change_counter = None;
        assert_eq!(choose_mode(&empty), OpenMode::Immutable);
    }

    #[test]
    fn an_immutable_read_counts_only_if_nothing_changed() {
        let before = state(true, false, false);
        let mut grown = before.clone();
        grown.db = Some(Stamp {
            len: 4096,
            ..Stamp::default()
        });
        let opened = state(true, true, true);
        assert!(read_is_stable(OpenMode::Immutable, &before, &before, false));
        assert!(!read_is_stable(OpenMode::Immutable, &before, &grown, false));
        assert!(!read_is_stable(
            OpenMode::Immutable,
            &before,
            &opened,
            false
        ));
        // A WAL reader is consistent under SQLite's locks while the app writes.
        assert!(read_is_stable(OpenMode::SharedWal, &opened, &grown, false));
        // ...but an error that came with a change is the change's doing.
        assert!(!read_is_stable(OpenMode::SharedWal, &opened, &before, true));
    }

    #[test]
    fn file_uri_encodes_what_a_uri_would_misread() {
        assert_eq!(
            file_uri(Path::new("/app/data/memory.db"), "immutable=1"),
            "file:/app/data/memory.db?immutable=1"
        );
        assert_eq!(
            file_uri(Path::new("/d/a b?c#d%e.db"), ""),
            "file:/d/a%20b%3Fc%23d%25e.db"
        );
    }

    #[test]
    fn transient_sqlite_codes_are_busy() {
        let e =
            |ext| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(ext), Some("x".into()));
        for ext in [
            rusqlite::ffi::SQLITE_READONLY_CANTINIT,
            rusqlite::ffi::SQLITE_READONLY_RECOVERY,
            rusqlite::ffi::SQLITE_BUSY_RECOVERY,
            rusqlite::ffi::SQLITE_BUSY_SNAPSHOT,
        ] {
            assert_eq!(classify(&e(ext)), SqliteErrorKind::Busy, "{ext}");
        }
        assert_eq!(
            classify(&e(rusqlite::ffi::SQLITE_CORRUPT)),
            SqliteErrorKind::Corrupt
        );
        assert_eq!(
            classify(&e(rusqlite::ffi::SQLITE_READONLY)),
            SqliteErrorKind::Permission
        );
    }

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
}
