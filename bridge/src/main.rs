//! `tocsin-bridge run --config tocsin-bridge.toml` and `tocsin-bridge check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tocsin-bridge",
    about = "Public warnings (CAP 1.2) into Tocsin rooms as alarms, and alarms out as CAP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the bridge until SIGINT/SIGTERM.
    Run {
        #[arg(long, env = "TOCSIN_BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Validates a config (and the policy it names), a policy, and a folder of CAP files,
    /// without posting anything.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        policy: Option<PathBuf>,
        /// A folder of CAP files to validate and route.
        #[arg(long)]
        cap: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,matrix_sdk=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Check { config, policy, cap } => {
            let report = tocsin_bridge::check::check(config.as_deref(), policy.as_deref(), cap.as_deref());
            for line in &report.lines {
                println!("{line}");
            }
            if report.errors > 0 {
                eprintln!("{} problem(s)", report.errors);
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Command::Run { config } => run(config),
    }
}

fn run(config: PathBuf) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tocsin-bridge: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let config = match tocsin_bridge::Config::read(&config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("tocsin-bridge: {e}");
                return ExitCode::FAILURE;
            }
        };
        let bridge = match tocsin_bridge::start(config).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("tocsin-bridge: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(http = ?bridge.http_addr, "tocsin-bridge running");
        wait_for_signal().await;
        tracing::info!("shutting down");
        bridge.stop().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
