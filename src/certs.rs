//! `secretmode certs`. (Being built: issue 5.)

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Generate a CA and a serving certificate into a directory.
    Generate,
}

pub fn run(_cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("certs is not built yet")
}
