//! Options and output helpers shared by `tocsin-loadgen`'s scenarios.

use anyhow::{Context, Result, bail};
use tocsin_tests::loadgen;

/// The options of the scenarios that start their own node processes.
#[derive(Debug, clap::Args)]
pub struct OwnNodes {
    /// The nodes' data (a fresh folder; default: a new folder under the system's temp dir).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// The node binary (default: `tocsin-test-node` beside this one).
    #[arg(long)]
    pub node_binary: Option<std::path::PathBuf>,
    #[arg(long, default_value = "loadgen-password-0")]
    pub password: String,
    /// Also write the figures as one JSON object to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

impl OwnNodes {
    /// The fresh data folder (named for `what` by default) and the node binary.
    pub fn resolve(&self, what: &str) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
        let dir = fresh_dir(self.dir.clone(), what)?;
        let binary = match &self.node_binary {
            Some(path) => path.clone(),
            None => loadgen::alarm_federation::default_node_binary()?,
        };
        Ok((dir, binary))
    }
}

pub fn write_json<T: serde::Serialize>(path: Option<&std::path::Path>, report: &T) -> Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(report).context("encoding the report")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `dir`, or a new folder under the system's temp dir named for `what`; made here, and refused
/// if it exists (a benchmark starts from nothing).
pub fn fresh_dir(dir: Option<std::path::PathBuf>, what: &str) -> Result<std::path::PathBuf> {
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("tocsin-{what}-bench-{}", std::process::id())));
    if dir.exists() {
        bail!("{} exists; the benchmark needs a fresh folder", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
