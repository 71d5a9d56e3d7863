//! The external checkers the chart tests trust, each called one way only: Helm's linter, the
//! custom-resource check and the webhook-configuration check with the CEL engine
//! (kubernetes-validate is `support::try_kubernetes_validate`). Each reads the checker's exit
//! code and its JSON report, never its log text, and refuses a report of the wrong shape.
//! tests/checker_controls.rs feeds these same functions known-bad input they must reject, so
//! none of them can turn into a check that always passes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::support;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(name)
}

fn run_python(script_name: &str, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(support::venv_bin("python"))
        .arg(script(script_name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tests/py/{script_name}: {e}"))
}

/// The JSON report a checker printed, or why there is none.
fn report(script_name: &str, out: &Output) -> Result<Value, String> {
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "tests/py/{script_name} printed no JSON report ({e}); exit {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().map_or_else(|| s.to_string(), String::from)).collect())
        .unwrap_or_default()
}

/// Helm's linter, strict, with `values` (a JSON file, or `-` for the chart's defaults).
/// `Ok(())` only when Helm linted at least one chart and reported no warning or error;
/// `Err` lists the problems.
pub fn helm_lint(chart: &Path, values: &str, namespace: &str) -> Result<(), Vec<String>> {
    let out = run_python(
        "helm_chart.py",
        &["lint".as_ref(), chart.as_os_str(), values.as_ref(), "--namespace".as_ref(), namespace.as_ref()],
    );
    let report = report("helm_chart.py", &out).map_err(|e| vec![e])?;
    let (Some(ok), Some(charts), Some(problems)) =
        (report["ok"].as_bool(), report["charts"].as_u64(), report["problems"].as_array())
    else {
        return Err(vec![format!("lint report of the wrong shape: {report}")]);
    };
    match (out.status.success(), ok, charts, problems.is_empty()) {
        (true, true, 1.., true) => Ok(()),
        (true, ..) => Err(vec![format!("lint exited 0 but reported a failure: {report}")]),
        _ if problems.is_empty() => Err(vec![format!("lint failed without naming a problem: {report}")]),
        _ => Err(strings(&report["problems"])),
    }
}

/// `tests/py/crd_check.py` on custom resources: `Ok(n)` with the number checked, `Err` with
/// every problem.
pub fn crd_check(files: &[PathBuf]) -> Result<u64, String> {
    let args: Vec<&std::ffi::OsStr> = files.iter().map(|f| f.as_os_str()).collect();
    let out = run_python("crd_check.py", &args);
    let report = report("crd_check.py", &out)?;
    let (Some(checked), Some(problems)) = (report["checked"].as_u64(), report["problems"].as_array()) else {
        return Err(format!("crd_check report of the wrong shape: {report}"));
    };
    match (out.status.success(), problems.is_empty(), checked) {
        (true, true, n) if n > 0 => Ok(n),
        _ => Err(format!("exit {}, {checked} checked: {}", out.status, strings(&report["problems"]).join("\n"))),
    }
}

/// One MutatingWebhookConfiguration file as `tests/py/webhook_config.py` judged it.
#[derive(Debug)]
pub struct WebhookConfig {
    pub file: String,
    pub webhooks: u64,
    /// What the API server's validation would reject, as `path: message`.
    pub problems: Vec<String>,
    /// (object name, webhook name) → "call" | "skip" | "reject", with the conditions' results.
    pub calls: Vec<Call>,
}

#[derive(Debug)]
pub struct Call {
    pub object: String,
    pub webhook: String,
    pub decision: String,
    /// (condition name, `true` | `false` | `"error"`, error message).
    pub conditions: Vec<(String, Value, Option<String>)>,
}

impl WebhookConfig {
    /// The API server's decision for `object` on the only webhook of this configuration.
    pub fn decision(&self, object: &str) -> &str {
        let calls: Vec<&Call> = self.calls.iter().filter(|c| c.object == object).collect();
        assert_eq!(calls.len(), 1, "{}: expected one webhook deciding on {object}: {calls:?}", self.file);
        &calls[0].decision
    }
}

/// Validates MutatingWebhookConfiguration files as the API server does and evaluates their
/// matchConditions with the real CEL engine for each named `object` (a pod as the API server
/// converts it, or with a `request` of its own as `{"object": ..., "request": ...}`). `Err`
/// only when the checker could not run or answered in an unknown shape; problems are in the
/// result, one entry per file in order.
pub fn webhook_config(files: &[PathBuf], objects: &[(String, Value)]) -> Result<Vec<WebhookConfig>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cases = dir.path().join("cases.json");
    let objects: Vec<Value> = objects
        .iter()
        .map(|(name, o)| match (o.get("object"), o.get("request")) {
            (Some(object), Some(request)) => json!({"name": name, "object": object, "request": request}),
            _ => json!({"name": name, "object": o}),
        })
        .collect();
    let input = json!({"configs": files, "objects": objects});
    std::fs::write(&cases, serde_json::to_vec(&input).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let out = run_python("webhook_config.py", &[cases.as_os_str()]);
    let report = report("webhook_config.py", &out)?;
    let shape = |what: &str| format!("webhook_config report without {what}: {report}");
    let configs = report["configs"].as_array().ok_or_else(|| shape("configs"))?;
    if configs.len() != files.len() {
        return Err(shape("one entry per file"));
    }
    let mut result = Vec::new();
    for c in configs {
        let problems = c["problems"].as_array().ok_or_else(|| shape("problems"))?;
        let mut calls = Vec::new();
        for call in c["calls"].as_array().ok_or_else(|| shape("calls"))? {
            let conditions = call["conditions"]
                .as_array()
                .ok_or_else(|| shape("conditions"))?
                .iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or_default().to_string(),
                        r["result"].clone(),
                        r["error"].as_str().map(String::from),
                    )
                })
                .collect();
            let decision = call["decision"].as_str().ok_or_else(|| shape("decision"))?;
            if !["call", "skip", "reject"].contains(&decision) {
                return Err(shape("a known decision"));
            }
            calls.push(Call {
                object: call["object"].as_str().ok_or_else(|| shape("object"))?.to_string(),
                webhook: call["webhook"].as_str().unwrap_or_default().to_string(),
                decision: decision.to_string(),
                conditions,
            });
        }
        result.push(WebhookConfig {
            file: c["file"].as_str().unwrap_or_default().to_string(),
            webhooks: c["webhooks"].as_u64().ok_or_else(|| shape("webhooks"))?,
            problems: problems
                .iter()
                .map(|p| format!("{}: {}", p["path"].as_str().unwrap_or("?"), p["message"].as_str().unwrap_or("?")))
                .collect(),
            calls,
        });
    }
    // The exit code and the report must agree.
    let any_problem = result.iter().any(|c| !c.problems.is_empty());
    if out.status.success() == any_problem {
        return Err(format!("webhook_config.py exit {} disagrees with its report: {report}", out.status));
    }
    Ok(result)
}
