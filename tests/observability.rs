//! The chart's alerting rules and Grafana dashboard, tested for real (docs/OBSERVABILITY.md).
//!
//! - The chart rendered with Helm's Go SDK (tests/py/helm_chart.py) with the rules, dashboard
//!   and monitors on; the PrometheusRule's groups pass `promtool check rules`, and
//!   `promtool test rules` runs tests/prometheus/rules_test.yaml against them: every alert
//!   fires there and is shown not firing while healthy. The dashboard ConfigMap carries the
//!   dashboard file, valid JSON with its data source as a variable.
//! - A real Prometheus server on loopback scrapes a running webhook (`serve`), sidecar agents
//!   against a real OpenBao dev server, and an eso watcher, with the target labels the
//!   ServiceMonitor/PodMonitor give them. The components are driven into each failure (OpenBao
//!   stopped, a sidecar started from its fallback, a token that cannot be renewed, a volume
//!   swap that cannot render, denied and unreadable reviews, a certificate ten days from
//!   expiry, the webhook stopped), with thresholds set through chart values so they trip in
//!   seconds, and every alert expression and every dashboard query must return data.
//! - `promtool check metrics` passes on the real /metrics of each component, and every metric
//!   name the rules, the unit tests and the dashboard use is one those components export.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (scripts/test installs it).

mod agent_common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use agent_common::apps::Volume;
use agent_common::*;
use secretmode::agent::spec::{RenderSpec, WatchSpec, SPEC_VERSION};
use secretmode::render::{RenderSource, RenderedFile};
use serde_json::{json, Value};

// `serve` from tests/support (agent_common keeps its copy of support private); its
// `super::free_port` is agent_common's, so both hand out ports from one counter.
#[path = "support/serve.rs"]
#[allow(dead_code, clippy::duplicate_mod)]
mod serve;

const NS: &str = "platform";
const LONG: Duration = Duration::from_secs(90);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool from Debian's prometheus package; panics with the fix when it is missing.
fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found in PATH: run scripts/test (it installs Debian's `prometheus` package), or apt-get install prometheus")
}

// ---------------------------------------------------------------------------------------------
// The chart

struct Chart {
    _dir: tempfile::TempDir,
    objects: Vec<Value>,
}

impl Chart {
    fn render(values: &Value) -> Chart {
        let dir = tempfile::tempdir().unwrap();
        let vf = dir.path().join("values.json");
        std::fs::write(&vf, serde_json::to_vec(values).unwrap()).unwrap();
        let out = dir.path().join("out");
        let run = Command::new(venv_bin("python"))
            .arg(root().join("tests/py/helm_chart.py"))
            .args(["render", root().join("charts/secretmode").to_str().unwrap()])
            .args([vf.to_str().unwrap(), out.to_str().unwrap(), "--namespace", NS])
            .output()
            .expect("run tests/py/helm_chart.py");
        assert!(run.status.success(), "render: {}", String::from_utf8_lossy(&run.stderr));
        let summary: Value = serde_json::from_slice(&run.stdout).expect("render summary");
        let objects = summary["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| serde_yaml::from_str(&std::fs::read_to_string(d["file"].as_str().unwrap()).unwrap()).unwrap())
            .collect();
        Chart { _dir: dir, objects }
    }

    fn one(&self, kind: &str) -> &Value {
        let found: Vec<&Value> = self.objects.iter().filter(|o| o["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "one {kind}");
        found[0]
    }

    /// The PrometheusRule's groups as a Prometheus rule file.
    fn rule_file(&self) -> String {
        serde_yaml::to_string(&json!({"groups": self.one("PrometheusRule")["spec"]["groups"]})).unwrap()
    }

    /// Alert name -> expression.
    fn alerts(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for g in self.one("PrometheusRule")["spec"]["groups"].as_array().unwrap() {
            for r in g["rules"].as_array().unwrap() {
                out.insert(r["alert"].as_str().unwrap().to_string(), r["expr"].as_str().unwrap().to_string());
            }
        }
        out
    }

    fn dashboard_config_map(&self) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["data"]["secretmode.json"].is_string())
            .expect("dashboard ConfigMap")
    }

    fn dashboard(&self) -> Value {
        let cm = self.dashboard_config_map();
        serde_json::from_str(cm["data"]["secretmode.json"].as_str().unwrap()).expect("the dashboard is JSON")
    }
}

fn all_on(rule_overrides: Value) -> Value {
    let mut rule = json!({"enabled": true});
    if let (Some(r), Some(o)) = (rule.as_object_mut(), rule_overrides.as_object()) {
        r.extend(o.clone());
    }
    json!({"metrics": {
        "serviceMonitor": {"enabled": true},
        "agentPodMonitor": {"enabled": true},
        "prometheusRule": rule,
        "grafanaDashboard": {"enabled": true},
    }})
}

/// Every panel query of the dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((p["title"].as_str().unwrap().to_string(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// Every `secretmode_*` metric name in a PromQL expression or series selector.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("secretmode_") {
        let before = rest[..i].chars().last();
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// The names of the samples in a /metrics exposition.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

fn promtool(args: &[&str], dir: &Path, stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(tool("promtool"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The unit tests: alert name -> (eval times where it fires, eval times where it must not).
fn unit_test_cases() -> (Value, BTreeMap<String, (usize, usize)>) {
    let text = std::fs::read_to_string(root().join("tests/prometheus/rules_test.yaml")).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for t in doc["tests"].as_array().unwrap() {
        for a in t["alert_rule_test"].as_array().unwrap() {
            let e = cases.entry(a["alertname"].as_str().unwrap().to_string()).or_default();
            if a["exp_alerts"].as_array().is_some_and(|x| !x.is_empty()) {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
    }
    (doc, cases)
}

/// The rules pass `promtool check rules`; the unit tests pass `promtool test rules`, with each
/// alert both firing and silent; the dashboard and the PodMonitor are what the loaders expect.
#[test]
fn rules_pass_promtool_and_every_alert_fires_in_its_unit_test() {
    let chart = Chart::render(&all_on(json!({})));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secretmode-rules.yaml"), chart.rule_file()).unwrap();
    let (ok, out) = promtool(&["check", "rules", "secretmode-rules.yaml"], dir.path(), None);
    let alerts = chart.alerts();
    assert!(ok && out.contains(&format!("SUCCESS: {} rules found", alerts.len())), "promtool check rules:\n{out}");

    std::fs::copy(root().join("tests/prometheus/rules_test.yaml"), dir.path().join("rules_test.yaml")).unwrap();
    let (ok, out) = promtool(&["test", "rules", "rules_test.yaml"], dir.path(), None);
    assert!(ok && out.contains("SUCCESS"), "promtool test rules:\n{out}");

    let (_, cases) = unit_test_cases();
    for name in alerts.keys() {
        let (fires, silent) = cases.get(name).copied().unwrap_or_default();
        assert!(fires > 0 && silent > 0, "{name}: the unit tests must show it firing and not firing");
    }
    assert_eq!(
        alerts.keys().collect::<BTreeSet<_>>(),
        cases.keys().collect::<BTreeSet<_>>(),
        "no test of a missing alert"
    );
    // The Operator's form: every alert has a severity and a runbook link into the docs.
    let docs = std::fs::read_to_string(root().join("docs/OBSERVABILITY.md")).unwrap();
    for g in chart.one("PrometheusRule")["spec"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().unwrap();
            assert!(["warning", "critical"].contains(&r["labels"]["severity"].as_str().unwrap_or("")), "{name}");
            let url = r["annotations"]["runbook_url"].as_str().unwrap_or("");
            assert!(url.ends_with(&format!("OBSERVABILITY.md#{}", name.to_lowercase())), "{name}: {url}");
            assert!(docs.contains(&format!("### {name}\n")), "docs/OBSERVABILITY.md has no section for {name}");
            assert!(r["annotations"]["summary"].is_string() && r["annotations"]["description"].is_string(), "{name}");
        }
    }

    // Grafana's sidecar: a ConfigMap with its label (and its folder annotation, when set),
    // holding the dashboard file unchanged.
    let cm = chart.dashboard_config_map();
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert!(cm["metadata"].get("annotations").is_none(), "{cm}");
    let mut values = all_on(json!({}));
    values["metrics"]["grafanaDashboard"] = json!({"enabled": true, "annotations": {"grafana_folder": "secretmode"}});
    let foldered = Chart::render(&values);
    assert_eq!(foldered.dashboard_config_map()["metadata"]["annotations"], json!({"grafana_folder": "secretmode"}));
    assert_eq!(foldered.dashboard_config_map()["metadata"]["labels"]["grafana_dashboard"], "1");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("charts/secretmode/files/dashboard.json")).unwrap())
            .unwrap();
    let dashboard = chart.dashboard();
    assert_eq!(dashboard, file);
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"));
    let mut ids = BTreeSet::new();
    for p in dashboard["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "duplicate panel id {}", p["id"]);
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(!p["targets"].as_array().unwrap().is_empty(), "{}", p["title"]);
        }
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{}", v["name"]);
    }

    // The PodMonitor turns the pod's mode annotation into `mode`, spelled as Prometheus'
    // Kubernetes discovery spells the annotation, for the default and a dotted prefix.
    for (prefix, meta) in [
        (None, "__meta_kubernetes_pod_annotation_secrets_mode"),
        (Some("secrets.example.com"), "__meta_kubernetes_pod_annotation_secrets_example_com_mode"),
    ] {
        let mut values = all_on(json!({}));
        if let Some(p) = prefix {
            values["config"] = json!({"annotationPrefix": p});
        }
        let chart = Chart::render(&values);
        let relabel = &chart.one("PodMonitor")["spec"]["podMetricsEndpoints"][0]["relabelings"][0];
        assert_eq!(relabel["sourceLabels"], json!([meta]));
        assert_eq!(relabel["targetLabel"], "mode");
    }
}

// ---------------------------------------------------------------------------------------------
// The real thing

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `prometheus` on a free loopback port, its own data directory.
struct Prometheus {
    _child: KillOnDrop,
    port: u16,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Prometheus {
    fn start(config: &str, rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            _child: KillOnDrop(child),
            port,
            dir,
            rt: tokio::runtime::Runtime::new().unwrap(),
            client: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
        };
        wait_for_explained(
            "prometheus to be ready",
            LONG,
            || (p.get("/-/ready", &[]).0 == 200).then_some(()),
            || p.log(),
        );
        p
    }

    fn log(&self) -> String {
        format!(
            "\nprometheus log:\n{}",
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
        )
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        self.rt.block_on(async {
            match self.client.get(&url).query(query).send().await {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                Err(e) => (0, e.to_string()),
            }
        })
    }

    fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let (code, body) = self.get(path, query);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert!(code == 200 && v["status"] == "success", "{path} {query:?}: {code} {body}");
        v["data"].clone()
    }

    /// The instant query's result now.
    fn query(&self, expr: &str) -> Vec<Value> {
        self.api("/api/v1/query", &[("query", expr)])["result"].as_array().cloned().unwrap_or_default()
    }

    /// The series the expression returned at any second since `since`.
    fn query_since(&self, expr: &str, since: SystemTime) -> Vec<Value> {
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
        let (start, end) = (format!("{:.3}", secs(since)), format!("{:.3}", secs(SystemTime::now())));
        self.api("/api/v1/query_range", &[("query", expr), ("start", &start), ("end", &end), ("step", "1")])["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the expression has returned data since `since` for a series `wanted`
    /// accepts; returns those series.
    fn eventually(&self, what: &str, expr: &str, since: SystemTime, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
        wait_for_explained(
            &format!("{what}: {expr}"),
            LONG,
            || {
                let found: Vec<Value> =
                    self.query_since(expr, since).into_iter().filter(|s| wanted(&s["metric"])).collect();
                if found.is_empty() {
                    std::thread::sleep(Duration::from_millis(500));
                }
                (!found.is_empty()).then_some(found)
            },
            || self.log(),
        )
    }
}

fn pod_is(name: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["pod"] == name
}

fn any(_: &Value) -> bool {
    true
}

/// A CA and a serving certificate that expires in `days` days.
fn tls_expiring_in(days: u64) -> serve::Tls {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let when = secretmode::vocabulary::time::rfc3339(SystemTime::now() + Duration::from_secs(days * 86_400));
    let ymd: Vec<i32> = when[..10].split('-').map(|p| p.parse().unwrap()).collect();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "observability test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![serve::SERVICE.to_string(), "localhost".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(ymd[0], ymd[1] as u8, ymd[2] as u8);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    serve::Tls { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

/// Sends `n` reviews of `body` to the webhook; returns the HTTP statuses seen.
fn send_reviews(rt: &tokio::runtime::Runtime, server: &serve::Serve, ca: &str, body: &str, n: usize) -> BTreeSet<u16> {
    let client = server.client_builder(ca).build().unwrap();
    rt.block_on(async {
        let mut seen = BTreeSet::new();
        for _ in 0..n {
            let r = client
                .post(server.url())
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .expect("review");
            seen.insert(r.status().as_u16());
        }
        seen
    })
}

/// Allowed reviews every 200 ms from a thread of its own, as the API server sends them.
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Traffic {
    fn start(client: reqwest::ClientBuilder, url: String, body: String) -> Traffic {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let client = rt.block_on(async { client.build().unwrap() });
            let (mut ok, mut other) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                let r = rt.block_on(async {
                    client.post(&url).header("content-type", "application/json").body(body.clone()).send().await
                });
                match r {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => other.push(r.status().to_string()),
                    Err(e) => other.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (ok, other)
        });
        Traffic { stop, thread }
    }

    /// Stops sending: (reviews answered 200, anything else).
    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn review(annotations: Value) -> String {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.37"}]}});
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "shop", "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": pod, "oldObject": null, "dryRun": false,
    }})
    .to_string()
}

fn metrics_of(port: u16) -> String {
    match http("GET", &format!("http://127.0.0.1:{port}/metrics"), &[], None) {
        Ok((200, Value::String(s))) => s,
        other => panic!("GET /metrics on {port}: {other:?}"),
    }
}

const SECRET: &str = "s3cret-db-password";

#[test]
fn a_real_prometheus_scraping_real_components_answers_every_alert_and_dashboard_query() {
    // Thresholds that trip in seconds; the expressions are the chart's own.
    let chart = Chart::render(&all_on(json!({
        "errorRatio": 0.01,
        "latencyP99Seconds": 0.000001,
        "agentStaleSeconds": 2,
        "renderFailingWindow": "1m",
        "denials": {"window": "10s", "baselineWindow": "10m", "factor": 1.5, "minPerMinute": 1},
    })));
    let alerts = chart.alerts();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // OpenBao with one secret and a token that cannot be renewed.
    let mut bao = Bao::start_on(free_port());
    let (code, out) = bao.api(
        "PUT",
        "sys/policies/acl/app",
        Some(json!({"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }"})),
    );
    assert!((200..300).contains(&code), "{code} {out}");
    bao.put("app/db", json!({"password": SECRET}));
    let token = bao.create_token(json!({"policies": ["app"], "ttl": "900s", "renewable": false}));

    // Sidecar api-1: refreshes every second, stale after 8 s.
    let bao_addr = bao.addr.clone();
    let agent_spec = |port: u16| {
        let mut s = spec(vault_token_provider(&bao_addr), vec![item("db-pass", "app/db", Some("password"))], port);
        s.provider_name = "vault".into();
        s.token_file = None;
        s.refresh_interval_seconds = 1;
        s.max_staleness_seconds = 8;
        s.start_deadline_seconds = 3;
        s
    };
    let (a_port, b_port, w_port) = (free_port(), free_port(), free_port());
    let a_root = tempfile::tempdir().unwrap();
    let agent_a = start_sidecar(a_root.path(), &agent_spec(a_port), None, None, &[("VAULT_TOKEN", &token)]);
    wait_for_explained("api-1 fresh", LONG, || (agent_a.state() == "fresh").then_some(()), || agent_a.logs());

    // An eso watcher re-rendering cert.pem from the Secret volume.
    let w_root = tempfile::tempdir().unwrap();
    let secret_dir = w_root.path().join("etc/app/secrets");
    let mut volume = Volume::create(&secret_dir, &[("cert-b64", "c2VjcmV0LW9uZQ==")]);
    std::fs::create_dir_all(w_root.path().join("etc/app/rendered")).unwrap();
    let watch = WatchSpec {
        version: SPEC_VERSION,
        dir: "/etc/app/secrets".into(),
        on_change: None,
        render: Some(RenderSpec {
            version: SPEC_VERSION,
            source_dir: "/etc/app/secrets".into(),
            dest_dir: "/etc/app/rendered".into(),
            files: vec![RenderedFile {
                name: "cert.pem".into(),
                source: RenderSource::Template("{{ cert-b64 | base64decode }}".into()),
            }],
        }),
        health_port: w_port,
    };
    let w_log = std::fs::File::create(w_root.path().join("watch.log")).unwrap();
    let _watcher = KillOnDrop(
        Command::new(agent_bin())
            .arg("watch")
            .env("SECRETMODE_WATCH_SPEC", serde_json::to_string(&watch).unwrap())
            .env("SECRETMODE_WATCH_ROOT", w_root.path())
            .env("SECRETMODE_WATCH_HEALTH_ADDRESS", "127.0.0.1")
            .stdout(Stdio::from(w_log.try_clone().unwrap()))
            .stderr(Stdio::from(w_log))
            .spawn()
            .expect("start secretmode watch"),
    );

    // The webhook, its serving certificate ten days from expiry.
    let tls = tls_expiring_in(10);
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = tls.write(certs.path());
    let webhook = serve::Serve::start_with(&serve::Options {
        cert: Some(&cert),
        key: Some(&key),
        rust_log: Some("secretmode=error"),
        ..serve::Options::default()
    });

    // Scrape targets labelled as the ServiceMonitor (webhook) and PodMonitor (agents, watcher)
    // label them: namespace, pod, container, service; `mode` from the pod's annotation.
    let config = format!(
        r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yaml]
scrape_configs:
  - job_name: secretmode
    static_configs:
      - targets: ["127.0.0.1:{admin}"]
        labels: {{namespace: {NS}, service: secretmode, pod: secretmode-7d4b9-x2, container: secretmode, endpoint: metrics}}
  - job_name: podMonitor/{NS}/secretmode-agents/0
    static_configs:
      - targets: ["127.0.0.1:{a_port}"]
        labels: {{namespace: shop, pod: api-1, container: secretmode-agent, mode: sidecar}}
      - targets: ["127.0.0.1:{b_port}"]
        labels: {{namespace: shop, pod: api-2, container: secretmode-agent, mode: sidecar}}
      - targets: ["127.0.0.1:{w_port}"]
        labels: {{namespace: shop, pod: web-1, container: secretmode-watcher, mode: eso}}
"#,
        admin = webhook.admin
    );
    let prom = Prometheus::start(&config, &chart.rule_file());
    let start = SystemTime::now();

    prom.eventually("the watcher scraped", "up == 1", start, pod_is("web-1"));
    prom.eventually("api-1 scraped", "up == 1", start, pod_is("api-1"));
    prom.eventually("the webhook scraped", "up == 1", start, pod_is("secretmode-7d4b9-x2"));

    // Steady traffic (five reviews a second, allowed) until the end, and a couple of denials:
    // the baseline.
    let allowed = review(json!({}));
    let denied = review(json!({"secrets/mode": "nope"}));
    let traffic = Traffic::start(webhook.client_builder(&tls.ca_pem), webhook.url(), allowed);
    assert_eq!(send_reviews(&rt, &webhook, &tls.ca_pem, &denied, 2), BTreeSet::from([200]));

    // The token cannot be renewed: reported while everything is fresh.
    prom.eventually(
        "credentials that cannot be renewed",
        &alerts["SecretmodeAgentCredentialsExpiring"],
        start,
        pod_is("api-1"),
    );
    prom.eventually("the latency", &alerts["SecretmodeWebhookLatencyHigh"], start, any);
    prom.eventually(
        "the certificate ten days from expiry",
        &alerts["SecretmodeWebhookCertificateExpiring"],
        start,
        any,
    );

    // While healthy, the agent, watcher and webhook alerts return nothing: the expressions
    // are not true of any running component.
    for name in [
        "SecretmodeAgentRefreshesFailing",
        "SecretmodeAgentReportsStale",
        "SecretmodeAgentStale",
        "SecretmodeAgentOnFallback",
        "SecretmodeWatcherRenderFailing",
        "SecretmodeWebhookErrors",
        "SecretmodeWebhookDown",
    ] {
        let found = prom.query(&alerts[name]);
        assert!(found.is_empty(), "{name} while healthy: {found:?}");
    }

    // A volume swap the watcher cannot render (not base64), retried every 10 s.
    let t = SystemTime::now();
    volume.swap(&[("cert-b64", "not base64: two!")]);
    prom.eventually("the watcher's renders failing", &alerts["SecretmodeWatcherRenderFailing"], t, pod_is("web-1"));

    // OpenBao stops: api-1 fails, then goes past its max-staleness.
    let t = SystemTime::now();
    bao.stop();
    prom.eventually("api-1 failing", &alerts["SecretmodeAgentRefreshesFailing"], t, pod_is("api-1"));
    prom.eventually("api-1 stale", &alerts["SecretmodeAgentReportsStale"], t, pod_is("api-1"));
    prom.eventually("api-1 past the ceiling", &alerts["SecretmodeAgentStale"], t, pod_is("api-1"));

    // api-2 starts during the outage, from its fallback Secret.
    let t = SystemTime::now();
    let mut b = agent_spec(b_port);
    b.fallback_dir = Some("/var/run/secretmode/fallback".into());
    let b_root = tempfile::tempdir().unwrap();
    let fallback = BTreeMap::from([("db-pass", "fallback-password")]);
    let agent_b = start_sidecar(b_root.path(), &b, None, Some(&fallback), &[("VAULT_TOKEN", &token)]);
    prom.eventually("api-2 on its fallback", &alerts["SecretmodeAgentOnFallback"], t, pod_is("api-2"));

    // A burst of denials well above the baseline, and unreadable reviews (HTTP 400); before
    // it, the two early denials are the baseline and nothing fires.
    for name in ["SecretmodeWebhookDenialsHigh", "SecretmodeWebhookErrors"] {
        let found = prom.query(&alerts[name]);
        assert!(found.is_empty(), "{name} before the burst: {found:?}");
    }
    let t = SystemTime::now();
    assert_eq!(send_reviews(&rt, &webhook, &tls.ca_pem, &denied, 60), BTreeSet::from([200]));
    // The first failed request creates the counter's series; Prometheus sees a rate once a
    // later scrape finds it grown, as it would for a webhook that keeps failing.
    assert_eq!(send_reviews(&rt, &webhook, &tls.ca_pem, "not a review", 5), BTreeSet::from([400]));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(send_reviews(&rt, &webhook, &tls.ca_pem, "not a review", 20), BTreeSet::from([400]));
    prom.eventually("denials above the baseline", &alerts["SecretmodeWebhookDenialsHigh"], t, any);
    prom.eventually("the webhook erroring", &alerts["SecretmodeWebhookErrors"], t, any);

    // Every dashboard query returns data, with the variables as Grafana fills them ("All").
    prom.eventually("api-2 scraped", "secretmode_agent_state", t, pod_is("api-2"));
    let dashboard = chart.dashboard();
    let mut empty = Vec::new();
    for (title, expr) in dashboard_queries(&dashboard) {
        let q = expr
            .replace("$workload_namespace", ".*")
            .replace("$namespace", NS)
            .replace("$service", "secretmode")
            .replace("$mode", ".*")
            .replace("$__rate_interval", "1m");
        assert!(!q.contains('$'), "a variable the test does not fill: {q}");
        if prom.query(&q).is_empty() {
            empty.push(format!("{title}: {q}"));
        }
    }
    assert!(empty.is_empty(), "dashboard queries without data:\n{}{}", empty.join("\n"), prom.log());
    // Freshness by mode: both modes show up where the panel groups by them.
    let by_mode =
        prom.query("count by (mode) (secretmode_agent_cache_age_seconds or secretmode_watcher_changes_total)");
    let modes: BTreeSet<&str> = by_mode.iter().filter_map(|s| s["metric"]["mode"].as_str()).collect();
    assert_eq!(modes, BTreeSet::from(["eso", "sidecar"]));

    // The real /metrics: promtool's linter accepts each, no value leaks, and every name the
    // rules, unit tests and dashboard use is exported by one of them.
    let expositions = [
        ("webhook", metrics_of(webhook.admin)),
        ("agent on the provider", metrics_of(a_port)),
        ("agent on its fallback", metrics_of(b_port)),
        ("watcher", metrics_of(w_port)),
    ];
    let mut exported = BTreeSet::new();
    let dir = tempfile::tempdir().unwrap();
    for (what, text) in &expositions {
        let (ok, out) = promtool(&["check", "metrics"], dir.path(), Some(text));
        assert!(ok, "promtool check metrics on the {what}'s /metrics:\n{out}\n{text}");
        assert!(!text.contains(SECRET) && !text.contains("fallback-password"), "a value in the {what}'s metrics");
        exported.extend(exported_names(text));
    }
    let mut used = BTreeSet::new();
    for expr in alerts.values() {
        used.extend(metric_names(expr));
    }
    for (_, expr) in dashboard_queries(&dashboard) {
        used.extend(metric_names(&expr));
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        used.extend(metric_names(v["definition"].as_str().unwrap_or("")));
    }
    let (unit, _) = unit_test_cases();
    for t in unit["tests"].as_array().unwrap() {
        for s in t["input_series"].as_array().unwrap() {
            let series = s["series"].as_str().unwrap();
            let name = series.split('{').next().unwrap();
            assert!(name == "up" || name.starts_with("secretmode_"), "{series}");
            used.extend(metric_names(series));
        }
    }
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "names no component exports: {missing:?}\nexported: {exported:?}");
    assert!(used.len() >= 15, "{used:?}");

    // Prometheus evaluated the rules without an error.
    let groups = prom.api("/api/v1/rules", &[]);
    let rules: Vec<&Value> =
        groups["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert_eq!(rules.len(), alerts.len());
    for r in rules {
        assert_eq!(r["health"], "ok", "{r}");
    }

    // Last, the webhook stops: no replica up.
    let sent = traffic.stop();
    assert!(sent.0 > 50 && sent.1.is_empty(), "steady traffic: {} answered 200, others: {:?}", sent.0, sent.1);
    let t = SystemTime::now();
    webhook.stop();
    prom.eventually("the webhook down", &alerts["SecretmodeWebhookDown"], t, any);
    drop(agent_b);
}
