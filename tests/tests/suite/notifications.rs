//! `GET /notifications` from a stock client: what notified a user is listed newest first, with
//! highlights, paging and read state, whether or not the user has a pusher.

use std::time::Duration;

use matrix_sdk::ruma::{
    api::client::{push::get_notifications::v3::Request, receipt::create_receipt::v3::ReceiptType},
    events::{Mentions, receipt::ReceiptThread, room::message::RoomMessageEventContent},
};

use crate::common::{eventually, start, user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_lists_what_notified_them() {
    let dir = tempfile::tempdir().unwrap();
    // Unencrypted, so the node can see the mention (in an encrypted room every message notifies
    // through `.m.rule.encrypted`, and only the client can tell a mention).
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = alice.create_room(Default::default()).await.unwrap();
    room.invite_user_by_id(bob.user_id().unwrap()).await.unwrap();
    eventually(&bob, 10, || async { bob.get_room(room.room_id()).map(|_| ()) }).await;
    bob.join_room_by_id(room.room_id()).await.unwrap();

    let plain =
        room.send(RoomMessageEventContent::text_plain("pumps arrive at 14:00")).await.unwrap().response.event_id;
    let mention = RoomMessageEventContent::text_plain("bob, take the north dike")
        .add_mentions(Mentions::with_user_ids([bob.user_id().unwrap().to_owned()]));
    let mentioned = room.send(mention).await.unwrap().response.event_id;

    // The push worker lists them shortly after they are durable; bob has no pusher.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let all = loop {
        let all = bob.send(Request::new()).await.expect("GET /notifications");
        if all.notifications.len() >= 3 || tokio::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ids: Vec<_> =
        all.notifications.iter().map(|n| n.event.get_field::<String>("event_id").unwrap().unwrap()).collect();
    assert_eq!(ids[..2], [mentioned.to_string(), plain.to_string()], "newest first, and only bob's notifications");
    // The oldest is alice's invite (the spec's `.m.rule.invite_for_me`).
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(all.notifications[2].event.get_field::<String>("type").unwrap().as_deref(), Some("m.room.member"));
    assert!(all.notifications.iter().all(|n| n.room_id == room.room_id() && !n.read));
    assert!(all.next_token.is_none());
    // Alice's own messages never notify her.
    assert!(alice.send(Request::new()).await.unwrap().notifications.is_empty());

    // Highlights only: the mention.
    let mut only = Request::new();
    only.only = Some("highlight".into());
    let highlights = bob.send(only).await.unwrap().notifications;
    assert_eq!(highlights.len(), 1);
    assert_eq!(highlights[0].event.get_field::<String>("event_id").unwrap().unwrap(), mentioned.as_str());

    // Paging: one at a time, following next_token.
    let mut first = Request::new();
    first.limit = Some(1u32.into());
    let page = bob.send(first).await.unwrap();
    assert_eq!(page.notifications.len(), 1);
    let mut second = Request::new();
    second.limit = Some(1u32.into());
    second.from = Some(page.next_token.expect("a next page"));
    let page = bob.send(second).await.unwrap();
    assert_eq!(page.notifications[0].event.get_field::<String>("event_id").unwrap().unwrap(), plain.as_str());

    // A read receipt on the newest marks both read.
    let bobs_room = bob.get_room(room.room_id()).unwrap();
    bobs_room.send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, mentioned.clone()).await.unwrap();
    let after = bob.send(Request::new()).await.unwrap();
    assert!(after.notifications.iter().all(|n| n.read), "read after the receipt");

    // A token this node never gave is a bad parameter.
    let mut bad = Request::new();
    bad.from = Some("yesterday".into());
    let err = bob.send(bad).await.expect_err("refused");
    assert_eq!(err.as_client_api_error().map(|e| e.status_code.as_u16()), Some(400));
    node.shutdown().await;
}
