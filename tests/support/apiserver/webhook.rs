//! A mutating webhook as the API server knows it: its registration (the fields of a
//! `MutatingWebhook` that change what the dispatcher does) and a way to call it — over HTTPS
//! like the API server's webhook client, or in process for the emulated second webhook.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::super::serve::{Serve, SERVICE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reinvocation {
    Never,
    IfNeeded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideEffects {
    None,
    NoneOnDryRun,
    Some,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    Fail,
    Ignore,
}

/// Whether a webhook is called for this object in this namespace: its namespaceSelector,
/// objectSelector, rules and matchConditions, in that order (fact 1), folded into one test.
pub type Matcher = Arc<dyn Fn(&Value, &str) -> bool + Send + Sync>;
/// An in-process webhook: AdmissionReview request in, AdmissionReview response out.
pub type Handler = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

#[derive(Clone)]
pub enum Backend {
    /// POST `url` with `client` (HTTP/1.1, the CA bundle, SNI from the URL's host).
    Https {
        client: reqwest::Client,
        url: String,
    },
    InProcess(Handler),
}

#[derive(Clone)]
pub struct Webhook {
    pub name: String,
    pub reinvocation: Reinvocation,
    pub side_effects: SideEffects,
    pub failure_policy: FailurePolicy,
    pub timeout_seconds: u64,
    pub matches: Matcher,
    pub backend: Backend,
}

impl Webhook {
    /// secretmode as `charts/secretmode/templates/mutatingwebhookconfiguration.yaml` registers
    /// it with the default values: `pods.secretmode.io`, `reinvocationPolicy: IfNeeded`,
    /// `sideEffects: None`, `failurePolicy: Fail`, `timeoutSeconds: 3`, system namespaces
    /// excluded, the webhook's own pods excluded by label, and the matchCondition "has an
    /// annotation starting with `<prefix>/`" (evaluated here in Rust; the chart tests compile
    /// the CEL itself).
    pub fn secretmode(serve: &Serve, ca_pem: &str, prefix: &str) -> Webhook {
        // The API server's client keeps idle connections for 90 s (apimachinery's
        // SetOldTransportDefaults); serve keeps them for its idle timeout (120 s), so the
        // emulated client reuses them as long as the real one would.
        let client = serve
            .client_builder(ca_pem)
            .timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("webhook client");
        let prefix = format!("{prefix}/");
        Webhook {
            name: "pods.secretmode.io".into(),
            reinvocation: Reinvocation::IfNeeded,
            side_effects: SideEffects::None,
            failure_policy: FailurePolicy::Fail,
            timeout_seconds: 3,
            matches: Arc::new(move |pod, namespace| {
                let excluded = ["kube-system", "kube-public", "kube-node-lease", "secretmode"].contains(&namespace);
                let ours = pod.pointer("/metadata/labels/secretmode.io~1component").is_some_and(|v| v == "webhook");
                let opted_in = pod
                    .pointer("/metadata/annotations")
                    .and_then(Value::as_object)
                    .is_some_and(|a| a.keys().any(|k| k.starts_with(&prefix)));
                !excluded && !ours && opted_in
            }),
            backend: Backend::Https { client, url: format!("https://{SERVICE}:{}/mutate?timeout=3s", serve.port) },
        }
    }

    /// Sends one review; the answer's body, or why there is none (a call error).
    pub async fn call(&self, review: &Value) -> Result<Value, String> {
        match &self.backend {
            Backend::InProcess(handler) => Ok(handler(review)),
            Backend::Https { client, url } => {
                let response = client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .header("Accept", "application/json, */*")
                    .json(review)
                    .send()
                    .await
                    .map_err(|e| format!("failed to call webhook: Post {url:?}: {e}"))?;
                if response.version() != reqwest::Version::HTTP_11 {
                    return Err(format!("failed to call webhook: answered over {:?}", response.version()));
                }
                let status = response.status();
                let body = response.bytes().await.map_err(|e| format!("failed to call webhook: {e}"))?;
                if !status.is_success() {
                    return Err(format!(
                        "failed to call webhook: the server responded with status {status}: {}",
                        String::from_utf8_lossy(&body)
                    ));
                }
                serde_json::from_slice(&body).map_err(|e| format!("failed to call webhook: decoding the response: {e}"))
            }
        }
    }
}
