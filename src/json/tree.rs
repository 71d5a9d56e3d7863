//! A JSON tree that borrows its strings from the text it was parsed from: what the decision
//! reads of a pod. It is parsed by `webhook::pod_view` (which implements `Deserialize` for it).
//!
//! `serde_json::Value` owns every string and keeps every object in a B-tree; on the request
//! path that means an allocation per string and per tree node, all freed again a few
//! microseconds later. Here a string without escapes is a slice of the request body, and an
//! object is one vector of entries (kept because it was measured to matter:
//! docs/BENCHMARKS.md).
//!
//! It reads exactly as `Value` does, so a reader cannot tell which of the two it was given:
//! objects are sorted by key with duplicates resolved the way `serde_json::Map` resolves them
//! (the later wins), numbers are `serde_json::Number`s built by the same constructors, and a
//! `JsonRef` converted from a `Value` ([`JsonRef::from`]) equals one parsed from that value's
//! text. Callers that hold a whole `Value` (the CLI, `audit`, tests) convert it, borrowing.

use std::borrow::Cow;

use serde::{Serialize, Serializer};
use serde_json::{Number, Value};

#[derive(Clone, Debug, PartialEq)]
pub enum JsonRef<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<JsonRef<'a>>),
    Object(ObjectRef<'a>),
}

/// An object's entries, sorted by key, each key once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObjectRef<'a>(Vec<(Cow<'a, str>, JsonRef<'a>)>);

impl<'a> ObjectRef<'a> {
    /// The object of `entries` in the order they were read: sorted, and of two entries with
    /// the same key the later kept, as `serde_json::Map` keeps it.
    pub fn from_entries(mut entries: Vec<(Cow<'a, str>, JsonRef<'a>)>) -> ObjectRef<'a> {
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable, so equal keys stay in reading order and the last of a run is the later.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    std::mem::swap(&mut later.1, &mut kept.1);
                }
                same
            });
        }
        ObjectRef(entries)
    }

    pub fn get(&self, key: &str) -> Option<&JsonRef<'a>> {
        // A pod's objects have a handful of keys: comparing lengths first rules out nearly
        // every entry without comparing bytes, which beats a binary search's string compares.
        if self.0.len() <= 16 {
            return self.0.iter().find(|(k, _)| k.len() == key.len() && k.as_ref() == key).map(|(_, v)| v);
        }
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Entries in key order, as a `serde_json::Map` iterates.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &JsonRef<'a>)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_ref())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> JsonRef<'a> {
    /// Field `key` of an object; `None` for a missing key or a value that is not an object.
    pub fn get(&self, key: &str) -> Option<&JsonRef<'a>> {
        self.as_object()?.get(key)
    }

    /// The value at `path` (object keys only).
    pub fn at(&self, path: &[&str]) -> Option<&JsonRef<'a>> {
        path.iter().try_fold(self, |v, key| v.get(key))
    }

    pub fn as_object(&self) -> Option<&ObjectRef<'a>> {
        match self {
            JsonRef::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[JsonRef<'a>]> {
        match self {
            JsonRef::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The entries of a list, or none when it is missing or not a list.
    pub fn entries<'p>(value: Option<&'p JsonRef<'a>>) -> &'p [JsonRef<'a>] {
        value.and_then(JsonRef::as_array).unwrap_or_default()
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            JsonRef::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            JsonRef::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            JsonRef::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            JsonRef::Number(n) => n.as_u64(),
            _ => None,
        }
    }
}

/// Borrows a whole `Value`; its objects are already sorted maps.
impl<'a> From<&'a Value> for JsonRef<'a> {
    fn from(value: &'a Value) -> JsonRef<'a> {
        match value {
            Value::Null => JsonRef::Null,
            Value::Bool(b) => JsonRef::Bool(*b),
            Value::Number(n) => JsonRef::Number(n.clone()),
            Value::String(s) => JsonRef::String(Cow::Borrowed(s)),
            Value::Array(list) => JsonRef::Array(list.iter().map(JsonRef::from).collect()),
            Value::Object(map) => JsonRef::Object(ObjectRef(
                map.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), JsonRef::from(v))).collect(),
            )),
        }
    }
}

/// Written as the JSON it was read from (objects in key order, as `Value` writes them).
impl Serialize for JsonRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            JsonRef::Null => serializer.serialize_unit(),
            JsonRef::Bool(b) => serializer.serialize_bool(*b),
            JsonRef::Number(n) => n.serialize(serializer),
            JsonRef::String(s) => serializer.serialize_str(s),
            JsonRef::Array(list) => serializer.collect_seq(list),
            JsonRef::Object(o) => serializer.collect_map(o.iter()),
        }
    }
}

/// Whether the two hold the same JSON, as `Value == Value` would say.
impl PartialEq<Value> for JsonRef<'_> {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (JsonRef::Null, Value::Null) => true,
            (JsonRef::Bool(a), Value::Bool(b)) => a == b,
            (JsonRef::Number(a), Value::Number(b)) => a == b,
            (JsonRef::String(a), Value::String(b)) => a == b,
            (JsonRef::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y),
            (JsonRef::Object(a), Value::Object(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|((ka, va), (kb, vb))| ka == kb && va == vb)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(entries: &[(&'static str, i64)]) -> ObjectRef<'static> {
        ObjectRef::from_entries(
            entries.iter().map(|(k, v)| (Cow::Borrowed(*k), JsonRef::Number((*v).into()))).collect(),
        )
    }

    #[test]
    fn objects_read_like_serde_json_maps() {
        let o = object(&[("b", 1), ("a", 2), ("b", 3), ("c", 4), ("a", 5)]);
        let map: serde_json::Map<String, Value> = serde_json::from_str(r#"{"b":1,"a":2,"b":3,"c":4,"a":5}"#).unwrap();
        assert_eq!(JsonRef::Object(o.clone()), Value::Object(map));
        assert_eq!(o.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(o.get("a").and_then(JsonRef::as_i64), Some(5));
        assert_eq!(o.get("b").and_then(JsonRef::as_i64), Some(3));
        assert!(o.contains_key("c") && !o.contains_key("d") && o.len() == 3);
        assert!(object(&[]).is_empty() && object(&[]).get("a").is_none());
        // Past the length where look-ups turn to a binary search.
        let keys: Vec<String> = (0..40).rev().map(|i| format!("k{i}")).collect();
        let big = ObjectRef::from_entries(
            keys.iter().enumerate().map(|(i, k)| (Cow::Borrowed(k.as_str()), JsonRef::Number(i.into()))).collect(),
        );
        assert_eq!(big.get("k39").and_then(JsonRef::as_u64), Some(0));
        assert_eq!(big.get("k0").and_then(JsonRef::as_u64), Some(39));
        assert!(big.get("k40").is_none() && big.get("k").is_none());
    }

    #[test]
    fn a_borrowed_value_reads_and_compares_as_the_value() {
        let v = json!({"a": {"b/c": [1, -2, 2.5, "s", null, true], "d": null}, "e": {}});
        let r = JsonRef::from(&v);
        assert_eq!(r, v);
        assert_eq!(r.at(&["a", "d"]), Some(&JsonRef::Null));
        assert_eq!(r.at(&["a", "x"]), None);
        assert_eq!(r.at(&["a", "b/c", "0"]), None);
        let list = JsonRef::entries(r.at(&["a", "b/c"]));
        assert_eq!((list[0].as_u64(), list[1].as_i64(), list[1].as_u64()), (Some(1), Some(-2), None));
        assert_eq!((list[3].as_str(), list[5].as_bool(), list[4] == JsonRef::Null), (Some("s"), Some(true), true));
        assert!(JsonRef::entries(r.get("e")).is_empty() && JsonRef::entries(None).is_empty());
        assert_eq!(serde_json::to_value(&r).unwrap(), v);
        for other in [json!({"a": 1}), json!(null), json!([]), json!({"a": v["a"], "e": {"x": 1}})] {
            assert_ne!(r, other);
        }
    }
}
