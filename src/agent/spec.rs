//! The contract between the webhook and the agent it injects.
//!
//! The webhook (`decide::inject`) serialises an [`AgentSpec`] into the injected container's
//! `SECRETMODE_AGENT_SPEC` environment variable ([`SPEC_ENV`]); `secretmode agent` reads it
//! back. It holds only references (paths, keys, addresses, file locations), never a secret
//! value: the pod spec is readable with `get pods` and lands in audit logs. The paths both
//! sides agree on are in `vocabulary::paths`.

use serde::{Deserialize, Serialize};

use crate::providers::{AgentItem, ProviderConfig};
use crate::vocabulary::on_change::OnChange;
use crate::vocabulary::paths::{SPEC_ENV, WATCH_SPEC_ENV};

/// Version of the spec format; the agent refuses specs it does not understand.
pub const SPEC_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentSpec {
    pub version: u32,
    /// Provider name from the webhook config (for messages and metrics).
    pub provider_name: String,
    /// The provider's definition, copied from the webhook config. The Vault role has its
    /// `{namespace}`/`{serviceAccount}` placeholders already replaced.
    pub provider: ProviderConfig,
    pub items: Vec<AgentItem>,
    /// Directory the app reads; the agent writes here.
    pub mount_path: String,
    /// Service-account token for provider auth, if the provider's auth uses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Directory holding the fallback Secret's keys (one per item name), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_dir: Option<String>,
    /// Sidecar refresh interval in seconds (ignored with `--once`).
    pub refresh_interval_seconds: u64,
    /// Past this age without a successful refresh the agent reports `stale`.
    pub max_staleness_seconds: u64,
    /// How long the first fetch may take, retries included, before failing or falling back.
    pub start_deadline_seconds: u64,
    /// Port for /startup, /healthz, /readyz and /metrics (sidecar only).
    pub health_port: u16,
    /// What to do after each new generation is in place (sidecar only; `init` denies it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_change: Option<OnChange>,
}

/// The contract between the webhook and `secretmode watch`, the watcher it injects in `eso` and
/// `csi` pods that declare `on-change`: carried in [`WATCH_SPEC_ENV`]. References only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WatchSpec {
    pub version: u32,
    /// The directory the kubelet (Secret volume) or the CSI driver rewrites, by swapping its
    /// `..data` symlink; mounted read-only in the watcher.
    pub dir: String,
    pub on_change: OnChange,
    /// Port for /healthz and /metrics.
    pub health_port: u16,
}

impl AgentSpec {
    pub fn from_json(text: &str) -> Result<AgentSpec, String> {
        let spec: AgentSpec = serde_json::from_str(text).map_err(|e| format!("invalid {SPEC_ENV}: {e}"))?;
        if spec.version != SPEC_VERSION {
            return Err(format!(
                "{SPEC_ENV} has version {}, this agent understands {SPEC_VERSION}: run the same secretmode version as the webhook",
                spec.version
            ));
        }
        Ok(spec)
    }
}

impl WatchSpec {
    pub fn from_json(text: &str) -> Result<WatchSpec, String> {
        let spec: WatchSpec = serde_json::from_str(text).map_err(|e| format!("invalid {WATCH_SPEC_ENV}: {e}"))?;
        if spec.version != SPEC_VERSION {
            return Err(format!(
                "{WATCH_SPEC_ENV} has version {}, this watcher understands {SPEC_VERSION}: run the same secretmode version as the webhook",
                spec.version
            ));
        }
        Ok(spec)
    }
}
