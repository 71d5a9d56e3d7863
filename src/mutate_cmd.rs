//! `secretmode mutate`: the webhook's decision offline, like `istioctl kube-inject`.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::admit::{self, Decision};
use crate::config::Config;
use crate::patch::PatchOp;

pub struct MutateArgs<'a> {
    /// File path, or `-` for stdin.
    pub file: &'a Path,
    pub namespace: Option<&'a str>,
    /// Print the JSON Patch instead of the patched pod.
    pub patch_only: bool,
}

/// What the command prints, and whether the pod was denied.
pub struct MutateOutput {
    pub stdout: String,
    /// The denial message (exit code 1) if the webhook would deny.
    pub denied: Option<String>,
    pub warnings: Vec<String>,
}

pub fn run(args: &MutateArgs<'_>, config: &Config) -> Result<MutateOutput> {
    let text = if args.file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(args.file).with_context(|| format!("reading {}", args.file.display()))?
    };
    mutate_text(&text, args.namespace, args.patch_only, config)
}

pub fn mutate_text(text: &str, namespace: Option<&str>, patch_only: bool, config: &Config) -> Result<MutateOutput> {
    let is_json = text.trim_start().starts_with('{');
    let docs: Vec<Value> = if is_json {
        vec![serde_json::from_str(text).context("input is not valid JSON")?]
    } else {
        serde_yaml::Deserializer::from_str(text)
            .map(|doc| Value::deserialize(doc).context("input is not valid YAML"))
            .filter(|doc| !matches!(doc, Ok(Value::Null)))
            .collect::<Result<_>>()?
    };
    if docs.is_empty() {
        bail!("input holds no objects");
    }
    let mut outputs = Vec::with_capacity(docs.len());
    let mut warnings = Vec::new();
    let mut pods_seen = 0;
    for doc in docs {
        let Some(target) = locate_pod(&doc)? else {
            // ExternalSecrets, SecretProviderClasses and the like pass through untouched.
            outputs.push(if patch_only { None } else { Some(doc) });
            continue;
        };
        pods_seen += 1;
        let ns =
            namespace.map(str::to_string).or_else(|| target.namespace(&doc)).unwrap_or_else(|| "default".to_string());
        let pod = target.pod(&doc);
        match admit::admit_pod(&pod, &ns, config) {
            Decision::Deny { message, .. } => {
                return Ok(MutateOutput { stdout: String::new(), denied: Some(message), warnings: Vec::new() })
            }
            Decision::Allow { patch, warnings: w, .. } => {
                warnings.extend(w);
                if patch_only {
                    outputs.push(Some(serde_json::to_value(&patch)?));
                } else {
                    outputs.push(Some(target.replace(doc, apply(&pod, &patch)?)));
                }
            }
        }
    }
    if pods_seen == 0 {
        bail!("no Pod, AdmissionReview or workload with a pod template in the input");
    }
    let outputs: Vec<Value> = outputs.into_iter().flatten().collect();
    let stdout = if is_json || patch_only {
        let mut text = String::new();
        for out in &outputs {
            text.push_str(&serde_json::to_string_pretty(out)?);
            text.push('\n');
        }
        text
    } else {
        let mut parts = Vec::with_capacity(outputs.len());
        for out in &outputs {
            parts.push(serde_yaml::to_string(out)?);
        }
        parts.join("---\n")
    };
    Ok(MutateOutput { stdout, denied: None, warnings })
}

/// Where the pod is inside a document.
enum Target {
    Pod,
    Review,
    /// A workload; the JSON pointer of its pod template.
    Template(&'static str),
}

fn locate_pod(doc: &Value) -> Result<Option<Target>> {
    let target = match doc.get("kind").and_then(Value::as_str) {
        Some("Pod") => Target::Pod,
        Some("AdmissionReview") => {
            if !doc.pointer("/request/object").is_some_and(Value::is_object) {
                bail!("AdmissionReview has no request.object");
            }
            Target::Review
        }
        Some("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController") => {
            Target::Template("/spec/template")
        }
        Some("CronJob") => Target::Template("/spec/jobTemplate/spec/template"),
        Some(_) => return Ok(None),
        None => bail!("a document has no kind; expected a Pod, an AdmissionReview or a workload"),
    };
    if let Target::Template(at) = target {
        if !doc.pointer(at).is_some_and(Value::is_object) {
            return Ok(None);
        }
    }
    Ok(Some(target))
}

impl Target {
    fn namespace(&self, doc: &Value) -> Option<String> {
        let own = |v: &Value| {
            v.pointer("/metadata/namespace").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string)
        };
        match self {
            Target::Pod | Target::Template(_) => own(doc),
            Target::Review => doc
                .pointer("/request/object")
                .and_then(own)
                .or_else(|| doc.pointer("/request/namespace").and_then(Value::as_str).map(str::to_string)),
        }
    }

    /// The pod to decide on: a template gets the Pod kind so it is judged as the pods it makes.
    fn pod(&self, doc: &Value) -> Value {
        match self {
            Target::Pod => doc.clone(),
            Target::Review => doc.pointer("/request/object").cloned().unwrap_or(Value::Null),
            Target::Template(at) => {
                let mut pod = doc.pointer(at).cloned().unwrap_or(Value::Null);
                if let Value::Object(map) = &mut pod {
                    map.insert("apiVersion".into(), Value::String("v1".into()));
                    map.insert("kind".into(), Value::String("Pod".into()));
                }
                pod
            }
        }
    }

    /// The document with its pod replaced by `patched`. An AdmissionReview yields the pod.
    fn replace(&self, mut doc: Value, mut patched: Value) -> Value {
        match self {
            Target::Pod | Target::Review => patched,
            Target::Template(at) => {
                if let Value::Object(map) = &mut patched {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                if let Some(slot) = doc.pointer_mut(at) {
                    *slot = patched;
                }
                doc
            }
        }
    }
}

/// Applies our own patch to the pod, the way the API server would.
pub fn apply(pod: &Value, ops: &[PatchOp]) -> Result<Value> {
    let mut out = pod.clone();
    for op in ops {
        match op {
            PatchOp::Add { path, value } => add(&mut out, path, serde_json::from_str(value.get())?)?,
        }
    }
    Ok(out)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<()> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split(path)?;
    match doc.pointer_mut(parent).with_context(|| format!("add: no parent {parent}"))? {
        Value::Object(map) => {
            map.insert(last, value);
        }
        Value::Array(list) => {
            let i = if last == "-" {
                list.len()
            } else {
                last.parse().with_context(|| format!("add: bad index in {path}"))?
            };
            if i > list.len() {
                bail!("add: index out of range in {path}");
            }
            list.insert(i, value);
        }
        _ => bail!("add: {parent} is not a container"),
    }
    Ok(())
}

fn split(path: &str) -> Result<(&str, String)> {
    let Some(i) = path.rfind('/') else { bail!("bad JSON pointer {path:?}") };
    Ok((&path[..i], path[i + 1..].replace("~1", "/").replace("~0", "~")))
}
