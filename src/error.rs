//! The one error type of the library and its mapping to Matrix error JSON.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::storage::{StorageError, TxOutcome};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of the 503 answered while the disk refuses writes (full, read-only, failing) and
/// until the database has been reopened.
pub const STORAGE_UNAVAILABLE: &str =
    "the server's storage is unavailable (disk full or not writable); try again later";

/// The `Retry-After` of that answer, in seconds.
const STORAGE_RETRY_AFTER_SECS: &str = "2";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unrecognized(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    NotJson(String),
    #[error("{0}")]
    BadJson(String),
    #[error("{0}")]
    InvalidParam(String),
    #[error("{0}")]
    MissingParam(String),
    #[error("missing access token")]
    MissingToken,
    #[error("{message}")]
    UnknownToken { message: String, soft_logout: bool },
    #[error("{0}")]
    InvalidUsername(String),
    #[error("the user ID is already taken")]
    UserInUse,
    #[error("this account has been deactivated")]
    UserDeactivated,
    #[error("{0}")]
    WeakPassword(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("too many requests")]
    LimitExceeded { retry_after_ms: u64 },
    #[error("guest access is disabled")]
    GuestAccessForbidden,
    #[error("{0}")]
    ThreepidAuthFailed(String),
    #[error("{0}")]
    ThreepidMediumNotSupported(String),
    #[error("{0}")]
    ThreepidNotFound(String),
    #[error("{0}")]
    TokenIncorrect(String),
    #[error("{0}")]
    Unauthorized(String),
    /// User-interactive authentication: 401 with the flows (and `errcode` when a stage failed).
    #[error("user-interactive authentication required")]
    Uiaa(Box<Value>),
    /// Password login succeeded, a second factor is needed: 401 with a challenge session.
    #[error("a second factor is required")]
    SecondFactorRequired { session: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Unknown(String),
    #[error("{0}")]
    UnsupportedRoomVersion(String),
    /// A type the server manages itself (405 `M_BAD_JSON`, as the specification says).
    #[error("{0}")]
    ServerManaged(String),
    /// Something with that name already exists (`PUT /directory/room/{alias}`): 409 `M_UNKNOWN`.
    #[error("{0}")]
    Conflict(String),
    /// `createRoom` with a room alias that is taken: 400 `M_ROOM_IN_USE`.
    #[error("{0}")]
    RoomInUse(String),
    /// Media created but not uploaded before the download's timeout: 504 `M_NOT_YET_UPLOADED`.
    #[error("{0}")]
    NotYetUploaded(String),
    /// An upload to a media ID that already has content: 409 `M_CANNOT_OVERWRITE_MEDIA`.
    #[error("{0}")]
    CannotOverwriteMedia(String),
    /// Keys sent to a backup version that is not the latest: 403 `M_WRONG_ROOM_KEYS_VERSION`.
    #[error("the backup version is not the current one")]
    WrongRoomKeysVersion { current_version: Option<String> },
    /// A key signature that is missing or does not verify: 400 `M_INVALID_SIGNATURE`.
    #[error("{0}")]
    InvalidSignature(String),
    /// A second identical reaction from the same user: 400 `M_DUPLICATE_ANNOTATION`.
    #[error("{0}")]
    DuplicateAnnotation(String),
    /// Another homeserver could not be reached, or failed (federation).
    #[error("{0}")]
    Unreachable(String),
    /// Another homeserver refused a request: its status and Matrix error, relayed.
    #[error("{server}: {message}")]
    Remote {
        server: String,
        status: u16,
        errcode: String,
        message: String,
    },
    /// The `m.room.server_acl` of the room bans the requesting server (federation).
    #[error("{0}")]
    ServerAcl(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }

    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use Error::*;
        match self {
            Forbidden(_) => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            NotFound(_) => (StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            Unrecognized(_) => (StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED"),
            NotJson(_) => (StatusCode::BAD_REQUEST, "M_NOT_JSON"),
            BadJson(_) => (StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            InvalidParam(_) => (StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            MissingParam(_) => (StatusCode::BAD_REQUEST, "M_MISSING_PARAM"),
            MissingToken => (StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN"),
            UnknownToken { .. } => (StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN"),
            InvalidUsername(_) => (StatusCode::BAD_REQUEST, "M_INVALID_USERNAME"),
            UserInUse => (StatusCode::BAD_REQUEST, "M_USER_IN_USE"),
            UserDeactivated => (StatusCode::FORBIDDEN, "M_USER_DEACTIVATED"),
            WeakPassword(_) => (StatusCode::BAD_REQUEST, "M_WEAK_PASSWORD"),
            TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            LimitExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
            GuestAccessForbidden => (StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN"),
            ThreepidAuthFailed(_) => (StatusCode::UNAUTHORIZED, "M_THREEPID_AUTH_FAILED"),
            ThreepidMediumNotSupported(_) => {
                (StatusCode::BAD_REQUEST, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
            }
            ThreepidNotFound(_) => (StatusCode::BAD_REQUEST, "M_THREEPID_NOT_FOUND"),
            TokenIncorrect(_) => (StatusCode::BAD_REQUEST, "M_TOKEN_INCORRECT"),
            Unauthorized(_) => (StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
            Uiaa(_) => (StatusCode::UNAUTHORIZED, "M_FORBIDDEN"),
            SecondFactorRequired { .. } => (StatusCode::UNAUTHORIZED, "ORG.ROOST.TOTP_REQUIRED"),
            Unknown(_) => (StatusCode::BAD_REQUEST, "M_UNKNOWN"),
            UnsupportedRoomVersion(_) => (StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION"),
            ServerManaged(_) => (StatusCode::METHOD_NOT_ALLOWED, "M_BAD_JSON"),
            Conflict(_) => (StatusCode::CONFLICT, "M_UNKNOWN"),
            RoomInUse(_) => (StatusCode::BAD_REQUEST, "M_ROOM_IN_USE"),
            NotYetUploaded(_) => (StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED"),
            CannotOverwriteMedia(_) => (StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA"),
            DuplicateAnnotation(_) => (StatusCode::BAD_REQUEST, "M_DUPLICATE_ANNOTATION"),
            InvalidSignature(_) => (StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE"),
            WrongRoomKeysVersion { .. } => (StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION"),
            Unreachable(_) => (StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
            // Refusals are relayed (a remote 403 stays a 403); a remote failure is a bad gateway.
            Remote {
                status, errcode, ..
            } => match *status {
                400 => (StatusCode::BAD_REQUEST, remote_code(errcode)),
                401 | 403 => (StatusCode::FORBIDDEN, remote_code(errcode)),
                404 => (StatusCode::NOT_FOUND, remote_code(errcode)),
                429 => (StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED"),
                _ => (StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
            },
            ServerAcl(_) => (StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            Storage(e) if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN"),
            Storage(_) | Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN"),
        }
    }

    /// The JSON body of the error response.
    pub fn body(&self) -> Value {
        let (_, code) = self.status_and_code();
        match self {
            Error::Uiaa(info) => (**info).clone(),
            Error::Storage(e) if e.is_unavailable() => json!({
                "errcode": code,
                "error": STORAGE_UNAVAILABLE,
            }),
            Error::Storage(_) | Error::Internal(_) => {
                json!({ "errcode": code, "error": "internal server error" })
            }
            Error::UnknownToken {
                message,
                soft_logout,
            } => json!({ "errcode": code, "error": message, "soft_logout": soft_logout }),
            Error::LimitExceeded { retry_after_ms } => json!({
                "errcode": code,
                "error": "too many requests",
                "retry_after_ms": retry_after_ms,
            }),
            Error::SecondFactorRequired { session } => json!({
                "errcode": code,
                "error": "this account has two-factor login enabled: send a TOTP or recovery code",
                "session": session,
                "flows": [{ "stages": ["org.roost.login.totp"] }],
            }),
            Error::WrongRoomKeysVersion { current_version } => json!({
                "errcode": code,
                "error": self.to_string(),
                "current_version": current_version,
            }),
            other => json!({ "errcode": code, "error": other.to_string() }),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        // A download that timed out waiting for an upload is not a server failure.
        if status.is_server_error() && !matches!(self, Error::NotYetUploaded(_)) {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Error::LimitExceeded { retry_after_ms } = self {
            let secs = retry_after_ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(STORAGE_RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// The error code of a remote refusal, as one of ours: the common codes pass through, anything
/// else becomes `M_UNKNOWN` (the status still tells what happened).
fn remote_code(errcode: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "M_FORBIDDEN",
        "M_NOT_FOUND",
        "M_UNRECOGNIZED",
        "M_BAD_JSON",
        "M_NOT_JSON",
        "M_INVALID_PARAM",
        "M_MISSING_PARAM",
        "M_TOO_LARGE",
        "M_UNSUPPORTED_ROOM_VERSION",
        "M_INCOMPATIBLE_ROOM_VERSION",
        "M_LIMIT_EXCEEDED",
        "M_UNAUTHORIZED",
    ];
    KNOWN
        .iter()
        .find(|known| **known == errcode)
        .copied()
        .unwrap_or("M_UNKNOWN")
}

impl From<TxOutcome<Error>> for Error {
    fn from(outcome: TxOutcome<Error>) -> Self {
        match outcome {
            TxOutcome::Aborted(e) => e,
            TxOutcome::Storage(e) => Error::Storage(e),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Storage(StorageError::Corrupt(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_storage_answers_503_with_retry_after() {
        let response = Error::Storage(StorageError::Reopening).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static(STORAGE_RETRY_AFTER_SECS))
        );
        let error = Error::Storage(StorageError::Reopening);
        assert_eq!(
            error.body(),
            json!({ "errcode": "M_UNKNOWN", "error": STORAGE_UNAVAILABLE })
        );

        // Corrupt data is a bug, not an outage: 500 without details and without Retry-After.
        let error = Error::Storage(StorageError::Corrupt("bad json".into()));
        assert_eq!(
            error.status_and_code(),
            (StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN")
        );
        assert_eq!(error.body()["error"], "internal server error");
        let response = error.into_response();
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
}
