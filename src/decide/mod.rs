//! The one place that decides what happens to a pod: annotations → policy → injection → patch.
//!
//! Pure and shared by `serve` (per AdmissionReview) and `mutate` (offline), so the offline
//! answer is the webhook's answer. Its parts: [`annotations`] parses into a [`plan::Plan`],
//! [`policy`] judges it, [`inject`] turns it into add-only [`patch`] ops (one file per mode),
//! [`warnings`] fits the kubectl warnings to what the API server keeps.

pub mod annotations;
pub mod inject;
pub mod patch;
pub mod plan;
pub mod policy;
pub mod warnings;

use serde_json::Value;

use crate::config::policy::Enforcement;
use crate::config::Config;
use crate::json::tree::JsonRef;
use crate::logging::printable::Printable;
use crate::vocabulary::mode::{Mode, VALID_MODES};
use crate::vocabulary::names::{is_reserved, NAMED_SPEC_LISTS};
use crate::vocabulary::on_change::OnChange;
use inject::InjectError;
use patch::PatchOp;
use plan::Plan;
use policy::Verdict;
use warnings::api_server_warnings;

/// Annotation the kubelet puts on mirror pods of static pods.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Allow {
        /// Empty when the pod is not ours or already injected.
        patch: Vec<PatchOp>,
        warnings: Vec<String>,
        /// Set when the pod opted in.
        mode: Option<Mode>,
        /// Short machine-readable reason for metrics and logs.
        outcome: Outcome,
        /// A warn- or audit-level policy violation that was let through.
        policy: Option<PolicyHit>,
    },
    Deny {
        message: String,
        mode: Option<Mode>,
        /// Set when policy (not a malformed annotation) denied the pod.
        policy: Option<PolicyHit>,
    },
}

/// Which rule a pod broke, at which level: what metrics count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyHit {
    pub rule: String,
    pub enforcement: Enforcement,
}

impl PolicyHit {
    fn of(verdict: &Verdict) -> Option<PolicyHit> {
        (!verdict.is_clean()).then(|| PolicyHit {
            rule: verdict.rule.clone().unwrap_or_else(|| "-".into()),
            enforcement: verdict.enforcement,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No `<prefix>/` annotations.
    Skipped,
    /// Patched.
    Injected,
    /// Already carried the injection: nothing to do.
    Unchanged,
    /// A mirror pod, which the API server will not let us change.
    Mirror,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Skipped => "skipped",
            Outcome::Injected => "injected",
            Outcome::Unchanged => "unchanged",
            Outcome::Mirror => "mirror",
        }
    }
}

impl Decision {
    pub fn policy(&self) -> Option<&PolicyHit> {
        match self {
            Decision::Allow { policy, .. } | Decision::Deny { policy, .. } => policy.as_ref(),
        }
    }

    pub fn mode(&self) -> Option<Mode> {
        match self {
            Decision::Allow { mode, .. } | Decision::Deny { mode, .. } => *mode,
        }
    }

    pub fn outcome_label(&self) -> &'static str {
        match self {
            Decision::Allow { outcome, .. } => outcome.as_str(),
            Decision::Deny { .. } => "denied",
        }
    }
}

fn skip(outcome: Outcome, warnings: Vec<String>) -> Decision {
    Decision::Allow { patch: Vec::new(), warnings, mode: None, outcome, policy: None }
}

fn skip_noting(warnings: Vec<String>, policy: Option<PolicyHit>) -> Decision {
    Decision::Allow { patch: Vec::new(), warnings, mode: None, outcome: Outcome::Skipped, policy }
}

/// Decides for a pod in `namespace` (the pod's own, or the request's for `generateName` pods).
pub fn admit_pod(pod: &Value, namespace: &str, config: &Config) -> Decision {
    decide(&JsonRef::from(pod), namespace, config)
}

/// [`admit_pod`] for a pod read as a [`JsonRef`] (the webhook's view of the request body).
pub fn decide(pod: &JsonRef<'_>, namespace: &str, config: &Config) -> Decision {
    match decide_unfitted(pod, namespace, config) {
        Decision::Allow { patch, warnings, mode, outcome, policy } => {
            Decision::Allow { patch, warnings: api_server_warnings(warnings), mode, outcome, policy }
        }
        deny => deny,
    }
}

/// The decision, with its warnings in priority order as written.
fn decide_unfitted(pod: &JsonRef<'_>, namespace: &str, config: &Config) -> Decision {
    let prefix = config.annotation_prefix.as_str();
    let pod_annotations = pod.at(&["metadata", "annotations"]).and_then(JsonRef::as_object);
    let parsed = match annotations::parse(pod_annotations, prefix) {
        Ok(parsed) => parsed,
        Err(e) => return Decision::Deny { message: e.to_string(), mode: None, policy: None },
    };
    let Some(parsed) = parsed else {
        if let Some(name) = reserved_name(pod) {
            return Decision::Deny {
                policy: None,
                message: format!(
                    "{name} uses a name reserved for secretmode but the pod has no {prefix}/ annotations; fix: rename it, or declare {prefix}/mode and {prefix}/item.<name> so policy can judge it"
                ),
                mode: None,
            };
        }
        if pod_annotations.is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)) {
            return skip(Outcome::Mirror, Vec::new());
        }
        // A pod that delivers secrets by hand (its own secrets-store CSI volume) is judged by
        // the same policy as one that asks the webhook.
        let verdict = config.policy.evaluate_pod(namespace, pod_spec(pod), None, config);
        log_verdict(namespace, &verdict);
        let policy = PolicyHit::of(&verdict);
        return match verdict.enforcement {
            _ if verdict.is_clean() => skip(Outcome::Skipped, Vec::new()),
            Enforcement::Enforce => Decision::Deny { message: verdict.denial(), mode: None, policy },
            Enforcement::Warn => skip_noting(verdict.warnings(), policy),
            // Not our pod: nothing is patched, so the record is the log line and the metric.
            Enforcement::Audit => skip_noting(Vec::new(), policy),
        };
    };
    if pod_annotations.is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)) {
        return skip(
            Outcome::Mirror,
            vec![format!("secretmode: mirror pods of static pods cannot be injected; {prefix}/ annotations ignored")],
        );
    }

    let mode = match parsed.mode.or_else(|| config.policy.default_mode(namespace)) {
        Some(mode) => mode,
        None => {
            return Decision::Deny {
                policy: None,
                message: format!(
                    "annotation {prefix}/mode: missing, and namespace {namespace} has no default mode; fix: set {prefix}/mode to one of {VALID_MODES}"
                ),
                mode: None,
            }
        }
    };
    let plan = match annotations::resolve(&parsed, mode, config) {
        Ok(plan) => plan,
        Err(e) => return Decision::Deny { message: e.to_string(), mode: Some(mode), policy: None },
    };

    let verdict = config.policy.evaluate_pod(namespace, pod_spec(pod), Some(&plan), config);
    log_verdict(namespace, &verdict);
    let mut warnings = Vec::new();
    let mut note = injected_note(&plan, parsed.mode.is_none());
    if !verdict.is_clean() {
        match verdict.enforcement {
            Enforcement::Enforce => {
                return Decision::Deny { message: verdict.denial(), mode: Some(mode), policy: PolicyHit::of(&verdict) }
            }
            Enforcement::Warn => warnings.extend(verdict.warnings()),
            Enforcement::Audit => {}
        }
        note.push(',');
        note.push_str(&verdict.audit_note());
    }
    warnings::budget_warning(&plan, namespace, config, &mut warnings);
    if config.warnings.failure_mode {
        warnings.push(mode.failure_warning(plan.fallback_secret.is_some()));
    }
    warnings::feature_warnings(&plan, prefix, &mut warnings);
    warnings.extend(inject::readability_warning(pod, &plan));

    let ctx = inject::Context { namespace, injected_note: &note };
    let injection = match inject::inject(pod, &plan, config, &ctx) {
        Ok(injection) => injection,
        Err(e @ InjectError::Denied { .. }) => {
            return Decision::Deny { message: format!("{prefix}/mode {mode}: {e}"), mode: Some(mode), policy: None }
        }
        Err(e @ InjectError::Malformed(_)) => {
            return Decision::Deny { message: e.to_string(), mode: Some(mode), policy: None }
        }
    };
    // An already-injected pod gets no patch at all, even if the note would read differently.
    let (outcome, ops) =
        if injection.changes_pod { (Outcome::Injected, injection.ops) } else { (Outcome::Unchanged, Vec::new()) };
    Decision::Allow { patch: ops, warnings, mode: Some(mode), outcome, policy: PolicyHit::of(&verdict) }
}

fn injected_note(plan: &Plan, defaulted: bool) -> String {
    let mut note = format!("mode={},items={}", plan.mode, plan.items.len());
    if let Some(p) = &plan.provider {
        note.push_str(&format!(",provider={p}"));
    }
    if plan.fallback_secret.is_some() {
        note.push_str(",fallback=true");
    }
    if plan.env_values {
        note.push_str(",env-values=true");
    }
    match &plan.on_change {
        Some(OnChange::Http(_)) => note.push_str(",on-change=http"),
        Some(OnChange::Signal(s)) => {
            note.push_str(",on-change=signal:");
            note.push_str(s.as_str());
        }
        None => {}
    }
    if !plan.rendered.is_empty() {
        note.push_str(",rendered=");
        note.push_str(itoa::Buffer::new().format(plan.rendered.len()));
    }
    if defaulted {
        note.push_str(",mode-from=policy");
    }
    note
}

/// The first volume or container with a reserved `secretmode-` name, described for a denial.
fn reserved_name(pod: &JsonRef<'_>) -> Option<String> {
    let spec = pod.get("spec")?;
    for field in NAMED_SPEC_LISTS {
        for entry in JsonRef::entries(spec.get(field)) {
            if let Some(name) = entry.get("name").and_then(JsonRef::as_str) {
                if is_reserved(name) {
                    return Some(format!("spec.{field} entry {name}"));
                }
            }
        }
    }
    None
}

fn pod_spec<'p, 'a>(pod: &'p JsonRef<'a>) -> &'p JsonRef<'a> {
    pod.get("spec").unwrap_or(&JsonRef::Null)
}

/// Policy findings go to the log whatever the enforcement, so `audit` rules are visible
/// without reading every pod's annotations.
fn log_verdict(namespace: &str, verdict: &Verdict) {
    if verdict.is_clean() {
        return;
    }
    let rule = verdict.rule.as_deref().unwrap_or("-");
    let violations: Vec<String> = verdict.violations.iter().map(|v| format!("{}: {}", v.field, v.message)).collect();
    tracing::warn!(
        target: "secretmode::policy",
        namespace,
        rule,
        enforcement = %verdict.enforcement,
        violations = %Printable(&violations.join("; ")),
        "policy violation"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::printable::{tests::logged, Layout};
    use policy::Violation;

    /// A path or name from the pod with a newline in it cannot start a line of its own.
    #[test]
    fn a_policy_line_stays_one_line_whatever_the_pod_says() {
        let verdict = Verdict {
            rule: Some("prod".into()),
            enforcement: Enforcement::Audit,
            violations: vec![Violation {
                field: "secrets/item.db".into(),
                message: "path shop/db\n2026-11-23T00:00:00.000000Z  INFO forged is not under shop/".into(),
            }],
        };
        for layout in [Layout::Text, Layout::Json] {
            let out = logged(layout, || log_verdict("shop", &verdict));
            assert_eq!(out.lines().count(), 1, "{layout:?}: {out}");
            let violations = match layout {
                Layout::Text => out.clone(),
                Layout::Json => {
                    serde_json::from_str::<Value>(&out).unwrap()["violations"].as_str().unwrap().to_string()
                }
            };
            // The newline, written as the two characters `\n`.
            assert!(violations.contains(r"path shop/db\n2026-11-23"), "{layout:?}: {out}");
        }
    }
}
