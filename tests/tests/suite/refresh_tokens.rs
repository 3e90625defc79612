//! Refresh tokens: a client that asks for one gets access tokens that expire, refreshes them
//! and keeps working; an expired token is a soft logout; a rotated refresh token stops working
//! once its successor is used; logout ends the refresh token too.

use std::{collections::HashSet, time::Duration};

use matrix_sdk::{
    Client,
    config::SyncSettings,
    room::MessagesOptions,
    ruma::{
        api::client::room::create_room::v3::Request as CreateRoom,
        events::{
            AnySyncMessageLikeEvent, AnySyncTimelineEvent,
            room::message::{RoomMessageEventContent, SyncRoomMessageEvent},
        },
    },
};
use serde_json::{Value, json};
use tocsin_node::Registration;

use crate::{
    api::{Api, PASSWORD, Reply},
    common::{add_user, start},
};

/// Short, so the tests see several expiries.
const LIFETIME_SECS: u64 = 2;

fn text_of(event: &AnySyncTimelineEvent) -> Option<String> {
    match event {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(SyncRoomMessageEvent::Original(m))) => {
            Some(m.content.body().to_owned())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_client_keeps_sending_and_syncing_across_expiries() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.encrypt_new_rooms = false;
        c.access_token_lifetime_secs = LIFETIME_SECS;
    })
    .await;
    add_user(&node, "alice", PASSWORD).await;
    let client = Client::builder().homeserver_url(node.base_url()).handle_refresh_tokens().build().await.unwrap();
    let login = client.matrix_auth().login_username("alice", PASSWORD).request_refresh_token().send().await.unwrap();
    assert!(login.refresh_token.is_some(), "a refresh token for a client that asked");
    assert_eq!(login.expires_in, Some(Duration::from_secs(LIFETIME_SECS)));

    let room = client.create_room(CreateRoom::new()).await.unwrap();
    let mut access_tokens = HashSet::from([client.access_token().unwrap()]);
    let mut refresh_tokens = HashSet::from([client.session_tokens().unwrap().refresh_token.unwrap()]);
    for i in 0..4 {
        // Past the token's lifetime: the next requests are answered 401 until the client refreshes.
        tokio::time::sleep(Duration::from_millis(LIFETIME_SECS * 1000 + 300)).await;
        // Two requests at once, as a client syncing while the user sends.
        let (sent, synced) = tokio::join!(
            room.send(RoomMessageEventContent::text_plain(format!("report {i}"))),
            client.sync_once(SyncSettings::default().timeout(Duration::ZERO)),
        );
        sent.unwrap_or_else(|e| panic!("send {i} after the token expired: {e}"));
        synced.unwrap_or_else(|e| panic!("sync {i} after the token expired: {e}"));
        access_tokens.insert(client.access_token().unwrap());
        refresh_tokens.insert(client.session_tokens().unwrap().refresh_token.unwrap());
    }
    assert!(access_tokens.len() >= 5, "a new access token after each expiry: {}", access_tokens.len());
    assert!(refresh_tokens.len() >= 5, "the refresh token rotates too: {}", refresh_tokens.len());
    let messages = room.messages(MessagesOptions::backward()).await.unwrap();
    let texts: Vec<String> = messages.chunk.iter().filter_map(|e| text_of(&e.raw().deserialize().ok()?)).collect();
    assert_eq!(texts, ["report 3", "report 2", "report 1", "report 0"]);

    // A client that does not ask keeps a token that never expires.
    let plain = Client::builder().homeserver_url(node.base_url()).build().await.unwrap();
    let login = plain.matrix_auth().login_username("alice", PASSWORD).send().await.unwrap();
    assert!(login.refresh_token.is_none() && login.expires_in.is_none());
    tokio::time::sleep(Duration::from_millis(LIFETIME_SECS * 1000 + 300)).await;
    plain.whoami().await.expect("a token without a refresh token does not expire");
    node.shutdown().await;
}

fn assert_unknown_token(reply: &Reply, soft_logout: bool, what: &str) {
    assert_eq!(reply.0, 401, "{what}: {}", reply.1);
    assert_eq!(reply.1["errcode"], "M_UNKNOWN_TOKEN", "{what}: {}", reply.1);
    assert_eq!(reply.1["soft_logout"].as_bool().unwrap_or(false), soft_logout, "{what}: {}", reply.1);
}

async fn whoami(api: &Api, token: &str) -> Reply {
    api.get("/_matrix/client/v3/account/whoami", Some(token)).await
}

/// `(access_token, refresh_token)` of a `/refresh`, which must succeed.
async fn refresh(api: &Api, refresh_token: &str) -> (String, String) {
    let (status, body) = api.post("/_matrix/client/v3/refresh", None, &json!({ "refresh_token": refresh_token })).await;
    assert_eq!(status, 200, "refresh: {body}");
    assert_eq!(body["expires_in_ms"], LIFETIME_SECS * 1000);
    (body["access_token"].as_str().unwrap().to_owned(), body["refresh_token"].as_str().unwrap().to_owned())
}

async fn refresh_refused(api: &Api, refresh_token: &str, what: &str) {
    let reply = api.post("/_matrix/client/v3/refresh", None, &json!({ "refresh_token": refresh_token })).await;
    assert_unknown_token(&reply, false, what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_rotation_and_logout_over_raw_http() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| {
        c.access_token_lifetime_secs = LIFETIME_SECS;
        c.registration = Registration::Open;
    })
    .await;
    let api = Api::new(&node);
    add_user(&node, "bob", PASSWORD).await;
    let login = |refresh: bool| {
        let api = api.clone();
        async move {
            let body = json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": "bob" },
                "password": PASSWORD,
                "refresh_token": refresh,
            });
            let (status, body) = api.post("/_matrix/client/v3/login", None, &body).await;
            assert_eq!(status, 200, "login: {body}");
            body
        }
    };

    let body = login(true).await;
    assert_eq!(body["expires_in_ms"], LIFETIME_SECS * 1000, "{body}");
    let (a1, r1) = (body["access_token"].as_str().unwrap().to_owned(), body["refresh_token"].as_str().unwrap());
    assert_eq!(whoami(&api, &a1).await.0, 200);
    tokio::time::sleep(Duration::from_millis(LIFETIME_SECS * 1000 + 200)).await;
    assert_unknown_token(&whoami(&api, &a1).await, true, "an expired access token is a soft logout");

    let (a2, r2) = refresh(&api, r1).await;
    assert_unknown_token(&whoami(&api, &a1).await, false, "the refreshed token ends at once");
    // The answer was "lost": until a2 or r2 is used, r1 still refreshes, and replaces them.
    let (a3, r3) = refresh(&api, r1).await;
    assert_unknown_token(&whoami(&api, &a2).await, false, "the unused access token of the lost refresh");
    refresh_refused(&api, &r2, "the unused refresh token of the lost refresh").await;
    // The new access token's first use revokes r1.
    assert_eq!(whoami(&api, &a3).await.0, 200);
    refresh_refused(&api, r1, "a refresh token reused after its successor's access token was used").await;

    // Using the new refresh token revokes the old one likewise.
    let (_, r4) = refresh(&api, &r3).await;
    let (a5, r5) = refresh(&api, &r4).await;
    refresh_refused(&api, &r3, "a refresh token reused after its successor refreshed").await;
    assert_eq!(whoami(&api, &a5).await.0, 200);
    refresh_refused(&api, &r4, "a refresh token reused after its successor's access token was used").await;
    refresh_refused(&api, "never-issued", "a refresh token this node never issued").await;

    // Logout ends the session's refresh token with it.
    let (status, body) = api.post("/_matrix/client/v3/logout", Some(&a5), &json!({})).await;
    assert_eq!(status, 200, "logout: {body}");
    refresh_refused(&api, &r5, "the refresh token of a logged-out device").await;

    // Without asking: no refresh token, no expiry.
    let body = login(false).await;
    assert!(body.get("refresh_token").is_none() && body.get("expires_in_ms").is_none(), "{body}");

    // Registration hands out a refresh token the same way.
    let (status, body) = api.post("/_matrix/client/v3/register", None, &json!({ "username": "carol" })).await;
    assert_eq!(status, 401, "UIA first: {body}");
    let session = body["session"].as_str().unwrap();
    let (status, body) = api
        .post(
            "/_matrix/client/v3/register",
            None,
            &json!({
                "username": "carol",
                "password": PASSWORD,
                "refresh_token": true,
                "auth": { "type": "m.login.dummy", "session": session },
            }),
        )
        .await;
    assert_eq!(status, 200, "register: {body}");
    assert_eq!(body["expires_in_ms"], LIFETIME_SECS * 1000, "{body}");
    let carol: Value = body["refresh_token"].clone();
    let (a, _) = refresh(&api, carol.as_str().expect("a refresh token at registration")).await;
    assert_eq!(whoami(&api, &a).await.1["user_id"], "@carol:tocsin.test");
    node.shutdown().await;
}
