//! Judging workloads: the same parse → resolve → policy → admit path as the webhook, plus the
//! delivery patterns the webhook never writes but workloads do (subPath mounts, env from
//! Secrets, CSI overrides), and, for `--cluster`, live ExternalSecret and CSI state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::policy::Enforcement;
use crate::config::Config;
use crate::decide::plan::Plan;
use crate::decide::policy::{csi_volumes, CsiVolume, Violation};
use crate::decide::{self, annotations, inject, Decision, Outcome};
use crate::json::tree::JsonRef;
use crate::vocabulary::duration;
use crate::vocabulary::mode::{Mode, Outage};
use crate::vocabulary::names::{CSI_DRIVER, RESERVED_PREFIX};

use super::manifests::Object;
use super::sources::{Attribution, Sources};
use crate::decide::plan::ItemSource;
use crate::timing::{Choice, Delivery, EsoRefresh};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warning,
    Note,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Note => "note",
        }
    }
}

/// A kind of finding; its id is stable for SARIF consumers and suppressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub name: &'static str,
    #[serde(skip)]
    pub description: &'static str,
}

pub const POLICY_VIOLATION: Check = Check {
    id: "SM001",
    name: "policy-violation",
    description: "The workload breaks a policy rule of its namespace (level follows the rule's enforcement).",
};
pub const WEBHOOK_DENIAL: Check = Check {
    id: "SM002",
    name: "webhook-denial",
    description: "The webhook would deny this pod (invalid annotations, collisions, malformed spec).",
};
pub const CSI_EXTRA_ATTRIBUTES: Check = Check {
    id: "SM003",
    name: "csi-extra-attributes",
    description: "A secrets-store CSI volume sets volumeAttributes besides secretProviderClass, overriding the class.",
};
pub const CSI_NOT_READ_ONLY: Check = Check {
    id: "SM004",
    name: "csi-not-read-only",
    description: "A secrets-store CSI volume is not readOnly: true; the driver refuses to mount it.",
};
pub const SUBPATH_SECRET: Check = Check {
    id: "SM005",
    name: "secret-subpath-mount",
    description: "A Secret or CSI volume is mounted with subPath, which never sees rotation.",
};
pub const ENV_FROM_SECRET: Check = Check {
    id: "SM006",
    name: "env-from-secret",
    description: "Environment variables from a Secret are read once at container start and never rotate.",
};
pub const NO_MODE: Check = Check {
    id: "SM007",
    name: "no-mode",
    description: "The workload uses Secrets but declares no secretmode mode: its failure mode is unmanaged.",
};
pub const NOT_INJECTED: Check = Check {
    id: "SM008",
    name: "not-injected",
    description: "A running pod opted in but carries no injection (created while the webhook was bypassed).",
};
pub const MISSING_SPC: Check = Check {
    id: "SM009",
    name: "missing-secret-provider-class",
    description: "A pod references a SecretProviderClass that does not exist in its namespace.",
};
pub const ES_NOT_READY: Check = Check {
    id: "SM010",
    name: "externalsecret-not-ready",
    description: "An ExternalSecret's Ready condition is not True.",
};
pub const ES_STALE: Check = Check {
    id: "SM011",
    name: "externalsecret-stale",
    description: "An ExternalSecret's last refresh is older than its refreshInterval.",
};
pub const ES_PENDING: Check = Check {
    id: "SM012",
    name: "externalsecret-pending-change",
    description: "An ExternalSecret's spec changed since its last sync (syncedResourceVersion is behind).",
};
pub const API_MISSING: Check = Check {
    id: "SM013",
    name: "api-not-served",
    description: "An API the audit reads is not served by the cluster (CRD not installed).",
};

pub const FILES_UNREADABLE: Check = Check {
    id: "SM014",
    name: "files-unreadable",
    description: "The app runs as a non-root user whose group cannot read the injected files (mode 0440).",
};

pub const BLAST_GATE: Check = Check {
    id: "SM015",
    name: "blast-radius-gate",
    description:
        "With --assume-down, a workload meets a --fail-on condition (blocked, fallback, stale-within, unknown).",
};

pub const PROVIDER_BUDGET: Check = Check {
    id: "SM016",
    name: "provider-budget",
    description: "A namespace's workloads together take more provider requests per second than its policy rule's maxProviderRequestsPerSecond (level follows the rule's enforcement).",
};

pub const CHECKS: [Check; 16] = [
    POLICY_VIOLATION,
    WEBHOOK_DENIAL,
    CSI_EXTRA_ATTRIBUTES,
    CSI_NOT_READ_ONLY,
    SUBPATH_SECRET,
    ENV_FROM_SECRET,
    NO_MODE,
    NOT_INJECTED,
    MISSING_SPC,
    ES_NOT_READY,
    ES_STALE,
    ES_PENDING,
    API_MISSING,
    FILES_UNREADABLE,
    BLAST_GATE,
    PROVIDER_BUDGET,
];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub namespace: String,
    /// `Kind/name`; empty for findings about the cluster as a whole.
    pub object: String,
    pub check: Check,
    pub level: Level,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ModeSource {
    /// `<prefix>/mode` on the pod template.
    Annotation,
    /// Items without a mode: the namespace rule's `defaultMode`.
    PolicyDefault,
    /// No annotations, but the spec has its own secrets-store CSI volume.
    HandBuilt,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResult {
    pub rule: Option<String>,
    pub enforcement: Enforcement,
    pub violations: Vec<Violation>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadReport {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub mode: Option<Mode>,
    pub mode_source: Option<ModeSource>,
    /// Provider name (`init`/`sidecar`), `secret/<name>` (`eso`) or `spc/<class>` (`csi`).
    pub provider: Option<String>,
    pub items: Vec<String>,
    /// Rendered files (`<prefix>/template.<file>`, `bundle.<file>`), each as `<file>
    /// (template)` or `<file> (<format>)`; empty (and left out of JSON) for most workloads.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rendered: Vec<String>,
    pub outage: Option<Outage>,
    pub staleness: Option<String>,
    /// Whether the app reads secret values from env (`<prefix>/env-values`, or its own
    /// `secretKeyRef`/`envFrom` of a Secret): fixed at process start, so the app sees a
    /// rotation only after a restart.
    pub env_values: bool,
    /// The `<prefix>/on-change` action, in its normalised annotation form.
    pub on_change: Option<String>,
    pub policy: PolicyResult,
    /// What the webhook does with this pod: `inject`, `unchanged`, `skip`, `mirror`, `deny`.
    pub webhook: String,
    /// `--cluster` only: `injected`, `not injected`, or `-` for pods that did not opt in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub injection: Option<String>,
    /// What `--assume-down`, `--path` and the load report compute from (not in the JSON as such).
    #[serde(skip)]
    pub facts: WorkloadFacts,
}

/// A workload's timing, replicas, provider and provider-side reads, for the questions
/// `--assume-down`, `--path` and the load report answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadFacts {
    /// The timing model's input; `None` without a mode (or a denied plan).
    pub choice: Option<Choice>,
    /// Pods it runs: `spec.replicas` (default 1), a Job's `parallelism`; one per pod in `--cluster`.
    pub replicas: u32,
    /// A DaemonSet: `replicas` is per node.
    pub per_node: bool,
    /// The config provider it depends on; `None` without a mode.
    pub provider: Option<Attribution>,
    /// Provider-side names it reads: `path` (init/sidecar), the ExternalSecret's remote keys
    /// (eso), the SecretProviderClass's objects (csi).
    pub reads: Vec<String>,
    /// Provider requests per fetch of one pod (init/sidecar: distinct paths; csi: distinct
    /// objects). `eso` pods cost the provider nothing themselves: see `eso`.
    pub requests_per_fetch: usize,
    /// `eso`: the ExternalSecret writing its Secret, whose refreshes load the provider once for
    /// all replicas.
    pub external_secret: Option<String>,
    /// `eso` through a Vault store in the input: its KV mount and version (`--path` reads the
    /// remote keys relative to it).
    pub eso_vault_store: Option<super::sources::VaultStore>,
    /// `--cluster`: the pod's controller as `Kind/name` (a ReplicaSet as its Deployment), so
    /// `--path` lists a workload once with its pod count.
    pub controller: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretReport {
    pub namespace: String,
    pub name: String,
    /// The Kubernetes Secret it writes.
    pub target: String,
    /// `True`, `False` or `Unknown` (no condition yet).
    pub ready: String,
    pub reason: Option<String>,
    pub refresh_interval: String,
    pub refresh_time: Option<String>,
    /// Age of the last refresh at audit time.
    pub age: Option<String>,
    pub stale: bool,
    /// Why the last sync does not cover the current spec, if it does not.
    pub pending: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub workloads: usize,
    /// Workloads per mode; `none` for those without one.
    pub modes: BTreeMap<String, usize>,
    pub errors: usize,
    pub warnings: usize,
    pub notes: usize,
    /// Objects that are not workloads, by kind; they are skipped, not fatal.
    pub skipped: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `manifests` or `cluster`.
    pub source: &'static str,
    pub workloads: Vec<WorkloadReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_secrets: Vec<ExternalSecretReport>,
    pub findings: Vec<Finding>,
    pub summary: Summary,
    /// `--path`: who sees a rotation of those paths, and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<super::rotation::RotationReport>,
    /// `--load`: the requests each provider takes (`load.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<super::load::LoadReport>,
    /// ExternalSecrets, stores and classes the audit read (the load report counts every
    /// ExternalSecret, mounted or not).
    #[serde(skip)]
    pub sources: Sources,
    /// `--assume-down`: what breaks while those providers are down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blast_radius: Option<super::blast::BlastRadius>,
}

impl Report {
    /// 1 when anything must stop CI (enforce-level violations, denials, broken references).
    pub fn exit_code(&self) -> u8 {
        u8::from(self.summary.errors > 0)
    }

    fn finish(mut self) -> Report {
        self.workloads.sort_by(|a, b| {
            (&a.namespace, &a.kind, &a.name, &a.file, a.line).cmp(&(&b.namespace, &b.kind, &b.name, &b.file, b.line))
        });
        self.external_secrets.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        self.findings.sort();
        self.findings.dedup();
        let s = &mut self.summary;
        s.workloads = self.workloads.len();
        for w in &self.workloads {
            *s.modes.entry(w.mode.map_or("none", Mode::as_str).to_string()).or_default() += 1;
        }
        for f in &self.findings {
            match f.level {
                Level::Error => s.errors += 1,
                Level::Warning => s.warnings += 1,
                Level::Note => s.notes += 1,
            }
        }
        self
    }
}

/// A pod template and where it came from.
struct Workload<'a> {
    namespace: String,
    kind: String,
    name: String,
    file: Option<String>,
    line: Option<usize>,
    metadata: &'a Value,
    spec: &'a Value,
    /// Pods it runs, and whether that is per node (a DaemonSet).
    replicas: (u32, bool),
}

/// Pods a workload object runs: `spec.replicas` (Kubernetes' default 1), a Job's or CronJob's
/// `parallelism` (default 1), one per node for a DaemonSet, one for a Pod or PodTemplate.
fn replicas(kind: &str, object: &Value) -> (u32, bool) {
    let count = |p: &str| object.pointer(p).and_then(Value::as_u64).map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
    match kind {
        "Deployment" | "StatefulSet" | "ReplicaSet" | "ReplicationController" => (count("/spec/replicas"), false),
        "Job" => (count("/spec/parallelism"), false),
        "CronJob" => (count("/spec/jobTemplate/spec/parallelism"), false),
        "DaemonSet" => (1, true),
        _ => (1, false),
    }
}

/// Where a kind keeps its pod template.
fn template_path(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Pod" => "",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        "PodTemplate" => "/template",
        _ => return None,
    })
}

/// What the audit knows besides the workloads themselves.
#[derive(Default)]
struct Context {
    /// ExternalSecrets, ESO stores and SecretProviderClasses, with their providers.
    sources: Sources,
    /// `Some` in `--cluster` mode when the SecretProviderClass API is served.
    provider_classes: Option<BTreeSet<(String, String)>>,
    cluster: bool,
}

/// Audits manifests. Objects without a pod template are counted by kind and skipped.
/// `Err` names objects of a workload kind whose template is missing.
pub fn analyze_manifests(objects: &[Object], default_namespace: &str, config: &Config) -> Result<Report, Vec<String>> {
    let mut report = empty("manifests");
    let mut ctx = Context::default();
    let namespace_of = |v: &Value| {
        v.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or(default_namespace)
            .to_string()
    };
    ctx.sources = Sources::read(objects.iter().map(|o| &o.value), namespace_of, config);
    let mut errors = Vec::new();
    for o in objects {
        let kind = o.value.get("kind").and_then(Value::as_str).unwrap_or("");
        let Some(path) = template_path(kind) else {
            let kind = if kind.is_empty() { "(no kind)" } else { kind };
            *report.summary.skipped.entry(kind.to_string()).or_default() += 1;
            continue;
        };
        let name = object_name(&o.value);
        let template = o.value.pointer(path).filter(|t| t.get("spec").is_some_and(Value::is_object));
        let Some(template) = template else {
            errors.push(format!("{}:{}: {kind} {name} has no pod template at {path}/spec", o.file, o.line));
            continue;
        };
        let w = Workload {
            namespace: namespace_of(&o.value),
            kind: kind.to_string(),
            name,
            file: Some(o.file.clone()),
            line: Some(o.line),
            metadata: template.get("metadata").unwrap_or(&Value::Null),
            spec: &template["spec"],
            replicas: replicas(kind, &o.value),
        };
        judge(&w, config, &ctx, &mut report);
    }
    report.sources = ctx.sources;
    if errors.is_empty() {
        Ok(report.finish())
    } else {
        Err(errors)
    }
}

/// What `--cluster` read; `None` lists were not served (CRD not installed).
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub pods: Vec<Value>,
    pub external_secrets: Option<Vec<Value>>,
    pub secret_provider_classes: Option<Vec<Value>>,
    /// SecretStores and ClusterSecretStores (`None`: not served), to tell which provider an
    /// ExternalSecret reads from.
    pub secret_stores: Option<Vec<Value>>,
}

pub fn analyze_cluster(state: &ClusterState, config: &Config, now: DateTime<Utc>) -> Report {
    let mut report = empty("cluster");
    let mut ctx = Context { cluster: true, ..Context::default() };
    let ns = |v: &Value| v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();

    let read = state.external_secrets.iter().chain(&state.secret_stores).chain(&state.secret_provider_classes);
    ctx.sources = Sources::read(read.flatten(), ns, config);
    match &state.external_secrets {
        Some(list) => {
            for es in list {
                let (row, findings) = external_secret(es, now);
                if let Some(source) = ctx.sources.external_secrets.get_mut(&(row.namespace.clone(), row.target.clone()))
                {
                    source.unhealthy = row.stale || row.ready != "True" || row.pending.is_some();
                }
                report.findings.extend(findings);
                report.external_secrets.push(row);
            }
        }
        None => report.findings.push(cluster_finding(
            API_MISSING,
            Level::Note,
            "external-secrets.io/v1 ExternalSecret is not served: ESO is not installed (or predates v1)",
        )),
    }
    match &state.secret_provider_classes {
        Some(list) => {
            ctx.provider_classes = Some(list.iter().map(|s| (ns(s), object_name(s))).collect());
        }
        None => report.findings.push(cluster_finding(
            API_MISSING,
            Level::Note,
            "secrets-store.csi.x-k8s.io/v1 SecretProviderClass is not served: the CSI driver is not installed",
        )),
    }
    for pod in &state.pods {
        let w = Workload {
            namespace: ns(pod),
            kind: "Pod".into(),
            name: object_name(pod),
            file: None,
            line: None,
            metadata: pod.get("metadata").unwrap_or(&Value::Null),
            spec: pod.get("spec").unwrap_or(&Value::Null),
            replicas: (1, false),
        };
        judge(&w, config, &ctx, &mut report);
        if let Some(last) = report.workloads.last_mut() {
            last.facts.controller = controller_of(pod);
        }
    }
    report.sources = ctx.sources;
    report.finish()
}

/// A live pod's controller, `Kind/name`: the `controller: true` owner reference; a ReplicaSet
/// named `<deployment>-<pod-template-hash>` is shown as its Deployment.
fn controller_of(pod: &Value) -> Option<String> {
    let owners = pod.pointer("/metadata/ownerReferences")?.as_array()?;
    let owner = owners.iter().find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))?;
    let kind = owner.get("kind")?.as_str()?;
    let name = owner.get("name")?.as_str()?;
    let label = pod.pointer("/metadata/labels/pod-template-hash").and_then(Value::as_str);
    // Without the label: the Deployment controller's hash suffix, in the alphabet Kubernetes
    // encodes it with (`rand.SafeEncodeString`).
    let looks_hashed =
        |h: &str| (6..=10).contains(&h.len()) && h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c));
    let deployment = match label {
        Some(h) => name.strip_suffix(h).and_then(|n| n.strip_suffix('-')),
        None => name.rsplit_once('-').filter(|(_, h)| looks_hashed(h)).map(|(n, _)| n),
    };
    match (kind, deployment) {
        ("ReplicaSet", Some(d)) if !d.is_empty() => Some(format!("Deployment/{d}")),
        _ => Some(format!("{kind}/{name}")),
    }
}

fn empty(source: &'static str) -> Report {
    Report {
        source,
        workloads: Vec::new(),
        external_secrets: Vec::new(),
        findings: Vec::new(),
        summary: Summary::default(),
        rotation: None,
        load: None,
        sources: Sources::default(),
        blast_radius: None,
    }
}

fn cluster_finding(check: Check, level: Level, message: &str) -> Finding {
    Finding {
        namespace: String::new(),
        object: String::new(),
        check,
        level,
        message: message.to_string(),
        file: None,
        line: None,
    }
}

fn object_name(v: &Value) -> String {
    let meta = v.get("metadata");
    meta.and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .or_else(|| meta.and_then(|m| m.get("generateName")).and_then(Value::as_str))
        .unwrap_or("<unnamed>")
        .to_string()
}

fn external_secret(es: &Value, now: DateTime<Utc>) -> (ExternalSecretReport, Vec<Finding>) {
    let namespace = es.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();
    let name = object_name(es);
    let target = super::sources::eso_target_name(es);
    let (refresh_interval, refresh) = super::sources::eso_refresh(es);
    let ready_condition = es
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Ready")));
    let field = |c: Option<&Value>, f: &str| c.and_then(|c| c.get(f)).and_then(Value::as_str).map(str::to_string);
    let ready = field(ready_condition, "status").unwrap_or_else(|| "Unknown".into());
    let reason = field(ready_condition, "reason");
    let refresh_time = es.pointer("/status/refreshTime").and_then(Value::as_str).map(str::to_string);

    let mut findings = Vec::new();
    let mut add = |check: Check, message: String| {
        findings.push(Finding {
            namespace: namespace.clone(),
            object: format!("ExternalSecret/{name}"),
            check,
            level: Level::Warning,
            message,
            file: None,
            line: None,
        })
    };
    if ready != "True" {
        let message = field(ready_condition, "message").unwrap_or_default();
        add(
            ES_NOT_READY,
            format!(
                "Ready is {ready} (reason {}){}{message}; pods reading Secret {target} get old or no values",
                reason.as_deref().unwrap_or("none"),
                if message.is_empty() { "" } else { ": " }
            ),
        );
    }
    // ESO refreshes periodically only for a positive interval; "once" reads as zero here.
    let interval = refresh.map(|r| match r {
        EsoRefresh::Every(d) => d,
        EsoRefresh::Once | EsoRefresh::Unknown => Duration::ZERO,
    });
    let refreshed = refresh_time.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let age = refreshed.map(|t| (now - t.with_timezone(&Utc)).to_std().unwrap_or(Duration::ZERO));
    let mut stale = false;
    match (interval, age) {
        (None, _) => {
            add(ES_STALE, format!("refreshInterval {refresh_interval:?} is not a duration; cannot judge freshness"))
        }
        (Some(i), Some(age)) if !i.is_zero() && age > i => {
            stale = true;
            add(
                ES_STALE,
                format!(
                    "last refresh {} ago, older than refreshInterval {refresh_interval}: Secret {target} may be stale",
                    duration::format(round_secs(age))
                ),
            );
        }
        (Some(i), None) if !i.is_zero() => {
            stale = true;
            add(ES_STALE, format!("never refreshed (no status.refreshTime): Secret {target} may be missing"));
        }
        _ => {}
    }
    let pending = pending_change(es);
    if let Some(p) = &pending {
        add(ES_PENDING, format!("{p}; Secret {target} does not reflect the current spec yet"));
    }
    let row = ExternalSecretReport {
        namespace,
        name,
        target,
        ready,
        reason,
        refresh_interval,
        refresh_time,
        age: age.map(|a| duration::format(round_secs(a))),
        stale,
        pending,
    };
    (row, findings)
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// ESO writes `status.syncedResourceVersion` as `<metadata.generation>-<hash of labels and
/// annotations>` after each sync. A generation prefix behind `metadata.generation` means the
/// spec changed and has not been synced. (The metadata hash is not recomputed here.)
fn pending_change(es: &Value) -> Option<String> {
    let generation = es.pointer("/metadata/generation").and_then(Value::as_i64)?;
    let synced = es.pointer("/status/syncedResourceVersion").and_then(Value::as_str);
    let Some(synced) = synced.filter(|s| !s.is_empty()) else {
        return Some(format!("generation {generation} was never synced (no status.syncedResourceVersion)"));
    };
    let synced_generation = synced.split('-').next().and_then(|g| g.parse::<i64>().ok());
    match synced_generation {
        Some(g) if g == generation => None,
        Some(g) => Some(format!("spec generation {generation} is not synced yet (last synced generation {g})")),
        // An older ESO wrote a bare hash: nothing to compare against.
        None => None,
    }
}

/// Judges one pod template exactly as the webhook would, then looks for what it cannot see.
fn judge(w: &Workload<'_>, config: &Config, ctx: &Context, report: &mut Report) {
    let prefix = config.annotation_prefix.as_str();
    let object = format!("{}/{}", w.kind, w.name);
    let mut findings = Vec::new();
    let mut add = |check: Check, level: Level, message: String| {
        findings.push(Finding {
            namespace: w.namespace.clone(),
            object: object.clone(),
            check,
            level,
            message,
            file: w.file.clone(),
            line: w.line,
        })
    };

    // The pod the webhook would see: template metadata, the workload's namespace.
    let mut metadata = w.metadata.as_object().cloned().unwrap_or_default();
    metadata.insert("namespace".into(), Value::String(w.namespace.clone()));
    metadata.entry("name").or_insert_with(|| Value::String(w.name.clone()));
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": w.spec});
    let pod = JsonRef::from(&pod);
    let decision = decide::decide(&pod, &w.namespace, config);

    let pod_annotations = pod.at(&["metadata", "annotations"]).and_then(JsonRef::as_object);
    let parsed = annotations::parse(pod_annotations, prefix).ok().flatten();
    let spec = JsonRef::from(w.spec);
    let csi = csi_volumes(&spec);
    let (mode, mode_source) = match &parsed {
        Some(p) => match p.mode {
            Some(m) => (Some(m), Some(ModeSource::Annotation)),
            None => {
                let m = config.policy.default_mode(&w.namespace);
                (m, m.map(|_| ModeSource::PolicyDefault))
            }
        },
        None if !csi.is_empty() => (Some(Mode::Csi), Some(ModeSource::HandBuilt)),
        None => (None, None),
    };
    let plan: Option<Plan> = match (&parsed, mode) {
        (Some(p), Some(m)) => annotations::resolve(p, m, config).ok(),
        _ => None,
    };
    let verdict = config.policy.evaluate_pod(&w.namespace, &spec, plan.as_ref(), config);

    for v in &verdict.violations {
        let level = match verdict.enforcement {
            Enforcement::Enforce => Level::Error,
            Enforcement::Warn => Level::Warning,
            Enforcement::Audit => Level::Note,
        };
        let rule = verdict.rule.as_deref().unwrap_or("-");
        add(POLICY_VIOLATION, level, format!("rule {rule} ({}): {}: {}", verdict.enforcement, v.field, v.message));
    }
    // The warning `mutate` and the webhook give when the app cannot read its files.
    if let (Decision::Allow { .. }, Some(plan)) = (&decision, &plan) {
        if let Some(warning) = inject::readability_warning(&pod, plan) {
            add(FILES_UNREADABLE, Level::Warning, warning);
        }
    }
    let webhook = match &decision {
        Decision::Deny { message, .. } => {
            if !verdict.denies() {
                add(WEBHOOK_DENIAL, Level::Error, format!("the webhook denies this pod: {message}"));
            }
            "deny"
        }
        Decision::Allow { outcome, .. } => match outcome {
            Outcome::Injected => "inject",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skip",
            Outcome::Mirror => "mirror",
        },
    };

    // Delivery the spec builds itself.
    let volumes = volume_kinds(w.spec);
    for v in &csi {
        if !v.extra_attributes.is_empty() {
            add(
                CSI_EXTRA_ATTRIBUTES,
                Level::Warning,
                format!(
                    "volume {}: volumeAttributes {} override SecretProviderClass {} from the pod",
                    v.name,
                    v.extra_attributes.join(", "),
                    v.class.as_deref().unwrap_or("(none)")
                ),
            );
        }
        if v.read_only != Some(true) {
            add(
                CSI_NOT_READ_ONLY,
                Level::Warning,
                format!("volume {}: csi.readOnly is not true; the driver refuses to mount it", v.name),
            );
        }
        if let (Some(classes), Some(class)) = (&ctx.provider_classes, &v.class) {
            if !classes.contains(&(w.namespace.clone(), class.clone())) {
                add(
                    MISSING_SPC,
                    Level::Error,
                    format!("volume {}: SecretProviderClass {class} does not exist in {}", v.name, w.namespace),
                );
            }
        }
    }
    let eso_env = plan.as_ref().filter(|p| p.env_values).and_then(|p| p.eso_secret.clone());
    let mut env_refs = BTreeSet::new();
    for container in containers(w.spec) {
        let cname = container.get("name").and_then(Value::as_str).unwrap_or("?");
        for m in container.get("volumeMounts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            let vname = m.get("name").and_then(Value::as_str).unwrap_or("");
            let sub =
                m.get("subPath").or_else(|| m.get("subPathExpr")).and_then(Value::as_str).filter(|s| !s.is_empty());
            if let (Some(sub), Some(kind)) = (sub, volumes.get(vname)) {
                add(
                    SUBPATH_SECRET,
                    Level::Warning,
                    format!(
                        "container {cname} mounts {kind} volume {vname} with subPath {sub}: it never sees rotation"
                    ),
                );
            }
        }
        for env in container.get("env").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            if let Some(secret) = env.pointer("/valueFrom/secretKeyRef/name").and_then(Value::as_str) {
                if eso_env.as_deref() != Some(secret) {
                    let var = env.get("name").and_then(Value::as_str).unwrap_or("?");
                    env_refs.insert(secret.to_string());
                    add(
                        ENV_FROM_SECRET,
                        Level::Warning,
                        format!("container {cname}: env {var} from Secret {secret} never rotates (read at start)"),
                    );
                }
            }
        }
        for from in container.get("envFrom").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            if let Some(secret) = from.pointer("/secretRef/name").and_then(Value::as_str) {
                env_refs.insert(secret.to_string());
                add(
                    ENV_FROM_SECRET,
                    Level::Warning,
                    format!("container {cname}: envFrom Secret {secret} never rotates (read at start)"),
                );
            }
        }
    }
    if parsed.is_none() && (!volumes.is_empty() || !env_refs.is_empty()) {
        let mut uses: Vec<String> = volumes.iter().map(|(name, kind)| format!("{kind} volume {name}")).collect();
        uses.extend(env_refs.iter().map(|s| format!("env from Secret {s}")));
        add(
            NO_MODE,
            Level::Warning,
            format!("uses {} but sets no {prefix}/mode: its outage behaviour is unmanaged", uses.join(", ")),
        );
    }

    let injection = if ctx.cluster {
        Some(match (&parsed, webhook) {
            (None, _) => "-".to_string(),
            (Some(_), "unchanged") => "injected".to_string(),
            (Some(_), "inject") => {
                add(
                    NOT_INJECTED,
                    Level::Error,
                    format!("opted in with {prefix}/ annotations but carries no injection: created while the webhook was down or bypassed; restart it"),
                );
                "not injected".to_string()
            }
            (Some(_), other) => other.to_string(),
        })
    } else {
        None
    };

    let fallback = plan.as_ref().is_some_and(|p| p.fallback_secret.is_some());
    let provider = match (&plan, mode_source) {
        (_, Some(ModeSource::HandBuilt)) => Some(csi_classes(&csi)),
        (Some(p), _) => match p.mode {
            Mode::Init | Mode::Sidecar => p.provider.clone(),
            Mode::Eso => p.eso_secret.as_ref().map(|s| format!("secret/{s}")),
            Mode::Csi => p.csi_class.as_ref().map(|c| format!("spc/{c}")),
        },
        _ => None,
    };
    let facts = facts(w, plan.as_ref(), mode, &csi, !env_refs.is_empty(), ctx, config);
    let staleness = mode.map(|m| match (m, &plan) {
        (Mode::Sidecar, Some(p)) => {
            format!("max {} (refresh {})", duration::format(p.max_staleness), duration::format(p.refresh_interval))
        }
        (Mode::Init, Some(p)) => format!("max {} (fetched at start only)", duration::format(p.max_staleness)),
        (Mode::Eso, Some(p)) => {
            let secret = p.eso_secret.clone().unwrap_or_default();
            match ctx.sources.external_secrets.get(&(w.namespace.clone(), secret)) {
                Some(es) if !es.unhealthy => format!("ESO refresh {}", es.interval),
                Some(es) => format!("ESO refresh {} (ExternalSecret unhealthy)", es.interval),
                None => "ESO refresh (no ExternalSecret found)".to_string(),
            }
        }
        (Mode::Csi, _) => match facts.choice.map(|c| c.delivery) {
            Some(Delivery::Csi { rotation: Some(poll) }) => format!("CSI rotation {}", duration::format(poll)),
            _ => "no CSI rotation (fixed at mount)".to_string(),
        },
        (_, None) => "-".to_string(),
    });

    report.workloads.push(WorkloadReport {
        namespace: w.namespace.clone(),
        kind: w.kind.clone(),
        name: w.name.clone(),
        file: w.file.clone(),
        line: w.line,
        mode,
        mode_source,
        provider,
        items: plan.as_ref().map(|p| p.items.iter().map(|i| i.name.clone()).collect()).unwrap_or_default(),
        rendered: plan.as_ref().map(|p| p.rendered.iter().map(rendered_label).collect()).unwrap_or_default(),
        outage: mode.map(|m| m.outage(fallback)),
        staleness,
        env_values: plan.as_ref().is_some_and(|p| p.env_values) || !env_refs.is_empty(),
        on_change: plan.as_ref().and_then(|p| p.on_change.as_ref()).map(ToString::to_string),
        policy: PolicyResult { rule: verdict.rule, enforcement: verdict.enforcement, violations: verdict.violations },
        webhook: webhook.to_string(),
        injection,
        facts,
    });
    report.findings.extend(findings);
}

/// The timing model's input, the provider and the provider-side reads of one workload.
fn facts(
    w: &Workload<'_>,
    plan: Option<&Plan>,
    mode: Option<Mode>,
    csi: &[CsiVolume],
    own_env_refs: bool,
    ctx: &Context,
    config: &Config,
) -> WorkloadFacts {
    let (replicas, per_node) = w.replicas;
    let mut f = WorkloadFacts { replicas, per_node, ..WorkloadFacts::default() };
    let Some(mode) = mode else { return f };
    let ns = w.namespace.as_str();
    // A hand-built CSI pod has no plan: its classes come from its volumes.
    let class = plan.and_then(|p| p.csi_class.clone()).or_else(|| csi.iter().find_map(|v| v.class.clone()));
    let delivery = match (mode, plan) {
        (Mode::Sidecar, Some(p)) => Delivery::Sidecar { refresh: p.refresh_interval, max_staleness: p.max_staleness },
        (Mode::Sidecar, None) => return f,
        (Mode::Init, _) => Delivery::Init,
        (Mode::Eso, p) => {
            let secret = p.and_then(|p| p.eso_secret.clone()).unwrap_or_default();
            let es = ctx.sources.external_secrets.get(&(ns.to_string(), secret.clone()));
            f.provider = Some(ctx.sources.eso_provider(ns, &secret, config));
            if let Some(es) = es {
                f.reads = es.remote_keys.clone();
                f.external_secret = Some(es.name.clone());
            }
            f.eso_vault_store = ctx.sources.eso_vault_store(ns, &secret).cloned();
            Delivery::Eso { refresh: es.map_or(EsoRefresh::Unknown, |es| es.refresh) }
        }
        (Mode::Csi, _) => {
            let class = class.unwrap_or_default();
            let spc = ctx.sources.classes.get(&(ns.to_string(), class.clone()));
            f.provider = Some(ctx.sources.csi_provider(ns, &class, config));
            let global = config.cluster.csi_rotation.enabled.then_some(config.cluster.csi_rotation.poll_interval.0);
            if let Some(spc) = spc {
                f.reads = spc.objects.clone();
                f.requests_per_fetch = spc.reads_per_mount;
            }
            Delivery::Csi { rotation: spc.map_or(global, |s| s.rotation) }
        }
    };
    if let (true, Some(p)) = (mode.uses_agent(), plan) {
        f.provider = p.provider.clone().map(Attribution::Provider);
        let paths: BTreeSet<&str> = p
            .items
            .iter()
            .filter_map(|i| match &i.source {
                ItemSource::Provider { path, .. } => Some(path.as_str()),
                ItemSource::SecretKey(_) | ItemSource::CsiObject(_) => None,
            })
            .collect();
        f.requests_per_fetch = paths.len();
        f.reads = paths.into_iter().map(str::to_string).collect();
    }
    f.choice = Some(Choice {
        delivery,
        fallback: plan.is_some_and(|p| p.fallback_secret.is_some()),
        env_values: plan.is_some_and(|p| p.env_values) || own_env_refs,
        on_change: plan.is_some_and(|p| p.on_change.is_some()),
    });
    f
}

fn csi_classes(csi: &[CsiVolume]) -> String {
    let classes: BTreeSet<String> =
        csi.iter().map(|v| format!("spc/{}", v.class.as_deref().unwrap_or("(none)"))).collect();
    classes.into_iter().collect::<Vec<_>>().join(",")
}

/// Secret-bearing volumes by name: `secret`, `csi` (secrets-store) or `projected` (with a
/// Secret source). The webhook's own volumes are left out: they are judged via the plan.
fn volume_kinds(spec: &Value) -> BTreeMap<String, &'static str> {
    let mut out = BTreeMap::new();
    for v in spec.get("volumes").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if name.starts_with(RESERVED_PREFIX) {
            continue;
        }
        let kind = if v.get("secret").is_some() {
            "secret"
        } else if v.pointer("/csi/driver").and_then(Value::as_str) == Some(CSI_DRIVER) {
            "csi"
        } else if v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|s| s.get("secret").is_some()))
        {
            "projected secret"
        } else {
            continue;
        };
        out.insert(name.to_string(), kind);
    }
    out
}

/// Every container of the spec (init, regular, ephemeral) except the injected ones.
fn containers(spec: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .filter_map(|f| spec.get(f).and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_object)
        .filter(|c| !c.get("name").and_then(Value::as_str).unwrap_or("").starts_with(RESERVED_PREFIX))
}

/// A rendered file as the audit shows it: `dsn (template)`, `app.env (dotenv)`.
fn rendered_label(f: &crate::decide::plan::PlannedFile) -> String {
    let kind = match &f.file.source {
        crate::render::RenderSource::Template(_) => "template",
        crate::render::RenderSource::Bundle { format, .. } => format.as_str(),
    };
    format!("{} ({kind})", f.file.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ExternalSecret last refreshed `age_secs` before `now` with this `refreshInterval`.
    fn judged(interval: &str, age_secs: i64) -> (ExternalSecretReport, Vec<Finding>) {
        let now = DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z").unwrap().with_timezone(&Utc);
        let refreshed = (now - k8s_openapi::chrono::Duration::seconds(age_secs)).to_rfc3339();
        let es = json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"refreshInterval": interval},
            "status": {
                "refreshTime": refreshed,
                "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced"}]
            }
        });
        external_secret(&es, now)
    }

    #[test]
    fn a_replicaset_pod_is_shown_as_its_deployment() {
        let pod = |owner: serde_json::Value, labels: serde_json::Value| serde_json::json!({"metadata": {"ownerReferences": [owner], "labels": labels}});
        let rs = serde_json::json!({"kind": "ReplicaSet", "name": "api-7f9c6d8b5", "controller": true});
        let by_label = pod(rs.clone(), serde_json::json!({"pod-template-hash": "7f9c6d8b5"}));
        assert_eq!(controller_of(&by_label).as_deref(), Some("Deployment/api"));
        assert_eq!(controller_of(&pod(rs, serde_json::json!({}))).as_deref(), Some("Deployment/api"));
        let plain_rs = serde_json::json!({"kind": "ReplicaSet", "name": "web-blue", "controller": true});
        assert_eq!(controller_of(&pod(plain_rs, serde_json::json!({}))).as_deref(), Some("ReplicaSet/web-blue"));
        let sts = serde_json::json!({"kind": "StatefulSet", "name": "ledger", "controller": true});
        assert_eq!(controller_of(&pod(sts, serde_json::json!({}))).as_deref(), Some("StatefulSet/ledger"));
        let not_controller = serde_json::json!({"kind": "Node", "name": "n1"});
        assert_eq!(controller_of(&pod(not_controller, serde_json::json!({}))), None);
    }

    /// What ESO accepts (Go's `time.ParseDuration`) is judged, not called "not a duration".
    #[test]
    fn refresh_intervals_are_read_as_eso_reads_them() {
        for (interval, fresh_at, stale_at) in
            [("1.5h", 5000, 5500), ("1h0m0.5s", 3600, 3601), ("90m", 5000, 5500), ("1h30m0s", 5000, 5500)]
        {
            let (row, findings) = judged(interval, fresh_at);
            assert!(!row.stale && findings.is_empty(), "{interval} after {fresh_at}s: {findings:?}");
            let (row, findings) = judged(interval, stale_at);
            assert!(row.stale, "{interval} after {stale_at}s");
            assert!(findings[0].message.contains(&format!("older than refreshInterval {interval}")), "{findings:?}");
        }
        let (row, findings) = judged("500ms", 1);
        assert!(row.stale && findings.len() == 1, "{findings:?}");
    }

    /// ESO refreshes periodically only for a positive interval: zero and negative mean "once".
    #[test]
    fn zero_or_negative_intervals_never_go_stale() {
        for interval in ["0", "0s", "-1h", "-0.5s"] {
            let (row, findings) = judged(interval, 86_400 * 30);
            assert!(!row.stale && findings.is_empty(), "{interval}: {findings:?}");
        }
    }

    #[test]
    fn what_go_rejects_cannot_be_judged() {
        for interval in ["1d", "5", "1 h"] {
            let (_, findings) = judged(interval, 10);
            assert_eq!(findings.len(), 1, "{interval}: {findings:?}");
            assert!(findings[0].message.contains("is not a duration; cannot judge freshness"), "{findings:?}");
        }
    }
}
