//! A push gateway for the tests: it serves `POST /_matrix/push/v1/notify` by the Push Gateway
//! API, parsing each request with ruma's push-gateway types (a request that does not follow the
//! API fails the test) and answering `200 {"rejected": [...]}`. It can be stopped and started
//! again on the same address, to play a gateway that is down. The load generator counts the
//! alarm's pushes with it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{body::Body, extract::State, http, routing::post};
use tocsin_node::ruma::api::{
    IncomingRequest, OutgoingResponse,
    push_gateway::send_event_notification::v1::{Notification, Request, Response},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

#[derive(Default)]
struct Shared {
    /// Each notification with the moment it arrived.
    received: Mutex<Vec<(Notification, Instant)>>,
    /// Pushkeys answered as rejected.
    reject: Mutex<Vec<String>>,
    /// Requests that did not parse as the Push Gateway API.
    malformed: Mutex<Vec<String>>,
}

pub struct Gateway {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

async fn notify(State(shared): State<Arc<Shared>>, request: axum::extract::Request) -> http::Response<Body> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let request = http::Request::from_parts(parts, bytes);
    match Request::try_from_http_request(request, &[] as &[String]) {
        Ok(parsed) => {
            let pushkeys: Vec<String> = parsed.notification.devices.iter().map(|d| d.pushkey.clone()).collect();
            shared.received.lock().unwrap().push((parsed.notification, Instant::now()));
            let reject = shared.reject.lock().unwrap();
            let rejected = pushkeys.into_iter().filter(|k| reject.contains(k)).collect();
            match Response::new(rejected).try_into_http_response::<Vec<u8>>() {
                Ok(response) => response.map(Body::from),
                Err(e) => plain(500, &e.to_string()),
            }
        }
        Err(e) => {
            shared.malformed.lock().unwrap().push(e.to_string());
            plain(400, "{}")
        }
    }
}

fn plain(status: u16, body: &str) -> http::Response<Body> {
    let mut response = http::Response::new(Body::from(body.to_owned()));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

impl Gateway {
    /// A gateway on a free loopback port (tests: a port that cannot be bound fails the test).
    pub async fn start() -> Self {
        Self::try_start().await.expect("the push gateway binds a loopback port")
    }

    pub async fn try_start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut gateway = Gateway { addr, shared: Arc::default(), running: None };
        gateway.serve(listener);
        Ok(gateway)
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = axum::Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state(self.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        self.running = Some((stop, task));
    }

    /// The pusher URL for this gateway.
    pub fn url(&self) -> String {
        format!("http://{}/_matrix/push/v1/notify", self.addr)
    }

    /// Stops listening: connections are refused until [`Gateway::restart`].
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("gateway binds its old address again");
        self.serve(listener);
    }

    pub fn reject(&self, pushkey: &str) {
        self.shared.reject.lock().unwrap().push(pushkey.to_owned());
    }

    pub fn received(&self) -> Vec<Notification> {
        let malformed = self.shared.malformed.lock().unwrap();
        assert!(malformed.is_empty(), "requests that do not follow the Push Gateway API: {malformed:?}");
        self.shared.received.lock().unwrap().iter().map(|(n, _)| n.clone()).collect()
    }

    /// Every notification so far with the moment it arrived, and the requests that did not
    /// follow the Push Gateway API.
    pub fn arrivals(&self) -> (Vec<(Notification, Instant)>, Vec<String>) {
        (self.shared.received.lock().unwrap().clone(), self.shared.malformed.lock().unwrap().clone())
    }

    /// Waits until at least `n` notifications arrived (up to `secs`), and returns them all.
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Notification> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} notifications within {secs}s: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
