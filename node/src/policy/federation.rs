//! The federation list in the node: loaded and verified at start, enforced on every federation
//! request both ways, reloaded on SIGHUP and when its file changes.
//!
//! Behaviour, and why:
//! - **Start.** The list must parse, and its signature must verify against one of
//!   `federation_operator_keys`; otherwise the node refuses to start and says why. A node that
//!   federated with anyone because its list was damaged would break the federation's promise.
//! - **Reload.** A new file is taken only if it verifies, its version is higher than the active
//!   one (a rollback or replay is refused) and it has not expired yet. Anything else is logged
//!   and the last valid list stays in force. Removed members are refused from the moment the
//!   new list is active, and their outbound queues are dropped (and counted).
//! - **Expiry.** An active list that expires keeps being enforced and the node warns loudly
//!   (log every few minutes, `expired: true` in the admin backlog view), because a crisis node
//!   must not cut itself off from the others when the operator is late, and falling open to
//!   every server would be worse. Within 7 days of expiry it warns that a new list is due.
//!   At start, an already expired list is accepted with the same loud warning: it is the list
//!   the node enforced before it stopped, and a node that cannot start helps nobody.
//! - **Restarts.** Every accepted list's verified text is saved in the data dir
//!   ([`super::accepted`]). At start the node enforces the newer of the file and the saved copy;
//!   when the file is older (rolled back), it logs an error and shows it as
//!   `last_reload_error` until a newer list arrives.
//! - **No list configured**: every server may federate (labs and tests); logged at start.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use ruma::ServerName;
use tocsin_policies::{MemberChanges, OperatorPublicKey, VerifiedList, accept_update};

use super::accepted;
use crate::error::{Error, Result};

/// How long before expiry the node starts warning that a new list is due.
pub const EXPIRY_WARNING_SECS: u64 = 7 * 24 * 3600;

/// The name refusals give for this rule.
pub const RULE: &str = "federation_list";

/// The state of the federation list for the admin API and the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListState {
    pub name: String,
    pub version: u64,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    pub expires: String,
    pub members: usize,
    pub expired: bool,
    /// Seconds until expiry; negative once expired.
    pub expires_in_secs: i64,
    /// Active, but expires within [`EXPIRY_WARNING_SECS`].
    pub expires_soon: bool,
    /// The warning to show, if any.
    pub warning: Option<String>,
    /// Why the last reload was refused (cleared by a successful one).
    pub last_reload_error: Option<String>,
}

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: u64,
    pub changes: MemberChanges,
}

struct Active {
    list: Arc<VerifiedList>,
    /// The file's modification time when it was last read (for change polling).
    seen: Option<SystemTime>,
}

/// The federation list gate. Without a configured list it allows every server.
pub struct FederationGate {
    path: Option<PathBuf>,
    keys: Vec<OperatorPublicKey>,
    active: RwLock<Option<Active>>,
    last_error: Mutex<Option<String>>,
    /// Where the newest accepted list is saved (`None`: not saved, as in `policy status`).
    saved: Option<PathBuf>,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl FederationGate {
    /// No list: every server allowed.
    pub fn open() -> Self {
        Self { path: None, keys: Vec::new(), active: RwLock::new(None), last_error: Mutex::new(None), saved: None }
    }

    /// Reads the operator keys and the list; any error stops the node's start. Nothing is
    /// saved or compared with a saved copy (see [`FederationGate::load_saved`]).
    pub fn load(path: Option<PathBuf>, key_files: &[PathBuf]) -> anyhow::Result<Self> {
        Self::load_saved(path, key_files, None)
    }

    /// [`FederationGate::load`], with rollback protection across restarts: the newest list
    /// ever accepted is kept at `saved`, and enforced when the file holds an older version.
    pub fn load_saved(path: Option<PathBuf>, key_files: &[PathBuf], saved: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::load_inner(path, key_files, saved, true)
    }

    /// What [`FederationGate::load_saved`] would enforce, without writing the saved copy: for
    /// `tocsin-node policy status`, which must not change what the node holds.
    pub fn inspect(path: Option<PathBuf>, key_files: &[PathBuf], saved: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::load_inner(path, key_files, saved, false)
    }

    fn load_inner(
        path: Option<PathBuf>,
        key_files: &[PathBuf],
        saved: Option<PathBuf>,
        persist: bool,
    ) -> anyhow::Result<Self> {
        let Some(path) = path else {
            if !key_files.is_empty() {
                tracing::warn!("federation_operator_keys is set but federation_list is not: every server may federate");
            }
            return Ok(Self::open());
        };
        let mut keys = Vec::with_capacity(key_files.len());
        for file in key_files {
            let key = OperatorPublicKey::from_file(file)
                .map_err(|e| anyhow::anyhow!("federation_operator_keys {}: {e}", file.display()))?;
            keys.push(key);
        }
        let seen = mtime(&path);
        let from_file = accepted::read_verified(&path, &keys).map_err(|e| {
            anyhow::anyhow!(
                "federation list {}: {e}; the node does not start on a list it cannot trust",
                path.display()
            )
        })?;
        let (list, last_error) = newest(&path, from_file, saved.as_deref(), &keys, persist);
        tracing::info!(
            file = %path.display(),
            name = %list.name,
            version = list.version,
            members = list.members.len(),
            key_id = list.key_id(),
            "federation list loaded"
        );
        let gate = Self {
            path: Some(path),
            keys,
            active: RwLock::new(Some(Active { list: Arc::new(list), seen })),
            last_error: Mutex::new(last_error),
            saved,
        };
        gate.warn_expiry();
        Ok(gate)
    }

    /// Whether a list is configured (and so enforced).
    pub fn enforced(&self) -> bool {
        self.path.is_some()
    }

    /// The active list, if one is configured.
    pub fn list(&self) -> Option<Arc<VerifiedList>> {
        self.active.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|a| a.list.clone())
    }

    /// Whether `server` may federate with this node: a member of the active list, or any server
    /// when no list is configured.
    pub fn allows(&self, server: &str) -> bool {
        self.list().is_none_or(|list| list.is_member(server))
    }

    /// `Ok` for a member, 403 `M_FORBIDDEN` naming the rule otherwise. `consequence` ends the
    /// message ("its requests are refused", "nothing is sent to it" ...).
    pub fn check(&self, server: &ServerName, consequence: &str) -> Result<()> {
        let Some(list) = self.list() else { return Ok(()) };
        if list.is_member(server.as_str()) {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "refused by policy rule `{RULE}`: {server} is not a member of the federation list \"{}\" (version {}), \
             so {consequence}",
            list.name, list.version
        )))
    }

    /// Reads the list file again. A list that does not verify, is not newer than the active one,
    /// or has already expired is refused: the active list stays, and the error comes back for
    /// the log. `Ok(None)` when no list is configured.
    pub fn reload(&self) -> std::result::Result<Option<Applied>, String> {
        let Some(path) = &self.path else { return Ok(None) };
        let seen = mtime(path);
        let result =
            accepted::read_verified(path, &self.keys).map_err(|e| format!("federation list {}: {e}", path.display()));
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        // Whatever the outcome, this version of the file has been looked at.
        if let Some(a) = active.as_mut() {
            a.seen = seen;
        }
        let outcome = result.and_then(|new| {
            let current = active.as_ref().map(|a| a.list.as_ref());
            let text = new.text;
            accept_update(current, new.list, now_unix())
                .map(|list| (list, text))
                .map_err(|e| format!("federation list {}: {e}", path.display()))
        });
        let (new, text) = match outcome {
            Ok(new) => new,
            Err(e) => {
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                return Err(e);
            }
        };
        let changes = match active.as_ref() {
            Some(old) => old.list.changes_to(&new),
            None => MemberChanges {
                added: new.members.iter().map(|m| m.server_name.clone()).collect(),
                ..Default::default()
            },
        };
        let applied = Applied { version: new.version, changes };
        self.save(&text, new.version);
        *active = Some(Active { list: Arc::new(new), seen });
        drop(active);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(Some(applied))
    }

    /// Whether the list file's modification time differs from when it was last read.
    pub fn changed_on_disk(&self) -> bool {
        let Some(path) = &self.path else { return false };
        let now = mtime(path);
        let seen = self.active.read().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|a| a.seen);
        now.is_some() && now != seen
    }

    /// The list's state, for the admin API. `None` when no list is configured.
    pub fn state(&self) -> Option<ListState> {
        let list = self.list()?;
        let now = now_unix();
        let expired = list.expires_in(now) <= 0;
        let expires_soon = list.expires_within(now, EXPIRY_WARNING_SECS);
        let warning = if expired {
            Some(format!(
                "the federation list \"{}\" version {} EXPIRED at {}; it is still enforced until the operator \
                 publishes a new one",
                list.name, list.version, list.expires
            ))
        } else if expires_soon {
            Some(format!(
                "the federation list \"{}\" version {} expires at {} (in {}); a new signed list is due",
                list.name,
                list.version,
                list.expires,
                tocsin_policies::format_duration(u64::try_from(list.expires_in(now)).unwrap_or(0))
            ))
        } else {
            None
        };
        Some(ListState {
            name: list.name.clone(),
            version: list.version,
            expires: list.expires.to_string(),
            members: list.members.len(),
            expired,
            expires_in_secs: list.expires_in(now),
            expires_soon,
            warning,
            last_reload_error: self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }

    /// Logs the expiry warning, if there is one: an error once expired, a warning within the
    /// last 7 days.
    pub fn warn_expiry(&self) {
        let Some(state) = self.state() else { return };
        if let Some(warning) = &state.warning {
            if state.expired {
                tracing::error!(version = state.version, expires = %state.expires, "{warning}");
            } else {
                tracing::warn!(version = state.version, expires = %state.expires, "{warning}");
            }
        }
    }
}

impl FederationGate {
    /// Saves an accepted list's text. A failure is logged: the list is in force either way, but
    /// the protection across restarts is then lost until the next successful save.
    fn save(&self, text: &str, version: u64) {
        let Some(saved) = &self.saved else { return };
        if let Err(e) = accepted::save(saved, text) {
            tracing::error!(
                file = %saved.display(),
                version,
                error = %e,
                "cannot save the accepted federation list; after a restart an older list file would not be detected"
            );
        }
    }
}

/// At start: the list file's list, or the saved copy of the newest list accepted before when
/// the file is older (with the error to show). The file's list is saved when it is the newer.
fn newest(
    path: &Path,
    from_file: accepted::Verified,
    saved: Option<&Path>,
    keys: &[OperatorPublicKey],
    persist: bool,
) -> (VerifiedList, Option<String>) {
    let Some(saved) = saved else { return (from_file.list, None) };
    match accepted::load(saved, keys) {
        Some(kept) if kept.list.version > from_file.list.version => {
            let message = format!(
                "the federation list file {} holds version {}, OLDER than version {} this node accepted before \
                 (a rollback); version {} stays in force until a newer signed list arrives",
                path.display(),
                from_file.list.version,
                kept.list.version,
                kept.list.version
            );
            tracing::error!(file = %path.display(), saved = %saved.display(), "{message}");
            (kept.list, Some(message))
        }
        Some(kept) if kept.list.version == from_file.list.version => (from_file.list, None),
        _ if !persist => (from_file.list, None),
        _ => {
            if let Err(e) = accepted::save(saved, &from_file.text) {
                tracing::error!(file = %saved.display(), error = %e, "cannot save the accepted federation list");
            }
            (from_file.list, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use tocsin_policies::{FederationList, Member, MemberRole, OperatorSecretKey, Timestamp, sign_list};

    use super::*;

    fn list(version: u64, members: &[&str], expires: i64) -> FederationList {
        FederationList {
            name: "Test".into(),
            version,
            issued: Timestamp(expires - 30 * 24 * 3600),
            expires: Timestamp(expires),
            members: members.iter().map(|m| Member::new(m, "Agency", MemberRole::Fire)).collect(),
        }
    }

    fn write(path: &Path, key: &OperatorSecretKey, list: &FederationList) {
        std::fs::write(path, sign_list(list, key).expect("signs").to_toml()).expect("writes");
    }

    #[test]
    fn load_reload_rollback_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (secret, public) = tocsin_policies::generate_operator_key();
        let key = OperatorSecretKey::from_text(&secret).expect("key");
        let pub_path = dir.path().join("operator.pub");
        std::fs::write(&pub_path, &public).expect("writes");
        let path = dir.path().join("federation.toml");
        let later = now_unix() + 90 * 24 * 3600;
        write(&path, &key, &list(2, &["a.test", "b.test"], later));

        let gate = FederationGate::load(Some(path.clone()), std::slice::from_ref(&pub_path)).expect("loads");
        assert!(gate.allows("a.test") && gate.allows("b.test") && !gate.allows("c.test"));
        let refusal =
            gate.check(ServerName::parse("c.test").expect("name").as_ref(), "its requests are refused").unwrap_err();
        assert!(refusal.to_string().contains("`federation_list`"), "{refusal}");
        assert!(!gate.changed_on_disk());
        assert_eq!(gate.state().expect("state").warning, None);

        // A rollback is refused and the active list stays.
        write(&path, &key, &list(1, &["a.test"], later));
        let err = gate.reload().unwrap_err();
        assert!(err.contains("rollback"), "{err}");
        assert!(gate.allows("b.test"));
        assert!(gate.state().expect("state").last_reload_error.is_some());

        // A forged list (another key) is refused.
        let (other, _) = tocsin_policies::generate_operator_key();
        write(&path, &OperatorSecretKey::from_text(&other).expect("key"), &list(5, &["a.test"], later));
        assert!(gate.reload().unwrap_err().contains("not a pinned operator key"));

        // A list that arrives expired is refused.
        write(&path, &key, &list(6, &["a.test"], now_unix() - 10));
        assert!(gate.reload().unwrap_err().contains("expired"));

        // A newer list that expires within a week applies and warns; b.test is removed.
        write(&path, &key, &list(7, &["a.test"], now_unix() + 3600));
        let applied = gate.reload().expect("reloads").expect("a list");
        assert_eq!(applied.version, 7);
        assert_eq!(applied.changes.removed, vec!["b.test".to_string()]);
        assert!(!gate.allows("b.test"));
        let state = gate.state().expect("state");
        assert!(state.expires_soon && !state.expired && state.warning.is_some() && state.last_reload_error.is_none());

        // A broken signature stops the start.
        let text = std::fs::read_to_string(&path).expect("reads").replace("a.test", "evil.test");
        std::fs::write(&path, text).expect("writes");
        let err = FederationGate::load(Some(path), &[pub_path]).err().expect("refused").to_string();
        assert!(err.contains("does not match its content"), "{err}");

        // No list: everyone allowed.
        assert!(FederationGate::open().allows("c.test"));
    }

    #[test]
    fn the_newest_accepted_list_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (secret, public) = tocsin_policies::generate_operator_key();
        let key = OperatorSecretKey::from_text(&secret).expect("key");
        let pub_path = dir.path().join("operator.pub");
        std::fs::write(&pub_path, &public).expect("writes");
        let path = dir.path().join("federation.toml");
        let saved = accepted::path_in(dir.path());
        let later = now_unix() + 90 * 24 * 3600;
        let keys = std::slice::from_ref(&pub_path);
        let start = || FederationGate::load_saved(Some(path.clone()), keys, Some(saved.clone())).expect("starts");

        // Version 1 at start is saved; version 2 by reload is saved.
        write(&path, &key, &list(1, &["a.test", "c.test"], later));
        let gate = start();
        assert!(saved.exists());
        write(&path, &key, &list(2, &["a.test"], later));
        gate.reload().expect("reloads");
        drop(gate);

        // The file goes back to version 1: version 2 is enforced, and the state says why.
        write(&path, &key, &list(1, &["a.test", "c.test"], later));
        let gate = start();
        assert_eq!(gate.list().expect("list").version, 2);
        assert!(!gate.allows("c.test"));
        let error = gate.state().expect("state").last_reload_error.expect("an error");
        assert!(error.contains("OLDER than version 2"), "{error}");
        // A newer file is taken at start, and saved in its turn.
        write(&path, &key, &list(3, &["a.test", "c.test"], later));
        assert_eq!(start().list().expect("list").version, 3);
        write(&path, &key, &list(2, &["a.test"], later));
        assert_eq!(start().list().expect("list").version, 3);

        // A saved copy signed by a key that is no longer pinned is ignored.
        let (other_secret, other_public) = tocsin_policies::generate_operator_key();
        let other = OperatorSecretKey::from_text(&other_secret).expect("key");
        std::fs::write(&pub_path, &other_public).expect("writes");
        std::fs::write(&saved, sign_list(&list(9, &["a.test"], later), &key).expect("signs").to_toml()).expect("w");
        write(&path, &other, &list(1, &["a.test", "c.test"], later));
        let gate = start();
        assert_eq!(gate.list().expect("list").version, 1);
        assert!(gate.allows("c.test"));
    }
}
