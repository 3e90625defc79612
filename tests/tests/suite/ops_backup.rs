//! Backup under load and restore through the real binary; the store's schema version: an older
//! store upgraded, a newer one refused; the federation certificate reloaded when its file
//! changes.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::Method;
use tocsin_node::store::{schema, trees};

use crate::ops_harness::{Solo, call, create_room, login, percent, send, terminate};

/// Senders write as fast as the node acknowledges; a backup is taken in the middle; every event
/// acknowledged before the backup started must be in the restored node.
async fn backup_under_load(engine: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut solo = Solo::plan(dir.path(), "backup.test");
    solo.env.push(("TOCSIN_STORE".to_owned(), engine.to_owned()));
    let log = dir.path().join("serve.log");
    let mut child = solo.serve(&log).await;
    let base = solo.base();
    solo.cli_json(&["admin", "user", "add", "alice", "--password", "alice-password-1"]).await;
    let token = login(&base, "alice", "alice-password-1").await.unwrap();
    let room = create_room(&base, &token, "Load").await;
    // Media and the accepted state of the node go into the backup too.
    let upload = reqwest::Client::new()
        .post(format!("{base}/_matrix/media/v3/upload"))
        .bearer_auth(&token)
        .body("shelter list")
        .send()
        .await
        .unwrap();
    let mxc = upload.json::<serde_json::Value>().await.unwrap()["content_uri"].as_str().unwrap().to_owned();

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for s in 0..4 {
        let (base, token, room, acked, stop) = (base.clone(), token.clone(), room.clone(), acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, id) = send(&base, &token, &room, &format!("s{s}-{n}"), &format!("m {s} {n}")).await;
                assert_eq!(status, 200);
                acked.lock().unwrap().push(id.expect("event id"));
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let dest = dir.path().join("backup-1");
    let started = std::time::Instant::now();
    let manifest = solo.cli_json(&["backup", dest.to_str().unwrap()]).await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let total = acked.lock().unwrap().len();
    assert!(total > before.len(), "sends went on during the backup ({} before, {total} in all)", before.len());
    assert_eq!(manifest["engine"], engine);
    assert_eq!(manifest["schema_version"], schema::CURRENT);
    println!(
        "{engine}: backup of {} events acknowledged before it took {took:?} (node: {} ms)",
        before.len(),
        manifest["took_ms"]
    );

    // A backup never overwrites.
    assert!(!solo.cli(&["backup", dest.to_str().unwrap()]).await.status.success());
    terminate(&mut child);

    // Restore refuses an occupied data dir without --force, then moves it aside.
    let refused = solo.cli(&["restore", dest.to_str().unwrap()]).await;
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("already holds a store"));
    let out = solo.cli(&["restore", dest.to_str().unwrap(), "--force"]).await;
    assert!(out.status.success(), "{out:?}");

    let mut child = solo.serve(&log).await;
    let token = login(&base, "alice", "alice-password-1").await.expect("the account is back");
    let mut missing = Vec::new();
    for id in &before {
        let url = format!("{base}/_matrix/client/v3/rooms/{}/event/{}", percent(&room), percent(id));
        if call(Method::GET, &url, Some(&token), None).await.0 != 200 {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{engine}: {} of {} acknowledged events lost: {missing:?}",
        missing.len(),
        before.len()
    );
    let download = format!("{base}/_matrix/client/v1/media/download/{}", mxc.trim_start_matches("mxc://"));
    assert_eq!(call(Method::GET, &download, Some(&token), None).await.0, 200, "media restored");
    // The node can write again after the restore.
    assert_eq!(send(&base, &token, &room, "after", "restored").await.0, 200);
    terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_every_acknowledged_event_redb() {
    backup_under_load("redb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_every_acknowledged_event_sled() {
    backup_under_load("sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_store_is_upgraded_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = crate::common::start(dir.path(), |_| {}).await;
    let alice = crate::common::user(&node, "alice").await;
    let room = alice.create_room(Default::default()).await.unwrap();
    // Rooms are encrypted by default, so the proof is the event itself, not its text.
    let sent = room
        .send(matrix_sdk::ruma::events::room::message::RoomMessageEventContent::text_plain("before upgrade"))
        .await
        .unwrap()
        .response
        .event_id;
    let config = node.services.config.clone();
    assert_eq!(schema::read(&node.services.db).unwrap(), Some(schema::CURRENT), "a fresh store records its version");
    node.shutdown().await;

    // Make it a version 1 store: no version, no visibility histories.
    let store_dir = dir.path().join("store");
    {
        let store = tocsin_store::Store::open(config.store, &store_dir).unwrap();
        let mut batch = tocsin_store::WriteBatch::new();
        batch.remove(trees::META, b"schema_version".to_vec());
        batch.remove(trees::META, b"visibility_history_v1".to_vec());
        for tree in [trees::MEMBER_HISTORY, trees::VISIBILITY_HISTORY] {
            for (k, _) in store.scan_prefix(tree, b"", usize::MAX).unwrap() {
                batch.remove(tree, k);
            }
        }
        store.commit_blocking(batch).unwrap();
        assert!(store.scan_prefix(trees::MEMBER_HISTORY, b"", 1).unwrap().is_empty());
        store.close();
    }

    let node = tocsin_node::Node::start(config.clone()).await.expect("an older store opens");
    assert_eq!(schema::read(&node.services.db).unwrap(), Some(schema::CURRENT), "upgraded and recorded");
    assert!(!node.services.db.scan_prefix(trees::MEMBER_HISTORY, b"", 1).unwrap().is_empty(), "histories rebuilt");
    // What the histories decide: alice still reads her room's history.
    let alice = crate::common::login(&node, "alice", "correct horse").await;
    let (status, body) = crate::ops_harness::call(
        Method::GET,
        &format!(
            "{}/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20",
            node.base_url(),
            percent(room.room_id().as_str())
        ),
        alice.access_token().as_deref(),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.to_string().contains(sent.as_str()), "alice still reads her message: {body}");
    node.shutdown().await;

    // A store from a newer release is refused, and the message says what to do.
    {
        let store = tocsin_store::Store::open(config.store, &store_dir).unwrap();
        store.commit_blocking(schema::record_batch(schema::CURRENT + 1)).unwrap();
        store.close();
    }
    let err = tocsin_node::Node::start(config).await.err().expect("a newer store is refused");
    assert!(err.to_string().contains("newer than this tocsin-node"), "{err}");
}
