//! Vault / OpenBao KV v2 through `vaultrs`, with a reqwest client we build ourselves so the
//! CA bundle can come from the spec (a PEM string) rather than a file path, and so every
//! request has a timeout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde_json::Value;
use vaultrs::api::kv2::requests::ReadSecretRequest;
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::{value, ErrorKind, FetchError, Fetched, CONNECT_TIMEOUT, REQUEST_TIMEOUT};
use crate::agent::status::ItemVersion;
use crate::agent_spec::AgentItem;
use crate::config::{VaultAuth, VaultProvider};

pub struct Vault {
    config: VaultProvider,
    client: VaultClient,
    token_file: Option<PathBuf>,
    /// When the current login token should be replaced (None: no token yet).
    token_renew_at: Option<Instant>,
    requests: Counter,
}

impl Vault {
    pub fn new(config: &VaultProvider, token_file: Option<PathBuf>, requests: Counter) -> Result<Vault, FetchError> {
        let cfg_err = |m: String| FetchError::new(ErrorKind::Config, config.address.clone(), m);
        let url = reqwest::Url::parse(&config.address).map_err(|e| cfg_err(format!("invalid address: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(cfg_err("address must be http:// or https://".into()));
        }
        let mut http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| cfg_err(format!("invalid caPem: {e}")))?;
            if certs.is_empty() {
                return Err(cfg_err("caPem holds no certificate".into()));
            }
            for c in certs {
                http = http.add_root_certificate(c);
            }
        }
        let http = http.build().map_err(|e| cfg_err(format!("cannot build the HTTP client: {e}")))?;
        // Token auth reads VAULT_TOKEN (injected from a secretKeyRef); the others log in.
        let token = match &config.auth {
            VaultAuth::Token { .. } => std::env::var("VAULT_TOKEN").unwrap_or_default(),
            _ => String::new(),
        };
        let settings = VaultClientSettingsBuilder::default()
            .address(url.as_str())
            .token(token.clone())
            .ca_certs(Vec::new())
            .verify(true)
            .timeout(Some(REQUEST_TIMEOUT))
            .namespace(config.namespace.clone())
            .build()
            .map_err(|e| cfg_err(format!("invalid client settings: {e}")))?;
        let middle =
            EndpointMiddleware { token, version: "v1".into(), wrap: None, namespace: config.namespace.clone() };
        let client = VaultClient { http: rustify::clients::reqwest::Client::new(url.as_str(), http), middle, settings };
        Ok(Vault { config: config.clone(), client, token_file, token_renew_at: None, requests })
    }

    pub async fn fetch(&mut self, items: &[AgentItem]) -> Result<Fetched, FetchError> {
        let fresh_login = self.ensure_token().await?;
        match self.read_all(items).await {
            // A cached login token may have been revoked or expired early: log in again once.
            Err(e) if e.kind == ErrorKind::Auth && !fresh_login && self.logs_in() => {
                self.token_renew_at = None;
                self.ensure_token().await?;
                self.read_all(items).await
            }
            other => other,
        }
    }

    fn logs_in(&self) -> bool {
        !matches!(self.config.auth, VaultAuth::Token { .. })
    }

    /// Logs in when there is no valid token. Returns whether it logged in just now.
    async fn ensure_token(&mut self) -> Result<bool, FetchError> {
        let (mount, role, kube) = match &self.config.auth {
            VaultAuth::Token { .. } => {
                if self.client.settings.token.is_empty() {
                    return Err(FetchError::new(
                        ErrorKind::Config,
                        "VAULT_TOKEN",
                        "token auth but VAULT_TOKEN is empty",
                    ));
                }
                return Ok(false);
            }
            VaultAuth::Kubernetes { mount, role, .. } => (mount.clone(), role.clone(), true),
            VaultAuth::Jwt { mount, role, .. } => (mount.clone(), role.clone(), false),
        };
        if self.token_renew_at.is_some_and(|t| Instant::now() < t) {
            return Ok(false);
        }
        let path = format!("auth/{mount}/login (role {role})");
        let file = self.token_file.clone().ok_or_else(|| {
            FetchError::new(ErrorKind::Config, path.clone(), "the auth method needs a token file and none is mounted")
        })?;
        // Re-read every time: the kubelet rotates the projected token in place.
        let jwt = super::read_token_file(&file)?;
        self.requests.inc();
        let info = if kube {
            vaultrs::auth::kubernetes::login(&self.client, &mount, &role, &jwt).await
        } else {
            vaultrs::auth::oidc::login(&self.client, &mount, &jwt, Some(role.clone())).await
        }
        .map_err(|e| classify(&e, &path))?;
        self.client.set_token(&info.client_token);
        // Renew at 80% of the lease; a zero lease means "no expiry", so re-login hourly anyway.
        let lease = if info.lease_duration == 0 { 3600 } else { info.lease_duration };
        self.token_renew_at = Some(Instant::now() + Duration::from_secs(lease.saturating_mul(4) / 5));
        Ok(true)
    }

    async fn read_all(&self, items: &[AgentItem]) -> Result<Fetched, FetchError> {
        let mut out = Fetched::default();
        let mut entries = Vec::new();
        for path in super::unique_paths(items) {
            entries.push((path, self.read(path).await?));
        }
        for item in items {
            let display = format!("{}/{}", self.config.kv_mount, item.path);
            let Some((_, (data, version))) = entries.iter().find(|(p, _)| *p == item.path) else {
                return Err(FetchError::new(ErrorKind::NotFound, display, "entry was not read"));
            };
            let key = item.key.as_deref().ok_or_else(|| {
                FetchError::new(ErrorKind::Config, display.clone(), "Vault items need a #key (KV entries are maps)")
            })?;
            let content = value::from_map(data, key)
                .map_err(|m| FetchError::new(ErrorKind::Malformed, format!("{display}#{key}"), m))?;
            out.files.insert(item.name.clone(), content);
            out.versions.push(ItemVersion { name: item.name.clone(), version: Some(version.to_string()) });
        }
        Ok(out)
    }

    async fn read(&self, path: &str) -> Result<(serde_json::Map<String, Value>, u64), FetchError> {
        let display = format!("{}/{}", self.config.kv_mount, path);
        let endpoint = ReadSecretRequest::builder()
            .mount(&self.config.kv_mount)
            .path(path)
            .build()
            .map_err(|e| FetchError::new(ErrorKind::Config, display.clone(), format!("invalid path: {e}")))?;
        self.requests.inc();
        let res = vaultrs::api::exec_with_result(&self.client, endpoint).await.map_err(|e| classify(&e, &display))?;
        if res.metadata.destroyed || !res.metadata.deletion_time.is_empty() {
            return Err(FetchError::new(
                ErrorKind::NotFound,
                display,
                format!("version {} is deleted", res.metadata.version),
            ));
        }
        match res.data {
            Value::Object(map) => Ok((map, res.metadata.version)),
            other => Err(FetchError::new(
                ErrorKind::Malformed,
                display,
                format!("entry data is {}, expected a map", value::type_name(&other)),
            )),
        }
    }
}

/// Maps a vaultrs error to a kind and a message that cannot contain a value: API errors
/// carry Vault's own error strings, transport errors their cause chain, and parse errors only
/// their top-level text (their sources may quote the body).
fn classify(e: &ClientError, path: &str) -> FetchError {
    use rustify::errors::ClientError as Rest;
    let (kind, message) = match e {
        ClientError::APIError { code, errors } => {
            let kind = match code {
                401 | 403 => ErrorKind::Auth,
                404 => ErrorKind::NotFound,
                429 | 500..=599 => ErrorKind::Unreachable,
                _ => ErrorKind::Malformed,
            };
            let detail = if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) };
            (kind, format!("HTTP {code}{detail}"))
        }
        ClientError::RestClientError { source: Rest::ServerResponseError { code, .. } } => {
            let kind = match code {
                401 | 403 => ErrorKind::Auth,
                404 => ErrorKind::NotFound,
                _ => ErrorKind::Unreachable,
            };
            (kind, format!("HTTP {code}"))
        }
        ClientError::RestClientError { source: source @ Rest::RequestError { .. } } => {
            (ErrorKind::Unreachable, super::chain(source))
        }
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            (ErrorKind::Malformed, "the response has no data".to_string())
        }
        other => (ErrorKind::Malformed, other.to_string()),
    };
    FetchError::new(kind, path, message)
}
