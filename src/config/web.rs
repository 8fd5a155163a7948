//! The agent endpoint's settings as plain data: the web config file (`AGENT_WEB_CONFIG_FILE`,
//! exporter-toolkit's YAML) as written, and the endpoint's limits. Reading and parsing the file
//! is a configuration problem when it fails; building the live TLS config, auth cache and rate
//! limiter from it is `crate::web`'s job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default of `AGENT_WEB_HEADER_TIMEOUT`: a scraper sends its request at once; 5 s leaves room
/// for a loaded client and closes a slow-header or idle connection quickly.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds of `AGENT_WEB_HEADER_TIMEOUT`.
pub(crate) const MIN_HEADER_TIMEOUT: Duration = Duration::from_millis(100);
pub(crate) const MAX_HEADER_TIMEOUT: Duration = Duration::from_secs(300);
/// Default of `AGENT_WEB_MAX_CONNECTIONS`: Prometheus, the orchestrator's probes and a human
/// need a handful. Under a flood that keeps evicting, the allocator's high-water mark grows
/// about 60 KiB per allowed connection (measured: 64 -> +4.4 MiB, 256 -> +13 MiB, release
/// build), and glibc keeps it for reuse rather than returning it: the cap is what bounds it.
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 64;
/// Timeouts and the connection cap of the endpoint (`AGENT_WEB_HEADER_TIMEOUT`,
/// `AGENT_WEB_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLimits {
    pub(crate) header_timeout: Duration,
    pub(crate) max_connections: u32,
}

impl Default for WebLimits {
    fn default() -> Self {
        WebLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The file, as written.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebConfigFile {
    #[serde(default)]
    pub(crate) tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub(crate) basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) http_server_config: Option<HttpServerConfig>,
    #[serde(default)]
    pub(crate) rate_limit: Option<RateLimitConfig>,
}

/// exporter-toolkit's `rate_limit`: a token bucket over the protected endpoints.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitConfig {
    /// Time between two requests (Go duration, e.g. `100ms`); 0 disables the limit.
    #[serde(default)]
    pub(crate) interval: Option<String>,
    /// Requests allowed in a burst.
    #[serde(default)]
    pub(crate) burst: Option<u32>,
}

/// exporter-toolkit's `tls_server_config` (Go `crypto/tls` names).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsServerConfig {
    #[serde(default)]
    pub(crate) cert_file: Option<PathBuf>,
    #[serde(default)]
    pub(crate) key_file: Option<PathBuf>,
    /// The certificate inline (PEM), instead of `cert_file`.
    #[serde(default)]
    pub(crate) cert: Option<String>,
    /// The key inline (PEM), instead of `key_file`.
    #[serde(default)]
    pub(crate) key: Option<String>,
    /// The client CA inline (PEM), instead of `client_ca_file`.
    #[serde(default)]
    pub(crate) client_ca: Option<String>,
    /// A client certificate must carry one of these SANs exactly (DNS, IP or URI).
    #[serde(default)]
    pub(crate) client_allowed_sans: Vec<String>,
    /// `NoClientCert` (default), `RequestClientCert`, `RequireAnyClientCert`,
    /// `VerifyClientCertIfGiven`, `RequireAndVerifyClientCert`.
    #[serde(default)]
    pub(crate) client_auth_type: Option<String>,
    /// PEM roots that client certificates must chain to.
    #[serde(default)]
    pub(crate) client_ca_file: Option<PathBuf>,
    /// `TLS10`..`TLS13`; rustls serves TLS 1.2 and 1.3.
    #[serde(default)]
    pub(crate) min_version: Option<String>,
    #[serde(default)]
    pub(crate) max_version: Option<String>,
    /// Go names, e.g. `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256` (TLS 1.2 only, as in Go).
    #[serde(default)]
    pub(crate) cipher_suites: Vec<String>,
    /// `CurveP256`, `CurveP384`, `CurveP521`, `X25519`, in order of preference.
    #[serde(default)]
    pub(crate) curve_preferences: Vec<String>,
    /// Default true, as in exporter-toolkit.
    #[serde(default)]
    pub(crate) prefer_server_cipher_suites: Option<bool>,
}

/// exporter-toolkit's `http_server_config`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpServerConfig {
    /// exporter-toolkit's default is true: HTTP/2 beside HTTP/1.1; false: HTTP/1.1 only.
    #[serde(default)]
    pub(crate) http2: Option<bool>,
    /// Response headers added to every answer.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
}

/// Reads and parses the file (`cannot read ...` or the YAML error, redacted).
pub(crate) fn load(path: &Path) -> Result<WebConfigFile, String> {
    let text = crate::files::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Parses the file's text (`origin` names it in messages).
pub(crate) fn parse(text: &str, origin: &str) -> Result<WebConfigFile, String> {
    serde_norway::from_str(text)
        .map_err(|e| format!("{origin}: {}", crate::dsn::redact(&e.to_string())))
}
