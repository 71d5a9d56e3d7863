//! `secretmode certs bootstrap` against kube's mock client: a `tower_test` service behind
//! `kube::Client::new` answers each API call with the shapes the API server returns, and the
//! test checks every request the command makes (method, path, body) in order.
//!
//! There is no API server on these machines; this is as close as the tests get to a cluster.

use std::time::{Duration, SystemTime};

use base64::Engine;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use secretmode::commands::certs::bootstrap::{bootstrap, BootstrapArgs, Outcome};
use secretmode::commands::certs::generate;
use serde_json::{json, Value};
use tower_test::mock;

fn args() -> BootstrapArgs {
    BootstrapArgs {
        service: "secretmode".into(),
        namespace: "platform".into(),
        tls_secret: "secretmode-tls".into(),
        ca_secret: "secretmode-ca".into(),
        webhook_config: "secretmode".into(),
        validity_days: 365,
        ca_validity_days: 3650,
        renew_before_days: 30,
        require_webhook: false,
    }
}

const SECRETS: &str = "/api/v1/namespaces/platform/secrets";
const MWC: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/secretmode";

fn not_found(kind: &str, name: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("{kind} \"{name}\" not found"), "reason": "NotFound",
               "details": {"name": name, "kind": kind}, "code": 404}),
    )
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret_json(name: &str, type_: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data.iter().map(|(k, v)| (k.to_string(), json!(b64(v)))).collect();
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": "platform", "uid": "1b0c", "resourceVersion": "4711",
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "type": type_, "data": data})
}

fn webhook_config(ca_bundle: Option<&str>) -> Value {
    let mut client_config =
        json!({"service": {"name": "secretmode", "namespace": "platform", "path": "/mutate", "port": 443}});
    if let Some(b) = ca_bundle {
        client_config["caBundle"] = json!(b);
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
           "metadata": {"name": "secretmode", "uid": "9f1", "resourceVersion": "99", "generation": 1},
           "webhooks": [{"name": "pods.secretmode.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                         "clientConfig": client_config, "failurePolicy": "Fail", "matchPolicy": "Equivalent",
                         "timeoutSeconds": 3, "reinvocationPolicy": "IfNeeded",
                         "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                    "resources": ["pods"], "scope": "Namespaced"}],
                         "namespaceSelector": {}, "objectSelector": {}}]})
}

/// One expected call: method, path (query ignored), and the answer. The request body is
/// returned to the test for inspection.
struct Expect {
    method: &'static str,
    path: String,
    status: StatusCode,
    answer: Answer,
}

enum Answer {
    Json(Value),
    /// Echo the request body back (what create/replace return), with a resourceVersion.
    Echo,
}

struct Seen {
    content_type: String,
    body: Value,
}

async fn run(args: BootstrapArgs, script: Vec<Expect>) -> (anyhow::Result<Outcome>, Vec<Seen>) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for step in script {
            let Some((request, send)) = handle.next_request().await else { break };
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let content_type =
                request.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
            assert_eq!((method.as_str(), path.as_str()), (step.method, step.path.as_str()), "unexpected call order");
            let answer = match step.answer {
                Answer::Json(v) => v,
                Answer::Echo => {
                    let mut v = body.clone();
                    v["metadata"]["resourceVersion"] = json!("5000");
                    v
                }
            };
            let response = Response::builder()
                .status(step.status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(response);
            seen.push(Seen { content_type, body });
        }
        seen
    });
    let client = kube::Client::new(service, "platform");
    let result = tokio::time::timeout(Duration::from_secs(30), bootstrap(client, &args, SystemTime::now()))
        .await
        .expect("bootstrap finished");
    let seen = server.await.unwrap();
    (result, seen)
}

fn data(secret: &Value, key: &str) -> String {
    let raw = secret["data"][key].as_str().unwrap_or_else(|| panic!("missing data.{key} in {secret}"));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(raw).unwrap()).unwrap()
}

#[tokio::test]
async fn first_run_creates_both_secrets_and_patches_the_ca_bundle_before_the_serving_secret() {
    let (result, seen) = run(
        args(),
        vec![
            Expect {
                method: "GET",
                path: format!("{SECRETS}/secretmode-ca"),
                status: StatusCode::NOT_FOUND,
                answer: Answer::Json(not_found("secrets", "secretmode-ca").1),
            },
            Expect {
                method: "GET",
                path: format!("{SECRETS}/secretmode-tls"),
                status: StatusCode::NOT_FOUND,
                answer: Answer::Json(not_found("secrets", "secretmode-tls").1),
            },
            Expect { method: "POST", path: SECRETS.into(), status: StatusCode::CREATED, answer: Answer::Echo },
            Expect {
                method: "GET",
                path: MWC.into(),
                status: StatusCode::OK,
                answer: Answer::Json(webhook_config(None)),
            },
            Expect {
                method: "PATCH",
                path: MWC.into(),
                status: StatusCode::OK,
                answer: Answer::Json(webhook_config(Some(&b64("patched")))),
            },
            Expect { method: "POST", path: SECRETS.into(), status: StatusCode::CREATED, answer: Answer::Echo },
        ],
    )
    .await;
    let outcome = result.expect("bootstrap succeeds");
    assert!(outcome.ca_created && outcome.serving_issued && outcome.webhook_config_found);
    assert_eq!(outcome.patched_webhooks, ["pods.secretmode.io"]);
    assert_eq!(seen.len(), 6);

    let ca_secret = &seen[2].body;
    assert_eq!(ca_secret["metadata"]["name"], "secretmode-ca");
    assert_eq!(ca_secret["type"], "Opaque");
    let ca_pem = data(ca_secret, "ca.crt");
    assert!(data(ca_secret, "ca.key").contains("PRIVATE KEY"));
    assert_eq!(data(ca_secret, "bundle.crt"), ca_pem);

    // Strategic merge on the webhook list (merge key `name`): only caBundle changes.
    let patch = &seen[4];
    assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
    let webhooks = patch.body["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1);
    assert_eq!(webhooks[0]["name"], "pods.secretmode.io");
    assert_eq!(webhooks[0]["clientConfig"].as_object().unwrap().len(), 1, "only caBundle is patched");
    assert_eq!(webhooks[0]["clientConfig"]["caBundle"], b64(&ca_pem));

    let tls = &seen[5].body;
    assert_eq!(tls["metadata"]["name"], "secretmode-tls");
    assert_eq!(tls["type"], "kubernetes.io/tls");
    assert_eq!(data(tls, "ca.crt"), ca_pem);
    let leaf = generate::inspect(&data(tls, "tls.crt")).unwrap();
    assert_eq!(leaf.dns_names, generate::dns_names("secretmode", "platform"));
    assert_eq!(leaf.authority_key_id, generate::inspect(&ca_pem).unwrap().subject_key_id);
    assert!(data(tls, "tls.key").contains("PRIVATE KEY"));
}

#[tokio::test]
async fn pre_install_run_without_the_webhook_configuration_still_creates_the_secrets() {
    let (result, seen) = run(
        args(),
        vec![
            Expect {
                method: "GET",
                path: format!("{SECRETS}/secretmode-ca"),
                status: StatusCode::NOT_FOUND,
                answer: Answer::Json(not_found("secrets", "secretmode-ca").1),
            },
            Expect {
                method: "GET",
                path: format!("{SECRETS}/secretmode-tls"),
                status: StatusCode::NOT_FOUND,
                answer: Answer::Json(not_found("secrets", "secretmode-tls").1),
            },
            Expect { method: "POST", path: SECRETS.into(), status: StatusCode::CREATED, answer: Answer::Echo },
            Expect {
                method: "GET",
                path: MWC.into(),
                status: StatusCode::NOT_FOUND,
                answer: Answer::Json(
                    not_found("mutatingwebhookconfigurations.admissionregistration.k8s.io", "secretmode").1,
                ),
            },
            Expect { method: "POST", path: SECRETS.into(), status: StatusCode::CREATED, answer: Answer::Echo },
        ],
    )
    .await;
    let outcome = result.unwrap();
    assert!(!outcome.webhook_config_found && outcome.patched_webhooks.is_empty());
    assert_eq!(seen.len(), 5);

    // With --require-webhook the same situation is an error, after the CA Secret is saved.
    let mut strict = args();
    strict.require_webhook = true;
    let (result, _) = run(
        strict,
        vec![
            Expect {
                method: "GET",
                path: format!("{SECRETS}/secretmode-ca"),
                status: StatusCode::NOT_FOUND,
                answer: Answer::Json(not_found("secrets", "secretmode-ca").1),
            },
            Expect {
                method: "GET",
                path: format!("{SECRETS}/secretmode-tls"),
                status: StatusCode::NOT_FOUND,
                answer: Answer::Json(not_found("secrets", "secretmode-tls").1),
            },
            Expect { method: "POST", path: SECRETS.into(), status: StatusCode::CREATED, answer: Answer::Echo },
            Expect {
                method: "GET",
                path: MWC.into(),
                status: StatusCode::NOT_FOUND,
                answer: Answer::Json(
                    not_found("mutatingwebhookconfigurations.admissionregistration.k8s.io", "secretmode").1,
                ),
            },
        ],
    )
    .await;
    assert!(format!("{:#}", result.unwrap_err()).contains("does not exist"));
}

#[tokio::test]
async fn a_healthy_setup_is_reused_without_writes() {
    let now = SystemTime::now();
    let ca = generate::new_ca("reuse CA", now, 3650).unwrap();
    let leaf = generate::new_serving(&ca, "secretmode", "platform", now, 365).unwrap();
    let ca_secret = secret_json(
        "secretmode-ca",
        "Opaque",
        &[("ca.crt", &ca.cert_pem), ("ca.key", &ca.key_pem), ("bundle.crt", &ca.cert_pem)],
    );
    let tls_secret = secret_json(
        "secretmode-tls",
        "kubernetes.io/tls",
        &[("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem), ("ca.crt", &ca.cert_pem)],
    );
    let (result, seen) = run(
        args(),
        vec![
            Expect {
                method: "GET",
                path: format!("{SECRETS}/secretmode-ca"),
                status: StatusCode::OK,
                answer: Answer::Json(ca_secret),
            },
            Expect {
                method: "GET",
                path: format!("{SECRETS}/secretmode-tls"),
                status: StatusCode::OK,
                answer: Answer::Json(tls_secret),
            },
            Expect {
                method: "GET",
                path: MWC.into(),
                status: StatusCode::OK,
                answer: Answer::Json(webhook_config(Some(&b64(&ca.cert_pem)))),
            },
        ],
    )
    .await;
    let outcome = result.unwrap();
    assert_eq!(
        outcome,
        Outcome { bundle_size: 1, webhook_config_found: true, ..Outcome::default() },
        "nothing created, renewed, issued or patched"
    );
    assert_eq!(seen.len(), 3, "only reads");
}

#[tokio::test]
async fn an_expiring_ca_is_renewed_with_old_and_new_ca_both_trusted() {
    let now = SystemTime::now();
    // 200 days left: less than a serving lifetime (365) plus the margin (30).
    let old_ca = generate::new_ca("old CA", now, 200).unwrap();
    let old_leaf = generate::new_serving(&old_ca, "secretmode", "platform", now, 100).unwrap();
    let ca_secret = secret_json(
        "secretmode-ca",
        "Opaque",
        &[("ca.crt", &old_ca.cert_pem), ("ca.key", &old_ca.key_pem), ("bundle.crt", &old_ca.cert_pem)],
    );
    let tls_secret = secret_json(
        "secretmode-tls",
        "kubernetes.io/tls",
        &[("tls.crt", &old_leaf.cert_pem), ("tls.key", &old_leaf.key_pem), ("ca.crt", &old_ca.cert_pem)],
    );
    let (result, seen) = run(
        args(),
        vec![
            Expect {
                method: "GET",
                path: format!("{SECRETS}/secretmode-ca"),
                status: StatusCode::OK,
                answer: Answer::Json(ca_secret),
            },
            Expect {
                method: "GET",
                path: format!("{SECRETS}/secretmode-tls"),
                status: StatusCode::OK,
                answer: Answer::Json(tls_secret),
            },
            Expect {
                method: "PUT",
                path: format!("{SECRETS}/secretmode-ca"),
                status: StatusCode::OK,
                answer: Answer::Echo,
            },
            Expect {
                method: "GET",
                path: MWC.into(),
                status: StatusCode::OK,
                answer: Answer::Json(webhook_config(Some(&b64(&old_ca.cert_pem)))),
            },
            Expect {
                method: "PATCH",
                path: MWC.into(),
                status: StatusCode::OK,
                answer: Answer::Json(webhook_config(None)),
            },
            Expect {
                method: "PUT",
                path: format!("{SECRETS}/secretmode-tls"),
                status: StatusCode::OK,
                answer: Answer::Echo,
            },
        ],
    )
    .await;
    let outcome = result.unwrap();
    assert!(outcome.ca_renewed && !outcome.ca_created && outcome.serving_issued);
    assert_eq!(outcome.bundle_size, 2);

    let ca_put = &seen[2].body;
    assert_eq!(ca_put["metadata"]["resourceVersion"], "4711", "replace carries the resourceVersion read");
    let new_ca_pem = data(ca_put, "ca.crt");
    assert_ne!(new_ca_pem, old_ca.cert_pem);
    let bundle = data(ca_put, "bundle.crt");
    let parts = generate::split_bundle(&bundle);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].trim(), new_ca_pem.trim(), "new CA first");
    assert_eq!(parts[1].trim(), old_ca.cert_pem.trim(), "old CA still trusted during the overlap");

    // The API server trusts both before the new serving certificate appears.
    let patched = &seen[4].body["webhooks"][0]["clientConfig"]["caBundle"];
    assert_eq!(patched, &json!(b64(&bundle)));
    let tls = &seen[5].body;
    assert_eq!(data(tls, "ca.crt"), bundle);
    let leaf = generate::inspect(&data(tls, "tls.crt")).unwrap();
    assert_eq!(leaf.authority_key_id, generate::inspect(&new_ca_pem).unwrap().subject_key_id, "signed by the new CA");
}

#[tokio::test]
async fn a_serving_cert_near_expiry_or_for_other_names_is_reissued_by_the_same_ca() {
    let now = SystemTime::now();
    let ca = generate::new_ca("steady CA", now, 3650).unwrap();
    for leaf in [
        generate::new_serving(&ca, "secretmode", "platform", now, 10).unwrap(), // inside the 30-day margin
        generate::new_serving(&ca, "other", "platform", now, 365).unwrap(),     // wrong names
    ] {
        let ca_secret = secret_json(
            "secretmode-ca",
            "Opaque",
            &[("ca.crt", &ca.cert_pem), ("ca.key", &ca.key_pem), ("bundle.crt", &ca.cert_pem)],
        );
        let tls_secret = secret_json(
            "secretmode-tls",
            "kubernetes.io/tls",
            &[("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem), ("ca.crt", &ca.cert_pem)],
        );
        let (result, seen) = run(
            args(),
            vec![
                Expect {
                    method: "GET",
                    path: format!("{SECRETS}/secretmode-ca"),
                    status: StatusCode::OK,
                    answer: Answer::Json(ca_secret),
                },
                Expect {
                    method: "GET",
                    path: format!("{SECRETS}/secretmode-tls"),
                    status: StatusCode::OK,
                    answer: Answer::Json(tls_secret),
                },
                Expect {
                    method: "GET",
                    path: MWC.into(),
                    status: StatusCode::OK,
                    answer: Answer::Json(webhook_config(Some(&b64(&ca.cert_pem)))),
                },
                Expect {
                    method: "PUT",
                    path: format!("{SECRETS}/secretmode-tls"),
                    status: StatusCode::OK,
                    answer: Answer::Echo,
                },
            ],
        )
        .await;
        let outcome = result.unwrap();
        assert!(outcome.serving_issued && !outcome.ca_renewed && outcome.patched_webhooks.is_empty());
        let new_leaf = generate::inspect(&data(&seen[3].body, "tls.crt")).unwrap();
        assert_eq!(new_leaf.dns_names, generate::dns_names("secretmode", "platform"));
        assert!(new_leaf.not_after - new_leaf.not_before > 360 * 86_400);
    }
}

#[tokio::test]
async fn api_errors_are_reported_not_panicked() {
    let forbidden = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "secrets \"secretmode-ca\" is forbidden: User \"system:serviceaccount:platform:x\" cannot get resource \"secrets\"",
        "reason": "Forbidden", "code": 403});
    let (result, _) = run(
        args(),
        vec![Expect {
            method: "GET",
            path: format!("{SECRETS}/secretmode-ca"),
            status: StatusCode::FORBIDDEN,
            answer: Answer::Json(forbidden),
        }],
    )
    .await;
    let message = format!("{:#}", result.unwrap_err());
    assert!(message.contains("reading Secret secretmode-ca") && message.contains("forbidden"), "{message}");
}
