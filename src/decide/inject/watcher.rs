//! `<prefix>/on-change` and rendered files in modes `eso` and `csi`: the `secretmode-watcher`
//! container.
//!
//! There the kubelet (Secret volume) or the CSI driver rewrites the files, by swapping the
//! directory's `..data` symlink, so a small watcher (`<agent.binary> watch`, the agent image)
//! mounts the secrets volume read-only and, on each swap, re-renders the pod's rendered files
//! into `secretmode-rendered` (`render.rs`) and then fires the action. It is configured by
//! one env var, `SECRETMODE_WATCH_SPEC` (a [`WatchSpec`]: references only), keeps its status in
//! its own in-memory `secretmode-watch-status` volume, and serves `/healthz` and `/metrics` on
//! the agent's health port, so it is placed and checked as the sidecar agent is: a native
//! sidecar (init container with `restartPolicy: Always`) or, with `agent.nativeSidecar:
//! false`, a plain first container; denied on `hostNetwork` pods and beside a container
//! using that port. It has a liveness probe and no startup probe: the app does not wait for it
//! (the files are there without it), and no `postStart` hook for the same reason.

use serde::Serialize;

use super::container::{liveness_probe, EnvValue, EnvVar, Mount, Port, Probe, SecurityContext};
use super::volumes::{EmptyDirSource, Source, Volume};
use super::{agent, render, sidecar, InjectError};
use crate::agent::spec::{WatchSpec, SPEC_VERSION};
use crate::config::{Config, Resources};
use crate::decide::plan::Plan;
use crate::json::tree::ObjectRef;
use crate::vocabulary::names::{keys, PORT_NAME, SECRETS_VOLUME, WATCHER_CONTAINER, WATCH_STATUS_VOLUME};
use crate::vocabulary::on_change::OnChange;
use crate::vocabulary::paths::{WATCH_SPEC_ENV, WATCH_STATUS_DIR};

/// The status file is a few hundred bytes.
const STATUS_VOLUME_SIZE_LIMIT: &str = "1Mi";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Watcher<'a> {
    name: &'static str,
    image: &'a str,
    image_pull_policy: &'a str,
    command: [&'a str; 1],
    args: [&'static str; 1],
    env: [EnvVar<'a>; 1],
    volume_mounts: Vec<Mount<'a>>,
    security_context: SecurityContext,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<&'a Resources>,
    ports: [Port; 1],
    liveness_probe: Probe,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_policy: Option<&'static str>,
}

/// The watcher is a Linux container that binds the health port on the pod's network. The
/// messages name what asks for it: `on-change`, else the rendered files.
pub(super) fn check_platform(spec: &ObjectRef<'_>, plan: &Plan, config: &Config) -> Result<(), InjectError> {
    let prefix = &config.annotation_prefix;
    let (asks, remove) = match (&plan.on_change, plan.rendered.first()) {
        (None, Some(f)) => (
            format!("the rendered file {} (a {prefix}/template.<file> or bundle.<file> annotation)", f.file.name),
            format!("the {prefix}/template.<file> and {prefix}/bundle.<file> annotations"),
        ),
        _ => (format!("{prefix}/{}", keys::ON_CHANGE), format!("{prefix}/{}", keys::ON_CHANGE)),
    };
    agent::check_linux_for(
        spec,
        &format!("{asks} in mode {} injects a Linux watcher container", plan.mode),
        &format!("remove {remove} for Windows pods"),
    )?;
    sidecar::check_health_port(
        spec,
        config,
        &format!("{asks} would have the secretmode-watcher bind its port"),
        "the secretmode-watcher",
        &format!("remove {remove} from hostNetwork pods"),
        &format!("move the container to another port, or remove {remove}"),
    )
}

/// The watcher's volume and container (with whether it goes into `initContainers`), run as
/// `user` (the config's, or the app's for a signal) in group `group`; with `rendered` (the
/// directory of the rendered files) it mounts it writable and re-renders on each swap.
pub(super) fn desired<'a>(
    plan: &'a Plan,
    config: &'a Config,
    on_change: Option<&OnChange>,
    rendered: Option<&'a str>,
    user: i64,
    group: i64,
) -> Result<(Volume<'a>, Watcher<'a>, bool), InjectError> {
    let a = &config.agent;
    let spec = WatchSpec {
        version: SPEC_VERSION,
        dir: plan.mount_path.clone(),
        on_change: on_change.cloned(),
        render: rendered.map(|_| render::spec(plan)),
        health_port: a.health_port,
    };
    let mut volume_mounts = vec![
        Mount { name: SECRETS_VOLUME, mount_path: &plan.mount_path, read_only: true },
        Mount { name: WATCH_STATUS_VOLUME, mount_path: WATCH_STATUS_DIR, read_only: false },
    ];
    volume_mounts.extend(rendered.map(|dir| render::mount(dir, false)));
    let spec = serde_json::to_string(&spec)?;
    let resources = a.watcher_resources();
    let watcher = Watcher {
        name: WATCHER_CONTAINER,
        image: &a.image,
        image_pull_policy: &a.image_pull_policy,
        command: [&a.binary],
        args: ["watch"],
        env: [EnvVar { name: WATCH_SPEC_ENV.into(), value: Some(EnvValue::Text(spec)), value_from: None }],
        volume_mounts,
        security_context: SecurityContext::restricted(user, group),
        resources: (*resources != Resources::default()).then_some(resources),
        ports: [Port { name: PORT_NAME, container_port: a.health_port, protocol: "TCP" }],
        liveness_probe: liveness_probe(a.health_port),
        restart_policy: a.native_sidecar.then_some("Always"),
    };
    let volume = Volume {
        name: WATCH_STATUS_VOLUME,
        source: Source::EmptyDir(EmptyDirSource { medium: Some("Memory"), size_limit: STATUS_VOLUME_SIZE_LIMIT }),
    };
    Ok((volume, watcher, a.native_sidecar))
}
