//! The webhook's own log lines, written without tracing-subscriber's general formatting
//! machinery but byte for byte as it writes them.
//!
//! `serve` logs a line per admission, and tracing-subscriber's formatters build that line from
//! a dozen nested `core::fmt` calls, most of them painting field names in ANSI styles that are
//! switched off (13,000 instructions a text line, 21,000 a JSON one, against 96,000 for a
//! whole eso review; docs/BENCHMARKS.md).
//! [`OwnLines`] wraps the stock formatter and writes the common case itself: an event of this
//! crate (target `secretmode…`), outside any span, with ANSI colours off (container logs), for
//! the configuration [`crate::telemetry`] installs (timestamp, level, target; JSON flattened).
//! Everything else — other crates' events, events in spans, a terminal with colours, a field
//! kind it does not write — goes to the stock formatter untouched. The tests hold the two to
//! the same output for every field kind.

use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::json::escape;

/// A string from a request or a pod, for a `%field` of a log line: control characters (newline,
/// carriage return, escape, C1) written as Rust escapes (`\n`, `\u{1b}`), so that a value can
/// neither end the line and forge the next one nor drive a terminal. Both formatters write
/// `%` fields as they are; everything else passes unchanged, so a uid or a namespace looks the
/// same as without it.
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Printable ASCII (a uid, a namespace) needs no look at each char.
        if self.0.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return f.write_str(self.0);
        }
        let mut rest = self.0;
        while let Some(at) = rest.find(char::is_control) {
            f.write_str(&rest[..at])?;
            let ch = rest[at..].chars().next().unwrap_or_default();
            write!(f, "{}", ch.escape_debug())?;
            rest = &rest[at + ch.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Which of the two stock layouts to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `Format<Full>`: `TIMESTAMP LEVEL target: message field=value …`.
    Text,
    /// `Format<Json>` with `flatten_event(true)`: `{"timestamp":…,"level":…,fields…,"target":…}`.
    Json,
}

/// An event formatter that writes this crate's span-less events itself and hands every other
/// event to `inner`, which must be the stock formatter for `layout` with its default fields.
pub struct OwnLines<F> {
    inner: F,
    layout: Layout,
    clock: fn() -> SystemTime,
}

impl<F> OwnLines<F> {
    pub fn new(inner: F, layout: Layout) -> Self {
        OwnLines { inner, layout, clock: SystemTime::now }
    }

    /// The line for `event`, or `None` when the stock formatter has to write it.
    fn line(&self, meta: &tracing::Metadata<'_>, sanitize: bool, event: &Event<'_>) -> Option<String> {
        let mut out = String::with_capacity(256);
        match self.layout {
            Layout::Text => {
                push_timestamp(&mut out, (self.clock)())?;
                out.push(' ');
                out.push_str(text_level(meta.level()));
                out.push(' ');
                out.push_str(meta.target());
                out.push_str(": ");
                let mut fields = TextFields { out, first: true, sanitize, ok: true };
                event.record(&mut fields);
                out = fields.ok.then_some(fields.out)?;
                out.push('\n');
            }
            Layout::Json => {
                out.push_str(r#"{"timestamp":""#);
                push_timestamp(&mut out, (self.clock)())?;
                out.push_str(r#"","level":""#);
                out.push_str(meta.level().as_str());
                out.push('"');
                let mut fields = JsonFields { out };
                event.record(&mut fields);
                out = fields.out;
                out.push_str(r#","target":"#);
                push_json_str(&mut out, meta.target());
                out.push_str("}\n");
            }
        }
        Some(out)
    }
}

impl<S, N, F> FormatEvent<S, N> for OwnLines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        // Events forwarded from the `log` crate carry target "log" and are normalised by the
        // stock formatter; spans add a prefix (text, the event's scope) or a "span" key (JSON,
        // the current span even for an event declared without a parent). An explicit parent
        // or a current span covers both, with one look-up.
        let in_span = event.parent().is_some() || ctx.lookup_current().is_some();
        if meta.target().starts_with("secretmode") && !writer.has_ansi_escapes() && !in_span {
            if let Some(line) = self.line(meta, writer.sanitizes_ansi_escapes(), event) {
                return writer.write_str(&line);
            }
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// The stock text layout's level column (padded to five).
fn text_level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        _ => "ERROR",
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC, as tracing-subscriber's `SystemTime` timer writes it;
/// `None` before 1970 or after 9999, which that timer writes differently.
fn push_timestamp(out: &mut String, now: SystemTime) -> Option<()> {
    let since = now.duration_since(UNIX_EPOCH).ok()?;
    let secs = since.as_secs();
    let (year, month, day) = civil_date(secs / 86_400);
    if year > 9999 {
        return None;
    }
    let time = secs % 86_400;
    push_digits(out, year, 4);
    out.push('-');
    push_digits(out, month, 2);
    out.push('-');
    push_digits(out, day, 2);
    out.push('T');
    push_digits(out, time / 3600, 2);
    out.push(':');
    push_digits(out, time / 60 % 60, 2);
    out.push(':');
    push_digits(out, time % 60, 2);
    out.push('.');
    push_digits(out, u64::from(since.subsec_micros()), 6);
    out.push('Z');
    Some(())
}

/// Year, month (1–12) and day (1–31) of the proleptic Gregorian calendar, `days` after
/// 1970-01-01 (H. Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `value` in decimal, as `Display` and `Debug` write it.
fn push_decimal(out: &mut String, value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, value: u64, width: u32) {
    let mut div = 10u64.pow(width - 1);
    while div > 0 {
        out.push(char::from(b'0' + (value / div % 10) as u8));
        div /= 10;
    }
}

/// Fields as tracing-subscriber's `DefaultVisitor` writes them without colours: the message
/// bare (its terminal control characters escaped), the others `name=` and their `Debug`.
/// That visitor implements only `record_str`, `record_debug` and `record_error`; the integer
/// and bool methods here write what `Debug` would, and every other kind reaches
/// `record_debug` as it does there.
struct TextFields {
    out: String,
    first: bool,
    sanitize: bool,
    /// False once a field needs what only the stock formatter writes (error source chains).
    ok: bool,
}

impl TextFields {
    fn start_field(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.out.push(' ');
        }
    }

    /// For a field written `name=value`: starts it and returns true. The message and
    /// tracing-log's fields are left to `record_debug`.
    fn plain(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name == "message" || name.starts_with("log.") {
            return false;
        }
        self.start_field();
        self.out.push_str(name.strip_prefix("r#").unwrap_or(name));
        self.out.push('=');
        true
    }

    fn message(&mut self, value: fmt::Arguments<'_>) {
        self.start_field();
        let written = if self.sanitize { Escaping(&mut self.out).write_fmt(value) } else { self.out.write_fmt(value) };
        self.ok &= written.is_ok();
    }
}

impl Visit for TextFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else if value.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') && self.plain(field) {
            // What `Debug` makes of a string with nothing to escape, without running it.
            self.out.push('"');
            self.out.push_str(value);
            self.out.push('"');
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.plain(field) {
            push_decimal(&mut self.out, value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.plain(field) {
            if value < 0 {
                self.out.push('-');
            }
            push_decimal(&mut self.out, value.unsigned_abs());
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.plain(field) {
            self.out.push_str(if value { "true" } else { "false" });
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, _field: &Field, _value: &(dyn std::error::Error + 'static)) {
        self.ok = false;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // tracing-log's metadata fields, which the stock visitor skips too.
        if name.starts_with("log.") {
            return;
        }
        if name == "message" {
            self.message(format_args!("{value:?}"));
        } else if self.plain(field) {
            self.ok &= write!(self.out, "{value:?}").is_ok();
        }
    }
}

/// Writes through, escaping the control characters a terminal could act on, as the stock
/// formatter does for messages.
struct Escaping<'a>(&'a mut String);

impl Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.push_str("\\x1b"),
                '\x07' => self.0.push_str("\\x07"),
                '\x08' => self.0.push_str("\\x08"),
                '\x0c' => self.0.push_str("\\x0c"),
                '\x7f' => self.0.push_str("\\x7f"),
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                _ => self.0.push(ch),
            }
        }
        Ok(())
    }
}

/// Fields as tracing-serde's map visitor writes them: the same kinds natively (bool, u64, i64,
/// f64, str), everything else as the string of its `Debug`.
struct JsonFields {
    out: String,
}

impl JsonFields {
    fn key(&mut self, field: &Field) {
        self.out.push(',');
        push_json_str(&mut self.out, field.name());
        self.out.push(':');
    }
}

impl Visit for JsonFields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        push_decimal(&mut self.out, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        if value < 0 {
            self.out.push('-');
        }
        push_decimal(&mut self.out, value.unsigned_abs());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // serde_json's shortest round-trip form, and null for NaN and infinities.
        self.out.push_str(&serde_json::to_string(&value).unwrap_or_else(|_| "null".into()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(&mut self.out, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.out.push('"');
        let _ = write!(escape::InString(&mut self.out), "{value:?}");
        self.out.push('"');
    }
}

/// `value` as a JSON string, escaped as serde_json escapes it.
fn push_json_str(out: &mut String, value: &str) {
    escape::push_quoted(out, value);
}

#[cfg(test)]
pub(crate) mod tests;
