//! End-to-end encryption keys as the server sees them: checking uploaded device keys (owner,
//! device, self-signature) and one-time or fallback key IDs. The server never holds private keys;
//! it checks shapes and signatures and hands public keys on.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ruma::CanonicalJsonObject;
use serde_json::Value;

/// Unpadded standard base64 as Matrix writes it (padded input is accepted too).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The longest key ID (`<algorithm>:<id>`) accepted.
pub const MAX_KEY_ID_BYTES: usize = 255;

/// Why uploaded keys were refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// Checks uploaded device keys: an object naming `user_id` and `device_id` (those of the
/// uploader), with `algorithms`, `keys` holding `ed25519:<device_id>`, and a valid signature by
/// that key under `signatures.<user_id>.ed25519:<device_id>`.
pub fn check_device_keys(keys: &Value, user_id: &str, device_id: &str) -> Result<(), Invalid> {
    let object = keys
        .as_object()
        .ok_or_else(|| invalid("device_keys must be an object"))?;
    if object.get("user_id").and_then(Value::as_str) != Some(user_id) {
        return Err(invalid(
            "device_keys.user_id must be the uploader's user ID",
        ));
    }
    if object.get("device_id").and_then(Value::as_str) != Some(device_id) {
        return Err(invalid(
            "device_keys.device_id must be the uploader's device",
        ));
    }
    let algorithms = object
        .get("algorithms")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("device_keys.algorithms must be an array"))?;
    if algorithms.iter().any(|a| !a.is_string()) {
        return Err(invalid("device_keys.algorithms must hold strings"));
    }
    let key_map = object
        .get("keys")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("device_keys.keys must be an object"))?;
    if key_map.values().any(|k| !k.is_string()) {
        return Err(invalid("device_keys.keys must map key IDs to strings"));
    }
    let signing_key_id = format!("ed25519:{device_id}");
    let public_key = key_map
        .get(&signing_key_id)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("device_keys.keys needs {signing_key_id}")))?;
    let signature = object
        .get("signatures")
        .and_then(|s| s.get(user_id))
        .and_then(|s| s.get(&signing_key_id))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("device_keys must be signed by the device's ed25519 key"))?;
    verify(keys, public_key, signature).map_err(|e| invalid(format!("device_keys signature: {e}")))
}

/// Verifies an ed25519 signature over the canonical form of `object` (without `signatures` and
/// `unsigned`).
pub fn verify(object: &Value, public_key: &str, signature: &str) -> Result<(), String> {
    let public_key = BASE64
        .decode(public_key)
        .map_err(|_| "the public key is not base64".to_owned())?;
    let signature = BASE64
        .decode(signature)
        .map_err(|_| "the signature is not base64".to_owned())?;
    let canonical: CanonicalJsonObject =
        serde_json::from_value(object.clone()).map_err(|e| format!("not canonical JSON: {e}"))?;
    let bytes = ruma::signatures::to_canonical_json_string_for_signing(&canonical)
        .map_err(|e| e.to_string())?;
    ruma::signatures::verify_canonical_json_bytes(
        &ruma::SigningKeyAlgorithm::Ed25519,
        &public_key,
        &signature,
        bytes.as_bytes(),
    )
    .map_err(|_| "the signature does not verify".to_owned())
}

/// Splits a one-time or fallback key ID `<algorithm>:<id>` into its parts.
pub fn split_key_id(key_id: &str) -> Result<(&str, &str), Invalid> {
    if key_id.len() > MAX_KEY_ID_BYTES {
        return Err(invalid("key IDs are at most 255 bytes"));
    }
    match key_id.split_once(':') {
        Some((algorithm, id))
            if !algorithm.is_empty()
                && !id.is_empty()
                && !key_id.contains(char::is_control)
                && !key_id.contains('\u{ff}') =>
        {
            Ok((algorithm, id))
        }
        _ => Err(invalid(format!(
            "{key_id:?} is not a key ID of the form <algorithm>:<id>"
        ))),
    }
}

/// Checks a one-time or fallback key: a string, or an object with a string `key`.
pub fn check_one_time_key(key_id: &str, key: &Value) -> Result<(), Invalid> {
    split_key_id(key_id)?;
    let ok = match key {
        Value::String(_) => true,
        Value::Object(o) => o.get("key").is_some_and(Value::is_string),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{key_id}: a key is a string or an object with a string key"
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ruma::signatures::Ed25519KeyPair;
    use serde_json::json;

    /// Device keys for `user`/`device`, signed by a new device key.
    pub(crate) fn signed_device_keys(user: &str, device: &str) -> Value {
        let der = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&der, device.to_owned()).unwrap();
        let keys = json!({
            "user_id": user,
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                format!("curve25519:{device}"): "curve",
                format!("ed25519:{device}"): BASE64.encode(pair.public_key()),
            },
        });
        let mut object: CanonicalJsonObject = serde_json::from_value(keys).unwrap();
        ruma::signatures::sign_json(user, &pair, &mut object).unwrap();
        serde_json::to_value(object).unwrap()
    }

    #[test]
    fn device_keys_are_checked() {
        let keys = signed_device_keys("@a:x", "DEV");
        assert_eq!(check_device_keys(&keys, "@a:x", "DEV"), Ok(()));
        // Unsigned additions do not matter.
        let mut with_unsigned = keys.clone();
        with_unsigned["unsigned"] = json!({ "device_display_name": "phone" });
        assert_eq!(check_device_keys(&with_unsigned, "@a:x", "DEV"), Ok(()));
        assert!(check_device_keys(&keys, "@b:x", "DEV").is_err());
        assert!(check_device_keys(&keys, "@a:x", "OTHER").is_err());
        let mut tampered = keys.clone();
        tampered["keys"]["curve25519:DEV"] = json!("other");
        assert!(check_device_keys(&tampered, "@a:x", "DEV").is_err());
        let mut unsigned = keys.clone();
        unsigned["signatures"] = json!({});
        assert!(check_device_keys(&unsigned, "@a:x", "DEV").is_err());
        assert!(check_device_keys(&json!([]), "@a:x", "DEV").is_err());
    }

    #[test]
    fn key_ids_and_keys() {
        assert_eq!(
            split_key_id("signed_curve25519:AAAA"),
            Ok(("signed_curve25519", "AAAA"))
        );
        for bad in ["nocolon", ":id", "alg:", "a:\u{0}"] {
            assert!(split_key_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_one_time_key("curve25519:A", &json!("k")).is_ok());
        assert!(check_one_time_key("signed_curve25519:A", &json!({ "key": "k" })).is_ok());
        assert!(check_one_time_key("signed_curve25519:A", &json!({ "key": 1 })).is_err());
        assert!(check_one_time_key("signed_curve25519:A", &json!(1)).is_err());
    }
}
