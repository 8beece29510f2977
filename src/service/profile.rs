//! User profiles: display name, avatar URL and extended profile fields.

use ruma::{MxcUri, UserId};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::storage::{Store, Tree, trees};

pub const MAX_DISPLAYNAME_LEN: usize = 256;
pub const MAX_AVATAR_URL_LEN: usize = 1000;
pub const MAX_FIELD_NAME_LEN: usize = 255;
/// The whole profile, as JSON, may not exceed this (as the spec requires for extended profiles).
pub const MAX_PROFILE_BYTES: usize = 65536;

pub struct Profiles {
    tree: Tree,
    /// One lock per user whose profile is being carried into their rooms, so that two changes
    /// are carried one after the other (the later one last).
    propagating: std::sync::Mutex<
        std::collections::HashMap<ruma::OwnedUserId, std::sync::Arc<tokio::sync::Mutex<()>>>,
    >,
}

impl Profiles {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            tree: store.tree(trees::USERID_PROFILE)?,
            propagating: Default::default(),
        })
    }

    pub fn get(&self, user_id: &UserId) -> Result<Map<String, Value>> {
        match self.tree.get(user_id.as_bytes())? {
            Some(v) => Ok(serde_json::from_slice(&v)?),
            None => Ok(Map::new()),
        }
    }

    /// The display name and avatar a user's member events carry.
    pub fn member_content(&self, user_id: &UserId) -> Result<Map<String, Value>> {
        let profile = self.get(user_id)?;
        Ok(["displayname", "avatar_url"]
            .into_iter()
            .filter_map(|field| Some((field.to_owned(), profile.get(field)?.clone())))
            .collect())
    }

    /// Validates one field's value.
    pub fn validate(field: &str, value: &Value) -> Result<()> {
        if field.is_empty() || field.len() > MAX_FIELD_NAME_LEN {
            return Err(Error::InvalidParam("invalid profile field name".into()));
        }
        match field {
            "displayname" => match value {
                Value::String(s) if s.chars().count() <= MAX_DISPLAYNAME_LEN => Ok(()),
                Value::String(_) => Err(Error::InvalidParam(format!(
                    "displayname may be at most {MAX_DISPLAYNAME_LEN} characters"
                ))),
                Value::Null => Ok(()),
                _ => Err(Error::BadJson("displayname must be a string".into())),
            },
            "avatar_url" => match value {
                Value::String(s) if s.is_empty() => Ok(()),
                Value::String(s) if s.len() > MAX_AVATAR_URL_LEN => {
                    Err(Error::InvalidParam("avatar_url is too long".into()))
                }
                Value::String(s) => {
                    if <&MxcUri>::from(s.as_str()).is_valid() {
                        Ok(())
                    } else {
                        Err(Error::InvalidParam(
                            "avatar_url must be an mxc:// URI".into(),
                        ))
                    }
                }
                Value::Null => Ok(()),
                _ => Err(Error::BadJson("avatar_url must be a string".into())),
            },
            _ => Ok(()),
        }
    }

    /// Sets (or, with `Null` or an empty string for the standard fields, removes) one field.
    pub fn set_field(&self, user_id: &UserId, field: &str, value: Value) -> Result<()> {
        Self::validate(field, &value)?;
        let mut profile = self.get(user_id)?;
        let remove = value.is_null() || (value.as_str() == Some("") && field == "avatar_url");
        if remove {
            profile.remove(field);
        } else {
            profile.insert(field.to_owned(), value);
        }
        let bytes = serde_json::to_vec(&profile)?;
        if bytes.len() > MAX_PROFILE_BYTES {
            return Err(Error::TooLarge("the profile would exceed 64 KiB".into()));
        }
        self.tree.put(user_id.as_bytes(), bytes)?;
        Ok(())
    }

    pub fn clear(&self, user_id: &UserId) -> Result<()> {
        self.tree.delete(user_id.as_bytes())?;
        Ok(())
    }
}

impl super::Services {
    /// Carries the user's display name and avatar into their member event in every room they
    /// have joined, as other servers do, so that members see the change (and the display-name
    /// push rule follows it). A room that refuses the update is skipped.
    pub async fn propagate_profile(&self, user_id: &UserId) {
        let lock = {
            let mut locks = self
                .profiles
                .propagating
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Locks nobody holds or waits for go (the map only holds users being carried).
            locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
            locks.entry(user_id.to_owned()).or_default().clone()
        };
        let _carrying = lock.lock().await;
        let result: Result<()> = async {
            // Read under the lock: a change carried later carries the latest profile.
            let profile = self.profiles.get(user_id)?;
            for room_id in self.rooms.rooms_of(user_id, "join")? {
                let Some(current) = self.rooms.state_event(
                    &room_id,
                    &ruma::events::StateEventType::RoomMember,
                    user_id.as_str(),
                )?
                else {
                    continue;
                };
                let mut content: Map<String, Value> =
                    serde_json::from_str(current.content().get()).unwrap_or_default();
                let mut changed = false;
                for field in ["displayname", "avatar_url"] {
                    let wanted = profile.get(field).cloned();
                    if content.get(field) != wanted.as_ref() {
                        changed = true;
                        match wanted {
                            Some(value) => content.insert(field.to_owned(), value),
                            None => content.remove(field),
                        };
                    }
                }
                if !changed {
                    continue;
                }
                content.insert("membership".into(), Value::from("join"));
                content.remove("reason");
                let event = super::rooms::NewEvent::state(
                    ruma::events::StateEventType::RoomMember,
                    user_id.as_str(),
                    Value::Object(content),
                );
                if let Err(e) = self.rooms.append(&room_id, user_id, event, None).await {
                    tracing::info!(error = %e, room_id = %room_id, "profile change not carried into a room");
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "carrying a profile change into rooms failed");
        }
    }
}
