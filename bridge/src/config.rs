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
//! name = "state-warnings"
//! kind = "cap_post"              # POST /cap/state-warnings
//! hmac_secret = "..."           # X-Tocsin-Signature: sha256=<hex>; or bearer_secret
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Toml { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
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
    #[serde(flatten)]
    pub kind: SourceKind,
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
    Poll {
        url: String,
        #[serde(default = "default_poll_ms")]
        interval_ms: u64,
    },
    /// CAP documents POSTed to `/cap/<name>`.
    CapPost {
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
        let config: Config = toml::from_str(&text)
            .map_err(|source| ConfigError::Toml { path: path.into(), source: Box::new(source) })?;
        config.validate().map_err(|message| ConfigError::Invalid { path: path.into(), message })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for s in &self.sources {
            if !names.insert(&s.name) {
                return Err(format!("source {:?} is defined twice", s.name));
            }
            if let SourceKind::CapPost { hmac_secret: None, bearer_secret: None } = s.kind {
                return Err(format!("source {:?}: a cap_post source needs hmac_secret or bearer_secret", s.name));
            }
            if !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("source {:?}: names are letters, digits, - and _", s.name));
            }
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err("give password or password_file, not both".into());
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
