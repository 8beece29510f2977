//! Each user's push rules: the specification's server-default rules (with the legacy mention
//! rules clients still rely on) plus the user's own, stored as the global account data type
//! `m.push_rules` (`{"global": ruleset}`) so that clients also receive them through `/sync`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ruma::push::{
    Action, ConditionalPushRule, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule,
    NewPushRule, NewSimplePushRule, PatternedPushRule, PushCondition, RemovePushRuleError,
    RuleKind, Ruleset,
};
use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::service::Services;

/// The global account data type that holds a user's push rules.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";
/// The largest rule set stored, serialized (the defaults take about 6 KiB).
const MAX_RULES_BYTES: usize = 262_144;
/// Rule sets kept decoded in memory; the cache starts over beyond that.
const CACHE_ENTRIES: usize = 50_000;

/// Decoded rule sets by user, dropped whenever the user changes a rule.
#[derive(Default)]
pub struct RulesCache {
    by_user: Mutex<HashMap<OwnedUserId, Arc<Ruleset>>>,
}

impl RulesCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedUserId, Arc<Ruleset>>> {
        // Only a cache: nothing in it can be left half-updated.
        self.by_user.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server-default rules for `user`: the specification's current set, and the legacy
/// display-name, `@room` and user-name mention rules that the specification deprecated but that
/// clients without intentional mentions still depend on (they stand down for events that carry
/// `m.mentions`).
pub fn server_default(user: &UserId) -> Ruleset {
    let mut rules = Ruleset::server_default(user);
    let legacy = [
        (
            ".m.rule.is_user_mention",
            json!({
                "rule_id": ".m.rule.contains_display_name",
                "default": true,
                "enabled": true,
                "conditions": [{ "kind": "contains_display_name" }],
                "actions": ["notify", { "set_tweak": "sound", "value": "default" }, { "set_tweak": "highlight" }],
            }),
        ),
        (
            ".m.rule.is_room_mention",
            json!({
                "rule_id": ".m.rule.roomnotif",
                "default": true,
                "enabled": true,
                "conditions": [
                    { "kind": "event_match", "key": "content.body", "pattern": "@room" },
                    { "kind": "sender_notification_permission", "key": "room" },
                ],
                "actions": ["notify", { "set_tweak": "highlight" }],
            }),
        ),
    ];
    for (after, rule) in legacy {
        if let Ok(rule) = serde_json::from_value::<ConditionalPushRule>(rule) {
            let at = rules
                .override_
                .get_index_of(after)
                .map_or(rules.override_.len(), |i| i + 1);
            rules.override_.shift_insert(at, rule);
        }
    }
    if let Ok(rule) = serde_json::from_value::<PatternedPushRule>(json!({
        "rule_id": ".m.rule.contains_user_name",
        "default": true,
        "enabled": true,
        "pattern": user.localpart(),
        "actions": ["notify", { "set_tweak": "sound", "value": "default" }, { "set_tweak": "highlight" }],
    })) {
        rules.content.insert(rule);
    }
    rules
}

/// Parses the `kind` path segment of the push rules API.
pub fn parse_kind(raw: &str) -> Result<RuleKind> {
    match raw {
        "override" => Ok(RuleKind::Override),
        "underride" => Ok(RuleKind::Underride),
        "sender" => Ok(RuleKind::Sender),
        "room" => Ok(RuleKind::Room),
        "content" => Ok(RuleKind::Content),
        _ => Err(Error::InvalidParam(format!(
            "unknown push rule kind {raw:?}: expected override, underride, sender, room or content"
        ))),
    }
}

/// Parses a list of actions; unknown action strings are refused (the historical `dont_notify`
/// and `coalesce` are accepted and dropped, as the specification asks).
pub fn parse_actions(value: &Value) -> Result<Vec<Action>> {
    let Some(list) = value.as_array() else {
        return Err(Error::BadJson("actions must be an array".into()));
    };
    let mut actions = Vec::with_capacity(list.len());
    for raw in list {
        match raw {
            Value::String(s) if s == "notify" => actions.push(Action::Notify),
            Value::String(s) if s == "dont_notify" || s == "coalesce" => {}
            Value::String(s) => {
                return Err(Error::InvalidParam(format!("unknown action {s:?}")));
            }
            Value::Object(o) if o.get("set_tweak").is_some_and(Value::is_string) => {
                let action = serde_json::from_value::<Action>(raw.clone())
                    .map_err(|e| Error::InvalidParam(format!("bad tweak: {e}")))?;
                actions.push(action);
            }
            _ => {
                return Err(Error::InvalidParam(
                    "an action is \"notify\" or an object with a \"set_tweak\" string".into(),
                ));
            }
        }
    }
    Ok(actions)
}

/// Builds the rule a `PUT /pushrules/global/{kind}/{ruleId}` body describes.
pub fn new_rule(kind: &RuleKind, rule_id: &str, body: &Value) -> Result<NewPushRule> {
    let Some(body) = body.as_object() else {
        return Err(Error::BadJson("the body must be a JSON object".into()));
    };
    let actions = parse_actions(
        body.get("actions")
            .ok_or_else(|| Error::MissingParam("actions is required".into()))?,
    )?;
    let conditions = || -> Result<Vec<PushCondition>> {
        match body.get("conditions") {
            None => Ok(Vec::new()),
            Some(Value::Array(list)) => list
                .iter()
                .map(|c| {
                    if !c.get("kind").is_some_and(Value::is_string) {
                        return Err(Error::InvalidParam(
                            "every condition needs a kind string".into(),
                        ));
                    }
                    serde_json::from_value::<PushCondition>(c.clone())
                        .map_err(|e| Error::InvalidParam(format!("bad condition: {e}")))
                })
                .collect(),
            Some(_) => Err(Error::BadJson("conditions must be an array".into())),
        }
    };
    let id = rule_id.to_owned();
    Ok(match kind {
        RuleKind::Override => {
            NewPushRule::Override(NewConditionalPushRule::new(id, conditions()?, actions))
        }
        RuleKind::Underride => {
            NewPushRule::Underride(NewConditionalPushRule::new(id, conditions()?, actions))
        }
        RuleKind::Content => {
            let pattern = match body.get("pattern") {
                Some(Value::String(p)) if !p.is_empty() => p.clone(),
                Some(_) => {
                    return Err(Error::InvalidParam(
                        "pattern must be a non-empty string".into(),
                    ));
                }
                None => {
                    return Err(Error::MissingParam("content rules need a pattern".into()));
                }
            };
            NewPushRule::Content(NewPatternedPushRule::new(id, pattern, actions))
        }
        RuleKind::Room => {
            let room = OwnedRoomId::try_from(rule_id).map_err(|_| {
                Error::InvalidParam("the ID of a room rule is the room's ID".into())
            })?;
            NewPushRule::Room(NewSimplePushRule::new(room, actions))
        }
        RuleKind::Sender => {
            let user = OwnedUserId::try_from(rule_id).map_err(|_| {
                Error::InvalidParam("the ID of a sender rule is the sender's user ID".into())
            })?;
            NewPushRule::Sender(NewSimplePushRule::new(user, actions))
        }
        _ => return Err(Error::InvalidParam("unknown push rule kind".into())),
    })
}

pub fn insert_error(e: InsertPushRuleError) -> Error {
    match e {
        InsertPushRuleError::UnknownRuleId => {
            Error::Unknown("the before/after rule was not found".into())
        }
        InsertPushRuleError::ServerDefaultRuleId => Error::InvalidParam(
            "rule IDs starting with a dot are reserved for server-default rules".into(),
        ),
        InsertPushRuleError::InvalidRuleId => {
            Error::InvalidParam("rule IDs may not contain slashes or backslashes".into())
        }
        InsertPushRuleError::RelativeToServerDefaultRule => {
            Error::InvalidParam("a rule cannot be placed relative to a server-default rule".into())
        }
        InsertPushRuleError::BeforeHigherThanAfter => {
            Error::InvalidParam("before names a rule of higher priority than after".into())
        }
        other => Error::InvalidParam(other.to_string()),
    }
}

pub fn remove_error(e: RemovePushRuleError) -> Error {
    match e {
        RemovePushRuleError::ServerDefault => {
            Error::InvalidParam("server-default rules cannot be deleted".into())
        }
        _ => Error::NotFound("no such push rule".into()),
    }
}

impl Services {
    /// The user's push rules (server defaults merged in).
    pub fn push_rules(&self, user: &UserId) -> Result<Arc<Ruleset>> {
        if let Some(rules) = self.push.rules.lock().get(user) {
            return Ok(rules.clone());
        }
        let rules = Arc::new(self.load_push_rules(user)?);
        let mut cache = self.push.rules.lock();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(user.to_owned(), rules.clone());
        Ok(rules)
    }

    /// The `m.push_rules` account data content of the user (defaults when never changed).
    pub fn push_rules_content(&self, user: &UserId) -> Result<Value> {
        Ok(json!({ "global": serde_json::to_value(&*self.push_rules(user)?)? }))
    }

    fn load_push_rules(&self, user: &UserId) -> Result<Ruleset> {
        let defaults = server_default(user);
        let Some(stored) = self.account_data.get(user, None, PUSH_RULES_TYPE)? else {
            return Ok(defaults);
        };
        let mut rules = stored
            .get("global")
            .cloned()
            .and_then(|g| serde_json::from_value::<Ruleset>(g).ok())
            .unwrap_or_default();
        // Keeps the user's switches and actions of default rules, and brings the set of
        // default rules up to date.
        rules.update_with_server_default(defaults);
        Ok(rules)
    }

    /// Changes the user's push rules: `change` edits a copy, which is stored when it succeeds.
    pub async fn change_push_rules(
        &self,
        user: &UserId,
        change: impl Fn(&mut Ruleset) -> Result<()>,
    ) -> Result<()> {
        let current = (*self.push_rules(user)?).clone();
        self.account_data
            .update_server_managed(user, PUSH_RULES_TYPE, |_| {
                let mut rules = current.clone();
                change(&mut rules)?;
                let content = json!({ "global": serde_json::to_value(&rules)? });
                if serde_json::to_vec(&content)?.len() > MAX_RULES_BYTES {
                    return Err(Error::TooLarge(format!(
                        "push rules may not exceed {MAX_RULES_BYTES} bytes in all"
                    )));
                }
                Ok(Some(content))
            })
            .await?;
        self.push.rules.lock().remove(user);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_include_the_legacy_mention_rules_in_order() {
        let rules = server_default(ruma::user_id!("@bob:x"));
        let ids: Vec<_> = rules.override_.iter().map(|r| r.rule_id.as_str()).collect();
        let at = |id: &str| ids.iter().position(|i| *i == id);
        assert!(at(".m.rule.is_user_mention") < at(".m.rule.contains_display_name"));
        assert!(at(".m.rule.contains_display_name") < at(".m.rule.is_room_mention"));
        assert!(at(".m.rule.is_room_mention") < at(".m.rule.roomnotif"));
        assert_eq!(at(".m.rule.master"), Some(0));
        assert!(rules.content.get(".m.rule.contains_user_name").is_some());
        for id in [
            ".m.rule.suppress_notices",
            ".m.rule.invite_for_me",
            ".m.rule.member_event",
            ".m.rule.tombstone",
            ".m.rule.reaction",
        ] {
            assert!(at(id).is_some(), "{id}");
        }
        let under: Vec<_> = rules.underride.iter().map(|r| r.rule_id.as_str()).collect();
        // Builds where ruma's unstable poll rules are on (matrix-sdk turns them on in tests)
        // have those after the stable ones.
        assert_eq!(
            under[..5],
            [
                ".m.rule.call",
                ".m.rule.encrypted_room_one_to_one",
                ".m.rule.room_one_to_one",
                ".m.rule.message",
                ".m.rule.encrypted"
            ]
        );
    }

    #[test]
    fn actions_are_checked() {
        assert!(parse_actions(&json!(["notify", {"set_tweak": "highlight"}])).is_ok());
        assert_eq!(parse_actions(&json!(["dont_notify"])).unwrap().len(), 0);
        assert!(parse_actions(&json!(["explode"])).is_err());
        assert!(parse_actions(&json!([1])).is_err());
        assert!(parse_actions(&json!({})).is_err());
    }

    #[test]
    fn rules_are_built_per_kind() {
        let body = json!({ "actions": ["notify"], "pattern": "cake*" });
        assert!(new_rule(&RuleKind::Content, "cake", &body).is_ok());
        assert!(new_rule(&RuleKind::Content, "cake", &json!({ "actions": [] })).is_err());
        assert!(new_rule(&RuleKind::Room, "not-a-room", &body).is_err());
        assert!(new_rule(&RuleKind::Sender, "@a:x", &body).is_ok());
        assert!(
            new_rule(
                &RuleKind::Override,
                "x",
                &json!({ "actions": [], "conditions": [{ "key": "type" }] })
            )
            .is_err()
        );
    }
}
