//! `secretmode mutate`: the webhook's decision offline, like `istioctl kube-inject` and
//! `linkerd inject`.
//!
//! Input is read as `audit` reads it (`audit::read`: files, directories recursively, stdin,
//! multi-document YAML, `List`s expanded). Every object is printed in input order, a pod or
//! workload patched, anything else unchanged; nothing is printed when any object is denied or
//! unreadable, so `mutate -f dir | kubectl apply -f -` applies all of it or none.
//! An AdmissionReview is answered by the server's own request handling
//! ([`review::review`]), so `mutate` prints the very response `serve` would send. Pods and
//! workloads are decided by the same function with the namespace from the manifest or
//! `--namespace`; never a guessed `default`, which would be baked into the agent's provider role.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::Value;

use crate::commands::audit::{self, Object, Source};
use crate::config::Config;
use crate::decide::patch::PatchOp;
use crate::decide::{self, Decision};
use crate::webhook::review;

#[derive(Debug, clap::Args)]
pub struct MutateArgs {
    /// Files or directories; `-` for stdin.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The same as the paths, as kubectl takes them: `-f FILE_OR_DIR`, repeatable.
    #[arg(short = 'f', long = "filename", visible_alias = "file", value_name = "PATH", env = "SECRETMODE_MUTATE_FILE")]
    pub files: Vec<PathBuf>,
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
pub fn run(args: MutateArgs) -> Result<ExitCode> {
    let config = Config::load_or_builtin(args.config.as_deref())?;
    let paths: Vec<PathBuf> = args.paths.into_iter().chain(args.files).collect();
    let out =
        mutate_input(&Input { paths: &paths, namespace: args.namespace.as_deref(), patch_only: args.patch }, &config)?;
    for w in &out.warnings {
        eprintln!("Warning: {w}");
    }
    // An AdmissionReview's response is printed whether it allows or denies.
    print!("{}", out.stdout);
    if !out.denied.is_empty() {
        for denial in &out.denied {
            eprintln!("denied: {denial}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// What one run reads, and how it prints.
pub struct Input<'a> {
    /// Files or directories, `-` for stdin.
    pub paths: &'a [PathBuf],
    /// For manifests without `metadata.namespace`; must agree with the manifests that have one.
    pub namespace: Option<&'a str>,
    /// Print the JSON Patch instead of the patched pod.
    pub patch_only: bool,
}

/// What the command prints, and whether anything was denied.
pub struct MutateOutput {
    pub stdout: String,
    /// One line per denied object (exit code 1), each naming where it was read.
    pub denied: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn mutate_input(args: &Input<'_>, config: &Config) -> Result<MutateOutput> {
    if args.paths.is_empty() {
        bail!("no manifests to mutate; fix: name files or directories (-f PATH, repeatable; `-` for stdin)");
    }
    let sources = audit::read(args.paths).map_err(|errors| anyhow::anyhow!("{}", lines(errors)))?;
    mutate_sources(&sources, args.namespace, args.patch_only, config)
}

/// `text` as if read from stdin.
pub fn mutate_text(text: &str, namespace: Option<&str>, patch_only: bool, config: &Config) -> Result<MutateOutput> {
    let source = Source { file: audit::STDIN_NAME.into(), text: text.into() };
    mutate_sources(&[source], namespace, patch_only, config)
}

fn mutate_sources(
    sources: &[Source],
    namespace: Option<&str>,
    patch_only: bool,
    config: &Config,
) -> Result<MutateOutput> {
    let looks_json = |s: &Source| s.text.trim_start().starts_with('{');
    // A broken review gets the error `serve` answers it with.
    if let [only] = sources {
        if looks_json(only)
            && namespace.is_none()
            && only.text.contains(r#""AdmissionReview""#)
            && serde_json::from_str::<serde::de::IgnoredAny>(&only.text).is_err()
        {
            return answer_review(only.text.as_bytes(), true, patch_only, config);
        }
    }
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for s in sources {
        audit::parse_text(&s.file, &s.text, &mut objects, &mut errors);
    }
    if !errors.is_empty() {
        bail!("{}", lines(errors));
    }
    if objects.is_empty() {
        bail!("input holds no objects");
    }
    let is_json = sources.iter().all(looks_json);
    if let Some(review) = objects.iter().find(|o| o.value.get("kind").and_then(Value::as_str) == Some(review::KIND)) {
        let ([source], [_]) = (sources, objects.as_slice()) else {
            bail!(
                "{}: an AdmissionReview is answered as `serve` answers it and must be the only object in the input; fix: mutate it on its own",
                location(review)
            );
        };
        if namespace.is_some() {
            bail!("--namespace does not apply to an AdmissionReview: the webhook decides for its request.namespace");
        }
        // The exact bytes the API server would send: JSON as given, YAML converted.
        let body = if is_json { source.text.as_bytes().to_vec() } else { serde_json::to_vec(&review.value)? };
        return answer_review(&body, is_json, patch_only, config);
    }

    let mut outputs = Vec::with_capacity(objects.len());
    let mut warnings = Vec::new();
    let mut denied = Vec::new();
    let mut problems = Vec::new();
    let mut pods = Vec::new();
    for object in objects {
        let at = location(&object);
        let target = match locate_pod(&object.value) {
            Ok(Some(target)) => target,
            // ExternalSecrets, SecretProviderClasses and the like pass through untouched.
            Ok(None) => {
                outputs.push(if patch_only { None } else { Some(object.value) });
                continue;
            }
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        let ns = match decision_namespace(&object.value, namespace) {
            Ok(ns) => ns,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        pods.push(at.clone());
        let pod = target.pod(&object.value);
        match decide::admit_pod(&pod, &ns, config) {
            Decision::Deny { message, .. } => denied.push((at, message)),
            Decision::Allow { patch, warnings: w, .. } => {
                warnings.extend(w.into_iter().map(|w| (at.clone(), w)));
                match apply(&pod, &patch) {
                    Ok(_) if patch_only => outputs.push(Some(serde_json::to_value(&patch)?)),
                    Ok(patched) => outputs.push(Some(target.replace(object.value, patched))),
                    Err(e) => problems.push(format!("{at}: {e:#}")),
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    if pods.is_empty() {
        bail!("no Pod, AdmissionReview or workload with a pod template in the input");
    }
    // Where each came from, once there is more than one it could be about.
    let located = |list: Vec<(String, String)>| -> Vec<String> {
        list.into_iter().map(|(at, text)| if pods.len() > 1 { format!("{at}: {text}") } else { text }).collect()
    };
    let (denied, warnings) = (located(denied), located(warnings));
    if !denied.is_empty() {
        return Ok(MutateOutput { stdout: String::new(), denied, warnings });
    }
    if patch_only && pods.len() > 1 {
        bail!(
            "--patch prints the patch of one object, and the input holds {} pods and workloads ({}); fix: give --patch a single object, or drop --patch to print every object patched",
            pods.len(),
            pods.join(", ")
        );
    }
    let outputs: Vec<Value> = outputs.into_iter().flatten().collect();
    let stdout = match outputs.as_slice() {
        [one] if is_json || patch_only => serde_json::to_string_pretty(one)? + "\n",
        many if is_json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": many});
            serde_json::to_string_pretty(&list)? + "\n"
        }
        many => {
            let mut parts = Vec::with_capacity(many.len());
            for out in many {
                parts.push(serde_yaml::to_string(out)?);
            }
            parts.join("---\n")
        }
    };
    Ok(MutateOutput { stdout, denied, warnings })
}

fn lines(errors: Vec<audit::ManifestError>) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// `file:line Kind namespace/name`, how denials, warnings and errors name an object.
fn location(object: &Object) -> String {
    let v = &object.value;
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = v
        .pointer("/metadata/name")
        .or_else(|| v.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    match v.pointer("/metadata/namespace").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        Some(ns) => format!("{}:{} {kind} {ns}/{name}", object.file, object.line),
        None => format!("{}:{} {kind} {name}", object.file, object.line),
    }
}

/// The review answered as `serve` answers it: the same response bytes (JSON input) or the
/// same response as YAML; with `--patch`, the decoded JSON Patch (`[]` when none). A review
/// `serve` refuses with HTTP 400 is an error here with the same message.
fn answer_review(body: &[u8], is_json: bool, patch_only: bool, config: &Config) -> Result<MutateOutput> {
    let reviewed = review::review(body, config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let response: Value = serde_json::from_slice(&reviewed.body).context("the webhook's answer is JSON")?;
    let r = &response["response"];
    let denied: Vec<String> = (r["allowed"] == false)
        .then(|| r["status"]["message"].as_str().unwrap_or_default().to_string())
        .into_iter()
        .collect();
    let warnings: Vec<String> = serde_json::from_value(r["warnings"].clone()).unwrap_or_default();
    let stdout = match (patch_only, denied.is_empty()) {
        (true, false) => String::new(),
        (true, true) => {
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
    match (own, flag.filter(|n| !n.is_empty())) {
        (Some(own), Some(flag)) if own != flag => {
            bail!("it is in namespace {own:?} but --namespace is {flag:?}; fix: drop the flag or make them agree")
        }
        (Some(own), _) => Ok(own.to_string()),
        (None, Some(flag)) => Ok(flag.to_string()),
        (None, None) => bail!(
            "no metadata.namespace and no --namespace: the namespace picks the policy rule and is written into the agent's provider role, so it is never guessed; fix: pass --namespace <namespace> or set metadata.namespace"
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
        None => bail!("it has no kind; fix: give it apiVersion and kind (a Pod, a workload or an AdmissionReview; other objects pass through)"),
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
