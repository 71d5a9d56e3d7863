//! The [`Plan`]: a pod's annotations resolved against its mode and the config, validated;
//! what policy judges and the injector executes.

use std::fmt;
use std::time::Duration;

use crate::config::Config;
use crate::providers::ProviderConfig;
use crate::render::RenderedFile;
use crate::vocabulary::mode::Mode;
use crate::vocabulary::on_change::OnChange;

/// Where an item's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemSource {
    /// `eso`: a key of the ESO target Secret.
    SecretKey(String),
    /// `csi`: an object name/alias of the SecretProviderClass; also the file it produces.
    CsiObject(String),
    /// `init`/`sidecar`: a provider path and, optionally, a key inside it.
    Provider { path: String, key: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedItem {
    /// The item name from `<prefix>/item.<name>`.
    pub name: String,
    /// File name under the mount path.
    pub file: String,
    /// `<ITEM>` (upper case, `-` and `.` as `_`); `<ITEM>_FILE` is the path variable.
    pub env_stem: String,
    pub source: ItemSource,
}

/// A rendered file (`<prefix>/template.<file>` or `bundle.<file>`), its bundle's item list
/// written out; it gets `<STEM>_FILE` (and `<STEM>` with env-values) like an item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedFile {
    pub file: RenderedFile,
    pub env_stem: String,
}

/// Everything the injector needs, resolved and validated against mode and config.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub mode: Mode,
    pub items: Vec<PlannedItem>,
    /// Provider name (init/sidecar only).
    pub provider: Option<String>,
    pub eso_secret: Option<String>,
    pub csi_class: Option<String>,
    /// Explicit target containers; `None` means every regular container.
    pub containers: Option<Vec<String>>,
    pub mount_path: String,
    pub refresh_interval: Duration,
    pub max_staleness: Duration,
    /// `<prefix>/env-values: "true"`: `<ITEM>` holds the value too (`secretKeyRef` in `eso`,
    /// the exec wrapper in the other modes, and for rendered files in `eso` too).
    pub env_values: bool,
    pub fallback_secret: Option<String>,
    /// `<prefix>/on-change`: what to do after the files change (never set in `init`).
    pub on_change: Option<OnChange>,
    /// Rendered files, sorted by name (empty for most pods).
    pub rendered: Vec<PlannedFile>,
    /// `eso`/`csi` with rendered files: the directory they are rendered into,
    /// `<mount-path>-rendered` (in `init`/`sidecar` they are in the mount path, with the items).
    pub rendered_dir: Option<String>,
}

impl Plan {
    /// Whether the target containers' commands are wrapped by `secretmode-exec` (env values
    /// outside `eso`, where `secretKeyRef` does it).
    pub fn wraps_commands(&self) -> bool {
        self.env_values && (self.mode != Mode::Eso || !self.rendered.is_empty())
    }

    /// Whether `eso`/`csi` render files with the `secretmode-render` init step and the watcher
    /// (in `init`/`sidecar` the agent renders them).
    pub fn renders_beside(&self) -> bool {
        self.rendered_dir.is_some()
    }

    /// Whether the `secretmode-watcher` is injected: `eso`/`csi` with `on-change` or rendered
    /// files.
    pub fn watches(&self) -> bool {
        !self.mode.uses_agent() && (self.on_change.is_some() || self.renders_beside())
    }

    /// Whether the action is a signal (the pod's process namespace is shared for it).
    pub fn signals(&self) -> bool {
        matches!(self.on_change, Some(OnChange::Signal(_)))
    }
}

impl Plan {
    pub fn provider_config<'c>(&self, config: &'c Config) -> Option<&'c ProviderConfig> {
        self.provider.as_ref().and_then(|p| config.providers.get(p))
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mode={} items={}", self.mode, self.items.len())?;
        if let Some(p) = &self.provider {
            write!(f, " provider={p}")?;
        }
        if self.fallback_secret.is_some() {
            write!(f, " fallback=yes")?;
        }
        if !self.rendered.is_empty() {
            write!(f, " rendered={}", self.rendered.len())?;
        }
        Ok(())
    }
}
