//! The `roost` command: run the server, administer users and registration tokens, check config.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use roost::config::{Config, LogFormat};
use roost::service::Services;
use roost::storage::Store;

#[derive(Parser)]
#[command(name = "roost", version, about = "Roost, a Matrix homeserver")]
struct Cli {
    /// Config file (TOML). Without one, the embedded defaults and ROOST_* variables apply.
    #[arg(long, short, global = true, env = roost::config::CONFIG_FILE_ENV)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// User administration (works while the server is stopped).
    #[command(subcommand)]
    User(UserCommand),
    /// Registration tokens for `registration = "token"`.
    #[command(subcommand, name = "registration-token")]
    RegistrationToken(TokenCommand),
    /// Media administration (works while the server is stopped).
    #[command(subcommand)]
    Media(MediaCommand),
    /// Full-text search administration (works while the server is stopped).
    #[command(subcommand)]
    Search(SearchCommand),
    /// Content reports sent by users (works while the server is stopped).
    #[command(subcommand)]
    Reports(ReportsCommand),
    /// Federation administration (works while the server is stopped).
    #[command(subcommand)]
    Federation(FederationCommand),
}

#[derive(Subcommand)]
enum FederationCommand {
    /// List the servers we send to: queued PDUs and EDUs, failures, backoff, last success.
    Destinations {
        /// One JSON object per line instead of tab-separated text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ReportsCommand {
    /// List reports, newest first: ID, time (UTC), reporter, target, score, reason.
    List {
        /// How many reports to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of tab-separated text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SearchCommand {
    /// Rebuild the search index from the events in the store.
    Rebuild,
}

#[derive(Subcommand)]
enum MediaCommand {
    /// Delete one media item (`mxc://server/mediaId`): it answers 404 everywhere afterwards.
    Delete { mxc: String },
    /// Delete every media item a user uploaded or created.
    DeleteUser { user: String },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration, then print the effective settings.
    Check,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user. Without --password a random one is generated and printed.
    Create {
        username: String,
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List,
    /// Set a new password and log out every device.
    ResetPassword {
        user: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Deactivate an account (irreversible; the name stays taken).
    Deactivate { user: String },
    /// Turn off two-factor login for a user who lost their authenticator and recovery codes.
    DisableTotp { user: String },
    /// Grant (or with --revoke remove) server admin rights.
    MakeAdmin {
        user: String,
        #[arg(long)]
        revoke: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token (random unless --token is given).
    Create {
        #[arg(long)]
        token: Option<String>,
        /// How many registrations it allows (unlimited if absent).
        #[arg(long)]
        uses: Option<u64>,
        /// Lifetime in seconds (no expiry if absent).
        #[arg(long)]
        expires_in: Option<u64>,
    },
    List,
    Delete {
        token: String,
    },
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// mimalloc rather than the system allocator: it returns freed memory to the system (the 19 MiB
/// blocks of password hashing, bursts of requests) instead of keeping it in per-thread arenas,
/// and it is faster for the many small allocations of JSON handling. Built without transparent
/// huge pages, which would make every touched 4 KiB page of its regions cost 2 MiB of memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load_from_process(cli.config.as_deref())?;
    init_logging(&config);
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Config(ConfigCommand::Check) => {
            println!("configuration is valid");
            println!("server_name  = {}", config.server_name);
            println!("listen       = {:?}", config.listen);
            println!("data_dir     = {}", config.data_dir.display());
            println!("registration = {:?}", config.effective_registration());
            println!(
                "e-mail       = {}",
                config.smtp.host.as_deref().unwrap_or("disabled")
            );
            println!("rate limits  = {}", config.rate_limits.enabled);
            Ok(())
        }
        Command::User(cmd) => user_command(config, cmd).await,
        Command::RegistrationToken(cmd) => token_command(config, cmd),
        Command::Media(cmd) => media_command(config, cmd).await,
        Command::Search(cmd) => search_command(config, cmd),
        Command::Reports(cmd) => reports_command(config, cmd),
        Command::Federation(cmd) => federation_command(config, cmd),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    ignore_file_size_signal();
    let server = roost::start(config).await?;
    for addr in server.addrs() {
        println!("roost: listening on http://{addr}");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await?;
    Ok(())
}

/// A write beyond the file-size limit (`ulimit -f`) raises SIGXFSZ, which kills the process by
/// default. Ignored, the write fails with `EFBIG` instead, and the server treats it as a full disk:
/// it refuses writes with 503 and recovers once writes succeed again.
fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: installs the `SIG_IGN` disposition, no handler code runs; nothing else in the
    // process sets up SIGXFSZ.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn open_services(config: Config) -> anyhow::Result<std::sync::Arc<Services>> {
    let store = Store::open_with_cache(&config.data_dir, config.storage.cache_mb << 20)?;
    Ok(Services::build(config, store)?)
}

async fn user_command(config: Config, cmd: UserCommand) -> anyhow::Result<()> {
    let services = open_services(config)?;
    let resolve = |user: &str| -> anyhow::Result<ruma::OwnedUserId> {
        let id = services.accounts.user_id_for_login(user)?;
        if !services.accounts.exists(&id)? {
            bail!("no such user: {id}");
        }
        Ok(id)
    };
    match cmd {
        UserCommand::Create {
            username,
            password,
            admin,
        } => {
            let user_id = services.accounts.user_id_for_registration(&username)?;
            let generated = password.is_none();
            let password = password.unwrap_or_else(|| roost::util::random_string(20));
            roost::service::password::check_policy(&services.config.password, &password)?;
            services
                .accounts
                .create(&user_id, Some(&password), false, admin)
                .await
                .with_context(|| format!("creating {user_id}"))?;
            services.profiles.set_field(
                &user_id,
                "displayname",
                serde_json::json!(user_id.localpart()),
            )?;
            println!("created {user_id}{}", if admin { " (admin)" } else { "" });
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List => {
            for (id, account) in services.accounts.list()? {
                let mut flags = Vec::new();
                if account.admin {
                    flags.push("admin");
                }
                if account.deactivated {
                    flags.push("deactivated");
                }
                if account.guest {
                    flags.push("guest");
                }
                println!("{id}\t{}", flags.join(","));
            }
        }
        UserCommand::ResetPassword { user, password } => {
            let user_id = resolve(&user)?;
            let generated = password.is_none();
            let password = password.unwrap_or_else(|| roost::util::random_string(20));
            services
                .change_password(&user_id, &password, None, true)
                .await?;
            println!("password of {user_id} reset; every device logged out");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Deactivate { user } => {
            let user_id = resolve(&user)?;
            services.deactivate_account(&user_id).await?;
            println!("deactivated {user_id}");
        }
        UserCommand::DisableTotp { user } => {
            let user_id = resolve(&user)?;
            services.mfa.remove(&user_id)?;
            println!("two-factor login is off for {user_id}");
        }
        UserCommand::MakeAdmin { user, revoke } => {
            let user_id = resolve(&user)?;
            services.accounts.update(&user_id, |a| a.admin = !revoke)?;
            println!(
                "{user_id} is {}an admin",
                if revoke { "no longer " } else { "now " }
            );
        }
    }
    services.store.flush_blocking()?;
    Ok(())
}

fn token_command(config: Config, cmd: TokenCommand) -> anyhow::Result<()> {
    let services = open_services(config)?;
    match cmd {
        TokenCommand::Create {
            token,
            uses,
            expires_in,
        } => {
            let expiry = expires_in.map(|s| roost::util::now_ms() + s * 1000);
            let info = services.regtokens.create(token, uses, expiry)?;
            println!("{}", info.token);
        }
        TokenCommand::List => {
            for t in services.regtokens.list()? {
                println!(
                    "{}\tused {}/{}\texpires {}\t{}",
                    t.token,
                    t.completed,
                    t.uses_allowed.map_or("unlimited".into(), |n| n.to_string()),
                    t.expiry_time.map_or("never".into(), |e| e.to_string()),
                    if t.is_valid() { "valid" } else { "invalid" },
                );
            }
        }
        TokenCommand::Delete { token } => {
            if services.regtokens.delete(&token)? {
                println!("deleted {token}");
            } else {
                bail!("no such token: {token}");
            }
        }
    }
    Ok(())
}

async fn media_command(config: Config, cmd: MediaCommand) -> anyhow::Result<()> {
    let services = open_services(config)?;
    match cmd {
        MediaCommand::Delete { mxc } => {
            let (server, media_id) = roost::service::media::parse_mxc(&mxc)
                .with_context(|| format!("not an mxc:// URI: {mxc}"))?;
            if !services.media.delete(server, media_id).await? {
                bail!("no such media: {mxc}");
            }
            println!("deleted {mxc}");
        }
        MediaCommand::DeleteUser { user } => {
            let user_id = services.accounts.user_id_for_login(&user)?;
            let deleted = services.media.delete_user(&user_id).await?;
            println!("deleted {deleted} media items of {user_id}");
        }
    }
    services.store.flush_blocking()?;
    Ok(())
}

fn search_command(config: Config, cmd: SearchCommand) -> anyhow::Result<()> {
    if !config.search.enabled {
        bail!("search is disabled (search.enabled = false)");
    }
    let services = open_services(config)?;
    match cmd {
        SearchCommand::Rebuild => {
            let started = std::time::Instant::now();
            let indexed = services
                .rebuild_search_index()
                .context("rebuilding the search index")?;
            println!(
                "search index rebuilt in {}: {indexed} events indexed ({:.1} s)",
                services.search.dir().display(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    services.store.flush_blocking()?;
    Ok(())
}

/// Reads the report store only: listing reports starts no other part of the server.
fn reports_command(config: Config, cmd: ReportsCommand) -> anyhow::Result<()> {
    let store = Store::open_with_cache(&config.data_dir, config.storage.cache_mb << 20)?;
    let reports = roost::service::reports::Reports::new(&store)?;
    match cmd {
        ReportsCommand::List { limit, json } => {
            for report in reports.list(limit)? {
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!("{}", report.line());
                }
            }
        }
    }
    Ok(())
}

/// Reads the federation sender's queue only: listing destinations starts no other part of the
/// server.
fn federation_command(config: Config, cmd: FederationCommand) -> anyhow::Result<()> {
    let store = Store::open_with_cache(&config.data_dir, config.storage.cache_mb << 20)?;
    match cmd {
        FederationCommand::Destinations { json } => {
            for destination in roost::service::federation::sender::destinations_in(&store)? {
                if json {
                    println!("{}", serde_json::to_string(&destination)?);
                } else {
                    println!("{}", destination.line());
                }
            }
        }
    }
    Ok(())
}
