//! The federation listener serves a renewed certificate without a restart, and keeps the old
//! one when the new files do not load.

use std::{sync::Arc, time::Duration};

use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tocsin_node::federation::tls;

/// The leaf certificate the federation listener presents now.
async fn served_cert(addr: std::net::SocketAddr) -> CertificateDer<'static> {
    let (config, _) = tls::client_config(&[], &[], false).expect("client config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let stream = connector.connect(ServerName::try_from("tls.test").unwrap(), tcp).await.expect("handshake");
    stream.get_ref().1.peer_certificates().expect("a certificate")[0].clone().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::issue_ca("Renewal test CA").unwrap();
    let (cert_path, key_path) = (dir.path().join("fed.crt"), dir.path().join("fed.key"));
    let (cert, key) = tls::issue_node_cert(&ca, "tls.test").unwrap();
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let node = crate::common::start(&dir.path().join("node"), |c| {
        c.server_name = "tls.test".into();
        c.tls_cert = Some(cert_path.clone());
        c.tls_key = Some(key_path.clone());
    })
    .await;
    let first = served_cert(node.federation_addr).await;
    assert_eq!(first.as_ref(), CertificateDer::from_pem_slice(cert.as_bytes()).unwrap().as_ref());

    // A half-done renewal (new certificate, old key): refused, the old pair keeps serving.
    let (renewed, renewed_key) = tls::issue_node_cert(&ca, "tls.test").unwrap();
    std::fs::write(&cert_path, &renewed).unwrap();
    tokio::time::sleep(tocsin_node::federation::tls_reload::POLL_INTERVAL + Duration::from_secs(1)).await;
    assert_eq!(served_cert(node.federation_addr).await, first, "a mismatched pair is not served");

    // The key follows: the new pair is served within a poll.
    std::fs::write(&key_path, &renewed_key).unwrap();
    let expected = CertificateDer::from_pem_slice(renewed.as_bytes()).unwrap();
    let deadline = tokio::time::Instant::now() + tocsin_node::federation::tls_reload::POLL_INTERVAL * 3;
    loop {
        if served_cert(node.federation_addr).await.as_ref() == expected.as_ref() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the renewed certificate is not served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.shutdown().await;
}
