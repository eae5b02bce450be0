//! The API server's client of kubelets: the `pods/log` subresource, streamed from the
//! kubelet's `/containerLogs/{ns}/{pod}/{container}`; `nodes/proxy`, which forwards GETs
//! to any kubelet path; and `pods/exec`, `pods/attach` and `pods/portforward`, whose HTTP
//! upgrade goes to the kubelet's `/exec`, `/attach` and `/portForward`: kubectl's WebSocket
//! streaming is served by `streaming.rs` (translated or tunnelled to SPDY, as upstream's API
//! server does), any other upgrade (SPDY, other WebSocket subprotocols) is proxied and, once
//! the kubelet switches protocols, spliced byte for byte (the kubelet does the same towards
//! containerd). All speak HTTPS to the port the Node reports
//! (`status.daemonEndpoints.kubeletEndpoint`), presenting `--kubelet-client-certificate` and
//! verifying the kubelet's serving certificate against `--kubelet-certificate-authority`.
//!
//! Reads pods and nodes; writes nothing. mk8s is one machine: a node whose address is one of
//! this host's is dialled on 127.0.0.1 (a SAN of the kubelet serving certificate), so this
//! traffic never leaves loopback.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::registry::{self, ApiResult, Target};
use super::resources;
use super::server::{Body, Req, State};
use super::status::{ApiError, Cause, Details};
use super::streaming;
use super::{ApiServerError, Config};
use crate::common::insecure_tls::NoVerify;

/// Upstream's `--kubelet-port` default, used when a Node reports no kubelet port.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// An unreachable kubelet is an error after this long, never a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upstream reads at most this much of a kubelet's error body.
const MAX_ERROR_BODY: usize = 50_000;
/// Upstream's `--kubelet-preferred-address-types` default order.
const ADDRESS_TYPES: &[&str] = &[
    "Hostname",
    "InternalDNS",
    "InternalIP",
    "ExternalDNS",
    "ExternalIP",
];

/// TLS settings for kubelet connections, built once from the flags.
pub struct KubeletClient {
    /// Verifies the kubelet against `--kubelet-certificate-authority`; `None` when the flag
    /// is missing or unreadable (the reason is in `unverified`).
    verified: Option<Arc<rustls::ClientConfig>>,
    unverified: String,
    /// For `insecureSkipTLSVerifyBackend=true`: the client certificate without verifying the
    /// kubelet.
    insecure: Arc<rustls::ClientConfig>,
    /// For `services/proxy` and `pods/proxy` over `https:`: no client certificate (the kubelet's
    /// is not for pods) and no verification (a pod's certificate is its own), as upstream's
    /// proxy transport.
    pub(super) backends: Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    /// Reads the kubelet client pair and CA. A missing or unreadable client pair is an error
    /// (the flags are set but wrong); a missing CA only refuses kubelet traffic later.
    pub fn new(config: &Config) -> Result<Self, ApiServerError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client_auth = match (
            &config.kubelet_client_certificate,
            &config.kubelet_client_key,
        ) {
            (Some(cert), Some(key)) => Some(load_pair(cert, key)?),
            _ => None,
        };
        let build =
            |roots: Option<rustls::RootCertStore>| -> Result<rustls::ClientConfig, ApiServerError> {
                let b = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| ApiServerError::Tls(e.to_string()))?;
                let b = match roots {
                    Some(r) => b.with_root_certificates(r),
                    None => b
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone()))),
                };
                let mut tls = match &client_auth {
                    Some((chain, key)) => b
                        .with_client_auth_cert(chain.clone(), key.clone_key())
                        .map_err(|e| {
                        ApiServerError::Tls(format!("kubelet client certificate: {e}"))
                    })?,
                    None => b.with_no_client_auth(),
                };
                tls.alpn_protocols = vec![b"http/1.1".to_vec()];
                Ok(tls)
            };
        let (verified, unverified) = match &config.kubelet_certificate_authority {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in super::server::read_cas(&ca.to_path_buf())? {
                    roots
                        .add(c)
                        .map_err(|e| ApiServerError::Tls(format!("{}: {e}", ca.display())))?;
                }
                (Some(Arc::new(build(Some(roots))?)), String::new())
            }
            None => (
                None,
                "no --kubelet-certificate-authority is configured to verify kubelets with".into(),
            ),
        };
        let mut backends = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ApiServerError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
            .with_no_client_auth();
        backends.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            verified,
            unverified,
            insecure: Arc::new(build(None)?),
            backends: Arc::new(backends),
        })
    }
}

fn load_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ApiServerError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ApiServerError::Tls(format!("{}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiServerError::Tls(format!("{}: {e}", cert.display())))?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ApiServerError::Tls(format!("{}: {e}", key.display())))?;
    Ok((chain, key_der))
}

/// `PodLogOptions` from the query, as upstream's parameter codec reads them.
#[derive(Debug, Default, PartialEq)]
struct LogParams {
    container: String,
    follow: bool,
    previous: bool,
    timestamps: bool,
    since_seconds: Option<i64>,
    since_time: Option<time::OffsetDateTime>,
    tail_lines: Option<i64>,
    limit_bytes: Option<i64>,
    insecure_skip_tls_verify_backend: bool,
}

impl LogParams {
    fn from_req(req: &Req, name: &str) -> Result<Self, ApiError> {
        let flag = |k: &str| query_flag(req, k);
        let int = |k: &str| -> Result<Option<i64>, ApiError> {
            match req.param(k) {
                None | Some("") => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| {
                    ApiError::BadRequest(format!("strconv.ParseInt: parsing {v:?}: invalid syntax"))
                }),
            }
        };
        let since_time = match req.param("sinceTime") {
            None | Some("") => None,
            Some(v) => Some(
                time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        ApiError::BadRequest(format!(
                            "parsing time {v:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse {v:?} as \"2006\""
                        ))
                    })?,
            ),
        };
        let p = LogParams {
            container: req.param("container").unwrap_or("").to_string(),
            follow: flag("follow"),
            previous: flag("previous"),
            timestamps: flag("timestamps"),
            since_seconds: int("sinceSeconds")?,
            since_time,
            tail_lines: int("tailLines")?,
            limit_bytes: int("limitBytes")?,
            insecure_skip_tls_verify_backend: flag("insecureSkipTLSVerifyBackend"),
        };
        p.validate(name)?;
        Ok(p)
    }

    /// Upstream's `ValidatePodLogOptions`: 422 with every cause.
    fn validate(&self, name: &str) -> Result<(), ApiError> {
        let invalid = |field: &str, v: i64, why: &str| Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {v}: {why}"),
            field: field.into(),
        };
        let mut causes = Vec::new();
        if let Some(n) = self.tail_lines.filter(|n| *n < 0) {
            causes.push(invalid(
                "tailLines",
                n,
                "must be greater than or equal to 0",
            ));
        }
        if let Some(n) = self.limit_bytes.filter(|n| *n < 1) {
            causes.push(invalid("limitBytes", n, "must be greater than 0"));
        }
        match (self.since_seconds, self.since_time) {
            (Some(_), Some(_)) => causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
                    .into(),
                field: String::new(),
            }),
            (Some(n), None) if n < 1 => {
                causes.push(invalid("sinceSeconds", n, "must be greater than 0"))
            }
            _ => {}
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid("", "PodLogOptions", name, causes))
        }
    }

    /// The kubelet's query, as upstream's `LogLocation` builds it (keys sorted, as Go's
    /// `url.Values.Encode`).
    fn kubelet_query(&self) -> String {
        let mut q: Vec<(&str, String)> = Vec::new();
        if self.follow {
            q.push(("follow", "true".into()));
        }
        if let Some(n) = self.limit_bytes {
            q.push(("limitBytes", n.to_string()));
        }
        if self.previous {
            q.push(("previous", "true".into()));
        }
        if let Some(n) = self.since_seconds {
            q.push(("sinceSeconds", n.to_string()));
        }
        if let Some(t) = self.since_time {
            q.push(("sinceTime", crate::common::clock::rfc3339(t)));
        }
        if let Some(n) = self.tail_lines {
            q.push(("tailLines", n.to_string()));
        }
        if self.timestamps {
            q.push(("timestamps", "true".into()));
        }
        encode_query(q.iter().map(|(k, v)| (*k, v.as_str())))
    }
}

/// A boolean option of a subresource's query: any value but `0` or `false` is true, as the
/// query conversion reads booleans; absent is false.
fn query_flag(req: &Req, key: &str) -> bool {
    req.param(key)
        .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

fn encode_query<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Go's `url.QueryEscape`.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Every container name of a pod spec in upstream's visiting order: init, regular, ephemeral.
fn container_names(spec: &Value) -> Vec<&str> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// Upstream's `validateContainer`: the container to read, or the 400 saying why not.
fn pick_container(pod: &Value, requested: &str) -> Result<String, ApiError> {
    let name = registry::meta_str(pod, "name");
    let spec = &pod["spec"];
    if requested.is_empty() {
        let regular = spec["containers"].as_array().map_or(0, Vec::len);
        return match regular {
            1 => Ok(spec["containers"][0]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()),
            0 => Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => Err(ApiError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                container_names(spec).join(" ")
            ))),
        };
    }
    if container_names(spec).contains(&requested) {
        Ok(requested.to_string())
    } else {
        Err(ApiError::BadRequest(format!(
            "container {requested} is not valid for pod {name}"
        )))
    }
}

/// Where a node's kubelet listens.
#[derive(Debug, PartialEq)]
struct Endpoint {
    /// The host to dial (127.0.0.1 when the node is this machine).
    host: String,
    port: u16,
}

/// The node's kubelet endpoint: its preferred address (a node that is this host is reached
/// on loopback) and `status.daemonEndpoints.kubeletEndpoint.Port`.
fn kubelet_endpoint(
    node: &Value,
    port_override: Option<u16>,
    is_local: impl Fn(&str) -> bool,
) -> Result<Endpoint, ApiError> {
    let port = port_override.unwrap_or_else(|| {
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .filter(|p| *p > 0 && *p <= u64::from(u16::MAX))
            .map_or(DEFAULT_KUBELET_PORT, |p| p as u16)
    });
    let addresses: Vec<(&str, &str)> = node["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["type"].as_str()?, a["address"].as_str()?)))
        .collect();
    if addresses.iter().any(|(_, a)| is_local(a)) {
        return Ok(Endpoint {
            host: Ipv4Addr::LOCALHOST.to_string(),
            port,
        });
    }
    for t in ADDRESS_TYPES {
        if let Some((_, a)) = addresses.iter().find(|(k, _)| k == t) {
            return Ok(Endpoint {
                host: a.to_string(),
                port,
            });
        }
    }
    let known: Vec<String> = addresses
        .iter()
        .map(|(t, a)| format!("{{{t} {a}}}"))
        .collect();
    Err(relayed(
        500,
        "",
        format!(
            "no preferred addresses found; known addresses: [{}]",
            known.join(" ")
        ),
        None,
    ))
}

/// Whether an address names this machine: loopback, one of its addresses, or its hostname.
fn is_this_host(addr: &str) -> bool {
    match addr.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback() || crate::common::host::host_addresses().contains(&ip),
        Err(_) => {
            addr.eq_ignore_ascii_case("localhost")
                || addr.eq_ignore_ascii_case(&crate::common::host::node_name())
        }
    }
}

fn relayed(code: u16, reason: &'static str, message: String, details: Option<Details>) -> ApiError {
    ApiError::Relayed {
        code,
        reason,
        message,
        details,
    }
}

/// A kubelet's error answer as upstream's `GenericHttpResponseChecker` turns it into a Status.
fn kubelet_error(code: u16, body: &str, resource: &str, name: &str) -> ApiError {
    match code {
        500 => return ApiError::Internal(body.to_string()),
        400 => return ApiError::BadRequest(body.to_string()),
        _ => {}
    }
    let (reason, message) = match code {
        404 => (
            "NotFound",
            "the server could not find the requested resource".to_string(),
        ),
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials".to_string(),
        ),
        403 => ("Forbidden", body.to_string()),
        405 => (
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".to_string(),
        ),
        409 => ("Conflict", "the server reported a conflict".to_string()),
        422 => (
            "Invalid",
            "the server rejected our request due to an error in our request".to_string(),
        ),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later"
                .to_string(),
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request".to_string(),
        ),
        c if c >= 500 => (
            "InternalError",
            format!("an error on the server ({body:?}) has prevented the request from succeeding"),
        ),
        c => (
            "",
            format!("the server responded with the status code {c} but did not return more information"),
        ),
    };
    relayed(
        code,
        reason,
        format!("{message} ( {resource} {name})"),
        Some(Details::new("", resource, name)),
    )
}

/// A kubelet that cannot be reached: Go's `url.Error` text, as upstream's Status carries it
/// (code 500, no reason).
fn unreachable(url: &str, why: String) -> ApiError {
    relayed(500, "", format!("Get \"{url}\": {why}"), None)
}

/// Go's wording for a failed dial.
pub(super) fn dial_error(addr: &str, e: &std::io::Error) -> String {
    let what = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        std::io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => e.to_string(),
    };
    format!("dial tcp {addr}: {what}")
}

/// An open response from a kubelet.
struct KubeletResponse {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Incoming,
}

/// `host:port` of an endpoint, with IPv6 addresses bracketed.
fn host_port(endpoint: &Endpoint) -> String {
    match endpoint.host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", endpoint.port),
        _ => format!("{}:{}", endpoint.host, endpoint.port),
    }
}

/// A TLS connection to a kubelet with the kubelet client certificate, or Go's words for why
/// there is none; never waits longer than the connect and handshake timeouts.
async fn dial(
    client: &KubeletClient,
    endpoint: &Endpoint,
    insecure: bool,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let host_port = host_port(endpoint);
    let tls = if insecure {
        client.insecure.clone()
    } else {
        match &client.verified {
            Some(t) => t.clone(),
            None => return Err(client.unverified.clone()),
        }
    };
    let tcp = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(host_port.as_str()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(dial_error(&host_port, &e)),
        Err(_) => return Err(format!("dial tcp {host_port}: i/o timeout")),
    };
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(endpoint.host.clone())
        .map_err(|e| format!("invalid server name: {e}"))?;
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
    )
    .await
    {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("tls: {e}")),
        Err(_) => Err("net/http: TLS handshake timeout".into()),
    }
}

/// `GET https://<host>:<port><path_and_query>` with the kubelet client certificate.
async fn kubelet_get(
    client: &KubeletClient,
    endpoint: &Endpoint,
    path_and_query: &str,
    insecure: bool,
) -> Result<KubeletResponse, ApiError> {
    let host_port = host_port(endpoint);
    let url = format!("https://{host_port}{path_and_query}");
    let stream = dial(client, endpoint, insecure)
        .await
        .map_err(|why| unreachable(&url, why))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&url, e.to_string()))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path_and_query)
        .header(hyper::header::HOST, host_port.as_str())
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&url, e.to_string()))?;
    let status = resp.status();
    let content_type = resp.headers().get(CONTENT_TYPE).cloned();
    Ok(KubeletResponse {
        status,
        content_type,
        body: resp.into_body(),
    })
}

/// The first `MAX_ERROR_BODY` bytes of a body, as text.
async fn error_text(mut body: Incoming) -> String {
    let mut buf = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                buf.extend_from_slice(&d);
                if buf.len() >= MAX_ERROR_BODY {
                    buf.truncate(MAX_ERROR_BODY);
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// A response body relaying a kubelet's, chunk by chunk as it arrives (so a followed log
/// reaches the client at once); ends when either side goes away.
pub(super) fn relay(mut body: Incoming) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = tx.closed() => return,
            };
            match frame {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data()
                        && tx.send(data).await.is_err()
                    {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "kubelet stream ended with an error");
                    return;
                }
                None => return,
            }
        }
    });
    StreamBody::new(ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)))).boxed()
}

fn node_target(name: &str) -> Result<Target, ApiError> {
    Ok(Target {
        res: resources::find("", "v1", "nodes")
            .ok_or_else(|| ApiError::Internal("no nodes resource".into()))?,
        namespace: None,
        name: Some(name.to_string()),
        sub: None,
    })
}

/// `GET /api/v1/namespaces/{ns}/pods/{name}/log`.
pub async fn pod_log(state: &State, req: &Req, t: &Target) -> ApiResult {
    let name = t.name.as_deref().unwrap_or("");
    let params = LogParams::from_req(req, name)?;
    let (pod, _) = registry::current(state, t).await?;
    let container = pick_container(&pod, &params.container)?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node_name.is_empty() {
        // Upstream streams nothing for a pod no node runs yet: 204, no body.
        let mut r = Response::new(http_body_util::Empty::new().boxed());
        *r.status_mut() = StatusCode::NO_CONTENT;
        return Ok(r);
    }
    let (node, _) = registry::current(state, &node_target(node_name)?).await?;
    let endpoint = kubelet_endpoint(&node, None, is_this_host)?;
    let namespace = registry::meta_str(&pod, "namespace");
    let mut path = format!(
        "/containerLogs/{}/{}/{}",
        escape_path(namespace),
        escape_path(name),
        escape_path(&container)
    );
    let query = params.kubelet_query();
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    let resp = kubelet_get(
        &state.kubelet,
        &endpoint,
        &path,
        params.insecure_skip_tls_verify_backend,
    )
    .await?;
    if !resp.status.is_success() {
        let text = error_text(resp.body).await;
        return Err(kubelet_error(resp.status.as_u16(), &text, "pods/log", name));
    }
    let mut r = Response::new(relay(resp.body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}

/// `GET /api/v1/nodes/{name}/proxy/{path}`: the kubelet's answer, status and all.
pub async fn node_proxy(state: &State, req: &Req, t: &Target) -> ApiResult {
    let id = t.name.as_deref().unwrap_or("");
    if req.method != Method::GET {
        return Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource ({} nodes/proxy)",
            req.method
        )));
    }
    // `name` or `name:port`, as upstream's node ResourceLocation accepts.
    let (name, port) = match id.rsplit_once(':') {
        Some((n, p)) => (
            n,
            Some(
                p.parse::<u16>()
                    .map_err(|_| ApiError::BadRequest(format!("invalid node request {id:?}")))?,
            ),
        ),
        None => (id, None),
    };
    let (node, _) = registry::current(state, &node_target(name)?).await?;
    let endpoint = kubelet_endpoint(&node, port, is_this_host)?;
    let prefix = format!("/api/v1/nodes/{id}/proxy");
    let rest = req.path.strip_prefix(&prefix).unwrap_or("");
    let mut path = if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    };
    let query = encode_query(req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    let resp = kubelet_get(&state.kubelet, &endpoint, &path, false)
        .await
        .map_err(|e| match e {
            // Upstream's proxy words a failed connection this way.
            ApiError::Relayed {
                code,
                reason,
                message,
                details,
            } => relayed(
                code,
                reason,
                message
                    .split_once("\": ")
                    .map_or(message.clone(), |(_, why)| {
                        format!("error trying to reach service: {why}")
                    }),
                details,
            ),
            other => other,
        })?;
    let mut r = Response::new(relay(resp.body));
    *r.status_mut() = resp.status;
    if let Some(ct) = resp.content_type {
        r.headers_mut().insert(CONTENT_TYPE, ct);
    }
    Ok(r)
}

/// `PodPortForwardOptions.ports` from the query (repeated, each a comma list), as upstream's
/// query conversion reads them.
fn forward_ports(req: &Req) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for (_, v) in req.query.iter().filter(|(k, _)| k == "ports") {
        for p in v.split(',') {
            let n = p.parse::<u16>().map_err(|_| {
                let why = if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                    "value out of range"
                } else {
                    "invalid syntax"
                };
                ApiError::BadRequest(format!(
                    "cannot convert to []int32: strconv.ParseUint: parsing {p:?}: {why}"
                ))
            })?;
            ports.push(n);
        }
    }
    Ok(ports)
}

/// The kubelet path and query of an exec or attach (upstream's `streamParams`: booleans as `1`
/// under the kubelet's names `input`, `output`, `error`, `tty`; keys sorted as Go encodes them).
fn remote_command_location(
    req: &Req,
    what: &str,
    namespace: &str,
    name: &str,
    container: &str,
) -> String {
    let mut q: Vec<(&str, &str)> = Vec::new();
    if what == "exec" {
        for (_, c) in req.query.iter().filter(|(k, _)| k == "command") {
            q.push(("command", c));
        }
    }
    for (param, kubelet) in [
        ("stderr", "error"),
        ("stdin", "input"),
        ("stdout", "output"),
        ("tty", "tty"),
    ] {
        if query_flag(req, param) {
            q.push((kubelet, "1"));
        }
    }
    let path = format!(
        "/{what}/{}/{}/{}",
        escape_path(namespace),
        escape_path(name),
        escape_path(container)
    );
    match encode_query(q.into_iter()) {
        e if e.is_empty() => path,
        e => format!("{path}?{e}"),
    }
}

/// `pods/exec`, `pods/attach` and `pods/portforward`, GET or POST: upstream's
/// `ExecLocation`/`AttachLocation`/`PortForwardLocation` choose the kubelet URL, then the
/// client's upgrade is proxied there (`UpgradeAwareHandler` with `UpgradeRequired`), or, for
/// kubectl's WebSocket streaming, served by upstream's stream translator or tunnel
/// (`streaming.rs`). The kubelet's refusal reaches the client as it was sent, so kubectl can
/// fall back from WebSocket to SPDY.
pub async fn pod_stream(state: &State, req: &Req, t: &Target) -> ApiResult {
    let name = t.name.as_deref().unwrap_or("");
    let sub = t.sub.as_deref().unwrap_or("");
    // Options are decoded before anything is looked up, as upstream's connect handler does.
    let ports = if sub == "portforward" {
        forward_ports(req)?
    } else {
        Vec::new()
    };
    let (pod, _) = registry::current(state, t).await?;
    let namespace = registry::meta_str(&pod, "namespace");
    let container = match sub {
        "portforward" => None,
        _ => Some(pick_container(
            &pod,
            req.param("container").unwrap_or_default(),
        )?),
    };
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let (node, _) = registry::current(state, &node_target(node_name)?).await?;
    let endpoint = kubelet_endpoint(&node, None, is_this_host)?;
    let location = match &container {
        Some(c) => remote_command_location(req, sub, namespace, name, c),
        None => {
            let path = format!(
                "/portForward/{}/{}",
                escape_path(namespace),
                escape_path(name)
            );
            if ports.is_empty() {
                path
            } else {
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                format!("{path}?port={}", escape(&list.join(",")))
            }
        }
    };
    let upgrade = match &req.upgrade {
        Some(u) if crate::kubelet::server::is_upgrade_request(&req.headers) => u.clone(),
        _ => return Err(ApiError::BadRequest("Upgrade request required".into())),
    };
    let stream = dial(&state.kubelet, &endpoint, false)
        .await
        .map_err(|why| relayed(500, "", format!("error dialing backend: {why}"), None))?;
    // kubectl's WebSocket streaming, which the runtime does not speak, ends here (upstream's
    // stream tunnel and translator); everything else goes to the kubelet as it came.
    if let Some(plan) = streaming::plan(&req.headers, sub) {
        tracing::debug!(location = %location, ?plan, "serving {sub} over WebSocket");
        let streams = streaming::Streams {
            stdin: query_flag(req, "stdin"),
            stdout: query_flag(req, "stdout"),
            stderr: query_flag(req, "stderr"),
            tty: query_flag(req, "tty"),
        };
        return streaming::serve(
            plan,
            stream,
            &host_port(&endpoint),
            &location,
            &req.headers,
            upgrade,
            streams,
        )
        .await
        .map_err(|e| relayed(500, "", e.to_string(), None));
    }
    tracing::debug!(
        location = %location,
        upgrade = ?req.headers.get(hyper::header::UPGRADE),
        "proxying {sub} to the kubelet"
    );
    crate::kubelet::server::proxy_upgrade(
        stream,
        &host_port(&endpoint),
        &location,
        req.method.clone(),
        &req.headers,
        upgrade,
    )
    .await
    .map_err(|e| relayed(500, "", e.to_string(), None))
}

/// Escapes a path segment (object names are DNS labels, but a request may carry anything).
fn escape_path(s: &str) -> String {
    escape(s).replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(query: &[(&str, &str)]) -> Req {
        Req {
            method: Method::GET,
            path: "/api/v1/namespaces/default/pods/p/log".into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: Default::default(),
            body: Bytes::new(),
            user: super::super::authn::UserInfo::anonymous(),
            warnings: Default::default(),
            upgrade: None,
        }
    }

    #[test]
    fn log_params_read_and_forward_like_upstream() {
        let p = LogParams::from_req(
            &req(&[
                ("container", "c"),
                ("follow", "true"),
                ("tailLines", "3"),
                ("timestamps", "1"),
                ("sinceTime", "2024-05-01T10:00:00+02:00"),
                ("previous", "false"),
            ]),
            "p",
        )
        .unwrap();
        assert_eq!(p.container, "c");
        assert!(p.follow && p.timestamps && !p.previous);
        assert_eq!(
            p.kubelet_query(),
            "follow=true&sinceTime=2024-05-01T08%3A00%3A00Z&tailLines=3&timestamps=true"
        );
        let e = LogParams::from_req(&req(&[("tailLines", "-1"), ("limitBytes", "0")]), "p")
            .unwrap_err()
            .to_status();
        assert_eq!(e["code"], 422);
        assert_eq!(
            e["message"],
            "PodLogOptions \"p\" is invalid: [tailLines: Invalid value: -1: must be greater than or equal to 0, limitBytes: Invalid value: 0: must be greater than 0]"
        );
        let e = LogParams::from_req(
            &req(&[("sinceSeconds", "5"), ("sinceTime", "2024-05-01T10:00:00Z")]),
            "p",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("at most one of `sinceTime` or `sinceSeconds`")
        );
        assert_eq!(
            LogParams::from_req(&req(&[("tailLines", "x")]), "p")
                .unwrap_err()
                .code(),
            400
        );
    }

    #[test]
    fn containers_are_chosen_like_upstream() {
        let pod = |containers: Value, init: Value| json!({"metadata": {"name": "p"}, "spec": {"containers": containers, "initContainers": init}});
        let one = pod(json!([{"name": "a"}]), json!(null));
        assert_eq!(pick_container(&one, "").unwrap(), "a");
        let two = pod(
            json!([{"name": "a"}, {"name": "b"}]),
            json!([{"name": "i"}]),
        );
        assert_eq!(
            pick_container(&two, "").unwrap_err().to_string(),
            "a container name must be specified for pod p, choose one of: [i a b]"
        );
        assert_eq!(pick_container(&two, "i").unwrap(), "i");
        let e = pick_container(&two, "c").unwrap_err();
        assert_eq!(e.to_string(), "container c is not valid for pod p");
        assert_eq!(e.code(), 400);
    }

    #[test]
    fn a_node_on_this_host_is_reached_on_loopback() {
        let node = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "192.0.2.7"}, {"type": "Hostname", "address": "n1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12250}}}});
        let local = |a: &str| a == "192.0.2.7";
        assert_eq!(
            kubelet_endpoint(&node, None, local).unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 12250
            }
        );
        // Elsewhere: the preferred address type, and the default port when none is reported.
        let remote = json!({"status": {"addresses": [
            {"type": "InternalIP", "address": "192.0.2.8"}, {"type": "Hostname", "address": "n2"}]}});
        assert_eq!(
            kubelet_endpoint(&remote, None, |_| false).unwrap(),
            Endpoint {
                host: "n2".into(),
                port: 10250
            }
        );
        let e = kubelet_endpoint(&json!({}), None, |_| false).unwrap_err();
        assert_eq!(e.code(), 500);
        assert_eq!(
            e.to_string(),
            "no preferred addresses found; known addresses: []"
        );
        assert!(is_this_host("127.0.0.1") && is_this_host("localhost"));
    }

    #[test]
    fn kubelet_errors_become_upstream_statuses() {
        let s = kubelet_error(
            400,
            "container \"c\" in pod \"p\" is waiting to start: ContainerCreating",
            "pods/log",
            "p",
        )
        .to_status();
        assert_eq!(s["reason"], "BadRequest");
        assert_eq!(
            s["message"],
            "container \"c\" in pod \"p\" is waiting to start: ContainerCreating"
        );
        let s = kubelet_error(404, "pod \"p\" does not exist", "pods/log", "p").to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(
            s["message"],
            "the server could not find the requested resource ( pods/log p)"
        );
        assert_eq!(s["details"]["kind"], "pods/log");
        let s = kubelet_error(500, "boom", "pods/log", "p").to_status();
        assert_eq!(s["message"], "Internal error occurred: boom");
        let s = unreachable(
            "https://127.0.0.1:1/containerLogs/a/b/c",
            dial_error(
                "127.0.0.1:1",
                &std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            ),
        )
        .to_status();
        assert_eq!(s["code"], 500);
        assert!(s.get("reason").is_none(), "{s}");
        assert_eq!(
            s["message"],
            "Get \"https://127.0.0.1:1/containerLogs/a/b/c\": dial tcp 127.0.0.1:1: connect: connection refused"
        );
    }

    #[test]
    fn streaming_locations_are_upstreams() {
        let r = req(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi; exit 3"),
            ("container", "c"),
            ("stdout", "true"),
            ("stderr", "true"),
            ("stdin", "false"),
            ("tty", ""),
        ]);
        assert_eq!(
            remote_command_location(&r, "exec", "default", "web", "c"),
            "/exec/default/web/c?command=sh&command=-c&command=echo+hi%3B+exit+3&error=1&output=1&tty=1"
        );
        assert_eq!(
            remote_command_location(&r, "attach", "default", "web", "c"),
            "/attach/default/web/c?error=1&output=1&tty=1"
        );
        assert_eq!(
            remote_command_location(&req(&[]), "attach", "ns", "p", "c"),
            "/attach/ns/p/c"
        );
        assert_eq!(
            forward_ports(&req(&[("ports", "80,443"), ("ports", "8080")])).unwrap(),
            [80, 443, 8080]
        );
        let e = forward_ports(&req(&[("ports", "x")]))
            .unwrap_err()
            .to_status();
        assert_eq!(e["code"], 400);
        assert_eq!(
            e["message"],
            "cannot convert to []int32: strconv.ParseUint: parsing \"x\": invalid syntax"
        );
        assert!(forward_ports(&req(&[("ports", "70000")])).is_err());
    }

    #[test]
    fn queries_escape_like_go() {
        assert_eq!(escape("a b:c/d~"), "a+b%3Ac%2Fd~");
        assert_eq!(
            encode_query([("x", "1"), ("y", "a&b")].into_iter()),
            "x=1&y=a%26b"
        );
    }
}
