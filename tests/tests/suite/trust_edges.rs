//! Trust at the edges: a member without power cannot take over the directory, files cannot run
//! script on the node's origin, strangers cannot make the node fetch from its peers, plaintext
//! of any message type is refused where policy wants encryption, a malformed body gets an error
//! and not a dropped connection, and no token reaches a log line.

use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tocsin_tests::cluster::Cluster;

use crate::common;

const PW: &str = "correct horse";

/// Raw Client-Server calls against one node.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: String) -> Self {
        Self { http: reqwest::Client::new(), base }
    }

    async fn login(&self, name: &str) -> String {
        let body =
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": PW});
        let (status, v) = self.call(None, Method::POST, "/_matrix/client/v3/login", Some(body)).await;
        assert_eq!(status, 200, "{v}");
        v["access_token"].as_str().expect("login gives a token").to_owned()
    }

    async fn call(&self, token: Option<&str>, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{path}: no answer: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Creates a public room as `token`'s user and returns its id.
    async fn public_room(&self, token: &str) -> String {
        let body = json!({"preset": "public_chat", "name": "Levee works", "topic": "internal: contractor rota"});
        let (status, v) = self.call(Some(token), Method::POST, "/_matrix/client/v3/createRoom", Some(body)).await;
        assert_eq!(status, 200, "{v}");
        v["room_id"].as_str().unwrap().to_owned()
    }
}

fn alias_path(localpart: &str) -> String {
    format!("/_matrix/client/v3/directory/room/%23{localpart}%3Atocsin.test")
}

/// A member with power 0 cannot delete someone else's alias nor list the room in the public
/// directory; the alias's creator, a member with power and a server admin can. A publish
/// without `visibility` is accepted (the spec makes it optional).
#[tokio::test]
async fn only_creators_and_powerful_members_change_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |_| {}).await;
    for name in ["alice", "bob"] {
        common::add_user(&node, name, PW).await;
    }
    node.services.users.create_account("root", Some(PW), None, true).await.unwrap();
    let api = Api::new(node.base_url());
    let (alice, bob, root) = (api.login("alice").await, api.login("bob").await, api.login("root").await);
    let room = api.public_room(&alice).await;
    let (status, v) =
        api.call(Some(&bob), Method::POST, &format!("/_matrix/client/v3/join/{room}"), Some(json!({}))).await;
    assert_eq!(status, 200, "{v}");

    // Alice (creator, power 100) names the room; Bob (power 0) may not delete or re-point it.
    let put_alias = |token: String, localpart: &'static str| {
        let api = &api;
        let room = room.clone();
        async move { api.call(Some(&token), Method::PUT, &alias_path(localpart), Some(json!({"room_id": room}))).await }
    };
    assert_eq!(put_alias(alice.clone(), "levee").await.0, 200);
    let (status, v) = api.call(Some(&bob), Method::DELETE, &alias_path("levee"), None).await;
    assert_eq!((status, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{v}");
    let (status, v) = api.call(None, Method::GET, &alias_path("levee"), None).await;
    assert_eq!((status, v["room_id"].as_str()), (200, Some(room.as_str())), "the alias still resolves: {v}");

    // Bob may delete an alias he made himself; Alice (power) and an admin may delete his.
    assert_eq!(put_alias(bob.clone(), "bobs").await.0, 200);
    assert_eq!(api.call(Some(&bob), Method::DELETE, &alias_path("bobs"), None).await.0, 200);
    assert_eq!(put_alias(bob.clone(), "bobs2").await.0, 200);
    assert_eq!(api.call(Some(&alice), Method::DELETE, &alias_path("bobs2"), None).await.0, 200);
    assert_eq!(put_alias(bob.clone(), "bobs3").await.0, 200);
    assert_eq!(api.call(Some(&root), Method::DELETE, &alias_path("bobs3"), None).await.0, 200);
    assert_eq!(api.call(None, Method::GET, &alias_path("bobs3"), None).await.0, 404);

    // Bob cannot publish the room: the unauthenticated directory stays empty.
    let list = format!("/_matrix/client/v3/directory/list/room/{room}");
    let (status, v) = api.call(Some(&bob), Method::PUT, &list, Some(json!({"visibility": "public"}))).await;
    assert_eq!((status, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{v}");
    let (status, v) = api.call(None, Method::GET, "/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["chunk"].as_array().map(Vec::len), Some(0), "name and topic must not be public: {v}");

    // Alice publishes with a body without `visibility` (public by default).
    let (status, v) = api.call(Some(&alice), Method::PUT, &list, Some(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = api.call(None, Method::GET, "/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(v["chunk"][0]["room_id"].as_str(), Some(room.as_str()), "{v}");
    // Bob cannot take it out again either; an admin can.
    let private = Some(json!({"visibility": "private"}));
    assert_eq!(api.call(Some(&bob), Method::PUT, &list, private.clone()).await.0, 403);
    assert_eq!(api.call(Some(&root), Method::PUT, &list, private).await.0, 200);
    let (_, v) = api.call(None, Method::GET, "/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(v["chunk"].as_array().map(Vec::len), Some(0), "{v}");
    node.shutdown().await;
}

async fn upload(api: &Api, token: &str, content_type: &str, bytes: &[u8]) -> String {
    let response = api
        .http
        .post(format!("{}/_matrix/media/v3/upload", api.base))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let v: Value = response.json().await.unwrap();
    v["content_uri"].as_str().unwrap().strip_prefix("mxc://").unwrap().to_owned()
}

async fn download(api: &Api, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = api.http.get(format!("{}{path}", api.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// An SVG (with a charset parameter) is served as an attachment, a PNG inline, and every file
/// response (download, named download, thumbnail, legacy and authenticated) carries a sandboxing
/// CSP and `nosniff`.
#[tokio::test]
async fn files_are_served_so_they_cannot_run_script() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |_| {}).await;
    common::add_user(&node, "alice", PW).await;
    let api = Api::new(node.base_url());
    let alice = api.login("alice").await;
    let svg = upload(&api, &alice, "image/svg+xml; charset=utf-8", b"<svg onload=\"alert(1)\"/>").await;
    let png = upload(&api, &alice, "image/png", b"\x89PNG\r\n\x1a\n").await;
    let html = upload(&api, &alice, "Text/HTML", b"<script>alert(1)</script>").await;

    for (mxc, inline) in [(&svg, false), (&png, true), (&html, false)] {
        for (path, token) in [
            (format!("/_matrix/client/v1/media/download/{mxc}"), Some(alice.as_str())),
            (format!("/_matrix/client/v1/media/download/{mxc}/file.bin"), Some(alice.as_str())),
            (format!("/_matrix/client/v1/media/thumbnail/{mxc}?width=32&height=32"), Some(alice.as_str())),
            (format!("/_matrix/media/v3/download/{mxc}"), None),
            (format!("/_matrix/media/v3/download/{mxc}/file.bin"), None),
            (format!("/_matrix/media/v3/thumbnail/{mxc}?width=32&height=32"), None),
        ] {
            let response = download(&api, token, &path).await;
            if path.contains("/thumbnail/") {
                // None of these is a decodable image: no thumbnail, and never the file itself.
                assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
                let body = response.text().await.unwrap_or_default();
                assert!(!body.contains("alert(1)"), "{path}: {body}");
                continue;
            }
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let disposition = header(&response, "content-disposition");
            let want = if inline { "inline" } else { "attachment" };
            assert!(disposition.starts_with(want), "{path}: {disposition}");
            let csp = header(&response, "content-security-policy");
            assert!(csp.contains("sandbox") && csp.contains("script-src 'none'"), "{path}: {csp:?}");
            assert_eq!(header(&response, "x-content-type-options"), "nosniff", "{path}");
        }
    }
    node.shutdown().await;
}

/// A stranger (no access token) cannot make a node fetch another server's file: the legacy
/// download answers 404 for a remote file not kept here. After a user's authenticated download
/// brought a copy, the legacy API serves the copy, but not when asked with `allow_remote=false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strangers_cannot_make_the_node_fetch_remote_media() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test"]).unwrap();
    let (a, b) = (cluster.start(0).await.unwrap(), cluster.start(1).await.unwrap());
    a.services.users.create_account("alice", Some(PW), None, false).await.unwrap();
    b.services.users.create_account("bob", Some(PW), None, false).await.unwrap();
    let (on_a, on_b) = (Api::new(a.base_url()), Api::new(b.base_url()));
    let alice = on_a.login("alice").await;
    let bob = on_b.login("bob").await;
    let mxc = upload(&on_a, &alice, "text/plain", b"river district evacuation map").await;

    let legacy = format!("/_matrix/media/v3/download/{mxc}");
    let response = download(&on_b, None, &legacy).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "no fetch for a stranger");
    assert!(b.services.media.get_remote(&a.server_name, mxc.split('/').nth(1).unwrap()).await.unwrap().is_none());

    let response = download(&on_b, Some(&bob), &format!("/_matrix/client/v1/media/download/{mxc}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"river district evacuation map");

    assert_eq!(download(&on_b, None, &legacy).await.status(), StatusCode::OK, "the kept copy is served");
    let refused = download(&on_b, None, &format!("{legacy}?allow_remote=false")).await;
    assert_eq!(refused.status(), StatusCode::NOT_FOUND, "allow_remote=false is honoured");
    a.shutdown().await;
    b.shutdown().await;
}

const ENCRYPTED_POLICY: &str = r#"
[room_defaults]
encryption = true
"#;

/// Where the policy wants encryption, an encrypted room refuses plaintext of every message
/// type (stickers, polls stable and unstable, custom types with a body), naming the rule;
/// encrypted events and bodiless custom events still pass.
#[tokio::test]
async fn encrypted_rooms_refuse_plaintext_of_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, ENCRYPTED_POLICY).unwrap();
    let node = common::start(&dir.path().join("data"), |c| c.policy = Some(policy_path.clone())).await;
    common::add_user(&node, "alice", PW).await;
    let api = Api::new(node.base_url());
    let alice = api.login("alice").await;
    let (status, v) = api
        .call(Some(&alice), Method::POST, "/_matrix/client/v3/createRoom", Some(json!({"preset": "private_chat"})))
        .await;
    assert_eq!(status, 200, "{v}");
    let room = v["room_id"].as_str().unwrap().to_owned();
    let (status, v) = api
        .call(Some(&alice), Method::GET, &format!("/_matrix/client/v3/rooms/{room}/state/m.room.encryption/"), None)
        .await;
    assert_eq!(status, 200, "the policy makes the room encrypted: {v}");

    let send = |kind: &'static str, txn: &'static str, content: Value| {
        let (api, alice, room) = (&api, alice.clone(), room.clone());
        async move {
            api.call(
                Some(&alice),
                Method::PUT,
                &format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"),
                Some(content),
            )
            .await
        }
    };
    let sticker = json!({"body": "levee breach photo", "url": "mxc://tocsin.test/abc", "info": {}});
    let poll = json!({"org.matrix.msc3381.poll.start": {"question": {"body": "Evacuate?"}, "answers": []}, "body": "Evacuate?"});
    for (kind, txn, content) in [
        ("m.sticker", "t1", sticker),
        ("m.poll.start", "t2", json!({"m.text": [{"body": "Evacuate?"}]})),
        ("org.matrix.msc3381.poll.start", "t3", poll),
        ("m.poll.response", "t4", json!({})),
        ("org.example.custom", "t5", json!({"body": "plaintext under another name"})),
        ("m.room.message", "t6", json!({"msgtype": "m.text", "body": "hello"})),
    ] {
        let (status, v) = send(kind, txn, content).await;
        assert_eq!((status, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{kind}: {v}");
        assert!(v["error"].as_str().unwrap_or("").contains("policy rule `room_defaults.encryption`"), "{kind}: {v}");
    }
    let ciphertext = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "sender_key": "k", "device_id": "D", "session_id": "s"});
    assert_eq!(send("m.room.encrypted", "t7", ciphertext).await.0, 200, "encrypted events pass");
    assert_eq!(send("org.example.ping", "t8", json!({"seq": 1})).await.0, 200, "bodiless custom events pass");
    node.shutdown().await;
}

/// Malformed bodies get a 4xx JSON error and the node keeps answering: `/login` with `{}` made
/// ruma panic and the connection drop.
#[tokio::test]
async fn malformed_bodies_get_an_error_not_a_dropped_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |_| {}).await;
    common::add_user(&node, "alice", PW).await;
    let api = Api::new(node.base_url());
    let (status, v) = api.call(None, Method::POST, "/_matrix/client/v3/login", Some(json!({}))).await;
    assert_eq!((status, v["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("type"), "the error says what is missing: {v}");
    let alice = api.login("alice").await;

    let junk =
        [json!({}), json!([]), json!("x"), json!(7), json!({"type": 5}), json!({"auth": {}}), json!({"auth": []})];
    let endpoints: &[(Method, &str, bool)] = &[
        (Method::POST, "/_matrix/client/v3/login", false),
        (Method::POST, "/_matrix/client/v3/register", false),
        (Method::POST, "/_matrix/client/v3/delete_devices", true),
        (Method::POST, "/_matrix/client/v3/keys/device_signing/upload", true),
        (Method::POST, "/_matrix/client/v3/pushers/set", true),
        (Method::PUT, "/_matrix/client/v3/room_keys/keys?version=1", true),
        (Method::POST, "/_matrix/client/v3/room_keys/version", true),
        (Method::POST, "/_matrix/client/v3/account/password", true),
        (Method::POST, "/_matrix/client/v3/user/%40alice%3Atocsin.test/filter", true),
        (Method::POST, "/_matrix/client/v3/keys/upload", true),
        (Method::POST, "/_matrix/client/v3/createRoom", true),
    ];
    for (method, path, authed) in endpoints {
        for body in &junk {
            let token = authed.then_some(alice.as_str());
            let (status, v) = api.call(token, method.clone(), path, Some(body.clone())).await;
            assert!(status < 500, "{method} {path} {body}: {status} {v}");
            if status >= 400 {
                assert!(v["errcode"].is_string(), "{method} {path} {body}: {v}");
            }
        }
    }
    let (status, _) = api.call(None, Method::GET, "/_matrix/client/versions", None).await;
    assert_eq!(status, 200, "the node still answers");
    node.shutdown().await;
}

/// The log sink of [`no_token_reaches_a_log_line`]: everything the node logs, in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// With the node logging at TRACE, requests carrying tokens in the query (an unknown endpoint,
/// a wrong method, a real endpoint, a body that made the node panic) and in the header never
/// print them.
// One thread, so the node's tasks log to this test's subscriber (a thread-local default).
#[tokio::test(flavor = "current_thread")]
async fn no_token_reaches_a_log_line() {
    use tracing_subscriber::util::SubscriberInitExt;

    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = subscriber.set_default();

    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |_| {}).await;
    common::add_user(&node, "alice", PW).await;
    let api = Api::new(node.base_url());
    let token = api.login("alice").await;
    let secret = "SECRETQUERYTOKEN";
    for (method, path) in [
        (Method::GET, format!("/_matrix/client/v3/no_such_endpoint?access_token={secret}&x=1")),
        (Method::DELETE, format!("/_matrix/client/versions?access_token={secret}")),
        (Method::GET, format!("/_matrix/client/v3/account/whoami?access_token={token}")),
        (Method::GET, format!("/_matrix/client/v3/no_such_endpoint?password={secret}")),
        (Method::GET, format!("/_matrix/client/v3/no_such_endpoint?Access%5Ftoken={secret}")),
    ] {
        let (status, v) = api.call(None, method.clone(), &path, None).await;
        assert!(status < 500, "{method} {path}: {status} {v}");
    }
    // A request that made the node panic: the answer is another test's business, the log is ours.
    let login = format!("{}/_matrix/client/v3/login?access_token={secret}", api.base);
    let _ = api.http.post(login).json(&json!({})).send().await;
    let (status, _) = api.call(Some(&token), Method::GET, "/_matrix/client/v3/no_such_endpoint", None).await;
    assert_eq!(status, 404);
    node.shutdown().await;

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(logs.contains("unrecognized endpoint"), "the capture works: {logs}");
    assert!(logs.contains("<redacted>"), "the URI is logged, redacted: {logs}");
    assert!(!logs.contains(secret), "a query secret reached the log");
    assert!(!logs.contains(&token), "an access token reached the log");
}
