//! `<prefix>/env-values` outside mode `eso` (and in `eso` for rendered files, which
//! `secretKeyRef` cannot carry): the `secretmode-exec` wrapper.
//!
//! The `secretmode-exec` init container (agent image, restricted) copies the wrapper from the
//! image into `secretmode-bin`, a small disk-backed emptyDir (not `Memory`: the wrapper must not
//! cost pod memory), at [`EXEC_DIR`]. Each target container mounts it read-only there and its
//! `command` becomes `[EXEC_PATH, "--env", "<STEM>,...", "--", <its own command>...]`; `args`
//! are left alone (the runtime appends them). The wrapper reads each `<STEM>_FILE` into
//! `<STEM>` and `exec`s the command. A container without `command` cannot be wrapped (its
//! entrypoint is in the image, and the webhook never looks images up) and is denied.
//!
//! A container whose command already starts with [`EXEC_PATH`] is wrapped already (a
//! reinvocation, a template baked by `secretmode mutate`): it is judged by
//! [`owned::wrapped_command`], never wrapped twice. On reinvocation (the installer is in the
//! pod already) a container that is not wrapped was added by a later webhook (a mesh proxy,
//! whose command is often in its image): like every container a later webhook adds, it gets
//! the mount and the `_FILE` env vars and nothing else, so it is neither wrapped nor denied.

use serde::Serialize;

use super::container::{Mount, SecurityContext};
use super::owned::{self, Wrapped};
use super::volumes::{EmptyDirSource, Source, Volume};
use super::{deny, InjectError};
use crate::config::{AgentConfig, Resources};
use crate::decide::plan::Plan;
use crate::json::tree::JsonRef;
use crate::vocabulary::mode::Mode;
use crate::vocabulary::names::{EXEC_CONTAINER, EXEC_VOLUME};
use crate::vocabulary::paths::{EXEC_DIR, EXEC_PATH};

/// The `--env` list, comma-separated: the items' env stems in plan order (not in `eso`, whose
/// items' values come from `secretKeyRef`), then the rendered files'.
pub(super) fn stems(plan: &Plan) -> String {
    let items = plan.items.iter().filter(|_| plan.mode != Mode::Eso).map(|i| i.env_stem.as_str());
    let files = plan.rendered.iter().map(|f| f.env_stem.as_str());
    let mut out = String::new();
    for (i, stem) in items.chain(files).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(stem);
    }
    out
}

pub(super) fn volume(a: &AgentConfig) -> Volume<'_> {
    Volume {
        name: EXEC_VOLUME,
        source: Source::EmptyDir(EmptyDirSource { medium: None, size_limit: &a.exec_volume_size_limit }),
    }
}

/// The read-only mount every wrapped container gets.
pub(super) fn app_mount() -> Mount<'static> {
    Mount { name: EXEC_VOLUME, mount_path: EXEC_DIR, read_only: true }
}

/// The installer: `<agent.execBinary> --install EXEC_DIR`, as the config's non-root user.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Installer<'a> {
    name: &'static str,
    image: &'a str,
    image_pull_policy: &'a str,
    command: [&'a str; 3],
    volume_mounts: [Mount<'static>; 1],
    security_context: SecurityContext,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<&'a Resources>,
}

pub(super) fn installer(a: &AgentConfig) -> Installer<'_> {
    Installer {
        name: EXEC_CONTAINER,
        image: &a.image,
        image_pull_policy: &a.image_pull_policy,
        command: [&a.exec_binary, "--install", EXEC_DIR],
        volume_mounts: [Mount { name: EXEC_VOLUME, mount_path: EXEC_DIR, read_only: false }],
        security_context: SecurityContext::restricted(a.run_as_user, a.run_as_group),
        resources: (a.resources != Resources::default()).then_some(&a.resources),
    }
}

/// What is done to one target container's command.
pub(super) enum Wrap<'p> {
    /// Wrapped already, as this injection wraps it.
    Already,
    /// This command is written (an `add` of `command`, which replaces the member).
    New(Vec<&'p str>),
    /// Left alone: added by a later webhook, on reinvocation.
    Later,
}

/// The wrapped command for container `name`; `installed`: the installer is in the pod
/// already (a reinvocation); `eso`: the pod is in mode eso (wrapped for its rendered files).
pub(super) fn wrap<'p>(
    name: &str,
    command: Option<&'p JsonRef<'_>>,
    stems: &'p str,
    prefix: &str,
    installed: bool,
    eso: bool,
) -> Result<Wrap<'p>, InjectError> {
    let wrapped_already =
        command.and_then(JsonRef::as_array).and_then(<[_]>::first).is_some_and(|c| c.as_str() == Some(EXEC_PATH));
    if installed && !wrapped_already {
        return Ok(Wrap::Later);
    }
    let command = match command {
        Some(JsonRef::Array(c)) if !c.is_empty() => c,
        None | Some(JsonRef::Null) | Some(JsonRef::Array(_)) => {
            return deny(
                format!(
                    "{prefix}/env-values: container {name} sets no command, so the exec wrapper cannot start it (its entrypoint is in the image, which the webhook never looks up)"
                ),
                if eso {
                    format!(
                        "set command (and args) on container {name}, or list only the containers to wrap in {prefix}/containers, or remove {prefix}/env-values and read the rendered files through their <FILE>_FILE variables (in mode eso only rendered files need the wrapper)"
                    )
                } else {
                    format!(
                        "set command (and args) on container {name}, or list only the containers to wrap in {prefix}/containers, or use mode eso, or remove {prefix}/env-values and read the <ITEM>_FILE files"
                    )
                },
            )
        }
        Some(_) => return Err(InjectError::Malformed(format!("container {name}: command is not a list"))),
    };
    match owned::wrapped_command(command, stems) {
        Ok(Wrapped::Yes) => return Ok(Wrap::Already),
        Ok(Wrapped::No) => {}
        Err(d) => {
            return deny(
                format!("container {name} is already wrapped by secretmode-exec, not as this injection wraps it: {d}"),
                format!("remove the wrapper from container {name}'s command (keep the command after \"--\") and let the webhook add it"),
            )
        }
    }
    let mut wrapped = Vec::with_capacity(command.len() + 4);
    wrapped.extend([EXEC_PATH, "--env", stems, "--"]);
    for arg in command {
        match arg.as_str() {
            Some(a) => wrapped.push(a),
            None => return Err(InjectError::Malformed(format!("container {name}: command holds a non-string"))),
        }
    }
    Ok(Wrap::New(wrapped))
}
