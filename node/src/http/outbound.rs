//! HTTP clients for what the node calls outside federation: push gateways, URL previews, and
//! the command line calling the running node. Federation has its own TLS setup
//! (`federation::tls`).

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;

use crate::federation::outbound::OutboundPolicy;

/// Builds `builder()` with the system's CA store, or, on a host that has none (a container built
/// from scratch, an air-gapped site), with only the CAs in `ca_files`: a missing system store
/// must not stop the node or its command line, and plain-HTTP targets need no roots at all.
pub fn client(builder: impl Fn() -> reqwest::ClientBuilder, ca_files: &[PathBuf]) -> anyhow::Result<reqwest::Client> {
    match builder().build() {
        Ok(client) => Ok(client),
        Err(e) => {
            tracing::debug!(error = %e, "no system CA certificates; trusting tls_ca_files only");
            let mut roots = Vec::new();
            for path in ca_files {
                let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
                roots.extend(
                    reqwest::Certificate::from_pem_bundle(&pem)
                        .with_context(|| format!("{}: not a PEM certificate bundle", path.display()))?,
                );
            }
            Ok(builder().tls_certs_only(roots).build()?)
        }
    }
}

/// A client for the command line's calls to the running node.
pub fn cli_client() -> anyhow::Result<reqwest::Client> {
    client(reqwest::Client::builder, &[])
}

/// Resolves host names for a reqwest client, keeping only the addresses the outbound rules
/// permit (`outbound_ip_allow`): a user-chosen URL must not lead into the node's own network.
pub struct OutboundResolver {
    outbound: Arc<OutboundPolicy>,
}

impl OutboundResolver {
    pub fn new(outbound: Arc<OutboundPolicy>) -> Self {
        Self { outbound }
    }
}

impl reqwest::dns::Resolve for OutboundResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let outbound = self.outbound.clone();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                found.into_iter().partition(|a| outbound.permits(a.ip()));
            if allowed.is_empty() && !refused.is_empty() {
                let ips: Vec<_> = refused.iter().map(SocketAddr::ip).collect();
                let refusal: Box<dyn std::error::Error + Send + Sync> = outbound.refusal(name.as_str(), &ips).into();
                return Err(refusal);
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}
