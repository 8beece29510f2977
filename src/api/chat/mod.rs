//! The simple Chat API: plain REST endpoints and a WebSocket stream over the same accounts, rooms
//! and events as the Matrix API. A friend request is an invite to a direct-message room, a group
//! is a room, a message is an event: a Chat API user and a Matrix client user see the same
//! conversations. `spec/openapi.yaml` describes every endpoint; `docs/chat-api.md` is the guide.

pub mod error;
pub mod extract;

mod blocks;
mod calls;
mod chat_files;
mod docs;
mod fields;
pub mod file_model;
mod files;
mod friends;
mod group_members;
pub mod group_model;
mod groups;
mod login;
mod message_actions;
mod message_history;
pub mod message_model;
mod messages;
pub mod model;
mod notifications;
mod paging;
mod password_reset;
mod profile;
mod signup;
mod totp;
mod users;
mod ws;

use super::Routes;

/// Adds every Chat API route. Path parameters are all called `{id}`: the router wants one name
/// per position.
pub(super) fn routes(routes: Routes) -> Routes {
    let routes = users::routes(routes);
    let routes = friends::routes(routes);
    let routes = messages::routes(routes);
    let routes = files::routes(routes);
    let routes = groups::routes(routes);
    let routes = notifications::routes(routes);
    let routes = calls::routes(routes);
    let routes = ws::routes(routes);
    docs::routes(routes)
}
