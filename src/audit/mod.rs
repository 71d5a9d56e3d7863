//! `secretmode audit`. (Being built: issue 4.)

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Files or directories of manifests; `-` for stdin.
    pub paths: Vec<std::path::PathBuf>,
}

pub fn run(_args: AuditArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("audit is not built yet")
}
