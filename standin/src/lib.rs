//! `rose-standin`: a stand-in for the Rose app's health API, for the demo and the tests. A
//! library the tests start in-process on loopback ports ([`Background::start`]) and the
//! `rose-standin` binary the demo and the measuring scripts run (`src/main.rs`); both take the
//! same command line ([`Args`]).
//!
//! It serves Rose's health body at `GET /api/health` and `GET /api/v1/health`:
//!
//! ```json
//! {"status":"healthy","version":"1.0.0","services":{"groq":"connected","qdrant":"connected","elevenlabs":"connected","sqlite":"connected"}}
//! ```
//!
//! with HTTP 200 even when degraded (as the app does), and can be switched at runtime.
//!
//! # Command line
//!
//! ```text
//! rose-standin [--listen 127.0.0.1:18080] [--control-listen ADDR] [--mode MODE]
//!              [--down groq,qdrant] [--delay-ms 300] [--serve both|v1|legacy] [--version 1.0.0]
//! ```
//!
//! On start the binary prints `listening on ADDR` (and `control on ADDR`) on stdout, so
//! `--listen 127.0.0.1:0` works for scripts; [`Background`] hands the bound addresses back. With `--tls-cert cert.pem --tls-key key.pem` the app port
//! speaks HTTPS (rustls); the control port stays plain HTTP.
//!
//! # Modes
//!
//! - `healthy`: every service connected, status `healthy`.
//! - `degraded`: the services in `down` (default `qdrant`) are `disconnected`, status `degraded`,
//!   still HTTP 200.
//! - `slow`: the body of the current `down` list, after `delay_ms` (default 300 ms).
//! - `500`: HTTP 500 with a plain-text body.
//! - `refusing`: the app port is closed (connections are refused); it reopens on the same
//!   address when the mode changes. Only the control port answers meanwhile.
//! - `hanging`: connections are accepted and requests read, but health requests are never
//!   answered (until the mode changes, at most 10 minutes).
//! - `garbage`: HTTP 200 with 4 KiB of bytes that are not JSON.
//! - `huge`: HTTP 200 with an 8 MiB body streamed without `Content-Length`.
//!
//! # Control API
//!
//! Served on the app port (while it listens) and on `--control-listen` (always):
//!
//! - `GET` or `POST /_standin/set?mode=MODE&down=a,b&delay_ms=N&serve=both|v1|legacy&version=V`:
//!   changes what is given, answers the new state as JSON. `down=` (empty) clears the list.
//!   `bearer=TOKEN` makes health requests need `Authorization: Bearer TOKEN` (401 otherwise;
//!   `bearer=` turns it off; the token is never echoed).
//! - `GET /_standin/state`: the state and request counts per path, as JSON.
//!
//! `serve=v1` answers 404 on `/api/health` (a newer build), `serve=legacy` 404 on
//! `/api/v1/health`.
//!
//! Nothing here is meant for production: it binds where told, with no authentication.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use serde::Serialize;
use std::future::Future;
use tokio::sync::watch;

/// How the app port answers (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Healthy,
    Degraded,
    Slow,
    #[serde(rename = "500")]
    Error,
    Refusing,
    Hanging,
    Garbage,
    Huge,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "healthy" => Mode::Healthy,
            "degraded" => Mode::Degraded,
            "slow" => Mode::Slow,
            "500" | "error" => Mode::Error,
            "refusing" | "refuse" | "down" => Mode::Refusing,
            "hanging" | "hang" => Mode::Hanging,
            "garbage" => Mode::Garbage,
            "huge" => Mode::Huge,
            other => {
                return Err(format!(
                    "unknown mode '{other}': healthy, degraded, slow, 500, refusing, hanging, garbage, huge"
                ));
            }
        })
    }
}

/// Which health paths exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Serve {
    Both,
    V1,
    Legacy,
}

impl std::str::FromStr for Serve {
    type Err = String;
    fn from_str(s: &str) -> Result<Serve, String> {
        match s.trim() {
            "both" => Ok(Serve::Both),
            "v1" => Ok(Serve::V1),
            "legacy" => Ok(Serve::Legacy),
            other => Err(format!("unknown serve '{other}': both, v1, legacy")),
        }
    }
}

/// Rose's stand-in health API (see the module docs for modes and the control API).
#[derive(Debug, Clone, Parser)]
#[command(name = "rose-standin", version, about)]
pub struct Args {
    /// Address of the app API.
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub listen: SocketAddr,
    /// Extra address serving only the control API (reachable while the app port refuses).
    #[arg(long)]
    pub control_listen: Option<SocketAddr>,
    /// Initial mode: healthy, degraded, slow, 500, refusing, hanging.
    #[arg(long, default_value = "healthy")]
    pub mode: Mode,
    /// Services reported disconnected, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub down: Vec<String>,
    /// Delay of the slow mode in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub delay_ms: u64,
    /// Which health paths exist: both, v1, legacy.
    #[arg(long, default_value = "both")]
    pub serve: Serve,
    /// The version the body reports.
    #[arg(long = "app-version", default_value = "1.0.0")]
    pub app_version: String,
    /// Serve the app port over TLS with this certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl Args {
    /// Parses a command line without the program name, e.g. `["--mode", "slow"]`.
    pub fn from_cli<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Args, String> {
        Args::try_parse_from(std::iter::once("rose-standin").chain(args)).map_err(|e| e.to_string())
    }
}

/// A TCP listener that completes a TLS handshake before handing out a connection.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            // Handshakes run one at a time, each bounded: fine for a stand-in.
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(5), self.acceptor.accept(tcp)).await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[derive(Debug, Clone, Serialize)]
struct Settings {
    mode: Mode,
    down: Vec<String>,
    delay_ms: u64,
    serve: Serve,
    version: String,
    /// When set, health requests need `Authorization: Bearer <token>` (else 401).
    #[serde(skip)]
    bearer: Option<String>,
}

struct Shared {
    tx: watch::Sender<Settings>,
    requests: Mutex<BTreeMap<String, u64>>,
}

type App = Arc<Shared>;

const SERVICES: [&str; 4] = ["groq", "qdrant", "elevenlabs", "sqlite"];

fn body(s: &Settings) -> serde_json::Value {
    let mut services = serde_json::Map::new();
    for name in SERVICES
        .iter()
        .map(|s| s.to_string())
        .chain(s.down.iter().cloned())
    {
        let state = if s.down.contains(&name) {
            "disconnected"
        } else {
            "connected"
        };
        services.insert(name, state.into());
    }
    let status = if s.down.is_empty() {
        "healthy"
    } else {
        "degraded"
    };
    serde_json::json!({"status": status, "version": s.version, "services": services})
}

async fn health(State(app): State<App>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    *app.requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(path.clone())
        .or_default() += 1;
    let s = app.tx.borrow().clone();
    let exists = match s.serve {
        Serve::Both => true,
        Serve::V1 => path == "/api/v1/health",
        Serve::Legacy => path == "/api/health",
    };
    if !exists {
        return (StatusCode::NOT_FOUND, "{\"detail\":\"Not Found\"}").into_response();
    }
    if let Some(t) = &s.bearer {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent != Some(t.as_str()) {
            return (StatusCode::UNAUTHORIZED, "{\"detail\":\"Unauthorized\"}").into_response();
        }
    }
    match s.mode {
        Mode::Hanging => {
            let mut rx = app.tx.subscribe();
            let _ = tokio::time::timeout(
                Duration::from_secs(600),
                rx.wait_for(|s| s.mode != Mode::Hanging),
            )
            .await;
            (StatusCode::SERVICE_UNAVAILABLE, "was hanging").into_response()
        }
        Mode::Error => (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response(),
        Mode::Garbage => {
            let bytes: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            (StatusCode::OK, bytes).into_response()
        }
        Mode::Huge => {
            // 8 MiB of valid-looking JSON, streamed without a Content-Length.
            let chunks = (0..128).map(|i| {
                let mut c = if i == 0 {
                    b"{\"status\":\"healthy\",\"pad\":\"".to_vec()
                } else {
                    vec![]
                };
                c.resize(64 * 1024, b'x');
                Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(c))
            });
            let stream = futures_util::stream::iter(chunks);
            (StatusCode::OK, axum::body::Body::from_stream(stream)).into_response()
        }
        Mode::Slow => {
            tokio::time::sleep(Duration::from_millis(s.delay_ms.min(600_000))).await;
            axum::Json(body(&s)).into_response()
        }
        Mode::Healthy | Mode::Degraded | Mode::Refusing => axum::Json(body(&s)).into_response(),
    }
}

async fn set(State(app): State<App>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let mut next = app.tx.borrow().clone();
    for (k, v) in &q {
        let r: Result<(), String> = match k.as_str() {
            "mode" => v.parse().map(|m| next.mode = m),
            "down" => {
                next.down = v
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .take(64)
                    .collect();
                Ok(())
            }
            "delay_ms" => v
                .parse()
                .map(|d| next.delay_ms = d)
                .map_err(|_| format!("delay_ms '{v}' is not a number")),
            "serve" => v.parse().map(|s| next.serve = s),
            "version" => {
                next.version = v.chars().take(64).collect();
                Ok(())
            }
            "bearer" => {
                next.bearer = (!v.is_empty()).then(|| v.clone());
                Ok(())
            }
            other => Err(format!("unknown parameter '{other}'")),
        };
        if let Err(e) = r {
            return (StatusCode::BAD_REQUEST, e).into_response();
        }
    }
    if next.mode == Mode::Degraded && next.down.is_empty() {
        next.down = vec!["qdrant".into()];
    }
    if next.mode == Mode::Healthy && !q.contains_key("down") {
        next.down.clear();
    }
    eprintln!(
        "rose-standin: mode {:?}, down {:?}, delay {} ms",
        next.mode, next.down, next.delay_ms
    );
    app.tx.send_replace(next.clone());
    axum::Json(next).into_response()
}

async fn state(State(app): State<App>) -> Response {
    let s = app.tx.borrow().clone();
    let requests = app
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    axum::Json(serde_json::json!({"settings": s, "requests": requests})).into_response()
}

fn control_routes() -> Router<App> {
    Router::new()
        .route("/_standin/set", get(set).post(set))
        .route("/_standin/state", get(state))
}

/// Serves the app port, closing it while the mode is `refusing` and reopening it after.
async fn app_port(
    mut listener: tokio::net::TcpListener,
    addr: SocketAddr,
    app: App,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let router = Router::new()
        .route("/api/health", get(health))
        .route("/api/v1/health", get(health))
        .merge(control_routes())
        .with_state(app.clone());
    let mut rx = app.tx.subscribe();
    loop {
        let stop = {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| s.mode == Mode::Refusing).await;
            }
        };
        // Connections still open (a hanging request) finish on their own; the listener is
        // closed as soon as the mode says refusing.
        match &tls {
            Some(acceptor) => {
                let l = TlsListener {
                    tcp: listener,
                    acceptor: acceptor.clone(),
                };
                let server = axum::serve(l, router.clone()).with_graceful_shutdown(stop);
                tokio::spawn(async move {
                    let _ = server.await;
                });
            }
            None => {
                let server = axum::serve(listener, router.clone()).with_graceful_shutdown(stop);
                tokio::spawn(async move {
                    let _ = server.await;
                });
            }
        }
        if rx.wait_for(|s| s.mode == Mode::Refusing).await.is_err() {
            return;
        }
        if rx.wait_for(|s| s.mode != Mode::Refusing).await.is_err() {
            return;
        }
        let mut bound = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => {
                    bound = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        match bound {
            Some(l) => listener = l,
            None => {
                eprintln!("rose-standin: cannot listen on {addr} again");
                return;
            }
        }
    }
}

/// The addresses a started stand-in listens on.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The app port (health API and control API).
    pub app: SocketAddr,
    /// The control-only port of `--control-listen`.
    pub control: Option<SocketAddr>,
}

/// Binds the ports of `args` on the current tokio runtime and returns their addresses and the
/// future that serves the app port (the control port is served by a spawned task).
pub async fn bind(args: &Args) -> Result<(Bound, impl Future<Output = ()> + use<>), String> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k).map_err(|e| format!("TLS: {e}"))?),
        _ => None,
    };
    let mut down = args.down.clone();
    if args.mode == Mode::Degraded && down.is_empty() {
        down.push("qdrant".into());
    }
    let (tx, _) = watch::channel(Settings {
        mode: args.mode,
        down,
        delay_ms: args.delay_ms,
        serve: args.serve,
        version: args.app_version.clone(),
        bearer: None,
    });
    let app = Arc::new(Shared {
        tx,
        requests: Mutex::new(BTreeMap::new()),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    let mut control = None;
    if let Some(c) = args.control_listen {
        let l = tokio::net::TcpListener::bind(c)
            .await
            .map_err(|e| format!("cannot listen on {c}: {e}"))?;
        control = Some(l.local_addr().unwrap_or(c));
        let router = control_routes().with_state(app.clone());
        tokio::spawn(async move {
            let _ = axum::serve(l, router).await;
        });
    }
    let initially_refusing = args.mode == Mode::Refusing;
    let run = async move {
        if initially_refusing {
            // Bound once to learn the port, closed until the mode changes.
            drop(listener);
            let mut rx = app.tx.subscribe();
            if rx.wait_for(|s| s.mode != Mode::Refusing).await.is_err() {
                return;
            }
            let Ok(l) = tokio::net::TcpListener::bind(addr).await else {
                eprintln!("rose-standin: cannot listen on {addr} again");
                return;
            };
            app_port(l, addr, app, tls).await;
        } else {
            app_port(listener, addr, app, tls).await;
        }
    };
    Ok((Bound { app: addr, control }, run))
}

/// A stand-in running in this process on a thread of its own (with its own runtime), for
/// tests; it stops when dropped.
pub struct Background {
    /// The addresses it listens on.
    pub bound: Bound,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Binds and serves as the binary would with these arguments; returns once both ports
    /// listen (at most 10 s).
    pub fn start(args: Args) -> Result<Background, String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("rose-standin".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    match bind(&args).await {
                        Ok((bound, run)) => {
                            let _ = ready_tx.send(Ok(bound));
                            tokio::select! {
                                _ = run => {}
                                _ = stopped => {}
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                // Dropping the runtime ends the servers and any hanging request.
            })
            .map_err(|e| format!("thread: {e}"))?;
        let bound = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the stand-in did not start within 10 s".to_owned())??;
        Ok(Background {
            bound,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let code = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
    }

    #[test]
    fn serves_in_process_switches_modes_and_stops_on_drop() {
        let args =
            Args::from_cli(["--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0"]).unwrap();
        let app = Background::start(args).unwrap();
        let (port, control) = (app.bound.app, app.bound.control.unwrap());
        let (code, body) = get(port, "/api/health");
        assert_eq!(code, 200);
        assert!(body.contains(r#""status":"healthy""#), "{body}");
        assert_eq!(get(control, "/_standin/set?mode=degraded&down=groq").0, 200);
        let (code, body) = get(port, "/api/v1/health");
        assert_eq!(code, 200, "degraded still answers 200");
        assert!(body.contains(r#""groq":"disconnected""#), "{body}");
        assert_eq!(get(control, "/_standin/set?mode=500").0, 200);
        assert_eq!(get(port, "/api/health").0, 500);
        assert_eq!(get(control, "/_standin/set?mode=refusing").0, 200);
        let refused = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::net::TcpStream::connect_timeout(&port, Duration::from_millis(200)).is_err()
        });
        assert!(refused, "refusing mode closes the app port");
        assert_eq!(get(control, "/_standin/set?mode=healthy").0, 200);
        let back = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::net::TcpStream::connect_timeout(&port, Duration::from_millis(200)).is_ok()
        });
        assert!(back, "the app port reopens on the same address");
        drop(app);
        assert!(
            std::net::TcpStream::connect_timeout(&control, Duration::from_millis(500)).is_err(),
            "dropping the handle closes the ports"
        );
    }

    #[test]
    fn unknown_flags_and_modes_are_errors() {
        assert!(Args::from_cli(["--mode", "sideways"]).is_err());
        assert!(Args::from_cli(["--bogus"]).is_err());
        assert_eq!(Args::from_cli(["--serve", "v1"]).unwrap().serve, Serve::V1);
    }
}
