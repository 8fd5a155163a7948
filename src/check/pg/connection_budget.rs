//! Check `pg_connection_budget`: the guide's "too many connections" arithmetic, done before
//! PostgreSQL refuses anyone. Worst-case demand is `instances x (DATABASE_POOL_SIZE +
//! DATABASE_MAX_OVERFLOW + AGENT_CHECKPOINTER_POOL_MAX_SIZE) + 1` (the agent's own connection); the slots are the plan's
//! connection limit (AGENT_PLAN `starter` 22 / `pro` 97, or AGENT_MAX_CONNECTIONS) when set,
//! else the server's `max_connections`, minus `superuser_reserved_connections` and
//! `reserved_connections` (16+), and capped by the database's `CONNECTION LIMIT`.
//! One statement reading settings, one `pg_database` row and the session groups
//! `pg_connections` reads (the distinct client addresses on this database: app instances).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::util;
use crate::catalog::{self, Sample};
use crate::check::{BoxFuture, Check, Observation};
use crate::config::PlanLimit;
use crate::error::CheckError;
use crate::pg::PgTarget;

pub(crate) const ID: &str = crate::catalog::checks::PG_CONNECTION_BUDGET;

const SQL: &str = concat!(
    "WITH ",
    util::client_sessions_cte!(),
    ", ",
    util::session_groups_cte!(),
    " SELECT json_build_object(\
     'max_connections', current_setting('max_connections')::int, \
     'superuser_reserved', current_setting('superuser_reserved_connections')::int, \
     'reserved', current_setting('reserved_connections', true)::int, \
     'datconnlimit', (SELECT datconnlimit FROM pg_database WHERE datname = current_database()), \
     'observed_instances', (SELECT count(DISTINCT coalesce(address, 'local')) FROM g \
        WHERE here AND application_name IS DISTINCT FROM 'rose-agent' AND NOT own))::text"
);

/// Connections the agent itself holds on the primary.
pub(crate) const AGENT_CONNECTIONS: u32 = 1;

/// The app's side of the budget, from configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppPools {
    pub pool_size: u32,
    pub max_overflow: u32,
    pub instances: u32,
    /// `max_size` of the checkpointer's psycopg pool per instance (0: not counted).
    pub checkpointer_pool_max_size: u32,
    pub plan: Option<PlanLimit>,
}

/// Everything the budget was computed from, and the result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    pub(crate) pool_size: u32,
    pub(crate) max_overflow: u32,
    pub(crate) instances: u32,
    /// Client addresses with sessions on this database other than agents': the app instances the
    /// database actually sees (0 when none, e.g. before the app starts).
    pub(crate) observed_instances: u32,
    /// The instances demand is computed for: the larger of configured and observed.
    pub(crate) instances_used: u32,
    /// Observed instances (when any) differ from the configured `AGENT_APP_INSTANCES`.
    pub(crate) instances_disagree: bool,
    pub(crate) agent_connections: u32,
    /// `instances x (pool_size + max_overflow) + agent_connections`.
    pub demand: u32,
    /// The server's `max_connections`.
    pub server_max_connections: u32,
    pub(crate) superuser_reserved: u32,
    pub reserved: Option<u32>,
    /// The configured plan, when the budget is measured against it.
    pub(crate) plan: Option<PlanLimit>,
    /// The database's `CONNECTION LIMIT` (`None` when unlimited).
    pub(crate) database_connection_limit: Option<u32>,
    /// The slots demand is measured against.
    pub slots: u32,
    /// Where `slots` came from: `server`, `plan:<name>`, or `database_limit`.
    pub slots_source: String,
    /// `slots - demand` (negative: over budget).
    pub(crate) headroom: i64,
}

impl Budget {
    pub fn over(&self) -> bool {
        self.headroom < 0
    }
}

#[derive(Debug, Deserialize)]
pub struct Raw {
    pub(crate) max_connections: u32,
    pub(crate) superuser_reserved: u32,
    pub(crate) reserved: Option<u32>,
    pub(crate) datconnlimit: Option<i64>,
    #[serde(default)]
    pub(crate) observed_instances: u32,
}

/// Pure: the budget from the app's pools and the server's settings.
pub fn compute(app: &AppPools, raw: &Raw) -> Budget {
    let instances_used = app.instances.max(raw.observed_instances);
    let demand = instances_used
        .saturating_mul(
            app.pool_size
                .saturating_add(app.max_overflow)
                .saturating_add(app.checkpointer_pool_max_size),
        )
        .saturating_add(AGENT_CONNECTIONS);
    let (limit, mut source) = match &app.plan {
        Some(p) => (p.max_connections, format!("plan:{}", p.name)),
        None => (raw.max_connections, "server".to_owned()),
    };
    let mut slots = limit
        .saturating_sub(raw.superuser_reserved)
        .saturating_sub(raw.reserved.unwrap_or(0));
    let db_limit = raw
        .datconnlimit
        .filter(|n| *n >= 0)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    if let Some(l) = db_limit
        && l < slots
    {
        slots = l;
        source = "database_limit".into();
    }
    Budget {
        pool_size: app.pool_size,
        max_overflow: app.max_overflow,
        instances: app.instances,
        observed_instances: raw.observed_instances,
        instances_used,
        instances_disagree: raw.observed_instances > 0 && raw.observed_instances != app.instances,
        agent_connections: AGENT_CONNECTIONS,
        demand,
        server_max_connections: raw.max_connections,
        superuser_reserved: raw.superuser_reserved,
        reserved: raw.reserved,
        plan: app.plan.clone(),
        database_connection_limit: db_limit,
        slots,
        slots_source: source,
        headroom: i64::from(slots) - i64::from(demand),
    }
}

pub(crate) struct BudgetCheck {
    pg: Arc<PgTarget>,
    app: AppPools,
}

impl BudgetCheck {
    pub(crate) fn new(pg: Arc<PgTarget>, app: AppPools) -> Self {
        BudgetCheck { pg, app }
    }
}

impl Check for BudgetCheck {
    fn id(&self) -> &str {
        ID
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
            let raw: Raw = util::json_query(&self.pg, &conn, SQL, "budget").await?;
            Ok(Observation::PgConnectionBudget(compute(&self.app, &raw)))
        })
    }
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &Budget, out: &mut Vec<Sample>) {
    out.push(Sample::new(
        &catalog::PG_BUDGET_DEMAND,
        &[],
        f64::from(o.demand),
    ));
    out.push(Sample::new(
        &catalog::PG_BUDGET_SLOTS,
        &[],
        f64::from(o.slots),
    ));
    out.push(Sample::new(
        &catalog::PG_BUDGET_HEADROOM,
        &[],
        o.headroom as f64,
    ));
    out.push(Sample::new(
        &catalog::PG_APP_INSTANCES_OBSERVED,
        &[],
        f64::from(o.observed_instances),
    ));
    out.push(Sample::new(
        &catalog::PG_APP_INSTANCES_CONFIGURED,
        &[],
        f64::from(o.instances),
    ));
}

/// The registry entry (the check list in `check/mod.rs`): On the primary, with the app's pools as configured.
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
    let c = b.config;
    b.with_pg(|pg| {
        BudgetCheck::new(
            pg,
            AppPools {
                pool_size: c.app.pool_size,
                max_overflow: c.app.max_overflow,
                instances: c.app.instances,
                checkpointer_pool_max_size: c.app.checkpointer_pool_max_size.unwrap_or(0),
                plan: c.checks.plan.clone(),
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(max: u32) -> Raw {
        Raw {
            max_connections: max,
            superuser_reserved: 3,
            reserved: None,
            datconnlimit: Some(-1),
            observed_instances: 0,
        }
    }

    #[test]
    fn the_guides_defaults_do_not_fit_the_starter_plan() {
        let app = AppPools {
            pool_size: 10,
            max_overflow: 20,
            instances: 1,
            checkpointer_pool_max_size: 0,
            plan: Some(PlanLimit {
                name: "starter".into(),
                max_connections: 22,
            }),
        };
        let b = compute(&app, &raw(100));
        assert_eq!(b.demand, 31);
        assert_eq!(b.slots, 19);
        assert_eq!(b.slots_source, "plan:starter");
        assert_eq!(b.headroom, -12);
        assert!(b.over());
    }

    #[test]
    fn server_settings_reserved_slots_and_database_limit() {
        let app = AppPools {
            pool_size: 5,
            max_overflow: 5,
            instances: 3,
            checkpointer_pool_max_size: 0,
            plan: None,
        };
        let mut r = raw(100);
        r.reserved = Some(2);
        let b = compute(&app, &r);
        assert_eq!((b.demand, b.slots, b.headroom), (31, 95, 64));
        r.datconnlimit = Some(20);
        let b = compute(&app, &r);
        assert_eq!((b.slots, b.slots_source.as_str()), (20, "database_limit"));
        let mut out = Vec::new();
        samples(&b, &mut out);
        assert_eq!(out[0].def.name, "rose_pg_connection_budget_demand");
        assert_eq!(out[2].num(), Some(-11.0));
    }

    #[test]
    fn huge_settings_saturate_instead_of_overflowing() {
        let app = AppPools {
            pool_size: u32::MAX,
            max_overflow: u32::MAX,
            instances: u32::MAX,
            checkpointer_pool_max_size: 0,
            plan: None,
        };
        let b = compute(&app, &raw(1));
        assert_eq!(b.demand, u32::MAX);
        assert_eq!(b.slots, 0);
    }

    #[test]
    fn observed_instances_count_when_more_than_configured() {
        let app = AppPools {
            pool_size: 10,
            max_overflow: 20,
            instances: 1,
            checkpointer_pool_max_size: 0,
            plan: None,
        };
        let mut r = raw(100);
        r.observed_instances = 3;
        let b = compute(&app, &r);
        assert_eq!((b.instances_used, b.demand), (3, 91));
        assert!(b.instances_disagree);
        r.observed_instances = 0;
        let b = compute(&app, &r);
        assert_eq!(
            (b.instances_used, b.demand, b.instances_disagree),
            (1, 31, false)
        );
    }
}
