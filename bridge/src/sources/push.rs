//! CAP documents POSTed to `/cap/<source>`, authenticated by the source's shared secret
//! (`Authorization: Bearer <secret>`) or an HMAC-SHA256 of the body
//! (`X-Tocsin-Signature: sha256=<hex>`). Invalid documents are answered 400 with the element
//! and line, and kept in `data_dir/quarantine/`.

use std::path::Path;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Whether the request carries the source's secret or a valid signature of `body`.
pub fn authorized(headers: &HeaderMap, body: &[u8], hmac_secret: Option<&str>, bearer_secret: Option<&str>) -> bool {
    if let Some(secret) = bearer_secret
        && let Some(given) =
            headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
        && bool::from(given.as_bytes().ct_eq(secret.as_bytes()))
    {
        return true;
    }
    if let Some(secret) = hmac_secret
        && let Some(sig) =
            headers.get("x-tocsin-signature").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("sha256="))
        && let Some(sig) = hex_decode(sig)
        && let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
    {
        mac.update(body);
        return mac.verify_slice(&sig).is_ok();
    }
    false
}

/// The signature header value a sender computes (also used by tests and the docs).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Keeps a refused document for the operator.
pub fn quarantine(data_dir: &Path, source: &str, body: &[u8], error: &str) -> std::io::Result<()> {
    quarantine_as(data_dir, source, "xml", body, error)
}

/// Keeps a refused document under the extension of its format.
pub fn quarantine_as(data_dir: &Path, source: &str, ext: &str, body: &[u8], error: &str) -> std::io::Result<()> {
    let dir = data_dir.join("quarantine");
    std::fs::create_dir_all(&dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f");
    let file = dir.join(format!("{source}-{stamp}.{ext}"));
    std::fs::write(&file, body)?;
    let mut note = file.into_os_string();
    note.push(".error.txt");
    std::fs::write(note, format!("{error}\n"))
}
