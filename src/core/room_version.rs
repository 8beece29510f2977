//! The room versions we speak, and their rules.

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

use crate::core::Error;

/// The room versions this server creates and joins, oldest first.
pub const SUPPORTED: &[RoomVersionId] =
    &[RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

/// The version used for new rooms unless the client asks for another.
pub const DEFAULT: RoomVersionId = RoomVersionId::V12;

/// Whether we speak this room version.
pub fn is_supported(version: &RoomVersionId) -> bool {
    SUPPORTED.contains(version)
}

/// The rules of a supported room version.
pub fn rules(version: &RoomVersionId) -> Result<RoomVersionRules, Error> {
    if !is_supported(version) {
        return Err(Error::UnsupportedRoomVersion(version.clone()));
    }
    version
        .rules()
        .ok_or_else(|| Error::UnsupportedRoomVersion(version.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_versions_have_rules() {
        for version in SUPPORTED {
            assert!(rules(version).is_ok(), "{version}");
        }
        assert!(is_supported(&DEFAULT));
    }

    #[test]
    fn old_versions_are_refused() {
        for version in [RoomVersionId::V1, RoomVersionId::V6, RoomVersionId::V9] {
            assert!(
                matches!(rules(&version), Err(Error::UnsupportedRoomVersion(v)) if v == version)
            );
        }
    }
}
