//! The `[rate_limits]` table of the node config.

use std::net::IpAddr;

use serde::Deserialize;

/// A token bucket: `burst` actions at once, then `per_second` on average. `burst = 0` turns the
/// limit off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub burst: u32,
    #[serde(default)]
    pub per_second: f64,
}

impl Limit {
    pub const OFF: Limit = Limit { burst: 0, per_second: 0.0 };

    pub const fn new(burst: u32, per_second: f64) -> Self {
        Self { burst, per_second }
    }

    pub fn is_off(&self) -> bool {
        self.burst == 0
    }
}

/// Rate limits per user and per client address. Defaults fit a crisis: people working fast are
/// never slowed, while password guessing and floods are stopped. Per-address limits on
/// authenticated actions are off by default: an agency's NAT or reverse proxy puts every
/// officer behind one address, and each account has its own bucket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `false` switches every limit off (load tests, benchmarks).
    pub enabled: bool,
    /// Reverse proxies whose `X-Forwarded-For` names the client. Requests from any other peer
    /// are limited by the peer's own address, whatever their headers say.
    pub trusted_proxies: Vec<IpAddr>,
    /// Every login attempt, per client address.
    pub login_per_ip: Limit,
    /// Failed logins per account (taken before the password is checked, given back on success,
    /// so an emptied bucket refuses even the right password until it refills).
    pub login_failures_per_user: Limit,
    /// Failed logins per client address, whatever account they name.
    pub login_failures_per_ip: Limit,
    /// Registration attempts (requests completing a UIA stage), per client address.
    pub register_per_ip: Limit,
    /// Messages, state events and redactions.
    pub send_per_user: Limit,
    pub send_per_ip: Limit,
    /// Joins and knocks.
    pub join_per_user: Limit,
    pub join_per_ip: Limit,
    pub invite_per_user: Limit,
    pub invite_per_ip: Limit,
    /// Media uploads.
    pub upload_per_user: Limit,
    pub upload_per_ip: Limit,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            trusted_proxies: Vec::new(),
            login_per_ip: Limit::new(100, 5.0),
            login_failures_per_user: Limit::new(5, 0.1),
            login_failures_per_ip: Limit::new(20, 0.1),
            register_per_ip: Limit::new(30, 0.2),
            // The load generator's 20 senders post about 150 events/s each; a person never does.
            send_per_user: Limit::new(500, 200.0),
            send_per_ip: Limit::OFF,
            join_per_user: Limit::new(50, 2.0),
            join_per_ip: Limit::OFF,
            invite_per_user: Limit::new(100, 5.0),
            invite_per_ip: Limit::OFF,
            upload_per_user: Limit::new(50, 2.0),
            upload_per_ip: Limit::OFF,
        }
    }
}

impl RateLimitConfig {
    /// No limits at all.
    pub fn off() -> Self {
        Self { enabled: false, ..Self::default() }
    }

    pub(crate) fn named_limits(&self) -> [(&'static str, Limit); 12] {
        [
            ("login_per_ip", self.login_per_ip),
            ("login_failures_per_user", self.login_failures_per_user),
            ("login_failures_per_ip", self.login_failures_per_ip),
            ("register_per_ip", self.register_per_ip),
            ("send_per_user", self.send_per_user),
            ("send_per_ip", self.send_per_ip),
            ("join_per_user", self.join_per_user),
            ("join_per_ip", self.join_per_ip),
            ("invite_per_user", self.invite_per_user),
            ("invite_per_ip", self.invite_per_ip),
            ("upload_per_user", self.upload_per_user),
            ("upload_per_ip", self.upload_per_ip),
        ]
    }

    /// A limit that is on must refill: `per_second` above zero and finite.
    pub fn validate(&self) -> Result<(), String> {
        for (name, limit) in self.named_limits() {
            let refills = limit.per_second.is_finite() && limit.per_second > 0.0;
            if !limit.is_off() && !refills {
                return Err(format!("{name}: per_second must be above 0 (or burst = 0 to turn the limit off)"));
            }
        }
        Ok(())
    }
}
