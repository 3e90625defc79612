//! Operations settings: the metrics endpoint, the operator's admin token, the password policy
//! and federation delegation. Kept apart from `mod.rs` so the main config stays readable.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The `[metrics]` table: who may read `/_tocsin/metrics`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// The bearer token Prometheus sends (`authorization: { credentials: ... }`). Not a user's
    /// access token: a scraper needs no account, and its token opens nothing else.
    pub token: Option<String>,
    /// A file holding the token (first line), instead of `token` in the config.
    pub token_file: Option<PathBuf>,
    /// A separate plain-HTTP listener that serves only `/_tocsin/metrics` and `/health`, e.g.
    /// `127.0.0.1:9108` or an address on a monitoring network. The token, if set, is required
    /// there too.
    pub listen: Option<SocketAddr>,
}

impl MetricsConfig {
    /// The token, read from `token_file` if that is set.
    pub fn resolved_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(path) = &self.token_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            let token = text.lines().next().unwrap_or("").trim().to_owned();
            if token.is_empty() {
                return Err(ConfigError::Invalid { key: "metrics.token_file", message: "the file is empty".into() });
            }
            return Ok(Some(token));
        }
        Ok(self.token.clone().filter(|t| !t.trim().is_empty()))
    }
}

/// The shortest password accepted by default (registration, password change, admin reset).
pub const DEFAULT_PASSWORD_MIN_LENGTH: usize = 8;

/// `room_heads_in_memory`'s default: a few kB each for small rooms, so tens of MB in all.
pub const DEFAULT_ROOM_HEADS_IN_MEMORY: usize = 4_096;

/// `TOCSIN_*` overrides for the settings in this file.
pub fn apply_env(config: &mut super::Config, var: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    if let Some(v) = var("TOCSIN_METRICS_TOKEN") {
        config.metrics.token = Some(v);
    }
    if let Some(v) = var("TOCSIN_METRICS_TOKEN_FILE") {
        config.metrics.token_file = Some(PathBuf::from(v));
    }
    if let Some(v) = var("TOCSIN_METRICS_LISTEN") {
        config.metrics.listen = Some(v.trim().parse().map_err(|e| ConfigError::Invalid {
            key: "metrics.listen",
            message: format!("`{v}` is not an address like 127.0.0.1:9108 ({e})"),
        })?);
    }
    if let Some(v) = var("TOCSIN_ADMIN_TOKEN_FILE") {
        config.admin_token_file = Some(PathBuf::from(v));
    }
    if let Some(v) = var("TOCSIN_PASSWORD_MIN_LENGTH") {
        config.password_min_length = v.trim().parse().map_err(|e| ConfigError::Invalid {
            key: "password_min_length",
            message: format!("`{v}` is not a number ({e})"),
        })?;
    }
    if let Some(v) = var("TOCSIN_FEDERATION_DELEGATE") {
        config.federation_delegate = Some(v);
    }
    Ok(())
}

/// Checks of the settings in this file.
pub fn validate(config: &super::Config) -> Result<(), ConfigError> {
    if config.password_min_length == 0 || config.password_min_length > 1024 {
        return Err(ConfigError::Invalid {
            key: "password_min_length",
            message: "must be between 1 and 1024".to_owned(),
        });
    }
    if let Some(delegate) = &config.federation_delegate {
        ruma::ServerName::parse(delegate).map_err(|e| ConfigError::Invalid {
            key: "federation_delegate",
            message: format!("`{delegate}` is not a host[:port] ({e})"),
        })?;
    }
    Ok(())
}

/// Reads the operator's admin token file: its first line.
pub fn read_admin_token(path: &std::path::Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        return Err(ConfigError::Invalid {
            key: "admin_token_file",
            message: format!("{}: the token must be at least 16 characters", path.display()),
        });
    }
    Ok(token)
}
