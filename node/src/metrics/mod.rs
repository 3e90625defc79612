//! What the node measures, shared by every area: the registry (counters, gauges, histograms and
//! scrape-time collectors) and the per-request middleware. It imports nothing of the node, so
//! any area may record into it without joining an import circle; `admin::metrics` serves it.

pub mod registry;
pub mod requests;

pub use registry::{Counter, Exposition, Gauge, Histogram, LATENCY_BUCKETS, Registry};
