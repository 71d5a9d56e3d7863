//! The app side of the on-change drills: an HTTP app on loopback that records each request,
//! a process marked as a signal target that records each SIGHUP, and a directory updated the
//! way the kubelet's atomic writer (and the Secrets Store CSI driver) update a volume; and
//! `secretmode watch` on such a directory, as the injected watcher runs it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use secretmode::agent::spec::{RenderSpec, WatchSpec, SPEC_VERSION};
use secretmode::vocabulary::on_change::OnChange;
use serde_json::Value;

use super::{agent_bin, free_port, http, wait_for_explained};

/// One request as the app saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub user_agent: String,
    pub content_length: String,
}

/// The app: a real HTTP/1.1 listener on loopback that records every request. It answers
/// 503 to the first `fail_first` requests, then 200.
pub struct App {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl App {
    pub fn start(fail_first: u32) -> App {
        App::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), fail_first)
    }

    pub fn start_on(listener: TcpListener, fail_first: u32) -> App {
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let failed = AtomicU32::new(0);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                let (mut user_agent, mut content_length) = (String::new(), String::from("absent"));
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "user-agent" => user_agent = v.trim().to_string(),
                            "content-length" => content_length = v.trim().to_string(),
                            _ => {}
                        }
                    }
                }
                record.lock().unwrap().push(Seen { method, path, user_agent, content_length });
                let status = if failed.fetch_add(1, Ordering::SeqCst) < fail_first {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
            }
        });
        App { port, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn action(&self) -> OnChange {
        format!("http://127.0.0.1:{}/-/reload", self.port).parse().unwrap()
    }
}

/// A process the webhook would mark as a signal target (`SECRETMODE_SIGNAL_TARGET`), which
/// appends `main` to a file on each SIGHUP. It starts a child that inherits the variable and
/// appends `child`: the topmost rule says the child is never signalled.
pub struct Target {
    pub child: Child,
    pub log: PathBuf,
}

impl Target {
    pub fn start(dir: &Path) -> Target {
        let log = dir.join("hups");
        std::fs::write(&log, "").unwrap();
        let script = r#"
            sh -c 'trap "echo child >> \"$HUPS\"" HUP; while :; do sleep 0.1; done' &
            trap 'echo main >> "$HUPS"' HUP
            while :; do sleep 0.1; done
        "#;
        let child = Command::new("sh")
            .args(["-c", script])
            .env("SECRETMODE_SIGNAL_TARGET", "app")
            .env("HUPS", &log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the target process");
        Target { child, log }
    }

    pub fn hups(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(String::from).collect()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // The whole group: the script and its child.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

/// A directory written the way the kubelet's atomic writer (Secret volumes) and the Secrets
/// Store CSI driver's copy of it write one: `..<timestamp>/` holding the files, `..data`
/// pointing at it, and the user-visible names pointing into `..data`.
pub struct Volume {
    pub dir: PathBuf,
    pub generation: u32,
}

impl Volume {
    pub fn create(dir: &Path, files: &[(&str, &str)]) -> Volume {
        std::fs::create_dir_all(dir).unwrap();
        let mut v = Volume { dir: dir.to_path_buf(), generation: 0 };
        v.swap(files);
        let tops: std::collections::BTreeSet<&str> = files.iter().map(|(n, _)| n.split('/').next().unwrap()).collect();
        for top in tops {
            symlink(Path::new("..data").join(top), dir.join(top)).unwrap();
        }
        v
    }

    /// One update: a new timestamped directory, then `..data_tmp` renamed onto `..data`
    /// (one rename(2)), then the old directory removed.
    pub fn swap(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let name = format!("..2026_12_06_10_00_{:02}.{:09}", self.generation % 60, self.generation);
        let new = self.dir.join(&name);
        for (file, content) in files {
            let path = new.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let tmp = self.dir.join("..data_tmp");
        symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }

    pub fn target(&self) -> String {
        std::fs::read_link(self.dir.join("..data")).unwrap().to_string_lossy().into_owned()
    }
}

/// `secretmode watch` on `dir` (an in-pod path under `root`), with its on-change action and its
/// rendered files; killed on drop.
pub struct Watcher {
    child: Option<Child>,
    root: PathBuf,
    health: u16,
    log: PathBuf,
}

impl Watcher {
    /// Starts it and waits until it serves /healthz and has written its status file.
    pub fn start(root: &Path, dir: &str, on_change: Option<OnChange>, render: Option<RenderSpec>) -> Watcher {
        const LONG: Duration = Duration::from_secs(30);
        let health = free_port();
        let spec = WatchSpec { version: SPEC_VERSION, dir: dir.into(), on_change, render, health_port: health };
        let log = root.join("watch.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(agent_bin())
            .arg("watch")
            .env("SECRETMODE_WATCH_SPEC", serde_json::to_string(&spec).unwrap())
            .env("SECRETMODE_WATCH_ROOT", root)
            .env("SECRETMODE_WATCH_HEALTH_ADDRESS", "127.0.0.1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("start secretmode watch");
        let w = Watcher { child: Some(child), root: root.to_path_buf(), health, log };
        wait_for_explained("the watcher's /healthz", LONG, || (w.get("/healthz").0 == 200).then_some(()), || w.logs());
        wait_for_explained(
            "the watcher's status file",
            LONG,
            || (w.status() != Value::Null).then_some(()),
            || w.logs(),
        );
        w
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match http("GET", &format!("http://127.0.0.1:{}{path}", self.health), &[], None) {
            Ok((c, Value::String(s))) => (c, s),
            Ok((c, v)) => (c, v.to_string()),
            Err(e) => (0, e.to_string()),
        }
    }

    pub fn metric(&self, name: &str, filter: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
    }

    pub fn status(&self) -> Value {
        std::fs::read_to_string(self.root.join("var/run/secrets/secretmode/watch/status.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// `; watcher log:` and the log, for a failure message.
    pub fn logs(&self) -> String {
        format!("; watcher log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
