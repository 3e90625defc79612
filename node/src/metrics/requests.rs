//! Request metrics for the client and federation routers: count by endpoint (the route
//! template, so ids do not explode the series), method and status; latency histogram by
//! endpoint; requests in flight by endpoint (long-polling `/sync` connections show there).

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::Response,
};

use super::{Counter, Gauge, Histogram, LATENCY_BUCKETS, Registry};

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

/// The series of one endpoint, looked up once: formatting label sets and taking the registry's
/// lock on every request was 5 % of the node's CPU in the sync fan-out.
struct EndpointSeries {
    in_flight: Gauge,
    duration: Histogram,
    /// (method, status) -> requests answered.
    answered: RwLock<HashMap<(Method, StatusCode), Counter>>,
}

/// The state of the middleware: which API it counts, and where.
#[derive(Clone)]
pub struct RequestMetrics {
    api: &'static str,
    registry: Arc<Registry>,
    /// Route template -> its series. Bounded by the router's routes (plus "unmatched").
    endpoints: Arc<RwLock<HashMap<String, Arc<EndpointSeries>>>>,
}

impl RequestMetrics {
    pub fn new(api: &'static str, registry: Arc<Registry>) -> Self {
        Self { api, registry, endpoints: Arc::default() }
    }

    fn endpoint(&self, template: Option<&str>) -> Arc<EndpointSeries> {
        let key = template.unwrap_or("unmatched");
        if let Some(series) = self.endpoints.read().unwrap_or_else(PoisonError::into_inner).get(key) {
            return series.clone();
        }
        let endpoint = template.map_or_else(|| "unmatched".to_owned(), label);
        let labels = [("api", self.api), ("endpoint", endpoint.as_str())];
        let series = Arc::new(EndpointSeries {
            in_flight: self.registry.gauge(
                "tocsin_http_requests_in_flight",
                "Requests being served, by endpoint.",
                &labels,
            ),
            duration: self.registry.histogram(
                "tocsin_http_request_duration_seconds",
                "Time to the response head, by endpoint.",
                LATENCY_BUCKETS,
                &labels,
            ),
            answered: RwLock::default(),
        });
        self.endpoints.write().unwrap_or_else(PoisonError::into_inner).entry(key.to_owned()).or_insert(series).clone()
    }

    fn answered(
        &self,
        template: Option<&str>,
        series: &EndpointSeries,
        method: &Method,
        status: StatusCode,
    ) -> Counter {
        let key = (method.clone(), status);
        if let Some(counter) = series.answered.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return counter.clone();
        }
        let endpoint = template.map_or_else(|| "unmatched".to_owned(), label);
        let counter = self.registry.counter(
            "tocsin_http_requests_total",
            "Requests answered, by endpoint, method and status.",
            &[
                ("api", self.api),
                ("endpoint", endpoint.as_str()),
                ("method", method.as_str()),
                ("status", status.as_str()),
            ],
        );
        series.answered.write().unwrap_or_else(PoisonError::into_inner).entry(key).or_insert(counter).clone()
    }
}

pub async fn track(State(m): State<RequestMetrics>, request: Request, next: Next) -> Response {
    let template = request.extensions().get::<MatchedPath>().cloned();
    let template = template.as_ref().map(MatchedPath::as_str);
    let method = request.method().clone();
    let series = m.endpoint(template);
    // A guard, so a request whose client goes away (a dropped long-poll) is not counted forever.
    let guard = InFlight::enter(series.in_flight.clone());
    let started = Instant::now();
    let response = next.run(request).await;
    drop(guard);
    series.duration.observe_duration(started.elapsed());
    m.answered(template, &series, &method, response.status()).inc();
    response
}
