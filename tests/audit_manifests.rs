//! `secretmode audit` over manifests, through the real binary: golden outputs for every
//! format, the SARIF output against the official SARIF 2.1.0 schema, stdin, and exit codes.
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test --test audit_manifests` (refused when
//! `CI=true`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CONFIG: &str = "tests/fixtures/audit/config.yaml";
const MANIFESTS: &str = "tests/fixtures/audit/manifests";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `secretmode audit` from the repository root, so paths in the output are relative.
fn audit(args: &[&str], stdin: Option<&str>) -> Output {
    support::audit::run(args, stdin.unwrap_or(""))
}

fn golden(name: &str, actual: &str) {
    support::golden::check(&root().join("tests/fixtures/audit/golden").join(name), actual);
}

#[test]
fn golden_outputs_for_every_format() {
    for (format, file) in [
        ("table", "manifests.txt"),
        ("json", "manifests.json"),
        ("sarif", "manifests.sarif"),
        ("markdown", "manifests.md"),
    ] {
        let out = audit(&["--config", CONFIG, "--format", format, MANIFESTS], None);
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        // Enforce-level violations and a pod the webhook would deny: exit 1.
        assert_eq!(out.status.code(), Some(1), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{format}: nothing on stderr: {}", String::from_utf8_lossy(&out.stderr));
        golden(file, &stdout);
        // Deterministic: a second run prints the same bytes.
        let again = audit(&["--config", CONFIG, "--format", format, MANIFESTS], None);
        assert_eq!(String::from_utf8_lossy(&again.stdout), stdout, "{format} is not deterministic");
    }
}

#[test]
fn json_report_judges_like_the_webhook() {
    let out = audit(&["--config", CONFIG, "--format", "json", MANIFESTS], None);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let find = |kind: &str, name: &str| {
        report["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["kind"] == kind && w["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name} missing"))
            .clone()
    };
    let ledger = find("StatefulSet", "ledger");
    assert_eq!(ledger["webhook"], "deny");
    assert_eq!(ledger["outage"]["newPods"], "blocked in ContainerCreating");
    let billing = find("Deployment", "billing");
    assert_eq!(billing["rendered"], serde_json::json!(["app.env (dotenv)", "db-dsn (template)"]));
    assert!(find("DaemonSet", "agent").get("rendered").is_none(), "no rendered files: no field");
    let cron = find("CronJob", "report");
    assert_eq!(cron["mode"], "sidecar");
    assert_eq!(cron["modeSource"], "policyDefault");
    let api = find("Deployment", "api");
    assert_eq!(api["outage"]["newPods"], "start from the fallback Secret, flagged");
    assert_eq!(api["staleness"], "max 30m (refresh 2m)");
    let agent = find("DaemonSet", "agent");
    assert_eq!(agent["staleness"], "ESO refresh 15m");
    let hand = find("Deployment", "reports");
    assert_eq!(hand["modeSource"], "handBuilt");
    assert_eq!(report["summary"]["skipped"]["ConfigMap"], 1);
    assert_eq!(report["summary"]["skipped"]["Kustomization"], 1);
    let checks: Vec<&str> =
        report["findings"].as_array().unwrap().iter().map(|f| f["check"]["id"].as_str().unwrap()).collect();
    for id in ["SM001", "SM002", "SM003", "SM004", "SM005", "SM006", "SM007"] {
        assert!(checks.contains(&id), "{id} not reported: {checks:?}");
    }
}

#[test]
fn sarif_output_is_valid_sarif_2_1_0() {
    let out = audit(&["--config", CONFIG, "--format", "sarif", MANIFESTS], None);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["runs"][0]["results"].as_array().is_some_and(|r| !r.is_empty()), "no results");
    if let Err(e) = support::audit::sarif_errors(&out.stdout) {
        panic!("SARIF invalid:\n{e}");
    }
    // A broken document must fail the same check, or the check proves nothing.
    let mut broken = doc;
    broken["runs"][0]["results"][0]["level"] = serde_json::json!("fatal");
    let broken = serde_json::to_vec(&broken).unwrap();
    assert!(support::audit::sarif_errors(&broken).is_err(), "the schema check accepted an invalid level");
}

#[test]
fn exit_zero_when_only_warnings() {
    let out = audit(&["--config", CONFIG, "tests/fixtures/audit/manifests/team-a"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("warn (teams: 2)"), "{stdout}");
}

#[test]
fn stdin_is_read_with_dash() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: payments}\nspec: {containers: [{name: a, image: x}]}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: q\n  annotations: {secrets/mode: csi, secrets/csi-class: c, secrets/item.a: a}\nspec: {containers: [{name: a, image: x}]}\n";
    let out = audit(&["--config", CONFIG, "--format", "json", "-n", "payments", "-"], Some(pod));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["workloads"], 2);
    let q = &report["workloads"][1];
    assert_eq!(
        (q["name"].as_str(), q["namespace"].as_str(), q["file"].as_str()),
        (Some("q"), Some("payments"), Some("<stdin>"))
    );
    assert_eq!(q["line"], 6);
}

#[test]
fn unreadable_input_exits_2_with_file_and_line() {
    let out = audit(&["tests/fixtures/audit/broken"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("tests/fixtures/audit/broken/bad.yaml:5: not YAML"), "{err}");
    assert!(out.stdout.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.yaml");
    std::fs::write(&text, "apiVersion: v1\nkind: ConfigMap\n---\nthis is prose, not a manifest\n").unwrap();
    let out = audit(&[text.to_str().unwrap()], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("notes.yaml:4: not a Kubernetes object"), "{err}");

    let missing: PathBuf = dir.path().join("absent.yaml");
    let out = audit(&[missing.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.yaml: cannot read"));

    // A workload kind without a pod template is unreadable too.
    std::fs::write(&text, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n").unwrap();
    let out = audit(&[text.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Deployment d has no pod template"));
}

#[test]
fn unknown_kinds_are_skipped_and_counted() {
    let input = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n---\n{}\n";
    let out = audit(&["--format", "json", "-"], Some(input));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["workloads"], 0);
    assert_eq!(report["summary"]["skipped"], serde_json::json!({"(no kind)": 1, "Namespace": 1, "Widget": 1}));
}

#[test]
fn bad_policy_file_fails_the_command_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        std::fs::read_to_string(root().join(CONFIG)).unwrap().replace("enforcement: warn", "enforcement: loud");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config).unwrap();
    let out = audit(&["--config", path.to_str().unwrap(), MANIFESTS], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("enforcement") && err.contains("loud"), "{err}");
}

/// On CI a golden file is never rewritten: `UPDATE_GOLDEN` with `CI=true` fails the golden
/// test instead of regenerating its files (and so passing by construction).
#[test]
fn update_golden_is_refused_on_ci() {
    let run = Command::new(std::env::current_exe().expect("test binary"))
        .args(["golden_outputs_for_every_format", "--exact", "--test-threads", "1"])
        .env("CI", "true")
        .env("UPDATE_GOLDEN", "1")
        .output()
        .expect("run the golden test");
    let out = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(!run.status.success(), "{out}");
    assert!(out.contains("UPDATE_GOLDEN is refused on CI"), "{out}");
}

/// `-f` as kubectl users type it (files and directories, repeatable, `--filename` too) audits
/// the same objects as the positional paths.
#[test]
fn dash_f_takes_files_and_directories() {
    let positional = audit(&["--config", CONFIG, "--format", "json", MANIFESTS, "examples/eso"], None);
    let flagged = audit(&["--config", CONFIG, "--format", "json", "-f", MANIFESTS, "--filename", "examples/eso"], None);
    assert_eq!(flagged.status.code(), positional.status.code(), "{}", String::from_utf8_lossy(&flagged.stderr));
    assert_eq!(String::from_utf8_lossy(&flagged.stdout), String::from_utf8_lossy(&positional.stdout));
    let report: serde_json::Value = serde_json::from_slice(&flagged.stdout).unwrap();
    assert!(report["workloads"].as_array().unwrap().iter().any(|w| w["name"] == "payments-eso"), "{report}");

    let none = audit(&[], None);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("fix: name files or directories"));
}

/// A non-root app without `fsGroup` cannot read a Secret volume's 0440 root-owned files: the
/// audit reports the warning `mutate` prints, word for word.
#[test]
fn unreadable_files_are_reported_as_mutate_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\n  namespace: shop\n  annotations:\n    secrets/mode: eso\n    secrets/eso-secret: db\n    secrets/item.password: password\nspec:\n  securityContext: {runAsNonRoot: true, runAsUser: 1000}\n  containers: [{name: app, image: x}]\n",
    )
    .unwrap();
    let mutated = Command::new(env!("CARGO_BIN_EXE_secretmode")).args(["mutate", "-f"]).arg(&pod).output().unwrap();
    assert!(mutated.status.success());
    let stderr = String::from_utf8_lossy(&mutated.stderr);
    let warning = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Warning: ").filter(|w| w.contains("can read them")))
        .unwrap_or_else(|| panic!("mutate warns: {stderr}"));

    let out = audit(&["--format", "json", "-f", pod.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "a warning, not an error: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    let unreadable: Vec<_> = findings.iter().filter(|f| f["check"]["id"] == "SM014").collect();
    assert_eq!(unreadable.len(), 1, "{findings:?}");
    assert_eq!(unreadable[0]["message"], warning);
    assert_eq!(unreadable[0]["level"], "warning");

    // With fsGroup the app can read its files: no finding.
    std::fs::write(
        &pod,
        std::fs::read_to_string(&pod).unwrap().replace("runAsUser: 1000", "runAsUser: 1000, fsGroup: 1000"),
    )
    .unwrap();
    let out = audit(&["--format", "json", "-f", pod.to_str().unwrap()], None);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!report["findings"].as_array().unwrap().iter().any(|f| f["check"]["id"] == "SM014"), "{report}");
}
