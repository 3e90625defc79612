//! OpenGraph from HTML: `<meta property="og:*" content>`, `<title>` and `<meta name="description">`,
//! read with html5ever's tokenizer (a spec-conformant tokenizer; no tree is built, none is needed
//! for tags in a page's head).

use std::{cell::RefCell, collections::BTreeMap};

use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts, states::RawKind,
};

/// At most this many `og:*` properties are kept, each at most this many characters.
const MAX_PROPERTIES: usize = 32;
const MAX_VALUE_CHARS: usize = 1000;

/// What a page says about itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// `og:*` properties, the first of each name (lowercased), whitespace collapsed.
    pub og: BTreeMap<String, String>,
    pub title: Option<String>,
    pub description: Option<String>,
}

#[derive(Default)]
struct Sink {
    page: RefCell<Page>,
    /// Text of the `<title>` being read, if one is open.
    title: RefCell<Option<String>>,
}

impl Sink {
    fn tag(&self, tag: &Tag) -> TokenSinkResult<()> {
        let name = tag.name.as_ref();
        match (&tag.kind, name) {
            (TagKind::StartTag, "title") => {
                if self.page.borrow().title.is_none() {
                    *self.title.borrow_mut() = Some(String::new());
                }
                // As a browser does: the title's text is RCDATA (no tags inside).
                return TokenSinkResult::RawData(RawKind::Rcdata);
            }
            (TagKind::EndTag, "title") => {
                if let Some(text) = self.title.borrow_mut().take() {
                    self.page.borrow_mut().title = clean(&text);
                }
            }
            (TagKind::StartTag, "script") => return TokenSinkResult::RawData(RawKind::ScriptData),
            (TagKind::StartTag, "style" | "noscript" | "xmp" | "iframe" | "noembed" | "noframes") => {
                return TokenSinkResult::RawData(RawKind::Rawtext);
            }
            (TagKind::StartTag, "textarea") => return TokenSinkResult::RawData(RawKind::Rcdata),
            (TagKind::StartTag, "meta") => self.meta(tag),
            _ => {}
        }
        TokenSinkResult::Continue
    }

    fn meta(&self, tag: &Tag) {
        let attr = |name: &str| tag.attrs.iter().find(|a| a.name.local.as_ref() == name).map(|a| a.value.to_string());
        let Some(content) = attr("content").as_deref().and_then(clean) else { return };
        // Some pages put OpenGraph in `name` instead of `property`.
        let key = attr("property").or_else(|| attr("name")).map(|k| k.trim().to_ascii_lowercase());
        let mut page = self.page.borrow_mut();
        match key.as_deref() {
            Some(key)
                if key.starts_with("og:")
                    && key.len() > 3
                    && page.og.len() < MAX_PROPERTIES
                    && !page.og.contains_key(key) =>
            {
                page.og.insert(key.to_owned(), content);
            }
            Some("description") if page.description.is_none() => page.description = Some(content),
            _ => {}
        }
    }
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => return self.tag(&tag),
            Token::CharacterTokens(text) => {
                if let Some(title) = self.title.borrow_mut().as_mut()
                    && title.len() < MAX_VALUE_CHARS * 4
                {
                    title.push_str(&text);
                }
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

/// Whitespace collapsed, trimmed and cut to [`MAX_VALUE_CHARS`]; `None` when nothing is left.
fn clean(text: &str) -> Option<String> {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = joined.chars().take(MAX_VALUE_CHARS).collect();
    (!cut.is_empty()).then_some(cut)
}

/// Reads what `html` says about the page. Never fails: a page without any of it gives an empty
/// [`Page`].
pub fn parse(html: &str) -> Page {
    let tokenizer = Tokenizer::new(Sink::default(), TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(html.into());
    // The sink never asks to stop (no scripts run), so one feed reads everything.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.page.take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opengraph_title_and_description_are_read() {
        let page = parse(
            r#"<!doctype html><html><head>
            <title>  Flood
              warning </title>
            <meta name="description" content="Plain description">
            <META PROPERTY="og:Title" CONTENT="River Elbe: level 7.2 m">
            <meta property="og:title" content="a second title is ignored">
            <meta property="og:description" content="Evacuate &amp; move uphill">
            <meta name="og:image" content="/img/gauge.png">
            <script>var s = "<meta property='og:url' content='no'>";</script>
            <style>meta { }</style>
            </head><body><title>not the title</title></body></html>"#,
        );
        assert_eq!(page.title.as_deref(), Some("Flood warning"));
        assert_eq!(page.description.as_deref(), Some("Plain description"));
        assert_eq!(page.og.get("og:title").map(String::as_str), Some("River Elbe: level 7.2 m"));
        assert_eq!(page.og.get("og:description").map(String::as_str), Some("Evacuate & move uphill"));
        assert_eq!(page.og.get("og:image").map(String::as_str), Some("/img/gauge.png"));
        assert!(!page.og.contains_key("og:url"), "nothing is read inside scripts");
    }

    #[test]
    fn a_title_may_not_hold_tags_and_broken_pages_give_what_they_have() {
        assert_eq!(parse("<title>a <b>bold</b> move</title>").title.as_deref(), Some("a <b>bold</b> move"));
        assert_eq!(parse("<title>never closed").title, None);
        assert_eq!(parse("not html at all"), Page::default());
        assert_eq!(
            parse("<meta property=og:type content=website>").og.get("og:type").map(String::as_str),
            Some("website")
        );
        let many: String = (0..100).map(|i| format!("<meta property=\"og:k{i}\" content=\"v\">")).collect();
        assert_eq!(parse(&many).og.len(), MAX_PROPERTIES);
    }
}
