//! `secretmode mutate`: the webhook's decision offline, like `istioctl kube-inject`.
//!
//! An AdmissionReview is answered by the server's own request handling
//! ([`review::review`]), so `mutate` prints the very response `serve` would send. Pods and
//! workloads are decided by the same function with the namespace from the manifest or
//! `--namespace`; never a guessed `default`, which would be baked into the agent's provider role.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use crate::config::Config;
use crate::decide::patch::PatchOp;
use crate::decide::{self, Decision};
use crate::webhook::review;

#[derive(Debug, clap::Args)]
pub struct MutateArgs {
    /// Pod, workload(s) or AdmissionReview, YAML or JSON; `-` for stdin.
    #[arg(short = 'f', long = "file", env = "SECRETMODE_MUTATE_FILE")]
    pub file: PathBuf,
    /// Namespace of manifests that have no metadata.namespace (required for them: it picks
    /// the policy rule and goes into the agent's provider role); must match the ones that
    /// do. Not accepted with an AdmissionReview, which carries request.namespace.
    // No env: SECRETMODE_NAMESPACE is the namespace the webhook runs in (serve, certs).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Print the JSON Patch instead of the patched objects (or the review's response).
    #[arg(long, env = "SECRETMODE_MUTATE_PATCH")]
    pub patch: bool,
    /// Webhook config file (default: the built-in config).
    #[arg(long, env = "SECRETMODE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `secretmode mutate`: prints the result; exit code 1 when the webhook would deny.
pub fn run(args: MutateArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load_or_builtin(args.config.as_deref())?;
    let input = Input { file: &args.file, namespace: args.namespace.as_deref(), patch_only: args.patch };
    let out = mutate_input(&input, &config)?;
    for w in &out.warnings {
        eprintln!("Warning: {w}");
    }
    // An AdmissionReview's response is printed whether it allows or denies.
    print!("{}", out.stdout);
    if let Some(denial) = out.denied {
        eprintln!("denied: {denial}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// What one run reads, and how it prints.
pub struct Input<'a> {
    /// File path, or `-` for stdin.
    pub file: &'a Path,
    /// For manifests without `metadata.namespace`; must agree with the manifests that have one.
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

pub fn mutate_input(args: &Input<'_>, config: &Config) -> Result<MutateOutput> {
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
        match serde_json::from_str(text) {
            Ok(doc) => vec![doc],
            // A broken review gets the error `serve` answers it with.
            Err(_) if text.contains(r#""AdmissionReview""#) && namespace.is_none() => {
                return answer_review(text.as_bytes(), true, patch_only, config)
            }
            Err(e) => return Err(e).context("input is not valid JSON"),
        }
    } else {
        serde_yaml::Deserializer::from_str(text)
            .map(|doc| Value::deserialize(doc).context("input is not valid YAML"))
            .filter(|doc| !matches!(doc, Ok(Value::Null)))
            .collect::<Result<_>>()?
    };
    if docs.is_empty() {
        bail!("input holds no objects");
    }
    if docs.iter().any(|d| d.get("kind").and_then(Value::as_str) == Some(review::KIND)) {
        if docs.len() > 1 {
            bail!("an AdmissionReview must be the only document in the input");
        }
        if namespace.is_some() {
            bail!("--namespace does not apply to an AdmissionReview: the webhook decides for its request.namespace");
        }
        // The exact bytes the API server would send: JSON as given, YAML converted.
        let body = if is_json { text.as_bytes().to_vec() } else { serde_json::to_vec(&docs[0])? };
        return answer_review(&body, is_json, patch_only, config);
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
        let ns = decision_namespace(&doc, namespace)?;
        let pod = target.pod(&doc);
        match decide::admit_pod(&pod, &ns, config) {
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

/// The review answered as `serve` answers it: the same response bytes (JSON input) or the
/// same response as YAML; with `--patch`, the decoded JSON Patch (`[]` when none). A review
/// `serve` refuses with HTTP 400 is an error here with the same message.
fn answer_review(body: &[u8], is_json: bool, patch_only: bool, config: &Config) -> Result<MutateOutput> {
    let reviewed = review::review(body, config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let response: Value = serde_json::from_slice(&reviewed.body).context("the webhook's answer is JSON")?;
    let r = &response["response"];
    let denied = (r["allowed"] == false).then(|| r["status"]["message"].as_str().unwrap_or_default().to_string());
    let warnings: Vec<String> = serde_json::from_value(r["warnings"].clone()).unwrap_or_default();
    let stdout = match (patch_only, &denied) {
        (true, Some(_)) => String::new(),
        (true, None) => {
            let ops: Value = match r["patch"].as_str() {
                Some(b64) => serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64)?)?,
                None => Value::Array(Vec::new()),
            };
            serde_json::to_string_pretty(&ops)? + "\n"
        }
        (false, _) if is_json => String::from_utf8(reviewed.body).context("the webhook's answer is UTF-8")? + "\n",
        (false, _) => serde_yaml::to_string(&response)?,
    };
    Ok(MutateOutput { stdout, denied, warnings })
}

/// The namespace a manifest is decided for: its own, else `--namespace`; both set must agree
/// (as `kubectl apply -n` insists). Neither is an error: the namespace picks the policy rule
/// and is written into the agent's provider role (`{namespace}`), so it is never guessed.
fn decision_namespace(doc: &Value, flag: Option<&str>) -> Result<String> {
    let own = doc.pointer("/metadata/namespace").and_then(Value::as_str).filter(|n| !n.is_empty());
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = doc
        .pointer("/metadata/name")
        .or_else(|| doc.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    match (own, flag.filter(|n| !n.is_empty())) {
        (Some(own), Some(flag)) if own != flag => {
            bail!("{kind} {name} is in namespace {own:?} but --namespace is {flag:?}; drop the flag or make them agree")
        }
        (Some(own), _) => Ok(own.to_string()),
        (None, Some(flag)) => Ok(flag.to_string()),
        (None, None) => bail!(
            "{kind} {name} has no metadata.namespace and no --namespace was given: the namespace picks the policy rule and is written into the agent's provider role, so it is never guessed; pass --namespace <namespace>"
        ),
    }
}

/// Where the pod is inside a document (an AdmissionReview is answered whole, not here).
enum Target {
    Pod,
    /// A workload; the JSON pointer of its pod template.
    Template(&'static str),
}

fn locate_pod(doc: &Value) -> Result<Option<Target>> {
    let target = match doc.get("kind").and_then(Value::as_str) {
        Some("Pod") => Target::Pod,
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
    /// The pod to decide on: a template gets the Pod kind so it is judged as the pods it makes.
    fn pod(&self, doc: &Value) -> Value {
        match self {
            Target::Pod => doc.clone(),
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

    /// The document with its pod replaced by `patched`.
    fn replace(&self, mut doc: Value, mut patched: Value) -> Value {
        match self {
            Target::Pod => patched,
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
