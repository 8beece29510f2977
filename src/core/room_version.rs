//! The room versions we speak, and their rules.
//!
//! Two sets: the versions we *support* (every stable version, so that users can join and follow
//! rooms other servers created, whatever their age) and the smaller set we *create* (new rooms
//! and upgrades; also what `/capabilities` offers clients). Old versions carry known flaws (state
//! resets in version 1, weaker event IDs before 4, no integer-only power levels before 10), which
//! we accept for rooms that already exist but never start new ones with.

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

use crate::core::Error;

/// The room versions we join and receive events of, oldest first: every stable version.
pub const SUPPORTED: &[RoomVersionId] = &[
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// The room versions new rooms (created or upgraded) may have, oldest first.
pub const CREATABLE: &[RoomVersionId] =
    &[RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

/// The version used for new rooms unless the client asks for another.
pub const DEFAULT: RoomVersionId = RoomVersionId::V12;

/// Whether we speak this room version (join, receive, send in an existing room).
pub fn is_supported(version: &RoomVersionId) -> bool {
    SUPPORTED.contains(version)
}

/// Whether we create rooms of this version (room creation and upgrades).
pub fn is_creatable(version: &RoomVersionId) -> bool {
    CREATABLE.contains(version)
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
    use ruma::room_version_rules::RoomVersionDisposition;

    use super::*;

    #[test]
    fn supported_versions_are_the_stable_ones_with_rules() {
        for version in SUPPORTED {
            let rules = rules(version).unwrap();
            assert_eq!(
                rules.disposition,
                RoomVersionDisposition::Stable,
                "{version}"
            );
        }
        assert_eq!(SUPPORTED.len(), 12);
        assert!(is_supported(&DEFAULT));
    }

    #[test]
    fn creatable_versions_are_supported_and_recent() {
        assert_eq!(
            CREATABLE,
            [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12]
        );
        for version in CREATABLE {
            assert!(is_supported(version), "{version}");
        }
        assert!(is_creatable(&DEFAULT));
        for version in [RoomVersionId::V1, RoomVersionId::V6, RoomVersionId::V9] {
            assert!(is_supported(&version), "{version}");
            assert!(!is_creatable(&version), "{version}");
        }
    }

    #[test]
    fn unknown_versions_are_refused() {
        let custom = RoomVersionId::try_from("org.example.custom").unwrap();
        assert!(!is_supported(&custom));
        assert!(!is_creatable(&custom));
        assert!(matches!(rules(&custom), Err(Error::UnsupportedRoomVersion(v)) if v == custom));
    }
}
