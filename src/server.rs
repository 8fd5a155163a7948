//! The agent's HTTP endpoint. Every handler reads the snapshot; none touches the database.
//!
//! - `GET`/`HEAD /metrics`: the snapshot as Prometheus text or OpenMetrics, gzipped when asked.
//! - `GET /healthz`: 200 while the agent serves (liveness).
//! - `GET /readyz`: 200 once every check has completed once, else 503 (readiness).
//! - `GET /findings`: the active and pending findings as JSON (see docs/findings.md), epoch
//!   times with RFC 3339 beside them; pretty with `?pretty` or for a browser.
//! - `GET /`: the status page for people (HTML, see [`crate::status`]).
//! - `GET /status`: the same summary as JSON (what `agent status` reads).
//!
//! With a web config (`AGENT_WEB_CONFIG_FILE`, see [`crate::web`]) the endpoint serves HTTPS and
//! `/`, `/status`, `/metrics` and `/findings` require basic auth or a bearer token; `/healthz`
//! and `/readyz` stay open for orchestrator probes.
//!
//! One accept loop serves both HTTP and HTTPS with hyper directly (axum's `serve` builds hyper
//! without a timer, so no header timeout ever applied): a request's header must arrive within
//! [`WebLimits::header_timeout`] of the connection's start (TLS handshake included) or of the
//! previous response, so slow-header and idle keep-alive connections are closed; at most
//! [`WebLimits::max_connections`] connections are open at once, fewer when the open-files limit
//! is low ([`connection_cap`]), so the agent keeps descriptors for its own work. When the cap is
//! reached a new connection evicts the oldest one that has no request in progress, so a flood
//! of idle connections cannot lock out the orchestrator's probe or the scraper.
//!
//! HTTP/2 is served beside HTTP/1.1 unless the web config says `http2: false`: over TLS when
//! the client picks `h2` by ALPN, on plain TCP by prior knowledge (h2c). The same bounds hold
//! for it: a connection with no request in progress for the header timeout (since it opened,
//! or since its last request ended) is closed, as hyper's HTTP/1 header timeout closes one;
//! streams per connection and the header block are bounded like the HTTP/1 request buffer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use crate::config::web::WebLimits;
use crate::files::nofile_limit;
use crate::reading::Sources;
use crate::render::Renderer;

/// Descriptors kept for the agent's own work (the PostgreSQL connection and its reconnects,
/// the SQLite files, app probes, alert pushes, OTLP, /proc reads, the runtime's own), or a
/// quarter of the open-files limit when that is more: HTTP clients never get these.
pub(crate) const RESERVED_FDS: u64 = 128;
/// The longest a connection lives, however busy: bounds a client that reads its response very
/// slowly or sends request after request forever. Then it is closed gracefully.
pub(crate) const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);
/// How long in-flight requests may finish at shutdown or at `MAX_CONNECTION_AGE`.
const DRAIN: Duration = Duration::from_secs(2);
/// A request header larger than this closes the connection (hyper's minimum is 8 KiB; a scrape
/// sends well under 1 KiB). Bounds the memory a connection holds.
const MAX_BUF_BYTES: usize = 16 * 1024;
/// Concurrent HTTP/2 streams one connection may open (hyper's default is 200): a scraper and a
/// person need one or two; this bounds the work one connection can queue.
const MAX_H2_STREAMS: u32 = 16;
/// After an accept error for lack of descriptors or memory, wait this long before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Pure: the connections the endpoint may hold under an open-files limit (`None`: unknown, no
/// limit). The agent keeps `max(RESERVED_FDS, limit / 4)` descriptors for its own work.
pub(crate) fn connection_cap(configured: u32, nofile: Option<u64>) -> usize {
    let configured = configured.max(1) as usize;
    match nofile {
        None => configured,
        Some(n) => {
            let reserve = RESERVED_FDS.max(n / 4);
            let room = usize::try_from(n.saturating_sub(reserve)).unwrap_or(usize::MAX);
            configured.min(room).max(1)
        }
    }
}

struct AppState {
    sources: Sources,
    renderer: Renderer,
}

pub fn router(
    sources: Sources,
    auth: Option<Arc<crate::web::Auth>>,
    rate_limit: Option<Arc<crate::web::RateLimiter>>,
) -> Router {
    let state = Arc::new(AppState {
        sources,
        renderer: Renderer::default(),
    });
    let mut protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/findings", get(findings))
        .route("/", get(index))
        .route("/status", get(status_json));
    if let Some(auth) = auth {
        protected = protected.route_layer(axum::middleware::from_fn_with_state(
            auth,
            crate::web::require_auth,
        ));
    }
    // Outside the credential check: a flood is refused before any bcrypt work.
    if let Some(limiter) = rate_limit {
        protected = protected.route_layer(axum::middleware::from_fn_with_state(
            limiter,
            crate::web::rate_limit,
        ));
    }
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(state)
}

/// Binds the listener (so the caller learns of a taken port before anything starts).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// One open connection, as the eviction sees it.
struct Slot {
    /// Requests being answered on it now; a connection with none may be evicted.
    busy: AtomicU32,
    evict: CancellationToken,
    /// When it was accepted: a connection younger than [`EVICT_MIN_AGE`] has not had the time
    /// to send its request (a loaded host), so it is not evicted.
    opened: std::time::Instant,
    /// Milliseconds after `opened` when a request last started or ended.
    last_active: AtomicU64,
}

impl Slot {
    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active.store(ms, Ordering::Release);
    }

    /// Completes once the connection has had no request in progress for `timeout` since it
    /// opened or since its last request ended.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last =
                self.opened + Duration::from_millis(self.last_active.load(Ordering::Acquire));
            let due = last + timeout;
            let now = std::time::Instant::now();
            if self.busy.load(Ordering::Acquire) == 0 && now >= due {
                return;
            }
            tokio::time::sleep(due.saturating_duration_since(now).max(timeout / 4)).await;
        }
    }
}

/// Which protocol a connection may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
    /// Either, told apart by the first bytes (HTTP/2's connection preface).
    Either,
}

/// Connections younger than this are not evicted to make room: a probe's or scraper's fresh
/// connection gets the time to send its request while a flood keeps the endpoint full (a
/// newcomer waits for one to come of age instead). Short, so the accept loop keeps up with a
/// flood of over a thousand connections a second.
pub(crate) const EVICT_MIN_AGE: Duration = Duration::from_millis(50);
/// How often a newcomer waiting for room retries the eviction.
const ROOM_POLL: Duration = Duration::from_millis(5);

/// The open connections, oldest first (ids grow).
#[derive(Default)]
struct Conns {
    open: Mutex<BTreeMap<u64, Arc<Slot>>>,
}

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Slot>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the oldest connection with no request in progress that is at least `min_age`
    /// old; false when there is none.
    fn evict_oldest_idle(&self, min_age: Duration) -> bool {
        let mut open = self.lock();
        let victim = open
            .iter()
            .find(|(_, s)| s.busy.load(Ordering::Acquire) == 0 && s.opened.elapsed() >= min_age)
            .map(|(id, _)| *id);
        match victim.and_then(|id| open.remove(&id)) {
            Some(slot) => {
                slot.evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// Counts a request in progress on a connection for as long as it lives.
struct Busy(Arc<Slot>);

impl Busy {
    fn enter(slot: &Arc<Slot>) -> Busy {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        slot.touch();
        Busy(slot.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves until `cancel` fires, then lets in-flight requests finish for a bounded time (HTTPS
/// when the web config has TLS).
pub async fn serve(
    listener: TcpListener,
    sources: Sources,
    web: crate::web::WebConfig,
    limits: WebLimits,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    for w in &web.warnings {
        tracing::warn!(warning = %w, "AGENT_WEB_CONFIG_FILE asks for something this endpoint cannot honour as written; the nearest safe setting is used.");
    }
    let mut app = router(sources, web.auth.clone(), web.rate_limit.clone());
    if !web.headers.is_empty() {
        app = app.layer(axum::middleware::from_fn_with_state(
            web.headers.clone(),
            crate::web::add_headers,
        ));
    }
    let tls = web.tls.map(tokio_rustls::TlsAcceptor::from);
    let nofile = nofile_limit();
    let cap = connection_cap(limits.max_connections, nofile);
    if cap < limits.max_connections as usize {
        tracing::warn!(
            max_connections = cap,
            configured = limits.max_connections,
            open_files_limit = nofile,
            "The open-files limit caps the endpoint's connections below AGENT_WEB_MAX_CONNECTIONS (raise LimitNOFILE / ulimit -n)."
        );
    }
    let permits = Arc::new(Semaphore::new(cap));
    let conns = Arc::new(Conns::default());
    let tracker = TaskTracker::new();
    let mut next_id: u64 = 0;
    let mut accept_errors = AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if crate::error::is_local_resource_error(&e) {
                    // Out of descriptors or memory: free one for the agent's own work and slow
                    // down rather than spin.
                    conns.evict_oldest_idle(Duration::ZERO);
                    accept_errors.note(&e);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
                continue;
            }
        };
        // Full: the oldest idle connection (old enough to have sent its request) makes room;
        // its task releases its permit as soon as it runs. A newcomer waits for room at most
        // DRAIN, retrying the eviction, and is closed after that.
        let deadline = tokio::time::Instant::now() + DRAIN;
        let permit = loop {
            if let Ok(p) = permits.clone().try_acquire_owned() {
                break Some(p);
            }
            conns.evict_oldest_idle(EVICT_MIN_AGE);
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
            tokio::select! {
                _ = cancel.cancelled() => break None,
                r = tokio::time::timeout(ROOM_POLL, permits.clone().acquire_owned()) => {
                    if let Ok(Ok(p)) = r {
                        break Some(p);
                    }
                }
            }
        };
        let Some(permit) = permit else { continue };
        next_id += 1;
        let slot = Arc::new(Slot {
            busy: AtomicU32::new(0),
            evict: CancellationToken::new(),
            opened: std::time::Instant::now(),
            last_active: AtomicU64::new(0),
        });
        conns.lock().insert(next_id, slot.clone());
        let task = Connection {
            id: next_id,
            slot,
            conns: conns.clone(),
            app: app.clone(),
            limits,
            http1_only: web.http1_only,
            shutdown: cancel.clone(),
            _permit: permit,
        };
        let tls = tls.clone();
        tracker.spawn(async move {
            match tls {
                None => task.serve_plain(stream).await,
                Some(acceptor) => task.serve_tls(stream, acceptor).await,
            }
        });
    }
    tracker.close();
    // Connection tasks drain themselves (DRAIN) when `cancel` fires; this bounds the wait.
    let _ = tokio::time::timeout(DRAIN + Duration::from_millis(500), tracker.wait()).await;
    Ok(())
}

/// Accept errors, logged at most every 10 s with a count, not once per failed accept.
#[derive(Default)]
struct AcceptErrors {
    since_log: u64,
    last_log: Option<Instant>,
}

impl AcceptErrors {
    fn note(&mut self, e: &std::io::Error) {
        self.since_log += 1;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            tracing::warn!(error = %e, count = self.since_log, "Cannot accept connections on the endpoint (out of descriptors or memory); closing idle ones.");
            self.since_log = 0;
            self.last_log = Some(Instant::now());
        }
    }
}

/// One accepted connection: its permit, its slot for eviction, and how to serve it.
struct Connection {
    id: u64,
    slot: Arc<Slot>,
    conns: Arc<Conns>,
    app: Router,
    limits: WebLimits,
    http1_only: bool,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve_tls(self, stream: TcpStream, acceptor: tokio_rustls::TlsAcceptor) {
        let evict = self.slot.evict.clone();
        let shutdown = self.shutdown.clone();
        // The handshake counts against the header timeout: a client that opens a TLS
        // connection and stalls is closed like a slow header.
        let handshake = tokio::time::timeout(self.limits.header_timeout, acceptor.accept(stream));
        let tls = tokio::select! {
            r = handshake => r,
            _ = evict.cancelled() => return self.done(),
            _ = shutdown.cancelled() => return self.done(),
        };
        match tls {
            Ok(Ok(tls)) => {
                // ALPN decides: `h2` is offered only when HTTP/2 is on.
                let protocol = match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Protocol::Http2,
                    _ => Protocol::Http1,
                };
                self.serve(tls, protocol).await
            }
            _ => self.done(),
        }
    }

    async fn serve_plain(self, stream: TcpStream) {
        let protocol = if self.http1_only {
            Protocol::Http1
        } else {
            Protocol::Either
        };
        self.serve(stream, protocol).await
    }

    async fn serve<IO>(self, io: IO, protocol: Protocol)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let svc = TowerToHyperService::new(self.app.clone());
        let slot = self.slot.clone();
        let handler = hyper::service::service_fn(move |req| {
            let busy = Busy::enter(&slot);
            let fut = svc.call(req);
            async move {
                let r = fut.await;
                drop(busy);
                r
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .max_buf_size(MAX_BUF_BYTES);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_H2_STREAMS)
            .max_header_list_size(MAX_BUF_BYTES as u32);
        let builder = match protocol {
            Protocol::Http1 => builder.http1_only(),
            Protocol::Http2 => builder.http2_only(),
            Protocol::Either => builder,
        };
        let conn = builder.serve_connection(TokioIo::new(io), handler);
        tokio::pin!(conn);
        let age = tokio::time::sleep(MAX_CONNECTION_AGE);
        // hyper's HTTP/1 header timeout bounds an HTTP/1-only connection; one that may speak
        // HTTP/2 (or has not yet said which) is bounded the same way here.
        let idle = async {
            if protocol == Protocol::Http1 {
                std::future::pending::<()>().await
            } else {
                self.slot.idle_for(self.limits.header_timeout).await
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "Endpoint connection ended with an error.");
                }
                return self.done();
            }
            _ = self.slot.evict.cancelled() => return self.done(),
            _ = self.shutdown.cancelled() => {}
            _ = age => {}
            _ = idle => {}
        }
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(DRAIN, conn).await;
        self.done()
    }

    fn done(self) {
        self.conns.lock().remove(&self.id);
    }
}

/// `GET`/`HEAD /metrics`: OpenMetrics or the text format, gzipped or not, as the scraper's
/// `Accept` and `Accept-Encoding` ask (see [`crate::exposition::negotiate`]).
async fn metrics(
    State(st): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let wire = crate::exposition::negotiate(
        header_str(header::ACCEPT),
        header_str(header::ACCEPT_ENCODING),
    );
    let snap = st.sources.read();
    let out = st
        .renderer
        .render_wire(&snap, std::time::SystemTime::now(), wire);
    let mut resp = (
        [
            (header::CONTENT_TYPE, out.format.content_type()),
            (header::VARY, "Accept, Accept-Encoding"),
        ],
        out.body,
    )
        .into_response();
    if out.gzip {
        resp.headers_mut().insert(
            header::CONTENT_ENCODING,
            axum::http::HeaderValue::from_static("gzip"),
        );
    }
    resp
}

async fn findings(
    State(st): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
) -> impl IntoResponse {
    let snap = st.sources.read();
    let now = std::time::SystemTime::now();
    // The worst of active and pending findings; unknown before the first evaluation and over
    // outcomes that are no longer current (the status page says the same word).
    let (status, stale) = crate::status::overall(&snap, now);
    let epoch = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs_f64())
    };
    let mut active = serde_json::to_value(&snap.findings.active).unwrap_or_default();
    // RFC 3339 beside each epoch `since`, for people reading the JSON.
    if let serde_json::Value::Array(items) = &mut active {
        for (item, a) in items.iter_mut().zip(&snap.findings.active) {
            if let serde_json::Value::Object(m) = item {
                m.insert(
                    "since_rfc3339".into(),
                    crate::status::rfc3339(a.since).into(),
                );
            }
        }
    }
    let body = serde_json::json!({
        "status": status.status,
        "status_pending": status.pending,
        "stale_checks": stale.iter().map(|s| &**s).collect::<Vec<&str>>(),
        "snapshot_age_seconds": snap.age(now).map(|d| d.as_secs_f64()),
        "ready": snap.ready(),
        "findings": active,
        "pending": snap.findings.pending,
        "silenced": snap.findings.silenced,
        "evaluated_at": snap.findings.evaluated_at.and_then(epoch),
        "evaluated_at_rfc3339": snap.findings.evaluated_at.map(crate::status::rfc3339),
        "generated_at_rfc3339": crate::status::rfc3339(now),
    });
    let text = if wants_pretty(&headers, &uri) {
        serde_json::to_string_pretty(&body)
    } else {
        serde_json::to_string(&body)
    }
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], text + "\n")
}

/// Pretty JSON with `?pretty` (any value but `0`/`false`) or when the client prefers HTML (a
/// browser), compact for machines.
fn wants_pretty(headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> bool {
    if let Some(q) = uri.query() {
        for pair in q.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == "pretty" {
                return !matches!(v, "0" | "false");
            }
        }
    }
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(prefers_html)
}

/// Pure: whether an `Accept` header ranks `text/html` above JSON.
fn prefers_html(accept: &str) -> bool {
    let q = |media: &str| -> f32 {
        accept
            .split(',')
            .filter_map(|part| {
                let mut it = part.split(';');
                let m = it.next()?.trim();
                (m.eq_ignore_ascii_case(media)).then(|| {
                    it.find_map(|p| p.trim().strip_prefix("q=").and_then(|v| v.parse().ok()))
                        .unwrap_or(1.0)
                })
            })
            .fold(0.0, f32::max)
    };
    let html = q("text/html");
    html > 0.0 && html > q("application/json")
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let snap = st.sources.store.current();
    if snap.ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        let missing: Vec<&str> = snap
            .expected
            .iter()
            .filter(|id| !snap.checks.contains_key(*id))
            .map(|id| &**id)
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for the first run of: {}\n", missing.join(", ")),
        )
    }
}

/// The status page (HTML) for people.
async fn index(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let snap = st.sources.read();
    let summary = crate::status::Summary::build(&snap, std::time::SystemTime::now());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Nothing on the page comes from elsewhere, runs script or may be framed.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        crate::status::html::render(&summary),
    )
}

/// The status page's summary as JSON (what `agent status` reads).
async fn status_json(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let snap = st.sources.read();
    axum::Json(crate::status::Summary::build(
        &snap,
        std::time::SystemTime::now(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_caps_connections_and_keeps_a_reserve() {
        assert_eq!(connection_cap(64, None), 64);
        assert_eq!(connection_cap(64, Some(65_536)), 64);
        // systemd's default 1,024: a quarter (256) stays with the agent.
        assert_eq!(connection_cap(10_000, Some(1024)), 768);
        // Small limits keep RESERVED_FDS.
        assert_eq!(connection_cap(10_000, Some(256)), 128);
        assert_eq!(connection_cap(10_000, Some(100)), 1, "never zero");
    }

    #[test]
    fn a_browser_gets_pretty_json() {
        assert!(prefers_html(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!prefers_html("application/json"));
        assert!(!prefers_html("*/*"));
        assert!(!prefers_html("application/json, text/html;q=0.5"));
        assert!(!prefers_html("text/html;q=0"));
        let uri = |s: &str| s.parse::<axum::http::Uri>().unwrap();
        let none = axum::http::HeaderMap::new();
        assert!(wants_pretty(&none, &uri("/findings?pretty")));
        assert!(wants_pretty(&none, &uri("/findings?a=1&pretty=1")));
        assert!(!wants_pretty(&none, &uri("/findings?pretty=0")));
        assert!(!wants_pretty(&none, &uri("/findings")));
    }
}
