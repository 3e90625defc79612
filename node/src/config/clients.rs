//! Settings of what clients are offered: how long refreshable access tokens live.

use super::ConfigError;

/// Five minutes: a stolen access token is worth little for long, and a client refreshes a few
/// times an hour at most.
pub const DEFAULT_ACCESS_TOKEN_LIFETIME_SECS: u64 = 300;

/// `TOCSIN_*` overrides for the settings in this file.
pub fn apply_env(config: &mut super::Config, var: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    if let Some(v) = var("TOCSIN_ACCESS_TOKEN_LIFETIME_SECS") {
        config.access_token_lifetime_secs = v.trim().parse().map_err(|e| ConfigError::Invalid {
            key: "access_token_lifetime_secs",
            message: format!("`{v}` is not a number of seconds ({e})"),
        })?;
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
    Ok(())
}
