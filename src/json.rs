//! Writing JSON on the request path (reading the pod: [`crate::json_ref`]). Everything here
//! writes exactly what serde_json writes, faster for strings: see [`escape`].

pub mod escape;
mod ser;

use serde::Serialize;

pub use escape::Sink;

/// Appends `value` as compact JSON.
pub fn write<T: Serialize + ?Sized, S: Sink>(out: &mut S, value: &T) -> Result<(), serde_json::Error> {
    value.serialize(&mut ser::Writer::new(out))
}

/// `value` as compact JSON text: `serde_json::to_string`, byte for byte.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = String::with_capacity(128);
    write(&mut out, value)?;
    Ok(out)
}

/// Appends `value` as JSON; serialising a string or a list of strings into a Vec cannot fail.
pub fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let len = out.len();
    if write(out, value).is_err() {
        out.truncate(len);
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests;
