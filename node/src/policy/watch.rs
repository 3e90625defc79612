//! Applying policies to the running node: the federation list's pins, CAs and outbound gate at
//! start, and reloads on SIGHUP ([`reload_all`]) or when a file changes on disk ([`spawn`], which
//! polls modification times every [`POLL_INTERVAL`]; no file-watching dependency). The same
//! loop posts the list's expiry warning to the admin room ([`crate::admin::notices`]).
//!
//! Pins and CAs: a member's `address` pins it in the federation client (replacing DNS), unless
//! the node's own `federation_pins` names that server (the local admin knows the local network
//! best: a proxy, a NAT). A member's `ca_cert` or `ca_fingerprint` is the only CA trusted for that
//! member ([`crate::federation::trust`]). Both follow a reload at once.

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use ruma::OwnedServerName;

use super::{PolicyGate, federation::Applied};
use crate::{Config, Services, federation::client::FederationClient};

/// How often the policy and federation list files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How often an expired or soon expiring list is logged again.
const EXPIRY_LOG_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Wires the federation list into the client: the outbound gate and the members' pins.
pub fn install(policy: &Arc<PolicyGate>, client: &FederationClient, config: &Config) {
    let gate = policy.clone();
    client.set_gate(Arc::new(move |server| gate.federation.check(server, "this node does not contact it")));
    apply_pins(policy, client, config);
    client.set_member_cas(policy.federation.list().as_deref());
}

/// Pins every member with an `address` that the node's config does not pin itself.
fn apply_pins(policy: &PolicyGate, client: &FederationClient, config: &Config) {
    let Some(list) = policy.federation.list() else { return };
    for member in &list.members {
        let Some(address) = &member.address else { continue };
        if config.federation_pins.contains_key(&member.server_name) {
            continue;
        }
        let Ok(server) = OwnedServerName::try_from(member.server_name.as_str()) else { continue };
        match address.parse::<SocketAddr>() {
            Ok(addr) => client.set_pin(server, addr),
            Err(_) => tracing::warn!(
                %server,
                %address,
                "the federation list pins a host name; only IP addresses can be pinned, so it is resolved by DNS"
            ),
        }
    }
}

/// Reloads the node policy and the federation list. Each keeps its last valid version when its
/// file is bad (logged). A new list applies at once: pins move, removed members' queues are
/// dropped (counted in the sender's backlog) and their requests refused.
pub async fn reload_all(services: &Services) {
    match services.policy.reload() {
        Ok(()) => tracing::info!("node policy reloaded"),
        Err(e) => tracing::error!(error = %e, "node policy reload failed; keeping the last valid policy"),
    }
    reload_federation_list(services).await;
}

async fn reload_federation_list(services: &Services) {
    match services.policy.federation.reload() {
        Ok(Some(applied)) => apply(services, applied).await,
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "federation list refused; keeping the last valid list"),
    }
}

async fn apply(services: &Services, applied: Applied) {
    let changes = &applied.changes;
    tracing::info!(
        version = applied.version,
        added = ?changes.added,
        removed = ?changes.removed,
        repinned = ?changes.repinned,
        "federation list applied"
    );
    apply_pins(&services.policy, &services.federation_client, &services.config);
    services.federation_client.set_member_cas(services.policy.federation.list().as_deref());
    for server in &changes.removed {
        let Ok(server) = OwnedServerName::try_from(server.as_str()) else { continue };
        match services.sender.drop_destination(&server).await {
            Ok(dropped) => {
                tracing::warn!(%server, dropped, "removed from the federation list: its outbound queue is dropped")
            }
            Err(e) => tracing::error!(%server, error = %e, "cannot drop the outbound queue of a removed member"),
        }
    }
    services.policy.federation.warn_expiry();
}

/// The newest modification time of a file, or of the files in a folder.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    let entries = std::fs::read_dir(path).ok()?;
    entries.filter_map(|e| e.ok()?.metadata().ok()?.modified().ok()).chain(meta.modified().ok()).max()
}

/// Polls the policy files every [`POLL_INTERVAL`] and reloads what changed; logs the list's
/// expiry warning every few minutes. Stops when `shutdown` turns true.
pub fn spawn(node: &Arc<Services>) {
    let services = node.clone();
    node.workers.spawn("policy-watch", |mut shutdown| async move {
        let policy_path = services.policy.path().map(Path::to_path_buf);
        let mut policy_seen = policy_path.as_deref().and_then(newest_mtime);
        let mut last_expiry_log = tokio::time::Instant::now();
        let mut notices = crate::admin::notices::ExpiryNotices::load(&services);
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            if let Some(path) = &policy_path {
                let now = newest_mtime(path);
                if now != policy_seen {
                    policy_seen = now;
                    match services.policy.reload() {
                        Ok(()) => tracing::info!(file = %path.display(), "node policy changed on disk: reloaded"),
                        Err(e) => {
                            tracing::error!(error = %e, "node policy reload failed; keeping the last valid policy")
                        }
                    }
                }
            }
            if services.policy.federation.changed_on_disk() {
                tracing::info!("federation list changed on disk: reloading");
                reload_federation_list(&services).await;
            }
            // The expiry warning in the admin room, once per change (the first tick: at start).
            notices.check(&services).await;
            if last_expiry_log.elapsed() >= EXPIRY_LOG_INTERVAL {
                last_expiry_log = tokio::time::Instant::now();
                services.policy.federation.warn_expiry();
            }
        }
    })
}
