//! The federation list over a node's life: a list file rolled back while the node was down is
//! refused at the next start (the newest accepted list is kept in the data dir), and a list
//! close to expiry or expired shows in the metrics endpoint and as notices in the admin room,
//! once per change, not on every poll, not again after a restart.

use crate::common;

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use matrix_sdk::{Client, RoomState};
use serde_json::Value;
use tocsin_node::{
    NodeHandle,
    policy::policies::{FederationList, Member, MemberRole, OperatorSecretKey, Timestamp, sign_list},
    ruma::{
        MilliSecondsSinceUnixEpoch, OwnedTransactionId, RoomId, api::federation::transactions::send_transaction_message,
    },
};
use tocsin_tests::cluster::Cluster;

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn write_list(path: &Path, key: &OperatorSecretKey, version: u64, members: &[&str], expires_in: i64) {
    let list = FederationList {
        name: "Test valley".into(),
        version,
        issued: Timestamp(now() - 3600),
        expires: Timestamp(now() + expires_in),
        members: members.iter().map(|m| Member::new(m, "Agency", MemberRole::Municipality)).collect(),
    };
    std::fs::write(path, sign_list(&list, key).expect("signs").to_toml()).expect("list written");
}

fn operator_key(dir: &Path) -> (OperatorSecretKey, std::path::PathBuf) {
    let (secret, public) = tocsin_node::policy::policies::generate_operator_key();
    let pub_path = dir.join("operator.pub");
    std::fs::write(&pub_path, &public).unwrap();
    (OperatorSecretKey::from_text(&secret).unwrap(), pub_path)
}

/// An empty transaction from `from` to `to`: `Ok` when `to` federates with `from`.
async fn empty_txn(from: &NodeHandle, to: &NodeHandle) -> tocsin_node::Result<()> {
    let request = send_transaction_message::v1::Request::new(
        OwnedTransactionId::from(format!("lifecycle-{}", MilliSecondsSinceUnixEpoch::now().get())),
        from.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
    );
    from.services.federation_client.send(&to.server_name, request).await.map(|_| ())
}

/// Starts member `i` again after a shutdown. Connections its peers still hold open can keep the
/// stopped node's store locked for a moment (redb: "Database already open"), so this retries.
async fn restart(cluster: &Cluster, i: usize) -> NodeHandle {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match cluster.start(i).await {
            Ok(node) => return node,
            Err(e) if format!("{e:#}").contains("already open") && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the node does not start again: {e:#}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_list_file_rolled_back_during_a_restart_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["a.test", "b.test", "c.test"]).unwrap();
    let (key, pub_path) = operator_key(dir.path());
    let list = dir.path().join("a-federation.toml");
    // Version 1 had C; version 2 removed it.
    write_list(&list, &key, 2, &["a.test", "b.test"], 30 * 24 * 3600);
    cluster.members[0].config.federation_list = Some(list.clone());
    cluster.members[0].config.federation_operator_keys = vec![pub_path];
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let c = cluster.start(2).await.unwrap();
    assert!(empty_txn(&c, &a).await.is_err(), "C is not in version 2");
    empty_txn(&b, &a).await.expect("B is in version 2");
    a.shutdown().await;

    // While A is down, its list file goes back to version 1 (validly signed, C still in it).
    write_list(&list, &key, 1, &["a.test", "b.test", "c.test"], 30 * 24 * 3600);
    let a = restart(&cluster, 0).await;
    assert_eq!(a.services.policy.federation.list().unwrap().version, 2, "version 2 stays in force");
    match empty_txn(&c, &a).await {
        Err(tocsin_node::Error::Remote(e)) => {
            assert_eq!(e.status_code.as_u16(), 403, "{e:?}");
            let text = format!("{e:?}");
            assert!(text.contains("federation_list") && text.contains("version 2"), "{text}");
        }
        other => panic!("C, a member of version 1 only, must get 403, got {other:?}"),
    }
    empty_txn(&b, &a).await.expect("B is in version 2");
    // The admin sees why: the backlog view's list state carries the loud error.
    let state = a.services.policy.federation.state().unwrap();
    let error = state.last_reload_error.unwrap_or_default();
    assert!(error.contains("OLDER than version 2"), "{error}");
    // So does `tocsin-node policy status`, run against the same config and data dir.
    let m = &cluster.members[0];
    let config = dir.path().join("a-status.toml");
    let keys: Vec<String> =
        m.config.federation_operator_keys.iter().map(|p| format!("{:?}", p.display().to_string())).collect();
    std::fs::write(
        &config,
        format!(
            "server_name = \"a.test\"\ndata_dir = {:?}\nfederation_list = {:?}\nfederation_operator_keys = [{}]\n",
            m.config.data_dir.display().to_string(),
            list.display().to_string(),
            keys.join(", ")
        ),
    )
    .unwrap();
    let binary = tokio::task::spawn_blocking(common::tocsin_node_binary).await.unwrap();
    let saved = tocsin_node::policy::accepted::path_in(&m.config.data_dir);
    let saved_before = std::fs::read(&saved).unwrap();
    let out = tokio::process::Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .args(["policy", "status"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("version 2") && stdout.contains("OLDER than version 2"), "{stdout}");
    assert!(!stdout.contains("c.test"), "status lists version 1's members: {stdout}");
    assert_eq!(std::fs::read(&saved).unwrap(), saved_before, "status changed the saved list");

    // A newer list still applies without a restart, and is what the next start compares with.
    write_list(&list, &key, 3, &["a.test", "b.test", "c.test"], 30 * 24 * 3600);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while empty_txn(&c, &a).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "version 3 never applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.shutdown().await;
    write_list(&list, &key, 2, &["a.test", "b.test"], 30 * 24 * 3600);
    let a = restart(&cluster, 0).await;
    assert_eq!(a.services.policy.federation.list().unwrap().version, 3);
    empty_txn(&c, &a).await.expect("C is in version 3, which stays in force");
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

const METRICS_TOKEN: &str = "scraper-secret-0123456789";

async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

/// The value of the metrics line that starts with `series`.
fn metric(text: &str, series: &str) -> i64 {
    let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("bad line {line}"))
}

/// The bodies of the notices in the admin room, oldest first, as the admin reads them.
async fn notices(admin: &Client, base: &str, room: &RoomId) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100");
    let (status, body) = get(base, &path, admin.access_token().as_deref()).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let mut out: Vec<String> = body["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["content"]["msgtype"] == "m.notice")
        .map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned())
        .collect();
    out.reverse();
    out
}

async fn wait_for_notices(admin: &Client, base: &str, room: &RoomId, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = notices(admin, base, room).await;
        if seen.len() >= count {
            return seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "expected {count} notices, have {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_expiry_shows_in_metrics_and_the_admin_room() {
    let dir = tempfile::tempdir().unwrap();
    let (key, pub_path) = operator_key(dir.path());
    let list = dir.path().join("federation.toml");
    write_list(&list, &key, 1, &["tocsin.test"], 30 * 24 * 3600);
    let data = dir.path().join("node");
    let configure = |c: &mut tocsin_node::Config| {
        c.federation_list = Some(list.clone());
        c.federation_operator_keys = vec![pub_path.clone()];
        c.metrics.token = Some(METRICS_TOKEN.to_owned());
    };
    let node = common::start(&data, configure).await;
    node.services.users.create_account("root", Some("correct horse"), None, true).await.unwrap();
    let admin = common::login(&node, "root", "correct horse").await;
    let user = common::user(&node, "alice").await;
    let base = node.base_url();

    // Metrics: the metrics token only, not even an admin's. A list valid for a month: no
    // warning, and no notice.
    assert_eq!(get(&base, "/_tocsin/metrics", None).await.0, 401);
    assert_eq!(get(&base, "/_tocsin/metrics", user.access_token().as_deref()).await.0, 403);
    assert_eq!(get(&base, "/_tocsin/metrics", admin.access_token().as_deref()).await.0, 403);
    let (status, text) = get(&base, "/_tocsin/metrics", Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    let series = |name: &str| format!("{name}{{name=\"Test valley\"}}");
    assert_eq!(metric(&text, &series("tocsin_federation_list_version")), 1);
    assert_eq!(metric(&text, &series("tocsin_federation_list_expiry_warning")), 0);
    tokio::time::sleep(tocsin_node::policy::watch::POLL_INTERVAL * 2).await;
    common::sync(&admin).await;
    assert!(admin.invited_rooms().is_empty(), "no admin room while the list is far from expiry");

    // Version 2 expires in 3 days: the warning is in the metrics ...
    write_list(&list, &key, 2, &["tocsin.test"], 3 * 24 * 3600);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, text) = get(&base, "/_tocsin/metrics", Some(METRICS_TOKEN)).await;
        if metric(&text, &series("tocsin_federation_list_version")) == 2 {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "version 2 never applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(metric(&text, &series("tocsin_federation_list_expired")), 0);
    assert_eq!(metric(&text, &series("tocsin_federation_list_expiry_warning")), 1);
    let left = metric(&text, &series("tocsin_federation_list_expires_in_seconds"));
    assert!((3 * 24 * 3600 - 120..=3 * 24 * 3600).contains(&left), "{left}");

    // The admin is invited to the admin room and finds the warning there.
    let room = common::eventually(&admin, 15, || async {
        admin.invited_rooms().into_iter().find(|r| r.state() == RoomState::Invited).map(|r| r.room_id().to_owned())
    })
    .await;
    admin.join_room_by_id(&room).await.expect("the admin joins the admin room");
    let seen = wait_for_notices(&admin, &base, &room, 1).await;
    assert!(seen[0].contains("version 2 expires at"), "{seen:?}");
    // An ordinary user is not invited.
    common::sync(&user).await;
    assert!(user.invited_rooms().is_empty());

    // Version 3 expires in a few seconds: a notice for the new version, then one when it expires.
    write_list(&list, &key, 3, &["tocsin.test"], 6);
    let seen = wait_for_notices(&admin, &base, &room, 3).await;
    assert!(seen[1].contains("version 3 expires at"), "{seen:?}");
    assert!(seen[2].contains("version 3 EXPIRED"), "{seen:?}");
    let (_, text) = get(&base, "/_tocsin/metrics", Some(METRICS_TOKEN)).await;
    assert_eq!(metric(&text, &series("tocsin_federation_list_version")), 3);
    assert_eq!(metric(&text, &series("tocsin_federation_list_expired")), 1);
    assert!(metric(&text, &series("tocsin_federation_list_expires_in_seconds")) <= 0);
    // The node keeps running and enforcing the expired list.
    assert_eq!(node.services.policy.federation.list().unwrap().version, 3);

    // Not on every poll, and not again after a restart.
    tokio::time::sleep(tocsin_node::policy::watch::POLL_INTERVAL * 3).await;
    assert_eq!(notices(&admin, &base, &room).await.len(), 3);
    node.shutdown().await;
    let node = common::start(&data, configure).await;
    let admin = common::login(&node, "root", "correct horse").await;
    let base = node.base_url();
    tokio::time::sleep(tocsin_node::policy::watch::POLL_INTERVAL * 3).await;
    assert_eq!(notices(&admin, &base, &room).await.len(), 3);

    // A new list valid for a month ends the warning: one last notice, and the gauges drop.
    write_list(&list, &key, 4, &["tocsin.test"], 30 * 24 * 3600);
    let seen = wait_for_notices(&admin, &base, &room, 4).await;
    assert!(seen[3].contains("version 4 is in force") && seen[3].contains("warning is over"), "{seen:?}");
    let (_, text) = get(&base, "/_tocsin/metrics", Some(METRICS_TOKEN)).await;
    assert_eq!(metric(&text, &series("tocsin_federation_list_version")), 4);
    assert_eq!(metric(&text, &series("tocsin_federation_list_expired")), 0);
    assert_eq!(metric(&text, &series("tocsin_federation_list_expiry_warning")), 0);
    tokio::time::sleep(tocsin_node::policy::watch::POLL_INTERVAL * 2).await;
    assert_eq!(notices(&admin, &base, &room).await.len(), 4);
    node.shutdown().await;
}
