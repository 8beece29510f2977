//! Login sessions and their tokens.
//!
//! An access token is a JWT (HS256) naming the user, the device and a session record. A token is
//! accepted only while its signature, its expiry *and* its session record are good, so deleting the
//! record (logout, password change, device deletion, deactivation) revokes it at once, expired or
//! not. Refresh tokens are random, stored hashed in the session record, single-use, and rotate.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, abort, trees};
use crate::util::{constant_time_eq, now_ms, now_secs, random_string, sha256_hex};

const JWT_SECRET_KEY: &[u8] = b"jwt_secret";
const REFRESH_PREFIX: &str = "roost_rt_";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: String,
    pub device_id: String,
    pub created_ts: u64,
    /// sha256 of the current refresh token.
    pub refresh_hash: Option<String>,
    pub refresh_expires_ts: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user ID.
    pub sub: String,
    /// The device ID.
    pub dev: String,
    /// The session ID.
    pub sid: String,
    pub iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

/// The tokens handed to a client at login, registration or refresh.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in_ms: Option<u64>,
}

/// Who a request acts for.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub session_id: String,
    /// When the access token stops being accepted (its JWT `exp`, seconds since the epoch), if
    /// ever: a connection that outlives the request (the chat stream) ends then.
    pub expires_at_secs: Option<u64>,
}

pub struct Sessions {
    store: Store,
    pub(crate) tree: Tree,
    encoding: EncodingKey,
    decoding: DecodingKey,
    access_lifetime_secs: u64,
    non_refreshable_lifetime_secs: u64,
    refresh_lifetime_ms: u64,
}

impl Sessions {
    pub fn new(store: &Store, config: &Config) -> Result<Self> {
        let secret = match &config.auth.jwt_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                let meta = store.tree(trees::META)?;
                match meta.get(JWT_SECRET_KEY)? {
                    Some(s) => s.to_vec(),
                    None => {
                        let s = random_string(64).into_bytes();
                        meta.put(JWT_SECRET_KEY, s.clone())?;
                        store.flush_blocking()?;
                        s
                    }
                }
            }
        };
        Ok(Self {
            store: store.clone(),
            tree: store.tree(trees::SESSIONID_SESSION)?,
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            access_lifetime_secs: config.auth.access_token_lifetime_secs,
            non_refreshable_lifetime_secs: config.auth.non_refreshable_token_lifetime_secs,
            refresh_lifetime_ms: config.auth.refresh_token_lifetime_secs * 1000,
        })
    }

    pub fn new_session_id() -> String {
        random_string(24)
    }

    /// A new session record with a fresh refresh token when `refreshable`.
    pub fn new_session(
        &self,
        user_id: &UserId,
        device_id: &str,
        session_id: &str,
        refreshable: bool,
    ) -> Result<(Session, IssuedTokens)> {
        let refresh_token =
            refreshable.then(|| format!("{REFRESH_PREFIX}{session_id}_{}", random_string(40)));
        let session = Session {
            user_id: user_id.to_string(),
            device_id: device_id.to_owned(),
            created_ts: now_ms(),
            refresh_hash: refresh_token.as_ref().map(sha256_hex),
            refresh_expires_ts: refresh_token
                .as_ref()
                .map(|_| now_ms() + self.refresh_lifetime_ms),
        };
        let tokens =
            self.access_token(user_id, device_id, session_id, refreshable, refresh_token)?;
        Ok((session, tokens))
    }

    fn access_token(
        &self,
        user_id: &UserId,
        device_id: &str,
        session_id: &str,
        refreshable: bool,
        refresh_token: Option<String>,
    ) -> Result<IssuedTokens> {
        let lifetime = if refreshable {
            Some(self.access_lifetime_secs)
        } else {
            Some(self.non_refreshable_lifetime_secs).filter(|s| *s > 0)
        };
        let iat = now_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            dev: device_id.to_owned(),
            sid: session_id.to_owned(),
            iat,
            exp: lifetime.map(|l| iat + l),
        };
        let access_token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
                .map_err(Error::internal)?;
        Ok(IssuedTokens {
            access_token,
            refresh_token,
            expires_in_ms: lifetime.map(|l| l * 1000),
        })
    }

    pub fn get(&self, session_id: &str) -> Result<Option<Session>> {
        match self.tree.get(session_id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// Checks an access token: signature, expiry, and that its session still exists.
    pub fn authenticate(&self, token: &str) -> Result<Authed> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.leeway = 0;
        let unknown = |soft_logout: bool, message: &str| Error::UnknownToken {
            message: message.into(),
            soft_logout,
        };
        let claims = match jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation) {
            Ok(data) => data.claims,
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                // Expired but genuine: the client may refresh if its session lives on.
                let mut lax = validation.clone();
                lax.validate_exp = false;
                let live = jsonwebtoken::decode::<Claims>(token, &self.decoding, &lax)
                    .ok()
                    .map(|d| self.get(&d.claims.sid))
                    .transpose()?
                    .flatten()
                    .is_some();
                return Err(unknown(live, "the access token has expired"));
            }
            Err(_) => return Err(unknown(false, "unrecognised access token")),
        };
        let Some(session) = self.get(&claims.sid)? else {
            return Err(unknown(false, "the access token has been revoked"));
        };
        if session.user_id != claims.sub || session.device_id != claims.dev {
            return Err(unknown(false, "unrecognised access token"));
        }
        let user_id =
            UserId::parse(&claims.sub).map_err(|_| unknown(false, "unrecognised access token"))?;
        Ok(Authed {
            user_id,
            device_id: claims.dev,
            session_id: claims.sid,
            expires_at_secs: claims.exp,
        })
    }

    /// Exchanges a refresh token for new tokens; the old refresh token stops working at once.
    pub async fn refresh(&self, refresh_token: &str) -> Result<IssuedTokens> {
        let unknown = || Error::UnknownToken {
            message: "unknown refresh token".into(),
            soft_logout: false,
        };
        let rest = refresh_token
            .strip_prefix(REFRESH_PREFIX)
            .ok_or_else(unknown)?;
        let (sid, _) = rest.split_once('_').ok_or_else(unknown)?;
        let presented = sha256_hex(refresh_token);
        let new_refresh = format!("{REFRESH_PREFIX}{sid}_{}", random_string(40));
        let new_hash = sha256_hex(&new_refresh);
        let new_expiry = now_ms() + self.refresh_lifetime_ms;
        let session = self.store.transact(&[&self.tree], |t| {
            let Some(raw) = t[0].get(sid.as_bytes())? else {
                return Err(abort(unknown()));
            };
            let mut session: Session =
                serde_json::from_slice(&raw).map_err(|e| abort(Error::from(e)))?;
            let matches = session
                .refresh_hash
                .as_deref()
                .is_some_and(|h| constant_time_eq(h.as_bytes(), presented.as_bytes()));
            let live = session.refresh_expires_ts.is_some_and(|e| e > now_ms());
            if !matches || !live {
                return Err(abort(unknown()));
            }
            session.refresh_hash = Some(new_hash.clone());
            session.refresh_expires_ts = Some(new_expiry);
            let bytes = serde_json::to_vec(&session).map_err(|e| abort(Error::internal(e)))?;
            t[0].put(sid.as_bytes(), bytes)?;
            Ok(session)
        })?;
        self.store.durable().await?;
        let user_id = UserId::parse(&session.user_id).map_err(Error::internal)?;
        self.access_token(&user_id, &session.device_id, sid, true, Some(new_refresh))
    }
}
