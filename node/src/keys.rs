//! The node's ed25519 signing key: created on first start, kept in the data dir.

use std::{path::Path, sync::Arc};

use base64::Engine as _;
use ruma::{OwnedServerName, ServerName, signatures::Ed25519KeyPair};

const KEY_FILE: &str = "signing.key";

/// The node's signing key pair and its key id (`ed25519:<version>`).
#[derive(Clone)]
pub struct ServerKeys {
    pair: Arc<Ed25519KeyPair>,
    server_name: OwnedServerName,
}

impl ServerKeys {
    /// Reads `signing.key` (`<version> <base64 pkcs8>`) or creates it.
    pub fn load_or_create(data_dir: &Path, server_name: &ServerName) -> anyhow::Result<Self> {
        let path = data_dir.join(KEY_FILE);
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let (version, der) = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let (version, key) = text
                    .trim()
                    .split_once(' ')
                    .ok_or_else(|| anyhow::anyhow!("{}: expected `<version> <key>`", path.display()))?;
                (version.to_owned(), b64.decode(key)?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = Ed25519KeyPair::generate();
                let version: String = {
                    let bytes: [u8; 4] = rand::random();
                    bytes.iter().map(|b| format!("{b:02x}")).collect()
                };
                let text = format!("{version} {}\n", b64.encode(&der));
                write_private(&path, text.as_bytes())?;
                (version, der.to_vec())
            }
            Err(e) => return Err(e.into()),
        };
        let pair = Ed25519KeyPair::from_der(&der, version).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { pair: Arc::new(pair), server_name: server_name.to_owned() })
    }

    pub fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.pair.version())
    }

    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.pair.public_key())
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
