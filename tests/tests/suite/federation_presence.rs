//! Presence across nodes: statuses reach users sharing a room on other servers when both servers
//! have presence on, and go nowhere from or to a server that has it off (the default).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use matrix_sdk::{
    Client,
    ruma::{
        OwnedUserId, UserId,
        api::client::presence::{get_presence, set_presence},
        events::{presence::PresenceEvent, room::message::RoomMessageEventContent},
        presence::PresenceState,
    },
};
use serde_json::json;
use tocsin_tests::cluster::Cluster;

use crate::{
    common,
    fed::{logs, shared_room, user_on, wait_for_texts},
};

/// Every `m.presence` event the client's syncs delivered, as (user, presence, status message).
type PresenceLog = Arc<Mutex<Vec<(OwnedUserId, PresenceState, Option<String>)>>>;

fn presence_log(client: &Client) -> PresenceLog {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    client.add_event_handler(move |ev: PresenceEvent| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push((ev.sender, ev.content.presence, ev.content.status_msg));
        }
    });
    log
}

async fn presence_of(client: &Client, user: &UserId) -> get_presence::v3::Response {
    client.send(get_presence::v3::Request::new(user.to_owned())).await.expect("GET presence answers")
}

async fn set_status(client: &Client, presence: PresenceState, message: &str) {
    let mut request = set_presence::v3::Request::new(client.user_id().unwrap().to_owned(), presence);
    request.status_msg = Some(message.to_owned());
    client.send(request).await.expect("PUT presence answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statuses_cross_between_nodes_with_presence_on_and_nowhere_else() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test", "fire.test"]).unwrap();
    // The fire service keeps the default: presence off.
    cluster.members[0].config.presence = true;
    cluster.members[1].config.presence = true;
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let c = cluster.start(2).await.unwrap();
    let alice = user_on(&a, "alice").await;
    let bob = user_on(&b, "bob").await;
    let carol = user_on(&c, "carol").await;
    let (bob_log, carol_log) = (presence_log(&bob), presence_log(&carol));
    let room_id = shared_room(&alice, &[&bob, &carol]).await;
    let alice_id = alice.user_id().unwrap().to_owned();

    set_status(&alice, PresenceState::Unavailable, "at the levee, km 12").await;

    // Bob's client on lakeside gets it in /sync, and lakeside answers GET with it.
    common::eventually(&bob, 10, || async {
        bob_log
            .lock()
            .unwrap()
            .iter()
            .any(|(u, p, m)| {
                *u == alice_id && *p == PresenceState::Unavailable && m.as_deref() == Some("at the levee, km 12")
            })
            .then_some(())
    })
    .await;
    let seen = presence_of(&bob, &alice_id).await;
    assert_eq!(seen.presence, PresenceState::Unavailable);
    assert_eq!(seen.status_msg.as_deref(), Some("at the levee, km 12"));

    // Bob syncing makes him online; riverton hears it.
    let bob_id = bob.user_id().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while presence_of(&alice, &bob_id).await.presence != PresenceState::Online {
        assert!(tokio::time::Instant::now() < deadline, "riverton never saw bob online");
        common::sync(&bob).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The fire service has presence off: it keeps nothing it is sent and sends nothing. A
    // message sent after the status change travels the same queue, so once carol has it the
    // status would have arrived too.
    alice.get_room(&room_id).unwrap().send(RoomMessageEventContent::text_plain("status sent")).await.unwrap();
    wait_for_texts(&carol, &room_id, &["status sent"], 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    common::sync(&carol).await;
    let at_fire = presence_of(&carol, &alice_id).await;
    assert_eq!(at_fire.presence, PresenceState::Offline, "a server with presence off reports everyone offline");
    assert_eq!(at_fire.status_msg, None);
    assert!(carol_log.lock().unwrap().is_empty(), "carol's syncs carried presence: {:?}", carol_log.lock().unwrap());
    let carol_id = carol.user_id().unwrap().to_owned();
    set_status(&carol, PresenceState::Online, "on the engine").await;
    carol.get_room(&room_id).unwrap().send(RoomMessageEventContent::text_plain("carol here")).await.unwrap();
    wait_for_texts(&alice, &room_id, &["status sent", "carol here"], 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let from_fire = presence_of(&alice, &carol_id).await;
    assert_eq!(from_fire.presence, PresenceState::Offline, "the fire service sent a status");
    assert_eq!(from_fire.status_msg, None);

    // Bad input: a state that does not exist, and someone else's presence.
    let http = reqwest::Client::new();
    let token = alice.access_token().unwrap();
    let url = |user: &UserId| format!("{}/_matrix/client/v3/presence/{user}/status", a.base_url());
    let r = http.put(url(&alice_id)).bearer_auth(&token).json(&json!({ "presence": "busy" })).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errcode"], "M_INVALID_PARAM", "{body}");
    let r = http.put(url(&bob_id)).bearer_auth(&token).json(&json!({ "presence": "offline" })).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(presence_of(&alice, &alice_id).await.status_msg.as_deref(), Some("at the levee, km 12"));

    for node in [a, b, c] {
        node.shutdown().await;
    }
}
