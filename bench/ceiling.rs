//! The load comparison's ceiling (issue 6): the least any webhook must do, on secretmode's own
//! stack — the same accept loop (`server::listener::serve_tls`: rustls via tokio-rustls,
//! hyper HTTP/1.1 with keep-alive, the same limits), axum, the same self-signed certificate
//! and the same multi-thread tokio runtime. The handler reads the body, parses it as JSON
//! (every byte is still validated, but nothing is built except the uid), and echoes the uid
//! with `allowed: true`. No decision, no patch, no metrics, no logs.
//!
//! Built only with `--features bench`; `bench/load.sh` drives it beside `secretmode serve`.
//! Usage: `secretmode-ceiling 127.0.0.1:9443`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use secretmode::server::listener::{serve_tls, ListenerLimits};
use secretmode::server::metrics::Metrics;
use secretmode::server::tls::{self, CertResolver};

/// mimalloc, as in `secretmode`: see docs/BENCHMARKS.md (allocation-bound request path).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Deserialize)]
struct ReviewIn<'a> {
    #[serde(borrow)]
    request: RequestIn<'a>,
}

#[derive(Deserialize)]
struct RequestIn<'a> {
    #[serde(borrow)]
    uid: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
}

async fn mutate(body: Bytes) -> Response {
    let Ok(review) = serde_json::from_slice::<ReviewIn<'_>>(&body) else {
        return (StatusCode::BAD_REQUEST, "not an AdmissionReview\n").into_response();
    };
    let out = ReviewOut {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: ResponseOut { uid: &review.request.uid, allowed: true },
    };
    let body = serde_json::to_vec(&out).unwrap_or_default();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn main() -> Result<()> {
    let addr: SocketAddr =
        std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9443".into()).parse().context("address")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let resolver = Arc::new(CertResolver::default());
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        resolver.set(tls::self_signed(&names)?.key);
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        println!("ceiling listening on {}", listener.local_addr()?);
        let router = Router::new().route("/mutate", post(mutate));
        let limits = ListenerLimits {
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(5),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve_tls(
            listener,
            Arc::new(tls::server_config(resolver)),
            router,
            limits,
            Arc::new(Metrics::new()),
            stop_rx,
        ));
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
        let _ = server.await;
        Ok(())
    })
}
