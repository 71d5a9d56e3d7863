//! AWS Secrets Manager through the official SDK. Retries are switched off in the SDK: the
//! agent's own loop owns retry timing (full jitter, floor, cap), so a struggling provider sees
//! one request per attempt, not an SDK retry burst multiplied by ours.

use std::path::PathBuf;
use std::time::SystemTime;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::{self, error::CredentialsError, future, ProvideCredentials};
use aws_credential_types::Credentials;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider as TlsProvider};
use prometheus_client::metrics::counter::Counter;

use super::{value, ErrorKind, FetchError, Fetched, CONNECT_TIMEOUT, REQUEST_TIMEOUT};
use crate::agent::status::ItemVersion;
use crate::agent_spec::AgentItem;
use crate::config::{AwsAuth, AwsProvider};

const SESSION_NAME: &str = "secretmode-agent";

pub struct Aws {
    config: AwsProvider,
    client: aws_sdk_secretsmanager::Client,
    requests: Counter,
}

impl Aws {
    pub async fn new(config: &AwsProvider, token_file: Option<PathBuf>, requests: Counter) -> Result<Aws, FetchError> {
        // ring, like the rest of the binary: no second crypto library (aws-lc) to build and ship.
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(TlsProvider::Rustls(CryptoMode::Ring)).build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(REQUEST_TIMEOUT)
            .operation_timeout(REQUEST_TIMEOUT)
            .build();
        let region = Region::new(config.region.clone());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region.clone())
            .http_client(http.clone())
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts.clone());
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
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
                .timeout_config(timeouts)
                .no_credentials()
                .load()
                .await;
            let web = WebIdentity {
                sts: aws_sdk_sts::Client::new(&sts_conf),
                role_arn: role_arn.clone(),
                token_file,
                requests: requests.clone(),
            };
            loader = loader.credentials_provider(web);
        }
        let sdk = loader.load().await;
        Ok(Aws { config: config.clone(), client: aws_sdk_secretsmanager::Client::new(&sdk), requests })
    }

    pub async fn fetch(&mut self, items: &[AgentItem]) -> Result<Fetched, FetchError> {
        let mut secrets = Vec::new();
        for id in super::unique_paths(items) {
            secrets.push((id, self.get(id).await?));
        }
        let mut out = Fetched::default();
        for item in items {
            let Some((_, secret)) = secrets.iter().find(|(id, _)| *id == item.path) else {
                return Err(FetchError::new(ErrorKind::NotFound, item.path.clone(), "secret was not read"));
            };
            let display = match &item.key {
                Some(k) => format!("{}#{k}", item.path),
                None => item.path.clone(),
            };
            let malformed = |m: String| FetchError::new(ErrorKind::Malformed, display.clone(), m);
            let content = match (&item.key, &secret.content) {
                (Some(key), SecretContent::String(text)) => {
                    let map = value::parse_object(text).map_err(malformed)?;
                    value::from_map(&map, key).map_err(malformed)?
                }
                (Some(_), SecretContent::Binary(_)) => {
                    return Err(malformed("secret is SecretBinary; a #key needs a JSON SecretString".into()))
                }
                (None, SecretContent::String(text)) => value::non_empty(text.as_bytes().to_vec()).map_err(malformed)?,
                (None, SecretContent::Binary(bytes)) => value::non_empty(bytes.clone()).map_err(malformed)?,
            };
            out.files.insert(item.name.clone(), content);
            out.versions.push(ItemVersion { name: item.name.clone(), version: secret.version.clone() });
        }
        Ok(out)
    }

    async fn get(&self, id: &str) -> Result<Secret, FetchError> {
        self.requests.inc();
        let out = self
            .client
            .get_secret_value()
            .secret_id(id)
            .version_stage(&self.config.version_stage)
            .send()
            .await
            .map_err(|e| classify(&e, id))?;
        let content = match (out.secret_string, out.secret_binary) {
            (Some(s), _) => SecretContent::String(s),
            (None, Some(b)) => SecretContent::Binary(b.into_inner()),
            (None, None) => {
                return Err(FetchError::new(ErrorKind::Malformed, id, "neither SecretString nor SecretBinary is set"))
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

/// A one-line description of an SDK error that cannot carry a value. `DisplayErrorContext`
/// is not used: it prints the raw response, body included, and a response that failed to
/// parse may be a GetSecretValue answer.
fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug + 'static>(
    e: &SdkError<E, R>,
) -> String {
    match e {
        SdkError::ServiceError(ctx) => {
            let err = ctx.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("service error"),
                err.message().unwrap_or("no message").chars().take(300).collect::<String>()
            )
        }
        SdkError::ConstructionFailure(_) | SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => super::chain(e),
        SdkError::ResponseError(_) => "the response could not be parsed".to_string(),
        _ => e.to_string(),
    }
}

fn classify(e: &SdkError<GetSecretValueError>, id: &str) -> FetchError {
    let text = describe(e);
    let kind = match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            match (ctx.err(), ctx.err().code()) {
                (GetSecretValueError::ResourceNotFoundException(_), _) => ErrorKind::NotFound,
                (_, Some("AccessDeniedException" | "UnrecognizedClientException" | "InvalidSignatureException"))
                | (_, Some("ExpiredTokenException" | "DecryptionFailure")) => ErrorKind::Auth,
                _ if status >= 500 || status == 429 => ErrorKind::Unreachable,
                _ => ErrorKind::Malformed,
            }
        }
        SdkError::TimeoutError(_) => ErrorKind::Unreachable,
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => ErrorKind::Unreachable,
        _ if text.contains("AssumeRoleWithWebIdentity") && text.contains("dispatch failure") => ErrorKind::Unreachable,
        _ if text.contains("AssumeRoleWithWebIdentity") && text.contains("io error") => ErrorKind::Unreachable,
        _ if text.to_ascii_lowercase().contains("credential") => ErrorKind::Auth,
        SdkError::ResponseError(_) => ErrorKind::Malformed,
        _ => ErrorKind::Unreachable,
    };
    FetchError::new(kind, id, text)
}

/// IRSA-style credentials: AssumeRoleWithWebIdentity with the projected token, re-read on
/// every call because the kubelet rotates it. The SDK's identity cache keeps the answer
/// until shortly before it expires.
#[derive(Debug)]
struct WebIdentity {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    token_file: PathBuf,
    requests: Counter,
}

impl WebIdentity {
    async fn load(&self) -> provider::Result {
        let token = super::read_token_file(&self.token_file)
            .map_err(|e| CredentialsError::invalid_configuration(e.to_string()))?;
        self.requests.inc();
        let out = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name(SESSION_NAME)
            .web_identity_token(token)
            .send()
            .await
            .map_err(|e| {
                let text = format!("AssumeRoleWithWebIdentity {}: {}", self.role_arn, describe(&e));
                CredentialsError::provider_error(text)
            })?;
        let c = out
            .credentials
            .ok_or_else(|| CredentialsError::unhandled("AssumeRoleWithWebIdentity returned no credentials"))?;
        let expiry = SystemTime::try_from(c.expiration).ok();
        Ok(Credentials::new(c.access_key_id, c.secret_access_key, Some(c.session_token), expiry, "WebIdentity"))
    }
}

impl ProvideCredentials for WebIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.load())
    }
}
