//! Escalation webhooks (`[[alarms.webhook]]`): a JSON POST signed with HMAC-SHA256 over the
//! body (`X-Tocsin-Signature: sha256=<hex>`), to addresses the node's outbound rules allow.

use std::{net::SocketAddr, time::Duration};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{
    error::{Error, Result},
    federation::outbound::OutboundPolicy,
};

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Tocsin-Signature";
/// Header naming the delivery (`<alarm event id>/<webhook index>`), the same on every retry, so
/// a receiver can drop repeats.
pub const DELIVERY_HEADER: &str = "X-Tocsin-Delivery";
/// Give up after this many failed attempts.
pub const MAX_ATTEMPTS: u32 = 8;
const TIMEOUT: Duration = Duration::from_secs(10);

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> Result<String> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).map_err(Error::internal)?;
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256={hex}"))
}

/// Milliseconds to wait after `attempts` failures: 1 s, 2 s, 4 s ... up to a minute.
pub fn backoff_ms(attempts: u32) -> u64 {
    1000u64.saturating_mul(1 << attempts.saturating_sub(1).min(6)).min(60_000)
}

/// Makes one call. `Ok` with the HTTP status on a 2xx answer; any other answer or a network
/// error is an error (retried by the worker).
pub async fn call(
    outbound_allow: Vec<ipnet::IpNet>,
    url: &str,
    secret: &str,
    delivery: &str,
    body: String,
) -> Result<u16> {
    let parsed = reqwest::Url::parse(url).map_err(|e| Error::bad_json(format!("webhook URL {url}: {e}")))?;
    let host = parsed.host_str().ok_or_else(|| Error::bad_json(format!("webhook URL {url} has no host")))?.to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let found: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
        .await
        .map_err(|e| Error::Unreachable(format!("webhook host {host}: {e}")))?
        .collect();
    let outbound = OutboundPolicy::new(outbound_allow);
    let allowed: Vec<SocketAddr> = found.iter().copied().filter(|a| outbound.permits(a.ip())).collect();
    if allowed.is_empty() {
        let refused: Vec<_> = found.iter().map(SocketAddr::ip).collect();
        return Err(Error::forbidden(outbound.refusal(&format!("webhook {host}"), &refused)));
    }
    // Connect only to the addresses just checked, and follow no redirect elsewhere.
    let client = reqwest::Client::builder()
        .resolve_to_addrs(&bare, &allowed)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .build()
        .map_err(Error::internal)?;
    let answer = client
        .post(parsed)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(secret, body.as_bytes())?)
        .header(DELIVERY_HEADER, delivery)
        .body(body)
        .send()
        .await
        .map_err(|e| Error::Unreachable(format!("webhook {host}: {e}")))?;
    let status = answer.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(Error::Unreachable(format!("webhook {host} answered {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?").unwrap(),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(2), 2000);
        assert_eq!(backoff_ms(3), 4000);
        assert_eq!(backoff_ms(30), 60_000);
    }
}
