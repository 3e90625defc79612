//! Tchap-style access rules, enforced on memberships: a `restricted` room takes no users of
//! servers whose role in the federation list is `external`, and a `direct` room has at most two
//! members. A refusal is 403 `M_FORBIDDEN` naming the rule ([`RULE`]).
//!
//! Where a room's rule lives: in the room, as the state event [`STATE_TYPE`] (content
//! `{"rule": "restricted" | "unrestricted" | "direct"}`, like Tchap's `im.vector.room.access_rules`),
//! set when the room is created from the node policy (the policy's room with the same alias,
//! else `direct` for a DM, else `room_defaults.access_rule`). Not from the policy's alias mapping
//! at check time, because that only exists on the node whose policy names the room: a room
//! shared across the federation is joined and invited to through other nodes too, and each of
//! them must apply the same rule. A state event travels with the room, is authorised by its
//! power levels (`state_default`), and every resident server sees the same value, so a remote
//! `make_join`, `send_join`, an invite or a join in a transaction is checked the same way on
//! every Tocsin node. Whether a server is `external` comes from each node's own signed
//! federation list. A room without the event has no rule (rooms made before a policy existed,
//! rooms made by other homeservers).
//!
//! A direct room's rule cannot be changed afterwards (Tchap's rule too): otherwise any member
//! with `state_default` power could lift the two-member limit.
//!
//! The node policy's `[external_users]` limits apply in the rooms that carry a rule (rooms under
//! a Tocsin policy): with `allowed = false` (the default when the section is absent) no external
//! user may be invited, join or knock even where the rule is `unrestricted`; `max_per_room` caps the external users joined or invited;
//! with `may_invite = false` an external user may not invite anyone. They are refused naming
//! `external_users.allowed`, `.max_per_room` or `.may_invite`.

use std::collections::BTreeMap;

use ruma::{UserId, events::StateEventType};
use serde_json::Value;
use tocsin_policies::{AccessRule, MemberRole};

use super::PolicyGate;
use crate::{
    error::{Error, Result},
    rooms::RoomHead,
};

/// The room state event holding a room's access rule (state key "").
pub const STATE_TYPE: &str = "org.tocsin.access_rule";

/// The name refusals give for this rule.
pub const RULE: &str = "access_rule";

/// The rule in an access rule event's content, `None` when it names no known rule.
pub fn parse_rule(content: &Value) -> Option<AccessRule> {
    match content.get("rule").and_then(Value::as_str)? {
        "restricted" => Some(AccessRule::Restricted),
        "unrestricted" => Some(AccessRule::Unrestricted),
        "direct" => Some(AccessRule::Direct),
        _ => None,
    }
}

/// The content of an access rule event.
pub fn content(rule: AccessRule) -> Value {
    serde_json::json!({ "rule": rule.as_str() })
}

/// What a membership check needs to know about the room, before the event.
#[derive(Debug, Clone, Default)]
pub struct RoomFacts {
    pub rule: Option<AccessRule>,
    /// The target's membership now.
    pub target_now: Option<String>,
    /// Users other than the target who are joined or invited.
    pub others: usize,
    /// How many of those each server has (to count the external ones).
    pub others_by_server: BTreeMap<String, usize>,
}

impl RoomFacts {
    /// The facts from `(user, membership)` pairs of the room's state and its access rule
    /// event's content.
    pub fn from_members<'a>(
        rule_content: Option<&Value>,
        target: &UserId,
        members: impl IntoIterator<Item = (&'a str, Option<String>)>,
    ) -> Self {
        let mut facts = Self { rule: rule_content.and_then(parse_rule), ..Self::default() };
        for (user, membership) in members {
            if user == target.as_str() {
                facts.target_now = membership;
            } else if matches!(membership.as_deref(), Some("join" | "invite")) {
                facts.others += 1;
                let server = user.split_once(':').map_or("", |(_, server)| server);
                *facts.others_by_server.entry(server.to_owned()).or_default() += 1;
            }
        }
        facts
    }

    /// The facts from a room's current state.
    pub fn from_head(head: &RoomHead, target: &UserId) -> Self {
        let rule = head.get(&StateEventType::from(STATE_TYPE), "").map(|p| p.content_value());
        let members = head
            .state
            .iter()
            .filter(|((kind, _), _)| *kind == StateEventType::RoomMember)
            .map(|((_, key), pdu)| (key.as_str(), pdu.membership()));
        Self::from_members(rule.as_ref(), target, members)
    }
}

impl PolicyGate {
    /// The access rule a new room gets from the node policy: the policy's room with the same
    /// alias, else `direct` for a DM, else the policy's default. `None` without a node policy.
    pub fn access_rule_for_new_room(&self, alias_localpart: Option<&str>, is_direct: bool) -> Option<AccessRule> {
        let policy = self.policy()?;
        if let Some(room) = alias_localpart.and_then(|a| policy.room(a)) {
            return Some(policy.access_rule(room));
        }
        Some(if is_direct { AccessRule::Direct } else { policy.room_defaults.access_rule })
    }

    /// Whether a server's role in the federation list is `external`.
    fn is_external(&self, server: &str) -> bool {
        self.federation.list().and_then(|l| l.role_of(server)) == Some(MemberRole::External)
    }

    /// Whether `sender` may give `target` `membership` in a room with these facts. Only a change
    /// is checked (a joined member updating their profile is not refused).
    pub fn check_access(&self, sender: &UserId, target: &UserId, membership: &str, facts: &RoomFacts) -> Result<()> {
        let Some(rule) = facts.rule else { return Ok(()) };
        if facts.target_now.as_deref() == Some(membership) || !matches!(membership, "join" | "invite" | "knock") {
            return Ok(());
        }
        match rule {
            AccessRule::Restricted => {
                let server = target.server_name();
                if self.is_external(server.as_str()) {
                    return Err(Error::forbidden(format!(
                        "refused by policy rule `{RULE}` (\"restricted\"): {target} is a user of {server}, whose role \
                         in the federation list is `external`, and a restricted room takes no external users \
                         (membership `{membership}` refused)"
                    )));
                }
            }
            AccessRule::Direct => {
                let becomes_member = membership != "knock" && facts.target_now.as_deref() != Some("invite");
                if becomes_member && facts.others >= 2 {
                    return Err(Error::forbidden(format!(
                        "refused by policy rule `{RULE}` (\"direct\"): a direct room has at most two members, and {} \
                         are already joined or invited, so {target} cannot get membership `{membership}`",
                        facts.others
                    )));
                }
            }
            AccessRule::Unrestricted => {}
        }
        // After the room's own rule, which names the more specific refusal.
        self.check_external_users(sender, target, membership, facts)
    }

    /// `[external_users]` of the node policy (see the module's notes).
    fn check_external_users(
        &self,
        sender: &UserId,
        target: &UserId,
        membership: &str,
        facts: &RoomFacts,
    ) -> Result<()> {
        let Some(policy) = self.policy() else { return Ok(()) };
        let limits = &policy.external_users;
        if membership == "invite"
            && sender != target
            && self.is_external(sender.server_name().as_str())
            && !limits.may_invite
        {
            return Err(Error::forbidden(format!(
                "refused by policy rule `external_users.may_invite`: {sender} is a user of an `external` server, \
                 and external users may not invite"
            )));
        }
        let server = target.server_name();
        if !self.is_external(server.as_str()) {
            return Ok(());
        }
        if !limits.allowed {
            return Err(Error::forbidden(format!(
                "refused by policy rule `external_users.allowed`: {target} is a user of {server}, whose role in the \
                 federation list is `external`, and this node takes no external users (membership `{membership}` refused)"
            )));
        }
        let becomes_member = membership != "knock" && facts.target_now.as_deref() != Some("invite");
        if let Some(max) = limits.max_per_room
            && becomes_member
        {
            let external: usize =
                facts.others_by_server.iter().filter(|(s, _)| self.is_external(s)).map(|(_, n)| n).sum();
            if external >= max as usize {
                return Err(Error::forbidden(format!(
                    "refused by policy rule `external_users.max_per_room`: the room has {external} external users \
                     joined or invited, the most it may have is {max}, so {target} cannot get membership `{membership}`"
                )));
            }
        }
        Ok(())
    }

    /// A local change of the access rule event: it must name a rule, and a direct room keeps
    /// its rule.
    pub(super) fn check_rule_change(&self, head: &RoomHead, content: &Value) -> Result<()> {
        let Some(new) = parse_rule(content) else {
            return Err(Error::bad_json(format!(
                "{STATE_TYPE}.rule must be \"restricted\", \"unrestricted\" or \"direct\""
            )));
        };
        let current = head.get(&StateEventType::from(STATE_TYPE), "").and_then(|p| parse_rule(&p.content_value()));
        if current == Some(AccessRule::Direct) && new != AccessRule::Direct {
            return Err(Error::forbidden(format!(
                "refused by policy rule `{RULE}` (\"direct\"): a direct room keeps its access rule"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> ruma::OwnedUserId {
        UserId::parse(id).expect("user id")
    }

    #[test]
    fn direct_rooms_count_who_is_in_them() {
        let gate = PolicyGate::load(None, "tocsin.test").expect("gate");
        let rule = content(AccessRule::Direct);
        let members = [("@a:x", Some("join".to_owned())), ("@b:x", Some("invite".to_owned())), ("@c:x", None)];
        let facts = |target: &str| RoomFacts::from_members(Some(&rule), &user(target), members.clone());
        // A third member: refused, naming the rule.
        let a = user("@a:x");
        let err = gate.check_access(&a, &user("@c:x"), "invite", &facts("@c:x")).unwrap_err().to_string();
        assert!(err.contains("`access_rule` (\"direct\")"), "{err}");
        // The invited second member may join; the joined one may update their profile.
        assert!(gate.check_access(&user("@b:x"), &user("@b:x"), "join", &facts("@b:x")).is_ok());
        assert!(gate.check_access(&a, &a, "join", &facts("@a:x")).is_ok());
        // Leaving is never refused; a room without a rule has no limit.
        assert!(gate.check_access(&a, &a, "leave", &facts("@a:x")).is_ok());
        let no_rule = RoomFacts::from_members(None, &user("@c:x"), members.clone());
        assert!(gate.check_access(&a, &user("@c:x"), "invite", &no_rule).is_ok());
        assert_eq!(parse_rule(&serde_json::json!({ "rule": "closed" })), None);
    }
}
