//! `secretmode mutate` is the webhook's decision: the same AdmissionReviews sent to the real
//! `secretmode serve` over HTTPS and given to the `mutate` binary get the same answer, byte
//! for byte (CREATE in every mode, a denial, an already-injected pod, UPDATE, DELETE with
//! `object: null`, a subresource, other kinds, dry run), and a review `serve` refuses with
//! HTTP 400 is refused by `mutate` with the same message.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value};

const SERVICE: &str = "secretmode.secretmode.svc";

/// A running `serve` with a certificate for [`SERVICE`] signed by `ca_pem`; killed on drop.
struct Serve {
    child: Child,
    port: u16,
    ca_pem: String,
}

impl Serve {
    fn start(dir: &Path) -> Serve {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "mutate-matches-serve CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![SERVICE.to_string()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("certificate");
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        // Another test binary may take a port between the probe and the bind: retry.
        for _ in 0..5 {
            let (port, admin) = (support::free_port(), support::free_port());
            let child = Command::new(env!("CARGO_BIN_EXE_secretmode"))
                .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
                .arg("--tls-cert")
                .arg(&cert_path)
                .arg("--tls-key")
                .arg(&key_path)
                .env("RUST_LOG", "secretmode=error")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start serve");
            let mut serve = Serve { child, port, ca_pem: ca.pem() };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok() {
                    return serve;
                }
                if serve.child.try_wait().expect("poll serve").is_some() {
                    break;
                }
                assert!(Instant::now() < deadline, "serve did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("serve did not start on five pairs of ports");
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA pem"))
            .resolve(SERVICE, SocketAddr::from(([127, 0, 0, 1], self.port)))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

fn review(operation: &str, kind: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("3f1c2a9e-{operation}-{kind}"),
            "kind": {"group": if kind == "Deployment" { "apps" } else { "" }, "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": object, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
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
    let serve = Serve::start(dir.path());
    let client = serve.client();
    let url = format!("https://{SERVICE}:{}/mutate?timeout=10s", serve.port);
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
    assert_eq!(seen, (12, 2, 4), "(allowed, denied, refused) reviews");
}

/// With `--patch`, the decoded patch of the response; a YAML review gets a YAML response.
#[test]
fn a_review_answers_with_its_response_in_the_input_format() {
    let body = serde_json::to_vec(&review("CREATE", "Pod", init_pod())).expect("serialise");
    let json_out = mutate(&body, &[]);
    assert!(json_out.status.success());
    let answer: Value = serde_json::from_slice(&json_out.stdout).expect("a JSON response");
    assert_eq!(answer["response"]["uid"], "3f1c2a9e-CREATE-Pod");
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

    let yaml = serde_yaml::to_string(&review("CREATE", "Pod", init_pod())).expect("yaml");
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
