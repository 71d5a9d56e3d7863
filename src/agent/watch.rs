//! `secretmode watch`: the watcher injected in `eso` and `csi` pods that declare
//! `on-change`. The kubelet (Secret volumes) and the Secrets Store CSI driver both update a
//! volume by writing a new timestamped directory and renaming a `..data` symlink onto it; the
//! watcher notices that swap and fires the action through the same notifier as the sidecar.
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
use prometheus_client::registry::Registry;
use serde_json::json;

use super::notify::{Notifier, Record};
use super::spec::WatchSpec;
use super::{rooted, stop_signal};
use crate::vocabulary::paths::{HEALTH_PATH, METRICS_PATH, READY_PATH, STARTUP_PATH, WATCH_SPEC_ENV, WATCH_STATUS_DIR};
use crate::vocabulary::time::rfc3339;

/// How often `..data` is read.
pub const POLL: Duration = Duration::from_secs(1);
/// The symlink both writers swap.
pub const DATA_LINK: &str = "..data";
pub const STATUS_FILE: &str = "status.json";

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
    record: Arc<Record>,
    state: Mutex<Seen>,
    changes: Counter,
    status_file: PathBuf,
}

#[derive(Default)]
struct Seen {
    target: Option<String>,
    last_change: Option<SystemTime>,
    changes: u64,
    /// The last readlink error, while `..data` cannot be read.
    error: Option<String>,
}

impl Watch {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn to_json(&self) -> serde_json::Value {
        let s = self.seen();
        json!({
            "dir": self.dir,
            "startedAt": rfc3339(self.started),
            "dataTarget": s.target,
            "error": s.error,
            "changes": s.changes,
            "lastChange": s.last_change.map(rfc3339),
            "onChange": self.record.action().to_string(),
            "lastNotification": self.record.to_json(),
        })
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
        self.record.register(&mut registry);
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
    let Some(on_change) = spec.on_change.clone() else {
        anyhow::bail!("rendering in the watcher is not implemented yet");
    };
    let root = args.root.as_deref();
    let dir = rooted(root, &spec.dir);
    let status_dir = rooted(root, WATCH_STATUS_DIR);
    std::fs::create_dir_all(&status_dir)
        .map_err(|e| anyhow::anyhow!("cannot create the status directory {}: {e}", status_dir.display()))?;
    let watch = Arc::new(Watch {
        dir: spec.dir.clone(),
        started: SystemTime::now(),
        record: Arc::new(Record::new(on_change.clone())),
        state: Mutex::new(Seen::default()),
        changes: Counter::default(),
        status_file: status_dir.join(STATUS_FILE),
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
        let notifier = {
            let w = watch.clone();
            Notifier::spawn(watch.record.clone(), move || w.write_status())
        };
        tracing::info!(%health, dir = %spec.dir, action = %on_change, "watcher started");
        tokio::select! {
            _ = poll(&watch, &dir, &notifier) => {}
            _ = stop => tracing::info!("SIGTERM: shutting down"),
        }
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn metrics(State(w): State<Arc<Watch>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], w.render_metrics())
}

/// Reads `..data` every [`POLL`]; a new target after the first one seen is a change.
async fn poll(watch: &Watch, dir: &Path, notifier: &Notifier) {
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        interval.tick().await;
        let read = data_target(dir);
        let mut s = watch.seen();
        let write = match read {
            Ok(target) if s.target.as_deref() == Some(target.as_str()) => {
                let recovered = s.error.take().is_some();
                recovered || first
            }
            Ok(target) => {
                if s.target.is_some() {
                    s.changes += 1;
                    s.last_change = Some(SystemTime::now());
                    watch.changes.inc();
                    notifier.changed();
                    tracing::info!(target = %target, "..data swapped: notification scheduled");
                } else {
                    // The generation the app starts with (or the first one to appear).
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
