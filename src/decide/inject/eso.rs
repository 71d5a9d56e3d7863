//! Mode `eso`: External Secrets Operator syncs a Secret; the pod mounts it.
//!
//! Adds a `secret` volume of the declared keys (`defaultMode` 0440) and, with
//! `<prefix>/env-values`, one `secretKeyRef` env var per item beside the `<ITEM>_FILE` ones.

use super::container::{EnvSource, EnvVar, KeyRef};
use super::volumes::{KeyToPath, SecretSource, Source, Volume};
use crate::decide::plan::{ItemSource, Plan};
use crate::vocabulary::names::SECRETS_VOLUME;

/// Kubernetes `defaultMode` 0440 for secret volumes: owner and group read.
const MODE_0440: u32 = 0o440;

/// The Secret the ExternalSecret targets, with the declared keys as files.
pub(super) fn volumes(plan: &Plan) -> Vec<Volume<'_>> {
    let items = plan
        .items
        .iter()
        .filter_map(|i| match &i.source {
            ItemSource::SecretKey(key) => Some(KeyToPath { key, path: &i.file }),
            ItemSource::CsiObject(_) | ItemSource::Provider { .. } => None,
        })
        .collect();
    let secret_name = plan.eso_secret.as_deref().unwrap_or_default();
    vec![Volume {
        name: SECRETS_VOLUME,
        source: Source::Secret(SecretSource {
            secret_name,
            items: Some(items),
            optional: None,
            default_mode: MODE_0440,
        }),
    }]
}

/// With `env-values`, `<ITEM>` from the Secret's key, after the `<ITEM>_FILE` vars.
pub(super) fn push_value_env<'a>(plan: &'a Plan, env: &mut Vec<EnvVar<'a>>) {
    if !plan.env_values {
        return;
    }
    let Some(secret) = &plan.eso_secret else { return };
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

/// The Secret's files are root-owned: a non-root app needs an `fsGroup`.
pub(super) const UNREADABLE_WARNING: &str =
    "secretmode eso: files are mode 0440 and root-owned; set securityContext.fsGroup so the app can read them";
