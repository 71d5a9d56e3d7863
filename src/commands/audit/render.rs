//! Output formats. Everything is derived from the sorted [`Report`], with no timestamps, so
//! the same input always prints the same bytes (golden tests and CI diffs rely on it).

use serde_json::{json, Value};

use super::analyze::{Finding, Report, WorkloadReport, CHECKS};
use super::Format;

pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => table(report),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Sarif => {
            let mut s = serde_json::to_string_pretty(&sarif(report)).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Markdown => markdown(report),
    }
}

const WORKLOAD_HEADER: [&str; 14] = [
    "NAMESPACE",
    "WORKLOAD",
    "MODE",
    "PROVIDER",
    "ITEMS",
    "RENDERED",
    "RUNNING PODS",
    "NEW PODS",
    "ROTATION",
    "RECOVERY",
    "STALENESS",
    "ENV VALUES",
    "ON CHANGE",
    "POLICY",
];

/// Index of the policy column, which `--cluster` widens with the injection state.
const POLICY_COLUMN: usize = WORKLOAD_HEADER.len() - 1;

fn workload_row(w: &WorkloadReport, cluster: bool) -> Vec<String> {
    let dash = || "-".to_string();
    let mode = match (w.mode, w.mode_source) {
        (Some(m), Some(super::analyze::ModeSource::PolicyDefault)) => format!("{m} (default)"),
        (Some(m), Some(super::analyze::ModeSource::HandBuilt)) => format!("{m} (hand-built)"),
        (Some(m), _) => m.to_string(),
        (None, _) => dash(),
    };
    let items = if w.items.is_empty() { dash() } else { w.items.join(",") };
    let outage = |f: fn(&crate::vocabulary::mode::Outage) -> &'static str| {
        w.outage.as_ref().map_or_else(dash, |o| f(o).to_string())
    };
    let rule = w.policy.rule.as_deref().unwrap_or("-");
    let mut policy = if w.webhook == "deny" {
        format!("DENY ({rule})")
    } else if w.policy.violations.is_empty() {
        if w.policy.rule.is_some() {
            format!("ok ({rule})")
        } else {
            dash()
        }
    } else {
        format!("{} ({rule}: {})", w.policy.enforcement, w.policy.violations.len())
    };
    if cluster {
        policy = format!("{policy}; {}", w.injection.as_deref().unwrap_or("-"));
    }
    vec![
        w.namespace.clone(),
        format!("{}/{}", w.kind, w.name),
        mode,
        w.provider.clone().unwrap_or_else(dash),
        items,
        if w.rendered.is_empty() { dash() } else { w.rendered.join(",") },
        outage(|o| o.running_pods),
        outage(|o| o.new_pods),
        outage(|o| o.rotation),
        outage(|o| o.recovery),
        w.staleness.clone().unwrap_or_else(dash),
        if w.env_values { "yes (restart to see a rotation)".to_string() } else { dash() },
        w.on_change.clone().unwrap_or_else(dash),
        policy,
    ]
}

fn es_header() -> Vec<String> {
    ["NAMESPACE", "EXTERNALSECRET", "TARGET", "READY", "REASON", "REFRESH", "LAST REFRESH", "STALE", "PENDING"]
        .map(String::from)
        .to_vec()
}

fn es_rows(report: &Report) -> Vec<Vec<String>> {
    report
        .external_secrets
        .iter()
        .map(|e| {
            vec![
                e.namespace.clone(),
                e.name.clone(),
                e.target.clone(),
                e.ready.clone(),
                e.reason.clone().unwrap_or_else(|| "-".into()),
                e.refresh_interval.clone(),
                e.age.as_ref().map_or_else(|| "never".to_string(), |a| format!("{a} ago")),
                if e.stale { "yes".into() } else { "no".into() },
                e.pending.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

fn location(f: &Finding) -> String {
    let mut at = match (f.namespace.is_empty(), f.object.is_empty()) {
        (true, true) => "cluster".to_string(),
        (false, true) => f.namespace.clone(),
        _ => format!("{}/{}", f.namespace, f.object),
    };
    if let (Some(file), Some(line)) = (&f.file, f.line) {
        at.push_str(&format!(" ({file}:{line})"));
    }
    at
}

fn summary_line(report: &Report) -> String {
    let s = &report.summary;
    let modes: Vec<String> = s.modes.iter().map(|(m, n)| format!("{m} {n}")).collect();
    let mut line = format!(
        "{} workloads ({}); {} errors, {} warnings, {} notes",
        s.workloads,
        if modes.is_empty() { "none".to_string() } else { modes.join(", ") },
        s.errors,
        s.warnings,
        s.notes
    );
    if !s.skipped.is_empty() {
        let total: usize = s.skipped.values().sum();
        let kinds: Vec<String> = s.skipped.iter().map(|(k, n)| format!("{k} {n}")).collect();
        line.push_str(&format!("; skipped {total} other objects ({})", kinds.join(", ")));
    }
    line
}

fn aligned(header: Vec<String>, rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows.iter()) {
        let cells: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn table(report: &Report) -> String {
    let cluster = report.source == "cluster";
    let mut header: Vec<String> = WORKLOAD_HEADER.map(String::from).to_vec();
    if cluster {
        header[POLICY_COLUMN] = "POLICY; INJECTION".into();
    }
    let rows = report.workloads.iter().map(|w| workload_row(w, cluster)).collect();
    let mut out = aligned(header, rows);
    if !report.external_secrets.is_empty() {
        out.push('\n');
        out.push_str(&aligned(es_header(), es_rows(report)));
    }
    if !report.findings.is_empty() {
        out.push('\n');
        let rows = report
            .findings
            .iter()
            .map(|f| {
                vec![
                    f.level.as_str().to_string(),
                    format!("{} {}", f.check.id, f.check.name),
                    location(f),
                    f.message.clone(),
                ]
            })
            .collect();
        out.push_str(&aligned(["LEVEL", "CHECK", "WHERE", "MESSAGE"].map(String::from).to_vec(), rows));
    }
    // The questions' sections (`--assume-down`, `--path`, `--load`), then the summary.
    if let Some(b) = &report.blast_radius {
        out.push('\n');
        out.push_str(&super::blast::table(b, aligned));
    }
    if let Some(r) = &report.rotation {
        out.push('\n');
        out.push_str(&super::rotation::table(r, aligned));
    }
    if let Some(load) = &report.load {
        out.push('\n');
        out.push_str(&super::load::table(load, aligned));
    }
    out.push('\n');
    out.push_str(&summary_line(report));
    out.push('\n');
    out
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn md_table(header: Vec<String>, rows: Vec<Vec<String>>) -> String {
    let mut out = format!("| {} |\n", header.iter().map(|h| md_cell(h)).collect::<Vec<_>>().join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for r in rows {
        out.push_str(&format!("| {} |\n", r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")));
    }
    out
}

fn markdown(report: &Report) -> String {
    let cluster = report.source == "cluster";
    let mut out = format!("# secretmode audit ({})\n\n{}\n", report.source, summary_line(report));
    // A pull-request comment leads with the answers to the questions asked.
    if let Some(b) = &report.blast_radius {
        out.push_str(&super::blast::markdown(b, md_table));
    }
    if let Some(r) = &report.rotation {
        out.push_str(&super::rotation::markdown(r, md_table));
    }
    if let Some(load) = &report.load {
        out.push_str(&super::load::markdown(load, md_table));
    }
    out.push_str("\n## Workloads\n\n");
    let mut header: Vec<String> = WORKLOAD_HEADER.iter().map(|h| h.to_lowercase()).collect();
    if cluster {
        header[POLICY_COLUMN] = "policy; injection".into();
    }
    out.push_str(&md_table(header, report.workloads.iter().map(|w| workload_row(w, cluster)).collect()));
    if !report.external_secrets.is_empty() {
        out.push_str("\n## ExternalSecrets\n\n");
        out.push_str(&md_table(es_header().iter().map(|h| h.to_lowercase()).collect(), es_rows(report)));
    }
    out.push_str("\n## Findings\n\n");
    if report.findings.is_empty() {
        out.push_str("None.\n");
    } else {
        let rows = report
            .findings
            .iter()
            .map(|f| {
                vec![
                    f.level.as_str().into(),
                    format!("{} {}", f.check.id, f.check.name),
                    location(f),
                    f.message.clone(),
                ]
            })
            .collect();
        out.push_str(&md_table(["level", "check", "where", "message"].map(String::from).to_vec(), rows));
    }
    out
}

/// SARIF 2.1.0, one run. Manifest findings carry a physical location (file and line);
/// cluster findings a logical one (`namespace/Kind/name`).
fn sarif(report: &Report) -> Value {
    let rules: Vec<Value> = CHECKS
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "name": c.name,
                "shortDescription": {"text": c.description},
                "helpUri": "https://github.com/secretmode/secretmode/blob/main/docs/AUDIT.md#checks",
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let index = CHECKS.iter().position(|c| c.id == f.check.id).unwrap_or(0);
            let mut location = serde_json::Map::new();
            if let Some(file) = &f.file {
                let mut physical = json!({"artifactLocation": {"uri": file.replace('\\', "/")}});
                if let Some(line) = f.line {
                    physical["region"] = json!({"startLine": line});
                }
                location.insert("physicalLocation".into(), physical);
            }
            let name = location_name(f);
            location.insert("logicalLocations".into(), json!([{"fullyQualifiedName": name, "kind": "resource"}]));
            json!({
                "ruleId": f.check.id,
                "ruleIndex": index,
                "level": f.level.as_str(),
                "message": {"text": f.message},
                "locations": [location],
            })
        })
        .collect();
    let mut run_properties = serde_json::Map::new();
    if let Some(r) = &report.rotation {
        run_properties.insert("rotation".into(), json!(r));
    }
    if let Some(load) = &report.load {
        run_properties.insert("providerLoad".into(), json!(load));
    }
    if let Some(b) = &report.blast_radius {
        run_properties.insert("blastRadius".into(), super::blast::sarif_properties(b));
    }
    let mut doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "secretmode",
                "informationUri": "https://github.com/secretmode/secretmode",
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    });
    if !run_properties.is_empty() {
        doc["runs"][0]["properties"] = Value::Object(run_properties);
    }
    doc
}

fn location_name(f: &Finding) -> String {
    match (f.namespace.is_empty(), f.object.is_empty()) {
        (true, true) => "cluster".into(),
        (false, true) => f.namespace.clone(),
        _ => format!("{}/{}", f.namespace, f.object),
    }
}
