//! The user's rooms as sliding sync lists see them, newest first, kept per connection and
//! brought up to date from the store's room log.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap},
    ops::Bound,
};

use ruma::{OwnedRoomId, RoomId, UserId, events::StateEventType};

use crate::{
    Services,
    error::Result,
    rooms::UserRoom,
    store::{key, pos_bytes, prefix, trees},
};

/// What lists need of one of the user's rooms.
#[derive(Debug, Clone)]
pub struct Known {
    pub membership: UserRoom,
    /// The stream position of the room's newest event (of the invite for an invited room).
    pub bump_stamp: u64,
    /// Only read when a list filters on it ([`RoomIndex::facts`]).
    pub encrypted: bool,
    pub room_type: Option<String>,
}

impl Known {
    /// Whether the room belongs in lists: joined, invited and knocked rooms, and a room left
    /// since the connection last sent it (`sent`: the membership it was last sent with), once,
    /// so the client learns of the leave.
    pub fn listed(&self, sent: Option<&str>) -> bool {
        match self.membership.membership.as_str() {
            "join" | "invite" | "knock" => true,
            left => sent.is_some_and(|sent| sent != left),
        }
    }
}

/// The user's rooms, newest first, kept per connection and brought up to date by each request
/// from the rooms the store's room log says changed since; a user in 10,000 rooms then pays
/// for the rooms that changed, not for 10,000.
#[derive(Debug, Default)]
pub struct RoomIndex {
    /// `None` until first filled.
    upto: Option<u64>,
    /// Whether `encrypted` and `room_type` were read (some list filters on them).
    facts: bool,
    pub rooms: HashMap<OwnedRoomId, Known>,
    /// Newest first; the room id breaks ties so the order is stable.
    order: BTreeSet<(Reverse<u64>, OwnedRoomId)>,
}

impl RoomIndex {
    fn insert(&mut self, room_id: OwnedRoomId, known: Known) {
        if let Some(old) = self.rooms.get(&room_id) {
            self.order.remove(&(Reverse(old.bump_stamp), room_id.clone()));
        }
        self.order.insert((Reverse(known.bump_stamp), room_id.clone()));
        self.rooms.insert(room_id, known);
    }

    fn remove(&mut self, room_id: &RoomId) {
        if let Some(old) = self.rooms.remove(room_id) {
            self.order.remove(&(Reverse(old.bump_stamp), room_id.to_owned()));
        }
    }

    /// The rooms newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = (&OwnedRoomId, &Known)> {
        self.order.iter().filter_map(|(_, id)| self.rooms.get_key_value(id))
    }

    /// Brings the index to `upto`: only the rooms that changed since it was last brought up to
    /// date, or every room when it is new, the room log does not reach back that far, or it
    /// lacks the facts now needed. A position only moves forward, so an index shared by the
    /// positions of one connection serves a retried older position too.
    pub async fn refresh(&mut self, services: &Services, user: &UserId, upto: u64, facts: bool) -> Result<()> {
        let changed = match self.upto {
            Some(from) if from >= upto => return Ok(()),
            Some(from) if self.facts || !facts => services.db.room_log.changed(from, upto).map(|c| (from, c)),
            _ => None,
        };
        match changed {
            Some((from, mut changed)) => {
                changed.extend(services.rooms.membership_changes(user, from, upto)?);
                for room_id in changed {
                    match services.rooms.user_room(user, &room_id)? {
                        Some(membership) => {
                            let known = known(services, &room_id, membership, upto, self.facts).await?;
                            self.insert(room_id, known);
                        }
                        None => self.remove(&room_id),
                    }
                }
            }
            None => {
                *self = RoomIndex { upto: None, facts, ..RoomIndex::default() };
                for (room_id, membership) in services.rooms.user_rooms(user)? {
                    let known = known(services, &room_id, membership, upto, facts).await?;
                    self.insert(room_id, known);
                }
            }
        }
        self.upto = Some(upto);
        Ok(())
    }
}

async fn known(services: &Services, room_id: &RoomId, membership: UserRoom, upto: u64, facts: bool) -> Result<Known> {
    let joined = membership.membership == "join";
    let bump_stamp =
        if joined { last_event_pos(services, room_id, upto)?.unwrap_or(membership.pos) } else { membership.pos };
    let (encrypted, room_type) = if joined && facts {
        let encrypted = services.rooms.state_event(room_id, &StateEventType::RoomEncryption, "").await?.is_some();
        (encrypted, room_type(services, room_id).await?)
    } else {
        (false, None)
    };
    Ok(Known { membership, bump_stamp, encrypted, room_type })
}

/// The position of the newest timeline event at or before `upto`, read from the timeline index
/// alone (no event is loaded).
fn last_event_pos(services: &Services, room_id: &RoomId, upto: u64) -> Result<Option<u64>> {
    let start = prefix(&[room_id.as_bytes()]);
    let end = key(&[room_id.as_bytes(), &pos_bytes(upto.saturating_add(1))]);
    let rows = services.db.range(trees::TIMELINE, Bound::Included(&start), Bound::Excluded(&end), true, 1)?;
    rows.first().map(|(k, _)| crate::store::pos_suffix(k)).transpose()
}

/// The `type` of the room's create event, if any.
async fn room_type(services: &Services, room_id: &RoomId) -> Result<Option<String>> {
    let create = services.rooms.state_event(room_id, &StateEventType::RoomCreate, "").await?;
    Ok(create.and_then(|c| c.content_field("type")).and_then(|t| t.as_str().map(str::to_owned)))
}
