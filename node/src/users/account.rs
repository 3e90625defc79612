//! Stored account and device records, and password hashing.

use argon2::{Argon2, PasswordHash, password_hash::SaltString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Account {
    /// argon2id PHC string.
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub deactivated: bool,
    /// Roles from the node policy (`[[account]] roles`), set by `policy apply`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Device {
    pub display_name: Option<String>,
    pub access_token: Option<String>,
    pub last_seen_ts: Option<u64>,
    /// The refresh token of a session that asked for one (see `users::tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The refresh token the last refresh replaced: still valid until the new access or refresh
    /// token is first used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_refresh_token: Option<String>,
}

/// argon2id with OWASP's low-memory parameter set (7 MiB, 5 passes), which is as strong as the
/// 19 MiB default.
fn params() -> argon2::Params {
    argon2::Params::new(7 * 1024, 5, 1, Some(32)).unwrap_or_default()
}

type Job = Box<dyn FnOnce(&mut Vec<argon2::Block>) + Send>;

/// Runs password hashing on two dedicated threads, each reusing one memory buffer. Letting every
/// hash allocate its own megabytes on tokio's blocking pool grew the node's RSS past 400 MB after
/// twenty logins, because the allocator keeps freed memory per thread.
pub struct HashPool {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

impl HashPool {
    pub fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..2 {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("tocsin-argon2-{i}")).spawn(move || {
                let mut memory = Vec::new();
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(&mut memory),
                        Err(_) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self { jobs: std::sync::Mutex::new(tx) }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<argon2::Block>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = tx.send(f(memory));
        });
        self.jobs.lock().map_err(Error::internal)?.send(job).map_err(Error::internal)?;
        rx.await.map_err(|_| Error::internal("password hashing thread stopped"))?
    }

    /// Returns a PHC string (`$argon2id$v=19$m=...`), the format every argon2 library reads.
    pub async fn hash(&self, password: String) -> Result<String> {
        self.run(move |memory| {
            let params = params();
            let salt: [u8; 16] = rand::random();
            let mut out = [0u8; 32];
            compute(&params, password.as_bytes(), &salt, &mut out, memory)?;
            let salt = SaltString::encode_b64(&salt).map_err(Error::internal)?;
            let output = argon2::password_hash::Output::new(&out).map_err(Error::internal)?;
            Ok(format!(
                "$argon2id$v=19$m={},t={},p={}${}${}",
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
                salt.as_str(),
                output
            ))
        })
        .await
    }

    /// Does the work of a verification against a hash no password matches, so an unknown
    /// account takes as long to refuse as a wrong password (no enumeration by timing).
    pub async fn verify_dummy(&self, password: String) -> Result<()> {
        self.run(move |memory| {
            let salt = [0x5au8; 16];
            let mut out = [0u8; 32];
            compute(&params(), password.as_bytes(), &salt, &mut out, memory)?;
            // Compared like a real hash, and the result thrown away.
            let _ = out.ct_eq(&[0u8; 32]);
            Ok(())
        })
        .await
    }

    pub async fn verify(&self, password: String, hash: String) -> Result<bool> {
        self.run(move |memory| {
            let parsed = PasswordHash::new(&hash).map_err(Error::internal)?;
            // The parameters come from the hash itself, so hashes made elsewhere still verify.
            let params = argon2::Params::try_from(&parsed).map_err(Error::internal)?;
            let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return Ok(false) };
            let mut salt_buf = [0u8; 64];
            let salt = salt.decode_b64(&mut salt_buf).map_err(Error::internal)?;
            let mut out = vec![0u8; expected.len()];
            compute(&params, password.as_bytes(), salt, &mut out, memory)?;
            // Output's equality is constant-time.
            Ok(argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected))
        })
        .await
    }
}

fn compute(
    params: &argon2::Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut Vec<argon2::Block>,
) -> Result<()> {
    memory.resize(params.block_count(), argon2::Block::default());
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, salt, out, memory.as_mut_slice())
        .map_err(Error::internal)
}

/// Compares a secret a client sent with the configured one in constant time: both are hashed
/// first, so neither the content nor the length of the expected secret shows in the timing.
pub fn secrets_match(given: &str, expected: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    given.ct_eq(&expected).into()
}

impl Default for HashPool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(secrets_match("crisis-2026", "crisis-2026"));
        assert!(!secrets_match("crisis-2025", "crisis-2026"));
        assert!(!secrets_match("crisis", "crisis-2026"));
        assert!(!secrets_match("", "crisis-2026"));
    }

    #[tokio::test]
    async fn a_dummy_verification_costs_what_a_real_one_does() {
        let pool = HashPool::new();
        let hash = pool.hash("right".to_owned()).await.unwrap();
        // Warm both paths once (buffers are allocated on first use).
        pool.verify("wrong".to_owned(), hash.clone()).await.unwrap();
        pool.verify_dummy("wrong".to_owned()).await.unwrap();
        let mut real = Vec::new();
        let mut dummy = Vec::new();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            assert!(!pool.verify("wrong".to_owned(), hash.clone()).await.unwrap());
            real.push(t.elapsed());
            let t = std::time::Instant::now();
            pool.verify_dummy("wrong".to_owned()).await.unwrap();
            dummy.push(t.elapsed());
        }
        real.sort();
        dummy.sort();
        let (real, dummy) = (real[2].as_secs_f64(), dummy[2].as_secs_f64());
        assert!(dummy > real / 2.0 && dummy < real * 2.0, "real {real}s, dummy {dummy}s");
    }
}
