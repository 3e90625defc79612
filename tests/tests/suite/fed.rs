//! Helpers shared by the federation scenarios: node logs, users on a node, rooms shared across
//! nodes, and what a client sees in them.
#![allow(dead_code)]

use std::time::Duration;

use matrix_sdk::{
    Client, RoomState,
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, RoomId,
        api::client::room::create_room::v3::{Request as CreateRoom, RoomPreset},
        events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent, room::topic::RoomTopicEventContent},
    },
};
use tocsin_node::NodeHandle;

use crate::common;

pub const PASSWORD: &str = "correct horse";

/// Node logs in the test output (shown for failing tests), filtered by `RUST_LOG`.
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tocsin_node=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Two nodes of one federation, started in this process with node logs on. The temp dir holds
/// their data and must live as long as they do.
pub async fn two_nodes(a: &str, b: &str) -> (tempfile::TempDir, NodeHandle, NodeHandle) {
    logs();
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = tocsin_tests::cluster::Cluster::plan(dir.path(), &[a, b]).expect("cluster planned");
    let first = cluster.start(0).await.expect("first node starts");
    let second = cluster.start(1).await.expect("second node starts");
    (dir, first, second)
}

/// A client logged in as `name` on the node at `base_url`.
pub async fn client_for(base_url: &str, name: &str) -> Client {
    let client = Client::builder().homeserver_url(base_url).build().await.expect("client builds");
    client.matrix_auth().login_username(name, PASSWORD).send().await.expect("login succeeds");
    client
}

/// A new account `name` on `node`, logged in.
pub async fn user_on(node: &NodeHandle, name: &str) -> Client {
    node.services.users.create_account(name, Some(PASSWORD), None, false).await.expect("account created");
    client_for(&node.base_url(), name).await
}

/// Waits (syncing) until `client` is invited to `room_id`, then joins.
pub async fn accept_invite(client: &Client, room_id: &RoomId) {
    common::eventually(client, 15, || async { client.get_room(room_id).filter(|r| r.state() == RoomState::Invited) })
        .await;
    client.join_room_by_id(room_id).await.expect("join over federation");
}

/// Syncs `client` until it sees `user` joined to `room_id`: what a person waits for before
/// talking to someone. An event a server sends before it learns of a member's join does not go
/// to that member's server.
pub async fn until_joined(client: &Client, room_id: &RoomId, user: &matrix_sdk::ruma::UserId) {
    common::eventually(client, 15, || async {
        let member = client.get_room(room_id)?.get_member_no_sync(user).await.ok()??;
        (*member.membership() == matrix_sdk::ruma::events::room::member::MembershipState::Join).then_some(())
    })
    .await;
}

/// A private room made by `creator`, with every invitee joined; invitees may change state too.
pub async fn shared_room(creator: &Client, invitees: &[&Client]) -> OwnedRoomId {
    let mut request = CreateRoom::new();
    request.name = Some("Flood response".into());
    request.preset = Some(RoomPreset::TrustedPrivateChat);
    request.invite = invitees.iter().filter_map(|c| c.user_id()).map(ToOwned::to_owned).collect();
    let room = creator.create_room(request).await.expect("room created");
    let room_id = room.room_id().to_owned();
    for invitee in invitees {
        accept_invite(invitee, &room_id).await;
    }
    room_id
}

pub fn text_of(event: &AnySyncTimelineEvent) -> Option<String> {
    match event {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
            matrix_sdk::ruma::events::room::message::SyncRoomMessageEvent::Original(m),
        )) => Some(m.content.body().to_owned()),
        _ => None,
    }
}

/// Every message text in the room as the client's server returns it, oldest first (redacted
/// messages have none).
pub async fn texts(client: &Client, room_id: &RoomId) -> Vec<String> {
    let Some(room) = client.get_room(room_id) else { return Vec::new() };
    let mut options = MessagesOptions::backward();
    options.limit = 1000u32.into();
    let mut out = Vec::new();
    if let Ok(messages) = room.messages(options).await {
        out.extend(messages.chunk.iter().filter_map(|e| text_of(&e.raw().deserialize().ok()?)));
    }
    out.reverse();
    out
}

/// Syncs until the room's texts are exactly `want`, for up to `secs`.
pub async fn wait_for_texts<S: AsRef<str>>(client: &Client, room_id: &RoomId, want: &[S], secs: u64) {
    let want: Vec<&str> = want.iter().map(AsRef::as_ref).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        common::sync(client).await;
        let got = texts(client, room_id).await;
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?} saw {got:?}, wanted {want:?}", client.user_id());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The room's topic as the client knows it.
pub async fn topic(client: &Client, room_id: &RoomId) -> Option<String> {
    let room = client.get_room(room_id)?;
    let event = room.get_state_event_static::<RoomTopicEventContent>().await.ok()??;
    match event.deserialize().ok()? {
        matrix_sdk::deserialized_responses::SyncOrStrippedState::Sync(e) => {
            e.as_original().map(|o| o.content.topic.clone())
        }
        _ => None,
    }
}
