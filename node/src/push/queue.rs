//! The push queue, in two steps, both persisted:
//!
//! 1. Every live event's commit also writes one row `pos -> room, event` to
//!    [`trees::PUSH_EVENTS`] (in [`crate::rooms`]' `timeline_rows`, the one place local, received
//!    and joined events are stored), so the send path pays one key and no evaluation.
//! 2. The push worker reads those rows in stream order once they are durable, evaluates each
//!    local member's push rules, records what notifies in the user's notification list
//!    ([`super::notifications`]) and writes one [`QueuedPush`] per pusher to notify into
//!    [`trees::PUSH_QUEUE`], keyed by pusher and position, so each pusher's queue is in event
//!    order. The evaluated rows are removed in the same write.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Bound,
};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId, events::TimelineEventType, push::Action};
use serde::{Deserialize, Serialize};
use tocsin_store::WriteBatch;

use super::{
    audience,
    notifications::{self, Notified},
    pushers, rules,
};
use crate::{
    Services,
    error::{Error, Result},
    store::{Db, key, pos_bytes, pos_from, split, trees, utf8},
};

/// Events evaluated per round.
const ROUND: usize = 256;

/// One notification waiting for its gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueuedPush {
    /// The event that notified; `None` (with `room_id`) for a badge update: counts only, after
    /// the user read elsewhere (see [`super::badge`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<OwnedEventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<OwnedRoomId>,
    /// The user's unread notifications across their rooms when the row was evaluated.
    pub unread: u64,
    /// The matched rule's actions (their tweaks go to the gateway).
    pub actions: Vec<Action>,
    /// Whether the gateway should deliver it at once (`prio: high`).
    pub high: bool,
    /// When it was queued, in ms (rows from before badge updates have 0).
    #[serde(default)]
    pub queued_at: u64,
}

impl QueuedPush {
    pub fn is_badge(&self) -> bool {
        self.event_id.is_none()
    }
}

/// The tag of a read row's first part: a room id (an event row's) always starts with `!`.
const READ_TAG: &[u8] = b"read";

/// The row a live event adds to its commit (see the module docs).
pub fn event_row(batch: &mut WriteBatch, pos: u64, room_id: &RoomId, event_id: &ruma::EventId) {
    batch.insert(trees::PUSH_EVENTS, pos_bytes(pos).to_vec(), key(&[room_id.as_bytes(), event_id.as_bytes()]));
}

/// The row a local user's read receipt (public or private) adds to its commit, in the same
/// stream as the events, so the worker sees it after the events it covers and a restart keeps
/// it: `pos -> "read" SEP user_id`.
pub fn read_row(batch: &mut WriteBatch, pos: u64, user: &UserId) {
    batch.insert(trees::PUSH_EVENTS, pos_bytes(pos).to_vec(), key(&[READ_TAG, user.as_bytes()]));
}

/// A row of [`trees::PUSH_EVENTS`].
enum Row {
    Event { room_id: OwnedRoomId, event_id: OwnedEventId },
    Read { user: OwnedUserId },
}

fn parse_row(value: &[u8]) -> Result<Option<Row>> {
    let parts = split(value);
    let (Some(first), Some(second)) = (parts.first(), parts.get(1)) else { return Ok(None) };
    if *first == READ_TAG {
        let user = UserId::parse(utf8(second)?).map_err(Error::internal)?;
        return Ok(Some(Row::Read { user }));
    }
    let room_id = RoomId::parse(utf8(first)?).map_err(Error::internal)?;
    let event_id = ruma::EventId::parse(utf8(second)?).map_err(Error::internal)?;
    Ok(Some(Row::Event { room_id, event_id }))
}

/// Removes whatever is queued for the pusher at `pusher_key`.
pub fn remove_queue_rows(db: &Db, pusher_key: &[u8], batch: &mut WriteBatch) -> Result<()> {
    for (k, _) in db.scan_prefix(trees::PUSH_QUEUE, &queue_prefix(pusher_key), usize::MAX)? {
        batch.remove(trees::PUSH_QUEUE, k);
    }
    Ok(())
}

fn queue_prefix(pusher_key: &[u8]) -> Vec<u8> {
    let mut p = pusher_key.to_vec();
    p.push(crate::store::SEP);
    p
}

/// The oldest notification queued for a pusher, with its row key.
pub fn head(db: &Db, pusher_key: &[u8]) -> Result<Option<(Vec<u8>, QueuedPush)>> {
    let Some((k, v)) = db.scan_prefix(trees::PUSH_QUEUE, &queue_prefix(pusher_key), 1)?.into_iter().next() else {
        return Ok(None);
    };
    let item = serde_json::from_slice(&v).map_err(|e| Error::internal(format!("corrupt push queue row: {e}")))?;
    Ok(Some((k, item)))
}

/// The oldest notification queued for a pusher, with its row key, and whether more follow it.
pub fn head_and_more(db: &Db, pusher_key: &[u8]) -> Result<Option<(Vec<u8>, QueuedPush, bool)>> {
    let mut rows = db.scan_prefix(trees::PUSH_QUEUE, &queue_prefix(pusher_key), 2)?.into_iter();
    let Some((k, v)) = rows.next() else { return Ok(None) };
    let item = serde_json::from_slice(&v).map_err(|e| Error::internal(format!("corrupt push queue row: {e}")))?;
    Ok(Some((k, item, rows.next().is_some())))
}

/// Every pusher with something queued (at start, to resume delivery).
pub fn pending_pushers(db: &Db) -> Result<BTreeSet<Vec<u8>>> {
    let mut out = BTreeSet::new();
    for (k, _) in db.scan_prefix(trees::PUSH_QUEUE, &[], usize::MAX)? {
        let cut = k.len().saturating_sub(9);
        out.insert(k[..cut].to_vec());
    }
    Ok(out)
}

/// The position of the oldest row not yet evaluated, if any.
pub fn first_unevaluated(db: &Db) -> Result<Option<u64>> {
    match db.range(trees::PUSH_EVENTS, Bound::Unbounded, Bound::Unbounded, false, 1)?.first() {
        Some((k, _)) => Ok(Some(pos_from(k)?)),
        None => Ok(None),
    }
}

/// Evaluates the durable event rows not yet evaluated. Returns the pushers that got work, and
/// whether a full round was read (more may be waiting).
pub async fn evaluate(services: &Services, audiences: &mut audience::Audiences) -> Result<(BTreeSet<Vec<u8>>, bool)> {
    let db = &services.db;
    let visible = db.streams.visible();
    let rows =
        db.range(trees::PUSH_EVENTS, Bound::Unbounded, Bound::Included(&pos_bytes(visible)[..]), false, ROUND)?;
    let full = rows.len() == ROUND;
    // After this round's write, everything up to here has its notifications recorded.
    let done = match rows.last() {
        Some((k, _)) if full => pos_from(k)?,
        _ => visible,
    };
    let mut batch = WriteBatch::new();
    let mut touched = BTreeSet::new();
    let mut names: HashMap<OwnedUserId, String> = HashMap::new();
    let now = crate::users::now_ms();
    // The users who read, with the position of their last receipt: a burst of receipts in one
    // round makes one badge update.
    let mut readers: BTreeMap<OwnedUserId, u64> = BTreeMap::new();
    for (k, v) in rows {
        batch.remove(trees::PUSH_EVENTS, k.clone());
        let pos = pos_from(&k)?;
        let (room_id, event_id) = match parse_row(&v)? {
            Some(Row::Event { room_id, event_id }) => (room_id, event_id),
            Some(Row::Read { user }) => {
                readers.insert(user, pos);
                continue;
            }
            None => continue,
        };
        let Some(pdu) = services.rooms.pdu(&event_id)? else { continue };
        // A membership change is evaluated only for its target, and only when another user made
        // it (an invite, a kick, a ban), as Synapse does: the default rules never notify anyone
        // else of one. Each join changes the room's state, so it also split the room's members
        // anew (`audience`): 12.5 million member look-ups while 5,000 users joined, which left
        // the worker behind, and an alarm raised next waited behind the joins.
        let membership = pdu.kind == TimelineEventType::RoomMember;
        let target = if membership { changed_by_another(services, &pdu) } else { None };
        if membership && target.is_none() {
            continue;
        }
        let audience = if membership { None } else { Some(audiences.of(services, &room_id).await?) };
        if audience.as_ref().is_some_and(|a| a.members.joined.is_empty()) {
            continue;
        }
        let facts = rules::RoomFacts::load(services, &room_id).await?;
        let Some(input) = services.push.inputs.input(&pdu) else { continue };
        let mut shared = rules::SharedActions::default();
        let mut candidates: Vec<OwnedUserId> = match &audience {
            None => target.into_iter().collect(),
            Some(audience) => {
                // The members on the default rules whom the event does not name share one
                // result: when it does not notify, only the others need a visit.
                let quiet = match audience.representative(&input) {
                    Some(user) => {
                        let ruleset = rules::effective_rules(services, user)?;
                        let name = || display_name(services, &mut names, user);
                        let actions = shared.for_user(&ruleset, user, name, &facts, &input).await?;
                        !actions.iter().any(Action::should_notify)
                    }
                    None => true,
                };
                if quiet {
                    let mut visit: Vec<OwnedUserId> =
                        audience.alone().iter().cloned().chain(audience.named(&input)).collect();
                    visit.sort_unstable();
                    visit.dedup();
                    visit
                } else {
                    audience.members.joined.clone()
                }
            }
        };
        candidates.retain(|u| *u != pdu.sender);
        for user in candidates {
            let ruleset = rules::effective_rules(services, &user)?;
            let name = || display_name(services, &mut names, &user);
            let actions = shared.for_user(&ruleset, &user, name, &facts, &input).await?;
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            let entry = Notified { room_id: room_id.clone(), event_id: event_id.clone(), actions, ts: now };
            notifications::record(&mut batch, &user, pos, &entry)?;
            let targets = pushers::list(db, &user)?;
            if targets.is_empty() {
                continue;
            }
            let actions = entry.actions;
            let alarm = is_ringing_alarm(&pdu);
            let tweaked = actions.iter().any(|a| a.is_highlight() || a.sound().is_some());
            let high = alarm || tweaked || pdu.kind == TimelineEventType::RoomEncrypted;
            let unread = unread_total(services, &user).await?;
            services.push.badges.told(&user, unread);
            let item = QueuedPush {
                event_id: Some(event_id.clone()),
                room_id: Some(room_id.clone()),
                unread,
                actions,
                high,
                queued_at: now,
            };
            for target in targets {
                let pusher_key = pushers::pusher_key(&user, &target.pusher.ids);
                batch.insert(trees::PUSH_QUEUE, key(&[&pusher_key, &pos_bytes(pos)]), Db::to_json(&item)?);
                touched.insert(pusher_key);
            }
        }
    }
    for (user, pos) in readers {
        touched.extend(super::badge::queue(services, &user, pos, now, &mut batch).await?);
    }
    if !batch.is_empty() {
        db.write(batch).await?;
    }
    services.push.set_evaluated(done);
    Ok((touched, full))
}

/// The user's display name (for the rules that match it), read once per round.
fn display_name(services: &Services, names: &mut HashMap<OwnedUserId, String>, user: &UserId) -> Result<String> {
    if let Some(name) = names.get(user) {
        return Ok(name.clone());
    }
    let name = crate::sync::unread::DisplayName::new(services, user).get()?.to_owned();
    names.insert(user.to_owned(), name.clone());
    Ok(name)
}

/// The local user a membership event changes, when another user changed it: the only user it
/// is evaluated for (see [`evaluate`]).
fn changed_by_another(services: &Services, pdu: &crate::rooms::Pdu) -> Option<OwnedUserId> {
    let target = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())?;
    (target.server_name() == services.server_name && target != pdu.sender).then_some(target)
}

fn is_ringing_alarm(pdu: &crate::rooms::Pdu) -> bool {
    pdu.content_field(tocsin_events::ALARM_KEY)
        .and_then(|block| block.get("level").and_then(|l| l.as_str()).and_then(|l| l.parse().ok()))
        .is_some_and(tocsin_events::AlarmLevel::rings)
}

/// The user's notification count summed over their joined rooms: the same counts `/sync` shows.
pub(super) async fn unread_total(services: &Services, user: &UserId) -> Result<u64> {
    let display_name = crate::sync::unread::DisplayName::new(services, user);
    let upto = services.db.streams.visible();
    let mut total = 0;
    for room in services.rooms.joined_rooms(user)? {
        let members = services.rooms.member_summary(&room).await?.joined;
        let (notify, _) =
            crate::sync::unread::counts(services, user, &room, upto, members, &display_name, None).await?;
        total += notify;
    }
    Ok(total)
}
