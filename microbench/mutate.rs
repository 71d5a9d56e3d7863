//! Criterion benches of the mutation (issue 2 item 8, issue 6): per mode, on the typical pod of
//! `examples/admission/<mode>.json` (a ~2.5 KB pod as a ReplicaSet controller sends it) and on a
//! huge pod (30 containers, 1,500 env vars in all); `decide::decide` alone and the whole
//! `review::review` on the request bytes. The `scaling` group grows the huge pod in steps so
//! that a non-linear patch construction shows up as a bend.
//!
//! Run: `cargo bench --bench mutate` (results in docs/BENCHMARKS.md). The load tools are in
//! bench/ (bench/README.md says which is which).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};

use secretmode::config::Config;
use secretmode::decide::{self, Decision};
use secretmode::json::tree::JsonRef;
use secretmode::webhook::review;

const MODES: [&str; 4] = ["eso", "csi", "init", "sidecar"];

/// The AdmissionReview of `examples/admission/<mode>.json`.
fn example_review(mode: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/admission").join(format!("{mode}.json"));
    serde_json::from_slice(&std::fs::read(&path).expect("read example review")).expect("example review is JSON")
}

/// The example pod grown to `containers` app containers sharing `env_total` env vars.
fn huge_pod(mode: &str, containers: usize, env_total: usize) -> Value {
    let mut pod = example_review(mode)["request"]["object"].clone();
    let template = pod["spec"]["containers"][0].clone();
    let per = env_total / containers;
    let list: Vec<Value> = (0..containers)
        .map(|c| {
            let mut container = template.clone();
            container["name"] = json!(format!("app-{c}"));
            container["env"] = (0..per)
                .map(
                    |i| json!({"name": format!("SETTING_{c}_{i}"), "value": format!("value-{c}-{i}-some-config-text")}),
                )
                .collect();
            container["ports"] = json!([{"containerPort": 9000 + c, "protocol": "TCP"}]);
            container
        })
        .collect();
    pod["spec"]["containers"] = Value::Array(list);
    pod
}

fn review_bytes(mode: &str, pod: &Value) -> Vec<u8> {
    let mut review = example_review(mode);
    review["request"]["object"] = pod.clone();
    serde_json::to_vec(&review).expect("serialise review")
}

fn assert_injects(pod: &Value, config: &Config) {
    match decide::admit_pod(pod, "demo", config) {
        Decision::Allow { patch, .. } => assert!(!patch.is_empty(), "benchmark pod was not injected"),
        d => panic!("benchmark pod was denied: {d:?}"),
    }
}

fn per_mode(c: &mut Criterion) {
    let config = Config::builtin().expect("built-in config");
    for (size, pod_of) in [
        ("typical", (|m: &str| example_review(m)["request"]["object"].clone()) as fn(&str) -> Value),
        ("huge", |m: &str| huge_pod(m, 30, 1_500)),
    ] {
        // The decision on the pod as the webhook reads it (a `JsonRef` borrowing the pod's
        // strings), without the parse, which `review_bytes` includes.
        let mut group = c.benchmark_group(format!("decide/{size}"));
        if size == "huge" {
            group.measurement_time(Duration::from_secs(4));
        }
        for mode in MODES {
            let pod = pod_of(mode);
            assert_injects(&pod, &config);
            let view = JsonRef::from(&pod);
            group.bench_with_input(BenchmarkId::from_parameter(mode), &view, |b, view| {
                b.iter(|| decide::decide(black_box(view), "demo", &config))
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("review_bytes/{size}"));
        for mode in MODES {
            let body = review_bytes(mode, &pod_of(mode));
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_with_input(BenchmarkId::from_parameter(mode), &body, |b, body| {
                b.iter(|| review::review(black_box(body), &config).expect("review answers"))
            });
        }
        group.finish();
    }
}

/// Same mode, the huge pod at 1/4, 1/2, 1x and 2x of (30 containers, 1,500 env vars).
fn scaling(c: &mut Criterion) {
    let config = Config::builtin().expect("built-in config");
    let mut group = c.benchmark_group("scaling/sidecar_review");
    for (containers, env) in [(8, 376), (15, 750), (30, 1_500), (60, 3_000)] {
        let body = review_bytes("sidecar", &huge_pod("sidecar", containers, env));
        group.throughput(Throughput::Elements(env as u64));
        group.bench_with_input(BenchmarkId::from_parameter(format!("{containers}c_{env}env")), &body, |b, body| {
            b.iter(|| review::review(black_box(body), &config).expect("review answers"))
        });
    }
    group.finish();
}

criterion_group!(benches, per_mode, scaling);
criterion_main!(benches);
