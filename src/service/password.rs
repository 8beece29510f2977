//! Password hashing (argon2id with the crate's recommended parameters: m=19 MiB, t=2, p=1) and the
//! password policy. Hashing runs on the blocking pool so a burst of logins cannot stall the runtime.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::Semaphore;

use crate::config::PasswordPolicy;
use crate::error::{Error, Result};

/// Each argon2 computation takes 19 MiB and a core for tens of milliseconds: at most this many
/// run at once per core, the rest queue, so a burst of logins costs bounded memory.
const HASHES_PER_CORE: usize = 2;

fn hashing_permits() -> &'static Semaphore {
    static PERMITS: std::sync::OnceLock<Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Semaphore::new(cores * HASHES_PER_CORE)
    })
}

/// Runs `work` on the blocking pool once a hashing permit is free.
async fn run_limited<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let _permit = hashing_permits().acquire().await.map_err(Error::internal)?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(Error::internal)
}

/// Hashes a password with argon2id off the async runtime.
pub async fn hash(password: &str) -> Result<String> {
    let password = password.to_owned();
    run_limited(move || hash_blocking(&password)).await?
}

pub fn hash_blocking(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::internal)
}

/// Verifies a password against a stored hash off the async runtime. With no hash (unknown user)
/// it still spends the time of one verification, so timing does not reveal which users exist.
pub async fn verify(password: &str, stored: Option<String>) -> Result<bool> {
    let password = password.to_owned();
    run_limited(move || {
        let stored = match stored {
            Some(s) => s,
            None => {
                let _ = hash_blocking(&password);
                return false;
            }
        };
        match PasswordHash::new(&stored) {
            Ok(parsed) => Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    })
    .await
}

/// Checks a new password against the configured policy.
pub fn check_policy(policy: &PasswordPolicy, password: &str) -> Result<()> {
    let chars = password.chars().count();
    if chars < policy.min_length {
        return Err(Error::WeakPassword(format!(
            "the password must be at least {} characters long",
            policy.min_length
        )));
    }
    if password.len() > 1024 {
        return Err(Error::WeakPassword("the password is too long".into()));
    }
    if policy.require_digit && !password.chars().any(|c| c.is_ascii_digit()) {
        return Err(Error::WeakPassword(
            "the password must contain a digit".into(),
        ));
    }
    if policy.require_letter && !password.chars().any(char::is_alphabetic) {
        return Err(Error::WeakPassword(
            "the password must contain a letter".into(),
        ));
    }
    if policy.require_symbol && password.chars().all(char::is_alphanumeric) {
        return Err(Error::WeakPassword(
            "the password must contain a symbol".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash("correct horse").await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", Some(h.clone())).await.unwrap());
        assert!(!verify("wrong horse", Some(h)).await.unwrap());
        assert!(!verify("x", None).await.unwrap());
        assert!(!verify("x", Some("garbage".into())).await.unwrap());
    }

    #[test]
    fn policy() {
        let mut p = PasswordPolicy::default();
        assert!(check_policy(&p, "short").is_err());
        assert!(check_policy(&p, "long enough").is_ok());
        p.require_digit = true;
        assert!(check_policy(&p, "long enough").is_err());
        assert!(check_policy(&p, "long enough 1").is_ok());
    }
}
