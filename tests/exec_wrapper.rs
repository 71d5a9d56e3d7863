//! The exec wrapper (`secretmode-exec`, `secrets/env-values: "true"`), the real built binary
//! against real files in every mode's layout: a kubelet atomic-writer directory (`..data` to a
//! timestamped directory, one symlink per key) for `eso` and `csi`, and the files the real
//! agent writes from a real OpenBao dev server for `init` (`agent --once`) and `sidecar`.
//!
//! Each run installs the wrapper as the `secretmode-exec` init container does (`--install`
//! into `EXEC_DIR` under a temp root) and runs the container's command as the webhook rewrites
//! it: `[EXEC_PATH, "--env", "<STEM>,...", "--", <command>...]` followed by the container's
//! `args`. The test app is `sh`, found in PATH, printing per variable only its length and
//! SHA-256 (never a value in the test log); the test compares them with the expected bytes.

mod agent_common;

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agent_common::*;
use secretmode::vocabulary::paths::{EXEC_DIR, EXEC_PATH};
use serde_json::json;

const BUILT: &str = env!("CARGO_BIN_EXE_secretmode-exec");
const LONG: Duration = Duration::from_secs(30);

/// Prints `<NAME> <bytes> <sha256>` (or `<NAME> unset`) for each name in `$@`.
const REPORT: &str = r#"for s in "$@"; do
  eval "isset=\${$s+set} v=\${$s-}"
  if [ "$isset" != set ]; then echo "$s unset"; continue; fi
  printf '%s %s %s\n' "$s" "$(printf %s "$v" | wc -c)" "$(printf %s "$v" | sha256sum | cut -d' ' -f1)"
done"#;

/// A pod's filesystem under a temp root: the wrapper installed at `EXEC_PATH` in it.
struct Pod {
    root: tempfile::TempDir,
}

impl Pod {
    /// Installs the wrapper as the init container does: `secretmode-exec --install EXEC_DIR`.
    fn new() -> Pod {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(EXEC_DIR.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new(BUILT).arg("--install").arg(&dir).output().unwrap();
        assert!(out.status.success(), "install: {}", String::from_utf8_lossy(&out.stderr));
        Pod { root }
    }

    /// An in-pod absolute path, under the root.
    fn path(&self, in_pod: &str) -> PathBuf {
        self.root.path().join(in_pod.trim_start_matches('/'))
    }

    /// The container's command as the webhook rewrites it, then its args (the runtime appends
    /// them), run with `env` as the container's environment (plus PATH).
    fn run(&self, stems: &[&str], command: &[&str], args: &[&str], env: &[(String, PathBuf)]) -> Output {
        self.spawn(stems, command, args, env, Stdio::piped()).wait_with_output().unwrap()
    }

    fn spawn(
        &self,
        stems: &[&str],
        command: &[&str],
        args: &[&str],
        env: &[(String, PathBuf)],
        stdout: Stdio,
    ) -> std::process::Child {
        let wrapped: Vec<OsString> = [EXEC_PATH, "--env", &stems.join(","), "--"]
            .into_iter()
            .chain(command.iter().copied())
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        let mut cmd = Command::new(self.path(&wrapped[0].to_string_lossy()));
        cmd.args(&wrapped[1..]).env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
        for (name, path) in env {
            cmd.env(name, path);
        }
        cmd.stdout(stdout).stderr(Stdio::piped()).spawn().unwrap()
    }
}

/// `<NAME> <bytes> <sha256>`, as the REPORT script prints it for `value`.
fn line(name: &str, value: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, value);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{name} {} {hex}", value.len())
}

/// `<STEM>_FILE` for each (stem, in-pod file), as the webhook injects it, rooted.
fn file_vars(pod: &Pod, files: &[(&str, String)]) -> Vec<(String, PathBuf)> {
    files.iter().map(|(stem, file)| (format!("{stem}_FILE"), pod.path(file))).collect()
}

/// Runs the REPORT app through the wrapper and checks that it sees every value byte for byte.
fn assert_app_sees(pod: &Pod, env: &[(String, PathBuf)], expected: &[(&str, &[u8])]) {
    let stems: Vec<&str> = expected.iter().map(|(s, _)| *s).collect();
    let out = pod.run(&stems, &["sh", "-c", REPORT, "app"], &stems, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
    let want: Vec<String> = expected.iter().map(|(s, v)| line(s, v)).collect();
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    assert_eq!(got, want);
}

/// A kubelet atomic-writer directory (Secret volumes, and the CSI driver's mounts): the
/// files in a timestamped directory, `..data` pointing at it, one `<key> -> ..data/<key>`
/// symlink per key. Writing again swaps `..data` to a new directory.
fn atomic_write(mount: &Path, generation: u32, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(mount).unwrap();
    let ts = format!("..2026_12_06_10_00_0{generation}.{}", 100_000 + generation);
    std::fs::create_dir(mount.join(&ts)).unwrap();
    for (key, value) in files {
        std::fs::write(mount.join(&ts).join(key), value).unwrap();
        let link = mount.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(key), &link).unwrap();
        }
    }
    let tmp = mount.join("..data_tmp");
    symlink(&ts, &tmp).unwrap();
    std::fs::rename(&tmp, mount.join("..data")).unwrap();
}

const PASSWORD: &[u8] = b"pa ss=w\xc3\xb6rd \"quoted\" $HOME `id`\n";
const CERT: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\nAAAA\n-----END CERTIFICATE-----\n";

#[test]
fn eso_and_csi_atomic_writer_directories_every_value_byte_for_byte() {
    let big = vec![b'k'; 100 * 1024];
    let binary: &[u8] = b"\xff\xfe\x01 not utf-8\t";
    // (mode, file names as the mode names them: eso the Secret's keys, csi the object names)
    for (mode, password, cert, token) in
        [("eso", "db-password", "tls.crt", "api-token"), ("csi", "dbPassword", "tlsCert", "apiToken")]
    {
        let pod = Pod::new();
        let mount = "/var/run/secrets-cache";
        let files: [(&str, &[u8]); 4] = [(password, PASSWORD), (cert, CERT), (token, &big), ("empty", b"")];
        atomic_write(&pod.path(mount), 1, &files);
        let mut env = file_vars(
            &pod,
            &[
                ("DB_PASSWORD", format!("{mount}/{password}")),
                ("TLS_CRT", format!("{mount}/{cert}")),
                ("API_TOKEN", format!("{mount}/{token}")),
                ("EMPTY", format!("{mount}/empty")),
            ],
        );
        assert_app_sees(
            &pod,
            &env,
            &[("DB_PASSWORD", PASSWORD), ("TLS_CRT", CERT), ("API_TOKEN", &big), ("EMPTY", b"")],
        );

        // A new generation (`..data` swapped): a process started now sees it.
        atomic_write(&pod.path(mount), 2, &[(password, b"rotated\n"), (cert, binary)]);
        env.truncate(2);
        assert_app_sees(&pod, &env, &[("DB_PASSWORD", b"rotated\n"), ("TLS_CRT", binary)]);
        eprintln!("{mode}: ok");
    }
}

fn bao_items() -> Vec<secretmode::providers::AgentItem> {
    vec![
        item("db-password", "app/db", Some("password")),
        item("db.user", "app/db", Some("username")),
        item("tls-crt", "app/tls", Some("crt")),
    ]
}

const VALUES: [(&str, &[u8]); 3] = [("DB_PASSWORD", PASSWORD), ("DB_USER", b"app-user"), ("TLS_CRT", CERT)];

fn put_values(bao: &Bao) {
    let s = |v: &[u8]| String::from_utf8(v.to_vec()).unwrap();
    bao.put("app/db", json!({"password": s(PASSWORD), "username": "app-user"}));
    bao.put("app/tls", json!({"crt": s(CERT)}));
}

/// `<STEM>_FILE` for the agent's items, at the in-pod mount path.
fn agent_vars(pod: &Pod, mount: &str) -> Vec<(String, PathBuf)> {
    file_vars(
        pod,
        &[
            ("DB_PASSWORD", format!("{mount}/db-password")),
            ("DB_USER", format!("{mount}/db.user")),
            ("TLS_CRT", format!("{mount}/tls-crt")),
        ],
    )
}

#[test]
fn init_files_written_by_the_real_agent_from_openbao() {
    let bao = Bao::start();
    put_values(&bao);
    let mut spec = spec(vault_token_provider(&bao.addr), bao_items(), 0);
    spec.token_file = None;
    let pod = Pod::new();
    let (code, stderr, _) = run_once(pod.root.path(), &spec, &[("VAULT_TOKEN", ROOT_TOKEN)]);
    assert_eq!(code, 0, "{stderr}");
    let env = agent_vars(&pod, &spec.mount_path);
    assert_app_sees(&pod, &env, &VALUES);
}

#[test]
fn sidecar_files_written_by_the_real_agent_from_openbao() {
    let bao = Bao::start();
    put_values(&bao);
    let mut spec = spec(vault_token_provider(&bao.addr), bao_items(), free_port());
    spec.token_file = None;
    let pod = Pod::new();
    let agent = start_sidecar(pod.root.path(), &spec, None, None, &[("VAULT_TOKEN", ROOT_TOKEN)]);
    wait_for("the sidecar's first generation", LONG, || (agent.state() == "fresh").then_some(()));
    let env = agent_vars(&pod, &spec.mount_path);
    assert_app_sees(&pod, &env, &VALUES);

    // Rotated in OpenBao: once the sidecar has the new generation, a restarted app sees it.
    bao.put("app/db", json!({"password": "rotated-password", "username": "app-user"}));
    wait_for("the rotated generation", LONG, || (agent.file("db-password")? == "rotated-password").then_some(()));
    assert_app_sees(&pod, &env, &[("DB_PASSWORD", b"rotated-password"), ("DB_USER", b"app-user"), ("TLS_CRT", CERT)]);
}

/// A failing run: one stderr line `secretmode-exec: <what>`, exit `code`, the command not run,
/// and no value (of any item) on stdout or stderr.
fn assert_fails(out: &Output, code: i32, what: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(out.stdout.is_empty(), "the command ran: {:?}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("secretmode-exec: ") && stderr.ends_with('\n'), "{stderr}");
    for w in what {
        assert!(stderr.contains(w), "{w:?} not in: {stderr}");
    }
    for value in ["pa ss", "rotated", "MIIB", "s3cret"] {
        assert!(!stderr.contains(value), "a value on stderr: {stderr}");
    }
    stderr
}

#[test]
fn a_missing_or_unusable_file_fails_naming_the_item_and_the_path_never_a_value() {
    let pod = Pod::new();
    let mount = "/var/run/secrets-cache";
    atomic_write(&pod.path(mount), 1, &[("db-password", PASSWORD), ("nul", b"s3cret\0tail")]);
    std::fs::write(pod.path("/big"), vec![b'x'; 200 * 1024]).unwrap();
    let app = ["sh", "-c", "echo the app ran"];
    let good = (String::from("DB_PASSWORD_FILE"), pod.path(&format!("{mount}/db-password")));

    // The key is gone from the Secret / the object from the SecretProviderClass.
    let gone = pod.path(&format!("{mount}/api-key"));
    let env = [good.clone(), ("API_KEY_FILE".into(), gone.clone())];
    let out = pod.run(&["DB_PASSWORD", "API_KEY"], &app, &[], &env);
    assert_fails(&out, 125, &["item API_KEY", &gone.display().to_string(), "no such file"]);

    // The variable naming the file is not there at all.
    let out = pod.run(&["DB_PASSWORD", "API_KEY"], &app, &[], std::slice::from_ref(&good));
    assert_fails(&out, 125, &["item API_KEY", "API_KEY_FILE is not set"]);

    // Values an environment variable cannot carry.
    let nul = pod.path(&format!("{mount}/nul"));
    let out = pod.run(&["DB_PASSWORD", "CERT"], &app, &[], &[good.clone(), ("CERT_FILE".into(), nul.clone())]);
    assert_fails(&out, 125, &["item CERT", &nul.display().to_string(), "NUL byte at offset 6"]);
    let big = pod.path("/big");
    let out = pod.run(&["BLOB"], &app, &[], &[("BLOB_FILE".into(), big.clone())]);
    assert_fails(&out, 125, &["item BLOB", &big.display().to_string(), "larger than"]);
    let out = pod.run(&["DIR"], &app, &[], &[("DIR_FILE".into(), pod.path(mount))]);
    assert_fails(&out, 125, &["item DIR", "is a directory"]);

    // A usage error (what only a broken injection would produce).
    let out = pod.run(&["A,"], &app, &[], &[]);
    assert_fails(&out, 125, &["empty stem", "--help"]);
}

#[test]
fn the_command_is_found_in_path_and_its_failures_are_126_and_127() {
    let pod = Pod::new();
    let env = [(String::from("DB_PASSWORD_FILE"), pod.path("/v"))];
    std::fs::write(pod.path("/v"), PASSWORD).unwrap();
    let out = pod.run(&["DB_PASSWORD"], &["no-such-command-x24"], &[], &env);
    assert_fails(&out, 127, &["command no-such-command-x24: not found in PATH"]);
    let script = pod.path("/app.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = pod.run(&["DB_PASSWORD"], &[script.to_str().unwrap()], &[], &env);
    assert_fails(&out, 126, &["permission denied"]);

    // A script whose interpreter is missing (execve says ENOENT for the script itself).
    let orphan = pod.path("/orphan.sh");
    std::fs::write(&orphan, "#!/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&orphan, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = pod.run(&["DB_PASSWORD"], &[orphan.to_str().unwrap()], &[], &env);
    assert_fails(&out, 127, &["interpreter (#! line) or dynamic loader was not found"]);

    // Made executable, it runs, with its args, and sees the value.
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&script, format!("#!/bin/sh\n{REPORT}\n")).unwrap();
    let out = pod.run(&["DB_PASSWORD"], &[script.to_str().unwrap()], &["DB_PASSWORD", "DB_PASSWORD_FILE"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = pod.path("/v");
    let want = [line("DB_PASSWORD", PASSWORD), line("DB_PASSWORD_FILE", file.as_os_str().as_encoded_bytes())];
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>(), want);
}

#[test]
fn the_exit_status_is_the_commands() {
    let pod = Pod::new();
    std::fs::write(pod.path("/v"), b"x").unwrap();
    let env = [(String::from("V_FILE"), pod.path("/v"))];
    let out = pod.run(&["V"], &["sh", "-c", "exit \"$1\"", "app"], &["3"], &env);
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stderr.is_empty());
}

#[test]
fn the_wrapped_process_is_the_command_so_signals_reach_it() {
    let pod = Pod::new();
    std::fs::write(pod.path("/v"), b"x").unwrap();
    let env = [(String::from("V_FILE"), pod.path("/v"))];

    // Unhandled: SIGTERM to the container's process (the wrapper's pid) kills the command.
    let mut child = pod.spawn(&["V"], &["sleep", "30"], &[], &env, Stdio::null());
    let pid = child.id();
    wait_for("the wrapper to exec sleep", LONG, || {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "sleep").then_some(())
    });
    signal(pid, "TERM");
    let status = wait_exit(&mut child, LONG).expect("sleep exits on SIGTERM");
    assert_eq!(status.signal(), Some(15), "{status:?}");

    // Handled: the command's own trap runs and its status is the exit status.
    let app = ["sh", "-c", "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done"];
    let mut child = pod.spawn(&["V"], &app, &[], &env, Stdio::piped());
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    signal(child.id(), "TERM");
    let status = wait_exit(&mut child, LONG).expect("the app exits on SIGTERM");
    assert_eq!(status.code(), Some(42), "{status:?}");
}

#[test]
fn install_copies_a_runnable_read_only_file_and_refuses_a_missing_directory() {
    let pod = Pod::new();
    let installed = pod.path(EXEC_PATH);
    let meta = std::fs::metadata(&installed).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o555);
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(BUILT).unwrap(), "a copy of the binary");
    let names: Vec<_> =
        std::fs::read_dir(pod.path(EXEC_DIR)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["secretmode-exec"], "no temporary file left");

    // A restarted init container installs again over the read-only copy.
    let out = Command::new(&installed).arg("--install").arg(pod.path(EXEC_DIR)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let help = Command::new(&installed).arg("--help").output().unwrap();
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("--env"));

    let missing = pod.path("/no/such/dir");
    let out = Command::new(BUILT).arg("--install").arg(&missing).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()) && stderr.contains("no such file"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
