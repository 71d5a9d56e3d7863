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
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_common::apps::Watcher;
use agent_common::*;
use secretmode::agent::spec::{AgentSpec, RenderSpec, SPEC_VERSION};
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

/// What a reader saw: how many reads, and the distinct renders among them.
type Seen = (usize, BTreeSet<String>);

/// Loops on `<dir>/dsn` until stopped, checking every read is a whole render of one
/// consistent set (`dsn(n)` for some n), and that the rendered file and the items read through
/// one resolution of `..data` belong to the same generation. Returns the reads it made.
struct Reader {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<Seen, String>>>,
}

impl Reader {
    /// `with_items`: the items are in the same directory (init/sidecar); in eso/csi they are
    /// in the source volume and only the rendered files are checked together.
    fn start(dir: PathBuf, with_items: bool) -> Reader {
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
                let names: &[&str] =
                    if with_items { &["dsn", "app.env", "db-user", "db-pass"] } else { &["dsn", "app.env"] };
                if let Some(g) = generation(&dir, names) {
                    let n = (0..=ROTATIONS).find(|n| g["dsn"] == dsn(*n));
                    let consistent = n.is_some_and(|n| {
                        g["app.env"] == dotenv(n)
                            && (!with_items || (g["db-user"] == user(n) && g["db-pass"] == pass(n)))
                    });
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
    let reader = Reader::start(mount.clone(), true);
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

// --- eso/csi: `secretmode render` and `secretmode watch` ---

/// A directory written the way the kubelet's atomic writer (Secret volumes) and the Secrets
/// Store CSI driver write one: `..<timestamp>/` holding the files, `..data` pointing at it
/// (swapped with one rename), the visible names pointing into `..data`.
struct Volume {
    dir: PathBuf,
    generation: u32,
}

impl Volume {
    fn create(dir: &Path, files: &[(&str, String)]) -> Volume {
        std::fs::create_dir_all(dir).unwrap();
        let mut v = Volume { dir: dir.to_path_buf(), generation: 0 };
        v.swap(files);
        for (name, _) in files {
            symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
        v
    }

    fn swap(&mut self, files: &[(&str, String)]) {
        self.generation += 1;
        let name = format!("..2026_12_06_10_00_{:02}.{:09}", self.generation % 60, self.generation);
        let new = self.dir.join(&name);
        std::fs::create_dir_all(&new).unwrap();
        for (file, content) in files {
            std::fs::write(new.join(file), content).unwrap();
        }
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let tmp = self.dir.join("..data_tmp");
        symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

const SECRET_DIR: &str = "/etc/app/secrets";
const RENDERED_DIR: &str = "/etc/app/secrets-rendered";

fn in_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn db_files(n: usize) -> Vec<(&'static str, String)> {
    vec![("db-user", user(n)), ("db-pass", pass(n))]
}

fn render_spec(files: Vec<RenderedFile>) -> RenderSpec {
    RenderSpec { version: SPEC_VERSION, source_dir: SECRET_DIR.into(), dest_dir: RENDERED_DIR.into(), files }
}

/// `secretmode render` with `SECRETMODE_RENDER_ROOT=<root>`: (exit code, stderr).
fn render_once(root: &Path, spec: &RenderSpec) -> (i32, String) {
    let out = Command::new(agent_bin())
        .arg("render")
        .env("SECRETMODE_RENDER_SPEC", serde_json::to_string(spec).unwrap())
        .env("SECRETMODE_RENDER_ROOT", root)
        .env_remove("RUST_LOG")
        .output()
        .expect("run secretmode render");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The init step renders from a kubelet-style volume into the same `..data` layout; a file it
/// cannot render is exit 1 with one line naming the file and the item, nothing written.
#[test]
fn render_step_writes_the_rendered_set_or_fails_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    Volume::create(&in_root(root.path(), SECRET_DIR), &db_files(0));
    let dest = in_root(root.path(), RENDERED_DIR);
    let (code, stderr) = render_once(root.path(), &render_spec(rendered_files()));
    assert_eq!(code, 0, "{stderr}");
    let g = generation(&dest, &["dsn", "app.env"]).expect("a ..data generation");
    assert_eq!((g["dsn"].as_str(), g["app.env"].as_str()), (dsn(0).as_str(), dotenv(0).as_str()));
    assert_eq!(std::fs::read_link(dest.join("dsn")).unwrap(), Path::new("..data/dsn"));
    assert!(!dest.join("db-pass").exists(), "only the rendered files");

    let bad_root = tempfile::tempdir().unwrap();
    Volume::create(&in_root(bad_root.path(), SECRET_DIR), &db_files(0));
    for (files, want) in [
        (
            vec![bundle("creds.json", Format::Json, &["db-user", "api-key"])],
            "rendered file creds.json: item api-key has no value",
        ),
        (vec![template("t", "{{ db-pass | base64decode }}")], "rendered file t: item db-pass is not valid base64"),
    ] {
        let (code, stderr) = render_once(bad_root.path(), &render_spec(files));
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with(&format!("secretmode render: {want}")), "{stderr}");
        assert!(!stderr.contains("p@ss") && !stderr.contains("user-0"), "{stderr}");
        assert!(!in_root(bad_root.path(), RENDERED_DIR).join("..data").exists());
    }
}

/// eso/csi: the render step, then the watcher; every kubelet-style swap is one re-render (the
/// rendered set's `..data` moves once, to the render of the new items), then one notification.
/// A reader looping on the rendered file never sees a partial or mixed file.
#[test]
fn watch_rerenders_once_per_swap_then_notifies_once() {
    let app = App::start();
    let root = tempfile::tempdir().unwrap();
    let source = in_root(root.path(), SECRET_DIR);
    let mut vol = Volume::create(&source, &db_files(0));
    let dest = in_root(root.path(), RENDERED_DIR);
    let spec = render_spec(rendered_files());
    let (code, stderr) = render_once(root.path(), &spec);
    assert_eq!(code, 0, "{stderr}");
    let initial = data_target(&dest);
    let w = Watcher::start(root.path(), SECRET_DIR, Some(app.action()), Some(spec));
    // The watcher renders at start; the files already match, so nothing is written.
    wait_for("the start render", LONG, || {
        w.metric("secretmode_watcher_renders_total", "success").filter(|n| *n >= 1.0)
    });
    assert_eq!(data_target(&dest), initial, "the init step's set is kept as is");
    let reader = Reader::start(dest.clone(), false);
    for n in 1..=ROTATIONS {
        let before = data_target(&dest);
        vol.swap(&db_files(n));
        wait_for_explained(
            &format!("render {n}"),
            LONG,
            || (std::fs::read_to_string(dest.join("dsn")).ok()? == dsn(n)).then_some(()),
            || w.logs(),
        );
        assert_ne!(data_target(&dest), before);
        wait_for_explained(&format!("notification {n}"), LONG, || (app.count() >= n).then_some(()), || w.logs());
    }
    std::thread::sleep(SETTLE);
    let (reads, seen) = reader.finish();
    assert_eq!(app.count(), ROTATIONS, "one notification per swap; {}", w.logs());
    let renders = w.metric("secretmode_watcher_renders_total", "success");
    assert_eq!(renders, Some(1.0 + ROTATIONS as f64), "one at start, one per swap; {}", w.logs());
    assert_eq!(w.metric("secretmode_watcher_changes_total", ""), Some(ROTATIONS as f64));
    assert!(reads > 100 && seen.len() >= 2, "{reads} reads, saw {seen:?}");
    let dirs =
        std::fs::read_dir(&dest).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with(".."));
    assert_eq!(dirs.count(), 2, "..data plus one rendered generation");
    let status = w.status();
    assert_eq!(status["render"]["renderedFrom"], json!(data_target(&source)));
    assert_eq!(status["render"]["error"], Value::Null);
    let text = format!("{status} {}", w.logs());
    for n in 0..=ROTATIONS {
        assert!(!text.contains(&pass(n)) && !text.contains(&dsn(n)), "{text}");
    }
}

/// A swap whose items cannot be rendered keeps the previous rendered set and records the file
/// (status, metrics); the next good swap renders again. A watcher with rendered files and no
/// `on-change` is valid.
#[test]
fn watch_render_failure_keeps_the_previous_set_until_the_next_good_swap() {
    let root = tempfile::tempdir().unwrap();
    let cert = |v: &str| vec![("cert-b64", v.to_string())];
    let mut vol = Volume::create(&in_root(root.path(), SECRET_DIR), &cert("c2VjcmV0LW9uZQ=="));
    let dest = in_root(root.path(), RENDERED_DIR);
    let spec = render_spec(vec![template("cert.pem", "{{ cert-b64 | base64decode }}")]);
    let (code, stderr) = render_once(root.path(), &spec);
    assert_eq!(code, 0, "{stderr}");
    let w = Watcher::start(root.path(), SECRET_DIR, None, Some(spec));
    let good = data_target(&dest);

    vol.swap(&cert("not base64: secret-two!"));
    let status = wait_for_explained(
        "the render failure recorded",
        LONG,
        || {
            let s = w.status();
            s["render"]["error"].is_string().then_some(s)
        },
        || w.logs(),
    );
    let error = status["render"]["error"].as_str().unwrap();
    assert!(error.starts_with("rendered file cert.pem: item cert-b64 is not valid base64"), "{error}");
    let failures = w.metric("secretmode_watcher_render_failures_total", "file=\"cert.pem\"");
    assert!(failures.unwrap_or(0.0) >= 1.0, "{failures:?}");
    assert_eq!(data_target(&dest), good, "the previous rendered set stays");
    assert_eq!(std::fs::read_to_string(dest.join("cert.pem")).unwrap(), "secret-one");

    vol.swap(&cert("c2VjcmV0LXRocmVl"));
    wait_for_explained(
        "the next good swap rendered",
        LONG,
        || (std::fs::read_to_string(dest.join("cert.pem")).ok()? == "secret-three").then_some(()),
        || w.logs(),
    );
    wait_for("the error cleared", LONG, || w.status()["render"]["error"].is_null().then_some(()));
    let text = format!("{} {}", w.status(), w.logs());
    assert!(!text.contains("secret-") && !text.contains("not base64"), "{text}");
}
