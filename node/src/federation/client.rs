//! Outbound federation: server discovery, TLS, X-Matrix signing, one pooled HTTP client per node.
//!
//! Discovery follows the spec (server-server API, "Resolving server names"), with the node's pins
//! first so that a crisis federation needs no DNS:
//! 1. a pinned address from `federation_pins` (or [`FederationClient::set_pin`]);
//! 2. an IP literal, with its port or 8448;
//! 3. a hostname with an explicit port;
//! 4. `https://<hostname>/.well-known/matrix/server`, then the delegated name: an IP literal or a
//!    name with a port is used as it is, a bare name goes to port 8448;
//! 5. otherwise `<hostname>:8448`.
//!
//!
//! For a bare hostname (steps 4 and 5, delegated or not), the SRV records `_matrix-fed._tcp` and
//! then `_matrix._tcp` come before the `:8448` default; the connection goes to the SRV target
//! while TLS still checks the hostname.
//!
//! Addresses found by DNS, SRV, well-known or in an IP-literal name must pass the outbound policy
//! ([`super::outbound`]); pinned servers are the operator's choice and always pass.
//!
//! The TLS name checked is always the host the spec names (the server name's host, or the
//! delegated host after well-known); the trust is `tls_ca_files` plus the node's own certificate.

use std::{
    any::Any,
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingResponse, OutgoingRequest,
        auth_scheme::NoAuthentication,
        error::FromHttpResponseError,
        federation::authentication::{ServerSignatures, ServerSignaturesInput},
        path_builder::PathBuilder,
    },
};
use rustls_pki_types::CertificateDer;
use serde::Deserialize;

use super::outbound::OutboundPolicy;
use crate::{
    Config,
    error::{Error, Result},
    keys::ServerKeys,
};

/// The port federation uses when a name gives none.
pub const DEFAULT_PORT: u16 = 8448;
/// Establishing a TCP + TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One whole request, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a discovery result is reused.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a failed well-known lookup is remembered before it is tried again.
pub const DISCOVERY_FAILURE_TTL: Duration = Duration::from_secs(10 * 60);
/// Idle pooled connections per peer.
const POOL_IDLE_PER_HOST: usize = 8;

fn build_http(
    tls: &rustls::ClientConfig,
    hosts: &Arc<RwLock<HashMap<String, SocketAddr>>>,
    outbound: &Arc<OutboundPolicy>,
) -> reqwest::Result<reqwest::Client> {
    let mut tls = tls.clone();
    // A fresh session cache: a resumed TLS session skips certificate checks, so sessions from
    // before a CA change must not be resumed.
    tls.resumption = rustls::client::Resumption::default();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .dns_resolver(PinResolver { hosts: hosts.clone(), outbound: outbound.clone() })
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("Tocsin/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Where requests for a server go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `https://host[:port]`: the URL host is also the TLS name (SNI) and the `Host` header.
    pub base_url: String,
    /// The address from a pin, if the server is pinned.
    pub pinned: Option<SocketAddr>,
}

/// Decides whether this node may contact a server at all (the federation list); an `Err` is
/// returned as it is, before any connection.
pub type Gate = Arc<dyn Fn(&ServerName) -> Result<()> + Send + Sync>;

/// The node's client for the Server-Server API. Cheap to clone; all clones share one connection
/// pool and one discovery cache.
#[derive(Clone)]
pub struct FederationClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Replaced (with an empty connection pool) when the trusted CAs change.
    http: RwLock<reqwest::Client>,
    tls: rustls::ClientConfig,
    server_name: OwnedServerName,
    keys: ServerKeys,
    /// Pinned server names.
    pins: RwLock<HashMap<OwnedServerName, SocketAddr>>,
    /// The same pins by host, read by the DNS resolver reqwest calls.
    hosts: Arc<RwLock<HashMap<String, SocketAddr>>>,
    /// Which unpinned addresses may be reached.
    outbound: Arc<OutboundPolicy>,
    discovered: Mutex<HashMap<OwnedServerName, (Destination, Instant)>>,
    gate: RwLock<Option<Gate>>,
    /// Made on first use, inside the runtime.
    srv: std::sync::OnceLock<super::srv::Srv>,
    dns: Option<SocketAddr>,
    /// The TLS verifier, to swap the federation list's member CAs (none with `tls_verify = false`).
    trust: Option<Arc<super::trust::TrustVerifier>>,
}

impl FederationClient {
    /// Builds the pooled client from the config's pins, CA files and `tls_verify`, trusting
    /// `own_certs` (the node's federation certificate) too. Needs no async runtime.
    pub fn new(
        config: &Config,
        server_name: OwnedServerName,
        keys: ServerKeys,
        own_certs: &[CertificateDer<'static>],
    ) -> anyhow::Result<Self> {
        let (tls, trust) = super::tls::client_config(own_certs, &config.tls_ca_files, config.tls_verify)?;
        let hosts: Arc<RwLock<HashMap<String, SocketAddr>>> = Arc::default();
        let outbound = Arc::new(OutboundPolicy::new(config.outbound_ip_allow.clone()));
        let http = build_http(&tls, &hosts, &outbound)?;
        let client = Self {
            inner: Arc::new(Inner {
                http: RwLock::new(http),
                tls,
                server_name,
                keys,
                pins: RwLock::default(),
                hosts,
                outbound,
                discovered: Mutex::default(),
                gate: RwLock::default(),
                srv: std::sync::OnceLock::new(),
                dns: config.federation_dns,
                trust,
            }),
        };
        for (name, addr) in &config.federation_pins {
            let name = OwnedServerName::try_from(name.as_str())?;
            client.set_pin(name, *addr);
        }
        Ok(client)
    }

    /// Trusts the CAs the federation list names for its members, each for its member only,
    /// from the next connection on.
    pub fn set_member_cas(&self, list: Option<&tocsin_policies::VerifiedList>) {
        let Some(trust) = &self.inner.trust else { return };
        if !trust.set_members(list) {
            return;
        }
        // Pooled connections were verified under the old CAs: a CA taken out of the list must
        // not keep working through them.
        match build_http(&self.inner.tls, &self.inner.hosts, &self.inner.outbound) {
            Ok(http) => match self.inner.http.write() {
                Ok(mut current) => *current = http,
                Err(poisoned) => *poisoned.into_inner() = http,
            },
            Err(e) => tracing::error!(error = %e, "cannot rebuild the federation client after a CA change"),
        }
    }

    /// The pooled HTTP client (cheap to clone).
    fn http(&self) -> reqwest::Client {
        match self.inner.http.read() {
            Ok(http) => http.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn server_name(&self) -> &ServerName {
        &self.inner.server_name
    }

    /// Pins `server` to `addr` (or moves its pin), e.g. from a new federation list. Applies to the
    /// next request; no restart needed. Two pinned names with one host (different ports) share
    /// the last pin, as the DNS resolver sees hosts only.
    pub fn set_pin(&self, server: OwnedServerName, addr: SocketAddr) {
        if !server.is_ip_literal() {
            let mut hosts = self.inner.hosts.write().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = hosts.insert(server.host().to_owned(), addr)
                && old != addr
            {
                tracing::warn!(%server, %old, new = %addr, "another pin for this host is replaced");
            }
        }
        self.inner.pins.write().unwrap_or_else(|e| e.into_inner()).insert(server.clone(), addr);
        self.inner.discovered.lock().unwrap_or_else(|e| e.into_inner()).remove(&server);
    }

    /// Installs the check every outbound request passes first (see [`Gate`]).
    pub fn set_gate(&self, gate: Gate) {
        *self.inner.gate.write().unwrap_or_else(|e| e.into_inner()) = Some(gate);
    }

    /// Where requests for `server` go (see the module docs for the order). Refused when the
    /// gate does not allow `server`: every request resolves its destination first.
    pub async fn resolve(&self, server: &ServerName) -> Result<Destination> {
        let gate = self.inner.gate.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(gate) = gate {
            gate(server)?;
        }
        let pinned = self.inner.pins.read().unwrap_or_else(|e| e.into_inner()).get(server).copied();
        if let Some(addr) = pinned {
            // The URL carries no port: the pin resolver supplies address and port. An IP-literal
            // name bypasses the resolver, so its pinned address goes into the URL itself.
            let base_url =
                if server.is_ip_literal() { format!("https://{addr}") } else { format!("https://{}", server.host()) };
            return Ok(Destination { base_url, pinned: Some(addr) });
        }
        if server.is_ip_literal() || server.port().is_some() {
            self.check_literal(server.host())?;
            let port = server.port().unwrap_or(DEFAULT_PORT);
            return Ok(Destination { base_url: format!("https://{}:{port}", server.host()), pinned: None });
        }
        if let Some((dest, at)) = self.inner.discovered.lock().unwrap_or_else(|e| e.into_inner()).get(server).cloned()
            && at > Instant::now()
        {
            return Ok(dest);
        }
        let (dest, ttl) = match self.well_known(server).await {
            Some(delegated) if delegated.is_ip_literal() || delegated.port().is_some() => {
                self.check_literal(delegated.host())?;
                let port = delegated.port().unwrap_or(DEFAULT_PORT);
                (Destination { base_url: format!("https://{}:{port}", delegated.host()), pinned: None }, DISCOVERY_TTL)
            }
            Some(delegated) => (self.by_srv_or_default(delegated.host()).await?, DISCOVERY_TTL),
            None => (self.by_srv_or_default(server.host()).await?, DISCOVERY_FAILURE_TTL),
        };
        self.inner
            .discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.to_owned(), (dest.clone(), Instant::now() + ttl));
        Ok(dest)
    }

    /// Refuses an IP literal (a server name's host, or a delegated one) outside the outbound
    /// policy; such a URL never reaches the DNS resolver, which checks every other name.
    fn check_literal(&self, host: &str) -> Result<()> {
        let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() else {
            return Ok(());
        };
        if self.inner.outbound.permits(ip) {
            return Ok(());
        }
        Err(Error::Unreachable(self.inner.outbound.refusal(host, &[ip])))
    }

    /// `host`'s SRV target (the TLS name stays `host`), or `host:8448`.
    async fn by_srv_or_default(&self, host: &str) -> Result<Destination> {
        let srv = self.inner.srv.get_or_init(|| super::srv::Srv::new(self.inner.dns));
        let outbound = &self.inner.outbound;
        match srv.lookup(host, |ip| outbound.permits(ip)).await {
            Some(Ok(addr)) => {
                // The resolver reqwest calls maps the host to the SRV target, as for a pin.
                self.inner.hosts.write().unwrap_or_else(|e| e.into_inner()).entry(host.to_owned()).or_insert(addr);
                Ok(Destination { base_url: format!("https://{host}"), pinned: Some(addr) })
            }
            Some(Err(refused)) => Err(Error::Unreachable(outbound.refusal(&format!("{host}'s SRV target"), &refused))),
            None => Ok(Destination { base_url: format!("https://{host}:{DEFAULT_PORT}"), pinned: None }),
        }
    }

    /// `GET https://<host>/.well-known/matrix/server` -> the delegated server name, if any.
    async fn well_known(&self, server: &ServerName) -> Option<OwnedServerName> {
        #[derive(Deserialize)]
        struct WellKnown {
            #[serde(rename = "m.server")]
            server: String,
        }
        let url = format!("https://{}/.well-known/matrix/server", server.host());
        let response = match self.http().get(&url).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::debug!(%server, status = %r.status(), "no well-known delegation");
                return None;
            }
            Err(e) => {
                tracing::debug!(%server, error = %e, "well-known lookup failed");
                return None;
            }
        };
        let body = response.bytes().await.ok()?;
        let known: WellKnown = serde_json::from_slice(&body).ok()?;
        OwnedServerName::try_from(known.server.as_str()).ok()
    }

    /// Sends a request signed with the node's key (X-Matrix) and parses the answer.
    pub async fn send<R>(&self, destination: &ServerName, request: R) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<Authentication = ServerSignatures>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = ()>,
    {
        let dest = self.resolve(destination).await?;
        let input =
            ServerSignaturesInput::new(self.inner.server_name.clone(), destination.to_owned(), self.inner.keys.pair());
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&dest.base_url, input, ())
            .map_err(|e| Error::internal(format!("cannot build the request for {destination}: {e}")))?;
        self.execute::<R::IncomingResponse>(destination, http_request).await
    }

    /// Sends an unauthenticated request (the key server, the version endpoint).
    pub async fn send_unauth<R>(&self, destination: &ServerName, request: R) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<Authentication = NoAuthentication>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = ()>,
    {
        let dest = self.resolve(destination).await?;
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&dest.base_url, (), ())
            .map_err(|e| Error::internal(format!("cannot build the request for {destination}: {e}")))?;
        self.execute::<R::IncomingResponse>(destination, http_request).await
    }

    /// Sends a prepared request as it is (no signing, no parsing) and returns status and body.
    /// For tests and tools that need to send what a well-behaved client would not.
    pub async fn send_raw(
        &self,
        destination: &ServerName,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Bytes>> {
        let (parts, body) = request.into_parts();
        let dest = self.resolve(destination).await?;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", dest.base_url);
        let mut builder = self.http().request(parts.method, url).headers(parts.headers);
        if !body.is_empty() {
            builder = builder.body(body);
        }
        let response =
            builder.send().await.map_err(|e| Error::Unreachable(format!("{destination}: {}", error_chain(&e))))?;
        into_http(destination, response).await
    }

    async fn execute<Resp: IncomingResponse>(
        &self,
        destination: &ServerName,
        request: http::Request<Vec<u8>>,
    ) -> Result<Resp> {
        let request = reqwest::Request::try_from(request)
            .map_err(|e| Error::internal(format!("cannot build the request for {destination}: {e}")))?;
        let response = self
            .http()
            .execute(request)
            .await
            .map_err(|e| Error::Unreachable(format!("{destination}: {}", error_chain(&e))))?;
        let response = into_http(destination, response).await?;
        let status = response.status();
        Resp::try_from_http_response(response).map_err(|e| match e {
            FromHttpResponseError::Server(server_error) => {
                match (&server_error as &dyn Any).downcast_ref::<ruma::api::error::Error>() {
                    Some(matrix) => Error::Remote(Box::new(matrix.clone())),
                    None => Error::Unreachable(format!("{destination} answered {status}: {server_error}")),
                }
            }
            FromHttpResponseError::Deserialization(d) => {
                Error::Unreachable(format!("{destination} sent an invalid response ({status}): {d}"))
            }
            other => Error::Unreachable(format!("{destination} answered {status}: {other}")),
        })
    }
}

async fn into_http(destination: &ServerName, response: reqwest::Response) -> Result<http::Response<Bytes>> {
    let mut builder = http::Response::builder().status(response.status()).version(response.version());
    if let Some(headers) = builder.headers_mut() {
        *headers = response.headers().clone();
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| Error::Unreachable(format!("{destination}: reading the response: {}", error_chain(&e))))?;
    builder.body(body).map_err(Error::internal)
}

/// The error and its causes on one line: reqwest's own message alone hides the TLS reason.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Resolves pinned hosts to their pinned address, everything else through the system resolver,
/// keeping only the addresses the outbound policy permits.
struct PinResolver {
    hosts: Arc<RwLock<HashMap<String, SocketAddr>>>,
    outbound: Arc<OutboundPolicy>,
}

impl reqwest::dns::Resolve for PinResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let pinned = self.hosts.read().unwrap_or_else(|e| e.into_inner()).get(name.as_str()).copied();
        let outbound = self.outbound.clone();
        Box::pin(async move {
            let addrs: reqwest::dns::Addrs = match pinned {
                Some(addr) => Box::new(std::iter::once(addr)),
                None => {
                    // Port 0: the URL's port (or 443) is put in by the connector.
                    let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
                    let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                        found.into_iter().partition(|a| outbound.permits(a.ip()));
                    if allowed.is_empty() && !refused.is_empty() {
                        let ips: Vec<_> = refused.iter().map(SocketAddr::ip).collect();
                        let refusal: Box<dyn std::error::Error + Send + Sync> =
                            outbound.refusal(name.as_str(), &ips).into();
                        return Err(refusal);
                    }
                    Box::new(allowed.into_iter())
                }
            };
            Ok(addrs)
        })
    }
}
