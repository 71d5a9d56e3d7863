//! Turning a provider's answer into file content, rejecting malformed answers.
//!
//! Error messages here describe the shape of the answer (missing key, wrong type, empty)
//! and never quote it: serde's own messages would (`invalid type: string "hunter2"`).

use serde_json::{Map, Value};

/// The value of `key` in a KV map: strings as-is; numbers and booleans as their JSON text
/// (a port or a flag stored unquoted is still usable); anything else is a wrong type.
pub fn from_map(map: &Map<String, Value>, key: &str) -> Result<Vec<u8>, String> {
    let value = map.get(key).ok_or_else(|| {
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        keys.sort_unstable();
        format!(
            "key `{key}` not found (keys present: {})",
            if keys.is_empty() { "none".into() } else { keys.join(", ") }
        )
    })?;
    let bytes = match value {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Number(n) => n.to_string().into_bytes(),
        Value::Bool(b) => b.to_string().into_bytes(),
        other => return Err(format!("key `{key}` holds {}, expected a string", type_name(other))),
    };
    non_empty(bytes).map_err(|e| format!("key `{key}`: {e}"))
}

/// Parses a whole secret string as a JSON object (for `secret-id#key` items).
pub fn parse_object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("secret is {}, expected a JSON object to take a key from", type_name(&other))),
        Err(e) => Err(format!("secret is not valid JSON (line {}, column {})", e.line(), e.column())),
    }
}

pub fn non_empty(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("value is empty".into());
    }
    Ok(bytes)
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn extracts_and_rejects_without_quoting_values() {
        let m =
            map(json!({"password": "hunter2", "port": 5432, "nested": {"x": "hunter2"}, "blank": " ", "nil": null}));
        assert_eq!(from_map(&m, "password").unwrap(), b"hunter2");
        assert_eq!(from_map(&m, "port").unwrap(), b"5432");
        for key in ["nested", "blank", "nil", "missing"] {
            let e = from_map(&m, key).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains(key), "{e}");
        }
        assert!(from_map(&m, "missing").unwrap_err().contains("keys present: blank, nested, nil, password, port"));
    }

    #[test]
    fn parse_errors_do_not_quote_the_text() {
        for text in ["{\"a\": hunter2}", "\"hunter2\"", "[\"hunter2\"]", "hunter2"] {
            let e = parse_object(text).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(parse_object("{\"a\":\"b\"}").is_ok());
    }
}
