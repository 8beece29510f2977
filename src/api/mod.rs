//! HTTP routing: every endpoint, the fallbacks, and the layers (CORS, tracing).

pub mod chat;
pub mod client;
pub mod extract;
pub mod federation;
pub mod media;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, Method, header};
use axum::routing::{MethodRouter, get, post, put};
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::error::Error;
use extract::AppState;

/// The router being built, with the path template of every route added to it.
#[derive(Default)]
pub(crate) struct Routes {
    router: Router<AppState>,
    templates: Vec<String>,
}

impl Routes {
    pub(crate) fn route(mut self, path: &str, handlers: MethodRouter<AppState>) -> Self {
        self.templates.push(path.to_owned());
        self.router = self.router.route(path, handlers);
        self
    }
}

impl Routes {
    /// The content repository: uploads, authenticated downloads and thumbnails, and the
    /// deprecated unauthenticated routes. Downloads and thumbnails carry the media security
    /// headers on every answer.
    fn media_routes(self) -> Self {
        use axum::middleware::map_response;
        let read = |handlers: MethodRouter<AppState>| handlers.layer(map_response(media::secured));
        let authed = |path: &str| format!("/_matrix/client/v1/media{path}");
        let legacy = |path: &str| format!("/_matrix/media/v3{path}");
        self.route(&legacy("/upload"), post(media::upload))
            .route(
                &legacy("/upload/{server_name}/{media_id}"),
                put(media::upload_created),
            )
            .route("/_matrix/media/v1/create", post(media::create))
            .route(&authed("/config"), get(media::config))
            .route(&legacy("/config"), get(media::config))
            .route(
                &authed("/download/{server_name}/{media_id}"),
                read(get(media::download_authed)),
            )
            .route(
                &authed("/download/{server_name}/{media_id}/{file_name}"),
                read(get(media::download_authed_named)),
            )
            .route(
                &authed("/thumbnail/{server_name}/{media_id}"),
                read(get(media::thumbnail_authed)),
            )
            .route(
                &legacy("/download/{server_name}/{media_id}"),
                read(get(media::download_legacy)),
            )
            .route(
                &legacy("/download/{server_name}/{media_id}/{file_name}"),
                read(get(media::download_legacy_named)),
            )
            .route(
                &legacy("/thumbnail/{server_name}/{media_id}"),
                read(get(media::thumbnail_legacy)),
            )
    }
}

/// The path template of every route the router serves, as axum writes them (`{name}` for a
/// parameter), in the order they are added.
pub fn route_templates() -> Vec<String> {
    routes().templates
}

pub fn router(state: AppState) -> Router {
    routes()
        .router
        .fallback(|uri: axum::http::Uri| async move {
            unmatched(&uri, Error::Unrecognized("unrecognized request".into()))
        })
        .method_not_allowed_fallback(|uri: axum::http::Uri| async move {
            unmatched(&uri, Error::MethodNotAllowed)
        })
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::DELETE,
                    Method::OPTIONS,
                ])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::ACCEPT,
                    HeaderName::from_static("x-requested-with"),
                ]),
        )
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    // The route template, never the URI: query strings may carry tokens.
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", MatchedPath::as_str);
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        route,
                        request_id = %crate::util::random_string(10),
                        user = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                ),
        )
        .with_state(state)
}

/// The answer to a request no route serves: the Matrix error shape under the Matrix prefixes, the
/// Chat API's shape everywhere else.
fn unmatched(uri: &axum::http::Uri, error: Error) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path();
    if path.starts_with("/_matrix") || path.starts_with("/.well-known") || path == "/health" {
        error.into_response()
    } else {
        chat::error::ChatError::from(error).into_response()
    }
}

/// Every endpoint; [`router`] adds the fallbacks and the layers.
fn routes() -> Routes {
    use client::*;
    let v3 = |path: &str| format!("/_matrix/client/v3{path}");
    let mfa = |path: &str| format!("/_matrix/client/unstable/org.roost.mfa{path}");
    Routes::default()
        .route("/health", get(discovery::health))
        .route("/_matrix/client/versions", get(discovery::versions))
        .route(
            "/.well-known/matrix/client",
            get(discovery::well_known_client),
        )
        .route(
            "/.well-known/matrix/server",
            get(discovery::well_known_server),
        )
        .route(&v3("/capabilities"), get(discovery::capabilities))
        .route(
            &v3("/login"),
            get(session::login_flows).post(session::login),
        )
        .route(&v3("/logout"), post(session::logout))
        .route(&v3("/logout/all"), post(session::logout_all))
        .route(&v3("/refresh"), post(session::refresh))
        .route(&v3("/register"), post(register::register))
        .route(&v3("/register/available"), get(register::available))
        .route(
            "/_matrix/client/v1/register/m.login.registration_token/validity",
            get(register::token_validity),
        )
        .route(
            &v3("/register/email/requestToken"),
            post(threepid::request_token_register),
        )
        .route(&v3("/account/whoami"), get(account::whoami))
        .route(&v3("/account/password"), post(account::change_password))
        .route(
            &v3("/account/password/email/requestToken"),
            post(threepid::request_token_password),
        )
        .route(&v3("/account/deactivate"), post(account::deactivate))
        .route(&v3("/account/3pid"), get(threepid::list))
        .route(&v3("/account/3pid/add"), post(threepid::add))
        .route(&v3("/account/3pid/delete"), post(threepid::delete))
        .route(
            &v3("/account/3pid/email/requestToken"),
            post(threepid::request_token_add),
        )
        .route(
            crate::service::threepid::SUBMIT_PATH,
            get(threepid::submit_link).post(threepid::submit_json),
        )
        .route(&v3("/devices"), get(devices::list))
        .route(
            &v3("/devices/{device_id}"),
            get(devices::get_one)
                .put(devices::update)
                .delete(devices::delete_one),
        )
        .route(&v3("/delete_devices"), post(devices::delete_many))
        .route(&v3("/profile/{user_id}"), get(profile::get_all))
        .route(
            &v3("/profile/{user_id}/{field}"),
            get(profile::get_field)
                .put(profile::set_field)
                .delete(profile::delete_field),
        )
        .route(
            &v3("/user/{user}/account_data/{kind}"),
            get(account_data::get_global).put(account_data::set_global),
        )
        .route(
            &v3("/user/{user}/rooms/{room}/account_data/{kind}"),
            get(account_data::get_room).put(account_data::set_room),
        )
        .route(
            &v3("/user/{user}/rooms/{room}/tags"),
            get(account_data::get_tags),
        )
        .route(
            &v3("/user/{user}/rooms/{room}/tags/{tag}"),
            put(account_data::set_tag).delete(account_data::delete_tag),
        )
        .route(&v3("/sync"), get(sync::sync))
        .route(&v3("/pushrules/"), get(push::get_all))
        .route(&v3("/pushrules/global/"), get(push::get_global))
        .route(
            &v3("/pushrules/global/{rule_kind}/{rule_id}"),
            get(push::get_rule)
                .put(push::put_rule)
                .delete(push::delete_rule),
        )
        .route(
            &v3("/pushrules/global/{rule_kind}/{rule_id}/enabled"),
            get(push::get_enabled).put(push::put_enabled),
        )
        .route(
            &v3("/pushrules/global/{rule_kind}/{rule_id}/actions"),
            get(push::get_actions).put(push::put_actions),
        )
        .route(&v3("/notifications"), get(push::notifications))
        .route(&v3("/pushers"), get(push::get_pushers))
        .route(&v3("/pushers/set"), post(push::set_pusher))
        .route(
            &v3("/presence/{user}/status"),
            get(presence::get_status).put(presence::set_status),
        )
        .route(&v3("/sendToDevice/{kind}/{txn}"), put(to_device::send))
        .route(&v3("/keys/upload"), post(keys::upload))
        .route(&v3("/keys/query"), post(keys::query))
        .route(&v3("/keys/claim"), post(keys::claim))
        .route(&v3("/keys/changes"), get(keys::changes))
        .route(
            &v3("/keys/device_signing/upload"),
            post(keys::upload_device_signing),
        )
        .route(
            &v3("/keys/signatures/upload"),
            post(keys::upload_signatures),
        )
        .route(
            &v3("/room_keys/version"),
            post(backup::create_version).get(backup::latest_version),
        )
        .route(
            &v3("/room_keys/version/{version}"),
            get(backup::get_version)
                .put(backup::update_version)
                .delete(backup::delete_version),
        )
        .route(
            &v3("/room_keys/keys"),
            put(backup::put_all)
                .get(backup::get_all)
                .delete(backup::delete_all),
        )
        .route(
            &v3("/room_keys/keys/{room}"),
            put(backup::put_room)
                .get(backup::get_room)
                .delete(backup::delete_room),
        )
        .route(
            &v3("/room_keys/keys/{room}/{session}"),
            put(backup::put_session)
                .get(backup::get_session)
                .delete(backup::delete_session),
        )
        .route(&v3("/search"), post(search::search))
        .route(
            &v3("/user/{user}/openid/request_token"),
            post(openid::request_token),
        )
        .route(&v3("/user/{user}/filter"), post(filter::create))
        .route(&v3("/user/{user}/filter/{filter}"), get(filter::get))
        .route(&v3("/createRoom"), post(rooms::create_room))
        .route(&v3("/joined_rooms"), get(rooms::joined_rooms))
        .route(
            &v3("/directory/room/{alias}"),
            put(directory::set_alias)
                .get(directory::get_alias)
                .delete(directory::delete_alias),
        )
        .route(
            &v3("/directory/list/room/{room}"),
            get(directory::get_visibility).put(directory::set_visibility),
        )
        .route(
            &v3("/publicRooms"),
            get(directory::public_rooms).post(directory::public_rooms_filtered),
        )
        .route(&v3("/rooms/{room}/aliases"), get(directory::room_aliases))
        .route(&v3("/join/{room}"), post(membership::join_by_id_or_alias))
        .route(&v3("/rooms/{room}/join"), post(membership::join_by_id))
        .route(&v3("/knock/{room}"), post(membership::knock))
        .route(&v3("/rooms/{room}/leave"), post(membership::leave))
        .route(&v3("/rooms/{room}/invite"), post(membership::invite))
        .route(&v3("/rooms/{room}/kick"), post(membership::kick))
        .route(&v3("/rooms/{room}/ban"), post(membership::ban))
        .route(&v3("/rooms/{room}/unban"), post(membership::unban))
        .route(&v3("/rooms/{room}/upgrade"), post(upgrade::upgrade))
        .route(&v3("/rooms/{room}/send/{kind}/{txn}"), put(message::send))
        .route(
            &v3("/rooms/{room}/state/{kind}/{state_key}"),
            put(message::put_state).get(message::get_state),
        )
        .route(
            &v3("/rooms/{room}/state/{kind}"),
            put(message::put_state).get(message::get_state),
        )
        // An empty state key as clients (ruma among them) write it: a trailing slash.
        .route(
            &v3("/rooms/{room}/state/{kind}/"),
            put(message::put_state).get(message::get_state),
        )
        .route(&v3("/rooms/{room}/state"), get(message::all_state))
        .route(&v3("/rooms/{room}/event/{event}"), get(message::get_event))
        .route(&v3("/rooms/{room}/messages"), get(message::messages))
        .route(&v3("/rooms/{room}/members"), get(message::members))
        .route(&v3("/rooms/{room}/context/{event}"), get(history::context))
        .route(
            "/_matrix/client/v1/rooms/{room}/relations/{event}",
            get(relations::relations),
        )
        .route(
            "/_matrix/client/v1/rooms/{room}/relations/{event}/{rel_type}",
            get(relations::relations),
        )
        .route(
            "/_matrix/client/v1/rooms/{room}/relations/{event}/{rel_type}/{event_type}",
            get(relations::relations),
        )
        .route(
            "/_matrix/client/v1/rooms/{room}/threads",
            get(relations::threads),
        )
        .route(&v3("/rooms/{room}/forget"), post(history::forget))
        .route(
            "/_matrix/client/v1/rooms/{room}/timestamp_to_event",
            get(history::timestamp_to_event),
        )
        .route(
            &v3("/rooms/{room}/joined_members"),
            get(message::joined_members),
        )
        .route(
            &v3("/rooms/{room}/redact/{event}/{txn}"),
            put(message::redact),
        )
        .route(&v3("/rooms/{room}/typing/{user}"), put(typing::set_typing))
        .route(
            &v3("/rooms/{room}/receipt/{receipt_type}/{event}"),
            post(receipts::send_receipt),
        )
        .route(
            &v3("/rooms/{room}/read_markers"),
            post(receipts::set_read_markers),
        )
        .route(&v3("/user_directory/search"), post(user_directory::search))
        .route(&v3("/voip/turnServer"), get(voip::turn_server))
        .route(
            "/_matrix/client/v1/rooms/{room}/hierarchy",
            get(spaces::hierarchy),
        )
        .route(
            "/_matrix/client/v1/room_summary/{room}",
            get(spaces::summary),
        )
        .route(&v3("/rooms/{room}/summary"), get(spaces::summary))
        .route(
            &v3("/rooms/{room}/report/{event}"),
            post(report::report_event),
        )
        .route(&v3("/rooms/{room}/report"), post(report::report_room))
        .route(&v3("/users/{user}/report"), post(report::report_user))
        .route(
            &mfa("/totp"),
            get(mfa::status).post(mfa::enroll).delete(mfa::disable),
        )
        .route(&mfa("/totp/confirm"), post(mfa::confirm))
        .media_routes()
        .federation_routes()
        .chat_routes()
}

impl Routes {
    fn federation_routes(self) -> Self {
        federation::routes(self)
    }

    fn chat_routes(self) -> Self {
        chat::routes(self)
    }
}
