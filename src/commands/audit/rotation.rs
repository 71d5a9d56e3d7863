//! `audit --path`: the rotation impact of a provider path or prefix. Every workload that reads
//! it (directly, through an ExternalSecret, through a SecretProviderClass), how long until its
//! files and its app hold a new value and whether it is told — all from [`timing::rotation`] —
//! per namespace and in total, and the order to roll it in.
//!
//! Vault paths are written three ways: secretmode items are paths in the provider's KV mount
//! (`payments/db`), CSI's `secretPath` is the KV v2 API path (`secret/data/payments/db`), ESO's
//! remote keys are relative to the store's `spec.provider.vault.path`. All three, and `--path`,
//! are compared as `<mount>/<path in the mount>` (`secret/payments/db`); see [`vault_query`],
//! [`vault_api_path`] and [`eso_key`]. Other providers' names are compared as written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::analyze::{Report, WorkloadReport};
use super::sources::{Attribution, VaultStore};
use crate::config::Config;
use crate::providers::ProviderConfig;
use crate::timing::{self, Choice, Delivery, EsoRefresh, Latency};
use crate::vocabulary::duration;
use crate::vocabulary::mode::Mode;

/// One `--path` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathQuery {
    /// As given on the command line.
    pub asked: String,
    /// `PROVIDER:PATH`: only workloads reading from that config provider.
    pub provider: Option<String>,
    /// The path or prefix, without leading or trailing `/` and without a trailing `*`.
    pub path: String,
}

/// Reads `--path PATH` or `--path PROVIDER:PATH`. A prefix matches whole segments
/// (`payments` matches `payments/db`, not `payments-evil/db`); a trailing `/` or `*` is accepted.
/// The error says what is wrong and how to write it.
pub fn parse_path(text: &str, config: &Config) -> Result<PathQuery, String> {
    let names = || config.providers.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
    let (provider, rest) = match text.split_once(':') {
        Some((p, rest)) if config.providers.contains_key(p) => (Some(p.to_string()), rest),
        // `arn:aws:...` is an AWS secret's ARN, not a provider prefix.
        Some((p, _)) if !p.is_empty() && !p.contains('/') && p != "arn" => {
            return Err(format!(
                "--path {text:?}: {p:?} is not a provider of the config ({}); fix: write PROVIDER:PATH with one of them, or the path alone",
                names()
            ))
        }
        _ => (None, text),
    };
    let path = rest.trim().trim_end_matches('*').trim_matches('/');
    if path.contains('*') {
        return Err(format!(
            "--path {text:?}: only a trailing * is understood (a prefix); fix: cut the path before the first *"
        ));
    }
    if path.is_empty() {
        return Err(format!(
            "--path {text:?} names no path; fix: give a provider path or prefix, e.g. payments/db or vault:payments/"
        ));
    }
    if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(format!(
            "--path {text:?} has an empty, . or .. segment; fix: write the path as the provider stores it, e.g. payments/db"
        ));
    }
    Ok(PathQuery { asked: text.to_string(), provider, path: path.to_string() })
}

/// What `--path` prints: the asked paths, the workloads reading them, totals, the roll order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationReport {
    pub paths: Vec<AskedPath>,
    pub workloads: Vec<RotationRow>,
    pub namespaces: Vec<RotationTotals>,
    pub total: RotationTotals,
    /// The steps to roll a new value without breaking anyone; empty when nobody reads it.
    pub roll_order: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AskedPath {
    pub asked: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// How it is compared, per provider in scope: `vault: secret/payments/db`, `aws: payments/db`.
    pub compared_as: Vec<String>,
    /// Workloads reading it or something under it.
    pub workloads: usize,
}

/// One workload reading an asked path.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationRow {
    pub namespace: String,
    /// `Kind/name`.
    pub workload: String,
    pub mode: Mode,
    /// `direct`, `ExternalSecret/<name>` or `SecretProviderClass/<name>`.
    pub via: String,
    /// The config provider, or `unknown`.
    pub provider: String,
    /// Its reads under an asked path, as the workload (or its ExternalSecret or class) writes them.
    pub reads: Vec<String>,
    /// The same reads in the form they were compared in.
    pub compared_as: Vec<String>,
    /// The asked paths they fall under.
    pub paths: Vec<String>,
    /// Pods (per node for a DaemonSet; each pod once with `--cluster`).
    pub pods: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub per_node: bool,
    /// Worst case until the files hold the new value: `≤ 16m30s`, `on restart`, ...
    pub files: String,
    pub files_seconds: Option<u64>,
    /// Worst case until the app holds it (a restart for env values).
    pub app: String,
    pub app_seconds: Option<u64>,
    /// Whether on-change tells the app, and within how long.
    pub told: bool,
    pub told_within_seconds: Option<u64>,
    /// The parts of `files`, e.g. `ESO refresh 15m + kubelet sync ≤ 1m30s`.
    pub why: String,
    /// What the platform team does for this workload to pick the value up.
    pub action: String,
    /// An assumption the comparison made (e.g. a store not in the input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `--cluster`: the pods of the row, grouped by their controller.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pod_names: Vec<String>,
    /// The pod's controller, to group by (`--cluster`).
    #[serde(skip)]
    pub controller: Option<String>,
}

/// Per namespace (`namespace` set) or in total (`namespace` empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationTotals {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub workloads: usize,
    /// Pods of workloads with a replica count; DaemonSets are counted in `perNodeWorkloads`.
    pub pods: u32,
    pub per_node_workloads: usize,
    /// The workload whose app sees the value last among those that see it by themselves.
    pub slowest: Option<String>,
    pub slowest_seconds: Option<u64>,
    /// Workloads whose app sees it only after a restart.
    pub only_on_restart: usize,
    /// `eso` with `refreshInterval: 0`: only after the ExternalSecret is synced again.
    pub only_on_external_secret_change: usize,
    /// No ExternalSecret in the input writes their Secret.
    pub unknown: usize,
}

/// Which workloads of `report` read the `queries`, and when they see a new value.
pub fn impact(report: &Report, queries: &[PathQuery], config: &Config) -> RotationReport {
    let facts = config.cluster.facts();
    let mounts = known_mounts(report, config);
    let mut rows = Vec::new();
    let mut per_query = vec![0usize; queries.len()];
    for w in &report.workloads {
        let (Some(choice), Some(mode)) = (w.facts.choice, w.mode) else { continue };
        let attribution = w.facts.provider.clone();
        let (mut reads, mut compared, mut paths, mut note) = (Vec::new(), Vec::new(), BTreeSet::new(), None);
        for read in &w.facts.reads {
            let (forms, n) = read_forms(w, mode, read, attribution.as_ref(), &mounts, config);
            note = note.or(n);
            let mut hit = false;
            for (i, q) in queries.iter().enumerate() {
                let Some(qforms) = query_forms(q, attribution.as_ref(), &mounts, config) else { continue };
                if forms.iter().any(|f| qforms.iter().any(|q| under(f, q))) {
                    hit = true;
                    paths.insert(i);
                }
            }
            if hit {
                reads.push(read.clone());
                compared.push(forms[0].clone());
            }
        }
        if paths.is_empty() {
            continue;
        }
        for &i in &paths {
            per_query[i] += 1;
        }
        rows.push(row(
            w,
            mode,
            &choice,
            reads,
            compared,
            paths.iter().map(|&i| queries[i].asked.clone()).collect(),
            note,
            &facts,
        ));
    }
    if report.source == "cluster" {
        rows = by_controller(rows);
    }
    let mut namespaces: BTreeMap<&str, Vec<&RotationRow>> = BTreeMap::new();
    for r in &rows {
        namespaces.entry(&r.namespace).or_default().push(r);
    }
    let namespaces: Vec<RotationTotals> = namespaces
        .into_iter()
        .map(|(ns, rs)| RotationTotals { namespace: ns.to_string(), ..totals(&rs, false) })
        .collect();
    let total = totals(&rows.iter().collect::<Vec<_>>(), true);
    let paths = queries
        .iter()
        .zip(per_query)
        .map(|(q, workloads)| AskedPath {
            asked: q.asked.clone(),
            provider: q.provider.clone(),
            compared_as: compared_as(q, &mounts, config),
            workloads,
        })
        .collect();
    let roll_order = roll_order(&rows, &facts);
    RotationReport { paths, workloads: rows, namespaces, total, roll_order }
}

/// The Vault KV mounts the input knows: each Vault provider's `kvMount` and each Vault
/// store's `path`, longest first (so `kv/team` wins over `kv`).
fn known_mounts(report: &Report, config: &Config) -> Vec<String> {
    let mut mounts: BTreeSet<String> = config
        .providers
        .values()
        .filter_map(|p| match p {
            ProviderConfig::Vault(v) => Some(v.kv_mount.trim_matches('/').to_string()),
            _ => None,
        })
        .collect();
    mounts.extend(report.workloads.iter().filter_map(|w| w.facts.eso_vault_store.as_ref()?.path.clone()));
    let mut mounts: Vec<String> = mounts.into_iter().filter(|m| !m.is_empty()).collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

/// `rest` when `path` is `prefix` or lies under it by whole segments.
fn strip_segments<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    match path.strip_prefix(prefix) {
        Some("") => Some(""),
        Some(rest) => rest.strip_prefix('/'),
        None => None,
    }
}

/// Whether `read` is `prefix` or under it, by whole segments.
fn under(read: &str, prefix: &str) -> bool {
    strip_segments(read, prefix).is_some()
}

fn join(mount: &str, rest: &str) -> String {
    if rest.is_empty() {
        mount.to_string()
    } else {
        format!("{mount}/{rest}")
    }
}

/// `--path` for a Vault provider with KV mount `mount`: written as secretmode items are
/// (`payments/db`, in the mount), or mount-qualified as `vault kv get` takes it
/// (`secret/payments/db`), or as the API path (`secret/data/payments/db`). A path that starts
/// with the provider's mount or another known mount (`mounts`: ESO stores' paths) is read as
/// mount-qualified.
pub fn vault_query(path: &str, mount: &str, mounts: &[String]) -> String {
    // Mount-qualified with another known mount (a store's `path`) reads from that mount.
    for m in std::iter::once(mount).chain(mounts.iter().map(String::as_str)) {
        if let Some(rest) = strip_segments(path, &format!("{m}/data")) {
            return join(m, rest);
        }
        if strip_segments(path, m).is_some() {
            return path.to_string();
        }
    }
    join(mount, path)
}

/// A KV v2 API path (CSI's `secretPath`): `<mount>/data/<path>` → `<mount>/<path>`, for the
/// longest known mount, else at the first `/data/`; a path without one (KV v1) is its own form.
pub fn vault_api_path(path: &str, mounts: &[String]) -> String {
    let path = path.trim_matches('/');
    for m in mounts {
        if let Some(rest) = strip_segments(path, &format!("{m}/data")) {
            return join(m, rest);
        }
    }
    match path.split_once("/data/") {
        Some((mount, rest)) => join(mount, rest),
        None => path.to_string(),
    }
}

/// An ESO remote key, as ESO's Vault provider builds the request: with a store `path`, a key
/// that already starts with it (and, for KV v2, `data/` after it) is cut, the rest is read
/// under the path; without one, the key starts with the mount (an API path for KV v2 if it
/// holds `/data/`).
pub fn eso_key(key: &str, mount: Option<&str>, v2: bool, mounts: &[String]) -> String {
    let key = key.trim_matches('/');
    match mount {
        Some(m) => {
            let rest = match strip_segments(key, m) {
                Some(rest) if v2 => strip_segments(rest, "data").unwrap_or(rest),
                Some(rest) => rest,
                None => key,
            };
            join(m, rest)
        }
        None if v2 => vault_api_path(key, mounts),
        None => key.to_string(),
    }
}

/// A read of `w` in its compared form(s) — the first is the one shown — and an assumption made.
fn read_forms(
    w: &WorkloadReport,
    mode: Mode,
    read: &str,
    attribution: Option<&Attribution>,
    mounts: &[String],
    config: &Config,
) -> (Vec<String>, Option<String>) {
    let raw = read.trim_matches('/').to_string();
    let vault = attribution.and_then(Attribution::provider).and_then(|p| match config.providers.get(p) {
        Some(ProviderConfig::Vault(v)) => Some(v.kv_mount.trim_matches('/')),
        _ => None,
    });
    let store = w.facts.eso_vault_store.as_ref();
    let known = attribution.is_some_and(|a| a.provider().is_some());
    let form = match (mode, vault) {
        (Mode::Init | Mode::Sidecar, Some(m)) => join(m, &raw),
        (Mode::Csi, Some(_)) => vault_api_path(&raw, mounts),
        (Mode::Eso, Some(m)) => {
            let VaultStore { path, v2 } = store.cloned().unwrap_or(VaultStore { path: Some(m.to_string()), v2: true });
            let note = store
                .is_none()
                .then(|| format!("its store is not in the input: keys read relative to kvMount {m} (KV v2)"));
            return (vec![eso_key(&raw, path.as_deref(), v2, mounts)], note);
        }
        (Mode::Eso, None) if store.is_some() && !known => {
            let s = store.cloned().unwrap_or(VaultStore { path: None, v2: true });
            eso_key(&raw, s.path.as_deref(), s.v2, mounts)
        }
        (Mode::Csi, None) if !known => vault_api_path(&raw, mounts),
        _ => raw.clone(),
    };
    let mut forms = vec![form];
    // Unattributed: also as written, so a path given either way finds it.
    if !known && forms[0] != raw {
        forms.push(raw);
    }
    (forms, None)
}

/// `q` in the form(s) compared with reads of a workload attributed to `attribution`; `None`
/// when `q` names another provider. Unattributed workloads are compared with every form.
fn query_forms(
    q: &PathQuery,
    attribution: Option<&Attribution>,
    mounts: &[String],
    config: &Config,
) -> Option<Vec<String>> {
    let form = |p: &ProviderConfig| match p {
        ProviderConfig::Vault(v) => vault_query(&q.path, v.kv_mount.trim_matches('/'), mounts),
        _ => q.path.clone(),
    };
    match attribution.and_then(Attribution::provider) {
        Some(p) => {
            if q.provider.as_deref().is_some_and(|want| want != p) {
                return None;
            }
            Some(vec![config.providers.get(p).map_or_else(|| q.path.clone(), form)])
        }
        None => {
            let mut forms = vec![q.path.clone()];
            let scope = config.providers.iter().filter(|(n, _)| q.provider.as_ref().is_none_or(|want| want == *n));
            forms.extend(scope.map(|(_, p)| form(p)));
            Some(forms)
        }
    }
}

/// How `q` is compared, per provider in scope.
fn compared_as(q: &PathQuery, mounts: &[String], config: &Config) -> Vec<String> {
    config
        .providers
        .iter()
        .filter(|(n, _)| q.provider.as_ref().is_none_or(|want| want == *n))
        .map(|(n, p)| {
            let form = match p {
                ProviderConfig::Vault(v) => vault_query(&q.path, v.kv_mount.trim_matches('/'), mounts),
                _ => q.path.clone(),
            };
            format!("{n}: {form}")
        })
        .collect()
}

fn secs(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_secs())
}

#[allow(clippy::too_many_arguments)]
fn row(
    w: &WorkloadReport,
    mode: Mode,
    choice: &Choice,
    reads: Vec<String>,
    compared_as: Vec<String>,
    paths: Vec<String>,
    note: Option<String>,
    facts: &timing::ClusterFacts,
) -> RotationRow {
    let t = timing::rotation(choice, facts);
    let es = w.facts.external_secret.clone();
    let via = match mode {
        Mode::Init | Mode::Sidecar => "direct".to_string(),
        Mode::Eso => es.as_ref().map_or_else(|| "ExternalSecret (not found)".into(), |e| format!("ExternalSecret/{e}")),
        Mode::Csi => {
            let classes = w.provider.as_deref().unwrap_or("").replace("spc/", "");
            format!("SecretProviderClass/{classes}")
        }
    };
    let provider = match &w.facts.provider {
        Some(Attribution::Provider(p)) => p.clone(),
        _ => "unknown".to_string(),
    };
    let es_name = es.as_deref().unwrap_or("?");
    let secret = w.provider.as_deref().and_then(|p| p.strip_prefix("secret/")).unwrap_or("?");
    let restart = if w.kind == "CronJob" || w.kind == "Job" { "next run" } else { "restart" };
    let action = match (t.app, choice.delivery) {
        (Latency::Within(d), _) => format!("wait ≤ {}", duration::format(d)),
        (Latency::OnRestart, Delivery::Eso { refresh: EsoRefresh::Every(d) }) => format!(
            "{restart} after the Secret refreshes (≤ {}, or force-sync ExternalSecret/{es_name})",
            duration::format(d)
        ),
        (Latency::OnRestart, Delivery::Eso { refresh: EsoRefresh::Once }) => {
            format!("force-sync ExternalSecret/{es_name}, then {restart}")
        }
        (Latency::OnRestart, Delivery::Eso { refresh: EsoRefresh::Unknown }) | (Latency::Unknown, _) => {
            format!("find what writes Secret {secret}")
        }
        (Latency::OnRestart, _) => restart.to_string(),
        (Latency::OnExternalSecretChange, _) => format!("force-sync ExternalSecret/{es_name}"),
    };
    RotationRow {
        namespace: w.namespace.clone(),
        workload: format!("{}/{}", w.kind, w.name),
        mode,
        via,
        provider,
        reads,
        compared_as,
        paths,
        pods: w.facts.replicas,
        per_node: w.facts.per_node,
        files: t.files.to_string(),
        files_seconds: secs(t.files.worst()),
        app: t.app.to_string(),
        app_seconds: secs(t.app.worst()),
        told: t.told,
        told_within_seconds: secs(t.told_within),
        why: t.why,
        action,
        note,
        pod_names: Vec::new(),
        controller: w.facts.controller.clone(),
    }
}

/// `--cluster` rows, one per pod, merged per controller when everything but the pod is the same.
fn by_controller(rows: Vec<RotationRow>) -> Vec<RotationRow> {
    let mut out: Vec<RotationRow> = Vec::new();
    for mut r in rows {
        let pod = r.workload.strip_prefix("Pod/").unwrap_or(&r.workload).to_string();
        let controller = r.controller.take();
        let Some(controller) = controller else {
            out.push(r);
            continue;
        };
        r.workload = controller;
        let same =
            |o: &RotationRow| RotationRow { pods: r.pods, pod_names: Vec::new(), controller: None, ..o.clone() } == r;
        match out.iter_mut().find(|o| same(o)) {
            Some(o) => {
                o.pods += r.pods;
                o.pod_names.push(pod);
            }
            None => {
                r.pod_names.push(pod);
                out.push(r);
            }
        }
    }
    // Pods of one controller that differ (a rollout half done, an uninjected pod) keep their
    // own rows, each naming its pods.
    let mut per_controller: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in out.iter().filter(|r| !r.pod_names.is_empty()) {
        *per_controller.entry((r.namespace.clone(), r.workload.clone())).or_default() += 1;
    }
    for r in out.iter_mut() {
        if per_controller.get(&(r.namespace.clone(), r.workload.clone())).is_some_and(|n| *n > 1) {
            r.workload = format!("{} [{}]", r.workload, r.pod_names.join(", "));
        }
    }
    out.sort_by(|a, b| (&a.namespace, &a.workload).cmp(&(&b.namespace, &b.workload)));
    out
}

fn totals(rows: &[&RotationRow], qualified: bool) -> RotationTotals {
    let mut t = RotationTotals { workloads: rows.len(), ..RotationTotals::default() };
    for r in rows {
        if r.per_node {
            t.per_node_workloads += 1;
        } else {
            t.pods = t.pods.saturating_add(r.pods);
        }
        match r.app_seconds {
            Some(s) if t.slowest_seconds.is_none_or(|worst| s > worst) => {
                let name = if qualified { format!("{}/{}", r.namespace, r.workload) } else { r.workload.clone() };
                t.slowest = Some(format!("{name} {}", r.app));
                t.slowest_seconds = Some(s);
            }
            Some(_) => {}
            None if r.app == Latency::OnRestart.to_string() => t.only_on_restart += 1,
            None if r.app == Latency::OnExternalSecretChange.to_string() => t.only_on_external_secret_change += 1,
            None => t.unknown += 1,
        }
    }
    t
}

/// The order to roll a new value so that no workload is left holding one that no longer works:
/// overlap (old and new both valid) for the slowest worst case, then restarts, then revoke.
fn roll_order(rows: &[RotationRow], facts: &timing::ClusterFacts) -> Vec<String> {
    if rows.is_empty() {
        return Vec::new();
    }
    let name = |r: &RotationRow| format!("{}/{}", r.namespace, r.workload);
    let mut steps = vec!["Write the new value beside the old one and keep both valid (a second key, a second \
        credential): the workloads below pick it up at different times, and the old one must keep working \
        until the last step."
        .to_string()];
    let sync: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.action.starts_with("force-sync"))
        .filter_map(|r| {
            r.via.strip_prefix("ExternalSecret/").map(|es| {
                format!("`kubectl -n {} annotate externalsecret {es} force-sync=$(date +%s) --overwrite`", r.namespace)
            })
        })
        .collect();
    if !sync.is_empty() {
        steps.push(format!(
            "Force a sync of the ExternalSecrets with refreshInterval 0 (ESO never re-reads the provider for them by \
             itself): {}; the kubelet then updates mounted files within {}.",
            sync.into_iter().collect::<Vec<_>>().join(", "),
            duration::format(facts.kubelet_sync_worst())
        ));
    }
    // Until every file is rewritten: the slowest finite latency of the files (an ESO Secret read
    // as env values is refreshed by then too, so its restart comes after).
    let slowest_files = rows.iter().filter_map(|r| Some((r.files_seconds?, r))).max_by_key(|(s, _)| *s);
    if let Some((s, r)) = slowest_files {
        let finite: Vec<&RotationRow> = rows.iter().filter(|r| r.app_seconds.is_some()).collect();
        let told = finite.iter().filter(|r| r.told).count();
        steps.push(format!(
            "Wait {} — the slowest worst case, {} ({}): by then the {} workload(s) that refresh by themselves hold \
             the new value ({told} told by on-change, the others must re-read their files) and every refreshing \
             ExternalSecret has rewritten its Secret.",
            duration::format(Duration::from_secs(s)),
            name(r),
            r.why,
            finite.len(),
        ));
    }
    let on_restart = Latency::OnRestart.to_string();
    let restarts: Vec<String> =
        rows.iter().filter(|r| r.app == on_restart && !r.action.starts_with("find")).map(name).collect();
    if !restarts.is_empty() {
        steps.push(format!(
            "Then restart {} (`kubectl rollout restart`; a CronJob's next run does it): they take values only at \
             start (init, CSI without rotation, env values).",
            restarts.join(", ")
        ));
    }
    let unknown: Vec<String> = rows.iter().filter(|r| r.action.starts_with("find")).map(name).collect();
    if !unknown.is_empty() {
        steps.push(format!(
            "Check {}: no ExternalSecret in the input writes their Secret, so when they see the value is unknown.",
            unknown.join(", ")
        ));
    }
    steps.push(
        "Only then revoke the old value: the overlap (old and new both valid) covers every step above, end to end."
            .to_string(),
    );
    steps
}

const HEADER: [&str; 12] =
    ["NAMESPACE", "WORKLOAD", "MODE", "VIA", "PROVIDER", "READS", "PODS", "FILES", "APP", "TOLD", "ACTION", "WHY"];

fn cells(r: &RotationRow) -> Vec<String> {
    let told = match (r.told, r.told_within_seconds) {
        (true, Some(s)) => format!("yes, ≤ {}", duration::format(Duration::from_secs(s))),
        (true, None) => "yes".to_string(),
        (false, _) => "no".to_string(),
    };
    let mut why = r.why.clone();
    if let Some(note) = &r.note {
        why.push_str(&format!("; {note}"));
    }
    vec![
        r.namespace.clone(),
        r.workload.clone(),
        r.mode.to_string(),
        r.via.clone(),
        r.provider.clone(),
        r.reads.join(","),
        if r.per_node { format!("{}/node", r.pods) } else { r.pods.to_string() },
        r.files.clone(),
        r.app.clone(),
        told,
        r.action.clone(),
        why,
    ]
}

const TOTALS_HEADER: [&str; 6] = ["NAMESPACE", "WORKLOADS", "PODS", "SLOWEST", "ONLY ON RESTART", "NOT BY ITSELF"];

fn pods(t: &RotationTotals) -> String {
    match t.per_node_workloads {
        0 => t.pods.to_string(),
        n => format!("{} + {n} per node", t.pods),
    }
}

fn totals_cells(t: &RotationTotals, label: &str) -> Vec<String> {
    let other = t.only_on_external_secret_change + t.unknown;
    vec![
        label.to_string(),
        t.workloads.to_string(),
        pods(t),
        t.slowest.clone().unwrap_or_else(|| "-".into()),
        t.only_on_restart.to_string(),
        if other == 0 {
            "0".into()
        } else {
            format!("{other} (ExternalSecret sync {}, unknown {})", t.only_on_external_secret_change, t.unknown)
        },
    ]
}

/// One sentence per asked path, then the totals.
fn summary(r: &RotationReport) -> String {
    let mut out = String::new();
    for p in &r.paths {
        let how = p.compared_as.join(", ");
        if p.workloads == 0 {
            let _ = writeln!(out, "{}: no workload reads it (compared as {how}).", p.asked);
        } else {
            let _ = writeln!(out, "{}: read by {} workload(s) (compared as {how}).", p.asked, p.workloads);
        }
    }
    if !r.workloads.is_empty() {
        let t = &r.total;
        let _ = writeln!(
            out,
            "In total {} workload(s), {} pod(s); slowest to see it by itself: {}; {} only on restart{}.",
            t.workloads,
            pods(t),
            t.slowest.as_deref().unwrap_or("none"),
            t.only_on_restart,
            match t.only_on_external_secret_change + t.unknown {
                0 => String::new(),
                n => format!(", {n} only after an ExternalSecret sync or unknown"),
            }
        );
    }
    out
}

/// The `--path` section of the table output.
pub fn table(r: &RotationReport, aligned: impl Fn(Vec<String>, Vec<Vec<String>>) -> String) -> String {
    let mut out = format!("ROTATION IMPACT\n{}", summary(r));
    if r.workloads.is_empty() {
        return out;
    }
    out.push('\n');
    out.push_str(&aligned(HEADER.map(String::from).to_vec(), r.workloads.iter().map(cells).collect()));
    out.push('\n');
    let mut rows: Vec<Vec<String>> = r.namespaces.iter().map(|t| totals_cells(t, &t.namespace)).collect();
    rows.push(totals_cells(&r.total, "total"));
    out.push_str(&aligned(TOTALS_HEADER.map(String::from).to_vec(), rows));
    out.push_str("\nRoll order:\n");
    for (i, s) in r.roll_order.iter().enumerate() {
        let _ = writeln!(out, "  {}. {s}", i + 1);
    }
    out
}

/// The `--path` section of the Markdown output: the summary, the roll order, then the tables.
pub fn markdown(r: &RotationReport, md_table: impl Fn(Vec<String>, Vec<Vec<String>>) -> String) -> String {
    let mut out = String::from("\n## Rotation impact\n\n");
    for line in summary(r).lines() {
        let _ = writeln!(out, "{line}  ");
    }
    if r.workloads.is_empty() {
        return out;
    }
    out.push_str("\n### Roll order\n\n");
    for (i, s) in r.roll_order.iter().enumerate() {
        let _ = writeln!(out, "{}. {s}", i + 1);
    }
    out.push_str("\n### Workloads\n\n");
    let header = HEADER.iter().map(|h| h.to_lowercase()).collect();
    out.push_str(&md_table(header, r.workloads.iter().map(cells).collect()));
    out.push_str("\n### Per namespace\n\n");
    let mut rows: Vec<Vec<String>> = r.namespaces.iter().map(|t| totals_cells(t, &t.namespace)).collect();
    rows.push(totals_cells(&r.total, "total"));
    out.push_str(&md_table(TOTALS_HEADER.iter().map(|h| h.to_lowercase()).collect(), rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_yaml(crate::config::DEFAULT_CONFIG_YAML, "test").unwrap()
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(under("secret/payments/db", "secret/payments"));
        assert!(under("secret/payments", "secret/payments"));
        assert!(!under("secret/payments-evil/db", "secret/payments"));
        assert!(!under("secret/pay", "secret/payments"));
    }

    #[test]
    fn the_three_vault_forms_meet() {
        let mounts = vec!["secret".to_string()];
        let want = "secret/payments/db";
        assert_eq!(vault_query("payments/db", "secret", &mounts), want);
        assert_eq!(vault_query("secret/payments/db", "secret", &mounts), want);
        assert_eq!(vault_query("secret/data/payments/db", "secret", &mounts), want);
        let with_kv = vec!["secret".to_string(), "kv".to_string()];
        assert_eq!(vault_query("kv/data/payments/db", "secret", &with_kv), "kv/payments/db", "another known mount");
        assert_eq!(vault_query("kv/payments/db", "secret", &mounts), "secret/kv/payments/db", "kv is not a mount here");
        assert_eq!(vault_api_path("secret/data/payments/db", &mounts), want);
        assert_eq!(vault_api_path("/kv/data/payments/db", &mounts), "kv/payments/db", "unknown mount: at /data/");
        assert_eq!(vault_api_path("kv1/payments/db", &mounts), "kv1/payments/db", "KV v1: as written");
        // ESO: relative to the store path; a key repeating the mount (and data/) is cut, as ESO does.
        assert_eq!(eso_key("payments/db", Some("secret"), true, &mounts), want);
        assert_eq!(eso_key("secret/payments/db", Some("secret"), true, &mounts), want);
        assert_eq!(eso_key("secret/data/payments/db", Some("secret"), true, &mounts), want);
        assert_eq!(eso_key("secret/data/payments/db", Some("secret"), false, &mounts), "secret/data/payments/db");
        // No store path: the key starts with the mount.
        assert_eq!(eso_key("secret/payments/db", None, true, &mounts), want);
        assert_eq!(eso_key("secret/data/payments/db", None, true, &mounts), want);
    }

    #[test]
    fn flags_parse_with_a_provider_and_a_trailing_wildcard() {
        let c = config();
        let q = parse_path("vault:payments/*", &c).unwrap();
        assert_eq!((q.provider.as_deref(), q.path.as_str()), (Some("vault"), "payments"));
        let q = parse_path("/payments/db/", &c).unwrap();
        assert_eq!((q.provider, q.path.as_str()), (None, "payments/db"));
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/api-AbCdEf";
        assert_eq!(parse_path(arn, &c).unwrap().path, arn);
    }

    fn pod_row(pod: &str, controller: &str, app: &str) -> RotationRow {
        RotationRow {
            namespace: "shop".into(),
            workload: format!("Pod/{pod}"),
            mode: Mode::Sidecar,
            via: "direct".into(),
            provider: "vault".into(),
            reads: vec!["payments/db".into()],
            compared_as: vec!["secret/payments/db".into()],
            paths: vec!["payments".into()],
            pods: 1,
            per_node: false,
            files: app.into(),
            files_seconds: None,
            app: app.into(),
            app_seconds: None,
            told: false,
            told_within_seconds: None,
            why: String::new(),
            action: String::new(),
            note: None,
            pod_names: Vec::new(),
            controller: Some(controller.into()),
        }
    }

    #[test]
    fn identical_pods_of_a_controller_are_one_row() {
        let rows = by_controller(vec![
            pod_row("api-1", "Deployment/api", "≤ 1m"),
            pod_row("api-2", "Deployment/api", "≤ 1m"),
            pod_row("api-3", "Deployment/api", "≤ 5m"),
            pod_row("db-0", "StatefulSet/db", "≤ 1m"),
        ]);
        let got: Vec<(&str, u32, Vec<String>)> =
            rows.iter().map(|r| (r.workload.as_str(), r.pods, r.pod_names.clone())).collect();
        assert_eq!(
            got,
            [
                ("Deployment/api [api-1, api-2]", 2, vec!["api-1".to_string(), "api-2".to_string()]),
                ("Deployment/api [api-3]", 1, vec!["api-3".to_string()]),
                ("StatefulSet/db", 1, vec!["db-0".to_string()]),
            ]
        );
    }

    #[test]
    fn bad_flags_say_what_to_write() {
        let c = config();
        for (text, says) in [
            ("", "names no path"),
            ("*", "names no path"),
            ("vault:", "names no path"),
            ("gcp:payments", "\"gcp\" is not a provider of the config"),
            ("pay*ments", "only a trailing *"),
            ("payments//db", "empty, . or .. segment"),
            ("payments/../db", "empty, . or .. segment"),
        ] {
            let err = parse_path(text, &c).expect_err(text);
            assert!(err.contains(says) && err.contains("fix: "), "{text}: {err}");
        }
    }
}
