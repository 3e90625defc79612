//! Operations on a running node through the real binary: the admin CLI (users, registration
//! tokens, rooms, media, server notices), the password policy, metrics scraped and parsed, JSON
//! logs, and federation delegation.

use reqwest::Method;
use serde_json::{Value, json};
use tocsin_tests::cluster::free_port;

use crate::ops_harness::{ADMIN_TOKEN, METRICS_TOKEN, Solo, call, create_room, login, percent, send, terminate};

/// The value of one sample, by name and labels (as the parser gives them).
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find_map(|s| {
        let matches = s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
        matches.then(|| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => h.iter().map(|c| c.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
    })
}

async fn scrape(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("scrape");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cli_and_metrics_against_the_running_binary() {
    let dir = tempfile::tempdir().unwrap();
    let mut solo = Solo::plan(dir.path(), "ops.test");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    solo.env.extend([
        ("TOCSIN_METRICS_TOKEN".to_owned(), METRICS_TOKEN.to_owned()),
        ("TOCSIN_METRICS_LISTEN".to_owned(), metrics_addr.clone()),
        ("TOCSIN_PASSWORD_MIN_LENGTH".to_owned(), "10".to_owned()),
        ("TOCSIN_REGISTRATION".to_owned(), "token".to_owned()),
        ("TOCSIN_FEDERATION_DELEGATE".to_owned(), "matrix.ops.test:8448".to_owned()),
        ("TOCSIN_LOG_FORMAT".to_owned(), "json".to_owned()),
    ]);
    let log = dir.path().join("serve.log");
    let mut child = solo.serve(&log).await;
    let base = solo.base();

    // Users: the password policy holds for the admin too; a made-up password is printed.
    let short = solo.cli(&["admin", "user", "add", "alice", "--password", "short"]).await;
    assert!(!short.status.success(), "a 5-character password is refused");
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10"), "{short:?}");
    let alice = solo.cli_json(&["admin", "user", "add", "alice", "--password", "alice-password-1"]).await;
    assert_eq!(alice["user_id"], "@alice:ops.test");
    let root = solo.cli_json(&["admin", "user", "add", "root", "--admin"]).await;
    let root_password = root["password"].as_str().expect("a made-up password").to_owned();
    let root_token = login(&base, "root", &root_password).await.expect("root logs in");
    let users = solo.cli_json(&["admin", "user", "list"]).await;
    let names: Vec<&str> = users["users"].as_array().unwrap().iter().filter_map(|u| u["user_id"].as_str()).collect();
    assert!(names.contains(&"@alice:ops.test") && names.contains(&"@root:ops.test"), "{users}");

    // Alice talks in a room.
    let alice_token = login(&base, "alice", "alice-password-1").await.expect("alice logs in");
    let room = create_room(&base, &alice_token, "Flood desk").await;
    let (status, _) = send(&base, &alice_token, &room, "t1", "water rising").await;
    assert_eq!(status, 200);

    // Registration tokens: one use, then refused; revoked tokens vanish from the list.
    let token = solo.cli_json(&["admin", "token", "create", "--uses", "1"]).await;
    let token = token["token"].as_str().expect("token").to_owned();
    assert_eq!(register(&base, "bob", "bob-password-1", &token).await, 200, "the token registers bob");
    assert_eq!(register(&base, "carol", "carol-password", &token).await, 403, "a used-up token is refused");
    let listed = solo.cli_json(&["admin", "token", "list"]).await;
    assert_eq!(listed["registration_tokens"][0]["completed"], 1, "{listed}");
    assert_eq!(listed["registration_tokens"][0]["valid"], false, "{listed}");
    solo.cli_json(&["admin", "token", "revoke", &token]).await;
    assert_eq!(solo.cli_json(&["admin", "token", "list"]).await["registration_tokens"], json!([]));
    let other = solo.cli_json(&["admin", "token", "create", "--token", "short-pw-test"]).await;
    assert_eq!(register(&base, "dave", "short", other["token"].as_str().unwrap()).await, 400, "weak password");

    // Rooms: listed with details; a shutdown removes alice, tells her, and keeps her out.
    let rooms = solo.cli_json(&["admin", "room", "list"]).await;
    assert!(rooms["rooms"].as_array().unwrap().iter().any(|r| r["room_id"] == room.as_str()), "{rooms}");
    let details = solo.cli_json(&["admin", "room", "show", &room]).await;
    assert_eq!(details["name"], "Flood desk");
    assert_eq!(details["members"], json!(["@alice:ops.test"]));
    let shut = solo.cli_json(&["admin", "room", "shutdown", &room, "--notice", "moved to #flood-2"]).await;
    assert_eq!(shut["members_removed"], json!(["@alice:ops.test"]));
    let (status, _) = send(&base, &alice_token, &room, "t2", "still here?").await;
    assert_eq!(status, 403, "alice is out of the shut-down room");
    let join = format!("{base}/_matrix/client/v3/rooms/{}/join", percent(&room));
    assert_eq!(call(Method::POST, &join, Some(&alice_token), Some(json!({}))).await.0, 403, "no rejoining");
    let notice_room = invited_room(&base, &alice_token).await.expect("alice is invited to her server notices room");
    let joined = format!("{base}/_matrix/client/v3/rooms/{}/join", percent(&notice_room));
    assert_eq!(call(Method::POST, &joined, Some(&alice_token), Some(json!({}))).await.0, 200);
    assert!(
        messages(&base, &alice_token, &notice_room).await.iter().any(|b| b.contains("moved to #flood-2")),
        "the shutdown notice reaches alice"
    );

    // Server notices to one user.
    solo.cli_json(&["admin", "notice", "maintenance at 22:00", "--user", "@alice:ops.test"]).await;
    assert!(messages(&base, &alice_token, &notice_room).await.iter().any(|b| b == "maintenance at 22:00"));

    // Media: purge a local file.
    let upload = reqwest::Client::new()
        .post(format!("{base}/_matrix/media/v3/upload"))
        .bearer_auth(&alice_token)
        .header("content-type", "text/plain")
        .body("evacuation map")
        .send()
        .await
        .unwrap();
    let mxc = upload.json::<Value>().await.unwrap()["content_uri"].as_str().unwrap().to_owned();
    let download = format!("{base}/_matrix/client/v1/media/download/{}", mxc.trim_start_matches("mxc://"));
    assert_eq!(call(Method::GET, &download, Some(&alice_token), None).await.0, 200);
    let purged = solo.cli_json(&["admin", "media", "purge", &mxc]).await;
    assert_eq!(purged["files"], 1, "{purged}");
    assert_eq!(call(Method::GET, &download, Some(&alice_token), None).await.0, 404, "purged");
    assert_eq!(solo.cli_json(&["admin", "media", "purge-remote"]).await["ids"], 0);

    // Logout everywhere, reset password, deactivate.
    let out = solo.cli_json(&["admin", "user", "logout", "alice"]).await;
    assert!(out["devices_logged_out"].as_u64().unwrap() >= 1, "{out}");
    let whoami = format!("{base}/_matrix/client/v3/account/whoami");
    assert_eq!(call(Method::GET, &whoami, Some(&alice_token), None).await.0, 401, "her token is gone");
    solo.cli_json(&["admin", "user", "reset-password", "alice", "--password", "new-alice-password"]).await;
    assert!(login(&base, "alice", "alice-password-1").await.is_err());
    let alice_token = login(&base, "alice", "new-alice-password").await.expect("the new password works");
    solo.cli_json(&["admin", "user", "deactivate", "@alice:ops.test"]).await;
    assert_eq!(call(Method::GET, &whoami, Some(&alice_token), None).await.0, 401);
    assert!(login(&base, "alice", "new-alice-password").await.is_err(), "a deactivated account cannot log in");

    // The admin API: an admin account's token works too; a plain user's does not.
    let bob = login(&base, "bob", "bob-password-1").await.unwrap();
    let users_url = format!("{base}/_tocsin/admin/users");
    assert_eq!(call(Method::GET, &users_url, Some(&root_token), None).await.0, 200);
    assert_eq!(call(Method::GET, &users_url, Some(&bob), None).await.0, 403);
    assert_eq!(call(Method::GET, &users_url, Some(ADMIN_TOKEN), None).await.0, 200);
    assert_eq!(call(Method::GET, &users_url, None, None).await.0, 401);

    // Delegation for a server name without a port.
    let (status, well_known) = call(Method::GET, &format!("{base}/.well-known/matrix/server"), None, None).await;
    assert_eq!((status, &well_known), (200, &json!({ "m.server": "matrix.ops.test:8448" })));

    // Metrics: on the client port with the metrics token only; on the metrics listener too.
    let client_metrics = format!("{base}/_tocsin/metrics");
    assert_eq!(scrape(&client_metrics, None).await.0, 401);
    assert_eq!(scrape(&client_metrics, Some(&root_token)).await.0, 403, "not an admin's token");
    assert_eq!(scrape(&client_metrics, Some(METRICS_TOKEN)).await.0, 200);
    let (status, text) = scrape(&format!("http://{metrics_addr}/_tocsin/metrics"), Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(scrape(&format!("http://{metrics_addr}/_tocsin/metrics"), None).await.0, 401);
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition");
    let send_endpoint = "/_matrix/client/v3/rooms/:room_id/send/:event_type/:txn_id";
    let sends = sample(&parsed, "tocsin_http_requests_total", &[("endpoint", send_endpoint), ("status", "200")]);
    assert!(sends.is_some_and(|n| n >= 1.0), "the successful send is counted:\n{text}");
    let refused = sample(&parsed, "tocsin_http_requests_total", &[("endpoint", send_endpoint), ("status", "403")]);
    assert!(refused.is_some_and(|n| n >= 1.0), "the refused send too");
    assert!(parsed.docs.contains_key("tocsin_http_request_duration_seconds"), "latency histogram documented");
    let latency = sample(&parsed, "tocsin_http_request_duration_seconds", &[("endpoint", send_endpoint)]);
    assert!(latency.is_some_and(|n| n >= 2.0), "both sends are in the histogram: {latency:?}");
    assert!(sample(&parsed, "tocsin_store_commit_duration_seconds", &[]).is_some_and(|n| n > 0.0));
    assert!(sample(&parsed, "tocsin_store_size_bytes", &[("part", "store")]).is_some_and(|n| n > 0.0));
    assert!(sample(&parsed, "process_resident_memory_bytes", &[]).is_some_and(|n| n > 1e6));
    assert!(sample(&parsed, "process_open_fds", &[]).is_some_and(|n| n > 3.0));
    assert_eq!(sample(&parsed, "tocsin_federation_list_configured", &[]), Some(0.0));

    terminate(&mut child);
    // JSON logs: every line an object with a level and a message; no colour codes.
    let log_text = std::fs::read_to_string(&log).unwrap();
    let json_lines: Vec<Value> = log_text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        json_lines.iter().any(|l| l["fields"]["message"] == "admin API: room shut down" && l["level"] == "INFO"),
        "the shutdown is logged as JSON:\n{log_text}"
    );
    assert!(!log_text.contains('\u{1b}'));
}

/// Registers `user` with a registration token through the UIA flow; returns the final status.
async fn register(base: &str, user: &str, password: &str, token: &str) -> u16 {
    let url = format!("{base}/_matrix/client/v3/register");
    let body = json!({ "username": user, "password": password });
    let (status, value) = call(Method::POST, &url, None, Some(body.clone())).await;
    assert_eq!(status, 401, "UIA starts: {value}");
    let session = value["session"].as_str().expect("session").to_owned();
    let mut body = body;
    body["auth"] = json!({ "type": "m.login.registration_token", "token": token, "session": session });
    call(Method::POST, &url, None, Some(body)).await.0
}

/// The first room `token`'s user is invited to (by an initial sync).
async fn invited_room(base: &str, token: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, sync) = call(Method::GET, &format!("{base}/_matrix/client/v3/sync?timeout=0"), Some(token), None).await;
        if let Some(room) = sync["rooms"]["invite"].as_object().and_then(|m| m.keys().next().cloned()) {
            return Some(room);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Message bodies in a room, newest first.
async fn messages(base: &str, token: &str, room: &str) -> Vec<String> {
    let url = format!("{base}/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", percent(room));
    let (status, value) = call(Method::GET, &url, Some(token), None).await;
    assert_eq!(status, 200, "{value}");
    value["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}
