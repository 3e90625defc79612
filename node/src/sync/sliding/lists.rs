//! Which rooms each list holds, in which order: the user's rooms through the list's filters,
//! newest activity first (the bump stamp), cut to the requested ranges.

use std::collections::{BTreeMap, HashMap};

use ruma::{OwnedRoomId, RoomId, api::client::sync::sync_events::v5::request::List};

use super::{
    connection::{PosState, RoomConfig},
    filters::{ListFilter, passes},
    index::RoomIndex,
};

/// Ranges past this index are cut: no client shows that many rooms at once.
const MAX_INDEX: u64 = 10_000;
/// A list's or subscription's timeline limit is capped at this.
pub const MAX_TIMELINE_LIMIT: usize = 500;

pub fn timeline_limit(limit: ruma::UInt) -> usize {
    usize::try_from(u64::from(limit)).unwrap_or(MAX_TIMELINE_LIMIT).min(MAX_TIMELINE_LIMIT)
}

/// Every list's room count, and the rooms inside any list's ranges with how to send them.
pub struct Window {
    pub counts: BTreeMap<String, usize>,
    pub rooms: HashMap<OwnedRoomId, RoomConfig>,
}

/// The membership a room was last sent to the connection with, if it was.
pub fn sent_membership<'a>(base: &'a PosState, room_id: &RoomId) -> Option<&'a str> {
    base.rooms.get(room_id).map(|sent| sent.membership.as_str())
}

/// Each list's count comes from the index's running counts (plus the few left rooms still to be
/// sent), and its ranges from a walk of the newest rooms that stops past the last range: a user
/// in 10,000 rooms costs a request what the window holds, not 10,000 rooms.
pub fn window(
    lists: &BTreeMap<String, List>,
    filters: &BTreeMap<String, ListFilter>,
    index: &mut RoomIndex,
    base: &PosState,
) -> Window {
    let mut window = Window { counts: BTreeMap::new(), rooms: HashMap::new() };
    let unfiltered = ListFilter::default();
    for (name, list) in lists {
        let filters = filters.get(name).unwrap_or(&unfiltered);
        let limit = timeline_limit(list.room_details.timeline_limit);
        let ranges: Vec<(u64, u64)> = list
            .ranges
            .iter()
            .map(|(start, end)| (u64::from(*start).min(MAX_INDEX), u64::from(*end).min(MAX_INDEX)))
            .collect();
        let active = index.count(filters);
        let ctx = index.context();
        let left = index
            .left_rooms()
            .filter(|(room_id, known)| {
                known.listed(sent_membership(base, room_id)) && passes(ctx, filters, room_id, known)
            })
            .count();
        let count = active + left;
        if let Some(last) = ranges.iter().map(|(_, end)| *end).max() {
            let mut at = 0u64;
            for (room_id, known) in index.newest_first() {
                if at > last {
                    break;
                }
                if !known.listed(sent_membership(base, room_id)) || !passes(ctx, filters, room_id, known) {
                    continue;
                }
                if ranges.iter().any(|(start, end)| (*start..=*end).contains(&at)) {
                    window.rooms.entry(room_id.clone()).or_default().merge(&list.room_details.required_state, limit);
                }
                at += 1;
            }
        }
        window.counts.insert(name.clone(), count);
    }
    window
}
