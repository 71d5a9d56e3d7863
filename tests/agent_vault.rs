//! The agent against a real OpenBao dev server: JWT auth with a test signing key (the same
//! code path as Kubernetes auth), KV v2, and the failure drills of issue 3.

mod agent_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agent_common::fault_proxy::{Fault, FaultProxy};
use agent_common::*;
use secretmode::providers::vault::VaultAuth;
use secretmode::providers::{ProviderConfig, SecretKeyRef};
use serde_json::json;

const LONG: Duration = Duration::from_secs(30);

fn db_items() -> Vec<secretmode::providers::AgentItem> {
    vec![item("db-user", "app/db", Some("username")), item("db-pass", "app/db", Some("password"))]
}

fn started(agent: &AgentProc) {
    wait_for("startup probe to pass", LONG, || (agent.get("/startup").0 == 200).then_some(()));
}

fn wait_state(agent: &AgentProc, state: &str, timeout: Duration) {
    wait_for(&format!("state {state}"), timeout, || (agent.state() == state).then_some(()))
}

#[test]
fn sidecar_keeps_last_good_files_through_an_outage_and_recovers() {
    let signer = Signer::new();
    let mut bao = Bao::start();
    bao.configure_jwt(&signer);
    bao.put("app/db", json!({"username": "user-one", "password": "pass-one"}));
    let root = tempfile::tempdir().unwrap();
    let spec = spec(bao.provider(), db_items(), free_port());
    let agent = start_sidecar(root.path(), &spec, Some(&signer.token("vault")), None, &[]);

    started(&agent);
    assert_eq!(agent.file("db-user").as_deref(), Some("user-one"));
    assert_eq!(agent.file("db-pass").as_deref(), Some("pass-one"));
    let status = agent.status();
    assert_eq!(status["state"], "fresh", "{status}");
    assert_eq!(status["items"][0]["version"], "1");
    assert_eq!(agent.get("/healthz").0, 200);
    assert_eq!(agent.get("/readyz").0, 200);
    assert_eq!(agent.metric("secretmode_agent_state", "state=\"fresh\""), Some(1.0));
    assert!(agent.metric("secretmode_agent_refreshes_total", "outcome=\"success\"").unwrap_or(0.0) >= 1.0);
    assert!(agent.metric("secretmode_agent_last_success_timestamp_seconds", "").unwrap_or(0.0) > 1.0e9);
    assert!(agent.metric("secretmode_agent_provider_requests_total", "").unwrap_or(0.0) >= 2.0, "login + read");

    bao.stop();
    wait_state(&agent, "failing", LONG);
    assert_eq!(agent.file("db-user").as_deref(), Some("user-one"), "last good file kept");
    assert_eq!(agent.metric("secretmode_agent_state", "state=\"failing\""), Some(1.0));
    let err = agent.status()["lastError"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("unreachable"), "{err}");

    wait_state(&agent, "stale", LONG);
    assert_eq!(agent.metric("secretmode_agent_state", "state=\"stale\""), Some(1.0));
    assert!(agent.metric("secretmode_agent_cache_age_seconds", "").unwrap_or(0.0) > 6.0);
    assert!(agent.metric("secretmode_agent_refreshes_total", "outcome=\"failure\"").unwrap_or(0.0) >= 1.0);
    assert_eq!(agent.file("db-pass").as_deref(), Some("pass-one"), "still the last good value");
    assert_eq!(agent.get("/healthz").0, 200, "liveness never reflects the provider");
    assert_eq!(agent.get("/startup").0, 200);

    bao.restart();
    bao.configure_jwt(&signer);
    bao.put("app/db", json!({"username": "user-two", "password": "pass-two"}));
    wait_state(&agent, "fresh", LONG);
    assert_eq!(agent.file("db-pass").as_deref(), Some("pass-two"));
    assert_eq!(agent.metric("secretmode_agent_state", "state=\"fresh\""), Some(1.0));
    assert!(agent.metric("secretmode_agent_cache_age_seconds", "").unwrap_or(99.0) < 6.0);
    agent.assert_no_values(&["user-one", "pass-one", "user-two", "pass-two"]);
}

#[test]
fn a_restarted_sidecar_serves_its_previous_files_during_an_outage() {
    let signer = Signer::new();
    let mut bao = Bao::start();
    bao.configure_jwt(&signer);
    bao.put("app/db", json!({"username": "kept-user", "password": "kept-pass"}));
    let root = tempfile::tempdir().unwrap();
    let spec = spec(bao.provider(), db_items(), free_port());
    let mut agent = start_sidecar(root.path(), &spec, Some(&signer.token("vault")), None, &[]);
    started(&agent);
    agent.stop();
    bao.stop();

    // Same volume, new process (the kubelet restarting the container), provider down.
    let agent = start_sidecar(root.path(), &spec, Some(&signer.token("vault")), None, &[]);
    started(&agent);
    assert_eq!(agent.file("db-pass").as_deref(), Some("kept-pass"));
    wait_state(&agent, "failing", LONG);
    assert_eq!(agent.status()["items"][1]["version"], "1", "versions carried over");
    wait_state(&agent, "stale", LONG);
    assert_eq!(agent.file("db-user").as_deref(), Some("kept-user"));
}

#[test]
fn rotation_switches_the_whole_set_within_one_interval() {
    let signer = Signer::new();
    let bao = Bao::start();
    bao.configure_jwt(&signer);
    bao.put("app/db", json!({"username": "u1", "password": "p1"}));
    let root = tempfile::tempdir().unwrap();
    let spec = spec(bao.provider(), db_items(), free_port());
    let agent = start_sidecar(root.path(), &spec, Some(&signer.token("vault")), None, &[]);
    started(&agent);

    // Readers that resolve ..data once see one generation: never u1 with p2.
    let mount = agent.mount();
    let read_set = || -> Option<(String, String)> {
        let dir = mount.join(std::fs::read_link(mount.join("..data")).ok()?);
        Some((std::fs::read_to_string(dir.join("db-user")).ok()?, std::fs::read_to_string(dir.join("db-pass")).ok()?))
    };
    assert_eq!(read_set(), Some(("u1".into(), "p1".into())));
    let version = bao.put("app/db", json!({"username": "u2", "password": "p2"}));
    let rotated = Instant::now();
    let mut seen = Vec::new();
    wait_for("the rotated set", LONG, || {
        let pair = read_set()?;
        seen.push(pair.clone());
        (pair == ("u2".into(), "p2".into())).then_some(())
    });
    let interval = Duration::from_secs(spec.refresh_interval_seconds);
    // Slack for a loaded CI machine; the agent itself refreshes no later than one interval.
    assert!(rotated.elapsed() < interval + Duration::from_secs(5), "picked up within one interval (+ slack)");
    for pair in &seen {
        assert!(pair == &("u1".into(), "p1".into()) || pair == &("u2".into(), "p2".into()), "mixed set {pair:?}");
    }
    assert_eq!(agent.file("db-user").as_deref(), Some("u2"));
    wait_for("status version", LONG, || {
        (agent.status()["items"][1]["version"].as_str().and_then(|v| v.parse::<u64>().ok()) == Some(version))
            .then_some(())
    });
    let timestamped: Vec<_> = std::fs::read_dir(&mount)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("..") && e.file_name() != "..data")
        .collect();
    assert_eq!(timestamped.len(), 1, "old generations are cleaned up");
}

#[test]
fn bad_answers_leave_the_good_files_and_say_why() {
    let signer = Signer::new();
    let bao = Bao::start();
    bao.configure_jwt(&signer);
    let good = json!({"username": "good-user", "password": "good-pass"});
    bao.put("app/db", good.clone());
    let root = tempfile::tempdir().unwrap();
    let mut spec = spec(bao.provider(), db_items(), free_port());
    spec.max_staleness_seconds = 300;
    let agent = start_sidecar(root.path(), &spec, Some(&signer.token("vault")), None, &[]);
    started(&agent);

    type Case<'a> = (&'static str, Box<dyn Fn() + 'a>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "wrong type",
            Box::new(|| {
                bao.put("app/db", json!({"username": {"nested": "x"}, "password": "p"}));
            }),
            "holds an object",
        ),
        (
            "empty value",
            Box::new(|| {
                bao.put("app/db", json!({"username": "", "password": "p"}));
            }),
            "value is empty",
        ),
        (
            "missing key",
            Box::new(|| {
                bao.put("app/db", json!({"password": "p"}));
            }),
            "key `username` not found",
        ),
        (
            "unknown path",
            Box::new(|| drop(bao.api("DELETE", "secret/metadata/app/db", None))),
            "secret/app/db: not found",
        ),
        ("auth denied", Box::new(|| drop(bao.api("DELETE", "sys/policies/acl/app", None))), "auth denied"),
    ];
    for (what, break_it, expect) in cases {
        break_it();
        wait_for(&format!("{what} reported"), LONG, || {
            let s = agent.status();
            (s["state"] == "failing" && s["lastError"].as_str().is_some_and(|e| e.contains(expect))).then_some(())
        });
        assert_eq!(agent.file("db-user").as_deref(), Some("good-user"), "{what}: good file untouched");
        assert_eq!(agent.file("db-pass").as_deref(), Some("good-pass"), "{what}: good file untouched");
        // Repair, and wait until the agent is fresh again before the next case.
        bao.configure_jwt(&signer);
        bao.put("app/db", good.clone());
        wait_state(&agent, "fresh", LONG);
    }
    agent.assert_no_values(&["good-user", "good-pass"]);
}

#[test]
fn an_erroring_provider_sees_a_bounded_request_rate() {
    let proxy = FaultProxy::start("127.0.0.1:1");
    proxy.set(Fault::Status(503));
    let root = tempfile::tempdir().unwrap();
    let spec = spec(vault_provider(&proxy.url()), db_items(), free_port());
    let signer = Signer::new();
    let agent = start_sidecar(root.path(), &spec, Some(&signer.token("vault")), None, &[]);
    wait_for("health server", LONG, || (agent.get("/healthz").0 == 200).then_some(()));
    let before = proxy.count();
    let window = Duration::from_secs(6);
    std::thread::sleep(window);
    let sent = proxy.count() - before;
    // Start-up retries at most every 500 ms, then probes at most every second: at most 12
    // in 6 s plus one in flight; without backoff this would be thousands.
    assert!((2..=13).contains(&sent), "requests in {window:?}: {sent}");
    assert_eq!(proxy.max_in_flight(), 1, "never concurrent");
    assert_eq!(agent.state(), "failing");
    assert_eq!(agent.get("/startup").0, 503, "no files: the app must not start");
    let counted = agent.metric("secretmode_agent_provider_requests_total", "").unwrap_or(0.0) as usize;
    assert!(counted.abs_diff(proxy.count()) <= 1, "metrics agree with the proxy: {counted} vs {}", proxy.count());
}

#[test]
fn a_slow_provider_is_not_piled_on() {
    // Every answer takes 3 s (and then fails: nothing behind the proxy).
    let proxy = FaultProxy::start("127.0.0.1:1");
    proxy.set(Fault::Delay(Duration::from_secs(3)));
    let root = tempfile::tempdir().unwrap();
    // A start deadline beyond the window: a request cut off by the deadline would still look
    // "in flight" to the proxy while the next one arrives.
    let mut spec = spec(vault_provider(&proxy.url()), db_items(), free_port());
    spec.start_deadline_seconds = 60;
    let signer = Signer::new();
    let agent = start_sidecar(root.path(), &spec, Some(&signer.token("vault")), None, &[]);
    wait_for("health server", LONG, || (agent.get("/healthz").0 == 200).then_some(()));
    std::thread::sleep(Duration::from_secs(7));
    let sent = proxy.count();
    // Each answer takes 3 s and the agent waits for it before backing off: 3 at most in 7 s.
    assert!((1..=4).contains(&sent), "requests: {sent}");
    assert_eq!(proxy.max_in_flight(), 1, "never concurrent");
    drop(agent);
}

#[test]
fn a_typo_fails_init_in_seconds_and_the_fallback_does_not_hide_it() {
    let bao = Bao::start();
    bao.put("app/db", json!({"username": "u", "password": "p"}));
    let mut spec = spec(vault_token_provider(&bao.addr), vec![item("db-pass", "app/dbb", Some("password"))], 0);
    spec.token_file = None;
    spec.start_deadline_seconds = 60;
    let root = tempfile::tempdir().unwrap();
    let (code, stderr, elapsed) = run_once(root.path(), &spec, &[("VAULT_TOKEN", ROOT_TOKEN)]);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line:\n{stderr}");
    for part in ["provider vault", "secret/app/dbb", "not found", "HTTP 404", "not retried"] {
        assert!(lines[0].contains(part), "`{part}` missing from: {}", lines[0]);
    }
    assert!(elapsed < Duration::from_secs(5), "a refusal is not retried until the 60 s deadline: {elapsed:?}");

    // A missing key and a denied read fail as fast; a fallback Secret is not used for them.
    let mut with_fallback = spec.clone();
    with_fallback.fallback_dir = Some(secretmode::vocabulary::paths::FALLBACK_DIR.into());
    let no_read = bao.create_token(json!({"policies": ["default"], "ttl": "1h"}));
    for (items, token, expect) in [
        (vec![item("db-pass", "app/dbb", Some("password"))], ROOT_TOKEN.to_string(), "not found: HTTP 404"),
        (
            vec![item("db-pass", "app/db", Some("pasword"))],
            ROOT_TOKEN.to_string(),
            "invalid entry: key `pasword` not found",
        ),
        (vec![item("db-pass", "app/db", Some("password"))], no_read, "auth denied: HTTP 403"),
    ] {
        let mut s = with_fallback.clone();
        s.items = items;
        let root = tempfile::tempdir().unwrap();
        prepare_root(root.path(), &s, None, Some(&BTreeMap::from([("db-pass", "fb-pass")])));
        let (code, stderr, elapsed) = run_once(root.path(), &s, &[("VAULT_TOKEN", token.as_str())]);
        assert_eq!(code, 1, "{expect}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expect) && stderr.contains("fallback not used"), "{expect}: {stderr}");
        assert!(elapsed < Duration::from_secs(5), "{expect}: {elapsed:?}");
        assert!(!root.path().join("var/run/secrets-cache/db-pass").exists(), "{expect}: no file from the fallback");
    }
}

#[test]
fn items_are_read_four_at_a_time_and_a_refresh_is_spread_but_swapped_once() {
    let bao = Bao::start();
    let names: Vec<String> = (0..12).map(|i| format!("s{i:02}")).collect();
    for n in &names {
        bao.put(&format!("app/{n}"), json!({"v": format!("{n}-v1")}));
    }
    let proxy = FaultProxy::start(&bao.hostport());
    proxy.set_for("/v1/secret/data/", Fault::Delay(Duration::from_millis(400)));
    let items: Vec<_> = names.iter().map(|n| item(n, &format!("app/{n}"), Some("v"))).collect();
    let mut spec = spec(vault_token_provider(&proxy.url()), items, free_port());
    spec.token_file = None;
    spec.start_deadline_seconds = 30;
    let env = [("VAULT_TOKEN", ROOT_TOKEN)];

    // init: 12 reads of 0.4 s each, 4 at a time: about 1.2 s, not 4.8 s.
    let root = tempfile::tempdir().unwrap();
    let (code, stderr, elapsed) = run_once(root.path(), &spec, &env);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(proxy.max_in_flight(), 4, "bounded parallelism");
    assert!(elapsed < Duration::from_secs(4), "12 slow reads in parallel: {elapsed:?}");

    // sidecar: a refresh spreads its reads over a tenth of the interval (1 s of 10 s).
    spec.refresh_interval_seconds = 10;
    spec.max_staleness_seconds = 60;
    let root = tempfile::tempdir().unwrap();
    proxy.clear();
    let agent = start_sidecar(root.path(), &spec, None, None, &env);
    started(&agent);
    let synced_reads = proxy.count_to("/v1/secret/data/");
    proxy.set_for("/v1/secret/data/", Fault::Delay(Duration::from_millis(50)));
    proxy.reset_max_in_flight();
    for n in &names {
        bao.put(&format!("app/{n}"), json!({"v": format!("{n}-v2")}));
    }
    let mount = agent.mount();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut seen = Vec::new();
    wait_for("the rotated set", LONG, || {
        let set = generation(&mount, &refs)?;
        seen.push(set.clone());
        set.values().all(|v| v.ends_with("-v2")).then_some(())
    });
    for set in &seen {
        let v2 = set.values().filter(|v| v.ends_with("-v2")).count();
        assert!(v2 == 0 || v2 == names.len(), "a reader saw a mixed generation: {set:?}");
    }
    let reads: Vec<_> =
        proxy.seen().into_iter().filter(|s| s.path.contains("/v1/secret/data/")).skip(synced_reads).take(12).collect();
    assert_eq!(reads.len(), 12);
    let span = reads.last().unwrap().at - reads.first().unwrap().at;
    assert!(span >= Duration::from_millis(800), "reads spread over the window, not a burst: {span:?}");
    assert!(proxy.max_in_flight() <= 4, "{}", proxy.max_in_flight());
    assert_eq!(agent.state(), "fresh");
}

#[test]
fn status_file_readyz_and_metrics_turn_stale_together_between_refreshes() {
    let bao = Bao::start();
    bao.put("app/db", json!({"username": "u", "password": "p"}));
    let proxy = FaultProxy::start(&bao.hostport());
    let mut spec = spec(vault_token_provider(&proxy.url()), db_items(), free_port());
    spec.token_file = None;
    // A freshness budget shorter than the interval: the state turns stale with no fetch.
    spec.refresh_interval_seconds = 60;
    spec.max_staleness_seconds = 2;
    let root = tempfile::tempdir().unwrap();
    let agent = start_sidecar(root.path(), &spec, None, None, &[("VAULT_TOKEN", ROOT_TOKEN)]);
    started(&agent);
    assert_eq!(agent.state(), "fresh");
    let requests = proxy.count();
    let fresh_at = std::time::SystemTime::now();
    wait_state(&agent, "stale", Duration::from_secs(10));
    let became = fresh_at.elapsed().unwrap();
    assert!(became < Duration::from_secs(4), "written when it happened, not at the next refresh: {became:?}");
    assert_eq!(agent.get("/readyz"), (200, "stale\n".to_string()));
    assert_eq!(agent.metric("secretmode_agent_state", "state=\"stale\""), Some(1.0));
    assert_eq!(agent.metric("secretmode_agent_state", "state=\"fresh\""), Some(0.0));
    assert_eq!(proxy.count(), requests, "no fetch happened: the status clock wrote it");
}

#[test]
fn once_against_a_stopped_provider_fails_with_one_clear_line_within_the_deadline() {
    let root = tempfile::tempdir().unwrap();
    let mut spec = spec(vault_provider(&format!("http://127.0.0.1:{}", free_port())), db_items(), 0);
    spec.start_deadline_seconds = 3;
    prepare_root(root.path(), &spec, Some(&Signer::new().token("vault")), None);
    let (code, stderr, elapsed) = run_once(root.path(), &spec, &[]);
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line:\n{stderr}");
    let line = lines[0];
    for part in ["provider vault", "app/db#username", "unreachable", "auth/jwt/login"] {
        assert!(line.contains(part), "`{part}` missing from: {line}");
    }
    assert!(elapsed < Duration::from_secs(3 + 5), "deadline respected: {elapsed:?}");
    assert!(!root.path().join("var/run/secrets-cache/db-user").exists());
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.path().join("var/run/secrets-cache/.secretmode/status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["state"], "failing");
}

#[test]
fn fallback_seeds_when_the_provider_is_down_and_live_values_take_over() {
    let port = free_port();
    let mut spec = spec(vault_provider(&format!("http://127.0.0.1:{port}")), db_items(), free_port());
    spec.fallback_dir = Some(secretmode::vocabulary::paths::FALLBACK_DIR.into());
    spec.start_deadline_seconds = 2;
    let signer = Signer::new();
    let fallback = BTreeMap::from([("db-user", "fb-user"), ("db-pass", "fb-pass")]);

    // init: exits 0 from the fallback and says so.
    let once_root = tempfile::tempdir().unwrap();
    prepare_root(once_root.path(), &spec, Some(&signer.token("vault")), Some(&fallback));
    let (code, stderr, _) = run_once(once_root.path(), &spec, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("fallback"), "{stderr}");
    let mount = once_root.path().join("var/run/secrets-cache");
    assert_eq!(std::fs::read_to_string(mount.join("db-pass")).unwrap(), "fb-pass");
    let status = std::fs::read_to_string(mount.join(".secretmode/status.json")).unwrap();
    assert!(status.contains("\"state\": \"fallback\""), "{status}");

    // sidecar: starts from the fallback, keeps trying, switches to live values.
    let root = tempfile::tempdir().unwrap();
    let agent = start_sidecar(root.path(), &spec, Some(&signer.token("vault")), Some(&fallback), &[]);
    started(&agent);
    assert_eq!(agent.state(), "fallback");
    assert_eq!(agent.file("db-user").as_deref(), Some("fb-user"));
    assert_eq!(agent.metric("secretmode_agent_refreshes_total", "outcome=\"fallback\""), Some(1.0));
    assert_eq!(agent.metric("secretmode_agent_state", "state=\"fallback\""), Some(1.0));
    let bao = Bao::start_on(port);
    bao.configure_jwt(&signer);
    bao.put("app/db", json!({"username": "live-user", "password": "live-pass"}));
    wait_state(&agent, "fresh", LONG);
    assert_eq!(agent.file("db-user").as_deref(), Some("live-user"));
    assert_eq!(agent.status()["source"], "provider");
    agent.assert_no_values(&["fb-user", "fb-pass", "live-user", "live-pass"]);
}

#[test]
fn once_with_token_auth_writes_files_and_versions() {
    let bao = Bao::start();
    bao.put("app/db", json!({"username": "first", "password": "x"}));
    let v = bao.put("app/db", json!({"username": "tok-user", "password": "tok-pass"}));
    let mut provider = bao.provider();
    if let ProviderConfig::Vault(p) = &mut provider {
        p.auth = VaultAuth::Token { secret_ref: SecretKeyRef { name: "vault-token".into(), key: "token".into() } };
    }
    let mut spec = spec(provider, db_items(), 0);
    spec.token_file = None;
    let root = tempfile::tempdir().unwrap();
    let (code, stderr, _) = run_once(root.path(), &spec, &[("VAULT_TOKEN", ROOT_TOKEN)]);
    assert_eq!(code, 0, "{stderr}");
    let mount = root.path().join("var/run/secrets-cache");
    assert_eq!(std::fs::read_to_string(mount.join("db-pass")).unwrap(), "tok-pass");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(mount.join("db-pass")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o440);
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mount.join(".secretmode/status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "fresh");
    assert_eq!(status["items"][0]["version"], v.to_string());
    assert!(!status.to_string().contains("tok-pass"));
    assert!(!stderr.contains("tok-pass"));
}
