//! One timing model per mode: what a workload's pods do while its provider is down, when they
//! go stale, and how long a new value takes to reach the files and the app. `audit`
//! (`--assume-down`, `--path`, the load report) and the README's failure table are both made
//! from it ([`readme_table`], checked against the README by a test), so docs and tool cannot
//! disagree. [`polls`] says how often each reader polls its provider (the load report).
//! Pure: durations in, answers out; imports only the vocabulary.
//!
//! Sources of the cluster-side numbers: the kubelet re-syncs each pod every `syncFrequency`
//! (1m) plus up to 50 % jitter (`workerResyncIntervalJitterFactor`, pkg/kubelet/pod_workers.go),
//! and only then rewrites Secret volumes; the Secrets Store CSI driver re-mounts every
//! `--rotation-poll-interval` (2m) when started with `--enable-secret-rotation` (off by
//! default); ESO refreshes every `refreshInterval` (1h when unset), once when it is zero.

use std::fmt;
use std::time::Duration;

use crate::vocabulary::duration;
use crate::vocabulary::mode::{Mode, Outage};

/// How often `secretmode watch` reads `..data` (eso/csi on-change and rendered files).
pub const WATCH_POLL: Duration = Duration::from_secs(1);
/// Quiet time before an on-change notification fires (a burst of changes is one).
pub const NOTIFY_DEBOUNCE: Duration = Duration::from_secs(2);
/// The kubelet's pod-worker resync jitter: a resync comes up to 50 % after `syncFrequency`.
const KUBELET_JITTER_PERCENT: u32 = 50;
/// ESO's `refreshInterval` when an ExternalSecret sets none.
pub const ESO_DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
/// The CSI driver's default `--rotation-poll-interval`.
pub const CSI_DEFAULT_ROTATION_POLL: Duration = Duration::from_secs(120);

/// What the cluster around the pods does; from the config's `cluster:` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterFacts {
    /// The kubelet's `syncFrequency` (default 1m).
    pub kubelet_sync_frequency: Duration,
}

impl Default for ClusterFacts {
    fn default() -> Self {
        ClusterFacts { kubelet_sync_frequency: Duration::from_secs(60) }
    }
}

impl ClusterFacts {
    /// Worst case from a Secret's update to the kubelet rewriting the volume.
    pub fn kubelet_sync_worst(&self) -> Duration {
        self.kubelet_sync_frequency + self.kubelet_sync_frequency * KUBELET_JITTER_PERCENT / 100
    }
}

/// ESO's refresh of the ExternalSecret that writes an `eso` pod's Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EsoRefresh {
    /// Every this long (a positive `refreshInterval`).
    Every(Duration),
    /// Zero or negative `refreshInterval`: synced once, again only when the ExternalSecret changes.
    Once,
    /// No ExternalSecret writing the Secret was found in the input.
    Unknown,
}

/// How a workload's values arrive, with the intervals that govern it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Eso {
        refresh: EsoRefresh,
    },
    /// `rotation`: the driver's poll interval when rotation is on for this class.
    Csi {
        rotation: Option<Duration>,
    },
    Init,
    Sidecar {
        refresh: Duration,
        max_staleness: Duration,
    },
}

impl Delivery {
    pub fn mode(&self) -> Mode {
        match self {
            Delivery::Eso { .. } => Mode::Eso,
            Delivery::Csi { .. } => Mode::Csi,
            Delivery::Init => Mode::Init,
            Delivery::Sidecar { .. } => Mode::Sidecar,
        }
    }
}

/// What one workload chose, as far as timing goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub delivery: Delivery,
    /// `<prefix>/fallback-secret` (init/sidecar only; ignored otherwise).
    pub fallback: bool,
    /// The app reads values from env (fixed at process start).
    pub env_values: bool,
    /// `<prefix>/on-change` is set.
    pub on_change: bool,
}

/// Whether a new pod of the workload can start while the provider is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NewPods {
    Start,
    /// Starts from the fallback Secret, flagged (status `fallback`).
    FromFallback,
    /// Cannot start until the provider answers.
    Blocked,
}

impl NewPods {
    pub fn as_str(self) -> &'static str {
        match self {
            NewPods::Start => "start",
            NewPods::FromFallback => "start from fallback",
            NewPods::Blocked => "blocked",
        }
    }
}

/// When a running pod's values become older than the workload's own freshness promise, counted
/// from the start of the outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// At the earliest `.0` (the last fetch was a full refresh before the outage), at the
    /// latest `.1` (it was just before).
    Between(Duration, Duration),
    /// The values are fixed for the pod's life: nothing refreshes, so nothing goes stale.
    Never,
    /// The refresh interval is not known (no ExternalSecret in the input).
    Unknown,
}

impl Stale {
    /// The earliest moment, for "time until the first pod goes stale".
    pub fn earliest(&self) -> Option<Duration> {
        match self {
            Stale::Between(from, _) => Some(*from),
            Stale::Never | Stale::Unknown => None,
        }
    }
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stale::Between(a, b) if a.is_zero() => write!(f, "within {}", duration::format(*b)),
            Stale::Between(a, b) if a == b => write!(f, "after {}", duration::format(*b)),
            Stale::Between(a, b) => write!(f, "after {}–{}", duration::format(*a), duration::format(*b)),
            Stale::Never => f.write_str("never (fixed at start)"),
            Stale::Unknown => f.write_str("unknown (no ExternalSecret found)"),
        }
    }
}

/// What the workload does while its provider is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutageTiming {
    /// The words of the failure table (running pods keep serving in every mode).
    pub words: Outage,
    pub new_pods: NewPods,
    pub stale: Stale,
}

/// How long until a rotated value is seen, worst case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    Within(Duration),
    /// Only a restarted (or new) pod sees it.
    OnRestart,
    /// ESO syncs once: only when the ExternalSecret itself changes.
    OnExternalSecretChange,
    Unknown,
}

impl Latency {
    pub fn worst(&self) -> Option<Duration> {
        match self {
            Latency::Within(d) => Some(*d),
            Latency::OnRestart | Latency::OnExternalSecretChange | Latency::Unknown => None,
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::Within(d) => write!(f, "≤ {}", duration::format(*d)),
            Latency::OnRestart => f.write_str("on restart"),
            Latency::OnExternalSecretChange => f.write_str("when the ExternalSecret changes"),
            Latency::Unknown => f.write_str("unknown (no ExternalSecret found)"),
        }
    }
}

/// A rotation at the provider, seen from the workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotationTiming {
    /// Until the files under the mount path hold the new value.
    pub files: Latency,
    /// Until the app holds it: the files' latency, or a restart for env values.
    pub app: Latency,
    /// Whether the app is told (on-change fires after the files change; never for env values).
    pub told: bool,
    /// Worst case until it is told: the files' latency, plus a watcher poll (eso/csi), plus
    /// the notifier's debounce.
    pub told_within: Option<Duration>,
    /// The parts of `files`, e.g. `ESO refresh 1h + kubelet sync ≤ 1m30s`.
    pub why: String,
}

/// The outage model: running pods keep serving in every mode; whether new pods start and
/// when the running ones go stale depends on the mode.
pub fn outage(choice: &Choice) -> OutageTiming {
    let fallback = choice.fallback && choice.delivery.mode().uses_agent();
    let words = choice.delivery.mode().outage(fallback);
    let (new_pods, stale) = match choice.delivery {
        Delivery::Eso { refresh } => (
            NewPods::Start,
            match refresh {
                EsoRefresh::Every(d) => Stale::Between(Duration::ZERO, d),
                EsoRefresh::Once => Stale::Never,
                EsoRefresh::Unknown => Stale::Unknown,
            },
        ),
        Delivery::Csi { rotation } => {
            (NewPods::Blocked, rotation.map_or(Stale::Never, |poll| Stale::Between(Duration::ZERO, poll)))
        }
        Delivery::Init => (if fallback { NewPods::FromFallback } else { NewPods::Blocked }, Stale::Never),
        Delivery::Sidecar { refresh, max_staleness } => (
            if fallback { NewPods::FromFallback } else { NewPods::Blocked },
            Stale::Between(max_staleness.saturating_sub(refresh), max_staleness),
        ),
    };
    OutageTiming { words, new_pods, stale }
}

/// The rotation model: worst-case time from a new value at the provider to the files and
/// the app, and whether the app is told.
pub fn rotation(choice: &Choice, facts: &ClusterFacts) -> RotationTiming {
    let kubelet = facts.kubelet_sync_worst();
    let (files, why) = match choice.delivery {
        Delivery::Sidecar { refresh, .. } => {
            (Latency::Within(refresh), format!("sidecar refresh {}, never late", duration::format(refresh)))
        }
        Delivery::Init => (Latency::OnRestart, "init fetches at start only".to_string()),
        Delivery::Eso { refresh: EsoRefresh::Every(d) } => (
            Latency::Within(d + kubelet),
            format!("ESO refresh {} + kubelet sync ≤ {}", duration::format(d), duration::format(kubelet)),
        ),
        Delivery::Eso { refresh: EsoRefresh::Once } => {
            (Latency::OnExternalSecretChange, "ESO refreshInterval 0: synced once".to_string())
        }
        Delivery::Eso { refresh: EsoRefresh::Unknown } => {
            (Latency::Unknown, "no ExternalSecret writes the Secret in the input".to_string())
        }
        Delivery::Csi { rotation: Some(poll) } => {
            (Latency::Within(poll), format!("CSI rotation poll {}", duration::format(poll)))
        }
        Delivery::Csi { rotation: None } => (Latency::OnRestart, "CSI rotation off: mounted at start".to_string()),
    };
    // A watcher (eso/csi) sees the swap within one poll, then notifies after the debounce.
    let told = choice.on_change && !matches!(files, Latency::OnRestart) && choice.delivery.mode() != Mode::Init;
    let app = if choice.env_values { Latency::OnRestart } else { files };
    let told = told && !choice.env_values;
    let poll = if choice.delivery.mode().uses_agent() { Duration::ZERO } else { WATCH_POLL };
    let told_within = files.worst().filter(|_| told).map(|d| d + poll + NOTIFY_DEBOUNCE);
    RotationTiming { files, app, told, told_within, why }
}

/// How much earlier than its `refresh-interval` a sidecar may refresh: up to 10 % early,
/// never late (`agent::run`), which spreads the pods' reads apart.
pub const SIDECAR_EARLY_PERCENT: u32 = 10;

/// How often one reader polls its provider: a sidecar pod, a CSI pod whose class rotates, or
/// (for `eso`) the ExternalSecret, which ESO's controller reads once for all the pods mounting
/// its Secret. The load report multiplies this by the reads per poll and the readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polls {
    /// At worst this often: a sidecar's refresh less its early jitter, the CSI rotation poll,
    /// the ExternalSecret's `refreshInterval`.
    Every(Duration),
    /// Only at pod start (init, CSI without rotation): a rollout's burst, no steady rate.
    AtStart,
    /// ESO syncs once (zero `refreshInterval`), again only when the ExternalSecret changes.
    Once,
    /// No ExternalSecret writes the Secret in the input.
    Unknown,
}

/// The polling model of each mode (worst case: the shortest gap between two polls).
pub fn polls(delivery: &Delivery) -> Polls {
    match *delivery {
        Delivery::Sidecar { refresh, .. } => {
            Polls::Every(refresh - refresh * SIDECAR_EARLY_PERCENT / 100).filter_zero()
        }
        Delivery::Csi { rotation: Some(poll) } => Polls::Every(poll).filter_zero(),
        Delivery::Csi { rotation: None } | Delivery::Init => Polls::AtStart,
        Delivery::Eso { refresh: EsoRefresh::Every(d) } => Polls::Every(d).filter_zero(),
        Delivery::Eso { refresh: EsoRefresh::Once } => Polls::Once,
        Delivery::Eso { refresh: EsoRefresh::Unknown } => Polls::Unknown,
    }
}

impl Polls {
    /// A zero interval cannot be a rate; the config and parsers never produce one, but a
    /// division by zero must not be reachable from input.
    fn filter_zero(self) -> Polls {
        match self {
            Polls::Every(d) if d.is_zero() => Polls::Unknown,
            other => other,
        }
    }

    /// Requests per second of one reader making `requests` per poll; `None` without a rate.
    pub fn per_second(&self, requests: f64) -> Option<f64> {
        match self {
            Polls::Every(d) => Some(requests / d.as_secs_f64()),
            Polls::AtStart | Polls::Once | Polls::Unknown => None,
        }
    }
}

/// Whether each new pod reads the provider when it starts (the agent's first fetch, the CSI
/// mount); an `eso` pod reads the Secret ESO already wrote.
pub fn reads_at_start(delivery: &Delivery) -> bool {
    !matches!(delivery, Delivery::Eso { .. })
}

/// The delivery each mode has with the built-in defaults: sidecar refresh 5m and max-staleness
/// 1h, ESO's default refresh, CSI rotation off (the driver's default).
pub fn defaults(mode: Mode) -> Delivery {
    match mode {
        Mode::Eso => Delivery::Eso { refresh: EsoRefresh::Every(ESO_DEFAULT_REFRESH) },
        Mode::Csi => Delivery::Csi { rotation: None },
        Mode::Init => Delivery::Init,
        Mode::Sidecar => {
            Delivery::Sidecar { refresh: Duration::from_secs(300), max_staleness: Duration::from_secs(3600) }
        }
    }
}

/// The README's failure table, made from [`outage`] and [`rotation`] with [`defaults`].
pub fn readme_table(facts: &ClusterFacts) -> String {
    let mut out = String::from(
        "| `secrets/mode` | how the value arrives | provider down: running pods | provider down: new pods \
         | running pods stale (defaults) | a rotation reaches the files (defaults) | `env-values: \"true\"` | `on-change` |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let rows: [(Mode, bool, &str, &str, &str); 6] = [
        (
            Mode::Eso,
            false,
            "External Secrets Operator syncs a Secret; the pod mounts it",
            "`secretKeyRef` env vars",
            "`secretmode-watcher` fires on each kubelet `..data` swap",
        ),
        (
            Mode::Csi,
            false,
            "Secrets Store CSI driver mounts a volume at pod start",
            "exec wrapper",
            "`secretmode-watcher` fires on each driver `..data` swap",
        ),
        (
            Mode::Init,
            false,
            "an init container fetches once into an in-memory volume",
            "exec wrapper",
            "denied: nothing changes after start",
        ),
        (
            Mode::Sidecar,
            false,
            "a native sidecar fetches, then refreshes, keeping the last good value",
            "exec wrapper",
            "the agent fires it after each new generation",
        ),
        (
            Mode::Init,
            true,
            "as above, from an on-cluster Secret if the provider is unreachable at start",
            "as above",
            "as above",
        ),
        (
            Mode::Sidecar,
            true,
            "as above, seeded from an on-cluster Secret if the provider is unreachable at start",
            "as above",
            "as above",
        ),
    ];
    for (mode, fallback, arrives, env, on_change) in rows {
        let choice = Choice { delivery: defaults(mode), fallback, env_values: false, on_change: false };
        let o = outage(&choice);
        let r = rotation(&choice, facts);
        let name = if fallback { format!("`{mode}` + `fallback-secret`") } else { format!("`{mode}`") };
        let mut reach = match r.files {
            Latency::Within(_) => format!("{} ({})", r.files, r.why),
            _ => r.files.to_string(),
        };
        let mut stale = o.stale.to_string();
        if mode == Mode::Csi {
            // Rotation is a driver flag, off by default: show both.
            let on = Choice { delivery: Delivery::Csi { rotation: Some(CSI_DEFAULT_ROTATION_POLL) }, ..choice };
            let (o_on, r_on) = (outage(&on), rotation(&on, facts));
            reach = format!("{reach}; {} with driver rotation on", r_on.files);
            stale = format!("{stale}; {} with driver rotation on", o_on.stale);
        }
        out.push_str(&format!(
            "| {name} | {arrives} | {} | {} | {stale} | {reach} | {env} | {on_change} |\n",
            o.words.running_pods, o.words.new_pods
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(delivery: Delivery) -> Choice {
        Choice { delivery, fallback: false, env_values: false, on_change: false }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn polls_are_the_worst_case_gap() {
        let sidecar = Delivery::Sidecar { refresh: MIN, max_staleness: 10 * MIN };
        assert_eq!(polls(&sidecar), Polls::Every(Duration::from_secs(54)), "10 % early at worst");
        assert_eq!(polls(&Delivery::Csi { rotation: Some(2 * MIN) }), Polls::Every(2 * MIN));
        assert_eq!(polls(&defaults(Mode::Csi)), Polls::AtStart);
        assert_eq!(polls(&Delivery::Init), Polls::AtStart);
        assert_eq!(polls(&defaults(Mode::Eso)), Polls::Every(ESO_DEFAULT_REFRESH));
        assert_eq!(polls(&Delivery::Eso { refresh: EsoRefresh::Once }), Polls::Once);
        assert_eq!(polls(&Delivery::Eso { refresh: EsoRefresh::Unknown }), Polls::Unknown);
        assert_eq!(polls(&Delivery::Csi { rotation: Some(Duration::ZERO) }), Polls::Unknown, "no division by zero");
        let rate = polls(&sidecar).per_second(3.0).unwrap();
        assert!((rate - 3.0 / 54.0).abs() < 1e-12, "{rate}");
        assert_eq!(Polls::AtStart.per_second(3.0), None);
        assert!(reads_at_start(&Delivery::Init) && !reads_at_start(&defaults(Mode::Eso)));
    }

    #[test]
    fn new_pods_by_mode_and_fallback() {
        let cases = [
            (defaults(Mode::Eso), false, NewPods::Start),
            (defaults(Mode::Eso), true, NewPods::Start),
            (defaults(Mode::Csi), true, NewPods::Blocked),
            (Delivery::Csi { rotation: Some(MIN) }, false, NewPods::Blocked),
            (Delivery::Init, false, NewPods::Blocked),
            (Delivery::Init, true, NewPods::FromFallback),
            (defaults(Mode::Sidecar), false, NewPods::Blocked),
            (defaults(Mode::Sidecar), true, NewPods::FromFallback),
        ];
        for (delivery, fallback, want) in cases {
            let o = outage(&Choice { fallback, ..choice(delivery) });
            assert_eq!(o.new_pods, want, "{delivery:?} fallback={fallback}");
        }
    }

    #[test]
    fn sidecar_goes_stale_within_one_refresh_of_its_budget() {
        let o = outage(&choice(Delivery::Sidecar { refresh: 5 * MIN, max_staleness: 60 * MIN }));
        assert_eq!(o.stale, Stale::Between(55 * MIN, 60 * MIN));
        assert_eq!(o.stale.earliest(), Some(55 * MIN));
        assert_eq!(o.stale.to_string(), "after 55m–1h");
        let o = outage(&choice(Delivery::Sidecar { refresh: 5 * MIN, max_staleness: 5 * MIN }));
        assert_eq!(o.stale, Stale::Between(Duration::ZERO, 5 * MIN));
    }

    #[test]
    fn fixed_values_never_go_stale() {
        assert_eq!(outage(&choice(Delivery::Init)).stale, Stale::Never);
        assert_eq!(outage(&choice(Delivery::Csi { rotation: None })).stale, Stale::Never);
        assert_eq!(outage(&choice(Delivery::Eso { refresh: EsoRefresh::Once })).stale, Stale::Never);
        assert_eq!(outage(&choice(Delivery::Eso { refresh: EsoRefresh::Unknown })).stale, Stale::Unknown);
    }

    #[test]
    fn rotation_worst_cases() {
        let facts = ClusterFacts::default();
        assert_eq!(facts.kubelet_sync_worst(), 90 * Duration::from_secs(1));
        let eso = rotation(&choice(Delivery::Eso { refresh: EsoRefresh::Every(10 * MIN) }), &facts);
        assert_eq!(eso.files, Latency::Within(10 * MIN + Duration::from_secs(90)));
        assert_eq!(eso.why, "ESO refresh 10m + kubelet sync ≤ 1m30s");
        let side = rotation(&choice(Delivery::Sidecar { refresh: 5 * MIN, max_staleness: MIN * 60 }), &facts);
        assert_eq!(side.files, Latency::Within(5 * MIN));
        assert_eq!(rotation(&choice(Delivery::Init), &facts).files, Latency::OnRestart);
        assert_eq!(rotation(&choice(Delivery::Csi { rotation: None }), &facts).files, Latency::OnRestart);
        assert_eq!(
            rotation(&choice(Delivery::Csi { rotation: Some(2 * MIN) }), &facts).files,
            Latency::Within(2 * MIN)
        );
    }

    #[test]
    fn env_values_wait_for_a_restart_and_are_not_told() {
        let facts = ClusterFacts::default();
        let c = Choice { env_values: true, on_change: true, ..choice(defaults(Mode::Sidecar)) };
        let r = rotation(&c, &facts);
        assert_eq!(r.files, Latency::Within(5 * MIN));
        assert_eq!(r.app, Latency::OnRestart);
        assert!(!r.told);
        let c = Choice { on_change: true, ..choice(defaults(Mode::Eso)) };
        let r = rotation(&c, &facts);
        assert!(r.told);
        assert_eq!(r.told_within, Some(60 * MIN + Duration::from_secs(90 + 1 + 2)));
        let c = Choice { on_change: true, ..choice(defaults(Mode::Sidecar)) };
        assert_eq!(rotation(&c, &facts).told_within, Some(5 * MIN + Duration::from_secs(2)));
        let c = Choice { on_change: true, ..choice(Delivery::Csi { rotation: None }) };
        assert!(!rotation(&c, &facts).told, "nothing changes to tell about");
    }

    /// The README's failure table is this model's output, byte for byte.
    #[test]
    fn readme_table_is_the_model() {
        let readme = include_str!("../../README.md");
        let table = readme_table(&ClusterFacts::default());
        assert!(
            readme.contains(&table),
            "README.md's failure table differs from timing::readme_table(); paste this:\n{table}"
        );
    }
}
