//! `tocsin-node`: the command line around the node library.

use std::{net::IpAddr, path::PathBuf};

use clap::{Parser, Subcommand};
use tocsin_node::{Config, Node, Services};

/// See the workspace manifest: the system allocator was a tenth of the CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tocsin-node", version, about = "Tocsin: a Matrix homeserver for crisis communication")]
struct Cli {
    /// TOML config file; `TOCSIN_*` environment variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log lines as `text` (default) or `json` (one object per line, for a log collector).
    #[arg(long, global = true, env = "TOCSIN_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node.
    Serve,
    /// Run a local demo federation of three nodes (Riverton, Lakeside, County Fire) in this
    /// process, with accounts and a shared crisis room, until Ctrl-C.
    Demo {
        /// Where the demo keeps its CA, certificates and the three nodes' data; reused on re-runs.
        #[arg(long, default_value = "./tocsin-demo")]
        dir: PathBuf,
        /// First client port: clients on BASE, BASE+1, BASE+2, federation on BASE+440..BASE+442.
        #[arg(long, default_value_t = 8008)]
        base_port: u16,
        /// The address the six listeners bind.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
    },
    /// Manage accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Alarms on the running node: the open ones, or one alarm's status as JSON (with the
    /// config's `admin_token_file`, or an admin's access token).
    Alarm {
        #[command(subcommand)]
        command: AlarmCommand,
    },
    /// Check, sign and create keys for policy files (federation lists and node policies).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Administer the running node: users, registration tokens, rooms, media, server notices.
    Admin {
        #[command(flatten)]
        remote: tocsin_node::admin::cli::Remote,
        #[command(subcommand)]
        command: tocsin_node::admin::cli::AdminCommand,
    },
    /// Have the running node write a consistent backup (store, media, keys, accepted federation
    /// list) to DEST, a new directory on its host, without stopping it.
    Backup {
        dest: PathBuf,
        #[command(flatten)]
        remote: tocsin_node::admin::cli::Remote,
    },
    /// Put a backup back into the config's data directory. The node must be stopped; the store
    /// is upgraded when the node next starts if the backup is from an older release.
    Restore {
        src: PathBuf,
        /// Move an existing data directory aside (it is never deleted) instead of refusing.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policy files without a running node; exits 1 if any has an error.
    Check {
        files: Vec<PathBuf>,
        /// The federation operator's public key file, to verify signed federation lists.
        #[arg(long = "operator-key")]
        operator_keys: Vec<PathBuf>,
    },
    /// Show the federation list the node's config names (`federation_list`, verified with
    /// `federation_operator_keys`): version, expiry and members; warns when it expires within 7
    /// days or has expired. Exits 1 if the list does not verify.
    Status,
    /// Print what `policy apply` would change on the running node (one line per change), and
    /// what it cannot change. Needs an admin's access token.
    Plan {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Bring the running node in line with its node policy: create the accounts and rooms,
    /// set room settings, invite members, set power levels. Prints what it did; exits 1 if a
    /// change failed (the others are still made). A second apply changes nothing.
    Apply {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Create a federation operator key pair: SECRET.key and SECRET.pub.
    Keygen { out: PathBuf },
    /// Sign a federation list with the operator's secret key; writes the signed file in place
    /// (or to --out).
    Sign {
        list: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AlarmCommand {
    /// The open alarms, one line each: id, level, room, acknowledgements, steps taken, text.
    List {
        #[command(flatten)]
        remote: tocsin_node::admin::cli::Remote,
    },
    /// One alarm's status as JSON (the same as GET /_tocsin/admin/alarms/{id}): expected
    /// recipients, who read and acknowledged when, escalation steps, why it closed.
    Status {
        /// The alarm's id (the `id` of its org.tocsin.alarm block) or its event id.
        id: String,
        #[command(flatten)]
        remote: tocsin_node::admin::cli::Remote,
    },
}

/// How `policy plan` / `policy apply` reach the running node.
#[derive(clap::Args)]
struct RemoteArgs {
    /// The node's client API, e.g. http://127.0.0.1:8008; default: the config's
    /// `public_base_url`, else `http://{listen}`.
    #[arg(long)]
    url: Option<String>,
    /// The access token of a server admin account, or the operator token (`admin_token_file`).
    #[arg(long, env = "TOCSIN_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account while the node is stopped. Reads the password from --password or
    /// TOCSIN_PASSWORD, or makes one up.
    Add(tocsin_node::admin::cli::NewAccount),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOCSIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: escape codes in a log file or the journal are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).with_ansi(false).init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo prints its own summary; node logs below warnings would bury it.
    let demo = matches!(cli.command, Command::Demo { .. });
    init_logging(if demo { "warn,ruma_state_res=error" } else { tocsin_node::DEFAULT_LOG_FILTER }, cli.log_format);
    match cli.command {
        Command::Policy { command: PolicyCommand::Status } => return policy_status(cli.config.as_deref()),
        Command::Policy { command: PolicyCommand::Plan { remote } } => {
            return policy_remote(cli.config.as_deref(), remote, false).await;
        }
        Command::Policy { command: PolicyCommand::Apply { remote } } => {
            return policy_remote(cli.config.as_deref(), remote, true).await;
        }
        Command::Policy { command: PolicyCommand::Check { files, operator_keys } } => {
            return policy_check(cli.config.as_deref(), files, operator_keys);
        }
        Command::Policy { command } => return policy(command),
        Command::Demo { dir, base_port, bind } => return run_demo(dir, base_port, bind).await,
        _ => {}
    }
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Policy { .. } | Command::Demo { .. } => Ok(()),
        Command::Alarm { command } => alarm(&config, command).await,
        Command::Serve => serve(config).await,
        Command::Admin { remote, command } => {
            println!("{}", tocsin_node::admin::cli::run(&config, remote, command).await?);
            Ok(())
        }
        Command::Backup { dest, remote } => {
            println!("{}", tocsin_node::admin::cli::backup(&config, remote, dest).await?);
            Ok(())
        }
        Command::Restore { src, force } => {
            let manifest = tocsin_node::admin::backup::restore(&config, &src, force)?;
            println!(
                "restored the backup of {} (schema {}, taken by tocsin {}) into {}",
                manifest.server_name,
                manifest.schema_version,
                manifest.tocsin_version,
                config.data_dir.display()
            );
            Ok(())
        }
        Command::User {
            command: UserCommand::Add(tocsin_node::admin::cli::NewAccount { name, admin, password, display_name }),
        } => {
            let services = tokio::task::spawn_blocking(move || Services::open(config)).await??;
            let generated = password.is_none();
            let password = password.unwrap_or_else(|| tocsin_node::users::random_string(20));
            tocsin_node::users::password::check(services.config.password_min_length, &password)?;
            let user_id =
                services.users.create_account(&name.to_lowercase(), Some(&password), display_name, admin).await?;
            println!("created {user_id}{}", if admin { " (admin)" } else { "" });
            if generated {
                println!("password: {password}");
            }
            Ok(())
        }
    }
}

fn policy(command: PolicyCommand) -> anyhow::Result<()> {
    use tocsin_policies::OperatorSecretKey;
    match command {
        PolicyCommand::Check { files, operator_keys } => policy_check(None, files, operator_keys),
        PolicyCommand::Status => policy_status(None),
        PolicyCommand::Plan { .. } | PolicyCommand::Apply { .. } => Ok(()),
        PolicyCommand::Keygen { out } => {
            let (secret, public) = tocsin_policies::generate_operator_key();
            let secret_path = out.with_extension("key");
            let public_path = out.with_extension("pub");
            for path in [&secret_path, &public_path] {
                if path.exists() {
                    anyhow::bail!("{} exists; refusing to overwrite a key", path.display());
                }
            }
            std::fs::write(
                &secret_path,
                tocsin_policies::key_file_text("Tocsin federation operator SECRET key: keep offline", &secret),
            )?;
            std::fs::write(
                &public_path,
                tocsin_policies::key_file_text(
                    "Tocsin federation operator public key: pin it in every node's config",
                    &public,
                ),
            )?;
            println!("wrote {} (secret) and {} (public)", secret_path.display(), public_path.display());
            Ok(())
        }
        PolicyCommand::Sign { list, key, out } => {
            let key = OperatorSecretKey::from_file(&key)?;
            let text = std::fs::read_to_string(&list)?;
            let signed = tocsin_policies::sign_text(&text, &key, Some(&list))?;
            let out = out.unwrap_or(list);
            std::fs::write(&out, signed)?;
            println!("signed {} with {}", out.display(), key.public_key().key_id());
            Ok(())
        }
    }
}

/// `alarm list` / `alarm status ID` against the running node's admin API.
async fn alarm(config: &Config, command: AlarmCommand) -> anyhow::Result<()> {
    let (remote, id) = match command {
        AlarmCommand::List { remote } => (remote, None),
        AlarmCommand::Status { id, remote } => (remote, Some(id)),
    };
    let client = tocsin_node::admin::cli::Client::new(config, remote)?;
    match id {
        None => {
            let value = client.call(reqwest::Method::GET, "alarms", None).await?;
            print!("{}", tocsin_node::alarms::remote::list_text(&value)?);
        }
        Some(id) => {
            let path = format!("alarms/{}", tocsin_node::admin::cli::seg(&id));
            println!("{}", serde_json::to_string_pretty(&client.call(reqwest::Method::GET, &path, None).await?)?);
        }
    }
    Ok(())
}

/// `policy plan` / `policy apply` against the running node (see `policy::provision::remote`).
async fn policy_remote(config: Option<&std::path::Path>, remote: RemoteArgs, apply: bool) -> anyhow::Result<()> {
    use tocsin_node::policy::provision::remote;
    let what = if apply { "apply" } else { "plan" };
    let Some(token) = remote.token.filter(|t| !t.trim().is_empty()) else {
        anyhow::bail!(
            "policy {what} needs a server admin's access token: pass --token or set TOCSIN_ADMIN_TOKEN \
             (log in as an account with `admin = true` in the policy, or one made with `tocsin-node user add NAME --admin`)"
        );
    };
    let url = match remote.url {
        Some(url) => url,
        None => remote::base_url(&Config::load(config)?),
    };
    let client = remote::AdminClient::new(&url, token.trim())?;
    if apply {
        let view = client.apply().await?;
        print!("{}", remote::apply_text(&view));
        if !view.failed.is_empty() {
            std::process::exit(1);
        }
    } else {
        print!("{}", remote::plan_text(&client.plan().await?));
    }
    Ok(())
}

/// `policy check`: the files named, or with `--config` and no files, the policy and federation
/// list that config names, each checked against its server name. Exits 1 on any error.
fn policy_check(
    config: Option<&std::path::Path>,
    mut files: Vec<PathBuf>,
    mut operator_keys: Vec<PathBuf>,
) -> anyhow::Result<()> {
    let config = config.map(|path| Config::load(Some(path))).transpose()?;
    if files.is_empty()
        && let Some(config) = &config
    {
        files.extend(config.policy.iter().cloned());
        files.extend(config.federation_list.iter().cloned());
        operator_keys.extend(config.federation_operator_keys.iter().cloned());
    }
    if files.is_empty() {
        anyhow::bail!("nothing to check: name policy files, or a --config whose `policy` or `federation_list` is set");
    }
    let keys = operator_keys
        .iter()
        .map(|p| tocsin_policies::OperatorPublicKey::from_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let report = tocsin_policies::check_paths(&files, &keys);
    println!("{}", report.to_string().trim_end());
    let mut ok = report.is_ok();
    if let Some(config) = &config
        && let Some(policy) = &config.policy
        && let Err(e) = tocsin_node::policy::read(policy, &config.server_name)
    {
        println!("error: {e}");
        ok = false;
    }
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// `policy status`: the configured federation list, as the node would load it.
fn policy_status(config: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let Some(path) = config.federation_list.clone() else {
        println!("no federation_list configured: any server may federate with this node");
        return Ok(());
    };
    // The newer of the file and the copy the node saved when it last accepted a list, as the
    // node would enforce it at start.
    let saved = tocsin_node::policy::accepted::path_in(&config.data_dir);
    let gate = match tocsin_node::policy::federation::FederationGate::inspect(
        Some(path),
        &config.federation_operator_keys,
        Some(saved),
    ) {
        Ok(gate) => gate,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let (Some(list), Some(state)) = (gate.list(), gate.state()) else { return Ok(()) };
    println!("federation list \"{}\" version {} signed by {}", state.name, state.version, list.key_id());
    println!("expires {}{}", state.expires, if state.expired { " (EXPIRED)" } else { "" });
    for m in &list.members {
        let pin = m.address.as_deref().map(|a| format!(" pinned to {a}")).unwrap_or_default();
        println!("  {} ({}, {}){pin}", m.server_name, m.agency, m.role);
    }
    if let Some(warning) = state.warning {
        println!("WARNING: {warning}");
    }
    if let Some(error) = state.last_reload_error {
        println!("WARNING: {error}");
    }
    Ok(())
}

/// Listens for Ctrl-C or SIGTERM (systemd, container runtimes) from the moment it is called, so
/// a signal that comes while the node is starting is not lost (it would kill the process); the
/// returned future resolves on the first of them.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

async fn run_demo(dir: PathBuf, base_port: u16, bind: IpAddr) -> anyhow::Result<()> {
    let stop = stop_signal()?;
    let options = tocsin_node::demo::DemoOptions::with_base_port(dir, bind, base_port)?;
    println!("Starting the Tocsin demo federation in {} ...", options.dir.display());
    let demo = tocsin_node::demo::run_demo(options).await?;
    println!();
    print!("{}", demo.summary());
    stop.await;
    println!("shutting down the three nodes");
    demo.shutdown().await;
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.registration == tocsin_node::Registration::Open {
        tracing::warn!(
            "REGISTRATION IS OPEN: anyone who can reach this node can create an account. Use `registration = \"closed\"` or `\"token\"` outside tests."
        );
    }
    let server_name = config.server_name.clone();
    let stop = stop_signal()?;
    let node = Node::start(config).await?;
    println!("Tocsin node {server_name} is listening on {}", node.base_url());
    println!("Registration is {:?}.", node.services.config.registration);
    if node.services.admin_token.is_some() {
        println!("To create the first account while the node runs:");
        println!("    tocsin-node --config <this config> admin user add alice --admin");
    } else {
        println!("To create the first account, set `admin_token_file` and use `tocsin-node admin user add`, or stop");
        println!("the node (Ctrl-C) and run `tocsin-node user add alice --admin` with the same config.");
    }
    // SIGHUP reloads the policy and the federation list; a bad file is logged and the last
    // valid one stays. Changed files are also picked up without a signal (policy::watch).
    #[cfg(unix)]
    {
        let services = node.services.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        node.services.workers.spawn("sighup-reload", |mut stop| async move {
            loop {
                tokio::select! {
                    signal = hup.recv() => match signal {
                        Some(()) => tocsin_node::policy::watch::reload_all(&services).await,
                        None => break,
                    },
                    // The guard `wait_for` returns is not Send: drop it inside.
                    _ = async { stop.wait_for(|stop| *stop).await.is_ok() } => break,
                }
            }
        });
    }
    stop.await;
    println!("shutting down");
    node.shutdown().await;
    Ok(())
}
