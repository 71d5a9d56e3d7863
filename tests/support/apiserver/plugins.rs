//! The in-tree mutating admission plugins that touch a Pod CREATE, in the order
//! `pkg/kubeapiserver/options/plugins.go` runs them: LimitRanger, ServiceAccount,
//! AlwaysPullImages (off by default; on where a cluster enables it), Priority,
//! DefaultTolerationSeconds. They run before the mutating webhooks, and all of them again in
//! the reinvocation round (fact 12), which is how the ServiceAccount plugin comes to mount its
//! token into a container a webhook just added.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::quantity;
use super::Status;

/// A namespace's LimitRange with one `type: Container` item: `default` (limits) and
/// `defaultRequest` (requests), as `defaultContainerResourceRequirements` reads them.
#[derive(Clone, Debug)]
pub struct LimitRange {
    pub default: BTreeMap<String, String>,
    pub default_request: BTreeMap<String, String>,
}

impl LimitRange {
    /// Defaults for cpu, memory and ephemeral-storage, written as an admin might (the API
    /// server canonicalises them when the LimitRange is stored).
    pub fn typical() -> LimitRange {
        let map = |pairs: [(&str, &str); 3]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), quantity::canonical(v).unwrap_or_else(|| v.to_string())))
                .collect()
        };
        LimitRange {
            default: map([("cpu", "0.5"), ("memory", "512Mi"), ("ephemeral-storage", "1Gi")]),
            default_request: map([("cpu", "100m"), ("memory", "128Mi"), ("ephemeral-storage", "256Mi")]),
        }
    }
}

/// LimitRanger (`plugin/pkg/admission/limitranger/admission.go`, `mergePodResourceRequirements`):
/// fills each missing limit and request of every container and init container from the
/// defaults, and records what it set in the `kubernetes.io/limit-ranger` annotation.
pub fn limit_ranger(pod: &mut Value, range: &LimitRange) {
    let mut notes = Vec::new();
    for (field, kind) in [("containers", "container"), ("initContainers", "init container")] {
        let Some(list) = pod.pointer_mut(&format!("/spec/{field}")).and_then(Value::as_array_mut) else { continue };
        for c in list {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            let Some(obj) = c.as_object_mut() else { continue };
            let resources = obj.entry("resources").or_insert_with(|| json!({}));
            let mut fill = |which: &str, defaults: &BTreeMap<String, String>| {
                let mut set = Vec::new();
                if let Some(r) = resources.as_object_mut() {
                    let list = r.entry(which).or_insert_with(|| json!({}));
                    if let Some(list) = list.as_object_mut() {
                        for (k, v) in defaults {
                            if !list.contains_key(k) {
                                list.insert(k.clone(), json!(v));
                                set.push(k.clone());
                            }
                        }
                    }
                }
                set.sort();
                set
            };
            let requests = fill("requests", &range.default_request);
            let limits = fill("limits", &range.default);
            if !requests.is_empty() {
                notes.push(format!("{} request for {kind} {name}", requests.join(", ")));
            }
            if !limits.is_empty() {
                notes.push(format!("{} limit for {kind} {name}", limits.join(", ")));
            }
        }
    }
    if !notes.is_empty() {
        let value = format!("LimitRanger plugin set: {}", notes.join("; "));
        if let Some(a) = annotations(pod) {
            a.insert("kubernetes.io/limit-ranger".into(), json!(value));
        }
    }
}

fn annotations(pod: &mut Value) -> Option<&mut Map<String, Value>> {
    let meta = pod.as_object_mut()?.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut()?.entry("annotations").or_insert_with(|| json!({})).as_object_mut()
}

pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// ServiceAccount (`plugin/pkg/admission/serviceaccount/admission.go`): defaults
/// `serviceAccountName` to `default`, refuses a missing ServiceAccount, and unless the pod or
/// the ServiceAccount turns automount off (the pod's setting wins), mounts one projected
/// `kube-api-access-<5 random>` volume read-only at the token path into every init container
/// and container without a mount there. An existing `kube-api-access-*` volume is reused.
pub fn service_account(
    pod: &mut Value,
    namespace: &str,
    accounts: &BTreeMap<String, Option<bool>>,
    random_suffix: &mut dyn FnMut() -> String,
) -> Result<(), Status> {
    let spec = pod.get_mut("spec").and_then(Value::as_object_mut).ok_or_else(|| Status::invalid("spec is missing"))?;
    if spec.get("serviceAccountName").is_none_or(|n| n == "") {
        spec.insert("serviceAccountName".into(), json!("default"));
    }
    let name = spec["serviceAccountName"].as_str().unwrap_or_default().to_string();
    let Some(sa_automount) = accounts.get(&name) else {
        return Err(Status::forbidden(format!(
            "error looking up service account {namespace}/{name}: serviceaccount \"{name}\" not found"
        )));
    };
    let automount = spec.get("automountServiceAccountToken").and_then(Value::as_bool).or(*sa_automount).unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with("kube-api-access-"))
        .map(str::to_string);
    let volume_name = existing.clone().unwrap_or_else(|| format!("kube-api-access-{}", random_suffix()));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needs_volume = false;
    for field in ["initContainers", "containers"] {
        for c in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
            let has =
                c["volumeMounts"].as_array().is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH));
            if !has {
                if let Some(obj) = c.as_object_mut() {
                    let mounts = obj.entry("volumeMounts").or_insert_with(|| json!([]));
                    if let Some(mounts) = mounts.as_array_mut() {
                        mounts.push(mount.clone());
                    }
                }
                needs_volume = true;
            }
        }
    }
    if existing.is_none() && needs_volume {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(token_volume(&volume_name));
        }
    }
    Ok(())
}

/// `TokenVolumeSource()`: token (3607 s, the warn-only bound token lifetime), the cluster CA
/// and the namespace, with `defaultMode` set explicitly.
pub fn token_volume(name: &str) -> Value {
    json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ]}})
}

/// AlwaysPullImages (`plugin/pkg/admission/alwayspullimages/admission.go`): every init,
/// regular and ephemeral container pulls always.
pub fn always_pull_images(pod: &mut Value) {
    for field in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(list) = pod.pointer_mut(&format!("/spec/{field}")).and_then(Value::as_array_mut) else { continue };
        for c in list.iter_mut().filter_map(Value::as_object_mut) {
            c.insert("imagePullPolicy".into(), json!("Always"));
        }
    }
}

/// Priority (`plugin/pkg/admission/priority/admission.go`), in a cluster with no global
/// default PriorityClass: the class's value (0 without one), refusing an integer that
/// disagrees, and `preemptionPolicy: PreemptLowerPriority`.
pub fn priority(pod: &mut Value) -> Result<(), Status> {
    let spec = pod.get_mut("spec").and_then(Value::as_object_mut).ok_or_else(|| Status::invalid("spec is missing"))?;
    let class = spec.get("priorityClassName").and_then(Value::as_str).unwrap_or_default();
    let value = match class {
        "" => 0,
        "system-cluster-critical" => 2_000_000_000,
        "system-node-critical" => 2_000_001_000,
        other => return Err(Status::forbidden(format!("no PriorityClass with name {other} was found"))),
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != value {
            return Err(Status::forbidden(format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            )));
        }
    }
    spec.insert("priority".into(), json!(value));
    spec.entry("preemptionPolicy").or_insert(json!("PreemptLowerPriority"));
    Ok(())
}

/// DefaultTolerationSeconds (`plugin/pkg/admission/defaulttolerationseconds/admission.go`):
/// 300 s of tolerance for not-ready and unreachable nodes, unless the pod already tolerates
/// those taints.
pub fn default_toleration_seconds(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else { return };
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let tolerated = list.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or_default();
            let effect = t["effect"].as_str().unwrap_or_default();
            (k == key || (k.is_empty() && t["operator"] == "Exists")) && (effect.is_empty() || effect == "NoExecute")
        });
        if !tolerated {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}
