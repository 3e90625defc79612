//! Simplified sliding sync (MSC4186), `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.

use std::sync::Arc;

use ruma::api::client::sync::sync_events::v5;

use crate::{Services, error::Result, http::Ruma};

pub async fn sync(s: Arc<Services>, req: Ruma<v5::Request>) -> Result<v5::Response> {
    let auth = req.user()?.clone();
    // ruma's request has no field for the `spaces` list filter: it is read from the JSON.
    let spaces = crate::sync::sliding::list_spaces(&req.json_body)?;
    crate::sync::sliding::sync(&s, &auth, req.body, spaces).await
}
