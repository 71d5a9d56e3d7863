//! A second, independent mutating webhook, in process, of the kind every cluster runs beside
//! secretmode: a cloud-identity injector (like the EKS pod-identity webhook) that gives every
//! container and init container an env var, a projected token volume and its mount, and —
//! like a service mesh of the classic kind — optionally adds a proxy container of its own.
//! Idempotent and add-only, as a well-behaved webhook is; it never looks at secretmode.

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

use super::webhook::{Backend, FailurePolicy, Reinvocation, SideEffects, Webhook};

pub const NAME: &str = "identity.platform.example.com";
pub const ENV: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
pub const ENV_VALUE: &str = "/var/run/secrets/platform.example.com/serviceaccount/token";
pub const VOLUME: &str = "platform-identity-token";
pub const MOUNT_PATH: &str = "/var/run/secrets/platform.example.com/serviceaccount";
pub const PROXY: &str = "platform-proxy";

/// The platform webhook with `reinvocation`; `proxy` adds the proxy container.
pub fn webhook(reinvocation: Reinvocation, proxy: bool) -> Webhook {
    Webhook {
        name: NAME.into(),
        reinvocation,
        side_effects: SideEffects::None,
        failure_policy: FailurePolicy::Fail,
        timeout_seconds: 10,
        matches: Arc::new(|_, _| true),
        backend: Backend::InProcess(Arc::new(move |review| answer(review, proxy))),
    }
}

fn answer(review: &Value, proxy: bool) -> Value {
    let uid = review["request"]["uid"].clone();
    let ops = ops(&review["request"]["object"], proxy);
    let mut response = json!({"uid": uid, "allowed": true});
    if !ops.is_empty() {
        let bytes = serde_json::to_vec(&ops).unwrap_or_default();
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

fn env_var() -> Value {
    json!({"name": ENV, "value": ENV_VALUE})
}

fn mount() -> Value {
    json!({"name": VOLUME, "readOnly": true, "mountPath": MOUNT_PATH})
}

/// Add-only ops: wire every container and init container, add the volume, add the proxy.
pub fn ops(pod: &Value, proxy: bool) -> Vec<Value> {
    let mut ops = Vec::new();
    let spec = &pod["spec"];
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let at = format!("/spec/{list}/{i}");
            if !c["env"].as_array().is_some_and(|e| e.iter().any(|e| e["name"] == ENV)) {
                ops.push(match c["env"].as_array() {
                    Some(_) => json!({"op": "add", "path": format!("{at}/env/-"), "value": env_var()}),
                    None => json!({"op": "add", "path": format!("{at}/env"), "value": [env_var()]}),
                });
            }
            if !c["volumeMounts"].as_array().is_some_and(|m| m.iter().any(|m| m["mountPath"] == MOUNT_PATH)) {
                ops.push(match c["volumeMounts"].as_array() {
                    Some(_) => json!({"op": "add", "path": format!("{at}/volumeMounts/-"), "value": mount()}),
                    None => json!({"op": "add", "path": format!("{at}/volumeMounts"), "value": [mount()]}),
                });
            }
        }
    }
    if !spec["volumes"].as_array().is_some_and(|v| v.iter().any(|v| v["name"] == VOLUME)) {
        let volume = json!({"name": VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": "sts.platform.example.com", "expirationSeconds": 86400, "path": "token"}}]}});
        ops.push(match spec["volumes"].as_array() {
            Some(_) => json!({"op": "add", "path": "/spec/volumes/-", "value": volume}),
            None => json!({"op": "add", "path": "/spec/volumes", "value": [volume]}),
        });
    }
    if proxy && !spec["containers"].as_array().is_some_and(|c| c.iter().any(|c| c["name"] == PROXY)) {
        let container = json!({
            "name": PROXY,
            "image": "registry.example/platform-proxy:1.4.2",
            "args": ["proxy", "--listen", ":15001"],
            "ports": [{"name": "platform-proxy", "containerPort": 15001}],
            "env": [env_var()],
            "volumeMounts": [mount()],
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1337, "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
        });
        ops.push(json!({"op": "add", "path": "/spec/containers/-", "value": container}));
    }
    if pod.pointer("/metadata/annotations/platform.example.com~1identity") != Some(&json!("injected")) {
        ops.push(match pod.pointer("/metadata/annotations") {
            Some(Value::Object(_)) => {
                json!({"op": "add", "path": "/metadata/annotations/platform.example.com~1identity", "value": "injected"})
            }
            _ => json!({"op": "add", "path": "/metadata/annotations", "value": {"platform.example.com/identity": "injected"}}),
        });
    }
    ops
}
