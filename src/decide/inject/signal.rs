//! `<prefix>/on-change: signal:<NAME>`: what a signal needs in the pod.
//!
//! The sender (the sidecar agent, or the watcher) finds the app's main process in `/proc` by
//! the `SECRETMODE_SIGNAL_TARGET` env var (set to the container's name in each target
//! container) and `kill`s it. So the pod's process namespace is shared
//! (`shareProcessNamespace: true`; a pod that sets it `false` is denied), and the sender runs
//! as the app's own user: reading `/proc/<pid>/environ` and `kill` both need the same uid.
//! That user is each target container's effective `runAsUser` (its own securityContext, else
//! the pod's); unknown, different between targets, or root is denied: the webhook never runs
//! an injected container as root, and never guesses a uid the image might set.

use super::{deny, InjectError};
use crate::json::tree::{JsonRef, ObjectRef};

/// The uid the sender runs as: the targets' common, known, non-root `runAsUser`.
pub(super) fn sender_user(
    spec: &ObjectRef<'_>,
    targets: &[(&str, &JsonRef<'_>)],
    prefix: &str,
) -> Result<i64, InjectError> {
    let fix = "set a non-root runAsUser in the pod's securityContext (the app's own uid), so the signal can be sent as that user";
    let pod_user = spec.get("securityContext").and_then(|sc| sc.get("runAsUser"));
    let mut user: Option<(i64, &str)> = None;
    for (name, c) in targets {
        let effective = c.at(&["securityContext", "runAsUser"]).or(pod_user).and_then(JsonRef::as_i64);
        let uid = match effective {
            None => {
                return deny(
                    format!(
                        "{prefix}/on-change sends a signal, which only a process of the app's own user can send, and container {name}'s runAsUser is not set (the image decides it, which the webhook cannot see)"
                    ),
                    fix,
                )
            }
            Some(0) => {
                return deny(
                    format!(
                        "{prefix}/on-change sends a signal as the app's user, and container {name} runs as root (runAsUser 0); secretmode never runs a container as root"
                    ),
                    fix,
                )
            }
            Some(uid) => uid,
        };
        match user {
            Some((first, first_name)) if first != uid => {
                return deny(
                    format!(
                        "{prefix}/on-change sends a signal as the app's user, and the target containers run as different users ({first_name}: {first}, {name}: {uid})"
                    ),
                    format!("{fix}; or name one container in {prefix}/containers"),
                )
            }
            Some(_) => {}
            None => user = Some((uid, name)),
        }
    }
    user.map(|(uid, _)| uid).ok_or_else(|| InjectError::Malformed("no target container".into()))
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
