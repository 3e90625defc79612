//! Which addresses outbound federation may reach. A server name is chosen by whoever sends an
//! event, a media id or a key query, so without this check anyone could make the node connect
//! into its own network (loopback, the LAN, cloud metadata at 169.254.169.254): private,
//! loopback, link-local and unspecified addresses are refused unless the operator pinned the
//! server (`federation_pins`, the federation list's `address`) or allowed the range
//! (`outbound_ip_allow`). The check runs on the addresses DNS (or SRV) returned, so a public
//! name pointing inward is caught too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Ranges refused by default.
fn blocked() -> [IpNet; 12] {
    let v4 = |a, b, c, d, len| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len));
    let v6 = |addr: Ipv6Addr, len| IpNet::V6(Ipv6Net::new_assert(addr, len));
    [
        v4(0, 0, 0, 0, 8),
        v4(10, 0, 0, 0, 8),
        v4(100, 64, 0, 0, 10),
        v4(127, 0, 0, 0, 8),
        v4(169, 254, 0, 0, 16),
        v4(172, 16, 0, 0, 12),
        v4(192, 168, 0, 0, 16),
        v4(255, 255, 255, 255, 32),
        v6(Ipv6Addr::UNSPECIFIED, 128),
        v6(Ipv6Addr::LOCALHOST, 128),
        v6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
        v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    ]
}

/// The operator's exceptions to the refused ranges.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allow: Vec<IpNet>,
}

impl OutboundPolicy {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// Whether a connection to `ip` is allowed (pins are allowed before they get here).
    pub fn permits(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address reaches the IPv4 address: judge it as that.
        let candidates = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => vec![ip, IpAddr::V4(v4)],
                None => vec![ip],
            },
            IpAddr::V4(_) => vec![ip],
        };
        if candidates.iter().any(|ip| self.allow.iter().any(|net| net.contains(ip))) {
            return true;
        }
        !candidates.iter().any(|ip| blocked().iter().any(|net| net.contains(ip)))
    }

    /// The error for a server whose every address was refused.
    pub fn refusal(&self, what: &str, refused: &[IpAddr]) -> String {
        let list: Vec<String> = refused.iter().map(ToString::to_string).collect();
        format!(
            "refused to connect to {what}: it resolves only to private, loopback or link-local addresses ({}); \
             pin the server (federation_pins or the federation list's address) or allow the range in \
             outbound_ip_allow",
            list.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn inward_addresses_are_refused_unless_allowed() {
        let none = OutboundPolicy::default();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!none.permits(ip(refused)), "{refused} must be refused");
        }
        for public in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(none.permits(ip(public)), "{public} is public");
        }
        let lab = OutboundPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(lab.permits(ip("127.0.0.1")));
        assert!(lab.permits(ip("::ffff:127.0.0.1")), "the mapped form of an allowed address");
        assert!(!lab.permits(ip("10.0.0.1")), "only the allowed range");
        assert!(!lab.permits(ip("::1")));
    }
}
