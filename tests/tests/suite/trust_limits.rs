//! Rate limits and login hardening (the "Trust" issue): password guessing is stopped per account
//! and per address with 429 `M_LIMIT_EXCEEDED`, people posting fast are not, floods of sends,
//! joins, invites, uploads and registrations are, and a login for an unknown account takes as
//! long as one with a wrong password.
//!
//! All test traffic comes from 127.0.0.1; tests that need several client addresses trust
//! loopback as a reverse proxy and name the client in `X-Forwarded-For`.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::{Method, Url, header::HeaderMap};
use serde_json::{Value, json};
use tocsin_node::{
    NodeHandle, Registration,
    http::ratelimit::{Limit, RateLimitConfig},
};

use crate::common::{add_user, start};

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn errcode(&self) -> &str {
        self.body["errcode"].as_str().unwrap_or("")
    }

    /// Checks this is a spec-shaped 429 and returns its wait.
    fn assert_limited(&self, what: &str) -> Duration {
        assert_eq!(self.status, 429, "{what}: {}", self.body);
        assert_eq!(self.errcode(), "M_LIMIT_EXCEEDED", "{what}: {}", self.body);
        let ms =
            self.body["retry_after_ms"].as_u64().unwrap_or_else(|| panic!("{what}: no retry_after_ms: {}", self.body));
        assert!(self.headers.contains_key("retry-after"), "{what}: no Retry-After header");
        Duration::from_millis(ms)
    }
}

struct Api {
    http: reqwest::Client,
    base: Url,
    /// Sent as `X-Forwarded-For` when set.
    forwarded_for: Option<String>,
}

impl Api {
    fn new(node: &NodeHandle) -> Self {
        Self { http: reqwest::Client::new(), base: Url::parse(&node.base_url()).unwrap(), forwarded_for: None }
    }

    fn from(node: &NodeHandle, address: &str) -> Self {
        Self { forwarded_for: Some(address.to_owned()), ..Self::new(node) }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().unwrap().extend(["_matrix", "client", "v3"]).extend(segments);
        url
    }

    async fn call(&self, method: Method, segments: &[&str], token: Option<&str>, body: Option<Vec<u8>>) -> Reply {
        let mut req = self.http.request(method, self.url(segments));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(address) = &self.forwarded_for {
            req = req.header("x-forwarded-for", address);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.expect("the node answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("response body");
        Reply { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }

    async fn json(&self, method: Method, segments: &[&str], token: Option<&str>, body: Value) -> Reply {
        self.call(method, segments, token, Some(body.to_string().into_bytes())).await
    }

    async fn login(&self, user: &str, password: &str) -> Reply {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        });
        self.json(Method::POST, &["login"], None, body).await
    }

    async fn token(&self, user: &str, password: &str) -> String {
        let reply = self.login(user, password).await;
        assert_eq!(reply.status, 200, "login of {user}: {}", reply.body);
        reply.body["access_token"].as_str().unwrap().to_owned()
    }

    async fn create_room(&self, token: &str, body: Value) -> String {
        let reply = self.json(Method::POST, &["createRoom"], Some(token), body).await;
        assert_eq!(reply.status, 200, "createRoom: {}", reply.body);
        reply.body["room_id"].as_str().unwrap().to_owned()
    }

    async fn send(&self, token: &str, room: &str, txn: &str) -> Reply {
        let body = json!({ "msgtype": "m.text", "body": txn });
        self.json(Method::PUT, &["rooms", room, "send", "m.room.message", txn], Some(token), body).await
    }
}

fn limits(tweak: impl FnOnce(&mut RateLimitConfig)) -> RateLimitConfig {
    let mut limits = RateLimitConfig::default();
    tweak(&mut limits);
    limits
}

#[tokio::test]
async fn forty_wrong_passwords_are_stopped_and_the_right_one_waits() {
    let dir = tempfile::tempdir().unwrap();
    // Default limits.
    let node = start(dir.path(), |_| {}).await;
    add_user(&node, "alice", "correct horse").await;
    add_user(&node, "bob", "battery staple").await;
    let api = Api::new(&node);

    let mut statuses = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..40 {
        let reply = api.login("alice", "guess").await;
        statuses.push(reply.status);
        if reply.status == 429 {
            waits.push(reply.assert_limited("a guess past the burst"));
        } else {
            assert_eq!((reply.status, reply.errcode()), (403, "M_FORBIDDEN"), "{}", reply.body);
        }
    }
    let refused = statuses.iter().filter(|s| **s == 403).count();
    assert_eq!(refused, 5, "the burst of wrong passwords is 5, then 429: {statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(waits.iter().all(|w| *w > Duration::ZERO && *w <= Duration::from_secs(10)), "{waits:?}");

    // The right password waits too: the attacker cannot tell a right guess from a wrong one.
    api.login("alice", "correct horse").await.assert_limited("the right password while the bucket is empty");
    // Another account from the same address is not locked out by Alice's bucket.
    assert_eq!(api.login("bob", "battery staple").await.status, 200);
    node.shutdown().await;
}

#[tokio::test]
async fn after_the_wait_the_right_password_works() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.rate_limits = limits(|l| l.login_failures_per_user = Limit::new(3, 0.5));
    })
    .await;
    add_user(&node, "alice", "correct horse").await;
    let api = Api::new(&node);
    // Slow enough a refill (2 s a token) that three argon2 checks on a busy machine do not
    // earn a fourth attempt.
    for _ in 0..3 {
        assert_eq!(api.login("alice", "guess").await.status, 403);
    }
    let wait = api.login("alice", "correct horse").await.assert_limited("the fourth attempt");
    assert!(wait <= Duration::from_secs(2), "{wait:?}");
    tokio::time::sleep(wait).await;
    let reply = api.login("alice", "correct horse").await;
    assert_eq!(reply.status, 200, "after retry_after_ms the right password works: {}", reply.body);
    // A success gives its token back: the next typo is not refused outright.
    assert_eq!(api.login("alice", "typo").await.status, 403);
    node.shutdown().await;
}

#[tokio::test]
async fn guessing_from_one_address_is_stopped_across_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.rate_limits = limits(|l| l.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]);
    })
    .await;
    add_user(&node, "alice", "correct horse").await;
    let attacker = Api::from(&node, "203.0.113.7");
    // Every guess names another account (missing ones included): the address's bucket
    // (burst 20) runs out all the same.
    for i in 0..20 {
        let reply = attacker.login(&format!("user{i}"), "guess").await;
        assert_eq!(reply.status, 403, "guess {i}: {}", reply.body);
    }
    attacker.login("user-new", "guess").await.assert_limited("the 21st guess from one address");
    attacker.login("alice", "correct horse").await.assert_limited("any login from that address");
    // Alice, from her own address behind the same proxy, logs in.
    let alice = Api::from(&node, "198.51.100.20");
    assert_eq!(alice.login("alice", "correct horse").await.status, 200);
    node.shutdown().await;

    // Without trusted proxies the header is ignored: rotating it does not escape the limit.
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    for i in 0..20 {
        let reply = Api::from(&node, &format!("203.0.113.{i}")).login(&format!("user{i}"), "guess").await;
        assert_eq!(reply.status, 403, "guess {i}: {}", reply.body);
    }
    Api::from(&node, "203.0.113.99").login("user-new", "guess").await.assert_limited("a forged X-Forwarded-For");
    node.shutdown().await;
}

#[tokio::test]
async fn a_duty_officer_posting_fast_is_never_limited_but_a_flood_is() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    add_user(&node, "officer", "correct horse").await;
    let api = Api::new(&node);
    let token = api.token("officer", "correct horse").await;
    let room = api.create_room(&token, json!({})).await;
    // 200 messages as fast as this machine takes them, ten at a time, with default limits.
    let started = Instant::now();
    for chunk in 0..20 {
        let sends = (0..10).map(|i| {
            let (api, token, room) = (&api, &token, &room);
            async move { api.send(token, room, &format!("m{}", chunk * 10 + i)).await }
        });
        for reply in join_all(sends).await {
            assert_eq!(reply.status, 200, "a fast poster is not limited: {}", reply.body);
        }
    }
    eprintln!("200 messages in {:?}", started.elapsed());
    node.shutdown().await;

    // The same node with a small sends bucket: the flood is cut off with 429, state events
    // and redactions included.
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.encrypt_new_rooms = false;
        c.rate_limits = limits(|l| l.send_per_user = Limit::new(5, 0.01));
    })
    .await;
    add_user(&node, "flooder", "correct horse").await;
    let api = Api::new(&node);
    let token = api.token("flooder", "correct horse").await;
    let room = api.create_room(&token, json!({})).await;
    let mut first = None;
    for i in 0..5 {
        let reply = api.send(&token, &room, &format!("f{i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        first.get_or_insert(reply.body["event_id"].as_str().unwrap().to_owned());
    }
    api.send(&token, &room, "f5").await.assert_limited("the sixth message");
    let topic = json!({ "topic": "flood" });
    api.json(Method::PUT, &["rooms", &room, "state", "m.room.topic", ""], Some(&token), topic)
        .await
        .assert_limited("a state event");
    let first = first.unwrap();
    api.json(Method::PUT, &["rooms", &room, "redact", &first, "r1"], Some(&token), json!({}))
        .await
        .assert_limited("a redaction");
    node.shutdown().await;
}

#[tokio::test]
async fn joins_invites_uploads_and_registrations_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.encrypt_new_rooms = false;
        c.registration = Registration::Open;
        c.rate_limits = limits(|l| {
            l.join_per_user = Limit::new(2, 0.01);
            l.invite_per_user = Limit::new(2, 0.01);
            l.upload_per_user = Limit::new(2, 0.01);
            l.register_per_ip = Limit::new(2, 0.01);
        });
    })
    .await;
    for name in ["owner", "guest", "x1", "x2", "x3"] {
        add_user(&node, name, "correct horse").await;
    }
    let api = Api::new(&node);
    let owner = api.token("owner", "correct horse").await;
    let guest = api.token("guest", "correct horse").await;

    let mut public = Vec::new();
    for _ in 0..3 {
        public.push(api.create_room(&owner, json!({ "preset": "public_chat" })).await);
    }
    for room in &public[..2] {
        let reply = api.json(Method::POST, &["join", room], Some(&guest), json!({})).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    api.json(Method::POST, &["rooms", &public[2], "join"], Some(&guest), json!({}))
        .await
        .assert_limited("a third join");

    let room = api.create_room(&owner, json!({})).await;
    for invitee in ["x1", "x2"] {
        let body = json!({ "user_id": format!("@{invitee}:tocsin.test") });
        let reply = api.json(Method::POST, &["rooms", &room, "invite"], Some(&owner), body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let body = json!({ "user_id": "@x3:tocsin.test" });
    api.json(Method::POST, &["rooms", &room, "invite"], Some(&owner), body).await.assert_limited("a third invite");

    let upload = |n: u8| {
        let url = {
            let mut url = api.base.clone();
            url.path_segments_mut().unwrap().extend(["_matrix", "media", "v3", "upload"]);
            url
        };
        api.http.post(url).bearer_auth(&owner).header("content-type", "application/octet-stream").body(vec![n; 64])
    };
    for n in 0..2 {
        assert_eq!(upload(n).send().await.unwrap().status(), 200);
    }
    let resp = upload(2).send().await.unwrap();
    let reply = Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.json().await.unwrap_or(Value::Null),
    };
    reply.assert_limited("a third upload");

    // Only requests completing a stage count; the first one, which starts the session, does not.
    for name in ["r1", "r2"] {
        let mut body = json!({ "username": name, "password": "pw-123456" });
        let first = api.json(Method::POST, &["register"], None, body.clone()).await;
        assert_eq!(first.status, 401, "{}", first.body);
        body["auth"] = json!({ "type": "m.login.dummy", "session": first.body["session"] });
        let reply = api.json(Method::POST, &["register"], None, body).await;
        assert_eq!(reply.status, 200, "registering {name}: {}", reply.body);
    }
    let body =
        json!({ "username": "r3", "password": "pw-123456", "auth": { "type": "m.login.dummy", "session": "x" } });
    api.json(Method::POST, &["register"], None, body).await.assert_limited("a third registration");
    node.shutdown().await;
}

#[tokio::test]
async fn switched_off_nothing_is_limited() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.rate_limits = RateLimitConfig::off()).await;
    add_user(&node, "alice", "correct horse").await;
    let api = Api::new(&node);
    for _ in 0..10 {
        assert_eq!(api.login("alice", "guess").await.status, 403);
    }
    assert_eq!(api.login("alice", "correct horse").await.status, 200);
    node.shutdown().await;
}

/// Median time of a refused login.
async fn median_login(api: &Api, user: &str, samples: &mut Vec<Duration>) {
    let t = Instant::now();
    let reply = api.login(user, "wrong password").await;
    samples.push(t.elapsed());
    assert_eq!(reply.status, 403, "{}", reply.body);
}

#[tokio::test]
async fn an_unknown_account_takes_as_long_to_refuse_as_a_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.rate_limits = RateLimitConfig::off()).await;
    add_user(&node, "alice", "correct horse").await;
    let api = Api::new(&node);
    // Warm up connections and the hashing threads' buffers.
    for user in ["alice", "nobody", "alice", "nobody"] {
        let _ = api.login(user, "warm up").await;
    }
    let (mut real, mut missing) = (Vec::new(), Vec::new());
    for i in 0..25 {
        median_login(&api, "alice", &mut real).await;
        median_login(&api, &format!("nobody{i}"), &mut missing).await;
    }
    real.sort();
    missing.sort();
    let (real, missing) = (real[real.len() / 2], missing[missing.len() / 2]);
    let ratio = real.as_secs_f64() / missing.as_secs_f64();
    eprintln!("median refusal: existing account {real:?}, missing account {missing:?}, ratio {ratio:.2}");
    assert!((0.5..2.0).contains(&ratio), "existing {real:?} vs missing {missing:?}");
    node.shutdown().await;
}
