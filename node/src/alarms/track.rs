//! The hooks on the event path and the receipt path: what an event or a receipt changes about
//! an alarm, written in the same batch as the event or receipt itself (so a crash keeps both or
//! neither).

use std::sync::Arc;

use ruma::{EventId, OwnedServerName, OwnedUserId, RoomId, UserId, events::TimelineEventType};
use serde_json::Value;
use tocsin_events::AlarmBlock;
use tocsin_store::WriteBatch;

use super::{AlarmRecord, Ended, Mark, NODE_ACCOUNTS, RecordCache, mark_key};
use crate::{
    error::Result,
    rooms::{Pdu, RoomHead},
    store::{Db, key, pos_bytes, prefix, trees},
};

/// Without `ack_deadline_s` in the alarm and `[alarms] ack_deadline` in the policy.
pub const DEFAULT_DEADLINE_S: u64 = 600;

/// Held by `Rooms`: decides what each event means for alarms, and wakes the worker.
#[derive(Clone)]
pub struct Tracker {
    server_name: OwnedServerName,
    policy: Arc<crate::policy::PolicyGate>,
    wake: Arc<tokio::sync::Notify>,
    records: Arc<RecordCache>,
}

impl Tracker {
    pub(crate) fn new(
        server_name: OwnedServerName,
        policy: Arc<crate::policy::PolicyGate>,
        wake: Arc<tokio::sync::Notify>,
        records: Arc<RecordCache>,
    ) -> Self {
        Self { server_name, policy, wake, records }
    }

    /// Writes what `pdu` (entering the timeline at `pos`, with `head` the room before it) changes
    /// about alarms. `redacts` is the event it redacts, once allowed.
    pub fn event_rows(
        &self,
        db: &Db,
        head: &RoomHead,
        pdu: &Pdu,
        pos: u64,
        redacts: Option<&EventId>,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        if let Some(target) = redacts
            && db.get(trees::ALARMS, target.as_bytes())?.is_some()
        {
            end(batch, target, "redacted", pdu)?;
            self.wake.notify_one();
        }
        // Most events are neither alarms nor relations: skip parsing them. PDU content is
        // canonical JSON, so these keys appear literally when present.
        let raw = pdu.content.get();
        if !raw.contains("\"m.relates_to\"") && !raw.contains(tocsin_events::ALARM_KEY) {
            return Ok(());
        }
        let content = pdu.content_value();
        let relation = content.get("m.relates_to");
        let is_edit = relation.and_then(|r| r.get("rel_type")).and_then(Value::as_str) == Some("m.replace");
        if pdu.kind == TimelineEventType::RoomMessage
            && !is_edit
            && pdu.sender.server_name() == self.server_name
            && let Ok(Some(block)) = AlarmBlock::from_content(&content)
        {
            self.record_alarm(db, head, pdu, pos, block, &content, batch)?;
            return Ok(());
        }
        let Some(target) = crate::rooms::relates_to(pdu) else { return Ok(()) };
        let Some(alarm) = self.records.get(db, &target)? else { return Ok(()) };
        if is_edit {
            let cancelled = content
                .get("m.new_content")
                .and_then(|n| n.get(tocsin_events::ALARM_KEY))
                .and_then(|b| b.get("cancelled"))
                .and_then(Value::as_bool)
                == Some(true);
            if cancelled && pdu.sender == alarm.sender {
                end(batch, &target, "cancelled", pdu)?;
                self.wake.notify_one();
            }
            return Ok(());
        }
        // Any reaction (an annotation) or a reply is an acknowledgement; other relations
        // (threads without a reply, references) are not.
        let annotation = relation.and_then(|r| r.get("rel_type")).and_then(Value::as_str) == Some("m.annotation");
        let reply = relation.and_then(|r| r.get("m.in_reply_to")).is_some();
        if !(annotation || reply) || alarm.expected.binary_search(&pdu.sender).is_err() {
            return Ok(());
        }
        let k = mark_key(&alarm.event_id, &pdu.sender);
        if db.get(trees::ALARM_ACKS, &k)?.is_none() {
            let mark = Mark { ts: pdu.origin_server_ts.0.into(), event_id: pdu.event_id.clone() };
            batch.insert(trees::ALARM_ACKS, k, Db::to_json(&mark)?);
            self.wake.notify_one();
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record_alarm(
        &self,
        db: &Db,
        head: &RoomHead,
        pdu: &Pdu,
        pos: u64,
        block: AlarmBlock,
        content: &Value,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        if db.get(trees::ALARMS, pdu.event_id.as_bytes())?.is_some() {
            return Ok(());
        }
        let policy = self.policy.policy();
        let deadline_s = block
            .ack_deadline_s
            .or_else(|| policy.as_ref().and_then(|p| p.alarms.ack_deadline))
            .unwrap_or(DEFAULT_DEADLINE_S);
        let escalate_after_s = policy.as_ref().and_then(|p| p.alarms.escalate_after).unwrap_or(deadline_s);
        let mut expected: Vec<OwnedUserId> =
            head.members_with("join").into_iter().filter(|u| *u != pdu.sender && !self.is_bot(u)).collect();
        expected.sort();
        let record = AlarmRecord {
            id: block.id.clone(),
            event_id: pdu.event_id.clone(),
            room_id: pdu.room_id.clone(),
            sender: pdu.sender.clone(),
            level: block.level,
            body: content.get("body").and_then(Value::as_str).unwrap_or_default().to_owned(),
            ts: pdu.origin_server_ts.0.into(),
            pos,
            ack_required: block.ack_required,
            deadline_s,
            escalate_after_s,
            expires: block.expires,
            expected,
        };
        batch.insert(trees::ALARMS, pdu.event_id.as_bytes().to_vec(), Db::to_json(&record)?);
        batch.insert(trees::ALARM_IDS, block.id.as_bytes().to_vec(), pdu.event_id.as_bytes().to_vec());
        batch.insert(
            trees::ALARM_ROOMS,
            key(&[pdu.room_id.as_bytes(), &pos_bytes(pos)]),
            pdu.event_id.as_bytes().to_vec(),
        );
        tracing::info!(alarm = %block.id, event_id = %pdu.event_id, level = %block.level, recipients = record.expected.len(), "alarm raised");
        self.wake.notify_one();
        Ok(())
    }

    /// The node's own accounts and accounts the policy marks `bot = true`. Users of other
    /// servers are never bots here: this node cannot know.
    fn is_bot(&self, user: &UserId) -> bool {
        if user.server_name() != self.server_name {
            return false;
        }
        NODE_ACCOUNTS.contains(&user.localpart()) || self.policy.policy().is_some_and(|p| p.is_bot(user.localpart()))
    }

    /// Writes the reads a public read receipt of `user` (on `read.event_id`, at `event_pos`)
    /// gives: every alarm of the room at or before that event that expects the user.
    pub fn receipt_rows(
        &self,
        db: &Db,
        room: &RoomId,
        user: &UserId,
        read: &Mark,
        event_pos: u64,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let mut any = false;
        for (k, alarm_id) in db.scan_prefix(trees::ALARM_ROOMS, &prefix(&[room.as_bytes()]), usize::MAX)? {
            let alarm_pos = crate::store::pos_suffix(&k)?;
            if alarm_pos > event_pos {
                break;
            }
            let alarm_id = EventId::parse(crate::store::utf8(&alarm_id)?).map_err(crate::error::Error::internal)?;
            let mk = mark_key(&alarm_id, user);
            if db.get(trees::ALARM_READS, &mk)?.is_some() {
                continue;
            }
            let Some(alarm) = self.records.get(db, &alarm_id)? else { continue };
            if alarm.expected.binary_search_by(|u| UserId::cmp(u, user)).is_ok() {
                batch.insert(trees::ALARM_READS, mk, Db::to_json(read)?);
                any = true;
            }
        }
        if any {
            self.wake.notify_one();
        }
        Ok(())
    }
}

fn end(batch: &mut WriteBatch, alarm: &EventId, reason: &str, by: &Pdu) -> Result<()> {
    let ended = Ended { reason: reason.to_owned(), ts: by.origin_server_ts.0.into(), event_id: by.event_id.clone() };
    batch.insert(trees::ALARM_ENDS, alarm.as_bytes().to_vec(), Db::to_json(&ended)?);
    Ok(())
}
