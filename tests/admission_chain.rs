//! secretmode behind an emulated kube-apiserver (support::apiserver): the real `secretmode
//! serve` over HTTPS, called the way the API server calls it — defaults, in-tree plugins,
//! reinvocation, another webhook before and after it — for every example in every mode.
//!
//! The first half checks the emulator itself against the Kubernetes behaviour it copies
//! (quantities, patch semantics, warnings, defaults, plugins, the reinvocation rules), with
//! in-process webhooks only; the second half runs secretmode through it.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Map, Value};

use support::apiserver::plugins::LimitRange;
use support::apiserver::webhook::Backend;
use support::apiserver::{
    checks, controllers, defaults, object, platform, quantity, response, Cluster, FailurePolicy, Reinvocation,
    SideEffects, Webhook,
};
use support::review::Requester;
use support::serve::{self, Shared};

const NS: &str = "demo";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---- the emulator's own pieces -----------------------------------------------------------

#[test]
fn quantities_are_written_back_as_go_writes_them() {
    let cases = [
        ("0.01", "10m"),
        ("100m", "100m"),
        ("1000m", "1"),
        ("1.5", "1500m"),
        ("+1", "1"),
        ("2000", "2k"),
        ("1.5k", "1500"),
        ("1e3", "1e3"),
        ("12e2", "1200"),
        ("1024Mi", "1Gi"),
        ("1.5Gi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("1Ki", "1Ki"),
        ("1023Ki", "1023Ki"),
        ("0.5Ki", "512"),
        ("64Mi", "64Mi"),
        ("10n", "10n"),
        ("0.1n", "1n"),
        ("0", "0"),
        ("0Mi", "0"),
    ];
    for (input, want) in cases {
        assert_eq!(quantity::canonical(input).as_deref(), Some(want), "{input}");
    }
    for bad in ["", "abc", "1Xi", "1.2.3", "1e", "1 Mi"] {
        assert_eq!(quantity::canonical(bad), None, "{bad:?}");
    }
    assert!(quantity::same_value("1024", "1Ki") && quantity::same_value("0.1", "100m"));
    assert!(!quantity::same_value("1M", "1Mi"));
}

#[test]
fn the_patch_applier_has_evanphx_v4_semantics() {
    use support::patch::apply;
    let doc = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "labels": {"x": "1"}}});
    let ok = |ops: Value| apply(&doc, &ops).unwrap_or_else(|e| panic!("{e}"));
    // add under a missing parent fails ("doc is missing path").
    assert!(apply(&doc, &json!([{"op": "add", "path": "/spec/volumes/0", "value": {}}])).is_err());
    assert!(apply(&doc, &json!([{"op": "add", "path": "/spec/containers/0/env/-", "value": {}}])).is_err());
    // An index up to the length inserts; past it fails; `-` appends.
    let p = ok(json!([{"op": "add", "path": "/spec/containers/0", "value": {"name": "z"}}]));
    assert_eq!(p["spec"]["containers"], json!([{"name": "z"}, {"name": "a"}, {"name": "b"}]));
    let p = ok(json!([{"op": "add", "path": "/spec/containers/2", "value": {"name": "z"}}]));
    assert_eq!(p["spec"]["containers"][2], json!({"name": "z"}));
    assert!(apply(&doc, &json!([{"op": "add", "path": "/spec/containers/3", "value": {}}])).is_err());
    let p = ok(json!([{"op": "add", "path": "/spec/containers/-", "value": {"name": "z"}}]));
    assert_eq!(p["spec"]["containers"][2], json!({"name": "z"}));
    // ~1 and ~0 are decoded; an add to an existing key replaces it.
    let p = ok(json!([{"op": "add", "path": "/spec/labels/a~1b~0c", "value": "v"},
                      {"op": "add", "path": "/spec/labels/x", "value": "2"}]));
    assert_eq!(p["spec"]["labels"], json!({"x": "2", "a/b~c": "v"}));
    // v4's leniency: Atoi indices and negative indices from the end.
    let p = ok(json!([{"op": "replace", "path": "/spec/containers/01/name", "value": "B"}]));
    assert_eq!(p["spec"]["containers"][1]["name"], "B");
    let p = ok(json!([{"op": "remove", "path": "/spec/containers/-1"}]));
    assert_eq!(p["spec"]["containers"], json!([{"name": "a"}]));
    let p = ok(json!([{"op": "add", "path": "/spec/containers/-1", "value": {"name": "z"}}]));
    assert_eq!(p["spec"]["containers"][2], json!({"name": "z"}));
    // Ops apply in order; a failing op fails the patch.
    assert!(
        apply(&doc, &json!([{"op": "add", "path": "/spec/x", "value": 1}, {"op": "remove", "path": "/nope"}])).is_err()
    );
    assert!(apply(&doc, &json!({"op": "add"})).is_err());
}

/// The json-patch crate on its own agrees with evanphx v4 on the cases the webhook relies on
/// (the applier only rewrites index tokens before handing it a path).
#[test]
fn the_json_patch_crate_agrees_with_evanphx_v4_where_it_matters() {
    let doc = json!({"a": [1, 2], "m": {"k": 1}});
    let run = |ops: Value| {
        let patch: json_patch::Patch = serde_json::from_value(ops).expect("patch");
        let mut d = doc.clone();
        json_patch::patch(&mut d, &patch).map(|_| d)
    };
    assert!(run(json!([{"op": "add", "path": "/missing/0", "value": 1}])).is_err());
    assert_eq!(
        run(json!([{"op": "add", "path": "/a/2", "value": 3}])).ok(),
        Some(json!({"a": [1, 2, 3], "m": {"k": 1}}))
    );
    assert!(run(json!([{"op": "add", "path": "/a/3", "value": 3}])).is_err());
    assert_eq!(
        run(json!([{"op": "add", "path": "/a/-", "value": 3}])).ok().map(|d| d["a"].clone()),
        Some(json!([1, 2, 3]))
    );
    assert_eq!(
        run(json!([{"op": "add", "path": "/m/k", "value": 2}])).ok().map(|d| d["m"].clone()),
        Some(json!({"k": 2}))
    );
    assert_eq!(
        run(json!([{"op": "add", "path": "/m/x~1y~0", "value": 2}])).ok().map(|d| d["m"].clone()),
        Some(json!({"k": 1, "x/y~": 2}))
    );
}

#[test]
fn warnings_are_filtered_and_truncated_as_the_api_server_does() {
    let mut w = response::Warnings::default();
    for text in ["first", "", "first", "bell\u{7} inside", "tab\tinside", "last"] {
        w.add(text);
    }
    assert_eq!(w.shown(), ["first", "last"]);

    // Past 4,096 runes in total: every warning cut to 256 runes, later ones dropped.
    let mut w = response::Warnings::default();
    let long: Vec<String> = (0..20).map(|i| format!("{i:02}{}", "é".repeat(298))).collect();
    for text in &long {
        w.add(text);
    }
    let shown = w.shown();
    assert_eq!(shown.len(), 16, "{}", shown.len());
    assert!(shown.iter().all(|s| s.chars().count() == 256));
    assert!(shown[0].starts_with("00") && shown[15].starts_with("15"));
    // Under the limit nothing is cut.
    let mut w = response::Warnings::default();
    w.add(&"x".repeat(1000));
    assert_eq!(w.shown()[0].len(), 1000);
}

#[test]
fn denials_and_bad_answers_read_as_the_api_server_words_them() {
    let d = response::denial(
        "pods.secretmode.io",
        "",
        Some(&json!({"code": 403, "message": "secrets/mode: nope; fix: yes"})),
    );
    assert_eq!((d.code, d.reason.as_str()), (403, "Forbidden"));
    assert_eq!(d.message, "pods \"Unknown\" is forbidden: admission webhook \"pods.secretmode.io\" denied the request: secrets/mode: nope; fix: yes");
    let d = response::denial("w.example.com", "web", None);
    assert_eq!(
        d.message,
        "pods \"web\" is forbidden: admission webhook \"w.example.com\" denied the request without explanation"
    );

    let answer =
        |response: Value| json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
    let patch = base64::engine::general_purpose::STANDARD.encode(br#"[{"op":"add","path":"/x","value":1}]"#);
    assert!(response::verify("u", &answer(json!({"uid": "u", "allowed": true}))).is_ok());
    for (bad, why) in [
        (json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}), "absent"),
        (answer(json!({"uid": "other", "allowed": true})), "uid"),
        (
            json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "response": {"uid": "u"}}),
            "AdmissionReview",
        ),
        (answer(json!({"uid": "u", "allowed": true, "patch": patch})), "patchType"),
        (answer(json!({"uid": "u", "allowed": true, "patchType": "JSONPatch"})), "patch"),
        (answer(json!({"uid": "u", "allowed": true, "patch": patch, "patchType": "MergePatch"})), "unsupported"),
        (answer(json!({"uid": "u", "allowed": true, "patch": "!!", "patchType": "JSONPatch"})), "undecodable"),
    ] {
        let e = response::verify("u", &bad).unwrap_err();
        assert!(e.contains(why), "{why}: {e}");
    }
}

#[test]
fn defaults_are_the_v1_defaults() {
    let mut pod = object::decode(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-", "labels": {}, "unknownField": 1},
        "spec": {
            "hostNetwork": true,
            "containers": [{
                "name": "app", "image": "nginx", "extra": "dropped",
                "ports": [{"containerPort": 8080}],
                "resources": {"limits": {"cpu": "0.5", "memory": "1024Mi"}, "requests": {"cpu": 0.1}},
                "livenessProbe": {"httpGet": {"port": 8080}},
                "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "volumeMounts": [{"name": "s", "mountPath": "/s", "readOnly": false}]
            }],
            "initContainers": [{"name": "setup", "image": "busybox:1.37", "resources": {"limits": {"memory": "64Mi"}}}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "x"}},
                {"name": "c", "configMap": {"name": "x"}},
                {"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "audience": "a"}}]}},
                {"name": "e"}
            ]
        }
    }))
    .expect("decodes");
    defaults::pod(&mut pod);
    let spec = &pod["spec"];
    let app = &spec["containers"][0];
    assert!(pod["metadata"].get("unknownField").is_none() && app.get("extra").is_none(), "unknown fields dropped");
    assert!(pod["metadata"].get("labels").is_none(), "an empty map is omitted");
    assert_eq!(pod["metadata"]["creationTimestamp"], Value::Null);
    assert_eq!(pod["status"], json!({}));
    assert_eq!(app["imagePullPolicy"], "Always", "no tag means latest");
    assert_eq!(spec["initContainers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(app["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(app["terminationMessagePolicy"], "File");
    assert_eq!(app["ports"][0], json!({"containerPort": 8080, "hostPort": 8080, "protocol": "TCP"}));
    assert_eq!(
        app["resources"],
        json!({"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "1Gi"}})
    );
    assert_eq!(spec["initContainers"][0]["resources"]["requests"], json!({"memory": "64Mi"}));
    assert_eq!(
        app["livenessProbe"],
        json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(app["readinessProbe"]["periodSeconds"], 5);
    assert_eq!(app["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    assert_eq!(app["volumeMounts"][0], json!({"name": "s", "mountPath": "/s"}), "readOnly: false is omitted");
    let volumes = spec["volumes"].as_array().expect("volumes");
    assert_eq!(volumes[0]["secret"]["defaultMode"], 420);
    assert_eq!(volumes[1]["configMap"]["defaultMode"], 420);
    assert_eq!(volumes[2]["projected"]["defaultMode"], 420);
    assert_eq!(volumes[2]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3600);
    assert_eq!(volumes[3]["emptyDir"], json!({}));
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
    ] {
        assert_eq!(spec[k], v, "{k}");
    }
    assert_eq!(defaults::image_tag("registry:5000/app").as_deref(), Some("latest"));
    assert_eq!(defaults::image_tag("app@sha256:abc"), None);
    assert_eq!(defaults::image_tag("registry:5000/app:1.0@sha256:abc").as_deref(), Some("1.0"));
    // A type error is a decode error, not a silently dropped field.
    assert!(object::decode(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {"containers": "x"}}))
        .is_err());
}

/// An in-process webhook that applies `ops(object)` (empty: no patch), and counts its calls.
fn hook(name: &str, reinvocation: Reinvocation, ops: impl Fn(&Value) -> Vec<Value> + Send + Sync + 'static) -> Webhook {
    Webhook {
        name: name.into(),
        reinvocation,
        side_effects: SideEffects::None,
        failure_policy: FailurePolicy::Fail,
        timeout_seconds: 10,
        matches: Arc::new(|_, _| true),
        backend: Backend::InProcess(Arc::new(move |review| {
            let ops = ops(&review["request"]["object"]);
            let mut response = json!({"uid": review["request"]["uid"], "allowed": true});
            if !ops.is_empty() {
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(
                    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&ops).unwrap_or_default())
                );
            }
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        })),
    }
}

/// Adds the label `key` once.
fn labeller(key: &'static str) -> impl Fn(&Value) -> Vec<Value> + Send + Sync {
    move |pod| {
        if pod.pointer(&format!("/metadata/labels/{key}")).is_some() {
            return vec![];
        }
        match pod.pointer("/metadata/labels") {
            Some(_) => vec![json!({"op": "add", "path": format!("/metadata/labels/{key}"), "value": "y"})],
            None => vec![json!({"op": "add", "path": "/metadata/labels", "value": {key: "y"}})],
        }
    }
}

/// Adds the container `name` once.
fn container_adder(name: &'static str) -> impl Fn(&Value) -> Vec<Value> + Send + Sync {
    move |pod| {
        if pod["spec"]["containers"].as_array().is_some_and(|c| c.iter().any(|c| c["name"] == name)) {
            return vec![];
        }
        vec![json!({"op": "add", "path": "/spec/containers/-", "value": {"name": name, "image": "x:1"}})]
    }
}

fn simple_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"a": "b"}},
           "spec": {"containers": [{"name": "app", "image": "app:1"}]}})
}

fn order(calls: &[support::apiserver::Call]) -> Vec<String> {
    calls.iter().map(|c| format!("{}@{}", c.webhook, c.round)).collect()
}

#[tokio::test]
async fn reinvocation_follows_the_dispatchers_rules() {
    // A webhook's own change does not reinvoke it: nothing changed after it.
    let mut cluster = Cluster::new(NS);
    cluster.webhooks = vec![hook("a.example.com", Reinvocation::IfNeeded, labeller("a"))];
    let done = cluster.create(&simple_pod(), &Requester::Kubectl, false).await.expect("admitted");
    assert_eq!(order(&done.calls), ["a.example.com@0"]);

    // A later webhook's change reinvokes an earlier IfNeeded one, not a Never one; the in-tree
    // plugins run again and mount the token into the container the later webhook added.
    let mut cluster = Cluster::new(NS);
    cluster.webhooks = vec![
        hook("a.example.com", Reinvocation::IfNeeded, labeller("a")),
        hook("n.example.com", Reinvocation::Never, labeller("n")),
        hook("b.example.com", Reinvocation::IfNeeded, container_adder("late")),
    ];
    let done = cluster.create(&simple_pod(), &Requester::Kubectl, false).await.expect("admitted");
    assert_eq!(
        order(&done.calls),
        ["a.example.com@0", "n.example.com@0", "b.example.com@0", "a.example.com@1", "b.example.com@1"]
    );
    let late = &done.object["spec"]["containers"][1];
    assert_eq!(late["volumeMounts"][0]["mountPath"], "/var/run/secrets/kubernetes.io/serviceaccount", "{late}");
    // Every call has its own uid; the round-1 request carries the plugin's mount.
    let uids: std::collections::BTreeSet<&str> =
        done.calls.iter().filter_map(|c| c.request["request"]["uid"].as_str()).collect();
    assert_eq!(uids.len(), done.calls.len());
    assert!(done.calls[3].request["request"]["object"]["spec"]["containers"][1]["volumeMounts"].is_array());

    // Without automount the plugins change nothing in round 1: only webhooks invoked before a
    // later change are called again (b changed last, so only a).
    let mut cluster = Cluster::new(NS);
    cluster.service_accounts.insert("default".into(), Some(false));
    cluster.webhooks = vec![
        hook("a.example.com", Reinvocation::IfNeeded, labeller("a")),
        hook("b.example.com", Reinvocation::IfNeeded, container_adder("late")),
    ];
    let done = cluster.create(&simple_pod(), &Requester::Kubectl, false).await.expect("admitted");
    assert_eq!(order(&done.calls), ["a.example.com@0", "b.example.com@0", "a.example.com@1"]);

    // No change at all: no second round.
    let mut cluster = Cluster::new(NS);
    cluster.webhooks = vec![hook("q.example.com", Reinvocation::IfNeeded, |_| vec![])];
    let done = cluster.create(&simple_pod(), &Requester::Kubectl, false).await.expect("admitted");
    assert_eq!(order(&done.calls), ["q.example.com@0"]);
    let (changed, _) = cluster.one_more_round(&done, &Requester::Kubectl).await.expect("round");
    assert!(!changed);
}

#[tokio::test]
async fn failure_policy_dry_run_and_patch_errors_decide_as_the_api_server_does() {
    let wrong_uid = |policy| Webhook {
        failure_policy: policy,
        backend: Backend::InProcess(Arc::new(
            |_| json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "not-yours", "allowed": true}}),
        )),
        ..hook("w.example.com", Reinvocation::Never, |_| vec![])
    };
    let mut cluster = Cluster::new(NS);
    cluster.webhooks = vec![wrong_uid(FailurePolicy::Fail)];
    let e = cluster.create(&simple_pod(), &Requester::Kubectl, false).await.expect_err("fails closed");
    assert_eq!(e.status.code, 500);
    assert!(
        e.status.message.contains("failed calling webhook \"w.example.com\"")
            && e.status.message.contains("response.uid"),
        "{}",
        e.status.message
    );
    cluster.webhooks = vec![wrong_uid(FailurePolicy::Ignore)];
    cluster.create(&simple_pod(), &Requester::Kubectl, false).await.expect("fails open");

    // A patch that does not apply is a 500 whatever the failure policy.
    let mut cluster = Cluster::new(NS);
    cluster.webhooks = vec![Webhook {
        failure_policy: FailurePolicy::Ignore,
        ..hook("p.example.com", Reinvocation::Never, |_| {
            vec![json!({"op": "add", "path": "/spec/nothing/0", "value": 1})]
        })
    }];
    let e = cluster.create(&simple_pod(), &Requester::Kubectl, false).await.expect_err("patch fails");
    assert_eq!(e.status.code, 500, "{:?}", e.status);

    // Dry run reaches only webhooks without side effects.
    let mut cluster = Cluster::new(NS);
    cluster.webhooks =
        vec![Webhook { side_effects: SideEffects::Some, ..hook("s.example.com", Reinvocation::Never, |_| vec![]) }];
    cluster.create(&simple_pod(), &Requester::Kubectl, false).await.expect("not a dry run");
    let e = cluster.create(&simple_pod(), &Requester::Kubectl, true).await.expect_err("dry run");
    assert_eq!(e.status.code, 400);
    assert!(e.status.message.contains("does not support dry run"));

    // A patch producing an invalid pod is refused by validation, after admission.
    let mut cluster = Cluster::new(NS);
    cluster.webhooks = vec![hook("v.example.com", Reinvocation::Never, |pod| {
        if pod["spec"]["containers"][0]["volumeMounts"].as_array().is_some_and(|m| m.len() > 1) {
            return vec![];
        }
        vec![json!({"op": "add", "path": "/spec/containers/0/volumeMounts/-",
                    "value": {"name": "nowhere", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}})]
    })];
    let e = cluster.create(&simple_pod(), &Requester::Kubectl, false).await.expect_err("invalid");
    assert_eq!(e.status.code, 422);
    assert!(
        e.status.message.contains("must be unique") && e.status.message.contains("Not found"),
        "{}",
        e.status.message
    );
}

#[tokio::test]
async fn in_tree_plugins_do_what_the_api_server_does() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
        "spec": {"initContainers": [{"name": "setup", "image": "busybox:1.37"}],
                 "containers": [{"name": "app", "image": "app:1", "resources": {"requests": {"cpu": "10m"}}},
                                {"name": "own", "image": "app:1", "volumeMounts": [{"name": "mine", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
                 "volumes": [{"name": "mine", "emptyDir": {}}]}});
    let mut cluster = Cluster::new(NS);
    cluster.limit_range = Some(LimitRange::typical());
    cluster.always_pull_images = true;
    let done = cluster.create(&pod, &Requester::ReplicaSet, false).await.expect("admitted");
    let spec = &done.object["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["serviceAccount"], "default");
    let token = spec["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"].as_str().is_some_and(|n| n.starts_with("kube-api-access-"))))
        .expect("token volume");
    let name = token["name"].as_str().unwrap_or_default();
    assert_eq!(name.len(), "kube-api-access-".len() + 5);
    assert_eq!(token["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3607);
    for c in [&spec["initContainers"][0], &spec["containers"][0]] {
        assert!(
            c["volumeMounts"].as_array().is_some_and(|m| m.contains(
                &json!({"name": name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
            )),
            "{c}"
        );
        assert_eq!(c["imagePullPolicy"], "Always");
    }
    assert_eq!(
        spec["containers"][1]["volumeMounts"].as_array().map(Vec::len),
        Some(1),
        "an existing mount there is kept"
    );
    let app = &spec["containers"][0]["resources"];
    assert_eq!(app["requests"], json!({"cpu": "10m", "memory": "128Mi", "ephemeral-storage": "256Mi"}));
    assert_eq!(app["limits"], json!({"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}));
    let note = done.object["metadata"]["annotations"]["kubernetes.io/limit-ranger"].as_str().unwrap_or_default();
    assert!(note.starts_with("LimitRanger plugin set: ephemeral-storage, memory request for container app; cpu, ephemeral-storage, memory limit for container app"), "{note}");
    assert_eq!(spec["priority"], 0);
    assert_eq!(spec["tolerations"].as_array().map(Vec::len), Some(2));
    assert!(done.object["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("web-") && n.len() == 9));

    // Automount off, by the pod or by its ServiceAccount (the pod's setting wins).
    for (pod_setting, sa_setting, mounted) in
        [(Some(false), None, false), (None, Some(false), false), (Some(true), Some(false), true), (None, None, true)]
    {
        let mut cluster = Cluster::new(NS);
        cluster.service_accounts.insert("default".into(), sa_setting);
        let mut p = simple_pod();
        if let Some(v) = pod_setting {
            p["spec"]["automountServiceAccountToken"] = json!(v);
        }
        let done = cluster.create(&p, &Requester::Kubectl, false).await.expect("admitted");
        assert_eq!(done.object["spec"]["volumes"].is_array(), mounted, "{pod_setting:?} {sa_setting:?}");
    }
    let mut p = simple_pod();
    p["spec"]["serviceAccountName"] = json!("missing");
    let e = Cluster::new(NS).create(&p, &Requester::Kubectl, false).await.expect_err("no such ServiceAccount");
    assert_eq!(e.status.code, 403);
}

/// The end-of-chain checks are not vacuous: each catches the breach it is for.
#[test]
fn the_end_of_chain_checks_catch_what_they_are_for() {
    let good = json!({
        "metadata": {"annotations": {"secrets/mode": "init", "secrets/item.db-password": "a/b#c"}},
        "spec": {
            "initContainers": [{"name": "secretmode-init", "image": "agent"}, {"name": "setup", "image": "x"}],
            "containers": [{"name": "app", "image": "app",
                "env": [{"name": "DB_PASSWORD_FILE", "value": "/var/run/secrets-cache/db-password"}],
                "volumeMounts": [{"name": "secretmode-secrets", "mountPath": "/var/run/secrets-cache", "readOnly": true}],
                "resources": {"limits": {"memory": "1Gi"}}}],
            "volumes": [{"name": "secretmode-secrets", "emptyDir": {"medium": "Memory"}}]
        }
    });
    assert_eq!(checks::contract(&good, "secrets", "/var/run/secrets-cache"), Vec::<String>::new());
    let broken = |pointer: &str, value: Value| {
        let mut p = good.clone();
        *p.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = value;
        checks::contract(&p, "secrets", "/var/run/secrets-cache")
    };
    assert!(broken("/spec/containers/0/env", json!([]))[0].contains("no DB_PASSWORD_FILE"));
    assert!(broken("/spec/containers/0/volumeMounts/0/readOnly", json!(false))[0].contains("read-only"));
    assert!(broken("/spec/volumes/0", json!({"name": "secretmode-secrets", "secret": {}}))[0].contains("emptyDir"));
    assert!(broken("/spec/initContainers/0/name", json!("other"))[0].contains("no secretmode-init"));
    let mut with_proxy = good.clone();
    with_proxy["spec"]["containers"].as_array_mut().expect("containers").push(json!({"name": "proxy", "image": "p"}));
    assert!(checks::contract(&with_proxy, "secrets", "/var/run/secrets-cache")
        .iter()
        .any(|e| e.contains("container proxy")));

    assert_eq!(checks::preserved(&good, &good, &[]), Vec::<String>::new());
    let changed = |pointer: &str, value: Value| {
        let mut p = good.clone();
        *p.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = value;
        checks::preserved(&good, &p, &[])
    };
    assert_eq!(changed("/spec/containers/0/resources/limits/memory", json!("1024Mi")), Vec::<String>::new());
    assert_eq!(changed("/spec/containers/0/resources/limits/memory", json!("1G")).len(), 1);
    assert_eq!(changed("/spec/containers/0/env", json!([])).len(), 1);
    assert_eq!(changed("/spec/containers/0/image", json!("other")).len(), 1);
    let mut reordered = good.clone();
    reordered["spec"]["initContainers"].as_array_mut().expect("init").reverse();
    assert_eq!(checks::preserved(&good, &reordered, &[]).len(), 1);
    let mut added = good.clone();
    added["spec"]["containers"][0]["env"].as_array_mut().expect("env").push(json!({"name": "MORE", "value": "1"}));
    assert_eq!(checks::preserved(&good, &added, &[]), Vec::<String>::new(), "additions are fine");

    let raw = json!({"spec": {"containers": [{"name": "a", "imagePullPolicyy": "Always", "stdin": false}]}});
    let decoded = json!({"spec": {"containers": [{"name": "a"}]}});
    assert_eq!(object::dropped(&raw, &decoded), ["/spec/containers/0/imagePullPolicyy"]);
}

// ---- secretmode through the chain -------------------------------------------------------

/// The servers this binary shares: the examples' configuration, as given and with plain
/// (non-native) sidecars, and the built-in configuration.
fn server(flavour: Flavour) -> &'static Shared {
    let examples = root().join("examples/config.yaml");
    match flavour {
        Flavour::Native => serve::shared("examples", Some(&examples)),
        Flavour::Plain => {
            let text = std::fs::read_to_string(&examples).expect("examples/config.yaml");
            assert!(text.contains("nativeSidecar: true"), "examples/config.yaml sets agent.nativeSidecar");
            let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("config-plain-{}.yaml", std::process::id()));
            std::fs::write(&path, text.replace("nativeSidecar: true", "nativeSidecar: false")).expect("write config");
            serve::shared("examples-plain", Some(&path))
        }
        Flavour::Builtin => serve::shared("builtin", None),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavour {
    /// examples/config.yaml: native sidecars.
    Native,
    /// examples/config.yaml with `agent.nativeSidecar: false`.
    Plain,
    /// The built-in configuration.
    Builtin,
}

fn secretmode(flavour: Flavour) -> Webhook {
    let s = server(flavour);
    Webhook::secretmode(&s.serve, &s.tls.ca_pem, "secrets")
}

/// The reproduction of issue 21: an init pod, the ServiceAccount token automounted, as a
/// real API server admits it. Before the fix the reinvocation round was denied because the
/// plugin had mounted its token into the agent container secretmode had just added.
#[tokio::test]
async fn an_init_pod_with_the_service_account_token_is_admitted_on_reinvocation() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "annotations": {
        "secrets/mode": "init", "secrets/item.db-password": "shop/db#password"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}});
    let mut cluster = Cluster::new("shop");
    cluster.webhooks = vec![secretmode(Flavour::Builtin)];
    let done = match cluster.create(&pod, &Requester::Kubectl, false).await {
        Ok(done) => done,
        Err(e) => panic!("{}: {}\ncalls: {:?}", e.status.code, e.status.message, order(&e.calls)),
    };
    assert_eq!(order(&done.calls), ["pods.secretmode.io@0", "pods.secretmode.io@1"]);
    let second = &done.calls[1];
    let agent = &second.request["request"]["object"]["spec"]["initContainers"][0];
    assert!(
        agent["volumeMounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")),
        "the second call sees the token mount: {agent}"
    );
    assert!(
        second
            .response
            .as_ref()
            .is_some_and(|r| r["response"]["allowed"] == true && r["response"].get("patch").is_none()),
        "{:?}",
        second.response
    );
    assert_eq!(checks::contract(&done.object, "secrets", "/var/run/secrets-cache"), Vec::<String>::new());

    // The same offline, as the issue describes it: mutate, mount the token as the plugin
    // does, mutate again.
    let config = secretmode::config::Config::builtin().expect("config");
    let decide = |p: &Value| secretmode::decide::admit_pod(p, "shop", &config);
    let secretmode::decide::Decision::Allow { patch, .. } = decide(&pod) else { panic!("first decision denied") };
    let mut mutated = support::patch::apply_ops(&pod, &patch);
    let volume = support::apiserver::plugins::token_volume("kube-api-access-x7k2p");
    mutated["spec"]["volumes"].as_array_mut().expect("volumes").push(volume);
    for list in ["initContainers", "containers"] {
        for c in mutated["spec"][list].as_array_mut().expect("containers") {
            c["volumeMounts"].as_array_mut().expect("mounts").push(
                json!({"name": "kube-api-access-x7k2p", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}),
            );
        }
    }
    match decide(&mutated) {
        secretmode::decide::Decision::Allow { .. } => {}
        denied => panic!("the second decision is a denial: {denied:?}"),
    }
}

/// A pod with more policy violations than the API server keeps warnings for: what kubectl
/// shows (after the API server's own filter, support::apiserver::response::Warnings) is what
/// secretmode wrote, each warning whole, the first violations first.
#[tokio::test]
async fn a_pod_with_many_policy_violations_shows_its_first_warnings_whole() {
    let base = secretmode::config::DEFAULT_CONFIG_YAML.split("\npolicy:").next().expect("built-in config");
    let config = format!(
        "{base}\npolicy:\n  rules:\n    - name: team-warn\n      namespaces: [\"*\"]\n      allowedModes: [eso]\n      \
         allowedPathPrefixes: [\"apps/{{namespace}}\"]\n      enforcement: warn\n"
    );
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("config-warn-{}.yaml", std::process::id()));
    std::fs::write(&path, config).expect("write config");
    let shared = serve::shared("warn-policy", Some(&path));
    let mut annotations = json!({"secrets/mode": "sidecar"});
    for i in 0..60 {
        annotations[format!("secrets/item.key-{i:02}")] = json!(format!("elsewhere/team-{i:02}/service#key"));
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "busy", "annotations": annotations},
                     "spec": {"containers": [{"name": "app", "image": "app:1"}]}});
    let mut cluster = Cluster::new("team-a");
    cluster.webhooks = vec![Webhook::secretmode(&shared.serve, &shared.tls.ca_pem, "secrets")];
    let done = cluster.create(&pod, &Requester::Kubectl, false).await.unwrap_or_else(|e| panic!("{:?}", e.status));
    let written: Vec<String> = done.calls[0]
        .response
        .as_ref()
        .and_then(|r| r["response"]["warnings"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect();
    assert!(written.len() > 5, "{written:?}");
    assert_eq!(done.warnings, written, "the API server showed something other than what secretmode wrote");
    assert!(done.warnings.iter().all(|w| w.chars().count() <= 256));
    assert!(done.warnings.iter().map(|w| w.chars().count()).sum::<usize>() <= 4096);
    assert!(done.warnings[0].contains("secrets/mode"), "{:?}", done.warnings);
    assert!(done.warnings.iter().any(|w| w.contains("secrets/item.key-00")), "{:?}", done.warnings);
}

/// The emulator's first request for each example Deployment is the checked-in
/// examples/admission/<mode>.json (tests/py/admission_requests.py writes those), apart from
/// what is random or made per request.
#[tokio::test]
async fn the_emulated_request_is_the_checked_in_admission_example() {
    for mode in ["eso", "csi", "init", "sidecar"] {
        let deployment = load_yaml(&root().join(format!("examples/{mode}/deployment.yaml")));
        let (pod, requester) = controllers::pod_for(&deployment).expect("pod");
        let mut cluster = Cluster::new(NS);
        cluster.webhooks = vec![secretmode(Flavour::Native)];
        // Only the first request matters here, whatever the chain decides after it.
        let calls = match cluster.create(&pod, &requester, false).await {
            Ok(done) => done.calls,
            Err(rejected) => rejected.calls,
        };
        let sent = &calls.first().unwrap_or_else(|| panic!("{mode}: secretmode was not called")).request;
        let file: Value = serde_json::from_slice(
            &std::fs::read(root().join(format!("examples/admission/{mode}.json"))).expect("read"),
        )
        .expect("json");
        let (mut a, mut b) = (sent.clone(), file.clone());
        for v in [&mut a, &mut b] {
            let r = &mut v["request"];
            r["uid"] = json!("*");
            r["userInfo"]["uid"] = json!("*");
            let meta = &mut r["object"]["metadata"];
            meta["generateName"] = json!("*");
            meta["ownerReferences"] = json!("*");
            if let Some(l) = meta["labels"].as_object_mut() {
                l.insert("pod-template-hash".into(), json!("*"));
            }
            if let Some(m) = meta.as_object_mut() {
                m.remove("creationTimestamp");
            }
            let text = serde_json::to_string(v).unwrap_or_default();
            let text = regex_lite_replace(&text, "kube-api-access-", 5);
            *v = serde_json::from_str(&text).unwrap_or_default();
        }
        assert_eq!(a, b, "{mode}: the emulator and examples/admission/{mode}.json disagree");
    }
}

/// `text` with the `n` characters after each `prefix` replaced by `*`.
fn regex_lite_replace(text: &str, prefix: &str, n: usize) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i + prefix.len()]);
        out.push_str(&"*".repeat(n));
        rest = rest.get(i + prefix.len() + n..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

fn load_yaml(path: &Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("read"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Where the platform webhook sits relative to secretmode, and its reinvocation policy.
#[derive(Clone, Copy, Debug)]
enum Other {
    None,
    Before(Reinvocation),
    After(Reinvocation),
}

const OTHERS: [Other; 5] = [
    Other::None,
    Other::Before(Reinvocation::IfNeeded),
    Other::Before(Reinvocation::Never),
    Other::After(Reinvocation::IfNeeded),
    Other::After(Reinvocation::Never),
];

/// How the cluster around the pod is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Setup {
    /// None: automount as defaulted; Pod / ServiceAccount: turned off there.
    automount_off: Option<&'static str>,
    limit_range: bool,
    always_pull: bool,
}

/// The cluster that adds the most to every container, and every other combination.
fn setups() -> Vec<Setup> {
    let mut all = Vec::new();
    for automount_off in [None, Some("pod"), Some("serviceaccount")] {
        for limit_range in [true, false] {
            for always_pull in [true, false] {
                all.push(Setup { automount_off, limit_range, always_pull });
            }
        }
    }
    all
}

struct Scenario {
    label: String,
    mode: &'static str,
    /// Whether the stored pod goes to `kubernetes-validate`: one per mode, flavour and
    /// other-webhook position, in the busiest setup, the examples taking turns (the schema
    /// check costs ~30 ms of CPU per pod and version; the other checks run on every pod).
    validate: bool,
    workload: Value,
    flavour: Flavour,
    other: Other,
    setup: Setup,
    dry_run: bool,
}

/// The example's `secrets/` annotations turned into `mode`'s (its own mode: unchanged).
fn annotations_for(example: &Map<String, Value>, mode: &str, app: &str) -> Map<String, Value> {
    if example.get("secrets/mode").and_then(Value::as_str) == Some(mode) {
        return example.clone();
    }
    let items: Vec<String> =
        example.keys().filter_map(|k| k.strip_prefix("secrets/item.").map(str::to_string)).collect();
    let mut out: Map<String, Value> =
        example.iter().filter(|(k, _)| !k.starts_with("secrets/")).map(|(k, v)| (k.clone(), v.clone())).collect();
    out.insert("secrets/mode".into(), json!(mode));
    for item in &items {
        let value = match mode {
            "eso" | "csi" => item.clone(),
            _ => format!("{NS}/{app}#{item}"),
        };
        out.insert(format!("secrets/item.{item}"), json!(value));
    }
    match mode {
        "eso" => {
            out.insert("secrets/eso-secret".into(), json!(format!("{app}-secrets")));
        }
        "csi" => {
            out.insert("secrets/csi-class".into(), json!(format!("{app}-spc")));
        }
        "sidecar" => {
            out.insert("secrets/refresh-interval".into(), json!("1m"));
        }
        _ => {}
    }
    out
}

/// Every example (the Deployments, and the pods of the admission requests) in every mode
/// (sidecar in both flavours), as `kind` ("Deployment", "Job", "Pod", "AdmissionRequest"),
/// beside the platform webhook in each position, in the busiest cluster and in one other
/// setup each (rotating through all of them); with more annotations (`extra`: keys without
/// the prefix, and values) on every mode that reads them.
fn scenarios_with(kind: &str, extra: &[(&str, &str)]) -> Vec<Scenario> {
    let mut bases: Vec<(String, Value)> = Vec::new();
    for mode in ["eso", "csi", "init", "sidecar"] {
        if kind == "AdmissionRequest" {
            let review: Value = serde_json::from_slice(
                &std::fs::read(root().join(format!("examples/admission/{mode}.json"))).expect("read"),
            )
            .expect("json");
            bases.push((format!("admission/{mode}.json"), review["request"]["object"].clone()));
        } else {
            bases.push((
                format!("{mode}/deployment.yaml"),
                load_yaml(&root().join(format!("examples/{mode}/deployment.yaml"))),
            ));
        }
    }
    let all_setups = setups();
    let mut out = Vec::new();
    let mut n = 0;
    for (example, (file, base)) in bases.iter().enumerate() {
        let annotations_at =
            if kind == "AdmissionRequest" { "/metadata/annotations" } else { "/spec/template/metadata/annotations" };
        let example_annotations = base.pointer(annotations_at).and_then(Value::as_object).cloned().unwrap_or_default();
        let app = base
            .pointer("/metadata/name")
            .or(base.pointer("/metadata/generateName"))
            .and_then(Value::as_str)
            .unwrap_or("app")
            .trim_end_matches('-')
            .to_string();
        for (variant, (mode, flavour)) in [
            ("eso", Flavour::Native),
            ("csi", Flavour::Native),
            ("init", Flavour::Native),
            ("sidecar", Flavour::Native),
            ("sidecar", Flavour::Plain),
        ]
        .into_iter()
        .enumerate()
        {
            // on-change is denied in init (nothing changes after start).
            if extra.iter().any(|(k, _)| *k == "on-change") && mode == "init" {
                continue;
            }
            let mut workload = base.clone();
            if let Some(a) = workload.pointer_mut(annotations_at) {
                let mut annotations = annotations_for(&example_annotations, mode, &app);
                for (key, value) in extra {
                    annotations.insert(format!("secrets/{key}"), json!(value));
                }
                *a = Value::Object(annotations);
            }
            let workload = match kind {
                "Job" => controllers::as_job(&workload).expect("job"),
                "Pod" => controllers::as_pod(&workload).expect("pod"),
                _ => workload,
            };
            for (position, other) in OTHERS.into_iter().enumerate() {
                let busiest = all_setups[0];
                let rotating = all_setups[1 + n % (all_setups.len() - 1)];
                for (i, setup) in [busiest, rotating].into_iter().enumerate() {
                    let dry_run = kind == "Pod" && i == 1;
                    out.push(Scenario {
                        mode,
                        validate: i == 0 && (example + variant + position) % bases.len() == 0,
                        label: format!("{kind} {file} as {mode} ({flavour:?}) with {extra:?}, other webhook {other:?}, {setup:?}, dryRun {dry_run}"),
                        workload: workload.clone(),
                        flavour,
                        other,
                        setup,
                        dry_run,
                    });
                }
                n += 1;
            }
        }
    }
    out
}

/// One scenario through the chain and every end-of-chain check; the stored pod, or what
/// went wrong.
async fn run(s: &Scenario, secretmode_hooks: &BTreeMap<&'static str, Webhook>) -> Result<Value, String> {
    let (mut pod, requester) = if s.workload.pointer("/metadata/ownerReferences").is_some() {
        (s.workload.clone(), Requester::ReplicaSet)
    } else {
        controllers::pod_for(&s.workload)?
    };
    let mut cluster = Cluster::new(NS);
    match s.setup.automount_off {
        Some("pod") => pod["spec"]["automountServiceAccountToken"] = json!(false),
        Some(_) => {
            cluster.service_accounts.insert("default".into(), Some(false));
        }
        None => {}
    }
    if s.setup.limit_range {
        cluster.limit_range = Some(LimitRange::typical());
    }
    cluster.always_pull_images = s.setup.always_pull;
    let ours = secretmode_hooks[if s.flavour == Flavour::Plain { "plain" } else { "native" }].clone();
    cluster.webhooks = match s.other {
        Other::None => vec![ours],
        Other::Before(r) => vec![platform::webhook(r, true), ours],
        Other::After(r) => vec![ours, platform::webhook(r, true)],
    };
    let done = cluster.create(&pod, &requester, s.dry_run).await.map_err(|e| {
        format!(
            "rejected {} {}: {} [calls: {}]",
            e.status.code,
            e.status.reason,
            e.status.message,
            order(&e.calls).join(", ")
        )
    })?;

    let mut problems = checks::contract(&done.object, "secrets", "/var/run/secrets-cache");
    let input = if done.first_webhook_input.is_null() { &done.submitted } else { &done.first_webhook_input };
    problems.extend(checks::preserved(
        input,
        &done.object,
        &["/metadata/creationTimestamp", "/metadata/annotations/kubernetes.io~1limit-ranger"],
    ));
    for call in done.calls.iter().filter(|c| c.webhook == "pods.secretmode.io") {
        for w in call.response.as_ref().and_then(|r| r["response"]["warnings"].as_array()).into_iter().flatten() {
            if !done.warnings.iter().any(|shown| Some(shown.as_str()) == w.as_str()) {
                problems.push(format!("warning {w} is not shown as the webhook wrote it"));
            }
        }
    }
    for call in done.calls.iter().filter(|c| c.webhook == "pods.secretmode.io" && !c.dropped.is_empty()) {
        problems.push(format!("the API server drops fields secretmode wrote: {:?}", call.dropped));
    }
    // With the token automounted, the plugins change the agent secretmode added, so it must
    // have been called again: the reinvocation round really ran.
    let reinvoked = done.calls.iter().any(|c| c.webhook == "pods.secretmode.io" && c.round == 1);
    if matches!(s.mode, "init" | "sidecar") && s.setup.automount_off.is_none() && !reinvoked {
        problems.push("secretmode was not reinvoked".into());
    }
    if !done.calls.iter().any(|c| c.webhook == "pods.secretmode.io") {
        problems.push("secretmode was never called".into());
    }
    // One more full round: secretmode changes nothing, and neither does anything else, except
    // a Never webhook that ran before secretmode, which legitimately never saw the agent.
    match cluster.one_more_round(&done, &requester).await {
        Ok((changed, calls)) => {
            let changers: Vec<&str> = calls.iter().filter(|c| c.changed).map(|c| c.webhook.as_str()).collect();
            let exempt = matches!(s.other, Other::Before(Reinvocation::Never));
            if changers.contains(&"pods.secretmode.io") || (changed && !exempt) {
                problems.push(format!("one more round changed the pod (webhooks that changed it: {changers:?})"));
            }
        }
        Err(e) => problems.push(format!("one more round was rejected: {}", e.status.message)),
    }
    if problems.is_empty() {
        Ok(done.object)
    } else {
        Err(problems.join("; "))
    }
}

/// Runs every scenario of `kind`, then validates the chosen stored pods with
/// `kubernetes-validate --strict`; fails with a summary of what failed, grouped.
async fn run_all(kind: &str) {
    run_all_with(kind, &[]).await
}

/// [`run_all`] with more annotations on every mode that reads them ([`scenarios_with`]).
async fn run_all_with(kind: &str, extra: &[(&str, &str)]) {
    let hooks = BTreeMap::from([("native", secretmode(Flavour::Native)), ("plain", secretmode(Flavour::Plain))]);
    let scenarios = scenarios_with(kind, extra);
    let total = scenarios.len();
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stored: Vec<Value> = Vec::new();
    for s in &scenarios {
        match run(s, &hooks).await {
            Ok(pod) if s.validate => stored.push(pod),
            Ok(_) => {}
            Err(why) => failures.entry(group(&why)).or_default().push(format!("{}: {why}", s.label)),
        }
    }
    if !failures.is_empty() {
        let failed: usize = failures.values().map(Vec::len).sum();
        let mut report =
            format!("{failed} of {total} {kind} scenarios with {extra:?} failed the emulated admission chain:\n");
        for (_, cases) in failures.iter() {
            report.push_str(&format!("\n{} scenario(s), e.g.\n  {}\n", cases.len(), cases[0]));
        }
        panic!("{report}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let objects: Vec<(String, Value)> =
        stored.into_iter().enumerate().map(|(i, pod)| (format!("{kind}-{i}"), pod)).collect();
    assert!(!objects.is_empty());
    support::validate_objects(dir.path(), &objects);
}

/// A failure's message with the scenario-specific parts dropped, to group alike failures.
fn group(why: &str) -> String {
    let cut = why.split(" [calls").next().unwrap_or(why);
    cut.chars().filter(|c| !c.is_ascii_digit()).take(160).collect()
}

#[tokio::test]
async fn every_example_deployment_in_every_mode_passes_two_rounds() {
    run_all("Deployment").await;
}

#[tokio::test]
async fn every_example_as_a_job_in_every_mode_passes_two_rounds() {
    run_all("Job").await;
}

#[tokio::test]
async fn every_example_as_a_bare_pod_in_every_mode_passes_two_rounds_and_a_dry_run() {
    run_all("Pod").await;
}

#[tokio::test]
async fn every_example_admission_request_in_every_mode_passes_two_rounds() {
    run_all("AdmissionRequest").await;
}

/// Issue 24: values in env (the exec wrapper outside eso) and each on-change action (the
/// sidecar's spec; the watcher in eso and csi; a signal's shared process namespace and user),
/// in every mode that reads them, both sidecar flavours, beside the other webhook in every
/// position: admitted, reinvoked, stable, and schema-valid.
#[tokio::test]
async fn env_values_and_on_change_in_every_mode_pass_two_rounds() {
    // The platform webhook's proxy sets no command (its entrypoint is in its image) and runs
    // as another user, so the env-values and signal pods name their own container, as the
    // denials for such pods advise; a container added after secretmode is left unwrapped on
    // reinvocation (src/decide/inject/tests.rs).
    let extras: [&[(&str, &str)]; 4] = [
        &[("env-values", "true"), ("containers", "app")],
        &[("on-change", "http://127.0.0.1:8080/-/reload")],
        &[("on-change", "signal:HUP"), ("containers", "app")],
        &[("env-values", "true"), ("on-change", "PUT http://[::1]:8080/reload"), ("containers", "app")],
    ];
    for extra in extras {
        run_all_with("Deployment", extra).await;
    }
}

/// Issue 25: rendered files (a template with several lines, bundles of every item) in every
/// mode, with env-values and with on-change: the agent's spec in init and sidecar; the render
/// step, its volume and the watcher in eso and csi; admitted, reinvoked, stable, and
/// schema-valid.
#[tokio::test]
async fn rendered_files_in_every_mode_pass_two_rounds() {
    const TEMPLATE: &str = "# rendered by secretmode\n\tmode = static\nbraces = {{ \"{{\" }}\n";
    let extras: [&[(&str, &str)]; 3] = [
        &[("template.app.conf", TEMPLATE), ("bundle.app.env", "dotenv"), ("bundle.creds.json", "json")],
        &[("bundle.creds.yaml", "yaml"), ("env-values", "true"), ("containers", "app")],
        &[("bundle.app.properties", "properties"), ("on-change", "http://127.0.0.1:8080/-/reload")],
    ];
    for extra in extras {
        run_all_with("Deployment", extra).await;
    }
}
