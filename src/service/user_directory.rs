//! The user directory (`POST /user_directory/search`): users found by user ID and display name.
//!
//! A search looks at the users the searcher may find: those who share a room with them (both
//! joined) and those joined to a public room (join rule `public`, or world-readable history), or
//! every local user when `user_directory.search_all_users` is on. Deactivated users are never
//! found. Every word of the search term must be the start of a word of the user's display name or
//! of their user ID (localpart or server name), ignoring case.
//!
//! The searcher's own rooms are read at each search (at most 1000 of them), which costs what
//! those rooms hold. The members of public rooms are kept in memory ([`UserDirectory`]) instead
//! of reading every room at each search: the cache remembers, per room, the state snapshot it
//! last looked at, and before a search it catches up on the rooms that changed since the stream
//! position it reflects (from the rooms' recent-changes index), reading again only those whose
//! state snapshot moved. It reads every room once: at the first search, and again whenever the
//! recent-changes window no longer reaches back to its position.

use std::collections::HashMap;
use std::sync::Mutex;

use ruma::events::StateEventType;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Serialize;
use serde_json::Value;

use super::Services;
use super::rooms::Rooms;
use crate::error::{Error, Result};

/// The results a search answers when the request gives no `limit`.
pub const DEFAULT_LIMIT: u64 = 10;

/// The longest search term accepted, in characters.
pub const MAX_TERM_CHARS: usize = 256;

/// The searcher's joined rooms whose members a search reads (the bound on the walk over their
/// rooms; members of public rooms beyond it are still found through the cache).
const MAX_SHARED_ROOMS: usize = 1000;

/// The members of the rooms everyone may look into, kept current as rooms change.
#[derive(Default)]
pub struct UserDirectory {
    public: Mutex<PublicMembers>,
}

#[derive(Default)]
struct PublicMembers {
    /// Every room change up to this stream position is reflected; `None` until built (or after
    /// a failure part-way through catching up).
    position: Option<u64>,
    /// Per room: the state snapshot last looked at and, for a public room, its joined members.
    rooms: HashMap<OwnedRoomId, RoomEntry>,
    /// The users joined to at least one public room, with the number of such rooms.
    users: HashMap<OwnedUserId, usize>,
}

struct RoomEntry {
    snapshot: Option<u64>,
    /// Empty unless the room is public.
    members: Vec<OwnedUserId>,
}

impl PublicMembers {
    /// Brings the cache up to `upto`: the rooms changed since its position, or every room.
    fn catch_up(&mut self, rooms: &Rooms, upto: u64) -> Result<()> {
        let changed = match self.position.and_then(|p| rooms.rooms_changed_since(p)) {
            Some(changed) => changed.into_iter().collect(),
            None => {
                self.rooms.clear();
                self.users.clear();
                rooms.room_ids()?
            }
        };
        self.position = None;
        for room_id in changed {
            self.look_at(rooms, &room_id)?;
        }
        self.position = Some(upto);
        Ok(())
    }

    /// Reads a room again if its state changed since the last look.
    fn look_at(&mut self, rooms: &Rooms, room_id: &RoomId) -> Result<()> {
        let snapshot = rooms.info(room_id)?.and_then(|info| info.snapshot);
        if self
            .rooms
            .get(room_id)
            .is_some_and(|entry| entry.snapshot == snapshot)
        {
            return Ok(());
        }
        let members = if is_public(rooms, room_id)? {
            joined_members(rooms, room_id)?
        } else {
            Vec::new()
        };
        for user in &members {
            *self.users.entry(user.clone()).or_default() += 1;
        }
        let entry = RoomEntry { snapshot, members };
        if let Some(old) = self.rooms.insert(room_id.to_owned(), entry) {
            for user in old.members {
                if let Some(count) = self.users.get_mut(&user) {
                    *count -= 1;
                    if *count == 0 {
                        self.users.remove(&user);
                    }
                }
            }
        }
        Ok(())
    }
}

impl UserDirectory {
    /// Calls `found` with every user joined to a public room, as of stream position `upto` or
    /// later.
    fn public_users(
        &self,
        rooms: &Rooms,
        upto: u64,
        mut found: impl FnMut(&OwnedUserId),
    ) -> Result<()> {
        let mut public = self
            .public
            .lock()
            .map_err(|_| Error::internal("user directory cache poisoned"))?;
        public.catch_up(rooms, upto)?;
        public.users.keys().for_each(&mut found);
        Ok(())
    }
}

/// Whether everyone may find a room's members: its join rule is `public` or its history is
/// world-readable.
fn is_public(rooms: &Rooms, room_id: &RoomId) -> Result<bool> {
    let state = rooms.current_state(room_id)?;
    let field = |kind: StateEventType, field: &str| -> Result<Option<String>> {
        Ok(rooms
            .state_content(&state, &kind)?
            .and_then(|content| content.get(field)?.as_str().map(str::to_owned)))
    };
    Ok(
        field(StateEventType::RoomJoinRules, "join_rule")?.as_deref() == Some("public")
            || field(StateEventType::RoomHistoryVisibility, "history_visibility")?.as_deref()
                == Some("world_readable"),
    )
}

fn joined_members(rooms: &Rooms, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
    Ok(rooms
        .members(room_id, Some("join"))?
        .into_iter()
        .filter_map(|(user, _)| OwnedUserId::try_from(user).ok())
        .collect())
}

/// The lower-cased words of a text: its runs of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether every word of the term starts a word of the display name or the user ID.
fn matches(term: &[String], user_id: &UserId, display_name: Option<&str>) -> bool {
    let mut own = words(user_id.localpart());
    own.extend(words(user_id.server_name().as_str()));
    own.extend(display_name.map(words).unwrap_or_default());
    term.iter().all(|word| {
        own.iter()
            .any(|candidate| candidate.starts_with(word.as_str()))
    })
}

/// One user found.
#[derive(Debug, Clone, Serialize)]
pub struct FoundUser {
    pub user_id: OwnedUserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    /// Whether the user shares a room with the searcher.
    #[serde(skip)]
    pub shares_room: bool,
}

/// The answer to a search.
#[derive(Debug, Clone)]
pub struct DirectoryResults {
    /// Users sharing a room with the searcher first, then users with a display name, then by
    /// user ID.
    pub results: Vec<FoundUser>,
    /// Whether more users matched than `results` holds.
    pub limited: bool,
}

impl Services {
    /// Searches the users `searcher` may find for `term`, answering at most `limit`.
    pub fn search_user_directory(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
    ) -> Result<DirectoryResults> {
        if term.chars().count() > MAX_TERM_CHARS {
            return Err(Error::InvalidParam(format!(
                "search_term may be at most {MAX_TERM_CHARS} characters"
            )));
        }
        let term = words(term);
        if term.is_empty() {
            return Ok(DirectoryResults {
                results: Vec::new(),
                limited: false,
            });
        }
        // Candidates, and whether they share a room with the searcher. This walks the searcher's
        // rooms and reads their member lists, at most `MAX_SHARED_ROOMS` of them.
        let mut candidates: HashMap<OwnedUserId, bool> = HashMap::new();
        let shared = self.rooms.rooms_of(searcher, "join")?;
        for room_id in shared.into_iter().take(MAX_SHARED_ROOMS) {
            for user in joined_members(&self.rooms, &room_id)? {
                candidates.insert(user, true);
            }
        }
        if self.config.user_directory.search_all_users {
            for (user, account) in self.accounts.list()? {
                if !account.deactivated
                    && let Ok(user) = OwnedUserId::try_from(user)
                {
                    candidates.entry(user).or_insert(false);
                }
            }
        } else {
            let upto = self.store.sequencer().upto();
            self.user_directory
                .public_users(&self.rooms, upto, |user| {
                    if !candidates.contains_key(user) {
                        candidates.insert(user.clone(), false);
                    }
                })?;
        }
        let mut results = Vec::new();
        for (user_id, shares_room) in candidates {
            let (display_name, avatar_url) = self.directory_profile(&user_id)?;
            if !matches(&term, &user_id, display_name.as_deref()) {
                continue;
            }
            if self.is_local_user(&user_id) && !self.is_active_user(&user_id)? {
                continue;
            }
            results.push(FoundUser {
                user_id,
                display_name,
                avatar_url,
                shares_room,
            });
        }
        results.sort_by(|a, b| {
            b.shares_room
                .cmp(&a.shares_room)
                .then_with(|| a.display_name.is_none().cmp(&b.display_name.is_none()))
                .then_with(|| a.user_id.cmp(&b.user_id))
        });
        let limited = results.len() > limit;
        results.truncate(limit);
        Ok(DirectoryResults { results, limited })
    }

    fn is_local_user(&self, user_id: &UserId) -> bool {
        user_id.server_name().as_str() == self.config.server_name
    }

    /// The display name and avatar URL of a local user's profile (none for remote users, whose
    /// profiles this server does not hold).
    fn directory_profile(&self, user_id: &UserId) -> Result<(Option<String>, Option<String>)> {
        if !self.is_local_user(user_id) {
            return Ok((None, None));
        }
        let profile = self.profiles.get(user_id)?;
        let field = |name: &str| {
            profile
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok((field("displayname"), field("avatar_url")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_must_start_a_word_of_the_name_or_the_id() {
        let user = UserId::parse("@alice.smith:example.org").unwrap();
        let matches = |term: &str, name: Option<&str>| matches(&words(term), &user, name);
        assert!(matches("ali", None));
        assert!(matches("SMI", None));
        assert!(matches("@alice.smith:example.org", None));
        assert!(matches("alice exa", None));
        assert!(matches("wonder", Some("Alice in Wonderland")));
        assert!(matches("wonder ALI", Some("Alice in Wonderland")));
        assert!(matches("élo", Some("Éloïse")));
        assert!(!matches("lice", None));
        assert!(!matches("alice bob", Some("Alice")));
        assert!(!matches("land", Some("Alice in Wonderland")));
        assert!(words("  @:.. ").is_empty());
    }
}
