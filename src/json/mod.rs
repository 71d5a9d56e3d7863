//! JSON on the request path, both ways; imports nothing else of the crate.
//!
//! Reading: [`tree::JsonRef`], the borrowed tree the decision reads a pod as (parsed by
//! `webhook::pod_view`). Writing: serde_json, plus [`InString`], a writer that escapes what
//! serde_json writes into it as it arrives. The agent spec travels as JSON inside an env value
//! (a JSON string); written through [`InString`] it becomes that string's text in one pass,
//! instead of being written whole and then escaped a second time (kept because it was measured
//! to matter: docs/BENCHMARKS.md).

pub mod tree;

use std::io::{self, Write};

use serde::Serialize;

/// Appends `value` as JSON. What the webhook writes this way (strings, lists of strings)
/// cannot fail to serialise; if a value ever did, `null` is appended and nothing half-written
/// is left behind.
pub fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let len = out.len();
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.truncate(len);
        out.extend_from_slice(b"null");
    }
}

/// A writer inside a JSON string: every byte written to it arrives escaped exactly as
/// serde_json escapes a string's contents (`"` and `\`, the short forms `\b \t \n \f \r`,
/// `\u00XX` for the other control characters, nothing else). `serde_json::to_writer(InString(out),
/// value)` therefore appends the text of the JSON string holding `value`'s JSON.
///
/// Escaping works on bytes: only ASCII is escaped and UTF-8 passes through as it is, so it
/// does not matter where serde_json splits its writes.
pub struct InString<'a>(pub &'a mut Vec<u8>);

/// For each byte, what follows the backslash of its escape inside a JSON string: `0` for none,
/// `u` for `\u00XX`, else the short form.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[b'\t' as usize] = b't';
    table[b'\n' as usize] = b'n';
    table[0x0c] = b'f';
    table[b'\r' as usize] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

impl InString<'_> {
    /// serde_json writes in small pieces (a quote, a key, a colon), so a piece needing no
    /// escape is appended in one copy.
    #[inline]
    fn push(&mut self, buf: &[u8]) {
        let out = &mut *self.0;
        let mut start = 0;
        for (i, &byte) in buf.iter().enumerate() {
            let escape = ESCAPE[usize::from(byte)];
            if escape == 0 {
                continue;
            }
            out.extend_from_slice(&buf[start..i]);
            if escape == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ]);
            } else {
                out.extend_from_slice(&[b'\\', escape]);
            }
            start = i + 1;
        }
        out.extend_from_slice(&buf[start..]);
    }
}

impl Write for InString<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.push(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// `value` written inside a JSON string, with the quotes.
    fn inside<T: Serialize + ?Sized>(value: &T) -> String {
        let mut out = b"\"".to_vec();
        serde_json::to_writer(InString(&mut out), value).unwrap();
        out.push(b'"');
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_byte_class_is_escaped_as_serde_json_escapes_it() {
        for c in (0u8..0x80).map(char::from).chain(['é', '€', '😀', '\u{7f}', '\u{2028}']) {
            let s = format!("a{c}b");
            let text = serde_json::to_string(&s).unwrap();
            // The string's JSON, written inside a string, is the string of that JSON.
            assert_eq!(inside(&s), serde_json::to_string(&text).unwrap(), "{c:?}");
        }
        assert_eq!(inside("\u{1}\u{1f}"), r#""\"\\u0001\\u001f\"""#);
    }

    #[test]
    fn a_failed_push_leaves_null_and_nothing_half_written() {
        /// A map whose second key is not a string: serde_json fails after writing the first.
        struct BadKeys;
        impl Serialize for BadKeys {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(None)?;
                map.serialize_entry("ok", &1)?;
                map.serialize_entry(&[1], &2)?;
                map.end()
            }
        }
        let mut out = b"[".to_vec();
        push_json(&mut out, &BadKeys);
        assert_eq!(out, b"[null");
        push_json(&mut out, "o\"k");
        assert_eq!(out, br#"[null"o\"k""#);
    }

    /// Any JSON document: strings with any characters (as keys too), every kind of number.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            "[\\x00-\\x7f]{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn json_written_inside_a_string_is_the_string_of_that_json(value in any_json()) {
            let text = serde_json::to_string(&value).unwrap();
            prop_assert_eq!(inside(&value), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn dense_escapes_are_escaped_as_serde_json_escapes_them(s in "[\\x00-\\x22\\\\a\u{e9}]{0,40}") {
            let text = serde_json::to_string(&s).unwrap();
            prop_assert_eq!(inside(&s), serde_json::to_string(&text).unwrap());
        }
    }
}
