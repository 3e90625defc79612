//! The admin room: server notices for the node's admins, beyond the log. It carries users'
//! reports (of events, rooms and users) and the federation list's expiry warning: one `m.notice`
//! when the list in force enters the last 7 days before its expiry, one when it expires, and one
//! when a valid list is in force again after a warning. Not on every poll: the last phase
//! notified is kept in the store, so a restart does not repeat a notice either.
//!
//! The room (`#tocsin-admin:<server>`) and its sender (`@tocsin-notices:<server>`, an account
//! without a password, so nobody can log in as it) are created on the first notice. Every
//! active admin account not yet in the room is invited with each notice, so admins added later
//! get the next one. The room is not encrypted: the node cannot encrypt for its admins' devices.

use ruma::{
    OwnedRoomId, OwnedUserId, RoomAliasId, RoomVersionId,
    events::{TimelineEventType, room::message::RoomMessageEventContent},
};
use serde::{Deserialize, Serialize};
use tocsin_store::WriteBatch;

use crate::{
    Services,
    error::{Error, Result},
    policy::federation::ListState,
    rooms::{CreateRoom, NewEvent, Preset},
    store::trees,
};

/// The localpart of the account that posts notices.
pub const NOTICE_USER: &str = "tocsin-notices";
/// The localpart of the admin room's alias.
pub const ROOM_ALIAS: &str = "tocsin-admin";
/// `META` key of the last expiry phase notified.
const NOTIFIED_KEY: &[u8] = b"federation_list_notified";
/// How long to wait before trying again after a notice could not be posted.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Where the federation list in force stands with respect to its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Valid,
    ExpiresSoon,
    Expired,
}

impl Phase {
    pub fn of(state: &ListState) -> Self {
        if state.expired {
            Phase::Expired
        } else if state.expires_soon {
            Phase::ExpiresSoon
        } else {
            Phase::Valid
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Notified {
    version: u64,
    phase: Phase,
}

/// The expiry notices of one running node (kept by the policy watcher's loop).
pub struct ExpiryNotices {
    last: Option<Notified>,
    retry_at: Option<tokio::time::Instant>,
}

impl ExpiryNotices {
    /// Reads the last phase notified from the store.
    pub fn load(s: &Services) -> Self {
        let last = match s.db.get(trees::META, NOTIFIED_KEY) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the last federation list notice");
                None
            }
        };
        Self { last, retry_at: None }
    }

    /// Posts a notice when the list's phase (or version, within a warning phase) changed since
    /// the last notice. Cheap when nothing changed; called on every poll.
    pub async fn check(&mut self, s: &Services) {
        let Some(state) = s.policy.federation.state() else { return };
        let now = Notified { version: state.version, phase: Phase::of(&state) };
        let due = match self.last {
            None => now.phase != Phase::Valid,
            Some(last) => last != now && !(last.phase == Phase::Valid && now.phase == Phase::Valid),
        };
        if !due || self.retry_at.is_some_and(|at| tokio::time::Instant::now() < at) {
            return;
        }
        let body = match (&state.warning, now.phase) {
            (Some(warning), Phase::ExpiresSoon | Phase::Expired) => format!("⚠ Federation list: {warning}"),
            _ => format!(
                "Federation list: \"{}\" version {} is in force and valid until {}; the warning is over.",
                state.name, state.version, state.expires
            ),
        };
        match post(s, &body).await {
            Ok(room_id) => {
                tracing::info!(%room_id, version = now.version, phase = ?now.phase, "federation list notice posted");
                self.last = Some(now);
                self.retry_at = None;
                let mut batch = WriteBatch::new();
                match serde_json::to_vec(&now) {
                    Ok(bytes) => batch.insert(trees::META, NOTIFIED_KEY.to_vec(), bytes),
                    Err(e) => tracing::warn!(error = %e, "cannot encode the federation list notice state"),
                }
                if let Err(e) = s.db.write(batch).await {
                    tracing::warn!(error = %e, "cannot save the federation list notice state; it may repeat");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot post the federation list notice to the admin room; retrying");
                self.retry_at = Some(tokio::time::Instant::now() + RETRY_AFTER);
            }
        }
    }
}

/// Posts an `m.notice` to the admin room (created on demand), inviting admins who are not in it.
pub async fn post(s: &Services, body: &str) -> Result<OwnedRoomId> {
    let (room_id, sender) = admin_room(s).await?;
    let content = serde_json::to_value(RoomMessageEventContent::notice_plain(body)).map_err(Error::internal)?;
    s.rooms.send(&room_id, &sender, NewEvent::message(TimelineEventType::RoomMessage, content), None).await?;
    Ok(room_id)
}

/// Records a user's report and tells the admins in the admin room. The report is kept even when
/// the notice cannot be posted (it is in the admin API's list either way).
pub async fn file_report(
    s: &Services,
    subject: crate::rooms::reports::Subject,
    reporter: &ruma::UserId,
    reason: Option<&str>,
) -> Result<()> {
    let report = s.rooms.report(subject, reporter, reason).await?;
    let reason = report.reason.as_deref().unwrap_or("no reason given");
    let body = format!("Report from {}: {}. Reason: {reason}", report.reporter, report.subject);
    if let Err(e) = post(s, &body).await {
        tracing::error!(error = %e, "cannot post a report to the admin room; it is still listed by the admin API");
    }
    Ok(())
}

/// The admin room and the notice account, created when missing; admins invited.
pub async fn admin_room(s: &Services) -> Result<(OwnedRoomId, OwnedUserId)> {
    let sender = s.users.user_id_for(NOTICE_USER)?;
    if s.users.account(&sender)?.is_none() {
        match s.users.create_account(NOTICE_USER, None, Some("Tocsin notices".into()), false).await {
            Ok(_) | Err(Error::UserInUse) => {}
            Err(e) => return Err(e),
        }
    }
    let alias = RoomAliasId::parse(format!("#{ROOM_ALIAS}:{}", s.server_name)).map_err(Error::internal)?;
    let room_id = match s.rooms.resolve_alias(&alias)? {
        Some(room_id) => room_id,
        None => {
            let version = RoomVersionId::try_from(s.config.default_room_version.as_str()).map_err(Error::internal)?;
            s.rooms
                .create_room(CreateRoom {
                    version,
                    creator: sender.clone(),
                    creator_profile: (Some("Tocsin notices".into()), None),
                    creation_content: Default::default(),
                    preset: Preset::PrivateChat,
                    initial_state: Vec::new(),
                    name: Some("Tocsin admin notices".into()),
                    topic: Some("Warnings from this node for its admins (federation list expiry ...)".into()),
                    invite: Vec::new(),
                    is_direct: false,
                    alias: Some(alias),
                    power_override: None,
                    public: false,
                    encrypted: false,
                })
                .await?
        }
    };
    let joined = s.rooms.members(&room_id, "join").await?;
    let invited = s.rooms.members(&room_id, "invite").await?;
    for (user_id, account) in s.users.accounts()? {
        if !account.admin || account.deactivated || joined.contains(&user_id) || invited.contains(&user_id) {
            continue;
        }
        if let Err(e) = s.rooms.set_membership(&room_id, &sender, &user_id, "invite", (None, None), None).await {
            tracing::warn!(%user_id, error = %e, "cannot invite an admin to the admin room");
        }
    }
    Ok((room_id, sender))
}

/// `META` key prefix of a user's server notices room.
const USER_NOTICE_ROOM: &str = "server_notice_room:";

/// Sends `body` to one local user as an `m.notice` from the notices account, in a direct room
/// with them (created on the first notice, the user re-invited if they left it).
pub async fn to_user(s: &Services, user_id: &ruma::UserId, body: &str) -> Result<OwnedRoomId> {
    let (_, sender) = admin_room(s).await?;
    let key = format!("{USER_NOTICE_ROOM}{user_id}").into_bytes();
    let known = match s.db.get(trees::META, &key)? {
        Some(bytes) => Some(ruma::RoomId::parse(crate::store::utf8(&bytes)?).map_err(Error::internal)?),
        None => None,
    };
    let room_id = match known {
        Some(room_id) => {
            let membership = s.rooms.membership(&room_id, user_id).await?;
            if !matches!(membership.as_deref(), Some("join" | "invite")) {
                s.rooms.set_membership(&room_id, &sender, user_id, "invite", (None, None), None).await?;
            }
            room_id
        }
        None => {
            let version = RoomVersionId::try_from(s.config.default_room_version.as_str()).map_err(Error::internal)?;
            let room_id = s
                .rooms
                .create_room(CreateRoom {
                    version,
                    creator: sender.clone(),
                    creator_profile: (Some("Tocsin notices".into()), None),
                    creation_content: Default::default(),
                    preset: Preset::PrivateChat,
                    initial_state: Vec::new(),
                    name: Some("Server notices".into()),
                    topic: Some("Notices from this node's administrators".into()),
                    invite: vec![user_id.to_owned()],
                    is_direct: true,
                    alias: None,
                    power_override: None,
                    public: false,
                    encrypted: false,
                })
                .await?;
            let mut batch = WriteBatch::new();
            batch.insert(trees::META, key, room_id.as_bytes().to_vec());
            s.db.write(batch).await?;
            room_id
        }
    };
    let content = serde_json::to_value(RoomMessageEventContent::notice_plain(body)).map_err(Error::internal)?;
    s.rooms.send(&room_id, &sender, NewEvent::message(TimelineEventType::RoomMessage, content), None).await?;
    Ok(room_id)
}

#[derive(Deserialize)]
struct NoticeRequest {
    /// One user, or every active local account when absent.
    user_id: Option<ruma::OwnedUserId>,
    body: String,
}

/// `POST /_tocsin/admin/server_notices`: `{"user_id": "@a:x", "body": "..."}`, or without
/// `user_id` to every active local account.
pub async fn send_endpoint(
    axum::extract::State(s): axum::extract::State<std::sync::Arc<Services>>,
    headers: http::HeaderMap,
    uri: http::Uri,
    bytes: bytes::Bytes,
) -> Result<axum::response::Response> {
    let caller = super::require_operator(&s, &headers, &uri)?;
    let req: NoticeRequest = super::body(&bytes)?;
    if req.body.trim().is_empty() {
        return Err(Error::MissingParam("body is empty".into()));
    }
    let targets: Vec<OwnedUserId> = match req.user_id {
        Some(user_id) => {
            let active = s.users.account(&user_id)?.is_some_and(|a| !a.deactivated);
            if !s.users.is_local(&user_id) || !active {
                return Err(Error::not_found(format!("no active local account {user_id}")));
            }
            vec![user_id]
        }
        None => s
            .users
            .accounts()?
            .into_iter()
            .filter(|(u, a)| !a.deactivated && u.localpart() != NOTICE_USER && a.password_hash.is_some())
            .map(|(u, _)| u)
            .collect(),
    };
    let mut sent = Vec::new();
    for user_id in targets {
        let room_id = to_user(&s, &user_id, &req.body).await?;
        sent.push(serde_json::json!({ "user_id": user_id, "room_id": room_id }));
    }
    tracing::info!(recipients = sent.len(), by = %caller.name(), "admin API: server notice sent");
    super::json(&serde_json::json!({ "sent": sent }))
}
