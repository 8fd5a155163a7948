//! `[findings]`: findings silenced on purpose. A check can be disabled (it does not run), a
//! finding code disabled (never reported as a problem), and a known finding accepted until a
//! date. Parsed here in two stages like the rest of the configuration ([`RawFindings`] as
//! written, [`FindingsConfig`] validated); applied to each evaluation by `findings::silence`.
//!
//! ```toml
//! [findings]
//! disabled_checks = ["pg_statements"]
//! disabled_codes = ["statements_unavailable"]
//! silence = [
//!   { code = "duplicate_index", subject = "idx_a,idx_b", until = "2027-01-31", reason = "drop planned in the Q1 migration" },
//! ]
//! ```
//!
//! Environment: `AGENT_DISABLED_CHECKS` and `AGENT_DISABLED_CODES` (comma-separated), and
//! `AGENT_SILENCE`: `code[:subject][@YYYY-MM-DD]` entries separated by `;` (subjects may hold
//! commas), each with the reason "set by AGENT_SILENCE". Environment entries are added to the
//! file's.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Problem;

/// `[findings]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFindings {
    /// Check ids that do not run (env `AGENT_DISABLED_CHECKS`, comma-separated), e.g.
    /// `pg_statements`, `app_probe_health`.
    pub(crate) disabled_checks: Option<Vec<String>>,
    /// Finding codes that are always silenced (env `AGENT_DISABLED_CODES`, comma-separated).
    pub(crate) disabled_codes: Option<Vec<String>>,
    /// Accepted findings (env `AGENT_SILENCE`, `code[:subject][@YYYY-MM-DD]` separated by `;`).
    pub(crate) silence: Option<Vec<RawSilence>>,
}

/// One `[[findings.silence]]` entry as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSilence {
    pub(crate) code: String,
    /// The finding's subject (an index, an endpoint); none silences every subject of the code.
    pub(crate) subject: Option<String>,
    /// Last day (UTC) the silence holds, `YYYY-MM-DD`, or an RFC 3339 time; none is forever.
    pub(crate) until: Option<String>,
    pub(crate) reason: Option<String>,
}

/// One validated silence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Silence {
    pub(crate) code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subject: Option<String>,
    /// The end as written (`2027-01-31`), for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) until: Option<String>,
    /// The instant the silence stops holding (the end of the `until` day, UTC).
    #[serde(skip)]
    pub(crate) ends: Option<SystemTime>,
    pub(crate) reason: String,
}

impl Silence {
    /// Whether the silence covers a finding of this code and subject.
    pub(crate) fn covers(&self, code: &str, subject: Option<&str>) -> bool {
        self.code == code && (self.subject.is_none() || self.subject.as_deref() == subject)
    }

    /// Whether the silence has ended at `now`.
    pub(crate) fn expired(&self, now: SystemTime) -> bool {
        self.ends.is_some_and(|e| now >= e)
    }
}

/// `[findings]`, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FindingsConfig {
    pub(crate) disabled_checks: Vec<String>,
    pub(crate) disabled_codes: Vec<String>,
    pub(crate) silences: Vec<Silence>,
}

/// The validated section in the file's shape, for `--print-config`.
pub(crate) fn to_raw(c: &FindingsConfig) -> RawFindings {
    RawFindings {
        disabled_checks: Some(c.disabled_checks.clone()),
        disabled_codes: Some(c.disabled_codes.clone()),
        silence: Some(
            c.silences
                .iter()
                .map(|s| RawSilence {
                    code: s.code.clone(),
                    subject: s.subject.clone(),
                    until: s.until.clone(),
                    reason: Some(s.reason.clone()),
                })
                .collect(),
        ),
    }
}

/// Parses an `until`: a date (the silence holds through that UTC day) or an RFC 3339 time.
pub(crate) fn parse_until(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    if s.len() == 10 {
        humantime::parse_rfc3339(&format!("{s}T00:00:00Z"))
            .ok()
            .map(|t| t + Duration::from_secs(86_400))
    } else {
        humantime::parse_rfc3339_weak(s)
            .or_else(|_| humantime::parse_rfc3339(s))
            .ok()
    }
}

/// Adds the environment's entries to the file's.
pub(crate) fn overlay_env(
    raw: &mut RawFindings,
    env: &dyn super::Env,
    problems: &mut Vec<Problem>,
) {
    let list = |v: String| -> Vec<String> {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if let Some(v) = env.get("AGENT_DISABLED_CHECKS") {
        raw.disabled_checks
            .get_or_insert_with(Vec::new)
            .extend(list(v));
    }
    if let Some(v) = env.get("AGENT_DISABLED_CODES") {
        raw.disabled_codes
            .get_or_insert_with(Vec::new)
            .extend(list(v));
    }
    if let Some(v) = env.get("AGENT_SILENCE") {
        for entry in v.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (rest, until) = match entry.rsplit_once('@') {
                Some((r, u)) => (r, Some(u.trim().to_owned())),
                None => (entry, None),
            };
            let (code, subject) = match rest.split_once(':') {
                Some((c, s)) => (c.trim(), Some(s.trim().to_owned())),
                None => (rest.trim(), None),
            };
            if code.is_empty() {
                problems.push(Problem {
                    key: "AGENT_SILENCE".into(),
                    message: format!("'{entry}' has no code: write code[:subject][@YYYY-MM-DD]"),
                });
                continue;
            }
            raw.silence.get_or_insert_with(Vec::new).push(RawSilence {
                code: code.to_owned(),
                subject: subject.filter(|s| !s.is_empty()),
                until,
                reason: Some("set by AGENT_SILENCE".into()),
            });
        }
    }
}

/// Validates `[findings]`: every check id and code must exist, every `until` must parse.
pub(crate) fn validate(
    raw: RawFindings,
    known_check: &dyn Fn(&str) -> bool,
    problems: &mut Vec<Problem>,
) -> FindingsConfig {
    let mut out = FindingsConfig::default();
    for id in raw.disabled_checks.unwrap_or_default() {
        if id == crate::catalog::checks::AGENT_PROCESS {
            problems.push(Problem {
                key: "AGENT_DISABLED_CHECKS".into(),
                message: format!("'{id}' is the agent's own check and cannot be disabled"),
            });
        } else if !known_check(&id) {
            problems.push(Problem {
                key: "AGENT_DISABLED_CHECKS".into(),
                message: format!(
                    "'{id}' is not a check id (see `agent diagnose` or rose_agent_check_success{{check}})"
                ),
            });
        } else if !out.disabled_checks.contains(&id) {
            out.disabled_checks.push(id);
        }
    }
    let known_code = |c: &str| crate::findings::codes::code_def(c).is_some();
    for code in raw.disabled_codes.unwrap_or_default() {
        if !known_code(&code) {
            problems.push(Problem {
                key: "AGENT_DISABLED_CODES".into(),
                message: format!("'{code}' is not a finding code (see docs/findings.md)"),
            });
        } else if !out.disabled_codes.contains(&code) {
            out.disabled_codes.push(code);
        }
    }
    for (i, s) in raw.silence.unwrap_or_default().into_iter().enumerate() {
        let key = format!("findings.silence[{i}]");
        if !known_code(&s.code) {
            problems.push(Problem {
                key: key.clone(),
                message: format!("'{}' is not a finding code (see docs/findings.md)", s.code),
            });
            continue;
        }
        let ends = match s.until.as_deref().map(|u| (u, parse_until(u))) {
            None => None,
            Some((_, Some(t))) => Some(t),
            Some((u, None)) => {
                problems.push(Problem {
                    key: format!("{key}.until"),
                    message: format!("'{u}' is not a date such as 2027-01-31"),
                });
                continue;
            }
        };
        out.silences.push(Silence {
            code: s.code,
            subject: s.subject,
            until: s.until.map(|u| u.trim().to_owned()),
            ends,
            reason: s
                .reason
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "no reason given".into()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(env: &[(&str, &str)], toml: &str) -> (FindingsConfig, Vec<Problem>) {
        let mut raw: RawFindings = toml::from_str(toml).unwrap();
        let env: HashMap<&str, &str> = env.iter().copied().collect();
        let mut problems = Vec::new();
        overlay_env(&mut raw, &env, &mut problems);
        let c = validate(raw, &|id| id.starts_with("pg_"), &mut problems);
        (c, problems)
    }

    #[test]
    fn file_and_env_entries_are_read_and_every_problem_is_reported() {
        let (c, p) = load(
            &[
                ("AGENT_DISABLED_CHECKS", "pg_statements, nope"),
                (
                    "AGENT_SILENCE",
                    "duplicate_index:idx_a,idx_b@2027-01-31;slow_queries",
                ),
            ],
            r#"
            disabled_codes = ["statements_unavailable", "not_a_code"]
            silence = [{ code = "missing_index", until = "31 Jan", reason = "r" }]
            "#,
        );
        assert_eq!(c.disabled_checks, vec!["pg_statements"]);
        assert_eq!(c.disabled_codes, vec!["statements_unavailable"]);
        assert_eq!(c.silences.len(), 2);
        assert_eq!(c.silences[0].subject.as_deref(), Some("idx_a,idx_b"));
        assert_eq!(c.silences[0].until.as_deref(), Some("2027-01-31"));
        assert_eq!(c.silences[1].code, "slow_queries");
        assert_eq!(c.silences[1].ends, None);
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "AGENT_DISABLED_CHECKS",
                "AGENT_DISABLED_CODES",
                "findings.silence[0].until"
            ],
            "{p:?}"
        );
    }

    #[test]
    fn a_date_holds_through_its_day() {
        let ends = parse_until("2027-01-31").unwrap();
        assert_eq!(
            ends,
            humantime::parse_rfc3339("2027-02-01T00:00:00Z").unwrap()
        );
        assert!(parse_until("tomorrow").is_none());
        let s = Silence {
            code: "x".into(),
            subject: None,
            until: Some("2027-01-31".into()),
            ends: Some(ends),
            reason: "r".into(),
        };
        assert!(!s.expired(ends - Duration::from_secs(1)));
        assert!(s.expired(ends));
        assert!(s.covers("x", Some("any")) && !s.covers("y", None));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<RawFindings>("silenced = []").is_err());
        assert!(
            toml::from_str::<RawFindings>("silence = [{ code = \"x\", util = \"d\" }]").is_err()
        );
    }
}
