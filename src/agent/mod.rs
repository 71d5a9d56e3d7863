//! `secretmode agent`: the injected init fetcher and refresh sidecar. (Being built: issue 3.)

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Fetch once, write the files and exit (the init container).
    #[arg(long)]
    pub once: bool,
    /// The agent spec JSON written by the webhook.
    #[arg(long, env = crate::agent_spec::SPEC_ENV, hide_env_values = true)]
    pub spec: String,
}

pub fn run(_args: AgentArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the agent is not built yet")
}

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// The sidecar's health port on loopback.
    #[arg(long)]
    pub port: u16,
    #[arg(long, default_value_t = 90)]
    pub timeout_seconds: u64,
}

pub fn run_wait(_args: WaitArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("agent-wait is not built yet")
}
