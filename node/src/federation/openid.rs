//! `GET /_matrix/federation/v1/openid/userinfo`: whose OpenID token this is. Unauthenticated by
//! design: the caller is a third party holding the token, not a homeserver.

use std::sync::Arc;

use ruma::api::federation::openid::get_openid_userinfo;

use crate::{Services, error::Result, http::Ruma};

pub async fn userinfo(
    s: Arc<Services>,
    req: Ruma<get_openid_userinfo::v1::Request>,
) -> Result<get_openid_userinfo::v1::Response> {
    Ok(get_openid_userinfo::v1::Response::new(s.users.openid_user(&req.access_token)?))
}
