//! More rooms than a node keeps heads of in memory (`room_heads_in_memory`): rooms whose heads
//! went are loaded again from the store, and joins, sends and state changes racing across them
//! all land, on both nodes of a federation.

use futures_util::future::join_all;
use matrix_sdk::{
    Client, RoomState,
    ruma::{
        OwnedRoomId,
        api::client::room::create_room::v3::{Request as CreateRoom, RoomPreset},
        events::room::{message::RoomMessageEventContent, topic::RoomTopicEventContent},
    },
};
use tocsin_tests::cluster::Cluster;

use crate::{
    common,
    fed::{logs, texts, topic, until_joined, user_on},
};

const ROOMS: usize = 6;
const TEXTS_EACH: usize = 4;

/// Syncs until the client sees exactly `want` (in any order) in the room, for up to 20 s.
async fn wait_for_text_set(client: &Client, room_id: &OwnedRoomId, mut want: Vec<String>) {
    want.sort();
    common::eventually(client, 20, || async {
        let mut got = texts(client, room_id).await;
        got.sort();
        (got == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rooms_beyond_the_heads_in_memory_take_racing_joins_sends_and_state() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test"]).unwrap();
    for member in &mut cluster.members {
        member.config.room_heads_in_memory = 2;
        member.config.rate_limits.enabled = false;
    }
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let alice = user_on(&a, "alice").await;
    let bob = user_on(&b, "bob").await;
    let bob_id = bob.user_id().unwrap().to_owned();

    let creates = (0..ROOMS).map(|i| {
        let alice = &alice;
        let bob_id = bob_id.clone();
        async move {
            let mut request = CreateRoom::new();
            request.name = Some(format!("Sector {i}"));
            request.preset = Some(RoomPreset::TrustedPrivateChat);
            request.invite = vec![bob_id];
            alice.create_room(request).await.expect("room created").room_id().to_owned()
        }
    });
    let rooms: Vec<OwnedRoomId> = join_all(creates).await;

    // Bob's node joins all six at once: each join creates a head the store does not know yet.
    common::eventually(&bob, 20, || async {
        rooms.iter().all(|r| bob.get_room(r).is_some_and(|room| room.state() == RoomState::Invited)).then_some(())
    })
    .await;
    let joins = rooms.iter().map(|room_id| bob.join_room_by_id(room_id));
    for joined in join_all(joins).await {
        joined.expect("join over federation");
    }
    for room_id in &rooms {
        until_joined(&alice, room_id, &bob_id).await;
    }

    // What each node announces itself to at start, read from the stored memberships.
    for (node, peer) in [(&a, "lakeside.test"), (&b, "riverton.test")] {
        let peers = node.services.rooms.peer_servers().await.expect("peer servers");
        assert_eq!(peers.iter().map(ToString::to_string).collect::<Vec<_>>(), [peer]);
    }

    // Both users write into every room at once, from both nodes.
    let sends = rooms.iter().enumerate().flat_map(|(i, room_id)| {
        [(&alice, "alice"), (&bob, "bob")].map(|(client, who)| async move {
            let room = client.get_room(room_id).expect("room known");
            for n in 0..TEXTS_EACH {
                room.send(RoomMessageEventContent::text_plain(format!("{who} {i}.{n}"))).await.expect("send");
            }
        })
    });
    join_all(sends).await;
    let topics = rooms.iter().enumerate().map(|(i, room_id)| {
        let room = alice.get_room(room_id).expect("room known");
        async move { room.send_state_event(RoomTopicEventContent::new(format!("Sector {i} topic"))).await }
    });
    for set in join_all(topics).await {
        set.expect("topic set");
    }

    for (i, room_id) in rooms.iter().enumerate() {
        let want: Vec<String> =
            ["alice", "bob"].iter().flat_map(|who| (0..TEXTS_EACH).map(move |n| format!("{who} {i}.{n}"))).collect();
        for client in [&alice, &bob] {
            wait_for_text_set(client, room_id, want.clone()).await;
            let wanted = format!("Sector {i} topic");
            common::eventually(client, 20, || async {
                (topic(client, room_id).await.as_deref() == Some(wanted.as_str())).then_some(())
            })
            .await;
        }
    }
}
