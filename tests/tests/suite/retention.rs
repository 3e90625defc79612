//! Retention (MSC1763): a room's `m.room.retention` `max_lifetime` hides older messages from
//! clients and other servers at once, and the purge deletes their bodies from the store; state,
//! newer messages and sending go on.

use std::time::Duration;
use tocsin_node::search::{KEYS, SearchQuery};

use matrix_sdk::{
    Client,
    config::SyncSettings,
    ruma::{
        EventId, OwnedEventId, RoomId, ServerName, UInt,
        api::{
            client::{
                context::get_context,
                membership::joined_members,
                relations::get_relating_events,
                room::{create_room::v3::Request as CreateRoom, get_room_event},
                state::get_state_event_for_key,
            },
            error::ErrorKind,
            federation::{
                backfill::get_backfill,
                event::{get_event, get_missing_events},
            },
        },
        events::{
            StateEventType, reaction::ReactionEventContent, relation::Annotation,
            room::message::RoomMessageEventContent,
        },
    },
};
use serde_json::json;
use tocsin_node::{
    NodeHandle,
    store::{prefix, trees},
};
use tocsin_tests::cluster::Cluster;

use crate::{
    common,
    fed::{logs, shared_room, texts, user_on, wait_for_texts},
};

/// The lifetime the tests give their rooms.
const LIFETIME_MS: u64 = 2_000;

async fn set_retention(client: &Client, room_id: &RoomId, max_lifetime_ms: u64) {
    common::sync(client).await;
    let room = client.get_room(room_id).expect("room known");
    room.send_state_event_raw("m.room.retention", "", json!({ "max_lifetime": max_lifetime_ms }))
        .await
        .expect("retention set");
}

async fn say(client: &Client, room_id: &RoomId, text: &str) -> OwnedEventId {
    let room = client.get_room(room_id).expect("room known");
    room.send(RoomMessageEventContent::text_plain(text)).await.expect("message sent").response.event_id
}

/// Whether the node's store still holds `text` anywhere in the event or a timeline row for it.
fn body_stored(node: &NodeHandle, room_id: &RoomId, event_id: &EventId, text: &str) -> bool {
    let stored = node.services.rooms.stored_event(event_id).expect("store readable");
    let in_json = stored.is_some_and(|s| serde_json::to_string(&s.pdu).expect("json").contains(text));
    let rows = node.services.db.scan_prefix(trees::TIMELINE, &prefix(&[room_id.as_bytes()]), usize::MAX).expect("rows");
    in_json || rows.iter().any(|(_, id)| id == event_id.as_bytes())
}

/// Waits until the purge has deleted the bodies of every `(event, text)`.
async fn until_purged(node: &NodeHandle, room_id: &RoomId, events: &[(OwnedEventId, &str)], secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while events.iter().any(|(id, text)| body_stored(node, room_id, id, text)) {
        assert!(tokio::time::Instant::now() < deadline, "the purge did not delete the expired bodies within {secs}s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a client's `/rooms/{roomId}/event/{eventId}` answers: found, or `M_NOT_FOUND` (any
/// other error fails the test).
async fn event_found(client: &Client, room_id: &RoomId, event_id: &EventId) -> bool {
    match client.send(get_room_event::v3::Request::new(room_id.to_owned(), event_id.to_owned())).await {
        Ok(_) => true,
        Err(e) if matches!(e.client_api_error_kind(), Some(ErrorKind::NotFound)) => false,
        Err(e) => panic!("/event of {event_id} failed otherwise: {e}"),
    }
}

/// Event ids in the timeline of a fresh initial `/sync` from a new device.
async fn initial_sync_ids(node: &NodeHandle, name: &str, room_id: &RoomId) -> Vec<String> {
    let fresh = crate::fed::client_for(&node.base_url(), name).await;
    let response = fresh.sync_once(SyncSettings::default().timeout(Duration::ZERO)).await.expect("initial sync");
    let joined = response.rooms.joined.get(room_id).expect("room in the initial sync");
    joined.timeline.events.iter().filter_map(|e| e.event_id().map(|id| id.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_messages_vanish_from_clients_and_the_store() {
    one_node(true).await;
}

/// The serve-time filter alone: the purge runs at start and then not for an hour, so the bodies
/// are still stored while clients already cannot see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_messages_are_hidden_before_any_purge() {
    one_node(false).await;
}

async fn one_node(purge: bool) {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |c| {
        c.encrypt_new_rooms = false;
        c.retention_purge_interval_secs = Some(if purge { 1 } else { 3_600 });
    })
    .await;
    let alice = user_on(&node, "alice").await;
    let bob = user_on(&node, "bob").await;
    let mut request = CreateRoom::new();
    request.name = Some("Retention drill".into());
    request.topic = Some("Nothing here lasts".into());
    request.invite = vec![bob.user_id().unwrap().to_owned()];
    let room_id = alice.create_room(request).await.expect("room created").room_id().to_owned();
    bob.join_room_by_id(&room_id).await.expect("bob joins");
    set_retention(&alice, &room_id, LIFETIME_MS).await;

    let old = vec![
        (say(&alice, &room_id, "old: sandbags at the bridge").await, "old: sandbags at the bridge"),
        (say(&bob, &room_id, "old: on my way").await, "old: on my way"),
    ];
    let ack = bob
        .get_room(&room_id)
        .expect("room known")
        .send(ReactionEventContent::new(Annotation::new(old[0].0.clone(), "👍".into())))
        .await
        .expect("reaction sent")
        .response
        .event_id;
    wait_for_texts(&bob, &room_id, &["old: sandbags at the bridge", "old: on my way"], 10).await;
    tokio::time::sleep(Duration::from_millis(LIFETIME_MS + 500)).await;
    let fresh = say(&alice, &room_id, "new: water is falling").await;

    // Hidden from clients once expired (by the filter, or by the purge if it ran already).
    wait_for_texts(&bob, &room_id, &["new: water is falling"], 10).await;
    for (id, _) in &old {
        assert!(!event_found(&bob, &room_id, id).await, "/event still serves {id}");
    }

    if purge {
        until_purged(&node, &room_id, &old, 10).await;
        for (id, _) in &old {
            let stored = node.services.rooms.stored_event(id).unwrap().expect("the DAG skeleton stays");
            let content = serde_json::to_value(stored.pdu.get("content")).expect("json");
            assert_eq!(content, json!({}), "no body left");
            assert!(!event_found(&alice, &room_id, id).await, "/event serves the purged {id}");
        }
    } else {
        for (id, text) in &old {
            assert!(body_stored(&node, &room_id, id, text), "{id} purged although no purge ran");
        }
    }
    assert_eq!(texts(&alice, &room_id).await, ["new: water is falling"]);
    let seen = initial_sync_ids(&node, "bob", &room_id).await;
    assert!(seen.contains(&fresh.to_string()), "initial sync has the new message: {seen:?}");
    for (id, _) in &old {
        assert!(!seen.contains(&id.to_string()), "initial sync still has {id}");
    }
    assert!(event_found(&bob, &room_id, &fresh).await, "/event of the new message");
    assert!(!event_found(&bob, &room_id, &ack).await, "/event serves the expired reaction");
    let relations = bob
        .send(get_relating_events::v1::Request::new(room_id.clone(), old[0].0.clone()))
        .await
        .expect("relations answer");
    assert!(relations.chunk.is_empty(), "relations of an expired message: {:?}", relations.chunk);
    let context = bob.send(get_context::v3::Request::new(room_id.clone(), fresh.clone())).await.expect("context");
    let around: Vec<String> = context.events_before.iter().map(|e| e.json().get().to_owned()).collect();
    assert!(!around.is_empty(), "context has the state before the new message");
    for (id, text) in &old {
        assert!(!around.iter().any(|e| e.contains(id.as_str()) || e.contains(text)), "context has {id}");
    }
    assert!(!around.iter().any(|e| e.contains(ack.as_str())), "context has the expired reaction");

    // The room's state stays: name, topic, members.
    let name = bob
        .send(get_state_event_for_key::v3::Request::new(room_id.clone(), StateEventType::RoomName, String::new()))
        .await
        .expect("name still there");
    assert!(name.event_or_content.get().contains("Retention drill"));
    let topic = bob
        .send(get_state_event_for_key::v3::Request::new(room_id.clone(), StateEventType::RoomTopic, String::new()))
        .await
        .expect("topic still there");
    assert!(topic.event_or_content.get().contains("Nothing here lasts"));
    let members = bob.send(joined_members::v3::Request::new(room_id.clone())).await.expect("members");
    assert_eq!(members.joined.len(), 2);

    // And the room goes on.
    say(&bob, &room_id, "new: all clear").await;
    wait_for_texts(&alice, &room_id, &["new: water is falling", "new: all clear"], 10).await;

    // Lifting the retention brings back what was only hidden, never what was purged.
    let room = alice.get_room(&room_id).expect("room known");
    room.send_state_event_raw("m.room.retention", "", json!({})).await.expect("retention lifted");
    let back: &[&str] = if purge {
        &["new: water is falling", "new: all clear"]
    } else {
        &["old: sandbags at the bridge", "old: on my way", "new: water is falling", "new: all clear"]
    };
    wait_for_texts(&alice, &room_id, back, 10).await;
    for (id, _) in &old {
        assert_eq!(event_found(&alice, &room_id, id).await, !purge, "/event of {id} after the retention is lifted");
    }
    if purge {
        // Nor does the search index keep the purged text (checked last: the wait must not let
        // the newer messages expire before the checks above).
        let rooms = [room_id.clone()];
        let in_index = || {
            let query =
                SearchQuery { term: "sandbags", rooms: &rooms, keys: &KEYS, recent_first: false, offset: 0, limit: 10 };
            node.services.search.query(&query).expect("the index answers").1
        };
        common::eventually_until(10, || async { in_index() == 0 }).await;
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_server_cannot_fetch_expired_messages() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test"]).unwrap();
    cluster.members[0].config.retention_purge_interval_secs = Some(1);
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let alice = user_on(&a, "alice").await;
    let bob = user_on(&b, "bob").await;
    let room_id = shared_room(&alice, &[&bob]).await;
    set_retention(&alice, &room_id, LIFETIME_MS).await;

    let old = vec![
        (say(&alice, &room_id, "old: road closed").await, "old: road closed"),
        (say(&alice, &room_id, "old: detour via the hill").await, "old: detour via the hill"),
    ];
    wait_for_texts(&bob, &room_id, &["old: road closed", "old: detour via the hill"], 15).await;
    tokio::time::sleep(Duration::from_millis(LIFETIME_MS + 500)).await;
    let fresh = say(&alice, &room_id, "new: road open").await;
    until_purged(&a, &room_id, &old, 10).await;

    let riverton = &*ServerName::parse("riverton.test").unwrap();
    for (id, _) in &old {
        let answer = b.services.federation_client.send(riverton, get_event::v1::Request::new(id.clone())).await;
        assert!(answer.is_err(), "federation /event served the purged {id}");
    }
    let fetched = b.services.federation_client.send(riverton, get_event::v1::Request::new(fresh.clone())).await;
    assert!(fetched.is_ok(), "federation /event of the new message: {fetched:?}");

    let backfill = b
        .services
        .federation_client
        .send(riverton, get_backfill::v1::Request::new(room_id.clone(), vec![fresh.clone()], UInt::from(100u32)))
        .await
        .expect("backfill answers");
    let pdus: Vec<&str> = backfill.pdus.iter().map(|raw| raw.get()).collect();
    assert!(pdus.iter().any(|pdu| pdu.contains("new: road open")), "backfill has the new message");
    assert!(pdus.iter().any(|pdu| pdu.contains("m.room.create")), "backfill still walks back to the room's state");
    let ids = event_ids(&a, &room_id, &backfill.pdus).await;
    for (id, text) in &old {
        assert!(!pdus.iter().any(|pdu| pdu.contains(text)), "backfill served {text}");
        assert!(!ids.contains(id), "backfill served {id} (as a skeleton)");
    }

    let mut request = get_missing_events::v1::Request::new(room_id.clone(), Vec::new(), vec![fresh.clone()]);
    request.limit = UInt::from(100u32);
    let missing = b.services.federation_client.send(riverton, request).await.expect("get_missing_events answers");
    let pdus: Vec<&str> = missing.events.iter().map(|raw| raw.get()).collect();
    assert!(pdus.iter().any(|pdu| pdu.contains("m.room.retention")), "missing events still has the state");
    let ids = event_ids(&a, &room_id, &missing.events).await;
    for (id, text) in &old {
        assert!(!pdus.iter().any(|pdu| pdu.contains(text)), "get_missing_events served {text}");
        assert!(!ids.contains(id), "get_missing_events served {id} (as a skeleton)");
    }

    for node in [a, b] {
        node.shutdown().await;
    }
}

/// The event ids (reference hashes) of PDUs as a server sent them.
async fn event_ids(
    node: &NodeHandle,
    room_id: &RoomId,
    pdus: &[Box<serde_json::value::RawValue>],
) -> Vec<OwnedEventId> {
    let version = node.services.rooms.version(room_id).await.expect("room version");
    let rules = tocsin_node::rooms::version::rules(&version).expect("known version");
    pdus.iter()
        .map(|raw| {
            let object = tocsin_node::federation::pdu::parse_object(raw).expect("pdu object");
            tocsin_node::federation::pdu::event_id(&object, &rules).expect("event id")
        })
        .collect()
}
