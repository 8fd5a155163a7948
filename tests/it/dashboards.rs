//! House rules for `dashboards/*.json`, the checks a dashboard linter would make: schemaVersion
//! 39, exactly one `datasource` variable and every panel, target and query variable using it,
//! `$__rate_interval` in rate/irate/increase, units on every panel, unique panel ids,
//! gridPos inside the 24-column grid without overlaps, unique fixed uids; and the provisioning
//! examples.
//!
//! Grafana's published dashboard schema: no npm package ships it as JSON Schema or CUE
//! (`@grafana/schema` holds TypeScript types only), but the foundation SDK on PyPI ships the
//! models Grafana generates from its CUE kinds. `tests/grafana_schema.py` decodes every
//! dashboard with them and fails on a key the schema does not know or a value of the wrong type.

use crate::oncall_support;
use crate::support;

use std::collections::BTreeSet;

use oncall_support::*;
use serde_json::Value;

fn dashboards() -> Vec<(String, Value)> {
    let v: Vec<(String, Value)> = files("dashboards", ".json")
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            let d: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{f:?} is not JSON: {e}"));
            (f.file_name().unwrap().to_string_lossy().into_owned(), d)
        })
        .collect();
    assert!(v.len() >= 3, "overview, PostgreSQL and app dashboards");
    v
}

fn uses_datasource_variable(ds: &Value) -> bool {
    ds["uid"] == "${datasource}" && ds["type"] == "prometheus"
}

#[test]
fn dashboards_follow_the_house_rules() {
    let mut problems = vec![];
    let mut uids = BTreeSet::new();
    for (name, d) in dashboards() {
        let p = |m: String| format!("{name}: {m}");
        if d["schemaVersion"] != 39 {
            problems.push(p(format!("schemaVersion {}", d["schemaVersion"])));
        }
        let uid = d["uid"].as_str().unwrap_or("");
        let uid_ok = !uid.is_empty()
            && uid.len() <= 40
            && uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !uid_ok {
            problems.push(p(format!("uid {uid:?} is not a fixed uid")));
        }
        if !uids.insert(uid.to_owned()) {
            problems.push(p(format!("uid {uid} used twice")));
        }
        if !d["id"].is_null() {
            problems.push(p("id must be null (Grafana assigns it)".into()));
        }
        if d.get("__inputs").is_some() || d.to_string().contains("${DS_") {
            problems.push(p(
                "uses ${DS_...} inputs instead of the datasource variable".into(),
            ));
        }
        if d["title"].as_str().unwrap_or("").is_empty() {
            problems.push(p("no title".into()));
        }
        // Exactly one datasource variable, named datasource, for Prometheus.
        let vars = d["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ds_vars: Vec<&Value> = vars.iter().filter(|v| v["type"] == "datasource").collect();
        if ds_vars.len() != 1
            || ds_vars[0]["name"] != "datasource"
            || ds_vars[0]["query"] != "prometheus"
        {
            problems.push(p(format!(
                "needs exactly one datasource variable named datasource (query prometheus), has {ds_vars:?}"
            )));
        }
        for v in vars.iter().filter(|v| v["type"] == "query") {
            if !uses_datasource_variable(&v["datasource"]) {
                problems.push(p(format!(
                    "variable {} does not use ${{datasource}}",
                    v["name"]
                )));
            }
        }
        // Panels.
        let mut ids = BTreeSet::new();
        let mut cells: BTreeSet<(i64, i64)> = BTreeSet::new();
        for panel in panels(&d) {
            let title = panel["title"].as_str().unwrap_or("?");
            let q = |m: &str| p(format!("panel {title:?}: {m}"));
            match panel["id"].as_i64() {
                Some(id) if ids.insert(id) => {}
                other => problems.push(q(&format!("id {other:?} missing or duplicate"))),
            }
            let g = &panel["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_i64().unwrap_or(-1),
                g["y"].as_i64().unwrap_or(-1),
                g["w"].as_i64().unwrap_or(0),
                g["h"].as_i64().unwrap_or(0),
            );
            if x < 0 || y < 0 || w < 1 || h < 1 || x + w > 24 {
                problems.push(q(&format!("gridPos {g} outside the 24-column grid")));
            }
            for cx in x..x + w {
                for cy in y..y + h {
                    if !cells.insert((cx, cy)) {
                        problems.push(q(&format!("gridPos {g} overlaps another panel")));
                        break;
                    }
                }
            }
            if panel["type"] == "row" {
                continue;
            }
            if title == "?" || title.is_empty() {
                problems.push(q("no title"));
            }
            if !uses_datasource_variable(&panel["datasource"]) {
                problems.push(q("datasource is not ${datasource}"));
            }
            let unit = panel["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .unwrap_or("");
            if unit.is_empty() {
                problems.push(q("no unit"));
            }
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(q("no targets"));
            }
            let mut refs = BTreeSet::new();
            for t in &targets {
                if !uses_datasource_variable(&t["datasource"]) {
                    problems.push(q("a target's datasource is not ${datasource}"));
                }
                if !refs.insert(t["refId"].as_str().unwrap_or("").to_owned()) {
                    problems.push(q("duplicate refId"));
                }
                let expr = t["expr"].as_str().unwrap_or("");
                if expr.is_empty() {
                    problems.push(q("a target has no expr"));
                }
                for problem in rate_interval_problems(expr) {
                    problems.push(q(&problem));
                }
                if !expr.contains("$instance") {
                    problems.push(q(&format!("{expr} ignores the instance variable")));
                }
                for m in metric_names(expr) {
                    if m != "up" && !m.starts_with("rose_") {
                        problems.push(q(&format!("{m} is not an agent metric")));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// rate/irate/increase must range over `$__rate_interval`, and counters only go into them.
fn rate_interval_problems(expr: &str) -> Vec<String> {
    let mut out = vec![];
    for f in ["rate(", "increase("] {
        let mut rest = expr;
        while let Some(i) = rest.find(f) {
            let is_word_start = i == 0
                || !rest[..i]
                    .chars()
                    .last()
                    .map(|c| c.is_ascii_alphanumeric() || c == '_')
                    .unwrap_or(false)
                || rest[..i].ends_with('i'); // irate(
            let after = &rest[i + f.len()..];
            // The range of this call: the first [...] after it.
            if is_word_start && let Some(open) = after.find('[') {
                let close = after[open..]
                    .find(']')
                    .map(|c| open + c)
                    .unwrap_or(after.len());
                let range = &after[open + 1..close];
                if range != "$__rate_interval" {
                    out.push(format!(
                        "{expr}: {f}..[{range}] should use $__rate_interval"
                    ));
                }
                let selected = &after[..open];
                if !(selected.contains("_total")
                    || selected.contains("_bucket")
                    || selected.contains("_count")
                    || selected.contains("_sum"))
                {
                    out.push(format!("{expr}: {f} over something that is not a counter"));
                }
            }
            rest = &rest[i + f.len()..];
        }
    }
    out
}

#[test]
fn rate_interval_rule_catches_fixed_ranges() {
    assert!(rate_interval_problems("rate(x_total[$__rate_interval])").is_empty());
    assert_eq!(rate_interval_problems("rate(x_total[5m])").len(), 1);
    assert_eq!(rate_interval_problems("irate(x_total[1m])").len(), 1);
    assert_eq!(
        rate_interval_problems("increase(rose_pg_up[$__rate_interval])").len(),
        1
    );
    assert!(rate_interval_problems("deriv(rose_pg_database_size_bytes[1h])").is_empty());
}

#[test]
fn the_three_dashboards_show_what_on_call_needs() {
    let all: Vec<(String, String)> = dashboard_exprs();
    let in_file = |file: &str, metric: &str| {
        all.iter().any(|(f, e)| {
            f == file
                && metric_names(e)
                    .iter()
                    .any(|m| base_name(m) == metric || m == metric)
        })
    };
    let want: &[(&str, &[&str])] = &[
        (
            "rose-overview.json",
            &[
                "rose_pg_up",
                "rose_app_healthy",
                "rose_finding_active",
                "rose_pg_connection_budget_demand",
                "rose_pg_connection_budget_slots",
            ],
        ),
        (
            "rose-postgres.json",
            &[
                "rose_pg_connections",
                "rose_pg_max_connections",
                "rose_pg_superuser_reserved_connections",
                "rose_pg_connection_budget_demand",
                "rose_pg_active_query_max_seconds",
                "rose_pg_slow_queries",
                "rose_pg_database_size_bytes",
                "rose_pg_storage_limit_bytes",
                "rose_pg_storage_full_seconds",
                "rose_pg_schema_object_present",
                "rose_pg_schema_migration_version",
                "rose_pg_replica_lag_seconds",
                "rose_pg_cache_hit_ratio",
                "rose_pg_deadlocks_total",
            ],
        ),
        (
            "rose-app.json",
            &[
                "rose_app_probe_duration_seconds_bucket",
                "rose_app_service_up",
                "rose_checkpoint_store_bytes",
                "rose_sqlite_file_bytes",
            ],
        ),
    ];
    let mut missing = vec![];
    for (file, metrics) in want {
        for m in *metrics {
            if !in_file(file, m) {
                missing.push(format!("{file} does not show {m}"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    // The app dashboard draws the guide's 100 ms and 2 s lines.
    let app: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/rose-app.json")).unwrap(),
    )
    .unwrap();
    let lines: BTreeSet<String> = panels(&app)
        .iter()
        .filter(|p| {
            p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"]
                .as_str()
                .is_some_and(|m| m.contains("line"))
        })
        .flat_map(|p| {
            p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|s| s["value"].as_f64())
        .map(|v| v.to_string())
        .collect();
    assert!(lines.contains("0.1") && lines.contains("2"), "{lines:?}");
}

#[test]
fn provisioning_examples_are_complete() {
    let ds = load_yaml(&repo().join("dashboards/provisioning/datasources/rose-prometheus.yml"));
    assert_eq!(ds["apiVersion"].as_i64(), Some(1));
    let d0 = &ds["datasources"][0];
    assert_eq!(d0["type"].as_str(), Some("prometheus"));
    assert!(d0["url"].as_str().is_some_and(|u| u.starts_with("http")));
    let prov = load_yaml(&repo().join("dashboards/provisioning/dashboards/rose.yml"));
    assert_eq!(prov["apiVersion"].as_i64(), Some(1));
    let p0 = &prov["providers"][0];
    assert_eq!(p0["type"].as_str(), Some("file"));
    assert!(
        p0["options"]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with('/'))
    );
}

/// Runs `tests/grafana_schema.py` with the foundation SDK on the given files.
fn grafana_schema(files: &[std::path::PathBuf]) -> Option<std::process::Output> {
    let python = support::langgraph::grafana_python()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grafana_schema.py");
    Some(
        std::process::Command::new("timeout")
            .arg("120")
            .arg(python)
            .arg(script)
            .args(files)
            .output()
            .unwrap(),
    )
}

#[test]
fn dashboards_match_grafanas_published_schema() {
    let files = files("dashboards", ".json");
    let Some(out) = grafana_schema(&files) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("panels checked").count(),
        files.len(),
        "{text}"
    );
}

/// The schema check is not a rubber stamp: a misspelt key, a string where Grafana wants an
/// enum value and a non-numeric grid width are each reported.
#[test]
fn the_schema_check_reports_unknown_keys_and_wrong_types() {
    let (_, mut d) = dashboards().remove(0);
    d["graphTooltip"] = "shared".into();
    d["panels"][0]["gridPos"]["w"] = "wide".into();
    d["panels"][1]["datasourse"] = serde_json::json!({});
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&d).unwrap()).unwrap();
    let Some(out) = grafana_schema(&[bad]) else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    for want in [
        ".panels[1].datasourse: not in the schema",
        ".graph_tooltip: 'shared' is not",
        ".panels[0].grid_pos.w: 'wide' is not",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}
