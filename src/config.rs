//! Server configuration: TOML file, `ROOST_*` environment overrides, defaults and validation.
//!
//! Every key is documented in `config.example.toml`. Unknown keys and bad values fail start-up with
//! an error that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "ROOST_";

/// Names the config file (like `--config`); not a config key itself.
pub const CONFIG_FILE_ENV: &str = "ROOST_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

fn key_error(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Anyone may register (with e-mail verification when `registration_requires_email`).
    Open,
    /// Registration needs a registration token (managed with `roost registration-token`).
    Token,
    /// Only administrators create accounts (CLI).
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain SMTP, no TLS (only for local relays and test servers).
    None,
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server_name: String,
    #[serde(deserialize_with = "string_or_list")]
    pub listen: Vec<String>,
    pub data_dir: PathBuf,
    /// `None` means: `open` while every listener is on a loopback address, `closed` otherwise.
    pub registration: Option<RegistrationMode>,
    pub registration_requires_email: bool,
    pub allow_guests: bool,
    pub first_user_admin: bool,
    /// Base URL that users reach the server at (links in e-mails). Default: `http://` + first listener.
    pub public_baseurl: Option<String>,
    pub max_request_body_bytes: usize,
    /// Reverse proxies whose `X-Forwarded-For` header names the real client address.
    pub trusted_proxies: Vec<String>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub well_known: WellKnownConfig,
    pub auth: AuthConfig,
    pub password: PasswordPolicy,
    pub smtp: SmtpConfig,
    pub rate_limits: RateLimitsConfig,
    pub presence: PresenceConfig,
    pub storage: StorageConfig,
    pub media: MediaConfig,
    pub push: PushConfig,
    pub search: SearchConfig,
    pub user_directory: UserDirectoryConfig,
    pub turn: TurnConfig,
    pub federation: FederationConfig,
    /// Notary servers asked for other servers' signing keys when those cannot be fetched from the
    /// servers themselves (`POST /_matrix/key/v2/query`). Empty: only ask servers directly.
    pub trusted_key_servers: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            listen: vec!["127.0.0.1:8008".into()],
            data_dir: PathBuf::from("./roost-data"),
            registration: None,
            registration_requires_email: false,
            allow_guests: false,
            first_user_admin: false,
            public_baseurl: None,
            max_request_body_bytes: 1024 * 1024,
            trusted_proxies: Vec::new(),
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
            well_known: WellKnownConfig::default(),
            auth: AuthConfig::default(),
            password: PasswordPolicy::default(),
            smtp: SmtpConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            presence: PresenceConfig::default(),
            storage: StorageConfig::default(),
            media: MediaConfig::default(),
            push: PushConfig::default(),
            search: SearchConfig::default(),
            user_directory: UserDirectoryConfig::default(),
            turn: TurnConfig::default(),
            federation: FederationConfig::default(),
            trusted_key_servers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WellKnownConfig {
    /// `m.homeserver.base_url` in `/.well-known/matrix/client`; default: `public_baseurl`.
    pub client_base_url: Option<String>,
    /// `m.server` in `/.well-known/matrix/server` (e.g. `matrix.example.org:443`); unset: 404.
    pub server: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC secret for access-token JWTs. Unset: generated on first start and kept in the store.
    pub jwt_secret: Option<String>,
    /// Lifetime of access tokens issued to clients that support refresh tokens.
    pub access_token_lifetime_secs: u64,
    /// Lifetime of access tokens for clients without refresh support; 0 = no expiry (they are
    /// still revoked at once by logout, password change, device deletion and deactivation).
    pub non_refreshable_token_lifetime_secs: u64,
    /// Lifetime of a refresh token (it is single-use and rotates on every refresh).
    pub refresh_token_lifetime_secs: u64,
    /// How long a user-interactive-auth session or a second-factor login challenge stays valid.
    pub uia_session_lifetime_secs: u64,
    /// Lifetime of e-mail validation tokens.
    pub email_token_lifetime_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_token_lifetime_secs: 300,
            non_refreshable_token_lifetime_secs: 0,
            refresh_token_lifetime_secs: 30 * 24 * 3600,
            uia_session_lifetime_secs: 600,
            email_token_lifetime_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub require_digit: bool,
    pub require_letter: bool,
    pub require_symbol: bool,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            require_digit: false,
            require_letter: false,
            require_symbol: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Unset: e-mail is disabled (no verification, no reset by e-mail).
    pub host: Option<String>,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: String,
    /// Connection and command timeout.
    pub timeout_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: None,
            port: 587,
            security: SmtpSecurity::Starttls,
            username: None,
            password: None,
            from: "Roost <roost@localhost>".into(),
            timeout_secs: 20,
        }
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub per_second: f64,
    pub burst: u32,
}

impl Bucket {
    const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    pub enabled: bool,
    pub login_per_ip: Bucket,
    pub login_per_account: Bucket,
    pub register_per_ip: Bucket,
    pub email_request_per_ip: Bucket,
    pub email_request_per_address: Bucket,
    pub totp_per_account: Bucket,
    pub totp_per_ip: Bucket,
    /// Content reports (events, rooms, users) per reporting account.
    pub reports_per_account: Bucket,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            login_per_ip: Bucket::new(0.5, 10),
            login_per_account: Bucket::new(0.2, 5),
            register_per_ip: Bucket::new(0.2, 5),
            email_request_per_ip: Bucket::new(0.05, 5),
            email_request_per_address: Bucket::new(0.02, 3),
            totp_per_account: Bucket::new(0.1, 5),
            totp_per_ip: Bucket::new(0.2, 10),
            reports_per_account: Bucket::new(0.05, 10),
        }
    }
}

/// Presence (online / unavailable / offline) and its automatic idle and offline transitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Off: the presence endpoints answer 403 `M_FORBIDDEN`, `/sync` reports no presence and
    /// requests do not track activity.
    pub enabled: bool,
    /// An online user without activity for this long becomes `unavailable`.
    pub idle_after_secs: u64,
    /// An unavailable user without activity for this much longer becomes `offline`.
    pub offline_after_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_after_secs: 300,
            offline_after_secs: 1800,
        }
    }
}

/// Pushers: how the server calls push gateways.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Whether pushers may point at loopback, private, link-local or otherwise internal
    /// addresses. Off by default, so that a pusher cannot make the server call internal services.
    pub allow_private_addresses: bool,
    /// How long one call to a push gateway may take, in seconds.
    pub gateway_timeout_secs: u64,
    /// The wait before the first retry after a failed push, in milliseconds; it doubles with
    /// every failure.
    pub retry_initial_ms: u64,
    /// The longest wait between retries, in seconds.
    pub retry_max_secs: u64,
    /// A push not delivered after this many seconds is dropped.
    pub give_up_after_secs: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            allow_private_addresses: false,
            gateway_timeout_secs: 10,
            retry_initial_ms: 1_000,
            retry_max_secs: 3_600,
            give_up_after_secs: 86_400,
        }
    }
}

/// Server-side full-text search (`POST /search`), see `service::search`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Off: no index is kept and `POST /search` answers 400 `M_UNKNOWN`.
    pub enabled: bool,
    /// The index writer's memory budget, in MiB: what it buffers before writing a segment.
    pub writer_memory_mb: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            writer_memory_mb: 32,
        }
    }
}

/// The smallest and largest search writer budgets accepted, in MiB (the engine needs 15 MB).
const SEARCH_WRITER_MB: std::ops::RangeInclusive<u64> = 15..=1024;

/// The user directory (`POST /user_directory/search`), see `service::user_directory`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserDirectoryConfig {
    /// Search every local user, not only those who share a room with the searcher or are joined
    /// to a public or world-readable room.
    pub search_all_users: bool,
    /// The most results one search answers; a larger `limit` is lowered to it.
    pub max_limit: u64,
}

impl Default for UserDirectoryConfig {
    fn default() -> Self {
        Self {
            search_all_users: false,
            max_limit: 100,
        }
    }
}

/// The largest `user_directory.max_limit` accepted.
const MAX_USER_DIRECTORY_LIMIT: u64 = 1000;

/// A TURN server for voice and video calls (`GET /_matrix/client/v3/voip/turnServer`, Chat API
/// `GET /call/turn`): clients get time-limited credentials for it, made with the secret the TURN
/// server shares with us (coturn's `use-auth-secret` / `static-auth-secret`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// The TURN server's URIs (`turn:host:port?transport=udp`, `turns:...`). Empty: no TURN.
    pub uris: Vec<String>,
    /// The secret shared with the TURN server. Unset: no TURN.
    pub shared_secret: Option<String>,
    /// How long the credentials handed out stay valid, in seconds.
    pub ttl_secs: u64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            uris: Vec::new(),
            shared_secret: None,
            ttl_secs: 86_400,
        }
    }
}

/// The shortest and longest TURN credential lifetimes accepted, in seconds (one minute to a
/// week).
const TURN_TTL_SECS: std::ops::RangeInclusive<u64> = 60..=7 * 86_400;

/// The Server-Server API: a TLS listener for other homeservers, and outgoing requests to them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Whether this server talks to other homeservers at all.
    pub enabled: bool,
    /// Where the federation listener (HTTPS) binds.
    pub listen: String,
    /// The listener's certificate chain (PEM): valid for `server_name`, or for the host named by
    /// `well_known.server` when delegating.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// Certificates (PEM) trusted for outgoing requests beside the system's roots, such as a
    /// private CA.
    pub extra_ca_file: Option<PathBuf>,
    /// Whether destinations may resolve to loopback, private, link-local or other non-public
    /// addresses. Off, a server name can never point federation requests at internal services.
    pub allow_private_addresses: bool,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "0.0.0.0:8448".into(),
            tls_cert: None,
            tls_key: None,
            extra_ca_file: None,
            allow_private_addresses: false,
        }
    }
}

/// Memory the store may use for caches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The database's page cache, in MiB.
    pub cache_mb: u64,
    /// Room state entries kept decoded in memory, summed over all cached state snapshots.
    pub state_cache_entries: usize,
    /// Events kept decoded in memory.
    pub event_cache_entries: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            cache_mb: 32,
            state_cache_entries: crate::service::rooms::state::DEFAULT_CACHE_ENTRIES,
            event_cache_entries: crate::service::rooms::event_cache::DEFAULT_ENTRIES,
        }
    }
}

/// The content repository (media uploads, downloads and thumbnails).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// The largest upload accepted, in bytes (413 `M_TOO_LARGE` beyond).
    pub max_upload_bytes: u64,
    /// The total size of one user's uploads, in bytes; 0 = unlimited (403 `M_FORBIDDEN` beyond).
    pub max_bytes_per_user: u64,
    /// Whether new uploads may also be downloaded through the deprecated unauthenticated
    /// `/_matrix/media/v3/download` and `/thumbnail` routes (recorded per item at upload time).
    pub legacy_unauthenticated_downloads: bool,
    /// Media IDs a user may hold created (`POST /_matrix/media/v1/create`) but not yet uploaded.
    pub max_pending_uploads: u32,
    /// How long a created media ID waits for its content before it expires.
    pub unused_expiry_secs: u64,
    /// The largest image (width × height) that thumbnails are made of (413 `M_TOO_LARGE` beyond).
    pub thumbnail_max_source_pixels: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 50 << 20,
            max_bytes_per_user: 1 << 30,
            legacy_unauthenticated_downloads: false,
            max_pending_uploads: 5,
            unused_expiry_secs: 24 * 3600,
            thumbnail_max_source_pixels: 40_000_000,
        }
    }
}

/// The largest upload limit accepted (1 TiB).
const MAX_UPLOAD_LIMIT: u64 = 1 << 40;

/// The largest page cache accepted (1 TiB), so that its size in bytes never overflows.
const MAX_CACHE_MB: u64 = 1 << 20;

/// The longest presence timeout accepted (one year), so that deadlines never overflow.
const MAX_PRESENCE_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

impl Config {
    /// Loads the file (if any), applies `ROOST_*` environment overrides from `env`, validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != CONFIG_FILE_ENV)
            .collect();
        overrides.sort();
        for (name, raw) in overrides {
            apply_env_override(&mut table, &defaults, &name, &raw)?;
        }
        Self::from_table(table)
    }

    /// Loads from the process environment.
    pub fn load_from_process(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load(path, std::env::vars())
    }

    fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let value = toml::Value::Table(table);
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let key = if path == "." || path.is_empty() {
                // Unknown top-level keys: serde names the key in the message.
                unknown_key_from_message(&inner).unwrap_or_else(|| "(top level)".into())
            } else {
                match unknown_key_from_message(&inner) {
                    Some(k) => format!("{path}.{k}"),
                    None => path,
                }
            };
            key_error(key, inner)
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if ruma::ServerName::parse(&self.server_name).is_err() {
            return Err(key_error("server_name", "not a valid Matrix server name"));
        }
        if self.listen.is_empty() {
            return Err(key_error("listen", "at least one address:port is needed"));
        }
        for addr in &self.listen {
            addr.parse::<SocketAddr>()
                .map_err(|_| key_error("listen", format!("`{addr}` is not an address:port")))?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(key_error("data_dir", "must not be empty"));
        }
        if let Some(url) = &self.public_baseurl {
            check_http_url("public_baseurl", url)?;
        }
        if let Some(url) = &self.well_known.client_base_url {
            check_http_url("well_known.client_base_url", url)?;
        }
        for proxy in &self.trusted_proxies {
            proxy.parse::<std::net::IpAddr>().map_err(|_| {
                key_error("trusted_proxies", format!("`{proxy}` is not an IP address"))
            })?;
        }
        if self.max_request_body_bytes < 1024 {
            return Err(key_error("max_request_body_bytes", "must be at least 1024"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(key_error("log_level", "not a valid log filter"));
        }
        if let Some(secret) = &self.auth.jwt_secret
            && secret.len() < 32
        {
            return Err(key_error(
                "auth.jwt_secret",
                "must be at least 32 characters",
            ));
        }
        if self.auth.access_token_lifetime_secs < 10 {
            return Err(key_error(
                "auth.access_token_lifetime_secs",
                "must be at least 10 seconds",
            ));
        }
        if self.auth.refresh_token_lifetime_secs < self.auth.access_token_lifetime_secs {
            return Err(key_error(
                "auth.refresh_token_lifetime_secs",
                "must not be shorter than auth.access_token_lifetime_secs",
            ));
        }
        if self.auth.uia_session_lifetime_secs < 30 {
            return Err(key_error(
                "auth.uia_session_lifetime_secs",
                "must be at least 30",
            ));
        }
        if self.auth.email_token_lifetime_secs < 60 {
            return Err(key_error(
                "auth.email_token_lifetime_secs",
                "must be at least 60",
            ));
        }
        if self.password.min_length == 0 || self.password.min_length > 512 {
            return Err(key_error(
                "password.min_length",
                "must be between 1 and 512",
            ));
        }
        if self.smtp.host.is_some() {
            if self.smtp.from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(key_error("smtp.from", "not a valid e-mail mailbox"));
            }
            if self.smtp.username.is_some() != self.smtp.password.is_some() {
                return Err(key_error(
                    "smtp.password",
                    "smtp.username and smtp.password go together",
                ));
            }
        }
        if self.registration_requires_email && self.smtp.host.is_none() {
            return Err(key_error(
                "registration_requires_email",
                "needs e-mail to be configured (smtp.host)",
            ));
        }
        let rl = &self.rate_limits;
        for (name, b) in [
            ("login_per_ip", rl.login_per_ip),
            ("login_per_account", rl.login_per_account),
            ("register_per_ip", rl.register_per_ip),
            ("email_request_per_ip", rl.email_request_per_ip),
            ("email_request_per_address", rl.email_request_per_address),
            ("totp_per_account", rl.totp_per_account),
            ("totp_per_ip", rl.totp_per_ip),
            ("reports_per_account", rl.reports_per_account),
        ] {
            if !(b.per_second.is_finite() && b.per_second > 0.0) || b.burst == 0 {
                return Err(key_error(
                    format!("rate_limits.{name}"),
                    "per_second must be > 0 and burst >= 1",
                ));
            }
        }
        for (name, secs) in [
            ("idle_after_secs", self.presence.idle_after_secs),
            ("offline_after_secs", self.presence.offline_after_secs),
        ] {
            if !(1..=MAX_PRESENCE_TIMEOUT_SECS).contains(&secs) {
                return Err(key_error(
                    format!("presence.{name}"),
                    format!("must be between 1 and {MAX_PRESENCE_TIMEOUT_SECS} seconds"),
                ));
            }
        }
        if !(1..=MAX_CACHE_MB).contains(&self.storage.cache_mb) {
            return Err(key_error(
                "storage.cache_mb",
                format!("must be between 1 and {MAX_CACHE_MB}"),
            ));
        }
        self.validate_media()?;
        self.validate_push()?;
        self.validate_turn()?;
        self.validate_federation()?;
        if !(1..=MAX_USER_DIRECTORY_LIMIT).contains(&self.user_directory.max_limit) {
            return Err(key_error(
                "user_directory.max_limit",
                format!("must be between 1 and {MAX_USER_DIRECTORY_LIMIT}"),
            ));
        }
        if !SEARCH_WRITER_MB.contains(&self.search.writer_memory_mb) {
            return Err(key_error(
                "search.writer_memory_mb",
                format!(
                    "must be between {} and {}",
                    SEARCH_WRITER_MB.start(),
                    SEARCH_WRITER_MB.end()
                ),
            ));
        }
        Ok(())
    }

    fn validate_push(&self) -> Result<(), ConfigError> {
        let push = &self.push;
        for (name, value, max) in [
            ("gateway_timeout_secs", push.gateway_timeout_secs, 600),
            ("retry_initial_ms", push.retry_initial_ms, 3_600_000),
            ("retry_max_secs", push.retry_max_secs, 86_400),
            ("give_up_after_secs", push.give_up_after_secs, 30 * 86_400),
        ] {
            if !(1..=max).contains(&value) {
                return Err(key_error(
                    format!("push.{name}"),
                    format!("must be between 1 and {max}"),
                ));
            }
        }
        Ok(())
    }

    fn validate_federation(&self) -> Result<(), ConfigError> {
        let federation = &self.federation;
        federation.listen.parse::<SocketAddr>().map_err(|_| {
            key_error(
                "federation.listen",
                format!("`{}` is not an address:port", federation.listen),
            )
        })?;
        if federation.enabled {
            for (key, path) in [
                ("federation.tls_cert", &federation.tls_cert),
                ("federation.tls_key", &federation.tls_key),
            ] {
                if path.is_none() {
                    return Err(key_error(key, "is needed when federation.enabled is true"));
                }
            }
        }
        for server in &self.trusted_key_servers {
            if ruma::ServerName::parse(server).is_err() {
                return Err(key_error(
                    "trusted_key_servers",
                    format!("`{server}` is not a valid server name"),
                ));
            }
        }
        Ok(())
    }

    fn validate_turn(&self) -> Result<(), ConfigError> {
        let turn = &self.turn;
        for uri in &turn.uris {
            let rest = uri
                .strip_prefix("turn:")
                .or_else(|| uri.strip_prefix("turns:"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with(['?', ':']))
                || uri.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(key_error(
                    "turn.uris",
                    format!("`{uri}` is not a turn: or turns: URI"),
                ));
            }
        }
        if turn.shared_secret.as_deref() == Some("") {
            return Err(key_error("turn.shared_secret", "must not be empty"));
        }
        if turn.uris.is_empty() != turn.shared_secret.is_none() {
            return Err(key_error(
                "turn.shared_secret",
                "turn.uris and turn.shared_secret go together",
            ));
        }
        if !TURN_TTL_SECS.contains(&turn.ttl_secs) {
            return Err(key_error(
                "turn.ttl_secs",
                format!(
                    "must be between {} and {} seconds",
                    TURN_TTL_SECS.start(),
                    TURN_TTL_SECS.end()
                ),
            ));
        }
        Ok(())
    }

    fn validate_media(&self) -> Result<(), ConfigError> {
        let media = &self.media;
        if !(1..=MAX_UPLOAD_LIMIT).contains(&media.max_upload_bytes) {
            return Err(key_error(
                "media.max_upload_bytes",
                format!("must be between 1 and {MAX_UPLOAD_LIMIT}"),
            ));
        }
        if media.max_pending_uploads == 0 {
            return Err(key_error("media.max_pending_uploads", "must be at least 1"));
        }
        if !(60..=MAX_PRESENCE_TIMEOUT_SECS).contains(&media.unused_expiry_secs) {
            return Err(key_error(
                "media.unused_expiry_secs",
                format!("must be between 60 and {MAX_PRESENCE_TIMEOUT_SECS} seconds"),
            ));
        }
        if !(1..=1 << 32).contains(&media.thumbnail_max_source_pixels) {
            return Err(key_error(
                "media.thumbnail_max_source_pixels",
                "must be between 1 and 4294967296",
            ));
        }
        Ok(())
    }

    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|p| p.parse::<std::net::IpAddr>().is_ok_and(|p| p == ip))
    }

    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listen.iter().filter_map(|a| a.parse().ok()).collect()
    }

    /// The registration mode in force: explicit, or derived from the listeners.
    pub fn effective_registration(&self) -> RegistrationMode {
        self.registration.unwrap_or_else(|| {
            if self.listen_addrs().iter().all(|a| a.ip().is_loopback()) {
                RegistrationMode::Open
            } else {
                RegistrationMode::Closed
            }
        })
    }

    /// Base URL for links that users follow (no trailing slash).
    pub fn public_baseurl(&self) -> String {
        match &self.public_baseurl {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let addr = self
                    .listen
                    .first()
                    .map(String::as_str)
                    .unwrap_or("127.0.0.1:8008");
                format!("http://{addr}")
            }
        }
    }
}

fn check_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        _ => Err(key_error(key, "must be an http(s) URL")),
    }
}

fn unknown_key_from_message(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// `ROOST_RATE_LIMITS__ENABLED=false` sets `rate_limits.enabled`. The value is parsed as the type
/// the key has in the defaults (string, integer, float, bool, list); lists may also be given
/// comma-separated.
fn apply_env_override(
    table: &mut toml::Table,
    defaults: &toml::Table,
    name: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let path: Vec<String> = name[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_lowercase)
        .collect();
    let dotted = path.join(".");
    if path.iter().any(String::is_empty) {
        return Err(key_error(name, "malformed environment variable name"));
    }
    let mut default: Option<&toml::Value> = None;
    let mut scope = Some(defaults);
    for part in &path {
        default = scope.and_then(|t| t.get(part));
        scope = default.and_then(toml::Value::as_table);
    }
    let value = parse_env_value(default, raw)
        .map_err(|m| key_error(dotted.clone(), format!("from {name}: {m}")))?;
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| key_error(name, "empty key"))?;
    let mut cursor = table;
    let mut defaults_cursor = Some(defaults);
    for part in parents {
        // A table the file does not have starts as its defaults, so that setting one field of
        // it (ROOST_RATE_LIMITS__LOGIN_PER_IP__BURST) keeps the others.
        let default_table = defaults_cursor
            .and_then(|d| d.get(part))
            .and_then(toml::Value::as_table);
        let seed = default_table.cloned().unwrap_or_default();
        defaults_cursor = default_table;
        let entry = cursor
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(seed));
        cursor = entry
            .as_table_mut()
            .ok_or_else(|| key_error(dotted.clone(), format!("`{part}` is not a table")))?;
    }
    cursor.insert(last.clone(), value);
    Ok(())
}

fn parse_env_value(default: Option<&toml::Value>, raw: &str) -> Result<toml::Value, String> {
    use toml::Value;
    let literal = || {
        format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
    };
    Ok(match default {
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(Value::Boolean(_)) => Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(format!("`{raw}` is not a boolean")),
        }),
        Some(Value::Integer(_)) => Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("`{raw}` is not an integer"))?,
        ),
        Some(Value::Float(_)) => Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| format!("`{raw}` is not a number"))?,
        ),
        Some(Value::Array(_)) => match literal() {
            Some(v @ Value::Array(_)) => v,
            _ => Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
        },
        Some(Value::Table(_)) => match literal() {
            Some(v @ Value::Table(_)) => v,
            _ => return Err("names a table: give an inline table or set its keys".into()),
        },
        // Keys without a default are all optional strings (unknown keys fail later anyway).
        _ => Value::String(raw.to_owned()),
    })
}

fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_str(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| key_error("tmp", e.to_string()))?;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).map_err(|e| key_error("tmp", e.to_string()))?;
        Config::load(Some(&path), env(vars))
    }

    #[test]
    fn defaults_work_for_a_newcomer() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.listen, vec!["127.0.0.1:8008"]);
        assert_eq!(c.data_dir, PathBuf::from("./roost-data"));
        assert_eq!(c.effective_registration(), RegistrationMode::Open);
        assert!(c.rate_limits.enabled);
    }

    #[test]
    fn registration_closed_by_default_off_loopback() {
        let c = Config::load(None, env(&[("ROOST_LISTEN", "0.0.0.0:8008")])).unwrap();
        assert_eq!(c.effective_registration(), RegistrationMode::Closed);
        let c = Config::load(
            None,
            env(&[
                ("ROOST_LISTEN", "0.0.0.0:8008"),
                ("ROOST_REGISTRATION", "open"),
            ]),
        )
        .unwrap();
        assert_eq!(c.effective_registration(), RegistrationMode::Open);
    }

    #[test]
    fn env_overrides_nested_keys_and_lists() {
        let c = Config::load(
            None,
            env(&[
                ("ROOST_RATE_LIMITS__ENABLED", "false"),
                ("ROOST_LISTEN", "127.0.0.1:1,127.0.0.2:2"),
                ("ROOST_SMTP__HOST", "127.0.0.1"),
                ("ROOST_SMTP__PORT", "2525"),
                ("ROOST_SERVER_NAME", "example.org"),
                (
                    "ROOST_RATE_LIMITS__LOGIN_PER_IP",
                    "{ per_second = 1.5, burst = 3 }",
                ),
                ("HOME", "/ignored"),
            ]),
        )
        .unwrap();
        assert!(!c.rate_limits.enabled);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.smtp.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.smtp.port, 2525);
        assert_eq!(c.server_name, "example.org");
        assert_eq!(c.rate_limits.login_per_ip.burst, 3);
    }

    #[test]
    fn env_sets_one_field_of_a_table_and_keeps_strings_as_strings() {
        let c = Config::load(
            None,
            env(&[
                ("ROOST_RATE_LIMITS__LOGIN_PER_IP__BURST", "7"),
                ("ROOST_SMTP__HOST", "127.0.0.1"),
                ("ROOST_SMTP__USERNAME", "12345"),
                ("ROOST_SMTP__PASSWORD", "67890"),
                ("ROOST_CONFIG", "/ignored/here"),
            ]),
        )
        .unwrap();
        assert_eq!(c.rate_limits.login_per_ip.burst, 7);
        assert_eq!(
            c.rate_limits.login_per_ip.per_second,
            RateLimitsConfig::default().login_per_ip.per_second
        );
        assert_eq!(c.smtp.password.as_deref(), Some("67890"));
    }

    /// `config.example.toml` is a valid config that documents every key with its default.
    #[test]
    fn example_file_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let example = Config::load(Some(&path), env(&[])).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let loaded = toml::Table::try_from(example).unwrap();
        assert_eq!(defaults, loaded, "the example's values are the defaults");
        fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in table {
                match v.as_table() {
                    Some(t) if !t.contains_key("per_second") => {
                        keys(&format!("{prefix}{k}."), t, out)
                    }
                    _ => out.push(format!("{prefix}{k}")),
                }
            }
        }
        let mut all = Vec::new();
        keys("", &defaults, &mut all);
        for optional in [
            "registration",
            "public_baseurl",
            "well_known.client_base_url",
            "well_known.server",
            "auth.jwt_secret",
            "smtp.host",
            "smtp.username",
            "smtp.password",
            "turn.shared_secret",
        ] {
            all.push(optional.into());
        }
        for key in all {
            let name = key.rsplit('.').next().unwrap();
            let env_name = format!("ROOST_{}", key.replace('.', "__").to_uppercase());
            assert!(
                text.contains(&format!("{name} =")),
                "{key} is not in the example"
            );
            assert!(text.contains(&env_name), "{env_name} is not in the example");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load_str("server_nam = \"x\"", &[]).unwrap_err().to_string();
        assert!(err.contains("server_nam"), "{err}");
        let err = load_str("[smtp]\nhots = \"x\"", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.hots"), "{err}");
        let err = Config::load(None, env(&[("ROOST_NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = load_str("listen = [\"nowhere\"]", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`listen`"), "{err}");
        let err = load_str("registration = \"maybe\"", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("registration"), "{err}");
        let err = Config::load(None, env(&[("ROOST_SMTP__PORT", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.port"), "{err}");
        let err = load_str("[smtp]\nport = 70000", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("smtp.port"), "{err}");
        let err = load_str("server_name = \"bad name\"", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server_name"), "{err}");
        let err = load_str("[presence]\nidle_after_secs = 0", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("presence.idle_after_secs"), "{err}");
        let err = Config::load(None, env(&[("ROOST_PRESENCE__OFFLINE_AFTER_SECS", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("presence.offline_after_secs"), "{err}");
        for key in [
            "max_upload_bytes",
            "max_pending_uploads",
            "unused_expiry_secs",
            "thumbnail_max_source_pixels",
        ] {
            let var = format!("ROOST_MEDIA__{}", key.to_uppercase());
            let err = Config::load(None, env(&[(var.as_str(), "0")]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("media.{key}")), "{err}");
        }
        for bad in ["0", "14", "1025"] {
            let err = Config::load(None, env(&[("ROOST_SEARCH__WRITER_MEMORY_MB", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("search.writer_memory_mb"), "{err}");
        }
        let c = Config::load(None, env(&[("ROOST_SEARCH__ENABLED", "off")])).unwrap();
        assert!(!c.search.enabled);
        for bad in ["0", "1001"] {
            let err = Config::load(None, env(&[("ROOST_USER_DIRECTORY__MAX_LIMIT", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("user_directory.max_limit"), "{err}");
        }
        let c = Config::load(
            None,
            env(&[("ROOST_USER_DIRECTORY__SEARCH_ALL_USERS", "true")]),
        )
        .unwrap();
        assert!(c.user_directory.search_all_users);
        assert!(!Config::default().user_directory.search_all_users);
        let c = Config::load(
            None,
            env(&[("ROOST_MEDIA__LEGACY_UNAUTHENTICATED_DOWNLOADS", "on")]),
        )
        .unwrap();
        assert!(c.media.legacy_unauthenticated_downloads);
        assert_eq!(c.media.max_upload_bytes, 50 << 20);
    }

    #[test]
    fn turn_settings_are_checked() {
        let c = Config::load(
            None,
            env(&[
                (
                    "ROOST_TURN__URIS",
                    "turn:127.0.0.1:3478?transport=udp,turns:t.example",
                ),
                ("ROOST_TURN__SHARED_SECRET", "s3cret"),
                ("ROOST_TURN__TTL_SECS", "600"),
            ]),
        )
        .unwrap();
        assert_eq!(c.turn.uris.len(), 2);
        assert_eq!(c.turn.shared_secret.as_deref(), Some("s3cret"));
        assert_eq!(c.turn.ttl_secs, 600);
        assert_eq!(Config::default().turn.ttl_secs, 86_400);
        for (vars, key) in [
            (&[("ROOST_TURN__URIS", "http://t.example")][..], "turn.uris"),
            (&[("ROOST_TURN__URIS", "turn:")][..], "turn.uris"),
            (
                &[("ROOST_TURN__URIS", "turn:t.example")][..],
                "turn.shared_secret",
            ),
            (
                &[("ROOST_TURN__SHARED_SECRET", "x")][..],
                "turn.shared_secret",
            ),
            (&[("ROOST_TURN__TTL_SECS", "59")][..], "turn.ttl_secs"),
        ] {
            let err = Config::load(None, env(vars)).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
