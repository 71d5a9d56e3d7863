//! The Dockerfile, read as text (no Docker engine runs on these machines): a multi-stage build
//! of static musl release binaries, `secretmode` copied to `/secretmode` (where the injected
//! agent runs it) and the exec wrapper `secretmode-exec` to `agent.execBinary`
//! (`/secretmode-exec`, 0555), on a scratch or distroless static base, running as a numeric
//! non-root user with nothing that needs a shell at run time.

use std::path::Path;

struct Stage {
    from: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

/// Minimal Dockerfile reader: joins continuation lines, drops comments, splits stages.
fn stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    let mut out: Vec<Stage> = Vec::new();
    for line in logical.into_iter().filter(|l| !l.trim().is_empty()) {
        let (op, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let op = op.to_ascii_uppercase();
        if op == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let name = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("AS"))
                .and_then(|i| words.get(i + 1))
                .map(|s| s.to_string());
            out.push(Stage { from: words[0].to_string(), name, instructions: Vec::new() });
        } else if let Some(stage) = out.last_mut() {
            stage.instructions.push((op, rest.trim().to_string()));
        }
    }
    out
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn multi_stage_static_musl_binary_on_a_minimal_nonroot_base() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let stages = stages(&text);
    assert!(stages.len() >= 2, "multi-stage");

    let build = &stages[0];
    let build_name = build.name.clone().expect("the build stage is named");
    let run: String =
        build.instructions.iter().filter(|(op, _)| op == "RUN").map(|(_, r)| r.as_str()).collect::<Vec<_>>().join(" ");
    for needle in [
        "cargo build",
        "--release",
        "--locked",
        "unknown-linux-musl",
        "+crt-static",
        "musl-tools",
        "--bin secretmode ",
        "--bin secretmode-exec",
    ] {
        assert!(run.contains(needle), "build stage lacks {needle:?}");
    }

    let last = stages.last().unwrap();
    assert!(
        last.from == "scratch" || last.from.starts_with("gcr.io/distroless/static"),
        "final base must be scratch or distroless/static, is {}",
        last.from
    );
    assert!(!last.instructions.iter().any(|(op, _)| op == "RUN"), "no RUN (no shell) in the final stage");
    let copy = last
        .instructions
        .iter()
        .find(|(op, rest)| op == "COPY" && rest.contains(&format!("--from={build_name}")))
        .expect("COPY --from the build stage");
    let binary = secretmode::config::Config::builtin().unwrap().agent.binary;
    assert!(copy.1.ends_with(&format!(" {binary}")), "the binary lands at the agent's path {binary}: {}", copy.1);

    // The exec wrapper, where the `secretmode-exec` init container runs it, read-only for all.
    let exec_binary = exec_binary();
    let exec_copy = last
        .instructions
        .iter()
        .find(|(op, rest)| op == "COPY" && rest.ends_with(&format!(" {exec_binary}")))
        .unwrap_or_else(|| panic!("no COPY of the exec wrapper to {exec_binary}"));
    assert!(exec_copy.1.contains(&format!("--from={build_name}")), "{}", exec_copy.1);
    assert!(exec_copy.1.contains("--chmod=0555"), "the wrapper is 0555: {}", exec_copy.1);
    assert!(exec_copy.1.contains("/secretmode-exec "), "it is the secretmode-exec binary: {}", exec_copy.1);
    // The build stage runs the static wrapper once, on a real file, before it is shipped.
    assert!(run.contains("secretmode-exec --env"), "the build stage tries the wrapper");

    let user = last.instructions.iter().rev().find(|(op, _)| op == "USER").expect("USER").1.clone();
    let ids: Vec<u32> = user.split(':').map(|p| p.parse().expect("numeric uid[:gid]")).collect();
    assert!(ids.iter().all(|&id| id > 0), "non-root uid/gid: {user}");
    let builtin = secretmode::config::Config::builtin().unwrap();
    assert_eq!(i64::from(ids[0]), builtin.agent.run_as_user, "image user matches the injected agent's runAsUser");

    let entrypoint = last.instructions.iter().find(|(op, _)| op == "ENTRYPOINT").expect("ENTRYPOINT").1.clone();
    let parsed: Vec<String> = serde_json::from_str(&entrypoint).expect("exec-form ENTRYPOINT (no shell)");
    assert_eq!(parsed, [binary]);

    // The toolchain is at least what Cargo.toml declares.
    let arg = text.lines().find_map(|l| l.strip_prefix("ARG RUST_VERSION=")).expect("ARG RUST_VERSION");
    let declared = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = ").map(|v| v.trim_matches('"').to_string()))
        .expect("rust-version");
    let version = |s: &str| s.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
    assert!(version(arg) >= version(&declared), "RUST_VERSION {arg} < rust-version {declared}");
}

/// `agent.execBinary` in the built-in config; the I24 default `/secretmode-exec` when the key is
/// left out (the config's serde default).
fn exec_binary() -> String {
    let text = std::fs::read_to_string(root().join("src/config/default-config.yaml")).unwrap();
    let config: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    match &config["agent"]["execBinary"] {
        serde_yaml::Value::Null => "/secretmode-exec".to_string(),
        v => v.as_str().expect("agent.execBinary is a string").to_string(),
    }
}

#[test]
fn the_build_context_leaves_out_artifacts_and_keys() {
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for entry in ["target/", ".git/", ".venv/", "certs/", "*.key"] {
        assert!(ignore.lines().any(|l| l.trim() == entry), ".dockerignore lacks {entry}");
    }
}
