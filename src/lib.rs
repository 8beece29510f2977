//! Roost, a Matrix homeserver: the library builds the whole server from a [`Config`]; the binary
//! and the integration tests both start it through [`start`].

pub mod api;
pub mod config;
pub mod core;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod service;
pub mod storage;
mod supervisor;
pub mod tls;
pub mod util;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
use service::Services;
use storage::Store;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("{0}")]
    Service(#[from] error::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    addrs: Vec<SocketAddr>,
    federation_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    supervisor: Arc<supervisor::Supervisor>,
    supervise: JoinHandle<()>,
}

/// Opens the store and builds the services on it: at start, and again when the database is
/// reopened after a failed write (see `supervisor`).
fn open_services(config: Config) -> Result<Arc<Services>, StartError> {
    let store = Store::open_with_cache(&config.data_dir, config.storage.cache_mb << 20)?;
    let services = Services::build(config, store)?;
    // Users online or idle when the server stopped get their presence timers back.
    services.presence.restore_timers()?;
    services.spawn_delivery_writer();
    services.spawn_push_evaluator();
    services.spawn_search_indexer();
    services.spawn_push_sender();
    services.spawn_federation_sender();
    Ok(services)
}

/// Binds every configured address, opens the store, builds the services and starts serving.
pub async fn start(mut config: Config) -> Result<Server, StartError> {
    let mut listeners = Vec::new();
    for addr in &config.listen {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
        listeners.push((listener, local));
    }
    let federation = if config.federation.enabled {
        Some(bind_federation(&config.federation).await?)
    } else {
        None
    };
    // Links in e-mails point at the address really bound (port 0 picks one).
    if config.public_baseurl.is_none()
        && let Some((_, first)) = listeners.first()
    {
        config.public_baseurl = Some(format!("http://{first}"));
    }
    let services = open_services(config.clone())?;
    let supervisor = supervisor::Supervisor::new(config, services);
    let app = supervisor.front();
    let (stop, _) = watch::channel(false);
    let supervise = supervisor.spawn(stop.subscribe());
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for (listener, local) in listeners {
        addrs.push(local);
        let mut rx = stop.subscribe();
        let service = app
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        tasks.push(tokio::spawn(async move {
            axum::serve(listener, service)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stopped| *stopped).await;
                })
                .await
        }));
        tracing::info!(address = %local, "listening");
    }
    let mut federation_addr = None;
    if let Some((listener, local, tls_config)) = federation {
        federation_addr = Some(local);
        tasks.push(tokio::spawn(tls::serve(
            listener,
            tls_config,
            app.clone(),
            stop.subscribe(),
        )));
        tracing::info!(address = %local, "federation listening (TLS)");
    }
    Ok(Server {
        addrs,
        federation_addr,
        stop,
        tasks,
        supervisor,
        supervise,
    })
}

/// The federation listener: its TLS configuration (checked before anything else starts) and its
/// bound socket.
async fn bind_federation(
    federation: &config::FederationConfig,
) -> Result<
    (
        tokio::net::TcpListener,
        SocketAddr,
        Arc<rustls::ServerConfig>,
    ),
    StartError,
> {
    let tls = tls::server_config(federation)?;
    let bind_error = |source| StartError::Bind {
        addr: federation.listen.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&federation.listen)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local, tls))
}

impl Server {
    /// The bound addresses (with the real ports when port 0 was asked for).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The address the federation listener (TLS) is bound to, when federation is enabled.
    pub fn federation_addr(&self) -> Option<SocketAddr> {
        self.federation_addr
    }

    /// `http://` + the first bound address.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addrs[0])
    }

    /// The services in use.
    ///
    /// # Panics
    ///
    /// While the database is being reopened after a failed write; see [`Server::try_services`].
    pub fn services(&self) -> Arc<Services> {
        match self.try_services() {
            Some(services) => services,
            None => panic!("the database is being reopened after a failed write"),
        }
    }

    /// The services in use; `None` while the database is being reopened after a failed write.
    pub fn try_services(&self) -> Option<Arc<Services>> {
        self.supervisor.services()
    }

    /// Stops accepting connections, ends long polls, lets requests in flight finish, then
    /// flushes the store.
    pub async fn shutdown(self) -> Result<(), StartError> {
        let _ = self.stop.send(true);
        if let Some(services) = self.supervisor.services() {
            // Waiting `/sync` requests answer now rather than at their timeout.
            services.notifier.close();
        }
        for task in self.tasks {
            match task.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "listener ended with an error"),
                Err(e) => tracing::warn!(error = %e, "listener task failed"),
                Ok(Ok(())) => {}
            }
        }
        if let Err(e) = self.supervise.await {
            tracing::warn!(error = %e, "the storage supervisor failed");
        }
        if let Some(services) = self.supervisor.services() {
            services.store.flush_blocking()?;
        }
        tracing::info!("stopped");
        Ok(())
    }
}
