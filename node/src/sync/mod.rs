//! `/sync`: stream tokens, typing notifications, presence, the long-poll wait and response
//! assembly.

pub mod assemble;
pub mod presence;
pub mod room_delta;
pub mod sliding;
mod typing;
pub mod unread;
pub mod wake;

use std::{sync::Arc, time::Duration};

pub use assemble::sync;
pub use presence::Presence;
use tokio::sync::watch;
pub use typing::Typing;

use crate::{error::Error, store::Db};

/// A sync token: the stream position, the typing and presence serials the client has seen, and
/// how far its to-device messages were delivered (behind `pos` when a response carried only
/// part of the queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Token {
    pub pos: u64,
    pub typing: u64,
    pub presence: u64,
    pub to_device: u64,
}

impl Token {
    /// `t{pos}_{typing}_{presence}`, plus `_{to_device}` when that is behind `pos`; tokens from
    /// before presence (`t{pos}_{typing}`) still parse.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::invalid_param(format!("`{s}` is not a sync token from this server"));
        let mut parts = s.strip_prefix('t').ok_or_else(bad)?.split('_');
        let mut next = |required: bool| -> Result<Option<u64>, Error> {
            match parts.next() {
                Some(p) => p.parse().map(Some).map_err(|_| bad()),
                None if required => Err(bad()),
                None => Ok(None),
            }
        };
        let pos = next(true)?.unwrap_or_default();
        let typing = next(true)?.unwrap_or_default();
        let presence = next(false)?.unwrap_or_default();
        let to_device = next(false)?.map_or(pos, |t| t.min(pos));
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self { pos, typing, presence, to_device })
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{}_{}_{}", self.pos, self.typing, self.presence)?;
        if self.to_device < self.pos {
            write!(f, "_{}", self.to_device)?;
        }
        Ok(())
    }
}

/// Pagination tokens for `/messages` are plain positions, prefixed so they can't be confused.
pub fn pagination_token(pos: u64) -> String {
    format!("p{pos}")
}

pub fn parse_pagination_token(s: &str) -> Result<u64, Error> {
    if let Ok(t) = Token::parse(s) {
        // A sync token is a valid starting point: the position after everything it saw.
        return Ok(t.pos.saturating_add(1));
    }
    s.strip_prefix('p')
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::invalid_param(format!("`{s}` is not a pagination token from this server")))
}

pub struct SyncService {
    db: Db,
    pub typing: Typing,
    pub presence: Presence,
    /// Sliding sync connections and what each was last sent.
    pub sliding: sliding::Connections,
    /// The long-polls waiting, by user, for targeted wake-ups.
    pub wakes: Arc<wake::Wakes>,
    shutdown: watch::Sender<bool>,
}

impl SyncService {
    pub fn new(db: Db, presence_enabled: bool) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            db,
            typing: Typing::default(),
            presence: Presence::new(presence_enabled),
            sliding: sliding::Connections::default(),
            wakes: Arc::default(),
            shutdown,
        }
    }

    pub fn current_token(&self) -> Token {
        let pos = self.db.streams.visible();
        Token { pos, typing: self.typing.serial(), presence: self.presence.serial(), to_device: pos }
    }

    /// Wakes every long-poll so the node can stop promptly.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until something new for `waiter`'s user becomes visible, the node stops, or the
    /// timeout passes.
    async fn wait_for_change(&self, waiter: &mut wake::Waiter, timeout: Duration) {
        let mut shutdown = self.shutdown.subscribe();
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = waiter.changed() => {}
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep(timeout) => {}
        }
    }
}
