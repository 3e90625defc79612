//! A small Matrix Client-Server API client speaking raw JSON over HTTP.
//!
//! It knows nothing about Tocsin: it talks to any homeserver (Synapse, Tocsin, ...) through the
//! `/_matrix/client/v3` endpoints, so the load generator and scenario tests can point the same
//! code at both. Only loopback homeservers are accepted.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Timeout for ordinary requests; long-polling `/sync` adds its own timeout on top.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// An error answer from the homeserver (`{"errcode": ..., "error": ...}`).
#[derive(Debug, Clone)]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: String,
    pub error: String,
    /// The whole JSON body (UIA answers carry `session` and `flows` here).
    pub body: Value,
}

impl fmt::Display for MatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}: {}", self.status, self.errcode, self.error)
    }
}

impl std::error::Error for MatrixError {}

/// Is `url`'s host a loopback address (127.0.0.0/8, ::1) or `localhost`?
pub fn is_loopback_url(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// How often one request is retried after 429 `M_LIMIT_EXCEEDED` before the error is returned.
const RATE_LIMIT_RETRIES: u32 = 10;

/// A homeserver base URL plus a shared HTTP connection pool.
#[derive(Clone)]
pub struct Homeserver {
    http: reqwest::Client,
    base: Url,
    /// 429 answers seen (and waited out), shared by every clone: the load generator reports it so
    /// a run shows whether the server's rate limits bound.
    rate_limited: Arc<AtomicU64>,
}

impl Homeserver {
    /// `base` is e.g. `http://127.0.0.1:8008`. Refuses anything but loopback.
    pub fn new(base: &str) -> Result<Self> {
        Self::build(base, false)
    }

    /// Like [`Homeserver::new`], but over one HTTP/2 connection (prior knowledge, no TLS), as
    /// behind a reverse proxy: many long-polls share a socket instead of one each.
    pub fn new_http2(base: &str) -> Result<Self> {
        Self::build(base, true)
    }

    fn build(base: &str, http2: bool) -> Result<Self> {
        let base = Url::parse(base).with_context(|| format!("parsing homeserver URL {base:?}"))?;
        if !is_loopback_url(&base) {
            bail!("refusing non-loopback homeserver URL {base}");
        }
        let mut builder =
            reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).timeout(REQUEST_TIMEOUT);
        if http2 {
            builder = builder.http2_prior_knowledge();
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Self { http, base, rate_limited: Arc::default() })
    }

    /// How many 429 answers requests through this homeserver (and its clones) waited out.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Builds `base + /_matrix/client/v3/` + segments (each percent-encoded) + query pairs.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url> {
        let mut url = self.base.clone();
        {
            let mut path =
                url.path_segments_mut().map_err(|()| anyhow!("homeserver URL {} cannot be a base", self.base))?;
            path.pop_if_empty().extend(["_matrix", "client", "v3"]);
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<T> {
        let what = format!("{method} {}", url.path());
        let mut retries = 0;
        let (status, bytes) = loop {
            let mut req = self.http.request(method.clone(), url.clone()).timeout(timeout);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await.with_context(|| format!("{what}: sending"))?;
            let status = resp.status();
            let bytes = resp.bytes().await.with_context(|| format!("{what}: reading the body"))?;
            // A rate-limited request is retried after the wait the server names, as clients do.
            if status == StatusCode::TOO_MANY_REQUESTS && retries < RATE_LIMIT_RETRIES {
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let wait = body.get("retry_after_ms").and_then(Value::as_u64).unwrap_or(1000).min(60_000);
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
                retries += 1;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            break (status, bytes);
        };
        if !status.is_success() {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let err = MatrixError { status, errcode: field("errcode"), error: field("error"), body };
            return Err(anyhow::Error::new(err).context(what));
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!("{what}: decoding the answer: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)]))
        })
    }

    /// `GET /_matrix/client/versions`.
    pub async fn versions(&self) -> Result<Value> {
        let mut url = self.base.clone();
        url.set_path("/_matrix/client/versions");
        self.request(Method::GET, url, None, None, REQUEST_TIMEOUT).await
    }

    /// Registers `username` through User-Interactive Auth with `m.login.dummy`; if the name is
    /// taken, logs in with the password instead.
    pub async fn register_or_login(&self, username: &str, password: &str) -> Result<Session> {
        match self.register(username, password).await {
            Ok(s) => Ok(s),
            Err(e) if matrix_errcode(&e) == Some("M_USER_IN_USE") => {
                self.login(username, password).await.with_context(|| format!("{username} exists; logging in instead"))
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /register`: the first request gets a 401 with a UIA session, the second completes
    /// the `m.login.dummy` stage.
    pub async fn register(&self, username: &str, password: &str) -> Result<Session> {
        let url = self.url(&["register"], &[])?;
        let mut body = json!({
            "username": username,
            "password": password,
            "initial_device_display_name": "tocsin-loadgen",
        });
        let first = self.request::<LoginResponse>(Method::POST, url.clone(), None, Some(&body), REQUEST_TIMEOUT).await;
        let resp = match first {
            Ok(resp) => resp,
            Err(e) => {
                let Some(uia) = e.downcast_ref::<MatrixError>().filter(|m| m.status == 401) else {
                    return Err(e.context(format!("registering {username}")));
                };
                let session = uia
                    .body
                    .get("session")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("registering {username}: 401 without a UIA session"))?
                    .to_owned();
                if !dummy_flow_offered(&uia.body) {
                    bail!("registering {username}: no m.login.dummy flow offered: {}", uia.body);
                }
                body["auth"] = json!({"type": "m.login.dummy", "session": session});
                self.request::<LoginResponse>(Method::POST, url, None, Some(&body), REQUEST_TIMEOUT)
                    .await
                    .with_context(|| format!("registering {username} (UIA dummy stage)"))?
            }
        };
        Ok(Session::from_login(self.clone(), resp))
    }

    /// `POST /login` with `m.login.password`.
    pub async fn login(&self, username: &str, password: &str) -> Result<Session> {
        let url = self.url(&["login"], &[])?;
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": username},
            "password": password,
            "initial_device_display_name": "tocsin-loadgen",
        });
        let resp: LoginResponse = self
            .request(Method::POST, url, None, Some(&body), REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("logging in {username}"))?;
        Ok(Session::from_login(self.clone(), resp))
    }
}

/// The errcode of a [`MatrixError`] anywhere in `e`'s chain.
pub fn matrix_errcode(e: &anyhow::Error) -> Option<&str> {
    e.chain().find_map(|c| c.downcast_ref::<MatrixError>()).map(|m| m.errcode.as_str())
}

fn dummy_flow_offered(uia: &Value) -> bool {
    uia.get("flows").and_then(Value::as_array).is_some_and(|flows| {
        flows
            .iter()
            .any(|f| f.get("stages").and_then(Value::as_array).is_some_and(|s| s.len() == 1 && s[0] == "m.login.dummy"))
    })
}

#[derive(Debug, Deserialize)]
struct LoginResponse {
    user_id: String,
    access_token: String,
    device_id: String,
}

/// A logged-in device.
#[derive(Clone)]
pub struct Session {
    hs: Homeserver,
    pub user_id: String,
    pub device_id: String,
    access_token: String,
}

#[derive(Debug, Deserialize)]
struct RoomIdResponse {
    room_id: String,
}

#[derive(Debug, Deserialize)]
struct EventIdResponse {
    event_id: String,
}

/// The parts of a `/sync` answer the load generator and scenarios look at.
#[derive(Debug, Default, Deserialize)]
pub struct SyncResponse {
    pub next_batch: String,
    #[serde(default)]
    pub rooms: SyncRooms,
}

#[derive(Debug, Default, Deserialize)]
pub struct SyncRooms {
    #[serde(default)]
    pub join: HashMap<String, JoinedRoom>,
    #[serde(default)]
    pub invite: HashMap<String, Value>,
    #[serde(default)]
    pub leave: HashMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct JoinedRoom {
    #[serde(default)]
    pub timeline: Timeline,
}

#[derive(Debug, Default, Deserialize)]
pub struct Timeline {
    #[serde(default)]
    pub events: Vec<RoomEvent>,
    #[serde(default)]
    pub limited: bool,
    pub prev_batch: Option<String>,
}

/// A room event as it appears in a timeline or a `/messages` chunk.
#[derive(Debug, Clone, Deserialize)]
pub struct RoomEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub sender: String,
    #[serde(default)]
    pub content: Value,
}

impl RoomEvent {
    /// `content.body` if it is a string.
    pub fn body(&self) -> Option<&str> {
        self.content.get("body").and_then(Value::as_str)
    }
}

/// A `/messages` answer.
#[derive(Debug, Default, Deserialize)]
pub struct MessagesResponse {
    #[serde(default)]
    pub chunk: Vec<RoomEvent>,
    pub start: Option<String>,
    pub end: Option<String>,
}

/// Direction for `/messages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

impl Session {
    fn from_login(hs: Homeserver, resp: LoginResponse) -> Self {
        Self { hs, user_id: resp.user_id, device_id: resp.device_id, access_token: resp.access_token }
    }

    /// The same device, its requests sent through `hs` (another connection pool to the same
    /// server).
    pub fn via(&self, hs: &Homeserver) -> Session {
        Session { hs: hs.clone(), ..self.clone() }
    }

    pub fn homeserver(&self) -> &Homeserver {
        &self.hs
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<T> {
        let url = self.hs.url(segments, query)?;
        self.hs.request(method, url, Some(&self.access_token), body, timeout).await
    }

    /// `POST /createRoom` with the given body (e.g. `{"preset": "private_chat"}`).
    pub async fn create_room(&self, body: &Value) -> Result<String> {
        let r: RoomIdResponse = self
            .call(Method::POST, &["createRoom"], &[], Some(body), REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("{} creating a room", self.user_id))?;
        Ok(r.room_id)
    }

    /// `POST /rooms/{room}/invite`.
    pub async fn invite(&self, room_id: &str, user_id: &str) -> Result<()> {
        let body = json!({ "user_id": user_id });
        let _: Value = self
            .call(Method::POST, &["rooms", room_id, "invite"], &[], Some(&body), REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("{} inviting {user_id} to {room_id}", self.user_id))?;
        Ok(())
    }

    /// `POST /rooms/{room}/join`.
    pub async fn join(&self, room_id: &str) -> Result<()> {
        let _: Value = self
            .call(Method::POST, &["rooms", room_id, "join"], &[], Some(&json!({})), REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("{} joining {room_id}", self.user_id))?;
        Ok(())
    }

    /// `POST /join/{room}?server_name=...`: a join through another server, for a room this
    /// user's server may not be in yet.
    pub async fn join_via(&self, room_id: &str, server_name: &str) -> Result<()> {
        let _: Value = self
            .call(Method::POST, &["join", room_id], &[("server_name", server_name)], Some(&json!({})), REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("{} joining {room_id} through {server_name}", self.user_id))?;
        Ok(())
    }

    /// `PUT /rooms/{room}/state/{type}/{state_key}`; returns the event id.
    pub async fn put_state(&self, room_id: &str, event_type: &str, state_key: &str, content: &Value) -> Result<String> {
        let r: EventIdResponse = self
            .call(Method::PUT, &["rooms", room_id, "state", event_type, state_key], &[], Some(content), REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("{} setting {event_type} in {room_id}", self.user_id))?;
        Ok(r.event_id)
    }

    /// `GET /rooms/{room}/state/{type}/{state_key}`: the event's content.
    pub async fn state(&self, room_id: &str, event_type: &str, state_key: &str) -> Result<Value> {
        self.call(Method::GET, &["rooms", room_id, "state", event_type, state_key], &[], None, REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("{} reading {event_type} in {room_id}", self.user_id))
    }

    /// `GET /rooms/{room}/joined_members`: how many members the server counts as joined.
    pub async fn joined_member_count(&self, room_id: &str) -> Result<usize> {
        let members: Value = self
            .call(Method::GET, &["rooms", room_id, "joined_members"], &[], None, REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("{} reading the joined members of {room_id}", self.user_id))?;
        Ok(members.get("joined").and_then(Value::as_object).map_or(0, serde_json::Map::len))
    }

    /// `POST /pushers/set`: an HTTP pusher to the push gateway at `notify_url`, keyed by the
    /// user id, in the spec's default `event_id_only` format.
    pub async fn set_http_pusher(&self, notify_url: &str, app_id: &str) -> Result<()> {
        let body = json!({
            "kind": "http",
            "app_id": app_id,
            "pushkey": self.user_id,
            "app_display_name": "tocsin-loadgen",
            "device_display_name": self.device_id,
            "lang": "en",
            "data": { "url": notify_url, "format": "event_id_only" },
        });
        let _: Value = self
            .call(Method::POST, &["pushers", "set"], &[], Some(&body), REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("{} setting a pusher", self.user_id))?;
        Ok(())
    }

    /// `PUT /rooms/{room}/send/{type}/{txn}`; returns the event id.
    pub async fn send_event(&self, room_id: &str, event_type: &str, txn_id: &str, content: &Value) -> Result<String> {
        let r: EventIdResponse = self
            .call(Method::PUT, &["rooms", room_id, "send", event_type, txn_id], &[], Some(content), REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("{} sending {event_type} to {room_id}", self.user_id))?;
        Ok(r.event_id)
    }

    /// Sends an `m.room.message` / `m.text` with `body`.
    pub async fn send_text(&self, room_id: &str, txn_id: &str, body: &str) -> Result<String> {
        let content = json!({ "msgtype": "m.text", "body": body });
        self.send_event(room_id, "m.room.message", txn_id, &content).await
    }

    /// `GET /sync`. `filter` is inline JSON (or a filter id); `timeout_ms` is the long-poll time.
    pub async fn sync(&self, since: Option<&str>, filter: Option<&str>, timeout_ms: u64) -> Result<SyncResponse> {
        let timeout_s = timeout_ms.to_string();
        let mut query = vec![("timeout", timeout_s.as_str()), ("set_presence", "offline")];
        if let Some(since) = since {
            query.push(("since", since));
        }
        if let Some(filter) = filter {
            query.push(("filter", filter));
        }
        let http_timeout = Duration::from_millis(timeout_ms) + REQUEST_TIMEOUT;
        self.call(Method::GET, &["sync"], &query, None, http_timeout)
            .await
            .with_context(|| format!("{} syncing (since {since:?})", self.user_id))
    }

    /// An initial `GET /sync` as plain JSON (for its size), with `filter` inline.
    pub async fn initial_sync_json(&self, filter: &str) -> Result<Value> {
        let query = [("timeout", "0"), ("set_presence", "offline"), ("filter", filter)];
        self.call(Method::GET, &["sync"], &query, None, REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("{} syncing", self.user_id))
    }

    /// Simplified sliding sync (MSC4186, `org.matrix.simplified_msc3575`): `body` as the
    /// request, `pos` from the previous answer, `timeout_ms` the long-poll time.
    pub async fn sliding_sync(&self, body: &Value, pos: Option<&str>, timeout_ms: u64) -> Result<Value> {
        let mut url = self.hs.base().clone();
        url.path_segments_mut().map_err(|()| anyhow!("homeserver URL cannot be a base"))?.pop_if_empty().extend([
            "_matrix",
            "client",
            "unstable",
            "org.matrix.simplified_msc3575",
            "sync",
        ]);
        let timeout_s = timeout_ms.to_string();
        url.query_pairs_mut().append_pair("timeout", &timeout_s);
        if let Some(pos) = pos {
            url.query_pairs_mut().append_pair("pos", pos);
        }
        let http_timeout = Duration::from_millis(timeout_ms) + REQUEST_TIMEOUT;
        self.hs
            .request(Method::POST, url, Some(&self.access_token), Some(body), http_timeout)
            .await
            .with_context(|| format!("{} sliding sync (pos {pos:?})", self.user_id))
    }

    /// `GET /rooms/{room}/messages`.
    pub async fn messages(
        &self,
        room_id: &str,
        from: Option<&str>,
        dir: Direction,
        limit: u32,
        filter: Option<&str>,
    ) -> Result<MessagesResponse> {
        let limit_s = limit.to_string();
        let dir_s = match dir {
            Direction::Backward => "b",
            Direction::Forward => "f",
        };
        let mut query = vec![("dir", dir_s), ("limit", limit_s.as_str())];
        if let Some(from) = from {
            query.push(("from", from));
        }
        if let Some(filter) = filter {
            query.push(("filter", filter));
        }
        self.call(Method::GET, &["rooms", room_id, "messages"], &query, None, REQUEST_TIMEOUT)
            .await
            .with_context(|| format!("{} paging {room_id} from {from:?}", self.user_id))
    }
}

/// An inline sync filter: only `room_id`'s timeline (at most `timeline_limit` events), no
/// presence, no account data, lazy-loaded members.
pub fn room_timeline_filter(room_id: &str, timeline_limit: u32) -> String {
    json!({
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "room": {
            "rooms": [room_id],
            "timeline": {"limit": timeline_limit},
            "state": {"lazy_load_members": true},
            "ephemeral": {"not_types": ["*"]},
            "account_data": {"not_types": ["*"]},
        },
    })
    .to_string()
}
