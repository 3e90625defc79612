//! Whom outbound federation TLS trusts. Everyone: the CA bundles in `tls_ca_files` and the
//! node's own (self-signed) certificate. A federation-list member that names its CA (`ca_cert`)
//! or the CA's SHA-256 fingerprint (`ca_fingerprint`): that CA only, and for that member only, so
//! one member's CA cannot vouch for another member's name (the BwMessenger model: a private CA
//! per federation, no public trust).
//!
//! The pooled HTTP client keeps one TLS configuration for its life; this verifier is that
//! configuration's, and the members' anchors inside it are swapped when the list is reloaded,
//! so a new or changed CA is in force for the next connection, without a restart. Connections
//! already open stay until they close (they were verified when they were made).
//!
//! A fingerprint alone can only be checked against a certificate the peer presents: the
//! member's server must send its CA certificate in its chain (a "full chain" file).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use rustls::{
    DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName as TlsServerName, UnixTime};
use tocsin_policies::{VerifiedList, pem::sha256_hex};

/// The CA a member's certificate must chain to.
#[derive(Debug, Default)]
struct MemberCa {
    /// Built from the member's `ca_cert`.
    verifier: Option<Arc<WebPkiServerVerifier>>,
    /// SHA-256 (hex) of the member's CA: `ca_fingerprint`, or those of the `ca_cert` certificates.
    fingerprints: Vec<String>,
}

#[derive(Debug)]
pub struct TrustVerifier {
    provider: Arc<CryptoProvider>,
    /// `tls_verify = false`: any certificate (handshake signatures are still checked).
    any: bool,
    /// The node-wide anchors; `None` when there are none (only members named in the list can be
    /// reached then).
    base: Option<Arc<WebPkiServerVerifier>>,
    /// By TLS host (a server name without its port); several members on one host share.
    members: RwLock<HashMap<String, Arc<MemberCa>>>,
}

fn verifier(provider: &Arc<CryptoProvider>, roots: RootCertStore) -> Option<Arc<WebPkiServerVerifier>> {
    if roots.is_empty() {
        return None;
    }
    match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build() {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "cannot build a certificate verifier");
            None
        }
    }
}

/// The host part of a server name, as TLS sees it (brackets and port stripped, lower case).
fn tls_host(server_name: &str) -> String {
    super::tls::bare_host(server_name).to_ascii_lowercase()
}

impl TrustVerifier {
    pub fn new(provider: Arc<CryptoProvider>, roots: RootCertStore) -> Self {
        let base = verifier(&provider, roots);
        Self { provider, any: false, base, members: RwLock::default() }
    }

    /// Accepts any certificate: for labs only (`tls_verify = false`).
    pub fn accept_any(provider: Arc<CryptoProvider>) -> Self {
        Self { provider, any: true, base: None, members: RwLock::default() }
    }

    /// Takes the members' CAs from `list` (none without a list), replacing the previous ones.
    /// True when they changed.
    pub fn set_members(&self, list: Option<&VerifiedList>) -> bool {
        let mut members: HashMap<String, MemberCa> = HashMap::new();
        for member in list.map(|l| l.members.as_slice()).unwrap_or_default() {
            let fingerprints = member.ca_fingerprints();
            if fingerprints.is_empty() {
                continue;
            }
            let entry = members.entry(tls_host(&member.server_name)).or_default();
            entry.fingerprints.extend(fingerprints);
            if let Some(pem) = &member.ca_cert {
                let certs = tocsin_policies::pem::pem_certificates(pem).unwrap_or_default();
                let mut roots = RootCertStore::empty();
                for der in certs {
                    if let Err(e) = roots.add(CertificateDer::from(der)) {
                        tracing::warn!(server = %member.server_name, error = %e, "the list's ca_cert is not a usable CA");
                    }
                }
                // Two members on one host with different CAs: either CA will do for that host.
                entry.verifier = verifier(&self.provider, roots).or(entry.verifier.take());
            }
        }
        let members: HashMap<String, Arc<MemberCa>> = members.into_iter().map(|(h, m)| (h, Arc::new(m))).collect();
        let mut current = match self.members.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        let same = current.len() == members.len()
            && members.iter().all(|(h, m)| current.get(h).is_some_and(|c| c.fingerprints == m.fingerprints));
        if !same {
            tracing::info!(members = members.len(), "federation list CAs in force for outbound TLS");
            *current = members;
        }
        !same
    }

    fn member(&self, host: &str) -> Option<Arc<MemberCa>> {
        match self.members.read() {
            Ok(members) => members.get(host).cloned(),
            Err(poisoned) => poisoned.into_inner().get(host).cloned(),
        }
    }
}

impl ServerCertVerifier for TrustVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &TlsServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.any {
            return Ok(ServerCertVerified::assertion());
        }
        let host = match server_name {
            TlsServerName::DnsName(name) => name.as_ref().to_ascii_lowercase(),
            TlsServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
            _ => String::new(),
        };
        let Some(member) = self.member(&host) else {
            return match &self.base {
                Some(base) => base.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
                None => Err(rustls::Error::General(format!(
                    "{host}'s certificate cannot be trusted: no CA is (set tls_ca_files, or the member's \
                     ca_cert in the federation list)"
                ))),
            };
        };
        let mut last = None;
        if let Some(verifier) = &member.verifier {
            match verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                Ok(ok) => return Ok(ok),
                Err(e) => last = Some(e),
            }
        }
        // A pinned fingerprint: the CA certificate must be in the chain the peer sent.
        for ca in intermediates.iter().filter(|c| member.fingerprints.contains(&sha256_hex(c))) {
            let mut roots = RootCertStore::empty();
            if roots.add(ca.clone().into_owned()).is_err() {
                continue;
            }
            let Some(pinned) = verifier(&self.provider, roots) else { continue };
            match pinned.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                Ok(ok) => return Ok(ok),
                Err(e) => last = Some(e),
            }
        }
        Err(rustls::Error::General(format!(
            "{host}'s certificate does not chain to the CA the federation list names for it{}",
            last.map(|e| format!(" ({e})")).unwrap_or_default()
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
