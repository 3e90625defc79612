//! Diagnostics: what is wrong, where (file, line, column), and in which field.
//!
//! Every syntax, schema and semantic problem found in a policy file becomes one [`Diagnostic`].
//! Checkers collect all of them instead of stopping at the first one. A diagnostic prints as
//!
//! ```text
//! policies/x.toml:12:8: room[2].access_rule: expected one of "restricted", "unrestricted", "direct", found "closed"
//! policies/x.toml:4:1: warning: account[0].password: plaintext password in a policy file; prefer password_hash
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How bad a diagnostic is. Errors make a file unusable; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    /// Converts a byte offset into `src` to a line and column. Offsets past the end (or inside
    /// a multi-byte character) are clamped, so this never panics.
    pub fn from_offset(src: &str, offset: usize) -> Pos {
        let mut offset = offset.min(src.len());
        while offset > 0 && !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = src.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before.get(line_start..).map(|s| s.chars().count()).unwrap_or(0) + 1;
        Pos { line, col }
    }
}

/// Where a model item (an account, a room, a member ...) was defined: the file it came from and
/// the position of its table, plus the positions of the fields that were read from it.
///
/// Origins are metadata for error messages: two origins always compare equal, so a parsed model
/// equals one built in code.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub file: Option<Arc<PathBuf>>,
    pub pos: Option<Pos>,
    /// Field path relative to the item (e.g. `roles[1]`) -> where its value starts.
    pub fields: Vec<(String, Pos)>,
}

impl PartialEq for Origin {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for Origin {}

impl Origin {
    /// The position of a field of this item, falling back to the item's own position.
    pub fn field_pos(&self, field: &str) -> Option<Pos> {
        self.fields.iter().find(|(name, _)| name == field).map(|(_, pos)| *pos).or(self.pos)
    }

    /// `file:line:col` (or whatever part of it is known), for "defined here and there" messages.
    pub fn describe(&self) -> String {
        let mut out = match &self.file {
            Some(f) => f.display().to_string(),
            None => "<input>".to_string(),
        };
        if let Some(p) = self.pos {
            out.push_str(&format!(":{}:{}", p.line, p.col));
        }
        out
    }

    /// Builds a diagnostic located at `field` of this item; `path` is the full field path.
    pub fn diag(&self, severity: Severity, field: &str, path: String, message: String) -> Diagnostic {
        Diagnostic { severity, file: self.file.as_deref().cloned(), pos: self.field_pos(field), path, message }
    }
}

/// One problem found in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file, when the input came from one.
    pub file: Option<PathBuf>,
    /// Line and column, when known.
    pub pos: Option<Pos>,
    /// The field path, e.g. `room[2].access_rule`; empty for file-level problems.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(file: Option<&Path>, pos: Option<Pos>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.map(Path::to_path_buf),
            pos,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn warning(file: Option<&Path>, pos: Option<Pos>, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(file, pos, path, message) }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}", file.display())?,
            None => write!(f, "<input>")?,
        }
        if let Some(pos) = self.pos {
            write!(f, ":{}:{}", pos.line, pos.col)?;
        }
        write!(f, ": ")?;
        if self.severity == Severity::Warning {
            write!(f, "warning: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)
    }
}

/// A list of diagnostics, printed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(other);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// Sorts by file, then position, keeping the order of diagnostics at the same place.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_line_and_column() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(Pos::from_offset(src, 0), Pos { line: 1, col: 1 });
        assert_eq!(Pos::from_offset(src, 6), Pos { line: 2, col: 1 });
        // 'é' is two bytes but one column.
        assert_eq!(Pos::from_offset(src, 9), Pos { line: 2, col: 3 });
        // Out of range and mid-character offsets do not panic.
        assert_eq!(Pos::from_offset(src, 8).line, 2);
        assert_eq!(Pos::from_offset(src, 1000).line, 3);
    }

    #[test]
    fn display_matches_the_documented_form() {
        let d = Diagnostic::error(
            Some(Path::new("policies/x.toml")),
            Some(Pos { line: 12, col: 8 }),
            "room[2].access_rule",
            "expected one of \"restricted\", \"unrestricted\", \"direct\", found \"closed\"",
        );
        assert_eq!(
            d.to_string(),
            "policies/x.toml:12:8: room[2].access_rule: expected one of \"restricted\", \"unrestricted\", \"direct\", found \"closed\""
        );
        let w = Diagnostic::warning(None, None, "", "empty");
        assert_eq!(w.to_string(), "<input>: warning: empty");
    }
}
