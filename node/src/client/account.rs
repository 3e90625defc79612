//! Per-user settings: profile, account data, filters, push rules and the user directory.

use std::sync::Arc;

use ruma::{
    UserId,
    api::client::{
        config::{get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data},
        filter::{create_filter, get_filter},
        profile::{delete_profile_field, get_profile, get_profile_field, set_profile_field},
        push::{
            delete_pushrule, get_pushers, get_pushrule, get_pushrule_actions, get_pushrule_enabled, get_pushrules_all,
            get_pushrules_global_scope, set_pusher, set_pushrule, set_pushrule_actions, set_pushrule_enabled,
        },
        user_directory::search_users,
    },
    profile::{ProfileFieldName, ProfileFieldValue},
    push::Ruleset,
};
use serde_json::Value;

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    sync::assemble::raw,
};

fn not_found_or_forbidden(s: &Services, user: &UserId) -> Result<crate::users::Account> {
    s.users.account(user)?.ok_or_else(|| Error::not_found("no such user on this node"))
}

pub async fn profile(s: Arc<Services>, req: Ruma<get_profile::v3::Request>) -> Result<get_profile::v3::Response> {
    let account = not_found_or_forbidden(&s, &req.user_id)?;
    let mut response = get_profile::v3::Response::new();
    if let Some(name) = account.displayname {
        response.set("displayname".into(), Value::String(name));
    }
    if let Some(avatar) = account.avatar_url {
        response.set("avatar_url".into(), Value::String(avatar));
    }
    Ok(response)
}

pub async fn profile_field(
    s: Arc<Services>,
    req: Ruma<get_profile_field::v3::Request>,
) -> Result<get_profile_field::v3::Response> {
    let account = not_found_or_forbidden(&s, &req.user_id)?;
    let value = match req.field {
        ProfileFieldName::DisplayName => account.displayname.map(ProfileFieldValue::DisplayName),
        ProfileFieldName::AvatarUrl => account.avatar_url.map(|a| ProfileFieldValue::AvatarUrl(a.into())),
        _ => None,
    };
    let value = value.ok_or_else(|| Error::not_found("profile field not set"))?;
    Ok(get_profile_field::v3::Response::new(value))
}

async fn update_profile(
    s: &Services,
    user: &UserId,
    displayname: Option<Option<String>>,
    avatar: Option<Option<String>>,
) -> Result<()> {
    let mut account = not_found_or_forbidden(s, user)?;
    if let Some(name) = displayname {
        account.displayname = name;
    }
    if let Some(avatar) = avatar {
        account.avatar_url = avatar;
    }
    s.users.put_account(user, &account).await?;
    // Joined rooms show the new profile through a fresh member event.
    let profile = (account.displayname.clone(), account.avatar_url.clone());
    for (room_id, user_room) in s.rooms.user_rooms(user)? {
        if user_room.membership == "join" {
            s.rooms.set_membership(&room_id, user, user, "join", profile.clone(), None).await?;
        }
    }
    Ok(())
}

pub async fn set_field(
    s: Arc<Services>,
    req: Ruma<set_profile_field::v3::Request>,
) -> Result<set_profile_field::v3::Response> {
    let auth = req.user()?;
    if auth.user_id != req.user_id {
        return Err(Error::forbidden("you can only change your own profile"));
    }
    match &req.value {
        ProfileFieldValue::DisplayName(name) => {
            update_profile(&s, &auth.user_id, Some(Some(name.clone())), None).await?
        }
        ProfileFieldValue::AvatarUrl(url) => {
            update_profile(&s, &auth.user_id, None, Some(Some(url.to_string()))).await?
        }
        _ => return Err(Error::invalid_param("only displayname and avatar_url are supported")),
    }
    Ok(set_profile_field::v3::Response::new())
}

pub async fn delete_field(
    s: Arc<Services>,
    req: Ruma<delete_profile_field::v3::Request>,
) -> Result<delete_profile_field::v3::Response> {
    let auth = req.user()?;
    if auth.user_id != req.user_id {
        return Err(Error::forbidden("you can only change your own profile"));
    }
    match req.field {
        ProfileFieldName::DisplayName => update_profile(&s, &auth.user_id, Some(None), None).await?,
        ProfileFieldName::AvatarUrl => update_profile(&s, &auth.user_id, None, Some(None)).await?,
        _ => {}
    }
    Ok(delete_profile_field::v3::Response::new())
}

pub(super) fn own(auth: &crate::http::Auth, user: &UserId) -> Result<()> {
    if auth.user_id != user {
        return Err(Error::forbidden("you can only access your own account data"));
    }
    Ok(())
}

fn json_of<T>(raw: &ruma::serde::Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get()).map_err(Error::bad_json)
}

/// Account data content: the spec makes it a JSON object, and clients read it back as one.
fn content_of<T>(raw: &ruma::serde::Raw<T>) -> Result<Value> {
    let value = json_of(raw)?;
    if !value.is_object() {
        return Err(Error::bad_json("account data content must be a JSON object"));
    }
    Ok(value)
}

pub async fn get_global(
    s: Arc<Services>,
    req: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response> {
    own(req.user()?, &req.user_id)?;
    let content = s
        .users
        .account_data(&req.user_id, None, &req.event_type.to_string())?
        .ok_or_else(|| Error::not_found("no such account data"))?;
    Ok(get_global_account_data::v3::Response::new(raw(&content)?))
}

pub async fn set_global(
    s: Arc<Services>,
    req: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response> {
    own(req.user()?, &req.user_id)?;
    let kind = req.event_type.to_string();
    s.users.set_account_data(&req.user_id, None, &kind, &content_of(&req.data)?).await?;
    if kind == "m.push_rules" {
        s.push.rules.forget(&req.user_id);
    }
    Ok(set_global_account_data::v3::Response::new())
}

pub async fn get_room(
    s: Arc<Services>,
    req: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response> {
    own(req.user()?, &req.user_id)?;
    let content = s
        .users
        .account_data(&req.user_id, Some(&req.room_id), &req.event_type.to_string())?
        .ok_or_else(|| Error::not_found("no such account data"))?;
    Ok(get_room_account_data::v3::Response::new(raw(&content)?))
}

pub async fn set_room(
    s: Arc<Services>,
    req: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response> {
    own(req.user()?, &req.user_id)?;
    s.users
        .set_account_data(&req.user_id, Some(&req.room_id), &req.event_type.to_string(), &content_of(&req.data)?)
        .await?;
    Ok(set_room_account_data::v3::Response::new())
}

pub async fn create_filter(
    s: Arc<Services>,
    req: Ruma<create_filter::v3::Request>,
) -> Result<create_filter::v3::Response> {
    own(req.user()?, &req.user_id)?;
    Ok(create_filter::v3::Response::new(s.users.create_filter(&req.user_id, &req.filter).await?))
}

pub async fn get_filter(s: Arc<Services>, req: Ruma<get_filter::v3::Request>) -> Result<get_filter::v3::Response> {
    own(req.user()?, &req.user_id)?;
    let filter = s.users.filter(&req.user_id, &req.filter_id)?.ok_or_else(|| Error::not_found("no such filter"))?;
    Ok(get_filter::v3::Response::new(filter))
}

fn rules_of(s: &Services, user: &UserId) -> Result<Ruleset> {
    Ok((*crate::push::rules::effective(s, user)?).clone())
}

/// The ruleset a change applies to: the stored one, so a new rule lands where ruma puts it
/// (below `.m.rule.master`), not below the node's forced alarm rules.
fn stored_rules(s: &Services, user: &UserId) -> Result<Ruleset> {
    crate::push::rules::stored(s, user)
}

async fn save_rules(s: &Services, user: &UserId, rules: &Ruleset) -> Result<()> {
    crate::push::rules::save(s, user, rules).await
}

/// `GET /pushrules/global/`: the same rules, without the `global` wrapper.
pub async fn pushrules_global(
    s: Arc<Services>,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> Result<get_pushrules_global_scope::v3::Response> {
    let auth = req.user()?;
    Ok(get_pushrules_global_scope::v3::Response::new(rules_of(&s, &auth.user_id)?))
}

pub async fn pushrules_all(
    s: Arc<Services>,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> Result<get_pushrules_all::v3::Response> {
    let auth = req.user()?;
    Ok(get_pushrules_all::v3::Response::new(rules_of(&s, &auth.user_id)?))
}

pub async fn pushrule(s: Arc<Services>, req: Ruma<get_pushrule::v3::Request>) -> Result<get_pushrule::v3::Response> {
    let auth = req.user()?;
    let rules = rules_of(&s, &auth.user_id)?;
    let rule = rules.get(req.kind.clone(), &req.rule_id).ok_or_else(|| Error::not_found("no such push rule"))?;
    Ok(get_pushrule::v3::Response::new(rule.into()))
}

pub async fn set_pushrule(
    s: Arc<Services>,
    req: Ruma<set_pushrule::v3::Request>,
) -> Result<set_pushrule::v3::Response> {
    let auth = req.user()?;
    let mut rules = stored_rules(&s, &auth.user_id)?;
    rules
        .insert(req.rule.clone(), req.after.as_deref(), req.before.as_deref())
        .map_err(|e| Error::BadJson(e.to_string()))?;
    save_rules(&s, &auth.user_id, &rules).await?;
    Ok(set_pushrule::v3::Response::new())
}

pub async fn delete_pushrule(
    s: Arc<Services>,
    req: Ruma<delete_pushrule::v3::Request>,
) -> Result<delete_pushrule::v3::Response> {
    let auth = req.user()?;
    let mut rules = stored_rules(&s, &auth.user_id)?;
    rules.remove(req.kind.clone(), &req.rule_id).map_err(|e| Error::NotFound(e.to_string()))?;
    save_rules(&s, &auth.user_id, &rules).await?;
    Ok(delete_pushrule::v3::Response::new())
}

pub async fn pushrule_enabled(
    s: Arc<Services>,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> Result<get_pushrule_enabled::v3::Response> {
    let auth = req.user()?;
    let rules = rules_of(&s, &auth.user_id)?;
    let rule = rules.get(req.kind.clone(), &req.rule_id).ok_or_else(|| Error::not_found("no such push rule"))?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled()))
}

pub async fn set_pushrule_enabled(
    s: Arc<Services>,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> Result<set_pushrule_enabled::v3::Response> {
    let auth = req.user()?;
    crate::push::rules::check_change(&s, &req.kind, &req.rule_id)?;
    let mut rules = stored_rules(&s, &auth.user_id)?;
    rules.set_enabled(req.kind.clone(), &req.rule_id, req.enabled).map_err(|e| Error::NotFound(e.to_string()))?;
    save_rules(&s, &auth.user_id, &rules).await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

pub async fn pushrule_actions(
    s: Arc<Services>,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> Result<get_pushrule_actions::v3::Response> {
    let auth = req.user()?;
    let rules = rules_of(&s, &auth.user_id)?;
    let rule = rules.get(req.kind.clone(), &req.rule_id).ok_or_else(|| Error::not_found("no such push rule"))?;
    Ok(get_pushrule_actions::v3::Response::new(rule.actions().to_vec()))
}

pub async fn set_pushrule_actions(
    s: Arc<Services>,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> Result<set_pushrule_actions::v3::Response> {
    let auth = req.user()?;
    crate::push::rules::check_change(&s, &req.kind, &req.rule_id)?;
    let mut rules = stored_rules(&s, &auth.user_id)?;
    rules
        .set_actions(req.kind.clone(), &req.rule_id, req.actions.clone())
        .map_err(|e| Error::NotFound(e.to_string()))?;
    save_rules(&s, &auth.user_id, &rules).await?;
    Ok(set_pushrule_actions::v3::Response::new())
}

pub async fn pushers(s: Arc<Services>, req: Ruma<get_pushers::v3::Request>) -> Result<get_pushers::v3::Response> {
    let auth = req.user()?;
    let list = crate::push::pushers::list(&s.db, &auth.user_id)?;
    Ok(get_pushers::v3::Response::new(list.into_iter().map(|p| p.pusher).collect()))
}

pub async fn set_pusher(s: Arc<Services>, req: Ruma<set_pusher::v3::Request>) -> Result<set_pusher::v3::Response> {
    let auth = req.user()?;
    match &req.action {
        set_pusher::v3::PusherAction::Post(post) => {
            s.push.check_url(&post.pusher)?;
            crate::push::pushers::set(&s.db, &auth.user_id, post.pusher.clone(), post.append).await?
        }
        set_pusher::v3::PusherAction::Delete(ids) => crate::push::pushers::remove(&s.db, &auth.user_id, ids).await?,
        _ => return Err(Error::invalid_param("unknown pusher action")),
    }
    Ok(set_pusher::v3::Response::new())
}

pub async fn search_users(
    s: Arc<Services>,
    req: Ruma<search_users::v3::Request>,
) -> Result<search_users::v3::Response> {
    req.user()?;
    let limit = usize::try_from(u64::from(req.limit)).unwrap_or(10).clamp(1, 100);
    let (found, limited) = s.users.search(&req.search_term, limit)?;
    let mut results = Vec::new();
    for (user_id, account) in found {
        let mut user = search_users::v3::User::new(user_id);
        user.display_name = account.displayname;
        user.avatar_url = account.avatar_url.map(Into::into);
        results.push(user);
    }
    let response = search_users::v3::Response::new(results, limited);
    Ok(response)
}

/// `POST /user/{userId}/openid/request_token`: a short-lived token a third party can check with
/// this node over federation.
pub async fn openid_token(
    s: Arc<Services>,
    req: Ruma<ruma::api::client::account::request_openid_token::v3::Request>,
) -> Result<ruma::api::client::account::request_openid_token::v3::Response> {
    let auth = req.user()?;
    if auth.user_id != req.user_id {
        return Err(Error::forbidden("a token can only be requested for yourself"));
    }
    let token = s.users.issue_openid_token(&auth.user_id).await?;
    Ok(ruma::api::client::account::request_openid_token::v3::Response::new(
        token,
        ruma::authentication::TokenType::Bearer,
        s.server_name.clone(),
        crate::users::OPENID_VALIDITY,
    ))
}

/// `GET /account/3pid`: always empty. Tocsin binds no e-mail addresses or phone numbers to
/// accounts (they come from the node policy), and `/capabilities` says `m.3pid_changes` is off.
pub async fn threepids(
    _: Arc<Services>,
    req: Ruma<ruma::api::client::account::get_3pids::v3::Request>,
) -> Result<ruma::api::client::account::get_3pids::v3::Response> {
    req.user()?;
    Ok(ruma::api::client::account::get_3pids::v3::Response::new(Vec::new()))
}
