//! Chat API blocking: `POST /users/{id}/block`, `DELETE /users/{id}/block` and
//! `GET /users/blocked`. Blocking is Matrix ignoring: the blocked user is added to the
//! caller's `m.ignored_user_list` account data, so the caller's Matrix clients hide them too
//! (and a block made in a Matrix client shows here). A pending friend request between the two,
//! in either direction, is declined or withdrawn.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use ruma::UserId;
use serde_json::{Map, Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatPath};
use super::model::user_summary;
use super::users::{existing_user, parse_user};
use crate::api::Routes;
use crate::api::extract::AppState;
use crate::error::{Error, Result};
use crate::service::account_data::IGNORED_USERS_TYPE;
use crate::service::chat::friends::Friendship;

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .route("/users/{id}/block", post(block).delete(unblock))
        .route("/users/blocked", get(blocked))
}

/// Adds `target` to (or removes it from) `user`'s `m.ignored_user_list`, in one atomic
/// read-modify-write of the account data, so that concurrent changes are not lost. Other
/// entries and fields of the content are kept as they are.
async fn set_ignored(state: &AppState, user: &UserId, target: &UserId, ignore: bool) -> Result<()> {
    state
        .account_data
        .update_server_managed(user, IGNORED_USERS_TYPE, |old| {
            let mut content = match old {
                Some(Value::Object(object)) => object.clone(),
                _ => Map::new(),
            };
            let mut ignored = match content.get("ignored_users") {
                Some(Value::Object(users)) => users.clone(),
                _ => Map::new(),
            };
            let changed = if ignore {
                ignored.insert(target.to_string(), json!({})).is_none()
            } else {
                ignored.remove(target.as_str()).is_some()
            };
            if !changed {
                return Ok(None);
            }
            content.insert("ignored_users".into(), Value::Object(ignored));
            Ok(Some(Value::Object(content)))
        })
        .await
}

/// Declines an incoming friend request from `target`, or withdraws one `user` sent them.
async fn end_friend_request(state: &AppState, user: &UserId, target: &UserId) -> Result<()> {
    // The friends service re-checks under its lock: a request answered meanwhile is left alone.
    match state.friendship(user, target)? {
        Friendship::Incoming(_) => {
            let _ = state.decline_friend(user, target).await?;
        }
        Friendship::Outgoing(_) => {
            let _ = state.remove_friend(user, target).await?;
        }
        Friendship::Friends(_) | Friendship::None => {}
    }
    Ok(())
}

async fn block(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
) -> ChatResult<StatusCode> {
    let target = existing_user(&state, &id)?;
    if target == auth.user_id {
        return Err(ChatError::new(
            StatusCode::BAD_REQUEST,
            "self",
            "you cannot block yourself",
        ));
    }
    set_ignored(&state, &auth.user_id, &target, true).await?;
    end_friend_request(&state, &auth.user_id, &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unblocking a user who is not blocked (or whose account is gone) is not an error.
async fn unblock(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
) -> ChatResult<StatusCode> {
    let target = parse_user(&state, &id)?;
    set_ignored(&state, &auth.user_id, &target, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{users: [UserSummary]}`, in user ID order.
async fn blocked(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
) -> ChatResult<Json<Value>> {
    let mut ignored: Vec<_> = state
        .account_data
        .ignored_users(&auth.user_id)?
        .into_iter()
        .collect();
    ignored.sort();
    let users = ignored
        .iter()
        .map(|user| user_summary(&state, user))
        .collect::<std::result::Result<Vec<_>, Error>>()?;
    Ok(Json(json!({ "users": users })))
}
