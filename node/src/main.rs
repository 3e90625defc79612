//! `tocsin-node`: the command line around the node library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tocsin_node::{Config, Node, Services};

#[derive(Parser)]
#[command(name = "tocsin-node", version, about = "Tocsin: a Matrix homeserver for crisis communication")]
struct Cli {
    /// TOML config file; `TOCSIN_*` environment variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node.
    Serve,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. Reads the password from --password or TOCSIN_PASSWORD, or makes one up.
    Add {
        name: String,
        #[arg(long)]
        admin: bool,
        #[arg(long, env = "TOCSIN_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOCSIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sled=warn,ruma_state_res=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(config).await,
        Command::User { command: UserCommand::Add { name, admin, password, display_name } } => {
            let services = tokio::task::spawn_blocking(move || Services::open(config)).await??;
            let generated = password.is_none();
            let password = password.unwrap_or_else(|| tocsin_node::users::random_string(20));
            let user_id = services.users.create_account(&name.to_lowercase(), Some(&password), display_name, admin).await?;
            println!("created {user_id}{}", if admin { " (admin)" } else { "" });
            if generated {
                println!("password: {password}");
            }
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.registration == tocsin_node::Registration::Open {
        tracing::warn!("REGISTRATION IS OPEN: anyone who can reach this node can create an account. Use `registration = \"closed\"` or `\"token\"` outside tests.");
    }
    let config_hint = "--config FILE";
    let server_name = config.server_name.clone();
    let node = Node::start(config).await?;
    println!("Tocsin node {server_name} is listening on {}", node.base_url());
    println!("Create the first account with:  tocsin-node {config_hint} user add alice --admin");
    println!("(or with the same TOCSIN_* environment as this node, while it is stopped or running)");
    tokio::signal::ctrl_c().await?;
    println!("shutting down");
    node.shutdown().await;
    Ok(())
}
