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

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
#[derive(Debug, Default)]
pub struct Auth {
    users: BTreeMap<String, String>,
    token: Option<String>,
    /// `Authorization` values already verified (bounded).
    verified: Mutex<HashSet<String>>,
}

const VERIFIED_CACHE: usize = 64;

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
        let auth = (!file.basic_auth_users.is_empty() || token.is_some()).then(|| {
            Arc::new(Auth {
                users: file.basic_auth_users,
                token,
                verified: Mutex::new(HashSet::new()),
            })
        });
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
    /// Whether an `Authorization` header value grants access.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let Some(h) = header else { return false };
        if let Some(t) = h.strip_prefix("Bearer ") {
            return self
                .token
                .as_deref()
                .is_some_and(|want| constant_time_eq(want.as_bytes(), t.trim().as_bytes()));
        }
        let Some(b64) = h.strip_prefix("Basic ") else {
            return false;
        };
        if self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(h)
        {
            return true;
        }
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(raw) else {
            return false;
        };
        let Some((user, pass)) = text.split_once(':') else {
            return false;
        };
        let ok = self
            .users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(pass, hash).unwrap_or(false));
        if ok {
            let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= VERIFIED_CACHE {
                cache.clear();
            }
            cache.insert(h.to_owned());
        }
        ok
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: 401 with a `WWW-Authenticate` challenge unless the request is authorized.
pub async fn require_auth(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth.allows(header) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"rose-agent\"")],
            "unauthorized\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_bearer() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = Auth {
            users: [("prom".to_owned(), hash)].into(),
            token: Some("tok-123".into()),
            verified: Mutex::new(HashSet::new()),
        };
        let basic = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(auth.allows(Some(&basic("prom", "s3cret"))));
        assert!(auth.allows(Some(&basic("prom", "s3cret"))), "cached path");
        assert!(!auth.allows(Some(&basic("prom", "wrong"))));
        assert!(!auth.allows(Some(&basic("nobody", "s3cret"))));
        assert!(auth.allows(Some("Bearer tok-123")));
        assert!(!auth.allows(Some("Bearer tok-124")));
        assert!(!auth.allows(None));
        assert!(!auth.allows(Some("Basic !!!")));
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
