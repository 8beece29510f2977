//! Running a `room_events` search for a user: the rooms they may search, the query, the pages of
//! hits checked against history visibility, and the answer (results with their context,
//! highlights, groups, room state and the `next_batch` tokens).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ruma::{OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use tantivy::collector::Count;
use tantivy::query::{
    BooleanQuery, ConstScoreQuery, Occur, PhraseQuery, Query, TermQuery, TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Value as _};
use tantivy::{Searcher, TantivyDocument, Term};

use super::SearchIndex;
use super::collector::{Hit, PageCollector};
use super::query::{self, Cursor, Item, Order, PageToken, Parsed, Scope};
use super::schema::{self, Key};
use crate::core::Pdu;
use crate::core::filter::RoomEventFilter;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::rooms::EventMeta;
use crate::service::rooms::read::{PageRequest, Viewer};
use crate::service::rooms::visibility::Reader;
use crate::service::sync::token;

/// Results per page when the filter does not say, and the most a filter may ask for.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Hits one request looks at, at most, before it answers with what it found (and a token to
/// go on): a user who may see few of the hits cannot make a request read the whole index.
const MAX_EXAMINED: usize = 1000;
/// Events of context on each side when the request does not say, and the most it may ask for.
const DEFAULT_CONTEXT: usize = 5;
const MAX_CONTEXT: usize = 100;
/// The memberships that make a room searchable (its history is then searched as far as
/// visibility allows).
const MEMBERSHIPS: [&str; 5] = ["join", "invite", "knock", "leave", "ban"];

/// The body of `POST /search`.
#[derive(Debug, Deserialize)]
pub struct SearchBody {
    #[serde(deserialize_with = "crate::util::from_object")]
    pub search_categories: Categories,
}

/// The categories searched; others than `room_events` are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Categories {
    #[serde(default, deserialize_with = "optional_object")]
    pub room_events: Option<RoomEventsCriteria>,
}

#[derive(Debug, Deserialize)]
pub struct RoomEventsCriteria {
    pub search_term: String,
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    #[serde(default, deserialize_with = "optional_object")]
    pub filter: Option<RoomEventFilter>,
    #[serde(default)]
    pub order_by: Option<String>,
    #[serde(default, deserialize_with = "optional_object")]
    pub event_context: Option<EventContext>,
    #[serde(default)]
    pub include_state: Option<bool>,
    #[serde(default, deserialize_with = "optional_object")]
    pub groupings: Option<Groupings>,
}

#[derive(Debug, Deserialize)]
pub struct EventContext {
    #[serde(default)]
    pub before_limit: Option<usize>,
    #[serde(default)]
    pub after_limit: Option<usize>,
    #[serde(default)]
    pub include_profile: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct Groupings {
    #[serde(default, deserialize_with = "optional_objects")]
    pub group_by: Option<Vec<GroupBy>>,
}

#[derive(Debug, Deserialize)]
pub struct GroupBy {
    pub key: String,
}

/// An object (or `null`) deserialized into `T`: never a list, which serde would otherwise take
/// for a struct.
fn optional_object<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    deserializer: D,
) -> std::result::Result<Option<T>, D::Error> {
    match Option::<Map<String, Value>>::deserialize(deserializer)? {
        Some(object) => serde_json::from_value(Value::Object(object))
            .map(Some)
            .map_err(de::Error::custom),
        None => Ok(None),
    }
}

/// A list of objects (or `null`).
fn optional_objects<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    deserializer: D,
) -> std::result::Result<Option<Vec<T>>, D::Error> {
    match Option::<Vec<Map<String, Value>>>::deserialize(deserializer)? {
        Some(list) => list
            .into_iter()
            .map(|object| serde_json::from_value(Value::Object(object)).map_err(de::Error::custom))
            .collect::<std::result::Result<Vec<T>, _>>()
            .map(Some),
        None => Ok(None),
    }
}

/// What results may be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupKey {
    Room,
    Sender,
}

impl GroupKey {
    fn name(self) -> &'static str {
        match self {
            GroupKey::Room => "room_id",
            GroupKey::Sender => "sender",
        }
    }
}

/// A checked request, ready to run.
pub struct Plan {
    order: Order,
    keys: Vec<Key>,
    parsed: Parsed,
    filter: RoomEventFilter,
    limit: usize,
    token: Option<PageToken>,
    context: Option<(usize, usize, bool)>,
    include_state: bool,
    groups: Vec<GroupKey>,
}

/// Checks a request: `M_INVALID_PARAM` for an unknown order, key or grouping, a bad token or a
/// search term too long.
pub fn plan(criteria: &RoomEventsCriteria, next_batch: Option<&str>) -> Result<Plan> {
    let order = Order::parse(criteria.order_by.as_deref())?;
    let mut keys = Vec::new();
    match &criteria.keys {
        Some(listed) if !listed.is_empty() => {
            for raw in listed {
                let key = Key::parse(raw).ok_or_else(|| {
                    Error::InvalidParam(format!(
                        "keys: {raw:?} is not content.body, content.name or content.topic"
                    ))
                })?;
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        _ => keys.extend(Key::ALL),
    }
    let mut groups = Vec::new();
    for group in criteria
        .groupings
        .as_ref()
        .and_then(|g| g.group_by.as_ref())
        .into_iter()
        .flatten()
    {
        let key = match group.key.as_str() {
            "room_id" => GroupKey::Room,
            "sender" => GroupKey::Sender,
            other => {
                return Err(Error::InvalidParam(format!(
                    "group_by: {other:?} is not room_id or sender"
                )));
            }
        };
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    let token = next_batch.map(PageToken::decode).transpose()?;
    if token.as_ref().is_some_and(|t| t.order != order) {
        return Err(Error::InvalidParam(
            "next_batch belongs to a search in another order".into(),
        ));
    }
    let filter = criteria.filter.clone().unwrap_or_default();
    let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let context = criteria.event_context.as_ref().map(|c| {
        (
            c.before_limit.unwrap_or(DEFAULT_CONTEXT).min(MAX_CONTEXT),
            c.after_limit.unwrap_or(DEFAULT_CONTEXT).min(MAX_CONTEXT),
            c.include_profile.unwrap_or(false),
        )
    });
    Ok(Plan {
        order,
        keys,
        parsed: query::parse(&mut schema::analyzer(), &criteria.search_term)?,
        filter,
        limit,
        token,
        context,
        include_state: criteria.include_state.unwrap_or(false),
        groups,
    })
}

/// A hit the user may see.
struct Found {
    cursor: Cursor,
    pdu: Arc<Pdu>,
    meta: EventMeta,
}

/// One page of visible hits, and where the next one starts (`None`: nothing more).
struct Page {
    found: Vec<Found>,
    next: Option<Cursor>,
    count: usize,
}

/// The query for a parsed term over some fields.
fn text_query(parsed: &Parsed, fields: &[Field]) -> BooleanQuery {
    let item_query = |item: &Item| -> Box<dyn Query> {
        let per_field = fields
            .iter()
            .map(|field| {
                let query: Box<dyn Query> = match item.as_slice() {
                    [term] => Box::new(TermQuery::new(
                        Term::from_field_text(*field, term),
                        IndexRecordOption::WithFreqs,
                    )),
                    terms => Box::new(PhraseQuery::new(
                        terms
                            .iter()
                            .map(|t| Term::from_field_text(*field, t))
                            .collect(),
                    )),
                };
                (Occur::Should, query)
            })
            .collect();
        Box::new(BooleanQuery::new(per_field))
    };
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for group in &parsed.groups {
        let alternatives = group
            .iter()
            .map(|item| (Occur::Should, item_query(item)))
            .collect();
        clauses.push((Occur::Must, Box::new(BooleanQuery::new(alternatives))));
    }
    for item in &parsed.excluded {
        clauses.push((Occur::MustNot, item_query(item)));
    }
    BooleanQuery::new(clauses)
}

/// A filter clause (no part in the score): any of the values in `field`.
fn any_of<'a>(field: Field, values: impl IntoIterator<Item = &'a str>) -> Box<dyn Query> {
    let terms = values.into_iter().map(|v| Term::from_field_text(field, v));
    Box::new(ConstScoreQuery::new(
        Box::new(TermSetQuery::new(terms)),
        0.0,
    ))
}

/// Whether the filter's `types` and `not_types` let events of a type through.
fn type_allowed(filter: &RoomEventFilter, kind: &str) -> bool {
    RoomEventFilter {
        types: filter.types.clone(),
        not_types: filter.not_types.clone(),
        ..RoomEventFilter::default()
    }
    .matches("", "", kind, false)
}

impl Services {
    /// The rooms a user may search: those they have a membership in (and did not forget),
    /// narrowed by the filter and the token's scope.
    fn searchable_rooms(
        &self,
        user: &UserId,
        filter: &RoomEventFilter,
        scope: &Scope,
    ) -> Result<Vec<OwnedRoomId>> {
        let mut rooms = Vec::new();
        for membership in MEMBERSHIPS {
            for room in self.rooms.rooms_of(user, membership)? {
                if !self.rooms.is_forgotten(&room, user)?
                    && filter
                        .rooms
                        .as_ref()
                        .is_none_or(|allowed| allowed.iter().any(|r| r == room.as_str()))
                    && !filter.not_rooms.iter().any(|r| r == room.as_str())
                    && match scope {
                        Scope::Room(only) => only == room.as_str(),
                        _ => true,
                    }
                {
                    rooms.push(room);
                }
            }
        }
        Ok(rooms)
    }

    /// Runs a checked `room_events` search for a user: the `room_events` object of the answer.
    pub fn search_room_events(&self, user: &UserId, device: &str, plan: &Plan) -> Result<Value> {
        let index = self.search.index()?;
        let ignored = self.account_data.ignored_users(user)?;
        let viewer = Viewer::new(user, device, ignored.clone());
        let scope = plan.token.as_ref().map_or(Scope::All, |t| t.scope.clone());
        let rooms = self.searchable_rooms(user, &plan.filter, &scope)?;
        let keys: Vec<Key> = plan
            .keys
            .iter()
            .copied()
            .filter(|k| type_allowed(&plan.filter, k.event_type()))
            .collect();
        let mut page = Page {
            found: Vec::new(),
            next: None,
            count: 0,
        };
        let positive = plan.parsed.positive_terms();
        if !rooms.is_empty() && !keys.is_empty() && !positive.is_empty() {
            let fields = &index.fields;
            let text_fields: Vec<Field> = keys.iter().map(|k| fields.text(*k)).collect();
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![
                (
                    Occur::Must,
                    Box::new(text_query(&plan.parsed, &text_fields)),
                ),
                (
                    Occur::Must,
                    any_of(fields.room_id, rooms.iter().map(|r| r.as_str())),
                ),
            ];
            let mut senders: Option<Vec<&str>> = plan
                .filter
                .senders
                .as_ref()
                .map(|s| s.iter().map(String::as_str).collect());
            if let Scope::Sender(only) = &scope {
                senders = Some(match senders {
                    Some(list) => list.into_iter().filter(|s| s == only).collect(),
                    None => vec![only.as_str()],
                });
            }
            if let Some(senders) = senders {
                clauses.push((Occur::Must, any_of(fields.sender, senders)));
            }
            let excluded: Vec<String> = plan
                .filter
                .not_senders
                .iter()
                .cloned()
                .chain(ignored.iter().map(|u| u.to_string()))
                .collect();
            if !excluded.is_empty() {
                clauses.push((
                    Occur::MustNot,
                    any_of(fields.sender, excluded.iter().map(String::as_str)),
                ));
            }
            let query = BooleanQuery::new(clauses);
            page = self.visible_page(index, &query, user, plan)?;
        }
        self.answer(plan, &viewer, &scope, &positive, page)
    }

    /// Reads hits in order from the token on, keeping those the user may see, until the page
    /// is full, the hits run out or [`MAX_EXAMINED`] were looked at.
    fn visible_page(
        &self,
        index: &SearchIndex,
        query: &dyn Query,
        user: &UserId,
        plan: &Plan,
    ) -> Result<Page> {
        let searcher = index.reader.searcher();
        let engine = |e: tantivy::TantivyError| Error::internal(format!("search: {e}"));
        let batch = (plan.limit * 2).clamp(20, 200);
        let mut readers: HashMap<OwnedRoomId, Reader> = HashMap::new();
        let mut found = Vec::new();
        let mut after = plan.token.as_ref().map(|t| t.after);
        let mut examined = 0;
        let mut count = None;
        loop {
            let collector = PageCollector {
                order: plan.order,
                limit: batch,
                after,
                position_field: "position",
            };
            // The first pass counts the matches too.
            let hits = match count {
                Some(_) => searcher.search(query, &collector).map_err(engine)?,
                None => {
                    let (hits, matches) = searcher
                        .search(query, &(collector, Count))
                        .map_err(engine)?;
                    count = Some(matches);
                    hits
                }
            };
            let total = count.unwrap_or_default();
            let last_batch = hits.len() < batch;
            for (i, hit) in hits.iter().enumerate() {
                examined += 1;
                after = Some(hit.cursor);
                if let Some(visible) =
                    self.visible_hit(&searcher, index, hit, user, plan, &mut readers)?
                {
                    found.push(visible);
                }
                let rest_of_hits = i + 1 < hits.len() || !last_batch;
                if found.len() == plan.limit || examined >= MAX_EXAMINED {
                    return Ok(Page {
                        found,
                        next: if rest_of_hits { after } else { None },
                        count: total,
                    });
                }
            }
            if last_batch {
                return Ok(Page {
                    found,
                    next: None,
                    count: total,
                });
            }
        }
    }

    /// The event of a hit, if the user may see it now.
    fn visible_hit(
        &self,
        searcher: &Searcher,
        index: &SearchIndex,
        hit: &Hit,
        user: &UserId,
        plan: &Plan,
        readers: &mut HashMap<OwnedRoomId, Reader>,
    ) -> Result<Option<Found>> {
        let doc: TantivyDocument = searcher
            .doc(hit.address)
            .map_err(|e| Error::internal(format!("search: {e}")))?;
        let Some(event_id) = doc
            .get_first(index.fields.event_id)
            .and_then(|v| v.as_str())
            .and_then(|id| OwnedEventId::try_from(id).ok())
        else {
            return Ok(None);
        };
        let (Some(pdu), Some(meta)) = (
            self.rooms.pdu(&event_id)?,
            self.rooms.event_meta(&event_id)?,
        ) else {
            return Ok(None);
        };
        // A redaction the indexer has not reached yet.
        if self.rooms.redacted_by(&event_id)?.is_some() {
            return Ok(None);
        }
        let content: Value = serde_json::from_str(pdu.content().get())?;
        if !plan.filter.matches(
            meta.room_id.as_str(),
            pdu.sender().as_str(),
            &pdu.kind().to_string(),
            content.get("url").is_some(),
        ) {
            return Ok(None);
        }
        let reader = match readers.get(&meta.room_id) {
            Some(reader) => reader,
            None => {
                let reader = self.rooms.reader(&meta.room_id, user)?;
                readers.entry(meta.room_id.clone()).or_insert(reader)
            }
        };
        if !self.rooms.is_visible(reader, &pdu, &meta)? {
            return Ok(None);
        }
        Ok(Some(Found {
            cursor: hit.cursor,
            pdu,
            meta,
        }))
    }

    /// The `room_events` object of the answer.
    fn answer(
        &self,
        plan: &Plan,
        viewer: &Viewer<'_>,
        scope: &Scope,
        positive: &[String],
        page: Page,
    ) -> Result<Value> {
        let token_for = |scope: Scope| {
            page.next.map(|after| {
                PageToken {
                    order: plan.order,
                    after,
                    scope,
                }
                .encode()
            })
        };
        let mut results = Vec::with_capacity(page.found.len());
        for found in &page.found {
            let event_id = found.pdu.event_id();
            let event = self
                .rooms
                .client_event(event_id, viewer)?
                .ok_or_else(|| Error::internal(format!("search found missing event {event_id}")))?;
            let mut result = json!({ "rank": found.cursor.score, "result": event });
            if let Some((before, after, profile)) = plan.context {
                result["context"] = self.result_context(found, viewer, before, after, profile)?;
            }
            results.push(result);
        }
        let mut body = json!({
            "results": results,
            "count": page.count,
            "highlights": highlights(positive, &page.found),
        });
        if let Some(next) = token_for(scope.clone()) {
            body["next_batch"] = json!(next);
        }
        if !plan.groups.is_empty() {
            let mut groups = Map::new();
            for key in &plan.groups {
                let mut by_value: Map<String, Value> = Map::new();
                for found in &page.found {
                    let value = match key {
                        GroupKey::Room => found.meta.room_id.to_string(),
                        GroupKey::Sender => found.pdu.sender().to_string(),
                    };
                    let order = by_value.len() + 1;
                    let group = by_value.entry(value.clone()).or_insert_with(|| {
                        let mut group = json!({ "results": [], "order": order });
                        let scope = match key {
                            GroupKey::Room => Scope::Room(value.clone()),
                            GroupKey::Sender => Scope::Sender(value.clone()),
                        };
                        if let Some(next) = token_for(scope) {
                            group["next_batch"] = json!(next);
                        }
                        group
                    });
                    if let Some(list) = group["results"].as_array_mut() {
                        list.push(json!(found.pdu.event_id()));
                    }
                }
                groups.insert(key.name().into(), Value::Object(by_value));
            }
            body["groups"] = Value::Object(groups);
        }
        if plan.include_state {
            body["state"] = self.results_state(viewer, &page.found)?;
        }
        Ok(body)
    }

    /// The events around a result, and the profiles of their senders when asked for.
    fn result_context(
        &self,
        found: &Found,
        viewer: &Viewer<'_>,
        before: usize,
        after: usize,
        include_profile: bool,
    ) -> Result<Value> {
        let room_id = &found.meta.room_id;
        let reader = self.rooms.reader(room_id, viewer.user_id)?;
        let filter = RoomEventFilter {
            not_senders: viewer.ignored.iter().map(|u| u.to_string()).collect(),
            ..RoomEventFilter::default()
        };
        let page = |backwards: bool, limit: usize| -> Result<Option<_>> {
            if limit == 0 {
                return Ok(None);
            }
            self.rooms
                .paginate(
                    room_id,
                    &reader,
                    viewer,
                    PageRequest {
                        from: Some(found.meta.stream_pos),
                        to: None,
                        backwards,
                        limit,
                        filter: &filter,
                    },
                )
                .map(Some)
        };
        let before = page(true, before)?;
        let after = page(false, after)?;
        let position = found.meta.stream_pos;
        let start = before.as_ref().and_then(|p| p.end).unwrap_or(position);
        let end = after.as_ref().and_then(|p| p.end).unwrap_or(position);
        let mut context = json!({ "start": token(start), "end": token(end) });
        if include_profile {
            let mut senders: HashSet<String> = HashSet::new();
            senders.insert(found.pdu.sender().to_string());
            for page in before.iter().chain(after.iter()) {
                senders.extend(page.senders.iter().map(|s| s.to_string()));
            }
            context["profile_info"] = self.profiles_at(found, &senders)?;
        }
        context["events_before"] = json!(before.map(|p| p.chunk).unwrap_or_default());
        context["events_after"] = json!(after.map(|p| p.chunk).unwrap_or_default());
        Ok(context)
    }

    /// The display names and avatars the senders had in the room at a result.
    fn profiles_at(&self, found: &Found, senders: &HashSet<String>) -> Result<Value> {
        let state = self.rooms.state_after(&found.meta, &found.pdu)?;
        let mut profiles = Map::new();
        let mut senders: Vec<&String> = senders.iter().collect();
        senders.sort();
        for sender in senders {
            let entry = (ruma::events::StateEventType::RoomMember, sender.to_string());
            let Some(event_id) = state.get(&entry) else {
                continue;
            };
            let Some(member) = self.rooms.pdu(event_id)? else {
                continue;
            };
            let member = match self.rooms.redacted_by(event_id)? {
                Some(_) => Arc::new(member.redacted()?),
                None => member,
            };
            let content: Value = serde_json::from_str(member.content().get())?;
            let mut profile = Map::new();
            for field in ["displayname", "avatar_url"] {
                if let Some(value) = content.get(field).filter(|v| v.is_string()) {
                    profile.insert(field.into(), value.clone());
                }
            }
            profiles.insert(sender.clone(), Value::Object(profile));
        }
        Ok(Value::Object(profiles))
    }

    /// The current state of each room of the results that the user is joined to.
    fn results_state(&self, viewer: &Viewer<'_>, found: &[Found]) -> Result<Value> {
        let mut state = Map::new();
        let mut rooms: Vec<&RoomId> = Vec::new();
        for found in found {
            if !rooms.contains(&found.meta.room_id.as_ref()) {
                rooms.push(&found.meta.room_id);
            }
        }
        for room in rooms {
            if self.rooms.membership(room, viewer.user_id)?.as_deref() != Some("join") {
                continue;
            }
            let current = self.rooms.current_state(room)?;
            let mut ids = Vec::with_capacity(current.len());
            for event_id in current.values() {
                if let Some(meta) = self.rooms.event_meta(event_id)? {
                    ids.push((meta.stream_pos, event_id.clone()));
                }
            }
            ids.sort();
            state.insert(
                room.to_string(),
                json!(self.rooms.client_events(&ids, viewer)?),
            );
        }
        Ok(Value::Object(state))
    }
}

/// The words to highlight: the search's terms, and the words of the results that match them as
/// written there (`Café` for a search of `cafe`).
fn highlights(positive: &[String], found: &[Found]) -> Vec<String> {
    let mut out: Vec<String> = positive.to_vec();
    let mut analyzer = schema::analyzer();
    for found in found {
        let Ok(content) = serde_json::from_str::<Value>(found.pdu.content().get()) else {
            continue;
        };
        let Some((_, text)) =
            schema::searchable_text(found.pdu.kind(), found.pdu.state_key(), &content)
        else {
            continue;
        };
        for (word, indexed) in schema::surface_words(&mut analyzer, &text) {
            if positive.contains(&indexed) && !out.contains(&word) {
                out.push(word);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn criteria(body: Value) -> RoomEventsCriteria {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn plans_check_order_keys_groups_and_tokens() {
        let plan = plan(
            &criteria(json!({
                "search_term": "hello",
                "keys": ["content.body", "content.body"],
                "order_by": "recent",
                "filter": { "limit": 1000 },
                "event_context": { "before_limit": 1000 },
                "groupings": { "group_by": [{ "key": "sender" }, { "key": "room_id" }] },
            })),
            None,
        )
        .unwrap();
        assert_eq!(plan.keys, [Key::Body]);
        assert_eq!(plan.order, Order::Recent);
        assert_eq!(plan.limit, MAX_LIMIT);
        assert_eq!(plan.context, Some((MAX_CONTEXT, DEFAULT_CONTEXT, false)));
        assert_eq!(plan.groups, [GroupKey::Sender, GroupKey::Room]);
        let defaults =
            super::plan(&criteria(json!({ "search_term": "x", "keys": [] })), None).unwrap();
        assert_eq!(defaults.keys, Key::ALL);
        assert_eq!(defaults.order, Order::Rank);
        assert_eq!(defaults.limit, DEFAULT_LIMIT);
        for bad in [
            json!({ "search_term": "x", "order_by": "oldest" }),
            json!({ "search_term": "x", "keys": ["content.msgtype"] }),
            json!({ "search_term": "x", "groupings": { "group_by": [{ "key": "type" }] } }),
        ] {
            assert!(matches!(
                super::plan(&criteria(bad), None),
                Err(Error::InvalidParam(_))
            ));
        }
        let recent_token = PageToken {
            order: Order::Recent,
            after: Cursor {
                score: 0.0,
                position: 3,
            },
            scope: Scope::All,
        }
        .encode();
        assert!(matches!(
            super::plan(
                &criteria(json!({ "search_term": "x" })),
                Some(&recent_token)
            ),
            Err(Error::InvalidParam(_))
        ));
        assert!(matches!(
            super::plan(&criteria(json!({ "search_term": "x" })), Some("nonsense")),
            Err(Error::InvalidParam(_))
        ));
    }

    #[test]
    fn request_shapes_are_strict() {
        for bad in [
            json!({ "search_categories": [] }),
            json!({ "search_categories": { "room_events": [] } }),
            json!({ "search_categories": { "room_events": { "search_term": 1 } } }),
            json!({ "search_categories": { "room_events": { "search_term": "x", "filter": [] } } }),
            json!({ "search_categories": { "room_events": {
                "search_term": "x", "groupings": { "group_by": [["room_id"]] } } } }),
            json!({}),
        ] {
            assert!(
                serde_json::from_value::<SearchBody>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let unknown: SearchBody =
            serde_json::from_value(json!({ "search_categories": { "people": {} } })).unwrap();
        assert!(unknown.search_categories.room_events.is_none());
    }

    #[test]
    fn types_filters_select_keys() {
        let filter: RoomEventFilter =
            serde_json::from_value(json!({ "types": ["m.room.*"], "not_types": ["m.room.name"] }))
                .unwrap();
        assert!(type_allowed(&filter, "m.room.message"));
        assert!(!type_allowed(&filter, "m.room.name"));
        assert!(type_allowed(&RoomEventFilter::default(), "m.room.topic"));
    }
}
