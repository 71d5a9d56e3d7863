//! Mode `init`: an init container fetches once into an in-memory volume.
//!
//! Adds what every agent mode adds (`agent.rs`) with the agent as `secretmode-init`, placed
//! first in `initContainers` and running `agent --once`: the app starts only once the files
//! are written, and they change only when the pod restarts.

use super::agent;
use super::container::Role;
use super::{Context, InjectError, ModeParts};
use crate::config::Config;
use crate::decide::plan::Plan;
use crate::json::tree::{JsonRef, ObjectRef};
use crate::vocabulary::mode::Mode;

pub(super) fn desired<'a>(
    pod: &JsonRef<'_>,
    plan: &'a Plan,
    config: &'a Config,
    ctx: &Context<'_>,
    sender_user: Option<i64>,
) -> Result<ModeParts<'a>, InjectError> {
    agent::desired(pod, plan, config, ctx, Role::Init, sender_user)
}

/// The agent is a Linux container.
pub(super) fn check_platform(spec: &ObjectRef<'_>) -> Result<(), InjectError> {
    agent::check_linux(spec, Mode::Init)
}
