//! The secretmode command line: wiring only; every subcommand lives in its own module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secretmode::telemetry::{self, LogFormat, LogWriter};
use secretmode::{agent, audit, certs, config::Config, mutate_cmd, server};

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
    Serve(server::ServeArgs),
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
    Mutate {
        /// Files or directories; `-` for stdin.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The same as the paths, as kubectl takes them: `-f FILE_OR_DIR`, repeatable.
        #[arg(
            short = 'f',
            long = "filename",
            visible_alias = "file",
            value_name = "PATH",
            env = "SECRETMODE_MUTATE_FILE"
        )]
        files: Vec<PathBuf>,
        /// Namespace of manifests that have no metadata.namespace (required for them: it picks
        /// the policy rule and goes into the agent's provider role); must match the ones that
        /// do. Not accepted with an AdmissionReview, which carries request.namespace.
        // No env: SECRETMODE_NAMESPACE is the namespace the webhook runs in (serve, certs).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Print the JSON Patch instead of the patched objects (or the review's response).
        #[arg(long, env = "SECRETMODE_MUTATE_PATCH")]
        patch: bool,
        /// Webhook config file (default: the built-in config).
        #[arg(long, env = "SECRETMODE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The injected agent: fetch secrets into files (init) or keep them fresh (sidecar).
    Agent(agent::AgentArgs),
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
        Command::Agent(_) => agent::log_directives(&cli.log_level),
        _ => cli.log_level.clone(),
    };
    // Only the webhook logs on a hot path (a line per admission).
    let writer = if matches!(cli.command, Command::Serve(_)) { LogWriter::Background } else { LogWriter::Direct };
    let log = telemetry::init(cli.log_format, &log_level, writer);
    let result = match cli.command {
        Command::Serve(args) => server::run(args),
        Command::Mutate { paths, files, namespace, patch, config } => {
            let paths: Vec<PathBuf> = paths.into_iter().chain(files).collect();
            run_mutate(&paths, namespace.as_deref(), patch, config.as_deref())
        }
        Command::Agent(args) => agent::run(args),
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

fn run_mutate(
    paths: &[PathBuf],
    namespace: Option<&str>,
    patch: bool,
    config: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let config = Config::load_or_builtin(config)?;
    let out = mutate_cmd::run(&mutate_cmd::MutateArgs { paths, namespace, patch_only: patch }, &config)?;
    for w in &out.warnings {
        eprintln!("Warning: {w}");
    }
    // An AdmissionReview's response is printed whether it allows or denies.
    print!("{}", out.stdout);
    if !out.denied.is_empty() {
        for denial in &out.denied {
            eprintln!("denied: {denial}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
