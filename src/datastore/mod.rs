//! The datastore: etcd's v3 API over an MVCC store on redb.
//!
//! Owns its storage directory (default `$SNAP_DATA/var/lib/datastore/`) and ports 12379
//! (clients: KV, Watch, Lease, Maintenance, Cluster) and 19001 (peer/admin: Maintenance,
//! Cluster), both TLS with a client certificate from the cluster CA required. Knows nothing of
//! Kubernetes types; the API server is just one of its clients. One file per etcd service,
//! each a thin translation onto [`store::Store`].

mod cluster;
pub mod dbctl;
mod error;
mod kv;
mod lease;
mod maintenance;
pub mod store;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::proto::{
    PbClusterServer, PbKvServer, PbLeaseServer, PbMaintenanceServer, PbWatchServer,
};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::common::args::{ArgsError, Flag};
pub use maintenance::ETCD_VERSION;
use store::{MAX_REQUEST_BYTES, Store};

/// MicroK8s's datastore client port.
pub const DEFAULT_CLIENT_PORT: u16 = 12379;
/// MicroK8s's datastore peer/admin port.
pub const DEFAULT_PEER_PORT: u16 = 19001;
/// How long open streams get after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// etcd's allowance for gRPC framing above `--max-request-bytes`.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Why the datastore cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    Io(#[from] crate::common::fsutil::IoError),
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    #[error("cannot open the store in {}: {cause}", dir.display())]
    Open {
        dir: PathBuf,
        cause: error::EtcdError,
    },
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot serve on {addr}: {cause}")]
    Serve {
        addr: SocketAddr,
        cause: tonic::transport::Error,
    },
}

/// The datastore's settings for a data root: defaults, then `args/datastore`, then `cli`.
pub fn load_config(
    paths: &crate::common::paths::Paths,
    cli: &[String],
) -> Result<Config, DatastoreError> {
    let flags = crate::common::args::load(&paths.data_file("args/datastore"), cli, &paths.vars())?;
    let mut config = Config::defaults(&paths.snap_data, crate::common::host::node_name());
    config.apply(&flags)?;
    Ok(config)
}

/// The datastore's settings, from `args/datastore` with etcd's and MicroK8s's flag names.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub storage_dir: PathBuf,
    pub listen_client: Vec<SocketAddr>,
    pub listen_peer: Vec<SocketAddr>,
    pub advertise_client_urls: Vec<String>,
    pub advertise_peer_urls: Vec<String>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trusted_ca_file: PathBuf,
    /// History older than this is compacted; zero disables (`--auto-compaction-retention`).
    pub auto_compaction_retention: Duration,
    pub progress_notify_interval: Duration,
}

impl Config {
    /// Defaults for a data root, as `args/datastore` would set them.
    pub fn defaults(snap_data: &std::path::Path, name: String) -> Self {
        let certs = snap_data.join("certs");
        Self {
            name,
            storage_dir: snap_data.join("var/lib/datastore"),
            listen_client: vec![SocketAddr::from(([0, 0, 0, 0], DEFAULT_CLIENT_PORT))],
            listen_peer: vec![SocketAddr::from(([0, 0, 0, 0], DEFAULT_PEER_PORT))],
            advertise_client_urls: vec![format!("https://127.0.0.1:{DEFAULT_CLIENT_PORT}")],
            advertise_peer_urls: vec![format!("https://127.0.0.1:{DEFAULT_PEER_PORT}")],
            cert_file: certs.join("datastore.crt"),
            key_file: certs.join("datastore.key"),
            trusted_ca_file: certs.join("ca.crt"),
            auto_compaction_retention: Duration::from_secs(300),
            progress_notify_interval: Duration::from_secs(600),
        }
    }

    /// Applies flags in order (later ones win).
    pub fn apply(&mut self, flags: &[Flag]) -> Result<(), ArgsError> {
        let mut advertised_client = false;
        let mut advertised_peer = false;
        for f in flags {
            let invalid = |why: &str| ArgsError::Invalid {
                origin: f.origin.clone(),
                flag: f.name.clone(),
                value: f.value.clone(),
                why: why.to_string(),
            };
            match f.name.as_str() {
                "name" => self.name = f.value.clone(),
                "storage-dir" | "data-dir" => self.storage_dir = PathBuf::from(&f.value),
                "listen-client-urls" => {
                    self.listen_client = parse_urls(&f.value).map_err(|w| invalid(&w))?
                }
                "listen-peer-urls" => {
                    self.listen_peer = parse_urls(&f.value).map_err(|w| invalid(&w))?
                }
                "advertise-client-urls" => {
                    advertised_client = true;
                    self.advertise_client_urls = crate::common::args::split_list(&f.value);
                }
                "initial-advertise-peer-urls" => {
                    advertised_peer = true;
                    self.advertise_peer_urls = crate::common::args::split_list(&f.value);
                }
                "cert-file" | "peer-cert-file" => self.cert_file = PathBuf::from(&f.value),
                "key-file" | "peer-key-file" => self.key_file = PathBuf::from(&f.value),
                "trusted-ca-file" | "peer-trusted-ca-file" => {
                    self.trusted_ca_file = PathBuf::from(&f.value)
                }
                // Mutual TLS is always on; accept etcd's flags that say so.
                "client-cert-auth" | "peer-client-cert-auth" => {
                    if f.value != "true" {
                        return Err(invalid("client certificates are always required"));
                    }
                }
                "auto-compaction-retention" => {
                    self.auto_compaction_retention =
                        parse_retention(&f.value).map_err(|w| invalid(&w))?
                }
                "experimental-watch-progress-notify-interval" => {
                    self.progress_notify_interval =
                        crate::common::args::parse_duration(&f.value).map_err(|w| invalid(&w))?
                }
                other => {
                    return Err(ArgsError::Unknown {
                        origin: f.origin.clone(),
                        flag: other.to_string(),
                    });
                }
            }
        }
        if !advertised_client {
            self.advertise_client_urls = self
                .listen_client
                .iter()
                .map(|a| advertised("https", a))
                .collect();
        }
        if !advertised_peer {
            self.advertise_peer_urls = self
                .listen_peer
                .iter()
                .map(|a| advertised("https", a))
                .collect();
        }
        Ok(())
    }
}

pub(crate) fn advertised(scheme: &str, a: &SocketAddr) -> String {
    let host = if a.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        a.ip().to_string()
    };
    format!("{scheme}://{host}:{}", a.port())
}

/// `https://host:port[,…]` → socket addresses (hosts must be IP literals or `localhost`).
fn parse_urls(v: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for url in crate::common::args::split_list(v) {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("'{url}' must start with https:// (TLS is required)"))?;
        let hostport = rest.trim_end_matches('/');
        let hostport = hostport.replace("localhost:", "127.0.0.1:");
        let addr: SocketAddr = hostport
            .parse()
            .map_err(|_| format!("'{url}' is not https://<ip>:<port>"))?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err("no URL given".into());
    }
    Ok(out)
}

/// etcd's periodic retention: a duration (`5m`, `1h`, `300s`) or a bare number of hours.
fn parse_retention(v: &str) -> Result<Duration, String> {
    if let Ok(hours) = v.parse::<u64>() {
        return hours
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("'{v}' hours is too long"));
    }
    crate::common::args::parse_duration(v)
}

/// Compacts history older than `retention`, sampling the revision every tenth of it.
async fn auto_compact(store: Arc<Store>, retention: Duration) {
    let step = (retention / 10).max(Duration::from_millis(100));
    let mut samples: std::collections::VecDeque<(tokio::time::Instant, i64)> = Default::default();
    let mut tick = tokio::time::interval(step);
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        samples.push_back((now, store.revision()));
        let mut target = None;
        while let Some((t, rev)) = samples.front().copied() {
            if now.duration_since(t) >= retention {
                target = Some(rev);
                samples.pop_front();
            } else {
                break;
            }
        }
        if let Some(rev) = target
            && rev > store.compacted()
        {
            match store.write(store::WriteOp::Compact(rev)).await {
                Ok(_) => {
                    tracing::info!(rev, "auto-compacted history");
                    crate::common::heap::trim();
                }
                Err(e) => tracing::debug!(rev, error = %e, "auto-compaction skipped"),
            }
        }
    }
}

/// Accepted connections, with Nagle off: gRPC writes small frames, and delayed ACKs would
/// otherwise add ~40 ms to a response now and then.
type Incoming =
    std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send>>;

/// Binds before serving, so that a taken port is a clear error at start.
async fn bind(addr: SocketAddr) -> Result<Incoming, DatastoreError> {
    use futures::StreamExt;
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| DatastoreError::Listen { addr, cause })?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(l).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    });
    Ok(Box::pin(incoming))
}

/// A server that requires a client certificate from the cluster CA.
fn tls_builder(tls: &ServerTlsConfig, addr: SocketAddr) -> Result<Server, DatastoreError> {
    Server::builder()
        .tls_config(tls.clone())
        .map_err(|cause| DatastoreError::Serve { addr, cause })
}

/// Serves `router` on `listener` until `stop` fires.
async fn serve(
    router: tonic::transport::server::Router,
    listener: Incoming,
    addr: SocketAddr,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) -> Result<(), DatastoreError> {
    router
        .serve_with_incoming_shutdown(listener, async move {
            let _ = stop.recv().await;
        })
        .await
        .map_err(|cause| DatastoreError::Serve { addr, cause })
}

/// Runs the datastore until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), DatastoreError> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(crate::common::fsutil::io_err("read", p));
    let identity = Identity::from_pem(read(&config.cert_file)?, read(&config.key_file)?);
    let ca = Certificate::from_pem(read(&config.trusted_ca_file)?);
    let tls = ServerTlsConfig::new().identity(identity).client_ca_root(ca);

    let store = Store::open(&config.storage_dir).map_err(|cause| DatastoreError::Open {
        dir: config.storage_dir.clone(),
        cause,
    })?;
    tokio::spawn(lease::expire_leases(store.clone()));
    if !config.auto_compaction_retention.is_zero() {
        tokio::spawn(auto_compact(
            store.clone(),
            config.auto_compaction_retention,
        ));
    }

    let limit = MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES;
    let cluster = || cluster::ClusterService {
        store: store.clone(),
        name: config.name.clone(),
        client_urls: config.advertise_client_urls.clone(),
        peer_urls: config.advertise_peer_urls.clone(),
    };
    let maintenance = || maintenance::MaintenanceService {
        store: store.clone(),
    };

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut servers = tokio::task::JoinSet::new();
    for addr in &config.listen_client {
        let router = Server::builder()
            .tls_config(tls.clone())
            .map_err(|cause| DatastoreError::Serve { addr: *addr, cause })?
            .add_service(
                PbKvServer::new(kv::KvService {
                    store: store.clone(),
                })
                .max_decoding_message_size(limit),
            )
            .add_service(
                PbWatchServer::new(watch::WatchService {
                    store: store.clone(),
                    progress_interval: config.progress_notify_interval,
                })
                .max_decoding_message_size(limit),
            )
            .add_service(PbLeaseServer::new(lease::LeaseService {
                store: store.clone(),
            }))
            .add_service(PbMaintenanceServer::new(maintenance()))
            .add_service(PbClusterServer::new(cluster()));
        servers.spawn(serve(
            router,
            bind(*addr).await?,
            *addr,
            stop_tx.subscribe(),
        ));
    }
    for addr in &config.listen_peer {
        let router = tls_builder(&tls, *addr)?
            .add_service(PbMaintenanceServer::new(maintenance()))
            .add_service(PbClusterServer::new(cluster()));
        servers.spawn(serve(
            router,
            bind(*addr).await?,
            *addr,
            stop_tx.subscribe(),
        ));
    }
    tracing::info!(
        client = ?config.listen_client,
        peer = ?config.listen_peer,
        revision = store.revision(),
        "datastore serving"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DatastoreError::Signals)?;
    let outcome = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(done) = servers.join_next() => match done {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "server task failed");
                Ok(())
            }
        },
    };
    let _ = stop_tx.send(());
    // Open watch streams never end by themselves: give in-flight requests a moment, then
    // go. Every acknowledged write is already durable.
    let drain = async { while servers.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::info!("closing remaining streams");
    }
    outcome
}
