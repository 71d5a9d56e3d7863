//! The template language of `<prefix>/template.<file>`: text with `{{ ... }}` actions that
//! substitute item values, through a few functions, and nothing else (no loops, conditions,
//! network, file system, environment or time), so a template is data the webhook can check at
//! admission, not a program.
//!
//! ```text
//! action   = "{{" pipeline "}}"
//! pipeline = source ( "|" function )*
//! source   = item-name | string
//! function = "key" string | "base64" | "base64decode" | "urlescape" | "trim"
//! string   = '"' ( any character but '"' and '\' | '\"' | '\\' | '\n' | '\r' | '\t' )* '"'
//! ```
//!
//! Spaces, tabs and newlines may separate the parts of an action. Outside actions the text is
//! copied as is; a literal `{{` or `}}` is written `{{ "{{" }}` / `{{ "}}" }}` (a bare `}}`
//! outside an action is an error, so a mistyped action never renders silently as text).
//! Hand-written: the language is tiny, and every parse error carries its line, column and fix.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Where and why a template does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {problem}")]
pub struct TemplateError {
    /// 1-based line of the problem in the template text.
    pub line: usize,
    /// 1-based column, in characters (a tab counts as one).
    pub column: usize,
    pub problem: String,
    pub fix: String,
}

/// One use of an item in a template, with where it is (for a denial that points at it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemUse {
    pub name: String,
    pub line: usize,
    pub column: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Action(Action),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Action {
    source: Source,
    functions: Vec<Call>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Item(ItemUse),
    Literal { text: String, line: usize, column: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    function: Function,
    line: usize,
    column: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Function {
    Key(String),
    Base64,
    Base64Decode,
    UrlEscape,
    Trim,
}

/// The functions, as written in a template (for errors and docs).
pub const FUNCTIONS: [&str; 5] = ["key", "base64", "base64decode", "urlescape", "trim"];

const FUNCTION_FIX: &str = "use one of: key \"<member>\", base64, base64decode, urlescape, trim";
const ITEM_FIX: &str =
    "name an item of the pod as in its item.<name> annotation: lower-case letters, digits, '-' and '.', starting with a letter (e.g. db-password); write literal text as {{ \"text\" }}";

/// Longest item name (a DNS label, like the `item.<name>` annotations).
const MAX_ITEM_NAME_LEN: usize = 63;

/// The item-name rule of the `item.<name>` annotations: `[a-z]([a-z0-9.-]*[a-z0-9])?`, no
/// `..`, at most 63 characters.
pub fn is_item_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ITEM_NAME_LEN
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && !name.contains("..")
}

/// A cursor over the template text that knows its line and column.
struct Cursor<'a> {
    rest: &'a str,
    line: usize,
    column: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn starts_with(&self, s: &str) -> bool {
        self.rest.starts_with(s)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.rest = &self.rest[c.len_utf8()..];
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.bump();
        }
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.bump();
        }
    }

    fn at(&self) -> (usize, usize) {
        (self.line, self.column)
    }
}

fn err(at: (usize, usize), problem: impl Into<String>, fix: impl Into<String>) -> TemplateError {
    TemplateError { line: at.0, column: at.1, problem: problem.into(), fix: fix.into() }
}

/// A word for an error message: at most 40 characters of it, quoted.
fn shown(word: &str) -> String {
    let s: String = word.chars().take(40).collect();
    let more = if s.len() < word.len() { "..." } else { "" };
    format!("{s:?}{more}")
}

impl Template {
    /// Parses a template; the error says where (line, column), what and how to fix it.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut cur = Cursor { rest: text, line: 1, column: 1 };
        let mut parts = Vec::new();
        let mut literal = String::new();
        while let Some(c) = cur.peek() {
            if cur.starts_with("{{") {
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Action(parse_action(&mut cur)?));
            } else if cur.starts_with("}}") {
                return Err(err(
                    cur.at(),
                    "'}}' outside an action",
                    "write a literal '}}' as {{ \"}}\" }} (in JSON, '} }' works too), or add the missing '{{'",
                ));
            } else {
                literal.push(c);
                cur.bump();
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The names of the items the template reads (sorted, each once): every one must be an
    /// item of the pod.
    pub fn items(&self) -> BTreeSet<&str> {
        self.item_uses().map(|u| u.name.as_str()).collect()
    }

    /// Every use of an item, in the order of the text, with its position.
    pub fn item_uses(&self) -> impl Iterator<Item = &ItemUse> {
        self.parts.iter().filter_map(|p| match p {
            Part::Action(Action { source: Source::Item(u), .. }) => Some(u),
            _ => None,
        })
    }

    /// The first item the template reads that `declared` does not accept, as an error at its
    /// position (what the webhook denies).
    pub fn check_items(&self, declared: impl Fn(&str) -> bool) -> Result<(), TemplateError> {
        match self.item_uses().find(|u| !declared(&u.name)) {
            None => Ok(()),
            Some(u) => Err(err(
                (u.line, u.column),
                format!("item {} is not an item of this pod", u.name),
                format!("declare it with an item.{} annotation, or use one of the pod's items", u.name),
            )),
        }
    }

    /// Renders the template over `items` (item name → value). The error names the item and
    /// the function, never a value.
    pub fn render(&self, items: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Action(a) => out.extend_from_slice(&a.render(items)?),
            }
        }
        Ok(out)
    }
}

/// Parses one `{{ ... }}` starting at the cursor (which is on `{{`).
fn parse_action(cur: &mut Cursor) -> Result<Action, TemplateError> {
    let open = cur.at();
    cur.skip(2);
    let unclosed = || err(open, "'{{' is not closed", "close the action with '}}'");
    let nested = || err(open, "'{{' is not closed before the next '{{'", "close the action with '}}'");
    cur.skip_space();
    let source = match cur.peek() {
        None => return Err(unclosed()),
        _ if cur.starts_with("{{") => return Err(nested()),
        Some('"') => {
            let at = cur.at();
            let text = parse_string(cur)?;
            Source::Literal { text, line: at.0, column: at.1 }
        }
        Some('|') => return Err(err(cur.at(), "the action has no item before '|'", ITEM_FIX)),
        _ if cur.starts_with("}}") => {
            return Err(err(open, "empty action", "put an item name (or a \"literal\") between '{{' and '}}'"))
        }
        _ => {
            let at = cur.at();
            let word = parse_word(cur);
            if word.is_empty() {
                return Err(err(at, format!("unexpected {}", shown(&cur.peek().unwrap_or(' ').to_string())), ITEM_FIX));
            }
            if FUNCTIONS.contains(&word) {
                return Err(err(
                    at,
                    format!("{word} is a function, not an item"),
                    format!("apply it to an item: {{{{ <item> | {word} }}}}"),
                ));
            }
            if !is_item_name(word) {
                return Err(err(at, format!("{} is not a valid item name", shown(word)), ITEM_FIX));
            }
            Source::Item(ItemUse { name: word.to_string(), line: at.0, column: at.1 })
        }
    };
    let mut functions = Vec::new();
    loop {
        cur.skip_space();
        if cur.starts_with("}}") {
            cur.skip(2);
            return Ok(Action { source, functions });
        }
        match cur.peek() {
            None => return Err(unclosed()),
            _ if cur.starts_with("{{") => return Err(nested()),
            Some('|') => {
                cur.bump();
                cur.skip_space();
                functions.push(parse_call(cur, &unclosed)?);
            }
            Some(_) => {
                let at = cur.at();
                let word = if cur.peek() == Some('"') { "a string".to_string() } else { shown(parse_word(cur)) };
                return Err(err(
                    at,
                    format!("unexpected {word} after the {}", if functions.is_empty() { "item" } else { "function" }),
                    "separate functions with '|', and close the action with '}}'",
                ));
            }
        }
    }
}

/// A function after `|` and its argument.
fn parse_call(cur: &mut Cursor, unclosed: &dyn Fn() -> TemplateError) -> Result<Call, TemplateError> {
    let at = cur.at();
    if cur.peek().is_none() {
        return Err(unclosed());
    }
    if cur.starts_with("}}") || cur.peek() == Some('|') {
        return Err(err(at, "'|' is not followed by a function", FUNCTION_FIX));
    }
    if cur.peek() == Some('"') {
        return Err(err(at, "a string where a function is expected", FUNCTION_FIX));
    }
    let word = parse_word(cur);
    let function = match word {
        "key" => {
            cur.skip_space();
            if cur.peek() != Some('"') {
                let (line, column) = cur.at();
                let fix = "write the member name in double quotes: key \"username\"";
                let problem = if cur.starts_with("}}") || matches!(cur.peek(), Some('|') | None) {
                    "function key needs one argument, the member name".to_string()
                } else {
                    format!("the argument of key must be a double-quoted string, not {}", shown(parse_word(cur)))
                };
                return Err(err((line, column), problem, fix));
            }
            Function::Key(parse_string(cur)?)
        }
        "base64" => Function::Base64,
        "base64decode" => Function::Base64Decode,
        "urlescape" => Function::UrlEscape,
        "trim" => Function::Trim,
        "" => {
            return Err(err(at, format!("unexpected {}", shown(&cur.peek().unwrap_or(' ').to_string())), FUNCTION_FIX))
        }
        other => return Err(err(at, format!("unknown function {}", shown(other)), FUNCTION_FIX)),
    };
    if !matches!(function, Function::Key(_)) {
        cur.skip_space();
        if !(cur.starts_with("}}") || matches!(cur.peek(), Some('|') | None)) {
            return Err(err(
                cur.at(),
                format!("function {word} takes no argument"),
                format!("remove the argument after {word}"),
            ));
        }
    } else {
        cur.skip_space();
        if cur.peek() == Some('"') {
            return Err(err(cur.at(), "function key takes one argument, not two", "remove the extra argument"));
        }
    }
    Ok(Call { function, line: at.0, column: at.1 })
}

/// A run of characters up to a space, `|`, `"` or `}}`.
fn parse_word<'a>(cur: &mut Cursor<'a>) -> &'a str {
    let start = cur.rest;
    let mut len = 0;
    while let Some(c) = cur.peek() {
        if matches!(c, ' ' | '\t' | '\n' | '\r' | '|' | '"') || cur.starts_with("}}") {
            break;
        }
        len += c.len_utf8();
        cur.bump();
    }
    &start[..len]
}

/// A double-quoted string at the cursor, with its escapes decoded.
fn parse_string(cur: &mut Cursor) -> Result<String, TemplateError> {
    let open = cur.at();
    cur.bump();
    let mut out = String::new();
    loop {
        let at = cur.at();
        match cur.bump() {
            None => {
                return Err(err(
                    open,
                    "the string is not closed",
                    "end the string with '\"' (write a quote inside it as \\\")",
                ))
            }
            Some('"') => return Ok(out),
            Some('\n') => {
                return Err(err(
                    open,
                    "the string is not closed on its line",
                    "end the string with '\"' on the same line; write a newline inside it as \\n",
                ))
            }
            Some('\\') => match cur.bump() {
                Some('"') => out.push('"'),
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                other => {
                    let what = other.map_or("the end of the text".to_string(), |c| format!("{:?}", format!("\\{c}")));
                    return Err(err(
                        at,
                        format!("unknown escape {what} in a string"),
                        "use one of \\\" \\\\ \\n \\r \\t",
                    ));
                }
            },
            Some(c) => out.push(c),
        }
    }
}

impl Action {
    fn render(&self, items: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, String> {
        let (mut value, origin) = match &self.source {
            Source::Item(u) => match items.get(&u.name) {
                Some(v) => (v.clone(), format!("item {}", u.name)),
                None => return Err(format!("item {} has no value (line {}, column {})", u.name, u.line, u.column)),
            },
            Source::Literal { text, line, column } => {
                (text.as_bytes().to_vec(), format!("the string at line {line}, column {column}"))
            }
        };
        let mut applied: Vec<String> = Vec::new();
        for call in &self.functions {
            // "item db-creds" or "item db-creds after base64decode": the value's origin, never
            // the value.
            let subject =
                if applied.is_empty() { origin.clone() } else { format!("{origin} after {}", applied.join(" | ")) };
            let name = call.function.name();
            let at = format!("({name} at line {}, column {})", call.line, call.column);
            value = call.function.apply(value).map_err(|problem| format!("{subject} {problem} {at}"))?;
            applied.push(name);
        }
        Ok(value)
    }
}

impl Function {
    fn name(&self) -> String {
        match self {
            Function::Key(member) => format!("key {member:?}"),
            Function::Base64 => "base64".into(),
            Function::Base64Decode => "base64decode".into(),
            Function::UrlEscape => "urlescape".into(),
            Function::Trim => "trim".into(),
        }
    }

    /// Applies the function; the error is the predicate of "<item> ...", without the value.
    fn apply(&self, value: Vec<u8>) -> Result<Vec<u8>, String> {
        match self {
            Function::Key(member) => {
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&value).map_err(|_| "is not a JSON object".to_string())?;
                match object.get(member) {
                    None => Err(format!("has no member {member:?}")),
                    Some(serde_json::Value::String(s)) => Ok(s.clone().into_bytes()),
                    Some(serde_json::Value::Null) => Err(format!("has member {member:?} set to null")),
                    // Numbers, booleans, and nested objects or arrays as JSON text (so `key`
                    // can be chained into a nested object).
                    Some(other) => Ok(other.to_string().into_bytes()),
                }
            }
            Function::Base64 => Ok(base64::engine::general_purpose::STANDARD.encode(&value).into_bytes()),
            Function::Base64Decode => {
                // Whitespace (a trailing newline, lines of 76) is ignored; padding is optional.
                let compact: Vec<u8> = value.into_iter().filter(|b| !b.is_ascii_whitespace()).collect();
                let engine = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::STANDARD,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
                );
                engine.decode(&compact).map_err(|_| "is not valid base64".to_string())
            }
            Function::UrlEscape => Ok(url_escape(&value)),
            Function::Trim => Ok(value.trim_ascii().to_vec()),
        }
    }
}

/// Percent-encodes every byte but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`), so
/// the result is safe in any part of a URL (user, password, path segment, query value).
fn url_escape(value: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
    }

    fn render(text: &str, pairs: &[(&str, &[u8])]) -> Result<String, String> {
        let t = Template::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        t.render(&items(pairs)).map(|b| String::from_utf8(b).unwrap())
    }

    fn parse_err(text: &str) -> TemplateError {
        match Template::parse(text) {
            Ok(t) => panic!("{text:?} parsed: {t:?}"),
            Err(e) => e,
        }
    }

    /// (line, column, a word of the problem) of a template's parse error.
    fn at(text: &str) -> (usize, usize, String) {
        let e = parse_err(text);
        assert!(!e.fix.is_empty(), "{e:?}");
        (e.line, e.column, e.problem)
    }

    #[test]
    fn substitutes_items_and_keeps_the_text_around() {
        let out = render(
            "postgresql://{{ db-user }}:{{db-pass|urlescape}}@db.internal:5432/app?sslmode=require\n",
            &[("db-user", b"app"), ("db-pass", b"p@ss:w/rd %")],
        );
        assert_eq!(out.unwrap(), "postgresql://app:p%40ss%3Aw%2Frd%20%25@db.internal:5432/app?sslmode=require\n");
    }

    #[test]
    fn text_without_actions_and_the_empty_template_render_as_is() {
        assert_eq!(render("", &[]).unwrap(), "");
        assert_eq!(render("a { b } c\n\tä", &[]).unwrap(), "a { b } c\n\tä");
    }

    #[test]
    fn literals_write_braces_and_escapes() {
        assert_eq!(render(r#"{{ "{{" }}x{{ "}}" }}"#, &[]).unwrap(), "{{x}}");
        assert_eq!(render(r#"{{ "a\"b\\c\n\t\r" }}"#, &[]).unwrap(), "a\"b\\c\n\t\r");
        assert_eq!(render(r#"{{ "hi" | base64 }}"#, &[]).unwrap(), "aGk=");
    }

    #[test]
    fn actions_may_span_lines() {
        assert_eq!(render("{{\n  a\n  | trim\n}}", &[("a", b" x\n")]).unwrap(), "x");
    }

    #[test]
    fn key_picks_a_member_strings_as_is_numbers_and_bools_as_json() {
        let creds: &[u8] =
            br#"{"user":"app","port":5432,"tls":true,"ratio":1.5,"nested":{"a":"b"},"list":[1,"x"],"none":null}"#;
        let one = |member: &str| render(&format!("{{{{ c | key \"{member}\" }}}}"), &[("c", creds)]);
        assert_eq!(one("user").unwrap(), "app");
        assert_eq!(one("port").unwrap(), "5432");
        assert_eq!(one("tls").unwrap(), "true");
        assert_eq!(one("ratio").unwrap(), "1.5");
        assert_eq!(one("nested").unwrap(), r#"{"a":"b"}"#);
        assert_eq!(one("list").unwrap(), r#"[1,"x"]"#);
        assert_eq!(render(r#"{{ c | key "nested" | key "a" }}"#, &[("c", creds)]).unwrap(), "b");
        let e = one("none").unwrap_err();
        assert!(e.contains("item c has member \"none\" set to null"), "{e}");
        let e = one("missing").unwrap_err();
        assert!(e.contains("item c has no member \"missing\""), "{e}");
    }

    #[test]
    fn base64_both_ways_tolerating_whitespace_and_missing_padding() {
        assert_eq!(render("{{ a | base64 }}", &[("a", b"\xff\x00hi")]).unwrap(), "/wBoaQ==");
        assert_eq!(render("{{ a | base64decode }}", &[("a", b"aGk=\n")]).unwrap(), "hi");
        assert_eq!(render("{{ a | base64decode }}", &[("a", b"aGk")]).unwrap(), "hi");
        assert_eq!(render("{{ a | base64 | base64decode }}", &[("a", b"x y")]).unwrap(), "x y");
        // URL-safe alphabet is not standard base64: refused rather than guessed.
        assert!(render("{{ a | base64decode }}", &[("a", b"_-8")]).is_err());
    }

    #[test]
    fn urlescape_keeps_only_unreserved_characters() {
        let all: Vec<u8> = (0..=255).collect();
        let out = render("{{ a | urlescape }}", &[("a", &all)]).unwrap();
        assert!(out.is_ascii());
        assert!(out.starts_with("%00%01"), "{out}");
        assert!(out.contains("-.%2F0123456789%3A"), "{out}");
        assert!(out.contains("Z%5B%5C%5D%5E_%60a"), "{out}");
        assert!(out.contains("z%7B%7C%7D~%7F%80"), "{out}");
        assert!(out.ends_with("%FF"), "{out}");
    }

    #[test]
    fn trim_removes_ascii_whitespace_at_both_ends_only() {
        assert_eq!(render("[{{ a | trim }}]", &[("a", b" \t\r\n a b \n")]).unwrap(), "[a b]");
        assert_eq!(render("[{{ a | trim }}]", &[("a", b"  ")]).unwrap(), "[]");
    }

    #[test]
    fn items_lists_each_name_read_once_with_positions() {
        let t = Template::parse("{{ b }} {{ a | trim }}\n{{ b }}{{ \"lit\" }}").unwrap();
        assert_eq!(t.items().into_iter().collect::<Vec<_>>(), ["a", "b"]);
        let uses: Vec<_> = t.item_uses().map(|u| (u.name.as_str(), u.line, u.column)).collect();
        assert_eq!(uses, [("b", 1, 4), ("a", 1, 12), ("b", 2, 4)]);
        assert!(Template::parse("just text").unwrap().items().is_empty());
    }

    #[test]
    fn check_items_points_at_the_first_undeclared_item() {
        let t = Template::parse("x={{ a }}\ny={{ nope | trim }}").unwrap();
        assert_eq!(t.check_items(|n| n == "a" || n == "nope"), Ok(()));
        let e = t.check_items(|n| n == "a").unwrap_err();
        assert_eq!((e.line, e.column), (2, 6));
        assert!(e.problem.contains("item nope is not an item of this pod"), "{e:?}");
        assert!(e.fix.contains("item.nope"), "{e:?}");
    }

    #[test]
    fn parse_errors_carry_line_column_and_fix() {
        // Unclosed action: at its '{{'.
        assert_eq!(at("ab\ncd {{ x"), (2, 4, "'{{' is not closed".into()));
        assert_eq!(at("{{ x | trim "), (1, 1, "'{{' is not closed".into()));
        assert_eq!(at("{{ x |"), (1, 1, "'{{' is not closed".into()));
        assert_eq!(at("a\n{{ x\n{{ y }}"), (2, 1, "'{{' is not closed before the next '{{'".into()));
        assert_eq!(at("{{ {{ y }}"), (1, 1, "'{{' is not closed before the next '{{'".into()));
        // Stray '}}'.
        assert_eq!(at("a\n  b }} c"), (2, 5, "'}}' outside an action".into()));
        // Empty expressions.
        assert_eq!(at("x {{ }}"), (1, 3, "empty action".into()));
        assert_eq!(at("{{}}"), (1, 1, "empty action".into()));
        assert_eq!(at("{{ | trim }}"), (1, 4, "the action has no item before '|'".into()));
        assert_eq!(at("{{ a | }}"), (1, 8, "'|' is not followed by a function".into()));
        assert_eq!(at("{{ a || trim }}"), (1, 7, "'|' is not followed by a function".into()));
        // Unknown function.
        assert_eq!(at("{{ a | upper }}"), (1, 8, "unknown function \"upper\"".into()));
        assert_eq!(at("{{ a | \"x\" }}"), (1, 8, "a string where a function is expected".into()));
        // Missing and extra arguments.
        assert_eq!(at("{{ a | key }}"), (1, 12, "function key needs one argument, the member name".into()));
        assert_eq!(at("{{ a | key | trim }}"), (1, 12, "function key needs one argument, the member name".into()));
        assert_eq!(
            at("{{ a | key user }}"),
            (1, 12, "the argument of key must be a double-quoted string, not \"user\"".into())
        );
        assert_eq!(at("{{ a | key \"u\" \"v\" }}"), (1, 16, "function key takes one argument, not two".into()));
        assert_eq!(at("{{ a | trim \"x\" }}"), (1, 13, "function trim takes no argument".into()));
        assert_eq!(at("{{ a | base64 2 }}"), (1, 15, "function base64 takes no argument".into()));
        // Bad string literals.
        assert_eq!(at("{{ \"abc }}"), (1, 4, "the string is not closed".into()));
        assert_eq!(at("{{ \"abc\n\" }}"), (1, 4, "the string is not closed on its line".into()));
        assert_eq!(at("{{ \"a\\qb\" }}"), (1, 6, "unknown escape \"\\\\q\" in a string".into()));
        assert_eq!(at("{{ a | key \"x\\\" }}"), (1, 12, "the string is not closed".into()));
        // Not an item name.
        assert_eq!(at("ä{{ DB_USER }}"), (1, 5, "\"DB_USER\" is not a valid item name".into()));
        assert_eq!(at("{{ 1abc }}"), (1, 4, "\"1abc\" is not a valid item name".into()));
        assert_eq!(at("{{ a..b }}"), (1, 4, "\"a..b\" is not a valid item name".into()));
        assert_eq!(at("{{ a- }}"), (1, 4, "\"a-\" is not a valid item name".into()));
        assert_eq!(at("{{ .Data.password }}"), (1, 4, "\".Data.password\" is not a valid item name".into()));
        assert_eq!(at("{{ base64 }}"), (1, 4, "base64 is a function, not an item".into()));
        assert_eq!(
            at(&format!("{{{{ {} }}}}", "a".repeat(64))).2,
            format!("{:?}... is not a valid item name", "a".repeat(40))
        );
        // Something after the item that is not a '|'.
        assert_eq!(at("{{ a b }}"), (1, 6, "unexpected \"b\" after the item".into()));
        assert_eq!(at("{{ a | trim \n x }}"), (2, 2, "function trim takes no argument".into()));
    }

    #[test]
    fn item_names_follow_the_item_annotation_rule() {
        for ok in ["a", "db-password", "db.password", "a1", "x-1.y", &"a".repeat(63)] {
            assert!(is_item_name(ok), "{ok}");
        }
        for bad in ["", "A", "1a", "-a", "a-", "a.", "a..b", "a_b", "a b", "ä", &"a".repeat(64)] {
            assert!(!is_item_name(bad), "{bad}");
        }
    }

    #[test]
    fn render_errors_name_the_item_and_function_never_the_value() {
        let secret: &[u8] = b"hunter2-S3CRET-VALUE";
        let cases = [
            ("{{ s | key \"user\" }}", "item s is not a JSON object (key \"user\" at line 1, column 8)"),
            ("{{ s | base64decode }}", "item s is not valid base64 (base64decode at line 1, column 8)"),
            (
                "{{ s | base64 | key \"a\" }}",
                "item s after base64 is not a JSON object (key \"a\" at line 1, column 17)",
            ),
            ("{{ missing }}", "item missing has no value (line 1, column 4)"),
        ];
        for (text, want) in cases {
            let e = render(text, &[("s", secret)]).unwrap_err();
            assert_eq!(e, want);
            for part in ["hunter2", "S3CRET", "VALUE", "aHVudGVy"] {
                assert!(!e.contains(part), "{e}");
            }
        }
        // A JSON value whose member is a secret: the error names the member, not its value.
        let e = render("{{ s | key \"pw\" | base64decode }}", &[("s", br#"{"pw":"hunter2!"}"#)]).unwrap_err();
        assert_eq!(e, "item s after key \"pw\" is not valid base64 (base64decode at line 1, column 19)");
        let e = render("{{ \"not json\" | key \"a\" }}", &[]).unwrap_err();
        assert!(e.starts_with("the string at line 1, column 4 is not a JSON object"), "{e}");
    }

    #[test]
    fn binary_values_pass_through_untouched() {
        let v: Vec<u8> = (0..=255).collect();
        let t = Template::parse("{{ b }}").unwrap();
        assert_eq!(t.render(&items(&[("b", &v)])).unwrap(), v);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Template text made of the pieces the parser cares about, in any order.
        fn text() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("{{"),
                Just("}}"),
                Just("{"),
                Just("}"),
                Just(" "),
                Just("\n"),
                Just("\t"),
                Just("|"),
                Just("\""),
                Just("\\"),
                Just("\\n"),
                Just("a"),
                Just("db-user"),
                Just("A_B"),
                Just("key"),
                Just("base64"),
                Just("trim"),
                Just("urlescape"),
                Just("base64decode"),
                Just("é"),
                Just("😀"),
            ];
            prop_oneof![
                3 => prop::collection::vec(piece, 0..16).prop_map(|v| v.concat()),
                1 => any::<String>(),
            ]
        }

        /// A string literal of the template language for `s`.
        fn literal(s: &str) -> String {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }

        proptest! {
            /// Any text parses or fails with a position inside it, and a parsed template renders
            /// without a panic (every item it names given a value).
            #[test]
            fn any_text_parses_or_points_inside_itself(text in text()) {
                match Template::parse(&text) {
                    Ok(t) => {
                        let values: BTreeMap<String, Vec<u8>> = t.items().into_iter().map(|n| (n.to_string(), b"{\"k\":1}".to_vec())).collect();
                        let rendered = t.render(&values);
                        if !text.contains("{{") {
                            prop_assert_eq!(rendered.unwrap(), text.as_bytes());
                        }
                    }
                    Err(e) => {
                        let lines: Vec<&str> = text.split('\n').collect();
                        prop_assert!(e.line >= 1 && e.line <= lines.len(), "{:?}", e);
                        prop_assert!(e.column >= 1 && e.column <= lines[e.line - 1].chars().count() + 1, "{:?}", e);
                        prop_assert!(!e.problem.is_empty() && !e.fix.is_empty());
                    }
                }
            }

            #[test]
            fn literals_render_their_text(s in any::<String>()) {
                let t = Template::parse(&format!("{{{{ {} }}}}", literal(&s))).unwrap();
                prop_assert_eq!(t.render(&BTreeMap::new()).unwrap(), s.as_bytes());
            }

            #[test]
            fn functions_invert_and_escape(v in prop::collection::vec(any::<u8>(), 0..64), s in any::<String>()) {
                let values = BTreeMap::from([
                    ("v".to_string(), v.clone()),
                    ("j".to_string(), serde_json::json!({ "k": s, "other": 1 }).to_string().into_bytes()),
                ]);
                let r = |text: &str| Template::parse(text).unwrap().render(&values).unwrap();
                prop_assert_eq!(r("{{ v | base64 | base64decode }}"), v.clone());
                prop_assert_eq!(r("{{ j | key \"k\" }}"), s.as_bytes());
                let escaped = r("{{ v | urlescape }}");
                prop_assert!(escaped.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(b)));
                // Percent-decoding gives the value back.
                let mut decoded = Vec::new();
                let mut i = 0;
                while i < escaped.len() {
                    if escaped[i] == b'%' {
                        let hex = std::str::from_utf8(&escaped[i + 1..i + 3]).unwrap();
                        decoded.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 3;
                    } else {
                        decoded.push(escaped[i]);
                        i += 1;
                    }
                }
                prop_assert_eq!(decoded, v);
            }
        }
    }
}
