//! Places where the node once answered differently from the Client-Server spec's definitions,
//! each checked over raw HTTP the way a strict client or a schema checker sees it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    api::{Api, enc},
    common::start,
};

#[tokio::test]
async fn answers_follow_the_spec_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;

    // Unset device fields are left out, never `null` (the spec types them as strings).
    let (status, body) = api.get("/_matrix/client/v3/devices", Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    let devices = body["devices"].as_array().expect("devices");
    assert!(!devices.is_empty());
    for device in devices.iter().chain([&api
        .get(&format!("/_matrix/client/v3/devices/{}", devices[0]["device_id"].as_str().unwrap()), Some(&alice))
        .await
        .1])
    {
        let nulls: Vec<&String> =
            device.as_object().expect("an object").iter().filter(|(_, v)| v.is_null()).map(|(k, _)| k).collect();
        assert!(nulls.is_empty(), "null fields {nulls:?} in {device}");
    }

    // Account data is a JSON object; anything else is refused and nothing is stored.
    let path = "/_matrix/client/v3/user/%40alice%3Atocsin.test/account_data/org.example.settings";
    for bad in [json!([1, 2]), json!("text"), json!(7)] {
        let (status, body) = api.put(path, Some(&alice), &bad).await;
        assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{bad}: {body}");
    }
    let (status, body) = api.get(path, Some(&alice)).await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let (status, body) = api.put(path, Some(&alice), &json!({"theme": "dark"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.get(path, Some(&alice)).await.1, json!({"theme": "dark"}));

    // `visibility` is optional when publishing a room (it defaults to public).
    let room = api.create_room(&alice, json!({})).await;
    let (status, body) =
        api.put(&format!("/_matrix/client/v3/directory/list/room/{}", enc(&room)), Some(&alice), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = api.get(&format!("/_matrix/client/v3/directory/list/room/{}", enc(&room)), None).await;
    assert_eq!(body["visibility"], "public");

    // The auth scheme is case-insensitive.
    let url = format!("{}/_matrix/client/v3/account/whoami", node.base_url());
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let reply =
            reqwest::Client::new().get(&url).header("authorization", format!("{scheme} {alice}")).send().await.unwrap();
        assert_eq!(reply.status(), 200, "scheme {scheme}");
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["user_id"], "@alice:tocsin.test");
    }

    // Bad query and path values are M_INVALID_PARAM; a bad body stays M_BAD_JSON.
    let messages = format!("/_matrix/client/v3/rooms/{}/messages", enc(&room));
    for (path, what) in [
        (format!("{messages}?dir=b&limit=many"), "a limit that is not a number"),
        (format!("{messages}?dir=sideways"), "an unknown direction"),
        ("/_matrix/client/v3/rooms/not-a-room-id/messages?dir=b".to_owned(), "a room id without its sigil"),
        ("/_matrix/client/v3/profile/not-a-user-id".to_owned(), "a user id without its sigil"),
    ] {
        let (status, body) = api.get(&path, Some(&alice)).await;
        assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{what}: {body}");
    }
    let (status, body) =
        api.call(Method::POST, "/_matrix/client/v3/createRoom", Some(&alice), Some(r#"{"preset": 7}"#.into())).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");

    api.assert_serving().await;
    node.shutdown().await;
}
