//! `secretmode agent`: the injected init fetcher (`--once`) and refresh sidecar.
//!
//! The container spec the webhook injects is the agent's only configuration: the JSON
//! [`AgentSpec`] in `SECRETMODE_AGENT_SPEC`, plus `VAULT_TOKEN`
//! for development token auth. See docs/AGENT.md.
//!
//! Modules: [`providers`] fetch (Vault/OpenBao KV v2, AWS Secrets Manager), [`writer`] swaps
//! file sets atomically, [`status`] is the single record behind the status file, health
//! endpoints and metrics, [`backoff`] spaces retries, [`mod@run`] is the loop.

pub mod backoff;
pub mod fallback;
pub mod health;
pub mod providers;
pub mod run;
pub mod status;
pub mod wait;
pub mod writer;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::agent_spec::AgentSpec;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Fetch once, write the files and exit (the init container).
    #[arg(long)]
    pub once: bool,
    /// The agent spec JSON written by the webhook.
    #[arg(long, env = crate::agent_spec::SPEC_ENV, hide_env_values = true)]
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

/// The agent's log filter: the user's level, with vaultrs/rustify span errors silenced (they
/// repeat, without detail, every error the agent itself reports once with its cause).
pub fn log_directives(level: &str) -> String {
    format!("{level},vaultrs=off,rustify=off")
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let spec = AgentSpec::from_json(&args.spec).map_err(anyhow::Error::msg)?;
    if spec.items.is_empty() {
        anyhow::bail!("the agent spec lists no items");
    }
    let root = args.root.as_deref();
    let agent = run::Agent::new(
        spec.clone(),
        rooted(root, &spec.mount_path),
        spec.token_file.as_deref().map(|p| rooted(root, p)),
        spec.fallback_dir.as_deref().map(|p| rooted(root, p)),
        args.once,
    );
    // One thread is plenty for a handful of sequential requests, and keeps an idle
    // sidecar's footprint small.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if args.once {
        let mut agent = agent;
        return Ok(match rt.block_on(agent.start()) {
            Ok(run::Started::Synced) => ExitCode::SUCCESS,
            Ok(run::Started::Fallback) => {
                eprintln!("secretmode agent: started from the fallback Secret: provider unreachable (status fallback)");
                ExitCode::SUCCESS
            }
            Err(line) => {
                eprintln!("secretmode agent: {line}");
                ExitCode::from(1)
            }
        });
    }
    let health = SocketAddr::new(args.health_address, spec.health_port);
    rt.block_on(run::sidecar(agent, health))?;
    Ok(ExitCode::SUCCESS)
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
