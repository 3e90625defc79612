//! Spaces from a stock client: a city's space lists its own rooms and a county room held by
//! another node (`/hierarchy`, walked over federation), hides the rooms a viewer may not see,
//! pages, and previews rooms before joining (`/room_summary`).

use matrix_sdk::{
    Client,
    ruma::{
        OwnedRoomId, RoomId,
        api::client::{
            room::{
                create_room::v3::{CreationContent, Request as CreateRoom, RoomPreset},
                get_summary,
            },
            space::get_hierarchy,
        },
        room::RoomType,
        serde::Raw,
    },
};
use serde_json::json;

use crate::{
    api::enc,
    fed::{two_nodes, user_on},
};

async fn room(client: &Client, name: &str, preset: RoomPreset, space: bool) -> OwnedRoomId {
    let mut request = CreateRoom::new();
    request.name = Some(name.to_owned());
    request.preset = Some(preset);
    if space {
        let mut creation = CreationContent::new();
        creation.room_type = Some(RoomType::Space);
        request.creation_content = Some(Raw::new(&creation).unwrap());
    }
    client.create_room(request).await.expect("room created").room_id().to_owned()
}

async fn add_child(client: &Client, space: &RoomId, child: &RoomId, via: &str, suggested: bool, order: &str) {
    let room = client.get_room(space).expect("the space is known");
    let content = json!({ "via": [via], "suggested": suggested, "order": order });
    room.send_state_event_raw("m.space.child", child.as_str(), content).await.expect("child added");
}

fn names(response: &get_hierarchy::v1::Response) -> Vec<String> {
    response.rooms.iter().map(|r| r.summary.name.clone().unwrap_or_default()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_lists_local_and_remote_rooms_a_viewer_may_see() {
    let (_dir, city, county) = two_nodes("city.test", "county.test").await;
    let alice = user_on(&city, "alice").await;
    let bob = user_on(&county, "bob").await;
    let carol = user_on(&city, "carol").await;

    let space = room(&alice, "Flood 2026", RoomPreset::PublicChat, true).await;
    let desk = room(&alice, "Flood desk", RoomPreset::PublicChat, false).await;
    let secret = room(&alice, "Command staff", RoomPreset::PrivateChat, false).await;
    let county_ops = room(&bob, "County ops", RoomPreset::PublicChat, false).await;
    // Listed in `order`, whatever the order they were added in.
    add_child(&alice, &space, &county_ops, "county.test", false, "c").await;
    add_child(&alice, &space, &desk, "city.test", true, "a").await;
    add_child(&alice, &space, &secret, "city.test", false, "b").await;

    // Carol is in none of these rooms: she sees the space, the public desk and the county's room
    // (asked of county.test over federation), but not the private room.
    let all = carol.send(get_hierarchy::v1::Request::new(space.clone())).await.expect("hierarchy");
    assert_eq!(names(&all), ["Flood 2026", "Flood desk", "County ops"]);
    assert_eq!(all.rooms[0].children_state.len(), 3, "the space's children, as state");
    assert_eq!(all.rooms[0].summary.room_type, Some(RoomType::Space));
    assert_eq!(all.rooms[2].summary.num_joined_members, 1u32.into());
    assert!(all.next_batch.is_none());
    // Alice is in the private room, so she sees it too.
    let alices = alice.send(get_hierarchy::v1::Request::new(space.clone())).await.unwrap();
    assert_eq!(names(&alices), ["Flood 2026", "Flood desk", "Command staff", "County ops"]);

    // Pages of one, following next_batch, give the same walk.
    let mut paged = Vec::new();
    let mut from = None;
    loop {
        let mut request = get_hierarchy::v1::Request::new(space.clone());
        request.limit = Some(1u32.into());
        request.from = from.take();
        let page = carol.send(request).await.unwrap();
        paged.extend(names(&page));
        match page.next_batch {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, names(&all));

    // Suggested only: the space and its suggested child.
    let mut suggested = get_hierarchy::v1::Request::new(space.clone());
    suggested.suggested_only = true;
    assert_eq!(names(&carol.send(suggested).await.unwrap()), ["Flood 2026", "Flood desk"]);
    // Depth 0: the space alone.
    let mut shallow = get_hierarchy::v1::Request::new(space.clone());
    shallow.max_depth = Some(0u32.into());
    assert_eq!(names(&carol.send(shallow).await.unwrap()), ["Flood 2026"]);

    // A private room is not a space carol may walk.
    let err = carol.send(get_hierarchy::v1::Request::new(secret.clone())).await.expect_err("refused");
    assert_eq!(err.as_client_api_error().map(|e| e.status_code.as_u16()), Some(403));

    // Room previews: a local public room, the county's room over federation, the private room
    // hidden from carol and shown to its member with her membership.
    let preview = carol.send(get_summary::v1::Request::new(desk.clone().into(), vec![])).await.unwrap();
    assert_eq!(preview.summary.name.as_deref(), Some("Flood desk"));
    assert!(preview.membership.is_none());
    let remote = carol
        .send(get_summary::v1::Request::new(county_ops.clone().into(), vec!["county.test".try_into().unwrap()]))
        .await
        .expect("summary over federation");
    assert_eq!(remote.summary.name.as_deref(), Some("County ops"));
    let err = carol.send(get_summary::v1::Request::new(secret.clone().into(), vec![])).await.expect_err("hidden");
    assert_eq!(err.as_client_api_error().map(|e| e.status_code.as_u16()), Some(404));
    let own = alice.send(get_summary::v1::Request::new(secret.clone().into(), vec![])).await.unwrap();
    assert_eq!(own.membership.map(|m| m.to_string()).as_deref(), Some("join"));

    // Without a token: public rooms only.
    let url = |room: &RoomId| format!("{}/_matrix/client/v1/room_summary/{}", city.base_url(), enc(room.as_str()));
    let open = reqwest::get(url(&desk)).await.unwrap();
    assert_eq!(open.status(), 200);
    let body: serde_json::Value = open.json().await.unwrap();
    assert_eq!(body["name"], "Flood desk");
    assert_eq!(reqwest::get(url(&secret)).await.unwrap().status(), 404);

    city.shutdown().await;
    county.shutdown().await;
}
