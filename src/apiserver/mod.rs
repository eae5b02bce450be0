//! The API server: the Kubernetes REST API on 16443 over an etcd v3 datastore.
//!
//! Owns port 16443 and the `/registry/` keys of its datastore. Serves HTTPS (rustls, HTTP/1.1
//! and HTTP/2), authenticates (client certificates, token and basic-auth files), authorizes
//! behind one trait, and drives every resource from one table ([`resources`]). Reads the
//! certificates and credential files bootstrap wrote; never writes them. Talks to the datastore
//! only through the etcd v3 API ([`storage`]), so a real etcd works as well.

mod admission;
mod authn;
mod authz;
mod bootstrap_objects;
mod convert;
mod defaults;
mod discovery;
mod feed;
mod gofmt;
mod kubelet;
mod metrics;
mod openapi;
mod patch;
mod pbschema;
mod protobuf;
mod proxy;
mod rbac;
mod registry;
mod resources;
mod reviews;
mod selector;
mod server;
mod services;
mod spdy;
mod ssa;
mod status;
mod storage;
mod streaming;
mod table;
mod tokens;
mod watch;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::common::args::{ArgsError, Flag};
use crate::common::paths::Paths;

/// MicroK8s's API server port.
pub const DEFAULT_SECURE_PORT: u16 = 16443;
/// The Kubernetes version whose API this server implements (picks kubectl 1.32 through the
/// gcloud dispatcher, which runs the bundled kubectl matching the server's minor).
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";
pub const KUBE_GIT_VERSION: &str = "v1.32.0-mk8s";
/// Upstream's limit on request bodies.
pub const MAX_REQUEST_BYTES: usize = 3 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    Io(#[from] crate::common::fsutil::IoError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot reach the datastore at {servers}: {cause}")]
    Datastore {
        servers: String,
        cause: storage::StorageError,
    },
    #[error(transparent)]
    ServiceAccountKey(#[from] tokens::TokenKeyError),
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
}

/// The API server's settings, from `args/kube-apiserver` with upstream flag names.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub etcd: storage::EtcdConfig,
    pub token_auth_file: Option<PathBuf>,
    pub service_account_key_file: Option<PathBuf>,
    pub service_account_signing_key_file: Option<PathBuf>,
    pub service_account_issuer: String,
    pub basic_auth_file: Option<PathBuf>,
    pub requestheader_client_ca_file: Option<PathBuf>,
    pub request_header: authn::RequestHeader,
    pub authorization_mode: Vec<String>,
    pub service_cluster_ip_range: (Ipv4Addr, u8),
    pub service_node_port_range: (u16, u16),
    pub advertise_address: Option<IpAddr>,
    pub max_requests_inflight: usize,
    pub max_mutating_requests_inflight: usize,
    pub request_timeout: Duration,
    /// The CA the kubelets' serving certificates are verified against (`pods/log`,
    /// `nodes/proxy`).
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// The client certificate presented to kubelets.
    pub kubelet_client_certificate: Option<PathBuf>,
    pub kubelet_client_key: Option<PathBuf>,
}

/// The API server's settings for a data root: defaults, then `args/kube-apiserver`, then `cli`.
pub fn load_config(paths: &Paths, cli: &[String]) -> Result<Config, ApiServerError> {
    let flags =
        crate::common::args::load(&paths.data_file("args/kube-apiserver"), cli, &paths.vars())?;
    let mut config = Config::defaults(&paths.snap_data);
    config.apply(&flags)?;
    Ok(config)
}

impl Config {
    pub fn defaults(snap_data: &std::path::Path) -> Self {
        let certs = snap_data.join("certs");
        Self {
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            secure_port: DEFAULT_SECURE_PORT,
            tls_cert_file: certs.join("server.crt"),
            tls_private_key_file: certs.join("server.key"),
            client_ca_file: None,
            etcd: storage::EtcdConfig {
                servers: vec![format!(
                    "https://127.0.0.1:{}",
                    crate::datastore::DEFAULT_CLIENT_PORT
                )],
                cafile: None,
                certfile: None,
                keyfile: None,
            },
            token_auth_file: None,
            service_account_key_file: None,
            service_account_signing_key_file: None,
            service_account_issuer: tokens::DEFAULT_ISSUER.to_string(),
            basic_auth_file: None,
            requestheader_client_ca_file: None,
            request_header: authn::RequestHeader::default(),
            authorization_mode: vec!["AlwaysAllow".into()],
            service_cluster_ip_range: (Ipv4Addr::new(10, 152, 183, 0), 24),
            service_node_port_range: (30000, 32767),
            advertise_address: None,
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            request_timeout: Duration::from_secs(60),
            kubelet_certificate_authority: None,
            kubelet_client_certificate: None,
            kubelet_client_key: None,
        }
    }

    /// Applies flags in order (later ones win).
    pub fn apply(&mut self, flags: &[Flag]) -> Result<(), ArgsError> {
        for f in flags {
            let invalid = |why: &str| ArgsError::Invalid {
                origin: f.origin.clone(),
                flag: f.name.clone(),
                value: f.value.clone(),
                why: why.to_string(),
            };
            let path = || Some(PathBuf::from(&f.value));
            let list = || crate::common::args::split_list(&f.value);
            match f.name.as_str() {
                "secure-port" => {
                    self.secure_port = f.value.parse().map_err(|_| invalid("not a port"))?
                }
                "bind-address" => {
                    self.bind_address = f.value.parse().map_err(|_| invalid("not an IP"))?
                }
                "advertise-address" => {
                    self.advertise_address =
                        Some(f.value.parse().map_err(|_| invalid("not an IP"))?)
                }
                "tls-cert-file" => self.tls_cert_file = PathBuf::from(&f.value),
                "tls-private-key-file" => self.tls_private_key_file = PathBuf::from(&f.value),
                "client-ca-file" => self.client_ca_file = path(),
                "etcd-servers" => {
                    self.etcd.servers = list();
                    if self.etcd.servers.is_empty()
                        || self
                            .etcd
                            .servers
                            .iter()
                            .any(|s| !s.starts_with("https://") && !s.starts_with("http://"))
                    {
                        return Err(invalid("expected http:// or https:// URLs"));
                    }
                }
                "etcd-cafile" => self.etcd.cafile = path(),
                "etcd-certfile" => self.etcd.certfile = path(),
                "etcd-keyfile" => self.etcd.keyfile = path(),
                "token-auth-file" => self.token_auth_file = path(),
                "service-account-key-file" => self.service_account_key_file = path(),
                "service-account-signing-key-file" => {
                    self.service_account_signing_key_file = path()
                }
                "service-account-issuer" => self.service_account_issuer = f.value.clone(),
                "basic-auth-file" => self.basic_auth_file = path(),
                "requestheader-client-ca-file" => self.requestheader_client_ca_file = path(),
                "requestheader-allowed-names" => self.request_header.allowed_names = list(),
                "requestheader-username-headers" => self.request_header.username_headers = list(),
                "requestheader-group-headers" => self.request_header.group_headers = list(),
                "requestheader-extra-headers-prefix" => self.request_header.extra_prefixes = list(),
                "authorization-mode" => {
                    let modes: Vec<String> =
                        f.value.split(',').map(|s| s.trim().to_string()).collect();
                    for m in &modes {
                        if !authz::SUPPORTED_MODES.contains(&m.as_str()) {
                            return Err(invalid(&format!(
                                "authorization mode {m:?} is not supported (supported: {})",
                                authz::SUPPORTED_MODES.join(", ")
                            )));
                        }
                    }
                    self.authorization_mode = modes;
                }
                "service-cluster-ip-range" => {
                    self.service_cluster_ip_range = parse_cidr(&f.value).map_err(|w| invalid(&w))?
                }
                "service-node-port-range" => {
                    let (a, b) = f
                        .value
                        .split_once('-')
                        .ok_or_else(|| invalid("expected FROM-TO"))?;
                    let a: u16 = a.trim().parse().map_err(|_| invalid("not a port"))?;
                    let b: u16 = b.trim().parse().map_err(|_| invalid("not a port"))?;
                    if a == 0 || a > b {
                        return Err(invalid("empty range"));
                    }
                    self.service_node_port_range = (a, b);
                }
                "max-requests-inflight" => {
                    self.max_requests_inflight =
                        f.value.parse().map_err(|_| invalid("not a number"))?
                }
                "max-mutating-requests-inflight" => {
                    self.max_mutating_requests_inflight =
                        f.value.parse().map_err(|_| invalid("not a number"))?
                }
                "kubelet-certificate-authority" => self.kubelet_certificate_authority = path(),
                "kubelet-client-certificate" => self.kubelet_client_certificate = path(),
                "kubelet-client-key" => self.kubelet_client_key = path(),
                "request-timeout" => {
                    self.request_timeout =
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
        Ok(())
    }

    /// `host:port` clients are told to use (`serverAddressByClientCIDRs`).
    pub fn server_address(&self) -> String {
        let ip = self
            .advertise_address
            .unwrap_or_else(crate::common::host::primary_address);
        SocketAddr::new(ip, self.secure_port).to_string()
    }

    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.secure_port)
    }
}

fn parse_cidr(v: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, bits) = v.split_once('/').ok_or("expected an IPv4 CIDR")?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| "not an IPv4 address".to_string())?;
    let bits: u8 = bits.parse().map_err(|_| "bad prefix length".to_string())?;
    if !(8..=30).contains(&bits) {
        return Err("prefix length must be between 8 and 30".into());
    }
    let mask = u32::MAX << (32 - bits);
    Ok((Ipv4Addr::from(u32::from(ip) & mask), bits))
}

/// Runs the API server until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), ApiServerError> {
    server::run(config).await
}

/// Whether the API server of a data root answers `/readyz` with 200 over TLS verified
/// against the cluster CA (the supervisor's readiness check).
pub async fn probe_ready(paths: &Paths) -> bool {
    let Ok(config) = load_config(paths, &[]) else {
        return false;
    };
    let ca = paths.data_file("certs/ca.crt");
    let check = async {
        let mut roots = rustls::RootCertStore::empty();
        for c in server::read_cas(&ca).ok()? {
            roots.add(c).ok()?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), config.secure_port);
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let name = rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
            .connect(name, tcp)
            .await
            .ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/readyz")
            .header("host", "127.0.0.1")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        Some(resp.status() == hyper::StatusCode::OK)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), check).await,
        Ok(Some(true))
    )
}
