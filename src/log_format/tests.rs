//! [`OwnLines`] against the stock formatters it stands in for: the same events through both,
//! byte-compared, for every field kind, both layouts, and the cases it must hand back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use tracing::Dispatch;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;

use super::*;

/// 2026-11-23T20:24:01.123456Z, as a clock and as a timer for the stock formatter.
fn fixed_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(1_795_465_441_123_456)
}
const FIXED_TEXT: &str = "2026-11-23T20:24:01.123456Z";

/// For telling which formatter wrote a line: a time no stock line carries.
fn other_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(951_782_400) // 2000-02-29T00:00:00Z
}

struct FixedTimer;

impl FormatTime for FixedTimer {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        w.write_str(FIXED_TEXT)
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// A subscriber with the formatters [`crate::telemetry`] installs: the stock one
/// alone (`own: None`) or wrapped in [`OwnLines`] with the given clock.
fn dispatch(layout: Layout, own: Option<fn() -> SystemTime>, ansi: bool, out: &Capture) -> Dispatch {
    let builder = tracing_subscriber::fmt()
        .with_max_level(Level::TRACE)
        .with_ansi(ansi)
        .with_writer(out.clone())
        .with_timer(FixedTimer);
    let text = crate::telemetry::text_format().with_timer(FixedTimer);
    let json = crate::telemetry::json_format().with_timer(FixedTimer);
    match (layout, own) {
        (Layout::Text, None) => Dispatch::new(builder.event_format(text).finish()),
        (Layout::Text, Some(clock)) => {
            Dispatch::new(builder.event_format(OwnLines { inner: text, layout, clock }).finish())
        }
        (Layout::Json, None) => Dispatch::new(builder.json().event_format(json).finish()),
        (Layout::Json, Some(clock)) => {
            Dispatch::new(builder.json().event_format(OwnLines { inner: json, layout, clock }).finish())
        }
    }
}

/// What `emit` logs, through the stock formatter and through [`OwnLines`].
fn both(layout: Layout, ansi: bool, emit: impl Fn()) -> (String, String) {
    let run = |own: Option<fn() -> SystemTime>| {
        let out = Capture::default();
        tracing::dispatcher::with_default(&dispatch(layout, own, ansi, &out), &emit);
        out.text()
    };
    (run(None), run(Some(fixed_now)))
}

/// What `emit` logs through the formatters `serve` installs, for other modules' tests.
pub(crate) fn logged(layout: Layout, emit: impl Fn()) -> String {
    both(layout, false, emit).1
}

fn assert_same(emit: impl Fn()) {
    for layout in [Layout::Text, Layout::Json] {
        let (stock, own) = both(layout, false, &emit);
        assert!(!stock.is_empty(), "{layout:?}: nothing logged");
        assert_eq!(own, stock, "{layout:?}");
    }
}

#[derive(Debug)]
struct Failure {
    source: Option<Box<Failure>>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.source.is_some() { "outer \x1b[2J failure" } else { "inner\nfailure" })
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as _)
    }
}

const AWKWARD: &str = "q\"uote back\\slash nl\n cr\r tab\t nul\0 esc\x1b[31m bel\x07 del\x7f c1\u{9b} é 中 \u{301}";

#[test]
fn the_admission_line_is_written_as_the_stock_formatter_writes_it() {
    let uid = "705ab4f5-6393-11e8-b7cc-42010a800002".to_string();
    let namespace = "team-a".to_string();
    let line = |level: Level| {
        let mode = "sidecar";
        macro_rules! admission {
            ($lvl:ident) => {
                tracing::$lvl!(
                    target: "secretmode::server::routes",
                    uid = %uid,
                    namespace = %namespace,
                    mode,
                    outcome = "injected",
                    duration_us = 87u64,
                    patch_bytes = 2371usize,
                    dry_run = false,
                    "admission"
                )
            };
        }
        match level {
            Level::INFO => admission!(info),
            _ => admission!(debug),
        }
    };
    assert_same(|| line(Level::INFO));
    assert_same(|| line(Level::DEBUG));
    let (stock, _) = both(Layout::Text, false, || line(Level::INFO));
    assert_eq!(
        stock,
        format!(
            "{FIXED_TEXT}  INFO secretmode::server::routes: admission uid=705ab4f5-6393-11e8-b7cc-42010a800002 \
             namespace=team-a mode=\"sidecar\" outcome=\"injected\" duration_us=87 patch_bytes=2371 dry_run=false\n"
        )
    );
}

#[test]
fn every_field_kind_and_level_matches() {
    const T: &str = "secretmode::test";
    assert_same(|| {
        tracing::trace!(target: T, "trace");
        tracing::debug!(target: T, "debug");
        tracing::info!(target: T, "info");
        tracing::warn!(target: T, "warn");
        tracing::error!(target: T, "error");
    });
    assert_same(|| tracing::info!(target: T, "message {} with {AWKWARD}", 1));
    assert_same(|| tracing::info!(target: T, message = AWKWARD));
    assert_same(|| tracing::info!(target: T, message = ?AWKWARD));
    assert_same(|| tracing::info!(target: T, message = 7u64));
    assert_same(|| tracing::info!(target: T, text = AWKWARD, shown = %AWKWARD, debugged = ?AWKWARD, "m"));
    assert_same(|| tracing::info!(target: T, plain = "plain ASCII ~!#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}", empty = ""));
    assert_same(|| tracing::info!(target: T, quoted = "say \"hi\"", slashed = "C:\\dir", "ASCII to escape"));
    assert_same(
        || tracing::info!(target: T, { log.target = "fake", log.n = 1u64, log.b = true, log.i = -1i64 }, "log"),
    );
    assert_same(
        || tracing::info!(target: T, small = 0u64, big = u64::MAX, neg = i64::MIN, yes = true, no = false, "ints"),
    );
    assert_same(|| tracing::info!(target: T, wide = u128::MAX, narrow = i128::MIN, "128"));
    assert_same(|| {
        tracing::info!(target: T, a = 1.0f64, b = 0.1f64, c = 1e300f64, d = -0.0f64, e = 5e-324f64, "floats");
        tracing::info!(target: T, nan = f64::NAN, inf = f64::INFINITY, "not finite");
    });
    assert_same(|| tracing::info!(target: T, list = ?vec!["a", "b\"c"], unit = ?(), "debug"));
    assert_same(|| tracing::info!(target: T, r#type = "raw", "raw identifier"));
    assert_same(|| tracing::info!(target: T, { log.target = "fake", log.line = 3u64, kept = 1u64 }, "log fields"));
    assert_same(|| tracing::info!(target: T, only = 1u64));
    assert_same(|| tracing::info!(target: T, ""));
    assert_same(|| {
        let err = Failure { source: Some(Box::new(Failure { source: None })) };
        tracing::warn!(target: T, error = &err as &dyn std::error::Error, "failed");
        let alone = Failure { source: None };
        tracing::warn!(target: T, error = &alone as &dyn std::error::Error, "failed");
    });
}

#[test]
fn own_span_less_events_are_written_here_and_the_rest_handed_on() {
    for layout in [Layout::Text, Layout::Json] {
        let out = Capture::default();
        tracing::dispatcher::with_default(&dispatch(layout, Some(other_now), false, &out), || {
            tracing::info!(target: "secretmode::server::routes", uid = "u", "admission");
            tracing::info!(target: "hyper::proto", "someone else's");
            tracing::info_span!("request", id = 7u64).in_scope(|| {
                tracing::info!(target: "secretmode::server::routes", "in a span");
            });
            let err = Failure { source: None };
            tracing::warn!(target: "secretmode::x", error = &err as &dyn std::error::Error, "error field");
        });
        let text = out.text();
        // (The stock text layout writes the error's newline as it is.)
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("20") || l.starts_with('{')).collect();
        assert_eq!(lines.len(), 4, "{text}");
        let own = "2000-02-29T00:00:00.000000Z";
        let (here, handed_on) = (lines[0], &lines[1..]);
        assert!(here.contains(own), "{layout:?}: {here}");
        if layout == Layout::Json {
            assert!(handed_on[1].contains(r#""span":{"id":7,"name":"request"}"#), "{}", handed_on[1]);
        } else {
            assert!(handed_on[1].contains(" request{id=7}: "), "{}", handed_on[1]);
        }
        // An error field is seen only after the line was begun: it goes to the stock formatter
        // (text) or is written as the map visitor writes it, a string (JSON).
        let error_line_is_own = layout == Layout::Json;
        assert_eq!(handed_on[2].contains(own), error_line_is_own, "{layout:?}: {}", handed_on[2]);
        assert!(handed_on[..2].iter().all(|l| l.contains(FIXED_TEXT)), "{layout:?}: {handed_on:?}");
    }
}

#[test]
fn events_in_spans_match_including_those_declared_without_a_parent() {
    assert_same(|| {
        tracing::info_span!("request", id = 7u64).in_scope(|| {
            tracing::info!(target: "secretmode::test", "in a span");
            tracing::info!(target: "secretmode::test", parent: None, "no parent, a current span");
        });
        tracing::info!(target: "secretmode::test", parent: None, "no parent, no span");
    });
}

#[test]
fn with_colours_on_the_stock_formatter_writes_every_line() {
    let (stock, own) = both(Layout::Text, true, || {
        tracing::info!(target: "secretmode::test", mode = "eso", "coloured");
    });
    assert!(stock.contains('\x1b'), "{stock:?}");
    assert_eq!(own, stock);
}

#[test]
fn json_lines_are_json() {
    let (_, own) = both(Layout::Json, false, || {
        tracing::info!(target: "secretmode::test", text = AWKWARD, shown = %AWKWARD, n = 3u64, "{AWKWARD}");
    });
    let value: serde_json::Value = serde_json::from_str(&own).unwrap();
    assert_eq!(value["text"], AWKWARD);
    assert_eq!(value["shown"], AWKWARD);
    assert_eq!(value["message"], AWKWARD);
    assert_eq!(value["timestamp"], FIXED_TEXT);
}

#[test]
fn timestamps_are_the_stock_timers() {
    let mine = |at: SystemTime| {
        let mut s = String::new();
        push_timestamp(&mut s, at).unwrap();
        s
    };
    let before = SystemTime::now();
    let mut stock = String::new();
    tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut stock)).unwrap();
    let after = SystemTime::now();
    let (lo, hi) = (mine(before), mine(after));
    assert!(lo <= stock && stock <= hi, "{lo} <= {stock} <= {hi}");
    assert_eq!(mine(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
    assert_eq!(mine(fixed_now()), FIXED_TEXT);
    assert_eq!(mine(other_now() - Duration::from_micros(1)), "2000-02-28T23:59:59.999999Z");
    assert_eq!(mine(UNIX_EPOCH + Duration::from_secs(253_402_300_799)), "9999-12-31T23:59:59.000000Z");
    assert_eq!(push_timestamp(&mut String::new(), UNIX_EPOCH + Duration::from_secs(253_402_300_800)), None);
    assert_eq!(push_timestamp(&mut String::new(), UNIX_EPOCH - Duration::from_secs(1)), None);
}

proptest! {
    #[test]
    fn any_instant_is_the_calendar_date(secs in 0i64..253_402_300_800, micros in 0u32..1_000_000) {
        let at = UNIX_EPOCH + Duration::new(secs as u64, micros * 1000);
        let mut mine = String::new();
        push_timestamp(&mut mine, at).unwrap();
        let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let expected = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second()
        );
        prop_assert_eq!(mine, expected);
    }

    #[test]
    fn any_string_is_escaped_as_serde_json_escapes_it(s in any::<String>()) {
        let mut mine = String::new();
        push_json_str(&mut mine, &s);
        prop_assert_eq!(mine, serde_json::to_string(&s).unwrap());
    }

    #[test]
    fn any_values_match_the_stock_formatters(
        msg in any::<String>(),
        s in any::<String>(),
        ascii in "[ -~]*",
        n in any::<i64>(),
        u in any::<u64>(),
        b in any::<bool>(),
    ) {
        for layout in [Layout::Text, Layout::Json] {
            let (stock, own) = both(layout, false, || {
                tracing::info!(target: "secretmode::prop", text = s.as_str(), ascii = ascii.as_str(), shown = %s, n, u, b, "{msg}");
            });
            prop_assert_eq!(own, stock);
        }
    }
}

#[test]
fn printable_escapes_control_characters_only() {
    let shown = |s: &str| Printable(s).to_string();
    assert_eq!(shown("705ab4f5-6393-11e8-b7cc-42010a800002"), "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(shown("é 中 \"quoted\" back\\slash"), "é 中 \"quoted\" back\\slash");
    assert_eq!(shown("a\nb\rc\td\x1b[2Je\x7ff\u{85}g\u{9b}h"), "a\\nb\\rc\\td\\u{1b}[2Je\\u{7f}f\\u{85}g\\u{9b}h");
    assert_eq!(shown(""), "");
    for layout in [Layout::Text, Layout::Json] {
        let out = logged(
            layout,
            || tracing::info!(target: "secretmode::test", uid = %Printable("u\n2026-11-23T00:00:00.000000Z  INFO forged"), "m"),
        );
        assert_eq!(out.lines().count(), 1, "{layout:?}: {out}");
    }
}
