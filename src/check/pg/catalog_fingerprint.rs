//! The catalog fingerprint of `pg_schema`: one cheap statement whose answer changes whenever
//! what the schema's catalog statement reads could have changed, so the catalog (columns,
//! indexes, `pg_get_indexdef`, the schema's candidates and grants: the heaviest part of a slow
//! cycle) is read again only after DDL, and at least every [`FULL_READ_EVERY`] runs.
//!
//! It covers, by each catalog row's `xmin` (a row's `xmin` changes with every update of it):
//! - the `pg_class` rows named like a watched table, in every schema (created, dropped, renamed,
//!   moved to another schema, `ALTER TABLE`, `GRANT`/`REVOKE` on it);
//! - their indexes: `pg_index` rows (created, dropped, made valid or invalid) and the indexes'
//!   `pg_class` rows (renamed);
//! - their columns' `pg_attribute` rows (added, dropped, renamed, `NOT NULL` changed);
//! - every `pg_namespace` row (schemas created or dropped, `GRANT USAGE`), the role script's
//!   version function's `pg_proc` row (`GRANT EXECUTE`), and `pg_auth_members` (role
//!   memberships behind the privilege answers).
//!
//! What it does not see (a role made superuser, an operator class renamed) the periodic full
//! read catches. Every lookup is by an index or over a catalog of a handful of rows, so its
//! cost does not grow with the number of tables in the database.

use super::util;

/// Most runs on one fingerprint before the catalog is read anyway (with the slow cadence's
/// minute, about every ten minutes).
pub(crate) const FULL_READ_EVERY: u32 = 10;

/// The fingerprint statement for the watched table names (LangGraph's and the expectation
/// file's, in any schema) and the role script's version function.
pub(crate) fn sql(tables: &[&str], function: &str) -> String {
    let names = if tables.is_empty() {
        "NULL::text".to_owned()
    } else {
        tables
            .iter()
            .map(|t| util::lit(t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "WITH t AS (SELECT c.oid, c.xmin::text AS x FROM pg_class c WHERE c.relname IN ({names}) \
         AND c.relkind IN ('r', 'p')) \
         SELECT json_build_object('fingerprint', md5(concat_ws('|', \
         (SELECT string_agg(t.oid::text || ':' || t.x, ',' ORDER BY t.oid) FROM t), \
         (SELECT string_agg(i.indexrelid::text || ':' || i.xmin::text || ':' || ic.xmin::text, ',' ORDER BY i.indexrelid) \
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid IN (SELECT oid FROM t)), \
         (SELECT string_agg(a.attrelid::text || ':' || a.attnum::text || ':' || a.xmin::text, ',' ORDER BY a.attrelid, a.attnum) \
         FROM pg_attribute a WHERE a.attrelid IN (SELECT oid FROM t) AND a.attnum > 0), \
         (SELECT string_agg(n.oid::text || ':' || n.xmin::text, ',' ORDER BY n.oid) FROM pg_namespace n), \
         (SELECT string_agg(p.oid::text || ':' || p.xmin::text, ',' ORDER BY p.oid) FROM pg_proc p WHERE p.proname = {function}), \
         (SELECT count(*)::text || ':' || coalesce(max(m.xmin::text::bigint), 0)::text FROM pg_auth_members m))))::text",
        function = util::lit(function),
    )
}

/// The fingerprint statement's document.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Raw {
    pub(crate) fingerprint: String,
}

/// The last catalog read and the fingerprint taken before it.
#[derive(Debug, Clone)]
pub(crate) struct Cached<T> {
    pub(crate) fingerprint: String,
    pub(crate) catalog: T,
    /// Runs that reused this read.
    pub(crate) reused: u32,
}

/// Pure: the cached catalog when the fingerprint is unchanged and the cache is young enough;
/// `None` means read the catalog again (no cache, DDL since, the fingerprint unavailable, or
/// [`FULL_READ_EVERY`] runs on it).
pub(crate) fn reuse<'a, T>(cached: Option<&'a Cached<T>>, now: Option<&str>) -> Option<&'a T> {
    let c = cached?;
    (Some(c.fingerprint.as_str()) == now && c.reused + 1 < FULL_READ_EVERY).then_some(&c.catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(fp: &str, reused: u32) -> Cached<u8> {
        Cached {
            fingerprint: fp.into(),
            catalog: 7,
            reused,
        }
    }

    #[test]
    fn the_catalog_is_reused_only_while_the_fingerprint_holds() {
        assert_eq!(reuse(Some(&cached("a", 0)), Some("a")), Some(&7));
        // DDL since: a new fingerprint.
        assert_eq!(reuse(Some(&cached("a", 0)), Some("b")), None);
        // No fingerprint (its statement failed) or no read yet.
        assert_eq!(reuse(Some(&cached("a", 0)), None), None);
        assert_eq!(reuse::<u8>(None, Some("a")), None);
        // Read again at least every FULL_READ_EVERY runs, whatever the fingerprint says.
        assert_eq!(
            reuse(Some(&cached("a", FULL_READ_EVERY - 2)), Some("a")),
            Some(&7)
        );
        assert_eq!(
            reuse(Some(&cached("a", FULL_READ_EVERY - 1)), Some("a")),
            None
        );
    }

    #[test]
    fn the_statement_names_every_watched_table_and_the_function_as_literals() {
        let s = sql(&["checkpoints", "o'dd"], "langgraph_migrations");
        assert!(s.contains("c.relname IN (E'checkpoints', E'o''dd')"), "{s}");
        assert!(s.contains("p.proname = E'langgraph_migrations'"), "{s}");
        assert!(sql(&[], "f").contains("c.relname IN (NULL::text)"));
    }
}
