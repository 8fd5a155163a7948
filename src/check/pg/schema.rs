//! Check `pg_schema`: does the database hold what the app needs? LangGraph's checkpointer
//! schema (the four tables, the three `*_thread_id_idx` indexes present and valid, the
//! `checkpoint_writes.task_path` column, `checkpoint_migrations` max(v) and row count against the
//! latest migration: 9 for PostgresSaver, 7 for the shallow variant, detected from the columns),
//! plus whatever an expectations file lists for another app. Also reports every invalid index on
//! the watched tables (a failed `CREATE INDEX CONCURRENTLY`) and indexes that duplicate another
//! (the guide's `idx_checkpoints_thread_id` duplicates LangGraph's `checkpoints_thread_id_idx`).
//!
//! LangGraph's schema: `AGENT_LANGGRAPH_SCHEMA_NAME` when set; else found in the same statement
//! (see [`LangGraphPlace`]): the schema holding LangGraph's tables, preferring the app
//! DATABASE_URL's `search_path`, then the most tables, then the agent's own `search_path`; with
//! none anywhere, the first existing schema of the app's `search_path`, else `public`.
//!
//! Statements: one catalog lookup keyed by the watched tables' names (`pg_class` by name, then
//! `pg_attribute` / `pg_index` rows of those tables only: cost never grows with other tables),
//! and, when LangGraph is expected and `checkpoint_migrations` is there and readable, one
//! `max(v), count(*)` over that ten-row table. A 42501 on it (no SELECT, or no USAGE on the
//! schema) is not a failed run: the report carries the GRANT that fixes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{catalog_fingerprint, util};
use crate::catalog::{self, Sample};
use crate::check::{BoxFuture, Cadence, Check, Observation};
use crate::config::{ChecksConfig, Expectations, ExpectedIndex, ExpectedTable, LangGraphSchema};
use crate::error::{CheckError, ErrorKind};
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_SCHEMA;

/// LangGraph's savers create their tables unqualified, in the first schema of the app's
/// `search_path`: `public` unless the app sets another (see [`LangGraphPlace`]).
pub(crate) const LANGGRAPH_SCHEMA: &str = "public";
/// LangGraph's four tables (the catalog lookup that finds their schema is keyed by these).
pub(crate) const LANGGRAPH_TABLES: [&str; 4] = [
    MIGRATIONS_TABLE,
    "checkpoints",
    "checkpoint_blobs",
    "checkpoint_writes",
];
pub(crate) const MIGRATIONS_TABLE: &str = "checkpoint_migrations";
/// The SECURITY DEFINER function `scripts/create-monitoring-role.sql` creates, owned by the app
/// role: max(v) and count(*) of `<schema>.checkpoint_migrations`, for a table created after the
/// monitoring role, without SELECT on the app's other tables.
pub(crate) const VERSION_FUNCTION_SCHEMA: &str = "rose_agent";
pub(crate) const VERSION_FUNCTION: &str = "langgraph_migrations";

/// SQL: true when the current role may call the version function (USAGE on its schema and
/// EXECUTE), NULL when it does not exist.
pub(crate) fn version_function_usable_sql() -> String {
    format!(
        "(SELECT bool_or(has_schema_privilege(n.oid, 'USAGE') AND has_function_privilege(p.oid, 'EXECUTE')) \
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = {} AND p.proname = {} AND p.proargtypes = '25'::oidvector)",
        util::lit(VERSION_FUNCTION_SCHEMA),
        util::lit(VERSION_FUNCTION)
    )
}
/// Latest migration of PostgresSaver (langgraph-checkpoint-postgres 2.0.13 .. 3.1.x).
pub(crate) const LATEST_FULL: i64 = 9;
/// Latest migration of ShallowPostgresSaver.
pub(crate) const LATEST_SHALLOW: i64 = 7;

/// Where LangGraph's tables are looked for: a configured schema, or detection preferring the
/// app's `search_path`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LangGraphPlace {
    /// `AGENT_LANGGRAPH_SCHEMA_NAME`: used as is, never second-guessed.
    pub(crate) name: Option<String>,
    /// The app DATABASE_URL's `search_path`, in order.
    pub(crate) search_path: Vec<String>,
}

impl LangGraphPlace {
    pub(crate) fn from_config(c: &ChecksConfig) -> LangGraphPlace {
        LangGraphPlace {
            name: c.langgraph_schema_name.clone(),
            search_path: c.langgraph_search_path.clone(),
        }
    }

    /// A CTE `lg(sch, src)`: one row, the schema of LangGraph's tables and how it was chosen
    /// (`configured`, `detected`, `search_path`, `default`). Detection is a `pg_class` index
    /// lookup by the four names, so it never grows with other tables, and like the rest of
    /// the catalog it needs no privilege on the schemas it looks at.
    pub(crate) fn cte(&self) -> String {
        if let Some(n) = &self.name {
            return format!(
                "lg(sch, src) AS (SELECT {}::text, 'configured'::text)",
                util::lit(n)
            );
        }
        let prefer = format!(
            "ARRAY[{}]::text[]",
            self.search_path
                .iter()
                .map(|s| util::lit(s))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let names = LANGGRAPH_TABLES
            .iter()
            .map(|t| util::lit(t))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "lg(sch, src) AS (SELECT sch, src FROM (\
             (SELECT n.nspname::text AS sch, 'detected'::text AS src, 1 AS r FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname IN ({names}) AND c.relkind IN ('r', 'p') \
             AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' \
             GROUP BY n.nspname \
             ORDER BY array_position({prefer}, n.nspname::text) NULLS LAST, count(*) DESC, \
             array_position(current_schemas(false)::text[], n.nspname::text) NULLS LAST, n.nspname LIMIT 1) \
             UNION ALL (SELECT p, 'search_path', 2 FROM unnest({prefer}) WITH ORDINALITY u(p, i) \
             WHERE EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = p) ORDER BY i LIMIT 1) \
             UNION ALL SELECT {public}, 'default', 3) x ORDER BY r LIMIT 1)",
            public = util::lit(LANGGRAPH_SCHEMA),
        )
    }
}

/// LangGraph's expected objects in `public`, as an expectations list (the tests' shorthand).
#[cfg(test)]
pub(crate) fn langgraph_expectations() -> Expectations {
    langgraph_expectations_in(LANGGRAPH_SCHEMA)
}

/// LangGraph's expected objects in `schema`.
pub(crate) fn langgraph_expectations_in(schema: &str) -> Expectations {
    let t = |name: &str, columns: &[&str]| ExpectedTable {
        name: name.into(),
        schema: schema.into(),
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
    };
    let i = |name: &str, table: &str| ExpectedIndex {
        name: name.into(),
        table: table.into(),
        schema: schema.into(),
        columns: Some(vec!["thread_id".into()]),
    };
    Expectations {
        tables: vec![
            t(MIGRATIONS_TABLE, &[]),
            t("checkpoints", &[]),
            t("checkpoint_blobs", &[]),
            t("checkpoint_writes", &["task_path"]),
        ],
        indexes: vec![
            i("checkpoints_thread_id_idx", "checkpoints"),
            i("checkpoint_blobs_thread_id_idx", "checkpoint_blobs"),
            i("checkpoint_writes_thread_id_idx", "checkpoint_writes"),
        ],
    }
}

/// LangGraph's (unless off, in `schema`) and the file's expectations together.
pub(crate) fn watched_in(mode: LangGraphSchema, schema: &str, file: &Expectations) -> Expectations {
    let mut e = if mode == LangGraphSchema::Off {
        Expectations::default()
    } else {
        langgraph_expectations_in(schema)
    };
    e.tables.extend(file.tables.iter().cloned());
    e.indexes.extend(file.indexes.iter().cloned());
    e
}

/// LangGraph's (unless off, in `public`) and the file's expectations together (the tests'
/// shorthand for [`watched_in`]).
#[cfg(test)]
pub(crate) fn watched(mode: LangGraphSchema, file: &Expectations) -> Expectations {
    watched_in(mode, LANGGRAPH_SCHEMA, file)
}

/// Every `(schema, table)` watched, once, in order: expected tables and index tables.
pub(crate) fn watched_tables(e: &Expectations) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let all = e
        .tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .chain(
            e.indexes
                .iter()
                .map(|i| (i.schema.clone(), i.table.clone())),
        );
    for st in all {
        if !out.contains(&st) {
            out.push(st);
        }
    }
    out
}

/// The CTEs `[lg(sch, src),] want(sch, tbl)`: the file's tables, and LangGraph's four in the
/// schema `lg` finds (when `place` is given, i.e. LangGraph is expected).
pub(crate) fn want_ctes(place: Option<&LangGraphPlace>, file: &Expectations) -> String {
    let values: Vec<String> = watched_tables(file)
        .iter()
        .map(|(s, t)| format!("({}, {})", util::lit(s), util::lit(t)))
        .collect();
    let values = if values.is_empty() {
        "(NULL::text, NULL::text)".to_owned()
    } else {
        values.join(", ")
    };
    match place {
        None => format!("want(sch, tbl) AS (VALUES {values})"),
        Some(p) => format!(
            "{}, want(sch, tbl) AS (VALUES {values} UNION SELECT lg.sch, t.t FROM lg, unnest(ARRAY[{}]::text[]) t(t))",
            p.cte(),
            LANGGRAPH_TABLES
                .iter()
                .map(|t| util::lit(t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The table label for a name: bare in `public`, else `schema.table`.
pub(crate) fn table_label(schema: &str, table: &str) -> String {
    if schema == "public" {
        table.to_owned()
    } else {
        format!("{schema}.{table}")
    }
}

fn catalog_sql(place: Option<&LangGraphPlace>, file: &Expectations) -> String {
    let want = want_ctes(place, file);
    let langgraph = if place.is_some() {
        let oid = "(SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.nspname = lg.sch AND c.relname = 'checkpoint_migrations' AND c.relkind IN ('r', 'p'))";
        format!(
            "(SELECT json_build_object('schema', lg.sch, 'source', lg.src, \
             'migrations_select', has_table_privilege({oid}, 'SELECT'), \
             'schema_usage', (SELECT has_schema_privilege(n.oid, 'USAGE') FROM pg_namespace n WHERE n.nspname = lg.sch), \
             'function_usable', {function}, \
             'candidates', (SELECT coalesce(json_agg(json_build_object('schema', s.nsp, 'tables', s.n) ORDER BY s.nsp), '[]') \
             FROM (SELECT n.nspname::text AS nsp, count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname IN ({names}) AND c.relkind IN ('r', 'p') \
             AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' GROUP BY n.nspname) s)) FROM lg)",
            names = LANGGRAPH_TABLES
                .iter()
                .map(|t| util::lit(t))
                .collect::<Vec<_>>()
                .join(", "),
            function = version_function_usable_sql(),
        )
    } else {
        "NULL::json".to_owned()
    };
    format!(
        "WITH {want}, \
         rel AS (SELECT sch, tbl, (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = want.sch AND c.relname = want.tbl AND c.relkind IN ('r', 'p')) AS oid FROM want WHERE tbl IS NOT NULL) \
         SELECT json_build_object(\
         'tables', (SELECT coalesce(json_agg(json_build_object('schema', sch, 'table', tbl, 'present', oid IS NOT NULL)), '[]') FROM rel), \
         'columns', (SELECT coalesce(json_agg(json_build_object('schema', r.sch, 'table', r.tbl, 'column', a.attname)), '[]') \
         FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped), \
         'indexes', (SELECT coalesce(json_agg(json_build_object('schema', r.sch, 'table', r.tbl, 'name', c.relname, \
         'valid', i.indisvalid, 'ready', i.indisready, 'unique', i.indisunique, 'primary', i.indisprimary, 'method', am.amname, \
         'columns', (SELECT coalesce(json_agg(coalesce(a.attname::text, '(expression)') ORDER BY k.n), '[]') \
         FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n) \
         LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum > 0 WHERE k.n <= i.indnkeyatts), \
         'signature', concat_ws(' ', am.amname, i.indkey::text, i.indnkeyatts::text, i.indclass::text, i.indcollation::text, i.indoption::text, \
         pg_get_expr(i.indexprs, i.indrelid), pg_get_expr(i.indpred, i.indrelid)), \
         'definition', pg_get_indexdef(i.indexrelid)) ORDER BY r.sch, r.tbl, c.relname), '[]') \
         FROM rel r JOIN pg_index i ON i.indrelid = r.oid JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam), \
         'langgraph', {langgraph})::text"
    )
}

fn migrations_sql(schema: &str, via: Access) -> String {
    match via {
        Access::Function => format!(
            "SELECT json_build_object('max_version', max_version, 'rows', coalesce(row_count, 0))::text \
             FROM (SELECT 1) one LEFT JOIN {}.{}({}) ON true",
            util::ident(VERSION_FUNCTION_SCHEMA),
            util::ident(VERSION_FUNCTION),
            util::lit(schema)
        ),
        Access::Direct => format!(
            "SELECT json_build_object('max_version', max(v), 'rows', count(*))::text FROM {}.{}",
            util::ident(schema),
            util::ident(MIGRATIONS_TABLE)
        ),
    }
}

/// How the migration version is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// SELECT on the table (and USAGE on its schema).
    Direct,
    /// Through the version function of `scripts/create-monitoring-role.sql`.
    Function,
}

/// The statements that let `user` read the migration version in `schema` (USAGE on the schema
/// only when it is missing).
pub(crate) fn migrations_grant(schema: &str, user: &str, usage_missing: bool) -> String {
    let role = util::ident(user);
    let mut g = String::new();
    if usage_missing {
        g.push_str(&format!(
            "GRANT USAGE ON SCHEMA {} TO {role}; ",
            util::ident(schema)
        ));
    }
    g.push_str(&format!(
        "GRANT SELECT ON {}.{} TO {role};",
        util::ident(schema),
        util::ident(MIGRATIONS_TABLE)
    ));
    g
}

/// What the catalog statement says about LangGraph's schema.
#[derive(Debug, Clone, Deserialize)]
pub struct RawLangGraph {
    pub(crate) schema: String,
    /// `configured`, `detected`, `search_path` or `default`.
    pub(crate) source: String,
    /// SELECT on `checkpoint_migrations`; `None` when the table does not exist.
    pub(crate) migrations_select: Option<bool>,
    /// USAGE on the schema; `None` when the schema does not exist.
    pub(crate) schema_usage: Option<bool>,
    /// Every schema holding any of LangGraph's table names, with how many.
    #[serde(default)]
    pub(crate) candidates: Vec<Candidate>,
    /// The version function may be called; `None` when it does not exist.
    #[serde(default)]
    pub(crate) function_usable: Option<bool>,
}

/// A schema holding some of LangGraph's tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub(crate) schema: String,
    pub(crate) tables: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawTable {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) present: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawColumn {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) column: String,
}

/// One index on a watched table, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexInfo {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub name: String,
    /// `pg_index.indisvalid`: false after a failed `CREATE INDEX CONCURRENTLY`.
    pub valid: bool,
    pub(crate) ready: bool,
    pub(crate) unique: bool,
    pub(crate) primary: bool,
    pub(crate) method: String,
    /// Key columns in order (`(expression)` for expression keys).
    pub(crate) columns: Vec<String>,
    /// Identical for indexes that do the same thing (method, keys, opclasses, collations,
    /// options, expressions, predicate).
    #[serde(skip_serializing)]
    pub(crate) signature: String,
    /// `pg_get_indexdef`.
    pub(crate) definition: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawCatalog {
    pub(crate) tables: Vec<RawTable>,
    pub(crate) columns: Vec<RawColumn>,
    pub(crate) indexes: Vec<IndexInfo>,
    /// `None` when LangGraph is not expected.
    pub(crate) langgraph: Option<RawLangGraph>,
}

/// `checkpoint_migrations` contents.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Migrations {
    /// max(v); `None` when the table is empty.
    pub(crate) max_version: Option<i64>,
    pub(crate) rows: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Table,
    Column,
    Index,
}

impl ObjectKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Table => "table",
            ObjectKind::Column => "column",
            ObjectKind::Index => "index",
        }
    }
}

/// Why an expected object does not count as present.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ObjectProblem {
    /// Not there (for a column or index: its table is there, it is not).
    Missing,
    /// Its table is missing, so it cannot be there either.
    TableMissing,
    /// The index exists but is not valid or not ready (`indisvalid` / `indisready` false).
    Invalid { definition: String },
    /// The index exists with other key columns than expected.
    WrongColumns {
        expected: Vec<String>,
        actual: Vec<String>,
        definition: String,
    },
}

/// One expected object and what was found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectStatus {
    pub(crate) kind: ObjectKind,
    /// Label value: `table`, `table.column` or `index` (schema-qualified outside `public`).
    pub name: String,
    pub table: String,
    pub(crate) present: bool,
    pub problem: Option<ObjectProblem>,
}

/// Indexes on one table with the same definition: all but one are redundant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateIndexes {
    pub table: String,
    pub columns: Vec<String>,
    /// The index names, sorted; constraint-backing (primary/unique) ones first.
    pub indexes: Vec<String>,
    pub(crate) definitions: Vec<String>,
}

/// LangGraph schema variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// PostgresSaver: `checkpoints.checkpoint_id` exists.
    Full,
    /// ShallowPostgresSaver: `checkpoints` without `checkpoint_id`.
    Shallow,
    /// `checkpoints` is missing.
    Unknown,
}

impl Variant {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::Shallow => "shallow",
            Variant::Unknown => "unknown",
        }
    }
}

/// LangGraph's migration state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LangGraphState {
    pub(crate) configured: LangGraphSchema,
    /// The schema holding (or expected to hold) LangGraph's tables.
    pub(crate) schema: String,
    /// How `schema` was chosen: `configured` (AGENT_LANGGRAPH_SCHEMA_NAME), `detected` (it
    /// holds LangGraph's tables), `search_path` (the app DSN's first existing schema, no
    /// tables yet) or `default` (`public`).
    pub(crate) schema_source: String,
    /// Every schema holding any of LangGraph's table names, with how many.
    pub(crate) candidates: Vec<Candidate>,
    pub(crate) detected: Variant,
    /// 9 (full) or 7 (shallow): from the configuration, else from detection (full if unknown).
    pub(crate) expected_version: i64,
    /// `None` when the table is missing or unreadable.
    pub(crate) migrations: Option<Migrations>,
    /// Why `migrations` is `None`, and the grant that fixes it when it is a privilege.
    pub migrations_note: Option<String>,
    /// When the table is there but the monitoring role may not read it (SQLSTATE 42501): the
    /// exact statements that let it.
    pub migrations_grant: Option<String>,
}

impl LangGraphState {
    /// Behind: max(v) below the expected latest, or rows missing in between.
    pub fn behind(&self) -> Option<bool> {
        self.migrations.map(|m| {
            m.max_version.unwrap_or(-1) < self.expected_version
                || m.rows < self.expected_version + 1
        })
    }
}

/// What one run saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchemaReport {
    pub objects: Vec<ObjectStatus>,
    /// Every index on the watched tables.
    pub(crate) indexes: Vec<IndexInfo>,
    pub invalid_indexes: Vec<IndexInfo>,
    pub duplicate_indexes: Vec<DuplicateIndexes>,
    pub langgraph: Option<LangGraphState>,
    /// Catalog reads by this check so far: the catalog is read again only when its fingerprint
    /// changes ([`super::catalog_fingerprint`]); 0 from [`evaluate`].
    #[serde(skip)]
    pub catalog_reads: u64,
}

impl SchemaReport {
    pub fn missing(&self) -> Vec<&ObjectStatus> {
        self.objects.iter().filter(|o| !o.present).collect()
    }
}

/// Pure: judges the catalog against the expectations.
pub fn evaluate(expect: &Expectations, raw: &RawCatalog) -> SchemaReport {
    let present: BTreeMap<(&str, &str), bool> = raw
        .tables
        .iter()
        .map(|t| ((t.schema.as_str(), t.table.as_str()), t.present))
        .collect();
    let has_table = |s: &str, t: &str| present.get(&(s, t)).copied().unwrap_or(false);
    let mut objects = Vec::new();
    let mut push = |kind, name: String, table: String, problem: Option<ObjectProblem>| {
        if !objects
            .iter()
            .any(|o: &ObjectStatus| o.kind == kind && o.name == name)
        {
            objects.push(ObjectStatus {
                kind,
                name,
                table,
                present: problem.is_none(),
                problem,
            });
        }
    };
    for t in &expect.tables {
        let label = table_label(&t.schema, &t.name);
        let ok = has_table(&t.schema, &t.name);
        push(
            ObjectKind::Table,
            label.clone(),
            label.clone(),
            (!ok).then_some(ObjectProblem::Missing),
        );
        for c in &t.columns {
            let problem = if !ok {
                Some(ObjectProblem::TableMissing)
            } else if raw
                .columns
                .iter()
                .any(|rc| rc.schema == t.schema && rc.table == t.name && rc.column == *c)
            {
                None
            } else {
                Some(ObjectProblem::Missing)
            };
            push(
                ObjectKind::Column,
                format!("{label}.{c}"),
                label.clone(),
                problem,
            );
        }
    }
    for i in &expect.indexes {
        let table = table_label(&i.schema, &i.table);
        let found = raw
            .indexes
            .iter()
            .find(|x| x.schema == i.schema && x.table == i.table && x.name == i.name);
        let problem = match found {
            _ if !has_table(&i.schema, &i.table) => Some(ObjectProblem::TableMissing),
            None => Some(ObjectProblem::Missing),
            Some(x) if !x.valid || !x.ready => Some(ObjectProblem::Invalid {
                definition: x.definition.clone(),
            }),
            Some(x) => match &i.columns {
                Some(cols) if *cols != x.columns => Some(ObjectProblem::WrongColumns {
                    expected: cols.clone(),
                    actual: x.columns.clone(),
                    definition: x.definition.clone(),
                }),
                _ => None,
            },
        };
        push(
            ObjectKind::Index,
            table_label(&i.schema, &i.name),
            table,
            problem,
        );
    }
    let invalid_indexes = raw
        .indexes
        .iter()
        .filter(|x| !x.valid || !x.ready)
        .cloned()
        .collect();
    let mut groups: BTreeMap<(&str, &str, &str), Vec<&IndexInfo>> = BTreeMap::new();
    for x in &raw.indexes {
        groups
            .entry((x.schema.as_str(), x.table.as_str(), x.signature.as_str()))
            .or_default()
            .push(x);
    }
    let duplicate_indexes = groups
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|((s, t, _), mut v)| {
            v.sort_by(|a, b| {
                (!a.primary, !a.unique, &a.name).cmp(&(!b.primary, !b.unique, &b.name))
            });
            DuplicateIndexes {
                table: table_label(s, t),
                columns: v[0].columns.clone(),
                indexes: v.iter().map(|x| x.name.clone()).collect(),
                definitions: v.iter().map(|x| x.definition.clone()).collect(),
            }
        })
        .collect();
    SchemaReport {
        objects,
        indexes: raw.indexes.clone(),
        invalid_indexes,
        duplicate_indexes,
        langgraph: None,
        catalog_reads: 0,
    }
}

/// Pure: which LangGraph variant the columns in `schema` show.
pub fn detect_variant(raw: &RawCatalog, schema: &str) -> Variant {
    let has = |t: &str, c: &str| {
        raw.columns
            .iter()
            .any(|x| x.schema == schema && x.table == t && x.column == c)
    };
    let checkpoints = raw
        .tables
        .iter()
        .any(|t| t.schema == schema && t.table == "checkpoints" && t.present);
    if !checkpoints {
        Variant::Unknown
    } else if has("checkpoints", "checkpoint_id") || has("checkpoint_blobs", "version") {
        Variant::Full
    } else {
        Variant::Shallow
    }
}

/// Pure: the expected latest migration for a configuration and a detected variant.
pub(crate) fn expected_version(mode: LangGraphSchema, detected: Variant) -> i64 {
    match (mode, detected) {
        (LangGraphSchema::Shallow, _) | (LangGraphSchema::Auto, Variant::Shallow) => LATEST_SHALLOW,
        _ => LATEST_FULL,
    }
}

pub(crate) struct SchemaCheck {
    pg: Arc<PgTarget>,
    mode: LangGraphSchema,
    file: Expectations,
    catalog_sql: String,
    user: String,
    /// Where and how the last run read the migration version: this run reads it in the same
    /// round as the catalog (one statement a cycle instead of two) and keeps the answer if the
    /// catalog still says so.
    last_read: std::sync::Mutex<Option<(String, Access)>>,
    /// The catalog fingerprint ([`super::catalog_fingerprint`]): the catalog is read again only
    /// when it changes.
    fingerprint_sql: String,
    cached: std::sync::Mutex<Option<catalog_fingerprint::Cached<RawCatalog>>>,
    catalog_reads: std::sync::atomic::AtomicU64,
}

impl SchemaCheck {
    pub(crate) fn new(
        pg: Arc<PgTarget>,
        mode: LangGraphSchema,
        place: &LangGraphPlace,
        file: &Expectations,
        user: &str,
    ) -> Self {
        let place = (mode != LangGraphSchema::Off).then_some(place);
        SchemaCheck {
            catalog_sql: catalog_sql(place, file),
            pg,
            mode,
            file: file.clone(),
            user: user.to_owned(),
            last_read: std::sync::Mutex::new(None),
            fingerprint_sql: catalog_fingerprint::sql(
                &fingerprint_tables(place.is_some(), file),
                VERSION_FUNCTION,
            ),
            cached: std::sync::Mutex::new(None),
            catalog_reads: Default::default(),
        }
    }
}

/// The table names the fingerprint watches: LangGraph's (when expected) and the expectation
/// file's, each once.
fn fingerprint_tables(langgraph: bool, file: &Expectations) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let lg = LANGGRAPH_TABLES.iter().copied().filter(|_| langgraph);
    let from_file = file
        .tables
        .iter()
        .map(|t| t.name.as_str())
        .chain(file.indexes.iter().map(|i| i.table.as_str()));
    for name in lg.chain(from_file) {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

impl SchemaCheck {
    /// The catalog: the cached read when the fingerprint (asked in this cycle's round, with
    /// `read` when the cache is due anyway) says nothing changed, else read now.
    async fn catalog(&self, conn: &crate::pg::Conn) -> Result<(RawCatalog, u64), CheckError> {
        let due = {
            let c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            c.as_ref()
                .is_none_or(|c| c.reused + 1 >= catalog_fingerprint::FULL_READ_EVERY)
        };
        let fp = util::json_query::<catalog_fingerprint::Raw>(
            &self.pg,
            conn,
            &self.fingerprint_sql,
            "schema fingerprint",
        );
        let read =
            || util::json_query::<RawCatalog>(&self.pg, conn, &self.catalog_sql, "schema catalog");
        let (fp, early) = if due {
            let (fp, raw) = futures_util::future::join(fp, read()).await;
            (fp, Some(raw?))
        } else {
            (fp.await, None)
        };
        let now = fp.ok().map(|f| f.fingerprint);
        let reads = &self.catalog_reads;
        let raw = match early {
            Some(raw) => raw,
            None => {
                let reused = {
                    let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
                    let raw = catalog_fingerprint::reuse(c.as_ref(), now.as_deref()).cloned();
                    if let (Some(c), true) = (c.as_mut(), raw.is_some()) {
                        c.reused += 1;
                    }
                    raw
                };
                if let Some(raw) = reused {
                    return Ok((raw, reads.load(std::sync::atomic::Ordering::Relaxed)));
                }
                read().await?
            }
        };
        let n = reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(catalog_fingerprint::Cached {
                fingerprint: now.unwrap_or_default(),
                catalog: raw.clone(),
                reused: 0,
            });
        Ok((raw, n))
    }
}

/// Pure: how to read `checkpoint_migrations` given the catalog (`Ok`), or why it cannot be
/// read and, for a privilege, the grant (`Err((note, grant))`).
pub(crate) fn migrations_access(
    raw: &RawCatalog,
    lg: &RawLangGraph,
    user: &str,
) -> Result<Access, (String, Option<String>)> {
    let table_there = raw
        .tables
        .iter()
        .any(|t| t.schema == lg.schema && t.table == MIGRATIONS_TABLE && t.present);
    if !table_there {
        return Err((
            format!(
                "{} is missing: the app never ran the checkpointer's setup()",
                table_label(&lg.schema, MIGRATIONS_TABLE)
            ),
            None,
        ));
    }
    let usage = lg.schema_usage.unwrap_or(false);
    let select = lg.migrations_select.unwrap_or(false);
    if usage && select {
        return Ok(Access::Direct);
    }
    if lg.function_usable == Some(true) {
        return Ok(Access::Function);
    }
    let grant = migrations_grant(&lg.schema, user, !usage);
    Err((
        format!(
            "the monitoring role {user} may not read {} (SQLSTATE 42501: {}): {grant}",
            table_label(&lg.schema, MIGRATIONS_TABLE),
            match (usage, select) {
                (false, false) => "no USAGE on the schema, no SELECT on the table",
                (false, true) => "no USAGE on the schema",
                _ => "no SELECT on the table",
            }
        ),
        Some(grant),
    ))
}

impl Check for SchemaCheck {
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
            let last = self
                .last_read
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let catalog = self.catalog(&conn);
            // The migration version where the last run found it, in the same round.
            let (raw, mut early) = match &last {
                Some((schema, via)) => {
                    let sql = migrations_sql(schema, *via);
                    let read = util::json_query::<Migrations>(
                        &self.pg,
                        &conn,
                        &sql,
                        "checkpoint_migrations",
                    );
                    let (raw, m) = futures_util::future::join(catalog, read).await;
                    (raw?, Some((schema.clone(), *via, m)))
                }
                None => (catalog.await?, None),
            };
            let (raw, catalog_reads) = raw;
            let schema = raw
                .langgraph
                .as_ref()
                .map_or(LANGGRAPH_SCHEMA, |l| l.schema.as_str());
            let expect = watched_in(self.mode, schema, &self.file);
            let mut report = evaluate(&expect, &raw);
            report.catalog_reads = catalog_reads;
            if let Some(lg) = raw
                .langgraph
                .as_ref()
                .filter(|_| self.mode != LangGraphSchema::Off)
            {
                let detected = detect_variant(&raw, &lg.schema);
                let access = migrations_access(&raw, lg, &self.user);
                *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) =
                    access.as_ref().ok().map(|via| (lg.schema.clone(), *via));
                let (migrations, note, grant) = match access {
                    Err((note, grant)) => (None, Some(note), grant),
                    Ok(via) => match match early.take() {
                        Some((schema, v, m)) if schema == lg.schema && v == via => m,
                        _ => {
                            util::json_query::<Migrations>(
                                &self.pg,
                                &conn,
                                &migrations_sql(&lg.schema, via),
                                "checkpoint_migrations",
                            )
                            .await
                        }
                    } {
                        Ok(m) => (Some(m), None, None),
                        // Revoked between the catalog and the read, or a policy: the same gap.
                        Err(e) if e.kind == ErrorKind::PrivilegeMissing => {
                            let grant = migrations_grant(&lg.schema, &self.user, true);
                            (
                                None,
                                Some(format!("{} (SQLSTATE 42501): {grant}", e.message)),
                                Some(grant),
                            )
                        }
                        Err(e) => return Err(e),
                    },
                };
                report.langgraph = Some(LangGraphState {
                    configured: self.mode,
                    schema: lg.schema.clone(),
                    schema_source: lg.source.clone(),
                    candidates: lg.candidates.clone(),
                    detected,
                    expected_version: expected_version(self.mode, detected),
                    migrations,
                    migrations_note: note,
                    migrations_grant: grant,
                });
            }
            Ok(Observation::PgSchema(report))
        })
    }
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &SchemaReport, out: &mut Vec<Sample>) {
    for obj in &o.objects {
        out.push(Sample::owned(
            &catalog::PG_SCHEMA_PRESENT,
            vec![obj.kind.as_str().to_owned(), obj.name.clone()],
            if obj.present { 1.0 } else { 0.0 },
        ));
    }
    out.push(Sample::new(
        &catalog::PG_SCHEMA_INVALID_INDEXES,
        &[],
        o.invalid_indexes.len() as f64,
    ));
    out.push(Sample::new(
        &catalog::PG_SCHEMA_DUPLICATE_INDEXES,
        &[],
        o.duplicate_indexes
            .iter()
            .map(|d| d.indexes.len().saturating_sub(1))
            .sum::<usize>() as f64,
    ));
    if let Some(lg) = &o.langgraph {
        out.push(Sample::new(
            &catalog::PG_SCHEMA_MIGRATION_EXPECTED,
            &[],
            lg.expected_version as f64,
        ));
        out.push(Sample::new(
            &catalog::PG_SCHEMA_VARIANT,
            &[lg.detected.as_str()],
            1.0,
        ));
        if let Some(m) = lg.migrations {
            out.push(Sample::new(
                &catalog::PG_SCHEMA_MIGRATION_VERSION,
                &[],
                m.max_version.unwrap_or(-1) as f64,
            ));
            out.push(Sample::new(
                &catalog::PG_SCHEMA_MIGRATION_ROWS,
                &[],
                m.rows as f64,
            ));
        }
    }
}

/// The registry entry (the check list in `check/mod.rs`): On the primary; the DSN's user is the role whose privileges it reads.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    let c = &b.config.checks;
    let user = b
        .config
        .database
        .dsn
        .as_ref()
        .map(|d| d.user.clone())
        .unwrap_or_default();
    let place = b.langgraph_place();
    b.with_pg(|pg| SchemaCheck::new(pg, c.langgraph_schema, &place, &c.expectations, &user))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(table: &str, name: &str, cols: &[&str], sig: &str) -> IndexInfo {
        IndexInfo {
            schema: "public".into(),
            table: table.into(),
            name: name.into(),
            valid: true,
            ready: true,
            unique: false,
            primary: false,
            method: "btree".into(),
            columns: cols.iter().map(|c| (*c).to_owned()).collect(),
            signature: sig.into(),
            definition: format!(
                "CREATE INDEX {name} ON public.{table} USING btree ({})",
                cols.join(", ")
            ),
        }
    }

    fn full_catalog() -> RawCatalog {
        let t = |n: &str| RawTable {
            schema: "public".into(),
            table: n.into(),
            present: true,
        };
        let c = |t: &str, c: &str| RawColumn {
            schema: "public".into(),
            table: t.into(),
            column: c.into(),
        };
        RawCatalog {
            tables: vec![
                t("checkpoint_migrations"),
                t("checkpoints"),
                t("checkpoint_blobs"),
                t("checkpoint_writes"),
            ],
            columns: vec![
                c("checkpoints", "thread_id"),
                c("checkpoints", "checkpoint_id"),
                c("checkpoint_writes", "task_path"),
            ],
            indexes: vec![
                index(
                    "checkpoints",
                    "checkpoints_thread_id_idx",
                    &["thread_id"],
                    "btree 1",
                ),
                index(
                    "checkpoint_blobs",
                    "checkpoint_blobs_thread_id_idx",
                    &["thread_id"],
                    "btree 1",
                ),
                index(
                    "checkpoint_writes",
                    "checkpoint_writes_thread_id_idx",
                    &["thread_id"],
                    "btree 1",
                ),
            ],
            langgraph: None,
        }
    }

    fn present(r: &SchemaReport, name: &str) -> bool {
        r.objects.iter().find(|o| o.name == name).unwrap().present
    }

    #[test]
    fn a_migrated_schema_has_everything() {
        let e = langgraph_expectations();
        let r = evaluate(&e, &full_catalog());
        assert_eq!(r.objects.len(), 4 + 1 + 3);
        assert!(r.missing().is_empty(), "{:?}", r.missing());
        assert!(r.duplicate_indexes.is_empty());
        assert_eq!(detect_variant(&full_catalog(), "public"), Variant::Full);
        let mut out = Vec::new();
        samples(&r, &mut out);
        assert!(out.iter().any(|s| s.labels
            == vec![
                "column".to_owned(),
                "checkpoint_writes.task_path".to_owned()
            ]
            && s.num() == Some(1.0)));
    }

    #[test]
    fn dropped_invalid_and_duplicate_indexes_and_missing_column() {
        let mut raw = full_catalog();
        raw.indexes
            .retain(|i| i.name != "checkpoints_thread_id_idx");
        raw.indexes[0].valid = false;
        raw.indexes.push(index(
            "checkpoints",
            "idx_checkpoints_thread_id",
            &["thread_id"],
            "btree 1",
        ));
        raw.indexes.push(index(
            "checkpoints",
            "zz_thread_id",
            &["thread_id"],
            "btree 1",
        ));
        raw.columns.retain(|c| c.column != "task_path");
        let r = evaluate(&langgraph_expectations(), &raw);
        assert!(!present(&r, "checkpoints_thread_id_idx"));
        assert!(!present(&r, "checkpoint_blobs_thread_id_idx"));
        assert!(matches!(
            r.objects
                .iter()
                .find(|o| o.name == "checkpoint_blobs_thread_id_idx")
                .unwrap()
                .problem,
            Some(ObjectProblem::Invalid { .. })
        ));
        assert!(!present(&r, "checkpoint_writes.task_path"));
        assert_eq!(r.invalid_indexes.len(), 1);
        assert_eq!(r.duplicate_indexes.len(), 1);
        assert_eq!(
            r.duplicate_indexes[0].indexes,
            vec![
                "idx_checkpoints_thread_id".to_owned(),
                "zz_thread_id".to_owned()
            ]
        );
        let mut out = Vec::new();
        samples(&r, &mut out);
        let dup = out
            .iter()
            .find(|s| s.def.name == "rose_pg_schema_duplicate_indexes")
            .unwrap();
        assert_eq!(dup.num(), Some(1.0));
    }

    #[test]
    fn missing_tables_and_shallow_detection() {
        let raw = RawCatalog {
            tables: vec![RawTable {
                schema: "public".into(),
                table: "checkpoints".into(),
                present: true,
            }],
            columns: vec![],
            indexes: vec![],
            langgraph: None,
        };
        assert_eq!(detect_variant(&raw, "public"), Variant::Shallow);
        assert_eq!(expected_version(LangGraphSchema::Auto, Variant::Shallow), 7);
        assert_eq!(expected_version(LangGraphSchema::Full, Variant::Shallow), 9);
        assert_eq!(expected_version(LangGraphSchema::Auto, Variant::Unknown), 9);
        let r = evaluate(&langgraph_expectations(), &raw);
        let w = r
            .objects
            .iter()
            .find(|o| o.name == "checkpoint_writes_thread_id_idx")
            .unwrap();
        assert_eq!(w.problem, Some(ObjectProblem::TableMissing));
    }

    #[test]
    fn migrations_behind_and_wrong_columns() {
        let lg = LangGraphState {
            configured: LangGraphSchema::Auto,
            detected: Variant::Full,
            schema: "public".into(),
            schema_source: "default".into(),
            candidates: vec![],
            expected_version: 9,
            migrations: Some(Migrations {
                max_version: Some(7),
                rows: 8,
            }),
            migrations_note: None,
            migrations_grant: None,
        };
        assert_eq!(lg.behind(), Some(true));
        let mut e = Expectations::default();
        e.indexes.push(ExpectedIndex {
            name: "checkpoints_thread_id_idx".into(),
            table: "checkpoints".into(),
            schema: "public".into(),
            columns: Some(vec!["checkpoint_ns".into()]),
        });
        let r = evaluate(&e, &full_catalog());
        assert!(matches!(
            r.objects[0].problem,
            Some(ObjectProblem::WrongColumns { .. })
        ));
    }

    #[test]
    fn file_tables_are_watched_once_and_quoted() {
        let mut f = Expectations::default();
        f.tables.push(ExpectedTable {
            name: "or'ders".into(),
            schema: "shop".into(),
            columns: vec!["id".into()],
        });
        f.indexes.push(ExpectedIndex {
            name: "orders_idx".into(),
            table: "or'ders".into(),
            schema: "shop".into(),
            columns: None,
        });
        let w = watched(LangGraphSchema::Off, &f);
        assert_eq!(
            watched_tables(&w),
            vec![("shop".to_owned(), "or'ders".to_owned())]
        );
        let sql = catalog_sql(None, &f);
        assert!(sql.contains("(E'shop', E'or''ders')"), "{sql}");
        assert_eq!(watched_tables(&watched(LangGraphSchema::Auto, &f)).len(), 5);
    }

    fn lg(
        schema: &str,
        select: Option<bool>,
        usage: Option<bool>,
        function: Option<bool>,
    ) -> RawLangGraph {
        RawLangGraph {
            schema: schema.into(),
            source: "detected".into(),
            migrations_select: select,
            schema_usage: usage,
            candidates: vec![],
            function_usable: function,
        }
    }

    fn catalog_in(schema: &str) -> RawCatalog {
        let mut raw = full_catalog();
        for t in &mut raw.tables {
            t.schema = schema.into();
        }
        for c in &mut raw.columns {
            c.schema = schema.into();
        }
        for i in &mut raw.indexes {
            i.schema = schema.into();
        }
        raw
    }

    #[test]
    fn the_version_is_read_directly_through_the_function_or_a_grant_is_named() {
        let raw = catalog_in("rose");
        let ok = |l: &RawLangGraph| migrations_access(&raw, l, "rose_monitor");
        assert_eq!(
            ok(&lg("rose", Some(true), Some(true), None)),
            Ok(Access::Direct)
        );
        assert_eq!(
            ok(&lg("rose", Some(false), Some(false), Some(true))),
            Ok(Access::Function)
        );
        let (note, grant) = ok(&lg("rose", Some(true), Some(false), Some(false))).unwrap_err();
        assert_eq!(
            grant.as_deref(),
            Some(
                "GRANT USAGE ON SCHEMA \"rose\" TO \"rose_monitor\"; GRANT SELECT ON \"rose\".\"checkpoint_migrations\" TO \"rose_monitor\";"
            )
        );
        assert!(
            note.contains("42501") && note.contains("no USAGE on the schema"),
            "{note}"
        );
        let (_, grant) = ok(&lg("rose", Some(false), Some(true), None)).unwrap_err();
        assert_eq!(
            grant.as_deref(),
            Some("GRANT SELECT ON \"rose\".\"checkpoint_migrations\" TO \"rose_monitor\";")
        );
        // Missing table: no grant, setup() is the fix.
        let (note, grant) =
            migrations_access(&full_catalog(), &lg("rose", None, Some(true), None), "m")
                .unwrap_err();
        assert!(
            grant.is_none() && note.contains("rose.checkpoint_migrations is missing"),
            "{note}"
        );
        assert_eq!(detect_variant(&raw, "rose"), Variant::Full);
        assert_eq!(detect_variant(&raw, "public"), Variant::Unknown);
        let r = evaluate(&langgraph_expectations_in("rose"), &raw);
        assert!(r.missing().is_empty(), "{:?}", r.missing());
        assert!(r.objects.iter().any(|o| o.name == "rose.checkpoints"));
    }

    #[test]
    fn place_sql_configured_or_preferring_the_app_search_path() {
        let configured = LangGraphPlace {
            name: Some("ro'se".into()),
            search_path: vec!["x".into()],
        };
        assert_eq!(
            configured.cte(),
            "lg(sch, src) AS (SELECT E'ro''se'::text, 'configured'::text)"
        );
        let detected = LangGraphPlace {
            name: None,
            search_path: vec!["rose".into(), "public".into()],
        };
        let sql = detected.cte();
        assert!(sql.contains("ARRAY[E'rose', E'public']::text[]"), "{sql}");
        assert!(
            sql.contains("c.relname IN (E'checkpoint_migrations'"),
            "{sql}"
        );
        let want = want_ctes(Some(&detected), &Expectations::default());
        assert!(want.contains("UNION SELECT lg.sch, t.t FROM lg"), "{want}");
        assert!(!want_ctes(None, &Expectations::default()).contains("lg"));
    }
}
