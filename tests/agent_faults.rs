//! Every failure a provider (or the network in front of it) can show, injected by the fault
//! proxy in front of a real OpenBao and a real moto server, against `init` and `sidecar`, with
//! and without a fallback Secret:
//!
//! - an outage (refused, reset, closed before the answer, cut or stalled mid-body, stalled
//!   before the headers, 5xx, 429, an HTML page, garbage, the wrong shape, a cut TLS
//!   handshake) allows the fallback, is retried, and is named with its status or I/O cause;
//! - a refusal (403, 404) fails fast, never uses the fallback, and says so;
//! - the sidecar keeps its last good files through any of them, its status file, `/readyz` and
//!   metrics agree, and it is fresh again within seconds of the fault being lifted.

mod agent_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agent_common::fault_proxy::{Fault, FaultProxy};
use agent_common::*;
use secretmode::agent::spec::AgentSpec;
use secretmode::providers::aws::AwsAuth;
use secretmode::providers::ProviderConfig;
use secretmode::vocabulary::paths::FALLBACK_DIR;
use serde_json::json;

const LONG: Duration = Duration::from_secs(40);
/// Fault lifted -> fresh again: a probe within 5 s (the capped backoff) or a retry within two
/// intervals (4 s), then one refresh; slack for a loaded machine.
const RECOVERY: Duration = Duration::from_secs(12);
const VAULT_READ: &str = "/v1/secret/data/";

#[derive(Clone, Debug)]
struct Case {
    fault: Fault,
    /// Only requests whose path contains this are faulted ("": every request).
    filter: &'static str,
    /// The error kind and the cause the one line / lastError must name.
    kind: &'static str,
    cause: &'static str,
    outage: bool,
}

fn case(fault: Fault, filter: &'static str, kind: &'static str, cause: &'static str, outage: bool) -> Case {
    Case { fault, filter, kind, cause, outage }
}

fn vault_cases() -> Vec<Case> {
    let r = VAULT_READ;
    vec![
        case(Fault::Refuse, "", "unreachable", "connection refused", true),
        case(Fault::Reset, r, "unreachable", "connection reset before the answer", true),
        case(Fault::Close, r, "unreachable", "connection closed before the answer", true),
        case(Fault::CutBody, r, "unreachable", "dropped mid-body: HTTP 200", true),
        case(Fault::StallBody, r, "unreachable", "stalled mid-body: HTTP 200", true),
        case(Fault::StallHead, r, "unreachable", "with no answer", true),
        case(Fault::Status(503), r, "unavailable", "HTTP 503", true),
        case(Fault::Status(429), r, "throttled", "HTTP 429", true),
        case(Fault::Html(502), r, "unavailable", "HTTP 502 (not a Vault answer: text/html", true),
        case(Fault::Html(200), r, "bad answer", "HTTP 200 but not a Vault answer (not JSON: text/html", true),
        case(Fault::Garbage, r, "bad answer", "HTTP 200 but not a Vault answer (not JSON", true),
        case(Fault::WrongShape, r, "bad answer", "JSON without data.data", true),
        case(Fault::Status(404), r, "not found", "HTTP 404", false),
        case(Fault::Status(403), r, "auth denied", "HTTP 403", false),
    ]
}

fn aws_cases() -> Vec<Case> {
    vec![
        case(Fault::Refuse, "", "unreachable", "connection refused", true),
        case(Fault::Reset, "", "unreachable", "connection reset before the answer", true),
        case(Fault::Close, "", "unreachable", "connection closed before the answer", true),
        case(Fault::CutBody, "", "unreachable", "dropped mid-body: HTTP 200", true),
        // Within a short start deadline the operation timeout fires first (it does not say
        // whether the head had arrived); later the SDK's stalled-stream protection names it.
        case(Fault::StallBody, "", "unreachable", "with no complete answer|stalled mid-body: HTTP 200", true),
        case(Fault::StallHead, "", "unreachable", "with no complete answer", true),
        case(Fault::Status(503), "", "unavailable", "HTTP 503 (not an AWS answer", true),
        case(Fault::Status(429), "", "throttled", "HTTP 429 (not an AWS answer", true),
        case(Fault::Html(502), "", "unavailable", "HTTP 502 (not an AWS answer: text/html", true),
        case(Fault::Html(200), "", "bad answer", "HTTP 200 (not an AWS answer: text/html", true),
        case(Fault::Garbage, "", "bad answer", "HTTP 200 (not an AWS answer", true),
        case(Fault::WrongShape, "", "bad answer", "neither SecretString nor SecretBinary", true),
        case(Fault::Status(404), "", "not found", "HTTP 404", false),
        case(Fault::Status(403), "", "auth denied", "HTTP 403", false),
    ]
}

/// What a test needs to run agents against one provider through a proxy.
#[derive(Clone)]
struct Target {
    name: &'static str,
    upstream: String,
    provider: fn(&str) -> ProviderConfig,
    env: Vec<(&'static str, String)>,
    /// The value the live entry holds for each item.
    live: BTreeMap<&'static str, &'static str>,
}

impl Target {
    fn spec(&self, proxy: &FaultProxy, fallback: bool, health_port: u16) -> AgentSpec {
        let items = vec![item("db-user", "app/db", Some("username")), item("db-pass", "app/db", Some("password"))];
        let mut s = spec((self.provider)(&proxy.url()), items, health_port);
        s.provider_name = self.name.into();
        s.token_file = None;
        s.start_deadline_seconds = 4;
        s.max_staleness_seconds = 120;
        if fallback {
            s.fallback_dir = Some(FALLBACK_DIR.into());
        }
        s
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

fn fallback_files() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([("db-user", "fb-user"), ("db-pass", "fb-pass")])
}

fn vault_target(bao: &Bao) -> Target {
    bao.put("app/db", json!({"username": "live-user", "password": "live-pass"}));
    Target {
        name: "vault",
        upstream: bao.hostport(),
        provider: vault_token_provider,
        env: vec![("VAULT_TOKEN", ROOT_TOKEN.to_string())],
        live: BTreeMap::from([("db-user", "live-user"), ("db-pass", "live-pass")]),
    }
}

fn aws_provider(endpoint: &str) -> ProviderConfig {
    ProviderConfig::Aws(secretmode::providers::aws::AwsProvider {
        region: "us-east-1".into(),
        endpoint: Some(endpoint.to_string()),
        version_stage: "AWSCURRENT".into(),
        auth: AwsAuth::Chain,
    })
}

fn aws_target(moto: &Moto) -> Target {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = moto.client().await;
        c.create_secret()
            .name("app/db")
            .secret_string(r#"{"username":"live-user","password":"live-pass"}"#)
            .send()
            .await
            .unwrap();
    });
    Target {
        name: "aws",
        upstream: moto.hostport(),
        provider: aws_provider,
        env: vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("HOME", std::env::temp_dir().join("secretmode-no-home").display().to_string()),
        ],
        live: BTreeMap::from([("db-user", "live-user"), ("db-pass", "live-pass")]),
    }
}

/// Runs `f` for every case, a few at a time (each case has its own proxy and agents).
fn each_case(cases: Vec<Case>, parallel: usize, f: impl Fn(&Case) + Sync) {
    for batch in cases.chunks(parallel) {
        std::thread::scope(|s| {
            let handles: Vec<_> = batch.iter().map(|c| (c, s.spawn(|| f(c)))).collect();
            let mut failed = Vec::new();
            for (c, h) in handles {
                if let Err(e) = h.join() {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failed.push(format!("{:?}: {msg}", c.fault));
                }
            }
            assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
        });
    }
}

/// Durations in a message are written as the flags take them (`1s900ms`, `10s`), not `1.9s`.
fn durations_are_go(line: &str) {
    let mut seen = 0;
    for (before, after) in
        [(" attempts in ", ")"), (" attempt in ", ")"), ("timed out after ", " "), ("until the ", " timeout")]
    {
        for (i, _) in line.match_indices(before) {
            let rest = &line[i + before.len()..];
            let d = &rest[..rest.find(after).unwrap_or(rest.len())];
            assert!(
                !d.contains('.') && secretmode::vocabulary::duration::parse(d).is_ok(),
                "{d:?} is not a Go duration: {line}"
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "the line says how long it tried: {line}");
}

/// `cause` may list alternatives separated by `|`.
fn names(text: &str, c: &Case) -> bool {
    text.contains(&format!("{}: ", c.kind)) && c.cause.split('|').any(|alt| text.contains(alt))
}

fn assert_names(what: &str, text: &str, c: &Case) {
    assert!(names(text, c), "{what}: expected `{}` and `{}` in: {text}", c.kind, c.cause);
}

/// init: without a fallback every case exits 1 with exactly one line naming provider, path,
/// kind and cause, refusals at once; with one, outages exit 0 from the fallback and refusals
/// still exit 1 ("fallback not used").
fn init_matrix(target: &Target, cases: Vec<Case>) {
    each_case(cases, 7, |c| {
        let proxy = FaultProxy::start(&target.upstream);
        proxy.set_for(c.filter, c.fault.clone());
        for fallback in [false, true] {
            let spec = target.spec(&proxy, fallback, 0);
            let root = tempfile::tempdir().unwrap();
            prepare_root(root.path(), &spec, None, Some(&fallback_files()));
            let (code, stderr, elapsed) = run_once(root.path(), &spec, &target.env());
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "fallback {fallback}: exactly one line:\n{stderr}");
            let line = lines[0];
            let mount = root.path().join("var/run/secrets-cache");
            let status: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(mount.join(".secretmode/status.json")).unwrap()).unwrap();
            assert_names(&format!("fallback {fallback}"), line, c);
            durations_are_go(line);
            assert!(line.contains(&format!("provider {}", target.name)), "{line}");
            if c.fault != Fault::Refuse {
                assert!(line.contains("app/db"), "the failing path: {line}");
            }
            if c.outage {
                assert!(elapsed < Duration::from_secs(4 + 4), "within the deadline: {elapsed:?}");
            } else {
                assert!(line.contains("not retried"), "{line}");
                assert!(elapsed < Duration::from_secs(3), "a refusal fails fast: {elapsed:?}");
            }
            match (fallback, c.outage) {
                (true, true) => {
                    assert_eq!(code, 0, "{line}");
                    assert!(line.contains("started from the fallback Secret"), "{line}");
                    assert_eq!(std::fs::read_to_string(mount.join("db-pass")).unwrap(), "fb-pass");
                    assert_eq!(status["state"], "fallback");
                }
                (true, false) => {
                    assert_eq!(code, 1, "{line}");
                    assert!(line.contains("fallback not used"), "{line}");
                    assert!(!mount.join("db-pass").exists());
                }
                (false, _) => {
                    assert_eq!(code, 1, "{line}");
                    assert!(!mount.join("db-pass").exists());
                    assert_eq!(status["state"], "failing");
                    assert_eq!(status["lastErrorKind"], c.kind);
                }
            }
        }
    });
}

/// The state as the three views report it, which must agree.
fn views(agent: &AgentProc) -> (String, String, Option<String>) {
    let file = agent.state();
    let (_, ready) = agent.get("/readyz");
    let metric = ["starting", "fresh", "failing", "stale", "fallback"]
        .into_iter()
        .find(|s| agent.metric("secretmode_agent_state", &format!("state=\"{s}\"")) == Some(1.0))
        .map(String::from);
    (file, ready.trim().to_string(), metric)
}

fn wait_views(agent: &AgentProc, state: &str, timeout: Duration) {
    wait_for_explained(
        &format!("status.json, /readyz and metrics all `{state}`"),
        timeout,
        || {
            let (f, r, m) = views(agent);
            (f == state && r == state && m.as_deref() == Some(state)).then_some(())
        },
        || format!("; views {:?}; log:\n{}", views(agent), agent.logs()),
    );
}

/// sidecar: started under the fault (with a fallback: outages serve it, refusals keep the app
/// waiting; without one: the app waits), fresh within seconds once it is lifted; the same
/// fault on a running sidecar keeps the live files, reports it, and recovers again.
fn sidecar_matrix(target: &Target, cases: Vec<Case>) {
    each_case(cases, 5, |c| {
        let proxy = FaultProxy::start(&target.upstream);
        proxy.set_for(c.filter, c.fault.clone());
        let spec_fb = target.spec(&proxy, true, free_port());
        let spec_plain = target.spec(&proxy, false, free_port());
        let (root_fb, root_plain) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let env = target.env();
        let with_fb = start_sidecar(root_fb.path(), &spec_fb, None, Some(&fallback_files()), &env);
        let plain = start_sidecar(root_plain.path(), &spec_plain, None, None, &env);

        // Past the start deadline under the fault.
        wait_for("both start-ups to end", LONG, || {
            let done = |a: &AgentProc| a.logs().contains("still trying");
            (done(&with_fb) && done(&plain)).then_some(())
        });
        if c.outage {
            assert_eq!(with_fb.get("/startup").0, 200, "outage: started from the fallback");
            assert_eq!(with_fb.file("db-pass").as_deref(), Some("fb-pass"));
            wait_views(&with_fb, "fallback", LONG);
        } else {
            assert_eq!(with_fb.get("/startup").0, 503, "refusal: the fallback is not used");
            assert!(with_fb.logs().contains("fallback not used"), "{}", with_fb.logs());
            assert!(with_fb.file("db-pass").is_none());
        }
        assert_eq!(plain.get("/startup").0, 503, "no files: the app must wait");
        let last = plain.status()["lastError"].as_str().unwrap_or_default().to_string();
        assert_names("plain sidecar lastError", &last, c);

        // Lifted: both fresh with live values within seconds.
        proxy.clear();
        let lifted = Instant::now();
        for a in [&with_fb, &plain] {
            wait_views(a, "fresh", RECOVERY);
            assert_eq!(a.file("db-pass").as_deref(), Some(target.live["db-pass"]));
            assert_eq!(a.get("/startup").0, 200);
        }
        let recovered = lifted.elapsed();
        assert!(recovered < RECOVERY, "recovered in {recovered:?}");
        // Figures for docs/RELIABILITY.md (`cargo test --test agent_faults -- --nocapture`).
        eprintln!("{} {:?}: both sidecars fresh {recovered:.1?} after the fault was lifted", target.name, c.fault);

        // The same fault on a running sidecar: live files kept, the cause reported, the three
        // views agree; then fresh again.
        proxy.set_for(c.filter, c.fault.clone());
        wait_for_explained(
            "the fault reported",
            LONG,
            || {
                let s = with_fb.status();
                let e = s["lastError"].as_str().unwrap_or_default();
                (s["state"] == "failing" && names(e, c)).then_some(())
            },
            || format!("; status {}; log:\n{}", with_fb.status(), with_fb.logs()),
        );
        let (f, r, m) = views(&with_fb);
        assert!(f == "failing" && r == "failing" && m.as_deref() == Some("failing"), "views agree: {f} {r} {m:?}");
        assert_eq!(with_fb.file("db-user").as_deref(), Some(target.live["db-user"]), "last good file kept");
        assert_eq!(with_fb.file("db-pass").as_deref(), Some(target.live["db-pass"]));
        assert!(c.cause.split('|').any(|alt| with_fb.logs().contains(alt)), "the log names the cause");
        proxy.clear();
        wait_views(&with_fb, "fresh", RECOVERY + Duration::from_secs(10));
        for a in [&with_fb, &plain] {
            a.assert_no_values(&["live-user", "live-pass", "fb-user", "fb-pass"]);
        }
    });
}

#[test]
fn vault_init_under_every_fault() {
    let bao = Bao::start();
    init_matrix(&vault_target(&bao), vault_cases());
}

#[test]
fn aws_init_under_every_fault() {
    let moto = Moto::start();
    init_matrix(&aws_target(&moto), aws_cases());
}

#[test]
fn vault_sidecar_under_every_fault() {
    let bao = Bao::start();
    sidecar_matrix(&vault_target(&bao), vault_cases());
}

#[test]
fn aws_sidecar_under_every_fault() {
    let moto = Moto::start();
    sidecar_matrix(&aws_target(&moto), aws_cases());
}

/// A TLS handshake cut by the peer is an outage (the fallback is used); an untrusted
/// certificate is a mistake (it is not).
#[test]
fn a_cut_tls_handshake_is_an_outage() {
    let proxy = FaultProxy::start("127.0.0.1:1");
    proxy.set(Fault::Close);
    let https = format!("https://127.0.0.1:{}", proxy.port);
    for (name, provider, env) in [
        ("vault", vault_token_provider(&https), vec![("VAULT_TOKEN", ROOT_TOKEN)]),
        (
            "aws",
            aws_provider(&https),
            vec![("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s"), ("AWS_EC2_METADATA_DISABLED", "true")],
        ),
    ] {
        let mut s = spec(provider, vec![item("db-pass", "app/db", Some("password"))], 0);
        s.provider_name = name.into();
        s.token_file = None;
        s.start_deadline_seconds = 2;
        let root = tempfile::tempdir().unwrap();
        let (code, stderr, _) = run_once(root.path(), &s, &env);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("unreachable") && stderr.contains("TLS handshake cut"), "{name}: {stderr}");
        s.fallback_dir = Some(FALLBACK_DIR.into());
        let root = tempfile::tempdir().unwrap();
        prepare_root(root.path(), &s, None, Some(&BTreeMap::from([("db-pass", "fb-pass")])));
        let (code, stderr, _) = run_once(root.path(), &s, &env);
        assert_eq!(code, 0, "{name}: {stderr}");
        assert!(stderr.contains("started from the fallback Secret"), "{stderr}");
    }
}

/// During a long outage the probe rate stays flat (at most one a second, about one per 3 s),
/// whatever the refresh interval; the provider's return is noticed within seconds even with
/// a long interval.
#[test]
fn a_long_outage_sees_a_flat_request_rate_and_recovery_takes_seconds() {
    let bao = Bao::start();
    let target = vault_target(&bao);
    let proxy = FaultProxy::start(&target.upstream);
    let mut s = target.spec(&proxy, false, free_port());
    s.refresh_interval_seconds = 300;
    s.max_staleness_seconds = 600;
    proxy.set(Fault::Status(503));
    let root = tempfile::tempdir().unwrap();
    let agent = start_sidecar(root.path(), &s, None, None, &target.env());
    wait_for("start-up to give up", LONG, || agent.logs().contains("still trying").then_some(()));
    let mut per_window = Vec::new();
    for _ in 0..3 {
        let before = proxy.count();
        std::thread::sleep(Duration::from_secs(8));
        per_window.push(proxy.count() - before);
    }
    // At most one probe a second (8 per window, plus one in flight); at least one per window
    // (the cap is 5 s); the last window no busier than the first plus jitter's slack.
    for n in &per_window {
        assert!((1..=9).contains(n), "requests per 8 s window: {per_window:?}");
    }
    assert!(per_window[2] <= per_window[0] + 3, "the rate does not grow: {per_window:?}");
    assert!(agent.metric("secretmode_agent_probes_total", "outcome=\"down\"").unwrap_or(0.0) >= 3.0);
    proxy.clear();
    let lifted = Instant::now();
    wait_views(&agent, "fresh", RECOVERY);
    let took = lifted.elapsed();
    assert!(took < Duration::from_secs(8), "noticed within seconds with a 300 s interval: {took:?}");
    eprintln!("long outage: requests per 8 s window {per_window:?}; fresh {took:.1?} after the provider was back");
    assert!(agent.logs().contains("provider answering again"), "{}", agent.logs());
}
