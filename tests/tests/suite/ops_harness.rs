//! The real `tocsin-node` binary for the operations tests: `serve` as a child process with an
//! operator admin token, and the CLI run against it.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;
use tocsin_tests::cluster::{Cluster, Member};

use crate::common::tocsin_node_binary;

pub const ADMIN_TOKEN: &str = "operator-token-0123456789abcdef";
pub const METRICS_TOKEN: &str = "metrics-token-0123456789";

/// A solo node planned in `dir`, with its admin token file written.
pub struct Solo {
    pub cluster: Cluster,
    pub token_file: PathBuf,
    /// Extra environment for `serve` and the CLI (the CLI reads the same config).
    pub env: Vec<(String, String)>,
}

impl Solo {
    pub fn plan(dir: &Path, name: &str) -> Self {
        let cluster = Cluster::plan(dir, &[name]).expect("cluster planned");
        let token_file = dir.join("admin.token");
        std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).expect("token written");
        let env = vec![("TOCSIN_ADMIN_TOKEN_FILE".to_owned(), token_file.display().to_string())];
        Self { cluster, token_file, env }
    }

    pub fn member(&self) -> &Member {
        &self.cluster.members[0]
    }

    pub fn base(&self) -> String {
        self.member().base_url()
    }

    fn command(&self) -> Command {
        let mut command = Command::new(tocsin_node_binary());
        command.arg("--config").arg(&self.member().config_file);
        command.env_remove("TOCSIN_ADMIN_TOKEN");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    /// `serve`, logging to `log`; returns once the client port answers.
    pub async fn serve(&self, log: &Path) -> Child {
        let log_file = std::fs::File::create(log).expect("log file");
        let mut child = self
            .command()
            .arg("serve")
            .env("TOCSIN_LOG", "info")
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("tocsin-node starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(self.member().client_addr).await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("serve exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "serve did not answer within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child
    }

    /// Runs the CLI with `args` (blocking, on a blocking thread).
    pub async fn cli(&self, args: &[&str]) -> Output {
        let mut command = self.command();
        command.args(args);
        tokio::task::spawn_blocking(move || command.output().expect("the CLI runs")).await.expect("CLI thread")
    }

    /// Runs the CLI, asserts success, and parses its JSON output.
    pub async fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
    }
}

/// SIGTERM and wait; asserts a clean exit.
pub fn terminate(child: &mut Child) {
    let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(sent.success());
    let status = child.wait().expect("serve exits");
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
}

/// A JSON request to the node; returns status and body.
pub async fn call(method: reqwest::Method, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Logs in with a password; returns the access token.
pub async fn login(base: &str, user: &str, password: &str) -> Result<String, (u16, Value)> {
    let body = serde_json::json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    });
    let (status, value) =
        call(reqwest::Method::POST, &format!("{base}/_matrix/client/v3/login"), None, Some(body)).await;
    match value["access_token"].as_str() {
        Some(token) if status == 200 => Ok(token.to_owned()),
        _ => Err((status, value)),
    }
}

/// Creates a room; returns its id.
pub async fn create_room(base: &str, token: &str, name: &str) -> String {
    let body = serde_json::json!({ "name": name, "preset": "private_chat" });
    let (status, value) =
        call(reqwest::Method::POST, &format!("{base}/_matrix/client/v3/createRoom"), Some(token), Some(body)).await;
    assert_eq!(status, 200, "{value}");
    value["room_id"].as_str().expect("room_id").to_owned()
}

/// Sends a text message; returns the status and the event id if any.
pub async fn send(base: &str, token: &str, room: &str, txn: &str, text: &str) -> (u16, Option<String>) {
    let url = format!("{base}/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", percent(room));
    let body = serde_json::json!({ "msgtype": "m.text", "body": text });
    let (status, value) = call(reqwest::Method::PUT, &url, Some(token), Some(body)).await;
    (status, value["event_id"].as_str().map(str::to_owned))
}

/// One path segment, percent-encoded (room and user ids carry `! : @`).
pub fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
