//! Rendered files in modes `eso` and `csi` (`<prefix>/template.<file>`, `bundle.<file>`).
//!
//! There the items' files are a read-only volume the kubelet or the CSI driver writes, so the
//! rendered files go beside it: into `secretmode-rendered`, an in-memory emptyDir mounted
//! read-only in the target containers at `<mount-path>-rendered` (the same `..data` layout).
//! The `secretmode-render` init container (agent image, `<agent.binary> render`, restricted)
//! renders them once from the mounted items before the app starts; the watcher (`watcher.rs`,
//! always injected for such pods) re-renders them on each swap of the items' directory. Both
//! are configured by a [`RenderSpec`] (references only: the templates and item lists) and run
//! as the same user, so the watcher can replace what the init step wrote. In `init` and
//! `sidecar` the agent renders them itself (`AgentSpec.render`), and none of this is added.

use serde::Serialize;

use super::container::{EnvValue, EnvVar, Mount, SecurityContext};
use super::volumes::{EmptyDirSource, Source, Volume};
use crate::agent::spec::{RenderSpec, SPEC_VERSION};
use crate::config::{Config, Resources};
use crate::decide::annotations::rendered_dir;
use crate::decide::plan::Plan;
use crate::vocabulary::names::{RENDERED_VOLUME, RENDER_CONTAINER, SECRETS_VOLUME};
use crate::vocabulary::paths::RENDER_SPEC_ENV;

/// The spec of the render step and of the watcher's re-render.
pub(super) fn spec(plan: &Plan) -> RenderSpec {
    RenderSpec {
        version: SPEC_VERSION,
        source_dir: plan.mount_path.clone(),
        dest_dir: rendered_dir(&plan.mount_path),
        files: plan.rendered.iter().map(|f| f.file.clone()).collect(),
    }
}

/// The in-memory volume the rendered files live in (sized like the agent's files volume).
pub(super) fn volume(config: &Config) -> Volume<'_> {
    Volume {
        name: RENDERED_VOLUME,
        source: Source::EmptyDir(EmptyDirSource {
            medium: Some("Memory"),
            size_limit: &config.agent.memory_volume_size_limit,
        }),
    }
}

/// The mount of the rendered files: read-only in the apps, writable in the render step and
/// the watcher.
pub(super) fn mount(dir: &str, read_only: bool) -> Mount<'_> {
    Mount { name: RENDERED_VOLUME, mount_path: dir, read_only }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Renderer<'a> {
    name: &'static str,
    image: &'a str,
    image_pull_policy: &'a str,
    command: [&'a str; 1],
    args: [&'static str; 1],
    env: [EnvVar<'a>; 1],
    volume_mounts: [Mount<'a>; 2],
    security_context: SecurityContext,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<&'a Resources>,
}

/// The `secretmode-render` init container, run as `user` in group `group` (the watcher's).
pub(super) fn renderer<'a>(
    plan: &'a Plan,
    config: &'a Config,
    dir: &'a str,
    user: i64,
    group: i64,
) -> Result<Renderer<'a>, serde_json::Error> {
    let a = &config.agent;
    let resources = a.watcher_resources();
    Ok(Renderer {
        name: RENDER_CONTAINER,
        image: &a.image,
        image_pull_policy: &a.image_pull_policy,
        command: [&a.binary],
        args: ["render"],
        env: [EnvVar {
            name: RENDER_SPEC_ENV.into(),
            value: Some(EnvValue::Text(serde_json::to_string(&spec(plan))?)),
            value_from: None,
        }],
        volume_mounts: [
            Mount { name: SECRETS_VOLUME, mount_path: &plan.mount_path, read_only: true },
            mount(dir, false),
        ],
        security_context: SecurityContext::restricted(user, group),
        resources: (*resources != Resources::default()).then_some(resources),
    })
}
