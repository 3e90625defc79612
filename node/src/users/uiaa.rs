//! User-interactive authentication sessions (register, cross-signing upload, device deletion).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::api::client::uiaa::{AuthFlow, AuthType, UiaaInfo};

/// Sessions expire: a client that walks away must not leave state behind forever.
const SESSION_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct UiaaSessions {
    sessions: Mutex<HashMap<String, (Instant, Vec<AuthType>)>>,
}

impl UiaaSessions {
    /// Starts a session and returns the 401 body that offers `flows`.
    pub fn start(&self, flows: Vec<Vec<AuthType>>) -> UiaaInfo {
        let session = super::random_string(24);
        if let Ok(mut map) = self.sessions.lock() {
            map.retain(|_, (t, _)| t.elapsed() < SESSION_TTL);
            map.insert(session.clone(), (Instant::now(), Vec::new()));
        }
        let mut info = UiaaInfo::new(flows.into_iter().map(AuthFlow::new).collect());
        info.session = Some(session);
        info
    }

    /// Whether `session` exists (and has not expired).
    pub fn exists(&self, session: &str) -> bool {
        self.sessions
            .lock()
            .map(|map| map.get(session).is_some_and(|(t, _)| t.elapsed() < SESSION_TTL))
            .unwrap_or(false)
    }

    /// Marks a stage complete; when this completes a flow, the session ends and true comes back.
    pub fn complete_stage(&self, session: &str, stage: AuthType, flows: &[Vec<AuthType>]) -> Option<Vec<AuthType>> {
        let mut map = self.sessions.lock().ok()?;
        let (_, done) = map.get_mut(session)?;
        if !done.contains(&stage) {
            done.push(stage);
        }
        let done = done.clone();
        if flows.iter().any(|flow| flow.iter().all(|s| done.contains(s))) {
            map.remove(session);
        }
        Some(done)
    }
}
