//! Check `pg_privileges`: what the monitoring role can and cannot read, as capabilities, each
//! with the statement that would grant it, instead of a silent gap in other checks (hidden
//! query text, missing statements, an unreadable `checkpoint_migrations`). One statement of
//! privilege functions.

use super::json::JsonCheck;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::schema::{
    LANGGRAPH_SCHEMA, LangGraphPlace, MIGRATIONS_TABLE, migrations_grant,
    version_function_usable_sql,
};
use super::util;
use crate::catalog::{self, Sample};
use crate::check::Observation;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_PRIVILEGES;

fn sql(place: &LangGraphPlace) -> String {
    format!(
        "WITH {} SELECT json_build_object('user', current_user, \
         'superuser', coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false), \
         'pg_monitor', pg_has_role(current_user, 'pg_monitor', 'USAGE'), \
         'read_all_stats', pg_has_role(current_user, 'pg_read_all_stats', 'USAGE'), \
         'read_all_settings', pg_has_role(current_user, 'pg_read_all_settings', 'USAGE'), \
         'langgraph_schema', (SELECT sch FROM lg), \
         'migrations_readable', (SELECT (has_table_privilege(c.oid, 'SELECT') AND has_schema_privilege(n.oid, 'USAGE')) \
         OR coalesce({}, false) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, lg \
         WHERE n.nspname = lg.sch AND c.relname = {} AND c.relkind IN ('r', 'p')), \
         'schema_usage', (SELECT has_schema_privilege(n.oid, 'USAGE') FROM pg_namespace n, lg WHERE n.nspname = lg.sch), \
         'pg_stat_statements', EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'))::text",
        place.cte(),
        version_function_usable_sql(),
        util::lit(MIGRATIONS_TABLE)
    )
}

#[derive(Debug, Clone, Deserialize)]
pub struct Raw {
    pub(crate) user: String,
    pub(crate) superuser: bool,
    pub(crate) pg_monitor: bool,
    pub(crate) read_all_stats: bool,
    pub(crate) read_all_settings: bool,
    /// The schema LangGraph's tables are in (or expected in).
    #[serde(default)]
    pub(crate) langgraph_schema: Option<String>,
    /// SELECT on `checkpoint_migrations` and USAGE on its schema; `None` when the table does
    /// not exist.
    pub(crate) migrations_readable: Option<bool>,
    /// USAGE on that schema; `None` when it does not exist.
    #[serde(default)]
    pub(crate) schema_usage: Option<bool>,
    pub(crate) pg_stat_statements: bool,
}

/// One capability and, when missing, the fix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capability {
    /// Label value: `pg_monitor`, `read_all_stats`, `read_all_settings`,
    /// `migrations_readable`, `pg_stat_statements`.
    pub name: String,
    pub(crate) granted: bool,
    /// What the missing capability hides.
    pub(crate) impact: String,
    /// The statement that grants it (run as a superuser or the owner).
    pub fix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Privileges {
    pub(crate) user: String,
    pub(crate) superuser: bool,
    pub(crate) capabilities: Vec<Capability>,
}

impl Privileges {
    pub fn missing(&self) -> Vec<&Capability> {
        self.capabilities.iter().filter(|c| !c.granted).collect()
    }
}

/// Pure: capabilities from the privilege functions' answers.
pub fn from_raw(r: Raw) -> Privileges {
    let role = util::ident(&r.user);
    let mut caps = Vec::new();
    let mut cap = |name: &str, granted: bool, impact: &str, fix: String| {
        caps.push(Capability {
            name: name.into(),
            granted: granted || r.superuser,
            impact: impact.into(),
            fix: (!(granted || r.superuser)).then_some(fix),
        })
    };
    cap(
        "pg_monitor",
        r.pg_monitor,
        "statistics views and settings of other roles may be hidden or incomplete",
        format!("GRANT pg_monitor TO {role};"),
    );
    cap(
        "read_all_stats",
        r.read_all_stats,
        "state, query text and wait events of other roles' sessions, and their pg_stat_statements rows, are hidden",
        format!("GRANT pg_read_all_stats TO {role}; -- included in pg_monitor"),
    );
    cap(
        "read_all_settings",
        r.read_all_settings,
        "some settings (e.g. archive_command) are hidden",
        format!("GRANT pg_read_all_settings TO {role}; -- included in pg_monitor"),
    );
    if let Some(ok) = r.migrations_readable {
        cap(
            "migrations_readable",
            ok,
            "the LangGraph migration version cannot be compared with the expected one",
            migrations_grant(
                r.langgraph_schema.as_deref().unwrap_or(LANGGRAPH_SCHEMA),
                &r.user,
                r.schema_usage == Some(false),
            ),
        );
    }
    // Not a privilege but the same kind of gap: the numbers are not there to read.
    caps.push(Capability {
        name: "pg_stat_statements".into(),
        granted: r.pg_stat_statements,
        impact: "no per-statement time, calls or rows".into(),
        fix: (!r.pg_stat_statements).then(|| {
            "CREATE EXTENSION pg_stat_statements; -- with shared_preload_libraries = 'pg_stat_statements'".into()
        }),
    });
    Privileges {
        user: r.user,
        superuser: r.superuser,
        capabilities: caps,
    }
}

/// The check: one statement (built for the server's roles and tables), judged by [`from_raw`].
pub(crate) fn check(pg: Arc<PgTarget>, place: &LangGraphPlace) -> JsonCheck<Raw> {
    JsonCheck::new(ID, pg, sql(place), "privileges", |_, r| {
        Observation::PgPrivileges(from_raw(r))
    })
    .slow()
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &Privileges, out: &mut Vec<Sample>) {
    for c in &o.capabilities {
        out.push(Sample::owned(
            &catalog::PG_CAPABILITY,
            vec![c.name.clone()],
            if c.granted { 1.0 } else { 0.0 },
        ));
    }
}

/// The registry entry (the check list in `check/mod.rs`): On the primary.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    let place = b.langgraph_place();
    b.with_pg(|pg| check(pg, &place))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> Raw {
        Raw {
            user: "rose_monitor".into(),
            superuser: false,
            pg_monitor: false,
            read_all_stats: false,
            read_all_settings: true,
            langgraph_schema: Some("public".into()),
            migrations_readable: Some(false),
            schema_usage: Some(true),
            pg_stat_statements: false,
        }
    }

    #[test]
    fn missing_capabilities_carry_the_grant() {
        let p = from_raw(raw());
        let m = p.missing();
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(
            m[0].fix.as_deref(),
            Some("GRANT pg_monitor TO \"rose_monitor\";")
        );
        assert!(m.iter().any(|c| c.fix.as_deref()
            == Some("GRANT SELECT ON \"public\".\"checkpoint_migrations\" TO \"rose_monitor\";")));
        let mut out = Vec::new();
        samples(&p, &mut out);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn a_superuser_has_every_privilege_and_no_table_means_no_capability_row() {
        let mut r = raw();
        r.superuser = true;
        r.migrations_readable = None;
        let p = from_raw(r);
        assert_eq!(p.missing().len(), 1, "only the extension can be missing");
        assert!(
            p.capabilities
                .iter()
                .all(|c| c.name != "migrations_readable")
        );
    }
}
