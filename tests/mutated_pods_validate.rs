//! Every mode and every checklist shape, mutated and then checked by
//! `kubernetes-validate --strict` against the official schemas of the oldest and newest
//! Kubernetes versions we support.

mod support;

use serde_json::{json, Value};

use secretmode::config::Config;
use secretmode::decide::{admit_pod, Decision};

fn pod(name: &str, annotations: Value, spec: Value) -> Value {
    let mut pod = support::pods::pod(name, "team-a", annotations, spec);
    pod["metadata"]["labels"] = json!({"app": name});
    pod
}

fn app() -> Value {
    json!({"containers": [{"name": "app", "image": "registry.example/app:1.0",
        "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}]})
}

fn mutated(config: &Config, p: &Value) -> Value {
    match admit_pod(p, "team-a", config) {
        Decision::Allow { patch, .. } => {
            assert!(!patch.is_empty(), "expected an injection for {}", p["metadata"]["name"]);
            support::patch::apply_ops(p, &patch)
        }
        d => panic!("{} denied: {d:?}", p["metadata"]["name"]),
    }
}

#[test]
fn every_mutated_pod_passes_strict_schema_validation() {
    let config = Config::builtin().unwrap();
    let mut plain = config.clone();
    plain.agent.native_sidecar = false;
    let huge_env: Vec<Value> = (0..1500).map(|i| json!({"name": format!("VAR_{i}"), "value": "v"})).collect();
    let huge: Vec<Value> = (0..30).map(|i| json!({"name": format!("c{i}"), "image": "i", "env": huge_env})).collect();
    let mut windows = app();
    windows["os"] = json!({"name": "windows"});
    let mut host = app();
    host["hostNetwork"] = json!(true);
    let mut existing = app();
    existing["securityContext"] = json!({"runAsUser": 1000, "fsGroup": 2000});
    existing["automountServiceAccountToken"] = json!(false);
    existing["volumes"] = json!([{"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "api"}}]}}]);
    existing["initContainers"] = json!([{"name": "shipper", "image": "s", "restartPolicy": "Always"}]);
    existing["containers"][0]["volumeMounts"] = json!([{"name": "token", "mountPath": "/var/run/app-token"}]);
    existing["containers"][0]["env"] = json!([{"name": "EXISTING", "value": "1"}]);

    let commanded = json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
        "containers": [{"name": "app", "image": "i", "command": ["/app"]}]});
    let sidecar = json!({"secrets/mode": "sidecar", "secrets/item.db-password": "team-a/db#password", "secrets/item.api.key": "team-a/api#key", "secrets/fallback-secret": "db-fallback"});
    let cases = vec![
        (
            "eso",
            &config,
            pod(
                "eso",
                json!({"secrets/mode": "eso", "secrets/eso-secret": "app", "secrets/item.db-password": "password", "secrets/env-values": "true"}),
                app(),
            ),
        ),
        (
            "csi",
            &config,
            pod(
                "csi",
                json!({"secrets/mode": "csi", "secrets/csi-class": "app-spc", "secrets/item.db-password": "dbPassword"}),
                app(),
            ),
        ),
        (
            "init",
            &config,
            pod("init", json!({"secrets/mode": "init", "secrets/item.db-password": "team-a/db#password"}), app()),
        ),
        ("sidecar", &config, pod("sidecar", sidecar.clone(), app())),
        ("sidecar-plain", &plain, pod("sidecar-plain", sidecar.clone(), app())),
        (
            "aws",
            &config,
            pod("aws", json!({"secrets/mode": "init", "secrets/provider": "aws", "secrets/item.db": "prod/db"}), app()),
        ),
        (
            "windows-csi",
            &config,
            pod(
                "windows-csi",
                json!({"secrets/mode": "csi", "secrets/csi-class": "c", "secrets/item.a": "a"}),
                windows,
            ),
        ),
        (
            "host-network-init",
            &config,
            pod("host-network-init", json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), host),
        ),
        ("existing-fields", &config, pod("existing-fields", sidecar.clone(), existing)),
        // Issue 25: rendered files in every mode (eso with env-values is wrapped for them).
        (
            "eso-rendered",
            &config,
            pod(
                "eso-rendered",
                json!({"secrets/mode": "eso", "secrets/eso-secret": "app", "secrets/item.db-password": "password",
                       "secrets/env-values": "true", "secrets/bundle.app.env": "dotenv",
                       "secrets/template.app.yaml": "db:\n  password: {{ db-password }}\n"}),
                commanded.clone(),
            ),
        ),
        (
            "csi-rendered-plain",
            &plain,
            pod(
                "csi-rendered-plain",
                json!({"secrets/mode": "csi", "secrets/csi-class": "app-spc", "secrets/item.db-password": "db-password",
                       "secrets/on-change": "http://127.0.0.1:8080/-/reload", "secrets/bundle.creds.json": "json"}),
                commanded.clone(),
            ),
        ),
        (
            "sidecar-rendered",
            &config,
            pod(
                "sidecar-rendered",
                json!({"secrets/mode": "sidecar", "secrets/item.db-password": "team-a/db#password",
                       "secrets/template.dsn": "pg://u:{{ db-password | urlescape }}@db/app", "secrets/env-values": "true"}),
                commanded.clone(),
            ),
        ),
        (
            "huge",
            &config,
            pod("huge", json!({"secrets/mode": "sidecar", "secrets/item.a": "x/y#z"}), json!({"containers": huge})),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut objects: Vec<(String, Value)> =
        cases.iter().map(|(name, cfg, p)| (name.to_string(), mutated(cfg, p))).collect();
    // Re-invoked after another webhook added a container: still valid, still one agent.
    let mut reinvoked = objects[3].1.clone();
    reinvoked["metadata"]["name"] = json!("reinvoked");
    reinvoked["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "proxy", "image": "p"}));
    objects.push(("reinvoked".into(), mutated(&config, &reinvoked)));
    support::validate_objects(dir.path(), &objects);
}
