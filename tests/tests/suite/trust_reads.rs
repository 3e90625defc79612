//! Trust: who may destroy and who may read. Redactions need authorship or power, wherever they
//! come from; servers read a room only while they have a joined member, and see what history
//! visibility allowed their users at each event; users read only what the visibility and their
//! membership at each event allow (the spec's algorithm), not what today's settings say.

use serde_json::{Value, json};
use tocsin_node::{
    NodeHandle,
    ruma::{EventId, OwnedRoomId},
};

use crate::{
    api::{Api, enc, event_id},
    common, fed,
    hostile::{self, Forge, cj, pdu_error},
};

fn bodies(events: &[Value]) -> Vec<String> {
    events.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect()
}

async fn say(api: &Api, room: &str, token: &str, text: &str) -> String {
    let (status, body) = api.send_text(room, token, &format!("t{}", rand_txn()), text).await;
    assert_eq!(status, 200, "send {text}: {body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

fn rand_txn() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

async fn redact(api: &Api, room: &str, token: &str, event: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/r{}", enc(room), enc(event), rand_txn());
    api.put(&path, Some(token), &json!({ "reason": "test" })).await
}

async fn event(api: &Api, room: &str, token: &str, event: &str) -> (u16, Value) {
    api.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(event)), Some(token)).await
}

async fn set_state(api: &Api, room: &str, token: &str, kind: &str, content: Value) {
    let (status, body) =
        api.put(&format!("/_matrix/client/v3/rooms/{}/state/{kind}/", enc(room)), Some(token), &content).await;
    assert_eq!(status, 200, "set {kind}: {body}");
}

async fn post(api: &Api, path: &str, token: &str, body: Value) -> (u16, Value) {
    api.post(path, Some(token), &body).await
}

#[tokio::test]
async fn a_member_without_power_redacts_only_their_own_events() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |_| {}).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let bob = api.user(&node, "bob").await;
    let room = api.create_room(&alice, json!({ "preset": "private_chat", "topic": "Levee status" })).await;
    api.invite_and_join(&room, &alice, "@bob:tocsin.test", &bob).await;
    let alices = say(&api, &room, &alice, "Evacuate sector 4").await;
    let bobs = say(&api, &room, &bob, "On my way").await;
    let topic_id = {
        let (status, body) = api.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), Some(&alice)).await;
        assert_eq!(status, 200);
        body.as_array().unwrap().iter().find(|e| e["type"] == "m.room.topic").map(event_id).expect("topic")
    };

    // Power 0: someone else's message and the room's state stay as they are.
    for (target, what) in [(&alices, "alice's message"), (&topic_id, "the topic")] {
        let (status, body) = redact(&api, &room, &bob, target).await;
        assert_eq!(status, 403, "bob redacting {what}: {body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN");
    }
    // The same through a raw m.room.redaction, and through a message carrying `redacts`.
    let raw = format!("/_matrix/client/v3/rooms/{}/send/m.room.redaction/x{}", enc(&room), rand_txn());
    let (status, body) = api.put(&raw, Some(&bob), &json!({ "redacts": alices })).await;
    assert_eq!(status, 403, "a raw m.room.redaction by bob: {body}");
    let sneaky = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/y{}", enc(&room), rand_txn());
    let (status, _) =
        api.put(&sneaky, Some(&bob), &json!({ "msgtype": "m.text", "body": "hi", "redacts": alices })).await;
    assert_eq!(status, 200, "a message with a `redacts` key is just a message");
    let (_, kept) = event(&api, &room, &alice, &alices).await;
    assert_eq!(kept["content"]["body"], "Evacuate sector 4", "alice's message is intact: {kept}");
    let (_, topic) =
        api.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room)), Some(&alice)).await;
    assert_eq!(topic["topic"], "Levee status", "the topic is intact");

    // Their own: yes. The creator: anyone's.
    let (status, body) = redact(&api, &room, &bob, &bobs).await;
    assert_eq!(status, 200, "bob redacting his own message: {body}");
    let (_, gone) = event(&api, &room, &alice, &bobs).await;
    assert!(gone["content"].as_object().is_some_and(|c| c.is_empty()), "bob's message redacted: {gone}");
    let bobs2 = say(&api, &room, &bob, "second").await;
    let (status, body) = redact(&api, &room, &alice, &bobs2).await;
    assert_eq!(status, 200, "the creator redacts anyone's: {body}");
}

const A: &str = "riverton.test";
const B: &str = "lakeside.test";

/// A room on B (version 10, where `redacts` is a top-level key) shared with alice on A.
async fn shared_v10_room(a: &NodeHandle, b: &NodeHandle) -> (OwnedRoomId, Api, Api, String, String) {
    let (api_a, api_b) = (Api::new(a), Api::new(b));
    let bob = api_b.user(b, "bob").await;
    let alice = api_a.user(a, "alice").await;
    let room = api_b.create_room(&bob, json!({ "preset": "private_chat", "room_version": "10" })).await;
    let r = api_b
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            Some(&bob),
            &json!({ "user_id": format!("@alice:{A}") }),
        )
        .await;
    assert_eq!(r.0, 200, "invite: {}", r.1);
    let r =
        api_a.post(&format!("/_matrix/client/v3/join/{}?server_name={B}", enc(&room)), Some(&alice), &json!({})).await;
    assert_eq!(r.0, 200, "alice joins over federation: {}", r.1);
    (OwnedRoomId::try_from(room).unwrap(), api_a, api_b, alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_server_cannot_wipe_events_it_may_not_redact() {
    let (_dir, a, b) = fed::two_nodes(A, B).await;
    let (room, api_a, api_b, alice, bob) = shared_v10_room(&a, &b).await;
    let bobs = say(&api_b, room.as_str(), &bob, "Pumps at the mill").await;
    let alices = say(&api_a, room.as_str(), &alice, "Copy").await;
    // A room on B that A was never in.
    let elsewhere_room = api_b.create_room(&bob, json!({ "preset": "private_chat" })).await;
    let elsewhere = say(&api_b, &elsewhere_room, &bob, "Not for riverton").await;
    // Let A see bob's message.
    common::eventually_until(20, || async { a.services.rooms.pdu(&EventId::parse(&bobs).unwrap()).unwrap().is_some() })
        .await;

    let forge = Forge::new(&a, &room, &EventId::parse(&alices).unwrap()).await;
    // 1. A message (not a redaction) with a top-level `redacts`.
    let (msg_id, msg) = forge
        .pdu(|o| {
            o.insert("redacts".into(), cj(json!(bobs)));
            o.insert("content".into(), cj(json!({ "msgtype": "m.text", "body": "harmless" })));
        })
        .await;
    // 2. A redaction by alice (power 0 on B's room) of bob's message.
    let (red_id, red) = forge
        .pdu(|o| {
            o.insert("type".into(), cj(json!("m.room.redaction")));
            o.insert("redacts".into(), cj(json!(bobs)));
            o.insert("content".into(), cj(json!({ "reason": "wipe" })));
        })
        .await;
    // 3. A redaction of an event in a room A was never in.
    let (far_id, far) = forge
        .pdu(|o| {
            o.insert("type".into(), cj(json!("m.room.redaction")));
            o.insert("redacts".into(), cj(json!(elsewhere)));
            o.insert("content".into(), json!({}).try_into().unwrap());
        })
        .await;
    for (n, (id, pdu)) in [(msg_id, msg), (red_id, red), (far_id, far)].into_iter().enumerate() {
        let (status, body) = hostile::transaction(&a, &b, &format!("wipe{n}"), vec![pdu]).await;
        assert_eq!(status, 200, "transaction: {body}");
        // The events themselves are fine by the auth rules; they just redact nothing.
        assert_eq!(pdu_error(&body, &id), None, "pdu {n} taken as an event: {body}");
    }
    for (room_id, id, text) in
        [(room.as_str(), &bobs, "Pumps at the mill"), (elsewhere_room.as_str(), &elsewhere, "Not for riverton")]
    {
        let (status, body) = event(&api_b, room_id, &bob, id).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["content"]["body"], text, "B keeps {id}: {body}");
        let stored = b.services.rooms.pdu(&EventId::parse(id.as_str()).unwrap()).unwrap().unwrap();
        assert!(stored.content.get().contains(text), "the store keeps the content of {id}");
    }
    // Alice may still redact her own message over federation.
    let (status, body) = redact(&api_a, room.as_str(), &alice, &alices).await;
    assert_eq!(status, 200, "{body}");
    let alices_id = EventId::parse(&alices).unwrap();
    common::eventually_until(20, || async { b.services.rooms.redacted_by(&alices_id).unwrap().is_some() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_without_a_joined_member_reads_nothing() {
    let (_dir, a, b) = fed::two_nodes(A, B).await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let alice = api_a.user(&a, "alice").await;
    let bob = api_b.user(&b, "bob").await;
    // Joined visibility: what was said before bob joined is not for lakeside.
    let room = api_a
        .create_room(
            &alice,
            json!({ "preset": "private_chat", "initial_state": [
        { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }
    ] }),
        )
        .await;
    let secret = say(&api_a, &room, &alice, "Before lakeside joined").await;
    let r = api_a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            Some(&alice),
            &json!({ "user_id": format!("@bob:{B}") }),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let r =
        api_b.post(&format!("/_matrix/client/v3/join/{}?server_name={A}", enc(&room)), Some(&bob), &json!({})).await;
    assert_eq!(r.0, 200, "bob joins: {}", r.1);
    let after = say(&api_a, &room, &alice, "Welcome lakeside").await;
    let bobs = say(&api_b, &room, &bob, "Lakeside here").await;

    // B asks A directly, signed with its own key: history before its join comes redacted.
    let backfill = format!("/_matrix/federation/v1/backfill/{}?v={}&limit=50", enc(&room), enc(&after));
    let (status, body) = hostile::request(&b, &a, "GET", &backfill, None).await;
    assert_eq!(status, 200, "backfill while joined: {body}");
    let pdus = body["pdus"].as_array().expect("pdus");
    let content_of = |id: &str| {
        let id = EventId::parse(id).unwrap();
        let rules = tocsin_node::rooms::version::rules(&tocsin_node::ruma::RoomVersionId::V12).unwrap();
        pdus.iter()
            .find(|p| {
                let object: tocsin_node::ruma::CanonicalJsonObject = serde_json::from_value((*p).clone()).unwrap();
                tocsin_node::ruma::signatures::reference_hash(&object, &rules).ok().as_deref()
                    == Some(&id.as_str()[1..])
            })
            .map(|p| p["content"].clone())
    };
    assert_eq!(content_of(&secret), Some(json!({})), "the message from before the join is served redacted");
    assert_eq!(
        content_of(&after).and_then(|c| c["body"].as_str().map(str::to_owned)).as_deref(),
        Some("Welcome lakeside")
    );
    let (status, body) =
        hostile::request(&b, &a, "GET", &format!("/_matrix/federation/v1/event/{}", enc(&secret)), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pdus"][0]["content"], json!({}), "/event of a pre-join message is redacted: {body}");

    // Bob is kicked: lakeside has no joined member left, and reads nothing more.
    let r = api_a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            Some(&alice),
            &json!({ "user_id": format!("@bob:{B}") }),
        )
        .await;
    assert_eq!(r.0, 200, "{}", r.1);
    let later = say(&api_a, &room, &alice, "After the kick").await;
    for path in [
        format!("/_matrix/federation/v1/event/{}", enc(&later)),
        format!("/_matrix/federation/v1/state_ids/{}?event_id={}", enc(&room), enc(&later)),
        format!("/_matrix/federation/v1/backfill/{}?v={}&limit=10", enc(&room), enc(&later)),
        format!("/_matrix/federation/v1/event_auth/{}/{}", enc(&room), enc(&later)),
    ] {
        let (status, body) = hostile::request(&b, &a, "GET", &path, None).await;
        assert_eq!(status, 403, "{path} after the kick: {body}");
        assert_eq!(body["errcode"], "M_FORBIDDEN");
    }
    let gme = format!("/_matrix/federation/v1/get_missing_events/{}", enc(&room));
    let (status, body) =
        hostile::request(&b, &a, "POST", &gme, Some(json!({ "earliest_events": [], "latest_events": [later] }))).await;
    assert_eq!(status, 403, "get_missing_events after the kick: {body}");

    // An event from lakeside with an unknown parent: A must not go asking lakeside for the gap
    // (that request would hand over A's newest event ids).
    let forge = Forge::new(&b, &OwnedRoomId::try_from(room.as_str()).unwrap(), &EventId::parse(&bobs).unwrap()).await;
    let (id, pdu) = forge
        .pdu(|o| {
            o.insert("content".into(), cj(json!({ "msgtype": "m.text", "body": "let me back" })));
            o.insert("prev_events".into(), cj(json!(["$unknownparentunknownparentunknownparent0000"])));
        })
        .await;
    let (status, body) = hostile::transaction(&b, &a, "gap", vec![pdu]).await;
    assert_eq!(status, 200, "{body}");
    let error = pdu_error(&body, &id).expect("refused");
    assert!(error.contains("no joined member"), "refused before any gap fill: {error}");
}

#[tokio::test]
async fn users_read_what_visibility_and_membership_allowed_at_each_event() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |_| {}).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let room = api.create_room(&alice, json!({ "preset": "private_chat", "topic": "Old topic" })).await;
    let messages = |token: String| {
        let api = &api;
        let room = room.clone();
        async move {
            api.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(&room)), Some(&token)).await
        }
    };
    say(&api, &room, &alice, "shared-1").await;

    // A knocker, a user who rejected an invite, a user banned before ever joining: no access.
    set_state(&api, &room, &alice, "m.room.join_rules", json!({ "join_rule": "knock" })).await;
    let carol = api.user(&node, "carol").await;
    let (status, body) = post(&api, &format!("/_matrix/client/v3/knock/{}", enc(&room)), &carol, json!({})).await;
    assert_eq!(status, 200, "carol knocks: {body}");
    let dave = api.user(&node, "dave").await;
    let r = post(
        &api,
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
        &alice,
        json!({ "user_id": "@dave:tocsin.test" }),
    )
    .await;
    assert_eq!(r.0, 200);
    let r = post(&api, &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), &dave, json!({})).await;
    assert_eq!(r.0, 200, "dave rejects the invite");
    let eve = api.user(&node, "eve").await;
    let r = post(
        &api,
        &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
        &alice,
        json!({ "user_id": "@eve:tocsin.test" }),
    )
    .await;
    assert_eq!(r.0, 200);
    for (who, token) in [("knocker", &carol), ("invite rejecter", &dave), ("banned", &eve)] {
        let (status, body) = messages(token.clone()).await;
        assert_eq!(status, 403, "{who} reading /messages: {body}");
        let (status, body) = api.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), Some(token)).await;
        assert_eq!(status, 403, "{who} reading /state: {body}");
        let (status, body) = api.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(&room)), Some(token)).await;
        assert_eq!(status, 403, "{who} reading /members: {body}");
    }

    // Visibility turns to `joined`; what came before stays shared for later members.
    set_state(&api, &room, &alice, "m.room.history_visibility", json!({ "history_visibility": "joined" })).await;
    let hidden = say(&api, &room, &alice, "joined-only-1").await;
    let bob = api.user(&node, "bob").await;
    api.invite_and_join(&room, &alice, "@bob:tocsin.test", &bob).await;
    say(&api, &room, &alice, "hello-bob").await;
    // Bob's first /sync honours `joined` visibility.
    let (status, sync) = api.get("/_matrix/client/v3/sync?timeout=0", Some(&bob)).await;
    assert_eq!(status, 200, "{sync}");
    let timeline = sync["rooms"]["join"][&room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
    let seen = bodies(&timeline);
    assert!(
        seen.contains(&"hello-bob".to_owned()) && !seen.contains(&"joined-only-1".to_owned()),
        "bob's first sync: {seen:?}"
    );
    let (_, page) = messages(bob.clone()).await;
    let seen = bodies(page["chunk"].as_array().unwrap());
    assert_eq!(seen, ["hello-bob", "shared-1"], "bob's /messages: shared history yes, joined-only no");
    let (status, _) = event(&api, &room, &bob, &hidden).await;
    assert_eq!(status, 404, "/event of a message from before bob could see");
    let (status, _) =
        api.get(&format!("/_matrix/client/v3/rooms/{}/context/{}", enc(&room), enc(&hidden)), Some(&bob)).await;
    assert_eq!(status, 404, "/context of it");

    // Bob leaves; what happens after is not his, nor is the state set after.
    let r = post(&api, &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), &bob, json!({})).await;
    assert_eq!(r.0, 200);
    say(&api, &room, &alice, "while-away").await;
    set_state(&api, &room, &alice, "m.room.topic", json!({ "topic": "New topic" })).await;
    let (status, topic) =
        api.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room)), Some(&bob)).await;
    assert_eq!((status, topic["topic"].as_str()), (200, Some("Old topic")), "bob sees the state as he left it");
    let (_, page) = messages(bob.clone()).await;
    assert!(!bodies(page["chunk"].as_array().unwrap()).contains(&"while-away".to_owned()), "nothing after leaving");

    // He rejoins: in a `joined` room, the gap stays closed.
    api.invite_and_join(&room, &alice, "@bob:tocsin.test", &bob).await;
    say(&api, &room, &alice, "welcome-back").await;
    let (_, page) = messages(bob.clone()).await;
    let seen = bodies(page["chunk"].as_array().unwrap());
    assert_eq!(seen, ["welcome-back", "hello-bob", "shared-1"], "bob after rejoining");
}

/// A store error while an event is judged must leave it undecided, never rejected for good:
/// the sender's retry is judged afresh and accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_error_on_receipt_never_rejects_an_event_for_good() {
    let (_dir, a, b) = fed::two_nodes(A, B).await;
    let (room, api_a, api_b, alice, bob) = shared_v10_room(&a, &b).await;
    let alices = say(&api_a, room.as_str(), &alice, "First").await;
    let alices_id = EventId::parse(&alices).unwrap();
    common::eventually_until(20, || async { b.services.rooms.pdu(&alices_id).unwrap().is_some() }).await;
    // Alice renames herself, so her membership in the current state is newer than the join that
    // "First" cites among its auth events: judging an event that cites the join reads it from
    // the store (the current state's events are held in memory).
    let me = format!("@alice:{A}");
    let (status, body) = api_a
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room.as_str()), enc(&me)),
            Some(&alice),
            &json!({ "membership": "join", "displayname": "Alice (Riverton)" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let renamed = EventId::parse(body["event_id"].as_str().unwrap()).unwrap();
    common::eventually_until(20, || async { b.services.rooms.pdu(&renamed).unwrap().is_some() }).await;

    // The event A sends next cites alice's join among its auth events; on B that record is
    // unreadable for a moment (a disk error, say).
    let forge = Forge::new(&a, &room, &alices_id).await;
    let (id, pdu) =
        forge.pdu(|o| _ = o.insert("content".into(), cj(json!({ "msgtype": "m.text", "body": "Second" })))).await;
    let member = a.services.rooms.pdu(&alices_id).unwrap().unwrap().auth_events;
    let member = member
        .into_iter()
        .find(|e| {
            b.services
                .rooms
                .pdu(e)
                .unwrap()
                .is_some_and(|p| p.state_key.as_deref() == Some(format!("@alice:{A}").as_str()))
        })
        .expect("alice's member event among the auth events");
    let events = "events";
    let good = b.services.db.get(events, member.as_bytes()).unwrap().expect("stored");
    let mut batch = tocsin_store::WriteBatch::new();
    batch.insert(events, member.as_bytes().to_vec(), b"{ not json".to_vec());
    b.services.db.write(batch).await.unwrap();

    let (status, body) = hostile::transaction(&a, &b, "disk1", vec![pdu.clone()]).await;
    assert_eq!(status, 200, "{body}");
    assert!(pdu_error(&body, &id).is_some(), "not accepted while the store fails: {body}");
    assert!(b.services.rooms.stored_event(&id).unwrap().is_none(), "and not recorded as rejected either");

    let mut batch = tocsin_store::WriteBatch::new();
    batch.insert(events, member.as_bytes().to_vec(), good);
    b.services.db.write(batch).await.unwrap();
    let (status, body) = hostile::transaction(&a, &b, "disk2", vec![pdu]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pdu_error(&body, &id), None, "the retry is accepted: {body}");
    let (status, event) = event(&api_b, room.as_str(), &bob, id.as_str()).await;
    assert_eq!((status, event["content"]["body"].as_str()), (200, Some("Second")), "{event}");
}
