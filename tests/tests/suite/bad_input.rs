//! Bad input over raw HTTP: every refusal must carry the spec's status and `errcode`, must store
//! nothing, and must leave the node serving.

use common::start;
use reqwest::Method;
use serde_json::json;

use crate::{
    api::{Api, Reply, enc, event_id},
    common,
};

#[track_caller]
fn assert_error(reply: &Reply, status: u16, errcode: &str, what: &str) {
    assert_eq!(reply.0, status, "{what}: status (body {})", reply.1);
    assert_eq!(reply.1["errcode"].as_str(), Some(errcode), "{what}: errcode (body {})", reply.1);
}

#[tokio::test]
async fn malformed_and_misshapen_json() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let create = "/_matrix/client/v3/createRoom";

    for body in ["{bad", "{\"name\": ", "not json at all", "{\"name\": \"x\"} trailing"] {
        let r = api.call(Method::POST, create, Some(&alice), Some(body.to_owned())).await;
        assert_error(&r, 400, "M_NOT_JSON", &format!("createRoom with body {body:?}"));
    }
    for body in [json!({ "name": 5 }), json!({ "preset": 7 }), json!({ "invite": "not a list" }), json!([1, 2])] {
        let r = api.post(create, Some(&alice), &body).await;
        assert_error(&r, 400, "M_BAD_JSON", &format!("createRoom with body {body}"));
    }
    let (status, joined) = api.get("/_matrix/client/v3/joined_rooms", Some(&alice)).await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["joined_rooms"], json!([]), "no refused createRoom made a room");

    // The same on an event send: nothing reaches the timeline.
    let room = api.create_room(&alice, json!({})).await;
    let before = api.snapshot(&room, &alice).await;
    let send = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", enc(&room));
    let r = api.call(Method::PUT, &send, Some(&alice), Some("{bad".to_owned())).await;
    assert_error(&r, 400, "M_NOT_JSON", "send with a malformed body");
    let r = api.put(&send, Some(&alice), &json!(["not", "an", "object"])).await;
    assert_error(&r, 400, "M_BAD_JSON", "send with an array as content");
    assert_eq!(api.snapshot(&room, &alice).await, before, "refused sends stored nothing");

    api.assert_serving().await;
    node.shutdown().await;
}

#[tokio::test]
async fn missing_and_unknown_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;

    let r = api.get("/_matrix/client/v3/account/whoami", None).await;
    assert_error(&r, 401, "M_MISSING_TOKEN", "whoami without a token");
    let r = api.post("/_matrix/client/v3/createRoom", None, &json!({})).await;
    assert_error(&r, 401, "M_MISSING_TOKEN", "createRoom without a token");

    let r = api.get("/_matrix/client/v3/account/whoami", Some("syt_no_such_token")).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN", "whoami with an unknown token");
    let r = api.post("/_matrix/client/v3/createRoom", Some("syt_no_such_token"), &json!({})).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN", "createRoom with an unknown token");
    let r = api.get("/_matrix/client/v3/account/whoami?access_token=syt_no_such_token", None).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN", "whoami with an unknown token in the query");

    let (status, body) = api.get("/_matrix/client/v3/account/whoami", Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@alice:tocsin.test");
    let (status, joined) = api.get("/_matrix/client/v3/joined_rooms", Some(&alice)).await;
    assert_eq!((status, &joined["joined_rooms"]), (200, &json!([])), "unauthenticated createRoom made no room");

    api.assert_serving().await;
    node.shutdown().await;
}

#[tokio::test]
async fn unknown_endpoints_are_unrecognized() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;

    for path in ["/_matrix/client/v3/no_such_thing", "/_matrix/no_such_api/v1/x", "/not_matrix/at/all", "/"] {
        let r = api.get(path, None).await;
        assert_error(&r, 404, "M_UNRECOGNIZED", &format!("GET {path}"));
        let r = api.get(path, Some(&alice)).await;
        assert_error(&r, 404, "M_UNRECOGNIZED", &format!("GET {path} with a token"));
    }
    let r = api.post("/_matrix/client/v3/no_such_thing", Some(&alice), &json!({})).await;
    assert_error(&r, 404, "M_UNRECOGNIZED", "POST to an unknown endpoint");

    // A known path with a method it does not take: 405, still with a Matrix error body.
    let r = api.call(Method::DELETE, "/_matrix/client/v3/createRoom", Some(&alice), None).await;
    assert_error(&r, 405, "M_UNRECOGNIZED", "DELETE /createRoom");
    let r = api.get("/_matrix/client/v3/createRoom", Some(&alice)).await;
    assert_error(&r, 405, "M_UNRECOGNIZED", "GET /createRoom");
    let r = api.put("/_matrix/client/versions", None, &json!({})).await;
    assert_error(&r, 405, "M_UNRECOGNIZED", "PUT /versions");

    // A path segment that decodes to invalid UTF-8 is a bad parameter, not a crash.
    let r = api.get("/_matrix/client/v3/rooms/%FF%FE/messages?dir=b", Some(&alice)).await;
    assert_error(&r, 400, "M_INVALID_PARAM", "a room id that is not UTF-8");

    // Known endpoints are not "unrecognized": an empty state key may come with or without the
    // trailing slash (the spec makes it optional).
    let room = api.create_room(&alice, json!({})).await;
    let state = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room));
    let (status, body) = api.put(&state, Some(&alice), &json!({ "topic": "no slash" })).await;
    assert_eq!(status, 200, "PUT state without the trailing slash: {body}");
    let (status, body) = api.get(&format!("{state}/"), Some(&alice)).await;
    assert_eq!((status, &body["topic"]), (200, &json!("no slash")), "{body}");
    let (status, body) = api.put(&format!("{state}/"), Some(&alice), &json!({ "topic": "slash" })).await;
    assert_eq!(status, 200, "PUT state with the trailing slash: {body}");
    let (status, body) = api.get(&state, Some(&alice)).await;
    assert_eq!((status, &body["topic"]), (200, &json!("slash")), "GET state without the trailing slash: {body}");

    api.assert_serving().await;
    node.shutdown().await;
}

#[tokio::test]
async fn oversized_events_are_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let room = api.create_room(&alice, json!({ "name": "Flood" })).await;
    let before = api.snapshot(&room, &alice).await;

    let big = "x".repeat(70 * 1024);
    let r = api.send_text(&room, &alice, "big1", &big).await;
    assert_error(&r, 413, "M_TOO_LARGE", "a ~70 KB message");
    let r = api
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room)),
            Some(&alice),
            &json!({ "topic": big }),
        )
        .await;
    assert_error(&r, 413, "M_TOO_LARGE", "a ~70 KB topic");

    // `type` and `state_key` are capped at 255 bytes each.
    let long = "t".repeat(256);
    let r = api
        .put(&format!("/_matrix/client/v3/rooms/{}/send/{long}/long-type", enc(&room)), Some(&alice), &json!({}))
        .await;
    assert_error(&r, 413, "M_TOO_LARGE", "a 256-byte event type");
    let r = api
        .put(&format!("/_matrix/client/v3/rooms/{}/state/org.example.x/{long}", enc(&room)), Some(&alice), &json!({}))
        .await;
    assert_error(&r, 413, "M_TOO_LARGE", "a 256-byte state key");

    assert_eq!(api.snapshot(&room, &alice).await, before, "the oversized events were not stored");
    let longest = api.messages(&room, &alice).await.iter().map(|e| e.to_string().len()).max().unwrap_or(0);
    assert!(longest < 65_536, "no stored event is oversized ({longest} bytes)");

    // The limit is the PDU's, not something much smaller: 60 KB of content still fits.
    let fits = "y".repeat(60 * 1024);
    let (status, body) = api.send_text(&room, &alice, "fits", &fits).await;
    assert_eq!(status, 200, "a 60 KB message fits: {body}");
    let chunk = api.messages(&room, &alice).await;
    assert_eq!(chunk.len(), before.1.len() + 1, "exactly the fitting message was added");
    assert_eq!(chunk[0]["content"]["body"].as_str().map(str::len), Some(fits.len()));

    api.assert_serving().await;
    node.shutdown().await;
}

#[tokio::test]
async fn forbidden_acts_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let bob = api.user(&node, "bob").await;
    let carol = api.user(&node, "carol").await;
    let mallory = api.user(&node, "mallory").await;
    let room = api.create_room(&alice, json!({ "name": "Crisis cell", "preset": "private_chat" })).await;
    api.invite_and_join(&room, &alice, "@bob:tocsin.test", &bob).await;
    api.invite_and_join(&room, &alice, "@carol:tocsin.test", &carol).await;
    let (status, body) = api.send_text(&room, &alice, "hello", "hello").await;
    assert_eq!(status, 200, "{body}");

    // The power levels these refusals rely on.
    let (status, power) =
        api.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room)), Some(&bob)).await;
    assert_eq!(status, 200, "{power}");
    assert_eq!(power["state_default"], 50, "{power}");
    assert!(power["users"].get("@bob:tocsin.test").is_none(), "bob has the default power 0: {power}");

    let base = format!("/_matrix/client/v3/rooms/{}", enc(&room));
    let mut expected = api.snapshot(&room, &alice).await;

    // A user who is not in the room sends a message.
    let r = api.send_text(&room, &mallory, "m1", "let me in").await;
    assert_error(&r, 403, "M_FORBIDDEN", "a non-member sends a message");
    assert_eq!(api.snapshot(&room, &alice).await, expected, "after a non-member's message");

    // A joined user with power 0 changes the power levels, the name, the topic.
    let mut grab = power.clone();
    grab["users"]["@bob:tocsin.test"] = json!(100);
    let r = api.put(&format!("{base}/state/m.room.power_levels/"), Some(&bob), &grab).await;
    assert_error(&r, 403, "M_FORBIDDEN", "power 0 raises itself to 100");
    assert_eq!(api.snapshot(&room, &alice).await, expected, "after the power grab");
    let r = api.put(&format!("{base}/state/m.room.name/"), Some(&bob), &json!({ "name": "Bob's room" })).await;
    assert_error(&r, 403, "M_FORBIDDEN", "power 0 renames the room");
    let r = api.put(&format!("{base}/state/m.room.topic/"), Some(&bob), &json!({ "topic": "mine" })).await;
    assert_error(&r, 403, "M_FORBIDDEN", "power 0 sets the topic");
    assert_eq!(api.snapshot(&room, &alice).await, expected, "after the renames");
    let (status, name) = api.get(&format!("{base}/state/m.room.name/"), Some(&alice)).await;
    assert_eq!((status, &name["name"]), (200, &json!("Crisis cell")), "the name is unchanged");

    // A non-member reads the timeline and the state.
    let r = api.get(&format!("{base}/messages?dir=b&limit=10"), Some(&mallory)).await;
    assert_error(&r, 403, "M_FORBIDDEN", "a non-member reads /messages");
    let r = api.get(&format!("{base}/state"), Some(&mallory)).await;
    assert_error(&r, 403, "M_FORBIDDEN", "a non-member reads /state");

    // A user without kick power kicks someone; and a non-member kicks someone.
    let r = api.post(&format!("{base}/kick"), Some(&bob), &json!({ "user_id": "@carol:tocsin.test" })).await;
    assert_error(&r, 403, "M_FORBIDDEN", "power 0 kicks a member");
    let r = api.post(&format!("{base}/kick"), Some(&mallory), &json!({ "user_id": "@carol:tocsin.test" })).await;
    assert_error(&r, 403, "M_FORBIDDEN", "a non-member kicks a member");
    let r = api.post(&format!("{base}/ban"), Some(&bob), &json!({ "user_id": "@carol:tocsin.test" })).await;
    assert_error(&r, 403, "M_FORBIDDEN", "power 0 bans a member");
    assert_eq!(api.snapshot(&room, &alice).await, expected, "after the kicks and the ban");
    let r = api.get(&format!("{base}/messages?dir=b&limit=10"), Some(&carol)).await;
    assert_eq!(r.0, 200, "carol is still in the room: {}", r.1);

    // A non-member joins a private (invite-only) room.
    let r = api.post(&format!("{base}/join"), Some(&mallory), &json!({})).await;
    assert_error(&r, 403, "M_FORBIDDEN", "a non-member joins an invite-only room");
    assert_eq!(api.snapshot(&room, &alice).await, expected, "after the refused join");

    // The room still works for those allowed: alice (power 100) may rename it.
    let r = api.put(&format!("{base}/state/m.room.name/"), Some(&alice), &json!({ "name": "Renamed" })).await;
    assert_eq!(r.0, 200, "the creator renames the room: {}", r.1);
    let after = api.snapshot(&room, &alice).await;
    assert_eq!(after.1.len(), expected.1.len() + 1, "exactly one event added");
    expected = after;
    assert_eq!(api.snapshot(&room, &bob).await.1, expected.1, "bob sees the same timeline");

    api.assert_serving().await;
    node.shutdown().await;
}

#[tokio::test]
async fn repeated_transaction_ids_store_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let room = api.create_room(&alice, json!({})).await;
    let before = api.messages(&room, &alice).await.len();

    let (s1, first) = api.send_text(&room, &alice, "txn-1", "once").await;
    let (s2, second) = api.send_text(&room, &alice, "txn-1", "once").await;
    assert_eq!((s1, s2), (200, 200), "{first} {second}");
    let id = first["event_id"].as_str().expect("event_id");
    assert_eq!(second["event_id"].as_str(), Some(id), "the retry returns the first event id");

    let chunk = api.messages(&room, &alice).await;
    assert_eq!(chunk.len(), before + 1, "only one event stored");
    assert_eq!(chunk.iter().filter(|e| e["content"]["body"] == "once").count(), 1);
    assert_eq!(chunk[0]["event_id"].as_str(), Some(id));
    assert_eq!(chunk[0]["unsigned"]["transaction_id"].as_str(), Some("txn-1"), "the sender sees its txn id");

    // A different txn id is a new event; the same txn id from another device is too.
    let (status, third) = api.send_text(&room, &alice, "txn-2", "once").await;
    assert_eq!(status, 200, "{third}");
    assert_ne!(third["event_id"].as_str(), Some(id));
    let other_device = api.login("alice").await;
    let (status, fourth) = api.send_text(&room, &other_device, "txn-1", "once").await;
    assert_eq!(status, 200, "{fourth}");
    assert_ne!(fourth["event_id"].as_str(), Some(id), "txn ids are scoped to the device");
    assert_eq!(api.messages(&room, &alice).await.len(), before + 3);

    // The same txn id in another room, or on the redact endpoint, is a new request too.
    let other_room = api.create_room(&alice, json!({})).await;
    let (status, elsewhere) = api.send_text(&other_room, &alice, "txn-1", "once").await;
    assert_eq!(status, 200, "{elsewhere}");
    let elsewhere = elsewhere["event_id"].as_str().expect("event_id").to_owned();
    assert_ne!(elsewhere, id, "another room's send is not a retry");
    let in_other: Vec<String> = api.messages(&other_room, &alice).await.iter().map(event_id).collect();
    assert!(in_other.contains(&elsewhere), "the event is in the room it was sent to");
    let redact = format!("/_matrix/client/v3/rooms/{}/redact/{}/txn-1", enc(&room), enc(id));
    let (status, redaction) = api.put(&redact, Some(&alice), &json!({ "reason": "dup" })).await;
    assert_eq!(status, 200, "{redaction}");
    let redaction_id = redaction["event_id"].as_str().expect("event_id").to_owned();
    assert_ne!(redaction_id, id, "a redaction is not a retry of the message");
    let (status, again) = api.put(&redact, Some(&alice), &json!({ "reason": "dup" })).await;
    assert_eq!((status, again["event_id"].as_str()), (200, Some(redaction_id.as_str())), "a retried redaction");
    let chunk = api.messages(&room, &alice).await;
    assert_eq!(chunk.len(), before + 4, "one redaction added");
    assert_eq!(chunk[0]["type"], "m.room.redaction");

    api.assert_serving().await;
    node.shutdown().await;
}
