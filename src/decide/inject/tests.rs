//! Every mode and every checklist case: decide, apply the returned patch with an independent
//! RFC 6902 implementation, and check the resulting pod.

use serde_json::{json, Value};

use super::*;
use crate::agent::spec::AgentSpec;
use crate::decide::{admit_pod, Decision, Outcome};
use crate::providers::vault::VaultAuth;
use crate::providers::{AgentItem, ProviderConfig};
use crate::vocabulary::names::{FALLBACK_VOLUME, INIT_CONTAINER, SIDECAR_CONTAINER, TOKEN_VOLUME};
use crate::vocabulary::paths::{self as agent_paths, clean_path};

fn config() -> Config {
    Config::builtin().unwrap()
}

fn pod(annotations: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team-a", "annotations": annotations},
        "spec": spec,
    })
}

fn app() -> Value {
    json!({"containers": [{"name": "app", "image": "nginx"}]})
}

/// Decides with `config` and applies the patch (json-patch crate, not ours).
fn admit_with(p: &Value, config: &Config) -> (Value, Decision) {
    let decision = admit_pod(p, "team-a", config);
    let mut out = p.clone();
    if let Decision::Allow { patch, .. } = &decision {
        let patch: json_patch::Patch = serde_json::from_value(serde_json::to_value(patch).unwrap()).unwrap();
        json_patch::patch(&mut out, &patch).expect("the returned patch applies");
    }
    (out, decision)
}

fn admit(p: &Value) -> (Value, Decision) {
    admit_with(p, &config())
}

fn injected(p: &Value) -> Value {
    let (out, d) = admit(p);
    assert!(matches!(d, Decision::Allow { outcome: Outcome::Injected, .. }), "{d:?}");
    out
}

fn denied(p: &Value) -> String {
    match admit(p).1 {
        Decision::Deny { message, .. } => message,
        d => panic!("expected a denial, got {d:?}"),
    }
}

fn no_patch(p: &Value) {
    match admit(p).1 {
        Decision::Allow { patch, .. } => assert!(patch.is_empty(), "unexpected patch {patch:?}"),
        d => panic!("expected allow, got {d:?}"),
    }
}

fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array().unwrap().iter().find(|e| e["name"] == name).unwrap_or_else(|| panic!("{name} missing in {list}"))
}

fn env_value(container: &Value, name: &str) -> Value {
    find(&container["env"], name).clone()
}

fn assert_restricted(c: &Value) {
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert!(sc["runAsUser"].as_i64().unwrap() > 0);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
}

fn app_mount(app: &Value) -> &Value {
    find(&app["volumeMounts"], SECRETS_VOLUME)
}

#[test]
fn eso_mode() {
    let p = pod(
        json!({"secrets/mode": "eso", "secrets/eso-secret": "app-secrets", "secrets/item.db-password": "password", "secrets/env-values": "true"}),
        app(),
    );
    let out = injected(&p);
    let vol = find(&out["spec"]["volumes"], SECRETS_VOLUME);
    assert_eq!(vol["secret"]["secretName"], "app-secrets");
    assert_eq!(vol["secret"]["defaultMode"], 0o440);
    assert_eq!(vol["secret"]["items"], json!([{"key": "password", "path": "db-password"}]));
    let c = &out["spec"]["containers"][0];
    assert_eq!(app_mount(c)["readOnly"], true);
    assert!(app_mount(c).get("subPath").is_none());
    assert_eq!(env_value(c, "DB_PASSWORD_FILE")["value"], "/var/run/secrets-cache/db-password");
    assert_eq!(
        env_value(c, "DB_PASSWORD")["valueFrom"],
        json!({"secretKeyRef": {"name": "app-secrets", "key": "password"}})
    );
    assert!(out["spec"].get("initContainers").is_none());
}

#[test]
fn csi_mode() {
    let p = pod(
        json!({"secrets/mode": "csi", "secrets/csi-class": "app-spc", "secrets/item.db-password": "dbPassword", "secrets/mount-path": "/mnt/secrets"}),
        app(),
    );
    let out = injected(&p);
    let vol = find(&out["spec"]["volumes"], SECRETS_VOLUME);
    assert_eq!(
        vol["csi"],
        json!({"driver": "secrets-store.csi.k8s.io", "readOnly": true, "volumeAttributes": {"secretProviderClass": "app-spc"}})
    );
    let c = &out["spec"]["containers"][0];
    assert_eq!(app_mount(c)["mountPath"], "/mnt/secrets");
    assert_eq!(env_value(c, "DB_PASSWORD_FILE")["value"], "/mnt/secrets/dbPassword");
}

#[test]
fn init_mode_goes_first_and_is_restricted() {
    let mut spec = app();
    spec["initContainers"] = json!([{"name": "migrate", "image": "m"}]);
    let p = pod(json!({"secrets/mode": "init", "secrets/item.db-password": "team-a/db#password"}), spec);
    let out = injected(&p);
    let inits = out["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    assert_eq!(inits[0]["name"], INIT_CONTAINER);
    assert_eq!(inits[1]["name"], "migrate");
    let agent = &inits[0];
    assert_eq!(agent["args"], json!(["agent", "--once"]));
    assert!(agent.get("restartPolicy").is_none());
    assert!(agent.get("startupProbe").is_none(), "plain init containers may not have probes");
    assert_restricted(agent);
    let spec_env = env_value(agent, agent_paths::SPEC_ENV)["value"].as_str().unwrap().to_string();
    let spec: AgentSpec = AgentSpec::from_json(&spec_env).unwrap();
    assert_eq!(
        spec.items,
        vec![AgentItem { name: "db-password".into(), path: "team-a/db".into(), key: Some("password".into()) }]
    );
    assert_eq!(spec.token_file.as_deref(), Some(agent_paths::TOKEN_FILE));
    match &spec.provider {
        ProviderConfig::Vault(v) => assert!(matches!(&v.auth, VaultAuth::Kubernetes { role, .. } if role == "team-a")),
        other => panic!("{other:?}"),
    }
    let vol = find(&out["spec"]["volumes"], SECRETS_VOLUME);
    assert_eq!(vol["emptyDir"], json!({"medium": "Memory", "sizeLimit": "1Mi"}));
    let token = find(&out["spec"]["volumes"], TOKEN_VOLUME);
    assert_eq!(token["projected"]["sources"][0]["serviceAccountToken"]["audience"], "vault");
    let c = &out["spec"]["containers"][0];
    assert_eq!(app_mount(c)["readOnly"], true);
    assert_eq!(env_value(c, "DB_PASSWORD_FILE")["value"], "/var/run/secrets-cache/db-password");
    // The app never sees the token.
    assert_eq!(c["volumeMounts"].as_array().unwrap().len(), 1);
}

#[test]
fn sidecar_mode_is_native_by_default() {
    let p = pod(
        json!({"secrets/mode": "sidecar", "secrets/item.api-key": "team-a/api#key", "secrets/refresh-interval": "1m"}),
        app(),
    );
    let out = injected(&p);
    let agent = &out["spec"]["initContainers"][0];
    assert_eq!(agent["name"], SIDECAR_CONTAINER);
    assert_eq!(agent["restartPolicy"], "Always");
    assert_eq!(agent["args"], json!(["agent"]));
    assert_eq!(agent["startupProbe"]["httpGet"]["path"], agent_paths::STARTUP_PATH);
    assert_eq!(agent["livenessProbe"]["httpGet"]["path"], agent_paths::HEALTH_PATH);
    assert_restricted(agent);
    let spec = AgentSpec::from_json(env_value(agent, agent_paths::SPEC_ENV)["value"].as_str().unwrap()).unwrap();
    assert_eq!(spec.refresh_interval_seconds, 60);
    assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
}

#[test]
fn sidecar_can_be_a_plain_container_for_old_clusters() {
    let mut cfg = config();
    cfg.agent.native_sidecar = false;
    let p = pod(json!({"secrets/mode": "sidecar", "secrets/item.api-key": "team-a/api#key"}), app());
    let (out, d) = admit_with(&p, &cfg);
    assert!(matches!(d, Decision::Allow { outcome: Outcome::Injected, .. }));
    let containers = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers[0]["name"], SIDECAR_CONTAINER);
    assert!(containers[0].get("restartPolicy").is_none());
    assert_eq!(containers[0]["lifecycle"]["postStart"]["exec"]["command"][1], "agent-wait");
    // The sidecar itself gets no app mount or env.
    assert!(containers[0]["env"].as_array().unwrap().iter().all(|e| e["name"] != "API_KEY_FILE"));
    assert_eq!(env_value(&containers[1], "API_KEY_FILE")["value"], "/var/run/secrets-cache/api-key");
    assert!(out["spec"].get("initContainers").is_none());
    // And it is idempotent in that shape too.
    let (_, again) = admit_with(&out, &cfg);
    assert!(
        matches!(again, Decision::Allow { ref patch, outcome: Outcome::Unchanged, .. } if patch.is_empty()),
        "{again:?}"
    );
}

#[test]
fn fallback_secret_is_mounted_into_the_agent_only() {
    let p = pod(
        json!({"secrets/mode": "sidecar", "secrets/item.api-key": "team-a/api#key", "secrets/fallback-secret": "api-fallback"}),
        app(),
    );
    let out = injected(&p);
    let vol = find(&out["spec"]["volumes"], FALLBACK_VOLUME);
    assert_eq!(vol["secret"]["secretName"], "api-fallback");
    assert_eq!(vol["secret"]["optional"], true);
    let agent = &out["spec"]["initContainers"][0];
    assert_eq!(find(&agent["volumeMounts"], FALLBACK_VOLUME)["mountPath"], agent_paths::FALLBACK_DIR);
    let app = &out["spec"]["containers"][0];
    assert!(app["volumeMounts"].as_array().unwrap().iter().all(|m| m["name"] != FALLBACK_VOLUME));
}

#[test]
fn aws_provider_uses_its_own_audience() {
    let p =
        pod(json!({"secrets/mode": "init", "secrets/provider": "aws", "secrets/item.db": "prod/db#password"}), app());
    let out = injected(&p);
    let token = find(&out["spec"]["volumes"], TOKEN_VOLUME);
    assert_eq!(token["projected"]["sources"][0]["serviceAccountToken"]["audience"], "sts.amazonaws.com");
}

#[test]
fn every_mode_is_idempotent() {
    let cases = [
        json!({"secrets/mode": "eso", "secrets/eso-secret": "s", "secrets/item.a": "a", "secrets/env-values": "true"}),
        json!({"secrets/mode": "csi", "secrets/csi-class": "c", "secrets/item.a": "a"}),
        json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}),
        json!({"secrets/mode": "sidecar", "secrets/item.a": "x/y#z", "secrets/fallback-secret": "f"}),
    ];
    for ann in cases {
        let out = injected(&pod(ann.clone(), app()));
        let (_, again) = admit(&out);
        assert!(
            matches!(again, Decision::Allow { ref patch, outcome: Outcome::Unchanged, .. } if patch.is_empty()),
            "{ann}: {again:?}"
        );
    }
}

#[test]
fn api_server_defaults_do_not_break_idempotence() {
    let out = injected(&pod(json!({"secrets/mode": "sidecar", "secrets/item.a": "x/y#z"}), app()));
    // What the API server adds when it decodes the patched pod.
    let mut defaulted = out.clone();
    let agent = &mut defaulted["spec"]["initContainers"][0];
    agent["terminationMessagePath"] = json!("/dev/termination-log");
    agent["terminationMessagePolicy"] = json!("File");
    agent["startupProbe"]["httpGet"]["scheme"] = json!("HTTP");
    agent["startupProbe"]["successThreshold"] = json!(1);
    agent["resources"]["requests"]["cpu"] = json!("0.01");
    defaulted["spec"]["volumes"][1]["projected"]["defaultMode"] = json!(420);
    no_patch(&defaulted);
}

/// Owned fields changed or added on a pasted agent: denied, naming the object and the field,
/// with the fix. Additions that cannot change what the agent runs are accepted.
#[test]
fn a_pasted_agent_with_changed_owned_fields_is_denied() {
    let out = injected(&pod(json!({"secrets/mode": "sidecar", "secrets/item.a": "x/y#z"}), app()));
    let tampered = [
        (
            "/spec/initContainers/0",
            "lifecycle",
            json!({"postStart": {"exec": {"command": ["sh", "-c", "curl evil"]}}}),
            "initContainers entry secretmode-sidecar",
            "field lifecycle was added",
        ),
        (
            "/spec/initContainers/0/securityContext",
            "procMount",
            json!("Unmasked"),
            "initContainers entry secretmode-sidecar",
            "field securityContext.procMount was added",
        ),
        (
            "/spec/initContainers/0",
            "image",
            json!("attacker/agent:latest"),
            "initContainers entry secretmode-sidecar",
            "field image differs",
        ),
        (
            "/spec/initContainers/0",
            "args",
            json!(["agent", "--once"]),
            "initContainers entry secretmode-sidecar",
            "field args differs",
        ),
        (
            "/spec/initContainers/0/startupProbe",
            "periodSeconds",
            json!(60),
            "initContainers entry secretmode-sidecar",
            "field startupProbe.periodSeconds differs",
        ),
        (
            "/spec/volumes/1/projected/sources/0/serviceAccountToken",
            "audience",
            json!("other"),
            "volumes entry secretmode-token",
            "field projected.sources[0].serviceAccountToken.audience differs",
        ),
        (
            "/spec/containers/0/volumeMounts/0",
            "subPath",
            json!("a"),
            "container app mounts secretmode-secrets",
            "field volumeMounts[secretmode-secrets].subPath was added",
        ),
    ];
    for (at, field, value, object, what) in tampered {
        let mut p = out.clone();
        p.pointer_mut(at).unwrap().as_object_mut().unwrap().insert(field.into(), value);
        let m = denied(&p);
        assert!(m.contains(object) && m.contains(what) && m.contains("fix: remove"), "{at}/{field}: {m}");
    }
    let mut p = out.clone();
    p["spec"]["initContainers"][0]["envFrom"] = json!([{"configMapRef": {"name": "proxy-settings"}}]);
    p["spec"]["initContainers"][0]["workingDir"] = json!("/tmp");
    no_patch(&p);
}

#[test]
fn reinvocation_wires_containers_added_later() {
    let out = injected(&pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), app()));
    let mut later = out.clone();
    later["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "istio-proxy", "image": "proxy"}));
    let (again, d) = admit(&later);
    let Decision::Allow { patch, .. } = d else { panic!() };
    assert!(
        patch.iter().all(|op| matches!(op, PatchOp::Add { path, .. } if path.starts_with("/spec/containers/1/"))),
        "{patch:?}"
    );
    assert_eq!(env_value(&again["spec"]["containers"][1], "A_FILE")["value"], "/var/run/secrets-cache/a");
    assert_eq!(again["spec"]["initContainers"].as_array().unwrap().len(), 1, "no second agent");
}

use crate::decide::patch::PatchOp;

#[test]
fn hand_written_injected_annotation_changes_nothing() {
    // Alone, it does not opt the pod in (and is not trusted to mean "done").
    no_patch(&pod(json!({"secrets/injected": "mode=init,items=1"}), app()));
    // With real annotations the pod is still injected.
    let out = injected(&pod(
        json!({"secrets/injected": "mode=eso,items=9", "secrets/mode": "init", "secrets/item.a": "x/y#z"}),
        app(),
    ));
    assert_eq!(out["metadata"]["annotations"]["secrets/injected"], "mode=init,items=1,provider=vault");
}

#[test]
fn missing_parents_are_created() {
    let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "x-", "annotations": {"secrets/mode": "init", "secrets/item.a": "x/y#z"}}, "spec": {"containers": [{"name": "app", "image": "i"}]}});
    let out = injected(&p);
    assert!(out["spec"]["volumes"].is_array());
    assert!(out["spec"]["initContainers"].is_array());
    assert!(out["spec"]["containers"][0]["env"].is_array());
    assert!(out["spec"]["containers"][0]["volumeMounts"].is_array());
}

#[test]
fn unknown_and_newer_fields_survive() {
    let spec = json!({
        "containers": [{"name": "app", "image": "i", "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}], "futureField": {"x": 1}}],
        "initContainers": [{"name": "log-shipper", "image": "l", "restartPolicy": "Always"}],
        "someFutureSpecField": [1, 2, 3],
        "automountServiceAccountToken": false,
        "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
        "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
    });
    let p = pod(json!({"secrets/mode": "sidecar", "secrets/item.a": "x/y#z"}), spec.clone());
    let out = injected(&p);
    assert_eq!(out["spec"]["someFutureSpecField"], json!([1, 2, 3]));
    assert_eq!(out["spec"]["containers"][0]["resizePolicy"], spec["containers"][0]["resizePolicy"]);
    assert_eq!(out["spec"]["containers"][0]["futureField"], json!({"x": 1}));
    assert_eq!(out["spec"]["initContainers"][1], spec["initContainers"][0]);
    assert_eq!(out["spec"]["securityContext"], spec["securityContext"]);
    assert_eq!(out["spec"]["automountServiceAccountToken"], false);
    assert_eq!(out["spec"]["volumes"][0], spec["volumes"][0]);
}

#[test]
fn collisions_with_reserved_names_are_denied() {
    let mut spec = app();
    spec["volumes"] = json!([{"name": "secretmode-secrets", "emptyDir": {}}]);
    let m = denied(&pod(json!({"secrets/mode": "eso", "secrets/eso-secret": "s", "secrets/item.a": "a"}), spec));
    assert!(m.contains("secretmode-secrets") && m.contains("reserved"), "{m}");

    let mut spec = app();
    spec["initContainers"] = json!([{"name": "secretmode-init", "image": "evil"}]);
    let m = denied(&pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), spec.clone()));
    assert!(m.contains("secretmode-init"), "{m}");
    // Without annotations a reserved name is still judged, never waved through.
    let m = denied(&pod(json!({}), spec));
    assert!(m.contains("reserved"), "{m}");
}

#[test]
fn existing_env_and_mounts_are_respected() {
    let spec =
        json!({"containers": [{"name": "app", "image": "i", "env": [{"name": "A_FILE", "value": "/elsewhere"}]}]});
    let m = denied(&pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), spec));
    assert!(m.contains("A_FILE"), "{m}");

    for path in ["/var/run/secrets-cache", "/var/run/secrets-cache/sub", "/var/run"] {
        let spec = json!({"containers": [{"name": "app", "image": "i", "volumeMounts": [{"name": "data", "mountPath": path}]}], "volumes": [{"name": "data", "emptyDir": {}}]});
        let m = denied(&pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), spec));
        assert!(m.contains("overlaps") && m.contains("secrets/mount-path"), "{m}");
    }
    // A sibling directory is fine.
    let spec = json!({"containers": [{"name": "app", "image": "i", "volumeMounts": [{"name": "data", "mountPath": "/var/run/secrets-cache-old"}]}], "volumes": [{"name": "data", "emptyDir": {}}]});
    injected(&pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), spec));
}

/// Whatever mounts the user wrote, no container of the patched pod mounts two volumes at the
/// same path (cleaned, as the kubelet reads it): the pod is denied first, naming the user's
/// container, rather than rejected by the API server blaming the agent.
#[test]
fn no_patch_produces_a_duplicate_mount_path() {
    let mut plain = config();
    plain.agent.native_sidecar = false;
    let modes = [
        json!({"secrets/mode": "eso", "secrets/eso-secret": "s", "secrets/item.a": "a"}),
        json!({"secrets/mode": "csi", "secrets/csi-class": "c", "secrets/item.a": "a"}),
        json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}),
        json!({"secrets/mode": "sidecar", "secrets/item.a": "x/y#z", "secrets/fallback-secret": "f"}),
    ];
    let paths = [
        "/var/run/secrets-cache",
        "/var/run/secrets-cache/",
        "/var/run//secrets-cache",
        "/var/run/./secrets-cache",
        "/var/run/x/../secrets-cache",
        "/var/run/secrets-cache/sub",
        "/var/run",
        "/var/run/secrets/secretmode/token",
        "/var/run/secrets/secretmode/fallback",
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "/var/run/secrets-cache-2",
    ];
    let cleaned = |c: &Value| -> Vec<String> {
        JsonRef::entries(Some(&JsonRef::from(&c["volumeMounts"])))
            .iter()
            .filter_map(|m| m.get("mountPath").and_then(JsonRef::as_str))
            .map(|p| clean_path(p).into_owned())
            .collect()
    };
    let mut denials = 0;
    for ann in &modes {
        for cfg in [config(), plain.clone()] {
            for path in paths {
                for volume in ["data", "secretmode-token"] {
                    let spec = json!({
                        "containers": [{"name": "app", "image": "i", "volumeMounts": [{"name": volume, "mountPath": path}]},
                                       {"name": "other", "image": "i"}],
                        "volumes": [{"name": "data", "emptyDir": {}}]});
                    let (out, d) = admit_with(&pod(ann.clone(), spec), &cfg);
                    match d {
                        Decision::Allow { .. } => {
                            for list in ["containers", "initContainers"] {
                                for c in out["spec"][list].as_array().map(Vec::as_slice).unwrap_or_default() {
                                    let mut seen = cleaned(c);
                                    let n = seen.len();
                                    seen.sort();
                                    seen.dedup();
                                    assert_eq!(seen.len(), n, "{ann} {path} {volume}: {}", c["name"]);
                                }
                            }
                        }
                        Decision::Deny { message, .. } => {
                            denials += 1;
                            assert!(
                                message.contains("container app ") && message.contains("secrets/mount-path"),
                                "{message}"
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(denials > 0);
    // Through the annotation: the agent's own directories are refused at parse time.
    let m = denied(&pod(
        json!({"secrets/mode": "init", "secrets/item.a": "x/y#z", "secrets/mount-path": "/var/run/secrets/secretmode/token"}),
        app(),
    ));
    assert!(m.contains("secrets/mount-path") && m.contains("token directory"), "{m}");
}

#[test]
fn container_selection() {
    let spec = json!({"containers": [{"name": "app", "image": "i"}, {"name": "metrics", "image": "m"}]});
    let out = injected(&pod(
        json!({"secrets/mode": "init", "secrets/item.a": "x/y#z", "secrets/containers": "app"}),
        spec.clone(),
    ));
    assert!(out["spec"]["containers"][1].get("env").is_none());
    assert!(out["spec"]["containers"][0].get("env").is_some());
    let m = denied(&pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z", "secrets/containers": "web"}), spec));
    assert!(m.contains("\"web\"") && m.contains("not a container of this pod") && m.contains("app, metrics"), "{m}");
}

/// An init container named in `secrets/containers` is called what it is, in every mode (none
/// mounts into init containers), with the regular containers to name instead.
#[test]
fn an_init_container_in_the_container_list_is_named_as_such() {
    let spec = json!({
        "initContainers": [{"name": "migrate", "image": "m"}, {"name": "proxy", "image": "p", "restartPolicy": "Always"}],
        "containers": [{"name": "app", "image": "i"}, {"name": "metrics", "image": "m"}],
    });
    for mode in ["eso", "csi", "init", "sidecar"] {
        for name in ["migrate", "proxy"] {
            let mut annotations = json!({"secrets/mode": mode, "secrets/containers": format!("app,{name}")});
            match mode {
                "eso" => annotations
                    .as_object_mut()
                    .unwrap()
                    .extend([("secrets/eso-secret".into(), json!("s")), ("secrets/item.a".into(), json!("a"))]),
                "csi" => annotations
                    .as_object_mut()
                    .unwrap()
                    .extend([("secrets/csi-class".into(), json!("c")), ("secrets/item.a".into(), json!("a"))]),
                _ => annotations["secrets/item.a"] = json!("x/y#z"),
            }
            let m = denied(&pod(annotations, spec.clone()));
            assert!(!m.contains("not a container of this pod"), "{mode}: {m}");
            assert!(
                m.contains(&format!("secrets/containers names \"{name}\", which is an init container")),
                "{mode}: {m}"
            );
            assert!(m.contains("regular containers (spec.containers) only"), "{mode}: {m}");
            assert!(m.contains("fix: name regular containers only, from: app, metrics"), "{mode}: {m}");
        }
    }
}

#[test]
fn platform_specific_denials() {
    let mut windows = app();
    windows["os"] = json!({"name": "windows"});
    let m = denied(&pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), windows.clone()));
    assert!(m.contains("Windows") && m.contains("eso or csi"), "{m}");
    injected(&pod(json!({"secrets/mode": "csi", "secrets/csi-class": "c", "secrets/item.a": "a"}), windows));

    // However a pod is pinned to Windows nodes, the Linux agent is refused, saying how.
    let term = |key: &str, op: &str, values: Value| json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]});
    let required = |terms: Value| json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}});
    let pinned = [
        ("nodeSelector", json!({"kubernetes.io/os": "windows"}), "nodeSelector kubernetes.io/os: windows"),
        ("nodeSelector", json!({"beta.kubernetes.io/os": "windows"}), "nodeSelector beta.kubernetes.io/os: windows"),
        ("affinity", required(json!([term("kubernetes.io/os", "In", json!(["windows"]))])), "required node affinity"),
        (
            "affinity",
            required(json!([term("beta.kubernetes.io/os", "NotIn", json!(["linux", "darwin"]))])),
            "required node affinity",
        ),
        (
            "affinity",
            required(json!([term("kubernetes.io/os", "In", json!(["windows"])), {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]}])),
            "required node affinity",
        ),
    ];
    for (field, value, how) in pinned {
        for mode in ["init", "sidecar"] {
            let mut spec = app();
            spec[field] = value.clone();
            let m = denied(&pod(json!({"secrets/mode": mode, "secrets/item.a": "x/y#z"}), spec));
            assert!(
                m.contains("pinned to Windows") && m.contains(how) && m.contains("eso or csi"),
                "{field} {value}: {m}"
            );
        }
    }
    // Not pinned: Linux selected, one term that admits Linux, preferred affinity only.
    let free = [
        ("nodeSelector", json!({"kubernetes.io/os": "linux"})),
        (
            "affinity",
            required(json!([term("kubernetes.io/os", "In", json!(["windows"])), term("zone", "In", json!(["a"]))])),
        ),
        ("affinity", required(json!([term("kubernetes.io/os", "In", json!(["linux", "windows"]))]))),
        ("affinity", required(json!([]))),
        (
            "affinity",
            json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": term("kubernetes.io/os", "In", json!(["windows"]))}]}}),
        ),
    ];
    for (field, value) in free {
        let mut spec = app();
        spec[field] = value.clone();
        injected(&pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), spec));
    }

    let mut host = app();
    host["hostNetwork"] = json!(true);
    let m = denied(&pod(json!({"secrets/mode": "sidecar", "secrets/item.a": "x/y#z"}), host.clone()));
    assert!(m.contains("hostNetwork"), "{m}");
    injected(&pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), host));

    let port = json!({"containers": [{"name": "app", "image": "i", "ports": [{"containerPort": 8099}]}]});
    let m = denied(&pod(json!({"secrets/mode": "sidecar", "secrets/item.a": "x/y#z"}), port));
    assert!(m.contains("8099"), "{m}");
}

#[test]
fn mirror_pods_are_left_alone() {
    let p =
        pod(json!({"kubernetes.io/config.mirror": "abc", "secrets/mode": "init", "secrets/item.a": "x/y#z"}), app());
    let (_, d) = admit(&p);
    match d {
        Decision::Allow { patch, warnings, outcome, .. } => {
            assert!(patch.is_empty());
            assert_eq!(outcome, Outcome::Mirror);
            assert!(warnings[0].contains("mirror"));
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn annotation_errors_name_the_annotation_and_fix() {
    let m = denied(&pod(json!({"secrets/mode": "vault", "secrets/item.a": "x#y"}), app()));
    assert!(m.contains("secrets/mode") && m.contains("eso, csi, init, sidecar"), "{m}");
    let m = denied(&pod(json!({"secrets/item.a": "x/y#z"}), app()));
    assert!(m.contains("secrets/mode") && m.contains("fix"), "{m}");
    let m =
        denied(&pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z", "secrets/image": "evil:latest"}), app()));
    assert!(m.contains("secrets/image") && m.contains("unknown"), "{m}");
}

#[test]
fn malformed_pods_are_denied_not_panicked() {
    for spec in [
        json!(null),
        json!({}),
        json!({"containers": []}),
        json!({"containers": [{"image": "x"}]}),
        json!({"containers": "x"}),
        json!({"containers": [{"name": "a"}], "volumes": 3}),
    ] {
        let m = denied(&pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), spec.clone()));
        assert!(m.contains("malformed"), "{spec}: {m}");
    }
}

#[test]
fn huge_pod_stays_small_and_correct() {
    let env: Vec<Value> = (0..1500).map(|i| json!({"name": format!("VAR_{i}"), "value": "v"})).collect();
    let containers: Vec<Value> = (0..30).map(|i| json!({"name": format!("c{i}"), "image": "i", "env": env})).collect();
    let p = pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), json!({"containers": containers}));
    let (out, d) = admit(&p);
    let Decision::Allow { patch, .. } = d else { panic!() };
    // One annotation, 30 × (mount + env var), volumes (2), init container.
    assert_eq!(patch.len(), 1 + 30 * 2 + 1 + 1, "{}", patch.len());
    assert_eq!(out["spec"]["containers"][29]["env"].as_array().unwrap().len(), 1501);
}

#[test]
fn patch_paths_escape_pointer_specials() {
    let mut cfg = config();
    cfg.annotation_prefix = "secrets.example.com".into();
    let p =
        pod(json!({"secrets.example.com/mode": "init", "secrets.example.com/item.a": "x/y#z", "a~b/c": "keep"}), app());
    let (out, d) = admit_with(&p, &cfg);
    let Decision::Allow { patch, .. } = d else { panic!("{d:?}") };
    assert!(patch.iter().any(
        |op| matches!(op, PatchOp::Add { path, .. } if path == "/metadata/annotations/secrets.example.com~1injected")
    ));
    assert_eq!(out["metadata"]["annotations"]["a~b/c"], "keep");
}

#[test]
fn agent_joins_the_app_group_so_0440_files_are_readable() {
    let mut spec = app();
    spec["securityContext"] = json!({"runAsUser": 10001, "runAsGroup": 10001});
    let p = pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), spec.clone());
    let (out, d) = admit(&p);
    let Decision::Allow { warnings, .. } = d else { panic!() };
    let agent = &out["spec"]["initContainers"][0];
    assert_eq!(agent["securityContext"]["runAsGroup"], 10001);
    assert_eq!(agent["securityContext"]["runAsUser"], 65532, "the uid never follows the pod");
    assert!(warnings.iter().all(|w| !w.contains("0440")), "{warnings:?}");

    // Root group is never adopted; a non-root app without group or fsGroup gets a warning.
    spec["securityContext"] = json!({"runAsUser": 10001, "runAsGroup": 0});
    let p = pod(json!({"secrets/mode": "init", "secrets/item.a": "x/y#z"}), spec);
    let (out, d) = admit(&p);
    let Decision::Allow { warnings, .. } = d else { panic!() };
    assert_eq!(out["spec"]["initContainers"][0]["securityContext"]["runAsGroup"], 65532);
    assert!(warnings.iter().any(|w| w.contains("runAsGroup or fsGroup") && w.len() < 120), "{warnings:?}");

    let mut spec = app();
    spec["securityContext"] = json!({"runAsNonRoot": true});
    let p = pod(json!({"secrets/mode": "eso", "secrets/eso-secret": "s", "secrets/item.a": "a"}), spec.clone());
    let Decision::Allow { warnings, .. } = admit(&p).1 else { panic!() };
    assert!(warnings.iter().any(|w| w.contains("fsGroup") && w.len() < 120), "{warnings:?}");
    spec["securityContext"]["fsGroup"] = json!(2000);
    let p = pod(json!({"secrets/mode": "eso", "secrets/eso-secret": "s", "secrets/item.a": "a"}), spec);
    let Decision::Allow { warnings, .. } = admit(&p).1 else { panic!() };
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

// --- env-values outside eso (the exec wrapper) and on-change ---------------------------------

use crate::agent::spec::WatchSpec;
use crate::vocabulary::names::{EXEC_CONTAINER, EXEC_VOLUME, WATCHER_CONTAINER, WATCH_STATUS_VOLUME};
use crate::vocabulary::on_change::{OnChange, Signal, SIGNAL_TARGET_ENV};
use crate::vocabulary::paths::{EXEC_DIR, EXEC_PATH, WATCH_SPEC_ENV, WATCH_STATUS_DIR};

/// Two app containers with commands (one with args), both run as uid 1000, gid 3000.
fn commanded() -> Value {
    json!({
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000},
        "containers": [
            {"name": "app", "image": "app", "command": ["/app", "--serve"], "args": ["--port", "8080"]},
            {"name": "worker", "image": "app", "command": ["/worker"]},
        ]
    })
}

fn with_mode(mode: &str, extra: Value) -> Value {
    let mut a = match mode {
        "eso" => {
            json!({"secrets/mode": "eso", "secrets/eso-secret": "s", "secrets/item.db-password": "password", "secrets/item.api-key": "key"})
        }
        "csi" => {
            json!({"secrets/mode": "csi", "secrets/csi-class": "c", "secrets/item.db-password": "password", "secrets/item.api-key": "key"})
        }
        m => {
            json!({"secrets/mode": m, "secrets/item.db-password": "app/db#password", "secrets/item.api-key": "app/api#key"})
        }
    };
    for (k, v) in extra.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

fn idempotent(out: &Value) {
    let (_, again) = admit(out);
    assert!(
        matches!(again, Decision::Allow { ref patch, outcome: Outcome::Unchanged, .. } if patch.is_empty()),
        "{again:?}"
    );
}

#[test]
fn env_values_wrap_every_target_command_in_csi_init_and_sidecar() {
    for mode in ["csi", "init", "sidecar"] {
        let p = pod(with_mode(mode, json!({"secrets/env-values": "true"})), commanded());
        let (out, d) = admit(&p);
        let Decision::Allow { warnings, outcome: Outcome::Injected, .. } = &d else { panic!("{mode}: {d:?}") };
        assert!(warnings.iter().any(|w| w.contains("/proc/<pid>/environ") && w.contains("restart")), "{warnings:?}");
        let spec = &out["spec"];
        let installer = find(&spec["initContainers"], EXEC_CONTAINER);
        let first = match mode {
            "init" => INIT_CONTAINER,
            "sidecar" => SIDECAR_CONTAINER,
            _ => EXEC_CONTAINER,
        };
        assert_eq!(spec["initContainers"][0]["name"], first, "{mode}: the agent stays first");
        assert_eq!(installer["command"], json!(["/secretmode-exec", "--install", EXEC_DIR]));
        assert_eq!(installer["image"], config().agent.image);
        assert_restricted(installer);
        assert_eq!(find(&installer["volumeMounts"], EXEC_VOLUME)["mountPath"], EXEC_DIR);
        assert_eq!(find(&spec["volumes"], EXEC_VOLUME)["emptyDir"], json!({"sizeLimit": "8Mi"}), "disk, not Memory");
        for (i, own) in [(0, json!(["/app", "--serve"])), (1, json!(["/worker"]))] {
            let c = &spec["containers"][i];
            let mut want = json!([EXEC_PATH, "--env", "API_KEY,DB_PASSWORD", "--"]);
            want.as_array_mut().unwrap().extend(own.as_array().unwrap().iter().cloned());
            assert_eq!(c["command"], want, "{mode}");
            let m = find(&c["volumeMounts"], EXEC_VOLUME);
            assert_eq!((&m["mountPath"], &m["readOnly"]), (&json!(EXEC_DIR), &json!(true)));
            assert!(env_value(c, "DB_PASSWORD_FILE")["value"].is_string());
            assert!(c["env"].as_array().unwrap().iter().all(|e| e["name"] != "DB_PASSWORD"), "the wrapper sets it");
        }
        assert_eq!(spec["containers"][0]["args"], json!(["--port", "8080"]), "args stay");
        if mode != "csi" {
            assert_eq!(spec["initContainers"][1]["name"], EXEC_CONTAINER);
        }
        // Reinvoked: recognised as injected, never wrapped twice.
        idempotent(&out);
    }
}

#[test]
fn env_values_in_eso_need_no_wrapper() {
    let out = injected(&pod(with_mode("eso", json!({"secrets/env-values": "true"})), commanded()));
    assert!(out["spec"].get("initContainers").is_none());
    assert_eq!(out["spec"]["containers"][0]["command"], json!(["/app", "--serve"]));
}

#[test]
fn a_container_without_command_cannot_be_wrapped() {
    for mode in ["csi", "init", "sidecar"] {
        let m = denied(&pod(with_mode(mode, json!({"secrets/env-values": "true"})), app()));
        assert!(m.contains("container app sets no command") && m.contains("secrets/env-values"), "{m}");
        assert!(m.contains("fix: set command") && m.contains("mode eso"), "{m}");
    }
    // Only the target containers need one.
    let mut spec = commanded();
    spec["containers"].as_array_mut().unwrap().push(json!({"name": "proxy", "image": "p"}));
    injected(&pod(with_mode("init", json!({"secrets/env-values": "true", "secrets/containers": "app"})), spec));
}

#[test]
fn a_wrapper_of_other_items_is_denied_like_an_owned_field() {
    let out = injected(&pod(with_mode("init", json!({"secrets/env-values": "true"})), commanded()));
    let mut tampered = out.clone();
    tampered["spec"]["containers"][1]["command"][2] = json!("DB_PASSWORD");
    let m = denied(&tampered);
    assert!(m.contains("container worker is already wrapped") && m.contains("command[2]"), "{m}");
    assert!(m.contains("fix: remove the wrapper"), "{m}");
    // A tampered installer is an owned-field change too.
    let mut tampered = out.clone();
    tampered["spec"]["initContainers"][1]["command"] = json!(["/bin/sh", "-c", "cp /evil /x"]);
    let m = denied(&tampered);
    assert!(m.contains(&format!("spec.initContainers entry {EXEC_CONTAINER}")) && m.contains("field command"), "{m}");
    // The wrapper where this configuration injects none.
    let mut other = out.clone();
    other["metadata"]["annotations"]["secrets/env-values"] = json!("false");
    let m = denied(&other);
    assert!(m.contains(EXEC_VOLUME) || m.contains(EXEC_CONTAINER), "{m}");
}

#[test]
fn a_mount_at_the_wrapper_directory_is_denied() {
    let mut spec = commanded();
    spec["containers"][0]["volumeMounts"] = json!([{"name": "tools", "mountPath": "/var/run/secrets/secretmode"}]);
    let m = denied(&pod(with_mode("sidecar", json!({"secrets/env-values": "true"})), spec));
    assert!(m.contains("overlaps the exec wrapper's directory"), "{m}");
}

#[test]
fn on_change_in_init_is_denied_with_the_fix() {
    let m = denied(&pod(with_mode("init", json!({"secrets/on-change": "signal:HUP"})), commanded()));
    assert!(m.starts_with("annotation secrets/on-change: nothing changes"), "{m}");
    assert!(m.contains("fix: use mode sidecar"), "{m}");
}

#[test]
fn on_change_in_the_sidecar_is_in_the_agent_spec() {
    let out = injected(&pod(
        with_mode("sidecar", json!({"secrets/on-change": "http://127.0.0.1:9090/-/reload"})),
        commanded(),
    ));
    let agent = find(&out["spec"]["initContainers"], SIDECAR_CONTAINER);
    let spec = AgentSpec::from_json(env_value(agent, agent_paths::SPEC_ENV)["value"].as_str().unwrap()).unwrap();
    assert_eq!(spec.on_change, Some("http://127.0.0.1:9090/-/reload".parse().unwrap()));
    assert_eq!(agent["securityContext"]["runAsUser"], config().agent.run_as_user, "http: the config's user");
    assert!(out["spec"].get("shareProcessNamespace").is_none());
    assert_eq!(
        out["metadata"]["annotations"]["secrets/injected"],
        "mode=sidecar,items=2,provider=vault,on-change=http"
    );
    idempotent(&out);
}

#[test]
fn on_change_in_eso_and_csi_adds_the_watcher() {
    for (mode, native) in [("eso", true), ("csi", true), ("eso", false), ("csi", false)] {
        let mut c = config();
        c.agent.native_sidecar = native;
        let p = pod(with_mode(mode, json!({"secrets/on-change": "GET http://localhost:8080/reload"})), commanded());
        let (out, d) = admit_with(&p, &c);
        let Decision::Allow { warnings, outcome: Outcome::Injected, .. } = &d else { panic!("{mode}: {d:?}") };
        assert!(warnings.iter().any(|w| w.contains(WATCHER_CONTAINER)), "{warnings:?}");
        let list = if native { &out["spec"]["initContainers"] } else { &out["spec"]["containers"] };
        assert_eq!(list[0]["name"], WATCHER_CONTAINER, "{mode} native={native}");
        let w = &list[0];
        assert_eq!(w["command"], json!(["/secretmode"]));
        assert_eq!(w["args"], json!(["watch"]));
        assert_eq!(w.get("restartPolicy").is_some(), native);
        assert_restricted(w);
        assert_eq!(w["ports"][0]["containerPort"], c.agent.health_port);
        assert_eq!(w["livenessProbe"]["httpGet"]["path"], "/healthz");
        let spec = WatchSpec::from_json(env_value(w, WATCH_SPEC_ENV)["value"].as_str().unwrap()).unwrap();
        assert_eq!(spec.dir, "/var/run/secrets-cache");
        assert_eq!(spec.on_change, Some("GET http://127.0.0.1:8080/reload".parse::<OnChange>().unwrap()));
        assert_eq!(spec.render, None, "no rendered files: nothing to render");
        let secrets = find(&w["volumeMounts"], SECRETS_VOLUME);
        assert_eq!((&secrets["mountPath"], &secrets["readOnly"]), (&json!("/var/run/secrets-cache"), &json!(true)));
        assert_eq!(find(&w["volumeMounts"], WATCH_STATUS_VOLUME)["mountPath"], WATCH_STATUS_DIR);
        assert_eq!(find(&out["spec"]["volumes"], WATCH_STATUS_VOLUME)["emptyDir"]["medium"], "Memory");
        // Not a target: the watcher gets no app env.
        assert!(w["env"].as_array().unwrap().iter().all(|e| e["name"] != "DB_PASSWORD_FILE"));
        let (_, again) = admit_with(&out, &c);
        assert!(matches!(again, Decision::Allow { outcome: Outcome::Unchanged, .. }), "{mode}: {again:?}");
    }
}

#[test]
fn the_watcher_is_checked_as_the_sidecar_is() {
    let ann = with_mode("csi", json!({"secrets/on-change": "http://127.0.0.1:9090/"}));
    let mut spec = commanded();
    spec["hostNetwork"] = json!(true);
    let m = denied(&pod(ann.clone(), spec));
    assert!(m.contains("hostNetwork") && m.contains("remove secrets/on-change"), "{m}");
    let mut spec = commanded();
    spec["containers"][0]["ports"] = json!([{"containerPort": 8099}]);
    assert!(denied(&pod(ann.clone(), spec)).contains("uses port 8099, which the secretmode-watcher"));
    let mut spec = commanded();
    spec["nodeSelector"] = json!({"kubernetes.io/os": "windows"});
    assert!(denied(&pod(ann.clone(), spec.clone())).contains("Linux watcher"));
    // Without on-change, csi and eso stay fine on such pods.
    let mut ann = ann;
    ann.as_object_mut().unwrap().remove("secrets/on-change");
    injected(&pod(ann, spec));
}

fn allow_signals(c: &mut Config) {
    c.policy.rules[0].allow_signals = true;
}

#[test]
fn a_signal_shares_the_process_namespace_and_runs_the_sender_as_the_app() {
    let mut c = config();
    allow_signals(&mut c);
    for mode in ["eso", "csi", "sidecar"] {
        let p = pod(with_mode(mode, json!({"secrets/on-change": "signal:SIGHUP"})), commanded());
        let (out, d) = admit_with(&p, &c);
        let Decision::Allow { warnings, outcome: Outcome::Injected, .. } = &d else { panic!("{mode}: {d:?}") };
        assert!(warnings.iter().any(|w| w.contains("process namespace is shared")), "{warnings:?}");
        assert_eq!(out["spec"]["shareProcessNamespace"], true);
        for c in
            out["spec"]["containers"].as_array().unwrap().iter().filter(|c| !is_reserved(c["name"].as_str().unwrap()))
        {
            assert_eq!(env_value(c, SIGNAL_TARGET_ENV)["value"], c["name"]);
        }
        let sender = if mode == "sidecar" { SIDECAR_CONTAINER } else { WATCHER_CONTAINER };
        let sender = find(&out["spec"]["initContainers"], sender);
        assert_eq!(sender["securityContext"]["runAsUser"], 1000, "{mode}");
        assert_eq!(sender["securityContext"]["runAsGroup"], 3000, "{mode}: environ needs the same gid");
        assert_restricted(sender);
        if mode == "sidecar" {
            let spec =
                AgentSpec::from_json(env_value(sender, agent_paths::SPEC_ENV)["value"].as_str().unwrap()).unwrap();
            assert_eq!(spec.on_change, Some(OnChange::Signal(Signal::Hup)));
        }
        let (_, again) = admit_with(&out, &c);
        assert!(matches!(again, Decision::Allow { outcome: Outcome::Unchanged, .. }), "{mode}: {again:?}");
    }
}

#[test]
fn a_signal_needs_a_known_common_non_root_user_and_a_shareable_namespace() {
    let mut c = config();
    allow_signals(&mut c);
    let deny_with = |spec: Value| match admit_with(
        &pod(with_mode("sidecar", json!({"secrets/on-change": "signal:HUP"})), spec),
        &c,
    )
    .1
    {
        Decision::Deny { message, .. } => message,
        d => panic!("{d:?}"),
    };
    let mut spec = commanded();
    spec.as_object_mut().unwrap().remove("securityContext");
    let m = deny_with(spec);
    assert!(m.contains("container app's runAsUser is not set") && m.contains("fix: set a non-root runAsUser"), "{m}");
    let mut spec = commanded();
    spec["containers"][1]["securityContext"] = json!({"runAsUser": 2000});
    assert!(deny_with(spec).contains("different users (app: 1000, worker: 2000)"));
    let mut spec = commanded();
    spec["securityContext"]["runAsUser"] = json!(0);
    assert!(deny_with(spec).contains("runs as root"));
    let mut spec = commanded();
    spec["securityContext"].as_object_mut().unwrap().remove("runAsGroup");
    let m = deny_with(spec);
    assert!(m.contains("container app's runAsGroup is not set") && m.contains("runAsGroup in the pod's"), "{m}");
    let mut spec = commanded();
    spec["containers"][1]["securityContext"] = json!({"runAsGroup": 4000});
    assert!(deny_with(spec).contains("different groups (app: 3000, worker: 4000)"));
    let mut spec = commanded();
    spec["securityContext"]["runAsGroup"] = json!(0);
    assert!(deny_with(spec).contains("runs as root (runAsGroup 0)"));
    let mut spec = commanded();
    spec["shareProcessNamespace"] = json!(false);
    let m = deny_with(spec);
    assert!(m.contains("shareProcessNamespace: false") && m.contains("fix: remove shareProcessNamespace"), "{m}");
    // A container's own user wins over the pod's.
    let mut spec = commanded();
    spec["securityContext"]["runAsUser"] = json!(0);
    spec["containers"][0]["securityContext"] = json!({"runAsUser": 1000});
    spec["containers"][1]["securityContext"] = json!({"runAsUser": 1000});
    let (out, _) = admit_with(&pod(with_mode("sidecar", json!({"secrets/on-change": "signal:HUP"})), spec), &c);
    assert_eq!(find(&out["spec"]["initContainers"], SIDECAR_CONTAINER)["securityContext"]["runAsUser"], 1000);
}

#[test]
fn signals_need_a_rule_that_allows_them() {
    let p = pod(with_mode("sidecar", json!({"secrets/on-change": "signal:HUP"})), commanded());
    let m = denied(&p);
    assert!(
        m.contains("policy rule \"default\"") && m.contains("secrets/on-change") && m.contains("allowSignals"),
        "{m}"
    );
    let mut c = config();
    c.policy.rules.clear();
    let m = match admit_with(&p, &c).1 {
        Decision::Deny { message, .. } => message,
        d => panic!("{d:?}"),
    };
    assert!(m.contains("no policy rule matches") && m.contains("allowSignals: true"), "{m}");
    // http actions need no rule.
    let p = pod(with_mode("sidecar", json!({"secrets/on-change": "http://127.0.0.1:1/"})), commanded());
    assert!(matches!(admit_with(&p, &c).1, Decision::Allow { .. }));
}

#[test]
fn env_values_can_be_forbidden_by_policy() {
    let mut c = config();
    c.policy.rules[0].allow_env_values = false;
    for mode in ["eso", "csi", "init", "sidecar"] {
        let p = pod(with_mode(mode, json!({"secrets/env-values": "true"})), commanded());
        let m = match admit_with(&p, &c).1 {
            Decision::Deny { message, .. } => message,
            d => panic!("{mode}: {d:?}"),
        };
        assert!(m.contains("secrets/env-values") && m.contains("allowEnvValues: false") && m.contains("fix:"), "{m}");
    }
    c.policy.rules[0].enforcement = crate::config::policy::Enforcement::Warn;
    let p = pod(with_mode("init", json!({"secrets/env-values": "true"})), commanded());
    let Decision::Allow { warnings, .. } = admit_with(&p, &c).1 else { panic!() };
    assert!(warnings[0].starts_with("secretmode policy default: secrets/env-values"), "{warnings:?}");
}

#[test]
fn an_item_may_not_take_the_signal_target_variable() {
    let mut c = config();
    allow_signals(&mut c);
    let p = pod(
        json!({"secrets/mode": "sidecar", "secrets/item.secretmode-signal-target": "a/b#c", "secrets/env-values": "true", "secrets/on-change": "signal:HUP"}),
        commanded(),
    );
    let Decision::Deny { message, .. } = admit_with(&p, &c).1 else { panic!() };
    assert!(message.contains("SECRETMODE_SIGNAL_TARGET") && message.contains("rename the item"), "{message}");
}

#[test]
fn a_container_added_by_a_later_webhook_is_not_wrapped_on_reinvocation() {
    let mut out = injected(&pod(with_mode("sidecar", json!({"secrets/env-values": "true"})), commanded()));
    out["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "mesh-proxy", "image": "mesh/proxy:1"}));
    let (again, d) = admit(&out);
    assert!(matches!(d, Decision::Allow { outcome: Outcome::Injected, .. }), "{d:?}");
    let proxy = &again["spec"]["containers"][2];
    assert!(proxy.get("command").is_none());
    assert!(env_value(proxy, "DB_PASSWORD_FILE")["value"].is_string());
    assert!(proxy["volumeMounts"].as_array().unwrap().iter().all(|m| m["name"] != EXEC_VOLUME));
    idempotent(&again);
}

#[test]
fn a_container_added_by_a_later_webhook_is_not_signalled_nor_decides_the_user() {
    let mut c = config();
    allow_signals(&mut c);
    for mode in ["csi", "sidecar"] {
        let p = pod(with_mode(mode, json!({"secrets/on-change": "signal:HUP"})), commanded());
        let (mut out, _) = admit_with(&p, &c);
        out["spec"]["containers"].as_array_mut().unwrap().push(
            json!({"name": "mesh-proxy", "image": "mesh/proxy:1", "securityContext": {"runAsUser": 1337, "runAsGroup": 1337}}),
        );
        let (again, d) = admit_with(&out, &c);
        assert!(matches!(d, Decision::Allow { outcome: Outcome::Injected, .. }), "{mode}: {d:?}");
        let proxy = find(&again["spec"]["containers"], "mesh-proxy");
        assert!(env_value(proxy, "DB_PASSWORD_FILE")["value"].is_string());
        assert!(proxy["env"].as_array().unwrap().iter().all(|e| e["name"] != SIGNAL_TARGET_ENV), "{mode}");
        let (_, third) = admit_with(&again, &c);
        assert!(matches!(third, Decision::Allow { outcome: Outcome::Unchanged, .. }), "{mode}: {third:?}");
    }
}

// Rendered files (`template.<file>`, `bundle.<file>`).

use crate::agent::spec::RenderSpec;
use crate::render::{Format, RenderSource, RenderedFile};
use crate::vocabulary::names::{RENDERED_VOLUME, RENDER_CONTAINER};
use crate::vocabulary::paths::RENDER_SPEC_ENV;

const DSN: &str = "postgresql://app:{{ db-password | urlescape }}@db.internal:5432/app?sslmode=require";

fn rendering(mode: &str, extra: Value) -> Value {
    let mut a = with_mode(mode, json!({"secrets/template.db-dsn": DSN, "secrets/bundle.app.env": "dotenv:api-key"}));
    if mode == "csi" {
        // csi renders from the files of the items' names (an objectAlias each).
        a["secrets/item.db-password"] = json!("db-password");
        a["secrets/item.api-key"] = json!("api-key");
    }
    for (k, v) in extra.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

fn rendered_files() -> Vec<RenderedFile> {
    vec![
        RenderedFile {
            name: "app.env".into(),
            source: RenderSource::Bundle { format: Format::Dotenv, items: vec!["api-key".into()] },
        },
        RenderedFile { name: "db-dsn".into(), source: RenderSource::Template(DSN.into()) },
    ]
}

#[test]
fn init_and_sidecar_agents_render_beside_the_items() {
    for (mode, agent) in [("init", INIT_CONTAINER), ("sidecar", SIDECAR_CONTAINER)] {
        let (out, d) = admit(&pod(rendering(mode, json!({})), commanded()));
        let Decision::Allow { warnings, outcome: Outcome::Injected, .. } = &d else { panic!("{mode}: {d:?}") };
        assert!(
            warnings.iter().all(|w| !w.contains("rendered")),
            "the agent renders: nothing to announce {warnings:?}"
        );
        assert_eq!(
            out["metadata"]["annotations"]["secrets/injected"],
            format!("mode={mode},items=2,provider=vault,rendered=2")
        );
        let spec = &out["spec"];
        let a = find(&spec["initContainers"], agent);
        let agent_spec = AgentSpec::from_json(env_value(a, agent_paths::SPEC_ENV)["value"].as_str().unwrap()).unwrap();
        assert_eq!(agent_spec.render, rendered_files(), "{mode}");
        for c in spec["containers"].as_array().unwrap() {
            assert_eq!(env_value(c, "DB_DSN_FILE")["value"], "/var/run/secrets-cache/db-dsn");
            assert_eq!(env_value(c, "APP_ENV_FILE")["value"], "/var/run/secrets-cache/app.env");
            assert!(c["volumeMounts"].as_array().unwrap().iter().all(|m| m["name"] != RENDERED_VOLUME));
        }
        // Nothing of eso/csi's render step.
        assert!(spec["initContainers"].as_array().unwrap().iter().all(|c| c["name"] != RENDER_CONTAINER));
        assert!(spec["volumes"].as_array().unwrap().iter().all(|v| v["name"] != RENDERED_VOLUME));
        assert!(spec["containers"].as_array().unwrap().iter().all(|c| c["name"] != WATCHER_CONTAINER));
        assert!(!a.to_string().contains("p@ss"));
        idempotent(&out);
    }
}

#[test]
fn eso_and_csi_render_with_an_init_step_and_the_watcher() {
    for (mode, native) in [("eso", true), ("csi", true), ("eso", false), ("csi", false)] {
        let mut c = config();
        c.agent.native_sidecar = native;
        let p = pod(rendering(mode, json!({})), commanded());
        let (out, d) = admit_with(&p, &c);
        let Decision::Allow { warnings, outcome: Outcome::Injected, .. } = &d else { panic!("{mode}: {d:?}") };
        let w = warnings.iter().find(|w| w.contains(RENDER_CONTAINER)).expect("the render step is announced");
        assert!(
            w.contains(WATCHER_CONTAINER) && w.contains("/var/run/secrets-cache-rendered") && w.chars().count() <= 256,
            "{w}"
        );
        assert_eq!(out["metadata"]["annotations"]["secrets/injected"], format!("mode={mode},items=2,rendered=2"),);
        let spec = &out["spec"];
        let dir = "/var/run/secrets-cache-rendered";
        assert_eq!(
            find(&spec["volumes"], RENDERED_VOLUME)["emptyDir"],
            json!({"medium": "Memory", "sizeLimit": c.agent.memory_volume_size_limit})
        );
        // The render step runs before the app (and before a native watcher).
        let r = &spec["initContainers"][0];
        assert_eq!(r["name"], RENDER_CONTAINER, "{mode} native={native}");
        assert_eq!((&r["command"], &r["args"]), (&json!(["/secretmode"]), &json!(["render"])));
        assert!(r.get("restartPolicy").is_none());
        assert_restricted(r);
        let want = RenderSpec {
            version: 1,
            source_dir: "/var/run/secrets-cache".into(),
            dest_dir: dir.into(),
            files: rendered_files(),
        };
        assert_eq!(RenderSpec::from_json(env_value(r, RENDER_SPEC_ENV)["value"].as_str().unwrap()).unwrap(), want);
        let m = find(&r["volumeMounts"], SECRETS_VOLUME);
        assert_eq!((&m["mountPath"], &m["readOnly"]), (&json!("/var/run/secrets-cache"), &json!(true)));
        let m = find(&r["volumeMounts"], RENDERED_VOLUME);
        assert_eq!((&m["mountPath"], m.get("readOnly")), (&json!(dir), None));
        // The watcher always, re-rendering on each swap; no on-change.
        let list = if native { &spec["initContainers"] } else { &spec["containers"] };
        let w = find(list, WATCHER_CONTAINER);
        if native {
            assert_eq!(spec["initContainers"][1]["name"], WATCHER_CONTAINER);
        }
        let watch = WatchSpec::from_json(env_value(w, WATCH_SPEC_ENV)["value"].as_str().unwrap()).unwrap();
        assert_eq!((watch.on_change, watch.render), (None, Some(want)));
        let m = find(&w["volumeMounts"], RENDERED_VOLUME);
        assert_eq!((&m["mountPath"], m.get("readOnly")), (&json!(dir), None));
        assert_eq!(r["securityContext"]["runAsUser"], w["securityContext"]["runAsUser"]);
        assert_eq!(r["securityContext"]["runAsGroup"], 3000, "the app's group reads the files");
        // The apps: read-only at <mount-path>-rendered, one _FILE per rendered file.
        for app in spec["containers"].as_array().unwrap().iter().filter(|c| c["name"] != WATCHER_CONTAINER) {
            let m = find(&app["volumeMounts"], RENDERED_VOLUME);
            assert_eq!((&m["mountPath"], &m["readOnly"]), (&json!(dir), &json!(true)));
            assert_eq!(env_value(app, "DB_DSN_FILE")["value"], format!("{dir}/db-dsn"));
            assert_eq!(env_value(app, "APP_ENV_FILE")["value"], format!("{dir}/app.env"));
            assert!(app["command"][0] != EXEC_PATH, "no env-values: no wrapper");
        }
        let (_, again) = admit_with(&out, &c);
        assert!(
            matches!(again, Decision::Allow { ref patch, outcome: Outcome::Unchanged, .. } if patch.is_empty()),
            "{mode}: {again:?}"
        );
    }
}

#[test]
fn env_values_wrap_rendered_files_in_every_mode_and_in_eso_only_those() {
    for mode in ["eso", "csi", "init", "sidecar"] {
        let out = injected(&pod(rendering(mode, json!({"secrets/env-values": "true"})), commanded()));
        let spec = &out["spec"];
        let stems = if mode == "eso" { "APP_ENV,DB_DSN" } else { "API_KEY,DB_PASSWORD,APP_ENV,DB_DSN" };
        let app = find(&spec["containers"], "app");
        assert_eq!(app["command"], json!([EXEC_PATH, "--env", stems, "--", "/app", "--serve"]), "{mode}");
        find(&spec["initContainers"], EXEC_CONTAINER);
        if mode == "eso" {
            // The items' values still come from the Secret.
            assert_eq!(env_value(app, "DB_PASSWORD")["valueFrom"]["secretKeyRef"]["key"], "password");
        }
        idempotent(&out);
    }
    // eso pods with env-values but no rendered files stay unwrapped (env_values_in_eso_need_no_wrapper);
    // with rendered files a container without command is denied, without sending it to eso.
    let m = denied(&pod(rendering("eso", json!({"secrets/env-values": "true"})), app()));
    assert!(m.contains("container app sets no command") && m.contains("rendered files"), "{m}");
    assert!(!m.contains("use mode eso"), "{m}");
}

#[test]
fn rendered_files_in_eso_and_csi_are_checked_like_the_watcher() {
    let ann = rendering("csi", json!({}));
    let mut spec = commanded();
    spec["hostNetwork"] = json!(true);
    let m = denied(&pod(ann.clone(), spec));
    assert!(m.contains("the rendered file app.env") && m.contains("hostNetwork"), "{m}");
    assert!(m.contains("remove the secrets/template.<file> and secrets/bundle.<file> annotations"), "{m}");
    let mut spec = commanded();
    spec["nodeSelector"] = json!({"kubernetes.io/os": "windows"});
    assert!(denied(&pod(ann.clone(), spec)).contains("Linux watcher"));
    // A mount of the app's own over <mount-path>-rendered.
    let mut spec = commanded();
    spec["containers"][0]["volumeMounts"] = json!([{"name": "x", "mountPath": "/var/run/secrets-cache-rendered/sub"}]);
    let m = denied(&pod(ann.clone(), spec));
    assert!(m.contains("overlaps the rendered files' directory /var/run/secrets-cache-rendered"), "{m}");
    // A tampered render step is an owned-field change.
    let out = injected(&pod(ann.clone(), commanded()));
    let mut tampered = out.clone();
    tampered["spec"]["initContainers"][0]["args"] = json!(["agent"]);
    let m = denied(&tampered);
    assert!(m.contains(&format!("spec.initContainers entry {RENDER_CONTAINER}")) && m.contains("field args"), "{m}");
    // A render step left behind after the rendered files were removed.
    let mut other = out.clone();
    let a = other["metadata"]["annotations"].as_object_mut().unwrap();
    a.remove("secrets/template.db-dsn");
    a.remove("secrets/bundle.app.env");
    let m = denied(&other);
    assert!(m.contains(RENDERED_VOLUME) || m.contains(RENDER_CONTAINER), "{m}");
}
