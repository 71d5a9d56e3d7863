//! The refresh loop shared by `--once` (init) and the sidecar.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::backoff::Backoff;
use super::fallback;
use super::providers::{ErrorKind, FetchError, Provider};
use super::status::Status;
use super::writer::{self, WriteError};
use crate::agent_spec::AgentSpec;
use crate::log_format::Printable;

#[derive(Debug, Error)]
pub enum RefreshError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("no answer before the start deadline ({0}s)")]
    Deadline(u64),
}

impl RefreshError {
    /// Whether this looks like an outage (seed from the fallback) rather than a mistake
    /// (wrong path, denied role, malformed entry), which a fallback would only hide.
    fn is_outage(&self) -> bool {
        match self {
            RefreshError::Fetch(e) => e.kind == ErrorKind::Unreachable,
            RefreshError::Deadline(_) => true,
            RefreshError::Write(_) => false,
        }
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
}

/// How the start-up phase ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Started {
    Synced,
    Fallback,
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
        Agent { spec, mount, token_file, fallback_dir, status, provider: None, last_files: None, once }
    }

    fn describe_provider(&self) -> String {
        let kind = self.spec.provider.kind();
        let at = match &self.spec.provider {
            crate::config::ProviderConfig::Vault(v) => v.address.clone(),
            crate::config::ProviderConfig::Aws(a) => {
                a.endpoint.clone().unwrap_or_else(|| format!("region {}", a.region))
            }
        };
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

    /// One refresh: fetch every item, write the set if it changed. Nothing on disk changes
    /// unless every item was fetched and valid.
    async fn refresh(&mut self) -> Result<bool, RefreshError> {
        if self.provider.is_none() {
            let p = Provider::new(&self.spec.provider, self.token_file.clone(), self.status.metrics.requests.clone())
                .await?;
            self.provider = Some(p);
        }
        let Some(provider) = self.provider.as_mut() else { return Ok(false) };
        let fetched = provider.fetch(&self.spec.items).await?;
        let changed = self.last_files.as_ref() != Some(&fetched.files) || !writer::has_data(&self.mount);
        if changed {
            writer::write_set(&self.mount, &fetched.files)?;
            self.last_files = Some(fetched.files);
        }
        self.status.record_success(fetched.versions);
        Ok(changed)
    }

    fn write_status(&self) {
        let json = self.status.to_json();
        let bytes = serde_json::to_vec_pretty(&json).unwrap_or_default();
        if let Err(e) = writer::write_status(&self.mount, &bytes) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
    }

    fn fail(&self, e: &RefreshError) {
        let error = e.to_string();
        self.status.record_failure(error.clone());
        self.write_status();
        // Provider answers are quoted in errors: escaped, they cannot split the log line.
        if self.once {
            tracing::debug!(error = %Printable(&error), "attempt failed; retrying");
        } else {
            tracing::warn!(error = %Printable(&error), state = self.status.state().as_str(), "refresh failed; keeping the last good files");
        }
    }

    /// First sync, retried with backoff until the start deadline; then the fallback if the
    /// provider looked down. The error is the one line `--once` prints.
    pub async fn start(&mut self) -> Result<Started, String> {
        let started = Instant::now();
        let deadline_secs = self.spec.start_deadline_seconds.max(1);
        let deadline = started + Duration::from_secs(deadline_secs);
        let cap = (Duration::from_secs(deadline_secs) / 4).clamp(Duration::from_millis(500), Duration::from_secs(5));
        let mut backoff = Backoff::new(Duration::from_millis(500), cap);
        self.write_status();
        let last = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = match tokio::time::timeout(remaining, self.refresh()).await {
                Ok(r) => r,
                Err(_) => Err(RefreshError::Deadline(deadline_secs)),
            };
            match result {
                Ok(_) => {
                    self.write_status();
                    tracing::info!(
                        items = self.spec.items.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "secrets written"
                    );
                    return Ok(Started::Synced);
                }
                Err(e) => {
                    self.fail(&e);
                    let delay = backoff.next_delay();
                    if Instant::now() + delay >= deadline {
                        break e;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        };
        let attempts = backoff.attempts();
        let mut line = format!(
            "{}: {last} (after {attempts} attempts in {:.1}s)",
            self.describe_provider(),
            started.elapsed().as_secs_f64()
        );
        match &self.fallback_dir {
            Some(dir) if last.is_outage() => match fallback::load(dir, &self.spec.items) {
                Ok(files) => match writer::write_set(&self.mount, &files) {
                    Ok(()) => {
                        self.status.record_fallback();
                        self.write_status();
                        tracing::warn!(cause = %Printable(&line), "provider unreachable: started from the fallback Secret (state fallback); still trying the provider");
                        return Ok(Started::Fallback);
                    }
                    Err(e) => line.push_str(&format!("; fallback not usable: {e}")),
                },
                Err(why) => line.push_str(&format!("; fallback not usable: {why}")),
            },
            Some(_) => line.push_str("; fallback not used: the provider answered, this is not an outage"),
            None => {}
        }
        Err(line)
    }

    async fn refresh_now(&mut self) -> bool {
        match self.refresh().await {
            Ok(_) => {
                self.write_status();
                true
            }
            Err(e) => {
                self.fail(&e);
                false
            }
        }
    }

    /// The sidecar's endless loop: refresh every interval; on failure keep the files and
    /// retry with backoff capped at the interval. Returns only on SIGTERM/SIGINT.
    pub async fn refresh_forever(&mut self, mut synced: bool) {
        let interval = Duration::from_secs(self.spec.refresh_interval_seconds.max(1));
        // Capped at two intervals with the floor at half of one: full jitter then averages about
        // one interval, so a long outage never raises the provider request rate above the
        // steady refresh rate (measured by bench/agent_load.py); early retries still come sooner.
        let floor = (interval / 2).clamp(Duration::from_millis(250), Duration::from_secs(5));
        let mut backoff = Backoff::new(floor, interval.saturating_mul(2));
        let mut stop = std::pin::pin!(shutdown());
        let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        // Pods of one rollout sync within the same second; without spreading their first
        // refresh over half an interval they would hit the provider together every interval.
        let mut spread_first = synced;
        loop {
            let wait = if synced && spread_first {
                spread_first = false;
                interval - Duration::from_millis(fastrand::u64(0..=millis / 2))
            } else if synced {
                // Up to 10% early, never late: keeps the "rotation visible within one
                // interval" promise while the phases drift further apart.
                interval - Duration::from_millis(fastrand::u64(0..=millis / 10))
            } else {
                backoff.next_delay()
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stop => {
                    tracing::info!("shutting down");
                    return;
                }
            }
            match self.refresh().await {
                Ok(changed) => {
                    if changed {
                        tracing::info!(items = self.spec.items.len(), "new secret versions written");
                    }
                    if !synced || backoff.attempts() > 0 {
                        tracing::info!("provider answering again; state fresh");
                    }
                    synced = true;
                    backoff.reset();
                    self.write_status();
                }
                Err(e) => {
                    synced = false;
                    self.fail(&e);
                }
            }
        }
    }
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

impl Agent {
    /// A restarted sidecar finds its previous files in the pod's volume: adopt them if every
    /// item is there, so `/startup` passes at once and the app keeps its last good values
    /// even if the provider is down right now.
    fn adopt_previous(&mut self) -> bool {
        if !writer::has_data(&self.mount) || !self.spec.items.iter().all(|i| self.mount.join(&i.name).is_file()) {
            return false;
        }
        let previous = std::fs::read(writer::status_path(&self.mount))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .unwrap_or_default();
        self.status.record_adopted(&previous);
        self.write_status();
        tracing::info!(state = self.status.state().as_str(), "restarted: serving the files from the previous run");
        true
    }
}

/// Runs the sidecar: health server, start-up, then refresh forever.
pub async fn sidecar(mut agent: Agent, health: SocketAddr) -> anyhow::Result<()> {
    let addr = super::health::serve(health, agent.status.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {health} for health and metrics: {e}"))?;
    tracing::info!(%addr, provider = %agent.spec.provider_name, items = agent.spec.items.len(), "sidecar started");
    if agent.adopt_previous() {
        // Refresh right away rather than after a full interval.
        let ok = agent.refresh_now().await;
        agent.refresh_forever(ok).await;
        return Ok(());
    }
    let synced = match agent.start().await {
        Ok(Started::Synced) => true,
        Ok(Started::Fallback) => false,
        Err(line) => {
            // Never exit: the startup probe keeps the app waiting and the kubelet decides.
            tracing::error!("{line}; still trying");
            false
        }
    };
    agent.refresh_forever(synced).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_spec::{AgentItem, SPEC_VERSION};
    use crate::config::{ProviderConfig, VaultAuth, VaultProvider};
    use crate::log_format::{tests::logged, Layout};

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
