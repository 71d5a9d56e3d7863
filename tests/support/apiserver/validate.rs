//! The part of `ValidatePodCreate` (`pkg/apis/core/validation/validation.go`) that a mutating
//! webhook can break and a JSON schema cannot see: unique names, mounts that name a volume,
//! unique mount paths per container, what init containers may carry. The API server runs it
//! after admission; a failure is a 422 that blames the pod the user wrote. Shapes and types
//! are left to `kubernetes-validate --strict` (support::kubernetes_validate).

use std::collections::BTreeSet;

use serde_json::Value;

/// Every error found, as `field: message`.
pub fn pod(pod: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let spec = &pod["spec"];
    let list = |field: &str| spec[field].as_array().cloned().unwrap_or_default();
    let (init, containers, ephemeral, volumes) =
        (list("initContainers"), list("containers"), list("ephemeralContainers"), list("volumes"));
    if containers.is_empty() {
        errors.push("spec.containers: Required value".into());
    }

    let mut volume_names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let name = v["name"].as_str().unwrap_or_default();
        if !volume_names.insert(name) {
            errors.push(format!("spec.volumes[{i}].name: Duplicate value: {name:?}"));
        }
        let sources = v.as_object().map_or(0, |o| o.keys().filter(|k| *k != "name").count());
        if sources != 1 {
            errors.push(format!("spec.volumes[{i}]: must specify exactly one volume type, has {sources}"));
        }
    }

    let mut container_names = BTreeSet::new();
    for (field, entries) in
        [("initContainers", &init), ("containers", &containers), ("ephemeralContainers", &ephemeral)]
    {
        for (i, c) in entries.iter().enumerate() {
            let at = format!("spec.{field}[{i}]");
            let name = c["name"].as_str().unwrap_or_default();
            if !container_names.insert(name) {
                errors.push(format!("{at}.name: Duplicate value: {name:?}"));
            }
            let mut paths = BTreeSet::new();
            for (j, m) in c["volumeMounts"].as_array().into_iter().flatten().enumerate() {
                let volume = m["name"].as_str().unwrap_or_default();
                if !volume_names.contains(volume) {
                    errors.push(format!("{at}.volumeMounts[{j}].name: Not found: {volume:?}"));
                }
                let path = m["mountPath"].as_str().unwrap_or_default();
                if !paths.insert(path) {
                    errors.push(format!("{at}.volumeMounts[{j}].mountPath: Invalid value: {path:?}: must be unique"));
                }
            }
            let mut port_names = BTreeSet::new();
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                if let Some(port_name) = p["name"].as_str() {
                    if !port_names.insert(port_name) {
                        errors.push(format!("{at}.ports[{j}].name: Duplicate value: {port_name:?}"));
                    }
                }
            }
            let restart = c["restartPolicy"].as_str();
            match field {
                "initContainers" => match restart {
                    None => {
                        for forbidden in ["lifecycle", "livenessProbe", "readinessProbe", "startupProbe"] {
                            if !c[forbidden].is_null() {
                                errors.push(format!("{at}.{forbidden}: Forbidden: may not be set for init containers without restartPolicy=Always"));
                            }
                        }
                    }
                    Some("Always") => {}
                    Some(other) => errors.push(format!("{at}.restartPolicy: Unsupported value: {other:?}")),
                },
                _ => {
                    if let Some(other) = restart {
                        errors.push(format!(
                            "{at}.restartPolicy: Forbidden: may not be set for non-init containers ({other:?})"
                        ));
                    }
                }
            }
        }
    }
    errors
}
