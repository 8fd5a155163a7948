//! A small, bounded, blocking HTTP/1.0 client of the agent's own endpoint, for `agent status`
//! and `agent healthcheck`. It follows the same configuration as `agent run`: the address of
//! `AGENT_LISTEN` (an unspecified address is asked on loopback), HTTPS when
//! `AGENT_WEB_CONFIG_FILE` has `tls_server_config`, and the file's bearer token as credentials
//! (or a basic-auth user given on the command line, its password from the environment or a
//! file, never from the command line).
//!
//! Against an endpoint that asks for client certificates (mutual TLS) the client presents the
//! one of `--cert`/`--key` (`AGENT_STATUS_CERT_FILE`/`AGENT_STATUS_KEY_FILE`).
//!
//! The server certificate is pinned to the configured `cert_file`: the agent asks itself, so
//! the certificate it serves must be the one in its configuration, whatever names it carries
//! (a certificate for `agent.example.com` still works on `127.0.0.1`), and nothing else is
//! trusted with the credentials.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::Config;

/// Where `agent run` listens by default (`AGENT_LISTEN` 0.0.0.0:9188), asked on loopback.
pub(crate) const DEFAULT_ADDR: &str = "127.0.0.1:9188";

/// The largest answer read (a status summary is a few KiB; `/metrics` tens).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Why the agent could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot use the web config {path}: {message}")]
    WebConfig { path: String, message: String },
    #[error("{0}")]
    Credentials(String),
    #[error("cannot resolve the agent's address {0}")]
    Address(String),
    #[error(
        "cannot connect to the agent at {addr}: {message} (is `agent run` listening there? see AGENT_LISTEN)"
    )]
    Connect { addr: String, message: String },
    #[error(
        "TLS with the agent at {addr} failed: {message} (does the agent serve the cert_file of this AGENT_WEB_CONFIG_FILE? if its client_auth_type asks for a client certificate, give --cert and --key)"
    )]
    Tls { addr: String, message: String },
    #[error("the agent at {addr} did not answer within {timeout}")]
    Timeout { addr: String, timeout: String },
    #[error("the agent at {addr} sent an answer that is not HTTP: {message}")]
    Invalid { addr: String, message: String },
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub(crate) body: Vec<u8>,
}

/// Basic-auth credentials from the command line and the environment.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub(crate) user: Option<String>,
    /// The password, from `AGENT_STATUS_PASSWORD` or a file.
    pub(crate) password: Option<String>,
    /// Client certificate and key files (PEM), for a mutual-TLS endpoint.
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
}

impl Credentials {
    /// The user from `--user`, the password from `password_file` or `AGENT_STATUS_PASSWORD`.
    pub(crate) fn resolve(
        user: Option<String>,
        password_file: Option<&Path>,
    ) -> Result<Credentials, ClientError> {
        let password = match password_file {
            Some(p) => Some(
                crate::files::read_to_string(p)
                    .map_err(|e| {
                        ClientError::Credentials(format!(
                            "cannot read the password file {}: {e}",
                            p.display()
                        ))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => std::env::var("AGENT_STATUS_PASSWORD").ok(),
        };
        if user.is_some() && password.is_none() {
            return Err(ClientError::Credentials(
                "--user needs a password: set AGENT_STATUS_PASSWORD or --password-file".into(),
            ));
        }
        Ok(Credentials {
            user,
            password,
            client_cert: None,
        })
    }
}

/// Where and how to ask the agent.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub(crate) addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    authorization: Option<String>,
}

/// The address to connect to for a listen address: an unspecified one is asked on loopback.
pub(crate) fn connect_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

#[derive(serde::Deserialize)]
struct FileView {
    #[serde(default)]
    tls_server_config: Option<TlsView>,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct TlsView {
    #[serde(default)]
    cert_file: Option<PathBuf>,
    /// exporter-toolkit's inline certificate.
    #[serde(default)]
    cert: Option<String>,
}

impl Endpoint {
    /// Plain HTTP to `addr`, no credentials (no configuration at all).
    pub(crate) fn plain(addr: impl Into<String>) -> Endpoint {
        Endpoint {
            addr: addr.into(),
            tls: None,
            authorization: None,
        }
    }

    /// The endpoint `agent run` serves with this configuration; `addr` overrides the address.
    pub fn from_config(
        config: &Config,
        addr: Option<&str>,
        creds: &Credentials,
    ) -> Result<Endpoint, ClientError> {
        let addr = match addr {
            Some(a) => a.to_owned(),
            None => connect_addr(config.agent.listen).to_string(),
        };
        let mut ep = Endpoint::plain(addr);
        let mut token = None;
        if let Some(path) = &config.agent.web_config_file {
            let err = |message: String| ClientError::WebConfig {
                path: path.display().to_string(),
                message,
            };
            let text = crate::files::read_to_string(path).map_err(|e| err(e.to_string()))?;
            let file: FileView = serde_norway::from_str(&text)
                .map_err(|e| err(crate::dsn::redact(&e.to_string())))?;
            if let Some(tls) = file.tls_server_config {
                let pem = match (&tls.cert, &tls.cert_file) {
                    (Some(pem), _) => pem.as_bytes().to_vec(),
                    (None, Some(f)) => crate::files::read(f)
                        .map_err(|e| err(format!("cert_file {}: {e}", f.display())))?,
                    (None, None) => return Err(err("tls_server_config has no cert_file".into())),
                };
                let client = match &creds.client_cert {
                    None => None,
                    Some((c, k)) => Some(client_identity(c, k)?),
                };
                ep.tls = Some(Arc::new(pinned_config(&pem, client).map_err(err)?));
            }
            if let Some(p) = file.bearer_token_file {
                let t = crate::files::read_to_string(&p)
                    .map_err(|e| err(format!("bearer_token_file {}: {e}", p.display())))?;
                token = Some(t.trim().to_owned()).filter(|t| !t.is_empty());
            }
        }
        ep.authorization = match (&creds.user, &creds.password, token) {
            (Some(u), Some(p), _) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )),
            (_, _, Some(t)) => Some(format!("Bearer {t}")),
            _ => None,
        };
        Ok(ep)
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `https://addr` or `http://addr`, for messages.
    pub(crate) fn url(&self, path: &str) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// One GET, bounded by `timeout` as a whole (connect, handshake, request, answer).
    pub fn get(&self, path: &str, timeout: Duration) -> Result<Response, ClientError> {
        let deadline = Instant::now() + timeout;
        let addr = self.addr.clone();
        let timed_out = || ClientError::Timeout {
            addr: addr.clone(),
            timeout: humantime::format_duration(timeout).to_string(),
        };
        let sock = self
            .addr
            .to_socket_addrs()
            .map_err(|_| ClientError::Address(self.addr.clone()))?
            .next()
            .ok_or_else(|| ClientError::Address(self.addr.clone()))?;
        let tcp = TcpStream::connect_timeout(&sock, timeout).map_err(|e| {
            if e.kind() == std::io::ErrorKind::TimedOut {
                timed_out()
            } else {
                ClientError::Connect {
                    addr: addr.clone(),
                    message: e.to_string(),
                }
            }
        })?;
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let _ = tcp.set_nodelay(true);
        let mut request = format!(
            "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json, text/plain;q=0.9\r\nUser-Agent: rose-agent/{}\r\n",
            self.addr,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(a) = &self.authorization {
            request.push_str(&format!("Authorization: {a}\r\n"));
        }
        request.push_str("\r\n");
        let io_err = |e: std::io::Error| -> ClientError {
            match e.kind() {
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => timed_out(),
                std::io::ErrorKind::InvalidData => ClientError::Tls {
                    addr: addr.clone(),
                    message: e.to_string(),
                },
                _ => ClientError::Connect {
                    addr: addr.clone(),
                    message: e.to_string(),
                },
            }
        };
        let raw = match &self.tls {
            None => {
                let mut s = tcp;
                exchange(&mut s, &request, deadline, &left, |s, d| {
                    s.set_read_timeout(Some(d))?;
                    s.set_write_timeout(Some(d))
                })
                .map_err(io_err)?
            }
            Some(cfg) => {
                let name = ServerName::IpAddress(sock.ip().into());
                let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| {
                    ClientError::Tls {
                        addr: addr.clone(),
                        message: e.to_string(),
                    }
                })?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                exchange(&mut s, &request, deadline, &left, |s, d| {
                    s.sock.set_read_timeout(Some(d))?;
                    s.sock.set_write_timeout(Some(d))
                })
                .map_err(io_err)?
            }
        };
        parse_response(&raw).map_err(|message| ClientError::Invalid { addr, message })
    }
}

/// Writes the request and reads the answer until the server closes, the declared body is
/// complete, or the deadline passes.
fn exchange<S: Read + Write>(
    s: &mut S,
    request: &str,
    deadline: Instant,
    left: &dyn Fn() -> Duration,
    set_timeouts: impl Fn(&mut S, Duration) -> std::io::Result<()>,
) -> std::io::Result<Vec<u8>> {
    set_timeouts(s, left())?;
    s.write_all(request.as_bytes())?;
    s.flush()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if Instant::now() >= deadline {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        set_timeouts(s, left())?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_RESPONSE_BYTES {
                    return Err(std::io::Error::other("answer too large"));
                }
                if complete(&buf) {
                    break;
                }
            }
            // A server that closes without TLS close_notify after a complete answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

/// True once the head and a `Content-Length` body are all in.
fn complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| buf.len() >= end + 4 + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Pure: status code and body of a raw HTTP/1.x answer.
pub(crate) fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = find(raw, b"\r\n\r\n").ok_or("no end of header")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!(
            "status line {:?}",
            status_line.chars().take(40).collect::<String>()
        ));
    }
    let status = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("no status code")?;
    let mut body = raw[end + 4..].to_vec();
    if let Some(len) = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
    {
        if body.len() < len {
            return Err(format!("body cut short ({} of {len} bytes)", body.len()));
        }
        body.truncate(len);
    }
    Ok(Response { status, body })
}

/// A client certificate chain and its key, read from PEM files.
type Identity = (
    Vec<CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

fn client_identity(cert: &Path, key: &Path) -> Result<Identity, ClientError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |what: &str, p: &Path, e: String| {
        ClientError::Credentials(format!("cannot use the client {what} {}: {e}", p.display()))
    };
    let pem = crate::files::read(cert).map_err(|e| bad("certificate", cert, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("certificate", cert, "no certificate".into()));
    }
    let pem = crate::files::read(key).map_err(|e| bad("key", key, e.to_string()))?;
    let key_der = rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| bad("key", key, e.to_string()))?;
    Ok((certs, key_der))
}

/// A client configuration that trusts exactly the leaf certificate of `cert_pem`, presenting
/// `client` when the server asks for a certificate.
fn pinned_config(
    cert_pem: &[u8],
    client: Option<Identity>,
) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .ok_or("cert_file: no certificate")?
        .map_err(|e| format!("cert_file: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedLeaf {
        leaf: leaf.into_owned(),
        provider: provider.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match client {
        None => builder.with_no_client_auth(),
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("client certificate: {e}"))?,
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts the server only when it presents the pinned certificate, and checks that it holds
/// the certificate's key (the handshake signature).
#[derive(Debug)]
struct PinnedLeaf {
    leaf: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the agent presents another certificate than the configured cert_file".into(),
            ))
        }
    }

    crate::web::provider_signatures!();
}

/// The endpoint of `agent status` / `agent healthcheck`: from the configuration when it loads;
/// without one, plain HTTP to `addr` or the default listen address.
pub(crate) fn endpoint_for(
    config: Result<&Config, &crate::config::ConfigError>,
    addr: Option<&str>,
    creds: &Credentials,
) -> Result<Endpoint, ClientError> {
    match config {
        Ok(c) => Endpoint::from_config(c, addr, creds),
        Err(_) => Ok(Endpoint::plain(addr.unwrap_or(DEFAULT_ADDR))),
    }
}

/// `agent status`: asks the running agent for `/status` and prints it; returns the Nagios exit
/// code (3 when the agent cannot be asked).
pub fn status_command(
    config: Result<&Config, &crate::config::ConfigError>,
    args: &crate::cli::StatusArgs,
    terminal: bool,
) -> u8 {
    let json = args.format == crate::cli::Format::Json;
    let fail = |message: String| -> u8 {
        if json {
            println!(
                "{}",
                serde_json::json!({"status": "unknown", "error": message})
            );
        } else {
            println!("UNKNOWN  {message}");
        }
        3
    };
    let creds = match Credentials::resolve(args.user.clone(), args.password_file.as_deref()) {
        Ok(c) => Credentials {
            client_cert: args.endpoint.cert.clone().zip(args.endpoint.key.clone()),
            ..c
        },
        Err(e) => return fail(e.to_string()),
    };
    let ep = match endpoint_for(config, args.endpoint.addr.as_deref(), &creds) {
        Ok(ep) => ep,
        Err(e) => return fail(e.to_string()),
    };
    let r = match ep.get("/status", args.timeout) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    match r.status {
        200 => {}
        401 | 403 => {
            return fail(format!(
                "{} needs credentials (answered {}): run with the agent's AGENT_WEB_CONFIG_FILE (its bearer token is used) or --user with AGENT_STATUS_PASSWORD",
                ep.url("/status"),
                r.status
            ));
        }
        404 => {
            return fail(format!(
                "{} answered 404: is it an older agent without the status page?",
                ep.url("/status")
            ));
        }
        n => return fail(format!("{} answered {n}", ep.url("/status"))),
    }
    let summary: super::Summary = match serde_json::from_slice(&r.body) {
        Ok(s) => s,
        Err(e) => {
            return fail(format!(
                "{} sent a summary this version cannot read: {e}",
                ep.url("/status")
            ));
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        print!("{}", summary.to_text(terminal && !args.no_color));
    }
    summary.exit_code()
}

/// `agent healthcheck`: 0 when `/healthz` answers 200 within the timeout, else 1.
pub fn healthcheck_command(
    config: Result<&Config, &crate::config::ConfigError>,
    args: &crate::cli::HealthcheckArgs,
) -> u8 {
    let creds = Credentials {
        client_cert: args.endpoint.cert.clone().zip(args.endpoint.key.clone()),
        ..Credentials::default()
    };
    let ep = match endpoint_for(config, args.endpoint.addr.as_deref(), &creds) {
        Ok(ep) => ep,
        Err(e) => {
            eprintln!("agent: {e}");
            return 1;
        }
    };
    match ep.get("/healthz", args.timeout) {
        Ok(r) if r.status == 200 => 0,
        Ok(r) => {
            eprintln!("agent: {} answered {}", ep.url("/healthz"), r.status);
            1
        }
        Err(e) => {
            eprintln!("agent: {}: {e}", ep.url("/healthz"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers_and_refuses_what_is_not_http() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\nEXTRA").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"ok\n".as_slice()));
        let r = parse_response(b"HTTP/1.0 401 Unauthorized\r\n\r\nno").unwrap();
        assert_eq!(r.status, 401);
        assert!(parse_response(b"\x15\x03\x03\x00\x02\x02\x46").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").is_err());
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"));
    }

    #[test]
    fn an_unspecified_listen_address_is_asked_on_loopback() {
        assert_eq!(
            connect_addr("0.0.0.0:9188".parse().unwrap()).to_string(),
            "127.0.0.1:9188"
        );
        assert_eq!(
            connect_addr("[::]:1".parse().unwrap()).to_string(),
            "[::1]:1"
        );
        assert_eq!(
            connect_addr("10.1.2.3:9188".parse().unwrap()).to_string(),
            "10.1.2.3:9188"
        );
    }
}
