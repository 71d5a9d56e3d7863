//! `secretmode certs generate` for real: the files it writes (modes, PEM, SANs, chain), the
//! caBundle it prints, and the real webhook serving with them to a client that trusts only the
//! generated CA and connects by the Service's DNS name.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::Value;
use support::serve::{Options, Serve};

const BIN: &str = env!("CARGO_BIN_EXE_secretmode");

fn generate(dir: &Path, service: &str, namespace: &str, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["certs", "generate", "--service", service, "--namespace", namespace, "--out"])
        .arg(dir)
        .args(extra)
        .output()
        .expect("run secretmode certs generate")
}

fn der(pem: &str) -> CertificateDer<'static> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    assert_eq!(p.label, "CERTIFICATE");
    CertificateDer::from(p.contents)
}

fn verify(ca_pem: &str, leaf_pem: &str, name: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca_pem)).expect("CA is a usable trust anchor");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .expect("verifier");
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(
            &der(leaf_pem),
            &[],
            &ServerName::try_from(name.to_string()).expect("name"),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

#[test]
fn writes_a_ca_and_serving_cert_with_private_keys_0600_and_prints_the_ca_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = generate(&out, "secretmode", "platform", &["--validity-days", "30"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    use std::os::unix::fs::PermissionsExt;
    for (file, mode) in [("ca.crt", 0o644), ("ca.key", 0o600), ("tls.crt", 0o644), ("tls.key", 0o600)] {
        let meta = std::fs::metadata(out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file} mode");
    }
    let ca = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    let leaf = std::fs::read_to_string(out.join("tls.crt")).unwrap();
    let key = std::fs::read_to_string(out.join("tls.key")).unwrap();
    assert!(key.contains(concat!("-----BEGIN ", "PRIVATE", " KEY-----")), "PKCS#8 key");

    // stdout is exactly the base64 of ca.crt: what caBundle takes.
    let printed = String::from_utf8(run.stdout).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD.decode(printed.trim()).expect("stdout is base64");
    assert_eq!(decoded, ca.as_bytes());

    // ECDSA P-256, the SANs, the validity asked for, and a CA that is a CA.
    let leaf_der = der(&leaf);
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
    assert_eq!(cert.public_key().algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1", "EC public key");
    let curve = cert.public_key().algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
    assert_eq!(curve.as_deref(), Some("1.2.840.10045.3.1.7"), "P-256");
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sans,
        ["secretmode", "secretmode.platform", "secretmode.platform.svc", "secretmode.platform.svc.cluster.local"]
    );
    let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert!((30..=31).contains(&days), "validity {days} days");
    assert!(!cert.is_ca());
    let ca_der = der(&ca);
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca_cert.is_ca());

    // The chain validates for every name the API server or a client may use; not for others.
    for name in &sans {
        verify(&ca, &leaf, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(verify(&ca, &leaf, "other.platform.svc").is_err());
    let other = tmp.path().join("other");
    assert!(generate(&other, "secretmode", "platform", &[]).status.success());
    let other_ca = std::fs::read_to_string(other.join("ca.crt")).unwrap();
    assert!(verify(&other_ca, &leaf, "secretmode.platform.svc").is_err(), "a different CA must not validate");
}

#[test]
fn rejects_bad_names_and_validity() {
    let tmp = tempfile::tempdir().unwrap();
    for (service, namespace, extra) in [
        ("Secret_Mode", "platform", &[][..]),
        ("secretmode", "", &[][..]),
        ("secretmode", "a.b", &[][..]),
        ("secretmode", "platform", &["--validity-days", "0"][..]),
        ("secretmode", "platform", &["--validity-days", "400", "--ca-validity-days", "100"][..]),
    ] {
        let out = tmp.path().join("bad");
        let run = generate(&out, service, namespace, extra);
        assert!(!run.status.success(), "{service:?} {namespace:?} {extra:?} should fail");
        assert!(!out.join("tls.key").exists(), "nothing written on failure");
        assert!(!String::from_utf8_lossy(&run.stderr).contains("panicked"));
    }
}

/// A second run into the same directory would replace the CA every caBundle trusts: refused,
/// with the fix, and nothing touched; `--force` replaces it.
#[test]
fn an_existing_ca_is_not_overwritten_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let first = generate(&out, "secretmode", "platform", &[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let stderr = String::from_utf8_lossy(&first.stderr);
    // Expiry times as RFC 3339, as Kubernetes writes times.
    assert!(stderr.contains("valid until 20") && stderr.contains("Z; CA valid until 20"), "{stderr}");
    let read = |f: &str| std::fs::read(out.join(f)).unwrap();
    let before: Vec<Vec<u8>> = ["ca.crt", "ca.key", "tls.crt", "tls.key"].map(read).to_vec();

    let again = generate(&out, "secretmode", "platform", &[]);
    assert_eq!(again.status.code(), Some(2));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds ca.crt, ca.key, tls.crt, tls.key") && err.contains("fix:"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(again.stdout.is_empty());
    assert_eq!(["ca.crt", "ca.key", "tls.crt", "tls.key"].map(read).to_vec(), before, "nothing touched");

    // One file left over is enough to refuse.
    std::fs::remove_file(out.join("ca.crt")).unwrap();
    std::fs::remove_file(out.join("tls.crt")).unwrap();
    std::fs::remove_file(out.join("tls.key")).unwrap();
    let partial = generate(&out, "secretmode", "platform", &[]);
    assert!(String::from_utf8_lossy(&partial.stderr).contains("already holds ca.key:"), "{partial:?}");

    let forced = generate(&out, "secretmode", "platform", &["--force"]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    assert_ne!(read("ca.key"), before[1], "a new CA key");
}

/// `--service-name` (serve's old spelling) and `--service` name the same flag everywhere.
#[test]
fn service_name_is_an_alias_of_service() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = Command::new(BIN)
        .args(["certs", "generate", "--service-name", "hooks", "--namespace", "platform", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("hooks.platform.svc"));
}

#[tokio::test]
async fn the_webhook_serves_with_generated_certs_to_a_client_trusting_only_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("certs");
    assert!(generate(&out, "secretmode", "secretmode", &[]).status.success());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let server = Serve::start_with(&Options {
        cert: Some(&out.join("tls.crt")),
        key: Some(&out.join("tls.key")),
        config: Some(&root.join("examples/config.yaml")),
        ..Options::default()
    });
    let (port, admin) = (server.port, server.admin);

    let plain = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = plain.get(format!("http://127.0.0.1:{admin}/readyz")).send().await;
        if matches!(&ready, Ok(r) if r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "webhook not ready in 30s: {ready:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ca = std::fs::read(out.join("ca.crt")).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = |ca: &[u8]| {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca).unwrap())
            .resolve("secretmode.secretmode.svc", addr)
            .build()
            .unwrap()
    };
    // Exactly the README's request: an AdmissionReview as the API server sends it.
    let body = std::fs::read(root.join("examples/admission/sidecar.json")).unwrap();
    let url = format!("https://secretmode.secretmode.svc:{port}/mutate?timeout=10s");
    let response = client(&ca)
        .post(&url)
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("a client trusting only the generated CA connects by the service name");
    assert!(response.status().is_success());
    let review: Value = response.json().await.unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["response"]["uid"], request["request"]["uid"]);
    assert_eq!(review["response"]["allowed"], true, "{review}");
    assert_eq!(review["response"]["patchType"], "JSONPatch");

    // A client trusting some other CA is refused at the TLS layer.
    let other = tmp.path().join("other");
    assert!(generate(&other, "secretmode", "secretmode", &[]).status.success());
    let other_ca = std::fs::read(other.join("ca.crt")).unwrap();
    let refused = client(&other_ca).post(&url).body(body).send().await;
    assert!(refused.is_err(), "a client trusting another CA must not connect");
}
