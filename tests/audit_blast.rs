//! `secretmode audit --assume-down PROVIDER [--fail-on CONDITION]` over manifests, through the
//! real binary: golden outputs for every format on the mixed fixture, the totals and each
//! `--fail-on` condition (scoped and not) on it and on tests/fixtures/audit/blast (unknown
//! providers, a DaemonSet, zero replicas, a denied pod), SARIF against the SARIF 2.1.0 schema,
//! and exit 2 with the fix for bad values. The `--cluster` golden is in tests/audit_cluster.rs.
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test --test audit_blast` (refused when
//! `CI=true`).

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;

const CONFIG: &str = "tests/fixtures/audit/mixed-config.yaml";
const MIXED: &str = "tests/fixtures/audit/mixed";
const EDGE: &str = "tests/fixtures/audit/blast";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `secretmode audit --config CONFIG ARGS` from the repository root.
fn audit_stdin(args: &[&str], stdin: &str) -> Output {
    support::audit::run(&[&["--config", CONFIG], args].concat(), stdin)
}

fn audit(args: &[&str]) -> Output {
    audit_stdin(args, "")
}

/// The JSON report and the exit code.
fn json(args: &[&str]) -> (Value, i32) {
    let out = audit(&[args, &["--format", "json"]].concat());
    assert!(out.stderr.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).expect("json"), out.status.code().unwrap_or(-1))
}

/// SM015 findings as `namespace/Kind/name: message`.
fn gate(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"]["id"] == "SM015")
        .map(|f| format!("{}/{}: {}", f["namespace"].as_str().unwrap(), f["object"].as_str().unwrap(), f["message"]))
        .collect()
}

fn affected<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["blastRadius"]["affected"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} not affected"))
}

fn namespace<'a>(report: &'a Value, ns: &str) -> &'a Value {
    report["blastRadius"]["namespaces"].as_array().unwrap().iter().find(|t| t["namespace"] == ns).unwrap()
}

#[test]
fn golden_outputs_for_every_format() {
    let args = [MIXED, "--assume-down", "vault", "--fail-on", "blocked@prod-*"];
    for (format, file) in
        [("table", "blast.txt"), ("json", "blast.json"), ("sarif", "blast.sarif"), ("markdown", "blast.md")]
    {
        let out = audit(&[&args[..], &["--format", format]].concat());
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        // ledger (init) and search (csi) in prod-*: new pods cannot start.
        assert_eq!(out.status.code(), Some(1), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        support::golden::check(&root().join("tests/fixtures/audit/golden").join(file), &stdout);
        let again = audit(&[&args[..], &["--format", format]].concat());
        assert_eq!(String::from_utf8_lossy(&again.stdout), stdout, "{format} is not deterministic");
    }
}

/// The numbers of the mixed fixture with Vault down, from the timing model.
#[test]
fn vault_down_on_the_mixed_fixture() {
    let (report, code) = json(&[MIXED, "--assume-down", "vault"]);
    // Without --fail-on the blast radius is a report: only the fixture's warnings, exit 0.
    assert_eq!(code, 0);
    assert!(gate(&report).is_empty());
    let b = &report["blastRadius"];
    assert_eq!(b["down"], serde_json::json!(["vault"]));
    assert!(b.get("failOn").is_none());

    let api = affected(&report, "api");
    assert_eq!((api["mode"].as_str(), api["pods"].as_u64()), (Some("sidecar"), Some(3)));
    assert_eq!(api["newPods"], "fromFallback");
    assert_eq!(api["stale"], "after 9m–10m", "max-staleness 10m, refresh 1m");
    assert_eq!(api["runningPods"], "keep serving, fresh for 9m–10m");
    assert_eq!((api["staleEarliestSeconds"].as_u64(), api["staleLatestSeconds"].as_u64()), (Some(540), Some(600)));
    let ledger = affected(&report, "ledger");
    assert_eq!(
        (ledger["newPods"].as_str(), ledger["stale"].as_str()),
        (Some("blocked"), Some("never (fixed at start)"))
    );
    let search = affected(&report, "search");
    assert_eq!((search["newPods"].as_str(), search["stale"].as_str()), (Some("blocked"), Some("within 2m")));
    let web = affected(&report, "web");
    assert_eq!((web["newPods"].as_str(), web["stale"].as_str()), (Some("start"), Some("within 15m")));
    assert_eq!(web["provider"], "vault", "ClusterSecretStore/vault is listed under providerLoad.vault");

    let unaffected: Vec<String> = b["unaffected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            format!("{}/{}: {}", u["kind"].as_str().unwrap(), u["name"].as_str().unwrap(), u["why"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        unaffected,
        [
            "CronJob/cleanup: provider aws",
            "DaemonSet/node-agent: provider aws",
            "Deployment/reports: provider aws",
            "Deployment/cart: provider aws",
            "Deployment/legacy: no mode"
        ]
    );

    let total = &b["total"];
    assert_eq!((total["affected"].as_u64(), total["unaffected"].as_u64()), (Some(4), Some(5)));
    assert_eq!(total["cannotBeReplaced"], serde_json::json!({"pods": 4, "perNode": 0}), "ledger 2 + search 2");
    assert_eq!(total["fromFallback"], serde_json::json!({"pods": 3, "perNode": 0}), "api 3");
    // Of the workloads that may be stale at once, the one surely stale first.
    assert_eq!(total["firstStale"]["workload"], "prod-shop/Deployment/search");
    assert_eq!(total["firstStale"]["stale"], "within 2m");
    let payments = namespace(&report, "prod-payments");
    assert_eq!(payments["cannotBeReplaced"]["pods"], 2);
    assert_eq!(payments["firstStale"]["workload"], "prod-payments/Deployment/api");
    let dev = namespace(&report, "dev-tools");
    assert_eq!((dev["affected"].as_u64(), dev["unaffected"].as_u64()), (Some(0), Some(3)));
    assert!(dev.get("firstStale").is_none());
}

/// Both providers down, as a repeated flag and as a comma list: every workload with a mode is
/// affected, and the DaemonSet counts per node.
#[test]
fn several_providers_and_daemonsets() {
    let (a, _) = json(&[MIXED, "--assume-down", "vault", "--assume-down", "aws"]);
    let (b, _) = json(&[MIXED, "--assume-down", "aws,vault"]);
    assert_eq!(a, b);
    let total = &a["blastRadius"]["total"];
    assert_eq!((total["affected"].as_u64(), total["unaffected"].as_u64()), (Some(8), Some(1)));
    // reports (csi) 1 + ledger 2 + search 2, and the node-agent sidecar DaemonSet on every node.
    assert_eq!(total["cannotBeReplaced"], serde_json::json!({"pods": 5, "perNode": 1}));
    // cleanup (init CronJob, parallelism 1) + api 3.
    assert_eq!(total["fromFallback"], serde_json::json!({"pods": 4, "perNode": 0}));
    let agent = affected(&a, "node-agent");
    assert_eq!((agent["pods"].as_u64(), agent["perNode"].as_bool()), (Some(1), Some(true)));
    assert_eq!(agent["stale"], "after 4m30s–5m");
    let cart = affected(&a, "cart");
    assert_eq!(cart["provider"], "aws", "SecretStore aws-store has the only aws-type provider");
    assert_eq!(cart["stale"], "never (fixed at start)", "refreshInterval 0 syncs once");
    let out = audit(&[MIXED, "--assume-down", "aws,vault"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BLAST RADIUS: aws, vault down"), "{text}");
    assert!(text.contains("Pods that cannot be replaced: 5 + 1 per node"), "{text}");
    assert!(text.contains("DaemonSets count as one pod per node."), "{text}");
}

/// Each condition, scoped and not, on the mixed fixture with Vault down.
#[test]
fn each_fail_on_condition() {
    let cases: [(&[&str], &[&str]); 8] = [
        (&["blocked"], &["prod-payments/StatefulSet/ledger", "prod-shop/Deployment/search"]),
        (&["blocked@prod-payments"], &["prod-payments/StatefulSet/ledger"]),
        // Vault's blocked workloads are all in prod-*: a promise about dev-* holds.
        (&["blocked@dev-*"], &[]),
        (&["fallback"], &["prod-payments/Deployment/api"]),
        (&["fallback@prod-shop"], &[]),
        // api is fresh for 9m at least; search and web may be due a refresh as the outage starts.
        (&["stale-within=5m"], &["prod-shop/Deployment/search", "prod-shop/Deployment/web"]),
        (
            &["stale-within=10m"],
            &["prod-payments/Deployment/api", "prod-shop/Deployment/search", "prod-shop/Deployment/web"],
        ),
        (&["unknown"], &[]),
    ];
    for (conditions, want) in cases {
        let mut args = vec![MIXED, "--assume-down", "vault"];
        for c in conditions {
            args.extend(["--fail-on", c]);
        }
        let (report, code) = json(&args);
        let met: Vec<String> = gate(&report).iter().map(|g| g.split(':').next().unwrap().to_string()).collect();
        assert_eq!(met, want, "{conditions:?}: {:?}", gate(&report));
        assert_eq!(code, i32::from(!want.is_empty()), "{conditions:?}: exit 1 exactly when a condition is met");
        assert_eq!(report["blastRadius"]["failed"].as_u64(), Some(want.len() as u64));
        assert_eq!(report["summary"]["errors"].as_u64(), Some(want.len() as u64), "SM015 counted as errors");
        for g in gate(&report) {
            assert!(g.contains(&format!("{}: ", conditions[0])) && g.contains("; fix: "), "{g}");
        }
    }
    let (report, _) = json(&[MIXED, "--assume-down", "vault", "--fail-on", "blocked"]);
    let messages = gate(&report).join("\n");
    assert!(
        messages.contains(
            "new init pods cannot start while vault is down; fix: add secrets/fallback-secret or use mode eso"
        ),
        "{messages}"
    );
    assert!(messages.contains("new csi pods cannot start while vault is down; fix: use mode eso"), "{messages}");
}

/// Providers that cannot be told count as down (and `unknown` fails on them), a DaemonSet
/// counts per node, zero replicas count zero, a denied pod is unaffected.
#[test]
fn edge_cases() {
    let (report, code) = json(&[EDGE, "--assume-down", "vault", "--fail-on", "unknown", "--fail-on", "blocked@prod-*"]);
    assert_eq!(code, 1);
    let maps = affected(&report, "maps");
    assert_eq!(
        maps["provider"],
        "provider not known: SecretProviderClass maps-spc (provider gcp): no provider of that type in the config; \
         list it in providerLoad.<provider>.csiProviders"
    );
    let orphan = affected(&report, "orphan");
    assert_eq!(orphan["provider"], "provider not known: no ExternalSecret writes Secret orphan-creds");
    assert_eq!(
        (orphan["newPods"].as_str(), orphan["stale"].as_str()),
        (Some("start"), Some("unknown (no ExternalSecret found)"))
    );
    assert!(orphan.get("staleEarliestSeconds").is_none());
    assert_eq!(affected(&report, "parked")["pods"], 0);
    let b = &report["blastRadius"];
    assert_eq!(b["unaffected"][0]["why"], "the webhook denies it: no pod starts, provider or not");
    let edge = namespace(&report, "prod-edge");
    // maps 2 + parked 0, and the init DaemonSet on every node.
    assert_eq!(edge["cannotBeReplaced"], serde_json::json!({"pods": 2, "perNode": 1}));
    assert!(edge.get("firstStale").is_none(), "nothing in prod-edge has a known staleness window");
    let gates = gate(&report);
    let met = |text: &str| gates.iter().filter(|g| g.contains(text)).count();
    assert_eq!(met("unknown: provider not known"), 2, "{gates:?}");
    assert!(
        gates.iter().any(|g| g.starts_with("prod-edge/Deployment/maps")
            && g.contains("fix: list it in providerLoad.<provider>.csiProviders")),
        "{gates:?}"
    );
    assert!(gates.iter().any(|g| g.contains("(if it depends on it: its provider is not known)")), "{gates:?}");
    // Zero replicas: a scale-up would still be blocked, so the promise is broken.
    assert!(
        gates.iter().any(|g| g.starts_with("prod-edge/Deployment/parked") && g.contains("blocked@prod-*")),
        "{gates:?}"
    );
    assert_eq!(met("blocked@prod-*"), 3, "collector, maps, parked: {gates:?}");
    // An unknown staleness cannot promise anything.
    let (report, _) = json(&[EDGE, "--assume-down", "vault", "--fail-on", "stale-within=2h"]);
    let gates = gate(&report).join("\n");
    assert!(gates.contains("orphan: \"stale-within=2h: when running eso pods go stale is not known"), "{gates}");
    assert!(gates.contains("batch: \"stale-within=2h: running sidecar pods may go stale after 55m–1h"), "{gates}");
}

#[test]
fn stdin_works_with_assume_down() {
    let text = std::fs::read_to_string(root().join(MIXED).join("prod-payments.yaml")).unwrap();
    let out = audit_stdin(&["-", "--assume-down", "vault", "--fail-on", "fallback", "--format", "json"], &text);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["blastRadius"]["total"]["affected"], 2);
}

#[test]
fn bad_values_exit_2_with_the_fix() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["--assume-down", "consul"],
            "--assume-down \"consul\" is not a provider of the config; fix: use one of aws, vault",
        ),
        (
            &["--assume-down", "vault,"],
            "--assume-down \"\" is not a provider of the config; fix: use one of aws, vault",
        ),
        (&["--fail-on", "blocked"], "the following required arguments were not provided:\n  --assume-down <PROVIDER>"),
        (
            &["--assume-down", "vault", "--fail-on", "down"],
            "\"down\" is not a condition; fix: use blocked, fallback, stale-within=DURATION",
        ),
        (&["--assume-down", "vault", "--fail-on", "stale-within=1d"], "stale-within: \"1d\" has an unknown unit \"d\""),
        (&["--assume-down", "vault", "--fail-on", "blocked@PROD_*"], "\"PROD_*\" is not a namespace name or glob"),
    ];
    for (args, says) in cases {
        let out = audit(&[&[MIXED][..], args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: no report on a usage error");
    }
}

#[test]
fn sarif_is_valid_sarif_2_1_0_and_carries_the_gate() {
    let out = audit(&[MIXED, "--assume-down", "vault", "--fail-on", "blocked", "--format", "sarif"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &doc["runs"][0];
    let rules: Vec<&str> =
        run["tool"]["driver"]["rules"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    let sm015 = rules.iter().position(|r| *r == "SM015").expect("SM015 is a rule");
    let results: Vec<&Value> = run["results"].as_array().unwrap().iter().filter(|r| r["ruleId"] == "SM015").collect();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!((r["level"].as_str(), r["ruleIndex"].as_u64()), (Some("error"), Some(sm015 as u64)));
        assert!(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].as_str().unwrap().starts_with(MIXED));
    }
    assert_eq!(run["properties"]["blastRadius"]["total"]["cannotBeReplaced"]["pods"], 4);

    if let Err(e) = support::audit::sarif_errors(&out.stdout) {
        panic!("SARIF invalid:\n{e}");
    }
    // A property bag that is not an object must fail the same check, or it proves nothing here.
    let mut broken = doc.clone();
    broken["runs"][0]["properties"] = serde_json::json!("blast");
    let broken = serde_json::to_vec(&broken).unwrap();
    assert!(support::audit::sarif_errors(&broken).is_err(), "the schema check accepted a string property bag");
}

/// Without --assume-down nothing changes: no blastRadius key, no SM015.
#[test]
fn without_the_flag_the_report_is_unchanged() {
    let (report, code) = json(&[MIXED]);
    assert_eq!(code, 0);
    assert!(report.get("blastRadius").is_none());
    let out = audit(&[MIXED, "--format", "sarif"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["runs"][0].get("properties").is_none());
}
