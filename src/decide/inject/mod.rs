//! The pure mutation: pod JSON + plan + config in, add-only RFC 6902 ops or a typed denial out.
//!
//! The pod is read as raw JSON (never round-tripped through typed structs) and only ever added
//! to, at positions read from it, so fields newer than any k8s-openapi version survive.
//! Idempotence is read from the pod's own spec: an object with a reserved `secretmode-` name
//! counts as already injected when what secretmode owns in it matches this injection, whatever
//! the API server and other webhooks added around it on reinvocation (`owned`); a changed
//! owned field, or a reserved name this injection does not write, is denied.
//!
//! Every mode adds the read-only mount and the `<ITEM>_FILE` env vars to the target containers
//! (here). What a mode adds besides is in its own file: `eso.rs`, `csi.rs`, `init.rs`,
//! `sidecar.rs`; the two agent modes share `agent.rs`. The two features every mode offers have
//! files of their own: `exec.rs` (`env-values` outside eso: the wrapper), `watcher.rs`
//! (`on-change` in eso and csi), `render.rs` (rendered files in eso and csi: the render step
//! and its volume) and `signal.rs` (what a `signal:` action needs). The shared
//! machinery: `container.rs` and `volumes.rs` write what is injected, `owned.rs` compares an
//! injection already in the pod.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{json, Value};
use thiserror::Error;

use super::patch::{self, JsonText, PatchOp};
use super::plan::Plan;
use crate::config::Config;
use crate::json::tree::{JsonRef, ObjectRef};
use crate::vocabulary::mode::Mode;
use crate::vocabulary::names::{
    is_reserved, EXEC_CONTAINER, EXEC_VOLUME, RENDERED_VOLUME, RENDER_CONTAINER, SECRETS_VOLUME, WATCHER_CONTAINER,
};
use crate::vocabulary::on_change::SIGNAL_TARGET_ENV;
use crate::vocabulary::paths::{paths_overlap, EXEC_DIR};

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
    /// Our other containers (the exec installer, the render step, the watcher), only with
    /// `env-values`, `on-change` or rendered files in eso/csi: written as JSON trees, in the
    /// order they stand in their list.
    others: Vec<Other>,
    mount: Mount<'a>,
    /// The exec wrapper's read-only mount, when commands are wrapped.
    exec_mount: Option<Mount<'static>>,
    /// The rendered files' read-only mount (`eso`/`csi` with rendered files).
    rendered_mount: Option<Mount<'a>>,
    env: Vec<EnvVar<'a>>,
    /// The wrapper's `--env` list, when commands are wrapped (`exec.rs`).
    wrap: Option<String>,
    /// The wrapper's installer is in the pod already: a reinvocation (`exec.rs`).
    installed: bool,
    /// Mode `eso`, where only rendered files are wrapped (a denial's fix differs).
    eso: bool,
    /// Each target container gets `SECRETMODE_SIGNAL_TARGET=<its name>` (`signal.rs`).
    signal: bool,
    /// The signal's sender is in the pod already (a reinvocation): a target without the
    /// variable was added by a later webhook, and is neither marked nor signalled.
    sender_present: bool,
}

/// A container of ours other than the agent.
struct Other {
    name: &'static str,
    value: Value,
    as_init: bool,
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
    let prefix = config.annotation_prefix.as_str();
    // A signal is sent as the app's own user, which the agent or watcher then runs as.
    let sender_present = plan.signals() && signal::sender_present(&app_containers, &init_containers);
    let sender_user = if plan.signals() {
        let targets = target_containers(&app_containers, &init_containers, plan, prefix)?;
        let targets: Vec<_> = targets
            .into_iter()
            .filter_map(|i| app_containers.get(i).copied())
            .filter(|(_, c)| !sender_present || signal::marked(c.get("env")))
            .collect();
        Some(signal::sender_user(spec, &targets, prefix)?)
    } else {
        None
    };
    let mut desired = desired(pod, plan, config, ctx, sender_user)?;
    desired.installed = init_containers.iter().any(|(n, _)| *n == EXEC_CONTAINER);
    desired.sender_present = sender_present;
    check_reserved(&volumes, &app_containers, &init_containers, &desired)?;
    let targets = target_containers(&app_containers, &init_containers, plan, prefix)?;

    let mut ops = Vec::new();
    // Container ops come before the agent's insert-first, which shifts container indices.
    for index in targets {
        if let Some(container) = app_containers.get(index).and_then(|(_, c)| c.as_object()) {
            wire_container(container, index, &desired, &plan.mount_path, prefix, &mut ops)?;
        }
    }
    if plan.signals() && signal::needs_shared_namespace(spec, prefix)? {
        ops.push(PatchOp::add("/spec/shareProcessNamespace".into(), &true)?);
    }
    let missing_volumes: Vec<&Volume> =
        desired.volumes.iter().filter(|v| !volumes.iter().any(|(n, _)| *n == v.name)).collect();
    append_all(&mut ops, "/spec/volumes".into(), spec.get("volumes"), &missing_volumes)?;
    for (list, as_init, present) in [("initContainers", true, &init_containers), ("containers", false, &app_containers)]
    {
        insert_first(&mut ops, spec, list, as_init, present, &desired)?;
    }
    let changes_pod = !ops.is_empty();
    annotate(pod, &[config.annotation_prefix.as_str(), "/injected"].concat(), ctx.injected_note, &mut ops)?;
    Ok(Injection { ops, changes_pod })
}

/// Inserts our containers that belong in `list` and are not `present` yet, first in the list
/// and in their order: the agent (the init agent stays the first init container), then the
/// exec installer, then the render step, then the watcher.
fn insert_first(
    ops: &mut Vec<PatchOp>,
    spec: &ObjectRef<'_>,
    list: &str,
    as_init: bool,
    present: &[(&str, &JsonRef<'_>)],
    desired: &Desired,
) -> Result<(), InjectError> {
    let missing = |name: &str| !present.iter().any(|(n, _)| *n == name);
    if desired.others.is_empty() {
        // Only the agent, or nothing: the path of every pod without env-values or on-change.
        if let Some((agent, init)) = &desired.agent {
            if *init == as_init && missing(agent.name()) {
                let agent = agent.to_json()?;
                ops.push(match spec.get(list) {
                    Some(JsonRef::Array(_)) => PatchOp::add_json(["/spec/", list, "/0"].concat(), agent),
                    _ => PatchOp::add_json(["/spec/", list].concat(), JsonText::list(&[agent])),
                });
            }
        }
        return Ok(());
    }
    let mut texts = Vec::new();
    if let Some((agent, init)) = &desired.agent {
        if *init == as_init && missing(agent.name()) {
            texts.push(agent.to_json()?);
        }
    }
    // `others` holds the installer, then the render step, then the watcher.
    for other in desired.others.iter().filter(|o| o.as_init == as_init && missing(o.name)) {
        texts.push(JsonText::of(&other.value)?);
    }
    match spec.get(list) {
        _ if texts.is_empty() => {}
        Some(JsonRef::Array(_)) => {
            // Each insert at 0 goes before the previous one: the last written is first.
            let at = ["/spec/", list, "/0"].concat();
            ops.extend(texts.into_iter().rev().map(|t| PatchOp::add_json(at.clone(), t)));
        }
        _ => ops.push(PatchOp::add_json(["/spec/", list].concat(), JsonText::list(&texts))),
    }
    Ok(())
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

/// What a mode adds besides the mount and `_FILE` env every mode adds: its volumes, and the
/// agent container with whether it goes into `initContainers`.
type ModeParts<'a> = (Vec<Volume<'a>>, Option<(AgentContainer<'a>, bool)>);

/// Each mode's own checks of where the pod runs.
fn check_platform(spec: &ObjectRef<'_>, plan: &Plan, config: &Config) -> Result<(), InjectError> {
    match plan.mode {
        Mode::Eso | Mode::Csi => {
            if plan.wraps_commands() {
                let prefix = &config.annotation_prefix;
                let mode = plan.mode;
                agent::check_linux_for(
                    spec,
                    &format!("{prefix}/env-values in mode {mode} injects the Linux secretmode-exec init container"),
                    &match mode {
                        Mode::Csi => format!("remove {prefix}/env-values (or use mode eso, whose env values of items need no wrapper) for Windows pods"),
                        _ => format!("remove {prefix}/env-values for Windows pods (the values of rendered files need the wrapper)"),
                    },
                )?;
            }
        }
        Mode::Init => init::check_platform(spec)?,
        Mode::Sidecar => sidecar::check_platform(spec, config)?,
    }
    if plan.watches() {
        watcher::check_platform(spec, plan, config)?;
    }
    Ok(())
}

/// What the injection adds; `sender_user` is the app's uid when the agent or watcher must
/// send a signal as it.
fn desired<'a>(
    pod: &JsonRef<'_>,
    plan: &'a Plan,
    config: &'a Config,
    ctx: &Context<'_>,
    sender_user: Option<i64>,
) -> Result<Desired<'a>, InjectError> {
    let mount_path = plan.mount_path.as_str();
    let mut env = Vec::with_capacity(plan.items.len() * 2 + plan.rendered.len());
    for item in &plan.items {
        env.push(EnvVar {
            name: [item.env_stem.as_str(), "_FILE"].concat().into(),
            value: Some(EnvValue::Text([mount_path, "/", item.file.as_str()].concat())),
            value_from: None,
        });
    }
    // Rendered files sit with the items in the agent modes, beside them in eso and csi.
    let rendered_dir = plan.rendered_dir.as_deref().unwrap_or(mount_path);
    for file in &plan.rendered {
        env.push(EnvVar {
            name: [file.env_stem.as_str(), "_FILE"].concat().into(),
            value: Some(EnvValue::Text([rendered_dir, "/", file.file.name.as_str()].concat())),
            value_from: None,
        });
    }
    // Mounted read-only and never with subPath: a subPath mount never sees rotation.
    let mount = Mount { name: SECRETS_VOLUME, mount_path, read_only: true };
    let (mut volumes, agent) = match plan.mode {
        Mode::Eso => {
            eso::push_value_env(plan, &mut env);
            (eso::volumes(plan), None)
        }
        Mode::Csi => (csi::volumes(plan), None),
        Mode::Init => init::desired(pod, plan, config, ctx, sender_user)?,
        Mode::Sidecar => sidecar::desired(pod, plan, config, ctx, sender_user)?,
    };
    let mut others = Vec::new();
    let wrap = if plan.wraps_commands() {
        volumes.push(exec::volume(&config.agent));
        others.push(Other {
            name: EXEC_CONTAINER,
            value: serde_json::to_value(exec::installer(&config.agent))?,
            as_init: true,
        });
        Some(exec::stems(plan))
    } else {
        None
    };
    if plan.watches() {
        let a = &config.agent;
        let group = agent::app_group(pod, plan).unwrap_or(a.run_as_group);
        let user = sender_user.unwrap_or(a.run_as_user);
        if let Some(dir) = plan.rendered_dir.as_deref() {
            // Renders once before the app starts; the watcher re-renders on each swap.
            volumes.push(render::volume(config));
            let renderer = render::renderer(plan, config, dir, user, group)?;
            others.push(Other { name: RENDER_CONTAINER, value: serde_json::to_value(&renderer)?, as_init: true });
        }
        let (volume, watcher, as_init) =
            watcher::desired(plan, config, plan.on_change.as_ref(), plan.rendered_dir.as_deref(), user, group)?;
        volumes.push(volume);
        others.push(Other { name: WATCHER_CONTAINER, value: serde_json::to_value(&watcher)?, as_init });
    }
    let exec_mount = wrap.is_some().then(exec::app_mount);
    let rendered_mount = plan.rendered_dir.as_deref().map(|dir| render::mount(dir, true));
    Ok(Desired {
        volumes,
        agent,
        others,
        mount,
        exec_mount,
        rendered_mount,
        env,
        wrap,
        installed: false,
        eso: plan.mode == Mode::Eso,
        signal: plan.signals(),
        sender_present: false,
    })
}

/// A kubectl warning when a non-root app will probably not be able to read its 0440 files.
pub fn readability_warning(pod: &JsonRef<'_>, plan: &Plan) -> Option<String> {
    let spec = pod.get("spec")?;
    if spec.at(&["securityContext", "fsGroup"]).is_some() {
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
        Mode::Csi => None,
        Mode::Eso => Some(eso::UNREADABLE_WARNING.into()),
        Mode::Init | Mode::Sidecar => agent::app_group(pod, plan).is_none().then(|| {
            format!("secretmode {}: files are mode 0440; set runAsGroup or fsGroup so the app can read them", plan.mode)
        }),
    }
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
    for (name, existing) in volumes.iter().filter(|(n, _)| is_reserved(n)) {
        match desired.volumes.iter().find(|v| v.name == *name) {
            Some(wanted) => owned::volume(existing, &serde_json::to_value(wanted)?)
                .or_else(|d| other_injection(&format!("spec.volumes entry {name}"), &d))?,
            None => return deny(format!("volume {name} is not one secretmode injects for these annotations"), fix),
        }
    }
    for (list, entries, as_init) in [("containers", containers, false), ("initContainers", init_containers, true)] {
        for (name, existing) in entries.iter().filter(|(n, _)| is_reserved(n)) {
            let wanted: Option<(Cow<Value>, bool)> = match &desired.agent {
                Some((agent, init)) if agent.name() == *name => Some((Cow::Owned(agent.to_value()), *init)),
                _ => desired.others.iter().find(|o| o.name == *name).map(|o| (Cow::Borrowed(&o.value), o.as_init)),
            };
            match wanted {
                Some((wanted, init)) if init == as_init => {
                    owned::agent_container(existing, &wanted)
                        .or_else(|d| other_injection(&format!("spec.{list} entry {name}"), &d))?;
                }
                // The container where another configuration puts it (native sidecar or plain).
                Some((_, init)) => {
                    let (here, there) = if init {
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

/// Indices of the regular containers that receive mount and env. A name in
/// `<prefix>/containers` that is an init container is refused as such: no mode mounts into
/// init containers (the init agent runs first, but only regular containers get the files).
fn target_containers(
    containers: &[(&str, &JsonRef<'_>)],
    init_containers: &[(&str, &JsonRef<'_>)],
    plan: &Plan,
    prefix: &str,
) -> Result<Vec<usize>, InjectError> {
    let Some(wanted) = &plan.containers else {
        return Ok(containers.iter().enumerate().filter(|(_, (name, _))| !is_reserved(name)).map(|(i, _)| i).collect());
    };
    let regular = || containers.iter().map(|(n, _)| *n).filter(|n| !is_reserved(n)).collect::<Vec<_>>().join(", ");
    wanted
        .iter()
        .map(|w| {
            if let Some(i) = containers.iter().position(|(n, _)| n == w) {
                return Ok(i);
            }
            let problem = if init_containers.iter().any(|(n, _)| n == w) {
                format!(
                    "{prefix}/containers names {w:?}, which is an init container: secrets are mounted into regular containers (spec.containers) only, in every mode"
                )
            } else {
                format!("{prefix}/containers names {w:?}, which is not a container of this pod")
            };
            deny(problem, format!("name regular containers only, from: {}", regular()))
        })
        .collect()
}

/// The ops that add the read-only mount and the env vars to app container `index`, once, and
/// with `env-values` outside eso the wrapper's mount and the wrapped command. Our mounts and
/// env vars already there must be ours (every entry of the name: the kubelet uses the last);
/// other mounts may not overlap the secrets or wrapper directory, cleaned paths compared.
fn wire_container(
    container: &ObjectRef<'_>,
    index: usize,
    desired: &Desired,
    mount_path: &str,
    prefix: &str,
    ops: &mut Vec<PatchOp>,
) -> Result<(), InjectError> {
    let name = container.get("name").and_then(JsonRef::as_str).unwrap_or_default();
    // `command` is read only here: the webhook's pod view keeps it only for such pods.
    let wrap = match &desired.wrap {
        Some(stems) => Some(exec::wrap(name, container.get("command"), stems, prefix, desired.installed, desired.eso)?),
        None => None,
    };
    let exec_mount = match wrap {
        Some(Wrap::Already | Wrap::New(_)) => desired.exec_mount.as_ref(),
        Some(Wrap::Later) | None => None,
    };
    let rendered_mount = desired.rendered_mount.as_ref();
    let mut has_mount = false;
    let mut has_exec_mount = false;
    let mut has_rendered_mount = false;
    for m in JsonRef::entries(container.get("volumeMounts")) {
        let m_name = m.get("name").and_then(JsonRef::as_str).unwrap_or_default();
        let m_path = m.get("mountPath").and_then(JsonRef::as_str).unwrap_or_default();
        let ours = match (exec_mount, rendered_mount) {
            _ if m_name == SECRETS_VOLUME => Some(&desired.mount),
            (Some(exec), _) if m_name == EXEC_VOLUME => Some(exec),
            (_, Some(rendered)) if m_name == RENDERED_VOLUME => Some(rendered),
            _ => None,
        };
        if let Some(ours) = ours {
            // Built only here: a first injection, the common case, never needs it.
            let wanted = serde_json::to_value(ours)?;
            if let Err(d) = owned::mount(m, &wanted).map_err(|d| d.under(&["volumeMounts[", ours.name, "]"].concat())) {
                return deny(
                    format!("container {name} mounts {} differently from what secretmode injects: {d}", ours.name),
                    "remove that volumeMount and let the webhook add it",
                );
            }
            has_mount |= m_name == SECRETS_VOLUME;
            has_exec_mount |= m_name == EXEC_VOLUME;
            has_rendered_mount |= m_name == RENDERED_VOLUME;
        } else if paths_overlap(m_path, mount_path) {
            return deny(
                format!("container {name} already mounts {m_name} at {m_path}, which overlaps the secrets directory {mount_path}"),
                format!("set {prefix}/mount-path to a directory of its own"),
            );
        } else if let Some(rendered) = rendered_mount.filter(|r| paths_overlap(m_path, r.mount_path)) {
            return deny(
                format!(
                    "container {name} already mounts {m_name} at {m_path}, which overlaps the rendered files' directory {}",
                    rendered.mount_path
                ),
                format!("set {prefix}/mount-path to a directory of its own (rendered files go to <mount-path>-rendered)"),
            );
        } else if exec_mount.is_some() && paths_overlap(m_path, EXEC_DIR) {
            return deny(
                format!("container {name} already mounts {m_name} at {m_path}, which overlaps the exec wrapper's directory {EXEC_DIR}"),
                format!("move that mount, or remove {prefix}/env-values"),
            );
        }
    }
    let mut mounts: [Option<&Mount>; 3] = [None, None, None];
    if !has_mount {
        mounts[0] = Some(&desired.mount);
    }
    if !has_exec_mount {
        mounts[1] = exec_mount;
    }
    if !has_rendered_mount {
        mounts[2] = rendered_mount;
    }
    let mounts: &[&Mount] = match mounts {
        [Some(a), None, None] | [None, Some(a), None] | [None, None, Some(a)] => &[a],
        [None, None, None] => &[],
        _ => &mounts.iter().flatten().copied().collect::<Vec<_>>(),
    };
    if !mounts.is_empty() {
        append_all(ops, container_path(index, "volumeMounts"), container.get("volumeMounts"), mounts)?;
    }

    if let Some(Wrap::New(command)) = &wrap {
        ops.push(PatchOp::add(container_path(index, "command"), command)?);
    }

    // The signal's sender finds this container's main process by this variable; a container a
    // later webhook added (the sender is there, the variable is not) is never signalled.
    let marked = || signal::marked(container.get("env"));
    let signal_target = (desired.signal && (!desired.sender_present || marked())).then(|| EnvVar {
        name: SIGNAL_TARGET_ENV.into(),
        value: Some(EnvValue::Text(name.to_string())),
        value_from: None,
    });
    let env = JsonRef::entries(container.get("env"));
    let mut to_add = Vec::new();
    for var in desired.env.iter().chain(&signal_target) {
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

mod agent;
mod container;
mod csi;
mod eso;
mod exec;
mod init;
mod owned;
mod render;
mod sidecar;
mod signal;
#[cfg(test)]
mod tests;
mod volumes;
mod watcher;

use container::{AgentContainer, EnvValue, EnvVar, Mount};
use exec::Wrap;
use volumes::Volume;

impl From<serde_json::Error> for InjectError {
    fn from(e: serde_json::Error) -> InjectError {
        InjectError::Malformed(format!("patch value: {e}"))
    }
}
