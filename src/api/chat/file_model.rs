//! The File object of the Chat API, and the checks for a `*_file_id` field of a request. A file
//! is a media item of the content repository on this server: its ID is the media ID, its `url`
//! the authenticated download path of its `mxc://` URI.

use ruma::UserId;
use serde_json::{Value, json};

use super::error::{ChatError, ChatResult};
use super::model::media_url;
use crate::api::extract::AppState;
use crate::service::media::{Content, MediaRecord, is_valid_media_id};

/// The name a file gets when neither the request nor the upload named it.
pub const DEFAULT_FILE_NAME: &str = "file";

/// The pixel size of an image, when it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimensions {
    pub width: u32,
    pub height: u32,
}

/// `mxc://<server>/<media ID>` of a local media item.
pub fn mxc_uri(state: &AppState, media_id: &str) -> String {
    format!("mxc://{}/{media_id}", state.media.server_name())
}

/// The File object of an uploaded media item: `{id, name, mime_type, size, url, created_at,
/// uploader}`, plus `width` and `height` when `dimensions` are known.
pub fn file_object(
    state: &AppState,
    record: &MediaRecord,
    content: &Content,
    dimensions: Option<Dimensions>,
) -> Value {
    let mut file = json!({
        "id": record.media_id,
        "name": content.filename.as_deref().unwrap_or(DEFAULT_FILE_NAME),
        "mime_type": content.content_type,
        "size": content.size,
        "url": media_url(&mxc_uri(state, &record.media_id)),
        "created_at": record.created_ts,
        "uploader": record.uploader,
    });
    if let Some(d) = dimensions {
        file["width"] = json!(d.width);
        file["height"] = json!(d.height);
    }
    file
}

/// Reads the pixel size of an image from its header (not decoding it); `None` for content that
/// is not an image we read (JPEG, PNG, GIF, WebP) or whose header is unreadable.
pub async fn image_dimensions(state: &AppState, content: &Content) -> Option<Dimensions> {
    crate::service::media::thumbnail::source_format(&content.content_type)?;
    let path = state.media.servable(content).ok()?.path;
    tokio::task::spawn_blocking(move || {
        let reader = image::ImageReader::open(path)
            .ok()?
            .with_guessed_format()
            .ok()?;
        let (width, height) = reader.into_dimensions().ok()?;
        Some(Dimensions { width, height })
    })
    .await
    .ok()
    .flatten()
}

/// The uploaded media item that a request names in the field `field` (`picture_file_id`,
/// `file_id` …): a local media ID, with content, uploaded by `user`. Anything else is 400
/// `invalid_request`, so that other users' uploads cannot be probed or reused through it.
pub fn own_file(
    state: &AppState,
    user: &UserId,
    field: &str,
    file_id: &str,
) -> ChatResult<(MediaRecord, Content)> {
    if !is_valid_media_id(file_id) {
        return Err(ChatError::invalid(format!("{field}: not a file ID")));
    }
    let missing = || ChatError::invalid(format!("{field}: no such file among your uploads"));
    let record = state
        .media
        .get(state.media.server_name().as_str(), file_id)?
        .filter(|r| r.uploader == user.as_str())
        .ok_or_else(missing)?;
    let content = record.content.clone().ok_or_else(missing)?;
    Ok((record, content))
}

/// [`own_file`] for a field that must name an image (`picture_file_id`, `avatar_file_id`): 400
/// also when the upload is not an image.
pub fn own_image(
    state: &AppState,
    user: &UserId,
    field: &str,
    file_id: &str,
) -> ChatResult<(MediaRecord, Content)> {
    let (record, content) = own_file(state, user, field, file_id)?;
    if !content.content_type.starts_with("image/") {
        return Err(ChatError::invalid(format!("{field}: not an image")));
    }
    Ok((record, content))
}
