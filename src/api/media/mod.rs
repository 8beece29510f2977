//! The content repository endpoints: uploads (`/_matrix/media/v3/upload`, `/v1/create`),
//! authenticated downloads and thumbnails (`/_matrix/client/v1/media/…`), and the deprecated
//! unauthenticated ones (`/_matrix/media/v3/download|thumbnail`), which serve only media
//! uploaded while `media.legacy_unauthenticated_downloads` was on.

pub mod serve;

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, Path, Query};
use crate::error::{Error, Result};
use crate::service::federation::remote_media::MediaRequest;
use crate::service::media::thumbnail::Method;
use crate::service::media::{DEFAULT_WAIT, MAX_WAIT, ThumbnailRequest, is_valid_media_id};

#[derive(Deserialize)]
pub struct UploadQuery {
    filename: Option<String>,
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    timeout_ms: Option<u64>,
    // Accepted; media is always served here, never redirected.
    #[allow(dead_code)]
    allow_redirect: Option<bool>,
    allow_remote: Option<bool>,
}

#[derive(Deserialize)]
pub struct ThumbnailQuery {
    width: u32,
    height: u32,
    method: Option<Method>,
    animated: Option<bool>,
    timeout_ms: Option<u64>,
    #[allow(dead_code)]
    allow_redirect: Option<bool>,
    allow_remote: Option<bool>,
}

/// Which routes a download came through.
#[derive(Clone, Copy, PartialEq)]
enum Route {
    Authenticated,
    Legacy,
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE)?.to_str().ok()
}

/// Checks the server name and media ID of a path: 400 `M_INVALID_PARAM` when malformed.
fn check_mxc(server: &str, media_id: &str) -> Result<()> {
    if server.len() > crate::core::MAX_ID_BYTES || ruma::ServerName::parse(server).is_err() {
        return Err(Error::InvalidParam("invalid server name".into()));
    }
    if !is_valid_media_id(media_id) {
        return Err(Error::InvalidParam(
            "invalid media ID: 1 to 255 of A-Z, a-z, 0-9, _ and -".into(),
        ));
    }
    Ok(())
}

fn wait(timeout_ms: Option<u64>) -> Duration {
    timeout_ms.map_or(DEFAULT_WAIT, |ms| Duration::from_millis(ms).min(MAX_WAIT))
}

/// `POST /_matrix/media/v3/upload`.
pub async fn upload(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>> {
    let media_id = state
        .media
        .upload(
            &auth.user_id,
            content_type(&headers),
            query.filename,
            declared_length(&headers),
            body.into_data_stream(),
        )
        .await?;
    Ok(Json(json!({
        "content_uri": format!("mxc://{}/{media_id}", state.media.server_name()),
    })))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`.
pub async fn upload_created(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((server, media_id)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>> {
    check_mxc(&server, &media_id)?;
    if server != state.media.server_name().as_str() {
        return Err(Error::NotFound("unknown media ID".into()));
    }
    state
        .media
        .upload_created(
            &auth.user_id,
            &server,
            &media_id,
            content_type(&headers),
            query.filename,
            declared_length(&headers),
            body.into_data_stream(),
        )
        .await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/media/v1/create`.
pub async fn create(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    let (media_id, expires_at) = state.media.create(&auth.user_id).await?;
    Ok(Json(json!({
        "content_uri": format!("mxc://{}/{media_id}", state.media.server_name()),
        "unused_expires_at": expires_at,
    })))
}

/// `GET /_matrix/client/v1/media/config` and `/_matrix/media/v3/config`.
pub async fn config(State(state): State<AppState>, Auth(_): Auth) -> Json<Value> {
    Json(json!({ "m.upload.size": state.config.media.max_upload_bytes }))
}

/// Adds the security headers to whatever a media read answers, errors and refused requests
/// included (a layer on the download and thumbnail routes).
pub async fn secured(mut response: Response) -> Response {
    serve::add_security_headers(response.headers_mut());
    response
}

fn range(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::RANGE)?.to_str().ok()
}

async fn download(
    state: &AppState,
    route: Route,
    (server, media_id): (&str, &str),
    file_name: Option<String>,
    query: &DownloadQuery,
    headers: &HeaderMap,
) -> Result<Response> {
    check_mxc(server, media_id)?;
    let content = state
        .media_content(
            server,
            media_id,
            MediaRequest {
                wait: wait(query.timeout_ms),
                legacy: route == Route::Legacy,
                allow_remote: query.allow_remote.unwrap_or(true),
            },
        )
        .await?;
    let file = state.media.servable(&content)?;
    let name = file_name.or_else(|| file.filename.clone());
    let disposition = serve::content_disposition(&file.content_type, name.as_deref());
    serve::file_response(&file, &disposition, range(headers)).await
}

async fn thumbnail(
    state: &AppState,
    route: Route,
    (server, media_id): (&str, &str),
    query: &ThumbnailQuery,
    headers: &HeaderMap,
) -> Result<Response> {
    check_mxc(server, media_id)?;
    if query.width == 0 || query.height == 0 {
        return Err(Error::InvalidParam(
            "width and height must be at least 1".into(),
        ));
    }
    let content = state
        .media_content(
            server,
            media_id,
            MediaRequest {
                wait: wait(query.timeout_ms),
                legacy: route == Route::Legacy,
                allow_remote: query.allow_remote.unwrap_or(true),
            },
        )
        .await?;
    let request = ThumbnailRequest {
        width: query.width,
        height: query.height,
        method: query.method.unwrap_or(Method::Scale),
        animated: query.animated.unwrap_or(false),
    };
    let file = state.media.thumbnail(&content, request).await?;
    // Thumbnails are images of the inline-safe types; the name only suggests an extension.
    let extension = match file.content_type.as_str() {
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => "png",
    };
    let disposition =
        serve::content_disposition(&file.content_type, Some(&format!("thumbnail.{extension}")));
    serve::file_response(&file, &disposition, range(headers)).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`.
pub async fn download_authed(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path((server, media_id)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let route = Route::Authenticated;
    download(&state, route, (&server, &media_id), None, &query, &headers).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`.
pub async fn download_authed_named(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path((server, media_id, name)): Path<(String, String, String)>,
    Query(query): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let route = Route::Authenticated;
    let ids = (server.as_str(), media_id.as_str());
    download(&state, route, ids, Some(name), &query, &headers).await
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`.
pub async fn thumbnail_authed(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path((server, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let route = Route::Authenticated;
    thumbnail(&state, route, (&server, &media_id), &query, &headers).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (deprecated, unauthenticated).
pub async fn download_legacy(
    State(state): State<AppState>,
    Path((server, media_id)): Path<(String, String)>,
    Query(query): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let route = Route::Legacy;
    download(&state, route, (&server, &media_id), None, &query, &headers).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (deprecated).
pub async fn download_legacy_named(
    State(state): State<AppState>,
    Path((server, media_id, name)): Path<(String, String, String)>,
    Query(query): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let route = Route::Legacy;
    let ids = (server.as_str(), media_id.as_str());
    download(&state, route, ids, Some(name), &query, &headers).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated, unauthenticated).
pub async fn thumbnail_legacy(
    State(state): State<AppState>,
    Path((server, media_id)): Path<(String, String)>,
    Query(query): Query<ThumbnailQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let route = Route::Legacy;
    thumbnail(&state, route, (&server, &media_id), &query, &headers).await
}
