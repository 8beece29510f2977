//! The refusals of the membership handshakes that need error codes of the Server-Server API
//! besides the common ones.

use ruma::RoomVersionId;

use crate::error::Error;

/// Why a `make_join`, `send_join` (or another handshake step) was refused.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The room's version is not among those the joining server speaks: 400
    /// `M_INCOMPATIBLE_ROOM_VERSION`, with the room's version.
    #[error("the room is of version {0}, which the requesting server does not support")]
    IncompatibleRoomVersion(RoomVersionId),
    /// A restricted room whose allow conditions this server cannot check (it is in none of the
    /// rooms they name): 400 `M_UNABLE_TO_AUTHORISE_JOIN`.
    #[error("{0}")]
    UnableToAuthoriseJoin(String),
    /// The user meets a condition, but no member of this server may let them in: 400
    /// `M_UNABLE_TO_GRANT_JOIN` (another resident server may).
    #[error("{0}")]
    UnableToGrantJoin(String),
    #[error(transparent)]
    Other(#[from] Error),
}

impl From<crate::core::Error> for HandshakeError {
    fn from(e: crate::core::Error) -> Self {
        Self::Other(e.into())
    }
}

impl From<crate::storage::StorageError> for HandshakeError {
    fn from(e: crate::storage::StorageError) -> Self {
        Self::Other(e.into())
    }
}
