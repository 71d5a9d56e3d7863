//! Pods and containers for tests that need a plain one; anything the API server would add is
//! left to it (support::apiserver).

use serde_json::{json, Value};

/// A Pod named `name` in `namespace` with `annotations` and `spec`.
pub fn pod(name: &str, namespace: &str, annotations: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
           "spec": spec})
}

/// A pod spec with one container `name` running `image`.
pub fn spec(name: &str, image: &str) -> Value {
    json!({"containers": [{"name": name, "image": image}]})
}

/// The pod a workload's template describes, named and namespaced as the workload.
pub fn of_template(workload: &Value) -> Value {
    let template = &workload["spec"]["template"];
    let mut metadata = template["metadata"].clone();
    metadata["name"] = workload["metadata"]["name"].clone();
    metadata["namespace"] = workload["metadata"]["namespace"].clone();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}
