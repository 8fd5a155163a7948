//! App probe configuration: the raw `[[app.probes]]` entries (and the environment keys that shape
//! the default health probe) validated into [`ProbeConfig`]s.
//!
//! Without `[[app.probes]]`, one probe named `health` checks `APP_BASE_URL` at `/api/health`
//! with `/api/v1/health` as fallback, every 15 s (the app allows 60 health requests a minute per
//! client IP), expecting `status == "healthy"` and every service `"connected"`.
//!
//! Probes that create data or cost money (`POST /api/v1/voice/process` calls Groq and
//! ElevenLabs; `POST /api/session/start` creates a session) are refused unless the entry says
//! `allow_side_effects = true`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problem;

/// At most this many probes: each is a check with its own label value.
pub(crate) const MAX_PROBES: usize = 16;
/// Default cap on a response body the agent reads.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// The app's health rate limit (slowapi, per client IP).
pub(crate) const HEALTH_RATE_LIMIT_PER_MINUTE: u32 = 60;
/// The app's default `RATE_LIMIT_PER_MINUTE` for voice.
pub(crate) const VOICE_RATE_LIMIT_PER_MINUTE: u32 = 10;

/// One `[[app.probes]]` entry as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    /// Label value (`endpoint`): lowercase letters, digits, `_`; default from the path.
    pub(crate) name: Option<String>,
    /// Absolute URL; default `APP_BASE_URL` + `path`.
    pub(crate) url: Option<String>,
    /// Path under `APP_BASE_URL` (default `/api/health`).
    pub(crate) path: Option<String>,
    /// Paths tried, in order, when the previous one answers 404 or 405.
    pub(crate) fallback_paths: Option<Vec<String>>,
    /// HTTP method (default GET).
    pub(crate) method: Option<String>,
    /// Expected status code (default 200).
    pub(crate) expect_status: Option<u16>,
    /// Answers slower than this count as slow (default 100ms; 2s for voice paths).
    pub(crate) latency_threshold: Option<String>,
    /// Bound on one request (connect to last body byte).
    pub(crate) timeout: Option<String>,
    /// How often to probe.
    pub(crate) interval: Option<String>,
    /// The app's limit for this route; the interval may not exceed it (default 60, voice 10).
    pub(crate) rate_limit_per_minute: Option<u32>,
    /// JSON expectations on the body.
    pub(crate) expect: Option<Vec<RawExpectation>>,
    /// Extra request headers. Values are never printed or logged.
    pub(crate) headers: Option<BTreeMap<String, String>>,
    /// File holding a bearer token, sent as `Authorization: Bearer ...`; read on every probe.
    pub(crate) bearer_token_file: Option<String>,
    /// Extra CA certificate (PEM) trusted for https, besides the system roots.
    pub(crate) ca_file: Option<String>,
    /// Request body (text).
    pub(crate) body: Option<String>,
    /// Request body read from a file (e.g. a prepared multipart voice sample).
    pub(crate) body_file: Option<String>,
    /// `Content-Type` of the body.
    pub(crate) content_type: Option<String>,
    /// Export the body's `services` map as `rose_app_service_up` (at most one probe).
    pub(crate) report_services: Option<bool>,
    /// Required for probes that create data or cost money (non-GET/HEAD methods, voice and
    /// session paths).
    pub(crate) allow_side_effects: Option<bool>,
    /// Cap on the body read (default 64 KiB); a longer body fails the probe.
    pub(crate) max_body_bytes: Option<u64>,
}

/// One JSON expectation: `field` (dotted path, e.g. `status` or `services.qdrant`) equals a
/// value, or every entry of the map at `field` equals `all_equal`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExpectation {
    pub(crate) field: String,
    pub(crate) equals: Option<serde_json::Value>,
    pub(crate) all_equal: Option<serde_json::Value>,
}

/// A validated JSON expectation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JsonExpectation {
    /// The value at `field` equals `value`.
    Equals {
        field: String,
        value: serde_json::Value,
    },
    /// `field` is a non-empty object and every entry equals `value`.
    AllEqual {
        field: String,
        value: serde_json::Value,
    },
}

impl JsonExpectation {
    pub(crate) fn field(&self) -> &str {
        match self {
            JsonExpectation::Equals { field, .. } | JsonExpectation::AllEqual { field, .. } => {
                field
            }
        }
    }
}

/// A request header whose value is never shown.
#[derive(Clone, PartialEq)]
pub(crate) struct Header {
    pub(crate) name: String,
    pub(crate) value: String,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <redacted>", self.name)
    }
}

/// A validated probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub(crate) name: String,
    /// Scheme, host and port (no path, no trailing slash, no credentials).
    pub(crate) origin: String,
    /// The path and its fallbacks, in order (each with its query, if any).
    pub(crate) paths: Vec<String>,
    pub(crate) method: String,
    pub(crate) expect_status: u16,
    pub(crate) latency_threshold: Duration,
    pub(crate) timeout: Duration,
    pub(crate) interval: Duration,
    pub(crate) expect: Vec<JsonExpectation>,
    pub(crate) headers: Vec<Header>,
    pub(crate) bearer_token_file: Option<PathBuf>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) content_type: Option<String>,
    pub(crate) report_services: bool,
    pub(crate) side_effects: bool,
    pub(crate) max_body_bytes: usize,
}

impl ProbeConfig {
    /// The URL of one of the paths.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.origin, path)
    }
}

/// The default health probe's expectations: reported healthy, every service connected.
pub(crate) fn health_expectations() -> Vec<JsonExpectation> {
    vec![
        JsonExpectation::Equals {
            field: "status".into(),
            value: "healthy".into(),
        },
        JsonExpectation::AllEqual {
            field: "services".into(),
            value: "connected".into(),
        },
    ]
}

/// Environment-level settings of the default probe (and defaults of every probe).
pub(crate) struct ProbeDefaults<'a> {
    pub(crate) enabled: bool,
    pub(crate) base_url: &'a str,
    pub(crate) interval: Option<&'a str>,
    pub(crate) timeout: Option<&'a str>,
    pub(crate) health_paths: Option<&'a str>,
    pub(crate) bearer_token_file: Option<&'a str>,
}

fn is_side_effect_path(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    p.contains("/voice") || p.contains("/session")
}

fn is_voice_path(path: &str) -> bool {
    path.to_ascii_lowercase().contains("/voice")
}

/// Splits an absolute http(s) URL into origin and path; rejects credentials in the URL.
fn split_url(url: &str) -> Result<(String, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| *s == "http" || *s == "https")
        .ok_or_else(|| "must start with http:// or https://".to_owned())?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("must not carry credentials; use bearer_token_file or headers".into());
    }
    if authority.is_empty() {
        return Err("has no host".into());
    }
    let path = if path.is_empty() || path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Ok((format!("{scheme}://{authority}"), path))
}

fn default_name(path: &str) -> String {
    let mut s: String = path
        .split('?')
        .next()
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    while s.contains("__") {
        s = s.replace("__", "_");
    }
    let s = s.trim_matches('_');
    if s.is_empty() {
        "root".into()
    } else {
        s.chars().take(40).collect()
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 40
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Validates the probe list. Problems are pushed with their key; the returned list holds the
/// probes that validated.
pub(crate) fn validate(
    raw: Option<&[RawProbe]>,
    d: &ProbeDefaults<'_>,
    problems: &mut Vec<Problem>,
) -> Vec<ProbeConfig> {
    let mut p = |key: String, message: String| problems.push(Problem { key, message });
    let env_interval = super::duration::parse(d.interval, "15s", false)
        .unwrap_or_else(|m| {
            p("AGENT_APP_PROBE_INTERVAL".into(), m);
            None
        })
        .unwrap_or(Duration::from_secs(15));
    let env_timeout = super::duration::parse(d.timeout, "2s", false).unwrap_or_else(|m| {
        p("AGENT_APP_PROBE_TIMEOUT".into(), m);
        None
    });
    let entries = entries(raw, d);
    if entries.len() > MAX_PROBES {
        p(
            "app.probes".into(),
            format!("{} probes configured; at most {MAX_PROBES}", entries.len()),
        );
    }
    let mut out: Vec<ProbeConfig> = Vec::new();
    for (i, r) in entries.iter().enumerate().take(MAX_PROBES) {
        let mut e = Entry {
            i,
            problems: &mut *problems,
            ok: true,
        };
        let (origin, paths) = e.location(r, d);
        let name = e.name(r, &paths, &out);
        let (method, side_effects) = e.method(r, &paths);
        let voice = paths.iter().any(|x| is_voice_path(x));
        let (latency_threshold, interval, timeout) = e.timing(
            r,
            voice,
            side_effects,
            env_interval,
            env_timeout,
            paths.len(),
        );
        let expect = e.expectations(r, side_effects, &method, &paths[0]);
        let expect_status = e.expect_status(r);
        let headers = e.headers(r);
        let (bearer_token_file, ca_file, body) = e.files(r);
        let max_body_bytes = e.max_body_bytes(r);
        if e.ok {
            out.push(ProbeConfig {
                name,
                origin,
                paths,
                method,
                expect_status,
                latency_threshold,
                timeout,
                interval,
                expect,
                headers,
                bearer_token_file,
                ca_file,
                body,
                content_type: r.content_type.clone(),
                report_services: r.report_services.unwrap_or(false),
                side_effects,
                max_body_bytes,
            });
        }
    }
    if out.iter().filter(|o| o.report_services).count() > 1 {
        problems.push(Problem {
            key: "app.probes".into(),
            message: "report_services may be set on one probe only (rose_app_service_up has no endpoint label)"
                .into(),
        });
    }
    out
}

/// The configured probes, or without a list the default health probe (over `health_paths`),
/// or none when probes are disabled.
fn entries(raw: Option<&[RawProbe]>, d: &ProbeDefaults<'_>) -> Vec<RawProbe> {
    match raw {
        Some(list) => list.to_vec(),
        None if !d.enabled => Vec::new(),
        None => {
            let paths: Vec<String> = d
                .health_paths
                .unwrap_or("/api/health,/api/v1/health")
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            let (first, rest) = paths
                .split_first()
                .map(|(f, r)| (f.clone(), r.to_vec()))
                .unwrap_or_else(|| ("/api/health".into(), vec![]));
            vec![RawProbe {
                name: Some("health".into()),
                path: Some(first),
                fallback_paths: Some(rest),
                bearer_token_file: d.bearer_token_file.map(str::to_owned),
                report_services: Some(true),
                ..RawProbe::default()
            }]
        }
    }
}

/// One probe entry being validated: its index (for the keys of its problems) and whether it
/// is still valid. Each section below reads one part of the entry.
struct Entry<'a> {
    i: usize,
    problems: &'a mut Vec<Problem>,
    ok: bool,
}

impl Entry<'_> {
    fn key(&self, field: &str) -> String {
        format!("app.probes[{}].{field}", self.i)
    }

    /// Records a problem with `field`: the probe is not kept.
    fn fail(&mut self, field: &str, message: String) {
        let key = self.key(field);
        self.fail_key(key, message);
    }

    fn fail_key(&mut self, key: String, message: String) {
        self.problems.push(Problem { key, message });
        self.ok = false;
    }

    /// `url`, or `path` under `APP_BASE_URL`, and the fallback paths: the origin and every
    /// path, in order.
    fn location(&mut self, r: &RawProbe, d: &ProbeDefaults<'_>) -> (String, Vec<String>) {
        let none = || (String::new(), String::new(), String::new());
        let (origin, prefix, first_path) = match (&r.url, &r.path) {
            (Some(_), Some(_)) => {
                self.fail("url", "set url or path, not both".into());
                none()
            }
            (Some(u), None) => match split_url(u) {
                Ok((origin, path)) => (origin, String::new(), path),
                Err(e) => {
                    self.fail("url", e);
                    none()
                }
            },
            (None, path) => match split_url(d.base_url) {
                Ok((origin, base_path)) => {
                    let prefix = base_path.trim_end_matches('/').to_owned();
                    let path = path.as_deref().unwrap_or("/api/health");
                    if !path.starts_with('/') {
                        self.fail("path", "must start with /".into());
                    }
                    let first = format!("{prefix}{path}");
                    (origin, prefix, first)
                }
                Err(e) => {
                    // A missing scheme is reported by the caller; anything else here.
                    if d.base_url.starts_with("http://") || d.base_url.starts_with("https://") {
                        self.fail_key("APP_BASE_URL".into(), e);
                    }
                    self.ok = false;
                    none()
                }
            },
        };
        let mut paths = vec![first_path];
        for f in r.fallback_paths.iter().flatten() {
            if f.starts_with('/') {
                paths.push(format!("{prefix}{f}"));
            } else {
                self.fail("fallback_paths", format!("'{f}' must start with /"));
            }
        }
        (origin, paths)
    }

    /// The probe's name (a label value), unique among the probes kept so far.
    fn name(&mut self, r: &RawProbe, paths: &[String], kept: &[ProbeConfig]) -> String {
        let name = match &r.name {
            Some(n) if valid_name(n) => n.clone(),
            Some(n) => {
                self.fail(
                    "name",
                    format!("'{n}' must be 1 to 40 of a-z, 0-9, _ (it is a label value)"),
                );
                String::new()
            }
            None => default_name(&paths[0]),
        };
        if kept.iter().any(|o| o.name == name) {
            self.fail("name", format!("'{name}' is used by another probe"));
        }
        name
    }

    /// The method, and whether the request can create data or cost money (then it needs
    /// `allow_side_effects`).
    fn method(&mut self, r: &RawProbe, paths: &[String]) -> (String, bool) {
        let method = r.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        if !matches!(
            method.as_str(),
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
        ) {
            self.fail("method", format!("'{method}' is not an HTTP method"));
        }
        let side_effects = !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS")
            || paths.iter().any(|x| is_side_effect_path(x));
        if side_effects && r.allow_side_effects != Some(true) {
            self.fail(
                "allow_side_effects",
                format!(
                    "{method} {} can create data or cost money (voice calls paid Groq and ElevenLabs APIs; session/start creates sessions): set allow_side_effects = true to probe it anyway",
                    paths[0]
                ),
            );
        }
        (method, side_effects)
    }

    /// Latency threshold, interval and timeout, with the app's rate limit and the rule that
    /// every path's timeout fits in one interval.
    fn timing(
        &mut self,
        r: &RawProbe,
        voice: bool,
        side_effects: bool,
        env_interval: Duration,
        env_timeout: Option<Duration>,
        n_paths: usize,
    ) -> (Duration, Duration, Duration) {
        let mut dur = |field: &str, v: Option<&str>, default: Duration| match super::duration::parse(
            v, "2s", false,
        ) {
            Ok(x) => x.unwrap_or(default),
            Err(m) => {
                self.fail(field, m);
                default
            }
        };
        let latency_threshold = dur(
            "latency_threshold",
            r.latency_threshold.as_deref(),
            if voice {
                Duration::from_secs(2)
            } else {
                Duration::from_millis(100)
            },
        );
        let interval = dur(
            "interval",
            r.interval.as_deref(),
            if side_effects {
                Duration::from_secs(300)
            } else {
                env_interval
            },
        );
        let timeout = dur(
            "timeout",
            r.timeout.as_deref(),
            env_timeout.unwrap_or(if voice {
                Duration::from_secs(10)
            } else {
                Duration::from_secs(2)
            }),
        );
        let rate = r.rate_limit_per_minute.unwrap_or(if voice {
            VOICE_RATE_LIMIT_PER_MINUTE
        } else {
            HEALTH_RATE_LIMIT_PER_MINUTE
        });
        if rate == 0 {
            self.fail("rate_limit_per_minute", "must be at least 1".into());
        } else {
            let min = Duration::from_secs(60) / rate;
            if interval < min {
                self.fail(
                    "interval",
                    format!(
                        "{} is faster than the app's limit of {rate} requests a minute allows (at least {}); raise the interval or set rate_limit_per_minute",
                        humantime::format_duration(interval),
                        humantime::format_duration(min)
                    ),
                );
            }
        }
        if timeout.is_zero() {
            self.fail(
                "timeout",
                "must be greater than zero: every wait is bounded".into(),
            );
        }
        if timeout * n_paths as u32 >= interval {
            self.fail(
                "timeout",
                format!(
                    "{} (x{} paths) does not fit in the interval {}",
                    humantime::format_duration(timeout),
                    n_paths,
                    humantime::format_duration(interval)
                ),
            );
        }
        (latency_threshold, interval, timeout)
    }

    /// The JSON expectations; a plain GET of a health path expects Rose's healthy body.
    fn expectations(
        &mut self,
        r: &RawProbe,
        side_effects: bool,
        method: &str,
        first_path: &str,
    ) -> Vec<JsonExpectation> {
        let mut expect = Vec::new();
        match &r.expect {
            Some(list) => {
                for (j, e) in list.iter().enumerate() {
                    let field = e.field.trim().to_owned();
                    if field.is_empty() {
                        self.fail(&format!("expect[{j}].field"), "must not be empty".into());
                        continue;
                    }
                    match (&e.equals, &e.all_equal) {
                        (Some(v), None) => expect.push(JsonExpectation::Equals {
                            field,
                            value: v.clone(),
                        }),
                        (None, Some(v)) => expect.push(JsonExpectation::AllEqual {
                            field,
                            value: v.clone(),
                        }),
                        _ => self.fail(
                            &format!("expect[{j}]"),
                            "set exactly one of equals, all_equal".into(),
                        ),
                    }
                }
            }
            None if !side_effects && method == "GET" && first_path.contains("health") => {
                expect = health_expectations()
            }
            None => {}
        }
        expect
    }

    fn expect_status(&mut self, r: &RawProbe) -> u16 {
        let expect_status = r.expect_status.unwrap_or(200);
        if !(100..=599).contains(&expect_status) {
            self.fail("expect_status", "must be an HTTP status (100-599)".into());
        }
        expect_status
    }

    /// Request headers: a token name and a value without line breaks.
    fn headers(&mut self, r: &RawProbe) -> Vec<Header> {
        let mut headers = Vec::new();
        for (n, v) in r.headers.iter().flatten() {
            let valid_name =
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !valid_name || v.bytes().any(|b| b == b'\r' || b == b'\n') {
                self.fail(
                    "headers",
                    format!("header '{n}' has an invalid name or value"),
                );
            } else {
                headers.push(Header {
                    name: n.clone(),
                    value: v.clone(),
                });
            }
        }
        headers
    }

    /// The files the probe reads: bearer token (checked now, read per request), CA roots and
    /// the request body.
    fn files(&mut self, r: &RawProbe) -> (Option<PathBuf>, Option<PathBuf>, Option<Vec<u8>>) {
        let bearer_token_file = r.bearer_token_file.as_ref().map(PathBuf::from);
        if let Some(f) = &bearer_token_file
            && let Err(e) = std::fs::metadata(f)
        {
            self.fail(
                "bearer_token_file",
                format!("cannot read {}: {e}", f.display()),
            );
        }
        let ca_file = r.ca_file.as_ref().map(PathBuf::from);
        if let Some(f) = &ca_file
            && let Err(e) = crate::files::read(f)
        {
            self.fail("ca_file", format!("cannot read {}: {e}", f.display()));
        }
        let body = match (&r.body, &r.body_file) {
            (Some(_), Some(_)) => {
                self.fail("body", "set body or body_file, not both".into());
                None
            }
            (Some(b), None) => Some(b.clone().into_bytes()),
            (None, Some(f)) => match crate::files::read(Path::new(f)) {
                Ok(b) => Some(b),
                Err(e) => {
                    self.fail("body_file", format!("cannot read {f}: {e}"));
                    None
                }
            },
            (None, None) => None,
        };
        (bearer_token_file, ca_file, body)
    }

    fn max_body_bytes(&mut self, r: &RawProbe) -> usize {
        match r.max_body_bytes {
            None => DEFAULT_MAX_BODY_BYTES,
            Some(n) if (1..=16 * 1024 * 1024).contains(&n) => n as usize,
            Some(_) => {
                self.fail("max_body_bytes", "must be 1 to 16777216".into());
                DEFAULT_MAX_BODY_BYTES
            }
        }
    }
}

/// The validated probes in the file's shape, header values redacted (for `--print-config`).
pub(crate) fn to_raw(probes: &[ProbeConfig]) -> Vec<RawProbe> {
    let h = |d: Duration| Some(humantime::format_duration(d).to_string());
    probes
        .iter()
        .map(|c| RawProbe {
            name: Some(c.name.clone()),
            url: Some(c.url(&c.paths[0])),
            path: None,
            fallback_paths: Some(c.paths[1..].to_vec()),
            method: Some(c.method.clone()),
            expect_status: Some(c.expect_status),
            latency_threshold: h(c.latency_threshold),
            timeout: h(c.timeout),
            interval: h(c.interval),
            rate_limit_per_minute: None,
            expect: Some(
                c.expect
                    .iter()
                    .map(|e| match e {
                        JsonExpectation::Equals { field, value } => RawExpectation {
                            field: field.clone(),
                            equals: Some(value.clone()),
                            all_equal: None,
                        },
                        JsonExpectation::AllEqual { field, value } => RawExpectation {
                            field: field.clone(),
                            equals: None,
                            all_equal: Some(value.clone()),
                        },
                    })
                    .collect(),
            ),
            headers: (!c.headers.is_empty()).then(|| {
                c.headers
                    .iter()
                    .map(|h| (h.name.clone(), "<redacted>".to_owned()))
                    .collect()
            }),
            bearer_token_file: c
                .bearer_token_file
                .as_ref()
                .map(|p| p.display().to_string()),
            ca_file: c.ca_file.as_ref().map(|p| p.display().to_string()),
            body: c.body.as_ref().map(|b| format!("<{} bytes>", b.len())),
            body_file: None,
            content_type: c.content_type.clone(),
            report_services: Some(c.report_services),
            allow_side_effects: c.side_effects.then_some(true),
            max_body_bytes: Some(c.max_body_bytes as u64),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(base: &str) -> ProbeDefaults<'_> {
        ProbeDefaults {
            enabled: true,
            base_url: base,
            interval: None,
            timeout: None,
            health_paths: None,
            bearer_token_file: None,
        }
    }

    #[test]
    fn default_probe_is_health_with_fallback() {
        let mut problems = vec![];
        let v = validate(None, &defaults("http://127.0.0.1:8080"), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(v.len(), 1);
        let h = &v[0];
        assert_eq!(h.name, "health");
        assert_eq!(h.paths, vec!["/api/health", "/api/v1/health"]);
        assert_eq!(h.url(&h.paths[0]), "http://127.0.0.1:8080/api/health");
        assert_eq!(h.latency_threshold, Duration::from_millis(100));
        assert_eq!(h.interval, Duration::from_secs(15));
        assert_eq!(h.expect, health_expectations());
        assert!(h.report_services && !h.side_effects);
    }

    #[test]
    fn voice_probe_needs_opt_in_and_gets_voice_defaults() {
        let raw = vec![RawProbe {
            path: Some("/api/v1/voice/process".into()),
            method: Some("post".into()),
            ..Default::default()
        }];
        let mut problems = vec![];
        let v = validate(Some(&raw), &defaults("http://h:8080"), &mut problems);
        assert!(v.is_empty());
        assert!(
            problems[0].message.contains("allow_side_effects"),
            "{problems:?}"
        );

        let raw = vec![RawProbe {
            allow_side_effects: Some(true),
            ..raw[0].clone()
        }];
        let mut problems = vec![];
        let v = validate(Some(&raw), &defaults("http://h:8080"), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(v[0].name, "api_v1_voice_process");
        assert_eq!(v[0].latency_threshold, Duration::from_secs(2));
        assert_eq!(v[0].interval, Duration::from_secs(300));
        assert!(v[0].expect.is_empty());
    }

    #[test]
    fn interval_faster_than_the_rate_limit_is_refused() {
        let raw = vec![RawProbe {
            interval: Some("500ms".into()),
            timeout: Some("100ms".into()),
            ..Default::default()
        }];
        let mut problems = vec![];
        validate(Some(&raw), &defaults("http://h"), &mut problems);
        assert!(
            problems[0].message.contains("60 requests a minute"),
            "{problems:?}"
        );
    }

    #[test]
    fn credentials_in_urls_are_refused_and_headers_redacted() {
        let raw = vec![RawProbe {
            url: Some("http://u:Secret1@h/api/health".into()),
            ..Default::default()
        }];
        let mut problems = vec![];
        validate(Some(&raw), &defaults("http://h"), &mut problems);
        assert!(!format!("{problems:?}").contains("Secret1"));
        assert_eq!(problems.len(), 1);

        let raw = vec![RawProbe {
            headers: Some([("X-Key".to_owned(), "Secret2".to_owned())].into()),
            ..Default::default()
        }];
        let v = validate(Some(&raw), &defaults("http://h"), &mut vec![]);
        assert!(!format!("{v:?}").contains("Secret2"));
        assert!(!toml::to_string(&to_raw(&v)[0]).unwrap().contains("Secret2"));
    }

    #[test]
    fn base_url_path_prefix_is_kept() {
        let v = validate(None, &defaults("https://h.example/rose/"), &mut vec![]);
        assert_eq!(v[0].origin, "https://h.example");
        assert_eq!(v[0].paths, vec!["/rose/api/health", "/rose/api/v1/health"]);
    }
}
