//! Vault / OpenBao: its section of the webhook config (and what the webhook derives from it
//! per pod), and the agent's client: KV v2 reads, Kubernetes/JWT login, token lookup and
//! renewal, and a health probe, over a reqwest client of our own.
//!
//! A thin client rather than `vaultrs`: the agent uses six endpoints, and classifying a
//! failure by what it means for the pod needs what vaultrs/rustify drop (the status of a
//! non-JSON answer, a body cut or stalled after the headers, the I/O cause). The body is read
//! here chunk by chunk, so "dropped after 120 of 300 bytes" and "stalled" are told apart.
//!
//! Token lifecycle: token auth looks its token up at start (`auth/token/lookup-self`: TTL,
//! renewable); logins take the same facts from the login answer. A renewable token is renewed
//! at two thirds of its TTL; a login token that cannot be renewed (or whose renewal is capped
//! by its max TTL) is replaced by a new login at that point; a token-auth token that cannot be
//! extended is reported (log, status, metric) as soon as that is known. A 403 on a read is
//! checked against `lookup-self`: an invalid token means log in again and retry once (token
//! auth: "expired or revoked"); a valid one means the policy says no.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::{Method, Url};
use serde_json::{json, Map, Value};

use serde::{Deserialize, Serialize};

use super::backoff::Backoff;
use super::cause::{self, Stage};
use super::{
    value, AgentItem, Budget, Credentials, ErrorKind, FetchError, Fetched, ItemVersion, Report, SecretKeyRef,
    CONNECT_TIMEOUT, MAX_BODY,
};
use crate::vocabulary::duration;
use crate::vocabulary::time::rfc3339;

// ---- The provider's section of the webhook config, and what the webhook needs to know ----

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultProvider {
    /// `https://vault.vault.svc:8200`
    pub address: String,
    /// Mount of the KV v2 engine; item paths are relative to it.
    #[serde(default = "default_kv_mount")]
    pub kv_mount: String,
    /// Vault Enterprise / OpenBao namespace header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// PEM bundle to verify the server with (not a secret; it is written into the agent's env).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    pub auth: VaultAuth,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum VaultAuth {
    /// Kubernetes auth method with the projected token.
    Kubernetes {
        #[serde(default = "default_k8s_auth_mount")]
        mount: String,
        /// Vault role; `{namespace}` and `{serviceAccount}` are replaced per pod.
        role: String,
        #[serde(default = "default_vault_audience")]
        audience: String,
    },
    /// JWT auth method with the projected token (same code path, other mount).
    Jwt {
        #[serde(default = "default_jwt_auth_mount")]
        mount: String,
        role: String,
        #[serde(default = "default_vault_audience")]
        audience: String,
    },
    /// Development only: a token read from a Kubernetes Secret by reference.
    Token {
        #[serde(rename = "secretRef")]
        secret_ref: SecretKeyRef,
    },
}

fn default_kv_mount() -> String {
    "secret".into()
}
fn default_k8s_auth_mount() -> String {
    "kubernetes".into()
}
fn default_jwt_auth_mount() -> String {
    "jwt".into()
}
fn default_vault_audience() -> String {
    "vault".into()
}

/// Env var the agent reads its token from with token auth (set from the config's Secret).
pub const TOKEN_ENV: &str = "VAULT_TOKEN";

impl VaultProvider {
    /// Why an item must name a `#key`: a KV v2 entry is a map of keys.
    pub const KEY_REQUIRED: Option<&'static str> =
        Some("a Vault/OpenBao entry holds several keys and this reference names none");

    /// Audience of the projected service-account token, if the auth method uses one.
    pub fn token_audience(&self) -> Option<&str> {
        match &self.auth {
            VaultAuth::Kubernetes { audience, .. } | VaultAuth::Jwt { audience, .. } => Some(audience),
            VaultAuth::Token { .. } => None,
        }
    }

    /// Fills the per-pod placeholders of the role ([`super::ProviderConfig::personalise`]).
    pub fn personalise(&mut self, fill: &dyn Fn(&mut String)) {
        match &mut self.auth {
            VaultAuth::Kubernetes { role, .. } | VaultAuth::Jwt { role, .. } => fill(role),
            VaultAuth::Token { .. } => {}
        }
    }

    /// Env the agent container takes from a Secret: the token of token auth.
    pub fn secret_env(&self) -> Option<(&'static str, &SecretKeyRef)> {
        match &self.auth {
            VaultAuth::Token { secret_ref } => Some((TOKEN_ENV, secret_ref)),
            VaultAuth::Kubernetes { .. } | VaultAuth::Jwt { .. } => None,
        }
    }

    /// Where the agent connects, for its log.
    pub fn location(&self) -> String {
        self.address.clone()
    }
}

// ---- The agent's client ----

pub struct Vault {
    config: VaultProvider,
    http: reqwest::Client,
    base: Url,
    token_file: Option<PathBuf>,
    status: Arc<dyn Report>,
    token: Option<Token>,
    /// Spaces retries of a renewal or login that failed while the current token still works.
    retry: Backoff,
}

struct Token {
    secret: String,
    /// When it expires; `None`: never, or not known.
    expires: Option<(Instant, SystemTime)>,
    renewable: bool,
    /// TTL asked for on renewal, in seconds (the creation TTL or the login lease).
    increment: u64,
    /// When to renew it or log in again.
    act_at: Option<Instant>,
    /// Renewal cannot extend it any more (refused, or capped by the max TTL).
    capped: bool,
    /// Token auth: `lookup-self` answered (TTL and renewability are known).
    known: bool,
}

/// A complete answer: status, what it claimed to be, and its JSON if it was JSON.
struct Answer {
    status: u16,
    content_type: String,
    len: usize,
    json: Option<Value>,
}

impl Answer {
    fn is_json(&self) -> bool {
        self.json.is_some()
    }

    /// `application/json, 123 bytes`: what a non-Vault answer looked like, never its content.
    fn shape(&self) -> String {
        let ct = if self.content_type.is_empty() { "no content type" } else { self.content_type.as_str() };
        format!("{ct}, {} bytes", self.len)
    }

    /// Vault's own `errors` strings, on one line and short.
    fn vault_errors(&self) -> Option<String> {
        let errors = self.json.as_ref()?.get("errors")?.as_array()?;
        let text: Vec<String> = errors
            .iter()
            .filter_map(Value::as_str)
            .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|e| !e.is_empty())
            .collect();
        if text.is_empty() {
            return None;
        }
        Some(text.join("; ").chars().take(200).collect())
    }

    /// `HTTP 503: Vault is sealed` or `HTTP 502 (not a Vault answer: text/html, 150 bytes)`.
    fn describe(&self) -> String {
        match self.vault_errors() {
            Some(e) => format!("HTTP {}: {e}", self.status),
            None if self.is_json() => format!("HTTP {}", self.status),
            None => format!("HTTP {} (not a Vault answer: {})", self.status, self.shape()),
        }
    }
}

/// What a non-success status means.
fn status_kind(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::Auth,
        404 => ErrorKind::NotFound,
        429 => ErrorKind::Throttled,
        // 412: a performance standby has not caught up yet; retrying is right.
        412 | 500..=599 => ErrorKind::Unavailable,
        400..=499 => ErrorKind::Rejected,
        _ => ErrorKind::BadAnswer,
    }
}

fn error_for(a: &Answer, path: &str) -> FetchError {
    FetchError::new(status_kind(a.status), path, a.describe())
}

fn bad_shape(a: &Answer, path: &str, expected: &str) -> FetchError {
    let why = if a.is_json() { format!("JSON without {expected}") } else { format!("not JSON: {}", a.shape()) };
    FetchError::new(ErrorKind::BadAnswer, path, format!("HTTP {} but not a Vault answer ({why})", a.status))
}

impl Vault {
    pub fn new(
        config: &VaultProvider,
        token_file: Option<PathBuf>,
        status: Arc<dyn Report>,
        refresh_interval: Duration,
    ) -> Result<Vault, FetchError> {
        let cfg_err = |m: String| FetchError::new(ErrorKind::Config, config.address.clone(), m);
        let base = Url::parse(&config.address).map_err(|e| cfg_err(format!("invalid address: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(cfg_err("address must be an http:// or https:// URL".into()));
        }
        let mut http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("secretmode-agent/", env!("CARGO_PKG_VERSION")));
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
        // Failed renewals and logins are retried on the outage backoff, capped well inside
        // any TTL worth having and never beyond a refresh interval.
        let retry = Backoff::new(
            Duration::from_secs(1),
            refresh_interval.clamp(Duration::from_secs(1), Duration::from_secs(5)),
        );
        Ok(Vault { config: config.clone(), http, base, token_file, status, token: None, retry })
    }

    fn logs_in(&self) -> bool {
        !matches!(self.config.auth, VaultAuth::Token { .. })
    }

    fn method(&self) -> &'static str {
        match self.config.auth {
            VaultAuth::Token { .. } => "token",
            VaultAuth::Kubernetes { .. } => "kubernetes",
            VaultAuth::Jwt { .. } => "jwt",
        }
    }

    /// `base/v1/<segments...>`; every segment of `rest` checked and percent-encoded.
    fn url(&self, parts: &[&str], shown: &str) -> Result<Url, FetchError> {
        let mut url = self.base.clone();
        {
            let mut segs = url
                .path_segments_mut()
                .map_err(|_| FetchError::new(ErrorKind::Config, shown, "the address cannot take a path"))?;
            segs.pop_if_empty().push("v1");
            for part in parts {
                for seg in part.split('/') {
                    if seg.is_empty() || seg == "." || seg == ".." {
                        return Err(FetchError::new(
                            ErrorKind::Config,
                            shown,
                            "invalid path: empty, `.` or `..` segment",
                        ));
                    }
                    segs.push(seg);
                }
            }
        }
        Ok(url)
    }

    /// One request; the whole answer read (up to [`MAX_BODY`]). Failures before a complete
    /// answer are outages named by their cause.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
        auth: bool,
        timeout: Duration,
        shown: &str,
    ) -> Result<Answer, FetchError> {
        let mut req = self.http.request(method, url).timeout(timeout).header("X-Vault-Request", "true");
        if auth {
            if let Some(t) = &self.token {
                req = req.header("X-Vault-Token", &t.secret);
            }
        }
        if let Some(ns) = self.config.namespace.as_deref().filter(|n| !n.is_empty()) {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.status.request_sent();
        let mut resp = req.send().await.map_err(|e| {
            let (kind, text) = if e.is_timeout() {
                (ErrorKind::Unreachable, format!("timed out after {} with no answer", duration::format_ms(timeout)))
            } else {
                cause::transport(&e, if e.is_connect() { Stage::Connect } else { Stage::Answer })
            };
            FetchError::new(kind, shown, text)
        })?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().chars().take(60).collect())
            .unwrap_or_default();
        let expected = resp.content_length();
        let of = expected.map(|n| format!(" of {n}")).unwrap_or_default();
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > MAX_BODY {
                        return Err(FetchError::new(
                            ErrorKind::BadAnswer,
                            shown,
                            format!("HTTP {status} with an answer over {} KiB", MAX_BODY / 1024),
                        ));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => {
                    return Err(FetchError::new(
                        ErrorKind::Unreachable,
                        shown,
                        format!(
                            "stalled mid-body: HTTP {status}, {}{of} bytes, then nothing until the {} timeout",
                            bytes.len(),
                            duration::format_ms(timeout)
                        ),
                    ))
                }
                Err(e) => {
                    let (_, why) = cause::transport(&e, Stage::Body);
                    return Err(FetchError::new(
                        ErrorKind::Unreachable,
                        shown,
                        format!("dropped mid-body: HTTP {status}, {}{of} bytes, {why}", bytes.len()),
                    ));
                }
            }
        }
        let json = serde_json::from_slice::<Value>(&bytes).ok();
        Ok(Answer { status, content_type, len: bytes.len(), json })
    }

    /// Tells the status what is known about the token (the sidecar reports an expiring one).
    fn record_credentials(&self) {
        let Some(t) = &self.token else { return };
        let expiring = !self.logs_in() && t.expires.is_some() && (!t.renewable || t.capped);
        self.status.record_credentials(Credentials {
            method: self.method(),
            expires_at: t.expires.map(|(_, wall)| wall),
            renewable: t.renewable && !t.capped,
            expiring,
        });
    }

    /// Logs in with the projected service-account token.
    async fn login(&mut self, budget: Budget) -> Result<(), FetchError> {
        let (mount, role) = match &self.config.auth {
            VaultAuth::Kubernetes { mount, role, .. } | VaultAuth::Jwt { mount, role, .. } => {
                (mount.clone(), role.clone())
            }
            VaultAuth::Token { .. } => return Ok(()),
        };
        let shown = format!("auth/{mount}/login (role {role})");
        let file = self.token_file.clone().ok_or_else(|| {
            FetchError::new(ErrorKind::Config, &shown, "the auth method needs a token file and none is mounted")
        })?;
        // Re-read every time: the kubelet rotates the projected token in place.
        let jwt = super::read_token_file(&file)?;
        let url = self.url(&["auth", &mount, "login"], &shown)?;
        let a = self
            .call(Method::POST, url, Some(json!({"role": role, "jwt": jwt})), false, budget.timeout(), &shown)
            .await?;
        if a.status != 200 {
            let mut e = error_for(&a, &shown);
            // Vault answers 400 for a role that does not exist or a token it rejects.
            if a.status == 400 && a.is_json() {
                e.kind = ErrorKind::Auth;
            }
            return Err(e);
        }
        let auth = a.json.as_ref().and_then(|j| j.get("auth"));
        let secret = auth.and_then(|x| x["client_token"].as_str()).filter(|s| !s.is_empty());
        let Some(secret) = secret else { return Err(bad_shape(&a, &shown, "auth.client_token")) };
        let lease = auth.and_then(|x| x["lease_duration"].as_u64()).unwrap_or(0);
        let renewable = auth.and_then(|x| x["renewable"].as_bool()).unwrap_or(false);
        let now = Instant::now();
        self.token = Some(Token {
            secret: secret.to_string(),
            expires: (lease > 0)
                .then(|| (now + Duration::from_secs(lease), SystemTime::now() + Duration::from_secs(lease))),
            renewable,
            increment: lease,
            act_at: (lease > 0).then(|| now + Duration::from_secs(lease) * 2 / 3),
            capped: false,
            known: true,
        });
        self.retry.reset();
        self.record_credentials();
        tracing::debug!(lease = %duration::format(Duration::from_secs(lease)), renewable, "logged in to Vault");
        Ok(())
    }

    /// `auth/token/lookup-self`: TTL and renewability of the current token.
    async fn lookup(&mut self, budget: Budget) -> Result<(), FetchError> {
        let shown = "auth/token/lookup-self";
        let url = self.url(&["auth", "token", "lookup-self"], shown)?;
        let a = self.call(Method::GET, url, None, true, budget.timeout(), shown).await?;
        if a.status != 200 {
            return Err(error_for(&a, shown));
        }
        let Some(data) = a.json.as_ref().and_then(|j| j.get("data")).filter(|d| d.is_object()) else {
            return Err(bad_shape(&a, shown, "data"));
        };
        let ttl = data["ttl"].as_u64().unwrap_or(0);
        let renewable = data["renewable"].as_bool().unwrap_or(false);
        let creation = data["creation_ttl"].as_u64().filter(|c| *c > 0).unwrap_or(ttl);
        let now = Instant::now();
        if let Some(t) = self.token.as_mut() {
            t.expires =
                (ttl > 0).then(|| (now + Duration::from_secs(ttl), SystemTime::now() + Duration::from_secs(ttl)));
            t.renewable = renewable;
            t.increment = creation;
            t.act_at = (ttl > 0 && renewable).then(|| now + Duration::from_secs(ttl) * 2 / 3);
            t.known = true;
        }
        self.record_credentials();
        Ok(())
    }

    /// `auth/token/renew-self` for the token's own TTL; notices when the max TTL caps it.
    async fn renew(&mut self) -> Result<(), FetchError> {
        let shown = "auth/token/renew-self";
        let increment = self.token.as_ref().map(|t| t.increment).unwrap_or(0);
        let url = self.url(&["auth", "token", "renew-self"], shown)?;
        let body = json!({"increment": format!("{increment}s")});
        let a = self.call(Method::POST, url, Some(body), true, Budget::default().timeout(), shown).await?;
        if a.status != 200 {
            return Err(error_for(&a, shown));
        }
        let auth = a.json.as_ref().and_then(|j| j.get("auth"));
        let Some(lease) = auth.and_then(|x| x["lease_duration"].as_u64()) else {
            return Err(bad_shape(&a, shown, "auth.lease_duration"));
        };
        let renewable = auth.and_then(|x| x["renewable"].as_bool()).unwrap_or(false);
        let now = Instant::now();
        if let Some(t) = self.token.as_mut() {
            t.expires =
                (lease > 0).then(|| (now + Duration::from_secs(lease), SystemTime::now() + Duration::from_secs(lease)));
            t.renewable = renewable;
            // Less than asked for: the max TTL is near, renewal will not carry it further.
            t.capped = lease.saturating_mul(10) < increment.saturating_mul(9) || !renewable;
            t.act_at = (lease > 0).then(|| now + Duration::from_secs(lease) * 2 / 3);
            if t.capped && !matches!(self.config.auth, VaultAuth::Kubernetes { .. } | VaultAuth::Jwt { .. }) {
                t.act_at = None;
            }
        }
        tracing::debug!(lease = %duration::format(Duration::from_secs(lease)), "renewed the Vault token");
        self.retry.reset();
        self.record_credentials();
        Ok(())
    }

    /// A token to read with: token auth's `VAULT_TOKEN` (looked up once), or a login.
    async fn ensure_token(&mut self, budget: Budget) -> Result<(), FetchError> {
        if self.logs_in() {
            let expired = match &self.token {
                None => true,
                Some(t) => t.expires.is_some_and(|(at, _)| at <= Instant::now() + Duration::from_secs(1)),
            };
            if expired {
                self.login(budget).await?;
            }
            return Ok(());
        }
        if self.token.is_none() {
            let secret = std::env::var(TOKEN_ENV).unwrap_or_default().trim().to_string();
            if secret.is_empty() {
                return Err(FetchError::new(ErrorKind::Config, "VAULT_TOKEN", "token auth but VAULT_TOKEN is empty"));
            }
            self.token = Some(Token {
                secret,
                expires: None,
                renewable: false,
                increment: 0,
                act_at: None,
                capped: false,
                known: false,
            });
        }
        if self.token.as_ref().is_some_and(|t| !t.known) {
            match self.lookup(budget).await {
                Ok(()) => {}
                // A token without the default policy may not look itself up; its reads tell.
                Err(e) if e.kind == ErrorKind::Auth => {
                    if let Some(t) = self.token.as_mut() {
                        t.known = true;
                    }
                    // Debug only: `--once` prints one line, and the read says what matters.
                    tracing::debug!(error = %e, "cannot look VAULT_TOKEN up: its expiry is unknown (it needs the default policy's lookup-self)");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn next_maintenance(&self) -> Option<Instant> {
        self.token.as_ref().and_then(|t| t.act_at)
    }

    /// Renews the token, or logs in again, when it is due. A failure leaves the current
    /// token in place (it may still be valid for a while) and retries on a short backoff.
    pub async fn maintain(&mut self) {
        let Some(t) = &self.token else { return };
        if t.act_at.is_none_or(|at| at > Instant::now()) {
            return;
        }
        let renew = t.renewable && !t.capped;
        let result = if renew {
            match self.renew().await {
                Err(e) if e.kind == ErrorKind::Auth && self.logs_in() => self.login(Budget::default()).await,
                other => other,
            }
        } else if self.logs_in() {
            self.login(Budget::default()).await
        } else {
            // Token auth that cannot be extended: nothing to schedule (it is reported).
            if let Some(t) = self.token.as_mut() {
                t.act_at = None;
            }
            Ok(())
        };
        if let Err(e) = result {
            let logs_in = self.logs_in();
            if let Some(t) = self.token.as_mut() {
                if e.kind == ErrorKind::Auth && !logs_in {
                    // Token auth whose renewal is refused: nothing more to do but report it.
                    t.capped = true;
                    t.act_at = None;
                } else {
                    let next = Instant::now() + self.retry.next_delay();
                    t.act_at = Some(match t.expires {
                        Some((at, _)) if at > Instant::now() => next.min(at),
                        _ => next,
                    });
                }
            }
            tracing::warn!(error = %e, "cannot renew or replace the Vault token; the current one stays in use");
            self.record_credentials();
        }
    }

    pub async fn fetch(&mut self, items: &[AgentItem], budget: Budget) -> Result<Fetched, FetchError> {
        self.maintain().await;
        self.ensure_token(budget).await?;
        match self.read_all(items, budget).await {
            Err(e) if e.kind == ErrorKind::Auth => {
                // The policy, or the token? Ask Vault about the token itself.
                match self.lookup(budget).await {
                    Ok(()) => Err(FetchError::new(
                        ErrorKind::Auth,
                        e.path,
                        format!("{} (the token is valid: its policies do not allow this read)", e.message),
                    )),
                    Err(l) if l.kind == ErrorKind::Auth && self.logs_in() => {
                        tracing::info!("the Vault token was refused (expired or revoked): logging in again");
                        self.token = None;
                        self.ensure_token(budget).await?;
                        self.read_all(items, budget).await
                    }
                    Err(l) if l.kind == ErrorKind::Auth => {
                        let when = match self.token.as_ref().and_then(|t| t.expires) {
                            Some((at, wall)) if at <= Instant::now() => {
                                format!(" (it expired at {})", rfc3339(wall))
                            }
                            _ => String::new(),
                        };
                        Err(FetchError::new(
                            ErrorKind::Auth,
                            e.path,
                            format!(
                                "{}: VAULT_TOKEN is invalid, expired or revoked{when} (lookup-self refused it too)",
                                e.message
                            ),
                        ))
                    }
                    Err(l) => Err(l),
                }
            }
            other => other,
        }
    }

    async fn read_all(&self, items: &[AgentItem], budget: Budget) -> Result<Fetched, FetchError> {
        let entries = super::read_paced(super::unique_paths(items), budget.spread, |p| self.read(p, budget)).await?;
        let mut out = Fetched::default();
        for item in items {
            let display = format!("{}/{}", self.config.kv_mount, item.path);
            let Some((_, (data, version))) = entries.iter().find(|(p, _)| *p == item.path) else {
                return Err(FetchError::new(ErrorKind::NotFound, display, "entry was not read"));
            };
            let key = item.key.as_deref().ok_or_else(|| {
                FetchError::new(ErrorKind::Config, display.clone(), "Vault items need a #key (KV entries are maps)")
            })?;
            let content = value::from_map(data, key)
                .map_err(|m| FetchError::new(ErrorKind::InvalidEntry, format!("{display}#{key}"), m))?;
            out.files.insert(item.name.clone(), content);
            out.versions.push(ItemVersion { name: item.name.clone(), version: Some(version.to_string()) });
        }
        Ok(out)
    }

    async fn read(&self, path: &str, budget: Budget) -> Result<(Map<String, Value>, u64), FetchError> {
        let shown = format!("{}/{}", self.config.kv_mount, path);
        let url = self.url(&[&self.config.kv_mount, "data", path], &shown)?;
        let a = self.call(Method::GET, url, None, true, budget.timeout(), &shown).await?;
        let data = a.json.as_ref().and_then(|j| j.get("data")).filter(|d| d.is_object());
        let metadata = data.and_then(|d| d.get("metadata")).filter(|m| m.is_object());
        let version = metadata.and_then(|m| m["version"].as_u64());
        // A deleted or destroyed current version answers 404 with its metadata.
        if let (Some(m), Some(v)) = (metadata, version) {
            let deleted = m["deletion_time"].as_str().is_some_and(|t| !t.is_empty());
            if deleted || m["destroyed"].as_bool() == Some(true) {
                let what = if deleted { "deleted" } else { "destroyed" };
                return Err(FetchError::new(ErrorKind::NotFound, shown, format!("version {v} is {what}")));
            }
        }
        if a.status != 200 {
            return Err(error_for(&a, &shown));
        }
        match (data.and_then(|d| d.get("data")), version) {
            (Some(Value::Object(map)), Some(v)) => Ok((map.clone(), v)),
            (Some(other), Some(_)) if !other.is_null() => Err(FetchError::new(
                ErrorKind::InvalidEntry,
                shown,
                format!("entry data is {}, expected a map", value::type_name(other)),
            )),
            _ => Err(bad_shape(&a, &shown, "data.data and data.metadata.version (is this a KV v2 mount?)")),
        }
    }

    /// `sys/health` (unauthenticated, no namespace): any answer below 500 means the server is
    /// back (a standby answers too); 5xx is sealed, uninitialised or a gateway without Vault.
    pub async fn probe(&mut self) -> Result<(), FetchError> {
        let shown = "sys/health";
        let mut url = self.url(&["sys", "health"], shown)?;
        url.set_query(Some("standbyok=true&perfstandbyok=true"));
        let mut req = self.http.get(url).timeout(Budget::default().timeout());
        req = req.header("X-Vault-Request", "true");
        self.status.request_sent();
        let resp = req.send().await.map_err(|e| {
            let (kind, text) = if e.is_timeout() {
                (ErrorKind::Unreachable, "timed out with no answer".to_string())
            } else {
                cause::transport(&e, if e.is_connect() { Stage::Connect } else { Stage::Answer })
            };
            FetchError::new(kind, shown, text)
        })?;
        let status = resp.status().as_u16();
        // The body is not needed; reading it keeps the connection reusable.
        let _ = resp.bytes().await;
        match status {
            503 => Err(FetchError::new(ErrorKind::Unavailable, shown, "HTTP 503: sealed or unavailable")),
            501 => Err(FetchError::new(ErrorKind::Unavailable, shown, "HTTP 501: not initialised")),
            s if s >= 500 => Err(FetchError::new(ErrorKind::Unavailable, shown, format!("HTTP {s}"))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, ct: &str, json: Option<Value>) -> Answer {
        Answer { status, content_type: ct.into(), len: 42, json }
    }

    #[test]
    fn statuses_mean_what_they_mean_for_the_pod() {
        assert_eq!(status_kind(403), ErrorKind::Auth);
        assert_eq!(status_kind(404), ErrorKind::NotFound);
        assert_eq!(status_kind(429), ErrorKind::Throttled);
        assert_eq!(status_kind(503), ErrorKind::Unavailable);
        assert_eq!(status_kind(400), ErrorKind::Rejected);
        assert_eq!(status_kind(302), ErrorKind::BadAnswer);
        let sealed = answer(503, "application/json", Some(json!({"errors": ["Vault is sealed"]})));
        assert_eq!(error_for(&sealed, "secret/app").to_string(), "secret/app: unavailable: HTTP 503: Vault is sealed");
        let html = answer(502, "text/html", None);
        assert_eq!(html.describe(), "HTTP 502 (not a Vault answer: text/html, 42 bytes)");
        let page = answer(200, "text/html", None);
        let e = bad_shape(&page, "secret/app", "data.data");
        assert_eq!(e.kind, ErrorKind::BadAnswer);
        assert_eq!(e.message, "HTTP 200 but not a Vault answer (not JSON: text/html, 42 bytes)");
    }

    #[test]
    fn vault_errors_stay_on_one_short_line() {
        let multi = answer(
            400,
            "application/json",
            Some(json!({"errors": ["1 error occurred:\n\t* bad\n\n", "x".repeat(500)]})),
        );
        let text = multi.vault_errors().unwrap();
        assert!(!text.contains('\n') && text.starts_with("1 error occurred: * bad; x") && text.len() == 200, "{text}");
    }
}
