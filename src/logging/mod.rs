//! Logging, set up once per command: a text layout of our own ([`fields`], the line
//! tracing-subscriber's default format writes) or tracing-subscriber's JSON formatter, to stderr
//! directly (CLI commands) or through the background [`writer`] (`serve`). [`printable`] makes
//! text from a request, a pod or a provider safe to put in a line.

pub mod fields;
pub mod printable;
pub mod writer;

use clap::ValueEnum;
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Json, JsonFields};
use tracing_subscriber::fmt::{MakeWriter, SubscriberBuilder};
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
    /// Handed to a writer thread that writes them in batches ([`writer`]; `serve`,
    /// which logs a line per admission).
    Background,
}

/// Keeps the background writer; dropping it writes out every queued line. Hold it until the
/// command has finished.
#[must_use = "dropping the guard flushes the log writer"]
pub struct LogGuard {
    _writer: Option<writer::Guard>,
}

/// Installs the global subscriber. `level` is an env-filter directive (`info`,
/// `secretmode=debug`); `RUST_LOG` wins when set. Logs go to stderr so that `mutate` and
/// `audit` output on stdout stays clean; no colours, so container logs carry no escape codes.
pub fn init(format: LogFormat, level: &str, writer: LogWriter) -> LogGuard {
    if writer == LogWriter::Background {
        // If the thread cannot be started, log directly rather than not at all.
        if let Ok((sender, guard)) = writer::start(std::io::stderr()) {
            install(format, level, sender);
            return LogGuard { _writer: Some(guard) };
        }
    }
    install(format, level, std::io::stderr);
    LogGuard { _writer: None }
}

fn install<W>(format: LogFormat, level: &str, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(writer);
    // try_init: tests may install a subscriber more than once.
    let _ = match format {
        LogFormat::Text => builder.fmt_fields(fields::TextFields).event_format(fields::TextLine).try_init(),
        LogFormat::Json => json_layout(builder).try_init(),
    };
}

/// The JSON layout: one flat object per line (the event's fields beside timestamp, level and
/// target), with the current span if there is one.
fn json_layout<F, W>(
    builder: SubscriberBuilder<DefaultFields, Format<Full>, F, W>,
) -> SubscriberBuilder<JsonFields, Format<Json>, F, W> {
    builder.json().flatten_event(true).with_current_span(true).with_span_list(false)
}

/// The subscriber [`init`] installs for `format`, without colours, at every level, writing to
/// `writer`: for tests that check what a line looks like.
#[cfg(test)]
pub(crate) fn dispatch<W>(format: LogFormat, writer: W) -> tracing::Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_ansi(false).with_writer(writer);
    match format {
        LogFormat::Text => {
            tracing::Dispatch::new(builder.fmt_fields(fields::TextFields).event_format(fields::TextLine).finish())
        }
        LogFormat::Json => tracing::Dispatch::new(json_layout(builder).finish()),
    }
}
