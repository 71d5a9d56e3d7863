//! An emulated kube-apiserver admission chain for a Pod CREATE, built from the facts in
//! `../shared/APISERVER.md` (each checked against the Kubernetes source named in the module
//! that implements it). It calls the real `secretmode serve` over HTTPS, the way the API
//! server's webhook client does, and any number of other webhooks.
//!
//! One [`Cluster::create`] is what happens between `kubectl create` (or a controller's POST)
//! and the pod being stored:
//!
//! 1. the body is decoded non-strictly and defaulted (`object.rs`, `defaults.rs`; fact 3, 11);
//! 2. the in-tree mutating plugins run (`plugins.rs`; fact 2);
//! 3. every matching mutating webhook is called in order (`webhook.rs`), each with a fresh
//!    AdmissionReview (support::review; fact 4), its answer checked (`response.rs`; fact 6)
//!    and its patch applied with evanphx json-patch v4 semantics (support::patch; fact 10),
//!    then decoded and defaulted again, "changed" being semantic inequality (fact 11);
//!    a denial becomes the client's error (fact 7), warnings are filtered (fact 8);
//! 4. if any webhook changed the object, the reinvocation round (fact 12,
//!    `apiserver/pkg/admission/reinvocation.go`, `webhook/mutating/dispatcher.go`,
//!    `reinvocationcontext.go`): every in-tree plugin again, then every `IfNeeded` webhook
//!    that was invoked before a later change — never one called for the first time;
//! 5. the part of pod validation a webhook can break (`validate.rs`), then the name is made
//!    from `generateName`.
//!
//! Decisions where the facts leave room: the decode goes through k8s-openapi's v1.33 `Pod`
//! (not a JSON schema), so "unknown" means unknown to 1.33; a denial is worded as the newest
//! `ToStatusErr` words it (`pods "<name>" is forbidden: admission webhook ... denied the
//! request: ...`, `Unknown` for a `generateName` pod); a dry run that reaches a webhook with
//! side effects fails the request with 400, as `callAttrMutatingHook` does; the
//! ServiceAccount plugin's random suffix and request uids are random on every run.
//!
//! Not emulated: selectors other than the chart's (each webhook's [`Webhook::matches`] is
//! plain Rust; the chart tests evaluate the CEL matchCondition itself), validating webhooks
//! and admission policies, PodSecurity, ResourceQuota, `managedFields` (the field manager
//! adds them before admission), HTTP/2 to webhooks, and the defaults of the deprecated in-tree
//! storage drivers.

pub mod checks;
pub mod controllers;
pub mod defaults;
pub mod object;
pub mod platform;
pub mod plugins;
pub mod quantity;
pub mod response;
pub mod validate;
pub mod webhook;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::review::{self, Requester};
use plugins::LimitRange;
use response::Warnings;
pub use webhook::{FailurePolicy, Reinvocation, SideEffects, Webhook};

/// An API error as a client receives it (`metav1.Status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

impl Status {
    pub fn forbidden(message: impl Into<String>) -> Status {
        Status { code: 403, reason: "Forbidden".into(), message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Status {
        Status { code: 422, reason: "Invalid".into(), message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Status {
        Status { code: 400, reason: "BadRequest".into(), message: message.into() }
    }
    pub fn internal(message: impl std::fmt::Display) -> Status {
        Status { code: 500, reason: "InternalError".into(), message: format!("Internal error occurred: {message}") }
    }
}

/// The namespace the pods are created in and what the cluster holds for them.
#[derive(Clone)]
pub struct Cluster {
    pub namespace: String,
    /// ServiceAccounts of the namespace and their `automountServiceAccountToken`.
    pub service_accounts: BTreeMap<String, Option<bool>>,
    pub limit_range: Option<LimitRange>,
    /// Whether the AlwaysPullImages plugin is enabled (it is off by default).
    pub always_pull_images: bool,
    /// The mutating webhooks, in the order the API server calls them (sorted by
    /// configuration name, then in configuration order).
    pub webhooks: Vec<Webhook>,
}

/// One webhook call, kept for the tests to inspect.
#[derive(Clone, Debug)]
pub struct Call {
    pub webhook: String,
    /// 0 for the first round, 1 for the reinvocation round, 2 for [`Cluster::one_more_round`].
    pub round: u8,
    pub request: Value,
    pub response: Option<Value>,
    pub changed: bool,
    /// Fields the webhook's patch wrote that decoding dropped as unknown (fact 11).
    pub dropped: Vec<String>,
}

/// A pod that got through admission.
#[derive(Debug)]
pub struct Admitted {
    /// The pod as stored (name generated, creation time set).
    pub object: Value,
    /// The pod as the API server read it from the client (decoded and defaulted).
    pub submitted: Value,
    /// The pod the first webhook was sent (after the in-tree plugins).
    pub first_webhook_input: Value,
    /// What kubectl would print as `Warning:` lines.
    pub warnings: Vec<String>,
    pub calls: Vec<Call>,
    /// `<webhook name>/<key>` → value.
    pub audit_annotations: Vec<(String, String)>,
}

/// A create the API server refused.
#[derive(Debug)]
pub struct Rejected {
    pub status: Status,
    pub calls: Vec<Call>,
    pub warnings: Vec<String>,
}

/// Per-request state of the webhook dispatcher (`webhookReinvokeContext`).
#[derive(Default)]
struct Reinvoke {
    last_output: Option<Value>,
    previously_invoked: BTreeSet<String>,
    reinvoke: BTreeSet<String>,
    should_reinvoke: bool,
}

impl Reinvoke {
    fn require_reinvoking_previously_invoked(&mut self) {
        self.reinvoke.append(&mut self.previously_invoked);
    }
}

/// What one request accumulates on its way through the chain.
struct Request<'a> {
    requester: &'a Requester,
    dry_run: bool,
    reinvoke: Reinvoke,
    warnings: Warnings,
    calls: Vec<Call>,
    audit_annotations: Vec<(String, String)>,
    first_webhook_input: Option<Value>,
}

/// Which webhooks a dispatch calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Round {
    First,
    Reinvocation,
    /// Every matching webhook again (a test's extra round).
    Extra,
}

impl Cluster {
    /// `namespace` with its `default` ServiceAccount (automount unset), no LimitRange, the
    /// default plugins, and no webhooks.
    pub fn new(namespace: &str) -> Cluster {
        Cluster {
            namespace: namespace.into(),
            service_accounts: BTreeMap::from([("default".to_string(), None)]),
            limit_range: None,
            always_pull_images: false,
            webhooks: Vec::new(),
        }
    }

    /// Creates `pod` as `requester` would (see the module header).
    pub async fn create(&self, pod: &Value, requester: &Requester, dry_run: bool) -> Result<Admitted, Rejected> {
        let mut request = Request {
            requester,
            dry_run,
            reinvoke: Reinvoke::default(),
            warnings: Warnings::default(),
            calls: Vec::new(),
            audit_annotations: Vec::new(),
            first_webhook_input: None,
        };
        let result = self.admit(pod, &mut request).await;
        let warnings = request.warnings.shown().to_vec();
        match result {
            Ok((object, submitted)) => Ok(Admitted {
                object,
                submitted,
                first_webhook_input: request.first_webhook_input.unwrap_or(Value::Null),
                warnings,
                calls: request.calls,
                audit_annotations: request.audit_annotations,
            }),
            Err(status) => Err(Rejected { status, calls: request.calls, warnings }),
        }
    }

    async fn admit(&self, pod: &Value, request: &mut Request<'_>) -> Result<(Value, Value), Status> {
        let mut body = pod.clone();
        match body.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != self.namespace => {
                return Err(Status::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {
                if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("namespace".into(), json!(self.namespace));
                }
            }
        }
        let mut submitted = object::decode(&body).map_err(Status::bad_request)?;
        defaults::pod(&mut submitted);
        let mut internal = from_v1(&submitted);

        self.plugins(&mut internal)?;
        self.dispatch(&mut internal, Round::First, request).await?;
        if request.reinvoke.should_reinvoke {
            self.plugins(&mut internal)?;
            self.dispatch(&mut internal, Round::Reinvocation, request).await?;
        }

        let errors = validate::pod(&internal);
        if !errors.is_empty() {
            let name = internal.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            return Err(Status::invalid(format!("Pod {name:?} is invalid: [{}]", errors.join(", "))));
        }
        let mut stored = to_v1(&internal);
        before_create(&mut stored);
        Ok((stored, submitted))
    }

    /// The in-tree mutating plugins, in `AllOrderedPlugins` order.
    fn plugins(&self, pod: &mut Value) -> Result<(), Status> {
        if let Some(range) = &self.limit_range {
            plugins::limit_ranger(pod, range);
        }
        plugins::service_account(pod, &self.namespace, &self.service_accounts, &mut random_suffix)?;
        if self.always_pull_images {
            plugins::always_pull_images(pod);
        }
        plugins::priority(pod)?;
        plugins::default_toleration_seconds(pod);
        Ok(())
    }

    /// The mutating webhook plugin's `Dispatch` for one round.
    async fn dispatch(&self, internal: &mut Value, round: Round, request: &mut Request<'_>) -> Result<(), Status> {
        if round == Round::Reinvocation
            && request.reinvoke.last_output.as_ref().is_none_or(|last| !object::semantic_eq(last, internal))
        {
            // The in-tree plugins changed the object since the webhooks last saw it.
            request.reinvoke.require_reinvoking_previously_invoked();
        }
        let mut versioned = to_v1(internal);
        for hook in &self.webhooks {
            if !(hook.matches)(&versioned, &self.namespace) {
                continue;
            }
            // No webhook is called for the first time in the reinvocation round.
            if round == Round::Reinvocation && !request.reinvoke.reinvoke.contains(&hook.name) {
                continue;
            }
            if request.first_webhook_input.is_none() {
                request.first_webhook_input = Some(versioned.clone());
            }
            let changed = self.call(hook, &mut versioned, round, request).await?;
            if changed {
                request.reinvoke.require_reinvoking_previously_invoked();
                request.reinvoke.should_reinvoke = true;
            }
            if hook.reinvocation == Reinvocation::IfNeeded {
                request.reinvoke.previously_invoked.insert(hook.name.clone());
            }
        }
        *internal = from_v1(&versioned);
        request.reinvoke.last_output = Some(internal.clone());
        Ok(())
    }

    /// `callAttrMutatingHook` plus the dispatcher's error handling; whether the object changed.
    async fn call(
        &self,
        hook: &Webhook,
        versioned: &mut Value,
        round: Round,
        request: &mut Request<'_>,
    ) -> Result<bool, Status> {
        if request.dry_run && !matches!(hook.side_effects, SideEffects::None | SideEffects::NoneOnDryRun) {
            return Err(Status::bad_request(format!("admission webhook {:?} does not support dry run", hook.name)));
        }
        let uid = review::uuid();
        let review =
            review::review_of(uid.clone(), "CREATE", versioned, &self.namespace, request.requester, request.dry_run);
        let round_number = match round {
            Round::First => 0,
            Round::Reinvocation => 1,
            Round::Extra => 2,
        };
        let mut call = Call {
            webhook: hook.name.clone(),
            round: round_number,
            request: review.clone(),
            response: None,
            changed: false,
            dropped: Vec::new(),
        };
        let answer = hook.call(&review).await;
        let verified = answer.and_then(|body| {
            call.response = Some(body.clone());
            response::verify(&uid, &body).map_err(|e| format!("received invalid webhook response: {e}"))
        });
        let verified = match verified {
            Ok(v) => v,
            Err(e) => {
                request.calls.push(call);
                return match hook.failure_policy {
                    FailurePolicy::Ignore => Ok(false),
                    FailurePolicy::Fail => {
                        Err(Status::internal(format!("failed calling webhook {:?}: {e}", hook.name)))
                    }
                };
            }
        };
        for (key, value) in verified.audit_annotations {
            request.audit_annotations.push((format!("{}/{key}", hook.name), value));
        }
        for w in &verified.warnings {
            request.warnings.add(w);
        }
        if !verified.allowed {
            request.calls.push(call);
            let name = versioned.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            return Err(response::denial(&hook.name, name, verified.result.as_ref()));
        }
        let patch = verified.patch.filter(|p| p.as_array().is_some_and(|ops| !ops.is_empty()));
        let Some(patch) = patch else {
            request.calls.push(call);
            return Ok(false);
        };
        let patched = super::patch::apply(versioned, &patch).map_err(Status::internal);
        let decoded = patched.and_then(|p| object::decode(&p).map(|d| (p, d)).map_err(Status::internal));
        let mut next = match decoded {
            Ok((raw, next)) => {
                call.dropped = object::dropped(&raw, &next);
                next
            }
            Err(status) => {
                request.calls.push(call);
                return Err(status);
            }
        };
        let changed = !object::semantic_eq(versioned, &next);
        defaults::pod(&mut next);
        *versioned = next;
        call.changed = changed;
        request.calls.push(call);
        Ok(changed)
    }

    /// One more full round over an admitted pod: the in-tree plugins, then every matching
    /// webhook. Whether anything changed, with the calls made; a pod at rest changes nothing.
    pub async fn one_more_round(
        &self,
        admitted: &Admitted,
        requester: &Requester,
    ) -> Result<(bool, Vec<Call>), Rejected> {
        let mut request = Request {
            requester,
            dry_run: false,
            reinvoke: Reinvoke::default(),
            warnings: Warnings::default(),
            calls: Vec::new(),
            audit_annotations: Vec::new(),
            first_webhook_input: None,
        };
        let mut pod = admitted.object.clone();
        unstore(&mut pod);
        let before = from_v1(&pod);
        let mut internal = before.clone();
        let result = async {
            self.plugins(&mut internal)?;
            self.dispatch(&mut internal, Round::Extra, &mut request).await
        }
        .await;
        match result {
            Ok(()) => Ok((!object::semantic_eq(&before, &internal), request.calls)),
            Err(status) => Err(Rejected { status, calls: request.calls, warnings: request.warnings.shown().to_vec() }),
        }
    }
}

/// v1 → internal: `serviceAccountName` is taken from the deprecated `serviceAccount` when
/// empty (`Convert_v1_PodSpec_To_core_PodSpec`); the internal type has no deprecated field.
fn from_v1(pod: &Value) -> Value {
    let mut out = pod.clone();
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        let deprecated = spec.remove("serviceAccount");
        if spec.get("serviceAccountName").is_none_or(|n| n == "") {
            if let Some(d) = deprecated.filter(|d| d != "") {
                spec.insert("serviceAccountName".into(), d);
            }
        }
    }
    out
}

/// internal → v1: `serviceAccount` mirrors `serviceAccountName`.
fn to_v1(pod: &Value) -> Value {
    let mut out = pod.clone();
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(name) = spec.get("serviceAccountName").cloned().filter(|n| n != "") {
            spec.insert("serviceAccount".into(), name);
        }
    }
    out
}

/// `BeforeCreate` after admission: the name from `generateName`, the creation time.
fn before_create(pod: &mut Value) {
    let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    if meta.get("name").is_none_or(|n| n == "") {
        if let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
            let name = format!("{prefix}{}", random_suffix());
            meta.insert("name".into(), json!(name));
        }
    }
    meta.insert("creationTimestamp".into(), json!("2026-12-06T00:00:00Z"));
    meta.insert("uid".into(), json!(review::uuid()));
}

/// An admitted pod as a client would submit it again: server-set fields removed.
fn unstore(pod: &mut Value) {
    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("creationTimestamp".into(), Value::Null);
        meta.remove("uid");
    }
}

/// `utilrand.String(5)`: the five characters `SimpleNameGenerator` appends.
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char).collect()
}
