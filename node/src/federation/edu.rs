//! EDUs in inbound transactions: typing, receipts, device-list updates, to-device messages and
//! cross-signing key updates. An EDU that cannot be applied is logged and dropped; EDUs carry no
//! durability promise.

use ruma::ServerName;
use serde_json::value::RawValue;

use crate::Services;

#[derive(serde::Deserialize)]
struct EduEnvelope {
    edu_type: String,
}

/// Applies one EDU from `origin`.
pub async fn handle(_s: &Services, origin: &ServerName, raw: &RawValue) {
    let Ok(envelope) = serde_json::from_str::<EduEnvelope>(raw.get()) else {
        tracing::debug!(%origin, "dropped an EDU without edu_type");
        return;
    };
    tracing::debug!(%origin, edu_type = %envelope.edu_type, "EDU not applied yet");
}
