//! The contract between the webhook and the agent it injects.
//!
//! The webhook (`decide::inject`) serialises an [`AgentSpec`] into the injected container's
//! `SECRETMODE_AGENT_SPEC` environment variable ([`SPEC_ENV`]); `secretmode agent` reads it
//! back. It holds only references (paths, keys, addresses, file locations), never a secret
//! value: the pod spec is readable with `get pods` and lands in audit logs. The paths both
//! sides agree on are in `vocabulary::paths`.

use serde::{Deserialize, Serialize};

use crate::providers::{AgentItem, ProviderConfig};
use crate::render::RenderedFile;
use crate::vocabulary::on_change::OnChange;
use crate::vocabulary::paths::{RENDER_SPEC_ENV, SPEC_ENV, WATCH_SPEC_ENV};

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
    /// Files rendered from the items (`<prefix>/template.<file>`, `<prefix>/bundle.<file>`),
    /// written in the same generation as the items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub render: Vec<RenderedFile>,
}

/// The contract between the webhook and `secretmode render` (the `secretmode-render` init
/// container of `eso`/`csi` pods with rendered files), carried in [`RENDER_SPEC_ENV`], and the
/// watcher's [`WatchSpec::render`]. References only: the templates and bundle lists, never a
/// value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenderSpec {
    pub version: u32,
    /// The items' files (the Secret or CSI volume at the pod's mount path; item name = file
    /// name), read-only.
    pub source_dir: String,
    /// Where the rendered files go (the `secretmode-rendered` emptyDir, `<mount-path>-rendered`
    /// in the app containers), in the same `..data` layout as the agent's files.
    pub dest_dir: String,
    pub files: Vec<RenderedFile>,
}

/// The contract between the webhook and `secretmode watch`, the watcher it injects in `eso` and
/// `csi` pods that declare `on-change` or rendered files: carried in [`WATCH_SPEC_ENV`].
/// References only. At least one of `on_change` and `render` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WatchSpec {
    pub version: u32,
    /// The directory the kubelet (Secret volume) or the CSI driver rewrites, by swapping its
    /// `..data` symlink; mounted read-only in the watcher.
    pub dir: String,
    /// Fired once after each swap (after the re-render, when there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_change: Option<OnChange>,
    /// Re-render these files on each swap of `dir` (its `source_dir` is `dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render: Option<RenderSpec>,
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
        check_rendered_names(spec.items.iter().map(|i| i.name.as_str()), &spec.render)
            .map_err(|e| format!("{SPEC_ENV}: {e}"))?;
        Ok(spec)
    }
}

/// A rendered file may not take an item's name or another rendered file's (the webhook refuses
/// both; a spec edited by hand is refused here rather than one file silently replacing another).
pub fn check_rendered_names<'a>(items: impl Iterator<Item = &'a str>, files: &[RenderedFile]) -> Result<(), String> {
    let mut taken: std::collections::BTreeSet<&str> = items.collect();
    for f in files {
        if !crate::render::template::is_item_name(&f.name) {
            return Err(format!("rendered file {:?} is not a valid file name", f.name));
        }
        if !taken.insert(f.name.as_str()) {
            return Err(format!("rendered file {} has the name of an item or of another rendered file", f.name));
        }
    }
    Ok(())
}

impl RenderSpec {
    pub fn from_json(text: &str) -> Result<RenderSpec, String> {
        let spec: RenderSpec = serde_json::from_str(text).map_err(|e| format!("invalid {RENDER_SPEC_ENV}: {e}"))?;
        spec.check(RENDER_SPEC_ENV)?;
        Ok(spec)
    }

    fn check(&self, env: &str) -> Result<(), String> {
        if self.version != SPEC_VERSION {
            return Err(format!(
                "{env} has version {}, this secretmode understands {SPEC_VERSION}: run the same secretmode version as the webhook",
                self.version
            ));
        }
        if self.files.is_empty() {
            return Err(format!("{env} lists no rendered files"));
        }
        if self.source_dir == self.dest_dir {
            return Err(format!("{env}: sourceDir and destDir are both {}", self.dest_dir));
        }
        check_rendered_names(std::iter::empty(), &self.files).map_err(|e| format!("{env}: {e}"))
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
        if spec.on_change.is_none() && spec.render.is_none() {
            return Err(format!(
                "{WATCH_SPEC_ENV} has neither onChange nor render: the watcher would have nothing to do"
            ));
        }
        if let Some(r) = &spec.render {
            r.check(&format!("{WATCH_SPEC_ENV} render"))?;
            if r.source_dir != spec.dir {
                return Err(format!(
                    "{WATCH_SPEC_ENV}: render.sourceDir {} is not the watched dir {}",
                    r.source_dir, spec.dir
                ));
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_watch_spec_needs_on_change_or_render_and_renders_the_dir_it_watches() {
        let files = json!([{"name": "dsn", "source": {"template": "{{ a }}"}}]);
        let render =
            |source: &str| json!({"version": 1, "sourceDir": source, "destDir": "/s-rendered", "files": files});
        let neither = json!({"version": 1, "dir": "/s", "healthPort": 1}).to_string();
        assert!(WatchSpec::from_json(&neither).unwrap_err().contains("neither onChange nor render"));
        let ok = json!({"version": 1, "dir": "/s", "healthPort": 1, "render": render("/s")}).to_string();
        assert_eq!(WatchSpec::from_json(&ok).unwrap().render.unwrap().files[0].name, "dsn");
        let other = json!({"version": 1, "dir": "/s", "healthPort": 1, "render": render("/t")}).to_string();
        assert!(WatchSpec::from_json(&other).unwrap_err().contains("is not the watched dir"));
        let on_change: OnChange = "signal:HUP".parse().unwrap();
        let only = WatchSpec { version: 1, dir: "/s".into(), on_change: Some(on_change), render: None, health_port: 1 };
        let text = serde_json::to_string(&only).unwrap();
        assert!(!text.contains("render"), "{text}");
        assert_eq!(WatchSpec::from_json(&text).unwrap(), only);
    }

    #[test]
    fn a_render_spec_is_refused_with_no_files_the_same_dirs_or_a_taken_name() {
        let spec = |files: serde_json::Value, dest: &str| {
            json!({"version": 1, "sourceDir": "/s", "destDir": dest, "files": files}).to_string()
        };
        let f = |n: &str| json!({"name": n, "source": {"template": "x"}});
        assert!(RenderSpec::from_json(&spec(json!([f("a")]), "/d")).is_ok());
        assert!(RenderSpec::from_json(&spec(json!([]), "/d")).unwrap_err().contains("lists no rendered files"));
        assert!(RenderSpec::from_json(&spec(json!([f("a")]), "/s")).unwrap_err().contains("are both /s"));
        assert!(RenderSpec::from_json(&spec(json!([f("a"), f("a")]), "/d"))
            .unwrap_err()
            .contains("another rendered file"));
        assert!(RenderSpec::from_json(&spec(json!([f("..data")]), "/d"))
            .unwrap_err()
            .contains("not a valid file name"));
        let v2 = json!({"version": 2, "sourceDir": "/s", "destDir": "/d", "files": [f("a")]}).to_string();
        assert!(RenderSpec::from_json(&v2).unwrap_err().contains("version 2"));
    }
}
