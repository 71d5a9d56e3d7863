//! The fixed formats of `<prefix>/bundle.<file>`: dotenv, JSON, YAML and Java properties, each
//! escaped so every value (newlines, quotes, `=`, `#`, `$`, backslashes, spaces at the ends,
//! any Unicode) parses back exactly with the format's reference parser (`tests/render_formats.rs`
//! checks it through Python's `json`, PyYAML `safe_load`, python-dotenv `dotenv_values` and
//! `jproperties`). Keys are written in the order given. Values must be UTF-8: these are text
//! formats (use a template with `base64` for binary values).
//!
//! - dotenv: `KEY="..."`, escaping `\` `"` and the control characters python-dotenv decodes
//!   (`\n` `\r` `\t` `\a` `\b` `\f` `\v`); every `${` is written `${:-$}{` (an empty variable with
//!   the default `$`), which python-dotenv's `${VAR}` interpolation turns back into `${`.
//! - JSON: an object, one member per line, strings escaped by serde_json.
//! - YAML: a block mapping whose keys and values are all double-quoted scalars, with every
//!   character that is not printable (or is a line break, NEL, U+2028/9 or a BOM) escaped, so no
//!   value is ever read as a number, boolean, null, alias, tag or comment, in YAML 1.1 or 1.2.
//! - properties: `key=value` in pure ASCII: `\` `=` `:` `#` `!` escaped, a leading space as
//!   `\ `, `\n` `\r` `\t` `\f`, and everything outside printable ASCII as `\uXXXX` (surrogate
//!   pairs above U+FFFF), as `java.util.Properties.store` writes it.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Format {
    Dotenv,
    Json,
    Yaml,
    Properties,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Dotenv, Format::Json, Format::Yaml, Format::Properties];
    /// The names, for a denial's fix.
    pub const VALID: &'static str = "dotenv, json, yaml, properties";

    /// The name as written in the annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Dotenv => "dotenv",
            Format::Json => "json",
            Format::Yaml => "yaml",
            Format::Properties => "properties",
        }
    }

    /// The format of an annotation's `<format>` (exact, lower case).
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// Whether the bundle's keys are the items' env names (`DB_PASSWORD`) rather than their
    /// item names (`db-password`).
    pub fn keys_are_env_names(self) -> bool {
        self == Format::Dotenv
    }

    /// Writes `entries` (key, value) in this format, in the order given. The error names the
    /// key, never the value.
    pub fn render(self, entries: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
        let mut text: Vec<(&str, &str)> = Vec::with_capacity(entries.len());
        for (i, (key, value)) in entries.iter().enumerate() {
            if entries[..i].iter().any(|(k, _)| k == key) {
                return Err(format!("two entries have the key {key}"));
            }
            let value = std::str::from_utf8(value).map_err(|_| {
                format!(
                    "the value of {key} is not UTF-8 text, which a {} file cannot hold; render it through a template with base64",
                    self.as_str()
                )
            })?;
            text.push((key, value));
        }
        let out = match self {
            Format::Dotenv => dotenv(&text)?,
            Format::Json => json(&text),
            Format::Yaml => yaml(&text),
            Format::Properties => properties(&text),
        };
        Ok(out.into_bytes())
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_env_name(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn dotenv(entries: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::new();
    for (key, value) in entries {
        if !is_env_name(key) {
            return Err(format!(
                "{key:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*), so it cannot be a dotenv key"
            ));
        }
        out.push_str(key);
        out.push_str("=\"");
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\x0b' => out.push_str("\\v"),
                '$' if chars.peek() == Some(&'{') => {
                    chars.next();
                    out.push_str("${:-$}{");
                }
                c => out.push(c),
            }
        }
        out.push_str("\"\n");
    }
    Ok(out)
}

fn json(entries: &[(&str, &str)]) -> String {
    if entries.is_empty() {
        return "{}\n".to_string();
    }
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut out = String::from("{\n");
    for (i, (key, value)) in entries.iter().enumerate() {
        let comma = if i + 1 < entries.len() { "," } else { "" };
        let _ = writeln!(out, "  {}: {}{comma}", quote(key), quote(value));
    }
    out.push_str("}\n");
    out
}

fn yaml(entries: &[(&str, &str)]) -> String {
    if entries.is_empty() {
        return "{}\n".to_string();
    }
    let mut out = String::new();
    for (key, value) in entries {
        yaml_quoted(&mut out, key);
        out.push_str(": ");
        yaml_quoted(&mut out, value);
        out.push('\n');
    }
    out
}

/// A YAML double-quoted scalar. Printable characters stay as they are (YAML's printable set,
/// less the line breaks NEL, U+2028, U+2029 that would be folded, and the BOM); everything
/// else is an escape.
fn yaml_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..
                if !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') =>
            {
                out.push(c)
            }
            c if (c as u32) <= 0xff => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
}

fn properties(entries: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (key, value) in entries {
        properties_escaped(&mut out, key, true);
        out.push('=');
        properties_escaped(&mut out, value, false);
        out.push('\n');
    }
    out
}

/// Escapes as `Properties.store` does: in a key every space, in a value only a leading one.
fn properties_escaped(out: &mut String, s: &str, is_key: bool) {
    for (i, c) in s.chars().enumerate() {
        match c {
            ' ' if i == 0 || is_key => out.push_str("\\ "),
            '\\' | '=' | ':' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0c' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(format: Format, entries: &[(&str, &str)]) -> String {
        let entries: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        String::from_utf8(format.render(&entries).unwrap()).unwrap()
    }

    #[test]
    fn names_round_trip_through_serde_and_from_name() {
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.as_str()), Some(f));
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
            assert_eq!(serde_json::from_str::<Format>(&format!("\"{f}\"")).unwrap(), f);
        }
        assert_eq!(Format::from_name("JSON"), None);
        assert_eq!(Format::from_name("toml"), None);
    }

    #[test]
    fn dotenv_escapes_quotes_backslashes_newlines_and_interpolation() {
        let out = render(Format::Dotenv, &[("A", "x\"y\\z\n${HOME}$PATH"), ("B_2", "")]);
        assert_eq!(out, "A=\"x\\\"y\\\\z\\n${:-$}{HOME}$PATH\"\nB_2=\"\"\n");
    }

    #[test]
    fn a_key_given_twice_is_refused() {
        for f in Format::ALL {
            let err = f.render(&[("K", b"one"), ("K", b"two")]).unwrap_err();
            assert_eq!(err, "two entries have the key K");
        }
    }

    #[test]
    fn dotenv_refuses_a_key_that_is_not_a_variable_name() {
        let err = Format::Dotenv.render(&[("db-password", b"s3cr3t-value")]).unwrap_err();
        assert!(err.contains("db-password") && !err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn json_keeps_the_order_given_and_escapes() {
        let out = render(Format::Json, &[("z", "1"), ("a", "q\"\n\u{1}é")]);
        assert_eq!(out, "{\n  \"z\": \"1\",\n  \"a\": \"q\\\"\\n\\u0001é\"\n}\n");
        assert_eq!(render(Format::Json, &[]), "{}\n");
    }

    #[test]
    fn yaml_quotes_every_scalar_and_escapes_what_is_not_printable() {
        let out = render(
            Format::Yaml,
            &[("no", "yes"), ("null", "~"), ("n", "0x1F"), ("t", "a\u{85}b\u{2028}\u{feff}\u{1}é😀")],
        );
        assert_eq!(
            out,
            "\"no\": \"yes\"\n\"null\": \"~\"\n\"n\": \"0x1F\"\n\"t\": \"a\\x85b\\u2028\\uFEFF\\x01é😀\"\n"
        );
        assert_eq!(render(Format::Yaml, &[]), "{}\n");
    }

    #[test]
    fn properties_is_pure_ascii_with_java_escapes() {
        let out = render(Format::Properties, &[("a b", " x = y:#! \\\n\té😀 ")]);
        assert_eq!(out, "a\\ b=\\ x \\= y\\:\\#\\! \\\\\\n\\t\\u00E9\\uD83D\\uDE00 \n");
        assert!(out.is_ascii());
        assert_eq!(render(Format::Properties, &[("k", "\u{feff}\u{0}\u{7f}")]), "k=\\uFEFF\\u0000\\u007F\n");
    }

    #[test]
    fn a_value_that_is_not_utf8_is_refused_naming_the_key_only() {
        for f in Format::ALL {
            let err = f.render(&[("KEY_ONE", b"pass\xffword")]).unwrap_err();
            assert!(err.contains("KEY_ONE") && err.contains(f.as_str()), "{err}");
            assert!(!err.contains("pass") && !err.contains("word"), "{err}");
        }
    }
}
