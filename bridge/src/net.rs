//! The bridge's outbound HTTP client (the homeserver, polled feeds).

/// A client with the system's CA store, or, on a host that has none (an image built from
/// scratch), with no roots: plain HTTP to a homeserver beside the bridge still works, and an
/// HTTPS request then fails with a certificate error of its own instead of stopping the start.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().build().or_else(|e| {
        tracing::warn!(error = %e, "no system CA certificates: HTTPS homeservers and feeds will not verify");
        reqwest::Client::builder().tls_certs_only(Vec::new()).build()
    })
}
