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
    /// A one-time key is read, then removed: claims of one device's keys take turns, so two
    /// claimers never get the same key. Striped by device, so unrelated claims do not wait.
    claim_locks: Vec<tokio::sync::Mutex<()>>,
}

/// Lock stripes for [`E2ee::claim_locks`].
const CLAIM_STRIPES: usize = 64;

impl E2ee {
    pub fn new(db: Db) -> Self {
        Self { db, queued: Default::default(), claim_locks: (0..CLAIM_STRIPES).map(|_| Default::default()).collect() }
    }
}
