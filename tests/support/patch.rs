//! The one JSON Patch applier of the tests, with the semantics the API server applies a
//! webhook's patch with (fact 10): `gopkg.in/evanphx/json-patch.v4`, `DecodePatch` then
//! `Apply`, library defaults.
//!
//! The `json-patch` crate does the work; it already agrees with v4 on everything the webhook
//! relies on (an `add` under a missing parent fails, an index up to the array's length
//! inserts, `-` appends, `~1`/`~0` are decoded, an `add` to an existing key replaces it; the
//! emulator's tests check each). v4 is more lenient in two places, which are mapped here
//! before the crate sees the path: array indices are read with Go's `strconv.Atoi` (so `01`
//! and `+1` are index 1), and negative indices count from the end (`SupportNegativeIndices`
//! defaults to true: `-1` is the last element, and for `add` the end).

use base64::Engine;
use serde_json::Value;

/// Applies RFC 6902 `ops` (a JSON array) to `doc` as the API server would.
pub fn apply(doc: &Value, ops: &Value) -> Result<Value, String> {
    let list = ops.as_array().ok_or_else(|| format!("a JSON patch is an array of operations, not {ops}"))?;
    let mut out = doc.clone();
    for (i, op) in list.iter().enumerate() {
        let mut op = op.clone();
        let kind = op["op"].as_str().unwrap_or_default().to_string();
        for field in ["path", "from"] {
            if let Some(path) = op.get(field).and_then(Value::as_str) {
                let mapped = v4_path(&out, path, kind == "add" && field == "path")?;
                op[field] = Value::String(mapped);
            }
        }
        let one: json_patch::Patch = serde_json::from_value(Value::Array(vec![op.clone()]))
            .map_err(|e| format!("operation {i} is not RFC 6902 ({e}): {op}"))?;
        json_patch::patch(&mut out, &one).map_err(|e| format!("operation {i} does not apply ({e}): {op}"))?;
    }
    Ok(out)
}

/// `path` with each array index token rewritten to the index evanphx v4 would use in `doc`.
fn v4_path(doc: &Value, path: &str, is_add: bool) -> Result<String, String> {
    if path.is_empty() {
        return Ok(String::new());
    }
    let tokens: Vec<&str> =
        path.strip_prefix('/').ok_or_else(|| format!("path {path:?} does not start with /"))?.split('/').collect();
    let mut here = Some(doc);
    let mut out = String::new();
    for (i, token) in tokens.iter().enumerate() {
        let last = i + 1 == tokens.len();
        let mut written = token.to_string();
        if let Some(Value::Array(items)) = here {
            if let Some(index) = go_atoi(token) {
                // The slot count an `add` inserts into is one more than the length.
                let len = items.len() as i64 + i64::from(last && is_add);
                let resolved = if index < 0 { index + len } else { index };
                if resolved < 0 {
                    return Err(format!("unable to access invalid index: {index}"));
                }
                written = resolved.to_string();
            }
        }
        here = match here {
            Some(Value::Object(m)) => m.get(&unescape(token)),
            Some(Value::Array(a)) => written.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        out.push('/');
        out.push_str(&written);
    }
    Ok(out)
}

/// `strconv.Atoi`: optional sign, decimal digits, nothing else.
fn go_atoi(token: &str) -> Option<i64> {
    let digits = token.strip_prefix(['+', '-']).unwrap_or(token);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 18 {
        return None;
    }
    token.parse().ok()
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The decoded patch of an AdmissionReview response, checked as `VerifyAdmissionResponse`
/// pairs `patch` and `patchType`: `None` when there is none.
pub fn from_response(response: &Value) -> Result<Option<Value>, String> {
    let r = &response["response"];
    match (r.get("patch"), r.get("patchType")) {
        (None, None) => Ok(None),
        (Some(patch), Some(kind)) => {
            if kind != "JSONPatch" {
                return Err(format!("unsupported patch type {kind}"));
            }
            let text = patch.as_str().ok_or("response.patch is not a base64 string")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("response.patch is not base64: {e}"))?;
            serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("response.patch is not JSON: {e}"))
        }
        (Some(_), None) => Err("webhook returned response.patch but not response.patchType".into()),
        (None, Some(_)) => Err("webhook returned response.patchType but not response.patch".into()),
    }
}

/// The request's object with the response's patch applied; panics with the reason when the
/// answer carries a malformed patch (for tests that only want the patched pod).
pub fn patched(review: &Value, response: &Value) -> Value {
    let object = &review["request"]["object"];
    match from_response(response) {
        Ok(Some(ops)) => apply(object, &ops).unwrap_or_else(|e| panic!("{e}")),
        Ok(None) => object.clone(),
        Err(e) => panic!("{e}: {response}"),
    }
}

/// Applies the ops of a decision (anything serialising to an RFC 6902 array, such as
/// `secretmode::decide::patch::PatchOp`s) to `doc`; panics with the reason if they do not apply.
pub fn apply_ops<T: serde::Serialize + ?Sized>(doc: &Value, ops: &T) -> Value {
    let ops = serde_json::to_value(ops).unwrap_or_else(|e| panic!("patch ops do not serialise: {e}"));
    apply(doc, &ops).unwrap_or_else(|e| panic!("{e}"))
}
