use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value};

use super::*;

/// Ours and serde_json's, into a `String` and into bytes, must be the same text.
fn same<T: Serialize + ?Sized>(value: &T) -> String {
    let theirs = serde_json::to_string(value).unwrap();
    assert_eq!(to_string(value).unwrap(), theirs);
    let mut bytes = b"x".to_vec();
    write(&mut bytes, value).unwrap();
    assert_eq!(bytes, [b"x", theirs.as_bytes()].concat());
    theirs
}

#[derive(Serialize)]
struct UnitStruct;

#[derive(Serialize)]
struct Newtype(String);

#[derive(Serialize)]
struct Pair(i8, i16);

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Plain,
    #[serde(rename = "re\"named")]
    Renamed,
}

#[derive(Serialize)]
enum Shape {
    Unit,
    Newtype(i32),
    Tuple(u8, String),
    Struct { a: Option<bool>, b: Vec<char> },
    Empty {},
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum Tagged {
    First { x: u32 },
    Second(BTreeMap<String, u8>),
}

#[derive(Serialize)]
#[serde(untagged)]
enum Untagged {
    Number(u16),
    Text(&'static str),
}

/// `serialize_bytes` (serde writes `&[u8]` as a list of numbers without it).
struct Bytes(&'static [u8]);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Map keys of every kind JSON can take, one entry each.
struct Keys<K>(Vec<K>);

impl<K: Serialize> Serialize for Keys<K> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (i, k) in self.0.iter().enumerate() {
            map.serialize_entry(k, &i)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Everything {
    unit: (),
    unit_struct: UnitStruct,
    newtype: Newtype,
    pair: Pair,
    wide: (u64, i64, i128, u128, u8, u16, u32, i32),
    floats: (f32, f64, f64, f64, f32),
    shapes: Vec<Shape>,
    tagged: Vec<Tagged>,
    untagged: [Untagged; 2],
    bytes: Bytes,
    none: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<u8>,
    enum_keys: BTreeMap<Key, Shape>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

#[test]
fn every_shape_serde_derives_is_written_as_serde_json_writes_it() {
    let everything = Everything {
        unit: (),
        unit_struct: UnitStruct,
        newtype: Newtype("a\tb".into()),
        pair: Pair(-1, i16::MIN),
        wide: (u64::MAX, i64::MIN, i128::MIN, u128::MAX, 0, 7, 8, -9),
        floats: (0.1, 1e300, -0.0, f64::NAN, f32::INFINITY),
        shapes: vec![
            Shape::Unit,
            Shape::Newtype(-3),
            Shape::Tuple(1, "\u{1}".into()),
            Shape::Struct { a: Some(true), b: vec!['"', 'é'] },
            Shape::Struct { a: None, b: vec![] },
            Shape::Empty {},
        ],
        tagged: vec![Tagged::First { x: 1 }, Tagged::Second(BTreeMap::from([("k\n".into(), 2)]))],
        untagged: [Untagged::Number(5), Untagged::Text("t")],
        bytes: Bytes(b"\x00\xff"),
        none: None,
        skipped: None,
        enum_keys: BTreeMap::from([(Key::Plain, Shape::Unit), (Key::Renamed, Shape::Newtype(1))]),
        extra: BTreeMap::from([("flat\\".into(), json!({"deep": [null, 1.5, "x"]}))]),
    };
    let text = same(&everything);
    assert!(text.contains(r#""Tuple":[1,"\u0001"]"#), "{text}");
    same(&Vec::<u8>::new());
    same(&BTreeMap::<String, u8>::new());
    same(&Shape::Unit);
    same(&'\u{0}');
}

#[test]
fn keys_that_are_not_strings_are_quoted_or_refused_as_serde_json_does() {
    same(&Keys(vec![-1i64, 0, i64::MAX]));
    same(&Keys(vec![u128::MAX]));
    same(&Keys(vec![true, false]));
    same(&Keys(vec!['"', 'x']));
    same(&Keys(vec![Some("a"), Some("b\\")]));
    same(&Keys(vec![0.1f32, -2.5]));
    same(&Keys(vec![1e-7f64]));
    same(&Keys(vec![Newtype("n".into())]));
    for refused in [
        to_string(&Keys(vec![()])),
        to_string(&Keys(vec![None::<&str>])),
        to_string(&Keys(vec![f64::NAN])),
        to_string(&Keys(vec![vec![1]])),
        to_string(&Keys(vec![Shape::Newtype(1)])),
        to_string(&Keys(vec![Bytes(b"k")])),
    ] {
        assert!(refused.is_err(), "{refused:?}");
    }
    assert!(serde_json::to_string(&Keys(vec![()])).is_err(), "serde_json refuses them too");
}

#[test]
fn raw_json_is_refused_not_written_as_an_object() {
    let raw = serde_json::value::RawValue::from_string("[1]".into()).unwrap();
    assert_eq!(serde_json::to_string(&raw).unwrap(), "[1]");
    let err = to_string(&raw).unwrap_err().to_string();
    assert!(err.contains("JsonText"), "{err}");
}

#[test]
fn a_failed_push_leaves_null_and_nothing_half_written() {
    let mut out = b"[".to_vec();
    push_json(&mut out, &(Keys(vec![1]), Keys(vec![f64::NAN])));
    assert_eq!(out, b"[null");
    push_json(&mut out, "ok");
    assert_eq!(out, b"[null\"ok\"");
}

/// Any JSON document: strings with any characters (as keys too), every kind of number.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
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
    fn any_json_value_is_written_as_serde_json_writes_it(value in any_json()) {
        prop_assert_eq!(to_string(&value).unwrap(), serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn any_scalars_are_written_as_serde_json_writes_them(
        s in any::<String>(), c in any::<char>(), f in any::<f64>(), g in any::<f32>(),
        i in any::<i128>(), u in any::<u64>(), b in any::<bool>(),
    ) {
        let value = (&s, c, f, g, i, u, b, Some(&s), [&s]);
        prop_assert_eq!(to_string(&value).unwrap(), serde_json::to_string(&value).unwrap());
        let keyed = BTreeMap::from([(s.clone(), c)]);
        prop_assert_eq!(to_string(&keyed).unwrap(), serde_json::to_string(&keyed).unwrap());
    }
}

proptest! {
    #[test]
    fn json_written_inside_a_string_is_the_string_of_that_json(value in any_json()) {
        let mut inside = String::from("\"");
        write(&mut escape::InString(&mut inside), &value).unwrap();
        inside.push('"');
        let text = serde_json::to_string(&value).unwrap();
        prop_assert_eq!(inside, serde_json::to_string(&text).unwrap());
    }
}
