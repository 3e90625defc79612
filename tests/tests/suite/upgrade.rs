//! Room upgrade: a moderator moves a room to a new version; the new room keeps the old one's
//! settings and alias, the old room points to it and goes quiet, members follow.

use serde_json::json;

use crate::{
    api::{Api, enc},
    common::start,
};

#[tokio::test]
async fn a_moderator_upgrades_a_room_and_members_follow() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let bob = api.user(&node, "bob").await;
    let old = api
        .create_room(
            &alice,
            json!({
                "room_version": "11", "preset": "public_chat", "visibility": "public", "room_alias_name": "flood",
                "name": "Flood desk", "topic": "Levels and sandbags",
            }),
        )
        .await;
    let (status, body) = api.post(&format!("/_matrix/client/v3/join/{}", enc(&old)), Some(&bob), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let upgrade = format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old));

    // Bob may not; an unknown version is refused; neither leaves anything behind.
    let (status, body) = api.post(&upgrade, Some(&bob), &json!({ "new_version": "12" })).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    let (status, body) = api.post(&upgrade, Some(&alice), &json!({ "new_version": "99" })).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_UNSUPPORTED_ROOM_VERSION")), "{body}");

    let (status, body) = api.post(&upgrade, Some(&alice), &json!({ "new_version": "12" })).await;
    assert_eq!(status, 200, "{body}");
    let new = body["replacement_room"].as_str().expect("replacement_room").to_owned();
    assert_ne!(new, old);

    // The old room points to the new one.
    let state = |room: &str, kind: &str| format!("/_matrix/client/v3/rooms/{}/state/{kind}/", enc(room));
    let (status, tombstone) = api.get(&state(&old, "m.room.tombstone"), Some(&bob)).await;
    assert_eq!(status, 200, "{tombstone}");
    assert_eq!(tombstone["replacement_room"], new.as_str());
    // The new room names its predecessor, has the new version and the old settings.
    let (_, create) = api.get(&state(&new, "m.room.create"), Some(&alice)).await;
    assert_eq!(create["predecessor"]["room_id"], old.as_str());
    assert_eq!(create["room_version"], "12");
    assert_eq!(api.get(&state(&new, "m.room.name"), Some(&alice)).await.1["name"], "Flood desk");
    assert_eq!(api.get(&state(&new, "m.room.topic"), Some(&alice)).await.1["topic"], "Levels and sandbags");
    assert_eq!(api.get(&state(&new, "m.room.join_rules"), Some(&alice)).await.1["join_rule"], "public");
    // The alias and the directory entry moved.
    let (_, alias) = api.get("/_matrix/client/v3/directory/room/%23flood%3Atocsin.test", None).await;
    assert_eq!(alias["room_id"], new.as_str());
    let (_, directory) = api.get("/_matrix/client/v3/publicRooms", None).await;
    let listed: Vec<&str> =
        directory["chunk"].as_array().unwrap().iter().filter_map(|r| r["room_id"].as_str()).collect();
    assert_eq!(listed, [new.as_str()]);

    // The old room is quiet for ordinary members; bob follows the tombstone and talks there.
    let (status, body) = api.send_text(&old, &bob, "t1", "still here?").await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    let (status, body) = api.post(&format!("/_matrix/client/v3/join/{}", enc(&new)), Some(&bob), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.send_text(&new, &bob, "t2", "here now").await;
    assert_eq!(status, 200, "{body}");

    // From v12, where alice is a creator without a number, to v11: she keeps full power there.
    let upgrade = format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&new));
    let (status, body) = api.post(&upgrade, Some(&alice), &json!({ "new_version": "11" })).await;
    assert_eq!(status, 200, "{body}");
    let third = body["replacement_room"].as_str().unwrap().to_owned();
    let (_, power) = api.get(&state(&third, "m.room.power_levels"), Some(&alice)).await;
    assert_eq!(power["users"]["@alice:tocsin.test"], 100, "{power}");
    let (status, body) = api.put(&state(&third, "m.room.topic"), Some(&alice), &json!({ "topic": "v11 again" })).await;
    assert_eq!(status, 200, "{body}");
    node.shutdown().await;
}
