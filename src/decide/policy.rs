//! Judging a pod against its namespace's policy rule (the rules themselves are the config's:
//! `config::policy`): who may choose which mode, provider and provider paths.
//!
//! Policy is decided from the pod's own annotations (as resolved into a [`Plan`]), its own
//! secrets-store CSI volumes and its namespace, never from who sent the request and never from
//! the `<prefix>/injected` annotation. The webhook and `secretmode audit` share this judgement.

use serde::Serialize;

use super::plan::{ItemSource, Plan};
use crate::config::policy::{Enforcement, PolicyConfig};
use crate::config::Config;
use crate::json::tree::JsonRef;
use crate::vocabulary::duration::HumanDuration;
use crate::vocabulary::mode::Mode;
use crate::vocabulary::names::{keys, CSI_CLASS_ATTRIBUTE, CSI_DRIVER, SECRETS_VOLUME};
use crate::vocabulary::on_change::OnChange;
use crate::vocabulary::paths::path_within;

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
        let parts: Vec<String> = self.violations.iter().map(|v| format!("{}: {}", v.field, v.message)).collect();
        let Some(rule) = self.rule.as_deref() else {
            return format!(
                "no policy rule matches this namespace, and without one: {}; fix: ask the platform team for a policy rule that allows it",
                parts.join("; ")
            );
        };
        format!(
            "policy rule {rule:?} denies this pod: {}; fix: change them to what the rule allows, or ask the platform team to change rule {rule:?}",
            parts.join("; ")
        )
    }

    /// One kubectl warning per violation, in the rule's order; the admission answer fits
    /// them to what the API server keeps ([`super::warnings::api_server_warnings`]).
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
            let injected = volume.name == SECRETS_VOLUME && plan.is_some_and(|p| p.mode == Mode::Csi);
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
        let p = &config.annotation_prefix;
        let Some(rule) = self.rule_for(namespace) else {
            // Signals are allowed only where a rule says so: no rule, no signal.
            let violations = match &plan.on_change {
                Some(OnChange::Signal(_)) => vec![Violation {
                    field: format!("{p}/{}", keys::ON_CHANGE),
                    message: format!("{SIGNAL_PROBLEM} needs a policy rule with allowSignals: true"),
                }],
                _ => Vec::new(),
            };
            let enforcement = if violations.is_empty() { Enforcement::Audit } else { Enforcement::Enforce };
            return Verdict { rule: None, enforcement, violations };
        };
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
        if plan.mode.refreshes() {
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
            if let (Some(max), true) = (rule.max_staleness, plan.mode.refreshes()) {
                if plan.max_staleness > max.0 {
                    add("max-staleness", format!("{} is above the maximum {max}", HumanDuration(plan.max_staleness)));
                }
            }
            if rule.require_fallback && plan.fallback_secret.is_none() {
                add("fallback-secret", format!("mode {} must name a fallback Secret here", plan.mode));
            }
        }
        if plan.env_values && !rule.allow_env_values {
            add(
                keys::ENV_VALUES,
                "values in env are not allowed here (allowEnvValues: false: env is fixed at process start and readable in /proc/<pid>/environ); read the <ITEM>_FILE files instead".into(),
            );
        }
        if let (Some(OnChange::Signal(_)), false) = (&plan.on_change, rule.allow_signals) {
            add(
                keys::ON_CHANGE,
                format!("{SIGNAL_PROBLEM} is not allowed here (allowSignals is not true); use an http://127.0.0.1:<port>/<path> action instead"),
            );
        }
        Verdict { rule: Some(rule.name.clone()), enforcement: rule.enforcement, violations }
    }
}

/// What a signal action costs, in a policy violation.
const SIGNAL_PROBLEM: &str =
    "a signal action shares the pod's process namespace (containers see each other's processes), which";

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(", ")
}
