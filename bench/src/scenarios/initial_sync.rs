//! `initial-sync`: one user in many rooms full of messages. Measures the initial `/sync` with a
//! timeline limit of 10, repeated, and then the incremental `/sync` (`timeout=0`) that follows
//! one new message, repeated.

use std::time::Instant;

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Bench, Scenario, Summary, Target, concurrently, create_rooms_in_turn, next_batch, scale,
    send_message, sync,
};

pub const DEFAULT_ROOMS: usize = 100;
pub const DEFAULT_MESSAGES: usize = 100;
pub const DEFAULT_REPEATS: usize = 20;
pub const DEFAULT_FILL_CONCURRENCY: usize = 10;
/// The filter of every sync this scenario makes.
const FILTER: &str = r#"{"room":{"timeline":{"limit":10}}}"#;

#[derive(Clone, Debug, PartialEq, Serialize, clap::Args)]
pub struct Config {
    /// Rooms the user is in.
    #[arg(long, default_value_t = DEFAULT_ROOMS)]
    pub rooms: usize,
    /// Messages in each room.
    #[arg(long, default_value_t = DEFAULT_MESSAGES)]
    pub messages: usize,
    /// How many initial syncs, and how many incremental ones, are timed.
    #[arg(long, default_value_t = DEFAULT_REPEATS)]
    pub repeats: usize,
    /// Rooms filled at once during setup.
    #[arg(long, default_value_t = DEFAULT_FILL_CONCURRENCY)]
    pub fill_concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rooms: DEFAULT_ROOMS,
            messages: DEFAULT_MESSAGES,
            repeats: DEFAULT_REPEATS,
            fill_concurrency: DEFAULT_FILL_CONCURRENCY,
        }
    }
}

impl Scenario for Config {
    const NAME: &'static str = "initial-sync";

    /// A user of its own (registered apart from the pool), so no other room shows up.
    fn users_needed(&self) -> usize {
        0
    }

    fn scaled(&self, factor: f64) -> Self {
        Self {
            rooms: scale(self.rooms, factor),
            messages: scale(self.messages, factor),
            ..self.clone()
        }
    }

    fn is_standard(&self) -> bool {
        *self == Self::default()
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::at_most("initial_sync.p50", 30.0),
            Target::at_most("incremental_sync.p50", 3.0),
        ]
    }

    async fn run(&self, bench: &Bench) -> Result<Summary> {
        let rooms = self.rooms.max(1);
        let repeats = self.repeats.max(1);
        let user = bench.register_user().await?;
        let api = bench.api().clone();
        let room_ids = create_rooms_in_turn(
            &api,
            &user,
            rooms,
            |r| json!({ "preset": "private_chat", "name": format!("sync bench {r}") }),
        )
        .await?;
        let (filler, fill_api, fill_rooms) = (user.clone(), api.clone(), room_ids.clone());
        let (messages, prefix) = (self.messages, bench.prefix().to_owned());
        concurrently(rooms, self.fill_concurrency, move |r| {
            let (api, user, room) = (fill_api.clone(), filler.clone(), fill_rooms[r].clone());
            let prefix = prefix.clone();
            async move {
                for m in 0..messages {
                    let content = json!({ "msgtype": "m.text", "body": format!("message {m}") });
                    send_message(
                        &api,
                        &user,
                        &room,
                        &format!("{prefix}-fill-{r}-{m}"),
                        &content,
                    )
                    .await?;
                }
                Ok(())
            }
        })
        .await?;

        let mut summary = Summary::new(Self::NAME, self);
        let phase = bench.begin()?;
        let mut initial = Vec::with_capacity(repeats);
        let mut last = Value::Null;
        for _ in 0..repeats {
            let started = Instant::now();
            last = sync(&api, &user, FILTER, None, None).await?;
            initial.push(started.elapsed());
        }
        let joined = &last["rooms"]["join"];
        let rooms_in_sync = joined.as_object().map_or(0, |r| r.len());
        let timeline_events: usize = room_ids
            .iter()
            .map(|r| {
                joined[r]["timeline"]["events"]
                    .as_array()
                    .map_or(0, Vec::len)
            })
            .sum();

        let mut token = next_batch(&last)?;
        let mut incremental = Vec::with_capacity(repeats);
        let mut with_message = 0u64;
        for i in 0..repeats {
            let room = &room_ids[i % rooms];
            let content = json!({ "msgtype": "m.text", "body": format!("new message {i}") });
            let txn = format!("{}-incremental-{i}", bench.prefix());
            let event_id = send_message(&api, &user, room, &txn, &content).await?;
            let started = Instant::now();
            let reply = sync(&api, &user, FILTER, Some(&token), Some(0)).await?;
            incremental.push(started.elapsed());
            token = next_batch(&reply)?;
            let events = &reply["rooms"]["join"][room]["timeline"]["events"];
            if events
                .as_array()
                .is_some_and(|evs| evs.iter().any(|e| e["event_id"] == *event_id))
            {
                with_message += 1;
            }
        }
        phase.end(bench, &mut summary)?;
        if rooms_in_sync == 0 {
            bail!("the initial sync showed none of the user's {rooms} rooms");
        }

        summary.add_latency("initial_sync", &initial);
        summary.add_latency("incremental_sync", &incremental);
        summary.count("rooms_in_sync", rooms_in_sync as u64);
        summary.count("timeline_events", timeline_events as u64);
        summary.count("incremental_with_message", with_message);
        summary.count("incremental_syncs", repeats as u64);
        Ok(summary)
    }
}
