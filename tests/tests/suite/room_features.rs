//! Features around rooms that a user sees in a client: media, aliases, profile changes, typing
//! and read receipts.

use crate::common;

use std::time::Duration;

use common::{eventually, start, sync, user};
use matrix_sdk::ruma::{
    OwnedRoomOrAliasId, api::client::room::create_room::v3::Request as CreateRoom,
    events::room::message::RoomMessageEventContent,
};

#[tokio::test]
async fn media_upload_and_download_over_v1_and_legacy() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.max_upload_bytes = 1024 * 1024).await;
    let alice = user(&node, "alice").await;
    let token = alice.access_token().unwrap();
    let http = reqwest::Client::new();
    let base = node.base_url();
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();

    let upload: serde_json::Value = http
        .post(format!("{base}/_matrix/media/v3/upload?filename=map.png"))
        .bearer_auth(&token)
        .header("content-type", "image/png")
        .body(bytes.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uri = upload["content_uri"].as_str().expect("content_uri").to_owned();
    let path = uri.strip_prefix("mxc://").unwrap();

    let v1 =
        http.get(format!("{base}/_matrix/client/v1/media/download/{path}")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(v1.status(), 200);
    assert_eq!(v1.headers()["content-type"], "image/png");
    assert_eq!(v1.bytes().await.unwrap().to_vec(), bytes);

    let unauthenticated = http.get(format!("{base}/_matrix/client/v1/media/download/{path}")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401, "v1 media needs a token");

    let legacy = http.get(format!("{base}/_matrix/media/v3/download/{path}")).send().await.unwrap();
    assert_eq!(legacy.status(), 200);
    assert_eq!(legacy.bytes().await.unwrap().len(), bytes.len());

    let too_big = http
        .post(format!("{base}/_matrix/media/v3/upload"))
        .bearer_auth(&token)
        .body(vec![0u8; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    let body: serde_json::Value = too_big.json().await.unwrap();
    assert_eq!(body["errcode"], "M_TOO_LARGE");

    let missing = http
        .get(format!("{base}/_matrix/client/v1/media/download/{}/nope", node.server_name))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    node.shutdown().await;
}

#[tokio::test]
async fn join_by_alias_see_profile_typing_and_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;

    let mut request = CreateRoom::new();
    request.room_alias_name = Some("flood-ops".into());
    request.preset = Some(matrix_sdk::ruma::api::client::room::create_room::v3::RoomPreset::PublicChat);
    let room = alice.create_room(request).await.unwrap();

    let alias: OwnedRoomOrAliasId = format!("#flood-ops:{}", node.server_name).try_into().unwrap();
    let bob_room = bob.join_room_by_id_or_alias(&alias, &[]).await.unwrap();
    assert_eq!(bob_room.room_id(), room.room_id());

    bob.account().set_display_name(Some("Bob (fire chief)")).await.unwrap();
    let name = eventually(&alice, 5, || async {
        let member = room.get_member(bob.user_id()?).await.ok()??;
        member.display_name().map(str::to_owned).filter(|n| n.contains("fire chief"))
    })
    .await;
    assert_eq!(name, "Bob (fire chief)");

    sync(&alice).await;
    let token =
        alice.sync_once(matrix_sdk::config::SyncSettings::default().timeout(Duration::ZERO)).await.unwrap().next_batch;
    bob_room.typing_notice(true).await.unwrap();
    let response = alice
        .sync_once(matrix_sdk::config::SyncSettings::default().token(token).timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    let ephemeral =
        &response.rooms.joined.get(room.room_id()).unwrap_or_else(|| panic!("room in sync: {response:?}")).ephemeral;
    let typing = ephemeral.iter().find_map(|e| {
        let v: serde_json::Value = e.deserialize_as().ok()?;
        (v["type"] == "m.typing").then(|| v["content"]["user_ids"].clone())
    });
    assert_eq!(typing, Some(serde_json::json!([bob.user_id().unwrap().to_string()])));

    let sent = room.send(RoomMessageEventContent::text_plain("levee holding")).await.unwrap().response.event_id;
    bob_room
        .send_single_receipt(
            matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType::Read,
            matrix_sdk::ruma::events::receipt::ReceiptThread::Unthreaded,
            sent.clone(),
        )
        .await
        .unwrap();
    eventually(&alice, 5, || async {
        let (event_id, _) = room
            .load_user_receipt(
                matrix_sdk::ruma::events::receipt::ReceiptType::Read,
                matrix_sdk::ruma::events::receipt::ReceiptThread::Unthreaded,
                bob.user_id()?,
            )
            .await
            .ok()??;
        (event_id == sent).then_some(())
    })
    .await;
    node.shutdown().await;
}
