//! Pure judgement of one app probe exchange: the status against the expected one, the body
//! read as JSON (Rose's health shape: status, version, services, bounded for labels) and the
//! probe's JSON expectations. Unit-tested with literal bodies.

use std::time::Duration;

use serde::Serialize;

use crate::config::{JsonExpectation, ProbeConfig};

/// At most this many services are exported from one body.
pub const MAX_SERVICES: usize = 16;

/// Why a probe failed, from a fixed set (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeFailure {
    /// Nothing accepted the TCP connection.
    Refused,
    /// TCP/TLS set-up did not finish in time.
    ConnectTimeout,
    /// Connected, but no complete answer within the timeout.
    Timeout,
    Dns,
    Tls,
    /// The server closed the connection before answering.
    Closed,
    /// An answer with another status than expected.
    Status,
    /// The body exceeded `max_body_bytes`.
    BodyTooLarge,
    /// Expectations are configured but the body is not JSON.
    BodyInvalid,
    /// The bearer token file could not be read.
    Token,
    Other,
}

impl ProbeFailure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProbeFailure::Refused => "refused",
            ProbeFailure::ConnectTimeout => "connect_timeout",
            ProbeFailure::Timeout => "timeout",
            ProbeFailure::Dns => "dns",
            ProbeFailure::Tls => "tls",
            ProbeFailure::Closed => "closed",
            ProbeFailure::Status => "status",
            ProbeFailure::BodyTooLarge => "body_too_large",
            ProbeFailure::BodyInvalid => "body_invalid",
            ProbeFailure::Token => "token",
            ProbeFailure::Other => "other",
        }
    }
}

/// A service the app's health body lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceState {
    pub name: String,
    /// The state as the app wrote it (truncated), e.g. `connected`, `disconnected`.
    pub state: String,
    pub(crate) up: bool,
}

/// What the app's JSON body says about itself (Rose's `HealthCheckResponse` shape).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct HealthBody {
    /// `status` as reported (truncated to 32 characters).
    pub status: Option<String>,
    /// `version`, sanitized for a label.
    pub version: Option<String>,
    /// `services`, at most [`MAX_SERVICES`], by name.
    pub services: Vec<ServiceState>,
    /// Services beyond the cap or with unusable names.
    pub(crate) services_dropped: u32,
}

impl HealthBody {
    /// Services that are not connected.
    pub(crate) fn down(&self) -> Vec<&str> {
        self.services
            .iter()
            .filter(|s| !s.up)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// `healthy`, `degraded` or `other` (bounded label value).
    pub(crate) fn status_class(&self) -> Option<&'static str> {
        self.status.as_deref().map(|s| match s {
            "healthy" => "healthy",
            "degraded" => "degraded",
            _ => "other",
        })
    }
}

/// The verdict on one JSON expectation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpectationResult {
    pub(crate) expectation: JsonExpectation,
    pub(crate) held: bool,
    /// The value found (compact JSON, truncated), `None` when the field is missing.
    pub actual: Option<String>,
    /// For `all_equal`: the keys whose value differs (at most 16).
    pub mismatched_keys: Vec<String>,
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => truncate(s, 64),
        other => truncate(&other.to_string(), 64),
    }
}

/// Looks up a dotted path (`services.qdrant`, `items.0`).
pub(crate) fn lookup<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(v, |cur, seg| match cur {
        serde_json::Value::Object(m) => m.get(seg),
        serde_json::Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Judges one expectation against a parsed body.
pub fn evaluate(e: &JsonExpectation, body: &serde_json::Value) -> ExpectationResult {
    let found = lookup(body, e.field());
    let actual = found.map(compact);
    match e {
        JsonExpectation::Equals { value, .. } => ExpectationResult {
            expectation: e.clone(),
            held: found == Some(value),
            actual,
            mismatched_keys: vec![],
        },
        JsonExpectation::AllEqual { value, .. } => {
            let (held, mismatched_keys) = match found {
                Some(serde_json::Value::Object(m)) if !m.is_empty() => {
                    let bad: Vec<String> = m
                        .iter()
                        .filter(|(_, v)| *v != value)
                        .map(|(k, _)| truncate(k, 32))
                        .take(16)
                        .collect();
                    (bad.is_empty(), bad)
                }
                _ => (false, vec![]),
            };
            ExpectationResult {
                expectation: e.clone(),
                held,
                actual,
                mismatched_keys,
            }
        }
    }
}

fn label_safe(s: &str, max: usize) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'));
    ok.then(|| s.to_owned())
}

/// Reads Rose's health facts (status, version, services) from any JSON body.
pub(crate) fn health_body(v: &serde_json::Value) -> HealthBody {
    let mut b = HealthBody {
        status: v
            .get("status")
            .and_then(|s| s.as_str())
            .map(|s| truncate(s, 32)),
        version: v.get("version").and_then(|s| match s {
            serde_json::Value::String(s) => label_safe(s, 32),
            serde_json::Value::Number(n) => label_safe(&n.to_string(), 32),
            _ => None,
        }),
        ..HealthBody::default()
    };
    if let Some(serde_json::Value::Object(m)) = v.get("services") {
        for (name, state) in m {
            match label_safe(name, 32) {
                Some(n) if b.services.len() < MAX_SERVICES => {
                    let state = compact(state);
                    b.services.push(ServiceState {
                        up: state == "connected",
                        name: n,
                        state: truncate(&state, 32),
                    })
                }
                _ => b.services_dropped += 1,
            }
        }
    }
    b
}

/// What an HTTP exchange produced, before judgement.
#[derive(Debug, Clone, PartialEq)]
pub enum Exchange {
    Answer {
        status: u16,
        body: Vec<u8>,
    },
    /// No usable answer; `status` when the head arrived but the body failed.
    Failed {
        failure: ProbeFailure,
        error: String,
        status: Option<u16>,
    },
}

/// The verdict on an exchange (everything but the histogram and counters).
pub struct Verdict {
    pub(crate) status_code: Option<u16>,
    pub success: bool,
    pub(crate) failure: Option<ProbeFailure>,
    pub error: Option<String>,
    pub body: Option<HealthBody>,
    pub expectations: Vec<ExpectationResult>,
    pub healthy: bool,
    pub(crate) slow: bool,
}

/// Pure: judges an exchange against the probe's configuration.
pub fn judge(cfg: &ProbeConfig, ex: &Exchange, duration: Duration) -> Verdict {
    match ex {
        Exchange::Failed {
            failure,
            error,
            status,
        } => Verdict {
            status_code: *status,
            success: false,
            failure: Some(*failure),
            error: Some(error.clone()),
            body: None,
            expectations: vec![],
            healthy: false,
            slow: false,
        },
        Exchange::Answer { status, body } => {
            let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
            let expectations: Vec<ExpectationResult> = match &parsed {
                Some(v) => cfg.expect.iter().map(|e| evaluate(e, v)).collect(),
                None => vec![],
            };
            let (success, failure, error) = if *status != cfg.expect_status {
                (
                    false,
                    Some(ProbeFailure::Status),
                    Some(format!("HTTP {status}, expected {}", cfg.expect_status)),
                )
            } else if parsed.is_none() && !cfg.expect.is_empty() {
                (
                    false,
                    Some(ProbeFailure::BodyInvalid),
                    Some(format!("the body ({} bytes) is not JSON", body.len())),
                )
            } else {
                (true, None, None)
            };
            let healthy = success && expectations.iter().all(|e| e.held);
            Verdict {
                status_code: Some(*status),
                success,
                failure,
                error,
                body: parsed.as_ref().map(health_body),
                expectations,
                healthy,
                slow: duration > cfg.latency_threshold,
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::probes::health_expectations;
    use serde_json::json;

    pub(in crate::check::app_probe) fn cfg() -> ProbeConfig {
        ProbeConfig {
            name: "health".into(),
            origin: "http://127.0.0.1:8080".into(),
            paths: vec!["/api/health".into(), "/api/v1/health".into()],
            method: "GET".into(),
            expect_status: 200,
            latency_threshold: Duration::from_millis(100),
            timeout: Duration::from_secs(2),
            interval: Duration::from_secs(15),
            expect: health_expectations(),
            headers: vec![],
            bearer_token_file: None,
            ca_file: None,
            body: None,
            content_type: None,
            report_services: true,
            side_effects: false,
            max_body_bytes: 65536,
        }
    }

    pub(in crate::check::app_probe) fn answer(v: serde_json::Value) -> Exchange {
        Exchange::Answer {
            status: 200,
            body: v.to_string().into_bytes(),
        }
    }

    pub(in crate::check::app_probe) const FAST: Duration = Duration::from_millis(5);

    #[test]
    fn healthy_body_is_healthy() {
        let body = json!({"status":"healthy","version":"1.0.0","services":{
            "groq":"connected","qdrant":"connected","elevenlabs":"connected","sqlite":"connected"}});
        let v = judge(&cfg(), &answer(body), FAST);
        assert!(v.success && v.healthy && !v.slow);
        let b = v.body.unwrap();
        assert_eq!(b.status_class(), Some("healthy"));
        assert_eq!(b.version.as_deref(), Some("1.0.0"));
        assert_eq!(b.services.len(), 4);
        assert!(b.down().is_empty());
    }

    #[test]
    fn degraded_with_200_is_success_but_not_healthy() {
        let body = json!({"status":"degraded","version":"1.0.0","services":{
            "groq":"connected","qdrant":"disconnected"}});
        let v = judge(&cfg(), &answer(body), FAST);
        assert!(v.success);
        assert!(!v.healthy);
        assert_eq!(v.body.as_ref().unwrap().down(), vec!["qdrant"]);
        assert!(!v.expectations[0].held);
        assert_eq!(v.expectations[0].actual.as_deref(), Some("degraded"));
        assert_eq!(v.expectations[1].mismatched_keys, vec!["qdrant"]);
    }

    #[test]
    fn expectations_equals_and_all_equal() {
        let body = json!({"a":{"b":[1,{"c":true}]},"m":{"x":"ok","y":"ok"},"e":{}});
        let eq = |f: &str, v: serde_json::Value| {
            evaluate(
                &JsonExpectation::Equals {
                    field: f.into(),
                    value: v,
                },
                &body,
            )
            .held
        };
        let all = |f: &str, v: serde_json::Value| {
            evaluate(
                &JsonExpectation::AllEqual {
                    field: f.into(),
                    value: v,
                },
                &body,
            )
            .held
        };
        assert!(eq("a.b.1.c", json!(true)));
        assert!(eq("a.b.0", json!(1)));
        assert!(!eq("a.b.0", json!("1")), "types matter");
        assert!(!eq("missing.path", json!(null)), "missing is not null");
        assert!(all("m", json!("ok")));
        assert!(!all("m", json!("no")));
        assert!(!all("e", json!("ok")), "an empty map proves nothing");
        assert!(!all("a.b", json!(1)), "not a map");
        assert!(!all("nope", json!("ok")));
    }

    #[test]
    fn status_garbage_and_slowness() {
        let ex = Exchange::Answer {
            status: 500,
            body: b"Internal Server Error".to_vec(),
        };
        let v = judge(&cfg(), &ex, FAST);
        assert!(!v.success && !v.healthy);
        assert_eq!(v.failure, Some(ProbeFailure::Status));
        assert_eq!(v.status_code, Some(500));

        let ex = Exchange::Answer {
            status: 200,
            body: vec![0xff, 0x00, 0x7b],
        };
        let v = judge(&cfg(), &ex, FAST);
        assert_eq!(v.failure, Some(ProbeFailure::BodyInvalid));

        let body = json!({"status":"healthy","services":{"x":"connected"}});
        let v = judge(&cfg(), &answer(body), Duration::from_millis(250));
        assert!(v.healthy && v.slow);
    }

    #[test]
    fn hostile_bodies_are_bounded() {
        let mut services = serde_json::Map::new();
        for i in 0..40 {
            services.insert(format!("svc{i}"), json!("connected"));
        }
        services.insert("bad name{}".into(), json!("connected"));
        let body = json!({"status":"x".repeat(1000),"version":"1.0\"}\n","services":services});
        let b = health_body(&body);
        assert_eq!(b.services.len(), MAX_SERVICES);
        assert_eq!(b.services_dropped, 41 - MAX_SERVICES as u32);
        assert_eq!(b.status.as_ref().unwrap().len(), 32);
        assert_eq!(b.status_class(), Some("other"));
        assert_eq!(b.version, None, "unsafe version is dropped");
    }
}
