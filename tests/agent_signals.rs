//! SIGTERM at any moment: the handlers are installed first thing (checked in
//! `/proc/<pid>/status`), a sidecar exits 0 within the grace period whether it is starting,
//! waiting on a provider, refreshing or writing, and the files on disk are always one
//! complete generation with a readable status file. An init agent stopped before its files
//! were written exits 143 with one line (0 would claim files it has not written).

mod agent_common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use agent_common::fault_proxy::{Fault, FaultProxy};
use agent_common::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(30);
/// The kubelet's default grace period is 30 s; the agent needs a fraction of a second.
const GRACE: Duration = Duration::from_secs(3);

/// Whether `pid` has a handler for SIGTERM (bit 14 of SigCgt).
fn catches_sigterm(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?.trim().to_string();
            u64::from_str_radix(&mask, 16).ok()
        })
        .is_some_and(|m| m & (1 << 14) != 0)
}

fn wait_handler(pid: u32) -> Duration {
    let t = Instant::now();
    wait_for("the SIGTERM handler", LONG, || catches_sigterm(pid).then_some(()));
    t.elapsed()
}

fn items(n: usize) -> Vec<secretmode::providers::AgentItem> {
    (0..n).map(|i| item(&format!("s{i:02}"), &format!("app/s{i:02}"), Some("v"))).collect()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("s{i:02}")).collect()
}

/// One complete generation behind `..data`, every file a whole value (`sNN-vK`), no other
/// generation directory and no temporary link left, a status file that parses.
fn assert_consistent(mount: &Path, n: usize) {
    let names = names(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let set = generation(mount, &refs).expect("a complete generation behind ..data");
    for (name, value) in &set {
        let (prefix, version) = value.split_once("-v").unwrap_or_default();
        assert!(prefix == name && version.parse::<u32>().is_ok(), "a whole value in {name}: {value:?}");
    }
    let data = std::fs::read_link(mount.join("..data")).unwrap();
    for entry in std::fs::read_dir(mount).unwrap().flatten() {
        let f = entry.file_name().to_string_lossy().to_string();
        assert!(!f.contains(".tmp-"), "temporary link left: {f}");
        if f.starts_with("..") && f != "..data" {
            assert_eq!(Path::new(&f), data, "only the current generation is left");
        }
    }
    let status = std::fs::read_to_string(mount.join(".secretmode/status.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&status).expect("status.json parses");
}

fn exit_of(child: &mut Child) -> std::process::ExitStatus {
    wait_exit(child, GRACE).expect("exited within the grace period")
}

#[test]
fn sigterm_as_early_as_it_can_be_caught_exits_cleanly_ten_times_in_ten() {
    // The provider never answers: start-up is in flight or about to be.
    let proxy = FaultProxy::start("127.0.0.1:1");
    proxy.set(Fault::StallHead);
    let mut s = spec(vault_token_provider(&proxy.url()), items(2), 0);
    s.token_file = None;
    s.start_deadline_seconds = 30;
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        s.health_port = free_port();
        let root = tempfile::tempdir().unwrap();
        let mut agent = start_sidecar(root.path(), &s, None, None, &[("VAULT_TOKEN", ROOT_TOKEN)]);
        slowest = slowest.max(wait_handler(agent.pid()));
        let (status, took) = agent.terminate(GRACE).expect("exits within the grace period");
        assert_eq!(status.code(), Some(0), "exit 0, not killed by the signal: {status:?}\n{}", agent.logs());
        assert!(took < GRACE, "{took:?}");
    }
    // The window before the handler exists is the process start itself.
    assert!(slowest < Duration::from_secs(5), "handler installed {slowest:?} after spawn");

    // init: stopped before its files exist, it says so in one line and does not exit 0.
    let root = tempfile::tempdir().unwrap();
    let mut child = spawn_once(root.path(), &s, &[("VAULT_TOKEN", ROOT_TOKEN)]);
    wait_handler(child.id());
    signal(child.id(), "TERM");
    let status = exit_of(&mut child);
    assert_eq!(status.code(), Some(143), "{status:?}");
    let stderr = std::fs::read_to_string(root.path().join("once.log")).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("stopped by a signal before the secrets were written"), "{stderr}");
    assert!(!root.path().join("var/run/secrets-cache/s00").exists());
}

#[test]
fn sigterm_while_start_up_waits_on_the_provider_exits_0() {
    let proxy = FaultProxy::start("127.0.0.1:1");
    proxy.set(Fault::StallHead);
    let mut s = spec(vault_token_provider(&proxy.url()), items(2), free_port());
    s.token_file = None;
    s.start_deadline_seconds = 30;
    let root = tempfile::tempdir().unwrap();
    let mut agent = start_sidecar(root.path(), &s, None, None, &[("VAULT_TOKEN", ROOT_TOKEN)]);
    wait_for("a request in flight", LONG, || (proxy.count() >= 1).then_some(()));
    let (status, took) = agent.terminate(GRACE).expect("exits within the grace period");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(agent.logs().contains("SIGTERM: shutting down"), "{}", agent.logs());
    let status = std::fs::read_to_string(agent.mount().join(".secretmode/status.json")).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "starting");
}

#[test]
fn sigterm_during_a_refresh_keeps_the_previous_generation_whole() {
    let bao = Bao::start();
    for n in names(12) {
        bao.put(&format!("app/{n}"), json!({"v": format!("{n}-v1")}));
    }
    let proxy = FaultProxy::start(&bao.hostport());
    let mut s = spec(vault_token_provider(&proxy.url()), items(12), free_port());
    s.token_file = None;
    let root = tempfile::tempdir().unwrap();
    let mut agent = start_sidecar(root.path(), &s, None, None, &[("VAULT_TOKEN", ROOT_TOKEN)]);
    wait_for("start-up", LONG, || (agent.get("/startup").0 == 200).then_some(()));
    proxy.set_for("/v1/secret/data/", Fault::Delay(Duration::from_secs(2)));
    for n in names(12) {
        bao.put(&format!("app/{n}"), json!({"v": format!("{n}-v2")}));
    }
    let reads = proxy.count_to("/v1/secret/data/");
    wait_for("a refresh in flight", LONG, || (proxy.count_to("/v1/secret/data/") > reads).then_some(()));
    let (status, took) = agent.terminate(GRACE).expect("exits within the grace period");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(took < Duration::from_secs(1), "did not wait for the slow provider: {took:?}");
    assert_consistent(&agent.mount(), 12);
    let refs: Vec<String> = names(12);
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let set = generation(&agent.mount(), &refs).unwrap();
    assert!(set.values().all(|v| v.ends_with("-v1")), "the refresh never got to write: {set:?}");
}

#[test]
fn sigterm_at_random_moments_of_a_busy_sidecar_never_leaves_a_half_written_set() {
    let bao = Bao::start();
    let n = 20;
    for name in names(n) {
        bao.put(&format!("app/{name}"), json!({"v": format!("{name}-v0")}));
    }
    // Values change all the time, so nearly every refresh writes a new generation.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, addr) = (stop.clone(), bao.addr.clone());
        std::thread::spawn(move || {
            let mut v = 1;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for name in names(n) {
                    let url = format!("{addr}/v1/secret/data/app/{name}");
                    let body = json!({"data": {"v": format!("{name}-v{v}")}});
                    let _ = http("POST", &url, &[("X-Vault-Token", ROOT_TOKEN)], Some(&body));
                }
                v += 1;
            }
        })
    };
    let mut s = spec(vault_token_provider(&bao.addr), items(n), 0);
    s.token_file = None;
    s.refresh_interval_seconds = 1;
    s.max_staleness_seconds = 60;
    let root = tempfile::tempdir().unwrap();
    for round in 0..8 {
        s.health_port = free_port();
        // The same volume every round: a restarted sidecar adopts what the last one left.
        let mut agent = start_sidecar(root.path(), &s, None, None, &[("VAULT_TOKEN", ROOT_TOKEN)]);
        wait_for("start-up", LONG, || (agent.get("/startup").0 == 200).then_some(()));
        std::thread::sleep(Duration::from_millis(300 + fastrand_ms(2200)));
        let (status, took) = agent.terminate(GRACE).expect("exits within the grace period");
        assert_eq!(status.code(), Some(0), "round {round}: {status:?}\n{}", agent.logs());
        assert!(took < Duration::from_secs(1), "round {round}: {took:?}");
        assert_consistent(&agent.mount(), n);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
}

/// A pseudo-random number of milliseconds below `max` (the tests take no rand dependency).
fn fastrand_ms(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    u64::from(nanos) % max
}
