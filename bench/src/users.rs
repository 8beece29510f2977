//! Registering the tool's own users: user-interactive auth with `m.login.dummy` or
//! `m.login.registration_token`, or Synapse's shared-secret admin registration.

use anyhow::{Context, Result, anyhow, bail};
use hmac::{KeyInit, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{Api, describe, v3};

/// The password of every user the tool registers.
pub const PASSWORD: &str = "roost-bench password";
/// The display name of the device each registration logs in.
const DEVICE_NAME: &str = "roost-bench";
/// Registration stages completed at most per user (a flow of a few stages, plus the first try).
const MAX_UIA_ROUNDS: usize = 5;

/// A registered user with an access token.
#[derive(Clone, Debug)]
pub struct User {
    pub user_id: String,
    pub access_token: String,
}

/// How the tool registers users.
#[derive(Clone, Debug)]
pub enum Registration {
    /// `POST /register` completing the `m.login.dummy` stage (open registration).
    Dummy,
    /// `POST /register` completing `m.login.registration_token` with this token.
    Token(String),
    /// Synapse's `/_synapse/admin/v1/register` with this `registration_shared_secret`.
    SharedSecret(String),
}

/// Registers `localpart` with `password`.
pub async fn register(
    api: &Api,
    how: &Registration,
    localpart: &str,
    password: &str,
) -> Result<User> {
    match how {
        Registration::Dummy => register_uia(api, None, localpart, password).await,
        Registration::Token(token) => register_uia(api, Some(token), localpart, password).await,
        Registration::SharedSecret(secret) => {
            register_shared_secret(api, secret, localpart, password).await
        }
    }
    .with_context(|| format!("registering {localpart}"))
}

async fn register_uia(
    api: &Api,
    registration_token: Option<&str>,
    localpart: &str,
    password: &str,
) -> Result<User> {
    let path = v3("/register");
    let mut body = json!({
        "username": localpart,
        "password": password,
        "initial_device_display_name": DEVICE_NAME,
    });
    for _ in 0..MAX_UIA_ROUNDS {
        let (status, reply) = api
            .request(reqwest::Method::POST, &path, None, Some(&body))
            .await?;
        if status.is_success() {
            return user_from(&reply);
        }
        if status != StatusCode::UNAUTHORIZED || reply.get("flows").is_none() {
            bail!("POST {path} answered {}", describe(status, &reply));
        }
        let stage = next_stage(&reply, registration_token.is_some())?;
        let mut auth = json!({ "type": stage });
        if let Some(session) = reply.get("session") {
            auth["session"] = session.clone();
        }
        if stage == "m.login.registration_token" {
            auth["token"] = json!(registration_token);
        }
        body["auth"] = auth;
    }
    bail!("registration did not complete after {MAX_UIA_ROUNDS} rounds")
}

/// The next stage to complete: from the first offered flow made only of stages the tool can do,
/// its first stage not yet completed.
fn next_stage(reply: &Value, have_token: bool) -> Result<String> {
    let can_do = |stage: &str| {
        stage == "m.login.dummy" || (have_token && stage == "m.login.registration_token")
    };
    let completed: Vec<&str> = reply["completed"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let flows = reply["flows"].as_array().cloned().unwrap_or_default();
    for flow in &flows {
        let stages: Vec<&str> = flow["stages"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !stages.is_empty()
            && stages.iter().all(|s| can_do(s))
            && let Some(stage) = stages.iter().find(|s| !completed.contains(s))
        {
            return Ok((*stage).to_owned());
        }
    }
    Err(anyhow!(
        "no registration flow this tool can complete (the server offers {}); \
         give --registration-token or --shared-secret",
        Value::Array(flows)
    ))
}

async fn register_shared_secret(
    api: &Api,
    secret: &str,
    localpart: &str,
    password: &str,
) -> Result<User> {
    let path = "/_synapse/admin/v1/register";
    let nonce_reply = api.get(path, None).await?;
    let nonce = nonce_reply["nonce"]
        .as_str()
        .ok_or_else(|| anyhow!("GET {path} answered no nonce: {nonce_reply}"))?;
    let reply = api
        .post(
            path,
            None,
            &json!({
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": false,
                "mac": shared_secret_mac(secret, nonce, localpart, password)?,
            }),
        )
        .await?;
    user_from(&reply)
}

/// Synapse's registration MAC: hex HMAC-SHA1 over `nonce\0user\0password\0notadmin`.
fn shared_secret_mac(secret: &str, nonce: &str, user: &str, password: &str) -> Result<String> {
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
        .map_err(|e| anyhow!("shared secret unusable as an HMAC key: {e}"))?;
    for (i, part) in [nonce, user, password, "notadmin"].iter().enumerate() {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part.as_bytes());
    }
    Ok(mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn user_from(reply: &Value) -> Result<User> {
    let field = |name: &str| {
        reply[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("registration answer without {name}: {reply}"))
    };
    Ok(User {
        user_id: field("user_id")?,
        access_token: field("access_token")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_matches_synapse_example() {
        // HMAC-SHA1("secret", "abc\0alice\0pw\0notadmin"), computed with Python's hmac module.
        let mac = shared_secret_mac("secret", "abc", "alice", "pw").unwrap();
        assert_eq!(mac.len(), 40);
        assert_eq!(mac, "42e32623fe124933c326f9d2d67ff7c617915a10");
    }

    #[test]
    fn picks_a_flow_the_tool_can_complete() {
        let reply = json!({
            "session": "s",
            "flows": [{"stages": ["m.login.email.identity"]}, {"stages": ["m.login.dummy"]}],
        });
        assert_eq!(next_stage(&reply, false).unwrap(), "m.login.dummy");
        let token_only = json!({"flows": [{"stages": ["m.login.registration_token"]}]});
        assert!(next_stage(&token_only, false).is_err());
        assert_eq!(
            next_stage(&token_only, true).unwrap(),
            "m.login.registration_token"
        );
    }
}
