//! `secretmode mutate`: the webhook's decision offline, like `istioctl kube-inject`.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
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
    let doc: Value = if is_json {
        serde_json::from_str(text).context("input is not valid JSON")?
    } else {
        serde_yaml::from_str(text).context("input is not valid YAML")?
    };
    let (pod, request_namespace) = match doc.get("kind").and_then(Value::as_str) {
        Some("Pod") => (doc.clone(), None),
        Some("AdmissionReview") => {
            let Some(object) = doc.pointer("/request/object").filter(|o| o.is_object()) else {
                bail!("AdmissionReview has no request.object");
            };
            (object.clone(), doc.pointer("/request/namespace").and_then(Value::as_str).map(str::to_string))
        }
        Some(other) => {
            bail!("expected a Pod or an AdmissionReview, got kind {other:?} (use `secretmode audit` for workloads)")
        }
        None => bail!("input has no kind; expected a Pod or an AdmissionReview"),
    };
    let namespace = namespace
        .map(str::to_string)
        .or_else(|| {
            pod.pointer("/metadata/namespace").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string)
        })
        .or(request_namespace)
        .unwrap_or_else(|| "default".to_string());

    match admit::admit_pod(&pod, &namespace, config) {
        Decision::Deny { message, .. } => {
            Ok(MutateOutput { stdout: String::new(), denied: Some(message), warnings: Vec::new() })
        }
        Decision::Allow { patch, warnings, .. } => {
            let stdout = if patch_only {
                serde_json::to_string_pretty(&patch)? + "\n"
            } else {
                let patched = apply(&pod, &patch)?;
                if is_json {
                    serde_json::to_string_pretty(&patched)? + "\n"
                } else {
                    serde_yaml::to_string(&patched)?
                }
            };
            Ok(MutateOutput { stdout, denied: None, warnings })
        }
    }
}

/// Applies our own patch to the pod, the way the API server would.
pub fn apply(pod: &Value, ops: &[PatchOp]) -> Result<Value> {
    let mut out = pod.clone();
    for op in ops {
        match op {
            PatchOp::Add { path, value } => add(&mut out, path, value.clone())?,
            PatchOp::Replace { path, value } => {
                *out.pointer_mut(path).with_context(|| format!("replace: no {path}"))? = value.clone();
            }
            PatchOp::Remove { path } => {
                let (parent, last) = split(path)?;
                match out.pointer_mut(parent).with_context(|| format!("remove: no {parent}"))? {
                    Value::Object(map) => {
                        map.shift_remove(&last).with_context(|| format!("remove: no {path}"))?;
                    }
                    Value::Array(list) => {
                        let i: usize = last.parse().with_context(|| format!("remove: bad index in {path}"))?;
                        if i >= list.len() {
                            bail!("remove: index out of range in {path}");
                        }
                        list.remove(i);
                    }
                    _ => bail!("remove: {parent} is not a container"),
                }
            }
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
