//! The naive parse-clone-diff handler the issue 6 target is calibrated on ("a naive
//! parse-clone-diff handler lands near 0.4"), in two flavours, shared by `bench/ceiling.rs`
//! (which serves them on `POST /naive/kube` and `POST /naive/value`) and
//! `bench/review_cost.rs` (which times them beside secretmode's review).
//!
//! Both make secretmode's own decision (the same work), and differ from secretmode in what is
//! around it: the pod read whole into a `serde_json::Value`, cloned and patched, the answer's
//! patch computed by `json_patch::diff` of the two, and the answer built as a `Value`.
//! - `kube`: the way kube-rs's admission types invite (`AdmissionReview<DynamicObject>`, the
//!   pod turned into a `Value` for the decision, `AdmissionResponse` for the answer).
//! - `value`: `serde_json::Value` throughout, no typed request at all.

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use serde_json::{json, Value};

use secretmode::commands::mutate;
use secretmode::config::Config;
use secretmode::decide::{self, Decision};

#[derive(Clone, Copy, Debug)]
pub enum Flavour {
    Kube,
    Value,
}

impl Flavour {
    pub const ALL: [Flavour; 2] = [Flavour::Kube, Flavour::Value];

    pub fn name(self) -> &'static str {
        match self {
            Flavour::Kube => "kube",
            Flavour::Value => "value",
        }
    }

    pub fn answer(self, body: &[u8], config: &Config) -> Result<Vec<u8>> {
        match self {
            Flavour::Kube => with_kube(body, config),
            Flavour::Value => with_value(body, config),
        }
    }
}

/// What the decision makes of the pod, the naive way.
struct Outcome {
    /// Denial message, if denied.
    denied: Option<String>,
    /// The base64 JSON Patch from cloning, patching and diffing, if the pod changes.
    patch: Option<String>,
    warnings: Vec<String>,
}

fn decide_by_diff(original: &Value, namespace: &str, config: &Config) -> Result<Outcome> {
    Ok(match decide::admit_pod(original, namespace, config) {
        Decision::Allow { patch: ops, warnings, .. } => {
            let mutated = mutate::apply(original, &ops)?;
            let diff = json_patch::diff(original, &mutated);
            let patch = (!diff.0.is_empty())
                .then(|| serde_json::to_vec(&diff).map(|p| base64::engine::general_purpose::STANDARD.encode(p)))
                .transpose()?;
            Outcome { denied: None, patch, warnings }
        }
        Decision::Deny { message, .. } => Outcome { denied: Some(message), patch: None, warnings: Vec::new() },
    })
}

fn with_kube(body: &[u8], config: &Config) -> Result<Vec<u8>> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
    let request: AdmissionRequest<DynamicObject> = review.try_into()?;
    let mut response = AdmissionResponse::from(&request);
    let is_pod_create = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.operation == Operation::Create
        && request.sub_resource.as_deref().unwrap_or_default().is_empty();
    let mut patch = None;
    if let (Some(pod), true) = (&request.object, is_pod_create) {
        let original = serde_json::to_value(pod)?;
        let namespace = pod.metadata.namespace.clone().or_else(|| request.namespace.clone()).unwrap_or_default();
        let outcome = decide_by_diff(&original, &namespace, config)?;
        if let Some(message) = outcome.denied {
            response = response.deny(message);
        }
        if !outcome.warnings.is_empty() {
            response.warnings = Some(outcome.warnings);
        }
        patch = outcome.patch;
    }
    // kube-core 2.0.1's own `AdmissionResponse::with_patch` writes the patch's bytes as a JSON
    // array of numbers (kube-rs/kube issue 1781), about three times secretmode's base64; the
    // patch goes in as base64, as the API reference has it, so both answers are the same size.
    let mut review = serde_json::to_value(response.into_review())?;
    if let Some(patch) = patch {
        review["response"]["patchType"] = "JSONPatch".into();
        review["response"]["patch"] = patch.into();
    }
    Ok(serde_json::to_vec(&review)?)
}

fn with_value(body: &[u8], config: &Config) -> Result<Vec<u8>> {
    let review: Value = serde_json::from_slice(body)?;
    let request = &review["request"];
    let Some(uid) = request["uid"].as_str() else { bail!("no request uid") };
    let mut response = json!({ "uid": uid, "allowed": true });
    let is_pod_create = request["kind"]["group"].as_str().unwrap_or_default().is_empty()
        && request["kind"]["kind"] == "Pod"
        && request["operation"] == "CREATE"
        && request["subResource"].as_str().unwrap_or_default().is_empty();
    let original = request["object"].clone();
    if original.is_object() && is_pod_create {
        let namespace = original["metadata"]["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .or_else(|| request["namespace"].as_str())
            .unwrap_or_default();
        let outcome = decide_by_diff(&original, namespace, config)?;
        if let Some(message) = outcome.denied {
            response["allowed"] = false.into();
            response["status"] = json!({ "code": 403, "message": message });
        }
        if let Some(patch) = outcome.patch {
            response["patchType"] = "JSONPatch".into();
            response["patch"] = patch.into();
        }
        if !outcome.warnings.is_empty() {
            response["warnings"] = outcome.warnings.into();
        }
    }
    let answer = json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response });
    Ok(serde_json::to_vec(&answer)?)
}

/// `--check`: for each review and flavour, the naive answer must allow or deny as secretmode's
/// does, with the same warnings, and its patch must turn the pod into the same pod.
pub fn check(files: &[String], config: &Config) -> Result<()> {
    ensure!(!files.is_empty(), "--check needs at least one AdmissionReview file");
    for file in files {
        let body = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        let review: Value = serde_json::from_slice(&body).with_context(|| format!("{file} is not JSON"))?;
        let ours: Value = serde_json::from_slice(&secretmode::webhook::review::review(&body, config)?.body)?;
        let ours = &ours["response"];
        let patched = |r: &Value| -> Result<Value> {
            let mut pod = review["request"]["object"].clone();
            if let Some(patch) = r["patch"].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD.decode(patch)?;
                let patch: json_patch::Patch = serde_json::from_slice(&bytes)?;
                json_patch::patch(&mut pod, &patch)?;
            }
            Ok(pod)
        };
        let warnings = |r: &Value| r["warnings"].as_array().cloned().unwrap_or_default();
        for flavour in Flavour::ALL {
            let naive: Value = serde_json::from_slice(&flavour.answer(&body, config)?)?;
            let naive = &naive["response"];
            let name = flavour.name();
            if ours["uid"] != naive["uid"] || ours["allowed"] != naive["allowed"] || warnings(ours) != warnings(naive) {
                bail!("{file}: the naive handler ({name}) answers {naive} where secretmode answers {ours}");
            }
            ensure!(
                patched(ours)? == patched(naive)?,
                "{file}: the naive handler's patch ({name}) gives another pod than secretmode's"
            );
        }
        println!("{file}: both naive handlers' answers patch the pod as secretmode's does");
    }
    Ok(())
}
