//! OpenID tokens: a user proves their identity to a third party (a widget, a call service),
//! which asks this node, over federation, whose token it is.

use std::time::Duration;

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use tocsin_store::WriteBatch;

use super::{Users, now_ms, random_string};
use crate::{
    error::{Error, Result},
    store::{Db, trees},
};

/// How long a token answers: long enough to hand it to a widget, short enough to be useless later.
pub const OPENID_VALIDITY: Duration = Duration::from_secs(3600);

#[derive(Serialize, Deserialize)]
struct OpenIdToken {
    user_id: OwnedUserId,
    expires_at_ms: u64,
}

impl Users {
    /// A new OpenID token for `user_id`.
    pub async fn issue_openid_token(&self, user_id: &UserId) -> Result<String> {
        let token = random_string(32);
        let record = OpenIdToken {
            user_id: user_id.to_owned(),
            expires_at_ms: now_ms().saturating_add(OPENID_VALIDITY.as_millis() as u64),
        };
        let mut batch = WriteBatch::new();
        batch.insert(trees::OPENID_TOKENS, token.as_bytes().to_vec(), Db::to_json(&record)?);
        self.db.write(batch).await?;
        Ok(token)
    }

    /// Whose token this is, while it is valid.
    pub fn openid_user(&self, token: &str) -> Result<OwnedUserId> {
        match self.db.get_json::<OpenIdToken>(trees::OPENID_TOKENS, token.as_bytes())? {
            Some(record) if record.expires_at_ms > now_ms() => Ok(record.user_id),
            _ => Err(Error::UnknownToken),
        }
    }
}
