//! Operator keys, signing and verifying federation lists, and accepting new versions.
//!
//! Keys are ed25519. A key file holds one line of base64 (standard alphabet; written unpadded,
//! read padded or not); blank lines and lines starting with `#` are ignored. A key id is
//! `ed25519:` followed by the first 16 hex digits of the SHA-256 of the 32-byte public key.
//!
//! The signature covers [`FederationList::canonical_text`] (UTF-8 bytes), so edits to comments,
//! whitespace, key order or member order keep it valid, and any change of a value breaks it.

use std::ops::Deref;
use std::path::Path;

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::canonical::write_str;
use crate::error::PolicyError;
use crate::federation::{FederationList, ListStatus, ParsedList, Signature, parse_federation_list};

const B64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Unpadded standard base64.
pub fn b64_encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn key_bytes(text: &str, what: &str) -> Result<[u8; 32], PolicyError> {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let [line] = lines.as_slice() else {
        return Err(PolicyError::BadKey(format!(
            "expected exactly one line of base64 for the {what} key, found {}",
            lines.len()
        )));
    };
    let bytes =
        B64.decode(line.as_bytes()).map_err(|e| PolicyError::BadKey(format!("{what} key is not valid base64: {e}")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| PolicyError::BadKey(format!("{what} key must be 32 bytes, found {}", bytes.len())))
}

/// The operator's secret signing key.
pub struct OperatorSecretKey(SigningKey);

impl std::fmt::Debug for OperatorSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OperatorSecretKey({})", self.public_key().key_id())
    }
}

impl OperatorSecretKey {
    /// Reads a secret key from base64 or from the text of a key file.
    pub fn from_text(text: &str) -> Result<Self, PolicyError> {
        Ok(OperatorSecretKey(SigningKey::from_bytes(&key_bytes(text, "secret")?)))
    }

    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        Self::from_text(&read(path)?)
    }

    pub fn to_base64(&self) -> String {
        b64_encode(self.0.as_bytes())
    }

    pub fn public_key(&self) -> OperatorPublicKey {
        OperatorPublicKey(self.0.verifying_key())
    }
}

/// A pinned operator public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorPublicKey(VerifyingKey);

impl OperatorPublicKey {
    /// Reads a public key from base64 or from the text of a key file (`operator.pub`).
    pub fn from_text(text: &str) -> Result<Self, PolicyError> {
        VerifyingKey::from_bytes(&key_bytes(text, "public")?)
            .map(OperatorPublicKey)
            .map_err(|e| PolicyError::BadKey(format!("not a valid ed25519 public key: {e}")))
    }

    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        Self::from_text(&read(path)?)
    }

    pub fn to_base64(&self) -> String {
        b64_encode(self.0.as_bytes())
    }

    /// `ed25519:` + the first 16 hex digits of SHA-256(public key).
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("ed25519:{hex}")
    }
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.to_path_buf(), source })
}

/// Generates an operator key pair from the OS-seeded thread RNG.
/// Returns `(secret_base64, public_base64)`, both unpadded.
pub fn generate_operator_key() -> (String, String) {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    (b64_encode(key.as_bytes()), b64_encode(key.verifying_key().as_bytes()))
}

/// The text of a key file: comment lines, then the base64 key.
pub fn key_file_text(comment: &str, key_base64: &str) -> String {
    let mut out = String::new();
    for line in comment.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(key_base64);
    out.push('\n');
    out
}

/// A federation list with its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFederationList {
    pub list: FederationList,
    pub signature: Signature,
}

impl SignedFederationList {
    /// The canonical text followed by the `[signature]` table: a complete, verifiable file.
    pub fn to_toml(&self) -> String {
        let mut out = self.list.canonical_text();
        out.push_str(&signature_table(&self.signature));
        out
    }
}

fn signature_table(sig: &Signature) -> String {
    let mut out = String::from("\n[signature]\n");
    write_str(&mut out, "key_id", &sig.key_id);
    write_str(&mut out, "ed25519", &sig.ed25519);
    out
}

/// Signs a list. Lists with validation errors are refused.
pub fn sign_list(list: &FederationList, key: &OperatorSecretKey) -> Result<SignedFederationList, PolicyError> {
    let diags = list.validate();
    if diags.has_errors() {
        return Err(PolicyError::Invalid(diags));
    }
    let signature = key.0.sign(list.canonical_text().as_bytes());
    Ok(SignedFederationList {
        list: list.clone(),
        signature: Signature { key_id: key.public_key().key_id(), ed25519: b64_encode(&signature.to_bytes()) },
    })
}

/// Signs the text of a list file and returns the signed file text.
///
/// The input keeps its comments and layout; an existing `[signature]` table is removed and a
/// fresh one is appended at the end. The list is validated first (`file` only names it in
/// diagnostics).
pub fn sign_text(text: &str, key: &OperatorSecretKey, file: Option<&Path>) -> Result<String, PolicyError> {
    let parsed = parse_federation_list(text, file)?;
    let stripped = strip_signature_table(text);
    let reparsed = parse_federation_list(&stripped, file).map_err(|_| PolicyError::CannotStripSignature)?;
    if reparsed.signature.is_some() || reparsed.list.canonical_text() != parsed.list.canonical_text() {
        return Err(PolicyError::CannotStripSignature);
    }
    let signed = sign_list(&parsed.list, key)?;
    let mut out = stripped.trim_end().to_string();
    out.push('\n');
    out.push_str(&signature_table(&signed.signature));
    Ok(out)
}

/// Removes a `[signature]` table (its header line up to the next table header) from file text.
fn strip_signature_table(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skipping = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            skipping = is_signature_header(t);
        }
        if !skipping {
            out.push_str(line);
        }
    }
    out
}

fn is_signature_header(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    if rest.starts_with('[') {
        return false;
    }
    let Some((name, after)) = rest.split_once(']') else {
        return false;
    };
    let after = after.trim();
    let name = name.trim();
    (name == "signature" || name == "\"signature\"") && (after.is_empty() || after.starts_with('#'))
}

/// A federation list whose signature has been checked against a pinned key.
/// Only [`verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedList {
    list: FederationList,
    key_id: String,
}

impl VerifiedList {
    pub fn list(&self) -> &FederationList {
        &self.list
    }

    /// The id of the pinned key that signed it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn into_list(self) -> FederationList {
        self.list
    }
}

impl Deref for VerifiedList {
    type Target = FederationList;
    fn deref(&self) -> &FederationList {
        &self.list
    }
}

/// Parses a signed list and checks its signature against the pinned operator keys.
pub fn verify(list_text: &str, pinned_public_keys: &[OperatorPublicKey]) -> Result<VerifiedList, PolicyError> {
    let parsed = parse_federation_list(list_text, None)?;
    verify_parsed(&parsed, pinned_public_keys)
}

/// Reads a signed list file and checks its signature (diagnostics name the file).
pub fn verify_file(path: &Path, pinned_public_keys: &[OperatorPublicKey]) -> Result<VerifiedList, PolicyError> {
    let text = read(path)?;
    let parsed = parse_federation_list(&text, Some(path))?;
    verify_parsed(&parsed, pinned_public_keys)
}

/// Checks the signature of an already parsed list.
pub fn verify_parsed(
    parsed: &ParsedList,
    pinned_public_keys: &[OperatorPublicKey],
) -> Result<VerifiedList, PolicyError> {
    let sig = parsed.signature.as_ref().ok_or(PolicyError::MissingSignature)?;
    let key = pinned_public_keys.iter().find(|k| k.key_id() == sig.key_id).ok_or_else(|| PolicyError::UnpinnedKey {
        key_id: sig.key_id.clone(),
        pinned: pinned_public_keys.iter().map(OperatorPublicKey::key_id).collect(),
    })?;
    let bytes = B64
        .decode(sig.ed25519.as_bytes())
        .map_err(|e| PolicyError::MalformedSignature(format!("not valid base64: {e}")))?;
    let bytes = <[u8; 64]>::try_from(bytes.as_slice())
        .map_err(|_| PolicyError::MalformedSignature(format!("expected 64 bytes, found {}", bytes.len())))?;
    let signature = ed25519_dalek::Signature::from_bytes(&bytes);
    key.0
        .verify(parsed.list.canonical_text().as_bytes(), &signature)
        .map_err(|_| PolicyError::BadSignature { key_id: sig.key_id.clone() })?;
    Ok(VerifiedList { list: parsed.list.clone(), key_id: sig.key_id.clone() })
}

/// Decides whether a newly received list replaces the active one.
///
/// Refused: a version not above the active one (rollback or replay), and a list that has
/// already expired at `now_unix`. The active list keeps being enforced when it expires (see
/// [`FederationList::status`]); only a newer, unexpired list replaces it.
pub fn accept_update(
    current: Option<&VerifiedList>,
    new: VerifiedList,
    now_unix: i64,
) -> Result<VerifiedList, PolicyError> {
    if let Some(current) = current
        && new.version <= current.version
    {
        return Err(PolicyError::Rollback { current: current.version, offered: new.version });
    }
    if let ListStatus::Expired { since } = new.status(now_unix) {
        return Err(PolicyError::ExpiredOnArrival { version: new.version, expires: since.to_string() });
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_headers() {
        assert!(is_signature_header("[signature]\n"));
        assert!(is_signature_header("[ signature ]  # sig\n"));
        assert!(!is_signature_header("[[signature]]\n"));
        assert!(!is_signature_header("[signatures]\n"));
        assert!(!is_signature_header("[federation]\n"));
    }

    #[test]
    fn key_text_round_trip() {
        let (secret, public) = generate_operator_key();
        let sk = OperatorSecretKey::from_text(&key_file_text("demo only\nsecond line", &secret)).unwrap();
        assert_eq!(sk.public_key().to_base64(), public);
        let pk = OperatorPublicKey::from_text(&public).unwrap();
        assert_eq!(pk.key_id(), sk.public_key().key_id());
        assert!(pk.key_id().starts_with("ed25519:") && pk.key_id().len() == 24);
        assert!(OperatorPublicKey::from_text("").is_err());
        assert!(OperatorPublicKey::from_text("AAAA").is_err());
        assert!(OperatorPublicKey::from_text(&format!("{public}\n{public}")).is_err());
        assert!(!format!("{sk:?}").contains(&secret));
    }
}
