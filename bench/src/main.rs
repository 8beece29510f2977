//! `roost-bench`: load scenarios against any Matrix homeserver, spoken to over the
//! Client-Server API only. See `docs/benchmarks.md`.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use roost_bench::report::{self, Run};
use roost_bench::scenarios::{create_rooms, fanout, initial_sync, join, register, search, send};
use roost_bench::{Bench, Options, Registration, Scenario, Summary};

#[derive(Parser)]
#[command(name = "roost-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Concurrent senders into a few rooms: messages per second and send latency.
    Send {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        scenario: send::Config,
    },
    /// Many clients long-polling /sync in one room: delivery delay of each message to each.
    Fanout {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        scenario: fanout::Config,
    },
    /// One user in many rooms: initial and incremental /sync time.
    InitialSync {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        scenario: initial_sync::Config,
    },
    /// Concurrent users creating rooms: rooms per second.
    CreateRooms {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        scenario: create_rooms::Config,
    },
    /// One public room growing to many members: joins per second, latency by room size.
    Join {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        scenario: join::Config,
    },
    /// Concurrent registrations: users per second.
    Register {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        scenario: register::Config,
    },
    /// A large message history, then single-word server-side searches: search latency.
    Search {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        scenario: search::Config,
    },
    /// Every scenario with its standard parameters, sharing one pool of users (registered
    /// first, as the `register` scenario).
    Standard {
        #[command(flatten)]
        run: RunArgs,
        /// Multiply the scenarios' counts by this (e.g. 0.1 for a quick trial; targets are
        /// only checked at 1).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Scenarios to leave out, comma-separated (e.g. `join,fanout`).
        #[arg(long, value_delimiter = ',')]
        skip: Vec<String>,
    },
    /// Compare runs: reads `<label>.jsonl` files and writes one side-by-side table and charts.
    Report {
        /// JSON-lines files written by earlier runs, one per server.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Directory for the Markdown table and the SVG charts.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// Base name of the files written.
        #[arg(long, default_value = "comparison")]
        name: String,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Base URL of the homeserver.
    #[arg(long, env = "ROOST_BENCH_HS", default_value = "http://127.0.0.1:8008")]
    hs: String,
    /// Register users with this registration token (stage `m.login.registration_token`).
    #[arg(long, env = "ROOST_BENCH_REGISTRATION_TOKEN")]
    registration_token: Option<String>,
    /// Register users through Synapse's admin API with this `registration_shared_secret`.
    #[arg(
        long,
        env = "ROOST_BENCH_SHARED_SECRET",
        conflicts_with = "registration_token"
    )]
    shared_secret: Option<String>,
    /// The server's process ID, to record its peak memory and CPU time per scenario (the
    /// server must run on this machine).
    #[arg(long)]
    pid: Option<u32>,
    /// Name of this run in the outputs (default: the server's name, else "homeserver").
    #[arg(long)]
    label: Option<String>,
    /// Directory for `<label>.jsonl`, `<label>.md` and the SVG charts.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Prefix of the user names registered (default: random, so runs can repeat).
    #[arg(long)]
    prefix: Option<String>,
    /// Registrations in flight at once when filling the user pool.
    #[arg(long, default_value_t = 8)]
    register_concurrency: usize,
}

/// Prints, records and collects the summaries of one run.
struct Output {
    bench: Bench,
    label: String,
    out: PathBuf,
    jsonl: File,
    summaries: Vec<Summary>,
    failed: Vec<String>,
}

impl Output {
    async fn start(args: &RunArgs) -> Result<Self> {
        let registration = match (&args.registration_token, &args.shared_secret) {
            (Some(token), _) => Registration::Token(token.clone()),
            (None, Some(secret)) => Registration::SharedSecret(secret.clone()),
            (None, None) => Registration::Dummy,
        };
        let bench = Bench::connect(Options {
            base_url: args.hs.clone(),
            registration,
            prefix: args.prefix.clone(),
            register_concurrency: args.register_concurrency,
            pid: args.pid,
            progress: true,
        })
        .await?;
        let label = args
            .label
            .clone()
            .or_else(|| bench.server_name().map(str::to_owned))
            .unwrap_or_else(|| "homeserver".into());
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        let jsonl_path = args
            .out
            .join(format!("{}.jsonl", report::file_stem(&label)));
        let jsonl = File::create(&jsonl_path)
            .with_context(|| format!("creating {}", jsonl_path.display()))?;
        println!(
            "roost-bench {}: {} as \"{label}\"",
            env!("CARGO_PKG_VERSION"),
            args.hs
        );
        println!("machine: {}", bench.machine());
        println!(
            "users: {}-<n>, results: {}",
            bench.prefix(),
            jsonl_path.display()
        );
        if let Some(idle) = bench.idle_rss_mb() {
            println!("server idle RSS: {idle} MB");
        }
        Ok(Self {
            bench,
            label,
            out: args.out.clone(),
            jsonl,
            summaries: Vec::new(),
            failed: Vec::new(),
        })
    }

    /// Runs one scenario; a failure is reported and remembered, and the run goes on.
    async fn run<S: Scenario>(&mut self, scenario: &S) -> Result<()> {
        println!(
            "== {}: {}",
            S::NAME,
            serde_json::to_string(scenario).unwrap_or_default()
        );
        match self.bench.run(scenario, &self.label).await {
            Ok(summary) => {
                println!("{}", report::human(&summary));
                let line = serde_json::to_string(&summary)?;
                println!("{line}");
                writeln!(self.jsonl, "{line}").context("writing the results file")?;
                self.summaries.push(summary);
            }
            Err(e) => {
                println!("[{}] FAILED: {e:#}", S::NAME);
                self.failed.push(S::NAME.to_owned());
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        if !self.summaries.is_empty() {
            let notes = vec![format!(
                "Server: {} (`/_matrix/client/versions` server name: {}).",
                self.bench.api().base(),
                self.bench.server_name().unwrap_or("none given")
            )];
            let run = Run {
                label: self.label.clone(),
                summaries: self.summaries,
            };
            for path in report::write(&self.out, &self.label, &[run], &notes)? {
                println!("wrote {}", path.display());
            }
        }
        if !self.failed.is_empty() {
            bail!("scenarios failed: {}", self.failed.join(", "));
        }
        Ok(())
    }
}

/// Raises the soft limit on open files to the hard limit (a thousand long polls need a
/// thousand sockets).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                eprintln!("could not raise the open-file limit; large scenarios may fail");
            }
        }
    }
}

async fn standard(out: &mut Output, scale: f64, skip: &[String]) -> Result<()> {
    let included = |name: &str| !skip.iter().any(|s| s == name);
    let send = send::Config::default().scaled(scale);
    let fanout = fanout::Config::default().scaled(scale);
    let initial_sync = initial_sync::Config::default().scaled(scale);
    let create_rooms = create_rooms::Config::default().scaled(scale);
    let join = join::Config::default().scaled(scale);
    let needed = [
        (send::Config::NAME, send.users_needed()),
        (fanout::Config::NAME, fanout.users_needed()),
        (initial_sync::Config::NAME, initial_sync.users_needed()),
        (create_rooms::Config::NAME, create_rooms.users_needed()),
        (join::Config::NAME, join.users_needed()),
    ]
    .into_iter()
    .filter(|(name, _)| included(name))
    .map(|(_, n)| n)
    .max()
    .unwrap_or(0);
    let missing = needed.saturating_sub(out.bench.pool_size().await);
    if included(register::Config::NAME) && missing > 0 {
        let concurrency = register::Config::default().concurrency;
        out.run(&register::Config {
            users: missing,
            concurrency,
        })
        .await?;
    }
    if included(send::Config::NAME) {
        out.run(&send).await?;
    }
    if included(fanout::Config::NAME) {
        out.run(&fanout).await?;
    }
    if included(initial_sync::Config::NAME) {
        out.run(&initial_sync).await?;
    }
    if included(create_rooms::Config::NAME) {
        out.run(&create_rooms).await?;
    }
    if included(join::Config::NAME) {
        out.run(&join).await?;
    }
    Ok(())
}

fn compare(files: &[PathBuf], out: &Path, name: &str) -> Result<()> {
    let mut runs: Vec<Run> = Vec::new();
    for file in files {
        let summaries = report::read_jsonl(file)?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut label = summaries
            .first()
            .map(|s| s.label.clone())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| stem.clone());
        if runs.iter().any(|r| r.label == label) {
            label = stem;
        }
        runs.push(Run { label, summaries });
    }
    let notes = vec![format!(
        "From {}.",
        files
            .iter()
            .map(|f| format!("`{}`", f.display()))
            .collect::<Vec<_>>()
            .join(", ")
    )];
    for path in report::write(out, name, &runs, &notes)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    raise_open_file_limit();
    let run = match &cli.command {
        Command::Report { files, out, name } => return compare(files, out, name),
        Command::Send { run, .. }
        | Command::Fanout { run, .. }
        | Command::InitialSync { run, .. }
        | Command::CreateRooms { run, .. }
        | Command::Join { run, .. }
        | Command::Register { run, .. }
        | Command::Search { run, .. }
        | Command::Standard { run, .. } => run,
    };
    let mut out = Output::start(run).await?;
    match &cli.command {
        Command::Send { scenario, .. } => out.run(scenario).await?,
        Command::Fanout { scenario, .. } => out.run(scenario).await?,
        Command::InitialSync { scenario, .. } => out.run(scenario).await?,
        Command::CreateRooms { scenario, .. } => out.run(scenario).await?,
        Command::Join { scenario, .. } => out.run(scenario).await?,
        Command::Register { scenario, .. } => out.run(scenario).await?,
        Command::Search { scenario, .. } => out.run(scenario).await?,
        Command::Standard { scale, skip, .. } => standard(&mut out, *scale, skip).await?,
        Command::Report { .. } => {}
    }
    out.finish()
}
