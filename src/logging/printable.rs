//! What goes into a log line from outside. Lines are written by tracing-subscriber's formatters
//! (set up in [`crate::logging`]); they write a `%field` as its `Display`, as it is. [`Printable`] is that `Display` for text that comes from a request, a pod or a
//! provider, so that such text cannot end the line and forge the next one.

use std::fmt;

/// A string from a request or a pod, for a `%field` of a log line: control characters (newline,
/// carriage return, escape, C1) written as Rust escapes (`\n`, `\u{1b}`), so that a value can
/// neither end the line and forge the next one nor drive a terminal. Everything else passes
/// unchanged, so a uid or a namespace looks the same as without it.
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0)
    }
}

/// Writes `text` with its control characters escaped, as [`Printable`] displays it.
pub(crate) fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    // Printable ASCII (a uid, a namespace) needs no look at each char.
    if text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return out.write_str(text);
    }
    let mut rest = text;
    while let Some(at) = rest.find(char::is_control) {
        out.write_str(&rest[..at])?;
        let ch = rest[at..].chars().next().unwrap_or_default();
        write!(out, "{}", ch.escape_debug())?;
        rest = &rest[at + ch.len_utf8()..];
    }
    out.write_str(rest)
}

/// Other modules' tests name the layout this way.
#[cfg(test)]
pub(crate) use crate::logging::LogFormat as Layout;

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

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

    /// What `emit` logs through the formatters every command installs ([`crate::logging`]).
    pub(crate) fn logged(layout: Layout, emit: impl Fn()) -> String {
        let out = Capture::default();
        tracing::dispatcher::with_default(&crate::logging::dispatch(layout, out.clone()), emit);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    const AWKWARD: &str = "q\"uote back\\slash nl\n cr\r tab\t nul\0 esc\x1b[31m bel\x07 del\x7f c1\u{9b} é 中";

    #[test]
    fn printable_escapes_control_characters_only() {
        let shown = |s: &str| Printable(s).to_string();
        assert_eq!(shown("705ab4f5-6393-11e8-b7cc-42010a800002"), "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(shown("é 中 \"quoted\" back\\slash"), "é 中 \"quoted\" back\\slash");
        assert_eq!(shown("a\nb\rc\td\x1b[2Je\x7ff\u{85}g\u{9b}h"), "a\\nb\\rc\\td\\u{1b}[2Je\\u{7f}f\\u{85}g\\u{9b}h");
        assert_eq!(shown(""), "");
    }

    /// A newline in a `%` field would start a line that looks like the webhook's own: the text
    /// layout's fields escape it even without `Printable`, and with it the event stays one line
    /// in either layout.
    #[test]
    fn a_printable_field_cannot_forge_a_line() {
        let forged = "u\n2026-11-23T00:00:00.000000Z  INFO forged";
        let raw = logged(Layout::Text, || tracing::info!(target: "secretmode::test", uid = %forged, "m"));
        assert_eq!(raw.lines().count(), 1, "{raw}");
        for layout in [Layout::Text, Layout::Json] {
            let out = logged(layout, || tracing::info!(target: "secretmode::test", uid = %Printable(forged), "m"));
            assert_eq!(out.lines().count(), 1, "{layout:?}: {out}");
            let uid = match layout {
                Layout::Text => out.clone(),
                Layout::Json => {
                    serde_json::from_str::<serde_json::Value>(&out).unwrap()["uid"].as_str().unwrap().to_string()
                }
            };
            // The newline, as the two characters `\n`.
            assert!(uid.contains(r"u\n2026-11-23"), "{layout:?}: {out}");
        }
    }

    /// The layouts `serve` documents: text `TIME LEVEL target: message fields`, JSON one flat
    /// object per line.
    #[test]
    fn the_two_layouts() {
        let emit = || tracing::info!(target: "secretmode::test", text = AWKWARD, n = 3u64, ok = true, "{AWKWARD}");
        let text = logged(Layout::Text, emit);
        let (time, rest) = text.split_once(' ').unwrap();
        assert!(time.starts_with("20") && time.ends_with('Z') && time.as_bytes()[10] == b'T', "{text}");
        assert!(rest.starts_with(" INFO secretmode::test: q\"uote"), "{text}");
        assert!(rest.ends_with(" n=3 ok=true\n"), "{text}");
        let json = logged(Layout::Json, emit);
        assert_eq!(json.lines().count(), 1, "{json}");
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["message"], AWKWARD);
        assert_eq!(value["text"], AWKWARD);
        assert_eq!(value["n"], 3);
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "secretmode::test");
        assert!(value["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{json}");
    }
}
