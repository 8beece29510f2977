//! The resident side of a remote join: `make_join` hands out a join template (naming one of our
//! members as the authoriser of a restricted join), `send_join` takes the signed join into the
//! room and answers with the state before it and its auth chain.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use ruma::events::StateEventType;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName, OwnedUserId,
    RoomId, RoomVersionId, ServerName, UserId,
};
use serde_json::{Value, json};

use super::HandshakeError;
use super::template::ResidentRoom;
use crate::core::{self, Pdu, StateMap, room_version};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::rooms::power::Powers;

/// Members whose member events a reduced (`omit_members`) answer keeps when the room has neither
/// a name nor a canonical alias: those the client-server room summary would name as heroes.
const HEROES: usize = 5;

impl Services {
    /// `GET /make_join/{roomId}/{userId}`: a join template for `user`, a user of `origin`, when
    /// the room's version is one of `versions` and the auth rules would let the user in.
    pub async fn make_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        versions: &[RoomVersionId],
    ) -> Result<(RoomVersionId, CanonicalJsonObject), HandshakeError> {
        if user.server_name() != origin {
            return Err(Error::Forbidden(format!("{user} is not a user of {origin}")).into());
        }
        let room = self.handshake_room(room_id, origin)?;
        let version = room.info.room_version.clone();
        if !versions.contains(&version) {
            return Err(HandshakeError::IncompatibleRoomVersion(version));
        }
        let mut content = json!({ "membership": "join" });
        if let Some(authoriser) = self.restricted_join_authoriser(&room, user)? {
            content["join_authorised_via_users_server"] = json!(authoriser);
        }
        let template = self.member_template(&room, user, content)?;
        Ok((version, template))
    }

    /// For a restricted room the user is neither joined to nor invited to: the member of ours
    /// to name in `join_authorised_via_users_server`, after checking that the user is joined to
    /// one of the rooms the allow conditions name. `None` when no authoriser is needed.
    fn restricted_join_authoriser(
        &self,
        room: &ResidentRoom,
        user: &UserId,
    ) -> Result<Option<OwnedUserId>, HandshakeError> {
        if !self.restricted_join_needs_authoriser(room, user)? {
            return Ok(None);
        }
        let powers = Powers::load(&self.rooms, &room.info.room_version, &room.state)?;
        for (member, _) in self.rooms.members(&room.room_id, Some("join"))? {
            let Ok(member) = OwnedUserId::try_from(member) else {
                continue;
            };
            if self.may_authorise_join(room, &powers, &member)? {
                return Ok(Some(member));
            }
        }
        Err(HandshakeError::UnableToGrantJoin(
            "no member of this server may invite to the room".into(),
        ))
    }

    /// The allow conditions of a restricted room, for a join of `user`: whether the join needs a
    /// member of ours to authorise it. `false` when it needs none (the room version or its join
    /// rule is not restricted, or the user is joined or invited already: the auth rules let
    /// them in as they are); `true` when the user is joined to one of the allowed rooms, as far
    /// as this server sees them. Refused when this server is in none of those rooms (it cannot
    /// tell) or the user is in none of them.
    ///
    /// Shared by `make_join` (before naming an authoriser) and `send_join` (before
    /// countersigning a join that names one of ours), so that a join built without a template
    /// of ours meets the same conditions.
    fn restricted_join_needs_authoriser(
        &self,
        room: &ResidentRoom,
        user: &UserId,
    ) -> Result<bool, HandshakeError> {
        let rules = room_version::rules(&room.info.room_version)?;
        if !rules.authorization.restricted_join_rule {
            return Ok(false);
        }
        let Some(allowed) = self.rooms.allowed_rooms(&room.state)? else {
            return Ok(false);
        };
        if matches!(
            self.rooms.membership(&room.room_id, user)?.as_deref(),
            Some("join" | "invite")
        ) {
            return Ok(false);
        }
        let mut known = Vec::new();
        for allowed_room in allowed {
            if self.rooms.is_resident(&allowed_room)? {
                known.push(allowed_room);
            }
        }
        if known.is_empty() {
            return Err(HandshakeError::UnableToAuthoriseJoin(
                "this server is in none of the rooms the join rules allow members of".into(),
            ));
        }
        if !self.rooms.is_joined_to_any(user, &known)? {
            return Err(Error::Forbidden(format!(
                "{user} is in none of the rooms whose members may join"
            ))
            .into());
        }
        Ok(true)
    }

    /// Whether `member` may authorise a restricted join: a user of ours, joined to the room, with
    /// the power to invite (what the auth rules ask of `join_authorised_via_users_server`).
    fn may_authorise_join(
        &self,
        room: &ResidentRoom,
        powers: &Powers,
        member: &UserId,
    ) -> Result<bool> {
        Ok(self.federation.is_us(member.server_name())
            && self.rooms.membership(&room.room_id, member)?.as_deref() == Some("join")
            && powers.may_invite(member)?)
    }

    /// Adds our signature to a restricted join whose `join_authorised_via_users_server` is one of
    /// our users (room versions with restricted join rules), once the allow conditions hold for
    /// the joining user (see [`Services::restricted_join_needs_authoriser`]) and the named member
    /// may authorise joins. A join that needs no authoriser is signed all the same (the auth
    /// rules let it in without one). A join naming no user of ours is left as it is: the auth
    /// rules decide on it.
    ///
    /// Without these checks, a server could name one of our members in a join it built itself
    /// (skipping `make_join`) and have us vouch for a user the allow conditions keep out.
    fn countersign_restricted_join(
        &self,
        room: &ResidentRoom,
        json: &mut CanonicalJsonObject,
    ) -> Result<(), HandshakeError> {
        let rules = room_version::rules(&room.info.room_version)?;
        if !rules.authorization.restricted_join_rule {
            return Ok(());
        }
        let Some(authoriser) = member_content_user(json, "join_authorised_via_users_server") else {
            return Ok(());
        };
        if !self.federation.is_us(authoriser.server_name()) {
            return Ok(());
        }
        // The joining user; that it is the sender, a user of the requesting server, is checked
        // with the rest of the event afterwards.
        let user = match json.get("state_key") {
            Some(CanonicalJsonValue::String(key)) => UserId::parse(key).ok(),
            _ => None,
        }
        .ok_or_else(|| Error::InvalidParam("the join has no user ID as its state key".into()))?;
        if self.restricted_join_needs_authoriser(room, &user)? {
            let powers = Powers::load(&self.rooms, &room.info.room_version, &room.state)?;
            if !self.may_authorise_join(room, &powers, &authoriser)? {
                return Err(Error::Forbidden(format!(
                    "{authoriser} may not authorise joins to the room"
                ))
                .into());
            }
        }
        ruma::signatures::sign_event(
            self.federation.server_name().as_str(),
            self.federation.keys.pair(),
            json,
            &rules.redaction,
        )
        .map_err(|e| Error::InvalidParam(format!("the event cannot be signed: {e}")).into())
    }

    /// `PUT /v2/send_join/{roomId}/{eventId}`: countersigns a restricted join naming one of our
    /// members when the allow conditions hold (see [`Services::countersign_restricted_join`]),
    /// checks the join (see [`Services::receive_member_event`]), adds it to the room (the sender
    /// then relays it to the other servers in the room) and answers with the state before it,
    /// its auth chain, the join as we accepted it (countersigned for restricted joins) and the
    /// servers in the room.
    ///
    /// With `omit_members`, the state keeps only the member events of the heroes of a room
    /// without a name or canonical alias, and the auth chain leaves out what the state holds.
    pub async fn send_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        mut json: CanonicalJsonObject,
        omit_members: bool,
    ) -> Result<Value, HandshakeError> {
        let room = self.handshake_room(room_id, origin)?;
        self.countersign_restricted_join(&room, &mut json)?;
        let pdu = self
            .receive_member_event(origin, &room, event_id, json, "join")
            .await?;
        self.accept_handshake_event(origin, &pdu).await?;
        let meta = self
            .rooms
            .event_meta(pdu.event_id())?
            .ok_or_else(|| Error::internal("an ingested join without metadata"))?;
        let state_before = match meta.state_before {
            Some(id) => self.rooms.snapshots.state(id)?,
            None => Arc::new(StateMap::new()),
        };
        let servers = servers_joined(&state_before, |id| self.rooms.pdu(id).ok().flatten());
        let state_ids: Vec<OwnedEventId> = if omit_members {
            self.reduced_state(&state_before, pdu.sender())?
        } else {
            state_before.values().cloned().collect()
        };
        let fetch = |id: &EventId| self.rooms.pdu(id).ok().flatten();
        let mut chain = core::state::auth_chain(
            state_ids
                .iter()
                .map(|id| &**id)
                .chain(std::iter::once(pdu.event_id())),
            fetch,
        )?;
        if omit_members {
            for id in &state_ids {
                chain.remove(id);
            }
        }
        let mut chain: Vec<Arc<Pdu>> = chain
            .iter()
            .filter_map(|id| self.rooms.pdu(id).ok().flatten())
            .collect();
        chain.sort_by_key(|e| e.depth());
        let served = |ids: &mut dyn Iterator<Item = Arc<Pdu>>| -> Result<Vec<CanonicalJsonObject>> {
            ids.map(|e| self.handshake_served_event(&e)).collect()
        };
        let state = served(&mut state_ids.iter().filter_map(|id| fetch(id)))?;
        let auth_chain = served(&mut chain.into_iter())?;
        Ok(json!({
            "origin": self.federation.server_name(),
            "state": state,
            "auth_chain": auth_chain,
            "event": self.handshake_served_event(&pdu)?,
            "members_omitted": omit_members,
            "servers_in_room": servers,
        }))
    }

    /// The state IDs of a reduced answer: every state event but member events, except the heroes'
    /// member events when the room has no name and no canonical alias.
    fn reduced_state(&self, state: &StateMap, joiner: &UserId) -> Result<Vec<OwnedEventId>> {
        let named = [StateEventType::RoomName, StateEventType::RoomCanonicalAlias]
            .into_iter()
            .any(|kind| state.contains_key(&(kind, String::new())));
        let mut heroes: Vec<(&String, &OwnedEventId)> = Vec::new();
        if !named {
            for ((kind, key), id) in state {
                if *kind != StateEventType::RoomMember || key == joiner.as_str() {
                    continue;
                }
                let Some(pdu) = self.rooms.pdu(id)? else {
                    continue;
                };
                if matches!(
                    super::membership_of(&pdu).as_deref(),
                    Some("join" | "invite")
                ) {
                    heroes.push((key, id));
                }
            }
            heroes.sort();
            heroes.truncate(HEROES);
        }
        let heroes: HashSet<&OwnedEventId> = heroes.into_iter().map(|(_, id)| id).collect();
        Ok(state
            .iter()
            .filter(|((kind, _), id)| *kind != StateEventType::RoomMember || heroes.contains(id))
            .map(|(_, id)| id.clone())
            .collect())
    }
}

/// The user ID a member event's `content` names under `field`, when it is one.
fn member_content_user(json: &CanonicalJsonObject, field: &str) -> Option<OwnedUserId> {
    match json.get("content") {
        Some(CanonicalJsonValue::Object(content)) => match content.get(field) {
            Some(CanonicalJsonValue::String(user)) => UserId::parse(user).ok(),
            _ => None,
        },
        _ => None,
    }
}

/// The servers with a joined member in `state`.
fn servers_joined(
    state: &StateMap,
    fetch: impl Fn(&EventId) -> Option<Arc<Pdu>>,
) -> BTreeSet<OwnedServerName> {
    state
        .iter()
        .filter(|((kind, _), _)| *kind == StateEventType::RoomMember)
        .filter_map(|((_, key), id)| {
            let pdu = fetch(id)?;
            (super::membership_of(&pdu).as_deref() == Some("join")).then_some(key)
        })
        .filter_map(|key| <&UserId>::try_from(key.as_str()).ok())
        .map(|user| user.server_name().to_owned())
        .collect()
}
