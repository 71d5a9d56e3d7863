//! The template language of `<prefix>/template.<file>` (task T fills this in).

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {}

/// Where and why a template does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {problem}")]
pub struct TemplateError {
    pub line: usize,
    pub column: usize,
    pub problem: String,
    pub fix: String,
}
