//! Check `checkpoint_migration`: where do checkpoints actually grow? The app's factory switches
//! on `FEATURE_DATABASE_TYPE`, but its interfaces may still build SQLite savers directly, and the
//! factory never calls `setup()`, so the PostgreSQL tables can be missing. This check reads both
//! stores on the slow cadence and records, as facts, which one grew within the growth window:
//!
//! - configured `postgresql`, SQLite grew, PostgreSQL did not (or its tables do not exist):
//!   the migration did not take effect (`migration_not_effective`);
//! - configured `sqlite`, PostgreSQL grew, SQLite did not: the rollback did not take effect
//!   (`rollback_not_effective`);
//! - both grew: a partial migration (configured `postgresql`, an interface still builds
//!   `SqliteSaver`) or a partial rollback (configured `sqlite`, an interface still builds
//!   `PostgresSaver`) (`partial`).
//!
//! Who still writes SQLite: the newest SQLite checkpoints' thread ids and metadata, read in the
//! same read-only pass, summarized as shapes and masked examples ([`writer_hints`]; a thread id
//! can be a phone number, so none is kept whole).
//!
//! SQLite side: file + WAL size and the tables' highest rowids (read-only, bounded, on the
//! blocking pool). PostgreSQL side: one statement over `checkpoints`, `checkpoint_blobs`,
//! `checkpoint_writes` (looked up by name in LangGraph's schema, see `pg_schema`), sizes, `reltuples` and `n_tup_ins +
//! n_tup_upd`. A side that cannot be read carries its error; the other side still reports.
//!
//! Were the conversations migrated? In the same pass, each store's threads with their newest
//! root checkpoint id (at most [`THREADS_CAP`] + 1 per store, in byte order of the thread id),
//! compared by [`compare_threads`]: threads per store, threads only in SQLite (never migrated),
//! threads whose newest SQLite checkpoint is newer than PostgreSQL's (written to SQLite after
//! the switch). Only counts and a few masked ids leave `observe()`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::pg::util as pg_util;
use super::{BoxFuture, Cadence, Check, Observation};
use crate::catalog::{self, Sample};
use crate::config::{Config, DatabaseType};
use crate::error::{CheckError, ErrorKind};
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::CHECKPOINT_MIGRATION;
/// LangGraph's PostgreSQL checkpointer tables.
pub(crate) const PG_TABLES: [&str; 3] = ["checkpoints", "checkpoint_blobs", "checkpoint_writes"];

/// The statement, over the tables in the schema `pg_schema` finds LangGraph's in (a catalog
/// lookup by name: no USAGE on that schema needed): one JSON document, a [`PgTable`] per
/// table, decoded by name. The writes come from the statistics functions by table oid, not
/// from `pg_stat_user_tables`, a view that aggregates every table and index of the database
/// before any join (its cost would grow with the number of tables).
fn pg_sql(place: &super::pg::schema::LangGraphPlace) -> String {
    format!(
        "WITH {} SELECT coalesce(json_agg(json_build_object(\
         'table', n.t, 'exists', c.oid IS NOT NULL, \
         'bytes', coalesce(pg_total_relation_size(c.oid), 0), \
         'rows_estimate', coalesce(c.reltuples, -1)::bigint, \
         'writes', coalesce(pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid), 0)) ORDER BY n.i), '[]') \
         FROM (VALUES (1, 'checkpoints'), (2, 'checkpoint_blobs'), (3, 'checkpoint_writes')) AS n(i, t) CROSS JOIN lg \
         LEFT JOIN pg_namespace ns ON ns.nspname = lg.sch \
         LEFT JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = n.t AND c.relkind IN ('r', 'p')",
        place.cte()
    )
}

/// One LangGraph table as the PostgreSQL statement reports it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct PgTable {
    table: String,
    exists: bool,
    bytes: i64,
    /// `reltuples`: -1 before the first ANALYZE.
    rows_estimate: i64,
    /// Inserts + updates since the statistics were reset.
    writes: i64,
}

// Readings, growth and the store history are the checks' one growth history.
pub(crate) use super::history::{Growth, Reading, StoreHistory};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgresql,
}

impl Backend {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgresql => "postgresql",
        }
    }
}

/// One side's facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideFacts {
    pub(crate) backend: Backend,
    /// Read this run.
    pub(crate) readable: bool,
    /// Why not (kind and scrubbed text).
    pub(crate) error: Option<String>,
    pub(crate) store_bytes: Option<u64>,
    pub(crate) rows_estimate: Option<u64>,
    pub(crate) writes: Option<u64>,
    pub tables_present: Vec<String>,
    pub(crate) tables_missing: Vec<String>,
    pub growth: Option<Growth>,
    /// Who wrote the newest checkpoints (SQLite only; `None` when not read).
    /// Boxed: most runs have none, and it keeps `Observation` small.
    pub(crate) writers: Option<Box<WriterHints>>,
}

impl SideFacts {
    /// Known to grow (Some(true)), known not to (Some(false)), or unknown.
    pub(crate) fn growing(&self) -> Option<bool> {
        if !self.readable {
            return None;
        }
        self.growth.map(|g| g.growing)
    }
}

/// What a run saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationFacts {
    pub(crate) configured: DatabaseType,
    pub(crate) window_seconds: f64,
    pub sqlite: Option<SideFacts>,
    pub postgresql: Option<SideFacts>,
    /// Configured `postgresql`, SQLite grew and PostgreSQL did not (or has no tables).
    pub migration_not_effective: bool,
    /// Configured `sqlite`, PostgreSQL grew and SQLite did not.
    pub rollback_not_effective: bool,
    /// LangGraph PostgreSQL tables that do not exist (`setup()` never ran?).
    pub pg_tables_missing: Vec<String>,
    /// Both stores grew within the window: with `postgresql` configured an interface still
    /// writes SQLite (a partial migration); with `sqlite` one still writes PostgreSQL (a
    /// partial rollback).
    pub(crate) partial: bool,
    /// Threads of both stores compared (`None` unless both were read with their threads).
    pub(crate) threads: Option<ThreadComparison>,
}

/// Threads read per store per run. Above it, the comparison covers the threads up to the
/// cap-th id in byte order (of the store that has more): counts are then lower bounds and
/// `truncated` says so. 10 000 thread heads are about a megabyte, read in well under a second.
pub(crate) const THREADS_CAP: usize = 10_000;
/// Masked ids a finding may show per kind.
pub(crate) const THREAD_EXAMPLES: usize = 3;

/// Threads of the two stores compared: counts and masked ids only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ThreadComparison {
    pub(crate) sqlite_threads: u64,
    pub(crate) postgresql_threads: u64,
    /// In SQLite only.
    pub(crate) missing: u64,
    /// Newest checkpoint in SQLite newer than in PostgreSQL.
    pub(crate) stale: u64,
    /// A store had more than [`THREADS_CAP`] threads: the figures are lower bounds.
    pub(crate) truncated: bool,
    pub(crate) missing_examples: Vec<String>,
    pub(crate) stale_examples: Vec<String>,
}

/// Pure: compares each store's (thread id, newest checkpoint id) pairs, sorted by thread id in
/// byte order, at most `cap + 1` each. LangGraph's checkpoint ids are UUIDv6, ordered by time
/// as text.
pub(crate) fn compare_threads(
    sqlite: &[(String, String)],
    postgresql: &[(String, String)],
    cap: usize,
) -> ThreadComparison {
    let cap = cap.max(1);
    let last = |v: &[(String, String)]| (v.len() > cap).then(|| v[cap - 1].0.clone());
    let bound = match (last(sqlite), last(postgresql)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let within = |id: &str| bound.as_deref().is_none_or(|b| id <= b);
    let pg: std::collections::HashMap<&str, &str> = postgresql
        .iter()
        .take(cap)
        .filter(|(t, _)| within(t))
        .map(|(t, c)| (t.as_str(), c.as_str()))
        .collect();
    let mut out = ThreadComparison {
        sqlite_threads: sqlite.len().min(cap) as u64,
        postgresql_threads: postgresql.len().min(cap) as u64,
        truncated: bound.is_some(),
        ..ThreadComparison::default()
    };
    let mask = |id: &str| ThreadShape::of(id).mask(id);
    for (t, c) in sqlite.iter().take(cap).filter(|(t, _)| within(t)) {
        match pg.get(t.as_str()) {
            None => {
                out.missing += 1;
                if out.missing_examples.len() < THREAD_EXAMPLES {
                    out.missing_examples.push(mask(t));
                }
            }
            Some(p) if c.as_str() > *p => {
                out.stale += 1;
                if out.stale_examples.len() < THREAD_EXAMPLES {
                    out.stale_examples.push(mask(t));
                }
            }
            Some(_) => {}
        }
    }
    out
}

/// The PostgreSQL statement for the thread heads, in the schema `lg_schema` names.
fn pg_threads_sql(schema: &str) -> String {
    format!(
        "SELECT thread_id, max(checkpoint_id COLLATE \"C\") FROM {}.checkpoints \
         WHERE checkpoint_ns = '' GROUP BY thread_id ORDER BY thread_id COLLATE \"C\" LIMIT {}",
        super::pg::util::ident(schema),
        THREADS_CAP + 1
    )
}

/// The shape of a thread id, which tells the interface that made it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "shape", content = "prefix")]
pub enum ThreadShape {
    /// 7 to 15 digits, optionally after `+` or a `whatsapp:`-like prefix: a phone number
    /// (WhatsApp's sender `wa_id`).
    Phone,
    /// A UUID: a Chainlit or web session id.
    Uuid,
    /// A short number (a fixed thread id such as `1`).
    SmallNumber,
    /// `word:...`, `word-...`, `word_...`: an interface's own prefix.
    Prefixed(String),
    Other,
}

impl ThreadShape {
    /// Pure: the shape of one thread id.
    pub(crate) fn of(id: &str) -> ThreadShape {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let bare = id.strip_prefix('+').unwrap_or(id);
        if digits(bare) {
            return if (7..=15).contains(&bare.len()) {
                ThreadShape::Phone
            } else if bare.len() < 7 {
                ThreadShape::SmallNumber
            } else {
                ThreadShape::Other
            };
        }
        let b = id.as_bytes();
        if b.len() == 36
            && b.iter().enumerate().all(|(i, c)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    *c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
        {
            return ThreadShape::Uuid;
        }
        if let Some(pos) = id.find([':', '-', '_', '/'])
            && (2..=24).contains(&pos)
            && id[..pos].bytes().all(|c| c.is_ascii_alphabetic())
        {
            let rest = id[pos + 1..].trim_start_matches('+');
            if digits(rest) && (7..=15).contains(&rest.len()) {
                return ThreadShape::Phone;
            }
            return ThreadShape::Prefixed(id[..pos].to_ascii_lowercase());
        }
        ThreadShape::Other
    }

    /// What the shape suggests, for a human.
    pub(crate) fn describe(&self) -> String {
        match self {
            ThreadShape::Phone => "phone-number thread ids (WhatsApp: the sender's number)".into(),
            ThreadShape::Uuid => "UUID thread ids (Chainlit or web/voice sessions)".into(),
            ThreadShape::SmallNumber => {
                "small-number thread ids (a fixed id such as Chainlit's 1)".into()
            }
            ThreadShape::Prefixed(p) => format!("thread ids prefixed \"{p}\""),
            ThreadShape::Other => "other thread ids".into(),
        }
    }

    /// A masked example: enough to recognise the interface, never a whole phone number or id.
    pub(crate) fn mask(&self, id: &str) -> String {
        let head = |n: usize| id.chars().take(n).collect::<String>();
        let tail = |n: usize| {
            let v: Vec<char> = id.chars().collect();
            v[v.len().saturating_sub(n)..].iter().collect::<String>()
        };
        match self {
            ThreadShape::Phone => {
                // Whatever precedes the number, its first two digits and its last two.
                let start = id.find(|c: char| c.is_ascii_digit()).unwrap_or(0);
                format!("{}…{}", head(start + 2), tail(2))
            }
            ThreadShape::Uuid => format!("{}…", head(8)),
            ThreadShape::SmallNumber => id.to_owned(),
            ThreadShape::Prefixed(p) => format!("{p}{}…", id.chars().nth(p.len()).unwrap_or(':')),
            ThreadShape::Other if id.chars().count() <= 4 => id.to_owned(),
            ThreadShape::Other => format!("{}…", head(3)),
        }
    }
}

/// How many of the sampled checkpoints have a shape, with a masked example.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapeCount {
    #[serde(flatten)]
    pub(crate) shape: ThreadShape,
    pub(crate) checkpoints: usize,
    pub(crate) threads: usize,
    pub(crate) example: String,
}

/// Metadata keys an app may use to name the interface that wrote a checkpoint.
pub(crate) const INTERFACE_KEYS: &[&str] = &[
    "interface",
    "channel",
    "platform",
    "client",
    "source_interface",
];
/// Keys LangGraph writes itself (not the app's).
const LANGGRAPH_KEYS: &[&str] = &[
    "source",
    "step",
    "writes",
    "parents",
    "thread_id",
    "checkpoint_ns",
    "checkpoint_id",
    "run_id",
    "user_id",
    "assistant_id",
    "graph_id",
    "run_attempt",
    "langgraph_version",
    "langgraph_api_version",
    "langgraph_plan",
    "langgraph_host",
    "langgraph_api_url",
];

/// A summary of who wrote the newest checkpoints of a store.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct WriterHints {
    /// Checkpoints looked at (the newest ones).
    pub(crate) sampled: usize,
    /// By thread-id shape, most checkpoints first.
    pub(crate) shapes: Vec<ShapeCount>,
    /// `key=value` of interface-naming metadata keys ([`INTERFACE_KEYS`]), with counts.
    pub(crate) interfaces: Vec<(String, usize)>,
    /// Other keys the app put into the metadata (names only).
    pub(crate) app_keys: Vec<String>,
}

fn clean(s: &str, max: usize) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    ok.then(|| s.to_owned())
}

/// Pure: the summary of the newest checkpoints.
pub(crate) fn writer_hints(recent: &[crate::sqlite::RecentCheckpoint]) -> WriterHints {
    use std::collections::{BTreeMap, BTreeSet};
    let mut shapes: BTreeMap<ThreadShape, (usize, BTreeSet<&str>, String)> = BTreeMap::new();
    let mut interfaces: BTreeMap<String, usize> = BTreeMap::new();
    let mut app_keys: BTreeSet<String> = BTreeSet::new();
    for r in recent {
        let shape = ThreadShape::of(&r.thread_id);
        let e = shapes
            .entry(shape.clone())
            .or_insert_with(|| (0, BTreeSet::new(), shape.mask(&r.thread_id)));
        e.0 += 1;
        e.1.insert(&r.thread_id);
        let meta = r.metadata.as_deref().and_then(|m| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(m).ok()
        });
        for (k, v) in meta.iter().flatten() {
            if INTERFACE_KEYS.contains(&k.as_str()) {
                if let Some(v) = v.as_str().and_then(|v| clean(v, 32)) {
                    *interfaces.entry(format!("{k}={v}")).or_default() += 1;
                }
            } else if !LANGGRAPH_KEYS.contains(&k.as_str())
                && !k.starts_with("__")
                && app_keys.len() < 8
                && let Some(k) = clean(k, 40)
            {
                app_keys.insert(k);
            }
        }
    }
    let mut shapes: Vec<ShapeCount> = shapes
        .into_iter()
        .map(|(shape, (n, threads, example))| ShapeCount {
            shape,
            checkpoints: n,
            threads: threads.len(),
            example,
        })
        .collect();
    shapes.sort_by_key(|s| std::cmp::Reverse(s.checkpoints));
    let mut interfaces: Vec<(String, usize)> = interfaces.into_iter().collect();
    interfaces.sort_by_key(|i| std::cmp::Reverse(i.1));
    WriterHints {
        sampled: recent.len(),
        shapes,
        interfaces,
        app_keys: app_keys.into_iter().collect(),
    }
}

impl WriterHints {
    /// One line for a finding: "the newest 20 checkpoints: 14 with phone-number thread ids
    /// (WhatsApp...) in 3 threads, e.g. +49…89; metadata interface=whatsapp (14)".
    pub(crate) fn describe(&self) -> Option<String> {
        if self.sampled == 0 {
            return None;
        }
        let mut parts: Vec<String> = self
            .shapes
            .iter()
            .map(|s| {
                format!(
                    "{} with {} in {} thread{}, e.g. {}",
                    s.checkpoints,
                    s.shape.describe(),
                    s.threads,
                    if s.threads == 1 { "" } else { "s" },
                    s.example
                )
            })
            .collect();
        if !self.interfaces.is_empty() {
            parts.push(format!(
                "metadata {}",
                self.interfaces
                    .iter()
                    .map(|(kv, n)| format!("{kv} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.app_keys.is_empty() {
            parts.push(format!(
                "the app's metadata keys: {}",
                self.app_keys.join(", ")
            ));
        }
        Some(format!(
            "the newest {} checkpoints: {}",
            self.sampled,
            parts.join("; ")
        ))
    }
}

/// Pure: the verdict facts from both sides.
pub(crate) fn judge(
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
        partial: sq == Some(true) && pg == Some(true),
        threads: None,
        pg_tables_missing,
        sqlite,
        postgresql,
    }
}

/// Pure: the verdict over a sample shorter than the growth window (`agent diagnose`): growth
/// seen in it is proof, its absence is not (a quiet minute of a store that grows), so a side
/// that did not grow counts as unknown. Only `partial` (both grew) can then be concluded.
pub(crate) fn judge_short_sample(m: &MigrationFacts) -> MigrationFacts {
    let unknown_if_still = |s: &Option<SideFacts>| {
        s.clone().map(|mut s| {
            if s.growth.is_some_and(|g| !g.growing) {
                s.growth = None;
            }
            s
        })
    };
    let mut out = judge(
        m.configured,
        Duration::from_secs_f64(m.window_seconds.max(0.0)),
        unknown_if_still(&m.sqlite),
        unknown_if_still(&m.postgresql),
    );
    out.threads = m.threads.clone();
    out
}

/// Pure: how long `agent diagnose` watches the two stores for growth: the growth window, at
/// most half its `--timeout`; none unless both stores are configured (every verdict compares
/// them) or when under [`MIN_DIAGNOSE_SAMPLE`].
pub(crate) fn diagnose_sample(window: Duration, timeout: Duration, both: bool) -> Option<Duration> {
    Some(window.min(timeout / 2)).filter(|d| both && *d >= MIN_DIAGNOSE_SAMPLE)
}

/// Shorter than this, a store that grows by a write every few seconds looks still.
pub(crate) const MIN_DIAGNOSE_SAMPLE: Duration = Duration::from_secs(1);

struct State {
    sqlite: StoreHistory,
    postgresql: StoreHistory,
}

pub(crate) struct MigrationCheck {
    configured: DatabaseType,
    window: Duration,
    sqlite_path: Option<PathBuf>,
    pg: Option<Arc<PgTarget>>,
    pg_sql: String,
    /// Finds LangGraph's schema name (for the thread heads).
    pg_schema_sql: String,
    state: Mutex<State>,
    busy: Arc<AtomicBool>,
}

impl MigrationCheck {
    pub(crate) fn new(config: &Config, pg: Option<Arc<PgTarget>>) -> MigrationCheck {
        let w = config.app.growth_window;
        MigrationCheck {
            configured: config.app.database_type,
            window: w,
            sqlite_path: config.app.sqlite_path.clone(),
            pg,
            pg_sql: pg_sql(&super::pg::schema::LangGraphPlace::from_config(
                &config.checks,
            )),
            pg_schema_sql: format!(
                "WITH {} SELECT sch FROM lg LIMIT 1",
                super::pg::schema::LangGraphPlace::from_config(&config.checks).cte()
            ),
            state: Mutex::new(State {
                sqlite: StoreHistory::store(w),
                postgresql: StoreHistory::store(w),
            }),
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The side's facts and, apart (never in the facts), its thread heads.
    async fn read_sqlite(&self, path: PathBuf) -> (SideFacts, Option<Vec<(String, String)>>) {
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
            writers: None,
        };
        if self.busy.swap(true, Ordering::AcqRel) {
            side.error = Some("busy: the previous SQLite read is still running".into());
            return (side, None);
        }
        let busy = self.busy.clone();
        let join = tokio::task::spawn_blocking(move || {
            let c = crate::sqlite::read_counts_with_threads(&path, THREADS_CAP as u32);
            busy.store(false, Ordering::Release);
            c
        });
        let mut c = match tokio::time::timeout(crate::sqlite::READ_BUDGET * 4, join).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                side.error = Some(format!("other: {e}"));
                return (side, None);
            }
            Err(_) => {
                side.error = Some("timeout: the SQLite read did not finish".into());
                return (side, None);
            }
        };
        if c.present {
            side.store_bytes = Some(c.store_bytes());
        }
        if let Some(e) = &c.error {
            side.error = Some(format!("{}: {}", e.kind.as_str(), e.message));
            return (side, None);
        }
        side.readable = true;
        side.writes = c.writes();
        side.rows_estimate = c.checkpoints_max_rowid;
        side.tables_present = c.tables_present.clone();
        side.writers = Some(Box::new(writer_hints(&c.recent)));
        side.tables_missing = crate::sqlite::TABLES
            .iter()
            .filter(|t| !c.tables_present.iter().any(|p| p == *t))
            .map(|t| (*t).to_owned())
            .collect();
        (side, c.threads.take())
    }

    async fn read_pg(&self, pg: &PgTarget) -> (SideFacts, Option<Vec<(String, String)>>) {
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
            writers: None,
        };
        let conn = match pg.conn().await {
            Ok(c) => c,
            Err(e) => {
                side.error = Some(format!("{}: {}", e.kind, e.message));
                return (side, None);
            }
        };
        let tables: Vec<PgTable> =
            match pg_util::json_query(pg, &conn, &self.pg_sql, "checkpoint tables").await {
                Ok(t) => t,
                Err(e) => {
                    side.error = Some(format!("{}: {}", e.kind, e.message));
                    return (side, None);
                }
            };
        let (mut bytes, mut rows_est, mut writes) = (0u64, 0u64, 0u64);
        for t in tables {
            if !t.exists {
                side.tables_missing.push(t.table);
                continue;
            }
            bytes += t.bytes.max(0) as u64;
            if t.table == "checkpoints" {
                rows_est = t.rows_estimate.max(0) as u64;
            }
            writes += t.writes.max(0) as u64;
            side.tables_present.push(t.table);
        }
        side.readable = true;
        side.store_bytes = Some(bytes);
        side.rows_estimate = Some(rows_est);
        side.writes = Some(writes);
        // Best effort: the thread heads, when `checkpoints` exists (else no thread is there) and
        // there is a SQLite store to compare them with (else the statements would buy nothing).
        let threads = if self.sqlite_path.is_none() {
            None
        } else if side.tables_present.iter().any(|t| t == "checkpoints") {
            let sch = pg
                .simple_query(&conn, &self.pg_schema_sql)
                .await
                .ok()
                .and_then(|r| r.into_iter().next())
                .and_then(|r| r.into_iter().next().flatten());
            match sch {
                Some(sch) => pg
                    .simple_query(&conn, &pg_threads_sql(&sch))
                    .await
                    .ok()
                    .map(|rows| {
                        rows.into_iter()
                            .map(|r| {
                                let mut r = r.into_iter();
                                (
                                    r.next().flatten().unwrap_or_default(),
                                    r.next().flatten().unwrap_or_default(),
                                )
                            })
                            .collect()
                    }),
                None => None,
            }
        } else {
            Some(vec![])
        };
        (side, threads)
    }
}

impl Check for MigrationCheck {
    fn id(&self) -> &str {
        ID
    }
    fn cadence(&self) -> Cadence {
        Cadence::Slow
    }
    fn timeout(&self) -> Duration {
        let pg = self
            .pg
            .as_ref()
            .map(|p| super::pg::util::timeout(p, 3))
            .unwrap_or_default();
        pg + crate::sqlite::READ_BUDGET * 4 + Duration::from_millis(500)
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
            let (sq, pg) = tokio::join!(sq, pg);
            let (mut sq, sq_threads) = match sq {
                Some((s, t)) => (Some(s), t),
                None => (None, None),
            };
            let (mut pg, pg_threads) = match pg {
                Some((s, t)) => (Some(s), t),
                None => (None, None),
            };
            let threads = match (&sq_threads, &pg_threads) {
                (Some(a), Some(b)) => Some(compare_threads(a, b, THREADS_CAP)),
                _ => None,
            };
            drop((sq_threads, pg_threads));
            if sq.is_none() && pg.is_none() {
                return Err(CheckError::new(
                    ErrorKind::Other,
                    "neither SHORT_TERM_MEMORY_DB_PATH nor a PostgreSQL DSN is configured",
                ));
            }
            let now = super::history::monotonic_seconds();
            let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let st = &mut *guard;
            for (side, tracker) in [(&mut sq, &mut st.sqlite), (&mut pg, &mut st.postgresql)] {
                if let Some(s) = side {
                    if s.readable {
                        s.growth = tracker.push_reading(
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
            let mut facts = judge(self.configured, self.window, sq, pg);
            facts.threads = threads;
            Ok(Observation::CheckpointMigration(facts))
        })
    }
}

/// Pure: the series of a run.
pub(crate) fn samples(o: &MigrationFacts, out: &mut Vec<Sample>) {
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
    if let Some(t) = &o.threads {
        for (store, n) in [
            ("sqlite", t.sqlite_threads),
            ("postgresql", t.postgresql_threads),
        ] {
            out.push(Sample::new(&catalog::MIGRATION_THREADS, &[store], n as f64));
        }
        out.push(Sample::new(
            &catalog::MIGRATION_THREADS_MISSING,
            &[],
            t.missing as f64,
        ));
        out.push(Sample::new(
            &catalog::MIGRATION_THREADS_STALE,
            &[],
            t.stale as f64,
        ));
    }
    out.push(Sample::new(
        &catalog::CHECKPOINT_MISPLACED,
        &[],
        b(o.migration_not_effective || o.rollback_not_effective),
    ));
}

/// The registry entry (the check list in `check/mod.rs`): With either store: SQLite or PostgreSQL.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    if b.config.app.sqlite_path.is_none() && b.pg.is_none() {
        return Vec::new();
    }
    crate::check::one(MigrationCheck::new(b.config, b.pg.cloned()))
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
            writers: None,
        }
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

    /// Issue 13 item 7: both stores growing is a partial migration (or rollback), not "ok";
    /// only PostgreSQL growing under `postgresql` is the migration working.
    #[test]
    fn both_stores_growing_is_partial_in_either_direction() {
        let w = Duration::from_secs(600);
        for configured in [DatabaseType::Postgresql, DatabaseType::Sqlite] {
            let f = judge(
                configured,
                w,
                Some(side(Backend::Sqlite, Some(true))),
                Some(side(Backend::Postgresql, Some(true))),
            );
            assert!(f.partial, "{configured:?}");
            assert!(!f.migration_not_effective && !f.rollback_not_effective);
        }
        let f = judge(
            DatabaseType::Postgresql,
            w,
            Some(side(Backend::Sqlite, Some(false))),
            Some(side(Backend::Postgresql, Some(true))),
        );
        assert!(!f.partial);
        // Unknown on one side (first reading, unreadable) proves nothing.
        let f = judge(
            DatabaseType::Postgresql,
            w,
            Some(side(Backend::Sqlite, Some(true))),
            Some(side(Backend::Postgresql, None)),
        );
        assert!(!f.partial && !f.migration_not_effective);
    }

    #[test]
    fn a_short_sample_proves_growth_not_its_absence() {
        let w = Duration::from_secs(600);
        let f = judge(
            DatabaseType::Postgresql,
            w,
            Some(side(Backend::Sqlite, Some(true))),
            Some(side(Backend::Postgresql, Some(false))),
        );
        assert!(f.migration_not_effective);
        let s = judge_short_sample(&f);
        assert!(!s.migration_not_effective && !s.partial, "{s:#?}");
        let f = judge(
            DatabaseType::Postgresql,
            w,
            Some(side(Backend::Sqlite, Some(true))),
            Some(side(Backend::Postgresql, Some(true))),
        );
        assert!(judge_short_sample(&f).partial);
        let t = Duration::from_secs(10);
        assert_eq!(
            diagnose_sample(w, t, true),
            Some(Duration::from_secs(5)),
            "at most half the budget"
        );
        assert_eq!(
            diagnose_sample(Duration::from_secs(3), t, true),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            diagnose_sample(w, t, false),
            None,
            "one store: nothing to compare"
        );
        assert_eq!(diagnose_sample(w, Duration::from_secs(1), true), None);
    }

    #[test]
    fn thread_id_shapes_and_masks() {
        for (id, shape, masked) in [
            ("+4917612345678", ThreadShape::Phone, "+49…78"),
            ("4917612345678", ThreadShape::Phone, "49…78"),
            (
                "whatsapp:+4917612345678",
                ThreadShape::Phone,
                "whatsapp:+49…78",
            ),
            (
                "3f2a9c1d-8e4b-4c1a-9d2e-0123456789ab",
                ThreadShape::Uuid,
                "3f2a9c1d…",
            ),
            ("1", ThreadShape::SmallNumber, "1"),
            (
                "voice-3f2a9c1d",
                ThreadShape::Prefixed("voice".into()),
                "voice-…",
            ),
            (
                "chainlit:abc",
                ThreadShape::Prefixed("chainlit".into()),
                "chainlit:…",
            ),
            ("x", ThreadShape::Other, "x"),
            ("some thread", ThreadShape::Other, "som…"),
            ("", ThreadShape::Other, ""),
        ] {
            let s = ThreadShape::of(id);
            assert_eq!(s, shape, "{id}");
            assert_eq!(s.mask(id), masked, "{id}");
        }
        // Any input: no panic, and a mask never longer than a few characters of it.
        for id in [
            "ü:1",
            "€€€€€€€€",
            "+",
            "ab:",
            ":abc",
            "a\u{0}b",
            "üü-+49123456789",
            "+€",
        ] {
            let s = ThreadShape::of(id);
            let _ = (s.describe(), s.mask(id));
        }
    }

    #[test]
    fn writer_hints_name_shapes_interfaces_and_never_a_whole_number() {
        use crate::sqlite::RecentCheckpoint;
        let cp = |t: &str, m: &str| RecentCheckpoint {
            thread_id: t.into(),
            metadata: Some(m.into()),
        };
        let mut recent = vec![];
        for i in 0..3 {
            recent.push(cp(
                &format!("+49176123456{i:02}"),
                r#"{"source": "loop", "step": 3, "interface": "whatsapp", "wa_message_id": "x"}"#,
            ));
        }
        recent.push(cp(
            "3f2a9c1d-8e4b-4c1a-9d2e-0123456789ab",
            r#"{"source": "input"}"#,
        ));
        recent.push(cp("1", "not json {"));
        let h = writer_hints(&recent);
        assert_eq!(h.sampled, 5);
        assert_eq!(h.shapes[0].shape, ThreadShape::Phone);
        assert_eq!((h.shapes[0].checkpoints, h.shapes[0].threads), (3, 3));
        assert_eq!(h.interfaces, vec![("interface=whatsapp".to_owned(), 3)]);
        assert_eq!(h.app_keys, vec!["wa_message_id"]);
        let d = h.describe().unwrap();
        assert!(
            d.starts_with("the newest 5 checkpoints: 3 with phone-number"),
            "{d}"
        );
        assert!(
            d.contains("e.g. +49…00") && d.contains("interface=whatsapp (3)"),
            "{d}"
        );
        assert!(!d.contains("4917612345600"), "a whole phone number: {d}");
        let json = serde_json::to_string(&h).unwrap();
        assert!(!json.contains("4917612345600"), "{json}");
        assert!(json.contains(r#""shape":"phone""#), "{json}");
        assert_eq!(writer_hints(&[]).describe(), None);
    }

    fn heads(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(t, c)| ((*t).to_owned(), (*c).to_owned()))
            .collect()
    }

    #[test]
    fn threads_missing_and_stale_are_counted_with_masked_examples() {
        let sq = heads(&[
            ("+4917600000001", "1ef-b"),
            ("+4917600000002", "1ef-c"),
            ("+4917600000003", "1ef-a"),
            ("web-1", "1ef-a"),
        ]);
        let pg = heads(&[
            ("+4917600000001", "1ef-b"),
            ("+4917600000002", "1ef-a"),
            ("only-pg", "1ef-a"),
        ]);
        let t = compare_threads(&sq, &pg, THREADS_CAP);
        assert_eq!(
            (t.sqlite_threads, t.postgresql_threads, t.missing, t.stale),
            (4, 3, 2, 1)
        );
        assert!(!t.truncated);
        assert_eq!(t.stale_examples, vec!["+49…02".to_owned()]);
        assert_eq!(
            t.missing_examples,
            vec!["+49…03".to_owned(), "web-…".to_owned()]
        );
        // No example is a whole id.
        for e in t.missing_examples.iter().chain(&t.stale_examples) {
            assert!(!sq.iter().any(|(id, _)| id == e), "{e}");
        }
    }

    #[test]
    fn above_the_cap_only_the_common_range_is_compared() {
        // cap 2: SQLite has a, b, c (more than 2), PostgreSQL a, b': c is beyond the range.
        let sq = heads(&[("a", "2"), ("b", "1"), ("c", "1")]);
        let pg = heads(&[("a", "1"), ("b", "1")]);
        let t = compare_threads(&sq, &pg, 2);
        assert!(t.truncated);
        assert_eq!((t.sqlite_threads, t.missing, t.stale), (2, 0, 1));
        // PostgreSQL past the cap: its range ends at "b", so SQLite's "c" is not called missing.
        let sq = heads(&[("a", "1"), ("c", "1")]);
        let pg = heads(&[("a", "1"), ("b", "1"), ("z", "1")]);
        let t = compare_threads(&sq, &pg, 2);
        assert!(t.truncated);
        assert_eq!((t.missing, t.stale), (0, 0));
    }
}
