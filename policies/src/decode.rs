//! A small schema reader over toml's spanned document tree.
//!
//! serde stops at the first error and does not say which field it was in. Policy files are read
//! by hand instead: each table becomes an [`Obj`] that hands out typed fields, records where each
//! one was, and at the end reports the keys nobody asked for. Every problem becomes a
//! [`Diagnostic`] with file, line, column and field path, and reading goes on.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostics::{Diagnostic, Origin, Pos, Severity};

/// The document being read and the diagnostics found so far.
pub(crate) struct Reader<'s> {
    pub text: &'s str,
    pub file: Option<Arc<PathBuf>>,
    pub diags: Vec<Diagnostic>,
}

impl<'s> Reader<'s> {
    pub fn new(text: &'s str, file: Option<Arc<PathBuf>>) -> Self {
        Reader { text, file, diags: Vec::new() }
    }

    pub fn pos(&self, offset: usize) -> Pos {
        Pos::from_offset(self.text, offset)
    }

    pub fn report(&mut self, severity: Severity, span: &Range<usize>, path: &str, message: String) {
        let pos = self.pos(span.start);
        self.diags.push(Diagnostic {
            severity,
            file: self.file.as_deref().cloned(),
            pos: Some(pos),
            path: path.to_string(),
            message,
        });
    }

    pub fn error(&mut self, span: &Range<usize>, path: &str, message: String) {
        self.report(Severity::Error, span, path, message);
    }

    /// Parses the TOML syntax, reporting every syntax error toml finds.
    pub fn parse(&mut self) -> Option<Spanned<DeTable<'s>>> {
        let (doc, errors) = DeTable::parse_recoverable(self.text);
        if errors.is_empty() {
            return Some(doc);
        }
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            let message = format!("TOML syntax error: {}", e.message().trim_end());
            self.error(&span, "", message);
        }
        None
    }

    pub fn origin(&self, span: &Range<usize>) -> Origin {
        Origin { file: self.file.clone(), pos: Some(self.pos(span.start)), fields: Vec::new() }
    }
}

/// A keyword-valued field (an enum written as a string).
pub(crate) trait Keyword: Sized + Copy + 'static {
    const ALL: &'static [(&'static str, Self)];

    fn from_keyword(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(k, _)| *k == s).map(|(_, v)| *v)
    }

    fn keyword(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::ALL.iter().find(|(_, v)| *v == self).map(|(k, _)| *k).unwrap_or("?")
    }

    /// `one of "a", "b", "c"`.
    fn choices() -> String {
        let names: Vec<String> = Self::ALL.iter().map(|(k, _)| format!("{k:?}")).collect();
        format!("one of {}", names.join(", "))
    }
}

type Value<'i> = Spanned<DeValue<'i>>;

/// One TOML table being read.
pub(crate) struct Obj<'a, 'i> {
    table: &'a DeTable<'i>,
    span: Range<usize>,
    path: String,
    known: Vec<&'static str>,
    origin: Origin,
}

impl<'a, 'i> Obj<'a, 'i> {
    pub fn new(r: &Reader<'_>, table: &'a DeTable<'i>, span: Range<usize>, path: String) -> Self {
        let origin = r.origin(&span);
        Obj { table, span, path, known: Vec::new(), origin }
    }

    /// The full field path of `key` in this table.
    pub fn field_path(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{}", self.path, key) }
    }

    /// Where `key`'s value is, or the table itself when the key is absent.
    pub fn span_of(&self, key: &str) -> Range<usize> {
        self.table.get(key).map(|v| v.span()).unwrap_or_else(|| self.span.clone())
    }

    /// Whether the table has `key` (does not mark it as read).
    pub fn has(&self, key: &str) -> bool {
        self.table.get(key).is_some()
    }

    fn get(&mut self, r: &Reader<'_>, key: &'static str) -> Option<&'a Value<'i>> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        let value = self.table.get(key)?;
        self.origin.fields.push((key.to_string(), r.pos(value.span().start)));
        Some(value)
    }

    fn wrong_type(&self, r: &mut Reader<'_>, key: &str, expected: &str, found: &Value<'_>) {
        let message = format!("expected {expected}, found {}", describe(found.get_ref()));
        r.error(&found.span(), &self.field_path(key), message);
    }

    fn missing(&self, r: &mut Reader<'_>, key: &str) {
        r.error(&self.span, &self.field_path(key), "missing required field".to_string());
    }

    pub fn opt_str(&mut self, r: &mut Reader<'_>, key: &'static str) -> Option<String> {
        let value = self.get(r, key)?;
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(r, key, "a string", value);
                None
            }
        }
    }

    pub fn req_str(&mut self, r: &mut Reader<'_>, key: &'static str) -> Option<String> {
        if !self.has(key) {
            self.get(r, key);
            self.missing(r, key);
            return None;
        }
        self.opt_str(r, key)
    }

    /// A string, or a TOML datetime literal given as its text (for timestamps).
    pub fn req_str_or_datetime(&mut self, r: &mut Reader<'_>, key: &'static str) -> Option<String> {
        match self.table.get(key).map(|v| v.get_ref()) {
            Some(DeValue::Datetime(dt)) => {
                self.get(r, key);
                Some(dt.to_string())
            }
            _ => self.req_str(r, key),
        }
    }

    pub fn opt_bool(&mut self, r: &mut Reader<'_>, key: &'static str) -> Option<bool> {
        let value = self.get(r, key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(r, key, "a boolean (true or false)", value);
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub fn opt_int(&mut self, r: &mut Reader<'_>, key: &'static str, min: i64, max: i64) -> Option<i64> {
        let value = self.get(r, key)?;
        let expected = if max == i64::MAX {
            format!("an integer of at least {min}")
        } else {
            format!("an integer from {min} to {max}")
        };
        match value.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    let message = format!("expected {expected}, found {}", i.as_str());
                    r.error(&value.span(), &self.field_path(key), message);
                    None
                }
            },
            _ => {
                self.wrong_type(r, key, &expected, value);
                None
            }
        }
    }

    pub fn req_int(&mut self, r: &mut Reader<'_>, key: &'static str, min: i64, max: i64) -> Option<i64> {
        if !self.has(key) {
            self.get(r, key);
            self.missing(r, key);
            return None;
        }
        self.opt_int(r, key, min, max)
    }

    pub fn opt_keyword<K: Keyword>(&mut self, r: &mut Reader<'_>, key: &'static str) -> Option<K> {
        let value = self.get(r, key)?;
        match value.get_ref() {
            DeValue::String(s) => match K::from_keyword(s) {
                Some(k) => Some(k),
                None => {
                    let message = format!("expected {}, found {:?}", K::choices(), s.as_ref());
                    r.error(&value.span(), &self.field_path(key), message);
                    None
                }
            },
            _ => {
                self.wrong_type(r, key, &K::choices(), value);
                None
            }
        }
    }

    pub fn req_keyword<K: Keyword>(&mut self, r: &mut Reader<'_>, key: &'static str) -> Option<K> {
        if !self.has(key) {
            self.get(r, key);
            self.missing(r, key);
            return None;
        }
        self.opt_keyword(r, key)
    }

    /// An array of strings; each element's position is recorded as `key[i]`.
    pub fn opt_str_list(&mut self, r: &mut Reader<'_>, key: &'static str) -> Option<Vec<String>> {
        let value = self.get(r, key)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(r, key, "an array of strings", value);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) => {
                    self.origin.fields.push((format!("{key}[{i}]"), r.pos(item.span().start)));
                    out.push(s.to_string());
                }
                other => {
                    let message = format!("expected a string, found {}", describe(other));
                    r.error(&item.span(), &format!("{}[{i}]", self.field_path(key)), message);
                }
            }
        }
        Some(out)
    }

    pub fn opt_keyword_list<K: Keyword>(&mut self, r: &mut Reader<'_>, key: &'static str) -> Option<Vec<K>> {
        let value = self.get(r, key)?;
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(r, key, "an array of strings", value);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.field_path(key));
            match item.get_ref() {
                DeValue::String(s) => match K::from_keyword(s) {
                    Some(k) => out.push(k),
                    None => r.error(&item.span(), &path, format!("expected {}, found {:?}", K::choices(), s.as_ref())),
                },
                other => r.error(&item.span(), &path, format!("expected a string, found {}", describe(other))),
            }
        }
        Some(out)
    }

    /// A sub-table (`[key]` or `key = { ... }`).
    pub fn opt_table(&mut self, r: &mut Reader<'_>, key: &'static str) -> Option<Obj<'a, 'i>> {
        let value = self.get(r, key)?;
        match value.get_ref() {
            DeValue::Table(t) => Some(Obj::new(r, t, value.span(), self.field_path(key))),
            _ => {
                self.wrong_type(r, key, &format!("a table ([{key}])"), value);
                None
            }
        }
    }

    /// An array of tables (`[[key]]`); items get paths `key[0]`, `key[1]` ...
    pub fn tables(&mut self, r: &mut Reader<'_>, key: &'static str) -> Vec<Obj<'a, 'i>> {
        let Some(value) = self.get(r, key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(r, key, &format!("an array of tables ([[{key}]])"), value);
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.field_path(key));
            match item.get_ref() {
                DeValue::Table(t) => out.push(Obj::new(r, t, item.span(), path)),
                other => r.error(&item.span(), &path, format!("expected a table, found {}", describe(other))),
            }
        }
        out
    }

    /// Reports every key that no reader asked for, and returns where the item was defined.
    pub fn finish(self, r: &mut Reader<'_>) -> Origin {
        for (k, v) in self.table.iter() {
            let name: &str = k.get_ref();
            if self.known.contains(&name) {
                continue;
            }
            let mut message = format!("unknown field {name:?}");
            if let Some(close) = closest(name, &self.known) {
                message.push_str(&format!(", did you mean {close:?}?"));
            }
            let mut expected: Vec<String> = self.known.iter().map(|k| format!("{k:?}")).collect();
            expected.sort();
            if !expected.is_empty() {
                message.push_str(&format!(" (expected one of {})", expected.join(", ")));
            }
            let span = if k.span().is_empty() { v.span() } else { k.span() };
            r.error(&span, &self.field_path(name), message);
        }
        self.origin
    }
}

/// A short description of a value for "expected X, found Y" messages.
pub(crate) fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("string {:?}", s.as_ref()),
        DeValue::Integer(i) => format!("integer {}", i.as_str()),
        DeValue::Float(f) => format!("float {}", f.as_str()),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("datetime {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// The known key nearest to a misspelt one, if it is close enough to be a likely typo.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known.iter().map(|k| (edit_distance(name, k), *k)).filter(|(d, k)| *d <= 2.max(k.len() / 4)).min().map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest("acces_rule", &["alias", "access_rule"]), Some("access_rule"));
        assert_eq!(closest("zzz", &["alias", "access_rule"]), None);
    }
}
