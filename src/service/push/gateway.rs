//! The push sender: delivers queued pushes to each pusher's gateway
//! (`POST /_matrix/push/v1/notify`), one at a time per pusher and in order, retrying with
//! exponential backoff. It sleeps until pushes are queued or a backoff ends, never on a timer
//! that re-reads the queue. A gateway that lists a pushkey as `rejected` loses that pusher.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ruma::events::StateEventType;
use ruma::{OwnedUserId, UserId};
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::pushers::{Pusher, QueuedPush};
use crate::config::PushConfig;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::storage::keys;

/// Whether an address is one a pusher may reach when internal addresses are not allowed.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., hi, lo] = segments;
                let v4 = std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
                return is_public(IpAddr::V4(v4));
            }
            let first = segments[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Resolves gateway host names to their public addresses only, so that a name pointing at an
/// internal address cannot be used to reach internal services.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client pushes are sent with.
pub fn client(config: &PushConfig) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.gateway_timeout_secs))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("Roost/", env!("CARGO_PKG_VERSION")));
    if !config.allow_private_addresses {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().map_err(Error::internal)
}

/// When each failing pusher may be tried again, and how long it waits after its next failure.
#[derive(Default)]
pub struct Backoff {
    by_pusher: Mutex<HashMap<Vec<u8>, (Instant, Duration)>>,
}

impl Backoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (Instant, Duration)>> {
        self.by_pusher.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn forget(&self, pusher: &[u8]) {
        self.lock().remove(pusher);
    }

    fn next_attempt(&self, pusher: &[u8]) -> Option<Instant> {
        self.lock().get(pusher).map(|(at, _)| *at)
    }

    fn failed(&self, pusher: &[u8], config: &PushConfig) -> Duration {
        let mut map = self.lock();
        let initial = Duration::from_millis(config.retry_initial_ms);
        let max = Duration::from_secs(config.retry_max_secs);
        let delay = match map.get(pusher) {
            Some((_, previous)) => (*previous * 2).min(max),
            None => initial.min(max),
        };
        map.insert(pusher.to_vec(), (Instant::now() + delay, delay));
        delay
    }
}

/// How one delivery went.
enum Outcome {
    /// Delivered; the gateway rejected these pushkeys.
    Delivered(Vec<String>),
    /// Worth retrying later (connection failure, timeout, 429, 5xx).
    Retry(String),
    /// Refused for good (another 4xx): the push is dropped.
    Refused(String),
}

/// One push ready to go.
struct Delivery {
    pusher_prefix: Vec<u8>,
    queue_key: Vec<u8>,
    user: OwnedUserId,
    pusher: Pusher,
    body: Value,
}

impl Services {
    /// Starts the push sender.
    pub fn spawn_push_sender(self: &Arc<Self>) {
        let client = match client(&self.config.push) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the push client; pushes stay queued");
                return;
            }
        };
        let wake = self.push.pushes_queued.clone();
        let services = Arc::downgrade(self);
        tokio::spawn(async move {
            // Deliveries in flight, at most one per pusher; each pusher moves on as soon as its
            // own delivery ends, whatever the others do.
            let mut sends: JoinSet<(Delivery, Outcome)> = JoinSet::new();
            let mut in_flight: HashSet<Vec<u8>> = HashSet::new();
            loop {
                let next = {
                    let Some(services) = services.upgrade() else {
                        return;
                    };
                    services.start_due_pushes(&client, &mut sends, &mut in_flight)
                };
                let far = Instant::now() + Duration::from_secs(86_400);
                tokio::select! {
                    Some(done) = sends.join_next(), if !sends.is_empty() => {
                        let Ok((delivery, outcome)) = done else { continue };
                        in_flight.remove(&delivery.pusher_prefix);
                        let Some(services) = services.upgrade() else {
                            return;
                        };
                        if let Err(e) = services.finish_push(delivery, outcome) {
                            tracing::warn!(error = %e, "recording a push result failed");
                        }
                    }
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep_until(next.unwrap_or(far)), if next.is_some() => {}
                }
            }
        });
    }

    /// Starts the delivery of the oldest queued push of every pusher that has none in flight
    /// and is not backing off. Returns when to look again without being woken: the end of the
    /// first backoff, now (a push was dropped, the next may be due), or `None`.
    fn start_due_pushes(
        &self,
        client: &reqwest::Client,
        sends: &mut JoinSet<(Delivery, Outcome)>,
        in_flight: &mut HashSet<Vec<u8>>,
    ) -> Option<Instant> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut earliest = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        for item in self.push.pushers.iter() {
            let (key, value) = match item {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!(error = %e, "reading pushers failed");
                    earliest(now + Duration::from_secs(1));
                    break;
                }
            };
            let mut prefix = key.to_vec();
            prefix.push(keys::SEP);
            if in_flight.contains(&prefix) {
                continue;
            }
            if let Some(at) = self.push.backoff.next_attempt(&prefix)
                && at > now
            {
                earliest(at);
                continue;
            }
            match self.next_delivery(&key, &value, prefix.clone()) {
                Ok(Some(delivery)) => {
                    in_flight.insert(prefix);
                    let client = client.clone();
                    sends.spawn(async move {
                        let outcome = deliver(&client, &delivery.pusher, &delivery.body).await;
                        (delivery, outcome)
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    // This pusher waits; the others go on.
                    let delay = self.push.backoff.failed(&prefix, &self.config.push);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "preparing a push failed");
                    earliest(now + delay);
                }
            }
        }
        next
    }

    /// The next push of one pusher, ready to send (`None`: nothing queued). Pushes that cannot
    /// be read or waited too long are dropped on the way.
    fn next_delivery(&self, key: &[u8], value: &[u8], prefix: Vec<u8>) -> Result<Option<Delivery>> {
        let Ok(pusher) = serde_json::from_slice::<Pusher>(value) else {
            return Ok(None);
        };
        let Some(user) = super::pushers::owner_of(key) else {
            return Ok(None);
        };
        let give_up_ms = self.config.push.give_up_after_secs.saturating_mul(1000);
        let queued_pushes = self.push.push_queue.scan_prefix(prefix.clone());
        for item in queued_pushes {
            let (queue_key, raw) = item?;
            let Ok(queued) = serde_json::from_slice::<QueuedPush>(&raw) else {
                self.push.push_queue.delete(&queue_key)?;
                continue;
            };
            if crate::util::now_ms().saturating_sub(queued.queued_ts) > give_up_ms {
                tracing::info!(app_id = %pusher.app_id, "dropping a push that waited too long");
                self.push.push_queue.delete(&queue_key)?;
                continue;
            }
            let body = self.push_body(&user, &pusher, &queued)?;
            return Ok(Some(Delivery {
                pusher_prefix: prefix,
                queue_key: queue_key.to_vec(),
                user,
                pusher,
                body,
            }));
        }
        Ok(None)
    }

    /// Records how a delivery went.
    fn finish_push(&self, delivery: Delivery, outcome: Outcome) -> Result<()> {
        match outcome {
            Outcome::Delivered(rejected) => {
                self.push.push_queue.delete(&delivery.queue_key)?;
                self.push.backoff.forget(&delivery.pusher_prefix);
                for pushkey in rejected {
                    tracing::info!(app_id = %delivery.pusher.app_id, "the gateway rejected a pushkey; removing the pusher");
                    self.delete_pusher(&delivery.user, &delivery.pusher.app_id, &pushkey)?;
                }
            }
            Outcome::Retry(why) => {
                let delay = self
                    .push
                    .backoff
                    .failed(&delivery.pusher_prefix, &self.config.push);
                tracing::warn!(app_id = %delivery.pusher.app_id, reason = %why, retry_in_ms = delay.as_millis() as u64, "push failed; will retry");
            }
            Outcome::Refused(why) => {
                tracing::warn!(app_id = %delivery.pusher.app_id, reason = %why, "the gateway refused a push; dropping it");
                self.push.push_queue.delete(&delivery.queue_key)?;
                self.push.backoff.forget(&delivery.pusher_prefix);
            }
        }
        Ok(())
    }

    /// The body of `POST /_matrix/push/v1/notify` for one push.
    fn push_body(&self, user: &UserId, pusher: &Pusher, queued: &QueuedPush) -> Result<Value> {
        let n = &queued.notification;
        let mut tweaks = Map::new();
        for action in serde_json::to_value(&n.actions)?
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(name) = action.get("set_tweak").and_then(Value::as_str) {
                tweaks.insert(
                    name.to_owned(),
                    action.get("value").cloned().unwrap_or(Value::Bool(true)),
                );
            }
        }
        let mut data = pusher.data.clone();
        data.remove("url");
        let device = json!({
            "app_id": pusher.app_id,
            "pushkey": pusher.pushkey,
            "data": data,
            "tweaks": tweaks,
        });
        let pdu = self.rooms.pdu(&n.event_id)?;
        let encrypted = pdu
            .as_ref()
            .is_some_and(|p| p.kind().to_string() == "m.room.encrypted");
        let loud = tweaks
            .get("highlight")
            .is_some_and(|h| h != &Value::Bool(false))
            || tweaks.contains_key("sound");
        let prio = if encrypted || loud { "high" } else { "low" };
        let mut notification = json!({
            "event_id": n.event_id,
            "room_id": n.room_id,
            "counts": { "unread": self.total_unread(user)? },
            "prio": prio,
            "devices": [device],
        });
        if pusher.event_id_only() {
            return Ok(json!({ "notification": notification }));
        }
        if let Some(pdu) = pdu {
            let state = self.rooms.current_state(&n.room_id)?;
            notification["type"] = json!(pdu.kind().to_string());
            notification["sender"] = json!(pdu.sender());
            if let Some(name) = self.member_display_name(&state, pdu.sender())? {
                notification["sender_display_name"] = json!(name);
            }
            if let Some(content) = self
                .rooms
                .state_content(&state, &StateEventType::RoomName)?
                && let Some(name) = content.get("name").and_then(Value::as_str)
            {
                notification["room_name"] = json!(name);
            }
            if let Some(content) = self
                .rooms
                .state_content(&state, &StateEventType::RoomCanonicalAlias)?
                && let Some(alias) = content.get("alias").and_then(Value::as_str)
            {
                notification["room_alias"] = json!(alias);
            }
            if pdu.state_key() == Some(user.as_str()) {
                notification["user_is_target"] = json!(true);
            }
            if self.rooms.redacted_by(&n.event_id)?.is_none() {
                notification["content"] = serde_json::from_str(pdu.content().get())?;
            }
        }
        Ok(json!({ "notification": notification }))
    }
}

/// The largest gateway answer read.
const MAX_ANSWER_BYTES: usize = 65_536;

/// A gateway's answer body, unless it is larger than [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

/// One `POST` to the gateway.
async fn deliver(client: &reqwest::Client, pusher: &Pusher, body: &Value) -> Outcome {
    let Some(url) = pusher.url() else {
        return Outcome::Refused("the pusher has no URL".into());
    };
    let response = match client.post(url).json(body).send().await {
        Ok(response) => response,
        Err(e) => return Outcome::Retry(e.to_string()),
    };
    let status = response.status();
    if status.is_success() {
        let rejected = read_capped(response)
            .await
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|v| v.get("rejected").cloned())
            .and_then(|r| serde_json::from_value::<Vec<String>>(r).ok())
            .unwrap_or_default();
        Outcome::Delivered(rejected)
    } else if status.as_u16() == 429 || status.is_server_error() {
        Outcome::Retry(format!("status {status}"))
    } else {
        Outcome::Refused(format!("status {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "198.18.0.1",
            "192.0.0.8",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:4860:4860::8888", "100.128.0.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
