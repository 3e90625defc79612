//! The room-size sweep's Synapse pair: two Synapse servers run by `tests/interop/synapse-fed.sh`
//! (the pinned Synapse, SQLite, federation over TLS with a private CA), on 127.0.0.2 and
//! 127.0.0.3. Each is named `IP:P` after a proxy listening on its own address at P that forwards
//! to its real federation port, so every federation request to it, key fetches included, passes
//! that proxy; TLS goes through untouched (its certificate names the IP only).
//!
//! Synapse is configured to retry a peer as the bench's Tocsin nodes do (see [`EXTRA_CONFIG`]);
//! its rate limits are already out of reach in `synapse-fed.sh`'s configuration.
//!
//! Every server whose start was attempted is stopped (`synapse-fed.sh stop`: SIGTERM, bounded
//! wait, SIGKILL) when the [`SynapsePair`] is dropped, on success, error or interruption alike.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::proxy::Proxy;

/// The servers' addresses (Synapse 1, Synapse 2).
const ADDRS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];
/// Making the certificates may install Synapse first (a pip install).
const CERTS_TIMEOUT: Duration = Duration::from_secs(900);
/// `synapse-fed.sh start` itself gives up after 120 s without `/versions`.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// Merged into each server's `homeserver.yaml` (`SYNAPSE_EXTRA_CONFIG`).
///
/// The bench's Tocsin nodes retry a peer at most a second after a failure, for as long as it
/// fails. By default Synapse retries a transaction ten times over about ten minutes (delays up
/// to 60 s), then backs off from the peer for 10 minutes and longer, and only a new event for
/// that peer, a request from it or a once-a-minute sweep wakes the queue again. Here a failed
/// transaction is retried about every second (Synapse's jitter: 0.8 to 1.4 s) until it
/// succeeds, and the peer-level backoff, should it be reached, is a second too; a request from
/// the peer still wakes a waiting retry at once, as it does by default.
///
/// `bcrypt_rounds` only makes registering the sweep's thousands of accounts (not measured)
/// cheaper than bcrypt's default cost 12, a quarter of a second of CPU each.
pub const EXTRA_CONFIG: &str = "\
# Written by tocsin-loadgen room-size; merged into homeserver.yaml by synapse-fed.sh.
federation:
  max_long_retry_delay: 1s
  max_long_retries: 1000000
  max_short_retry_delay: 1s
  destination_min_retry_interval: 1s
  destination_retry_multiplier: 1
  destination_max_retry_interval: 1s
bcrypt_rounds: 4
";

/// The servers whose start was attempted, stopped when this is dropped.
pub struct SynapsePair {
    script: PathBuf,
    dirs: Vec<PathBuf>,
}

/// The running pair.
pub struct Launched {
    pub pair: SynapsePair,
    /// Client-Server API base URLs, server 1 then 2.
    pub urls: [String; 2],
    /// Server names (`IP:proxy port`), server 1 then 2.
    pub server_names: [String; 2],
    /// The proxy in front of server 2 (server 1's link to it), then the one in front of
    /// server 1.
    pub links: [Proxy; 2],
}

/// Starts the pair under `dir` with `script` (`synapse-fed.sh`).
pub async fn launch(dir: &Path, script: &Path) -> Result<Launched> {
    if !script.is_file() {
        bail!("{} is not a file (--synapse-fed)", script.display());
    }
    let dir = &dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let mut pair = SynapsePair { script: script.to_owned(), dirs: Vec::new() };
    let certs = dir.join("certs");
    let ips = ADDRS.map(|ip| ip.to_string());
    let mut args = vec!["certs".to_owned(), path_arg(&certs)?];
    args.extend(ips.iter().cloned());
    run_script(script, &args, &[], CERTS_TIMEOUT).await?;
    let extra = dir.join("room-size-synapse.yaml");
    std::fs::write(&extra, EXTRA_CONFIG).with_context(|| format!("writing {}", extra.display()))?;

    let mut started = Vec::new();
    for (i, ip) in ADDRS.into_iter().enumerate() {
        let federation_port = free_port(ip)?;
        let client_port = free_port(ip)?;
        let proxy = Proxy::start(SocketAddr::from((ip, 0)), SocketAddr::from((ip, federation_port)))
            .await
            .with_context(|| format!("starting the proxy in front of Synapse {}", i + 1))?;
        let name = format!("{ip}:{}", proxy.addr.port());
        let server_dir = dir.join(format!("synapse{}", i + 1));
        pair.dirs.push(server_dir.clone());
        eprintln!(
            "room-size: Synapse {} as {name}: federation on {ip}:{federation_port} behind the proxy, client API on {ip}:{client_port}",
            i + 1
        );
        let args =
            ["start".to_owned(), path_arg(&server_dir)?, name.clone(), ip.to_string(), federation_port.to_string()];
        let env = [
            ("SYNAPSE_CERTS", path_arg(&certs)?),
            ("SYNAPSE_CLIENT_PORT", client_port.to_string()),
            ("SYNAPSE_EXTRA_CONFIG", path_arg(&extra)?),
        ];
        run_script(script, &args, &env, START_TIMEOUT).await.with_context(|| format!("starting Synapse {}", i + 1))?;
        started.push((format!("http://{ip}:{client_port}"), name, proxy));
    }
    let Ok([(url1, name1, to_1), (url2, name2, to_2)]) = <[_; 2]>::try_from(started) else {
        bail!("not two Synapse servers");
    };
    Ok(Launched { pair, urls: [url1, url2], server_names: [name1, name2], links: [to_2, to_1] })
}

impl Drop for SynapsePair {
    fn drop(&mut self) {
        for dir in self.dirs.drain(..) {
            // Bounded: the script waits at most 30 s after SIGTERM, then sends SIGKILL.
            let stopped = std::process::Command::new("bash")
                .arg(&self.script)
                .arg("stop")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            match stopped {
                Ok(status) if status.success() => eprintln!("room-size: stopped Synapse in {}", dir.display()),
                Ok(status) => eprintln!("room-size: stopping Synapse in {} failed ({status})", dir.display()),
                Err(e) => eprintln!("room-size: stopping Synapse in {}: {e}", dir.display()),
            }
        }
    }
}

/// Runs `bash script args...` with `env`, within `timeout`; its output goes to stderr (this
/// program's stdout is the table).
async fn run_script(script: &Path, args: &[String], env: &[(&str, String)], timeout: Duration) -> Result<()> {
    let what = format!("{} {}", script.display(), args.join(" "));
    let child = tokio::process::Command::new("bash")
        .arg(script)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, child)
        .await
        .map_err(|_| anyhow::anyhow!("{what} did not finish within {timeout:?}"))?
        .with_context(|| format!("running {what}"))?;
    let text = [output.stdout, output.stderr].map(|b| String::from_utf8_lossy(&b).into_owned()).join("");
    for line in text.lines() {
        eprintln!("  {line}");
    }
    if !output.status.success() {
        bail!("{what} failed ({})", output.status);
    }
    Ok(())
}

/// A port nothing listens on at `ip` just now.
fn free_port(ip: Ipv4Addr) -> Result<u16> {
    let listener = std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), 0))
        .with_context(|| format!("finding a free port on {ip}"))?;
    Ok(listener.local_addr()?.port())
}

fn path_arg(path: &Path) -> Result<String> {
    path.to_str().map(str::to_owned).with_context(|| format!("{} is not UTF-8", path.display()))
}
