//! SRV lookups for server discovery: `_matrix-fed._tcp.<host>`, then the deprecated
//! `_matrix._tcp.<host>`, with the system's resolver configuration. A pinned federation never
//! gets here; this is for peers found through DNS.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::{
    TokioResolver,
    config::{NameServerConfig, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    proto::rr::RData,
};

/// The system's resolver, or none if it has no usable configuration (then SRV is skipped).
pub struct Srv {
    resolver: Option<TokioResolver>,
}

impl Srv {
    /// `nameserver` (UDP and TCP) if given, else the system's configuration.
    pub fn new(nameserver: Option<SocketAddr>) -> Self {
        let Some(addr) = nameserver else { return Self::from_system() };
        let mut server = NameServerConfig::udp_and_tcp(addr.ip());
        for connection in &mut server.connections {
            connection.port = addr.port();
        }
        let config = ResolverConfig::from_parts(None, Vec::new(), vec![server]);
        match TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).build() {
            Ok(resolver) => Self { resolver: Some(resolver) },
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot use the configured DNS server: SRV discovery is off");
                Self { resolver: None }
            }
        }
    }

    pub fn from_system() -> Self {
        let resolver = match TokioResolver::builder_tokio().and_then(|b| b.build()) {
            Ok(resolver) => Some(resolver),
            Err(e) => {
                tracing::info!(error = %e, "no system DNS configuration: SRV discovery is off");
                None
            }
        };
        Self { resolver }
    }

    /// The address of the best (lowest priority, then highest weight) target of `host`'s SRV
    /// records that `permits` accepts; `Err` with the addresses found when it accepts none.
    /// None when `host` has no SRV records.
    pub async fn lookup(
        &self,
        host: &str,
        permits: impl Fn(IpAddr) -> bool,
    ) -> Option<Result<SocketAddr, Vec<IpAddr>>> {
        let resolver = self.resolver.as_ref()?;
        let mut refused = Vec::new();
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let Ok(lookup) = resolver.srv_lookup(format!("{service}.{host}.")).await else { continue };
            let mut targets: Vec<(u16, u16, String, u16)> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) => Some((srv.priority, u16::MAX - srv.weight, srv.target.to_ascii(), srv.port)),
                    _ => None,
                })
                .collect();
            targets.sort();
            for (_, _, target, port) in targets {
                let Ok(ips) = resolver.lookup_ip(target.as_str()).await else { continue };
                for ip in ips.iter() {
                    if permits(ip) {
                        tracing::debug!(%host, %target, port, "found by SRV");
                        return Some(Ok(SocketAddr::new(ip, port)));
                    }
                    refused.push(ip);
                }
            }
        }
        (!refused.is_empty()).then_some(Err(refused))
    }
}
