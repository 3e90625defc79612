//! A local federation for tests: nodes with their own server names, data dirs and TLS
//! certificates from one private CA, each pinned to the others' federation ports on loopback.
//! A node runs in this process or as a child process (which a test can kill with SIGKILL).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tocsin_node::{Config, Node, NodeHandle, Registration, federation::tls};

/// Next candidate port; each test process walks its own stretch of the range.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A port free right now on 127.0.0.1, for a node to bind later. It is taken below Linux's
/// ephemeral range (32768 and up): a port the OS hands out for a `:0` bind could be handed to
/// another test's listener before the node binds it (CI saw exactly that).
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let _ = NEXT_PORT.compare_exchange(
        0,
        (std::process::id() % 100) * 120,
        std::sync::atomic::Ordering::Relaxed,
        std::sync::atomic::Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let offset = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SPAN;
        let port = u16::try_from(LOW + offset).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    0
}

/// Everything needed to start one member of the federation, again and again.
#[derive(Clone)]
pub struct Member {
    pub server_name: String,
    pub client_addr: SocketAddr,
    pub federation_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub config_file: PathBuf,
    pub config: Config,
}

impl Member {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.client_addr)
    }
}

/// The members of a local federation and the CA they trust.
pub struct Cluster {
    pub dir: PathBuf,
    pub members: Vec<Member>,
}

impl Cluster {
    /// Plans `names.len()` members under `dir`: certificates, ports, pins and config files.
    /// `pin_override` lets a test route one member's traffic to another through a proxy.
    pub fn plan(dir: &Path, names: &[&str]) -> anyhow::Result<Self> {
        let ca = tls::issue_ca("Tocsin test federation CA")?;
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem())?;
        let addrs: Vec<(SocketAddr, SocketAddr)> = names
            .iter()
            .map(|_| (SocketAddr::from(([127, 0, 0, 1], free_port())), SocketAddr::from(([127, 0, 0, 1], free_port()))))
            .collect();
        let mut members = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let data_dir = dir.join(name);
            std::fs::create_dir_all(&data_dir)?;
            let host = name.split(':').next().unwrap_or(name);
            let (cert, key) = tls::issue_node_cert(&ca, host)?;
            let (cert_path, key_path) = (data_dir.join("fed.crt"), data_dir.join("fed.key"));
            std::fs::write(&cert_path, cert)?;
            std::fs::write(&key_path, key)?;
            let pins: BTreeMap<String, SocketAddr> =
                names.iter().zip(&addrs).map(|(n, (_, fed))| ((*n).to_owned(), *fed)).collect();
            let mut config = Config {
                server_name: (*name).to_owned(),
                listen: addrs[i].0,
                federation_listen: addrs[i].1,
                data_dir: data_dir.clone(),
                tls_cert: Some(cert_path),
                tls_key: Some(key_path),
                tls_ca_files: vec![ca_path.clone()],
                encrypt_new_rooms: false,
                ..Config::default()
            };
            config.federation_pins = pins;
            let config_file = data_dir.join("node.toml");
            members.push(Member {
                server_name: (*name).to_owned(),
                client_addr: addrs[i].0,
                federation_addr: addrs[i].1,
                data_dir,
                config_file,
                config,
            });
        }
        let cluster = Self { dir: dir.to_owned(), members };
        for i in 0..cluster.members.len() {
            cluster.write_config(i)?;
        }
        Ok(cluster)
    }

    /// Points member `from`'s pin for member `to` at another address (a proxy).
    pub fn repin(&mut self, from: usize, to: usize, addr: SocketAddr) -> anyhow::Result<()> {
        let name = self.members[to].server_name.clone();
        self.members[from].config.federation_pins.insert(name, addr);
        self.write_config(from)
    }

    /// Writes member `i`'s config as TOML, for child processes.
    pub fn write_config(&self, i: usize) -> anyhow::Result<()> {
        let m = &self.members[i];
        let c = &m.config;
        let path_str = |p: &Path| p.display().to_string();
        let mut text = format!(
            "server_name = {:?}\nlisten = {:?}\nfederation_listen = {:?}\ndata_dir = {:?}\nencrypt_new_rooms = {}\n",
            c.server_name,
            c.listen.to_string(),
            c.federation_listen.to_string(),
            path_str(&c.data_dir),
            c.encrypt_new_rooms,
        );
        if let (Some(cert), Some(key)) = (&c.tls_cert, &c.tls_key) {
            text += &format!("tls_cert = {:?}\ntls_key = {:?}\n", path_str(cert), path_str(key));
        }
        if !c.outbound_ip_allow.is_empty() {
            let ranges: Vec<String> = c.outbound_ip_allow.iter().map(|r| format!("{:?}", r.to_string())).collect();
            text += &format!("outbound_ip_allow = [{}]\n", ranges.join(", "));
        }
        let optional_paths =
            [("policy", &c.policy), ("federation_list", &c.federation_list), ("admin_token_file", &c.admin_token_file)];
        for (key, path) in optional_paths {
            if let Some(path) = path {
                text += &format!("{key} = {:?}\n", path_str(path));
            }
        }
        let keys: Vec<String> = c.federation_operator_keys.iter().map(|p| format!("{:?}", path_str(p))).collect();
        text += &format!("federation_operator_keys = [{}]\n", keys.join(", "));
        let registration = match c.registration {
            Registration::Closed => "closed",
            Registration::Token => "token",
            Registration::Open => "open",
        };
        text += &format!("registration = {registration:?}\n");
        text += &format!("federation_max_backoff_secs = {}\n", c.federation_max_backoff_secs);
        let cas: Vec<String> = c.tls_ca_files.iter().map(|p| format!("{:?}", path_str(p))).collect();
        text += &format!("tls_ca_files = [{}]\n\n", cas.join(", "));
        if let Some(token) = &c.metrics.token {
            text += &format!("[metrics]\ntoken = {token:?}\n\n");
        }
        text += &format!("[rate_limits]\nenabled = {}\n\n[federation_pins]\n", c.rate_limits.enabled);
        for (name, addr) in &c.federation_pins {
            text += &format!("{:?} = {:?}\n", name.to_string(), addr.to_string());
        }
        std::fs::write(&m.config_file, text)?;
        Ok(())
    }

    /// Starts member `i` in this process.
    pub async fn start(&self, i: usize) -> anyhow::Result<NodeHandle> {
        Node::start(self.members[i].config.clone()).await
    }

    /// Starts member `i` as a child process running `binary` (a thin `Node::start` wrapper),
    /// and waits until its client port answers.
    pub async fn spawn(&self, i: usize, binary: &Path) -> anyhow::Result<ChildNode> {
        let m = &self.members[i];
        let log = std::fs::File::create(m.data_dir.join("node.log"))?;
        // Without `RUST_LOG` the child logs as `tocsin-node serve` does by default.
        let child = Command::new(binary).arg(&m.config_file).stdout(Stdio::null()).stderr(log).spawn()?;
        let node = ChildNode { child: Some(child), member: m.clone() };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(m.client_addr).await.is_ok() {
                return Ok(node);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "child node {} did not start; see {}",
                    m.server_name,
                    m.data_dir.join("node.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A node in a child process. Dropping it kills the process.
pub struct ChildNode {
    child: Option<Child>,
    pub member: Member,
}

impl ChildNode {
    /// The process id, while the child runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no shutdown, no flush, like a power cut.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.kill();
    }
}
