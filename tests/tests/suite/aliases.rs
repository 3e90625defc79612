//! Room aliases across nodes: a user types `#room:other-node`, and their node resolves it
//! through the other node's directory query and joins through the servers it names.

use serde_json::json;

use crate::{
    api::{Api, enc},
    fed,
};

const A: &str = "riverton.test";
const B: &str = "lakeside.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alias_on_another_node_resolves_and_joins() {
    let (_dir, a, b) = fed::two_nodes(A, B).await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let alice = api_a.user(&a, "alice").await;
    let bob = api_b.user(&b, "bob").await;
    let room = api_a
        .create_room(&alice, json!({ "preset": "public_chat", "room_alias_name": "sandbags", "name": "Sandbags" }))
        .await;
    let alias = format!("#sandbags:{A}");

    let (status, body) = api_b.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), Some(&bob)).await;
    assert_eq!(status, 200, "bob's node resolves {alias} through {A}: {body}");
    assert_eq!(body["room_id"], room.as_str());
    assert!(body["servers"].as_array().is_some_and(|s| s.iter().any(|s| s == A)), "servers name {A}: {body}");

    let (status, body) = api_b.post(&format!("/_matrix/client/v3/join/{}", enc(&alias)), Some(&bob), &json!({})).await;
    assert_eq!(status, 200, "bob joins by the alias: {body}");
    assert_eq!(body["room_id"], room.as_str());
    let (status, members) =
        api_a.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)), Some(&alice)).await;
    assert_eq!(status, 200);
    assert!(members["joined"].get(format!("@bob:{B}")).is_some(), "alice's node sees bob joined: {members}");

    let (status, body) =
        api_b.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&format!("#nothing:{A}"))), Some(&bob)).await;
    assert_eq!(status, 404, "an unknown remote alias is 404: {body}");
}
