//! The German federal warning API (warnung.bund.de, the data behind the NINA app): map data
//! lists such as `/mowas/mapData.json` name the current warnings (`id`, `version`), and each
//! warning's document `/warnings/{id}.json` is CAP 1.2 written as JSON (the element names of
//! CAP, lists for repeated elements). Documents are checked as CAP XML is: the same keywords,
//! dates, geometry and rules, each error naming the JSON pointer.

use serde_json::Value;

use super::{JsonError, Obj, Result, cap_token};
use crate::cap::parse::{parse_circle, parse_polygon, references};
use crate::cap::{Alert, Area, Info, Keyword, MsgType, Resource, Scope};

/// One entry of a map data list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    /// Raised by the publisher with each new version of the warning.
    pub version: u64,
}

/// Whether a polled body looks like the warning API's JSON rather than XML.
pub fn is_json(body: &str) -> bool {
    body.trim_start().starts_with(['[', '{'])
}

/// The warnings a map data list names.
pub fn map_data(text: &str) -> Result<Vec<Listed>> {
    let v: Value = serde_json::from_str(text).map_err(|e| JsonError::syntax(&e))?;
    let items = v.as_array().ok_or_else(|| JsonError::new("/", "a map data list is a JSON array"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let o = Obj::new(item, &format!("/{i}"))?;
            let id = o.req_str("id")?;
            // Warning ids go into a URL path: no separators or escapes.
            if !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
                return Err(JsonError::new(o.at("id"), format!("not a warning id: {id:?}")));
            }
            let version = item.get("version").and_then(Value::as_u64).unwrap_or(0);
            Ok(Listed { id, version })
        })
        .collect()
}

/// One warning document.
pub fn warning(text: &str) -> Result<Alert> {
    let v: Value = serde_json::from_str(text).map_err(|e| JsonError::syntax(&e))?;
    let o = Obj::new(&v, "")?;
    let identifier = o.req_str("identifier")?;
    cap_token(&o.at("identifier"), &identifier)?;
    let sender = o.req_str("sender")?;
    cap_token(&o.at("sender"), &sender)?;
    let sent = o.date("sent")?.ok_or_else(|| JsonError::new(o.at("sent"), "is required and missing"))?;
    let msg_type: MsgType = o.keyword("msgType")?;
    let scope: Scope = o.keyword("scope")?;
    let restriction = o.str("restriction")?;
    let addresses = o.str("addresses")?;
    if scope == Scope::Restricted && restriction.is_none() {
        return Err(JsonError::new(o.at("restriction"), "is required when scope is Restricted"));
    }
    if scope == Scope::Private && addresses.is_none() {
        return Err(JsonError::new(o.at("addresses"), "is required when scope is Private"));
    }
    let references = match o.str("references")? {
        None => Vec::new(),
        Some(text) => references(&text).map_err(|m| JsonError::new(o.at("references"), m))?,
    };
    if msg_type != MsgType::Alert && references.is_empty() {
        return Err(JsonError::new(o.at("references"), format!("is required for msgType {msg_type}")));
    }
    let infos = o.list("info").into_iter().map(|(at, v)| info(v, &at)).collect::<Result<Vec<_>>>()?;
    Ok(Alert {
        identifier,
        sender,
        sent,
        status: o.keyword("status")?,
        msg_type,
        source: o.str("source")?,
        scope,
        restriction,
        addresses,
        codes: o.str_list("code")?.into_iter().map(|(_, c)| c).collect(),
        note: o.str("note")?,
        references,
        incidents: o.str("incidents")?,
        infos,
        signed: false,
    })
}

fn keywords<K: Keyword>(o: &Obj<'_>, key: &str) -> Result<Vec<K>> {
    o.str_list(key)?
        .into_iter()
        .map(|(at, s)| {
            K::from_text(&s).ok_or_else(|| JsonError::new(at, format!("must be one of {}, found {s:?}", K::expected())))
        })
        .collect()
}

fn info(v: &Value, path: &str) -> Result<Info> {
    let o = Obj::new(v, path)?;
    let categories = keywords(&o, "category")?;
    if categories.is_empty() {
        return Err(JsonError::new(o.at("category"), "at least one is required"));
    }
    let areas = o.list("area").into_iter().map(|(at, v)| area(v, &at)).collect::<Result<Vec<_>>>()?;
    let resources = o.list("resource").into_iter().map(|(at, v)| resource(v, &at)).collect::<Result<Vec<_>>>()?;
    Ok(Info {
        language: o.str("language")?.unwrap_or_else(|| "en-US".into()),
        categories,
        event: o.req_str("event")?,
        response_types: keywords(&o, "responseType")?,
        urgency: o.keyword("urgency")?,
        severity: o.keyword("severity")?,
        certainty: o.keyword("certainty")?,
        audience: o.str("audience")?,
        event_codes: o.named_values("eventCode")?,
        effective: o.date("effective")?,
        onset: o.date("onset")?,
        expires: o.date("expires")?,
        sender_name: o.str("senderName")?,
        headline: o.str("headline")?,
        description: o.str("description")?,
        instruction: o.str("instruction")?,
        web: o.str("web")?,
        contact: o.str("contact")?,
        parameters: o.named_values("parameter")?,
        resources,
        areas,
    })
}

fn resource(v: &Value, path: &str) -> Result<Resource> {
    let o = Obj::new(v, path)?;
    Ok(Resource {
        resource_desc: o.req_str("resourceDesc")?,
        mime_type: o.req_str("mimeType")?,
        size: v.get("size").and_then(Value::as_u64),
        uri: o.str("uri")?,
        deref_uri: o.str("derefUri")?,
        digest: o.str("digest")?,
    })
}

fn area(v: &Value, path: &str) -> Result<Area> {
    let o = Obj::new(v, path)?;
    let polygons = o
        .str_list("polygon")?
        .into_iter()
        .map(|(at, s)| parse_polygon(&s).map_err(|m| JsonError::new(at, m)))
        .collect::<Result<Vec<_>>>()?;
    let circles = o
        .str_list("circle")?
        .into_iter()
        .map(|(at, s)| parse_circle(&s).map_err(|m| JsonError::new(at, m)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Area {
        area_desc: o.req_str("areaDesc")?,
        polygons,
        circles,
        geocodes: o.named_values("geocode")?,
        altitude: None,
        ceiling: None,
    })
}
