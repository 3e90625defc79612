//! Tocsin: a Matrix homeserver for crisis communication between public bodies.
//!
//! The node is a library first: [`Node::start`] returns a [`NodeHandle`], and the binary is a
//! thin CLI around it. There are no global statics, so one process (a test) can run many nodes.

pub mod admin;
pub mod alarms;
pub mod client;
pub mod config;
pub mod demo;
pub mod directory;
pub mod e2ee;
pub mod error;
pub mod federation;
#[cfg(test)]
mod fuzz;
pub mod http;
pub mod keys;
pub mod media;
pub mod metrics;
pub mod policy;
pub mod push;
pub mod rooms;
pub mod search;
pub mod spaces;
pub mod store;
pub mod sync;
pub mod users;
pub mod workers;

use std::{net::SocketAddr, sync::Arc};

use ruma::OwnedServerName;
use tokio::net::TcpListener;

pub use config::{Config, Registration};

/// The log filter when none is set: ruma's state resolution logs every auth check it passes
/// at `info`, several lines per received event, which under load costs more than the check.
pub const DEFAULT_LOG_FILTER: &str = "info,sled=warn,ruma_state_res=warn";
pub use error::{Error, Result};
/// The ruma version the node speaks, for tests and tools that check its output.
pub use ruma;

/// Everything a request handler may need. Handed around as `Arc<Services>`.
pub struct Services {
    pub config: Config,
    pub server_name: OwnedServerName,
    pub db: store::Db,
    pub keys: keys::ServerKeys,
    pub users: users::Users,
    pub rooms: rooms::Rooms,
    pub sync: sync::SyncService,
    pub e2ee: e2ee::E2ee,
    pub media: media::Media,
    pub policy: Arc<policy::PolicyGate>,
    /// The outbound federation queue and its workers (started by [`Node::start`]).
    pub sender: federation::sender::Sender,
    /// The federation listener's certificate (configured or self-signed).
    pub tls: federation::tls::NodeTls,
    /// Outbound Server-Server requests: discovery, TLS, X-Matrix signing.
    pub federation_client: federation::client::FederationClient,
    /// Other servers' signing keys, fetched and cached.
    pub remote_keys: federation::remote_keys::RemoteKeys,
    /// Sent the origin of every inbound federation request whose signature verified; the
    /// outbound sender subscribes to flush that peer's queue at once.
    pub peer_seen: tokio::sync::broadcast::Sender<OwnedServerName>,
    /// Per-room serialisation of inbound PDUs.
    pub inbound: federation::receive::Inbound,
    /// One `policy apply` at a time.
    pub provisioning: policy::provision::Provisioning,
    /// Rate limits per user and per client address (`[rate_limits]`).
    pub limits: http::RateLimiter,
    /// Alarm tracking, status and escalation (`alarms`).
    pub alarms: alarms::Alarms,
    /// Metrics any area may register (`/_tocsin/metrics`; see `metrics::registry`).
    pub metrics: Arc<metrics::Registry>,
    /// The bearer token `/_tocsin/metrics` wants (`[metrics] token` or `token_file`).
    pub metrics_token: Option<String>,
    /// The operator's admin token (`admin_token_file`), accepted by the admin API.
    pub admin_token: Option<String>,
    /// Every background task of the node: started, stopped and joined the same way.
    pub workers: workers::Workers,
    /// Pushers and the push gateway queue (worker started by [`Node::start`]).
    pub push: push::Push,
    /// URL previews (`[url_previews]`): off, or limited to the operator's allow list.
    pub previews: media::preview::Previews,
    /// The full-text index of unencrypted rooms (`POST /search`).
    pub search: search::Search,
}

impl Services {
    /// Opens the store and builds every service, without listening on anything. The CLI's
    /// `user add` uses this directly.
    pub fn open(config: Config) -> anyhow::Result<Arc<Self>> {
        config.validate()?;
        // First, so every service that queues federation traffic can hold a wake handle.
        let outbox = federation::sender::Outbox::new();
        let workers = workers::Workers::new();
        let server_name = OwnedServerName::try_from(config.server_name.as_str())?;
        std::fs::create_dir_all(&config.data_dir)?;
        let db = store::Db::open(config.store, &config.data_dir.join("store"))?;
        store::schema::check(&db)?;
        let keys = keys::ServerKeys::load_or_create(&config.data_dir, &server_name)?;
        let users = users::Users::new(
            db.clone(),
            server_name.clone(),
            std::time::Duration::from_secs(config.access_token_lifetime_secs),
        );
        let policy = Arc::new(policy::PolicyGate::from_config(&config)?);
        let alarms = alarms::Alarms::new(db.clone());
        let metrics = Arc::new(metrics::Registry::new());
        let rooms = rooms::Rooms::new(
            db.clone(),
            server_name.clone(),
            keys.clone(),
            policy.clone(),
            outbox.clone(),
            alarms.tracker(server_name.clone(), policy.clone()),
            &metrics,
        )
        .with_head_capacity(config.room_heads_in_memory);
        let sync = sync::SyncService::new(db.clone(), config.presence);
        let e2ee = e2ee::E2ee::new(db.clone());
        let media = media::Media::new(db.clone(), config.data_dir.join("media"), config.max_upload_bytes)?;
        let sender = federation::sender::Sender::new(
            db.clone(),
            outbox,
            workers.clone(),
            std::time::Duration::from_secs(config.federation_max_backoff_secs),
        );
        let tls = federation::tls::NodeTls::load_or_create(&config, &server_name)?;
        // The federation list's member CAs are trusted too (read at start; see policy::watch).
        let trusted = tls.cert_chain.clone();
        let federation_client =
            federation::client::FederationClient::new(&config, server_name.clone(), keys.clone(), &trusted)?;
        policy::watch::install(&policy, &federation_client, &config);
        let remote_keys = federation::remote_keys::RemoteKeys::new(db.clone(), keys.clone(), federation_client.clone());
        let peer_seen = federation::peer_seen_channel();
        let limits = http::RateLimiter::new(&config.rate_limits);
        let push = push::Push::new(&config)?;
        let previews = media::preview::Previews::new(&config)?;
        let search = search::Search::open(&config.data_dir.join("search"))?;
        let metrics_token = config.metrics.resolved_token()?;
        let admin_token = config.admin_token_file.as_deref().map(config::ops::read_admin_token).transpose()?;
        Ok(Arc::new(Self {
            config,
            server_name,
            db,
            keys,
            users,
            rooms,
            sync,
            e2ee,
            media,
            policy,
            sender,
            tls,
            federation_client,
            remote_keys,
            peer_seen,
            inbound: federation::receive::Inbound::default(),
            provisioning: policy::provision::Provisioning::default(),
            limits,
            alarms,
            metrics,
            metrics_token,
            admin_token,
            workers,
            push,
            previews,
            search,
        }))
    }
}

/// A running node.
pub struct Node;

/// What [`Node::start`] gives back: where the node listens, and how to stop it.
pub struct NodeHandle {
    pub addr: SocketAddr,
    /// Where the Server-Server API listens (TLS).
    pub federation_addr: SocketAddr,
    /// Where the separate metrics listener listens, if `[metrics] listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub server_name: OwnedServerName,
    pub services: Arc<Services>,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}; is another program using it?"))
}

/// Opens the services and brings the store to the current schema; on failure nothing holds the
/// store any more.
async fn open_and_upgrade(config: Config) -> anyhow::Result<Arc<Services>> {
    let services = tokio::task::spawn_blocking(move || Services::open(config)).await??;
    let steps = store::schema::upgrade(&services).await?;
    if !steps.is_empty() {
        tracing::info!(?steps, version = store::schema::CURRENT, "store upgraded");
    }
    Ok(services)
}

impl Node {
    /// Opens the store, binds the listener and serves until [`NodeHandle::shutdown`].
    pub async fn start(config: Config) -> anyhow::Result<NodeHandle> {
        // Ports first: one in use then fails the start before anything is written.
        let listener = bind(config.listen, "client API, `listen`").await?;
        let federation_listener = bind(config.federation_listen, "federation, `federation_listen`").await?;
        let addr = listener.local_addr()?;
        let federation_addr = federation_listener.local_addr()?;
        let data_dir = config.data_dir.clone();
        let fresh = !data_dir.exists();
        let services = match open_and_upgrade(config).await {
            Ok(services) => services,
            Err(e) => {
                // A first start that failed leaves no half-made data dir (store, keys,
                // certificate) for the next attempt to trip over.
                if fresh && let Err(removal) = std::fs::remove_dir_all(&data_dir) {
                    tracing::warn!(path = %data_dir.display(), error = %removal, "cannot remove the data dir of a failed first start");
                }
                return Err(e);
            }
        };
        let workers = &services.workers;
        let (tls_config, tls_cert) = services.tls.reloading_server_config()?;
        federation::tls_reload::spawn(tls_cert, workers);
        let tls_listener = federation::tls::TlsListener::spawn(federation_listener, tls_config, workers)?;
        let federation_app = federation::router(services.clone());
        workers.spawn("federation-api", |mut stop| async move {
            let serve = axum::serve(tls_listener, federation_app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "federation server stopped with an error");
            }
        });
        // The peer address feeds the per-address rate limits.
        let app = client::router(services.clone()).into_make_service_with_connect_info::<SocketAddr>();
        workers.spawn("client-api", |mut stop| async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "server stopped with an error");
            }
        });
        federation::sender::Sender::start(&services);
        federation::announce::spawn(&services);
        policy::watch::spawn(&services);
        sync::presence::spawn_idle_timer(&services);
        sync::wake::spawn(&services);
        rooms::retention::purge::spawn(&services);
        alarms::worker::spawn(&services);
        push::spawn(&services);
        search::worker::spawn(&services);
        let metrics_addr = admin::listener::spawn_metrics(&services).await?;
        let server_name = services.server_name.clone();
        tracing::info!(%addr, %federation_addr, %server_name, store = services.db.engine_name(), "tocsin node listening");
        Ok(NodeHandle { addr, federation_addr, metrics_addr, server_name, services })
    }
}

/// How long [`NodeHandle::shutdown`] gives workers to return before aborting them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl NodeHandle {
    /// The base URL clients use to reach this node.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, lets open ones finish (long-polls are woken), joins every
    /// worker and closes the store, so the data directory can be opened again at once.
    pub async fn shutdown(self) -> workers::ShutdownReport {
        self.services.workers.signal_stop();
        self.services.sync.shutdown();
        let report = self.services.workers.shutdown(SHUTDOWN_GRACE).await;
        tracing::info!(joined = report.joined, aborted = report.aborted.len(), "node stopped");
        report
    }

    /// Waits until the node is told to stop (by [`Workers::signal_stop`](workers::Workers)).
    pub async fn wait(self) {
        let mut stop = self.services.workers.stop_signal();
        let _ = stop.wait_for(|stop| *stop).await;
        let _ = self.shutdown().await;
    }
}
