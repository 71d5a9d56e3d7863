//! Logging set-up shared by every subcommand.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where formatted lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogWriter {
    /// Written to stderr by the thread that logs: output stays in order with the command's
    /// own stderr messages (CLI commands).
    Direct,
    /// Handed to a writer thread that writes whatever has queued up in one `write` and
    /// flushes as soon as the queue is empty (`serve`). One line per admission would
    /// otherwise cost a `write(2)` on the request path; this way a busy webhook writes in
    /// batches and an idle one still writes every line at once. Nothing is dropped: when the
    /// queue is full (stderr blocked), loggers wait, as they would on a direct write.
    Background,
}

/// Keeps the background writer alive; dropping it writes out every queued line. Hold it until
/// the command has finished.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

/// Installs the global subscriber. `level` is an env-filter directive (`info`,
/// `secretmode=debug`); `RUST_LOG` wins when set. Logs go to stderr so that `mutate` and
/// `audit` output on stdout stays clean; colours only when stderr is a terminal, so container
/// logs carry no escape codes.
pub fn init(format: LogFormat, level: &str, writer: LogWriter) -> LogGuard {
    match writer {
        LogWriter::Direct => {
            install(format, level, std::io::stderr);
            LogGuard { _writer: None }
        }
        LogWriter::Background => {
            let (writer, guard) = NonBlockingBuilder::default()
                .lossy(false)
                // About 2 MB of queued lines at most; then loggers wait, as on a direct write.
                .buffered_lines_limit(8192)
                .thread_name("secretmode-log")
                .finish(std::io::BufWriter::new(std::io::stderr()));
            install(format, level, writer);
            LogGuard { _writer: Some(guard) }
        }
    }
}

fn install<W>(format: LogFormat, level: &str, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    // try_init: tests may install a subscriber more than once.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
}
