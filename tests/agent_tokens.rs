//! Credentials that expire during a run, against a real OpenBao (and moto for AWS): tokens
//! and login tokens with TTLs of a few seconds are renewed or replaced without a failed
//! refresh, a token that cannot be extended is reported (log, status, metric) before it
//! fails, and a token revoked under the agent is replaced on the next read. A counting proxy
//! in front of the provider shows the renewals and logins.

mod agent_common;

use std::time::{Duration, SystemTime};

use agent_common::fault_proxy::{Fault, FaultProxy};
use agent_common::*;
use secretmode::providers::aws::AwsAuth;
use secretmode::providers::vault::VaultAuth;
use secretmode::providers::ProviderConfig;
use serde_json::json;

const LONG: Duration = Duration::from_secs(40);

fn db_items() -> Vec<secretmode::providers::AgentItem> {
    vec![item("db-user", "app/db", Some("username")), item("db-pass", "app/db", Some("password"))]
}

fn app_policy(bao: &Bao) {
    let policy = json!({"policy": "path \"secret/data/app/*\" { capabilities = [\"read\"] }"});
    let (code, out) = bao.api("PUT", "sys/policies/acl/app", Some(policy));
    assert!((200..300).contains(&code), "{code} {out}");
}

fn failures(agent: &AgentProc) -> f64 {
    agent.metric("secretmode_agent_refreshes_total", "outcome=\"failure\"").unwrap_or(0.0)
}

fn successes(agent: &AgentProc) -> f64 {
    agent.metric("secretmode_agent_refreshes_total", "outcome=\"success\"").unwrap_or(0.0)
}

fn started(agent: &AgentProc) {
    wait_for_explained(
        "startup probe to pass",
        LONG,
        || (agent.get("/startup").0 == 200).then_some(()),
        || format!("; log:\n{}", agent.logs()),
    );
}

fn token_sidecar(bao: &Bao, proxy: &FaultProxy, token: &str, interval: u64) -> (tempfile::TempDir, AgentProc) {
    let mut s = spec(vault_token_provider(&proxy.url()), db_items(), free_port());
    s.token_file = None;
    s.refresh_interval_seconds = interval;
    s.max_staleness_seconds = 300;
    let root = tempfile::tempdir().unwrap();
    let agent = start_sidecar(root.path(), &s, None, None, &[("VAULT_TOKEN", token)]);
    let _ = bao;
    (root, agent)
}

/// A renewable 4 s token with a 12 s refresh interval: without renewals between refreshes
/// the second refresh would find it expired.
#[test]
fn token_auth_renews_a_short_lived_token_between_refreshes() {
    let bao = Bao::start();
    app_policy(&bao);
    bao.put("app/db", json!({"username": "u1", "password": "p1"}));
    let token = bao.create_token(json!({"policies": ["app"], "ttl": "4s", "renewable": true}));
    let proxy = FaultProxy::start(&bao.hostport());
    let (_root, agent) = token_sidecar(&bao, &proxy, &token, 12);
    started(&agent);
    assert_eq!(proxy.count_to("/v1/auth/token/lookup-self"), 1, "looked up at start");
    let creds = agent.status()["credentials"].clone();
    assert_eq!(creds["method"], "token");
    assert_eq!(creds["renewable"], true);
    assert_eq!(creds["expiring"], false);
    assert!(creds["expiresAt"].is_string(), "{creds}");

    bao.put("app/db", json!({"username": "u2", "password": "p2"}));
    wait_for("two successful refreshes after the start", Duration::from_secs(45), || {
        (successes(&agent) >= 3.0).then_some(())
    });
    assert_eq!(agent.file("db-pass").as_deref(), Some("p2"));
    assert_eq!(failures(&agent), 0.0, "no refresh failed: {}", agent.logs());
    assert!(proxy.count_to("/v1/auth/token/renew-self") >= 3, "renewed every ~2.7 s: {}", proxy.count());
    assert_eq!(agent.state(), "fresh");
    assert_eq!(agent.metric("secretmode_agent_credentials_expiring", ""), Some(0.0));
}

/// A token that cannot be renewed is reported the moment it is looked up, while everything
/// is still fresh; when it expires the reads fail with a line that says so.
#[test]
fn an_unrenewable_token_is_reported_before_it_expires_and_then_named_as_expired() {
    let bao = Bao::start();
    app_policy(&bao);
    bao.put("app/db", json!({"username": "u1", "password": "p1"}));
    let token = bao.create_token(json!({"policies": ["app"], "ttl": "8s", "renewable": false}));
    let proxy = FaultProxy::start(&bao.hostport());
    let (_root, agent) = token_sidecar(&bao, &proxy, &token, 2);
    started(&agent);
    wait_for("the expiring token in the status", LONG, || {
        (agent.status()["credentials"]["expiring"] == true).then_some(())
    });
    assert_eq!(agent.state(), "fresh", "reported before anything failed");
    assert_eq!(agent.metric("secretmode_agent_credentials_expiring", ""), Some(1.0));
    let expiry = agent.metric("secretmode_agent_credentials_expiry_timestamp_seconds", "").unwrap_or(0.0);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(expiry > now && expiry < now + 10.0, "expiry {expiry} vs now {now}");
    wait_for("the warning", LONG, || agent.logs().contains("cannot be renewed past that").then_some(()));

    wait_for_explained(
        "reads failing as expired",
        LONG,
        || {
            let e = agent.status()["lastError"].as_str().unwrap_or_default().to_string();
            e.contains("VAULT_TOKEN is invalid, expired or revoked (it expired at").then_some(())
        },
        || format!("; status {}", agent.status()),
    );
    assert_eq!(agent.status()["lastErrorKind"], "auth denied");
    assert_eq!(agent.file("db-pass").as_deref(), Some("p1"), "last good files kept");

    // init with the expired token: a refusal, in seconds, one line.
    let mut s = spec(vault_token_provider(&bao.addr), db_items(), 0);
    s.token_file = None;
    s.start_deadline_seconds = 30;
    let root = tempfile::tempdir().unwrap();
    let (code, stderr, elapsed) = run_once(root.path(), &s, &[("VAULT_TOKEN", &token)]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("auth denied") && stderr.contains("VAULT_TOKEN is invalid, expired or revoked"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

/// A renewable token with a short explicit max TTL: renewed until the max caps it, reported
/// as expiring at that point, before it fails.
#[test]
fn a_token_capped_by_its_max_ttl_is_reported_before_it_expires() {
    let bao = Bao::start();
    app_policy(&bao);
    bao.put("app/db", json!({"username": "u1", "password": "p1"}));
    let token =
        bao.create_token(json!({"policies": ["app"], "ttl": "3s", "explicit_max_ttl": "9s", "renewable": true}));
    let proxy = FaultProxy::start(&bao.hostport());
    let (_root, agent) = token_sidecar(&bao, &proxy, &token, 2);
    started(&agent);
    assert_eq!(agent.status()["credentials"]["expiring"], false, "renewable at first");
    wait_for_explained(
        "the capped token reported as expiring",
        LONG,
        || (agent.status()["credentials"]["expiring"] == true).then_some(()),
        || format!("; status {}", agent.status()),
    );
    assert_ne!(agent.state(), "failing", "reported before the reads fail");
    assert!(proxy.count_to("/v1/auth/token/renew-self") >= 1);
    wait_for("the reads to fail once it expired", LONG, || (agent.state() == "failing").then_some(()));
    assert!(agent.status()["lastError"].as_str().unwrap_or_default().contains("expired"), "{}", agent.status());
}

/// Kubernetes auth with login tokens of 3 s (max 6 s): renewed, then replaced by a new login
/// when the max caps them, every refresh succeeding.
#[test]
fn kubernetes_login_tokens_are_renewed_and_replaced_without_a_failed_refresh() {
    let signer = Signer::new();
    let bao = Bao::start();
    bao.configure_jwt_at("kubernetes", &signer, ROLE);
    let (code, out) = bao.api(
        "POST",
        &format!("auth/kubernetes/role/{ROLE}"),
        Some(json!({"role_type": "jwt", "bound_audiences": ["vault"], "user_claim": "sub", "policies": ["app"],
                    "token_ttl": "3s", "token_max_ttl": "6s"})),
    );
    assert!((200..300).contains(&code), "{code} {out}");
    bao.put("app/db", json!({"username": "k-user", "password": "k-pass"}));
    let proxy = FaultProxy::start(&bao.hostport());
    let mut provider = vault_provider(&proxy.url());
    if let ProviderConfig::Vault(v) = &mut provider {
        v.auth = VaultAuth::Kubernetes { mount: "kubernetes".into(), role: ROLE.into(), audience: "vault".into() };
    }
    let mut s = spec(provider, db_items(), free_port());
    s.max_staleness_seconds = 300;
    let root = tempfile::tempdir().unwrap();
    let agent = start_sidecar(root.path(), &s, Some(&signer.token("vault")), None, &[]);
    started(&agent);
    std::thread::sleep(Duration::from_secs(16));
    let logins = proxy.count_to("/v1/auth/kubernetes/login");
    let renewals = proxy.count_to("/v1/auth/token/renew-self");
    assert!(logins >= 3, "a new login whenever the 6 s max caps the token: {logins}");
    assert!(renewals >= 1, "renewed before the max: {renewals}");
    assert_eq!(failures(&agent), 0.0, "no refresh failed: {}", agent.logs());
    assert!(successes(&agent) >= 5.0);
    assert_eq!(agent.state(), "fresh");
    let creds = agent.status()["credentials"].clone();
    assert_eq!(creds["method"], "kubernetes");
    assert_eq!(creds["expiring"], false, "a login method replaces its token: {creds}");
    agent.assert_no_values(&["k-user", "k-pass"]);
}

/// A login token revoked under the agent (a 403 on the read, and lookup-self refusing it
/// too) is replaced by a new login within the same refresh.
#[test]
fn a_revoked_login_token_is_replaced_on_the_next_read() {
    let signer = Signer::new();
    let bao = Bao::start();
    bao.configure_jwt(&signer);
    bao.put("app/db", json!({"username": "j-user", "password": "j-pass"}));
    let proxy = FaultProxy::start(&bao.hostport());
    let mut s = spec(vault_provider(&proxy.url()), db_items(), free_port());
    s.max_staleness_seconds = 300;
    let root = tempfile::tempdir().unwrap();
    let agent = start_sidecar(root.path(), &s, Some(&signer.token("vault")), None, &[]);
    started(&agent);
    assert_eq!(proxy.count_to("/v1/auth/jwt/login"), 1);
    let before = successes(&agent);
    let (code, out) = bao.api("PUT", "sys/leases/revoke-prefix/auth/jwt", None);
    assert!((200..300).contains(&code), "revoke: {code} {out}");
    wait_for("a new login", LONG, || (proxy.count_to("/v1/auth/jwt/login") == 2).then_some(()));
    wait_for("a refresh after it", LONG, || (successes(&agent) > before + 1.0).then_some(()));
    assert_eq!(failures(&agent), 0.0, "the refusal was handled inside the refresh: {}", agent.logs());
    assert!(proxy.count_to("/v1/auth/token/lookup-self") >= 1, "the 403 was checked against lookup-self");
    assert!(agent.logs().contains("logging in again"), "{}", agent.logs());
}

/// AWS web identity: a session refused as expired is dropped and the role assumed again,
/// within the same refresh.
#[test]
fn an_expired_aws_session_is_replaced_without_a_failed_refresh() {
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = moto.client().await;
        c.create_secret().name("app/db").secret_string(r#"{"username":"a-user","password":"a-pass"}"#).send().await
    })
    .unwrap();
    let sm = FaultProxy::start(&moto.hostport());
    let sts = FaultProxy::start(&moto.hostport());
    let auth = AwsAuth::WebIdentity {
        role_arn: "arn:aws:iam::123456789012:role/secretmode-team-a".into(),
        audience: "sts.amazonaws.com".into(),
    };
    let mut provider = moto.aws_provider(auth);
    if let ProviderConfig::Aws(a) = &mut provider {
        a.endpoint = Some(sm.url());
    }
    let mut s = spec(provider, db_items(), free_port());
    s.provider_name = "aws".into();
    s.max_staleness_seconds = 300;
    let root = tempfile::tempdir().unwrap();
    let home = std::env::temp_dir().join("secretmode-no-home").display().to_string();
    let env = [("AWS_ENDPOINT_URL_STS", sts.url()), ("AWS_EC2_METADATA_DISABLED", "true".into()), ("HOME", home)];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let agent = start_sidecar(root.path(), &s, Some(&Signer::new().token("sts.amazonaws.com")), None, &env);
    started(&agent);
    assert_eq!(sts.count(), 1, "one AssumeRoleWithWebIdentity, cached");
    let creds = agent.status()["credentials"].clone();
    assert_eq!(creds["method"], "webIdentity");
    assert!(creds["expiresAt"].is_string(), "{creds}");
    let before = successes(&agent);
    let expired =
        r#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#;
    sm.set_times("", Fault::Answer(400, "application/x-amz-json-1.1", expired.into()), 1);
    wait_for("the role assumed again", LONG, || (sts.count() == 2).then_some(()));
    wait_for_explained(
        "a refresh after it",
        LONG,
        || (successes(&agent) > before + 1.0).then_some(()),
        || format!("; sm {} sts {}; status {}", sm.count(), sts.count(), agent.status()),
    );
    assert_eq!(failures(&agent), 0.0, "{}", agent.logs());
    assert_eq!(agent.state(), "fresh");
}
