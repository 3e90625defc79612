//! A measurement, not a pass/fail test (ignored by default): CAP alerts through the bridge into an
//! encrypted room of an in-process node, as an officer's matrix-sdk client sees them. Two figures:
//! throughput (N alert files dropped at once, until the officer's sync holds all N) and latency
//! (alerts dropped one at a time, from the rename into the folder to the decrypted message in
//! the officer's sync). Run with
//!
//! ```sh
//! BRIDGE_BENCH_ALERTS=1000 cargo test -p tocsin-tests --test suite bridge_bench -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use matrix_sdk::config::SyncSettings;
use tocsin_bridge::config::SourceKind;

use crate::bridge::{
    admin_apply, arrivals_by_cap_identifier, bridge_config, drop_file, fixture, join_policy_rooms, policy,
};
use crate::common;

/// The flood alert of the fixtures with its own identifier, so each is a new alert.
fn alert(n: usize) -> String {
    fixture("10-flood-alert.xml").replace("RIV-FLOOD-2026-0042", &format!("BENCH-{n:05}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn bridge_bench() {
    crate::fed::logs();
    let alerts: usize = std::env::var("BRIDGE_BENCH_ALERTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let latency_samples: usize =
        std::env::var("BRIDGE_BENCH_LATENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(50).max(2);
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, policy()).unwrap();
    let node = common::start(&dir.path().join("node"), |c| c.policy = Some(policy_file.clone())).await;
    admin_apply(&node).await;

    let officer = common::login(&node, "officer", "officer-pw").await;
    join_policy_rooms(&officer).await;

    // When the officer's client first saw each alert, by CAP identifier.
    let arrivals = arrivals_by_cap_identifier(&officer);
    // One folder, polled every 20 ms (the default in deploy/bridge.toml is 1 s).
    let mut config = bridge_config(dir.path(), &node.base_url(), &policy_file);
    let folder = dir.path().join("bench-in");
    config.sources = vec![tocsin_bridge::config::Source {
        name: "bench".into(),
        template: None,
        require_signature: false,
        trusted_certs: Vec::new(),
        kind: SourceKind::Folder { path: folder.clone(), interval_ms: 20 },
    }];
    let bridge = tocsin_bridge::start(config).await.expect("bridge starts");

    let seen = |id: &str| arrivals.lock().unwrap().get(id).copied();
    // Long-polls the officer's sync until `what` arrived (the handler stamps it as it is decrypted).
    let wait = |what: String, secs: u64| {
        let arrivals = arrivals.clone();
        let officer = officer.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(secs);
            loop {
                if let Some(t) = arrivals.lock().unwrap().get(&what).copied() {
                    return t;
                }
                assert!(Instant::now() < deadline, "{what} did not arrive within {secs} s");
                officer.sync_once(SyncSettings::default().timeout(Duration::from_secs(2))).await.expect("sync");
            }
        }
    };

    // Latency: one alert at a time (also warms up the bot's Megolm session).
    let mut latencies = Vec::with_capacity(latency_samples);
    for n in 0..latency_samples {
        let id = format!("BENCH-{n:05}");
        let dropped = Instant::now();
        drop_file(&folder, &format!("{id}.xml"), &alert(n));
        latencies.push(wait(id, 60).await - dropped);
    }
    // The first alert after a start also sets up the bot's encryption in the room; reported apart.
    let first_alert = latencies.remove(0);
    latencies.sort();

    // Throughput: the rest dropped at once.
    let first = latency_samples;
    let started = Instant::now();
    for n in first..first + alerts {
        drop_file(&folder, &format!("BENCH-{n:05}.xml"), &alert(n));
    }
    let dropped_in = started.elapsed();
    let last = wait(format!("BENCH-{:05}", first + alerts - 1), 600).await;
    let all_by = (first..first + alerts)
        .map(|n| seen(&format!("BENCH-{n:05}")).unwrap_or_else(|| panic!("BENCH-{n:05} never arrived")))
        .max()
        .unwrap_or(last);
    let took = all_by - started;

    bridge.stop().await;
    println!("bridge bench: {alerts} CAP alerts dropped at once into one folder (written in {dropped_in:.1?})");
    println!(
        "bridge bench: all {alerts} in the officer's sync (decrypted) after {took:.2?}: {:.1} alerts/s",
        alerts as f64 / took.as_secs_f64()
    );
    println!(
        "bridge bench: latency, file rename to decrypted message in sync, alerts one at a time: first after start {first_alert:.1?}; the next {}: p50 {:.1?}, p95 {:.1?}, max {:.1?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies[latencies.len() - 1]
    );
}
