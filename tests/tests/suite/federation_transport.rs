//! The federation transport: two nodes on TLS federation ports, pinned to each other and trusting
//! one private CA. Key fetching and caching, X-Matrix signing and verification, refusal of
//! unsigned, forged and misaddressed requests, real TLS verification, and the self-signed
//! certificate made on first start.

use crate::common;

use std::{net::SocketAddr, path::Path, time::Duration};

use tocsin_node::{
    Config, Error, NodeHandle,
    federation::{client::FederationClient, tls},
    ruma::{
        OwnedServerName, ServerName,
        api::{
            OutgoingRequest,
            federation::{
                authentication::ServerSignaturesInput,
                directory::get_public_rooms,
                discovery::{get_server_keys, get_server_version},
            },
        },
        serde::Base64,
        signatures::Ed25519KeyPair,
    },
};

fn free_port() -> u16 {
    tocsin_tests::cluster::free_port()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn name(s: &str) -> OwnedServerName {
    OwnedServerName::try_from(s).expect("server name")
}

/// Config for `server` on `port`, with a cert from `ca` and a pin to the peer.
fn node_config(dir: &Path, certs: &Path, ca: &tls::Ca, server: &str, port: u16, peer: &str, peer_port: u16) -> Config {
    let (cert, key) = tls::issue_node_cert(ca, server).expect("node cert");
    let cert_path = certs.join(format!("{server}.crt"));
    let key_path = certs.join(format!("{server}.key"));
    std::fs::write(&cert_path, cert).expect("write cert");
    std::fs::write(&key_path, key).expect("write key");
    let mut config = common::config(dir, server);
    config.federation_listen = addr(port);
    config.tls_cert = Some(cert_path);
    config.tls_key = Some(key_path);
    config.tls_ca_files = vec![certs.join("ca.pem")];
    config.federation_pins.insert(peer.to_owned(), addr(peer_port));
    config
}

struct Pair {
    a: NodeHandle,
    b: NodeHandle,
    b_config: Config,
    _dirs: [tempfile::TempDir; 3],
}

async fn pair() -> Pair {
    let (da, db, certs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ca = tls::issue_ca("Tocsin test federation CA").expect("CA");
    std::fs::write(certs.path().join("ca.pem"), ca.cert_pem()).unwrap();
    let (pa, pb) = (free_port(), free_port());
    let a_config = node_config(da.path(), certs.path(), &ca, "a.test", pa, "b.test", pb);
    let b_config = node_config(db.path(), certs.path(), &ca, "b.test", pb, "a.test", pa);
    let a = tocsin_node::Node::start(a_config).await.expect("a starts");
    let b = tocsin_node::Node::start(b_config.clone()).await.expect("b starts");
    assert_eq!(a.federation_addr, addr(pa));
    assert_eq!(b.federation_addr, addr(pb));
    Pair { a, b, b_config, _dirs: [da, db, certs] }
}

fn b_public_key(b: &NodeHandle) -> (String, Base64) {
    let keys = &b.services.keys;
    (keys.key_id(), Base64::new(keys.pair().public_key().to_vec()))
}

#[tokio::test]
async fn keys_are_fetched_over_tls_cached_and_survive_the_peer_going_away() {
    let Pair { a, b, _dirs, .. } = pair().await;
    let client = &a.services.federation_client;
    let bn = name("b.test");

    let version = client.send_unauth(&bn, get_server_version::v1::Request::new()).await.expect("version over TLS");
    assert_eq!(version.server.and_then(|s| s.name).as_deref(), Some("Tocsin"));
    let keys = client.send_unauth(&bn, get_server_keys::v2::Request::new()).await.expect("B's key server");
    let body: serde_json::Value = serde_json::from_str(keys.server_key.json().get()).unwrap();
    assert_eq!(body["server_name"], "b.test");

    let (key_id, public) = b_public_key(&b);
    let map = a.services.remote_keys.public_key_map([bn.clone(), name("a.test")]).await.expect("keys for both");
    assert_eq!(map["b.test"].get(&key_id), Some(&public), "B's key, fetched and verified");
    let (own_id, own) = (a.services.keys.key_id(), Base64::new(a.services.keys.pair().public_key().to_vec()));
    assert_eq!(map["a.test"].get(&own_id), Some(&own), "our own key, without a request");

    b.shutdown().await;
    let err = client.send_unauth(&bn, get_server_version::v1::Request::new()).await.expect_err("B is down");
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    let again = a.services.remote_keys.public_key_map([bn.clone()]).await.expect("served from the cache");
    assert_eq!(again["b.test"].get(&key_id), Some(&public));
    a.shutdown().await;
}

#[tokio::test]
async fn signed_requests_are_accepted_and_bad_ones_get_401() {
    let Pair { a, b, _dirs, .. } = pair().await;
    let client = &a.services.federation_client;
    let bn = name("b.test");

    // A public room on B, so the directory has something to list.
    let alice = common::user(&b, "alice").await;
    let mut create = tocsin_node::ruma::api::client::room::create_room::v3::Request::new();
    create.visibility = tocsin_node::ruma::api::client::room::Visibility::Public;
    create.name = Some("Flood desk".to_owned());
    alice.create_room(create).await.expect("room created");

    let mut seen = b.services.peer_seen.subscribe();
    let rooms = client.send(&bn, get_public_rooms::v1::Request::new()).await.expect("signed request accepted");
    assert_eq!(rooms.chunk.len(), 1);
    assert_eq!(rooms.chunk[0].name.as_deref(), Some("Flood desk"));
    let origin = tokio::time::timeout(Duration::from_secs(1), seen.recv()).await.expect("peer seen").unwrap();
    assert_eq!(origin, "a.test", "B told its sender that A is up");

    let a_keys = &a.services.keys;
    let build = |key: &Ed25519KeyPair, destination: &str| {
        get_public_rooms::v1::Request::new()
            .try_into_http_request::<Vec<u8>>(
                "https://b.test",
                ServerSignaturesInput::new(name("a.test"), name(destination), key),
                (),
            )
            .expect("request builds")
    };
    let expect_401 = async |request, what: &str| {
        let response = client.send_raw(&bn, request).await.expect("B answers");
        assert_eq!(response.status().as_u16(), 401, "{what}");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{what}: {body}");
        body["error"].as_str().unwrap_or_default().to_owned()
    };

    let mut unsigned = build(a_keys.pair(), "b.test");
    unsigned.headers_mut().remove("authorization");
    let message = expect_401(unsigned, "unsigned").await;
    assert!(message.contains("X-Matrix"), "{message}");

    // Signed by another key under A's key id: the signature does not verify.
    let version = a_keys.key_id().trim_start_matches("ed25519:").to_owned();
    let forged = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), version).unwrap();
    let message = expect_401(build(&forged, "b.test"), "forged").await;
    assert!(message.contains("does not verify"), "{message}");

    // A real signature, but for another destination.
    let message = expect_401(build(a_keys.pair(), "c.test"), "wrong destination").await;
    assert!(message.contains("c.test"), "{message}");

    // A correctly signed raw request passes, and B keeps serving signed requests.
    let ok = client.send_raw(&bn, build(a_keys.pair(), "b.test")).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    client.send(&bn, get_public_rooms::v1::Request::new()).await.expect("still accepted");

    // Unknown federation paths are 404 M_UNRECOGNIZED.
    let mut unknown = build(a_keys.pair(), "b.test");
    *unknown.uri_mut() = "/_matrix/federation/v1/nothing".parse().unwrap();
    let response = client.send_raw(&bn, unknown).await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_client_without_the_ca_refuses_the_peer_certificate() {
    let Pair { a, b, b_config, _dirs } = pair().await;
    let bn = name("b.test");
    let mut config = a.services.config.clone();
    config.tls_ca_files.clear();
    config.federation_pins.insert("b.test".to_owned(), b.federation_addr);
    let strict = FederationClient::new(&config, name("a.test"), a.services.keys.clone(), &[]).unwrap();
    let err = strict.send_unauth(&bn, get_server_version::v1::Request::new()).await.expect_err("untrusted cert");
    let Error::Unreachable(message) = &err else { panic!("expected Unreachable, got {err:?}") };
    assert!(message.to_lowercase().contains("certificate"), "{message}");

    // The same client with verification off gets through: the failure above was the certificate.
    config.tls_verify = false;
    let lax = FederationClient::new(&config, name("a.test"), a.services.keys.clone(), &[]).unwrap();
    lax.send_unauth(&bn, get_server_version::v1::Request::new()).await.expect("tls_verify = false");

    // A certificate issued for another name fails too, even from the trusted CA: B's cert is for
    // b.test, so pinning c.test to B's address must not verify.
    config.tls_verify = true;
    config.tls_ca_files = b_config.tls_ca_files.clone();
    config.federation_pins.insert("c.test".to_owned(), b.federation_addr);
    let named = FederationClient::new(&config, name("a.test"), a.services.keys.clone(), &[]).unwrap();
    named.send_unauth(&bn, get_server_version::v1::Request::new()).await.expect("b.test verifies");
    let err = named.send_unauth(&name("c.test"), get_server_version::v1::Request::new()).await.expect_err("wrong name");
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_self_signed_certificate_is_made_on_first_start_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let start = || {
        let mut config = common::config(dir.path(), "solo.test");
        config.federation_listen = addr(port);
        tocsin_node::Node::start(config)
    };
    assert!(!dir.path().join("tls.crt").exists());
    let node = start().await.expect("starts");
    let cert = std::fs::read_to_string(dir.path().join("tls.crt")).expect("certificate made");
    assert!(dir.path().join("tls.key").exists());

    // A peer that trusts exactly this certificate reaches the node under its name.
    let mut peer = common::config(dir.path(), "peer.test");
    peer.tls_ca_files = vec![dir.path().join("tls.crt")];
    peer.federation_pins.insert("solo.test".to_owned(), node.federation_addr);
    let keys = node.services.keys.clone();
    let client = FederationClient::new(&peer, name("peer.test"), keys, &[]).unwrap();
    let solo: &ServerName = &name("solo.test");
    client.send_unauth(solo, get_server_version::v1::Request::new()).await.expect("self-signed cert verifies");
    node.shutdown().await;

    let node = start().await.expect("restarts");
    assert_eq!(std::fs::read_to_string(dir.path().join("tls.crt")).unwrap(), cert, "the same certificate");
    client.send_unauth(solo, get_server_version::v1::Request::new()).await.expect("still the trusted certificate");
    node.shutdown().await;
}
