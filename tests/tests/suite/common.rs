//! Shared harness: in-process nodes on ephemeral ports with temp dirs, and real matrix-sdk
//! clients logged in to them.
#![allow(dead_code)]

use std::{path::Path, time::Duration};

use matrix_sdk::{Client, config::SyncSettings};
use tocsin_node::{Config, Node, NodeHandle};

pub fn config(dir: &Path, server_name: &str) -> Config {
    Config {
        server_name: server_name.to_owned(),
        listen: "127.0.0.1:0".parse().expect("literal address"),
        // Every node in a test process gets its own federation port too.
        federation_listen: "127.0.0.1:0".parse().expect("literal address"),
        data_dir: dir.to_owned(),
        ..Config::default()
    }
}

/// Starts a node in `dir` with the given tweaks to the default config.
pub async fn start(dir: &Path, tweak: impl FnOnce(&mut Config)) -> NodeHandle {
    let mut config = config(dir, "tocsin.test");
    tweak(&mut config);
    Node::start(config).await.expect("node starts")
}

/// Creates an account on the node directly (registration is closed by default).
pub async fn add_user(node: &NodeHandle, name: &str, password: &str) {
    node.services.users.create_account(name, Some(password), None, false).await.expect("account created");
}

/// A matrix-sdk client logged in as `name`.
pub async fn login(node: &NodeHandle, name: &str, password: &str) -> Client {
    let client = Client::builder().homeserver_url(node.base_url()).build().await.expect("client builds");
    client.matrix_auth().login_username(name, password).send().await.expect("login succeeds");
    client
}

pub async fn user(node: &NodeHandle, name: &str) -> Client {
    add_user(node, name, "correct horse").await;
    login(node, name, "correct horse").await
}

pub async fn sync(client: &Client) {
    client.sync_once(SyncSettings::default().timeout(Duration::from_millis(0))).await.expect("sync succeeds");
}

/// Retries `check` (each time after a sync) until it returns `Some`, for up to `secs`.
pub async fn eventually<T, F, Fut>(client: &Client, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        sync(client).await;
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {secs}s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` until it holds, for up to `secs`.
pub async fn eventually_until<F, Fut>(secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {secs}s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `tocsin-node` binary, built once per test process on demand (`cargo test` builds only
/// the tested package's binaries). Built with the same selection `cargo test --workspace` uses,
/// so the dependencies' features match and nothing but the binary is compiled: `-p tocsin-node`
/// alone resolves other features and rebuilt half the dependency tree while tests were running.
pub fn tocsin_node_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/suite-<hash>
            let profile_dir = exe.parent().and_then(Path::parent).expect("test binary in target/<profile>/deps");
            let target_dir = profile_dir.parent().expect("target dir");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut build = std::process::Command::new(cargo);
            build.args(["build", "--workspace", "--all-targets", "--target-dir"]).arg(target_dir);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "building tocsin-node failed");
            profile_dir.join(format!("tocsin-node{}", std::env::consts::EXE_SUFFIX))
        })
        .clone()
}
