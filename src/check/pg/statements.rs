//! Check `pg_statements` (every five slow intervals, `util::rare_interval`: the read walks every
//! entry): pg_stat_statements when it is installed in the database, loaded and readable. Totals
//! for the database, and the top N statements by total
//! and by mean execution time (calls, time, rows), read with `pg_stat_statements(false)` so the
//! query-text file is never loaded. `queryid` is a label only for those top N; query text is
//! never read at all. An absent, unloaded or unreadable extension is a capability reported in
//! the observation and `rose_pg_statements_available 0`, not a failed check.
//!
//! Two statements: find the extension's schema (one `pg_extension` row), then read it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::util;
use crate::catalog::{self, Sample};
use crate::check::{BoxFuture, Cadence, Check, Observation};
use crate::error::CheckError;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_STATEMENTS;

const DETECT_SQL: &str = "SELECT json_build_object(\
     'schema', (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'), \
     'read_all_stats', pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), \
     'user', current_user)::text";

fn stats_sql(schema: &str, top_n: u32) -> String {
    format!(
        "WITH s AS (SELECT queryid, sum(calls)::float8 AS calls, sum(total_exec_time)::float8 AS total_ms, \
         sum(rows)::float8 AS rows FROM {}.pg_stat_statements(false) \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND queryid IS NOT NULL \
         GROUP BY queryid), \
         t AS ((SELECT queryid FROM s ORDER BY total_ms DESC, queryid LIMIT {top_n}) UNION \
         (SELECT queryid FROM s WHERE calls > 0 ORDER BY total_ms / calls DESC, queryid LIMIT {top_n})) \
         SELECT json_build_object('tracked', (SELECT count(*) FROM s), \
         'calls', (SELECT coalesce(sum(calls), 0) FROM s), \
         'total_ms', (SELECT coalesce(sum(total_ms), 0) FROM s), \
         'top', (SELECT coalesce(json_agg(json_build_object('queryid', s.queryid::text, 'calls', s.calls, \
         'total_ms', s.total_ms, 'rows', s.rows) ORDER BY s.total_ms DESC, s.queryid), '[]') \
         FROM s JOIN t USING (queryid)))::text",
        util::ident(schema)
    )
}

/// Whether the numbers could be read, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Available,
    /// `CREATE EXTENSION pg_stat_statements` was not run in this database.
    NotInstalled,
    /// Installed but not in `shared_preload_libraries` (SQLSTATE 55000).
    NotLoaded,
    /// The role may not call the function (SQLSTATE 42501).
    PermissionDenied,
}

/// One top-N statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatementStats {
    pub(crate) queryid: String,
    pub(crate) calls: f64,
    pub(crate) exec_seconds: f64,
    pub(crate) mean_seconds: f64,
    pub(crate) rows: f64,
}

/// What one run saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statements {
    pub availability: Availability,
    /// Schema the extension lives in.
    pub(crate) schema: Option<String>,
    /// False when the role lacks `pg_read_all_stats`: other roles' statements are hidden.
    pub all_users_visible: bool,
    /// What would make it available (SQL or a setting), when it is not.
    pub fix: Option<String>,
    pub tracked: u64,
    pub(crate) calls: f64,
    pub(crate) exec_seconds: f64,
    /// Top N by total time and top N by mean time (union), by total time descending.
    pub top: Vec<StatementStats>,
}

impl Statements {
    fn unavailable(availability: Availability, schema: Option<String>, fix: String) -> Self {
        Statements {
            availability,
            schema,
            all_users_visible: false,
            fix: Some(fix),
            tracked: 0,
            calls: 0.0,
            exec_seconds: 0.0,
            top: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Detect {
    schema: Option<String>,
    read_all_stats: bool,
    user: String,
}

#[derive(Debug, Deserialize)]
pub struct RawTop {
    pub(crate) queryid: String,
    pub(crate) calls: f64,
    pub(crate) total_ms: f64,
    pub(crate) rows: f64,
}

#[derive(Debug, Deserialize)]
pub struct RawStats {
    pub(crate) tracked: u64,
    pub(crate) calls: f64,
    pub(crate) total_ms: f64,
    pub(crate) top: Vec<RawTop>,
}

/// Pure: the observation from the numbers read.
pub fn from_raw(schema: String, all_users_visible: bool, raw: RawStats) -> Statements {
    Statements {
        availability: Availability::Available,
        schema: Some(schema),
        all_users_visible,
        fix: (!all_users_visible)
            .then(|| "GRANT pg_read_all_stats TO <monitoring role>; -- or pg_monitor".to_owned()),
        tracked: raw.tracked,
        calls: raw.calls,
        exec_seconds: raw.total_ms / 1000.0,
        top: raw
            .top
            .into_iter()
            .map(|t| StatementStats {
                mean_seconds: if t.calls > 0.0 {
                    t.total_ms / 1000.0 / t.calls
                } else {
                    0.0
                },
                queryid: t.queryid,
                calls: t.calls,
                exec_seconds: t.total_ms / 1000.0,
                rows: t.rows,
            })
            .collect(),
    }
}

pub(crate) struct StatementsCheck {
    pg: Arc<PgTarget>,
    top_n: u32,
    /// [`util::rare_interval`]: the read walks every entry of pg_stat_statements.
    every: Duration,
}

impl StatementsCheck {
    pub(crate) fn new(pg: Arc<PgTarget>, top_n: u32, slow: Duration) -> Self {
        StatementsCheck {
            pg,
            top_n,
            every: util::rare_interval(slow),
        }
    }
}

impl Check for StatementsCheck {
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
        util::timeout(&self.pg, 2)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let conn = self.pg.conn().await?;
            let d: Detect =
                util::json_query(&self.pg, &conn, DETECT_SQL, "pg_stat_statements detection")
                    .await?;
            let Some(schema) = d.schema else {
                return Ok(Observation::PgStatements(Statements::unavailable(
                    Availability::NotInstalled,
                    None,
                    "CREATE EXTENSION pg_stat_statements; -- with shared_preload_libraries = 'pg_stat_statements'".into(),
                )));
            };
            let sql = stats_sql(&schema, self.top_n);
            match util::json_query::<RawStats>(&self.pg, &conn, &sql, "pg_stat_statements").await {
                Ok(raw) => Ok(Observation::PgStatements(from_raw(schema, d.read_all_stats, raw))),
                Err(e) if e.sqlstate.as_deref() == Some("55000") => {
                    Ok(Observation::PgStatements(Statements::unavailable(
                        Availability::NotLoaded,
                        Some(schema),
                        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'; -- then restart PostgreSQL".into(),
                    )))
                }
                Err(e) if e.sqlstate.as_deref() == Some("42501") => {
                    Ok(Observation::PgStatements(Statements::unavailable(
                        Availability::PermissionDenied,
                        Some(schema.clone()),
                        format!(
                            "GRANT EXECUTE ON FUNCTION {}.pg_stat_statements(boolean) TO {};",
                            util::ident(&schema),
                            util::ident(&d.user)
                        ),
                    )))
                }
                Err(e) => Err(e),
            }
        })
    }
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &Statements, out: &mut Vec<Sample>) {
    let ok = o.availability == Availability::Available;
    out.push(Sample::new(
        &catalog::PG_STATEMENTS_AVAILABLE,
        &[],
        if ok { 1.0 } else { 0.0 },
    ));
    if !ok {
        return;
    }
    out.push(Sample::new(
        &catalog::PG_STATEMENTS_TRACKED,
        &[],
        o.tracked as f64,
    ));
    out.push(Sample::new(&catalog::PG_STATEMENTS_CALLS, &[], o.calls));
    out.push(Sample::new(
        &catalog::PG_STATEMENTS_TIME,
        &[],
        o.exec_seconds,
    ));
    for t in &o.top {
        let l = vec![t.queryid.clone()];
        out.push(Sample::owned(
            &catalog::PG_STATEMENT_CALLS,
            l.clone(),
            t.calls,
        ));
        out.push(Sample::owned(
            &catalog::PG_STATEMENT_TIME,
            l.clone(),
            t.exec_seconds,
        ));
        out.push(Sample::owned(
            &catalog::PG_STATEMENT_MEAN,
            l.clone(),
            t.mean_seconds,
        ));
        out.push(Sample::owned(&catalog::PG_STATEMENT_ROWS, l, t.rows));
    }
}

/// The registry entry (the check list in `check/mod.rs`): On the primary.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    b.with_pg(|pg| {
        StatementsCheck::new(
            pg,
            b.config.checks.statements_top_n,
            b.config.agent.slow_interval,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_become_seconds_and_one_series_set_per_top_statement() {
        let raw: RawStats = util::decode(
            r#"{"tracked": 40, "calls": 1000, "total_ms": 2500,
                "top": [{"queryid": "-42", "calls": 10, "total_ms": 2000, "rows": 10},
                        {"queryid": "7", "calls": 0, "total_ms": 0, "rows": 0}]}"#,
            "x",
        )
        .unwrap();
        let s = from_raw("public".into(), true, raw);
        assert_eq!(s.exec_seconds, 2.5);
        assert_eq!(s.top[0].mean_seconds, 0.2);
        assert_eq!(s.top[1].mean_seconds, 0.0);
        assert!(s.fix.is_none());
        let mut out = Vec::new();
        samples(&s, &mut out);
        assert_eq!(out.len(), 4 + 2 * 4);
        assert!(out.iter().any(|x| x.labels == vec!["-42".to_owned()]));
    }

    #[test]
    fn absent_extension_is_a_flag_with_a_fix() {
        let s =
            Statements::unavailable(Availability::NotInstalled, None, "CREATE EXTENSION".into());
        let mut out = Vec::new();
        samples(&s, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].num(), Some(0.0));
    }

    #[test]
    fn the_statement_never_reads_query_text() {
        let sql = stats_sql("we\"ird", 10);
        assert!(sql.contains("\"we\"\"ird\".pg_stat_statements(false)"));
        assert!(!sql.contains("query,") && !sql.contains("s.query "));
    }
}
