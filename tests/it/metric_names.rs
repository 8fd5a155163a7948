//! No rule and no dashboard watches a metric that does not exist (the most common defect of
//! published PostgreSQL rules): every metric named in `alerts/*.rules.yml` (expressions and the
//! queries inside annotations) and in `dashboards/*.json` is in the real exposition of an agent
//! running against a real cluster, or, for series that only appear under conditions listed
//! below, in the agent's catalog.

use crate::oncall_support;
use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use oncall_support::*;
use support::*;

/// Series that only exist under a condition the test cluster does not create; they must be in
/// the catalog (`rose_agent::catalog::all()`).
const CONDITIONAL: &[(&str, &str)] = &[
    (
        "rose_agent_check_errors_total",
        "only after a check has failed",
    ),
    (
        "rose_pg_replica_lag_seconds",
        "only with DATABASE_READ_REPLICA_URL",
    ),
    ("rose_app_probe_success", "only with app probes configured"),
    (
        "rose_pg_storage_full_seconds",
        "only with a storage limit and a growing database (tests/it/storage.rs)",
    ),
    (
        "rose_app_probe_duration_seconds",
        "only with app probes configured",
    ),
    ("rose_app_healthy", "only when the app answers a probe"),
    ("rose_app_service_up", "only when the app reports services"),
    (
        "rose_sqlite_file_bytes",
        "only with SHORT_TERM_MEMORY_DB_PATH",
    ),
    (
        "rose_checkpoint_store_bytes",
        "only with a checkpoint store to measure",
    ),
    ("rose_finding_active", "only while a finding is active"),
];

/// Metric names used by the rules and the dashboards, with where each is used.
fn used_names() -> BTreeMap<String, BTreeSet<String>> {
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in alert_rules() {
        let mut names = metric_names(&r.expr);
        // Queries inside annotation templates, and metric names quoted in the steps.
        for (_, text) in &r.annotations {
            for w in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                let is_metric = [
                    "rose_pg_",
                    "rose_app_",
                    "rose_agent_",
                    "rose_sqlite_",
                    "rose_checkpoint_",
                    "rose_finding_",
                ]
                .iter()
                .any(|p| w.starts_with(p));
                if is_metric {
                    names.insert(w.to_owned());
                }
            }
        }
        for n in names {
            used.entry(n)
                .or_default()
                .insert(format!("alert {}", r.alert));
        }
    }
    for (file, expr) in dashboard_exprs() {
        for n in metric_names(&expr) {
            used.entry(n).or_default().insert(file.clone());
        }
    }
    used
}

/// `x_bucket` / `x_sum` / `x_count` of a histogram `x` (known from the catalog or the
/// conditional list) is `x`.
fn family(name: &str) -> String {
    let b = base_name(name);
    if b != name {
        return b;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && CONDITIONAL.iter().any(|(n, _)| *n == base)
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

#[test]
fn every_metric_in_rules_and_dashboards_exists() {
    let used = used_names();
    assert!(used.contains_key("rose_pg_up"), "{used:?}");

    let pg = PgCluster::start();
    let mut env = fast_env(pg.monitor_url());
    env.extend([
        ("FEATURE_DATABASE_TYPE", "postgresql".into()),
        ("AGENT_STORAGE_LIMIT", "10GB".into()),
    ]);
    let agent = Agent::start(&env);
    // Ready = every check (the slow ones too) has completed once.
    wait_for(Duration::from_secs(30), || {
        agent.get("/readyz").0 == 200 && agent.metrics().get("rose_pg_up") == Some(1.0)
    })
    .unwrap_or_else(|| panic!("agent never ready and up: {}", agent.output()));
    // One more cycle so series produced from a second observation (rates, growth) exist too.
    std::thread::sleep(Duration::from_secs(2));
    let exposed: BTreeSet<String> = agent.metrics().names().iter().map(|n| family(n)).collect();
    let catalog: BTreeSet<&str> = rose_agent::catalog::all().map(|d| d.name).collect();

    // Group by family (x_bucket and x_count are both x).
    let mut families: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, places) in used {
        families.entry(family(&name)).or_default().extend(places);
    }
    let mut missing = vec![];
    for (fam, places) in &families {
        if fam == "up" {
            continue; // Prometheus's own per-target series
        }
        let fam = fam.clone();
        let places = places.iter().cloned().collect::<Vec<_>>().join(", ");
        if let Some((_, why)) = CONDITIONAL.iter().find(|(n, _)| *n == fam) {
            if !catalog.contains(fam.as_str()) {
                missing.push(format!(
                    "{fam} (conditional: {why}) is not in the catalog; used by {places}"
                ));
            }
        } else if !exposed.contains(&fam) {
            let hint = if catalog.contains(fam.as_str()) {
                "in the catalog but not exposed by a running agent"
            } else {
                "not in the catalog"
            };
            missing.push(format!("{fam}: {hint}; used by {places}"));
        }
    }
    assert!(
        missing.is_empty(),
        "{} metric(s) used by rules/dashboards do not exist:\n{}\n\nexposed: {exposed:?}",
        missing.len(),
        missing.join("\n")
    );
}
