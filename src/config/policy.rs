//! The policy section of the webhook config: per-namespace rules on who may choose which mode,
//! provider and provider paths, and how strictly each is enforced. Rules are matched by
//! namespace name or glob, first match wins. Judging a pod against its rule is
//! `decide::policy`'s job.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Config;
use crate::vocabulary::duration::HumanDuration;
use crate::vocabulary::mode::Mode;
use crate::vocabulary::names::glob_match;

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    /// Deny with a message naming the rule, the annotation and what is allowed.
    #[default]
    Enforce,
    /// Allow, with AdmissionResponse warnings that kubectl prints.
    Warn,
    /// Allow, record in the injected annotation, metrics and logs.
    Audit,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Enforce => "enforce",
            Enforcement::Warn => "warn",
            Enforcement::Audit => "audit",
        }
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Namespace names or globs (`*`, `?`), e.g. `team-*`.
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_modes: Option<Vec<Mode>>,
    /// Applied when a pod declares items but no mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_providers: Option<Vec<String>>,
    /// Provider path prefixes (tenant boundary); `{namespace}` is replaced by the pod's
    /// namespace. A prefix matches whole path segments: `prod/payments` allows
    /// `prod/payments/db` but not `prod/payments-evil/db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_path_prefixes: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "duration_field::min_refresh_interval"
    )]
    pub min_refresh_interval: Option<HumanDuration>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "duration_field::max_refresh_interval"
    )]
    pub max_refresh_interval: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "duration_field::max_staleness")]
    pub max_staleness: Option<HumanDuration>,
    /// `init`/`sidecar` pods must name a `fallback-secret`.
    #[serde(default)]
    pub require_fallback: bool,
    /// `false`: pods may not ask for values in env (`<prefix>/env-values`), which every
    /// process of the container can read in `/proc/<pid>/environ` and which never rotate.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub allow_env_values: bool,
    /// `true`: pods may ask for `<prefix>/on-change: signal:...`, which shares the pod's
    /// process namespace (containers see each other's processes). Off unless a rule allows it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_signals: bool,
    /// Budget of provider requests per second for the namespace, per provider: `audit`
    /// reports a namespace whose workloads together take more (SM016, at this rule's
    /// enforcement); the webhook warns when one sidecar pod alone takes more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_provider_requests_per_second: Option<f64>,
    #[serde(default)]
    pub enforcement: Enforcement,
}

impl PolicyConfig {
    /// The first rule whose namespace patterns match.
    pub fn rule_for(&self, namespace: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.namespaces.iter().any(|p| glob_match(p, namespace)))
    }

    /// The mode for a pod that declares items but no mode.
    pub fn default_mode(&self, namespace: &str) -> Option<Mode> {
        self.rule_for(namespace).and_then(|r| r.default_mode)
    }

    /// Checks the policy against the rest of the config; returns the offending field.
    pub fn validate(&self, config: &Config) -> Result<(), (String, String)> {
        let mut names = std::collections::BTreeSet::new();
        let mut catch_all: Option<usize> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            if rule.name.trim().is_empty() {
                return Err((at("name"), "every rule needs a name (it appears in denials)".into()));
            }
            if !names.insert(rule.name.as_str()) {
                return Err((at("name"), format!("{:?} is used by an earlier rule; names must be unique", rule.name)));
            }
            if let Some(first) = catch_all {
                return Err((
                    at("namespaces"),
                    format!("unreachable: rules[{first}] matches every namespace (first match wins; put it last)"),
                ));
            }
            if rule.namespaces.is_empty() {
                return Err((at("namespaces"), "list at least one namespace name or glob".into()));
            }
            if let Some(bad) = rule.namespaces.iter().find(|n| !is_namespace_pattern(n)) {
                return Err((
                    at("namespaces"),
                    format!("{bad:?} is not a namespace name or glob (lower case, digits, '-', '*', '?')"),
                ));
            }
            if rule.namespaces.iter().any(|n| n.chars().all(|c| c == '*')) {
                catch_all = Some(i);
            }
            if rule.allowed_modes.as_ref().is_some_and(Vec::is_empty) {
                return Err((at("allowedModes"), "an empty list allows nothing; omit it to allow every mode".into()));
            }
            if let Some(providers) = &rule.allowed_providers {
                if providers.is_empty() {
                    return Err((at("allowedProviders"), "an empty list allows nothing; omit it to allow all".into()));
                }
                if let Some(unknown) = providers.iter().find(|p| !config.providers.contains_key(*p)) {
                    return Err((at("allowedProviders"), format!("{unknown:?} is not defined under providers")));
                }
            }
            if let (Some(modes), Some(default)) = (&rule.allowed_modes, rule.default_mode) {
                if !modes.contains(&default) {
                    return Err((at("defaultMode"), format!("{default} is not in allowedModes")));
                }
            }
            if let Some(prefixes) = &rule.allowed_path_prefixes {
                if prefixes.is_empty() {
                    return Err((
                        at("allowedPathPrefixes"),
                        "an empty list allows no path; omit it to allow all".into(),
                    ));
                }
                for prefix in prefixes {
                    let probe = prefix.replace("{namespace}", "ns");
                    let probe = probe.strip_suffix('/').unwrap_or(&probe);
                    if probe.is_empty()
                        || probe.starts_with('/')
                        || probe.contains(['%', '\\', '{', '}', '#'])
                        || probe.chars().any(|c| c.is_whitespace())
                        || probe.split('/').any(|s| s.is_empty() || s == ".." || s == ".")
                    {
                        return Err((
                            at("allowedPathPrefixes"),
                            format!(
                                "{prefix:?} must be a relative path without '.', '..', '//', '%' or braces other than {{namespace}}"
                            ),
                        ));
                    }
                }
            }
            for (field, value) in [
                ("minRefreshInterval", rule.min_refresh_interval),
                ("maxRefreshInterval", rule.max_refresh_interval),
                ("maxStaleness", rule.max_staleness),
            ] {
                if value.is_some_and(|d| d.0.is_zero()) {
                    return Err((at(field), "must be a positive duration".into()));
                }
            }
            if let Some(budget) = rule.max_provider_requests_per_second {
                if !(budget.is_finite() && budget > 0.0) {
                    return Err((
                        at("maxProviderRequestsPerSecond"),
                        format!("{budget} must be a positive number of requests per second (e.g. 0.5)"),
                    ));
                }
            }
            if let (Some(min), Some(max)) = (rule.min_refresh_interval, rule.max_refresh_interval) {
                if min > max {
                    return Err((at("minRefreshInterval"), "must not exceed maxRefreshInterval".into()));
                }
            }
        }
        Ok(())
    }
}

/// serde_yaml drops the field name from errors raised inside a value's own deserializer, so
/// these put it back: a typo in a duration must name the field it is in.
mod duration_field {
    use serde::{Deserialize, Deserializer};

    use crate::vocabulary::duration::{self, HumanDuration};

    fn field<'de, D: Deserializer<'de>>(d: D, name: &str) -> Result<Option<HumanDuration>, D::Error> {
        let text = String::deserialize(d)?;
        duration::parse(&text)
            .map(|v| Some(HumanDuration(v)))
            .map_err(|e| serde::de::Error::custom(format!("{name}: {e}")))
    }

    pub fn min_refresh_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
        field(d, "minRefreshInterval")
    }
    pub fn max_refresh_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
        field(d, "maxRefreshInterval")
    }
    pub fn max_staleness<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
        field(d, "maxStaleness")
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Namespace names are DNS labels; patterns add `*` and `?`.
pub(crate) fn is_namespace_pattern(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 63
        && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-*?".contains(&b))
}
