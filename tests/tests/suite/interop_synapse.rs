//! Federation interop with a real Synapse on loopback (issue "Federation", point 7).
//!
//! Synapse runs as `127.0.0.2:<port>` (TLS federation listener, plain client listener), Tocsin
//! in-process as `127.0.0.3:<port>`; both trust one private CA made by
//! `tests/interop/synapse-fed.sh certs`, and the server names are IP literals, so nothing needs
//! DNS. The script installs the pinned Synapse into `.venv-synapse` when it is missing (network to
//! PyPI needed once).
//!
//! Part of `cargo test --workspace` (and so of `.ci/run`): it needs `python3` (3.10 or later,
//! with `venv`), `curl`, and PyPI the first time. About 30 s once Synapse is installed (the
//! install takes about a minute more).
//!
//! Run alone: `cargo test -p tocsin-tests --test suite interop_synapse -- --nocapture`.
//! Set `INTEROP_DIR=/some/dir` to keep Synapse's data and logs (`homeserver.log`) afterwards, and
//! `RUST_LOG=tocsin_node=debug` for Tocsin's side.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use common::eventually;
use matrix_sdk::{
    Client, RoomState,
    room::MessagesOptions,
    ruma::{
        EventId, OwnedRoomId, RoomId, RoomVersionId, UInt, UserId,
        api::client::room::create_room::v3::Request as CreateRoom,
        events::{reaction::ReactionEventContent, relation::Annotation, room::message::RoomMessageEventContent},
    },
};
use serde_json::{Value, json};

use crate::{common, fed::logs};

const SYNAPSE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const TOCSIN_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Federation round trips through Synapse's queues: generous, the happy path takes seconds.
const FED_SECS: u64 = 60;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/synapse-fed.sh")
}

/// Runs `synapse-fed.sh ARGS` and fails the test with its output if it fails.
async fn run_script(args: &[&str], envs: &[(&str, String)]) {
    let out = tokio::process::Command::new("bash")
        .arg(script())
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("bash runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprint!("{text}");
    assert!(out.status.success(), "synapse-fed.sh {args:?} failed:\n{text}");
}

/// A port the kernel calls free on `ip` right now.
fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0)).expect("bind a loopback address").local_addr().unwrap().port()
}

/// A running Synapse; stopped when dropped, also when the test panics.
struct Synapse {
    dir: PathBuf,
    server_name: String,
    client_url: String,
}

impl Synapse {
    async fn start(dir: &Path, certs: &Path) -> Self {
        let fed_port = free_port(SYNAPSE_IP);
        let client_port = loop {
            let p = free_port(SYNAPSE_IP);
            if p != fed_port {
                break p;
            }
        };
        let server_name = format!("{SYNAPSE_IP}:{fed_port}");
        let dir = dir.join("synapse");
        let envs = [("SYNAPSE_CLIENT_PORT", client_port.to_string()), ("SYNAPSE_CERTS", certs.display().to_string())];
        // Built first so that a failed start still stops whatever came up.
        let mut guard = Self { dir: dir.clone(), server_name: server_name.clone(), client_url: String::new() };
        run_script(
            &["start", dir.to_str().unwrap(), &server_name, &SYNAPSE_IP.to_string(), &fed_port.to_string()],
            &envs,
        )
        .await;
        guard.client_url = format!("http://{SYNAPSE_IP}:{client_port}");
        guard
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.to_str() {
            let _ = std::process::Command::new("bash").arg(script()).args(["stop", dir]).status();
        }
    }
}

fn enc(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

static TXN: AtomicU64 = AtomicU64::new(0);

/// A user talking the raw Client-Server API: the Synapse users, and Tocsin users where the
/// matrix-sdk has no one-liner (power levels, state reads).
struct Cs {
    http: reqwest::Client,
    base: String,
    token: String,
    user_id: String,
    /// `next_batch` of the last `/sync` and every room invited to so far (see `invites`).
    sync: std::sync::Mutex<(Option<String>, HashSet<String>)>,
}

impl Cs {
    /// Registers `name` with `m.login.dummy` (Synapse runs with open registration).
    async fn register(base: &str, name: &str) -> Self {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let body = json!({
            "username": name,
            "password": "correct horse battery staple",
            "auth": { "type": "m.login.dummy" },
            "inhibit_login": false,
        });
        let r = http.post(format!("{base}/_matrix/client/v3/register")).json(&body).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "register {name} on {base}: {status} {v}");
        Self {
            http,
            base: base.to_owned(),
            token: v["access_token"].as_str().unwrap().to_owned(),
            user_id: v["user_id"].as_str().unwrap().to_owned(),
            sync: Default::default(),
        }
    }

    /// The same user as a logged-in matrix-sdk client.
    fn of(client: &Client) -> Self {
        Self {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: client.homeserver().as_str().trim_end_matches('/').to_owned(),
            token: client.access_token().expect("logged in"),
            user_id: client.user_id().expect("logged in").to_string(),
            sync: Default::default(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req =
            self.http.request(method, format!("{}/_matrix/client/v3{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&status), "{} {method} {path}: {status} {v}", self.user_id);
        v
    }

    async fn create_room(&self, body: Value) -> OwnedRoomId {
        let v = self.ok(reqwest::Method::POST, "/createRoom", Some(&body)).await;
        RoomId::parse(v["room_id"].as_str().unwrap()).unwrap()
    }

    async fn send(&self, room: &RoomId, kind: &str, content: Value) -> String {
        let txn = format!("interop{}", TXN.fetch_add(1, Ordering::Relaxed));
        let path = format!("/rooms/{}/send/{kind}/{txn}", enc(room.as_str()));
        self.ok(reqwest::Method::PUT, &path, Some(&content)).await["event_id"].as_str().unwrap().to_owned()
    }

    async fn put_state(&self, room: &RoomId, kind: &str, key: &str, content: Value) -> String {
        let path = format!("/rooms/{}/state/{kind}/{}", enc(room.as_str()), enc(key));
        self.ok(reqwest::Method::PUT, &path, Some(&content)).await["event_id"].as_str().unwrap().to_owned()
    }

    async fn state(&self, room: &RoomId, kind: &str, key: &str) -> Option<Value> {
        let path = format!("/rooms/{}/state/{kind}/{}", enc(room.as_str()), enc(key));
        let (status, v) = self.call(reqwest::Method::GET, &path, None).await;
        (status == 200).then_some(v)
    }

    /// Gives `user` power `level` in `room` (read, modify, write the power levels).
    async fn grant(&self, room: &RoomId, user: &str, level: i64) {
        let mut pl = self.state(room, "m.room.power_levels", "").await.expect("power levels readable");
        pl["users"][user] = json!(level);
        self.put_state(room, "m.room.power_levels", "", pl).await;
    }

    /// The newest 200 events of `room` as this user sees them.
    async fn timeline(&self, room: &RoomId) -> Vec<Value> {
        let path = format!("/rooms/{}/messages?dir=b&limit=200", enc(room.as_str()));
        let v = self.ok(reqwest::Method::GET, &path, None).await;
        v["chunk"].as_array().cloned().unwrap_or_default()
    }

    /// Rooms this user has been invited to so far, from immediate incremental `/sync`s. Synapse
    /// caches an initial `/sync` (no `since`) for two minutes, so repeating one would not show an
    /// invite that arrives later.
    async fn invites(&self) -> HashSet<String> {
        let since = self.sync.lock().unwrap().0.clone();
        let path = match since {
            Some(since) => format!("/sync?timeout=0&since={}", enc(&since)),
            None => "/sync?timeout=0".to_owned(),
        };
        let v = self.ok(reqwest::Method::GET, &path, None).await;
        let mut sync = self.sync.lock().unwrap();
        sync.0 = v["next_batch"].as_str().map(str::to_owned);
        if let Some(rooms) = v["rooms"]["invite"].as_object() {
            sync.1.extend(rooms.keys().cloned());
        }
        sync.1.clone()
    }
}

/// Polls `check` until it returns `Some`, for up to `secs`, then fails naming `what`.
async fn until<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "within {secs}s: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The newest 200 events of `room` as the matrix-sdk client sees them, as JSON.
async fn sdk_timeline(client: &Client, room: &RoomId) -> Option<Vec<Value>> {
    let room = client.get_room(room)?;
    let mut options = MessagesOptions::backward();
    options.limit = UInt::from(200u32);
    let page = room.messages(options).await.ok()?;
    Some(page.chunk.iter().filter_map(|e| serde_json::from_str(e.raw().json().get()).ok()).collect())
}

fn has_text(events: &[Value], body: &str) -> bool {
    events.iter().any(|e| e["type"] == "m.room.message" && e["content"]["body"] == body)
}

fn has_topic(events: &[Value], topic: &str) -> bool {
    events.iter().any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == topic)
}

fn has_reaction(events: &[Value], target: &str, key: &str) -> bool {
    events.iter().any(|e| {
        let rel = &e["content"]["m.relates_to"];
        e["type"] == "m.reaction" && rel["rel_type"] == "m.annotation" && rel["event_id"] == target && rel["key"] == key
    })
}

fn has_membership(events: &[Value], user: &str, membership: &str) -> bool {
    events
        .iter()
        .any(|e| e["type"] == "m.room.member" && e["state_key"] == user && e["content"]["membership"] == membership)
}

fn has_power(events: &[Value], user: &str, level: i64) -> bool {
    events.iter().any(|e| e["type"] == "m.room.power_levels" && e["content"]["users"][user] == level)
}

/// Waits (syncing) until the matrix-sdk client's timeline of `room` satisfies `pred`.
async fn sdk_sees(client: &Client, room: &RoomId, what: &str, pred: impl Fn(&[Value]) -> bool) {
    until(FED_SECS, &format!("the Tocsin user sees {what}"), || async {
        common::sync(client).await;
        sdk_timeline(client, room).await.filter(|t| pred(t)).map(|_| ())
    })
    .await;
}

/// Waits until the raw client's timeline of `room` satisfies `pred`.
async fn cs_sees(user: &Cs, room: &RoomId, what: &str, pred: impl Fn(&[Value]) -> bool) {
    until(FED_SECS, &format!("{} sees {what}", user.user_id), || async {
        let t = user.timeline(room).await;
        pred(&t).then_some(())
    })
    .await;
}

/// A shorter round in room `version`: Synapse creates a room and Tocsin joins, then the other
/// way round; a message goes each way in both rooms.
async fn round_in_version(version: &str, alice: &Cs, bob: &Client, tocsin_name: &str) {
    let bob_id = bob.user_id().expect("logged in").to_string();
    let alice_id = UserId::parse(&alice.user_id).unwrap();

    let room =
        alice.create_room(json!({ "preset": "private_chat", "room_version": version, "invite": [bob_id] })).await;
    let create = alice.state(&room, "m.room.create", "").await.expect("alice reads the create event");
    assert_eq!(create["room_version"], version);
    eventually(bob, FED_SECS, || async { bob.get_room(&room).filter(|r| r.state() == RoomState::Invited) }).await;
    let bob_room = bob.join_room_by_id(&room).await.expect("bob joins the Synapse room over federation");
    cs_sees(alice, &room, "bob's join", |t| has_membership(t, &bob_id, "join")).await;
    let text = format!("v{version} synapse room: from synapse");
    alice.send(&room, "m.room.message", json!({ "msgtype": "m.text", "body": text })).await;
    sdk_sees(bob, &room, "alice's message", |t| has_text(t, &text)).await;
    let text = format!("v{version} synapse room: from tocsin");
    bob_room.send(RoomMessageEventContent::text_plain(&text)).await.unwrap();
    cs_sees(alice, &room, "bob's message", |t| has_text(t, &text)).await;

    let mut request = CreateRoom::new();
    request.room_version = Some(RoomVersionId::try_from(version).unwrap());
    request.invite = vec![alice_id.clone()];
    let bob_room = bob.create_room(request).await.expect("bob creates a room and invites alice");
    let room = bob_room.room_id().to_owned();
    until(FED_SECS, "alice gets the invite", || async {
        alice.invites().await.contains(&room.to_string()).then_some(())
    })
    .await;
    let join = format!("/join/{}?server_name={}&via={}", enc(room.as_str()), enc(tocsin_name), enc(tocsin_name));
    alice.ok(reqwest::Method::POST, &join, Some(&json!({}))).await;
    sdk_sees(bob, &room, "alice's join", |t| has_membership(t, alice_id.as_str(), "join")).await;
    let create = alice.state(&room, "m.room.create", "").await.expect("alice reads the create event");
    assert_eq!(create["room_version"], version);
    let text = format!("v{version} tocsin room: from tocsin");
    bob_room.send(RoomMessageEventContent::text_plain(&text)).await.unwrap();
    cs_sees(alice, &room, "bob's message", |t| has_text(t, &text)).await;
    let text = format!("v{version} tocsin room: from synapse");
    alice.send(&room, "m.room.message", json!({ "msgtype": "m.text", "body": text })).await;
    sdk_sees(bob, &room, "alice's message", |t| has_text(t, &text)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_and_tocsin_federate_both_ways() {
    logs();
    let kept = std::env::var_os("INTEROP_DIR").map(PathBuf::from);
    let temp = tempfile::tempdir().unwrap();
    let root = kept.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&root).unwrap();
    let certs = root.join("certs");

    // Synapse: pinned install (a no-op when .venv-synapse has it), a CA, leaves for both IPs.
    run_script(&["install"], &[]).await;
    run_script(&["certs", certs.to_str().unwrap(), &SYNAPSE_IP.to_string(), &TOCSIN_IP.to_string()], &[]).await;
    let synapse = Synapse::start(&root, &certs).await;
    eprintln!("Synapse {} logs: {}/homeserver.log", synapse.server_name, synapse.dir.display());

    // Tocsin: federation over TLS on 127.0.0.3 with the CA's leaf; trusts the same CA.
    let tocsin_port = free_port(TOCSIN_IP);
    let tocsin_name = format!("{TOCSIN_IP}:{tocsin_port}");
    let synapse_addr: SocketAddr = synapse.server_name.parse().expect("an IP-literal server name");
    let node_dir = root.join("tocsin");
    std::fs::create_dir_all(&node_dir).unwrap();
    let node = common::start(&node_dir, |c| {
        c.server_name = tocsin_name.clone();
        c.encrypt_new_rooms = false;
        c.federation_listen = SocketAddr::from((TOCSIN_IP, tocsin_port));
        c.tls_cert = Some(certs.join("127.0.0.3.pem"));
        c.tls_key = Some(certs.join("127.0.0.3.key"));
        c.tls_ca_files = vec![certs.join("ca.pem")];
        c.tls_verify = true;
        // An IP literal needs no pin; the pin makes the address explicit all the same.
        c.federation_pins.insert(synapse.server_name.clone(), synapse_addr);
    })
    .await;

    let alice = Cs::register(&synapse.client_url, "alice").await;
    let bob = common::user(&node, "bob").await;
    let bob_raw = Cs::of(&bob);
    let bob_id = format!("@bob:{tocsin_name}");
    assert_eq!(bob_raw.user_id, bob_id);

    // ---- Synapse creates the room, Tocsin joins ------------------------------------------------
    let room = alice.create_room(json!({ "preset": "private_chat", "name": "From Synapse", "invite": [bob_id] })).await;
    let create = alice.state(&room, "m.room.create", "").await.expect("alice reads the create event");
    // Synapse 1.163's default; the v12 specifics (room id = create event hash, creators'
    // infinite power) are what this round exercises.
    assert_eq!(create["room_version"], "12", "Synapse's default room version");
    eventually(&bob, FED_SECS, || async { bob.get_room(&room).filter(|r| r.state() == RoomState::Invited) }).await;
    let bob_room = bob.join_room_by_id(&room).await.expect("bob joins the Synapse room over federation");
    cs_sees(&alice, &room, "bob's join", |t| has_membership(t, &bob_id, "join")).await;

    alice.grant(&room, &bob_id, 50).await;
    sdk_sees(&bob, &room, "bob's power 50", |t| has_power(t, &bob_id, 50)).await;

    let from_synapse =
        alice.send(&room, "m.room.message", json!({ "msgtype": "m.text", "body": "hello from synapse" })).await;
    sdk_sees(&bob, &room, "alice's message", |t| has_text(t, "hello from synapse")).await;
    let from_tocsin =
        bob_room.send(RoomMessageEventContent::text_plain("hello from tocsin")).await.unwrap().response.event_id;
    cs_sees(&alice, &room, "bob's message", |t| has_text(t, "hello from tocsin")).await;

    alice.put_state(&room, "m.room.topic", "", json!({ "topic": "set on synapse" })).await;
    sdk_sees(&bob, &room, "alice's topic", |t| has_topic(t, "set on synapse")).await;
    bob_raw.put_state(&room, "m.room.topic", "", json!({ "topic": "set on tocsin" })).await;
    cs_sees(&alice, &room, "bob's topic", |t| has_topic(t, "set on tocsin")).await;
    until(FED_SECS, "Synapse's current topic is bob's", || async {
        let topic = alice.state(&room, "m.room.topic", "").await?;
        (topic["topic"] == "set on tocsin").then_some(())
    })
    .await;

    bob_room
        .send(ReactionEventContent::new(Annotation::new(EventId::parse(&from_synapse).unwrap(), "👍".into())))
        .await
        .unwrap();
    cs_sees(&alice, &room, "bob's reaction", |t| has_reaction(t, &from_synapse, "👍")).await;
    let relates = json!({ "rel_type": "m.annotation", "event_id": from_tocsin.as_str(), "key": "✅" });
    alice.send(&room, "m.reaction", json!({ "m.relates_to": relates })).await;
    sdk_sees(&bob, &room, "alice's reaction", |t| has_reaction(t, from_tocsin.as_str(), "✅")).await;

    bob_room.leave().await.expect("bob leaves");
    until(FED_SECS, "Synapse sees bob leave", || async {
        let member = alice.state(&room, "m.room.member", &bob_id).await?;
        (member["membership"] == "leave").then_some(())
    })
    .await;

    // ---- Tocsin creates the room, Synapse joins ------------------------------------------------
    let alice_id = UserId::parse(&alice.user_id).unwrap();
    let mut request = CreateRoom::new();
    request.name = Some("From Tocsin".into());
    request.invite = vec![alice_id.clone()];
    let bob_room = bob.create_room(request).await.expect("bob creates a room and invites alice");
    let room = bob_room.room_id().to_owned();
    until(FED_SECS, "alice gets the invite", || async {
        alice.invites().await.contains(&room.to_string()).then_some(())
    })
    .await;
    let join = format!("/join/{}?server_name={}&via={}", enc(room.as_str()), enc(&tocsin_name), enc(&tocsin_name));
    alice.ok(reqwest::Method::POST, &join, Some(&json!({}))).await;
    sdk_sees(&bob, &room, "alice's join", |t| has_membership(t, alice_id.as_str(), "join")).await;
    let create = alice.state(&room, "m.room.create", "").await.expect("alice reads the create event");
    assert_eq!(create["room_version"], "12", "Tocsin's default room version, as Synapse sees it");

    bob_raw.grant(&room, alice_id.as_str(), 50).await;
    cs_sees(&alice, &room, "alice's power 50", |t| has_power(t, alice_id.as_str(), 50)).await;

    let from_tocsin =
        bob_room.send(RoomMessageEventContent::text_plain("tocsin room: hello")).await.unwrap().response.event_id;
    cs_sees(&alice, &room, "bob's message", |t| has_text(t, "tocsin room: hello")).await;
    let from_synapse =
        alice.send(&room, "m.room.message", json!({ "msgtype": "m.text", "body": "tocsin room: hi back" })).await;
    sdk_sees(&bob, &room, "alice's message", |t| has_text(t, "tocsin room: hi back")).await;

    bob_raw.put_state(&room, "m.room.topic", "", json!({ "topic": "tocsin topic" })).await;
    cs_sees(&alice, &room, "bob's topic", |t| has_topic(t, "tocsin topic")).await;
    alice.put_state(&room, "m.room.topic", "", json!({ "topic": "synapse topic" })).await;
    sdk_sees(&bob, &room, "alice's topic", |t| has_topic(t, "synapse topic")).await;
    until(FED_SECS, "Tocsin's current topic is alice's", || async {
        let topic = bob_raw.state(&room, "m.room.topic", "").await?;
        (topic["topic"] == "synapse topic").then_some(())
    })
    .await;

    let relates = json!({ "rel_type": "m.annotation", "event_id": from_tocsin.as_str(), "key": "👀" });
    alice.send(&room, "m.reaction", json!({ "m.relates_to": relates })).await;
    sdk_sees(&bob, &room, "alice's reaction", |t| has_reaction(t, from_tocsin.as_str(), "👀")).await;
    bob_room
        .send(ReactionEventContent::new(Annotation::new(EventId::parse(&from_synapse).unwrap(), "🙏".into())))
        .await
        .unwrap();
    cs_sees(&alice, &room, "bob's reaction", |t| has_reaction(t, &from_synapse, "🙏")).await;

    alice.ok(reqwest::Method::POST, &format!("/rooms/{}/leave", enc(room.as_str())), Some(&json!({}))).await;
    sdk_sees(&bob, &room, "alice's leave", |t| has_membership(t, alice_id.as_str(), "leave")).await;

    // ---- Older room versions still common on the public federation ---------------------------
    for version in ["10", "11"] {
        round_in_version(version, &alice, &bob, &tocsin_name).await;
    }

    node.shutdown().await;
    drop(synapse);
    if let Some(dir) = kept {
        eprintln!("kept {}", dir.display());
    }
}
