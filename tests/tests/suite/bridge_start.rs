//! The first alert after the bridge starts is posted at once: the first start (the bot invited
//! to its rooms) and a start with a new device and an empty store (the bot already in the
//! rooms). The first encrypted send used to wait 5 s in about one start of five: matrix-sdk
//! waited for a device-key query about a member without devices (the node's provisioner) that
//! only the sync loop's next round sent, after its 10 s long-poll.

use std::time::{Duration, Instant};

use matrix_sdk::config::SyncSettings;

use crate::bridge::{
    admin_apply, arrivals_by_cap_identifier, bridge_config, drop_file, fixture, join_policy_rooms, policy,
};
use crate::common;

fn alert(id: &str) -> String {
    fixture("10-flood-alert.xml").replace("RIV-FLOOD-2026-0042", id)
}

// The wait came in about one start of five, so the test starts several fresh nodes and bridges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_alert_after_a_start_is_posted_at_once() {
    crate::fed::logs();
    for _ in 0..4 {
        one_round().await;
    }
}

async fn one_round() {
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, policy()).unwrap();
    let node = common::start(&dir.path().join("node"), |c| c.policy = Some(policy_file.clone())).await;
    admin_apply(&node).await;
    let officer = common::login(&node, "officer", "officer-pw").await;
    join_policy_rooms(&officer).await;
    let arrivals = arrivals_by_cap_identifier(&officer);
    let arrived = |id: &'static str, secs: u64| {
        let arrivals = arrivals.clone();
        let officer = officer.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(secs);
            loop {
                if let Some(t) = arrivals.lock().unwrap().get(id).copied() {
                    return t;
                }
                assert!(Instant::now() < deadline, "{id} did not arrive within {secs} s");
                officer.sync_once(SyncSettings::default().timeout(Duration::from_secs(1))).await.expect("sync");
            }
        }
    };

    // A first bridge joins the rooms (it is invited by the policy) and posts.
    let first_dir = dir.path().join("first");
    let first = tocsin_bridge::start(bridge_config(&first_dir, &node.base_url(), &policy_file)).await.expect("starts");
    let dropped = Instant::now();
    drop_file(&first_dir.join("in-a"), "a.xml", &alert("START-A"));
    let took = arrived("START-A", 60).await - dropped;
    eprintln!("first alert after the first start: {took:.1?}");
    assert!(took < Duration::from_secs(3), "the first alert after the first start took {took:?}");
    first.stop().await;

    // A bridge with a new device and an empty store; the bot is already in the rooms.
    let second_dir = dir.path().join("second");
    let second =
        tocsin_bridge::start(bridge_config(&second_dir, &node.base_url(), &policy_file)).await.expect("starts");
    let dropped = Instant::now();
    drop_file(&second_dir.join("in-a"), "b.xml", &alert("START-B"));
    let took = arrived("START-B", 60).await - dropped;
    eprintln!("first alert after the start of a bridge with a new device: {took:.1?}");
    assert!(took < Duration::from_secs(3), "the first alert after a start took {took:?}");
    second.stop().await;
    node.shutdown().await;
}
