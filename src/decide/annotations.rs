//! Strict parsing of a pod's `<prefix>/*` annotations into typed settings.
//!
//! Two steps, both pure: [`parse`] checks every annotation on its own (syntax, known keys) and
//! [`resolve`] checks them together against the chosen mode and the config, producing the
//! [`Plan`] the injector executes. Every error names the annotation and says how to fix it.
//!
//! Rendered files (`template.<file>`, `bundle.<file>`) are checked here too: a template is
//! parsed when its annotation is (a syntax error is denied with its line and column), and the
//! items a template or bundle reads are checked against the pod's items in [`resolve`].

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use super::plan::{ItemSource, Plan, PlannedFile, PlannedItem};
use crate::config::Config;
use crate::json::tree::ObjectRef;
use crate::providers::ProviderConfig;
use crate::render::{Format, RenderSource, RenderedFile, Template};
use crate::vocabulary::duration;
use crate::vocabulary::mode::{Mode, VALID_MODES};
use crate::vocabulary::names::{is_dns_label, is_dns_subdomain, keys};
use crate::vocabulary::on_change::{OnChange, SIGNAL_TARGET_ENV};
use crate::vocabulary::paths::validate_mount_path;

/// Longest accepted annotation value. Real values are short references; anything longer is a
/// paste accident or an attack on the patch size.
const MAX_VALUE_LEN: usize = 1024;
/// Longest `template.<file>` value: a config file, not a reference (annotations of a pod
/// together may hold 256 KiB).
const MAX_TEMPLATE_LEN: usize = 16 * 1024;
/// Item names become file names and env var names (Kubernetes: at most 63 for a label-ish name).
const MAX_ITEM_NAME_LEN: usize = 63;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("annotation {key}: {problem}; fix: {fix}")]
pub struct AnnotationError {
    pub key: String,
    pub problem: String,
    pub fix: String,
}

fn fail<T>(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> Result<T, AnnotationError> {
    Err(AnnotationError { key: key.to_string(), problem: problem.into(), fix: fix.into() })
}

/// Each annotation checked on its own; `None` fields were not set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodAnnotations {
    pub mode: Option<Mode>,
    /// Item name to raw reference, sorted by name.
    pub items: BTreeMap<String, String>,
    pub provider: Option<String>,
    pub eso_secret: Option<String>,
    pub csi_class: Option<String>,
    pub containers: Option<Vec<String>>,
    pub mount_path: Option<String>,
    pub refresh_interval: Option<Duration>,
    pub max_staleness: Option<Duration>,
    pub env_values: Option<bool>,
    pub fallback_secret: Option<String>,
    pub on_change: Option<OnChange>,
    /// Rendered file name to what renders it, sorted by name.
    pub rendered: BTreeMap<String, RenderedAnnotation>,
}

/// One `template.<file>` or `bundle.<file>` annotation, checked on its own.
#[derive(Clone, Debug, PartialEq)]
pub enum RenderedAnnotation {
    /// The template text, and the template it parses into.
    Template(String, Template),
    /// The format, and the items listed after `:` (`None`: every item of the pod).
    Bundle(Format, Option<Vec<String>>),
}

/// Checks every `<prefix>/` annotation on its own. `Ok(None)`: the pod has none (apart from a
/// hand-written `<prefix>/injected`, which changes nothing) and is not ours.
pub fn parse(annotations: Option<&ObjectRef<'_>>, prefix: &str) -> Result<Option<PodAnnotations>, AnnotationError> {
    let Some(annotations) = annotations else {
        return Ok(None);
    };
    let mut out = PodAnnotations::default();
    let mut seen = false;
    for (full_key, value) in annotations.iter() {
        let Some(key) = full_key.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('/')) else {
            continue;
        };
        if key == keys::INJECTED {
            continue;
        }
        seen = true;
        let Some(value) = value.as_str() else {
            return fail(full_key, "value is not a string", "quote the value in YAML");
        };
        // Templates are the one multi-line value, so checked before the one-line rule.
        if let Some(file) = key.strip_prefix(keys::TEMPLATE) {
            let template = template_value(full_key, file, value)?;
            insert_rendered(&mut out, full_key, file, RenderedAnnotation::Template(value.to_string(), template))?;
            continue;
        }
        check_value_shape(full_key, value)?;
        match key {
            keys::MODE => {
                out.mode = Some(
                    value.parse().or_else(|p: String| fail(full_key, p, format!("set it to one of {VALID_MODES}")))?,
                )
            }
            keys::PROVIDER => {
                if !is_dns_label(value) {
                    return fail(
                        full_key,
                        format!("{value:?} is not a provider name"),
                        "name a provider defined in the webhook config (addresses are never taken from annotations)",
                    );
                }
                out.provider = Some(value.to_string());
            }
            keys::ESO_SECRET => out.eso_secret = Some(secret_name(full_key, value)?),
            keys::FALLBACK_SECRET => out.fallback_secret = Some(secret_name(full_key, value)?),
            keys::CSI_CLASS => {
                if !is_dns_subdomain(value) {
                    return fail(
                        full_key,
                        format!("{value:?} is not a valid SecretProviderClass name"),
                        "use the metadata.name of a SecretProviderClass in this namespace",
                    );
                }
                out.csi_class = Some(value.to_string());
            }
            keys::CONTAINERS => out.containers = Some(container_list(full_key, value)?),
            keys::MOUNT_PATH => {
                validate_mount_path(value).or_else(|p| {
                    fail(full_key, p, "use an absolute path of its own, such as /var/run/secrets-cache")
                })?;
                out.mount_path = Some(value.to_string());
            }
            keys::REFRESH_INTERVAL => out.refresh_interval = Some(duration_value(full_key, value)?),
            keys::MAX_STALENESS => out.max_staleness = Some(duration_value(full_key, value)?),
            keys::ENV_VALUES => {
                out.env_values = Some(match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return fail(full_key, format!("{value:?} is not a boolean"), "set it to \"true\" or \"false\"")
                    }
                })
            }
            keys::ON_CHANGE => {
                out.on_change =
                    Some(value.parse().or_else(|(problem, fix): (String, String)| fail(full_key, problem, fix))?)
            }
            other if other.starts_with(keys::BUNDLE) => {
                let file = &other[keys::BUNDLE.len()..];
                validate_name(full_key, file, "file name")?;
                let bundle = bundle_value(full_key, value)?;
                insert_rendered(&mut out, full_key, file, bundle)?;
            }
            other => {
                let Some(name) = other.strip_prefix(keys::ITEM) else {
                    return fail(
                        full_key,
                        "unknown annotation",
                        format!(
                            "remove it; known annotations are {}",
                            keys::ALL.map(|k| format!("{prefix}/{k}")).join(", ")
                        ),
                    );
                };
                validate_item_name(full_key, name)?;
                out.items.insert(name.to_string(), value.to_string());
            }
        }
    }
    Ok(seen.then_some(out))
}

/// Resolves parsed annotations for `mode` (already defaulted by policy) against the config.
pub fn resolve(ann: &PodAnnotations, mode: Mode, config: &Config) -> Result<Plan, AnnotationError> {
    let p = &config.annotation_prefix;
    let key = |k: &str| format!("{p}/{k}");

    // Annotations that do not apply to the chosen mode are mistakes, not no-ops: a workload
    // that sets `fallback-secret` on a csi pod believes it has a fallback.
    if mode == Mode::Init && ann.on_change.is_some() {
        return fail(
            &key(keys::ON_CHANGE),
            "nothing changes after the init container ran (mode init fetches once, at pod start)",
            "use mode sidecar to refresh and be told of changes, or remove it",
        );
    }
    let set: [(&str, bool); 8] = [
        (keys::PROVIDER, ann.provider.is_some()),
        (keys::ESO_SECRET, ann.eso_secret.is_some()),
        (keys::CSI_CLASS, ann.csi_class.is_some()),
        (keys::REFRESH_INTERVAL, ann.refresh_interval.is_some()),
        (keys::MAX_STALENESS, ann.max_staleness.is_some()),
        (keys::ENV_VALUES, ann.env_values.is_some()),
        (keys::FALLBACK_SECRET, ann.fallback_secret.is_some()),
        (keys::ON_CHANGE, ann.on_change.is_some()),
    ];
    for (k, set) in set {
        if set && !mode_reads(mode).contains(&k) {
            let names: Vec<_> =
                Mode::ALL.into_iter().filter(|m| mode_reads(*m).contains(&k)).map(Mode::as_str).collect();
            return fail(
                &key(k),
                format!("does not apply to mode {mode}"),
                format!("remove it, or use mode {}", names.join(" or ")),
            );
        }
    }

    if ann.items.is_empty() {
        return fail(
            &key("item.<name>"),
            format!("mode {mode} is set but no items are declared"),
            format!("add at least one {p}/item.<name> annotation"),
        );
    }
    if ann.items.len() > config.max_items {
        return fail(
            &key("item.<name>"),
            format!("{} items declared, the limit is {}", ann.items.len(), config.max_items),
            "split the secrets across fewer, larger items or ask the platform team to raise maxItems",
        );
    }

    let provider = if mode.uses_agent() {
        let name = ann.provider.clone().unwrap_or_else(|| config.default_provider.clone());
        if !config.providers.contains_key(&name) {
            return fail(
                &key(keys::PROVIDER),
                format!("provider {name:?} is not defined in the webhook config"),
                format!("use one of {}", config.provider_names()),
            );
        }
        Some(name)
    } else {
        None
    };
    let provider_config = provider.as_ref().and_then(|n| config.providers.get(n));

    let eso_secret = match mode {
        Mode::Eso => Some(ann.eso_secret.clone().ok_or_else(|| AnnotationError {
            key: key(keys::ESO_SECRET),
            problem: "mode eso needs the name of the Secret the ExternalSecret targets".into(),
            fix: format!("add {p}/eso-secret: <secret name>"),
        })?),
        Mode::Csi | Mode::Init | Mode::Sidecar => None,
    };
    let csi_class = match mode {
        Mode::Csi => Some(ann.csi_class.clone().ok_or_else(|| AnnotationError {
            key: key(keys::CSI_CLASS),
            problem: "mode csi needs the SecretProviderClass name".into(),
            fix: format!("add {p}/csi-class: <SecretProviderClass name>"),
        })?),
        Mode::Eso | Mode::Init | Mode::Sidecar => None,
    };

    let mut items = Vec::with_capacity(ann.items.len());
    let mut env_owner: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for (name, value) in &ann.items {
        // Only for error messages, but built for every item: no formatting machinery.
        let item_key = [p, "/item.", name.as_str()].concat();
        let (source, file) = match mode {
            Mode::Eso => (
                ItemSource::SecretKey(secret_key(&item_key, value, "a key of the Secret named by eso-secret")?),
                name.clone(),
            ),
            Mode::Csi => {
                let object = secret_key(&item_key, value, "the objectName or objectAlias in the SecretProviderClass")?;
                (ItemSource::CsiObject(object.clone()), object)
            }
            Mode::Init | Mode::Sidecar => (provider_ref(&item_key, value, provider_config)?, name.clone()),
        };
        let env_stem = env_stem(name);
        // Every name injected into the app: <ITEM>_FILE, and <ITEM> with env-values (items
        // `a` and `a-file` would both write A_FILE).
        claim_variables(ann, &item_key, ("item", name), &env_stem, &mut env_owner)?;
        items.push(PlannedItem { name: name.clone(), file, env_stem, source });
    }
    let rendered = rendered_files(ann, mode, &items, &mut env_owner, config)?;
    let mount_path = ann.mount_path.clone().unwrap_or_else(|| config.default_mount_path.clone());
    let rendered_dir = (!rendered.is_empty() && !mode.uses_agent()).then(|| rendered_dir(&mount_path));

    let refresh_interval = ann.refresh_interval.unwrap_or(config.refresh.default.0);
    if mode.refreshes() && (refresh_interval < config.refresh.min.0 || refresh_interval > config.refresh.max.0) {
        return fail(
            &key(keys::REFRESH_INTERVAL),
            format!("{} is outside the allowed range", duration::format(refresh_interval)),
            format!("use a value between {} and {}", config.refresh.min, config.refresh.max),
        );
    }
    let max_staleness = ann.max_staleness.unwrap_or(config.refresh.default_max_staleness.0.max(refresh_interval));
    if mode.refreshes() && max_staleness < refresh_interval {
        return fail(
            &key(keys::MAX_STALENESS),
            format!(
                "{} is shorter than the refresh interval {}",
                duration::format(max_staleness),
                duration::format(refresh_interval)
            ),
            "make max-staleness at least the refresh interval",
        );
    }

    Ok(Plan {
        mode,
        items,
        provider,
        eso_secret,
        csi_class,
        containers: ann.containers.clone(),
        mount_path,
        refresh_interval,
        max_staleness,
        env_values: ann.env_values.unwrap_or(false),
        fallback_secret: ann.fallback_secret.clone(),
        on_change: ann.on_change.clone(),
        rendered,
        rendered_dir,
    })
}

/// Claims the variables a name injects into the app, `<STEM>_FILE` and, with env-values,
/// `<STEM>`, for `owner` (what it is, its name): two names may not inject one variable.
fn claim_variables<'n>(
    ann: &PodAnnotations,
    key: &str,
    owner: (&'n str, &'n str),
    env_stem: &str,
    env_owner: &mut BTreeMap<String, (&'n str, &'n str)>,
) -> Result<(), AnnotationError> {
    let rename = match owner.0 {
        "item" => "rename the item",
        _ => "rename the file",
    };
    // Only for error messages, but built for every item: no formatting machinery.
    let file_var = [env_stem, "_FILE"].concat();
    let value_var = (ann.env_values == Some(true)).then(|| env_stem.to_string());
    for var in std::iter::once(file_var).chain(value_var) {
        if var == SIGNAL_TARGET_ENV && matches!(ann.on_change, Some(OnChange::Signal(_))) {
            return fail(
                key,
                format!("its variable {var} is the one secretmode sets to find the process to signal"),
                rename,
            );
        }
        if let Some((what, other)) = env_owner.get(&var) {
            return fail(
                key,
                format!("its variable {var} collides with the variable {var} of {what} {other:?}"),
                format!(
                    "rename one of the two {}",
                    if *what == owner.0 { [what, "s"].concat() } else { "names".to_string() }
                ),
            );
        }
        env_owner.insert(var, owner);
    }
    Ok(())
}

/// The rendered files, checked against the pod's items: a template or bundle reads only
/// declared items, a file shares no name or variable with an item or another file, and in
/// `eso`/`csi` the directory they are rendered into is a valid mount path.
fn rendered_files<'n>(
    ann: &'n PodAnnotations,
    mode: Mode,
    items: &[PlannedItem],
    env_owner: &mut BTreeMap<String, (&'n str, &'n str)>,
    config: &Config,
) -> Result<Vec<PlannedFile>, AnnotationError> {
    if ann.rendered.is_empty() {
        return Ok(Vec::new());
    }
    let p = &config.annotation_prefix;
    if ann.rendered.len() > config.max_items {
        return fail(
            &format!("{p}/template.<file>"),
            format!("{} rendered files declared, the limit is {}", ann.rendered.len(), config.max_items),
            "render fewer, larger files (a bundle holds many items) or ask the platform team to raise maxItems",
        );
    }
    if !mode.uses_agent() {
        // eso/csi render beside the read-only volume, into <mount-path>-rendered.
        let dir = rendered_dir(ann.mount_path.as_deref().unwrap_or(&config.default_mount_path));
        validate_mount_path(&dir).or_else(|problem| {
            fail(
                &format!("{p}/{}", keys::MOUNT_PATH),
                format!("rendered files in mode {mode} go to {dir}, and {problem}"),
                "use an absolute path of its own, such as /var/run/secrets-cache",
            )
        })?;
    }
    let mut out = Vec::with_capacity(ann.rendered.len());
    for (file, rendered) in &ann.rendered {
        let kind = match rendered {
            RenderedAnnotation::Template(..) => keys::TEMPLATE,
            RenderedAnnotation::Bundle(..) => keys::BUNDLE,
        };
        let key = [p.as_str(), "/", kind, file.as_str()].concat();
        if let Some(item) = items.iter().find(|i| i.name == *file || i.file == *file) {
            return fail(
                &key,
                format!("the rendered file {file} has the name of item {:?}'s file", item.name),
                "rename the file (its annotation's suffix) or the item",
            );
        }
        claim_variables(ann, &key, ("rendered file", file), &env_stem(file), env_owner)?;
        let source = match rendered {
            RenderedAnnotation::Template(text, template) => {
                template
                    .check_items(|name| ann.items.contains_key(name))
                    .or_else(|e| fail(&key, e.to_string(), e.fix))?;
                if mode == Mode::Csi {
                    for name in template.items() {
                        csi_reads_by_name(&key, name, items)?;
                    }
                }
                RenderSource::Template(text.clone())
            }
            RenderedAnnotation::Bundle(format, listed) => {
                let names: Vec<String> = match listed {
                    None => ann.items.keys().cloned().collect(),
                    Some(listed) => listed.clone(),
                };
                for name in &names {
                    if !ann.items.contains_key(name) {
                        return fail(
                            &key,
                            format!("the bundle lists {name}, which is not an item of this pod"),
                            format!("declare it with {p}/item.{name}, or remove it from the list"),
                        );
                    }
                    if mode == Mode::Csi {
                        csi_reads_by_name(&key, name, items)?;
                    }
                }
                RenderSource::Bundle { format: *format, items: names }
            }
        };
        out.push(PlannedFile { file: RenderedFile { name: file.clone(), source }, env_stem: env_stem(file) });
    }
    Ok(out)
}

/// In `csi` the render step reads each item from the CSI volume by its item name, so an item
/// a rendered file reads must be mounted under that name (its object name or alias).
fn csi_reads_by_name(key: &str, name: &str, items: &[PlannedItem]) -> Result<(), AnnotationError> {
    match items.iter().find(|i| i.name == name) {
        Some(item) if item.file != name => fail(
            key,
            format!(
                "it reads item {name}, whose file in the CSI volume is {:?}, and in mode csi a rendered file reads each item from the file of the item's name",
                item.file
            ),
            format!("set objectAlias: {name} for that object in the SecretProviderClass and the item's value to {name}"),
        ),
        _ => Ok(()),
    }
}

/// Where `eso` and `csi` render files: beside the read-only mount path, read-only in the apps.
pub fn rendered_dir(mount_path: &str) -> String {
    [mount_path, "-rendered"].concat()
}

/// The mode-specific annotations a mode reads; every mode reads `mode`, the items,
/// `containers`, `mount-path` and `env-values`. Any other annotation on a pod of that mode is
/// denied.
fn mode_reads(mode: Mode) -> &'static [&'static str] {
    match mode {
        Mode::Eso => &[keys::ESO_SECRET, keys::ENV_VALUES, keys::ON_CHANGE],
        Mode::Csi => &[keys::CSI_CLASS, keys::ENV_VALUES, keys::ON_CHANGE],
        // init fetches once and exits: nothing is left to watch a freshness budget, and
        // nothing changes to notify of (its on-change denial has a message of its own).
        Mode::Init => &[keys::PROVIDER, keys::FALLBACK_SECRET, keys::ENV_VALUES],
        Mode::Sidecar => &[
            keys::PROVIDER,
            keys::REFRESH_INTERVAL,
            keys::MAX_STALENESS,
            keys::FALLBACK_SECRET,
            keys::ENV_VALUES,
            keys::ON_CHANGE,
        ],
    }
}

/// `db-password` and `db.password` both become `DB_PASSWORD`.
pub fn env_stem(item: &str) -> String {
    item.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

fn check_value_shape(key: &str, value: &str) -> Result<(), AnnotationError> {
    if value.is_empty() {
        return fail(key, "value is empty", "set a value or remove the annotation");
    }
    if value.len() > MAX_VALUE_LEN {
        return fail(
            key,
            format!("value is {} bytes long, the limit is {MAX_VALUE_LEN}", value.len()),
            "use a shorter reference",
        );
    }
    if value.trim() != value {
        return fail(key, "value has leading or trailing whitespace", "remove the whitespace");
    }
    if let Some(c) = value.chars().find(|c| !(' '..='~').contains(c)) {
        return fail(key, format!("value contains the character {c:?}; only printable ASCII is accepted"), "remove it");
    }
    Ok(())
}

fn validate_item_name(key: &str, name: &str) -> Result<(), AnnotationError> {
    validate_name(key, name, "item name")
}

/// Item names and rendered file names follow one rule: they become file names and the
/// `<STEM>_FILE` variables. `what` says which it is.
fn validate_name(key: &str, name: &str, what: &str) -> Result<(), AnnotationError> {
    let fix = "use lower-case letters, digits, '-', '.' and '_'-free names like db-password (at most 63 characters, starting with a letter)";
    if name.is_empty() || name.len() > MAX_ITEM_NAME_LEN {
        return fail(key, format!("{what} must be 1 to {MAX_ITEM_NAME_LEN} characters"), fix);
    }
    let bytes = name.as_bytes();
    let ok_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-';
    if !bytes.iter().all(ok_char)
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return fail(key, format!("{what} {name:?} is not of the form [a-z0-9]([a-z0-9.-]*[a-z0-9])?"), fix);
    }
    if name.contains("..") {
        return fail(key, format!("{what} {name:?} contains '..'"), fix);
    }
    if !bytes[0].is_ascii_lowercase() {
        // The name becomes the env var <ITEM>_FILE, which must not start with a digit on
        // clusters before the relaxed env-name validation.
        return fail(
            key,
            format!(
                "{what} {name:?} starts with a digit, so {}_FILE would not be a valid variable name",
                env_stem(name)
            ),
            fix,
        );
    }
    Ok(())
}

/// `template.<file>`: the name, the shape of the text (printable ASCII, newlines and tabs; at
/// most 16 KiB) and its syntax, an error pointing at the line and column.
fn template_value(key: &str, file: &str, value: &str) -> Result<Template, AnnotationError> {
    validate_name(key, file, "file name")?;
    if value.trim().is_empty() {
        return fail(key, "template is empty", "write the file's text, or remove the annotation");
    }
    if value.len() > MAX_TEMPLATE_LEN {
        return fail(
            key,
            format!("template is {} bytes long, the limit is {MAX_TEMPLATE_LEN}", value.len()),
            "keep a rendered file to a config file's size; split it into several files",
        );
    }
    let (mut line, mut column) = (1, 1);
    for c in value.chars() {
        if !(c == '\n' || c == '\t' || (' '..='~').contains(&c)) {
            return fail(
                key,
                format!("line {line}, column {column}: the character {c:?}; a template holds printable ASCII, newlines and tabs"),
                "remove it (write \\r\\n line ends as \\n; put non-ASCII text in an item)",
            );
        }
        if c == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    Template::parse(value).or_else(|e| fail(key, e.to_string(), e.fix))
}

/// `bundle.<file>`: `<format>` or `<format>:<item>,<item>,...`.
fn bundle_value(key: &str, value: &str) -> Result<RenderedAnnotation, AnnotationError> {
    let (name, list) = match value.split_once(':') {
        Some((name, list)) => (name, Some(list)),
        None => (value, None),
    };
    let Some(format) = Format::from_name(name.trim()) else {
        return fail(
            key,
            format!("{name:?} is not a bundle format"),
            format!("write one of {} (and, to bundle only some items, :<item>,<item>,...)", Format::VALID),
        );
    };
    let Some(list) = list else { return Ok(RenderedAnnotation::Bundle(format, None)) };
    let mut items: Vec<String> = Vec::new();
    for raw in list.split(',') {
        let item = raw.trim();
        validate_name(key, item, "item name").or_else(|e| {
            fail(key, e.problem, format!("write {}:<item>,<item>,... with item names of this pod", format.as_str()))
        })?;
        if items.iter().any(|i| i == item) {
            return fail(key, format!("item {item} is listed twice"), "list each item once");
        }
        items.push(item.to_string());
    }
    Ok(RenderedAnnotation::Bundle(format, Some(items)))
}

/// A rendered file is written by one annotation: `template.x` and `bundle.x` are two files
/// under one name.
fn insert_rendered(
    out: &mut PodAnnotations,
    key: &str,
    file: &str,
    rendered: RenderedAnnotation,
) -> Result<(), AnnotationError> {
    if out.rendered.insert(file.to_string(), rendered).is_some() {
        return fail(
            key,
            format!("the rendered file {file} is also written by another template.{file} or bundle.{file} annotation"),
            "give each rendered file one annotation, or rename one",
        );
    }
    Ok(())
}

fn secret_name(key: &str, value: &str) -> Result<String, AnnotationError> {
    if !is_dns_subdomain(value) {
        return fail(
            key,
            format!("{value:?} is not a valid Secret name"),
            "use the metadata.name of a Secret in the pod's namespace (lower case, digits, '-' and '.')",
        );
    }
    Ok(value.to_string())
}

/// Secret data keys and CSI object names: `[-._a-zA-Z0-9]+`, not `.` or `..`.
fn secret_key(key: &str, value: &str, what: &str) -> Result<String, AnnotationError> {
    let valid = value.len() <= 253
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && value != "."
        && !value.contains("..");
    if !valid {
        return fail(
            key,
            format!("{value:?} is not a valid key (letters, digits, '-', '_', '.'; no '..')"),
            format!("set the value to {what}"),
        );
    }
    Ok(value.to_string())
}

/// `init`/`sidecar` item references: `<path>#<key>`, or `<path>` alone where the provider can
/// return one whole value. Paths are normalised-only: no `..`, `.`, empty segments, leading or
/// trailing `/`, or percent signs, so that a policy prefix check on the text is a check on
/// what the provider will read.
fn provider_ref(key: &str, value: &str, provider: Option<&ProviderConfig>) -> Result<ItemSource, AnnotationError> {
    let fix = "write <path>#<key>, e.g. payments/db#password";
    let (path, item_key) = match value.split_once('#') {
        Some((path, k)) => (path, Some(k)),
        None => (value, None),
    };
    if path.is_empty() || path.len() > 512 {
        return fail(key, "provider path is empty or too long", fix);
    }
    if let Some(c) = path.chars().find(|c| !(c.is_ascii_alphanumeric() || "/_.+=@:-".contains(*c))) {
        return fail(
            key,
            format!("provider path contains {c:?}"),
            format!("{fix}; paths use letters, digits and / _ . + = @ : -"),
        );
    }
    if path.starts_with('/')
        || path.ends_with('/')
        || path.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return fail(
            key,
            format!("provider path {path:?} is not normalised (leading/trailing '/', '//', '.' or '..')"),
            fix,
        );
    }
    let item_key = match item_key {
        Some(k) => {
            if k.is_empty()
                || k.len() > 253
                || k.contains('#')
                || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                || k == "."
                || k == ".."
            {
                return fail(key, format!("key {k:?} after '#' is not valid (letters, digits, '-', '_', '.')"), fix);
            }
            Some(k.to_string())
        }
        None => None,
    };
    if let (None, Some(problem)) = (&item_key, provider.and_then(ProviderConfig::key_required)) {
        return fail(key, problem, fix);
    }
    Ok(ItemSource::Provider { path: path.to_string(), key: item_key })
}

fn container_list(key: &str, value: &str) -> Result<Vec<String>, AnnotationError> {
    let mut names: Vec<String> = Vec::new();
    for raw in value.split(',') {
        let name = raw.trim();
        if !is_dns_label(name) {
            return fail(
                key,
                format!("{name:?} is not a container name"),
                "write a comma-separated list of container names, e.g. app,worker",
            );
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

fn duration_value(key: &str, value: &str) -> Result<Duration, AnnotationError> {
    let d = duration::parse(value).or_else(|p| fail(key, p, "write a duration such as 30s, 5m or 1h"))?;
    if d.is_zero() {
        return fail(key, "duration is zero", "write a positive duration such as 30s, 5m or 1h");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::tree::JsonRef;
    use serde_json::{json, Value};

    fn cfg() -> Config {
        Config::builtin().unwrap()
    }

    fn ann(v: Value) -> Result<Option<PodAnnotations>, AnnotationError> {
        parse(JsonRef::from(&v).as_object(), "secrets")
    }

    fn plan(v: Value) -> Result<Plan, AnnotationError> {
        let a = ann(v)?.expect("annotations present");
        let mode = a.mode.expect("mode");
        resolve(&a, mode, &cfg())
    }

    #[test]
    fn no_annotations_is_not_ours() {
        assert_eq!(parse(None, "secrets"), Ok(None));
        assert_eq!(ann(json!({"app": "x"})), Ok(None));
        assert_eq!(ann(json!({"secrets/injected": "mode=init"})), Ok(None));
        assert_eq!(ann(json!({"othersecrets/mode": "init"})), Ok(None));
    }

    #[test]
    fn parses_a_sidecar_pod() {
        let p = plan(json!({
            "secrets/mode": "sidecar",
            "secrets/item.db-password": "payments/db#password",
            "secrets/item.api.key": "payments/api#key",
            "secrets/refresh-interval": "1m",
            "secrets/max-staleness": "10m",
            "secrets/containers": "app, worker,app",
            "secrets/fallback-secret": "payments-fallback",
        }))
        .unwrap();
        assert_eq!(p.mode, Mode::Sidecar);
        assert_eq!(p.provider.as_deref(), Some("vault"));
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.items[0].name, "api.key");
        assert_eq!(p.items[0].env_stem, "API_KEY");
        assert_eq!(
            p.items[1].source,
            ItemSource::Provider { path: "payments/db".into(), key: Some("password".into()) }
        );
        assert_eq!(p.containers, Some(vec!["app".into(), "worker".into()]));
        assert_eq!(p.refresh_interval, Duration::from_secs(60));
        assert_eq!(p.mount_path, "/var/run/secrets-cache");
    }

    #[test]
    fn bad_mode_names_valid_values() {
        let e = ann(json!({"secrets/mode": "vault"})).unwrap_err();
        assert_eq!(e.key, "secrets/mode");
        assert!(e.to_string().contains("eso, csi, init, sidecar"), "{e}");
    }

    #[test]
    fn unknown_annotation_is_denied() {
        for key in ["secrets/image", "secrets/address", "secrets/run-as-user", "secrets/audience"] {
            let e = ann(json!({ key: "x" })).unwrap_err();
            assert_eq!(e.key, key);
            assert!(e.problem.contains("unknown"));
        }
    }

    #[test]
    fn hostile_values_are_denied() {
        let long = "a".repeat(5000);
        for v in ["", " ", " a", "a\n", "ünïcode", "${HOME}", "{{ .Values }}", "a\"b", "$(rm -rf /)", long.as_str()] {
            let r = plan(json!({"secrets/mode": "init", "secrets/item.x": v}));
            assert_eq!(r.unwrap_err().key, "secrets/item.x", "{v:?}");
        }
    }

    #[test]
    fn item_names_are_strict() {
        for name in ["..", "a..b", "a/b", "a~b", "Upper", "-a", "a-", &"a".repeat(64), "1password", "a_b"] {
            let key = format!("secrets/item.{name}");
            let r = ann(json!({ key.clone(): "p#k" }));
            let e = r.unwrap_err();
            assert_eq!(e.key, key);
        }
        assert!(ann(json!({"secrets/item.tls.crt": "p#k"})).is_ok());
    }

    #[test]
    fn provider_paths_are_normalised() {
        for v in ["/abs#k", "a/#k", "a//b#k", "a/../b#k", "./a#k", "a%2e%2e#k", "a#", "a#b#c", "a b#k", "a\\b#k"] {
            let e = plan(json!({"secrets/mode": "init", "secrets/item.x": v})).unwrap_err();
            assert_eq!(e.key, "secrets/item.x", "{v}");
        }
        // Vault entries need a key; AWS secrets may be used whole.
        assert!(plan(json!({"secrets/mode": "init", "secrets/item.x": "app/db"})).is_err());
        let p = plan(json!({"secrets/mode": "init", "secrets/provider": "aws", "secrets/item.x": "arn:aws:secretsmanager:us-east-1:1:secret:db-AbC"})).unwrap();
        assert_eq!(
            p.items[0].source,
            ItemSource::Provider { path: "arn:aws:secretsmanager:us-east-1:1:secret:db-AbC".into(), key: None }
        );
    }

    #[test]
    fn env_collisions_are_denied() {
        let e =
            plan(json!({"secrets/mode": "init", "secrets/item.db-password": "a#b", "secrets/item.db.password": "a#c"}))
                .unwrap_err();
        assert!(e.problem.contains("DB_PASSWORD_FILE"), "{e}");
    }

    #[test]
    fn an_items_value_variable_may_not_be_another_items_file_variable() {
        let eso = |items: &[(&str, &str)], env_values: bool| {
            let mut a = json!({"secrets/mode": "eso", "secrets/eso-secret": "s"});
            if env_values {
                a["secrets/env-values"] = json!("true");
            }
            for (name, key) in items {
                a[format!("secrets/item.{name}")] = json!(key);
            }
            plan(a)
        };
        let e = eso(&[("a", "k1"), ("a-file", "k2")], true).unwrap_err();
        assert_eq!(e.key, "secrets/item.a-file");
        assert!(e.problem.contains("A_FILE") && e.problem.contains("\"a\""), "{e}");
        // Without env-values only the _FILE names are injected: A_FILE and A_FILE_FILE.
        assert!(eso(&[("a", "k1"), ("a-file", "k2")], false).is_ok());
        let e = eso(&[("db.password", "k1"), ("db-password", "k2")], false).unwrap_err();
        assert!(e.problem.contains("DB_PASSWORD_FILE"), "{e}");
    }

    #[test]
    fn annotations_for_other_modes_are_denied() {
        let e = plan(json!({"secrets/mode": "csi", "secrets/csi-class": "c", "secrets/item.a": "a", "secrets/fallback-secret": "f"})).unwrap_err();
        assert_eq!(e.key, "secrets/fallback-secret");
        assert!(e.fix.contains("init or sidecar"));
        let e = plan(json!({"secrets/mode": "init", "secrets/item.a": "a#b", "secrets/refresh-interval": "1m"}))
            .unwrap_err();
        assert_eq!(e.key, "secrets/refresh-interval");
    }

    #[test]
    fn mode_requirements() {
        assert_eq!(plan(json!({"secrets/mode": "eso", "secrets/item.a": "a"})).unwrap_err().key, "secrets/eso-secret");
        assert_eq!(plan(json!({"secrets/mode": "csi", "secrets/item.a": "a"})).unwrap_err().key, "secrets/csi-class");
        assert_eq!(plan(json!({"secrets/mode": "init"})).unwrap_err().key, "secrets/item.<name>");
        assert_eq!(
            plan(json!({"secrets/mode": "init", "secrets/provider": "nope", "secrets/item.a": "a#b"})).unwrap_err().key,
            "secrets/provider"
        );
        let e = plan(json!({"secrets/mode": "sidecar", "secrets/item.a": "a#b", "secrets/refresh-interval": "1s"}))
            .unwrap_err();
        assert!(e.fix.contains("30s"), "{e}");
    }

    #[test]
    fn csi_items_name_their_files() {
        let p = plan(
            json!({"secrets/mode": "csi", "secrets/csi-class": "app-spc", "secrets/item.db-password": "dbPassword"}),
        )
        .unwrap();
        assert_eq!(p.items[0].file, "dbPassword");
        assert_eq!(p.items[0].env_stem, "DB_PASSWORD");
    }

    fn rendered(p: &Plan) -> Vec<(&str, &RenderSource, &str)> {
        p.rendered.iter().map(|f| (f.file.name.as_str(), &f.file.source, f.env_stem.as_str())).collect()
    }

    #[test]
    fn templates_and_bundles_become_rendered_files() {
        let dsn = "postgresql://{{ db-user }}:{{ db-pass | urlescape }}@db.internal:5432/app?sslmode=require";
        let config = "# app config\nuser: {{ db-user }}\n\tpassword: {{ db-pass }}\n";
        let p = plan(json!({
            "secrets/mode": "sidecar",
            "secrets/item.db-user": "app/db#user",
            "secrets/item.db-pass": "app/db#password",
            "secrets/item.api-key": "app/api#key",
            "secrets/template.db-dsn": dsn,
            "secrets/template.app.yaml": config,
            "secrets/bundle.app.env": "dotenv",
            "secrets/bundle.creds.json": "json: db-user ,db-pass",
        }))
        .unwrap();
        assert_eq!(
            rendered(&p),
            [
                (
                    "app.env",
                    &RenderSource::Bundle {
                        format: Format::Dotenv,
                        items: vec!["api-key".into(), "db-pass".into(), "db-user".into()]
                    },
                    "APP_ENV"
                ),
                ("app.yaml", &RenderSource::Template(config.into()), "APP_YAML"),
                (
                    "creds.json",
                    &RenderSource::Bundle { format: Format::Json, items: vec!["db-user".into(), "db-pass".into()] },
                    "CREDS_JSON"
                ),
                ("db-dsn", &RenderSource::Template(dsn.into()), "DB_DSN"),
            ]
        );
        assert_eq!(p.to_string(), "mode=sidecar items=3 provider=vault rendered=4");
        // Every format by name; the 16 KiB limit is the template's own.
        for f in Format::ALL {
            let p = plan(
                json!({"secrets/mode": "eso", "secrets/eso-secret": "s", "secrets/item.a": "a", "secrets/bundle.b": f.as_str()}),
            );
            assert_eq!(p.unwrap().rendered.len(), 1, "{f:?}");
        }
        let big = format!("{{{{ a }}}}{}", "x".repeat(16 * 1024 - 7));
        assert_eq!(big.len(), 16 * 1024);
        assert!(plan(json!({"secrets/mode": "init", "secrets/item.a": "a#b", "secrets/template.t": big})).is_ok());
    }

    #[test]
    fn a_template_that_does_not_parse_is_denied_with_its_position() {
        let deny = |t: &str| {
            plan(json!({"secrets/mode": "init", "secrets/item.db-pass": "a#b", "secrets/template.dsn": t})).unwrap_err()
        };
        let e = deny("a\n  {{ db-pass | nope }}");
        assert_eq!(e.key, "secrets/template.dsn");
        assert!(
            e.to_string().starts_with("annotation secrets/template.dsn: line 2, column 16: unknown function"),
            "{e}"
        );
        assert!(e.fix.contains("urlescape"), "{e}");
        let e = deny("x {{ db-pass");
        assert!(e.problem.starts_with("line 1, column 3: "), "{e}");
        // An item the pod does not declare, at its position, with the fix naming it.
        let e = deny("u={{ db-user }}");
        assert_eq!(e.to_string(), "annotation secrets/template.dsn: line 1, column 6: item db-user is not an item of this pod; fix: declare it with an item.db-user annotation, or use one of the pod's items");
        // Shape: empty, too long, characters outside printable ASCII, newline and tab.
        assert!(deny(" \n").problem.contains("empty"));
        let e = deny(&"x".repeat(16 * 1024 + 1));
        assert!(e.problem.contains("16384"), "{e}");
        let e = deny("a\r\nb");
        assert!(e.problem.starts_with("line 1, column 2: the character '\\r'"), "{e}");
        assert!(deny("line\n\n  é").problem.starts_with("line 3, column 3:"));
        assert!(deny("a\u{0}").problem.contains("'\\0'"));
        // Other annotations keep the one-line rule.
        assert_eq!(plan(json!({"secrets/mode": "init", "secrets/item.a": "a#b\n"})).unwrap_err().key, "secrets/item.a");
    }

    #[test]
    fn bundles_are_checked() {
        let deny = |v: &str| {
            plan(json!({"secrets/mode": "init", "secrets/item.a": "a#b", "secrets/item.b": "a#c", "secrets/bundle.f": v}))
                .unwrap_err()
        };
        for (v, says) in [
            ("toml", "\"toml\" is not a bundle format"),
            ("JSON", "\"JSON\" is not a bundle format"),
            ("json:", "item name must be 1 to 63 characters"),
            ("json:a,,b", "item name must be 1 to 63 characters"),
            ("json:a,A", "item name \"A\""),
            ("json:a,a", "item a is listed twice"),
            ("yaml:a,c", "the bundle lists c, which is not an item of this pod"),
        ] {
            let e = deny(v);
            assert_eq!(e.key, "secrets/bundle.f", "{v}");
            assert!(e.problem.contains(says), "{v}: {e}");
        }
        assert!(deny("yaml:a,c").fix.contains("secrets/item.c"));
        assert!(deny("toml").fix.contains("dotenv, json, yaml, properties"));
    }

    #[test]
    fn rendered_files_share_no_name_with_items_or_each_other() {
        let base = || json!({"secrets/mode": "init", "secrets/item.db-pass": "a#b"});
        let with = |pairs: &[(&str, &str)]| {
            let mut a = base();
            for (k, v) in pairs {
                a[format!("secrets/{k}")] = json!(v);
            }
            plan(a)
        };
        let e = with(&[("template.db-pass", "{{ db-pass }}")]).unwrap_err();
        assert_eq!(e.key, "secrets/template.db-pass");
        assert!(e.problem.contains("item \"db-pass\"'s file"), "{e}");
        // db.pass and db-pass both inject DB_PASS_FILE.
        let e = with(&[("bundle.db.pass", "json")]).unwrap_err();
        assert_eq!(e.key, "secrets/bundle.db.pass");
        assert!(e.problem.contains("DB_PASS_FILE") && e.problem.contains("item \"db-pass\""), "{e}");
        let e = with(&[("bundle.x.y", "json"), ("template.x-y", "{{ db-pass }}")]).unwrap_err();
        assert!(e.problem.contains("X_Y_FILE") && e.problem.contains("rendered file \"x-y\""), "{e}");
        let e = with(&[("bundle.x", "json"), ("template.x", "{{ db-pass }}")]).unwrap_err();
        assert!(e.problem.contains("also written by another"), "{e}");
        // With env-values, a file's <STEM> may not be an item's <STEM>_FILE.
        let e = with(&[("env-values", "true"), ("bundle.db-pass-file", "json")]).unwrap_err();
        assert!(e.problem.contains("DB_PASS_FILE"), "{e}");
        assert!(with(&[("bundle.db-pass-file", "json")]).is_ok());
        // File names follow the item-name rule.
        for bad in ["Upper", "a/b", "..", "1x", "a_b"] {
            let e = with(&[(&format!("bundle.{bad}"), "json")]).unwrap_err();
            assert!(e.problem.starts_with("file name"), "{bad}: {e}");
        }
    }

    #[test]
    fn eso_and_csi_render_beside_the_mount_path() {
        assert_eq!(rendered_dir("/var/run/secrets-cache"), "/var/run/secrets-cache-rendered");
        let p = plan(json!({"secrets/mode": "eso", "secrets/eso-secret": "s", "secrets/item.a": "a", "secrets/bundle.b": "json"}))
            .unwrap();
        assert!(p.renders_beside());
        // A mount path whose -rendered twin is too long is denied on mount-path.
        let long = format!("/{}", "a".repeat(250));
        let e = plan(json!({"secrets/mode": "eso", "secrets/eso-secret": "s", "secrets/item.a": "a", "secrets/bundle.b": "json", "secrets/mount-path": long}))
            .unwrap_err();
        assert_eq!(e.key, "secrets/mount-path");
        assert!(e.problem.contains("-rendered") && e.problem.contains("longer than 256"), "{e}");
        // csi reads items by name: an item mounted under another object name cannot be rendered.
        let csi = |value: &str| {
            plan(json!({"secrets/mode": "csi", "secrets/csi-class": "c", "secrets/item.db-pass": value,
                        "secrets/template.dsn": "{{ db-pass }}"}))
        };
        assert!(csi("db-pass").is_ok());
        let e = csi("dbPassword").unwrap_err();
        assert_eq!(e.key, "secrets/template.dsn");
        assert!(e.problem.contains("\"dbPassword\"") && e.fix.contains("objectAlias: db-pass"), "{e}");
        // Rendered files are the one feature every mode has, init included.
        assert!(
            plan(json!({"secrets/mode": "init", "secrets/item.a": "a#b", "secrets/bundle.b": "properties"})).is_ok()
        );
    }

    #[test]
    fn the_unknown_annotation_message_lists_the_rendered_files() {
        let e = ann(json!({"secrets/templates.x": "a"})).unwrap_err();
        assert!(e.fix.contains("secrets/template.<file>, secrets/bundle.<file>"), "{e}");
    }
}
