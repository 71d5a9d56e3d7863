//! `secretmode watch`: the watcher injected in `eso` and `csi` pods that declare
//! `on-change` or rendered files. The kubelet (Secret volumes) and the Secrets Store CSI driver
//! both update a volume by writing a new timestamped directory and renaming a `..data` symlink
//! onto it; the watcher notices that swap, re-renders the rendered files from the new items
//! (when the spec has `render`), then fires the action through the same notifier as the sidecar.
//! A render that fails keeps the previous rendered set, is recorded, and is retried on the next
//! swap and every [`RENDER_RETRY`].
//!
//! It polls `readlink(<dir>/..data)` every [`POLL`] rather than using inotify: one syscall a
//! second costs nothing measurable, needs no watch descriptors or new dependency, works the
//! same on every volume type and on a read-only mount, and cannot miss a swap that happens
//! while a watch is being re-armed. A second of latency is nothing next to the kubelet's sync
//! period (a minute or more) and the notifier's quiet period. The target at start is the
//! generation the app read: no notification for it.
//!
//! It initialises no provider client and runs on one thread; see docs/BENCHMARKS.md ("Watcher")
//! for what it costs beside the refresh agent.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;

use super::notify::{Notifier, Record};
use super::render::render_dir;
use super::spec::{RenderSpec, WatchSpec};
use super::{rooted, stop_signal};
use crate::vocabulary::exposition;
use crate::vocabulary::paths::{HEALTH_PATH, METRICS_PATH, READY_PATH, STARTUP_PATH, WATCH_SPEC_ENV, WATCH_STATUS_DIR};
use crate::vocabulary::time::rfc3339;

/// How often `..data` is read.
pub const POLL: Duration = crate::timing::WATCH_POLL;
/// The symlink both writers swap.
pub const DATA_LINK: &str = "..data";
pub const STATUS_FILE: &str = "status.json";
/// While a render is failing, how often it is tried again without a swap.
pub const RENDER_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The watch spec JSON written by the webhook.
    #[arg(long, env = WATCH_SPEC_ENV, hide_env_values = true)]
    pub spec: String,
    /// Prefix for the watched directory and the status directory, for local runs and tests
    /// outside a pod.
    #[arg(long, env = "SECRETMODE_WATCH_ROOT")]
    pub root: Option<PathBuf>,
    /// Address the health/metrics server binds (port from the spec).
    #[arg(long, env = "SECRETMODE_WATCH_HEALTH_ADDRESS", default_value = "0.0.0.0")]
    pub health_address: IpAddr,
}

/// The watcher's record, behind its status file and metrics.
struct Watch {
    dir: String,
    started: SystemTime,
    record: Option<Arc<Record>>,
    state: Mutex<Seen>,
    changes: Counter,
    status_file: PathBuf,
    render: Option<Render>,
}

/// The rendered files the watcher keeps in step with the items.
struct Render {
    spec: RenderSpec,
    /// `spec.dest_dir` under `--root`.
    dest: PathBuf,
    /// Renders by result (success, failure).
    renders: Family<Vec<(String, String)>, Counter>,
    /// Failed renders by rendered file (`-` when no file is to blame: an unreadable source).
    failures: Family<Vec<(String, String)>, Counter>,
}

#[derive(Default)]
struct Seen {
    target: Option<String>,
    last_change: Option<SystemTime>,
    changes: u64,
    /// The last readlink error, while `..data` cannot be read.
    error: Option<String>,
    /// The source generation the rendered files were last made from.
    rendered_from: Option<String>,
    last_render: Option<SystemTime>,
    /// Why the last render failed, while it is failing (never a value).
    render_error: Option<String>,
}

impl Watch {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn to_json(&self) -> serde_json::Value {
        let s = self.seen();
        let render = self.render.as_ref().map(|r| {
            json!({
                "destDir": r.spec.dest_dir,
                "files": r.spec.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
                "renderedFrom": s.rendered_from,
                "lastRender": s.last_render.map(rfc3339),
                "error": s.render_error,
            })
        });
        json!({
            "dir": self.dir,
            "startedAt": rfc3339(self.started),
            "dataTarget": s.target,
            "error": s.error,
            "changes": s.changes,
            "lastChange": s.last_change.map(rfc3339),
            "onChange": self.record.as_ref().map(|r| r.action().to_string()),
            "lastNotification": self.record.as_ref().map(|r| r.to_json()),
            "render": render,
        })
    }

    /// Renders the files from the items now in `dir`. True when a new rendered set replaced
    /// one the app may have read. A failure is recorded and logged when it is new.
    fn render(&self, dir: &Path) -> bool {
        let Some(r) = &self.render else { return false };
        let result = render_dir(dir, &r.dest, &r.spec.files);
        let mut s = self.seen();
        match result {
            Ok(done) => {
                r.renders.get_or_create(&vec![("result".into(), "success".into())]).inc();
                if s.render_error.take().is_some() {
                    tracing::info!("rendered files written again");
                }
                if done.written {
                    tracing::info!(
                        generation = done.source_target.as_deref().unwrap_or("-"),
                        files = r.spec.files.len(),
                        "rendered files written"
                    );
                }
                s.rendered_from = done.source_target;
                s.last_render = Some(SystemTime::now());
                done.written && done.replaced
            }
            Err(e) => {
                r.renders.get_or_create(&vec![("result".into(), "failure".into())]).inc();
                let file = e.file.clone().unwrap_or_else(|| "-".into());
                r.failures.get_or_create(&vec![("file".into(), file)]).inc();
                if s.render_error.as_deref() != Some(e.message.as_str()) {
                    tracing::warn!(error = %crate::logging::printable::Printable(&e.message), "cannot render; keeping the previous rendered files");
                }
                s.render_error = Some(e.message);
                false
            }
        }
    }

    fn render_failing(&self) -> bool {
        self.render.is_some() && self.seen().render_error.is_some()
    }

    /// status.json, replaced atomically (temp file + rename) so a reader never sees half.
    fn write_status(&self) {
        let bytes = serde_json::to_vec_pretty(&self.to_json()).unwrap_or_default();
        let tmp = self.status_file.with_extension("json.tmp");
        let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &self.status_file));
        if let Err(e) = result {
            tracing::warn!(path = %self.status_file.display(), error = %e, "cannot write the status file");
        }
    }

    fn render_metrics(&self) -> String {
        let mut registry = Registry::with_prefix("secretmode_watcher");
        registry.register(
            "changes",
            "..data swaps seen since start (the initial target is not one)",
            self.changes.clone(),
        );
        if let Some(r) = &self.render {
            registry.register(
                "renders",
                "Renders of the rendered files, by result (success, failure)",
                r.renders.clone(),
            );
            registry.register(
                "render_failures",
                "Failed renders by rendered file (-: the items could not be read); the previous rendered set is kept",
                r.failures.clone(),
            );
        }
        if let Some(record) = &self.record {
            record.register(&mut registry);
        }
        let mut out = String::new();
        if encode(&mut out, &registry).is_err() {
            return String::from("# metrics encoding failed\n");
        }
        out
    }
}

/// Where `..data` points, or why it cannot be read.
fn data_target(dir: &Path) -> Result<String, String> {
    std::fs::read_link(dir.join(DATA_LINK))
        .map(|t| t.to_string_lossy().into_owned())
        .map_err(|e| format!("cannot read {}: {e}", dir.join(DATA_LINK).display()))
}

pub fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stop = {
        let _in_runtime = rt.enter();
        stop_signal()?
    };
    let spec = WatchSpec::from_json(&args.spec).map_err(anyhow::Error::msg)?;
    let root = args.root.as_deref();
    let dir = rooted(root, &spec.dir);
    let status_dir = rooted(root, WATCH_STATUS_DIR);
    std::fs::create_dir_all(&status_dir)
        .map_err(|e| anyhow::anyhow!("cannot create the status directory {}: {e}", status_dir.display()))?;
    let watch = Arc::new(Watch {
        dir: spec.dir.clone(),
        started: SystemTime::now(),
        record: spec.on_change.clone().map(|a| Arc::new(Record::new(a))),
        state: Mutex::new(Seen::default()),
        changes: Counter::default(),
        status_file: status_dir.join(STATUS_FILE),
        render: spec.render.clone().map(|r| Render {
            dest: rooted(root, &r.dest_dir),
            spec: r,
            renders: Family::default(),
            failures: Family::default(),
        }),
    });
    let health = SocketAddr::new(args.health_address, spec.health_port);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(health)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {health} for health and metrics: {e}"))?;
        let router = Router::new()
            .route(HEALTH_PATH, get(|| async { "ok\n" }))
            // Nothing to wait for: the files are the kubelet's. Served so a probe wired like
            // the sidecar's passes.
            .route(STARTUP_PATH, get(|| async { "ok\n" }))
            .route(READY_PATH, get(|| async { "ok\n" }))
            .route(METRICS_PATH, get(metrics))
            .with_state(watch.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "health server stopped");
            }
        });
        let notifier = watch.record.clone().map(|record| {
            let w = watch.clone();
            Notifier::spawn(record, move || w.write_status())
        });
        let action = spec.on_change.as_ref().map_or_else(|| "none".to_string(), ToString::to_string);
        let rendered = spec.render.as_ref().map_or(0, |r| r.files.len());
        tracing::info!(%health, dir = %spec.dir, %action, rendered, "watcher started");
        tokio::select! {
            _ = poll(&watch, &dir, notifier.as_ref()) => {}
            _ = stop => tracing::info!("SIGTERM: shutting down"),
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// OpenMetrics for Prometheus, the text format for anything else (`vocabulary::exposition`).
async fn metrics(State(w): State<Arc<Watch>>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (kind, body) = exposition::negotiate(accept, w.render_metrics());
    ([(header::CONTENT_TYPE, kind)], body)
}

/// Reads `..data` every [`POLL`]; a new target after the first one seen is a change: the
/// files are re-rendered first, then the action fires. At start the rendered files are made
/// again from the items there (nothing written when they already match: the init step made
/// them); a rendered set that did not match is a change for the app.
async fn poll(watch: &Watch, dir: &Path, notifier: Option<&Notifier>) {
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    let mut last_try = std::time::Instant::now();
    let notify = || {
        if let Some(n) = notifier {
            n.changed();
        }
    };
    loop {
        interval.tick().await;
        let read = data_target(dir);
        let s = watch.seen();
        let swapped = matches!(&read, Ok(t) if s.target.as_deref() != Some(t.as_str()));
        let is_first_target = s.target.is_none();
        drop(s);
        // Render before the swap is recorded and the action fires: the app is told once both
        // its items and its rendered files are new.
        let retry = watch.render_failing() && last_try.elapsed() >= RENDER_RETRY;
        let mut rerendered = false;
        if swapped || retry {
            last_try = std::time::Instant::now();
            rerendered = watch.render(dir);
        }
        let mut s = watch.seen();
        let write = match read {
            Ok(_) if !swapped => {
                let recovered = s.error.take().is_some();
                if rerendered {
                    // A retried render succeeded: new rendered files for the same items.
                    notify();
                }
                recovered || first || retry
            }
            Ok(target) => {
                if !is_first_target {
                    s.changes += 1;
                    s.last_change = Some(SystemTime::now());
                    watch.changes.inc();
                    notify();
                    tracing::info!(target = %target, "..data swapped: notification scheduled");
                } else {
                    // The generation the app starts with (or the first one to appear).
                    if rerendered {
                        notify();
                    }
                    tracing::info!(target = %target, "watching");
                }
                s.target = Some(target);
                s.error = None;
                true
            }
            Err(e) => {
                let new = s.error.as_deref() != Some(e.as_str());
                if new {
                    tracing::warn!(error = %e, "cannot read ..data; still watching");
                }
                s.error = Some(e);
                new || first
            }
        };
        first = false;
        drop(s);
        if write {
            watch.write_status();
        }
    }
}
