//! Mode `sidecar`: a sidecar agent fetches, then refreshes, keeping the last good values.
//!
//! Adds what every agent mode adds (`agent.rs`) with the agent as `secretmode-sidecar`
//! (`agent`, no `--once`): a native sidecar (init container with `restartPolicy: Always` and a
//! startup probe) by default, or with `agent.nativeSidecar: false` a plain first container
//! whose `postStart` hook waits for the first sync. It serves probes on the agent's health
//! port, so a pod on the host network or using that port (or its name) is denied.

use super::agent;
use super::container::Role;
use super::{deny, named_list, Context, InjectError, ModeParts};
use crate::config::Config;
use crate::decide::plan::Plan;
use crate::json::tree::{JsonRef, ObjectRef};
use crate::vocabulary::mode::Mode;
use crate::vocabulary::names::{is_reserved, PORT_NAME};

pub(super) fn desired<'a>(
    pod: &JsonRef<'_>,
    plan: &'a Plan,
    config: &'a Config,
    ctx: &Context<'_>,
    sender_user: Option<i64>,
) -> Result<ModeParts<'a>, InjectError> {
    agent::desired(pod, plan, config, ctx, Role::Sidecar { native: config.agent.native_sidecar }, sender_user)
}

/// The agent is a Linux container that binds the health port on the pod's network.
pub(super) fn check_platform(spec: &ObjectRef<'_>, config: &Config) -> Result<(), InjectError> {
    agent::check_linux(spec, Mode::Sidecar)?;
    check_health_port(
        spec,
        config,
        "mode sidecar would bind the agent's port",
        "the secretmode sidecar",
        "use mode init, eso or csi for hostNetwork pods",
        "move the container to another port, or use mode init",
    )
}

/// A container of ours that binds the agent's health port (the sidecar agent, the watcher)
/// cannot run on the host network or beside a container using that port or its name.
/// `binds` and `needs` name it in the two denials; the fixes are its own.
pub(super) fn check_health_port(
    spec: &ObjectRef<'_>,
    config: &Config,
    binds: &str,
    needs: &str,
    host_network_fix: &str,
    port_fix: &str,
) -> Result<(), InjectError> {
    let port_number = config.agent.health_port;
    if spec.get("hostNetwork").and_then(JsonRef::as_bool) == Some(true) {
        return deny(format!("{binds} {port_number} on the node (hostNetwork: true)"), host_network_fix);
    }
    for list in ["containers", "initContainers"] {
        // Our own containers are judged by check_reserved, not here.
        for (name, c) in named_list(spec, list)?.into_iter().filter(|(n, _)| !is_reserved(n)) {
            for port in JsonRef::entries(c.get("ports")) {
                if port.get("containerPort").and_then(JsonRef::as_u64) == Some(u64::from(port_number)) {
                    return deny(format!("container {name} uses port {port_number}, which {needs} needs"), port_fix);
                }
                if port.get("name").and_then(JsonRef::as_str) == Some(PORT_NAME) {
                    return deny(
                        format!("container {name} declares a port named {PORT_NAME:?}, which is reserved"),
                        "rename the port",
                    );
                }
            }
        }
    }
    Ok(())
}
