//! [`Alert`] back to CAP 1.2 XML, elements in the schema's order, through quick-xml's writer
//! (which escapes text).

use std::io;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use super::{Alert, Area, Info, Keyword, NS, NamedValue, Resource, cap_datetime};

type W = Writer<Vec<u8>>;

fn open(w: &mut W, name: &str) -> io::Result<()> {
    w.write_event(Event::Start(BytesStart::new(name)))
}

fn close(w: &mut W, name: &str) -> io::Result<()> {
    w.write_event(Event::End(BytesEnd::new(name)))
}

fn leaf(w: &mut W, name: &str, text: &str) -> io::Result<()> {
    open(w, name)?;
    w.write_event(Event::Text(BytesText::new(text)))?;
    close(w, name)
}

fn opt(w: &mut W, name: &str, text: Option<&str>) -> io::Result<()> {
    match text {
        Some(t) => leaf(w, name, t),
        None => Ok(()),
    }
}

fn named(w: &mut W, name: &str, values: &[NamedValue]) -> io::Result<()> {
    for v in values {
        open(w, name)?;
        leaf(w, "valueName", &v.value_name)?;
        leaf(w, "value", &v.value)?;
        close(w, name)?;
    }
    Ok(())
}

/// The alert as a standalone CAP 1.2 document.
pub fn to_xml(alert: &Alert) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    // Writing to a Vec cannot fail.
    let _ =
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None))).and_then(|_| write_alert(&mut w, alert));
    String::from_utf8_lossy(&w.into_inner()).into_owned()
}

/// Writes `<alert xmlns=...>` into an existing writer (the Atom feed embeds alerts).
pub fn write_alert<T: io::Write>(w: &mut Writer<T>, alert: &Alert) -> io::Result<()> {
    // Render into a Vec writer, then copy, so the helpers stay monomorphic.
    let mut inner = Writer::new_with_indent(Vec::new(), b' ', 2);
    alert_body(&mut inner, alert)?;
    w.get_mut().write_all(&inner.into_inner())
}

fn alert_body(w: &mut W, a: &Alert) -> io::Result<()> {
    w.write_event(Event::Start(BytesStart::new("alert").with_attributes([("xmlns", NS)])))?;
    leaf(w, "identifier", &a.identifier)?;
    leaf(w, "sender", &a.sender)?;
    leaf(w, "sent", &cap_datetime(&a.sent))?;
    leaf(w, "status", a.status.as_text())?;
    leaf(w, "msgType", a.msg_type.as_text())?;
    opt(w, "source", a.source.as_deref())?;
    leaf(w, "scope", a.scope.as_text())?;
    opt(w, "restriction", a.restriction.as_deref())?;
    opt(w, "addresses", a.addresses.as_deref())?;
    for code in &a.codes {
        leaf(w, "code", code)?;
    }
    opt(w, "note", a.note.as_deref())?;
    if !a.references.is_empty() {
        let refs: Vec<String> = a.references.iter().map(|r| r.key()).collect();
        leaf(w, "references", &refs.join(" "))?;
    }
    opt(w, "incidents", a.incidents.as_deref())?;
    for info in &a.infos {
        write_info(w, info)?;
    }
    close(w, "alert")
}

fn write_info(w: &mut W, i: &Info) -> io::Result<()> {
    open(w, "info")?;
    leaf(w, "language", &i.language)?;
    for c in &i.categories {
        leaf(w, "category", c.as_text())?;
    }
    leaf(w, "event", &i.event)?;
    for r in &i.response_types {
        leaf(w, "responseType", r.as_text())?;
    }
    leaf(w, "urgency", i.urgency.as_text())?;
    leaf(w, "severity", i.severity.as_text())?;
    leaf(w, "certainty", i.certainty.as_text())?;
    opt(w, "audience", i.audience.as_deref())?;
    named(w, "eventCode", &i.event_codes)?;
    for (name, t) in [("effective", &i.effective), ("onset", &i.onset), ("expires", &i.expires)] {
        opt(w, name, t.as_ref().map(cap_datetime).as_deref())?;
    }
    opt(w, "senderName", i.sender_name.as_deref())?;
    opt(w, "headline", i.headline.as_deref())?;
    opt(w, "description", i.description.as_deref())?;
    opt(w, "instruction", i.instruction.as_deref())?;
    opt(w, "web", i.web.as_deref())?;
    opt(w, "contact", i.contact.as_deref())?;
    named(w, "parameter", &i.parameters)?;
    for r in &i.resources {
        write_resource(w, r)?;
    }
    for a in &i.areas {
        write_area(w, a)?;
    }
    close(w, "info")
}

fn write_resource(w: &mut W, r: &Resource) -> io::Result<()> {
    open(w, "resource")?;
    leaf(w, "resourceDesc", &r.resource_desc)?;
    leaf(w, "mimeType", &r.mime_type)?;
    opt(w, "size", r.size.map(|s| s.to_string()).as_deref())?;
    opt(w, "uri", r.uri.as_deref())?;
    opt(w, "derefUri", r.deref_uri.as_deref())?;
    opt(w, "digest", r.digest.as_deref())?;
    close(w, "resource")
}

fn write_area(w: &mut W, a: &Area) -> io::Result<()> {
    open(w, "area")?;
    leaf(w, "areaDesc", &a.area_desc)?;
    for p in &a.polygons {
        let text: Vec<String> = p.iter().map(|pt| format!("{},{}", pt.lat, pt.lon)).collect();
        leaf(w, "polygon", &text.join(" "))?;
    }
    for c in &a.circles {
        leaf(w, "circle", &format!("{},{} {}", c.centre.lat, c.centre.lon, c.radius_km))?;
    }
    named(w, "geocode", &a.geocodes)?;
    opt(w, "altitude", a.altitude.map(|v| v.to_string()).as_deref())?;
    opt(w, "ceiling", a.ceiling.map(|v| v.to_string()).as_deref())?;
    close(w, "area")
}
