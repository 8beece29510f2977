//! Queries between servers (`/query/directory`, `/query/profile`): answering them for our aliases
//! and users, and asking other servers about theirs.

use axum::http::Method;
use ruma::{OwnedRoomId, OwnedServerName, RoomAliasId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::encode;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::request::Limit;
use crate::service::federation::request::remote_error;
use crate::service::profile::MAX_PROFILE_BYTES;

/// The most servers taken from a remote alias lookup.
const MAX_ALIAS_SERVERS: usize = 20;

/// The answer of `/query/directory`.
#[derive(Deserialize)]
struct DirectoryAnswer {
    room_id: OwnedRoomId,
    #[serde(default)]
    servers: Vec<String>,
}

impl Services {
    /// `GET /query/directory`: the room one of our aliases names, and the servers in it (ours
    /// first).
    pub fn query_directory(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let not_found = || Error::NotFound(format!("room alias {alias} not found"));
        if !self.rooms.aliases.is_local(alias) {
            return Err(not_found());
        }
        let record = self.rooms.aliases.resolve(alias)?.ok_or_else(not_found)?;
        if self.rooms.info(&record.room_id)?.is_none() {
            return Err(not_found());
        }
        let ours = self.federation.server_name().to_owned();
        let mut servers = vec![ours.clone()];
        servers.extend(
            self.rooms
                .servers_in_room(&record.room_id)?
                .into_iter()
                .filter(|server| *server != ours),
        );
        Ok((record.room_id, servers))
    }

    /// Asks the server of a remote alias which room it names and which servers are in it.
    pub async fn resolve_remote_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
        let server = alias.server_name();
        let path = format!(
            "/_matrix/federation/v1/query/directory?room_alias={}",
            encode(alias.as_str())
        );
        let answer = self.federation.get(server, &path, Limit::Small).await?;
        let answer: DirectoryAnswer = serde_json::from_value(answer).map_err(|e| {
            Error::Unreachable(format!("{server} answered the alias query badly: {e}"))
        })?;
        let mut servers: Vec<OwnedServerName> = answer
            .servers
            .iter()
            .filter_map(|name| OwnedServerName::try_from(name.as_str()).ok())
            .take(MAX_ALIAS_SERVERS)
            .collect();
        if !servers.iter().any(|s| *s == *server) {
            servers.push(server.to_owned());
        }
        Ok((answer.room_id, servers))
    }

    /// `GET /query/profile`: the profile of one of our users, or only `field` of it (404 when
    /// the user does not exist; `{}` when the field is not set).
    pub fn query_profile(&self, user: &UserId, field: Option<&str>) -> Result<Map<String, Value>> {
        if !self.federation.is_us(user.server_name()) {
            return Err(Error::InvalidParam(format!(
                "{user} is not a user of this server"
            )));
        }
        if !self.is_active_user(user)? {
            return Err(Error::NotFound("no such user".into()));
        }
        // A field the user has not set is left out of a 200 answer (the spec allows that or
        // `null`; the reference homeserver does the same and treats a 404 here as a failure).
        Ok(select_field(self.profiles.get(user)?, field).unwrap_or_default())
    }

    /// Asks the server of a remote user for their profile (or only `field` of it). Its answer
    /// must be a JSON object no bigger than a profile may be; with `field`, only that field is
    /// kept.
    pub async fn remote_profile(
        &self,
        user: &UserId,
        field: Option<&str>,
    ) -> Result<Map<String, Value>> {
        let server = user.server_name();
        let mut path = format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            encode(user.as_str())
        );
        if let Some(field) = field {
            path.push_str(&format!("&field={}", encode(field)));
        }
        let response = self
            .federation
            .request_raw(server, Method::GET, &path, None, MAX_PROFILE_BYTES * 2)
            .await?;
        let body: Option<Value> = serde_json::from_slice(response.body()).ok();
        if !response.status().is_success() {
            return Err(remote_error(
                server,
                response.status().as_u16(),
                body.as_ref(),
            ));
        }
        match body {
            Some(Value::Object(profile)) => select_field(profile, field),
            _ => Err(Error::Unreachable(format!(
                "{server} answered the profile query badly"
            ))),
        }
    }
}

/// The whole profile, or only `field` (404 when it is not set).
fn select_field(profile: Map<String, Value>, field: Option<&str>) -> Result<Map<String, Value>> {
    let Some(field) = field else {
        return Ok(profile);
    };
    match profile.get(field) {
        Some(value) if !value.is_null() => Ok(Map::from_iter([(field.to_owned(), value.clone())])),
        _ => Err(Error::NotFound(format!("{field} is not set"))),
    }
}
