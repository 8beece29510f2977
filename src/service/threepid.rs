//! E-mail addresses: validation sessions (request a token, follow the link or submit the token)
//! and the addresses bound to accounts. Tokens are single-use, expire, and are stored hashed.

use std::sync::Arc;

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, abort, keys, trees};
use crate::util::{constant_time_eq, now_ms, random_string, sha256_hex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Purpose {
    Register,
    PasswordReset,
    AddEmail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Validation {
    sid: String,
    client_secret: String,
    email: String,
    purpose: Purpose,
    /// sha256 of the token; cleared once the token has been used.
    token_hash: Option<String>,
    send_attempt: u64,
    expires_ts: u64,
    validated_ts: Option<u64>,
    /// The validation has been used by an operation (registration, reset, binding).
    consumed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoundEmail {
    pub address: String,
    pub added_at: u64,
    pub validated_at: u64,
}

pub struct Threepids {
    store: Store,
    config: Arc<Config>,
    validations: Tree,
    email_userid: Tree,
    userid_emails: Tree,
}

/// A token request: what the client sent.
pub struct TokenRequest<'a> {
    pub purpose: Purpose,
    pub email: &'a str,
    pub client_secret: &'a str,
    pub send_attempt: u64,
}

/// `[0-9a-zA-Z.=_-]{1,255}` as the spec requires of client secrets.
pub fn is_valid_client_secret(s: &str) -> bool {
    (1..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'=' | b'_' | b'-'))
}

/// Lower-cases and checks an e-mail address.
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    if email.len() > 254 || email.parse::<lettre::Address>().is_err() {
        return Err(Error::InvalidParam("invalid e-mail address".into()));
    }
    Ok(email)
}

pub const SUBMIT_PATH: &str = "/_matrix/client/unstable/org.roost.email/submit_token";

impl Threepids {
    pub fn new(store: &Store, config: Arc<Config>) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            config,
            validations: store.tree(trees::EMAILSID_VALIDATION)?,
            email_userid: store.tree(trees::EMAIL_USERID)?,
            userid_emails: store.tree(trees::USERID_EMAILS)?,
        })
    }

    fn session_key(sid: &str) -> Vec<u8> {
        keys::pair("s", sid)
    }

    fn secret_key(client_secret: &str, email: &str) -> Vec<u8> {
        let mut k = keys::pair("c", client_secret);
        k.push(keys::SEP);
        k.extend_from_slice(email.as_bytes());
        k
    }

    pub fn user_for_email(&self, email: &str) -> Result<Option<OwnedUserId>> {
        let Ok(email) = normalize_email(email) else {
            return Ok(None);
        };
        match self.email_userid.get(email.as_bytes())? {
            Some(v) => Ok(UserId::parse(String::from_utf8_lossy(&v).as_ref()).ok()),
            None => Ok(None),
        }
    }

    /// Starts (or repeats) a validation and e-mails a token when the address is eligible for the
    /// purpose. The answer is the same whether or not a message was sent, so the endpoint does not
    /// reveal which addresses are registered. Returns the session ID.
    pub fn request_token(
        &self,
        request: TokenRequest<'_>,
        mailer: &super::mail::Mailer,
    ) -> Result<String> {
        if !mailer.enabled() {
            return Err(Error::ThreepidMediumNotSupported(
                "e-mail is not configured on this server".into(),
            ));
        }
        if !is_valid_client_secret(request.client_secret) {
            return Err(Error::InvalidParam("invalid client_secret".into()));
        }
        let email = normalize_email(request.email)?;
        let secret_key = Self::secret_key(request.client_secret, &email);
        // Same secret and address: same session; a new send_attempt re-sends the token.
        let existing: Option<Validation> = match self.validations.get(&secret_key)? {
            Some(sid) => self.load(&String::from_utf8_lossy(&sid))?,
            None => None,
        };
        if let Some(v) = &existing {
            if v.purpose != request.purpose {
                return Err(Error::InvalidParam(
                    "this client_secret is in use for another purpose".into(),
                ));
            }
            if request.send_attempt <= v.send_attempt || v.validated_ts.is_some() {
                return Ok(v.sid.clone());
            }
        }
        let sid = existing
            .as_ref()
            .map_or_else(|| random_string(24), |v| v.sid.clone());
        let token = random_string(32);
        let validation = Validation {
            sid: sid.clone(),
            client_secret: request.client_secret.to_owned(),
            email: email.clone(),
            purpose: request.purpose,
            token_hash: Some(sha256_hex(&token)),
            send_attempt: request.send_attempt,
            expires_ts: now_ms() + self.config.auth.email_token_lifetime_secs * 1000,
            validated_ts: None,
            consumed: false,
        };
        self.validations
            .put(Self::session_key(&sid), serde_json::to_vec(&validation)?)?;
        self.validations.put(&secret_key, sid.as_bytes().to_vec())?;

        let owner = self.user_for_email(&email)?;
        let eligible = match request.purpose {
            Purpose::Register | Purpose::AddEmail => owner.is_none(),
            Purpose::PasswordReset => owner.is_some(),
        };
        if eligible {
            let link = format!(
                "{}{SUBMIT_PATH}?sid={}&client_secret={}&token={}",
                self.config.public_baseurl(),
                url_encode(&sid),
                url_encode(request.client_secret),
                url_encode(&token),
            );
            let (subject, what) = match request.purpose {
                Purpose::Register => (
                    "Confirm your e-mail address",
                    "finish creating your account",
                ),
                Purpose::AddEmail => ("Confirm your e-mail address", "add it to your account"),
                Purpose::PasswordReset => ("Reset your password", "reset your password"),
            };
            let minutes = self.config.auth.email_token_lifetime_secs / 60;
            let body = format!(
                "Hello,\n\nTo {what} on {server}, open this link:\n\n{link}\n\n\
                 or enter this code in your app: {token}\n\n\
                 The link works once and expires in {minutes} minutes. If you did not ask for \
                 this, ignore this message.\n",
                server = self.config.server_name,
            );
            mailer.send_in_background(&email, subject, body)?;
        }
        Ok(sid)
    }

    fn load(&self, sid: &str) -> Result<Option<Validation>> {
        match self.validations.get(Self::session_key(sid))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Checks a token for a session; a token works once.
    pub async fn submit_token(&self, sid: &str, client_secret: &str, token: &str) -> Result<()> {
        let presented = sha256_hex(token);
        let key = Self::session_key(sid);
        let incorrect = || Error::TokenIncorrect("the token is incorrect, used or expired".into());
        self.store.transact(&[&self.validations], |t| {
            let Some(raw) = t[0].get(&key)? else {
                return Err(abort(incorrect()));
            };
            let mut v: Validation =
                serde_json::from_slice(&raw).map_err(|e| abort(Error::from(e)))?;
            let ok = constant_time_eq(v.client_secret.as_bytes(), client_secret.as_bytes())
                && v.expires_ts > now_ms()
                && v.token_hash
                    .as_deref()
                    .is_some_and(|h| constant_time_eq(h.as_bytes(), presented.as_bytes()));
            if !ok {
                return Err(abort(incorrect()));
            }
            v.token_hash = None;
            v.validated_ts = Some(now_ms());
            let bytes = serde_json::to_vec(&v).map_err(|e| abort(Error::internal(e)))?;
            t[0].put(&key, bytes)?;
            Ok(())
        })?;
        self.store.durable().await?;
        Ok(())
    }

    /// Takes a validated session for `purpose` and returns its address; each validation is used
    /// by one operation only.
    pub fn take_validated(
        &self,
        sid: &str,
        client_secret: &str,
        purpose: Purpose,
    ) -> Result<String> {
        let key = Self::session_key(sid);
        let failed =
            || Error::ThreepidAuthFailed("the e-mail address has not been validated".into());
        let email = self.store.transact(&[&self.validations], |t| {
            let Some(raw) = t[0].get(&key)? else {
                return Err(abort(failed()));
            };
            let mut v: Validation =
                serde_json::from_slice(&raw).map_err(|e| abort(Error::from(e)))?;
            let lifetime = self.config.auth.email_token_lifetime_secs * 1000;
            let ok = constant_time_eq(v.client_secret.as_bytes(), client_secret.as_bytes())
                && v.purpose == purpose
                && !v.consumed
                && v.validated_ts.is_some_and(|ts| ts + lifetime > now_ms());
            if !ok {
                return Err(abort(failed()));
            }
            v.consumed = true;
            let bytes = serde_json::to_vec(&v).map_err(|e| abort(Error::internal(e)))?;
            t[0].put(&key, bytes)?;
            Ok(v.email)
        })?;
        Ok(email)
    }

    /// Binds an address to a user; fails if another account has it.
    pub fn bind(&self, user_id: &UserId, email: &str) -> Result<()> {
        let entry = BoundEmail {
            address: email.to_owned(),
            added_at: now_ms(),
            validated_at: now_ms(),
        };
        let bytes = serde_json::to_vec(&entry)?;
        self.store
            .transact(&[&self.email_userid, &self.userid_emails], |t| {
                if let Some(owner) = t[0].get(email.as_bytes())?
                    && owner.as_ref() != user_id.as_bytes()
                {
                    return Err(abort(Error::ThreepidAuthFailed(
                        "this e-mail address cannot be added".into(),
                    )));
                }
                t[0].put(email.as_bytes(), user_id.as_bytes().to_vec())?;
                t[1].put(keys::pair(user_id.as_str(), email), bytes.clone())?;
                Ok(())
            })?;
        Ok(())
    }

    pub fn unbind(&self, user_id: &UserId, email: &str) -> Result<bool> {
        let email = normalize_email(email)?;
        let removed = self
            .store
            .transact(&[&self.email_userid, &self.userid_emails], |t| {
                let key = keys::pair(user_id.as_str(), &email);
                if t[1].get(&key)?.is_none() {
                    return Ok(false);
                }
                t[1].delete(&key)?;
                t[0].delete(email.as_bytes())?;
                Ok(true)
            })?;
        Ok(removed)
    }

    pub fn emails_of(&self, user_id: &UserId) -> Result<Vec<BoundEmail>> {
        let mut out = Vec::new();
        for item in self
            .userid_emails
            .scan_prefix(keys::prefix(user_id.as_str()))
        {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
