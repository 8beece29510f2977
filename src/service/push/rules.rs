//! Each user's push rules: the specification's server-default rules (with the legacy mention
//! rules clients still rely on) plus the user's own, stored as the global account data type
//! `m.push_rules` (`{"global": ruleset}`) so that clients also receive them through `/sync`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ruma::push::{
    Action, AnyPushRuleRef, ConditionalPushRule, InsertPushRuleError, NewConditionalPushRule,
    NewPatternedPushRule, NewPushRule, NewSimplePushRule, PatternedPushRule, PushCondition,
    RemovePushRuleError, RuleKind, Ruleset,
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
    by_user: Mutex<HashMap<OwnedUserId, Arc<UserRules>>>,
    /// Moves on every change of any user's rules: a rule set read before a change is not
    /// cached after it.
    generation: std::sync::atomic::AtomicU64,
}

impl RulesCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<OwnedUserId, Arc<UserRules>>> {
        // Only a cache: nothing in it can be left half-updated.
        self.by_user.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The user ID the shared rules are evaluated for: no rule of a real user names it, and no
/// real user can have it (registration refuses capital letters).
pub const NEUTRAL_USER: &str = "@PUSH-RULES-NEUTRAL:invalid";

/// The server-default rules every user has in the same form, in rule-iteration order: the rules
/// a user's set shares with these give the same answer for every member of a room, so the
/// evaluator asks ruma once per event instead of once per member (see `evaluate`).
pub fn reference_rules() -> &'static Ruleset {
    static REFERENCE: std::sync::OnceLock<Ruleset> = std::sync::OnceLock::new();
    REFERENCE.get_or_init(|| match UserId::parse(NEUTRAL_USER) {
        Ok(user) => server_default(&user),
        Err(_) => Ruleset::new(),
    })
}

/// One rule as JSON, with its kind (so that rules of different kinds never compare equal).
fn rule_json(rule: AnyPushRuleRef<'_>) -> Value {
    let (kind, value) = match rule {
        AnyPushRuleRef::Override(r) => ("override", serde_json::to_value(r)),
        AnyPushRuleRef::Content(r) => ("content", serde_json::to_value(r)),
        AnyPushRuleRef::Room(r) => ("room", serde_json::to_value(r)),
        AnyPushRuleRef::Sender(r) => ("sender", serde_json::to_value(r)),
        AnyPushRuleRef::Underride(r) => ("underride", serde_json::to_value(r)),
        _ => return Value::Null,
    };
    match value {
        Ok(value) => json!([kind, value]),
        Err(_) => Value::Null,
    }
}

/// A user's rules, with, for each rule (in iteration order), the index of the identical
/// reference rule when it is shared (`None`: personal, evaluated for the user alone).
pub struct UserRules {
    pub set: Arc<Ruleset>,
    pub shared: Vec<Option<usize>>,
}

impl UserRules {
    fn new(set: Ruleset) -> Self {
        let reference: Vec<Value> = reference_rules().iter().map(rule_json).collect();
        let shared = set
            .iter()
            .map(|rule| {
                let value = rule_json(rule);
                // The display-name condition reads the member's own name: never shared.
                if value.to_string().contains("contains_display_name") {
                    return None;
                }
                reference.iter().position(|r| *r == value && !r.is_null())
            })
            .collect();
        Self {
            set: Arc::new(set),
            shared,
        }
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

/// The rule set in a stored `m.push_rules` content (the defaults when there is none), with the
/// server-default rules brought up to date (the user's switches and actions of default rules
/// are kept).
fn rules_from(user: &UserId, stored: Option<&Value>) -> Ruleset {
    let defaults = server_default(user);
    let Some(stored) = stored else {
        return defaults;
    };
    let mut rules = stored
        .get("global")
        .cloned()
        .and_then(|g| serde_json::from_value::<Ruleset>(g).ok())
        .unwrap_or_default();
    rules.update_with_server_default(defaults);
    rules
}

/// The longest `pattern` of a content rule (each is matched against every message).
const MAX_PATTERN_BYTES: usize = 255;

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
                    if c.get("pattern")
                        .and_then(Value::as_str)
                        .is_some_and(|p| p.len() > MAX_PATTERN_BYTES)
                    {
                        return Err(Error::InvalidParam(format!(
                            "condition patterns may not exceed {MAX_PATTERN_BYTES} bytes"
                        )));
                    }
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
                Some(Value::String(p)) if p.len() > MAX_PATTERN_BYTES => {
                    return Err(Error::InvalidParam(format!(
                        "pattern may not exceed {MAX_PATTERN_BYTES} bytes"
                    )));
                }
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
        Ok(self.user_push_rules(user)?.set.clone())
    }

    /// The user's push rules with what they share with every user (see [`UserRules`]).
    pub fn user_push_rules(&self, user: &UserId) -> Result<Arc<UserRules>> {
        use std::sync::atomic::Ordering;
        if let Some(rules) = self.push.rules.lock().get(user) {
            return Ok(rules.clone());
        }
        let generation = self.push.rules.generation.load(Ordering::SeqCst);
        let rules = Arc::new(UserRules::new(self.load_push_rules(user)?));
        let mut cache = self.push.rules.lock();
        if self.push.rules.generation.load(Ordering::SeqCst) == generation {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(user.to_owned(), rules.clone());
        }
        Ok(rules)
    }

    /// The `m.push_rules` account data content of the user (defaults when never changed).
    pub fn push_rules_content(&self, user: &UserId) -> Result<Value> {
        Ok(json!({ "global": serde_json::to_value(&*self.push_rules(user)?)? }))
    }

    fn load_push_rules(&self, user: &UserId) -> Result<Ruleset> {
        let stored = self.account_data.get(user, None, PUSH_RULES_TYPE)?;
        Ok(rules_from(user, stored.as_ref()))
    }

    /// Changes the user's push rules: `change` edits a copy, which is stored when it succeeds.
    pub async fn change_push_rules(
        &self,
        user: &UserId,
        change: impl Fn(&mut Ruleset) -> Result<()>,
    ) -> Result<()> {
        // The change applies to what is stored when the write happens, so that concurrent
        // changes of one user's rules all take effect.
        self.account_data
            .update_server_managed(user, PUSH_RULES_TYPE, |stored| {
                let mut rules = rules_from(user, stored);
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
        let mut cache = self.push.rules.lock();
        self.push
            .rules
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.remove(user);
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
    fn only_rules_naming_the_user_are_personal() {
        let rules = UserRules::new(server_default(ruma::user_id!("@bob:x")));
        let personal: Vec<_> = rules
            .set
            .iter()
            .zip(&rules.shared)
            .filter(|(_, shared)| shared.is_none())
            .map(|(rule, _)| rule.rule_id().to_owned())
            // (Unstable thread-subscription rules, on in builds with matrix-sdk, aside.)
            .filter(|id| id.starts_with(".m.rule."))
            .collect();
        assert_eq!(
            personal,
            [
                ".m.rule.invite_for_me",
                ".m.rule.is_user_mention",
                ".m.rule.contains_display_name",
                ".m.rule.contains_user_name",
            ]
        );
        // A default rule the user changed becomes personal.
        let mut changed = server_default(ruma::user_id!("@bob:x"));
        changed
            .set_actions(RuleKind::Underride, ".m.rule.message", vec![])
            .unwrap();
        let rules = UserRules::new(changed);
        let message = rules
            .set
            .iter()
            .position(|r| r.rule_id() == ".m.rule.message")
            .unwrap();
        assert_eq!(rules.shared[message], None);
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
