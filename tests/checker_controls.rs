//! Negative controls (issue 21, item 7): every external checker the tests trust rejects a
//! known-bad input, through the same function the tests call it with, beside a known-good
//! input it must accept. A checker that stopped checking (a renamed report key, a `--quiet`
//! flag, a grep that no longer matches, a tool that no longer runs) fails here instead of
//! passing everything.
//!
//! - kubernetes-validate (`support::try_kubernetes_validate`): an unknown field, a wrong type,
//!   an API version with no schema, a file with no object;
//! - Helm's linter (`checkers::helm_lint`): values the schema refuses, a template that does not
//!   parse, one that fails to execute, one that renders broken YAML;
//! - the CEL engine and the API server's webhook validation (`checkers::webhook_config`): an
//!   expression that does not compile, one that is not `bool`, a variable the API server does
//!   not declare, a condition name too long, and the evaluation results true, false and error;
//! - the custom-resource check (`checkers::crd_check`): an ExternalSecret and a
//!   SecretProviderClass each with a wrong field, a wrong type, a missing required field, a
//!   kind it has no schema for;
//! - `scripts/build-static --check`: a dynamically linked binary; `--check-exec` (the exec
//!   wrapper's checks): a wrapper too large, one that does not set the value, one that does
//!   not install itself, beside a minimal working one.

mod checkers;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn write(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(value).unwrap()).unwrap();
    path
}

fn pod(container: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "demo"},
           "spec": {"containers": [container]}})
}

#[test]
fn kubernetes_validate_rejects_unknown_fields_wrong_types_and_unknown_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", &pod(json!({"name": "app", "image": "busybox:1.37"})));
    let passed = support::try_kubernetes_validate(std::slice::from_ref(&good)).expect("a valid pod passes");
    assert_eq!(passed, support::KUBE_VERSIONS.len() as u64, "one pass per version");

    let bad = [
        (
            "unknown-field.yaml",
            pod(json!({"name": "app", "image": "busybox:1.37", "imagePullPolicyy": "Always"})),
            "imagePullPolicyy",
        ),
        (
            "wrong-type.yaml",
            pod(json!({"name": "app", "image": "busybox:1.37", "ports": [{"containerPort": "eighty"}]})),
            "eighty",
        ),
        (
            "no-schema.yaml",
            json!({"apiVersion": "apps/v9", "kind": "Deployment", "metadata": {"name": "d"}}),
            "apps/v9",
        ),
    ];
    for (name, object, named) in bad {
        let file = write(dir.path(), name, &object);
        let err = support::try_kubernetes_validate(&[good.clone(), file]).expect_err(name);
        assert!(err.contains(named), "{name}: the problem does not name {named}: {err}");
    }
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing\n").unwrap();
    assert!(support::try_kubernetes_validate(&[empty]).is_err(), "no object at all is not a pass");
}

/// A copy of the chart with one extra template.
fn chart_with(template: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("secretmode");
    copy_dir(&root().join("charts/secretmode"), &copy);
    std::fs::write(copy.join("templates/broken.yaml"), template).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn helm_lint_rejects_values_against_the_schema_and_broken_templates() {
    let chart = root().join("charts/secretmode");
    checkers::helm_lint(&chart, "-", "secretmode").expect("the chart with its defaults lints clean");

    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.json");
    std::fs::write(&values, r#"{"replicaCount": 0}"#).unwrap();
    let problems = checkers::helm_lint(&chart, values.to_str().unwrap(), "secretmode").expect_err("replicaCount 0");
    assert!(problems.iter().any(|p| p.contains("replicaCount")), "{problems:#?}");

    let configmap = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata:\n  a: ";
    for (what, body, named) in [
        ("a template that does not parse", "{{ if }}", "missing value for if"),
        ("a template that fails to execute", "{{ .Values.nope.deeper }}", "nil pointer"),
        ("a template that renders broken YAML", "[", "YAML"),
    ] {
        let copy = chart_with(&format!("{configmap}{body}\n"));
        let problems = checkers::helm_lint(&copy.path().join("secretmode"), "-", "secretmode").expect_err(what);
        assert!(problems.iter().any(|p| p.contains(named) && p.contains("broken.yaml")), "{what}: {problems:#?}");
    }
}

/// A MutatingWebhookConfiguration as the chart makes it, with the given webhook fields
/// replaced.
fn webhook_configuration(changes: Value) -> Value {
    let mut hook = json!({
        "name": "pods.secretmode.io",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "matchPolicy": "Equivalent",
        "reinvocationPolicy": "IfNeeded",
        "failurePolicy": "Fail",
        "timeoutSeconds": 3,
        "clientConfig": {"service": {"name": "secretmode", "namespace": "secretmode", "path": "/mutate", "port": 443}},
        "rules": [{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"],
            "scope": "Namespaced",
        }],
        "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]},
        ]},
        "matchConditions": [{
            "name": "opted-in",
            "expression": "has(object.metadata.annotations) && object.metadata.annotations.exists(k, k.startsWith(\"secrets/\"))",
        }],
    });
    for (k, v) in changes.as_object().unwrap() {
        hook[k] = v.clone();
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
           "metadata": {"name": "secretmode"}, "webhooks": [hook]})
}

fn condition(expression: &str) -> Value {
    json!({"matchConditions": [{"name": "c", "expression": expression}]})
}

#[test]
fn the_cel_engine_and_webhook_validation_reject_what_the_api_server_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", &webhook_configuration(json!({})));
    let bad = [
        ("syntax-error", condition("object.metadata.("), "compilation failed"),
        ("not-bool", condition("object.metadata.name"), "must evaluate to bool"),
        ("int", condition("size(object.spec.containers) + 1"), "must evaluate to bool"),
        ("undeclared-variable", condition("params.enabled == true"), "compilation failed"),
        ("empty-expression", condition("  "), "required"),
        ("name-too-long", json!({"matchConditions": [{"name": "n".repeat(64), "expression": "true"}]}), "63"),
        (
            "name-not-qualified",
            json!({"matchConditions": [{"name": "has space", "expression": "true"}]}),
            "alphanumerics",
        ),
        (
            "duplicate-names",
            json!({"matchConditions": [{"name": "a", "expression": "true"}, {"name": "a", "expression": "true"}]}),
            "duplicate",
        ),
        ("two-segment-name", json!({"name": "secretmode.io"}), "three segments"),
        ("timeout-31", json!({"timeoutSeconds": 31}), "between 1 and 30"),
        ("side-effects-some", json!({"sideEffects": "Some"}), "not supported"),
        ("no-v1-review", json!({"admissionReviewVersions": ["v2"]}), "must include v1"),
        (
            "url-and-service",
            json!({"clientConfig": {"url": "https://x", "service": {"name": "s", "namespace": "n"}}}),
            "exactly one",
        ),
        (
            "in-without-values",
            json!({"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In"}]}}),
            "must be specified",
        ),
    ];
    let mut files = vec![good];
    for (name, changes, _) in &bad {
        files.push(write(dir.path(), &format!("{name}.yaml"), &webhook_configuration(changes.clone())));
    }
    let report = checkers::webhook_config(&files, &[]).expect("the checker runs");
    assert!(report[0].problems.is_empty(), "the chart-shaped configuration passes: {:?}", report[0].problems);
    assert_eq!(report[0].webhooks, 1);
    for ((name, _, named), config) in bad.iter().zip(&report[1..]) {
        assert!(
            config.problems.iter().any(|p| p.contains(named)),
            "{name}: no problem naming {named:?}: {:?}",
            config.problems
        );
    }
}

#[test]
fn the_cel_engine_evaluates_true_false_and_errors_as_the_api_server_decides() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        // Errors for a pod without annotations (no such key); true or false otherwise.
        write(
            dir.path(),
            "fail.yaml",
            &webhook_configuration(condition("object.metadata.annotations[\"team\"] == \"a\"")),
        ),
        write(
            dir.path(),
            "ignore.yaml",
            &webhook_configuration(json!({
                "failurePolicy": "Ignore",
                "matchConditions": [{"name": "c", "expression": "object.metadata.annotations[\"team\"] == \"a\""}],
            })),
        ),
    ];
    let pods = [
        ("team-a", json!({"metadata": {"annotations": {"team": "a"}}, "spec": {}})),
        ("team-b", json!({"metadata": {"annotations": {"team": "b"}}, "spec": {}})),
        ("no-annotations", json!({"metadata": {}, "spec": {}})),
        // The request variable is there with the API server's fields.
        (
            "with-request",
            json!({"object": {"metadata": {"annotations": {"team": "a"}}}, "request": {"operation": "CREATE"}}),
        ),
    ];
    let pods: Vec<(String, Value)> = pods.into_iter().map(|(n, p)| (n.to_string(), p)).collect();
    let report = checkers::webhook_config(&files, &pods).expect("the checker runs");
    let (fail, ignore) = (&report[0], &report[1]);
    assert!(fail.problems.is_empty() && ignore.problems.is_empty(), "{report:?}");
    assert_eq!(fail.decision("team-a"), "call");
    assert_eq!(fail.decision("team-b"), "skip");
    assert_eq!(fail.decision("no-annotations"), "reject", "an evaluation error under Fail rejects the request");
    assert_eq!(ignore.decision("no-annotations"), "skip", "an evaluation error under Ignore skips the webhook");
    let call = fail.calls.iter().find(|c| c.object == "no-annotations").unwrap();
    assert_eq!(call.conditions[0].1, json!("error"));
    assert!(call.conditions[0].2.as_deref().is_some_and(|e| e.contains("annotations")), "{call:?}");
    assert_eq!(fail.decision("with-request"), "call");

    let uses_request =
        write(dir.path(), "request.yaml", &webhook_configuration(condition("request.operation == \"CREATE\"")));
    let report = checkers::webhook_config(&[uses_request], &pods[3..]).expect("the checker runs");
    assert_eq!(report[0].decision("with-request"), "call");
}

#[test]
fn the_crd_check_rejects_wrong_fields_types_and_unknown_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let external_secret = json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "db", "namespace": "demo"},
        "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": "vault", "kind": "SecretStore"},
                 "target": {"name": "db"},
                 "data": [{"secretKey": "password", "remoteRef": {"key": "db", "property": "password"}}]},
    });
    let class = json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "db", "namespace": "demo"},
        "spec": {"provider": "vault", "parameters": {"roleName": "demo", "objects": "- objectName: password\n"}},
    });
    let good = [write(dir.path(), "es.yaml", &external_secret), write(dir.path(), "spc.yaml", &class)];
    assert_eq!(checkers::crd_check(&good).expect("valid custom resources pass"), 2);

    let with = |base: &Value, pointer: &str, value: Value| {
        let mut v = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        v.pointer_mut(parent).unwrap()[key] = value;
        v
    };
    let without = |base: &Value, pointer: &str| {
        let mut v = base.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        v.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key);
        v
    };
    let bad = [
        ("es-misspelt", with(&external_secret, "/spec/secretStoreRefs", json!({"name": "vault"})), "secretStoreRefs"),
        ("es-wrong-type", with(&external_secret, "/spec/refreshInterval", json!(5)), "refreshInterval"),
        ("es-missing-key", without(&external_secret, "/spec/data/0/remoteRef/key"), "key"),
        ("spc-misspelt", with(&class, "/spec/paramters", json!({})), "paramters"),
        ("spc-wrong-type", with(&class, "/spec/parameters/roleName", json!(["demo"])), "roleName"),
        ("spc-missing-provider", without(&class, "/spec/provider"), "provider"),
        ("unknown-kind", with(&class, "/kind", json!("SecretProviderClas")), "SecretProviderClas"),
    ];
    for (name, object, named) in bad {
        let file = write(dir.path(), &format!("{name}.yaml"), &object);
        let err = checkers::crd_check(&[good[0].clone(), file]).expect_err(name);
        assert!(err.contains(named), "{name}: the problem does not name {named}: {err}");
    }
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "").unwrap();
    assert!(checkers::crd_check(&[empty]).is_err(), "nothing checked is not a pass");
}

/// `scripts/build-static` decides "statically linked" from the ELF headers; it must refuse a
/// dynamically linked binary and accept a static one, both made here with the system's gcc.
#[test]
fn the_static_link_check_refuses_a_dynamic_binary() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("main.c");
    std::fs::write(&source, "int main(void) { return 0; }\n").unwrap();
    let check = |bin: &Path| {
        Command::new(root().join("scripts/build-static"))
            .arg("--check")
            .arg(bin)
            .output()
            .expect("run scripts/build-static")
    };
    for (name, flags, want_static) in [("dynamic", &[][..], false), ("static", &["-static"][..], true)] {
        let bin = dir.path().join(name);
        let cc = Command::new("gcc").args(flags).arg("-o").arg(&bin).arg(&source).output().expect("gcc");
        assert!(cc.status.success(), "gcc {flags:?}: {}", String::from_utf8_lossy(&cc.stderr));
        let out = check(&bin);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.success(), want_static, "{name}: {text}");
        assert!(text.contains(if want_static { "statically linked" } else { "dynamically linked" }), "{name}: {text}");
    }
    let out = check(&root().join("README.md"));
    assert!(!out.status.success(), "a file that is no ELF binary is not static");
}

/// A minimal exec wrapper in C (`--install DIR`, `--env STEM -- CMD...`), for the controls of
/// `scripts/build-static --check-exec`: `-DPAD` makes it too large, `-DNO_VALUE` skips setting
/// the value, `-DNO_INSTALL` succeeds without installing anything.
const C_WRAPPER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#ifdef PAD
static const char pad[2 << 20] = {1};
#endif
int main(int argc, char **argv) {
#ifdef PAD
    if (argc > 99) return pad[argc];
#endif
    if (argc == 3 && !strcmp(argv[1], "--install")) {
#ifdef NO_INSTALL
        return 0;
#endif
        char to[4096]; snprintf(to, sizeof to, "%s/secretmode-exec", argv[2]);
        FILE *in = fopen("/proc/self/exe", "rb"), *out = fopen(to, "wb");
        if (!in || !out) return 125;
        char buf[65536]; size_t n;
        while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
        fclose(out); chmod(to, 0555); return 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "--env") && !strcmp(argv[3], "--")) {
        char var[256]; snprintf(var, sizeof var, "%s_FILE", argv[2]);
        FILE *f = fopen(getenv(var), "rb");
        if (!f) return 125;
        static char value[131072]; size_t n = fread(value, 1, sizeof value - 1, f);
        value[n] = 0;
#ifndef NO_VALUE
        setenv(argv[2], value, 1);
#endif
        execvp(argv[4], argv + 4); return 127;
    }
    return 125;
}
"#;

/// `scripts/build-static --check-exec` accepts a static binary that installs itself and sets a
/// value from a file, and refuses the same binary too large, not setting the value, or not
/// installing itself (besides a dynamic one, refused by the check above).
#[test]
fn the_exec_wrapper_check_refuses_a_large_or_broken_wrapper() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("wrapper.c");
    std::fs::write(&source, C_WRAPPER).unwrap();
    let cases = [
        ("working", None, None),
        ("padded", Some("-DPAD"), Some("bytes, over 1048576")),
        ("no-value", Some("-DNO_VALUE"), Some("did not set CHECK from its file")),
        ("no-install", Some("-DNO_INSTALL"), Some("into a missing directory succeeded")),
    ];
    for (name, define, refusal) in cases {
        let bin = dir.path().join(name);
        let cc = Command::new("gcc")
            .args(["-static", "-O1"])
            .args(define)
            .arg("-o")
            .arg(&bin)
            .arg(&source)
            .output()
            .expect("gcc");
        assert!(cc.status.success(), "gcc {name}: {}", String::from_utf8_lossy(&cc.stderr));
        let out = Command::new(root().join("scripts/build-static"))
            .arg("--check-exec")
            .arg(&bin)
            .output()
            .expect("run scripts/build-static");
        let text = String::from_utf8_lossy(&out.stdout);
        match refusal {
            None => {
                assert!(out.status.success(), "{name}: {text}");
                assert!(text.contains("static binary OK"), "{name}: {text}");
            }
            Some(why) => {
                assert!(!out.status.success(), "{name} passed: {text}");
                assert!(text.contains(why), "{name}: {text}");
            }
        }
    }
}
