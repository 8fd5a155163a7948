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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Validated and loaded.
#[derive(Debug, Clone, Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<Arc<Auth>>,
}

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
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 1;
/// How long a request may wait for a verification slot before it gets 429 (a wait on the
/// runtime, not a blocked worker).
const VERIFY_QUEUE_WAIT: Duration = Duration::from_secs(1);
/// After a failed verification the next one waits three times as long as it took, and at least
/// this: wrong passwords then use at most a quarter of one core.
pub const MIN_FAILURE_PENALTY: Duration = Duration::from_millis(250);
/// How long a wrong credential is refused without hashing it again.
pub const FAILED_TTL: Duration = Duration::from_secs(60);
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
    /// Reads and validates the file; every problem is reported.
    pub fn load(path: &Path) -> Result<WebConfig, Vec<String>> {
        let text = crate::config::files::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        WebConfig::from_yaml(&text, &path.display().to_string())
    }

    /// Validates the file's text (`origin` names it in messages); files it refers to are read.
    pub fn from_yaml(text: &str, origin: &str) -> Result<WebConfig, Vec<String>> {
        let file: WebConfigFile = serde_norway::from_str(text)
            .map_err(|e| vec![format!("{origin}: {}", crate::dsn::redact(&e.to_string()))])?;
        let mut problems = Vec::new();
        let tls = match &file.tls_server_config {
            None => None,
            Some(t) => match tls_config(&t.cert_file, &t.key_file) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    problems.push(e);
                    None
                }
            },
        };
        for (user, hash) in &file.basic_auth_users {
            if !hash.starts_with("$2") {
                problems.push(format!("basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"));
            }
        }
        let token = match &file.bearer_token_file {
            None => None,
            Some(p) => match crate::config::files::read_to_string(p) {
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
        Ok(WebConfig { tls, auth })
    }
}

fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |what: &str, p: &Path| {
        crate::config::files::read(p)
            .map_err(|e| format!("tls_server_config.{what} {}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("cert_file", cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls_server_config.cert_file {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.cert_file {}: no certificate",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read("key_file", key)?)
        .map_err(|e| format!("tls_server_config.key_file {}: {e}", key.display()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map(|mut c| {
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            c
        })
        .map_err(|e| format!("tls_server_config: {e}"))
}

impl Auth {
    /// Users (name -> bcrypt hash) and an optional bearer token.
    pub fn new(users: BTreeMap<String, String>, token: Option<String>) -> Auth {
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
pub async fn require_auth(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
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
