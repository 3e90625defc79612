//! Alerts that arrive as JSON: the German warning API's CAP-shaped documents ([`nina`]: MoWaS
//! and the other NINA feeds) and documents posted by sensors and other systems, mapped to an
//! alert by a template of the source ([`template`]). Both end as a [`cap::Alert`] and go through
//! the same routing, dedup and outbox as CAP XML.

pub mod nina;
pub mod template;

use serde_json::Value;

use crate::cap::{self, Keyword};

/// Why a JSON document cannot be taken as an alert: where (a JSON pointer into the document,
/// or for a template the field that rendered it) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct JsonError {
    /// `/info/0/severity`, `line 3` for a syntax error, or `template field severity`.
    pub at: String,
    pub message: String,
}

impl JsonError {
    pub fn new(at: impl Into<String>, message: impl Into<String>) -> Self {
        JsonError { at: at.into(), message: message.into() }
    }

    /// A document that is not JSON at all.
    pub fn syntax(e: &serde_json::Error) -> Self {
        JsonError::new(format!("line {}", e.line()), format!("not JSON: {e}"))
    }
}

type Result<T> = std::result::Result<T, JsonError>;

/// Typed reads from one JSON object, each error naming the member's pointer.
pub(crate) struct Obj<'a> {
    map: &'a serde_json::Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(v: &'a Value, path: &str) -> Result<Self> {
        let map = v.as_object().ok_or_else(|| JsonError::new(or_root(path), "must be an object"))?;
        Ok(Obj { map, path: path.to_owned() })
    }

    pub(crate) fn at(&self, key: &str) -> String {
        format!("{}/{key}", self.path)
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<String>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(_) => Err(JsonError::new(self.at(key), "must be a string")),
        }
    }

    pub(crate) fn req_str(&self, key: &str) -> Result<String> {
        self.str(key)?.ok_or_else(|| JsonError::new(self.at(key), "is required and missing"))
    }

    pub(crate) fn keyword<K: Keyword>(&self, key: &str) -> Result<K> {
        let text = self.req_str(key)?;
        K::from_text(&text)
            .ok_or_else(|| JsonError::new(self.at(key), format!("must be one of {}, found {text:?}", K::expected())))
    }

    pub(crate) fn date(&self, key: &str) -> Result<Option<chrono::DateTime<chrono::FixedOffset>>> {
        match self.str(key)? {
            None => Ok(None),
            Some(s) => cap::parse::cap_date(&s).map(Some).map_err(|m| JsonError::new(self.at(key), m)),
        }
    }

    /// A member that is a list (a single value counts as a list of one, as some feeds write).
    pub(crate) fn list(&self, key: &str) -> Vec<(String, &'a Value)> {
        match self.map.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                items.iter().enumerate().map(|(i, v)| (format!("{}/{key}/{i}", self.path), v)).collect()
            }
            Some(v) => vec![(self.at(key), v)],
        }
    }

    pub(crate) fn str_list(&self, key: &str) -> Result<Vec<(String, String)>> {
        self.list(key)
            .into_iter()
            .map(|(at, v)| match v.as_str() {
                Some(s) => Ok((at, s.trim().to_owned())),
                None => Err(JsonError::new(at, "must be a string")),
            })
            .collect()
    }

    /// `[{"valueName": ..., "value": ...}]`.
    pub(crate) fn named_values(&self, key: &str) -> Result<Vec<cap::NamedValue>> {
        self.list(key)
            .into_iter()
            .map(|(at, v)| {
                let o = Obj::new(v, &at)?;
                let value_name = o.req_str("valueName")?;
                let value = match o.map.get("value") {
                    Some(Value::String(s)) => s.trim().to_owned(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => return Err(JsonError::new(o.at("value"), "is required: a string")),
                };
                Ok(cap::NamedValue { value_name, value })
            })
            .collect()
    }
}

fn or_root(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

/// Refuses identifiers and senders CAP would refuse (they are part of the dedup key).
pub(crate) fn cap_token(at: &str, value: &str) -> Result<()> {
    if value.chars().any(|ch| ch.is_whitespace() || ch == ',' || ch == '<' || ch == '&') {
        return Err(JsonError::new(at, format!("must not contain spaces, commas, < or &; found {value:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
