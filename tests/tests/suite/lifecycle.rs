//! The real binary's lifecycle: `serve` stops promptly on SIGTERM with its store closed, and
//! starts again at once on the same data.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use tocsin_tests::cluster::Cluster;

use crate::common::tocsin_node_binary;

fn serve(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log_file = std::fs::File::create(log).expect("log file");
    Command::new(tocsin_node_binary())
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("TOCSIN_LOG", "info")
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .expect("tocsin-node starts")
}

async fn until_answering(addr: std::net::SocketAddr, child: &mut Child, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("serve exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "serve did not answer within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends SIGTERM and returns how long the process took to exit.
fn terminate(child: &mut Child) -> Duration {
    let started = Instant::now();
    let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(sent.success());
    let status = child.wait().expect("serve exits");
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_within_two_seconds_and_restarts_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["solo.test"]).unwrap();
    let member = &cluster.members[0];
    let log = dir.path().join("serve.log");
    for round in 0..2 {
        let mut child = serve(&member.config_file, &log);
        until_answering(member.client_addr, &mut child, &log).await;
        if round == 0 {
            // A second node on the same data dir is refused, and told why and where.
            // Other ports, so the store's lock is what stops it (ports are bound first).
            let second_log = dir.path().join("second.log");
            let second_config = dir.path().join("second.toml");
            let text = std::fs::read_to_string(&member.config_file).unwrap();
            let text: Vec<String> = text
                .lines()
                .map(|l| match l.split_once('=').map(|(k, _)| k.trim()) {
                    Some("listen") => "listen = \"127.0.0.1:0\"".to_owned(),
                    Some("federation_listen") => "federation_listen = \"127.0.0.1:0\"".to_owned(),
                    _ => l.to_owned(),
                })
                .collect();
            std::fs::write(&second_config, text.join("\n")).unwrap();
            let status = serve(&second_config, &second_log).wait().expect("second serve exits");
            let output = std::fs::read_to_string(&second_log).unwrap_or_default();
            assert!(!status.success(), "a second node on the same store must not start");
            let store = member.data_dir.join("store");
            assert!(
                output.contains("already open in another process") && output.contains(&store.display().to_string()),
                "the lock error names the store and what to do: {output}"
            );
        }
        let took = terminate(&mut child);
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(took < Duration::from_secs(2), "round {round}: SIGTERM took {took:?}; log:\n{output}");
        assert!(output.contains("shutting down"), "round {round}: the log is captured:\n{output}");
        assert!(!output.contains("did not stop"), "round {round}: every worker was joined:\n{output}");
        assert!(!output.contains('\u{1b}'), "round {round}: no colour codes in a log file:\n{output}");
    }
}

/// A busy node stops promptly: a long-poll in flight, a destination worker backing off for a
/// peer that is down, and the other workers are all joined (none aborted), and the data dir
/// opens again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_joins_every_worker_while_busy() {
    crate::fed::logs();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["busy-a.test", "busy-b.test"]).unwrap();
    let (a, b) = (cluster.start(0).await.unwrap(), cluster.start(1).await.unwrap());
    let alice = crate::fed::user_on(&a, "alice").await;
    let bob = crate::fed::user_on(&b, "bob").await;
    let room = crate::fed::shared_room(&alice, &[&bob]).await;
    b.shutdown().await;
    // Queued for a peer that is down: A's destination worker now backs off.
    let joined = alice.get_room(&room).expect("alice is in the room");
    joined.send(matrix_sdk::ruma::events::room::message::RoomMessageEventContent::text_plain("anyone?")).await.unwrap();
    let syncing = alice.clone();
    let long_poll = tokio::spawn(async move {
        let settings = matrix_sdk::config::SyncSettings::default().timeout(Duration::from_secs(30));
        syncing.sync_once(settings).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let workers = a.services.workers.len();
    assert!(workers >= 5, "the node runs its background work as registered workers, found {workers}");
    let started = Instant::now();
    let report = a.shutdown().await;
    let took = started.elapsed();
    assert!(report.aborted.is_empty(), "every worker stops by itself: {report:?}");
    assert!(report.joined >= 5, "shutdown joined the workers: {report:?}");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    let _ = long_poll.await;
    let again = cluster.start(0).await.expect("the same data dir opens again at once");
    again.shutdown().await;
}

#[tokio::test]
async fn health_answers_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = crate::common::start(dir.path(), |_| {}).await;
    let response = reqwest::get(format!("{}/health", node.base_url())).await.expect("the node answers");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!((body["status"].as_str(), body["store"].as_str()), (Some("ok"), Some("ok")), "{body}");
    node.shutdown().await;
}

/// A start that fails names what is at fault and leaves no data dir behind: a port in use is
/// found before anything is written, and a store that cannot open removes what the start made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_start_names_the_fault_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let data_dir = dir.path().join("node");
    let mut config = crate::common::config(&data_dir, "tocsin.test");
    config.federation_listen = taken_addr;
    let err = tocsin_node::Node::start(config.clone()).await.err().expect("a port in use fails the start");
    let message = format!("{err:#}");
    assert!(message.contains(&taken_addr.to_string()) && message.contains("federation_listen"), "{message}");
    assert!(!data_dir.exists(), "nothing was written before the ports were bound");

    // A store that fails to open (a file where the store directory belongs) on a first start.
    drop(taken);
    config.federation_listen = "127.0.0.1:0".parse().unwrap();
    std::fs::create_dir_all(dir.path().join("blocked")).unwrap();
    config.data_dir = dir.path().join("blocked").join("node");
    std::fs::create_dir_all(&config.data_dir).unwrap();
    std::fs::write(config.data_dir.join("store"), b"not a store").unwrap();
    assert!(tocsin_node::Node::start(config.clone()).await.is_err(), "a store path that is a file fails the start");
    assert!(config.data_dir.join("store").is_file(), "a data dir that existed before is left as it was");

    // And the same config with a free port starts at once in a fresh dir.
    config.data_dir = data_dir.clone();
    let node = tocsin_node::Node::start(config).await.expect("starts once the port is free");
    assert!(data_dir.join("store").exists());
    node.shutdown().await;
}
