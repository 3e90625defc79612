//! A room's head: its version, current state and forward extremities, kept in memory.

use std::{collections::HashMap, sync::Arc};

use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId, ServerName, UserId,
    events::StateEventType, room_version_rules::RoomVersionRules,
};
use serde::{Deserialize, Serialize};

use super::{
    Pdu,
    read::load_pdu,
    snapshots::{SnapshotId, StateIds},
    version,
};
use crate::{
    error::{Error, Result},
    store::{Db, prefix, trees},
};

pub type StateKey = (StateEventType, String);

/// What the store keeps about a room besides its events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomMeta {
    pub version: RoomVersionId,
    pub extremities: Vec<OwnedEventId>,
    pub depth: u64,
    /// The snapshot id of the current state.
    #[serde(default)]
    pub snapshot: SnapshotId,
}

pub struct RoomHead {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    pub state: HashMap<StateKey, Arc<Pdu>>,
    pub extremities: Vec<OwnedEventId>,
    pub depth: u64,
    /// The snapshot id of `state`; every event sent now has it as its state before.
    pub snapshot: SnapshotId,
    /// Member counts and hero candidates, for the snapshot they were counted at.
    members: Option<(SnapshotId, Arc<MemberSummary>)>,
    /// `state` as ids, for the snapshot it was built at (see [`RoomHead::shared_state_ids`]).
    ids: Option<(SnapshotId, Arc<StateIds>)>,
    /// The servers with a joined member, for the snapshot they were listed at.
    servers: Option<(SnapshotId, Arc<Vec<OwnedServerName>>)>,
    /// The node's own joined and invited members, for the snapshot they were listed at.
    local: Option<(SnapshotId, Arc<LocalMembers>)>,
}

/// The members of one server (the node's own): every event wakes their syncs and is evaluated
/// for their pushes. Both lists are sorted, so membership is a binary search.
#[derive(Debug, Default)]
pub struct LocalMembers {
    pub joined: Vec<OwnedUserId>,
    pub invited: Vec<OwnedUserId>,
}

/// What sync summaries need of a room's members: counted once per state, not per syncing user
/// (a 5,000-member room's message wakes 5,000 syncs).
#[derive(Debug, Default)]
pub struct MemberSummary {
    pub joined: usize,
    pub invited: usize,
    /// The lowest joined ids, then the lowest invited ids: enough heroes whoever asks.
    candidates: Vec<OwnedUserId>,
}

impl MemberSummary {
    /// Up to `n` members other than `viewer`, joined ones first, in id order.
    pub fn heroes(&self, viewer: &UserId, n: usize) -> Vec<OwnedUserId> {
        self.candidates.iter().filter(|m| *m != viewer).take(n).cloned().collect()
    }
}

/// Hero candidates kept per membership: the most any summary shows, plus the viewer.
const HERO_CANDIDATES: usize = 6;

impl RoomHead {
    pub fn new(room_id: OwnedRoomId, version: RoomVersionId) -> Result<Self> {
        let rules = version::rules(&version)?;
        Ok(Self {
            room_id,
            version,
            rules,
            state: HashMap::new(),
            extremities: Vec::new(),
            depth: 0,
            snapshot: super::snapshots::empty_id()?,
            members: None,
            ids: None,
            servers: None,
            local: None,
        })
    }

    pub fn load(db: &Db, room_id: &RoomId) -> Result<Option<Self>> {
        let Some(meta) = db.get_json::<RoomMeta>(trees::ROOMS, room_id.as_bytes())? else {
            return Ok(None);
        };
        let mut head = Self::new(room_id.to_owned(), meta.version)?;
        head.extremities = meta.extremities;
        head.depth = meta.depth;
        head.snapshot = meta.snapshot;
        for (_, event_id) in db.scan_prefix(trees::ROOM_STATE, &prefix(&[room_id.as_bytes()]), usize::MAX)? {
            let event_id = EventId::parse(crate::store::utf8(&event_id)?).map_err(Error::internal)?;
            let pdu =
                load_pdu(db, &event_id)?.ok_or_else(|| Error::internal(format!("state event {event_id} missing")))?;
            let key = (pdu.state_event_type(), pdu.state_key.clone().unwrap_or_default());
            head.state.insert(key, Arc::new(pdu));
        }
        Ok(Some(head))
    }

    pub fn meta(&self) -> RoomMeta {
        RoomMeta {
            version: self.version.clone(),
            extremities: self.extremities.clone(),
            depth: self.depth,
            snapshot: self.snapshot,
        }
    }

    pub fn get(&self, kind: &StateEventType, state_key: &str) -> Option<&Arc<Pdu>> {
        self.state.get(&(kind.clone(), state_key.to_owned()))
    }

    pub fn membership(&self, user_id: &UserId) -> Option<String> {
        self.get(&StateEventType::RoomMember, user_id.as_str()).and_then(|p| p.membership())
    }

    pub fn members_with(&self, membership: &str) -> Vec<OwnedUserId> {
        self.state
            .iter()
            .filter(|((kind, _), pdu)| {
                *kind == StateEventType::RoomMember && pdu.membership().as_deref() == Some(membership)
            })
            .filter_map(|((_, key), _)| UserId::parse(key.as_str()).ok())
            .collect()
    }

    /// Joined and invited counts and hero candidates, counted again only when the state changed.
    pub fn member_summary(&mut self) -> Arc<MemberSummary> {
        if let Some((snapshot, summary)) = &self.members
            && *snapshot == self.snapshot
        {
            return summary.clone();
        }
        let mut joined: Vec<&str> = Vec::new();
        let mut invited: Vec<&str> = Vec::new();
        for ((kind, key), pdu) in &self.state {
            if *kind != StateEventType::RoomMember {
                continue;
            }
            match pdu.membership_str() {
                Some("join") => joined.push(key),
                Some("invite") => invited.push(key),
                _ => {}
            }
        }
        let lowest = |ids: &mut Vec<&str>| {
            ids.sort_unstable();
            ids.iter().take(HERO_CANDIDATES).filter_map(|id| UserId::parse(*id).ok()).collect::<Vec<_>>()
        };
        let candidates = [lowest(&mut joined), lowest(&mut invited)].concat();
        let summary = Arc::new(MemberSummary { joined: joined.len(), invited: invited.len(), candidates });
        self.members = Some((self.snapshot, summary.clone()));
        summary
    }

    /// The servers with a joined member, sorted, listed again only when the state changed:
    /// every local event goes to them, and parsing 5,000 member ids per event made sending
    /// into a big room slow.
    pub fn joined_servers(&mut self) -> Arc<Vec<OwnedServerName>> {
        if let Some((snapshot, servers)) = &self.servers
            && *snapshot == self.snapshot
        {
            return servers.clone();
        }
        let names: std::collections::BTreeSet<&str> = self
            .state
            .iter()
            .filter(|((kind, _), pdu)| *kind == StateEventType::RoomMember && pdu.membership_str() == Some("join"))
            .filter_map(|((_, key), _)| key.split_once(':').map(|(_, server)| server))
            .collect();
        let servers: Arc<Vec<OwnedServerName>> =
            Arc::new(names.into_iter().filter_map(|name| ServerName::parse(name).ok()).collect());
        self.servers = Some((self.snapshot, servers.clone()));
        servers
    }

    /// The joined and invited members of `server` (always the node's own), listed again only
    /// when the state changed.
    pub fn local_members_of(&mut self, server: &ServerName) -> Arc<LocalMembers> {
        if let Some((snapshot, local)) = &self.local
            && *snapshot == self.snapshot
        {
            return local.clone();
        }
        let sorted = |mut users: Vec<OwnedUserId>| {
            users.sort_unstable();
            users
        };
        let local = Arc::new(LocalMembers {
            joined: sorted(self.local_members(server, &["join"])),
            invited: sorted(self.local_members(server, &["invite"])),
        });
        self.local = Some((self.snapshot, local.clone()));
        local
    }

    /// Members of `server` with one of `memberships`. The server is matched on the state key
    /// before any id is parsed: in a big room most members are elsewhere.
    pub fn local_members(&self, server: &ruma::ServerName, memberships: &[&str]) -> Vec<OwnedUserId> {
        self.state
            .iter()
            .filter(|((kind, key), _)| {
                *kind == StateEventType::RoomMember
                    && key.strip_suffix(server.as_str()).is_some_and(|rest| rest.ends_with(':'))
            })
            .filter(|(_, pdu)| pdu.membership_str().is_some_and(|m| memberships.contains(&m)))
            .filter_map(|((_, key), _)| UserId::parse(key.as_str()).ok())
            .collect()
    }

    pub fn content_str(&self, kind: StateEventType, field: &str) -> Option<String> {
        self.get(&kind, "").and_then(|p| p.content_field(field)).and_then(|v| v.as_str().map(str::to_owned))
    }

    /// The current state as ids.
    pub fn state_ids(&self) -> StateIds {
        self.state.iter().map(|(k, pdu)| (k.clone(), pdu.event_id.clone())).collect()
    }

    /// [`RoomHead::state_ids`], built once per state: every event received into a
    /// 5,000-member room checks against the current state, and copying it each time made the
    /// cost of an event grow with the room.
    pub fn shared_state_ids(&mut self) -> Arc<StateIds> {
        if let Some((snapshot, ids)) = &self.ids
            && *snapshot == self.snapshot
        {
            return ids.clone();
        }
        let ids = Arc::new(self.state_ids());
        self.ids = Some((self.snapshot, ids.clone()));
        ids
    }

    /// Records a local event, built on every extremity, as the new head. `snapshot` is the id of
    /// the state after it.
    pub fn apply(&mut self, pdu: &Arc<Pdu>, snapshot: SnapshotId) {
        if let Some(state_key) = &pdu.state_key {
            self.state.insert((pdu.state_event_type(), state_key.clone()), pdu.clone());
        }
        self.extremities = vec![pdu.event_id.clone()];
        self.depth = self.depth.max(u64::from(pdu.depth));
        self.snapshot = snapshot;
    }
}
