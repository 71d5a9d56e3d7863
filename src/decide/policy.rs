//! Per-namespace policy: who may choose which mode, provider and provider paths.
//!
//! Rules are matched by namespace name or glob, first match wins. Policy is decided from the
//! pod's own annotations (as resolved into a [`Plan`]) and its namespace, never from who sent
//! the request and never from the `<prefix>/injected` annotation.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::annotations::{ItemSource, Plan};
use crate::config::Config;
use crate::duration::HumanDuration;
use crate::json_ref::JsonRef;
use crate::modes::Mode;

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
    #[serde(default)]
    pub enforcement: Enforcement,
}

/// The Secrets Store CSI driver; a volume of this driver fetches from the provider at mount
/// time, which is mode `csi` whether or not the webhook wrote it.
pub const CSI_DRIVER: &str = "secrets-store.csi.k8s.io";
/// The one volume attribute the webhook writes; every other key overrides the
/// SecretProviderClass's parameters (objects, role, vault address) from the pod.
pub const CSI_CLASS_ATTRIBUTE: &str = "secretProviderClass";

/// One broken rule, phrased for the person who wrote the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// What to change: an annotation (with prefix), or a spec field for hand-built delivery
    /// (`spec.volumes[name].csi.volumeAttributes`).
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// The outcome of checking one pod against its namespace's rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Name of the matching rule (`None`: no rule matched, everything allowed).
    pub rule: Option<String>,
    pub enforcement: Enforcement,
    pub violations: Vec<Violation>,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether the webhook denies the pod for this verdict.
    pub fn denies(&self) -> bool {
        !self.is_clean() && self.enforcement == Enforcement::Enforce
    }

    /// The denial text for `enforce`: rule, annotations and what is allowed.
    pub fn denial(&self) -> String {
        let rule = self.rule.as_deref().unwrap_or("-");
        let parts: Vec<String> = self.violations.iter().map(|v| format!("{}: {}", v.field, v.message)).collect();
        format!("policy rule {rule:?} denies this pod: {}", parts.join("; "))
    }

    /// One kubectl warning per violation, in the rule's order; the admission answer fits
    /// them to what the API server keeps ([`crate::admit::api_server_warnings`]).
    pub fn warnings(&self) -> Vec<String> {
        let rule = self.rule.as_deref().unwrap_or("-");
        self.violations.iter().map(|v| format!("secretmode policy {rule}: {}: {}", v.field, v.message)).collect()
    }

    /// What `audit` enforcement records in the `<prefix>/injected` annotation.
    pub fn audit_note(&self) -> String {
        let rule = self.rule.as_deref().unwrap_or("-");
        let fields: Vec<&str> = self.violations.iter().map(|v| v.field.as_str()).collect();
        format!("policy={}:{rule}:{}", self.enforcement, fields.join("+"))
    }
}

/// A Secrets Store CSI volume found in a pod spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CsiVolume {
    pub name: String,
    /// `volumeAttributes.secretProviderClass`.
    pub class: Option<String>,
    /// Every other `volumeAttributes` key, sorted.
    pub extra_attributes: Vec<String>,
    /// `csi.readOnly` as written (the driver refuses anything but `true` at mount time).
    pub read_only: Option<bool>,
}

/// The Secrets Store CSI volumes of a pod spec (`spec`, not the pod).
pub fn csi_volumes(spec: &JsonRef<'_>) -> Vec<CsiVolume> {
    JsonRef::entries(spec.get("volumes"))
        .iter()
        .filter_map(|v| {
            let csi = v.get("csi")?;
            if csi.get("driver").and_then(JsonRef::as_str) != Some(CSI_DRIVER) {
                return None;
            }
            let attrs = csi.get("volumeAttributes").and_then(JsonRef::as_object);
            let mut extra: Vec<String> = attrs
                .map(|a| a.keys().filter(|k| *k != CSI_CLASS_ATTRIBUTE).map(str::to_string).collect())
                .unwrap_or_default();
            extra.sort();
            Some(CsiVolume {
                name: v.get("name").and_then(JsonRef::as_str).unwrap_or_default().to_string(),
                class: attrs.and_then(|a| a.get(CSI_CLASS_ATTRIBUTE)).and_then(JsonRef::as_str).map(str::to_string),
                extra_attributes: extra,
                read_only: csi.get("readOnly").and_then(JsonRef::as_bool),
            })
        })
        .collect()
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

    /// Judges a pod: its resolved annotations (`plan`, `None` when it has none) and what its
    /// own spec delivers without the webhook. `spec` is the pod's `spec` object. This is the
    /// one judgement the webhook and `secretmode audit` share.
    pub fn evaluate_pod(&self, namespace: &str, spec: &JsonRef<'_>, plan: Option<&Plan>, config: &Config) -> Verdict {
        let mut verdict = match plan {
            Some(plan) => self.evaluate(namespace, plan, config),
            None => self.evaluate_nothing(namespace),
        };
        let Some(rule) = self.rule_for(namespace) else {
            return verdict;
        };
        for volume in csi_volumes(spec) {
            let at = format!("spec.volumes[{}]", volume.name);
            if !volume.extra_attributes.is_empty() {
                verdict.violations.push(Violation {
                    field: format!("{at}.csi.volumeAttributes"),
                    message: format!(
                        "{} would override the SecretProviderClass; only {CSI_CLASS_ATTRIBUTE} is allowed",
                        volume.extra_attributes.join(", ")
                    ),
                });
            }
            // The webhook's own volume was judged through the plan; any other is mode csi
            // chosen by hand, and may not dodge allowedModes.
            let injected = volume.name == crate::inject::SECRETS_VOLUME && plan.is_some_and(|p| p.mode == Mode::Csi);
            if let (false, Some(modes)) = (injected, &rule.allowed_modes) {
                if !modes.contains(&Mode::Csi) {
                    verdict.violations.push(Violation {
                        field: at,
                        message: format!(
                            "a secrets-store CSI volume is mode csi, not allowed here; allowed: {}",
                            list(modes.iter().map(|m| m.as_str()))
                        ),
                    });
                }
            }
        }
        verdict
    }

    fn evaluate_nothing(&self, namespace: &str) -> Verdict {
        match self.rule_for(namespace) {
            Some(rule) => {
                Verdict { rule: Some(rule.name.clone()), enforcement: rule.enforcement, violations: Vec::new() }
            }
            None => Verdict { rule: None, enforcement: Enforcement::Audit, violations: Vec::new() },
        }
    }

    /// Judges resolved annotations alone; see [`PolicyConfig::evaluate_pod`] for whole pods.
    pub fn evaluate(&self, namespace: &str, plan: &Plan, config: &Config) -> Verdict {
        let Some(rule) = self.rule_for(namespace) else {
            return Verdict { rule: None, enforcement: Enforcement::Audit, violations: Vec::new() };
        };
        let p = &config.annotation_prefix;
        let mut violations = Vec::new();
        let mut add = |key: &str, message: String| violations.push(Violation { field: format!("{p}/{key}"), message });

        if let Some(modes) = &rule.allowed_modes {
            if !modes.contains(&plan.mode) {
                add(
                    "mode",
                    format!("{} is not allowed here; allowed: {}", plan.mode, list(modes.iter().map(|m| m.as_str()))),
                );
            }
        }
        if let (Some(allowed), Some(provider)) = (&rule.allowed_providers, &plan.provider) {
            if !allowed.contains(provider) {
                add(
                    "provider",
                    format!("{provider} is not allowed here; allowed: {}", list(allowed.iter().map(String::as_str))),
                );
            }
        }
        if let Some(prefixes) = &rule.allowed_path_prefixes {
            let prefixes: Vec<String> = prefixes.iter().map(|x| x.replace("{namespace}", namespace)).collect();
            for item in &plan.items {
                if let ItemSource::Provider { path, .. } = &item.source {
                    if !prefixes.iter().any(|prefix| path_within(path, prefix)) {
                        add(
                            &format!("item.{}", item.name),
                            format!("path {path} is not under {}", prefixes.join(" or ")),
                        );
                    }
                }
            }
        }
        if plan.mode == Mode::Sidecar {
            if let Some(min) = rule.min_refresh_interval {
                if plan.refresh_interval < min.0 {
                    add(
                        "refresh-interval",
                        format!("{} is below the minimum {min}", HumanDuration(plan.refresh_interval)),
                    );
                }
            }
            if let Some(max) = rule.max_refresh_interval {
                if plan.refresh_interval > max.0 {
                    add(
                        "refresh-interval",
                        format!("{} is above the maximum {max}", HumanDuration(plan.refresh_interval)),
                    );
                }
            }
        }
        if plan.mode.uses_agent() {
            // Only a sidecar has a freshness budget (init pods cannot set one).
            if let (Some(max), Mode::Sidecar) = (rule.max_staleness, plan.mode) {
                if plan.max_staleness > max.0 {
                    add("max-staleness", format!("{} is above the maximum {max}", HumanDuration(plan.max_staleness)));
                }
            }
            if rule.require_fallback && plan.fallback_secret.is_none() {
                add("fallback-secret", format!("mode {} must name a fallback Secret here", plan.mode));
            }
        }
        Verdict { rule: Some(rule.name.clone()), enforcement: rule.enforcement, violations }
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

    use crate::duration::{self, HumanDuration};

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

/// Namespace names are DNS labels; patterns add `*` and `?`.
fn is_namespace_pattern(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 63
        && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-*?".contains(&b))
}

/// Whether `path` is `prefix` or below it, by whole segments. Both are normalised already
/// (annotation parsing rejects `..`, `//`, `%` and leading or trailing `/`).
pub fn path_within(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() || prefix == "*" {
        return true;
    }
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// `*` matches any run of characters, `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("team-*", "team-a"));
        assert!(!glob_match("team-*", "teams"));
        assert!(glob_match("pay?", "pay1"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("payments", "payments-evil"));
    }

    #[test]
    fn path_boundary_is_by_segment() {
        assert!(path_within("prod/payments/db", "prod/payments"));
        assert!(path_within("prod/payments/db", "prod/payments/"));
        assert!(path_within("prod/payments", "prod/payments"));
        assert!(!path_within("prod/payments-evil/db", "prod/payments"));
        assert!(!path_within("prod/paymentsdb", "prod/payments"));
        assert!(!path_within("prod", "prod/payments"));
    }
}
