//! Check `checkpoint_migration`: where do checkpoints actually grow? The app's factory switches
//! on `FEATURE_DATABASE_TYPE`, but its interfaces may still build SQLite savers directly, and the
//! factory never calls `setup()`, so the PostgreSQL tables can be missing. This check reads both
//! stores on the slow cadence and records, as facts, which one grew within the growth window:
//!
//! - configured `postgresql`, SQLite grew, PostgreSQL did not (or its tables do not exist):
//!   the migration did not take effect (`migration_not_effective`);
//! - configured `sqlite`, PostgreSQL grew, SQLite did not: the rollback did not take effect
//!   (`rollback_not_effective`).
//!
//! SQLite side: file + WAL size and the tables' highest rowids (read-only, bounded, on the
//! blocking pool). PostgreSQL side: one statement over `checkpoints`, `checkpoint_blobs`,
//! `checkpoint_writes` (looked up by name in LangGraph's schema, see `pg_schema`), sizes, `reltuples` and `n_tup_ins +
//! n_tup_upd`. A side that cannot be read carries its error; the other side still reports.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BoxFuture, Cadence, Check, Observation};
use crate::catalog::{self, Sample};
use crate::config::{Config, DatabaseType};
use crate::error::{CheckError, ErrorKind};
use crate::pg::PgTarget;

pub const ID: &str = "checkpoint_migration";
/// LangGraph's PostgreSQL checkpointer tables.
pub const PG_TABLES: [&str; 3] = ["checkpoints", "checkpoint_blobs", "checkpoint_writes"];

/// The statement, over the tables in the schema `pg_schema` finds LangGraph's in (a catalog
/// lookup by name: no USAGE on that schema needed).
fn pg_sql(place: &super::pg_schema::LangGraphPlace) -> String {
    format!(
        "WITH {} SELECT n.t, c.oid IS NOT NULL, coalesce(pg_total_relation_size(c.oid), 0), \
         coalesce(c.reltuples, -1)::bigint, coalesce(s.n_tup_ins + s.n_tup_upd, 0) \
         FROM (VALUES ('checkpoints'), ('checkpoint_blobs'), ('checkpoint_writes')) AS n(t) CROSS JOIN lg \
         LEFT JOIN pg_namespace ns ON ns.nspname = lg.sch \
         LEFT JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = n.t AND c.relkind IN ('r', 'p') \
         LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid",
        place.cte()
    )
}

/// One reading of a store.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reading {
    pub bytes: u64,
    /// A counter that rises with every write (SQLite: sum of max rowids; PostgreSQL: inserts +
    /// updates); `None` when unknown.
    pub writes: Option<u64>,
}

/// Change between the oldest reading in the window and the newest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Growth {
    pub span_seconds: f64,
    pub bytes_delta: i64,
    pub writes_delta: Option<i64>,
    /// The write counter went down (statistics reset, rows deleted): judged by size only.
    pub counter_reset: bool,
    /// The store grew: more writes, or (without a usable counter) more bytes.
    pub growing: bool,
}

impl Growth {
    pub fn bytes_per_second(&self) -> f64 {
        if self.span_seconds > 0.0 {
            self.bytes_delta as f64 / self.span_seconds
        } else {
            0.0
        }
    }
}

/// Pure: growth between two readings.
pub fn growth(old: Reading, new: Reading, span: Duration) -> Growth {
    let bytes_delta = new.bytes as i64 - old.bytes as i64;
    let writes_delta = match (old.writes, new.writes) {
        (Some(a), Some(b)) => Some(b as i64 - a as i64),
        _ => None,
    };
    let counter_reset = writes_delta.is_some_and(|d| d < 0);
    // More rows is growth; with a steady or reset counter, judge by size.
    let growing = writes_delta.is_some_and(|d| d > 0) || bytes_delta > 0;
    Growth {
        span_seconds: span.as_secs_f64(),
        bytes_delta,
        writes_delta,
        counter_reset,
        growing,
    }
}

/// Readings over a window; the baseline is the newest reading at least a window old (or the
/// oldest one while the window fills).
#[derive(Debug)]
pub struct GrowthTracker {
    window: Duration,
    history: VecDeque<(Instant, Reading)>,
}

impl GrowthTracker {
    pub fn new(window: Duration) -> GrowthTracker {
        GrowthTracker {
            window,
            history: VecDeque::new(),
        }
    }

    /// Adds a reading; returns the growth against the baseline (None for the first reading).
    pub fn push(&mut self, now: Instant, r: Reading) -> Option<Growth> {
        while self.history.len() >= 2
            && now.saturating_duration_since(self.history[1].0) >= self.window
        {
            self.history.pop_front();
        }
        while self.history.len() >= 4096 {
            self.history.pop_front();
        }
        let g = self
            .history
            .front()
            .map(|(t, old)| growth(*old, r, now.saturating_duration_since(*t)));
        self.history.push_back((now, r));
        g
    }

    /// Forgets the history (the store became unreadable).
    pub fn reset(&mut self) {
        self.history.clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgresql,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgresql => "postgresql",
        }
    }
}

/// One side's facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideFacts {
    pub backend: Backend,
    /// Read this run.
    pub readable: bool,
    /// Why not (kind and scrubbed text).
    pub error: Option<String>,
    pub store_bytes: Option<u64>,
    pub rows_estimate: Option<u64>,
    pub writes: Option<u64>,
    pub tables_present: Vec<String>,
    pub tables_missing: Vec<String>,
    pub growth: Option<Growth>,
}

impl SideFacts {
    /// Known to grow (Some(true)), known not to (Some(false)), or unknown.
    pub fn growing(&self) -> Option<bool> {
        if !self.readable {
            return None;
        }
        self.growth.map(|g| g.growing)
    }
}

/// What a run saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationFacts {
    pub configured: DatabaseType,
    pub window_seconds: f64,
    pub sqlite: Option<SideFacts>,
    pub postgresql: Option<SideFacts>,
    /// Configured `postgresql`, SQLite grew and PostgreSQL did not (or has no tables).
    pub migration_not_effective: bool,
    /// Configured `sqlite`, PostgreSQL grew and SQLite did not.
    pub rollback_not_effective: bool,
    /// LangGraph PostgreSQL tables that do not exist (`setup()` never ran?).
    pub pg_tables_missing: Vec<String>,
}

/// Pure: the verdict facts from both sides.
pub fn judge(
    configured: DatabaseType,
    window: Duration,
    sqlite: Option<SideFacts>,
    postgresql: Option<SideFacts>,
) -> MigrationFacts {
    let sq = sqlite.as_ref().and_then(SideFacts::growing);
    let pg = postgresql.as_ref().and_then(SideFacts::growing);
    let pg_tables_missing = postgresql
        .as_ref()
        .filter(|p| p.readable)
        .map(|p| p.tables_missing.clone())
        .unwrap_or_default();
    MigrationFacts {
        configured,
        window_seconds: window.as_secs_f64(),
        migration_not_effective: configured == DatabaseType::Postgresql
            && sq == Some(true)
            && pg == Some(false),
        rollback_not_effective: configured == DatabaseType::Sqlite
            && pg == Some(true)
            && sq == Some(false),
        pg_tables_missing,
        sqlite,
        postgresql,
    }
}

struct State {
    sqlite: GrowthTracker,
    postgresql: GrowthTracker,
}

pub struct MigrationCheck {
    configured: DatabaseType,
    window: Duration,
    sqlite_path: Option<PathBuf>,
    pg: Option<Arc<PgTarget>>,
    pg_sql: String,
    state: Mutex<State>,
    busy: Arc<AtomicBool>,
}

impl MigrationCheck {
    pub fn new(config: &Config, pg: Option<Arc<PgTarget>>) -> MigrationCheck {
        let w = config.app.growth_window;
        MigrationCheck {
            configured: config.app.database_type,
            window: w,
            sqlite_path: config.app.sqlite_path.clone(),
            pg,
            pg_sql: pg_sql(&super::pg_schema::LangGraphPlace::from_config(
                &config.checks,
            )),
            state: Mutex::new(State {
                sqlite: GrowthTracker::new(w),
                postgresql: GrowthTracker::new(w),
            }),
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn read_sqlite(&self, path: PathBuf) -> SideFacts {
        let mut side = SideFacts {
            backend: Backend::Sqlite,
            readable: false,
            error: None,
            store_bytes: None,
            rows_estimate: None,
            writes: None,
            tables_present: vec![],
            tables_missing: vec![],
            growth: None,
        };
        if self.busy.swap(true, Ordering::AcqRel) {
            side.error = Some("busy: the previous SQLite read is still running".into());
            return side;
        }
        let busy = self.busy.clone();
        let join = tokio::task::spawn_blocking(move || {
            let c = super::sqlite::read_counts(&path);
            busy.store(false, Ordering::Release);
            c
        });
        let c = match tokio::time::timeout(super::sqlite::READ_BUDGET * 4, join).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                side.error = Some(format!("other: {e}"));
                return side;
            }
            Err(_) => {
                side.error = Some("timeout: the SQLite read did not finish".into());
                return side;
            }
        };
        if c.present {
            side.store_bytes = Some(c.store_bytes());
        }
        if let Some(e) = &c.error {
            side.error = Some(format!("{}: {}", e.kind.as_str(), e.message));
            return side;
        }
        side.readable = true;
        side.writes = c.writes();
        side.rows_estimate = c.checkpoints_max_rowid;
        side.tables_present = c.tables_present.clone();
        side.tables_missing = super::sqlite::TABLES
            .iter()
            .filter(|t| !c.tables_present.iter().any(|p| p == *t))
            .map(|t| (*t).to_owned())
            .collect();
        side
    }

    async fn read_pg(&self, pg: &PgTarget) -> SideFacts {
        let mut side = SideFacts {
            backend: Backend::Postgresql,
            readable: false,
            error: None,
            store_bytes: None,
            rows_estimate: None,
            writes: None,
            tables_present: vec![],
            tables_missing: vec![],
            growth: None,
        };
        let rows = match pg.conn().await {
            Ok(conn) => pg.simple_query(&conn, &self.pg_sql).await,
            Err(e) => Err(e),
        };
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                side.error = Some(format!("{}: {}", e.kind, e.message));
                return side;
            }
        };
        let num = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<i64>().ok());
        let (mut bytes, mut rows_est, mut writes) = (0u64, 0u64, 0u64);
        for r in &rows {
            let name = r.first().cloned().flatten().unwrap_or_default();
            let exists = r.get(1).cloned().flatten().as_deref() == Some("t");
            if !exists {
                side.tables_missing.push(name);
                continue;
            }
            side.tables_present.push(name.clone());
            bytes += r.get(2).and_then(num).unwrap_or(0).max(0) as u64;
            if name == "checkpoints" {
                rows_est = r.get(3).and_then(num).unwrap_or(0).max(0) as u64;
            }
            writes += r.get(4).and_then(num).unwrap_or(0).max(0) as u64;
        }
        side.readable = true;
        side.store_bytes = Some(bytes);
        side.rows_estimate = Some(rows_est);
        side.writes = Some(writes);
        side
    }
}

impl Check for MigrationCheck {
    fn id(&self) -> &'static str {
        ID
    }
    fn cadence(&self) -> Cadence {
        Cadence::Slow
    }
    fn timeout(&self) -> Duration {
        let pg = self
            .pg
            .as_ref()
            .map(|p| p.limits().connect_timeout + p.limits().query_timeout)
            .unwrap_or_default();
        pg + super::sqlite::READ_BUDGET * 4 + Duration::from_millis(500)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let sq = async {
                match &self.sqlite_path {
                    Some(p) => Some(self.read_sqlite(p.clone()).await),
                    None => None,
                }
            };
            let pg = async {
                match &self.pg {
                    Some(pg) => Some(self.read_pg(pg).await),
                    None => None,
                }
            };
            let (mut sq, mut pg) = tokio::join!(sq, pg);
            if sq.is_none() && pg.is_none() {
                return Err(CheckError::new(
                    ErrorKind::Other,
                    "neither SHORT_TERM_MEMORY_DB_PATH nor a PostgreSQL DSN is configured",
                ));
            }
            let now = Instant::now();
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let st = &mut *guard;
            for (side, tracker) in [(&mut sq, &mut st.sqlite), (&mut pg, &mut st.postgresql)] {
                if let Some(s) = side {
                    if s.readable {
                        s.growth = tracker.push(
                            now,
                            Reading {
                                bytes: s.store_bytes.unwrap_or(0),
                                writes: s.writes,
                            },
                        );
                    } else if s.store_bytes.is_none() {
                        tracker.reset();
                    }
                }
            }
            Ok(Observation::CheckpointMigration(judge(
                self.configured,
                self.window,
                sq,
                pg,
            )))
        })
    }
}

/// Pure: the series of a run.
pub fn samples(o: &MigrationFacts, out: &mut Vec<Sample>) {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    for (backend, on) in [
        ("sqlite", o.configured == DatabaseType::Sqlite),
        ("postgresql", o.configured == DatabaseType::Postgresql),
    ] {
        out.push(Sample::new(
            &catalog::CHECKPOINT_CONFIGURED,
            &[backend],
            b(on),
        ));
    }
    for side in [&o.sqlite, &o.postgresql].into_iter().flatten() {
        let be = side.backend.as_str();
        if let Some(v) = side.store_bytes {
            out.push(Sample::new(
                &catalog::CHECKPOINT_STORE_BYTES,
                &[be],
                v as f64,
            ));
        }
        if !side.readable {
            continue;
        }
        if let Some(v) = side.rows_estimate {
            out.push(Sample::new(
                &catalog::CHECKPOINT_STORE_ROWS,
                &[be],
                v as f64,
            ));
        }
        if let Some(v) = side.writes {
            out.push(Sample::new(
                &catalog::CHECKPOINT_STORE_WRITES,
                &[be],
                v as f64,
            ));
        }
        if let Some(g) = &side.growth {
            out.push(Sample::new(
                &catalog::CHECKPOINT_STORE_GROWING,
                &[be],
                b(g.growing),
            ));
        }
    }
    if let Some(pg) = o.postgresql.as_ref().filter(|p| p.readable) {
        for t in PG_TABLES {
            let present = pg.tables_present.iter().any(|p| p == t);
            out.push(Sample::new(
                &catalog::CHECKPOINT_PG_TABLE_PRESENT,
                &[t],
                b(present),
            ));
        }
    }
    out.push(Sample::new(
        &catalog::CHECKPOINT_MISPLACED,
        &[],
        b(o.migration_not_effective || o.rollback_not_effective),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(backend: Backend, growing: Option<bool>) -> SideFacts {
        SideFacts {
            backend,
            readable: true,
            error: None,
            store_bytes: Some(100),
            rows_estimate: Some(1),
            writes: Some(1),
            tables_present: vec![],
            tables_missing: vec![],
            growth: growing.map(|g| Growth {
                span_seconds: 60.0,
                bytes_delta: 0,
                writes_delta: Some(i64::from(g)),
                counter_reset: false,
                growing: g,
            }),
        }
    }

    #[test]
    fn growth_prefers_the_write_counter() {
        let r = |bytes, writes| Reading { bytes, writes };
        let s = Duration::from_secs(10);
        assert!(growth(r(100, Some(1)), r(100, Some(2)), s).growing);
        assert!(!growth(r(100, Some(2)), r(100, Some(2)), s).growing);
        // WAL growth with the same rowid still counts as growth (bytes).
        assert!(growth(r(100, Some(2)), r(200, Some(2)), s).growing);
        let g = growth(r(100, Some(9)), r(100, Some(2)), s);
        assert!(g.counter_reset && !g.growing);
        let g = growth(r(100, None), r(300, None), s);
        assert!(g.growing);
        assert_eq!(g.bytes_per_second(), 20.0);
    }

    #[test]
    fn tracker_keeps_a_window_baseline() {
        let mut t = GrowthTracker::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let r = |w| Reading {
            bytes: 0,
            writes: Some(w),
        };
        assert_eq!(t.push(t0, r(0)), None);
        let g = t.push(t0 + Duration::from_secs(5), r(1)).unwrap();
        assert_eq!((g.span_seconds, g.writes_delta), (5.0, Some(1)));
        let g = t.push(t0 + Duration::from_secs(12), r(1)).unwrap();
        assert_eq!(g.span_seconds, 12.0, "baseline still the first reading");
        let g = t.push(t0 + Duration::from_secs(16), r(1)).unwrap();
        // The reading at 5 s is now at least a window old, so it became the baseline.
        assert_eq!((g.span_seconds, g.writes_delta), (11.0, Some(0)));
        assert!(!g.growing);
    }

    #[test]
    fn verdicts() {
        let w = Duration::from_secs(600);
        let pg_missing = SideFacts {
            tables_missing: vec!["checkpoints".into()],
            ..side(Backend::Postgresql, Some(false))
        };
        let f = judge(
            DatabaseType::Postgresql,
            w,
            Some(side(Backend::Sqlite, Some(true))),
            Some(pg_missing),
        );
        assert!(f.migration_not_effective && !f.rollback_not_effective);
        assert_eq!(f.pg_tables_missing, vec!["checkpoints"]);

        let f = judge(
            DatabaseType::Postgresql,
            w,
            Some(side(Backend::Sqlite, Some(false))),
            Some(side(Backend::Postgresql, Some(true))),
        );
        assert!(!f.migration_not_effective);

        let f = judge(
            DatabaseType::Sqlite,
            w,
            Some(side(Backend::Sqlite, Some(false))),
            Some(side(Backend::Postgresql, Some(true))),
        );
        assert!(f.rollback_not_effective);

        // Unknown growth (first reading, or PostgreSQL unreachable) proves nothing.
        let f = judge(
            DatabaseType::Postgresql,
            w,
            Some(side(Backend::Sqlite, Some(true))),
            Some(SideFacts {
                readable: false,
                ..side(Backend::Postgresql, None)
            }),
        );
        assert!(!f.migration_not_effective);
        let mut out = vec![];
        samples(&f, &mut out);
        assert!(
            out.iter()
                .any(|s| s.def.name == "rose_checkpoint_store_bytes" && s.labels == ["sqlite"])
        );
    }
}
