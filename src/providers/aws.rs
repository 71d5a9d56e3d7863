//! AWS Secrets Manager: its section of the webhook config (and what the webhook derives from
//! it per pod), and the agent's client, through the official SDK. Retries are switched off in
//! the SDK: the agent's own loop owns retry timing, so a struggling provider sees one request
//! per attempt, not an SDK retry burst multiplied by ours.
//!
//! The SDK's errors are classified from their parts, not their text: a service error by its
//! code and HTTP status (an answer that carries no AWS error code is "not an AWS answer" and
//! says its status); a response that could not be read or parsed by its source chain (a body
//! cut mid-way is an outage, a 200 HTML page a bad answer); dispatch failures by their I/O
//! cause. Web-identity credentials are cached here (not in the SDK's cache) so that an
//! `ExpiredTokenException` can drop them and log in to STS again, and so an STS failure is
//! reported as itself rather than as "dispatch failure".

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::{self, error::CredentialsError, future, ProvideCredentials};
use aws_credential_types::Credentials as AwsCredentials;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider as TlsProvider};

use serde::{Deserialize, Serialize};

use super::cause::{self, Stage};
use super::{
    value, AgentItem, Budget, Credentials, ErrorKind, FetchError, Fetched, ItemVersion, Report, SecretKeyRef,
    CONNECT_TIMEOUT, REQUEST_TIMEOUT,
};
use crate::vocabulary::duration;

// ---- The provider's section of the webhook config, and what the webhook needs to know ----

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsProvider {
    pub region: String,
    /// Endpoint override (tests, VPC endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default = "default_version_stage")]
    pub version_stage: String,
    pub auth: AwsAuth,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "method", rename_all = "camelCase", deny_unknown_fields)]
pub enum AwsAuth {
    /// IRSA-style: AssumeRoleWithWebIdentity with the projected token.
    #[serde(rename_all = "camelCase")]
    WebIdentity {
        role_arn: String,
        #[serde(default = "default_aws_audience")]
        audience: String,
    },
    /// The standard credential chain (env, instance metadata, pod identity).
    Chain,
}

fn default_version_stage() -> String {
    "AWSCURRENT".into()
}
fn default_aws_audience() -> String {
    "sts.amazonaws.com".into()
}

impl AwsProvider {
    /// A secret may be used whole: an item needs no `#key`.
    pub const KEY_REQUIRED: Option<&'static str> = None;

    /// Audience of the projected service-account token, if the auth method uses one.
    pub fn token_audience(&self) -> Option<&str> {
        match &self.auth {
            AwsAuth::WebIdentity { audience, .. } => Some(audience),
            AwsAuth::Chain => None,
        }
    }

    /// Fills the per-pod placeholders of the role ARN ([`super::ProviderConfig::personalise`]).
    pub fn personalise(&mut self, fill: &dyn Fn(&mut String)) {
        match &mut self.auth {
            AwsAuth::WebIdentity { role_arn, .. } => fill(role_arn),
            AwsAuth::Chain => {}
        }
    }

    /// Env the agent container takes from a Secret: none.
    pub fn secret_env(&self) -> Option<(&'static str, &SecretKeyRef)> {
        None
    }

    /// Where the agent connects, for its log.
    pub fn location(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| format!("region {}", self.region))
    }
}

// ---- The agent's client ----

const SESSION_NAME: &str = "secretmode-agent";

pub struct Aws {
    config: AwsProvider,
    client: aws_sdk_secretsmanager::Client,
    status: Arc<dyn Report>,
    web: Option<WebIdentity>,
}

fn timeouts(t: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(t))
        .operation_attempt_timeout(t)
        .operation_timeout(t)
        .build()
}

impl Aws {
    pub async fn new(
        config: &AwsProvider,
        token_file: Option<PathBuf>,
        status: Arc<dyn Report>,
    ) -> Result<Aws, FetchError> {
        // ring, like the rest of the binary: no second crypto library (aws-lc) to build and ship.
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(TlsProvider::Rustls(CryptoMode::Ring)).build_https();
        let region = Region::new(config.region.clone());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region.clone())
            .http_client(http.clone())
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts(REQUEST_TIMEOUT));
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let mut web = None;
        if let AwsAuth::WebIdentity { role_arn, .. } = &config.auth {
            let token_file = token_file.ok_or_else(|| {
                FetchError::new(
                    ErrorKind::Config,
                    "sts:AssumeRoleWithWebIdentity",
                    "webIdentity auth needs a token file",
                )
            })?;
            // AssumeRoleWithWebIdentity is unsigned. Its endpoint is the regional STS one, or
            // AWS_ENDPOINT_URL_STS when set (the SDK's standard override, used by tests).
            let sts_conf = aws_config::defaults(BehaviorVersion::latest())
                .region(region)
                .http_client(http)
                .retry_config(RetryConfig::disabled())
                .timeout_config(timeouts(REQUEST_TIMEOUT))
                .no_credentials()
                .load()
                .await;
            let w = WebIdentity(Arc::new(WebInner {
                sts: aws_sdk_sts::Client::new(&sts_conf),
                role_arn: role_arn.clone(),
                token_file,
                status: status.clone(),
                cached: Mutex::new(None),
                last_error: Mutex::new(None),
                single: tokio::sync::Mutex::new(()),
            }));
            // Our own cache (below), so an expired session can be dropped on demand.
            loader = loader.credentials_provider(w.clone()).identity_cache(IdentityCache::no_cache());
            web = Some(w);
        } else {
            status.record_credentials(Credentials {
                method: "chain",
                expires_at: None,
                renewable: true,
                expiring: false,
            });
        }
        let sdk = loader.load().await;
        Ok(Aws { config: config.clone(), client: aws_sdk_secretsmanager::Client::new(&sdk), status, web })
    }

    pub async fn fetch(&mut self, items: &[AgentItem], budget: Budget) -> Result<Fetched, FetchError> {
        let secrets = super::read_paced(super::unique_paths(items), budget.spread, |id| self.get(id, budget)).await?;
        let mut out = Fetched::default();
        for item in items {
            let Some((_, secret)) = secrets.iter().find(|(id, _)| *id == item.path) else {
                return Err(FetchError::new(ErrorKind::NotFound, item.path.clone(), "secret was not read"));
            };
            let display = match &item.key {
                Some(k) => format!("{}#{k}", item.path),
                None => item.path.clone(),
            };
            let invalid = |m: String| FetchError::new(ErrorKind::InvalidEntry, display.clone(), m);
            let content = match (&item.key, &secret.content) {
                (Some(key), SecretContent::String(text)) => {
                    let map = value::parse_object(text).map_err(invalid)?;
                    value::from_map(&map, key).map_err(invalid)?
                }
                (Some(_), SecretContent::Binary(_)) => {
                    return Err(invalid("secret is SecretBinary; a #key needs a JSON SecretString".into()))
                }
                (None, SecretContent::String(text)) => value::non_empty(text.as_bytes().to_vec()).map_err(invalid)?,
                (None, SecretContent::Binary(bytes)) => value::non_empty(bytes.clone()).map_err(invalid)?,
            };
            out.files.insert(item.name.clone(), content);
            out.versions.push(ItemVersion { name: item.name.clone(), version: secret.version.clone() });
        }
        Ok(out)
    }

    /// One read of the first item: the service answering at all (even "no") means it is back.
    pub async fn probe(&mut self, items: &[AgentItem]) -> Result<(), FetchError> {
        let Some(first) = items.first() else { return Ok(()) };
        match self.get(&first.path, Budget::default()).await {
            Ok(_) => Ok(()),
            Err(e) if !e.kind.is_outage() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, id: &str, budget: Budget) -> Result<Secret, FetchError> {
        match self.get_once(id, budget).await {
            // A session that expired early (or was revoked): new credentials, one more try.
            Err((e, true)) => {
                if let Some(w) = &self.web {
                    tracing::info!("AWS session refused as expired: assuming the role again");
                    w.0.invalidate();
                    return self.get_once(id, budget).await.map_err(|(e, _)| e);
                }
                Err(e)
            }
            Err((e, false)) => Err(e),
            Ok(s) => Ok(s),
        }
    }

    /// The error carries whether the credentials were refused as expired.
    async fn get_once(&self, id: &str, budget: Budget) -> Result<Secret, (FetchError, bool)> {
        self.status.request_sent();
        let t = budget.timeout();
        let over = aws_sdk_secretsmanager::config::Builder::default().timeout_config(timeouts(t));
        let result = self
            .client
            .get_secret_value()
            .secret_id(id)
            .version_stage(&self.config.version_stage)
            .customize()
            .config_override(over)
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                // Credentials come first: if STS failed, that is the cause.
                if !matches!(e, SdkError::ServiceError(_) | SdkError::ResponseError(_)) {
                    if let Some(sts) = self.web.as_ref().and_then(|w| w.0.take_error()) {
                        return Err((sts, false));
                    }
                }
                let expired = e.as_service_error().and_then(|s| s.code()) == Some("ExpiredTokenException");
                return Err((classify(&e, id, t), expired));
            }
        };
        let content = match (out.secret_string, out.secret_binary) {
            (Some(s), _) => SecretContent::String(s),
            (None, Some(b)) => SecretContent::Binary(b.into_inner()),
            (None, None) => {
                return Err((
                    FetchError::new(
                        ErrorKind::BadAnswer,
                        id,
                        "HTTP 200 but neither SecretString nor SecretBinary is set",
                    ),
                    false,
                ))
            }
        };
        Ok(Secret { content, version: out.version_id })
    }
}

struct Secret {
    content: SecretContent,
    version: Option<String>,
}

enum SecretContent {
    String(String),
    Binary(Vec<u8>),
}

/// `text/html, 150 bytes`: what an answer looked like, never its content.
fn shape(raw: &HttpResponse) -> String {
    let ct = raw.headers().get("content-type").map(|v| v.split(';').next().unwrap_or_default().trim().to_string());
    let ct = ct.filter(|c| !c.is_empty()).unwrap_or_else(|| "no content type".into());
    match raw.body().bytes() {
        Some(b) => format!("{ct}, {} bytes", b.len()),
        None => ct,
    }
}

fn code_kind(code: &str, status: u16) -> ErrorKind {
    match code {
        "ResourceNotFoundException" => ErrorKind::NotFound,
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "InvalidIdentityToken"
        | "DecryptionFailure" => ErrorKind::Auth,
        "ThrottlingException" | "Throttling" | "TooManyRequestsException" | "RequestLimitExceeded" => {
            ErrorKind::Throttled
        }
        "InternalServiceError" | "InternalFailure" | "ServiceUnavailable" | "IDPCommunicationError" => {
            ErrorKind::Unavailable
        }
        _ if status == 429 => ErrorKind::Throttled,
        _ if status >= 500 => ErrorKind::Unavailable,
        _ => ErrorKind::Rejected,
    }
}

/// A one-line description and kind of an SDK error, never carrying a value.
/// `DisplayErrorContext` is not used: it prints the raw response, body included, and a
/// response that failed to parse may be a GetSecretValue answer.
fn classify<E>(e: &SdkError<E, HttpResponse>, path: &str, timeout: Duration) -> FetchError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let secs = duration::format_ms(timeout);
    let (kind, message) = match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            match ctx.err().code() {
                Some(code) => {
                    let msg = ctx.err().message().map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "));
                    let msg: String = msg.map(|m| format!(": {m}")).unwrap_or_default().chars().take(200).collect();
                    (code_kind(code, status), format!("HTTP {status} {code}{msg}"))
                }
                // No AWS error code: a gateway's page or garbage, not an AWS answer.
                None => {
                    let kind = match status {
                        429 => ErrorKind::Throttled,
                        500..=599 => ErrorKind::Unavailable,
                        401 | 403 => ErrorKind::Auth,
                        404 => ErrorKind::NotFound,
                        _ => ErrorKind::BadAnswer,
                    };
                    (kind, format!("HTTP {status} (not an AWS answer: {})", shape(ctx.raw())))
                }
            }
        }
        SdkError::ResponseError(ctx) => {
            let status = ctx.raw().status().as_u16();
            match read_failure(e) {
                Some((true, why)) => (ErrorKind::Unreachable, format!("stalled mid-body: HTTP {status}, {why}")),
                Some((false, why)) => (ErrorKind::Unreachable, format!("dropped mid-body: HTTP {status}, {why}")),
                None => (
                    ErrorKind::BadAnswer,
                    format!("HTTP {status} but not an AWS answer (it could not be parsed: {})", shape(ctx.raw())),
                ),
            }
        }
        SdkError::TimeoutError(_) => {
            (ErrorKind::Unreachable, format!("timed out after {secs} with no complete answer"))
        }
        SdkError::DispatchFailure(d) => {
            if d.is_timeout() {
                (ErrorKind::Unreachable, format!("timed out after {secs} with no answer"))
            } else {
                let stage = match d.as_connector_error() {
                    Some(c) if c.to_string().contains("connect") => Stage::Connect,
                    _ => Stage::Answer,
                };
                cause::transport(e, stage)
            }
        }
        SdkError::ConstructionFailure(_) => (ErrorKind::Config, super::chain(e)),
        _ => (ErrorKind::Unreachable, super::chain(e)),
    };
    FetchError::new(kind, path, message)
}

/// A response error caused by reading the body (not by parsing it): (stalled?, cause). The
/// SDK's stalled-stream protection (less than 1 byte/s for its 5 s grace period) is only
/// recognisable by its text; its type is private to the SDK's runtime.
fn read_failure(e: &(dyn std::error::Error + 'static)) -> Option<(bool, String)> {
    let mut cur = e.source();
    while let Some(err) = cur {
        if err.to_string().contains("minimum throughput") {
            return Some((true, "the body stopped (the SDK's stalled-stream protection gave up)".into()));
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return Some((true, "then nothing until the timeout".into()));
            }
            let (_, why) = cause::transport(h, Stage::Body);
            return Some((false, why));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Some((true, "then nothing until the timeout".into()));
            }
            let (_, why) = cause::transport(io, Stage::Body);
            return Some((false, why));
        }
        cur = err.source();
    }
    None
}

/// IRSA-style credentials: AssumeRoleWithWebIdentity with the projected token, re-read on
/// every call because the kubelet rotates it. Cached until two thirds of their lifetime has
/// passed (one STS call per hour for the default session), dropped on `ExpiredTokenException`.
#[derive(Clone, Debug)]
struct WebIdentity(Arc<WebInner>);

#[derive(Debug)]
struct WebInner {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    token_file: PathBuf,
    status: Arc<dyn Report>,
    /// (credentials, when to replace them).
    cached: Mutex<Option<(AwsCredentials, SystemTime)>>,
    /// The last STS failure, for the read that needed the credentials to report.
    last_error: Mutex<Option<FetchError>>,
    /// One STS call at a time, however many reads want credentials.
    single: tokio::sync::Mutex<()>,
}

impl WebInner {
    fn fresh(&self) -> Option<AwsCredentials> {
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        cached.as_ref().filter(|(_, replace_at)| SystemTime::now() < *replace_at).map(|(c, _)| c.clone())
    }

    fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn take_error(&self) -> Option<FetchError> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    async fn load(&self) -> provider::Result {
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        let _one = self.single.lock().await;
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        match self.assume().await {
            Ok(c) => Ok(c),
            Err(e) => {
                let text = e.to_string();
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Err(CredentialsError::provider_error(text))
            }
        }
    }

    async fn assume(&self) -> Result<AwsCredentials, FetchError> {
        let shown = format!("sts:AssumeRoleWithWebIdentity {}", self.role_arn);
        let token = super::read_token_file(&self.token_file)?;
        self.status.request_sent();
        let out = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name(SESSION_NAME)
            .web_identity_token(token)
            .send()
            .await
            .map_err(|e| classify(&e, &shown, REQUEST_TIMEOUT))?;
        let c = out.credentials.ok_or_else(|| {
            FetchError::new(ErrorKind::BadAnswer, &shown, "HTTP 200 but the answer holds no credentials")
        })?;
        let now = SystemTime::now();
        let expiry = SystemTime::try_from(c.expiration).ok();
        let replace_at = match expiry {
            Some(exp) => now + exp.duration_since(now).unwrap_or_default() * 2 / 3,
            None => now + Duration::from_secs(600),
        };
        let creds =
            AwsCredentials::new(c.access_key_id, c.secret_access_key, Some(c.session_token), expiry, "WebIdentity");
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((creds.clone(), replace_at));
        self.status.record_credentials(Credentials {
            method: "webIdentity",
            expires_at: expiry,
            renewable: true,
            expiring: false,
        });
        Ok(creds)
    }
}

impl ProvideCredentials for WebIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.0.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_mean_what_they_mean_for_the_pod() {
        assert_eq!(code_kind("ResourceNotFoundException", 400), ErrorKind::NotFound);
        assert_eq!(code_kind("AccessDeniedException", 400), ErrorKind::Auth);
        assert_eq!(code_kind("ThrottlingException", 400), ErrorKind::Throttled);
        assert_eq!(code_kind("InternalServiceError", 500), ErrorKind::Unavailable);
        assert_eq!(code_kind("SomethingNew", 503), ErrorKind::Unavailable);
        assert_eq!(code_kind("InvalidRequestException", 400), ErrorKind::Rejected);
    }
}
