//! `GET /voip/turnServer`: credentials a TURN server with coturn's `use-auth-secret` accepts
//! (checked here the way coturn checks them), and 404 `M_UNRECOGNIZED` on a node without TURN.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use matrix_sdk::ruma::api::client::voip::get_turn_server_info::v3::Request;
use sha1::Sha1;

use crate::common::{start, user};

const SECRET: &str = "coturn static-auth-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_are_the_ones_coturn_checks() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.turn.uris = vec!["turns:turn.riverton.test:5349?transport=tcp".into(), "turn:turn.riverton.test:3478".into()];
        c.turn.shared_secret = Some(SECRET.into());
        c.turn.user_lifetime_secs = Some(3600);
    })
    .await;
    let alice = user(&node, "alice").await;
    let answer = alice.send(Request::new()).await.expect("turn servers");
    assert_eq!(answer.uris.len(), 2);
    assert_eq!(answer.ttl.as_secs(), 3600);

    // coturn's check: the name is `<expiry>:<anything>`, not expired, and the password is the
    // base64 HMAC-SHA1 of the name under the shared secret.
    let (expiry, who) = answer.username.split_once(':').expect("expiry:user");
    assert_eq!(who, "@alice:tocsin.test");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let expiry: u64 = expiry.parse().expect("a Unix time");
    assert!(expiry > now + 3500 && expiry <= now + 3600, "expires in an hour: {expiry} vs {now}");
    let mut mac = Hmac::<Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(answer.username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(answer.password, expected);
    node.shutdown().await;

    // Without TURN servers the endpoint is not offered.
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    let bob = user(&node, "bob").await;
    let error = bob.send(Request::new()).await.expect_err("no TURN servers");
    let api = error.as_client_api_error().expect("a Matrix error");
    assert_eq!(api.status_code.as_u16(), 404);
    assert!(
        matches!(error.client_api_error_kind(), Some(matrix_sdk::ruma::api::error::ErrorKind::Unrecognized)),
        "{error}"
    );
    node.shutdown().await;
}
