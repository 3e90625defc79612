//! Bad input over federation (issue "Federation", point 8). Two in-process nodes, riverton (A)
//! and lakeside (B), share a room; then B is fed what a broken or hostile A could send, with A's
//! real signing key and A's real federation client: unsigned and forged requests, PDUs with bad
//! signatures, bad content hashes, events that fail auth, oversized transactions, malformed
//! bodies and malformed PDUs. B must drop or reject each one as the spec says, show its user
//! nothing of it (or the redacted event, for a bad hash), and keep serving: the valid messages
//! sent before are still there and a valid message sent after still arrives.

use matrix_sdk::{
    Client,
    room::MessagesOptions,
    ruma::{
        RoomId, api::client::room::create_room::v3::Request as CreateRoom,
        events::room::message::RoomMessageEventContent,
    },
};
use serde_json::{Value, json};
use tocsin_node::{
    NodeHandle,
    ruma::{
        CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, OwnedServerName, UserId,
        api::federation::{authentication::XMatrix, discovery::get_server_version},
        events::StateEventType,
        exports::http,
        room_version_rules::RoomVersionRules,
        signatures::{Ed25519KeyPair, hash_and_sign_event, reference_hash},
    },
};
use tocsin_tests::cluster::Cluster;

use crate::{
    common,
    fed::{self, accept_invite, logs, user_on, wait_for_texts},
};

const A: &str = "riverton.test";
const B: &str = "lakeside.test";
const TOPIC: &str = "Sandbags at the old mill";

fn server(name: &str) -> OwnedServerName {
    OwnedServerName::try_from(name).expect("server name")
}

/// Every event of the room as the client's server returns it from `/messages`, oldest first.
async fn raw_timeline(client: &Client, room_id: &RoomId) -> Vec<Value> {
    let Some(room) = client.get_room(room_id) else { return Vec::new() };
    let mut options = MessagesOptions::backward();
    options.limit = 1000u32.into();
    let messages = room.messages(options).await.expect("/messages answers");
    let mut out: Vec<Value> =
        messages.chunk.iter().filter_map(|e| serde_json::from_str(e.raw().json().get()).ok()).collect();
    out.reverse();
    out
}

/// The topic the client sees after a sync.
async fn topic(client: &Client, room_id: &RoomId) -> Option<String> {
    common::sync(client).await;
    fed::topic(client, room_id).await
}

async fn b_topic(b: &NodeHandle, room_id: &RoomId) -> Option<Value> {
    let pdu = b.services.rooms.state_event(room_id, &StateEventType::RoomTopic, "").await.unwrap()?;
    let content: Value = serde_json::from_str(pdu.content.get()).unwrap();
    Some(content["topic"].clone())
}

fn cj(value: Value) -> CanonicalJsonValue {
    value.try_into().expect("canonical JSON")
}

/// Makes PDUs of the shared room as A would, from a real stored PDU of A's.
struct Forge<'a> {
    a: &'a NodeHandle,
    room_id: OwnedRoomId,
    rules: RoomVersionRules,
    template: CanonicalJsonObject,
}

impl Forge<'_> {
    /// The template with its prev events and depth at A's current head, `edit` applied, hashed
    /// and signed by `key` as riverton.test. Returns the event id and the PDU.
    async fn pdu(
        &self,
        key: &Ed25519KeyPair,
        edit: impl FnOnce(&mut CanonicalJsonObject),
    ) -> (OwnedEventId, CanonicalJsonObject) {
        let mut object = self.template.clone();
        for field in ["signatures", "hashes", "unsigned"] {
            object.remove(field);
        }
        let (extremities, depth) = {
            let head = self.a.services.rooms.head(&self.room_id).unwrap();
            let head = head.lock().await;
            (head.extremities.clone(), head.depth)
        };
        object.insert("prev_events".into(), cj(json!(extremities)));
        object.insert("depth".into(), cj(json!(depth + 1)));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        object.insert("origin_server_ts".into(), cj(json!(now)));
        edit(&mut object);
        hash_and_sign_event(A, key, &mut object, &self.rules.redaction).expect("signs");
        (self.event_id(&object), object)
    }

    fn event_id(&self, object: &CanonicalJsonObject) -> OwnedEventId {
        EventId::parse(format!("${}", reference_hash(object, &self.rules).expect("reference hash"))).unwrap()
    }

    fn real_key(&self) -> &Ed25519KeyPair {
        self.a.services.keys.pair()
    }

    /// The id of `user`'s member event in A's current state.
    async fn member_event(&self, user: &UserId) -> OwnedEventId {
        let pdu = self.a.services.rooms.state_event(&self.room_id, &StateEventType::RoomMember, user.as_str());
        pdu.await.unwrap().expect("member event").event_id.clone()
    }
}

/// A `PUT /send/{txn}` from A to B with `body` as it is, X-Matrix signed with `key` over
/// `signed_body` (the same body unless a test wants the signature to cover something else).
fn send_request(txn: &str, key: Option<&Ed25519KeyPair>, signed_body: &[u8], body: Vec<u8>) -> http::Request<Vec<u8>> {
    let mut request = http::Request::builder()
        .method("PUT")
        .uri(format!("https://{B}/_matrix/federation/v1/send/{txn}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(signed_body.to_vec())
        .unwrap();
    if let Some(key) = key {
        let input =
            tocsin_node::ruma::api::federation::authentication::ServerSignaturesInput::new(server(A), server(B), key);
        let x_matrix = XMatrix::try_from_http_request(&request, input).expect("signs the request");
        request.headers_mut().insert(http::header::AUTHORIZATION, http::HeaderValue::from(&x_matrix));
    }
    *request.body_mut() = body;
    request
}

/// Sends `request` with A's federation client; returns B's status and JSON body.
async fn send(a: &NodeHandle, request: http::Request<Vec<u8>>) -> (u16, Value) {
    let response = a.services.federation_client.send_raw(&server(B), request).await.expect("B answers");
    let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (response.status().as_u16(), body)
}

/// A properly signed transaction from A carrying `pdus` and `edus`.
async fn transaction(a: &NodeHandle, txn: &str, pdus: Vec<Value>, edus: Vec<Value>) -> (u16, Value) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let body =
        serde_json::to_vec(&json!({ "origin": A, "origin_server_ts": now, "pdus": pdus, "edus": edus })).unwrap();
    send(a, send_request(txn, Some(a.services.keys.pair()), &body, body.clone())).await
}

/// The per-PDU result B gave for `id`: `Some(None)` accepted, `Some(Some(error))` refused,
/// `None` not listed.
fn result_for(body: &Value, id: &EventId) -> Option<Option<String>> {
    let entry = body["pdus"].get(id.as_str())?;
    Some(entry.get("error").map(|e| e.as_str().unwrap_or_default().to_owned()))
}

fn expect_error(status: u16, body: &Value, id: &EventId, what: &str) -> String {
    assert_eq!(status, 200, "{what}: the transaction itself is well-formed: {body}");
    match result_for(body, id) {
        Some(Some(error)) => error,
        other => panic!("{what}: wanted an error for {id}, got {other:?} in {body}"),
    }
}

/// B still answers federation requests from A.
async fn b_serves(a: &NodeHandle) {
    a.services
        .federation_client
        .send_unauth(&server(B), get_server_version::v1::Request::new())
        .await
        .expect("B serves");
}

fn obj(pdu: CanonicalJsonObject) -> Value {
    serde_json::to_value(pdu).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_over_federation_is_refused_and_nothing_valid_is_lost() {
    logs();
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &[A, B]).unwrap();
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let alice = user_on(&a, "alice").await;
    let carol = user_on(&a, "carol").await;
    let bob = user_on(&b, "bob").await;

    // The room: created on A by alice (creator), carol on A with the default power 0 (below
    // state_default 50), bob on B joined over federation.
    let mut create = CreateRoom::new();
    create.name = Some("Mill road".into());
    create.topic = Some(TOPIC.into());
    create.invite = vec![bob.user_id().unwrap().to_owned(), carol.user_id().unwrap().to_owned()];
    let room_id = alice.create_room(create).await.expect("room created").room_id().to_owned();
    accept_invite(&bob, &room_id).await;
    accept_invite(&carol, &room_id).await;
    common::sync(&alice).await;
    let alice_room = alice.get_room(&room_id).unwrap();
    let mut expected = vec!["water at the second step", "pumps on their way"];
    let mut template_id = None;
    for text in &expected {
        let sent = alice_room.send(RoomMessageEventContent::text_plain(*text)).await.expect("sent");
        template_id = Some(sent.response.event_id);
    }
    wait_for_texts(&bob, &room_id, &expected, 10).await;
    assert_eq!(topic(&bob, &room_id).await.as_deref(), Some(TOPIC));
    let before: Vec<String> = raw_timeline(&bob, &room_id).await.iter().map(|e| e["event_id"].to_string()).collect();

    let version = a.services.rooms.version(&room_id).await.unwrap();
    let forge = Forge {
        a: &a,
        room_id: room_id.clone(),
        rules: tocsin_node::rooms::version::rules(&version).unwrap(),
        template: a
            .services
            .rooms
            .pdu(&template_id.unwrap())
            .unwrap()
            .expect("A stores its PDU")
            .json()
            .expect("its object")
            .clone(),
    };
    let alice_id = alice.user_id().unwrap().to_owned();
    let body = |text: &str| cj(json!({ "msgtype": "m.text", "body": text }));

    // 1. No X-Matrix header, and a forged one: 401 M_UNAUTHORIZED before anything is read.
    let (id, pdu) = forge.pdu(forge.real_key(), |o| _ = o.insert("content".into(), body("unsigned request"))).await;
    let payload =
        serde_json::to_vec(&json!({ "origin": A, "origin_server_ts": 1, "pdus": [obj(pdu)], "edus": [] })).unwrap();
    let (status, answer) = send(&a, send_request("t-unsigned", None, &payload, payload.clone())).await;
    assert_eq!((status, answer["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "no X-Matrix: {answer}");
    let key_version = a.services.keys.key_id().trim_start_matches("ed25519:").to_owned();
    let impostor = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), key_version).unwrap();
    let (status, answer) = send(&a, send_request("t-forged", Some(&impostor), &payload, payload.clone())).await;
    assert_eq!((status, answer["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "forged X-Matrix: {answer}");
    assert!(!b.services.rooms.knows(&id).unwrap(), "nothing of a refused request is stored");
    b_serves(&a).await;

    // 2. A PDU signed by another key under A's key id, and one whose signature bytes are
    // flipped: dropped, listed with an error, not stored.
    let (forged_id, forged) = forge.pdu(&impostor, |o| _ = o.insert("content".into(), body("forged signature"))).await;
    let (flipped_id, mut flipped) =
        forge.pdu(forge.real_key(), |o| _ = o.insert("content".into(), body("flipped signature"))).await;
    {
        let Some(CanonicalJsonValue::Object(servers)) = flipped.get_mut("signatures") else { panic!("signed") };
        let Some(CanonicalJsonValue::Object(sigs)) = servers.get_mut(A) else { panic!("signed by A") };
        for sig in sigs.values_mut() {
            let CanonicalJsonValue::String(s) = sig else { panic!("a base64 signature") };
            // Another valid unpadded base64 signature of the same length.
            let first = if s.starts_with('A') { "B" } else { "A" };
            s.replace_range(0..1, first);
        }
    }
    assert_eq!(forge.event_id(&flipped), flipped_id, "signatures are not part of the event id");
    let (status, answer) = transaction(&a, "t-bad-sigs", vec![obj(forged), obj(flipped)], vec![]).await;
    for (id, what) in [(&forged_id, "another key"), (&flipped_id, "flipped signature")] {
        let error = expect_error(status, &answer, id, what);
        assert!(error.contains("signature"), "{what}: {error}");
        assert!(!b.services.rooms.knows(id).unwrap(), "{what}: B must not store it");
    }
    b_serves(&a).await;

    // 3. A validly signed message whose body is changed after signing: the signature (over the
    // redacted form) holds, the content hash does not, so B keeps the redacted event.
    let (bad_hash_id, mut bad_hash) =
        forge.pdu(forge.real_key(), |o| _ = o.insert("content".into(), body("meet at the bridge"))).await;
    bad_hash.insert("content".into(), body("meet at the DAM (altered)"));
    assert_eq!(forge.event_id(&bad_hash), bad_hash_id, "the event id covers the redacted form only");
    let (status, answer) = transaction(&a, "t-bad-hash", vec![obj(bad_hash)], vec![]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(result_for(&answer, &bad_hash_id), Some(None), "the redacted event is accepted: {answer}");
    let stored = b.services.rooms.pdu(&bad_hash_id).unwrap().expect("B stores the redacted event");
    assert_eq!(stored.content.get(), "{}", "B keeps no content of it");
    let seen = common::eventually(&bob, 10, || async {
        raw_timeline(&bob, &room_id).await.into_iter().find(|e| e["event_id"] == bad_hash_id.as_str())
    })
    .await;
    assert_eq!(seen["content"], json!({}), "bob sees the event with empty content: {seen}");
    assert!(!seen.to_string().contains("DAM"), "bob never sees the altered body: {seen}");
    assert!(!seen.to_string().contains("bridge"), "nor the original one: {seen}");
    b_serves(&a).await;

    // 4. Events that fail auth: a message from a user who is not in the room, a topic from a
    // member below state_default (carol, power 0), a topic from a non-member. Each is answered
    // with an error and none becomes current state.
    let mallory = UserId::parse(format!("@mallory:{A}")).unwrap();
    let alice_member = forge.member_event(&alice_id).await;
    let carol_member = forge.member_event(carol.user_id().unwrap()).await;
    let topic_auth: Vec<OwnedEventId> = match forge.template.get("auth_events") {
        Some(CanonicalJsonValue::Array(ids)) => ids
            .iter()
            .map(|v| match v {
                CanonicalJsonValue::String(s) if *s == alice_member.as_str() => carol_member.clone(),
                CanonicalJsonValue::String(s) => EventId::parse(s).unwrap(),
                other => panic!("an event id: {other:?}"),
            })
            .collect(),
        other => panic!("auth_events: {other:?}"),
    };
    assert!(topic_auth.contains(&carol_member), "carol's membership is among the auth events");
    let topic_from = |sender: &UserId, auth: Vec<OwnedEventId>, text: &str| {
        let (sender, text) = (sender.to_owned(), text.to_owned());
        move |o: &mut CanonicalJsonObject| {
            o.insert("type".into(), cj(json!("m.room.topic")));
            o.insert("state_key".into(), cj(json!("")));
            o.insert("sender".into(), cj(json!(sender)));
            o.insert("content".into(), cj(json!({ "topic": text })));
            o.insert("auth_events".into(), cj(json!(auth)));
        }
    };
    let (carol_topic_id, carol_topic) =
        forge.pdu(forge.real_key(), topic_from(carol.user_id().unwrap(), topic_auth.clone(), "carol's topic")).await;
    let mut non_member_auth = topic_auth.clone();
    non_member_auth.retain(|id| *id != carol_member);
    let (mallory_topic_id, mallory_topic) =
        forge.pdu(forge.real_key(), topic_from(&mallory, non_member_auth.clone(), "mallory's topic")).await;
    // Auth events without any membership of mallory's: the rejection is for not being joined.
    let (mallory_msg_id, mallory_msg) = forge
        .pdu(forge.real_key(), |o| {
            o.insert("sender".into(), cj(json!(mallory)));
            o.insert("content".into(), body("mallory was here"));
            o.insert("auth_events".into(), cj(json!(non_member_auth)));
        })
        .await;
    let (status, answer) =
        transaction(&a, "t-auth", vec![obj(mallory_msg), obj(carol_topic), obj(mallory_topic)], vec![]).await;
    // B names the auth rule that failed: the sender's membership, or its power.
    for (id, what, rule) in [
        (&mallory_msg_id, "message from a non-member", "membership"),
        (&carol_topic_id, "topic below state_default", "power"),
        (&mallory_topic_id, "topic from a non-member", "membership"),
    ] {
        let error = expect_error(status, &answer, id, what);
        assert!(error.contains("rejected") && error.contains(rule), "{what}: {error}");
    }
    assert_eq!(b_topic(&b, &room_id).await, Some(json!(TOPIC)), "B's current topic is unchanged");
    assert_eq!(topic(&bob, &room_id).await.as_deref(), Some(TOPIC), "bob sees the old topic");
    b_serves(&a).await;

    // 5. Too many PDUs or EDUs in one transaction: 400 M_BAD_JSON, and none of them is handled.
    let mut many = Vec::new();
    let mut many_ids = Vec::new();
    for i in 0..51 {
        let (id, pdu) =
            forge.pdu(forge.real_key(), |o| _ = o.insert("content".into(), body(&format!("flood {i}")))).await;
        many_ids.push(id);
        many.push(obj(pdu));
    }
    let (status, answer) = transaction(&a, "t-51-pdus", many, vec![]).await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")), "51 PDUs: {answer}");
    assert!(!many_ids.iter().any(|id| b.services.rooms.knows(id).unwrap()), "none of the 51 is stored");
    let typing =
        json!({ "edu_type": "m.typing", "content": { "room_id": room_id, "user_id": alice_id, "typing": true } });
    let (status, answer) = transaction(&a, "t-101-edus", vec![], vec![typing; 101]).await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")), "101 EDUs: {answer}");
    b_serves(&a).await;

    // 6a. A body that is not JSON. X-Matrix signs the request's JSON content, so a body that
    // does not parse cannot carry a valid signature: B checks the signature first (the origin
    // must be known before anything else is read) and answers 401 M_UNAUTHORIZED, not
    // M_NOT_JSON. Here the header is a real signature of A over a valid body, sent with a
    // truncated copy of that body.
    let valid = serde_json::to_vec(&json!({ "origin": A, "origin_server_ts": 1, "pdus": [], "edus": [] })).unwrap();
    let truncated = valid[..valid.len() / 2].to_vec();
    let (status, answer) = send(&a, send_request("t-not-json", Some(a.services.keys.pair()), &valid, truncated)).await;
    assert_eq!((status, answer["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "not JSON: {answer}");
    // 6b. Valid, correctly signed JSON of the wrong shape is 400 M_BAD_JSON.
    let wrong_shape = serde_json::to_vec(&json!({ "origin": A, "origin_server_ts": 1, "pdus": "none" })).unwrap();
    let (status, answer) =
        send(&a, send_request("t-bad-shape", Some(a.services.keys.pair()), &wrong_shape, wrong_shape.clone())).await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")), "wrong shape: {answer}");
    // 6c. A signed PDU without `sender`: an error in the per-PDU results, nothing stored.
    let (no_sender_id, no_sender) = forge
        .pdu(forge.real_key(), |o| {
            o.remove("sender");
            o.insert("content".into(), body("who sent this"));
        })
        .await;
    let (status, answer) = transaction(&a, "t-no-sender", vec![obj(no_sender)], vec![]).await;
    let error = expect_error(status, &answer, &no_sender_id, "PDU without sender");
    assert!(error.contains("sender"), "the error names the missing field: {error}");
    assert!(!b.services.rooms.knows(&no_sender_id).unwrap(), "a malformed PDU is not stored");
    b_serves(&a).await;

    // 7. Nothing valid was lost: a message alice sends now reaches bob after the ones before; a
    // valid PDU made the same way as the bad ones above is accepted (so the refusals above were
    // for the faults put in, not for the way the PDUs were made); and the topic from a user
    // allowed to set it still becomes current.
    let (forged_ok_id, forged_ok) =
        forge.pdu(forge.real_key(), |o| _ = o.insert("content".into(), body("made by hand, valid"))).await;
    let (status, answer) = transaction(&a, "t-valid", vec![obj(forged_ok)], vec![]).await;
    assert_eq!((status, result_for(&answer, &forged_ok_id)), (200, Some(None)), "a valid PDU: {answer}");
    expected.push("made by hand, valid");
    alice_room.send(RoomMessageEventContent::text_plain("all clear at the mill")).await.expect("sent");
    expected.push("all clear at the mill");
    wait_for_texts(&bob, &room_id, &expected, 10).await;
    let after: Vec<String> = raw_timeline(&bob, &room_id).await.iter().map(|e| e["event_id"].to_string()).collect();
    assert!(before.iter().all(|id| after.contains(id)), "every event bob saw before is still there");
    for id in [&forged_id, &flipped_id, &mallory_msg_id, &carol_topic_id, &mallory_topic_id, &no_sender_id] {
        assert!(!after.contains(&format!("\"{id}\"")), "bob never sees {id}");
    }
    // Built on all of B's forward extremities (the bad-hash event and the hand-made message
    // above exist on B only), so B's room has one extremity again after it. See the report on
    // `append_remote`: a state event arriving while B's room is forked is left out of B's
    // current state, because the event is not stored yet when the forks are resolved.
    let b_extremities = b.services.rooms.head(&room_id).unwrap().lock().await.extremities.clone();
    let alice_topic =
        topic_from(&alice_id, forge_auth_for_alice(&topic_auth, &carol_member, &alice_member), "Mill road reopened");
    let (topic_id, topic_pdu) = forge
        .pdu(forge.real_key(), |o| {
            alice_topic(o);
            o.insert("prev_events".into(), cj(json!(b_extremities)));
        })
        .await;
    let (status, answer) = transaction(&a, "t-topic", vec![obj(topic_pdu)], vec![]).await;
    assert_eq!((status, result_for(&answer, &topic_id)), (200, Some(None)), "alice's topic: {answer}");
    assert_eq!(b_topic(&b, &room_id).await, Some(json!("Mill road reopened")), "a valid topic becomes current");
    assert_eq!(topic(&bob, &room_id).await.as_deref(), Some("Mill road reopened"), "bob sees it");

    eprintln!("bad input over federation: {:?}", started.elapsed());
    a.shutdown().await;
    b.shutdown().await;
}

/// Carol's topic auth events with alice's membership in place of carol's.
fn forge_auth_for_alice(auth: &[OwnedEventId], carol: &EventId, alice: &EventId) -> Vec<OwnedEventId> {
    auth.iter().map(|id| if id == carol { alice.to_owned() } else { id.clone() }).collect()
}
