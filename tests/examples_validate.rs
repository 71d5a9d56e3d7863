//! Every example is real: built-in kinds pass `kubernetes-validate --strict`, custom resources
//! (ExternalSecret, SecretStore, SecretProviderClass) pass the structural CRD checks, every
//! Deployment's pod is admitted by `secretmode mutate` with examples/config.yaml and the
//! mutated pod validates too, the AdmissionReview requests are up to date and answered, and
//! examples/policy.yaml is exactly the policy inside examples/config.yaml.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_secretmode");
const MODES: [&str; 4] = ["eso", "csi", "init", "sidecar"];

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn load(path: &Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_manifest(v: &Value) -> bool {
    v.get("apiVersion").is_some() && v.get("kind").is_some()
}

fn is_custom(v: &Value) -> bool {
    let api = v["apiVersion"].as_str().unwrap_or_default();
    ["external-secrets.io/", "secrets-store.csi.x-k8s.io/", "cert-manager.io/", "monitoring.coreos.com/"]
        .iter()
        .any(|p| api.starts_with(p))
}

#[test]
fn every_manifest_validates() {
    let files = yaml_files(&examples());
    let manifests: Vec<(PathBuf, Value)> =
        files.into_iter().map(|f| (f.clone(), load(&f))).filter(|(_, v)| is_manifest(v)).collect();
    let (custom, builtin): (Vec<_>, Vec<_>) = manifests.iter().partition(|(_, v)| is_custom(v));
    assert!(builtin.len() >= 5, "namespace + four Deployments at least");
    support::kubernetes_validate(&builtin.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>());

    let kinds: Vec<String> = custom
        .iter()
        .map(|(_, v)| format!("{} {}", v["apiVersion"].as_str().unwrap(), v["kind"].as_str().unwrap()))
        .collect();
    for want in [
        "external-secrets.io/v1 ExternalSecret",
        "external-secrets.io/v1 SecretStore",
        "secrets-store.csi.x-k8s.io/v1 SecretProviderClass",
    ] {
        assert!(kinds.iter().any(|k| k == want), "missing {want}");
    }
    let run = Command::new(support::venv_bin("python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/crd_check.py"))
        .args(custom.iter().map(|(f, _)| f))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stdout));
}

fn mutate(file: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["mutate", "--config"])
        .arg(examples().join("config.yaml"))
        .args(extra)
        .arg("-f")
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn one_deployment_per_mode_each_admitted_and_valid_after_mutation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut mutated = Vec::new();
    let mut saw_fallback = false;
    let mut providers = Vec::new();
    for mode in MODES {
        let deployment = load(&examples().join(mode).join("deployment.yaml"));
        assert_eq!(deployment["kind"], "Deployment");
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["secrets/mode"], mode);
        saw_fallback |= annotations.get("secrets/fallback-secret").is_some();
        if let Some(p) = annotations["secrets/provider"].as_str() {
            providers.push(p.to_string());
        }
        let pod_file = tmp.path().join(format!("{mode}-pod.json"));
        std::fs::write(&pod_file, serde_json::to_vec(&support::pods::of_template(&deployment)).unwrap()).unwrap();
        let out = mutate(&pod_file, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {stderr}");
        assert!(
            stderr.contains(&format!("secretmode {mode}")),
            "{mode}: the failure-mode warning names the mode: {stderr}"
        );
        assert!(
            !stderr.contains("so the app can read them"),
            "{mode}: the example's app cannot read its files: {stderr}"
        );
        let pod: Value = serde_yaml::from_slice(&out.stdout).unwrap();
        assert!(serde_json::to_string(&pod).unwrap().contains("secretmode-"), "{mode}: nothing injected");
        let path = tmp.path().join(format!("{mode}-mutated.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&pod).unwrap()).unwrap();
        mutated.push(path);
    }
    assert!(saw_fallback, "one example shows secrets/fallback-secret");
    providers.sort();
    assert_eq!(providers, ["aws", "vault"], "init and sidecar use the built-in providers");
    support::kubernetes_validate(&mutated);
}

/// The examples of issue 24 (`<mode>/deployment-*.yaml`): env values in every mode, and an
/// on-change action in every mode that has one. Each is admitted with examples/config.yaml,
/// warned about what it costs, carries what the feature injects, and validates once mutated.
#[test]
fn env_values_and_on_change_examples_are_admitted_and_valid_after_mutation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut mutated = Vec::new();
    let mut on_change_modes = Vec::new();
    for mode in MODES {
        let files: Vec<PathBuf> = std::fs::read_dir(examples().join(mode))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("deployment-")))
            .collect();
        assert_eq!(files.len(), 1, "{mode}: one env-values/on-change example");
        let deployment = load(&files[0]);
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["secrets/mode"], mode);
        assert_eq!(annotations["secrets/env-values"], "true", "{mode}: every mode shows env values");
        let on_change = annotations.get("secrets/on-change").is_some();
        if on_change {
            on_change_modes.push(mode);
        }
        let pod_file = tmp.path().join(format!("{mode}-notify-pod.json"));
        std::fs::write(&pod_file, serde_json::to_vec(&support::pods::of_template(&deployment)).unwrap()).unwrap();
        let out = mutate(&pod_file, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {stderr}");
        assert!(stderr.contains("/proc/<pid>/environ"), "{mode}: the env-values warning: {stderr}");
        assert!(!stderr.contains("so the app can read them"), "{mode}: {stderr}");
        let pod: Value = serde_yaml::from_slice(&out.stdout).unwrap();
        let app = &pod["spec"]["containers"].as_array().unwrap().iter().find(|c| c["name"] == "app").unwrap().clone();
        let wrapped = app["command"][0] == "/var/run/secrets/secretmode/bin/secretmode-exec";
        assert_eq!(wrapped, mode != "eso", "{mode}: {}", app["command"]);
        if on_change {
            assert_eq!(pod["spec"]["shareProcessNamespace"], true, "{mode}: the examples signal the app");
            let text = serde_json::to_string(&pod).unwrap();
            assert_eq!(text.contains("secretmode-watcher"), mode == "eso" || mode == "csi", "{mode}");
        }
        let path = tmp.path().join(format!("{mode}-notify-mutated.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&pod).unwrap()).unwrap();
        mutated.push(path);
    }
    assert_eq!(on_change_modes, ["eso", "csi", "sidecar"], "init denies on-change");
    support::kubernetes_validate(&mutated);
}

/// The examples of issue 25 (`<mode>/rendered-*.yaml`): a DSN template rendered by the
/// sidecar agent, and bundles rendered beside an ESO Secret by the render step and the
/// watcher. Each is admitted with examples/config.yaml, carries what renders it, and validates
/// once mutated.
#[test]
fn rendered_file_examples_are_admitted_and_valid_after_mutation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut mutated = Vec::new();
    for (mode, file, vars) in [
        ("sidecar", "rendered-dsn.yaml", &["DB_URL_FILE"][..]),
        ("eso", "rendered-bundle.yaml", &["APP_ENV_FILE", "CREDS_JSON_FILE"][..]),
    ] {
        let deployment = load(&examples().join(mode).join(file));
        let pod_file = tmp.path().join(format!("{mode}-rendered-pod.json"));
        std::fs::write(&pod_file, serde_json::to_vec(&support::pods::of_template(&deployment)).unwrap()).unwrap();
        let out = mutate(&pod_file, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {stderr}");
        let pod: Value = serde_yaml::from_slice(&out.stdout).unwrap();
        let text = serde_json::to_string(&pod).unwrap();
        let app = pod["spec"]["containers"].as_array().unwrap().iter().find(|c| c["name"] == "app").unwrap();
        for var in vars {
            assert!(app["env"].as_array().unwrap().iter().any(|e| e["name"] == *var), "{mode}: no {var}");
        }
        if mode == "eso" {
            assert!(text.contains("secretmode-render") && text.contains("secretmode-watcher"), "{mode}");
            assert!(stderr.contains("secretmode-render"), "{mode}: the render step is announced: {stderr}");
        } else {
            assert!(!text.contains("secretmode-render"), "{mode}: the agent renders");
            assert!(text.contains("urlescape"), "{mode}: the template is in the agent's spec");
        }
        let path = tmp.path().join(format!("{mode}-rendered-mutated.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&pod).unwrap()).unwrap();
        mutated.push(path);
    }
    support::kubernetes_validate(&mutated);
}

#[test]
fn admission_requests_are_current_api_server_shaped_and_answered() {
    let run = Command::new(support::venv_bin("python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/admission_requests.py"))
        .arg(examples())
        .arg("--check")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stdout));

    let mut uids = Vec::new();
    for mode in MODES {
        let path = examples().join("admission").join(format!("{mode}.json"));
        let review: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        let req = &review["request"];
        for key in [
            "uid",
            "kind",
            "resource",
            "requestKind",
            "requestResource",
            "namespace",
            "operation",
            "userInfo",
            "object",
            "options",
        ] {
            assert!(!req[key].is_null(), "{mode}: request.{key}");
        }
        assert_eq!(req["kind"], json!({"group": "", "version": "v1", "kind": "Pod"}));
        assert_eq!(req["resource"], json!({"group": "", "version": "v1", "resource": "pods"}));
        assert_eq!(req["operation"], "CREATE");
        assert!(req["oldObject"].is_null() && req.as_object().unwrap().contains_key("oldObject"));
        assert_eq!(req["dryRun"], false);
        assert_eq!(req["options"], json!({"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}));
        assert!(
            req["object"]["metadata"].get("name").is_none() && req["object"]["metadata"]["generateName"].is_string()
        );
        assert_eq!(req["object"]["metadata"]["annotations"]["secrets/mode"], mode);
        uids.push(req["uid"].as_str().unwrap().to_string());

        // The decision offline equals an allowed patch for each.
        let out = mutate(&path, &["--patch"]);
        assert!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
        let patch: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(!patch.as_array().unwrap().is_empty(), "{mode}: empty patch");
    }
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 4, "distinct uids");
}

#[test]
fn policy_example_is_the_policy_in_the_config_example() {
    let config = secretmode::config::Config::load(&examples().join("config.yaml")).unwrap();
    let policy: secretmode::config::policy::PolicyConfig =
        serde_yaml::from_str(&std::fs::read_to_string(examples().join("policy.yaml")).unwrap()).unwrap();
    assert!(policy.rules.len() >= 3);
    assert_eq!(config.policy, policy);
    // And the examples run where the config's policy says they may.
    assert!(policy.rules.iter().any(|r| r.namespaces.iter().any(|n| n == "demo")));
}
