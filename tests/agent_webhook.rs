//! Webhook and agent agree: a pod goes through the real admission decision, the returned
//! patch is applied, and the injected container's exact command, args and env are run
//! (only paths redirected under a temp root, and the health server bound to loopback)
//! against a real OpenBao. The files must appear where the app container's `_FILE` env vars
//! point.

mod agent_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_common::*;
use secretmode::config::Config;
use secretmode::decide::{admit_pod, Decision};
use secretmode::providers::vault::{VaultAuth, VaultProvider};
use secretmode::providers::ProviderConfig;
use secretmode::vocabulary::duration::HumanDuration;
use serde_json::{json, Value};

const NS: &str = "team-a";

fn config(bao: &Bao, health_port: u16, native: bool) -> Config {
    let mut c = Config::builtin().unwrap();
    // The built-in vault provider as shipped (Kubernetes auth, one role per namespace filled
    // in by the webhook); only the address points at the test server.
    match c.providers.get_mut("vault") {
        Some(ProviderConfig::Vault(VaultProvider { address, auth: VaultAuth::Kubernetes { .. }, .. })) => {
            *address = bao.addr.clone();
        }
        other => panic!("built-in vault provider changed shape: {other:?}"),
    }
    c.refresh.min = HumanDuration(Duration::from_secs(1));
    c.agent.health_port = health_port;
    c.agent.start_deadline = HumanDuration(Duration::from_secs(10));
    c.agent.native_sidecar = native;
    c
}

fn pod(mode: &str) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": NS, "annotations": {
            "secrets/mode": mode,
            "secrets/item.db-password": "app/db#password",
            "secrets/item.api-key": "app/api#key",
            "secrets/refresh-interval": "2s",
        }},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}
    });
    if mode != "sidecar" {
        p["metadata"]["annotations"].as_object_mut().unwrap().remove("secrets/refresh-interval");
    }
    p
}

fn mutate(pod: &Value, config: &Config) -> Value {
    match admit_pod(pod, NS, config) {
        Decision::Allow { patch, .. } => {
            assert!(!patch.is_empty(), "expected an injection");
            secretmode::commands::mutate::apply(pod, &patch).expect("apply the patch")
        }
        Decision::Deny { message, .. } => panic!("denied: {message}"),
    }
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("{name} in {list}"))
}

/// The injected container as a process: its command (the image's binary path mapped to the
/// built binary), args and literal env, exactly.
fn command_for(c: &Value, binary: &str, root: &Path) -> Command {
    let command: Vec<&str> = c["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(command, vec![binary], "the webhook runs the configured binary");
    let mut cmd = Command::new(agent_bin());
    cmd.args(c["args"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()));
    for e in c["env"].as_array().unwrap() {
        let value = e["value"].as_str().unwrap_or_else(|| panic!("only literal env expected here: {e}"));
        cmd.env(e["name"].as_str().unwrap(), value);
    }
    cmd.env("SECRETMODE_AGENT_ROOT", root).env("SECRETMODE_AGENT_HEALTH_ADDRESS", "127.0.0.1");
    cmd
}

/// Writes the projected token where the injected token volume is mounted.
fn place_token(c: &Value, root: &Path, token: &str) {
    let mounts = c["volumeMounts"].as_array().unwrap();
    let dir = mounts
        .iter()
        .find_map(|m| m["mountPath"].as_str().filter(|p| *p == secretmode::vocabulary::paths::TOKEN_DIR))
        .expect("token volume mounted into the agent");
    let dir = root.join(dir.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), token).unwrap();
}

/// The path the app reads, from its `<ITEM>_FILE` env var, checked to be under a mount the
/// app shares with the agent.
fn app_file(pod: &Value, agent: &Value, env_name: &str) -> String {
    let app = container(pod, "containers", "app");
    let path = app["env"].as_array().unwrap().iter().find(|e| e["name"] == env_name).unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let app_mount = app["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        .unwrap();
    let shared = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == app_mount["name"] && m["mountPath"] == app_mount["mountPath"]);
    assert!(shared, "app and agent mount the same volume at the same path");
    path
}

fn setup() -> (Bao, Signer) {
    let signer = Signer::new();
    let bao = Bao::start();
    // The agent sends the Kubernetes auth login (`auth/kubernetes/login`, role = namespace).
    bao.configure_jwt_at("kubernetes", &signer, NS);
    bao.put("app/db", json!({"password": "wh-pass"}));
    bao.put("app/api", json!({"key": "wh-key"}));
    (bao, signer)
}

#[test]
fn init_container_as_injected_writes_the_files_the_app_reads() {
    let (bao, signer) = setup();
    let config = config(&bao, free_port(), true);
    let patched = mutate(&pod("init"), &config);
    let init = container(&patched, "initContainers", "secretmode-init");
    assert_eq!(init["args"], json!(["agent", "--once"]));
    let root = tempfile::tempdir().unwrap();
    place_token(init, root.path(), &signer.token("vault"));
    let out = command_for(init, &config.agent.binary, root.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (env, want) in [("DB_PASSWORD_FILE", "wh-pass"), ("API_KEY_FILE", "wh-key")] {
        let path = app_file(&patched, init, env);
        assert_eq!(std::fs::read_to_string(root.path().join(path.trim_start_matches('/'))).unwrap(), want, "{env}");
    }
}

#[test]
fn sidecar_as_injected_passes_its_startup_probe_and_refreshes() {
    let (bao, signer) = setup();
    let port = free_port();
    let config = config(&bao, port, true);
    let patched = mutate(&pod("sidecar"), &config);
    let sidecar = container(&patched, "initContainers", "secretmode-sidecar");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["args"], json!(["agent"]));
    let root = tempfile::tempdir().unwrap();
    place_token(sidecar, root.path(), &signer.token("vault"));
    let child = command_for(sidecar, &config.agent.binary, root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = KillGuard(child);

    let probe = &sidecar["startupProbe"]["httpGet"];
    assert_eq!(probe["port"], port);
    let probe_url = format!("http://127.0.0.1:{port}{}", probe["path"].as_str().unwrap());
    wait_for("startup probe", Duration::from_secs(30), || {
        http("GET", &probe_url, &[], None).ok().filter(|(c, _)| *c == 200).map(|_| ())
    });
    let live = &sidecar["livenessProbe"]["httpGet"];
    let (code, _) =
        http("GET", &format!("http://127.0.0.1:{port}{}", live["path"].as_str().unwrap()), &[], None).unwrap();
    assert_eq!(code, 200);
    let path = app_file(&patched, sidecar, "DB_PASSWORD_FILE");
    let file = root.path().join(path.trim_start_matches('/'));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "wh-pass");

    // The refresh interval from the annotation reached the agent: a rotation shows up.
    bao.put("app/db", json!({"password": "wh-pass-2"}));
    wait_for("rotation", Duration::from_secs(15), || {
        (std::fs::read_to_string(&file).ok()? == "wh-pass-2").then_some(())
    });

    // A plain sidecar (old clusters): its postStart hook, run as injected, returns 0 once the
    // sidecar on that port has synced.
    let plain = mutate(&pod("sidecar"), &config_plain(&bao, port));
    let c = container(&plain, "containers", "secretmode-sidecar");
    let hook: Vec<&str> = c["lifecycle"]["postStart"]["exec"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(hook[0], config.agent.binary);
    let status = Command::new(agent_bin()).args(&hook[1..]).status().unwrap();
    assert!(status.success(), "agent-wait succeeds against a synced sidecar");
}

#[test]
fn agent_wait_fails_when_nothing_syncs() {
    let port = free_port();
    let status = Command::new(agent_bin())
        .args(["agent-wait", "--port", &port.to_string(), "--timeout-seconds", "1"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&status.stderr).contains("not synced"));
}

fn config_plain(bao: &Bao, port: u16) -> Config {
    config(bao, port, false)
}

struct KillGuard(std::process::Child);
impl Drop for KillGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An init agent fetches once and exits, so nothing could report staleness: the webhook
/// denies `max-staleness` on an init pod (naming it and the fix) instead of accepting a
/// promise nobody keeps; on a sidecar it is the agent's freshness budget.
#[test]
fn max_staleness_is_for_the_sidecar_and_denied_for_init() {
    let c = Config::builtin().unwrap();
    let mut init = pod("init");
    init["metadata"]["annotations"]["secrets/max-staleness"] = json!("10m");
    match admit_pod(&init, NS, &c) {
        Decision::Deny { message, .. } => {
            assert!(message.contains("secrets/max-staleness: does not apply to mode init"), "{message}");
            assert!(message.contains("use mode sidecar"), "{message}");
        }
        d => panic!("expected a denial, got {d:?}"),
    }
    let mut sidecar = pod("sidecar");
    sidecar["metadata"]["annotations"]["secrets/max-staleness"] = json!("10m");
    sidecar["metadata"]["annotations"]["secrets/refresh-interval"] = json!("1m");
    assert!(matches!(admit_pod(&sidecar, NS, &c), Decision::Allow { .. }));
}
