//! Client `/keys/claim` for devices of users of other servers: one `POST /user/keys/claim` per
//! server, all at once, each within the client's `timeout`; a server that fails or does not
//! answer in time is listed in `failures`. Of the answer, only keys of the devices asked for,
//! of the algorithm asked for, and shaped like keys are passed on (one per device).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use ruma::{OwnedServerName, OwnedUserId};
use serde_json::{Map, Value, json};

use super::remote_query::failure;
use crate::core::keys as checks;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::request::Limit;

/// What a client's claim asks of remote users: user → device → algorithm.
pub type Claim = BTreeMap<OwnedUserId, BTreeMap<String, String>>;

/// The keys claimed from users of other servers.
#[derive(Debug, Default)]
pub struct RemoteClaimed {
    /// User → device → `{<algorithm>:<key id>: key}`.
    pub one_time_keys: Map<String, Value>,
    /// Server name → why it could not be asked.
    pub failures: Map<String, Value>,
}

/// The keys in a `/user/keys/claim` answer for what was asked, checked.
pub fn parse_claim_answer(asked: &Claim, answer: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for (user, devices) in asked {
        let mut for_user = Map::new();
        for (device, algorithm) in devices {
            let Some(keys) = answer
                .get("one_time_keys")
                .and_then(|k| k.get(user.as_str()))
                .and_then(|k| k.get(device))
                .and_then(Value::as_object)
            else {
                continue;
            };
            let found = keys.iter().find(|(key_id, key)| {
                checks::check_one_time_key(key_id, key).is_ok()
                    && checks::split_key_id(key_id).is_ok_and(|(a, _)| a == algorithm)
            });
            if let Some((key_id, key)) = found {
                for_user.insert(device.clone(), json!({ key_id: key }));
            }
        }
        if !for_user.is_empty() {
            out.insert(user.to_string(), Value::Object(for_user));
        }
    }
    out
}

impl Services {
    /// Claims keys of devices of users of other servers, each server within `timeout`.
    pub async fn claim_remote_keys(&self, claim: Claim, timeout: Duration) -> RemoteClaimed {
        let mut by_server: BTreeMap<OwnedServerName, Claim> = BTreeMap::new();
        for (user, devices) in claim {
            by_server
                .entry(user.server_name().to_owned())
                .or_default()
                .insert(user, devices);
        }
        let answers = join_all(by_server.into_iter().map(|(server, asked)| async move {
            let body = json!({ "one_time_keys": asked });
            let request = self.federation.post(
                &server,
                "/_matrix/federation/v1/user/keys/claim",
                &body,
                Limit::Small,
            );
            let answer = match tokio::time::timeout(timeout, request).await {
                Ok(answer) => answer,
                Err(_) => Err(Error::Unreachable(format!(
                    "{server} did not answer in time"
                ))),
            };
            (
                server,
                answer.map(|answer| parse_claim_answer(&asked, &answer)),
            )
        }))
        .await;
        let mut out = RemoteClaimed::default();
        for (server, answer) in answers {
            match answer {
                Ok(keys) => out.one_time_keys.extend(keys),
                Err(e) => {
                    tracing::info!(%server, error = %e, "a server could not be asked for one-time keys");
                    out.failures.insert(server.to_string(), failure(&e));
                }
            }
        }
        out
    }
}

/// Checks a claim's remote part before anything is asked.
pub fn check_claim(claim: &Claim) -> Result<()> {
    super::local_keys::check_algorithms(claim.values().flat_map(BTreeMap::values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_asked_for_pass() {
        let asked: Claim =
            serde_json::from_value(json!({ "@a:x": { "D": "signed_curve25519" } })).unwrap();
        let answer = json!({ "one_time_keys": {
            "@a:x": {
                "D": { "curve25519:1": "k", "signed_curve25519:2": { "key": "k2", "signatures": {} } },
                "OTHER": { "signed_curve25519:3": "k3" },
            },
            "@b:x": { "D": { "signed_curve25519:4": "k4" } },
        } });
        let keys = parse_claim_answer(&asked, &answer);
        assert_eq!(
            Value::Object(keys),
            json!({ "@a:x": { "D": { "signed_curve25519:2": { "key": "k2", "signatures": {} } } } })
        );
        let bad = json!({ "one_time_keys": { "@a:x": { "D": { "signed_curve25519:5": 7 } } } });
        assert!(parse_claim_answer(&asked, &bad).is_empty());
        assert!(parse_claim_answer(&asked, &json!(null)).is_empty());
    }
}
