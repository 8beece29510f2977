//! Services hold the domain logic. They read and write only through `storage`.

pub mod account_data;
pub mod accounts;
pub mod chat;
pub mod devices;
pub mod federation;
pub mod filters;
pub mod keys;
pub mod lifecycle;
pub mod mail;
pub mod media;
pub mod mfa;
pub mod notifier;
pub mod openid;
pub mod password;
pub mod presence;
pub mod profile;
pub mod push;
pub mod ratelimit;
pub mod receipts;
pub mod regtokens;
pub mod reports;
pub mod room_ephemeral;
pub mod room_summary;
pub mod rooms;
pub mod search;
pub mod sessions;
pub mod signing_key;
pub mod spaces;
pub mod sync;
pub mod threepid;
pub mod to_device;
pub mod typing;
pub mod uia;
pub mod unread;
pub mod user_directory;

use std::sync::Arc;

use crate::config::Config;
use crate::error::Result;
use crate::storage::Store;

/// Every service, built once at start-up and shared by the handlers.
pub struct Services {
    pub config: Arc<Config>,
    pub store: Store,
    pub accounts: accounts::Accounts,
    pub devices: devices::Devices,
    pub sessions: sessions::Sessions,
    pub profiles: profile::Profiles,
    pub uia: uia::Uia,
    pub regtokens: regtokens::RegistrationTokens,
    pub threepids: threepid::Threepids,
    pub mailer: mail::Mailer,
    pub mfa: mfa::Mfa,
    pub rate_limits: ratelimit::RateLimiter,
    pub signing_key: Arc<signing_key::SigningKey>,
    pub rooms: rooms::Rooms,
    pub notifier: Arc<notifier::Notifier>,
    pub account_data: account_data::AccountData,
    pub filters: filters::Filters,
    /// Online / unavailable / offline, status messages, last activity, idle timers.
    pub presence: presence::Presence,
    /// Send-to-device message inboxes.
    pub to_device: to_device::ToDevice,
    /// Who is typing where (in memory).
    pub typing: typing::Typing,
    /// Read and delivered receipts.
    pub receipts: receipts::Receipts,
    /// Delivered receipts waiting to be recorded.
    pub deliveries: room_ephemeral::DeliveryQueue,
    /// Push rules, notifications and pushers.
    pub push: push::Push,
    /// The content repository.
    pub media: media::Media,
    /// End-to-end encryption keys and device-list changes.
    pub keys: keys::Keys,
    /// Server-side full-text search.
    pub search: search::Search,
    /// The members of public rooms, for user directory searches.
    pub user_directory: user_directory::UserDirectory,
    /// Space hierarchy walks between pages.
    pub space_walks: spaces::SpaceWalks,
    /// Content reports for the server's administrators.
    pub reports: reports::Reports,
    /// What only the Chat API needs: friends, the call log, its notification feed.
    pub chat: chat::Chat,
    /// Talking with other homeservers.
    pub federation: federation::Federation,
}

impl Services {
    pub fn build(config: Config, store: Store) -> Result<Arc<Self>> {
        let config = Arc::new(config);
        let notifier = Arc::new(notifier::Notifier::default());
        let signing_key = Arc::new(signing_key::SigningKey::load_or_create(&config.data_dir)?);
        let server_name = ruma::ServerName::parse(&config.server_name)
            .map_err(|e| crate::error::Error::internal(format!("server_name: {e}")))?;
        let push = push::Push::new(&store)?;
        let search = search::Search::new(&config, &store)?;
        Ok(Arc::new(Self {
            accounts: accounts::Accounts::new(&store, config.clone())?,
            devices: devices::Devices::new(&store)?,
            sessions: sessions::Sessions::new(&store, &config)?,
            profiles: profile::Profiles::new(&store)?,
            uia: uia::Uia::new(&config),
            regtokens: regtokens::RegistrationTokens::new(&store)?,
            threepids: threepid::Threepids::new(&store, config.clone())?,
            mailer: mail::Mailer::new(&config.smtp)?,
            mfa: mfa::Mfa::new(&store)?,
            rate_limits: ratelimit::RateLimiter::new(config.rate_limits.clone()),
            presence: presence::Presence::new(&store, notifier.clone(), &config.presence)?,
            to_device: to_device::ToDevice::new(&store, notifier.clone(), server_name.clone())?,
            media: media::Media::new(&store, config.clone(), server_name.clone())?,
            federation: federation::Federation::new(
                &config,
                &store,
                server_name.clone(),
                signing_key.clone(),
            )?,
            rooms: rooms::Rooms::new(
                &store,
                server_name,
                signing_key.clone(),
                notifier.clone(),
                config.storage.state_cache_entries,
                config.storage.event_cache_entries,
                push.queue(),
                search.queue(),
            )?,
            push,
            search,
            filters: filters::Filters::new(&store)?,
            user_directory: user_directory::UserDirectory::default(),
            space_walks: spaces::SpaceWalks::default(),
            reports: reports::Reports::new(&store)?,
            chat: chat::Chat::new(&store)?,
            keys: keys::Keys::new(&store)?,
            typing: typing::Typing::new(&store, notifier.clone())?,
            receipts: receipts::Receipts::new(&store)?,
            deliveries: room_ephemeral::DeliveryQueue::default(),
            account_data: account_data::AccountData::new(&store, notifier.clone())?,
            notifier,
            signing_key,
            store,
            config,
        }))
    }
}
