//! Check `pg_table_sizes` (every [`util::rare_interval`]: five slow intervals, at most 5
//! minutes, like the database's size: each size is a `stat` of every file of the table and its
//! indexes, and no alert or dashboard reads these series at a shorter range): total, table
//! (heap + TOAST) and index size and the
//! planner's row estimate of the watched tables (LangGraph's four, in the schema `pg_schema`
//! finds them in, and the expectations file's),
//! with each table's growth per hour from the agent's own history. One statement keyed by the
//! watched tables' names: it never touches another table, so its cost does not grow with them.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::schema::{LangGraphPlace, table_label, want_ctes};
use super::util::{self, Histories};
use crate::catalog::{self, Sample};
use crate::check::{BoxFuture, Cadence, Check, Observation};
use crate::config::{Expectations, LangGraphSchema};
use crate::error::CheckError;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_TABLE_SIZES;

fn sql(place: Option<&LangGraphPlace>, file: &Expectations) -> String {
    format!(
        "WITH {}, \
         rel AS (SELECT sch, tbl, (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = want.sch AND c.relname = want.tbl AND c.relkind IN ('r', 'p')) AS oid FROM want WHERE tbl IS NOT NULL) \
         SELECT coalesce(json_agg(json_build_object('schema', sch, 'table', tbl, \
         'table_bytes', pg_table_size(oid), 'index_bytes', pg_indexes_size(oid), \
         'estimated_rows', (SELECT reltuples::float8 FROM pg_class c WHERE c.oid = rel.oid)) ORDER BY sch, tbl), '[]')::text \
         FROM rel WHERE oid IS NOT NULL",
        want_ctes(place, file)
    )
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawSize {
    pub(crate) schema: String,
    pub(crate) table: String,
    /// Absent: the table's and its indexes' sizes added (`pg_total_relation_size` is exactly
    /// that sum, and would stat every file a second time).
    #[serde(default)]
    pub(crate) total_bytes: Option<u64>,
    pub(crate) table_bytes: Option<u64>,
    pub(crate) index_bytes: Option<u64>,
    pub(crate) estimated_rows: Option<f64>,
}

/// One watched table's size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableSize {
    /// Label form: `table`, or `schema.table` outside `public`.
    pub(crate) table: String,
    pub(crate) total_bytes: u64,
    pub(crate) table_bytes: u64,
    pub(crate) index_bytes: u64,
    /// `pg_class.reltuples`; `None` when never analyzed (-1 on 14+).
    pub(crate) estimated_rows: Option<f64>,
    /// From the agent's history; `None` until two samples a second apart exist.
    pub growth_bytes_per_second: Option<f64>,
}

/// What one run saw: the watched tables that exist (missing ones are the schema check's).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableSizes {
    pub tables: Vec<TableSize>,
}

/// Pure: sizes from the statement's rows (growth filled in by the caller).
pub fn from_raw(raw: Vec<RawSize>) -> Vec<TableSize> {
    raw.into_iter()
        .map(|r| TableSize {
            table: table_label(&r.schema, &r.table),
            total_bytes: r.total_bytes.unwrap_or_else(|| {
                r.table_bytes
                    .unwrap_or(0)
                    .saturating_add(r.index_bytes.unwrap_or(0))
            }),
            table_bytes: r.table_bytes.unwrap_or(0),
            index_bytes: r.index_bytes.unwrap_or(0),
            estimated_rows: r.estimated_rows.filter(|n| *n >= 0.0),
            growth_bytes_per_second: None,
        })
        .collect()
}

pub(crate) struct TableSizesCheck {
    pg: Arc<PgTarget>,
    sql: String,
    history: Histories,
    every: Duration,
}

impl TableSizesCheck {
    pub(crate) fn new(
        pg: Arc<PgTarget>,
        mode: LangGraphSchema,
        place: &LangGraphPlace,
        file: &Expectations,
    ) -> Self {
        TableSizesCheck {
            sql: sql((mode != LangGraphSchema::Off).then_some(place), file),
            pg,
            history: Histories::default(),
            every: util::rare_interval(Duration::from_secs(60)),
        }
    }

    /// Reads the sizes every [`util::rare_interval`] of this slow interval.
    pub(crate) fn with_slow_interval(mut self, slow: Duration) -> Self {
        self.every = util::rare_interval(slow);
        self
    }
}

impl Check for TableSizesCheck {
    fn id(&self) -> &str {
        ID
    }
    fn cadence(&self) -> Cadence {
        Cadence::Every(self.every)
    }
    fn target(&self) -> crate::check::CheckTarget {
        self.pg.check_target()
    }
    fn timeout(&self) -> Duration {
        util::timeout(&self.pg, 1)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            let raw: Vec<RawSize> =
                util::json_query(&self.pg, &conn, &self.sql, "table sizes").await?;
            let now = util::unix_now();
            let mut tables = from_raw(raw);
            for t in &mut tables {
                t.growth_bytes_per_second = self.history.push(&t.table, now, t.total_bytes as f64);
            }
            Ok(Observation::PgTableSizes(TableSizes { tables }))
        })
    }
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &TableSizes, out: &mut Vec<Sample>) {
    for t in &o.tables {
        // No `total` beside its parts: a sum() over the parts would count it twice.
        for (part, v) in [("table", t.table_bytes), ("indexes", t.index_bytes)] {
            out.push(Sample::owned(
                &catalog::PG_TABLE_SIZE,
                vec![t.table.clone(), part.to_owned()],
                v as f64,
            ));
        }
        if let Some(n) = t.estimated_rows {
            out.push(Sample::owned(
                &catalog::PG_TABLE_ROWS,
                vec![t.table.clone()],
                n,
            ));
        }
        if let Some(g) = t.growth_bytes_per_second {
            out.push(Sample::owned(
                &catalog::PG_TABLE_GROWTH,
                vec![t.table.clone()],
                g,
            ));
        }
    }
}

/// The registry entry (the check list in `check/mod.rs`): On the primary.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    let c = &b.config.checks;
    let place = b.langgraph_place();
    b.with_pg(|pg| {
        TableSizesCheck::new(pg, c.langgraph_schema, &place, &c.expectations)
            .with_slow_interval(b.config.agent.slow_interval)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_row_estimates_are_absent() {
        let raw: Vec<RawSize> = util::decode(
            r#"[{"schema": "public", "table": "checkpoints", "total_bytes": 81920,
                 "table_bytes": 16384, "index_bytes": 65536, "estimated_rows": -1},
                {"schema": "app", "table": "orders", "total_bytes": null,
                 "table_bytes": null, "index_bytes": null, "estimated_rows": 12}]"#,
            "x",
        )
        .unwrap();
        let t = from_raw(raw);
        assert_eq!(t[0].estimated_rows, None);
        assert_eq!(t[1].table, "app.orders");
        let mut out = Vec::new();
        samples(&TableSizes { tables: t }, &mut out);
        assert_eq!(out.len(), 2 + 2 + 1);
        // The parts add up to the total and nothing else is beside them (a sum() is honest).
        let parts: f64 = out
            .iter()
            .filter(|s| s.def.name == "rose_pg_table_size_bytes" && s.labels[0] == "checkpoints")
            .filter_map(|s| s.num())
            .sum();
        assert_eq!(parts, 81920.0);
        assert!(!out.iter().any(|s| s.labels.iter().any(|l| l == "total")));
        assert!(out.iter().any(|s| s.labels
            == vec!["checkpoints".to_owned(), "indexes".to_owned()]
            && s.num() == Some(65536.0)));
        // As the statement sends them: no total, the table's and its indexes' sizes added.
        let raw: Vec<RawSize> = util::decode(
            r#"[{"schema": "public", "table": "checkpoints", "table_bytes": 16384,
                 "index_bytes": 65536, "estimated_rows": 3}]"#,
            "x",
        )
        .unwrap();
        assert_eq!(from_raw(raw)[0].total_bytes, 81920);
    }
}
