//! URL previews (`GET /media/preview_url`): the OpenGraph data of a page, with its `og:image`
//! kept in the media repository and given as `mxc://`.
//!
//! Off by default (`[url_previews]`). When on, only URLs `url_previews.allow` lists are fetched,
//! and an `og:image` only when it is listed too; a redirect elsewhere is not followed. A host
//! name must resolve to addresses the outbound rules permit (`outbound_ip_allow`), as for push
//! gateways and federation; an address given as the host is fetched because the operator listed
//! it. Reads stop at `max_bytes`, fetches at `timeout_secs`; answers are kept for a few minutes
//! per URL and `ts`.

mod allow;
mod html;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use allow::AllowList;
use reqwest::Url;
use serde_json::Value;

use crate::{
    Config,
    error::{Error, Result},
    federation::outbound::OutboundPolicy,
    http::outbound::OutboundResolver,
    media::Media,
};

/// How long an answer is kept, and how many at most.
const CACHE_TTL: Duration = Duration::from_secs(300);
const CACHE_MAX: usize = 1000;
const MAX_REDIRECTS: usize = 3;

/// A preview: `og:*` keys with string values, and `matrix:image:size` (a number).
pub type Preview = BTreeMap<String, Value>;

/// URL and `ts` -> when it was made, and the preview.
type Cache = HashMap<(String, Option<u64>), (Instant, Arc<Preview>)>;

pub struct Previews {
    enabled: bool,
    allow: Arc<AllowList>,
    http: reqwest::Client,
    max_bytes: u64,
    /// For the `mxc://` of stored images.
    server_name: String,
    cache: Mutex<Cache>,
}

impl Previews {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let settings = &config.url_previews;
        let allow = Arc::new(AllowList::parse(&settings.allow).map_err(anyhow::Error::msg)?);
        let outbound = Arc::new(OutboundPolicy::new(config.outbound_ip_allow.clone()));
        let redirects = allow.clone();
        let builder = || {
            let redirects = redirects.clone();
            reqwest::Client::builder()
                .dns_resolver(OutboundResolver::new(outbound.clone()))
                .connect_timeout(Duration::from_secs(settings.timeout_secs.min(5)))
                .timeout(Duration::from_secs(settings.timeout_secs))
                .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() >= MAX_REDIRECTS {
                        attempt.error("too many redirects")
                    } else if redirects.permits(attempt.url()) {
                        attempt.follow()
                    } else {
                        let refusal =
                            format!("it redirects to {}, which url_previews.allow does not list", attempt.url());
                        attempt.error(refusal)
                    }
                }))
                .no_proxy()
                .user_agent(concat!("Tocsin/", env!("CARGO_PKG_VERSION"), " (URL preview)"))
        };
        let http = crate::http::outbound::client(builder, &config.tls_ca_files)?;
        Ok(Self {
            enabled: settings.enabled,
            allow,
            http,
            max_bytes: settings.max_bytes,
            server_name: config.server_name.clone(),
            cache: Mutex::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The preview of `url` (`ts`: the time the client would like it for; a recent answer for
    /// the same URL and `ts` is reused). `uploader` is recorded on a stored image.
    /// Only the host is logged: links carry tokens of their own.
    #[tracing::instrument(skip_all, fields(host))]
    pub async fn preview(&self, media: &Media, uploader: &str, url: &str, ts: Option<u64>) -> Result<Arc<Preview>> {
        if !self.enabled {
            return Err(Error::Unrecognized);
        }
        let parsed = Url::parse(url).map_err(|e| Error::invalid_param(format!("`url` is not a URL: {e}")))?;
        tracing::Span::current().record("host", parsed.host_str().unwrap_or_default());
        if !self.allow.permits(&parsed) {
            return Err(Error::forbidden(format!(
                "this node previews only the hosts and URL prefixes in its url_previews.allow, and {parsed} is not among them"
            )));
        }
        let key = (parsed.to_string(), ts);
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let preview = Arc::new(self.fetch_preview(media, uploader, &parsed).await?);
        self.remember(key, preview.clone());
        Ok(preview)
    }

    async fn fetch_preview(&self, media: &Media, uploader: &str, url: &Url) -> Result<Preview> {
        let fetched = self.fetch(url).await?;
        let mut preview = Preview::new();
        if fetched.content_type.starts_with("image/") {
            self.store_image(media, uploader, fetched, &mut preview).await?;
            return Ok(preview);
        }
        if !matches!(fetched.content_type.as_str(), "text/html" | "application/xhtml+xml") {
            // Nothing to read: an empty preview, as for a page without OpenGraph.
            return Ok(preview);
        }
        let page = html::parse(&String::from_utf8_lossy(&fetched.bytes));
        let image = page.og.get("og:image").and_then(|i| fetched.url.join(i).ok());
        for (key, value) in page.og {
            // The image goes out as `mxc://` or not at all: a client must not be sent to fetch
            // an outside URL.
            if !key.starts_with("og:image") {
                preview.insert(key, Value::String(value));
            }
        }
        if let Some(title) = page.title {
            preview.entry("og:title".to_owned()).or_insert(Value::String(title));
        }
        if let Some(description) = page.description {
            preview.entry("og:description".to_owned()).or_insert(Value::String(description));
        }
        if let Some(image) = image.filter(|i| self.allow.permits(i)) {
            match self.fetch(&image).await {
                Ok(fetched) if fetched.content_type.starts_with("image/") && !fetched.truncated => {
                    self.store_image(media, uploader, fetched, &mut preview).await?;
                }
                Ok(_) => tracing::debug!("og:image is not an image within max_bytes"),
                // The page's preview is still worth giving.
                Err(e) => tracing::debug!(error = %e, "og:image not fetched"),
            }
        }
        Ok(preview)
    }

    async fn store_image(&self, media: &Media, uploader: &str, fetched: Fetched, preview: &mut Preview) -> Result<()> {
        if fetched.truncated {
            return Err(Error::TooLarge(format!(
                "the image is larger than url_previews.max_bytes ({})",
                self.max_bytes
            )));
        }
        let size = fetched.bytes.len();
        let media_id = media.upload(uploader, fetched.bytes, Some(fetched.content_type.clone()), None).await?;
        preview.insert("og:image".to_owned(), Value::String(format!("mxc://{}/{media_id}", self.server_name)));
        preview.insert("og:image:type".to_owned(), Value::String(fetched.content_type));
        preview.insert("matrix:image:size".to_owned(), Value::from(size));
        Ok(())
    }

    /// GETs `url`, reading at most `max_bytes` of the body.
    async fn fetch(&self, url: &Url) -> Result<Fetched> {
        // A name goes through the resolver's outbound check; an address as the host is not
        // resolved, and is reached because the allow list names it (the caller checked).
        let unreachable = |e: &dyn std::fmt::Display| Error::Unreachable(format!("{url}: {e}"));
        let mut response = self
            .http
            .get(url.clone())
            .header(http::header::ACCEPT, "text/html, application/xhtml+xml, image/*;q=0.9")
            .send()
            .await
            .map_err(|e| unreachable(&error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(unreachable(&format!("answered {}", response.status())));
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .unwrap_or_default();
        let final_url = response.url().clone();
        let limit = usize::try_from(self.max_bytes).unwrap_or(usize::MAX);
        let mut bytes = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(&error_chain(&e)))? {
            let room = limit.saturating_sub(bytes.len());
            if chunk.len() > room {
                bytes.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched { url: final_url, content_type, bytes, truncated })
    }

    fn cached(&self, key: &(String, Option<u64>)) -> Option<Arc<Preview>> {
        let cache = self.cache.lock().ok()?;
        cache.get(key).filter(|(at, _)| at.elapsed() < CACHE_TTL).map(|(_, p)| p.clone())
    }

    fn remember(&self, key: (String, Option<u64>), preview: Arc<Preview>) {
        let Ok(mut cache) = self.cache.lock() else { return };
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), preview));
    }
}

struct Fetched {
    /// Where the answer came from (after redirects), for relative `og:image` URLs.
    url: Url,
    /// The MIME essence, lowercased.
    content_type: String,
    bytes: Vec<u8>,
    /// The body went on past `max_bytes`.
    truncated: bool,
}

/// A reqwest error with its causes (its `Display` alone hides why a connection failed, e.g. a
/// refused address).
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
