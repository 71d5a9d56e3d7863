//! `secretmode mutate`: the webhook's decision offline, through the real binary.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn mutate(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_secretmode"))
        .arg("mutate")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

const POD_YAML: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  annotations:
    secrets/mode: sidecar
    secrets/item.db-password: shop/db#password
spec:
  containers:
    - name: web
      image: nginx:1.27
"#;

#[test]
fn pod_yaml_in_patched_yaml_out() {
    let out = mutate(&["-f", "-"], POD_YAML);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pod: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "secretmode-sidecar");
    assert_eq!(pod["spec"]["containers"][0]["env"][0]["name"], "DB_PASSWORD_FILE");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Warning: secretmode sidecar"));
}

#[test]
fn patch_flag_prints_the_json_patch() {
    let out = mutate(&["-f", "-", "--patch"], POD_YAML);
    assert!(out.status.success());
    let patch: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(patch.as_array().unwrap().iter().any(|op| op["path"] == "/spec/initContainers"));
}

#[test]
fn json_and_admission_reviews_are_accepted() {
    let pod: Value = serde_yaml::from_str(POD_YAML).unwrap();
    let out = mutate(&["-f", "-"], &serde_json::to_string(&pod).unwrap());
    assert!(out.status.success());
    let patched: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(patched["kind"], "Pod");

    // A review is answered with the AdmissionReview response serve would send (the same
    // answers are compared with serve's over HTTPS in tests/mutate_matches_serve.rs).
    let review = support::review::for_pod(&pod, "shop");
    let out = mutate(&["-f", "-"], &serde_json::to_string(&review).unwrap());
    assert!(out.status.success());
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"]["patch"].as_str().is_some_and(|p| !p.is_empty()));
}

/// The namespace a decision uses: the manifest's, else --namespace; both must agree; neither
/// is an error, never a silent `default` baked into the agent's Vault role.
#[test]
fn the_namespace_comes_from_the_manifest_or_the_flag_and_is_never_guessed() {
    let role = |stdout: &[u8]| -> String {
        let pod: Value = serde_yaml::from_slice(stdout).unwrap();
        let spec = pod["spec"]["initContainers"][0]["env"][0]["value"].as_str().unwrap().to_string();
        let spec: Value = serde_json::from_str(&spec).unwrap();
        spec["provider"]["auth"]["role"].as_str().unwrap().to_string()
    };
    let out = mutate(&["-f", "-"], POD_YAML);
    assert_eq!(role(&out.stdout), "shop");
    let out = mutate(&["-f", "-", "--namespace", "shop"], POD_YAML);
    assert_eq!(role(&out.stdout), "shop");

    let out = mutate(&["-f", "-", "--namespace", "payments"], POD_YAML);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Pod web is in namespace \"shop\" but --namespace is \"payments\""), "{err}");

    let no_namespace = POD_YAML.replace("  namespace: shop\n", "");
    let out = mutate(&["-f", "-"], &no_namespace);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Pod web has no metadata.namespace") && err.contains("--namespace"), "{err}");
    assert!(!err.contains("default"), "{err}");
    let out = mutate(&["-f", "-", "--namespace", "team-b"], &no_namespace);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(role(&out.stdout), "team-b");
}

#[test]
fn workloads_are_injected_in_their_pod_template() {
    let input = r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: web, namespace: shop}
spec: {secretStoreRef: {name: vault, kind: SecretStore}, target: {name: web}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations:
        secrets/mode: eso
        secrets/eso-secret: web
        secrets/item.token: token
    spec:
      containers: [{name: web, image: nginx}]
"#;
    let out = mutate(&["-f", "-"], input);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> =
        serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["kind"], "ExternalSecret");
    let template = &docs[1]["spec"]["template"];
    assert!(template.get("kind").is_none(), "the template must stay a template");
    assert_eq!(template["spec"]["volumes"][0]["secret"]["secretName"], "web");
}

#[test]
fn denial_goes_to_stderr_with_exit_code_1() {
    let out = mutate(&["-f", "-"], &POD_YAML.replace("mode: sidecar", "mode: vault"));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secrets/mode") && err.contains("eso, csi, init, sidecar"), "{err}");
}

#[test]
fn unreadable_input_is_exit_code_2() {
    let out = mutate(&["-f", "-"], "{ not json");
    assert_eq!(out.status.code(), Some(2));
    let out = mutate(&["-f", "/nonexistent/pod.yaml"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pod.yaml"));
}
