//! A component's HTTPS endpoint (10257, 10259): `/healthz`, `/livez`, `/readyz` for
//! anyone (upstream's `--authorization-always-allow-paths`), `/metrics` for callers the API
//! server authenticates and authorizes ([`super::auth`]), nothing else.
//!
//! Serves the configured pair, else the API server's (either re-read when its files change),
//! else a self-signed certificate made in memory at start (upstream writes its self-signed pair
//! to `--cert-dir`; we keep nothing).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::ComponentError;
use super::auth::{Delegated, Verdict};

/// Renders `/metrics` in Prometheus text format.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

const HEALTH_PATHS: &[&str] = &["/healthz", "/livez", "/readyz"];

fn tls_err(what: &std::path::Path, e: impl std::fmt::Display) -> ComponentError {
    ComponentError::Tls(format!("{}: {e}", what.display()))
}

/// The certificates of a PEM bundle.
pub fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, ComponentError> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(path, e))?
        .map(|c| c.map_err(|e| tls_err(path, e)))
        .collect()
}

fn self_signed() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ComponentError> {
    let host = crate::common::host::node_name();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), host];
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| ComponentError::Tls(format!("cannot make a self-signed certificate: {e}")))?;
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .map_err(|e| ComponentError::Tls(format!("self-signed key: {e}")))?;
    Ok((vec![ck.cert.der().clone()], key))
}

/// Server TLS: the serving pair, and client certificates verified against `--client-ca-file`
/// when one is set (optional: health checks come without one).
pub fn tls_config(
    pair: Option<(std::path::PathBuf, std::path::PathBuf)>,
    client_ca: Option<&std::path::Path>,
) -> Result<rustls::ServerConfig, ComponentError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ComponentError::Tls(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| tls_err(ca, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| ComponentError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut tls = match pair {
        // Re-read when renewed: `refresh-certs --cert server.crt` and the supervisor's
        // renewals need no restart.
        Some((cert, key)) => {
            let resolver = crate::common::servingcert::ReloadingCert::new(&cert, &key)
                .map_err(|e| ComponentError::Tls(e.to_string()))?;
            builder.with_cert_resolver(Arc::new(resolver))
        }
        None => {
            tracing::info!("no serving certificate configured; using a self-signed one");
            let (chain, key) = self_signed()?;
            builder
                .with_single_cert(chain, key)
                .map_err(|e| ComponentError::Tls(e.to_string()))?
        }
    };
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

type Body = Full<Bytes>;

fn text(code: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    peer: Option<Arc<CertificateDer<'static>>>,
    metrics: Render,
    auth: Arc<Delegated>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let plain = "text/plain; charset=utf-8";
    if HEALTH_PATHS.contains(&path.as_str()) {
        return text(StatusCode::OK, plain, "ok".into());
    }
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let verb = match *req.method() {
        hyper::Method::GET | hyper::Method::HEAD => "get",
        hyper::Method::POST => "post",
        hyper::Method::PUT => "put",
        hyper::Method::PATCH => "patch",
        hyper::Method::DELETE => "delete",
        _ => "unknown",
    };
    match auth
        .check(
            bearer.as_deref(),
            peer.as_deref(),
            &super::auth::Access::Path {
                verb: verb.to_string(),
                path: path.clone(),
            },
        )
        .await
    {
        Verdict::Unauthenticated => text(StatusCode::UNAUTHORIZED, plain, "Unauthorized\n".into()),
        Verdict::Forbidden(user) => text(
            StatusCode::FORBIDDEN,
            plain,
            format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\"\n"),
        ),
        Verdict::Unavailable(why) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            plain,
            format!("Internal Server Error: {why}\n"),
        ),
        Verdict::Allowed if path == "/metrics" && verb == "get" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(),
        ),
        Verdict::Allowed => text(StatusCode::NOT_FOUND, plain, "404 page not found\n".into()),
    }
}

async fn serve_connection(
    tls: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    metrics: Render,
    auth: Arc<Delegated>,
) {
    let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
    else {
        return;
    };
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| Arc::new(c.clone().into_owned()));
    let service = hyper::service::service_fn(move |req| {
        let (peer, metrics, auth) = (peer.clone(), metrics.clone(), auth.clone());
        async move { Ok::<_, Infallible>(handle(req, peer, metrics, auth).await) }
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let _ = builder
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await;
}

/// Accepts connections until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
    metrics: Render,
    auth: Arc<Delegated>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tls = TlsAcceptor::from(Arc::new(tls));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    // Out of descriptors or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                conns.spawn(serve_connection(tls.clone(), tcp, metrics.clone(), auth.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// GET `path` over TLS from `addr` without verifying the server: (status, body).
pub async fn get_insecure(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use http_body_util::BodyExt;
    let tls = crate::common::insecure_tls::client_config(&[]).ok()?;
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", addr.ip().to_string())
        .body(http_body_util::Empty::<Bytes>::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((code, String::from_utf8_lossy(&body).into_owned()))
}
