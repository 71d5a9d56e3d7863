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
    assert!(
        err.contains("<stdin>:2 Pod shop/web: it is in namespace \"shop\" but --namespace is \"payments\""),
        "{err}"
    );

    let no_namespace = POD_YAML.replace("  namespace: shop\n", "");
    let out = mutate(&["-f", "-"], &no_namespace);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("<stdin>:2 Pod web: no metadata.namespace") && err.contains("fix: pass --namespace"), "{err}");
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

/// A workload with `annotations` on its pod template, as YAML.
fn deployment(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n      annotations: {annotations}\n    spec:\n      containers: [{{name: {name}, image: nginx}}]\n"
    )
}

const SIDECAR: &str = "{secrets/mode: sidecar, secrets/item.db: shop/db#password}";
const ESO: &str = "{secrets/mode: eso, secrets/eso-secret: web, secrets/item.token: token}";
const SERVICE: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n";

/// A directory of manifests as a repository holds them: nested folders, multi-document
/// files, a `List`, JSON beside YAML, objects that are not pods, files that are not manifests.
fn manifest_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("a-web.yaml", &format!("{}---\n{SERVICE}", deployment("web", SIDECAR)));
    let pod: Value = serde_yaml::from_str(POD_YAML).unwrap();
    write("nested/b/pod.json", &serde_json::to_string_pretty(&pod).unwrap());
    write(
        "nested/c-config.yml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: shop}\ndata: {k: v}\n",
    );
    let list: Value = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        serde_yaml::from_str::<Value>(&deployment("api", ESO)).unwrap(),
        serde_yaml::from_str::<Value>(&deployment("worker", SIDECAR)).unwrap(),
    ]});
    write("nested/list.yaml", &serde_yaml::to_string(&list).unwrap());
    // Not read: not a manifest file, and a hidden directory.
    write("README.md", "# not a manifest\n");
    write(".git/denied.yaml", &deployment("hidden", "{secrets/mode: vault}"));
    dir
}

fn documents(stdout: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(stdout);
    serde_yaml::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

fn name(v: &Value) -> String {
    format!("{}/{}", v["kind"].as_str().unwrap(), v["metadata"]["name"].as_str().unwrap())
}

/// `mutate -f DIR` reads the tree recursively as `audit` does and prints one YAML stream in
/// input order (files sorted, documents and `List` items in place): pods and templates
/// injected, everything else byte-for-byte the object it was.
#[test]
fn a_directory_is_mutated_recursively_in_input_order() {
    let dir = manifest_tree();
    let out = mutate(&["-f", dir.path().to_str().unwrap()], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let docs = documents(&out.stdout);
    let names: Vec<String> = docs.iter().map(name).collect();
    assert_eq!(
        names,
        ["Deployment/web", "Service/web", "Pod/web", "ConfigMap/c", "Deployment/api", "Deployment/worker"],
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for d in [&docs[0], &docs[5]] {
        assert_eq!(d["spec"]["template"]["spec"]["initContainers"][0]["name"], "secretmode-sidecar", "{d}");
    }
    assert_eq!(docs[2]["spec"]["initContainers"][0]["name"], "secretmode-sidecar");
    assert_eq!(docs[4]["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"], "web");
    assert_eq!(docs[1], serde_yaml::from_str::<Value>(SERVICE).unwrap(), "passed through unchanged");
    assert_eq!(docs[3]["data"]["k"], "v");
    // More than one workload: each warning says which object it is about.
    let file = dir.path().join("a-web.yaml");
    assert!(
        stderr.contains(&format!("Warning: {}:1 Deployment shop/web: secretmode sidecar", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("list.yaml:1 Deployment shop/worker: secretmode sidecar"), "{stderr}");

    // The spellings kubectl users type, and positional paths, read the same input.
    for args in [vec!["--filename", "DIR"], vec!["--file", "DIR"], vec!["DIR"]] {
        let args: Vec<&str> = args.iter().map(|a| if *a == "DIR" { dir.path().to_str().unwrap() } else { a }).collect();
        let again = mutate(&args, "");
        assert!(again.status.success(), "{args:?}");
        assert_eq!(again.stdout, out.stdout, "{args:?}");
    }
}

/// Files, directories and stdin mix, in the order given.
#[test]
fn stdin_and_paths_mix_in_the_order_given() {
    let dir = manifest_tree();
    let nested = dir.path().join("nested/c-config.yml");
    let out = mutate(&["-f", nested.to_str().unwrap(), "-f", "-"], &deployment("from-stdin", ESO));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&out.stdout);
    assert_eq!(docs.iter().map(name).collect::<Vec<_>>(), ["ConfigMap/c", "Deployment/from-stdin"]);
    assert!(docs[1]["spec"]["template"]["spec"]["volumes"].is_array());
}

/// One denied object anywhere in the input: nothing on stdout (a pipe into `kubectl apply`
/// applies nothing rather than all but one), every denial on stderr naming file, line and
/// object, exit code 1.
#[test]
fn one_denied_object_denies_the_whole_input() {
    let dir = manifest_tree();
    std::fs::write(
        dir.path().join("nested/z-bad.yaml"),
        format!("{SERVICE}---\n{}", deployment("bad", "{secrets/mode: vault}")),
    )
    .unwrap();
    std::fs::write(dir.path().join("nested/b/also-bad.yaml"), deployment("worse", "{secrets/mode: init}")).unwrap();
    let out = mutate(&["-f", dir.path().to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let denials: Vec<&str> = stderr.lines().filter(|l| l.starts_with("denied: ")).collect();
    assert_eq!(denials.len(), 2, "{stderr}");
    let bad = dir.path().join("nested/z-bad.yaml");
    assert!(
        denials.iter().any(
            |d| d.starts_with(&format!("denied: {}:6 Deployment shop/bad: annotation secrets/mode", bad.display()))
        ),
        "{stderr}"
    );
    assert!(
        denials.iter().any(|d| d.contains("also-bad.yaml:1 Deployment shop/worse: ") && d.contains("item")),
        "{stderr}"
    );

    // From stdin too.
    let out =
        mutate(&["-f", "-"], &format!("{}---\n{}", deployment("ok", ESO), deployment("bad", "{secrets/mode: vault}")));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denied: <stdin>:13 Deployment shop/bad: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// JSON in, JSON out: one object as itself, several as a `v1 List` (what `kubectl get -o
/// json` prints and `kubectl apply` takes).
#[test]
fn json_inputs_give_json_output() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["one", "two"] {
        let d: Value = serde_yaml::from_str(&deployment(n, SIDECAR)).unwrap();
        std::fs::write(dir.path().join(format!("{n}.json")), serde_json::to_string(&d).unwrap()).unwrap();
    }
    let out = mutate(&["-f", dir.path().join("one.json").to_str().unwrap()], "");
    let one: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(one["kind"], "Deployment");
    let out = mutate(&["-f", dir.path().to_str().unwrap()], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.iter().map(name).collect::<Vec<_>>(), ["Deployment/one", "Deployment/two"]);
    assert!(items.iter().all(|i| i["spec"]["template"]["spec"]["initContainers"][0]["name"] == "secretmode-sidecar"));
}

/// `--patch` is the patch of one object; for several it would not say which is which.
#[test]
fn patch_takes_one_pod_or_workload() {
    let dir = manifest_tree();
    let out = mutate(&["--patch", "-f", dir.path().to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--patch prints the patch of one object, and the input holds 4 pods and workloads"), "{err}");
    assert!(err.contains("fix: give --patch a single object"), "{err}");
    // One workload among other objects is fine.
    let out = mutate(&["--patch", "-f", "-"], &format!("{SERVICE}---\n{}", deployment("web", SIDECAR)));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ops: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(ops.as_array().unwrap().iter().any(|op| op["path"] == "/spec/initContainers"));
}
