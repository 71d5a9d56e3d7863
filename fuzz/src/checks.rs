//! Invariants checked on every input, shared by the `cargo fuzz` targets (fuzz/fuzz_targets)
//! and the normal test suite (tests/properties.rs includes this file), so a crash found by the
//! fuzzer replays as a plain test.
//!
//! - nothing panics, whatever the bytes;
//! - an answer is an AdmissionReview echoing the request's uid;
//! - a returned patch always applies to the pod it was computed for (json-patch, not ours);
//! - deciding again on the patched pod gives no further patch (idempotence) and no denial;
//! - the injected containers come from the config only (image, command, security settings),
//!   whatever the annotations say;
//! - nothing of the original pod is lost: stripping what the mode owns from the patched pod
//!   gives back the original exactly.

use base64::Engine;
use serde_json::{json, Map, Value};

use secretmode::config::Config;
use secretmode::decide::annotations;
use secretmode::decide::{self, Decision};
use secretmode::json::tree::JsonRef;
use secretmode::vocabulary::on_change::SIGNAL_TARGET_ENV;
use secretmode::vocabulary::paths::{EXEC_DIR, EXEC_PATH};
use secretmode::webhook::pod_view;
use secretmode::webhook::review;

#[derive(serde::Deserialize)]
struct RequestOnly<'a> {
    #[serde(borrow)]
    request: RequestFields<'a>,
}

#[derive(serde::Deserialize)]
struct RequestFields<'a> {
    #[serde(borrow)]
    object: &'a serde_json::value::RawValue,
    namespace: Option<String>,
}

/// Applies RFC 6902 operations (as JSON) to `doc` with the json-patch crate.
pub fn apply(doc: &Value, ops: &Value) -> Result<Value, String> {
    let patch: json_patch::Patch =
        serde_json::from_value(ops.clone()).map_err(|e| format!("patch is not RFC 6902: {e}"))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &patch).map_err(|e| format!("patch does not apply: {e}"))?;
    Ok(out)
}

/// What [`check_review`] found. The fuzzer ignores it (most random bytes are no review at all);
/// the seed replay (tests/properties.rs) asserts each seed reaches the outcome it was written
/// for, so a seed that no longer parses fails instead of passing as "not a review".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reviewed {
    /// Not an AdmissionReview the webhook reads: it answers with an HTTP error.
    NotAReview,
    /// Denied, with a message and no patch.
    Denied,
    /// Allowed without a patch.
    Allowed,
    /// Allowed with a patch that applies, is idempotent and keeps the pod valid.
    Patched,
    /// Allowed with a patch, but the pod holds an unpaired surrogate escape that the independent
    /// read cannot decode, so the patch was not re-applied.
    PatchedUnread,
}

/// One AdmissionReview body, as the webhook receives it.
pub fn check_review(data: &[u8], config: &Config) -> Reviewed {
    let Ok(reviewed) = review::review(data, config) else {
        return Reviewed::NotAReview;
    };
    let answer: Value = serde_json::from_slice(&reviewed.body).expect("the answer is JSON");
    assert_eq!(answer["apiVersion"], review::API_VERSION);
    assert_eq!(answer["kind"], review::KIND);
    let response = &answer["response"];
    assert_eq!(response["uid"].as_str(), Some(reviewed.uid.as_str()));
    assert!(!reviewed.uid.is_empty());
    if response["allowed"] == false {
        assert!(response["status"]["message"].as_str().is_some_and(|m| !m.is_empty()), "denial without a message");
        assert!(response.get("patch").is_none());
        return Reviewed::Denied;
    }
    assert_eq!(response["allowed"], true);
    let Some(patch) = response.get("patch") else {
        assert!(response.get("patchType").is_none(), "patchType without patch");
        return Reviewed::Allowed;
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().expect("patch is a string"))
        .expect("patch is base64");
    let ops: Value = serde_json::from_slice(&bytes).expect("patch is JSON");
    // An independent read of the request. It borrows the object raw, as the webhook does: a
    // whole-document parse would also reject bytes (e.g. invalid UTF-8) inside fields that
    // neither reads, which the webhook rightly ignores.
    let request: RequestOnly<'_> =
        serde_json::from_slice(data).expect("the webhook answered a request it cannot have read");
    // The webhook validates fields it does not read for JSON syntax only (crate::pod_view): an
    // unpaired surrogate escape there, which no API server writes, cannot be read back whole.
    let Ok(object) = serde_json::from_str::<Value>(request.request.object.get()) else {
        return Reviewed::PatchedUnread;
    };
    // JSON written inside a string (secretmode::json::push_in_string, how the agent spec reaches its
    // env value) is that document's text, escaped as serde_json escapes a string.
    let text = serde_json::to_string(&object).expect("serialise");
    let mut inside = b"\"".to_vec();
    secretmode::json::push_in_string(&mut inside, &object).expect("write inside a string");
    inside.push(b'"');
    assert_eq!(inside, serde_json::to_vec(&text).expect("serialise"));
    let decision = decide::admit_pod(&object, &reviewed.namespace, config);
    assert_same_decision_on_view(&object, &reviewed.namespace, config, &decision);
    let patched = apply(&object, &ops).unwrap_or_else(|e| panic!("{e}\nops: {ops}"));
    // The same request again (as after reinvocation), with the patched pod.
    let review = json!({
        "apiVersion": review::API_VERSION,
        "kind": review::KIND,
        "request": {
            "uid": reviewed.uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": request.request.namespace,
            "operation": "CREATE",
            "object": patched,
        }
    });
    let again = serde_json::to_vec(&review).expect("serialise");
    let second = review::review(&again, config).expect("the patched review is still a review");
    let answer: Value = serde_json::from_slice(&second.body).expect("the answer is JSON");
    assert_eq!(answer["response"]["allowed"], true, "the patched pod is denied: {}", answer["response"]);
    assert!(answer["response"].get("patch").is_none(), "not idempotent: second patch {}", answer["response"]);
    Reviewed::Patched
}

/// One pod decided in `namespace`: every invariant above on the decision.
/// Returns the patched pod when the decision injected.
pub fn check_pod(pod: &Value, namespace: &str, config: &Config) -> Option<Value> {
    let decision = decide::admit_pod(pod, namespace, config);
    assert_same_decision_on_view(pod, namespace, config, &decision);
    let Decision::Allow { patch, .. } = decision else {
        return None;
    };
    if patch.is_empty() {
        return None;
    }
    let ops = serde_json::to_value(&patch).expect("serialise ops");
    let patched = apply(pod, &ops).unwrap_or_else(|e| panic!("{e}\nops: {ops}\npod: {pod}"));
    let again = decide::admit_pod(&patched, namespace, config);
    assert_same_decision_on_view(&patched, namespace, config, &again);
    match again {
        Decision::Allow { patch, .. } => assert!(patch.is_empty(), "not idempotent: {patch:?}"),
        d => panic!("the patched pod is denied: {d:?}"),
    }
    check_injected_from_config(&patched, config);
    let stripped = strip_owned(&patched, pod, &config.annotation_prefix);
    assert_eq!(&stripped, pod, "the patch changed a field the mode does not own");
    Some(patched)
}

/// The webhook decides on the parts of the pod it reads (`pod_view`), `mutate` and `audit` on
/// the whole pod: the decision must be the same.
pub fn assert_same_decision_on_view(pod: &Value, namespace: &str, config: &Config, decision: &Decision) {
    let text = pod.to_string();
    let view = pod_view::parse(&text).expect("a serialised pod parses");
    assert_eq!(&decide::decide(&view, namespace, config), decision, "the webhook's view decides otherwise: {view:?}");
}

/// The security-relevant fields of every injected container are the config's.
pub fn check_injected_from_config(pod: &Value, config: &Config) {
    for list in ["initContainers", "containers"] {
        for c in pod["spec"][list].as_array().map(Vec::as_slice).unwrap_or_default() {
            let name = c["name"].as_str().unwrap_or_default();
            if !name.starts_with("secretmode-") {
                continue;
            }
            assert_eq!(c["image"], json!(config.agent.image), "{name}: image not from config");
            let command = match name {
                "secretmode-exec" => json!([config.agent.exec_binary, "--install", EXEC_DIR]),
                _ => json!([config.agent.binary]),
            };
            assert_eq!(c["command"], command, "{name}: command not from config");
            let sc = &c["securityContext"];
            // A signal is sent as the app's own (non-root) user; otherwise the config's.
            if pod["spec"]["shareProcessNamespace"] == true && name != "secretmode-exec" {
                assert!(sc["runAsUser"].as_i64().is_some_and(|u| u > 0), "{name}: runs as root");
            } else {
                assert_eq!(sc["runAsUser"], json!(config.agent.run_as_user));
            }
            assert_eq!(sc["runAsNonRoot"], true);
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["privileged"], false);
            assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
        }
    }
    for v in pod["spec"]["volumes"].as_array().map(Vec::as_slice).unwrap_or_default() {
        if v["name"].as_str().is_some_and(|n| n.starts_with("secretmode-")) {
            assert!(v.get("hostPath").is_none(), "an injected volume is a hostPath");
        }
    }
}

/// The patched pod minus everything the mode owns: `secretmode-*` volumes and containers, the
/// `secretmode-*` mounts, the `<ITEM>_FILE` / `<ITEM>` env vars of the pod's items and
/// `SECRETMODE_SIGNAL_TARGET`, the exec wrapper in front of a command, the
/// `shareProcessNamespace` a signal adds, the `<prefix>/injected` annotation, and any list or
/// map that the injection had to create.
pub fn strip_owned(patched: &Value, original: &Value, prefix: &str) -> Value {
    let mut out = patched.clone();
    let owned_env: Vec<String> = original["metadata"]["annotations"]
        .as_object()
        .map(|a| {
            a.keys()
                .filter_map(|k| k.strip_prefix(prefix)?.strip_prefix("/item."))
                .flat_map(|item| {
                    let stem = annotations::env_stem(item);
                    [format!("{stem}_FILE"), stem]
                })
                .chain([SIGNAL_TARGET_ENV.to_string()])
                .collect()
        })
        .unwrap_or_default();
    let reserved = |e: &Value| e["name"].as_str().is_some_and(|n| n.starts_with("secretmode-"));

    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            // The webhook owns `<prefix>/injected`: it overwrites a hand-written one.
            let key = format!("{prefix}/injected");
            match original["metadata"]["annotations"].get(&key) {
                Some(before) => {
                    ann.insert(key, before.clone());
                }
                None => {
                    ann.remove(&key);
                }
            }
        }
        drop_if_created(meta, original.get("metadata"), "annotations");
    }
    let original_spec = original.get("spec");
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        if original_spec.and_then(|s| s.get("shareProcessNamespace")).is_none() {
            spec.remove("shareProcessNamespace");
        }
        for list in ["volumes", "initContainers", "containers"] {
            let original_list = original_spec.and_then(|s| s.get(list)).and_then(Value::as_array);
            if let Some(entries) = spec.get_mut(list).and_then(Value::as_array_mut) {
                // Keep reserved names the user already had (the injection never removes).
                entries.retain(|e| !reserved(e) || original_list.is_some_and(|o| o.contains(e)));
            }
            drop_if_created(spec, original_spec, list);
        }
        let originals = original_spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
        for container in spec.get_mut("containers").and_then(Value::as_array_mut).into_iter().flatten() {
            let before = originals
                .and_then(|list| list.iter().find(|c| c.get("name") == container.get("name")))
                .cloned()
                .unwrap_or(Value::Null);
            let Some(c) = container.as_object_mut() else { continue };
            if let Some(mounts) = c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                let had = before["volumeMounts"].as_array().cloned().unwrap_or_default();
                mounts.retain(|m| !reserved(m) || had.contains(m));
            }
            let wrapped = c.get("command").and_then(Value::as_array).is_some_and(|w| {
                w.first().and_then(Value::as_str) == Some(EXEC_PATH) && before.get("command") != c.get("command")
            });
            if wrapped {
                let own: Vec<Value> = c["command"].as_array().map(|w| w[4.min(w.len())..].to_vec()).unwrap_or_default();
                c.insert("command".into(), Value::Array(own));
            }
            drop_if_created(c, Some(&before), "volumeMounts");
            if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
                let had = before["env"].as_array().cloned().unwrap_or_default();
                env.retain(|e| {
                    !e["name"].as_str().is_some_and(|n| owned_env.iter().any(|o| o == n)) || had.contains(e)
                });
            }
            drop_if_created(c, Some(&before), "env");
        }
    }
    out
}

/// Removes `map[key]` when the original did not have it and it is now empty.
fn drop_if_created(map: &mut Map<String, Value>, original: Option<&Value>, key: &str) {
    let had = original.and_then(|o| o.get(key)).is_some();
    let empty = match map.get(key) {
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    };
    if !had && empty {
        map.remove(key);
    }
}

/// The fuzz input format of the annotation target: one annotation per line, `key=value`
/// (value may be empty; `\n` in a value stands for a newline). Lines without `=` are keys with
/// an empty value.
pub fn annotations_from_lines(data: &[u8]) -> Map<String, Value> {
    let text = String::from_utf8_lossy(data);
    let mut map = Map::new();
    for line in text.lines() {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        map.insert(key.to_string(), Value::String(value.replace("\\n", "\n")));
    }
    map
}

/// A realistic pod (the sidecar example's shape) carrying `annotations`.
pub fn pod_with_annotations(annotations: Map<String, Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-7f9c6d5b84-", "namespace": "demo", "labels": {"app": "web"}, "annotations": annotations},
        "spec": {
            "serviceAccountName": "web",
            "containers": [
                {"name": "app", "image": "busybox:1.37", "env": [{"name": "LOG_LEVEL", "value": "info"}],
                 "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                 "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}]},
                {"name": "proxy", "image": "envoy:1.30", "ports": [{"containerPort": 9901}]}
            ],
            "initContainers": [{"name": "migrate", "image": "busybox:1.37", "restartPolicy": "Never"}],
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
            "someFutureField": {"kept": [1, 2, {"x": null}]}
        }
    })
}

/// The annotation target: parsing alone must not panic, and the whole decision on a pod
/// carrying these annotations keeps every invariant.
pub fn check_annotations(data: &[u8], config: &Config) {
    let pod = pod_with_annotations(annotations_from_lines(data));
    let read = JsonRef::from(&pod);
    let _ = annotations::parse(
        read.at(&["metadata", "annotations"]).and_then(JsonRef::as_object),
        &config.annotation_prefix,
    );
    check_pod(&pod, "demo", config);
}
