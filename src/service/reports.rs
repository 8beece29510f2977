//! Content reports: users report events, rooms and other users to the server's administrators.
//!
//! Each report is one entry of `reportid_report`, keyed by a big-endian report ID so that the
//! tree lists them oldest first; it is durable before the reporter gets an answer. Admins read
//! them with `roost reports list`, which works while the server is stopped.

use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::Services;
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, keys, trees};
use crate::util::now_ms;

/// The longest reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 1000;

/// The scores an event report may give (the specification's former `score`: -100 is the most
/// offensive, 0 inoffensive).
pub const SCORES: std::ops::RangeInclusive<i64> = -100..=0;

/// What a report is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReportTarget {
    Event {
        room_id: OwnedRoomId,
        event_id: OwnedEventId,
    },
    Room {
        room_id: OwnedRoomId,
    },
    User {
        user_id: OwnedUserId,
    },
}

impl std::fmt::Display for ReportTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportTarget::Event { room_id, event_id } => write!(f, "event {event_id} in {room_id}"),
            ReportTarget::Room { room_id } => write!(f, "room {room_id}"),
            ReportTarget::User { user_id } => write!(f, "user {user_id}"),
        }
    }
}

/// One stored report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub id: u64,
    pub reporter: OwnedUserId,
    pub target: ReportTarget,
    /// As given; `None` when the reporter gave none (event reports may leave it out).
    pub reason: Option<String>,
    pub score: Option<i64>,
    /// When the report was received, in milliseconds since the Unix epoch.
    pub ts: u64,
}

impl Report {
    /// One line for an administrator: ID, time (UTC), reporter, target, score and reason (quoted
    /// and escaped, so that a reason cannot break the line or send control characters to a
    /// terminal).
    pub fn line(&self) -> String {
        let score = self.score.map_or("-".to_owned(), |s| s.to_string());
        let reason = self
            .reason
            .as_deref()
            .map_or("-".to_owned(), |r| format!("{r:?}"));
        format!(
            "{}\t{}\t{}\t{}\tscore {score}\t{reason}",
            self.id,
            format_utc(self.ts),
            self.reporter,
            self.target,
        )
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (proleptic Gregorian calendar), from Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The report store.
pub struct Reports {
    store: Store,
    tree: Tree,
}

impl Reports {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            tree: store.tree(trees::REPORTID_REPORT)?,
        })
    }

    /// Checks what a reporter wrote: the reason's length and the score's range.
    pub fn check(reason: Option<&str>, score: Option<i64>) -> Result<()> {
        if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
            return Err(Error::InvalidParam(format!(
                "reason may be at most {MAX_REASON_CHARS} characters"
            )));
        }
        if score.is_some_and(|s| !SCORES.contains(&s)) {
            return Err(Error::InvalidParam(format!(
                "score must be between {} and {}",
                SCORES.start(),
                SCORES.end()
            )));
        }
        Ok(())
    }

    /// Stores a report and waits until it is durable.
    pub async fn add(
        &self,
        reporter: &UserId,
        target: ReportTarget,
        reason: Option<String>,
        score: Option<i64>,
    ) -> Result<Report> {
        Self::check(reason.as_deref(), score)?;
        // Monotonic across restarts, so keys sort in the order reports arrived.
        let id = self.store.generate_id()?;
        let report = Report {
            id,
            reporter: reporter.to_owned(),
            target,
            reason,
            score,
            ts: now_ms(),
        };
        self.tree
            .put(keys::u64_be(id), serde_json::to_vec(&report)?)?;
        self.store.durable().await?;
        Ok(report)
    }

    /// The newest reports, newest first, at most `limit`.
    pub fn list(&self, limit: usize) -> Result<Vec<Report>> {
        self.tree
            .scan_prefix(b"")
            .rev()
            .take(limit)
            .map(|item| {
                let (_, value) = item?;
                Ok(serde_json::from_slice(&value)?)
            })
            .collect()
    }

    /// How many reports are stored.
    pub fn count(&self) -> Result<usize> {
        let mut n = 0;
        for item in self.tree.iter() {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

impl Services {
    /// Reports an event of a room the reporter is joined to. Unknown events, events of another
    /// room, events the reporter may not see and rooms they are not joined to all answer the
    /// same 404, as the specification says.
    pub async fn report_event(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        event_id: &EventId,
        reason: Option<String>,
        score: Option<i64>,
    ) -> Result<Report> {
        Reports::check(reason.as_deref(), score)?;
        self.limit_reports(reporter)?;
        let not_found =
            || Error::NotFound("the event was not found or you are not joined to the room".into());
        if self.rooms.membership(room_id, reporter)?.as_deref() != Some("join") {
            return Err(not_found());
        }
        let meta = self.rooms.event_meta(event_id)?.ok_or_else(not_found)?;
        let pdu = self.rooms.pdu(event_id)?.ok_or_else(not_found)?;
        let reader = self.rooms.reader(room_id, reporter)?;
        if meta.room_id != room_id || !self.rooms.is_visible(&reader, &pdu, &meta)? {
            return Err(not_found());
        }
        let target = ReportTarget::Event {
            room_id: room_id.to_owned(),
            event_id: event_id.to_owned(),
        };
        self.reports.add(reporter, target, reason, score).await
    }

    /// Reports a room this server knows (the reporter need not be in it).
    pub async fn report_room(
        &self,
        reporter: &UserId,
        room_id: &RoomId,
        reason: String,
    ) -> Result<Report> {
        Reports::check(Some(&reason), None)?;
        self.limit_reports(reporter)?;
        if self.rooms.info(room_id)?.is_none() {
            return Err(Error::NotFound("the room was not found".into()));
        }
        let target = ReportTarget::Room {
            room_id: room_id.to_owned(),
        };
        self.reports.add(reporter, target, Some(reason), None).await
    }

    /// Reports a user of this server (remote users are unknown until federation exists).
    pub async fn report_user(
        &self,
        reporter: &UserId,
        user_id: &UserId,
        reason: String,
    ) -> Result<Report> {
        Reports::check(Some(&reason), None)?;
        self.limit_reports(reporter)?;
        if !self.accounts.exists(user_id)? {
            return Err(Error::NotFound("the user was not found".into()));
        }
        let target = ReportTarget::User {
            user_id: user_id.to_owned(),
        };
        self.reports.add(reporter, target, Some(reason), None).await
    }

    fn limit_reports(&self, reporter: &UserId) -> Result<()> {
        self.rate_limits.check(
            super::ratelimit::Limit::ReportsPerAccount,
            reporter.as_str(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_scores_are_bounded() {
        assert!(Reports::check(None, None).is_ok());
        assert!(Reports::check(Some(""), Some(-100)).is_ok());
        assert!(Reports::check(Some(&"r".repeat(MAX_REASON_CHARS)), Some(0)).is_ok());
        for (reason, score) in [
            (Some("r".repeat(MAX_REASON_CHARS + 1)), None),
            (None, Some(1)),
            (None, Some(-101)),
        ] {
            assert!(matches!(
                Reports::check(reason.as_deref(), score),
                Err(Error::InvalidParam(_))
            ));
        }
    }

    #[test]
    fn timestamps_are_shown_in_utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(format_utc(4_102_444_799_000), "2099-12-31T23:59:59Z");
        let report = Report {
            id: 7,
            reporter: UserId::parse("@a:x").unwrap(),
            target: ReportTarget::Room {
                room_id: RoomId::parse("!r:x").unwrap(),
            },
            reason: Some("bad\tthings\n\u{1b}[31m".into()),
            score: None,
            ts: 0,
        };
        let line = report.line();
        assert_eq!(line.lines().count(), 1);
        assert!(!line.contains('\u{1b}'));
        assert!(line.starts_with("7\t1970-01-01T00:00:00Z\t@a:x\troom !r:x\tscore -\t"));
    }

    #[tokio::test]
    async fn reports_are_listed_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reports = Reports::new(&store).unwrap();
        let alice = UserId::parse("@alice:x").unwrap();
        for name in ["@a:x", "@b:x", "@c:x"] {
            let target = ReportTarget::User {
                user_id: UserId::parse(name).unwrap(),
            };
            reports
                .add(&alice, target, Some("spam".into()), None)
                .await
                .unwrap();
        }
        let listed = reports.list(2).unwrap();
        let targets: Vec<String> = listed.iter().map(|r| r.target.to_string()).collect();
        assert_eq!(targets, ["user @c:x", "user @b:x"]);
        assert!(listed[0].id > listed[1].id);
        assert_eq!(reports.count().unwrap(), 3);
    }
}
