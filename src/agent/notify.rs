//! `on-change`: tells the app its files changed, for the sidecar agent (after a new generation
//! is in place) and for `secretmode watch` (after the kubelet's or CSI driver's `..data` swap).
//!
//! One [`Notifier`] task per process. [`Notifier::changed`] only bumps a counter; the task
//! waits for [`DEBOUNCE`] of quiet (a burst of swaps is one notification, held at most
//! [`MAX_HOLD`]), then fires the action, retrying with capped, jittered backoff while the app is
//! not up yet (connection refused, timeout, non-2xx, no target process). A change that arrives
//! during the retries supersedes the pending notification: it is debounced again and fired
//! once, never queued behind the old one. Nothing here ever carries a value: no request body,
//! and the app's response body is never read.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::Empty;
use hyper::body::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::providers::backoff::Backoff;
use crate::vocabulary::on_change::{HttpAction, OnChange, Signal, SIGNAL_TARGET_ENV};
use crate::vocabulary::time::rfc3339;

/// Quiet period before a notification. Long enough to fold the swaps of one rotation that
/// arrive separately (a CSI driver writing several objects, several Secrets the kubelet picks
/// up in a row, a sidecar whose items change across two refreshes a few seconds apart is
/// *not* folded: those are two changes); short next to any refresh interval or kubelet sync
/// period (a minute or more), so the app hears about a change within seconds.
pub const DEBOUNCE: Duration = crate::timing::NOTIFY_DEBOUNCE;
/// A storm of changes that never goes quiet still notifies at least this often.
pub const MAX_HOLD: Duration = Duration::from_secs(30);
/// Retry backoff while the app is not up: 500 ms doubling to 10 s, full jitter.
pub const RETRY_FLOOR: Duration = Duration::from_millis(500);
pub const RETRY_CAP: Duration = Duration::from_secs(10);
/// Connect plus answer, for one request to the app.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// The last notification, as the status file and metrics show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Last {
    /// When the last attempt ended.
    pub at: SystemTime,
    pub result: Outcome,
    /// Attempts for this notification so far (1 = it worked the first time).
    pub attempts: u32,
    /// Why the last attempt failed (never a value: a status, an I/O cause, "no process").
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The app answered 2xx, or every target process was signalled.
    Success,
    /// The last attempt failed; the notifier keeps retrying.
    Retrying,
    /// A newer change arrived while retrying: this one was dropped for it.
    Superseded,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retrying => "retrying",
            Outcome::Superseded => "superseded",
        }
    }
}

/// What the notifier did, shared with the status file and metrics of its process.
#[derive(Debug)]
pub struct Record {
    action: OnChange,
    last: Mutex<Option<Last>>,
    /// Notifications that ended, by result (`success`, `superseded`).
    notifications: Family<Vec<(String, String)>, Counter>,
    /// Every attempt, by result (`success`, `failure`).
    attempts: Family<Vec<(String, String)>, Counter>,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    pending: Gauge,
}

impl Record {
    pub fn new(action: OnChange) -> Record {
        Record {
            action,
            last: Mutex::new(None),
            notifications: Family::default(),
            attempts: Family::default(),
            last_success: Gauge::default(),
            pending: Gauge::default(),
        }
    }

    pub fn action(&self) -> &OnChange {
        &self.action
    }

    pub fn last(&self) -> Option<Last> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, last: Last) {
        let label = |r: &str| vec![("result".to_string(), r.to_string())];
        match last.result {
            Outcome::Success => {
                self.attempts.get_or_create(&label("success")).inc();
                self.notifications.get_or_create(&label("success")).inc();
                let secs = last.at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                self.last_success.set(secs);
                self.pending.set(0);
            }
            Outcome::Retrying => {
                self.attempts.get_or_create(&label("failure")).inc();
                self.pending.set(1);
            }
            Outcome::Superseded => {
                self.notifications.get_or_create(&label("superseded")).inc();
            }
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
    }

    /// `lastNotification` in a status file (null before the first).
    pub fn to_json(&self) -> Value {
        match self.last() {
            None => Value::Null,
            Some(l) => json!({
                "at": rfc3339(l.at),
                "action": self.action.to_string(),
                "result": l.result.as_str(),
                "attempts": l.attempts,
                "error": l.error,
            }),
        }
    }

    /// Adds the notification metrics to `registry` (its prefix names the process).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "notifications",
            "on-change notifications that ended, by result (success, superseded by a newer change)",
            self.notifications.clone(),
        );
        registry.register(
            "notification_attempts",
            "on-change attempts, by result (success, failure: the app not up yet, retried)",
            self.attempts.clone(),
        );
        registry.register(
            "last_notification_success_timestamp_seconds",
            "Unix time of the last on-change notification the app accepted (0: none yet)",
            self.last_success.clone(),
        );
        registry.register(
            "notification_pending",
            "1 while a notification is being retried (the app not answering)",
            self.pending.clone(),
        );
    }
}

/// The handle the loop that writes or watches the files holds.
pub struct Notifier {
    changes: watch::Sender<u64>,
}

impl Notifier {
    /// Spawns the notifier task on the current runtime. `recorded` runs after every attempt
    /// (to rewrite the status file).
    pub fn spawn(record: Arc<Record>, recorded: impl Fn() + Send + 'static) -> Notifier {
        let (tx, rx) = watch::channel(0u64);
        tokio::spawn(run(record, rx, recorded));
        Notifier { changes: tx }
    }

    /// The files changed: one notification will follow (after the quiet period).
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

async fn run(record: Arc<Record>, mut rx: watch::Receiver<u64>, recorded: impl Fn()) {
    // The value at start is not a change.
    rx.borrow_and_update();
    'wait: loop {
        if rx.changed().await.is_err() {
            return;
        }
        loop {
            debounce(&mut rx).await;
            let mut backoff = Backoff::new(RETRY_FLOOR, RETRY_CAP);
            let mut attempts = 0u32;
            loop {
                attempts = attempts.saturating_add(1);
                let result = fire(record.action()).await;
                let at = SystemTime::now();
                match result {
                    Ok(detail) => {
                        record.set(Last { at, result: Outcome::Success, attempts, error: None });
                        recorded();
                        tracing::info!(action = %record.action(), attempts, detail, "on-change notification sent");
                        continue 'wait;
                    }
                    Err(e) => {
                        // Logged at the first failure and then every tenth: an app that takes
                        // a minute to come up must not flood the log.
                        if attempts == 1 || attempts.is_multiple_of(10) {
                            tracing::warn!(action = %record.action(), attempts, error = %e, "on-change notification failed; retrying");
                        }
                        record.set(Last { at, result: Outcome::Retrying, attempts, error: Some(e) });
                        recorded();
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let error = record.last().and_then(|l| l.error);
                        record.set(Last { at: SystemTime::now(), result: Outcome::Superseded, attempts, error });
                        recorded();
                        tracing::info!(action = %record.action(), attempts, "a newer change supersedes the pending notification");
                        break;
                    }
                }
            }
        }
    }
}

/// Returns once no change has arrived for [`DEBOUNCE`], or [`MAX_HOLD`] after the first.
async fn debounce(rx: &mut watch::Receiver<u64>) {
    let hold = tokio::time::Instant::now() + MAX_HOLD;
    loop {
        let quiet = (tokio::time::Instant::now() + DEBOUNCE).min(hold);
        tokio::select! {
            _ = tokio::time::sleep_until(quiet) => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// One attempt. Ok carries what was done (for the log); Err why it failed, never a value.
pub async fn fire(action: &OnChange) -> Result<String, String> {
    match action {
        OnChange::Http(h) => request(h).await.map(|code| format!("HTTP {code}")),
        OnChange::Signal(s) => {
            let s = *s;
            // /proc scanning is blocking file I/O: off the (single) runtime thread.
            match tokio::task::spawn_blocking(move || signal_targets(std::path::Path::new("/proc"), s)).await {
                Ok(r) => r.map(|n| format!("SIG{} to {n} process{}", s.as_str(), if n == 1 { "" } else { "es" })),
                Err(e) => Err(format!("signal task failed: {e}")),
            }
        }
    }
}

/// The request, over a plain HTTP/1.1 connection to loopback (no TLS, no pool: one request per
/// change). The answer's status is all that is read.
async fn request(h: &HttpAction) -> Result<u16, String> {
    let addr = SocketAddr::new(h.host.ip(), h.port);
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| io_cause(&e))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(h.method.as_str())
            .uri(&h.path)
            .header(hyper::header::HOST, format!("{}:{}", h.host.as_url_host(), h.port))
            .header(hyper::header::USER_AGENT, concat!("secretmode/", env!("CARGO_PKG_VERSION")))
            .header(hyper::header::CONTENT_LENGTH, "0")
            .header(hyper::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let answer = sender.send_request(req).await.map_err(|e| hyper_cause(&e));
        conn.abort();
        let status = answer?.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    };
    match tokio::time::timeout(HTTP_TIMEOUT, attempt).await {
        Ok(r) => r.map_err(|e| format!("{} {addr}{}: {e}", h.method.as_str(), h.path)),
        Err(_) => Err(format!("{} {addr}{}: no answer within {}s", h.method.as_str(), h.path, HTTP_TIMEOUT.as_secs())),
    }
}

fn io_cause(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused (the app is not listening yet)".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

fn hyper_cause(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        "connection closed before the answer".into()
    } else {
        format!("HTTP: {e}")
    }
}

/// Signals the main process of every target container: each process under `proc` whose
/// environment carries [`SIGNAL_TARGET_ENV`] and whose parent's does not (the topmost one; in
/// the pod its parent is outside the shared namespace, or the pause process). Returns how many
/// were signalled; none found is an error (the app is not up yet, retried).
pub fn signal_targets(proc: &std::path::Path, signal: Signal) -> Result<usize, String> {
    let sig = rustix::process::Signal::from_named_raw(signal.number())
        .ok_or_else(|| format!("SIG{} is not a signal on this system", signal.as_str()))?;
    let own = std::process::id();
    let entries = std::fs::read_dir(proc).map_err(|e| format!("cannot list {}: {e}", proc.display()))?;
    let mut carries: HashMap<u32, bool> = HashMap::new();
    let mut check = |pid: u32| *carries.entry(pid).or_insert_with(|| carries_target(proc, pid));
    let pids: Vec<u32> = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    let (mut sent, mut errors) = (0usize, Vec::new());
    for pid in pids {
        if pid == own || !check(pid) {
            continue;
        }
        if parent(proc, pid).is_some_and(|ppid| ppid != 0 && check(ppid)) {
            continue;
        }
        let Some(target) = rustix::process::Pid::from_raw(pid as i32) else { continue };
        match rustix::process::kill_process(target, sig) {
            Ok(()) => sent += 1,
            // Exited between the scan and the signal.
            Err(rustix::io::Errno::SRCH) => {}
            Err(e) => errors.push(format!("pid {pid}: {e}")),
        }
    }
    match (sent, errors.is_empty()) {
        (0, true) => {
            Err(format!("no process carries {SIGNAL_TARGET_ENV} yet (the app is not up, or runs as another user)"))
        }
        (0, false) => Err(format!("cannot signal: {}", errors.join("; "))),
        (n, _) => Ok(n),
    }
}

/// Whether `pid`'s environment carries the target variable. Unreadable (another user, gone,
/// outside the namespace) counts as no.
fn carries_target(proc: &std::path::Path, pid: u32) -> bool {
    let Ok(env) = std::fs::read(proc.join(pid.to_string()).join("environ")) else { return false };
    let prefix = [SIGNAL_TARGET_ENV.as_bytes(), b"="].concat();
    env.split(|b| *b == 0).any(|var| var.starts_with(&prefix))
}

/// The parent pid from `/proc/<pid>/stat` (the field after the parenthesised command name,
/// which may itself contain spaces and parentheses).
fn parent(proc: &std::path::Path, pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::on_change::{LoopbackHost, Method};

    #[test]
    fn parent_pid_survives_odd_command_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("42")).unwrap();
        std::fs::write(dir.path().join("42/stat"), "42 (a) b (c) S 7 42 42 0 -1").unwrap();
        assert_eq!(parent(dir.path(), 42), Some(7));
        assert_eq!(parent(dir.path(), 43), None);
    }

    #[test]
    fn the_target_variable_must_be_a_whole_name() {
        let dir = tempfile::tempdir().unwrap();
        for (pid, env) in [(1, "A=1\0SECRETMODE_SIGNAL_TARGET=app\0"), (2, "SECRETMODE_SIGNAL_TARGETX=app\0")] {
            std::fs::create_dir(dir.path().join(pid.to_string())).unwrap();
            std::fs::write(dir.path().join(format!("{pid}/environ")), env).unwrap();
        }
        assert!(carries_target(dir.path(), 1));
        assert!(!carries_target(dir.path(), 2));
        assert!(!carries_target(dir.path(), 3));
    }

    #[test]
    fn records_render_without_values_and_count_by_result() {
        let action = OnChange::Http(HttpAction {
            method: Method::Post,
            host: LoopbackHost::V4,
            port: 9,
            path: "/-/reload".into(),
        });
        let r = Record::new(action);
        assert_eq!(r.to_json(), Value::Null);
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        r.set(Last { at, result: Outcome::Retrying, attempts: 1, error: Some("connection refused".into()) });
        r.set(Last { at, result: Outcome::Success, attempts: 2, error: None });
        let j = r.to_json();
        assert_eq!(j["action"], "POST http://127.0.0.1:9/-/reload");
        assert_eq!(j["result"], "success");
        assert_eq!(j["attempts"], 2);
        let mut reg = Registry::with_prefix("t");
        r.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("t_notifications_total{result=\"success\"} 1"), "{out}");
        assert!(out.contains("t_notification_attempts_total{result=\"failure\"} 1"), "{out}");
        assert!(out.contains("t_notification_pending 0"), "{out}");
    }

    /// Paused time: a burst folds into one attempt after the quiet period; a refused
    /// connection is retried; a change during the retries supersedes.
    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_notification_and_a_refusal_is_retried() {
        // A port with nothing listening (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let action =
            OnChange::Http(HttpAction { method: Method::Post, host: LoopbackHost::V4, port, path: "/r".into() });
        let record = Arc::new(Record::new(action));
        let n = Notifier::spawn(record.clone(), || {});
        for _ in 0..5 {
            n.changed();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(record.last(), None, "nothing before the quiet period");
        tokio::time::sleep(DEBOUNCE).await;
        // Connecting is real I/O: let it finish.
        for _ in 0..200 {
            if record.last().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let last = record.last().expect("an attempt after the quiet period");
        assert_eq!(last.result, Outcome::Retrying);
        assert!(last.error.as_deref().unwrap_or("").contains("connection refused"), "{last:?}");
        n.changed();
        for _ in 0..200 {
            if record.last().is_some_and(|l| l.result == Outcome::Superseded) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(record.last().map(|l| l.result), Some(Outcome::Superseded));
    }
}
