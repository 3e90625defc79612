//! Presence: whether a user is online, away or offline, and their status message. In memory with
//! a serial (like typing), so `/sync` knows what changed; after a restart everyone is offline
//! until they sync or their server tells us again.
//!
//! Off by default (`presence = false`): then nothing is recorded, shown or sent, and inbound
//! `m.presence` EDUs are dropped.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedUserId, UInt, UserId, presence::PresenceState};
use tokio::sync::watch;

/// A local user who stopped syncing for this long is set offline. Longer than the longest
/// long-poll (60 s), so a client that is merely waiting is never flapped offline.
pub const SYNC_GRACE: Duration = Duration::from_secs(90);
/// "Currently active" means active within this window.
const ACTIVE_WINDOW: Duration = Duration::from_secs(60);

/// What is known about one user's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub presence: PresenceState,
    pub status_msg: Option<String>,
    pub last_active_ago: Duration,
    pub currently_active: bool,
}

impl Status {
    fn offline() -> Self {
        Self {
            presence: PresenceState::Offline,
            status_msg: None,
            last_active_ago: Duration::ZERO,
            currently_active: false,
        }
    }

    pub fn last_active_ago_ms(&self) -> UInt {
        UInt::try_from(self.last_active_ago.as_millis().min(u128::from(u64::MAX)) as u64).unwrap_or(UInt::MAX)
    }
}

struct Entry {
    presence: PresenceState,
    status_msg: Option<String>,
    last_active: Instant,
    /// Set by the user (PUT), not by syncing: a sync does not turn it back to online.
    explicit: bool,
    /// Local users only: the start of their latest `/sync`.
    last_sync: Option<Instant>,
    /// For remote users, what their server said; local users are active when they synced
    /// within [`ACTIVE_WINDOW`].
    remote_active: bool,
    serial: u64,
}

impl Entry {
    fn status(&self, now: Instant) -> Status {
        let ago = now.saturating_duration_since(self.last_active);
        let active = self.presence == PresenceState::Online
            && match self.last_sync {
                Some(_) => ago < ACTIVE_WINDOW,
                None => self.remote_active,
            };
        Status {
            presence: self.presence.clone(),
            status_msg: self.status_msg.clone(),
            last_active_ago: ago,
            currently_active: active,
        }
    }
}

pub struct Presence {
    enabled: bool,
    users: Mutex<(HashMap<OwnedUserId, Entry>, u64)>,
    serial: watch::Sender<u64>,
}

/// The presence states a client may set; `_Custom` values are refused.
pub fn is_settable(state: &PresenceState) -> bool {
    matches!(state, PresenceState::Online | PresenceState::Unavailable | PresenceState::Offline)
}

impl Presence {
    pub fn new(enabled: bool) -> Self {
        Self { enabled, users: Mutex::new((HashMap::new(), 0)), serial: watch::channel(0).0 }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn serial(&self) -> u64 {
        *self.serial.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.serial.subscribe()
    }

    /// Applies `change` to `user`'s entry; bumps the serial and returns the new status when the
    /// state, the message or the activity flag changed (so the caller tells other servers).
    fn update(&self, user: &UserId, change: impl FnOnce(&mut Entry)) -> Option<Status> {
        if !self.enabled {
            return None;
        }
        let now = Instant::now();
        let Ok(mut guard) = self.users.lock() else { return None };
        let (users, serial) = &mut *guard;
        let entry = users.entry(user.to_owned()).or_insert_with(|| Entry {
            presence: PresenceState::Offline,
            status_msg: None,
            last_active: now,
            explicit: false,
            last_sync: None,
            remote_active: false,
            serial: 0,
        });
        let before = entry.status(now);
        change(entry);
        let after = entry.status(now);
        if before.presence == after.presence
            && before.status_msg == after.status_msg
            && before.currently_active == after.currently_active
        {
            return None;
        }
        *serial += 1;
        entry.serial = *serial;
        let serial = *serial;
        drop(guard);
        self.serial.send_replace(serial);
        Some(after)
    }

    /// A local user set their presence (`PUT /presence/{userId}/status`).
    pub fn set(&self, user: &UserId, presence: PresenceState, status_msg: Option<String>) -> Option<Status> {
        self.update(user, |e| {
            e.explicit = presence != PresenceState::Online;
            if presence != PresenceState::Offline {
                e.last_active = Instant::now();
            }
            e.presence = presence;
            e.status_msg = status_msg.filter(|m| !m.is_empty());
        })
    }

    /// A local user started a `/sync` with `set_presence`: `online` marks them online unless they
    /// set themselves away; `unavailable` marks them away; `offline` changes nothing.
    pub fn synced(&self, user: &UserId, set_presence: &PresenceState) -> Option<Status> {
        self.update(user, |e| {
            let now = Instant::now();
            match set_presence {
                PresenceState::Online => {
                    e.last_sync = Some(now);
                    e.last_active = now;
                    if !e.explicit || e.presence == PresenceState::Offline {
                        e.presence = PresenceState::Online;
                        e.explicit = false;
                    }
                }
                PresenceState::Unavailable => {
                    e.last_sync = Some(now);
                    if e.presence != PresenceState::Unavailable {
                        e.presence = PresenceState::Unavailable;
                        e.explicit = false;
                    }
                }
                _ => {}
            }
        })
    }

    /// What another server said about one of its users.
    pub fn remote(&self, update: &ruma::api::federation::transactions::edu::PresenceUpdate) -> Option<Status> {
        self.update(&update.user_id, |e| {
            e.presence = update.presence.clone();
            e.status_msg = update.status_msg.clone();
            let ago = Duration::from_millis(update.last_active_ago.into());
            e.last_active = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
            e.remote_active = update.currently_active;
            e.last_sync = None;
        })
    }

    /// Local users who have not synced within [`SYNC_GRACE`] go offline; returns them with their
    /// new status, for the caller to tell other servers.
    pub fn expire_idle(&self) -> Vec<(OwnedUserId, Status)> {
        let now = Instant::now();
        let idle: Vec<OwnedUserId> = match self.users.lock() {
            Ok(guard) => guard
                .0
                .iter()
                .filter(|(_, e)| {
                    e.presence != PresenceState::Offline
                        && e.last_sync.is_some_and(|t| now.saturating_duration_since(t) > SYNC_GRACE)
                })
                .map(|(u, _)| u.clone())
                .collect(),
            Err(_) => return Vec::new(),
        };
        idle.into_iter()
            .filter_map(|user| {
                let status = self.update(&user, |e| {
                    e.presence = PresenceState::Offline;
                    e.explicit = false;
                })?;
                Some((user, status))
            })
            .collect()
    }

    /// `user`'s status (offline when unknown, or when presence is off).
    pub fn get(&self, user: &UserId) -> Status {
        let now = Instant::now();
        match self.users.lock() {
            Ok(guard) => guard.0.get(user).map(|e| e.status(now)).unwrap_or_else(Status::offline),
            Err(_) => Status::offline(),
        }
    }

    /// Users whose presence changed after `since` (every known user when `since` is 0).
    pub fn changed_since(&self, since: u64) -> Vec<(OwnedUserId, Status)> {
        let now = Instant::now();
        match self.users.lock() {
            Ok(guard) => {
                guard.0.iter().filter(|(_, e)| e.serial > since).map(|(u, e)| (u.clone(), e.status(now))).collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

/// Every [`SYNC_GRACE`]/6, sets local users who stopped syncing offline and tells other servers.
pub fn spawn_idle_timer(node: &std::sync::Arc<crate::Services>) {
    if !node.sync.presence.enabled() {
        return;
    }
    let services = node.clone();
    node.workers.spawn("presence-idle", |mut shutdown| async move {
        let mut tick = tokio::time::interval(SYNC_GRACE / 6);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            for (user, status) in services.sync.presence.expire_idle() {
                crate::federation::edu::presence(&services, &user, &status).await;
            }
        }
    });
}
