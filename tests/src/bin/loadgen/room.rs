//! `tocsin-loadgen room-size` and `room-report`: the room-size sweep on a Tocsin or a Synapse
//! pair, and the table and charts of several sweeps side by side.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tocsin_tests::loadgen::room_size::{self, RoomSizeConfig, RoomSizeReport, Server};

use super::options::{OwnNodes, write_json};

/// The servers a room-size sweep runs on.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ServerArg {
    /// Two Tocsin nodes (`tocsin-test-node` processes).
    Tocsin,
    /// Two Synapse servers run by `tests/interop/synapse-fed.sh`.
    Synapse,
}

#[derive(Debug, clap::Args)]
pub struct RoomSizeArgs {
    /// Member counts, ascending (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "500,2000,5000")]
    sizes: Vec<u32>,
    /// The pair the room grows over.
    #[arg(long, value_enum, default_value_t = ServerArg::Tocsin)]
    server: ServerArg,
    /// The script that runs each Synapse (`--server synapse`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/synapse-fed.sh"))]
    synapse_fed: PathBuf,
    #[command(flatten)]
    own: OwnNodes,
    /// Also draw `scale-room-join.svg`, `scale-room-sync.svg` and `scale-room-heal.svg` here.
    #[arg(long)]
    chart_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RoomReportArgs {
    /// A report written by `room-size --json`; one per server, in row and legend order.
    #[arg(long = "input", required = true)]
    inputs: Vec<PathBuf>,
    /// Where `scale-room-join.svg`, `scale-room-sync.svg` and `scale-room-heal.svg` go.
    #[arg(long)]
    chart_dir: PathBuf,
}

pub async fn room_size(args: RoomSizeArgs) -> Result<bool> {
    let RoomSizeArgs { sizes, server, synapse_fed, own, chart_dir } = args;
    let (dir, node_binary) = own.resolve("room-size")?;
    let server = match server {
        ServerArg::Tocsin => Server::Tocsin,
        ServerArg::Synapse => Server::Synapse,
    };
    let cfg =
        RoomSizeConfig { server, sizes, dir: dir.clone(), node_binary, synapse_fed, password: own.password.clone() };
    let report = room_size::run(&cfg)
        .await
        .with_context(|| format!("the servers' data and logs are kept in {}", dir.display()))?;
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    write_json(own.json.as_deref(), &report)?;
    let reports = [report];
    print!("{}", room_size::table(&reports));
    if let Some(dir) = chart_dir {
        for path in room_size::charts(&reports, &dir, "scale-room")? {
            eprintln!("chart written to {}", path.display());
        }
    }
    Ok(true)
}

pub fn room_report(args: RoomReportArgs) -> Result<bool> {
    let mut reports = Vec::new();
    for input in &args.inputs {
        let text = std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
        let report: RoomSizeReport =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", input.display()))?;
        reports.push(report);
    }
    print!("{}", room_size::table(&reports));
    for path in room_size::charts(&reports, &args.chart_dir, "scale-room")? {
        eprintln!("chart written to {}", path.display());
    }
    Ok(true)
}
