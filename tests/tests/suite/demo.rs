//! `tocsin-node demo` as a library: three nodes on free ports, the example accounts, the shared
//! crisis room joined over federation; checked with real matrix-sdk clients, then run again on
//! the same dir to see everything reused.

use crate::common;

use std::{net::IpAddr, time::Duration};

use matrix_sdk::{
    Client, RoomState,
    room::MessagesOptions,
    ruma::{
        OwnedRoomId, RoomId,
        events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent, room::message::RoomMessageEventContent},
    },
};
use tocsin_node::demo::{DEMO_PASSWORD, DemoOptions, FIRST_MESSAGE, ROOM_NAME, run_demo};
use tocsin_tests::cluster::free_port;

fn options(dir: &std::path::Path) -> DemoOptions {
    DemoOptions {
        dir: dir.to_owned(),
        bind: IpAddr::from([127, 0, 0, 1]),
        client_ports: [free_port(), free_port(), free_port()],
        federation_ports: [free_port(), free_port(), free_port()],
    }
}

async fn login(url: &str, name: &str) -> Client {
    let client = Client::builder().homeserver_url(url).build().await.expect("client builds");
    client.matrix_auth().login_username(name, DEMO_PASSWORD).send().await.expect("demo login succeeds");
    client
}

fn text_of(event: &AnySyncTimelineEvent) -> Option<String> {
    match event {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
            matrix_sdk::ruma::events::room::message::SyncRoomMessageEvent::Original(m),
        )) => Some(m.content.body().to_owned()),
        _ => None,
    }
}

async fn texts(client: &Client, room_id: &RoomId) -> Vec<String> {
    let Some(room) = client.get_room(room_id) else { return Vec::new() };
    let mut options = MessagesOptions::backward();
    options.limit = 100u32.into();
    let mut out: Vec<String> = match room.messages(options).await {
        Ok(messages) => messages.chunk.iter().filter_map(|e| text_of(&e.raw().deserialize().ok()?)).collect(),
        Err(_) => Vec::new(),
    };
    out.reverse();
    out
}

/// Syncs `client` until `room_id` is joined and holds `text`.
async fn wait_for_text(client: &Client, room_id: &RoomId, text: &str) {
    common::eventually(client, 15, || async {
        let room = client.get_room(room_id).filter(|r| r.state() == RoomState::Joined)?;
        texts(client, room.room_id()).await.iter().any(|t| t == text).then_some(())
    })
    .await;
}

/// The rooms named like the demo's that `client` has joined.
async fn demo_rooms(client: &Client) -> Vec<OwnedRoomId> {
    common::sync(client).await;
    let mut out = Vec::new();
    for room in client.joined_rooms() {
        if room.name().as_deref() == Some(ROOM_NAME) {
            out.push(room.room_id().to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_federation_shares_a_crisis_room_and_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let demo = run_demo(options(dir.path())).await.expect("demo starts");
    assert_eq!(demo.nodes.len(), 3);
    let room_id = OwnedRoomId::try_from(demo.room_id.as_str()).expect("a room id");
    assert!(demo.created_room);
    let names: Vec<String> = demo.nodes.iter().map(|n| n.handle.server_name.to_string()).collect();
    assert_eq!(names, ["riverton:8448", "lakeside:8449", "county-fire:8450"]);
    for node in &demo.nodes {
        let lead = node.users.iter().find(|u| u.localpart == node.lead).expect("lead account");
        assert!(lead.joined, "{} is in the room", lead.user_id);
    }
    let summary = demo.summary();
    assert!(summary.contains(&demo.nodes[1].client_url) && summary.contains(DEMO_PASSWORD), "{summary}");

    // The lakeside lead sees the room joined, with Riverton's first message.
    let riverton = login(&demo.nodes[0].client_url, "crisis.lead").await;
    let lakeside = login(&demo.nodes[1].client_url, "emergency.manager").await;
    let fire = login(&demo.nodes[2].client_url, "chief").await;
    wait_for_text(&lakeside, &room_id, FIRST_MESSAGE).await;
    assert_eq!(lakeside.get_room(&room_id).and_then(|r| r.name()).as_deref(), Some(ROOM_NAME));

    // A new message from Riverton reaches Lakeside and the fire service.
    common::sync(&riverton).await;
    let room = riverton.get_room(&room_id).expect("creator knows the room");
    room.send(RoomMessageEventContent::text_plain("Sandbags at the fire station, pick-up now")).await.expect("sent");
    wait_for_text(&lakeside, &room_id, "Sandbags at the fire station, pick-up now").await;
    wait_for_text(&fire, &room_id, "Sandbags at the fire station, pick-up now").await;

    // An invited account (not a lead) sees its invitation.
    let mayor = login(&demo.nodes[1].client_url, "mayor").await;
    common::eventually(&mayor, 15, || async { mayor.get_room(&room_id).filter(|r| r.state() == RoomState::Invited) })
        .await;
    demo.shutdown().await;

    // Again, on the same dir and new ports: the same room, no second one, accounts still there.
    let again = run_demo(options(dir.path())).await.expect("demo starts again");
    assert!(!again.created_room);
    assert_eq!(again.room_id, room_id.as_str());
    let riverton = login(&again.nodes[0].client_url, "crisis.lead").await;
    assert_eq!(demo_rooms(&riverton).await, vec![room_id.clone()]);
    let lakeside = login(&again.nodes[1].client_url, "emergency.manager").await;
    wait_for_text(&lakeside, &room_id, "Sandbags at the fire station, pick-up now").await;
    tokio::time::timeout(Duration::from_secs(30), again.shutdown()).await.expect("demo shuts down");
}
