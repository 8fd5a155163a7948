//! The agent's HTTP endpoint. Every handler reads the snapshot; none touches the database.
//!
//! - `GET /metrics`: Prometheus text exposition of the snapshot.
//! - `GET /healthz`: 200 while the agent serves (liveness).
//! - `GET /readyz`: 200 once every check has completed once, else 503 (readiness).
//! - `GET /findings`: the active and pending findings as JSON (see docs/findings.md).
//! - `GET /`: a short index.
//!
//! With a web config (`AGENT_WEB_CONFIG_FILE`, see [`crate::web`]) the endpoint serves HTTPS and
//! `/metrics` and `/findings` require basic auth or a bearer token; `/healthz` and `/readyz` stay
//! open for orchestrator probes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::render::Renderer;
use crate::snapshot::Store;

/// Content type of the Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct AppState {
    store: Store,
    renderer: Renderer,
}

pub fn router(store: Store, auth: Option<Arc<crate::web::Auth>>) -> Router {
    let state = Arc::new(AppState {
        store,
        renderer: Renderer::default(),
    });
    let mut protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/findings", get(findings));
    if let Some(auth) = auth {
        protected = protected.route_layer(axum::middleware::from_fn_with_state(
            auth,
            crate::web::require_auth,
        ));
    }
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(state)
}

/// Binds the listener (so the caller learns of a taken port before anything starts).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `cancel` fires, then drains in-flight requests (HTTPS when the web config has TLS).
pub async fn serve(
    listener: TcpListener,
    store: Store,
    web: crate::web::WebConfig,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = router(store, web.auth.clone());
    match web.tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await
        }
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                h.graceful_shutdown(Some(std::time::Duration::from_secs(2)));
            });
            let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
            axum_server::tls_rustls::from_tcp_rustls(listener.into_std()?, config)?
                .handle(handle)
                .serve(app.into_make_service())
                .await
        }
    }
}

async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let snap = st.store.current();
    let body = st.renderer.render(&snap);
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body)
}

async fn findings(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let snap = st.store.current();
    let now = std::time::SystemTime::now();
    let stale = snap.stale_checks(now);
    // The worst of active and pending findings; unknown before the first evaluation and over
    // outcomes that are no longer current.
    let mut status = snap.findings.status();
    if !stale.is_empty() {
        status.status = "unknown";
        status.pending = false;
    }
    axum::Json(serde_json::json!({
        "status": status.status,
        "status_pending": status.pending,
        "stale_checks": stale,
        "snapshot_age_seconds": snap.age(now).map(|d| d.as_secs_f64()),
        "ready": snap.ready(),
        "findings": snap.findings.active,
        "pending": snap.findings.pending,
        "evaluated_at": snap.findings.evaluated_at.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()),
    }))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let snap = st.store.current();
    if snap.ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        let missing: Vec<&str> = snap
            .expected
            .iter()
            .copied()
            .filter(|id| !snap.checks.contains_key(id))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for the first run of: {}\n", missing.join(", ")),
        )
    }
}

async fn index() -> &'static str {
    "rose-agent\n\n/metrics  Prometheus metrics\n/healthz  liveness\n/readyz   readiness (first round of checks done)\n/findings active findings (JSON)\n"
}
