//! The Server-Server API (`/_matrix/federation/*`) and server keys (`/_matrix/key/*`): what
//! other homeservers call. Every federation request is authenticated with the `X-Matrix`
//! signature of its origin (see [`auth`]); the key endpoints are public.

pub mod auth;
pub mod backfill;
pub mod devices;
pub mod directory;
pub mod e2e_keys;
pub mod events;
pub mod keys;
pub mod media;
pub mod membership;
pub mod openid;
pub mod query;
pub mod send;
pub mod spaces;
pub mod version;

use axum::routing::{get, put};

use super::Routes;

/// Every federation and key route.
pub(crate) fn routes(routes: Routes) -> Routes {
    routes
        .route("/_matrix/federation/v1/version", get(version::version))
        .route(
            "/_matrix/federation/v1/send/{txn_id}",
            put(send::send_transaction),
        )
        .route(
            "/_matrix/federation/v1/make_join/{room_id}/{user_id}",
            get(membership::make_join),
        )
        .route(
            "/_matrix/federation/v2/send_join/{room_id}/{event_id}",
            put(membership::send_join),
        )
        .route(
            "/_matrix/federation/v1/make_leave/{room_id}/{user_id}",
            get(membership::make_leave),
        )
        .route(
            "/_matrix/federation/v2/send_leave/{room_id}/{event_id}",
            put(membership::send_leave),
        )
        .route(
            "/_matrix/federation/v1/make_knock/{room_id}/{user_id}",
            get(membership::make_knock),
        )
        .route(
            "/_matrix/federation/v1/send_knock/{room_id}/{event_id}",
            put(membership::send_knock),
        )
        .route(
            "/_matrix/federation/v2/invite/{room_id}/{event_id}",
            put(membership::invite),
        )
        .route(
            "/_matrix/federation/v1/query/directory",
            get(query::directory),
        )
        .route("/_matrix/federation/v1/query/profile", get(query::profile))
        .route(
            "/_matrix/federation/v1/user/devices/{user_id}",
            get(devices::user_devices),
        )
        .route(
            "/_matrix/federation/v1/user/keys/query",
            axum::routing::post(e2e_keys::query),
        )
        .route(
            "/_matrix/federation/v1/user/keys/claim",
            axum::routing::post(e2e_keys::claim),
        )
        .route(
            "/_matrix/federation/v1/event/{event_id}",
            get(events::event),
        )
        .route(
            "/_matrix/federation/v1/state/{room_id}",
            get(events::room_state),
        )
        .route(
            "/_matrix/federation/v1/state_ids/{room_id}",
            get(events::room_state_ids),
        )
        .route(
            "/_matrix/federation/v1/event_auth/{room_id}/{event_id}",
            get(events::event_auth),
        )
        .route(
            "/_matrix/federation/v1/timestamp_to_event/{room_id}",
            get(events::timestamp_to_event),
        )
        .route(
            "/_matrix/federation/v1/backfill/{room_id}",
            get(backfill::backfill),
        )
        .route(
            "/_matrix/federation/v1/get_missing_events/{room_id}",
            axum::routing::post(backfill::get_missing_events),
        )
        .route(
            "/_matrix/federation/v1/publicRooms",
            get(directory::public_rooms).post(directory::public_rooms_filtered),
        )
        .route(
            "/_matrix/federation/v1/hierarchy/{room_id}",
            get(spaces::hierarchy),
        )
        .route(
            "/_matrix/federation/v1/openid/userinfo",
            get(openid::userinfo),
        )
        .route(
            "/_matrix/federation/v1/media/download/{media_id}",
            get(media::download),
        )
        .route(
            "/_matrix/federation/v1/media/thumbnail/{media_id}",
            get(media::thumbnail),
        )
        .route("/_matrix/key/v2/server", get(keys::server))
        .route("/_matrix/key/v2/query/{server_name}", get(keys::query_one))
        .route("/_matrix/key/v2/query", axum::routing::post(keys::query))
}
