//! Property tests (issue 6 item 4) and the short, deterministic part of the fuzzing (item 3).
//!
//! The invariants are the fuzz targets' own (`fuzz/src/checks.rs`, included below), so:
//! - every seed in `fuzz/seeds/` replays here as a plain test and must reach the outcome it
//!   was written for, and every crash the fuzzer ever found (`fuzz/regressions/`) replays too;
//! - proptest generates pods of every mode with random extra fields, containers, env, mounts
//!   and volumes, and checks idempotence and that the patched pod keeps every field of the
//!   original that the mode does not own;
//! - a bounded random run over annotation lines and over mutated AdmissionReview bytes is the
//!   "short fuzz run" of the default test command (no time asserts: only invariants).

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use secretmode::config::Config;
use secretmode::decide::{self, Decision};

/// The built-in config, with signals allowed (its one rule allows none).
fn config() -> Config {
    let mut config = Config::builtin().expect("built-in config");
    config.policy.rules[0].allow_signals = true;
    config
}

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// What each seed in `fuzz/seeds/` is for. Every seed must be listed and reach its outcome: a
/// seed that stops parsing (or changes meaning) fails here instead of replaying as a no-op.
const REVIEW_SEEDS: [(&str, checks::Reviewed); 12] = {
    use checks::Reviewed::{Allowed, Denied, Patched};
    [
        ("csi.json", Patched),
        ("csi-update.json", Allowed),
        ("delete.json", Allowed),
        ("denied.json", Denied),
        ("eso.json", Patched),
        ("eso-update.json", Allowed),
        ("init.json", Patched),
        ("init-update.json", Allowed),
        ("minimal.json", Patched),
        ("no-annotations.json", Allowed),
        ("sidecar.json", Patched),
        ("sidecar-update.json", Allowed),
    ]
};

/// The annotation seeds with the webhook's outcome for a pod carrying them
/// ([`Decision::outcome_label`]).
const ANNOTATION_SEEDS: [(&str, &str); 10] = [
    ("collide.txt", "denied"),
    ("csi.txt", "injected"),
    ("eso-env-values.txt", "injected"),
    ("eso.txt", "injected"),
    ("init-aws.txt", "injected"),
    ("init.txt", "injected"),
    ("nasty.txt", "denied"),
    ("no-mode.txt", "mirror"),
    ("sidecar-fallback.txt", "injected"),
    ("sidecar.txt", "injected"),
];

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).expect("a UTF-8 file name")
}

/// Every seed file is in `table`, and every entry of `table` is a seed file.
fn assert_listed<T>(seeds: &[PathBuf], table: &[(&str, T)], dir: &str) {
    let mut on_disk: Vec<&str> = seeds.iter().map(|p| file_name(p)).collect();
    let mut listed: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
    on_disk.sort();
    listed.sort();
    assert_eq!(on_disk, listed, "{dir}: every seed needs its expected outcome in tests/properties.rs");
}

#[test]
fn fuzz_seeds_and_regressions_replay() {
    let config = config();
    let review_seeds = files("fuzz/seeds/review");
    assert_listed(&review_seeds, &REVIEW_SEEDS, "fuzz/seeds/review");
    for path in &review_seeds {
        let want = REVIEW_SEEDS.iter().find(|(n, _)| *n == file_name(path)).map(|(_, o)| *o);
        let got = checks::check_review(&std::fs::read(path).expect("read seed"), &config);
        assert_eq!(Some(got), want, "{}", path.display());
    }
    let annotation_seeds = files("fuzz/seeds/annotations");
    assert_listed(&annotation_seeds, &ANNOTATION_SEEDS, "fuzz/seeds/annotations");
    for path in &annotation_seeds {
        let data = std::fs::read(path).expect("read seed");
        let text = std::str::from_utf8(&data).unwrap_or_else(|e| panic!("{}: not UTF-8: {e}", path.display()));
        for line in text.lines() {
            assert!(
                line.split_once('=').is_some_and(|(k, _)| !k.is_empty()),
                "{}: not key=value: {line:?}",
                path.display()
            );
        }
        let pod = checks::pod_with_annotations(checks::annotations_from_lines(&data));
        let want = ANNOTATION_SEEDS.iter().find(|(n, _)| *n == file_name(path)).map(|(_, o)| *o);
        assert_eq!(Some(decide::admit_pod(&pod, "demo", &config).outcome_label()), want, "{}", path.display());
        checks::check_annotations(&data, &config);
    }
    // Crashes the fuzzer found are arbitrary bytes: they only have to keep every invariant.
    for path in files("fuzz/regressions/review") {
        checks::check_review(&std::fs::read(&path).expect("read regression"), &config);
    }
    for path in files("fuzz/regressions/annotations") {
        checks::check_annotations(&std::fs::read(&path).expect("read regression"), &config);
    }
}

#[test]
fn every_example_review_injects_and_is_idempotent() {
    let config = config();
    for mode in ["eso", "csi", "init", "sidecar"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/admission/{mode}.json"));
        let review: Value = serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
        let pod = &review["request"]["object"];
        let patched = checks::check_pod(pod, "demo", &config);
        assert!(patched.is_some(), "{mode}: example was not injected");
        checks::check_review(&serde_json::to_vec(&review).expect("json"), &config);
    }
}

// ---- generators -------------------------------------------------------------------------

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ]
}

/// Arbitrary JSON standing for fields a newer Kubernetes may add.
fn future_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z~/.]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn extra_fields() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("x[a-zA-Z]{1,6}", future_json(), 0..3).prop_map(|m| m.into_iter().collect())
}

fn container(index: usize) -> impl Strategy<Value = Value> {
    (
        "[a-z]{1,6}",
        prop::option::of(prop::collection::btree_map("VAR_[A-Z]{1,5}", "[ -~]{0,10}", 0..5)),
        prop::option::of(prop::collection::btree_set("[a-z]{1,5}", 0..3)),
        extra_fields(),
    )
        .prop_map(move |(suffix, env, mounts, extra)| {
            let mut c = Map::new();
            c.insert("name".into(), json!(format!("c{index}-{suffix}")));
            c.insert("image".into(), json!("registry.example/app:1"));
            if let Some(env) = env {
                c.insert("env".into(), env.into_iter().map(|(k, v)| json!({"name": k, "value": v})).collect());
            }
            if let Some(mounts) = mounts {
                c.insert(
                    "volumeMounts".into(),
                    mounts
                        .into_iter()
                        .map(|m| json!({"name": format!("vol-{m}"), "mountPath": format!("/data/{m}")}))
                        .collect(),
                );
            }
            c.extend(extra);
            Value::Object(c)
        })
}

fn containers() -> impl Strategy<Value = Vec<Value>> {
    (1usize..4).prop_flat_map(|n| (0..n).map(container).collect::<Vec<_>>())
}

/// The `secrets/*` annotations of a valid request for `mode`.
fn secret_annotations() -> impl Strategy<Value = (String, Map<String, Value>)> {
    let items = prop::collection::btree_set("[a-z][a-z0-9]{0,6}", 1..4);
    (prop::sample::select(vec!["eso", "csi", "init", "sidecar"]), items, any::<bool>(), any::<bool>()).prop_map(
        |(mode, items, flag_a, flag_b)| {
            let mut a = Map::new();
            a.insert("secrets/mode".into(), json!(mode));
            for item in &items {
                let value = match mode {
                    "eso" | "csi" => item.clone(),
                    _ => format!("team/{item}#value"),
                };
                a.insert(format!("secrets/item.{item}"), json!(value));
            }
            match mode {
                "eso" => {
                    a.insert("secrets/eso-secret".into(), json!("app-secrets"));
                    if flag_a {
                        a.insert("secrets/env-values".into(), json!("true"));
                    }
                }
                "csi" => {
                    a.insert("secrets/csi-class".into(), json!("app-class"));
                }
                _ => {
                    if flag_a {
                        a.insert("secrets/fallback-secret".into(), json!("app-fallback"));
                    }
                    if flag_b {
                        a.insert("secrets/provider".into(), json!("aws"));
                    }
                    if mode == "sidecar" && flag_b {
                        a.insert("secrets/refresh-interval".into(), json!("45s"));
                    }
                }
            }
            (mode.to_string(), a)
        },
    )
}

fn pod() -> impl Strategy<Value = (String, Value)> {
    (
        secret_annotations(),
        containers(),
        prop::option::of(prop::collection::btree_map("example.com/[a-z]{1,5}", "[ -~]{0,10}", 0..3)),
        prop::option::of(prop::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{0,5}", 0..3)),
        any::<bool>(),
        any::<bool>(),
        extra_fields(),
        extra_fields(),
        (any::<bool>(), 0u8..3),
    )
        .prop_map(
            |(
                (mode, secrets),
                mut containers,
                other,
                labels,
                with_init,
                with_volumes,
                mut spec_extra,
                meta_extra,
                (env_values, on_change),
            )| {
                let mut annotations = secrets;
                // Issue 24: values in env (the exec wrapper outside eso: every container gets
                // a command) and an on-change action (none in init, which denies it; a signal
                // needs the app's user).
                if env_values {
                    annotations.insert("secrets/env-values".into(), json!("true"));
                    for (i, c) in containers.iter_mut().enumerate() {
                        c["command"] = json!([format!("/bin/app{i}"), "--serve"]);
                    }
                }
                match (on_change, mode.as_str()) {
                    (_, "init") | (0, _) => {}
                    (1, _) => {
                        annotations.insert("secrets/on-change".into(), json!("http://127.0.0.1:9090/-/reload"));
                    }
                    _ => {
                        annotations.insert("secrets/on-change".into(), json!("signal:HUP"));
                        spec_extra.insert("securityContext".into(), json!({"runAsUser": 1000, "runAsGroup": 1000}));
                    }
                }
                for (k, v) in other.unwrap_or_default() {
                    annotations.insert(k, json!(v));
                }
                let mut metadata = Map::new();
                metadata.insert("generateName".into(), json!("web-"));
                metadata.insert("annotations".into(), Value::Object(annotations));
                if let Some(labels) = labels {
                    metadata.insert("labels".into(), json!(labels));
                }
                metadata.extend(meta_extra);
                let mut spec = Map::new();
                let mounts: Vec<String> = containers
                    .iter()
                    .flat_map(|c| c["volumeMounts"].as_array().cloned().unwrap_or_default())
                    .filter_map(|m| m["name"].as_str().map(str::to_string))
                    .collect();
                spec.insert("containers".into(), Value::Array(containers));
                if with_init {
                    spec.insert(
                        "initContainers".into(),
                        json!([{"name": "setup", "image": "busybox", "restartPolicy": "Never", "xFuture": [1]}]),
                    );
                }
                if with_volumes || !mounts.is_empty() {
                    let mut names: Vec<String> = mounts;
                    names.sort();
                    names.dedup();
                    spec.insert(
                        "volumes".into(),
                        names.into_iter().map(|n| json!({"name": n, "emptyDir": {}})).collect(),
                    );
                }
                spec.extend(spec_extra);
                (mode, json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}))
            },
        )
}

// ---- properties ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Idempotence, patch applies, and nothing the mode does not own changes (`check_pod`
    /// strips what the mode owns from the patched pod and compares with the original).
    #[test]
    fn injection_is_idempotent_and_keeps_everything_else((mode, pod) in pod()) {
        let config = config();
        let patched = checks::check_pod(&pod, "demo", &config);
        prop_assert!(patched.is_some(), "{mode}: a valid pod was not injected: {:?}", decide::admit_pod(&pod, "demo", &config));
    }

    /// A container added by a later webhook (reinvocation) gets the mount and env, once.
    #[test]
    fn a_container_added_later_is_wired((mode, pod) in pod()) {
        let config = config();
        let Some(mut patched) = checks::check_pod(&pod, "demo", &config) else {
            return Err(TestCaseError::fail(format!("{mode}: not injected")));
        };
        patched["spec"]["containers"].as_array_mut().expect("containers").push(json!({"name": "late", "image": "x"}));
        let Decision::Allow { patch, .. } = decide::admit_pod(&patched, "demo", &config) else {
            return Err(TestCaseError::fail("the reinvoked pod was denied"));
        };
        prop_assert!(!patch.is_empty());
        let again = checks::apply(&patched, &serde_json::to_value(&patch).expect("ops")).map_err(TestCaseError::fail)?;
        let late = again["spec"]["containers"].as_array().and_then(|c| c.iter().find(|c| c["name"] == "late")).cloned().unwrap_or_default();
        prop_assert!(late["volumeMounts"].as_array().is_some_and(|m| m.iter().any(|m| m["name"] == "secretmode-secrets")));
        prop_assert!(late["env"].as_array().is_some_and(|e| e.iter().any(|e| e["name"].as_str().is_some_and(|n| n.ends_with("_FILE")))));
        // Only the new container changed.
        let Decision::Allow { patch, .. } = decide::admit_pod(&again, "demo", &config) else {
            return Err(TestCaseError::fail("denied after wiring"));
        };
        prop_assert!(patch.is_empty());
    }
}

/// Annotation lines drawn from a grammar biased towards the real keys, including hostile
/// values (the short fuzz run of the annotation target).
fn annotation_lines() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("secrets/mode".to_string()),
        Just("secrets/provider".to_string()),
        Just("secrets/eso-secret".to_string()),
        Just("secrets/csi-class".to_string()),
        Just("secrets/containers".to_string()),
        Just("secrets/mount-path".to_string()),
        Just("secrets/refresh-interval".to_string()),
        Just("secrets/max-staleness".to_string()),
        Just("secrets/env-values".to_string()),
        Just("secrets/on-change".to_string()),
        Just("secrets/fallback-secret".to_string()),
        Just("secrets/injected".to_string()),
        "secrets/item\\.[a-zA-Z0-9._~/-]{0,8}",
        "secrets/[ -~]{0,10}",
        "[ -~]{0,12}",
    ];
    let value = prop_oneof![
        prop::sample::select(vec![
            "eso",
            "csi",
            "init",
            "sidecar",
            "vault",
            "aws",
            "app",
            "app,proxy",
            "/run/s",
            "/proc",
            "/",
            "30s",
            "5m",
            "0s",
            "true",
            "false",
            "signal:HUP",
            "signal:KILL",
            "http://127.0.0.1:9090/-/reload",
            "GET http://10.0.0.1:80/",
            "a/b#c",
            "a/b",
            "${HOME}",
            "{{x}}",
            "\"'`;|&",
            "ü",
            " ",
        ])
        .prop_map(str::to_string),
        "[ -~]{0,16}",
        "\\PC{0,8}",
    ];
    prop::collection::vec((key, value), 0..8)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>().into_bytes())
}

/// A seed review with a few bytes overwritten, inserted or cut (the short fuzz run of the
/// review target).
fn mutated_review() -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = files("fuzz/seeds/review").iter().map(|p| std::fs::read(p).expect("read seed")).collect();
    (prop::sample::select(seeds), prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..6))
        .prop_map(|(mut seed, edits)| {
            for (at, byte, kind) in edits {
                if seed.is_empty() {
                    break;
                }
                let i = at.index(seed.len());
                match kind {
                    0 => seed[i] = byte,
                    1 => seed.insert(i, byte),
                    _ => seed.truncate(i),
                }
            }
            seed
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn short_fuzz_annotations(data in annotation_lines()) {
        checks::check_annotations(&data, &config());
    }

    #[test]
    fn short_fuzz_reviews(data in mutated_review()) {
        checks::check_review(&data, &config());
    }
}
