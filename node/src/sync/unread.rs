//! Unread and highlight counts: the notifying events after the user's read receipt. The push
//! worker records each event's notifications as it evaluates it (`push::notifications`), so
//! up to its position a count is a short key scan; only the events it has not reached yet are
//! run through the user's push rules here. A first `/sync` under a thousand unread messages no
//! longer evaluates a thousand events per room.

use std::sync::OnceLock;

use ruma::{RoomId, UserId, push::Action};

use crate::{Services, error::Result};

/// The user's display name as push rules match it (the localpart when none is set), read
/// from the profile only when a rule is evaluated for the user: most counts are key scans.
pub struct DisplayName<'a> {
    services: &'a Services,
    user: &'a UserId,
    name: OnceLock<String>,
}

impl<'a> DisplayName<'a> {
    pub fn new(services: &'a Services, user: &'a UserId) -> Self {
        Self { services, user, name: OnceLock::new() }
    }

    pub fn get(&self) -> Result<&str> {
        if let Some(name) = self.name.get() {
            return Ok(name);
        }
        let name = self.services.users.profile(self.user)?.and_then(|p| p.0);
        Ok(self.name.get_or_init(|| name.unwrap_or_else(|| self.user.localpart().to_owned())))
    }
}

/// Counting past this many unread events stops: clients show "99+" long before.
const MAX_SCAN: usize = 1000;

/// `(notifications, highlights)` for `user` in `room` at stream position `upto`.
pub async fn counts(
    services: &Services,
    user: &UserId,
    room: &RoomId,
    upto: u64,
    members: usize,
    display_name: &DisplayName<'_>,
    loaded: Option<(u64, &[(u64, crate::rooms::Pdu)])>,
) -> Result<(u64, u64)> {
    let read_pos = services.rooms.read_pos(room, user)?;
    // Without a receipt, counting starts at the user's join (as Synapse does): the invite
    // and what came before it are not unread news.
    let joined_at = services.rooms.user_room(user, room)?.map(|r| r.pos).unwrap_or(0);
    let read_pos = read_pos.max(joined_at);
    let recorded_upto = upto.min(services.push.evaluated());
    let (mut notify, mut highlight) =
        crate::push::notifications::count(&services.db, user, room, read_pos, recorded_upto, MAX_SCAN)?;
    let from = read_pos.max(recorded_upto);
    if from < upto {
        // A woken sync has just read the new events for its timeline.
        let read;
        let events = match loaded {
            Some((after, events)) if after <= from => events,
            _ => {
                read = services.rooms.timeline_since(room, from, upto, MAX_SCAN)?.0;
                &read[..]
            }
        };
        if events.iter().any(|(pos, _)| *pos > from) {
            let rules = crate::push::rules::effective_rules(services, user)?;
            // The default rules match the user's id, never the display name: the profile is
            // read only for rules the user changed.
            let name = if rules.default { user.localpart() } else { display_name.get()? };
            // The same evaluation the push worker makes, so badge and push agree.
            let facts = crate::push::rules::RoomFacts::with_member_count(services, room, members).await?;
            // The user's own events never count, nor membership changes of other users (the
            // push worker does not evaluate those: `push::queue`); skipped before they are
            // flattened.
            let counted = |pdu: &crate::rooms::Pdu| {
                pdu.sender != user
                    && (pdu.kind != ruma::events::TimelineEventType::RoomMember
                        || pdu.state_key.as_deref() == Some(user.as_str()))
            };
            for (_, pdu) in events.iter().filter(|(pos, pdu)| *pos > from && counted(pdu)) {
                let Some(input) = services.push.inputs.input(pdu) else { continue };
                let actions = crate::push::rules::actions(&rules.rules, user, name, &facts, &input).await;
                if actions.iter().any(Action::should_notify) {
                    notify += 1;
                }
                if crate::push::rules::highlights(&actions) {
                    highlight += 1;
                }
            }
        }
    }
    Ok((notify, highlight))
}
