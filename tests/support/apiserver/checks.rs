//! What must hold for a pod at the end of the admission chain, whatever else ran: the app
//! contract of every mode, and nothing the webhooks were given lost or changed.

use std::collections::BTreeMap;

use serde_json::Value;

use super::quantity;

/// The app contract, read independently of the webhook from the pod's own `secrets/`
/// annotations: every target container (those named in `<prefix>/containers`, else every
/// regular container that is not secretmode's, including containers other webhooks added)
/// mounts the files directory read-only without subPath, and has `<ITEM>_FILE` naming each
/// item's file; the directory is the `secretmode-secrets` volume of the mode's kind; init and
/// sidecar pods carry the agent. Returns every breach found.
pub fn contract(pod: &Value, prefix: &str, default_mount: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let annotations = pod.pointer("/metadata/annotations").and_then(Value::as_object).cloned().unwrap_or_default();
    let get = |key: &str| annotations.get(&format!("{prefix}/{key}")).and_then(Value::as_str);
    let Some(mode) = get("mode") else {
        return vec!["the pod has no mode annotation".into()];
    };
    let mount = get("mount-path").unwrap_or(default_mount).trim_end_matches('/').to_string();
    let items: BTreeMap<String, String> = annotations
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(&format!("{prefix}/item."))?;
            let file = if mode == "csi" { v.as_str()?.to_string() } else { name.to_string() };
            Some((name.to_string(), file))
        })
        .collect();
    if items.is_empty() {
        errors.push("the pod names no items".into());
    }
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    let wanted: Option<Vec<String>> = get("containers").map(|c| c.split(',').map(|s| s.trim().to_string()).collect());
    let targets: Vec<&Value> = containers
        .iter()
        .filter(|c| {
            let name = c["name"].as_str().unwrap_or_default();
            match &wanted {
                Some(list) => list.iter().any(|w| w == name),
                None => !name.starts_with("secretmode-"),
            }
        })
        .collect();
    if targets.is_empty() {
        errors.push("no target container".into());
    }
    for c in targets {
        let name = c["name"].as_str().unwrap_or_default();
        let mounts: Vec<&Value> = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["mountPath"].as_str().map(|p| p.trim_end_matches('/')) == Some(mount.as_str()))
            .collect();
        match mounts.as_slice() {
            [m] => {
                if m["name"] != "secretmode-secrets"
                    || m["readOnly"] != true
                    || !m["subPath"].is_null()
                    || !m["subPathExpr"].is_null()
                {
                    errors
                        .push(format!("container {name}: {mount} is not the read-only secretmode-secrets mount: {m}"));
                }
            }
            [] => errors.push(format!("container {name}: nothing mounted at {mount}")),
            many => errors.push(format!("container {name}: {} mounts at {mount}", many.len())),
        }
        for (item, file) in &items {
            let var = format!("{}_FILE", item.replace(['-', '.'], "_").to_ascii_uppercase());
            let want = format!("{mount}/{file}");
            let found: Vec<&Value> =
                c["env"].as_array().into_iter().flatten().filter(|e| e["name"] == var.as_str()).collect();
            match found.as_slice() {
                [e] if e["value"] == want.as_str() => {}
                [e] => errors.push(format!("container {name}: {var} is {} instead of {want}", e["value"])),
                [] => errors.push(format!("container {name}: no {var}")),
                many => errors.push(format!("container {name}: {var} set {} times", many.len())),
            }
        }
    }
    // Rendered files: <STEM>_FILE beside the items (init, sidecar) or in <mount>-rendered,
    // mounted read-only from secretmode-rendered and filled by secretmode-render (eso, csi).
    let rendered: Vec<&str> = annotations
        .keys()
        .filter_map(|k| k.strip_prefix(&format!("{prefix}/"))?.split_once('.'))
        .filter(|(kind, _)| matches!(*kind, "template" | "bundle"))
        .map(|(_, file)| file)
        .collect();
    let beside = matches!(mode, "eso" | "csi");
    let dir = if beside { format!("{mount}-rendered") } else { mount.clone() };
    for c in containers.iter().filter(|c| {
        let name = c["name"].as_str().unwrap_or_default();
        wanted.as_ref().map_or(!name.starts_with("secretmode-"), |w| w.iter().any(|n| n == name))
    }) {
        let name = c["name"].as_str().unwrap_or_default();
        for file in &rendered {
            let var = format!("{}_FILE", file.replace(['-', '.'], "_").to_ascii_uppercase());
            let env = c["env"].as_array().into_iter().flatten().find(|e| e["name"] == var.as_str());
            if env.map(|e| &e["value"]) != Some(&Value::String(format!("{dir}/{file}"))) {
                errors.push(format!("container {name}: {var} is not {dir}/{file}"));
            }
        }
        let mounted = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "secretmode-rendered" && m["mountPath"] == dir.as_str() && m["readOnly"] == true);
        if beside && !rendered.is_empty() && !mounted {
            errors.push(format!("container {name}: no read-only secretmode-rendered mount at {dir}"));
        }
    }
    let render_step = spec["initContainers"].as_array().into_iter().flatten().any(|c| c["name"] == "secretmode-render");
    if render_step != (beside && !rendered.is_empty()) {
        errors.push(format!(
            "secretmode-render is {} in mode {mode} with {} rendered files",
            if render_step { "there" } else { "missing" },
            rendered.len()
        ));
    }
    let volume = spec["volumes"].as_array().into_iter().flatten().find(|v| v["name"] == "secretmode-secrets");
    let kind = match mode {
        "eso" => "secret",
        "csi" => "csi",
        _ => "emptyDir",
    };
    match volume {
        Some(v) if v.get(kind).is_some() => {}
        Some(v) => errors.push(format!("secretmode-secrets is not a {kind} volume: {v}")),
        None => errors.push("no secretmode-secrets volume".into()),
    }
    if matches!(mode, "init" | "sidecar") {
        let agent = format!("secretmode-{mode}");
        let in_init = spec["initContainers"].as_array().into_iter().flatten().any(|c| c["name"] == agent.as_str());
        let in_containers = containers.iter().any(|c| c["name"] == agent.as_str());
        if !(in_init || (mode == "sidecar" && in_containers)) {
            errors.push(format!("no {agent} container"));
        }
        if mode == "init" && spec["initContainers"][0]["name"] != agent.as_str() {
            errors.push(format!("{agent} is not the first init container"));
        }
    }
    errors
}

/// Everything in `before` is in `after` unchanged: object keys recursively, named lists
/// (containers, volumes, env, mounts, ports...) matched by name with their relative order
/// kept, other lists of objects by inclusion, scalar lists exactly, quantities by value.
/// `ignore` lists JSON pointers whose value may change (the LimitRanger annotation, which
/// the API server rewrites in the reinvocation round). Returns every difference.
pub fn preserved(before: &Value, after: &Value, ignore: &[&str]) -> Vec<String> {
    let mut errors = Vec::new();
    walk(before, after, "", ignore, &mut errors);
    errors
}

fn key_of(v: &Value) -> Option<String> {
    for key in ["mountPath", "name", "containerPort", "devicePath"] {
        if let Some(k) = v.get(key) {
            return Some(format!("{key}={k}"));
        }
    }
    None
}

/// Whether `after` is `before` behind the secretmode-exec wrapper:
/// `[EXEC_PATH, "--env", <stems>, "--", <before>...]`.
fn wraps(after: &Value, before: &Value) -> bool {
    let (Some(a), Some(b)) = (after.as_array(), before.as_array()) else { return false };
    a.len() == b.len() + 4
        && a[0] == "/var/run/secrets/secretmode/bin/secretmode-exec"
        && a[1] == "--env"
        && a[2].is_string()
        && a[3] == "--"
        && a[4..] == b[..]
}

fn walk(before: &Value, after: &Value, at: &str, ignore: &[&str], errors: &mut Vec<String>) {
    if ignore.contains(&at) {
        return;
    }
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, bv) in b {
                let path = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match a.get(k) {
                    Some(av) if matches!(k.as_str(), "limits" | "requests" | "overhead") => {
                        for (r, q) in bv.as_object().into_iter().flatten() {
                            let same = av
                                .get(r)
                                .and_then(Value::as_str)
                                .zip(q.as_str())
                                .is_some_and(|(x, y)| quantity::same_value(x, y));
                            if !same {
                                errors.push(format!("{path}/{r}: {q} became {}", av.get(r).unwrap_or(&Value::Null)));
                            }
                        }
                    }
                    // The one rewrite secretmode makes: env-values outside eso wrap a command.
                    Some(av) if k == "command" && wraps(av, bv) => {}
                    Some(av) => walk(bv, av, &path, ignore, errors),
                    None if ignore.contains(&path.as_str()) => {}
                    None => errors.push(format!("{path}: removed (was {bv})")),
                }
            }
        }
        (Value::Array(b), Value::Array(a)) if b.iter().all(|v| v.is_object()) && !b.is_empty() => {
            let mut last_index = None;
            for (i, bv) in b.iter().enumerate() {
                let path = format!("{at}/{i}");
                match key_of(bv) {
                    Some(key) => match a.iter().position(|av| key_of(av).as_deref() == Some(key.as_str())) {
                        Some(j) => {
                            if last_index.is_some_and(|l| j < l) {
                                errors.push(format!("{path} ({key}): moved before an entry it followed"));
                            }
                            last_index = Some(j);
                            walk(bv, &a[j], &path, ignore, errors);
                        }
                        None => errors.push(format!("{path} ({key}): removed")),
                    },
                    None => {
                        if !a.contains(bv) {
                            errors.push(format!("{path}: {bv} removed or changed"));
                        }
                    }
                }
            }
        }
        _ => {
            if before != after {
                errors.push(format!("{at}: {before} became {after}"));
            }
        }
    }
}
