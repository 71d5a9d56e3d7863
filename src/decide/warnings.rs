//! The warnings of an answer: what the pod's optional features cost ([`feature_warnings`]),
//! a sidecar pod that alone exceeds its namespace's provider budget ([`budget_warning`]), and
//! all of them fitted to what the API server passes on to kubectl.

use super::plan::{ItemSource, Plan};
use crate::config::policy::Enforcement;
use crate::config::Config;
use crate::logging::printable::Printable;
use crate::timing::{self, Delivery};
use crate::vocabulary::duration;
use crate::vocabulary::mode::Mode;
use crate::vocabulary::names::{RENDERED_VOLUME, RENDER_CONTAINER, WATCHER_CONTAINER};
use crate::vocabulary::on_change::OnChange;

/// What `<prefix>/env-values` and `<prefix>/on-change` cost, for the person applying the pod:
/// values in env never rotate and are readable by every process of the container; a signal
/// shares the pod's process namespace; in eso and csi a watcher container does the work, and
/// rendered files add a render step and the watcher. Nothing for a pod that uses none (no
/// allocation).
pub fn feature_warnings(plan: &Plan, prefix: &str, out: &mut Vec<String>) {
    if let Some(dir) = &plan.rendered_dir {
        out.push(format!(
            "secretmode rendered files in mode {}: the {RENDER_CONTAINER} init container renders them before the app starts and the {WATCHER_CONTAINER} re-renders them after each change to the items; they are in {dir} ({RENDERED_VOLUME})",
            plan.mode
        ));
    }
    if plan.env_values {
        out.push(format!(
            "secretmode {prefix}/env-values: values in env are fixed when the process starts (a rotation reaches the app only after a restart) and readable in /proc/<pid>/environ"
        ));
    }
    let Some(action) = &plan.on_change else { return };
    if let OnChange::Signal(s) = action {
        out.push(format!(
            "secretmode {prefix}/on-change signal:{}: the pod's process namespace is shared (shareProcessNamespace: true): its containers see each other's processes",
            s.as_str()
        ));
    }
    match plan.mode {
        Mode::Eso | Mode::Csi => out.push(format!(
            "secretmode {prefix}/on-change: the {WATCHER_CONTAINER} container runs \"{action}\" after each change the {} makes to the files",
            if plan.mode == Mode::Eso { "kubelet" } else { "CSI driver" }
        )),
        Mode::Sidecar | Mode::Init => {}
    }
}

/// The policy rule's `maxProviderRequestsPerSecond` against this one pod. The webhook sees one
/// pod, not the namespace's total (`secretmode audit` judges that, SM016), so it only warns,
/// and only when the pod alone is over the budget. Only a sidecar pod sets its own rate (its
/// paths and `refresh-interval`); `csi` rates are the SecretProviderClass's and the driver's,
/// `eso` rates the ExternalSecret's, `init` reads once per start. Rules at `audit`
/// enforcement get no kubectl warning. Where no budget applies this allocates nothing: a
/// pass over the rules, then (if some rule has a budget) one allocation-free rule lookup
/// (tests/budget_alloc.rs counts).
pub fn budget_warning(plan: &Plan, namespace: &str, config: &Config, out: &mut Vec<String>) {
    if plan.mode != crate::vocabulary::mode::Mode::Sidecar
        || !config.policy.rules.iter().any(|r| r.max_provider_requests_per_second.is_some())
    {
        return;
    }
    let Some(rule) = config.policy.rule_for(namespace) else { return };
    let (Some(budget), false) = (rule.max_provider_requests_per_second, rule.enforcement == Enforcement::Audit) else {
        return;
    };
    let polls = timing::polls(&Delivery::Sidecar { refresh: plan.refresh_interval, max_staleness: plan.max_staleness });
    let timing::Polls::Every(every) = polls else { return };
    let paths = distinct_paths(plan);
    let Some(rate) = polls.per_second(paths as f64) else { return };
    if rate <= budget {
        return;
    }
    let prefix = &config.annotation_prefix;
    out.push(format!(
        "secretmode policy {}: this pod alone takes {}/s from {} ({paths} path{} every {} at worst), over the namespace's maxProviderRequestsPerSecond {}/s; fix: a longer {prefix}/refresh-interval or fewer paths",
        rule.name,
        requests_per_second(rate),
        plan.provider.as_deref().unwrap_or("its provider"),
        if paths == 1 { "" } else { "s" },
        duration::format(every),
        requests_per_second(budget),
    ));
}

/// Distinct provider paths of a plan: the agent reads each once per refresh. Counted without
/// allocating (plans hold at most `maxItems` items).
pub fn distinct_paths(plan: &Plan) -> usize {
    fn path(i: &super::plan::PlannedItem) -> Option<&str> {
        match &i.source {
            ItemSource::Provider { path, .. } => Some(path.as_str()),
            ItemSource::SecretKey(_) | ItemSource::CsiObject(_) => None,
        }
    }
    plan.items
        .iter()
        .enumerate()
        .filter(|(n, item)| path(item).is_some_and(|p| !plan.items[..*n].iter().any(|e| path(e) == Some(p))))
        .count()
}

/// A request rate for people: three significant digits, no trailing zeros (`0.0556`, `12.3`,
/// `1234`). Used by the webhook's warning and the audit's load report alike.
pub fn requests_per_second(rate: f64) -> String {
    if !rate.is_finite() || rate <= 0.0 {
        return "0".into();
    }
    let digits = (2 - rate.log10().floor() as i32).clamp(0, 8) as usize;
    let s = format!("{rate:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn total(ws: &[String]) -> usize {
        ws.iter().map(|w| w.chars().count()).sum()
    }

    #[test]
    fn rates_print_with_three_significant_digits() {
        for (rate, want) in [
            (1.0 / 18.0, "0.0556"),
            (1.0 / 3600.0, "0.000278"),
            (0.5, "0.5"),
            (12.34, "12.3"),
            (1234.4, "1234"),
            (0.0, "0"),
            (f64::NAN, "0"),
        ] {
            assert_eq!(requests_per_second(rate), want, "{rate}");
        }
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
}
