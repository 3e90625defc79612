//! `tocsin-test-node CONFIG`: one node from a config file, in its own process, so scenario tests
//! can kill it with SIGKILL. The same `Node::start` as `tocsin-node serve`, without the CLI.

use tocsin_node::{Config, Node};

/// See the workspace manifest: the system allocator was a tenth of the CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(tocsin_node::DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let path = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: tocsin-test-node CONFIG"))?;
    let config = Config::load(Some(std::path::Path::new(&path)))?;
    let node = Node::start(config).await?;
    node.wait().await;
    Ok(())
}
