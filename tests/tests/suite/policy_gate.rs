//! The node enforces its policy file on local events, names the rule when it refuses, reloads
//! without a restart, and keeps the last valid policy when a reload fails.

use crate::common;

use serde_json::{Value, json};

fn policy(encryption: bool, staff_may_alarm: bool) -> String {
    format!(
        r#"
[room_defaults]
encryption = {encryption}

[[role]]
name = "chief"
power_level = 100
may_send_alarms = true
alarm_levels = ["critical", "urgent", "info"]

[[role]]
name = "staff"
power_level = 50
may_send_alarms = {staff_may_alarm}
alarm_levels = ["info"]

[[account]]
localpart = "alice"
display_name = "Alice (fire chief)"
roles = ["chief"]
password = "not used by this test"

[[account]]
localpart = "bob"
display_name = "Bob (duty officer)"
roles = ["staff"]
password = "not used by this test"
"#
    )
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn login(&self, name: &str) -> String {
        let v: Value = self
            .http
            .post(format!("{}/_matrix/client/v3/login", self.base))
            .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "pw"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().expect("login").to_owned()
    }

    async fn call(&self, token: &str, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}/_matrix/client/v3{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

async fn setup(
    encryption: bool,
    staff_may_alarm: bool,
) -> (tempfile::TempDir, tocsin_node::NodeHandle, Api, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy(encryption, staff_may_alarm)).unwrap();
    let node = common::start(&dir.path().join("data"), |c| c.policy = Some(policy_path.clone())).await;
    common::add_user(&node, "alice", "pw").await;
    common::add_user(&node, "bob", "pw").await;
    let api = Api { http: reqwest::Client::new(), base: node.base_url() };
    let (alice, bob) = (api.login("alice").await, api.login("bob").await);
    let (status, room) = api.call(&alice, reqwest::Method::POST, "/createRoom", json!({"preset": "public_chat"})).await;
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().unwrap().to_owned();
    let (status, _) = api.call(&bob, reqwest::Method::POST, &format!("/join/{room}"), json!({})).await;
    assert_eq!(status, 200);
    (dir, node, api, alice, bob, room)
}

fn alarm(level: &str) -> Value {
    json!({"msgtype": "m.text", "body": "ALARM: levee breach at km 12", "org.tocsin.alarm": {"id": "a1", "level": level, "ack_required": true}})
}

#[tokio::test]
async fn alarms_only_from_roles_that_may_send_them_and_reload_applies() {
    let (dir, node, api, alice, bob, room) = setup(false, false).await;
    let send = |token: String, txn: &'static str, content: Value| {
        let api = &api;
        let room = room.clone();
        async move {
            api.call(&token, reqwest::Method::PUT, &format!("/rooms/{room}/send/m.room.message/{txn}"), content).await
        }
    };

    let (status, body) = send(bob.clone(), "b1", alarm("info")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert!(body["error"].as_str().unwrap().contains("policy rule `alarms`"), "{body}");
    let (status, _) = send(alice.clone(), "a1", alarm("critical")).await;
    assert_eq!(status, 200, "the chief may raise a critical alarm");
    let (status, body) = send(alice.clone(), "a2", alarm("apocalyptic")).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (status, _) = send(bob.clone(), "b2", json!({"msgtype": "m.text", "body": "plain message"})).await;
    assert_eq!(status, 200, "ordinary messages are not alarms");

    // A new policy version lets staff send info alarms; the node applies it without a restart.
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, policy(false, true)).unwrap();
    node.services.policy.reload().expect("valid policy reloads");
    assert_eq!(send(bob.clone(), "b3", alarm("info")).await.0, 200);
    assert_eq!(send(bob.clone(), "b4", alarm("critical")).await.0, 403, "staff alarm levels are still only info");

    // A broken file is refused with its location, and the last valid policy stays in force.
    std::fs::write(&path, "[[role]]\nname = \"staff\"\npower_level = \"high\"\n").unwrap();
    let err = node.services.policy.reload().unwrap_err();
    assert!(err.contains("policy.toml") && err.contains("power_level"), "{err}");
    assert_eq!(send(bob.clone(), "b5", alarm("info")).await.0, 200, "last valid policy still applies");

    // Refused events were not stored.
    let (_, messages) =
        api.call(&alice, reqwest::Method::GET, &format!("/rooms/{room}/messages?dir=b&limit=50"), json!({})).await;
    let bodies: Vec<&str> =
        messages["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies.iter().filter(|b| b.starts_with("ALARM")).count(), 3, "{bodies:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn encrypted_rooms_refuse_plaintext_messages() {
    let (_dir, node, api, alice, _bob, room) = setup(true, false).await;
    // public_chat gets no encryption by preset; a policy-encrypted private room does.
    let (status, _) = api
        .call(
            &alice,
            reqwest::Method::PUT,
            &format!("/rooms/{room}/send/m.room.message/p1"),
            json!({"msgtype": "m.text", "body": "ok"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, private) = api.call(&alice, reqwest::Method::POST, "/createRoom", json!({"preset": "private_chat"})).await;
    let private = private["room_id"].as_str().unwrap().to_owned();
    let (status, body) = api
        .call(
            &alice,
            reqwest::Method::PUT,
            &format!("/rooms/{private}/send/m.room.message/p2"),
            json!({"msgtype": "m.text", "body": "secret"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("policy rule `room_defaults.encryption`"), "{body}");
    let encrypted = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "sender_key": "k", "session_id": "s", "device_id": "D"});
    let (status, _) =
        api.call(&alice, reqwest::Method::PUT, &format!("/rooms/{private}/send/m.room.encrypted/p3"), encrypted).await;
    assert_eq!(status, 200, "encrypted messages pass");
    node.shutdown().await;
}

#[tokio::test]
async fn a_node_does_not_start_on_a_broken_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, "[room_defaults]\nencryption = \"maybe\"\n").unwrap();
    let mut config = common::config(&dir.path().join("data"), "tocsin.test");
    config.policy = Some(path);
    let err = tocsin_node::Node::start(config).await.err().expect("refused");
    let text = format!("{err:#}");
    assert!(text.contains("policy.toml") && text.contains("encryption"), "{text}");
}

/// Creating a room applies the policy's room defaults: history visibility, guest access and
/// retention, besides encryption and the access rule; a room the policy names by alias takes
/// that room's history visibility.
#[tokio::test]
async fn new_rooms_get_the_policy_room_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    let text = r#"
[room_defaults]
encryption = false
history_visibility = "joined"
guest_access = false
retention_max_age = "30d"

[[room]]
alias = "briefings"
name = "Briefings"
history_visibility = "invited"
"#;
    std::fs::write(&policy_path, text).unwrap();
    let node = common::start(&dir.path().join("data"), |c| c.policy = Some(policy_path.clone())).await;
    common::add_user(&node, "alice", "pw").await;
    let api = Api { http: reqwest::Client::new(), base: node.base_url() };
    let alice = api.login("alice").await;
    let state = |room: String, kind: &'static str| {
        let api = &api;
        let alice = &alice;
        async move { api.call(alice, reqwest::Method::GET, &format!("/rooms/{room}/state/{kind}/"), json!({})).await }
    };

    let (status, room) = api.call(&alice, reqwest::Method::POST, "/createRoom", json!({"preset": "public_chat"})).await;
    assert_eq!(status, 200, "{room}");
    let room = room["room_id"].as_str().unwrap().to_owned();
    let (_, history) = state(room.clone(), "m.room.history_visibility").await;
    assert_eq!(history["history_visibility"], "joined", "{history}");
    let (_, guests) = state(room.clone(), "m.room.guest_access").await;
    assert_eq!(guests["guest_access"], "forbidden", "{guests}");
    let (_, retention) = state(room.clone(), "m.room.retention").await;
    assert_eq!(retention["max_lifetime"], 30 * 24 * 3600 * 1000u64, "{retention}");

    // The policy's own room, by alias: its history visibility wins over the default.
    let (status, named) = api
        .call(
            &alice,
            reqwest::Method::POST,
            "/createRoom",
            json!({"preset": "private_chat", "room_alias_name": "briefings"}),
        )
        .await;
    assert_eq!(status, 200, "{named}");
    let named = named["room_id"].as_str().unwrap().to_owned();
    let (_, history) = state(named.clone(), "m.room.history_visibility").await;
    assert_eq!(history["history_visibility"], "invited", "{history}");

    // initial_state still decides when the creator sets it.
    let (_, own) = api
        .call(
            &alice,
            reqwest::Method::POST,
            "/createRoom",
            json!({"initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "shared"}}]}),
        )
        .await;
    let own = own["room_id"].as_str().unwrap().to_owned();
    let (_, history) = state(own, "m.room.history_visibility").await;
    assert_eq!(history["history_visibility"], "shared", "{history}");
    node.shutdown().await;
}
