//! The Vault provider over TLS with the CA from the spec (`caPem`), and the namespace header,
//! against a real OpenBao `-dev-tls` server.

mod agent_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use agent_common::*;
use secretmode::providers::vault::{VaultAuth, VaultProvider};
use secretmode::providers::{ProviderConfig, SecretKeyRef};

#[test]
fn vault_over_tls_trusts_only_the_configured_ca_and_sends_the_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
    let child = Command::new(venv_bin("bao"))
        .args(["server", "-dev", "-dev-tls", &format!("-dev-root-token-id={ROOT_TOKEN}")])
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .arg(format!("-dev-tls-cert-dir={}", dir.path().display()))
        .env("HOME", dir.path())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start bao -dev-tls");
    let _guard = Guard(child);
    let ca_path = dir.path().join("vault-ca.pem");
    let ca = wait_for("the dev CA", Duration::from_secs(30), || std::fs::read_to_string(&ca_path).ok());
    let addr = format!("https://127.0.0.1:{port}");
    let bao = |args: &[&str]| {
        let out = Command::new(venv_bin("bao"))
            .args(args)
            .env("BAO_ADDR", &addr)
            .env("BAO_CACERT", &ca_path)
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env("HOME", dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    wait_for("bao over TLS", Duration::from_secs(30), || bao(&["status"]).0.then_some(()));
    let (ok, out) = bao(&["namespace", "create", "team-a"]);
    assert!(ok, "{out}");
    let (ok, out) = bao(&["secrets", "enable", "-namespace=team-a", "-path=secret", "kv-v2"]);
    assert!(ok, "{out}");
    let (ok, out) = bao(&["kv", "put", "-namespace=team-a", "-mount=secret", "app/db", "password=tls-pass"]);
    assert!(ok, "{out}");

    let provider = |ca_pem: Option<String>| {
        ProviderConfig::Vault(VaultProvider {
            address: addr.clone(),
            kv_mount: "secret".into(),
            namespace: Some("team-a".into()),
            ca_pem,
            auth: VaultAuth::Token { secret_ref: SecretKeyRef { name: "t".into(), key: "t".into() } },
        })
    };
    let mut good = spec(provider(Some(ca.clone())), vec![item("db-pass", "app/db", Some("password"))], 0);
    good.token_file = None;
    good.start_deadline_seconds = 3;
    let root = tempfile::tempdir().unwrap();
    let (code, stderr, _) = run_once(root.path(), &good, &[("VAULT_TOKEN", ROOT_TOKEN)]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(root.path().join("var/run/secrets-cache/db-pass")).unwrap(), "tls-pass");

    // Without the CA the server is not trusted: the one line says so.
    let mut untrusted = good.clone();
    untrusted.provider = provider(None);
    let root = tempfile::tempdir().unwrap();
    let (code, stderr, _) = run_once(root.path(), &untrusted, &[("VAULT_TOKEN", ROOT_TOKEN)]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // Without the namespace the entry is not there.
    let mut no_ns = good.clone();
    if let ProviderConfig::Vault(v) = &mut no_ns.provider {
        v.namespace = None;
    }
    let root = tempfile::tempdir().unwrap();
    let (code, stderr, _) = run_once(root.path(), &no_ns, &[("VAULT_TOKEN", ROOT_TOKEN)]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("secret/app/db"), "{stderr}");
}

struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
