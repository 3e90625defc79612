//! HTTP clients for what the node calls outside federation: push gateways, and the command line
//! calling the running node. Federation has its own TLS setup (`federation::tls`).

use std::path::PathBuf;

use anyhow::Context;

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
