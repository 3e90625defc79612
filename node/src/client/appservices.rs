//! Application services. A node hosts none (bridges log in as ordinary users), so these answer
//! as the spec has a server without any answer: no third-party protocols, no ping, and no
//! application service's room directory.

use std::sync::Arc;

use ruma::api::client::{
    appservice::{request_ping, set_room_visibility},
    thirdparty::get_protocols,
};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

/// `GET /thirdparty/protocols`: the protocols that application services bridge: none.
pub async fn protocols(_: Arc<Services>, req: Ruma<get_protocols::v3::Request>) -> Result<get_protocols::v3::Response> {
    req.user()?;
    Ok(get_protocols::v3::Response::new(Default::default()))
}

/// `POST /appservice/{appserviceId}/ping`: only an application service's own token may ask, and
/// no token here is one (so none is looked up).
pub async fn ping(_: Arc<Services>, req: Ruma<request_ping::v1::Request>) -> Result<request_ping::v1::Response> {
    Err(Error::forbidden(format!("`{}` is not an application service of this node", req.appservice_id)))
}

/// `PUT /directory/list/appservice/{networkId}/{roomId}`: for an application service's token only.
pub async fn set_directory_visibility(
    _: Arc<Services>,
    _: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    Err(Error::forbidden("only an application service may publish to its network's directory, and this node has none"))
}
