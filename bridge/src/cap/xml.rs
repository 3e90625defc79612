//! quick-xml's namespace-aware reader turned into a small element tree that remembers the line
//! each element starts on, so validation can name element and line. (serde's XML deserializer
//! loses positions, which is why the tree sits between quick-xml and the model.)

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// An element: its namespace, local name, start line, text and child elements.
#[derive(Debug, Clone)]
pub struct Element {
    pub ns: Option<String>,
    pub name: String,
    pub line: usize,
    /// Attributes by local name (namespace declarations left out).
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn attrs_of(e: &quick_xml::events::BytesStart<'_>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let key = a.key;
        if key.as_namespace_binding().is_some() {
            continue;
        }
        let value = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
        out.push((String::from_utf8_lossy(key.local_name().as_ref()).into_owned(), value));
    }
    Ok(out)
}

/// Malformed XML (not well-formed), with the line it was found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    pub line: usize,
    pub message: String,
}

/// Deepest nesting accepted: CAP needs 4 levels; a hostile file must not exhaust the stack.
const MAX_DEPTH: usize = 32;

struct Lines(Vec<usize>);

impl Lines {
    fn new(src: &str) -> Self {
        Lines(src.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect())
    }

    fn at(&self, offset: u64) -> usize {
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        self.0.partition_point(|&nl| nl < offset) + 1
    }
}

/// Reads the document's root element.
pub fn read_tree(src: &str) -> Result<Element, XmlError> {
    let lines = Lines::new(src);
    let mut reader = NsReader::from_str(src);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        let before = reader.buffer_position();
        let err = |e: &dyn std::fmt::Display, at: u64| XmlError { line: lines.at(at), message: e.to_string() };
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ResolveResult::Bound(ns), event)) => (Some(String::from_utf8_lossy(ns.as_ref()).into_owned()), event),
            Ok((_, event)) => (None, event),
            Err(e) => return Err(err(&e, reader.error_position())),
        };
        let line = lines.at(before);
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(XmlError { line, message: "content after the root element".into() });
            }
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError { line, message: format!("elements nested deeper than {MAX_DEPTH}") });
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let attrs = attrs_of(&e).map_err(|m| XmlError { line, message: m })?;
                stack.push(Element { ns, name, line, attrs, text: String::new(), children: Vec::new() });
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let attrs = attrs_of(&e).map_err(|m| XmlError { line, message: m })?;
                let el = Element { ns, name, line, attrs, text: String::new(), children: Vec::new() };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let Some(el) = stack.pop() else {
                    return Err(XmlError { line, message: "unexpected end tag".into() });
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| err(&e, before))?;
                let text = quick_xml::escape::unescape(&text).map_err(|e| err(&e, before))?;
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&text);
                } else if !text.trim().is_empty() {
                    return Err(XmlError { line, message: "text outside the root element".into() });
                }
            }
            Event::CData(t) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| err(&e, before))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| err(&e, before))?;
                        let text = quick_xml::escape::resolve_xml_entity(&name)
                            .ok_or_else(|| XmlError { line, message: format!("unknown entity &{name};") })?;
                        text.to_owned()
                    }
                };
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => {
                // Entity definitions are how XML bombs work; CAP never needs a DTD.
                return Err(XmlError { line, message: "a DOCTYPE is not allowed in CAP".into() });
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError { line: open.line, message: format!("<{}> is never closed", open.name) });
    }
    root.ok_or(XmlError { line: 1, message: "no root element".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_namespaces_are_kept() {
        let tree = read_tree("<?xml version=\"1.0\"?>\n<a xmlns=\"urn:x\">\n  <b>1 &amp; 2</b>\n<c/></a>").unwrap();
        assert_eq!((tree.name.as_str(), tree.line, tree.ns.as_deref()), ("a", 2, Some("urn:x")));
        assert_eq!((tree.children[0].line, tree.children[0].text.as_str()), (3, "1 & 2"));
        assert_eq!(tree.children[1].name, "c");
    }

    #[test]
    fn broken_xml_names_the_line() {
        let e = read_tree("<a>\n<b>\n</a>").unwrap_err();
        assert_eq!(e.line, 3, "{e:?}");
        assert!(read_tree("<!DOCTYPE a [<!ENTITY x \"y\">]><a/>").is_err());
    }
}
