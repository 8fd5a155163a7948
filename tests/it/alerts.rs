//! The alert rules and the Alertmanager example, checked by the real tools: `promtool check
//! rules`, `promtool test rules` (every alert fires after its `for:` and not before), house
//! conventions (names, labels, annotations, runbooks), `amtool check-config` and
//! `amtool config routes test`.

use crate::oncall_support;
use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use oncall_support::*;
use serde_norway::Value;

const TOOL_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn promtool_accepts_the_rule_files() {
    if !support::require_tool("promtool") {
        return;
    }
    let mut cmd = Command::new("promtool");
    cmd.args(["check", "rules"]).args(rule_files());
    let (ok, out) = run_tool(&mut cmd, TOOL_LIMIT);
    assert!(ok, "promtool check rules failed:\n{out}");
    assert!(!out.contains("WARNING"), "{out}");
}

#[test]
fn promtool_unit_tests_pass() {
    if !support::require_tool("promtool") {
        return;
    }
    let tests = files("alerts/tests", ".yml");
    assert!(!tests.is_empty());
    let mut cmd = Command::new("promtool");
    cmd.args(["test", "rules"]).args(&tests);
    let (ok, out) = run_tool(&mut cmd, TOOL_LIMIT);
    assert!(ok, "promtool test rules failed:\n{out}");
    assert_eq!(
        out.matches("SUCCESS").count(),
        tests.len(),
        "every test file succeeds:\n{out}"
    );
}

/// Every alert has a unit test case where it fires, and, when it has a `for:`, one where it
/// does not fire yet; every unit test names an alert that exists.
#[test]
fn every_alert_is_unit_tested_firing_and_pending() {
    let rules = alert_rules();
    let mut firing: BTreeSet<String> = BTreeSet::new();
    let mut quiet: BTreeSet<String> = BTreeSet::new();
    for f in files("alerts/tests", ".yml") {
        let doc = load_yaml(&f);
        for t in doc["tests"].as_sequence().expect("tests") {
            for a in t
                .get("alert_rule_test")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let name = a["alertname"].as_str().unwrap().to_owned();
                assert!(
                    rules.iter().any(|r| r.alert == name),
                    "{f:?} tests an unknown alert {name}"
                );
                let exp = a
                    .get("exp_alerts")
                    .and_then(Value::as_sequence)
                    .map(|s| s.len())
                    .unwrap_or(0);
                if exp > 0 {
                    firing.insert(name);
                } else {
                    quiet.insert(name);
                }
            }
        }
    }
    let mut missing = vec![];
    for r in &rules {
        if !firing.contains(&r.alert) {
            missing.push(format!("{}: no case where it fires", r.alert));
        }
        if r.for_.is_some() && !quiet.contains(&r.alert) {
            missing.push(format!("{}: no case before its for: elapsed", r.alert));
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_rule_follows_the_house_conventions() {
    let rules = alert_rules();
    assert!(rules.len() >= 25, "{} rules", rules.len());
    let mut problems = vec![];
    let mut by_name: BTreeMap<&str, Vec<&Rule>> = BTreeMap::new();
    for r in &rules {
        by_name.entry(&r.alert).or_default().push(r);
        let a = &r.alert;
        let camel = a.starts_with("Rose")
            && a.len() > 4
            && a[4..].starts_with(|c: char| c.is_ascii_uppercase())
            && a.chars().all(|c| c.is_ascii_alphanumeric());
        if !camel {
            problems.push(format!("{a}: not CamelCase with the Rose prefix"));
        }
        for k in ["summary", "description", "steps", "runbook_url"] {
            if r.annotation(k).map(str::trim).unwrap_or("").is_empty() {
                problems.push(format!("{a}: no {k} annotation"));
            }
        }
        if let Some(s) = r.annotation("summary")
            && !(s.ends_with('.') && s.starts_with(|c: char| c.is_uppercase()))
        {
            problems.push(format!("{a}: summary should be a sentence: {s}"));
        }
        let generic = a == "RoseFinding";
        let code = if generic {
            // severity and code come from rose_finding_active's labels
            if r.label("severity").is_some() || r.label("code").is_some() {
                problems.push(format!("{a}: must take severity and code from the series"));
            }
            if !r.expr.contains("rose_finding_active") {
                problems.push(format!("{a}: must select rose_finding_active"));
            }
            "{{ $labels.code }}".to_owned()
        } else {
            match r.label("severity") {
                Some("critical" | "warning" | "info") => {}
                other => problems.push(format!("{a}: severity {other:?}")),
            }
            match r.label("code") {
                Some(c) => c.to_owned(),
                None => {
                    problems.push(format!("{a}: no code label"));
                    continue;
                }
            }
        };
        let want = format!(
            "{{{{ with $externalLabels.rose_runbook_base }}}}{{{{ . }}}}{{{{ else }}}}{DEFAULT_RUNBOOK_BASE}{{{{ end }}}}/{code}.md"
        );
        if r.annotation("runbook_url") != Some(want.as_str()) {
            problems.push(format!(
                "{a}: runbook_url should be\n  {want}\nnot\n  {:?}",
                r.annotation("runbook_url")
            ));
        }
        if !generic && !repo().join(format!("docs/runbooks/{code}.md")).exists() {
            problems.push(format!("{a}: docs/runbooks/{code}.md does not exist"));
        }
        if r.alert != "RoseWatchdog" && r.expr.contains("vector(") {
            problems.push(format!("{a}: only the watchdog is a constant"));
        }
    }
    // One name for several rules only for a warning/critical pair of one condition.
    for (name, rs) in &by_name {
        if rs.len() > 1 {
            let sev: BTreeSet<_> = rs.iter().filter_map(|r| r.label("severity")).collect();
            if rs.len() != 2 || sev != BTreeSet::from(["warning", "critical"]) {
                problems.push(format!(
                    "{name}: {} rules share the name; only a warning/critical pair may",
                    rs.len()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The dead-man's switch exists and always fires.
    let w = rules.iter().find(|r| r.alert == "RoseWatchdog").unwrap();
    assert_eq!(w.expr.trim(), "vector(1)");
}

/// The generic RoseFinding rule excludes exactly the codes that have a dedicated rule.
#[test]
fn generic_finding_rule_excludes_exactly_the_dedicated_codes() {
    let rules = alert_rules();
    let generic = rules.iter().find(|r| r.alert == "RoseFinding").unwrap();
    // The filter appears in the rose_target join and in its fallback: both copies are equal.
    let filters: Vec<&str> = generic
        .expr
        .match_indices("code!~\"")
        .map(|(i, m)| {
            let start = i + m.len();
            &generic.expr[start..start + generic.expr[start..].find('"').unwrap()]
        })
        .collect();
    assert!(!filters.is_empty(), "code!~ matcher");
    assert!(
        filters.iter().all(|f| f == &filters[0]),
        "the copies of the code filter differ: {filters:#?}"
    );
    let excluded: BTreeSet<&str> = filters[0].split('|').collect();
    let dedicated: BTreeSet<&str> = rules
        .iter()
        .filter_map(|r| r.label("code"))
        .filter(|c| FINDING_CODES.contains(c))
        .collect();
    assert_eq!(excluded, dedicated);
}

#[test]
fn every_code_has_a_runbook_with_the_four_sections() {
    let mut problems = vec![];
    for code in FINDING_CODES.iter().chain(ALERT_ONLY_CODES) {
        let path = repo().join(format!("docs/runbooks/{code}.md"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            problems.push(format!("{code}: docs/runbooks/{code}.md missing"));
            continue;
        };
        if !text.starts_with("# ") {
            problems.push(format!("{code}: no title"));
        }
        let mut last = 0;
        for s in ["## Meaning", "## Impact", "## Diagnosis", "## Mitigation"] {
            match text.find(s) {
                Some(i) if i >= last => last = i,
                _ => problems.push(format!("{code}: section {s} missing or out of order")),
            }
        }
    }
    // No stray runbook without a code.
    for f in files("docs/runbooks", ".md") {
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        if stem != "README"
            && !FINDING_CODES.contains(&stem.as_str())
            && !ALERT_ONLY_CODES.contains(&stem.as_str())
        {
            problems.push(format!(
                "{stem}.md: not a finding code or an alert condition"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn amtool_accepts_the_alertmanager_example() {
    if !support::require_tool("amtool") {
        return;
    }
    let cfg = repo().join("alerts/alertmanager.example.yml");
    let (ok, out) = run_tool(
        Command::new("amtool").arg("check-config").arg(&cfg),
        TOOL_LIMIT,
    );
    assert!(ok, "amtool check-config failed:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alertmanager_example_routes_each_severity_to_its_receiver() {
    if !support::require_tool("amtool") {
        return;
    }
    let cfg = repo().join("alerts/alertmanager.example.yml");
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "alertname=RosePostgresDown",
                "severity=critical",
                "instance=a:9188",
                "code=pg_down",
            ],
            "oncall-pager,team-slack",
        ),
        (
            &[
                "alertname=RoseFinding",
                "severity=critical",
                "code=auth_failed",
            ],
            "oncall-pager,team-slack",
        ),
        // The agent's own push (AGENT_ALERTMANAGER_URL): no instance for a database finding.
        (
            &[
                "alertname=RoseFinding",
                "severity=critical",
                "code=connection_refused",
                "source=agent",
                "rose_target=db:5432/rose",
            ],
            "oncall-pager,team-slack",
        ),
        (
            &["alertname=RosePostgresConnectionsHigh", "severity=warning"],
            "team-slack",
        ),
        (
            &[
                "alertname=RoseFinding",
                "severity=info",
                "code=duplicate_index",
            ],
            "null",
        ),
        (&["alertname=RoseWatchdog", "severity=info"], "heartbeat"),
        (&["alertname=SomethingElse"], "null"),
    ];
    let mut failures = vec![];
    for (labels, want) in cases {
        let mut cmd = Command::new("amtool");
        cmd.args(["config", "routes", "test", "--config.file"])
            .arg(&cfg)
            .arg(format!("--verify.receivers={want}"))
            .args(*labels);
        let (ok, out) = run_tool(&mut cmd, TOOL_LIMIT);
        if !ok {
            failures.push(format!("{labels:?}: want {want}, amtool says:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The e2e test swaps the receivers for local webhooks: they must be the last section.
#[test]
fn alertmanager_example_keeps_receivers_last() {
    let text = std::fs::read_to_string(repo().join("alerts/alertmanager.example.yml")).unwrap();
    let top: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()))
        .collect();
    assert_eq!(top.last(), Some(&"receivers:"), "{top:?}");
}
