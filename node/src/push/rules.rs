//! Push rules: the user's ruleset (account data `m.push_rules`) plus the node's alarm rules, and
//! the one evaluation that both `/sync` counts and the push worker use.
//!
//! The alarm rules are server-default rules (`default: true`, ids starting with `.`), so ruma
//! already refuses to delete them or to place a user rule relative to them. Where they sit
//! depends on the node policy's `[alarms] ring_in_muted_rooms` (default true):
//!
//! - **true**: first among the override rules, above `.m.rule.master` (do-not-disturb) and above
//!   any per-room mute (Element mutes a room with an override rule, or with a `dont_notify`
//!   room rule for "mentions only"), so a `critical` or `urgent` alarm always rings. The user
//!   may not disable them or change their actions (403 naming the policy rule).
//! - **false**: first among the server-default underride rules: an alarm rings where the room
//!   would otherwise only notify, but the user's own rules (mutes, keywords, do-not-disturb)
//!   win, and the user may disable the rules.
//!
//! The rules are never stored in the forced position: the stored ruleset keeps ruma's shape
//! (`.m.rule.master` first), so a user rule inserted "at the top" lands below master as ruma
//! intends, and a policy change applies at the next evaluation without rewriting account data.

use std::{collections::HashSet, sync::Arc};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    push::{
        Action, ConditionalPushRule, ConditionalPushRuleInit, EventMatchConditionData, EventPropertyIsConditionData,
        FlattenedJson, HighlightTweakValue, PushCondition, PushConditionPowerLevelsCtx, PushConditionRoomCtx, RuleKind,
        Ruleset, ScalarJsonValue, SoundTweakValue, Tweak,
    },
    serde::Raw,
};
use tocsin_events::{ALARM_KEY, AlarmLevel};

use crate::{
    Services,
    error::{Error, Result},
    rooms::Pdu,
};

/// Prefix of the node's own server-default rule ids.
pub const RULE_PREFIX: &str = ".org.tocsin.rule.alarm";
/// Silences edits of alarms (a correction or a cancellation must not ring again).
pub const EDIT_RULE: &str = ".org.tocsin.rule.alarm_edit";

/// The dotted path of the alarm level, dots in the key escaped (MSC3873, spec "dot-separated
/// property paths"): `org.tocsin.alarm` is one key.
pub fn level_path() -> String {
    format!("content.{}.level", ALARM_KEY.replace('\\', r"\\").replace('.', r"\."))
}

/// The id of the rule that rings alarms of `level`.
pub fn rule_id(level: AlarmLevel) -> String {
    format!("{RULE_PREFIX}_{level}")
}

fn is_ours(rule_id: &str) -> bool {
    rule_id.starts_with(RULE_PREFIX)
}

/// The ringing rules, one per level that rings, loudest first.
fn ring_rules() -> Vec<ConditionalPushRule> {
    AlarmLevel::ALL
        .iter()
        .filter(|(_, level)| level.rings())
        .map(|(keyword, level)| {
            ConditionalPushRuleInit {
                actions: vec![
                    Action::Notify,
                    Action::SetTweak(Tweak::Sound(SoundTweakValue::Default)),
                    Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes)),
                ],
                default: true,
                enabled: true,
                rule_id: rule_id(*level),
                // No event type condition: the block rings on whatever event carries it in the
                // clear (a message, or the cleartext content of an encrypted event).
                conditions: vec![PushCondition::EventPropertyIs(EventPropertyIsConditionData::new(
                    level_path(),
                    ScalarJsonValue::String((*keyword).to_owned()),
                ))],
            }
            .into()
        })
        .collect()
}

/// Edits (`m.replace`) of an alarm: no notification. Only needed in the forced position; below
/// it, `.m.rule.suppress_edits` already does this.
fn edit_rule() -> ConditionalPushRule {
    ConditionalPushRuleInit {
        actions: vec![],
        default: true,
        enabled: true,
        rule_id: EDIT_RULE.to_owned(),
        conditions: vec![
            PushCondition::EventPropertyIs(EventPropertyIsConditionData::new(
                r"content.m\.relates_to.rel_type".to_owned(),
                ScalarJsonValue::String("m.replace".to_owned()),
            )),
            PushCondition::EventMatch(EventMatchConditionData::new(level_path(), "*".to_owned())),
        ],
    }
    .into()
}

/// Whether the node policy makes alarms ring through mutes and do-not-disturb.
pub fn forced(services: &Services) -> bool {
    services.policy.policy().map(|p| p.alarms.ring_in_muted_rooms).unwrap_or(true)
}

/// The ruleset as stored for `user`, with the alarm rules among the underride rules (their
/// unforced place, which also keeps the user's enabled flag for them).
pub fn stored(services: &Services, user: &UserId) -> Result<Ruleset> {
    Ok(stored_or_default(services, user)?.0)
}

/// [`stored`], and whether the user has no rules of their own (the node's defaults).
fn stored_or_default(services: &Services, user: &UserId) -> Result<(Ruleset, bool)> {
    let saved = match services.users.account_data(user, None, "m.push_rules")? {
        Some(content) => match content.get("global") {
            Some(global) => Some(
                serde_json::from_value::<Ruleset>(global.clone())
                    .map_err(|e| Error::internal(format!("stored push rules of {user} are unreadable: {e}")))?,
            ),
            None => None,
        },
        None => None,
    };
    let default = saved.is_none();
    Ok((with_alarm_underrides(saved.unwrap_or_else(|| Ruleset::server_default(user))), default))
}

/// `rules` with the alarm rules first among the server-default underride rules.
fn with_alarm_underrides(mut rules: Ruleset) -> Ruleset {
    rules.override_.retain(|r| !is_ours(&r.rule_id));
    let mut ours = ring_rules();
    for rule in &mut ours {
        if let Some(prev) = rules.underride.get(rule.rule_id.as_str()) {
            rule.enabled = prev.enabled;
        }
    }
    let (user_rules, defaults): (Vec<_>, Vec<_>) =
        rules.underride.drain(..).filter(|r| !is_ours(&r.rule_id)).partition(|r| !r.default);
    // User rules first, then ours, then the spec's server defaults (`.m.rule.message` ...).
    rules.underride = user_rules.into_iter().chain(ours).chain(defaults).collect();
    rules
}

/// The ruleset evaluated and served for `user`: [`stored`], with the alarm rules moved above
/// everything when the policy forces them.
pub fn effective(services: &Services, user: &UserId) -> Result<Arc<Ruleset>> {
    Ok(effective_rules(services, user)?.rules)
}

/// A user's effective rules, and whether they are the node's defaults (the user never changed
/// a rule): default rulesets differ between users only by the user's own id.
#[derive(Clone)]
pub struct Effective {
    pub rules: Arc<Ruleset>,
    pub default: bool,
}

/// [`effective`], telling default rules apart.
pub fn effective_rules(services: &Services, user: &UserId) -> Result<Effective> {
    let forced = forced(services);
    if let Some(rules) = services.push.rules.get(user, forced) {
        return Ok(rules);
    }
    let (stored, default) = stored_or_default(services, user)?;
    let rules = Effective { rules: Arc::new(arrange(stored, forced)), default };
    services.push.rules.put(user, forced, rules.clone());
    Ok(rules)
}

/// Each user's effective rules, as last read, so a message to 5,000 members does not read
/// and parse 5,000 rulesets from account data for every sync and every push. An entry holds
/// for the policy's `forced` it was made with, and goes when the user's rules are written.
#[derive(Default)]
pub struct RulesCache {
    users: std::sync::Mutex<std::collections::HashMap<OwnedUserId, (bool, Effective)>>,
    /// Bumped whenever any user's rules are written: what was derived from the rules of many
    /// users (the push worker's audiences) is stale once it moves.
    generation: std::sync::atomic::AtomicU64,
}

impl RulesCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<OwnedUserId, (bool, Effective)>> {
        // Only cached copies inside: a panic elsewhere leaves nothing half-written.
        self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, user: &UserId, forced: bool) -> Option<Effective> {
        self.lock().get(user).filter(|(f, _)| *f == forced).map(|(_, rules)| rules.clone())
    }

    fn put(&self, user: &UserId, forced: bool, rules: Effective) {
        self.lock().insert(user.to_owned(), (forced, rules));
    }

    /// The user's rules changed: read them again next time.
    pub fn forget(&self, user: &UserId) {
        self.lock().remove(user);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Changes whenever any user's rules are written.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// What is written to account data: never the forced copies (their place follows the policy).
fn for_storage(mut rules: Ruleset) -> Ruleset {
    rules.override_.retain(|r| !is_ours(&r.rule_id));
    rules
}

fn arrange(mut rules: Ruleset, forced: bool) -> Ruleset {
    if forced {
        rules.underride.retain(|r| !is_ours(&r.rule_id));
        let rest: Vec<_> = rules.override_.drain(..).collect();
        rules.override_ = std::iter::once(edit_rule()).chain(ring_rules()).chain(rest).collect();
    }
    rules
}

pub async fn save(services: &Services, user: &UserId, rules: &Ruleset) -> Result<()> {
    let content = serde_json::json!({ "global": for_storage(rules.clone()) });
    let saved = services.users.set_account_data(user, None, "m.push_rules", &content).await;
    services.push.rules.forget(user);
    saved
}

/// Refuses a change to an alarm rule the policy forces.
pub fn check_change(services: &Services, kind: &RuleKind, rule_id: &str) -> Result<()> {
    let ours = is_ours(rule_id) && matches!(kind, RuleKind::Override | RuleKind::Underride);
    if ours && forced(services) {
        return Err(Error::forbidden(
            "refused by policy rule `alarms.ring_in_muted_rooms`: alarm push rules cannot be changed on this node",
        ));
    }
    Ok(())
}

/// What evaluating an event for one user needs about the room, gathered once per event.
pub struct RoomFacts {
    pub member_count: usize,
    pub power_levels: Option<PushConditionPowerLevelsCtx>,
}

impl RoomFacts {
    pub async fn load(services: &Services, room: &RoomId) -> Result<Self> {
        let member_count = services.rooms.member_summary(room).await?.joined;
        Self::with_member_count(services, room, member_count).await
    }

    /// For callers that counted the joined members already.
    pub async fn with_member_count(services: &Services, room: &RoomId, member_count: usize) -> Result<Self> {
        let head = services.rooms.head(room)?;
        let power_levels = Some(head.lock().await.power_levels().into());
        Ok(Self { member_count, power_levels })
    }
}

/// An event as push rules read it, made once and evaluated for every member it may notify: a
/// message in a 5,000-member room is flattened once, not 5,000 times.
pub struct RuleInput {
    event: FlattenedJson,
    sender: OwnedUserId,
    room_id: OwnedRoomId,
    /// Every string value in the event: a user whose id is not among them is not named by it.
    strings: HashSet<String>,
}

impl RuleInput {
    pub fn new(pdu: &Pdu) -> Option<Self> {
        let value = pdu.to_client_value(Default::default(), true);
        let raw = serde_json::value::to_raw_value(&value).ok()?;
        let raw: Raw<ruma::events::AnySyncTimelineEvent> = Raw::from_json(raw);
        let mut strings = HashSet::new();
        collect_strings(&value, &mut strings);
        Some(Self {
            event: FlattenedJson::from_raw(&raw),
            sender: pdu.sender.clone(),
            room_id: pdu.room_id.clone(),
            strings,
        })
    }

    /// Whether the event may name `user` (a mention, an invite): compared as whole values,
    /// as the rules' conditions compare them. An id that is itself a glob pattern counts as
    /// named, since `event_match` would read it as one.
    pub(super) fn names(&self, user: &UserId) -> bool {
        self.strings.contains(user.as_str()) || user.as_str().contains(['*', '?'])
    }

    /// Every string value in the event.
    pub(super) fn strings(&self) -> impl Iterator<Item = &String> {
        self.strings.iter()
    }

    pub(super) fn is_sender(&self, user: &UserId) -> bool {
        self.sender == user
    }
}

/// How many events' [`RuleInput`]s [`InputCache`] keeps: the events just sent.
const INPUTS_KEPT: usize = 1024;

/// Rule inputs of recent events, made once per event and shared by every evaluation of it: a
/// message into a 5,000-member room wakes 5,000 long-polls, and each one counting the room's
/// unread messages flattened the same event again. An event redacted after its input was made
/// keeps it until evicted; its notifications were decided on that content anyway.
#[derive(Default)]
pub struct InputCache {
    inner: std::sync::Mutex<std::collections::HashMap<ruma::OwnedEventId, Arc<RuleInput>>>,
}

impl InputCache {
    /// The input for `pdu`, made now unless an earlier evaluation made it; `None` when the
    /// event cannot be rendered.
    pub fn input(&self, pdu: &Pdu) -> Option<Arc<RuleInput>> {
        let lock = || self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(input) = lock().get(&pdu.event_id) {
            return Some(input.clone());
        }
        // Made outside the lock: two first evaluations at once may both make it.
        let input = Arc::new(RuleInput::new(pdu)?);
        let mut inner = lock();
        if inner.len() >= INPUTS_KEPT {
            inner.clear();
        }
        inner.insert(pdu.event_id.clone(), input.clone());
        Some(input)
    }
}

fn collect_strings(value: &serde_json::Value, out: &mut HashSet<String>) {
    match value {
        serde_json::Value::String(s) => {
            out.insert(s.clone());
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// One event's actions for many users, evaluated once for all the users on the default rules
/// whom the event does not name. Their rulesets differ only by the user's own id, which the
/// default rules use only to match mentions and invites; so a reaction in a 5,000-member room
/// walks the rules once per node, not once per member.
#[derive(Default)]
pub struct SharedActions {
    unnamed_default: Option<Vec<Action>>,
}

impl SharedActions {
    /// The actions for `user`, from the shared result when it applies. `display_name` is read
    /// only when the rules are evaluated for the user alone.
    pub async fn for_user(
        &mut self,
        rules: &Effective,
        user: &UserId,
        display_name: impl FnOnce() -> Result<String>,
        facts: &RoomFacts,
        input: &RuleInput,
    ) -> Result<Vec<Action>> {
        let shareable = rules.default && input.sender != user && !input.names(user);
        if shareable && let Some(actions) = &self.unnamed_default {
            return Ok(actions.clone());
        }
        let actions = actions(&rules.rules, user, &display_name()?, facts, input).await;
        if shareable {
            self.unnamed_default = Some(actions.clone());
        }
        Ok(actions)
    }
}

/// The actions `rules` give the event for `user`: the first rule that applies, in the spec's
/// order. A user's own events give none.
pub async fn actions(
    rules: &Ruleset,
    user: &UserId,
    display_name: &str,
    facts: &RoomFacts,
    input: &RuleInput,
) -> Vec<Action> {
    if input.sender == user {
        return Vec::new();
    }
    let mut ctx = PushConditionRoomCtx::new(
        input.room_id.clone(),
        UInt::try_from(facts.member_count).unwrap_or(UInt::MAX),
        OwnedUserId::from(user),
        display_name.to_owned(),
    );
    ctx.power_levels = facts.power_levels.clone();
    for rule in rules {
        if rule.applies(&input.event, &ctx).await {
            return rule.actions().to_vec();
        }
    }
    Vec::new()
}

/// Whether `actions` ask for a highlight.
pub fn highlights(actions: &[Action]) -> bool {
    actions.iter().any(Action::is_highlight)
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
