//! Checks on the keys other servers send us. A server may lie or be broken: device keys must
//! name the user and device they are filed under and carry the device's own valid signature;
//! cross-signing keys must name their user and usage, and a self-signing key must be signed by
//! the master key. What fails is left out (or the whole answer refused), never stored.

use ruma::UserId;
use serde_json::Value;

use crate::core::keys as checks;
use crate::error::{Error, Result};
use crate::service::keys::cross_signing::public_key;

/// The most devices one remote user may have in our cache or in an answer we take.
pub const MAX_DEVICES_PER_USER: usize = 1000;
/// The largest key object (device keys, a cross-signing key) we keep, serialized.
pub const MAX_KEY_OBJECT_BYTES: usize = 65_536;
/// The longest device ID we take from another server (as for logins).
pub const MAX_DEVICE_ID_BYTES: usize = 255;
/// The longest device display name we keep (as for local devices).
pub const MAX_DISPLAY_NAME_CHARS: usize = crate::service::devices::MAX_DISPLAY_NAME_LEN;

fn size_ok(object: &Value) -> Result<()> {
    if serde_json::to_vec(object)?.len() > MAX_KEY_OBJECT_BYTES {
        return Err(Error::TooLarge(format!(
            "a key object may not exceed {MAX_KEY_OBJECT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A device ID another server sent: 1 to [`MAX_DEVICE_ID_BYTES`] bytes.
pub fn device_id(device: &str) -> Result<()> {
    if device.is_empty() || device.len() > MAX_DEVICE_ID_BYTES {
        return Err(Error::InvalidParam(format!(
            "a device ID has 1 to {MAX_DEVICE_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A remote device's identity keys: owner, device and self-signature right, not too large.
pub fn device_keys(keys: &Value, user: &UserId, device: &str) -> Result<()> {
    device_id(device)?;
    size_ok(keys)?;
    checks::check_device_keys(keys, user.as_str(), device)
        .map_err(|e| Error::InvalidSignature(format!("device keys of {user} {device}: {}", e.0)))
}

/// A display name another server sent: kept only when not too long.
pub fn display_name(name: Option<String>) -> Option<String> {
    name.filter(|n| n.chars().count() <= MAX_DISPLAY_NAME_CHARS)
}

/// A remote user's master key: it names the user and the `master` usage and holds one ed25519
/// key. Answers its public key.
pub fn master_key(key: &Value, user: &UserId) -> Result<String> {
    size_ok(key)?;
    Ok(public_key(key, user, "master")?.1)
}

/// A remote user's self-signing key, which their master key must have signed.
pub fn self_signing_key(key: &Value, user: &UserId, master: &Value) -> Result<()> {
    size_ok(key)?;
    public_key(key, user, "self_signing")?;
    let (master_id, master_public) = public_key(master, user, "master")?;
    let signature = key
        .get("signatures")
        .and_then(|s| s.get(user.as_str()))
        .and_then(|s| s.get(&master_id))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Error::InvalidSignature(format!("the self-signing key of {user} is not signed"))
        })?;
    checks::verify(key, &master_public, signature)
        .map_err(|e| Error::InvalidSignature(format!("the self-signing key of {user}: {e}")))
}

/// The cross-signing keys of a remote user that pass the checks: the master key, and the
/// self-signing key when the master key signed it.
pub fn cross_signing_keys(
    user: &UserId,
    master: Option<Value>,
    self_signing: Option<Value>,
) -> (Option<Value>, Option<Value>) {
    let master = master.filter(|m| master_key(m, user).is_ok());
    let self_signing = match &master {
        Some(master) => self_signing.filter(|s| self_signing_key(s, user, master).is_ok()),
        None => None,
    };
    (master, self_signing)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unsigned_or_mislabelled_keys_are_refused() {
        let user = ruma::user_id!("@a:x");
        let keys = json!({
            "user_id": "@a:x", "device_id": "D", "algorithms": [],
            "keys": { "ed25519:D": "AAAA" }, "signatures": {},
        });
        assert!(device_keys(&keys, user, "D").is_err());
        assert!(device_keys(&json!("nope"), user, "D").is_err());
        assert!(device_id("").is_err());
        assert!(device_id(&"d".repeat(256)).is_err());
        let big = json!({ "pad": "x".repeat(MAX_KEY_OBJECT_BYTES) });
        assert!(matches!(
            device_keys(&big, user, "D"),
            Err(Error::TooLarge(_))
        ));
        let master =
            json!({ "user_id": "@b:x", "usage": ["master"], "keys": { "ed25519:K": "K" } });
        assert!(master_key(&master, user).is_err());
        let master =
            json!({ "user_id": "@a:x", "usage": ["master"], "keys": { "ed25519:K": "K" } });
        assert_eq!(master_key(&master, user).unwrap(), "K");
        let ssk =
            json!({ "user_id": "@a:x", "usage": ["self_signing"], "keys": { "ed25519:S": "S" } });
        assert!(self_signing_key(&ssk, user, &master).is_err());
        assert_eq!(
            cross_signing_keys(user, Some(master.clone()), Some(ssk)),
            (Some(master), None)
        );
        assert_eq!(display_name(Some("x".repeat(257))), None);
        assert_eq!(display_name(Some("phone".into())).as_deref(), Some("phone"));
    }
}
