//! The webhook's configuration file (`--config`, YAML) and its built-in default.
//!
//! Everything that decides an address, an image, a token audience or a security setting lives
//! here and only here: annotations can name a provider defined in this file, never define one.
//! Unknown fields are rejected so that a typo fails start-up with the field named instead of
//! silently falling back to a default.
//!
//! Each provider's section is defined by its own file in `crate::providers`; the policy rules
//! are in [`policy`] (and judged by `decide::policy`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::providers::ProviderConfig;
use crate::vocabulary::duration::HumanDuration;
use crate::vocabulary::names::{is_dns_label, is_dns_subdomain};
use crate::vocabulary::paths::validate_mount_path;
use crate::vocabulary::quantity;
use policy::PolicyConfig;

pub mod policy;

/// The built-in default, also shipped as `examples/config.yaml`'s starting point.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default-config.yaml");

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid config {origin}: field `{field}`: {message}")]
    Field { origin: String, field: String, message: String },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Annotation prefix without the slash: `secrets` gives `secrets/mode`.
    pub annotation_prefix: String,
    /// Where files land when a pod does not set `<prefix>/mount-path`.
    pub default_mount_path: String,
    /// Upper bound on `<prefix>/item.*` annotations per pod.
    #[serde(default = "default_max_items")]
    pub max_items: usize,
    pub agent: AgentConfig,
    pub refresh: RefreshConfig,
    /// Provider used by `init`/`sidecar` pods that do not name one.
    pub default_provider: String,
    pub providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    pub warnings: WarningsConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// What the cluster around the pods does (kubelet sync, CSI rotation): the timing model's
    /// inputs for `eso` and `csi`, which the webhook does not control.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Per provider name: its rate limit and cost, and which ESO stores and CSI classes read
    /// from it. Only `audit` reads this (`--assume-down`, the load report).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provider_load: BTreeMap<String, ProviderLoad>,
}

/// The cluster facts of `crate::timing`, as the config states them.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// The kubelet's `syncFrequency`: how often it re-syncs a pod (and rewrites its Secret volumes).
    #[serde(default = "default_kubelet_sync")]
    pub kubelet_sync_frequency: HumanDuration,
    /// The Secrets Store CSI driver's `--enable-secret-rotation` and `--rotation-poll-interval`.
    #[serde(default)]
    pub csi_rotation: CsiRotation,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { kubelet_sync_frequency: default_kubelet_sync(), csi_rotation: CsiRotation::default() }
    }
}

impl ClusterConfig {
    pub fn facts(&self) -> crate::timing::ClusterFacts {
        crate::timing::ClusterFacts { kubelet_sync_frequency: self.kubelet_sync_frequency.0 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CsiRotation {
    /// Off by default, as in the driver. A SecretProviderClass annotated
    /// `<prefix>/rotation-poll-interval` (`2m`, or `off`) overrides this for its pods.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_csi_poll")]
    pub poll_interval: HumanDuration,
}

impl Default for CsiRotation {
    fn default() -> Self {
        CsiRotation { enabled: false, poll_interval: default_csi_poll() }
    }
}

fn default_kubelet_sync() -> HumanDuration {
    HumanDuration(crate::timing::ClusterFacts::default().kubelet_sync_frequency)
}
fn default_csi_poll() -> HumanDuration {
    HumanDuration(crate::timing::CSI_DEFAULT_ROTATION_POLL)
}

/// What `audit` knows about one provider besides how to reach it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderLoad {
    /// Requests per second the provider accepts from this cluster (its rate limit or quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    /// Price of 10,000 requests (AWS Secrets Manager bills per 10,000 API calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_10k_requests: Option<f64>,
    /// Currency of the cost, for the report (default `USD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// ESO stores that read from this provider: `SecretStore/<name>` (any namespace) or
    /// `ClusterSecretStore/<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_stores: Vec<String>,
    /// SecretProviderClass `spec.provider` values that read from this provider (`vault`, `aws`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub csi_providers: Vec<String>,
}

fn default_max_items() -> usize {
    64
}

/// The injected agent container (`secretmode-init` / `secretmode-sidecar`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Image reference; pin by digest in production (`repo@sha256:...`).
    pub image: String,
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    /// Absolute path of the secretmode binary inside the image.
    #[serde(default = "default_binary")]
    pub binary: String,
    /// Absolute path of the `secretmode-exec` wrapper inside the same image: the
    /// `secretmode-exec` init container runs it to install a copy for the app containers
    /// (`<prefix>/env-values` outside mode eso).
    #[serde(default = "default_exec_binary")]
    pub exec_binary: String,
    /// `sizeLimit` of the disk-backed emptyDir the wrapper is installed into.
    #[serde(default = "default_exec_volume_size_limit")]
    pub exec_volume_size_limit: String,
    #[serde(default)]
    pub resources: Resources,
    /// Requests and limits of the `secretmode-watcher` container (`<prefix>/on-change` in
    /// modes eso and csi); unset: the agent's `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watcher_resources: Option<Resources>,
    #[serde(default = "default_uid")]
    pub run_as_user: i64,
    #[serde(default = "default_uid")]
    pub run_as_group: i64,
    /// Port of the sidecar's health, startup and metrics endpoints.
    #[serde(default = "default_health_port")]
    pub health_port: u16,
    /// `true`: an init container with `restartPolicy: Always` (Kubernetes 1.29+).
    /// `false`: a plain container placed first, for older clusters.
    #[serde(default = "default_true")]
    pub native_sidecar: bool,
    /// `sizeLimit` of the in-memory volume holding the files.
    #[serde(default = "default_size_limit")]
    pub memory_volume_size_limit: String,
    /// How long `agent --once` (and a sidecar's first sync) may try before giving up or
    /// seeding from the fallback Secret.
    #[serde(default = "default_start_deadline")]
    pub start_deadline: HumanDuration,
    /// Lifetime requested for the projected service-account token.
    #[serde(default = "default_token_expiration")]
    pub token_expiration_seconds: i64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshConfig {
    /// Sidecar refresh interval when the pod does not set one.
    pub default: HumanDuration,
    pub min: HumanDuration,
    pub max: HumanDuration,
    /// Freshness budget when the pod does not set `<prefix>/max-staleness`.
    pub default_max_staleness: HumanDuration,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarningsConfig {
    /// Add one warning per admitted pod stating the failure mode it chose.
    #[serde(default = "default_true")]
    pub failure_mode: bool,
}

impl Default for WarningsConfig {
    fn default() -> Self {
        WarningsConfig { failure_mode: true }
    }
}

fn default_pull_policy() -> String {
    "IfNotPresent".into()
}
fn default_binary() -> String {
    "/secretmode".into()
}
fn default_exec_binary() -> String {
    "/secretmode-exec".into()
}
fn default_exec_volume_size_limit() -> String {
    "8Mi".into()
}
fn default_uid() -> i64 {
    65532
}
fn default_health_port() -> u16 {
    8099
}
fn default_true() -> bool {
    true
}
fn default_size_limit() -> String {
    "1Mi".into()
}
fn default_start_deadline() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_token_expiration() -> i64 {
    3600
}

impl Config {
    /// The embedded default that `serve` and `mutate` use without `--config`.
    pub fn builtin() -> Result<Config, ConfigError> {
        Config::from_yaml(DEFAULT_CONFIG_YAML, "(built-in)")
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    pub fn load_or_builtin(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::load(p),
            None => Config::builtin(),
        }
    }

    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_yaml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.to_string(), message: e.to_string() })?;
        config.validate().map_err(|(field, message)| ConfigError::Field {
            origin: origin.to_string(),
            field,
            message,
        })?;
        Ok(config)
    }

    /// Semantic checks serde cannot express. Returns the offending field path.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        if !is_dns_label(&self.annotation_prefix) && !is_dns_subdomain(&self.annotation_prefix) {
            return err(
                "annotationPrefix",
                format!(
                    "{:?} must be a DNS subdomain such as `secrets` or `secrets.example.com`",
                    self.annotation_prefix
                ),
            );
        }
        if let Err(m) = validate_mount_path(&self.default_mount_path) {
            return err("defaultMountPath", m);
        }
        if self.max_items == 0 || self.max_items > 1000 {
            return err("maxItems", "must be between 1 and 1000".into());
        }
        let a = &self.agent;
        if a.image.trim().is_empty() || a.image.chars().any(char::is_whitespace) {
            return err("agent.image", "must be a non-empty image reference".into());
        }
        if !["Always", "IfNotPresent", "Never"].contains(&a.image_pull_policy.as_str()) {
            return err("agent.imagePullPolicy", "must be Always, IfNotPresent or Never".into());
        }
        if !a.binary.starts_with('/') {
            return err("agent.binary", "must be an absolute path".into());
        }
        if !a.exec_binary.starts_with('/') || a.exec_binary.chars().any(char::is_whitespace) {
            return err("agent.execBinary", "must be an absolute path without whitespace".into());
        }
        if quantity::parse(&a.exec_volume_size_limit).is_none() {
            return err("agent.execVolumeSizeLimit", format!("{:?} is not a quantity", a.exec_volume_size_limit));
        }
        if a.run_as_user <= 0 || a.run_as_group <= 0 {
            return err(
                "agent.runAsUser",
                "runAsUser and runAsGroup must be non-zero (Pod Security restricted)".into(),
            );
        }
        if a.health_port < 1024 {
            return err("agent.healthPort", "must be 1024 or above (the agent runs without privileges)".into());
        }
        if quantity::parse(&a.memory_volume_size_limit).is_none() {
            return err("agent.memoryVolumeSizeLimit", format!("{:?} is not a quantity", a.memory_volume_size_limit));
        }
        validate_resources("agent.resources", &a.resources)?;
        if let Some(watcher) = &a.watcher_resources {
            validate_resources("agent.watcherResources", watcher)?;
        }
        if a.start_deadline.0.is_zero() {
            return err("agent.startDeadline", "must be positive".into());
        }
        if !(600..=86_400).contains(&a.token_expiration_seconds) {
            return err("agent.tokenExpirationSeconds", "must be between 600 and 86400 (the Kubernetes limits)".into());
        }
        let r = &self.refresh;
        if r.min.0.is_zero() || r.min > r.max {
            return err("refresh.min", "must be positive and at most refresh.max".into());
        }
        if r.default < r.min || r.default > r.max {
            return err(
                "refresh.default",
                format!("must be between refresh.min ({}) and refresh.max ({})", r.min, r.max),
            );
        }
        if r.default_max_staleness < r.default {
            return err("refresh.defaultMaxStaleness", "must be at least refresh.default".into());
        }
        if self.providers.is_empty() {
            return err("providers", "define at least one provider".into());
        }
        if !self.providers.contains_key(&self.default_provider) {
            return err(
                "defaultProvider",
                format!("{:?} is not defined under providers ({})", self.default_provider, self.provider_names()),
            );
        }
        for (name, provider) in &self.providers {
            if !is_dns_label(name) {
                return err(
                    &format!("providers.{name}"),
                    "provider names must be DNS labels (lower case, digits, -)".into(),
                );
            }
            if let Some(address) = provider.address() {
                if !(address.starts_with("https://") || address.starts_with("http://")) {
                    return err(&format!("providers.{name}.address"), format!("{address:?} must be an http(s) URL"));
                }
            }
            if let Some(aud) = provider.token_audience() {
                if aud.is_empty() {
                    return err(&format!("providers.{name}.auth.audience"), "must not be empty".into());
                }
            }
        }
        if self.cluster.kubelet_sync_frequency.0.is_zero() {
            return err("cluster.kubeletSyncFrequency", "must be positive (the kubelet's default is 1m)".into());
        }
        if self.cluster.csi_rotation.poll_interval.0.is_zero() {
            return err("cluster.csiRotation.pollInterval", "must be positive (the driver's default is 2m)".into());
        }
        for (name, load) in &self.provider_load {
            let at = |f: &str| format!("providerLoad.{name}{f}");
            if !self.providers.contains_key(name) {
                return err(&at(""), format!("{name:?} is not defined under providers ({})", self.provider_names()));
            }
            for (f, v) in [(".rateLimit", load.rate_limit), (".costPer10kRequests", load.cost_per_10k_requests)] {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    return err(&at(f), "must be a number of at least 0".into());
                }
            }
            if let Some(bad) = load.secret_stores.iter().find(|s| {
                let (kind, store) = s.split_once('/').unwrap_or(("", ""));
                !matches!(kind, "SecretStore" | "ClusterSecretStore") || !is_dns_subdomain(store)
            }) {
                return err(
                    &at(".secretStores"),
                    format!("{bad:?} is not SecretStore/<name> or ClusterSecretStore/<name>"),
                );
            }
            for (other, o) in &self.provider_load {
                if other == name {
                    continue;
                }
                if let Some(s) = load.secret_stores.iter().find(|s| o.secret_stores.contains(s)) {
                    return err(&at(".secretStores"), format!("{s} is also listed under providerLoad.{other}"));
                }
                if let Some(p) = load.csi_providers.iter().find(|p| o.csi_providers.contains(p)) {
                    return err(&at(".csiProviders"), format!("{p} is also listed under providerLoad.{other}"));
                }
            }
        }
        self.policy.validate(self).map_err(|(f, m)| (format!("policy.{f}"), m))
    }

    pub fn provider_names(&self) -> String {
        self.providers.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Known resource names with valid quantities, requests not above limits.
fn validate_resources(at: &str, r: &Resources) -> Result<(), (String, String)> {
    for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (name, value) in map {
            if !["cpu", "memory", "ephemeral-storage"].contains(&name.as_str()) {
                return Err((
                    format!("{at}.{kind}.{name}"),
                    "only cpu, memory and ephemeral-storage are supported".into(),
                ));
            }
            if quantity::parse(value).is_none() {
                return Err((format!("{at}.{kind}.{name}"), format!("{value:?} is not a quantity")));
            }
        }
    }
    for (name, request) in &r.requests {
        if let Some(limit) = r.limits.get(name) {
            if quantity::parse(request) > quantity::parse(limit) {
                return Err((format!("{at}.requests.{name}"), format!("request {request} exceeds limit {limit}")));
            }
        }
    }
    Ok(())
}

impl AgentConfig {
    /// The watcher's requests and limits: its own, else the agent's.
    pub fn watcher_resources(&self) -> &Resources {
        self.watcher_resources.as_ref().unwrap_or(&self.resources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_config_is_valid() {
        let c = Config::builtin().unwrap();
        assert_eq!(c.annotation_prefix, "secrets");
        assert!(c.providers.contains_key("vault"));
        assert!(c.providers.contains_key("aws"));
    }

    #[test]
    fn unknown_field_is_named() {
        let text = DEFAULT_CONFIG_YAML.replace("annotationPrefix:", "annotationPrefx:");
        let e = Config::from_yaml(&text, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("annotationPrefx"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let text = DEFAULT_CONFIG_YAML.replace("runAsUser: 65532", "runAsUser: 0");
        let e = Config::from_yaml(&text, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("agent.runAsUser"), "{e}");
        let cases = [
            ("execBinary: /secretmode-exec", "execBinary: secretmode-exec", "agent.execBinary"),
            ("execVolumeSizeLimit: 8Mi", "execVolumeSizeLimit: lots", "agent.execVolumeSizeLimit"),
            (
                "binary: /secretmode\n",
                "binary: /secretmode\n  watcherResources: {requests: {memory: 9Mi}, limits: {memory: 8Mi}}\n",
                "agent.watcherResources.requests.memory",
            ),
            (
                "binary: /secretmode\n",
                "binary: /secretmode\n  watcherResources: {limits: {gpu: 1}}\n",
                "agent.watcherResources.limits.gpu",
            ),
        ];
        for (from, to, field) in cases {
            let e = Config::from_yaml(&DEFAULT_CONFIG_YAML.replace(from, to), "t.yaml").unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        let text = DEFAULT_CONFIG_YAML
            .replace("binary: /secretmode\n", "binary: /secretmode\n  watcherResources: {limits: {memory: 8Mi}}\n");
        let c = Config::from_yaml(&text, "t.yaml").unwrap();
        assert_eq!(c.agent.watcher_resources().limits.get("memory").map(String::as_str), Some("8Mi"));
        assert_eq!(Config::builtin().unwrap().agent.watcher_resources(), &Config::builtin().unwrap().agent.resources);
        let text = DEFAULT_CONFIG_YAML.replace("defaultProvider: vault", "defaultProvider: nope");
        let e = Config::from_yaml(&text, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("defaultProvider"), "{e}");
    }
}
