//! On start, an empty transaction to every server this node shares a room with. The request is
//! signed, so each peer treats it as a sign of life and flushes its queue for this node at once:
//! a node back from an outage catches up in seconds, not after the peer's next retry.

use std::sync::Arc;

use ruma::{MilliSecondsSinceUnixEpoch, OwnedTransactionId, api::federation::transactions::send_transaction_message};

use crate::Services;

pub fn spawn(services: &Arc<Services>) {
    let s = services.clone();
    services.workers.spawn("announce", |_stop| async move {
        let peers = match s.rooms.peer_servers().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the servers to announce this node to");
                return;
            }
        };
        for peer in peers {
            let s2 = s.clone();
            s.workers.spawn("announce-peer", |_stop| async move {
                let s = s2;
                let txn_id = OwnedTransactionId::from(format!("hello-{}", MilliSecondsSinceUnixEpoch::now().get()));
                let request = send_transaction_message::v1::Request::new(
                    txn_id,
                    s.server_name.clone(),
                    MilliSecondsSinceUnixEpoch::now(),
                );
                match s.federation_client.send(&peer, request).await {
                    Ok(_) => tracing::info!(%peer, "announced this node"),
                    Err(e) => tracing::info!(%peer, error = %e, "peer not reachable yet"),
                }
            });
        }
    });
}
