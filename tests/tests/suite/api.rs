//! A bare HTTP client for Client-Server scenarios that check exact statuses and bodies.
#![allow(dead_code)]

use reqwest::Method;
use serde_json::{Value, json};
use tocsin_node::NodeHandle;

use crate::common::add_user;

pub const PASSWORD: &str = "correct horse";

/// A bare HTTP client against one node.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// Status and parsed body (`Value::String` of the raw text when the body is not JSON).
pub type Reply = (u16, Value);

impl Api {
    pub fn new(node: &NodeHandle) -> Self {
        Self { http: reqwest::Client::new(), base: node.base_url() }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<String>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.expect("the node answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.call(Method::POST, path, token, Some(body.to_string())).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.call(Method::PUT, path, token, Some(body.to_string())).await
    }

    pub async fn login(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/login",
                None,
                &json!({
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": name },
                    "password": PASSWORD,
                }),
            )
            .await;
        assert_eq!(status, 200, "login as {name}: {body}");
        body["access_token"].as_str().expect("access_token in login response").to_owned()
    }

    /// Creates a user on the node and logs in; returns the access token.
    pub async fn user(&self, node: &NodeHandle, name: &str) -> String {
        add_user(node, name, PASSWORD).await;
        self.login(name).await
    }

    pub async fn create_room(&self, token: &str, body: Value) -> String {
        let (status, reply) = self.post("/_matrix/client/v3/createRoom", Some(token), &body).await;
        assert_eq!(status, 200, "createRoom: {reply}");
        reply["room_id"].as_str().expect("room_id").to_owned()
    }

    pub async fn invite_and_join(&self, room: &str, inviter: &str, user_id: &str, token: &str) {
        let r = self
            .post(
                &format!("/_matrix/client/v3/rooms/{}/invite", enc(room)),
                Some(inviter),
                &json!({ "user_id": user_id }),
            )
            .await;
        assert_eq!(r.0, 200, "invite {user_id}: {}", r.1);
        let r = self.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room)), Some(token), &json!({})).await;
        assert_eq!(r.0, 200, "join as {user_id}: {}", r.1);
    }

    pub async fn send_text(&self, room: &str, token: &str, txn: &str, text: &str) -> Reply {
        self.put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room)),
            Some(token),
            &json!({ "msgtype": "m.text", "body": text }),
        )
        .await
    }

    pub async fn messages(&self, room: &str, token: &str) -> Vec<Value> {
        let (status, body) =
            self.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000", enc(room)), Some(token)).await;
        assert_eq!(status, 200, "/messages as a member: {body}");
        body["chunk"].as_array().expect("chunk").clone()
    }

    pub async fn state(&self, room: &str, token: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room)), Some(token)).await;
        assert_eq!(status, 200, "/state as a member: {body}");
        body.as_array().expect("state is an array").clone()
    }

    /// What a member sees of the room: the state event ids (sorted) and the timeline's event ids.
    pub async fn snapshot(&self, room: &str, token: &str) -> (Vec<String>, Vec<String>) {
        let mut state: Vec<String> = self.state(room, token).await.iter().map(event_id).collect();
        state.sort();
        let timeline = self.messages(room, token).await.iter().map(event_id).collect();
        (state, timeline)
    }

    pub async fn assert_serving(&self) {
        let (status, body) = self.get("/_matrix/client/versions", None).await;
        assert_eq!(status, 200, "the node still serves /versions: {body}");
        assert!(body["versions"].as_array().is_some_and(|v| !v.is_empty()), "versions listed: {body}");
    }
}

pub fn event_id(event: &Value) -> String {
    event["event_id"].as_str().expect("event_id").to_owned()
}

/// Percent-encodes a path segment (room ids carry `!`, `:`; user ids `@`).
pub fn enc(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
