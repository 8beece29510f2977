//! The Message, MessageStatus and message File objects of the Chat API, built from the Matrix
//! events as the rooms service formats them for a client: redaction applied, the latest valid
//! edit bundled (`unsigned.m.relations.m.replace`), reactions from the relation index, and the
//! status from the read and delivered receipts. Nothing here is stored twice: a message edited
//! or reacted to from a Matrix client reads the same as one changed through the Chat API.

use std::collections::HashMap;

use ruma::events::TimelineEventType;
use ruma::{EventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::model::media_url;
use crate::api::extract::AppState;
use crate::core::Pdu;
use crate::core::relation::{self, ANNOTATION, REPLACE};
use crate::error::Result;
use crate::service::media::parse_mxc;
use crate::service::receipts::{MAIN_THREAD, Receipt, ReceiptKey, ReceiptKind};
use crate::service::rooms::read::Viewer;

/// `"direct"` when `room_id` is the viewer's direct chat with a friend (current or ended),
/// `"group"` otherwise.
pub fn chat_type(state: &AppState, viewer: &UserId, room_id: &RoomId) -> Result<&'static str> {
    Ok(match state.dm_peer(viewer, room_id)? {
        Some(_) => "direct",
        None => "group",
    })
}

/// Whether an event is a message of a chat's list: a room message, a sticker or an encrypted
/// event, that is not an edit of another (edits are folded into their original). Reactions,
/// redactions and state events are not messages.
pub fn is_message_event(pdu: &Pdu) -> bool {
    if pdu.state_key().is_some() {
        return false;
    }
    let kind = pdu.kind();
    if *kind != TimelineEventType::RoomMessage
        && *kind != TimelineEventType::Sticker
        && *kind != TimelineEventType::RoomEncrypted
    {
        return false;
    }
    let content: Value = match serde_json::from_str(pdu.content().get()) {
        Ok(content) => content,
        Err(_) => return true,
    };
    relation::of_content(&content).is_none_or(|r| r.rel_type != REPLACE)
}

/// The Message object of `event_id` for `viewer`, or `None` when it is not a message (see
/// [`is_message_event`]) of a chat the viewer is joined to and may see.
pub fn message(state: &AppState, viewer: &UserId, event_id: &EventId) -> Result<Option<Value>> {
    let (Some(pdu), Some(meta)) = (
        state.rooms.pdu(event_id)?,
        state.rooms.event_meta(event_id)?,
    ) else {
        return Ok(None);
    };
    if !is_message_event(&pdu) {
        return Ok(None);
    }
    let reader = state.rooms.reader(&meta.room_id, viewer)?;
    if reader.membership.as_deref() != Some("join")
        || !state.rooms.is_visible(&reader, &pdu, &meta)?
    {
        return Ok(None);
    }
    let chat = ChatView::new(state, viewer, &meta.room_id)?;
    let Some(event) = state.rooms.client_event(event_id, &chat.viewer)? else {
        return Ok(None);
    };
    chat.message(&event).map(Some)
}

/// The MessageStatus of `event_id` (see [`ChatView::status`]). The caller checks that the
/// viewer may see the message.
pub fn message_status(state: &AppState, viewer: &UserId, event_id: &EventId) -> Result<Value> {
    let not_found = || crate::error::Error::NotFound("no such message".into());
    let pdu = state.rooms.pdu(event_id)?.ok_or_else(not_found)?;
    let meta = state.rooms.event_meta(event_id)?.ok_or_else(not_found)?;
    let chat = ChatView::new(state, viewer, &meta.room_id)?;
    chat.status(&pdu, meta.stream_pos)
}

/// The File object of a file message's content (`url`, `filename`/`body`, `info`), completed
/// from the media record when the file is on this server: `{id, name, mime_type, size, url,
/// created_at, uploader}` plus `width` and `height` when known. `None` when the content names no
/// (unencrypted) `mxc://` file.
pub fn file_object(
    state: &AppState,
    content: &Value,
    sender: &UserId,
    sent_at: u64,
) -> Result<Option<Value>> {
    let Some(mxc) = content.get("url").and_then(Value::as_str) else {
        return Ok(None);
    };
    let (Some((server, media_id)), Some(url)) = (parse_mxc(mxc), media_url(mxc)) else {
        return Ok(None);
    };
    let record = state.media.get(server, media_id)?;
    let stored = record.as_ref().and_then(|r| r.content.as_ref());
    let info = content.get("info");
    let name = content
        .get("filename")
        .and_then(Value::as_str)
        .or_else(|| content.get("body").and_then(Value::as_str))
        .or_else(|| stored.and_then(|c| c.filename.as_deref()))
        .unwrap_or(super::file_model::DEFAULT_FILE_NAME);
    let mime_type = info
        .and_then(|i| i.get("mimetype"))
        .and_then(Value::as_str)
        .or_else(|| stored.map(|c| c.content_type.as_str()))
        .unwrap_or("application/octet-stream");
    let size = stored
        .map(|c| c.size)
        .or_else(|| info.and_then(|i| i.get("size")).and_then(Value::as_u64));
    let mut file = json!({
        "id": media_id,
        "name": name,
        "mime_type": mime_type,
        "size": size.unwrap_or(0),
        "url": url,
        "created_at": record.as_ref().map_or(sent_at, |r| r.created_ts),
        "uploader": record.as_ref().map_or(sender.as_str(), |r| r.uploader.as_str()),
    });
    let dimension = |field: &str| info.and_then(|i| i.get(field)).and_then(Value::as_u64);
    if let (Some(width), Some(height)) = (dimension("w"), dimension("h")) {
        file["width"] = json!(width);
        file["height"] = json!(height);
    }
    Ok(Some(file))
}

/// The most recipients a MessageStatus lists (the first by user ID); `recipient_count` and
/// `state` still account for every recipient. This keeps a page of messages in a large group
/// at O(messages × this) in size, while the receipts are read once per page.
pub const MAX_LISTED_RECIPIENTS: usize = 50;

/// A recipient's receipts in one chat, read once per request.
struct RecipientReceipts {
    user: OwnedUserId,
    /// Where the user's current run of joins began (stream position): messages before it were
    /// not sent to them.
    joined_at: u64,
    read: Vec<(ReceiptKey, Receipt)>,
    delivered: Option<Receipt>,
}

/// One viewer reading one chat: what every message of a page shares.
pub struct ChatView<'a> {
    state: &'a AppState,
    pub viewer: Viewer<'a>,
    room_id: OwnedRoomId,
    chat_type: &'static str,
    recipients: std::sync::OnceLock<Vec<RecipientReceipts>>,
}

impl<'a> ChatView<'a> {
    pub fn new(state: &'a AppState, viewer: &'a UserId, room_id: &RoomId) -> Result<Self> {
        Ok(Self {
            state,
            viewer: Viewer::new(viewer, "", state.account_data.ignored_users(viewer)?),
            room_id: room_id.to_owned(),
            chat_type: chat_type(state, viewer, room_id)?,
            recipients: std::sync::OnceLock::new(),
        })
    }

    /// The Message object of a client-format event of this chat (as `client_event` or
    /// `paginate` make it).
    pub fn message(&self, event: &Value) -> Result<Value> {
        let str_of = |v: &Value| v.as_str().map(str::to_owned);
        let id = event["event_id"].as_str().unwrap_or_default();
        let sender = event["sender"].as_str().unwrap_or_default();
        let sent_at = event["origin_server_ts"].as_u64().unwrap_or(0);
        let kind = event["type"].as_str().unwrap_or_default();
        let deleted = event["unsigned"].get("redacted_because").is_some();
        let mut message = json!({
            "id": id,
            "chat_id": self.room_id,
            "chat_type": self.chat_type,
            "sender": sender,
            "sent_at": sent_at,
            "type": "deleted",
            "text": null,
            "file": null,
            "reply_to": null,
            "mentions": [],
            "edited": false,
            "edited_at": null,
            "deleted": deleted,
            "reactions": [],
        });
        let (Ok(event_id), Ok(sender_id)) = (EventId::parse(id), UserId::parse(sender)) else {
            return Ok(message);
        };
        let pdu = self.state.rooms.pdu(&event_id)?;
        let position = self
            .state
            .rooms
            .event_meta(&event_id)?
            .map_or(0, |m| m.stream_pos);
        if let Some(pdu) = &pdu {
            message["status"] = self.status(pdu, position)?;
        }
        if deleted {
            return Ok(message);
        }
        let original = &event["content"];
        let edit = &event["unsigned"]["m.relations"][REPLACE];
        let shown = match edit["content"].get("m.new_content") {
            Some(new_content) if new_content.is_object() => {
                message["edited"] = json!(true);
                message["edited_at"] = edit["origin_server_ts"].clone();
                new_content
            }
            _ => original,
        };
        let msgtype = shown["msgtype"].as_str().unwrap_or_default();
        let kind = message_type(kind, msgtype);
        message["type"] = json!(kind);
        let reply_to = original["m.relates_to"]["m.in_reply_to"]["event_id"].as_str();
        message["reply_to"] = json!(reply_to);
        let body = shown["body"].as_str();
        message["text"] = match kind {
            "text" | "notice" => json!(body.map(|b| strip_reply_fallback(b, reply_to.is_some()))),
            "image" | "file" | "video" | "audio" => json!(caption(shown)),
            _ => Value::Null,
        };
        if matches!(kind, "image" | "file" | "video" | "audio") {
            message["file"] = json!(file_object(self.state, shown, &sender_id, sent_at)?);
        }
        let mentions: Vec<String> = shown["m.mentions"]["user_ids"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(str_of)
                    .filter(|u| UserId::parse(u).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        message["mentions"] = json!(mentions);
        message["reactions"] = self.reactions(&event_id)?;
        Ok(message)
    }

    /// `[{key, count, users, mine}]`: the reactions (annotations) on a message, in the order
    /// each key was first used, without those of users the viewer ignores.
    fn reactions(&self, event_id: &EventId) -> Result<Value> {
        let mut order: Vec<String> = Vec::new();
        let mut users: HashMap<String, Vec<OwnedUserId>> = HashMap::new();
        for (_, child) in self.state.rooms.children(event_id)? {
            if child.rel_type != ANNOTATION
                || child.kind != "m.reaction"
                || self.viewer.ignored.contains(&child.sender)
            {
                continue;
            }
            let Some(key) = child.key else { continue };
            let entry = users.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                Vec::new()
            });
            if !entry.contains(&child.sender) {
                entry.push(child.sender);
            }
        }
        Ok(Value::Array(
            order
                .into_iter()
                .map(|key| {
                    let users = users.remove(&key).unwrap_or_default();
                    let mine = users.iter().any(|u| u == self.viewer.user_id);
                    json!({ "key": key, "count": users.len(), "users": users, "mine": mine })
                })
                .collect(),
        ))
    }

    /// `{state, recipient_count, recipients: [{user_id, state, delivered_at, read_at}]}` of a
    /// message: each member who was joined when it was sent (but its sender) has it `read` when
    /// a read receipt of theirs is at or after it (private receipts count only for their owner),
    /// `delivered` when their delivered receipt is, `sent` otherwise. `state` is the least
    /// advanced of all of them and `recipient_count` their number; `recipients` lists the first
    /// [`MAX_LISTED_RECIPIENTS`] by user ID. Every recipient is compared in memory (the receipts
    /// were read once for the whole page), only the listed ones become JSON.
    pub fn status(&self, pdu: &Pdu, position: u64) -> Result<Value> {
        let recipients = match self.recipients.get() {
            Some(recipients) => recipients,
            None => {
                let loaded = self.load_recipients()?;
                self.recipients.get_or_init(|| loaded)
            }
        };
        let content: Value = serde_json::from_str(pdu.content().get()).unwrap_or_default();
        let thread = crate::service::receipts::thread_root(&content).map(str::to_owned);
        let mut least = 2;
        let mut count = 0usize;
        let mut out = Vec::new();
        for recipient in recipients {
            if recipient.user == pdu.sender() || recipient.joined_at >= position {
                continue;
            }
            let read_at = recipient
                .read
                .iter()
                .filter(|(key, receipt)| {
                    receipt.event_pos >= position
                        && (key.kind == ReceiptKind::Read || key.user == self.viewer.user_id)
                        && match key.thread.as_deref() {
                            None => true,
                            Some(MAIN_THREAD) => thread.is_none(),
                            Some(root) => thread.as_deref() == Some(root),
                        }
                })
                .map(|(_, receipt)| receipt.ts)
                .min();
            let delivered_at = recipient
                .delivered
                .as_ref()
                .filter(|r| r.event_pos >= position)
                .map(|r| r.ts)
                .or(read_at);
            let (rank, label) = match (read_at, delivered_at) {
                (Some(_), _) => (2, "read"),
                (None, Some(_)) => (1, "delivered"),
                _ => (0, "sent"),
            };
            least = least.min(rank);
            count += 1;
            if out.len() >= MAX_LISTED_RECIPIENTS {
                continue;
            }
            out.push(json!({
                "user_id": recipient.user,
                "state": label,
                "delivered_at": delivered_at,
                "read_at": read_at,
            }));
        }
        let state = match (count == 0, least) {
            (true, _) | (_, 0) => "sent",
            (_, 1) => "delivered",
            _ => "read",
        };
        Ok(json!({ "state": state, "recipient_count": count, "recipients": out }))
    }

    /// Every joined member's receipts, in user ID order (the order recipients are listed in).
    fn load_recipients(&self) -> Result<Vec<RecipientReceipts>> {
        let rooms = &self.state.rooms;
        let mut out = Vec::new();
        for (user, _) in rooms.members(&self.room_id, Some("join"))? {
            let Ok(user) = OwnedUserId::try_from(user) else {
                continue;
            };
            let delivered = self.state.receipts.get(
                &self.room_id,
                &ReceiptKey {
                    kind: ReceiptKind::Delivered,
                    user: user.clone(),
                    thread: None,
                },
            )?;
            out.push(RecipientReceipts {
                joined_at: rooms.joined_at(&self.room_id, &user)?,
                read: self.state.receipts.read_receipts(&self.room_id, &user)?,
                delivered,
                user,
            });
        }
        out.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(out)
    }
}

/// The Message `type` of an event type and `msgtype`.
fn message_type(kind: &str, msgtype: &str) -> &'static str {
    match (kind, msgtype) {
        ("m.sticker", _) => "image",
        ("m.room.message", "m.text" | "m.emote") => "text",
        ("m.room.message", "m.notice") => "notice",
        ("m.room.message", "m.image") => "image",
        ("m.room.message", "m.file") => "file",
        ("m.room.message", "m.video") => "video",
        ("m.room.message", "m.audio") => "audio",
        _ => "other",
    }
}

/// The caption of a file message: its `body` when a separate `filename` is given and differs
/// (otherwise the body is only the file name).
fn caption(content: &Value) -> Option<&str> {
    let body = content["body"].as_str()?;
    let filename = content["filename"].as_str()?;
    (body != filename).then_some(body)
}

/// A reply's body without the quoted fallback older clients put before it (lines starting with
/// `>`, then an empty line).
fn strip_reply_fallback(body: &str, is_reply: bool) -> String {
    if !is_reply || !body.starts_with("> ") {
        return body.to_owned();
    }
    // The fallback ends at the first empty line; without one, the body is all quote.
    match body.split_once("\n\n") {
        Some((quote, rest)) if quote.split('\n').all(|line| line.starts_with('>')) => {
            rest.to_owned()
        }
        _ => body.to_owned(),
    }
}

/// The uploaded file a new message carries.
pub struct AttachedFile {
    /// `mxc://server/media`.
    pub mxc: String,
    pub name: String,
    pub mime_type: String,
    pub size: u64,
    /// Pixel width and height, for images whose size is known.
    pub dimensions: Option<(u32, u32)>,
}

/// The content of the Matrix `m.room.message` a Chat API message becomes.
pub struct NewMessage<'a> {
    /// `m.text`, `m.image`, `m.file`, `m.video`, `m.audio`.
    pub msgtype: &'a str,
    pub text: Option<&'a str>,
    pub file: Option<AttachedFile>,
    pub reply_to: Option<&'a EventId>,
    pub mentions: &'a [OwnedUserId],
}

impl NewMessage<'_> {
    /// The event content: `body` (the text, or the file name), `filename` and `url` with `info`
    /// for files, `m.mentions` (always present, so clients do not guess mentions from the body)
    /// and the rich-reply relation.
    pub fn content(&self) -> Value {
        let mut content = Map::new();
        content.insert("msgtype".into(), json!(self.msgtype));
        match &self.file {
            Some(file) => {
                content.insert("body".into(), json!(self.text.unwrap_or(&file.name)));
                content.insert("filename".into(), json!(file.name));
                content.insert("url".into(), json!(file.mxc));
                let mut info = json!({ "mimetype": file.mime_type, "size": file.size });
                if let Some((w, h)) = file.dimensions {
                    info["w"] = json!(w);
                    info["h"] = json!(h);
                }
                content.insert("info".into(), info);
            }
            None => {
                content.insert("body".into(), json!(self.text.unwrap_or_default()));
            }
        }
        content.insert("m.mentions".into(), json!({ "user_ids": self.mentions }));
        if let Some(parent) = self.reply_to {
            content.insert(
                "m.relates_to".into(),
                json!({ "m.in_reply_to": { "event_id": parent } }),
            );
        }
        Value::Object(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_from_msgtypes() {
        assert_eq!(message_type("m.room.message", "m.text"), "text");
        assert_eq!(message_type("m.room.message", "m.image"), "image");
        assert_eq!(message_type("m.room.message", "m.notice"), "notice");
        assert_eq!(message_type("m.room.message", "m.location"), "other");
        assert_eq!(message_type("m.room.encrypted", ""), "other");
        assert_eq!(message_type("m.sticker", ""), "image");
    }

    #[test]
    fn reply_fallbacks_are_stripped() {
        let body = "> <@a:x> hello\n> more\n\nthe answer";
        assert_eq!(strip_reply_fallback(body, true), "the answer");
        assert_eq!(strip_reply_fallback(body, false), body);
        assert_eq!(strip_reply_fallback("> quote only", true), "> quote only");
        assert_eq!(strip_reply_fallback("plain", true), "plain");
    }

    #[test]
    fn captions_only_when_distinct_from_the_file_name() {
        assert_eq!(caption(&json!({ "body": "a.png" })), None);
        assert_eq!(
            caption(&json!({ "body": "a.png", "filename": "a.png" })),
            None
        );
        assert_eq!(
            caption(&json!({ "body": "look", "filename": "a.png" })),
            Some("look")
        );
    }

    #[test]
    fn new_message_content() {
        let parent = EventId::parse("$p").unwrap();
        let mentions = [UserId::parse("@b:x").unwrap()];
        let text = NewMessage {
            msgtype: "m.text",
            text: Some("hi"),
            file: None,
            reply_to: Some(&parent),
            mentions: &mentions,
        }
        .content();
        assert_eq!(text["body"], "hi");
        assert_eq!(text["m.mentions"]["user_ids"][0], "@b:x");
        assert_eq!(text["m.relates_to"]["m.in_reply_to"]["event_id"], "$p");
        let image = NewMessage {
            msgtype: "m.image",
            text: None,
            file: Some(AttachedFile {
                mxc: "mxc://x/m".into(),
                name: "a.png".into(),
                mime_type: "image/png".into(),
                size: 3,
                dimensions: Some((2, 1)),
            }),
            reply_to: None,
            mentions: &[],
        }
        .content();
        assert_eq!(image["body"], "a.png");
        assert_eq!(image["info"]["w"], 2);
        assert!(image.get("m.relates_to").is_none());
    }
}
