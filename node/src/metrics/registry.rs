//! A small metrics registry rendered in the Prometheus text format (0.0.4).
//!
//! Any area registers what it measures through `services.metrics`:
//! - [`Registry::counter`], [`Registry::gauge`], [`Registry::histogram`] give a handle for one
//!   label set (get-or-create: call it again with the same name and labels and you get the same
//!   series), cheap to clone and update from any thread;
//! - [`Registry::collect`] adds a function run at every scrape, for values that already live
//!   elsewhere (queue lengths, file sizes): it writes whole families into an [`Exposition`].

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

/// Latency buckets, in seconds, for request and commit durations.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Cumulative buckets are computed at render time; each slot counts only its own range.
pub struct HistogramCore {
    bounds: &'static [f64],
    slots: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in microseconds (or micro-units), so it can be an atomic integer.
    sum_micros: AtomicU64,
}

#[derive(Clone)]
pub struct Histogram(Arc<HistogramCore>);

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self(Arc::new(HistogramCore {
            bounds,
            slots: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, value: f64) {
        let core = &self.0;
        let slot = core.bounds.iter().position(|b| value <= *b).unwrap_or(core.bounds.len());
        core.slots[slot].fetch_add(1, Ordering::Relaxed);
        core.count.fetch_add(1, Ordering::Relaxed);
        // Saturating float-to-int cast: a negative or NaN value adds nothing.
        core.sum_micros.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

struct Family {
    help: &'static str,
    kind: &'static str,
    /// Rendered label set (`{a="b"}` or empty) -> series.
    series: BTreeMap<String, Series>,
}

type Collector = Box<dyn Fn(&mut Exposition) + Send + Sync>;

#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
    collectors: Mutex<Vec<Collector>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn series<T>(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Series,
        pick: impl Fn(&Series) -> Option<T>,
    ) -> Option<T> {
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let family = families.entry(name).or_insert_with(|| Family { help, kind, series: BTreeMap::new() });
        if family.kind != kind {
            tracing::error!(name, "metric registered twice with different types; this series is not exported");
            return None;
        }
        pick(family.series.entry(label_set(labels)).or_insert_with(make))
    }

    pub fn counter(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
        self.series(
            name,
            help,
            "counter",
            labels,
            || Series::Counter(Counter::default()),
            |s| match s {
                Series::Counter(c) => Some(c.clone()),
                _ => None,
            },
        )
        .unwrap_or_default()
    }

    pub fn gauge(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
        self.series(
            name,
            help,
            "gauge",
            labels,
            || Series::Gauge(Gauge::default()),
            |s| match s {
                Series::Gauge(g) => Some(g.clone()),
                _ => None,
            },
        )
        .unwrap_or_default()
    }

    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        bounds: &'static [f64],
        labels: &[(&str, &str)],
    ) -> Histogram {
        self.series(
            name,
            help,
            "histogram",
            labels,
            || Series::Histogram(Histogram::new(bounds)),
            |s| match s {
                Series::Histogram(h) => Some(h.clone()),
                _ => None,
            },
        )
        .unwrap_or_else(|| Histogram::new(bounds))
    }

    /// Runs `f` at every scrape; it writes families computed on the spot.
    pub fn collect(&self, f: impl Fn(&mut Exposition) + Send + Sync + 'static) {
        self.collectors.lock().unwrap_or_else(PoisonError::into_inner).push(Box::new(f));
    }

    /// Every registered series, then every collector's output.
    pub fn render(&self) -> String {
        let mut out = Exposition::default();
        {
            let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
            for (name, family) in families.iter() {
                out.header(name, family.help, family.kind);
                for (labels, series) in &family.series {
                    match series {
                        Series::Counter(c) => out.sample(name, labels, c.get()),
                        Series::Gauge(g) => out.sample(name, labels, g.get()),
                        Series::Histogram(h) => out.histogram_samples(name, labels, h),
                    }
                }
            }
        }
        for collector in self.collectors.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            collector(&mut out);
        }
        out.text
    }
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `{a="x",b="y"}`, or empty for no labels.
pub fn label_set(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

/// The text being built for one scrape.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn into_text(self) -> String {
        self.text
    }

    pub fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.text, "{name}{labels} {value}");
    }

    /// A whole gauge family: `samples` are (label set, value).
    pub fn gauge<V: std::fmt::Display>(&mut self, name: &str, help: &str, samples: &[(String, V)]) {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.sample(name, labels, value);
        }
    }

    /// A whole counter family.
    pub fn counter<V: std::fmt::Display>(&mut self, name: &str, help: &str, samples: &[(String, V)]) {
        self.header(name, help, "counter");
        for (labels, value) in samples {
            self.sample(name, labels, value);
        }
    }

    /// A histogram from cumulative-by-render slots (see [`Histogram`]).
    fn histogram_samples(&mut self, name: &str, labels: &str, h: &Histogram) {
        let core = &h.0;
        let counts: Vec<u64> = core.slots.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        let sum = core.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        self.histogram_raw(name, labels, core.bounds, &counts, sum);
    }

    /// A histogram series from per-bucket counts (`counts.len() == bounds.len() + 1`, the last
    /// for values above every bound) and the sum of observed values.
    pub fn histogram_raw(&mut self, name: &str, labels: &str, bounds: &[f64], counts: &[u64], sum: f64) {
        let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).unwrap_or("");
        let sep = if inner.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(self.text, "{name}_bucket{{{inner}{sep}le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(self.text, "{name}_sum{labels} {sum}");
        let _ = writeln!(self.text, "{name}_count{labels} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_shared_and_rendered_with_their_type() {
        let registry = Registry::new();
        registry.counter("t_requests_total", "Requests.", &[("endpoint", "/a\"b")]).inc();
        registry.counter("t_requests_total", "Requests.", &[("endpoint", "/a\"b")]).add(2);
        registry.gauge("t_open", "Open things.", &[]).set(-3);
        let h = registry.histogram("t_seconds", "Latency.", &[0.1, 1.0], &[("api", "client")]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        registry.collect(|out| out.gauge("t_collected", "From a collector.", &[(String::new(), 5)]));
        let text = registry.render();
        assert!(text.contains("# TYPE t_requests_total counter\n"), "{text}");
        assert!(text.contains("t_requests_total{endpoint=\"/a\\\"b\"} 3\n"), "{text}");
        assert!(text.contains("t_open -3\n"), "{text}");
        assert!(text.contains("# TYPE t_seconds histogram\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{api=\"client\",le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{api=\"client\",le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{api=\"client\",le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_count{api=\"client\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_sum{api=\"client\"} 7.55\n"), "{text}");
        assert!(text.contains("t_collected 5\n"), "{text}");
        // A name reused with another type is refused, not rendered twice.
        registry.gauge("t_requests_total", "Wrong.", &[]).set(9);
        assert_eq!(registry.render().matches("# TYPE t_requests_total").count(), 1);
    }
}
