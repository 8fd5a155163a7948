//! Helpers shared by the on-call tests (alerts, dashboards, metric existence, end to end):
//! loading the rule files and dashboards, pulling metric names out of PromQL, running a tool
//! with a bound.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_norway::Value;

/// Every finding code, from the agent's catalog; each has `docs/runbooks/<code>.md`.
pub static FINDING_CODES: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| rose_agent::findings::CODES.iter().map(|d| d.code).collect());

/// The alert conditions that are not finding codes; each has a runbook too.
pub const ALERT_ONLY_CODES: &[&str] = &[
    "agent_down",
    "agent_absent",
    "agent_check_failing",
    "fleet_without_leader",
    "pg_down",
    "database_size_growth",
    "watchdog",
];

/// The default runbook base (when the `rose_runbook_base` external label is not set).
pub const DEFAULT_RUNBOOK_BASE: &str =
    "https://github.com/rose-agent/rose-agent/blob/main/docs/runbooks";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files in `dir` (relative to the repository) whose names end with `suffix`, sorted.
pub fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// The rule files Prometheus loads: `alerts/*.rules.yml`.
pub fn rule_files() -> Vec<PathBuf> {
    let v = files("alerts", ".rules.yml");
    assert!(!v.is_empty(), "no alerts/*.rules.yml");
    v
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub file: PathBuf,
    pub group: String,
    pub alert: String,
    pub expr: String,
    pub for_: Option<String>,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

impl Rule {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn annotation(&self, k: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn string_map(v: Option<&Value>) -> Vec<(String, String)> {
    match v {
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_owned(),
                    match v {
                        Value::String(s) => s.clone(),
                        other => serde_norway::to_string(other).unwrap().trim().to_owned(),
                    },
                )
            })
            .collect(),
        _ => vec![],
    }
}

pub fn load_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Every alerting rule (recording rules have no `alert` and are skipped).
pub fn alert_rules() -> Vec<Rule> {
    let mut out = vec![];
    for file in rule_files() {
        let doc = load_yaml(&file);
        for g in doc["groups"].as_sequence().expect("groups") {
            let group = g["name"].as_str().unwrap().to_owned();
            for r in g["rules"].as_sequence().expect("rules") {
                let Some(alert) = r.get("alert").and_then(Value::as_str) else {
                    continue;
                };
                out.push(Rule {
                    file: file.clone(),
                    group: group.clone(),
                    alert: alert.to_owned(),
                    expr: r["expr"].as_str().expect("expr").to_owned(),
                    for_: r.get("for").and_then(Value::as_str).map(str::to_owned),
                    labels: string_map(r.get("labels")),
                    annotations: string_map(r.get("annotations")),
                });
            }
        }
    }
    out
}

/// Every `expr` of every target of every panel of `dashboards/*.json`, with the file name.
pub fn dashboard_exprs() -> Vec<(String, String)> {
    let mut out = vec![];
    for f in files("dashboards", ".json") {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((name.clone(), e.to_owned()));
                }
            }
        }
    }
    out
}

/// All panels of a dashboard, including those nested in rows.
pub fn panels(d: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = vec![];
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for q in p["panels"].as_array().into_iter().flatten() {
            out.push(q);
        }
    }
    out
}

/// Metric names a PromQL expression selects: identifiers outside string literals and `{...}`
/// matchers that are not functions, keywords, label lists or numbers. Only `rose_*` names and
/// Prometheus's own `up` are metrics in these files, which the callers check.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "inf",
        "nan",
        // aggregation operators may be followed by `by (...)` rather than `(`
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    let mut label_list = false; // inside by (...) / on (...)
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            while i < chars.len() && chars[i] != '}' {
                if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        if chars[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                i += 1;
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == ')' {
            label_list = false;
            i += 1;
        } else if c == '$' {
            // Grafana variables: $__rate_interval, ${datasource}
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let next = chars.get(j).copied();
            let lower = word.to_ascii_lowercase();
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&lower.as_str())
            {
                label_list = next == Some('(');
                if label_list {
                    i = j + 1;
                }
                continue;
            }
            if label_list || KEYWORDS.contains(&lower.as_str()) || next == Some('(') {
                continue;
            }
            out.insert(word);
        } else if c.is_ascii_digit() || c == '.' {
            // numbers and durations (5m, 1e3, 0x1f)
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// A histogram's series name back to its catalog name.
pub fn base_name(series: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(b) = series.strip_suffix(suffix)
            && rose_agent::catalog::all()
                .any(|d| d.name == b && d.kind == rose_agent::catalog::Kind::Histogram)
        {
            return b.to_owned();
        }
    }
    series.to_owned()
}

/// Runs a command with a time limit; returns (success, stdout + stderr).
pub fn run_tool(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let f = std::fs::File::create(&out).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    match status {
        Some(s) => (s.success(), text),
        None => (false, format!("{cmd:?} timed out after {limit:?}\n{text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::metric_names;

    #[test]
    fn metric_names_skip_functions_labels_and_variables() {
        let n = metric_names(
            r#"histogram_quantile(0.9, sum by (instance, le) (rate(rose_app_probe_duration_seconds_bucket{endpoint=~"a|b"}[$__rate_interval]))) > 0.1 or on (instance) up{job="x"} == 0 unless rose_pg_up offset 5m"#,
        );
        let v: Vec<&str> = n.iter().map(String::as_str).collect();
        assert_eq!(
            v,
            ["rose_app_probe_duration_seconds_bucket", "rose_pg_up", "up"]
        );
    }
}
