//! The refresh loop shared by `--once` (init) and the sidecar.
//!
//! Start-up retries outages until the start deadline and stops at the first refusal (a typo
//! is reported in seconds, not after the deadline). The sidecar then refreshes every interval;
//! while the provider is down it sends one cheap probe on a short, capped, jittered backoff
//! and refreshes as soon as a probe is answered, so recovery takes seconds while the request
//! rate of a long outage stays flat. Refusals, throttling and bad answers are retried on the
//! slower backoff instead: probing cannot tell when they end. Writes are synchronous, so a
//! SIGTERM (which drops the loop at its next await) never interrupts one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::fallback;
use super::notify::Notifier;
use super::spec::AgentSpec;
use super::status::Status;
use super::writer::{self, WriteError};
use crate::logging::printable::Printable;
use crate::providers::backoff::Backoff;
use crate::providers::{Budget, ErrorKind, FetchError, Provider};
use crate::render::{render_all, RenderError};
use crate::vocabulary::duration;
use crate::vocabulary::time::rfc3339;

/// Recovery backoff while the provider is down: first probe after 1 s, bound doubling to
/// 5 s, full jitter. One agent sends at most one probe a second, about one per 3 s on
/// average, however long the outage lasts.
pub const PROBE_FLOOR: Duration = Duration::from_secs(1);
pub const PROBE_CAP: Duration = Duration::from_secs(5);
/// Longest wait between direct refreshes while the provider's probe answers but its reads fail.
pub const PARTIAL_CAP: Duration = Duration::from_secs(30);
/// Start-up does not begin another attempt with less than this left before the deadline.
pub const MIN_ATTEMPT: Duration = Duration::from_secs(1);
/// Longest window one periodic refresh spreads its item reads over.
pub const MAX_SPREAD: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The items were fetched but a rendered file could not be made from them (names the file
    /// and the item, never a value).
    #[error(transparent)]
    Render(#[from] RenderError),
}

impl RefreshError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RefreshError::Fetch(e) => e.kind,
            RefreshError::Write(_) | RefreshError::Render(_) => ErrorKind::Config,
        }
    }

    /// The `lastErrorKind` of the status file: the error kind, or `render`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            RefreshError::Render(_) => "render",
            e => e.kind().as_str(),
        }
    }

    /// An outage allows the fallback; a refusal (wrong path, denied role, malformed entry)
    /// would only be hidden by it.
    pub fn is_outage(&self) -> bool {
        self.kind().is_outage()
    }
}

/// Everything the loop needs, with paths already resolved against `--root`.
pub struct Agent {
    pub spec: AgentSpec,
    pub mount: PathBuf,
    pub token_file: Option<PathBuf>,
    pub fallback_dir: Option<PathBuf>,
    pub status: Arc<Status>,
    provider: Option<Provider>,
    last_files: Option<BTreeMap<String, Vec<u8>>>,
    once: bool,
    /// Fires `on_change` after each new generation that replaces one (sidecar only).
    notifier: Option<Notifier>,
}

/// How the start-up phase ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    Synced,
    /// Seeded from the fallback Secret; the line says why (provider, path, cause).
    Fallback(String, ErrorKind),
}

/// A start-up that neither synced nor fell back: the one line, and what the last error was.
#[derive(Debug)]
pub struct Failed {
    pub line: String,
    pub kind: ErrorKind,
}

impl Agent {
    pub fn new(
        spec: AgentSpec,
        mount: PathBuf,
        token_file: Option<PathBuf>,
        fallback_dir: Option<PathBuf>,
        once: bool,
    ) -> Agent {
        let status = Arc::new(Status::new(&spec));
        Agent { spec, mount, token_file, fallback_dir, status, provider: None, last_files: None, once, notifier: None }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(self.spec.refresh_interval_seconds.max(1))
    }

    fn describe_provider(&self) -> String {
        let kind = self.spec.provider.kind();
        let at = self.spec.provider.location();
        let mut paths: Vec<String> = self
            .spec
            .items
            .iter()
            .take(3)
            .map(|i| match &i.key {
                Some(k) => format!("{}#{k}", i.path),
                None => i.path.clone(),
            })
            .collect();
        if self.spec.items.len() > 3 {
            paths.push(format!("and {} more", self.spec.items.len() - 3));
        }
        format!("provider {} ({kind} at {at}) fetching {}", self.spec.provider_name, paths.join(", "))
    }

    async fn provider(&mut self) -> Result<&mut Provider, FetchError> {
        if self.provider.is_none() {
            let p = Provider::new(&self.spec.provider, self.token_file.clone(), self.status.clone(), self.interval())
                .await?;
            self.provider = Some(p);
        }
        match self.provider.as_mut() {
            Some(p) => Ok(p),
            None => Err(FetchError::new(ErrorKind::Config, "provider", "not initialised")),
        }
    }

    /// The set one generation writes: the items plus the files rendered from them, so both
    /// switch in the same `..data` swap. A render error fails the whole set.
    fn with_rendered(&self, mut files: BTreeMap<String, Vec<u8>>) -> Result<BTreeMap<String, Vec<u8>>, RenderError> {
        if !self.spec.render.is_empty() {
            let rendered = render_all(&self.spec.render, &files)?;
            files.extend(rendered);
        }
        Ok(files)
    }

    /// One refresh: fetch every item, render, write the set if it changed. Nothing on disk
    /// changes unless every item was fetched and valid and every file rendered. A new set that
    /// replaces one the app may have read fires `on_change`; the first set never does (the app
    /// reads it at start).
    async fn refresh(&mut self, budget: Budget) -> Result<bool, RefreshError> {
        let items = self.spec.items.clone();
        let fetched = self.provider().await?.fetch(&items, budget).await?;
        let files = self.with_rendered(fetched.files).inspect_err(|e| self.status.record_render_failure(&e.file))?;
        let replaces = writer::has_data(&self.mount);
        let changed = self.last_files.as_ref() != Some(&files) || !replaces;
        if changed {
            writer::write_set(&self.mount, &files)?;
            self.last_files = Some(files);
            if let (true, Some(n)) = (replaces, &self.notifier) {
                n.changed();
            }
        }
        self.status.record_success(fetched.versions);
        Ok(changed)
    }

    fn write_status(&self) {
        if let Err(e) = self.status.write_file(&self.mount) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
    }

    fn fail(&self, e: &RefreshError) {
        let error = e.to_string();
        self.status.record_failure(error.clone(), e.kind_name(), false);
        self.write_status();
        let class = if e.is_outage() { "outage" } else { "refusal" };
        // Provider answers are quoted in errors: escaped, they cannot split the log line.
        if self.once {
            tracing::debug!(error = %Printable(&error), class, "attempt failed");
        } else {
            tracing::warn!(error = %Printable(&error), class, state = self.status.state().as_str(), "refresh failed; keeping the last good files");
        }
    }

    /// First sync: outages retried with backoff until the start deadline, a refusal not
    /// retried; then the fallback if the provider was down. The error is the one line
    /// `--once` prints: provider, the failing path and its cause.
    pub async fn start(&mut self) -> Result<Started, Failed> {
        let started = Instant::now();
        let deadline_secs = self.spec.start_deadline_seconds.max(1);
        let deadline = started + Duration::from_secs(deadline_secs);
        let cap = (Duration::from_secs(deadline_secs) / 4).clamp(Duration::from_millis(500), Duration::from_secs(5));
        let mut backoff = Backoff::new(Duration::from_millis(500), cap);
        let mut attempts = 0u32;
        self.write_status();
        let last = loop {
            attempts += 1;
            let budget = Budget { deadline: Some(deadline), spread: Duration::ZERO };
            match self.refresh(budget).await {
                Ok(_) => {
                    self.write_status();
                    tracing::info!(
                        items = self.spec.items.len(),
                        elapsed = %duration::format_ms(started.elapsed()),
                        "secrets written"
                    );
                    return Ok(Started::Synced);
                }
                Err(e) => {
                    self.fail(&e);
                    if !e.is_outage() {
                        break e;
                    }
                    // An attempt needs time to finish: one cut short by the deadline would only
                    // replace the real cause with "timed out".
                    let delay = backoff.next_delay();
                    if Instant::now() + delay + MIN_ATTEMPT >= deadline {
                        break e;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        };
        let plural = if attempts == 1 { "" } else { "s" };
        let how = if last.is_outage() {
            format!("after {attempts} attempt{plural} in {}", duration::format_ms(started.elapsed()))
        } else {
            format!("a refusal, not retried; {attempts} attempt{plural} in {}", duration::format_ms(started.elapsed()))
        };
        let mut line = format!("{}: {last} ({how})", self.describe_provider());
        match &self.fallback_dir {
            Some(dir) if last.is_outage() => match fallback::load(dir, &self.spec.items)
                .and_then(|files| self.with_rendered(files).map_err(|e| e.to_string()))
            {
                Ok(files) => match writer::write_set(&self.mount, &files) {
                    Ok(()) => {
                        // Live values equal to the fallback's are no change for the app.
                        self.last_files = Some(files);
                        self.status.record_fallback();
                        self.write_status();
                        return Ok(Started::Fallback(line, last.kind()));
                    }
                    Err(e) => line.push_str(&format!("; fallback not usable: {e}")),
                },
                Err(why) => line.push_str(&format!("; fallback not usable: {why}")),
            },
            Some(_) if matches!(last, RefreshError::Render(_)) => {
                line.push_str("; fallback not used: the provider answered, its values do not render")
            }
            Some(_) => line.push_str(&format!(
                "; fallback not used: {} is the provider's answer, not an outage",
                last.kind().as_str()
            )),
            None => {}
        }
        Err(Failed { line, kind: last.kind() })
    }

    /// The sidecar's endless loop (dropped on SIGTERM). `last` is the error that ended the
    /// start-up, `None` if it synced.
    pub async fn refresh_forever(&mut self, last: Option<ErrorKind>) {
        let interval = self.interval();
        // Refusals and throttling: capped at two intervals with the floor at half of one, so
        // the delays average about one interval and never raise the request rate above the
        // steady refresh rate.
        let floor = (interval / 2).clamp(Duration::from_millis(250), Duration::from_secs(5));
        let mut slow = Backoff::new(floor, interval.saturating_mul(2));
        let mut quick = Backoff::new(PROBE_FLOOR, PROBE_CAP);
        // Reads failing while the probe says the provider is up (its health endpoint answers,
        // its reads do not): probing cannot tell when that ends, so refresh directly, capped
        // at the interval or 30 s.
        let mut partial = Backoff::new(PROBE_FLOOR, interval.clamp(PROBE_CAP, PARTIAL_CAP));
        let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let spread = (interval / 10).min(MAX_SPREAD);
        let mut probe_first = last.is_some_and(ErrorKind::is_down);
        let mut synced = last.is_none();
        let mut last_probe_error = String::new();
        let mut next_at = match last {
            // Pods of one rollout sync within the same second; without spreading their first
            // refresh over half an interval they would hit the provider together every interval.
            None => Instant::now() + interval - Duration::from_millis(fastrand::u64(0..=millis / 2)),
            Some(k) if k.is_down() => Instant::now() + quick.next_delay(),
            Some(_) => Instant::now() + slow.next_delay(),
        };
        loop {
            let maintenance = self.provider.as_ref().and_then(Provider::next_maintenance);
            let wake = maintenance.map_or(next_at, |m| m.min(next_at));
            tokio::time::sleep_until(wake.into()).await;
            if Instant::now() < next_at {
                // Only the credentials are due (a token TTL shorter than the interval).
                if let Some(p) = self.provider.as_mut() {
                    p.maintain().await;
                }
                continue;
            }
            let mut probed = false;
            if probe_first {
                let items = self.spec.items.clone();
                let result = match self.provider().await {
                    Ok(p) => p.probe(&items).await,
                    Err(e) => Err(e),
                };
                match result {
                    Err(e) => {
                        let text = e.to_string();
                        self.status.record_failure(text.clone(), e.kind.as_str(), true);
                        self.write_status();
                        if text != last_probe_error {
                            tracing::warn!(error = %Printable(&text), state = self.status.state().as_str(), "provider still down; probing");
                            last_probe_error = text;
                        }
                        next_at = Instant::now() + quick.next_delay();
                        continue;
                    }
                    Ok(()) => {
                        self.status.record_probe_up();
                        probed = true;
                    }
                }
            }
            // Steady state spreads the reads; a recovery does not wait (the probes' jitter
            // already spreads the pods coming back).
            let spread = if synced { spread } else { Duration::ZERO };
            match self.refresh(Budget { deadline: None, spread }).await {
                Ok(changed) => {
                    if changed {
                        tracing::info!(items = self.spec.items.len(), "new secret versions written");
                    }
                    if probe_first || slow.attempts() > 0 {
                        tracing::info!("provider answering again; state fresh");
                    }
                    probe_first = false;
                    synced = true;
                    last_probe_error.clear();
                    slow.reset();
                    quick.reset();
                    partial.reset();
                    self.write_status();
                    // Up to 10% early, never late: keeps the "rotation visible within one
                    // interval" promise while the phases drift further apart.
                    next_at = Instant::now() + interval - Duration::from_millis(fastrand::u64(0..=millis / 10));
                }
                Err(e) => {
                    self.fail(&e);
                    synced = false;
                    let delay = match (e.kind().is_down(), probed) {
                        (true, false) => quick.next_delay(),
                        (true, true) => partial.next_delay(),
                        (false, _) => slow.next_delay(),
                    };
                    probe_first = e.kind().is_down() && !probed;
                    next_at = Instant::now() + delay;
                }
            }
        }
    }

    /// A restarted sidecar finds its previous files in the pod's volume: adopt them if every
    /// item is there, so `/startup` passes at once and the app keeps its last good values
    /// even if the provider is down right now.
    fn adopt_previous(&mut self) -> bool {
        let names: Vec<&str> = self
            .spec
            .items
            .iter()
            .map(|i| i.name.as_str())
            .chain(self.spec.render.iter().map(|f| f.name.as_str()))
            .collect();
        if !writer::has_data(&self.mount) || !names.iter().all(|n| self.mount.join(n).is_file()) {
            return false;
        }
        let previous = std::fs::read(writer::status_path(&self.mount))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .unwrap_or_default();
        self.status.record_adopted(&previous);
        // What the app may have read: a refresh that finds the same values changes nothing
        // (no new generation, no on-change notification).
        let on_disk: Option<BTreeMap<String, Vec<u8>>> =
            names.iter().map(|n| Some((n.to_string(), std::fs::read(self.mount.join(n)).ok()?))).collect();
        self.last_files = on_disk;
        self.write_status();
        tracing::info!(state = self.status.state().as_str(), "restarted: serving the files from the previous run");
        true
    }

    /// Rewrites status.json when the state changes by itself (fresh or failing turning
    /// stale), so the file, `/readyz` and the metrics agree between refreshes too.
    /// It also reports credentials that will expire without the agent being able to renew or
    /// replace them, once, as soon as that is known.
    async fn status_clock(status: Arc<Status>, mount: PathBuf) {
        let mut written = (status.state(), status.credentials());
        let mut reported_expiry = None;
        loop {
            let wait =
                status.next_transition().map(|d| d + Duration::from_millis(5)).unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = status.changed.notified() => {}
            }
            let now = (status.state(), status.credentials());
            if now != written {
                if let Err(e) = status.write_file(&mount) {
                    tracing::warn!(error = %e, "cannot write the status file");
                }
                if now.0 == super::status::State::Stale && written.0 != now.0 {
                    tracing::warn!("state stale: no successful refresh within max-staleness");
                }
                written = now;
            }
            if let Some(c) = status.credentials().filter(|c| c.expiring) {
                if reported_expiry != Some(c.expires_at) {
                    reported_expiry = Some(c.expires_at);
                    let at = c.expires_at.map(rfc3339).unwrap_or_default();
                    let left = c.expires_at.and_then(|t| t.duration_since(std::time::SystemTime::now()).ok());
                    tracing::warn!(
                        method = c.method,
                        expires_at = %at,
                        left = %duration::format(Duration::from_secs(left.map_or(0, |d| d.as_secs()))),
                        "the provider token expires and cannot be renewed past that: reads will fail then; give the pod a renewable token with a longer max TTL, or use kubernetes auth"
                    );
                }
            }
        }
    }
}

/// Runs the sidecar until `stop` resolves: health server, start-up, then refresh forever.
pub async fn sidecar(
    mut agent: Agent,
    health: SocketAddr,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = super::health::serve(health, agent.status.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {health} for health and metrics: {e}"))?;
    tracing::info!(%addr, provider = %agent.spec.provider_name, items = agent.spec.items.len(), "sidecar started");
    tokio::spawn(Agent::status_clock(agent.status.clone(), agent.mount.clone()));
    if let Some(record) = agent.status.notify.clone() {
        let (status, mount) = (agent.status.clone(), agent.mount.clone());
        agent.notifier = Some(Notifier::spawn(record, move || {
            if let Err(e) = status.write_file(&mount) {
                tracing::warn!(error = %e, "cannot write the status file");
            }
        }));
    }
    let work = async {
        if agent.adopt_previous() {
            // Refresh right away rather than after a full interval.
            let last = match agent.refresh(Budget::default()).await {
                Ok(_) => {
                    agent.write_status();
                    None
                }
                Err(e) => {
                    agent.fail(&e);
                    Some(e.kind())
                }
            };
            agent.refresh_forever(last).await;
            return;
        }
        let last = match agent.start().await {
            Ok(Started::Synced) => None,
            Ok(Started::Fallback(cause, kind)) => {
                tracing::warn!(cause = %Printable(&cause), "provider unreachable: started from the fallback Secret (state fallback); still trying the provider");
                Some(kind)
            }
            Err(failed) => {
                // Never exit: the startup probe keeps the app waiting and the kubelet decides.
                tracing::error!("{}; still trying", Printable(&failed.line));
                Some(failed.kind)
            }
        };
        agent.refresh_forever(last).await;
    };
    tokio::select! {
        _ = work => {}
        _ = stop => tracing::info!("SIGTERM: shutting down"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::spec::SPEC_VERSION;
    use crate::logging::printable::{tests::logged, Layout};
    use crate::providers::vault::{VaultAuth, VaultProvider};
    use crate::providers::{AgentItem, ProviderConfig};

    /// Errors quote what the provider answered; a newline in it stays inside the line.
    #[test]
    fn a_provider_answer_cannot_split_the_agent_log_line() {
        let dir = tempfile::tempdir().unwrap();
        let provider = ProviderConfig::Vault(VaultProvider {
            address: "http://127.0.0.1:1".into(),
            kv_mount: "secret".into(),
            namespace: None,
            ca_pem: None,
            auth: VaultAuth::Jwt { mount: "jwt".into(), role: "web".into(), audience: "vault".into() },
        });
        let spec = AgentSpec {
            version: SPEC_VERSION,
            provider_name: "vault".into(),
            provider,
            items: vec![AgentItem { name: "db".into(), path: "shop/db".into(), key: None }],
            mount_path: "/var/run/secrets-cache".into(),
            token_file: None,
            fallback_dir: None,
            refresh_interval_seconds: 60,
            max_staleness_seconds: 300,
            start_deadline_seconds: 5,
            health_port: 8099,
            on_change: None,
            render: Vec::new(),
        };
        let agent = Agent::new(spec, dir.path().to_path_buf(), None, None, false);
        let answer = "permission denied\n2026-11-23T00:00:00.000000Z  INFO secretmode::agent: forged";
        let e = RefreshError::Fetch(FetchError::new(ErrorKind::Auth, "shop/db", answer));
        for layout in [Layout::Text, Layout::Json] {
            let out = logged(layout, || agent.fail(&e));
            assert_eq!(out.lines().count(), 1, "{layout:?}: {out}");
            assert!(out.contains("permission denied"), "{layout:?}: {out}");
        }
    }
}
