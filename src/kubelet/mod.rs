//! The kubelet (`mk8s daemon kubelet`): registers this machine as a Node, renews its Lease,
//! and runs the pods bound to it on containerd through CRI (sandboxes networked by containerd's
//! CNI plugins, containers, volumes, restarts, status). An ordinary API client with its own
//! kubeconfig (`credentials/kubelet.config`, user `system:node:<name>`).
//!
//! Owns `--root-dir` (pod volume directories), the pod log directories, and the CRI objects
//! labelled with pod uids. Writes only its Node, its Lease, its pods' status, the Events it
//! records and the final deletion of pods it has stopped. Never talks to the datastore.
//! `containerd` (the component that runs containerd itself) lives here too, as the kubelet's
//! runtime.

pub mod containerd;
pub mod cri;
mod env;
pub mod images;
pub mod logs;
mod node;
mod pods;
mod probes;
mod runtime;
pub mod server;
/// The delegated authenticator/authorizer, a sibling of `server` (which names it `super::auth`).
use crate::common::component::auth;
/// The reloading serving certificate, a sibling of `server` too (`super::servingcert`).
use crate::common::servingcert;
pub mod stats;
mod volumes;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::common::args::{self, ArgsError, Flag};
use crate::common::paths::Paths;

/// MicroK8s's kubelet ports.
pub const DEFAULT_PORT: u16 = 10250;
pub const DEFAULT_READ_ONLY_PORT: u16 = 10255;
pub const DEFAULT_HEALTHZ_PORT: u16 = 10248;

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error("kubeconfig {0}: {1}")]
    Kubeconfig(String, String),
    #[error("{0}")]
    Api(String),
    #[error(transparent)]
    Cri(#[from] cri::CriError),
    #[error(transparent)]
    Image(#[from] images::ImageError),
    #[error("{0}")]
    Server(String),
    #[error(transparent)]
    Http(#[from] server::KubeletServerError),
}

impl KubeletError {
    pub fn kube(what: &'static str) -> impl FnOnce(kube::Error) -> KubeletError {
        move |e| KubeletError::Api(format!("{what}: {e}"))
    }
}

/// The kubelet's flags (upstream names).
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: PathBuf,
    pub runtime_endpoint: PathBuf,
    pub node_name: String,
    pub node_ip: IpAddr,
    pub root_dir: PathBuf,
    pub pod_logs_dir: PathBuf,
    pub address: IpAddr,
    pub port: u16,
    pub read_only_port: u16,
    pub healthz_port: u16,
    pub healthz_bind_address: IpAddr,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: PathBuf,
    pub client_ca_file: PathBuf,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub resolv_conf: PathBuf,
    pub max_pods: u32,
    pub node_labels: Vec<(String, String)>,
    /// `--sync-frequency`: how often volumes (configMaps, secrets, tokens) are re-read.
    pub sync_frequency: Duration,
    /// `--authorization-mode=Webhook`: every request on the API port is authorized by a
    /// SubjectAccessReview (`AlwaysAllow`, the flag's default, authorizes nothing).
    pub authorization_webhook: bool,
    /// `--authentication-token-webhook`: bearer tokens are accepted, by TokenReview.
    pub authentication_token_webhook: bool,
}

/// Upstream kubelet flags accepted for compatibility with MicroK8s args files, with no
/// effect here (cgroupfs and containerd are the only choices mk8s has).
const ACCEPTED_UNUSED: &[&str] = &[
    "cgroup-driver",
    "fail-swap-on",
    "container-runtime",
    "anonymous-auth",
    "eviction-hard",
    "serialize-image-pulls",
    "feature-gates",
    "v",
];

fn parse<T: std::str::FromStr>(f: &Flag) -> Result<T, ArgsError>
where
    T::Err: std::fmt::Display,
{
    f.value.parse().map_err(|e: T::Err| ArgsError::Invalid {
        origin: f.origin.clone(),
        flag: f.name.clone(),
        value: f.value.clone(),
        why: e.to_string(),
    })
}

/// Reads `args/kubelet`, then the command line.
pub fn load_config(paths: &Paths, cli: &[String]) -> Result<Config, KubeletError> {
    let flags = args::load(&paths.data_file("args/kubelet"), cli, &paths.vars())?;
    let data = |rel: &str| paths.data_file(rel);
    let mut c = Config {
        kubeconfig: data("credentials/kubelet.config"),
        runtime_endpoint: containerd::socket(paths),
        node_name: crate::common::host::node_name(),
        node_ip: crate::common::host::primary_address(),
        root_dir: paths.snap_common.join("var/lib/kubelet"),
        pod_logs_dir: PathBuf::from("/var/log/pods"),
        address: IpAddr::from([0, 0, 0, 0]),
        port: DEFAULT_PORT,
        read_only_port: DEFAULT_READ_ONLY_PORT,
        healthz_port: DEFAULT_HEALTHZ_PORT,
        healthz_bind_address: IpAddr::from([127, 0, 0, 1]),
        tls_cert_file: data("certs/kubelet-server.crt"),
        tls_private_key_file: data("certs/kubelet-server.key"),
        client_ca_file: data("certs/ca.crt"),
        cluster_dns: vec![],
        cluster_domain: "cluster.local".into(),
        resolv_conf: PathBuf::from("/etc/resolv.conf"),
        max_pods: node::DEFAULT_MAX_PODS,
        node_labels: vec![],
        sync_frequency: Duration::from_secs(60),
        authorization_webhook: false,
        authentication_token_webhook: false,
    };
    for f in &flags {
        match f.name.as_str() {
            "kubeconfig" => c.kubeconfig = PathBuf::from(&f.value),
            "container-runtime-endpoint" => c.runtime_endpoint = cri::socket_path(&f.value),
            "hostname-override" => c.node_name = f.value.to_ascii_lowercase(),
            "node-ip" => c.node_ip = parse(f)?,
            "root-dir" => c.root_dir = PathBuf::from(&f.value),
            "pod-logs-dir" => c.pod_logs_dir = PathBuf::from(&f.value),
            "address" => c.address = parse(f)?,
            "port" => c.port = parse(f)?,
            "read-only-port" => c.read_only_port = parse(f)?,
            "healthz-port" => c.healthz_port = parse(f)?,
            "healthz-bind-address" => c.healthz_bind_address = parse(f)?,
            "tls-cert-file" => c.tls_cert_file = PathBuf::from(&f.value),
            "tls-private-key-file" => c.tls_private_key_file = PathBuf::from(&f.value),
            "client-ca-file" => c.client_ca_file = PathBuf::from(&f.value),
            "cluster-dns" => c.cluster_dns = args::split_list(&f.value),
            "cluster-domain" => c.cluster_domain = f.value.clone(),
            "resolv-conf" => c.resolv_conf = PathBuf::from(&f.value),
            "max-pods" => c.max_pods = parse(f)?,
            "authorization-mode" => {
                c.authorization_webhook = match f.value.as_str() {
                    "Webhook" => true,
                    "AlwaysAllow" => false,
                    _ => {
                        return Err(ArgsError::Invalid {
                            origin: f.origin.clone(),
                            flag: f.name.clone(),
                            value: f.value.clone(),
                            why: "must be AlwaysAllow or Webhook".into(),
                        }
                        .into());
                    }
                }
            }
            "authentication-token-webhook" => {
                c.authentication_token_webhook = crate::common::component::parse_bool(&f.value)
                    .ok_or_else(|| ArgsError::Invalid {
                        origin: f.origin.clone(),
                        flag: f.name.clone(),
                        value: f.value.clone(),
                        why: "must be true or false".into(),
                    })?
            }
            "sync-frequency" => {
                c.sync_frequency =
                    args::parse_duration(&f.value).map_err(|why| ArgsError::Invalid {
                        origin: f.origin.clone(),
                        flag: f.name.clone(),
                        value: f.value.clone(),
                        why,
                    })?
            }
            "node-labels" => {
                c.node_labels = args::split_list(&f.value)
                    .into_iter()
                    .filter_map(|kv| {
                        kv.split_once('=')
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                    })
                    .collect()
            }
            n if ACCEPTED_UNUSED.contains(&n) => {}
            _ => {
                return Err(ArgsError::Unknown {
                    origin: f.origin.clone(),
                    flag: f.name.clone(),
                }
                .into());
            }
        }
    }
    Ok(c)
}

impl Config {
    /// The addresses it listens on (checked free before start).
    pub fn listens(&self) -> Vec<std::net::SocketAddr> {
        let mut v = vec![std::net::SocketAddr::new(
            self.healthz_bind_address,
            self.healthz_port,
        )];
        if self.port != 0 {
            v.push(std::net::SocketAddr::new(self.address, self.port));
        }
        if self.read_only_port != 0 {
            v.push(std::net::SocketAddr::new(self.address, self.read_only_port));
        }
        v
    }
}

async fn client(path: &std::path::Path) -> Result<kube::Client, KubeletError> {
    let err = |e: String| KubeletError::Kubeconfig(path.display().to_string(), e);
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| err(e.to_string()))
}

/// Waits for containerd's CRI (it starts just before us).
async fn connect_cri(socket: &std::path::Path) -> Result<cri::Cri, KubeletError> {
    let mut last = None;
    for _ in 0..100 {
        match cri::Cri::connect(socket).await {
            Ok(mut c) => match c.version().await {
                Ok(_) => return Ok(c),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last
        .map(KubeletError::from)
        .unwrap_or_else(|| KubeletError::Server("containerd never answered".into())))
}

/// Whether the runtime is ready, in the words the Node's Ready condition uses.
async fn runtime_ready(cri: &cri::Cri) -> Result<(), String> {
    let st = cri
        .runtime
        .clone()
        .status(k8s_cri::v1::StatusRequest { verbose: false })
        .await
        .map_err(|e| format!("container runtime is down: {}", e.message()))?
        .into_inner();
    let conds = st.status.map(|s| s.conditions).unwrap_or_default();
    for c in conds {
        if !c.status {
            return Err(match c.r#type.as_str() {
                "NetworkReady" => format!(
                    "container runtime network not ready: NetworkReady=false reason:{} message:{}",
                    c.reason, c.message
                ),
                _ => format!(
                    "container runtime status check may not have completed yet: {}=false reason:{} message:{}",
                    c.r#type, c.reason, c.message
                ),
            });
        }
    }
    Ok(())
}

/// The node's images as `status.images` lists them.
async fn node_images(cri: &cri::Cri) -> serde_json::Value {
    let list = cri
        .images
        .clone()
        .list_images(k8s_cri::v1::ListImagesRequest { filter: None })
        .await
        .map(|r| r.into_inner().images)
        .unwrap_or_default();
    let mut v: Vec<serde_json::Value> = list
        .into_iter()
        .map(|i| {
            let mut names = i.repo_digests.clone();
            names.extend(i.repo_tags.clone());
            serde_json::json!({"names": names, "sizeBytes": i.size})
        })
        .filter(|v| v["names"].as_array().is_some_and(|a| !a.is_empty()))
        .collect();
    v.sort_by_key(|i| std::cmp::Reverse(i["sizeBytes"].as_u64().unwrap_or(0)));
    v.truncate(50);
    serde_json::Value::Array(v)
}

fn meminfo_bytes() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
        })
        .map(|kib| kib * 1024.0)
        .unwrap_or(0.0)
}

impl server::PodSource for pods::Shared {
    fn pods(&self) -> Vec<k8s_openapi::api::core::v1::Pod> {
        self.pods.read().values().cloned().collect()
    }

    fn container_running(&self, namespace: &str, pod: &str, container: &str) -> bool {
        self.running
            .read()
            .contains(&format!("{namespace}/{pod}/{container}"))
    }

    fn runtime(
        &self,
    ) -> Option<k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>>
    {
        Some(self.cri.runtime.clone())
    }

    fn stats_summary(&self) -> futures::future::BoxFuture<'_, Option<serde_json::Value>> {
        Box::pin(async { Some(stats::summary(self, &self.cpu_samples).await) })
    }
}

/// Runs the kubelet until SIGTERM.
pub async fn run(config: Config) -> Result<(), KubeletError> {
    let client = client(&config.kubeconfig).await?;
    let cri = connect_cri(&config.runtime_endpoint).await?;
    std::fs::create_dir_all(&config.root_dir)
        .map_err(|e| KubeletError::Server(format!("create {}: {e}", config.root_dir.display())))?;
    images::ensure_sandbox(&config.runtime_endpoint, &config.root_dir).await?;
    let (rt_name, rt_version) = cri.clone().version().await?;
    let facts = node::NodeFacts {
        name: config.node_name.clone(),
        address: config.node_ip,
        hostname: config.node_name.clone(),
        kubelet_port: config.port,
        max_pods: config.max_pods,
        labels: config.node_labels.iter().cloned().collect(),
        runtime_version: format!("{rt_name}://{rt_version}"),
        root_dir: config.root_dir.clone(),
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let node_uid = node::register(&nodes, &facts).await?;
    tracing::info!("registered node {} ({})", facts.name, facts.address);
    {
        let cri = cri.clone();
        let facts = facts.clone();
        tokio::spawn(async move {
            loop {
                let ready = runtime_ready(&cri).await;
                let images = node_images(&cri).await;
                if let Err(e) = node::update_status(&nodes, &facts, ready, images).await {
                    tracing::warn!("{e}");
                }
                tokio::time::sleep(node::STATUS_INTERVAL).await;
            }
        });
    }
    {
        let leases: Api<Lease> = Api::namespaced(client.clone(), node::LEASE_NAMESPACE);
        let name = facts.name.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = node::renew_lease(&leases, &name, &node_uid).await {
                    tracing::warn!("{e}");
                }
                tokio::time::sleep(node::RENEW_INTERVAL).await;
            }
        });
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let shared = Arc::new(pods::Shared {
        client: client.clone(),
        cri,
        events: crate::common::events::Recorder::new(client, "kubelet", Some(facts.name.clone())),
        settings: runtime::SandboxSettings {
            pod_logs_dir: config.pod_logs_dir.clone(),
            cluster_dns: config.cluster_dns.clone(),
            cluster_domain: config.cluster_domain.clone(),
            resolv_conf: config.resolv_conf.clone(),
            node_name: facts.name.clone(),
        },
        root_dir: config.root_dir.clone(),
        sync_frequency: config.sync_frequency,
        host_ip: facts.address.to_string(),
        node_cpu: cpus,
        node_memory: meminfo_bytes(),
        pods: Default::default(),
        running: Default::default(),
        cpu_samples: Default::default(),
    });
    let server_config = server::ServerConfig {
        address: config.address,
        port: config.port,
        read_only_port: config.read_only_port,
        healthz_bind_address: config.healthz_bind_address,
        healthz_port: config.healthz_port,
        tls_cert_file: config.tls_cert_file.clone(),
        tls_private_key_file: config.tls_private_key_file.clone(),
        client_ca_file: config.client_ca_file.clone(),
        pod_logs_dir: config.pod_logs_dir.clone(),
        node_name: facts.name.clone(),
        accept_tokens: config.authentication_token_webhook,
    };
    // Reviews are asked as the kubelet itself (`system:node:<name>` may create both kinds).
    let delegated =
        (config.authorization_webhook || config.authentication_token_webhook).then(|| {
            Arc::new(crate::common::component::auth::Delegated::new(
                shared.client.clone(),
            ))
        });
    let auth = server::Auth {
        delegated,
        authorize: config.authorization_webhook,
    };
    let serving = server::serve(server_config, shared.clone(), auth);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| KubeletError::Server(e.to_string()))?;
    tokio::select! {
        r = pods::run(shared) => r,
        r = serving => r.map_err(KubeletError::from),
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Ready when `127.0.0.1:<healthz-port>/healthz` answers ok.
pub async fn probe_ready(paths: &Paths) -> bool {
    let Ok(c) = load_config(paths, &[]) else {
        return false;
    };
    let addr = std::net::SocketAddr::new(c.healthz_bind_address, c.healthz_port);
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.starts_with("HTTP/1.1 200") && text.ends_with("ok")
}
