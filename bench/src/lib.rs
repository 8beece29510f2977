//! `roost-bench`: load scenarios against any Matrix homeserver, spoken to over the
//! Client-Server API only.
//!
//! A [`Bench`] holds the HTTP client, the way users are registered and a pool of registered
//! users that scenarios share. Each scenario is one module of [`scenarios`]: a config struct
//! (its command-line flags) implementing [`Scenario`], whose `run` sets things up, measures, and
//! returns a [`Summary`].

pub mod api;
pub mod probe;
pub mod report;
pub mod scenarios;
pub mod summary;
pub mod users;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;

pub use api::Api;
use probe::{Probe, ProbeStart};
pub use summary::{Failures, Summary, Target};
pub use users::{Registration, User};

/// The server's peak resident memory goal, applied to every scenario run with its standard
/// parameters when the server's process is watched.
pub const PEAK_RSS_TARGET_MB: f64 = 128.0;

/// One load scenario: its parameters (`self`) and how to run it.
pub trait Scenario: Serialize + Sync {
    /// The scenario's name (and subcommand).
    const NAME: &'static str;
    /// How many pooled users it uses.
    fn users_needed(&self) -> usize;
    /// The same scenario with its counts multiplied by `factor` (quick trial runs).
    fn scaled(&self, factor: f64) -> Self;
    /// The goals for this scenario, or none when the parameters are not the standard ones
    /// (the goals are stated for those).
    fn targets(&self) -> Vec<Target> {
        Vec::new()
    }
    /// Whether these are the standard parameters.
    fn is_standard(&self) -> bool;
    /// Sets up, measures (between [`Bench::begin`] and [`Phase::end`]) and reports.
    fn run(&self, bench: &Bench) -> impl Future<Output = Result<Summary>> + Send;
}

/// How to reach and use the homeserver.
#[derive(Clone, Debug)]
pub struct Options {
    /// Base URL, e.g. `http://127.0.0.1:8008`.
    pub base_url: String,
    pub registration: Registration,
    /// Prefix of registered user names; a random one when `None`, so runs can repeat against
    /// the same server.
    pub prefix: Option<String>,
    /// Registrations in flight at once when filling the user pool.
    pub register_concurrency: usize,
    /// The server's process ID, to watch its memory and CPU time.
    pub pid: Option<u32>,
    /// Print a line for each setup step of a scenario.
    pub progress: bool,
}

impl Options {
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.to_owned(),
            registration: Registration::Dummy,
            prefix: None,
            register_concurrency: 8,
            pid: None,
            progress: false,
        }
    }
}

/// The shared state of a benchmark run; cheap to clone.
#[derive(Clone)]
pub struct Bench {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api,
    registration: Registration,
    prefix: String,
    next_user: AtomicUsize,
    pool: tokio::sync::Mutex<Vec<User>>,
    register_concurrency: usize,
    probe: Option<Probe>,
    idle_rss_mb: Option<f64>,
    server_name: Option<String>,
    machine: String,
    progress: bool,
    created: Instant,
}

impl Bench {
    /// Checks that the server answers `/_matrix/client/versions` and prepares the run.
    pub async fn connect(options: Options) -> Result<Self> {
        let api = Api::new(&options.base_url)?;
        let versions = api
            .get("/_matrix/client/versions", None)
            .await
            .with_context(|| format!("is a homeserver listening at {}?", options.base_url))?;
        let server_name = versions["server"]
            .as_str()
            .or_else(|| versions["server"]["name"].as_str())
            .map(str::to_owned);
        let probe = options.pid.map(Probe::new).transpose()?;
        let idle_rss_mb = match &probe {
            Some(p) => Some(probe::mb(p.read()?.rss_kb)),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                machine: describe_machine(options.pid, probe.as_ref()),
                api,
                registration: options.registration,
                prefix: options.prefix.unwrap_or_else(random_prefix),
                next_user: AtomicUsize::new(0),
                pool: tokio::sync::Mutex::new(Vec::new()),
                register_concurrency: options.register_concurrency.max(1),
                probe,
                idle_rss_mb,
                server_name,
                progress: options.progress,
                created: Instant::now(),
            }),
        })
    }

    pub fn api(&self) -> &Api {
        &self.inner.api
    }

    /// The run-unique prefix of user names and transaction IDs.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The `server` named by `/_matrix/client/versions`, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.inner.server_name.as_deref()
    }

    /// The server's resident memory before the first scenario, when it is watched.
    pub fn idle_rss_mb(&self) -> Option<f64> {
        self.inner.idle_rss_mb
    }

    pub fn machine(&self) -> &str {
        &self.inner.machine
    }

    /// Prints a progress line (when progress lines were asked for).
    pub fn note(&self, scenario: &str, what: &str) {
        if self.inner.progress {
            let at = self.inner.created.elapsed().as_secs_f64();
            println!("  [{scenario}] {what} (at {at:.1} s)");
        }
    }

    /// Registers one new user (not added to the pool).
    pub async fn register_user(&self) -> Result<User> {
        let n = self.inner.next_user.fetch_add(1, Ordering::Relaxed);
        let localpart = format!("{}-{n}", self.inner.prefix);
        users::register(
            &self.inner.api,
            &self.inner.registration,
            &localpart,
            users::PASSWORD,
        )
        .await
    }

    /// Adds registered users to the shared pool.
    pub async fn add_to_pool(&self, users: Vec<User>) {
        self.inner.pool.lock().await.extend(users);
    }

    /// How many users the pool holds.
    pub async fn pool_size(&self) -> usize {
        self.inner.pool.lock().await.len()
    }

    /// The first `n` users of the pool, registering (concurrently) the ones it lacks.
    pub async fn users(&self, n: usize) -> Result<Vec<User>> {
        let mut pool = self.inner.pool.lock().await;
        if pool.len() < n {
            let missing = n - pool.len();
            self.note("pool", &format!("registering {missing} users"));
            let bench = self.clone();
            let registered = concurrently(missing, self.inner.register_concurrency, move |_| {
                let bench = bench.clone();
                async move { bench.register_user().await }
            })
            .await
            .context("filling the user pool")?;
            pool.extend(registered);
        }
        Ok(pool[..n].to_vec())
    }

    /// Starts a measured phase: the clock, and the server's readings when it is watched.
    pub fn begin(&self) -> Result<Phase> {
        let probe = match &self.inner.probe {
            Some(p) => Some(p.start()?),
            None => None,
        };
        Ok(Phase {
            started: Instant::now(),
            tool_cpu_s: own_cpu_s(),
            probe,
        })
    }

    /// Runs a scenario and completes its summary: label, rate-limit count, targets, machine.
    pub async fn run<S: Scenario>(&self, scenario: &S, label: &str) -> Result<Summary> {
        let limited_before = self.api().rate_limited();
        let mut summary = scenario
            .run(self)
            .await
            .with_context(|| format!("scenario {}", S::NAME))?;
        summary.scenario = S::NAME.to_owned();
        summary.label = label.to_owned();
        summary.rate_limited = self.api().rate_limited() - limited_before;
        summary.machine = self.inner.machine.clone();
        summary.finished_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(server) = &mut summary.server {
            server.idle_rss_mb = self.inner.idle_rss_mb;
        }
        if scenario.is_standard() {
            summary.targets = scenario.targets();
            if summary.server.is_some() {
                summary
                    .targets
                    .push(Target::at_most("server.peak_rss_mb", PEAK_RSS_TARGET_MB));
            }
        }
        summary.check_targets();
        Ok(summary)
    }
}

/// A measured phase in progress.
pub struct Phase {
    started: Instant,
    tool_cpu_s: f64,
    probe: Option<ProbeStart>,
}

impl Phase {
    /// Ends the phase: records its wall time and the server's use in `summary`; returns the
    /// wall time.
    pub fn end(self, bench: &Bench, summary: &mut Summary) -> Result<Duration> {
        let elapsed = self.started.elapsed();
        summary.elapsed_s = (elapsed.as_secs_f64() * 1000.0).round() / 1000.0;
        summary.tool_cpu_s = Some(((own_cpu_s() - self.tool_cpu_s) * 100.0).round() / 100.0);
        if let (Some(probe), Some(start)) = (&bench.inner.probe, &self.probe) {
            summary.server = Some(probe.finish(start)?);
        }
        Ok(elapsed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Runs `work(i)` for every `i` in `0..count` on `concurrency` spawned workers and returns the
/// results in index order. The first error stops the others and is returned.
pub async fn concurrently<T, F, Fut>(count: usize, concurrency: usize, work: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (work, next) = (work.clone(), next.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(done);
                }
                done.push((i, work(i).await?));
            }
        });
    }
    let mut results = Vec::with_capacity(count);
    while let Some(finished) = workers.join_next().await {
        results.extend(finished.map_err(|e| anyhow!("worker failed: {e}"))??);
    }
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

/// Creates a room with the given `createRoom` body; returns its ID.
pub async fn create_room(api: &Api, user: &User, body: &Value) -> Result<String> {
    let reply = api
        .post(&api::v3("/createRoom"), Some(&user.access_token), body)
        .await?;
    reply["room_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("createRoom answered no room_id: {reply}"))
}

/// Creates `count` rooms for `user` one after another (`body(i)` is the `createRoom` body of
/// room `i`) and checks that the server answered a different room ID each time.
pub async fn create_rooms_in_turn(
    api: &Api,
    user: &User,
    count: usize,
    body: impl Fn(usize) -> Value,
) -> Result<Vec<String>> {
    let mut rooms: Vec<String> = Vec::with_capacity(count);
    for i in 0..count {
        let room = create_room(api, user, &body(i)).await?;
        if rooms.contains(&room) {
            bail!("createRoom answered {room} twice, for two different rooms");
        }
        rooms.push(room);
    }
    Ok(rooms)
}

/// Joins a room by ID (`POST /join/{roomIdOrAlias}`).
pub async fn join_room(api: &Api, user: &User, room_id: &str) -> Result<()> {
    api.post(
        &api::v3(&format!("/join/{}", api::encode(room_id))),
        Some(&user.access_token),
        &serde_json::json!({}),
    )
    .await?;
    Ok(())
}

/// Sends an `m.room.message` with the given content and transaction ID; returns the event ID.
pub async fn send_message(
    api: &Api,
    user: &User,
    room_id: &str,
    txn: &str,
    content: &Value,
) -> Result<String> {
    let path = api::v3(&format!(
        "/rooms/{}/send/m.room.message/{}",
        api::encode(room_id),
        api::encode(txn)
    ));
    let reply = api.put(&path, Some(&user.access_token), content).await?;
    reply["event_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("send answered no event_id: {reply}"))
}

/// `GET /sync` with an inline filter; `since` and `timeout` (ms) when given.
pub async fn sync(
    api: &Api,
    user: &User,
    filter: &str,
    since: Option<&str>,
    timeout_ms: Option<u64>,
) -> Result<Value> {
    let mut path = api::v3(&format!("/sync?filter={}", api::encode(filter)));
    if let Some(since) = since {
        path.push_str(&format!("&since={}", api::encode(since)));
    }
    if let Some(timeout) = timeout_ms {
        path.push_str(&format!("&timeout={timeout}"));
    }
    api.get(&path, Some(&user.access_token)).await
}

/// `next_batch` of a sync answer.
pub fn next_batch(reply: &Value) -> Result<String> {
    reply["next_batch"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("sync answered no next_batch"))
}

/// This process's user plus system CPU time, seconds.
fn own_cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct it is given; all-zero is a valid `rusage`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// `count` multiplied by `factor`, at least 1.
pub fn scale(count: usize, factor: f64) -> usize {
    ((count as f64 * factor).round() as usize).max(1)
}

/// A short random prefix: `rb` and eight hex digits from the standard library's randomly keyed
/// hasher, the time and the process ID.
fn random_prefix() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("rb{:08x}", hasher.finish() as u32)
}

/// Cores, CPU model and memory of this machine, and where the server runs.
fn describe_machine(pid: Option<u32>, probe: Option<&Probe>) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or_else(
            || "unknown memory".into(),
            |kb| format!("{:.1} GB RAM", kb as f64 / 1024.0 / 1024.0),
        );
    let server = match pid {
        Some(pid) => {
            let ticks = if probe.is_some_and(|p| p.ticks_assumed) {
                ", CPU time assuming 100 ticks/s"
            } else {
                ""
            };
            format!("server (pid {pid}) and tool on this machine{ticks}")
        }
        None => "server not watched (no --pid)".into(),
    };
    format!("{cores} cores, {cpu}, {memory}; {server}")
}
