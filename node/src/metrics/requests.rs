//! Request metrics for the client and federation routers: count by endpoint (the route
//! template, so ids do not explode the series), method and status; latency histogram by
//! endpoint; requests in flight by endpoint (long-polling `/sync` connections show there).

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};

use super::{Gauge, LATENCY_BUCKETS, Registry};

struct InFlight(Gauge);

impl InFlight {
    fn enter(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A route template as a label: `{room_id}` becomes `:room_id`. Braces are legal in a label
/// value, but several exposition parsers in the field cut a sample's labels at the first `}`.
fn label(template: &str) -> String {
    template.replace('{', ":").replace('}', "")
}

/// The state of the middleware: which API it counts, and where.
#[derive(Clone)]
pub struct RequestMetrics {
    pub api: &'static str,
    pub registry: Arc<Registry>,
}

pub async fn track(State(m): State<RequestMetrics>, request: Request, next: Next) -> Response {
    let endpoint =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| label(p.as_str()));
    let method = request.method().as_str().to_owned();
    let labels = [("api", m.api), ("endpoint", endpoint.as_str())];
    let in_flight = m.registry.gauge("tocsin_http_requests_in_flight", "Requests being served, by endpoint.", &labels);
    // A guard, so a request whose client goes away (a dropped long-poll) is not counted forever.
    let guard = InFlight::enter(in_flight);
    let started = Instant::now();
    let response = next.run(request).await;
    drop(guard);
    m.registry
        .histogram(
            "tocsin_http_request_duration_seconds",
            "Time to the response head, by endpoint.",
            LATENCY_BUCKETS,
            &labels,
        )
        .observe_duration(started.elapsed());
    let status = response.status();
    m.registry
        .counter(
            "tocsin_http_requests_total",
            "Requests answered, by endpoint, method and status.",
            &[("api", m.api), ("endpoint", endpoint.as_str()), ("method", &method), ("status", status.as_str())],
        )
        .inc();
    response
}
