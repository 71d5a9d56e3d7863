//! What secretmode owns in an object it injects, and whether an object already in the pod
//! still holds it.
//!
//! The webhook meets its own injection again on reinvocation (`reinvocationPolicy: IfNeeded`),
//! and then the API server and other webhooks have added to it: the ServiceAccount plugin's
//! `kube-api-access-*` mount, LimitRange requests and limits, `imagePullPolicy: Always`, env
//! and mounts of a mesh or cloud-identity webhook, v1 defaults. So a reserved object is judged
//! on what secretmode owns in it, and additions are accepted:
//!
//! - owned, compared modulo API-server defaults and canonical quantities: image, command,
//!   args, ports, probes, restart policy, lifecycle, the security context, our env vars and
//!   mounts (by name; every entry of that name), the resources we set, a volume's source;
//! - accepted: other env vars and mounts anywhere in the lists (a mount may not overlap ours),
//!   requests and limits we do not set, any `imagePullPolicy`, termination message settings,
//!   and fields we never write that cannot change what the agent runs (`envFrom`,
//!   `workingDir`, ...), because everything that decides what the agent does is owned;
//! - a field we own but do not write (a probe, a lifecycle hook or `restartPolicy` on the init
//!   agent) is owned as absent: adding one is a change;
//! - extra security settings only where they cannot widen privilege
//!   ([`narrowing_security_setting`]).
//!
//! A [`Difference`] names the field, never a value that could be a secret (there are none in
//! what we inject; the agent spec is compared field by field and only the field is named).

use std::fmt;

use serde_json::Value;

use crate::json::tree::JsonRef;
use crate::vocabulary::paths::{clean_path, paths_overlap, EXEC_PATH, SPEC_ENV};
use crate::vocabulary::quantity;

/// The first field of a reserved object that is not what this injection writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// Path inside the object: `image`, `securityContext.capabilities`, `env[NAME].value`.
    pub field: String,
    pub kind: DiffKind,
    /// Safe detail: config-derived values or agent-spec field names, never an env value.
    pub detail: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffKind {
    Differs,
    Missing,
    Added,
    /// An added mount at or around one of ours.
    Overlaps,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            DiffKind::Differs => "differs",
            DiffKind::Missing => "is missing",
            DiffKind::Added => "was added",
            DiffKind::Overlaps => "overlaps",
        };
        write!(f, "field {} {what}", self.field)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl Difference {
    /// This difference, found inside `parent`: `parent.field`, `parent[0].field`, or `parent`
    /// itself for a difference in the whole value. Paths are built only for a difference,
    /// from the inside out, so a match (every admission after the first round) builds none.
    pub fn under(mut self, parent: &str) -> Difference {
        self.field = match self.field.as_str() {
            "" => parent.to_string(),
            field if parent.is_empty() || field.starts_with('[') => [parent, field].concat(),
            field => [parent, ".", field].concat(),
        };
        self
    }
}

fn diff(kind: DiffKind, field: impl Into<String>) -> Difference {
    Difference { field: field.into(), kind, detail: None }
}

type Judged = Result<(), Difference>;

/// Container fields we own even when we do not write them: adding one changes what the
/// agent runs or how it is run.
const OWNED_WHEN_ABSENT: [&str; 10] = [
    "image",
    "command",
    "args",
    "ports",
    "startupProbe",
    "livenessProbe",
    "readinessProbe",
    "restartPolicy",
    "lifecycle",
    "securityContext",
];

/// The injected agent container (`wanted`, as we write it) against the one in the pod.
pub fn agent_container(existing: &JsonRef<'_>, wanted: &Value) -> Judged {
    let (Some(e), Value::Object(w)) = (existing.as_object(), wanted) else {
        return Err(diff(DiffKind::Differs, "(the entry is not an object)"));
    };
    for (key, wv) in w {
        let ev = e.get(key).filter(|v| !absent(v));
        match key.as_str() {
            // AlwaysPullImages sets Always; none of the three changes what runs.
            "imagePullPolicy" => {
                if ev.is_some_and(|v| !matches!(v.as_str(), Some("Always" | "IfNotPresent" | "Never"))) {
                    return Err(diff(DiffKind::Differs, key));
                }
            }
            "env" => by_name(ev, wv, "env", env_var)?,
            "volumeMounts" => agent_mounts(ev, wv)?,
            "resources" => resources(ev, wv)?,
            "securityContext" => security_context(ev, wv)?,
            _ => match ev {
                None => return Err(diff(DiffKind::Missing, key)),
                Some(ev) => exact(ev, wv, key).map_err(|d| with_values(d.under(key), key, ev, wv))?,
            },
        }
    }
    for (key, ev) in e.iter() {
        if !w.contains_key(key) && !absent(ev) && OWNED_WHEN_ABSENT.contains(&key) {
            return Err(diff(DiffKind::Added, key));
        }
    }
    Ok(())
}

/// An injected volume: name and source, exactly (modulo defaults).
pub fn volume(existing: &JsonRef<'_>, wanted: &Value) -> Judged {
    exact(existing, wanted, "").map_err(|d| match d.field.as_str() {
        "" => Difference { field: "(the whole entry)".into(), ..d },
        _ => d,
    })
}

/// One of our env vars, already found by name. The field is named inside the entry (`value`);
/// [`Difference::under`] places it.
pub fn env_var(existing: &JsonRef<'_>, wanted: &Value) -> Judged {
    exact(existing, wanted, "").map_err(|mut d| {
        if wanted.get("name").and_then(Value::as_str) == Some(SPEC_ENV) {
            d.detail = spec_field(existing, wanted).map(|f| format!("agent spec field {f}"));
        }
        d
    })
}

/// One of our mounts, already found by name: path (cleaned) and readOnly must match; no
/// `subPath` (a subPath mount never sees rotation). The field is named inside the entry.
pub fn mount(existing: &JsonRef<'_>, wanted: &Value) -> Judged {
    let (Some(e), Value::Object(w)) = (existing.as_object(), wanted) else {
        return Err(diff(DiffKind::Differs, ""));
    };
    let existing_path = e.get("mountPath").and_then(JsonRef::as_str).map(clean_path);
    if existing_path != w.get("mountPath").and_then(Value::as_str).map(clean_path) {
        return Err(diff(DiffKind::Differs, "mountPath"));
    }
    let read_only = w.get("readOnly").and_then(Value::as_bool).unwrap_or(false);
    if e.get("readOnly").and_then(JsonRef::as_bool).unwrap_or(false) != read_only {
        return Err(diff(DiffKind::Differs, "readOnly"));
    }
    for (key, ev) in e.iter() {
        if matches!(key, "name" | "mountPath" | "readOnly") || absent(ev) || ev.as_str() == Some("") {
            continue;
        }
        if !is_default(key, ev) {
            return Err(diff(DiffKind::Added, key));
        }
    }
    Ok(())
}

/// Whether an app container's command is already wrapped by `secretmode-exec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrapped {
    /// `[EXEC_PATH, "--env", <these stems>, "--", <command>...]`.
    Yes,
    /// Not wrapped: its first word is not the wrapper.
    No,
}

/// An app container's `command` against the wrapper this injection writes (`stems`: the
/// `--env` list). What secretmode owns in it is the prefix up to `--`; a wrapper with other
/// stems, or a prefix of another shape, is a difference (the stems are env var names, never
/// values, so the detail may show them).
pub fn wrapped_command(command: &[JsonRef<'_>], stems: &str) -> Result<Wrapped, Difference> {
    if command.first().and_then(JsonRef::as_str) != Some(EXEC_PATH) {
        return Ok(Wrapped::No);
    }
    let word = |i: usize| command.get(i).and_then(JsonRef::as_str);
    if word(1) != Some("--env") || word(3) != Some("--") || command.len() < 5 {
        return Err(Difference {
            field: "command".into(),
            kind: DiffKind::Differs,
            detail: Some(format!("this webhook writes [{EXEC_PATH:?}, \"--env\", {stems:?}, \"--\", <command>...]")),
        });
    }
    match word(2) {
        Some(existing) if existing == stems => Ok(Wrapped::Yes),
        existing => Err(Difference {
            field: "command[2]".into(),
            kind: DiffKind::Differs,
            detail: Some(format!(
                "the wrapper's --env list is {:?}, this webhook wraps {stems:?}",
                existing.map(|e| e.chars().take(200).collect::<String>()).unwrap_or_default()
            )),
        }),
    }
}

/// Our entries of a named list (env, volumeMounts): each must be there, and every entry of
/// that name must be ours (the kubelet uses the last env var of a name).
fn by_name(
    existing: Option<&JsonRef<'_>>,
    wanted: &Value,
    field: &str,
    judge: fn(&JsonRef<'_>, &Value) -> Judged,
) -> Judged {
    for w in wanted.as_array().map(Vec::as_slice).unwrap_or_default() {
        let name = w.get("name").and_then(Value::as_str).unwrap_or_default();
        let at = || format!("{field}[{name}]");
        let mut found = false;
        for e in JsonRef::entries(existing).iter().filter(|e| e.get("name").and_then(JsonRef::as_str) == Some(name)) {
            judge(e, w).map_err(|d| d.under(&at()))?;
            found = true;
        }
        if !found {
            return Err(diff(DiffKind::Missing, at()));
        }
    }
    Ok(())
}

/// The agent's mounts: ours by name, and no added mount at or around one of ours (the API
/// server rejects a duplicate mountPath; a mount inside ours hides what the agent writes).
fn agent_mounts(existing: Option<&JsonRef<'_>>, wanted: &Value) -> Judged {
    by_name(existing, wanted, "volumeMounts", mount)?;
    let ours = wanted.as_array().map(Vec::as_slice).unwrap_or_default();
    for e in JsonRef::entries(existing) {
        let name = e.get("name").and_then(JsonRef::as_str).unwrap_or_default();
        if ours.iter().any(|w| name_of(w) == name) {
            continue;
        }
        let path = e.get("mountPath").and_then(JsonRef::as_str).unwrap_or_default();
        if let Some(w) =
            ours.iter().find(|w| w.get("mountPath").and_then(Value::as_str).is_some_and(|p| paths_overlap(p, path)))
        {
            return Err(Difference {
                field: format!("volumeMounts[{name}]"),
                kind: DiffKind::Overlaps,
                detail: Some(format!(
                    "it is mounted at {path:?}, secretmode mounts {} at {}",
                    name_of(w),
                    w.get("mountPath").and_then(Value::as_str).unwrap_or_default()
                )),
            });
        }
    }
    Ok(())
}

fn name_of(entry: &Value) -> &str {
    entry.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// The quantities we set must be there with the same value; requests and limits we do not
/// set (a LimitRange's, or requests copied from limits) are accepted.
fn resources(existing: Option<&JsonRef<'_>>, wanted: &Value) -> Judged {
    let Value::Object(classes) = wanted else { return Ok(()) };
    for (class, amounts) in classes {
        let Value::Object(amounts) = amounts else { continue };
        for (resource, w) in amounts {
            let e = existing.and_then(|e| e.get(class)).and_then(|c| c.get(resource)).and_then(JsonRef::as_str);
            let same = match (e, w.as_str()) {
                (Some(e), Some(w)) => quantity::same(e, w),
                _ => false,
            };
            if !same {
                return Err(Difference {
                    field: format!("resources.{class}.{resource}"),
                    kind: if e.is_none() { DiffKind::Missing } else { DiffKind::Differs },
                    detail: w.as_str().map(|w| format!("this webhook sets {w}")),
                });
            }
        }
    }
    Ok(())
}

/// Our settings exactly; extra ones only where they cannot widen privilege.
fn security_context(existing: Option<&JsonRef<'_>>, wanted: &Value) -> Judged {
    let (Some(e), Value::Object(w)) = (existing.and_then(JsonRef::as_object), wanted) else {
        return Err(diff(DiffKind::Missing, "securityContext"));
    };
    for (key, wv) in w {
        match e.get(key).filter(|v| !absent(v)) {
            None => return Err(diff(DiffKind::Missing, ["securityContext.", key].concat())),
            Some(ev) => exact(ev, wv, key).map_err(|d| d.under(&["securityContext.", key].concat()))?,
        }
    }
    for (key, ev) in e.iter() {
        if !w.contains_key(key) && !absent(ev) && !narrowing_security_setting(key, ev) {
            return Err(diff(DiffKind::Added, format!("securityContext.{key}")));
        }
    }
    Ok(())
}

/// SELinux types Pod Security *baseline* and *restricted* allow.
const SELINUX_TYPES: [&str; 4] = ["container_t", "container_init_t", "container_kvm_t", "container_engine_t"];

/// Security settings another admission step may add to the agent: the API server's default
/// `procMount`, the runtime's default AppArmor profile, and an SELinux level or a type the
/// Pod Security Standards allow. Everything else (capabilities added, `Unmasked`, an
/// `Unconfined` or `Localhost` profile, an SELinux user or role) could widen privilege.
pub fn narrowing_security_setting(key: &str, value: &JsonRef<'_>) -> bool {
    match key {
        "procMount" => value.as_str() == Some("Default"),
        "appArmorProfile" => value
            .as_object()
            .is_some_and(|o| o.len() == 1 && o.get("type").and_then(JsonRef::as_str) == Some("RuntimeDefault")),
        "seLinuxOptions" => value.as_object().is_some_and(|o| {
            o.iter().all(|(k, v)| match k {
                "level" => v.as_str().is_some(),
                "type" => v.as_str().is_some_and(|t| t.is_empty() || SELINUX_TYPES.contains(&t)),
                _ => absent(v) || v.as_str() == Some(""),
            })
        }),
        _ => false,
    }
}

/// Fields the API server fills in on objects like ours, with the value it writes
/// (`pkg/apis/core/v1/defaults.go`): probe timings, HTTP scheme, port protocol, the file mode
/// of projected volumes, token lifetime, and mount settings left at their meaning of "unset".
fn is_default(key: &str, value: &JsonRef<'_>) -> bool {
    match key {
        "timeoutSeconds" | "successThreshold" => value.as_u64() == Some(1),
        "periodSeconds" => value.as_u64() == Some(10),
        "failureThreshold" => value.as_u64() == Some(3),
        "scheme" => value.as_str() == Some("HTTP"),
        "protocol" => value.as_str() == Some("TCP"),
        "defaultMode" => value.as_u64() == Some(0o644),
        "expirationSeconds" => value.as_u64() == Some(3600),
        "mountPropagation" => value.as_str() == Some("None"),
        "recursiveReadOnly" => value.as_str() == Some("Disabled"),
        _ => false,
    }
}

/// `null`, `[]` and `{}` mean "not set" once the API server has decoded and re-encoded the
/// pod (its types omit empty values).
fn absent(value: &JsonRef<'_>) -> bool {
    match value {
        JsonRef::Null => true,
        JsonRef::Array(a) => a.is_empty(),
        JsonRef::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Whether `existing` is `wanted` plus only API-server defaults; quantities compare by value.
/// `key` is the field holding the two (quantities are read by it). A difference is named
/// relative to them, `""` for the whole value ([`Difference::under`]).
fn exact(existing: &JsonRef<'_>, wanted: &Value, key: &str) -> Judged {
    match (existing, wanted) {
        (JsonRef::Object(e), Value::Object(w)) => {
            for (k, wv) in w {
                match e.get(k).filter(|v| !absent(v)) {
                    None => return Err(diff(DiffKind::Missing, k.as_str())),
                    Some(ev) if matches!(key, "requests" | "limits") || k == "sizeLimit" => {
                        if !matches!((ev.as_str(), wv.as_str()), (Some(a), Some(b)) if quantity::same(a, b)) {
                            return Err(diff(DiffKind::Differs, k.as_str()));
                        }
                    }
                    Some(ev) => exact(ev, wv, k).map_err(|d| d.under(k))?,
                }
            }
            match e.iter().find(|(k, v)| !w.contains_key(*k) && !absent(v) && !is_default(k, v)) {
                Some((k, _)) => Err(diff(DiffKind::Added, k)),
                None => Ok(()),
            }
        }
        (JsonRef::Array(e), Value::Array(w)) if e.len() == w.len() => {
            for (i, (ev, wv)) in e.iter().zip(w).enumerate() {
                // A list of objects names the entry that differs; a list of strings (command,
                // args, capabilities) is one field.
                exact(ev, wv, key).map_err(|d| if wv.is_object() { d.under(&format!("[{i}]")) } else { d })?;
            }
            Ok(())
        }
        _ if existing == wanted => Ok(()),
        _ => Err(diff(DiffKind::Differs, "")),
    }
}

/// For the image, both values: the one thing an upgrade changes that a person recognises.
/// Config text only; the pod's value is quoted, so control characters show as escapes.
fn with_values(mut d: Difference, key: &str, existing: &JsonRef<'_>, wanted: &Value) -> Difference {
    if key == "image" {
        if let (Some(e), Some(w)) = (existing.as_str(), wanted.as_str()) {
            let e: String = e.chars().take(200).collect();
            d.detail = Some(format!("the pod has {e:?}, this webhook injects {w:?}"));
        }
    }
    d
}

/// The first agent-spec field (a dotted path) on which two spec env vars differ. Names only:
/// the spec holds references, but a person reading a denial needs the field, not the text.
fn spec_field(existing: &JsonRef<'_>, wanted: &Value) -> Option<String> {
    let parse = |v: Option<&str>| v.and_then(|t| serde_json::from_str::<Value>(t).ok());
    let e = parse(existing.get("value").and_then(JsonRef::as_str))?;
    let w = parse(wanted.get("value").and_then(Value::as_str))?;
    fn first(e: &Value, w: &Value, at: &str) -> Option<String> {
        let join = |k: &str| if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
        match (e, w) {
            (Value::Object(e), Value::Object(w)) => {
                let keys = w.keys().chain(e.keys().filter(|k| !w.contains_key(*k)));
                keys.into_iter().find_map(|k| match (e.get(k), w.get(k)) {
                    (Some(a), Some(b)) => first(a, b, &join(k)),
                    _ => Some(join(k)),
                })
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                a.iter().zip(b).enumerate().find_map(|(i, (x, y))| first(x, y, &format!("{at}[{i}]")))
            }
            _ if e == w => None,
            _ => Some(if at.is_empty() { "(the whole spec)".to_string() } else { at.to_string() }),
        }
    }
    first(&e, &w, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn judge(existing: Value, wanted: Value) -> Judged {
        agent_container(&JsonRef::from(&existing), &wanted)
    }

    fn agent() -> Value {
        json!({
            "name": "secretmode-init", "image": "registry/secretmode:1", "imagePullPolicy": "IfNotPresent",
            "command": ["/secretmode"], "args": ["agent", "--once"],
            "env": [{"name": SPEC_ENV, "value": r#"{"provider":{"address":"http://vault:8200","role":"a"},"items":[]}"#}],
            "volumeMounts": [{"name": "secretmode-secrets", "mountPath": "/var/run/secrets-cache"},
                             {"name": "secretmode-token", "mountPath": "/var/run/secrets/secretmode/token", "readOnly": true}],
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                "allowPrivilegeEscalation": false, "privileged": false, "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
            "resources": {"limits": {"memory": "32Mi"}, "requests": {"cpu": "10m", "memory": "16Mi"}}
        })
    }

    #[test]
    fn additions_from_the_api_server_and_other_webhooks_are_accepted() {
        let mut e = agent();
        e["imagePullPolicy"] = json!("Always");
        e["terminationMessagePath"] = json!("/dev/termination-log");
        e["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
        e["env"].as_array_mut().unwrap().push(json!({"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::1:role/x"}));
        e["volumeMounts"].as_array_mut().unwrap().push(json!({"name": "kube-api-access-x7k2p", "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}));
        e["resources"] = json!({"limits": {"memory": "33554432", "cpu": "500m", "ephemeral-storage": "1Gi"},
                               "requests": {"cpu": "0.01", "memory": "16Mi", "ephemeral-storage": "512Mi"}});
        e["securityContext"]["procMount"] = json!("Default");
        e["securityContext"]["seLinuxOptions"] = json!({"level": "s0:c123,c456"});
        e["envFrom"] = json!([{"configMapRef": {"name": "proxy"}}]);
        e["lifecycle"] = json!(null);
        e["volumeMounts"][0]["mountPath"] = json!("/var/run//secrets-cache/");
        assert_eq!(judge(e, agent()), Ok(()));
    }

    #[test]
    fn every_owned_field_changed_is_named() {
        type Change = fn(&mut Value);
        let cases: [(Change, &str); 16] = [
            (|e| e["image"] = json!("attacker/agent:latest"), "image"),
            (|e| e["command"] = json!(["/bin/sh"]), "command"),
            (|e| e["args"] = json!(["agent"]), "args"),
            (|e| e["imagePullPolicy"] = json!("Sometimes"), "imagePullPolicy"),
            (
                |e| e["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN"]),
                "securityContext.capabilities.add",
            ),
            (|e| e["securityContext"]["privileged"] = json!(true), "securityContext.privileged"),
            (|e| e["securityContext"]["procMount"] = json!("Unmasked"), "securityContext.procMount"),
            (|e| e["securityContext"]["runAsUser"] = json!(0), "securityContext.runAsUser"),
            (|e| e["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"}), "securityContext.seLinuxOptions"),
            (
                |e| e["env"][0]["value"] = json!(r#"{"provider":{"address":"http://evil","role":"a"},"items":[]}"#),
                "env[SECRETMODE_AGENT_SPEC].value",
            ),
            (
                |e| e["env"].as_array_mut().unwrap().push(json!({"name": SPEC_ENV, "value": "{}"})),
                "env[SECRETMODE_AGENT_SPEC].value",
            ),
            (|e| e["volumeMounts"][1]["readOnly"] = json!(false), "volumeMounts[secretmode-token].readOnly"),
            (|e| e["volumeMounts"][0]["subPath"] = json!("x"), "volumeMounts[secretmode-secrets].subPath"),
            (|e| e["resources"]["limits"]["memory"] = json!("1Gi"), "resources.limits.memory"),
            (|e| e["readinessProbe"] = json!({"exec": {"command": ["sh"]}}), "readinessProbe"),
            (|e| e["lifecycle"] = json!({"postStart": {"exec": {"command": ["sh", "-c", "curl evil"]}}}), "lifecycle"),
        ];
        for (change, field) in cases {
            let mut e = agent();
            change(&mut e);
            let d = judge(e, agent()).expect_err(field);
            assert_eq!(d.field, field, "{d}");
        }
        let mut e = agent();
        e["env"][0]["value"] = json!(r#"{"provider":{"address":"http://evil","role":"a"},"items":[]}"#);
        let d = judge(e, agent()).unwrap_err();
        assert_eq!(d.detail.as_deref(), Some("agent spec field provider.address"), "{d}");
        assert!(!d.to_string().contains("evil"), "{d}");
        let mut e = agent();
        e["image"] = json!("registry/secretmode:0.9");
        let d = judge(e, agent()).unwrap_err().to_string();
        assert!(d.contains(r#""registry/secretmode:0.9""#) && d.contains(r#""registry/secretmode:1""#), "{d}");
    }

    #[test]
    fn a_mount_added_at_or_inside_ours_is_named() {
        for path in ["/var/run/secrets-cache", "/var/run/secrets-cache/x", "/var/run/./secrets-cache/"] {
            let mut e = agent();
            e["volumeMounts"].as_array_mut().unwrap().push(json!({"name": "mesh", "mountPath": path}));
            let d = judge(e, agent()).unwrap_err();
            assert_eq!((d.field.as_str(), d.kind), ("volumeMounts[mesh]", DiffKind::Overlaps), "{path}: {d}");
        }
        let mut e = agent();
        e["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "mesh", "mountPath": "/var/run/secrets-cache-2"}));
        assert_eq!(judge(e, agent()), Ok(()));
    }

    #[test]
    fn volumes_compare_their_source_modulo_defaults() {
        let wanted = json!({"name": "secretmode-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "vault", "expirationSeconds": 600, "path": "token"}}]}});
        let mut e = wanted.clone();
        e["projected"]["defaultMode"] = json!(420);
        assert_eq!(volume(&JsonRef::from(&e), &wanted), Ok(()));
        e["projected"]["sources"][0]["serviceAccountToken"]["audience"] = json!("other");
        assert_eq!(
            volume(&JsonRef::from(&e), &wanted).unwrap_err().field,
            "projected.sources[0].serviceAccountToken.audience"
        );
        let dir = json!({"name": "secretmode-secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}});
        let e = json!({"name": "secretmode-secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "1024Ki"}});
        assert_eq!(volume(&JsonRef::from(&e), &dir), Ok(()));
        let e = json!({"name": "secretmode-secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}, "hostPath": {"path": "/"}});
        assert_eq!(volume(&JsonRef::from(&e), &dir).unwrap_err().field, "hostPath");
        let e = json!({"name": "secretmode-secrets", "emptyDir": {"sizeLimit": "1Mi"}});
        assert_eq!(volume(&JsonRef::from(&e), &dir).unwrap_err().field, "emptyDir.medium");
        assert_eq!(volume(&JsonRef::from(&json!("x")), &dir).unwrap_err().field, "(the whole entry)");
        let e = json!({"name": "secretmode-secrets", "emptyDir": []});
        assert_eq!(volume(&JsonRef::from(&e), &dir).unwrap_err().field, "emptyDir");
    }

    #[test]
    fn a_difference_is_named_from_the_outside_in() {
        let mut wanted = agent();
        wanted["ports"] = json!([{"name": "secretmode", "containerPort": 8099}]);
        let cases = [
            (json!([{"name": "secretmode", "containerPort": 1}]), "ports[0].containerPort", DiffKind::Differs),
            (
                json!([{"name": "secretmode", "containerPort": 8099, "hostPort": 1}]),
                "ports[0].hostPort",
                DiffKind::Added,
            ),
            (json!([{"containerPort": 8099}]), "ports[0].name", DiffKind::Missing),
            (json!(["x"]), "ports[0]", DiffKind::Differs),
            (json!([]), "ports", DiffKind::Missing),
        ];
        for (ports, field, kind) in cases {
            let mut e = wanted.clone();
            e["ports"] = ports;
            let d = judge(e, wanted.clone()).unwrap_err();
            assert_eq!((d.field.as_str(), d.kind), (field, kind), "{d}");
        }
        let d = diff(DiffKind::Differs, "").under("a").under("[1]").under("b");
        assert_eq!(d.field, "b[1].a");
    }

    #[test]
    fn a_wrapped_command_is_recognised_and_a_foreign_wrapper_is_named() {
        let check = |v: Value| {
            let r = JsonRef::from(&v);
            wrapped_command(r.as_array().unwrap(), "A,B")
        };
        assert_eq!(check(json!(["/app", "--serve"])), Ok(Wrapped::No));
        assert_eq!(check(json!([EXEC_PATH, "--env", "A,B", "--", "/app"])), Ok(Wrapped::Yes));
        let d = check(json!([EXEC_PATH, "--env", "A", "--", "/app"])).unwrap_err();
        assert_eq!(d.field, "command[2]");
        assert!(d.to_string().contains("\"A\"") && d.to_string().contains("\"A,B\""), "{d}");
        for bad in [json!([EXEC_PATH]), json!([EXEC_PATH, "--env", "A,B", "--"]), json!([EXEC_PATH, "/app"])] {
            assert_eq!(check(bad.clone()).unwrap_err().field, "command", "{bad}");
        }
    }

    #[test]
    fn only_narrowing_security_settings_may_be_added() {
        let ok = [
            ("procMount", json!("Default")),
            ("appArmorProfile", json!({"type": "RuntimeDefault"})),
            ("seLinuxOptions", json!({"level": "s0:c1,c2", "type": "container_t"})),
        ];
        for (k, v) in ok {
            assert!(narrowing_security_setting(k, &JsonRef::from(&v)), "{k}: {v}");
        }
        let bad = [
            ("procMount", json!("Unmasked")),
            ("appArmorProfile", json!({"type": "Unconfined"})),
            ("appArmorProfile", json!({"type": "Localhost", "localhostProfile": "x"})),
            ("seLinuxOptions", json!({"user": "system_u"})),
            ("seLinuxOptions", json!({"type": "spc_t"})),
            ("windowsOptions", json!({"hostProcess": true})),
            ("capabilities", json!({"add": ["SYS_ADMIN"]})),
        ];
        for (k, v) in bad {
            assert!(!narrowing_security_setting(k, &JsonRef::from(&v)), "{k}: {v}");
        }
    }
}
