//! Our media for other servers: `GET /_matrix/federation/v1/media/download/{mediaId}` and
//! `/media/thumbnail/{mediaId}`, answered as `multipart/mixed` (the metadata `{}`, then the
//! bytes, streamed from disk). Only media uploaded here is served; what we cached of other
//! servers is theirs to serve.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::{StreamExt, stream};
use serde::Deserialize;
use tokio_util::io::ReaderStream;

use super::auth::Signed;
use crate::api::extract::{AppState, Path, Query};
use crate::api::media::serve::content_disposition;
use crate::error::{Error, Result};
use crate::service::federation::multipart;
use crate::service::media::thumbnail::Method;
use crate::service::media::{
    DEFAULT_WAIT, MAX_WAIT, Servable, ThumbnailRequest, is_valid_media_id,
};

#[derive(Deserialize)]
pub struct DownloadQuery {
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
pub struct ThumbnailQuery {
    width: u32,
    height: u32,
    method: Option<Method>,
    animated: Option<bool>,
    timeout_ms: Option<u64>,
}

fn wait(timeout_ms: Option<u64>) -> std::time::Duration {
    timeout_ms.map_or(DEFAULT_WAIT, |ms| {
        std::time::Duration::from_millis(ms).min(MAX_WAIT)
    })
}

fn check_media_id(media_id: &str) -> Result<()> {
    if is_valid_media_id(media_id) {
        Ok(())
    } else {
        Err(Error::InvalidParam(
            "invalid media ID: 1 to 255 of A-Z, a-z, 0-9, _ and -".into(),
        ))
    }
}

/// The multipart answer carrying a file: the metadata part, then the file as its second part.
async fn multipart_response(file: &Servable, disposition: &str) -> Result<Response> {
    let handle = match tokio::fs::File::open(&file.path).await {
        Ok(handle) => handle,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::error!(path = %file.path.display(), "a media file is missing");
            return Err(Error::NotFound("media not found".into()));
        }
        Err(e) => return Err(Error::internal(format!("reading media: {e}"))),
    };
    let boundary = multipart::new_boundary();
    let head = multipart::media_head(&boundary, &file.content_type, disposition);
    let tail = multipart::media_tail(&boundary);
    let length = head.len() as u64 + file.size + tail.len() as u64;
    let bytes = ReaderStream::new(tokio::io::AsyncReadExt::take(handle, file.size));
    let body = stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) })
        .chain(bytes)
        .chain(stream::once(async move { Ok(Bytes::from(tail)) }));
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    let content_type =
        HeaderValue::from_str(&multipart::content_type(&boundary)).map_err(Error::internal)?;
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(response)
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`
pub async fn download(
    State(state): State<AppState>,
    Path(media_id): Path<String>,
    Query(query): Query<DownloadQuery>,
    _signed: Signed,
) -> Result<Response> {
    check_media_id(&media_id)?;
    let server = state.media.server_name().to_string();
    let content = state
        .media
        .content(&server, &media_id, wait(query.timeout_ms), false)
        .await?;
    let file = state.media.servable(&content)?;
    let disposition = content_disposition(&file.content_type, file.filename.as_deref());
    multipart_response(&file, &disposition).await
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}?width=&height=&method=&animated=`
pub async fn thumbnail(
    State(state): State<AppState>,
    Path(media_id): Path<String>,
    Query(query): Query<ThumbnailQuery>,
    _signed: Signed,
) -> Result<Response> {
    check_media_id(&media_id)?;
    if query.width == 0 || query.height == 0 {
        return Err(Error::InvalidParam(
            "width and height must be at least 1".into(),
        ));
    }
    let server = state.media.server_name().to_string();
    let content = state
        .media
        .content(&server, &media_id, wait(query.timeout_ms), false)
        .await?;
    let request = ThumbnailRequest {
        width: query.width,
        height: query.height,
        method: query.method.unwrap_or(Method::Scale),
        animated: query.animated.unwrap_or(false),
    };
    let file = state.media.thumbnail(&content, request).await?;
    let disposition = content_disposition(&file.content_type, Some("thumbnail"));
    multipart_response(&file, &disposition).await
}
