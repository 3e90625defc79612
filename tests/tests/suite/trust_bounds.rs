//! Resource and trust bounds: to-device backlogs come in bounded batches without loss, only the
//! cross-signing signatures the spec allows are kept, and outbound federation does not reach
//! into private or loopback ranges unless the operator pinned the server or allowed the range.
//! (The UIA-session and key-fetch bounds are unit tests beside their code.)

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use matrix_sdk::{
    Client,
    ruma::{
        OwnedServerName, TransactionId, api::client::sync::sync_events, api::client::to_device::send_event_to_device,
        serde::Raw, to_device::DeviceIdOrAllDevices,
    },
};
use serde_json::{Value, json};
use tocsin_tests::cluster::{Cluster, free_port};

use crate::{
    common::{self, start, sync, user},
    fed::{logs, user_on},
};

async fn raw_sync(client: &Client, since: Option<&str>) -> sync_events::v3::Response {
    let mut request = sync_events::v3::Request::new();
    request.since = since.map(str::to_owned);
    request.timeout = Some(Duration::ZERO);
    client.send(request).await.expect("/sync")
}

/// The `n` of each to-device message in a sync response.
fn numbers(response: &sync_events::v3::Response) -> Vec<u64> {
    response
        .to_device
        .events
        .iter()
        .map(|e| e.get_field::<Value>("content").unwrap().unwrap()["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_to_device_backlog_arrives_in_batches_of_at_most_a_hundred() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let bob_id = bob.user_id().unwrap().to_owned();
    let bob_device = bob.device_id().unwrap().to_owned();
    let mut token = raw_sync(&bob, None).await.next_batch;

    const SENT: u64 = 250;
    for n in 0..SENT {
        let content = serde_json::value::to_raw_value(&json!({ "n": n })).unwrap();
        let messages = BTreeMap::from([(
            bob_id.clone(),
            BTreeMap::from([(DeviceIdOrAllDevices::DeviceId(bob_device.clone()), Raw::from_json(content))]),
        )]);
        let request =
            send_event_to_device::v3::Request::new_raw("org.tocsin.test.ping".into(), TransactionId::new(), messages);
        alice.send(request).await.expect("/sendToDevice");
    }

    let mut received = Vec::new();
    let mut batches = Vec::new();
    for i in 0..4 {
        let response = raw_sync(&bob, Some(&token)).await;
        if i == 1 {
            // The client lost this response and asks again with the same token: the same
            // batch comes back, nothing was acknowledged past what it had.
            let again = raw_sync(&bob, Some(&token)).await;
            assert_eq!(numbers(&again), numbers(&response), "a repeated sync repeats the batch");
        }
        batches.push(response.to_device.events.len());
        received.extend(numbers(&response));
        token = response.next_batch;
    }
    assert_eq!(batches, [100, 100, 50, 0], "at most 100 per response, the rest in the next");
    assert_eq!(received, (0..SENT).collect::<Vec<_>>(), "every message, in order, exactly once");
    node.shutdown().await;
}

/// `POST` with `client`'s access token; status and JSON body.
async fn post(client: &Client, path: &str, body: &Value) -> (u16, Value) {
    let url = format!("{}_matrix/client/v3{path}", client.homeserver());
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(client.access_token().unwrap())
        .json(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn keys_of(client: &Client, user: &str) -> Value {
    let (status, body) = post(client, "/keys/query", &json!({ "device_keys": { user: [] } })).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The only entry of a key object's `keys`: (key id, public key).
fn only_key(key: &Value) -> (String, String) {
    let (id, public) = key["keys"].as_object().unwrap().iter().next().unwrap();
    (id.clone(), public.as_str().unwrap().to_owned())
}

fn signers(key: &Value, user: &str) -> Vec<String> {
    key["signatures"][user].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

#[tokio::test]
async fn only_signatures_the_spec_allows_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = true).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    sync(&alice).await;
    sync(&bob).await;
    let (alice_id, bob_id) = (alice.user_id().unwrap().to_string(), bob.user_id().unwrap().to_string());
    let alice_device = alice.device_id().unwrap().to_string();
    // Real cross-signing keys; the first upload needs no password.
    alice.encryption().bootstrap_cross_signing(None).await.expect("alice's cross-signing");
    bob.encryption().bootstrap_cross_signing(None).await.expect("bob's cross-signing");

    let keys = keys_of(&bob, &alice_id).await;
    let device_key = keys["device_keys"][&alice_id][&alice_device].clone();
    let master = keys["master_keys"][&alice_id].clone();
    let (master_id, _) = only_key(&master);
    let master_key_id = master_id.strip_prefix("ed25519:").unwrap().to_owned();
    // The client's own signatures went through the checks: her device by her self-signing key.
    let (ssk_id, _) = only_key(&keys["self_signing_keys"][&alice_id]);
    assert!(signers(&device_key, &alice_id).contains(&ssk_id), "device signed by the SSK: {device_key}");

    // Bob signs Alice's device key: nobody but Alice may, so it is refused and not served.
    let mut forged = device_key.clone();
    forged["signatures"][&bob_id] = json!({ "ed25519:BOBSKEY": "c2lnbmF0dXJl" });
    let (status, body) = post(&bob, "/keys/signatures/upload", &json!({ &alice_id: { &alice_device: forged } })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["failures"][&alice_id][&alice_device]["errcode"], "M_FORBIDDEN", "{body}");
    let seen = keys_of(&alice, &alice_id).await;
    assert!(
        seen["device_keys"][&alice_id][&alice_device]["signatures"].get(&bob_id).is_none(),
        "bob's signature on alice's device is not kept: {seen}"
    );

    // A signature under Bob's user-signing key id that does not verify: refused, not kept.
    let own = keys_of(&bob, &bob_id).await;
    let (usk_id, _) = only_key(&own["user_signing_keys"][&bob_id]);
    let mut bad = master.clone();
    bad["signatures"][&bob_id] = json!({ &usk_id: "A".repeat(86) });
    let (status, body) = post(&bob, "/keys/signatures/upload", &json!({ &alice_id: { &master_key_id: bad } })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["failures"][&alice_id][&master_key_id]["errcode"], "M_INVALID_SIGNATURE", "{body}");
    let seen = keys_of(&bob, &alice_id).await;
    assert!(signers(&seen["master_keys"][&alice_id], &bob_id).is_empty(), "a bad signature is not kept: {seen}");

    // A key that does not exist.
    let (_, body) = post(&bob, "/keys/signatures/upload", &json!({ &alice_id: { "NOSUCHDEVICE": device_key } })).await;
    assert_eq!(body["failures"][&alice_id]["NOSUCHDEVICE"]["errcode"], "M_NOT_FOUND", "{body}");

    // One upload carries a bounded number of keys.
    let many: serde_json::Map<String, Value> = (0..101).map(|i| (format!("DEVICE{i}"), device_key.clone())).collect();
    let (status, body) = post(&bob, "/keys/signatures/upload", &json!({ &alice_id: many })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");

    // Bob really verifies Alice: his client signs her master key with his user-signing key,
    // which is accepted and shown to him.
    let identity = bob.encryption().request_user_identity(alice.user_id().unwrap()).await.unwrap().unwrap();
    identity.verify().await.expect("bob signs alice's master key");
    let seen = keys_of(&bob, &alice_id).await;
    assert_eq!(signers(&seen["master_keys"][&alice_id], &bob_id), vec![usk_id], "{seen}");
    node.shutdown().await;
}

/// GET a media file through `client`'s node: status and body.
async fn download(client: &Client, server: &str, media_id: &str) -> (u16, String) {
    let url = format!("{}_matrix/client/v1/media/download/{server}/{media_id}", client.homeserver());
    let response =
        reqwest::Client::new().get(url).bearer_auth(client.access_token().unwrap()).send().await.expect("request sent");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unpinned_server_on_loopback_is_refused_unless_allowed() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    // B's name resolves to 127.0.0.1 through the system resolver (`localhost`); neither
    // other node pins it. `strict` has no allow-list, `lab` allows loopback.
    let port = free_port();
    let b_name = format!("localhost:{port}");
    let mut cluster = Cluster::plan(dir.path(), &["strict.test", &b_name, "lab.test"]).unwrap();
    cluster.members[1].config.federation_listen = SocketAddr::from(([127, 0, 0, 1], port));
    for i in [0, 2] {
        cluster.members[i].config.federation_pins.remove(&b_name);
    }
    cluster.members[2].config.outbound_ip_allow = vec!["127.0.0.0/8".parse().unwrap()];
    let strict = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let lab = cluster.start(2).await.unwrap();
    let bob = user_on(&b, "bob").await;
    let file = b"evacuation routes, north district".to_vec();
    let uploaded = bob.media().upload(&"text/plain".parse().unwrap(), file.clone(), None).await.unwrap();
    let media_id = uploaded.content_uri.media_id().unwrap().to_owned();
    let b_server = OwnedServerName::try_from(b_name.as_str()).unwrap();

    // Keys (as the notary and every signature check fetch them): refused, and the error says
    // why and what to do.
    let refused = strict.services.remote_keys.public_key_map([b_server.clone()]).await.expect_err("refused");
    let message = refused.to_string();
    assert!(
        message.contains("refused") && message.contains("127.0.0.1") && message.contains("outbound_ip_allow"),
        "{message}"
    );
    // Media: a client asking its node for the file gets an error, not the file.
    let alice = user_on(&strict, "alice").await;
    let (status, body) = download(&alice, &b_name, &media_id).await;
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("outbound_ip_allow"), "{body}");

    // With loopback allowed, both work.
    let keys = lab.services.remote_keys.public_key_map([b_server]).await.expect("keys from an allowed range");
    assert!(keys.contains_key(b_name.as_str()));
    let carol = user_on(&lab, "carol").await;
    let (status, body) = download(&carol, &b_name, &media_id).await;
    assert_eq!((status, body.as_bytes()), (200, &file[..]));
    common::sync(&carol).await;
    strict.shutdown().await;
    b.shutdown().await;
    lab.shutdown().await;
}
