//! Media of other servers for our clients: fetched over federation
//! (`GET /_matrix/federation/v1/media/download/{mediaId}`, a `multipart/mixed` answer) the first
//! time a client asks, cached in the content repository, and served from there afterwards.
//!
//! Concurrent requests for the same item share one fetch (and, for a few seconds, its failure).
//! The answer is read up to `media.max_upload_bytes` (what we would accept as an upload). A
//! server that does not know the federation endpoint (`404 M_UNRECOGNIZED`) is asked on the
//! deprecated `/_matrix/media/v3/download` route with `allow_remote=false`, as the specification
//! says. A media part that only names a `Location` is not followed: the URL could lead anywhere,
//! and the address policy that keeps federation away from internal services only covers server
//! names.

use std::time::Duration;

use axum::http::{Method, header};
use ruma::ServerName;
use ruma::http_headers::ContentDisposition;
use serde_json::Value;

use super::multipart;
use super::receiver::fetch::encode;
use super::request::remote_error;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::media::Content;
use crate::service::media::remote::FetchedMedia;

/// What a multipart answer may hold besides the media (boundaries, headers, the metadata).
const MULTIPART_OVERHEAD: usize = 64 << 10;

/// How a client asks for media.
#[derive(Debug, Clone, Copy)]
pub struct MediaRequest {
    /// How long to wait for a local item created but not uploaded yet.
    pub wait: Duration,
    /// Whether it came through the deprecated unauthenticated routes (which never fetch).
    pub legacy: bool,
    /// Whether another server's media may be fetched (the client's `allow_remote`).
    pub allow_remote: bool,
}

impl Services {
    /// The content of a media item for a client of ours: local media as the content repository
    /// has it; another server's from the cache, else fetched from that server and cached.
    pub async fn media_content(
        &self,
        server: &str,
        media_id: &str,
        request: MediaRequest,
    ) -> Result<Content> {
        let local = self.media.server_name().as_str() == server;
        let cached = self
            .media
            .content(server, media_id, request.wait, request.legacy)
            .await;
        let may_fetch = !local && !request.legacy && request.allow_remote;
        match cached {
            Err(Error::NotFound(_)) if may_fetch && self.federation.enabled() => {}
            other => return other,
        }
        let origin = ServerName::parse(server)
            .map_err(|e| Error::InvalidParam(format!("invalid server name: {e}")))?;
        let _fetching = self.media.lock_remote(server, media_id).await;
        // Whoever held the lock before us may have cached it, or failed moments ago.
        match self
            .media
            .content(server, media_id, request.wait, false)
            .await
        {
            Err(Error::NotFound(_)) => {}
            other => return other,
        }
        if let Some(error) = self.media.recent_remote_failure(server, media_id) {
            return Err(error);
        }
        let fetched = match self.fetch_remote_media(&origin, media_id).await {
            Ok(fetched) => fetched,
            Err(e) => {
                self.media.record_remote_failure(server, media_id, &e);
                return Err(e);
            }
        };
        self.media.cache_remote(server, media_id, fetched).await
    }

    /// Downloads a media item from its server.
    async fn fetch_remote_media(
        &self,
        origin: &ServerName,
        media_id: &str,
    ) -> Result<FetchedMedia> {
        let limit = usize::try_from(self.config.media.max_upload_bytes).unwrap_or(usize::MAX);
        let path = format!("/_matrix/federation/v1/media/download/{media_id}");
        let response = self
            .federation
            .request_raw(
                origin,
                Method::GET,
                &path,
                None,
                limit.saturating_add(MULTIPART_OVERHEAD),
            )
            .await?;
        let status = response.status().as_u16();
        if status == 200 {
            let fetched = parse_media_answer(&response).map_err(|reason| {
                Error::Unreachable(format!("{origin} answered a media download with {reason}"))
            })?;
            return check_size(fetched, limit);
        }
        let body: Option<Value> = serde_json::from_slice(response.body()).ok();
        let errcode = body
            .as_ref()
            .and_then(|b| b.get("errcode"))
            .and_then(Value::as_str);
        match (status, errcode) {
            (404, Some("M_UNRECOGNIZED")) => self.fetch_legacy_media(origin, media_id, limit).await,
            (404, _) => Err(Error::NotFound("media not found".into())),
            _ => Err(remote_error(origin, status, body.as_ref())),
        }
    }

    /// Downloads a media item from a server without the federation media endpoints.
    async fn fetch_legacy_media(
        &self,
        origin: &ServerName,
        media_id: &str,
        limit: usize,
    ) -> Result<FetchedMedia> {
        let path = format!(
            "/_matrix/media/v3/download/{}/{media_id}?allow_remote=false",
            encode(origin.as_str())
        );
        let response = self
            .federation
            .request_raw(origin, Method::GET, &path, None, limit)
            .await?;
        let status = response.status().as_u16();
        if status != 200 {
            let body: Option<Value> = serde_json::from_slice(response.body()).ok();
            return Err(match status {
                404 => Error::NotFound("media not found".into()),
                _ => remote_error(origin, status, body.as_ref()),
            });
        }
        let header = |name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let filename = response
            .headers()
            .get(header::CONTENT_DISPOSITION)
            .and_then(|v| ContentDisposition::try_from(v.as_bytes()).ok())
            .and_then(|d| d.filename);
        let fetched = FetchedMedia {
            content_type: header(header::CONTENT_TYPE),
            filename,
            bytes: response.into_body(),
        };
        check_size(fetched, limit)
    }
}

/// The media of a `multipart/mixed` download answer: the second part's bytes, type and file
/// name. A `Location` part is refused (see the module documentation).
fn parse_media_answer(
    response: &axum::http::Response<Vec<u8>>,
) -> std::result::Result<FetchedMedia, String> {
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or("no content type")?;
    let boundary = multipart::boundary_of(content_type)?;
    let parts = multipart::parse(&boundary, response.body())?;
    let [metadata, media] = parts.as_slice() else {
        return Err(format!("{} parts instead of 2", parts.len()));
    };
    if !serde_json::from_slice::<Value>(metadata.body).is_ok_and(|m| m.is_object()) {
        return Err("metadata that is not a JSON object".into());
    }
    if media.header("location").is_some() {
        return Err("a redirection (Location), which is not followed".into());
    }
    let filename = media
        .header("content-disposition")
        .and_then(|v| ContentDisposition::try_from(v.as_bytes()).ok())
        .and_then(|d| d.filename);
    Ok(FetchedMedia {
        bytes: media.body.to_vec(),
        content_type: media.header("content-type").map(str::to_owned),
        filename,
    })
}

/// Refuses media larger than we would accept as an upload.
fn check_size(fetched: FetchedMedia, limit: usize) -> Result<FetchedMedia> {
    if fetched.bytes.len() > limit {
        return Err(Error::TooLarge(format!(
            "the remote media exceeds the limit of {limit} bytes"
        )));
    }
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(content_type: &str, body: &[u8]) -> axum::http::Response<Vec<u8>> {
        axum::http::Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .body(body.to_vec())
            .unwrap()
    }

    #[test]
    fn media_answers_are_read() {
        let boundary = multipart::new_boundary();
        let mut body =
            multipart::media_head(&boundary, "image/png", "inline; filename=\"cat.png\"");
        body.extend_from_slice(b"PNGDATA");
        body.extend_from_slice(&multipart::media_tail(&boundary));
        let fetched =
            parse_media_answer(&answer(&multipart::content_type(&boundary), &body)).unwrap();
        assert_eq!(fetched.bytes, b"PNGDATA");
        assert_eq!(fetched.content_type.as_deref(), Some("image/png"));
        assert_eq!(fetched.filename.as_deref(), Some("cat.png"));
        assert!(check_size(fetched, 6).is_err());
    }

    #[test]
    fn redirections_and_bad_answers_are_refused() {
        let location = b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\n\
                         Location: http://127.0.0.1/secret\r\n\r\n\r\n--b--";
        assert!(parse_media_answer(&answer("multipart/mixed; boundary=b", location)).is_err());
        let not_json = b"--b\r\n\r\nnope\r\n--b\r\n\r\nx\r\n--b--";
        assert!(parse_media_answer(&answer("multipart/mixed; boundary=b", not_json)).is_err());
        let one_part = b"--b\r\n\r\n{}\r\n--b--";
        assert!(parse_media_answer(&answer("multipart/mixed; boundary=b", one_part)).is_err());
        assert!(parse_media_answer(&answer("image/png", b"x")).is_err());
    }
}
