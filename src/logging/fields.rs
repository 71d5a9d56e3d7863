//! The text layout, `2026-12-06T09:35:56.699975Z  INFO target: message key=value …`: the line
//! tracing-subscriber's default text format writes without colours, minus its styling code, which
//! ran for the level, the target and every field name even with colours off and was most of the
//! cost of the admission log line (docs/BENCHMARKS.md). Values are written as their `Debug` (a
//! `%field` as its `Display`), control characters escaped as [`super::printable::Printable`]
//! escapes them. Events bridged from the `log` crate show their own target, without the `log.*`
//! fields. Spans are not shown (secretmode opens none).

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::printable::write_escaped;
use crate::vocabulary::time::civil;

/// The event formatter of the text layout.
pub struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write_timestamp(&mut w, SystemTime::now())?;
        write!(w, " {:>5} {}: ", meta.level().as_str(), meta.target())?;
        ctx.format_fields(w.by_ref(), event)?;
        w.write_char('\n')
    }
}

/// UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as tracing-subscriber's default timer writes it.
fn write_timestamp(w: &mut Writer<'_>, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let ((y, mo, d), (h, mi, s)) = civil(since.as_secs());
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, u64::try_from(y).unwrap_or(0));
    put(5, 2, mo.into());
    put(8, 2, d.into());
    put(11, 2, h.into());
    put(14, 2, mi.into());
    put(17, 2, s.into());
    put(20, 6, since.subsec_micros().into());
    w.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
}

/// The field formatter of the text layout.
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Visitor { out: Escaping(writer), first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'w> {
    out: Escaping<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let sep = if std::mem::take(&mut self.first) { "" } else { " " };
        self.result = match name {
            "message" => write!(self.out, "{sep}{value:?}"),
            name => write!(self.out, "{sep}{}={value:?}", name.strip_prefix("r#").unwrap_or(name)),
        };
    }
}

/// Escapes control characters in everything written through it.
struct Escaping<'w>(Writer<'w>);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(&mut self.0, s)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::logging::printable::tests::logged;
    use crate::logging::LogFormat;

    #[test]
    fn timestamps_are_written_as_the_default_timer_writes_them() {
        let mut out = String::new();
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_990_956_699_975);
        write_timestamp(&mut Writer::new(&mut out), at).unwrap();
        assert_eq!(out, "2025-12-06T03:15:56.699975Z");
        out.clear();
        write_timestamp(&mut Writer::new(&mut out), SystemTime::UNIX_EPOCH + Duration::from_micros(7)).unwrap();
        assert_eq!(out, "1970-01-01T00:00:00.000007Z");
    }

    #[test]
    fn a_line_has_the_default_layout() {
        let text = logged(LogFormat::Text, || tracing::warn!(target: "secretmode::test", "m"));
        let (time, rest) = text.split_once(' ').unwrap();
        assert_eq!(time.len(), 27, "{text}");
        assert_eq!(rest, " WARN secretmode::test: m\n");
    }

    #[test]
    fn fields_are_written_as_the_default_formatter_writes_them_without_colours() {
        let text = logged(
            LogFormat::Text,
            || tracing::info!(target: "secretmode::test", r#type = "pod", n = 3u64, ok = true, shown = %"a\u{1b}[31mb", "done {}", 1),
        );
        let (_, rest) = text.split_once(' ').unwrap();
        assert_eq!(rest, " INFO secretmode::test: done 1 type=\"pod\" n=3 ok=true shown=a\\u{1b}[31mb\n");
    }

    #[test]
    fn a_display_value_cannot_end_the_line() {
        let text = logged(LogFormat::Text, || tracing::warn!(target: "secretmode::test", why = %"one\ntwo", "x\ny"));
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with("x\\ny why=one\\ntwo\n"), "{text}");
    }
}
