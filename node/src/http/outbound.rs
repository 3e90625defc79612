//! HTTP clients for what the node calls outside federation: push gateways, and the command line
//! calling the running node. Federation has its own TLS setup (`federation::tls`).

use std::path::PathBuf;

/// Builds `builder()` with the system's CA store, or, on a host that has none (a container built
/// from scratch, an air-gapped site), with only the CAs in `ca_files`: a missing system store
/// must not stop the node or its command line, and plain-HTTP targets need no roots at all.
pub fn client(builder: impl Fn() -> reqwest::ClientBuilder, ca_files: &[PathBuf]) -> anyhow::Result<reqwest::Client> {
    match builder().build() {
        Ok(client) => Ok(client),
        Err(e) => {
            tracing::debug!(error = %e, "no system CA certificates; trusting tls_ca_files only");
            Ok(builder().use_preconfigured_tls(ca_files_only(ca_files)?).build()?)
        }
    }
}

/// A client for the command line's calls to the running node.
pub fn cli_client() -> anyhow::Result<reqwest::Client> {
    client(reqwest::Client::builder, &[])
}

/// A web PKI client configuration that trusts only the CA files named.
fn ca_files_only(ca_files: &[PathBuf]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for path in ca_files {
        for cert in crate::federation::tls::load_certs(path)? {
            roots.add(cert)?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(crate::federation::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
