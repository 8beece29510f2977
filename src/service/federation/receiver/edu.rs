//! The EDUs of a transaction: one dispatcher by `edu_type`. Each EDU is taken on its own: a
//! malformed or refused one is logged and skipped, and unknown types are ignored, as the
//! specification wants. EDUs have no answer.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::Peer;
use crate::error::{Error, Result};

/// An EDU as it comes, its content still raw.
#[derive(Deserialize)]
struct RawEdu {
    edu_type: String,
    content: Box<RawValue>,
}

impl Peer<'_> {
    /// Takes every EDU of a transaction, in order.
    pub async fn receive_edus(&self, edus: &[Box<RawValue>]) {
        for raw in edus {
            let edu = match serde_json::from_str::<RawEdu>(raw.get()) {
                Ok(edu) => edu,
                Err(e) => {
                    tracing::info!(origin = %self.origin, error = %e, "skipped a malformed EDU");
                    continue;
                }
            };
            if let Err(e) = self.receive_edu(&edu.edu_type, &edu.content).await {
                tracing::info!(
                    origin = %self.origin,
                    edu_type = %edu.edu_type,
                    error = %e,
                    "skipped an EDU"
                );
            }
        }
    }

    /// The dispatcher: one arm per EDU type this server takes.
    async fn receive_edu(&self, edu_type: &str, content: &RawValue) -> Result<()> {
        match edu_type {
            "m.typing" => self.receive_typing(parse(content)?).await,
            "m.receipt" => self.receive_receipts(parse(content)?).await,
            "m.presence" => self.receive_presence(parse(content)?).await,
            "m.device_list_update" => self.receive_device_list_update(parse(content)?).await,
            "m.signing_key_update" => self.receive_signing_key_update(parse(content)?).await,
            "m.direct_to_device" => self.receive_direct_to_device(parse(content)?).await,
            _ => Ok(()),
        }
    }

    /// EDUs speak for users of the server that sent them, and only for those.
    pub fn check_own_user(&self, user: &ruma::UserId) -> Result<()> {
        if user.server_name() == self.origin {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "{} may not speak for {user}",
                self.origin
            )))
        }
    }
}

/// An EDU's content as the type its `edu_type` names.
pub fn parse<T: DeserializeOwned>(content: &RawValue) -> Result<T> {
    serde_json::from_str(content.get()).map_err(|e| Error::BadJson(format!("the EDU content: {e}")))
}
