//! JSON on the request path, both ways; imports nothing else of the crate.
//!
//! Reading: [`tree::JsonRef`], the borrowed tree the decision reads a pod as (parsed by
//! `webhook::pod_view`). Writing: serde_json, plus [`InString`], a serde_json formatter whose
//! output is the text of a JSON string holding that JSON. The agent spec travels as JSON inside
//! an env value (a JSON string); written through [`InString`] it becomes that string's text in
//! serde_json's one pass, instead of being written whole and then escaped a second time (kept
//! because it was measured to matter: docs/BENCHMARKS.md).

pub mod tree;

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

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

/// Appends the text of the JSON string holding `value`'s compact JSON (without the quotes):
/// what escaping `serde_json::to_string(value)` as a string's contents gives, in one pass.
pub fn push_in_string<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), serde_json::Error> {
    value.serialize(&mut serde_json::Serializer::with_formatter(out, InString))
}

/// serde_json's compact output, escaped for the inside of a JSON string as it is written.
/// serde_json hands string contents over in fragments that need no escape and one escape at a
/// time, so only its quotes and its escapes change: `"` is written `\"`, and an escape gets a
/// second backslash (`\n` is written `\\n`). Brackets, colons, commas, numbers and literals
/// need no escape inside a string, and UTF-8 passes through as it is.
pub struct InString;

impl Formatter for InString {
    #[inline]
    fn begin_string<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(br#"\""#)
    }

    #[inline]
    fn end_string<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(br#"\""#)
    }

    fn write_char_escape<W: ?Sized + Write>(&mut self, writer: &mut W, escape: CharEscape) -> io::Result<()> {
        let escaped: &[u8] = match escape {
            CharEscape::Quote => br#"\\\""#,
            CharEscape::ReverseSolidus => br"\\\\",
            CharEscape::Solidus => br"\\/",
            CharEscape::Backspace => br"\\b",
            CharEscape::FormFeed => br"\\f",
            CharEscape::LineFeed => br"\\n",
            CharEscape::CarriageReturn => br"\\r",
            CharEscape::Tab => br"\\t",
            CharEscape::AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let (high, low) = (HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]);
                return writer.write_all(&[b'\\', b'\\', b'u', b'0', b'0', high, low]);
            }
        };
        writer.write_all(escaped)
    }

    /// A `RawValue`'s JSON text, which may hold quotes and backslashes: escaped whole.
    fn write_raw_fragment<W: ?Sized + Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        let quoted = serde_json::to_string(fragment).map_err(io::Error::other)?;
        writer.write_all(quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).unwrap_or_default().as_bytes())
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
        push_in_string(&mut out, value).unwrap();
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
    fn raw_values_number_keys_and_non_finite_floats_are_escaped_as_serde_json_escapes_them() {
        let raw = serde_json::value::RawValue::from_string(r#"{"a\"b": [1, "\\u0001"]}"#.into()).unwrap();
        let keys: std::collections::BTreeMap<i32, f64> = [(-1, 0.5), (2, f64::NAN)].into();
        let all = (raw, keys, 'q', "\u{1f}\u{7f}/");
        let text = serde_json::to_string(&all).unwrap();
        assert_eq!(inside(&all), serde_json::to_string(&text).unwrap());
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
