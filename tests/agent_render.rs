//! Rendered-file drills against real servers (issue 25): the agent renders in the same
//! generation as the items (OpenBao and moto), a reader looping on a rendered file during
//! rotations only ever sees a whole render of one consistent item set, a render error keeps the
//! previous set and names the file; `secretmode render` and `secretmode watch` over a
//! kubelet-style directory (eso/csi) re-render once per swap, then notify once.

mod agent_common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_common::*;
use secretmode::agent::spec::{AgentSpec, RenderSpec, WatchSpec, SPEC_VERSION};
use secretmode::providers::aws::AwsAuth;
use secretmode::render::{Format, RenderSource, RenderedFile};
use secretmode::vocabulary::on_change::OnChange;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(30);
/// Longer than the notifier's quiet period plus two polls or refreshes.
const SETTLE: Duration = Duration::from_secs(6);
const ROTATIONS: usize = 3;

/// The app: a loopback HTTP listener that counts the requests it gets (always 200).
struct App {
    port: u16,
    count: Arc<AtomicUsize>,
}

impl App {
    fn start() -> App {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
            }
        });
        App { port, count }
    }

    fn action(&self) -> OnChange {
        format!("http://127.0.0.1:{}/-/reload", self.port).parse().unwrap()
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

fn template(name: &str, text: &str) -> RenderedFile {
    RenderedFile { name: name.into(), source: RenderSource::Template(text.into()) }
}

fn bundle(name: &str, format: Format, items: &[&str]) -> RenderedFile {
    RenderedFile {
        name: name.into(),
        source: RenderSource::Bundle { format, items: items.iter().map(|s| s.to_string()).collect() },
    }
}

/// The rendered files of every drill: a DSN template and a dotenv bundle.
fn rendered_files() -> Vec<RenderedFile> {
    vec![
        template("dsn", "postgresql://{{ db-user }}:{{ db-pass | urlescape }}@db.internal:5432/app"),
        bundle("app.env", Format::Dotenv, &["db-user", "db-pass"]),
    ]
}

fn user(n: usize) -> String {
    format!("user-{n}")
}

fn pass(n: usize) -> String {
    format!("p@ss {n}")
}

/// What `dsn` holds for generation `n` (the password URL-escaped).
fn dsn(n: usize) -> String {
    format!("postgresql://user-{n}:p%40ss%20{n}@db.internal:5432/app")
}

fn dotenv(n: usize) -> String {
    format!("DB_USER=\"user-{n}\"\nDB_PASS=\"p@ss {n}\"\n")
}

/// Loops on `<dir>/dsn` until stopped, checking every read is a whole render of one
/// consistent set (`dsn(n)` for some n), and that the rendered file and the items read through
/// one resolution of `..data` belong to the same generation. Returns the reads it made.
struct Reader {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<(usize, BTreeSet<String>), String>>>,
}

impl Reader {
    fn start(dir: PathBuf) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let valid: Vec<String> = (0..=ROTATIONS).map(dsn).collect();
            let (mut reads, mut seen) = (0usize, BTreeSet::new());
            while !flag.load(Ordering::Relaxed) {
                // Through the stable name, as the app opens it.
                if let Ok(text) = std::fs::read_to_string(dir.join("dsn")) {
                    if !valid.contains(&text) {
                        return Err(format!("read {text:?}: not a whole render of one item set"));
                    }
                    seen.insert(text);
                    reads += 1;
                }
                // One generation: the rendered files and the items it was rendered from.
                if let Some(g) = generation(&dir, &["dsn", "app.env", "db-user", "db-pass"]) {
                    let n = (0..=ROTATIONS).find(|n| g["db-user"] == user(*n));
                    let consistent =
                        n.is_some_and(|n| g["db-pass"] == pass(n) && g["dsn"] == dsn(n) && g["app.env"] == dotenv(n));
                    if !consistent {
                        return Err(format!("one ..data generation mixes item sets: {g:?}"));
                    }
                }
            }
            Ok((reads, seen))
        });
        Reader { stop, handle: Some(handle) }
    }

    fn finish(mut self) -> (usize, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().unwrap().join().unwrap() {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn data_target(dir: &Path) -> Option<String> {
    std::fs::read_link(dir.join("..data")).ok().map(|t| t.to_string_lossy().into_owned())
}

/// The sidecar drill: each rotation of both items in the provider is one new generation that
/// carries the new items and the files rendered from them, and one notification; a reader
/// never sees a partial or mixed file.
fn sidecar_drill(agent: AgentProc, app: &App, rotate: &dyn Fn(usize)) {
    wait_for_explained("startup", LONG, || (agent.get("/startup").0 == 200).then_some(()), || agent.logs());
    let mount = agent.mount();
    assert_eq!(agent.file("dsn").as_deref(), Some(dsn(0).as_str()));
    assert_eq!(agent.file("app.env").as_deref(), Some(dotenv(0).as_str()));
    assert_eq!(std::fs::read_link(mount.join("dsn")).unwrap(), Path::new("..data/dsn"));
    assert_eq!(agent.status()["rendered"], json!(["dsn", "app.env"]));
    let reader = Reader::start(mount.clone());
    for n in 1..=ROTATIONS {
        let before = data_target(&mount);
        rotate(n);
        wait_for_explained(
            &format!("generation {n} on disk"),
            LONG,
            || (agent.file("dsn").as_deref() == Some(dsn(n).as_str())).then_some(()),
            || agent.logs(),
        );
        let g = generation(&mount, &["dsn", "db-pass"]).unwrap();
        assert_eq!((g["dsn"].as_str(), g["db-pass"].as_str()), (dsn(n).as_str(), pass(n).as_str()));
        assert_ne!(data_target(&mount), before, "a new ..data target for the rotation");
        wait_for_explained(&format!("notification {n}"), LONG, || (app.count() >= n).then_some(()), || agent.logs());
    }
    std::thread::sleep(SETTLE);
    let (reads, seen) = reader.finish();
    assert_eq!(app.count(), ROTATIONS, "one notification per rotation; logs:\n{}", agent.logs());
    assert!(reads > 100, "the reader read {reads} times");
    assert!(seen.len() >= 2, "the reader saw rotations: {seen:?}");
    let values: Vec<String> = (0..=ROTATIONS).flat_map(|n| [pass(n), dsn(n)]).collect();
    agent.assert_no_values(&values.iter().map(String::as_str).collect::<Vec<_>>());
}

fn db_items() -> Vec<secretmode::providers::AgentItem> {
    vec![item("db-user", "app/db", Some("username")), item("db-pass", "app/db", Some("password"))]
}

fn with_render(mut spec: AgentSpec, app: &App) -> AgentSpec {
    spec.max_staleness_seconds = 300;
    spec.on_change = Some(app.action());
    spec.render = rendered_files();
    spec
}

#[test]
fn openbao_rotation_renders_in_the_same_generation_and_notifies_once() {
    let signer = Signer::new();
    let bao = Bao::start();
    bao.configure_jwt(&signer);
    bao.put("app/db", json!({"username": user(0), "password": pass(0)}));
    let app = App::start();
    let root = tempfile::tempdir().unwrap();
    let spec = with_render(spec(bao.provider(), db_items(), free_port()), &app);
    let agent = start_sidecar(root.path(), &spec, Some(&signer.token("vault")), None, &[]);
    sidecar_drill(agent, &app, &|n| {
        bao.put("app/db", json!({"username": user(n), "password": pass(n)}));
    });
}

#[test]
fn aws_rotation_renders_in_the_same_generation_and_notifies_once() {
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(moto.client());
    let secret = |n: usize| json!({"username": user(n), "password": pass(n)}).to_string();
    rt.block_on(client.create_secret().name("app/db").secret_string(secret(0)).send()).unwrap();
    let app = App::start();
    let mut spec = with_render(spec(moto.aws_provider(AwsAuth::Chain), db_items(), free_port()), &app);
    spec.token_file = None;
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let env = [
        ("AWS_ACCESS_KEY_ID", "chain-key"),
        ("AWS_SECRET_ACCESS_KEY", "chain-secret"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("HOME", home.to_str().unwrap()),
    ];
    let agent = start_sidecar(root.path(), &spec, None, None, &env);
    sidecar_drill(agent, &app, &|n| {
        rt.block_on(client.put_secret_value().secret_id("app/db").secret_string(secret(n)).send()).unwrap();
    });
}

/// A value the template cannot render (not base64) fails the refresh: the previous set stays
/// (items and rendered file), status and metrics name the file and never the value, and the
/// next good value renders again.
#[test]
fn openbao_a_render_error_keeps_the_previous_set_and_names_the_file() {
    let signer = Signer::new();
    let bao = Bao::start();
    bao.configure_jwt(&signer);
    bao.put("app/cert", json!({"pem": "c2VjcmV0LW9uZQ=="}));
    let root = tempfile::tempdir().unwrap();
    let mut spec = spec(bao.provider(), vec![item("cert-b64", "app/cert", Some("pem"))], free_port());
    spec.max_staleness_seconds = 300;
    spec.render = vec![template("cert.pem", "{{ cert-b64 | base64decode }}")];
    let agent = start_sidecar(root.path(), &spec, Some(&signer.token("vault")), None, &[]);
    wait_for_explained("startup", LONG, || (agent.get("/startup").0 == 200).then_some(()), || agent.logs());
    assert_eq!(agent.file("cert.pem").as_deref(), Some("secret-one"));
    let good = data_target(&agent.mount());

    bao.put("app/cert", json!({"pem": "not base64: secret-two!"}));
    let status = wait_for_explained(
        "the render failure recorded",
        LONG,
        || {
            let s = agent.status();
            (s["lastErrorKind"] == "render").then_some(s)
        },
        || agent.logs(),
    );
    let error = status["lastError"].as_str().unwrap();
    assert!(error.starts_with("rendered file cert.pem: item cert-b64 is not valid base64"), "{error}");
    let failures = agent.metric("secretmode_agent_render_failures_total", "file=\"cert.pem\"");
    assert!(failures.unwrap_or(0.0) >= 1.0, "{}", agent.get("/metrics").1);
    assert_eq!(data_target(&agent.mount()), good, "the previous generation stays");
    assert_eq!(agent.file("cert.pem").as_deref(), Some("secret-one"));
    assert_eq!(agent.file("cert-b64").as_deref(), Some("c2VjcmV0LW9uZQ=="));
    assert_eq!(agent.status()["state"], "failing");

    bao.put("app/cert", json!({"pem": "c2VjcmV0LXRocmVl"}));
    wait_for_explained(
        "the next good value rendered",
        LONG,
        || (agent.file("cert.pem").as_deref() == Some("secret-three")).then_some(()),
        || agent.logs(),
    );
    wait_for("state fresh", LONG, || (agent.state() == "fresh").then_some(()));
    agent.assert_no_values(&["secret-one", "secret-two", "secret-three", "not base64"]);
}

/// `--once` (init): the rendered files are written with the items; a render error is exit 1
/// with one line naming the file, nothing written, no value.
#[test]
fn openbao_init_renders_or_fails_without_writing() {
    let signer = Signer::new();
    let bao = Bao::start();
    bao.configure_jwt(&signer);
    bao.put("app/db", json!({"username": user(0), "password": pass(0)}));
    let root = tempfile::tempdir().unwrap();
    let mut spec = spec(bao.provider(), db_items(), 0);
    spec.render = rendered_files();
    prepare_root(root.path(), &spec, Some(&signer.token("vault")), None);
    let (code, stderr, _) = run_once(root.path(), &spec, &[]);
    assert_eq!(code, 0, "{stderr}");
    let mount = root.path().join("var/run/secrets-cache");
    let g = generation(&mount, &["dsn", "app.env", "db-pass"]).unwrap();
    assert_eq!((g["dsn"].as_str(), g["app.env"].as_str()), (dsn(0).as_str(), dotenv(0).as_str()));

    let bad_root = tempfile::tempdir().unwrap();
    spec.render.push(template("creds", "{{ db-pass | key \"password\" }}"));
    prepare_root(bad_root.path(), &spec, Some(&signer.token("vault")), None);
    let (code, stderr, _) = run_once(bad_root.path(), &spec, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("rendered file creds: item db-pass is not a JSON object"), "{stderr}");
    assert!(!stderr.contains("p@ss"), "{stderr}");
    assert!(!bad_root.path().join("var/run/secrets-cache/..data").exists(), "nothing written");

    // A rendered file that takes an item's name is refused before anything is fetched.
    spec.render = vec![template("db-pass", "{{ db-user }}")];
    let (code, stderr, _) = run_once(bad_root.path(), &spec, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("rendered file db-pass has the name of an item"), "{stderr}");
}
