//! Webhook templates: a source's `[source.template]` maps a posted JSON document (a river gauge
//! reading, a smoke detector's event) to an alert. Each field is a MiniJinja template rendered
//! with the document as its context, e.g. `headline = "{{ station.name }}: {{ level_cm }} cm"`
//! or `severity = "{% if level_cm > 400 %}Severe{% else %}Moderate{% endif %}"`. What the
//! fields render to is checked as CAP is (keywords, dates, geometry), each error naming the
//! field. A value the document lacks is an error, not an empty string.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Timelike, Utc};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use super::{JsonError, cap_token};
use crate::cap::parse::{cap_date, parse_circle, parse_polygon, references};
use crate::cap::{Alert, Area, Category, Info, Keyword, MsgType, NamedValue, Scope, Status};

/// The fields a template may set, and whether it must.
pub const FIELDS: &[(&str, bool)] = &[
    ("identifier", true),
    ("sender", true),
    ("sent", false),
    ("status", false),
    ("msg_type", false),
    ("references", false),
    ("note", false),
    ("language", false),
    ("category", true),
    ("event", true),
    ("urgency", true),
    ("severity", true),
    ("certainty", true),
    ("headline", false),
    ("description", false),
    ("instruction", false),
    ("sender_name", false),
    ("web", false),
    ("contact", false),
    ("onset", false),
    ("expires", false),
    ("area_desc", false),
    ("polygon", false),
    ("circle", false),
    ("geocode", false),
];

/// A template that does not compile: which field, the line inside its text, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template field {field}: {message}")]
pub struct TemplateError {
    pub field: String,
    /// 1-based line within the field's text, where the engine knows it.
    pub line: Option<usize>,
    pub message: String,
}

/// A source's compiled template.
#[derive(Debug)]
pub struct AlertTemplate {
    env: Environment<'static>,
}

impl AlertTemplate {
    /// Compiles every field, refusing unknown and missing ones.
    pub fn compile(fields: &BTreeMap<String, String>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in fields {
            if !FIELDS.iter().any(|(f, _)| f == name) {
                let known = FIELDS.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ");
                return Err(TemplateError {
                    field: name.clone(),
                    line: None,
                    message: format!("unknown field (known: {known})"),
                });
            }
            env.add_template_owned(name.clone(), source.clone()).map_err(|e| TemplateError {
                field: name.clone(),
                line: e.line(),
                message: e.detail().map_or_else(|| e.kind().to_string(), |d| format!("{}: {d}", e.kind())),
            })?;
        }
        if let Some((missing, _)) = FIELDS.iter().find(|(f, required)| *required && !fields.contains_key(*f)) {
            return Err(TemplateError { field: (*missing).into(), line: None, message: "is required".into() });
        }
        Ok(AlertTemplate { env })
    }

    /// One field rendered with `doc`, trimmed; `None` when the template does not set it or it
    /// renders empty.
    fn field(&self, name: &str, doc: &minijinja::Value) -> Result<Option<String>, JsonError> {
        let Ok(t) = self.env.get_template(name) else { return Ok(None) };
        let text = t.render(doc).map_err(|e| {
            let detail = e.detail().map_or_else(|| e.kind().to_string(), |d| format!("{}: {d}", e.kind()));
            JsonError::new(format!("template field {name}"), detail)
        })?;
        let text = text.trim();
        Ok((!text.is_empty()).then(|| text.to_owned()))
    }

    fn req(&self, name: &str, doc: &minijinja::Value) -> Result<String, JsonError> {
        self.field(name, doc)?
            .ok_or_else(|| JsonError::new(format!("template field {name}"), "rendered empty; it is required"))
    }

    fn keyword<K: Keyword>(&self, name: &str, doc: &minijinja::Value) -> Result<Option<K>, JsonError> {
        match self.field(name, doc)? {
            None => Ok(None),
            Some(text) => K::from_text(&text).map(Some).ok_or_else(|| {
                JsonError::new(
                    format!("template field {name}"),
                    format!("rendered {text:?}; must be one of {}", K::expected()),
                )
            }),
        }
    }

    fn req_keyword<K: Keyword>(&self, name: &str, doc: &minijinja::Value) -> Result<K, JsonError> {
        self.keyword(name, doc)?
            .ok_or_else(|| JsonError::new(format!("template field {name}"), "rendered empty; it is required"))
    }

    fn date(&self, name: &str, doc: &minijinja::Value) -> Result<Option<DateTime<FixedOffset>>, JsonError> {
        match self.field(name, doc)? {
            None => Ok(None),
            Some(s) => cap_date(&s).map(Some).map_err(|m| JsonError::new(format!("template field {name}"), m)),
        }
    }

    /// The alert for one posted document; `now` stands in for a missing `sent`.
    pub fn render(&self, doc: &Value, now: DateTime<Utc>) -> Result<Alert, JsonError> {
        let ctx = minijinja::Value::from(minijinja::value::Serde(doc));
        let identifier = self.req("identifier", &ctx)?;
        cap_token("template field identifier", &identifier)?;
        let sender = self.req("sender", &ctx)?;
        cap_token("template field sender", &sender)?;
        let sent = match self.date("sent", &ctx)? {
            Some(t) => t,
            // CAP dates carry whole seconds.
            None => now.with_nanosecond(0).unwrap_or(now).fixed_offset(),
        };
        let msg_type = self.keyword("msg_type", &ctx)?.unwrap_or(MsgType::Alert);
        let references = match self.field("references", &ctx)? {
            None => Vec::new(),
            Some(r) => references(&r).map_err(|m| JsonError::new("template field references", m))?,
        };
        if msg_type != MsgType::Alert && references.is_empty() {
            return Err(JsonError::new("template field references", format!("is required for msg_type {msg_type}")));
        }
        let categories = self
            .req("category", &ctx)?
            .split([',', ' '])
            .filter(|c| !c.is_empty())
            .map(|c| {
                Category::from_text(c).ok_or_else(|| {
                    JsonError::new(
                        "template field category",
                        format!("rendered {c:?}; must be one of {}", Category::expected()),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let info = Info {
            language: self.field("language", &ctx)?.unwrap_or_else(|| "en-US".into()),
            categories,
            event: self.req("event", &ctx)?,
            response_types: Vec::new(),
            urgency: self.req_keyword("urgency", &ctx)?,
            severity: self.req_keyword("severity", &ctx)?,
            certainty: self.req_keyword("certainty", &ctx)?,
            audience: None,
            event_codes: Vec::new(),
            effective: None,
            onset: self.date("onset", &ctx)?,
            expires: self.date("expires", &ctx)?,
            sender_name: self.field("sender_name", &ctx)?,
            headline: self.field("headline", &ctx)?,
            description: self.field("description", &ctx)?,
            instruction: self.field("instruction", &ctx)?,
            web: self.field("web", &ctx)?,
            contact: self.field("contact", &ctx)?,
            parameters: Vec::new(),
            resources: Vec::new(),
            areas: self.area(&ctx)?.into_iter().collect(),
        };
        Ok(Alert {
            identifier,
            sender,
            sent,
            status: self.keyword("status", &ctx)?.unwrap_or(Status::Actual),
            msg_type,
            source: None,
            scope: Scope::Public,
            restriction: None,
            addresses: None,
            codes: Vec::new(),
            note: self.field("note", &ctx)?,
            references,
            incidents: None,
            infos: vec![info],
            signed: false,
        })
    }

    /// The area, when the template gives one: `polygon` (CAP syntax), `circle`
    /// (`lat,lon radius_km`), `geocode` (`valueName=value`, several separated by spaces).
    fn area(&self, ctx: &minijinja::Value) -> Result<Option<Area>, JsonError> {
        let polygon = self.field("polygon", ctx)?;
        let circle = self.field("circle", ctx)?;
        let geocode = self.field("geocode", ctx)?;
        let area_desc = self.field("area_desc", ctx)?;
        if polygon.is_none() && circle.is_none() && geocode.is_none() && area_desc.is_none() {
            return Ok(None);
        }
        let polygons = match polygon {
            None => Vec::new(),
            Some(p) => vec![parse_polygon(&p).map_err(|m| JsonError::new("template field polygon", m))?],
        };
        let circles = match circle {
            None => Vec::new(),
            Some(c) => vec![parse_circle(&c).map_err(|m| JsonError::new("template field circle", m))?],
        };
        let geocodes = geocode
            .iter()
            .flat_map(|g| g.split_whitespace())
            .map(|g| match g.split_once('=') {
                Some((n, v)) if !n.is_empty() && !v.is_empty() => {
                    Ok(NamedValue { value_name: n.to_owned(), value: v.to_owned() })
                }
                _ => Err(JsonError::new("template field geocode", format!("rendered {g:?}; expected valueName=value"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Area {
            area_desc: area_desc.unwrap_or_else(|| "(not given)".into()),
            polygons,
            circles,
            geocodes,
            altitude: None,
            ceiling: None,
        }))
    }
}
