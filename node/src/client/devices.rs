//! Devices: list, show, rename and delete (`/devices`, `/delete_devices`), and the sessions
//! an admin sees (`/admin/whois`).

use std::sync::Arc;

use bytes::BufMut;
use ruma::api::{
    OutgoingResponse,
    client::{
        admin::get_user_info,
        device::{delete_device, delete_devices, get_device, get_devices, update_device},
    },
    error::IntoHttpError,
};
use serde_json::Value;

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

/// A device response as ruma builds it, minus its `null` fields. ruma serialises an unset
/// `display_name` or `last_seen_ip` (and whois's `ip` and `user_agent`) as `null`; the spec types
/// them as strings that are left out when unknown, and strict clients (and schema checkers)
/// refuse the `null`.
pub struct Sparse<R>(R);

impl<R: OutgoingResponse> OutgoingResponse for Sparse<R> {
    fn try_into_http_response<T: Default + BufMut>(self) -> std::result::Result<http::Response<T>, IntoHttpError> {
        let (parts, body) = self.0.try_into_http_response::<Vec<u8>>()?.into_parts();
        let mut value: Value = serde_json::from_slice(&body)?;
        drop_nulls(&mut value);
        let mut out = T::default();
        out.put_slice(&serde_json::to_vec(&value)?);
        Ok(http::Response::from_parts(parts, out))
    }
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            fields.retain(|_, v| !v.is_null());
            fields.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn device_of(id: ruma::OwnedDeviceId, d: crate::users::Device) -> ruma::api::client::device::Device {
    let mut device = ruma::api::client::device::Device::new(id);
    device.last_seen_ts = last_seen(&d);
    device.display_name = d.display_name;
    device
}

fn last_seen(d: &crate::users::Device) -> Option<ruma::MilliSecondsSinceUnixEpoch> {
    d.last_seen_ts.and_then(|t| ruma::UInt::try_from(t).ok()).map(ruma::MilliSecondsSinceUnixEpoch)
}

pub async fn devices(
    s: Arc<Services>,
    req: Ruma<get_devices::v3::Request>,
) -> Result<Sparse<get_devices::v3::Response>> {
    let auth = req.user()?;
    let devices = s.users.devices(&auth.user_id)?.into_iter().map(|(id, d)| device_of(id, d)).collect();
    Ok(Sparse(get_devices::v3::Response::new(devices)))
}

pub async fn device(s: Arc<Services>, req: Ruma<get_device::v3::Request>) -> Result<Sparse<get_device::v3::Response>> {
    let auth = req.user()?;
    let d = s.users.device(&auth.user_id, &req.device_id)?.ok_or_else(|| Error::not_found("no such device"))?;
    Ok(Sparse(get_device::v3::Response::new(device_of(req.device_id.clone(), d))))
}

pub async fn update(s: Arc<Services>, req: Ruma<update_device::v3::Request>) -> Result<update_device::v3::Response> {
    let auth = req.user()?;
    s.users.update_device(&auth.user_id, &req.device_id, req.display_name.clone()).await?;
    Ok(update_device::v3::Response::new())
}

pub async fn delete(s: Arc<Services>, req: Ruma<delete_device::v3::Request>) -> Result<delete_device::v3::Response> {
    let auth = req.user()?.clone();
    super::session::require_password(&s, &auth.user_id, req.auth.as_ref()).await?;
    if !s.users.remove_device(&auth.user_id, &req.device_id).await? {
        return Err(Error::not_found("no such device"));
    }
    let prev = crate::federation::edu::key_position(&s, &auth.user_id);
    s.e2ee.remove_device(&auth.user_id, &req.device_id).await?;
    crate::federation::edu::device_list_update(&s, &auth.user_id, &req.device_id, prev).await;
    Ok(delete_device::v3::Response::new())
}

pub async fn delete_many(
    s: Arc<Services>,
    req: Ruma<delete_devices::v3::Request>,
) -> Result<delete_devices::v3::Response> {
    let auth = req.user()?.clone();
    super::session::require_password(&s, &auth.user_id, req.auth.as_ref()).await?;
    for device in &req.devices {
        let prev = crate::federation::edu::key_position(&s, &auth.user_id);
        s.users.remove_device(&auth.user_id, device).await?;
        s.e2ee.remove_device(&auth.user_id, device).await?;
        crate::federation::edu::device_list_update(&s, &auth.user_id, device, prev).await;
    }
    Ok(delete_devices::v3::Response::new())
}

/// `GET /admin/whois/{userId}`: a user's sessions, for an admin or for the user. The node keeps
/// when each device was last seen, not its address or client, so a connection carries only that.
pub async fn whois(
    s: Arc<Services>,
    req: Ruma<get_user_info::v3::Request>,
) -> Result<Sparse<get_user_info::v3::Response>> {
    let auth = req.user()?;
    if auth.user_id != req.user_id && !s.users.is_admin(&auth.user_id)? {
        return Err(Error::forbidden("only a server admin may look up another user's sessions"));
    }
    if !s.users.is_local(&req.user_id) {
        return Err(Error::not_found("not a user of this node"));
    }
    let devices = s
        .users
        .devices(&req.user_id)?
        .into_iter()
        .map(|(id, d)| {
            let mut connection = get_user_info::v3::ConnectionInfo::new();
            connection.last_seen = last_seen(&d);
            let mut session = get_user_info::v3::SessionInfo::new();
            session.connections = vec![connection];
            let mut device = get_user_info::v3::DeviceInfo::new();
            device.sessions = vec![session];
            (id.to_string(), device)
        })
        .collect();
    let mut response = get_user_info::v3::Response::new();
    response.user_id = Some(req.user_id.clone());
    response.devices = devices;
    Ok(Sparse(response))
}
