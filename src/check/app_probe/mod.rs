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
//!
//! Parts: `http` (client, one bounded exchange, failure classification), `judge` (pure verdict
//! on an exchange), `histogram` (durations across runs); this file holds the check itself
//! (sticky path fallback, state across runs, logging of transitions) and its series.

mod histogram;
mod http;
mod judge;

pub(crate) use histogram::DurationHistogram;
#[cfg(test)]
pub(crate) use judge::ServiceState;
pub use judge::{Exchange, MAX_SERVICES, Verdict, evaluate, judge};
pub(crate) use judge::{ExpectationResult, HealthBody, ProbeFailure};

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BoxFuture, Check, Observation};
use crate::catalog::{self, Sample};
use crate::config::ProbeConfig;
use crate::error::{CheckError, ErrorKind};

/// Prefix of every probe's check id.
pub(crate) const ID_PREFIX: &str = crate::catalog::checks::APP_PROBE_PREFIX;
/// Histogram bounds in seconds; 0.1 and 2 are the guide's health and voice thresholds.
pub(crate) const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// What one probe run saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub(crate) endpoint: String,
    pub(crate) method: String,
    /// The path of the last request (the fallback, when the first path answered 404/405).
    pub(crate) path: String,
    /// Status code of the answer, `None` without one.
    pub(crate) status_code: Option<u16>,
    pub(crate) expected_status: u16,
    pub(crate) duration_seconds: f64,
    pub(crate) threshold_seconds: f64,
    pub(crate) timeout_seconds: f64,
    /// Answered, but slower than the threshold.
    pub(crate) slow: bool,
    /// Answered with the expected status and a readable body.
    pub(crate) success: bool,
    pub(crate) failure: Option<ProbeFailure>,
    /// Human text of the failure (no URL credentials, no headers).
    pub(crate) error: Option<String>,
    /// The parsed JSON body, when there was one.
    pub(crate) body: Option<HealthBody>,
    pub(crate) expectations: Vec<ExpectationResult>,
    /// Success and every expectation held.
    pub(crate) healthy: bool,
    /// This probe exports `rose_app_service_up`.
    pub(crate) report_services: bool,
    pub(crate) histogram: DurationHistogram,
    pub(crate) failures_total: BTreeMap<ProbeFailure, u64>,
}

/// Pure: the series of one probe run.
pub(crate) fn samples(o: &ProbeResult, out: &mut Vec<Sample>) {
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

struct State {
    /// Index of the path that last answered (fallbacks are sticky).
    path: usize,
    histogram: DurationHistogram,
    failures: BTreeMap<ProbeFailure, u64>,
    /// Whether the previous run was healthy, for logging transitions only.
    was_healthy: Option<bool>,
}

/// One configured probe.
pub(crate) struct AppProbe {
    /// `app_probe_<name>`: owned, so a reload that rebuilds the probes frees the old ids.
    id: String,
    cfg: ProbeConfig,
    client: Result<reqwest::Client, String>,
    state: Mutex<State>,
    recovery: Option<std::sync::Arc<super::app_recovery::Watch>>,
}

impl AppProbe {
    /// Reports each verdict to the app recovery watch (`app_recovery`).
    pub(crate) fn with_recovery_watch(
        mut self,
        w: Option<std::sync::Arc<super::app_recovery::Watch>>,
    ) -> AppProbe {
        self.recovery = w;
        self
    }

    pub(crate) fn new(cfg: ProbeConfig) -> AppProbe {
        let client = http::client(&cfg);
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
            let ex = http::exchange(&self.cfg, client, &self.cfg.paths[i]).await;
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
                http::failed(ProbeFailure::Other, "no path configured".into()),
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
                w.probe(&self.id, crate::check::pg::util::unix_now(), v.healthy);
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
pub(crate) fn build(b: &crate::check::Build) -> crate::check::Built {
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
    use super::judge::tests::{FAST, answer, cfg};
    use super::*;
    use serde_json::json;

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
