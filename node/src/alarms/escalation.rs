//! The escalation room step: which room hears of an unacknowledged alarm, who posts there, and
//! the message.
//!
//! The room comes from the node policy at the time of escalation (a policy reloaded since the
//! alarm was raised is the one that counts), by [`NodePolicy::escalation_room_for`]: the alarm's
//! room's own `escalation_room` (when the room is one of the policy's), else the first of the
//! sender's roles that names one, else `[alarms] escalation_room`.

use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId, events::TimelineEventType};
use serde_json::json;
use tocsin_policies::NodePolicy;

use super::{AlarmRecord, txn, view::AlarmStatus};
use crate::{
    Services,
    error::{Error, Result},
    rooms::NewEvent,
};

/// The room an alarm escalates into, and why that one.
pub(super) struct Target {
    pub room: OwnedRoomId,
    pub alias: String,
    /// Which policy entry chose it (`room "levee"`, `role "warden"`, `[alarms]`).
    pub source: String,
}

/// The escalation room of `record` under the current policy; `None` when no entry names one.
/// A named room that does not exist here is a refusal (`NotFound`), recorded as the step's
/// outcome.
pub(super) async fn target(s: &Services, record: &AlarmRecord) -> Result<Option<Target>> {
    let Some(policy) = s.policy.policy() else { return Ok(None) };
    let room_alias = policy_alias_of(s, &policy, &record.room_id)?;
    let Some((alias, source)) = policy.escalation_room_for(room_alias.as_deref(), record.sender.localpart()) else {
        return Ok(None);
    };
    let room = resolve(s, alias)?.ok_or_else(|| {
        Error::not_found(format!("escalation room #{alias}:{} (set by {source}) does not exist", s.server_name))
    })?;
    Ok(Some(Target { room, alias: alias.to_owned(), source: source.to_string() }))
}

/// The alias under which the policy knows the alarm's room, if the policy names an escalation
/// room for it. Only those rooms are resolved: the answer matters for no other.
fn policy_alias_of(s: &Services, policy: &NodePolicy, room_id: &RoomId) -> Result<Option<String>> {
    for room in policy.rooms.iter().filter(|r| r.escalation_room.is_some()) {
        if resolve(s, &room.alias)?.as_deref() == Some(room_id) {
            return Ok(Some(room.alias.clone()));
        }
    }
    Ok(None)
}

/// `#alias:<this server>` as a room id, if the alias exists.
fn resolve(s: &Services, alias: &str) -> Result<Option<OwnedRoomId>> {
    // A policy alias that is not a valid alias here simply names no room.
    let Ok(full) = RoomAliasId::parse(format!("#{alias}:{}", s.server_name)) else { return Ok(None) };
    s.rooms.resolve_alias(&full)
}

/// Posts the escalation message; returns the step's detail.
pub(super) async fn post(
    s: &Services,
    record: &AlarmRecord,
    status: &AlarmStatus,
    target: Option<Target>,
) -> Result<String> {
    let Some(target) = target else {
        return Ok("escalation due, but the policy names no escalation room".to_owned());
    };
    let waiting: Vec<&str> = status.waiting.iter().map(|u| u.as_str()).collect();
    let acked = status.expected.len() - status.waiting.len();
    let body = format!(
        "🚨 Escalation: the {} alarm of {} in {} has {acked} of {} acknowledgements after the deadline: {}\nWaiting for: {}",
        record.level,
        record.sender,
        record.room_id,
        status.expected.len(),
        record.body,
        waiting.join(", ")
    );
    let sender = sender(s, &target.room, &record.sender).await?;
    let content = json!({ "msgtype": "m.text", "body": body });
    let event = NewEvent::message(TimelineEventType::RoomMessage, content);
    let id = txn(format!("alarm-escalation-{}", record.event_id));
    s.rooms.send(&target.room, &sender, event, Some(id)).await?;
    Ok(format!("escalated to the escalation room {} (#{}, set by {})", target.room, target.alias, target.source))
}

/// Who posts into the escalation room: the provisioning account (it created the policy's rooms
/// and is joined to them), else the alarm's sender if joined there.
async fn sender(s: &Services, room: &RoomId, alarm_sender: &UserId) -> Result<OwnedUserId> {
    let provisioner = s.users.user_id_for(crate::policy::provision::PROVISIONER)?;
    for candidate in [provisioner.as_ref(), alarm_sender] {
        if s.rooms.membership(room, candidate).await?.as_deref() == Some("join") {
            return Ok(candidate.to_owned());
        }
    }
    Err(Error::forbidden(format!("neither {provisioner} nor {alarm_sender} is joined to the escalation room {room}")))
}
