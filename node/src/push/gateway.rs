//! Talking to push gateways: `POST /_matrix/push/v1/notify` with ruma's Push Gateway API types.
//!
//! Every notification is sent in the `event_id_only` form (a badge update carries only counts) whatever the pusher asked for: event
//! id, room id, counts, priority and tweaks, never a sender, room name or content (the node's
//! rule: push carries no message content; the phone fetches the event over the Client-Server
//! API). The gateway host must pass the node's outbound address rules (`outbound_ip_allow`),
//! as federation does: a user chooses the URL, so without the check anyone could make the node
//! connect into its own network.

use std::{sync::Arc, time::Duration};

use ruma::{
    UInt,
    api::{
        OutgoingRequest,
        client::push::PusherKind,
        push_gateway::send_event_notification::v1::{
            Device, Notification, NotificationCounts, NotificationPriority, PusherData, Request, Response,
        },
    },
    push::{Action, PushFormat},
};

use super::{pushers::StoredPusher, queue::QueuedPush};
use crate::federation::outbound::OutboundPolicy;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What became of one attempt.
#[derive(Debug)]
pub enum Delivery {
    /// The gateway took it; these pushkeys it rejected (their pushers are to be removed).
    Sent { rejected: Vec<String> },
    /// The gateway refused this request for good (4xx): retrying would not help.
    Refused(String),
    /// Unreachable, timed out or a server error: retry later.
    Failed(String),
}

#[derive(Clone)]
pub struct Gateways {
    http: reqwest::Client,
    outbound: Arc<OutboundPolicy>,
}

impl Gateways {
    pub fn new(config: &crate::Config) -> anyhow::Result<Self> {
        let outbound = Arc::new(OutboundPolicy::new(config.outbound_ip_allow.clone()));
        let builder = || {
            reqwest::Client::builder()
                .dns_resolver(crate::http::outbound::OutboundResolver::new(outbound.clone()))
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .user_agent(concat!("Tocsin/", env!("CARGO_PKG_VERSION")))
        };
        // Gateways over https chain to the system's CAs, or on a host without any, to `tls_ca_files`.
        let http = crate::http::outbound::client(builder, &config.tls_ca_files)?;
        Ok(Self { http, outbound })
    }

    /// Whether the node may connect to `url`'s host if it is an address literal (names are
    /// checked when they resolve).
    pub fn literal_allowed(&self, url: &reqwest::Url) -> Result<(), String> {
        let host = url.host_str().unwrap_or_default();
        let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() else {
            return Ok(());
        };
        if self.outbound.permits(ip) { Ok(()) } else { Err(self.outbound.refusal(url.as_ref(), &[ip])) }
    }

    /// Sends `item` to the pusher's gateway.
    pub async fn notify(&self, pusher: &StoredPusher, item: &QueuedPush) -> Delivery {
        let PusherKind::Http(http) = &pusher.pusher.kind else {
            return Delivery::Refused("not an http pusher".to_owned());
        };
        let url = match reqwest::Url::parse(&http.url) {
            Ok(url) => url,
            Err(e) => return Delivery::Refused(format!("bad url: {e}")),
        };
        if let Err(refusal) = self.literal_allowed(&url) {
            return Delivery::Failed(refusal);
        }
        // ruma puts the endpoint path after the base: the base is the URL without it.
        let base = http.url.strip_suffix(super::pushers::NOTIFY_PATH).unwrap_or(&http.url).to_owned();
        let request = Request::new(notification(pusher, item));
        let http_request = match request.try_into_http_request::<Vec<u8>>(&base, (), ()) {
            Ok(r) => r.map(with_empty_tweaks),
            Err(e) => return Delivery::Refused(format!("cannot build the request: {e}")),
        };
        let request = match reqwest::Request::try_from(http_request) {
            Ok(r) => r,
            Err(e) => return Delivery::Refused(format!("cannot build the request: {e}")),
        };
        let response = match self.http.execute(request).await {
            Ok(r) => r,
            Err(e) => return Delivery::Failed(format!("{}: {e}", url.host_str().unwrap_or("?"))),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Delivery::Failed(format!("reading the answer: {e}")),
        };
        if status.is_success() {
            let mut builder = http::Response::builder().status(status);
            if let Some(headers) = builder.headers_mut() {
                headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            }
            let parsed = builder
                .body(body)
                .map_err(|e| e.to_string())
                .and_then(|r| ruma::api::IncomingResponse::try_from_http_response(r).map_err(|e| e.to_string()));
            // A gateway that took the request but answered oddly still took it.
            let rejected = parsed.map(|r: Response| r.rejected).unwrap_or_default();
            return Delivery::Sent { rejected };
        }
        let detail = format!("gateway answered {status}");
        if status.is_client_error() && status != http::StatusCode::TOO_MANY_REQUESTS {
            Delivery::Refused(detail)
        } else {
            Delivery::Failed(detail)
        }
    }
}

fn notification(pusher: &StoredPusher, item: &QueuedPush) -> Notification {
    let mut data = PusherData::new();
    if let PusherKind::Http(http) = &pusher.pusher.kind {
        data.data = http.data.clone();
    }
    data.format = Some(PushFormat::EventIdOnly);
    let mut device = Device::new(pusher.pusher.ids.app_id.clone(), pusher.pusher.ids.pushkey.clone());
    device.pushkey_ts = UInt::new(pusher.pushkey_ts).map(ruma::SecondsSinceUnixEpoch);
    device.data = data;
    device.tweaks =
        item.actions.iter().filter_map(|a| if let Action::SetTweak(t) = a { Some(t.clone()) } else { None }).collect();
    let mut notification = Notification::new(vec![device]);
    // A badge update has neither: the counts are all it says.
    notification.event_id = item.event_id.clone();
    notification.room_id = item.room_id.clone();
    notification.prio = if item.high { NotificationPriority::High } else { NotificationPriority::Low };
    notification.counts = NotificationCounts::new(UInt::new(item.unread).unwrap_or(UInt::MAX), UInt::MIN);
    notification
}

/// Writes `"tweaks": {}` on each device that has none. ruma leaves an empty `tweaks` out, but
/// its own gateway-side types (ruma-push-gateway-api 0.15) require the field, so a gateway
/// built on them would refuse a notification without tweaks (a plain message in a group room, a
/// badge update) with 400, and the node would drop it. An empty object means the same to every
/// gateway.
fn with_empty_tweaks(body: Vec<u8>) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&body) else { return body };
    let devices = value.pointer_mut("/notification/devices").and_then(serde_json::Value::as_array_mut);
    for device in devices.into_iter().flatten() {
        if let Some(device) = device.as_object_mut() {
            device.entry("tweaks").or_insert_with(|| serde_json::json!({}));
        }
    }
    serde_json::to_vec(&value).unwrap_or(body)
}
