//! Node configuration: defaults that run out of the box, a TOML file, then environment
//! variables (`TOCSIN_*`), each layer overriding the one before.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, str::FromStr};

use serde::Deserialize;
use tocsin_store::EngineKind;

use crate::http::RateLimitConfig;

pub mod clients;
pub mod ops;
pub use ops::MetricsConfig;

/// How new accounts may be created over the Client-Server API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Accounts come from policy files or `tocsin-node user add` only.
    #[default]
    Closed,
    /// `m.login.registration_token` with a token from `registration_token`.
    Token,
    /// `m.login.dummy`: anyone who can reach the node may register.
    Open,
}

impl FromStr for Registration {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "closed" => Ok(Self::Closed),
            "token" => Ok(Self::Token),
            "open" => Ok(Self::Open),
            other => Err(ConfigError::Invalid {
                key: "registration",
                message: format!("expected `closed`, `token` or `open`, found `{other}`"),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The node's configuration. Field names double as TOML keys; `TOCSIN_<UPPERCASE>` overrides.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Matrix server name: the part after the colon in user ids.
    pub server_name: String,
    /// Where the Client-Server API listens.
    pub listen: SocketAddr,
    /// Where the store, keys and media live.
    pub data_dir: PathBuf,
    /// `sled` or `redb`.
    pub store: EngineKind,
    pub registration: Registration,
    /// The token `m.login.registration_token` accepts when `registration = "token"`.
    pub registration_token: Option<String>,
    /// Uploads larger than this get `M_TOO_LARGE`.
    pub max_upload_bytes: u64,
    /// The room version new rooms get when the client names none.
    pub default_room_version: String,
    /// The URL clients should use, advertised in `/.well-known/matrix/client`. Defaults to
    /// `http://{listen}`.
    pub public_base_url: Option<String>,
    /// New private rooms get `m.room.encryption` (crisis default: on). A node policy's
    /// `room_defaults.encryption` takes precedence.
    pub encrypt_new_rooms: bool,
    /// The node policy: a TOML file or a folder of them (see `policies/examples/`).
    pub policy: Option<PathBuf>,
    /// The longest wait between retries of a failed federation transaction, in seconds
    /// (DESIGN rule 3: about a minute for federation members).
    pub federation_max_backoff_secs: u64,
    /// The DNS server for SRV lookups in server discovery; unset: the system's resolver.
    pub federation_dns: Option<SocketAddr>,
    /// Where the Server-Server API listens, over TLS.
    pub federation_listen: SocketAddr,
    /// The federation listener's certificate chain (PEM). Without `tls_cert` and `tls_key` the node
    /// makes a self-signed certificate for its server name's host on first start
    /// (`data_dir/tls.crt` and `tls.key`) and reuses it afterwards.
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundles that outbound federation trusts, besides the node's own certificate. No
    /// public web roots are trusted: a crisis federation runs its own CA.
    pub tls_ca_files: Vec<PathBuf>,
    /// Verify peers' certificates (default). `false` accepts any certificate: labs only.
    pub tls_verify: bool,
    /// Server name -> address, so a node needs no DNS (`"riverton:8448" = "127.0.0.1:8448"`).
    pub federation_pins: BTreeMap<String, SocketAddr>,
    /// Private, loopback and link-local ranges that outbound federation (discovery, keys,
    /// media) may reach without a pin, e.g. `["127.0.0.0/8"]` for a lab. Empty by default: a
    /// server name that resolves into those ranges is refused unless it is pinned.
    pub outbound_ip_allow: Vec<ipnet::IpNet>,
    /// The federation list signed by the federation operator (see `policies/examples/`). When
    /// set, only its members may federate with this node, both ways; the file is reloaded on
    /// SIGHUP and when it changes. Unset: no list, every server may federate (labs only).
    pub federation_list: Option<PathBuf>,
    /// The operator public keys (`operator.pub` files) the federation list must be signed with.
    pub federation_operator_keys: Vec<PathBuf>,
    /// Presence (online, unavailable, offline and a status message): kept, shown in `/sync` to
    /// users sharing a room, and exchanged with other servers as `m.presence` EDUs. Off by
    /// default: it costs traffic on every status change and tells outsiders who is at work.
    pub presence: bool,
    /// How often, in seconds, the retention purge deletes the events that rooms'
    /// `m.room.retention` lets expire. Unset: half the shortest `max_lifetime` of the node's
    /// rooms, between 1 s and 10 min.
    pub retention_purge_interval_secs: Option<u64>,
    /// How many rooms' heads (current state and forward extremities) stay in memory once more
    /// rooms were used; the least recently used idle ones are dropped and reloaded from the store
    /// when next used. Bounds the memory of a node with many rooms.
    pub room_heads_in_memory: usize,
    /// The `[rate_limits]` table: token buckets per user and per client address for logins,
    /// registration, sends, joins, invites and uploads, and the reverse proxies trusted to name
    /// the client (`X-Forwarded-For`).
    pub rate_limits: RateLimitConfig,
    /// The `[metrics]` table: token and optional separate listener for `/_tocsin/metrics`.
    pub metrics: MetricsConfig,
    /// A file whose first line is the operator's admin token: the admin API and `tocsin-node
    /// admin ...` accept it besides an admin account's access token. Readable by root and the
    /// node's user only.
    pub admin_token_file: Option<PathBuf>,
    /// The shortest password accepted for registration, password changes and admin resets.
    pub password_min_length: usize,
    /// Served as `/.well-known/matrix/server` (`{"m.server": ...}`) on the client port, so a
    /// server name without a port (`riverton.example`) can federate on another host or port
    /// (`matrix.riverton.example:8448`). Unset: no delegation, the endpoint answers 404.
    pub federation_delegate: Option<String>,
    /// How long an access token lives when the client asked for a refresh token (`/login` or
    /// `/register` with `refresh_token: true`), in seconds. Clients that do not ask keep tokens
    /// that never expire.
    pub access_token_lifetime_secs: u64,
    /// The `[url_previews]` table: off, or the hosts and URL prefixes previews may fetch.
    pub url_previews: clients::UrlPreviewConfig,
    /// The `[turn]` table: TURN servers for legacy VoIP calls, with time-limited credentials.
    pub turn: clients::TurnConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost:8008".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8008)),
            data_dir: PathBuf::from("./tocsin-data"),
            store: EngineKind::default(),
            registration: Registration::Closed,
            registration_token: None,
            max_upload_bytes: 50 * 1024 * 1024,
            default_room_version: "12".to_owned(),
            public_base_url: None,
            encrypt_new_rooms: true,
            policy: None,
            federation_max_backoff_secs: 60,
            federation_dns: None,
            federation_listen: SocketAddr::from(([127, 0, 0, 1], 8448)),
            tls_cert: None,
            tls_key: None,
            tls_ca_files: Vec::new(),
            tls_verify: true,
            federation_pins: BTreeMap::new(),
            outbound_ip_allow: Vec::new(),
            federation_list: None,
            federation_operator_keys: Vec::new(),
            presence: false,
            retention_purge_interval_secs: None,
            room_heads_in_memory: ops::DEFAULT_ROOM_HEADS_IN_MEMORY,
            rate_limits: RateLimitConfig::default(),
            metrics: MetricsConfig::default(),
            admin_token_file: None,
            password_min_length: ops::DEFAULT_PASSWORD_MIN_LENGTH,
            federation_delegate: None,
            access_token_lifetime_secs: clients::DEFAULT_ACCESS_TOKEN_LIFETIME_SECS,
            url_previews: clients::UrlPreviewConfig::default(),
            turn: clients::TurnConfig::default(),
        }
    }
}

impl Config {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(|key| std::env::var(key).ok())?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.into_config()
    }

    /// Applies `TOCSIN_*` overrides read through `var` (a parameter so tests need not touch the
    /// process environment).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        ops::apply_env(self, &var)?;
        clients::apply_env(self, &var)?;
        if let Some(v) = var("TOCSIN_SERVER_NAME") {
            self.server_name = v;
        }
        if let Some(v) = var("TOCSIN_LISTEN") {
            self.listen = v.parse().map_err(|e| ConfigError::Invalid {
                key: "listen",
                message: format!("`{v}` is not an address like 127.0.0.1:8008 ({e})"),
            })?;
        }
        if let Some(v) = var("TOCSIN_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("TOCSIN_STORE") {
            self.store =
                EngineKind::from_str(&v).map_err(|e| ConfigError::Invalid { key: "store", message: e.to_string() })?;
        }
        if let Some(v) = var("TOCSIN_REGISTRATION") {
            self.registration = v.parse()?;
        }
        if let Some(v) = var("TOCSIN_REGISTRATION_TOKEN") {
            self.registration_token = Some(v);
        }
        if let Some(v) = var("TOCSIN_POLICY") {
            self.policy = Some(PathBuf::from(v));
        }
        if let Some(v) = var("TOCSIN_ENCRYPT_NEW_ROOMS") {
            self.encrypt_new_rooms = matches!(v.trim(), "1" | "true" | "yes" | "on");
        }
        if let Some(v) = var("TOCSIN_PRESENCE") {
            self.presence = matches!(v.trim(), "1" | "true" | "yes" | "on");
        }
        if let Some(v) = var("TOCSIN_RETENTION_PURGE_INTERVAL_SECS") {
            self.retention_purge_interval_secs = Some(v.trim().parse().map_err(|e| ConfigError::Invalid {
                key: "retention_purge_interval_secs",
                message: format!("`{v}` is not a number of seconds ({e})"),
            })?);
        }
        if let Some(v) = var("TOCSIN_ROOM_HEADS_IN_MEMORY") {
            self.room_heads_in_memory = v.trim().parse().map_err(|e| ConfigError::Invalid {
                key: "room_heads_in_memory",
                message: format!("`{v}` is not a count of rooms ({e})"),
            })?;
        }
        if let Some(v) = var("TOCSIN_PUBLIC_BASE_URL") {
            self.public_base_url = Some(v);
        }
        if let Some(v) = var("TOCSIN_FEDERATION_LISTEN") {
            self.federation_listen = v.parse().map_err(|e| ConfigError::Invalid {
                key: "federation_listen",
                message: format!("`{v}` is not an address like 127.0.0.1:8448 ({e})"),
            })?;
        }
        if let Some(v) = var("TOCSIN_TLS_CERT") {
            self.tls_cert = Some(PathBuf::from(v));
        }
        if let Some(v) = var("TOCSIN_TLS_KEY") {
            self.tls_key = Some(PathBuf::from(v));
        }
        if let Some(v) = var("TOCSIN_TLS_CA_FILES") {
            // A list, like PATH: separated by `:` (or `,`).
            self.tls_ca_files =
                v.split([':', ',']).map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect();
        }
        if let Some(v) = var("TOCSIN_TLS_VERIFY") {
            self.tls_verify = matches!(v.trim(), "1" | "true" | "yes" | "on");
        }
        if let Some(v) = var("TOCSIN_FEDERATION_PINS") {
            // `name=addr` pairs separated by `,`: `riverton:8448=127.0.0.1:8448,b.test=10.0.0.2:8448`.
            let mut pins = BTreeMap::new();
            for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let parsed =
                    pair.split_once('=').and_then(|(name, addr)| Some((name.trim(), addr.trim().parse().ok()?)));
                let (name, addr) = parsed.ok_or_else(|| ConfigError::Invalid {
                    key: "federation_pins",
                    message: format!("`{pair}` is not `server_name=ip:port`"),
                })?;
                pins.insert(name.to_owned(), addr);
            }
            self.federation_pins = pins;
        }
        if let Some(v) = var("TOCSIN_OUTBOUND_IP_ALLOW") {
            // CIDR ranges separated by `,`: `127.0.0.0/8,::1/128`.
            self.outbound_ip_allow = parse_ranges(v.split(','))
                .map_err(|message| ConfigError::Invalid { key: "outbound_ip_allow", message })?;
        }
        if let Some(v) = var("TOCSIN_FEDERATION_LIST") {
            self.federation_list = Some(PathBuf::from(v));
        }
        if let Some(v) = var("TOCSIN_FEDERATION_OPERATOR_KEYS") {
            // A list, like PATH: separated by `:` (or `,`).
            self.federation_operator_keys =
                v.split([':', ',']).map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect();
        }
        if let Some(v) = var("TOCSIN_FEDERATION_DNS") {
            self.federation_dns = Some(v.trim().parse().map_err(|e| ConfigError::Invalid {
                key: "federation_dns",
                message: format!("`{v}` is not an ip:port address ({e})"),
            })?);
        }
        if let Some(v) = var("TOCSIN_RATE_LIMITS") {
            self.rate_limits.enabled = match v.trim() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                other => {
                    return Err(ConfigError::Invalid {
                        key: "rate_limits",
                        message: format!("`{other}` is not on or off"),
                    });
                }
            };
        }
        if let Some(v) = var("TOCSIN_TRUSTED_PROXIES") {
            self.rate_limits.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    p.parse().map_err(|e| ConfigError::Invalid {
                        key: "rate_limits.trusted_proxies",
                        message: format!("`{p}` is not an IP address ({e})"),
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = var("TOCSIN_FEDERATION_MAX_BACKOFF_SECS") {
            self.federation_max_backoff_secs = v.trim().parse().map_err(|e| ConfigError::Invalid {
                key: "federation_max_backoff_secs",
                message: format!("`{v}` is not a number of seconds ({e})"),
            })?;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        ruma::ServerName::parse(&self.server_name).map_err(|e| ConfigError::Invalid {
            key: "server_name",
            message: format!("`{}` is not a Matrix server name: {e}", self.server_name),
        })?;
        for name in self.federation_pins.keys() {
            ruma::ServerName::parse(name).map_err(|e| ConfigError::Invalid {
                key: "federation_pins",
                message: format!("`{name}` is not a Matrix server name: {e}"),
            })?;
        }
        if self.federation_list.is_some() && self.federation_operator_keys.is_empty() {
            return Err(ConfigError::Invalid {
                key: "federation_operator_keys",
                message: "federation_list needs the operator public key(s) it is signed with".to_owned(),
            });
        }
        if self.room_heads_in_memory == 0 {
            return Err(ConfigError::Invalid {
                key: "room_heads_in_memory",
                message: "at least one room head must stay in memory".to_owned(),
            });
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls_cert",
                message: "tls_cert and tls_key go together: set both or neither".to_owned(),
            });
        }
        if ruma::RoomVersionId::try_from(self.default_room_version.as_str())
            .ok()
            .and_then(|v| crate::rooms::version::supported(&v).then_some(()))
            .is_none()
        {
            return Err(ConfigError::Invalid {
                key: "default_room_version",
                message: format!("`{}` is not a supported room version (10, 11 or 12)", self.default_room_version),
            });
        }
        self.rate_limits.validate().map_err(|message| ConfigError::Invalid { key: "rate_limits", message })?;
        ops::validate(self)?;
        clients::validate(self)?;
        if self.federation_max_backoff_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "federation_max_backoff_secs",
                message: "must be at least 1 second".to_owned(),
            });
        }
        Ok(())
    }

    pub fn base_url(&self) -> String {
        self.public_base_url.clone().unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

/// CIDR ranges (`10.0.0.0/8`, `::1/128`); a bare address is a range of one.
fn parse_ranges<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<ipnet::IpNet>, String> {
    items
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.parse::<ipnet::IpNet>()
                .or_else(|_| r.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("`{r}` is not an address range like 127.0.0.0/8"))
        })
        .collect()
}

/// The file form: like `Config`, with the engine as a string.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    server_name: Option<String>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    registration: Option<Registration>,
    registration_token: Option<String>,
    max_upload_bytes: Option<u64>,
    default_room_version: Option<String>,
    public_base_url: Option<String>,
    encrypt_new_rooms: Option<bool>,
    policy: Option<PathBuf>,
    federation_max_backoff_secs: Option<u64>,
    federation_dns: Option<SocketAddr>,
    federation_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca_files: Option<Vec<PathBuf>>,
    tls_verify: Option<bool>,
    federation_pins: Option<BTreeMap<String, SocketAddr>>,
    outbound_ip_allow: Option<Vec<String>>,
    federation_list: Option<PathBuf>,
    federation_operator_keys: Option<Vec<PathBuf>>,
    presence: Option<bool>,
    retention_purge_interval_secs: Option<u64>,
    room_heads_in_memory: Option<usize>,
    rate_limits: Option<RateLimitConfig>,
    metrics: Option<MetricsConfig>,
    admin_token_file: Option<PathBuf>,
    password_min_length: Option<usize>,
    federation_delegate: Option<String>,
    access_token_lifetime_secs: Option<u64>,
    url_previews: Option<clients::UrlPreviewConfig>,
    turn: Option<clients::TurnConfig>,
}

impl RawConfig {
    fn into_config(self) -> Result<Config, String> {
        let d = Config::default();
        Ok(Config {
            server_name: self.server_name.unwrap_or(d.server_name),
            listen: self.listen.unwrap_or(d.listen),
            data_dir: self.data_dir.unwrap_or(d.data_dir),
            store: match self.store {
                Some(s) => EngineKind::from_str(&s).map_err(|e| format!("store: {e}"))?,
                None => d.store,
            },
            registration: self.registration.unwrap_or(d.registration),
            registration_token: self.registration_token.or(d.registration_token),
            max_upload_bytes: self.max_upload_bytes.unwrap_or(d.max_upload_bytes),
            default_room_version: self.default_room_version.unwrap_or(d.default_room_version),
            public_base_url: self.public_base_url.or(d.public_base_url),
            encrypt_new_rooms: self.encrypt_new_rooms.unwrap_or(d.encrypt_new_rooms),
            policy: self.policy.or(d.policy),
            federation_max_backoff_secs: self.federation_max_backoff_secs.unwrap_or(d.federation_max_backoff_secs),
            federation_dns: self.federation_dns.or(d.federation_dns),
            federation_listen: self.federation_listen.unwrap_or(d.federation_listen),
            tls_cert: self.tls_cert.or(d.tls_cert),
            tls_key: self.tls_key.or(d.tls_key),
            tls_ca_files: self.tls_ca_files.unwrap_or(d.tls_ca_files),
            tls_verify: self.tls_verify.unwrap_or(d.tls_verify),
            federation_pins: self.federation_pins.unwrap_or(d.federation_pins),
            outbound_ip_allow: match self.outbound_ip_allow {
                Some(ranges) => {
                    parse_ranges(ranges.iter().map(String::as_str)).map_err(|e| format!("outbound_ip_allow: {e}"))?
                }
                None => d.outbound_ip_allow,
            },
            federation_list: self.federation_list.or(d.federation_list),
            federation_operator_keys: self.federation_operator_keys.unwrap_or(d.federation_operator_keys),
            presence: self.presence.unwrap_or(d.presence),
            retention_purge_interval_secs: self.retention_purge_interval_secs.or(d.retention_purge_interval_secs),
            room_heads_in_memory: self.room_heads_in_memory.unwrap_or(d.room_heads_in_memory),
            rate_limits: self.rate_limits.unwrap_or(d.rate_limits),
            metrics: self.metrics.unwrap_or(d.metrics),
            admin_token_file: self.admin_token_file.or(d.admin_token_file),
            password_min_length: self.password_min_length.unwrap_or(d.password_min_length),
            federation_delegate: self.federation_delegate.or(d.federation_delegate),
            access_token_lifetime_secs: self.access_token_lifetime_secs.unwrap_or(d.access_token_lifetime_secs),
            url_previews: self.url_previews.unwrap_or(d.url_previews),
            turn: self.turn.unwrap_or(d.turn),
        })
    }
}

#[cfg(test)]
mod tests;
