//! What a peer hands back to fill a gap in a room's history may be older than this node's view
//! of the room. It must never reset the room.

use matrix_sdk::ruma::events::{StateEventType, room::message::RoomMessageEventContent};
use serde_json::json;
use tocsin_node::{
    rooms::{Incoming, Outcome, Pdu},
    ruma::{EventId, OwnedEventId, OwnedRoomId},
};

use crate::{
    api::{Api, enc},
    common,
    fed::{logs, shared_room, two_nodes, user_on, wait_for_texts},
    hostile::{self, Forge, cj},
};

/// A peer that does not know this node's newest events walks a gap back to the room's start
/// and hands back the create event first. The create event never enters a timeline again.
/// Taken in, it forked the room from the empty state, and resolving that fork against the
/// current state dropped the room's members. The 1,000-recipient alarm benchmark hit this.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_create_event_handed_back_does_not_reset_the_room() {
    logs();
    let (_dir, a, b) = two_nodes("riverton.test", "lakeside.test").await;
    let alice = user_on(&a, "alice").await;
    let bob = user_on(&b, "bob").await;
    let room_id = shared_room(&alice, &[&bob]).await;

    let create = {
        let head = b.services.rooms.head(&room_id).expect("lakeside is in the room");
        let head = head.lock().await;
        head.get(&StateEventType::RoomCreate, "").expect("the room has a create event").as_ref().clone()
    };
    let outcome =
        b.services.rooms.append_remote(Incoming { pdu: create, state_before: None }).await.expect("the store answers");
    assert_eq!(outcome, Outcome::Known, "the create event handed back is not a new event");

    let joined = b.services.rooms.members(&room_id, "join").await.unwrap();
    for user in ["@alice:riverton.test", "@bob:lakeside.test"] {
        assert!(joined.iter().any(|u| u == user), "{user} is still joined on lakeside: {joined:?}");
    }
    // Bob can still talk, and alice hears him.
    let room = bob.get_room(&room_id).expect("bob's client knows the room");
    room.send(RoomMessageEventContent::text_plain("still here")).await.expect("bob is still a member");
    wait_for_texts(&alice, &room_id, &["still here"], 10).await;
    for node in [a, b] {
        node.shutdown().await;
    }
}

/// A gap whose missing events branch off the room far below the asker's newest events: every
/// path back from the new event runs around those, down to the room's start. The answer must
/// carry the missing events next to the new one, not the room's oldest events (all of which
/// the asker has). Handed only old events, the asker gave up on the gap and fetched the whole
/// state instead, and never took the missing events in: in a five-node alarm run, a
/// 5,000-member state four times.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_that_runs_around_the_newest_events_is_filled_from_its_new_end() {
    logs();
    let (_dir, a, b) = two_nodes("riverton.test", "lakeside.test").await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let alice = api_a.user(&a, "alice").await;
    let bob = api_b.user(&b, "bob").await;
    let room = api_a.create_room(&alice, json!({ "preset": "private_chat" })).await;
    let r = api_a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            Some(&alice),
            &json!({ "user_id": "@bob:lakeside.test" }),
        )
        .await;
    assert_eq!(r.0, 200, "invite: {}", r.1);
    let r = api_b
        .post(&format!("/_matrix/client/v3/join/{}?server_name=riverton.test", enc(&room)), Some(&bob), &json!({}))
        .await;
    assert_eq!(r.0, 200, "bob joins: {}", r.1);
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();

    // More history than one answer holds (100 events).
    let mut said: Vec<OwnedEventId> = Vec::new();
    for n in 0..130 {
        let (status, body) = api_a.send_text(&room, &alice, &format!("m{n}"), &format!("message {n}")).await;
        assert_eq!(status, 200, "send: {body}");
        said.push(EventId::parse(body["event_id"].as_str().unwrap()).unwrap());
    }
    let (status, body) = api_b.send_text(&room, &bob, "b0", "on lakeside").await;
    assert_eq!(status, 200, "send: {body}");
    let bobs = EventId::parse(body["event_id"].as_str().unwrap()).unwrap();
    common::eventually_until(20, || async { a.services.rooms.pdu(&bobs).unwrap().is_some() }).await;

    // On lakeside only: a branch off the 110th message, and an event on top of it.
    let forge = Forge::new(&b, &room_id, &bobs).await;
    let root = b.services.rooms.pdu(&said[110]).unwrap().expect("lakeside has the message");
    let depth = u64::from(root.depth);
    let (branch_id, branch) = forge
        .pdu(|o| {
            o.insert("prev_events".into(), cj(json!([root.event_id])));
            o.insert("depth".into(), cj(json!(depth + 1)));
            o.insert("content".into(), cj(json!({ "msgtype": "m.text", "body": "the branch" })));
        })
        .await;
    let (tip_id, tip) = forge
        .pdu(|o| {
            o.insert("prev_events".into(), cj(json!([branch_id])));
            o.insert("depth".into(), cj(json!(depth + 2)));
            o.insert("content".into(), cj(json!({ "msgtype": "m.text", "body": "on the branch" })));
        })
        .await;
    for (id, object) in [(&branch_id, branch), (&tip_id, tip.clone())] {
        let pdu = Pdu::from_json(id.clone(), object).unwrap();
        let outcome = b.services.rooms.append_remote(Incoming { pdu, state_before: None }).await.unwrap();
        assert_eq!(outcome, Outcome::Accepted, "lakeside takes {id} in");
    }

    // Riverton's question, as it asks it: from its newest event to the new one.
    let newest = a.services.rooms.head(&room_id).unwrap().lock().await.extremities.clone();
    let (status, body) = hostile::request(
        &a,
        &b,
        "POST",
        &format!("/_matrix/federation/v1/get_missing_events/{}", enc(&room)),
        Some(json!({ "earliest_events": newest, "latest_events": [tip_id], "limit": 100 })),
    )
    .await;
    assert_eq!(status, 200, "get_missing_events: {body}");
    let events = body["events"].as_array().expect("events");
    assert_eq!(events.len(), 100, "a full answer: {body}");
    let depths: Vec<u64> = events.iter().map(|e| e["depth"].as_u64().unwrap()).collect();
    assert!(depths.windows(2).all(|w| w[0] <= w[1]), "oldest first: {depths:?}");
    assert_eq!(depths.last(), Some(&(depth + 1)), "the answer ends with the branch event: {depths:?}");

    // The same gap, met for real: lakeside sends the tip, riverton fills the gap from lakeside
    // and takes in both events, not a state without the branch.
    let (status, body) = hostile::transaction(&b, &a, "gap", vec![tip]).await;
    assert_eq!(status, 200, "transaction: {body}");
    assert_eq!(hostile::pdu_error(&body, &tip_id), None, "riverton takes the tip: {body}");
    let timeline = api_a.messages(&room, &alice).await;
    let bodies: Vec<&str> = timeline.iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert!(bodies.contains(&"the branch"), "alice sees the branch event: {bodies:?}");
    assert!(bodies.contains(&"on the branch"), "alice sees the tip: {bodies:?}");
    for node in [a, b] {
        node.shutdown().await;
    }
}
