//! Reading a Tocsin node's own figures from `/_tocsin/metrics` (Prometheus text), for the
//! benchmarks that start their nodes with a metrics token.

use anyhow::{Context, Result};

/// The node's metrics page.
pub async fn scrape(http: &reqwest::Client, base_url: &str, token: &str) -> Result<String> {
    http.get(format!("{base_url}/_tocsin/metrics"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("reading {base_url}/_tocsin/metrics"))?
        .text()
        .await
        .context("reading the metrics page")
}

/// The sum of every series of metric `name` (all label sets); 0 when absent.
pub fn total(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The store's group commits between two scrapes: how many, the batches in each, and the mean
/// time of one.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Commits {
    pub groups: f64,
    pub batches_per_group: f64,
    pub mean_ms: f64,
}

impl Commits {
    pub fn between(before: &str, after: &str) -> Self {
        let delta = |name: &str| total(after, name) - total(before, name);
        let groups = delta("tocsin_store_commit_duration_seconds_count");
        let batches = delta("tocsin_store_commit_batches_total");
        let seconds = delta("tocsin_store_commit_duration_seconds_sum");
        let per = |x: f64| if groups > 0.0 { x / groups } else { 0.0 };
        Self { groups, batches_per_group: per(batches), mean_ms: per(seconds) * 1000.0 }
    }
}
