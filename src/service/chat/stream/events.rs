//! The stream's events: what happened, in chat terms, with the IDs the Chat API needs to show it.

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde_json::Value;

use crate::service::chat::feed::NotificationView;

/// Why a direct chat ended, as the other side sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The invited user turned the request down.
    Declined,
    /// The user who asked took the request back.
    Cancelled,
    /// One of two friends left.
    Removed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Declined => "declined",
            Self::Cancelled => "cancelled",
            Self::Removed => "removed",
        }
    }
}

/// What changed about a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    Name,
    Topic,
    Picture,
    /// The power levels: who is an admin.
    Roles,
    /// A member joined, was invited, left, was removed or banned.
    Member {
        user: OwnedUserId,
        membership: String,
        previous: Option<String>,
    },
}

/// The call signalling events, by their Matrix types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallSignal {
    Invite,
    Answer,
    Candidates,
    Hangup,
    Reject,
}

impl CallSignal {
    pub(super) fn of(kind: &str) -> Option<Self> {
        Some(match kind {
            "m.call.invite" => Self::Invite,
            "m.call.answer" => Self::Answer,
            "m.call.candidates" => Self::Candidates,
            "m.call.hangup" => Self::Hangup,
            "m.call.reject" => Self::Reject,
            _ => return None,
        })
    }
}

/// One thing that happened, in chat terms, with the IDs the API needs to show it.
#[derive(Debug, Clone)]
pub enum ChatEvent {
    MessageNew {
        room: OwnedRoomId,
        message: OwnedEventId,
    },
    /// An edit of `message` arrived, or one was redacted: the message now reads differently.
    MessageEdited {
        room: OwnedRoomId,
        message: OwnedEventId,
    },
    MessageDeleted {
        room: OwnedRoomId,
        message: OwnedEventId,
        by: OwnedUserId,
    },
    ReactionAdded {
        room: OwnedRoomId,
        message: OwnedEventId,
        reaction: OwnedEventId,
        key: String,
        user: OwnedUserId,
    },
    ReactionRemoved {
        room: OwnedRoomId,
        message: OwnedEventId,
        reaction: OwnedEventId,
        user: OwnedUserId,
    },
    Call {
        signal: CallSignal,
        room: OwnedRoomId,
        event: OwnedEventId,
        sender: OwnedUserId,
        /// The event's content (never redacted: redacted signalling is left out).
        content: Value,
        at: u64,
    },
    GroupUpdated {
        room: OwnedRoomId,
        change: GroupChange,
        by: OwnedUserId,
    },
    FriendRequest {
        room: OwnedRoomId,
        peer: OwnedUserId,
        /// The peer asked (else the user did, from another connection or client).
        incoming: bool,
        at: u64,
    },
    FriendAccepted {
        room: OwnedRoomId,
        peer: OwnedUserId,
        at: u64,
    },
    FriendRemoved {
        room: OwnedRoomId,
        peer: OwnedUserId,
        reason: EndReason,
    },
    /// The users now typing in a chat (the user left out).
    Typing {
        room: OwnedRoomId,
        users: Vec<OwnedUserId>,
    },
    Receipt {
        room: OwnedRoomId,
        message: OwnedEventId,
        user: OwnedUserId,
        /// Read (else delivered).
        read: bool,
        at: u64,
    },
    /// A friend's presence changed; `content` is the Matrix presence content.
    Presence { user: OwnedUserId, content: Value },
    /// A new entry of the user's notification feed (`GET /notifications`).
    Notification(NotificationView),
}
