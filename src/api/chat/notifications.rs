//! Chat API: notifications. The feed merges what the user's push rules notified (messages,
//! mentions, friend requests, group invites) with what the call log and friendships add
//! (missed calls, accepted friend requests); see `service::chat::feed` and
//! `docs/chat-notifications.md`.

use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatJson, ChatQuery};
use super::paging::PageQuery;
use crate::api::Routes;
use crate::api::extract::AppState;
use crate::service::chat::notifications::NotificationId;

/// The most IDs one `POST /notifications/read` marks.
const MAX_IDS: usize = 100;

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .route("/notifications", get(list))
        .route("/notifications/read", post(mark_read))
}

#[derive(Deserialize)]
struct ListQuery {
    cursor: Option<String>,
    limit: Option<usize>,
    /// `true`: only unread notifications (`true` or `false`; anything else is 400).
    unread: Option<bool>,
}

/// `GET /notifications?unread&cursor&limit` → `{notifications: [Notification], next_cursor,
/// unread_count}`, newest first.
async fn list(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatQuery(query): ChatQuery<ListQuery>,
) -> ChatResult<Json<Value>> {
    let page = PageQuery {
        cursor: query.cursor,
        limit: query.limit,
    };
    let limit = page.limit()?;
    let before = page.cursor()?;
    let page = state
        .chat_notifications(&auth.user_id, before, limit, query.unread.unwrap_or(false))
        .await?;
    Ok(Json(json!({
        "notifications": page.notifications,
        "next_cursor": page.next_cursor.map(|n| n.to_string()),
        "unread_count": page.unread_count,
    })))
}

#[derive(Deserialize)]
struct ReadBody {
    ids: Option<Vec<String>>,
    all: Option<bool>,
}

/// `POST /notifications/read` `{ids?: [id], all?: bool}` → 204. `all: true` marks the whole
/// feed read; otherwise `ids` (1 to 100) name the notifications to mark (404 when one is not
/// the caller's; then none is marked).
async fn mark_read(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<ReadBody>,
) -> ChatResult<StatusCode> {
    if body.all == Some(true) {
        if body.ids.as_ref().is_some_and(|ids| !ids.is_empty()) {
            return Err(ChatError::invalid("give ids or all, not both"));
        }
        state
            .mark_all_chat_notifications_read(&auth.user_id)
            .await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let raw = body.ids.unwrap_or_default();
    if raw.is_empty() || raw.len() > MAX_IDS {
        return Err(ChatError::invalid(format!(
            "ids: 1 to {MAX_IDS} notification IDs (or all: true)"
        )));
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(raw.len());
    for id in &raw {
        let parsed = NotificationId::parse(id)
            .ok_or_else(|| ChatError::invalid(format!("ids: {id:?} is not a notification ID")))?;
        if seen.insert(parsed) {
            ids.push(parsed);
        }
    }
    state
        .mark_chat_notifications_read(&auth.user_id, &ids)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
