//! The sliding sync `spaces` list filter (MSC4186): a list filtered by a space holds only the
//! space's children (not its subspaces' children, not the rooms of a space the user is not in),
//! with counts that follow children being added and removed.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::{
    api::{Api, enc},
    common,
};

const SLIDING_SYNC: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

fn room_ids(response: &Value) -> BTreeSet<String> {
    response["rooms"].as_object().map(|rooms| rooms.keys().cloned().collect()).unwrap_or_default()
}

fn set(rooms: &[&String]) -> BTreeSet<String> {
    rooms.iter().map(|r| (*r).clone()).collect()
}

async fn link(api: &Api, token: &str, space: &str, child: &str, linked: bool) {
    let content = if linked { json!({ "via": ["tocsin.test"] }) } else { json!({}) };
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(space), enc(child));
    let (status, body) = api.put(&path, Some(token), &content).await;
    assert_eq!(status, 200, "m.space.child: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_filtered_by_a_space_holds_only_its_children() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = common::start(dir.path(), |c| c.rate_limits.enabled = false).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let bob = api.user(&node, "bob").await;
    let space = json!({ "creation_content": { "type": "m.space" } });
    let county = api.create_room(&alice, space.clone()).await;
    let district = api.create_room(&alice, space.clone()).await;
    let (floods, shelters, press, sandbags) = (
        api.create_room(&alice, json!({ "name": "Floods" })).await,
        api.create_room(&alice, json!({ "name": "Shelters" })).await,
        api.create_room(&alice, json!({ "name": "Press" })).await,
        api.create_room(&alice, json!({ "name": "Sandbags" })).await,
    );
    link(&api, &alice, &county, &floods, true).await;
    link(&api, &alice, &county, &shelters, true).await;
    link(&api, &alice, &county, &district, true).await;
    // A subspace's child is not the space's child.
    link(&api, &alice, &district, &sandbags, true).await;
    // Bob's space, which alice is not in, names alice's press room.
    let bobs = api.create_room(&bob, space).await;
    link(&api, &bob, &bobs, &press, true).await;

    let list = |filters: Value| json!({ "ranges": [[0, 49]], "timeline_limit": 1, "filters": filters });
    let request = |pos: Option<&str>, lists: Value| {
        let path = match pos {
            Some(pos) => format!("{SLIDING_SYNC}?pos={pos}&timeout=0"),
            None => SLIDING_SYNC.to_owned(),
        };
        (path, json!({ "conn_id": "spaces", "lists": lists }))
    };

    // Every list on its own connection, so `rooms` is that list's window.
    let only = |filters: Value| alone(&api, &alice, filters);
    assert_eq!(only(json!({})).await.0, 6, "alice is in six rooms");
    assert_eq!(
        only(json!({ "spaces": [county] })).await,
        (3, set(&[&floods, &shelters, &district])),
        "the county space's children, its subspace included, not the subspace's children"
    );
    assert_eq!(only(json!({ "spaces": [district] })).await, (1, set(&[&sandbags])));
    assert_eq!(
        only(json!({ "spaces": [county], "not_room_types": ["m.space"] })).await,
        (2, set(&[&floods, &shelters])),
        "with other filters: both must pass"
    );
    assert_eq!(
        only(json!({ "spaces": [county, district], "not_room_types": ["m.space"] })).await,
        (3, set(&[&floods, &shelters, &sandbags])),
        "several spaces: a child of any"
    );
    assert_eq!(only(json!({ "spaces": [bobs] })).await, (0, BTreeSet::new()), "a space alice is not in");

    // One connection with the filtered list and a list of DMs (alice has none), followed as the
    // space changes.
    let lists = json!({ "county": list(json!({ "spaces": [county] })), "dms": list(json!({ "is_dm": true })) });
    let (path, body) = request(None, lists.clone());
    let (status, first) = api.post(&path, Some(&alice), &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (first["lists"]["county"]["count"].as_u64(), first["lists"]["dms"]["count"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(room_ids(&first), set(&[&floods, &shelters, &district]));

    // Press joins the space: the filtered list counts it, and the connection is sent the room.
    link(&api, &alice, &county, &press, true).await;
    let (path, body) = request(first["pos"].as_str(), lists.clone());
    let (status, second) = api.post(&path, Some(&alice), &body).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["lists"]["county"]["count"], 4, "{second}");
    assert_eq!(second["lists"]["dms"]["count"], 0, "{second}");
    assert!(room_ids(&second).contains(&press), "the new child is sent: {second}");

    // Shelters leaves it.
    link(&api, &alice, &county, &shelters, false).await;
    let (path, body) = request(second["pos"].as_str(), lists);
    let (status, third) = api.post(&path, Some(&alice), &body).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["lists"]["county"]["count"], 3, "{third}");
    assert_eq!(third["lists"]["dms"]["count"], 0, "{third}");

    // A room id that is not one is refused.
    let (status, reply) =
        api.post(SLIDING_SYNC, Some(&alice), &json!({ "lists": { "x": list(json!({ "spaces": ["nope"] })) } })).await;
    assert_eq!((status, reply["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{reply}");
    node.shutdown().await;
}

/// A list with `filters`, alone on a new connection: its count and its window's rooms.
async fn alone(api: &Api, token: &str, filters: Value) -> (u64, BTreeSet<String>) {
    static CONNECTIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let conn_id = format!("alone-{}", CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let body = json!({
        "conn_id": conn_id,
        "lists": { "only": { "ranges": [[0, 49]], "timeline_limit": 1, "filters": filters } },
    });
    let (status, reply) = api.post(SLIDING_SYNC, Some(token), &body).await;
    assert_eq!(status, 200, "{reply}");
    (reply["lists"]["only"]["count"].as_u64().expect("a count"), room_ids(&reply))
}
