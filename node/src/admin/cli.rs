//! `tocsin-node admin ...`, `backup` and `restore`: the admin API from the command line, against
//! the running node on this host. The token: `--token` / `TOCSIN_ADMIN_TOKEN` (an admin
//! account's access token), else the config's `admin_token_file`. The address: `--url`, else the
//! config's `listen` (not `public_base_url`: the reverse proxy should not pass the admin API).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use clap::Subcommand;
use serde_json::{Value, json};

use crate::Config;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Registration tokens (for `registration = "token"`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Media.
    #[command(subcommand)]
    Media(MediaCommand),
    /// Send a server notice (an `m.notice` in a direct room from the node) to one user, or to
    /// every active local account.
    Notice {
        body: String,
        #[arg(long)]
        user: Option<String>,
    },
}

/// An account to create: `admin user add` on a running node, `user add` on a stopped one.
#[derive(clap::Args, Debug)]
pub struct NewAccount {
    pub name: String,
    #[arg(long)]
    pub admin: bool,
    #[arg(long, env = "TOCSIN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    #[arg(long)]
    pub display_name: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    List,
    /// Create an account; without --password one is made up and printed.
    Add(NewAccount),
    /// Set a new password (and log out every device unless --keep-devices).
    ResetPassword {
        user: String,
        #[arg(long, env = "TOCSIN_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long)]
        keep_devices: bool,
    },
    /// Deactivate: no password, no devices, out of every room.
    Deactivate {
        user: String,
    },
    /// Log out every device of the user.
    Logout {
        user: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    List,
    Create {
        /// The token itself; made up when absent.
        #[arg(long)]
        token: Option<String>,
        #[arg(long)]
        uses: Option<u32>,
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    Revoke {
        token: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoomCommand {
    List,
    Show {
        room_id: String,
    },
    /// Remove every local member, with a notice, and keep local users out.
    Shutdown {
        room_id: String,
        #[arg(long)]
        notice: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum MediaCommand {
    /// Delete one file: mxc://server/media_id.
    Purge { mxc: String },
    /// Delete the cached copies of other servers' files (of one server with --server).
    PurgeRemote {
        #[arg(long)]
        server: Option<String>,
    },
}

/// Where and how to reach the running node's admin API.
#[derive(clap::Args, Debug)]
pub struct Remote {
    /// The node's client API; default: `http://{listen}` from the config.
    #[arg(long)]
    pub url: Option<String>,
    /// An admin account's access token; default: the config's `admin_token_file`.
    #[arg(long, env = "TOCSIN_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(config: &Config, remote: Remote) -> anyhow::Result<Self> {
        let token = match remote.token.filter(|t| !t.trim().is_empty()) {
            Some(token) => token.trim().to_owned(),
            None => match &config.admin_token_file {
                Some(path) => crate::config::ops::read_admin_token(path)?,
                None => anyhow::bail!(
                    "the admin commands need a token: set `admin_token_file` in the config (then run as a user \
                     who can read it), or pass --token / TOCSIN_ADMIN_TOKEN with an admin account's access token"
                ),
            },
        };
        let base = remote.url.unwrap_or_else(|| {
            let mut addr = config.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            format!("http://{addr}")
        });
        Ok(Self { http: crate::http::outbound::cli_client()?, base: base.trim_end_matches('/').to_owned(), token })
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}/_tocsin/admin/{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!("cannot reach the node at {}: is it running? (--url to change) {e}", self.base)
        })?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = value.get("error").and_then(Value::as_str).map_or_else(|| value.to_string(), str::to_owned);
            anyhow::bail!("the node refused ({status}): {message}");
        }
        Ok(value)
    }
}

/// Percent-encodes one path segment (user ids, room ids and tokens contain `@ ! : #`).
pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Runs one admin command and returns what to print (pretty JSON from the node).
pub async fn run(config: &Config, remote: Remote, command: AdminCommand) -> anyhow::Result<String> {
    use reqwest::Method as M;
    let client = Client::new(config, remote)?;
    let value = match command {
        AdminCommand::User(UserCommand::List) => client.call(M::GET, "users", None).await?,
        AdminCommand::User(UserCommand::Add(NewAccount { name, admin, password, display_name })) => {
            let body = json!({ "username": name, "admin": admin, "password": password, "displayname": display_name });
            client.call(M::POST, "users", Some(body)).await?
        }
        AdminCommand::User(UserCommand::ResetPassword { user, password, keep_devices }) => {
            let body = json!({ "password": password, "logout_devices": !keep_devices });
            client.call(M::POST, &format!("users/{}/password", seg(&user)), Some(body)).await?
        }
        AdminCommand::User(UserCommand::Deactivate { user }) => {
            client.call(M::POST, &format!("users/{}/deactivate", seg(&user)), None).await?
        }
        AdminCommand::User(UserCommand::Logout { user }) => {
            client.call(M::POST, &format!("users/{}/logout", seg(&user)), None).await?
        }
        AdminCommand::Token(TokenCommand::List) => client.call(M::GET, "registration_tokens", None).await?,
        AdminCommand::Token(TokenCommand::Create { token, uses, expires_in_secs }) => {
            let body = json!({ "token": token, "uses_allowed": uses, "expires_in_secs": expires_in_secs });
            client.call(M::POST, "registration_tokens", Some(body)).await?
        }
        AdminCommand::Token(TokenCommand::Revoke { token }) => {
            client.call(M::DELETE, &format!("registration_tokens/{}", seg(&token)), None).await?
        }
        AdminCommand::Room(RoomCommand::List) => client.call(M::GET, "rooms", None).await?,
        AdminCommand::Room(RoomCommand::Show { room_id }) => {
            client.call(M::GET, &format!("rooms/{}", seg(&room_id)), None).await?
        }
        AdminCommand::Room(RoomCommand::Shutdown { room_id, notice }) => {
            client
                .call(M::POST, &format!("rooms/{}/shutdown", seg(&room_id)), Some(json!({ "notice": notice })))
                .await?
        }
        AdminCommand::Media(MediaCommand::Purge { mxc }) => {
            let rest = mxc.strip_prefix("mxc://").unwrap_or(&mxc);
            let Some((server, id)) = rest.split_once('/') else {
                anyhow::bail!("`{mxc}` is not mxc://server/media_id");
            };
            client.call(M::DELETE, &format!("media/{}/{}", seg(server), seg(id)), None).await?
        }
        AdminCommand::Media(MediaCommand::PurgeRemote { server }) => {
            client.call(M::POST, "media/purge_remote", Some(json!({ "server": server }))).await?
        }
        AdminCommand::Notice { body, user } => {
            client.call(M::POST, "server_notices", Some(json!({ "body": body, "user_id": user }))).await?
        }
    };
    Ok(serde_json::to_string_pretty(&value)?)
}

/// `tocsin-node backup DEST`: the running node writes a backup to DEST on its host.
pub async fn backup(config: &Config, remote: Remote, dest: PathBuf) -> anyhow::Result<String> {
    let dest = if dest.is_absolute() { dest } else { std::env::current_dir()?.join(dest) };
    let client = Client::new(config, remote)?;
    let value = client.call(reqwest::Method::POST, "backup", Some(json!({ "destination": dest }))).await?;
    Ok(serde_json::to_string_pretty(&value)?)
}
