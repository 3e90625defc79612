//! A member reports a message, a room and a user from a stock client; the node's admins see the
//! reports in the admin API and in the admin room; someone outside the room cannot report (or
//! learn about) its events.

use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use serde_json::Value;

use crate::{
    api::{Api, enc},
    common::{eventually, start, user},
};

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

    // An admin exists before the reports, so the admin room invites them with the first one.
    let users = &node.services.users;
    let root = users.create_account("root", None, None, true).await.unwrap();
    let (admin_token, _) = users.login_device(&root, None, None).await.unwrap();

    let bobs_room = eventually(&bob, 10, || async { bob.get_room(room.room_id()) }).await;
    bobs_room.report_content(sent.clone(), Some("spam in the flood room".into())).await.expect("bob reports");
    bobs_room.report_room("the whole room is a scam".into()).await.expect("bob reports the room");
    let api = Api::new(&node);
    let bob_token = bob.access_token().unwrap();
    let (status, body) = api
        .post(
            "/_matrix/client/v3/users/%40mallory%3Atocsin.test/report",
            Some(&bob_token),
            &serde_json::json!({"reason": "impersonates the fire chief"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Unknown rooms and local users are 404 and store nothing.
    let (status, body) = api
        .post(
            &format!("/_matrix/client/v3/rooms/{}/report", enc("!nosuchroom:tocsin.test")),
            Some(&bob_token),
            &serde_json::json!({"reason": "x"}),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let (status, body) = api
        .post(
            "/_matrix/client/v3/users/%40nobody%3Atocsin.test/report",
            Some(&bob_token),
            &serde_json::json!({"reason": "x"}),
        )
        .await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");

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

    // The admins' list has bob's three reports, and only them.
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
    assert_eq!(reports.len(), 3, "{list}");
    assert_eq!(reports[0]["kind"], "event");
    assert_eq!(reports[0]["event_id"], sent.as_str());
    assert_eq!(reports[0]["reporter"], "@bob:tocsin.test");
    assert_eq!(reports[0]["sender"], "@alice:tocsin.test");
    assert_eq!(reports[0]["reason"], "spam in the flood room");
    assert_eq!((&reports[1]["kind"], &reports[1]["room_id"]), (&"room".into(), &room.room_id().as_str().into()));
    assert_eq!((&reports[2]["kind"], &reports[2]["user_id"]), (&"user".into(), &"@mallory:tocsin.test".into()));

    // The admin was invited to the admin room, and each report is a notice there.
    let (status, body) = api
        .post(
            &format!("/_matrix/client/v3/join/{}", enc("#tocsin-admin:tocsin.test")),
            Some(&admin_token),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let admin_room = body["room_id"].as_str().unwrap().to_owned();
    let notices: Vec<String> = api
        .messages(&admin_room, &admin_token)
        .await
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .filter(|b| b.starts_with("Report from @bob:tocsin.test"))
        .collect();
    assert_eq!(notices.len(), 3, "{notices:?}");
    assert!(notices.iter().any(|n| n.contains(sent.as_str()) && n.contains("spam in the flood room")), "{notices:?}");
    assert!(notices.iter().any(|n| n.contains("user @mallory:tocsin.test")), "{notices:?}");
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
