//! Races a busy node must survive: one user creating many rooms at once, invites and joins
//! racing into one room, concurrent state changes, and one user logging in many times at once.

use serde_json::json;

use crate::{
    api::{Api, enc},
    common,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_user_creating_twenty_rooms_at_once_gets_twenty_working_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |c| c.rate_limits.enabled = false).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let creates =
        (0..20).map(|i| {
            let (api, alice) = (&api, &alice);
            async move {
                api.post("/_matrix/client/v3/createRoom", Some(alice), &json!({ "name": format!("Room {i}") })).await
            }
        });
    let results = futures_util::future::join_all(creates).await;
    let mut rooms: Vec<String> = Vec::new();
    for (i, (status, body)) in results.into_iter().enumerate() {
        assert_eq!(status, 200, "createRoom {i}: {body}");
        rooms.push(body["room_id"].as_str().expect("room_id").to_owned());
    }
    let mut distinct = rooms.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 20, "twenty distinct rooms: {rooms:?}");
    for room in &rooms {
        let (status, state) = api.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room)), Some(&alice)).await;
        assert_eq!(status, 200, "{room}: {state}");
        let kinds: Vec<&str> = state.as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
        for kind in ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.name"] {
            assert!(kinds.contains(&kind), "{room} has {kind}: {kinds:?}");
        }
        let (status, body) = api.send_text(room, &alice, "t", "works").await;
        assert_eq!(status, 200, "{room} takes messages: {body}");
    }
}

/// Joined members per `/joined_members`, and the member events per `/state`.
async fn members(api: &Api, room: &str, token: &str) -> (Vec<String>, usize) {
    let (status, body) = api.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(room)), Some(token)).await;
    assert_eq!(status, 200, "joined_members: {body}");
    let mut joined: Vec<String> = body["joined"].as_object().expect("joined").keys().cloned().collect();
    joined.sort();
    let member_events = api.state(room, token).await.iter().filter(|e| e["type"] == "m.room.member").count();
    (joined, member_events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invites_and_joins_racing_into_one_room_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |c| c.rate_limits.enabled = false).await;
    let api = Api::new(&node);
    let owner = api.user(&node, "owner").await;
    let room = api.create_room(&owner, json!({ "preset": "private_chat" })).await;
    const N: usize = 16;
    let mut tokens = Vec::new();
    for i in 0..N {
        tokens.push(api.user(&node, &format!("u{i}")).await);
    }
    // Every invite at once, then every join at once.
    let invites = (0..N).map(|i| {
        let (api, owner, room) = (&api, &owner, &room);
        async move {
            let body = json!({ "user_id": format!("@u{i}:tocsin.test") });
            api.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(room)), Some(owner), &body).await
        }
    });
    for (i, (status, body)) in futures_util::future::join_all(invites).await.into_iter().enumerate() {
        assert_eq!(status, 200, "invite {i}: {body}");
    }
    let joins = tokens.iter().map(|token| {
        let (api, room) = (&api, &room);
        async move { api.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room)), Some(token), &json!({})).await }
    });
    for (i, (status, body)) in futures_util::future::join_all(joins).await.into_iter().enumerate() {
        assert_eq!(status, 200, "join {i}: {body}");
    }
    let (joined, member_events) = members(&api, &room, &owner).await;
    assert_eq!(joined.len(), N + 1, "everyone is joined: {joined:?}");
    assert_eq!(member_events, N + 1, "one member event per user in the state");
    // The room still works for each of them.
    let (status, body) = api.send_text(&room, &tokens[N - 1], "t", "in").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_changes_racing_in_one_room_each_land_in_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |c| c.rate_limits.enabled = false).await;
    let api = Api::new(&node);
    let owner = api.user(&node, "owner").await;
    let room = api.create_room(&owner, json!({ "preset": "private_chat" })).await;
    const N: usize = 24;
    // Distinct state keys of one custom type, plus the topic, all at once.
    let puts = (0..N).map(|i| {
        let (api, owner, room) = (&api, &owner, &room);
        async move {
            let path = format!("/_matrix/client/v3/rooms/{}/state/org.example.sector/s{i}", enc(room));
            api.put(&path, Some(owner), &json!({ "n": i })).await
        }
    });
    let topics = (0..N).map(|i| {
        let (api, owner, room) = (&api, &owner, &room);
        async move {
            let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(room));
            api.put(&path, Some(owner), &json!({ "topic": format!("topic {i}") })).await
        }
    });
    let (puts, topics) = tokio::join!(futures_util::future::join_all(puts), futures_util::future::join_all(topics));
    let mut topic_events = Vec::new();
    for (i, (status, body)) in puts.into_iter().chain(topics).enumerate() {
        assert_eq!(status, 200, "state put {i}: {body}");
        topic_events.push(body["event_id"].as_str().expect("event_id").to_owned());
    }
    let state = api.state(&room, &owner).await;
    let sectors = state.iter().filter(|e| e["type"] == "org.example.sector").count();
    assert_eq!(sectors, N, "every state key landed");
    // The current topic is one of the topics sent, and the timeline's last topic agrees.
    let current = state.iter().find(|e| e["type"] == "m.room.topic").expect("a topic");
    let timeline = api.messages(&room, &owner).await;
    let last_topic = timeline.iter().find(|e| e["type"] == "m.room.topic").expect("topics in the timeline");
    assert_eq!(current["event_id"], last_topic["event_id"], "the state is the last topic in the timeline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_user_logging_in_many_times_at_once_gets_distinct_working_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |c| c.rate_limits.enabled = false).await;
    let api = Api::new(&node);
    common::add_user(&node, "alice", crate::fed::PASSWORD).await;
    let logins = (0..12).map(|_| api.login("alice"));
    let tokens = futures_util::future::join_all(logins).await;
    let mut devices = Vec::new();
    for token in &tokens {
        let (status, body) = api.get("/_matrix/client/v3/account/whoami", Some(token)).await;
        assert_eq!(status, 200, "every session works: {body}");
        devices.push(body["device_id"].as_str().expect("device_id").to_owned());
    }
    devices.sort();
    devices.dedup();
    assert_eq!(devices.len(), tokens.len(), "one device per login");
    let (status, body) = api.get("/_matrix/client/v3/devices", Some(&tokens[0])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["devices"].as_array().map(Vec::len), Some(tokens.len()), "all devices listed: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_racing_for_one_devices_keys_never_get_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |c| c.rate_limits.enabled = false).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let (status, me) = api.get("/_matrix/client/v3/account/whoami", Some(&alice)).await;
    assert_eq!(status, 200, "{me}");
    let (alice_id, device) = (me["user_id"].as_str().unwrap().to_owned(), me["device_id"].as_str().unwrap().to_owned());
    let keys: serde_json::Map<String, serde_json::Value> =
        (0..20).map(|i| (format!("signed_curve25519:K{i:02}"), json!({ "key": format!("key{i}") }))).collect();
    let (status, body) =
        api.post("/_matrix/client/v3/keys/upload", Some(&alice), &json!({ "one_time_keys": keys })).await;
    assert_eq!(status, 200, "{body}");

    let bob = api.user(&node, "bob").await;
    let request = json!({ "one_time_keys": { &alice_id: { &device: "signed_curve25519" } } });
    let claims = (0..40).map(|_| api.post("/_matrix/client/v3/keys/claim", Some(&bob), &request));
    let mut claimed = Vec::new();
    for (status, body) in futures_util::future::join_all(claims).await {
        assert_eq!(status, 200, "{body}");
        if let Some(keys) = body["one_time_keys"][&alice_id][&device].as_object() {
            claimed.extend(keys.keys().cloned());
        }
    }
    claimed.sort();
    let mut distinct = claimed.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), claimed.len(), "a key was handed out twice: {claimed:?}");
    assert_eq!(claimed.len(), 20, "every uploaded key claimed once: {claimed:?}");
}
