//! Federation scenarios with real matrix-sdk clients: nodes with their own server names, TLS and
//! data dirs, in this process or as child processes killed with SIGKILL.

mod common;

use std::time::Duration;

use matrix_sdk::{
    Client, RoomState,
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, RoomId,
        api::client::room::create_room::v3::Request as CreateRoom,
        events::{
            AnySyncMessageLikeEvent, AnySyncTimelineEvent,
            room::{message::RoomMessageEventContent, topic::RoomTopicEventContent},
        },
    },
};
use tocsin_node::NodeHandle;
use tocsin_tests::cluster::Cluster;

const PASSWORD: &str = "correct horse";

/// Node logs in the test output (shown for failing tests), filtered by `RUST_LOG`.
fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tocsin_node=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

async fn client_for(base_url: &str, name: &str) -> Client {
    let client = Client::builder().homeserver_url(base_url).build().await.expect("client builds");
    client.matrix_auth().login_username(name, PASSWORD).send().await.expect("login succeeds");
    client
}

async fn user_on(node: &NodeHandle, name: &str) -> Client {
    node.services.users.create_account(name, Some(PASSWORD), None, false).await.expect("account created");
    client_for(&node.base_url(), name).await
}

fn text_of(event: &AnySyncTimelineEvent) -> Option<String> {
    match event {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
            matrix_sdk::ruma::events::room::message::SyncRoomMessageEvent::Original(m),
        )) => Some(m.content.body().to_owned()),
        _ => None,
    }
}

/// Every message text in the room as the client's server returns it, oldest first.
async fn texts(client: &Client, room_id: &RoomId) -> Vec<String> {
    let Some(room) = client.get_room(room_id) else { return Vec::new() };
    let mut out = Vec::new();
    let mut options = MessagesOptions::backward();
    options.limit = 1000u32.into();
    if let Ok(messages) = room.messages(options).await {
        out.extend(messages.chunk.iter().filter_map(|e| text_of(&e.raw().deserialize().ok()?)));
    }
    out.reverse();
    out
}

async fn topic(client: &Client, room_id: &RoomId) -> Option<String> {
    let room = client.get_room(room_id)?;
    let event = room.get_state_event_static::<RoomTopicEventContent>().await.ok()??;
    let event = event.deserialize().ok()?;
    match event {
        matrix_sdk::deserialized_responses::SyncOrStrippedState::Sync(e) => {
            e.as_original().map(|o| o.content.topic.clone())
        }
        _ => None,
    }
}

/// Waits (syncing) until `client` is invited to `room_id`, then joins.
async fn accept_invite(client: &Client, room_id: &RoomId) {
    common::eventually(client, 10, || async { client.get_room(room_id).filter(|r| r.state() == RoomState::Invited) })
        .await;
    client.join_room_by_id(room_id).await.expect("join over federation");
}

async fn wait_for_texts(client: &Client, room_id: &RoomId, want: &[String], secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        common::sync(client).await;
        let got = texts(client, room_id).await;
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} saw {got:?}, wanted {want:?}", client.user_id().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn shared_room(creator: &Client, invitees: &[&Client]) -> OwnedRoomId {
    let mut request = CreateRoom::new();
    request.name = Some("Flood response".into());
    // Invitees get power to change state too (trusted private chat).
    request.preset = Some(matrix_sdk::ruma::api::client::room::create_room::v3::RoomPreset::TrustedPrivateChat);
    request.invite = invitees.iter().map(|c| c.user_id().unwrap().to_owned()).collect();
    let room = creator.create_room(request).await.expect("room created");
    let room_id = room.room_id().to_owned();
    for invitee in invitees {
        accept_invite(invitee, &room_id).await;
    }
    room_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_a_room() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test", "fire.test"]).unwrap();
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let c = cluster.start(2).await.unwrap();
    let alice = user_on(&a, "alice").await;
    let bob = user_on(&b, "bob").await;
    let carol = user_on(&c, "carol").await;

    let room_id = shared_room(&alice, &[&bob, &carol]).await;
    let mut expected = Vec::new();
    for (client, text) in
        [(&alice, "alice on riverton"), (&bob, "bob on lakeside"), (&carol, "carol at the fire service")]
    {
        common::sync(client).await;
        let room = client.get_room(&room_id).expect("room known to every member");
        room.send(RoomMessageEventContent::text_plain(text)).await.expect("message sent");
        expected.push(text.to_owned());
        // Each message is seen everywhere before the next is sent, so the order is fixed.
        for viewer in [&alice, &bob, &carol] {
            wait_for_texts(viewer, &room_id, &expected, 10).await;
        }
    }

    let carol_room = carol.get_room(&room_id).unwrap();
    carol_room.set_room_topic("Evacuate the river district").await.expect("topic set by a remote member");
    for viewer in [&alice, &bob] {
        let seen = common::eventually(viewer, 10, || async {
            topic(viewer, &room_id).await.filter(|t| t == "Evacuate the river district")
        })
        .await;
        assert_eq!(seen, "Evacuate the river district");
    }
    for node in [a, b, c] {
        node.shutdown().await;
    }
}
