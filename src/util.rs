//! Small helpers shared by services: time, randomness, hashing, strict JSON.

use std::fmt;

use rand::Rng;
use rand::distributions::Alphanumeric;
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// A random string of ASCII letters and digits from the OS-seeded thread RNG.
pub fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::thread_rng().fill(&mut out[..]);
    out
}

pub fn sha256_hex(data: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(data.as_ref()))
}

/// Compares two byte strings in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses JSON like `serde_json::from_slice::<Value>`, except that an object with the same key
/// twice is refused (a data error, not a syntax error): which of the two values a reader would
/// see is ambiguous.
pub fn parse_json(raw: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice::<Strict>(raw).map(|Strict(value)| value)
}

/// A JSON object parsed with [`parse_json`] and deserialized into `T`.
pub fn from_json_object<T: DeserializeOwned>(raw: &[u8]) -> serde_json::Result<T> {
    match parse_json(raw)? {
        object @ Value::Object(_) => serde_json::from_value(object),
        _ => Err(de::Error::custom("expected a JSON object")),
    }
}

/// For `#[serde(deserialize_with)]`: a struct from a JSON object only. A derived `Deserialize`
/// also accepts an array of the fields in order, which no request means.
pub fn from_object<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    deserializer: D,
) -> Result<T, D::Error> {
    let object = Map::<String, Value>::deserialize(deserializer)?;
    serde_json::from_value(Value::Object(object)).map_err(de::Error::custom)
}

/// [`from_object`] for a list of structs.
pub fn from_objects<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    Vec::<Map<String, Value>>::deserialize(deserializer)?
        .into_iter()
        .map(|object| serde_json::from_value(Value::Object(object)).map_err(de::Error::custom))
        .collect()
}

/// A JSON value that refuses duplicate keys (see [`parse_json`]).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        let a = random_string(24);
        assert_eq!(a.len(), 24);
        assert_ne!(a, random_string(24));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(sha256_hex("").len(), 64);
    }

    #[test]
    fn strict_json() {
        let value = parse_json(br#"{"a":[1,-2,1.5,"s",null,true,{"b":{}}]}"#).unwrap();
        assert_eq!(
            value,
            serde_json::json!({ "a": [1, -2, 1.5, "s", null, true, { "b": {} }] })
        );
        let dup = parse_json(br#"{"a":{"b":1,"b":2}}"#).unwrap_err();
        assert!(dup.is_data(), "{dup}");
        assert!(parse_json(b"{").unwrap_err().is_eof());
        assert!(parse_json(&[b'['; 1000]).unwrap_err().is_syntax());

        #[derive(Deserialize, Debug)]
        struct Outer {
            #[serde(deserialize_with = "from_object")]
            inner: Inner,
        }
        #[derive(Deserialize, Debug, Default)]
        #[serde(default)]
        struct Inner {
            n: u8,
        }
        let ok: Outer = serde_json::from_str(r#"{"inner":{"n":1}}"#).unwrap();
        assert_eq!(ok.inner.n, 1);
        assert!(serde_json::from_str::<Outer>(r#"{"inner":[1]}"#).is_err());
        assert!(
            serde_json::from_str::<Inner>("[1]").is_ok(),
            "what from_object is for"
        );
    }
}
