//! HTTP polling, every `interval_ms`, with `If-None-Match` / `If-Modified-Since` from the
//! previous answer (kept in the store, so a restart does not refetch everything) of:
//! a CAP document; an Atom or RSS feed that links CAP documents; or the German warning API's
//! JSON, a map data list whose warnings are fetched one by one, or one warning document.
//! Linked documents already taken, and listed warnings at a version already taken, are not
//! fetched again.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use tokio::sync::watch;
use tracing::warn;

use super::{TakeError, take_document, take_json};
use crate::cap::xml::{Element, read_tree};
use crate::ingest::Ingest;
use crate::json::{JsonError, nina};
use crate::store::Store;

pub struct Poller {
    pub name: String,
    pub url: String,
    /// Where a listed warning's document is (`{id}` replaced); default `../warnings/{id}.json`.
    pub warning_url: Option<String>,
    pub interval: Duration,
    pub ingest: Arc<Ingest>,
    pub store: Arc<Store>,
    pub http: reqwest::Client,
    pub data_dir: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{0} answered {1}")]
    Status(String, StatusCode),
    #[error("{0}")]
    List(#[from] JsonError),
    #[error("the warning URL for {0:?} is not valid: {1}")]
    WarningUrl(String, String),
}

impl Poller {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let span = tracing::info_span!("poll", source = self.name);
            if let Err(e) = tracing::Instrument::instrument(self.poll(), span).await {
                warn!(source = self.name, url = self.url, "polling failed: {e}");
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One poll: fetch (conditionally), then take the document or the feed's documents.
    async fn poll(&self) -> Result<(), PollError> {
        let Some(text) = self.fetch(&self.url, true).await? else { return Ok(()) };
        if nina::is_json(&text) {
            return self.take_warnings(&text).await;
        }
        let links_and_docs = match read_tree(&text) {
            Ok(root) if root.name == "feed" || root.name == "rss" || root.name == "RDF" => feed_items(&root),
            _ => vec![Item::Doc(text)],
        };
        for item in links_and_docs {
            match item {
                Item::Doc(doc) => self.take(&self.url, &doc),
                Item::Link(link) => {
                    let seen = format!("poll-link\n{}\n{link}", self.name);
                    if self.store.meta(&seen)?.is_some() {
                        continue;
                    }
                    if let Some(doc) = self.fetch(&link, false).await? {
                        self.take(&link, &doc);
                        self.store.set_meta(&seen, "")?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The warning API's JSON: a map data list (each warning fetched once per version) or one
    /// warning document.
    async fn take_warnings(&self, text: &str) -> Result<(), PollError> {
        if !text.trim_start().starts_with('[') {
            let taken = take_json(&self.ingest, &self.name, &self.url, || nina::warning(text));
            self.settle(&self.url, text, "json", taken);
            return Ok(());
        }
        for listed in nina::map_data(text)? {
            let seen = format!("poll-warning\n{}\n{}\n{}", self.name, listed.id, listed.version);
            if self.store.meta(&seen)?.is_some() {
                continue;
            }
            let url = self.warning_url(&listed.id)?;
            if let Some(doc) = self.fetch(&url, false).await? {
                let taken = take_json(&self.ingest, &self.name, &url, || nina::warning(&doc));
                if self.settle(&url, &doc, "json", taken) {
                    self.store.set_meta(&seen, "")?;
                }
            }
        }
        Ok(())
    }

    fn warning_url(&self, id: &str) -> Result<String, PollError> {
        let template = self.warning_url.as_deref().unwrap_or("../warnings/{id}.json");
        let relative = template.replace("{id}", id);
        let base = reqwest::Url::parse(&self.url).map_err(|e| PollError::WarningUrl(id.into(), e.to_string()))?;
        base.join(&relative).map(String::from).map_err(|e| PollError::WarningUrl(id.into(), e.to_string()))
    }

    fn take(&self, from: &str, doc: &str) {
        self.settle(from, doc, "xml", take_document(&self.ingest, &self.name, from, doc));
    }

    /// Quarantines a refused document. False when the store failed (a later poll retries).
    fn settle(&self, from: &str, doc: &str, ext: &str, result: Result<crate::ingest::Outcome, TakeError>) -> bool {
        match result {
            Ok(_) => true,
            Err(e @ (TakeError::Invalid(_) | TakeError::InvalidJson(_))) => {
                let note = format!("{from}: {e}");
                if let Err(io) = super::push::quarantine_as(&self.data_dir, &self.name, ext, doc.as_bytes(), &note) {
                    warn!("cannot quarantine: {io}");
                }
                true
            }
            Err(TakeError::Store(e)) => {
                warn!(source = self.name, "cannot record an alert: {e}");
                false
            }
        }
    }

    /// GET `url`; `None` on 304. With `conditional`, sends and records the validators.
    async fn fetch(&self, url: &str, conditional: bool) -> Result<Option<String>, PollError> {
        let key = format!("poll-validators\n{}\n{url}", self.name);
        let mut req = self.http.get(url);
        if conditional && let Some(v) = self.store.meta(&key)? {
            let (etag, modified) = v.split_once('\n').unwrap_or((&v, ""));
            if !etag.is_empty() {
                req = req.header(IF_NONE_MATCH, etag);
            }
            if !modified.is_empty() {
                req = req.header(IF_MODIFIED_SINCE, modified);
            }
        }
        let resp = req.send().await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(PollError::Status(url.to_owned(), resp.status()));
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let validators = format!("{}\n{}", header(ETAG), header(LAST_MODIFIED));
        let text = resp.text().await?;
        if conditional {
            self.store.set_meta(&key, &validators)?;
        }
        Ok(Some(text))
    }
}

enum Item {
    Link(String),
    Doc(String),
}

/// The documents an Atom feed (each entry's CAP link, else its first link) or an RSS feed
/// (`<enclosure url>` or `<link>`) lists.
fn feed_items(root: &Element) -> Vec<Item> {
    let mut out = Vec::new();
    let channel = root.children.iter().find(|c| c.name == "channel");
    let items = root.children.iter().chain(channel.into_iter().flat_map(|c| c.children.iter()));
    for item in items.filter(|c| c.name == "entry" || c.name == "item") {
        let links: Vec<&Element> = item.children.iter().filter(|c| c.name == "link" || c.name == "enclosure").collect();
        let cap = links.iter().find(|l| l.attr("type").is_some_and(|t| t.contains("cap")));
        let href = cap.or(links.first()).and_then(|l| {
            l.attr("href").or(l.attr("url")).map(str::to_owned).or_else(|| Some(l.text.trim().to_owned()))
        });
        if let Some(h) = href.filter(|h| !h.is_empty()) {
            out.push(Item::Link(h));
        }
    }
    out
}
