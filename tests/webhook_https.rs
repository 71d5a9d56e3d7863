//! The real `secretmode serve` binary over HTTPS with rcgen certificates: admission reviews
//! shaped as the API server sends them, bad HTTP input, slow clients, certificate rotation by
//! symlink swap, readiness, and graceful shutdown.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::review::Requester;
use support::serve::{Options, Serve, Tls, SERVICE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Lays out a directory the way the kubelet mounts a Secret: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..<timestamp>`; `swap` replaces `..data` atomically.
struct SecretDir {
    root: PathBuf,
    generation: u32,
}

impl SecretDir {
    fn new(root: &Path, pair: &Tls) -> SecretDir {
        let mut dir = SecretDir { root: root.to_path_buf(), generation: 0 };
        dir.swap(&pair.cert_pem, &pair.key_pem);
        std::os::unix::fs::symlink("..data/tls.crt", root.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", root.join("tls.key")).unwrap();
        dir
    }

    fn swap(&mut self, cert: &str, key: &str) {
        self.generation += 1;
        let name = format!("..2026_11_23_{}", self.generation);
        let data = self.root.join(&name);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("tls.crt"), cert).unwrap();
        std::fs::write(data.join("tls.key"), key).unwrap();
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
    }

    fn cert(&self) -> PathBuf {
        self.root.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.root.join("tls.key")
    }
}

/// A review of a pod with `annotations`, as the API server sends it for a ReplicaSet's pod.
fn review(annotations: Value) -> Value {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-7d4b9c-", "namespace": "shop", "labels": {"app": "web"}, "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}});
    support::review::create(&pod, "shop", &Requester::ReplicaSet, false)
}

fn setup() -> (tempfile::TempDir, Tls, SecretDir) {
    let dir = tempfile::tempdir().unwrap();
    let pair = Tls::generate("ca-one");
    let secret = SecretDir::new(dir.path(), &pair);
    (dir, pair, secret)
}

#[tokio::test]
async fn serves_admission_reviews_over_https() {
    let (_dir, pair, secret) = setup();
    let server = Serve::start(&secret.cert(), &secret.key(), &[]);
    let http = server.client(&pair.ca_pem);
    let cases = [
        (json!({"secrets/mode": "eso", "secrets/eso-secret": "web", "secrets/item.token": "token"}), "secret"),
        (json!({"secrets/mode": "csi", "secrets/csi-class": "web", "secrets/item.token": "token"}), "csi"),
        (json!({"secrets/mode": "init", "secrets/item.token": "shop/web#token"}), "emptyDir"),
        (json!({"secrets/mode": "sidecar", "secrets/item.token": "shop/web#token"}), "emptyDir"),
    ];
    for (annotations, volume_kind) in cases {
        let request = review(annotations);
        let response = http.post(server.url()).json(&request).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["response"]["uid"], request["request"]["uid"]);
        assert_eq!(body["response"]["allowed"], true);
        let pod = support::patch::patched(&request, &body);
        let volume =
            pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "secretmode-secrets").unwrap();
        assert!(volume.get(volume_kind).is_some(), "{volume}");
        let env = &pod["spec"]["containers"][0]["env"];
        assert!(env.as_array().unwrap().iter().any(|e| e["name"] == "TOKEN_FILE"), "{env}");
        // Re-sending the patched pod (reinvocation) gets no patch.
        let mut again = request.clone();
        again["request"]["object"] = pod;
        let body: Value = http.post(server.url()).json(&again).send().await.unwrap().json().await.unwrap();
        assert!(body["response"].get("patch").is_none(), "{body}");
    }
    // A denial is HTTP 200 with allowed: false.
    let request = review(json!({"secrets/mode": "vault"}));
    let response = http.post(server.url()).json(&request).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["response"]["allowed"], false);
    assert!(body["response"]["status"]["message"].as_str().unwrap().contains("secrets/mode"));

    let (status, metrics) = server.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains(r#"secretmode_admissions_total{mode="sidecar",outcome="injected"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"outcome="denied""#));
    assert!(metrics.contains("secretmode_admission_duration_seconds_bucket{le=\"0.005\"}"));
    let expiry_line = metrics.lines().find(|l| l.starts_with("secretmode_tls_cert_expiry_timestamp_seconds ")).unwrap();
    let expiry: i64 = expiry_line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(expiry > 1_700_000_000, "{expiry_line}");
}

#[tokio::test]
async fn bad_http_input_gets_clear_answers() {
    let (_dir, pair, secret) = setup();
    let server = Serve::start(&secret.cert(), &secret.key(), &["--max-body-bytes", "65536"]);
    let http = server.client(&pair.ca_pem);
    let post = |body: Vec<u8>, content_type: &'static str| {
        http.post(server.url()).header("Content-Type", content_type).body(body).send()
    };
    let r = post(b"{}".to_vec(), "text/plain").await.unwrap();
    assert_eq!(r.status(), 415);
    let r = post(Vec::new(), "application/json").await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not an AdmissionReview"));
    let r = post(
        b"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\"}".to_vec(),
        "application/json; charset=utf-8",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("admission.k8s.io/v1"));
    // A declared length over the cap is refused from the headers alone: no body byte is read.
    let mut tls = raw_tls(&server, &pair.ca_pem).await;
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), read_some(&mut tls, &mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    let r = http.get(server.url()).send().await.unwrap();
    assert_eq!(r.status(), 405);

    // A chunked body with no Content-Length is cut off at the cap, not buffered whole.
    let mut tls = raw_tls(&server, &pair.ca_pem).await;
    tls.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 16384, " ".repeat(16384));
    let mut answer = String::new();
    for _ in 0..64 {
        if tls.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), read_some(&mut tls, &mut answer)).await {
            if n > 0 {
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), read_some(&mut tls, &mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    // The server is fine afterwards.
    let r = http.post(server.url()).json(&review(json!({}))).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn read_some(tls: &mut (impl AsyncReadExt + Unpin), into: &mut String) -> std::io::Result<usize> {
    let mut buf = [0u8; 4096];
    let n = tls.read(&mut buf).await?;
    into.push_str(&String::from_utf8_lossy(&buf[..n]));
    Ok(n)
}

async fn raw_tls(server: &Serve, ca_pem: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    connector.connect(SERVICE.try_into().unwrap(), tcp).await.unwrap()
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn slow_clients_are_dropped_while_others_are_served() {
    let (_dir, pair, secret) = setup();
    let server = Serve::start(&secret.cert(), &secret.key(), &["--header-timeout", "1s", "--body-timeout", "1s"]);
    let http = server.client(&pair.ca_pem);

    // Headers one byte at a time, too slowly: the server hangs up.
    let mut slow = raw_tls(&server, &pair.ca_pem).await;
    let started = Instant::now();
    let mut closed = false;
    for b in b"POST /mutate HTTP/1.1\r\nHost: secretmode\r\nContent-Type: application/json\r\n".iter() {
        if slow.write_all(&[*b]).await.is_err() || slow.flush().await.is_err() {
            closed = true;
            break;
        }
        // Meanwhile everybody else is served.
        let r = http.post(server.url()).json(&review(json!({}))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    if !closed {
        let mut rest = String::new();
        let n = tokio::time::timeout(Duration::from_secs(3), read_some(&mut slow, &mut rest)).await;
        closed = matches!(n, Ok(Ok(0)) | Ok(Err(_))) || rest.contains("408");
    }
    assert!(closed, "a client trickling headers was not dropped");

    // A body that never finishes gets 408 after the body timeout.
    let mut stuck = raw_tls(&server, &pair.ca_pem).await;
    stuck
        .write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\"")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), read_some(&mut stuck, &mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

/// Sends one AdmissionReview on a raw keep-alive connection and reads the whole answer
/// (headers, then `Content-Length` bytes); `None` when the server closed the connection.
async fn exchange(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> Option<String> {
    let body = serde_json::to_vec(&review(json!({}))).unwrap();
    let head = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nHost: {SERVICE}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.ok()?;
    tls.write_all(&body).await.ok()?;
    let mut answer = String::new();
    loop {
        if let Some(end) = answer.find("\r\n\r\n") {
            let length: usize = answer[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_string))
                .and_then(|n| n.trim().parse().ok())
                .expect("a Content-Length");
            if answer.len() >= end + 4 + length {
                return Some(answer);
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), read_some(tls, &mut answer)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

/// The API server keeps idle connections for 90 s and does not retry a POST that raced a
/// close: an idle keep-alive connection outlives the header timeout and is closed only after
/// the idle timeout (quietly, at a request boundary).
#[tokio::test]
async fn idle_keep_alive_connections_outlive_the_header_timeout() {
    let (_dir, pair, secret) = setup();
    let server = Serve::start(&secret.cert(), &secret.key(), &["--header-timeout", "1s", "--idle-timeout", "4s"]);
    let mut conn = raw_tls(&server, &pair.ca_pem).await;
    let first = exchange(&mut conn).await.expect("first answer");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Idle for twice the header timeout: the same connection still serves.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let second = exchange(&mut conn).await.expect("the connection was closed while idle");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    // Idle past the idle timeout: closed by the server, without an answer to anything.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let mut rest = String::new();
    let read = tokio::time::timeout(Duration::from_secs(3), read_some(&mut conn, &mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "still open after the idle timeout: {read:?} {rest:?}");
    assert!(rest.is_empty(), "{rest}");
}

#[tokio::test]
async fn certificate_rotates_by_symlink_swap_without_restart() {
    let (_dir, first, mut secret) = setup();
    let server = Serve::start(&secret.cert(), &secret.key(), &["--tls-reload-interval", "200ms"]);
    let ok = |pem: String| {
        let http = server.client(&pem);
        let url = server.url();
        async move {
            http.post(url).json(&review(json!({}))).send().await.map(|r| r.status().as_u16() == 200).unwrap_or(false)
        }
    };
    let second = Tls::generate("ca-two");
    assert!(ok(first.ca_pem.clone()).await);
    assert!(!ok(second.ca_pem.clone()).await, "the second CA must not be trusted yet");

    secret.swap(&second.cert_pem, &second.key_pem);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok(second.ca_pem.clone()).await {
        assert!(Instant::now() < deadline, "new certificate not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!ok(first.ca_pem.clone()).await, "new connections must see the new certificate");

    // A broken pair (key of another certificate, then garbage) is refused; the good one stays.
    secret.swap(&second.cert_pem, &first.key_pem);
    tokio::time::sleep(Duration::from_millis(600)).await;
    secret.swap("not a certificate", "not a key");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(ok(second.ca_pem.clone()).await, "an invalid pair must not replace the working one");
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(metrics.contains(r#"secretmode_tls_cert_reloads_total{result="failed"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"secretmode_tls_cert_reloads_total{result="loaded"} 2"#), "{metrics}");
}

#[tokio::test]
async fn ready_only_once_a_certificate_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let server = Serve::start(&cert, &key, &["--tls-reload-interval", "200ms"]);
    assert_eq!(server.admin_get("/healthz").await.0, 200);
    assert_eq!(server.admin_get("/readyz").await.0, 503);
    let pair = Tls::generate("late");
    std::fs::File::create(&key).unwrap().write_all(pair.key_pem.as_bytes()).unwrap();
    std::fs::write(&cert, &pair.cert_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.admin_get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = server.client(&pair.ca_pem).post(server.url()).json(&review(json!({}))).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_closes_idle_connections() {
    let (_dir, pair, secret) = setup();
    let mut server =
        Serve::start(&secret.cert(), &secret.key(), &["--shutdown-grace", "10s", "--shutdown-delay", "300ms"]);

    // An idle keep-alive connection that has already served one request.
    let mut idle = raw_tls(&server, &pair.ca_pem).await;
    let body = serde_json::to_vec(&review(json!({}))).unwrap();
    let head = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    idle.write_all(head.as_bytes()).await.unwrap();
    idle.write_all(&body).await.unwrap();
    let mut first = String::new();
    tokio::time::timeout(Duration::from_secs(5), read_some(&mut idle, &mut first)).await.unwrap().unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    // A request in flight: headers and half the body sent.
    let mut busy = raw_tls(&server, &pair.ca_pem).await;
    busy.write_all(head.as_bytes()).await.unwrap();
    busy.write_all(&body[..body.len() / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.terminate();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Draining: readiness fails while the process keeps serving.
    assert_eq!(server.admin_get("/readyz").await.0, 503);
    tokio::time::sleep(Duration::from_millis(700)).await;

    busy.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut answer = String::new();
    while !answer.contains("\"uid\"") {
        let n = tokio::time::timeout(Duration::from_secs(5), read_some(&mut busy, &mut answer)).await.unwrap().unwrap();
        assert!(n > 0, "in-flight request dropped: {answer:?}");
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");

    let mut rest = String::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), read_some(&mut idle, &mut rest)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "idle keep-alive connection left open: {rest:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit within the grace period");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(TcpStream::connect(server.addr()).await.is_err(), "still accepting after shutdown");
}

/// The admission line as `serve` writes it (tracing-subscriber's text and JSON layouts),
/// in both formats, from the real binary: one line, the fields in order, nothing of the pod,
/// and no way for a request to write a line of its own.
#[tokio::test]
async fn each_admission_is_one_log_line_in_either_format() {
    let (dir, pair, secret) = setup();
    let annotations = json!({"secrets/mode": "eso", "secrets/eso-secret": "web", "secrets/item.token": "token"});
    for format in ["text", "json"] {
        let log = dir.path().join(format!("serve-{format}.log"));
        let server = Serve::start_with(&Options {
            cert: Some(&secret.cert()),
            key: Some(&secret.key()),
            extra: &["--log-format", format, "--shutdown-delay", "0s"],
            log: Some(&log),
            ..Options::default()
        });
        let http = server.client(&pair.ca_pem);
        let request = review(annotations.clone());
        let uid = request["request"]["uid"].as_str().unwrap().to_string();
        let response = http.post(server.url()).json(&request).send().await.unwrap();
        assert_eq!(response.status(), 200);
        // Only the API server should call, but anything that reaches the Service can: a uid
        // that tries to end the line and forge the next one.
        let mut forged = review(annotations.clone());
        forged["request"]["uid"] =
            json!("forged\n2026-11-23T00:00:00.000000Z  INFO secretmode::webhook::routes: admission");
        let response = http.post(server.url()).json(&forged).send().await.unwrap();
        assert_eq!(response.status(), 200);
        server.stop();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("admission") && l.contains(&uid)).collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line = lines[0];
        let forged: Vec<&str> = text.lines().filter(|l| l.contains("forged")).collect();
        assert_eq!(forged.len(), 1, "{text}");
        assert!(!text.lines().any(|l| l.starts_with("2026-11-23T00:00:00")), "{text}");
        assert!(!line.contains("nginx") && !line.contains("web-7d4b9c"), "{line}");
        if format == "text" {
            // Durations as the flags take them, expiry times as RFC 3339.
            assert!(text.contains("shutdown requested: failing readiness, then draining delay=0s"), "{text}");
            let loaded = text.lines().find(|l| l.contains("serving certificate loaded")).unwrap_or_default();
            let not_after = loaded.split(" not_after=").nth(1).unwrap_or_default();
            assert!(not_after.len() == 20 && not_after.ends_with('Z') && not_after.as_bytes()[10] == b'T', "{text}");
            let (time, rest) = line.split_at(27);
            assert!(time.starts_with("20") && time.ends_with('Z') && time.as_bytes()[10] == b'T', "{line}");
            let expected = format!(
                " INFO secretmode::webhook::routes: admission uid={uid} \
                 namespace=shop mode=\"eso\" outcome=\"injected\" duration_us="
            );
            assert!(rest.starts_with(&format!(" {expected}")), "{line}");
            assert!(rest.contains(" patch_bytes=") && rest.ends_with(" dry_run=false"), "{line}");
        } else {
            let prefix = r#"{"timestamp":"20"#;
            let suffix = format!(
                r#","level":"INFO","message":"admission","uid":"{uid}","namespace":"shop","mode":"eso","outcome":"injected","duration_us":"#
            );
            assert!(line.starts_with(prefix) && line[27 + 15..].starts_with(&suffix), "{line}");
            assert!(line.ends_with(r#","dry_run":false,"target":"secretmode::webhook::routes"}"#), "{line}");
            let value: Value = serde_json::from_str(line).unwrap();
            assert!(value["patch_bytes"].as_u64().unwrap() > 0, "{line}");
        }
    }
}
