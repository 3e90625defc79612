//! Counters for operators: alerts in, posted, deduplicated, quarantined (Prometheus text).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub alerts_in: AtomicU64,
    pub posted: AtomicU64,
    pub edited: AtomicU64,
    pub deduplicated: AtomicU64,
    pub quarantined: AtomicU64,
    pub expired: AtomicU64,
    pub unrouted: AtomicU64,
    pub delivery_failures: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus exposition text, with the outbox length as a gauge.
    pub fn render(&self, outbox: u64) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            ("alerts_in_total", "Alerts received from all sources", &self.alerts_in),
            ("alerts_posted_total", "Alarm messages posted to rooms", &self.posted),
            ("alerts_edited_total", "Alarm edits posted (updates and cancels)", &self.edited),
            ("alerts_deduplicated_total", "Alerts dropped as already seen", &self.deduplicated),
            ("alerts_quarantined_total", "Invalid documents quarantined", &self.quarantined),
            ("alerts_expired_total", "Alerts not posted because they had expired", &self.expired),
            ("alerts_unrouted_total", "Alerts that matched no room", &self.unrouted),
            ("delivery_failures_total", "Failed delivery attempts (retried)", &self.delivery_failures),
        ] {
            out.push_str(&format!(
                "# HELP tocsin_bridge_{name} {help}\n# TYPE tocsin_bridge_{name} counter\ntocsin_bridge_{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# HELP tocsin_bridge_outbox Messages waiting for the homeserver\n# TYPE tocsin_bridge_outbox gauge\ntocsin_bridge_outbox {outbox}\n"
        ));
        out
    }
}
