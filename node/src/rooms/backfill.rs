//! History fetched from another server (`/backfill`): authorised like every other event before
//! it enters the timeline, below every live position, with its redactions checked.

use std::{collections::HashMap, sync::Arc};

use ruma::{OwnedEventId, RoomId, events::StateEventType, room_version_rules::RoomVersionRules};
use tocsin_store::WriteBatch;

use super::{
    Pdu, Rooms,
    incoming::verdict,
    read::{StoredEvent, load_pdu},
    redaction::Origin,
};
use crate::{
    error::{Error, Result},
    store::{Db, pos_bytes, trees},
};

const BACKFILL_KEY: &[u8] = b"backfill_next";

impl Rooms {
    /// Stores history fetched by backfill, newest first as it comes. Each event must pass the
    /// auth rules against its own auth events (the state before a backfilled event is not
    /// known here) and, if it is an alarm, the federation list's `alarm_senders`
    /// (`PolicyGate::check_remote_alarm`); one that fails is kept as rejected, out of the
    /// timeline. Events already in the timeline are skipped. Returns how many were added.
    pub async fn store_backfill(
        &self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        newest_first: Vec<Pdu>,
    ) -> Result<usize> {
        let mut next = match self.db.get(trees::META, BACKFILL_KEY)? {
            Some(b) => crate::store::pos_from(&b)?,
            None => crate::store::LIVE_BASE - 1,
        };
        // Oldest first, so an event's auth events from the same page are judged before it.
        let mut accepted: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        let mut verdicts: HashMap<OwnedEventId, Option<String>> = HashMap::new();
        for pdu in newest_first.iter().rev() {
            if pdu.room_id != room_id {
                continue;
            }
            let pdu = Arc::new(pdu.clone());
            let rejection =
                match verdict(self.check_auth_events(&rules.authorization, &pdu, |id| accepted.get(id).cloned()))? {
                    // The same rule as for live events (`append_remote_staged`): history must not
                    // bring in an alarm its sender's server may not raise.
                    None => self.policy.check_remote_alarm(&pdu),
                    refused => refused,
                };
            if rejection.is_none() {
                accepted.insert(pdu.event_id.clone(), pdu.clone());
            }
            verdicts.insert(pdu.event_id.clone(), rejection);
        }
        let head = self.head(room_id)?;
        let head = head.lock().await;
        let mut batch = WriteBatch::new();
        let mut added = 0;
        let mut redactions = Vec::new();
        for pdu in newest_first {
            let Some(rejection) = verdicts.remove(&pdu.event_id) else { continue };
            // State events known from the join are outliers: backfill puts them in the timeline.
            match self.stored_event(&pdu.event_id)? {
                Some(stored) if !stored.outlier || stored.rejected => continue,
                _ => {}
            }
            if let Some(reason) = rejection {
                tracing::info!(event_id = %pdu.event_id, %reason, "rejected backfilled event");
                let stored = StoredEvent::outlier(&pdu, true)?;
                batch.insert(trees::EVENTS, pdu.event_id.as_bytes().to_vec(), Db::to_json(&stored)?);
                continue;
            }
            // Redactions are applied below, once their targets (often on this page) are stored.
            self.timeline_rows(&head, &pdu, next, None, None, None, &mut batch)?;
            if pdu.kind == ruma::events::TimelineEventType::RoomRedaction {
                redactions.push(pdu);
            }
            next = next.checked_sub(1).ok_or_else(|| Error::internal("backfill positions exhausted"))?;
            added += 1;
        }
        batch.insert(trees::META, BACKFILL_KEY.to_vec(), pos_bytes(next).to_vec());
        self.db.write(batch).await?;
        // Redactions once their targets (often in the same page) are stored; the power levels
        // that judge them are those among their own auth events.
        if !redactions.is_empty() {
            let mut batch = WriteBatch::new();
            for redaction in &redactions {
                let mut auth = HashMap::new();
                for id in &redaction.auth_events {
                    if let Some(event) = load_pdu(&self.db, id)? {
                        auth.insert(
                            (event.state_event_type(), event.state_key.clone().unwrap_or_default()),
                            Arc::new(event),
                        );
                    }
                }
                let lookup = |k: &StateEventType, key: &str| auth.get(&(k.clone(), key.to_owned())).cloned();
                if let Some(target) = self.redaction_effect(rules, redaction, Origin::Remote, lookup)? {
                    self.redaction_writes(&head, redaction, &target, &mut batch)?;
                }
            }
            if !batch.is_empty() {
                self.db.write(batch).await?;
            }
        }
        Ok(added)
    }
}
