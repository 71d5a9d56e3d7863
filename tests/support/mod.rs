//! Helpers shared by the integration tests: finding the real tools that `scripts/test`
//! installs into `.venv`, free loopback ports, strict schema validation, and one of each of
//! the things every test needs: an AdmissionReview shaped like the API server's ([`review`]),
//! pods ([`pods`]), a way to start `serve` ([`serve`]), the JSON Patch applier ([`patch`]),
//! a kill-on-drop guard ([`guard`]), golden files ([`golden`]), the emulated API server
//! admission chain ([`apiserver`]), and `audit` run as a user runs it against files or kube's
//! mock API ([`audit`]).
#![allow(dead_code)]

pub mod apiserver;
pub mod audit;
pub mod golden;
pub mod guard;
pub mod patch;
pub mod pods;
pub mod review;
pub mod serve;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The virtualenv with OpenBao, moto, Helm's SDK and kubernetes-validate.
pub fn venv() -> PathBuf {
    std::env::var_os("SECRETMODE_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"))
}

/// Path of a tool in the virtualenv; panics with the fix if the venv is missing, so a test
/// that needs a real component never silently passes without it.
pub fn venv_bin(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(path.exists(), "{} not found: run scripts/test (it installs the test tools into .venv)", path.display());
    path
}

/// A loopback port that is free now, with the port after it, and that nobody else in this
/// process will be handed.
///
/// Ports come from below the kernel's ephemeral range (32768+), where the source ports of
/// outgoing connections would otherwise take them between this probe and a child's bind; the
/// start is spread by process id because test binaries may run side by side. Only even ports
/// are handed out and the odd one after each is kept free too: `bao server -dev` also binds
/// its cluster listener on port + 1, and a server of a neighbouring test there kept OpenBao
/// from starting (a CI flake).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let spread = (std::process::id() % 500) * 12;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + 2 * ((spread + n) % 6_000) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 1) {
            return port;
        }
        assert!(n < 6_000, "no free pair of loopback ports between 20000 and 32000");
    }
}

/// Kubernetes versions every mutated pod and rendered manifest is checked against: the oldest
/// we support and the newest kubernetes-validate ships.
pub const KUBE_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

/// Validates the given files strictly (unknown fields are errors) for every version in
/// [`KUBE_VERSIONS`]; panics with the problems on any failure.
pub fn kubernetes_validate(files: &[PathBuf]) {
    assert!(!files.is_empty(), "nothing to validate");
    if let Err(problems) = try_kubernetes_validate(files) {
        panic!("kubernetes-validate --strict failed:\n{problems}");
    }
}

/// [`kubernetes_validate`] without the panic: `Ok(n)` with the number of (document, version)
/// pairs that passed, or `Err` listing every problem. It runs the kubernetes-validate library
/// through `tests/py/kube_validate.py`, which reports JSON and fails on a kind without a
/// schema or on no documents at all, so the verdict is never read out of log text.
pub fn try_kubernetes_validate(files: &[PathBuf]) -> Result<u64, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/kube_validate.py");
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(script);
    for version in KUBE_VERSIONS {
        cmd.args(["--version", version]);
    }
    let out = cmd.args(files).output().map_err(|e| format!("cannot run kube_validate.py: {e}"))?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("kube_validate.py printed no report ({e}): {}", String::from_utf8_lossy(&out.stderr)))?;
    let validated = report["validated"].as_u64().ok_or_else(|| format!("report without `validated`: {report}"))?;
    let problems = report["problems"].as_array().ok_or_else(|| format!("report without `problems`: {report}"))?;
    match (out.status.success(), problems.is_empty(), validated) {
        (true, true, n) if n > 0 => Ok(n),
        _ => Err(format!(
            "exit {}, {validated} validated, problems:\n{}",
            out.status,
            serde_json::to_string_pretty(problems).unwrap_or_default()
        )),
    }
}

/// Writes each JSON value to its own file in `dir` and validates them all in one run.
pub fn validate_objects(dir: &Path, objects: &[(String, serde_json::Value)]) {
    let files: Vec<PathBuf> = objects
        .iter()
        .map(|(name, obj)| {
            let path = dir.join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_vec_pretty(obj).expect("serialise")).expect("write");
            path
        })
        .collect();
    kubernetes_validate(&files);
}
