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

/// What the conformance run (tests/conformance) found, each checked where a client sees it.
#[tokio::test]
async fn endpoints_the_conformance_run_found_missing_or_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let bob = api.user(&node, "bob").await;
    let room = api.create_room(&alice, json!({})).await;

    // `{"typing": true}` without a timeout is valid (only `typing` is required) and shows.
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/%40alice%3Atocsin.test", enc(&room));
    let (status, body) = api.put(&typing, Some(&alice), &json!({"typing": true})).await;
    assert_eq!(status, 200, "{body}");
    let (_, sync) = api.get("/_matrix/client/v3/sync?timeout=0", Some(&alice)).await;
    let ephemeral = &sync["rooms"]["join"][&room]["ephemeral"]["events"];
    assert!(
        ephemeral.as_array().is_some_and(|events| events
            .iter()
            .any(|e| e["type"] == "m.typing" && e["content"]["user_ids"] == json!(["@alice:tocsin.test"]))),
        "alice shows as typing: {ephemeral}"
    );

    // whois: a user's own sessions, without `null` fields; another user's only for an admin.
    let (status, body) = api.get("/_matrix/client/v3/admin/whois/%40alice%3Atocsin.test", Some(&alice)).await;
    assert_eq!((status, &body["user_id"]), (200, &json!("@alice:tocsin.test")), "{body}");
    let devices = body["devices"].as_object().expect("devices");
    assert!(!devices.is_empty(), "{body}");
    assert!(!body.to_string().contains("null"), "no null fields: {body}");
    let (status, body) = api.get("/_matrix/client/v3/admin/whois/%40alice%3Atocsin.test", Some(&bob)).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // The global push rules under their own path (with the trailing slash), as under /pushrules/.
    let (status, global) = api.get("/_matrix/client/v3/pushrules/global/", Some(&alice)).await;
    assert_eq!(status, 200, "{global}");
    let (_, all) = api.get("/_matrix/client/v3/pushrules/", Some(&alice)).await;
    assert_eq!(global, all["global"]);

    // No application services: no third-party protocols, no ping, no network directory.
    let (status, body) = api.get("/_matrix/client/v3/thirdparty/protocols", Some(&alice)).await;
    assert_eq!((status, &body), (200, &json!({})));
    let (status, body) = api.post("/_matrix/client/v1/appservice/irc/ping", Some(&alice), &json!({})).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    let path = format!("/_matrix/client/v3/directory/list/appservice/irc/{}", enc(&room));
    let (status, body) = api.put(&path, Some(&alice), &json!({"visibility": "public"})).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    api.assert_serving().await;
    node.shutdown().await;
}
