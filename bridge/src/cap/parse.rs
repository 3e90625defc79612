//! CAP 1.2 documents into [`Alert`], checked against the standard: required elements,
//! cardinality, keyword values, date format, geometry and the rules between elements
//! (restriction with Restricted scope, references for Update/Cancel, ceiling needs altitude).
//! The first problem is reported with its element path and line.

use chrono::{DateTime, FixedOffset};

use super::xml::{Element, read_tree};
use super::{Alert, Area, DSIG_NS, Info, Keyword, MsgType, NS, NamedValue, Reference, Resource, Scope};

/// Why a document is not valid CAP 1.2: where (line and element path) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: <{element}>: {message}")]
pub struct CapError {
    pub line: usize,
    /// e.g. `alert/info[2]/area[1]/polygon`.
    pub element: String,
    pub message: String,
}

type Result<T> = std::result::Result<T, CapError>;

/// Parses and validates one CAP 1.2 document.
pub fn parse(src: &str) -> Result<Alert> {
    let root = read_tree(src).map_err(|e| CapError {
        line: e.line,
        element: "document".into(),
        message: format!("not well-formed XML: {}", e.message),
    })?;
    if root.name != "alert" || root.ns.as_deref() != Some(NS) {
        return Err(CapError {
            line: root.line,
            element: root.name.clone(),
            message: format!("the root element must be <alert> in namespace {NS}"),
        });
    }
    alert(&root)
}

/// A cursor over one element's children: takes them by name, and at the end refuses any it
/// did not take (unknown or repeated elements).
struct Children<'a> {
    el: &'a Element,
    path: String,
    taken: Vec<bool>,
}

impl<'a> Children<'a> {
    fn new(el: &'a Element, path: String) -> Self {
        Children { el, path, taken: vec![false; el.children.len()] }
    }

    fn err(&self, line: usize, element: &str, message: impl Into<String>) -> CapError {
        CapError { line, element: format!("{}/{element}", self.path), message: message.into() }
    }

    fn all(&mut self, name: &str) -> Vec<(String, &'a Element)> {
        let mut out = Vec::new();
        for (i, c) in self.el.children.iter().enumerate() {
            if c.name == name && c.ns.as_deref() == Some(NS) {
                self.taken[i] = true;
                out.push((format!("{}/{name}[{}]", self.path, out.len() + 1), c));
            }
        }
        out
    }

    fn opt(&mut self, name: &str) -> Result<Option<&'a Element>> {
        let all = self.all(name);
        if let Some((_, second)) = all.get(1) {
            return Err(self.err(second.line, name, "may appear only once"));
        }
        Ok(all.first().map(|(_, e)| *e))
    }

    fn req(&mut self, name: &str) -> Result<&'a Element> {
        self.opt(name)?.ok_or_else(|| self.err(self.el.line, name, "is required and missing"))
    }

    fn text(&mut self, name: &str) -> Result<Option<String>> {
        match self.opt(name)? {
            None => Ok(None),
            Some(e) => {
                leaf(e, &format!("{}/{name}", self.path))?;
                Ok(Some(e.text.trim().to_owned()))
            }
        }
    }

    fn req_text(&mut self, name: &str) -> Result<String> {
        let e = self.req(name)?;
        leaf(e, &format!("{}/{name}", self.path))?;
        let t = e.text.trim();
        if t.is_empty() {
            return Err(self.err(e.line, name, "must not be empty"));
        }
        Ok(t.to_owned())
    }

    fn keyword<K: Keyword>(&mut self) -> Result<K> {
        let e = self.req(K::ELEMENT)?;
        keyword_of(e, &format!("{}/{}", self.path, K::ELEMENT))
    }

    fn date(&mut self, name: &str) -> Result<Option<DateTime<FixedOffset>>> {
        match self.opt(name)? {
            None => Ok(None),
            Some(e) => cap_date(e.text.trim()).map(Some).map_err(|m| self.err(e.line, name, m)),
        }
    }

    fn named_values(&mut self, name: &str) -> Result<Vec<NamedValue>> {
        self.all(name)
            .into_iter()
            .map(|(path, e)| {
                let mut c = Children::new(e, path);
                let value_name = c.req_text("valueName")?;
                let value = c.text("value")?.ok_or_else(|| c.err(e.line, "value", "is required and missing"))?;
                c.finish()?;
                Ok(NamedValue { value_name, value })
            })
            .collect()
    }

    /// Refuses children nobody asked for. An XML-DSig `<Signature>` is allowed where `allow_sig`.
    fn finish_with(self, allow_sig: bool) -> Result<()> {
        for (i, c) in self.el.children.iter().enumerate() {
            if self.taken[i] || (allow_sig && c.name == "Signature" && c.ns.as_deref() == Some(DSIG_NS)) {
                continue;
            }
            let what = match &c.ns {
                Some(ns) if ns != NS => format!("unknown element (namespace {ns})"),
                None => "unknown element (no namespace; CAP elements are in the CAP 1.2 namespace)".into(),
                _ => "unknown element in CAP 1.2".into(),
            };
            return Err(self.err(c.line, &c.name, what));
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        self.finish_with(false)
    }
}

fn leaf(e: &Element, path: &str) -> Result<()> {
    match e.children.first() {
        Some(c) => {
            Err(CapError { line: c.line, element: path.to_owned(), message: "must contain text, not elements".into() })
        }
        None => Ok(()),
    }
}

fn keyword_of<K: Keyword>(e: &Element, path: &str) -> Result<K> {
    K::from_text(e.text.trim()).ok_or_else(|| CapError {
        line: e.line,
        element: path.to_owned(),
        message: format!("must be one of {}, found {:?}", K::expected(), e.text.trim()),
    })
}

/// `2002-05-24T16:49:00-07:00`: seconds and an explicit offset, no fraction, no `Z`.
pub fn cap_date(s: &str) -> std::result::Result<DateTime<FixedOffset>, String> {
    let b = s.as_bytes();
    let shape = b.len() == 25 && matches!(b[19], b'+' | b'-') && b[10] == b'T';
    let parsed = DateTime::parse_from_rfc3339(s);
    match parsed {
        Ok(t) if shape => Ok(t),
        _ => {
            Err(format!("expected a date like \"2002-05-24T16:49:00-07:00\" (offset required, no \"Z\"), found {s:?}"))
        }
    }
}

fn alert(root: &Element) -> Result<Alert> {
    let mut c = Children::new(root, "alert".into());
    let identifier = c.req_text("identifier")?;
    let sender = c.req_text("sender")?;
    for (name, v) in [("identifier", &identifier), ("sender", &sender)] {
        if v.chars().any(|ch| ch.is_whitespace() || ch == ',' || ch == '<' || ch == '&') {
            return Err(c.err(root.line, name, "must not contain spaces, commas or restricted characters (< &)"));
        }
    }
    let sent_el = c.req("sent")?;
    let sent = cap_date(sent_el.text.trim()).map_err(|m| c.err(sent_el.line, "sent", m))?;
    let status = c.keyword()?;
    let msg_type: MsgType = c.keyword()?;
    let source = c.text("source")?;
    let scope: Scope = c.keyword()?;
    let restriction = c.text("restriction")?;
    let addresses = c.text("addresses")?;
    if scope == Scope::Restricted && restriction.is_none() {
        return Err(c.err(root.line, "restriction", "is required when scope is Restricted"));
    }
    if scope == Scope::Private && addresses.is_none() {
        return Err(c.err(root.line, "addresses", "is required when scope is Private"));
    }
    let codes = c.all("code").into_iter().map(|(_, e)| e.text.trim().to_owned()).collect();
    let note = c.text("note")?;
    let references = match c.opt("references")? {
        None => Vec::new(),
        Some(e) => references(e.text.trim()).map_err(|m| c.err(e.line, "references", m))?,
    };
    if matches!(msg_type, MsgType::Update | MsgType::Cancel | MsgType::Ack | MsgType::Error) && references.is_empty() {
        return Err(c.err(root.line, "references", format!("is required for msgType {msg_type}")));
    }
    let incidents = c.text("incidents")?;
    let infos = c.all("info").into_iter().map(|(path, e)| info(e, path)).collect::<Result<Vec<_>>>()?;
    let signed = root.children.iter().any(|e| e.name == "Signature" && e.ns.as_deref() == Some(DSIG_NS));
    c.finish_with(true)?;
    Ok(Alert {
        identifier,
        sender,
        sent,
        status,
        msg_type,
        source,
        scope,
        restriction,
        addresses,
        codes,
        note,
        references,
        incidents,
        infos,
        signed,
    })
}

/// `sender,identifier,sent` triples separated by white space.
pub(crate) fn references(text: &str) -> std::result::Result<Vec<Reference>, String> {
    text.split_whitespace()
        .map(|r| {
            let parts: Vec<&str> = r.split(',').collect();
            match parts.as_slice() {
                [sender, identifier, sent] if !sender.is_empty() && !identifier.is_empty() => {
                    cap_date(sent)?;
                    Ok(Reference { sender: (*sender).into(), identifier: (*identifier).into(), sent: (*sent).into() })
                }
                _ => Err(format!("each reference is sender,identifier,sent; found {r:?}")),
            }
        })
        .collect()
}

fn info(el: &Element, path: String) -> Result<Info> {
    let mut c = Children::new(el, path);
    let language = c.text("language")?.unwrap_or_else(|| "en-US".into());
    let categories = c.all("category").into_iter().map(|(p, e)| keyword_of(e, &p)).collect::<Result<Vec<_>>>()?;
    if categories.is_empty() {
        return Err(c.err(el.line, "category", "at least one is required"));
    }
    let event = c.req_text("event")?;
    let response_types =
        c.all("responseType").into_iter().map(|(p, e)| keyword_of(e, &p)).collect::<Result<Vec<_>>>()?;
    let urgency = c.keyword()?;
    let severity = c.keyword()?;
    let certainty = c.keyword()?;
    let audience = c.text("audience")?;
    let event_codes = c.named_values("eventCode")?;
    let effective = c.date("effective")?;
    let onset = c.date("onset")?;
    let expires = c.date("expires")?;
    let sender_name = c.text("senderName")?;
    let headline = c.text("headline")?;
    let description = c.text("description")?;
    let instruction = c.text("instruction")?;
    let web = c.text("web")?;
    let contact = c.text("contact")?;
    let parameters = c.named_values("parameter")?;
    let resources = c.all("resource").into_iter().map(|(p, e)| resource(e, p)).collect::<Result<Vec<_>>>()?;
    let areas = c.all("area").into_iter().map(|(p, e)| area(e, p)).collect::<Result<Vec<_>>>()?;
    c.finish()?;
    Ok(Info {
        language,
        categories,
        event,
        response_types,
        urgency,
        severity,
        certainty,
        audience,
        event_codes,
        effective,
        onset,
        expires,
        sender_name,
        headline,
        description,
        instruction,
        web,
        contact,
        parameters,
        resources,
        areas,
    })
}

fn resource(el: &Element, path: String) -> Result<Resource> {
    let mut c = Children::new(el, path);
    let resource_desc = c.req_text("resourceDesc")?;
    let mime_type = c.req_text("mimeType")?;
    let size = match c.opt("size")? {
        None => None,
        Some(e) => {
            Some(e.text.trim().parse::<u64>().map_err(|_| c.err(e.line, "size", "must be a whole number of bytes"))?)
        }
    };
    let uri = c.text("uri")?;
    let deref_uri = c.text("derefUri")?;
    let digest = c.text("digest")?;
    c.finish()?;
    Ok(Resource { resource_desc, mime_type, size, uri, deref_uri, digest })
}

fn area(el: &Element, path: String) -> Result<Area> {
    let mut c = Children::new(el, path);
    let area_desc = c.req_text("areaDesc")?;
    let polygons = c
        .all("polygon")
        .into_iter()
        .map(|(p, e)| parse_polygon(&e.text).map_err(|m| CapError { line: e.line, element: p, message: m }))
        .collect::<Result<Vec<_>>>()?;
    let circles = c
        .all("circle")
        .into_iter()
        .map(|(p, e)| parse_circle(&e.text).map_err(|m| CapError { line: e.line, element: p, message: m }))
        .collect::<Result<Vec<_>>>()?;
    let geocodes = c.named_values("geocode")?;
    let number =
        |c: &mut Children<'_>, name: &str| -> Result<Option<f64>> {
            match c.opt(name)? {
                None => Ok(None),
                Some(e) => {
                    e.text.trim().parse::<f64>().ok().filter(|v| v.is_finite()).map(Some).ok_or_else(|| {
                        c.err(e.line, name, format!("must be a number of feet, found {:?}", e.text.trim()))
                    })
                }
            }
        };
    let altitude = number(&mut c, "altitude")?;
    let ceiling = number(&mut c, "ceiling")?;
    if ceiling.is_some() && altitude.is_none() {
        return Err(c.err(el.line, "ceiling", "may only be given with an altitude"));
    }
    if let (Some(a), Some(ce)) = (altitude, ceiling)
        && ce < a
    {
        return Err(c.err(el.line, "ceiling", "must not be below the altitude"));
    }
    c.finish()?;
    Ok(Area { area_desc, polygons, circles, geocodes, altitude, ceiling })
}

pub use tocsin_policies::node_policy::bridge::{parse_circle, parse_polygon};
