//! Chat API: files. `POST /files` streams a `multipart/form-data` upload into the content
//! repository (the same store, limits and quota as the Matrix upload), `DELETE /files/{id}`
//! deletes one of the caller's uploads, and `GET /chats/{id}/files` (see [`super::chat_files`])
//! lists the files shared in a chat.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartError;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::routing::{delete, get, post};
use futures_util::StreamExt;
use serde_json::Value;

use super::chat_files;
use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatPath};
use super::file_model::{file_object, image_dimensions};
use crate::api::Routes;
use crate::api::extract::AppState;
use crate::error::Error;
use crate::service::media::is_valid_media_id;

/// Room in the request body for the form around the file: boundaries, part headers, the `name`
/// field. A body longer than the upload limit plus this is refused before the file ends.
const FORM_OVERHEAD: u64 = 64 * 1024;

/// The longest `name` field, in bytes, and file name, in characters.
const MAX_NAME_BYTES: usize = 1024;
const MAX_NAME_CHARS: usize = 255;

pub(super) fn routes(routes: Routes) -> Routes {
    // The body limit of axum's extractors (2 MiB) would cut uploads short: the upload limit of
    // the configuration applies instead (see `capped`).
    routes
        .route("/files", post(upload).layer(DefaultBodyLimit::disable()))
        .route("/files/{id}", delete(delete_file))
        .route("/chats/{id}/files", get(chat_files::list))
}

fn too_large(limit: u64) -> ChatError {
    ChatError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the file exceeds the upload limit of {limit} bytes"),
    )
}

/// The request body, failing once more than `cap` bytes have come (and setting `over`), so that
/// a body without `Content-Length` cannot run past the limit either.
fn capped(body: Body, cap: u64, over: Arc<AtomicBool>) -> Body {
    let mut seen: u64 = 0;
    Body::from_stream(body.into_data_stream().map(move |chunk| {
        let chunk = chunk?;
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > cap {
            over.store(true, Ordering::Relaxed);
            return Err(axum::Error::new(std::io::Error::other(
                "the request body is too large",
            )));
        }
        Ok(chunk)
    }))
}

/// A malformed form is 400; a body cut off by the cap is 413.
fn form_error(error: &MultipartError, over: &AtomicBool, limit: u64) -> ChatError {
    if over.load(Ordering::Relaxed) || error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return too_large(limit);
    }
    ChatError::invalid(format!(
        "the body is not valid multipart/form-data: {}",
        error.body_text()
    ))
}

/// Reads the `name` field (bounded), as UTF-8.
async fn read_name(
    field: &mut axum::extract::multipart::Field<'_>,
    over: &AtomicBool,
    limit: u64,
) -> ChatResult<String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| form_error(&e, over, limit))?
    {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_NAME_BYTES {
            return Err(ChatError::invalid(format!(
                "name: longer than {MAX_NAME_CHARS} characters"
            )));
        }
    }
    String::from_utf8(bytes).map_err(|_| ChatError::invalid("name: not UTF-8"))
}

/// Checks a file name: at most 255 characters, no control characters; the last path segment of
/// what browsers send (`C:\fakepath\photo.png`). Empty means none.
fn clean_name(raw: &str) -> ChatResult<Option<String>> {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ChatError::invalid(format!(
            "name: longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ChatError::invalid("name: control characters"));
    }
    Ok((!name.is_empty()).then(|| name.to_owned()))
}

/// The MIME type of a file sent without one, from its name's extension; `None` leaves it to the
/// content repository (`application/octet-stream`).
fn guess_mime_type(name: &str) -> Option<&'static str> {
    let (_, extension) = name.rsplit_once('.')?;
    Some(match extension.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "m4a" => "audio/mp4",
        "wav" => "audio/wav",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "zip" => "application/zip",
        _ => return None,
    })
}

/// `POST /files`: `multipart/form-data` with the field `file` (its part's `Content-Type` is the
/// file's MIME type) and, before it, an optional `name` (else the part's file name). The file is
/// streamed to disk, never held in memory. 201 with the File object.
async fn upload(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    request: Request,
) -> ChatResult<(StatusCode, Json<Value>)> {
    let limit = state.config.media.max_upload_bytes;
    let cap = limit.saturating_add(FORM_OVERHEAD);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_large(limit));
    }
    let over = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let request = Request::from_parts(parts, capped(body, cap, over.clone()));
    let mut form = Multipart::from_request(request, &state)
        .await
        .map_err(|e| {
            ChatError::invalid(format!(
                "the body must be multipart/form-data with a boundary: {}",
                e.body_text()
            ))
        })?;
    // `Some` once the `name` field came (`Some(None)` when it was empty).
    let mut name: Option<Option<String>> = None;
    let media_id = loop {
        let Some(mut field) = form
            .next_field()
            .await
            .map_err(|e| form_error(&e, &over, limit))?
        else {
            return Err(ChatError::invalid("the form has no `file` field"));
        };
        match field.name() {
            Some("name") if name.is_none() => {
                name = Some(clean_name(&read_name(&mut field, &over, limit).await?)?);
            }
            Some("name") => return Err(ChatError::invalid("name: given twice")),
            Some("file") => {
                let name = match name.take().flatten() {
                    Some(name) => Some(name),
                    None => field.file_name().map(clean_name).transpose()?.flatten(),
                };
                let mime_type = field
                    .content_type()
                    .map(str::to_owned)
                    .or_else(|| name.as_deref().and_then(guess_mime_type).map(str::to_owned));
                let uploaded = state
                    .media
                    .upload(&auth.user_id, mime_type.as_deref(), name, None, field)
                    .await;
                break uploaded.map_err(|e| upload_error(e, &over, limit))?;
            }
            Some(other) => {
                return Err(ChatError::invalid(format!(
                    "unknown form field `{other}`: expected `name` and `file`"
                )));
            }
            None => return Err(ChatError::invalid("a form field without a name")),
        }
    };
    // The file must be the form's last field (and the form must end properly): otherwise the
    // upload is undone.
    let trailing = match form.next_field().await {
        Ok(None) => None,
        Ok(Some(_)) => Some(ChatError::invalid(
            "the `file` field must be the last field of the form (put `name` before it)",
        )),
        Err(e) => Some(form_error(&e, &over, limit)),
    };
    if let Some(error) = trailing {
        state
            .media
            .delete(state.media.server_name().as_str(), &media_id)
            .await?;
        return Err(error);
    }
    let record = state
        .media
        .get(state.media.server_name().as_str(), &media_id)?
        .ok_or_else(|| Error::internal("an upload vanished"))?;
    let content = record
        .content
        .clone()
        .ok_or_else(|| Error::internal("an upload without content"))?;
    let dimensions = image_dimensions(&state, &content).await;
    Ok((
        StatusCode::CREATED,
        Json(file_object(&state, &record, &content, dimensions)),
    ))
}

/// The error of a failed upload: the body cut by the cap is 413, the user's quota 403
/// `quota_exceeded`, a broken form 400.
fn upload_error(error: Error, over: &AtomicBool, limit: u64) -> ChatError {
    if over.load(Ordering::Relaxed) {
        return too_large(limit);
    }
    match error {
        // The only refusal of a direct upload: the quota.
        Error::Forbidden(message) => {
            ChatError::new(StatusCode::FORBIDDEN, "quota_exceeded", message)
        }
        Error::Unknown(message) => ChatError::invalid(message),
        other => other.into(),
    }
}

/// `DELETE /files/{id}`: deletes one of the caller's uploads (the file stays on disk while other
/// uploads share its content). 204; 403 for someone else's file; 404 for an unknown one.
async fn delete_file(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
) -> ChatResult<StatusCode> {
    if !is_valid_media_id(&id) {
        return Err(ChatError::invalid("not a file ID"));
    }
    let server = state.media.server_name().to_string();
    let record = state
        .media
        .get(&server, &id)?
        .ok_or_else(|| ChatError::not_found("no such file"))?;
    if record.uploader != auth.user_id.as_str() {
        return Err(ChatError::forbidden("only the uploader can delete a file"));
    }
    if !state.media.delete(&server, &id).await? {
        return Err(ChatError::not_found("no such file"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_cleaned() {
        assert_eq!(
            clean_name("C:\\fakepath\\cat.png")
                .ok()
                .flatten()
                .as_deref(),
            Some("cat.png")
        );
        assert_eq!(
            clean_name(" a/b/notes.txt ").ok().flatten().as_deref(),
            Some("notes.txt")
        );
        assert!(clean_name("").is_ok_and(|n| n.is_none()));
        assert!(clean_name("bad\nname").is_err());
        assert!(clean_name(&"x".repeat(256)).is_err());
        assert!(clean_name(&"é".repeat(255)).is_ok());
    }

    #[test]
    fn mime_types_are_guessed_from_known_extensions() {
        assert_eq!(guess_mime_type("Photo.JPG"), Some("image/jpeg"));
        assert_eq!(guess_mime_type("song.mp3"), Some("audio/mpeg"));
        assert_eq!(guess_mime_type("archive.tar.unknown"), None);
        assert_eq!(guess_mime_type("README"), None);
    }
}
