//! `audit --assume-down PROVIDER`: the blast radius of a provider outage. For every workload
//! that depends on a down provider (or whose provider is not known: counted as depending on it),
//! what `timing::outage` says: running pods keep serving until they go stale, new pods start,
//! start from a fallback, or are blocked. Totals per namespace and overall; `--fail-on` turns
//! conditions into error findings (SM015), so the exit code and SARIF carry a CI gate.
//! Pure: the analysed [`Report`] and the config in, a [`BlastRadius`] and findings out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::timing::{self, Delivery, NewPods, Stale};
use crate::vocabulary::duration;
use crate::vocabulary::mode::Mode;
use crate::vocabulary::names::glob_match;

use super::analyze::{Finding, Level, Report, WorkloadReport, BLAST_GATE};
use super::sources::Attribution;

/// What `--fail-on` can promise about the workloads of the down providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// A new pod (rescheduling, scale-up, rollout) cannot start.
    Blocked,
    /// A new pod would start from its fallback Secret.
    Fallback,
    /// A running pod may go stale sooner than this (an unknown staleness counts).
    StaleWithin(Duration),
    /// A workload's provider is not known.
    Unknown,
}

/// One `--fail-on` value: a condition, optionally scoped to namespaces (`blocked@prod-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailOn {
    pub condition: Condition,
    /// A namespace name or glob (`*`, `?`), as policy rules take them; `None`: every namespace.
    pub scope: Option<String>,
}

const FAIL_ON_FIX: &str = "use blocked, fallback, stale-within=DURATION (e.g. stale-within=30m) or unknown, \
                           optionally scoped as CONDITION@NAMESPACE_GLOB (e.g. blocked@prod-*)";

impl FromStr for FailOn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (cond, scope) = match s.split_once('@') {
            Some((c, g)) => (c, Some(g)),
            None => (s, None),
        };
        if let Some(glob) = scope {
            if !crate::config::policy::is_namespace_pattern(glob) {
                return Err(format!(
                    "{glob:?} is not a namespace name or glob (lower case, digits, '-', '*', '?'); fix: e.g. blocked@prod-*"
                ));
            }
        }
        let condition = match cond {
            "blocked" => Condition::Blocked,
            "fallback" => Condition::Fallback,
            "unknown" => Condition::Unknown,
            _ => match cond.strip_prefix("stale-within=") {
                Some(d) => {
                    let d = duration::parse(d).map_err(|e| format!("stale-within: {e}; fix: e.g. stale-within=30m"))?;
                    if d.is_zero() {
                        return Err("stale-within=0 can never be met; fix: a positive duration, e.g. stale-within=30m"
                            .to_string());
                    }
                    Condition::StaleWithin(d)
                }
                None => return Err(format!("{cond:?} is not a condition; fix: {FAIL_ON_FIX}")),
            },
        };
        Ok(FailOn { condition, scope: scope.map(str::to_string) })
    }
}

impl fmt::Display for FailOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.condition {
            Condition::Blocked => f.write_str("blocked")?,
            Condition::Fallback => f.write_str("fallback")?,
            Condition::StaleWithin(d) => write!(f, "stale-within={}", duration::format(d))?,
            Condition::Unknown => f.write_str("unknown")?,
        }
        match &self.scope {
            Some(glob) => write!(f, "@{glob}"),
            None => Ok(()),
        }
    }
}

impl FailOn {
    fn covers(&self, namespace: &str) -> bool {
        self.scope.as_deref().is_none_or(|glob| glob_match(glob, namespace))
    }
}

/// The `--assume-down` values (repeatable, comma lists) checked against the config's
/// `providers`; `Err` names the unknown one and the defined ones.
pub fn providers(values: &[String], config: &Config) -> Result<BTreeSet<String>, String> {
    let mut down = BTreeSet::new();
    for name in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
        if !config.providers.contains_key(name) {
            let defined: Vec<&str> = config.providers.keys().map(String::as_str).collect();
            return Err(format!(
                "--assume-down {name:?} is not a provider of the config; fix: use one of {}",
                if defined.is_empty() { "(none defined)".to_string() } else { defined.join(", ") }
            ));
        }
        down.insert(name.to_string());
    }
    Ok(down)
}

/// The answer to "what breaks while these providers are down".
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlastRadius {
    /// The providers assumed down.
    pub down: Vec<String>,
    /// Workloads depending on one of them (or on a provider not known).
    pub affected: Vec<Affected>,
    /// Workloads of other providers, and those without a mode.
    pub unaffected: Vec<Unaffected>,
    /// Per namespace (every namespace with a workload), sorted.
    pub namespaces: Vec<Totals>,
    pub total: Totals,
    /// The `--fail-on` conditions, as given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fail_on: Vec<String>,
    /// SM015 findings: one per workload and met condition.
    pub failed: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Affected {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub mode: Mode,
    /// The provider's name, or `provider not known: <why>`.
    pub provider: String,
    /// Pods: replicas (manifests) or 1 per pod (`--cluster`); per node for a DaemonSet.
    pub pods: u32,
    pub per_node: bool,
    /// Always "keep serving", with how long they stay fresh.
    pub running_pods: String,
    pub new_pods: NewPods,
    /// When the running pods go stale, counted from the start of the outage.
    pub stale: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_earliest_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_latest_seconds: Option<u64>,
    #[serde(skip)]
    stale_model: Stale,
    #[serde(skip)]
    known: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unaffected {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// `provider aws`, `no mode`, `no plan (the webhook denies it)`.
    pub why: String,
}

/// Pods as manifests count them: fixed counts plus DaemonSets, whose pods are one per node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pods {
    pub pods: u64,
    /// DaemonSets (each one pod per node; the node count is not in manifests).
    pub per_node: u64,
}

impl Pods {
    fn add(&mut self, a: &Affected) {
        if a.per_node {
            self.per_node += u64::from(a.pods);
        } else {
            self.pods += u64::from(a.pods);
        }
    }
}

impl fmt::Display for Pods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pods, self.per_node) {
            (n, 0) => write!(f, "{n}"),
            (0, d) => write!(f, "{d} per node"),
            (n, d) => write!(f, "{n} + {d} per node"),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Empty for the total.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub affected: usize,
    pub unaffected: usize,
    /// Replicas of workloads whose new pods are blocked: lost pods are not replaced.
    pub cannot_be_replaced: Pods,
    /// Replicas of workloads whose new pods would start from a fallback Secret.
    pub from_fallback: Pods,
    /// The earliest moment a running pod may go stale, and which workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_stale: Option<FirstStale>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FirstStale {
    /// Its window as the timing model words it, e.g. `within 2m`, `after 9m–10m`.
    pub stale: String,
    pub earliest_seconds: u64,
    pub latest_seconds: u64,
    /// `namespace/Kind/name`.
    pub workload: String,
}

impl Totals {
    fn add(&mut self, a: &Affected) {
        self.affected += 1;
        match a.new_pods {
            NewPods::Blocked => self.cannot_be_replaced.add(a),
            NewPods::FromFallback => self.from_fallback.add(a),
            NewPods::Start => {}
        }
        // The smallest earliest moment; of equal ones, the smallest latest (surely stale first).
        if let Stale::Between(earliest, latest) = a.stale_model {
            let key = (earliest.as_secs(), latest.as_secs());
            if self.first_stale.as_ref().is_none_or(|f| key < (f.earliest_seconds, f.latest_seconds)) {
                self.first_stale = Some(FirstStale {
                    earliest_seconds: key.0,
                    latest_seconds: key.1,
                    workload: format!("{}/{}/{}", a.namespace, a.kind, a.name),
                    stale: a.stale.clone(),
                });
            }
        }
    }
}

/// "Keep serving" (every mode), and until when the values are fresh.
fn running_pods(stale: &Stale) -> String {
    match stale {
        Stale::Between(a, b) if a.is_zero() => format!("keep serving, fresh for up to {}", duration::format(*b)),
        Stale::Between(a, b) if a == b => format!("keep serving, fresh for {}", duration::format(*a)),
        Stale::Between(a, b) => {
            format!("keep serving, fresh for {}–{}", duration::format(*a), duration::format(*b))
        }
        Stale::Never => "keep serving, values fixed at start".to_string(),
        Stale::Unknown => "keep serving, freshness unknown".to_string(),
    }
}

/// Computes the blast radius of `down` over the report's workloads and adds an SM015 error
/// finding per workload and met `fail_on` condition (recounting the summary).
pub fn apply(report: &mut Report, down: &BTreeSet<String>, fail_on: &[FailOn]) {
    let mut affected = Vec::new();
    let mut unaffected = Vec::new();
    let mut findings = Vec::new();
    for w in &report.workloads {
        let f = &w.facts;
        // `--cluster`: the pods of one controller count as one workload (when they agree).
        let (kind, name) = match f.controller.as_deref().and_then(|o| o.split_once('/')) {
            Some((kind, name)) => (kind.to_string(), name.to_string()),
            None => (w.kind.clone(), w.name.clone()),
        };
        let (Some(mode), Some(choice), Some(provider)) = (w.mode, f.choice, &f.provider) else {
            let why = if w.webhook == "deny" {
                "the webhook denies it: no pod starts, provider or not".to_string()
            } else if w.mode.is_none() {
                "no mode".to_string()
            } else {
                format!("no delivery plan (webhook: {})", w.webhook)
            };
            unaffected.push(Unaffected { namespace: w.namespace.clone(), kind, name, why });
            continue;
        };
        let label = match provider {
            Attribution::Provider(p) if down.contains(p) => p.clone(),
            Attribution::Provider(p) => {
                unaffected.push(Unaffected {
                    namespace: w.namespace.clone(),
                    kind,
                    name,
                    why: format!("provider {p}"),
                });
                continue;
            }
            Attribution::Unknown(why) => format!("provider not known: {why}"),
        };
        let outage = timing::outage(&choice);
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs());
        let latest = match outage.stale {
            Stale::Between(_, b) => Some(b),
            Stale::Never | Stale::Unknown => None,
        };
        let a = Affected {
            namespace: w.namespace.clone(),
            kind,
            name,
            mode,
            provider: label,
            pods: f.replicas,
            per_node: f.per_node,
            running_pods: running_pods(&outage.stale),
            new_pods: outage.new_pods,
            stale: outage.stale.to_string(),
            stale_earliest_seconds: secs(outage.stale.earliest()),
            stale_latest_seconds: secs(latest),
            stale_model: outage.stale,
            known: matches!(provider, Attribution::Provider(_)),
        };
        for gate in fail_on.iter().filter(|g| g.covers(&w.namespace)) {
            if let Some(problem) = met(gate, &a, &choice.delivery, down) {
                findings.push(finding(w, &a, format!("{gate}: {problem}")));
            }
        }
        let same = |b: &&mut Affected| Affected { pods: b.pods, ..a.clone() } == **b;
        match affected.iter_mut().find(|b| f.controller.is_some() && same(b)) {
            Some(group) => group.pods = group.pods.saturating_add(a.pods),
            None => affected.push(a),
        }
    }

    affected.sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    unaffected.sort();
    unaffected.dedup();
    let mut namespaces: BTreeMap<String, Totals> = BTreeMap::new();
    let mut total = Totals::default();
    for a in &affected {
        namespaces.entry(a.namespace.clone()).or_default().add(a);
        total.add(a);
    }
    for u in &unaffected {
        namespaces.entry(u.namespace.clone()).or_default().unaffected += 1;
        total.unaffected += 1;
    }
    let namespaces = namespaces.into_iter().map(|(namespace, t)| Totals { namespace, ..t }).collect();

    findings.sort();
    findings.dedup();
    let failed = findings.len();
    report.summary.errors += failed;
    report.findings.extend(findings);
    report.findings.sort();
    report.blast_radius = Some(BlastRadius {
        down: down.iter().cloned().collect(),
        affected,
        unaffected,
        namespaces,
        total,
        fail_on: fail_on.iter().map(ToString::to_string).collect(),
        failed,
    });
}

/// Whether `gate` is met by workload `a`, as `{problem}; fix: {fix}`.
fn met(gate: &FailOn, a: &Affected, delivery: &Delivery, down: &BTreeSet<String>) -> Option<String> {
    let what = a.mode;
    // "while vault is down"; a provider not known may be any of the down ones.
    let (down, when) = if a.known {
        (a.provider.clone(), "is down")
    } else if down.len() == 1 {
        (down.iter().cloned().collect(), "is down (if it depends on it: its provider is not known)")
    } else {
        (
            down.iter().cloned().collect::<Vec<_>>().join(", "),
            "are down (if it depends on one: its provider is not known)",
        )
    };
    match gate.condition {
        Condition::Blocked if a.new_pods == NewPods::Blocked => {
            let fix = match a.mode {
                Mode::Init | Mode::Sidecar => "add secrets/fallback-secret or use mode eso",
                Mode::Csi => "use mode eso (the synced Secret is the cache), or init/sidecar with secrets/fallback-secret",
                Mode::Eso => "use mode eso",
            };
            Some(format!("new {what} pods cannot start while {down} {when}; fix: {fix}"))
        }
        Condition::Fallback if a.new_pods == NewPods::FromFallback => Some(format!(
            "new {what} pods would start from the fallback Secret while {down} {when}; fix: use mode eso (ESO keeps its Secret in sync) if serving a fallback's older values is not acceptable"
        )),
        Condition::StaleWithin(limit) => {
            let fix = match delivery {
                Delivery::Sidecar { .. } => format!(
                    "raise secrets/max-staleness (or lower secrets/refresh-interval) so that max-staleness minus refresh-interval is at least {}",
                    duration::format(limit)
                ),
                Delivery::Eso { .. } => format!(
                    "an ESO refresh may be due as the outage starts; use mode sidecar with secrets/max-staleness at least {} above its refresh interval",
                    duration::format(limit)
                ),
                Delivery::Csi { .. } => format!(
                    "a CSI rotation poll may be due as the outage starts; use mode sidecar with secrets/max-staleness at least {} above its refresh interval",
                    duration::format(limit)
                ),
                Delivery::Init => String::new(),
            };
            match a.stale_model {
                Stale::Between(earliest, _) if earliest < limit => Some(format!(
                    "running {what} pods may go stale {} (sooner than {}) while {down} {when}; fix: {fix}",
                    a.stale,
                    duration::format(limit)
                )),
                Stale::Unknown => Some(format!(
                    "when running {what} pods go stale is not known: no ExternalSecret writes its Secret in the \
                     input; fix: include that ExternalSecret in the input"
                )),
                Stale::Between(..) | Stale::Never => None,
            }
        }
        Condition::Unknown if !a.known => {
            // The attribution's reason may end in its own fix ("...; list it in providerLoad...").
            let (problem, fix) = match a.provider.split_once("; list it in ") {
                Some((problem, hint)) => (problem.to_string(), format!("list it in {hint}")),
                None => (
                    a.provider.clone(),
                    "include its ExternalSecret (and store) or SecretProviderClass in the input".to_string(),
                ),
            };
            Some(format!("{problem}; fix: {fix}"))
        }
        Condition::Blocked | Condition::Fallback | Condition::Unknown => None,
    }
}

/// An SM015 finding on the workload (its controller's row in `--cluster`), at its file and line.
fn finding(w: &WorkloadReport, a: &Affected, message: String) -> Finding {
    Finding {
        namespace: w.namespace.clone(),
        object: format!("{}/{}", a.kind, a.name),
        check: BLAST_GATE,
        level: Level::Error,
        message,
        file: w.file.clone(),
        line: w.line,
    }
}

// ---- rendering ----

const AFFECTED_HEADER: [&str; 8] =
    ["NAMESPACE", "WORKLOAD", "MODE", "PROVIDER", "PODS", "RUNNING PODS", "NEW PODS", "STALE"];
const TOTALS_HEADER: [&str; 6] =
    ["NAMESPACE", "AFFECTED", "UNAFFECTED", "CANNOT BE REPLACED", "FROM FALLBACK", "FIRST STALE"];

fn affected_rows(b: &BlastRadius) -> Vec<Vec<String>> {
    b.affected
        .iter()
        .map(|a| {
            vec![
                a.namespace.clone(),
                format!("{}/{}", a.kind, a.name),
                a.mode.to_string(),
                a.provider.clone(),
                if a.per_node { format!("{} per node", a.pods) } else { a.pods.to_string() },
                a.running_pods.clone(),
                a.new_pods.as_str().to_string(),
                a.stale.clone(),
            ]
        })
        .collect()
}

fn first_stale(t: &Totals) -> String {
    t.first_stale.as_ref().map_or_else(|| "never".to_string(), |f| format!("{} ({})", f.stale, f.workload))
}

fn totals_rows(b: &BlastRadius) -> Vec<Vec<String>> {
    b.namespaces
        .iter()
        .chain(std::iter::once(&b.total))
        .map(|t| {
            vec![
                if t.namespace.is_empty() { "(total)".to_string() } else { t.namespace.clone() },
                t.affected.to_string(),
                t.unaffected.to_string(),
                t.cannot_be_replaced.to_string(),
                t.from_fallback.to_string(),
                first_stale(t),
            ]
        })
        .collect()
}

fn unaffected_rows(b: &BlastRadius) -> Vec<Vec<String>> {
    b.unaffected.iter().map(|u| vec![u.namespace.clone(), format!("{}/{}", u.kind, u.name), u.why.clone()]).collect()
}

/// One paragraph: what is down, what depends on it, the totals and the gate.
pub fn summary(b: &BlastRadius) -> String {
    let t = &b.total;
    let unknown = b.affected.iter().filter(|a| !a.known).count();
    let it = if b.down.len() > 1 { "them" } else { "it" };
    let mut s = format!(
        "Assuming {} down: {} workloads depend on {it}{}; {} unaffected. Pods that cannot be replaced: {}; \
         pods that would serve from a fallback: {}; the first pod goes stale: {}.",
        b.down.join(", "),
        t.affected,
        if unknown > 0 {
            format!(" ({unknown} of them: provider not known, counted as depending on {it})")
        } else {
            String::new()
        },
        t.unaffected,
        t.cannot_be_replaced,
        t.from_fallback,
        first_stale(t),
    );
    if t.cannot_be_replaced.per_node > 0 || t.from_fallback.per_node > 0 {
        s.push_str(" DaemonSets count as one pod per node.");
    }
    if !b.fail_on.is_empty() {
        s.push_str(&format!(" --fail-on {}: {} met (SM015).", b.fail_on.join(", "), b.failed));
    }
    s
}

/// The table format's section.
pub fn table(b: &BlastRadius, aligned: impl Fn(Vec<String>, Vec<Vec<String>>) -> String) -> String {
    let mut out = format!("BLAST RADIUS: {} down\n", b.down.join(", "));
    out.push_str(&aligned(AFFECTED_HEADER.map(String::from).to_vec(), affected_rows(b)));
    out.push('\n');
    out.push_str(&aligned(TOTALS_HEADER.map(String::from).to_vec(), totals_rows(b)));
    if !b.unaffected.is_empty() {
        out.push('\n');
        out.push_str(&aligned(["NAMESPACE", "UNAFFECTED", "WHY"].map(String::from).to_vec(), unaffected_rows(b)));
    }
    out.push('\n');
    out.push_str(&summary(b));
    out.push('\n');
    out
}

/// The markdown format's section: the summary first, then the tables.
pub fn markdown(b: &BlastRadius, md_table: impl Fn(Vec<String>, Vec<Vec<String>>) -> String) -> String {
    let lower = |h: &[&str]| h.iter().map(|h| h.to_lowercase()).collect::<Vec<_>>();
    let mut out = format!("\n## Blast radius: {} down\n\n{}\n\n", b.down.join(", "), summary(b));
    out.push_str(&md_table(lower(&TOTALS_HEADER), totals_rows(b)));
    out.push_str("\n### Affected workloads\n\n");
    if b.affected.is_empty() {
        out.push_str("None.\n");
    } else {
        out.push_str(&md_table(lower(&AFFECTED_HEADER), affected_rows(b)));
    }
    if !b.unaffected.is_empty() {
        out.push_str("\n### Unaffected workloads\n\n");
        out.push_str(&md_table(lower(&["namespace", "workload", "why"]), unaffected_rows(b)));
    }
    out
}

/// The SARIF run's `properties.blastRadius`: the totals (the SM015 results carry the gate).
pub fn sarif_properties(b: &BlastRadius) -> serde_json::Value {
    serde_json::json!({
        "down": b.down,
        "failOn": b.fail_on,
        "failed": b.failed,
        "total": b.total,
        "namespaces": b.namespaces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_on_values_parse_and_print_back() {
        for text in
            ["blocked", "fallback", "unknown", "stale-within=30m", "blocked@prod-*", "stale-within=1h30m@team-?"]
        {
            let parsed: FailOn = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.to_string(), text);
        }
        let scoped: FailOn = "fallback@prod-*".parse().unwrap();
        assert_eq!(scoped.condition, Condition::Fallback);
        assert!(scoped.covers("prod-payments") && !scoped.covers("dev-tools") && !scoped.covers("prod"));
        assert!("blocked".parse::<FailOn>().unwrap().covers("anything"));
        assert_eq!(
            "stale-within=90s".parse::<FailOn>().unwrap().condition,
            Condition::StaleWithin(Duration::from_secs(90))
        );
    }

    #[test]
    fn bad_fail_on_values_name_the_fix() {
        for (text, says) in [
            ("blockd", "\"blockd\" is not a condition; fix: use blocked, fallback"),
            ("stale-within", "\"stale-within\" is not a condition"),
            ("stale-within=soon", "stale-within: \"soon\" is not a duration"),
            ("stale-within=0s", "can never be met; fix: a positive duration"),
            ("blocked@Prod", "\"Prod\" is not a namespace name or glob"),
            ("blocked@", "\"\" is not a namespace name or glob"),
        ] {
            let err = text.parse::<FailOn>().expect_err(text);
            assert!(err.contains(says) && err.contains("fix:"), "{text}: {err}");
        }
    }

    #[test]
    fn pods_print_daemonsets_per_node() {
        assert_eq!(Pods { pods: 0, per_node: 0 }.to_string(), "0");
        assert_eq!(Pods { pods: 4, per_node: 0 }.to_string(), "4");
        assert_eq!(Pods { pods: 0, per_node: 2 }.to_string(), "2 per node");
        assert_eq!(Pods { pods: 5, per_node: 1 }.to_string(), "5 + 1 per node");
    }

    #[test]
    fn running_pods_say_until_when_they_are_fresh() {
        let m = |s: u64| Duration::from_secs(60 * s);
        assert_eq!(running_pods(&Stale::Between(Duration::ZERO, m(15))), "keep serving, fresh for up to 15m");
        assert_eq!(running_pods(&Stale::Between(m(9), m(10))), "keep serving, fresh for 9m–10m");
        assert_eq!(running_pods(&Stale::Never), "keep serving, values fixed at start");
        assert_eq!(running_pods(&Stale::Unknown), "keep serving, freshness unknown");
    }

    #[test]
    fn assume_down_names_the_defined_providers() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit/mixed-config.yaml");
        let config = Config::load(&path).expect("mixed config");
        let err = providers(&["vault,nope".to_string()], &config).unwrap_err();
        assert_eq!(err, "--assume-down \"nope\" is not a provider of the config; fix: use one of aws, vault");
        let down = providers(&["vault, aws".to_string(), "vault".to_string()], &config).unwrap();
        assert_eq!(down.into_iter().collect::<Vec<_>>(), ["aws", "vault"]);
    }
}
