//! What the daemons that are ordinary API clients with a secure port of their own share (the
//! controller manager on 10257, the scheduler on 10259): upstream's common flags (kubeconfig,
//! serving, leader election), the HTTPS health and metrics endpoint with authentication and
//! authorization delegated to the API server, and the Lease-based leader election that lets a
//! second instance wait.
//!
//! Owns no files; each component names its own args file, kubeconfig, port and Lease.

pub mod auth;
pub mod leader;
pub mod serving;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::common::args::{ArgsError, Flag};

#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("invalid kubeconfig {}: {cause}", path.display())]
    Kubeconfig { path: PathBuf, cause: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    /// Upstream exits when it stops leading, so a new leader never races an old one.
    #[error("leaderelection lost: lease {namespace}/{name} not renewed within {deadline:?}")]
    LeaderLost {
        namespace: String,
        name: String,
        deadline: Duration,
    },
    #[error("{0} stopped unexpectedly")]
    Stopped(&'static str),
}

/// Leader election settings (`--leader-elect*`).
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub enabled: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub resource_name: String,
    pub resource_namespace: String,
}

/// The flags every such component takes, with upstream's names and defaults.
#[derive(Debug, Clone)]
pub struct Flags {
    pub kubeconfig: PathBuf,
    /// `--master`: overrides the kubeconfig's server.
    pub master: Option<String>,
    pub bind_address: IpAddr,
    pub secure_port: u16,
    /// Serving pair; when both are unset, the API server's pair if present, else a
    /// self-signed certificate made at start (as upstream does without `--tls-cert-file`).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// CA of client certificates accepted on the non-health paths.
    pub client_ca_file: Option<PathBuf>,
    pub leader: LeaderElection,
    snap_data: PathBuf,
}

/// Go's `strconv.ParseBool`, which upstream's boolean flags use.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The error for a flag whose value is wrong.
pub fn invalid(f: &Flag, why: &str) -> ArgsError {
    ArgsError::Invalid {
        origin: f.origin.clone(),
        flag: f.name.clone(),
        value: f.value.clone(),
        why: why.to_string(),
    }
}

impl Flags {
    /// Upstream's defaults: leader election on, 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn defaults(snap_data: &Path, kubeconfig: &str, secure_port: u16, lease: &str) -> Self {
        Self {
            kubeconfig: snap_data.join(kubeconfig),
            master: None,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            secure_port,
            tls_cert_file: None,
            tls_private_key_file: None,
            client_ca_file: None,
            leader: LeaderElection {
                enabled: true,
                lease_duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                retry_period: Duration::from_secs(2),
                resource_name: lease.into(),
                resource_namespace: "kube-system".into(),
            },
            snap_data: snap_data.to_path_buf(),
        }
    }

    /// Takes `f` if it is one of the shared flags: Ok(false) when it is not.
    pub fn apply(&mut self, f: &Flag) -> Result<bool, ArgsError> {
        let path = || Some(PathBuf::from(&f.value)).filter(|p| !p.as_os_str().is_empty());
        let duration = || {
            crate::common::args::parse_duration(&f.value)
                .map_err(|w| invalid(f, &w))
                .and_then(|d| match d.is_zero() {
                    true => Err(invalid(f, "must be greater than zero")),
                    false => Ok(d),
                })
        };
        match f.name.as_str() {
            "kubeconfig" => self.kubeconfig = PathBuf::from(&f.value),
            "master" => {
                if !f.value.starts_with("https://") && !f.value.starts_with("http://") {
                    return Err(invalid(f, "expected an http:// or https:// URL"));
                }
                self.master = Some(f.value.clone());
            }
            "secure-port" => {
                self.secure_port = f.value.parse().map_err(|_| invalid(f, "not a port"))?
            }
            "bind-address" => {
                self.bind_address = f.value.parse().map_err(|_| invalid(f, "not an IP"))?
            }
            "tls-cert-file" => self.tls_cert_file = path(),
            "tls-private-key-file" => self.tls_private_key_file = path(),
            "client-ca-file" => self.client_ca_file = path(),
            "leader-elect" => {
                self.leader.enabled =
                    parse_bool(&f.value).ok_or_else(|| invalid(f, "expected true or false"))?
            }
            "leader-elect-lease-duration" => self.leader.lease_duration = duration()?,
            "leader-elect-renew-deadline" => self.leader.renew_deadline = duration()?,
            "leader-elect-retry-period" => self.leader.retry_period = duration()?,
            "leader-elect-resource-lock" => {
                if f.value != "leases" {
                    return Err(invalid(f, "only \"leases\" is supported"));
                }
            }
            "leader-elect-resource-name" => self.leader.resource_name = f.value.clone(),
            "leader-elect-resource-namespace" => self.leader.resource_namespace = f.value.clone(),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// What depends on several flags, checked once all are in.
    pub fn check(&self) -> Result<(), ArgsError> {
        if (self.tls_cert_file.is_some()) != (self.tls_private_key_file.is_some()) {
            return Err(ArgsError::Invalid {
                origin: "flags".into(),
                flag: "tls-cert-file".into(),
                value: format!("{:?}", self.tls_cert_file),
                why: "--tls-cert-file and --tls-private-key-file go together".into(),
            });
        }
        // Upstream's checks: a leader renews well before its lease runs out.
        let l = &self.leader;
        if l.enabled && l.lease_duration <= l.renew_deadline {
            return Err(ArgsError::Invalid {
                origin: "flags".into(),
                flag: "leader-elect-lease-duration".into(),
                value: format!("{:?}", l.lease_duration),
                why: "must be greater than --leader-elect-renew-deadline".into(),
            });
        }
        if l.enabled && l.renew_deadline.as_secs_f64() <= l.retry_period.as_secs_f64() * 1.2 {
            return Err(ArgsError::Invalid {
                origin: "flags".into(),
                flag: "leader-elect-renew-deadline".into(),
                value: format!("{:?}", l.renew_deadline),
                why: "must be greater than 1.2 × --leader-elect-retry-period".into(),
            });
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.secure_port)
    }

    /// The serving pair to use: the configured one, else the API server's (as MicroK8s
    /// does), else none (a self-signed one is made).
    pub fn serving_pair(&self) -> Option<(PathBuf, PathBuf)> {
        match (&self.tls_cert_file, &self.tls_private_key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ => {
                let c = self.snap_data.join("certs/server.crt");
                let k = self.snap_data.join("certs/server.key");
                (c.exists() && k.exists()).then_some((c, k))
            }
        }
    }

    /// The kube-rs settings of the kubeconfig (`--master` overriding its server).
    pub async fn kube_config(&self) -> Result<kube::Config, ComponentError> {
        let bad = |cause: String| ComponentError::Kubeconfig {
            path: self.kubeconfig.clone(),
            cause,
        };
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| bad(e.to_string()))?;
        let mut kcfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| bad(e.to_string()))?;
        if let Some(m) = &self.master {
            kcfg.cluster_url = m.parse().map_err(|e| bad(format!("--master {m}: {e}")))?;
        }
        Ok(kcfg)
    }

    /// A client from [`Self::kube_config`].
    pub fn client(&self, kcfg: kube::Config) -> Result<kube::Client, ComponentError> {
        kube::Client::try_from(kcfg).map_err(|e| ComponentError::Kubeconfig {
            path: self.kubeconfig.clone(),
            cause: e.to_string(),
        })
    }
}

/// This process's leader-election identity, upstream's `<hostname>_<uuid>` (a v4 UUID).
pub fn identity() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}_{}-{}-{}-{}-{}",
        crate::common::host::node_name(),
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What a component shows on `/metrics` and learns of its leadership.
pub trait Metrics: Send + Sync + 'static {
    /// Prometheus text format.
    fn render(&self) -> String;
    fn set_leader(&self, leading: bool);
}

/// Serves the secure port, waits for the lease (when leader election is on), then runs what
/// `start` starts until SIGTERM/SIGINT, until the lease is lost or until one of the tasks ends
/// (errors, so the process exits non-zero as upstream's does). Hands the lease over on a clean
/// stop.
pub async fn run<M, S>(
    flags: &Flags,
    what: &str,
    client: kube::Client,
    metrics: Arc<M>,
    start: S,
) -> Result<(), ComponentError>
where
    M: Metrics,
    S: FnOnce() -> tokio::task::JoinSet<&'static str>,
{
    let addr = flags.listen_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| ComponentError::Listen { addr, cause })?;
    let tls = serving::tls_config(flags.serving_pair(), flags.client_ca_file.as_deref())?;
    let auth = Arc::new(auth::Delegated::new(client.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let render: serving::Render = {
        let m = metrics.clone();
        Arc::new(move || m.render())
    };
    let serving = tokio::spawn(serving::serve(listener, tls, render, auth, stop_rx));
    tracing::info!("{what} serving on https://{addr}");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ComponentError::Signals)?;
    let mut elector = leader::Elector::new(client, &flags.leader, identity());
    let outcome = async {
        if flags.leader.enabled {
            tokio::select! {
                () = elector.acquire() => {}
                _ = sigterm.recv() => return Ok(()),
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
        metrics.set_leader(true);
        let mut running = start();
        let renewing = async {
            if flags.leader.enabled {
                elector.keep_renewing().await
            } else {
                std::future::pending().await
            }
        };
        let result = tokio::select! {
            _ = sigterm.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
            lost = renewing => Err(lost),
            Some(ended) = running.join_next() => {
                Err(ComponentError::Stopped(ended.unwrap_or("a task")))
            }
        };
        running.abort_all();
        metrics.set_leader(false);
        result
    }
    .await;
    // Hand the lease over at once instead of making the next leader wait for it to expire
    // (a no-op unless we still hold it).
    if outcome.is_ok() {
        elector.release().await;
    }
    let _ = stop_tx.send(true);
    let _ = serving.await;
    outcome
}

/// Whether the component on loopback `port` answers `/healthz` with `ok` (the supervisor's
/// readiness check). Its certificate is not verified: it may be self-signed, and the check
/// only ever goes to loopback.
pub async fn probe_ready(port: u16) -> bool {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    matches!(
        tokio::time::timeout(Duration::from_secs(3), serving::get_insecure(addr, "/healthz"))
            .await,
        Ok(Some((200, body))) if body == "ok"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_hostname_and_uuid() {
        let id = identity();
        let (host, uuid) = id.rsplit_once('_').unwrap();
        assert_eq!(host, crate::common::host::node_name());
        assert_eq!(uuid.len(), 36);
        assert_eq!(uuid.matches('-').count(), 4);
        assert_ne!(id, identity());
    }
}
