//! The room versions this node speaks.

use ruma::{RoomVersionId, room_version_rules::RoomVersionRules};

use crate::error::{Error, Result};

pub const SUPPORTED: &[RoomVersionId] = &[RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

pub fn supported(version: &RoomVersionId) -> bool {
    SUPPORTED.contains(version)
}

pub fn rules(version: &RoomVersionId) -> Result<RoomVersionRules> {
    if !supported(version) {
        return Err(Error::UnsupportedRoomVersion);
    }
    version.rules().ok_or(Error::UnsupportedRoomVersion)
}
