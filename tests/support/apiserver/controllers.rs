//! The pod a workload controller POSTs, and who it is (`pkg/controller/controller_utils.go`
//! `GetPodFromTemplate`; the Deployment controller's `pod-template-hash` label; the Job
//! controller's labels and tracking finalizer). A bare Pod is created by a person with kubectl.

use serde_json::{json, Map, Value};

use super::super::review::Requester;

/// The pod the workload's controller creates (or the Pod itself), with its creator.
/// Deployment and Job get `generateName`; only a bare Pod has a name before admission.
pub fn pod_for(workload: &Value) -> Result<(Value, Requester), String> {
    let kind = workload["kind"].as_str().unwrap_or_default();
    let name = workload.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "Pod" => Ok((workload.clone(), Requester::Kubectl)),
        "Deployment" => {
            let template = template(workload)?;
            let hash = template_hash(&template);
            let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
            labels["pod-template-hash"] = json!(hash);
            let rs = format!("{name}-{hash}");
            let pod = from_template(
                &template,
                json!({
                    "generateName": format!("{rs}-"),
                    "labels": labels,
                    "ownerReferences": [owner("apps/v1", "ReplicaSet", &rs)],
                }),
            );
            Ok((pod, Requester::ReplicaSet))
        }
        "Job" => {
            let template = template(workload)?;
            let uid = super::super::review::uuid();
            let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
            for (k, v) in [
                ("batch.kubernetes.io/controller-uid", uid.as_str()),
                ("batch.kubernetes.io/job-name", name),
                ("controller-uid", uid.as_str()),
                ("job-name", name),
            ] {
                labels[k] = json!(v);
            }
            let pod = from_template(
                &template,
                json!({
                    "generateName": format!("{name}-"),
                    "labels": labels,
                    "ownerReferences": [owner("batch/v1", "Job", name)],
                    "finalizers": ["batch.kubernetes.io/job-tracking"],
                }),
            );
            Ok((pod, Requester::Job))
        }
        other => Err(format!("no controller emulated for kind {other:?}")),
    }
}

fn template(workload: &Value) -> Result<Value, String> {
    workload.pointer("/spec/template").cloned().ok_or_else(|| "the workload has no spec.template".into())
}

fn owner(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": super::super::review::uuid(),
           "controller": true, "blockOwnerDeletion": true})
}

/// A Pod from a template: its annotations and spec, with the controller's metadata.
fn from_template(template: &Value, metadata: Value) -> Value {
    let mut meta = metadata.as_object().cloned().unwrap_or_default();
    if let Some(a) = template.pointer("/metadata/annotations").filter(|a| a.as_object().is_some_and(|a| !a.is_empty()))
    {
        meta.insert("annotations".into(), a.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": Value::Object(meta), "spec": template["spec"].clone()})
}

/// A stable stand-in for the Deployment controller's `ComputeHash` (FNV-32a of the template,
/// written with `rand.SafeEncodeString`'s alphabet).
fn template_hash(template: &Value) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in serde_json::to_vec(template).unwrap_or_default() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut n = hash;
    while out.len() < 10 {
        out.push(ALPHABET[(n % ALPHABET.len() as u32) as usize] as char);
        n = (n / ALPHABET.len() as u32).wrapping_add(hash.rotate_left(out.len() as u32));
    }
    out
}

/// The same workload as a Job: its pod template, with `restartPolicy: Never` as Jobs need.
pub fn as_job(workload: &Value) -> Result<Value, String> {
    let mut template = template(workload)?;
    template["spec"]["restartPolicy"] = json!("Never");
    let name = workload.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("job");
    Ok(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": format!("{name}-job")},
              "spec": {"backoffLimit": 2, "template": template}}))
}

/// The same workload as a bare Pod named after it.
pub fn as_pod(workload: &Value) -> Result<Value, String> {
    let template = template(workload)?;
    let name = workload.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("pod");
    let mut meta = template.get("metadata").and_then(Value::as_object).cloned().unwrap_or_else(Map::new);
    meta.insert("name".into(), json!(format!("{name}-pod")));
    Ok(json!({"apiVersion": "v1", "kind": "Pod", "metadata": Value::Object(meta), "spec": template["spec"].clone()}))
}
