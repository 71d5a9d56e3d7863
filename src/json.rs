//! Writing JSON by hand on the request path (reading the pod: [`crate::json_ref`]).

/// Appends `value` as JSON; serialising a string or a list of strings into a Vec cannot fail.
pub fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}
