//! `secretmode agent`: the injected init fetcher (`--once`) and refresh sidecar.
//!
//! The container spec the webhook injects is the agent's only configuration: the JSON
//! [`AgentSpec`] ([`spec`]) in `SECRETMODE_AGENT_SPEC`, plus `VAULT_TOKEN` for development
//! token auth. See docs/AGENT.md.
//!
//! Modules: [`mod@run`] is the loop, [`writer`] swaps file sets atomically, [`status`] is the
//! single record behind the status file, health endpoints and metrics, [`health`] serves
//! them, [`fallback`] seeds from the fallback Secret, [`wait`] is the plain sidecar's
//! postStart hook, [`notify`] fires the `on-change` action, [`watch`] is `secretmode watch`
//! (the eso/csi watcher), [`mod@render`] is `secretmode render` (the eso/csi render step, and the
//! watcher's re-render). The provider clients it drives are in `crate::providers`.

pub mod fallback;
pub mod health;
pub mod notify;
pub mod render;
pub mod run;
pub mod spec;
pub mod status;
pub mod wait;
pub mod watch;
pub mod writer;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::logging::printable::Printable;
use crate::vocabulary::paths::SPEC_ENV;
use spec::AgentSpec;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Fetch once, write the files and exit (the init container).
    #[arg(long)]
    pub once: bool,
    /// The agent spec JSON written by the webhook.
    #[arg(long, env = SPEC_ENV, hide_env_values = true)]
    pub spec: String,
    /// Prefix for every absolute path in the spec (mount path, token file, fallback dir), for
    /// local runs and tests outside a pod.
    #[arg(long, env = "SECRETMODE_AGENT_ROOT")]
    pub root: Option<PathBuf>,
    /// Address the sidecar's health/metrics server binds (port from the spec).
    #[arg(long, env = "SECRETMODE_AGENT_HEALTH_ADDRESS", default_value = "0.0.0.0")]
    pub health_address: IpAddr,
}

/// `path` under `root` when a root is given (absolute paths lose their leading `/`).
pub fn rooted(root: Option<&Path>, path: &str) -> PathBuf {
    match root {
        Some(r) => r.join(path.trim_start_matches('/')),
        None => PathBuf::from(path),
    }
}

/// The agent's log filter: the user's level. Kept as a function so the agent's filter can
/// differ from the webhook's without touching `main`.
pub fn log_directives(level: &str) -> String {
    level.to_string()
}

/// Exit code of an init agent stopped by SIGTERM/SIGINT before its files were written: the
/// shell's "terminated" code, because 0 would tell the kubelet (or a script) that the secrets
/// are there.
pub const EXIT_STOPPED: u8 = 143;

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    // One thread is plenty for a handful of requests, and keeps an idle sidecar's footprint
    // small.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // First thing: from here on SIGTERM/SIGINT are handled (a clean exit), during start-up
    // too; until the handlers exist the default action would kill the process mid-way.
    let stop = {
        let _in_runtime = rt.enter();
        stop_signal()?
    };
    let spec = AgentSpec::from_json(&args.spec).map_err(anyhow::Error::msg)?;
    if spec.items.is_empty() {
        anyhow::bail!("the agent spec lists no items");
    }
    let root = args.root.as_deref();
    let mut agent = run::Agent::new(
        spec.clone(),
        rooted(root, &spec.mount_path),
        spec.token_file.as_deref().map(|p| rooted(root, p)),
        spec.fallback_dir.as_deref().map(|p| rooted(root, p)),
        args.once,
    );
    if args.once {
        // Exactly one line on stderr whatever happens (the success line is the info log).
        let code = rt.block_on(async {
            tokio::select! {
                started = agent.start() => match started {
                    Ok(run::Started::Synced) => ExitCode::SUCCESS,
                    Ok(run::Started::Fallback(cause, _)) => {
                        eprintln!("secretmode agent: started from the fallback Secret (status fallback): {}", Printable(&cause));
                        ExitCode::SUCCESS
                    }
                    Err(failed) => {
                        eprintln!("secretmode agent: {}", Printable(&failed.line));
                        ExitCode::from(1)
                    }
                },
                _ = stop => {
                    eprintln!("secretmode agent: stopped by a signal before the secrets were written");
                    ExitCode::from(EXIT_STOPPED)
                }
            }
        });
        return Ok(code);
    }
    let health = SocketAddr::new(args.health_address, spec.health_port);
    rt.block_on(run::sidecar(agent, health, stop))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed when this is called
/// (inside a runtime), not when it is first awaited.
pub(crate) fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// The sidecar's health port on loopback.
    #[arg(long)]
    pub port: u16,
    #[arg(long, default_value_t = 90)]
    pub timeout_seconds: u64,
}

pub fn run_wait(args: WaitArgs) -> anyhow::Result<ExitCode> {
    match wait::wait_for_startup(args.port, Duration::from_secs(args.timeout_seconds)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("secretmode agent-wait: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
