//! A room that grows by hundreds of joins, on two nodes: each join stores what it changed, not
//! the room's whole state again, and the state at every point of the room still reads back,
//! after a restart too.

use matrix_sdk::ruma::{
    OwnedEventId, OwnedRoomId, OwnedServerName, RoomOrAliasId, UserId,
    api::client::room::create_room::v3::{Request as CreateRoom, RoomPreset},
    events::room::message::RoomMessageEventContent,
};
use tocsin_node::{
    NodeHandle,
    store::{Db, trees},
};
use tocsin_tests::cluster::Cluster;

use crate::fed::{client_for, logs, until_joined, user_on, wait_for_texts};

/// Joins per node: enough that storing each state whole (the square of the room) stands far
/// apart from storing each change (linear).
const JOINS_PER_NODE: usize = 150;

/// Bytes of room state the node keeps, whole snapshots and deltas.
fn state_bytes(db: &Db) -> usize {
    [trees::STATE_SNAPSHOTS, trees::STATE_DELTAS]
        .into_iter()
        .map(|tree| db.scan_prefix(tree, b"", usize::MAX).expect("the store answers"))
        .flat_map(|rows| rows.into_iter().map(|(k, v)| k.len() + v.len()))
        .sum()
}

/// Joins `count` new local users of `node` to `room_id` through the node's membership path;
/// returns their join events in order.
async fn join_many(node: &NodeHandle, room_id: &OwnedRoomId, prefix: &str, count: usize) -> Vec<OwnedEventId> {
    let mut joins = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("{prefix}{i}");
        node.services.users.create_account(&name, Some("correct horse"), None, false).await.expect("account created");
        let user = UserId::parse(format!("@{name}:{}", node.services.config.server_name)).expect("valid user id");
        let event = node
            .services
            .rooms
            .set_membership(room_id, &user, &user, "join", (None, None), None)
            .await
            .expect("the public room lets the user join");
        joins.push(event);
    }
    joins
}

/// How many members the state before `event` has joined.
fn joined_before(node: &NodeHandle, event: &OwnedEventId) -> usize {
    let state = node.services.rooms.state_before(event).expect("the store answers").expect("the event has a state");
    state.keys().filter(|(kind, _)| kind.to_string() == "m.room.member").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_growing_room_stores_each_join_once_and_reads_back_after_a_restart() {
    logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test"]).expect("cluster planned");
    let a = cluster.start(0).await.expect("riverton starts");
    let b = cluster.start(1).await.expect("lakeside starts");
    let alice = user_on(&a, "alice").await;
    let bob = user_on(&b, "bob").await;
    let mut request = CreateRoom::new();
    request.preset = Some(RoomPreset::PublicChat);
    let room_id = alice.create_room(request).await.expect("room created").room_id().to_owned();
    let via = [OwnedServerName::try_from("riverton.test").expect("server name")];
    bob.join_room_by_id_or_alias(<&RoomOrAliasId>::from(&*room_id), &via).await.expect("bob joins over federation");
    until_joined(&alice, &room_id, bob.user_id().expect("bob is logged in")).await;

    // Joins on both nodes: riverton's are local there and arrive at lakeside over federation,
    // and the other way round.
    let a_joins = join_many(&a, &room_id, "r", JOINS_PER_NODE).await;
    let b_joins = join_many(&b, &room_id, "l", JOINS_PER_NODE).await;
    let members = 2 + 2 * JOINS_PER_NODE;
    crate::common::eventually_until(60, || async {
        a.services.rooms.members(&room_id, "join").await.expect("the store answers").len() == members
    })
    .await;

    // The state at an early, a middle and the last join, as each was appended.
    let probes = [
        (&a_joins[9], 2 + 9),
        (&a_joins[JOINS_PER_NODE / 2], 2 + JOINS_PER_NODE / 2),
        (&b_joins[JOINS_PER_NODE - 1], members - 1),
    ];
    for (event, before) in probes {
        assert_eq!(joined_before(&a, event), before, "riverton: the members before {event}");
    }

    // The final state stored whole is about this big; storing every state whole would take
    // about `members / 2` times as much.
    let whole = members * 120;
    let stored = state_bytes(&a.services.db);
    assert!(
        stored < 12 * whole,
        "riverton stores {stored} bytes of room state for {members} joins (the final state alone is about {whole})"
    );

    // After a restart nothing is cached: the states read back from the store alone.
    a.shutdown().await;
    let a = cluster.start(0).await.expect("riverton restarts");
    for (event, before) in probes {
        assert_eq!(joined_before(&a, event), before, "riverton after a restart: the members before {event}");
    }
    assert_eq!(a.services.rooms.members(&room_id, "join").await.expect("the store answers").len(), members);

    // The room still works both ways.
    let alice = client_for(&a.base_url(), "alice").await;
    let bob_room = bob.get_room(&room_id).expect("bob's client knows the room");
    bob_room.send(RoomMessageEventContent::text_plain("all 302 of us")).await.expect("bob can talk");
    wait_for_texts(&alice, &room_id, &["all 302 of us"], 20).await;
    for node in [a, b] {
        node.shutdown().await;
    }
}
