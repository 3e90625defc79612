//! Races a busy node must survive: one user creating many rooms at once.

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
