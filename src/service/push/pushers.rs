//! Pushers: where a user's devices want their pushes sent (`/pushers`, `/pushers/set`), and the
//! queue of pushes waiting for each pusher's gateway.

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::notifications::Notification;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::storage::keys;

/// The path every push gateway URL must have.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// The longest pushkey (bytes) and app ID (characters) the specification allows.
const MAX_PUSHKEY_BYTES: usize = 512;
const MAX_APP_ID_CHARS: usize = 64;
/// The longest of the other strings of a pusher.
const MAX_FIELD_BYTES: usize = 1024;
/// Pushers one user may have.
const MAX_PUSHERS_PER_USER: usize = 100;

/// A pusher as `GET /pushers` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pusher {
    pub pushkey: String,
    pub kind: String,
    pub app_id: String,
    pub app_display_name: String,
    pub device_display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_tag: Option<String>,
    pub lang: String,
    /// `url` and `format`, plus whatever else the client put there (sent to the gateway).
    pub data: Map<String, Value>,
    /// The device that set the pusher: logging it out removes the pusher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

impl Pusher {
    pub fn url(&self) -> Option<&str> {
        self.data.get("url").and_then(Value::as_str)
    }

    /// Whether the gateway wants only event IDs (`format: event_id_only`).
    pub fn event_id_only(&self) -> bool {
        self.data.get("format").and_then(Value::as_str) == Some("event_id_only")
    }
}

/// A push waiting in a pusher's queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedPush {
    pub notification: Notification,
    /// When it was queued (ms since the epoch): it is dropped when it waited too long.
    pub queued_ts: u64,
}

/// `user SEP app_id SEP pushkey`: a pusher's key, and the prefix of its queue.
pub fn pusher_key(user: &UserId, app_id: &str, pushkey: &str) -> Vec<u8> {
    let mut key = keys::pair(user.as_str(), app_id);
    key.push(keys::SEP);
    key.extend_from_slice(pushkey.as_bytes());
    key
}

/// The user a pusher key belongs to.
pub fn owner_of(pusher_key: &[u8]) -> Option<OwnedUserId> {
    let at = pusher_key.iter().position(|b| *b == keys::SEP)?;
    let user = std::str::from_utf8(&pusher_key[..at]).ok()?;
    OwnedUserId::try_from(user).ok()
}

/// `pusher key SEP position`.
pub fn queue_key(pusher: &[u8], position: u64) -> Vec<u8> {
    let mut key = pusher.to_vec();
    key.push(keys::SEP);
    key.extend_from_slice(&keys::u64_be(position));
    key
}

/// What `/pushers/set` asks for.
pub enum PusherChange {
    Set { pusher: Pusher, append: bool },
    Delete { app_id: String, pushkey: String },
}

fn string_field(body: &Map<String, Value>, name: &str, max: usize) -> Result<String> {
    match body.get(name) {
        Some(Value::String(s)) if s.len() <= max => Ok(s.clone()),
        Some(Value::String(_)) => Err(Error::InvalidParam(format!(
            "{name} may not exceed {max} bytes"
        ))),
        Some(_) => Err(Error::BadJson(format!("{name} must be a string"))),
        None => Err(Error::MissingParam(format!("{name} is required"))),
    }
}

/// Checks a `/pushers/set` body.
pub fn parse_change(body: &Value, allow_private: bool) -> Result<PusherChange> {
    let Some(body) = body.as_object() else {
        return Err(Error::BadJson("the body must be a JSON object".into()));
    };
    let pushkey = string_field(body, "pushkey", MAX_PUSHKEY_BYTES)?;
    let app_id = string_field(body, "app_id", MAX_FIELD_BYTES)?;
    if pushkey.is_empty() || app_id.is_empty() {
        return Err(Error::InvalidParam(
            "pushkey and app_id may not be empty".into(),
        ));
    }
    if app_id.chars().count() > MAX_APP_ID_CHARS {
        return Err(Error::InvalidParam(format!(
            "app_id may not exceed {MAX_APP_ID_CHARS} characters"
        )));
    }
    let kind = match body.get("kind") {
        Some(Value::Null) => return Ok(PusherChange::Delete { app_id, pushkey }),
        Some(Value::String(kind)) if kind == "http" => kind.clone(),
        Some(Value::String(kind)) => {
            return Err(Error::InvalidParam(format!(
                "pusher kind {kind:?} is not supported; use \"http\" (or null to delete)"
            )));
        }
        Some(_) => return Err(Error::BadJson("kind must be a string or null".into())),
        None => return Err(Error::MissingParam("kind is required".into())),
    };
    let data = match body.get("data") {
        Some(Value::Object(data)) => data.clone(),
        Some(_) => return Err(Error::BadJson("data must be an object".into())),
        None => return Err(Error::MissingParam("data is required".into())),
    };
    let url = match data.get("url") {
        Some(Value::String(url)) => url,
        Some(_) => return Err(Error::BadJson("data.url must be a string".into())),
        None => {
            return Err(Error::MissingParam(
                "data.url is required for http pushers".into(),
            ));
        }
    };
    check_gateway_url(url, allow_private)?;
    match data.get("format") {
        None => {}
        Some(Value::String(f)) if f == "event_id_only" => {}
        Some(_) => {
            return Err(Error::InvalidParam(
                "data.format must be \"event_id_only\" when given".into(),
            ));
        }
    }
    let profile_tag = match body.get("profile_tag") {
        None | Some(Value::Null) => None,
        Some(_) => Some(string_field(body, "profile_tag", MAX_FIELD_BYTES)?),
    };
    let append = match body.get("append") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(Error::BadJson("append must be a boolean".into())),
    };
    Ok(PusherChange::Set {
        pusher: Pusher {
            pushkey,
            kind,
            app_id,
            app_display_name: string_field(body, "app_display_name", MAX_FIELD_BYTES)?,
            device_display_name: string_field(body, "device_display_name", MAX_FIELD_BYTES)?,
            profile_tag,
            lang: string_field(body, "lang", MAX_FIELD_BYTES)?,
            data,
            device_id: None,
        },
        append,
    })
}

/// A gateway URL must be http(s) with the notify path, and (unless allowed) not name an
/// internal address literally (names are checked when they are resolved, see `gateway`).
pub fn check_gateway_url(raw: &str, allow_private: bool) -> Result<url::Url> {
    let url = url::Url::parse(raw)
        .map_err(|e| Error::InvalidParam(format!("data.url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::InvalidParam(
            "data.url must be an http or https URL".into(),
        ));
    }
    if url.path() != NOTIFY_PATH {
        return Err(Error::InvalidParam(format!(
            "data.url must have the path {NOTIFY_PATH}"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::InvalidParam(
            "data.url may not carry credentials".into(),
        ));
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(Error::InvalidParam("data.url has no host".into())),
    };
    if let Some(ip) = ip
        && !allow_private
        && !super::gateway::is_public(ip)
    {
        return Err(Error::InvalidParam(
            "data.url points at an internal address".into(),
        ));
    }
    Ok(url)
}

impl Services {
    /// The user's pushers.
    pub fn pushers(&self, user: &UserId) -> Result<Vec<Pusher>> {
        let mut out = Vec::new();
        for item in self.push.pushers.scan_prefix(keys::prefix(user.as_str())) {
            let (_, value) = item?;
            if let Ok(pusher) = serde_json::from_slice(&value) {
                out.push(pusher);
            }
        }
        Ok(out)
    }

    /// Applies a `/pushers/set` request.
    pub async fn change_pusher(
        &self,
        user: &UserId,
        device_id: &str,
        change: PusherChange,
    ) -> Result<()> {
        match change {
            PusherChange::Delete { app_id, pushkey } => {
                self.delete_pusher(user, &app_id, &pushkey)?;
            }
            PusherChange::Set { mut pusher, append } => {
                pusher.device_id = Some(device_id.to_owned());
                let key = pusher_key(user, &pusher.app_id, &pusher.pushkey);
                if !self.push.pushers.contains(&key)?
                    && self.pushers(user)?.len() >= MAX_PUSHERS_PER_USER
                {
                    return Err(Error::Forbidden(format!(
                        "a user may have at most {MAX_PUSHERS_PER_USER} pushers"
                    )));
                }
                if !append {
                    // The same app and pushkey of any other user goes away.
                    for (owner, other) in self.pushers_with(&pusher.app_id, &pusher.pushkey)? {
                        if owner != user {
                            self.delete_pusher(&owner, &other.app_id, &other.pushkey)?;
                        }
                    }
                }
                self.push.pushers.put(key, serde_json::to_vec(&pusher)?)?;
            }
        }
        self.store.durable().await?;
        Ok(())
    }

    /// Every pusher (of any user) with this app ID and pushkey.
    fn pushers_with(&self, app_id: &str, pushkey: &str) -> Result<Vec<(OwnedUserId, Pusher)>> {
        let mut out = Vec::new();
        for item in self.push.pushers.iter() {
            let (key, value) = item?;
            let Ok(pusher) = serde_json::from_slice::<Pusher>(&value) else {
                continue;
            };
            if pusher.app_id == app_id
                && pusher.pushkey == pushkey
                && let Some(owner) = owner_of(&key)
            {
                out.push((owner, pusher));
            }
        }
        Ok(out)
    }

    /// Removes a pusher and the pushes waiting for it.
    pub fn delete_pusher(&self, user: &UserId, app_id: &str, pushkey: &str) -> Result<()> {
        let key = pusher_key(user, app_id, pushkey);
        self.push.pushers.delete(&key)?;
        let mut prefix = key;
        prefix.push(keys::SEP);
        let queued: Vec<_> = self
            .push
            .push_queue
            .scan_prefix(&prefix)
            .filter_map(|item| item.ok().map(|(k, _)| k))
            .collect();
        for k in queued {
            self.push.push_queue.delete(k)?;
        }
        self.push.backoff.forget(&prefix);
        Ok(())
    }

    /// Queues a push of `notification` for each of the user's pushers; whether any was queued.
    pub(crate) fn queue_pushes(
        &self,
        user: &UserId,
        position: u64,
        notification: &Notification,
    ) -> Result<bool> {
        let mut queued = false;
        let push = serde_json::to_vec(&QueuedPush {
            notification: notification.clone(),
            queued_ts: crate::util::now_ms(),
        })?;
        for item in self.push.pushers.scan_prefix(keys::prefix(user.as_str())) {
            let (key, _) = item?;
            self.push
                .push_queue
                .put(queue_key(&key, position), push.clone())?;
            queued = true;
        }
        Ok(queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(url: &str) -> Value {
        json!({
            "pushkey": "k", "kind": "http", "app_id": "com.example", "app_display_name": "A",
            "device_display_name": "D", "lang": "en", "data": { "url": url },
        })
    }

    #[test]
    fn gateway_urls_are_checked() {
        let ok = "https://push.example.org/_matrix/push/v1/notify";
        assert!(parse_change(&body(ok), false).is_ok());
        assert!(parse_change(&body("https://push.example.org/other"), false).is_err());
        assert!(
            parse_change(
                &body("ftp://push.example.org/_matrix/push/v1/notify"),
                false
            )
            .is_err()
        );
        let local = "http://127.0.0.1:9/_matrix/push/v1/notify";
        assert!(parse_change(&body(local), false).is_err());
        assert!(parse_change(&body(local), true).is_ok());
        assert!(parse_change(&body("http://10.1.2.3/_matrix/push/v1/notify"), false).is_err());
        assert!(parse_change(&body("http://[::1]/_matrix/push/v1/notify"), false).is_err());
    }

    #[test]
    fn null_kind_deletes() {
        let mut b = body("https://x.org/_matrix/push/v1/notify");
        b["kind"] = Value::Null;
        assert!(matches!(
            parse_change(&b, false),
            Ok(PusherChange::Delete { .. })
        ));
        b["kind"] = json!("email");
        assert!(parse_change(&b, false).is_err());
    }
}
