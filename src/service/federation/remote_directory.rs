//! Other servers' published room directories for our clients (`/publicRooms?server=<name>`):
//! `GET /_matrix/federation/v1/publicRooms` for a plain listing, `POST` for a filtered one.
//!
//! The answer is checked before a client sees it: `chunk` must be an array; each entry is parsed
//! with ruma's `PublicRoomsChunk` and rebuilt from the parsed fields (malformed entries are
//! dropped, at most the page size asked for is kept); the pagination tokens are passed on only
//! when they are reasonable strings, the room count only when it is a number.

use ruma::ServerName;
use ruma::directory::PublicRoomsChunk;
use serde_json::{Map, Value, json};

use super::Federation;
use super::request::Limit;
use crate::error::{Error, Result};
use crate::service::rooms::alias::RoomSummary;

/// The longest pagination token of another server passed on to a client.
const MAX_TOKEN_BYTES: usize = 1024;

/// What a client asks of another server's directory.
#[derive(Debug, Clone, Default)]
pub struct RemoteDirectoryRequest {
    /// At most this many rooms (already capped by the caller).
    pub limit: usize,
    /// The other server's pagination token.
    pub since: Option<String>,
    /// `Some` for a filtered request (`POST`), `None` for a plain listing (`GET`).
    pub filter: Option<DirectoryFilter>,
    pub include_all_networks: Option<bool>,
    pub third_party_instance_id: Option<String>,
}

/// The filter of a `POST /publicRooms`.
#[derive(Debug, Clone, Default)]
pub struct DirectoryFilter {
    pub generic_search_term: Option<String>,
    pub room_types: Option<Vec<Option<String>>>,
}

impl Federation {
    /// One page of `server`'s published room directory, in the client API's shape (`chunk`,
    /// `next_batch`, `prev_batch`, `total_room_count_estimate`).
    /// Errors: `Error::Remote` for a refusal, `Error::Unreachable` when the server cannot be
    /// reached or answers badly.
    pub async fn remote_public_rooms(
        &self,
        server: &ServerName,
        request: &RemoteDirectoryRequest,
    ) -> Result<Value> {
        const PATH: &str = "/_matrix/federation/v1/publicRooms";
        let answer = match &request.filter {
            Some(filter) => {
                let body = filtered_body(request, filter);
                self.post(server, PATH, &body, Limit::Batch).await?
            }
            None => {
                let path = format!("{PATH}?{}", plain_query(request));
                self.get(server, &path, Limit::Batch).await?
            }
        };
        checked_page(answer).map_err(|reason| {
            Error::Unreachable(format!(
                "{server} answered the room directory request badly: {reason}"
            ))
        })
    }
}

/// The body of a filtered listing.
fn filtered_body(request: &RemoteDirectoryRequest, filter: &DirectoryFilter) -> Value {
    let mut body = Map::new();
    body.insert("limit".into(), json!(request.limit));
    if let Some(since) = &request.since {
        body.insert("since".into(), json!(since));
    }
    let mut filter_body = Map::new();
    if let Some(term) = &filter.generic_search_term {
        filter_body.insert("generic_search_term".into(), json!(term));
    }
    if let Some(types) = &filter.room_types {
        filter_body.insert("room_types".into(), json!(types));
    }
    body.insert("filter".into(), Value::Object(filter_body));
    if let Some(all) = request.include_all_networks {
        body.insert("include_all_networks".into(), json!(all));
    }
    if let Some(instance) = &request.third_party_instance_id {
        body.insert("third_party_instance_id".into(), json!(instance));
    }
    Value::Object(body)
}

/// The query string of a plain listing.
fn plain_query(request: &RemoteDirectoryRequest) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &request.limit.to_string());
    if let Some(since) = &request.since {
        query.append_pair("since", since);
    }
    if let Some(all) = request.include_all_networks {
        query.append_pair("include_all_networks", if all { "true" } else { "false" });
    }
    if let Some(instance) = &request.third_party_instance_id {
        query.append_pair("third_party_instance_id", instance);
    }
    query.finish()
}

/// What is valid of a directory page. Rooms beyond the `limit` asked for are passed on too (the
/// answer's size is bounded): dropping some while keeping its `next_batch` would lose them from
/// every page.
fn checked_page(answer: Value) -> std::result::Result<Value, String> {
    let Value::Object(mut answer) = answer else {
        return Err("not a JSON object".into());
    };
    let Some(Value::Array(chunk)) = answer.remove("chunk") else {
        return Err("chunk is not an array".into());
    };
    let rooms: Vec<RoomSummary> = chunk
        .into_iter()
        .filter_map(|room| serde_json::from_value::<PublicRoomsChunk>(room).ok())
        .map(summary)
        .collect();
    let mut page = json!({ "chunk": rooms });
    for token in ["next_batch", "prev_batch"] {
        if let Some(Value::String(value)) = answer.remove(token)
            && !value.is_empty()
            && value.len() <= MAX_TOKEN_BYTES
        {
            page[token] = Value::String(value);
        }
    }
    if let Some(total) = answer
        .get("total_room_count_estimate")
        .and_then(Value::as_u64)
    {
        page["total_room_count_estimate"] = json!(total);
    }
    Ok(page)
}

/// Our form of a directory entry (the join rule always named, as for our own rooms).
fn summary(room: PublicRoomsChunk) -> RoomSummary {
    RoomSummary {
        room_id: room.room_id,
        name: room.name,
        topic: room.topic,
        canonical_alias: room.canonical_alias,
        avatar_url: room.avatar_url.map(|url| url.to_string()),
        join_rule: Some(room.join_rule.as_str().to_owned()),
        room_type: room.room_type.map(|kind| kind.as_str().to_owned()),
        num_joined_members: room.num_joined_members.into(),
        world_readable: room.world_readable,
        guest_can_join: room.guest_can_join,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str) -> Value {
        json!({
            "room_id": id,
            "name": "lobby",
            "num_joined_members": 2,
            "world_readable": true,
            "guest_can_join": false,
            "avatar_url": "mxc://a.example/abc",
        })
    }

    #[test]
    fn valid_rooms_and_tokens_are_kept() {
        let mut extra = room("!b:a.example");
        extra["secret"] = json!("junk");
        let answer = json!({
            "chunk": [
                room("!a:a.example"),
                { "room_id": "!c:a.example" },
                { "room_id": "bad", "num_joined_members": 1, "world_readable": true,
                  "guest_can_join": true },
                "junk",
                extra,
                room("!d:a.example"),
            ],
            "next_batch": "n1",
            "prev_batch": 7,
            "total_room_count_estimate": 12,
            "other": "junk",
        });
        let page = checked_page(answer).unwrap();
        let rooms = page["chunk"].as_array().unwrap();
        assert_eq!(rooms.len(), 3);
        assert_eq!(rooms[2]["room_id"], "!d:a.example");
        assert_eq!(rooms[0]["room_id"], "!a:a.example");
        assert_eq!(rooms[0]["join_rule"], "public");
        assert_eq!(rooms[1]["room_id"], "!b:a.example");
        assert!(rooms[1].get("secret").is_none());
        assert_eq!(page["next_batch"], "n1");
        assert!(page.get("prev_batch").is_none());
        assert_eq!(page["total_room_count_estimate"], 12);
        assert!(page.get("other").is_none());
    }

    #[test]
    fn a_page_without_a_chunk_array_is_refused() {
        for answer in [json!([]), json!({}), json!({ "chunk": {} })] {
            assert!(checked_page(answer).is_err());
        }
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        let page = checked_page(json!({ "chunk": [], "next_batch": long })).unwrap();
        assert!(page.get("next_batch").is_none());
    }
}
