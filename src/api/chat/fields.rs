//! Helpers for the fields of Chat API request bodies that every module reads the same way.

use serde::{Deserialize, Deserializer};

/// For `#[serde(default, deserialize_with = "nullable")]` on an `Option<Option<T>>`: tells a
/// field given as `null` (`Some(None)`, "clear it") from one left out (`None`, "leave it as
/// it is"), which plain `Option<T>` cannot.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
