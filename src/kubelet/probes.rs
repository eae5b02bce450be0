//! Container probes as upstream runs them: startup, liveness and readiness, each exec (CRI
//! ExecSync), httpGet (HTTP/1.1 to the pod's IP) or tcpSocket, on their own timers with
//! `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`, success and failure thresholds.
//! A failed liveness or startup probe stops the container (the pod worker restarts it under
//! the restart policy); readiness feeds the container's `ready`. One task a probe, aborted
//! when its container goes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::pods::Shared;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

type Results = Arc<Mutex<HashMap<(String, Kind), bool>>>;

/// The probes of one pod's containers.
#[derive(Default)]
pub struct ProbeSet {
    tasks: HashMap<(String, Kind), tokio::task::JoinHandle<()>>,
    results: Results,
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        for (_, t) in self.tasks.drain() {
            t.abort();
        }
    }
}

impl ProbeSet {
    /// Starts the probe tasks of a running container that has none yet.
    pub fn ensure(
        &mut self,
        shared: &Arc<Shared>,
        pod: &Pod,
        c: &Container,
        container_id: &str,
        pod_ip: &str,
        notify: &Arc<Notify>,
    ) {
        for (kind, probe) in [
            (Kind::Startup, &c.startup_probe),
            (Kind::Liveness, &c.liveness_probe),
            (Kind::Readiness, &c.readiness_probe),
        ] {
            let Some(probe) = probe.clone() else { continue };
            let key = (container_id.to_string(), kind);
            if self.tasks.contains_key(&key) {
                continue;
            }
            let run = Runner {
                shared: shared.clone(),
                pod: pod.clone(),
                container: c.clone(),
                id: container_id.to_string(),
                ip: pod_ip.to_string(),
                kind,
                probe,
                results: self.results.clone(),
                notify: notify.clone(),
                has_startup: c.startup_probe.is_some(),
            };
            self.tasks.insert(key, tokio::spawn(run.run()));
        }
    }

    /// Stops the probes of containers that are no longer running.
    pub fn retain(&mut self, running: &HashSet<String>) {
        self.tasks.retain(|(id, _), t| {
            let keep = running.contains(id);
            if !keep {
                t.abort();
            }
            keep
        });
        self.results
            .lock()
            .retain(|(id, _), _| running.contains(id));
    }

    /// Readiness: true without a readiness probe once started; else the probe's verdict.
    pub fn ready(&self, c: &Container, id: &str) -> bool {
        if !self.started(c, id) {
            return false;
        }
        c.readiness_probe.is_none()
            || self
                .results
                .lock()
                .get(&(id.to_string(), Kind::Readiness))
                .copied()
                .unwrap_or(false)
    }

    /// Started: true without a startup probe; else once it succeeded.
    pub fn started(&self, c: &Container, id: &str) -> bool {
        c.startup_probe.is_none()
            || self
                .results
                .lock()
                .get(&(id.to_string(), Kind::Startup))
                .copied()
                .unwrap_or(false)
    }
}

struct Runner {
    shared: Arc<Shared>,
    pod: Pod,
    container: Container,
    id: String,
    ip: String,
    kind: Kind,
    probe: Probe,
    results: Results,
    notify: Arc<Notify>,
    has_startup: bool,
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

impl Runner {
    async fn run(self) {
        let p = &self.probe;
        let period = secs(p.period_seconds, 10).max(Duration::from_secs(1));
        let timeout = secs(p.timeout_seconds, 1).max(Duration::from_secs(1));
        let success_needed = p.success_threshold.unwrap_or(1).max(1);
        let failure_limit = p.failure_threshold.unwrap_or(3).max(1);
        tokio::time::sleep(secs(p.initial_delay_seconds, 0)).await;
        let (mut ok_run, mut bad_run) = (0, 0);
        loop {
            let waiting_for_start = self.kind == Kind::Liveness || self.kind == Kind::Readiness;
            if waiting_for_start
                && self.has_startup
                && !self
                    .results
                    .lock()
                    .get(&(self.id.clone(), Kind::Startup))
                    .copied()
                    .unwrap_or(false)
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let outcome = self.once(timeout).await;
            match outcome {
                Ok(()) => {
                    ok_run += 1;
                    bad_run = 0;
                    if ok_run >= success_needed {
                        self.set(true);
                        if self.kind == Kind::Startup {
                            return;
                        }
                    }
                }
                Err(why) => {
                    bad_run += 1;
                    ok_run = 0;
                    let fp = format!("spec.containers{{{}}}", self.container.name);
                    self.shared
                        .events
                        .record(
                            &self.pod,
                            Some(&fp),
                            false,
                            "Unhealthy",
                            &format!("{} probe failed: {why}", self.kind.word()),
                        )
                        .await;
                    if bad_run >= failure_limit {
                        self.set(false);
                        if self.kind != Kind::Readiness {
                            self.kill(&fp).await;
                            return;
                        }
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    }

    fn set(&self, ok: bool) {
        let prev = self.results.lock().insert((self.id.clone(), self.kind), ok);
        if prev != Some(ok) {
            self.notify.notify_one();
        }
    }

    /// Stops the container, as upstream does when liveness or startup fails.
    async fn kill(&self, fp: &str) {
        let name = &self.container.name;
        self.shared
            .events
            .record(
                &self.pod,
                Some(fp),
                true,
                "Killing",
                &format!(
                    "Container {name} failed {} probe, will be restarted",
                    self.kind.word().to_lowercase()
                ),
            )
            .await;
        let grace = self
            .probe
            .termination_grace_period_seconds
            .or(self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        let _ = self
            .shared
            .cri
            .runtime
            .clone()
            .stop_container(cri::StopContainerRequest {
                container_id: self.id.clone(),
                timeout: grace,
            })
            .await;
        self.notify.notify_one();
    }

    async fn once(&self, timeout: Duration) -> Result<(), String> {
        let p = &self.probe;
        let h = Handler {
            exec: p.exec.as_ref(),
            http_get: p.http_get.as_ref(),
            tcp_socket: p.tcp_socket.as_ref(),
            grpc: p.grpc.as_ref(),
        };
        h.run(&self.shared, &self.container, &self.id, &self.ip, timeout)
            .await
    }
}

/// One action of a probe or lifecycle hook (both have exec, httpGet and tcpSocket).
pub struct Handler<'a> {
    pub exec: Option<&'a k8s_openapi::api::core::v1::ExecAction>,
    pub http_get: Option<&'a k8s_openapi::api::core::v1::HTTPGetAction>,
    pub tcp_socket: Option<&'a k8s_openapi::api::core::v1::TCPSocketAction>,
    /// Probes only (lifecycle hooks have none).
    pub grpc: Option<&'a k8s_openapi::api::core::v1::GRPCAction>,
}

/// A port by number or by the name of one of the container's ports.
fn port(container: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("couldn't find port: {name} in {}", container.name)),
    }
}

impl Handler<'_> {
    /// Runs the action against the container; the error is upstream's failure text.
    pub async fn run(
        &self,
        shared: &Shared,
        container: &Container,
        id: &str,
        pod_ip: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        if let Some(exec) = self.exec {
            let cmd = exec.command.clone().unwrap_or_default();
            let r = shared
                .cri
                .runtime
                .clone()
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id.to_string(),
                    cmd: cmd.clone(),
                    timeout: timeout.as_secs() as i64,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            if r.exit_code == 0 {
                return Ok(());
            }
            let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
            out.push_str(&String::from_utf8_lossy(&r.stderr));
            return Err(if out.trim().is_empty() {
                format!("command {:?} exited with {}", cmd.join(" "), r.exit_code)
            } else {
                out
            });
        }
        if let Some(tcp) = self.tcp_socket {
            let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_string());
            let port = port(container, &tcp.port)?;
            let addr = format!("{host}:{port}");
            return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {addr}: {}", go_net_error(&e))),
                Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
            };
        }
        if let Some(http) = self.http_get {
            let host = http.host.clone().unwrap_or_else(|| pod_ip.to_string());
            let port = port(container, &http.port)?;
            let https = http.scheme.as_deref() == Some("HTTPS");
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            let url = format!(
                "{}://{host}:{port}{path}",
                if https { "https" } else { "http" }
            );
            let mut req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
            );
            for h in http.http_headers.iter().flatten() {
                req.push_str(&format!("{}: {}\r\n", h.name, h.value));
            }
            req.push_str("\r\n");
            let fetch = async {
                let tcp = tokio::net::TcpStream::connect(format!("{host}:{port}"))
                    .await
                    .map_err(|e| {
                        format!("Get {url:?}: dial tcp {host}:{port}: {}", go_net_error(&e))
                    })?;
                let line = if https {
                    // As upstream's prober: TLS without verifying the pod's certificate.
                    let tls = probe_tls().map_err(|e| format!("Get {url:?}: {e}"))?;
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| format!("Get {url:?}: {e}"))?;
                    let stream = tokio_rustls::TlsConnector::from(tls)
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("Get {url:?}: {e}"))?;
                    status_line(stream, &req).await
                } else {
                    status_line(tcp, &req).await
                }
                .map_err(|e| format!("Get {url:?}: {e}"))?;
                let code: u16 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| format!("Get {url:?}: malformed HTTP response"))?;
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("HTTP probe failed with statuscode: {code}"))
                }
            };
            return match tokio::time::timeout(timeout, fetch).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                )),
            };
        }
        if let Some(grpc) = self.grpc {
            return grpc_check(pod_ip, grpc, timeout).await;
        }
        Err("unsupported probe handler".into())
    }
}

/// The HTTPS probes' client config, built once: probes run every period of every pod.
fn probe_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static TLS: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        crate::common::insecure_tls::client_config(&[b"http/1.1"])
            .map(Arc::new)
            .map_err(|e| e.to_string())
    })
    .clone()
}

/// Sends `req` and reads the response's status line.
async fn status_line<S>(mut s: S, req: &str) -> Result<String, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1024];
    let mut n = 0;
    while n < buf.len() {
        let got = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
        if got == 0 {
            break;
        }
        n += got;
        if buf[..n].windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Upstream's gRPC prober: `grpc.health.v1.Health/Check` for `service` on the pod's address,
/// in plain text, SERVING or a failure in upstream's words.
async fn grpc_check(
    pod_ip: &str,
    grpc: &k8s_openapi::api::core::v1::GRPCAction,
    timeout: Duration,
) -> Result<(), String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let addr = if pod_ip.contains(':') {
        format!("[{pod_ip}]:{}", grpc.port)
    } else {
        format!("{pod_ip}:{}", grpc.port)
    };
    let secs = super::pods::go_duration(timeout);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("error: failed to connect service at {addr:?}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent("kube-probe/1.32")
        .map_err(|e| format!("error: failed to connect service at {addr:?}: {e}"))?;
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Err(_) => {
            return Err(format!(
                "timeout: failed to connect service {addr:?} within {secs}: context deadline exceeded"
            ));
        }
        Ok(Err(e)) => {
            let cause = std::error::Error::source(&e).map_or(e.to_string(), |c| c.to_string());
            return Err(format!(
                "error: failed to connect service at {addr:?}: {cause}"
            ));
        }
        Ok(Ok(c)) => c,
    };
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: grpc.service.clone().unwrap_or_default(),
    };
    let reply = match tokio::time::timeout(timeout, client.check(request)).await {
        Err(_) => {
            return Err(format!(
                "timeout: health rpc did not complete within {secs}"
            ));
        }
        Ok(Err(status)) => {
            return Err(match status.code() {
                tonic::Code::Unimplemented => format!(
                    "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                    status.message()
                ),
                tonic::Code::DeadlineExceeded => {
                    format!("timeout: health rpc did not complete within {secs}")
                }
                code => format!(
                    "error: health rpc probe failed: rpc error: code = {code:?} desc = {}",
                    status.message()
                ),
            });
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    match ServingStatus::try_from(reply.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!(
            "service unhealthy (responded with {:?})",
            other.as_str_name()
        )),
        Err(_) => Err(format!(
            "service unhealthy (responded with \"{}\")",
            reply.status
        )),
    }
}

/// Go's words for the usual connect errors.
fn go_net_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        std::io::ErrorKind::TimedOut => "i/o timeout".into(),
        _ => e.to_string(),
    }
}
