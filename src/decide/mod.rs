//! The one place that decides what happens to a pod: annotations → policy → injection → patch.
//!
//! Pure and shared by `serve` (per AdmissionReview) and `mutate` (offline), so the offline
//! answer is the webhook's answer.

use serde_json::Value;

use crate::annotations::{self, Plan};
use crate::config::Config;
use crate::inject::{self, InjectError, RESERVED_PREFIX};
use crate::json_ref::JsonRef;
use crate::log_format::Printable;
use crate::modes::Mode;
use crate::patch::PatchOp;
use crate::policy::{Enforcement, Verdict};

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
                    "annotation {prefix}/mode: missing, and namespace {namespace} has no default mode; fix: set {prefix}/mode to one of eso, csi, init, sidecar"
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
    if config.warnings.failure_mode {
        warnings.push(mode.failure_warning(plan.fallback_secret.is_some()));
    }
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
    if defaulted {
        note.push_str(",mode-from=policy");
    }
    note
}

/// The first volume or container with a reserved `secretmode-` name, described for a denial.
pub(crate) fn reserved_name(pod: &JsonRef<'_>) -> Option<String> {
    let spec = pod.get("spec")?;
    for field in ["volumes", "containers", "initContainers"] {
        for entry in JsonRef::entries(spec.get(field)) {
            if let Some(name) = entry.get("name").and_then(JsonRef::as_str) {
                if name.starts_with(RESERVED_PREFIX) {
                    return Some(format!("spec.{field} entry {name}"));
                }
            }
        }
    }
    None
}

/// Runes of one warning the API server passes on whole (`APISERVER.md`, fact 8).
pub const WARNING_MAX_CHARS: usize = 256;
/// Runes of all warnings together past which the API server starts cutting and dropping.
pub const WARNINGS_MAX_TOTAL_CHARS: usize = 4096;
/// Room kept for the note that says how many warnings were left out.
const OMITTED_NOTE_RESERVE: usize = 128;

/// The warnings of an answer, as the API server will pass them on: it silently drops a
/// warning holding a control character (or invalid UTF-8, which a `String` cannot hold),
/// drops empty ones and duplicates, and past 4,096 runes in total cuts each to 256 and drops
/// the rest. So control characters are replaced by visible escapes (`\n`, `\u{1b}`), each
/// warning is cut to [`WARNING_MAX_CHARS`] (marked `...`), duplicates and empties go, and
/// warnings are kept whole in priority order (the order given: policy violations first)
/// while all of them fit in [`WARNINGS_MAX_TOTAL_CHARS`]; if some do not, the last one says
/// how many were left out. The one place an answer's warnings are finished.
pub fn api_server_warnings(warnings: Vec<String>) -> Vec<String> {
    let mut fitted: Vec<(String, usize)> = Vec::with_capacity(warnings.len());
    for w in warnings {
        let w = fit_warning(w);
        let len = w.chars().count();
        if len > 0 && !fitted.iter().any(|(f, _)| *f == w) {
            fitted.push((w, len));
        }
    }
    if fitted.iter().map(|(_, len)| len).sum::<usize>() <= WARNINGS_MAX_TOTAL_CHARS {
        return fitted.into_iter().map(|(w, _)| w).collect();
    }
    let mut total = 0;
    let mut out = Vec::new();
    for (w, len) in &fitted {
        if total + len > WARNINGS_MAX_TOTAL_CHARS - OMITTED_NOTE_RESERVE {
            break;
        }
        total += len;
        out.push(w.clone());
    }
    let omitted = fitted.len() - out.len();
    out.push(format!(
        "secretmode: {omitted} more warning{} not shown (the API server keeps 4096 characters); the webhook's log lists every policy violation",
        if omitted == 1 { "" } else { "s" }
    ));
    out
}

/// One warning with its control characters escaped, cut to [`WARNING_MAX_CHARS`].
fn fit_warning(w: String) -> String {
    let w = if w.bytes().all(|b| (b' '..=b'~').contains(&b)) { w } else { Printable(&w).to_string() };
    if w.len() <= WARNING_MAX_CHARS || w.chars().count() <= WARNING_MAX_CHARS {
        return w;
    }
    let mut cut: String = w.chars().take(WARNING_MAX_CHARS - 3).collect();
    cut.push_str("...");
    cut
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
    use crate::log_format::{tests::logged, Layout};
    use crate::policy::Violation;
    use proptest::prelude::*;

    fn total(ws: &[String]) -> usize {
        ws.iter().map(|w| w.chars().count()).sum()
    }

    #[test]
    fn warnings_the_api_server_would_drop_are_made_visible() {
        let out = api_server_warnings(vec![
            "line one\nforged line".into(),
            "bell \u{7} and escape \u{1b}[31m and next-line \u{85}".into(),
            "tab\there".into(),
            String::new(),
            "tab\there".into(),
        ]);
        assert_eq!(
            out,
            vec![r"line one\nforged line", r"bell \u{7} and escape \u{1b}[31m and next-line \u{85}", r"tab\there",]
        );
        assert!(out.iter().all(|w| !w.chars().any(char::is_control)));
    }

    #[test]
    fn a_long_warning_is_cut_at_256_runes_not_bytes() {
        let out = api_server_warnings(vec!["é".repeat(300), "x".repeat(256)]);
        assert_eq!(out[0].chars().count(), WARNING_MAX_CHARS);
        assert!(out[0].ends_with("...") && out[0].starts_with("éé"));
        assert_eq!(out[1], "x".repeat(256), "exactly 256 is kept whole");
        // An escape that makes a warning longer counts after escaping.
        let out = api_server_warnings(vec!["\n".repeat(200)]);
        assert_eq!(out[0].chars().count(), WARNING_MAX_CHARS);
    }

    #[test]
    fn many_warnings_keep_the_first_ones_whole_and_say_how_many_were_left_out() {
        let ws: Vec<String> = (0..40).map(|i| format!("warning {i:02} {}", "w".repeat(190))).collect();
        let out = api_server_warnings(ws.clone());
        assert!(total(&out) <= WARNINGS_MAX_TOTAL_CHARS, "{}", total(&out));
        let kept = out.len() - 1;
        assert!(kept >= 15, "{kept}");
        assert_eq!(&out[..kept], &ws[..kept]);
        assert_eq!(out[kept], format!("secretmode: {} more warnings not shown (the API server keeps 4096 characters); the webhook's log lists every policy violation", 40 - kept));
        // Exactly at the limit nothing is left out.
        let ws: Vec<String> = (0..16).map(|i| format!("{i:02}{}", "w".repeat(254))).collect();
        assert_eq!(api_server_warnings(ws.clone()), ws);
    }

    proptest! {
        #[test]
        fn warnings_always_fit_what_the_api_server_keeps(ws in prop::collection::vec(any::<String>(), 0..60),
                                                        long in prop::collection::vec("[a-z \\n\\t\\x1b]{0,400}", 0..30)) {
            let input: Vec<String> = ws.into_iter().chain(long).collect();
            let out = api_server_warnings(input.clone());
            prop_assert!(total(&out) <= WARNINGS_MAX_TOTAL_CHARS);
            for (i, w) in out.iter().enumerate() {
                prop_assert!(!w.is_empty() && w.chars().count() <= WARNING_MAX_CHARS, "{w:?}");
                prop_assert!(!w.chars().any(char::is_control), "{w:?}");
                prop_assert!(!out[..i].contains(w), "duplicate {w:?}");
            }
            // Clean input that fits comes through unchanged, in order.
            let mut distinct: Vec<String> = Vec::new();
            for w in &input {
                if !w.is_empty() && !distinct.contains(w) {
                    distinct.push(w.clone());
                }
            }
            let clean = distinct.iter().all(|w| w.chars().count() <= WARNING_MAX_CHARS && !w.chars().any(char::is_control));
            if clean && total(&distinct) <= WARNINGS_MAX_TOTAL_CHARS {
                prop_assert_eq!(&out, &distinct);
            }
            // The first warning, when clean and short, is always first and whole.
            if let Some(first) = distinct.first().filter(|w| w.chars().count() <= WARNING_MAX_CHARS && !w.chars().any(char::is_control)) {
                prop_assert_eq!(&out[0], first);
            }
        }
    }

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
