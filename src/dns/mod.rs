//! Cluster DNS (`mk8s daemon dns`, run while `mk8s enable dns` is on): a hickory-server
//! answering for the cluster domain from Services and EndpointSlices, as CoreDNS's
//! `kubernetes` plugin does, and forwarding every other name to upstream resolvers.
//!
//! Owns `args/dns` and the port it names (53 by default) over UDP and TCP on the node's
//! primary address. Reads Services and EndpointSlices through the API server with its own
//! identity (`credentials/dns.config`, user `system:kube-dns`); writes nothing to the cluster.
//! The `kube-dns` Service that points pods here is the addon's (`src/cli/addons.rs`).

pub mod records;
mod server;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use parking_lot::RwLock;

use crate::common::args::{ArgsError, Flag};
use crate::common::component::invalid;
use crate::common::paths::Paths;
use records::Index;

/// The DNS port, as the `kube-dns` Service's.
pub const DEFAULT_PORT: u16 = 53;
/// MicroK8s's cluster DNS address (`--cluster-dns` of the kubelet).
pub const SERVICE_IP: &str = "10.152.183.10";
pub const SERVICE_NAMESPACE: &str = "kube-system";
pub const SERVICE_NAME: &str = "kube-dns";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// CoreDNS's `kubernetes` plugin default TTL for every record it serves.
pub const DEFAULT_TTL: u32 = 5;
/// The args file, which exists once the addon was enabled.
pub const ARGS_FILE: &str = "dns";
/// How long hickory-server lets an idle TCP connection stay open.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the readiness probe waits for its answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error("invalid kubeconfig {}: {cause}", path.display())]
    Kubeconfig { path: PathBuf, cause: String },
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
}

/// The daemon's settings, from `args/dns`.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: PathBuf,
    /// `--bind-address`: the node's primary address unless set.
    pub bind_address: IpAddr,
    pub port: u16,
    pub cluster_domain: String,
    pub ttl: u32,
    /// `--upstream`: resolvers for names outside the cluster domain.
    pub upstream: Vec<SocketAddr>,
}

/// `ip` or `ip:port` / `[ip6]:port`, port 53 when absent.
fn parse_resolver(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// The `nameserver` lines of a resolv.conf.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(parse_resolver)
        })
        .collect()
}

/// Defaults, then `args/dns`, then `cli`.
pub fn load_config(paths: &Paths, cli: &[String]) -> Result<Config, DnsError> {
    let flags =
        crate::common::args::load(&paths.data_file("args").join(ARGS_FILE), cli, &paths.vars())?;
    let mut c = Config {
        kubeconfig: paths.data_file("credentials/dns.config"),
        bind_address: crate::common::host::primary_address(),
        port: DEFAULT_PORT,
        cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
        ttl: DEFAULT_TTL,
        upstream: Vec::new(),
    };
    let mut upstream: Option<Vec<SocketAddr>> = None;
    for f in &flags {
        apply(&mut c, &mut upstream, f)?;
    }
    c.upstream = match upstream {
        Some(u) => u,
        None => std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| resolv_conf_servers(&t))
            .unwrap_or_default(),
    };
    // Forwarding to ourselves would loop.
    let me = c.listen_addr();
    c.upstream.retain(|u| *u != me);
    Ok(c)
}

fn apply(
    c: &mut Config,
    upstream: &mut Option<Vec<SocketAddr>>,
    f: &Flag,
) -> Result<(), ArgsError> {
    match f.name.as_str() {
        "kubeconfig" => c.kubeconfig = PathBuf::from(&f.value),
        "bind-address" => c.bind_address = f.value.parse().map_err(|_| invalid(f, "not an IP"))?,
        "port" => {
            c.port = f
                .value
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid(f, "not a port"))?
        }
        "cluster-domain" => {
            let d = f.value.trim_end_matches('.').to_ascii_lowercase();
            if d.is_empty() || Name::from_ascii(format!("{d}.")).is_err() {
                return Err(invalid(f, "not a domain name"));
            }
            c.cluster_domain = d;
        }
        "ttl" => {
            c.ttl = f
                .value
                .parse()
                .ok()
                .filter(|t| *t <= 3600)
                .ok_or_else(|| invalid(f, "expected seconds, 0 to 3600"))?
        }
        "upstream" => {
            let list = crate::common::args::split_list(&f.value)
                .iter()
                .map(|s| parse_resolver(s).ok_or_else(|| invalid(f, "expected IP or IP:port")))
                .collect::<Result<Vec<_>, _>>()?;
            *upstream = Some(list);
        }
        _ => {
            return Err(ArgsError::Unknown {
                origin: f.origin.clone(),
                flag: f.name.clone(),
            });
        }
    }
    Ok(())
}

impl Config {
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.port)
    }
}

/// Whether the addon is on: its args file exists and the kubelet points pods at its Service.
pub fn enabled(paths: &Paths) -> bool {
    if !paths.data_file("args").join(ARGS_FILE).exists() {
        return false;
    }
    crate::common::args::load(&paths.data_file("args/kubelet"), &[], &paths.vars())
        .ok()
        .and_then(|flags| flags.into_iter().rev().find(|f| f.name == "cluster-dns"))
        .is_some_and(|f| {
            crate::common::args::split_list(&f.value)
                .iter()
                .any(|v| v == SERVICE_IP)
        })
}

/// Ready once the zone is synced: the apex SOA is answered NOERROR over UDP.
pub async fn probe_ready(paths: &Paths) -> bool {
    let Ok(c) = load_config(paths, &[]) else {
        return false;
    };
    let mut at = c.listen_addr();
    if at.ip().is_unspecified() {
        at.set_ip(match at.ip() {
            IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        });
    }
    matches!(
        tokio::time::timeout(
            PROBE_TIMEOUT,
            query_udp(at, &c.cluster_domain, RecordType::SOA)
        )
        .await,
        Ok(Some(ResponseCode::NoError))
    )
}

async fn query_udp(to: SocketAddr, name: &str, qtype: RecordType) -> Option<ResponseCode> {
    let mut m = Message::query();
    m.metadata.id = rand::random();
    m.add_query(Query::query(
        Name::from_ascii(format!("{name}.")).ok()?,
        qtype,
    ));
    let bind: SocketAddr = match to {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
    sock.connect(to).await.ok()?;
    sock.send(&m.to_vec().ok()?).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf).await.ok()?;
    let reply = Message::from_vec(&buf[..n]).ok()?;
    (reply.metadata.id == m.metadata.id).then_some(reply.metadata.response_code)
}

/// Keeps `shared` current from watches of Services and EndpointSlices; the first index is
/// published only once both are listed.
async fn sync(client: kube::Client, config: Config, shared: server::Shared) {
    let (services, svc_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let changed = Arc::new(tokio::sync::Notify::new());
    let svc_stream = reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    let slice_stream = reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    let drive = |s: futures::stream::BoxStream<'static, Result<(), watcher::Error>>,
                 what: &'static str| {
        let changed = changed.clone();
        tokio::spawn(async move {
            let mut s = s;
            while let Some(r) = s.next().await {
                match r {
                    Ok(()) => changed.notify_one(),
                    Err(e) => tracing::warn!(error = %e, "watching {what} failed; retrying"),
                }
            }
        })
    };
    let _svc = drive(svc_stream.map(|r| r.map(|_| ())).boxed(), "services");
    let _slices = drive(
        slice_stream.map(|r| r.map(|_| ())).boxed(),
        "endpointslices",
    );
    if services.wait_until_ready().await.is_err() || slices.wait_until_ready().await.is_err() {
        return;
    }
    tracing::info!(
        "services and endpointslices listed; serving the {} zone",
        config.cluster_domain
    );
    loop {
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let index = Index::build(
            &config.cluster_domain,
            config.ttl,
            serial,
            (SERVICE_NAMESPACE, SERVICE_NAME),
            &services.state(),
            &slices.state(),
        );
        *shared.write() = Some(Arc::new(index));
        changed.notified().await;
        // A burst of events (a rollout) is folded into one rebuild.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The UDP sockets to answer on. A socket bound to the unspecified address would answer
/// from whichever address routes back to the asker (the pod bridge's, for a pod), which
/// conntrack cannot match to the kube-dns Service's translation, so the pod drops the reply.
/// Instead each host address and loopback gets its own socket, and replies leave from the
/// address asked; addresses added after start are served over TCP only.
async fn udp_sockets(addr: SocketAddr) -> std::io::Result<Vec<tokio::net::UdpSocket>> {
    if !addr.ip().is_unspecified() {
        return Ok(vec![tokio::net::UdpSocket::bind(addr).await?]);
    }
    let loopback = match addr.ip() {
        IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    };
    let mut ips = vec![loopback];
    ips.extend(
        crate::common::host::host_addresses()
            .into_iter()
            .filter(|ip| ip.is_ipv4() == addr.is_ipv4()),
    );
    let mut out = Vec::new();
    for ip in ips {
        match tokio::net::UdpSocket::bind(SocketAddr::new(ip, addr.port())).await {
            Ok(s) => out.push(s),
            // Loopback is required (the readiness probe asks there); others are best effort.
            Err(e) if ip == loopback => return Err(e),
            Err(e) => tracing::warn!(%ip, error = %e, "cannot answer udp on this address"),
        }
    }
    Ok(out)
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), DnsError> {
    let bad = |cause: String| DnsError::Kubeconfig {
        path: config.kubeconfig.clone(),
        cause,
    };
    let kc =
        kube::config::Kubeconfig::read_from(&config.kubeconfig).map_err(|e| bad(e.to_string()))?;
    let kcfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    let client = kube::Client::try_from(kcfg).map_err(|e| bad(e.to_string()))?;

    let addr = config.listen_addr();
    let listen = |cause| DnsError::Listen { addr, cause };
    let udp = udp_sockets(addr).await.map_err(listen)?;
    let tcp = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
    let shared: server::Shared = Arc::new(RwLock::new(None));
    let handler = server::Handler {
        index: shared.clone(),
        upstream: config.upstream.clone(),
    };
    let mut dns = hickory_server::Server::new(handler);
    for sock in udp {
        dns.register_socket(sock);
    }
    dns.register_listener(tcp, TCP_TIMEOUT, 64);
    tracing::info!(%addr, upstream = ?config.upstream, "dns serving on udp and tcp");
    let syncing = tokio::spawn(sync(client, config, shared));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DnsError::Signals)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    syncing.abort();
    let _ = dns.shutdown_gracefully().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_become_upstreams() {
        let text = "# generated\nsearch example.com\nnameserver 192.0.2.53\nnameserver fd00::53\noptions ndots:2\n";
        assert_eq!(
            resolv_conf_servers(text),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[fd00::53]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn flags_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::new(tmp.path().join("d"), tmp.path().join("c"));
        let c = load_config(
            &paths,
            &[
                "--port=5353".into(),
                "--bind-address=127.0.0.1".into(),
                "--upstream=127.0.0.1:9,127.0.0.1:5353".into(),
                "--cluster-domain=Example.Test.".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.listen_addr(), "127.0.0.1:5353".parse().unwrap());
        // Ourselves is never an upstream.
        assert_eq!(c.upstream, vec!["127.0.0.1:9".parse().unwrap()]);
        assert_eq!(c.cluster_domain, "example.test");
        for bad in [
            "--port=0",
            "--upstream=nowhere",
            "--ttl=99999",
            "--cluster-domain=",
            "--nope=1",
        ] {
            assert!(load_config(&paths, &[bad.into()]).is_err(), "{bad}");
        }
    }
}
