//! Every finding code through every surface (issue 13): `/findings` (status and severity, from a
//! running endpoint), `rose_finding_active{code,severity}` in `/metrics`, `agent diagnose`'s
//! report (status, exit code, text, the rung it lands on), the alert pushed to Alertmanager, and
//! the dedicated alert rule when a code has one. Any surface that disagrees with another about a
//! code's status or severity fails the test, naming the code and the surfaces.

use crate::oncall_support;
use crate::support;

use std::time::{Duration, SystemTime};

use rose_agent::alerting::{PushConfig, alert_for};
use rose_agent::diagnose::{Report, Rung, RungStatus};
use rose_agent::findings::state::Tracker;
use rose_agent::findings::{CODES, Finding, Severity, status_of};
use rose_agent::snapshot::Store;

/// The Nagios exit code of a status word.
fn exit_code_of(status: &str) -> u8 {
    match status {
        "ok" => 0,
        "warning" => 1,
        "critical" => 2,
        _ => 3,
    }
}

fn rung_status(s: Severity) -> RungStatus {
    match s {
        Severity::Critical => RungStatus::Critical,
        Severity::Warning => RungStatus::Warning,
        Severity::Info => RungStatus::Info,
    }
}

#[test]
fn every_code_tells_the_same_status_and_severity_on_every_surface() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = Store::new(vec![]);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let cancel = tokio_util::sync::CancellationToken::new();
    rt.spawn(rose_agent::server::serve(
        listener,
        store.clone(),
        Default::default(),
        Default::default(),
        cancel.clone(),
    ));
    let renderer = rose_agent::render::Renderer::default();
    let push = PushConfig {
        url: "http://127.0.0.1:9".into(),
        instance: "agent:9188".into(),
        rose_target: Some("db:5432/rose".into()),
        runbook_base: "https://runbooks.example/rose".into(),
        interval: Duration::from_secs(15),
        timeout: Duration::from_secs(2),
    };
    let rules = oncall_support::alert_rules();
    let mut problems = Vec::new();
    for def in CODES {
        let code = def.code;
        let f = Finding::new(code, "summary", "evidence", vec!["a step".into()]);
        let severity = f.severity.as_str();
        if f.severity != def.severity {
            problems.push(format!(
                "{code}: Finding::new gives {severity}, the catalog {:?}",
                def.severity
            ));
        }
        let want_status = status_of([f.severity].into_iter());

        // The agent: the tracker makes it active (one cycle), the snapshot publishes it.
        let now = SystemTime::now();
        let (view, _) = Tracker::new(1, 1).update(vec![f.clone()], now);
        if view.status().status != want_status {
            problems.push(format!(
                "{code}: view status {} vs {want_status}",
                view.status().status
            ));
        }
        store.publish_findings(view);

        // /findings from the running endpoint.
        let (http, body) = support::http_get(port, "/findings").unwrap();
        assert_eq!(http, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["status"] != want_status {
            problems.push(format!(
                "{code}: /findings status {} vs {want_status}",
                v["status"]
            ));
        }
        if v["findings"][0]["code"] != code || v["findings"][0]["severity"] != severity {
            problems.push(format!("{code}: /findings lists {}", v["findings"]));
        }

        // /metrics: exactly one active series for the code, with the same severity.
        let text = String::from_utf8(renderer.render(&store.current()).to_vec()).unwrap();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("rose_finding_active{") && l.contains(&format!("code=\"{code}\""))
            })
            .collect();
        let want = format!("rose_finding_active{{code=\"{code}\",severity=\"{severity}\"}} 1");
        if series != [want.as_str()] {
            problems.push(format!("{code}: /metrics has {series:?}, want [{want}]"));
        }

        // agent diagnose: status, exit code, the text form, and the rung it lands on.
        let rung = rose_agent::diagnose::rung_of_code(code);
        let rungs = rose_agent::diagnose::judge_rungs(
            vec![Rung::new(rung, RungStatus::Ok, Duration::ZERO, None)],
            std::slice::from_ref(&f),
        );
        let report = Report::new("db:5432/rose".into(), vec![f.clone()], rungs);
        if report.status != want_status || report.exit_code() != exit_code_of(want_status) {
            problems.push(format!(
                "{code}: diagnose status {} exit {} vs {want_status}",
                report.status,
                report.exit_code()
            ));
        }
        let label = match f.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING ",
            Severity::Info => "INFO    ",
        };
        if !report.to_text(false).contains(&format!("{label} {code}")) {
            problems.push(format!("{code}: diagnose text lacks `{label} {code}`"));
        }
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        if json["findings"][0]["severity"] != severity || json["status"] != want_status {
            problems.push(format!("{code}: diagnose JSON {json}"));
        }
        let r = report.checks.iter().find(|r| r.name == rung);
        if r.map(|r| r.status) != Some(rung_status(f.severity)) {
            problems.push(format!("{code}: rung {rung} is {:?}", r.map(|r| r.status)));
        }

        // The alert pushed to Alertmanager.
        let a = alert_for(&f, &push, now, now + Duration::from_secs(45));
        if a.labels.get("severity").map(String::as_str) != Some(severity)
            || a.labels.get("code").map(String::as_str) != Some(code)
        {
            problems.push(format!("{code}: pushed labels {:?}", a.labels));
        }

        // A dedicated rule for the code pages with the code's severity; a code with tiers
        // (warning, then critical past a second threshold) has one at the code's severity.
        let tiers: Vec<(&str, Option<&str>)> = rules
            .iter()
            .filter(|r| r.label("code") == Some(code))
            .map(|r| (r.alert.as_str(), r.label("severity")))
            .collect();
        if !tiers.is_empty() && !tiers.iter().any(|(_, s)| *s == Some(severity)) {
            problems.push(format!("{code}: rules {tiers:?}, the finding {severity}"));
        }
    }
    cancel.cancel();
    assert!(
        problems.is_empty(),
        "surfaces disagree:\n{}",
        problems.join("\n")
    );
}
