//! Where the time of one admission goes, stage by stage, in a release build (no profiler
//! needed): `secretmode-review-cost examples/admission/sidecar.json [iterations [stage]]`
//! (the last stage logs to stderr: add `2>/dev/null`).
//! Built only with `--features bench`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;

use secretmode::config::Config;
use secretmode::decide;
use secretmode::json::tree::JsonRef;
use secretmode::logging::{self, LogFormat, LogWriter};
use secretmode::webhook::pod_view;
use secretmode::webhook::review;
use secretmode::webhook::routes;

#[path = "naive.rs"]
mod naive;

/// mimalloc, as in `secretmode`: see docs/BENCHMARKS.md (allocation-bound request path).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn time<T>(label: &str, n: u32, mut f: impl FnMut() -> T) {
    // A third argument runs only the stages whose label contains it, so an instruction
    // counter (`valgrind --tool=callgrind`) sees one stage: repeatable on a busy machine.
    if std::env::args().nth(3).is_some_and(|only| !label.contains(&only)) {
        return;
    }
    for _ in 0..n / 10 {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    println!("{label:<40} {:>8.2} us", start.elapsed().as_secs_f64() * 1e6 / f64::from(n));
}

/// [`time`] with the caches cold, as a server's are between two admissions under load: before
/// each call, 4 MB of memory is written (more than L2, so the review's data and code leave it)
/// and the built-in config is parsed again (other code through the branch predictors). Only
/// the call is timed, over a tenth of the iterations. A stage for timing, not for callgrind.
fn cold<T>(label: &str, n: u32, mut f: impl FnMut() -> T) {
    if std::env::args().nth(3).is_some_and(|only| !label.contains(&only)) {
        return;
    }
    let n = (n / 10).max(1);
    let mut junk = vec![0u8; 4 << 20];
    let mut total = Duration::ZERO;
    for round in 0..n {
        for byte in junk.iter_mut().step_by(64) {
            *byte = byte.wrapping_add(round as u8);
        }
        black_box(&junk);
        black_box(Config::builtin().ok());
        let start = Instant::now();
        black_box(f());
        total += start.elapsed();
    }
    println!("{label:<40} {:>8.2} us", total.as_secs_f64() * 1e6 / f64::from(n));
}

fn main() -> Result<()> {
    let path = std::env::args().nth(1).context("usage: secretmode-review-cost REVIEW.json [N [STAGE]]")?;
    let n: u32 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let review: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let body = serde_json::to_vec(&review)?;
    let pod = review["request"]["object"].clone();
    let pod_text = serde_json::to_string(&pod)?;
    let config = Config::builtin()?;
    println!("{path}: review {} bytes, pod {} bytes, {n} iterations", body.len(), pod_text.len());
    time("review::review (whole)", n, || review::review(&body, &config));
    // The handler the target is calibrated on (bench/naive.rs): what the rework saved. Checked
    // first: its answer must patch the pod as secretmode's does.
    naive::check(std::slice::from_ref(&path), &config)?;
    for flavour in naive::Flavour::ALL {
        let label = format!("naive parse-clone-diff handler ({})", flavour.name());
        time(&label, n, || flavour.answer(&body, &config).map(|a| a.len()));
    }
    // What the ceiling server (bench/ceiling.rs) does with the same bytes: validate all, keep
    // the uid. The distance between this and the whole review is what the ratio measures.
    time("ceiling's parse (validate, keep uid)", n, || {
        serde_json::from_slice::<serde::de::IgnoredAny>(&body).map(|_| body.len())
    });
    // The other reading of "parse it as JSON" (bench/ceiling.rs, `/value`): the review built.
    time("ceiling building a Value", n, || serde_json::from_slice::<Value>(&body).map(|v| v.is_object()));
    cold("cold caches: the review", n, || review::review(&body, &config));
    cold("cold caches: the ceiling's validation", n, || {
        serde_json::from_slice::<serde::de::IgnoredAny>(&body).map(|_| body.len())
    });
    time("parse pod into Value", n, || serde_json::from_str::<Value>(&pod_text));
    // What the review builds of the pod (strings borrowed, unread fields skipped), and drops.
    time("pod view (pod_view::parse)", n, || pod_view::parse(&pod_text));
    let view = pod_view::parse(&pod_text)?;
    time("decide::decide", n, || decide::decide(&view, "demo", &config));
    let prefix = config.annotation_prefix.as_str();
    let ann = view.at(&["metadata", "annotations"]).and_then(JsonRef::as_object);
    time("annotations::parse", n, || secretmode::decide::annotations::parse(ann, prefix));
    let parsed = secretmode::decide::annotations::parse(ann, prefix).ok().flatten().context("annotations")?;
    let mode = parsed.mode.context("mode")?;
    time("annotations::resolve", n, || secretmode::decide::annotations::resolve(&parsed, mode, &config));
    let plan = secretmode::decide::annotations::resolve(&parsed, mode, &config)?;
    let spec = view.get("spec").unwrap_or(&JsonRef::Null);
    time("policy.evaluate_pod", n, || config.policy.evaluate_pod("demo", spec, Some(&plan), &config));
    let ctx = secretmode::decide::inject::Context { namespace: "demo", injected_note: "mode=sidecar,items=2" };
    time("inject::inject", n, || secretmode::decide::inject::inject(&view, &plan, &config, &ctx));
    let injection = secretmode::decide::inject::inject(&view, &plan, &config, &ctx)?;
    time("serialise patch", n, || serde_json::to_vec(&injection.ops));
    // Last, because it installs the subscriber `serve` installs: the admission's log line,
    // written to stderr (run with 2>/dev/null). SECRETMODE_LOG_FORMAT=json for the JSON layout.
    let reviewed = review::review(&body, &config)?;
    let format = match std::env::var("SECRETMODE_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let _log = logging::init(format, "info", LogWriter::Background);
    time("admission log line", n, || routes::log_admission(&reviewed, Duration::from_micros(87)));
    Ok(())
}
