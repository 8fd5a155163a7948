//! Check `pg_example`: the worked example of docs/architecture.md#adding-a-check, compiled only
//! into the unit tests. It is registered through the same check list as every real check (its
//! line is marked `#[cfg(test)]`), so its tests prove that one list line, this file, a metric
//! and a rule are all a new PostgreSQL check needs. A real check keeps its metric in
//! `src/catalog/` and its finding code in `src/findings/codes.rs` (both generate docs); the
//! example keeps them here so the generated docs do not list it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::json::JsonCheck;
use crate::catalog::{Kind, MetricDef, Sample};
use crate::check::{Build, Built};
use crate::findings::{Code, Finding};
use crate::pg::PgTarget;

pub(crate) const ID: &str = "pg_example";

/// The one statement: backends connected to this database, as a JSON document.
const SQL: &str = "SELECT json_build_object('backends', numbackends)::text \
     FROM pg_stat_database WHERE datname = current_database()";

/// The metric (a real check adds it to `src/catalog/pg_checks.rs`).
pub(crate) static PG_EXAMPLE_BACKENDS: MetricDef = MetricDef {
    name: "rose_pg_example_backends",
    kind: Kind::Gauge,
    unit: "1",
    labels: &[],
    help: "Backends connected to the monitored database (the adding-a-check example).",
};

/// The output type: what one run saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub(crate) backends: u64,
}

/// The check: one statement, the document as is.
pub(crate) fn check(pg: Arc<PgTarget>) -> JsonCheck<Example> {
    JsonCheck::new(ID, pg, SQL, "pg_stat_database", |_, e: Example| e.into())
}

/// The registry entry: on the primary.
pub(crate) fn build(b: &Build) -> Built {
    b.with_pg(check)
}

/// Pure: the series of a successful run.
pub(crate) fn samples(o: &Example, out: &mut Vec<Sample>) {
    out.push(Sample::new(&PG_EXAMPLE_BACKENDS, &[], o.backends as f64));
}

/// Pure: the rule (a real check's lives in `src/findings/`, with its own code).
pub(crate) fn judge(o: &Example, limit: u64) -> Option<Finding> {
    (o.backends > limit).then(|| {
        Finding::new(
            Code::ConnectionsNearLimit,
            format!("{} backends are connected", o.backends),
            format!("pg_stat_database.numbackends = {} > {limit}", o.backends),
            vec!["Find who holds them in pg_stat_activity".into()],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{CheckTarget, Observation, Scope, TargetKind, registry};
    use crate::findings::codes::Rung;

    fn config() -> crate::config::Config {
        crate::config::Config::load(
            None,
            &std::collections::HashMap::from([(
                "AGENT_DATABASE_URL".to_string(),
                "postgresql://u:p@127.0.0.1:1/db".to_string(),
            )]),
        )
        .unwrap()
    }

    #[test]
    fn one_list_line_registers_the_check_with_its_contract() {
        let config = config();
        let checks = registry(&config, crate::run::pg_target(&config, None));
        let c = checks.iter().find(|c| c.id() == ID).expect("registered");
        let contract = c.kind().unwrap().contract();
        assert_eq!(c.scope(), Scope::Database);
        assert_eq!(c.rung(), Some(Rung::DatabaseHealth));
        assert_eq!(contract.target, TargetKind::Postgres);
        assert!(matches!(
            c.target(),
            CheckTarget::Postgres { ref namespace, port: 1, .. } if namespace == "db"
        ));
        // Not built without a database.
        let none =
            crate::config::Config::load(None, &std::collections::HashMap::<String, String>::new())
                .unwrap();
        assert!(registry(&none, None).iter().all(|c| c.id() != ID));
    }

    #[test]
    fn the_observation_variant_dispatches_to_its_samples() {
        let o: Observation = Example { backends: 7 }.into();
        let mut out = Vec::new();
        o.samples(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].def.name, "rose_pg_example_backends");
        assert_eq!(
            serde_json::to_value(&o).unwrap()["check"],
            serde_json::json!(ID)
        );
    }

    #[test]
    fn the_rule_judges_the_observation() {
        assert!(judge(&Example { backends: 3 }, 5).is_none());
        let f = judge(&Example { backends: 9 }, 5).unwrap();
        assert_eq!(f.code, Code::ConnectionsNearLimit.as_str());
    }
}
