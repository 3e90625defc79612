//! `tocsin-node demo`: a local federation of three nodes in one process, ready for Element.
//!
//! Two cities (Riverton, Lakeside) and the county fire service, with the server names, accounts
//! and display names of `policies/examples/`. Each node gets its own data dir under the demo
//! dir, a federation certificate from a demo CA made on the first run, and pins to the other two
//! on loopback. Then a Riverton user opens a shared crisis room and the other nodes' users join
//! it over federation, through the nodes' own Client-Server APIs, exactly as a client would.
//! Running again with the same dir reuses the CA, the certificates, the accounts and the room.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{Config, Error, Node, NodeHandle, federation::tls};

/// Every demo account's password (the example policies' hashes are of this password too).
pub const DEMO_PASSWORD: &str = "tocsin-demo";
/// The shared crisis room the demo opens.
pub const ROOM_NAME: &str = "Flood response — River district";
const ROOM_TOPIC: &str = "Riverton, Lakeside and the County Fire Service: river level, evacuations, shelters";
const ROOM_ALIAS: &str = "flood-response";
/// The first message, sent by the room's creator when the room is made.
pub const FIRST_MESSAGE: &str = "River gauge at Mill Bridge: 4.2 m and rising. Evacuation of the River district \
                                 begins at 18:00. Lakeside and County Fire, please confirm your shelters and crews.";
/// The device the demo logs in with, so re-runs reuse one device per account.
const DEMO_DEVICE: &str = "TOCSINDEMO";

/// One member of the demo federation.
struct Spec {
    /// Folder name under the demo dir and certificate host.
    name: &'static str,
    server_name: &'static str,
    agency: &'static str,
    policy_file: &'static str,
    policy: &'static str,
    /// The account that opens (Riverton) or joins the shared room on this node.
    lead: &'static str,
}

const SPECS: [Spec; 3] = [
    Spec {
        name: "riverton",
        server_name: "riverton:8448",
        agency: "City of Riverton",
        policy_file: "policies/examples/riverton.toml",
        policy: include_str!("../../policies/examples/riverton.toml"),
        lead: "crisis.lead",
    },
    Spec {
        name: "lakeside",
        server_name: "lakeside:8449",
        agency: "City of Lakeside",
        policy_file: "policies/examples/lakeside.toml",
        policy: include_str!("../../policies/examples/lakeside.toml"),
        lead: "emergency.manager",
    },
    Spec {
        name: "county-fire",
        server_name: "county-fire:8450",
        agency: "County Fire Service",
        policy_file: "policies/examples/county-fire.toml",
        policy: include_str!("../../policies/examples/county-fire.toml"),
        lead: "chief",
    },
];

/// Where the demo keeps its files and which ports it uses.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The demo dir: the CA, and one data dir per node.
    pub dir: PathBuf,
    /// The address every listener binds.
    pub bind: IpAddr,
    /// Client-Server ports of riverton, lakeside and county-fire.
    pub client_ports: [u16; 3],
    /// Federation (TLS) ports of riverton, lakeside and county-fire.
    pub federation_ports: [u16; 3],
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./tocsin-demo"),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_ports: [8008, 8009, 8010],
            federation_ports: [8448, 8449, 8450],
        }
    }
}

impl DemoOptions {
    /// Client ports `base_port`, +1, +2 and federation ports `base_port + 440`, +1, +2, so the
    /// default base 8008 gives 8008-8010 and 8448-8450.
    pub fn with_base_port(dir: PathBuf, bind: IpAddr, base_port: u16) -> anyhow::Result<Self> {
        let port = |offset: u16| {
            base_port.checked_add(offset).with_context(|| format!("--base-port {base_port} leaves no room for 6 ports"))
        };
        Ok(Self {
            dir,
            bind,
            client_ports: [port(0)?, port(1)?, port(2)?],
            federation_ports: [port(440)?, port(441)?, port(442)?],
        })
    }

    /// The address other nodes and clients use: the bind address, or loopback when it is
    /// unspecified (0.0.0.0, ::).
    fn reach(&self) -> IpAddr {
        if self.bind.is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { self.bind }
    }
}

/// One account on a demo node, as the summary shows it.
#[derive(Debug, Clone)]
pub struct DemoUser {
    pub localpart: String,
    pub user_id: String,
    pub display_name: String,
    /// Joined the shared room (otherwise invited).
    pub joined: bool,
}

/// A running demo node.
pub struct DemoNode {
    pub handle: NodeHandle,
    pub agency: &'static str,
    /// The homeserver URL to give Element.
    pub client_url: String,
    pub federation_addr: SocketAddr,
    pub users: Vec<DemoUser>,
    /// The account that joined the shared room on this node.
    pub lead: String,
}

/// The running demo federation.
pub struct Demo {
    pub dir: PathBuf,
    pub nodes: Vec<DemoNode>,
    pub room_id: String,
    pub room_alias: String,
    /// True when this run made the room (false: found from an earlier run).
    pub created_room: bool,
}

/// Starts the three nodes, makes sure the accounts exist and the shared room is set up, and
/// returns them running. Stop them with [`Demo::shutdown`].
pub async fn run_demo(options: DemoOptions) -> anyhow::Result<Demo> {
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("cannot create the demo dir {}", options.dir.display()))?;
    let configs = plan(&options)?;
    let mut nodes: Vec<DemoNode> = Vec::new();
    for (spec, config) in SPECS.iter().zip(configs) {
        let (listen, federation_listen) = (config.listen, config.federation_listen);
        let handle = match Node::start(config).await {
            Ok(handle) => handle,
            Err(e) => {
                shutdown_all(nodes).await;
                return Err(e.context(format!(
                    "cannot start {} (client {listen}, federation {federation_listen}); is another demo running? \
                     Stop it or choose other ports with --base-port",
                    spec.server_name
                )));
            }
        };
        let client_url = format!("http://{}", SocketAddr::new(options.reach(), handle.addr.port()));
        let federation_addr = handle.federation_addr;
        nodes.push(DemoNode {
            handle,
            agency: spec.agency,
            client_url,
            federation_addr,
            users: Vec::new(),
            lead: spec.lead.to_owned(),
        });
    }
    match set_up(&mut nodes).await {
        Ok((room_id, created_room)) => Ok(Demo {
            dir: options.dir.clone(),
            room_alias: format!("#{ROOM_ALIAS}:{}", SPECS[0].server_name),
            nodes,
            room_id,
            created_room,
        }),
        Err(e) => {
            shutdown_all(nodes).await;
            Err(e)
        }
    }
}

async fn shutdown_all(nodes: Vec<DemoNode>) {
    futures_util::future::join_all(nodes.into_iter().map(|n| n.handle.shutdown())).await;
}

impl Demo {
    /// Stops the three nodes gracefully.
    pub async fn shutdown(self) {
        shutdown_all(self.nodes).await;
    }

    /// What to tell the person who started the demo.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "Tocsin demo federation: three nodes, data in {}", self.dir.display());
        for node in &self.nodes {
            let _ = writeln!(out);
            let _ = writeln!(out, "{} ({})", node.agency, node.handle.server_name);
            let _ = writeln!(out, "  homeserver URL for Element: {}", node.client_url);
            let _ = writeln!(out, "  federation (TLS):           {}", node.federation_addr);
            let width = node.users.iter().map(|u| u.localpart.len()).max().unwrap_or(0);
            for user in &node.users {
                let state = if user.joined { "in the room" } else { "invited" };
                let _ =
                    writeln!(out, "  user {:width$}  {:32} {state}", user.localpart, user.display_name, width = width);
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "Password of every account: {DEMO_PASSWORD}");
        let _ = writeln!(
            out,
            "Shared room: \"{ROOM_NAME}\" {} ({}), {}",
            self.room_id,
            self.room_alias,
            if self.created_room { "created now" } else { "from the last run" }
        );
        let _ = writeln!(out);
        let example = self.nodes.get(1).unwrap_or(&self.nodes[0]);
        let _ = writeln!(
            out,
            "In Element (Web or Desktop): Sign in, Edit the homeserver, enter a URL above (e.g. {}),\n\
             then the user name (e.g. {}) and the password. Use one browser profile per node to talk\n\
             across the federation; invited users accept the invitation in Element.",
            example.client_url, example.lead
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "Ctrl-C (or SIGTERM) stops the three nodes; run the same command again to resume.");
        out
    }
}

/// Certificates (made once, reused after) and a config per node.
fn plan(options: &DemoOptions) -> anyhow::Result<Vec<Config>> {
    let ca_path = options.dir.join("ca.pem");
    let dirs: Vec<PathBuf> = SPECS.iter().map(|s| options.dir.join(s.name)).collect();
    let cert_paths: Vec<(PathBuf, PathBuf)> = dirs.iter().map(|d| (d.join("fed.crt"), d.join("fed.key"))).collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let complete = ca_path.exists() && cert_paths.iter().all(|(c, k)| c.exists() && k.exists());
    if !complete {
        // One CA for all three; its key is not kept: the demo never issues more certificates.
        let ca = tls::issue_ca("Tocsin demo federation CA")?;
        crate::federation::tls::write_file(&ca_path, ca.cert_pem().as_bytes(), false)?;
        for (spec, (cert_path, key_path)) in SPECS.iter().zip(&cert_paths) {
            let (cert, key) = tls::issue_node_cert(&ca, spec.name)?;
            crate::federation::tls::write_file(key_path, key.as_bytes(), true)?;
            crate::federation::tls::write_file(cert_path, cert.as_bytes(), false)?;
        }
    }
    let reach = options.reach();
    let pins: BTreeMap<String, SocketAddr> = SPECS
        .iter()
        .zip(options.federation_ports)
        .map(|(s, port)| (s.server_name.to_owned(), SocketAddr::new(reach, port)))
        .collect();
    let mut configs = Vec::new();
    for (i, spec) in SPECS.iter().enumerate() {
        let client_url = format!("http://{}", SocketAddr::new(reach, options.client_ports[i]));
        configs.push(Config {
            server_name: spec.server_name.to_owned(),
            listen: SocketAddr::new(options.bind, options.client_ports[i]),
            federation_listen: SocketAddr::new(options.bind, options.federation_ports[i]),
            data_dir: dirs[i].clone(),
            tls_cert: Some(cert_paths[i].0.clone()),
            tls_key: Some(cert_paths[i].1.clone()),
            tls_ca_files: vec![ca_path.clone()],
            federation_pins: pins.clone(),
            public_base_url: Some(client_url),
            // Device keys do not travel over federation yet, so an encrypted shared room would
            // show "unable to decrypt" on the other nodes. The demo room is plaintext.
            encrypt_new_rooms: false,
            ..Config::default()
        });
    }
    Ok(configs)
}

/// The accounts of a node's example policy: (localpart, display name, admin).
fn policy_accounts(spec: &Spec) -> anyhow::Result<Vec<(String, String, bool)>> {
    let parsed = tocsin_policies::parse_node_policy(spec.policy, Some(Path::new(spec.policy_file)))
        .map_err(|d| anyhow::anyhow!("the example policy {} does not validate:\n{d}", spec.policy_file))?;
    Ok(parsed
        .policy
        .accounts
        .iter()
        .map(|a| (a.localpart.clone(), a.display_name.clone().unwrap_or_else(|| a.localpart.clone()), a.admin))
        .collect())
}

/// Accounts on every node, then the shared room. Returns (room id, created now).
async fn set_up(nodes: &mut [DemoNode]) -> anyhow::Result<(String, bool)> {
    for (spec, node) in SPECS.iter().zip(nodes.iter_mut()) {
        for (localpart, display_name, admin) in policy_accounts(spec)? {
            let users = &node.handle.services.users;
            let user_id =
                match users.create_account(&localpart, Some(DEMO_PASSWORD), Some(display_name.clone()), admin).await {
                    Ok(id) => id.to_string(),
                    Err(Error::UserInUse) => users.user_id_for(&localpart)?.to_string(),
                    Err(e) => return Err(anyhow::anyhow!("cannot create {localpart} on {}: {e}", spec.server_name)),
                };
            node.users.push(DemoUser { localpart, user_id, display_name, joined: false });
        }
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let creator = Session::login(&http, &nodes[0].client_url, &nodes[0].lead).await?;
    let (room_id, created) = match find_room(&creator).await? {
        Some(room_id) => (room_id, false),
        None => {
            let invite: Vec<&str> = nodes
                .iter()
                .flat_map(|n| n.users.iter())
                .map(|u| u.user_id.as_str())
                .filter(|id| *id != creator.user_id)
                .collect();
            (create_room(&creator, &invite).await?, true)
        }
    };
    // The other nodes' leads join over federation (after an invite, if theirs was used up).
    for node in nodes.iter().skip(1) {
        let session = Session::login(&http, &node.client_url, &node.lead).await?;
        if session.joined_rooms().await?.contains(&room_id) {
            continue;
        }
        join(&creator, &session, &room_id)
            .await
            .with_context(|| format!("{} could not join the shared room over federation", session.user_id))?;
    }
    let members = creator.joined_members(&room_id).await?;
    for node in nodes.iter_mut() {
        for user in &mut node.users {
            user.joined = members.contains(&user.user_id);
        }
    }
    Ok((room_id, created))
}

async fn find_room(creator: &Session) -> anyhow::Result<Option<String>> {
    for room_id in creator.joined_rooms().await? {
        let path = format!("/rooms/{}/state/m.room.name/", urlencode(&room_id));
        if let Ok(name) = creator.call(reqwest::Method::GET, &path, None).await
            && name.get("name").and_then(Value::as_str) == Some(ROOM_NAME)
        {
            return Ok(Some(room_id));
        }
    }
    Ok(None)
}

async fn create_room(creator: &Session, invite: &[&str]) -> anyhow::Result<String> {
    let mut body = json!({
        "name": ROOM_NAME,
        "topic": ROOM_TOPIC,
        "preset": "private_chat",
        "room_alias_name": ROOM_ALIAS,
        "invite": invite,
    });
    let created = match creator.call(reqwest::Method::POST, "/createRoom", Some(body.clone())).await {
        Ok(v) => v,
        // The alias is left from a room the creator has since left: make the room without it.
        Err(e) if e.to_string().contains("M_ROOM_IN_USE") => {
            if let Some(object) = body.as_object_mut() {
                object.remove("room_alias_name");
            }
            creator.call(reqwest::Method::POST, "/createRoom", Some(body)).await?
        }
        Err(e) => return Err(e),
    };
    let room_id = created.get("room_id").and_then(Value::as_str).context("createRoom answered without a room_id")?;
    let path = format!("/rooms/{}/send/m.room.message/demo-first-message", urlencode(room_id));
    creator.call(reqwest::Method::PUT, &path, Some(json!({ "msgtype": "m.text", "body": FIRST_MESSAGE }))).await?;
    Ok(room_id.to_owned())
}

/// Joins `room_id` as `session`'s user, through the invite; re-invites once if the invite is gone
/// (declined in a client on an earlier run), and retries while federation settles.
async fn join(creator: &Session, session: &Session, room_id: &str) -> anyhow::Result<()> {
    let path = format!("/join/{}", urlencode(room_id));
    let mut last = None;
    for attempt in 0..20 {
        match session.call(reqwest::Method::POST, &path, Some(json!({}))).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                if attempt == 0 {
                    // Not invited any more: invite again (an error here means already invited).
                    let invite = format!("/rooms/{}/invite", urlencode(room_id));
                    let _ =
                        creator.call(reqwest::Method::POST, &invite, Some(json!({ "user_id": session.user_id }))).await;
                }
                last = Some(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("join failed")))
}

/// A logged-in user on one node's Client-Server API.
struct Session {
    http: reqwest::Client,
    base: String,
    token: String,
    user_id: String,
}

impl Session {
    async fn login(http: &reqwest::Client, base: &str, localpart: &str) -> anyhow::Result<Self> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": localpart },
            "password": DEMO_PASSWORD,
            "device_id": DEMO_DEVICE,
            "initial_device_display_name": "tocsin-node demo",
        });
        let response = send(http.post(format!("{base}/_matrix/client/v3/login")).json(&body)).await?;
        let field = |name: &str| {
            response.get(name).and_then(Value::as_str).map(str::to_owned).with_context(|| format!("login: no {name}"))
        };
        Ok(Self {
            http: http.clone(),
            base: base.to_owned(),
            token: field("access_token")?,
            user_id: field("user_id")?,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request =
            self.http.request(method, format!("{}/_matrix/client/v3{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    async fn joined_rooms(&self) -> anyhow::Result<Vec<String>> {
        let rooms = self.call(reqwest::Method::GET, "/joined_rooms", None).await?;
        Ok(rooms
            .get("joined_rooms")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default())
    }

    async fn joined_members(&self, room_id: &str) -> anyhow::Result<BTreeSet<String>> {
        let path = format!("/rooms/{}/joined_members", urlencode(room_id));
        let members = self.call(reqwest::Method::GET, &path, None).await?;
        Ok(members.get("joined").and_then(Value::as_object).map(|o| o.keys().cloned().collect()).unwrap_or_default())
    }
}

/// Sends a request; a non-2xx answer becomes an error with the Matrix errcode and message.
async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await?;
    let status = response.status();
    let url = response.url().path().to_owned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let errcode = body.get("errcode").and_then(Value::as_str).unwrap_or("?");
        let error = body.get("error").and_then(Value::as_str).unwrap_or("");
        anyhow::bail!("{url}: {status} {errcode} {error}");
    }
    Ok(body)
}

/// Percent-encodes a path segment (room ids hold `!` and `:`).
fn urlencode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len() * 3);
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_port_maps_to_client_and_federation_ports() {
        let o = DemoOptions::with_base_port("d".into(), IpAddr::V4(Ipv4Addr::LOCALHOST), 8008).expect("ports fit");
        assert_eq!(o.client_ports, [8008, 8009, 8010]);
        assert_eq!(o.federation_ports, [8448, 8449, 8450]);
        assert!(DemoOptions::with_base_port("d".into(), IpAddr::V4(Ipv4Addr::LOCALHOST), 65300).is_err());
    }

    #[test]
    fn example_policies_give_the_demo_accounts() {
        for spec in &SPECS {
            let accounts = policy_accounts(spec).expect("example policy parses");
            assert!(accounts.iter().any(|(l, _, _)| l == spec.lead), "{} has {}", spec.name, spec.lead);
        }
    }

    #[test]
    fn room_ids_are_encoded() {
        assert_eq!(urlencode("!a:riverton:8448"), "%21a%3Ariverton%3A8448");
    }
}
