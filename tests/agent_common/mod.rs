//! Helpers for the agent tests: real OpenBao (`bao server -dev`) and moto servers on
//! loopback, a JWT signer whose key OpenBao trusts, the agent binary as a child process, and
//! the fault-injecting proxy ([`fault_proxy`]). Everything started here is killed on drop.
#![allow(dead_code)]

pub mod apps;
pub mod fault_proxy;
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use secretmode::agent::spec::{AgentSpec, SPEC_VERSION};
use secretmode::providers::vault::{VaultAuth, VaultProvider};
use secretmode::providers::AgentItem;
use secretmode::providers::{ProviderConfig, SecretKeyRef};
use serde_json::{json, Value};

pub use support::{free_port, venv_bin};

pub const ROOT_TOKEN: &str = "root";
pub const ROLE: &str = "app";

/// Polls `f` until it returns Some or `timeout` passes; panics with `what` on timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_explained(what, timeout, f, String::new)
}

/// [`wait_for`], with `explain()` (a server's log, say) appended to the timeout's panic.
pub fn wait_for_explained<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}{}", explain());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Minimal blocking HTTP/1.1 client (one request per connection) so the tests need no
/// async runtime of their own.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&Value>) -> std::io::Result<(u16, Value)> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((code, serde_json::from_str(&body).unwrap_or(Value::String(body))))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A signing key that OpenBao's JWT auth trusts, standing in for the Kubernetes API
/// server's service-account issuer.
pub struct Signer {
    key: ring::signature::EcdsaKeyPair,
    pub public_pem: String,
}

impl Signer {
    pub fn new() -> Signer {
        let kp = rcgen::KeyPair::generate().expect("generate key");
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &kp.serialize_der(),
            &rng,
        )
        .expect("load key");
        Signer { key, public_pem: kp.public_key_pem() }
    }

    /// A service-account-like token (ES256) for `aud`.
    pub fn token(&self, aud: &str) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let header = json!({"alg": "ES256", "typ": "JWT"});
        let claims = json!({
            "iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:team-a:app",
            "aud": [aud], "iat": now, "nbf": now - 5, "exp": now + 3600,
        });
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = self.key.sign(&ring::rand::SystemRandom::new(), input.as_bytes()).expect("sign");
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

/// A real OpenBao dev server on a loopback port.
pub struct Bao {
    child: Option<KillOnDrop>,
    pub port: u16,
    pub addr: String,
    dir: tempfile::TempDir,
}

impl Bao {
    pub fn start() -> Bao {
        Bao::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Bao {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Bao { child: None, port, addr: format!("http://127.0.0.1:{port}"), dir };
        b.restart();
        b
    }

    pub fn stop(&mut self) {
        self.child = None;
        // The port must really be closed before the test claims "provider stopped".
        wait_for("bao to stop", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", self.port)).is_err().then_some(())
        });
    }

    /// (Re)starts the dev server on the same port. Dev mode keeps everything in memory, so
    /// callers configure it again afterwards.
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("bao.log")).unwrap();
        let child = Command::new(venv_bin("bao"))
            .args(["server", "-dev", &format!("-dev-root-token-id={ROOT_TOKEN}")])
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port))
            .env("HOME", self.dir.path())
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start bao");
        self.child = Some(KillOnDrop(child));
        let url = format!("{}/v1/sys/health", self.addr);
        let what = format!("bao on port {} to be unsealed", self.port);
        wait_for_explained(
            &what,
            Duration::from_secs(30),
            || http("GET", &url, &[], None).ok().filter(|(code, _)| *code == 200).map(|_| ()),
            || {
                let log = std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default();
                format!("; its log:\n{log}")
            },
        );
        // Unsealed is not ready: the dev server's `secret/` KV v2 mount answers 400 ("upgrading
        // to versioned data") for a moment after start, longer on a busy machine.
        wait_for("the KV v2 mount to accept writes", Duration::from_secs(30), || {
            let (code, _) = self.api("POST", "secret/data/secretmode-test-ready", Some(json!({"data": {"ok": "1"}})));
            (200..300).contains(&code).then_some(())
        });
    }

    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/v1/{path}", self.addr);
        http(method, &url, &[("X-Vault-Token", ROOT_TOKEN)], body.as_ref()).expect("bao api")
    }

    fn ok(&self, method: &str, path: &str, body: Value) {
        let (code, out) = self.api(method, path, Some(body));
        assert!((200..300).contains(&code), "{method} {path}: {code} {out}");
    }

    /// JWT auth trusting `signer`, a role `app` for audience `vault` reading `secret/app/*`.
    pub fn configure_jwt(&self, signer: &Signer) {
        self.configure_jwt_at("jwt", signer, ROLE);
    }

    /// The JWT auth method at `mount` with role `role`. Mounted at `kubernetes`, it answers
    /// the Kubernetes auth method's login request (`POST auth/kubernetes/login {role, jwt}`)
    /// while verifying the token against the test key instead of a TokenReview.
    pub fn configure_jwt_at(&self, mount: &str, signer: &Signer, role: &str) {
        // Enabling twice answers 400 "path is already in use": fine when re-configuring.
        let (code, out) = self.api("POST", &format!("sys/auth/{mount}"), Some(json!({"type": "jwt"})));
        assert!((200..300).contains(&code) || out.to_string().contains("already in use"), "enable jwt: {code} {out}");
        self.ok("POST", &format!("auth/{mount}/config"), json!({"jwt_validation_pubkeys": [signer.public_pem]}));
        self.ok(
            "PUT",
            "sys/policies/acl/app",
            json!({"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }"}),
        );
        self.ok(
            "POST",
            &format!("auth/{mount}/role/{role}"),
            json!({"role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub", "policies": ["app"], "token_ttl": "1h"}),
        );
    }

    /// Writes a KV v2 entry under the dev server's `secret/` mount; returns its version.
    pub fn put(&self, path: &str, data: Value) -> u64 {
        let (code, out) = self.api("POST", &format!("secret/data/{path}"), Some(json!({"data": data})));
        assert!((200..300).contains(&code), "write {path}: {code} {out}");
        out["data"]["version"].as_u64().expect("version")
    }

    pub fn provider(&self) -> ProviderConfig {
        vault_provider(&self.addr)
    }

    /// `127.0.0.1:<port>`, for a proxy in front of it.
    pub fn hostport(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A token created by root with `body` (`ttl`, `renewable`, `explicit_max_ttl`, ...).
    pub fn create_token(&self, body: Value) -> String {
        let (code, out) = self.api("POST", "auth/token/create", Some(body));
        assert!((200..300).contains(&code), "create token: {code} {out}");
        out["auth"]["client_token"].as_str().expect("client_token").to_string()
    }
}

pub fn vault_provider(addr: &str) -> ProviderConfig {
    ProviderConfig::Vault(VaultProvider {
        address: addr.to_string(),
        kv_mount: "secret".into(),
        namespace: None,
        ca_pem: None,
        auth: VaultAuth::Jwt { mount: "jwt".into(), role: ROLE.into(), audience: "vault".into() },
    })
}

/// The Vault provider at `addr` with token auth (`VAULT_TOKEN`).
pub fn vault_token_provider(addr: &str) -> ProviderConfig {
    let mut p = vault_provider(addr);
    if let ProviderConfig::Vault(v) = &mut p {
        v.auth = VaultAuth::Token { secret_ref: SecretKeyRef { name: "vault-token".into(), key: "token".into() } };
    }
    p
}

pub fn item(name: &str, path: &str, key: Option<&str>) -> AgentItem {
    AgentItem { name: name.into(), path: path.into(), key: key.map(String::from) }
}

/// A spec with test-sized timings; paths are the in-pod ones (the agent runs with --root).
pub fn spec(provider: ProviderConfig, items: Vec<AgentItem>, health_port: u16) -> AgentSpec {
    AgentSpec {
        version: SPEC_VERSION,
        provider_name: provider.kind().into(),
        provider,
        items,
        mount_path: "/var/run/secrets-cache".into(),
        token_file: Some(secretmode::vocabulary::paths::TOKEN_FILE.into()),
        fallback_dir: None,
        refresh_interval_seconds: 2,
        max_staleness_seconds: 6,
        start_deadline_seconds: 5,
        health_port,
        on_change: None,
        render: Vec::new(),
    }
}

/// The agent binary as a child process with `--root` pointing at a temp dir.
pub struct AgentProc {
    child: Option<KillOnDrop>,
    pub root: PathBuf,
    pub health: u16,
    log: PathBuf,
}

impl AgentProc {
    pub fn mount(&self) -> PathBuf {
        self.root.join("var/run/secrets-cache")
    }

    pub fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.mount().join(name)).ok()
    }

    pub fn status(&self) -> Value {
        std::fs::read_to_string(self.mount().join(".secretmode/status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    pub fn state(&self) -> String {
        self.status()["state"].as_str().unwrap_or("").to_string()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match http("GET", &format!("http://127.0.0.1:{}{path}", self.health), &[], None) {
            Ok((c, Value::String(s))) => (c, s),
            Ok((c, v)) => (c, v.to_string()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// One metric's value (first sample whose line starts with `name` and contains `filter`).
    pub fn metric(&self, name: &str, filter: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.child = None;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.0.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits up to `grace` for the exit: (status, time to exit), or None
    /// if it did not exit (it is then killed on drop).
    pub fn terminate(&mut self, grace: Duration) -> Option<(ExitStatus, Duration)> {
        let child = &mut self.child.as_mut()?.0;
        let sent = Instant::now();
        signal(child.id(), "TERM");
        wait_exit(child, grace).map(|s| (s, sent.elapsed()))
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.0.try_wait().ok().flatten().is_none())
    }

    /// Asserts that no secret value (from `values`) appears in the logs, status or metrics.
    pub fn assert_no_values(&self, values: &[&str]) {
        let status = self.status().to_string();
        let metrics = if self.health != 0 { self.get("/metrics").1 } else { String::new() };
        let logs = self.logs();
        for v in values {
            assert!(!status.contains(v), "status contains a value: {status}");
            assert!(!metrics.contains(v), "metrics contain a value");
            assert!(!logs.contains(v), "logs contain a value: {logs}");
        }
    }
}

/// `kill -<sig> <pid>`.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "kill -{sig} {pid}: {ok:?}");
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The file set on disk as one reader that resolves `..data` once sees it: item -> content.
/// None when there is no `..data` yet.
pub fn generation(mount: &Path, items: &[&str]) -> Option<BTreeMap<String, String>> {
    let dir = mount.join(std::fs::read_link(mount.join("..data")).ok()?);
    let mut out = BTreeMap::new();
    for i in items {
        out.insert(i.to_string(), std::fs::read_to_string(dir.join(i)).ok()?);
    }
    Some(out)
}

pub fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_secretmode")
}

/// Starts `secretmode agent` (sidecar) with `spec`, a token signed by `signer` (if any) and
/// optional fallback files.
pub fn start_sidecar(
    root: &Path,
    spec: &AgentSpec,
    token: Option<&str>,
    fallback: Option<&BTreeMap<&str, &str>>,
    extra_env: &[(&str, &str)],
) -> AgentProc {
    prepare_root(root, spec, token, fallback);
    let log = root.join("agent.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(agent_bin());
    cmd.arg("agent")
        .env("SECRETMODE_AGENT_SPEC", serde_json::to_string(spec).unwrap())
        .env("SECRETMODE_AGENT_ROOT", root)
        .env("SECRETMODE_AGENT_HEALTH_ADDRESS", "127.0.0.1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start agent");
    AgentProc { child: Some(KillOnDrop(child)), root: root.to_path_buf(), health: spec.health_port, log }
}

pub fn prepare_root(root: &Path, spec: &AgentSpec, token: Option<&str>, fallback: Option<&BTreeMap<&str, &str>>) {
    if let (Some(t), Some(file)) = (token, &spec.token_file) {
        let p = root.join(file.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, t).unwrap();
    }
    if let (Some(files), Some(dir)) = (fallback, &spec.fallback_dir) {
        let d = root.join(dir.trim_start_matches('/'));
        std::fs::create_dir_all(&d).unwrap();
        for (k, v) in files {
            std::fs::write(d.join(k), v).unwrap();
        }
    }
}

/// Starts `secretmode agent --once` without waiting; stderr goes to `<root>/once.log`.
pub fn spawn_once(root: &Path, spec: &AgentSpec, extra_env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(root.join("once.log")).unwrap();
    let mut cmd = Command::new(agent_bin());
    cmd.args(["agent", "--once"])
        .env("SECRETMODE_AGENT_SPEC", serde_json::to_string(spec).unwrap())
        .env("SECRETMODE_AGENT_ROOT", root)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start agent --once")
}

/// Runs `secretmode agent --once`; returns (exit code, stderr, elapsed).
pub fn run_once(root: &Path, spec: &AgentSpec, extra_env: &[(&str, &str)]) -> (i32, String, Duration) {
    let start = Instant::now();
    let mut cmd = Command::new(agent_bin());
    cmd.args(["agent", "--once"])
        .env("SECRETMODE_AGENT_SPEC", serde_json::to_string(spec).unwrap())
        .env("SECRETMODE_AGENT_ROOT", root)
        .env_remove("RUST_LOG");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run agent --once");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string(), start.elapsed())
}

/// A real moto server (AWS APIs incl. Secrets Manager and STS) on a loopback port.
pub struct Moto {
    _child: KillOnDrop,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let child = KillOnDrop(child);
        let endpoint = format!("http://127.0.0.1:{port}");
        let url = format!("{endpoint}/moto-api/");
        wait_for("moto to answer", Duration::from_secs(60), || {
            http("GET", &url, &[], None).ok().filter(|(c, _)| *c == 200).map(|_| ())
        });
        Moto { _child: child, endpoint }
    }

    /// `127.0.0.1:<port>`, for a proxy in front of it.
    pub fn hostport(&self) -> String {
        self.endpoint.trim_start_matches("http://").to_string()
    }

    pub fn aws_provider(&self, auth: secretmode::providers::aws::AwsAuth) -> ProviderConfig {
        ProviderConfig::Aws(secretmode::providers::aws::AwsProvider {
            region: "us-east-1".into(),
            endpoint: Some(self.endpoint.clone()),
            version_stage: "AWSCURRENT".into(),
            auth,
        })
    }

    /// A Secrets Manager client for setting up the test (static test credentials).
    pub async fn client(&self) -> aws_sdk_secretsmanager::Client {
        let creds = aws_credential_types::Credentials::new("testing", "testing", None, None, "test");
        let conf = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(creds)
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        aws_sdk_secretsmanager::Client::from_conf(conf)
    }
}
