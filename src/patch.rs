//! RFC 6902 JSON Patch operations and RFC 6901 pointer tokens.
//!
//! The injector emits its ops directly (see `inject`): every op is an `add` at a position it
//! read from the pod, so nothing in the pod is rewritten and the patch stays minimal without
//! cloning and diffing the whole pod on every admission.

use serde::Serialize;
use serde_json::value::RawValue;

/// The webhook only ever adds: it never removes or rewrites what the pod already has. Values
/// are kept as JSON text, serialised once when the op is made.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    Add { path: String, value: Box<RawValue> },
}

impl PatchOp {
    pub fn add<T: Serialize + ?Sized>(path: String, value: &T) -> Result<PatchOp, serde_json::Error> {
        Ok(PatchOp::Add { path, value: serde_json::value::to_raw_value(value)? })
    }

    pub fn path(&self) -> &str {
        match self {
            PatchOp::Add { path, .. } => path,
        }
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
    fn ops_serialise_in_rfc6902_form() {
        let ops = vec![PatchOp::add("/a/0".into(), &json!({"b": 1})).unwrap()];
        assert_eq!(serde_json::to_value(&ops).unwrap(), json!([{"op": "add", "path": "/a/0", "value": {"b": 1}}]));
    }
}
