//! `on-change` drills against real servers (issue 24): the sidecar agent against OpenBao and
//! moto, and `secretmode watch` against kubelet- and CSI-style `..data` swaps. The app is a
//! real HTTP listener in the test, or a real process (`sh`) that records the signals it gets.
//!
//! Signal drills scan the whole machine's `/proc` (there is no pod here): they hold
//! [`SIGNALS`] so two of them never run at once and see each other's targets.

mod agent_common;

use std::net::TcpListener;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use agent_common::apps::{App, Target, Volume, Watcher};
use agent_common::*;
use secretmode::providers::aws::AwsAuth;
use secretmode::vocabulary::on_change::OnChange;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(30);
/// Longer than the notifier's quiet period plus two polls or refreshes: if a second
/// notification were coming, it would have come.
const SETTLE: Duration = Duration::from_secs(6);
static SIGNALS: Mutex<()> = Mutex::new(());

fn signals_lock() -> std::sync::MutexGuard<'static, ()> {
    SIGNALS.lock().unwrap_or_else(|p| p.into_inner())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn wait_refreshes(agent: &AgentProc, more_than: f64) -> f64 {
    wait_for(&format!("more than {more_than} successful refreshes"), LONG, || {
        agent.metric("secretmode_agent_refreshes_total", "outcome=\"success\"").filter(|n| *n > more_than)
    })
}

/// How the app hears about a change in one drill.
enum Via {
    Http(App),
    Signal(Target),
}

impl Via {
    fn action(&self) -> OnChange {
        match self {
            Via::Http(app) => app.action(),
            Via::Signal(_) => "signal:HUP".parse().unwrap(),
        }
    }

    fn count(&self) -> usize {
        match self {
            Via::Http(app) => app.requests().len(),
            Via::Signal(t) => t.hups().len(),
        }
    }

    fn check_one(&self) {
        match self {
            Via::Http(app) => {
                let r = &app.requests()[0];
                assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/-/reload"), "{r:?}");
                assert_eq!(r.user_agent, concat!("secretmode/", env!("CARGO_PKG_VERSION")), "{r:?}");
                assert_eq!(r.content_length, "0", "no body: {r:?}");
            }
            Via::Signal(t) => assert_eq!(t.hups(), vec!["main"], "only the topmost target process"),
        }
    }
}

/// The sidecar drill: no notification for the first generation or for unchanged refreshes;
/// a rotation in the provider is exactly one notification within interval + jitter + quiet
/// period; the status file and metrics record it.
fn sidecar_drill(agent: AgentProc, via: &Via, rotate: &dyn Fn(), new_value: &str) {
    wait_for("startup", LONG, || (agent.get("/startup").0 == 200).then_some(()));
    // A few unchanged refreshes (interval 2 s): nothing.
    let before = wait_refreshes(&agent, 0.0);
    wait_refreshes(&agent, before + 1.0);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(via.count(), 0, "the first generation and unchanged refreshes notify nobody");
    assert_eq!(agent.status()["lastNotification"], Value::Null);

    rotate();
    wait_for("the rotated value on disk", LONG, || (agent.file("db-pass").as_deref() == Some(new_value)).then_some(()));
    // Interval (2 s) + jitter + the 2 s quiet period, with room for a loaded machine.
    wait_for_explained("one notification", LONG, || (via.count() >= 1).then_some(()), || agent.logs());
    let after = agent.metric("secretmode_agent_refreshes_total", "outcome=\"success\"").unwrap_or(0.0);
    wait_refreshes(&agent, after + 1.0);
    std::thread::sleep(SETTLE);
    assert_eq!(via.count(), 1, "exactly one notification per change; logs:\n{}", agent.logs());
    via.check_one();

    let status = agent.status();
    let last = &status["lastNotification"];
    assert_eq!(last["result"], "success", "{status}");
    assert_eq!(last["attempts"], 1, "{status}");
    assert_eq!(last["action"], via.action().to_string(), "{status}");
    assert_eq!(status["onChange"], via.action().to_string(), "{status}");
    assert_eq!(agent.metric("secretmode_agent_notifications_total", "result=\"success\""), Some(1.0));
    assert!(agent.metric("secretmode_agent_last_notification_success_timestamp_seconds", "").unwrap_or(0.0) > 1.0e9);
    assert_eq!(agent.metric("secretmode_agent_notification_pending", ""), Some(0.0));
    agent.assert_no_values(&["pass-one", "pass-two", "p1", "p2"]);
}

fn vault_drill(via: Via) {
    let signer = Signer::new();
    let bao = Bao::start();
    bao.configure_jwt(&signer);
    bao.put("app/db", json!({"username": "user-one", "password": "pass-one"}));
    let root = tempfile::tempdir().unwrap();
    let mut spec = spec(bao.provider(), vec![item("db-pass", "app/db", Some("password"))], free_port());
    spec.max_staleness_seconds = 300;
    spec.on_change = Some(via.action());
    let agent = start_sidecar(root.path(), &spec, Some(&signer.token("vault")), None, &[]);
    let rotate = || {
        bao.put("app/db", json!({"username": "user-one", "password": "pass-two"}));
    };
    sidecar_drill(agent, &via, &rotate, "pass-two");
}

fn aws_drill(via: Via) {
    let moto = Moto::start();
    let rt = rt();
    let client = rt.block_on(moto.client());
    rt.block_on(client.create_secret().name("app/db").secret_string(r#"{"password":"p1"}"#).send()).unwrap();
    let mut spec =
        spec(moto.aws_provider(AwsAuth::Chain), vec![item("db-pass", "app/db", Some("password"))], free_port());
    spec.token_file = None;
    spec.max_staleness_seconds = 300;
    spec.on_change = Some(via.action());
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let env = [
        ("AWS_ACCESS_KEY_ID", "chain-key"),
        ("AWS_SECRET_ACCESS_KEY", "chain-secret"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("HOME", home.to_str().unwrap()),
    ];
    let agent = start_sidecar(root.path(), &spec, None, None, &env);
    let rotate = || {
        rt.block_on(client.put_secret_value().secret_id("app/db").secret_string(r#"{"password":"p2"}"#).send())
            .unwrap();
    };
    sidecar_drill(agent, &via, &rotate, "p2");
}

#[test]
fn openbao_rotation_is_one_request_to_the_app() {
    vault_drill(Via::Http(App::start(0)));
}

#[test]
fn openbao_rotation_is_one_signal_to_the_main_process() {
    let _one = signals_lock();
    let dir = tempfile::tempdir().unwrap();
    vault_drill(Via::Signal(Target::start(dir.path())));
}

#[test]
fn aws_rotation_is_one_request_to_the_app() {
    aws_drill(Via::Http(App::start(0)));
}

#[test]
fn aws_rotation_is_one_signal_to_the_main_process() {
    let _one = signals_lock();
    let dir = tempfile::tempdir().unwrap();
    aws_drill(Via::Signal(Target::start(dir.path())));
}

// --- secretmode watch ---

const SECRET_DIR: &str = "/etc/app/secrets";

#[test]
fn watch_fires_once_per_kubelet_swap_never_for_the_initial_data_and_stops_on_sigterm() {
    let app = App::start(0);
    let root = tempfile::tempdir().unwrap();
    let mut vol = Volume::create(&root.path().join("etc/app/secrets"), &[("password", "s1"), ("username", "u")]);
    let initial = vol.target();
    let mut w = Watcher::start(root.path(), SECRET_DIR, Some(app.action()), None);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(app.requests().len(), 0, "the initial ..data is what the app read at start");
    let status = w.status();
    assert_eq!(status["dataTarget"], initial.as_str(), "{status}");
    assert_eq!(status["changes"], 0, "{status}");
    assert_eq!(status["lastNotification"], Value::Null, "{status}");

    for n in 1..=2 {
        vol.swap(&[("password", &format!("s{}", n + 1)), ("username", "u")]);
        wait_for_explained("a notification", LONG, || (app.requests().len() >= n).then_some(()), || w.logs());
        std::thread::sleep(SETTLE);
        assert_eq!(app.requests().len(), n, "exactly one notification per swap{}", w.logs());
    }
    let r = &app.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str(), r.content_length.as_str()), ("POST", "/-/reload", "0"), "{r:?}");
    assert_eq!(r.user_agent, concat!("secretmode/", env!("CARGO_PKG_VERSION")));
    let status = w.status();
    assert_eq!(status["dataTarget"], vol.target().as_str(), "{status}");
    assert_eq!(status["changes"], 2, "{status}");
    assert_eq!(status["lastNotification"]["result"], "success", "{status}");
    assert_eq!(status["lastNotification"]["attempts"], 1, "{status}");
    assert_eq!(status["lastNotification"]["action"], app.action().to_string(), "{status}");
    assert_eq!(w.metric("secretmode_watcher_changes_total", ""), Some(2.0));
    assert_eq!(w.metric("secretmode_watcher_notifications_total", "result=\"success\""), Some(2.0));
    let text = w.get("/metrics").1;
    assert!(!text.contains("s2") && !text.contains("s3"), "no value in metrics");

    // SIGTERM: exit 0, promptly.
    let child = w.child();
    signal(child.id(), "TERM");
    let exit = wait_exit(child, Duration::from_secs(5)).expect("the watcher exits on SIGTERM");
    assert_eq!(exit.code(), Some(0), "{}", w.logs());
}

#[test]
fn watch_fires_once_for_a_csi_style_swap_of_nested_objects() {
    let app = App::start(0);
    let root = tempfile::tempdir().unwrap();
    let files = |v: &'static str| [("db/password", v), ("db/username", "u"), ("tls.crt", "c")];
    let mut vol = Volume::create(&root.path().join("mnt/secrets-store"), &files("one"));
    let w = Watcher::start(root.path(), "/mnt/secrets-store", Some(app.action()), None);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(app.requests().len(), 0);
    vol.swap(&files("two"));
    wait_for_explained("a notification", LONG, || (!app.requests().is_empty()).then_some(()), || w.logs());
    std::thread::sleep(SETTLE);
    assert_eq!(app.requests().len(), 1, "{}", w.logs());
    assert_eq!(w.status()["changes"], 1);
}

#[test]
fn watch_folds_a_storm_of_swaps_into_one_notification() {
    let app = App::start(0);
    let root = tempfile::tempdir().unwrap();
    let mut vol = Volume::create(&root.path().join("etc/app/secrets"), &[("password", "s0")]);
    let w = Watcher::start(root.path(), SECRET_DIR, Some(app.action()), None);
    // 20 swaps, 150 ms apart: 3 s of churn, every gap shorter than the 2 s quiet period and
    // the whole storm shorter than the 30 s hold, so exactly one notification.
    for n in 1..=20 {
        vol.swap(&[("password", &format!("s{n}"))]);
        std::thread::sleep(Duration::from_millis(150));
    }
    wait_for_explained("a notification", LONG, || (!app.requests().is_empty()).then_some(()), || w.logs());
    std::thread::sleep(SETTLE);
    assert_eq!(app.requests().len(), 1, "one notification for the storm{}", w.logs());
    let changes = w.metric("secretmode_watcher_changes_total", "").unwrap_or(0.0);
    assert!(changes >= 2.0, "the watcher saw several swaps ({changes}), and notified once");
    assert_eq!(w.metric("secretmode_watcher_notifications_total", "result=\"success\""), Some(1.0));
}

#[test]
fn watch_retries_until_the_app_listens_then_notifies_once() {
    // The app's port, not listening yet.
    let port = free_port();
    let action: OnChange = format!("PUT http://localhost:{port}/reload?from=secretmode").parse().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut vol = Volume::create(&root.path().join("etc/app/secrets"), &[("password", "s0")]);
    let w = Watcher::start(root.path(), SECRET_DIR, Some(action), None);
    vol.swap(&[("password", "s1")]);
    wait_for_explained(
        "retries while nothing listens",
        LONG,
        || {
            let s = w.status();
            (s["lastNotification"]["result"] == "retrying" && s["lastNotification"]["attempts"].as_u64() >= Some(2))
                .then_some(s)
        },
        || w.logs(),
    );
    let status = w.status();
    assert!(status["lastNotification"]["error"].as_str().unwrap_or("").contains("connection refused"), "{status}");
    assert_eq!(w.metric("secretmode_watcher_notification_pending", ""), Some(1.0));
    assert!(w.metric("secretmode_watcher_notification_attempts_total", "result=\"failure\"").unwrap_or(0.0) >= 2.0);

    // The app comes up, answers 503 once (still starting), then 200: retried through both.
    let app = App::start_on(TcpListener::bind(("127.0.0.1", port)).unwrap(), 1);
    wait_for_explained(
        "the notification to succeed",
        LONG,
        || (w.status()["lastNotification"]["result"] == "success").then_some(()),
        || w.logs(),
    );
    std::thread::sleep(SETTLE);
    let seen = app.requests();
    assert_eq!(seen.len(), 2, "one 503, then the one that worked: {seen:?}");
    assert!(seen.iter().all(|r| r.method == "PUT" && r.path == "/reload?from=secretmode"), "{seen:?}");
    let status = w.status();
    assert!(status["lastNotification"]["attempts"].as_u64() >= Some(4), "{status}");
    assert_eq!(w.metric("secretmode_watcher_notifications_total", "result=\"success\""), Some(1.0));
    assert_eq!(w.metric("secretmode_watcher_notification_pending", ""), Some(0.0));
}

#[test]
fn watch_signal_waits_for_the_target_process_then_signals_it_once() {
    let _one = signals_lock();
    let root = tempfile::tempdir().unwrap();
    let mut vol = Volume::create(&root.path().join("etc/app/secrets"), &[("password", "s0")]);
    let w = Watcher::start(root.path(), SECRET_DIR, Some("signal:SIGHUP".parse().unwrap()), None);
    vol.swap(&[("password", "s1")]);
    wait_for_explained(
        "retries while no target process runs",
        LONG,
        || (w.status()["lastNotification"]["result"] == "retrying").then_some(()),
        || w.logs(),
    );
    let status = w.status();
    assert!(
        status["lastNotification"]["error"].as_str().unwrap_or("").contains("SECRETMODE_SIGNAL_TARGET"),
        "{status}"
    );
    let target = Target::start(root.path());
    wait_for_explained("the signal", LONG, || (!target.hups().is_empty()).then_some(()), || w.logs());
    std::thread::sleep(SETTLE);
    assert_eq!(target.hups(), vec!["main"], "one signal, to the topmost target process only");
    assert_eq!(w.status()["lastNotification"]["result"], "success");
    assert_eq!(w.status()["lastNotification"]["action"], "signal:HUP");
}

#[test]
fn watch_refuses_a_spec_it_does_not_understand() {
    let out = Command::new(agent_bin())
        .arg("watch")
        .env(
            "SECRETMODE_WATCH_SPEC",
            json!({"version": 99, "dir": "/x", "onChange": {"signal": "HUP"}, "healthPort": 1}).to_string(),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SECRETMODE_WATCH_SPEC has version 99"), "{stderr}");
}
