//! The error type of the pure protocol logic.

use ruma::{OwnedEventId, RoomVersionId};

use crate::core::pdu::MAX_PDU_BYTES;

/// Why a protocol operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// We do not implement this room version (we speak the stable versions 1 to 12).
    #[error("room version {0} is not supported")]
    UnsupportedRoomVersion(RoomVersionId),

    /// A required field of an event is absent.
    #[error("missing `{0}` field")]
    MissingField(&'static str),

    /// A field of an event is present but malformed.
    #[error("invalid `{field}` field: {reason}")]
    InvalidField {
        /// The field name, as in the event JSON.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The event, as canonical JSON, is bigger than the spec allows.
    #[error("event is {size} bytes of canonical JSON, over the {MAX_PDU_BYTES}-byte limit")]
    TooLarge {
        /// The size that was measured.
        size: usize,
    },

    /// A value cannot be represented as canonical JSON (floats, out-of-range integers …), or
    /// hashing and signing failed on the JSON structure.
    #[error("canonical JSON: {0}")]
    CanonicalJson(String),

    /// The signatures of an event are missing, malformed or do not match its servers' keys.
    #[error("bad signature: {0}")]
    InvalidSignature(String),

    /// An event needed by the computation is not known to the lookup.
    #[error("event {0} not found")]
    EventNotFound(OwnedEventId),

    /// The event fails the authorisation rules.
    #[error("event not authorised: {0}")]
    Unauthorized(String),

    /// State resolution could not complete.
    #[error("state resolution failed: {0}")]
    StateResolution(#[from] ruma::state_res::Error),
}

impl From<ruma::CanonicalJsonError> for Error {
    fn from(error: ruma::CanonicalJsonError) -> Self {
        Self::CanonicalJson(error.to_string())
    }
}

impl From<ruma::canonical_json::CanonicalJsonFieldError> for Error {
    fn from(error: ruma::canonical_json::CanonicalJsonFieldError) -> Self {
        Self::CanonicalJson(error.to_string())
    }
}
