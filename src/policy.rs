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

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Enforcement::Enforce => "enforce",
            Enforcement::Warn => "warn",
            Enforcement::Audit => "audit",
        })
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_refresh_interval: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_refresh_interval: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_staleness: Option<HumanDuration>,
    /// `init`/`sidecar` pods must name a `fallback-secret`.
    #[serde(default)]
    pub require_fallback: bool,
    #[serde(default)]
    pub enforcement: Enforcement,
}

/// One broken rule, phrased for the person who wrote the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The annotation to change (with prefix).
    pub annotation: String,
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

    /// The denial text for `enforce`: rule, annotations and what is allowed.
    pub fn denial(&self) -> String {
        let rule = self.rule.as_deref().unwrap_or("-");
        let parts: Vec<String> = self.violations.iter().map(|v| format!("{}: {}", v.annotation, v.message)).collect();
        format!("policy rule {rule:?} denies this pod: {}", parts.join("; "))
    }
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

    pub fn evaluate(&self, namespace: &str, plan: &Plan, config: &Config) -> Verdict {
        let Some(rule) = self.rule_for(namespace) else {
            return Verdict { rule: None, enforcement: Enforcement::Audit, violations: Vec::new() };
        };
        let p = &config.annotation_prefix;
        let mut violations = Vec::new();
        let mut add =
            |key: &str, message: String| violations.push(Violation { annotation: format!("{p}/{key}"), message });

        if let Some(modes) = &rule.allowed_modes {
            if !modes.contains(&plan.mode) {
                add(
                    "mode",
                    format!(
                        "mode {} is not allowed here; allowed: {}",
                        plan.mode,
                        list(modes.iter().map(|m| m.as_str()))
                    ),
                );
            }
        }
        if let (Some(allowed), Some(provider)) = (&rule.allowed_providers, &plan.provider) {
            if !allowed.contains(provider) {
                add(
                    "provider",
                    format!(
                        "provider {provider} is not allowed here; allowed: {}",
                        list(allowed.iter().map(String::as_str))
                    ),
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
                            format!(
                                "path {path} is outside this namespace's paths; allowed: {}",
                                list(prefixes.iter().map(String::as_str))
                            ),
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
                        format!("{} is below this namespace's minimum {min}", HumanDuration(plan.refresh_interval)),
                    );
                }
            }
            if let Some(max) = rule.max_refresh_interval {
                if plan.refresh_interval > max.0 {
                    add(
                        "refresh-interval",
                        format!("{} is above this namespace's maximum {max}", HumanDuration(plan.refresh_interval)),
                    );
                }
            }
        }
        if plan.mode.uses_agent() {
            if let Some(max) = rule.max_staleness {
                if plan.max_staleness > max.0 {
                    add(
                        "max-staleness",
                        format!("{} is above this namespace's maximum {max}", HumanDuration(plan.max_staleness)),
                    );
                }
            }
            if rule.require_fallback && plan.fallback_secret.is_none() {
                add("fallback-secret", format!("mode {} must name a fallback Secret in this namespace", plan.mode));
            }
        }
        Verdict { rule: Some(rule.name.clone()), enforcement: rule.enforcement, violations }
    }

    /// Checks the policy against the rest of the config; returns the offending field.
    pub fn validate(&self, config: &Config) -> Result<(), (String, String)> {
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |f: &str| format!("rules[{i}].{f}");
            if rule.name.trim().is_empty() {
                return Err((at("name"), "every rule needs a name (it appears in denials)".into()));
            }
            if rule.namespaces.is_empty() || rule.namespaces.iter().any(|n| n.is_empty()) {
                return Err((at("namespaces"), "list at least one namespace name or glob".into()));
            }
            if let Some(providers) = &rule.allowed_providers {
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
                for prefix in prefixes {
                    let probe = prefix.replace("{namespace}", "ns");
                    if probe.is_empty()
                        || probe.starts_with('/')
                        || probe.contains("//")
                        || probe.split('/').any(|s| s == ".." || s == ".")
                    {
                        return Err((
                            at("allowedPathPrefixes"),
                            format!("{prefix:?} must be a relative path without '.', '..' or '//'"),
                        ));
                    }
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
