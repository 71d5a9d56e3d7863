//! JSON string escaping, byte for byte as serde_json escapes: `"` and `\`, the short forms of
//! \b \t \n \f \r, `\u00XX` (lower-case hex) for the other control characters, and nothing
//! else (not `/`, not DEL, not non-ASCII).
//!
//! Owning it buys [`InString`]: JSON written straight into a JSON string, escaped once as it is
//! written. The agent spec travels that way (JSON in an env value), and writing it whole and
//! then escaping the text again was the largest single cost of an init or sidecar review. The
//! same code escapes log fields. The search for the next byte to escape reads eight bytes at a
//! time (in safe code), which pays on long plain strings such as paths; on the patch's many
//! short ones it costs about what serde_json's byte-at-a-time scan does (docs/BENCHMARKS.md).

/// Where JSON goes: the patch and the answer are bytes, patch values and log lines `String`s.
/// Only `str`s and ASCII go in, so a `String` stays valid without being checked again.
pub trait Sink {
    fn push_str(&mut self, s: &str);
    /// `byte` must be ASCII (a bracket, a comma, a colon).
    fn push_ascii(&mut self, byte: u8);
    fn reserve(&mut self, additional: usize);
}

impl Sink for Vec<u8> {
    fn push_str(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }

    fn push_ascii(&mut self, byte: u8) {
        self.push(byte);
    }

    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }
}

impl Sink for String {
    fn push_str(&mut self, s: &str) {
        String::push_str(self, s);
    }

    fn push_ascii(&mut self, byte: u8) {
        debug_assert!(byte.is_ascii());
        self.push(char::from(byte));
    }

    fn reserve(&mut self, additional: usize) {
        String::reserve(self, additional);
    }
}

/// A sink inside a JSON string: everything written to it arrives escaped, so JSON written here
/// (with [`crate::json::write`]) becomes the text of a string value in one pass, instead of
/// being written whole and then escaped byte by byte a second time.
pub struct InString<'a, S: Sink + ?Sized>(pub &'a mut S);

impl<S: Sink + ?Sized> Sink for InString<'_, S> {
    fn push_str(&mut self, s: &str) {
        push_escaped(self.0, s);
    }

    fn push_ascii(&mut self, byte: u8) {
        if needs_escape(byte) {
            push_escape(self.0, byte);
        } else {
            self.0.push_ascii(byte);
        }
    }

    fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }
}

/// For text that arrives in pieces, such as a `Debug` value.
impl<S: Sink + ?Sized> std::fmt::Write for InString<'_, S> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// `s` as a quoted JSON string.
pub fn push_quoted<S: Sink + ?Sized>(out: &mut S, s: &str) {
    out.reserve(s.len() + 2);
    out.push_ascii(b'"');
    push_escaped(out, s);
    out.push_ascii(b'"');
}

/// `s` escaped for the inside of a JSON string, without the quotes. One pass: eight bytes at
/// a time while eight are left, then byte by byte; runs between escapes are copied whole.
pub fn push_escaped<S: Sink + ?Sized>(out: &mut S, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(word) = bytes.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let found = escape_bits(u64::from_le_bytes(*word));
        if found == 0 {
            i += 8;
            continue;
        }
        let lane = (found.trailing_zeros() / 8) as usize;
        flush(out, s, start, i + lane, word[lane]);
        start = i + lane + 1;
        i = start;
    }
    while let Some(&byte) = bytes.get(i) {
        if needs_escape(byte) {
            flush(out, s, start, i, byte);
            start = i + 1;
        }
        i += 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
}

/// The run `start..at` and then the escape of `byte`, the ASCII byte at `at` (so the run ends
/// on a character boundary).
fn flush<S: Sink + ?Sized>(out: &mut S, s: &str, start: usize, at: usize, byte: u8) {
    out.push_str(s.get(start..at).unwrap_or_default());
    push_escape(out, byte);
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The escape for [`needs_escape`]'s bytes, a byte at a time: escapes are two or six bytes,
/// too short to be worth a copy.
fn push_escape<S: Sink + ?Sized>(out: &mut S, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_ascii(b'\\');
    match byte {
        b'"' | b'\\' => out.push_ascii(byte),
        b'\x08' => out.push_ascii(b'b'),
        b'\t' => out.push_ascii(b't'),
        b'\n' => out.push_ascii(b'n'),
        b'\x0c' => out.push_ascii(b'f'),
        b'\r' => out.push_ascii(b'r'),
        _ => {
            for ascii in [b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]] {
                out.push_ascii(ascii);
            }
        }
    }
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
const SPACES: u64 = ONES * 0x20;

/// The high bit of each byte of `word` (little-endian, so the lowest bit is the first byte)
/// that is a control character, `"` or `\`. Bits above the lowest one may be false (a borrow
/// carries into the next byte), so only the lowest is read; it is exact, because a borrow
/// starts only at a byte that is itself a match.
fn escape_bits(word: u64) -> u64 {
    let control = word.wrapping_sub(SPACES) & !word;
    let quote = zero_bytes(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_bytes(word ^ (ONES * u64::from(b'\\')));
    (control | quote | backslash) & HIGH
}

/// The high bit of each zero byte (with the same caveat above the lowest).
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGH
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        push_quoted(&mut out, s);
        out
    }

    #[test]
    fn every_byte_class_is_escaped_as_serde_json_does() {
        for c in (0u8..0x80).map(char::from).chain(['é', '€', '😀', '\u{7f}', '\u{2028}']) {
            // At each position of a word, with plain text around it.
            for pad in 0..10 {
                let s = format!("{}{c}{}", "a".repeat(pad), "b".repeat(9 - pad));
                assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap(), "{c:?} at {pad}");
            }
        }
        assert_eq!(quoted(""), r#""""#);
        assert_eq!(quoted("\u{1}\u{1f}"), r#""\u0001\u001f""#);
    }

    #[test]
    fn a_match_followed_by_bytes_a_borrow_would_flag_is_found_once() {
        // `\0` then 0x01 / 0x21: the borrow out of the first byte flags the second as well.
        for s in ["\0\u{1}xxxxxxxxx", "\"\u{1}\"\u{21}xxxxxxx", "xxxxxxx\u{1f}\u{20}\u{3f}"] {
            let mut bytes = Vec::new();
            push_quoted(&mut bytes, s);
            assert_eq!(String::from_utf8(bytes).unwrap(), serde_json::to_string(s).unwrap());
        }
    }

    proptest! {
        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(s in any::<String>()) {
            prop_assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn dense_escapes_are_escaped_as_serde_json_escapes_them(s in "[\\x00-\\x22\\\\a\u{e9}]{0,40}") {
            prop_assert_eq!(quoted(&s), serde_json::to_string(&s).unwrap());
        }
    }
}
