//! The layout keeps its arrows pointing one way.
//!
//! Reads `src/**.rs` as text and builds the graph of references between the top-level modules
//! (`crate::decide::...`, `use crate::{config, json::tree::JsonRef}`, `super::` resolved), and
//! between the parts of `decide/` (`annotations`, `plan`, `policy`, `inject`, ..., and
//! `decide/mod.rs` itself). It fails on a cycle in either graph, and on any reference from
//! `vocabulary/` or `json/` to the rest of the crate. Comments, strings and `#[cfg(test)]`
//! items (and the files of `#[cfg(test)] mod x;`) are left out: tests may reach across.
//!
//! `LAYOUT_SRC=/path/to/src cargo test --test layout` checks another tree (e.g. an older
//! checkout); the `negative_control_*` tests show the checks fail on what they should.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that may use nothing else of the crate (`render` is pure: bytes in, bytes out).
const LEAVES: [&str; 3] = ["vocabulary", "json", "render"];
/// The module whose parts get a graph of their own.
const DECISION: &str = "decide";

#[test]
fn the_module_graph_has_no_cycle_and_the_leaves_import_nothing() {
    let root = std::env::var_os("LAYOUT_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let files = read_tree(&root);
    assert!(files.len() > 20, "read {} files under {}", files.len(), root.display());
    let problems = check(&files);
    assert!(problems.is_empty(), "layout problems in {}:\n{}", root.display(), problems.join("\n"));
}

#[test]
fn negative_control_a_cycle_between_top_level_modules_fails() {
    let files = sources(&[
        ("config/mod.rs", "use crate::policy::PolicyConfig;\npub struct Config;"),
        ("policy.rs", "use crate::config::Config;\npub struct PolicyConfig;"),
        ("webhook/mod.rs", "use crate::config::Config;"),
    ]);
    let problems = check(&files);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("config -> policy -> config"), "{problems:?}");
}

#[test]
fn negative_control_a_leaf_that_imports_the_crate_fails() {
    let files = sources(&[
        ("vocabulary/mod.rs", "pub mod names;"),
        ("vocabulary/names.rs", "pub fn f() -> crate::config::Config { todo!() }"),
        ("json/mod.rs", "use crate::{vocabulary::names, config};"),
        ("config/mod.rs", "pub struct Config;"),
    ]);
    let problems = check(&files);
    assert!(problems.iter().any(|p| p.contains("vocabulary/names.rs") && p.contains("config")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("json/mod.rs") && p.contains("vocabulary")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("json/mod.rs") && p.contains("config")), "{problems:?}");
}

#[test]
fn negative_control_a_cycle_inside_the_decision_fails() {
    let files = sources(&[
        ("decide/mod.rs", "pub mod plan; pub mod inject; use inject::inject;"),
        ("decide/plan.rs", "pub struct Plan;"),
        ("decide/inject/mod.rs", "mod eso; use super::plan::Plan;"),
        // A mode's file calling back into the decision (a grouped import, through super::super).
        ("decide/inject/eso.rs", "use super::super::{plan, Decision};"),
    ]);
    let problems = check(&files);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("decide -> decide::inject -> decide"), "{problems:?}");
}

#[test]
fn negative_control_test_code_comments_and_strings_are_not_references() {
    let files = sources(&[
        (
            "vocabulary/mod.rs",
            r####"
//! Uses [`crate::config`] in a comment only. /* crate::config */
pub const A: &str = "crate::config::Config";
pub const B: &str = r#"a "quoted" crate::config { brace"#;
pub const C: char = '{';
pub fn lifetime<'a>(s: &'a str) -> &'a str { s }
#[cfg(test)]
mod tests {
    use crate::config::Config;
    const RAW: &str = r#"{"unbalanced": {"#;
}
#[cfg(test)]
mod more;
"####,
        ),
        ("vocabulary/more.rs", "use crate::config::Config;"),
        ("config/mod.rs", "use crate::vocabulary::A;"),
    ]);
    assert_eq!(check(&files), Vec::<String>::new());
    // The same reference outside the test module is found.
    let files = sources(&[
        ("vocabulary/mod.rs", "#[cfg(test)]\nmod tests { const S: &str = \"}\"; }\nuse crate::config::Config;"),
        ("config/mod.rs", ""),
    ]);
    assert_eq!(check(&files).len(), 1);
}

// ---- The check ----

/// A source file: where it is (relative to `src/`) and its text.
struct File {
    path: String,
    text: String,
}

fn sources(files: &[(&str, &str)]) -> Vec<File> {
    files.iter().map(|(path, text)| File { path: path.to_string(), text: text.to_string() }).collect()
}

fn read_tree(root: &Path) -> Vec<File> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under the root").to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.push(File { path: rel, text });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Every problem found, one line each; empty when the layout is sound.
fn check(files: &[File]) -> Vec<String> {
    // lib.rs declares the modules and main.rs is the binary (it says `secretmode::`).
    let files: Vec<&File> = files.iter().filter(|f| f.path != "lib.rs" && f.path != "main.rs").collect();
    let mut code: BTreeMap<&str, String> = files.iter().map(|f| (f.path.as_str(), strip(&f.text))).collect();
    // Files declared by `#[cfg(test)] mod x;` are test code too.
    let mut test_files = BTreeSet::new();
    for (path, text) in &mut code {
        let (kept, test_mods) = without_test_items(text);
        *text = kept;
        for name in test_mods {
            let dir = module_dir(path);
            test_files.insert(format!("{dir}{name}.rs"));
            test_files.insert(format!("{dir}{name}/mod.rs"));
        }
    }
    let decide_parts: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(&f.path).get(1).filter(|_| module_of(&f.path)[0] == DECISION).cloned())
        .collect();

    let mut problems = Vec::new();
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut parts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in &code {
        if test_files.contains(*path) {
            continue;
        }
        let module = module_of(path);
        let Some(from) = module.first() else { continue };
        top.entry(from.clone()).or_default();
        for target in references(text, &module) {
            let Some(to) = target.first() else { continue };
            if to == from {
                if from == DECISION {
                    let part = |m: &[String]| match m.get(1) {
                        Some(p) if decide_parts.contains(p) => format!("{DECISION}::{p}"),
                        _ => DECISION.to_string(),
                    };
                    let (a, b) = (part(&module), part(&target));
                    if a != b {
                        parts.entry(a).or_default().insert(b);
                    }
                }
                continue;
            }
            if LEAVES.contains(&from.as_str()) {
                problems.push(format!("{path} uses crate::{to}, and {from}/ may use nothing else of the crate"));
            }
            top.entry(from.clone()).or_default().insert(to.clone());
        }
    }
    problems.extend(cycles(&top).into_iter().map(|c| format!("import cycle between top-level modules: {c}")));
    problems.extend(cycles(&parts).into_iter().map(|c| format!("import cycle inside {DECISION}/: {c}")));
    problems
}

/// `decide/inject/eso.rs` is `["decide", "inject", "eso"]`; a `mod.rs` is its directory.
fn module_of(path: &str) -> Vec<String> {
    let path = path.strip_suffix(".rs").unwrap_or(path);
    let path = path.strip_suffix("/mod").unwrap_or(path);
    path.split('/').map(str::to_string).collect()
}

/// Where the files of a file's child modules are: `decide/inject/` for `decide/inject/mod.rs`
/// and for `decide/inject.rs`.
fn module_dir(path: &str) -> String {
    match path.strip_suffix("mod.rs") {
        Some(dir) => dir.to_string(),
        None => format!("{}/", path.strip_suffix(".rs").unwrap_or(path)),
    }
}

/// Cycles of the graph as `a -> b -> a`: at least one for every set of modules that import
/// each other, each node reported in one cycle at most.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for start in graph.keys() {
        if done.contains(start.as_str()) {
            continue;
        }
        // Depth-first, keeping the current path: an edge back into it is a cycle.
        let mut path: Vec<&str> = Vec::new();
        let mut stack: Vec<(&str, bool)> = vec![(start.as_str(), true)];
        while let Some((node, entering)) = stack.pop() {
            if !entering {
                path.pop();
                done.insert(node);
                continue;
            }
            if done.contains(node) {
                continue;
            }
            if let Some(at) = path.iter().position(|n| *n == node) {
                let mut cycle: Vec<&str> = path[at..].to_vec();
                cycle.push(node);
                found.push(cycle.join(" -> "));
                // One cycle per start: its nodes are not searched again.
                done.extend(path.iter().copied());
                break;
            }
            path.push(node);
            stack.push((node, false));
            for next in graph.get(node).into_iter().flatten().rev() {
                stack.push((next.as_str(), true));
            }
        }
    }
    found
}

/// The module paths a file names: `crate::a::b...` (each path of a `crate::{...}` group),
/// `super::...` and paths through a child module the file declares (`mod x;` then `x::...`),
/// resolved against the file's module, as absolute paths of at most two names.
fn references(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let children = declared_children(text);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let ident_before =
            i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        let rest = &text[i..];
        let base: Option<(Vec<String>, usize)> = if ident_before {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("super::") {
            // `super::super::x`: one level up per `super`.
            let mut base = module.to_vec();
            let mut len = 0;
            while text[i + len..].starts_with("super::") {
                base.pop();
                len += "super::".len();
            }
            Some((base, len))
        } else {
            children.iter().any(|c| rest.starts_with(&format!("{c}::"))).then(|| (module.to_vec(), 0))
        };
        match base {
            Some((base, len)) => {
                for tail in path_tails(&text[i + len..]) {
                    let mut full = base.clone();
                    full.extend(tail);
                    full.truncate(2);
                    out.push(full);
                }
                i += len.max(1);
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    out
}

/// The names of the child modules a file declares with `mod x;` (any visibility).
fn declared_children(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split(|c: char| c.is_whitespace() || c == ';' || c == '{').collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if let (true, Some(name)) = (*w == "mod", words[i + 1..].iter().find(|w| !w.is_empty())) {
            let after = text.find(&format!("mod {name}")).map(|at| text[at + 4 + name.len()..].trim_start());
            if after.is_some_and(|a| a.starts_with(';')) {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// The first two names of the path at the start of `text`, or of each path of a `{...}` group
/// there (`{a::b, c}` gives `[a, b]` and `[c]`; `self` stands for the path so far).
fn path_tails(text: &str) -> Vec<Vec<String>> {
    let text = text.trim_start();
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(&group[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&group[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return items.into_iter().filter(|item| !item.trim().is_empty()).flat_map(path_tails).collect();
    }
    let ident = |t: &str| -> (String, usize) {
        let end = t.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(t.len());
        (t[..end].to_string(), end)
    };
    let (first, end) = ident(text);
    if first.is_empty() || first == "self" {
        return vec![Vec::new()];
    }
    let after = &text[end..];
    match after.strip_prefix("::") {
        Some(more) => path_tails(more).into_iter().map(|tail| [vec![first.clone()], tail].concat()).collect(),
        None => vec![vec![first]],
    }
}

/// The text with comments, string and char literals blanked out, so that only code is left.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(b' ');
        } else if let Some(hashes) = raw_string_start(rest) {
            // r"..", r#".."#, br#".."#: ends at the quote followed by as many hashes.
            let open = rest.iter().position(|c| *c == b'"').unwrap_or(0) + 1;
            i += open;
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            while i < b.len() && !b[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.extend_from_slice(b"\"\"");
        } else if b[i] == b'"' || rest.starts_with(b"b\"") && !ident_char_before(b, i) {
            i += if b[i] == b'"' { 1 } else { 2 };
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.extend_from_slice(b"\"\"");
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{1b}', b'x' is caught here too) or a lifetime.
            match char_literal_len(&b[i..]) {
                Some(len) => {
                    i += len;
                    out.extend_from_slice(b"' '");
                }
                None => {
                    out.push(b'\'');
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ident_char_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// The number of `#` of a raw string starting here (`r"`, `r#"`, `br##"`), if one does.
fn raw_string_start(rest: &[u8]) -> Option<usize> {
    let after_r = rest.strip_prefix(b"br").or_else(|| rest.strip_prefix(b"r"))?;
    let hashes = after_r.iter().take_while(|c| **c == b'#').count();
    (after_r.get(hashes) == Some(&b'"')).then_some(hashes)
}

/// The length of the char literal starting at `'`, or `None` for a lifetime or label.
fn char_literal_len(b: &[u8]) -> Option<usize> {
    if b.get(1) == Some(&b'\\') {
        // The escaped char, then the closing quote: '\n', '\'', '\u{1b}'.
        let end = b.get(3..)?.iter().position(|c| *c == b'\'')?;
        return Some(end + 4);
    }
    // One char, possibly several UTF-8 bytes, then the closing quote.
    let text =
        std::str::from_utf8(&b[1..b.len().min(6)]).or_else(|e| std::str::from_utf8(&b[1..1 + e.valid_up_to()])).ok()?;
    let c = text.chars().next()?;
    (b.get(1 + c.len_utf8()) == Some(&b'\'')).then_some(2 + c.len_utf8())
}

/// The code without its `#[cfg(test)]` items, and the names of `#[cfg(test)] mod x;` files.
fn without_test_items(code: &str) -> (String, Vec<String>) {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut test_mods = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let mut item = rest[at + MARK.len()..].trim_start();
        // Further attributes on the same item.
        while item.starts_with("#[") {
            let end = matching(item, 1).map_or(item.len(), |e| e + 1);
            item = item[end..].trim_start();
        }
        let semi = item.find(';');
        let brace = item.find('{');
        let end = match (semi, brace) {
            (Some(s), Some(b)) if b < s => matching(item, b).map_or(item.len(), |e| e + 1),
            (None, Some(b)) => matching(item, b).map_or(item.len(), |e| e + 1),
            (Some(s), _) => {
                let words: Vec<&str> = item[..s].split_whitespace().collect();
                if let Some(pos) = words.iter().position(|w| *w == "mod") {
                    if let Some(name) = words.get(pos + 1) {
                        test_mods.push(name.to_string());
                    }
                }
                s + 1
            }
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    (out, test_mods)
}

/// The index of the bracket closing the one at `open` (`{`/`}` or `[`/`]`).
fn matching(text: &str, open: usize) -> Option<usize> {
    let b = text.as_bytes();
    let (o, c) = match b.get(open)? {
        b'{' => (b'{', b'}'),
        b'[' => (b'[', b']'),
        _ => return None,
    };
    let mut depth = 0;
    for (i, byte) in b.iter().enumerate().skip(open) {
        if *byte == o {
            depth += 1;
        } else if *byte == c {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}
