//! TLS for the Server-Server API: the listener's certificate (configured, or self-signed on first
//! start), the trust outbound connections use (the configured CA bundles plus the node's own
//! certificate, never public web roots), a small private CA for labs, demos and tests, and the
//! listener that hands finished TLS handshakes to axum.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use ruma::ServerName;
use rustls::{ClientConfig, RootCertStore, ServerConfig, crypto::CryptoProvider};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use crate::Config;
use crate::workers::Workers;

/// The generated certificate and key, in the data dir.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// A peer that opens a connection and never finishes the handshake is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The one crypto stack: aws-lc-rs, the provider reqwest already links.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The host part of a server name as it goes into a certificate: no port, no IPv6 brackets.
pub fn cert_host(server_name: &ServerName) -> &str {
    server_name.host().trim_start_matches('[').trim_end_matches(']')
}

/// A private certificate authority, held in memory.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_pem: String,
}

impl Ca {
    /// The CA certificate, for `tls_ca_files`.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA's private key, for an operator who keeps the CA.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

/// Makes a new private CA named `name` (its common name). It may sign node certificates only.
pub fn issue_ca(name: &str) -> anyhow::Result<Ca> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let key_pem = key.serialize_pem();
    Ok(Ca { issuer: CertifiedIssuer::self_signed(params, key)?, key_pem })
}

/// Issues a server certificate for `host` signed by `ca`: a DNS SAN for a hostname, an IP SAN for
/// an IP literal (brackets and a port, as in a server name, are stripped). Returns (cert, key) PEM.
pub fn issue_node_cert(ca: &Ca, host: &str) -> anyhow::Result<(String, String)> {
    let host = bare_host(host);
    let params = node_params(host)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A self-signed server certificate for `host`. Returns (cert, key) PEM.
pub fn self_signed(host: &str) -> anyhow::Result<(String, String)> {
    let params = node_params(bare_host(host))?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn node_params(host: &str) -> anyhow::Result<CertificateParams> {
    // `CertificateParams::new` makes an IP SAN for an IP literal and a DNS SAN otherwise.
    let mut params = CertificateParams::new(vec![host.to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, host);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` -> the bare host.
pub(crate) fn bare_host(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.split_once(':') {
        // More than one colon: a bare IPv6 address.
        Some((h, port)) if !port.contains(':') => h,
        _ => host,
    }
}

/// The node's federation certificate: where it lives and its chain.
#[derive(Clone, Debug)]
pub struct NodeTls {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_chain: Vec<CertificateDer<'static>>,
}

impl NodeTls {
    /// Uses `tls_cert`/`tls_key` when configured; otherwise the self-signed pair in the data dir,
    /// made on first start for the server name's host.
    pub fn load_or_create(config: &Config, server_name: &ServerName) -> anyhow::Result<Self> {
        let (cert_path, key_path) = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => {
                let cert = config.data_dir.join(CERT_FILE);
                let key = config.data_dir.join(KEY_FILE);
                if !cert.exists() || !key.exists() {
                    let (cert_pem, key_pem) = self_signed(cert_host(server_name))?;
                    write_file(&key, key_pem.as_bytes(), true)?;
                    write_file(&cert, cert_pem.as_bytes(), false)?;
                    tracing::info!(cert = %cert.display(), "made a self-signed federation certificate");
                }
                (cert, key)
            }
        };
        let cert_chain = load_certs(&cert_path)?;
        if cert_chain.is_empty() {
            anyhow::bail!("{}: no certificate in the file", cert_path.display());
        }
        Ok(Self { cert_path, key_path, cert_chain })
    }

    /// The rustls server configuration for the federation listener (HTTP/1.1), serving the
    /// certificate `cert` holds (reloaded when its files change; see `tls_reload`).
    pub fn reloading_server_config(
        &self,
    ) -> anyhow::Result<(Arc<ServerConfig>, Arc<super::tls_reload::ReloadingCert>)> {
        let cert = super::tls_reload::ReloadingCert::load(self.cert_path.clone(), self.key_path.clone())?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((Arc::new(config), cert))
    }

    /// The rustls server configuration for the federation listener (HTTP/1.1).
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let key = PrivateKeyDer::from_pem_file(&self.key_path)
            .with_context(|| format!("{}: no usable private key", self.key_path.display()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.cert_chain.clone(), key)
            .with_context(|| format!("{} does not match {}", self.cert_path.display(), self.key_path.display()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Writes a file durably; `private` makes it readable by the owner only (keys).
pub(crate) fn write_file(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {}", path.display()))
}

/// The rustls client configuration for outbound federation: trust `ca_files` and `own` (the node's
/// own certificate, so a self-signed node can talk to itself), plus the federation list's member
/// CAs set later on the returned verifier; or anything when `verify` is off (no verifier then).
pub fn client_config(
    own: &[CertificateDer<'static>],
    ca_files: &[PathBuf],
    verify: bool,
) -> anyhow::Result<(ClientConfig, Option<Arc<super::trust::TrustVerifier>>)> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let mut config = if verify {
        let mut roots = RootCertStore::empty();
        for path in ca_files {
            for cert in load_certs(path)? {
                roots.add(cert).with_context(|| format!("{}: not a usable CA certificate", path.display()))?;
            }
        }
        for cert in own {
            // A CA-issued node certificate is no trust anchor; only a self-signed one matters here.
            if let Err(e) = roots.add(cert.clone()) {
                tracing::debug!(error = %e, "own certificate not added as a trust anchor");
            }
        }
        let trust = Arc::new(super::trust::TrustVerifier::new(provider, roots));
        let config = builder.dangerous().with_custom_certificate_verifier(trust.clone()).with_no_client_auth();
        (config, Some(trust))
    } else {
        tracing::warn!("tls_verify = false: federation accepts any peer certificate; use this in labs only");
        let any = Arc::new(super::trust::TrustVerifier::accept_any(provider));
        (builder.dangerous().with_custom_certificate_verifier(any).with_no_client_auth(), None)
    };
    config.0.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts TCP connections and runs each TLS handshake in its own task, so one slow peer cannot
/// hold up the others; axum gets the finished streams. Stops accepting when `stop` turns true.
pub struct TlsListener {
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn spawn(tcp: TcpListener, config: Arc<ServerConfig>, workers: &Workers) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        workers.spawn("federation-accept", |mut stop| async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = tcp.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::warn!(error = %e, "federation accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    // The guard `wait_for` returns is not Send: drop it inside.
                    _ = async { stop.wait_for(|stopped| *stopped).await.is_ok() } => break,
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "federation TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "federation TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_ports_and_brackets() {
        assert_eq!(bare_host("a.test"), "a.test");
        assert_eq!(bare_host("a.test:8448"), "a.test");
        assert_eq!(bare_host("127.0.0.1:8448"), "127.0.0.1");
        assert_eq!(bare_host("[::1]:8448"), "::1");
        assert_eq!(bare_host("::1"), "::1");
    }

    #[test]
    fn a_ca_issues_node_certificates_for_names_and_addresses() {
        let ca = issue_ca("Test CA").unwrap();
        let mut roots = RootCertStore::empty();
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        roots.add(ca_der).unwrap();
        for host in ["a.test", "127.0.0.1:8448"] {
            let (cert, key) = issue_node_cert(&ca, host).unwrap();
            assert!(cert.contains("BEGIN CERTIFICATE") && key.contains("PRIVATE KEY"));
        }
    }
}
