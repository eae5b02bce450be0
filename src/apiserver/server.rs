//! HTTPS serving: TLS (rustls, client certificates optional and verified against the client
//! CA, serving certificate reloaded when its files change), HTTP/1.1 and HTTP/2 (hyper),
//! request limits, authentication, and dispatch to discovery, health and the registry.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Response, StatusCode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::authn::{Authenticator, Credentials, Peer, UserInfo};
use super::authz::{Attributes, Authorizer};
use super::metrics::Metrics;
use super::status::ApiError;
use super::storage::Storage;
use super::{ApiServerError, Config, MAX_REQUEST_BYTES};

pub type Body = BoxBody<Bytes, Infallible>;

/// Shared by every request.
pub struct State {
    pub config: Config,
    pub storage: Storage,
    pub authn: Arc<Authenticator>,
    pub authorities: super::authn::Authorities,
    pub authz: Box<dyn Authorizer>,
    /// Roles, bindings and (Node mode) pods, for the RBAC and Node authorizers and the
    /// escalation check.
    pub rbac: Arc<super::rbac::Cache>,
    pub metrics: Metrics,
    /// Set once the bootstrap objects exist.
    pub ready: AtomicBool,
    inflight: Semaphore,
    mutating: Semaphore,
    /// Serialises ClusterIP/NodePort allocation (one API server per datastore).
    pub service_alloc: tokio::sync::Mutex<()>,
    pub namespaces: super::admission::NamespaceCache,
    pub priority_classes: super::admission::PriorityClassCache,
    pub sa_tokens: Option<super::tokens::ServiceAccountTokens>,
    /// One etcd watch per resource, shared by every API watch of it.
    pub watches: Arc<super::feed::Hub>,
    /// TLS for `pods/log`, `pods/exec`, `pods/attach`, `pods/portforward` and `nodes/proxy`
    /// connections to kubelets.
    pub kubelet: super::kubelet::KubeletClient,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// One parsed request, as handlers see it.
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub user: UserInfo,
    /// `Warning` headers for the response (unknown fields under `fieldValidation=Warn`).
    pub warnings: parking_lot::Mutex<Vec<String>>,
    /// Resolves to the client's connection once a `101 Switching Protocols` answer has gone
    /// out (HTTP/1.1 only; `pods/exec`, `pods/attach` and `pods/portforward` splice it).
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Req {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Upstream parses booleans case-insensitively (`watch=True` from the Python client).
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.param(key) {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "" | "true" | "1" | "t" => Ok(true),
                "false" | "0" | "f" => Ok(false),
                _ => Err(ApiError::BadRequest(format!(
                    "invalid value {v:?} for boolean parameter {key:?}"
                ))),
            },
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the client asked for a `meta.k8s.io` Table.
    pub fn wants_table(&self) -> bool {
        self.header("accept").is_some_and(|a| {
            a.split(',').next().is_some_and(|first| {
                let first = first.replace(' ', "");
                first.contains("as=Table") && first.contains("g=meta.k8s.io")
            })
        })
    }
}

pub fn json_response(code: u16, v: &Value) -> Response<Body> {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    bytes_response(code, "application/json", body)
}

pub fn bytes_response(code: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code(), &e.to_status())
}

/// The certificates of a PEM bundle.
pub fn read_cas(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, ApiServerError> {
    let err = |e: &dyn std::fmt::Display| ApiServerError::Tls(format!("{}: {e}", path.display()));
    CertificateDer::pem_file_iter(path)
        .map_err(|e| err(&e))?
        .map(|c| c.map_err(|e| err(&e)))
        .collect()
}

/// The client CA's and the front-proxy CA's certificates.
fn authorities(config: &Config) -> Result<super::authn::Authorities, ApiServerError> {
    let der = |p: &Option<PathBuf>| -> Result<Vec<Vec<u8>>, ApiServerError> {
        match p {
            Some(p) => Ok(read_cas(p)?.iter().map(|c| c.as_ref().to_vec()).collect()),
            None => Ok(Vec::new()),
        }
    };
    Ok(super::authn::Authorities {
        client: der(&config.client_ca_file)?,
        front_proxy: der(&config.requestheader_client_ca_file)?,
    })
}

fn tls_config(config: &Config) -> Result<rustls::ServerConfig, ApiServerError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiServerError::Tls(e.to_string()))?;
    let cas: Vec<&PathBuf> = [&config.client_ca_file, &config.requestheader_client_ca_file]
        .into_iter()
        .flatten()
        .collect();
    let builder = match cas.is_empty() {
        false => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in cas {
                for c in read_cas(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| ApiServerError::Tls(format!("{}: {e}", ca.display())))?;
                }
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| ApiServerError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        true => builder.with_no_client_auth(),
    };
    let resolver = crate::common::servingcert::ReloadingCert::new(
        &config.tls_cert_file,
        &config.tls_private_key_file,
    )
    .map_err(|e| ApiServerError::Tls(e.to_string()))?;
    let mut tls = builder.with_cert_resolver(Arc::new(resolver));
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

pub async fn run(config: Config) -> Result<(), ApiServerError> {
    let tls = TlsAcceptor::from(Arc::new(tls_config(&config)?));
    let kubelet = super::kubelet::KubeletClient::new(&config)?;
    let sa_tokens = match (
        &config.service_account_signing_key_file,
        &config.service_account_key_file,
    ) {
        (Some(sign), verify) => Some(super::tokens::ServiceAccountTokens::load(
            sign,
            verify.as_ref().unwrap_or(sign),
            &config.service_account_issuer,
        )?),
        (None, _) => None,
    };
    let addr = config.listen_addr();
    let storage =
        Storage::connect(&config.etcd)
            .await
            .map_err(|cause| ApiServerError::Datastore {
                servers: config.etcd.servers.join(","),
                cause,
            })?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|cause| ApiServerError::Listen { addr, cause })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let rbac = Arc::new(super::rbac::Cache::default());
    let state = Arc::new(State {
        authn: Authenticator::new(
            config.token_auth_file.clone(),
            config.basic_auth_file.clone(),
            config.request_header.clone(),
        ),
        authorities: authorities(&config)?,
        authz: super::authz::from_modes(&config.authorization_mode, &rbac),
        rbac,
        inflight: Semaphore::new(config.max_requests_inflight.max(1)),
        mutating: Semaphore::new(config.max_mutating_requests_inflight.max(1)),
        config,
        storage,
        metrics: Metrics::default(),
        ready: AtomicBool::new(false),
        service_alloc: tokio::sync::Mutex::new(()),
        namespaces: super::admission::namespace_cache(),
        priority_classes: super::admission::priority_class_cache(),
        sa_tokens,
        watches: Default::default(),
        kubelet,
        shutdown: stop_rx,
    });
    tokio::spawn(super::bootstrap_objects::ensure(state.clone()));
    tokio::spawn(super::admission::run_cache(state.clone()));
    // Large lists leave freed pages in glibc's arenas; give them back now and then.
    tokio::spawn(async {
        let mut every = tokio::time::interval(Duration::from_secs(30));
        loop {
            every.tick().await;
            crate::common::heap::trim();
        }
    });
    tracing::info!("API server listening on https://{addr}");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ApiServerError::Signals)?;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let tls = tls.clone();
                let state = state.clone();
                conns.spawn(serve_connection(tls, tcp, state));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Ends watches; plain requests get a short grace.
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

async fn serve_connection(tls: TlsAcceptor, tcp: tokio::net::TcpStream, state: Arc<State>) {
    let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
    else {
        return;
    };
    let peer: Option<Arc<Peer>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| state.authorities.classify(c.as_ref()))
        .map(Arc::new);
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(handle(state, req, peer).await) }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    // A client that never finishes its headers is dropped.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let _ = builder
        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// Splits and percent-decodes a query string (`+` is a space, as Go's url.ParseQuery).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// `%XX` unescaping; `+` is a space in query strings (Go's url.ParseQuery), not elsewhere.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
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

/// The bearer token of a request, if it sent one.
fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    let h = headers
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then_some(token.trim())
}

/// Paths anyone may read, as upstream's `system:public-info-viewer` allows.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/version" | "/version/" | "/healthz" | "/livez" | "/readyz"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

fn is_mutating(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

async fn handle(
    state: Arc<State>,
    req: hyper::Request<Incoming>,
    peer: Option<Arc<Peer>>,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let resp = handle_inner(&state, req, peer).await;
    state
        .metrics
        .observe(method.as_str(), resp.status().as_u16(), started.elapsed());
    resp
}

async fn handle_inner(
    state: &Arc<State>,
    req: hyper::Request<Incoming>,
    peer: Option<Arc<Peer>>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let user = state.authn.authenticate(&Credentials {
        authorization: parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        peer: peer.as_deref(),
        headers: Some(&parts.headers),
    });
    let user = match user {
        Some(u) => Some(u),
        None => match bearer(&parts.headers) {
            Some(token) => super::tokens::authenticate(state, token).await,
            None => None,
        },
    };
    let presented = parts.headers.contains_key(hyper::header::AUTHORIZATION);
    let user = match user {
        Some(u) => u,
        // Credentials that fail are a 401 even where anonymous would do (as upstream).
        None if is_public(&path) && !presented => UserInfo::anonymous(),
        None => return refuse(body, &ApiError::Unauthorized).await,
    };
    let user = match super::authz::impersonate(state.authz.as_ref(), user, &parts.headers) {
        Ok(u) => u,
        Err(e) => return refuse(body, &e).await,
    };

    // Upstream's max-in-flight filter: reject rather than queue without bound.
    let sem = if is_mutating(&parts.method) {
        &state.mutating
    } else {
        &state.inflight
    };
    let is_watch = query
        .iter()
        .any(|(k, v)| k == "watch" && !matches!(v.to_ascii_lowercase().as_str(), "false" | "0"))
        || path.contains("/watch/");
    // Health probes and watches do not count against the in-flight limits.
    let _permit = if is_watch || is_public(&path) {
        None
    } else {
        match sem.try_acquire() {
            Ok(p) => Some(p),
            Err(_) => {
                let e =
                    ApiError::TooManyRequests("Too many requests, please try again later.".into());
                return refuse(body, &e).await;
            }
        }
    };

    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let req = Req {
        method: parts.method,
        path,
        query,
        headers: parts.headers,
        body,
        user,
        warnings: Default::default(),
        upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
    };
    if is_watch {
        return route(state, req).await;
    }
    match tokio::time::timeout(state.config.request_timeout, route(state, req)).await {
        Ok(r) => r,
        Err(_) => error_response(&ApiError::Timeout(
            "request did not complete within requested timeout - context deadline exceeded".into(),
        )),
    }
}

/// Bytes of an oversized body read and dropped so the client sees the 413 (HTTP/2 clients
/// treat a reset stream as a transport error); beyond this the connection is dropped.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// An error answered before the body was wanted: the body is read and dropped first (up to
/// a bound), since HTTP/2 clients treat a reset stream as a transport failure.
async fn refuse(mut body: Incoming, e: &ApiError) -> Response<Body> {
    let drain = async {
        let mut total = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            total += frame.data_ref().map_or(0, |d| d.len());
            if total > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    error_response(e)
}

/// The request body, at most `MAX_REQUEST_BYTES` (413 beyond, after draining what was sent).
async fn read_body(mut body: Incoming) -> Result<Bytes, ApiError> {
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                total += data.len();
                if total > DRAIN_LIMIT {
                    break;
                }
                if total <= MAX_REQUEST_BYTES {
                    buf.extend_from_slice(&data);
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(30), read).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(ApiError::Timeout(
                "timed out reading the request body".into(),
            ));
        }
    }
    if total > MAX_REQUEST_BYTES {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

fn too_large() -> ApiError {
    ApiError::RequestEntityTooLarge(format!(
        "Request entity too large: limit is {MAX_REQUEST_BYTES}"
    ))
}

async fn route(state: &Arc<State>, req: Req) -> Response<Body> {
    let path = req.path.trim_end_matches('/').to_string();
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    if !path.starts_with("/api/") && !path.starts_with("/apis/") {
        if let Some(denied) = authorize_path(state, &req, &path) {
            return denied;
        }
        return match path.as_str() {
            "/version" => json_response(200, &version()),
            "/healthz" | "/livez" | "/readyz" => health(state, &req, &path).await,
            p if p.starts_with("/healthz/")
                || p.starts_with("/livez/")
                || p.starts_with("/readyz/") =>
            {
                health(state, &req, p).await
            }
            "/metrics" => bytes_response(
                200,
                "text/plain; version=0.0.4",
                state.metrics.render().into_bytes(),
            ),
            "/api" => super::discovery::api(&req, &state.config.server_address()),
            "/apis" => super::discovery::apis(&req),
            "/openapi/v3" => super::discovery::openapi_v3_root(),
            "/openapi/v2" => super::discovery::openapi_v2(&req),
            p if p.starts_with("/openapi/v3/") => super::discovery::openapi_v3_gv(&p[12..]),
            "/" => json_response(
                200,
                &json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/metrics", "/openapi/v3", "/readyz", "/version"]}),
            ),
            _ => not_found(),
        };
    }
    super::registry::handle(state, req, &path).await
}

/// Authorizes a non-resource request by its path (public paths need nothing); the refusal,
/// if any.
pub fn authorize_path(state: &State, req: &Req, path: &str) -> Option<Response<Body>> {
    if is_public(path) {
        return None;
    }
    let attrs = Attributes {
        verb: req.method.as_str().to_lowercase(),
        path: path.to_string(),
        resource_request: false,
        ..Default::default()
    };
    let d = state.authz.authorize(&req.user, &attrs);
    (!d.allowed).then(|| {
        error_response(&ApiError::Forbidden {
            message: format!(
                "forbidden: {}",
                super::authz::forbidden_message(&req.user, &attrs)
            ),
            details: None,
        })
    })
}

/// Upstream's answer for a path nothing serves.
pub fn not_found() -> Response<Body> {
    error_response(&ApiError::NotFound {
        message: "the server could not find the requested resource".into(),
        details: Some(super::status::Details::default()),
    })
}

fn version() -> Value {
    json!({
        "major": super::KUBE_MAJOR,
        "minor": super::KUBE_MINOR,
        "gitVersion": super::KUBE_GIT_VERSION,
        "gitCommit": option_env!("MK8S_GIT_COMMIT").unwrap_or("0000000000000000000000000000000000000000"),
        "gitTreeState": "clean",
        "buildDate": "2026-11-23T00:00:00Z",
        "goVersion": format!("rust (mk8s {})", env!("CARGO_PKG_VERSION")),
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, arch()),
    })
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `/healthz`, `/livez`, `/readyz` and their `?verbose` and per-check forms.
async fn health(state: &Arc<State>, req: &Req, path: &str) -> Response<Body> {
    let (base, only) = match path.split_once('/').map(|_| path[1..].split_once('/')) {
        Some(Some((b, c))) => (b, Some(c)),
        _ => (&path[1..], None),
    };
    let etcd_ok = tokio::time::timeout(Duration::from_secs(2), state.storage.revision())
        .await
        .is_ok_and(|r| r.is_ok());
    let mut checks: Vec<(&str, bool)> = vec![("ping", true), ("log", true), ("etcd", etcd_ok)];
    if base == "readyz" {
        checks.push(("informer-sync", true));
        checks.push((
            "poststarthook/bootstrap-objects",
            state.ready.load(Ordering::Relaxed),
        ));
        checks.push(("shutdown", !*state.shutdown.borrow()));
    }
    if let Some(c) = only {
        if c == "ping" {
            return bytes_response(200, "text/plain; charset=utf-8", b"ok".to_vec());
        }
        return match checks.iter().find(|(n, _)| *n == c) {
            Some((_, true)) => bytes_response(200, "text/plain; charset=utf-8", b"ok".to_vec()),
            Some((n, false)) => bytes_response(
                500,
                "text/plain; charset=utf-8",
                format!("internal server error: {n} check failed\n").into_bytes(),
            ),
            None => not_found(),
        };
    }
    let ok = checks.iter().all(|(_, ok)| *ok);
    let verbose = req.param("verbose").is_some();
    if !verbose && ok {
        return bytes_response(200, "text/plain; charset=utf-8", b"ok".to_vec());
    }
    let mut text = String::new();
    for (n, good) in &checks {
        if *good {
            text.push_str(&format!("[+]{n} ok\n"));
        } else {
            text.push_str(&format!("[-]{n} failed: reason withheld\n"));
        }
    }
    if ok {
        text.push_str(&format!("{base} check passed\n"));
        bytes_response(200, "text/plain; charset=utf-8", text.into_bytes())
    } else {
        text.push_str(&format!("{base} check failed\n"));
        bytes_response(500, "text/plain; charset=utf-8", text.into_bytes())
    }
}
