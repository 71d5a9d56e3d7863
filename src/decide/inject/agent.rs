//! What the two agent modes (`init`, `sidecar`) add alike: the in-memory volume the agent
//! writes the files into, the projected service-account token and the fallback Secret (agent
//! only, when used), and the agent container carrying its spec. What differs between them is
//! in `init.rs` and `sidecar.rs` (the container's [`Role`]) and in `container.rs`.

use super::container::{AgentContainer, EnvSource, EnvValue, EnvVar, KeyRef, Mount, Role};
use super::volumes::{EmptyDirSource, ProjectedSource, Projection, SecretSource, Source, TokenProjection, Volume};
use super::{deny, Context, InjectError, ModeParts};
use crate::agent::spec::{AgentSpec, SPEC_VERSION};
use crate::config::Config;
use crate::decide::plan::{ItemSource, Plan};
use crate::json::tree::{JsonRef, ObjectRef};
use crate::providers::{AgentItem, ProviderConfig};
use crate::vocabulary::mode::Mode;
use crate::vocabulary::names::{is_reserved, FALLBACK_VOLUME, SECRETS_VOLUME, TOKEN_VOLUME};
use crate::vocabulary::paths::{FALLBACK_DIR, SPEC_ENV, TOKEN_DIR, TOKEN_FILE};

/// The fallback Secret is read by the agent's non-root user, which owns no files in a Secret
/// volume; it is mounted into the agent container only.
const MODE_0444: u32 = 0o444;

/// The volumes an agent mode adds, and its agent container (in `role`) with whether it goes
/// into `initContainers`.
pub(super) fn desired<'a>(
    pod: &JsonRef<'_>,
    plan: &'a Plan,
    config: &'a Config,
    ctx: &Context<'_>,
    role: Role,
    sender_user: Option<i64>,
) -> Result<ModeParts<'a>, InjectError> {
    let mount_path = plan.mount_path.as_str();
    let mut volumes = Vec::new();
    let provider =
        plan.provider_config(config).ok_or_else(|| InjectError::Malformed("provider not resolved".into()))?;
    volumes.push(Volume {
        name: SECRETS_VOLUME,
        source: Source::EmptyDir(EmptyDirSource {
            medium: Some("Memory"),
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
        agent_mounts.push(Mount { name: TOKEN_VOLUME, mount_path: TOKEN_DIR, read_only: true });
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
        agent_mounts.push(Mount { name: FALLBACK_VOLUME, mount_path: FALLBACK_DIR, read_only: true });
    }
    let mut agent = agent_container(pod, plan, config, ctx, provider, agent_mounts, role)?;
    if let Some(user) = sender_user {
        agent.0 = agent.0.with_user(user);
    }
    Ok((volumes, Some(agent)))
}

fn agent_container<'a>(
    pod: &JsonRef<'_>,
    plan: &Plan,
    config: &'a Config,
    ctx: &Context<'_>,
    provider: &'a ProviderConfig,
    mounts: Vec<Mount<'a>>,
    role: Role,
) -> Result<(AgentContainer<'a>, bool), InjectError> {
    let a = &config.agent;
    let service_account = pod
        .at(&["spec", "serviceAccountName"])
        .and_then(JsonRef::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let spec = AgentSpec {
        version: SPEC_VERSION,
        provider_name: plan.provider.clone().unwrap_or_default(),
        provider: provider.personalise(ctx.namespace, service_account),
        items: plan
            .items
            .iter()
            .filter_map(|i| match &i.source {
                ItemSource::Provider { path, key } => {
                    Some(AgentItem { name: i.name.clone(), path: path.clone(), key: key.clone() })
                }
                ItemSource::SecretKey(_) | ItemSource::CsiObject(_) => None,
            })
            .collect(),
        mount_path: plan.mount_path.clone(),
        token_file: provider.token_audience().map(|_| TOKEN_FILE.to_string()),
        fallback_dir: plan.fallback_secret.as_ref().map(|_| FALLBACK_DIR.to_string()),
        refresh_interval_seconds: plan.refresh_interval.as_secs().max(1),
        max_staleness_seconds: plan.max_staleness.as_secs().max(1),
        start_deadline_seconds: a.start_deadline.0.as_secs().max(1),
        health_port: a.health_port,
        on_change: plan.on_change.clone(),
        render: plan.rendered.iter().map(|f| f.file.clone()).collect(),
    };
    let mut env = vec![EnvVar { name: SPEC_ENV.into(), value: Some(EnvValue::Spec(Box::new(spec))), value_from: None }];
    if let Some((name, secret_ref)) = provider.secret_env() {
        env.push(EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvSource { secret_key_ref: KeyRef { name: &secret_ref.name, key: &secret_ref.key } }),
        });
    }
    // The init agent runs to completion before the app; a sidecar is an init container only
    // when native.
    let as_init = match role {
        Role::Init => true,
        Role::Sidecar { native } => native,
    };
    let group = app_group(pod, plan).unwrap_or(a.run_as_group);
    Ok((AgentContainer::new(role, a, env, mounts, group), as_init))
}

/// The group the app runs as (first target container, else the pod), if set and not root.
/// The agent joins it so the app can read the 0440 files without an `fsGroup`; only the
/// group follows the pod, the agent's user id always comes from the config.
pub(super) fn app_group(pod: &JsonRef<'_>, plan: &Plan) -> Option<i64> {
    let spec = pod.get("spec")?;
    let containers = spec.get("containers").and_then(JsonRef::as_array)?;
    fn name<'p>(c: &'p JsonRef<'_>) -> Option<&'p str> {
        c.get("name").and_then(JsonRef::as_str)
    }
    let first = match &plan.containers {
        Some(names) => containers.iter().find(|c| names.first().is_some_and(|n| name(c) == Some(n.as_str()))),
        None => containers.iter().find(|c| !is_reserved(name(c).unwrap_or_default())),
    };
    first
        .and_then(|c| c.at(&["securityContext", "runAsGroup"]))
        .or_else(|| spec.at(&["securityContext", "runAsGroup"]))
        .and_then(JsonRef::as_i64)
        .filter(|g| *g > 0)
}

/// An agent container runs on Linux only.
pub(super) fn check_linux(spec: &ObjectRef<'_>, mode: Mode) -> Result<(), InjectError> {
    if let Some(pin) = off_linux(spec) {
        return deny(
            format!(
                "mode {mode} injects a Linux agent container, and this pod is pinned to Windows (non-Linux) nodes ({pin})"
            ),
            "use mode eso or csi for Windows pods",
        );
    }
    Ok(())
}

/// Another container of ours (the watcher, the exec installer) runs on Linux only: `what`
/// says which, `fix` what to drop.
pub(super) fn check_linux_for(spec: &ObjectRef<'_>, what: &str, fix: &str) -> Result<(), InjectError> {
    match off_linux(spec) {
        Some(pin) => deny(format!("{what}, and this pod is pinned to Windows (non-Linux) nodes ({pin})"), fix),
        None => Ok(()),
    }
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
