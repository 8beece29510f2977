//! The one error shape of the Chat API: `{"error": {"code": "...", "message": "..."}}`, with the
//! HTTP status that fits. Errors of the shared services (Matrix errors) are mapped onto it, so a
//! handler can use `?` on any service call.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

pub type ChatResult<T> = std::result::Result<T, ChatError>;

#[derive(Debug)]
pub struct ChatError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
    /// Set for `rate_limited`: also sent as `Retry-After` (seconds) and `retry_after_ms`.
    pub retry_after_ms: Option<u64>,
}

impl ChatError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// 400 `invalid_request`: a field is missing, malformed or out of range.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404 `not_found`: also the answer for other users' chats, so that their existence does
    /// not leak.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(ms) = self.retry_after_ms {
            error["retry_after_ms"] = json!(ms);
        }
        json!({ "error": error })
    }
}

impl std::fmt::Display for ChatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The Chat API code of a shared-service error.
fn code_of(error: &Error, status: StatusCode) -> &'static str {
    use Error::*;
    match error {
        NotFound(_) | Unrecognized(_) => "not_found",
        MethodNotAllowed => "method_not_allowed",
        Forbidden(_) | GuestAccessForbidden => "forbidden",
        NotJson(_) | BadJson(_) | InvalidParam(_) | MissingParam(_) | Unknown(_) => {
            "invalid_request"
        }
        MissingToken | UnknownToken { .. } | Unauthorized(_) => "unauthorized",
        InvalidUsername(_) => "invalid_username",
        UserInUse => "username_taken",
        UserDeactivated => "account_deactivated",
        WeakPassword(_) => "weak_password",
        TooLarge(_) => "too_large",
        LimitExceeded { .. } => "rate_limited",
        ThreepidAuthFailed(_) | TokenIncorrect(_) => "invalid_token",
        ThreepidMediumNotSupported(_) | ThreepidNotFound(_) => "invalid_request",
        SecondFactorRequired { .. } => "mfa_required",
        Conflict(_) | RoomInUse(_) | CannotOverwriteMedia(_) => "conflict",
        DuplicateAnnotation(_) => "duplicate_reaction",
        // Another homeserver (the one holding a group of another server) could not be reached
        // or failed; its refusals (4xx) keep their own codes above.
        Unreachable(_) => "unreachable",
        Remote { .. } if status.is_server_error() => "unreachable",
        _ if status == StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ if status.is_server_error() => "internal",
        _ => "invalid_request",
    }
}

impl From<Error> for ChatError {
    fn from(error: Error) -> Self {
        let (status, _) = error.status_and_code();
        if status.is_server_error()
            && !matches!(
                error,
                Error::NotYetUploaded(_) | Error::Unreachable(_) | Error::Remote { .. }
            )
        {
            tracing::error!(error = %error, "chat request failed");
        }
        // The Matrix body already hides internal details (storage errors and the like).
        let message = error
            .body()
            .get("error")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| error.to_string());
        // 409 for a taken name or a reaction given twice: conflicts, whatever the Matrix API
        // answers.
        let status = match error {
            Error::UserInUse | Error::DuplicateAnnotation(_) => StatusCode::CONFLICT,
            _ => status,
        };
        let retry_after_ms = match error {
            Error::LimitExceeded { retry_after_ms } => Some(retry_after_ms),
            _ => None,
        };
        ChatError {
            status,
            code: Cow::Borrowed(code_of(&error, status)),
            message,
            retry_after_ms,
        }
    }
}

impl From<crate::storage::StorageError> for ChatError {
    fn from(error: crate::storage::StorageError) -> Self {
        Error::from(error).into()
    }
}

impl From<serde_json::Error> for ChatError {
    fn from(error: serde_json::Error) -> Self {
        Error::internal(error).into()
    }
}

impl IntoResponse for ChatError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(ms) = self.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
