//! Long-poll wake-ups that reach only the users a change concerns.
//!
//! Every `/sync` and sliding sync long-poll waits on its user's [`Waiter`]. The dispatcher
//! worker follows the stream watermark and the typing and presence serials. For each advance it
//! reads whom the changes concern (the store's change log, typing's changed rooms, presence's
//! changed users), resolves a room to its local joined and invited members and a user's keys or
//! presence to everyone who shares a room with them, and wakes those users' waiters only. A
//! message in one room therefore costs the long-polls of the other rooms' users nothing.
//!
//! A waiter is made before its sync builds a response and marked seen right before each build,
//! so a change that becomes visible after the build's position always finds it and wakes it.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use tokio::sync::watch;

use crate::{Services, store::Change, workers::Stop};

/// The long-polls waiting now, by user (a user's devices share one entry).
#[derive(Default)]
pub struct Wakes {
    waiters: Mutex<HashMap<OwnedUserId, watch::Sender<()>>>,
    /// Long-polls woken, in all.
    woken: AtomicU64,
}

/// One sync request's registration: [`Waiter::changed`] returns when something for its user
/// became visible after the last [`Waiter::mark_seen`].
pub struct Waiter {
    rx: watch::Receiver<()>,
    user: OwnedUserId,
    wakes: Arc<Wakes>,
}

impl Wakes {
    fn lock(&self) -> MutexGuard<'_, HashMap<OwnedUserId, watch::Sender<()>>> {
        // The map holds only senders: a panic elsewhere cannot leave it half-changed.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn waiter(self: &Arc<Self>, user: &UserId) -> Waiter {
        let rx = self.lock().entry(user.to_owned()).or_insert_with(|| watch::channel(()).0).subscribe();
        Waiter { rx, user: user.to_owned(), wakes: self.clone() }
    }

    /// Wakes the long-polls of `users`; returns how many were woken.
    pub fn wake<'a>(&self, users: impl IntoIterator<Item = &'a UserId>) -> u64 {
        let waiters = self.lock();
        let mut woken = 0;
        for user in users {
            if let Some(tx) = waiters.get(user) {
                woken += tx.receiver_count() as u64;
                tx.send_replace(());
            }
        }
        drop(waiters);
        self.woken.fetch_add(woken, Ordering::Relaxed);
        woken
    }

    /// Wakes every long-poll (the change log no longer reaches back far enough to say whom a
    /// change concerns).
    pub fn wake_all(&self) {
        let waiters = self.lock();
        let woken: usize = waiters.values().map(|tx| tx.receiver_count()).sum();
        waiters.values().for_each(|tx| {
            tx.send_replace(());
        });
        drop(waiters);
        self.woken.fetch_add(woken as u64, Ordering::Relaxed);
    }

    /// Whether any of this user's long-polls is waiting.
    pub fn is_waiting(&self, user: &UserId) -> bool {
        self.lock().contains_key(user)
    }

    /// Long-polls registered now (waiting, or building their response).
    pub fn waiting(&self) -> u64 {
        self.lock().values().map(|tx| tx.receiver_count() as u64).sum()
    }

    /// Long-polls woken since the node started.
    pub fn woken_total(&self) -> u64 {
        self.woken.load(Ordering::Relaxed)
    }
}

impl Waiter {
    /// Everything visible now will be in the response about to be built.
    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Returns once something for this user became visible after the last mark.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The entry went away (cannot happen while this waiter holds it): wait for the
            // caller's timeout instead of spinning.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiters = self.wakes.lock();
        // This receiver still counts: the entry goes when it is the last one.
        if waiters.get(&self.user).is_some_and(|tx| tx.receiver_count() <= 1) {
            waiters.remove(&self.user);
        }
    }
}

/// Starts the dispatcher.
pub fn spawn(node: &Arc<Services>) {
    let services = node.clone();
    node.workers.spawn("sync-wake", |stop| dispatch(services, stop));
}

async fn dispatch(s: Arc<Services>, mut stop: Stop) {
    let mut visible = s.db.streams.subscribe();
    let mut typing = s.sync.typing.subscribe();
    let mut presence = s.sync.presence.subscribe();
    let mut done_pos = *visible.borrow_and_update();
    let mut done_typing = *typing.borrow_and_update();
    let mut done_presence = *presence.borrow_and_update();
    loop {
        tokio::select! {
            changed = visible.changed() => if changed.is_err() { return },
            changed = typing.changed() => if changed.is_err() { return },
            changed = presence.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let mut concerns = Concerns::default();
        let pos = *visible.borrow_and_update();
        if pos > done_pos {
            match s.db.changes.between(done_pos, pos) {
                Some(changes) => changes.into_iter().for_each(|c| concerns.add(c)),
                None => {
                    tracing::debug!(from = done_pos, "change log does not reach back; waking every long-poll");
                    s.sync.wakes.wake_all();
                }
            }
            done_pos = pos;
        }
        let serial = *typing.borrow_and_update();
        if serial > done_typing {
            concerns.rooms.extend(s.sync.typing.rooms_changed_since(done_typing));
            done_typing = serial;
        }
        let serial = *presence.borrow_and_update();
        if serial > done_presence {
            concerns.audiences.extend(s.sync.presence.changed_since(done_presence).into_iter().map(|(u, _)| u));
            done_presence = serial;
        }
        if let Err(e) = concerns.wake(&s).await {
            // Better a wasted build than a missed message.
            tracing::warn!(error = %e, "cannot tell whom a change concerns; waking every long-poll");
            s.sync.wakes.wake_all();
        }
    }
}

#[derive(Default)]
struct Concerns {
    rooms: HashSet<OwnedRoomId>,
    users: HashSet<OwnedUserId>,
    /// Users whose keys or presence changed: they and everyone sharing a room with them.
    audiences: HashSet<OwnedUserId>,
}

impl Concerns {
    fn add(&mut self, change: Change) {
        match change {
            Change::Room(room) => self.rooms.insert((*room).clone()),
            Change::User(user) => self.users.insert((*user).clone()),
            Change::Audience(user) => self.audiences.insert((*user).clone()),
        };
    }

    async fn wake(mut self, s: &Services) -> crate::error::Result<()> {
        for user in std::mem::take(&mut self.audiences) {
            self.rooms.extend(s.rooms.joined_rooms(&user)?);
            self.users.insert(user);
        }
        // The rooms' member lists are shared, not copied: a message into a 5,000-member room
        // would otherwise clone and hash 5,000 user ids per commit.
        let mut rooms = Vec::with_capacity(self.rooms.len());
        for room in &self.rooms {
            rooms.extend(s.rooms.local_audience(room).await?);
        }
        let members = rooms.iter().flat_map(|m| m.joined.iter().chain(&m.invited)).map(|u| &**u);
        let users = self.users.iter().map(|u| &**u);
        if rooms.len() <= 1 && self.users.is_empty() {
            // One room's members are distinct: nothing to skip.
            s.sync.wakes.wake(members);
        } else {
            let mut seen = HashSet::new();
            s.sync.wakes.wake(users.chain(members).filter(|u| seen.insert(*u)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> OwnedUserId {
        UserId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_wake_reaches_only_its_users_and_after_the_mark() {
        let wakes = Arc::new(Wakes::default());
        let mut a = wakes.waiter(&user("@a:x"));
        let mut b = wakes.waiter(&user("@b:x"));
        a.mark_seen();
        b.mark_seen();
        assert_eq!(wakes.wake([&*user("@a:x")]), 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), a.changed()).await.expect("a is woken");
        let b_woken = tokio::time::timeout(std::time::Duration::from_millis(50), b.changed()).await;
        assert!(b_woken.is_err(), "b is not in the room and stays asleep");

        // A wake between the mark and the wait is not lost.
        a.mark_seen();
        wakes.wake([&*user("@a:x")]);
        tokio::time::timeout(std::time::Duration::from_secs(1), a.changed()).await.expect("woken");
        assert_eq!(wakes.woken_total(), 2);
    }

    #[test]
    fn the_entry_goes_with_the_last_waiter() {
        let wakes = Arc::new(Wakes::default());
        let one = wakes.waiter(&user("@a:x"));
        let two = wakes.waiter(&user("@a:x"));
        assert_eq!(wakes.waiting(), 2);
        drop(one);
        assert!(wakes.is_waiting(&user("@a:x")));
        drop(two);
        assert!(!wakes.is_waiting(&user("@a:x")));
    }
}
