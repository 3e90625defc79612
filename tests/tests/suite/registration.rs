//! Registration modes (closed, open, token) through the UIA flow, and login/logout over raw HTTP.

use crate::common;

use common::{add_user, start};
use reqwest::Method;
use serde_json::{Value, json};
use tocsin_node::{NodeHandle, Registration};

/// Status and parsed body (`Value::String` of the raw text when the body is not JSON).
type Reply = (u16, Value);

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(node: &NodeHandle) -> Self {
        Self { http: reqwest::Client::new(), base: node.base_url() }
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body.to_string());
        }
        let resp = req.send().await.expect("the node answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn register(&self, body: Value) -> Reply {
        self.call(Method::POST, "/_matrix/client/v3/register", None, Some(&body)).await
    }

    async fn login(&self, user: &str, password: &str) -> Reply {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        });
        self.call(Method::POST, "/_matrix/client/v3/login", None, Some(&body)).await
    }

    async fn whoami(&self, token: &str) -> Reply {
        self.call(Method::GET, "/_matrix/client/v3/account/whoami", Some(token), None).await
    }

    /// Starts a UIA session for `username`; checks the 401 offers `stage`, returns the session.
    async fn start_uia(&self, username: &str, stage: &str) -> String {
        let (status, body) = self.register(json!({ "username": username, "password": "pw-123456" })).await;
        assert_eq!(status, 401, "the first /register asks for UIA: {body}");
        let flows = body["flows"].as_array().expect("flows in the UIA response");
        assert!(
            flows.iter().any(|f| f["stages"].as_array().is_some_and(|s| s.iter().any(|st| st == stage))),
            "a flow offers {stage}: {body}"
        );
        body["session"].as_str().filter(|s| !s.is_empty()).expect("a UIA session").to_owned()
    }

    async fn assert_serving(&self) {
        let (status, body) = self.call(Method::GET, "/_matrix/client/versions", None, None).await;
        assert_eq!(status, 200, "the node still serves /versions: {body}");
    }
}

#[track_caller]
fn assert_error(reply: &Reply, status: u16, errcode: &str, what: &str) {
    assert_eq!(reply.0, status, "{what}: status (body {})", reply.1);
    assert_eq!(reply.1["errcode"].as_str(), Some(errcode), "{what}: errcode (body {})", reply.1);
}

/// Checks a successful registration reply and that its token works; returns the token.
async fn assert_registered(api: &Api, reply: &Reply, user_id: &str) -> String {
    assert_eq!(reply.0, 200, "registration completes: {}", reply.1);
    assert_eq!(reply.1["user_id"], user_id, "{}", reply.1);
    let token = reply.1["access_token"].as_str().expect("an access token").to_owned();
    let (status, me) = api.whoami(&token).await;
    assert_eq!(status, 200, "whoami with the new token: {me}");
    assert_eq!(me["user_id"], user_id);
    assert_eq!(me["device_id"], reply.1["device_id"], "whoami names the new device");
    token
}

#[tokio::test]
async fn closed_registration_is_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    assert_eq!(node.services.config.registration, Registration::Closed, "closed is the default");
    let api = Api::new(&node);

    let r = api.register(json!({ "username": "eve", "password": "pw-123456" })).await;
    assert_error(&r, 403, "M_FORBIDDEN", "register on a closed node");
    let r = api.register(json!({ "username": "eve", "password": "pw", "auth": { "type": "m.login.dummy" } })).await;
    assert_error(&r, 403, "M_FORBIDDEN", "register with dummy auth on a closed node");
    let r = api.register(json!({})).await;
    assert_error(&r, 403, "M_FORBIDDEN", "an empty register on a closed node");
    let r = api.login("eve", "pw-123456").await;
    assert_error(&r, 403, "M_FORBIDDEN", "no account was made");
    let r = api.call(Method::GET, "/_matrix/client/v3/register/available?username=eve", None, None).await;
    assert_error(&r, 403, "M_FORBIDDEN", "asking after a name on a closed node");

    api.assert_serving().await;
    node.shutdown().await;
}

#[tokio::test]
async fn open_registration_completes_with_dummy_auth() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.registration = Registration::Open).await;
    let api = Api::new(&node);

    let session = api.start_uia("newbie", "m.login.dummy").await;
    let reply = api
        .register(json!({
            "username": "newbie",
            "password": "pw-123456",
            "auth": { "type": "m.login.dummy", "session": session },
        }))
        .await;
    let token = assert_registered(&api, &reply, "@newbie:tocsin.test").await;

    // The session is spent, and the name is now taken.
    let r = api
        .register(json!({
            "username": "other",
            "password": "pw-123456",
            "auth": { "type": "m.login.dummy", "session": session },
        }))
        .await;
    assert_eq!(r.0, 403, "a spent session is refused: {}", r.1);
    let session = api.start_uia("newbie2", "m.login.dummy").await;
    let r = api
        .register(json!({
            "username": "newbie",
            "password": "pw-123456",
            "auth": { "type": "m.login.dummy", "session": session },
        }))
        .await;
    assert_error(&r, 400, "M_USER_IN_USE", "registering a taken name");
    let r = api
        .register(json!({
            "username": "Not Valid!",
            "password": "pw-123456",
            "auth": { "type": "m.login.dummy", "session": session },
        }))
        .await;
    assert_error(&r, 400, "M_INVALID_USERNAME", "registering an invalid name");
    // A refused username does not spend the session: the client may pick another name.
    let r = api
        .register(json!({
            "username": "newbie2",
            "password": "pw-123456",
            "auth": { "type": "m.login.dummy", "session": session },
        }))
        .await;
    assert_registered(&api, &r, "@newbie2:tocsin.test").await;

    // A sign-up form asks first whether a name is free.
    let available = |name: &str| format!("/_matrix/client/v3/register/available?username={name}");
    let r = api.call(Method::GET, &available("newbie"), None, None).await;
    assert_error(&r, 400, "M_USER_IN_USE", "asking after a taken name");
    let r = api.call(Method::GET, &available("NEWBIE"), None, None).await;
    assert_error(&r, 400, "M_USER_IN_USE", "asking after a taken name in capitals");
    let r = api.call(Method::GET, &available("Not%20Valid!"), None, None).await;
    assert_error(&r, 400, "M_INVALID_USERNAME", "asking after an invalid name");
    assert_eq!(api.call(Method::GET, &available("someone"), None, None).await, (200, json!({"available": true})));
    // This node takes no registration tokens, so it says so rather than "invalid".
    let r = api
        .call(Method::GET, "/_matrix/client/v1/register/m.login.registration_token/validity?token=x", None, None)
        .await;
    assert_error(&r, 403, "M_FORBIDDEN", "a token check where registration takes no tokens");

    // The account logs in with its password.
    let (status, login) = api.login("newbie", "pw-123456").await;
    assert_eq!(status, 200, "{login}");
    let (status, me) = api.whoami(login["access_token"].as_str().expect("token")).await;
    assert_eq!((status, &me["user_id"]), (200, &json!("@newbie:tocsin.test")));
    let (status, _) = api.whoami(&token).await;
    assert_eq!(status, 200, "the registration token still works alongside");

    api.assert_serving().await;
    node.shutdown().await;
}

#[tokio::test]
async fn token_registration_checks_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.registration = Registration::Token;
        c.registration_token = Some("s3cret".to_owned());
    })
    .await;
    let api = Api::new(&node);

    // The token can be checked before it is used, and checking does not use it up.
    let validity =
        |token: &str| format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={token}");
    for _ in 0..2 {
        assert_eq!(api.call(Method::GET, &validity("s3cret"), None, None).await, (200, json!({"valid": true})));
    }
    assert_eq!(api.call(Method::GET, &validity("wrong"), None, None).await, (200, json!({"valid": false})));

    let session = api.start_uia("responder", "m.login.registration_token").await;
    let r = api
        .register(json!({
            "username": "responder",
            "password": "pw-123456",
            "auth": { "type": "m.login.registration_token", "token": "wrong", "session": session },
        }))
        .await;
    assert_error(&r, 403, "M_FORBIDDEN", "a wrong registration token");
    let r = api
        .register(json!({
            "username": "responder",
            "password": "pw-123456",
            "auth": { "type": "m.login.dummy", "session": session },
        }))
        .await;
    assert_error(&r, 403, "M_FORBIDDEN", "dummy auth where a token is required");
    let r = api.login("responder", "pw-123456").await;
    assert_error(&r, 403, "M_FORBIDDEN", "no account was made by the refused attempts");

    let reply = api
        .register(json!({
            "username": "responder",
            "password": "pw-123456",
            "auth": { "type": "m.login.registration_token", "token": "s3cret", "session": session },
        }))
        .await;
    assert_registered(&api, &reply, "@responder:tocsin.test").await;

    api.assert_serving().await;
    node.shutdown().await;
}

#[tokio::test]
async fn login_with_a_wrong_password_and_logout() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    let api = Api::new(&node);
    add_user(&node, "alice", "correct horse").await;

    let r = api.login("alice", "battery staple").await;
    assert_error(&r, 403, "M_FORBIDDEN", "login with a wrong password");
    let r = api.login("nobody", "correct horse").await;
    assert_error(&r, 403, "M_FORBIDDEN", "login as an unknown user");
    let r = api.login("@alice:tocsin.test", "").await;
    assert_error(&r, 403, "M_FORBIDDEN", "login with an empty password");
    let r = api
        .call(
            Method::POST,
            "/_matrix/client/v3/login",
            None,
            Some(&json!({ "type": "m.login.token", "token": "made-up" })),
        )
        .await;
    assert_error(&r, 400, "M_UNKNOWN", "login with a type the node does not offer");

    let (status, first) = api.login("alice", "correct horse").await;
    assert_eq!(status, 200, "{first}");
    let first = first["access_token"].as_str().expect("token").to_owned();
    let (status, second) = api.login("@alice:tocsin.test", "correct horse").await;
    assert_eq!(status, 200, "{second}");
    let second = second["access_token"].as_str().expect("token").to_owned();
    assert_ne!(first, second, "each login is its own device");

    let (status, body) = api.call(Method::POST, "/_matrix/client/v3/logout", Some(&first), Some(&json!({}))).await;
    assert_eq!(status, 200, "logout: {body}");
    let r = api.whoami(&first).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN", "whoami after logout");
    let r = api.call(Method::POST, "/_matrix/client/v3/logout", Some(&first), Some(&json!({}))).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN", "logging out twice");
    let (status, me) = api.whoami(&second).await;
    assert_eq!((status, &me["user_id"]), (200, &json!("@alice:tocsin.test")), "the other device is still logged in");

    let (status, body) = api.call(Method::POST, "/_matrix/client/v3/logout/all", Some(&second), Some(&json!({}))).await;
    assert_eq!(status, 200, "logout/all: {body}");
    let r = api.whoami(&second).await;
    assert_error(&r, 401, "M_UNKNOWN_TOKEN", "whoami after logout/all");

    api.assert_serving().await;
    node.shutdown().await;
}
