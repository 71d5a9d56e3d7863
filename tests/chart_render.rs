//! The Helm chart, rendered and linted with Helm's own Go SDK (helm-python-sdk) for every
//! certificate mode, for HA, minimal and everything-on values, and for the extremes the values
//! schema allows; every rendered manifest checked with kubernetes-validate, strict (custom
//! resources structurally, see tests/py/crd_check.py); the MutatingWebhookConfiguration checked
//! as the API server validates it and its matchConditions evaluated with a real CEL engine
//! (tests/py/webhook_config.py) against pods with and without the annotation, with the map
//! absent, and with hand-built `secretmode-` objects and CSI volumes, each compared with the
//! webhook's own decision on that pod; the checklist properties asserted on the objects; the
//! values schema rejecting bad values; and the rendered commands run through the real binary.
//! The checkers' negative controls are in tests/checker_controls.rs.

mod checkers;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_secretmode");
const NS: &str = "platform";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/secretmode")
}

fn python(args: &[&str]) -> std::process::Output {
    Command::new(support::venv_bin("python"))
        .arg(root().join("tests/py/helm_chart.py"))
        .args(args)
        .output()
        .expect("run tests/py/helm_chart.py")
}

fn values_file(dir: &Path, values: &Value) -> String {
    let path = dir.join(format!("values-{}.json", std::process::id() as u64 ^ rand_suffix()));
    std::fs::write(&path, serde_json::to_vec(values).unwrap()).unwrap();
    path.display().to_string()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

struct Rendered {
    _dir: tempfile::TempDir,
    files: Vec<PathBuf>,
    objects: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }
    fn one(&self, kind: &str) -> &Value {
        let found = self.all(kind);
        assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
        found[0]
    }
    fn file_of(&self, kind: &str) -> &PathBuf {
        self.one(kind);
        let i = self.objects.iter().position(|o| o["kind"] == kind).unwrap();
        &self.files[i]
    }
    fn config(&self) -> secretmode::config::Config {
        let cm =
            self.all("ConfigMap").into_iter().find(|c| c["data"]["config.yaml"].is_string()).expect("config ConfigMap");
        let text = cm["data"]["config.yaml"].as_str().unwrap();
        secretmode::config::Config::from_yaml(text, "chart ConfigMap").unwrap_or_else(|e| panic!("{e}\n{text}"))
    }
    fn named(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }
}

fn try_render(values: &Value, upgrade: bool) -> Result<Rendered, String> {
    let dir = tempfile::tempdir().unwrap();
    let vf = values_file(dir.path(), values);
    let out = dir.path().join("out");
    let chart = chart();
    let mut args = vec!["render", chart.to_str().unwrap(), &vf, out.to_str().unwrap(), "--namespace", NS];
    if upgrade {
        args.push("--upgrade");
    }
    let run = python(&args);
    if !run.status.success() {
        return Err(String::from_utf8_lossy(&run.stderr).into_owned());
    }
    let summary: Value = serde_json::from_slice(&run.stdout).expect("render summary");
    let mut files = Vec::new();
    let mut objects = Vec::new();
    for doc in summary["documents"].as_array().unwrap() {
        let file = PathBuf::from(doc["file"].as_str().unwrap());
        let text = std::fs::read_to_string(&file).unwrap();
        objects.push(serde_yaml::from_str::<Value>(&text).unwrap());
        files.push(file);
    }
    Ok(Rendered { _dir: dir, files, objects })
}

/// Renders, lints (strict) and validates: built-in kinds with kubernetes-validate (strict) for
/// every supported Kubernetes version, custom resources with crd_check.py, the webhook
/// configuration with webhook_config.py; then the invariants every rendering keeps.
fn render(values: Value) -> Rendered {
    let rendered = try_render(&values, false).unwrap_or_else(|e| panic!("render failed: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let vf = values_file(dir.path(), &values);
    if let Err(problems) = checkers::helm_lint(&chart(), &vf, NS) {
        panic!("helm lint: {problems:#?}");
    }

    let (custom, builtin): (Vec<_>, Vec<_>) = rendered.files.iter().zip(&rendered.objects).partition(|(_, o)| {
        let api = o["apiVersion"].as_str().unwrap_or_default();
        ["cert-manager.io/", "monitoring.coreos.com/"].iter().any(|p| api.starts_with(p))
    });
    support::kubernetes_validate(&builtin.iter().map(|(f, _)| (*f).clone()).collect::<Vec<_>>());
    if !custom.is_empty() {
        let files: Vec<PathBuf> = custom.iter().map(|(f, _)| (*f).clone()).collect();
        let checked = checkers::crd_check(&files).unwrap_or_else(|e| panic!("custom resources: {e}"));
        assert_eq!(checked, files.len() as u64, "every custom resource checked");
    }
    common_invariants(&rendered);
    sends_what_it_judges(&rendered);
    rendered
}

fn schema_error(values: Value) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let vf = values_file(dir.path(), &values);
    let run = python(&["schema", chart().to_str().unwrap(), &vf]);
    (!run.status.success()).then(|| String::from_utf8_lossy(&run.stdout).into_owned())
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn pod_specs(r: &Rendered) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for o in &r.objects {
        let name = format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap());
        match o["kind"].as_str() {
            Some("Deployment") | Some("Job") => out.push((name, &o["spec"]["template"]["spec"])),
            Some("CronJob") => out.push((name, &o["spec"]["jobTemplate"]["spec"]["template"]["spec"])),
            _ => {}
        }
    }
    out
}

/// What every rendering must satisfy (CHECKLISTS.md, "What a good chart ships").
fn common_invariants(r: &Rendered) {
    // MutatingWebhookConfiguration.
    let mwc = r.one("MutatingWebhookConfiguration");
    assert_eq!(mwc["apiVersion"], "admissionregistration.k8s.io/v1");
    let hooks = mwc["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1);
    let w = &hooks[0];
    assert_eq!(strs(&w["admissionReviewVersions"]), ["v1"]);
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["matchPolicy"], "Equivalent");
    assert_eq!(w["reinvocationPolicy"], "IfNeeded");
    let timeout = w["timeoutSeconds"].as_i64().unwrap();
    assert!((2..=10).contains(&timeout));
    assert_eq!(w["clientConfig"]["service"]["namespace"], NS);
    assert_eq!(w["clientConfig"]["service"]["path"], "/mutate");
    assert_eq!(w["clientConfig"]["service"]["port"], 443);
    assert!(w["clientConfig"].get("url").is_none());
    assert_eq!(
        w["rules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}])
    );
    let exprs = w["namespaceSelector"]["matchExpressions"].as_array().unwrap();
    let by_name = exprs.iter().find(|e| e["key"] == "kubernetes.io/metadata.name").expect("exclude by name");
    assert_eq!(by_name["operator"], "NotIn");
    let excluded = strs(&by_name["values"]);
    for ns in ["kube-system", "kube-public", "kube-node-lease", NS] {
        assert!(excluded.contains(&ns.to_string()), "{ns} not excluded: {excluded:?}");
    }
    assert!(exprs.iter().any(|e| e["operator"] == "NotIn" && strs(&e["values"]) == ["disabled"]), "opt-out label");
    let own_labels = &r.one("Deployment")["spec"]["template"]["metadata"]["labels"];
    let obj_exprs = w["objectSelector"]["matchExpressions"].as_array().unwrap();
    assert!(
        obj_exprs.iter().any(|e| e["operator"] == "NotIn"
            && strs(&e["values"]).iter().any(|v| own_labels[e["key"].as_str().unwrap()] == json!(v))),
        "objectSelector must exclude the webhook's own pods ({own_labels})"
    );
    // The config file in the ConfigMap is accepted by the server's own parser, and its
    // annotation prefix is what the matchCondition sends (evaluated in sends_what_it_judges).
    let conditions = w["matchConditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 1);
    let cel = conditions[0]["expression"].as_str().unwrap();
    let wanted = format!("startsWith(\"{}/\")", r.config().annotation_prefix);
    assert!(cel.contains("object.metadata.annotations") && cel.contains(&wanted), "{cel}");

    // Every pod the chart runs: restricted security context, non-zero ids, resources.
    for (name, spec) in pod_specs(r) {
        let psc = &spec["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{name}");
        assert!(psc["runAsUser"].as_i64().unwrap() > 0 && psc["runAsGroup"].as_i64().unwrap() > 0, "{name}");
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        for c in spec["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
            assert!(c["resources"]["requests"]["memory"].is_string(), "{name}: requests");
            assert!(c["resources"]["limits"].get("cpu").is_none(), "{name}: no CPU limit");
        }
    }

    // RBAC: nothing bound to the webhook's own ServiceAccount; Secrets only for certs bootstrap.
    let webhook_sa =
        r.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"].as_str().unwrap().to_string();
    for binding in r.all("RoleBinding").into_iter().chain(r.all("ClusterRoleBinding")) {
        for s in binding["subjects"].as_array().unwrap() {
            assert_ne!(s["name"].as_str().unwrap(), webhook_sa, "the admission path needs no RBAC");
        }
    }
    for role in r.all("Role").into_iter().chain(r.all("ClusterRole")) {
        let name = role["metadata"]["name"].as_str().unwrap();
        for rule in role["rules"].as_array().unwrap() {
            let verbs = strs(&rule["verbs"]);
            assert!(
                !verbs.contains(&"*".to_string()) && !strs(&rule["resources"]).contains(&"*".to_string()),
                "{name}"
            );
            if strs(&rule["resources"]).contains(&"secrets".to_string()) {
                assert!(name.ends_with("-certs") || name.ends_with("-certs-renew"), "{name} must not touch Secrets");
                assert!(!verbs.contains(&"list".to_string()) && !verbs.contains(&"watch".to_string()), "{name}");
                if verbs != ["create"] {
                    assert!(rule["resourceNames"].is_array(), "{name}: get/update only on named Secrets");
                }
            }
        }
    }
}

/// Pods as the API server hands them to matchConditions (`object`, converted from the typed
/// pod: annotations absent when there are none, a missing `containers` list as null), named
/// for what each one tests. `prefix` is the configured annotation prefix.
fn admission_pods(prefix: &str) -> Vec<(String, Value)> {
    let app = json!({"name": "app", "image": "busybox:1.37"});
    let annotations =
        |pairs: &[(String, &str)]| Some(Value::Object(pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect()));
    let ours = |key: &str| format!("{prefix}/{key}");
    let pod = |annotations: Option<Value>, spec: Value| {
        let mut metadata = json!({"generateName": "web-7f9c6d5b84-", "namespace": "demo"});
        if let Some(a) = annotations {
            metadata["annotations"] = a;
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
    };
    // The app container plus `extra` spec fields.
    let with = |extra: Value| {
        let mut spec = json!({"containers": [app.clone()]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    let csi = |attributes: Value| {
        let csi = json!({"driver": secretmode::vocabulary::names::CSI_DRIVER, "readOnly": true, "volumeAttributes": attributes});
        with(json!({"volumes": [{"name": "secrets", "csi": csi}]}))
    };
    let plain = with(json!({}));
    let mut many = json!({"containers": [], "volumes": []});
    for i in 0..500 {
        many["containers"].as_array_mut().unwrap().push(json!({"name": format!("c{i}"), "image": "busybox:1.37"}));
        many["volumes"].as_array_mut().unwrap().push(json!({"name": format!("v{i}"), "emptyDir": {}}));
    }
    let mut many_last = many.clone();
    many_last["volumes"].as_array_mut().unwrap().push(json!({"name": "secretmode-secrets", "emptyDir": {}}));
    let evil = |name: &str| json!({"name": name, "image": "evil:latest"});

    let eso = annotations(&[(ours("mode"), "eso"), (ours("eso-secret"), "db"), (ours("item.password"), "password")]);
    let near_misses = annotations(&[
        ("example.com/team".into(), "a"),
        (format!("{prefix}x/mode"), "eso"),
        (format!("x.{prefix}/mode"), "eso"),
        (prefix.to_string(), "mode"),
    ]);
    let similar = json!({
        "containers": [
            {"name": "app-secretmode-x", "image": "busybox:1.37"},
            {"name": "secretmode", "image": "busybox:1.37"},
        ],
        "volumes": [{"name": "secretmodex", "emptyDir": {}}],
    });
    vec![
        ("opted-in", pod(eso, plain.clone())),
        ("opted-in-badly", pod(annotations(&[(ours("mode"), "vault")]), plain.clone())),
        ("opted-in-without-containers", pod(annotations(&[(ours("mode"), "eso")]), json!({"containers": null}))),
        ("injected-note-only", pod(annotations(&[(ours("injected"), "mode=eso,items=1")]), plain.clone())),
        ("other-annotations", pod(near_misses, plain.clone())),
        ("mirror", pod(annotations(&[("kubernetes.io/config.mirror".into(), "abc")]), plain.clone())),
        ("empty-annotations", pod(Some(json!({})), plain.clone())),
        ("annotations-absent", pod(None, plain.clone())),
        ("containers-null", pod(None, json!({"containers": null}))),
        ("hand-built-container", pod(None, json!({"containers": [app.clone(), evil("secretmode-sidecar")]}))),
        ("hand-built-init-container", pod(None, with(json!({"initContainers": [evil("secretmode-init")]})))),
        ("hand-built-volume", pod(None, with(json!({"volumes": [{"name": "secretmode-secrets", "emptyDir": {}}]})))),
        ("csi-volume", pod(None, csi(json!({"secretProviderClass": "db"})))),
        ("csi-volume-overriding-the-class", pod(None, csi(json!({"secretProviderClass": "db", "roleName": "admin"})))),
        (
            "other-csi-driver",
            pod(None, with(json!({"volumes": [{"name": "data", "csi": {"driver": "ebs.csi.aws.com"}}]}))),
        ),
        ("similar-names", pod(None, similar)),
        ("many-objects", pod(None, many)),
        ("many-objects-last-reserved", pod(None, many_last)),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_string(), p))
    .collect()
}

/// Whether the webhook would do anything to this pod: deny it, patch it, warn, or record a
/// policy finding. A pod it would only let through untouched need not be sent.
fn judged(decision: &secretmode::decide::Decision) -> bool {
    use secretmode::decide::Decision;
    match decision {
        Decision::Deny { .. } => true,
        Decision::Allow { patch, warnings, policy, .. } => {
            !patch.is_empty() || !warnings.is_empty() || policy.is_some()
        }
    }
}

/// The matchConditions compile with a real CEL engine and the whole configuration passes the
/// API server's validation; then, for every pod of [`admission_pods`], the API server's
/// decision (call or skip, never a rejection for a CEL error) is what the chart promises, and
/// every pod the webhook would judge is sent, except hand-built CSI volumes when
/// `webhook.matchCsiVolumes` is off (then only `secretmode audit` judges them; docs/INSTALL.md).
fn sends_what_it_judges(r: &Rendered) {
    let config = r.config();
    let prefix = config.annotation_prefix.clone();
    let pods = admission_pods(&prefix);
    let report = checkers::webhook_config(&[r.file_of("MutatingWebhookConfiguration").clone()], &pods)
        .unwrap_or_else(|e| panic!("{e}"));
    let mwc = &report[0];
    assert!(mwc.problems.is_empty(), "the API server would refuse the webhook configuration: {:#?}", mwc.problems);
    assert_eq!(mwc.webhooks, 1);
    let csi_sent = r.one("MutatingWebhookConfiguration")["webhooks"][0]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap()
        .contains(secretmode::vocabulary::names::CSI_DRIVER);
    let expected = |name: &str| match name {
        "opted-in" | "opted-in-badly" | "opted-in-without-containers" | "injected-note-only" => "call",
        "hand-built-container" | "hand-built-init-container" | "hand-built-volume" => "call",
        "many-objects-last-reserved" => "call",
        "csi-volume" | "csi-volume-overriding-the-class" if csi_sent => "call",
        _ => "skip",
    };
    for (name, pod) in &pods {
        let sent = mwc.decision(name);
        assert_eq!(
            sent,
            expected(name),
            "prefix {prefix:?}, pod {name}: {:?}",
            mwc.calls.iter().find(|c| &c.object == name)
        );
        let decision = secretmode::decide::admit_pod(pod, "demo", &config);
        if judged(&decision) && sent != "call" {
            assert!(
                !csi_sent && name == "csi-volume-overriding-the-class",
                "pod {name} is judged by the webhook ({decision:?}) but never sent to it"
            );
        }
    }
    // The cases above are not vacuous: the webhook judges each kind of pod that is sent.
    let judged_by_name = |n: &str| {
        judged(&secretmode::decide::admit_pod(&pods.iter().find(|(p, _)| p == n).unwrap().1, "demo", &config))
    };
    for name in [
        "opted-in",
        "opted-in-badly",
        "hand-built-container",
        "hand-built-init-container",
        "hand-built-volume",
        "csi-volume-overriding-the-class",
        "many-objects-last-reserved",
    ] {
        assert!(judged_by_name(name), "the webhook does not judge {name}: the case tests nothing");
    }
}

fn deployment_checks(r: &Rendered, replicas: i64) {
    let d = r.one("Deployment");
    assert_eq!(d["spec"]["replicas"], replicas);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert!(spec["priorityClassName"].is_string());
    let c = &spec["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_i64().unwrap();
    let args = strs(&c["args"]);
    let drain: i64 = args
        .iter()
        .find_map(|a| a.strip_prefix("--shutdown-grace="))
        .and_then(|s| s.trim_end_matches('s').parse().ok())
        .expect("--shutdown-grace");
    assert!(pre_stop + drain < spec["terminationGracePeriodSeconds"].as_i64().unwrap());
    let tls = spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "tls").unwrap();
    assert!(tls["secret"]["secretName"].is_string(), "certificate from a Secret volume");
    let mount = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "tls").unwrap();
    assert!(mount.get("subPath").is_none(), "a subPath mount never sees rotation");
    assert!(d["spec"]["template"]["metadata"]["annotations"]["checksum/config"].is_string());
}

fn tls_secret_name(r: &Rendered) -> String {
    let spec = &r.one("Deployment")["spec"]["template"]["spec"];
    let tls = spec["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "tls").unwrap();
    tls["secret"]["secretName"].as_str().unwrap().to_string()
}

#[test]
fn generated_mode_with_ha_defaults() {
    let r = render(json!({}));
    deployment_checks(&r, 3);
    let d = r.one("Deployment");
    let spec = &d["spec"]["template"]["spec"];
    assert!(spec["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(spec["topologySpreadConstraints"].as_array().unwrap().len(), 2);
    assert_eq!(r.one("PodDisruptionBudget")["spec"]["maxUnavailable"], 1);
    assert_eq!(r.one("PriorityClass")["value"], 1_000_000);
    let w = &r.one("MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Fail");
    assert_eq!(w["timeoutSeconds"], 3);
    assert!(w["clientConfig"].get("caBundle").is_none(), "the bootstrap Job patches it in");

    // The hook Job runs `certs bootstrap` before and after install/upgrade.
    let job = r.one("Job");
    let hooks = job["metadata"]["annotations"]["helm.sh/hook"].as_str().unwrap();
    for h in ["pre-install", "pre-upgrade", "post-install", "post-upgrade"] {
        assert!(hooks.contains(h), "{hooks}");
    }
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let args = strs(&container["args"]);
    assert_eq!(&args[..2], ["certs", "bootstrap"]);
    assert!(args.contains(&format!("--tls-secret={}", tls_secret_name(&r))));
    // Its RBAC exists as hooks too, and runs first.
    for kind in ["ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"] {
        let o = r.named(kind, "secretmode-certs");
        assert!(o["metadata"]["annotations"]["helm.sh/hook"].as_str().unwrap().contains("pre-install"));
        let weight: i64 = o["metadata"]["annotations"]["helm.sh/hook-weight"].as_str().unwrap().parse().unwrap();
        assert!(weight < 0);
    }
    let cluster_role = r.named("ClusterRole", "secretmode-certs");
    assert_eq!(strs(&cluster_role["rules"][0]["resourceNames"]), ["secretmode"]);
    // The renewal CronJob runs the same command.
    let cron = r.one("CronJob");
    assert_eq!(strs(&cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]), args);

    // The real binary accepts exactly these arguments: it gets past parsing and fails only
    // where a cluster is needed.
    let run = Command::new(BIN)
        .args(&args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("connecting to the Kubernetes API"), "arguments rejected? {stderr}");

    // An upgrade render works too (lookup of the live webhook config is empty offline).
    try_render(&json!({}), true).unwrap();
}

#[test]
fn cert_manager_mode_with_its_own_issuer_and_with_a_given_issuer() {
    let r = render(json!({"certs": {"mode": "certManager"}}));
    deployment_checks(&r, 3);
    let mwc = r.one("MutatingWebhookConfiguration");
    assert_eq!(mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], format!("{NS}/secretmode-tls"));
    assert!(mwc["webhooks"][0]["clientConfig"].get("caBundle").is_none());
    let cert = r.named("Certificate", "secretmode-tls");
    assert_eq!(cert["spec"]["secretName"], tls_secret_name(&r));
    assert_eq!(strs(&cert["spec"]["dnsNames"]), secretmode::commands::certs::generate::dns_names("secretmode", NS));
    assert_eq!(cert["spec"]["issuerRef"]["name"], "secretmode-ca");
    assert_eq!(r.named("Certificate", "secretmode-ca")["spec"]["isCA"], true);
    assert_eq!(r.all("Issuer").len(), 2);
    assert!(r.all("Job").is_empty() && r.all("CronJob").is_empty(), "no bootstrap with cert-manager");

    let r = render(
        json!({"certs": {"mode": "certManager", "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}}),
    );
    assert!(r.all("Issuer").is_empty());
    let cert = r.one("Certificate");
    assert_eq!(
        cert["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
}

#[test]
fn provided_mode_uses_the_users_secret_and_ca() {
    let now = std::time::SystemTime::now();
    let ca = secretmode::commands::certs::generate::new_ca("provided CA", now, 30).unwrap();
    let bundle = base64::engine::general_purpose::STANDARD.encode(&ca.cert_pem);
    let r = render(
        json!({"certs": {"mode": "provided", "provided": {"secretName": "my-webhook-tls", "caBundle": bundle}}}),
    );
    deployment_checks(&r, 3);
    assert_eq!(tls_secret_name(&r), "my-webhook-tls");
    assert_eq!(r.one("MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"], bundle);
    assert!(r.all("Job").is_empty() && r.all("Certificate").is_empty());
    assert!(r.all("Role").is_empty() && r.all("ClusterRole").is_empty(), "no RBAC at all");

    // Without the Secret or the CA it does not install.
    assert!(schema_error(json!({"certs": {"mode": "provided", "provided": {"secretName": "x"}}})).is_some());
    assert!(schema_error(json!({"certs": {"mode": "provided", "provided": {"caBundle": bundle}}})).is_some());
}

#[test]
fn minimal_values_single_replica_without_extras() {
    let r = render(json!({
        "replicaCount": 1,
        "podDisruptionBudget": {"enabled": false},
        "priorityClass": {"create": false},
        "priorityClassName": "system-cluster-critical",
        "topologySpreadConstraints": [],
        "certs": {"generated": {"renewSchedule": ""}},
        "webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 5},
    }));
    deployment_checks(&r, 1);
    assert!(
        r.all("PodDisruptionBudget").is_empty() && r.all("PriorityClass").is_empty() && r.all("CronJob").is_empty()
    );
    let spec = &r.one("Deployment")["spec"]["template"]["spec"];
    assert_eq!(spec["priorityClassName"], "system-cluster-critical");
    assert!(spec.get("topologySpreadConstraints").is_none());
    let w = &r.one("MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!((w["failurePolicy"].as_str(), w["timeoutSeconds"].as_i64()), (Some("Ignore"), Some(5)));
}

#[test]
fn everything_on_monitoring_audit_digests_and_a_custom_prefix() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let agent_digest = format!("sha256:{}", "cd".repeat(32));
    let r = render(json!({
        "image": {"digest": digest},
        "agent": {"image": {"repository": "registry.example.com/secretmode", "digest": agent_digest}},
        "podAntiAffinity": "hard",
        "replicaCount": 5,
        "audit": {"enabled": true, "schedule": "0 * * * *"},
        "metrics": {
            "serviceMonitor": {"enabled": true},
            "agentPodMonitor": {"enabled": true},
            "prometheusRule": {"enabled": true},
            "grafanaDashboard": {"enabled": true},
        },
        "webhook": {"optOutLabel": "example.com/no-secrets", "excludeNamespaces": ["kube-system", "kube-public", "kube-node-lease", "monitoring"]},
        "config": {
            "agent": {"watcherResources": {"requests": {"cpu": "5m", "memory": "8Mi"}, "limits": {"memory": "32Mi"}}},
            "policy": {"rules": [{"name": "all", "namespaces": ["*"], "allowSignals": true, "allowEnvValues": false}]},
        },
    }));
    deployment_checks(&r, 5);
    let spec = &r.one("Deployment")["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["image"], format!("ghcr.io/secretmode/secretmode@{digest}"));
    assert!(spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"].is_array());
    let config = r.named("ConfigMap", "secretmode-config")["data"]["config.yaml"].as_str().unwrap();
    let parsed = secretmode::config::Config::from_yaml(config, "chart").unwrap();
    assert_eq!(parsed.agent.image, format!("registry.example.com/secretmode@{agent_digest}"));
    assert_eq!(parsed.agent.exec_binary, "/secretmode-exec");
    assert_eq!(parsed.agent.watcher_resources().limits["memory"], "32Mi");
    assert!(parsed.policy.rules[0].allow_signals && !parsed.policy.rules[0].allow_env_values);
    assert_eq!(parsed.agent.exec_volume_size_limit, "8Mi");

    let w = &r.one("MutatingWebhookConfiguration")["webhooks"][0];
    let exprs = w["namespaceSelector"]["matchExpressions"].as_array().unwrap();
    assert!(exprs.iter().any(|e| e["key"] == "example.com/no-secrets"));
    assert!(strs(&exprs[0]["values"]).contains(&"monitoring".to_string()));

    // Audit: read-only, never Secrets, bound to its own ServiceAccount.
    let audit = r.named("ClusterRole", "secretmode-audit");
    for rule in audit["rules"].as_array().unwrap() {
        assert_eq!(strs(&rule["verbs"]), ["get", "list", "watch"]);
    }
    assert_eq!(
        strs(
            &r.named("CronJob", "secretmode-audit")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
                ["args"]
        )[..2],
        ["audit", "--cluster"]
    );

    // Monitoring: the alerts use the metrics the binaries export.
    let rules = serde_json::to_string(&r.one("PrometheusRule")["spec"]).unwrap();
    for metric in [
        "secretmode_admissions_total",
        "secretmode_admission_duration_seconds_bucket",
        "secretmode_tls_cert_expiry_timestamp_seconds",
        "secretmode_agent_cache_age_seconds",
        "secretmode_agent_state",
    ] {
        assert!(rules.contains(metric), "{metric}");
    }
    assert_eq!(r.one("ServiceMonitor")["spec"]["endpoints"][0]["port"], "metrics");
    // The agents' port name is the one the injector gives the sidecar.
    assert_eq!(r.one("PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"], secretmode::vocabulary::names::PORT_NAME);
    let service = r.one("Service");
    assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == "metrics"));
    let dash = r.named("ConfigMap", "secretmode-dashboard");
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    let board: Value = serde_json::from_str(dash["data"]["secretmode.json"].as_str().unwrap()).unwrap();
    assert!(board["panels"].as_array().unwrap().len() >= 4);

    // A custom annotation prefix flows into the matchCondition and the config.
    let r = render(json!({"config": {"annotationPrefix": "secrets.example.com"}}));
    let cel = r.one("MutatingWebhookConfiguration")["webhooks"][0]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cel.contains("startsWith(\"secrets.example.com/\")"), "{cel}");
}

#[test]
fn the_values_schema_rejects_bad_values() {
    assert_eq!(schema_error(json!({})), None, "defaults are valid");
    let bad = [
        json!({"replicaCount": 0}),
        json!({"replicaCount": "3"}),
        json!({"webhook": {"failurePolicy": "Maybe"}}),
        json!({"webhook": {"timeoutSeconds": 40}}),
        json!({"webhook": {"timeoutSeconds": 1}}),
        json!({"image": {"digest": "sha256:xyz"}}),
        json!({"image": {"digest": "md5:0123456789abcdef0123456789abcdef"}}),
        json!({"agent": {"image": {"digest": format!("sha256:{}", "A".repeat(64))}}}),
        json!({"certs": {"mode": "vault"}}),
        json!({"resources": {"limits": {"cpu": "1"}}}),
        json!({"securityContext": {"runAsUser": 0}}),
        json!({"replicas": 3}),
        json!({"config": {"annotationPrefix": "Bad/Prefix"}}),
        json!({"config": {"agent": {"image": "evil:latest"}}}),
        json!({"podAntiAffinity": "sometimes"}),
        json!({"certs": {"provided": {"caBundle": "not base64!"}}}),
        json!({"config": {"agent": {"execBinary": "secretmode-exec"}}}),
        json!({"config": {"agent": {"watcherResources": {"limit": {"memory": "8Mi"}}}}}),
        json!({"config": {"policy": {"rules": [{"name": "a", "namespaces": ["*"], "allowSignals": "yes"}]}}}),
    ];
    for values in bad {
        let merged = values.clone();
        assert!(schema_error(merged).is_some(), "schema accepted {values}");
        assert!(try_render(&values, false).is_err(), "render accepted {values}");
    }
    // Certificate lifetimes `certs bootstrap` would refuse fail the render, not the hook Job.
    for generated in
        [json!({"validityDays": 30, "renewBeforeDays": 30}), json!({"validityDays": 365, "caValidityDays": 380})]
    {
        let err = try_render(&json!({"certs": {"generated": generated}}), false).err().expect("render must fail");
        assert!(err.contains("certs.generated"), "{err}");
    }
    // A grace period too short for preStop + drain fails the render with the reason.
    let err = try_render(&json!({"terminationGracePeriodSeconds": 20}), false).err().unwrap();
    assert!(err.contains("terminationGracePeriodSeconds"), "{err}");
}

/// A DNS-1123 subdomain of exactly `len` characters made of 63-character labels.
fn subdomain(len: usize, letters: &str) -> String {
    let mut out = String::new();
    for c in letters.chars().cycle() {
        if out.len() >= len {
            break;
        }
        if !out.is_empty() {
            out.push('.');
        }
        let room = len - out.len();
        out.extend(std::iter::repeat_n(c, room.min(63)));
    }
    assert_eq!(out.len(), len);
    out
}

/// Item 6 of issue 21: whatever the schema lets through renders a webhook configuration the
/// API server accepts (names, label selectors, timeouts, matchConditions compiled with a real
/// CEL engine) and whose matchConditions send exactly what the chart promises for that
/// annotation prefix. The rendering itself runs every check (see `render`).
#[test]
fn the_webhook_configuration_is_valid_at_the_extremes_the_schema_allows() {
    // The longest of everything: a 253-character prefix and webhook name, a label key of a
    // 189-character prefix and a 63-character name, label values of 63, CSI pods not sent.
    let prefix = subdomain(253, "abcd");
    let label_prefix = subdomain(189, "efg");
    let r = render(json!({
        "fullnameOverride": format!("s{}", "x".repeat(39)),
        "config": {"annotationPrefix": prefix},
        "webhook": {
            "name": subdomain(253, "pqrs"),
            "timeoutSeconds": 10,
            "optOutLabel": format!("{label_prefix}/{}", "N".repeat(63)),
            "matchCsiVolumes": false,
            "namespaceSelectorExpressions": [
                {"key": "example.com/tier", "operator": "Exists"},
                {"key": "team", "operator": "In", "values": ["a", "B_c.d-e", "x".repeat(63), ""]},
                {"key": "legacy", "operator": "DoesNotExist", "values": []},
            ],
        },
    }));
    assert_eq!(r.config().annotation_prefix, prefix);
    let w = &r.one("MutatingWebhookConfiguration")["webhooks"][0];
    assert!(!w["matchConditions"][0]["expression"]
        .as_str()
        .unwrap()
        .contains(secretmode::vocabulary::names::CSI_DRIVER));

    // The shortest: a one-letter prefix (a prefix of every other key that starts with it), a
    // three-segment webhook name, an unprefixed opt-out label, the shortest timeout.
    let r = render(json!({
        "config": {"annotationPrefix": "a"},
        "webhook": {"name": "a.b.c", "timeoutSeconds": 2, "optOutLabel": "x", "excludeNamespaces": []},
    }));
    assert_eq!(r.config().annotation_prefix, "a");

    // Digits, hyphens and many segments; names YAML would read as a number or null unquoted.
    let r = render(json!({
        "config": {"annotationPrefix": "0-0.a--b.9.c.d.e.f.g.h.i.j"},
        "webhook": {"name": "1.2.3", "optOutLabel": "null"},
    }));
    assert_eq!(r.config().annotation_prefix, "0-0.a--b.9.c.d.e.f.g.h.i.j");
}

/// Values the API server (or the webhook's own config parser) would refuse never render.
#[test]
fn the_values_schema_rejects_what_the_api_server_would_refuse() {
    let bad = [
        json!({"config": {"annotationPrefix": "a".repeat(64)}}),
        json!({"config": {"annotationPrefix": subdomain(254, "abcd")}}),
        json!({"config": {"annotationPrefix": "secrets."}}),
        json!({"config": {"annotationPrefix": "-secrets"}}),
        json!({"config": {"annotationPrefix": "Secrets"}}),
        json!({"config": {"annotationPrefix": ""}}),
        json!({"config": {"annotationPrefix": "secrets/x"}}),
        json!({"webhook": {"name": "secretmode.io"}}),
        json!({"webhook": {"name": format!("{}.b.c", "a".repeat(64))}}),
        json!({"webhook": {"name": subdomain(254, "pqrs")}}),
        json!({"webhook": {"optOutLabel": "N".repeat(64)}}),
        json!({"webhook": {"optOutLabel": "a..b/x"}}),
        json!({"webhook": {"optOutLabel": "/x"}}),
        json!({"webhook": {"optOutLabel": "a/b/c"}}),
        json!({"webhook": {"optOutLabel": format!("{}/x", subdomain(252, "efg"))}}),
        json!({"webhook": {"namespaceSelectorExpressions": [{"key": "team", "operator": "In"}]}}),
        json!({"webhook": {"namespaceSelectorExpressions": [{"key": "team", "operator": "NotIn", "values": []}]}}),
        json!({"webhook": {"namespaceSelectorExpressions": [{"key": "team", "operator": "Exists", "values": ["a"]}]}}),
        json!({"webhook": {"namespaceSelectorExpressions": [{"key": "team", "operator": "In", "values": ["-a"]}]}}),
        json!({"webhook": {"namespaceSelectorExpressions": [
            {"key": "team", "operator": "In", "values": ["a".repeat(64)]},
        ]}}),
        json!({"webhook": {"namespaceSelectorExpressions": [{"key": "bad key", "operator": "Exists"}]}}),
        json!({"webhook": {"matchCsiVolumes": "yes"}}),
        json!({"fullnameOverride": "1secretmode"}),
    ];
    for values in bad {
        assert!(schema_error(values.clone()).is_some(), "schema accepted {values}");
        assert!(try_render(&values, false).is_err(), "render accepted {values}");
    }
}

/// The rendered Deployment's own arguments start the real server: its config file from the
/// ConfigMap, its certificate layout, its admin port. Only addresses and paths are swapped.
#[test]
fn the_rendered_webhook_command_serves_for_real() {
    let r = try_render(&json!({}), false).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("tls");
    let gen = Command::new(BIN)
        .args(["certs", "generate", "--service", "secretmode", "--namespace", NS, "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(gen.status.success());
    let config = tmp.path().join("config.yaml");
    std::fs::write(&config, r.named("ConfigMap", "secretmode-config")["data"]["config.yaml"].as_str().unwrap())
        .unwrap();
    let (port, admin) = (support::free_port(), support::free_port());
    let args: Vec<String> = strs(&r.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])
        .into_iter()
        .map(|a| {
            a.replace("0.0.0.0:8443", &format!("127.0.0.1:{port}"))
                .replace("0.0.0.0:8080", &format!("127.0.0.1:{admin}"))
                .replace("/etc/secretmode/tls", certs.to_str().unwrap())
                .replace("/etc/secretmode/config/config.yaml", config.to_str().unwrap())
        })
        .collect();
    assert!(args.iter().any(|a| a.contains(&format!("127.0.0.1:{port}"))), "{args:?}");
    let mut child = Command::new(BIN).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("server exited {status}: {err}");
        }
        if readyz(admin) == Some(200) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "the server started from the chart's arguments never became ready");
}

fn readyz(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}
