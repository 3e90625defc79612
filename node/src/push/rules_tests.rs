use ruma::{
    owned_room_id, owned_user_id,
    push::{NewConditionalPushRule, NewPushRule, NewSimplePushRule, PushConditionRoomCtx},
    serde::Raw,
};
use serde_json::json;

use super::*;

fn event(content: serde_json::Value) -> Raw<ruma::events::AnySyncTimelineEvent> {
    let value = json!({
        "type": "m.room.message",
        "event_id": "$e",
        "sender": "@alice:node",
        "origin_server_ts": 1,
        "room_id": "!room:node",
        "content": content,
    });
    Raw::from_json(serde_json::value::to_raw_value(&value).unwrap())
}

fn alarm(level: &str) -> Raw<ruma::events::AnySyncTimelineEvent> {
    event(json!({"msgtype": "m.text", "body": "ALARM", "org.tocsin.alarm": {"id": "a", "level": level}}))
}

/// Bob's rules as Element leaves them after muting `!room:node` (an override rule without
/// actions) and setting do-not-disturb (`.m.rule.master` enabled).
fn bob_muted(dnd: bool) -> Ruleset {
    let bob = owned_user_id!("@bob:node");
    let mut rules = with_alarm_underrides(Ruleset::server_default(&bob));
    let mute = NewConditionalPushRule::new(
        "!room:node".to_owned(),
        vec![PushCondition::EventMatch(EventMatchConditionData::new("room_id".to_owned(), "!room:node".to_owned()))],
        vec![],
    );
    rules.insert(NewPushRule::Override(mute), None, None).unwrap();
    // "Mentions and keywords" in another form: a room rule that does not notify.
    let quiet = NewSimplePushRule::new(owned_room_id!("!room:node"), vec![]);
    rules.insert(NewPushRule::Room(quiet), None, None).unwrap();
    rules.set_enabled(RuleKind::Override, ".m.rule.master", dnd).unwrap();
    rules
}

async fn actions_for(rules: &Ruleset, event: &Raw<ruma::events::AnySyncTimelineEvent>) -> Vec<Action> {
    let ctx = PushConditionRoomCtx::new(
        owned_room_id!("!room:node"),
        UInt::from(5u32),
        owned_user_id!("@bob:node"),
        "Bob".to_owned(),
    );
    rules.get_actions(event, &ctx).await.to_vec()
}

#[test]
fn the_level_path_escapes_the_dots_of_the_block_key() {
    assert_eq!(level_path(), r"content.org\.tocsin\.alarm.level");
}

#[tokio::test]
async fn forced_alarm_rules_ring_through_mutes_and_do_not_disturb() {
    for dnd in [false, true] {
        let rules = arrange(bob_muted(dnd), true);
        let first: Vec<&str> = rules.override_.iter().take(4).map(|r| r.rule_id.as_str()).collect();
        assert_eq!(
            first,
            [EDIT_RULE, ".org.tocsin.rule.alarm_critical", ".org.tocsin.rule.alarm_urgent", ".m.rule.master"]
        );
        for level in ["critical", "urgent"] {
            let actions = actions_for(&rules, &alarm(level)).await;
            assert!(actions.iter().any(Action::should_notify), "{level} notifies (dnd {dnd})");
            assert!(highlights(&actions) && actions.iter().any(|a| a.sound().is_some()), "{level}: {actions:?}");
        }
        assert!(actions_for(&rules, &alarm("info")).await.is_empty(), "info follows the mute");
        let plain = event(json!({"msgtype": "m.text", "body": "chatter"}));
        assert!(actions_for(&rules, &plain).await.is_empty());
        let edit = event(json!({
            "msgtype": "m.text", "body": "* ALARM",
            "org.tocsin.alarm": {"id": "a", "level": "critical", "cancelled": true},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$a"},
        }));
        assert!(actions_for(&rules, &edit).await.is_empty(), "an edit of an alarm does not ring again");
    }
}

#[tokio::test]
async fn unforced_alarm_rules_yield_to_mutes_but_ring_in_ordinary_rooms() {
    let rules = arrange(bob_muted(false), false);
    assert!(actions_for(&rules, &alarm("critical")).await.is_empty(), "the mute wins");
    let bob = owned_user_id!("@bob:node");
    let plain = arrange(with_alarm_underrides(Ruleset::server_default(&bob)), false);
    let actions = actions_for(&plain, &alarm("urgent")).await;
    assert!(highlights(&actions), "an urgent alarm highlights where the room is not muted: {actions:?}");
    let message = actions_for(&plain, &event(json!({"msgtype": "m.text", "body": "hi"}))).await;
    assert!(message.iter().any(Action::should_notify) && !highlights(&message));
}

#[test]
fn the_stored_ruleset_keeps_the_users_enabled_flag_and_no_forced_rules() {
    let bob = owned_user_id!("@bob:node");
    let mut rules = with_alarm_underrides(Ruleset::server_default(&bob));
    rules.set_enabled(RuleKind::Underride, ".org.tocsin.rule.alarm_urgent", false).unwrap();
    let json = serde_json::to_value(for_storage(rules.clone())).unwrap();
    let again = with_alarm_underrides(serde_json::from_value(json).unwrap());
    assert!(!again.underride.get(".org.tocsin.rule.alarm_urgent").unwrap().enabled, "the user's choice is kept");
    let forced = for_storage(arrange(rules, true));
    assert_eq!(forced.override_.iter().filter(|r| is_ours(&r.rule_id)).count(), 0, "forced copies are not stored");
}
