//! Real matrix-sdk clients against in-process nodes: what a user of Element or FluffyChat would
//! see.

use crate::common;

use std::time::Duration;

use common::{eventually, start, sync, user};
use matrix_sdk::{
    config::SyncSettings,
    room::MessagesOptions,
    ruma::{
        api::client::room::create_room::v3::Request as CreateRoom,
        events::{
            AnySyncMessageLikeEvent, AnySyncTimelineEvent,
            reaction::ReactionEventContent,
            relation::Annotation,
            room::message::{RoomMessageEventContent, SyncRoomMessageEvent},
        },
    },
};

fn text_of(event: &AnySyncTimelineEvent) -> Option<String> {
    match event {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(SyncRoomMessageEvent::Original(m))) => {
            Some(m.content.body().to_owned())
        }
        _ => None,
    }
}

#[tokio::test]
async fn two_users_create_invite_join_and_talk() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;

    let mut request = CreateRoom::new();
    request.name = Some("Flood response".into());
    let room = alice.create_room(request).await.unwrap();
    room.invite_user_by_id(bob.user_id().unwrap()).await.unwrap();

    let room_id = room.room_id().to_owned();
    eventually(&bob, 5, || async { bob.get_room(&room_id).filter(|r| r.state() == matrix_sdk::RoomState::Invited) })
        .await;
    let bob_room = bob.join_room_by_id(&room_id).await.unwrap();
    bob_room.send(RoomMessageEventContent::text_plain("bob here")).await.unwrap();
    room.send(RoomMessageEventContent::text_plain("alice here")).await.unwrap();

    let seen = eventually(&bob, 5, || async {
        let messages = bob_room.messages(MessagesOptions::backward()).await.ok()?;
        let texts: Vec<String> = messages.chunk.iter().filter_map(|e| text_of(&e.raw().deserialize().ok()?)).collect();
        (texts.len() == 2).then_some(texts)
    })
    .await;
    assert_eq!(seen, vec!["alice here".to_owned(), "bob here".to_owned()], "newest first");
    assert_eq!(bob_room.name().as_deref(), Some("Flood response"));
    node.shutdown().await;
}

#[tokio::test]
async fn long_poll_sync_wakes_on_new_event() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let alice = user(&node, "alice").await;
    let room = alice.create_room(CreateRoom::new()).await.unwrap();
    let token = alice.sync_once(SyncSettings::default().timeout(Duration::ZERO)).await.unwrap().next_batch;

    let watcher = alice.clone();
    let started = tokio::time::Instant::now();
    let poll = tokio::spawn(async move {
        watcher.sync_once(SyncSettings::default().token(token).timeout(Duration::from_secs(20))).await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the long-poll must wait while nothing happens");
    room.send(RoomMessageEventContent::text_plain("wake up")).await.unwrap();
    let response =
        tokio::time::timeout(Duration::from_secs(5), poll).await.expect("long-poll returns promptly").unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let timeline = &response.rooms.joined.get(room.room_id()).expect("room in sync").timeline.events;
    assert!(
        timeline.iter().any(|e| e.raw().deserialize().ok().as_ref().and_then(text_of).as_deref() == Some("wake up"))
    );
    node.shutdown().await;
}

#[tokio::test]
async fn paginate_back_through_a_thousand_messages() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.encrypt_new_rooms = false;
        // A thousand messages from one account at full speed is a flood to the default limits
        // (burst 500); this test is about pagination.
        c.rate_limits = tocsin_node::http::RateLimitConfig::off();
    })
    .await;
    let alice = user(&node, "alice").await;
    let room = alice.create_room(CreateRoom::new()).await.unwrap();
    // Concurrent sends keep the test quick; their order is fixed by the server.
    let mut sends = Vec::new();
    for chunk in 0..10 {
        let room = room.clone();
        sends.push(tokio::spawn(async move {
            for i in 0..100 {
                room.send(RoomMessageEventContent::text_plain(format!("m{}", chunk * 100 + i))).await.unwrap();
            }
        }));
    }
    for s in sends {
        s.await.unwrap();
    }
    let mut from: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let page = room.messages(MessagesOptions::backward().from(from.as_deref())).await.unwrap();
        seen.extend(page.chunk.iter().filter_map(|e| text_of(&e.raw().deserialize().ok()?)));
        match page.end {
            Some(end) => from = Some(end),
            None => break,
        }
    }
    assert_eq!(seen.len(), 1000, "every message exactly once");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 1000, "no duplicates");
    // Each sender's own messages come back newest first.
    let of_first: Vec<_> = seen.iter().filter(|m| m[1..].parse::<u32>().unwrap() < 100).collect();
    let mut expected = of_first.clone();
    expected.sort_by_key(|m| std::cmp::Reverse(m[1..].parse::<u32>().unwrap()));
    assert_eq!(of_first, expected);
    node.shutdown().await;
}

#[tokio::test]
async fn reactions_and_edits_come_back_through_relations() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let alice = user(&node, "alice").await;
    let room = alice.create_room(CreateRoom::new()).await.unwrap();
    let original = room.send(RoomMessageEventContent::text_plain("gauge at 4.1 m")).await.unwrap().response.event_id;
    room.send(ReactionEventContent::new(Annotation::new(original.clone(), "👍".into()))).await.unwrap();
    let edit = RoomMessageEventContent::text_plain("gauge at 4.3 m")
        .make_replacement(matrix_sdk::ruma::events::room::message::ReplacementMetadata::new(original.clone(), None));
    room.send(edit).await.unwrap();

    let relations = room.relations(original.clone(), Default::default()).await.unwrap();
    let kinds: Vec<String> =
        relations.chunk.iter().filter_map(|e| e.raw().get_field::<String>("type").ok().flatten()).collect();
    assert_eq!(relations.chunk.len(), 2, "a reaction and an edit: {kinds:?}");
    assert!(kinds.contains(&"m.reaction".to_owned()));
    assert!(kinds.contains(&"m.room.message".to_owned()));

    let only_edits = matrix_sdk::room::RelationsOptions {
        include_relations: matrix_sdk::room::IncludeRelations::RelationsOfType(
            matrix_sdk::ruma::events::relation::RelationType::Replacement,
        ),
        ..Default::default()
    };
    let edits = room.relations(original.clone(), only_edits).await.unwrap();
    assert_eq!(edits.chunk.len(), 1, "only the edit is a replacement");
    let body = edits.chunk[0].raw().get_field::<serde_json::Value>("content").unwrap().unwrap();
    assert_eq!(body["m.new_content"]["body"], "gauge at 4.3 m");
    node.shutdown().await;
}

async fn restart_keeps_everything(engine: tocsin_store::EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.encrypt_new_rooms = false;
        c.store = engine;
    })
    .await;
    let alice = user(&node, "alice").await;
    let room = alice.create_room(CreateRoom::new()).await.unwrap();
    let room_id = room.room_id().to_owned();
    for i in 0..20 {
        room.send(RoomMessageEventContent::text_plain(format!("before restart {i}"))).await.unwrap();
    }
    node.shutdown().await;
    drop(alice);

    let node = start(dir.path(), |c| {
        c.encrypt_new_rooms = false;
        c.store = engine;
    })
    .await;
    let alice = common::login(&node, "alice", "correct horse").await;
    sync(&alice).await;
    let room = alice.get_room(&room_id).expect("the room survives a restart");
    let page = room.messages(MessagesOptions::backward()).await.unwrap();
    let texts: Vec<String> = page.chunk.iter().filter_map(|e| text_of(&e.raw().deserialize().ok()?)).collect();
    assert_eq!(texts.first().map(String::as_str), Some("before restart 19"));
    assert!(texts.len() >= 10);
    room.send(RoomMessageEventContent::text_plain("after restart")).await.unwrap();
    node.shutdown().await;
}

#[tokio::test]
async fn restarted_node_keeps_everything_redb() {
    restart_keeps_everything(tocsin_store::EngineKind::Redb).await;
}

#[tokio::test]
async fn restarted_node_keeps_everything_sled() {
    restart_keeps_everything(tocsin_store::EngineKind::Sled).await;
}
