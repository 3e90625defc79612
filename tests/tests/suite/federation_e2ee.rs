//! An encrypted room across two nodes with real matrix-sdk clients: device keys and one-time
//! keys fetched over federation, Olm room keys carried by `m.direct_to_device` EDUs, Megolm
//! messages decrypted on the other node, and typing and read receipts carried by EDUs.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use matrix_sdk::{
    Client,
    deserialized_responses::EncryptionInfo,
    ruma::{
        OwnedUserId, UserId,
        api::client::{receipt::create_receipt::v3::ReceiptType, room::create_room::v3::Request as CreateRoom},
        events::{
            receipt::{ReceiptThread, ReceiptType as StoredReceiptType},
            room::{
                member::MembershipState,
                message::{OriginalSyncRoomMessageEvent, RoomMessageEventContent},
            },
            typing::SyncTypingEvent,
        },
    },
};
use tocsin_tests::cluster::Cluster;

use crate::{
    common,
    fed::{accept_invite, logs, user_on},
};

/// A decrypted (or plain) message as the client's event handlers saw it.
#[derive(Debug, Clone)]
struct Received {
    sender: OwnedUserId,
    body: String,
    megolm_session: Option<String>,
}

fn inbox(client: &Client) -> Arc<Mutex<Vec<Received>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    client.add_event_handler(move |event: OriginalSyncRoomMessageEvent, encryption: Option<EncryptionInfo>| {
        let sink = sink.clone();
        async move {
            sink.lock().expect("inbox lock").push(Received {
                sender: event.sender.clone(),
                body: event.content.body().to_owned(),
                megolm_session: encryption.as_ref().and_then(|e| e.session_id().map(str::to_owned)),
            });
        }
    });
    seen
}

fn from(inbox: &Mutex<Vec<Received>>, sender: &UserId) -> Option<Received> {
    inbox.lock().expect("inbox lock").iter().find(|r| r.sender == sender).cloned()
}

/// The users in each `m.typing` the client's syncs delivered, latest last.
fn typing_log(client: &Client) -> Arc<Mutex<Vec<Vec<OwnedUserId>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    client.add_event_handler(move |event: SyncTypingEvent| {
        let sink = sink.clone();
        async move {
            sink.lock().expect("typing lock").push(event.content.user_ids);
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn encrypted_room_across_two_nodes() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["city.test", "fire.test"]).unwrap();
    for member in &mut cluster.members {
        member.config.encrypt_new_rooms = true;
    }
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let alice = user_on(&a, "alice").await;
    let bob = user_on(&b, "bob").await;
    let alice_id = alice.user_id().unwrap().to_owned();
    let bob_id = bob.user_id().unwrap().to_owned();
    let alice_inbox = inbox(&alice);
    let bob_inbox = inbox(&bob);
    let alice_typing = typing_log(&alice);
    // The first sync uploads each device's identity and one-time keys.
    common::sync(&alice).await;
    common::sync(&bob).await;

    let mut request = CreateRoom::new();
    request.invite = vec![bob_id.clone()];
    let room = alice.create_room(request).await.expect("room created");
    let room_id = room.room_id().to_owned();
    accept_invite(&bob, &room_id).await;
    common::eventually(&alice, 15, || async {
        let member = room.get_member_no_sync(&bob_id).await.ok().flatten()?;
        (member.membership() == &MembershipState::Join).then_some(())
    })
    .await;
    let bob_room = common::eventually(&bob, 15, || async { bob.get_room(&room_id) }).await;
    assert!(room.latest_encryption_state().await.expect("encryption state").is_encrypted());
    assert!(bob_room.latest_encryption_state().await.expect("encryption state").is_encrypted());

    // Alice's client queries Bob's devices and claims a one-time key through node A, which asks
    // node B; the Megolm session reaches Bob's device as an m.direct_to_device EDU.
    let secret = "Levee breach at km 12: evacuate the east bank";
    let sent = room.send(RoomMessageEventContent::text_plain(secret)).await.expect("alice sends");
    let got = common::eventually(&bob, 20, || async { from(&bob_inbox, &alice_id) }).await;
    assert_eq!(got.body, secret, "bob decrypts alice's message");
    assert!(got.megolm_session.is_some(), "the message was Megolm-encrypted: {got:?}");

    let reply = "Fire brigade on the way, two pumps";
    bob_room.send(RoomMessageEventContent::text_plain(reply)).await.expect("bob sends");
    let got = common::eventually(&alice, 20, || async { from(&alice_inbox, &bob_id) }).await;
    assert_eq!(got.body, reply, "alice decrypts bob's reply");
    assert!(got.megolm_session.is_some(), "{got:?}");

    // Typing on node B shows on node A.
    bob_room.typing_notice(true).await.expect("bob types");
    common::eventually(&alice, 15, || async {
        let log = alice_typing.lock().expect("typing lock");
        log.last().filter(|users| users.contains(&bob_id)).map(|_| ())
    })
    .await;
    bob_room.typing_notice(false).await.expect("bob stops typing");
    common::eventually(&alice, 15, || async {
        let log = alice_typing.lock().expect("typing lock");
        log.last().filter(|users| !users.contains(&bob_id)).map(|_| ())
    })
    .await;

    // Bob's read receipt on alice's message reaches node A.
    let event_id = sent.response.event_id;
    bob_room
        .send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, event_id.clone())
        .await
        .expect("bob sends a read receipt");
    let (read, _) = common::eventually(&alice, 15, || async {
        room.load_user_receipt(StoredReceiptType::Read, ReceiptThread::Unthreaded, &bob_id).await.ok().flatten()
    })
    .await;
    assert_eq!(read, event_id, "alice sees bob's receipt on her message");

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_an_unreachable_server_are_reported_as_failures() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["city.test", "fire.test"]).unwrap();
    // Only the first node runs: the second one's pinned port answers nothing.
    let a = cluster.start(0).await.unwrap();
    let alice = user_on(&a, "alice").await;
    let ghost: OwnedUserId = "@bob:fire.test".try_into().unwrap();
    let mut request = matrix_sdk::ruma::api::client::keys::get_keys::v3::Request::new();
    request.device_keys.insert(ghost, Vec::new());
    request.timeout = Some(Duration::from_secs(3));
    let response = alice.send(request).await.expect("/keys/query answers despite the failure");
    assert!(response.failures.contains_key("fire.test"), "{:?}", response.failures);
    assert!(response.device_keys.is_empty());
    a.shutdown().await;
}
