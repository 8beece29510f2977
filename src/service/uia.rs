//! User-interactive authentication: sessions, stages and flows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::UserId;
use serde_json::{Value, json};

use super::Services;
use super::ratelimit::Limit;
use super::threepid::Purpose;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::util::random_string;

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";
pub const EMAIL: &str = "m.login.email.identity";
/// A TOTP or recovery code: asked after the password when the user has two-factor login on.
pub const TOTP: &str = "org.roost.login.totp";

#[derive(Debug, Clone, Default)]
struct Session {
    /// What the session authorises ("register", "deactivate", ...): a session cannot be reused
    /// for another operation or another user.
    purpose: String,
    user: Option<String>,
    completed: Vec<String>,
    email: Option<String>,
    registration_token: Option<String>,
    expires: Option<Instant>,
}

/// What the completed stages established.
#[derive(Debug, Default)]
pub struct Completed {
    pub email: Option<String>,
    pub registration_token: Option<String>,
}

/// One UIA-protected request.
pub struct UiaRequest<'a> {
    pub purpose: &'static str,
    pub flows: Vec<Vec<&'static str>>,
    /// The `auth` object of the request body.
    pub auth: Option<&'a Value>,
    /// The user the operation acts for, when known (logged-in operations).
    pub user: Option<&'a UserId>,
    /// For e-mail stages: what the validation must have been for.
    pub email_purpose: Purpose,
}

pub struct Uia {
    lifetime: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Uia {
    pub fn new(config: &Config) -> Self {
        Self {
            lifetime: Duration::from_secs(config.auth.uia_session_lifetime_secs),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Session>>> {
        self.sessions
            .lock()
            .map_err(|_| Error::internal("lock poisoned"))
    }

    fn challenge(
        session_id: &str,
        flows: &[Vec<&'static str>],
        completed: &[String],
        failure: Option<&Error>,
    ) -> Error {
        let mut body = json!({
            "session": session_id,
            "flows": flows.iter().map(|f| json!({ "stages": f })).collect::<Vec<_>>(),
            "params": {},
            "completed": completed,
        });
        if let Some(e) = failure {
            let inner = e.body();
            body["errcode"] = inner["errcode"].clone();
            body["error"] = inner["error"].clone();
        }
        Error::Uiaa(Box::new(body))
    }
}

impl Services {
    /// User-interactive auth that asks a logged-in user for their password, and for a second
    /// factor when two-factor login is on.
    pub async fn confirm_with_password(
        &self,
        purpose: &'static str,
        user: &UserId,
        auth: Option<&Value>,
    ) -> Result<()> {
        let flow = if self.mfa.is_enabled(user)? {
            vec![PASSWORD, TOTP]
        } else {
            vec![PASSWORD]
        };
        self.user_interactive_auth(UiaRequest {
            purpose,
            flows: vec![flow],
            auth,
            user: Some(user),
            email_purpose: Purpose::PasswordReset,
        })
        .await
        .map(|_| ())
    }

    /// Runs one round of user-interactive auth: `Ok` once a flow is complete, otherwise the 401
    /// challenge (with the error of a failed stage).
    pub async fn user_interactive_auth(&self, request: UiaRequest<'_>) -> Result<Completed> {
        let uia = &self.uia;
        let auth = request.auth.filter(|a| a.is_object());
        let given_session = auth
            .and_then(|a| a.get("session"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let now = Instant::now();
        let session_id = {
            let mut sessions = uia.lock()?;
            sessions.retain(|_, s| s.expires.is_none_or(|e| e > now));
            match &given_session {
                Some(id) => {
                    let s = sessions.get(id).ok_or_else(|| {
                        Error::InvalidParam("unknown user-interactive auth session".into())
                    })?;
                    if s.purpose != request.purpose
                        || s.user.as_deref() != request.user.map(UserId::as_str)
                    {
                        return Err(Error::InvalidParam(
                            "the auth session belongs to another request".into(),
                        ));
                    }
                    id.clone()
                }
                None => {
                    let id = random_string(24);
                    sessions.insert(
                        id.clone(),
                        Session {
                            purpose: request.purpose.to_owned(),
                            user: request.user.map(|u| u.to_string()),
                            expires: Some(now + uia.lifetime),
                            ..Session::default()
                        },
                    );
                    id
                }
            }
        };

        let stage = auth.and_then(|a| a.get("type")).and_then(Value::as_str);
        let mut failure = None;
        if let (Some(auth), Some(stage)) = (auth, stage) {
            match self.check_stage(&request, stage, auth).await {
                Ok(outcome) => {
                    let mut sessions = uia.lock()?;
                    if let Some(s) = sessions.get_mut(&session_id) {
                        if !s.completed.iter().any(|c| c == stage) {
                            s.completed.push(stage.to_owned());
                        }
                        if outcome.email.is_some() {
                            s.email = outcome.email;
                        }
                        if outcome.registration_token.is_some() {
                            s.registration_token = outcome.registration_token;
                        }
                    }
                }
                Err(e @ Error::LimitExceeded { .. }) => return Err(e),
                Err(e) => failure = Some(e),
            }
        }

        let mut sessions = uia.lock()?;
        let session = sessions
            .get(&session_id)
            .cloned()
            .ok_or_else(|| Error::InvalidParam("unknown user-interactive auth session".into()))?;
        let done = request.flows.iter().any(|flow| {
            flow.iter()
                .all(|st| session.completed.iter().any(|c| c == st))
        });
        if done && failure.is_none() {
            sessions.remove(&session_id);
            return Ok(Completed {
                email: session.email,
                registration_token: session.registration_token,
            });
        }
        Err(Uia::challenge(
            &session_id,
            &request.flows,
            &session.completed,
            failure.as_ref(),
        ))
    }

    async fn check_stage(
        &self,
        request: &UiaRequest<'_>,
        stage: &str,
        auth: &Value,
    ) -> Result<Completed> {
        if !request.flows.iter().any(|f| f.contains(&stage)) {
            return Err(Error::InvalidParam(format!(
                "the stage {stage} is not offered"
            )));
        }
        let field = |name: &str| auth.get(name).and_then(Value::as_str);
        match stage {
            DUMMY => Ok(Completed::default()),
            PASSWORD => {
                let user = request
                    .user
                    .ok_or_else(|| Error::Forbidden("no user to check the password of".into()))?;
                let claimed = auth
                    .get("identifier")
                    .and_then(|i| i.get("user"))
                    .and_then(Value::as_str)
                    .or_else(|| field("user"));
                if let Some(claimed) = claimed
                    && self.accounts.user_id_for_login(claimed)? != user
                {
                    return Err(Error::Forbidden(
                        "the identifier is not your account".into(),
                    ));
                }
                self.rate_limits
                    .check(Limit::LoginPerAccount, user.as_str())?;
                let password = field("password")
                    .ok_or_else(|| Error::MissingParam("password is required".into()))?;
                if self.accounts.check_password(user, password).await? {
                    Ok(Completed::default())
                } else {
                    Err(Error::Forbidden("invalid password".into()))
                }
            }
            REGISTRATION_TOKEN => {
                let token = field("token")
                    .ok_or_else(|| Error::MissingParam("token is required".into()))?;
                if self.regtokens.is_valid(token)? {
                    Ok(Completed {
                        registration_token: Some(token.to_owned()),
                        ..Completed::default()
                    })
                } else {
                    Err(Error::Unauthorized("invalid registration token".into()))
                }
            }
            TOTP => {
                let user = request
                    .user
                    .ok_or_else(|| Error::Forbidden("no user to check the code of".into()))?;
                self.rate_limits
                    .check(Limit::TotpPerAccount, user.as_str())?;
                let code =
                    field("code").ok_or_else(|| Error::MissingParam("code is required".into()))?;
                if self.mfa.verify(user, code).await? {
                    Ok(Completed::default())
                } else {
                    Err(Error::Forbidden("invalid or already used code".into()))
                }
            }
            EMAIL => {
                let creds = auth
                    .get("threepid_creds")
                    .or_else(|| auth.get("threepidCreds"))
                    .ok_or_else(|| Error::MissingParam("threepid_creds is required".into()))?;
                let sid = creds.get("sid").and_then(Value::as_str);
                let secret = creds.get("client_secret").and_then(Value::as_str);
                let (Some(sid), Some(secret)) = (sid, secret) else {
                    return Err(Error::MissingParam(
                        "sid and client_secret are required".into(),
                    ));
                };
                let email = self
                    .threepids
                    .take_validated(sid, secret, request.email_purpose)?;
                Ok(Completed {
                    email: Some(email),
                    ..Completed::default()
                })
            }
            other => Err(Error::InvalidParam(format!("unsupported stage {other}"))),
        }
    }
}
