//! Push rules (`/pushrules/...`), notifications (`/notifications`) and pushers (`/pushers`).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, Path, Query};
use crate::error::{Error, Result};
use crate::service::push::{pushers, rules};

/// The JSON name of a rule kind in a serialized rule set.
fn kind_name(kind: &ruma::push::RuleKind) -> &'static str {
    match kind {
        ruma::push::RuleKind::Override => "override",
        ruma::push::RuleKind::Underride => "underride",
        ruma::push::RuleKind::Sender => "sender",
        ruma::push::RuleKind::Room => "room",
        _ => "content",
    }
}

/// `GET /pushrules/`: every rule, under `global`.
pub async fn get_all(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    Ok(Json(state.push_rules_content(&auth.user_id)?))
}

/// `GET /pushrules/global/`: the rule set itself.
pub async fn get_global(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    Ok(Json(serde_json::to_value(
        &*state.push_rules(&auth.user_id)?,
    )?))
}

/// One rule as JSON, or `M_NOT_FOUND`.
fn find_rule(state: &AppState, user: &ruma::UserId, kind: &str, rule_id: &str) -> Result<Value> {
    let kind = rules::parse_kind(kind)?;
    let all = serde_json::to_value(&*state.push_rules(user)?)?;
    all.get(kind_name(&kind))
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find(|r| r["rule_id"] == rule_id))
        .cloned()
        .ok_or_else(|| Error::NotFound("no such push rule".into()))
}

pub async fn get_rule(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    Ok(Json(find_rule(&state, &auth.user_id, &kind, &rule_id)?))
}

#[derive(Deserialize)]
pub struct Placement {
    before: Option<String>,
    after: Option<String>,
}

/// `PUT /pushrules/global/{kind}/{ruleId}`: adds or replaces a user rule.
pub async fn put_rule(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
    Query(placement): Query<Placement>,
    JsonBody(_, body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let kind = rules::parse_kind(&kind)?;
    if rule_id.is_empty()
        || rule_id.len() > crate::core::MAX_ID_BYTES
        || rule_id.chars().any(char::is_control)
    {
        return Err(Error::InvalidParam(format!(
            "rule IDs have 1 to {} bytes and no control characters",
            crate::core::MAX_ID_BYTES
        )));
    }
    let rule = rules::new_rule(&kind, &rule_id, &body)?;
    state
        .change_push_rules(&auth.user_id, |ruleset| {
            ruleset
                .insert(
                    rule.clone(),
                    placement.after.as_deref(),
                    placement.before.as_deref(),
                )
                .map_err(rules::insert_error)
        })
        .await?;
    Ok(Json(json!({})))
}

/// `DELETE /pushrules/global/{kind}/{ruleId}`: removes a user rule.
pub async fn delete_rule(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let kind = rules::parse_kind(&kind)?;
    state
        .change_push_rules(&auth.user_id, |ruleset| {
            ruleset
                .remove(kind.clone(), &rule_id)
                .map_err(rules::remove_error)
        })
        .await?;
    Ok(Json(json!({})))
}

pub async fn get_enabled(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let rule = find_rule(&state, &auth.user_id, &kind, &rule_id)?;
    Ok(Json(json!({ "enabled": rule["enabled"] })))
}

pub async fn put_enabled(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
    JsonBody(_, body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let kind = rules::parse_kind(&kind)?;
    let enabled = match body.get("enabled") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Error::BadJson("enabled must be a boolean".into())),
        None => return Err(Error::MissingParam("enabled is required".into())),
    };
    state
        .change_push_rules(&auth.user_id, |ruleset| {
            ruleset
                .set_enabled(kind.clone(), &rule_id, enabled)
                .map_err(|_| Error::NotFound("no such push rule".into()))
        })
        .await?;
    Ok(Json(json!({})))
}

pub async fn get_actions(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let rule = find_rule(&state, &auth.user_id, &kind, &rule_id)?;
    Ok(Json(json!({ "actions": rule["actions"] })))
}

pub async fn put_actions(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((kind, rule_id)): Path<(String, String)>,
    JsonBody(_, body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let kind = rules::parse_kind(&kind)?;
    let actions = rules::parse_actions(
        body.get("actions")
            .ok_or_else(|| Error::MissingParam("actions is required".into()))?,
    )?;
    state
        .change_push_rules(&auth.user_id, |ruleset| {
            ruleset
                .set_actions(kind.clone(), &rule_id, actions.clone())
                .map_err(|_| Error::NotFound("no such push rule".into()))
        })
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct NotificationsQuery {
    from: Option<String>,
    limit: Option<usize>,
    only: Option<String>,
}

/// The most notifications one page holds.
const MAX_NOTIFICATIONS_PAGE: usize = 100;
/// A page when the client names no limit.
const DEFAULT_NOTIFICATIONS_PAGE: usize = 20;

/// `GET /notifications`: what the user was notified about, newest first.
pub async fn notifications(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Query(query): Query<NotificationsQuery>,
) -> Result<Json<Value>> {
    let from = match query.from.as_deref() {
        None => None,
        Some(raw) => Some(
            raw.parse::<u64>()
                .map_err(|_| Error::InvalidParam("from is not a token from this server".into()))?,
        ),
    };
    let limit = query
        .limit
        .unwrap_or(DEFAULT_NOTIFICATIONS_PAGE)
        .clamp(1, MAX_NOTIFICATIONS_PAGE);
    let only_highlight = match query.only.as_deref() {
        None => false,
        Some("highlight") => true,
        Some(other) => {
            return Err(Error::InvalidParam(format!(
                "only must be \"highlight\", not {other:?}"
            )));
        }
    };
    // What was sent before this request is listed.
    state
        .push
        .wait_evaluated(state.store.sequencer().upto())
        .await;
    let (list, next) = state.list_notifications(
        &auth.user_id,
        auth.device_id.as_str(),
        from,
        limit,
        only_highlight,
    )?;
    let mut body = json!({ "notifications": list });
    if let Some(next) = next {
        body["next_token"] = json!(next.to_string());
    }
    Ok(Json(body))
}

/// `GET /pushers`.
pub async fn get_pushers(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    Ok(Json(json!({ "pushers": state.pushers(&auth.user_id)? })))
}

/// `POST /pushers/set`: adds, replaces or (with `kind: null`) deletes a pusher.
pub async fn set_pusher(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(_, body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let change = pushers::parse_change(&body, state.config.push.allow_private_addresses)?;
    state
        .change_pusher(&auth.user_id, &auth.device_id, change)
        .await?;
    Ok(Json(json!({})))
}
