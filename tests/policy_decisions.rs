//! Policy decisions end to end through `admit_pod` (the one place that decides) and the
//! AdmissionReview wire layer: each enforcement level, the tenant path boundary, default
//! modes, hand-built delivery, and malformed policy files.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secretmode::config::{Config, DEFAULT_CONFIG_YAML};
use secretmode::decide::{admit_pod, Decision, Outcome};
use secretmode::webhook::review;
use serde_json::{json, Value};
use support::review::Requester;

/// The built-in config with `policy` replaced by `policy_yaml` (indented under `policy:`).
fn config_with(policy_yaml: &str, failure_mode_warning: bool) -> Config {
    let base = DEFAULT_CONFIG_YAML.split("\nwarnings:").next().expect("built-in config has warnings");
    let text = format!("{base}\nwarnings:\n  failureMode: {failure_mode_warning}\npolicy:\n{policy_yaml}");
    Config::from_yaml(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

const RULES: &str = r#"
  rules:
    - name: payments-strict
      namespaces: [payments]
      allowedModes: [init, sidecar]
      allowedProviders: [vault]
      allowedPathPrefixes: ["prod/{namespace}"]
      maxStaleness: 30m
      minRefreshInterval: 1m
      maxRefreshInterval: 10m
      requireFallback: true
      allowEnvValues: false
      enforcement: enforce
    - name: team-warn
      namespaces: ["team-*"]
      allowedModes: [eso, sidecar]
      defaultMode: sidecar
      allowedPathPrefixes: ["apps/{namespace}"]
      allowSignals: true
      enforcement: warn
    - name: legacy-audit
      namespaces: [legacy, "old-?"]
      allowedModes: [eso]
      enforcement: audit
    - name: default
      namespaces: ["*"]
      defaultMode: init
      enforcement: enforce
"#;

fn config() -> Config {
    config_with(RULES, true)
}

fn pod(namespace: &str, annotations: Value) -> Value {
    support::pods::pod("p", namespace, annotations, support::pods::spec("app", "nginx"))
}

fn denial(d: &Decision) -> &str {
    match d {
        Decision::Deny { message, .. } => message,
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// (warnings, the value written to `secrets/injected`) of an admitted pod, after applying
/// the patch as the API server would (support::patch).
fn admitted(p: &Value, namespace: &str, config: &Config) -> (Vec<String>, Option<String>) {
    match admit_pod(p, namespace, config) {
        Decision::Allow { patch, warnings, .. } => {
            let out = support::patch::apply_ops(p, &patch);
            let note = out.pointer("/metadata/annotations/secrets~1injected").and_then(Value::as_str).map(String::from);
            (warnings, note)
        }
        d => panic!("expected allow, got {d:?}"),
    }
}

fn good_payments() -> Value {
    json!({
        "secrets/mode": "sidecar",
        "secrets/item.db": "prod/payments/db#password",
        "secrets/refresh-interval": "5m",
        "secrets/max-staleness": "20m",
        "secrets/fallback-secret": "payments-fallback",
    })
}

#[test]
fn enforce_allows_a_conforming_pod() {
    let (warnings, note) = admitted(&pod("payments", good_payments()), "payments", &config());
    assert_eq!(warnings, vec!["secretmode sidecar: new pods start from the fallback Secret if the provider is down"]);
    assert_eq!(note.as_deref(), Some("mode=sidecar,items=1,provider=vault,fallback=true"));
}

#[test]
fn enforce_denial_names_rule_annotation_and_what_is_allowed() {
    let mut a = good_payments();
    a["secrets/mode"] = json!("csi");
    a["secrets/csi-class"] = json!("payments-db");
    a["secrets/item.db"] = json!("db");
    for k in ["secrets/refresh-interval", "secrets/max-staleness", "secrets/fallback-secret"] {
        a.as_object_mut().unwrap().remove(k);
    }
    let d = admit_pod(&pod("payments", a), "payments", &config());
    let m = denial(&d);
    assert!(m.contains("\"payments-strict\""), "{m}");
    assert!(m.contains("secrets/mode: csi is not allowed here; allowed: init, sidecar"), "{m}");

    // Every other knob of the rule, each named with its annotation and its bound.
    let cases: [(&str, Value, &str); 7] = [
        (
            "secrets/env-values",
            json!("true"),
            "secrets/env-values: values in env are not allowed here (allowEnvValues: false",
        ),
        (
            "secrets/on-change",
            json!("signal:HUP"),
            "secrets/on-change: a signal action shares the pod's process namespace",
        ),
        ("secrets/provider", json!("aws"), "secrets/provider: aws is not allowed here; allowed: vault"),
        ("secrets/max-staleness", json!("2h"), "secrets/max-staleness: 2h is above the maximum 30m"),
        ("secrets/refresh-interval", json!("30s"), "secrets/refresh-interval: 30s is below the minimum 1m"),
        ("secrets/refresh-interval", json!("15m"), "secrets/refresh-interval: 15m is above the maximum 10m"),
        (
            "secrets/item.db",
            json!("prod/billing/db#password"),
            "secrets/item.db: path prod/billing/db is not under prod/payments",
        ),
    ];
    for (key, value, want) in cases {
        let mut a = good_payments();
        a[key] = value;
        if key == "secrets/refresh-interval" {
            a["secrets/max-staleness"] = json!("20m");
        }
        let d = admit_pod(&pod("payments", a), "payments", &config());
        let m = denial(&d);
        assert!(m.contains(want) && m.contains("payments-strict"), "{key}: {m}");
    }
    let mut a = good_payments();
    a.as_object_mut().unwrap().remove("secrets/fallback-secret");
    let d = admit_pod(&pod("payments", a), "payments", &config());
    assert!(denial(&d).contains("secrets/fallback-secret: mode sidecar must name a fallback Secret"), "{d:?}");
}

#[test]
fn warn_allows_with_short_kubectl_warnings_and_records_them() {
    let a = json!({"secrets/mode": "init", "secrets/item.token": "apps/other-team/api#token"});
    let (warnings, note) = admitted(&pod("team-a", a), "team-a", &config());
    assert_eq!(
        warnings,
        vec![
            "secretmode policy team-warn: secrets/mode: init is not allowed here; allowed: eso, sidecar",
            "secretmode policy team-warn: secrets/item.token: path apps/other-team/api is not under apps/team-a",
            "secretmode init: new pods cannot start while the provider is down; values change only on restart",
        ]
    );
    for w in &warnings {
        assert!(w.len() < 120, "{} chars: {w}", w.len());
    }
    assert_eq!(
        note.as_deref(),
        Some("mode=init,items=1,provider=vault,policy=warn:team-warn:secrets/mode+secrets/item.token")
    );
}

/// A pod with more policy violations than the API server keeps warnings for: the first ones
/// arrive whole, each within 256 characters, all within 4,096, and the last warning says how
/// many were left out (the API server would otherwise cut every one of them and drop the rest).
#[test]
fn many_warn_level_violations_still_show_the_first_ones_whole() {
    let mut a = json!({"secrets/mode": "init"});
    let long = "p".repeat(150);
    for i in 0..64 {
        a[format!("secrets/item.item-{i:02}")] = json!(format!("apps/other-team/{long}-{i:02}#k"));
    }
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "team-a",
        "operation": "CREATE", "object": pod("team-a", a.clone())}});
    let out = review::review(&serde_json::to_vec(&review).unwrap(), &config()).unwrap();
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    let warnings: Vec<String> = serde_json::from_value(body["response"]["warnings"].clone()).unwrap();
    assert_eq!(warnings, admitted(&pod("team-a", a), "team-a", &config()).0, "the wire carries the decision's list");
    assert_eq!(
        warnings[0],
        "secretmode policy team-warn: secrets/mode: init is not allowed here; allowed: eso, sidecar"
    );
    let first_item = format!(
        "secretmode policy team-warn: secrets/item.item-00: path apps/other-team/{long}-00 is not under apps/team-a"
    );
    assert_eq!(warnings[1], first_item, "whole, though longer than 120");
    assert!(warnings.iter().all(|w| w.chars().count() <= 256), "{warnings:?}");
    assert!(warnings.iter().map(|w| w.chars().count()).sum::<usize>() <= 4096);
    let last = warnings.last().unwrap();
    let shown = warnings.len() - 1;
    // 64 item violations, the mode violation and the failure-mode warning.
    assert_eq!(last, &format!("secretmode: {} more warnings not shown (the API server keeps 4096 characters); the webhook's log lists every policy violation", 66 - shown));
}

#[test]
fn audit_allows_silently_and_records_in_the_annotation() {
    let a = json!({"secrets/mode": "csi", "secrets/csi-class": "legacy-db", "secrets/item.db": "db"});
    let (warnings, note) = admitted(&pod("old-1", a), "old-1", &config());
    assert_eq!(warnings, vec!["secretmode csi: new pods cannot start while the provider is down"]);
    assert_eq!(note.as_deref(), Some("mode=csi,items=1,policy=audit:legacy-audit:secrets/mode"));
}

#[test]
fn failure_mode_warning_can_be_switched_off() {
    let config = config_with(RULES, false);
    let (warnings, _) = admitted(&pod("payments", good_payments()), "payments", &config);
    assert!(warnings.is_empty(), "{warnings:?}");
    // Policy warnings still come through.
    let a = json!({"secrets/mode": "init", "secrets/item.token": "apps/team-a/api#token"});
    let (warnings, _) = admitted(&pod("team-a", a), "team-a", &config);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

#[test]
fn every_mode_states_its_failure_mode_in_one_short_warning() {
    let config = config_with("  rules: []\n", true);
    let cases = [
        (json!({"secrets/mode": "eso", "secrets/eso-secret": "s", "secrets/item.a": "a"}), "secretmode eso: "),
        (
            json!({"secrets/mode": "csi", "secrets/csi-class": "c", "secrets/item.a": "a"}),
            "secretmode csi: new pods cannot start while the provider is down",
        ),
        (json!({"secrets/mode": "init", "secrets/item.a": "p/a#k"}), "secretmode init: "),
        (json!({"secrets/mode": "sidecar", "secrets/item.a": "p/a#k"}), "secretmode sidecar: "),
    ];
    for (a, want) in cases {
        let (warnings, _) = admitted(&pod("any", a), "any", &config);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with(want) && warnings[0].len() < 120, "{warnings:?}");
    }
}

#[test]
fn default_mode_comes_from_the_namespace_rule() {
    let items = json!({"secrets/item.token": "apps/team-a/api#token"});
    let (warnings, note) = admitted(&pod("team-a", items.clone()), "team-a", &config());
    assert_eq!(note.as_deref(), Some("mode=sidecar,items=1,provider=vault,mode-from=policy"));
    assert!(warnings[0].starts_with("secretmode sidecar:"), "{warnings:?}");
    // Falls through to the catch-all rule's default.
    let (_, note) = admitted(&pod("elsewhere", items.clone()), "elsewhere", &config());
    assert_eq!(note.as_deref(), Some("mode=init,items=1,provider=vault,mode-from=policy"));
    // A namespace whose rule has no default: denied, asking for a mode.
    let d = admit_pod(&pod("payments", items), "payments", &config());
    let m = denial(&d);
    assert!(m.contains("secrets/mode") && m.contains("eso, csi, init, sidecar"), "{m}");
}

#[test]
fn tenant_path_boundary_holds_against_path_tricks() {
    let config = config();
    let with_item = |v: &str| {
        let mut a = good_payments();
        a["secrets/item.db"] = json!(v);
        pod("payments", a)
    };
    for ok in ["prod/payments/db#password", "prod/payments/team/db#password", "prod/payments#password"] {
        admitted(&with_item(ok), "payments", &config);
    }
    let tricks = [
        "prod/payments/../billing/db#password",
        "prod/payments/./../billing#password",
        "prod/payments/..#password",
        "prod//payments/db#password",
        "prod/payments//db#password",
        "prod/payments%2F..%2Fbilling/db#password",
        "prod/%70ayments/db#password",
        "prod/payments%2e%2e/db#password",
        "prod/payments/db/#password",
        "prod/payments/#password",
        "/prod/payments/db#password",
        "prod/payments-evil/db#password",
        "prod/paymentsdb#password",
        "prod/billing/db#password",
        "prod#password",
        "Prod/payments/db#password",
        "prod/payments\\..\\billing#password",
    ];
    for trick in tricks {
        let d = admit_pod(&with_item(trick), "payments", &config);
        let m = denial(&d);
        assert!(m.contains("secrets/item.db"), "{trick}: {m}");
    }
    // {namespace} is the pod's namespace: a look-alike namespace does not get the prefix.
    let mut a = good_payments();
    a["secrets/item.db"] = json!("prod/payments/db#password");
    let policy = RULES.replace("namespaces: [payments]", "namespaces: [\"payments*\"]");
    let d = admit_pod(&pod("payments-evil", a), "payments-evil", &config_with(&policy, true));
    assert!(denial(&d).contains("is not under prod/payments-evil"), "{d:?}");
}

#[test]
fn hand_built_csi_volume_is_judged_by_the_same_policy() {
    let config = config();
    let hand_built = |namespace: &str, attributes: Value| {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {
                "containers": [{"name": "app", "image": "nginx",
                    "volumeMounts": [{"name": "creds", "mountPath": "/creds", "readOnly": true}]}],
                "volumes": [{"name": "creds", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true,
                    "volumeAttributes": attributes}}],
            },
        })
    };
    // Extra attributes override the SecretProviderClass: denied under enforce, by field.
    let p = hand_built("elsewhere", json!({"secretProviderClass": "db", "objects": "- objectName: other"}));
    let d = admit_pod(&p, "elsewhere", &config);
    let m = denial(&d);
    assert!(m.contains("\"default\"") && m.contains("spec.volumes[creds].csi.volumeAttributes: objects"), "{m}");
    // Only the class: fine where csi is allowed...
    let p = hand_built("elsewhere", json!({"secretProviderClass": "db"}));
    assert!(matches!(admit_pod(&p, "elsewhere", &config), Decision::Allow { outcome: Outcome::Skipped, .. }));
    // ...but mode csi by hand is still mode csi where it is forbidden.
    let p = hand_built("payments", json!({"secretProviderClass": "db"}));
    let d = admit_pod(&p, "payments", &config);
    assert!(denial(&d).contains("spec.volumes[creds]: a secrets-store CSI volume is mode csi, not allowed here"));
    // warn: allowed with the warning, no patch on a pod that is not ours.
    let p = hand_built("team-b", json!({"secretProviderClass": "db", "roleName": "admin"}));
    match admit_pod(&p, "team-b", &config) {
        Decision::Allow { patch, warnings, .. } => {
            assert!(patch.is_empty());
            assert_eq!(warnings.len(), 2, "{warnings:?}");
            assert!(warnings
                .iter()
                .all(|w| w.chars().count() <= 256 && w.starts_with("secretmode policy team-warn: ")));
            // Whole: a warning is no longer cut at 120 characters, only at the API server's 256.
            assert!(
                warnings.iter().any(|w| w.ends_with("is mode csi, not allowed here; allowed: eso, sidecar")),
                "{warnings:?}"
            );
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn pasted_injection_with_extra_csi_attributes_is_denied() {
    // A pod that pastes the webhook's own volume plus an override is not "already injected".
    let p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "elsewhere", "annotations": {
            "secrets/mode": "csi", "secrets/csi-class": "db", "secrets/item.password": "password"}},
        "spec": {
            "containers": [{"name": "app", "image": "nginx"}],
            "volumes": [{"name": "secretmode-secrets", "csi": {"driver": "secrets-store.csi.k8s.io",
                "readOnly": true, "volumeAttributes": {"secretProviderClass": "db", "vaultAddress": "https://evil"}}}],
        },
    });
    let d = admit_pod(&p, "elsewhere", &config());
    assert!(denial(&d).contains("spec.volumes[secretmode-secrets].csi.volumeAttributes: vaultAddress"), "{d:?}");
}

#[test]
fn reserved_names_without_annotations_are_denied() {
    let p = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"initContainers": [{"name": "secretmode-init", "image": "evil"}],
                 "containers": [{"name": "app", "image": "nginx"}]},
    });
    let d = admit_pod(&p, "elsewhere", &config());
    assert!(denial(&d).contains("secretmode-init"), "{d:?}");
}

#[test]
fn decided_from_pod_and_namespace_not_requester_or_status_annotation() {
    let config = config();
    let mut a = json!({"secrets/mode": "csi", "secrets/csi-class": "c", "secrets/item.a": "a"});
    // A hand-written status annotation claiming injection and a clean policy changes nothing.
    a["secrets/injected"] = json!("mode=init,items=1,provider=vault");
    let p = pod("payments", a);
    let mut answers = Vec::new();
    for user in ["system:serviceaccount:kube-system:replicaset-controller", "system:admin", "alice"] {
        let review = support::review::create(&p, "payments", &Requester::User(user.to_string()), false);
        let out = review::review(&serde_json::to_vec(&review).unwrap(), &config).unwrap();
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(body["response"]["allowed"], json!(false), "{body}");
        answers.push(body["response"]["status"]["message"].clone());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert!(answers[0].as_str().unwrap().contains("payments-strict"));
}

#[test]
fn malformed_policy_fails_with_the_field_named() {
    let cases = [
        ("  rules:\n    - name: a\n      namespaces: [x]\n      allowedMode: [init]\n", "allowedMode"),
        ("  rules:\n    - name: a\n      namespaces: [x]\n      allowedModes: [vault]\n", "allowedModes"),
        ("  rules:\n    - name: a\n      namespaces: [x]\n      enforcement: block\n", "enforcement"),
        ("  rules:\n    - name: a\n      namespaces: [x]\n      maxStaleness: 5 minutes\n", "maxStaleness"),
        (
            "  rules:\n    - name: a\n      namespaces: [x]\n      allowedModes: [init]\n      defaultMode: csi\n",
            "policy.rules[0].defaultMode",
        ),
        ("  rules:\n    - name: a\n      namespaces: [x]\n      allowedProviders: [gcp]\n", "policy.rules[0].allowedProviders"),
        (
            "  rules:\n    - name: a\n      namespaces: [x]\n      allowedPathPrefixes: [\"prod/../x\"]\n",
            "policy.rules[0].allowedPathPrefixes",
        ),
        ("  rules:\n    - name: a\n      namespaces: [\"Team A\"]\n", "policy.rules[0].namespaces"),
        ("  rules:\n    - name: a\n      namespaces: [x]\n    - name: a\n      namespaces: [y]\n", "policy.rules[1].name"),
        ("  rules:\n    - name: a\n      namespaces: [\"*\"]\n    - name: b\n      namespaces: [y]\n", "policy.rules[1].namespaces"),
        (
            "  rules:\n    - name: a\n      namespaces: [x]\n      minRefreshInterval: 1h\n      maxRefreshInterval: 1m\n",
            "policy.rules[0].minRefreshInterval",
        ),
        ("  rules:\n    - name: a\n      namespaces: []\n", "policy.rules[0].namespaces"),
    ];
    let base = DEFAULT_CONFIG_YAML.split("\npolicy:").next().unwrap();
    for (policy, field) in cases {
        let text = format!("{base}\npolicy:\n{policy}");
        let e = Config::from_yaml(&text, "bad.yaml").unwrap_err().to_string();
        assert!(e.contains(field), "want {field} in: {e}");
    }
}

#[test]
fn malformed_policy_fails_webhook_start_up_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let base = DEFAULT_CONFIG_YAML.split("\npolicy:").next().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        format!("{base}\npolicy:\n  rules:\n    - name: a\n      namespaces: [x]\n      allowedModes: []\n"),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_secretmode");
    let mut serve = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // A bad policy must stop start-up; never hang the suite if it does not.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            serve.kill().unwrap();
            panic!("serve kept running with a malformed policy");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    serve.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success() && err.contains("policy.rules[0].allowedModes"), "{err}");
    let manifests = dir.path().join("m.yaml");
    std::fs::write(&manifests, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").unwrap();
    let audit = Command::new(bin).args(["audit", "--config"]).arg(&path).arg(&manifests).output().unwrap();
    let err = String::from_utf8_lossy(&audit.stderr);
    assert_eq!(audit.status.code(), Some(2), "{err}");
    assert!(err.contains("policy.rules[0].allowedModes"), "{err}");
}

/// Annotations take durations as Go writes them (`1.5m`, `0.25h`, `1h0m0s`), are judged by
/// value against the policy's bounds, and a bad one is named with the fix.
#[test]
fn annotation_durations_are_go_durations() {
    let with = |refresh: &str, staleness: &str| {
        let mut a = good_payments();
        a["secrets/refresh-interval"] = json!(refresh);
        a["secrets/max-staleness"] = json!(staleness);
        admit_pod(&pod("payments", a), "payments", &config())
    };
    for (refresh, staleness) in [("1.5m", "0.25h"), ("5m0s", "0h20m0s"), ("90s", "1200000ms")] {
        let d = with(refresh, staleness);
        assert!(matches!(d, Decision::Allow { .. }), "{refresh} {staleness}: {d:?}");
    }
    // 10.5m is above the rule's 10m: the denial writes it back as the flags take it.
    let d = with("10.5m", "20m");
    assert!(denial(&d).contains("10m30s is above the maximum 10m"), "{}", denial(&d));
    for (bad, says) in [("5", "without a unit"), ("-5m", "negative"), ("5d", "unknown unit \"d\""), ("0s", "zero")] {
        let message = denial(&with(bad, "20m")).to_string();
        assert!(message.contains("refresh-interval") && message.contains(says), "{bad}: {message}");
        assert!(message.contains("fix:") && !message.contains("missing unit"), "{bad}: {message}");
    }
}

/// With a non-default `annotationPrefix`, every denial, fix, kubectl warning, policy log line,
/// `<prefix>/injected` note and audit finding names annotations with that prefix: none says
/// `secrets/` (outside a path such as `/var/run/secrets/`), so a user is never sent to an
/// annotation the webhook does not read.
#[test]
fn messages_name_annotations_with_the_configured_prefix() {
    const P: &str = "secrets.acme.io";
    let base = config_with(RULES, true);
    let text = format!("{}\npolicy:\n{RULES}", DEFAULT_CONFIG_YAML.split("\npolicy:").next().unwrap())
        .replace("annotationPrefix: secrets\n", &format!("annotationPrefix: {P}\n"));
    let config = Config::from_yaml(&text, "prefix.yaml").unwrap();
    assert_eq!(config.annotation_prefix, P);
    assert_eq!(config.policy, base.policy);
    // `secrets/` anywhere but after a `/` (a path like /var/run/secrets/secretmode).
    let leaks = |text: &str| text.match_indices("secrets/").any(|(i, _)| !text[..i].ends_with('/'));
    let a = |pairs: &[(&str, &str)]| -> Value {
        pairs
            .iter()
            .map(|(k, v)| (if k.contains('/') { k.to_string() } else { format!("{P}/{k}") }, json!(v)))
            .collect()
    };
    let app = || json!({"containers": [{"name": "app", "image": "nginx"}]});
    let with_init = json!({"initContainers": [{"name": "migrate", "image": "m"}], "containers": [{"name": "app", "image": "nginx"}]});
    let mounts_cache = json!({"containers": [{"name": "app", "image": "nginx",
        "volumeMounts": [{"name": "cache", "mountPath": "/var/run/secrets-cache/x"}]}], "volumes": [{"name": "cache", "emptyDir": {}}]});
    let reserved =
        json!({"containers": [{"name": "app", "image": "nginx"}, {"name": "secretmode-helper", "image": "x"}]});
    let non_root_eso =
        json!({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "app", "image": "nginx"}]});
    let item = ("item.db", "apps/x/db#password");
    let run_as_1000 = json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
        "containers": [{"name": "app", "image": "nginx", "command": ["nginx", "-g", "daemon off;"]}]});
    let denials: Vec<(&str, Value, Value)> = vec![
        ("elsewhere", a(&[("mode", "vault"), item]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("imagee", "x")]), app()),
        ("elsewhere", a(&[("mode", "init"), ("item.Db_Password", "a/b#c")]), app()),
        ("elsewhere", a(&[("mode", "init"), ("item.db", "")]), app()),
        ("elsewhere", a(&[("mode", "init")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("refresh-interval", "1m")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("max-staleness", "1m")]), app()),
        ("elsewhere", a(&[("mode", "sidecar"), item, ("refresh-interval", "1.5")]), app()),
        ("elsewhere", a(&[("mode", "sidecar"), item, ("refresh-interval", "1s")]), app()),
        ("elsewhere", a(&[("mode", "eso"), ("item.db", "db")]), app()),
        ("elsewhere", a(&[("mode", "csi"), ("item.db", "db")]), app()),
        ("elsewhere", a(&[("mode", "csi"), ("csi-class", "c"), ("item.db", "db"), ("fallback-secret", "f")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("provider", "gcp")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("mount-path", "/etc")]), app()),
        ("elsewhere", a(&[("mode", "init"), item]), mounts_cache),
        ("elsewhere", a(&[("mode", "init"), item, ("containers", "web")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("containers", "app,migrate")]), with_init.clone()),
        ("elsewhere", a(&[("mode", "init"), item]), reserved.clone()),
        ("elsewhere", json!({}), reserved),
        ("elsewhere", a(&[("mode", "init"), item, ("on-change", "signal:HUP")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("on-change", "http://10.0.0.1:80/")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("env-values", "true")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("template.dsn", "pg://{{ db | nope }}")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("template.dsn", "pg://{{ user }}:{{ db }}")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("bundle.creds.json", "json:db,user")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("bundle.db", "dotenv")]), app()),
        ("elsewhere", a(&[("mode", "init"), item, ("bundle.x", "toml")]), app()),
        ("elsewhere", a(&[("mode", "sidecar"), item, ("on-change", "signal:HUP")]), run_as_1000.clone()),
        ("team-a", a(&[("mode", "sidecar"), ("item.db", "apps/team-a/db#p"), ("on-change", "signal:HUP")]), app()),
        (
            "elsewhere",
            a(&[("mode", "csi"), ("csi-class", "c"), ("item.db", "db"), ("on-change", "http://127.0.0.1:1/")]),
            json!({"hostNetwork": true, "containers": [{"name": "app", "image": "nginx"}]}),
        ),
        ("payments", a(&[("item.db", "prod/payments/db#password")]), app()),
        ("payments", a(&[("mode", "csi"), ("csi-class", "c"), ("item.db", "db")]), app()),
        (
            "payments",
            a(&[("mode", "sidecar"), ("item.db", "prod/payments/db#password"), ("refresh-interval", "30s")]),
            app(),
        ),
    ];
    let mut logs = Vec::new();
    let mut seen = 0;
    for (namespace, annotations, spec) in denials {
        let p = pod(namespace, annotations.clone());
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": p["metadata"], "spec": spec});
        let (decision, log) = logged(|| admit_pod(&p, namespace, &config));
        let m = denial(&decision);
        assert!(!leaks(m) && !leaks(&log), "{annotations}:\n{m}\n{log}");
        assert!(m.contains(&format!("{P}/")) && m.contains("fix:"), "{annotations}: {m}");
        logs.push(log);
        seen += 1;
    }
    assert_eq!(seen, 33);
    assert!(logs.iter().any(|l| l.contains("policy violation") && l.contains(&format!("{P}/mode"))), "{logs:?}");

    // Warnings: warn-level policy, failure mode, readability, mirror pods; and the note.
    let allowed: Vec<(&str, Value, Value)> = vec![
        ("team-a", a(&[("mode", "init"), ("item.token", "apps/other/api#token")]), app()),
        ("team-a", a(&[("mode", "eso"), ("eso-secret", "s"), ("item.db", "db")]), non_root_eso),
        ("old-1", a(&[("mode", "csi"), ("csi-class", "c"), ("item.db", "db")]), app()),
        ("team-a", a(&[("mode", "init"), item, ("kubernetes.io/config.mirror", "x")]), app()),
        (
            "team-a",
            a(&[
                ("mode", "sidecar"),
                ("item.db", "apps/team-a/db#p"),
                ("env-values", "true"),
                ("on-change", "signal:HUP"),
            ]),
            run_as_1000,
        ),
    ];
    let mut warned = 0;
    for (namespace, annotations, spec) in allowed {
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": pod(namespace, annotations.clone())["metadata"], "spec": spec});
        let (decision, log) = logged(|| admit_pod(&p, namespace, &config));
        let Decision::Allow { patch, warnings, .. } = decision else { panic!("{annotations}: {decision:?}") };
        for w in &warnings {
            assert!(!leaks(w), "{annotations}: {w}");
        }
        assert!(!leaks(&log), "{log}");
        let out = support::patch::apply_ops(&p, &patch);
        let note = out["metadata"]["annotations"].as_object().unwrap();
        assert!(note.keys().all(|k| !leaks(k)), "{note:?}");
        warned += warnings.iter().filter(|w| w.contains(&format!("{P}/"))).count();
    }
    // The warn-level violations (mode and path), the mirror pod's note, and the env-values
    // and signal warnings name the prefix.
    assert_eq!(warned, 5);

    // The audit judges with the same code and words its own findings with the prefix too.
    let workload = |name: &str, namespace: &str, annotations: Value, spec: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
               "spec": {"selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}, "annotations": annotations}, "spec": spec}}})
    };
    let csi_volume = json!({"containers": [{"name": "app", "image": "nginx", "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
        "volumes": [{"name": "s", "csi": {"driver": "secrets-store.csi.k8s.io", "volumeAttributes": {"secretProviderClass": "c"}}}]});
    let objects: Vec<secretmode::commands::audit::Object> = [
        workload("bad-mode", "elsewhere", a(&[("mode", "vault"), item]), app()),
        workload("hand-built", "elsewhere", json!({}), csi_volume),
        workload("denied", "payments", a(&[("mode", "csi"), ("csi-class", "c"), ("item.db", "db")]), app()),
        workload("init-named", "elsewhere", a(&[("mode", "init"), item, ("containers", "migrate")]), with_init),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, value)| secretmode::commands::audit::Object { file: "w.yaml".into(), line: i + 1, value })
    .collect();
    let report = secretmode::commands::audit::analyze_manifests(&objects, "default", &config).unwrap();
    let json = serde_json::to_string(&report).unwrap();
    assert!(!leaks(&json), "{json}");
    assert!(report.findings.iter().filter(|f| f.message.contains(&format!("{P}/"))).count() >= 4, "{json}");
}

/// Runs `f` with tracing's text output captured, as `serve` would log it.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let sink = buffer.clone();
    let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || sink.clone()).finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buffer.0.lock().unwrap()).to_string();
    (out, text)
}

const BUDGET_RULES: &str = r#"
  rules:
    - name: tight
      namespaces: [tight]
      maxProviderRequestsPerSecond: 0.05
      enforcement: warn
    - name: strict
      namespaces: [strict]
      maxProviderRequestsPerSecond: 0.05
      enforcement: enforce
    - name: quiet
      namespaces: [quiet]
      maxProviderRequestsPerSecond: 0.05
      enforcement: audit
    - name: default
      namespaces: ["*"]
      enforcement: warn
"#;

/// A sidecar reading `paths` distinct paths every `refresh`.
fn sidecar(namespace: &str, paths: usize, refresh: &str) -> Value {
    let mut a = json!({"secrets/mode": "sidecar", "secrets/refresh-interval": refresh});
    for i in 0..paths {
        a[format!("secrets/item.i{i}")] = json!(format!("apps/p{i}#k"));
    }
    // Two items from one path cost one read.
    a["secrets/item.again"] = json!("apps/p0#other");
    pod(namespace, a)
}

fn budget_warnings(d: &Decision) -> Vec<String> {
    match d {
        Decision::Allow { warnings, .. } => {
            warnings.iter().filter(|w| w.contains("maxProviderRequestsPerSecond")).cloned().collect()
        }
        other => panic!("expected allow, got {other:?}"),
    }
}

/// The webhook sees one pod: it warns (never denies, whatever the enforcement) when that pod
/// alone takes more than its namespace's budget, naming the rule, the rate, the budget and the fix.
#[test]
fn a_sidecar_alone_over_its_namespace_budget_is_warned_about() {
    let config = config_with(BUDGET_RULES, false);
    // 2 paths every 30s less 10 %: 2/27 = 0.0741/s > 0.05/s.
    for namespace in ["tight", "strict"] {
        let d = admit_pod(&sidecar(namespace, 2, "30s"), namespace, &config);
        let w = budget_warnings(&d);
        assert_eq!(w.len(), 1, "{namespace}: {d:?}");
        let rule = if namespace == "tight" { "tight" } else { "strict" };
        assert_eq!(
            w[0],
            format!("secretmode policy {rule}: this pod alone takes 0.0741/s from vault (2 paths every 27s at worst), over the namespace's maxProviderRequestsPerSecond 0.05/s; fix: a longer secrets/refresh-interval or fewer paths")
        );
        assert!(w[0].chars().count() <= 256, "kept whole by the API server");
    }
    // Under the budget: 2 paths every 1m (2/54 = 0.037/s); one path every 30s (0.037/s).
    assert!(budget_warnings(&admit_pod(&sidecar("tight", 2, "1m"), "tight", &config)).is_empty());
    assert!(budget_warnings(&admit_pod(&sidecar("tight", 1, "30s"), "tight", &config)).is_empty());
    // Audit enforcement: no kubectl warning (secretmode audit reports it, SM016).
    assert!(budget_warnings(&admit_pod(&sidecar("quiet", 2, "30s"), "quiet", &config)).is_empty());
    // No budget in the namespace's rule: nothing.
    assert!(budget_warnings(&admit_pod(&sidecar("other", 9, "30s"), "other", &config)).is_empty());
    // Modes whose rate the pod does not set: not judged by the webhook.
    let eso = pod("tight", json!({"secrets/mode": "eso", "secrets/eso-secret": "s", "secrets/item.a": "a"}));
    assert!(budget_warnings(&admit_pod(&eso, "tight", &config)).is_empty());
    let init =
        pod("tight", json!({"secrets/mode": "init", "secrets/item.a": "apps/a#k", "secrets/item.b": "apps/b#k"}));
    assert!(budget_warnings(&admit_pod(&init, "tight", &config)).is_empty());
}

/// The same warning through the AdmissionReview wire layer the webhook serves.
#[test]
fn the_budget_warning_reaches_kubectl_through_the_admission_answer() {
    let config = config_with(BUDGET_RULES, false);
    let review =
        support::review::create(&sidecar("strict", 3, "30s"), "strict", &Requester::User("alice".into()), false);
    let out = review::review(&serde_json::to_vec(&review).unwrap(), &config).unwrap();
    let body: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(body["response"]["allowed"], json!(true), "{body}");
    let warnings = body["response"]["warnings"].as_array().expect("warnings");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .starts_with("secretmode policy strict: this pod alone takes 0.111/s from vault (3 paths")),
        "{warnings:?}"
    );
}
