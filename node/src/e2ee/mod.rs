//! End-to-end encryption support: device keys, one-time and fallback keys, cross-signing keys,
//! to-device messages, device-list change streams and server-side key backup.

mod backup;
pub mod device_lists;
mod keys;
mod signatures;
mod to_device;

pub use signatures::SignatureRefusal;
pub use to_device::{MAX_PER_SYNC as MAX_TO_DEVICE_PER_SYNC, MAX_QUEUED as MAX_TO_DEVICE_QUEUED, local_targets};

use crate::store::Db;

pub struct E2ee {
    db: Db,
    /// How many to-device messages each local device has queued (see [`to_device`]).
    queued: to_device::QueueCounts,
}

impl E2ee {
    pub fn new(db: Db) -> Self {
        Self { db, queued: Default::default() }
    }
}
