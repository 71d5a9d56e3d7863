//! The two Prometheus exposition formats every `/metrics` endpoint (webhook, agent, watcher)
//! serves, chosen from the scraper's `Accept` header as Prometheus' Go client does: OpenMetrics
//! for a scraper that asks for it (Prometheus itself), else the classic text format 0.0.4
//! (`curl`, `promtool check metrics`, older scrapers). The metrics are encoded once, in
//! OpenMetrics; the text format differs only in its comments: a counter's HELP and TYPE name
//! the `_total` series, and there is no `# UNIT` or `# EOF` line. Samples are the same lines.

use std::collections::HashSet;

/// Content type of an OpenMetrics answer.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of a text format 0.0.4 answer.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// (content type, body) for a scraper that sent `accept`, from the OpenMetrics encoding.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS, openmetrics)
    } else {
        (TEXT, to_text(&openmetrics))
    }
}

/// The text format 0.0.4 form of an OpenMetrics exposition.
pub fn to_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let name_of = |name: &str| if counters.contains(name) { format!("{name}_total") } else { name.to_string() };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // OpenMetrics escapes `"` in HELP; the text format does not.
            out.push_str(&format!("# HELP {} {}\n", name_of(name), help.replace("\\\"", "\"")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = if kind == "unknown" { "untyped" } else { kind };
            out.push_str(&format!("# TYPE {} {kind}\n", name_of(name)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{a=\"b\"} 3\n\
                      # HELP x_age_seconds Age \\\"now\\\".\n# TYPE x_age_seconds gauge\n# UNIT x_age_seconds seconds\n\
                      x_age_seconds 1.5\n# EOF\n";

    #[test]
    fn counters_are_named_by_their_total_series_and_the_openmetrics_lines_go() {
        assert_eq!(
            to_text(OM),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{a=\"b\"} 3\n\
             # HELP x_age_seconds Age \"now\".\n# TYPE x_age_seconds gauge\nx_age_seconds 1.5\n"
        );
    }

    #[test]
    fn openmetrics_only_for_a_scraper_that_asks() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prometheus), OM.into()), (OPENMETRICS, OM.to_string()));
        for accept in [None, Some("*/*"), Some("text/plain")] {
            let (kind, body) = negotiate(accept, OM.into());
            assert_eq!(kind, TEXT);
            assert!(!body.contains("# EOF"), "{body}");
        }
    }
}
