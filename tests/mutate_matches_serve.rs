//! `secretmode mutate` is the webhook's decision: the same AdmissionReviews sent to the real
//! `secretmode serve` over HTTPS and given to the `mutate` binary get the same answer, byte
//! for byte (CREATE in every mode, a denial, an already-injected pod, UPDATE, DELETE with
//! `object: null`, a subresource, other kinds, dry run), and a review `serve` refuses with
//! HTTP 400 is refused by `mutate` with the same message.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use support::review::{uuid, Requester};
use support::serve::{Options, Serve, Tls};

fn mutate(body: &[u8], args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_secretmode"))
        .args(["mutate", "-f", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mutate");
    child.stdin.take().expect("stdin").write_all(body).expect("write stdin");
    child.wait_with_output().expect("mutate finishes")
}

/// A review as the API server sends it (support::review), for `kind` (only Pod is ours).
fn review(operation: &str, kind: &str, object: Value) -> Value {
    let mut review = support::review::review_of(uuid(), operation, &object, "shop", &Requester::ReplicaSet, false);
    if kind != "Pod" {
        review["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": kind});
        review["request"]["requestKind"] = json!({"group": "apps", "version": "v1", "kind": kind});
    }
    review
}

fn pod(annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"generateName": "web-7d4b9c-", "namespace": "shop", "annotations": annotations},
           "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}})
}

fn init_pod() -> Value {
    pod(json!({"secrets/mode": "init", "secrets/item.db-password": "shop/db#password"}))
}

/// The reviews both must answer alike, as (name, body bytes).
fn reviews() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    for mode in ["eso", "csi", "init", "sidecar"] {
        let text = std::fs::read_to_string(format!("{}/examples/admission/{mode}.json", env!("CARGO_MANIFEST_DIR")))
            .expect("example review");
        out.push((format!("example {mode}"), serde_json::from_str(&text).expect("example is JSON")));
    }
    out.push(("CREATE init".into(), review("CREATE", "Pod", init_pod())));
    out.push((
        "denied".into(),
        review("CREATE", "Pod", pod(json!({"secrets/mode": "vault", "secrets/item.a": "x#y"}))),
    ));
    // Rendered files: a multi-line template and a bundle in eso with env-values (the wrapper,
    // so serve's pod view must keep the command), and a template that does not parse.
    let mut rendered =
        pod(json!({"secrets/mode": "eso", "secrets/eso-secret": "web", "secrets/item.db-password": "password",
        "secrets/env-values": "true", "secrets/template.web.conf": "[db]\n\tpassword = {{ db-password | trim }}\n",
        "secrets/bundle.web.env": "dotenv"}));
    rendered["spec"]["containers"][0]["command"] = json!(["nginx", "-g", "daemon off;"]);
    out.push(("rendered files".into(), review("CREATE", "Pod", rendered)));
    out.push((
        "template that does not parse".into(),
        review(
            "CREATE",
            "Pod",
            pod(json!({"secrets/mode": "init", "secrets/item.a": "x#y", "secrets/template.t": "{{ a | nope }}"})),
        ),
    ));
    out.push(("not opted in".into(), review("CREATE", "Pod", pod(json!({"app": "web"})))));
    out.push(("UPDATE".into(), review("UPDATE", "Pod", init_pod())));
    out.push(("DELETE".into(), review("DELETE", "Pod", Value::Null)));
    out.push(("Deployment".into(), review("CREATE", "Deployment", json!({"kind": "Deployment"}))));
    let mut sub = review("CREATE", "Pod", init_pod());
    sub["request"]["subResource"] = json!("binding");
    out.push(("subresource".into(), sub));
    let mut dry = review("CREATE", "Pod", init_pod());
    dry["request"]["dryRun"] = json!(true);
    out.push(("dry run".into(), dry));
    let mut no_ns = review("CREATE", "Pod", init_pod());
    no_ns["request"]["object"]["metadata"].as_object_mut().expect("metadata").remove("namespace");
    out.push(("namespace from the request".into(), no_ns));
    out.push(("not an object".into(), review("CREATE", "Pod", json!("a string"))));
    let mut bodies: Vec<(String, Vec<u8>)> =
        out.into_iter().map(|(name, v)| (name, serde_json::to_vec(&v).expect("serialise"))).collect();
    // Malformed: serve refuses these with HTTP 400.
    for (name, body) in [
        ("v1beta1", r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#),
        ("no request", r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
        ("no uid", r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"namespace":"shop"}}"#),
        ("truncated", r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"#),
    ] {
        bodies.push((name.into(), body.as_bytes().to_vec()));
    }
    bodies
}

#[tokio::test]
async fn mutate_answers_every_review_exactly_as_serve_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = Tls::generate("mutate-matches-serve CA");
    let (cert, key) = tls.write(dir.path());
    let serve = Serve::start_with(&Options {
        cert: Some(&cert),
        key: Some(&key),
        rust_log: Some("secretmode=error"),
        ..Options::default()
    });
    let client = serve.client(&tls.ca_pem);
    let url = serve.url();
    let mut seen = (0, 0, 0);
    for (name, body) in reviews() {
        let response = client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("post review");
        let status = response.status().as_u16();
        let served = response.bytes().await.expect("body").to_vec();
        let out = mutate(&body, &[]);
        let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
        let stderr = String::from_utf8(out.stderr).expect("stderr is UTF-8");
        match status {
            200 => {
                let answer: Value = serde_json::from_slice(&served).expect("serve answers JSON");
                assert_eq!(stdout.strip_suffix('\n'), Some(String::from_utf8_lossy(&served).as_ref()), "{name}");
                let allowed = answer["response"]["allowed"] == true;
                assert_eq!(out.status.code(), Some(if allowed { 0 } else { 1 }), "{name}: {stderr}");
                if allowed {
                    seen.0 += 1;
                    for w in answer["response"]["warnings"].as_array().into_iter().flatten() {
                        assert!(
                            stderr.contains(&format!("Warning: {}", w.as_str().unwrap_or_default())),
                            "{name}: {stderr}"
                        );
                    }
                } else {
                    seen.1 += 1;
                    let message = answer["response"]["status"]["message"].as_str().expect("a denial has a message");
                    assert!(stderr.contains(&format!("denied: {message}")), "{name}: {stderr}");
                }
            }
            400 => {
                seen.2 += 1;
                let message = String::from_utf8(served).expect("text");
                assert_eq!(out.status.code(), Some(2), "{name}: {stdout}");
                assert_eq!(stderr, format!("secretmode: {message}"), "{name}");
            }
            other => panic!("{name}: serve answered {other}"),
        }
    }
    assert_eq!(seen, (13, 3, 4), "(allowed, denied, refused) reviews");
}

/// With `--patch`, the decoded patch of the response; a YAML review gets a YAML response.
#[test]
fn a_review_answers_with_its_response_in_the_input_format() {
    let request = review("CREATE", "Pod", init_pod());
    let body = serde_json::to_vec(&request).expect("serialise");
    let json_out = mutate(&body, &[]);
    assert!(json_out.status.success());
    let answer: Value = serde_json::from_slice(&json_out.stdout).expect("a JSON response");
    assert_eq!(answer["response"]["uid"], request["request"]["uid"]);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");

    let patch = mutate(&body, &["--patch"]);
    assert!(patch.status.success());
    let ops: Value = serde_json::from_slice(&patch.stdout).expect("the patch");
    let b64 = answer["response"]["patch"].as_str().expect("base64 patch");
    let decoded: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).expect("base64"),
    )
    .expect("JSON patch");
    assert_eq!(ops, decoded);

    let yaml = serde_yaml::to_string(&request).expect("yaml");
    let yaml_out = mutate(yaml.as_bytes(), &[]);
    assert!(yaml_out.status.success(), "{}", String::from_utf8_lossy(&yaml_out.stderr));
    let from_yaml: Value = serde_yaml::from_slice(&yaml_out.stdout).expect("a YAML response");
    assert_eq!(from_yaml, answer);

    // Nothing to patch: `--patch` prints an empty patch.
    let update = serde_json::to_vec(&review("UPDATE", "Pod", init_pod())).expect("serialise");
    let out = mutate(&update, &["--patch"]);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).expect("patch"), json!([]));

    // A review carries its namespace; a flag beside it is refused rather than ignored.
    let out = mutate(&body, &["--namespace", "other"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("request.namespace"));
}
