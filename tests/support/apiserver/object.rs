//! A Pod as the API server holds it between steps: decoded non-strictly into the typed v1 Pod,
//! written back as Go's `encoding/json` writes it, compared as `equality.Semantic.DeepEqual`
//! compares it.
//!
//! - **Decode** (fact 11; `apimachinery/pkg/runtime/serializer/json`, non-strict): through
//!   k8s-openapi's `Pod` (v1.33 types). Unknown fields are dropped silently; a wrong type is
//!   an error (the API server's 500 after a patch). Quantities are parsed and written back in
//!   canonical form, as `resource.Quantity` does on every decode (`quantity.rs`).
//! - **Encode**: what Go writes that serde does not, and the reverse: `omitempty` drops empty
//!   lists and maps and the zero values of non-pointer fields; struct fields are always written
//!   (`metadata.creationTimestamp: null`, `status: {}`, every container's `resources: {}`).
//! - **Semantic equality**: quantities by value, otherwise equal JSON (nil and empty lists
//!   are both absent after encoding, as Semantic.DeepEqual treats them alike).

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value};

use super::quantity;

/// Decodes `json` as the API server decodes a v1 Pod (see the module header); the result is
/// in Go's encoding.
pub fn decode(json: &Value) -> Result<Value, String> {
    let mut input = json.clone();
    for_each_quantity(&mut input, &mut |q| {
        // Go reads a bare JSON number as a quantity too.
        if let Value::Number(n) = q {
            *q = Value::String(n.to_string());
        }
        Ok(())
    })?;
    let typed: Pod = serde_json::from_value(input).map_err(|e| format!("decoding the Pod: {e}"))?;
    let mut out = serde_json::to_value(&typed).map_err(|e| format!("encoding the Pod: {e}"))?;
    for_each_quantity(&mut out, &mut |q| {
        let text = q.as_str().unwrap_or_default();
        let canonical = quantity::canonical(text)
            .ok_or_else(|| format!("quantities must match the regular expression: {text:?}"))?;
        *q = Value::String(canonical);
        Ok(())
    })?;
    go_encoding(&mut out);
    Ok(out)
}

/// Every quantity-typed field of a Pod the emulator handles: container (init, ephemeral)
/// resources, pod-level resources and overhead, emptyDir sizeLimit, ephemeral volume claims.
pub fn for_each_quantity(pod: &mut Value, f: &mut dyn FnMut(&mut Value) -> Result<(), String>) -> Result<(), String> {
    fn list(map: Option<&mut Value>, f: &mut dyn FnMut(&mut Value) -> Result<(), String>) -> Result<(), String> {
        if let Some(Value::Object(m)) = map {
            for v in m.values_mut() {
                f(v)?;
            }
        }
        Ok(())
    }
    fn requirements(r: Option<&mut Value>, f: &mut dyn FnMut(&mut Value) -> Result<(), String>) -> Result<(), String> {
        if let Some(r) = r {
            list(r.get_mut("limits"), f)?;
            list(r.get_mut("requests"), f)?;
        }
        Ok(())
    }
    let Some(spec) = pod.get_mut("spec") else { return Ok(()) };
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(field) {
            for c in cs {
                requirements(c.get_mut("resources"), f)?;
            }
        }
    }
    requirements(spec.get_mut("resources"), f)?;
    list(spec.get_mut("overhead"), f)?;
    if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
        for v in volumes {
            if let Some(limit) = v.pointer_mut("/emptyDir/sizeLimit") {
                f(limit)?;
            }
            requirements(v.pointer_mut("/ephemeral/volumeClaimTemplate/spec/resources"), f)?;
        }
    }
    Ok(())
}

/// Lists that Go writes even when empty (no `omitempty`).
const KEEP_EMPTY_LISTS: [&str; 3] = ["containers", "sources", "nodeSelectorTerms"];
/// Fields of Go map type (`omitempty` drops them when empty). Every other `{}` is a struct
/// behind a pointer, and is written.
const MAP_FIELDS: [&str; 9] = [
    "labels",
    "annotations",
    "nodeSelector",
    "limits",
    "requests",
    "overhead",
    "volumeAttributes",
    "options",
    "matchLabels",
];

/// Go's encoding of the typed Pod (module header).
pub fn go_encoding(pod: &mut Value) {
    drop_empty(pod, "");
    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("creationTimestamp").or_insert(Value::Null);
    }
    if let Some(obj) = pod.as_object_mut() {
        obj.entry("status").or_insert_with(|| Value::Object(Map::new()));
        let spec = obj.entry("spec").or_insert_with(|| Value::Object(Map::new()));
        drop_zero_values(spec);
        for field in ["containers", "initContainers", "ephemeralContainers"] {
            if let Some(Value::Array(cs)) = spec.get_mut(field) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.entry("resources").or_insert_with(|| Value::Object(Map::new()));
                }
            }
        }
    }
}

fn drop_empty(v: &mut Value, key: &str) {
    match v {
        Value::Object(m) => {
            if key == "fieldsV1" {
                return; // raw JSON inside managedFields: kept exactly
            }
            for (k, child) in m.iter_mut() {
                drop_empty(child, k);
            }
            m.retain(|k, child| match child {
                Value::Null => k == "creationTimestamp",
                Value::Array(a) => !a.is_empty() || KEEP_EMPTY_LISTS.contains(&k.as_str()),
                Value::Object(o) => !o.is_empty() || !MAP_FIELDS.contains(&k.as_str()),
                _ => true,
            });
        }
        Value::Array(a) => a.iter_mut().for_each(|c| drop_empty(c, "")),
        _ => {}
    }
}

/// Zero values of the commonest non-pointer `omitempty` fields of the pod spec (Go omits
/// them; serde keeps a `false` or `""` that was written). Pointer fields (`*bool` such as
/// `securityContext.privileged` or `csi.readOnly`) keep their zero values, as in Go.
fn drop_zero_values(spec: &mut Value) {
    fn strip(obj: &mut Value, fields: &[&str]) {
        if let Some(m) = obj.as_object_mut() {
            m.retain(|k, v| {
                !(fields.contains(&k.as_str())
                    && (v == &Value::Bool(false) || v == &Value::from(0) || v == &Value::from("")))
            });
        }
    }
    strip(spec, &["hostNetwork", "hostPID", "hostIPC", "nodeName", "hostname", "subdomain", "priorityClassName"]);
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(Value::Array(cs)) = spec.get_mut(field) else { continue };
        for c in cs {
            strip(c, &["stdin", "stdinOnce", "tty", "workingDir"]);
            for (list, fields) in [
                ("volumeMounts", &["readOnly", "subPath", "subPathExpr"][..]),
                ("ports", &["hostPort", "hostIP", "name"][..]),
                ("env", &["value"][..]),
            ] {
                if let Some(Value::Array(items)) = c.get_mut(list) {
                    items.iter_mut().for_each(|i| strip(i, fields));
                }
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(p) = c.get_mut(probe) {
                    strip(p, &["initialDelaySeconds"]);
                    if let Some(get) = p.get_mut("httpGet") {
                        strip(get, &["host"]);
                    }
                }
            }
        }
    }
}

/// Keys whose values are quantities (inside resource lists, or `sizeLimit`).
fn is_quantity_map(key: &str) -> bool {
    matches!(key, "limits" | "requests" | "overhead")
}

/// `equality.Semantic.DeepEqual` on two encoded Pods.
pub fn semantic_eq(a: &Value, b: &Value) -> bool {
    eq(a, b, "")
}

fn eq(a: &Value, b: &Value, key: &str) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, xv)| {
                    y.get(k).is_some_and(|yv| {
                        if is_quantity_map(key) || k == "sizeLimit" {
                            match (xv.as_str(), yv.as_str()) {
                                (Some(p), Some(q)) => quantity::same_value(p, q),
                                _ => xv == yv,
                            }
                        } else {
                            eq(xv, yv, k)
                        }
                    })
                })
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| eq(p, q, key)),
        _ => a == b,
    }
}

/// The fields of `raw` that decoding dropped: unknown to the v1 Pod, so a real API server
/// throws them away without a word. Empty and zero values are not counted (Go omits those
/// anyway). Lists are compared entry by entry (decoding keeps their order and length).
pub fn dropped(raw: &Value, decoded: &Value) -> Vec<String> {
    let mut out = Vec::new();
    dropped_at(raw, decoded, "", &mut out);
    out
}

fn dropped_at(raw: &Value, decoded: &Value, at: &str, out: &mut Vec<String>) {
    match (raw, decoded) {
        (Value::Object(r), Value::Object(d)) => {
            if at.ends_with("/fieldsV1") {
                return;
            }
            for (k, rv) in r {
                let path = format!("{at}/{k}");
                match d.get(k) {
                    Some(dv) => dropped_at(rv, dv, &path, out),
                    None if is_empty(rv) => {}
                    None => out.push(path),
                }
            }
        }
        (Value::Array(r), Value::Array(d)) => {
            for (i, (rv, dv)) in r.iter().zip(d).enumerate() {
                dropped_at(rv, dv, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}
