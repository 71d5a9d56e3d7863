//! The pod as the webhook's decision reads it: the parts `decide::decide` looks at,
//! built as a [`JsonRef`] tree that borrows its strings from the request body, and everything
//! else only validated and skipped.
//!
//! Building the whole pod as a `serde_json::Value` (one allocation per string, one B-tree per
//! object, all dropped again) is a large part of a review's cost, spent on fields the decision
//! never reads (image, command, probes, resources, labels, owner references, tolerations,
//! `managedFields`); hand-written because that was measured to matter (docs/BENCHMARKS.md).
//! The kept parts are whole subtrees, so every reader sees exactly what a full parse would
//! give it, and anything of an unexpected type is kept whole too (the readers' own errors stay
//! the same).
//!
//! One reader needs whole objects: a `secretmode-` container or volume already in the pod is
//! compared in full with what the injection would write. When one is present the pod is
//! parsed whole instead; that only happens on reinvocation or a re-sent pod. The same goes
//! for a pod that asks for env values (an annotation `*/env-values: "true"`): outside mode
//! eso its containers' `command` is wrapped, and only those pods pay for reading it.
//!
//! Skipped fields are checked for JSON syntax only, as `oldObject` and `userInfo` always were:
//! an unpaired UTF-16 surrogate escape in one (which kube-apiserver never writes) is not an
//! error.
//!
//! Whoever makes the decision read a new field adds it here; `tests/properties.rs` and the
//! fuzz targets check that decisions on this view and on the whole pod are the same.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Number;

use crate::json::tree::{JsonRef, ObjectRef};
use crate::vocabulary::names::{is_reserved, NAMED_SPEC_LISTS};

/// The pod as the decision reads it: deserialise it where the pod is (the AdmissionReview's
/// `request.object`), then ask [`PodView::into_json`] for the tree.
#[derive(Debug)]
pub struct PodView<'a>(JsonRef<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for PodView<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PodView<'a>, D::Error> {
        Shape::Pod.deserialize(deserializer).map(PodView)
    }
}

impl<'a> PodView<'a> {
    /// The pod's decision-relevant parts, or `None` when the decision needs the whole pod (a
    /// `secretmode-` entry is present): parse it whole then.
    pub fn into_json(self) -> Option<JsonRef<'a>> {
        (!has_reserved_entry(&self.0) && !asks_for_env_values(&self.0)).then_some(self.0)
    }
}

/// Whether an annotation `<any prefix>/env-values` is `"true"` (the prefix is the config's,
/// which the view does not know; another prefix only costs a whole parse).
fn asks_for_env_values(pod: &JsonRef<'_>) -> bool {
    pod.at(&["metadata", "annotations"])
        .and_then(JsonRef::as_object)
        .is_some_and(|a| a.iter().any(|(k, v)| k.ends_with(ENV_VALUES_SUFFIX) && v.as_str() == Some("true")))
}

/// `/` and [`keys::ENV_VALUES`].
const ENV_VALUES_SUFFIX: &str = "/env-values";

/// Whether the pod has a volume, container or init container with a reserved `secretmode-`
/// name (which the decision compares in full).
fn has_reserved_entry(pod: &JsonRef<'_>) -> bool {
    let Some(spec) = pod.get("spec") else { return false };
    NAMED_SPEC_LISTS.into_iter().any(|field| {
        JsonRef::entries(spec.get(field))
            .iter()
            .any(|e| e.get("name").and_then(JsonRef::as_str).is_some_and(is_reserved))
    })
}

/// A whole JSON value, every field kept, strings borrowed where they have no escapes.
impl<'de: 'a, 'a> Deserialize<'de> for JsonRef<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonRef<'a>, D::Error> {
        Shape::Whole.deserialize(deserializer)
    }
}

/// Parses the pod JSON `text` for the decision, whole when it must be; see the module docs.
pub fn parse(text: &str) -> serde_json::Result<JsonRef<'_>> {
    match serde_json::from_str::<PodView>(text)?.into_json() {
        Some(view) => Ok(view),
        None => serde_json::from_str(text),
    }
}

/// Which part of the pod a JSON value is, and so which of its fields are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Kept whole.
    Whole,
    Pod,
    Metadata,
    Spec,
    /// `containers` or `initContainers`: a list of [`Shape::Container`].
    Containers,
    Container,
    Volumes,
    Volume,
    /// Of the pod or a container: only the user and group settings are read.
    SecurityContext,
    /// Only node affinity is read (whether the pod is pinned off Linux nodes).
    Affinity,
}

impl Shape {
    /// The shape of field `key` of an object of this shape; `None`: not read, skipped. An
    /// object where a list or a scalar was expected is kept whole.
    fn field(self, key: &str) -> Option<Shape> {
        match (self, key) {
            (Shape::Whole | Shape::Containers | Shape::Volumes, _) => Some(Shape::Whole),
            (Shape::Pod, "metadata") => Some(Shape::Metadata),
            (Shape::Pod, "spec") => Some(Shape::Spec),
            (Shape::Metadata, "namespace" | "annotations") => Some(Shape::Whole),
            (Shape::Spec, "containers" | "initContainers") => Some(Shape::Containers),
            (Shape::Spec, "volumes") => Some(Shape::Volumes),
            (Shape::Spec | Shape::Container, "securityContext") => Some(Shape::SecurityContext),
            (Shape::Spec, "os" | "hostNetwork" | "shareProcessNamespace" | "serviceAccountName" | "nodeSelector") => {
                Some(Shape::Whole)
            }
            (Shape::Spec, "affinity") => Some(Shape::Affinity),
            (Shape::Affinity, "nodeAffinity") => Some(Shape::Whole),
            (Shape::Container, "name" | "ports" | "volumeMounts" | "env") => Some(Shape::Whole),
            (Shape::SecurityContext, "runAsUser" | "runAsGroup" | "runAsNonRoot" | "fsGroup") => Some(Shape::Whole),
            (Shape::Volume, "name" | "csi") => Some(Shape::Whole),
            _ => None,
        }
    }

    /// The shape of the entries of a list of this shape; a list where an object was expected
    /// is kept whole.
    fn entry(self) -> Shape {
        match self {
            Shape::Containers => Shape::Container,
            Shape::Volumes => Shape::Volume,
            _ => Shape::Whole,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Shape {
    type Value = JsonRef<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<JsonRef<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Scalars become the values a full parse gives (numbers by the same constructors as
/// `serde_json::Value`'s).
impl<'de> Visitor<'de> for Shape {
    type Value = JsonRef<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<JsonRef<'de>, E> {
        Ok(JsonRef::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<JsonRef<'de>, E> {
        Ok(JsonRef::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<JsonRef<'de>, E> {
        Ok(JsonRef::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<JsonRef<'de>, E> {
        Ok(Number::from_f64(v).map_or(JsonRef::Null, JsonRef::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<JsonRef<'de>, E> {
        Ok(JsonRef::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<JsonRef<'de>, E> {
        Ok(JsonRef::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<JsonRef<'de>, E> {
        Ok(JsonRef::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<JsonRef<'de>, E> {
        Ok(JsonRef::Null)
    }

    fn visit_none<E>(self) -> Result<JsonRef<'de>, E> {
        Ok(JsonRef::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<JsonRef<'de>, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonRef<'de>, A::Error> {
        let entry = self.entry();
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(value) = seq.next_element_seed(entry)? {
            list.push(value);
        }
        Ok(JsonRef::Array(list))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonRef<'de>, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            match self.field(&key) {
                Some(shape) => {
                    let value = map.next_value_seed(shape)?;
                    entries.push((key, value));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(JsonRef::Object(ObjectRef::from_entries(entries)))
    }
}

/// An object key, borrowed from the input when it has no escapes: skipped fields cost no
/// allocation.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::names::keys;
    use serde_json::{json, Value};

    /// The view of `v`'s text, as a `Value` to compare.
    fn view(v: &Value) -> Value {
        serde_json::to_value(parse(&v.to_string()).unwrap()).unwrap()
    }

    #[test]
    fn a_pod_asking_for_env_values_is_read_whole() {
        assert_eq!(ENV_VALUES_SUFFIX, ["/", keys::ENV_VALUES].concat());
        let pod = |value: &str| {
            json!({"metadata": {"annotations": {"secrets.acme.io/env-values": value}},
                   "spec": {"containers": [{"name": "app", "command": ["/app"], "image": "x"}]}})
        };
        assert_eq!(view(&pod("true")), pod("true"));
        let partial = view(&pod("false"));
        assert_eq!(partial["spec"]["containers"][0].get("command"), None);
    }

    #[test]
    fn keeps_what_the_decision_reads_and_drops_the_rest() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}, "managedFields": [{"manager": "x"}],
                         "annotations": {"secrets/mode": "init"}},
            "spec": {
                "serviceAccountName": "sa", "hostNetwork": false, "os": {"name": "linux"},
                "securityContext": {"runAsGroup": 5, "seccompProfile": {"type": "RuntimeDefault"}},
                "tolerations": [{"key": "k"}],
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}},
                             "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]}},
                "containers": [{"name": "app", "image": "nginx", "args": ["a"], "ports": [{"containerPort": 80}],
                                "env": [{"name": "A", "value": "1"}], "volumeMounts": [],
                                "securityContext": {"runAsUser": 1, "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}},
                                "resources": {"limits": {"cpu": "1"}}}],
                "volumes": [{"name": "v", "csi": {"driver": "d"}, "emptyDir": {}}]
            }
        });
        assert_eq!(
            view(&pod),
            json!({
                "metadata": {"namespace": "ns", "annotations": {"secrets/mode": "init"}},
                "spec": {
                    "serviceAccountName": "sa", "hostNetwork": false, "os": {"name": "linux"},
                    "securityContext": {"runAsGroup": 5},
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}},
                    "containers": [{"name": "app", "ports": [{"containerPort": 80}],
                                    "env": [{"name": "A", "value": "1"}], "volumeMounts": [],
                                    "securityContext": {"runAsUser": 1, "runAsNonRoot": true}}],
                    "volumes": [{"name": "v", "csi": {"driver": "d"}}]
                }
            })
        );
    }

    #[test]
    fn decisions_that_read_security_contexts_are_the_same_on_the_view() {
        let config = crate::config::Config::builtin().unwrap();
        let contexts = [
            json!(null),
            json!({}),
            json!({"runAsNonRoot": true}),
            json!({"runAsUser": 1000, "capabilities": {"drop": ["ALL"]}}),
            json!({"runAsUser": 1000, "runAsGroup": 2000}),
            json!({"runAsNonRoot": true, "fsGroup": 3000, "seccompProfile": {"type": "RuntimeDefault"}}),
            json!({"runAsGroup": 0, "runAsUser": 0}),
            json!("not an object"),
        ];
        for mode in ["eso", "init", "sidecar"] {
            for pod_sc in &contexts {
                for container_sc in &contexts {
                    let pod = json!({
                        "metadata": {"annotations": {"secrets/mode": mode, "secrets/item.a": if mode == "eso" { "a" } else { "x/y#z" },
                                                     "secrets/eso-secret": "s"}},
                        "spec": {"securityContext": pod_sc, "containers": [{"name": "app", "securityContext": container_sc}]}
                    });
                    let full = crate::decide::admit_pod(&pod, "ns", &config);
                    let text = pod.to_string();
                    assert_eq!(crate::decide::decide(&parse(&text).unwrap(), "ns", &config), full, "{pod}");
                }
            }
        }
    }

    #[test]
    fn decisions_that_read_the_platform_are_the_same_on_the_view() {
        let config = crate::config::Config::builtin().unwrap();
        let term = |key: &str, op: &str, values: Value| json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]});
        let placements = [
            json!({}),
            json!({"os": {"name": "windows"}}),
            json!({"nodeSelector": {"kubernetes.io/os": "windows"}}),
            json!({"nodeSelector": {"beta.kubernetes.io/os": "windows", "disk": "ssd"}}),
            json!({"nodeSelector": "not an object"}),
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term("kubernetes.io/os", "In", json!(["windows"]))]}}}}),
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term("kubernetes.io/os", "In", json!(["windows"])), term("zone", "In", json!(["a"]))]}}}}),
            json!({"affinity": {"podAffinity": {"x": 1}, "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term("kubernetes.io/os", "NotIn", json!(["linux"]))]}}}}),
            json!({"affinity": []}),
        ];
        for placement in placements {
            let mut pod = json!({"metadata": {"annotations": {"secrets/mode": "init", "secrets/item.a": "x/y#z"}},
                                 "spec": {"containers": [{"name": "app"}]}});
            for (k, v) in placement.as_object().unwrap() {
                pod["spec"][k] = v.clone();
            }
            let full = crate::decide::admit_pod(&pod, "ns", &config);
            assert_eq!(crate::decide::decide(&parse(&pod.to_string()).unwrap(), "ns", &config), full, "{pod}");
        }
    }

    #[test]
    fn unexpected_types_are_kept_whole() {
        for pod in [
            json!("a string"),
            json!([{"metadata": {"labels": {}}}]),
            json!({"spec": null, "metadata": 3}),
            json!({"spec": {"containers": {"name": "app", "image": "x"}, "volumes": "v"}}),
            json!({"spec": {"containers": ["app", 1.5, null, [{"image": "x"}]], "initContainers": [true]}}),
            json!({"metadata": {"annotations": null}, "spec": {"containers": [{"name": 7, "env": {"x": [1]}}]}}),
        ] {
            assert_eq!(view(&pod), pod, "{pod}");
        }
    }

    #[test]
    fn a_reserved_entry_means_the_whole_pod() {
        for (list, entry) in [
            ("containers", json!({"name": "secretmode-sidecar", "image": "x", "args": ["agent"]})),
            ("initContainers", json!({"name": "secretmode-init", "image": "x"})),
            ("volumes", json!({"name": "secretmode-secrets", "emptyDir": {"medium": "Memory"}})),
        ] {
            let mut pod =
                json!({"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "app", "image": "x"}]}});
            pod["spec"][list].as_array_mut().map(|l| l.push(entry.clone())).unwrap_or_else(|| {
                pod["spec"][list] = json!([entry]);
            });
            assert_eq!(view(&pod), pod, "{list}");
        }
    }

    #[test]
    fn invalid_json_is_still_an_error() {
        for text in ["", "{", r#"{"spec": {"containers": [}"#, r#"{"a": 1} x"#, r#"{"labels": [1,]}"#, r#"{"x": "\q"}"#]
        {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn duplicate_keys_resolve_as_a_full_parse_does() {
        let text = r#"{"metadata": {"namespace": "a", "namespace": "b"}, "spec": {"containers": [{"name": "x", "name": "y"}]}}"#;
        let full: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parse(text).unwrap(), full);
        assert_eq!(parse(text).unwrap().at(&["metadata", "namespace"]).and_then(JsonRef::as_str), Some("b"));
    }
}
