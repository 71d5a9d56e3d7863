//! Reinvocation, through the real `secretmode mutate` binary: a pod injected once, then
//! changed the way the API server and another webhook change it between two calls
//! (`../shared/APISERVER.md`, facts 2, 3, 12, 13), then decided again. It must be admitted
//! with no further patch; a changed owned field must still be denied, and an injection made by
//! another configuration or version of secretmode is denied with a message that says so.
//!
//! The changes are written here from those facts, one function each (ServiceAccount plugin,
//! LimitRanger, AlwaysPullImages, v1 defaults, an AWS pod-identity-style webhook), so a
//! failure names the one that broke idempotence.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

use secretmode::config::DEFAULT_CONFIG_YAML;
use support::apiserver::plugins::{self, LimitRange};
use support::apiserver::{defaults, object};

fn mutate(args: &[&str], input: &Value) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_secretmode"))
        .arg("mutate")
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run secretmode mutate");
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).expect("write stdin");
    child.wait_with_output().expect("secretmode mutate finishes")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The object `mutate` prints (JSON in, JSON out); panics with stderr on a denial.
fn mutated(args: &[&str], input: &Value) -> Value {
    let out = mutate(args, input);
    assert!(out.status.success(), "mutate denied or failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("mutate prints JSON for JSON")
}

/// The JSON Patch `mutate --patch` prints; panics with stderr on a denial.
fn patch(args: &[&str], input: &Value) -> Value {
    let mut with_patch = args.to_vec();
    with_patch.push("--patch");
    mutated(&with_patch, input)
}

/// The denial message; panics if the pod was admitted.
fn denial(args: &[&str], input: &Value) -> String {
    let out = mutate(args, input);
    assert_eq!(out.status.code(), Some(1), "expected a denial, got: {}", String::from_utf8_lossy(&out.stdout));
    stderr(&out)
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-7d9c-", "namespace": "shop", "labels": {"app": "web"}, "annotations": annotations},
        "spec": {
            "serviceAccountName": "web",
            "initContainers": [{"name": "migrate", "image": "registry.example/migrate:2"}],
            "containers": [
                {"name": "web", "image": "registry.example/web:1.4",
                 "ports": [{"containerPort": 8080, "name": "http"}],
                 "readinessProbe": {"httpGet": {"port": 8080, "path": "/ready"}}},
                {"name": "worker", "image": "registry.example/worker:1.4"}
            ]
        }
    })
}

/// The wrapper's path in every wrapped container (`vocabulary::paths::EXEC_PATH`).
const EXEC_PATH: &str = "/var/run/secrets/secretmode/bin/secretmode-exec";

fn init() -> Value {
    pod(json!({"secrets/mode": "init", "secrets/item.db-password": "shop/db#password"}))
}

fn sidecar() -> Value {
    pod(json!({"secrets/mode": "sidecar", "secrets/item.db-password": "shop/db#password",
               "secrets/item.api.key": "shop/api#key", "secrets/fallback-secret": "web-fallback"}))
}

fn each_container(pod: &mut Value, mut f: impl FnMut(&mut serde_json::Map<String, Value>)) {
    for list in ["initContainers", "containers"] {
        if let Some(list) = pod["spec"][list].as_array_mut() {
            for c in list {
                f(c.as_object_mut().expect("a container is an object"));
            }
        }
    }
}

fn push(obj: &mut serde_json::Map<String, Value>, field: &str, value: Value) {
    match obj.get_mut(field).and_then(Value::as_array_mut) {
        Some(list) => list.push(value),
        None => {
            obj.insert(field.to_string(), json!([value]));
        }
    }
}

/// The ServiceAccount plugin (support::apiserver::plugins): a `kube-api-access-*` projected
/// volume (token, CA, namespace), mounted read-only into every container and init container
/// with no mount at its path.
fn service_account(pod: &mut Value) {
    let accounts = BTreeMap::from([("web".to_string(), None)]);
    plugins::service_account(pod, "shop", &accounts, &mut || "x7k2p".to_string()).expect("ServiceAccount plugin");
}

/// LimitRanger with a LimitRange holding default limits and requests for cpu, memory and
/// ephemeral-storage: each missing one is filled in.
fn limit_ranger(pod: &mut Value) {
    plugins::limit_ranger(pod, &LimitRange::typical());
}

/// AlwaysPullImages.
fn always_pull(pod: &mut Value) {
    plugins::always_pull_images(pod);
}

/// The decode and re-default after a patch (`pkg/apis/core/v1/defaults.go`, canonical
/// quantities), with the Priority plugin's fields: what a webhook finds on its own objects.
fn api_defaults(pod: &mut Value) {
    *pod = object::decode(pod).expect("decodes as a v1 Pod");
    defaults::pod(pod);
    plugins::priority(pod).expect("Priority plugin");
}

/// A cloud-identity webhook like AWS's pod-identity webhook: env vars, a projected token
/// volume and its mount in every container and init container.
fn pod_identity_webhook(pod: &mut Value) {
    let volume = json!({"name": "aws-iam-token", "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}]}});
    push(pod["spec"].as_object_mut().expect("spec"), "volumes", volume);
    each_container(pod, |c| {
        push(c, "env", json!({"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::111122223333:role/web"}));
        push(
            c,
            "env",
            json!({"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}),
        );
        push(
            c,
            "volumeMounts",
            json!({"name": "aws-iam-token", "readOnly": true, "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount"}),
        );
    });
}

type Change = fn(&mut Value);

const CHANGES: [(&str, Change); 5] = [
    ("ServiceAccount plugin", service_account),
    ("LimitRanger", limit_ranger),
    ("AlwaysPullImages", always_pull),
    ("v1 defaults", api_defaults),
    ("pod-identity webhook", pod_identity_webhook),
];

/// What the API server does between the two calls, in its order: in-tree plugins, the
/// decode and re-default, then the other webhook (which reinvocation places before ours).
fn everything(pod: &mut Value) {
    api_defaults(pod);
    service_account(pod);
    limit_ranger(pod);
    always_pull(pod);
    pod_identity_webhook(pod);
    api_defaults(pod);
}

/// The application contract after the rounds: every app container mounts the files read-only
/// and has `<ITEM>_FILE`.
fn assert_contract(pod: &Value, items: &[&str]) {
    for c in pod["spec"]["containers"].as_array().expect("containers") {
        if c["name"].as_str().is_some_and(|n| n.starts_with("secretmode-")) {
            continue;
        }
        let mounts = c["volumeMounts"].as_array().expect("mounts");
        assert!(
            mounts.iter().any(|m| m["name"] == "secretmode-secrets" && m["readOnly"] == true),
            "{}: no read-only secrets mount",
            c["name"]
        );
        for item in items {
            let var = format!("{item}_FILE");
            assert!(c["env"].as_array().expect("env").iter().any(|e| e["name"] == var), "{}: no {var}", c["name"]);
        }
    }
}

fn config_file(dir: &Path, name: &str, edit: impl Fn(&str) -> String) -> String {
    let path = dir.join(name);
    std::fs::write(&path, edit(DEFAULT_CONFIG_YAML)).expect("write config");
    path.to_string_lossy().into_owned()
}

/// The reproduction of issue 21: every init and sidecar pod was denied on the second call
/// ("initContainers entry secretmode-init exists but differs").
#[test]
fn a_reinvoked_injection_with_the_api_servers_and_another_webhooks_additions_gets_no_patch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = config_file(dir.path(), "plain.yaml", |c| c.replace("nativeSidecar: true", "nativeSidecar: false"));
    // Quantities the API server writes back in another form.
    let odd = config_file(dir.path(), "odd.yaml", |c| {
        c.replace("cpu: 10m", "cpu: \"0.01\"").replace("memory: 16Mi", "memory: 16384Ki")
    });
    let cases: [(&str, Value, Vec<&str>, &[&str]); 5] = [
        ("init", init(), vec![], &["DB_PASSWORD"]),
        ("native sidecar", sidecar(), vec![], &["DB_PASSWORD", "API_KEY"]),
        ("plain sidecar", sidecar(), vec!["--config", &plain], &["DB_PASSWORD", "API_KEY"]),
        ("init, quantities rewritten", init(), vec!["--config", &odd], &["DB_PASSWORD"]),
        (
            "eso",
            pod(
                json!({"secrets/mode": "eso", "secrets/eso-secret": "web", "secrets/item.token": "token", "secrets/env-values": "true"}),
            ),
            vec![],
            &["TOKEN"],
        ),
    ];
    for (case, pod, args, items) in &cases {
        let once = mutated(args, pod);
        for (change, apply) in CHANGES.iter().map(|(n, f)| (*n, *f)).chain([("all of them", everything as Change)]) {
            let mut changed = once.clone();
            apply(&mut changed);
            let again = patch(args, &changed);
            assert_eq!(again, json!([]), "{case}, after {change}: a second patch");
            assert_contract(&changed, items);
            // And once more, as a further round would.
            assert_eq!(patch(args, &changed), json!([]), "{case}, after {change}: not stable");
        }
    }
}

/// Issue 24's additions meet the same round: wrapped commands and the exec installer, the
/// watcher, a signal's shared process namespace and the sender run as the app's user. Each is
/// recognised as injected (never wrapped twice, no second watcher), whatever the API server
/// and the other webhook added.
#[test]
fn env_values_and_on_change_are_recognised_on_reinvocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let allow =
        |c: &str| c.replace("      enforcement: enforce", "      allowSignals: true\n      enforcement: enforce");
    let signals = config_file(dir.path(), "signals.yaml", allow);
    let plain =
        config_file(dir.path(), "plain.yaml", |c| allow(c).replace("nativeSidecar: true", "nativeSidecar: false"));
    let with = |mut p: Value, extra: Value| {
        for (k, v) in extra.as_object().expect("annotations") {
            p["metadata"]["annotations"][k] = v.clone();
        }
        p["spec"]["securityContext"] = json!({"runAsUser": 1000, "runAsGroup": 1000});
        p["spec"]["containers"][0]["command"] = json!(["/web", "--serve"]);
        p["spec"]["containers"][1]["command"] = json!(["/worker"]);
        p
    };
    let eso = || pod(json!({"secrets/mode": "eso", "secrets/eso-secret": "web", "secrets/item.token": "token"}));
    let csi = || pod(json!({"secrets/mode": "csi", "secrets/csi-class": "web", "secrets/item.token": "token"}));
    let env = json!({"secrets/env-values": "true"});
    let http = json!({"secrets/on-change": "http://127.0.0.1:8080/-/reload"});
    let signal = json!({"secrets/on-change": "signal:HUP"});
    let both = json!({"secrets/env-values": "true", "secrets/on-change": "signal:USR1"});
    let cases: [(&str, Value, Vec<&str>, &[&str]); 9] = [
        ("init, env-values", with(init(), env.clone()), vec![], &["DB_PASSWORD"]),
        ("sidecar, env-values", with(sidecar(), env.clone()), vec![], &["DB_PASSWORD", "API_KEY"]),
        ("csi, env-values", with(csi(), env), vec![], &["TOKEN"]),
        ("eso, http", with(eso(), http.clone()), vec![], &["TOKEN"]),
        ("csi, signal", with(csi(), signal.clone()), vec!["--config", &signals], &["TOKEN"]),
        ("eso, signal, plain", with(eso(), signal), vec!["--config", &plain], &["TOKEN"]),
        ("sidecar, http", with(sidecar(), http), vec![], &["DB_PASSWORD", "API_KEY"]),
        ("sidecar, both", with(sidecar(), both.clone()), vec!["--config", &signals], &["DB_PASSWORD", "API_KEY"]),
        ("plain sidecar, both", with(sidecar(), both), vec!["--config", &plain], &["DB_PASSWORD", "API_KEY"]),
    ];
    for (case, pod, args, items) in &cases {
        let once = mutated(args, pod);
        for (change, apply) in CHANGES.iter().map(|(n, f)| (*n, *f)).chain([("all of them", everything as Change)]) {
            let mut changed = once.clone();
            apply(&mut changed);
            assert_eq!(patch(args, &changed), json!([]), "{case}, after {change}: a second patch");
            assert_contract(&changed, items);
            for c in changed["spec"]["containers"].as_array().expect("containers") {
                let wrappers = c["command"].as_array().into_iter().flatten().filter(|w| *w == EXEC_PATH).count();
                let wrapped = case.contains("env-values") || case.contains("both");
                let ours = c["name"].as_str().is_some_and(|n| n.starts_with("secretmode-"));
                assert_eq!(wrappers, usize::from(wrapped && !ours), "{case}, after {change}: {}", c["command"]);
            }
            if case.contains("signal") || case.contains("both") {
                assert_eq!(changed["spec"]["shareProcessNamespace"], true, "{case}");
            }
        }
    }
}

/// Issue 25's additions meet the same round: the agent's rendered files in init and sidecar;
/// in eso and csi the render step, its in-memory volume, the apps' read-only mount at
/// `<mount-path>-rendered` and the re-rendering watcher; with env-values the wrapper (in eso
/// too). Each is recognised as injected whatever the API server and the other webhook added.
#[test]
fn rendered_files_are_recognised_on_reinvocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = config_file(dir.path(), "plain.yaml", |c| c.replace("nativeSidecar: true", "nativeSidecar: false"));
    let with = |mut p: Value, extra: Value| {
        for (k, v) in extra.as_object().expect("annotations") {
            p["metadata"]["annotations"][k] = v.clone();
        }
        p["spec"]["containers"][0]["command"] = json!(["/web", "--serve"]);
        p["spec"]["containers"][1]["command"] = json!(["/worker"]);
        p
    };
    let eso = || pod(json!({"secrets/mode": "eso", "secrets/eso-secret": "web", "secrets/item.token": "token"}));
    let csi = || pod(json!({"secrets/mode": "csi", "secrets/csi-class": "web", "secrets/item.token": "token"}));
    let files = json!({"secrets/template.web.conf": "token_file = {{ \"${TOKEN_FILE}\" }}\nbundle = {{ token | base64 }}\n",
                       "secrets/bundle.web.env": "dotenv"});
    let token_files = json!({"secrets/template.web.conf": "t={{ token }}", "secrets/bundle.web.env": "dotenv",
                             "secrets/env-values": "true"});
    let agent_files = json!({"secrets/template.dsn": "pg://u:{{ db-password | urlescape }}@db/app",
                             "secrets/bundle.all.json": "json"});
    let mut agent_env = agent_files.clone();
    agent_env["secrets/env-values"] = json!("true");
    let cases: [(&str, Value, Vec<&str>, &[&str]); 7] = [
        ("eso", with(eso(), files.clone()), vec![], &["TOKEN", "WEB_CONF", "WEB_ENV"]),
        ("csi", with(csi(), files.clone()), vec![], &["TOKEN", "WEB_CONF", "WEB_ENV"]),
        ("eso, plain", with(eso(), files), vec!["--config", &plain], &["TOKEN", "WEB_CONF", "WEB_ENV"]),
        ("eso, env-values", with(eso(), token_files.clone()), vec![], &["TOKEN", "WEB_CONF", "WEB_ENV"]),
        ("csi, env-values", with(csi(), token_files), vec![], &["TOKEN", "WEB_CONF", "WEB_ENV"]),
        ("init", with(init(), agent_files), vec![], &["DB_PASSWORD", "DSN", "ALL_JSON"]),
        ("sidecar, env-values", with(sidecar(), agent_env), vec![], &["DB_PASSWORD", "DSN", "ALL_JSON"]),
    ];
    for (case, pod, args, vars) in &cases {
        let once = mutated(args, pod);
        let beside = case.starts_with("eso") || case.starts_with("csi");
        let init_names: Vec<&str> = once["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(init_names.contains(&"secretmode-render"), beside, "{case}: {init_names:?}");
        for (change, apply) in CHANGES.iter().map(|(n, f)| (*n, *f)).chain([("all of them", everything as Change)]) {
            let mut changed = once.clone();
            apply(&mut changed);
            assert_eq!(patch(args, &changed), json!([]), "{case}, after {change}: a second patch");
            assert_contract(&changed, vars);
            for c in changed["spec"]["containers"].as_array().expect("containers") {
                if c["name"].as_str().is_some_and(|n| n.starts_with("secretmode-")) {
                    continue;
                }
                let rendered = c["volumeMounts"].as_array().into_iter().flatten().any(|m| {
                    m["name"] == "secretmode-rendered"
                        && m["mountPath"] == "/var/run/secrets-cache-rendered"
                        && m["readOnly"] == true
                });
                assert_eq!(rendered, beside, "{case}, after {change}: {}", c["name"]);
                let wrappers = c["command"].as_array().into_iter().flatten().filter(|w| *w == EXEC_PATH).count();
                assert_eq!(wrappers, usize::from(case.contains("env-values")), "{case}, after {change}");
            }
        }
    }
}

/// A container a later webhook adds gets the mount and env on reinvocation, next to all of
/// the above; nothing else is patched.
#[test]
fn a_container_added_by_another_webhook_is_wired_on_reinvocation() {
    for pod in [init(), sidecar()] {
        let mut changed = mutated(&[], &pod);
        everything(&mut changed);
        changed["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": "mesh-proxy", "image": "mesh/proxy:1"}));
        let ops = patch(&[], &changed);
        let index = changed["spec"]["containers"].as_array().expect("containers").len() - 1;
        let prefix = format!("/spec/containers/{index}/");
        for op in ops.as_array().expect("ops") {
            assert!(op["path"].as_str().is_some_and(|p| p.starts_with(&prefix)), "{op}");
        }
        let wired = mutated(&[], &changed);
        assert_contract(&wired, &["DB_PASSWORD"]);
    }
}

/// A hand-built agent still cannot slip past: each owned field changed after the additions is
/// a denial naming the container and the field.
#[test]
fn owned_fields_changed_alongside_the_additions_are_denied() {
    let mut base = mutated(&[], &sidecar());
    everything(&mut base);
    type Tamper = fn(&mut Value);
    let cases: [(Tamper, &str); 6] = [
        (|p| p["spec"]["initContainers"][0]["image"] = json!("attacker/agent:latest"), "field image differs"),
        (|p| p["spec"]["initContainers"][0]["command"] = json!(["/bin/sh", "-c"]), "field command differs"),
        (
            |p| p["spec"]["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true),
            "field securityContext.allowPrivilegeEscalation differs",
        ),
        (
            |p| {
                let env = p["spec"]["initContainers"][0]["env"].as_array_mut().expect("env");
                let spec = env.iter().find(|e| e["name"] == "SECRETMODE_AGENT_SPEC").expect("spec env").clone();
                let mut text: Value = serde_json::from_str(spec["value"].as_str().expect("text")).expect("spec json");
                text["items"][0]["path"] = json!("other-team/db");
                env.push(json!({"name": "SECRETMODE_AGENT_SPEC", "value": text.to_string()}));
            },
            "field env[SECRETMODE_AGENT_SPEC].value differs (agent spec field items[0].path)",
        ),
        (
            |p| p["spec"]["initContainers"][0]["livenessProbe"]["httpGet"]["path"] = json!("/startup"),
            "field livenessProbe.httpGet.path differs",
        ),
        (
            |p| {
                let volumes = p["spec"]["volumes"].as_array_mut().expect("volumes");
                let token = volumes.iter_mut().find(|v| v["name"] == "secretmode-token").expect("token volume");
                token["projected"]["sources"][0]["serviceAccountToken"]["audience"] = json!("kubernetes");
            },
            "field projected.sources[0].serviceAccountToken.audience differs",
        ),
    ];
    for (tamper, field) in cases {
        let mut p = base.clone();
        tamper(&mut p);
        let m = denial(&[], &p);
        assert!(m.contains(field), "expected {field:?} in: {m}");
        assert!(m.contains("secretmode-"), "the object is named: {m}");
        assert!(m.contains("fix: remove the secretmode- objects"), "{m}");
    }
}

/// The upgrade decision (docs/INSTALL.md "Upgrade"): a template baked with `mutate` under one
/// configuration is judged by the webhook's current one; it is denied, saying it looks like
/// another configuration or version, which field differs, and the fix. A template without a
/// baked injection gets the current agent.
#[test]
fn an_injection_from_another_configuration_or_version_is_denied_with_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = config_file(dir.path(), "old.yaml", |c| c.to_string());
    let new = config_file(dir.path(), "new.yaml", |c| {
        c.replace("ghcr.io/secretmode/secretmode:0.1.0", "ghcr.io/secretmode/secretmode:0.2.0")
    });
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}, "annotations": init()["metadata"]["annotations"]},
            "spec": init()["spec"]}}
    });
    // Baked offline with the old config, then created under the new webhook.
    let baked = mutated(&["--config", &old], &deployment);
    let m = denial(&["--config", &new], &baked);
    for part in [
        "initContainers entry secretmode-init",
        "field image differs",
        "\"ghcr.io/secretmode/secretmode:0.1.0\"",
        "\"ghcr.io/secretmode/secretmode:0.2.0\"",
        "another secretmode configuration or version",
        "re-run `secretmode mutate` with the current config",
    ] {
        assert!(m.contains(part), "expected {part:?} in: {m}");
    }
    // Re-running mutate with the current config is not enough on a baked template: the fix
    // is to bake from the un-injected template.
    let rebaked = mutated(&["--config", &new], &deployment);
    assert_eq!(patch(&["--config", &new], &rebaked), json!([]));
    assert_eq!(
        rebaked["spec"]["template"]["spec"]["initContainers"][0]["image"],
        "ghcr.io/secretmode/secretmode:0.2.0"
    );

    // A rolling upgrade: the first call reached an old replica, the reinvocation a new one.
    let mut first = mutated(&["--config", &old], &init());
    everything(&mut first);
    let m = denial(&["--config", &new], &first);
    assert!(m.contains("field image differs") && m.contains("another secretmode configuration or version"), "{m}");
    // A settings change (not the image) is named too.
    let slower = config_file(dir.path(), "slower.yaml", |c| c.replace("startDeadline: 60s", "startDeadline: 90s"));
    let m = denial(&["--config", &slower], &first);
    assert!(m.contains("agent spec field startDeadlineSeconds"), "{m}");
}
