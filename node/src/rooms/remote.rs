//! What federation asks of a room: event templates for remote joins and leaves, countersigning,
//! forwarding events to the other servers, invites to rooms this node is not in, and backfilled
//! history.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
    events::TimelineEventType, signatures::sign_event,
};
use tocsin_store::WriteBatch;

use super::{NewEvent, Pdu, RoomHead, Rooms, SharedHead, read::StoredEvent};
use crate::{
    error::{Error, Result},
    store::{Db, key, pos_bytes, prefix, trees},
};

impl Rooms {
    /// The unsigned member event a remote user would send to change their membership, checked
    /// against the auth rules first so a refused join is a 403 at `make_join`.
    pub async fn membership_template(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        membership: &str,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        let head = self.head(room_id)?;
        let head = head.lock().await;
        let event = NewEvent::state(
            TimelineEventType::RoomMember.to_string(),
            user_id.as_str(),
            serde_json::json!({ "membership": membership }),
        );
        // The room's access rule first: a refused join names the rule at `make_join`.
        let facts = crate::policy::access::RoomFacts::from_head(&head, user_id);
        self.policy.check_access(user_id, user_id, membership, &facts)?;
        let template = self.template(&head, user_id, &event, true)?;
        // Run the auth rules on the template (signatures play no part in them).
        let probe =
            Arc::new(Pdu::from_json(EventId::parse("$template-probe").map_err(Error::internal)?, template.clone())?);
        self.authorize(&head, &probe)?;
        Ok((head.version.clone(), template))
    }

    /// The room's access rule (policy::access) for a membership `sender` gives `user_id` at
    /// another server's request, when this node is in the room; `Ok` for a room it does not know.
    pub async fn check_access_rule(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        user_id: &UserId,
        membership: &str,
    ) -> Result<()> {
        if !self.exists(room_id)? {
            return Ok(());
        }
        let head = self.head(room_id)?;
        let head = head.lock().await;
        self.policy.check_access(
            sender,
            user_id,
            membership,
            &crate::policy::access::RoomFacts::from_head(&head, user_id),
        )
    }

    /// Builds and authorises a local event without storing it (an invite waits for the
    /// invitee's server to countersign it first).
    pub async fn prepare(&self, room_id: &RoomId, sender: &UserId, event: NewEvent) -> Result<(RoomVersionId, Pdu)> {
        let head = self.head(room_id)?;
        let head = head.lock().await;
        self.policy.check_event(&head, sender, &event)?;
        let pdu = Arc::new(self.build_inner(&head, sender, event, true)?);
        self.authorize(&head, &pdu)?;
        Ok((head.version.clone(), Arc::unwrap_or_clone(pdu)))
    }

    /// Adds this node's signature to an event object.
    pub fn countersign(&self, version: &RoomVersionId, object: &mut CanonicalJsonObject) -> Result<()> {
        let rules = super::version::rules(version)?;
        sign_event(self.server_name.as_str(), self.keys.pair(), object, &rules.redaction).map_err(Error::internal)
    }

    /// Queues an accepted event for every other server in the room except `except` (its origin,
    /// which has it already).
    pub async fn forward(&self, pdu: &Pdu, except: &[&ServerName]) -> Result<()> {
        let destinations: Vec<OwnedServerName> = {
            let head = self.head(&pdu.room_id)?;
            let mut head = head.lock().await;
            self.destinations(&mut head, pdu).into_iter().filter(|d| !except.contains(&&**d)).collect()
        };
        if destinations.is_empty() {
            return Ok(());
        }
        let ticket = self.db.allocate()?;
        let mut batch = WriteBatch::new();
        crate::federation::sender::queue_pdu_rows(&mut batch, &destinations, ticket.pos(), &pdu.event_id);
        self.db.commit_ticket(ticket, batch).await?;
        self.outbox.wake(&destinations);
        Ok(())
    }

    /// Creates the in-memory head of a room this node is joining over federation. The caller
    /// holds it until the join is stored: until then the store does not know the room, so a
    /// head dropped from the cache could not be loaded again.
    pub fn begin_remote_room(&self, room_id: &RoomId, version: RoomVersionId) -> Result<SharedHead> {
        match self.head(room_id) {
            Err(Error::NotFound(_)) => self.insert_head(RoomHead::new(room_id.to_owned(), version)?),
            known => known,
        }
    }

    /// An invite or a knock of a local user in a room this node is not in: the membership event
    /// is kept as an outlier, with the stripped state the other server sent, so `/sync` can show
    /// the room as invited or knocked.
    pub async fn record_remote_membership(
        &self,
        user: &UserId,
        pdu: &Pdu,
        stripped_state: Vec<serde_json::Value>,
    ) -> Result<()> {
        let membership = pdu
            .membership()
            .filter(|m| matches!(m.as_str(), "invite" | "knock"))
            .ok_or_else(|| Error::bad_json("not an invite or a knock"))?;
        let room = pdu.room_id.as_bytes();
        let user = user.as_bytes();
        let stored = StoredEvent::outlier(pdu, false)?;
        let state = Db::to_json(&stripped_state)?;
        let stored = serde_json::to_vec(&stored).map_err(Error::internal)?;
        let event_id = pdu.event_id.clone();
        self.db
            .write_streamed(|pos, batch| {
                batch.insert(trees::EVENTS, event_id.as_bytes().to_vec(), stored);
                batch.insert(trees::INVITE_STATE, key(&[user, room]), state);
                // A struct of strings and a number: serialising it cannot fail.
                let user_room = super::UserRoom { membership, pos, event_id };
                batch.insert(trees::USER_ROOMS, key(&[user, room]), serde_json::to_vec(&user_room).unwrap_or_default());
                batch.insert(trees::MEMBERSHIP_CHANGES, key(&[user, &pos_bytes(pos)]), room.to_vec());
            })
            .await?;
        Ok(())
    }

    /// Every other server with a joined member in a room this node is in. Read from the
    /// current state rows and memberships, not the room heads: at start, with 10,000 rooms,
    /// loading every room's state would fill the head cache with rooms nobody uses.
    pub async fn peer_servers(&self) -> Result<Vec<OwnedServerName>> {
        let mut servers = std::collections::BTreeSet::new();
        for (n, (room, _)) in self.db.scan_prefix(trees::ROOMS, b"", usize::MAX)?.into_iter().enumerate() {
            if n % 256 == 255 {
                tokio::task::yield_now().await;
            }
            let members = prefix(&[&room, b"m.room.member"]);
            let (mut here, mut others) = (false, Vec::new());
            for (row, _) in self.db.scan_prefix(trees::ROOM_STATE, &members, usize::MAX)? {
                let Ok(user) = UserId::parse(crate::store::utf8(&row[members.len()..])?) else { continue };
                let membership =
                    self.db.get_json::<super::UserRoom>(trees::USER_ROOMS, &key(&[user.as_bytes(), &room]))?;
                if membership.is_none_or(|m| m.membership != "join") {
                    continue;
                }
                if user.server_name() == self.server_name {
                    here = true;
                } else {
                    others.push(user.server_name().to_owned());
                }
            }
            if here {
                servers.extend(others);
            }
        }
        Ok(servers.into_iter().collect())
    }

    /// Whether a user of this node is joined: then this node's state of the room is current.
    pub async fn has_local_member(&self, room_id: &RoomId) -> Result<bool> {
        let head = self.head(room_id)?;
        let head = head.lock().await;
        Ok(head.members_with("join").iter().any(|u| u.server_name() == self.server_name))
    }

    /// Who invited `user` to `room_id`, if the user's membership is an invite.
    pub fn inviter(&self, user: &UserId, room_id: &RoomId) -> Result<Option<ruma::OwnedUserId>> {
        let Some(user_room) = self.user_room(user, room_id)? else { return Ok(None) };
        if user_room.membership != "invite" {
            return Ok(None);
        }
        Ok(self.pdu(&user_room.event_id)?.map(|p| p.sender))
    }

    /// The stripped state sent with an invite to, or returned for a knock on, a room this node
    /// is not in.
    pub fn remote_invite_state(&self, invitee: &UserId, room_id: &RoomId) -> Result<Option<Vec<serde_json::Value>>> {
        self.db.get_json(trees::INVITE_STATE, &key(&[invitee.as_bytes(), room_id.as_bytes()]))
    }

    /// The event ids a backfill starts from: the prev events of the earliest event in the room's
    /// timeline here.
    pub fn backfill_from(&self, room_id: &RoomId) -> Result<Vec<OwnedEventId>> {
        let rows = self.paginate(room_id, 0, false, 1)?;
        Ok(rows.into_iter().next().map(|(_, pdu)| pdu.prev_events).unwrap_or_default())
    }
}
