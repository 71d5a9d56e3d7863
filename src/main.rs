//! The secretmode command line: wiring only; every subcommand lives in its own module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secretmode::commands::{audit, certs, mutate};
use secretmode::logging::{self, LogFormat, LogWriter};
use secretmode::{agent, webhook};

/// mimalloc, as in `secretmode`: see docs/BENCHMARKS.md (allocation-bound request path).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "secretmode", version, about = "Choose per workload how secrets reach pods, and so how they fail")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, help_heading = "Global options", env = "SECRETMODE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or env-filter directive; RUST_LOG overrides it.
    #[arg(long, global = true, help_heading = "Global options", env = "SECRETMODE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mutating admission webhook over HTTPS.
    Serve(webhook::ServeArgs),
    /// Run the webhook's decision offline and print the result.
    ///
    /// Reads files, directories (recursively: .yaml, .yml, .json) and stdin (`-`), as `audit`
    /// does. Pods and workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob,
    /// ReplicationController) are printed patched, every other object unchanged, in input
    /// order: one multi-document YAML stream, or JSON when every input is JSON. When any
    /// object is denied, nothing is printed: every denial goes to stderr, exit code 1.
    /// An AdmissionReview (alone in the input) is answered exactly as `serve` answers it: the
    /// AdmissionReview response (uid echoed, base64 patch, warnings) for any operation, kind or
    /// subresource, and the same error for a review `serve` refuses. Warnings go to stderr;
    /// unreadable input is exit code 2.
    Mutate(mutate::MutateArgs),
    /// The injected agent: fetch secrets into files (init) or keep them fresh (sidecar).
    Agent(agent::AgentArgs),
    /// The eso/csi watcher: fire the on-change action when the kubelet or CSI driver swaps `..data`.
    Watch(agent::watch::WatchArgs),
    /// The eso/csi render step: render the pod's rendered files from the mounted items, once.
    Render(agent::render::RenderArgs),
    /// Wait until the local sidecar has synced (postStart hook of a plain sidecar).
    #[command(hide = true)]
    AgentWait(agent::WaitArgs),
    /// Report which failure mode every workload chose, and check it against policy.
    Audit(audit::AuditArgs),
    /// Make webhook serving certificates.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = match &cli.command {
        Command::Agent(_) | Command::Watch(_) | Command::Render(_) => agent::log_directives(&cli.log_level),
        _ => cli.log_level.clone(),
    };
    // Only the webhook logs on a hot path (a line per admission).
    let writer = if matches!(cli.command, Command::Serve(_)) { LogWriter::Background } else { LogWriter::Direct };
    let log = logging::init(cli.log_format, &log_level, writer);
    let result = match cli.command {
        Command::Serve(args) => webhook::run(args),
        Command::Mutate(args) => mutate::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Watch(args) => agent::watch::run(args),
        Command::Render(args) => agent::render::run(args),
        Command::AgentWait(args) => agent::run_wait(args),
        Command::Audit(args) => audit::run(args),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Version => {
            println!("secretmode {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    };
    // Queued log lines first, then the command's last word.
    drop(log);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("secretmode: {e:#}");
            ExitCode::from(2)
        }
    }
}
