//! Typing notifications: ephemeral, in memory, with a serial so `/sync` knows what changed.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::watch;

#[derive(Default)]
struct Rooms {
    /// room -> (user -> typing until), and the serial of the room's last change.
    rooms: HashMap<OwnedRoomId, (HashMap<OwnedUserId, Instant>, u64)>,
    serial: u64,
}

pub struct Typing {
    state: Mutex<Rooms>,
    serial: watch::Sender<u64>,
}

impl Default for Typing {
    fn default() -> Self {
        Self { state: Mutex::default(), serial: watch::channel(0).0 }
    }
}

/// The spec lets clients ask for long timeouts; cap them so a crashed client stops "typing".
const MAX_TYPING: Duration = Duration::from_secs(120);

impl Typing {
    pub fn serial(&self) -> u64 {
        *self.serial.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.serial.subscribe()
    }

    pub fn set(&self, room: &RoomId, user: &UserId, timeout: Option<Duration>) {
        let Ok(mut state) = self.state.lock() else { return };
        state.serial += 1;
        let serial = state.serial;
        let entry = state.rooms.entry(room.to_owned()).or_default();
        match timeout {
            Some(t) => {
                entry.0.insert(user.to_owned(), Instant::now() + t.min(MAX_TYPING));
            }
            None => {
                entry.0.remove(user);
            }
        }
        entry.1 = serial;
        drop(state);
        // `send` would drop the value when nobody is subscribed yet; the token reads it anyway.
        self.serial.send_replace(serial);
    }

    /// The rooms whose typing state changed after serial `since`.
    pub fn rooms_changed_since(&self, since: u64) -> Vec<OwnedRoomId> {
        let Ok(state) = self.state.lock() else { return Vec::new() };
        state.rooms.iter().filter(|(_, (_, changed))| *changed > since).map(|(room, _)| room.clone()).collect()
    }

    /// Users typing in `room` if its typing state changed after `since` (or always when `since`
    /// is 0); expired entries are dropped.
    pub fn typing_since(&self, room: &RoomId, since: u64) -> Option<Vec<OwnedUserId>> {
        let Ok(mut state) = self.state.lock() else { return None };
        let (users, changed) = state.rooms.get_mut(room)?;
        let now = Instant::now();
        users.retain(|_, until| *until > now);
        if since != 0 && *changed <= since {
            return None;
        }
        Some(users.keys().cloned().collect())
    }
}
