//! `GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=`: a space and its children,
//! as the asking server may see them (`service::federation::hierarchy`).

use axum::Json;
use axum::extract::{RawQuery, State};
use serde_json::Value;

use super::auth::Signed;
use crate::api::extract::{AppState, Path, parse_room_id};
use crate::error::{Error, Result};

/// The `suggested_only` parameter: `true` or `false` (absent: `false`).
fn suggested_only(raw: Option<&str>) -> Result<bool> {
    let mut suggested = false;
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if key == "suggested_only" {
            suggested = match value.as_ref() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(Error::InvalidParam(
                        "suggested_only must be true or false".into(),
                    ));
                }
            };
        }
    }
    Ok(suggested)
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}`
pub async fn hierarchy(
    State(state): State<AppState>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    signed: Signed,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let suggested = suggested_only(query.as_deref())?;
    state
        .federation_hierarchy(&signed.origin, &room_id, suggested)
        .map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggested_only_is_a_boolean() {
        assert!(!suggested_only(None).unwrap());
        assert!(suggested_only(Some("suggested_only=true")).unwrap());
        assert!(suggested_only(Some("suggested_only=1")).is_err());
    }
}
