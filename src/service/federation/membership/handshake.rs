//! The first half of every handshake as the joining (leaving, knocking) server: ask a resident
//! server for a template, check that it is the event we asked for, complete it and sign it.

use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::{Map, Value};

use super::encode;
use crate::core::{self, Pdu, room_version};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::request::Limit;

/// The member events other servers complete for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handshake {
    Join,
    Leave,
    Knock,
}

impl Handshake {
    pub(super) fn membership(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Knock => "knock",
        }
    }

    /// The path (and query) of the template request.
    fn make_path(self, room_id: &RoomId, user: &UserId) -> String {
        let ids = format!("{}/{}", encode(room_id.as_str()), encode(user.as_str()));
        match self {
            Self::Join => format!(
                "/_matrix/federation/v1/make_join/{ids}?{}",
                versions_query()
            ),
            Self::Leave => format!("/_matrix/federation/v1/make_leave/{ids}"),
            Self::Knock => format!(
                "/_matrix/federation/v1/make_knock/{ids}?{}",
                versions_query()
            ),
        }
    }

    /// The path of the request that hands the signed event back.
    pub(super) fn send_path(self, pdu: &Pdu) -> String {
        let ids = format!(
            "{}/{}",
            encode(pdu.room_id().as_str()),
            encode(pdu.event_id().as_str())
        );
        match self {
            Self::Join => format!("/_matrix/federation/v2/send_join/{ids}?omit_members=false"),
            Self::Leave => format!("/_matrix/federation/v2/send_leave/{ids}"),
            Self::Knock => format!("/_matrix/federation/v1/send_knock/{ids}"),
        }
    }
}

/// `ver=1&ver=2…`: every room version we speak.
fn versions_query() -> String {
    room_version::SUPPORTED
        .iter()
        .map(|v| format!("ver={}", encode(v.as_str())))
        .collect::<Vec<_>>()
        .join("&")
}

impl Services {
    /// Asks `server` for the template of `user`'s `handshake` event in `room_id`, checks it (the
    /// room version is one we speak; type, room, sender, state key and membership are what we
    /// asked for), adds `extra` to its content (never replacing `membership` or the authoriser of
    /// a restricted join) and completes and signs it.
    pub(super) async fn signed_from_template(
        &self,
        server: &ServerName,
        handshake: Handshake,
        room_id: &RoomId,
        user: &UserId,
        extra: &Map<String, Value>,
    ) -> Result<Pdu> {
        let answer = self
            .federation
            .get(server, &handshake.make_path(room_id, user), Limit::Small)
            .await?;
        let malformed =
            |what: &str| Error::Unreachable(format!("{server} sent a bad template: {what}"));
        let version = match answer.get("room_version") {
            None => RoomVersionId::V1,
            Some(Value::String(v)) => {
                RoomVersionId::try_from(v.as_str()).map_err(|_| malformed("room_version"))?
            }
            Some(_) => return Err(malformed("room_version")),
        };
        if !room_version::is_supported(&version) {
            return Err(Error::UnsupportedRoomVersion(format!(
                "{room_id} is a room of version {version}, which this server does not support"
            )));
        }
        let mut template = match answer
            .get("event")
            .cloned()
            .map(CanonicalJsonValue::try_from)
        {
            Some(Ok(CanonicalJsonValue::Object(event))) => event,
            _ => return Err(malformed("no event")),
        };
        check_template(&template, room_id, user, handshake.membership()).map_err(malformed)?;
        if let Some(CanonicalJsonValue::Object(content)) = template.get_mut("content") {
            for (key, value) in extra {
                if key == "membership" || key == "join_authorised_via_users_server" {
                    continue;
                }
                if let Ok(value) = CanonicalJsonValue::try_from(value.clone()) {
                    content.insert(key.clone(), value);
                }
            }
        }
        core::pdu::build_from_template(
            &version,
            template,
            self.federation.server_name(),
            self.federation.keys.pair(),
        )
        .map_err(|e| malformed(&e.to_string()))
    }
}

/// Checks what a template is about, as the specification requires of the joining server.
fn check_template(
    template: &CanonicalJsonObject,
    room_id: &RoomId,
    user: &UserId,
    membership: &str,
) -> std::result::Result<(), &'static str> {
    let string = |field: &str| match template.get(field) {
        Some(CanonicalJsonValue::String(value)) => Some(value.as_str()),
        _ => None,
    };
    if string("type") != Some("m.room.member") {
        return Err("not an m.room.member event");
    }
    if string("room_id") != Some(room_id.as_str()) {
        return Err("another room");
    }
    if string("sender") != Some(user.as_str()) || string("state_key") != Some(user.as_str()) {
        return Err("another user");
    }
    let content_membership = match template.get("content") {
        Some(CanonicalJsonValue::Object(content)) => match content.get("membership") {
            Some(CanonicalJsonValue::String(value)) => Some(value.as_str()),
            _ => None,
        },
        _ => None,
    };
    if content_membership != Some(membership) {
        return Err("another membership");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};
    use serde_json::json;

    use super::*;

    fn template(value: Value) -> CanonicalJsonObject {
        match CanonicalJsonValue::try_from(value).unwrap() {
            CanonicalJsonValue::Object(object) => object,
            _ => unreachable!(),
        }
    }

    #[test]
    fn templates_must_be_the_member_event_asked_for() {
        let room = room_id!("!r:a.example");
        let user = user_id!("@u:b.example");
        let good = json!({
            "type": "m.room.member", "room_id": room, "sender": user, "state_key": user,
            "content": { "membership": "join" },
        });
        assert_eq!(
            check_template(&template(good.clone()), room, user, "join"),
            Ok(())
        );
        assert!(check_template(&template(good.clone()), room, user, "leave").is_err());
        for (field, value) in [
            ("type", json!("m.room.message")),
            ("room_id", json!("!other:a.example")),
            ("sender", json!("@other:b.example")),
            ("state_key", json!("@other:b.example")),
            ("content", json!({ "membership": 1 })),
        ] {
            let mut bad = good.clone();
            bad[field] = value;
            assert!(
                check_template(&template(bad), room, user, "join").is_err(),
                "{field}"
            );
        }
    }

    #[test]
    fn the_join_template_request_names_every_supported_version() {
        let path = Handshake::Join.make_path(room_id!("!r:a.example"), user_id!("@u:b.example"));
        assert!(
            path.starts_with("/_matrix/federation/v1/make_join/%21r%3Aa.example/%40u%3Ab.example?")
        );
        for version in room_version::SUPPORTED {
            assert!(path.contains(&format!("ver={version}")), "{version}");
        }
    }
}
