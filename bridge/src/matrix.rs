//! The bot: an ordinary matrix-sdk client with a persistent SQLite store (its device identity
//! and Olm/Megolm sessions survive restarts, so alarms in encrypted rooms are encrypted), a
//! sync loop that keeps E2EE state fresh and accepts invites, and sending by room alias.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use matrix_sdk::config::{RequestConfig, SyncSettings};
use matrix_sdk::ruma::events::room::member::StrippedRoomMemberEvent;
use matrix_sdk::ruma::{OwnedRoomId, RoomAliasId};
use matrix_sdk::{Client, Room, RoomState};
use serde_json::Value;
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("matrix client: {0}")]
    Sdk(#[from] matrix_sdk::Error),
    #[error("matrix client: {0}")]
    Http(#[from] matrix_sdk::HttpError),
    #[error("matrix client setup: {0}")]
    Build(#[from] matrix_sdk::ClientBuildError),
    #[error("session file: {0}")]
    Session(String),
    #[error("room alias {0:?} is not valid")]
    Alias(String),
}

impl MatrixError {
    /// Whether retrying cannot help: the homeserver answered with a client error (other than
    /// rate limiting). Everything else (connection refused, 5xx, timeouts) is retried.
    pub fn is_permanent(&self) -> bool {
        let api = match self {
            MatrixError::Sdk(e) => e.as_client_api_error(),
            MatrixError::Http(e) => e.as_client_api_error(),
            MatrixError::Alias(_) => return true,
            _ => None,
        };
        api.is_some_and(|e| e.status_code.is_client_error() && e.status_code.as_u16() != 429)
    }
}

pub struct Bot {
    pub client: Client,
    rooms: Mutex<HashMap<String, OwnedRoomId>>,
    /// Turns true once the sync loop has synced and prepared the routed rooms.
    synced: watch::Sender<bool>,
}

/// Where the sync loop is: the first sync, the sync after preparing the rooms, then long-polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    First,
    Prepared,
    Ready,
}

/// `data_dir/session.json`: the access token and device id of the bot's one device.
fn session_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("session.json")
}

impl Bot {
    /// Logs in (the first time) or restores the saved session, with the SQLite store in
    /// `data_dir/matrix`.
    pub async fn connect(homeserver: &str, user: &str, password: &str, data_dir: &Path) -> Result<Bot, MatrixError> {
        let http = crate::net::http_client().map_err(|e| MatrixError::Session(format!("HTTP client: {e}")))?;
        let client = Client::builder()
            .homeserver_url(homeserver)
            .http_client(http)
            .sqlite_store(data_dir.join("matrix"), None)
            // matrix-sdk retries failed requests forever by default; the outbox and the sync
            // loop retry themselves, and must see a homeserver that is down.
            .request_config(RequestConfig::new().retry_limit(1).timeout(Duration::from_secs(40)))
            .build()
            .await?;
        let path = session_path(data_dir);
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| MatrixError::Session(e.to_string()))?;
            let session: matrix_sdk::authentication::matrix::MatrixSession =
                serde_json::from_str(&text).map_err(|e| MatrixError::Session(e.to_string()))?;
            client.restore_session(session).await?;
        } else {
            client
                .matrix_auth()
                .login_username(user, password)
                .initial_device_display_name("tocsin-bridge")
                .send()
                .await?;
            let session =
                client.matrix_auth().session().ok_or_else(|| MatrixError::Session("no session after login".into()))?;
            let text = serde_json::to_string(&session).map_err(|e| MatrixError::Session(e.to_string()))?;
            std::fs::write(&path, text).map_err(|e| MatrixError::Session(e.to_string()))?;
        }
        client.add_event_handler(|ev: StrippedRoomMemberEvent, room: Room, client: Client| async move {
            if client.user_id() == Some(&*ev.state_key)
                && room.state() == RoomState::Invited
                && let Err(e) = room.join().await
            {
                warn!(room = %room.room_id(), "joining an invited room failed: {e}");
            }
        });
        Ok(Bot { client, rooms: Mutex::new(HashMap::new()), synced: watch::Sender::new(false) })
    }

    /// Syncs until `shutdown`, retrying after errors (the homeserver may be down).
    ///
    /// Before the outbox may send, the routed `rooms` are joined and their members loaded
    /// between two syncs, and one more sync without a wait follows at once. Loading members
    /// marks their device lists for a `/keys/query` that matrix-sdk sends only at the start or
    /// end of a sync; the first encrypted send waits (up to 5 s) for that query when a member
    /// has no devices at all (the node's provisioner account, say). Done from the send path, the
    /// query waited for the sync loop's current long-poll to end.
    pub async fn sync_loop(bot: std::sync::Arc<Bot>, rooms: Vec<String>, mut shutdown: watch::Receiver<bool>) {
        let long_poll = SyncSettings::default().timeout(Duration::from_secs(10));
        let at_once = SyncSettings::default().timeout(Duration::ZERO);
        let mut stage = Stage::First;
        loop {
            let settings = if stage == Stage::Ready { long_poll.clone() } else { at_once.clone() };
            tokio::select! {
                _ = shutdown.changed() => return,
                r = bot.client.sync_once(settings) => match r {
                    Ok(_) => match stage {
                        Stage::First => {
                            tokio::select! {
                                _ = shutdown.changed() => return,
                                _ = bot.prepare(&rooms) => {}
                            }
                            stage = Stage::Prepared;
                        }
                        Stage::Prepared => {
                            bot.synced.send_replace(true);
                            stage = Stage::Ready;
                        }
                        Stage::Ready => {}
                    },
                    Err(e) => {
                        warn!("sync failed, retrying: {e}");
                        tokio::select! {
                            _ = shutdown.changed() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                },
            }
        }
    }

    /// Joins each room and loads the members of the encrypted ones. A room that fails here is
    /// left to the send path, which does the same.
    async fn prepare(&self, rooms: &[String]) {
        for alias in rooms {
            let prepared = async {
                let room = self.room(alias).await?;
                if room.latest_encryption_state().await?.is_encrypted() && !room.are_members_synced() {
                    room.sync_members().await?;
                }
                Ok::<_, MatrixError>(())
            };
            if let Err(e) = prepared.await {
                warn!(alias, "could not prepare the room before the first send: {e}");
            }
        }
    }

    /// Waits until the sync loop has synced and prepared the routed rooms: before it, the
    /// client does not yet know its rooms or their members, and would join them again before
    /// its first send.
    pub async fn first_sync(&self) {
        let mut synced = self.synced.subscribe();
        // The sender lives as long as the bot, so this only ends once a sync succeeded.
        let _ = synced.wait_for(|s| *s).await;
    }

    /// The joined room behind a local alias (`flood-ops` → `#flood-ops:server`), joining it
    /// if the bot is only invited.
    async fn room(&self, alias: &str) -> Result<Room, MatrixError> {
        let cached = self.rooms.lock().await.get(alias).cloned();
        let room_id = match cached {
            Some(id) => id,
            None => {
                let server = self.client.user_id().map(|u| u.server_name().to_owned());
                let server = server.ok_or_else(|| MatrixError::Session("not logged in".into()))?;
                let full =
                    RoomAliasId::parse(format!("#{alias}:{server}")).map_err(|_| MatrixError::Alias(alias.into()))?;
                let id = self.client.resolve_room_alias(&full).await?.room_id;
                self.rooms.lock().await.insert(alias.to_owned(), id.clone());
                id
            }
        };
        match self.client.get_room(&room_id) {
            Some(room) if room.state() == RoomState::Joined => Ok(room),
            _ => {
                info!(alias, %room_id, "joining room");
                Ok(self.client.join_room_by_id(&room_id).await?)
            }
        }
    }

    /// Sends a message (encrypted where the room is) and returns its event id.
    pub async fn send(&self, alias: &str, content: Value) -> Result<String, MatrixError> {
        let room = self.room(alias).await?;
        let sent = room.send_raw("m.room.message", content).await?;
        Ok(sent.response.event_id.to_string())
    }
}
