//! The v1 Pod defaults the API server applies on every decode, before any admission plugin and
//! again after every webhook patch (fact 3): `pkg/apis/core/v1/defaults.go` through the
//! generated `SetObjectDefaults_Pod` (`zz_generated.defaults.go`).
//!
//! Covered: `SetDefaults_Pod` (requests copied from limits, `enableServiceLinks`, hostNetwork
//! host ports), `SetDefaults_PodSpec` (dnsPolicy, restartPolicy, securityContext,
//! terminationGracePeriodSeconds, schedulerName), volumes (empty source → emptyDir; secret,
//! configMap, downwardAPI, projected `defaultMode: 420`; token projection
//! `expirationSeconds: 3600`; fieldRef apiVersion; hostPath type), containers of all three
//! kinds (imagePullPolicy by the tag rule, terminationMessagePath/Policy, port protocol, env
//! fieldRef apiVersion, probes' four timing fields and httpGet path/scheme, lifecycle httpGet,
//! grpc service), and `SetDefaults_ResourceList` (quantities rounded up to milli scale).
//! Not covered: the deprecated in-tree storage drivers' defaults (iscsi, rbd, azureDisk,
//! scaleIO) and pod-level resources (a feature gate off in 1.33).

use serde_json::{json, Map, Value};

use super::object;
use super::quantity::Quantity;

/// `SetObjectDefaults_Pod` on an encoded Pod.
pub fn pod(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    // SetDefaults_Pod: requests default to limits, per container, before the lists are defaulted.
    for field in ["containers", "initContainers"] {
        for c in list_mut(spec, field) {
            let Some(limits) = c.pointer("/resources/limits").and_then(Value::as_object).cloned() else { continue };
            let resources = c.as_object_mut().and_then(|c| c.get_mut("resources")).and_then(Value::as_object_mut);
            if let Some(resources) = resources {
                let requests = resources.entry("requests").or_insert_with(|| json!({}));
                if let Some(requests) = requests.as_object_mut() {
                    for (k, v) in limits {
                        requests.entry(k).or_insert(v);
                    }
                }
            }
        }
    }
    spec.entry("enableServiceLinks").or_insert(json!(true));
    if spec.get("hostNetwork") == Some(&json!(true)) {
        for field in ["containers", "initContainers"] {
            for c in list_mut(spec, field) {
                for p in c.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                    let container_port = p.get("containerPort").cloned().unwrap_or(json!(0));
                    if let Some(p) = p.as_object_mut() {
                        if p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                            p.insert("hostPort".into(), container_port);
                        }
                    }
                }
            }
        }
    }
    // SetDefaults_PodSpec.
    set_if_empty(spec, "dnsPolicy", json!("ClusterFirst"));
    set_if_empty(spec, "restartPolicy", json!("Always"));
    spec.entry("securityContext").or_insert_with(|| json!({}));
    spec.entry("terminationGracePeriodSeconds").or_insert(json!(30));
    set_if_empty(spec, "schedulerName", json!("default-scheduler"));

    for v in list_mut(spec, "volumes") {
        volume(v);
    }
    for field in ["initContainers", "containers", "ephemeralContainers"] {
        for c in list_mut(spec, field) {
            container(c);
        }
    }
    if let Some(overhead) = spec.get_mut("overhead") {
        resource_list(overhead);
    }
    object::go_encoding(pod);
}

fn list_mut<'a>(spec: &'a mut Map<String, Value>, field: &str) -> impl Iterator<Item = &'a mut Value> {
    spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten()
}

fn set_if_empty(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if obj.get(key).is_none_or(|v| v == "" || v.is_null()) {
        obj.insert(key.into(), value);
    }
}

const VOLUME_SOURCES: [&str; 30] = [
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn volume(v: &mut Value) {
    let Some(vol) = v.as_object_mut() else { return };
    // SetDefaults_Volume: a volume with no source is an emptyDir.
    if !VOLUME_SOURCES.iter().any(|s| vol.contains_key(*s)) {
        vol.insert("emptyDir".into(), json!({}));
    }
    if let Some(Value::Object(host)) = vol.get_mut("hostPath") {
        host.entry("type").or_insert(json!(""));
    }
    for (source, mode) in [("secret", 420), ("configMap", 420), ("downwardAPI", 420), ("projected", 420)] {
        if let Some(Value::Object(s)) = vol.get_mut(source) {
            s.entry("defaultMode").or_insert(json!(mode));
        }
    }
    if let Some(items) = vol.get_mut("downwardAPI").and_then(|d| d.get_mut("items")).and_then(Value::as_array_mut) {
        items.iter_mut().for_each(field_ref);
    }
    if let Some(sources) = vol.get_mut("projected").and_then(|p| p.get_mut("sources")).and_then(Value::as_array_mut) {
        for s in sources {
            if let Some(items) = s.pointer_mut("/downwardAPI/items").and_then(Value::as_array_mut) {
                items.iter_mut().for_each(field_ref);
            }
            if let Some(Value::Object(token)) = s.get_mut("serviceAccountToken") {
                token.entry("expirationSeconds").or_insert(json!(3600));
            }
        }
    }
    if let Some(Value::Object(claim)) = vol.get_mut("ephemeral").and_then(|e| e.get_mut("volumeClaimTemplate")) {
        if let Some(Value::Object(spec)) = claim.get_mut("spec") {
            spec.entry("volumeMode").or_insert(json!("Filesystem"));
            if let Some(r) = spec.get_mut("resources") {
                for list in ["limits", "requests"] {
                    if let Some(l) = r.get_mut(list) {
                        resource_list(l);
                    }
                }
            }
        }
    }
}

/// `SetDefaults_ObjectFieldSelector` on an item holding a `fieldRef`.
fn field_ref(item: &mut Value) {
    if let Some(Value::Object(f)) = item.get_mut("fieldRef") {
        set_if_empty(f, "apiVersion", json!("v1"));
    }
}

fn container(c: &mut Value) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(obj) = c.as_object_mut() else { return };
    // SetDefaults_Container.
    if obj.get("imagePullPolicy").is_none_or(|p| p == "") {
        let policy = if image_tag(&image).as_deref() == Some("latest") { "Always" } else { "IfNotPresent" };
        obj.insert("imagePullPolicy".into(), json!(policy));
    }
    set_if_empty(obj, "terminationMessagePath", json!("/dev/termination-log"));
    set_if_empty(obj, "terminationMessagePolicy", json!("File"));
    for p in obj.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(p) = p.as_object_mut() {
            set_if_empty(p, "protocol", json!("TCP"));
        }
    }
    for e in obj.get_mut("env").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(from) = e.get_mut("valueFrom") {
            field_ref(from);
        }
    }
    if let Some(r) = obj.get_mut("resources") {
        for list in ["limits", "requests"] {
            if let Some(l) = r.get_mut(list) {
                resource_list(l);
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = obj.get_mut(probe) {
            for (field, default) in
                [("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)]
            {
                if p.get(field).and_then(Value::as_i64).unwrap_or(0) == 0 {
                    p.insert(field.into(), json!(default));
                }
            }
            http_get(p.get_mut("httpGet"));
            if let Some(Value::Object(grpc)) = p.get_mut("grpc") {
                grpc.entry("service").or_insert(json!(""));
            }
        }
    }
    if let Some(Value::Object(lifecycle)) = obj.get_mut("lifecycle") {
        for hook in ["postStart", "preStop"] {
            http_get(lifecycle.get_mut(hook).and_then(|h| h.get_mut("httpGet")));
        }
    }
}

/// `SetDefaults_HTTPGetAction`.
fn http_get(get: Option<&mut Value>) {
    if let Some(Value::Object(get)) = get {
        set_if_empty(get, "path", json!("/"));
        set_if_empty(get, "scheme", json!("HTTP"));
    }
}

/// `SetDefaults_ResourceList`: every quantity rounded up to milli scale.
fn resource_list(list: &mut Value) {
    if let Some(m) = list.as_object_mut() {
        for v in m.values_mut() {
            if let Some(mut q) = v.as_str().and_then(Quantity::parse) {
                q.round_up(-3);
                *v = json!(q.canonical());
            }
        }
    }
}

/// The tag `parsers.ParseImageName` finds: `latest` when neither a tag nor a digest is given,
/// `None` for a digest-only reference.
pub fn image_tag(image: &str) -> Option<String> {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => Some(tag.to_string()),
        None if digest.is_some() => None,
        None => Some("latest".into()),
    }
}
