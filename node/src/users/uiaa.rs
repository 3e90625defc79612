//! User-interactive authentication sessions (register, cross-signing upload, device deletion).
//!
//! Anyone may start a session (registration needs no account), so the sessions are bounded: each
//! expires [`SESSION_TTL`] after it was last used, and at most [`MAX_SESSIONS`] are kept, the
//! least recently used going first.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use ruma::api::client::uiaa::{AuthFlow, AuthType, UiaaInfo};

/// A session unused this long is gone: a client that walks away leaves nothing behind.
pub const SESSION_TTL: Duration = Duration::from_secs(10 * 60);
/// Sessions kept at most; starting one more evicts the least recently used.
pub const MAX_SESSIONS: usize = 10_000;

struct Session {
    last_used: Instant,
    done: Vec<AuthType>,
}

pub struct UiaaSessions {
    sessions: Mutex<HashMap<String, Session>>,
    ttl: Duration,
    max: usize,
}

impl Default for UiaaSessions {
    fn default() -> Self {
        Self::with_limits(SESSION_TTL, MAX_SESSIONS)
    }
}

impl UiaaSessions {
    /// Sessions with another lifetime and bound (tests).
    pub fn with_limits(ttl: Duration, max: usize) -> Self {
        Self { sessions: Mutex::default(), ttl, max: max.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session and returns the 401 body that offers `flows`.
    pub fn start(&self, flows: Vec<Vec<AuthType>>) -> UiaaInfo {
        let session = super::random_string(24);
        {
            let mut map = self.lock();
            map.retain(|_, s| s.last_used.elapsed() < self.ttl);
            while map.len() >= self.max {
                let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_used).map(|(id, _)| id.clone()) else {
                    break;
                };
                map.remove(&oldest);
            }
            map.insert(session.clone(), Session { last_used: Instant::now(), done: Vec::new() });
        }
        let mut info = UiaaInfo::new(flows.into_iter().map(AuthFlow::new).collect());
        info.session = Some(session);
        info
    }

    /// Whether `session` exists and has not expired; using it keeps it alive.
    pub fn exists(&self, session: &str) -> bool {
        let mut map = self.lock();
        match map.get_mut(session) {
            Some(s) if s.last_used.elapsed() < self.ttl => {
                s.last_used = Instant::now();
                true
            }
            Some(_) => {
                map.remove(session);
                false
            }
            None => false,
        }
    }

    /// Marks a stage complete and returns the stages done so far; when this completes a flow,
    /// the session ends. None for an unknown or expired session.
    pub fn complete_stage(&self, session: &str, stage: AuthType, flows: &[Vec<AuthType>]) -> Option<Vec<AuthType>> {
        let mut map = self.lock();
        let s = map.get_mut(session)?;
        if s.last_used.elapsed() >= self.ttl {
            map.remove(session);
            return None;
        }
        s.last_used = Instant::now();
        if !s.done.contains(&stage) {
            s.done.push(stage);
        }
        let done = s.done.clone();
        if flows.iter().any(|flow| flow.iter().all(|st| done.contains(st))) {
            map.remove(session);
        }
        Some(done)
    }

    /// Sessions held now (expired ones included until the next start prunes them).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows() -> Vec<Vec<AuthType>> {
        vec![vec![AuthType::Password]]
    }

    #[test]
    fn sessions_are_bounded_and_the_least_recently_used_goes_first() {
        let sessions = UiaaSessions::with_limits(SESSION_TTL, 3);
        let ids: Vec<String> = (0..3).map(|_| sessions.start(flows()).session.unwrap()).collect();
        std::thread::sleep(Duration::from_millis(5));
        // The first is used again, so the second is now the least recently used.
        assert!(sessions.exists(&ids[0]));
        let fourth = sessions.start(flows()).session.unwrap();
        assert_eq!(sessions.len(), 3);
        assert!(sessions.exists(&ids[0]), "used recently, kept");
        assert!(!sessions.exists(&ids[1]), "least recently used, evicted");
        assert!(sessions.exists(&ids[2]));
        assert!(sessions.exists(&fourth));
        for _ in 0..100 {
            sessions.start(flows());
        }
        assert_eq!(sessions.len(), 3, "never more than the bound");
    }

    #[test]
    fn sessions_expire_after_their_last_use() {
        let sessions = UiaaSessions::with_limits(Duration::from_millis(100), 10);
        let id = sessions.start(flows()).session.unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(sessions.exists(&id), "still fresh; this use renews it");
        std::thread::sleep(Duration::from_millis(60));
        assert!(sessions.exists(&id), "renewed by the last use");
        std::thread::sleep(Duration::from_millis(120));
        assert!(!sessions.exists(&id), "expired");
        assert!(sessions.complete_stage(&id, AuthType::Password, &flows()).is_none());
        let other = sessions.start(flows()).session.unwrap();
        std::thread::sleep(Duration::from_millis(120));
        sessions.start(flows());
        assert_eq!(sessions.len(), 1, "expired sessions are pruned: {other} is gone");
    }
}
