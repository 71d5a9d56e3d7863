//! RFC 6902 JSON Patch by diffing two JSON documents.
//!
//! The webhook mutates a copy of the pod's raw JSON and diffs, so fields it does not know (a
//! newer cluster's) pass through untouched. The diff is linear in the document size: arrays
//! are compared by common prefix and suffix, which turns "insert one init container first" or
//! "append one env var to 1,500" into a single `add` instead of a cascade of `replace`s.

use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOp {
    Add { path: String, value: Value },
    Remove { path: String },
    Replace { path: String, value: Value },
}

/// The operations that turn `from` into `to`.
pub fn diff(from: &Value, to: &Value) -> Vec<PatchOp> {
    let mut ops = Vec::new();
    let mut path = String::new();
    diff_into(from, to, &mut path, &mut ops);
    ops
}

fn diff_into(from: &Value, to: &Value, path: &mut String, ops: &mut Vec<PatchOp>) {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, old) in a {
                let len = push_token(path, key);
                match b.get(key) {
                    None => ops.push(PatchOp::Remove { path: path.clone() }),
                    Some(new) if new != old => diff_into(old, new, path, ops),
                    Some(_) => {}
                }
                path.truncate(len);
            }
            for (key, new) in b {
                if !a.contains_key(key) {
                    let len = push_token(path, key);
                    ops.push(PatchOp::Add { path: path.clone(), value: new.clone() });
                    path.truncate(len);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => diff_arrays(a, b, path, ops),
        _ if from == to => {}
        _ => ops.push(PatchOp::Replace { path: path.clone(), value: to.clone() }),
    }
}

fn diff_arrays(a: &[Value], b: &[Value], path: &mut String, ops: &mut Vec<PatchOp>) {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let max_suffix = a.len().min(b.len()) - prefix;
    let suffix = a.iter().rev().zip(b.iter().rev()).take(max_suffix).take_while(|(x, y)| x == y).count();
    let old_mid = &a[prefix..a.len() - suffix];
    let new_mid = &b[prefix..b.len() - suffix];
    let common = old_mid.len().min(new_mid.len());
    for i in 0..common {
        let len = push_index(path, prefix + i);
        diff_into(&old_mid[i], &new_mid[i], path, ops);
        path.truncate(len);
    }
    for (i, value) in new_mid.iter().enumerate().skip(common) {
        let len = push_index(path, prefix + i);
        ops.push(PatchOp::Add { path: path.clone(), value: value.clone() });
        path.truncate(len);
    }
    for _ in common..old_mid.len() {
        let len = push_index(path, prefix + common);
        ops.push(PatchOp::Remove { path: path.clone() });
        path.truncate(len);
    }
}

/// Appends `/token` with RFC 6901 escaping (`~` → `~0`, `/` → `~1`); returns the old length.
fn push_token(path: &mut String, token: &str) -> usize {
    let len = path.len();
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
    len
}

fn push_index(path: &mut String, index: usize) -> usize {
    let len = path.len();
    path.push('/');
    path.push_str(&index.to_string());
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(doc: &Value, ops: &[PatchOp]) -> Value {
        let patch: json_patch::Patch = serde_json::from_value(serde_json::to_value(ops).unwrap()).unwrap();
        let mut out = doc.clone();
        json_patch::patch(&mut out, &patch).unwrap();
        out
    }

    #[test]
    fn creates_missing_parents() {
        let a = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        let b = json!({"metadata": {"name": "p", "annotations": {"secrets/injected": "x"}}, "spec": {"containers": [{"name": "c"}], "volumes": [{"name": "v"}]}});
        let ops = diff(&a, &b);
        assert_eq!(ops.len(), 2);
        assert_eq!(
            ops[0],
            PatchOp::Add { path: "/metadata/annotations".into(), value: json!({"secrets/injected": "x"}) }
        );
        assert_eq!(apply(&a, &ops), b);
    }

    #[test]
    fn escapes_pointer_specials() {
        let a = json!({"m": {}});
        let b = json!({"m": {"a/b~c": 1}});
        let ops = diff(&a, &b);
        assert_eq!(ops, vec![PatchOp::Add { path: "/m/a~1b~0c".into(), value: json!(1) }]);
        assert_eq!(apply(&a, &ops), b);
    }

    #[test]
    fn insert_first_is_one_add() {
        let a = json!([{"name": "a"}, {"name": "b"}]);
        let b = json!([{"name": "s"}, {"name": "a"}, {"name": "b"}]);
        let ops = diff(&a, &b);
        assert_eq!(ops, vec![PatchOp::Add { path: "/0".into(), value: json!({"name": "s"}) }]);
    }

    #[test]
    fn append_to_long_array_is_one_add() {
        let a: Value = (0..1500).map(|i| json!({"name": format!("E{i}"), "value": "v"})).collect();
        let mut b = a.clone();
        b.as_array_mut().unwrap().push(json!({"name": "X", "value": "y"}));
        let ops = diff(&a, &b);
        assert_eq!(ops.len(), 1);
        assert_eq!(apply(&a, &ops), b);
    }

    #[test]
    fn removals_and_type_changes_apply() {
        let cases = [
            (json!([1, 2, 3, 4]), json!([1, 4])),
            (json!([1, 2]), json!([3, 1, 2, 5])),
            (json!({"a": 1, "b": [1]}), json!({"b": {"c": 1}})),
            (json!(null), json!({"a": 1})),
            (json!([]), json!([[]])),
        ];
        for (a, b) in cases {
            assert_eq!(apply(&a, &diff(&a, &b)), b, "{a} -> {b}");
        }
    }

    #[test]
    fn equal_documents_give_no_ops() {
        let a = json!({"a": [1, {"b": 2}]});
        assert!(diff(&a, &a.clone()).is_empty());
    }
}
