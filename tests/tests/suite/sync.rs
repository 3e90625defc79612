//! `/sync` details a client relies on, checked on the raw JSON: unread and highlight counts from
//! push rules, lazy-loaded members, full_state, the leave section and the room summary.

use crate::common;

use serde_json::{Value, json};

struct User {
    http: reqwest::Client,
    base: String,
    token: String,
    id: String,
}

impl User {
    async fn new(node: &tocsin_node::NodeHandle, name: &str) -> Self {
        common::add_user(node, name, "pw").await;
        let http = reqwest::Client::new();
        let base = node.base_url();
        let login: Value = http
            .post(format!("{base}/_matrix/client/v3/login"))
            .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": "pw"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["access_token"].as_str().expect("logged in").to_owned();
        let id = login["user_id"].as_str().unwrap().to_owned();
        Self { http, base, token, id }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request =
            self.http.request(method, format!("{}/_matrix/client/v3{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    async fn sync(&self, query: &str) -> Value {
        self.call(reqwest::Method::GET, &format!("/sync?timeout=0{query}"), None).await
    }

    async fn send(&self, room: &str, txn: &str, content: Value) -> String {
        let value =
            self.call(reqwest::Method::PUT, &format!("/rooms/{room}/send/m.room.message/{txn}"), Some(content)).await;
        value["event_id"].as_str().unwrap().to_owned()
    }
}

fn filter(value: Value) -> String {
    let encoded: String = value.to_string().bytes().map(|b| format!("%{b:02X}")).collect();
    format!("&filter={encoded}")
}

#[tokio::test]
async fn counts_lazy_members_full_state_leave_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let alice = User::new(&node, "alice").await;
    let bob = User::new(&node, "bob").await;
    let carol = User::new(&node, "carol").await;

    let room =
        alice.call(reqwest::Method::POST, "/createRoom", Some(json!({"preset": "public_chat", "name": "Ops"}))).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    for user in [&bob, &carol] {
        user.call(reqwest::Method::POST, &format!("/join/{room}"), Some(json!({}))).await;
    }
    alice.send(&room, "1", json!({"msgtype": "m.text", "body": "status update"})).await;
    alice
        .send(
            &room,
            "2",
            json!({"msgtype": "m.text", "body": "bob, check the pumps", "m.mentions": {"user_ids": [bob.id]}}),
        )
        .await;
    let last = alice.send(&room, "3", json!({"msgtype": "m.text", "body": "thanks all"})).await;

    // Unread counts come from bob's push rules: three messages notify, the mention highlights.
    let first = bob.sync("").await;
    let joined = &first["rooms"]["join"][&room];
    assert_eq!(joined["unread_notifications"]["notification_count"], 3, "{joined}");
    assert_eq!(joined["unread_notifications"]["highlight_count"], 1);
    assert_eq!(joined["summary"]["m.joined_member_count"], 3);
    let since = first["next_batch"].as_str().unwrap().to_owned();

    bob.call(reqwest::Method::POST, &format!("/rooms/{room}/receipt/m.read/{last}"), Some(json!({}))).await;
    let after_read = bob.sync(&format!("&since={since}")).await;
    let joined = &after_read["rooms"]["join"][&room];
    assert_eq!(joined["unread_notifications"]["notification_count"], 0, "{joined}");
    // The summary comes again only when it changes: not for a receipt, but for a join.
    assert!(joined.get("summary").is_none(), "nothing changed the summary: {joined}");
    let since = after_read["next_batch"].as_str().unwrap().to_owned();
    let dave = User::new(&node, "dave").await;
    dave.call(reqwest::Method::POST, &format!("/join/{room}"), Some(json!({}))).await;
    let after_join = bob.sync(&format!("&since={since}")).await;
    assert_eq!(after_join["rooms"]["join"][&room]["summary"]["m.joined_member_count"], 4, "{after_join}");
    let since = after_join["next_batch"].as_str().unwrap().to_owned();
    alice.send(&room, "4", json!({"msgtype": "m.text", "body": "welcome, dave"})).await;

    // Lazy loading: with a one-event timeline, only the sender's and bob's own member events.
    let lazy = filter(json!({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": true}}}));
    let synced = bob.sync(&lazy).await;
    let state = synced["rooms"]["join"][&room]["state"]["events"].as_array().unwrap().clone();
    let members: Vec<&str> =
        state.iter().filter(|e| e["type"] == "m.room.member").filter_map(|e| e["state_key"].as_str()).collect();
    assert!(members.contains(&alice.id.as_str()) && members.contains(&bob.id.as_str()), "{members:?}");
    assert!(!members.contains(&carol.id.as_str()), "carol sent nothing in the timeline: {members:?}");
    assert!(!members.contains(&dave.id.as_str()), "nor did dave: {members:?}");
    assert!(synced["rooms"]["join"][&room]["timeline"]["limited"].as_bool().unwrap());
    let eager = bob.sync(&filter(json!({"room": {"timeline": {"limit": 1}}}))).await;
    let eager_members = eager["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .count();
    assert_eq!(eager_members, 4, "without lazy loading every member comes");

    // full_state on an incremental sync sends the whole state again.
    let full = bob.sync(&format!("&since={since}&full_state=true")).await;
    let types: Vec<&str> = full["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"m.room.create") && types.contains(&"m.room.name"), "{types:?}");

    // Leaving moves the room to the leave section of the next incremental sync.
    bob.call(reqwest::Method::POST, &format!("/rooms/{room}/leave"), Some(json!({}))).await;
    let left = bob.sync(&format!("&since={since}")).await;
    assert!(left["rooms"]["leave"].get(&room).is_some(), "{}", left["rooms"]);
    assert!(left["rooms"]["join"].get(&room).is_none());
    node.shutdown().await;
}

/// The counts come from the push worker's per-room index once it has evaluated the events:
/// they must say what the push rules say, follow the read receipt, and hold after a restart
/// (when nothing is left in memory).
#[tokio::test]
async fn unread_counts_follow_the_receipt_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let alice = User::new(&node, "alice").await;
    let bob = User::new(&node, "bob").await;
    let room =
        alice.call(reqwest::Method::POST, "/createRoom", Some(json!({"preset": "public_chat", "name": "Ops"}))).await;
    let room = room["room_id"].as_str().unwrap().to_owned();
    bob.call(reqwest::Method::POST, &format!("/join/{room}"), Some(json!({}))).await;
    let mut sent = Vec::new();
    let bodies = ["pumps at 40 %", "bob, the north gate", "river at 3.1 m", "shift change at 18:00"];
    for (i, body) in bodies.iter().enumerate() {
        let mentions = if i == 1 { json!({"user_ids": [bob.id]}) } else { json!({}) };
        let content = json!({"msgtype": "m.text", "body": body, "m.mentions": mentions});
        sent.push(alice.send(&room, &i.to_string(), content).await);
    }
    // Bob's own message never counts, nor does a reaction (the default rules do not notify).
    bob.send(&room, "own", json!({"msgtype": "m.text", "body": "on my way"})).await;
    let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": sent[0], "key": "👍"}});
    bob.call(reqwest::Method::PUT, &format!("/rooms/{room}/send/m.reaction/r1"), Some(reaction)).await;

    let counts = |sync: &Value| {
        let unread = &sync["rooms"]["join"][&room]["unread_notifications"];
        (unread["notification_count"].as_u64().unwrap_or(99), unread["highlight_count"].as_u64().unwrap_or(99))
    };
    assert_eq!(counts(&bob.sync("").await), (4, 1));
    // Once the push worker has listed them, the counts are read from its index.
    common::eventually_until(10, || async {
        bob.call(reqwest::Method::GET, "/notifications", None).await["notifications"].as_array().unwrap().len() == 4
    })
    .await;
    assert_eq!(counts(&bob.sync("").await), (4, 1));
    bob.call(reqwest::Method::POST, &format!("/rooms/{room}/receipt/m.read/{}", sent[0]), Some(json!({}))).await;
    assert_eq!(counts(&bob.sync("").await), (3, 1), "the receipt covers the first message");

    node.shutdown().await;
    let node = common::start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let bob = User { base: node.base_url(), ..bob };
    assert_eq!(counts(&bob.sync("").await), (3, 1), "the same counts after a restart");
    bob.call(reqwest::Method::POST, &format!("/rooms/{room}/receipt/m.read/{}", sent[2]), Some(json!({}))).await;
    assert_eq!(counts(&bob.sync("").await), (1, 0), "the mention is read");
    let alice = User { base: node.base_url(), ..alice };
    let content = json!({"msgtype": "m.text", "body": "all clear", "m.mentions": {"user_ids": [bob.id]}});
    alice.send(&room, "5", content).await;
    assert_eq!(counts(&bob.sync("").await), (2, 1), "a new mention after the restart");
    node.shutdown().await;
}
