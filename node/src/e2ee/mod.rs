//! End-to-end encryption support: device keys, one-time and fallback keys, cross-signing keys,
//! to-device messages, device-list change streams and server-side key backup.

mod backup;
pub mod device_lists;
mod keys;
mod to_device;

use crate::store::Db;

pub struct E2ee {
    db: Db,
}

impl E2ee {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}
