//! The diagnose report: its stable JSON shape (documented in docs/diagnose.md), the readable
//! text form, and the Nagios plugin exit codes (0 ok, 1 warning, 2 critical, 3 unknown).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::findings::{Finding, Severity};

/// A rung's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RungStatus {
    Ok,
    /// Ran, and found something worth knowing that is not a problem (an info finding).
    Info,
    Skipped,
    Warning,
    Critical,
}

/// One rung of the ladder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rung {
    pub name: &'static str,
    pub status: RungStatus,
    pub(crate) duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
}

impl Rung {
    pub fn new(
        name: &'static str,
        status: RungStatus,
        took: Duration,
        detail: Option<String>,
    ) -> Rung {
        Rung {
            name,
            status,
            duration_ms: took.as_millis() as u64,
            detail: detail.map(|d| crate::dsn::redact(&d)),
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `ok`, `warning`, `critical` or `unknown`.
    pub status: &'static str,
    /// Sanitized `host:port/dbname` (empty without a DSN).
    pub(crate) target: String,
    pub(crate) findings: Vec<Finding>,
    /// Findings silenced on purpose (`[findings]`): shown, not counted in the status.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) silenced: Vec<crate::findings::silence::SilencedFinding>,
    pub checks: Vec<Rung>,
}

impl Report {
    pub fn new(target: String, findings: Vec<Finding>, checks: Vec<Rung>) -> Report {
        let status = crate::findings::status_of(findings.iter().map(|f| f.severity));
        Report {
            status,
            target,
            findings,
            silenced: Vec::new(),
            checks,
        }
    }

    /// Adds the findings silenced on purpose (they do not change the status).
    pub(crate) fn with_silenced(
        mut self,
        silenced: Vec<crate::findings::silence::SilencedFinding>,
    ) -> Report {
        self.silenced = silenced;
        self
    }

    /// The configuration could not be used: the state of the system is unknown.
    pub(crate) fn force_unknown(mut self) -> Report {
        self.status = "unknown";
        self
    }

    /// Nagios plugin exit code.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            "ok" => 0,
            "warning" => 1,
            "critical" => 2,
            _ => 3,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"status\":\"unknown\",\"error\":\"{e}\"}}"))
    }

    /// The readable form; `color` adds ANSI colours.
    pub fn to_text(&self, color: bool) -> String {
        let paint = |s: &str, code: &str| {
            if color {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_owned()
            }
        };
        let mut out = String::new();
        let target = if self.target.is_empty() {
            "(no database configured)"
        } else {
            &self.target
        };
        let _ = writeln!(out, "rose-agent diagnose: {target}\n");
        for r in &self.checks {
            let mark = match r.status {
                RungStatus::Ok => paint("ok  ", "32"),
                RungStatus::Info => paint("info", "36"),
                RungStatus::Skipped => paint("skip", "90"),
                RungStatus::Warning => paint("WARN", "33"),
                RungStatus::Critical => paint("FAIL", "31"),
            };
            let detail = r.detail.as_deref().unwrap_or("");
            let _ = writeln!(
                out,
                "  [{mark}] {:<12} {:>6} ms  {detail}",
                r.name, r.duration_ms
            );
        }
        if self.findings.is_empty() {
            let _ = writeln!(out, "\nNo findings.");
        }
        for f in &self.findings {
            let sev = match f.severity {
                Severity::Critical => paint("CRITICAL", "1;31"),
                Severity::Warning => paint("WARNING ", "1;33"),
                Severity::Info => paint("INFO    ", "36"),
            };
            let _ = writeln!(out, "\n{sev} {}  {}", f.code, f.summary);
            let _ = writeln!(out, "  evidence: {}", f.evidence);
            if let Some(q) = &f.raw_query_text {
                // Only with raw_query_text configured: the operator asked to see it.
                for line in q.lines() {
                    let _ = writeln!(out, "  raw query: {line}");
                }
            }
            for (i, s) in f.steps.iter().enumerate() {
                let _ = writeln!(out, "  {}. {s}", i + 1);
            }
            let _ = writeln!(out, "  runbook: {}", f.runbook);
        }
        for s in &self.silenced {
            let until = s
                .until
                .as_deref()
                .map(|u| format!(" until {u}"))
                .unwrap_or_default();
            let key = s.finding.key();
            let _ = writeln!(
                out,
                "\n{} {key}  {}\n  silenced{until}: {}",
                paint("SILENCED", "90"),
                s.finding.summary,
                s.reason
            );
        }
        let count = |s: Severity| self.findings.iter().filter(|f| f.severity == s).count();
        let _ = writeln!(
            out,
            "\nstatus: {} ({} critical, {} warning, {} info)",
            self.status,
            count(Severity::Critical),
            count(Severity::Warning),
            count(Severity::Info)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Code;

    #[test]
    fn status_and_exit_codes() {
        let f = |sev| Finding::new(Code::SlowQueries, "s", "e", vec![]).with_severity(sev);
        assert_eq!(Report::new("t".into(), vec![], vec![]).exit_code(), 0);
        assert_eq!(
            Report::new("t".into(), vec![f(Severity::Info)], vec![]).exit_code(),
            0
        );
        assert_eq!(
            Report::new("t".into(), vec![f(Severity::Warning)], vec![]).exit_code(),
            1
        );
        assert_eq!(
            Report::new(
                "t".into(),
                vec![f(Severity::Warning), f(Severity::Critical)],
                vec![]
            )
            .exit_code(),
            2
        );
        assert_eq!(
            Report::new("t".into(), vec![], vec![])
                .force_unknown()
                .exit_code(),
            3
        );
    }

    #[test]
    fn json_shape_is_stable() {
        let r = Report::new(
            "h:5432/db".into(),
            vec![Finding::new(Code::AuthFailed, "s", "e", vec!["a".into()])],
            vec![Rung::new(
                "dns",
                RungStatus::Ok,
                Duration::from_millis(3),
                None,
            )],
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["status"], "critical");
        assert_eq!(v["target"], "h:5432/db");
        let f = &v["findings"][0];
        for k in [
            "code", "severity", "summary", "evidence", "steps", "runbook",
        ] {
            assert!(f.get(k).is_some(), "{k}");
        }
        assert_eq!(v["checks"][0]["name"], "dns");
        assert_eq!(v["checks"][0]["status"], "ok");
        assert_eq!(v["checks"][0]["duration_ms"], 3);
    }
}
