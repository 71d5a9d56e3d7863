//! What the agent knows about its own freshness: one shared record behind the status file,
//! the health endpoints and the metrics, so the three always agree. It holds references and
//! versions only, never a value.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use super::notify::Record;
use super::spec::AgentSpec;
use super::writer::{self, WriteError};
use crate::providers::{Credentials, ItemVersion, Report};
use crate::vocabulary::time::{parse_rfc3339, rfc3339};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No files yet and no attempt has failed.
    Starting,
    /// Files from the provider, younger than max-staleness, last attempt succeeded.
    Fresh,
    /// The last attempt failed; files (if any) are still within max-staleness.
    Failing,
    /// No success for longer than max-staleness.
    Stale,
    /// Files seeded from the fallback Secret; the provider has not answered yet.
    Fallback,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Fresh => "fresh",
            State::Failing => "failing",
            State::Stale => "stale",
            State::Fallback => "fallback",
        }
    }
    pub const ALL: [State; 5] = [State::Starting, State::Fresh, State::Failing, State::Stale, State::Fallback];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Provider,
    Fallback,
}

#[derive(Debug)]
struct Inner {
    source: Option<Source>,
    last_success: Option<SystemTime>,
    seeded_at: Option<SystemTime>,
    last_attempt: Option<SystemTime>,
    last_error: Option<String>,
    last_error_kind: Option<&'static str>,
    consecutive_failures: u64,
    versions: Vec<ItemVersion>,
    credentials: Option<Credentials>,
}

/// Prometheus metrics; `requests` is handed to the provider client, which counts every
/// request it sends.
#[derive(Debug, Default)]
pub struct Metrics {
    pub refreshes: Family<Vec<(String, String)>, Counter>,
    pub requests: Counter,
    probes: Family<Vec<(String, String)>, Counter>,
    cache_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    state: Family<Vec<(String, String)>, Gauge>,
    credentials_expiry: Gauge<f64, std::sync::atomic::AtomicU64>,
    credentials_expiring: Gauge,
    /// The pod's max-staleness, so dashboards can show the cache age against the budget.
    max_staleness: Gauge,
    /// Refreshes whose rendering failed, by rendered file (registered when the spec has any).
    render_failures: Family<Vec<(String, String)>, Counter>,
}

#[derive(Debug)]
pub struct Status {
    spec_items: Vec<(String, String, Option<String>)>,
    /// Names of the rendered files (`AgentSpec::render`).
    rendered: Vec<String>,
    provider_name: String,
    provider_kind: &'static str,
    max_staleness: Duration,
    inner: Mutex<Inner>,
    pub metrics: Metrics,
    /// Woken on every change, so the status clock recomputes when the next state change is due.
    pub changed: tokio::sync::Notify,
    /// One writer of status.json at a time (the loop, the status clock, the notifier).
    file: Mutex<()>,
    /// What the `on-change` notifier did, when the spec declares one.
    pub notify: Option<std::sync::Arc<Record>>,
}

impl Status {
    pub fn new(spec: &AgentSpec) -> Status {
        Status {
            spec_items: spec.items.iter().map(|i| (i.name.clone(), i.path.clone(), i.key.clone())).collect(),
            rendered: spec.render.iter().map(|f| f.name.clone()).collect(),
            provider_name: spec.provider_name.clone(),
            provider_kind: spec.provider.kind(),
            max_staleness: Duration::from_secs(spec.max_staleness_seconds),
            inner: Mutex::new(Inner {
                source: None,
                last_success: None,
                seeded_at: None,
                last_attempt: None,
                last_error: None,
                last_error_kind: None,
                consecutive_failures: 0,
                versions: Vec::new(),
                credentials: None,
            }),
            metrics: Metrics::default(),
            changed: tokio::sync::Notify::new(),
            file: Mutex::new(()),
            notify: spec.on_change.clone().map(|a| std::sync::Arc::new(Record::new(a))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the health endpoints down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record_success(&self, versions: Vec<ItemVersion>) {
        let now = SystemTime::now();
        let mut i = self.lock();
        i.source = Some(Source::Provider);
        i.last_success = Some(now);
        i.last_attempt = Some(now);
        i.last_error = None;
        i.last_error_kind = None;
        i.consecutive_failures = 0;
        i.versions = versions;
        drop(i);
        self.count("success");
        self.changed.notify_one();
    }

    /// A failed refresh, or (`probe`) a failed probe while the provider is down. `message`
    /// must already be free of values (provider errors are built that way); `kind` is the
    /// error kind's name.
    pub fn record_failure(&self, message: String, kind: &'static str, probe: bool) {
        let mut i = self.lock();
        i.last_attempt = Some(SystemTime::now());
        i.last_error = Some(message);
        i.last_error_kind = Some(kind);
        i.consecutive_failures = i.consecutive_failures.saturating_add(1);
        drop(i);
        if probe {
            self.count_probe("down");
        } else {
            self.count("failure");
        }
        self.changed.notify_one();
    }

    /// A rendered file failed (the refresh then fails with [`Status::record_failure`]).
    pub fn record_render_failure(&self, file: &str) {
        self.metrics.render_failures.get_or_create(&vec![("file".to_string(), file.to_string())]).inc();
    }

    /// A probe found the provider answering again (a refresh follows).
    pub fn record_probe_up(&self) {
        self.count_probe("up");
    }

    fn count_probe(&self, outcome: &str) {
        self.metrics.probes.get_or_create(&vec![("outcome".to_string(), outcome.to_string())]).inc();
    }

    /// Records what is known about the credentials; true if it changed.
    pub fn record_credentials(&self, c: Credentials) -> bool {
        let mut i = self.lock();
        let changed = i.credentials.as_ref() != Some(&c);
        i.credentials = Some(c);
        drop(i);
        if changed {
            self.changed.notify_one();
        }
        changed
    }

    pub fn credentials(&self) -> Option<Credentials> {
        self.lock().credentials.clone()
    }

    /// How long until the state changes by itself (fresh or failing turning stale), if it will.
    pub fn next_transition(&self) -> Option<Duration> {
        let i = self.lock();
        if i.source != Some(Source::Provider) {
            return None;
        }
        let stale_at = i.last_success? + self.max_staleness;
        stale_at.duration_since(SystemTime::now()).ok()
    }

    /// Writes status.json (never a value) from the current record.
    pub fn write_file(&self, mount: &Path) -> Result<(), WriteError> {
        let _one = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = serde_json::to_vec_pretty(&self.to_json()).unwrap_or_default();
        writer::write_status(mount, &bytes)
    }

    pub fn record_fallback(&self) {
        let now = SystemTime::now();
        let mut i = self.lock();
        i.source = Some(Source::Fallback);
        i.seeded_at = Some(now);
        i.versions = self.spec_items.iter().map(|(n, _, _)| ItemVersion { name: n.clone(), version: None }).collect();
        drop(i);
        self.count("fallback");
        self.changed.notify_one();
    }

    fn count(&self, outcome: &str) {
        self.metrics.refreshes.get_or_create(&vec![("outcome".to_string(), outcome.to_string())]).inc();
    }

    /// Takes over files a previous run of this sidecar left in the pod's volume (a restarted
    /// container; the emptyDir outlives it), with the freshness that run recorded, so a restart
    /// during an outage keeps serving and does not wait on the provider.
    pub fn record_adopted(&self, previous: &Value) {
        let mut i = self.lock();
        let parse = |k: &str| previous[k].as_str().and_then(parse_rfc3339);
        if previous["source"] == "fallback" {
            i.source = Some(Source::Fallback);
            i.seeded_at = parse("seededFromFallbackAt").or(Some(SystemTime::now()));
        } else {
            i.source = Some(Source::Provider);
            // Unknown age counts as old: better reported stale than falsely fresh.
            i.last_success = parse("lastSuccess").or(Some(SystemTime::UNIX_EPOCH));
        }
        i.versions = previous["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|it| {
                        Some(ItemVersion {
                            name: it["name"].as_str()?.to_string(),
                            version: it["version"].as_str().map(String::from),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
    }

    pub fn has_data(&self) -> bool {
        self.lock().source.is_some()
    }

    pub fn state(&self) -> State {
        let i = self.lock();
        Self::state_of(&i, self.max_staleness, SystemTime::now())
    }

    fn state_of(i: &Inner, max_staleness: Duration, now: SystemTime) -> State {
        match i.source {
            None if i.last_error.is_some() => State::Failing,
            None => State::Starting,
            Some(Source::Fallback) => State::Fallback,
            Some(Source::Provider) => {
                let age = i.last_success.and_then(|t| now.duration_since(t).ok()).unwrap_or_default();
                if age > max_staleness {
                    State::Stale
                } else if i.last_error.is_some() {
                    State::Failing
                } else {
                    State::Fresh
                }
            }
        }
    }

    /// Age of the files on disk: since the last provider success, else since the fallback seed.
    pub fn cache_age(&self) -> Option<Duration> {
        let i = self.lock();
        let since = match i.source? {
            Source::Provider => i.last_success?,
            Source::Fallback => i.seeded_at?,
        };
        Some(SystemTime::now().duration_since(since).unwrap_or_default())
    }

    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// The status file's content.
    pub fn to_json(&self) -> Value {
        let now = SystemTime::now();
        let i = self.lock();
        let state = Self::state_of(&i, self.max_staleness, now);
        let items: Vec<Value> = self
            .spec_items
            .iter()
            .map(|(name, path, key)| {
                let version = i.versions.iter().find(|v| &v.name == name).and_then(|v| v.version.clone());
                json!({"name": name, "path": path, "key": key, "version": version})
            })
            .collect();
        let mut out = json!({
            "provider": self.provider_name,
            "providerType": self.provider_kind,
            "state": state.as_str(),
            "source": i.source.map(|s| match s { Source::Provider => "provider", Source::Fallback => "fallback" }),
            "lastSuccess": i.last_success.map(rfc3339),
            "lastAttempt": i.last_attempt.map(rfc3339),
            "seededFromFallbackAt": i.seeded_at.map(rfc3339),
            "lastError": i.last_error,
            "lastErrorKind": i.last_error_kind,
            "consecutiveFailures": i.consecutive_failures,
            "maxStalenessSeconds": self.max_staleness.as_secs(),
            "credentials": i.credentials.as_ref().map(|c| json!({
                "method": c.method,
                "expiresAt": c.expires_at.map(rfc3339),
                "renewable": c.renewable,
                "expiring": c.expiring,
            })),
            "items": items,
            "onChange": self.notify.as_ref().map(|n| n.action().to_string()),
            "lastNotification": self.notify.as_ref().map(|n| n.to_json()),
        });
        if let (false, Some(map)) = (self.rendered.is_empty(), out.as_object_mut()) {
            map.insert("rendered".into(), json!(self.rendered));
        }
        out
    }

    /// Prometheus text exposition; gauges are computed at scrape time so they are never stale.
    pub fn render_metrics(&self) -> String {
        let state = self.state();
        let (last_success, credentials) = {
            let i = self.lock();
            (i.last_success, i.credentials.clone())
        };
        let expiry = credentials
            .as_ref()
            .and_then(|c| c.expires_at)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        self.metrics.credentials_expiry.set(expiry.unwrap_or(0.0));
        self.metrics.credentials_expiring.set(i64::from(credentials.is_some_and(|c| c.expiring)));
        let age_secs = self.cache_age().map(|d| d.as_secs_f64()).unwrap_or(-1.0);
        self.metrics.cache_age.set(age_secs);
        self.metrics.max_staleness.set(i64::try_from(self.max_staleness.as_secs()).unwrap_or(i64::MAX));
        let last_ts = last_success.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64());
        self.metrics.last_success.set(last_ts.unwrap_or(0.0));
        for s in State::ALL {
            let v = i64::from(s == state);
            self.metrics.state.get_or_create(&vec![("state".to_string(), s.as_str().to_string())]).set(v);
        }
        let mut registry = Registry::with_prefix("secretmode_agent");
        let labels = [
            ("provider".into(), self.provider_name.clone().into()),
            ("provider_type".into(), self.provider_kind.into()),
        ];
        let sub = registry.sub_registry_with_labels(labels.into_iter());
        sub.register(
            "cache_age_seconds",
            "Seconds since the files on disk were fetched (-1: no files yet)",
            self.metrics.cache_age.clone(),
        );
        sub.register(
            "max_staleness_seconds",
            "The pod's max-staleness: past this age without a successful refresh the state is stale",
            self.metrics.max_staleness.clone(),
        );
        sub.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful refresh from the provider (0: never)",
            self.metrics.last_success.clone(),
        );
        sub.register(
            "refreshes",
            "Refresh attempts by outcome (success, failure, fallback)",
            self.metrics.refreshes.clone(),
        );
        sub.register("provider_requests", "HTTP requests sent to the provider", self.metrics.requests.clone());
        sub.register(
            "probes",
            "Cheap requests while the provider is down, by outcome (up, down)",
            self.metrics.probes.clone(),
        );
        sub.register(
            "credentials_expiry_timestamp_seconds",
            "Unix time the provider credentials expire (0: never, or unknown)",
            self.metrics.credentials_expiry.clone(),
        );
        sub.register(
            "credentials_expiring",
            "1 when the credentials will expire and the agent can neither renew nor replace them",
            self.metrics.credentials_expiring.clone(),
        );
        sub.register(
            "state",
            "1 for the current state (starting, fresh, failing, stale, fallback)",
            self.metrics.state.clone(),
        );
        if !self.rendered.is_empty() {
            sub.register(
                "render_failures",
                "Refreshes whose rendering failed, by rendered file (the items were fetched; the previous set is kept)",
                self.metrics.render_failures.clone(),
            );
        }
        if let Some(n) = &self.notify {
            n.register(sub);
        }
        let mut out = String::new();
        if encode(&mut out, &registry).is_err() {
            return String::from("# metrics encoding failed\n");
        }
        out
    }
}

/// The provider clients report through this record ([`Report`]).
impl Report for Status {
    fn request_sent(&self) {
        self.metrics.requests.inc();
    }

    fn record_credentials(&self, credentials: Credentials) {
        Status::record_credentials(self, credentials);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner() -> Inner {
        Inner {
            source: None,
            last_success: None,
            seeded_at: None,
            last_attempt: None,
            last_error: None,
            last_error_kind: None,
            consecutive_failures: 0,
            versions: vec![],
            credentials: None,
        }
    }

    #[test]
    fn state_machine() {
        let now = SystemTime::now();
        let max = Duration::from_secs(10);
        let mut i = inner();
        assert_eq!(Status::state_of(&i, max, now), State::Starting);
        i.last_error = Some("x".into());
        assert_eq!(Status::state_of(&i, max, now), State::Failing);
        i.source = Some(Source::Fallback);
        assert_eq!(Status::state_of(&i, max, now), State::Fallback);
        i.source = Some(Source::Provider);
        i.last_success = Some(now - Duration::from_secs(5));
        assert_eq!(Status::state_of(&i, max, now), State::Failing);
        i.last_success = Some(now - Duration::from_secs(11));
        assert_eq!(Status::state_of(&i, max, now), State::Stale);
        i.last_error = None;
        i.last_success = Some(now);
        assert_eq!(Status::state_of(&i, max, now), State::Fresh);
    }
}
