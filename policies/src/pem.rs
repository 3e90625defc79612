//! PEM certificates and SHA-256 fingerprints for pinned federation members.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// Decodes every `CERTIFICATE` block of a PEM text into DER. At least one block is required.
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines() {
        let line = line.trim();
        if line == BEGIN {
            if body.is_some() {
                return Err("a BEGIN CERTIFICATE line comes before the previous block ended".to_string());
            }
            body = Some(String::new());
        } else if line == END {
            let Some(b64) = body.take() else {
                return Err("an END CERTIFICATE line has no BEGIN".to_string());
            };
            let der = STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| format!("certificate {} is not valid base64: {e}", out.len() + 1))?;
            if der.first() != Some(&0x30) {
                return Err(format!("certificate {} is not DER (it must start with a SEQUENCE)", out.len() + 1));
            }
            out.push(der);
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        } else if !line.is_empty() {
            return Err(format!("unexpected text outside a certificate block: {line:?}"));
        }
    }
    if body.is_some() {
        return Err("a certificate block has no END CERTIFICATE line".to_string());
    }
    if out.is_empty() {
        return Err(format!("expected PEM text with at least one {BEGIN} block"));
    }
    Ok(out)
}

/// Normalises PEM text: lines trimmed, blank lines dropped, LF line ends, a final newline.
pub fn normalise_pem(pem: &str) -> String {
    let mut out = String::new();
    for line in pem.lines().map(str::trim).filter(|l| !l.is_empty()) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Lower-case hex SHA-256 of DER bytes.
pub fn sha256_hex(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// Normalises a SHA-256 fingerprint: accepts hex with or without `:` separators, any case,
/// and returns 64 lower-case hex digits.
pub fn normalise_fingerprint(s: &str) -> Result<String, String> {
    let hex: String = s.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!("expected a SHA-256 fingerprint (64 hex digits, \":\" separators allowed), found {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks() {
        let pem = "-----BEGIN CERTIFICATE-----\nMAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(pem), Ok(vec![vec![0x30, 1, 2, 3]]));
        let not_der = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
        assert!(pem_certificates(not_der).is_err());
        assert!(pem_certificates("hello").is_err());
        assert!(pem_certificates("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----").is_err());
        assert!(pem_certificates("-----BEGIN CERTIFICATE-----\nAAEC\n").is_err());
        assert_eq!(normalise_pem("  a \r\n\r\nb"), "a\nb\n");
    }

    #[test]
    fn fingerprints() {
        let fp = sha256_hex(b"abc");
        assert_eq!(fp, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let colons: Vec<String> = fp.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_uppercase()).collect();
        assert_eq!(normalise_fingerprint(&colons.join(":")), Ok(fp));
        assert!(normalise_fingerprint("abcd").is_err());
    }
}
