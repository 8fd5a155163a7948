//! Silencing: splits one evaluation's findings into the ones that count and the ones silenced on
//! purpose (`[findings]`, see `config::silence`). A silenced finding stays visible (in
//! `/findings`, the status page and `agent diagnose`, with its reason and end) but does not
//! count toward the status, `rose_finding_active` or pushed alerts. A silence past its `until`
//! stops silencing and is itself noted as the info finding `silence_expired`.

use std::time::SystemTime;

use serde::Serialize;

use super::{Code, Finding};
use crate::config::silence::FindingsConfig;

/// A finding silenced on purpose, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct SilencedFinding {
    #[serde(flatten)]
    pub(crate) finding: Finding,
    /// Always true: lets a consumer of `/findings` filter without knowing the section.
    pub(crate) silenced: bool,
    pub(crate) reason: String,
    /// The silence's last day as configured; absent for a disabled code or a silence without end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) until: Option<String>,
}

/// Pure: `(counted, silenced)`. Expired silences add a `silence_expired` finding to `counted`.
pub(crate) fn apply(
    found: Vec<Finding>,
    cfg: &FindingsConfig,
    now: SystemTime,
) -> (Vec<Finding>, Vec<SilencedFinding>) {
    let mut counted = Vec::new();
    let mut silenced = Vec::new();
    for f in found {
        if cfg.disabled_codes.iter().any(|c| c == f.code) {
            silenced.push(SilencedFinding {
                finding: f,
                silenced: true,
                reason: "code disabled by configuration (AGENT_DISABLED_CODES)".into(),
                until: None,
            });
            continue;
        }
        let live = cfg
            .silences
            .iter()
            .find(|s| s.covers(f.code, f.subject.as_deref()) && !s.expired(now));
        match live {
            Some(s) => silenced.push(SilencedFinding {
                finding: f,
                silenced: true,
                reason: s.reason.clone(),
                until: s.until.clone(),
            }),
            None => counted.push(f),
        }
    }
    for s in cfg.silences.iter().filter(|s| s.expired(now)) {
        let what = match &s.subject {
            Some(sub) => format!("{} ({sub})", s.code),
            None => s.code.clone(),
        };
        let until = s.until.as_deref().unwrap_or_default();
        counted.push(
            Finding::new(
                Code::SilenceExpired,
                format!("the silence of {what} ended on {until}; it counts again"),
                format!("silence of {what} until {until}, reason: {}", s.reason),
                vec![
                    format!("decide whether {what} is still accepted: fix it (see docs/runbooks/{}.md)", s.code),
                    "or move `until` later in [findings] silence (or AGENT_SILENCE) and restart or reload the agent".into(),
                    "or remove the stale entry from the configuration".into(),
                ],
            )
            .with_subject(what),
        );
    }
    (counted, silenced)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::silence::Silence;

    fn f(code: Code, subject: Option<&str>) -> Finding {
        let f = Finding::new(code, "s", "e", vec![]);
        match subject {
            Some(s) => f.with_subject(s),
            None => f,
        }
    }

    fn silence(code: &str, subject: Option<&str>, ends: Option<SystemTime>) -> Silence {
        Silence {
            code: code.into(),
            subject: subject.map(Into::into),
            until: ends.map(|_| "2027-01-31".into()),
            ends,
            reason: "accepted".into(),
        }
    }

    #[test]
    fn a_silence_matches_code_and_subject_and_a_disabled_code_all() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let later = now + Duration::from_secs(3600);
        let cfg = FindingsConfig {
            disabled_checks: vec![],
            disabled_codes: vec!["statements_unavailable".into()],
            silences: vec![silence("duplicate_index", Some("a,b"), Some(later))],
        };
        let (counted, silenced) = apply(
            vec![
                f(Code::DuplicateIndex, Some("a,b")),
                f(Code::DuplicateIndex, Some("c,d")),
                f(Code::StatementsUnavailable, None),
                f(Code::SlowQueries, None),
            ],
            &cfg,
            now,
        );
        let keys: Vec<_> = counted.iter().map(Finding::key).collect();
        assert_eq!(keys, ["duplicate_index:c,d", "slow_queries"]);
        assert_eq!(silenced.len(), 2);
        assert_eq!(silenced[0].finding.key(), "duplicate_index:a,b");
        assert_eq!(silenced[0].reason, "accepted");
        assert_eq!(silenced[0].until.as_deref(), Some("2027-01-31"));
        assert!(silenced[1].reason.contains("AGENT_DISABLED_CODES"));
        let json = serde_json::to_value(&silenced[0]).unwrap();
        assert_eq!(json["silenced"], true);
        assert_eq!(json["code"], "duplicate_index");
    }

    #[test]
    fn an_expired_silence_stops_silencing_and_is_noted() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let cfg = FindingsConfig {
            silences: vec![silence("missing_index", None, Some(now))],
            ..FindingsConfig::default()
        };
        let (counted, silenced) = apply(vec![f(Code::MissingIndex, Some("x"))], &cfg, now);
        assert!(silenced.is_empty());
        let codes: Vec<_> = counted.iter().map(|f| f.code).collect();
        assert_eq!(codes, ["missing_index", "silence_expired"]);
        assert_eq!(counted[1].severity, crate::findings::Severity::Info);
        assert!(counted[1].evidence.contains("2027-01-31"));
    }
}
