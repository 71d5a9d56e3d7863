//! Rendered files (`<prefix>/template.<file>`, `<prefix>/bundle.<file>`): several items in one
//! file — a DSN, a dotenv, JSON, YAML or Java properties file — parsed at admission (so a
//! template that does not parse is a denial with its position) and rendered by whoever writes
//! the items' files: the agent in `init`/`sidecar` (in the same generation as the items), the
//! `secretmode render` init step and the watcher in `eso`/`csi`.
//!
//! Pure: bytes in, bytes out; nothing here reaches the network, the file system or the
//! environment. Imports only `vocabulary` of the crate. Errors never quote a value.

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
    let _ = (files, items);
    todo!("task T")
}
