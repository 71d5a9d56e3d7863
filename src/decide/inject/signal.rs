//! `<prefix>/on-change: signal:<NAME>`: what a signal needs in the pod.
//!
//! The sender (the sidecar agent, or the watcher) finds the app's main process in `/proc` by
//! the `SECRETMODE_SIGNAL_TARGET` env var (set to the container's name in each target
//! container) and `kill`s it. So the pod's process namespace is shared
//! (`shareProcessNamespace: true`; a pod that sets it `false` is denied), and the sender runs
//! as the app's own user and group: `kill` needs the same uid, and reading
//! `/proc/<pid>/environ` needs the same uid *and* gid (the kernel's ptrace access check,
//! `__ptrace_may_access`: real, effective and saved ids of both must match, short of
//! `CAP_SYS_PTRACE`, which an injected container never has). Those are each target
//! container's effective `runAsUser` and `runAsGroup` (its own securityContext, else the
//! pod's); unknown, different between targets, or root (0) is denied: the webhook never runs
//! an injected container as root, and never guesses an id the image might set. The group is
//! the one the agent and watcher join anyway (`agent::app_group`).

use super::{deny, InjectError};
use crate::json::tree::{JsonRef, ObjectRef};
use crate::vocabulary::names::{SIDECAR_CONTAINER, WATCHER_CONTAINER};
use crate::vocabulary::on_change::SIGNAL_TARGET_ENV;

/// Whether the sender (the sidecar agent or the watcher) is in the pod already: a
/// reinvocation, where containers without [`SIGNAL_TARGET_ENV`] were added by a later webhook
/// (a mesh proxy must not receive the app's signal, nor decide the sender's user).
pub(super) fn sender_present(containers: &[(&str, &JsonRef<'_>)], init_containers: &[(&str, &JsonRef<'_>)]) -> bool {
    containers.iter().chain(init_containers).any(|(n, _)| *n == SIDECAR_CONTAINER || *n == WATCHER_CONTAINER)
}

/// Whether a container's `env` carries [`SIGNAL_TARGET_ENV`] (this injection marked it).
pub(super) fn marked(env: Option<&JsonRef<'_>>) -> bool {
    JsonRef::entries(env).iter().any(|e| e.get("name").and_then(JsonRef::as_str) == Some(SIGNAL_TARGET_ENV))
}

/// The uid the sender runs as: the targets' common, known, non-root `runAsUser`, after
/// checking that their `runAsGroup` is common, known and non-root too (the sender joins it).
pub(super) fn sender_user(
    spec: &ObjectRef<'_>,
    targets: &[(&str, &JsonRef<'_>)],
    prefix: &str,
) -> Result<i64, InjectError> {
    let uid = common_id(spec, targets, prefix, "runAsUser", "user")?;
    common_id(spec, targets, prefix, "runAsGroup", "group")?;
    Ok(uid)
}

/// The targets' common effective `field` (container, else pod), known and non-zero.
fn common_id(
    spec: &ObjectRef<'_>,
    targets: &[(&str, &JsonRef<'_>)],
    prefix: &str,
    field: &str,
    what: &str,
) -> Result<i64, InjectError> {
    let fix = "set a non-root runAsUser and runAsGroup in the pod's securityContext (the app's own ids), so the signal can be sent as that user and group";
    let why = "only a process of the app's own user and group can find and signal it";
    let pod_value = spec.get("securityContext").and_then(|sc| sc.get(field));
    let mut common: Option<(i64, &str)> = None;
    for (name, c) in targets {
        let effective = c.at(&["securityContext", field]).or(pod_value).and_then(JsonRef::as_i64);
        let id = match effective {
            None => {
                return deny(
                    format!(
                        "{prefix}/on-change sends a signal, and {why}; container {name}'s {field} is not set (the image decides it, which the webhook cannot see)"
                    ),
                    fix,
                )
            }
            Some(0) => {
                return deny(
                    format!(
                        "{prefix}/on-change sends a signal as the app's {what}, and container {name} runs as root ({field} 0); secretmode never runs a container as root"
                    ),
                    fix,
                )
            }
            Some(id) => id,
        };
        match common {
            Some((first, first_name)) if first != id => {
                return deny(
                    format!(
                        "{prefix}/on-change sends a signal as the app's {what}, and the target containers run as different {what}s ({first_name}: {first}, {name}: {id})"
                    ),
                    format!("{fix}; or name one container in {prefix}/containers"),
                )
            }
            Some(_) => {}
            None => common = Some((id, name)),
        }
    }
    common.map(|(id, _)| id).ok_or_else(|| InjectError::Malformed("no target container".into()))
}

/// `shareProcessNamespace: true` for the pod: `Ok(true)` when it must be added, `Ok(false)`
/// when already set; a pod that turns it off is denied.
pub(super) fn needs_shared_namespace(spec: &ObjectRef<'_>, prefix: &str) -> Result<bool, InjectError> {
    match spec.get("shareProcessNamespace") {
        None | Some(JsonRef::Null) => Ok(true),
        Some(JsonRef::Bool(true)) => Ok(false),
        Some(JsonRef::Bool(false)) => deny(
            format!(
                "{prefix}/on-change sends a signal, which needs the pod's process namespace shared, and the pod sets shareProcessNamespace: false"
            ),
            format!("remove shareProcessNamespace: false (the webhook sets it to true), or use an http://127.0.0.1:<port>/<path> action in {prefix}/on-change"),
        ),
        Some(_) => Err(InjectError::Malformed("spec.shareProcessNamespace is not a boolean".into())),
    }
}
