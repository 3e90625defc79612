//! The federation listener's certificate, reloaded when its files change: certificates from an
//! ACME client or a CA are renewed in place, and the node must serve the new one without a
//! restart. New handshakes get the new pair; a pair that does not load (half-written, key and
//! certificate not matching) is logged and the old one kept.

use std::{
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};

/// How often the certificate files' modification times are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
}

fn load(cert_path: &std::path::Path, key_path: &std::path::Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = super::tls::load_certs(cert_path)?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate in the file", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("{}: no usable private key", key_path.display()))?;
    let signing = super::tls::provider()
        .key_provider
        .load_private_key(key)
        .with_context(|| format!("{}: unsupported private key", key_path.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().with_context(|| format!("{} does not match {}", cert_path.display(), key_path.display()))?;
    Ok(Arc::new(certified))
}

fn stamps(cert: &std::path::Path, key: &std::path::Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

impl ReloadingCert {
    pub fn load(cert_path: PathBuf, key_path: PathBuf) -> anyhow::Result<Arc<Self>> {
        let current = load(&cert_path, &key_path)?;
        let stamp = stamps(&cert_path, &key_path);
        Ok(Arc::new(Self { cert_path, key_path, current: RwLock::new(current), stamp: RwLock::new(stamp) }))
    }

    /// Reloads if either file changed since the last load; returns whether it did.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.cert_path, &self.key_path);
        if now.is_none() || *self.stamp.read().unwrap_or_else(PoisonError::into_inner) == now {
            return false;
        }
        match load(&self.cert_path, &self.key_path) {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = certified;
                *self.stamp.write().unwrap_or_else(PoisonError::into_inner) = now;
                tracing::info!(cert = %self.cert_path.display(), "federation TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Not recorded as seen: the next poll tries again (the writer may not be done).
                tracing::warn!(error = %format!("{e:#}"), "federation TLS certificate changed but does not load; keeping the old one");
                false
            }
        }
    }

    /// The chain now served (tests, metrics).
    pub fn chain(&self) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).cert.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

/// Polls the files until the node stops.
pub fn spawn(cert: Arc<ReloadingCert>, workers: &crate::workers::Workers) {
    workers.spawn("tls-reload", |mut stop| async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let cert = cert.clone();
            let _ = tokio::task::spawn_blocking(move || cert.reload_if_changed()).await;
        }
    });
}
