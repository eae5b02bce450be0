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
//!
//! `/exec/{namespace}/{pod}[/{uid}]/{container}`, `/attach/…` and
//! `/portForward/{namespace}/{pod}[/{uid}]` (GET or POST, an HTTP upgrade) ask CRI for a
//! session on containerd's streaming server and then proxy the client's upgrade to the URL CRI
//! returned, as upstream's `proxyStream` does: whatever protocol the client negotiates
//! (WebSocket `v4.channel.k8s.io`, SPDY/3.1) is containerd's to accept or refuse, and its
//! refusal reaches the client as it was sent. [`proxy_upgrade`], the splicing proxy, is shared
//! with the API server's hop to the kubelet.

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
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HOST, HeaderMap, HeaderValue, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::auth::{Access, Delegated, Verdict, cert_user};
use super::logs::{self, LogFile, LogOptions, StillRunning};

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not finished its request headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// containerd's streaming server is on loopback: a dial that takes longer is a failure.
const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A backend that accepted the upgrade request but has not answered it by then never will.
const UPGRADE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a backend's refusal body is relayed (they are one-line errors).
const MAX_REFUSAL_BODY: usize = 64 * 1024;
/// CRI labels on containers and sandboxes (upstream's `kubelet/types` names; `runtime.rs`
/// writes them).
const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

pub type Body = BoxBody<Bytes, Infallible>;

/// What the kubelet core tells the servers; implemented by the core, faked in tests.
pub trait PodSource: Send + Sync + 'static {
    /// The pods bound to this node that the kubelet runs, each with the status the kubelet
    /// last computed (container states decide which log instance `/containerLogs` reads).
    fn pods(&self) -> Vec<Pod>;
    /// Whether the current instance of a container is running; a followed log ends once it
    /// is not and its file is drained.
    fn container_running(&self, namespace: &str, pod: &str, container: &str) -> bool;
    /// containerd's CRI runtime service, for exec, attach and port-forward sessions (`None`:
    /// there is no runtime to ask, and those endpoints answer 500).
    fn runtime(&self) -> Option<RuntimeServiceClient<Channel>>;
    /// The Summary API document (`/stats/summary`); `None` when there is no runtime to ask.
    fn stats_summary(&self) -> futures::future::BoxFuture<'_, Option<serde_json::Value>> {
        Box::pin(async { None })
    }
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
    /// `--authentication-token-webhook`: a client certificate is optional at the handshake, a
    /// bearer token reviewed by the API server standing in for it.
    pub accept_tokens: bool,
}

/// Who may use the API port beyond holding a client certificate.
#[derive(Default)]
pub struct Auth {
    /// Asks the API server (TokenReview, SubjectAccessReview); `None` when neither is on.
    pub delegated: Option<Arc<Delegated>>,
    /// `--authorization-mode=Webhook`: each request is authorized as `nodes/<subresource>`.
    pub authorize: bool,
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
    auth: Auth,
    /// `kubelet_http_requests_total` by (method, path bucket, server type).
    requests: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
}

/// Runs the three servers until the future is dropped; fails only if one cannot start.
/// Every connection is owned by the future, so dropping it closes them all (except streaming
/// sessions already switched to another protocol, which run until either end closes).
pub async fn serve(
    cfg: ServerConfig,
    src: Arc<dyn PodSource>,
    auth: Auth,
) -> Result<(), KubeletServerError> {
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
        auth,
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
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if cfg.accept_tokens {
        // A caller may present a bearer token instead; the request is refused (401) unless
        // one of the two names it.
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder.build().map_err(|e| err(&cfg.client_ca_file, &e))?;
    // Re-read when renewed (a new host address, near expiry): no restart, no pod touched.
    let resolver =
        super::servingcert::ReloadingCert::new(&cfg.tls_cert_file, &cfg.tls_private_key_file)
            .map_err(|e| KubeletServerError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| KubeletServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
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
                                Ok(Ok(stream)) => {
                                    let peer = stream
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .and_then(|c| c.first())
                                        .map(|c| Arc::new(c.clone().into_owned()));
                                    serve_connection(stream, shared, port, peer).await
                                }
                                Ok(Err(e)) => tracing::debug!(error = %e, "kubelet TLS handshake failed"),
                                Err(_) => tracing::debug!("kubelet TLS handshake timed out"),
                            }
                        });
                    }
                    None => {
                        conns.spawn(serve_connection(tcp, shared, port, None));
                    }
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_connection<I>(
    io: I,
    shared: Arc<Shared>,
    port: Port,
    peer: Option<Arc<CertificateDer<'static>>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let peer = peer.clone();
        async move {
            if port == Port::Secure
                && let Some(denied) = authorize(&shared, &req, peer.as_deref()).await
            {
                return Ok::<_, Infallible>(denied);
            }
            Ok::<_, Infallible>(handle(&shared, port, req).await)
        }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    // A malformed request ends only its own connection.
    // With upgrades: exec, attach and port-forward hand the connection over to a splice.
    let _ = builder
        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service)
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
        "exec" => "exec",
        "attach" => "attach",
        "portForward" => "portForward",
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
        Port::Secure if stream_target(&path).is_some() => stream(shared, req).await,
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

/// Upstream's `isSubpath`: `path` is `prefix` or below it.
fn is_subpath(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The attributes upstream's kubelet authorizes a request as: `nodes/proxy` of this node, or
/// the narrower `stats`, `metrics`, `log`, `spec` or `checkpoint` for their paths.
fn access(method: &Method, path: &str, node: &str) -> Access {
    let verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let subresource = [
        ("/stats", "stats"),
        ("/metrics", "metrics"),
        ("/logs", "log"),
        ("/spec", "spec"),
        ("/checkpoint", "checkpoint"),
    ]
    .into_iter()
    .find(|(prefix, _)| is_subpath(path, prefix))
    .map_or("proxy", |(_, sub)| sub);
    Access::Resource {
        verb: verb.into(),
        resource: "nodes".into(),
        subresource: subresource.into(),
        name: node.into(),
    }
}

/// Authentication beyond the TLS handshake and authorization, as upstream's kubelet filter
/// does them on the API port; `None` lets the request through.
async fn authorize(
    shared: &Shared,
    req: &Request<Incoming>,
    peer: Option<&CertificateDer<'static>>,
) -> Option<Response<Body>> {
    let delegated = shared.auth.delegated.as_ref()?;
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|_| shared.cfg.accept_tokens);
    if !shared.auth.authorize {
        return match delegated.authenticate(bearer, peer).await {
            Ok(_) => None,
            Err(_) => Some(text(StatusCode::UNAUTHORIZED, "Unauthorized")),
        };
    }
    let a = access(req.method(), req.uri().path(), &shared.cfg.node_name);
    let Access::Resource {
        verb, subresource, ..
    } = &a
    else {
        return None;
    };
    let what = |user: &str| {
        format!("(user={user}, verb={verb}, resource=nodes, subresource={subresource})")
    };
    match delegated.check(bearer, peer, &a).await {
        Verdict::Allowed => None,
        Verdict::Unauthenticated => Some(text(StatusCode::UNAUTHORIZED, "Unauthorized")),
        Verdict::Forbidden(user) => Some(text(
            StatusCode::FORBIDDEN,
            format!("Forbidden {}", what(&user)),
        )),
        Verdict::Unavailable(why) => {
            tracing::warn!("kubelet authorization failed: {why}");
            let user = peer
                .and_then(|c| cert_user(c.as_ref()))
                .map(|u| u.name)
                .unwrap_or_default();
            Some(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Authorization error {}", what(&user)),
            ))
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
    let debug = matches!(
        segs.as_slice(),
        ["containerLogs", ..]
            | ["runningpods", ..]
            | ["exec", ..]
            | ["attach", ..]
            | ["portForward", ..]
    );
    if port == Port::ReadOnly && debug {
        // As upstream's read-only server, which installs no debugging handlers.
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "Debug endpoints are disabled.\n",
        );
    }
    let known = matches!(
        segs.as_slice(),
        ["pods"]
            | ["pods", ""]
            | ["metrics"]
            | ["runningpods", ""]
            | ["runningpods"]
            | ["stats", "summary"]
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
        ["stats", "summary"] => match shared.src.stats_summary().await {
            Some(v) => json(&v),
            None => not_found(),
        },
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

// ---- exec, attach and port-forward.

/// Which streaming endpoint a request names.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StreamKind {
    Exec,
    Attach,
    PortForward,
}

/// A streaming path: `/{exec|attach}/{namespace}/{pod}[/{uid}]/{container}` or
/// `/portForward/{namespace}/{pod}[/{uid}]`, upstream's routes.
#[derive(Debug, PartialEq)]
struct StreamTarget<'a> {
    kind: StreamKind,
    namespace: &'a str,
    pod: &'a str,
    uid: Option<&'a str>,
    /// Empty for port-forward.
    container: &'a str,
}

fn stream_target(path: &str) -> Option<StreamTarget<'_>> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let kind = match segs[0] {
        "exec" => StreamKind::Exec,
        "attach" => StreamKind::Attach,
        "portForward" => StreamKind::PortForward,
        _ => return None,
    };
    let (namespace, pod, uid, container) = match (kind, &segs[1..]) {
        (StreamKind::PortForward, [ns, pod]) => (*ns, *pod, None, ""),
        (StreamKind::PortForward, [ns, pod, uid]) => (*ns, *pod, Some(*uid), ""),
        (StreamKind::PortForward, _) => return None,
        (_, [ns, pod, c]) => (*ns, *pod, None, *c),
        (_, [ns, pod, uid, c]) => (*ns, *pod, Some(*uid), *c),
        _ => return None,
    };
    Some(StreamTarget {
        kind,
        namespace,
        pod,
        uid,
        container,
    })
}

/// A query's pairs, unescaped and in order (repeated keys kept: `command` is an argv).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

/// The streams an exec or attach client asked for, as upstream's `remotecommand.NewOptions`
/// reads them: `input`, `output`, `error`, `tty`, each on only when `1` (the API server sends
/// `1`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct StreamOptions {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn stream_options(query: &[(String, String)]) -> Result<StreamOptions, String> {
    // The first value counts, as Go's `FormValue`.
    let on = |k: &str| {
        query
            .iter()
            .find(|(n, _)| n == k)
            .is_some_and(|(_, v)| v == "1")
    };
    let tty = on("tty");
    let o = StreamOptions {
        stdin: on("input"),
        stdout: on("output"),
        // A terminal has one output stream; stderr is merged into it.
        stderr: on("error") && !tty,
        tty,
    };
    if !o.stdin && !o.stdout && !o.stderr {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    Ok(o)
}

/// Upstream's `portforward.NewV4Options`: a WebSocket client names its ports in the query
/// (`port=80,443`, required); a SPDY client names one per stream, so it sends none.
fn forward_ports(query: &[(String, String)], websocket: bool) -> Result<Vec<i32>, String> {
    if !websocket {
        return Ok(Vec::new());
    }
    let values: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "port")
        .map(|(_, v)| v.as_str())
        .collect();
    if values.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut ports = Vec::new();
    for v in values {
        if v.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in v.split(',') {
            let n: u16 = p.parse().map_err(|_| {
                let why = if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                    "value out of range"
                } else {
                    "invalid syntax"
                };
                format!("unable to parse {v:?} as a port: strconv.ParseUint: parsing {p:?}: {why}")
            })?;
            if n < 1 {
                return Err(format!("port {v:?} must be > 0"));
            }
            ports.push(i32::from(n));
        }
    }
    Ok(ports)
}

/// Whether a request asks for a connection upgrade (Go's `httpstream.IsUpgradeRequest`: a
/// `Connection` header mentioning `upgrade`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("upgrade"))
}

/// Whether the upgrade asked for is to WebSocket.
fn is_websocket_request(headers: &HeaderMap) -> bool {
    is_upgrade_request(headers)
        && headers
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// What the session is, with its parameters.
enum Session {
    Exec(StreamOptions, Vec<String>),
    Attach(StreamOptions),
    PortForward(Vec<i32>),
}

/// `/exec`, `/attach`, `/portForward` on the secure port: the pod and container are looked up,
/// CRI opens a session on containerd's streaming server, and the client's upgrade is proxied
/// there. Answers and error texts are upstream's (`getExec`, `getAttach`, `getPortForward`,
/// `streaming.WriteError`, `proxyStream`'s responder).
async fn stream(shared: &Shared, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let Some(target) = stream_target(&path) else {
        return not_found();
    };
    if !matches!(*req.method(), Method::GET | Method::POST) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, POST"));
        return r;
    }
    let query = query_pairs(req.uri().query().unwrap_or(""));
    let session = match target.kind {
        StreamKind::Exec => stream_options(&query).map(|o| {
            let argv = query
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect();
            Session::Exec(o, argv)
        }),
        StreamKind::Attach => stream_options(&query).map(Session::Attach),
        StreamKind::PortForward => {
            forward_ports(&query, is_websocket_request(req.headers())).map(Session::PortForward)
        }
    };
    let session = match session {
        Ok(s) => s,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let Some(pod) = shared.src.pods().into_iter().find(|p| {
        p.metadata.namespace.as_deref() == Some(target.namespace)
            && p.metadata.name.as_deref() == Some(target.pod)
    }) else {
        return text(StatusCode::NOT_FOUND, "pod does not exist");
    };
    let uid = pod.metadata.uid.unwrap_or_default();
    if target.uid.is_some_and(|u| u != uid) {
        return text(StatusCode::NOT_FOUND, "pod not found");
    }
    let Some(mut rt) = shared.src.runtime() else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no container runtime to stream from",
        );
    };
    // The session's subject: a running container, or the ready sandbox for port-forward.
    let subject = match target.kind {
        StreamKind::PortForward => ready_sandbox(&mut rt, &uid).await.map(|id| {
            id.ok_or_else(|| format!("pod not found (\"{}_{}\")", target.pod, target.namespace))
        }),
        _ => running_container(&mut rt, &uid, target.container)
            .await
            .map(|id| id.ok_or_else(|| format!("container not found ({:?})", target.container))),
    };
    let id = match subject {
        Ok(Ok(id)) => id,
        Ok(Err(why)) => return text(StatusCode::INTERNAL_SERVER_ERROR, why),
        Err(status) => return cri_error(&status),
    };
    // Checked before CRI is asked: a session opened for a request that cannot use it would
    // linger on containerd until its token expires.
    if !is_upgrade_request(req.headers()) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Upgrade request required\n",
        );
    }
    let url = match session {
        Session::Exec(o, cmd) => rt
            .exec(cri::ExecRequest {
                container_id: id,
                cmd,
                tty: o.tty,
                stdin: o.stdin,
                stdout: o.stdout,
                stderr: o.stderr,
            })
            .await
            .map(|r| r.into_inner().url),
        Session::Attach(o) => rt
            .attach(cri::AttachRequest {
                container_id: id,
                stdin: o.stdin,
                tty: o.tty,
                stdout: o.stdout,
                stderr: o.stderr,
            })
            .await
            .map(|r| r.into_inner().url),
        Session::PortForward(port) => rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: id,
                port,
            })
            .await
            .map(|r| r.into_inner().url),
    };
    let url = match url {
        Ok(u) => u,
        Err(status) => return cri_error(&status),
    };
    let Some((authority, path_and_query)) = split_http_url(&url) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unsupported streaming URL {url:?}\n"),
        );
    };
    tracing::debug!(
        kind = ?target.kind,
        pod = %format!("{}/{}", target.namespace, target.pod),
        upgrade = ?req.headers().get(UPGRADE),
        "proxying a streaming session to {authority}"
    );
    let tcp = match tokio::time::timeout(
        STREAM_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(authority),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("dial tcp {authority}: {e}\n"),
            );
        }
        Err(_) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("dial tcp {authority}: i/o timeout\n"),
            );
        }
    };
    let _ = tcp.set_nodelay(true);
    let client = hyper::upgrade::on(&mut req);
    match proxy_upgrade(
        tcp,
        authority,
        path_and_query,
        req.method().clone(),
        req.headers(),
        client,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// The newest running container of that name in the pod, as the runtime sees it (upstream's
/// `findContainer` asks the runtime too: a status written a moment ago may name an instance
/// that has since exited).
async fn running_container(
    rt: &mut RuntimeServiceClient<Channel>,
    uid: &str,
    container: &str,
) -> Result<Option<String>, tonic::Status> {
    let labels = std::collections::HashMap::from([
        (LABEL_POD_UID.to_string(), uid.to_string()),
        (LABEL_CONTAINER_NAME.to_string(), container.to_string()),
    ]);
    let list = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                label_selector: labels,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .containers;
    Ok(list.into_iter().max_by_key(|c| c.created_at).map(|c| c.id))
}

/// The pod's ready sandbox, the one port-forward enters.
async fn ready_sandbox(
    rt: &mut RuntimeServiceClient<Channel>,
    uid: &str,
) -> Result<Option<String>, tonic::Status> {
    let labels = std::collections::HashMap::from([(LABEL_POD_UID.to_string(), uid.to_string())]);
    let list = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                state: Some(cri::PodSandboxStateValue {
                    state: cri::PodSandboxState::SandboxReady as i32,
                }),
                label_selector: labels,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .items;
    Ok(list.into_iter().max_by_key(|s| s.created_at).map(|s| s.id))
}

/// A failed CRI call as upstream's `streaming.WriteError` answers it: NotFound is a 404,
/// ResourceExhausted a 429, anything else a 500; the body is grpc-go's error text.
fn cri_error(status: &tonic::Status) -> Response<Body> {
    let code = match status.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(
        code,
        format!(
            "rpc error: code = {} desc = {}",
            go_code_name(status.code()),
            status.message()
        ),
    )
}

/// grpc-go's name of a status code.
fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "Canceled",
        C::Unknown => "Unknown",
        C::InvalidArgument => "InvalidArgument",
        C::DeadlineExceeded => "DeadlineExceeded",
        C::NotFound => "NotFound",
        C::AlreadyExists => "AlreadyExists",
        C::PermissionDenied => "PermissionDenied",
        C::ResourceExhausted => "ResourceExhausted",
        C::FailedPrecondition => "FailedPrecondition",
        C::Aborted => "Aborted",
        C::OutOfRange => "OutOfRange",
        C::Unimplemented => "Unimplemented",
        C::Internal => "Internal",
        C::Unavailable => "Unavailable",
        C::DataLoss => "DataLoss",
        C::Unauthenticated => "Unauthenticated",
    }
}

/// `http://host:port/path?query` → (`host:port`, `/path?query`); containerd's streaming server
/// speaks plain HTTP on loopback.
fn split_http_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let slash = rest.find('/')?;
    let (authority, path) = rest.split_at(slash);
    (!authority.is_empty()).then_some((authority, path))
}

/// Why an upgrade could not be forwarded to the backend.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Request(#[from] hyper::http::Error),
    #[error("timed out waiting for the backend to answer the upgrade request")]
    Timeout,
}

/// Whether a client's request header goes on to the next hop: not its credentials (each hop
/// authenticates with its own certificate, and upstream drops them once authenticated) and
/// not hop-by-hop headers, except the `Connection` and `Upgrade` an upgrade is made of.
pub fn forwardable(name: &hyper::header::HeaderName) -> bool {
    let n = name.as_str();
    !(matches!(
        n,
        "host"
            | "authorization"
            | "proxy-authorization"
            | "content-length"
            | "transfer-encoding"
            | "keep-alive"
            | "te"
            | "trailer"
            | "proxy-connection"
            | "expect"
    ) || n.starts_with("impersonate-")
        || n.starts_with("x-remote-"))
}

/// Upstream's upgrade-aware proxying, one hop of it: sends the client's upgrade request
/// (`method`, forwardable `headers`, `path_and_query`, no body) to the backend over `io` and
/// answers with the backend's status and headers. On `101 Switching Protocols` a task splices
/// the client's upgraded connection (`client`) with the backend's in both directions until
/// either side closes; any other answer (an error, a refused protocol) is relayed with its body,
/// so a client can fall back (kubectl retries a refused WebSocket upgrade with SPDY).
/// Shared by the kubelet (to containerd) and the API server (to the kubelet).
pub async fn proxy_upgrade<I>(
    io: I,
    host: &str,
    path_and_query: &str,
    method: Method,
    headers: &HeaderMap,
    client: OnUpgrade,
) -> Result<Response<Body>, UpgradeError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upgrade backend connection failed");
        }
    });
    let mut builder = Request::builder().method(method).uri(path_and_query);
    for (k, v) in headers {
        if forwardable(k) {
            builder = builder.header(k, v);
        }
    }
    let req = builder
        .header(HOST, host)
        .body(http_body_util::Empty::<Bytes>::new())?;
    let mut resp =
        match tokio::time::timeout(UPGRADE_RESPONSE_TIMEOUT, sender.send_request(req)).await {
            Ok(r) => r?,
            Err(_) => {
                driver.abort();
                return Err(UpgradeError::Timeout);
            }
        };
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let backend = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::join!(client, backend) {
                (Ok(c), Ok(b)) => splice(c, b).await,
                (c, b) => tracing::debug!(
                    client = ?c.err(),
                    backend = ?b.err(),
                    "an upgraded connection never came"
                ),
            }
        });
        let mut r = Response::new(http_body_util::Empty::new().boxed());
        *r.status_mut() = status;
        *r.headers_mut() = resp.headers().clone();
        return Ok(r);
    }
    let r = relay_refusal(resp).await;
    driver.abort();
    Ok(r)
}

/// A backend's refusal of an upgrade, relayed as it came minus the framing of the backend's
/// connection, its body bounded (shared with the API server's streaming translator).
pub async fn relay_refusal(resp: Response<Incoming>) -> Response<Body> {
    let status = resp.status();
    let mut headers = resp.headers().clone();
    for h in [
        CONNECTION,
        UPGRADE,
        hyper::header::CONTENT_LENGTH,
        hyper::header::TRANSFER_ENCODING,
    ] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    let body = read_bounded(resp.into_body(), MAX_REFUSAL_BODY).await;
    let mut r = Response::new(Full::new(body).boxed());
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

/// At most `limit` bytes of a body, whatever arrived within ten seconds.
async fn read_bounded(mut body: Incoming, limit: usize) -> Bytes {
    let mut buf = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                buf.extend_from_slice(&d);
                if buf.len() >= limit {
                    buf.truncate(limit);
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    Bytes::from(buf)
}

/// Copies bytes both ways until either side closes, then closes both: as upstream's proxy
/// does, a session is over once one end of it is gone (neither WebSocket nor SPDY half-closes
/// a connection).
async fn splice(client: hyper::upgrade::Upgraded, backend: hyper::upgrade::Upgraded) {
    use tokio::io::AsyncWriteExt;
    let (mut cr, mut cw) = tokio::io::split(hyper_util::rt::TokioIo::new(client));
    let (mut br, mut bw) = tokio::io::split(hyper_util::rt::TokioIo::new(backend));
    let (from, result) = tokio::select! {
        r = tokio::io::copy(&mut cr, &mut bw) => ("client", r),
        r = tokio::io::copy(&mut br, &mut cw) => ("backend", r),
    };
    tracing::debug!(closed_by = from, result = ?result, "streaming session ended");
    // A peer that stopped reading must not hold the task.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = cw.shutdown().await;
        let _ = bw.shutdown().await;
    })
    .await;
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
    fn requests_map_to_node_subresources_as_upstream() {
        let sub = |m: Method, p: &str| match access(&m, p, "n1") {
            Access::Resource {
                verb,
                subresource,
                name,
                ..
            } => (verb, subresource, name),
            Access::Path { .. } => unreachable!(),
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string(), "n1".to_string());
        assert_eq!(sub(Method::GET, "/pods"), s("get", "proxy"));
        assert_eq!(sub(Method::GET, "/stats/summary"), s("get", "stats"));
        assert_eq!(sub(Method::GET, "/stats"), s("get", "stats"));
        assert_eq!(sub(Method::GET, "/statsx"), s("get", "proxy"));
        assert_eq!(sub(Method::GET, "/metrics/cadvisor"), s("get", "metrics"));
        assert_eq!(sub(Method::GET, "/logs/syslog"), s("get", "log"));
        assert_eq!(sub(Method::POST, "/exec/ns/p/c"), s("create", "proxy"));
        assert_eq!(sub(Method::HEAD, "/spec/"), s("get", "spec"));
        assert_eq!(
            sub(Method::DELETE, "/checkpoint/x"),
            s("delete", "checkpoint")
        );
    }

    #[test]
    fn unescape_handles_percent_and_plus() {
        assert_eq!(unescape("a%3Ab+c%zz%4"), "a:b c%zz%4");
    }

    #[test]
    fn streaming_paths_and_options_read_like_upstream() {
        let t = stream_target("/exec/default/web/c").unwrap();
        assert_eq!(
            (t.kind, t.namespace, t.pod, t.uid, t.container),
            (StreamKind::Exec, "default", "web", None, "c")
        );
        let t = stream_target("/attach/ns/p/uid-1/c").unwrap();
        assert_eq!(
            (t.kind, t.uid, t.container),
            (StreamKind::Attach, Some("uid-1"), "c")
        );
        let t = stream_target("/portForward/ns/p").unwrap();
        assert_eq!(
            (t.kind, t.pod, t.container),
            (StreamKind::PortForward, "p", "")
        );
        assert!(stream_target("/portForward/ns/p/u/x").is_none());
        assert!(stream_target("/exec/ns/p").is_none());
        assert!(stream_target("/exec/ns//c").is_none());

        let q = query_pairs("command=sh&command=-c&command=echo+hi%21&output=1&error=1&tty=1");
        let argv: Vec<&str> = q
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(argv, ["sh", "-c", "echo hi!"]);
        // A terminal drops stderr; only `1` is true.
        assert_eq!(
            stream_options(&q),
            Ok(StreamOptions {
                stdin: false,
                stdout: true,
                stderr: false,
                tty: true
            })
        );
        assert_eq!(
            stream_options(&query_pairs("output=true&input=0")),
            Err("you must specify at least 1 of stdin, stdout, stderr".into())
        );

        assert_eq!(forward_ports(&[], false), Ok(vec![]));
        assert_eq!(
            forward_ports(&[], true),
            Err("query parameter \"port\" is required".into())
        );
        assert_eq!(
            forward_ports(&query_pairs("port=80,443&port=8080"), true),
            Ok(vec![80, 443, 8080])
        );
        assert_eq!(
            forward_ports(&query_pairs("port=x"), true),
            Err(
                "unable to parse \"x\" as a port: strconv.ParseUint: parsing \"x\": invalid syntax"
                    .into()
            )
        );
        assert_eq!(
            forward_ports(&query_pairs("port=0"), true),
            Err("port \"0\" must be > 0".into())
        );
        assert_eq!(
            forward_ports(&query_pairs("port=70000"), true),
            Err("unable to parse \"70000\" as a port: strconv.ParseUint: parsing \"70000\": value out of range".into())
        );

        let mut h = HeaderMap::new();
        assert!(!is_upgrade_request(&h));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(is_upgrade_request(&h) && !is_websocket_request(&h));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_websocket_request(&h));

        assert_eq!(
            split_http_url("http://127.0.0.1:4321/exec/tok3n"),
            Some(("127.0.0.1:4321", "/exec/tok3n"))
        );
        assert_eq!(split_http_url("https://127.0.0.1:1/x"), None);
        let s = tonic::Status::not_found("no such container");
        let r = cri_error(&s);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    /// A backend that switches to a line echo for `Upgrade: echo` (closing after `bye`), and
    /// refuses anything else with a 403 saying whether credentials reached it.
    async fn echo_backend(listener: TcpListener) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                    let saw_auth = req.headers().contains_key("authorization");
                    let mut r = Response::new(Full::new(Bytes::new()).boxed());
                    if req.headers().get(UPGRADE).is_some_and(|u| u == "echo") {
                        let up = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
                            let io = hyper_util::rt::TokioIo::new(up.await.unwrap());
                            let (r, mut w) = tokio::io::split(io);
                            let mut lines = tokio::io::BufReader::new(r).lines();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "bye" {
                                    break;
                                }
                                w.write_all(format!("{l}\n").as_bytes()).await.unwrap();
                            }
                        });
                        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        r.headers_mut()
                            .insert(UPGRADE, HeaderValue::from_static("echo"));
                        r.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("Upgrade"));
                        r.headers_mut().insert(
                            "x-stream-protocol-version",
                            HeaderValue::from_static("v4.channel.k8s.io"),
                        );
                    } else {
                        *r.status_mut() = StatusCode::FORBIDDEN;
                        *r.body_mut() =
                            Full::new(Bytes::from(format!("refused, auth={saw_auth}"))).boxed();
                    }
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    }

    /// A front server proxying every request's upgrade to the backend, as a hop does.
    async fn upgrade_front(listener: TcpListener, backend: u16) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |mut req: Request<Incoming>| async move {
                        let be = tokio::net::TcpStream::connect(("127.0.0.1", backend))
                            .await
                            .unwrap();
                        let client = hyper::upgrade::on(&mut req);
                        let path = req.uri().path().to_string();
                        let r = proxy_upgrade(
                            be,
                            "127.0.0.1",
                            &path,
                            req.method().clone(),
                            req.headers(),
                            client,
                        )
                        .await
                        .unwrap();
                        Ok::<_, Infallible>(r)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    }

    /// Reads up to the end of the response head.
    async fn read_head(s: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut b).await.unwrap(), 1, "{head:?}");
            head.push(b[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn upgrades_are_spliced_and_refusals_relayed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let be = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let be_port = be.local_addr().unwrap().port();
        tokio::spawn(echo_backend(be));
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_port = front.local_addr().unwrap().port();
        tokio::spawn(upgrade_front(front, be_port));

        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", front_port))
            .await
            .unwrap();
        s.write_all(b"POST /exec/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\nAuthorization: Bearer secret\r\nX-Stream-Protocol-Version: v5.channel.k8s.io\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await.to_ascii_lowercase();
        assert!(
            head.starts_with("http/1.1 101 switching protocols\r\n"),
            "{head}"
        );
        assert!(head.contains("upgrade: echo\r\n"), "{head}");
        assert!(
            head.contains("x-stream-protocol-version: v4.channel.k8s.io\r\n"),
            "{head}"
        );
        s.write_all(b"ping\n").await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping\n");
        // The backend closing ends the client's connection too.
        s.write_all(b"bye\n").await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("the client's side closes")
            .unwrap();
        assert_eq!(n, 0);

        // A refused upgrade comes back as it was sent, without the client's credentials
        // having reached the backend.
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", front_port))
            .await
            .unwrap();
        s.write_all(b"GET /exec/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: Bearer secret\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
        let mut body = vec![0u8; "refused, auth=false".len()];
        s.read_exact(&mut body).await.unwrap();
        assert_eq!(body, b"refused, auth=false");
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
        fn runtime(&self) -> Option<RuntimeServiceClient<Channel>> {
            None
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
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_file(pki.path("client.key")).unwrap();
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
            accept_tokens: false,
        };
        let (port, ro, hz) = (cfg.port, cfg.read_only_port, cfg.healthz_port);
        let server = tokio::spawn(serve(cfg, src, Auth::default()));
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
        // Streaming endpoints: options, then the pod, then the runtime (none in this fake).
        assert_eq!(
            get_tls(&tls, port, "/exec/default/web/c?command=true")
                .await
                .unwrap(),
            (
                400,
                "you must specify at least 1 of stdin, stdout, stderr".into()
            )
        );
        assert_eq!(
            get_tls(&tls, port, "/exec/default/nosuch/c?output=1")
                .await
                .unwrap(),
            (404, "pod does not exist".into())
        );
        assert_eq!(
            get_tls(&tls, port, "/attach/default/web/other-uid/c?output=1")
                .await
                .unwrap(),
            (404, "pod not found".into())
        );
        assert_eq!(
            get_tls(&tls, port, "/portForward/default/web")
                .await
                .unwrap(),
            (500, "no container runtime to stream from".into())
        );

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
