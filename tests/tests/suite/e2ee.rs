//! End-to-end encryption on one node with real matrix-sdk clients: device keys, one-time keys,
//! to-device room keys, Megolm decryption, cross-signing and server-side key backup.
//!
//! The node only relays opaque ciphertext; what these tests prove is that it relays the right
//! ciphertext to the right device at the right time, so that the clients can decrypt.

use crate::common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{eventually, start, sync, user};
use matrix_sdk::{
    Client, RoomState,
    deserialized_responses::EncryptionInfo,
    encryption::{CrossSigningResetAuthType, backups::BackupState},
    room::MessagesOptions,
    ruma::{
        DeviceId, OneTimeKeyAlgorithm, OwnedUserId, TransactionId, UserId,
        api::client::{
            backup::{get_backup_keys, get_latest_backup_info},
            keys::{claim_keys, get_key_changes, get_keys, upload_keys},
            message::get_message_events,
            room::create_room::v3::Request as CreateRoom,
            sync::sync_events,
            to_device::send_event_to_device,
            uiaa,
        },
        events::{
            AnySyncMessageLikeEvent, AnySyncTimelineEvent,
            room::message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent, SyncRoomMessageEvent},
        },
        serde::Raw,
        to_device::DeviceIdOrAllDevices,
    },
};

const PASSWORD: &str = "correct horse";

/// A message as a client's event handler saw it after decryption.
#[derive(Debug, Clone)]
struct Received {
    sender: OwnedUserId,
    body: String,
    /// The Megolm session that decrypted it; `None` for an event that came in the clear.
    megolm_session: Option<String>,
}

/// Records every `m.room.message` the client's sync hands to event handlers. For an encrypted
/// room that is only ever a decrypted event: undecryptable ones stay `m.room.encrypted`.
fn inbox(client: &Client) -> Arc<Mutex<Vec<Received>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    client.add_event_handler(move |event: OriginalSyncRoomMessageEvent, encryption: Option<EncryptionInfo>| {
        let sink = sink.clone();
        async move {
            let received = Received {
                sender: event.sender.clone(),
                body: event.content.body().to_owned(),
                megolm_session: encryption.as_ref().and_then(|e| e.session_id().map(str::to_owned)),
            };
            sink.lock().expect("inbox lock").push(received);
        }
    });
    seen
}

fn from(inbox: &Mutex<Vec<Received>>, sender: &UserId) -> Vec<Received> {
    inbox.lock().expect("inbox lock").iter().filter(|r| r.sender == sender).cloned().collect()
}

fn text_of(event: &AnySyncTimelineEvent) -> Option<String> {
    match event {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(SyncRoomMessageEvent::Original(m))) => {
            Some(m.content.body().to_owned())
        }
        _ => None,
    }
}

/// Alice creates a private room (encrypted by the node's default) and Bob joins it; both
/// clients have synced since, so each has uploaded its keys and knows the other's membership.
async fn shared_encrypted_room(alice: &Client, bob: &Client) -> (matrix_sdk::Room, matrix_sdk::Room) {
    let mut request = CreateRoom::new();
    request.invite = vec![bob.user_id().expect("bob is logged in").to_owned()];
    let room = alice.create_room(request).await.expect("room created");
    let room_id = room.room_id().to_owned();
    eventually(bob, 10, || async { bob.get_room(&room_id).filter(|r| r.state() == RoomState::Invited) }).await;
    let bob_room = bob.join_room_by_id(&room_id).await.expect("bob joins");
    let bob_id = bob.user_id().expect("bob is logged in").to_owned();
    eventually(alice, 10, || async {
        let member = room.get_member_no_sync(&bob_id).await.ok().flatten()?;
        (member.membership() == &matrix_sdk::ruma::events::room::member::MembershipState::Join).then_some(())
    })
    .await;
    sync(bob).await;
    assert!(
        room.latest_encryption_state().await.expect("encryption state").is_encrypted(),
        "the node encrypts new private rooms"
    );
    assert!(bob_room.latest_encryption_state().await.expect("encryption state").is_encrypted());
    (room, bob_room)
}

#[tokio::test]
async fn messages_are_decrypted_in_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = true).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let alice_inbox = inbox(&alice);
    let bob_inbox = inbox(&bob);
    // The first sync uploads each device's identity keys and one-time keys.
    sync(&alice).await;
    sync(&bob).await;

    let (room, bob_room) = shared_encrypted_room(&alice, &bob).await;
    let alice_id = alice.user_id().unwrap().to_owned();
    let bob_id = bob.user_id().unwrap().to_owned();

    // Sending queries Bob's device keys, claims one of his one-time keys, sends him the Megolm
    // session over an Olm channel (`/sendToDevice`), then sends the ciphertext.
    let secret = "Evacuate sector 4 by 14:00, use the north bridge";
    room.send(RoomMessageEventContent::text_plain(secret)).await.expect("alice sends");

    let got = eventually(&bob, 10, || async { from(&bob_inbox, &alice_id).into_iter().next() }).await;
    assert_eq!(got.body, secret, "bob decrypts alice's plaintext");
    assert!(got.megolm_session.is_some(), "the message was Megolm-encrypted, not sent in the clear: {got:?}");

    // The node itself only ever held ciphertext.
    let mut request = get_message_events::v3::Request::backward(room.room_id().to_owned());
    request.limit = 50u32.into();
    let raw = bob.send(request).await.expect("/messages");
    let types: Vec<String> = raw.chunk.iter().filter_map(|e| e.get_field::<String>("type").ok().flatten()).collect();
    assert!(types.contains(&"m.room.encrypted".to_owned()), "{types:?}");
    assert!(!types.contains(&"m.room.message".to_owned()), "no plaintext message on the server: {types:?}");
    assert!(raw.chunk.iter().all(|e| !e.json().get().contains("sector 4")));

    // The reverse direction needs Alice to get Bob's keys and a session from him.
    let reply = "Acknowledged: moving out now, 12 people";
    bob_room.send(RoomMessageEventContent::text_plain(reply)).await.expect("bob sends");
    let got = eventually(&alice, 10, || async { from(&alice_inbox, &bob_id).into_iter().next() }).await;
    assert_eq!(got.body, reply, "alice decrypts bob's plaintext");
    assert!(got.megolm_session.is_some(), "{got:?}");

    // Pagination through the SDK decrypts too, newest first.
    let texts = eventually(&bob, 10, || async {
        let page = bob_room.messages(MessagesOptions::backward()).await.ok()?;
        let texts: Vec<String> = page.chunk.iter().filter_map(|e| text_of(&e.raw().deserialize().ok()?)).collect();
        (texts.len() == 2).then_some(texts)
    })
    .await;
    assert_eq!(texts, vec![reply.to_owned(), secret.to_owned()]);
    node.shutdown().await;
}

/// How many signed curve25519 one-time keys the node holds for the caller's device (an empty
/// `/keys/upload` only reports the counts).
async fn one_time_key_count(client: &Client) -> Option<u64> {
    let counts = client.send(upload_keys::v3::Request::new()).await.expect("/keys/upload").one_time_key_counts;
    counts.get(&OneTimeKeyAlgorithm::SignedCurve25519).map(|n| u64::from(*n))
}

/// Claims one signed curve25519 key of `device` as `claimer`: (key id, key JSON).
async fn claim(claimer: &Client, user: &UserId, device: &DeviceId) -> Option<(String, serde_json::Value)> {
    let request = claim_keys::v3::Request::new(BTreeMap::from([(
        user.to_owned(),
        BTreeMap::from([(device.to_owned(), OneTimeKeyAlgorithm::SignedCurve25519)]),
    )]));
    let response = claimer.send(request).await.expect("/keys/claim");
    let (id, key) = response.one_time_keys.get(user)?.get(device)?.iter().next()?;
    Some((id.to_string(), serde_json::from_str(key.json().get()).expect("claimed key is JSON")))
}

#[tokio::test]
async fn one_time_keys_run_out_then_fallback_key_then_replenished() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = true).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let bob_inbox = inbox(&bob);
    sync(&alice).await;
    sync(&bob).await;
    let (room, _) = shared_encrypted_room(&alice, &bob).await;
    let alice_id = alice.user_id().unwrap().to_owned();
    let bob_id = bob.user_id().unwrap().to_owned();
    let bob_device = bob.device_id().unwrap().to_owned();

    // Someone drains Bob's one-time keys while his client is not syncing.
    let uploaded = one_time_key_count(&bob).await.expect("bob uploaded one-time keys");
    assert!(uploaded > 0);
    let mut seen = BTreeSet::new();
    for _ in 0..uploaded {
        let (id, key) = claim(&alice, &bob_id, &bob_device).await.expect("a one-time key");
        assert!(key["signatures"][bob_id.as_str()].is_object(), "claimed keys are signed by the device: {key}");
        assert_ne!(
            key.get("fallback"),
            Some(&serde_json::Value::Bool(true)),
            "one-time keys come before the fallback key"
        );
        assert!(seen.insert(key["key"].to_string()), "each one-time key is handed out once: {id}");
    }
    assert_eq!(one_time_key_count(&bob).await, Some(0), "a zero count is reported, not left out");
    let (fallback_id, fallback) =
        claim(&alice, &bob_id, &bob_device).await.expect("the fallback key once one-time keys are gone");
    assert_eq!(fallback["fallback"], serde_json::Value::Bool(true), "{fallback}");
    // Key ids of one-time and fallback keys may coincide (separate counters in vodozemac); the
    // public keys may not.
    assert!(!seen.contains(&fallback["key"].to_string()));
    let (again, same) = claim(&alice, &bob_id, &bob_device).await.expect("the fallback key stays");
    assert_eq!((again, &same["key"]), (fallback_id, &fallback["key"]));

    // Alice's client now has to build its Olm session on the fallback key; Bob still decrypts.
    room.send(RoomMessageEventContent::text_plain("sent while bob's one-time keys were gone"))
        .await
        .expect("alice sends");
    let got = eventually(&bob, 10, || async { from(&bob_inbox, &alice_id).into_iter().next() }).await;
    assert_eq!(got.body, "sent while bob's one-time keys were gone");
    assert!(got.megolm_session.is_some());

    // Bob's client learns from `/sync` that it has no one-time keys left and uploads new ones.
    eventually(&bob, 10, || async { one_time_key_count(&bob).await.filter(|n| *n > 0) }).await;
    let (_, key) = claim(&alice, &bob_id, &bob_device).await.expect("a one-time key again");
    assert_ne!(key.get("fallback"), Some(&serde_json::Value::Bool(true)), "{key}");
    assert!(!seen.contains(&key["key"].to_string()), "a new key, not a reused one");
    node.shutdown().await;
}

/// One `/sync` as raw HTTP (the SDK's own sync would consume what we want to look at).
async fn raw_sync(client: &Client, since: Option<&str>) -> sync_events::v3::Response {
    let mut request = sync_events::v3::Request::new();
    request.since = since.map(str::to_owned);
    request.timeout = Some(Duration::ZERO);
    client.send(request).await.expect("/sync")
}

#[tokio::test]
async fn device_lists_follow_shared_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = true).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    sync(&alice).await;
    sync(&bob).await;
    let bob_id = bob.user_id().unwrap().to_owned();
    let mut token = raw_sync(&alice, None).await.next_batch;

    // A new device of a stranger is none of Alice's business.
    let bob2 = common::login(&node, "bob", PASSWORD).await;
    sync(&bob2).await;
    let response = raw_sync(&alice, Some(&token)).await;
    assert!(!response.device_lists.changed.contains(&bob_id), "{:?}", response.device_lists);
    token = response.next_batch;

    // Sharing a room makes Bob's devices news to Alice, even though his keys did not change.
    let (room, bob_room) = shared_encrypted_room(&alice, &bob).await;
    let response = raw_sync(&alice, Some(&token)).await;
    assert!(response.device_lists.changed.contains(&bob_id), "newly shared: {:?}", response.device_lists);
    token = response.next_batch;

    // Another device of a room-mate: in `/sync` and in `/keys/changes` for the same window.
    let bob3 = common::login(&node, "bob", PASSWORD).await;
    sync(&bob3).await;
    let response = raw_sync(&alice, Some(&token)).await;
    assert!(response.device_lists.changed.contains(&bob_id), "{:?}", response.device_lists);
    let changes = alice
        .send(get_key_changes::v3::Request::new(token.clone(), response.next_batch.clone()))
        .await
        .expect("/keys/changes");
    assert!(changes.changed.contains(&bob_id), "{changes:?}");
    token = response.next_batch;
    // Alice's client now sees all three of Bob's devices.
    let devices = eventually(&alice, 10, || async {
        let devices = alice.encryption().get_user_devices(&bob_id).await.ok()?;
        (devices.devices().count() == 3).then_some(devices)
    })
    .await;
    assert!(devices.get(bob3.device_id().unwrap()).is_some());

    // Once Bob leaves the only room they share, Alice may forget his devices.
    bob_room.leave().await.expect("bob leaves");
    let response = raw_sync(&alice, Some(&token)).await;
    assert!(response.device_lists.left.contains(&bob_id), "{:?}", response.device_lists);
    assert!(!response.device_lists.changed.contains(&bob_id));
    token = response.next_batch;
    let bob4 = common::login(&node, "bob", PASSWORD).await;
    sync(&bob4).await;
    let response = raw_sync(&alice, Some(&token)).await;
    assert!(!response.device_lists.changed.contains(&bob_id), "not shared any more: {:?}", response.device_lists);
    drop(room);
    node.shutdown().await;
}

#[tokio::test]
async fn to_device_backlog_is_delivered_whole_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = true).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let bob_id = bob.user_id().unwrap().to_owned();
    let bob_device = bob.device_id().unwrap().to_owned();
    let mut token = raw_sync(&bob, None).await.next_batch;

    // More messages than any one batch size pile up while Bob's device is offline; one
    // transaction is retried, as a client does after a lost response.
    const SENT: u64 = 150;
    for n in 0..SENT {
        let content = serde_json::value::to_raw_value(&serde_json::json!({ "n": n })).unwrap();
        let messages = BTreeMap::from([(
            bob_id.clone(),
            BTreeMap::from([(DeviceIdOrAllDevices::DeviceId(bob_device.clone()), Raw::from_json(content))]),
        )]);
        let txn = TransactionId::new();
        let request = send_event_to_device::v3::Request::new_raw("org.tocsin.test.ping".into(), txn, messages);
        alice.send(request.clone()).await.expect("/sendToDevice");
        if n == 7 {
            alice.send(request).await.expect("retried /sendToDevice");
        }
    }

    let mut received = Vec::new();
    for _ in 0..5 {
        let response = raw_sync(&bob, Some(&token)).await;
        for event in &response.to_device.events {
            let content: serde_json::Value = event.get_field("content").unwrap().unwrap();
            assert_eq!(
                event.get_field::<String>("sender").unwrap().as_deref(),
                Some(alice.user_id().unwrap().as_str())
            );
            received.push(content["n"].as_u64().unwrap());
        }
        token = response.next_batch;
    }
    assert_eq!(received, (0..SENT).collect::<Vec<_>>(), "every message, in order, exactly once");
    node.shutdown().await;
}

fn query_for(user: &UserId) -> get_keys::v3::Request {
    let mut query = get_keys::v3::Request::new();
    query.device_keys.insert(user.to_owned(), Vec::new());
    query
}

/// Bootstraps cross-signing, answering the node's password challenge if it asks for one.
async fn bootstrap_cross_signing(client: &Client) -> Result<bool, matrix_sdk::Error> {
    match client.encryption().bootstrap_cross_signing(None).await {
        Ok(()) => Ok(false),
        Err(e) => {
            let Some(uiaa_info) = e.as_uiaa_response() else {
                return Err(e);
            };
            let user = client.user_id().expect("logged in").localpart().to_owned();
            let mut password = uiaa::Password::new(
                uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(user)),
                PASSWORD.to_owned(),
            );
            password.session = uiaa_info.session.clone();
            client.encryption().bootstrap_cross_signing(Some(uiaa::AuthData::Password(password))).await?;
            Ok(true)
        }
    }
}

#[tokio::test]
async fn cross_signing_and_key_backup() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = true).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    sync(&alice).await;
    sync(&bob).await;
    let alice_id = alice.user_id().unwrap().to_owned();

    // The first upload of a master key needs no password.
    let asked = bootstrap_cross_signing(&alice).await.expect("cross-signing bootstrap");
    assert!(!asked, "the first cross-signing upload needs no password");
    let status = alice.encryption().cross_signing_status().await.expect("status");
    assert!(status.has_master && status.has_self_signing && status.has_user_signing, "{status:?}");

    // Bob sees Alice's public master and self-signing keys, but not her private-use
    // user-signing key.
    let query = query_for(&alice_id);
    let keys = bob.send(query.clone()).await.expect("/keys/query");
    let master = keys.master_keys.get(&alice_id).expect("alice's master key").deserialize().expect("valid master key");
    assert_eq!(master.user_id, alice_id);
    assert!(keys.self_signing_keys.contains_key(&alice_id), "alice's self-signing key");
    assert!(!keys.user_signing_keys.contains_key(&alice_id), "another user's user-signing key is private");
    let own = alice.send(query).await.expect("/keys/query");
    assert!(own.user_signing_keys.contains_key(&alice_id), "alice sees her own user-signing key");

    // Bob's client checks the signature chain: master -> self-signing -> Alice's device, which
    // needs the device signature uploaded to `/keys/signatures/upload` to be served back.
    let identity = bob.encryption().request_user_identity(&alice_id).await.expect("identity query");
    assert!(identity.is_some(), "bob's client accepts alice's cross-signing identity");
    assert!(!identity.as_ref().is_some_and(|i| i.is_verified()), "not verified by bob yet");
    let alice_device = alice.device_id().unwrap().to_owned();
    let device = eventually(&bob, 10, || async {
        bob.encryption()
            .get_device(&alice_id, &alice_device)
            .await
            .ok()
            .flatten()
            .filter(|d| d.is_cross_signed_by_owner())
    })
    .await;
    assert_eq!(device.device_id(), &*alice_device);

    // Bob verifies Alice: his user-signing key signs her master key. His client must then see
    // her as verified; a third user must not learn who verified whom.
    bootstrap_cross_signing(&bob).await.expect("bob's cross-signing");
    let identity = identity.expect("checked above");
    identity.verify().await.expect("bob signs alice's master key");
    let verified = eventually(&bob, 10, || async {
        let identity = bob.encryption().request_user_identity(&alice_id).await.ok().flatten()?;
        identity.is_verified().then_some(identity)
    })
    .await;
    assert!(verified.is_verified());
    let signers = |keys: &get_keys::v3::Response| -> Vec<String> {
        let master: serde_json::Value =
            keys.master_keys[&alice_id].deserialize_as_unchecked().expect("master key JSON");
        master["signatures"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    };
    let by_bob = signers(&bob.send(query_for(&alice_id)).await.expect("/keys/query"));
    assert!(by_bob.contains(&bob.user_id().unwrap().to_string()), "bob sees his own signature: {by_bob:?}");
    let carol = user(&node, "carol").await;
    let by_carol = signers(&carol.send(query_for(&alice_id)).await.expect("/keys/query"));
    assert_eq!(by_carol, vec![alice_id.to_string()], "carol only sees alice's own signatures");

    // Re-sending the same keys (a retry) is accepted without a password...
    let asked = bootstrap_cross_signing(&alice).await.expect("cross-signing re-upload");
    assert!(!asked, "re-uploading the stored keys needs no password");
    // ...but replacing them needs the password.
    let handle = alice.encryption().reset_cross_signing().await.expect("reset starts").expect("the node asks for auth");
    let CrossSigningResetAuthType::Uiaa(uiaa_info) = handle.auth_type().clone() else { panic!("expected UIA") };
    assert!(uiaa_info.flows.iter().any(|f| f.stages.contains(&uiaa::AuthType::Password)), "{uiaa_info:?}");
    let mut password = uiaa::Password::new(
        uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new("alice".to_owned())),
        "wrong horse".to_owned(),
    );
    password.session = uiaa_info.session.clone();
    assert!(
        handle.auth(Some(uiaa::AuthData::Password(password.clone()))).await.is_err(),
        "a wrong password is refused"
    );
    password.password = PASSWORD.to_owned();
    handle.auth(Some(uiaa::AuthData::Password(password))).await.expect("reset with the password");
    let keys = bob.send(query_for(&alice_id)).await.expect("/keys/query");
    let new_master =
        keys.master_keys.get(&alice_id).expect("alice's master key").deserialize().expect("valid master key");
    assert_ne!(new_master.keys, master.keys, "bob sees the new master key");

    // Key backup: create a version, then every new room key goes up encrypted.
    let backups = alice.encryption().backups();
    backups.create().await.expect("backup version created");
    assert_eq!(backups.state(), BackupState::Enabled);
    assert!(backups.fetch_exists_on_server().await.expect("backup lookup"), "the node reports the backup");
    let latest = alice.send(get_latest_backup_info::v3::Request::new()).await.expect("latest backup");
    let algorithm = latest.algorithm.get_field::<String>("algorithm").ok().flatten();
    assert_eq!(algorithm.as_deref(), Some("m.megolm_backup.v1.curve25519-aes-sha2"));

    let room = alice.create_room(CreateRoom::new()).await.expect("room created");
    sync(&alice).await;
    assert!(room.latest_encryption_state().await.expect("encryption state").is_encrypted());
    room.send(RoomMessageEventContent::text_plain("backed-up secret")).await.expect("alice sends");
    backups.wait_for_steady_state().await.expect("room keys uploaded to the backup");

    let stored = alice.send(get_backup_keys::v3::Request::new(latest.version.clone())).await.expect("/room_keys/keys");
    let sessions = &stored.rooms.get(room.room_id()).expect("the room's keys are in the backup").sessions;
    assert!(!sessions.is_empty());
    for data in sessions.values() {
        let json = data.json().get();
        assert!(
            json.contains("ciphertext") && !json.contains("backed-up secret"),
            "only encrypted session data: {json}"
        );
    }
    let info = alice.send(get_latest_backup_info::v3::Request::new()).await.expect("latest backup");
    assert_eq!(u64::from(info.count), sessions.len() as u64);
    assert_ne!(info.etag, latest.etag, "the etag changes when keys are added");
    node.shutdown().await;
}

#[tokio::test]
async fn a_new_device_reads_history_from_the_key_backup() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = true).await;
    let phone = user(&node, "alice").await;
    sync(&phone).await;
    bootstrap_cross_signing(&phone).await.expect("cross-signing bootstrap");

    // Recovery: a backup plus secret storage (in account data) holding its key, unlocked by a
    // recovery key the user writes down.
    let recovery_key = phone.encryption().recovery().enable().await.expect("recovery enabled");
    let room = phone.create_room(CreateRoom::new()).await.expect("room created");
    sync(&phone).await;
    assert!(room.latest_encryption_state().await.expect("encryption state").is_encrypted());
    let secret = "Shelter list for the east district, v3";
    room.send(RoomMessageEventContent::text_plain(secret)).await.expect("sent");
    phone.encryption().backups().wait_for_steady_state().await.expect("room keys backed up");

    // The phone is lost. A new device did not exist when the message was sent, so nobody sent it
    // the room key: only the backup can give it.
    drop(phone);
    let laptop = common::login(&node, "alice", PASSWORD).await;
    sync(&laptop).await;
    let laptop_room = laptop.get_room(room.room_id()).expect("the room, from sync");
    let undecryptable = laptop_room.messages(MessagesOptions::backward()).await.expect("/messages");
    let before: Vec<String> =
        undecryptable.chunk.iter().filter_map(|e| text_of(&e.raw().deserialize().ok()?)).collect();
    assert!(!before.contains(&secret.to_owned()), "no key yet, so no plaintext: {before:?}");

    laptop.encryption().recovery().recover(&recovery_key).await.expect("recovered with the key");
    laptop.encryption().backups().download_room_keys_for_room(room.room_id()).await.expect("keys downloaded");
    let page = laptop_room.messages(MessagesOptions::backward()).await.expect("/messages");
    let texts: Vec<String> = page.chunk.iter().filter_map(|e| text_of(&e.raw().deserialize().ok()?)).collect();
    assert_eq!(texts, vec![secret.to_owned()], "decrypted with the key from the backup");
    node.shutdown().await;
}
