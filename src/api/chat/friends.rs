//! Chat API: friends. A friend request is an invite to a direct-message room; accepting is
//! joining it, declining is rejecting the invite, removing is leaving (and forgetting) it. See
//! `service::chat::friends` for how the friendship is derived from the room's memberships.
//!
//! - `POST /friends/add` `{user_id}` → 201 FriendRequest, or 200 Friend when the other side had
//!   already asked (that request is accepted).
//! - `POST /friends/accept` `{user_id}` → 200 Friend.
//! - `POST /friends/decline` `{user_id}` → 204.
//! - `POST /friends/remove` `{user_id}` → 204 (a friendship, or the caller's outgoing request).
//! - `GET /friends` → `{friends: [Friend]}`; `GET /friends/requests` → `{incoming, outgoing}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ruma::{RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatJson};
use super::model::user_summary;
use super::users::existing_user;
use crate::api::Routes;
use crate::api::extract::AppState;
use crate::service::chat::friends::{Added, Friendship, Refused};
use crate::service::presence::PresenceState;
use crate::util::now_ms;

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .route("/friends", get(list_friends))
        .route("/friends/requests", get(list_requests))
        .route("/friends/add", post(add))
        .route("/friends/accept", post(accept))
        .route("/friends/decline", post(decline))
        .route("/friends/remove", post(remove))
}

/// The body of every action: the other user (a user ID or a bare username of this server).
#[derive(Deserialize)]
struct PeerBody {
    user_id: String,
}

/// The Chat API error of a refused action.
fn refusal(refused: Refused) -> ChatError {
    match refused {
        Refused::ToSelf => ChatError::new(
            StatusCode::BAD_REQUEST,
            "self",
            "you cannot be your own friend",
        ),
        Refused::Blocked => ChatError::new(
            StatusCode::FORBIDDEN,
            "blocked",
            "one of you blocks the other",
        ),
        Refused::AlreadyFriends => ChatError::new(
            StatusCode::CONFLICT,
            "already_friends",
            "you are already friends",
        ),
        Refused::RequestPending => ChatError::new(
            StatusCode::CONFLICT,
            "request_pending",
            "your friend request is waiting for an answer",
        ),
        Refused::NothingToDo => ChatError::not_found("no such friend request or friend"),
    }
}

/// `POST /friends/add`.
async fn add(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<PeerBody>,
) -> ChatResult<Response> {
    let peer = existing_user(&state, &body.user_id)?;
    match state
        .add_friend(&auth.user_id, &peer)
        .await?
        .map_err(refusal)?
    {
        Added::Requested(room) => {
            let request = friend_request(&state, &auth.user_id, &peer, &room, "outgoing")?;
            Ok((StatusCode::CREATED, Json(request)).into_response())
        }
        Added::Accepted(room) => {
            Ok(Json(friend(&state, &auth.user_id, &peer, &room)?).into_response())
        }
    }
}

/// `POST /friends/accept`.
async fn accept(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<PeerBody>,
) -> ChatResult<Json<Value>> {
    let peer = existing_user(&state, &body.user_id)?;
    let room =
        state
            .accept_friend(&auth.user_id, &peer)
            .await?
            .map_err(|refused| match refused {
                Refused::NothingToDo => ChatError::not_found("no friend request from this user"),
                other => refusal(other),
            })?;
    Ok(Json(friend(&state, &auth.user_id, &peer, &room)?))
}

/// `POST /friends/decline`.
async fn decline(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<PeerBody>,
) -> ChatResult<StatusCode> {
    let peer = existing_user(&state, &body.user_id)?;
    state
        .decline_friend(&auth.user_id, &peer)
        .await?
        .map_err(|_| ChatError::not_found("no friend request from this user"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /friends/remove`.
async fn remove(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<PeerBody>,
) -> ChatResult<StatusCode> {
    let peer = existing_user(&state, &body.user_id)?;
    state
        .remove_friend(&auth.user_id, &peer)
        .await?
        .map_err(refusal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /friends`: the caller's friends, most recent friendship first.
async fn list_friends(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
) -> ChatResult<Json<Value>> {
    let mut friends = Vec::new();
    for (peer, room) in state.friends_of(&auth.user_id)? {
        friends.push(friend(&state, &auth.user_id, &peer, &room)?);
    }
    friends.sort_by_key(|f| std::cmp::Reverse(f["since"].as_u64()));
    Ok(Json(json!({ "friends": friends })))
}

/// `GET /friends/requests`: pending requests both ways, newest first.
async fn list_requests(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
) -> ChatResult<Json<Value>> {
    state.adopt_direct_invites(&auth.user_id).await?;
    let mut incoming = Vec::new();
    let mut outgoing = Vec::new();
    for (peer, friendship) in state.friend_requests(&auth.user_id)? {
        match friendship {
            Friendship::Incoming(room) => incoming.push(friend_request(
                &state,
                &auth.user_id,
                &peer,
                &room,
                "incoming",
            )?),
            Friendship::Outgoing(room) => outgoing.push(friend_request(
                &state,
                &auth.user_id,
                &peer,
                &room,
                "outgoing",
            )?),
            _ => {}
        }
    }
    for list in [&mut incoming, &mut outgoing] {
        list.sort_by_key(|r| std::cmp::Reverse(r["sent_at"].as_u64()));
    }
    Ok(Json(json!({ "incoming": incoming, "outgoing": outgoing })))
}

/// FriendRequest `{user, chat_id, direction, sent_at}`: `sent_at` is the time of the invite.
fn friend_request(
    state: &AppState,
    user: &UserId,
    peer: &UserId,
    room: &RoomId,
    direction: &str,
) -> ChatResult<Value> {
    let invitee = if direction == "incoming" { user } else { peer };
    Ok(json!({
        "user": user_summary(state, peer)?,
        "chat_id": room,
        "direction": direction,
        "sent_at": state.membership_changed_at(room, invitee)?.unwrap_or(0),
    }))
}

/// Friend `{user, chat_id, since, presence, online, last_seen_at, status_message}`: `since` is
/// when the second of them joined the chat; the presence fields are the friend's Matrix
/// presence (`offline` and nulls when never seen or presence is off).
pub(super) fn friend(
    state: &AppState,
    user: &UserId,
    peer: &UserId,
    room: &RoomId,
) -> ChatResult<Value> {
    let since = [user, peer]
        .into_iter()
        .filter_map(|u| state.joined_since(room, u).transpose())
        .collect::<crate::error::Result<Vec<u64>>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let presence = match state.presence.enabled() {
        true => state.presence.get(peer)?,
        false => None,
    };
    let (presence_state, last_seen_at, status_message) = match &presence {
        Some(view) => (
            view.presence,
            view.last_active_ago.map(|ago| now_ms().saturating_sub(ago)),
            view.status_msg.clone(),
        ),
        None => (PresenceState::Offline, None, None),
    };
    Ok(json!({
        "user": user_summary(state, peer)?,
        "chat_id": room,
        "since": since,
        "presence": presence_state.as_str(),
        "online": presence_state == PresenceState::Online,
        "last_seen_at": last_seen_at,
        "status_message": status_message,
    }))
}
