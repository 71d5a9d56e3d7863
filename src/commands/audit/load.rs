//! `secretmode audit --load`: the requests per second each provider takes from the cluster,
//! per namespace and in total, beside its rate limit and cost (config `providerLoad`), and the
//! policy's per-namespace budget (`maxProviderRequestsPerSecond`, finding SM016, judged with
//! or without `--load`).
//!
//! Readers and their polls come from the timing model (`timing::polls`): a sidecar pod reads
//! its distinct paths every refresh less 10 % (worst case), a CSI pod whose class rotates reads
//! its objects every poll, an ExternalSecret (once, for all pods mounting its Secret: ESO's
//! controller reads, not the pods) reads its references every `refreshInterval`. Init pods and
//! CSI pods without rotation read only when they start: their requests are counted per rollout
//! (every replica starting once), as are the first reads of sidecar and CSI pods. Credential
//! logins are not counted: their rate is the Vault role's token TTL or the STS session
//! length, which the config does not hold.

use std::collections::BTreeMap;

use serde::Serialize;

use super::analyze::{Finding, Level, Report, PROVIDER_BUDGET};
use super::sources::Attribution;
use crate::config::policy::Enforcement;
use crate::config::Config;
use crate::decide::warnings::requests_per_second as rate;
use crate::timing::{self, Delivery, Polls};
use crate::vocabulary::duration;
use crate::vocabulary::mode::Mode;

/// The provider column of load nobody could attribute to a config provider.
pub const UNKNOWN: &str = "(unknown)";
/// Share of a rate limit past which the report warns that the provider is near it.
const NEAR_LIMIT: f64 = 0.8;
/// What is left out of every load report, said once in each format.
const LEFT_OUT: &str = "credential logins are not counted (Vault logins and token renewals follow the Vault role's TTL, AWS STS sessions their own length; neither is in the config)";

/// What the report is asked for: `--load`, `--nodes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Put the load section in the report (`--load`); SM016 is judged either way.
    pub report: bool,
    /// Nodes a DaemonSet runs on, for manifests (`--nodes`, default 1).
    pub nodes: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { report: false, nodes: 1 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// Nodes each DaemonSet was counted on (manifests; `--cluster` counts live pods).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// Per provider, over all namespaces; the unattributed load under [`UNKNOWN`].
    pub providers: Vec<ProviderTotal>,
    /// Per namespace and provider, with the namespace's budget where policy sets one.
    pub namespaces: Vec<NamespaceLoad>,
    /// Every reader: a workload (pods) or an ExternalSecret.
    pub readers: Vec<Reader>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderTotal {
    pub provider: String,
    pub requests_per_second: f64,
    /// Requests when every pod of every workload starts once (init, CSI, a sidecar's first fetch).
    pub requests_per_rollout: u64,
    pub requests_per_day: f64,
    /// `providerLoad.<provider>.rateLimit`, requests per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    /// `requestsPerSecond / rateLimit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_share: Option<f64>,
    /// `ok`, `near` (80 % or more of the limit) or `over`; absent without a limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_day: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_30_days: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceLoad {
    pub namespace: String,
    pub provider: String,
    pub requests_per_second: f64,
    pub requests_per_rollout: u64,
    /// The policy rule of the namespace that sets `maxProviderRequestsPerSecond`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    pub over_budget: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reader {
    pub namespace: String,
    /// `Kind/name` of the workload (or pod), or `ExternalSecret/<name>`.
    pub object: String,
    pub mode: Mode,
    pub provider: String,
    /// What is unknown about this reader: why its provider is [`UNKNOWN`], or its requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_because: Option<String>,
    /// Pods (replicas, × nodes for a DaemonSet); 1 for an ExternalSecret.
    pub readers: u64,
    /// Requests of one reader per poll (distinct paths, objects, ExternalSecret references).
    pub requests_per_poll: u64,
    /// `every 54s`, `at start`, `once`, `unknown`.
    pub polls: String,
    pub requests_per_second: f64,
    pub requests_per_rollout: u64,
    /// `requests_per_second` before rounding: what the totals add up.
    #[serde(skip)]
    exact: f64,
}

/// Computes the load, adds SM016 for every namespace over its budget (at the rule's
/// enforcement), and with `options.report` puts the load section in the report.
pub fn apply(report: &mut Report, config: &Config, options: LoadOptions) {
    let load = compute(report, config, options.nodes);
    let mut added = false;
    for ns in load.namespaces.iter().filter(|n| n.over_budget) {
        let (Some(rule_name), Some(budget)) = (&ns.rule, ns.budget) else { continue };
        let Some(rule) = config.policy.rules.iter().find(|r| &r.name == rule_name) else { continue };
        let mut top: Vec<&Reader> = load
            .readers
            .iter()
            .filter(|r| r.namespace == ns.namespace && r.provider == ns.provider && r.exact > 0.0)
            .collect();
        top.sort_by(|a, b| b.exact.total_cmp(&a.exact).then(a.object.cmp(&b.object)));
        let most: Vec<String> =
            top.iter().take(3).map(|r| format!("{} {}/s", r.object, rate(r.requests_per_second))).collect();
        report.findings.push(Finding {
            namespace: ns.namespace.clone(),
            object: String::new(),
            check: PROVIDER_BUDGET,
            level: match rule.enforcement {
                Enforcement::Enforce => Level::Error,
                Enforcement::Warn => Level::Warning,
                Enforcement::Audit => Level::Note,
            },
            message: format!(
                "takes {}/s from {}, over maxProviderRequestsPerSecond {}/s of policy rule {rule_name} (most: {}); fix: a longer refresh-interval (sidecar), ESO refreshInterval or CSI rotation poll, or fewer paths",
                rate(ns.requests_per_second),
                ns.provider,
                rate(budget),
                most.join(", ")
            ),
            file: None,
            line: None,
        });
        added = true;
    }
    if added {
        recount(report);
    }
    if options.report {
        report.load = Some(load);
    }
}

/// Sorts the findings again and recounts the summary after SM016 was added.
fn recount(report: &mut Report) {
    report.findings.sort();
    report.findings.dedup();
    let count = |l: Level| report.findings.iter().filter(|f| f.level == l).count();
    let (errors, warnings, notes) = (count(Level::Error), count(Level::Warning), count(Level::Note));
    let s = &mut report.summary;
    (s.errors, s.warnings, s.notes) = (errors, warnings, notes);
}

/// The load of every reader in the report, summed per namespace and provider and per provider.
pub fn compute(report: &Report, config: &Config, nodes: u32) -> LoadReport {
    let cluster = report.source == "cluster";
    let mut readers = Vec::new();
    let mut not_injected = Vec::new();
    for w in &report.workloads {
        let f = &w.facts;
        let Some(choice) = &f.choice else { continue };
        if w.injection.as_deref() == Some("not injected") {
            // A live pod the webhook never saw has no agent: it reads nothing until restarted.
            not_injected.push(format!("{}/{}/{}", w.namespace, w.kind, w.name));
            continue;
        }
        if matches!(choice.delivery, Delivery::Eso { .. }) {
            continue; // ESO's controller reads, once per ExternalSecret: below.
        }
        let pods = u64::from(f.replicas) * if f.per_node && !cluster { u64::from(nodes) } else { 1 };
        let (provider, mut unknown_because) = attributed(f.provider.as_ref());
        if f.requests_per_fetch == 0 {
            // A csi pod whose class is not in the input: how many objects it reads is unknown.
            let why = unknown_because.take().map_or(String::new(), |w| format!("{w}; "));
            unknown_because = Some(format!("{why}its requests per poll are unknown and not counted"));
        }
        readers.push(reader(
            &w.namespace,
            format!("{}/{}", w.kind, w.name),
            choice.delivery,
            (provider, unknown_because),
            pods,
            f.requests_per_fetch as u64,
        ));
    }
    for ((namespace, target), es) in &report.sources.external_secrets {
        let attribution = report.sources.eso_provider(namespace, target, config);
        readers.push(reader(
            namespace,
            format!("ExternalSecret/{}", es.name),
            Delivery::Eso { refresh: es.refresh },
            attributed(Some(&attribution)),
            1,
            es.reads_per_refresh as u64,
        ));
    }
    readers.sort_by(|a, b| (&a.namespace, &a.object).cmp(&(&b.namespace, &b.object)));

    let mut per_ns: BTreeMap<(String, String), (f64, u64)> = BTreeMap::new();
    let mut per_provider: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for r in &readers {
        for entry in [
            per_ns.entry((r.namespace.clone(), r.provider.clone())).or_default(),
            per_provider.entry(r.provider.clone()).or_default(),
        ] {
            entry.0 += r.exact;
            entry.1 += r.requests_per_rollout;
        }
    }
    let namespaces = per_ns
        .into_iter()
        .map(|((namespace, provider), (rps, rollout))| {
            let rule = config.policy.rule_for(&namespace).filter(|r| r.max_provider_requests_per_second.is_some());
            let budget = rule.and_then(|r| r.max_provider_requests_per_second);
            NamespaceLoad {
                over_budget: budget.is_some_and(|b| rps > b),
                rule: rule.map(|r| r.name.clone()),
                budget,
                namespace,
                provider,
                requests_per_second: round(rps),
                requests_per_rollout: rollout,
            }
        })
        .collect();
    let providers = per_provider
        .into_iter()
        .map(|(provider, (rps, rollout))| {
            let load = config.provider_load.get(&provider);
            let rate_limit = load.and_then(|l| l.rate_limit);
            let share = rate_limit.filter(|l| *l > 0.0).map(|l| rps / l);
            let per_day = rps * 86_400.0;
            let cost = load.and_then(|l| l.cost_per_10k_requests).map(|c| per_day / 10_000.0 * c);
            ProviderTotal {
                requests_per_second: round(rps),
                requests_per_rollout: rollout,
                requests_per_day: round(per_day),
                rate_limit,
                rate_limit_share: share.map(round),
                limit_status: share.map(|s| match s {
                    s if s > 1.0 => "over",
                    s if s >= NEAR_LIMIT => "near",
                    _ => "ok",
                }),
                cost_per_day: cost.map(round),
                cost_per_30_days: cost.map(|c| round(c * 30.0)),
                currency: cost.map(|_| load.and_then(|l| l.currency.clone()).unwrap_or_else(|| "USD".into())),
                provider,
            }
        })
        .collect();
    let mut notes = Vec::new();
    if !cluster {
        notes.push(format!(
            "DaemonSets are counted on {nodes} node{} (--nodes; default 1)",
            if nodes == 1 { "" } else { "s" }
        ));
    }
    if !not_injected.is_empty() {
        notes.push(format!("not counted, not injected (no agent until restarted): {}", not_injected.join(", ")));
    }
    notes.push("sidecars at their worst case: a refresh comes up to 10 % early".to_string());
    notes.push(
        "per rollout: every pod of every workload starting once (init, CSI mounts, a sidecar's first fetch); not in the daily figures"
            .to_string(),
    );
    notes.push(LEFT_OUT.to_string());
    LoadReport { nodes: (!cluster).then_some(nodes), providers, namespaces, readers, notes }
}

fn attributed(a: Option<&Attribution>) -> (String, Option<String>) {
    match a {
        Some(Attribution::Provider(p)) => (p.clone(), None),
        Some(Attribution::Unknown(why)) => (UNKNOWN.to_string(), Some(why.clone())),
        None => (UNKNOWN.to_string(), Some("no provider".into())),
    }
}

fn reader(
    namespace: &str,
    object: String,
    delivery: Delivery,
    (provider, unknown_because): (String, Option<String>),
    readers: u64,
    requests_per_poll: u64,
) -> Reader {
    let polls = timing::polls(&delivery);
    let all = readers.saturating_mul(requests_per_poll);
    let exact = polls.per_second(all as f64).unwrap_or(0.0);
    Reader {
        namespace: namespace.to_string(),
        object,
        mode: delivery.mode(),
        provider,
        unknown_because,
        readers,
        requests_per_poll,
        polls: match polls {
            Polls::Every(d) => format!("every {}", duration::format(d)),
            Polls::AtStart => "at start".into(),
            Polls::Once => "once".into(),
            Polls::Unknown => "unknown".into(),
        },
        requests_per_second: round(exact),
        requests_per_rollout: if timing::reads_at_start(&delivery) { all } else { 0 },
        exact,
    }
}

/// Six decimals: enough for one request an hour, and stable JSON.
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn cost(amount: Option<f64>, currency: Option<&String>) -> String {
    match (amount, currency) {
        (Some(a), Some(c)) => format!("{} {c}", rate(a)),
        _ => "-".into(),
    }
}

fn limit(p: &ProviderTotal) -> String {
    match (p.rate_limit, p.rate_limit_share, p.limit_status) {
        (Some(l), Some(s), Some(status)) => {
            let status = match status {
                "over" => "OVER THE LIMIT",
                "near" => "NEAR THE LIMIT",
                other => other,
            };
            format!("{}/s ({} %) {status}", rate(l), rate(s * 100.0))
        }
        _ => "-".into(),
    }
}

fn provider_rows(load: &LoadReport) -> Vec<Vec<String>> {
    load.providers
        .iter()
        .map(|p| {
            vec![
                p.provider.clone(),
                rate(p.requests_per_second),
                p.requests_per_rollout.to_string(),
                limit(p),
                format!("{:.0}", p.requests_per_day),
                cost(p.cost_per_day, p.currency.as_ref()),
                cost(p.cost_per_30_days, p.currency.as_ref()),
            ]
        })
        .collect()
}

const PROVIDER_HEADER: [&str; 7] =
    ["PROVIDER", "REQ/S", "PER ROLLOUT", "RATE LIMIT", "REQ/DAY", "COST/DAY", "COST/30 DAYS"];
const NAMESPACE_HEADER: [&str; 5] = ["NAMESPACE", "PROVIDER", "REQ/S", "PER ROLLOUT", "BUDGET"];
const READER_HEADER: [&str; 9] =
    ["NAMESPACE", "READER", "MODE", "PROVIDER", "READERS", "REQ/POLL", "POLLS", "REQ/S", "PER ROLLOUT"];

fn namespace_rows(load: &LoadReport) -> Vec<Vec<String>> {
    load.namespaces
        .iter()
        .map(|n| {
            let budget = match (&n.rule, n.budget) {
                (Some(rule), Some(b)) => {
                    format!("{}/s ({rule}){}", rate(b), if n.over_budget { " OVER BUDGET" } else { "" })
                }
                _ => "-".into(),
            };
            vec![
                n.namespace.clone(),
                n.provider.clone(),
                rate(n.requests_per_second),
                n.requests_per_rollout.to_string(),
                budget,
            ]
        })
        .collect()
}

fn reader_rows(load: &LoadReport) -> Vec<Vec<String>> {
    load.readers
        .iter()
        .map(|r| {
            vec![
                r.namespace.clone(),
                r.object.clone(),
                r.mode.to_string(),
                r.provider.clone(),
                r.readers.to_string(),
                r.requests_per_poll.to_string(),
                r.polls.clone(),
                rate(r.requests_per_second),
                r.requests_per_rollout.to_string(),
            ]
        })
        .collect()
}

/// What is unknown (a provider, a class's objects): one line per reader.
fn unknown_lines(load: &LoadReport) -> Vec<String> {
    load.readers
        .iter()
        .filter_map(|r| r.unknown_because.as_ref().map(|why| format!("{}/{}: {why}", r.namespace, r.object)))
        .collect()
}

/// The table format's load section: per provider, per namespace, per reader, then notes.
pub fn table(load: &LoadReport, aligned: impl Fn(Vec<String>, Vec<Vec<String>>) -> String) -> String {
    let header = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut out = String::from("PROVIDER LOAD\n");
    out.push_str(&aligned(header(&PROVIDER_HEADER), provider_rows(load)));
    out.push('\n');
    out.push_str(&aligned(header(&NAMESPACE_HEADER), namespace_rows(load)));
    out.push('\n');
    out.push_str(&aligned(header(&READER_HEADER), reader_rows(load)));
    out.push('\n');
    for line in unknown_lines(load) {
        out.push_str(&format!("unknown: {line}\n"));
    }
    for note in &load.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// One line per provider, for the top of a pull-request comment.
fn summary(load: &LoadReport) -> String {
    if load.providers.is_empty() {
        return "No workload or ExternalSecret reads a provider.".into();
    }
    let mut parts: Vec<String> = load
        .providers
        .iter()
        .map(|p| {
            let mut s = format!("**{}** {}/s", p.provider, rate(p.requests_per_second));
            if let (Some(l), Some(share)) = (p.rate_limit, p.rate_limit_share) {
                s.push_str(&format!(" ({} % of {}/s", rate(share * 100.0), rate(l)));
                match p.limit_status {
                    Some("over") => s.push_str(", **over the limit**)"),
                    Some("near") => s.push_str(", **near the limit**)"),
                    _ => s.push(')'),
                }
            }
            if let Some(c) = p.cost_per_30_days {
                s.push_str(&format!(", {} {} per 30 days", rate(c), p.currency.as_deref().unwrap_or("USD")));
            }
            s
        })
        .collect();
    let over: Vec<String> =
        load.namespaces.iter().filter(|n| n.over_budget).map(|n| format!("{} ({})", n.namespace, n.provider)).collect();
    parts.push(if over.is_empty() {
        "no namespace over its budget".into()
    } else {
        format!("over budget: {}", over.join(", "))
    });
    parts.join("; ")
}

/// The markdown section: a summary line, then the tables and notes.
pub fn markdown(load: &LoadReport, md_table: impl Fn(Vec<String>, Vec<Vec<String>>) -> String) -> String {
    let lower = |h: &[&str]| h.iter().map(|s| s.to_lowercase()).collect::<Vec<_>>();
    let mut out = format!("\n## Provider load\n\n{}\n\n", summary(load));
    out.push_str(&md_table(lower(&PROVIDER_HEADER), provider_rows(load)));
    out.push_str("\n### Per namespace\n\n");
    out.push_str(&md_table(lower(&NAMESPACE_HEADER), namespace_rows(load)));
    out.push_str("\n### Per reader\n\n");
    out.push_str(&md_table(lower(&READER_HEADER), reader_rows(load)));
    out.push('\n');
    for line in unknown_lines(load) {
        out.push_str(&format!("- unknown: {line}\n"));
    }
    for note in &load.notes {
        out.push_str(&format!("- {note}\n"));
    }
    out
}
