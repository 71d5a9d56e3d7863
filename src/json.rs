//! Reading the pod's raw JSON, and writing JSON by hand, on the request path.

use serde_json::Value;

/// The value at `path` (object keys only), like [`Value::pointer`] without parsing and
/// unescaping a pointer string into fresh allocations on every call.
pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Appends `value` as JSON; serialising a string or a list of strings into a Vec cannot fail.
pub fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn follows_object_keys_only() {
        let v = json!({"a": {"b/c": [1], "d": null}});
        assert_eq!(at(&v, &["a", "b/c"]), Some(&json!([1])));
        assert_eq!(at(&v, &["a", "d"]), Some(&Value::Null));
        assert_eq!(at(&v, &["a", "x"]), None);
        assert_eq!(at(&v, &["a", "b/c", "0"]), None);
        assert_eq!(at(&v, &[]), Some(&v));
    }
}
