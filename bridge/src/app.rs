//! Starting and stopping a whole bridge: store, bot, sync, outbox, sources and HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::cap::signature::Verifier;
use crate::config::{Config, ConfigError, SourceKind};
use crate::http::{HttpState, hook_sources, push_sources};
use crate::ingest::Ingest;
use crate::matrix::{Bot, MatrixError};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("policy: {0}")]
    Policy(#[from] tocsin_policies::PolicyError),
    #[error("the policy has no [bridge] bot and the config no user: who should the bridge post as?")]
    NoBot,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Template(#[from] crate::http::HookError),
    #[error("source {source_name:?}: trusted_certs: {error}")]
    Certs { source_name: String, error: crate::cap::signature::CertError },
}

/// A running bridge.
pub struct BridgeHandle {
    /// Where the HTTP side listens, if it does.
    pub http_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub store: Arc<Store>,
    pub bot: Arc<Bot>,
    pub ingest: Arc<Ingest>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl BridgeHandle {
    /// Stops every task and waits for them (the store closes when the handle is dropped).
    pub async fn stop(self) {
        self.shutdown.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts a bridge from its config.
pub async fn start(config: Config) -> Result<BridgeHandle, BridgeError> {
    let policy = tocsin_policies::read_node_policy(&config.policy)?.policy;
    let user = config.user.clone().or(policy.bridge.bot.clone()).ok_or(BridgeError::NoBot)?;
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Arc::new(Store::open(&config.data_dir.join("bridge.redb"))?);
    let metrics = Arc::new(Metrics::default());
    let wake = Arc::new(Notify::new());
    let mut signatures = std::collections::HashMap::new();
    for s in config.sources.iter().filter(|s| s.require_signature) {
        let verifier = Verifier::load(&s.trusted_certs)
            .map_err(|error| BridgeError::Certs { source_name: s.name.clone(), error })?;
        signatures.insert(s.name.clone(), verifier);
    }
    let ingest = Ingest::new(store.clone(), policy.bridge.routes.clone(), metrics.clone(), wake.clone());
    let ingest = Arc::new(ingest.require_signatures(signatures));
    let bot = Arc::new(Bot::connect(&config.homeserver, &user, &config.password()?, &config.data_dir).await?);
    crate::capout::watch(&bot.client, store.clone());

    let (shutdown, rx) = watch::channel(false);
    let mut tasks = spawn_workers(&config, &store, &bot, &metrics, &wake, &ingest, &rx);
    let mut http_addr = None;
    if let Some(listen) = config.listen {
        let listener = crate::http::bind(listen).await?;
        http_addr = Some(listener.local_addr()?);
        let base_url = config.public_url.clone().unwrap_or_else(|| format!("http://{}", http_addr.unwrap_or(listen)));
        let state = Arc::new(HttpState {
            ingest: ingest.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            push: push_sources(&config.sources),
            hooks: hook_sources(&config.sources)?,
            data_dir: config.data_dir.clone(),
            base_url,
        });
        tasks.push(tokio::spawn(crate::http::serve(listener, state, rx.clone())));
    }
    Ok(BridgeHandle { http_addr, metrics, store, bot, ingest, shutdown, tasks })
}

/// Every background task of the bridge, started the same way (a shutdown receiver each).
fn spawn_workers(
    config: &Config,
    store: &Arc<Store>,
    bot: &Arc<Bot>,
    metrics: &Arc<Metrics>,
    wake: &Arc<Notify>,
    ingest: &Arc<Ingest>,
    rx: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![
        tokio::spawn(Bot::sync_loop(bot.clone(), ingest.rooms(), rx.clone())),
        tokio::spawn(crate::outbox::run(store.clone(), bot.clone(), metrics.clone(), wake.clone(), rx.clone())),
    ];
    for source in &config.sources {
        match &source.kind {
            SourceKind::Folder { path, interval_ms } => tasks.push(tokio::spawn(crate::sources::folder::run(
                source.name.clone(),
                path.clone(),
                Duration::from_millis(*interval_ms),
                ingest.clone(),
                rx.clone(),
            ))),
            SourceKind::Poll { url, interval_ms, warning_url } => {
                let poller = crate::sources::poll::Poller {
                    name: source.name.clone(),
                    url: url.clone(),
                    warning_url: warning_url.clone(),
                    interval: Duration::from_millis(*interval_ms),
                    ingest: ingest.clone(),
                    store: store.clone(),
                    http: bot.client.http_client().clone(),
                    data_dir: config.data_dir.clone(),
                };
                tasks.push(tokio::spawn(poller.run(rx.clone())));
            }
            SourceKind::CapPost { .. } | SourceKind::JsonPost { .. } => {}
        }
    }
    tasks
}
