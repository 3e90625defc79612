//! Settings of what clients are offered: how long refreshable access tokens live, URL
//! previews, and TURN servers for calls.

use serde::Deserialize;

use super::ConfigError;

/// Five minutes: a stolen access token is worth little for long, and a client refreshes a few
/// times an hour at most.
pub const DEFAULT_ACCESS_TOKEN_LIFETIME_SECS: u64 = 300;

/// The `[url_previews]` table. Off by default: a preview makes the node fetch a URL a user
/// chose, so a crisis node fetches only from the hosts and URL prefixes the operator lists.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct UrlPreviewConfig {
    pub enabled: bool,
    /// Hosts (`www.dwd.de`, `host:port`: any path, default ports only unless named) and URL
    /// prefixes (`https://warnung.bund.de/meldungen/`: that scheme, host, port and path) the
    /// node may fetch pages and their `og:image` from. A host given as an address (`127.0.0.1`)
    /// is fetched even where `outbound_ip_allow` would refuse it; a name must resolve to
    /// addresses the outbound rules permit.
    pub allow: Vec<String>,
    /// The most read of a page or an image; a longer page is read only this far.
    pub max_bytes: u64,
    /// The longest a fetch (connect, answer and body) may take.
    pub timeout_secs: u64,
}

impl Default for UrlPreviewConfig {
    fn default() -> Self {
        Self { enabled: false, allow: Vec::new(), max_bytes: 1024 * 1024, timeout_secs: 10 }
    }
}

/// The `[turn]` table: the TURN servers clients may relay calls through, and the secret the
/// node shares with them (coturn's `static-auth-secret`) to hand out credentials that expire.
/// Without `uris`, `/voip/turnServer` answers 404 `M_UNRECOGNIZED`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// `turn:` / `turns:` URIs, e.g. `turns:turn.riverton.example:5349?transport=tcp`.
    pub uris: Vec<String>,
    pub shared_secret: Option<String>,
    /// A file holding the secret (read at each request, so a rotated secret applies at once).
    pub shared_secret_file: Option<std::path::PathBuf>,
    /// How long handed-out credentials last, in seconds (default one day).
    pub user_lifetime_secs: Option<u64>,
}

/// One day, as Synapse's default.
pub const DEFAULT_TURN_USER_LIFETIME_SECS: u64 = 86_400;

/// `TOCSIN_*` overrides for the settings in this file.
pub fn apply_env(config: &mut super::Config, var: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    if let Some(v) = var("TOCSIN_ACCESS_TOKEN_LIFETIME_SECS") {
        config.access_token_lifetime_secs = v.trim().parse().map_err(|e| ConfigError::Invalid {
            key: "access_token_lifetime_secs",
            message: format!("`{v}` is not a number of seconds ({e})"),
        })?;
    }
    if let Some(v) = var("TOCSIN_URL_PREVIEWS") {
        config.url_previews.enabled = match v.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            other => {
                return Err(ConfigError::Invalid {
                    key: "url_previews",
                    message: format!("`{other}` is not on or off"),
                });
            }
        };
    }
    if let Some(v) = var("TOCSIN_URL_PREVIEWS_ALLOW") {
        config.url_previews.allow = v.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect();
    }
    Ok(())
}

/// Checks of the settings in this file.
pub fn validate(config: &super::Config) -> Result<(), ConfigError> {
    if config.access_token_lifetime_secs == 0 {
        return Err(ConfigError::Invalid {
            key: "access_token_lifetime_secs",
            message: "must be at least 1 second".to_owned(),
        });
    }
    let turn = &config.turn;
    if let Some(uri) = turn.uris.iter().find(|u| !["turn:", "turns:", "stun:"].iter().any(|s| u.starts_with(s))) {
        return Err(ConfigError::Invalid {
            key: "turn.uris",
            message: format!("`{uri}` is not a turn:, turns: or stun: URI"),
        });
    }
    if !turn.uris.is_empty() && turn.shared_secret.is_none() == turn.shared_secret_file.is_none() {
        return Err(ConfigError::Invalid {
            key: "turn",
            message: "set exactly one of shared_secret and shared_secret_file".to_owned(),
        });
    }
    if turn.user_lifetime_secs == Some(0) {
        return Err(ConfigError::Invalid { key: "turn.user_lifetime_secs", message: "must be at least 1".to_owned() });
    }
    let previews = &config.url_previews;
    crate::media::preview::AllowList::parse(&previews.allow)
        .map_err(|message| ConfigError::Invalid { key: "url_previews.allow", message })?;
    if previews.max_bytes == 0 || previews.timeout_secs == 0 {
        return Err(ConfigError::Invalid {
            key: "url_previews",
            message: "max_bytes and timeout_secs must be at least 1".to_owned(),
        });
    }
    Ok(())
}
