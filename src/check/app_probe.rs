//! Checks `app_probe_<name>`: one HTTP probe of the Rose app per configured endpoint (see
//! `config::probes`). A probe always completes as an observation: a refused connection, a
//! timeout or a degraded body are facts of the run (`success`, `healthy`, `failure`), not check
//! errors, so `rose_app_probe_success` and `rose_app_healthy` drop to 0 instead of vanishing.
//!
//! The app answers HTTP 200 even when degraded, so the body is read (capped at
//! `max_body_bytes`) and judged by the probe's JSON expectations. Durations accumulate in a
//! histogram held by the check across runs; failure counts likewise.
//!
//! Each request uses a fresh connection (no keep-alive pool), no proxy and no redirects, so
//! the duration covers connect + request + body the way a new client sees it, and a refused
//! port shows at once.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BoxFuture, Check, Observation};
use crate::catalog::{self, HistogramValue, Sample};
use crate::config::{JsonExpectation, ProbeConfig};
use crate::error::{CheckError, ErrorKind};

/// Prefix of every probe's check id.
pub const ID_PREFIX: &str = "app_probe_";
/// Histogram bounds in seconds; 0.1 and 2 are the guide's health and voice thresholds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];
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
    pub fn as_str(self) -> &'static str {
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
    pub up: bool,
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
    pub services_dropped: u32,
}

impl HealthBody {
    /// Services that are not connected.
    pub fn down(&self) -> Vec<&str> {
        self.services
            .iter()
            .filter(|s| !s.up)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// `healthy`, `degraded` or `other` (bounded label value).
    pub fn status_class(&self) -> Option<&'static str> {
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
    pub expectation: JsonExpectation,
    pub held: bool,
    /// The value found (compact JSON, truncated), `None` when the field is missing.
    pub actual: Option<String>,
    /// For `all_equal`: the keys whose value differs (at most 16).
    pub mismatched_keys: Vec<String>,
}

/// Probe durations accumulated since the agent started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DurationHistogram {
    pub bounds: Vec<f64>,
    /// Per bucket (not cumulative): observations `<= bounds[i]` and `> bounds[i-1]`.
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl DurationHistogram {
    pub fn new(bounds: &[f64]) -> DurationHistogram {
        DurationHistogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    /// Adds one observation; negative or non-finite values count as 0.
    pub fn observe(&mut self, v: f64) {
        let v = if v.is_finite() && v > 0.0 { v } else { 0.0 };
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    /// Cumulative buckets as the exposition wants them (`+Inf` is `count`).
    pub fn to_value(&self) -> HistogramValue {
        let mut acc = 0;
        HistogramValue {
            buckets: self
                .bounds
                .iter()
                .zip(&self.counts)
                .map(|(b, n)| {
                    acc += n;
                    (*b, acc)
                })
                .collect(),
            count: self.count,
            sum: self.sum,
        }
    }
}

/// What one probe run saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub endpoint: String,
    pub method: String,
    /// The path of the last request (the fallback, when the first path answered 404/405).
    pub path: String,
    /// Status code of the answer, `None` without one.
    pub status_code: Option<u16>,
    pub expected_status: u16,
    pub duration_seconds: f64,
    pub threshold_seconds: f64,
    pub timeout_seconds: f64,
    /// Answered, but slower than the threshold.
    pub slow: bool,
    /// Answered with the expected status and a readable body.
    pub success: bool,
    pub failure: Option<ProbeFailure>,
    /// Human text of the failure (no URL credentials, no headers).
    pub error: Option<String>,
    /// The parsed JSON body, when there was one.
    pub body: Option<HealthBody>,
    pub expectations: Vec<ExpectationResult>,
    /// Success and every expectation held.
    pub healthy: bool,
    /// This probe exports `rose_app_service_up`.
    pub report_services: bool,
    pub histogram: DurationHistogram,
    pub failures_total: BTreeMap<ProbeFailure, u64>,
}

// ---------------------------------------------------------------------------------------------
// Pure parts

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
pub fn lookup<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
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
pub fn health_body(v: &serde_json::Value) -> HealthBody {
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
    pub status_code: Option<u16>,
    pub success: bool,
    pub failure: Option<ProbeFailure>,
    pub error: Option<String>,
    pub body: Option<HealthBody>,
    pub expectations: Vec<ExpectationResult>,
    pub healthy: bool,
    pub slow: bool,
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

/// Pure: the series of one probe run.
pub fn samples(o: &ProbeResult, out: &mut Vec<Sample>) {
    let ep = o.endpoint.as_str();
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    out.push(Sample::new(
        &catalog::APP_PROBE_SUCCESS,
        &[ep],
        b(o.success),
    ));
    out.push(Sample::histogram(
        &catalog::APP_PROBE_DURATION,
        vec![ep.to_owned()],
        o.histogram.to_value(),
    ));
    out.push(Sample::new(
        &catalog::APP_PROBE_LAST_DURATION,
        &[ep],
        o.duration_seconds,
    ));
    out.push(Sample::new(
        &catalog::APP_PROBE_THRESHOLD,
        &[ep],
        o.threshold_seconds,
    ));
    out.push(Sample::new(&catalog::APP_PROBE_SLOW, &[ep], b(o.slow)));
    out.push(Sample::new(
        &catalog::APP_PROBE_STATUS_CODE,
        &[ep],
        f64::from(o.status_code.unwrap_or(0)),
    ));
    out.push(Sample::new(&catalog::APP_HEALTHY, &[ep], b(o.healthy)));
    out.push(Sample::new(&catalog::APP_PROBE_PATH, &[ep, &o.path], 1.0));
    for (reason, n) in &o.failures_total {
        out.push(Sample::new(
            &catalog::APP_PROBE_FAILURES,
            &[ep, reason.as_str()],
            *n as f64,
        ));
    }
    if let Some(body) = &o.body {
        if let Some(class) = body.status_class() {
            out.push(Sample::new(
                &catalog::APP_REPORTED_STATUS,
                &[ep, class],
                1.0,
            ));
        }
        if let Some(v) = &body.version {
            out.push(Sample::new(&catalog::APP_VERSION_INFO, &[ep, v], 1.0));
        }
        out.push(Sample::new(
            &catalog::APP_EXPECTATIONS_FAILED,
            &[ep],
            o.expectations.iter().filter(|e| !e.held).count() as f64,
        ));
        if o.report_services {
            for s in &body.services {
                out.push(Sample::new(&catalog::APP_SERVICE_UP, &[&s.name], b(s.up)));
            }
            out.push(Sample::new(
                &catalog::APP_SERVICES_DROPPED,
                &[],
                f64::from(body.services_dropped),
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// I/O

/// Classifies a reqwest error by its type and the I/O error kinds in its chain.
fn classify(e: &reqwest::Error) -> ProbeFailure {
    use std::error::Error as _;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return ProbeFailure::Tls;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if io
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
            {
                return ProbeFailure::Tls;
            }
            match io.kind() {
                K::ConnectionRefused => return ProbeFailure::Refused,
                K::TimedOut => return ProbeFailure::ConnectTimeout,
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    return ProbeFailure::Closed;
                }
                _ => {}
            }
        }
        cur = err.source();
    }
    if e.is_timeout() {
        if e.is_connect() {
            ProbeFailure::ConnectTimeout
        } else {
            ProbeFailure::Timeout
        }
    } else if e.is_connect() {
        let text = crate::error::full_chain(e).to_ascii_lowercase();
        // Fallbacks by text, for errors whose types are private to the HTTP stack.
        if text.contains("dns") || text.contains("lookup") || text.contains("resolve") {
            ProbeFailure::Dns
        } else if ["certificate", "tls", "handshake", "alert"]
            .iter()
            .any(|w| text.contains(w))
        {
            ProbeFailure::Tls
        } else {
            ProbeFailure::Other
        }
    } else if e.is_body() || e.is_decode() || e.is_request() {
        ProbeFailure::Closed
    } else {
        ProbeFailure::Other
    }
}

fn failed(failure: ProbeFailure, error: String) -> Exchange {
    Exchange::Failed {
        failure,
        error,
        status: None,
    }
}

fn failed_body(status: u16, failure: ProbeFailure, error: String) -> Exchange {
    Exchange::Failed {
        failure,
        error,
        status: Some(status),
    }
}

struct State {
    /// Index of the path that last answered (fallbacks are sticky).
    path: usize,
    histogram: DurationHistogram,
    failures: BTreeMap<ProbeFailure, u64>,
    /// Whether the previous run was healthy, for logging transitions only.
    was_healthy: Option<bool>,
}

/// One configured probe.
pub struct AppProbe {
    /// `app_probe_<name>`: owned, so a reload that rebuilds the probes frees the old ids.
    id: String,
    cfg: ProbeConfig,
    client: Result<reqwest::Client, String>,
    state: Mutex<State>,
    recovery: Option<std::sync::Arc<super::app_recovery::Watch>>,
}

impl AppProbe {
    /// Reports each verdict to the app recovery watch (`app_recovery`).
    pub fn with_recovery_watch(
        mut self,
        w: Option<std::sync::Arc<super::app_recovery::Watch>>,
    ) -> AppProbe {
        self.recovery = w;
        self
    }

    pub fn new(cfg: ProbeConfig) -> AppProbe {
        // reqwest with `rustls-no-provider` needs a process default; main installs ring, this
        // covers library users and tests. A second install is a harmless error.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .connect_timeout(cfg.timeout / 2)
            .timeout(cfg.timeout)
            .user_agent(concat!("rose-agent/", env!("CARGO_PKG_VERSION")));
        let mut client_err = None;
        // A plain-HTTP origin never uses TLS roots: loading the system store costs ~2 MB RSS.
        if cfg.origin.starts_with("http://") && cfg.ca_file.is_none() {
            b = b.tls_certs_only(Vec::<reqwest::Certificate>::new());
        }
        if let Some(f) = &cfg.ca_file {
            match crate::config::files::read(f)
                .map_err(|e| e.to_string())
                .and_then(|pem| reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string()))
            {
                Ok(c) => b = b.tls_certs_merge([c]),
                Err(e) => client_err = Some(format!("ca_file {}: {e}", f.display())),
            }
        }
        let client = match client_err {
            Some(e) => Err(e),
            None => b
                .build()
                .map_err(|e| crate::error::full_chain(&e.without_url())),
        };
        let id = format!("{ID_PREFIX}{}", cfg.name);
        AppProbe {
            id,
            recovery: None,
            client,
            state: Mutex::new(State {
                path: 0,
                histogram: DurationHistogram::new(DURATION_BUCKETS),
                failures: BTreeMap::new(),
                was_healthy: None,
            }),
            cfg,
        }
    }

    pub fn config(&self) -> &ProbeConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One request to one path, bounded by the timeout from the first byte sent to the last
    /// byte read, and by `max_body_bytes`.
    async fn exchange(&self, client: &reqwest::Client, path: &str) -> Exchange {
        let method =
            reqwest::Method::from_bytes(self.cfg.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut req = client.request(method, self.cfg.url(path));
        for h in &self.cfg.headers {
            req = req.header(h.name.as_str(), h.value.as_str());
        }
        if let Some(f) = &self.cfg.bearer_token_file {
            let token = match crate::config::files::read_to_string(f) {
                Ok(t) if !t.trim().is_empty() && t.len() < 16 * 1024 => t,
                Ok(_) => {
                    return failed(
                        ProbeFailure::Token,
                        format!("bearer token file {} is empty or too long", f.display()),
                    );
                }
                Err(e) => {
                    return failed(
                        ProbeFailure::Token,
                        format!("cannot read bearer token file {}: {e}", f.display()),
                    );
                }
            };
            match reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    req = req.header(reqwest::header::AUTHORIZATION, v);
                }
                Err(_) => {
                    return failed(
                        ProbeFailure::Token,
                        format!(
                            "bearer token in {} is not a valid header value",
                            f.display()
                        ),
                    );
                }
            }
        }
        if let Some(ct) = &self.cfg.content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct.as_str());
        }
        if let Some(body) = &self.cfg.body {
            req = req.body(body.clone());
        }
        let max = self.cfg.max_body_bytes;
        let run = async {
            let mut resp = req.send().await.map_err(|e| {
                let kind = classify(&e);
                failed(kind, crate::error::full_chain(&e.without_url()))
            })?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            if resp.content_length().is_some_and(|n| n > max as u64) {
                return Err(failed_body(
                    status,
                    ProbeFailure::BodyTooLarge,
                    format!("HTTP {status} with a body over {max} bytes"),
                ));
            }
            loop {
                match resp.chunk().await {
                    Ok(Some(c)) => {
                        if body.len() + c.len() > max {
                            return Err(failed_body(
                                status,
                                ProbeFailure::BodyTooLarge,
                                format!("HTTP {status} with a body over {max} bytes"),
                            ));
                        }
                        body.extend_from_slice(&c);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let kind = classify(&e);
                        return Err(failed_body(
                            status,
                            kind,
                            format!(
                                "HTTP {status}, body: {}",
                                crate::error::full_chain(&e.without_url())
                            ),
                        ));
                    }
                }
            }
            Ok(Exchange::Answer { status, body })
        };
        match tokio::time::timeout(self.cfg.timeout, run).await {
            Ok(Ok(x)) | Ok(Err(x)) => x,
            Err(_) => failed(
                ProbeFailure::Timeout,
                format!(
                    "no complete answer within {} ms",
                    self.cfg.timeout.as_millis()
                ),
            ),
        }
    }

    /// Probes once: the sticky path first, then the others in order while the answer is
    /// 404/405. Returns the last exchange, its path and its duration.
    async fn probe(&self, client: &reqwest::Client) -> (Exchange, usize, Duration) {
        let n = self.cfg.paths.len();
        let start = self.lock().path.min(n - 1);
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            let t = Instant::now();
            let ex = self.exchange(client, &self.cfg.paths[i]).await;
            let took = t.elapsed();
            let not_found = matches!(
                ex,
                Exchange::Answer {
                    status: 404 | 405,
                    ..
                }
            ) && !matches!(self.cfg.expect_status, 404 | 405);
            last = Some((ex, i, took));
            if !not_found {
                break;
            }
        }
        last.unwrap_or_else(|| {
            (
                failed(ProbeFailure::Other, "no path configured".into()),
                0,
                Duration::ZERO,
            )
        })
    }
}

impl Check for AppProbe {
    fn id(&self) -> &str {
        &self.id
    }
    fn target(&self) -> super::CheckTarget {
        let origin = &self.cfg.origin;
        let https = origin.starts_with("https://");
        let hostport = origin.split_once("://").map_or(origin.as_str(), |(_, r)| r);
        let (address, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_matches(['[', ']']).to_owned(),
                p.parse().unwrap_or(0),
            ),
            _ => (hostport.to_owned(), if https { 443 } else { 80 }),
        };
        let path = self.cfg.paths.first().map(String::as_str).unwrap_or("/");
        super::CheckTarget::Http {
            method: self.cfg.method.clone(),
            url: format!("{origin}{path}"),
            address,
            port,
        }
    }
    fn cadence(&self) -> super::Cadence {
        super::Cadence::Every(self.cfg.interval)
    }
    fn timeout(&self) -> Duration {
        self.cfg.timeout * self.cfg.paths.len() as u32 + Duration::from_millis(500)
    }
    fn observe(&self) -> BoxFuture<'_, Result<Observation, CheckError>> {
        Box::pin(async move {
            let client = self
                .client
                .as_ref()
                .map_err(|e| CheckError::new(ErrorKind::Tls, format!("HTTP client: {e}")))?;
            let (ex, path_index, took) = self.probe(client).await;
            let v = judge(&self.cfg, &ex, took);
            let mut st = self.lock();
            if v.status_code.is_some_and(|c| c != 404 && c != 405) {
                st.path = path_index;
            }
            st.histogram.observe(took.as_secs_f64());
            if let Some(f) = v.failure {
                *st.failures.entry(f).or_default() += 1;
            }
            // Log transitions only: the metrics carry every run. No URL, header or token here.
            if st.was_healthy != Some(v.healthy) {
                let down = v
                    .body
                    .as_ref()
                    .map(|b| b.down().join(","))
                    .unwrap_or_default();
                match (v.healthy, v.failure) {
                    (true, _) if st.was_healthy.is_some() => {
                        tracing::info!(endpoint = %self.cfg.name, "App probe healthy again.")
                    }
                    (true, _) => {}
                    (false, Some(f)) => tracing::warn!(
                        endpoint = %self.cfg.name,
                        reason = f.as_str(),
                        error = v.error.as_deref().unwrap_or_default(),
                        "App probe failed."
                    ),
                    (false, None) => tracing::warn!(
                        endpoint = %self.cfg.name,
                        status = v.body.as_ref().and_then(|b| b.status.as_deref()).unwrap_or_default(),
                        down = %down,
                        "App reports itself unhealthy."
                    ),
                }
                st.was_healthy = Some(v.healthy);
            }
            if let Some(w) = &self.recovery {
                w.probe(&self.id, super::pg::util::unix_now(), v.healthy);
            }
            Ok(Observation::AppProbe(ProbeResult {
                endpoint: self.cfg.name.clone(),
                method: self.cfg.method.clone(),
                path: self.cfg.paths[path_index].clone(),
                status_code: v.status_code,
                expected_status: self.cfg.expect_status,
                duration_seconds: took.as_secs_f64(),
                threshold_seconds: self.cfg.latency_threshold.as_secs_f64(),
                timeout_seconds: self.cfg.timeout.as_secs_f64(),
                slow: v.slow && v.status_code.is_some(),
                success: v.success,
                failure: v.failure,
                error: v.error,
                body: v.body,
                expectations: v.expectations,
                healthy: v.healthy,
                report_services: self.cfg.report_services,
                histogram: st.histogram.clone(),
                failures_total: st.failures.clone(),
            }))
        })
    }
}

/// The registry entry (the check list in `check/mod.rs`): One per configured app probe.
pub fn build(b: &crate::check::Build) -> crate::check::Built {
    b.config
        .app
        .probes
        .iter()
        .flat_map(|p| {
            crate::check::one(AppProbe::new(p.clone()).with_recovery_watch(b.watch.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::probes::health_expectations;
    use serde_json::json;

    fn cfg() -> ProbeConfig {
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

    fn answer(v: serde_json::Value) -> Exchange {
        Exchange::Answer {
            status: 200,
            body: v.to_string().into_bytes(),
        }
    }

    const FAST: Duration = Duration::from_millis(5);

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

    #[test]
    fn histogram_accumulates_cumulatively() {
        let mut h = DurationHistogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 3.0, f64::NAN, -1.0] {
            h.observe(v);
        }
        let v = h.to_value();
        assert_eq!(v.buckets, vec![(0.1, 4), (1.0, 5)]);
        assert_eq!(v.count, 6);
        assert!((v.sum - 3.65).abs() < 1e-9);
    }

    #[test]
    fn samples_show_services_and_failures() {
        let body =
            json!({"status":"degraded","services":{"groq":"connected","qdrant":"disconnected"}});
        let v = judge(&cfg(), &answer(body), FAST);
        let mut h = DurationHistogram::new(DURATION_BUCKETS);
        h.observe(0.005);
        let r = ProbeResult {
            endpoint: "health".into(),
            method: "GET".into(),
            path: "/api/health".into(),
            status_code: v.status_code,
            expected_status: 200,
            duration_seconds: 0.005,
            threshold_seconds: 0.1,
            timeout_seconds: 2.0,
            slow: false,
            success: v.success,
            failure: None,
            error: None,
            body: v.body,
            expectations: v.expectations,
            healthy: v.healthy,
            report_services: true,
            histogram: h,
            failures_total: [(ProbeFailure::Refused, 2)].into(),
        };
        let mut out = vec![];
        samples(&r, &mut out);
        let get = |name: &str, labels: &[&str]| {
            out.iter()
                .find(|s| s.def.name == name && s.labels == labels)
                .and_then(|s| s.num())
        };
        assert_eq!(get("rose_app_healthy", &["health"]), Some(0.0));
        assert_eq!(get("rose_app_probe_success", &["health"]), Some(1.0));
        assert_eq!(get("rose_app_service_up", &["qdrant"]), Some(0.0));
        assert_eq!(get("rose_app_service_up", &["groq"]), Some(1.0));
        assert_eq!(
            get("rose_app_reported_status", &["health", "degraded"]),
            Some(1.0)
        );
        assert_eq!(
            get("rose_app_probe_failures_total", &["health", "refused"]),
            Some(2.0)
        );
        assert!(
            out.iter()
                .any(|s| s.def.name == "rose_app_probe_duration_seconds")
        );
    }
}
