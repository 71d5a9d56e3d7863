//! Every bundle format parses back to its values with the format's reference parser (issue 25,
//! item 4): proptest generates items (names that YAML 1.1 would read as booleans or null,
//! values with newlines, quotes, `=`, `#`, `$`/`${VAR}`, backslashes, spaces at the ends,
//! control characters, non-ASCII, empty), renders them with `render_all`, and
//! `tests/py/render_formats.py` reads each file back with Python's `json`, PyYAML `safe_load`,
//! python-dotenv `dotenv_values` and `jproperties`; a DSN template with `urlescape` over
//! arbitrary bytes is split back by `urllib.parse`. One Python process serves the whole run
//! (a JSON line per case), so the cases stay fast and proptest still shrinks a failure.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::Value;

use secretmode::render::{env_name, render_all, Format, RenderSource, RenderedFile};

/// Set in the parser's environment: a dotenv value that gets interpolated shows as this.
const SET_VAR: (&str, &str) = ("SECRETMODE_RF_SET", "INTERPOLATED");

struct Parser {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn parser() -> &'static Mutex<Parser> {
    static PARSER: OnceLock<Mutex<Parser>> = OnceLock::new();
    PARSER.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/render_formats.py");
        let mut child = Command::new(support::venv_bin("python"))
            .arg(script)
            .env(SET_VAR.0, SET_VAR.1)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/py/render_formats.py");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // The process ends when the test binary exits and its stdin closes.
        Mutex::new(Parser { _child: child, stdin, stdout })
    })
}

/// The (key, value) pairs the reference parser reads from `file`, in its order.
fn parse_back(format: Format, file: &[u8]) -> Result<Vec<(String, String)>, String> {
    parse_back_raw(format.as_str(), file)
}

fn parse_back_raw(format: &str, file: &[u8]) -> Result<Vec<(String, String)>, String> {
    let request = serde_json::json!({
        "format": format,
        "file": base64::engine::general_purpose::STANDARD.encode(file),
    });
    let mut p = parser().lock().unwrap_or_else(|e| e.into_inner());
    writeln!(p.stdin, "{request}").expect("write to the parser");
    p.stdin.flush().expect("flush to the parser");
    let mut line = String::new();
    p.stdout.read_line(&mut line).expect("read from the parser");
    assert!(!line.is_empty(), "tests/py/render_formats.py exited (see its stderr above)");
    let answer: Value = serde_json::from_str(&line).expect("parser answer is JSON");
    if let Some(e) = answer.get("error") {
        return Err(e.to_string());
    }
    let pairs = answer["pairs"].as_array().expect("pairs");
    Ok(pairs
        .iter()
        .map(|kv| {
            let s = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| format!("<not a string: {v}>"));
            (s(&kv[0]), s(&kv[1]))
        })
        .collect())
}

/// Values the formats must escape: pieces that mean something in one of them, glued
/// together, or arbitrary strings (any Unicode scalar, control characters included).
fn value() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\n"),
        Just("\r\n"),
        Just("\r"),
        Just("\t"),
        Just(" "),
        Just("\""),
        Just("'"),
        Just("="),
        Just(":"),
        Just(": "),
        Just(" #"),
        Just("#"),
        Just("!"),
        Just("*"),
        Just("&"),
        Just("- "),
        Just("$"),
        Just("${"),
        Just("${HOME}"),
        Just("${SECRETMODE_RF_SET}"),
        Just("${SECRETMODE_RF_SET:-d}"),
        Just("$SECRETMODE_RF_SET"),
        Just("}"),
        Just("\\"),
        Just("\\n"),
        Just("\\u0041"),
        Just("\0"),
        Just("\u{7f}"),
        Just("\u{85}"),
        Just("\u{a0}"),
        Just("\u{2028}"),
        Just("\u{feff}"),
        Just("é"),
        Just("日本"),
        Just("😀"),
        Just("true"),
        Just("no"),
        Just("null"),
        Just("~"),
        Just("0x1F"),
        Just("1e3"),
        Just("0755"),
        Just("a"),
    ];
    prop_oneof![
        3 => prop::collection::vec(piece, 0..8).prop_map(|v| v.concat()),
        1 => any::<String>(),
        1 => "[ a-zA-Z0-9]{0,12}",
    ]
}

/// Item names, including ones YAML 1.1 reads as booleans or null when unquoted.
fn item_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["no", "yes", "on", "off", "y", "n", "null", "true", "e1", "db-password", "db.pass"])
            .prop_map(str::to_string),
        "[a-z]([a-z0-9.-]{0,8}[a-z0-9])?".prop_filter("item name", |s| !s.contains("..")),
    ]
}

/// Items (distinct names, and distinct env names for dotenv) with their values, in order.
fn items() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((item_name(), value()), 0..5).prop_map(|mut v| {
        let mut seen = std::collections::BTreeSet::new();
        v.retain(|(name, _)| seen.insert(env_name(name)));
        v
    })
}

fn round_trip(format: Format, items: &[(String, String)]) -> Result<(), TestCaseError> {
    let values: BTreeMap<String, Vec<u8>> = items.iter().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())).collect();
    let file = RenderedFile {
        name: "bundle".into(),
        source: RenderSource::Bundle { format, items: items.iter().map(|(k, _)| k.clone()).collect() },
    };
    let out = render_all(&[file], &values).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let text = &out["bundle"];
    let want: Vec<(String, String)> = items
        .iter()
        .map(|(k, v)| (if format == Format::Dotenv { env_name(k) } else { k.clone() }, v.clone()))
        .collect();
    let got = parse_back(format, text).map_err(|e| {
        TestCaseError::fail(format!("{format}: the parser refused {:?}: {e}", String::from_utf8_lossy(text)))
    })?;
    prop_assert_eq!(got, want, "{} file: {:?}", format, String::from_utf8_lossy(text));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn dotenv_round_trips_through_python_dotenv(items in items()) {
        round_trip(Format::Dotenv, &items)?;
    }

    #[test]
    fn json_round_trips_through_python_json(items in items()) {
        round_trip(Format::Json, &items)?;
    }

    #[test]
    fn yaml_round_trips_through_pyyaml_safe_load(items in items()) {
        round_trip(Format::Yaml, &items)?;
    }

    #[test]
    fn properties_round_trip_through_jproperties(items in items()) {
        // jproperties decodes `\uFEFF` to nothing (it decodes each code point as UTF-32,
        // which takes U+FEFF for a byte-order mark); Java's Properties reads it as U+FEFF.
        // The writer's `\uFEFF` is checked in src/render/formats.rs.
        let items: Vec<_> = items.into_iter().map(|(k, v)| (k, v.replace('\u{feff}', ""))).collect();
        round_trip(Format::Properties, &items)?;
    }
}

/// `urlescape` makes any bytes safe in every part of a URL: a DSN rendered from arbitrary user,
/// password and token bytes is split by Python's `urllib.parse` into exactly those parts.
fn dsn_round_trip(user: &[u8], password: &[u8], token: &[u8]) -> Result<(), TestCaseError> {
    let values = BTreeMap::from([
        ("db-user".to_string(), user.to_vec()),
        ("db-pass".to_string(), password.to_vec()),
        ("api-token".to_string(), token.to_vec()),
    ]);
    let template = "postgresql://{{ db-user | urlescape }}:{{ db-pass | urlescape }}@db.internal:5432/app?sslmode=require&token={{ api-token | urlescape }}";
    let file = RenderedFile { name: "dsn".into(), source: RenderSource::Template(template.into()) };
    let out = render_all(&[file], &values).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let want: Vec<(String, String)> = [
        ("scheme", "postgresql".to_string()),
        ("username", b64(user)),
        ("password", b64(password)),
        ("hostname", "db.internal".into()),
        ("port", "5432".into()),
        ("path", "/app".into()),
        ("token", b64(token)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let got = parse_back_raw("url", &out["dsn"]).map_err(TestCaseError::fail)?;
    prop_assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&out["dsn"]));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn urlescaped_dsn_parts_round_trip_through_python_urllib(
        user in prop::collection::vec(any::<u8>(), 0..24),
        password in prop::collection::vec(any::<u8>(), 0..24),
        token in prop::collection::vec(any::<u8>(), 0..24),
    ) {
        dsn_round_trip(&user, &password, &token)?;
    }
}

#[test]
fn a_dsn_with_every_url_delimiter_in_its_password_round_trips() {
    dsn_round_trip(b"app@corp", b":/?#[]@!$&'()*+,;=% \"\x00\xff\xc3\xa9", b"a&token=b#c").unwrap();
}

/// The parsers are the real ones and strict enough to catch a writer that does not escape:
/// the same values written naively (as a careless `format!` would) do not come back.
#[test]
fn negative_control_unescaped_files_do_not_round_trip() {
    let naive: [(Format, &str, &str); 4] = [
        (Format::Dotenv, "A=\"x${SECRETMODE_RF_SET}y\"\n", "x${SECRETMODE_RF_SET}y"),
        (Format::Json, "{\"a\": \"line\nbreak\"}", "line\nbreak"),
        (Format::Yaml, "a: no\n", "no"),
        (Format::Properties, "a= lead # x\n", " lead # x"),
    ];
    for (format, file, value) in naive {
        let got = parse_back(format, file.as_bytes());
        let key = if format == Format::Dotenv { "A" } else { "a" };
        assert_ne!(got, Ok(vec![(key.to_string(), value.to_string())]), "{format}: {file:?}");
    }
    // A DSN without urlescape: the password's '@' and '/' move the host.
    let raw = b"postgresql://app:p@ss/w#rd@db.internal:5432/app?sslmode=require&token=t";
    let got = parse_back_raw("url", raw).unwrap_or_default();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    assert!(!got.contains(&("password".to_string(), b64(b"p@ss/w#rd"))), "{got:?}");
    assert!(!got.contains(&("hostname".to_string(), "db.internal".to_string())), "{got:?}");
    // And the escaped form of the same values does.
    for (format, _, value) in naive {
        round_trip(format, &[("a".to_string(), value.to_string())]).unwrap();
    }
}

/// A value that is not UTF-8 goes into no format; the error names the item, not the value.
#[test]
fn binary_values_are_refused_naming_the_item() {
    for format in Format::ALL {
        let values = BTreeMap::from([("blob".to_string(), b"\xffsecret\xfe".to_vec())]);
        let file =
            RenderedFile { name: "f".into(), source: RenderSource::Bundle { format, items: vec!["blob".into()] } };
        let err = render_all(&[file], &values).unwrap_err().to_string();
        let key = if format == Format::Dotenv { "BLOB" } else { "blob" };
        assert!(err.contains(key) && err.contains("not UTF-8"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
