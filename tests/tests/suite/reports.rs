//! A member reports a message from a stock client; the node's admins see the report; someone
//! outside the room cannot report (or learn about) its events.

use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use serde_json::Value;

use crate::common::{eventually, start, user};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reports_a_message_and_the_admins_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let mallory = user(&node, "mallory").await;
    let room = alice.create_room(Default::default()).await.unwrap();
    room.invite_user_by_id(bob.user_id().unwrap()).await.unwrap();
    eventually(&bob, 10, || async { bob.get_room(room.room_id()).map(|_| ()) }).await;
    bob.join_room_by_id(room.room_id()).await.unwrap();
    let sent = room.send(RoomMessageEventContent::text_plain("buy cheap sandbags")).await.unwrap().response.event_id;

    let bobs_room = eventually(&bob, 10, || async { bob.get_room(room.room_id()) }).await;
    bobs_room.report_content(sent.clone(), Some("spam in the flood room".into())).await.expect("bob reports");

    // Someone outside the room gets 404, as for an event that does not exist.
    let url = format!(
        "{}/_matrix/client/v3/rooms/{}/report/{}",
        node.base_url(),
        percent_encoding::utf8_percent_encode(room.room_id().as_str(), percent_encoding::NON_ALPHANUMERIC),
        percent_encoding::utf8_percent_encode(sent.as_str(), percent_encoding::NON_ALPHANUMERIC),
    );
    let token = mallory.access_token().unwrap();
    let status = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({"reason": "probing"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);

    // The admins' list has bob's report, and only it.
    let users = &node.services.users;
    let root = users.create_account("root", None, None, true).await.unwrap();
    let (admin_token, _) = users.login_device(&root, None, None).await.unwrap();
    let list: Value = reqwest::Client::new()
        .get(format!("{}/_tocsin/admin/reports", node.base_url()))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reports = list["reports"].as_array().expect("a list");
    assert_eq!(reports.len(), 1, "{list}");
    assert_eq!(reports[0]["event_id"], sent.as_str());
    assert_eq!(reports[0]["reporter"], "@bob:tocsin.test");
    assert_eq!(reports[0]["sender"], "@alice:tocsin.test");
    assert_eq!(reports[0]["reason"], "spam in the flood room");
    // Not for plain users.
    let status = reqwest::Client::new()
        .get(format!("{}/_tocsin/admin/reports", node.base_url()))
        .bearer_auth(bob.access_token().unwrap())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);
    node.shutdown().await;
}
