//! Protection of the agent's own endpoint, configured from a web config file in the manner of
//! Prometheus' exporter-toolkit (`AGENT_WEB_CONFIG_FILE`, YAML):
//!
//! ```yaml
//! tls_server_config:          # serve HTTPS
//!   cert_file: /etc/rose-agent/tls.crt
//!   key_file: /etc/rose-agent/tls.key
//! basic_auth_users:           # user: bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//!   prometheus: $2y$10$...
//! bearer_token_file: /run/secrets/rose-agent-token   # or a bearer token (an extension)
//! ```
//!
//! A node_exporter `web-config.yml` works unchanged: every exporter-toolkit key is accepted.
//! `tls_server_config` also takes `client_auth_type` with `client_ca_file` (mutual TLS),
//! `client_allowed_sans`, inline `cert`/`key`/`client_ca`, `min_version`/`max_version`,
//! `cipher_suites`, `curve_preferences` and `prefer_server_cipher_suites`;
//! `http_server_config` takes `headers` (added to every answer, the same five headers
//! exporter-toolkit allows) and `http2` (default true, as there: HTTP/2 by ALPN over TLS and by
//! prior knowledge on plain TCP; `false` serves HTTP/1.1 only); `rate_limit` is a token bucket
//! over the protected endpoints. What rustls cannot do (TLS 1.0
//! and 1.1, CBC and RSA key-exchange suites, P-521) is named in one
//! warning at start ([`WebConfig::warnings`]) and the nearest safe setting is used instead:
//! a valid exporter-toolkit file is never refused for it.
//!
//! With users or a token set, `/metrics` and `/findings` require one of them; `/healthz` and
//! `/readyz` stay open for orchestrator probes. Successful basic-auth checks are cached (bcrypt
//! is slow on purpose) so a scrape costs a hash-map lookup, not a bcrypt round.
//!
//! bcrypt never runs on the async workers (the checks and `/healthz` run there): it runs on a
//! blocking thread, one verification at a time ([`MAX_CONCURRENT_VERIFICATIONS`]). A failed
//! verification is remembered ([`FAILED_TTL`]: the same wrong credential is refused without
//! hashing again) and holds the next one off for three times its own duration, at least
//! [`MIN_FAILURE_PENALTY`], so wrong passwords use at most a quarter of one core; requests in
//! that window get `429 Too Many Requests` at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::config::{ConfigError, Problem};

pub(crate) use crate::config::web::{RateLimitConfig, TlsServerConfig, WebConfigFile};

/// Validated and loaded.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<Arc<Auth>>,
    /// `http_server_config.headers`, set on every answer (they replace the endpoint's own).
    pub(crate) headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    /// `rate_limit`, over the protected endpoints (`/healthz` and `/readyz` stay open).
    pub(crate) rate_limit: Option<Arc<RateLimiter>>,
    /// `http_server_config.http2: false`: HTTP/1.1 only (else HTTP/2 is served beside it, with
    /// `h2` offered by ALPN when TLS is on).
    pub(crate) http1_only: bool,
    /// What the file asks that cannot be honoured as written, and what is done instead; logged
    /// once when the endpoint starts.
    pub(crate) warnings: Vec<String>,
}

/// Response headers exporter-toolkit lets `http_server_config.headers` set, with the values it
/// allows (`None`: any value).
const ALLOWED_HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// Credentials the protected endpoints accept.
#[derive(Debug)]
pub struct Auth {
    users: BTreeMap<String, String>,
    token: Option<String>,
    /// `Authorization` values already verified (bounded).
    verified: Mutex<HashSet<String>>,
    throttle: Arc<Throttle>,
}

const VERIFIED_CACHE: usize = 64;
/// bcrypt verifications at once: one keeps at least one of the two cores free for the runtime.
pub(crate) const MAX_CONCURRENT_VERIFICATIONS: usize = 1;
/// How long a request may wait for a verification slot before it gets 429 (a wait on the
/// runtime, not a blocked worker).
const VERIFY_QUEUE_WAIT: Duration = Duration::from_secs(1);
/// After a failed verification the next one waits three times as long as it took, and at least
/// this: wrong passwords then use at most a quarter of one core.
pub(crate) const MIN_FAILURE_PENALTY: Duration = Duration::from_millis(250);
/// How long a wrong credential is refused without hashing it again.
pub(crate) const FAILED_TTL: Duration = Duration::from_secs(60);
/// Wrong credentials remembered at most (a hash each).
const FAILED_CACHE: usize = 1024;

/// What the endpoint answers a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// 401.
    Denied,
    /// 429: failed attempts hold verification off for a moment.
    Throttled,
}

/// The bound on bcrypt work: one slot, and a pause after each failure.
#[derive(Debug)]
struct Throttle {
    slots: Arc<tokio::sync::Semaphore>,
    /// No verification starts before this (set after a failure).
    not_before: Mutex<Option<Instant>>,
    /// Hashes of recently refused `Authorization` values (never the values themselves).
    failed: Mutex<HashMap<u64, Instant>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Throttle {
    fn new() -> Throttle {
        Throttle {
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_VERIFICATIONS)),
            not_before: Mutex::new(None),
            failed: Mutex::new(HashMap::new()),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn held_off(&self) -> bool {
        lock(&self.not_before).is_some_and(|t| Instant::now() < t)
    }

    fn recently_failed(&self, key: u64) -> bool {
        lock(&self.failed)
            .get(&key)
            .is_some_and(|t| t.elapsed() < FAILED_TTL)
    }

    fn failure(&self, key: u64, took: Duration) {
        let now = Instant::now();
        *lock(&self.not_before) = Some(now + (took * 3).max(MIN_FAILURE_PENALTY));
        let mut failed = lock(&self.failed);
        if failed.len() >= FAILED_CACHE {
            failed.retain(|_, t| t.elapsed() < FAILED_TTL);
            if failed.len() >= FAILED_CACHE {
                failed.clear();
            }
        }
        failed.insert(key, now);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WebConfig {
    /// Reads and validates the file; every problem is reported (the tests' shorthand).
    #[cfg(test)]
    pub(crate) fn load(path: &Path) -> Result<WebConfig, Vec<String>> {
        WebConfig::build(crate::config::web::load(path).map_err(|e| vec![e])?)
    }

    /// Validates the file's text (`origin` names it in messages); files it refers to are read.
    pub fn from_yaml(text: &str, origin: &str) -> Result<WebConfig, Vec<String>> {
        WebConfig::build(crate::config::web::parse(text, origin).map_err(|e| vec![e])?)
    }

    /// The endpoint's protection for a validated configuration (none without
    /// `AGENT_WEB_CONFIG_FILE`): what the file says, built into the live TLS config, auth cache
    /// and rate limiter. Problems are configuration problems of `AGENT_WEB_CONFIG_FILE`.
    pub fn for_config(config: &crate::config::Config) -> Result<WebConfig, ConfigError> {
        match &config.agent.web {
            None => Ok(WebConfig::default()),
            Some(file) => WebConfig::build(file.clone()).map_err(|errs| {
                ConfigError(
                    errs.into_iter()
                        .map(|message| Problem {
                            key: "AGENT_WEB_CONFIG_FILE".into(),
                            message,
                        })
                        .collect(),
                )
            }),
        }
    }

    /// Builds the parsed file; files it refers to are read.
    pub(crate) fn build(file: WebConfigFile) -> Result<WebConfig, Vec<String>> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let http = file.http_server_config.unwrap_or_default();
        let http1_only = http.http2 == Some(false);
        let tls = match &file.tls_server_config {
            None => None,
            Some(t) => match tls_config(t, &mut warnings) {
                Ok(mut c) => {
                    if !http1_only {
                        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                    }
                    Some(Arc::new(c))
                }
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
        };
        let mut headers = Vec::new();
        for (name, value) in &http.headers {
            if value.trim().is_empty() {
                continue; // exporter-toolkit: "unset if blank"
            }
            match response_header(name, value) {
                Ok(h) => headers.push(h),
                Err(e) => problems.push(e),
            }
        }
        let rate_limit = match file.rate_limit.as_ref().map(RateLimiter::from_config) {
            None | Some(Ok(None)) => None,
            Some(Ok(Some(r))) => Some(Arc::new(r)),
            Some(Err(e)) => {
                problems.push(e);
                None
            }
        };
        for (user, hash) in &file.basic_auth_users {
            if !hash.starts_with("$2") {
                problems.push(format!("basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"));
            }
        }
        let token = match &file.bearer_token_file {
            None => None,
            Some(p) => match crate::files::read_to_string(p) {
                Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
                Ok(_) => {
                    problems.push(format!("bearer_token_file {} is empty", p.display()));
                    None
                }
                Err(e) => {
                    problems.push(format!(
                        "cannot read bearer_token_file {}: {e}",
                        p.display()
                    ));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let auth = (!file.basic_auth_users.is_empty() || token.is_some())
            .then(|| Arc::new(Auth::new(file.basic_auth_users, token)));
        Ok(WebConfig {
            tls,
            auth,
            headers: Arc::new(headers),
            rate_limit,
            http1_only,
            warnings,
        })
    }
}

/// Pure: one `http_server_config.headers` entry, checked as exporter-toolkit checks it.
fn response_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let Some((canonical, values)) = ALLOWED_HEADERS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    else {
        let allowed: Vec<&str> = ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "http_server_config.headers: {name:?} cannot be configured (allowed, as in exporter-toolkit: {})",
            allowed.join(", ")
        ));
    };
    if let Some(values) = values
        && !values.iter().any(|v| v.eq_ignore_ascii_case(value.trim()))
    {
        return Err(format!(
            "http_server_config.headers.{canonical}: {value:?} is not one of {}",
            values.join(", ")
        ));
    }
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("http_server_config.headers.{canonical}: not a valid header value"))?;
    let name = HeaderName::from_bytes(canonical.as_bytes())
        .map_err(|_| format!("http_server_config.headers: {canonical:?} is not a header name"))?;
    Ok((name, value))
}

/// Middleware: sets the configured response headers on every answer.
pub(crate) async fn add_headers(
    State(headers): State<Arc<Vec<(HeaderName, HeaderValue)>>>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = next.run(req).await;
    for (name, value) in headers.iter() {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

/// exporter-toolkit's `rate_limit`: one token every `interval`, at most `burst` saved up; a
/// request without a token gets 429 at once (nothing waits).
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: f64,
    /// Tokens and when they were last counted.
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// Pure: `None` when the limit is off (no or a zero interval).
    pub(crate) fn from_config(c: &RateLimitConfig) -> Result<Option<RateLimiter>, String> {
        let interval = match c.interval.as_deref().map(str::trim) {
            None | Some("") | Some("0") => return Ok(None),
            Some(v) => humantime::parse_duration(v).map_err(|e| {
                format!("rate_limit.interval: {v:?} is not a duration like 100ms or 1s ({e})")
            })?,
        };
        if interval.is_zero() {
            return Ok(None);
        }
        let burst = f64::from(c.burst.unwrap_or(0).max(1));
        Ok(Some(RateLimiter {
            interval,
            burst,
            bucket: Mutex::new((burst, Instant::now())),
        }))
    }

    /// Takes a token if one is there.
    pub(crate) fn allow_at(&self, now: Instant) -> bool {
        let mut b = lock(&self.bucket);
        let earned = now.saturating_duration_since(b.1).as_secs_f64() / self.interval.as_secs_f64();
        b.0 = (b.0 + earned).min(self.burst);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Middleware: 429 when `rate_limit` has no token left.
pub(crate) async fn rate_limit(
    State(limiter): State<Arc<RateLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    if limiter.allow_at(Instant::now()) {
        next.run(req).await
    } else {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "too many requests (rate_limit of the web config)\n",
        )
            .into_response()
    }
}

/// Go's `crypto/tls` protocol version names, oldest first.
const TLS_VERSIONS: &[&str] = &["TLS10", "TLS11", "TLS12", "TLS13"];

/// What `client_auth_type` asks of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    NoClientCert,
    /// Asks for a certificate, takes any (or none) without checking its chain.
    RequestClientCert,
    /// Takes any certificate, one is required; the chain is not checked.
    RequireAnyClientCert,
    /// A certificate, when given, must chain to `client_ca_file`.
    VerifyClientCertIfGiven,
    /// A certificate chaining to `client_ca_file` is required (mutual TLS).
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    /// Pure: exporter-toolkit's names (an empty or missing value is `NoClientCert`).
    pub(crate) fn parse(s: Option<&str>) -> Result<ClientAuth, String> {
        Ok(match s.unwrap_or("").trim() {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            "RequireAnyClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            other => {
                return Err(format!(
                    "tls_server_config.client_auth_type: {other:?} is not one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ));
            }
        })
    }
}

/// Pure: the protocol versions rustls serves within `min_version`..=`max_version` (Go names;
/// exporter-toolkit's default floor is TLS 1.2). Versions rustls lacks are warned about; a
/// range holding none of TLS 1.2/1.3 gets TLS 1.2 with a warning.
pub(crate) fn tls_versions(
    min: Option<&str>,
    max: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let index = |key: &str, v: Option<&str>, default: usize| match v.map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) => TLS_VERSIONS.iter().position(|n| *n == v).ok_or_else(|| {
            format!(
                "tls_server_config.{key}: {v:?} is not one of {}",
                TLS_VERSIONS.join(", ")
            )
        }),
    };
    let lo = index("min_version", min, 2)?;
    let hi = index("max_version", max, 3)?;
    if lo > hi {
        return Err(format!(
            "tls_server_config: min_version {} is above max_version {}",
            TLS_VERSIONS[lo], TLS_VERSIONS[hi]
        ));
    }
    if lo < 2 {
        warnings.push(format!(
            "tls_server_config.min_version {}: TLS 1.0 and 1.1 are not served (rustls); TLS 1.2 is the floor",
            TLS_VERSIONS[lo]
        ));
    }
    let mut out = Vec::new();
    if lo <= 2 && hi >= 2 {
        out.push(&rustls::version::TLS12);
    }
    if hi >= 3 {
        out.push(&rustls::version::TLS13);
    }
    if out.is_empty() {
        warnings.push(format!(
            "tls_server_config.max_version {}: TLS 1.0 and 1.1 are not served (rustls); serving TLS 1.2",
            TLS_VERSIONS[hi]
        ));
        out.push(&rustls::version::TLS12);
    }
    Ok(out)
}

/// Pure: the provider's TLS 1.2 suites narrowed to `names` (Go names, in the file's order; Go
/// applies `cipher_suites` to TLS 1.2 only, and so does this). Names rustls lacks are warned
/// about; when none is left the provider's TLS 1.2 suites stay.
pub(crate) fn cipher_suites(
    provider: &[rustls::SupportedCipherSuite],
    names: &[String],
    warnings: &mut Vec<String>,
) -> Vec<rustls::SupportedCipherSuite> {
    if names.is_empty() {
        return provider.to_vec();
    }
    let name_of = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
    let mut chosen: Vec<rustls::SupportedCipherSuite> = Vec::new();
    let mut unknown = Vec::new();
    for n in names {
        let n = n.trim();
        match provider
            .iter()
            .find(|s| matches!(s, rustls::SupportedCipherSuite::Tls12(_)) && name_of(s) == n)
        {
            Some(s) => chosen.push(*s),
            None if n.starts_with("TLS_AES_") || n.starts_with("TLS_CHACHA20_") => {
                // TLS 1.3 suites: not configurable in Go either; all stay.
            }
            None => unknown.push(n.to_owned()),
        }
    }
    if !unknown.is_empty() {
        warnings.push(format!(
            "tls_server_config.cipher_suites: rustls does not offer {} (it serves only AEAD suites with forward secrecy); {}",
            unknown.join(", "),
            if chosen.is_empty() {
                "none of the listed TLS 1.2 suites is available, so rustls' own TLS 1.2 suites are used"
            } else {
                "the others listed are used"
            }
        ));
    }
    if chosen.is_empty() {
        return provider.to_vec();
    }
    let tls13 = provider
        .iter()
        .filter(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)));
    chosen.extend(tls13);
    chosen
}

/// Pure: the provider's key-exchange groups ordered by `curve_preferences` (Go names); names
/// rustls lacks are warned about; when none is left the provider's groups stay.
pub(crate) fn kx_groups(
    provider: &[&'static dyn rustls::crypto::SupportedKxGroup],
    names: &[String],
    warnings: &mut Vec<String>,
) -> Vec<&'static dyn rustls::crypto::SupportedKxGroup> {
    use rustls::NamedGroup;
    if names.is_empty() {
        return provider.to_vec();
    }
    let mut chosen = Vec::new();
    let mut unknown = Vec::new();
    for n in names {
        let want = match n.trim() {
            "CurveP256" | "P256" | "P-256" => Some(NamedGroup::secp256r1),
            "CurveP384" | "P384" | "P-384" => Some(NamedGroup::secp384r1),
            "CurveP521" | "P521" | "P-521" => Some(NamedGroup::secp521r1),
            "X25519" => Some(NamedGroup::X25519),
            "X25519MLKEM768" => Some(NamedGroup::X25519MLKEM768),
            _ => None,
        };
        match want.and_then(|w| provider.iter().find(|g| g.name() == w)) {
            Some(g)
                if !chosen
                    .iter()
                    .any(|c: &&dyn rustls::crypto::SupportedKxGroup| c.name() == g.name()) =>
            {
                chosen.push(*g)
            }
            Some(_) => {}
            None => unknown.push(n.trim().to_owned()),
        }
    }
    if !unknown.is_empty() {
        warnings.push(format!(
            "tls_server_config.curve_preferences: rustls does not offer {}; {}",
            unknown.join(", "),
            if chosen.is_empty() {
                "none listed is available, so rustls' own groups (X25519, P-256, P-384) are used"
            } else {
                "the others listed are used"
            }
        ));
    }
    if chosen.is_empty() {
        return provider.to_vec();
    }
    chosen
}

fn tls_config(
    t: &TlsServerConfig,
    warnings: &mut Vec<String>,
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert_pem, cert_from) = pem_source("cert", t.cert.as_deref(), t.cert_file.as_deref())?;
    let (key_pem, key_from) = pem_source("key", t.key.as_deref(), t.key_file.as_deref())?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert_from}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_from}: no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("{key_from}: {e}"))?;
    let client_auth = ClientAuth::parse(t.client_auth_type.as_deref())?;
    let has_ca = t.client_ca_file.is_some() || t.client_ca.is_some();
    if !t.client_allowed_sans.is_empty()
        && !matches!(
            client_auth,
            ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
        )
    {
        // exporter-toolkit refuses it too: without a required certificate there is no SAN.
        return Err("tls_server_config.client_allowed_sans needs client_auth_type RequireAndVerifyClientCert (or RequireAnyClientCert)".into());
    }
    if has_ca && client_auth == ClientAuth::NoClientCert {
        // exporter-toolkit refuses this too: a CA without a policy protects nothing.
        return Err("tls_server_config: client_ca_file is set without a client_auth_type (use RequireAndVerifyClientCert for mutual TLS)".into());
    }
    let versions = tls_versions(t.min_version.as_deref(), t.max_version.as_deref(), warnings)?;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = cipher_suites(&provider.cipher_suites, &t.cipher_suites, warnings);
    provider.kx_groups = kx_groups(&provider.kx_groups, &t.curve_preferences, warnings);
    let provider = Arc::new(provider);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = match client_auth {
        ClientAuth::NoClientCert => rustls::server::WebPkiClientVerifier::no_client_auth(),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            warnings.push(format!(
                "tls_server_config.client_auth_type {}: any client certificate is taken without checking who issued it (as in Go); use RequireAndVerifyClientCert with client_ca_file to authenticate clients",
                t.client_auth_type.as_deref().unwrap_or_default().trim()
            ));
            Arc::new(AnyClientCert {
                mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                provider: provider.clone(),
            })
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let roots = client_roots(t, warnings)?;
            let b = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            );
            let b = if client_auth == ClientAuth::VerifyClientCertIfGiven {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?
        }
    };
    let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> =
        if t.client_allowed_sans.is_empty() {
            verifier
        } else {
            Arc::new(AllowedSans {
                inner: verifier,
                allowed: t.client_allowed_sans.clone(),
            })
        };
    let mut c = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    c.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    Ok(c)
}

/// The roots client certificates must chain to: `client_ca_file`, or (as Go does without
/// one) the system's roots, with a warning.
fn client_roots(
    t: &TlsServerConfig,
    warnings: &mut Vec<String>,
) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let given = t.client_ca_file.is_some() || t.client_ca.is_some();
    let certs: Vec<CertificateDer<'static>> = match given {
        true => {
            let (pem, from) = pem_source(
                "client_ca",
                t.client_ca.as_deref(),
                t.client_ca_file.as_deref(),
            )?;
            CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{from}: {e}"))?
        }
        false => {
            warnings.push("tls_server_config: client certificates are verified against the system's roots (no client_ca_file); set client_ca_file to your client CA".into());
            rustls_native_certs::load_native_certs().certs
        }
    };
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(match given {
            true => "tls_server_config.client_ca_file: no CA certificate".into(),
            false => "tls_server_config: no client_ca_file and no system roots to verify client certificates with".into(),
        });
    }
    Ok(roots)
}

/// The PEM of `<what>` (inline) or `<what>_file`, and how to name it in messages; exactly one
/// of the two must be set, as in exporter-toolkit.
fn pem_source(
    what: &str,
    inline: Option<&str>,
    file: Option<&Path>,
) -> Result<(Vec<u8>, String), String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "tls_server_config: set {what} or {what}_file, not both"
        )),
        (Some(pem), None) => Ok((pem.as_bytes().to_vec(), format!("tls_server_config.{what}"))),
        (None, Some(p)) => {
            let from = format!("tls_server_config.{what}_file {}", p.display());
            crate::files::read(p)
                .map(|b| (b, from.clone()))
                .map_err(|e| format!("{from}: {e}"))
        }
        (None, None) => Err(format!(
            "tls_server_config: {what}_file (or {what} inline) is missing"
        )),
    }
}

/// Pure: whether a client certificate carries one of `allowed` exactly as a DNS, IP or URI
/// SAN (Go's exact match; e-mail SANs are not read, so such an entry never matches).
pub(crate) fn has_allowed_san(
    cert: &rustls::pki_types::CertificateDer<'_>,
    allowed: &[String],
) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let dns: Vec<&str> = ee.valid_dns_names().collect();
    let uris: Vec<&str> = ee.valid_uri_names().collect();
    allowed.iter().any(|a| {
        let a = a.trim();
        if let Ok(ip) = a.parse::<std::net::IpAddr>() {
            let name = rustls::pki_types::ServerName::IpAddress(ip.into());
            return ee.verify_is_valid_for_subject_name(&name).is_ok();
        }
        dns.iter().any(|d| d.eq_ignore_ascii_case(a)) || uris.contains(&a)
    })
}

/// `client_allowed_sans`: the inner verifier's verdict, then one of the SANs is required.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    allowed: Vec<String>,
}

impl rustls::server::danger::ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if has_allowed_san(end_entity, &self.allowed) {
            Ok(ok)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The handshake-signature half of a rustls certificate verifier (the proof that the peer holds
/// its certificate's key), checked with `self.provider`'s algorithms: one copy for the verifiers
/// that decide on the certificate themselves (here and in `agent status`'s pinned client).
macro_rules! provider_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
pub(crate) use provider_signatures;

/// `RequestClientCert` / `RequireAnyClientCert`: any certificate is taken (Go checks no chain
/// for these either), but the client must prove it holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    provider_signatures!();
}

impl Auth {
    /// Users (name -> bcrypt hash) and an optional bearer token.
    pub(crate) fn new(users: BTreeMap<String, String>, token: Option<String>) -> Auth {
        Auth {
            users,
            token,
            verified: Mutex::new(HashSet::new()),
            throttle: Arc::new(Throttle::new()),
        }
    }

    /// Whether an `Authorization` header value grants access. bcrypt runs on a blocking
    /// thread, one at a time, and not at all while failed attempts hold it off.
    pub async fn verify(&self, header: Option<&str>) -> Verdict {
        let Some(h) = header else {
            return Verdict::Denied;
        };
        let allowed = |ok: bool| {
            if ok {
                Verdict::Allowed
            } else {
                Verdict::Denied
            }
        };
        if let Some(t) = h.strip_prefix("Bearer ") {
            return allowed(
                self.token
                    .as_deref()
                    .is_some_and(|want| constant_time_eq(want.as_bytes(), t.trim().as_bytes())),
            );
        }
        let Some(b64) = h.strip_prefix("Basic ") else {
            return Verdict::Denied;
        };
        if lock(&self.verified).contains(h) {
            return Verdict::Allowed;
        }
        let key = self.throttle.hasher.hash_one(h);
        if self.throttle.recently_failed(key) {
            return Verdict::Denied;
        }
        let Some((user, pass)) = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|text| {
                text.split_once(':')
                    .map(|(u, p)| (u.to_owned(), p.to_owned()))
            })
        else {
            return Verdict::Denied;
        };
        let Some(hash) = self.users.get(&user).cloned() else {
            return Verdict::Denied;
        };
        if self.throttle.held_off() {
            return Verdict::Throttled;
        }
        let Ok(Ok(permit)) = tokio::time::timeout(
            VERIFY_QUEUE_WAIT,
            self.throttle.slots.clone().acquire_owned(),
        )
        .await
        else {
            return Verdict::Throttled;
        };
        if self.throttle.held_off() {
            return Verdict::Throttled;
        }
        // The permit and the failure bookkeeping go with the blocking task: a client that
        // hangs up mid-verification frees neither the slot early nor escapes the penalty.
        let throttle = self.throttle.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let started = Instant::now();
            let ok = bcrypt::verify(pass, &hash).unwrap_or(false);
            if !ok {
                throttle.failure(key, started.elapsed());
            }
            ok
        })
        .await
        .unwrap_or(false);
        if ok {
            let mut cache = lock(&self.verified);
            if cache.len() >= VERIFIED_CACHE {
                cache.clear();
            }
            cache.insert(h.to_owned());
        }
        allowed(ok)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: 401 with a `WWW-Authenticate` challenge unless the request is authorized; 429
/// while failed attempts hold verification off.
pub(crate) async fn require_auth(
    State(auth): State<Arc<Auth>>,
    req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.verify(header).await {
        Verdict::Allowed => next.run(req).await,
        Verdict::Denied => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"rose-agent\"")],
            "unauthorized\n",
        )
            .into_response(),
        Verdict::Throttled => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "too many failed authentication attempts; retry in a second\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    }

    #[tokio::test]
    async fn basic_and_bearer() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = Auth::new([("prom".to_owned(), hash)].into(), Some("tok-123".into()));
        let ok = |v| v == Verdict::Allowed;
        assert!(ok(auth.verify(Some(&basic("prom", "s3cret"))).await));
        assert!(
            ok(auth.verify(Some(&basic("prom", "s3cret"))).await),
            "cached path"
        );
        assert!(!ok(auth.verify(Some(&basic("prom", "wrong"))).await));
        assert!(!ok(auth.verify(Some(&basic("nobody", "s3cret"))).await));
        assert!(ok(auth.verify(Some("Bearer tok-123")).await));
        assert!(!ok(auth.verify(Some("Bearer tok-124")).await));
        assert!(!ok(auth.verify(None).await));
        assert!(!ok(auth.verify(Some("Basic !!!")).await));
    }

    #[tokio::test]
    async fn failed_attempts_hold_bcrypt_off() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = Auth::new([("prom".to_owned(), hash)].into(), None);
        assert_eq!(
            auth.verify(Some(&basic("prom", "wrong-1"))).await,
            Verdict::Denied
        );
        // The same wrong credential: refused from memory, not hashed again, never throttled.
        assert_eq!(
            auth.verify(Some(&basic("prom", "wrong-1"))).await,
            Verdict::Denied
        );
        // Another one right after: held off without hashing.
        assert_eq!(
            auth.verify(Some(&basic("prom", "wrong-2"))).await,
            Verdict::Throttled
        );
        // Bearer tokens and cached credentials never wait on bcrypt.
        tokio::time::sleep(MIN_FAILURE_PENALTY + Duration::from_millis(50)).await;
        assert_eq!(
            auth.verify(Some(&basic("prom", "s3cret"))).await,
            Verdict::Allowed
        );
        assert_eq!(
            auth.verify(Some(&basic("prom", "wrong-3"))).await,
            Verdict::Denied
        );
        assert_eq!(
            auth.verify(Some(&basic("prom", "s3cret"))).await,
            Verdict::Allowed,
            "a verified credential is not held off"
        );
    }

    /// node_exporter's documented `web-config.yml`, every key set.
    const NODE_EXPORTER_FILE: &str = r#"
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: "RequireAndVerifyClientCert"
  client_ca_file: ca.crt
  client_allowed_sans:
    - prometheus.monitoring
  min_version: TLS12
  max_version: TLS13
  cipher_suites:
    - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    - TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA
  prefer_server_cipher_suites: true
  curve_preferences:
    - CurveP256
    - CurveP521
    - X25519
http_server_config:
  http2: true
  headers:
    Strict-Transport-Security: max-age=31536000
    X-Content-Type-Options: nosniff
    X-Frame-Options: deny
    X-XSS-Protection: 1; mode=block
    Content-Security-Policy: default-src 'self'
basic_auth_users:
  alice: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze
rate_limit:
  interval: 100ms
  burst: 10
"#;

    #[test]
    fn a_node_exporter_file_with_every_key_parses() {
        let f: WebConfigFile = serde_norway::from_str(NODE_EXPORTER_FILE).unwrap();
        let t = f.tls_server_config.unwrap();
        assert_eq!(
            ClientAuth::parse(t.client_auth_type.as_deref()),
            Ok(ClientAuth::RequireAndVerifyClientCert)
        );
        assert_eq!(t.client_ca_file.as_deref(), Some(Path::new("ca.crt")));
        assert_eq!(
            (t.min_version.as_deref(), t.max_version.as_deref()),
            (Some("TLS12"), Some("TLS13"))
        );
        assert_eq!(t.cipher_suites.len(), 2);
        assert_eq!(t.curve_preferences, ["CurveP256", "CurveP521", "X25519"]);
        assert_eq!(t.prefer_server_cipher_suites, Some(true));
        let h = f.http_server_config.unwrap();
        assert_eq!(h.http2, Some(true));
        assert_eq!(h.headers.len(), 5);
        for (n, v) in &h.headers {
            response_header(n, v).unwrap();
        }
        assert_eq!(f.basic_auth_users.len(), 1);
        assert_eq!(t.client_allowed_sans, ["prometheus.monitoring"]);
        let r = RateLimiter::from_config(&f.rate_limit.unwrap())
            .unwrap()
            .unwrap();
        assert_eq!((r.interval, r.burst), (Duration::from_millis(100), 10.0));
        // The inline forms parse too.
        let f: WebConfigFile = serde_norway::from_str(
            "tls_server_config:\n  cert: |\n    -----BEGIN CERTIFICATE-----\n  key: x\n  client_ca: y\n",
        )
        .unwrap();
        assert!(f.tls_server_config.unwrap().cert.is_some());
        // A misspelt key is still named, not ignored.
        let e = serde_norway::from_str::<WebConfigFile>(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth: RequireAndVerifyClientCert\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("client_auth"), "{e}");
    }

    #[test]
    fn client_auth_types_are_exporter_toolkits() {
        for (name, want) in [
            ("NoClientCert", ClientAuth::NoClientCert),
            ("RequestClientCert", ClientAuth::RequestClientCert),
            ("RequireAnyClientCert", ClientAuth::RequireAnyClientCert),
            (
                "VerifyClientCertIfGiven",
                ClientAuth::VerifyClientCertIfGiven,
            ),
            (
                "RequireAndVerifyClientCert",
                ClientAuth::RequireAndVerifyClientCert,
            ),
        ] {
            assert_eq!(ClientAuth::parse(Some(name)), Ok(want));
        }
        assert_eq!(ClientAuth::parse(None), Ok(ClientAuth::NoClientCert));
        assert_eq!(ClientAuth::parse(Some("")), Ok(ClientAuth::NoClientCert));
        let e = ClientAuth::parse(Some("RequireClientCert")).unwrap_err();
        assert!(e.contains("RequireAndVerifyClientCert"), "{e}");
    }

    #[test]
    fn versions_map_to_what_rustls_serves() {
        let v = |min, max| {
            let mut w = Vec::new();
            let r = tls_versions(min, max, &mut w)
                .map(|v| v.iter().map(|p| p.version).collect::<Vec<_>>());
            (r, w.len())
        };
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        assert_eq!(v(None, None), (Ok(vec![TLSv1_2, TLSv1_3]), 0));
        assert_eq!(v(Some("TLS13"), None), (Ok(vec![TLSv1_3]), 0));
        assert_eq!(v(None, Some("TLS12")), (Ok(vec![TLSv1_2]), 0));
        assert_eq!(v(Some("TLS10"), None), (Ok(vec![TLSv1_2, TLSv1_3]), 1));
        assert_eq!(v(Some("TLS10"), Some("TLS11")), (Ok(vec![TLSv1_2]), 2));
        assert!(v(Some("TLS13"), Some("TLS12")).0.is_err());
        assert!(v(Some("SSL3"), None).0.unwrap_err().contains("TLS12"));
    }

    #[test]
    fn cipher_suites_keep_what_rustls_has_and_warn_once_for_the_rest() {
        let all = rustls::crypto::ring::default_provider().cipher_suites;
        let names = |v: &[rustls::SupportedCipherSuite]| {
            v.iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect::<Vec<_>>()
        };
        let mut w = Vec::new();
        let got = cipher_suites(
            &all,
            &[
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into(),
                "TLS_RSA_WITH_AES_128_CBC_SHA".into(),
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
                "TLS_AES_128_GCM_SHA256".into(),
            ],
            &mut w,
        );
        let got = names(&got);
        assert_eq!(
            got[..2],
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        assert!(got[2..].iter().all(|n| n.starts_with("TLS13_")), "{got:?}");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("TLS_RSA_WITH_AES_128_CBC_SHA") && !w[0].contains("TLS_AES_128"));
        // None usable: rustls' own suites, with the warning.
        let mut w = Vec::new();
        let got = cipher_suites(&all, &["TLS_RSA_WITH_RC4_128_SHA".into()], &mut w);
        assert_eq!(names(&got), names(&all));
        assert_eq!(w.len(), 1);
        let mut w = Vec::new();
        assert_eq!(names(&cipher_suites(&all, &[], &mut w)), names(&all));
        assert!(w.is_empty());
    }

    #[test]
    fn curve_preferences_order_the_groups() {
        let all = rustls::crypto::ring::default_provider().kx_groups;
        let mut w = Vec::new();
        let got = kx_groups(
            &all,
            &["CurveP384".into(), "CurveP521".into(), "X25519".into()],
            &mut w,
        );
        let got: Vec<_> = got.iter().map(|g| g.name()).collect();
        assert_eq!(
            got,
            [rustls::NamedGroup::secp384r1, rustls::NamedGroup::X25519]
        );
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("CurveP521"), "{w:?}");
    }

    #[test]
    fn only_exporter_toolkits_headers_can_be_set() {
        let (n, v) = response_header("strict-transport-security", "max-age=60").unwrap();
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("strict-transport-security", "max-age=60")
        );
        assert!(response_header("X-Frame-Options", "SAMEORIGIN").is_ok());
        assert!(response_header("X-Frame-Options", "allow-from x").is_err());
        assert!(response_header("X-Content-Type-Options", "sniff").is_err());
        let e = response_header("Content-Length", "1").unwrap_err();
        assert!(e.contains("cannot be configured"), "{e}");
        assert!(response_header("Content-Security-Policy", "a\nb").is_err());
    }

    #[test]
    fn rate_limit_is_a_token_bucket() {
        let c = |i: &str, b| RateLimitConfig {
            interval: Some(i.into()),
            burst: b,
        };
        assert!(
            RateLimiter::from_config(&c("0", Some(5)))
                .unwrap()
                .is_none()
        );
        assert!(RateLimiter::from_config(&c("0s", None)).unwrap().is_none());
        assert!(
            RateLimiter::from_config(&RateLimitConfig::default())
                .unwrap()
                .is_none()
        );
        assert!(
            RateLimiter::from_config(&c("soon", None))
                .unwrap_err()
                .contains("rate_limit.interval")
        );
        let r = RateLimiter::from_config(&c("1s", Some(2)))
            .unwrap()
            .unwrap();
        let t0 = Instant::now();
        assert!(r.allow_at(t0) && r.allow_at(t0));
        assert!(!r.allow_at(t0), "the burst is spent");
        assert!(!r.allow_at(t0 + Duration::from_millis(500)));
        assert!(
            r.allow_at(t0 + Duration::from_millis(1000)),
            "one token a second"
        );
        assert!(!r.allow_at(t0 + Duration::from_millis(1100)));
        // Saved up at most `burst`.
        let later = t0 + Duration::from_secs(3600);
        assert!(r.allow_at(later) && r.allow_at(later) && !r.allow_at(later));
        // No burst given: one request per interval.
        let r = RateLimiter::from_config(&c("1s", None)).unwrap().unwrap();
        assert!(r.allow_at(t0) && !r.allow_at(t0));
    }

    #[test]
    fn pem_comes_inline_or_from_a_file_not_both() {
        assert_eq!(
            pem_source("cert", Some("PEM"), None).unwrap(),
            (b"PEM".to_vec(), "tls_server_config.cert".to_owned())
        );
        assert!(
            pem_source("cert", Some("PEM"), Some(Path::new("/x")))
                .unwrap_err()
                .contains("not both")
        );
        assert!(
            pem_source("key", None, None)
                .unwrap_err()
                .contains("key_file")
        );
        assert!(
            pem_source("key", None, Some(Path::new("/nonexistent.key")))
                .unwrap_err()
                .contains("/nonexistent.key")
        );
    }

    #[test]
    fn the_configuration_parses_the_file_and_the_endpoint_builds_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        let env = |p: &Path| {
            std::collections::HashMap::from([
                (
                    "AGENT_DATABASE_URL".to_string(),
                    "postgresql://u@127.0.0.1/db".to_string(),
                ),
                ("AGENT_WEB_CONFIG_FILE".to_string(), p.display().to_string()),
            ])
        };
        // A file that is not the format: a problem of the configuration itself.
        std::fs::write(&p, "basic_auth_user:\n  prom: x\n").unwrap();
        let e = crate::config::Config::load(None, &env(&p)).unwrap_err();
        assert_eq!(e.0[0].key, "AGENT_WEB_CONFIG_FILE", "{e}");
        // A file the endpoint cannot build from: parsed as data, refused by `for_config` with
        // the same key (main and a reload refuse it as a configuration error).
        std::fs::write(&p, "basic_auth_users:\n  prom: plaintext-not-a-hash\n").unwrap();
        let c = crate::config::Config::load(None, &env(&p)).unwrap();
        assert!(c.agent.web.is_some());
        let e = WebConfig::for_config(&c).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].key, "AGENT_WEB_CONFIG_FILE");
        assert!(e.0[0].message.contains("bcrypt"), "{e}");
        assert!(!e.to_string().contains("plaintext-not-a-hash"), "{e}");
        // A good file builds the live auth.
        std::fs::write(
            &p,
            "basic_auth_users:\n  prom: $2y$10$abcdefghijklmnopqrstuv\n",
        )
        .unwrap();
        let c = crate::config::Config::load(None, &env(&p)).unwrap();
        assert!(WebConfig::for_config(&c).unwrap().auth.is_some());
    }

    #[test]
    fn bad_files_name_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(
            &p,
            "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\nbasic_auth_users:\n  prom: plaintext\nbearer_token_file: /nonexistent\n",
        )
        .unwrap();
        let e = WebConfig::load(&p).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        std::fs::write(&p, "basic_auth_user:\n  prom: x\n").unwrap();
        assert!(WebConfig::load(&p).unwrap_err()[0].contains("basic_auth_user"));
    }
}
