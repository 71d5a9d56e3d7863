//! The pure mutation: pod JSON + plan + config in, add-only RFC 6902 ops or a typed denial out.
//!
//! The pod is read as raw JSON (never round-tripped through typed structs) and only ever added
//! to, at positions read from it, so fields newer than any k8s-openapi version survive.
//! Idempotence is read from the pod's own spec: an object with a reserved `secretmode-` name
//! counts as already injected when what secretmode owns in it matches this injection, whatever
//! the API server and other webhooks added around it on reinvocation (`owned`); a changed
//! owned field, or a reserved name this injection does not write, is denied.

use serde::Serialize;
use serde_json::json;
use thiserror::Error;

use crate::agent_spec::{self, AgentItem, AgentSpec};
use crate::annotations::{paths_overlap, ItemSource, Plan};
use crate::config::{AwsAuth, Config, ProviderConfig, VaultAuth};
use crate::json_ref::{JsonRef, ObjectRef};
use crate::modes::Mode;
use crate::patch::{self, JsonText, PatchOp};

pub const RESERVED_PREFIX: &str = "secretmode-";
pub const SECRETS_VOLUME: &str = "secretmode-secrets";
pub const TOKEN_VOLUME: &str = "secretmode-token";
pub const FALLBACK_VOLUME: &str = "secretmode-fallback";
pub const INIT_CONTAINER: &str = "secretmode-init";
pub const SIDECAR_CONTAINER: &str = "secretmode-sidecar";
/// Name of the sidecar's declared port (at most 15 characters).
pub const PORT_NAME: &str = "secretmode";
/// Kubernetes `defaultMode` 0440 for secret volumes: owner and group read.
const MODE_0440: u32 = 0o440;
/// The fallback Secret is read by the agent's non-root user, which owns no files in a Secret
/// volume; it is mounted into the agent container only.
const MODE_0444: u32 = 0o444;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("the pod is malformed: {0}")]
    Malformed(String),
    #[error("{problem}; fix: {fix}")]
    Denied { problem: String, fix: String },
}

fn deny<T>(problem: impl Into<String>, fix: impl Into<String>) -> Result<T, InjectError> {
    Err(InjectError::Denied { problem: problem.into(), fix: fix.into() })
}

/// Per-request facts the injector needs besides the pod.
pub struct Context<'a> {
    /// The pod's namespace (`metadata.namespace`, or the request's for `generateName` pods).
    pub namespace: &'a str,
    /// Value written to `<prefix>/injected`.
    pub injected_note: &'a str,
}

/// What one injection adds, computed once from plan and config.
struct Desired<'a> {
    volumes: Vec<Volume<'a>>,
    /// The agent container and whether it goes into `initContainers`.
    agent: Option<(AgentContainer<'a>, bool)>,
    mount: Mount<'a>,
    env: Vec<EnvVar<'a>>,
}

/// What one injection patches, in application order.
#[derive(Debug)]
pub struct Injection {
    pub ops: Vec<PatchOp>,
    /// Whether anything besides the `<prefix>/injected` annotation is patched; false means the
    /// pod already carries this injection.
    pub changes_pod: bool,
}

/// The ops that inject `plan` into `pod`. Every op is an `add` at a position read from the
/// pod itself (append after the last entry, insert the agent first, create a missing list or
/// map), so the pod's own JSON, unknown fields included, is never rewritten.
pub fn inject(pod: &JsonRef<'_>, plan: &Plan, config: &Config, ctx: &Context<'_>) -> Result<Injection, InjectError> {
    let spec = pod
        .get("spec")
        .and_then(JsonRef::as_object)
        .ok_or_else(|| InjectError::Malformed("spec is missing or not an object".into()))?;
    let app_containers = named_list(spec, "containers")?;
    if app_containers.is_empty() {
        return Err(InjectError::Malformed("spec.containers is empty".into()));
    }
    let init_containers = named_list(spec, "initContainers")?;
    let volumes = named_list(spec, "volumes")?;

    check_platform(spec, plan, config)?;
    let desired = desired(pod, plan, config, ctx)?;
    check_reserved(&volumes, &app_containers, &init_containers, &desired)?;
    let targets = target_containers(&app_containers, plan)?;

    let mut ops = Vec::new();
    // Container ops come before the agent's insert-first, which shifts container indices.
    for index in targets {
        if let Some(container) = app_containers.get(index).and_then(|(_, c)| c.as_object()) {
            wire_container(container, index, &desired, &plan.mount_path, &mut ops)?;
        }
    }
    let missing_volumes: Vec<&Volume> =
        desired.volumes.iter().filter(|v| !volumes.iter().any(|(n, _)| *n == v.name)).collect();
    append_all(&mut ops, "/spec/volumes".into(), spec.get("volumes"), &missing_volumes)?;
    if let Some((agent, as_init)) = &desired.agent {
        let list = if *as_init { "initContainers" } else { "containers" };
        let present = if *as_init { &init_containers } else { &app_containers };
        if !present.iter().any(|(n, _)| *n == agent.name()) {
            let agent = agent.to_json()?;
            ops.push(match spec.get(list) {
                Some(JsonRef::Array(_)) => PatchOp::add_json(["/spec/", list, "/0"].concat(), agent),
                _ => PatchOp::add_json(["/spec/", list].concat(), JsonText::list(&[agent])),
            });
        }
    }
    let changes_pod = !ops.is_empty();
    annotate(pod, &[config.annotation_prefix.as_str(), "/injected"].concat(), ctx.injected_note, &mut ops)?;
    Ok(Injection { ops, changes_pod })
}

/// Sets one annotation, creating `metadata` or `metadata.annotations` if missing; no op when
/// it already holds `value`.
fn annotate(pod: &JsonRef<'_>, key: &str, value: &str, ops: &mut Vec<PatchOp>) -> Result<(), InjectError> {
    let op = match pod.get("metadata") {
        None => PatchOp::add("/metadata".into(), &json!({"annotations": {key: value}})),
        Some(JsonRef::Object(meta)) => match meta.get("annotations") {
            None | Some(JsonRef::Null) => PatchOp::add("/metadata/annotations".into(), &json!({key: value})),
            Some(JsonRef::Object(a)) if a.get(key).and_then(JsonRef::as_str) == Some(value) => return Ok(()),
            Some(JsonRef::Object(_)) => {
                let mut path = String::from("/metadata/annotations");
                patch::push_token(&mut path, key);
                PatchOp::add(path, value)
            }
            Some(_) => return Err(InjectError::Malformed("metadata.annotations is not an object".into())),
        },
        Some(_) => return Err(InjectError::Malformed("metadata is not an object".into())),
    };
    ops.push(op?);
    Ok(())
}

/// Appends `values` to the list at `path` (currently `existing`): one `add` per value after
/// the last entry, or one `add` of the whole list where there is no list yet (or `null`).
fn append_all<T: Serialize>(
    ops: &mut Vec<PatchOp>,
    path: String,
    existing: Option<&JsonRef<'_>>,
    values: &[T],
) -> Result<(), InjectError> {
    if values.is_empty() {
        return Ok(());
    }
    match existing {
        Some(JsonRef::Array(list)) => {
            for (i, value) in values.iter().enumerate() {
                let mut at = path.clone();
                at.push('/');
                at.push_str(itoa::Buffer::new().format(list.len() + i));
                ops.push(PatchOp::add(at, value)?);
            }
        }
        _ => ops.push(PatchOp::add(path, values)?),
    }
    Ok(())
}

/// `(name, object)` pairs of a named list; missing list = empty.
fn named_list<'p, 'a>(spec: &'p ObjectRef<'a>, field: &str) -> Result<Vec<(&'p str, &'p JsonRef<'a>)>, InjectError> {
    match spec.get(field) {
        None | Some(JsonRef::Null) => Ok(Vec::new()),
        Some(JsonRef::Array(list)) => list
            .iter()
            .map(|entry| {
                entry
                    .get("name")
                    .and_then(JsonRef::as_str)
                    .map(|n| (n, entry))
                    .ok_or_else(|| InjectError::Malformed(format!("an entry of spec.{field} has no name")))
            })
            .collect(),
        Some(_) => Err(InjectError::Malformed(format!("spec.{field} is not a list"))),
    }
}

fn check_platform(spec: &ObjectRef<'_>, plan: &Plan, config: &Config) -> Result<(), InjectError> {
    if plan.mode.uses_agent() {
        if let Some(pin) = off_linux(spec) {
            return deny(
                format!(
                    "mode {} injects a Linux agent container, and this pod is pinned to Windows (non-Linux) nodes ({pin})",
                    plan.mode
                ),
                "use mode eso or csi for Windows pods",
            );
        }
    }
    if plan.mode == Mode::Sidecar {
        if spec.get("hostNetwork").and_then(JsonRef::as_bool) == Some(true) {
            return deny(
                format!(
                    "mode sidecar would bind the agent's port {} on the node (hostNetwork: true)",
                    config.agent.health_port
                ),
                "use mode init, eso or csi for hostNetwork pods",
            );
        }
        for list in ["containers", "initContainers"] {
            // Our own sidecar is judged by check_reserved, not here.
            for (name, c) in named_list(spec, list)?.into_iter().filter(|(n, _)| !n.starts_with(RESERVED_PREFIX)) {
                for port in JsonRef::entries(c.get("ports")) {
                    if port.get("containerPort").and_then(JsonRef::as_u64) == Some(u64::from(config.agent.health_port))
                    {
                        return deny(
                            format!(
                                "container {name} uses port {}, which the secretmode sidecar needs",
                                config.agent.health_port
                            ),
                            "move the container to another port, or use mode init",
                        );
                    }
                    if port.get("name").and_then(JsonRef::as_str) == Some(PORT_NAME)
                        && !name.starts_with(RESERVED_PREFIX)
                    {
                        return deny(
                            format!("container {name} declares a port named {PORT_NAME:?}, which is reserved"),
                            "rename the port",
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// The node labels that say a node's operating system.
const OS_LABELS: [&str; 2] = ["kubernetes.io/os", "beta.kubernetes.io/os"];

/// How the pod is kept off Linux nodes, if it is, however it is pinned: `spec.os.name`, a
/// nodeSelector on the OS label (or its beta name), or required node affinity every term of
/// which excludes `linux` (the terms are alternatives, so one that admits Linux is enough).
fn off_linux(spec: &ObjectRef<'_>) -> Option<String> {
    if let Some(os) = spec.get("os").and_then(|o| o.get("name")).and_then(JsonRef::as_str).filter(|os| *os != "linux") {
        return Some(format!("spec.os.name: {os}"));
    }
    for label in OS_LABELS {
        let selected = spec.get("nodeSelector").and_then(|s| s.get(label)).and_then(JsonRef::as_str);
        if let Some(os) = selected.filter(|os| *os != "linux") {
            return Some(format!("nodeSelector {label}: {os}"));
        }
    }
    let terms = JsonRef::entries(spec.get("affinity")?.at(&[
        "nodeAffinity",
        "requiredDuringSchedulingIgnoredDuringExecution",
        "nodeSelectorTerms",
    ]));
    let excludes_linux = |term: &JsonRef<'_>| {
        JsonRef::entries(term.get("matchExpressions")).iter().any(|e| {
            let values = JsonRef::entries(e.get("values"));
            let linux = values.iter().any(|v| v.as_str() == Some("linux"));
            OS_LABELS.contains(&e.get("key").and_then(JsonRef::as_str).unwrap_or_default())
                && match e.get("operator").and_then(JsonRef::as_str) {
                    Some("In") => !linux,
                    Some("NotIn") => linux,
                    _ => false,
                }
        })
    };
    (!terms.is_empty() && terms.iter().all(excludes_linux))
        .then(|| "required node affinity admits no node whose kubernetes.io/os is linux".to_string())
}

fn desired<'a>(
    pod: &JsonRef<'_>,
    plan: &'a Plan,
    config: &'a Config,
    ctx: &Context<'_>,
) -> Result<Desired<'a>, InjectError> {
    let mount_path = plan.mount_path.as_str();
    let mut env = Vec::with_capacity(plan.items.len() * 2);
    for item in &plan.items {
        env.push(EnvVar {
            name: [item.env_stem.as_str(), "_FILE"].concat().into(),
            value: Some(EnvValue::Text([mount_path, "/", item.file.as_str()].concat())),
            value_from: None,
        });
    }
    if plan.env_values {
        if let Some(secret) = &plan.eso_secret {
            for item in &plan.items {
                if let ItemSource::SecretKey(key) = &item.source {
                    env.push(EnvVar {
                        name: item.env_stem.as_str().into(),
                        value: None,
                        value_from: Some(EnvSource { secret_key_ref: KeyRef { name: secret, key } }),
                    });
                }
            }
        }
    }
    // Mounted read-only and never with subPath: a subPath mount never sees rotation.
    let mount = Mount { name: SECRETS_VOLUME, mount_path, read_only: true };

    let mut volumes = Vec::new();
    let mut agent = None;
    match plan.mode {
        Mode::Eso => {
            let items = plan
                .items
                .iter()
                .filter_map(|i| match &i.source {
                    ItemSource::SecretKey(key) => Some(KeyToPath { key, path: &i.file }),
                    _ => None,
                })
                .collect();
            let secret_name = plan.eso_secret.as_deref().unwrap_or_default();
            volumes.push(Volume {
                name: SECRETS_VOLUME,
                source: Source::Secret(SecretSource {
                    secret_name,
                    items: Some(items),
                    optional: None,
                    default_mode: MODE_0440,
                }),
            });
        }
        Mode::Csi => {
            let class = plan.csi_class.as_deref().unwrap_or_default();
            volumes.push(Volume {
                name: SECRETS_VOLUME,
                source: Source::Csi(CsiSource {
                    driver: crate::policy::CSI_DRIVER,
                    read_only: true,
                    volume_attributes: CsiAttributes { secret_provider_class: class },
                }),
            });
        }
        Mode::Init | Mode::Sidecar => {
            let provider =
                plan.provider_config(config).ok_or_else(|| InjectError::Malformed("provider not resolved".into()))?;
            volumes.push(Volume {
                name: SECRETS_VOLUME,
                source: Source::EmptyDir(EmptyDirSource {
                    medium: "Memory",
                    size_limit: &config.agent.memory_volume_size_limit,
                }),
            });
            let mut agent_mounts = vec![Mount { name: SECRETS_VOLUME, mount_path, read_only: false }];
            if let Some(audience) = provider.token_audience() {
                volumes.push(Volume {
                    name: TOKEN_VOLUME,
                    source: Source::Projected(ProjectedSource {
                        sources: [Projection {
                            service_account_token: TokenProjection {
                                audience,
                                expiration_seconds: config.agent.token_expiration_seconds,
                                path: "token",
                            },
                        }],
                    }),
                });
                agent_mounts.push(Mount { name: TOKEN_VOLUME, mount_path: agent_spec::TOKEN_DIR, read_only: true });
            }
            if let Some(secret) = &plan.fallback_secret {
                volumes.push(Volume {
                    name: FALLBACK_VOLUME,
                    source: Source::Secret(SecretSource {
                        secret_name: secret,
                        items: None,
                        optional: Some(true),
                        default_mode: MODE_0444,
                    }),
                });
                agent_mounts.push(Mount {
                    name: FALLBACK_VOLUME,
                    mount_path: agent_spec::FALLBACK_DIR,
                    read_only: true,
                });
            }
            agent = Some(agent_container(pod, plan, config, ctx, provider, agent_mounts)?);
        }
    }
    Ok(Desired { volumes, agent, mount, env })
}

fn agent_container<'a>(
    pod: &JsonRef<'_>,
    plan: &Plan,
    config: &'a Config,
    ctx: &Context<'_>,
    provider: &'a ProviderConfig,
    mounts: Vec<Mount<'a>>,
) -> Result<(AgentContainer<'a>, bool), InjectError> {
    let a = &config.agent;
    let service_account = pod
        .at(&["spec", "serviceAccountName"])
        .and_then(JsonRef::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let spec = AgentSpec {
        version: agent_spec::SPEC_VERSION,
        provider_name: plan.provider.clone().unwrap_or_default(),
        provider: personalise(provider, ctx.namespace, service_account),
        items: plan
            .items
            .iter()
            .filter_map(|i| match &i.source {
                ItemSource::Provider { path, key } => {
                    Some(AgentItem { name: i.name.clone(), path: path.clone(), key: key.clone() })
                }
                _ => None,
            })
            .collect(),
        mount_path: plan.mount_path.clone(),
        token_file: provider.token_audience().map(|_| agent_spec::TOKEN_FILE.to_string()),
        fallback_dir: plan.fallback_secret.as_ref().map(|_| agent_spec::FALLBACK_DIR.to_string()),
        refresh_interval_seconds: plan.refresh_interval.as_secs().max(1),
        max_staleness_seconds: plan.max_staleness.as_secs().max(1),
        start_deadline_seconds: a.start_deadline.0.as_secs().max(1),
        health_port: a.health_port,
    };
    let mut env = vec![EnvVar {
        name: agent_spec::SPEC_ENV.into(),
        value: Some(EnvValue::Spec(Box::new(spec))),
        value_from: None,
    }];
    if let ProviderConfig::Vault(v) = provider {
        if let VaultAuth::Token { secret_ref } = &v.auth {
            env.push(EnvVar {
                name: "VAULT_TOKEN".into(),
                value: None,
                value_from: Some(EnvSource { secret_key_ref: KeyRef { name: &secret_ref.name, key: &secret_ref.key } }),
            });
        }
    }
    let (role, as_init) = match plan.mode {
        Mode::Init => (Role::Init, true),
        _ => (Role::Sidecar { native: a.native_sidecar }, a.native_sidecar),
    };
    let group = app_group(pod, plan).unwrap_or(a.run_as_group);
    Ok((AgentContainer::new(role, a, env, mounts, group), as_init))
}

/// The group the app runs as (first target container, else the pod), if set and not root.
/// The agent joins it so the app can read the 0440 files without an `fsGroup`; only the
/// group follows the pod, the agent's user id always comes from the config.
fn app_group(pod: &JsonRef<'_>, plan: &Plan) -> Option<i64> {
    let spec = pod.get("spec")?;
    let containers = spec.get("containers").and_then(JsonRef::as_array)?;
    fn name<'p>(c: &'p JsonRef<'_>) -> Option<&'p str> {
        c.get("name").and_then(JsonRef::as_str)
    }
    let first = match &plan.containers {
        Some(names) => containers.iter().find(|c| names.first().is_some_and(|n| name(c) == Some(n.as_str()))),
        None => containers.iter().find(|c| !name(c).unwrap_or_default().starts_with(RESERVED_PREFIX)),
    };
    first
        .and_then(|c| c.at(&["securityContext", "runAsGroup"]))
        .or_else(|| spec.at(&["securityContext", "runAsGroup"]))
        .and_then(JsonRef::as_i64)
        .filter(|g| *g > 0)
}

/// A kubectl warning when a non-root app will probably not be able to read its 0440 files.
pub fn readability_warning(pod: &JsonRef<'_>, plan: &Plan) -> Option<String> {
    let spec = pod.get("spec")?;
    if spec.at(&["securityContext", "fsGroup"]).is_some() || plan.mode == Mode::Csi {
        return None;
    }
    let non_root = |sc: Option<&JsonRef<'_>>| {
        sc.is_some_and(|sc| {
            sc.get("runAsNonRoot").and_then(JsonRef::as_bool) == Some(true)
                || sc.get("runAsUser").and_then(JsonRef::as_i64).is_some_and(|u| u > 0)
        })
    };
    let first_app = spec.get("containers").and_then(JsonRef::as_array).and_then(|c| c.first());
    if !(non_root(spec.get("securityContext")) || non_root(first_app.and_then(|c| c.get("securityContext")))) {
        return None;
    }
    match plan.mode {
        Mode::Eso => Some(
            "secretmode eso: files are mode 0440 and root-owned; set securityContext.fsGroup so the app can read them"
                .into(),
        ),
        _ if app_group(pod, plan).is_none() => Some(format!(
            "secretmode {}: files are mode 0440; set runAsGroup or fsGroup so the app can read them",
            plan.mode
        )),
        _ => None,
    }
}

/// The provider definition with per-pod placeholders (`{namespace}`, `{serviceAccount}`)
/// filled in. Only config-defined text is substituted, never annotation text.
fn personalise(provider: &ProviderConfig, namespace: &str, service_account: &str) -> ProviderConfig {
    let fill = |s: &str| {
        if s.contains('{') {
            s.replace("{namespace}", namespace).replace("{serviceAccount}", service_account)
        } else {
            s.to_string()
        }
    };
    let mut p = provider.clone();
    match &mut p {
        ProviderConfig::Vault(v) => {
            if let VaultAuth::Kubernetes { role, .. } | VaultAuth::Jwt { role, .. } = &mut v.auth {
                *role = fill(role);
            }
        }
        ProviderConfig::Aws(a) => {
            if let AwsAuth::WebIdentity { role_arn, .. } = &mut a.auth {
                *role_arn = fill(role_arn);
            }
        }
    }
    p
}

/// Every object under a reserved name must be one this injection would write: what
/// secretmode owns in it must match, while additions by the API server and other webhooks
/// are accepted ([`owned`]). An injection written by another configuration or version of
/// secretmode (a template baked with `secretmode mutate`, a webhook replica of another
/// version during a rolling upgrade) is judged the same way, and its denial says so.
fn check_reserved(
    volumes: &[(&str, &JsonRef<'_>)],
    containers: &[(&str, &JsonRef<'_>)],
    init_containers: &[(&str, &JsonRef<'_>)],
    desired: &Desired,
) -> Result<(), InjectError> {
    let fix = "names starting with secretmode- are reserved: rename yours, or remove the copied injection and let the webhook add it";
    for (name, existing) in volumes.iter().filter(|(n, _)| n.starts_with(RESERVED_PREFIX)) {
        match desired.volumes.iter().find(|v| v.name == *name) {
            Some(wanted) => owned::volume(existing, &serde_json::to_value(wanted)?)
                .or_else(|d| other_injection(&format!("spec.volumes entry {name}"), &d))?,
            None => return deny(format!("volume {name} is not one secretmode injects for these annotations"), fix),
        }
    }
    for (list, entries, as_init) in [("containers", containers, false), ("initContainers", init_containers, true)] {
        for (name, existing) in entries.iter().filter(|(n, _)| n.starts_with(RESERVED_PREFIX)) {
            match &desired.agent {
                Some((wanted, init)) if *init == as_init && wanted.name() == *name => {
                    owned::agent_container(existing, &wanted.to_value())
                        .or_else(|d| other_injection(&format!("spec.{list} entry {name}"), &d))?;
                }
                // The agent where another configuration puts it (native sidecar or plain).
                Some((wanted, init)) if wanted.name() == *name => {
                    let (here, there) = if *init {
                        ("a plain container", "initContainers")
                    } else {
                        ("an init container", "containers")
                    };
                    return deny(
                        format!(
                            "spec.{list} entry {name} is {here}, and this webhook injects it into spec.{there}: {OTHER_INJECTION}"
                        ),
                        OTHER_INJECTION_FIX,
                    );
                }
                _ => {
                    return deny(
                        format!("{list} entry {name} is not one secretmode injects for these annotations"),
                        fix,
                    )
                }
            }
        }
    }
    Ok(())
}

/// What a reserved object that differs in an owned field probably is, and what to do.
const OTHER_INJECTION: &str = "it looks like an injection written by another secretmode configuration or version (a pod template baked with `secretmode mutate`, or a webhook replica of another version during a rolling upgrade), or an object of yours under the reserved secretmode- prefix";
const OTHER_INJECTION_FIX: &str = "remove the secretmode- objects from the pod template so the webhook injects the current agent (rename your own objects that start with secretmode-), or re-run `secretmode mutate` with the current config on the template without them";

fn other_injection(what: &str, difference: &owned::Difference) -> Result<(), InjectError> {
    deny(
        format!("{what} is not what this webhook injects for these annotations: {difference}; {OTHER_INJECTION}"),
        OTHER_INJECTION_FIX,
    )
}

/// Indices of the regular containers that receive mount and env.
fn target_containers(containers: &[(&str, &JsonRef<'_>)], plan: &Plan) -> Result<Vec<usize>, InjectError> {
    match &plan.containers {
        None => Ok(containers
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| !name.starts_with(RESERVED_PREFIX))
            .map(|(i, _)| i)
            .collect()),
        Some(wanted) => wanted
            .iter()
            .map(|w| {
                containers.iter().position(|(n, _)| n == w).ok_or_else(|| InjectError::Denied {
                    problem: format!("secrets/containers names {w:?}, which is not a container of this pod"),
                    fix: format!("name one of: {}", containers.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")),
                })
            })
            .collect(),
    }
}

/// The ops that add the read-only mount and the env vars to app container `index`, once.
/// Our mount and env vars already there must be ours (every entry of the name: the kubelet
/// uses the last); other mounts may not overlap the secrets directory, cleaned paths compared.
fn wire_container(
    container: &ObjectRef<'_>,
    index: usize,
    desired: &Desired,
    mount_path: &str,
    ops: &mut Vec<PatchOp>,
) -> Result<(), InjectError> {
    let name = container.get("name").and_then(JsonRef::as_str).unwrap_or_default();
    let mut has_mount = false;
    for m in JsonRef::entries(container.get("volumeMounts")) {
        let m_name = m.get("name").and_then(JsonRef::as_str).unwrap_or_default();
        let m_path = m.get("mountPath").and_then(JsonRef::as_str).unwrap_or_default();
        if m_name == SECRETS_VOLUME {
            // Built only here: a first injection, the common case, never needs it.
            let wanted = serde_json::to_value(&desired.mount)?;
            if let Err(d) =
                owned::mount(m, &wanted).map_err(|d| d.under(&["volumeMounts[", SECRETS_VOLUME, "]"].concat()))
            {
                return deny(
                    format!("container {name} mounts {SECRETS_VOLUME} differently from what secretmode injects: {d}"),
                    "remove that volumeMount and let the webhook add it",
                );
            }
            has_mount = true;
        } else if paths_overlap(m_path, mount_path) {
            return deny(
                format!("container {name} already mounts {m_name} at {m_path}, which overlaps the secrets directory {mount_path}"),
                "set secrets/mount-path to a directory of its own",
            );
        }
    }
    if !has_mount {
        let path = container_path(index, "volumeMounts");
        append_all(ops, path, container.get("volumeMounts"), std::slice::from_ref(&desired.mount))?;
    }

    let env = JsonRef::entries(container.get("env"));
    let mut to_add = Vec::new();
    for var in &desired.env {
        let var_name = &*var.name;
        let mut same_name = env.iter().filter(|e| e.get("name").and_then(JsonRef::as_str) == Some(var_name)).peekable();
        if same_name.peek().is_none() {
            to_add.push(var);
            continue;
        }
        let wanted = serde_json::to_value(var)?;
        if !same_name.all(|e| owned::env_var(e, &wanted).is_ok()) {
            return deny(
                format!("container {name} already sets {var_name} to something else"),
                "remove that variable (secretmode sets it), or rename the item",
            );
        }
    }
    append_all(ops, container_path(index, "env"), container.get("env"), &to_add)?;
    Ok(())
}

/// `/spec/containers/<index>/<field>`. Patch paths are built for every admission, so they are
/// joined directly instead of through `format!`.
fn container_path(index: usize, field: &str) -> String {
    ["/spec/containers/", itoa::Buffer::new().format(index), "/", field].concat()
}

mod container;
mod owned;
#[cfg(test)]
mod tests;
mod volumes;

use container::{AgentContainer, EnvSource, EnvValue, EnvVar, KeyRef, Mount, Role};
use volumes::{
    CsiAttributes, CsiSource, EmptyDirSource, KeyToPath, ProjectedSource, Projection, SecretSource, Source,
    TokenProjection, Volume,
};

impl From<serde_json::Error> for InjectError {
    fn from(e: serde_json::Error) -> InjectError {
        InjectError::Malformed(format!("patch value: {e}"))
    }
}
