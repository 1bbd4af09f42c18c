//! Passwords: argon2id PHC strings, hashed on a small pool of low-priority threads, and the
//! password policy.
//!
//! Each argon2id hash is ~15 ms of one core. A burst of sign-ins must not slow the cheap
//! requests (JWKS, token, userinfo) served beside it, so hashes run on their own threads
//! (one per permitted concurrent hash) at a lower scheduling priority (nice ≈ 10): when the
//! async workers have work the kernel runs them first, and when they are idle the hashes take
//! every core. A semaphore admits at most one hash per thread, so a request that is dropped
//! while it waits (the client went away) never starts one.

use std::sync::{Arc, Mutex, mpsc};

use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use tokio::sync::Semaphore;

use crate::config::PasswordsConfig;

/// The most common passwords (a short list from public breach corpora), refused outright.
const COMMON: &str = include_str!("common_passwords.txt");

/// Longest password accepted: argon2 takes any length, but an unbounded input is a cheap way
/// to make the server hash megabytes.
pub const MAX_LENGTH: usize = 256;

/// Work for the hashing threads.
type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    permits: Arc<Semaphore>,
    pool: mpsc::Sender<Job>,
    min_length: usize,
    /// A real hash of a random password with the same parameters: an unknown user's sign-in
    /// is verified against it so it costs as much as a wrong password. Made at the first
    /// such sign-in rather than at start, so an idle server holds no argon2 memory.
    dummy: Arc<tokio::sync::OnceCell<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed")]
    Hash,
    #[error("the hashing pool is gone")]
    Pool,
}

impl Passwords {
    pub fn new(config: &PasswordsConfig) -> Result<Self, PasswordError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|_| PasswordError::Hash)?;
        let threads = match config.max_concurrent {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        Ok(Self {
            params,
            // One hash queued per thread beside the one it runs, so a thread that finishes
            // starts the next at once instead of waiting for a request to be woken.
            permits: Arc::new(Semaphore::new(threads * 2)),
            pool: hashing_threads(threads)?,
            min_length: config.min_length,
            dummy: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// Hashes `password` into a PHC string.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let params = self.params.clone();
        let password = password.to_owned();
        self.blocking(move || {
            argon(&params)
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|_| PasswordError::Hash)
        })
        .await?
    }

    /// Whether `password` matches `phc`; with no hash (unknown user, or an account without a
    /// password) it still spends the time of one verification and returns false.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, PasswordError> {
        let known = phc.is_some();
        let phc = match phc {
            Some(phc) => phc.to_owned(),
            None => self.dummy_hash().await?,
        };
        let password = password.to_owned();
        let ok = self
            .blocking(move || MEMORY.with_borrow_mut(|m| verify_in(m, password.as_bytes(), &phc)))
            .await?;
        Ok(ok && known)
    }

    async fn dummy_hash(&self) -> Result<String, PasswordError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async { self.hash(&super::secrets::random_token()).await })
            .await?;
        Ok(dummy.clone())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Pool)?;
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.pool.send(job).map_err(|_| PasswordError::Pool)?;
        result.await.map_err(|_| PasswordError::Pool)
    }

    /// Checks the policy; `Err` carries a sentence for the person choosing the password.
    pub fn check_policy(&self, password: &str, username: &str, email: &str) -> Result<(), String> {
        let length = password.chars().count();
        if length < self.min_length {
            return Err(format!(
                "Choose a password of at least {} characters.",
                self.min_length
            ));
        }
        if password.len() > MAX_LENGTH {
            return Err(format!(
                "Choose a password of at most {MAX_LENGTH} characters."
            ));
        }
        let folded = password.to_lowercase();
        if is_common(&folded) {
            return Err("That password is one of the most common ones; choose another.".into());
        }
        let local = email.split('@').next().unwrap_or_default().to_lowercase();
        if folded == username.to_lowercase()
            || folded == email.to_lowercase()
            || (!local.is_empty() && folded == local)
        {
            return Err("Your password must not be your username or email address.".into());
        }
        Ok(())
    }
}

thread_local! {
    /// Each hashing thread's argon2 working memory (19 MiB at the default parameters), kept
    /// from one verification to the next: allocating it afresh costs page faults and zeroing
    /// on every sign-in (argon2 overwrites every block, so reuse is sound).
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Verifies `password` against the PHC string `phc` (with the parameters it names, which may
/// be older than the configured ones) in `memory`, compared in constant time.
fn verify_in(memory: &mut Vec<Block>, password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(hash.algorithm.as_str()),
        Params::try_from(&hash),
    ) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let blocks = params.block_count();
    if memory.len() != blocks {
        memory.clear();
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.as_bytes().len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt.as_ref(), &mut out, &mut memory[..])
        .is_ok()
        && aws_lc_rs::constant_time::verify_slices_are_equal(&out, expected.as_bytes()).is_ok()
}

/// Starts `n` hashing threads at a lower priority, fed by one queue. They end when every
/// `Passwords` (every sender) is gone.
fn hashing_threads(n: usize) -> Result<mpsc::Sender<Job>, PasswordError> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..n {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name(format!("tessera-argon2-{i}"))
            .spawn(move || {
                // Crossplatform 25 of 0..=99 maps to nice ≈ 10 on Linux. Lowering one's own
                // priority needs no privilege; if the platform refuses, hashing still works.
                let lower = thread_priority::ThreadPriorityValue::try_from(25u8)
                    .map(thread_priority::ThreadPriority::Crossplatform);
                if let Ok(priority) = lower
                    && let Err(error) = thread_priority::set_current_thread_priority(priority)
                {
                    tracing::debug!(?error, "could not lower the hashing thread's priority");
                }
                loop {
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })
            .map_err(|_| PasswordError::Pool)?;
    }
    Ok(jobs)
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn is_common(folded: &str) -> bool {
    COMMON
        .lines()
        .map(str::trim)
        .any(|c| !c.is_empty() && c == folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords() -> Passwords {
        Passwords::new(&PasswordsConfig {
            memory_kib: 1024,
            iterations: 1,
            ..PasswordsConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let p = passwords();
        let hash = p.hash("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(
            p.verify("correct horse battery", Some(&hash))
                .await
                .unwrap()
        );
        assert!(!p.verify("wrong", Some(&hash)).await.unwrap());
        assert!(!p.verify("correct horse battery", None).await.unwrap());
        assert!(!p.verify("x", Some("not a phc string")).await.unwrap());
    }

    #[tokio::test]
    async fn verification_reuses_its_memory_and_follows_the_hash_parameters() {
        let hash = passwords().hash("correct horse battery").await.unwrap();
        // Memory sized for other parameters (an older configuration) is resized, then kept.
        let mut memory = vec![Block::default(); 8];
        assert!(verify_in(&mut memory, b"correct horse battery", &hash));
        assert_eq!(memory.len(), 1024, "m=1024 KiB is 1024 blocks");
        assert!(!verify_in(&mut memory, b"correct horse batterz", &hash));
        assert!(verify_in(&mut memory, b"correct horse battery", &hash));
        assert!(!verify_in(
            &mut memory,
            b"x",
            "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ"
        ));
    }

    #[test]
    fn default_parameters_meet_owasp_minimums() {
        let c = PasswordsConfig::default();
        assert!(c.memory_kib >= 19_456 && c.iterations >= 2 && c.parallelism >= 1);
    }

    #[test]
    fn policy_refuses_short_common_and_personal_passwords() {
        let p = passwords();
        assert!(p.check_policy("short", "alice", "a@example.com").is_err());
        assert!(
            p.check_policy("Password1", "alice", "a@example.com")
                .is_err()
        );
        assert!(
            p.check_policy("qwertyuiop", "alice", "a@example.com")
                .is_err()
        );
        assert!(
            p.check_policy("alicealice", "alicealice", "a@example.com")
                .is_err()
        );
        assert!(
            p.check_policy(&"x".repeat(MAX_LENGTH + 1), "alice", "a@example.com")
                .is_err()
        );
        assert!(
            p.check_policy("plum tree at dawn", "alice", "a@example.com")
                .is_ok()
        );
    }
}
