//! The sidecar's plain-HTTP endpoints on its health port.
//!
//! - `/startup`: 200 once the first set of files is on disk (provider sync or fallback seed);
//!   the startup probe gates the app containers on it.
//! - `/healthz`: 200 while the process serves; never reflects provider health, because
//!   restarting the sidecar into an outage would only lose its last good values.
//! - `/readyz`: 200 while files are on disk, whatever their freshness (informational; the
//!   state is in the body). Not wired to a readiness probe: a stale-but-present cache must not
//!   take the pod out of its Service.
//! - `/metrics`: Prometheus text.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::status::Status;
use crate::vocabulary::exposition;
use crate::vocabulary::paths::{HEALTH_PATH, METRICS_PATH, READY_PATH, STARTUP_PATH};

pub fn router(status: Arc<Status>) -> Router {
    Router::new()
        .route(STARTUP_PATH, get(startup))
        .route(HEALTH_PATH, get(|| async { "ok\n" }))
        .route(READY_PATH, get(ready))
        .route(METRICS_PATH, get(metrics))
        .with_state(status)
}

async fn startup(State(s): State<Arc<Status>>) -> impl IntoResponse {
    if s.has_data() {
        (StatusCode::OK, format!("{}\n", s.state().as_str()))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{}: no files yet\n", s.state().as_str()))
    }
}

async fn ready(State(s): State<Arc<Status>>) -> impl IntoResponse {
    let code = if s.has_data() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, format!("{}\n", s.state().as_str()))
}

/// OpenMetrics for Prometheus, the text format for anything else (`vocabulary::exposition`).
async fn metrics(State(s): State<Arc<Status>>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (kind, body) = exposition::negotiate(accept, s.render_metrics());
    ([(header::CONTENT_TYPE, kind)], body)
}

/// Binds first (so a port clash fails start-up loudly), then serves in the background.
pub async fn serve(addr: SocketAddr, status: Arc<Status>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(status)).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    Ok(local)
}
