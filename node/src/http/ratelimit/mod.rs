//! Rate limits: token buckets per user and per client address for the actions abuse goes
//! through (password guessing, registration, floods of messages, joins, invites and uploads).
//! Each node owns its [`RateLimiter`]; handlers call it before doing the work.

mod bucket;
mod settings;

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::Instant,
};

use http::HeaderMap;
use ruma::UserId;

pub use settings::{Limit, RateLimitConfig};

use crate::error::{Error, Result};
use bucket::KeyedBuckets;

/// What a request is about to do, as far as limits go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Any login attempt (per address only).
    Login,
    /// A login whose password may be wrong: taken before the check, refunded on success.
    LoginFailure,
    Register,
    Send,
    Join,
    Invite,
    Upload,
}

struct ActionLimits {
    per_user: Option<KeyedBuckets<String>>,
    per_ip: Option<KeyedBuckets<IpAddr>>,
}

impl ActionLimits {
    fn new(per_user: Limit, per_ip: Limit) -> Self {
        Self {
            per_user: (!per_user.is_off()).then(|| KeyedBuckets::new(per_user)),
            per_ip: (!per_ip.is_off()).then(|| KeyedBuckets::new(per_ip)),
        }
    }
}

pub struct RateLimiter {
    enabled: bool,
    login: ActionLimits,
    login_failure: ActionLimits,
    register: ActionLimits,
    send: ActionLimits,
    join: ActionLimits,
    invite: ActionLimits,
    upload: ActionLimits,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        let c = config;
        Self {
            enabled: c.enabled,
            login: ActionLimits::new(Limit::OFF, c.login_per_ip),
            login_failure: ActionLimits::new(c.login_failures_per_user, c.login_failures_per_ip),
            register: ActionLimits::new(Limit::OFF, c.register_per_ip),
            send: ActionLimits::new(c.send_per_user, c.send_per_ip),
            join: ActionLimits::new(c.join_per_user, c.join_per_ip),
            invite: ActionLimits::new(c.invite_per_user, c.invite_per_ip),
            upload: ActionLimits::new(c.upload_per_user, c.upload_per_ip),
        }
    }

    fn limits(&self, action: Action) -> &ActionLimits {
        match action {
            Action::Login => &self.login,
            Action::LoginFailure => &self.login_failure,
            Action::Register => &self.register,
            Action::Send => &self.send,
            Action::Join => &self.join,
            Action::Invite => &self.invite,
            Action::Upload => &self.upload,
        }
    }

    /// Takes a token for `action` from the user's bucket and the address's bucket; if either is
    /// empty nothing is taken and the answer is 429 `M_LIMIT_EXCEEDED` with the wait.
    pub fn take(&self, action: Action, user: Option<&UserId>, ip: Option<IpAddr>) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let limits = self.limits(action);
        let now = Instant::now();
        let user_key = user.map(|u| u.as_str().to_owned());
        if let (Some(buckets), Some(key)) = (&limits.per_user, &user_key) {
            buckets.take(key, now).map_err(|wait| limited(action, wait))?;
        }
        if let (Some(buckets), Some(ip)) = (&limits.per_ip, ip)
            && let Err(wait) = buckets.take(&ip, now)
        {
            if let (Some(user_buckets), Some(key)) = (&limits.per_user, &user_key) {
                user_buckets.refund(key, now);
            }
            return Err(limited(action, wait));
        }
        Ok(())
    }

    /// Gives back what [`Self::take`] took, for an attempt that turned out not to count.
    pub fn refund(&self, action: Action, user: Option<&UserId>, ip: Option<IpAddr>) {
        if !self.enabled {
            return;
        }
        let limits = self.limits(action);
        let now = Instant::now();
        if let (Some(buckets), Some(user)) = (&limits.per_user, user) {
            buckets.refund(&user.as_str().to_owned(), now);
        }
        if let (Some(buckets), Some(ip)) = (&limits.per_ip, ip) {
            buckets.refund(&ip, now);
        }
    }
}

fn limited(action: Action, wait: std::time::Duration) -> Error {
    tracing::debug!(?action, wait_ms = wait.as_millis(), "rate limited");
    // Whole milliseconds, rounded up, so a client that waits exactly this long finds a token.
    let ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    Error::LimitExceeded(std::time::Duration::from_millis(ms))
}

/// The address requests are limited by: the socket peer, or, when the peer is a trusted reverse
/// proxy, the nearest address in `X-Forwarded-For` that is not itself a trusted proxy. IPv6
/// clients are grouped by /64, the block one subscriber usually gets.
pub fn client_ip(peer: Option<SocketAddr>, headers: &HeaderMap, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = normalise(peer?.ip());
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|t| normalise(*t) == *ip);
    let mut client = peer;
    if trusted(&peer) {
        // Each proxy appends the address it got the request from; read from the nearest hop
        // back and stop at the first one no trusted proxy vouches for.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else { break };
            client = normalise(ip);
            if !trusted(&client) {
                break;
            }
        }
    }
    Some(group(client))
}

fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if !v6.is_loopback() => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let trusted = ["10.0.0.1".parse().unwrap()];
        let xff = headers(&["203.0.113.9, 198.51.100.7"]);
        // Untrusted peer: its headers are ignored.
        assert_eq!(client_ip(Some(proxy), &xff, &[]), Some("10.0.0.1".parse().unwrap()));
        // Trusted peer: the nearest hop it names.
        assert_eq!(client_ip(Some(proxy), &xff, &trusted), Some("198.51.100.7".parse().unwrap()));
        // A chain of trusted proxies is walked back.
        let two = ["10.0.0.1".parse().unwrap(), "198.51.100.7".parse().unwrap()];
        assert_eq!(client_ip(Some(proxy), &xff, &two), Some("203.0.113.9".parse().unwrap()));
        // Garbage stops the walk at the last good hop (here: the proxy itself).
        assert_eq!(client_ip(Some(proxy), &headers(&["nonsense"]), &trusted), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(client_ip(None, &xff, &trusted), None);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let a: SocketAddr = "[2001:db8:1:2:aaaa::1]:1".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:bbbb::2]:1".parse().unwrap();
        assert_eq!(client_ip(Some(a), &HeaderMap::new(), &[]), client_ip(Some(b), &HeaderMap::new(), &[]));
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:1".parse().unwrap();
        assert_eq!(client_ip(Some(mapped), &HeaderMap::new(), &[]), Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn either_bucket_refuses_and_nothing_is_taken_then() {
        let config = RateLimitConfig {
            login_failures_per_user: Limit::new(2, 0.001),
            login_failures_per_ip: Limit::new(3, 0.001),
            ..RateLimitConfig::default()
        };
        let limiter = RateLimiter::new(&config);
        let alice = UserId::parse("@alice:x").unwrap();
        let bob = UserId::parse("@bob:x").unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        limiter.take(Action::LoginFailure, Some(&alice), Some(ip)).unwrap();
        limiter.take(Action::LoginFailure, Some(&alice), Some(ip)).unwrap();
        let err = limiter.take(Action::LoginFailure, Some(&alice), Some(ip)).unwrap_err();
        assert!(matches!(err, Error::LimitExceeded(wait) if wait.as_secs() >= 900), "{err:?}");
        // The address bucket was charged twice, not three times.
        limiter.take(Action::LoginFailure, Some(&bob), Some(ip)).unwrap();
        assert!(limiter.take(Action::LoginFailure, Some(&bob), Some(ip)).is_err());
        // Bob's own bucket was not charged by the refused attempt.
        let other_ip: IpAddr = "192.0.2.2".parse().unwrap();
        limiter.take(Action::LoginFailure, Some(&bob), Some(other_ip)).unwrap();
        // Switched off: nothing is limited.
        let off = RateLimiter::new(&RateLimitConfig::off());
        for _ in 0..100 {
            off.take(Action::LoginFailure, Some(&alice), Some(ip)).unwrap();
        }
    }
}
