//! `secretmode audit --cluster` against kube's mock service (`tower_test::mock` behind
//! `kube::Client::new`), answering with recorded API shapes from tests/fixtures/cluster/.
//! No real API server can be had on these machines; the requests the audit makes (paths,
//! pagination, read-only verbs) are asserted here instead.
//!
//! Regenerate the golden files with `UPDATE_GOLDEN=1 cargo test --test audit_cluster` (refused when
//! `CI=true`).

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};

use hyper::{Request, Response};
use k8s_openapi::chrono::{DateTime, Utc};
use kube::client::Body;
use secretmode::commands::audit::{self, ClusterError, Format, Report};
use secretmode::config::Config;
use tower_test::mock;

fn config() -> Config {
    Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit/config.yaml")).unwrap()
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z").unwrap().with_timezone(&Utc)
}

const ALL: [(&str, &str, u16); 5] = [
    ("/api/v1/pods", "pods-page1.json", 200),
    ("/api/v1/pods", "pods-page2.json", 200),
    ("/apis/external-secrets.io/v1/externalsecrets", "externalsecrets.json", 200),
    ("/apis/secrets-store.csi.x-k8s.io/v1/secretproviderclasses", "secretproviderclasses.json", 200),
    ("/apis/external-secrets.io/v1/clustersecretstores", "clustersecretstores.json", 200),
];

async fn run(
    routes: Vec<(&'static str, &'static str, u16)>,
    namespace: Option<&str>,
) -> (Result<Report, ClusterError>, Vec<String>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(support::audit::api_server(handle, routes, seen.clone()));
    let client = kube::Client::new(service, "default");
    let report = audit::audit_cluster(client, namespace, &config(), now()).await;
    server.abort();
    let seen = seen.lock().unwrap().clone();
    (report, seen)
}

fn golden(name: &str, actual: &str) {
    support::golden::check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster").join(name), actual);
}

#[tokio::test]
async fn cluster_audit_reads_pods_externalsecrets_and_classes() {
    let (report, seen) = run(ALL.to_vec(), None).await;
    let report = report.expect("audit succeeds");
    // Read-only, paged, cluster-wide.
    assert!(seen.iter().all(|r| r.starts_with("GET ")), "{seen:?}");
    // Pods (two pages), ExternalSecrets, SecretProviderClasses, SecretStores, ClusterSecretStores.
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(seen[0].starts_with("GET /api/v1/pods?") && seen[0].contains("limit=500"), "{seen:?}");
    assert!(seen[1].contains("continue=eyJ2Ijoi"), "second page requested with the token: {seen:?}");

    golden("report.txt", &audit::render(&report, Format::Table));
    golden("report.json", &audit::render(&report, Format::Json));
    assert_eq!(report.exit_code(), 1);

    let pod = |name: &str| report.workloads.iter().find(|w| w.name == name).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(pod("api-7f9c6d8b5-x2k4q").injection.as_deref(), Some("injected"));
    assert_eq!(pod("agent-9xq2z").injection.as_deref(), Some("injected"));
    assert_eq!(pod("api-7f9c6d8b5-old01").injection.as_deref(), Some("not injected"));
    assert_eq!(pod("nginx").injection.as_deref(), Some("-"));
    assert_eq!(pod("agent-9xq2z").staleness.as_deref(), Some("ESO refresh 15m (ExternalSecret unhealthy)"));

    let has = |id: &str, object: &str, text: &str| {
        report.findings.iter().any(|f| f.check.id == id && f.object == object && f.message.contains(text))
    };
    assert!(has("SM008", "Pod/api-7f9c6d8b5-old01", "carries no injection"));
    assert!(has("SM009", "Pod/reports-5d4c-abcde", "SecretProviderClass reports does not exist in analytics"));
    assert!(!has("SM009", "Pod/ledger-0", ""), "ledger-db exists");
    assert!(has("SM010", "ExternalSecret/api-fallback", "Ready is False (reason SecretSyncedError)"));
    assert!(has("SM011", "ExternalSecret/agent-creds", "last refresh 2h ago, older than refreshInterval 15m"));
    assert!(!has("SM011", "ExternalSecret/api-fallback", ""), "refreshed 30m ago with a 1h interval");
    assert!(!has("SM011", "ExternalSecret/ledger-rotation", ""), "refreshInterval 0 never refreshes");
    assert!(has("SM012", "ExternalSecret/agent-creds", "generation 3 is not synced yet (last synced generation 2)"));
    assert!(has("SM001", "Pod/ledger-0", "mode csi, not allowed here"));

    let es = |name: &str| report.external_secrets.iter().find(|e| e.name == name).unwrap();
    assert!(es("agent-creds").stale && es("agent-creds").pending.is_some());
    assert_eq!(es("api-fallback").reason.as_deref(), Some("SecretSyncedError"));
}

#[tokio::test]
async fn namespace_scoped_and_missing_crds_are_notes() {
    let routes = vec![("/api/v1/namespaces/team-a/pods", "pods-page2.json", 200)];
    let (report, seen) = run(routes, Some("team-a")).await;
    let report = report.expect("missing CRDs are not fatal");
    // Everything in the namespace, except ClusterSecretStores, which are cluster-scoped.
    let cluster_scoped = |r: &&String| r.contains("/clustersecretstores?");
    assert!(seen.iter().filter(|r| !cluster_scoped(r)).all(|r| r.contains("/namespaces/team-a/")), "{seen:?}");
    assert_eq!(seen.iter().filter(cluster_scoped).count(), 1, "{seen:?}");
    let notes: Vec<&str> =
        report.findings.iter().filter(|f| f.check.id == "SM013").map(|f| f.message.as_str()).collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes.iter().any(|n| n.contains("ExternalSecret is not served")));
    // Without the SecretProviderClass API, classes cannot be checked, so none is reported missing.
    assert!(!report.findings.iter().any(|f| f.check.id == "SM009"));
}

#[tokio::test]
async fn forbidden_names_the_resource_and_the_fix() {
    let routes = vec![("/api/v1/pods", "forbidden.json", 403)];
    let (report, _) = run(routes, None).await;
    let err = report.expect_err("403 is an error").to_string();
    assert!(err.contains("listing pods: forbidden") && err.contains("docs/AUDIT.md"), "{err}");
}

/// `--load` over a cluster: each live pod counts once (a DaemonSet's pods are its nodes), the
/// ExternalSecrets once each; the payments budget (SM016) is judged on the live pods.
#[tokio::test]
async fn cluster_load_counts_live_pods() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit/config.yaml"))
        .unwrap()
        .replace(
            "      requireFallback: true\n",
            "      requireFallback: true\n      maxProviderRequestsPerSecond: 0.005\n",
        );
    let text = format!("{text}\nproviderLoad:\n  vault:\n    rateLimit: 20\n  aws:\n    costPer10kRequests: 0.05\n");
    let config = Config::from_yaml(&text, "load.yaml").unwrap();
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(support::audit::api_server(handle, ALL.to_vec(), Arc::new(Mutex::new(Vec::new()))));
    let client = kube::Client::new(service, "default");
    let report = audit::audit_cluster(client, None, &config, now()).await;
    server.abort();
    let mut report = report.expect("audit succeeds");
    audit::load::apply(&mut report, &config, audit::load::LoadOptions { report: true, nodes: 7 });
    golden("load.txt", &audit::render(&report, Format::Table));
    golden("load.json", &audit::render(&report, Format::Json));

    let load = report.load.as_ref().expect("load section");
    assert_eq!(load.nodes, None, "--nodes does not apply to live pods");
    let api: Vec<_> = load.readers.iter().filter(|r| r.object.starts_with("Pod/api-")).collect();
    assert_eq!(api.len(), 1, "each injected pod once: {api:?}");
    assert!(api.iter().all(|r| r.readers == 1 && r.provider == "vault"), "{api:?}");
    assert!(
        load.notes
            .iter()
            .any(|n| n.contains("not injected (no agent until restarted): payments/Pod/api-7f9c6d8b5-old01")),
        "a pod without its agent reads nothing: {:?}",
        load.notes
    );
    let es: Vec<&str> =
        load.readers.iter().filter(|r| r.object.starts_with("ExternalSecret/")).map(|r| r.object.as_str()).collect();
    assert_eq!(es, ["ExternalSecret/api-fallback", "ExternalSecret/ledger-rotation", "ExternalSecret/agent-creds"]);
    let budget = report.findings.iter().find(|f| f.check.id == "SM016").expect("payments over its budget");
    assert_eq!((budget.namespace.as_str(), budget.level.as_str()), ("payments", "error"));
    assert!(budget.message.contains("maxProviderRequestsPerSecond 0.005/s"), "{}", budget.message);
}

/// `--assume-down` over a live cluster: each pod counts once; golden table and JSON.
#[tokio::test]
async fn blast_radius_counts_each_pod_once() {
    let (report, _) = run(ALL.to_vec(), None).await;
    let mut report = report.expect("audit succeeds");
    let errors_before = report.summary.errors;
    let down = audit::blast::providers(&["vault".to_string()], &config()).unwrap();
    let fail_on: Vec<audit::blast::FailOn> =
        ["blocked@payments", "fallback"].iter().map(|f| f.parse().unwrap()).collect();
    audit::blast::apply(&mut report, &down, &fail_on);
    golden("blast.txt", &audit::render(&report, Format::Table));
    golden("blast.json", &audit::render(&report, Format::Json));

    let b = report.blast_radius.as_ref().expect("blast radius");
    let row = |name: &str| b.affected.iter().filter(|a| a.name == name).collect::<Vec<_>>();
    // The two api pods share ReplicaSet api-7f9c6d8b5, shown as its Deployment, but not their
    // staleness (one predates an annotation change): two rows of one pod each. None is per node
    // in a cluster.
    let api = row("api");
    assert_eq!(
        api.iter().map(|a| (a.kind.as_str(), a.pods, a.stale.as_str())).collect::<Vec<_>>(),
        [("Deployment", 1, "after 55m–1h"), ("Deployment", 1, "after 28m–30m")]
    );
    assert!(b.affected.iter().all(|a| !a.per_node));
    assert_eq!(b.total.from_fallback.pods, 2);
    // ledger-0 is a hand-built csi pod of StatefulSet ledger: blocked while Vault is down.
    assert_eq!(row("ledger")[0].new_pods, secretmode::timing::NewPods::Blocked);
    let sm015: Vec<&str> =
        report.findings.iter().filter(|f| f.check.id == "SM015").map(|f| f.object.as_str()).collect();
    assert_eq!(sm015, ["Deployment/api", "StatefulSet/ledger"], "one finding per controller and message");
    assert_eq!(report.summary.errors, errors_before + sm015.len());
}

/// `--assume-down` groups a controller's pods that get the same answer into one row, counted.
#[test]
fn blast_radius_groups_pods_by_controller() {
    let pod = |name: &str, owner: Option<(&str, &str)>| {
        let mut metadata = serde_json::json!({
            "name": name,
            "namespace": "shop",
            "annotations": {"secrets/mode": "init", "secrets/provider": "vault", "secrets/item.token": "shop/token#v"},
        });
        if let Some((kind, owner)) = owner {
            metadata["ownerReferences"] = serde_json::json!([
                {"apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "u", "controller": true}
            ]);
        }
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}})
    };
    let state = audit::ClusterState {
        pods: vec![
            pod("web-6b8f-a", Some(("ReplicaSet", "web-6b8f"))),
            pod("web-6b8f-b", Some(("ReplicaSet", "web-6b8f"))),
            pod("web-6b8f-c", Some(("ReplicaSet", "web-6b8f"))),
            pod("node-x1", Some(("DaemonSet", "node"))),
            pod("node-x2", Some(("DaemonSet", "node"))),
            pod("lonely", None),
        ],
        ..Default::default()
    };
    let mut report = audit::analyze_cluster(&state, &config(), now());
    let down = audit::blast::providers(&["vault".to_string()], &config()).unwrap();
    audit::blast::apply(&mut report, &down, &["blocked".parse().unwrap()]);
    let b = report.blast_radius.as_ref().unwrap();
    let rows: Vec<(String, u32)> = b.affected.iter().map(|a| (format!("{}/{}", a.kind, a.name), a.pods)).collect();
    assert_eq!(rows, [("DaemonSet/node".to_string(), 2), ("Pod/lonely".into(), 1), ("ReplicaSet/web-6b8f".into(), 3)]);
    assert_eq!(b.total.cannot_be_replaced.pods, 6, "every pod counts once, a DaemonSet's too");
    assert_eq!(b.total.cannot_be_replaced.per_node, 0);
    let sm015: Vec<&str> =
        report.findings.iter().filter(|f| f.check.id == "SM015").map(|f| f.object.as_str()).collect();
    assert_eq!(sm015, ["DaemonSet/node", "Pod/lonely", "ReplicaSet/web-6b8f"]);
    assert_eq!(b.failed, 3);
}
