//! Two-factor login with TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one step of skew) and
//! single-use recovery codes, plus the short-lived challenges of the two-step login.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::error::{Error, Result};
use crate::storage::{Store, Tree, abort, trees};
use crate::util::{constant_time_eq, now_ms, random_bytes, random_string, sha256_hex};

pub const RECOVERY_CODES: usize = 10;
const STEP_SECS: u64 = 30;
const ISSUER: &str = "Roost";
/// Wrong codes a login challenge tolerates before it is dropped.
const CHALLENGE_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TotpRecord {
    /// Base32 secret.
    secret: String,
    confirmed: bool,
    /// sha256 of each unused recovery code.
    recovery_hashes: Vec<String>,
    /// The last time step whose code was accepted (codes are never accepted twice).
    last_step: u64,
    created_ts: u64,
}

/// What enrolment hands the user.
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
}

/// A password login waiting for its second factor.
#[derive(Debug, Clone)]
pub struct LoginChallenge {
    pub user_id: OwnedUserId,
    pub device_id: Option<String>,
    pub display_name: Option<String>,
    pub refresh_token: bool,
    expires: Instant,
    attempts: u32,
}

pub struct Mfa {
    store: Store,
    tree: Tree,
    challenges: Mutex<HashMap<String, LoginChallenge>>,
}

fn totp(secret_b32: &str) -> Result<Totp> {
    let secret = Secret::try_from_base32(secret_b32).map_err(Error::internal)?;
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECS)
        .with_secret(secret)
        .build()
        .map_err(Error::internal)
}

fn normalize_recovery(code: &str) -> String {
    code.trim().to_ascii_lowercase().replace(['-', ' '], "")
}

impl Mfa {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            tree: store.tree(trees::USERID_TOTP)?,
            challenges: Mutex::new(HashMap::new()),
        })
    }

    fn load(&self, user_id: &UserId) -> Result<Option<TotpRecord>> {
        match self.tree.get(user_id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    pub fn is_enabled(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.load(user_id)?.is_some_and(|r| r.confirmed))
    }

    /// Starts enrolment with a new secret (replacing an unconfirmed one).
    pub async fn enroll(&self, user_id: &UserId) -> Result<Enrolment> {
        if self.is_enabled(user_id)? {
            return Err(Error::Forbidden(
                "two-factor login is already enabled; disable it first".into(),
            ));
        }
        let secret = Secret::from(&random_bytes::<20>()[..]).to_base32();
        let record = TotpRecord {
            secret: secret.clone(),
            confirmed: false,
            recovery_hashes: Vec::new(),
            last_step: 0,
            created_ts: now_ms(),
        };
        self.tree
            .put(user_id.as_bytes(), serde_json::to_vec(&record)?)?;
        self.store.durable().await?;
        let label = format!("{ISSUER}:{user_id}");
        let mut uri = url::Url::parse("otpauth://totp/").map_err(Error::internal)?;
        uri.set_path(&label);
        uri.query_pairs_mut()
            .append_pair("secret", &secret)
            .append_pair("issuer", ISSUER)
            .append_pair("algorithm", "SHA1")
            .append_pair("digits", "6")
            .append_pair("period", "30");
        Ok(Enrolment {
            secret,
            otpauth_uri: uri.to_string(),
        })
    }

    /// Completes enrolment with a valid code; returns the recovery codes (shown once).
    pub async fn confirm(&self, user_id: &UserId, code: &str) -> Result<Vec<String>> {
        let record = self
            .load(user_id)?
            .ok_or_else(|| Error::NotFound("no two-factor enrolment in progress".into()))?;
        if record.confirmed {
            return Err(Error::Forbidden(
                "two-factor login is already enabled".into(),
            ));
        }
        let step = totp(&record.secret)?
            .check_current(code.trim())
            .ok_or_else(|| Error::Forbidden("invalid code".into()))?;
        let codes: Vec<String> = (0..RECOVERY_CODES)
            .map(|_| {
                let raw = random_string(10).to_ascii_lowercase();
                format!("{}-{}", &raw[..5], &raw[5..])
            })
            .collect();
        let confirmed = TotpRecord {
            confirmed: true,
            recovery_hashes: codes
                .iter()
                .map(|c| sha256_hex(normalize_recovery(c)))
                .collect(),
            last_step: step,
            ..record
        };
        self.tree
            .put(user_id.as_bytes(), serde_json::to_vec(&confirmed)?)?;
        self.store.durable().await?;
        Ok(codes)
    }

    /// Checks a second factor: a current TOTP code not used before, or an unused recovery code
    /// (which is then spent). Callers rate-limit attempts.
    pub async fn verify(&self, user_id: &UserId, code: &str) -> Result<bool> {
        let code = code.trim();
        let ok = self.store.transact(&[&self.tree], |t| {
            let Some(raw) = t[0].get(user_id.as_bytes())? else {
                return Ok(false);
            };
            let mut record: TotpRecord =
                serde_json::from_slice(&raw).map_err(|e| abort(Error::from(e)))?;
            if !record.confirmed {
                return Ok(false);
            }
            let is_totp = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
            if is_totp {
                let step = totp(&record.secret).map_err(abort)?.check_current(code);
                match step {
                    Some(step) if step > record.last_step => record.last_step = step,
                    _ => return Ok(false),
                }
            } else {
                let hash = sha256_hex(normalize_recovery(code));
                let Some(at) = record
                    .recovery_hashes
                    .iter()
                    .position(|h| constant_time_eq(h.as_bytes(), hash.as_bytes()))
                else {
                    return Ok(false);
                };
                record.recovery_hashes.remove(at);
            }
            let bytes = serde_json::to_vec(&record).map_err(|e| abort(Error::internal(e)))?;
            t[0].put(user_id.as_bytes(), bytes)?;
            Ok(true)
        })?;
        if ok {
            self.store.durable().await?;
        }
        Ok(ok)
    }

    pub fn remaining_recovery_codes(&self, user_id: &UserId) -> Result<usize> {
        Ok(self.load(user_id)?.map_or(0, |r| r.recovery_hashes.len()))
    }

    pub fn remove(&self, user_id: &UserId) -> Result<()> {
        self.tree.delete(user_id.as_bytes())?;
        Ok(())
    }

    /// Opens a login challenge after a correct password; returns its ID.
    pub fn open_challenge(
        &self,
        user_id: OwnedUserId,
        device_id: Option<String>,
        display_name: Option<String>,
        refresh_token: bool,
        lifetime: Duration,
    ) -> Result<String> {
        let id = random_string(32);
        let mut map = self
            .challenges
            .lock()
            .map_err(|_| Error::internal("lock poisoned"))?;
        let now = Instant::now();
        map.retain(|_, c| c.expires > now);
        map.insert(
            id.clone(),
            LoginChallenge {
                user_id,
                device_id,
                display_name,
                refresh_token,
                expires: now + lifetime,
                attempts: 0,
            },
        );
        Ok(id)
    }

    pub fn peek_challenge(&self, id: &str) -> Result<LoginChallenge> {
        let map = self
            .challenges
            .lock()
            .map_err(|_| Error::internal("lock poisoned"))?;
        map.get(id)
            .filter(|c| c.expires > Instant::now())
            .cloned()
            .ok_or_else(|| Error::Forbidden("unknown or expired login session".into()))
    }

    /// Ends a challenge: `success` removes it; a failure counts an attempt and removes it after
    /// too many.
    pub fn finish_challenge(&self, id: &str, success: bool) -> Result<()> {
        let mut map = self
            .challenges
            .lock()
            .map_err(|_| Error::internal("lock poisoned"))?;
        if success {
            map.remove(id);
        } else if let Some(c) = map.get_mut(id) {
            c.attempts += 1;
            if c.attempts >= CHALLENGE_ATTEMPTS {
                map.remove(id);
            }
        }
        Ok(())
    }
}
