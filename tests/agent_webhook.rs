//! Webhook and agent agree: a pod goes through the real admission decision, the returned
//! patch is applied, and the injected container's exact command, args and env are run
//! (only paths redirected under a temp root, and the health server bound to loopback)
//! against a real OpenBao. The files must appear where the app container's `_FILE` env vars
//! point. The same for issue 24's parts: the `secretmode-exec` installer and the app's wrapped
//! command (env values), and the on-change action from the injected spec reaching a real
//! app, from the sidecar and from the `secretmode-watcher`; and issue 25's rendered files,
//! written by the injected sidecar, and by the injected `secretmode-render` step and watcher.

mod agent_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_common::apps::{App, Target, Volume};
use agent_common::*;
use secretmode::config::policy::Rule;
use secretmode::config::Config;
use secretmode::decide::{admit_pod, Decision};
use secretmode::providers::vault::{VaultAuth, VaultProvider};
use secretmode::providers::ProviderConfig;
use secretmode::vocabulary::duration::HumanDuration;
use secretmode::vocabulary::paths::{EXEC_DIR, EXEC_PATH};
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
    cmd.env("SECRETMODE_WATCH_ROOT", root).env("SECRETMODE_WATCH_HEALTH_ADDRESS", "127.0.0.1");
    cmd.env("SECRETMODE_RENDER_ROOT", root);
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

/// The injected native sidecar as a process, started and past its startup probe.
fn start_sidecar(patched: &Value, config: &Config, root: &Path, signer: &Signer, port: u16) -> KillGuard {
    let sidecar = container(patched, "initContainers", "secretmode-sidecar");
    place_token(sidecar, root, &signer.token("vault"));
    let child =
        command_for(sidecar, &config.agent.binary, root).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let guard = KillGuard(child);
    wait_for("sidecar startup", Duration::from_secs(30), || {
        http("GET", &format!("http://127.0.0.1:{port}/startup"), &[], None).ok().filter(|(c, _)| *c == 200)
    });
    guard
}

// ---- issue 24, as injected: env values through the wrapper, on-change from the spec ----

/// Checks the values inside the app (never prints them): exit 0 only if every variable holds
/// what the provider or the volume holds.
const CHECK_VALUES: &str = r#"test "$DB_PASSWORD" = "$WANT_DB" && test "$API_KEY" = "$WANT_API""#;

fn with_env_values(mut pod: Value) -> Value {
    pod["metadata"]["annotations"]["secrets/env-values"] = json!("true");
    pod["spec"]["containers"][0]["command"] = json!(["sh", "-c", CHECK_VALUES]);
    pod
}

fn csi_pod(annotations: &[(&str, &str)]) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": NS, "annotations": {
            "secrets/mode": "csi",
            "secrets/csi-class": "app-spc",
            "secrets/item.db-password": "db-password",
            "secrets/item.api-key": "api-key",
        }},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}
    });
    for (k, v) in annotations {
        p["metadata"]["annotations"][*k] = json!(v);
    }
    p
}

/// The eso form of [`pod`]: the Secret ESO syncs, the two items as its keys.
fn eso_pod(annotations: &[(&str, &str)]) -> Value {
    let mut p = pod("eso");
    let a = p["metadata"]["annotations"].as_object_mut().unwrap();
    a.insert("secrets/eso-secret".into(), json!("web-secrets"));
    a.insert("secrets/item.db-password".into(), json!("password"));
    a.insert("secrets/item.api-key".into(), json!("key"));
    for (k, v) in annotations {
        a.insert(k.to_string(), json!(v));
    }
    p
}

fn under(root: &Path, path: &str) -> std::path::PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The `secretmode-exec` init container as injected: the configured binary mapped to the
/// built wrapper, the target directory under `root`.
fn run_installer(patched: &Value, config: &Config, root: &Path) {
    let inits: Vec<&str> =
        patched["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let installer = container(patched, "initContainers", "secretmode-exec");
    let command: Vec<&str> = installer["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(command, vec![config.agent.exec_binary.as_str(), "--install", EXEC_DIR], "init containers {inits:?}");
    let mount = &installer["volumeMounts"][0];
    assert_eq!(mount["mountPath"], EXEC_DIR);
    let app_mount = container(patched, "containers", "app")["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == mount["name"])
        .expect("the app mounts the wrapper's volume")
        .clone();
    assert_eq!((&app_mount["mountPath"], &app_mount["readOnly"]), (&json!(EXEC_DIR), &json!(true)));
    // The emptyDir is mounted there before the container starts.
    std::fs::create_dir_all(under(root, EXEC_DIR)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_secretmode-exec"))
        .args(["--install", under(root, EXEC_DIR).to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "install: {}", String::from_utf8_lossy(&out.stderr));
}

/// The app container as injected, as a process: its wrapped command (the installed wrapper
/// under `root`), its args and literal env, with the `_FILE` paths under `root`.
fn run_app(patched: &Value, root: &Path, want: [(&str, &str); 2]) -> std::process::Output {
    let app = container(patched, "containers", "app");
    let command: Vec<&str> = app["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(command[..4], [EXEC_PATH, "--env", "API_KEY,DB_PASSWORD", "--"], "{command:?}");
    assert_eq!(command[4..], ["sh", "-c", CHECK_VALUES], "the app's own command follows, unchanged");
    let mut cmd = Command::new(under(root, command[0]));
    cmd.args(&command[1..]);
    for e in app["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = e["value"].as_str().unwrap_or_else(|| panic!("only literal env expected: {e}"));
        let value =
            if name.ends_with("_FILE") { under(root, value).to_string_lossy().into_owned() } else { value.into() };
        cmd.env(name, value);
    }
    for (k, v) in want {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn env_values_as_injected_reach_the_app_in_init_sidecar_and_csi() {
    let (bao, signer) = setup();
    let want = [("WANT_DB", "wh-pass"), ("WANT_API", "wh-key")];

    // init: the agent writes the files, the installer copies the wrapper, the app starts.
    let config = config(&bao, free_port(), true);
    let patched = mutate(&with_env_values(pod("init")), &config);
    let root = tempfile::tempdir().unwrap();
    let init = container(&patched, "initContainers", "secretmode-init");
    place_token(init, root.path(), &signer.token("vault"));
    let out = command_for(init, &config.agent.binary, root.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    run_installer(&patched, &config, root.path());
    let out = run_app(&patched, root.path(), want);
    assert!(out.status.success(), "init: the app saw other values: {}", String::from_utf8_lossy(&out.stderr));
    // And the check is a check: a value the app does not hold fails it.
    let out = run_app(&patched, root.path(), [("WANT_DB", "other"), ("WANT_API", "wh-key")]);
    assert!(!out.status.success(), "the value check passes whatever the values");

    // sidecar: the app starts once the sidecar has synced.
    let port = free_port();
    let config = self::config(&bao, port, true);
    let patched = mutate(&with_env_values(pod("sidecar")), &config);
    let root = tempfile::tempdir().unwrap();
    let _guard = start_sidecar(&patched, &config, root.path(), &signer, port);
    run_installer(&patched, &config, root.path());
    let out = run_app(&patched, root.path(), want);
    assert!(out.status.success(), "sidecar: the app saw other values: {}", String::from_utf8_lossy(&out.stderr));

    // csi: the driver's files (atomic-writer layout) at the mount path.
    let config = Config::builtin().unwrap();
    let patched = mutate(&with_env_values(csi_pod(&[])), &config);
    let root = tempfile::tempdir().unwrap();
    let dir = app_dir(&patched);
    let _volume = Volume::create(&under(root.path(), &dir), &[("db-password", "csi-pass"), ("api-key", "csi-key")]);
    run_installer(&patched, &config, root.path());
    let out = run_app(&patched, root.path(), [("WANT_DB", "csi-pass"), ("WANT_API", "csi-key")]);
    assert!(out.status.success(), "csi: the app saw other values: {}", String::from_utf8_lossy(&out.stderr));

    // eso: the kubelet sets the values from the Secret; nothing is wrapped.
    let patched = mutate(&with_env_values(eso_pod(&[])), &config);
    let app = container(&patched, "containers", "app");
    assert_eq!(app["command"], json!(["sh", "-c", CHECK_VALUES]));
    let db = app["env"].as_array().unwrap().iter().find(|e| e["name"] == "DB_PASSWORD").unwrap();
    assert_eq!(db["valueFrom"]["secretKeyRef"], json!({"name": "web-secrets", "key": "password"}));
}

/// The directory the app's `DB_PASSWORD_FILE` lies in.
fn app_dir(patched: &Value) -> String {
    let app = container(patched, "containers", "app");
    let file = app["env"].as_array().unwrap().iter().find(|e| e["name"] == "DB_PASSWORD_FILE").unwrap()["value"]
        .as_str()
        .unwrap();
    file.rsplit_once('/').unwrap().0.to_string()
}

fn allow_signals(config: &mut Config) {
    let rule: Rule = serde_yaml::from_str(&format!("name: signals\nnamespaces: [{NS}]\nallowSignals: true\n")).unwrap();
    // First: the built-in config's catch-all rule would match before it.
    config.policy.rules.insert(0, rule);
}

#[test]
fn on_change_from_the_sidecar_as_injected_is_one_request_per_rotation() {
    let (bao, signer) = setup();
    let app = App::start(0);
    let port = free_port();
    let config = config(&bao, port, true);
    let mut p = pod("sidecar");
    p["metadata"]["annotations"]["secrets/on-change"] = json!(format!("http://127.0.0.1:{}/-/reload", app.port));
    let patched = mutate(&p, &config);
    let root = tempfile::tempdir().unwrap();
    let _guard = start_sidecar(&patched, &config, root.path(), &signer, port);
    std::thread::sleep(Duration::from_secs(5));
    assert!(app.requests().is_empty(), "no notification for the first generation: {:?}", app.requests());

    bao.put("app/db", json!({"password": "wh-pass-2"}));
    wait_for("one notification", Duration::from_secs(30), || (!app.requests().is_empty()).then_some(()));
    std::thread::sleep(Duration::from_secs(6));
    let seen = app.requests();
    assert_eq!(seen.len(), 1, "exactly one request per rotation: {seen:?}");
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/-/reload"));
}

/// `secretmode watch` as injected in an eso or csi pod, on the directory the app reads.
fn start_watcher(patched: &Value, config: &Config, root: &Path) -> (KillGuard, u16) {
    let watcher = container(patched, "initContainers", "secretmode-watcher");
    assert_eq!(watcher["args"], json!(["watch"]));
    let port = watcher["livenessProbe"]["httpGet"]["port"].as_u64().unwrap() as u16;
    let child =
        command_for(watcher, &config.agent.binary, root).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let guard = KillGuard(child);
    wait_for("watcher /healthz", Duration::from_secs(30), || {
        http("GET", &format!("http://127.0.0.1:{port}/healthz"), &[], None).ok().filter(|(c, _)| *c == 200)
    });
    (guard, port)
}

#[test]
fn on_change_from_the_watcher_as_injected_is_one_request_or_one_signal_per_swap() {
    // eso + an HTTP action: the kubelet swaps the Secret volume.
    let app = App::start(0);
    let mut config = Config::builtin().unwrap();
    config.agent.health_port = free_port();
    let action = format!("PUT http://localhost:{}/reload", app.port);
    let patched = mutate(&eso_pod(&[("secrets/on-change", &action)]), &config);
    let root = tempfile::tempdir().unwrap();
    let dir = under(root.path(), &app_dir(&patched));
    let mut volume = Volume::create(&dir, &[("password", "p1"), ("key", "k1")]);
    let (_watcher, _) = start_watcher(&patched, &config, root.path());
    volume.swap(&[("password", "p2"), ("key", "k1")]);
    wait_for("one notification", Duration::from_secs(30), || (!app.requests().is_empty()).then_some(()));
    std::thread::sleep(Duration::from_secs(6));
    let seen = app.requests();
    assert_eq!(seen.len(), 1, "exactly one request per swap: {seen:?}");
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("PUT", "/reload"));

    // csi + a signal: the process namespace is shared, the app marked, the watcher runs as the
    // app's user, and the app's main process gets one SIGHUP.
    let mut config = Config::builtin().unwrap();
    config.agent.health_port = free_port();
    allow_signals(&mut config);
    let mut csi = csi_pod(&[("secrets/on-change", "signal:HUP")]);
    csi["spec"]["securityContext"] = json!({"runAsUser": 1000, "runAsGroup": 1000});
    let patched = mutate(&csi, &config);
    assert_eq!(patched["spec"]["shareProcessNamespace"], json!(true));
    let app_env = container(&patched, "containers", "app")["env"].clone();
    assert!(
        app_env.as_array().unwrap().iter().any(|e| e["name"] == "SECRETMODE_SIGNAL_TARGET" && e["value"] == "app"),
        "{app_env}"
    );
    let watcher = container(&patched, "initContainers", "secretmode-watcher");
    assert_eq!(watcher["securityContext"]["runAsUser"], 1000);
    let root = tempfile::tempdir().unwrap();
    let dir = under(root.path(), &app_dir(&patched));
    let mut volume = Volume::create(&dir, &[("db-password", "p1"), ("api-key", "k1")]);
    let target = Target::start(root.path());
    let (_watcher, _) = start_watcher(&patched, &config, root.path());
    volume.swap(&[("db-password", "p2"), ("api-key", "k1")]);
    wait_for("one signal", Duration::from_secs(30), || (!target.hups().is_empty()).then_some(()));
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(target.hups(), vec!["main"], "one SIGHUP, to the main process only");
}

// ---- issue 25, as injected: rendered files ----

const DSN: &str = "postgresql://app:{{ db-password | urlescape }}@db:5432/app?key={{ api-key }}";

/// The rendered file `name` as the app reads it: through its `<STEM>_FILE` variable.
fn read_rendered(patched: &Value, root: &Path, var: &str) -> Option<String> {
    let app = container(patched, "containers", "app");
    let path = app["env"].as_array().unwrap().iter().find(|e| e["name"] == var)?["value"].as_str()?.to_string();
    std::fs::read_to_string(under(root, &path)).ok()
}

#[test]
fn rendered_files_as_injected_in_sidecar_and_eso() {
    // sidecar: the agent renders the template from the spec the webhook wrote.
    let (bao, signer) = setup();
    bao.put("app/db", json!({"password": "p@ss/1"}));
    let port = free_port();
    let config = config(&bao, port, true);
    let mut p = pod("sidecar");
    p["metadata"]["annotations"]["secrets/template.db-url"] = json!(DSN);
    let patched = mutate(&p, &config);
    let root = tempfile::tempdir().unwrap();
    let _guard = start_sidecar(&patched, &config, root.path(), &signer, port);
    assert_eq!(
        read_rendered(&patched, root.path(), "DB_URL_FILE").as_deref(),
        Some("postgresql://app:p%40ss%2F1@db:5432/app?key=wh-key")
    );
    bao.put("app/db", json!({"password": "second"}));
    wait_for("the rendered file follows a rotation", Duration::from_secs(20), || {
        (read_rendered(&patched, root.path(), "DB_URL_FILE")?.contains(":second@")).then_some(())
    });

    // eso: the render step renders from the mounted Secret before the app starts, the watcher
    // re-renders on each swap of it.
    let mut config = Config::builtin().unwrap();
    config.agent.health_port = free_port();
    let patched = mutate(&eso_pod(&[("secrets/template.db-url", DSN), ("secrets/bundle.app.json", "json")]), &config);
    let root = tempfile::tempdir().unwrap();
    let dir = under(root.path(), &app_dir(&patched));
    // The kubelet writes each declared key under the item's name (the volume's `items`).
    let mut volume = Volume::create(&dir, &[("db-password", "s1"), ("api-key", "k1")]);
    let step = container(&patched, "initContainers", "secretmode-render");
    assert_eq!(step["args"], json!(["render"]));
    let out = command_for(step, &config.agent.binary, root.path()).output().unwrap();
    assert!(out.status.success(), "render step: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        read_rendered(&patched, root.path(), "DB_URL_FILE").as_deref(),
        Some("postgresql://app:s1@db:5432/app?key=k1")
    );
    let bundle: Value = serde_json::from_str(&read_rendered(&patched, root.path(), "APP_JSON_FILE").unwrap()).unwrap();
    assert_eq!(bundle, json!({"api-key": "k1", "db-password": "s1"}));

    let (_watcher, _) = start_watcher(&patched, &config, root.path());
    volume.swap(&[("db-password", "s2"), ("api-key", "k1")]);
    wait_for("the watcher re-renders", Duration::from_secs(30), || {
        (read_rendered(&patched, root.path(), "DB_URL_FILE")? == "postgresql://app:s2@db:5432/app?key=k1").then_some(())
    });
    let bundle: Value = serde_json::from_str(&read_rendered(&patched, root.path(), "APP_JSON_FILE").unwrap()).unwrap();
    assert_eq!(bundle, json!({"api-key": "k1", "db-password": "s2"}));
}
