//! The bridge's own settings (`tocsin-bridge.toml`): where the homeserver is, who the bot is,
//! where to keep state, and the sources. Routing rules are not here: they are the node's
//! policy (`[bridge]`), read from the policy folder.
//!
//! ```toml
//! homeserver = "http://127.0.0.1:8008"
//! password_file = "/etc/tocsin-bridge/password"   # or password = "..."
//! data_dir = "/var/lib/tocsin-bridge"
//! policy = "/etc/tocsin/policy"                   # file or folder with a [bridge] table
//! listen = "127.0.0.1:8090"                        # CAP push, webhooks, Atom feed, metrics
//! public_url = "https://bridge.riverton.example"   # optional; links in the Atom feed
//!
//! [[source]]
//! name = "drop"
//! kind = "folder"
//! path = "/var/spool/tocsin-bridge/in"
//! interval_ms = 1000
//!
//! [[source]]
//! name = "national"
//! kind = "poll"                  # a CAP document or an Atom/RSS feed of them
//! url = "https://warnings.example/cap/feed.atom"
//! interval_ms = 60000
//!
//! [[source]]
//! name = "mowas"
//! kind = "poll"                  # the warning API's map data list, then each listed warning
//! url = "https://warnung.example/api31/mowas/mapData.json"
//! warning_url = "https://warnung.example/api31/warnings/{id}.json"   # default: ../warnings/{id}.json
//!
//! [[source]]
//! name = "river-gauges"
//! kind = "json_post"             # POST /hook/river-gauges, a JSON document mapped by the template
//! hmac_secret = "..."
//! [source.template]
//! identifier = "gauge-{{ station.id }}-{{ time }}"
//! sender = "gauges@riverton.example"
//! sent = "{{ time }}"
//! category = "Met"
//! event = "Flood Warning"
//! urgency = "Immediate"
//! severity = "{% if level_cm >= 420 %}Severe{% else %}Moderate{% endif %}"
//! certainty = "Observed"
//! headline = "River {{ station.river }} at {{ level_cm }} cm at {{ station.name }}"
//! circle = "{{ station.lat }},{{ station.lon }} 2"
//!
//! [[source]]
//! name = "dwd"
//! kind = "poll"
//! url = "https://warnings.example/dwd/feed.atom"
//! require_signature = true       # XML-DSig by one of these certificates, else quarantined
//! trusted_certs = ["/etc/tocsin-bridge/dwd-signing.pem"]
//!
//! [[source]]
//! name = "state-warnings"
//! kind = "cap_post"              # POST /cap/state-warnings
//! hmac_secret = "..."           # X-Tocsin-Signature: sha256=<hex>; or bearer_secret
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::json::template::AlertTemplate;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Toml { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    At { path: PathBuf, line: usize, message: String },
}

/// A problem found in a config, where the config file says where (`span`, bytes) and the
/// line inside a template field (1-based) when that is known.
struct Problem {
    span: Option<Range<usize>>,
    template_line: Option<usize>,
    message: String,
}

impl From<String> for Problem {
    fn from(message: String) -> Self {
        Problem { span: None, template_line: None, message }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub homeserver: String,
    /// The bot account; defaults to the policy's `[bridge] bot`.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub policy: PathBuf,
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub public_url: Option<String>,
    #[serde(default, rename = "source")]
    pub sources: Vec<Source>,
}

// No deny_unknown_fields here: serde does not support it together with `flatten`.
#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    pub name: String,
    /// A `json_post` source's `[source.template]`, with positions for diagnostics. Here and
    /// not in [`SourceKind::JsonPost`]: positions do not survive serde's `flatten`.
    #[serde(default)]
    pub template: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// CAP documents of this source must carry an XML signature (XML-DSig, enveloped, over the
    /// whole alert) by one of `trusted_certs` (PEM files); others are quarantined.
    #[serde(default)]
    pub require_signature: bool,
    #[serde(default)]
    pub trusted_certs: Vec<PathBuf>,
    #[serde(flatten)]
    pub kind: SourceKind,
}

impl Source {
    /// The template's fields without their positions.
    pub fn template_fields(&self) -> BTreeMap<String, String> {
        self.template.iter().flat_map(|t| t.get_ref().iter()).map(|(k, v)| (k.clone(), v.get_ref().clone())).collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceKind {
    /// CAP files dropped into a folder; done/ and quarantine/ are made beside them.
    Folder {
        path: PathBuf,
        #[serde(default = "default_interval_ms")]
        interval_ms: u64,
    },
    /// A CAP document, or an Atom/RSS feed linking CAP documents, fetched every `interval_ms`.
    ///
    /// A JSON answer is the German warning API's: a map data list (`[{"id", "version"}]`) whose
    /// warnings are fetched from `warning_url` (`{id}` replaced; default `../warnings/{id}.json`
    /// beside the list), or one warning document.
    Poll {
        url: String,
        #[serde(default = "default_poll_ms")]
        interval_ms: u64,
        #[serde(default)]
        warning_url: Option<String>,
    },
    /// CAP documents POSTed to `/cap/<name>`.
    CapPost {
        #[serde(default)]
        hmac_secret: Option<String>,
        #[serde(default)]
        bearer_secret: Option<String>,
    },
    /// JSON documents POSTed to `/hook/<name>`, mapped to an alert by the source's `template`.
    JsonPost {
        #[serde(default)]
        hmac_secret: Option<String>,
        #[serde(default)]
        bearer_secret: Option<String>,
    },
}

fn default_interval_ms() -> u64 {
    1000
}

fn default_poll_ms() -> u64 {
    60_000
}

impl Config {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// A config from its text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|source| ConfigError::Toml { path: path.into(), source: Box::new(source) })?;
        config.validate().map_err(|p| match p.span {
            Some(span) => {
                let line = text.get(..span.start).map_or(1, |t| t.matches('\n').count() + 1);
                ConfigError::At {
                    path: path.into(),
                    line: line + p.template_line.map_or(0, |l| l - 1),
                    message: p.message,
                }
            }
            None => ConfigError::Invalid { path: path.into(), message: p.message },
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Problem> {
        let mut names = std::collections::BTreeSet::new();
        for s in &self.sources {
            if !names.insert(&s.name) {
                return Err(format!("source {:?} is defined twice", s.name).into());
            }
            if !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("source {:?}: names are letters, digits, - and _", s.name).into());
            }
            match &s.kind {
                SourceKind::CapPost { hmac_secret: None, bearer_secret: None }
                | SourceKind::JsonPost { hmac_secret: None, bearer_secret: None } => {
                    return Err(
                        format!("source {:?}: a pushed source needs hmac_secret or bearer_secret", s.name).into()
                    );
                }
                SourceKind::JsonPost { .. } => {
                    let Some(template) = &s.template else {
                        return Err(format!("source {:?}: a json_post source needs a [source.template]", s.name).into());
                    };
                    AlertTemplate::compile(&s.template_fields()).map_err(|e| {
                        let span = template.get_ref().get(&e.field).map_or(template.span(), |f| f.span());
                        Problem {
                            span: Some(span),
                            template_line: e.line,
                            message: format!("source {:?}: {e}", s.name),
                        }
                    })?;
                }
                SourceKind::Poll { warning_url: Some(w), .. } if !w.contains("{id}") => {
                    return Err(format!("source {:?}: warning_url must contain {{id}}", s.name).into());
                }
                _ => {}
            }
            if s.require_signature {
                if matches!(s.kind, SourceKind::JsonPost { .. }) {
                    return Err(
                        format!("source {:?}: XML signatures are for CAP sources, not json_post", s.name).into()
                    );
                }
                if s.trusted_certs.is_empty() {
                    return Err(format!("source {:?}: require_signature needs trusted_certs", s.name).into());
                }
                crate::cap::signature::Verifier::load(&s.trusted_certs)
                    .map_err(|e| format!("source {:?}: trusted_certs: {e}", s.name))?;
            } else if !s.trusted_certs.is_empty() {
                return Err(format!("source {:?}: trusted_certs without require_signature = true", s.name).into());
            }
            if let Some(t) = &s.template
                && !matches!(s.kind, SourceKind::JsonPost { .. })
            {
                let message = format!("source {:?}: only json_post sources have a template", s.name);
                return Err(Problem { span: Some(t.span()), template_line: None, message });
            }
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(String::from("give password or password_file, not both").into());
        }
        Ok(())
    }

    /// The bot's password, from the file when one is given.
    pub fn password(&self) -> Result<String, ConfigError> {
        match (&self.password, &self.password_file) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|source| ConfigError::Io { path: f.clone(), source }),
            (None, None) => {
                Err(ConfigError::Invalid { path: "config".into(), message: "no password or password_file".into() })
            }
        }
    }
}
