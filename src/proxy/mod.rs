//! The service proxy (`mk8s daemon proxy`): upstream kube-proxy's nftables mode. Watches
//! Services and EndpointSlices through the API server (its own kubeconfig,
//! `credentials/proxy.config`, user `system:kube-proxy`) and keeps one nftables table,
//! `ip mk8s` (`--nftables-table`), in step with them: ClusterIP, NodePort and external-IP
//! DNAT to a random ready endpoint, `sessionAffinity: ClientIP`, the `Local` traffic
//! policies, masquerading for hairpin and outside traffic, a reject for services without
//! endpoints and a drop for unallocated addresses of the service range, so nothing for that
//! range is ever routed off the machine. The rules are [`rules`], a pure function of
//! [`model`]'s service ports.
//!
//! Every sync is one `nft -j -f -` transaction (through the `nftables` crate) that deletes and
//! recreates the whole table, so a hand-edited table is put right at the next sync; a full
//! sync also runs every `--nftables-sync-period` (30 s). On stop the table is removed.
//! IPv4 only for now: IPv6 cluster IPs and slices are skipped (no `ip6` table yet).
//!
//! Host settings it makes at start, as upstream does (all machine-wide):
//! - `net.ipv4.ip_forward=1`: pod and service traffic is routed through the host.
//! - `net.ipv4.conf.all.route_localnet=1`: NodePorts answer on 127.0.0.1; the DNATed packet
//!   keeps its 127.0.0.1 source until it is masqueraded, which the kernel otherwise drops.
//!   Packets for 127.0.0.0/8 arriving from anywhere but `lo` are dropped by the table.
//! - `net.bridge.bridge-nf-call-iptables=1` when `br_netfilter` is loaded: a pod's reply to
//!   another pod on the same bridge must pass conntrack to be un-DNATed.
//!
//! Owns its table, `127.0.0.1:10249` (`/metrics`) and `:10256` (`/healthz`, `/livez`). Never
//! touches other tables, the CNI bridge or pods.

pub mod model;
pub mod rules;
mod server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use crate::common::args::{ArgsError, Flag};
use crate::common::component::{self, ComponentError, invalid};
use crate::common::paths::Paths;
use rules::Cidr;

/// Upstream kube-proxy's ports.
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;
pub const DEFAULT_METRICS_PORT: u16 = 10249;
/// MicroK8s's service range and pod network.
pub const DEFAULT_SERVICE_RANGE: &str = "10.152.183.0/24";
pub const DEFAULT_TABLE: &str = "mk8s";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    Component(#[from] ComponentError),
    #[error("nft: {0}")]
    Nft(String),
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
}

/// The proxy's settings, from `args/kube-proxy` with upstream flag names (plus
/// `--nftables-table` and `--service-cluster-ip-range`, mk8s's).
#[derive(Debug, Clone)]
pub struct Config {
    /// Kubeconfig and `--master` (the other shared flags do not apply).
    pub common: component::Flags,
    /// `--healthz-bind-address` (`ip:port`); `None` when set empty.
    pub healthz: Option<SocketAddr>,
    /// `--metrics-bind-address`; `None` when set empty.
    pub metrics: Option<SocketAddr>,
    pub cluster_cidr: Option<Cidr>,
    /// The range this proxy owns: its services' addresses are DNATed, the rest dropped;
    /// cluster IPs outside it are not this proxy's and are left alone.
    pub service_range: Option<Cidr>,
    pub nodeport_addresses: Vec<Cidr>,
    pub masquerade_all: bool,
    pub table: String,
    pub hostname: String,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
}

/// Defaults, then the args file, then `cli`.
pub fn load_config(paths: &Paths, cli: &[String]) -> Result<Config, ProxyError> {
    let flags = crate::common::args::load(&paths.data_file("args/kube-proxy"), cli, &paths.vars())?;
    let mut config = Config::defaults(&paths.snap_data);
    config.apply(&flags)?;
    Ok(config)
}

fn bind_address(f: &Flag, default_port: u16) -> Result<Option<SocketAddr>, ArgsError> {
    if f.value.is_empty() {
        return Ok(None);
    }
    if let Ok(a) = f.value.parse::<SocketAddr>() {
        return Ok(Some(a));
    }
    // Upstream also takes a bare IP and adds the default port.
    f.value
        .parse::<IpAddr>()
        .map(|ip| Some(SocketAddr::new(ip, default_port)))
        .map_err(|_| invalid(f, "expected ip:port"))
}

impl Config {
    pub fn defaults(snap_data: &std::path::Path) -> Self {
        let mut common =
            component::Flags::defaults(snap_data, "credentials/proxy.config", 0, "kube-proxy");
        common.leader.enabled = false;
        Config {
            common,
            healthz: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                DEFAULT_HEALTHZ_PORT,
            )),
            metrics: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                DEFAULT_METRICS_PORT,
            )),
            cluster_cidr: None,
            service_range: DEFAULT_SERVICE_RANGE.parse().ok(),
            nodeport_addresses: Vec::new(),
            masquerade_all: false,
            table: DEFAULT_TABLE.into(),
            hostname: crate::common::host::node_name(),
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::from_secs(1),
        }
    }

    pub fn apply(&mut self, flags: &[Flag]) -> Result<(), ArgsError> {
        let cidr = |f: &Flag| f.value.parse::<Cidr>().map_err(|w| invalid(f, &w));
        let duration =
            |f: &Flag| crate::common::args::parse_duration(&f.value).map_err(|w| invalid(f, &w));
        for f in flags {
            match f.name.as_str() {
                "kubeconfig" | "master" => {
                    self.common.apply(f)?;
                }
                "healthz-bind-address" => self.healthz = bind_address(f, DEFAULT_HEALTHZ_PORT)?,
                "metrics-bind-address" => self.metrics = bind_address(f, DEFAULT_METRICS_PORT)?,
                "cluster-cidr" => {
                    self.cluster_cidr = match f.value.as_str() {
                        "" => None,
                        _ => Some(cidr(f)?),
                    }
                }
                "service-cluster-ip-range" => {
                    self.service_range = match f.value.as_str() {
                        "" => None,
                        _ => Some(cidr(f)?),
                    }
                }
                "nodeport-addresses" => {
                    self.nodeport_addresses = crate::common::args::split_list(&f.value)
                        .iter()
                        .map(|c| c.parse::<Cidr>().map_err(|w| invalid(f, &w)))
                        .collect::<Result<_, _>>()?
                }
                "masquerade-all" => {
                    self.masquerade_all = component::parse_bool(&f.value)
                        .ok_or_else(|| invalid(f, "expected true or false"))?
                }
                "nftables-table" => {
                    let ok = !f.value.is_empty()
                        && f.value.len() <= 64
                        && f.value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    if !ok {
                        return Err(invalid(f, "expected up to 64 letters, digits, - or _"));
                    }
                    self.table = f.value.clone();
                }
                "hostname-override" => {
                    if !f.value.is_empty() {
                        self.hostname = f.value.to_ascii_lowercase();
                    }
                }
                "nftables-sync-period" => {
                    self.sync_period = duration(f)?;
                    if self.sync_period.is_zero() {
                        return Err(invalid(f, "must be greater than zero"));
                    }
                }
                "nftables-min-sync-period" => self.min_sync_period = duration(f)?,
                "proxy-mode" => {
                    if f.value != "nftables" {
                        return Err(invalid(f, "only \"nftables\" is supported"));
                    }
                }
                _ => {
                    return Err(ArgsError::Unknown {
                        origin: f.origin.clone(),
                        flag: f.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The addresses it listens on (the supervisor checks them free before start).
    pub fn listens(&self) -> Vec<SocketAddr> {
        self.healthz.iter().chain(&self.metrics).copied().collect()
    }

    fn settings(&self) -> rules::Settings {
        rules::Settings {
            table: self.table.clone(),
            cluster_cidr: self.cluster_cidr,
            service_range: self.service_range,
            nodeport_addresses: self.nodeport_addresses.clone(),
            masquerade_all: self.masquerade_all,
        }
    }
}

/// Sets what the rules rely on (see the module doc); a missing knob is logged, not fatal.
fn host_settings() {
    for (path, optional) in [
        ("/proc/sys/net/ipv4/ip_forward", false),
        ("/proc/sys/net/ipv4/conf/all/route_localnet", false),
        ("/proc/sys/net/bridge/bridge-nf-call-iptables", true),
    ] {
        match std::fs::read_to_string(path) {
            Ok(v) if v.trim() == "1" => {}
            Ok(_) => match std::fs::write(path, "1") {
                Ok(()) => tracing::info!("set {path} to 1"),
                Err(e) => tracing::warn!("cannot set {path} to 1: {e}"),
            },
            Err(_) if optional => tracing::info!("{path} absent (br_netfilter not loaded)"),
            Err(e) => tracing::warn!("cannot read {path}: {e}"),
        }
    }
}

/// Applies one transaction with the `nft` binary, one at a time: the guard moves into the
/// blocking task, so a sync abandoned at shutdown still finishes before the table's removal
/// runs (else it could recreate the table after it).
async fn apply(
    lock: &Arc<tokio::sync::Mutex<()>>,
    ruleset: nftables::schema::Nftables<'static>,
) -> Result<(), ProxyError> {
    let guard = lock.clone().lock_owned().await;
    tokio::task::spawn_blocking(move || {
        let _guard = guard;
        nftables::helper::apply_ruleset(&ruleset)
    })
    .await
    .map_err(|e| ProxyError::Nft(e.to_string()))?
    .map_err(|e| ProxyError::Nft(e.to_string()))
}

/// One full sync: the stores' current objects to rules, applied at once.
async fn sync(
    lock: &Arc<tokio::sync::Mutex<()>>,
    config: &Config,
    services: &reflector::Store<Service>,
    slices: &reflector::Store<EndpointSlice>,
) -> Result<(usize, usize), ProxyError> {
    let svcs: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
    let sls: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
    let ports = model::service_ports(&svcs, &sls, &config.hostname, config.service_range);
    let endpoints = ports.iter().map(|p| p.endpoints.len()).sum();
    apply(lock, rules::ruleset(&config.settings(), &ports)).await?;
    Ok((ports.len(), endpoints))
}

/// Runs the proxy until SIGTERM/SIGINT, then removes its table.
pub async fn run(config: Config) -> Result<(), ProxyError> {
    host_settings();
    let kcfg = config.common.kube_config().await?;
    let client = config.common.client(kcfg)?;
    let state = Arc::new(server::State::new(config.sync_period));
    let nft = Arc::new(tokio::sync::Mutex::new(()));

    let mut servers = tokio::task::JoinSet::new();
    for (addr, metrics) in [(config.healthz, false), (config.metrics, true)] {
        let Some(addr) = addr else { continue };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|cause| ProxyError::Listen { addr, cause })?;
        tracing::info!(
            "proxy {} on http://{addr}",
            if metrics { "metrics" } else { "health" }
        );
        servers.spawn(server::serve(listener, state.clone(), metrics));
    }

    let changed = Arc::new(tokio::sync::Notify::new());
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let mut watches = tokio::task::JoinSet::new();
    {
        let changed = changed.clone();
        let api = kube::Api::<Service>::all(client.clone());
        let stream = reflector::reflector(
            svc_writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        watches.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    tracing::warn!("watching services: {e}");
                }
                changed.notify_one();
            }
        });
    }
    {
        let changed = changed.clone();
        let api = kube::Api::<EndpointSlice>::all(client);
        let stream = reflector::reflector(
            slice_writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        watches.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    tracing::warn!("watching endpointslices: {e}");
                }
                changed.notify_one();
            }
        });
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ProxyError::Signals)?;
    let syncing = async {
        let _ = svc_store.wait_until_ready().await;
        let _ = slice_store.wait_until_ready().await;
        tracing::info!("proxy caches synced; programming table ip {}", config.table);
        loop {
            let started = Instant::now();
            match sync(&nft, &config, &svc_store, &slice_store).await {
                Ok((ports, endpoints)) => {
                    state.synced(started.elapsed(), ports, endpoints);
                    tracing::debug!(ports, endpoints, "synced in {:?}", started.elapsed());
                }
                Err(e) => {
                    state.failed();
                    tracing::warn!("sync failed, retrying: {e}");
                }
            }
            // Bursts of changes share one sync; a quiet cluster still gets a full one
            // every sync period (it also repairs a hand-edited table).
            tokio::time::sleep(config.min_sync_period).await;
            let _ = tokio::time::timeout(
                config.sync_period.saturating_sub(config.min_sync_period),
                changed.notified(),
            )
            .await;
        }
    };
    tokio::select! {
        () = syncing => {}
        _ = sigterm.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    watches.abort_all();
    servers.abort_all();
    match apply(&nft, rules::removal(&config.table)).await {
        Ok(()) => tracing::info!("removed table ip {}", config.table),
        Err(e) => tracing::warn!("cannot remove table ip {}: {e}", config.table),
    }
    Ok(())
}

/// Whether the proxy of a data root answers `/healthz` with 200 (it has synced its rules).
pub async fn probe_ready(paths: &Paths) -> bool {
    let Ok(config) = load_config(paths, &[]) else {
        return false;
    };
    let Some(addr) = config.healthz.or(config.metrics) else {
        return true;
    };
    let ip = match addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(3),
            server::get(SocketAddr::new(ip, addr.port()), "/healthz")
        )
        .await,
        Ok(Some((200, _)))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_loads_and_bad_flags_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("data"), dir.path().join("common"));
        std::fs::create_dir_all(paths.data_file("args")).unwrap();
        std::fs::write(
            paths.data_file("args/kube-proxy"),
            include_str!("../../templates/args/kube-proxy"),
        )
        .unwrap();
        let c = load_config(&paths, &["--healthz-bind-address=127.0.0.1:1234".into()]).unwrap();
        assert_eq!(
            c.common.kubeconfig,
            paths.data_file("credentials/proxy.config")
        );
        assert_eq!(c.healthz, Some("127.0.0.1:1234".parse().unwrap()));
        assert_eq!(c.metrics, Some("127.0.0.1:10249".parse().unwrap()));
        assert_eq!(c.table, "mk8s");
        assert_eq!(c.cluster_cidr, "10.1.0.0/16".parse().ok());
        assert_eq!(c.service_range, "10.152.183.0/24".parse().ok());
        assert_eq!(c.sync_period, Duration::from_secs(30));
        assert_eq!(c.listens().len(), 2);
        for (flag, why) in [
            ("--nope=1", "unknown flag '--nope'"),
            ("--proxy-mode=iptables", "only \"nftables\""),
            ("--nftables-table=a b", "letters, digits"),
            ("--cluster-cidr=10.1.0.0", "not a CIDR"),
            ("--nodeport-addresses=127.0.0.0/8,x/1", "not an IPv4"),
            ("--nftables-sync-period=0s", "greater than zero"),
        ] {
            let err = load_config(&paths, &[flag.into()]).unwrap_err().to_string();
            assert!(err.contains(why), "{flag}: {err}");
        }
        let c = load_config(&paths, &["--metrics-bind-address=".into()]).unwrap();
        assert_eq!(c.metrics, None);
    }
}
