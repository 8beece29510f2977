//! `search`: server-side full-text search (`POST /search`) over a large message history.
//!
//! Setup fills `--rooms` rooms with `--messages` messages, sent concurrently by `--senders`
//! users (every sender in every room). The messages are made of English words drawn with a
//! Zipf distribution from a fixed vocabulary (so a common word is in most messages and a
//! middling one in a few percent), plus one rare word in one message of [`RARE_EVERY`]. Then it
//! measures, one search at a time, as the first sender (who is in every room): `--searches`
//! searches for single vocabulary words picked at random (`search`), and `--repeats` searches
//! each for the rare word (`search_rare`) and for the most common one (`search_common`), all
//! ordered by rank with the default page of 10.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Bench, Failures, Scenario, Summary, Target, api, concurrently, create_rooms_in_turn, join_room,
    scale, send_message,
};

pub const DEFAULT_MESSAGES: usize = 100_000;
pub const DEFAULT_ROOMS: usize = 20;
pub const DEFAULT_SENDERS: usize = 20;
pub const DEFAULT_SEARCHES: usize = 300;
pub const DEFAULT_REPEATS: usize = 20;
/// One message in this many holds the rare word: message `RARE_EVERY * n + 7`.
pub const RARE_EVERY: usize = 10_000;
const RARE_OFFSET: usize = 7;
/// The rare word (not in the vocabulary).
pub const RARE_WORD: &str = "quetzal";
/// How long the setup waits for the server's index to reach the last message.
const INDEX_WAIT: Duration = Duration::from_secs(600);

/// The vocabulary, most frequent first (word `r` is drawn with a weight of `1 / r`).
const VOCABULARY: &[&str] = &[
    "the",
    "and",
    "to",
    "of",
    "a",
    "in",
    "is",
    "it",
    "you",
    "that",
    "we",
    "for",
    "on",
    "this",
    "be",
    "with",
    "are",
    "have",
    "not",
    "but",
    "at",
    "was",
    "so",
    "can",
    "do",
    "if",
    "just",
    "from",
    "they",
    "will",
    "what",
    "all",
    "about",
    "there",
    "one",
    "like",
    "out",
    "up",
    "me",
    "get",
    "would",
    "time",
    "know",
    "think",
    "more",
    "when",
    "some",
    "now",
    "see",
    "how",
    "good",
    "new",
    "people",
    "also",
    "then",
    "make",
    "today",
    "work",
    "back",
    "want",
    "day",
    "really",
    "here",
    "need",
    "way",
    "going",
    "still",
    "because",
    "any",
    "first",
    "after",
    "meeting",
    "well",
    "thanks",
    "look",
    "tomorrow",
    "right",
    "much",
    "again",
    "next",
    "week",
    "great",
    "last",
    "sure",
    "maybe",
    "should",
    "could",
    "team",
    "soon",
    "please",
    "change",
    "something",
    "over",
    "take",
    "help",
    "find",
    "long",
    "little",
    "place",
    "build",
    "update",
    "home",
    "test",
    "lunch",
    "coffee",
    "release",
    "review",
    "morning",
    "weekend",
    "problem",
    "start",
    "try",
    "tell",
    "call",
    "issue",
    "server",
    "idea",
    "plan",
    "done",
    "send",
    "write",
    "read",
    "open",
    "close",
    "file",
    "link",
    "fix",
    "feature",
    "document",
    "project",
    "report",
    "question",
    "answer",
    "message",
    "room",
    "phone",
    "email",
    "music",
    "movie",
    "book",
    "train",
    "city",
    "street",
    "garden",
    "kitchen",
    "dinner",
    "breakfast",
    "weather",
    "rain",
    "sun",
    "snow",
    "summer",
    "winter",
    "spring",
    "autumn",
    "holiday",
    "travel",
    "airport",
    "ticket",
    "hotel",
    "beach",
    "mountain",
    "river",
    "lake",
    "forest",
    "bike",
    "car",
    "bus",
    "walk",
    "run",
    "swim",
    "game",
    "match",
    "score",
    "player",
    "football",
    "tennis",
    "chess",
    "piano",
    "guitar",
    "song",
    "concert",
    "party",
    "birthday",
    "present",
    "friend",
    "family",
    "brother",
    "sister",
    "mother",
    "father",
    "child",
    "baby",
    "dog",
    "cat",
    "bird",
    "horse",
    "apple",
    "banana",
    "orange",
    "bread",
    "cheese",
    "butter",
    "milk",
    "tea",
    "sugar",
    "salt",
    "pepper",
    "soup",
    "salad",
    "pizza",
    "pasta",
    "rice",
    "chicken",
    "fish",
    "cake",
    "cookie",
    "chocolate",
    "window",
    "door",
    "table",
    "chair",
    "lamp",
    "clock",
    "picture",
    "paper",
    "pencil",
    "screen",
    "keyboard",
    "mouse",
    "laptop",
    "battery",
    "charger",
    "cable",
    "printer",
    "camera",
    "photo",
    "video",
    "podcast",
    "newsletter",
    "invoice",
    "budget",
    "deadline",
    "schedule",
    "calendar",
    "agenda",
    "workshop",
    "conference",
    "presentation",
    "slides",
    "spreadsheet",
    "database",
    "backup",
    "password",
    "account",
    "profile",
    "settings",
    "notification",
    "download",
    "upload",
    "install",
    "restart",
    "crash",
    "bug",
    "patch",
    "version",
    "branch",
    "merge",
    "commit",
    "deploy",
    "staging",
    "production",
    "monitoring",
    "latency",
    "throughput",
    "memory",
    "disk",
    "network",
    "router",
    "firewall",
    "certificate",
    "encryption",
    "signature",
    "protocol",
    "federation",
    "homeserver",
    "bridge",
    "bot",
    "widget",
    "emoji",
    "sticker",
    "reaction",
    "thread",
    "reply",
    "mention",
    "lighthouse",
    "harbour",
    "violin",
    "telescope",
    "volcano",
    "glacier",
    "canyon",
    "meadow",
    "orchard",
    "vineyard",
    "lantern",
    "compass",
    "anchor",
    "saddle",
    "tapestry",
];

#[derive(Clone, Debug, PartialEq, Serialize, clap::Args)]
pub struct Config {
    /// Messages in the history searched.
    #[arg(long, default_value_t = DEFAULT_MESSAGES)]
    pub messages: usize,
    /// Rooms the messages are spread over.
    #[arg(long, default_value_t = DEFAULT_ROOMS)]
    pub rooms: usize,
    /// Users sending the messages, all at once (each in every room).
    #[arg(long, default_value_t = DEFAULT_SENDERS)]
    pub senders: usize,
    /// Searches for single words picked at random from the vocabulary.
    #[arg(long, default_value_t = DEFAULT_SEARCHES)]
    pub searches: usize,
    /// Searches for the rare word, and as many for the most common one.
    #[arg(long, default_value_t = DEFAULT_REPEATS)]
    pub repeats: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            messages: DEFAULT_MESSAGES,
            rooms: DEFAULT_ROOMS,
            senders: DEFAULT_SENDERS,
            searches: DEFAULT_SEARCHES,
            repeats: DEFAULT_REPEATS,
        }
    }
}

/// A small deterministic generator (SplitMix64), so every run sends the same texts.
struct Words {
    state: u64,
    /// Cumulative Zipf weights of the vocabulary.
    cumulative: Vec<f64>,
}

impl Words {
    fn new(seed: u64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=VOCABULARY.len())
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Self {
            state: seed,
            cumulative,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A vocabulary word, Zipf-distributed.
    fn zipf(&mut self) -> &'static str {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let target = self.unit() * total;
        let rank = self.cumulative.partition_point(|c| *c < target);
        VOCABULARY[rank.min(VOCABULARY.len() - 1)]
    }

    /// A vocabulary word, every one as likely.
    fn uniform(&mut self) -> &'static str {
        VOCABULARY[(self.next_u64() % VOCABULARY.len() as u64) as usize]
    }
}

/// The text of message `i`: 6 to 20 words, the rare word in one message of [`RARE_EVERY`].
pub fn message_text(i: usize) -> String {
    let mut words = Words::new(i as u64);
    let count = 6 + (words.next_u64() % 15) as usize;
    let mut text: Vec<&str> = (0..count).map(|_| words.zipf()).collect();
    if i % RARE_EVERY == RARE_OFFSET {
        let at = (words.next_u64() % count as u64) as usize;
        text.insert(at, RARE_WORD);
    }
    let mut text = text.join(" ");
    if let Some(first) = text.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    text.push('.');
    text
}

/// `POST /search` for one word, ranked, with the default page: the `room_events` answer.
async fn search(api: &crate::Api, user: &crate::User, word: &str) -> Result<Value> {
    let reply = api
        .post(
            &api::v3("/search"),
            Some(&user.access_token),
            &json!({ "search_categories": { "room_events": { "search_term": word } } }),
        )
        .await?;
    Ok(reply["search_categories"]["room_events"].clone())
}

fn result_count(room_events: &Value) -> usize {
    room_events["results"].as_array().map_or(0, Vec::len)
}

impl Scenario for Config {
    const NAME: &'static str = "search";

    fn users_needed(&self) -> usize {
        self.senders
    }

    fn scaled(&self, factor: f64) -> Self {
        Self {
            messages: scale(self.messages, factor),
            ..self.clone()
        }
    }

    fn is_standard(&self) -> bool {
        *self == Self::default()
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::at_most("search.p50", 25.0),
            Target::at_most("search.p99", 100.0),
        ]
    }

    async fn run(&self, bench: &Bench) -> Result<Summary> {
        let senders = self.senders.max(1);
        let room_count = self.rooms.max(1);
        let users = bench.users(senders).await?;
        let api = bench.api().clone();
        let searcher = users[0].clone();

        let rooms = create_rooms_in_turn(
            &api,
            &searcher,
            room_count,
            |r| json!({ "preset": "public_chat", "name": format!("search bench {r}") }),
        )
        .await?;
        let (joiners, join_rooms, join_api) = (users.clone(), rooms.clone(), api.clone());
        concurrently((senders - 1) * room_count, 4, move |j| {
            let user = joiners[1 + j / room_count].clone();
            let (api, room) = (join_api.clone(), join_rooms[j % room_count].clone());
            async move { join_room(&api, &user, &room).await }
        })
        .await?;

        bench.note(Self::NAME, &format!("sending {} messages", self.messages));
        let filled = Instant::now();
        let (fill_users, fill_rooms, fill_api) = (users.clone(), rooms.clone(), api.clone());
        let (prefix, total, progress) = (bench.prefix().to_owned(), self.messages, bench.clone());
        concurrently(self.messages, senders, move |i| {
            let user = fill_users[i % senders].clone();
            let (api, room) = (fill_api.clone(), fill_rooms[i % room_count].clone());
            let txn = format!("{prefix}-search-{i}");
            let progress = progress.clone();
            async move {
                let content = json!({ "msgtype": "m.text", "body": message_text(i) });
                send_message(&api, &user, &room, &txn, &content).await?;
                if (i + 1) % 10_000 == 0 {
                    progress.note(Self::NAME, &format!("{} of {total} sent", i + 1));
                }
                Ok(())
            }
        })
        .await?;
        let fill_time = filled.elapsed();
        // The last message names a word of its own: once a search finds it, the server has
        // indexed everything sent before it.
        let marker = format!("marker{}", bench.prefix());
        let content = json!({ "msgtype": "m.text", "body": format!("the end {marker}") });
        let txn = format!("{}-search-marker", bench.prefix());
        send_message(&api, &searcher, &rooms[0], &txn, &content).await?;
        let waited = Instant::now();
        while result_count(&search(&api, &searcher, &marker).await?) == 0 {
            if waited.elapsed() > INDEX_WAIT {
                bail!("the server's index did not reach the last message in {INDEX_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let index_lag = waited.elapsed();
        bench.note(
            Self::NAME,
            &format!(
                "history in place after {:.1} s; measuring",
                fill_time.as_secs_f64()
            ),
        );

        let mut summary = Summary::new(Self::NAME, self);
        let phase = bench.begin()?;
        let mut failures = Failures::default();
        let mut words = Words::new(0x5EA4C);
        let mut timed =
            |latencies: &mut Vec<Duration>, reply: Result<Value>, started: Instant| match reply {
                Ok(value) => {
                    latencies.push(started.elapsed());
                    Some(value)
                }
                Err(e) => {
                    failures.record(&e);
                    None
                }
            };
        let mut mixed = Vec::with_capacity(self.searches);
        let mut empty = 0u64;
        for _ in 0..self.searches {
            let word = words.uniform();
            let started = Instant::now();
            let reply = search(&api, &searcher, word).await;
            if let Some(found) = timed(&mut mixed, reply, started)
                && result_count(&found) == 0
            {
                empty += 1;
            }
        }
        let (mut rare, mut common) = (Vec::new(), Vec::new());
        let (mut rare_count, mut common_count) = (0, 0);
        for _ in 0..self.repeats.max(1) {
            let started = Instant::now();
            let reply = search(&api, &searcher, RARE_WORD).await;
            if let Some(found) = timed(&mut rare, reply, started) {
                rare_count = found["count"].as_u64().unwrap_or(0);
            }
            let started = Instant::now();
            let reply = search(&api, &searcher, VOCABULARY[0]).await;
            if let Some(found) = timed(&mut common, reply, started) {
                common_count = found["count"].as_u64().unwrap_or(0);
            }
        }
        let elapsed = phase.end(bench, &mut summary)?;
        let expected_rare = (0..self.messages)
            .filter(|i| i % RARE_EVERY == RARE_OFFSET)
            .count() as u64;
        if rare_count != expected_rare {
            failures.record(&anyhow!(
                "the rare word was found {rare_count} times, not {expected_rare}"
            ));
        }

        let searches = (mixed.len() + rare.len() + common.len()) as u64;
        summary.set_throughput(searches, elapsed, "searches/s");
        summary.add_latency("search", &mixed);
        summary.add_latency("search_rare", &rare);
        summary.add_latency("search_common", &common);
        summary.count("messages", self.messages as u64);
        summary.count("searches", searches);
        summary.count("searches_without_results", empty);
        summary.count("rare_matches", rare_count);
        summary.count("common_matches", common_count);
        summary.values.insert(
            "fill_msg_per_s".into(),
            (self.messages as f64 / fill_time.as_secs_f64().max(1e-9)).round(),
        );
        summary.values.insert(
            "index_lag_s".into(),
            (index_lag.as_secs_f64() * 10.0).round() / 10.0,
        );
        summary.add_failures(&failures);
        summary.details = json!({ "rooms": rooms });
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_deterministic_and_zipf_distributed() {
        assert_eq!(message_text(42), message_text(42));
        assert_ne!(message_text(42), message_text(43));
        let texts: Vec<String> = (100..2100).map(message_text).collect();
        let with = |word: &str| {
            texts
                .iter()
                .filter(|t| t.to_lowercase().split([' ', '.']).any(|w| w == word))
                .count()
        };
        // The most common word is in most messages, a word far down the list in few.
        assert!(with("the") > 1000, "{}", with("the"));
        assert!(with("tapestry") < 100, "{}", with("tapestry"));
        assert_eq!(with(RARE_WORD), 0);
        assert!(message_text(RARE_OFFSET).contains(RARE_WORD));
        assert!(message_text(RARE_EVERY + RARE_OFFSET).contains(RARE_WORD));
        assert!(texts.iter().all(|t| t.ends_with('.')));
    }
}
