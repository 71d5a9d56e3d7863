//! Reading manifests: files, directories (recursively), stdin; multi-document YAML and `List`
//! objects. Every object keeps the file and line it came from, for findings and SARIF.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use thiserror::Error;

/// One Kubernetes object and where it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub file: String,
    /// 1-based line where the object's document starts.
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}: not YAML: {message}")]
    Yaml { file: String, line: usize, message: String },
    #[error("{file}:{line}: not a Kubernetes object: {message}")]
    Shape { file: String, line: usize, message: String },
}

/// File name shown for `-`.
pub const STDIN_NAME: &str = "<stdin>";

/// One input's text and the name it is reported under (`<stdin>` for `-`).
#[derive(Clone, Debug)]
pub struct Source {
    pub file: String,
    pub text: String,
}

/// Reads and parses every path; all errors are collected so one run reports every unreadable
/// file.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Object>, Vec<ManifestError>> {
    let (sources, mut errors) = read_all(paths);
    let mut objects = Vec::new();
    for source in &sources {
        parse_text(&source.file, &source.text, &mut objects, &mut errors);
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        Err(errors)
    }
}

/// The text of every path, in order: a file, every manifest file below a directory (sorted,
/// recursively), or stdin for `-`.
pub fn read(paths: &[PathBuf]) -> Result<Vec<Source>, Vec<ManifestError>> {
    match read_all(paths) {
        (sources, errors) if errors.is_empty() => Ok(sources),
        (_, errors) => Err(errors),
    }
}

/// What could be read, and why the rest could not.
fn read_all(paths: &[PathBuf]) -> (Vec<Source>, Vec<ManifestError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => files.push((STDIN_NAME.to_string(), Ok(text))),
                Err(source) => errors.push(ManifestError::Read { file: STDIN_NAME.into(), source }),
            }
        } else if path.is_dir() {
            let mut found = Vec::new();
            if let Err(source) = walk(path, &mut found) {
                errors.push(ManifestError::Read { file: path.display().to_string(), source });
            }
            found.sort();
            for f in found {
                files.push((f.display().to_string(), std::fs::read_to_string(&f)));
            }
        } else {
            files.push((path.display().to_string(), std::fs::read_to_string(path)));
        }
    }
    let mut sources = Vec::new();
    for (file, text) in files {
        match text {
            Ok(text) => sources.push(Source { file, text }),
            Err(source) => errors.push(ManifestError::Read { file, source }),
        }
    }
    (sources, errors)
}

/// Manifest files below `dir`: `.yaml`, `.yml`, `.json`; hidden entries (`.git`) are skipped.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json")) {
            out.push(path);
        }
    }
    Ok(())
}

/// Splits a YAML stream into documents, remembering the line each starts on, and parses each.
pub fn parse_text(file: &str, text: &str, objects: &mut Vec<Object>, errors: &mut Vec<ManifestError>) {
    for (start, doc) in documents(text) {
        if doc.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            continue;
        }
        let value: Value = match serde_yaml::from_str(&doc) {
            Ok(v) => v,
            Err(e) => {
                let line = start + e.location().map_or(0, |l| l.line().saturating_sub(1));
                // serde_yaml appends "at line N column M" relative to the document; drop it for
                // the absolute line we report.
                let message = e.to_string();
                let message = message.split(" at line ").next().unwrap_or(&message).to_string();
                errors.push(ManifestError::Yaml { file: file.to_string(), line, message });
                continue;
            }
        };
        push_object(file, start, value, objects, errors);
    }
}

fn push_object(file: &str, line: usize, value: Value, objects: &mut Vec<Object>, errors: &mut Vec<ManifestError>) {
    match value {
        Value::Null => {}
        Value::Object(ref map) => {
            let is_list = map.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"));
            if let (true, Some(items)) = (is_list, map.get("items").and_then(Value::as_array)) {
                for item in items {
                    push_object(file, line, item.clone(), objects, errors);
                }
            } else {
                objects.push(Object { file: file.to_string(), line, value });
            }
        }
        other => errors.push(ManifestError::Shape {
            file: file.to_string(),
            line,
            message: format!("expected a mapping with apiVersion and kind, found {}", type_name(&other)),
        }),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a plain string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// `(first line, text)` of each document. The text keeps one line per source line so parse
/// error positions map back by adding the start line.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut current: Vec<&str> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let marker = line.strip_prefix("---").filter(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '#']));
        if let Some(rest) = marker {
            if !current.is_empty() {
                docs.push((start, current.join("\n")));
            }
            current = Vec::new();
            start = number;
            // `--- {a: 1}` carries content on the marker line.
            current.push(if rest.trim_start().starts_with('#') { "" } else { rest });
        } else if line == "..." {
            docs.push((start, current.join("\n")));
            current = Vec::new();
            start = number + 1;
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        docs.push((start, current.join("\n")));
    }
    // Report the first line that holds content, not the marker or a leading comment.
    docs.into_iter()
        .map(|(start, doc)| {
            let skip = doc.lines().take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#')).count();
            let first = if skip < doc.lines().count() { start + skip } else { start };
            // Keep the text aligned with `first`.
            let text = doc.lines().skip(skip).collect::<Vec<_>>().join("\n");
            (first, text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Object>, Vec<ManifestError>) {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        parse_text("f.yaml", text, &mut o, &mut e);
        (o, e)
    }

    #[test]
    fn multi_document_lines() {
        let (o, e) = parse("# c\nkind: A\n---\n\nkind: B\n--- # x\nkind: C\n...\n---\nkind: D\n");
        assert!(e.is_empty(), "{e:?}");
        let lines: Vec<_> = o.iter().map(|o| (o.line, o.value["kind"].as_str().unwrap().to_string())).collect();
        assert_eq!(lines, vec![(2, "A".into()), (5, "B".into()), (7, "C".into()), (10, "D".into())]);
    }

    #[test]
    fn lists_are_expanded() {
        let (o, _) = parse("kind: List\nitems:\n- kind: A\n- kind: B\n");
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn errors_carry_absolute_lines() {
        let (_, e) = parse("kind: A\n---\nkind: B\nmetadata:\n  name: [unclosed\n");
        assert_eq!(e.len(), 1);
        assert!(matches!(&e[0], ManifestError::Yaml { line, .. } if *line >= 5), "{e:?}");
        let (_, e) = parse("just some words\n");
        assert!(matches!(&e[0], ManifestError::Shape { line: 1, .. }), "{e:?}");
    }
}
