//! Server-side search from a stock client (`POST /search`): ranked and newest-first results
//! from the caller's rooms only, pages, context with profiles, groups, the rooms' state; a
//! redacted message drops out, history the caller may not read stays hidden, and the index
//! survives a restart and is rebuilt when its folder is lost.

use std::time::Duration;

use matrix_sdk::{
    Client,
    ruma::{
        OwnedEventId, OwnedRoomId, UInt,
        api::client::{
            room::create_room::v3::Request as CreateRoom,
            search::search_events::v3::{
                Categories, Criteria, Grouping, GroupingKey, OrderBy, Request, ResultRoomEvents,
            },
        },
        events::room::message::RoomMessageEventContent,
        serde::Raw,
    },
};
use serde_json::{Value, json};

use crate::common::{eventually, eventually_until, login, start, user};

fn criteria(term: &str) -> Criteria {
    Criteria::new(term.to_owned())
}

async fn search(client: &Client, criteria: Criteria, next_batch: Option<String>) -> ResultRoomEvents {
    let mut categories = Categories::new();
    categories.room_events = Some(criteria);
    let mut request = Request::new(categories);
    request.next_batch = next_batch;
    client.send(request).await.expect("search answers").search_categories.room_events
}

fn body(event: &Option<Raw<matrix_sdk::ruma::events::AnyTimelineEvent>>) -> String {
    let content = event.as_ref().expect("a result event").get_field::<Value>("content").unwrap().unwrap();
    content["body"].as_str().unwrap_or_default().to_owned()
}

fn bodies(found: &ResultRoomEvents) -> Vec<String> {
    found.results.iter().map(|r| body(&r.result)).collect()
}

/// Searches until the index holds `want` results for `term` (indexing follows the commit).
async fn until_found(client: &Client, term: &str, want: usize) -> ResultRoomEvents {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = search(client, criteria(term), None).await;
        if found.results.len() == want {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "{term:?}: {:?}, want {want}", bodies(&found));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn say(client: &Client, room_id: &OwnedRoomId, text: &str) -> OwnedEventId {
    let room = client.get_room(room_id).expect("joined");
    room.send(RoomMessageEventContent::text_plain(text)).await.expect("sent").response.event_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_what_the_caller_may_read_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    let dave = user(&node, "dave").await;

    // History only for those joined at the time: dave, who joins later, must not find it.
    let mut request = CreateRoom::new();
    request.name = Some("Dam watch".into());
    request.initial_state = vec![
        Raw::new(
            &json!({"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}),
        )
        .unwrap()
        .cast_unchecked(),
    ];
    let room = alice.create_room(request).await.unwrap();
    let room_id = room.room_id().to_owned();
    room.invite_user_by_id(bob.user_id().unwrap()).await.unwrap();
    eventually(&bob, 10, || async { bob.get_room(&room_id).map(|_| ()) }).await;
    bob.join_room_by_id(&room_id).await.unwrap();
    // A room alice is not in, with the same words.
    let other = carol.create_room(CreateRoom::new()).await.unwrap().room_id().to_owned();
    say(&carol, &other, "north dam inspection report").await;

    say(&alice, &room_id, "Flood barrier breached at the north dam").await;
    say(&alice, &room_id, "Sandbags arrive at noon").await;
    say(&bob, &room_id, "The north dam holds for now").await;

    // Ranked: both of the room's hits, none of carol's room; every word must match.
    let found = until_found(&alice, "north dam", 2).await;
    assert_eq!(found.count, Some(UInt::from(2u32)));
    assert!(found.results.iter().all(|r| r.rank.is_some()), "ranked results carry their rank");
    assert!(found.highlights.contains(&"north".to_owned()) && found.highlights.contains(&"dam".to_owned()));
    assert!(bodies(&until_found(&alice, "north sandbags", 0).await).is_empty());
    assert_eq!(bodies(&until_found(&carol, "dam", 1).await), ["north dam inspection report"]);

    // Newest first, one per page, with context, profiles, groups and the room's state.
    let mut asked = criteria("north dam");
    asked.order_by = Some(OrderBy::Recent);
    asked.filter.limit = Some(UInt::from(1u32));
    asked.event_context.before_limit = UInt::from(1u32);
    asked.event_context.after_limit = UInt::from(0u32);
    asked.event_context.include_profile = true;
    asked.include_state = Some(true);
    asked.groupings.group_by = vec![{
        let mut g = Grouping::new();
        g.key = Some(GroupingKey::RoomId);
        g
    }];
    let first = search(&alice, asked.clone(), None).await;
    assert_eq!(bodies(&first), ["The north dam holds for now"]);
    let context = &first.results[0].context;
    assert_eq!(context.events_before.len(), 1, "one event of context before");
    assert_eq!(body(&Some(context.events_before[0].clone().cast_unchecked())), "Sandbags arrive at noon");
    assert!(context.profile_info.contains_key(bob.user_id().unwrap()), "{:?}", context.profile_info);
    assert!(first.state.get(&room_id).is_some_and(|s| !s.is_empty()), "the room's state is included");
    assert_eq!(first.groups.len(), 1, "grouped by room");
    let token = first.next_batch.clone().expect("a second page");
    let second = search(&alice, asked, Some(token)).await;
    assert_eq!(bodies(&second), ["Flood barrier breached at the north dam"]);
    assert!(second.next_batch.is_none(), "no third page");

    // dave joins now: the room's earlier messages stay hidden from him.
    room.invite_user_by_id(dave.user_id().unwrap()).await.unwrap();
    eventually(&dave, 10, || async { dave.get_room(&room_id).map(|_| ()) }).await;
    dave.join_room_by_id(&room_id).await.unwrap();
    say(&bob, &room_id, "dave: the north dam log is in the pinned file").await;
    assert_eq!(bodies(&until_found(&dave, "north dam", 1).await), ["dave: the north dam log is in the pinned file"]);

    // A redacted message leaves the results.
    let redacted = say(&alice, &room_id, "wrong gauge reading 9.7").await;
    until_found(&alice, "gauge", 1).await;
    room.redact(&redacted, Some("typo"), None).await.expect("redacted");
    until_found(&alice, "gauge", 0).await;

    // Bad input gets a clear error.
    let mut categories = Categories::new();
    categories.room_events = Some(criteria("dam"));
    let mut request = Request::new(categories);
    request.next_batch = Some("not-a-token".into());
    let error = alice.send(request).await.expect_err("a made-up token is refused");
    assert_eq!(error.as_client_api_error().map(|e| e.status_code.as_u16()), Some(400), "{error}");

    // The index survives a restart, and is rebuilt from the store when its folder is lost.
    node.shutdown().await;
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let alice = login(&node, "alice", "correct horse").await;
    assert_eq!(until_found(&alice, "north dam", 3).await.results.len(), 3);
    node.shutdown().await;
    std::fs::remove_dir_all(dir.path().join("search")).expect("the index folder is there");
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let alice = login(&node, "alice", "correct horse").await;
    eventually_until(15, || async { search(&alice, criteria("north dam"), None).await.results.len() == 3 }).await;
    assert!(search(&alice, criteria("gauge"), None).await.results.is_empty(), "the redacted message stays out");
    node.shutdown().await;
}
