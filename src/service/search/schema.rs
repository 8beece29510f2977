//! What the index holds: one document per searchable event, its fields, the text analyzer, and
//! the text an event contributes (pure, unit-tested).

use ruma::events::TimelineEventType;
use serde_json::Value;
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};

/// The name the analyzer of the text fields is registered under.
pub const ANALYZER: &str = "roost_text";
/// Tokens longer than this (in bytes) are not indexed (base64 blobs, long URLs).
const MAX_TOKEN_BYTES: usize = 40;

/// The searchable parts of event content, as the specification names them in `keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// `content.body` of `m.room.message`.
    Body,
    /// `content.name` of `m.room.name`.
    Name,
    /// `content.topic` (and the plain-text `m.topic` representation) of `m.room.topic`.
    Topic,
}

impl Key {
    pub const ALL: [Key; 3] = [Key::Body, Key::Name, Key::Topic];

    /// The key for a `keys` entry of a search request.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "content.body" => Some(Key::Body),
            "content.name" => Some(Key::Name),
            "content.topic" => Some(Key::Topic),
            _ => None,
        }
    }

    /// The event type whose content holds this key.
    pub fn event_type(self) -> &'static str {
        match self {
            Key::Body => "m.room.message",
            Key::Name => "m.room.name",
            Key::Topic => "m.room.topic",
        }
    }
}

/// The fields of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// The event ID: stored (to find the event again) and indexed untokenized (to delete it).
    pub event_id: Field,
    pub room_id: Field,
    pub sender: Field,
    /// The event type.
    pub kind: Field,
    /// The stream position: the order of `recent`, and the tie-breaker of `rank`.
    pub position: Field,
    pub body: Field,
    pub name: Field,
    pub topic: Field,
}

impl Fields {
    /// The text field of a key.
    pub fn text(&self, key: Key) -> Field {
        match key {
            Key::Body => self.body,
            Key::Name => self.name,
            Key::Topic => self.topic,
        }
    }
}

/// The schema and its fields.
pub fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        event_id: builder.add_text_field("event_id", STRING | STORED),
        room_id: builder.add_text_field("room_id", STRING),
        sender: builder.add_text_field("sender", STRING),
        kind: builder.add_text_field("type", STRING),
        position: builder.add_u64_field("position", FAST),
        body: builder.add_text_field("body", text.clone()),
        name: builder.add_text_field("name", text.clone()),
        topic: builder.add_text_field("topic", text),
    };
    (builder.build(), fields)
}

/// The analyzer of the text fields and of search terms: words are runs of letters and digits
/// (any script), lower-cased, with accents folded to ASCII where they have an ASCII form. No
/// stemming and no stop words: a search finds the words it names.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// The words of `text` as the index holds them.
pub fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while let Some(token) = stream.next() {
        out.push(token.text.clone());
    }
    out
}

/// The words of `text` as written (before lower-casing and folding), each with its indexed form.
pub fn surface_words(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(String, String)> {
    let mut raw = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .build();
    let mut out = Vec::new();
    let mut stream = raw.token_stream(text);
    while let Some(token) = stream.next() {
        if let Some(indexed) = terms(analyzer, &token.text).into_iter().next() {
            out.push((token.text.clone(), indexed));
        }
    }
    out
}

/// Whether events of this type are indexed (or, for redactions, change the index).
pub fn concerns_index(kind: &TimelineEventType) -> bool {
    matches!(
        kind,
        TimelineEventType::RoomMessage
            | TimelineEventType::RoomName
            | TimelineEventType::RoomTopic
            | TimelineEventType::RoomRedaction
    )
}

/// The text an event contributes to the index: its key and the text, or `None` when it has
/// nothing searchable. Room names and topics count only as state events (empty state key).
pub fn searchable_text(
    kind: &TimelineEventType,
    state_key: Option<&str>,
    content: &Value,
) -> Option<(Key, String)> {
    let string = |field: &str| content.get(field).and_then(Value::as_str);
    let (key, text) = match kind {
        TimelineEventType::RoomMessage if state_key.is_none() => (Key::Body, string("body")?),
        TimelineEventType::RoomName if state_key == Some("") => (Key::Name, string("name")?),
        TimelineEventType::RoomTopic if state_key == Some("") => {
            let mut text = string("topic").unwrap_or_default().to_owned();
            // The plain-text representation of `m.topic`, when it says something else.
            if let Some(plain) = plain_topic(content)
                && plain != text
            {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(plain);
            }
            return (!text.trim().is_empty()).then_some((Key::Topic, text));
        }
        _ => return None,
    };
    (!text.trim().is_empty()).then(|| (key, text.to_owned()))
}

/// The `text/plain` body of an `m.topic` content block.
fn plain_topic(content: &Value) -> Option<&str> {
    content
        .get("m.topic")?
        .get("m.text")?
        .as_array()?
        .iter()
        .find(|repr| {
            repr.get("mimetype")
                .and_then(Value::as_str)
                .is_none_or(|m| m == "text/plain")
        })?
        .get("body")?
        .as_str()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_parse_and_name_their_types() {
        assert_eq!(Key::parse("content.body"), Some(Key::Body));
        assert_eq!(Key::parse("content.topic"), Some(Key::Topic));
        assert_eq!(Key::parse("content.name"), Some(Key::Name));
        assert_eq!(Key::parse("content.msgtype"), None);
        assert_eq!(Key::Name.event_type(), "m.room.name");
    }

    #[test]
    fn messages_names_and_topics_are_searchable() {
        let message = TimelineEventType::RoomMessage;
        assert_eq!(
            searchable_text(
                &message,
                None,
                &json!({ "msgtype": "m.text", "body": "Hi there" })
            ),
            Some((Key::Body, "Hi there".into()))
        );
        assert_eq!(searchable_text(&message, None, &json!({ "body": 5 })), None);
        assert_eq!(
            searchable_text(&message, None, &json!({ "body": "  " })),
            None
        );
        let name = TimelineEventType::RoomName;
        assert_eq!(
            searchable_text(&name, Some(""), &json!({ "name": "Garden club" })),
            Some((Key::Name, "Garden club".into()))
        );
        assert_eq!(
            searchable_text(&name, Some("x"), &json!({ "name": "Not a name" })),
            None
        );
        let topic = TimelineEventType::RoomTopic;
        assert_eq!(
            searchable_text(
                &topic,
                Some(""),
                &json!({
                    "topic": "Roses",
                    "m.topic": { "m.text": [
                        { "mimetype": "text/html", "body": "<b>Roses</b>" },
                        { "body": "Roses and tulips" },
                    ] },
                })
            ),
            Some((Key::Topic, "Roses\nRoses and tulips".into()))
        );
        assert_eq!(
            searchable_text(
                &topic,
                Some(""),
                &json!({ "topic": "Roses", "m.topic": { "m.text": [{ "body": "Roses" }] } })
            ),
            Some((Key::Topic, "Roses".into()))
        );
        assert_eq!(
            searchable_text(
                &TimelineEventType::RoomMember,
                Some("@a:x"),
                &json!({ "displayname": "body" })
            ),
            None
        );
    }

    #[test]
    fn the_analyzer_folds_case_and_accents_and_splits_on_punctuation() {
        let mut analyzer = analyzer();
        assert_eq!(
            terms(&mut analyzer, "Café, e-mail & NAÏVE 42!"),
            ["cafe", "e", "mail", "naive", "42"]
        );
        assert_eq!(terms(&mut analyzer, &"x".repeat(100)), Vec::<String>::new());
        assert_eq!(
            surface_words(&mut analyzer, "Café au lait"),
            [
                ("Café".to_owned(), "cafe".to_owned()),
                ("au".to_owned(), "au".to_owned()),
                ("lait".to_owned(), "lait".to_owned()),
            ]
        );
    }
}
