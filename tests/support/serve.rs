//! The one way the tests start `secretmode serve`: rcgen certificates for the Service name,
//! fresh loopback ports retried when another test takes one first, and a process that dies
//! with its guard — or with the test binary, for a server shared by all tests of a binary
//! ([`shared`]), whose guard is never dropped.
//!
//! The binary runs under a small `sh` wrapper that prints serve's pid and kills serve when its
//! stdin closes. The test process holds the other end of that pipe, and the kernel closes it
//! however the test process ends, so no server outlives the tests.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// The name the API server dials: `<service>.<namespace>.svc` (SNI and certificate name).
pub const SERVICE: &str = "secretmode.secretmode.svc";

/// A CA and a serving certificate for [`SERVICE`] and `localhost`, in PEM.
pub struct Tls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Tls {
    pub fn generate(ca_name: &str) -> Tls {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("serving key");
        let params = CertificateParams::new(vec![SERVICE.to_string(), "localhost".to_string()]).expect("params");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("serving certificate");
        Tls { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// Writes `tls.crt` and `tls.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).expect("certificate directory");
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write tls.crt");
        std::fs::write(&key, &self.key_pem).expect("write tls.key");
        (cert, key)
    }
}

/// How to start the server besides its ports.
#[derive(Default)]
pub struct Options<'a> {
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    /// `--config`; the built-in configuration without it.
    pub config: Option<&'a Path>,
    pub extra: &'a [&'a str],
    /// Where the server's stderr goes (at the default log level); inherited, at
    /// `secretmode=warn`, without it.
    pub log: Option<&'a Path>,
    /// `RUST_LOG` instead of the above (a test that sends bad requests on purpose keeps the
    /// server's warnings about them out of the test output).
    pub rust_log: Option<&'a str>,
}

/// A running `secretmode serve`; killed when dropped.
pub struct Serve {
    wrapper: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    pub port: u16,
    pub admin: u16,
}

const WRAPPER: &str = r#"exec 3<&0
"$@" </dev/null >/dev/null 3<&- &
pid=$!
exec 2>/dev/null
echo "$pid"
{ read -r _ <&3; kill -9 "$pid" 2>/dev/null; } &
wait "$pid"
"#;

impl Serve {
    /// Starts the binary with a certificate pair and extra arguments.
    pub fn start(cert: &Path, key: &Path, extra: &[&str]) -> Serve {
        Serve::start_with(&Options { cert: Some(cert), key: Some(key), extra, ..Options::default() })
    }

    /// Starts the binary on fresh loopback ports. Another test may take a port between our
    /// probe and the child's bind, so an early exit is retried on new ports.
    pub fn start_with(options: &Options<'_>) -> Serve {
        for _ in 0..5 {
            let (port, admin) = (super::free_port(), super::free_port());
            let mut cmd = Command::new("sh");
            cmd.args(["-c", WRAPPER, "serve-wrapper", env!("CARGO_BIN_EXE_secretmode"), "serve"]).args([
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--admin-addr",
                &format!("127.0.0.1:{admin}"),
            ]);
            if let Some(cert) = options.cert {
                cmd.arg("--tls-cert").arg(cert);
            }
            if let Some(key) = options.key {
                cmd.arg("--tls-key").arg(key);
            }
            if let Some(config) = options.config {
                cmd.arg("--config").arg(config);
            }
            cmd.args(options.extra)
                .env(
                    "RUST_LOG",
                    options.rust_log.unwrap_or(if options.log.is_some() { "info" } else { "secretmode=warn" }),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(match options.log {
                    Some(path) => std::fs::File::create(path).expect("server log file").into(),
                    None => Stdio::inherit(),
                });
            let mut wrapper = cmd.spawn().expect("start sh");
            let stdin = wrapper.stdin.take();
            let mut line = String::new();
            if let Some(out) = wrapper.stdout.take() {
                BufReader::new(out).read_line(&mut line).expect("read the server's pid");
            }
            let pid = line.trim().parse().unwrap_or_else(|_| panic!("the wrapper printed no pid: {line:?}"));
            let mut server = Serve { wrapper, stdin, pid, port, admin };
            if server.wait_for_admin() {
                return server;
            }
        }
        panic!("server did not start on five pairs of ports");
    }

    /// Whether the admin port answers; false if the process exited first (port taken).
    fn wait_for_admin(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.admin)).is_ok() {
                return true;
            }
            if self.wrapper.try_wait().expect("wait for the server").is_some() {
                return false;
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server process (not its wrapper).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The URL the API server calls, as the chart registers it (`/mutate`), with the
    /// `?timeout=` it appends.
    pub fn url(&self) -> String {
        format!("https://{SERVICE}:{}/mutate?timeout=10s", self.port)
    }

    /// A client that trusts only `ca_pem`, resolves the Service name to this server, speaks
    /// HTTP/1.1 only, and opens a fresh connection per request (so rotation tests see new
    /// handshakes).
    pub fn client(&self, ca_pem: &str) -> reqwest::Client {
        self.client_builder(ca_pem).pool_max_idle_per_host(0).build().expect("client")
    }

    /// The same, to adjust (connection reuse, timeouts).
    pub fn client_builder(&self, ca_pem: &str) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM"))
            .resolve(SERVICE, self.addr())
            .http1_only()
            .timeout(Duration::from_secs(10))
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://127.0.0.1:{}{path}", self.admin)).await.expect("admin request");
        (r.status().as_u16(), r.text().await.expect("admin body"))
    }

    /// SIGTERM to the server.
    pub fn terminate(&self) {
        Command::new("kill").args(["-TERM", &self.pid.to_string()]).status().expect("kill -TERM");
    }

    /// The server's exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.wrapper.try_wait().expect("wait for the server")
    }

    /// SIGTERM, and waits for the process to exit (its log written out).
    pub fn stop(mut self) {
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.try_wait().is_none() {
            assert!(Instant::now() < deadline, "server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Closing the wrapper's stdin makes it kill the server; then reap the wrapper.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.wrapper.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.wrapper.kill();
        let _ = self.wrapper.wait();
    }
}

/// A server started once per test binary under `key`, with its CA, for tests that only
/// send reviews; it lives until the test binary exits.
pub struct Shared {
    pub serve: Serve,
    pub tls: Tls,
}

/// The shared server for `key`, started with `config` (the built-in one if `None`) on the
/// first call.
pub fn shared(key: &str, config: Option<&Path>) -> &'static Shared {
    static SERVERS: OnceLock<Mutex<HashMap<String, &'static Shared>>> = OnceLock::new();
    let mut servers = SERVERS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = servers.get(key) {
        return s;
    }
    let tls = Tls::generate(&format!("{key}-ca"));
    remove_stale(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-{}-{key}", std::process::id()));
    let (cert, key_path) = tls.write(&dir);
    let serve = Serve::start_with(&Options { cert: Some(&cert), key: Some(&key_path), config, ..Options::default() });
    let shared: &'static Shared = Box::leak(Box::new(Shared { serve, tls }));
    servers.insert(key.to_string(), shared);
    shared
}

/// Removes what earlier test runs left in `dir` for their shared servers (certificates,
/// configurations) once it is a day old; the servers that used them are long gone.
pub fn remove_stale(dir: &Path) {
    let day = Duration::from_secs(24 * 3600);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|age| age > day));
        if old && (name.starts_with("serve-") || name.starts_with("config-")) {
            let _ = std::fs::remove_dir_all(entry.path()).or_else(|_| std::fs::remove_file(entry.path()));
        }
    }
}
