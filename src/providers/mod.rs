//! Secret providers: one file per provider ([`vault`], [`aws`]) holding its section of the
//! webhook config, what the webhook derives from it for a pod, and the agent's client. This
//! file registers them: [`ProviderConfig`] (the config's `type:`) and [`Provider`] (the
//! running client), whose exhaustive matches are the only places that list the providers, so
//! a new provider is one new file plus one variant in each enum, and the crate does not
//! compile until every match handles it. Shared pieces: [`cause`] and [`value`] (reading
//! answers), [`backoff`] (retry delays), and the error and item types below.
//!
//! Providers are defined only in the webhook config and reach the agent inside its spec;
//! nothing here takes an address from an annotation.
//!
//! Every failure is a [`FetchError`] whose [`ErrorKind`] says what it means for the pod: an
//! **outage** (the provider could not be reached, did not finish answering, or answered
//! something that is not its protocol) allows the fallback Secret and is retried on a short
//! backoff; a **refusal** (the provider answered and said no: denied, not found, an entry
//! without the key) fails fast, because retrying or falling back would only hide a mistake.
//! The message names the HTTP status or the I/O cause, never a value.

pub mod aws;
pub mod backoff;
pub mod cause;
pub mod value;
pub mod vault;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::StreamExt;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use aws::AwsProvider;
use vault::VaultProvider;

/// A secret provider the agent can talk to. Annotations pick one by name.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    Vault(VaultProvider),
    Aws(AwsProvider),
}

impl ProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Vault(_) => "vault",
            ProviderConfig::Aws(_) => "aws",
        }
    }

    /// Audience of the projected service-account token, if this provider's auth uses one.
    pub fn token_audience(&self) -> Option<&str> {
        match self {
            ProviderConfig::Vault(v) => v.token_audience(),
            ProviderConfig::Aws(a) => a.token_audience(),
        }
    }

    /// Why item values must carry `#key` with this provider (Vault KV entries are maps), or
    /// `None` when a whole value can be used (an AWS secret).
    pub fn key_required(&self) -> Option<&'static str> {
        match self {
            ProviderConfig::Vault(_) => VaultProvider::KEY_REQUIRED,
            ProviderConfig::Aws(_) => AwsProvider::KEY_REQUIRED,
        }
    }

    /// The provider definition with per-pod placeholders (`{namespace}`, `{serviceAccount}`)
    /// filled in. Only config-defined text is substituted, never annotation text.
    pub fn personalise(&self, namespace: &str, service_account: &str) -> ProviderConfig {
        let fill = |s: &mut String| {
            if s.contains('{') {
                *s = s.replace("{namespace}", namespace).replace("{serviceAccount}", service_account);
            }
        };
        let mut p = self.clone();
        match &mut p {
            ProviderConfig::Vault(v) => v.personalise(&fill),
            ProviderConfig::Aws(a) => a.personalise(&fill),
        }
        p
    }

    /// An env var the agent container takes from a Secret, if the provider needs one: its
    /// name and the Secret key reference.
    pub fn secret_env(&self) -> Option<(&'static str, &SecretKeyRef)> {
        match self {
            ProviderConfig::Vault(v) => v.secret_env(),
            ProviderConfig::Aws(a) => a.secret_env(),
        }
    }

    /// The URL the config gives the provider, if any (checked to be http(s) at load).
    pub fn address(&self) -> Option<&str> {
        match self {
            ProviderConfig::Vault(v) => Some(&v.address),
            ProviderConfig::Aws(a) => a.endpoint.as_deref(),
        }
    }

    /// Where the agent connects, for its log.
    pub fn location(&self) -> String {
        match self {
            ProviderConfig::Vault(v) => v.location(),
            ProviderConfig::Aws(a) => a.location(),
        }
    }
}

/// A key of a Kubernetes Secret, by reference (never its value).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// One item the agent fetches, as the agent spec carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentItem {
    /// Item name: the file name under `mountPath` and the key in the fallback Secret.
    pub name: String,
    /// Provider path (Vault: relative to the KV mount; AWS: secret id or ARN).
    pub path: String,
    /// Key inside the entry; `None` (AWS only) means the whole SecretString/SecretBinary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemVersion {
    pub name: String,
    /// KV version (Vault) or VersionId (AWS) of the value currently on disk.
    pub version: Option<String>,
}

/// What the agent knows about its provider credentials (never the credentials themselves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `token`, `kubernetes`, `jwt`, `webIdentity`, `chain`.
    pub method: &'static str,
    /// When they expire, if they do and it is known.
    pub expires_at: Option<SystemTime>,
    /// The agent extends or replaces them before they expire (renewal or a new login).
    pub renewable: bool,
    /// They will expire and the agent can neither renew nor replace them: reads fail then.
    pub expiring: bool,
}

/// What a client tells the agent while it works: every request it sends, and what is known
/// about its credentials. The agent's status record implements it; it is defined here so the
/// clients need nothing of the agent.
pub trait Report: Send + Sync + std::fmt::Debug {
    fn request_sent(&self);
    fn record_credentials(&self, credentials: Credentials);
}

/// Upper bound on one HTTP request to a provider, so a hung provider cannot hold a refresh
/// forever; during start-up it is cut further to what is left of the start deadline.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Requests in flight at once per agent. A rollout of 100 pods is already 400 concurrent
/// requests to the provider; more per pod would mostly move the queue into the provider.
pub const PARALLEL: usize = 4;
/// Largest answer body read; a bigger one is a bad answer (no KV entry or secret is this big).
pub const MAX_BODY: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Outage: refused, reset, closed before or during the answer, stalled, timed out, TLS
    /// handshake cut, DNS.
    Unreachable,
    /// Outage: the provider answered 5xx (sealed, overloaded, a gateway without a backend).
    Unavailable,
    /// Outage: 429, the provider asks to slow down.
    Throttled,
    /// Outage: a complete answer that is not the provider's protocol (invalid JSON, an HTML
    /// page, the wrong shape). The provider (or something in front of it) is misbehaving; the
    /// pod did nothing wrong.
    BadAnswer,
    /// Refusal: 401/403 that is not an expired credential (re-login already tried).
    Auth,
    /// Refusal: 404, or the current version is deleted.
    NotFound,
    /// Refusal: the entry is there but unusable (missing key, wrong type, empty, a secret
    /// string that is not JSON where a key is asked for).
    InvalidEntry,
    /// Refusal: any other 4xx (the request as formed is rejected: path syntax, namespace).
    Rejected,
    /// Refusal: our side (invalid address, unreadable token file, untrusted certificate).
    Config,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Throttled => "throttled",
            ErrorKind::BadAnswer => "bad answer",
            ErrorKind::Auth => "auth denied",
            ErrorKind::NotFound => "not found",
            ErrorKind::InvalidEntry => "invalid entry",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Config => "configuration",
        }
    }

    /// An outage allows the fallback and is retried; anything else is a refusal.
    pub fn is_outage(self) -> bool {
        matches!(self, ErrorKind::Unreachable | ErrorKind::Unavailable | ErrorKind::Throttled | ErrorKind::BadAnswer)
    }

    /// The provider is down (rather than answering badly or asking us to slow down): worth a
    /// cheap probe on a short backoff, so its return is noticed within seconds.
    pub fn is_down(self) -> bool {
        matches!(self, ErrorKind::Unreachable | ErrorKind::Unavailable)
    }
}

/// One failed request or refresh. `path` names what was being fetched (a secret path, or the
/// auth endpoint); `message` never contains a secret value.
#[derive(Clone, Debug, Error)]
#[error("{path}: {}: {message}", kind.as_str())]
pub struct FetchError {
    pub kind: ErrorKind,
    pub path: String,
    pub message: String,
}

impl FetchError {
    pub fn new(kind: ErrorKind, path: impl Into<String>, message: impl Into<String>) -> FetchError {
        FetchError { kind, path: path.into(), message: message.into() }
    }
}

/// Everything one refresh produced: file name -> content, plus the version of each.
#[derive(Debug, Default)]
pub struct Fetched {
    pub files: BTreeMap<String, Vec<u8>>,
    pub versions: Vec<ItemVersion>,
}

/// Time limits of one refresh: `deadline` (start-up) cuts every request's timeout to what is
/// left; `spread` paces the start of the item reads over that window, so a refresh of many
/// items is not a burst.
#[derive(Clone, Copy, Debug, Default)]
pub struct Budget {
    pub deadline: Option<Instant>,
    pub spread: Duration,
}

impl Budget {
    /// The timeout for a request starting now: [`REQUEST_TIMEOUT`], or less before a deadline.
    pub fn timeout(&self) -> Duration {
        match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), REQUEST_TIMEOUT),
            None => REQUEST_TIMEOUT,
        }
    }
}

pub enum Provider {
    // Boxed: one provider per agent, and the variants differ in size.
    Vault(Box<vault::Vault>),
    Aws(Box<aws::Aws>),
}

impl Provider {
    /// `token_file` is already resolved against `--root`; `status` receives the request
    /// count and what is known about the credentials.
    pub async fn new(
        config: &ProviderConfig,
        token_file: Option<PathBuf>,
        status: Arc<dyn Report>,
        refresh_interval: Duration,
    ) -> Result<Provider, FetchError> {
        Ok(match config {
            ProviderConfig::Vault(v) => {
                Provider::Vault(Box::new(vault::Vault::new(v, token_file, status, refresh_interval)?))
            }
            ProviderConfig::Aws(a) => Provider::Aws(Box::new(aws::Aws::new(a, token_file, status).await?)),
        })
    }

    /// Fetches every item. All or nothing: one bad item fails the whole refresh, so the set on
    /// disk is always one consistent generation.
    pub async fn fetch(&mut self, items: &[AgentItem], budget: Budget) -> Result<Fetched, FetchError> {
        match self {
            Provider::Vault(v) => v.fetch(items, budget).await,
            Provider::Aws(a) => a.fetch(items, budget).await,
        }
    }

    /// One cheap request that says whether the provider is answering again (Vault:
    /// `sys/health`; AWS: one read of the first item). `Ok` once it answers at all, even "no".
    pub async fn probe(&mut self, items: &[AgentItem]) -> Result<(), FetchError> {
        match self {
            Provider::Vault(v) => v.probe().await,
            Provider::Aws(a) => a.probe(items).await,
        }
    }

    /// When the credentials next need attention (a renewal or a new login), if ever.
    pub fn next_maintenance(&self) -> Option<Instant> {
        match self {
            Provider::Vault(v) => v.next_maintenance(),
            Provider::Aws(_) => None,
        }
    }

    /// Renews or replaces the credentials if due. Failures are logged and retried later; the
    /// next read reports them if they matter.
    pub async fn maintain(&mut self) {
        match self {
            Provider::Vault(v) => v.maintain().await,
            Provider::Aws(_) => {}
        }
    }
}

/// Unique paths in item order, so an entry holding several keys is read once per refresh.
pub fn unique_paths(items: &[AgentItem]) -> Vec<&str> {
    let mut seen = Vec::new();
    for i in items {
        if !seen.contains(&i.path.as_str()) {
            seen.push(i.path.as_str());
        }
    }
    seen
}

/// Runs `read` for every path, at most [`PARALLEL`] at a time, their starts paced evenly over
/// `spread`. Stops at the first error (the reads still in flight are dropped).
pub async fn read_paced<'a, T, F, Fut>(
    paths: Vec<&'a str>,
    spread: Duration,
    read: F,
) -> Result<Vec<(&'a str, T)>, FetchError>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<T, FetchError>>,
{
    let n = u32::try_from(paths.len()).unwrap_or(u32::MAX).max(1);
    let gap = spread / n;
    let start = tokio::time::Instant::now();
    let mut reads = futures_util::stream::iter(paths.into_iter().enumerate().map(|(i, path)| {
        let at = start + gap.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
        let read = &read;
        async move {
            tokio::time::sleep_until(at).await;
            (path, read(path).await)
        }
    }))
    .buffer_unordered(PARALLEL);
    let mut out = Vec::new();
    while let Some((path, result)) = reads.next().await {
        out.push((path, result?));
    }
    Ok(out)
}

pub fn read_token_file(path: &std::path::Path) -> Result<String, FetchError> {
    let token = std::fs::read_to_string(path).map_err(|e| {
        FetchError::new(ErrorKind::Config, path.display().to_string(), format!("cannot read the token file: {e}"))
    })?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(FetchError::new(ErrorKind::Config, path.display().to_string(), "the token file is empty"));
    }
    Ok(token)
}

/// The error and its causes on one line. Only for errors that cannot carry response bodies
/// (transport errors); callers never use it on parse errors of secret content.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_and_refusal_kinds() {
        for k in [ErrorKind::Unreachable, ErrorKind::Unavailable, ErrorKind::Throttled, ErrorKind::BadAnswer] {
            assert!(k.is_outage(), "{k:?}");
        }
        for k in [ErrorKind::Auth, ErrorKind::NotFound, ErrorKind::InvalidEntry, ErrorKind::Rejected, ErrorKind::Config]
        {
            assert!(!k.is_outage() && !k.is_down(), "{k:?}");
        }
        assert!(ErrorKind::Unreachable.is_down() && ErrorKind::Unavailable.is_down());
        assert!(!ErrorKind::Throttled.is_down() && !ErrorKind::BadAnswer.is_down());
    }

    #[test]
    fn budget_cuts_the_request_timeout_to_the_deadline() {
        assert_eq!(Budget::default().timeout(), REQUEST_TIMEOUT);
        let soon = Budget { deadline: Some(Instant::now() + Duration::from_secs(2)), spread: Duration::ZERO };
        assert!(soon.timeout() <= Duration::from_secs(2) && soon.timeout() > Duration::from_secs(1));
        let past = Budget { deadline: Some(Instant::now() - Duration::from_secs(1)), spread: Duration::ZERO };
        assert_eq!(past.timeout(), Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn reads_are_bounded_paced_and_stop_at_the_first_error() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let in_flight = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let starts = std::sync::Mutex::new(Vec::new());
        let t0 = tokio::time::Instant::now();
        let paths: Vec<String> = (0..12).map(|i| format!("p{i}")).collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let out = read_paced(refs, Duration::from_millis(1200), |p| {
            let (in_flight, most, starts) = (&in_flight, &most, &starts);
            async move {
                starts.lock().unwrap().push(t0.elapsed());
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, FetchError>(p.len())
            }
        })
        .await
        .unwrap();
        assert_eq!(out.len(), 12);
        assert_eq!(most.load(Ordering::SeqCst), PARALLEL);
        let starts = starts.into_inner().unwrap();
        // The last read starts no earlier than 11/12 of the spread: not a burst.
        assert!(*starts.iter().max().unwrap() >= Duration::from_millis(1100), "{starts:?}");

        let calls = AtomicUsize::new(0);
        let err = read_paced(vec!["a", "b", "c", "d", "e", "f"], Duration::ZERO, |p| {
            let calls = &calls;
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if p == "a" {
                    return Err(FetchError::new(ErrorKind::NotFound, p, "HTTP 404"));
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(calls.load(Ordering::SeqCst) <= PARALLEL, "no read started after the error");
    }
}
