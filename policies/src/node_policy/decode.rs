//! Reading one node policy file into the model (schema checks only).

use super::{
    AccessRule, Account, AlarmLevel, AlarmPolicy, AlarmWebhook, Credential, ExternalUsers, HistoryVisibility,
    NodePolicy, NodeSettings, Role, Room, RoomDefaults, RoomKind,
};
use crate::decode::{Obj, Reader};
use crate::time::parse_duration;

/// Decodes what it can; problems go to `r.diags`. Sections that are absent keep their
/// defaults (and an origin without position, meaning "not defined in this file").
pub(super) fn decode(r: &mut Reader<'_>, root: &mut Obj<'_, '_>) -> NodePolicy {
    let mut policy = NodePolicy::default();

    if let Some(mut t) = root.opt_table(r, "node") {
        let server_name = t.opt_str(r, "server_name");
        policy.node = NodeSettings { server_name, origin: t.finish(r) };
    }

    for mut t in root.tables(r, "role") {
        let name = t.req_str(r, "name");
        let power_level = t.req_int(r, "power_level", 0, 100);
        let may_send_alarms = t.opt_bool(r, "may_send_alarms").unwrap_or(false);
        let alarm_levels = t
            .opt_keyword_list::<AlarmLevel>(r, "alarm_levels")
            .unwrap_or_else(|| AlarmLevel::ALL.iter().map(|(_, l)| *l).collect());
        let escalation_room = t.opt_str(r, "escalation_room");
        let origin = t.finish(r);
        if let (Some(name), Some(power_level)) = (name, power_level) {
            policy.roles.push(Role { name, power_level, may_send_alarms, alarm_levels, escalation_room, origin });
        }
    }

    for mut t in root.tables(r, "account") {
        let localpart = t.req_str(r, "localpart");
        let display_name = t.opt_str(r, "display_name");
        let roles = t.opt_str_list(r, "roles").unwrap_or_default();
        let password = t.opt_str(r, "password");
        let password_hash = t.opt_str(r, "password_hash");
        let admin = t.opt_bool(r, "admin").unwrap_or(false);
        let bot = t.opt_bool(r, "bot").unwrap_or(false);
        let credential = match (password, password_hash) {
            (Some(_), Some(_)) => {
                let message = "give either password or password_hash, not both".to_string();
                r.error(&t.span_of("password"), &t.field_path("password"), message);
                None
            }
            (Some(p), None) => Some(Credential::Password(p)),
            (None, Some(h)) => Some(Credential::PasswordHash(h)),
            (None, None) => None,
        };
        let origin = t.finish(r);
        if let Some(localpart) = localpart {
            policy.accounts.push(Account { localpart, display_name, roles, credential, admin, bot, origin });
        }
    }

    for mut t in root.tables(r, "room") {
        let alias = t.req_str(r, "alias");
        let name = t.req_str(r, "name");
        let topic = t.opt_str(r, "topic");
        let kind = t.opt_keyword::<RoomKind>(r, "kind").unwrap_or(RoomKind::Room);
        let members_by_role = t.opt_str_list(r, "members_by_role").unwrap_or_default();
        let members = t.opt_str_list(r, "members").unwrap_or_default();
        let remote_members = t.opt_str_list(r, "remote_members").unwrap_or_default();
        let shared_with = t.opt_str_list(r, "shared_with").unwrap_or_default();
        let access_rule = t.opt_keyword::<AccessRule>(r, "access_rule");
        let encrypted = t.opt_bool(r, "encrypted");
        let history_visibility = t.opt_keyword::<HistoryVisibility>(r, "history_visibility");
        let parent = t.opt_str(r, "parent");
        let escalation_room = t.opt_str(r, "escalation_room");
        let origin = t.finish(r);
        if let (Some(alias), Some(name)) = (alias, name) {
            policy.rooms.push(Room {
                alias,
                name,
                topic,
                kind,
                members_by_role,
                members,
                remote_members,
                shared_with,
                access_rule,
                encrypted,
                history_visibility,
                parent,
                escalation_room,
                origin,
            });
        }
    }

    if let Some(mut t) = root.opt_table(r, "room_defaults") {
        let d = RoomDefaults::default();
        let encryption = t.opt_bool(r, "encryption").unwrap_or(d.encryption);
        let history_visibility = t.opt_keyword(r, "history_visibility").unwrap_or(d.history_visibility);
        let guest_access = t.opt_bool(r, "guest_access").unwrap_or(d.guest_access);
        let access_rule = t.opt_keyword(r, "access_rule").unwrap_or(d.access_rule);
        let retention_max_age = duration(r, &mut t, "retention_max_age");
        policy.room_defaults = RoomDefaults {
            encryption,
            history_visibility,
            guest_access,
            access_rule,
            retention_max_age,
            origin: t.finish(r),
        };
    }

    if let Some(mut t) = root.opt_table(r, "alarms") {
        let d = AlarmPolicy::default();
        let senders = t.opt_str_list(r, "senders").unwrap_or_default();
        let ack_deadline = duration(r, &mut t, "ack_deadline");
        let escalation_room = t.opt_str(r, "escalation_room");
        let ring_in_muted_rooms = t.opt_bool(r, "ring_in_muted_rooms").unwrap_or(d.ring_in_muted_rooms);
        let escalate_after = duration(r, &mut t, "escalate_after");
        let mut webhooks = Vec::new();
        for mut w in t.tables(r, "webhook") {
            let url = w.req_str(r, "url");
            let secret = w.req_str(r, "secret");
            let origin = w.finish(r);
            if let (Some(url), Some(secret)) = (url, secret) {
                webhooks.push(AlarmWebhook { url, secret, origin });
            }
        }
        policy.alarms = AlarmPolicy {
            senders,
            ack_deadline,
            escalation_room,
            escalate_after,
            webhooks,
            ring_in_muted_rooms,
            origin: t.finish(r),
        };
    }

    if let Some(mut t) = root.opt_table(r, "external_users") {
        let allowed = t.opt_bool(r, "allowed").unwrap_or(false);
        let may_invite = t.opt_bool(r, "may_invite").unwrap_or(false);
        let max_per_room = t.opt_int(r, "max_per_room", 0, i64::from(u32::MAX)).and_then(|n| u32::try_from(n).ok());
        policy.external_users = ExternalUsers { allowed, may_invite, max_per_room, origin: t.finish(r) };
    }

    policy.bridge = super::bridge::decode(r, root);

    policy
}

fn duration(r: &mut Reader<'_>, t: &mut Obj<'_, '_>, key: &'static str) -> Option<u64> {
    let text = t.opt_str(r, key)?;
    match parse_duration(&text) {
        Ok(secs) => Some(secs),
        Err(e) => {
            r.error(&t.span_of(key), &t.field_path(key), e.to_string());
            None
        }
    }
}
