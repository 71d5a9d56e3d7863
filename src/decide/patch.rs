//! RFC 6902 JSON Patch operations and RFC 6901 pointer tokens.
//!
//! The injector emits its ops directly (see `inject`): every op is an `add` at a position it
//! read from the pod, so nothing in the pod is rewritten and the patch stays minimal without
//! cloning and diffing the whole pod on every admission. Emitting the ops here rather than
//! diffing with a crate was measured to matter (docs/BENCHMARKS.md).

use serde::ser::Error as _;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// The webhook only ever adds: it never removes or rewrites what the pod already has. Values
/// are kept as JSON text, serialised once when the op is made.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    Add { path: String, value: JsonText },
}

impl PatchOp {
    pub fn add<T: Serialize + ?Sized>(path: String, value: &T) -> Result<PatchOp, serde_json::Error> {
        Ok(PatchOp::Add { path, value: JsonText::of(value)? })
    }

    /// An op whose value is JSON text this crate has already written.
    pub(crate) fn add_json(path: String, value: JsonText) -> PatchOp {
        PatchOp::Add { path, value }
    }

    pub fn path(&self) -> &str {
        match self {
            PatchOp::Add { path, .. } => path,
        }
    }
}

/// JSON text written by this crate: by serde_json, or joined from pieces serde_json wrote (the
/// agent container, `inject::container`). Unlike `serde_json::value::RawValue`, which checks
/// text from elsewhere by parsing it, it is trusted as it is, so a value joined from prepared
/// pieces is not parsed again on every admission; the pieces' own tests check the joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonText(Box<str>);

impl JsonText {
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<JsonText, serde_json::Error> {
        serde_json::to_string(value).map(|text| JsonText(text.into_boxed_str()))
    }

    /// `text` must be one JSON value, written by serde_json or joined from its output.
    pub(crate) fn trusted(text: String) -> JsonText {
        JsonText(text.into_boxed_str())
    }

    pub fn get(&self) -> &str {
        &self.0
    }

    /// The JSON list of `items`.
    pub fn list(items: &[JsonText]) -> JsonText {
        let mut text = String::with_capacity(items.iter().map(|i| i.0.len() + 1).sum::<usize>() + 2);
        text.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&item.0);
        }
        text.push(']');
        JsonText::trusted(text)
    }
}

/// Written as the JSON it holds; checked on the way (this path is for tests and tools, the
/// webhook writes patches with [`to_json`]).
impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawValue::from_string(self.0.to_string()).map_err(S::Error::custom)?.serialize(serializer)
    }
}

impl PartialEq for PatchOp {
    fn eq(&self, other: &PatchOp) -> bool {
        match (self, other) {
            (PatchOp::Add { path: a, value: x }, PatchOp::Add { path: b, value: y }) => a == b && x.get() == y.get(),
        }
    }
}

/// The patch as JSON text, written directly: each op's value is already JSON, and the fixed
/// parts need no serialiser (which would escape every key and the word `add` byte by byte, on
/// every admission). Equal to `serde_json::to_vec(ops)` byte for byte (tested).
pub fn to_json(ops: &[PatchOp]) -> Vec<u8> {
    let len: usize = ops.iter().map(|PatchOp::Add { path, value }| path.len() + value.get().len() + 40).sum();
    let mut out = Vec::with_capacity(len + 2);
    out.push(b'[');
    for (i, PatchOp::Add { path, value }) in ops.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"op":"add","path":"#);
        crate::json::push_json(&mut out, path.as_str());
        out.extend_from_slice(br#","value":"#);
        out.extend_from_slice(value.get().as_bytes());
        out.push(b'}');
    }
    out.push(b']');
    out
}

/// Appends `/token` with RFC 6901 escaping (`~` → `~0`, `/` → `~1`).
pub fn push_token(path: &mut String, token: &str) {
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_pointer_specials() {
        let mut path = String::from("/metadata/annotations");
        push_token(&mut path, "secrets/a~b");
        assert_eq!(path, "/metadata/annotations/secrets~1a~0b");
        let doc = json!({"metadata": {"annotations": {}}});
        let op = PatchOp::add(path, "x").unwrap();
        let patch: json_patch::Patch = serde_json::from_value(json!([op])).unwrap();
        let mut out = doc;
        json_patch::patch(&mut out, &patch).unwrap();
        assert_eq!(out["metadata"]["annotations"]["secrets/a~b"], "x");
    }

    #[test]
    fn the_hand_written_patch_is_what_serde_writes() {
        let ops = vec![
            PatchOp::add("/spec/volumes/-".into(), &json!({"name": "a\"b", "emptyDir": {}})).unwrap(),
            PatchOp::add("/metadata/annotations/secrets~1inj\"ected".into(), "mode=eso\n").unwrap(),
            PatchOp::add("/spec/containers/0/env".into(), &json!([{"name": "X_FILE", "value": "/v/x"}])).unwrap(),
        ];
        assert_eq!(String::from_utf8(to_json(&ops)).unwrap(), serde_json::to_string(&ops).unwrap());
        assert_eq!(to_json(&[]), b"[]");
    }

    #[test]
    fn prepared_json_is_written_as_it_is() {
        let items = [JsonText::of(&json!({"a": [1, "x"]})).unwrap(), JsonText::of("y\"z").unwrap()];
        let list = JsonText::list(&items);
        assert_eq!(list.get(), r#"[{"a":[1,"x"]},"y\"z"]"#);
        assert_eq!(JsonText::list(&[]).get(), "[]");
        let op = PatchOp::add_json("/a".into(), list);
        assert_eq!(
            String::from_utf8(to_json(std::slice::from_ref(&op))).unwrap(),
            serde_json::to_string(&[op]).unwrap()
        );
    }

    #[test]
    fn ops_serialise_in_rfc6902_form() {
        let ops = vec![PatchOp::add("/a/0".into(), &json!({"b": 1})).unwrap()];
        assert_eq!(serde_json::to_value(&ops).unwrap(), json!([{"op": "add", "path": "/a/0", "value": {"b": 1}}]));
    }
}
