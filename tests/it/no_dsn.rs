//! An agent that should monitor PostgreSQL and cannot (issue 13 item 11), through the real
//! binary: with `FEATURE_DATABASE_TYPE=postgresql` and no DSN it keeps serving and says so on
//! every surface (start-up log naming the variables, `/findings` critical with
//! `no_database_configured`, `rose_finding_active`, `agent diagnose` exit 2); a misspelled
//! `AGENT_DATABSE_URL` is named with the name it meant, on every surface, and its value (a
//! password) is shown on none.

use crate::support;

use std::time::Duration;

use support::{Agent, codes, diagnose, wait_for};

/// A password that must never be printed anywhere.
const SECRET: &str = "Typo5ecretPw";

fn typo_dsn() -> String {
    format!("postgresql://rose_monitor:{SECRET}@127.0.0.1:1/rose")
}

/// A fast agent with the app probes off (there is no app here), plus `extra`.
fn env(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("AGENT_INTERVAL", "200ms".to_owned()),
        ("AGENT_APP_PROBES", "off".to_owned()),
    ];
    v.extend(extra.iter().cloned());
    v
}

/// Waits until `/findings` lists `code` as active; returns the document.
fn active_finding(agent: &Agent, code: &str) -> serde_json::Value {
    let mut doc = serde_json::Value::Null;
    let found = wait_for(Duration::from_secs(15), || {
        doc = serde_json::from_str(&agent.get("/findings").1).unwrap_or_default();
        find(&doc["findings"], code).is_some()
    });
    assert!(
        found.is_some(),
        "{code} never active: {doc:#}\n{}",
        agent.output()
    );
    doc
}

fn find<'a>(list: &'a serde_json::Value, code: &str) -> Option<&'a serde_json::Value> {
    list.as_array()?.iter().find(|f| f["code"] == code)
}

#[test]
fn postgresql_without_a_dsn_keeps_serving_and_is_critical_everywhere() {
    let vars = env(&[("FEATURE_DATABASE_TYPE", "postgresql".to_owned())]);
    let mut agent = Agent::start(&vars);
    let doc = active_finding(&agent, "no_database_configured");
    assert_eq!(doc["status"], "critical", "{doc:#}");
    let f = find(&doc["findings"], "no_database_configured").unwrap();
    assert_eq!(f["severity"], "critical");
    for v in [
        "AGENT_DATABASE_URL",
        "AGENT_DATABASE_URL_FILE",
        "DATABASE_URL",
    ] {
        assert!(f["evidence"].as_str().unwrap().contains(v), "{f:#}");
    }
    let m = agent.metrics();
    assert_eq!(
        m.get(r#"rose_finding_active{code="no_database_configured",severity="critical"}"#),
        Some(1.0),
        "{:?}",
        m.names()
    );
    assert!(!m.names().contains("rose_pg_up"), "no DSN, no rose_pg_up");
    // One start-up line naming the variables, at error level.
    let out = agent.output();
    let line = out
        .lines()
        .find(|l| l.contains("FEATURE_DATABASE_TYPE=postgresql but no PostgreSQL DSN"))
        .unwrap_or_else(|| panic!("no start-up line naming the variables:\n{out}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("AGENT_DATABASE_URL_FILE, DATABASE_URL"),
        "{line}"
    );
    // Still alive, and stops cleanly.
    assert_eq!(agent.terminate(), Some(0), "{}", agent.output());

    let (code, report, all) = diagnose(&vars, &[]);
    assert_eq!(code, 2, "{all}");
    assert_eq!(report["status"], "critical", "{all}");
    assert!(
        codes(&report).contains(&"no_database_configured".to_owned()),
        "{all}"
    );
    let config_rung = report["checks"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "config"))
        .unwrap_or_else(|| panic!("no config rung: {all}"));
    assert_eq!(config_rung["status"], "critical", "{all}");
}

#[test]
fn a_misspelled_dsn_variable_is_named_with_the_right_name_and_never_shown() {
    let vars = env(&[
        ("FEATURE_DATABASE_TYPE", "postgresql".to_owned()),
        ("AGENT_DATABSE_URL", typo_dsn()),
    ]);
    let agent = Agent::start(&vars);
    let doc = active_finding(&agent, "unknown_variable");
    let doc = if find(&doc["findings"], "no_database_configured").is_some() {
        doc
    } else {
        active_finding(&agent, "no_database_configured")
    };
    assert_eq!(doc["status"], "critical", "{doc:#}");
    let typo = find(&doc["findings"], "unknown_variable").unwrap();
    assert_eq!(typo["severity"], "warning");
    assert_eq!(typo["subject"], "AGENT_DATABSE_URL");
    assert!(
        typo["summary"]
            .as_str()
            .unwrap()
            .contains("did you mean AGENT_DATABASE_URL?"),
        "{typo:#}"
    );
    let missing = find(&doc["findings"], "no_database_configured").unwrap();
    assert!(
        missing["steps"][0]
            .as_str()
            .unwrap()
            .starts_with("Rename AGENT_DATABSE_URL to AGENT_DATABASE_URL"),
        "{missing:#}"
    );
    let metrics = agent.get("/metrics").1;
    assert!(
        metrics.contains(r#"rose_finding_active{code="unknown_variable",severity="warning"} 1"#),
        "{metrics}"
    );
    let out = agent.output();
    let warned = out
        .lines()
        .filter(|l| {
            l.contains("AGENT_DATABSE_URL is set but the agent does not read it")
                && !l.contains("Finding active")
        })
        .collect::<Vec<_>>();
    assert_eq!(warned.len(), 1, "one start-up warning:\n{out}");
    assert!(
        warned[0].contains("WARN") && warned[0].contains("did you mean AGENT_DATABASE_URL?"),
        "{}",
        warned[0]
    );

    let (code, report, all) = diagnose(&vars, &[]);
    assert_eq!(code, 2, "{all}");
    let c = codes(&report);
    assert!(
        c.contains(&"unknown_variable".to_owned())
            && c.contains(&"no_database_configured".to_owned()),
        "{all}"
    );
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["diagnose", "--format", "text", "--no-color"])
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&text.stdout),
        String::from_utf8_lossy(&text.stderr)
    );
    assert!(text.contains("did you mean AGENT_DATABASE_URL?"), "{text}");

    let findings = agent.get("/findings").1;
    for (surface, body) in [
        ("log", out.as_str()),
        ("/findings", findings.as_str()),
        ("/metrics", metrics.as_str()),
        ("diagnose json", all.as_str()),
        ("diagnose text", text.as_str()),
    ] {
        assert!(
            !body.contains(SECRET),
            "password shown in {surface}:\n{body}"
        );
    }
}

/// With the app on SQLite the misspelling is still no "ok": a warning, diagnose exit 1, and no
/// claim that PostgreSQL should be monitored.
#[test]
fn a_misspelled_variable_on_sqlite_is_a_warning() {
    let vars = env(&[("AGENT_DATABSE_URL", typo_dsn())]);
    let (code, report, all) = diagnose(&vars, &[]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(report["status"], "warning", "{all}");
    assert_eq!(codes(&report), ["unknown_variable"], "{all}");
    assert!(!all.contains(SECRET), "{all}");
    let database = report["checks"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "database"))
        .unwrap_or_else(|| panic!("no database rung: {all}"));
    assert!(
        database["detail"]
            .as_str()
            .unwrap()
            .contains("none of AGENT_DATABASE_URL, AGENT_DATABASE_URL_FILE, DATABASE_URL"),
        "{all}"
    );
}

/// An unusable configuration still exits 64, and names the misspelled variable too.
#[test]
fn an_unusable_configuration_also_names_misspelled_variables() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("run")
        .env_clear()
        .env("AGENT_INTERVAL", "often")
        .env("AGENT_DATABSE_URL", typo_dsn())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AGENT_INTERVAL"), "{err}");
    assert!(
        err.contains("note: AGENT_DATABSE_URL is set but the agent does not read it: did you mean AGENT_DATABASE_URL?"),
        "{err}"
    );
    assert!(!err.contains(SECRET), "{err}");
}

/// The shipped deployment files and example configuration set only variables the agent reads
/// (they would otherwise raise `unknown_variable` out of the box), and every `AGENT_*` variable
/// the agent reads is documented in the README, where the finding's steps send the reader.
#[test]
fn shipped_files_use_only_known_names_and_the_readme_lists_them_all() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let known = rose_agent::config::vars::known();
    let mut files = vec![root.join("docs/config.example.toml")];
    let mut dirs = vec![root.join("deploy")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for name in agent_names(&text) {
            assert!(known.contains(&name.as_str()), "{f:?} sets unknown {name}");
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for name in known.iter().filter(|n| n.starts_with("AGENT_")) {
        assert!(readme.contains(name), "README.md does not document {name}");
    }
}

/// Every `AGENT_[A-Z0-9_]+` word in `text`.
fn agent_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("AGENT_") {
        let before = rest[..i].chars().next_back();
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(tail[..end].trim_end_matches('_').to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    out
}
