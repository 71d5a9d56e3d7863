//! HTTP routes: `POST /mutate` on the TLS port; `/healthz`, `/readyz`, `/metrics` on the admin
//! port. The handler is thin: read the body within limits, hand it to [`review::review`],
//! record the outcome.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, Limited};
use tower_http::catch_panic::CatchPanicLayer;

use super::metrics::{AdmissionLabels, Metrics, PolicyLabels, ReasonLabels};
use super::review;
use super::tls::CertResolver;
use crate::config::Config;
use crate::logging::printable::Printable;
use crate::vocabulary::exposition;

pub struct WebhookState {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
}

pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub resolver: Arc<CertResolver>,
    /// Set on SIGTERM so endpoints stop sending new requests before we stop accepting.
    pub draining: Arc<AtomicBool>,
}

pub fn webhook_router(state: Arc<WebhookState>) -> Router {
    harden(Router::new().route("/mutate", post(mutate)).with_state(state))
}

pub fn admin_router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// A panic in a handler becomes a 500 for that request; the process keeps serving.
pub fn harden(router: Router) -> Router {
    router.layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
        tracing::error!("handler panicked; answered 500");
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
    }))
}

/// The API server appends `?timeout=10s` to the webhook URL: its whole budget for this call.
/// Read by hand, as a query extractor deserialises the whole query through serde on every
/// admission; the API server never percent-encodes it, and a value that does not parse as a
/// duration leaves the default budget, as an absent one does.
fn requested_timeout(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|pair| pair.strip_prefix("timeout="))
}

async fn mutate(State(state): State<Arc<WebhookState>>, request: Request) -> Response {
    // Headers and query are read in place rather than through extractors, which would copy the
    // header map on every admission.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let started = Instant::now();
    let reject = |reason: &'static str, status: StatusCode, message: String| {
        state.metrics.rejected.get_or_create(&ReasonLabels { reason }).inc();
        tracing::warn!(reason, %status, "rejected admission request");
        (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], message + "\n")
            .into_response()
    };

    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return reject(
            "content_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json".into(),
        );
    }
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.max_body_bytes as u64) {
        return reject(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {} bytes", state.max_body_bytes),
        );
    }
    let budget = requested_timeout(parts.uri.query())
        .and_then(|t| crate::vocabulary::duration::parse(t).ok())
        .map_or(state.body_timeout, |t| t.min(state.body_timeout));
    // Limited stops reading as soon as the cap is passed: an oversized chunked body is never
    // buffered whole.
    let bytes: Bytes = match tokio::time::timeout(budget, Limited::new(body, state.max_body_bytes).collect()).await {
        Err(_) => return reject("body_timeout", StatusCode::REQUEST_TIMEOUT, "body not received in time".into()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return reject(
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {} bytes", state.max_body_bytes),
            );
        }
        Ok(Err(_)) => return reject("body_read", StatusCode::BAD_REQUEST, "body could not be read".into()),
        Ok(Ok(collected)) => collected.to_bytes(),
    };

    match review::review(&bytes, &state.config) {
        Err(e) => reject("bad_review", StatusCode::BAD_REQUEST, e.to_string()),
        Ok(reviewed) => {
            let elapsed = started.elapsed();
            let mode = reviewed.mode.map_or("none", |m| m.as_str());
            state.metrics.admissions.get_or_create(&AdmissionLabels { mode, outcome: reviewed.outcome }).inc();
            state.metrics.duration.observe(elapsed.as_secs_f64());
            if let Some(hit) = &reviewed.policy {
                let labels = PolicyLabels { rule: hit.rule.clone(), enforcement: hit.enforcement.as_str() };
                state.metrics.policy_violations.get_or_create(&labels).inc();
            }
            if reviewed.patch_bytes > 0 {
                state.metrics.patch_bytes.observe(reviewed.patch_bytes as f64);
            }
            log_admission(&reviewed, elapsed);
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], reviewed.body).into_response()
        }
    }
}

/// One line per admission, never the pod spec, never env values; an event, not a span plus an
/// event, because this runs on every pod creation. `duration_us` is a measurement (a number
/// for log queries), not a setting, so it stays an integer of microseconds.
pub fn log_admission(reviewed: &review::Reviewed, elapsed: Duration) {
    let mode = reviewed.mode.map_or("none", |m| m.as_str());
    macro_rules! admission_line {
        ($level:ident) => {
            tracing::$level!(
                uid = %Printable(&reviewed.uid),
                namespace = %Printable(&reviewed.namespace),
                mode,
                outcome = reviewed.outcome,
                duration_us = elapsed.as_micros() as u64,
                patch_bytes = reviewed.patch_bytes,
                dry_run = reviewed.dry_run,
                "admission"
            )
        };
    }
    match reviewed.outcome {
        "injected" | "denied" | "mirror" => admission_line!(info),
        _ => admission_line!(debug),
    }
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !state.resolver.is_loaded() {
        (StatusCode::SERVICE_UNAVAILABLE, "no certificate loaded\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

/// OpenMetrics for Prometheus, the text format for anything else (`vocabulary::exposition`).
async fn metrics(State(state): State<Arc<AdminState>>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (kind, body) = exposition::negotiate(accept, state.metrics.render());
    ([(header::CONTENT_TYPE, HeaderValue::from_static(kind))], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("boom")
    }

    /// A body that never arrives.
    struct NeverEnds;

    impl axum::body::HttpBody for NeverEnds {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn the_api_servers_timeout_bounds_the_body_read() {
        let state = Arc::new(WebhookState {
            config: Arc::new(Config::builtin().unwrap()),
            metrics: Arc::new(Metrics::new()),
            max_body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(300),
        });
        let request = axum::http::Request::post("/mutate?timeout=1s")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::new(NeverEnds))
            .unwrap();
        // Bounded far above the request's 1 s and far below the server's own 300 s.
        let response = tokio::time::timeout(Duration::from_secs(60), webhook_router(state).oneshot(request))
            .await
            .expect("the request's ?timeout= was not applied")
            .unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    }

    #[test]
    fn the_timeout_is_read_from_anywhere_in_the_query() {
        assert_eq!(requested_timeout(Some("timeout=10s")), Some("10s"));
        assert_eq!(requested_timeout(Some("a=1&timeout=2s&b")), Some("2s"));
        assert_eq!(requested_timeout(Some("timeout=")), Some(""));
        assert_eq!(requested_timeout(Some("xtimeout=1s&timeouts=2s")), None);
        assert_eq!(requested_timeout(Some("")), None);
        assert_eq!(requested_timeout(None), None);
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_router_keeps_serving() {
        let router = harden(Router::new().route("/panic", get(boom)).route("/fine", get(|| async { "fine" })));
        let response =
            router.clone().oneshot(axum::http::Request::get("/panic").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let response = router.oneshot(axum::http::Request::get("/fine").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
