//! Federation: talking with other homeservers over the Server-Server API.
//!
//! - `transport`: server discovery and the HTTPS client (TLS verification, address policy);
//! - `keys`: our signing keys as published, and other servers' keys as cached;
//! - `verify`: fetching other servers' keys and checking their signatures;
//! - `request`: outgoing requests signed with `X-Matrix`;
//! - `acl`: `m.room.server_acl`.

pub mod acl;
pub mod backfill;
pub mod e2ee;
pub mod hierarchy;
pub mod history;
pub mod history_page;
pub mod keys;
pub mod membership;
pub mod multipart;
pub mod receiver;
pub mod remote_directory;
pub mod remote_hierarchy;
pub mod remote_media;
pub mod request;
pub mod sender;
pub mod served;
pub mod transport;
pub mod verify;
pub mod walks;

use std::sync::Arc;

use ruma::{OwnedServerName, ServerName};

use crate::config::Config;
use crate::error::Result;
use crate::service::signing_key::SigningKey;
use crate::storage::Store;

/// Everything this server needs to talk with other homeservers.
pub struct Federation {
    enabled: bool,
    server_name: OwnedServerName,
    /// Notaries asked for keys a server does not give us itself.
    trusted_key_servers: Vec<OwnedServerName>,
    pub transport: transport::Transport,
    pub keys: keys::ServerKeys,
    pub sender: sender::Sender,
    pub receiver: receiver::Receiver,
    pub e2ee: e2ee::E2ee,
}

impl Federation {
    pub fn new(
        config: &Config,
        store: &Store,
        server_name: OwnedServerName,
        signing_key: Arc<SigningKey>,
    ) -> Result<Self> {
        Ok(Self {
            enabled: config.federation.enabled,
            trusted_key_servers: config
                .trusted_key_servers
                .iter()
                .filter_map(|name| ServerName::parse(name).ok())
                .filter(|name| *name != server_name)
                .collect(),
            transport: transport::Transport::new(config)?,
            keys: keys::ServerKeys::new(store, server_name.clone(), signing_key)?,
            sender: sender::Sender::new(store, server_name.clone(), config.federation.enabled)?,
            receiver: receiver::Receiver::new(store)?,
            e2ee: e2ee::E2ee::new(store)?,
            server_name,
        })
    }

    /// Whether this server talks with other homeservers at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Our server name.
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// Whether a server name is ours.
    pub fn is_us(&self, server: &ServerName) -> bool {
        server == self.server_name
    }
}
