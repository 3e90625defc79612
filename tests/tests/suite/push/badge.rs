//! Badge updates: when a user reads on another device, their phone gets a notification with
//! only counts (no event, room or type), so its badge drops; a burst of reads makes few pushes,
//! and a read that lowers nothing pushes nothing.

use std::time::Duration;

use matrix_sdk::ruma::{
    api::client::receipt::create_receipt::v3::ReceiptType,
    api::push_gateway::send_event_notification::v1::{Notification, NotificationPriority},
    events::receipt::ReceiptThread,
    push::{HighlightTweakValue, Tweak},
};

use super::{bob_with_a_phone, node, text};
use crate::push_gateway::Gateway;

fn is_badge(n: &Notification) -> bool {
    n.event_id.is_none()
}

/// Waits until the gateway has a badge update saying `unread`, and returns everything received.
async fn until_badge(gateway: &Gateway, unread: u64) -> Vec<Notification> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = gateway.received();
        if got.last().is_some_and(|n| is_badge(n) && u64::from(n.counts.unread) == unread) {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "no badge update to {unread}: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reading_on_another_device_clears_the_phones_badge_with_a_counts_only_push() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), true).await;
    let gateway = Gateway::start().await;
    let (_alice, _bob, room, bob_room) = bob_with_a_phone(&node, &gateway).await;

    // A message: the phone rings with unread 1.
    let first = text(&room, "sandbags to the north dike").await;
    let got = gateway.wait_for(1, 10).await;
    assert_eq!((got[0].event_id.as_ref(), u64::from(got[0].counts.unread)), (Some(&first), 1));

    // Bob reads it on his desktop (a private receipt): the phone hears unread 0, and nothing else.
    bob_room.send_single_receipt(ReceiptType::ReadPrivate, ReceiptThread::Unthreaded, first.clone()).await.unwrap();
    let got = until_badge(&gateway, 0).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let badge = &got[1];
    assert!(badge.room_id.is_none() && badge.event_type.is_none() && badge.sender.is_none(), "{badge:?}");
    assert!(badge.content.is_none() && badge.room_name.is_none(), "{badge:?}");
    assert_eq!(badge.devices[0].pushkey, "bob-phone");
    let loud = |t: &Tweak| matches!(t, Tweak::Sound(_) | Tweak::Highlight(HighlightTweakValue::Yes));
    assert!(!badge.devices[0].tweaks.iter().any(loud), "a badge update neither sounds nor highlights: {badge:?}");
    assert_eq!(badge.prio, NotificationPriority::Low);

    // Reading the same message again lowers nothing: no push.
    bob_room.send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(gateway.received().len(), 2, "{:?}", gateway.received());

    // Three messages, then a burst of reads (a client catching up): one or two badge updates,
    // the last saying 0, not one per receipt.
    let mut ids = Vec::new();
    for body in ["pumps at the bridge", "road closed at the levee", "shelter open at the school"] {
        ids.push(text(&room, body).await);
    }
    let got = gateway.wait_for(5, 10).await;
    assert_eq!(u64::from(got[4].counts.unread), 3, "{got:?}");
    let reads = ids.iter().flat_map(|id| {
        [ReceiptType::ReadPrivate, ReceiptType::Read]
            .map(|kind| bob_room.send_single_receipt(kind, ReceiptThread::Unthreaded, id.clone()))
    });
    for read in futures_util::future::join_all(reads).await {
        read.unwrap();
    }
    let got = until_badge(&gateway, 0).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got_after = gateway.received();
    assert_eq!(got_after.len(), got.len(), "nothing after the last badge update: {got_after:?}");
    let burst: Vec<u64> = got_after[5..].iter().map(|n| u64::from(n.counts.unread)).collect();
    eprintln!("6 receipts made {} badge update(s): {burst:?}", burst.len());
    assert!(got_after[5..].iter().all(is_badge), "{got_after:?}");
    assert!((1..=2).contains(&burst.len()), "6 receipts made {} pushes: {burst:?}", burst.len());
}

#[tokio::test]
async fn a_badge_update_waits_in_the_queue_across_a_gateway_outage_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start().await;
    let node = node(dir.path(), true).await;
    let (_alice, _bob, room, bob_room) = bob_with_a_phone(&node, &gateway).await;
    let first = text(&room, "evacuation route B is open").await;
    gateway.wait_for(1, 10).await;

    // The gateway goes down; bob reads on his desktop; the node fails to deliver, then restarts.
    gateway.stop().await;
    bob_room.send_single_receipt(ReceiptType::Read, ReceiptThread::Unthreaded, first).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued = tocsin_node::push::queue::pending_pushers(&node.services.db).unwrap();
    assert_eq!(queued.len(), 1, "the badge update waits in bob's pusher's queue");
    node.shutdown().await;
    let node = super::node(dir.path(), true).await;
    gateway.restart().await;

    let got = until_badge(&gateway, 0).await;
    assert_eq!(got.len(), 2, "the message, then the badge update, once each: {got:?}");
    node.shutdown().await;
}
