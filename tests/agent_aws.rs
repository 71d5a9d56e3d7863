//! The agent against a real moto server: Secrets Manager (JSON keys, whole strings,
//! binaries, version stages) with web-identity credentials from STS and with the standard
//! chain, plus malformed answers.

mod agent_common;

use std::time::Duration;

use agent_common::*;
use aws_sdk_secretsmanager::primitives::Blob;
use secretmode::providers::aws::AwsAuth;
use secretmode::providers::ProviderConfig;

const LONG: Duration = Duration::from_secs(30);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn no_ambient_aws(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        // No ~/.aws files: the home directory is empty.
        ("HOME", std::env::temp_dir().join("secretmode-no-home").display().to_string()),
    ];
    env.extend_from_slice(extra);
    env
}

fn envs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn init_fetches_keys_strings_binaries_and_stages_with_web_identity() {
    let moto = Moto::start();
    let rt = rt();
    let (db_version, previous) = rt.block_on(async {
        let c = moto.client().await;
        c.create_secret()
            .name("app/db")
            .secret_string(r#"{"username":"aws-user","password":"aws-pass"}"#)
            .send()
            .await
            .unwrap();
        c.create_secret().name("app/plain").secret_string("plain-value-1").send().await.unwrap();
        c.put_secret_value().secret_id("app/plain").secret_string("plain-value-2").send().await.unwrap();
        c.create_secret().name("app/bin").secret_binary(Blob::new(vec![0u8, 1, 2, 255])).send().await.unwrap();
        let v = c.get_secret_value().secret_id("app/db").send().await.unwrap().version_id.unwrap();
        (v, "plain-value-1")
    });
    let auth = AwsAuth::WebIdentity {
        role_arn: "arn:aws:iam::123456789012:role/secretmode-team-a".into(),
        audience: "sts.amazonaws.com".into(),
    };
    let items = vec![
        item("db-user", "app/db", Some("username")),
        item("db-pass", "app/db", Some("password")),
        item("plain", "app/plain", None),
        item("blob", "app/bin", None),
    ];
    let mut spec = spec(moto.aws_provider(auth.clone()), items, 0);
    spec.provider_name = "aws".into();
    let root = tempfile::tempdir().unwrap();
    prepare_root(root.path(), &spec, Some(&Signer::new().token("sts.amazonaws.com")), None);
    // STS is found through the SDK's standard endpoint override; no static keys anywhere.
    let env = no_ambient_aws(&[("AWS_ENDPOINT_URL_STS", moto.endpoint.clone())]);
    let (code, stderr, _) = run_once(root.path(), &spec, &envs(&env));
    assert_eq!(code, 0, "{stderr}");
    let mount = root.path().join("var/run/secrets-cache");
    let read = |n: &str| std::fs::read(mount.join(n)).unwrap();
    assert_eq!(read("db-user"), b"aws-user");
    assert_eq!(read("db-pass"), b"aws-pass");
    assert_eq!(read("plain"), b"plain-value-2");
    assert_eq!(read("blob"), vec![0u8, 1, 2, 255]);
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mount.join(".secretmode/status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "fresh");
    assert_eq!(status["items"][0]["version"], db_version.as_str());
    assert!(!status.to_string().contains("aws-pass"));

    // Version stage from the provider config.
    let mut prev = spec.clone();
    prev.items = vec![item("plain", "app/plain", None)];
    if let ProviderConfig::Aws(a) = &mut prev.provider {
        a.version_stage = "AWSPREVIOUS".into();
    }
    let root2 = tempfile::tempdir().unwrap();
    prepare_root(root2.path(), &prev, Some(&Signer::new().token("sts.amazonaws.com")), None);
    let (code, stderr, _) = run_once(root2.path(), &prev, &envs(&env));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(root2.path().join("var/run/secrets-cache/plain")).unwrap(), previous);

    // Unknown secret: one line naming provider, path and cause.
    let mut missing = spec.clone();
    missing.items = vec![item("x", "app/missing", None)];
    missing.start_deadline_seconds = 2;
    let root3 = tempfile::tempdir().unwrap();
    prepare_root(root3.path(), &missing, Some(&Signer::new().token("sts.amazonaws.com")), None);
    let (code, stderr, _) = run_once(root3.path(), &missing, &envs(&env));
    assert_eq!(code, 1);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("provider aws") && lines[0].contains("app/missing") && lines[0].contains("not found"),
        "{stderr}"
    );
}

#[test]
fn sidecar_with_the_standard_chain_rejects_malformed_answers_and_picks_up_rotation() {
    let moto = Moto::start();
    let rt = rt();
    let client = rt.block_on(moto.client());
    let put = |value: &str| {
        rt.block_on(client.put_secret_value().secret_id("app/db").secret_string(value).send()).unwrap();
    };
    rt.block_on(client.create_secret().name("app/db").secret_string(r#"{"username":"u1","password":"p1"}"#).send())
        .unwrap();
    let items = vec![item("db-user", "app/db", Some("username")), item("db-pass", "app/db", Some("password"))];
    let mut spec = spec(moto.aws_provider(AwsAuth::Chain), items, free_port());
    spec.token_file = None;
    spec.max_staleness_seconds = 300;
    let root = tempfile::tempdir().unwrap();
    let env = no_ambient_aws(&[
        ("AWS_ACCESS_KEY_ID", "chain-key".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "chain-secret".to_string()),
    ]);
    let agent = start_sidecar(root.path(), &spec, None, None, &envs(&env));
    wait_for("startup", LONG, || (agent.get("/startup").0 == 200).then_some(()));
    assert_eq!(agent.file("db-pass").as_deref(), Some("p1"));

    for (bad, expect) in [
        ("{\"username\": u1-broken", "not valid JSON"),
        (r#"{"username":"","password":"p-new"}"#, "value is empty"),
        (r#"["u1-broken"]"#, "expected a JSON object"),
        (r#"{"username":{"deep":"u1-broken"},"password":"p"}"#, "holds an object"),
    ] {
        put(bad);
        wait_for(expect, LONG, || {
            let s = agent.status();
            (s["state"] == "failing" && s["lastError"].as_str().is_some_and(|e| e.contains(expect))).then_some(())
        });
        assert_eq!(agent.file("db-user").as_deref(), Some("u1"), "{expect}: good files untouched");
        assert_eq!(agent.file("db-pass").as_deref(), Some("p1"));
    }
    put(r#"{"username":"u2","password":"p2"}"#);
    wait_for("rotation", LONG, || {
        (agent.state() == "fresh" && agent.file("db-pass").as_deref() == Some("p2")).then_some(())
    });
    assert_eq!(agent.file("db-user").as_deref(), Some("u2"));
    agent.assert_no_values(&["u1-broken", "p-new", "p1", "p2", "chain-secret"]);
}
