//! Secret providers the agent fetches from. Both are defined only in the webhook config and
//! reach the agent inside its spec; nothing here takes an address from an annotation.

pub mod aws;
pub mod value;
pub mod vault;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use thiserror::Error;

use super::status::ItemVersion;
use crate::agent_spec::AgentItem;
use crate::config::ProviderConfig;

/// Upper bound on one HTTP request to a provider, so a hung provider cannot hold a refresh
/// (or the init container's start deadline) forever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection refused, timeout, TLS failure, 5xx, sealed: the provider is not answering.
    Unreachable,
    /// Authentication or authorisation refused.
    Auth,
    NotFound,
    /// The answer arrived but has the wrong shape (missing key, wrong type, empty).
    Malformed,
    /// Configuration problems on our side (bad address, unreadable token file).
    Config,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Auth => "auth denied",
            ErrorKind::NotFound => "not found",
            ErrorKind::Malformed => "malformed answer",
            ErrorKind::Config => "configuration",
        }
    }
}

/// One failed refresh. `path` names what was being fetched (a secret path, or the auth
/// endpoint); `message` never contains a secret value.
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

pub enum Provider {
    // Boxed: the vaultrs client is large and there is exactly one provider per agent.
    Vault(Box<vault::Vault>),
    Aws(aws::Aws),
}

impl Provider {
    /// `token_file` is already resolved against `--root`; `requests` counts every request sent.
    pub async fn new(
        config: &ProviderConfig,
        token_file: Option<PathBuf>,
        requests: Counter,
    ) -> Result<Provider, FetchError> {
        Ok(match config {
            ProviderConfig::Vault(v) => Provider::Vault(Box::new(vault::Vault::new(v, token_file, requests)?)),
            ProviderConfig::Aws(a) => Provider::Aws(aws::Aws::new(a, token_file, requests).await?),
        })
    }

    /// Fetches every item. All or nothing: one bad item fails the whole refresh, so the set on
    /// disk is always one consistent generation.
    pub async fn fetch(&mut self, items: &[AgentItem]) -> Result<Fetched, FetchError> {
        match self {
            Provider::Vault(v) => v.fetch(items).await,
            Provider::Aws(a) => a.fetch(items).await,
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
