//! The load comparison's ceiling (issue 6): the least any webhook must do, on secretmode's own
//! stack — the same accept loop (`server::listener::serve_tls`: rustls via tokio-rustls,
//! hyper HTTP/1.1 with keep-alive, the same limits), axum, the same self-signed certificate
//! and the same multi-thread tokio runtime. The handler reads the body, parses it as JSON
//! (every byte is still validated, but nothing is built except the uid), and echoes the uid
//! with `allowed: true`. No decision, no patch, no metrics, no logs.
//!
//! A second route, `POST /answer/{name}`, does the same work but answers with a body of
//! secretmode's own size: `ANSWERS/<name>.json`, secretmode's answer to the same review, with
//! the request's uid put in place of the one it was recorded with. It tells how much of the
//! gap to the ceiling is only the size of the answer (a sidecar's patch is ~4 KB of base64,
//! which the server encrypts and sends and the client receives and decrypts on every request).
//!
//! A third, `POST /busy/{micros}`, is the ceiling plus that many microseconds of busy work on
//! the request's thread (a stand-in for a webhook's own decision): it shows how the ratio
//! falls with the CPU a handler adds, so what budget a review must fit for a given ratio.
//!
//! A fourth, `POST /review`, runs secretmode's whole review (`review::review` with the
//! built-in config) in this handler and answers with its answer: the review's own cost, apart
//! from what `secretmode serve` wraps around it (body cap and timeout, query, metrics, log
//! line, panic guard). It is a diagnostic; the ceiling the target is measured against is
//! `/mutate`.
//!
//! A fifth, `POST /naive/{kube,value}`, is the naive parse-clone-diff handler the target is
//! calibrated on ("a naive parse-clone-diff handler lands near 0.4", issue 6), in the two
//! flavours of `bench/naive.rs`: secretmode's decision with the pod parsed whole, cloned,
//! patched and diffed. `secretmode-ceiling --check REVIEW.json...` checks that their answers
//! patch each pod exactly as secretmode's do (`bench/load.sh` runs it before measuring).
//!
//! A sixth, `POST /value`, is the ceiling read the other way "parse it as JSON" can be read:
//! the whole review built as a `serde_json::Value` (what most webhooks do first), then the uid
//! echoed. It tells which ceiling the target's calibration point fits.
//!
//! Built only with `--features bench`; `bench/load.sh` drives it beside `secretmode serve`.
//! Usage: `secretmode-ceiling 127.0.0.1:9443 [ANSWERS]`, `secretmode-ceiling --check REVIEW.json...`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use secretmode::config::Config;
use secretmode::webhook::listener::{serve_tls, ListenerLimits};
use secretmode::webhook::metrics::Metrics;
use secretmode::webhook::tls::{self, CertResolver};

#[path = "naive.rs"]
mod naive;

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
        return not_a_review();
    };
    allow(&review.request.uid)
}

/// The ceiling's answer: the request's uid, allowed.
fn allow(uid: &str) -> Response {
    let out = ReviewOut {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: ResponseOut { uid, allowed: true },
    };
    json_response(serde_json::to_vec(&out).unwrap_or_default())
}

/// Diagnostic: the ceiling with the review built as a `serde_json::Value` (see the module docs).
async fn value(body: Bytes) -> Response {
    let Ok(review) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return not_a_review();
    };
    let Some(uid) = review["request"]["uid"].as_str() else {
        return not_a_review();
    };
    allow(uid)
}

/// Diagnostic: secretmode's whole review (parse, decide, patch, answer) in the ceiling's
/// handler, without what `serve` adds around it (body timeout and cap, query, metrics, the log
/// line): how much of the distance to the ceiling is the review itself.
async fn review_only(body: Bytes) -> Response {
    match REVIEW_CONFIG.get().map(|config| secretmode::webhook::review::review(&body, config)) {
        Some(Ok(reviewed)) => json_response(reviewed.body),
        Some(Err(_)) => not_a_review(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "no config\n").into_response(),
    }
}

static REVIEW_CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();

/// Diagnostic: the naive parse-clone-diff handler, in the flavour the path names.
async fn naive(UrlPath(flavour): UrlPath<String>, body: Bytes) -> Response {
    let Some(flavour) = naive::Flavour::ALL.into_iter().find(|f| f.name() == flavour) else {
        return (StatusCode::NOT_FOUND, "no naive handler of that name\n").into_response();
    };
    match REVIEW_CONFIG.get().map(|config| flavour.answer(&body, config)) {
        Some(Ok(answer)) => json_response(answer),
        Some(Err(_)) => not_a_review(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "no config\n").into_response(),
    }
}

async fn busy(UrlPath(micros): UrlPath<u64>, body: Bytes) -> Response {
    let until = std::time::Instant::now() + Duration::from_micros(micros);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
    mutate(body).await
}

/// A recorded answer split around its uid.
struct Answer {
    before: Vec<u8>,
    after: Vec<u8>,
}

type Answers = Arc<HashMap<String, Answer>>;

async fn answer_sized(State(answers): State<Answers>, UrlPath(name): UrlPath<String>, body: Bytes) -> Response {
    let Ok(review) = serde_json::from_slice::<ReviewIn<'_>>(&body) else {
        return not_a_review();
    };
    let Some(answer) = answers.get(&name) else {
        return (StatusCode::NOT_FOUND, "no recorded answer of that name\n").into_response();
    };
    let mut out = Vec::with_capacity(answer.before.len() + review.request.uid.len() + 2 + answer.after.len());
    out.extend_from_slice(&answer.before);
    serde_json::to_writer(&mut out, &*review.request.uid).unwrap_or_default();
    out.extend_from_slice(&answer.after);
    json_response(out)
}

fn not_a_review() -> Response {
    (StatusCode::BAD_REQUEST, "not an AdmissionReview\n").into_response()
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// Reads every `<name>.json` AdmissionReview answer in `dir`, split around its response uid.
fn load_answers(dir: &Path) -> Result<HashMap<String, Answer>> {
    #[derive(Deserialize)]
    struct Recorded {
        response: RecordedResponse,
    }
    #[derive(Deserialize)]
    struct RecordedResponse {
        uid: String,
    }
    let mut answers = HashMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) =
            path.file_stem().and_then(|n| n.to_str()).filter(|_| path.extension().is_some_and(|e| e == "json"))
        else {
            continue;
        };
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let recorded: Recorded = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not an AdmissionReview answer", path.display()))?;
        let uid = serde_json::to_vec(&recorded.response.uid)?;
        let at = text
            .windows(uid.len())
            .position(|w| w == uid.as_slice())
            .with_context(|| format!("uid not found in {}", path.display()))?;
        answers
            .insert(name.to_string(), Answer { before: text[..at].to_vec(), after: text[at + uid.len()..].to_vec() });
    }
    Ok(answers)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "--check") {
        return naive::check(&args[2..], &Config::builtin()?);
    }
    let addr: SocketAddr = args.get(1).map_or("127.0.0.1:9443", String::as_str).parse().context("address")?;
    let answers: Answers = Arc::new(match args.get(2) {
        Some(dir) => load_answers(Path::new(dir))?,
        None => HashMap::new(),
    });
    let _ = REVIEW_CONFIG.set(Config::builtin()?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let resolver = Arc::new(CertResolver::default());
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        resolver.set(tls::self_signed(&names)?.key);
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        println!("ceiling listening on {}", listener.local_addr()?);
        let router = Router::new()
            .route("/mutate", post(mutate))
            .route("/answer/{name}", post(answer_sized))
            .route("/busy/{micros}", post(busy))
            .route("/review", post(review_only))
            .route("/naive/{flavour}", post(naive))
            .route("/value", post(value))
            .with_state(answers);
        let limits = ListenerLimits {
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
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
