//! Membership across servers: joining, leaving, knocking and inviting when the room or the user
//! lives on another server.
//!
//! Two sides of every handshake:
//!
//! - as the *resident* server (we have a joined member), we hand out event templates
//!   (`make_join`, `make_leave`, `make_knock`), accept the signed events back (`send_join`,
//!   `send_leave`, `send_knock`) into the room, and sign invites of our users that other servers
//!   send us (`invite`);
//! - as the *joining* server (the user is ours, the room is not here yet), we ask residents for
//!   templates, sign them, send them back and, for a join, verify the room state we get before we
//!   create the room here; we also send invites of remote users out of our rooms.
//!
//! Peers may lie: every event they send is checked (format, signatures, hash, the user and room
//! it is about, the auth rules) before it is signed, stored or answered.

mod error;
mod handshake;
mod invite_receive;
mod invite_send;
mod join;
mod join_verify;
mod knock;
mod leave;
mod queries;
mod resident;
mod resident_join;
mod resident_knock;
mod resident_leave;
mod room_state;
mod template;

pub use error::HandshakeError;
pub use invite_receive::InviteRequest;
pub use join::JoinRequest;

use ruma::events::TimelineEventType;
use ruma::{OwnedServerName, RoomId, ServerName};
use serde_json::Value;

use crate::core::Pdu;
use crate::error::{Error, Result};

/// The most servers a handshake tries, one after the other.
pub const MAX_CANDIDATE_SERVERS: usize = 10;

/// Percent-encodes one path segment (or query value) of a federation request.
pub(crate) fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// The `membership` of a member event's content.
pub(crate) fn membership_of(pdu: &Pdu) -> Option<String> {
    let content: Value = serde_json::from_str(pdu.content().get()).ok()?;
    content.get("membership")?.as_str().map(str::to_owned)
}

/// Checks that a member event a server sent us is what it must be: an `m.room.member` event of
/// `room_id` with `membership`, about a user of `origin` who sent it themselves.
pub(crate) fn check_own_member_event(
    pdu: &Pdu,
    room_id: &RoomId,
    origin: &ServerName,
    membership: &str,
) -> Result<()> {
    if pdu.room_id() != room_id {
        return Err(Error::InvalidParam(
            "the event belongs to another room than the path names".into(),
        ));
    }
    if *pdu.kind() != TimelineEventType::RoomMember {
        return Err(Error::InvalidParam("not an m.room.member event".into()));
    }
    if membership_of(pdu).as_deref() != Some(membership) {
        return Err(Error::InvalidParam(format!(
            "the membership of the event is not {membership}"
        )));
    }
    if pdu.sender().server_name() != origin {
        return Err(Error::InvalidParam(format!(
            "the sender is not a user of {origin}"
        )));
    }
    if pdu.state_key() != Some(pdu.sender().as_str()) {
        return Err(Error::InvalidParam(
            "the state key is not the sender".into(),
        ));
    }
    Ok(())
}

/// The servers to try for a handshake about `room_id`: the given ones first, then the server
/// named in the room ID (room versions before 12), without ourselves or repeats, at most
/// [`MAX_CANDIDATE_SERVERS`].
pub(crate) fn candidates(
    ours: &ServerName,
    room_id: &RoomId,
    given: impl IntoIterator<Item = OwnedServerName>,
) -> Vec<OwnedServerName> {
    let mut out: Vec<OwnedServerName> = Vec::new();
    let from_room = room_id.server_name().map(ToOwned::to_owned);
    for server in given.into_iter().chain(from_room) {
        if *server != *ours && !out.contains(&server) {
            out.push(server);
        }
        if out.len() == MAX_CANDIDATE_SERVERS {
            break;
        }
    }
    out
}
