//! What a peer hands back to fill a gap in a room's history may be older than this node's view
//! of the room. It must never reset the room.

use matrix_sdk::ruma::events::{StateEventType, room::message::RoomMessageEventContent};
use tocsin_node::rooms::{Incoming, Outcome};

use crate::fed::{logs, shared_room, two_nodes, user_on, wait_for_texts};

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
