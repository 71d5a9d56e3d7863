//! Rendered files (`<prefix>/template.<file>`, `<prefix>/bundle.<file>`): several items in one
//! file — a DSN, a dotenv, JSON, YAML or Java properties file — parsed at admission (so a
//! template that does not parse is a denial with its position) and rendered by whoever writes
//! the items' files: the agent in `init`/`sidecar` (in the same generation as the items), the
//! `secretmode render` init step and the watcher in `eso`/`csi`.
//!
//! Pure: bytes in, bytes out; nothing here reaches the network, the file system or the
//! environment. Imports nothing else of the crate (a leaf in `tests/layout.rs`). Errors never
//! quote a value.

pub mod formats;
pub mod template;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use formats::Format;
pub use template::{Template, TemplateError};

/// One rendered file, as the webhook writes it into the agent's, render step's or watcher's
/// spec. The template is carried as its source text and parsed again where it is rendered
/// (the webhook already refused any that does not parse).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenderedFile {
    /// File name under the directory (same rules as an item name).
    pub name: String,
    pub source: RenderSource,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum RenderSource {
    /// `<prefix>/template.<file>`: the template text.
    Template(String),
    /// `<prefix>/bundle.<file>`: a fixed format over the listed items (every item when the
    /// annotation lists none; the webhook writes the list out).
    Bundle { format: Format, items: Vec<String> },
}

/// Why a file could not be rendered; names the file and the item, never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rendered file {file}: {problem}")]
pub struct RenderError {
    pub file: String,
    pub problem: String,
}

/// Renders every file from `items` (item name → value bytes). All or nothing: any error means
/// no file of this generation is written.
pub fn render_all(
    files: &[RenderedFile],
    items: &BTreeMap<String, Vec<u8>>,
) -> Result<BTreeMap<String, Vec<u8>>, RenderError> {
    let mut out = BTreeMap::new();
    for file in files {
        let fail = |problem: String| RenderError { file: file.name.clone(), problem };
        let bytes = render_one(&file.source, items).map_err(fail)?;
        if out.insert(file.name.clone(), bytes).is_some() {
            return Err(fail("two rendered files have this name".to_string()));
        }
    }
    Ok(out)
}

fn render_one(source: &RenderSource, items: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, String> {
    match source {
        RenderSource::Template(text) => {
            // The webhook refused any template that does not parse; one here was edited after.
            let template =
                Template::parse(text).map_err(|e| format!("template does not parse: {e}; fix: {}", e.fix))?;
            template.render(items)
        }
        RenderSource::Bundle { format, items: names } => {
            let mut entries: Vec<(String, &[u8])> = Vec::with_capacity(names.len());
            for name in names {
                let value = items.get(name).ok_or_else(|| format!("item {name} has no value"))?;
                let key = if format.keys_are_env_names() { env_name(name) } else { name.clone() };
                entries.push((key, value));
            }
            let entries: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            format.render(&entries)
        }
    }
}

/// An item's env name, the `<STEM>` of `<STEM>_FILE`: `db-password` and `db.password` both
/// become `DB_PASSWORD` (the rule of `decide::annotations::env_stem`; `render` imports nothing
/// of the decision, a unit test keeps the two equal).
pub fn env_name(item: &str) -> String {
    item.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> BTreeMap<String, Vec<u8>> {
        [("db-user", &b"app"[..]), ("db-pass", b"p@ss w\"rd"), ("blob", b"\xff\xfe")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    fn file(name: &str, source: RenderSource) -> RenderedFile {
        RenderedFile { name: name.to_string(), source }
    }

    fn bundle(format: Format, names: &[&str]) -> RenderSource {
        RenderSource::Bundle { format, items: names.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn renders_templates_and_bundles_keyed_by_file() {
        let files = [
            file("dsn", RenderSource::Template("pg://{{ db-user }}:{{ db-pass | urlescape }}@h/app".into())),
            file("app.env", bundle(Format::Dotenv, &["db-user", "db-pass"])),
            file("creds.json", bundle(Format::Json, &["db-pass", "db-user"])),
        ];
        let out = render_all(&files, &items()).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out["dsn"], b"pg://app:p%40ss%20w%22rd@h/app");
        assert_eq!(out["app.env"], b"DB_USER=\"app\"\nDB_PASS=\"p@ss w\\\"rd\"\n");
        assert_eq!(out["creds.json"], b"{\n  \"db-pass\": \"p@ss w\\\"rd\",\n  \"db-user\": \"app\"\n}\n");
    }

    #[test]
    fn all_or_nothing_and_the_error_names_the_file_not_the_value() {
        let good = file("dsn", RenderSource::Template("{{ db-user }}".into()));
        for (bad, want) in [
            (
                file("x.json", bundle(Format::Json, &["db-user", "blob"])),
                "rendered file x.json: the value of blob is not UTF-8 text",
            ),
            (file("y.env", bundle(Format::Dotenv, &["gone"])), "rendered file y.env: item gone has no value"),
            (
                file("t", RenderSource::Template("{{ db-pass | key \"u\" }}".into())),
                "rendered file t: item db-pass is not a JSON object",
            ),
            (
                file("u", RenderSource::Template("{{ db-pass | nope }}".into())),
                "rendered file u: template does not parse: line 1, column 14: unknown function \"nope\"; fix: use one of",
            ),
            (file("dsn", RenderSource::Template("again".into())), "rendered file dsn: two rendered files have this name"),
        ] {
            let err = render_all(&[good.clone(), bad], &items()).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
            assert!(!err.contains("p@ss") && !err.contains("app\""), "{err}");
        }
    }

    #[test]
    fn env_name_matches_the_decision_s_env_stem() {
        for item in ["db-password", "db.password", "a", "x-1.y2"] {
            assert_eq!(env_name(item), crate::decide::annotations::env_stem(item));
        }
    }

    #[test]
    fn the_spec_form_is_camel_case_and_strict() {
        let f = file("b.yaml", bundle(Format::Yaml, &["a"]));
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "b.yaml", "source": {"bundle": {"format": "yaml", "items": ["a"]}}})
        );
        let t = serde_json::json!({"name": "dsn", "source": {"template": "{{ a }}"}});
        assert_eq!(serde_json::from_value::<RenderedFile>(t).unwrap().source, RenderSource::Template("{{ a }}".into()));
        assert!(serde_json::from_value::<RenderedFile>(
            serde_json::json!({"name": "x", "source": {"template": "a"}, "extra": 1})
        )
        .is_err());
    }
}
