//! The kubelet's HTTP servers: the API on `--address:--port` (10250; TLS with the kubelet
//! serving certificate, a client certificate signed by `--client-ca-file` required, nothing
//! anonymous), the read-only port (10255; plain HTTP, GET only, no logs) and
//! `--healthz-bind-address:--healthz-port` (127.0.0.1:10248, `/healthz` only).
//!
//! Serves `/healthz`, `/pods`, `/runningpods/`, `/metrics` and
//! `/containerLogs/{namespace}/{pod}/{container}` with upstream's paths, parameters, status codes
//! and error texts, from what the kubelet core reports through [`PodSource`] and from the log
//! files under the pod log root ([`super::logs`]). Owns those three ports; changes no pod,
//! container or file.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::StreamExt;

use super::logs::{self, LogFile, LogOptions, StillRunning};

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not finished its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

pub type Body = BoxBody<Bytes, Infallible>;

/// What the kubelet core tells the servers; implemented by the core, faked in tests.
pub trait PodSource: Send + Sync + 'static {
    /// The pods bound to this node that the kubelet runs, each with the status the kubelet
    /// last computed (container states decide which log instance `/containerLogs` reads).
    fn pods(&self) -> Vec<Pod>;
    /// Whether the current instance of a container is running; a followed log ends once it
    /// is not and its file is drained.
    fn container_running(&self, namespace: &str, pod: &str, container: &str) -> bool;
}

/// The servers' settings, with upstream's kubelet flag and config names (the core fills it
/// from its own flags; MicroK8s's values are 0.0.0.0:10250, 10255, 127.0.0.1:10248,
/// `certs/kubelet-server.{crt,key}`, `certs/ca.crt` and `/var/log/pods`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `--address`: where the API listens.
    pub address: IpAddr,
    /// `--port`.
    pub port: u16,
    /// `--read-only-port`; 0 disables it.
    pub read_only_port: u16,
    /// `--healthz-bind-address`.
    pub healthz_bind_address: IpAddr,
    /// `--healthz-port`; 0 disables it.
    pub healthz_port: u16,
    /// `--tls-cert-file`: the kubelet serving certificate.
    pub tls_cert_file: PathBuf,
    /// `--tls-private-key-file`.
    pub tls_private_key_file: PathBuf,
    /// `--client-ca-file`: the CA client certificates must chain to.
    pub client_ca_file: PathBuf,
    /// `podLogsDir`: where containerd writes container logs.
    pub pod_logs_dir: PathBuf,
    /// The node's name (the `kubelet_node_name` metric).
    pub node_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletServerError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Port {
    Secure,
    ReadOnly,
    Healthz,
}

impl Port {
    /// Upstream's `server_type` metric label.
    fn server_type(self) -> &'static str {
        match self {
            Port::Secure => "readwrite",
            Port::ReadOnly | Port::Healthz => "readonly",
        }
    }
}

struct Shared {
    cfg: ServerConfig,
    src: Arc<dyn PodSource>,
    /// `kubelet_http_requests_total` by (method, path bucket, server type).
    requests: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
}

/// Runs the three servers until the future is dropped; fails only if one cannot start.
/// Every connection is owned by the future, so dropping it closes them all.
pub async fn serve(cfg: ServerConfig, src: Arc<dyn PodSource>) -> Result<(), KubeletServerError> {
    let tls = TlsAcceptor::from(Arc::new(tls_config(&cfg)?));
    let secure = bind(SocketAddr::new(cfg.address, cfg.port)).await?;
    let read_only = match cfg.read_only_port {
        0 => None,
        p => Some(bind(SocketAddr::new(cfg.address, p)).await?),
    };
    let healthz = match cfg.healthz_port {
        0 => None,
        p => Some(bind(SocketAddr::new(cfg.healthz_bind_address, p)).await?),
    };
    tracing::info!(
        "kubelet API listening on https://{}",
        SocketAddr::new(cfg.address, cfg.port)
    );
    let shared = Arc::new(Shared {
        cfg,
        src,
        requests: Mutex::new(BTreeMap::new()),
    });
    tokio::join!(
        accept_loop(Some(secure), Some(tls), shared.clone(), Port::Secure),
        accept_loop(read_only, None, shared.clone(), Port::ReadOnly),
        accept_loop(healthz, None, shared, Port::Healthz),
    );
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, KubeletServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| KubeletServerError::Listen { addr, source })
}

fn tls_config(cfg: &ServerConfig) -> Result<rustls::ServerConfig, KubeletServerError> {
    let err = |p: &Path, e: &dyn std::fmt::Display| {
        KubeletServerError::Tls(format!("{}: {e}", p.display()))
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cfg.client_ca_file)
        .map_err(|e| err(&cfg.client_ca_file, &e))?
    {
        let c = c.map_err(|e| err(&cfg.client_ca_file, &e))?;
        roots.add(c).map_err(|e| err(&cfg.client_ca_file, &e))?;
    }
    // No `allow_unauthenticated`: a client without a certificate from the CA never gets in.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| err(&cfg.client_ca_file, &e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.tls_cert_file)
        .map_err(|e| err(&cfg.tls_cert_file, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&cfg.tls_cert_file, &e))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.tls_private_key_file)
        .map_err(|e| err(&cfg.tls_private_key_file, &e))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KubeletServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| err(&cfg.tls_cert_file, &e))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// Serves one listener forever (a disabled one, `None`, never returns either).
async fn accept_loop(
    listener: Option<TcpListener>,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    port: Port,
) {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let shared = shared.clone();
                match tls.clone() {
                    Some(acceptor) => {
                        conns.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(stream)) => serve_connection(stream, shared, port).await,
                                Ok(Err(e)) => tracing::debug!(error = %e, "kubelet TLS handshake failed"),
                                Err(_) => tracing::debug!("kubelet TLS handshake timed out"),
                            }
                        });
                    }
                    None => {
                        conns.spawn(serve_connection(tcp, shared, port));
                    }
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_connection<I>(io: I, shared: Arc<Shared>, port: Port)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, port, req).await) }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    // A malformed request ends only its own connection.
    let _ = builder
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(body: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Go's `http.NotFound`.
fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// Upstream's `GETOnlyRestfulFilter` answer.
fn get_only() -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET"));
    r
}

/// The metric bucket of a path, as upstream's `getURLRootPath` and bucket list make it.
fn bucket(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "healthz" => "healthz",
        "pods" => "pods",
        "metrics" => "metrics",
        "containerLogs" => "containerLogs",
        "runningpods" => "runningpods",
        _ => "other",
    }
}

async fn handle(shared: &Shared, port: Port, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    {
        let m = match method.as_str() {
            m @ ("OPTIONS" | "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "TRACE" | "CONNECT") => m,
            _ => "other",
        };
        *shared
            .requests
            .lock()
            .entry((m.to_string(), bucket(&path), port.server_type()))
            .or_insert(0) += 1;
    }
    let is_healthz = path == "/healthz" || path.starts_with("/healthz/");
    match port {
        Port::Healthz if is_healthz => healthz(&path),
        Port::Healthz => not_found(),
        Port::ReadOnly if method != Method::GET => get_only(),
        _ if is_healthz => healthz(&path),
        _ => {
            route(
                shared,
                port,
                &method,
                &path,
                req.uri().query().unwrap_or(""),
            )
            .await
        }
    }
}

/// `/healthz` and its per-check paths (upstream's checks: ping, log, syncloop).
fn healthz(path: &str) -> Response<Body> {
    match path {
        "/healthz" | "/healthz/ping" | "/healthz/log" | "/healthz/syncloop" => {
            text(StatusCode::OK, "ok")
        }
        _ => not_found(),
    }
}

async fn route(
    shared: &Shared,
    port: Port,
    method: &Method,
    path: &str,
    query: &str,
) -> Response<Body> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let debug = matches!(segs.as_slice(), ["containerLogs", ..] | ["runningpods", ..]);
    if port == Port::ReadOnly && debug {
        // As upstream's read-only server, which installs no debugging handlers.
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Debug endpoints are disabled.\n",
        );
    }
    let known = matches!(
        segs.as_slice(),
        ["pods"] | ["pods", ""] | ["metrics"] | ["runningpods", ""] | ["runningpods"]
    ) || matches!(segs.as_slice(), ["containerLogs", _, _, _]);
    if !known {
        return not_found();
    }
    if *method != Method::GET {
        return get_only();
    }
    match segs.as_slice() {
        ["pods", ..] => pod_list(shared.src.pods()),
        ["runningpods", ..] => pod_list(running_pods(shared.src.as_ref())),
        ["metrics"] => metrics(shared),
        ["containerLogs", ns, pod, container] => {
            container_logs(shared, ns, pod, container, query).await
        }
        _ => not_found(),
    }
}

fn pod_list(pods: Vec<Pod>) -> Response<Body> {
    json(&serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": pods,
    }))
}

/// Running pods as the runtime sees them (upstream's `/runningpods/`): name, namespace, uid
/// and the running containers' names and images.
fn running_pods(src: &dyn PodSource) -> Vec<Pod> {
    src.pods()
        .into_iter()
        .filter_map(|p| {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let spec = p.spec?;
            let containers: Vec<Container> = spec
                .init_containers
                .unwrap_or_default()
                .into_iter()
                .chain(spec.containers)
                .filter(|c| src.container_running(&ns, &name, &c.name))
                .map(|c| Container {
                    name: c.name,
                    image: c.image,
                    ..Default::default()
                })
                .collect();
            (!containers.is_empty()).then(|| Pod {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(ns),
                    uid: p.metadata.uid,
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    containers,
                    ..Default::default()
                }),
                status: None,
            })
        })
        .collect()
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &str> {
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str());
    let main = spec.containers.iter().map(|c| c.name.as_str());
    let eph = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str());
    init.chain(main).chain(eph)
}

/// Prometheus text: pods and containers running, the node name, requests served.
fn metrics(shared: &Shared) -> Response<Body> {
    let mut pods_running = 0u64;
    let mut containers_running = 0u64;
    for p in shared.src.pods() {
        let ns = p.metadata.namespace.as_deref().unwrap_or("");
        let name = p.metadata.name.as_deref().unwrap_or("");
        let Some(spec) = &p.spec else { continue };
        let running = all_containers(spec)
            .filter(|c| shared.src.container_running(ns, name, c))
            .count() as u64;
        containers_running += running;
        pods_running += u64::from(running > 0);
    }
    let mut out = String::new();
    out.push_str("# HELP kubelet_node_name [ALPHA] The node's name. The count is always 1.\n");
    out.push_str("# TYPE kubelet_node_name gauge\n");
    out.push_str(&format!(
        "kubelet_node_name{{node=\"{}\"}} 1\n",
        escape_label(&shared.cfg.node_name)
    ));
    out.push_str(
        "# HELP kubelet_running_pods [ALPHA] Number of pods that have a running pod sandbox\n",
    );
    out.push_str("# TYPE kubelet_running_pods gauge\n");
    out.push_str(&format!("kubelet_running_pods {pods_running}\n"));
    out.push_str(
        "# HELP kubelet_running_containers [ALPHA] Number of containers currently running\n",
    );
    out.push_str("# TYPE kubelet_running_containers gauge\n");
    out.push_str(&format!(
        "kubelet_running_containers{{container_state=\"running\"}} {containers_running}\n"
    ));
    out.push_str("# HELP kubelet_http_requests_total [ALPHA] Number of the http requests received since the server started\n");
    out.push_str("# TYPE kubelet_http_requests_total counter\n");
    for ((method, path, server_type), n) in shared.requests.lock().iter() {
        out.push_str(&format!(
            "kubelet_http_requests_total{{long_running=\"false\",method=\"{method}\",path=\"{path}\",server_type=\"{server_type}\"}} {n}\n"
        ));
    }
    let mut r = text(StatusCode::OK, out);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Why `/containerLogs` parameters were refused, with upstream's answers.
#[derive(Debug, PartialEq)]
enum QueryError {
    /// 400 `{"message": "Unable to decode query."}`.
    Decode,
    /// 422 `{"message": "Invalid request."}` (`ValidatePodLogOptions`).
    Invalid,
}

/// `PodLogOptions` from a query as upstream's parameter codec decodes them.
fn log_options(query: &str) -> Result<LogOptions, QueryError> {
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // The first value of a repeated parameter wins, as url.Values.Get.
        params.entry(unescape(k)).or_insert_with(|| unescape(v));
    }
    // Upstream's backwards-compatible `tail` (`all` means no limit).
    if let Some(tail) = params.remove("tail") {
        if tail == "all" {
            params.remove("tailLines");
        } else {
            params.insert("tailLines".into(), tail);
        }
    }
    // Any value but `0`/`false` is true, as the query conversion reads booleans.
    let flag = |k: &str| {
        params
            .get(k)
            .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
    };
    let int = |k: &str| -> Result<Option<i64>, QueryError> {
        match params.get(k).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| QueryError::Decode),
        }
    };
    let since_time = match params.get("sinceTime").map(String::as_str) {
        None | Some("") => None,
        Some(v) => Some(OffsetDateTime::parse(v, &Rfc3339).map_err(|_| QueryError::Decode)?),
    };
    let opts = LogOptions {
        follow: flag("follow"),
        tail_lines: int("tailLines")?,
        since_seconds: int("sinceSeconds")?,
        since_time,
        timestamps: flag("timestamps"),
        limit_bytes: int("limitBytes")?,
        previous: flag("previous"),
    };
    let invalid = opts.tail_lines.is_some_and(|n| n < 0)
        || opts.limit_bytes.is_some_and(|n| n < 1)
        || (opts.since_seconds.is_some() && opts.since_time.is_some())
        || opts.since_seconds.is_some_and(|n| n < 1);
    if invalid {
        return Err(QueryError::Invalid);
    }
    Ok(opts)
}

/// `%XX` and `+` unescaping of a query component.
fn unescape(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which instance's log to read, from the container's status as upstream's
/// `validateContainerLogStatus` decides: `Ok(Some(previous_file))`, `Ok(None)` when the
/// kubelet has no status for it (then the files decide), or the error text.
fn choose_instance(pod: &Pod, container: &str, previous: bool) -> Result<Option<bool>, String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    let Some(status) = pod.status.as_ref().and_then(|s| {
        [
            &s.container_statuses,
            &s.init_container_statuses,
            &s.ephemeral_container_statuses,
        ]
        .into_iter()
        .flatten()
        .flatten()
        .find(|c: &&ContainerStatus| c.name == container)
    }) else {
        return Ok(None);
    };
    let state = status.state.clone().unwrap_or_default();
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let last_id = last.is_some_and(|t| t.container_id.as_deref().is_some_and(|i| !i.is_empty()));
    if previous {
        if !last_id {
            return Err(format!(
                "previous terminated container {container:?} in pod {pod_name:?} not found"
            ));
        }
        // While waiting to restart, the last terminated instance is the newest file.
        return Ok(Some(state.waiting.is_none() || state.running.is_some()));
    }
    if state.running.is_some() {
        return Ok(Some(false));
    }
    if let Some(t) = &state.terminated {
        if t.container_id.as_deref().is_some_and(|i| !i.is_empty()) || last_id {
            return Ok(Some(false));
        }
        return Err(format!(
            "container {container:?} in pod {pod_name:?} is terminated"
        ));
    }
    if last.is_some() {
        if last_id {
            return Ok(Some(false));
        }
        return Err(format!(
            "container {container:?} in pod {pod_name:?} is terminated"
        ));
    }
    match state.waiting.map(|w| w.reason.unwrap_or_default()) {
        Some(r) if r == "ErrImagePull" => Err(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: image can't be pulled"
        )),
        Some(r) if r == "ImagePullBackOff" => Err(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: trying and failing to pull image"
        )),
        Some(r) => Err(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: {r}"
        )),
        None => Err(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start - no logs yet"
        )),
    }
}

async fn container_logs(
    shared: &Shared,
    namespace: &str,
    pod_name: &str,
    container: &str,
    query: &str,
) -> Response<Body> {
    // Upstream answers these with JSON-looking text, kept as it is.
    let opts = match log_options(query) {
        Ok(o) => o,
        Err(QueryError::Decode) => {
            return text(
                StatusCode::BAD_REQUEST,
                r#"{"message": "Unable to decode query."}"#,
            );
        }
        Err(QueryError::Invalid) => {
            return text(
                StatusCode::UNPROCESSABLE_ENTITY,
                r#"{"message": "Invalid request."}"#,
            );
        }
    };
    let Some(pod) = shared.src.pods().into_iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(namespace)
            && p.metadata.name.as_deref() == Some(pod_name)
    }) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {pod_name:?} does not exist"),
        );
    };
    let known = pod
        .spec
        .as_ref()
        .is_some_and(|s| all_containers(s).any(|c| c == container));
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod_name:?}"),
        );
    }
    let by_status = match choose_instance(&pod, container, opts.previous) {
        Ok(p) => p,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let dir = logs::container_log_dir(
        &shared.cfg.pod_logs_dir,
        namespace,
        pod_name,
        uid,
        container,
    );
    let file = match LogFile::pick(&dir, by_status.unwrap_or(opts.previous)) {
        Ok(f) => f,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(file) = file else {
        return match (by_status, opts.previous) {
            (None, true) => text(
                StatusCode::BAD_REQUEST,
                format!(
                    "previous terminated container {container:?} in pod {pod_name:?} not found"
                ),
            ),
            (None, false) => text(
                StatusCode::BAD_REQUEST,
                format!("container {container:?} in pod {pod_name:?} is not available"),
            ),
            // The status says there are logs but containerd has not written a file yet.
            (Some(_), _) => log_response(None),
        };
    };
    // A previous instance has ended; only the current one is followed while it runs.
    let still_running: StillRunning = if opts.previous {
        Arc::new(|| false)
    } else {
        let src = shared.src.clone();
        let (ns, pod, c) = (
            namespace.to_string(),
            pod_name.to_string(),
            container.to_string(),
        );
        Arc::new(move || src.container_running(&ns, &pod, &c))
    };
    match logs::stream(file, opts, still_running).await {
        Ok(s) => log_response(Some(s)),
        Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// A 200 streaming the log (flushed chunk by chunk, as upstream's flushwriter).
fn log_response(stream: Option<logs::LogStream>) -> Response<Body> {
    let body: Body = match stream {
        Some(s) => StreamBody::new(s.map(|b| Ok::<_, Infallible>(Frame::data(b)))).boxed(),
        None => Full::new(Bytes::new()).boxed(),
    };
    let mut r = Response::new(body);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        PodStatus,
    };
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };

    fn running() -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }
    }

    fn terminated(id: &str) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                container_id: Some(id.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn waiting(reason: &str) -> ContainerState {
        ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(name: &str, containers: &[&str], statuses: Vec<ContainerStatus>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: containers
                    .iter()
                    .map(|c| Container {
                        name: c.to_string(),
                        image: Some("busybox".into()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(statuses),
                ..Default::default()
            }),
        }
    }

    fn status(name: &str, state: ContainerState, last: Option<ContainerState>) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(state),
            last_state: last,
            ..Default::default()
        }
    }

    #[test]
    fn log_options_decode_and_validate_like_upstream() {
        let o = log_options("follow=true&tailLines=5&timestamps=1&limitBytes=10&sinceSeconds=3")
            .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(
            (o.tail_lines, o.limit_bytes, o.since_seconds),
            (Some(5), Some(10), Some(3))
        );
        let o = log_options("sinceTime=2024-05-01T10%3A00%3A00Z&previous=false&tail=2").unwrap();
        assert_eq!(o.tail_lines, Some(2));
        assert!(!o.previous);
        assert!(o.since_time.is_some());
        assert_eq!(
            log_options("tail=all&tailLines=3").unwrap().tail_lines,
            None
        );
        assert_eq!(log_options("tailLines=x"), Err(QueryError::Decode));
        assert_eq!(log_options("sinceTime=yesterday"), Err(QueryError::Decode));
        assert_eq!(log_options("tailLines=-1"), Err(QueryError::Invalid));
        assert_eq!(log_options("limitBytes=0"), Err(QueryError::Invalid));
        assert_eq!(log_options("sinceSeconds=0"), Err(QueryError::Invalid));
        assert_eq!(
            log_options("sinceSeconds=1&sinceTime=2024-05-01T10:00:00Z"),
            Err(QueryError::Invalid)
        );
        assert_eq!(log_options("").unwrap(), LogOptions::default());
    }

    #[test]
    fn the_instance_follows_the_container_status() {
        let p = |s| pod("p", &["c"], vec![s]);
        assert_eq!(
            choose_instance(&p(status("c", running(), None)), "c", false),
            Ok(Some(false))
        );
        assert_eq!(
            choose_instance(
                &p(status("c", running(), Some(terminated("containerd://a")))),
                "c",
                true
            ),
            Ok(Some(true))
        );
        // Crash-looping: the last terminated instance is the newest file.
        assert_eq!(
            choose_instance(
                &p(status(
                    "c",
                    waiting("CrashLoopBackOff"),
                    Some(terminated("containerd://a"))
                )),
                "c",
                true
            ),
            Ok(Some(false))
        );
        assert_eq!(
            choose_instance(&p(status("c", running(), None)), "c", true),
            Err("previous terminated container \"c\" in pod \"p\" not found".into())
        );
        assert_eq!(
            choose_instance(
                &p(status("c", waiting("ContainerCreating"), None)),
                "c",
                false
            ),
            Err("container \"c\" in pod \"p\" is waiting to start: ContainerCreating".into())
        );
        assert_eq!(
            choose_instance(&p(status("c", waiting("ErrImagePull"), None)), "c", false),
            Err("container \"c\" in pod \"p\" is waiting to start: image can't be pulled".into())
        );
        assert_eq!(
            choose_instance(&p(status("c", ContainerState::default(), None)), "c", false),
            Err("container \"c\" in pod \"p\" is waiting to start - no logs yet".into())
        );
        assert_eq!(
            choose_instance(&p(status("c", terminated(""), None)), "c", false),
            Err("container \"c\" in pod \"p\" is terminated".into())
        );
        assert_eq!(
            choose_instance(&pod("p", &["c"], vec![]), "c", false),
            Ok(None)
        );
    }

    #[test]
    fn unescape_handles_percent_and_plus() {
        assert_eq!(unescape("a%3Ab+c%zz%4"), "a:b c%zz%4");
    }

    // ---- The servers over real TLS and TCP on loopback.

    struct Fake {
        pods: Vec<Pod>,
        running: Arc<std::sync::atomic::AtomicBool>,
    }

    impl PodSource for Fake {
        fn pods(&self) -> Vec<Pod> {
            self.pods.clone()
        }
        fn container_running(&self, _: &str, _: &str, _: &str) -> bool {
            self.running.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    struct Pki {
        dir: tempfile::TempDir,
        ca: Issuer<'static, KeyPair>,
    }

    impl Pki {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "test-ca");
            let cert = params.self_signed(&key).unwrap();
            std::fs::write(dir.path().join("ca.crt"), cert.pem()).unwrap();
            Pki {
                dir,
                ca: Issuer::new(params, key),
            }
        }

        /// Writes `<name>.crt`/`<name>.key` signed by the CA.
        fn leaf(&self, name: &str, server: bool) {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            if server {
                params.subject_alt_names =
                    vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            } else {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            let cert = params.signed_by(&key, &self.ca).unwrap();
            std::fs::write(self.dir.path().join(format!("{name}.crt")), cert.pem()).unwrap();
            std::fs::write(
                self.dir.path().join(format!("{name}.key")),
                key.serialize_pem(),
            )
            .unwrap();
        }

        fn path(&self, f: &str) -> PathBuf {
            self.dir.path().join(f)
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn client_tls(pki: &Pki, with_cert: bool) -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(pki.path("ca.crt")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        if with_cert {
            let chain = CertificateDer::pem_file_iter(pki.path("client.crt"))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(pki.path("client.key")).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        } else {
            b.with_no_client_auth()
        }
    }

    /// GET over HTTPS with the client certificate: (status, body). Reads the whole body.
    async fn get_tls(
        tls: &rustls::ClientConfig,
        port: u16,
        path: &str,
    ) -> Result<(u16, String), String> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls.clone()))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        request(stream, Method::GET, path).await
    }

    async fn request<I>(io: I, method: Method, path: &str) -> Result<(u16, String), String>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn get_plain(port: u16, method: Method, path: &str) -> (u16, String) {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        request(tcp, method, path).await.unwrap()
    }

    async fn wait_listening(port: u16) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("port {port} never listened");
    }

    #[tokio::test]
    async fn servers_answer_over_tls_and_plain_http() {
        let pki = Pki::new();
        pki.leaf("kubelet-server", true);
        pki.leaf("client", false);
        let logs = tempfile::tempdir().unwrap();
        let dir = logs.path().join("default_web_uid-web").join("c");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("0.log"),
            "2024-05-01T10:00:00Z stdout F hello\n2024-05-01T10:00:01Z stderr P wor\n2024-05-01T10:00:01Z stderr F ld\n",
        )
        .unwrap();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let src = Arc::new(Fake {
            pods: vec![
                pod("web", &["c"], vec![status("c", running(), None)]),
                pod("two", &["a", "b"], vec![]),
            ],
            running: alive.clone(),
        });
        let cfg = ServerConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: free_port(),
            read_only_port: free_port(),
            healthz_bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            healthz_port: free_port(),
            tls_cert_file: pki.path("kubelet-server.crt"),
            tls_private_key_file: pki.path("kubelet-server.key"),
            client_ca_file: pki.path("ca.crt"),
            pod_logs_dir: logs.path().to_path_buf(),
            node_name: "node-1".into(),
        };
        let (port, ro, hz) = (cfg.port, cfg.read_only_port, cfg.healthz_port);
        let server = tokio::spawn(serve(cfg, src));
        for p in [port, ro, hz] {
            wait_listening(p).await;
        }
        let tls = client_tls(&pki, true);

        assert_eq!(
            get_tls(&tls, port, "/healthz").await.unwrap(),
            (200, "ok".into())
        );
        let (code, body) = get_tls(&tls, port, "/pods").await.unwrap();
        assert_eq!(code, 200);
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(list["kind"], "PodList");
        assert_eq!(list["items"][0]["metadata"]["name"], "web");
        let (code, body) = get_tls(&tls, port, "/containerLogs/default/web/c")
            .await
            .unwrap();
        assert_eq!((code, body.as_str()), (200, "hello\nworld\n"));
        let (_, body) = get_tls(
            &tls,
            port,
            "/containerLogs/default/web/c?tailLines=1&timestamps=true",
        )
        .await
        .unwrap();
        assert_eq!(body, "2024-05-01T10:00:01.000000000Z world\n");
        assert_eq!(
            get_tls(&tls, port, "/containerLogs/default/nosuch/c")
                .await
                .unwrap(),
            (404, "pod \"nosuch\" does not exist".into())
        );
        assert_eq!(
            get_tls(&tls, port, "/containerLogs/default/web/x")
                .await
                .unwrap(),
            (404, "container \"x\" not found in pod \"web\"".into())
        );
        assert_eq!(
            get_tls(&tls, port, "/containerLogs/default/web/c?previous=true")
                .await
                .unwrap(),
            (
                400,
                "previous terminated container \"c\" in pod \"web\" not found".into()
            )
        );
        assert_eq!(
            get_tls(&tls, port, "/containerLogs/default/two/a")
                .await
                .unwrap(),
            (
                400,
                "container \"a\" in pod \"two\" is not available".into()
            )
        );
        assert_eq!(
            get_tls(&tls, port, "/containerLogs/default/web/c?tailLines=-2")
                .await
                .unwrap()
                .0,
            422
        );
        let (code, body) = get_tls(&tls, port, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("kubelet_running_pods 2\n"), "{body}");
        assert!(
            body.contains("kubelet_running_containers{container_state=\"running\"} 3\n"),
            "{body}"
        );
        assert!(
            body.contains("kubelet_node_name{node=\"node-1\"} 1\n"),
            "{body}"
        );
        let (code, body) = get_tls(&tls, port, "/runningpods/").await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("\"name\":\"web\""), "{body}");
        assert_eq!(get_tls(&tls, port, "/nosuch").await.unwrap().0, 404);

        // No client certificate: the handshake (or the first request) fails.
        let anonymous = client_tls(&pki, false);
        assert!(get_tls(&anonymous, port, "/pods").await.is_err());

        // Read-only port: GET only, no logs.
        assert_eq!(
            get_plain(ro, Method::GET, "/healthz").await,
            (200, "ok".into())
        );
        assert_eq!(get_plain(ro, Method::GET, "/pods").await.0, 200);
        assert_eq!(get_plain(ro, Method::POST, "/pods").await.0, 405);
        assert_eq!(get_plain(ro, Method::DELETE, "/nosuch").await.0, 405);
        assert_eq!(
            get_plain(ro, Method::GET, "/containerLogs/default/web/c").await,
            (405, "Debug endpoints are disabled.\n".into())
        );
        assert_eq!(get_plain(ro, Method::GET, "/nosuch").await.0, 404);

        // Healthz port: /healthz only.
        assert_eq!(
            get_plain(hz, Method::GET, "/healthz").await,
            (200, "ok".into())
        );
        assert_eq!(get_plain(hz, Method::GET, "/pods").await.0, 404);

        // Garbage on a connection does not take the server down.
        {
            use tokio::io::AsyncWriteExt;
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", ro))
                .await
                .unwrap();
            let _ = s.write_all(b"\x00\x01 garbage\r\n\r\n").await;
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
        }
        assert_eq!(get_plain(ro, Method::GET, "/healthz").await.0, 200);
        assert_eq!(get_tls(&tls, port, "/healthz").await.unwrap().0, 200);

        // Follow: streams what is appended, ends when the container stops.
        let follow = tokio::spawn({
            let tls = tls.clone();
            async move {
                get_tls(
                    &tls,
                    port,
                    "/containerLogs/default/web/c?follow=true&tailLines=0",
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join("0.log"))
                .unwrap();
            writeln!(f, "2024-05-01T10:00:02Z stdout F later").unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        alive.store(false, std::sync::atomic::Ordering::SeqCst);
        let got = tokio::time::timeout(Duration::from_secs(5), follow)
            .await
            .expect("follow ends")
            .unwrap()
            .unwrap();
        assert_eq!(got, (200, "later\n".into()));
        server.abort();
    }
}
