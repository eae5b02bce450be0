//! The `services/proxy` and `pods/proxy` subresources: the API server forwards an HTTP(S)
//! request to a ready endpoint of a Service or to a Pod, as upstream's `ProxyREST` does
//! (`…/services/[https:]<name>[:<port>]/proxy/<path>`, `…/pods/[https:]<name>[:<port>]/proxy/<path>`).
//! The request has already been authenticated and authorized for the subresource; its method,
//! query, body and headers go on (minus credentials and hop-by-hop framing), the backend's
//! status, headers and body come back, and WebSocket upgrades are spliced.
//!
//! Reads Services, Endpoints and Pods; writes nothing. The backend is dialled directly (pod
//! IPs are on this machine's bridge); HTTPS backends are not verified, as upstream's proxy
//! transport does not verify them either.

use std::net::IpAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, LOCATION};
use hyper::{Method, Response, StatusCode};
use rand::Rng;
use serde_json::Value;

use super::registry::{self, ApiResult, Target};
use super::resources;
use super::server::{Req, State};
use super::status::ApiError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a proxied request goes.
#[derive(Debug, PartialEq)]
struct Location {
    https: bool,
    host: String,
    port: u16,
}

impl Location {
    fn host_port(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Upstream's `SplitSchemeNamePort`: `name`, `name:port` or `scheme:name:port`, the scheme
/// empty, `http` or `https`.
fn split_scheme_name_port(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    if name.is_empty() || !matches!(scheme, "" | "http" | "https") {
        return None;
    }
    Some((scheme, name, port))
}

fn unavailable(message: String) -> ApiError {
    ApiError::Relayed {
        code: 503,
        reason: "ServiceUnavailable",
        message,
        details: None,
    }
}

fn target(plural: &str, namespace: &str, name: &str) -> Result<Target, ApiError> {
    Ok(Target {
        res: resources::find("", "v1", plural)
            .ok_or_else(|| ApiError::Internal(format!("no {plural} resource")))?,
        namespace: Some(namespace.to_string()),
        name: Some(name.to_string()),
        sub: None,
    })
}

/// Upstream's service `ResourceLocation`: a port number names the Service port it is, an
/// empty port the unnamed one; then a random ready address of a random subset carrying it.
fn service_location(
    service: &Value,
    endpoints: Option<&Value>,
    id: &str,
    https: bool,
    port: &str,
) -> Result<Location, ApiError> {
    let name = registry::meta_str(service, "name");
    let mut port_name = port.to_string();
    if let Ok(n) = port.parse::<i64>() {
        let ports = service["spec"]["ports"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        match ports.iter().find(|p| p["port"].as_i64() == Some(n)) {
            Some(p) => port_name = p["name"].as_str().unwrap_or("").to_string(),
            None => {
                return Err(unavailable(format!(
                    "no service port {n} found for service {name:?}"
                )));
            }
        }
    }
    let subsets = endpoints
        .and_then(|e| e["subsets"].as_array())
        .cloned()
        .unwrap_or_default();
    if subsets.is_empty() {
        return Err(unavailable(format!(
            "no endpoints available for service {name:?}"
        )));
    }
    let mut rng = rand::rng();
    let seed = rng.random_range(0..subsets.len());
    for i in 0..subsets.len() {
        let ss = &subsets[(seed + i) % subsets.len()];
        let addrs = ss["addresses"].as_array().cloned().unwrap_or_default();
        if addrs.is_empty() {
            continue;
        }
        let ports = ss["ports"].as_array().cloned().unwrap_or_default();
        let Some(p) = ports
            .iter()
            .find(|p| p["name"].as_str().unwrap_or("") == port_name)
        else {
            continue;
        };
        let Some(number) = p["port"].as_u64().and_then(|n| u16::try_from(n).ok()) else {
            continue;
        };
        let a = &addrs[rng.random_range(0..addrs.len())];
        if let Some(ip) = a["ip"].as_str() {
            return Ok(Location {
                https,
                host: ip.to_string(),
                port: number,
            });
        }
    }
    Err(unavailable(format!(
        "no endpoints available for service {id:?}"
    )))
}

/// Upstream's pod `ResourceLocation`: the given port, else the first declared container
/// port, else 80; the pod IP must be one a proxy may dial.
fn pod_location(pod: &Value, https: bool, port: &str) -> Result<Location, ApiError> {
    let mut port = port.to_string();
    if port.is_empty() {
        let first = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|c| c["ports"][0]["containerPort"].as_u64());
        if let Some(p) = first {
            port = p.to_string();
        }
    }
    let ip = pod["status"]["podIP"].as_str().unwrap_or("");
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("address {ip:?} is not a valid IP address")))?;
    if addr.is_loopback() || addr.is_unspecified() || addr.is_multicast() || is_link_local(addr) {
        return Err(ApiError::BadRequest(format!(
            "address not allowed: {ip} is not a proxyable address"
        )));
    }
    let number = if port.is_empty() {
        80
    } else {
        port.parse::<u16>()
            .map_err(|_| ApiError::BadRequest(format!("invalid port {port:?}")))?
    };
    Ok(Location {
        https,
        host: ip.to_string(),
        port: number,
    })
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// `…/services/{id}/proxy[/path]`.
pub async fn service_proxy(state: &State, req: &Req, t: &Target) -> ApiResult {
    let id = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("");
    let (scheme, name, port) = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid service request {id:?}")))?;
    let (service, _) = registry::current(state, &target("services", ns, name)?).await?;
    let endpoints = match registry::current(state, &target("endpoints", ns, name)?).await {
        Ok((e, _)) => Some(e),
        Err(ApiError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let loc = service_location(&service, endpoints.as_ref(), id, scheme == "https", port)?;
    forward(state, req, "services", ns, id, &loc).await
}

/// `…/pods/{id}/proxy[/path]`.
pub async fn pod_proxy(state: &State, req: &Req, t: &Target) -> ApiResult {
    let id = t.name.as_deref().unwrap_or("");
    let ns = t.namespace.as_deref().unwrap_or("");
    let (scheme, name, port) = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid pod request {id:?}")))?;
    let (pod, _) = registry::current(state, &target("pods", ns, name)?).await?;
    let loc = pod_location(&pod, scheme == "https", port)?;
    forward(state, req, "pods", ns, id, &loc).await
}

/// Both halves of a backend connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn connect(state: &State, loc: &Location) -> Result<Box<dyn Io>, String> {
    let host_port = loc.host_port();
    let tcp = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(host_port.as_str()),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(super::kubelet::dial_error(&host_port, &e)),
        Err(_) => return Err(format!("dial tcp {host_port}: i/o timeout")),
    };
    let _ = tcp.set_nodelay(true);
    if !loc.https {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(loc.host.clone())
        .map_err(|e| format!("invalid server name: {e}"))?;
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_rustls::TlsConnector::from(state.kubelet.backends.clone()).connect(name, tcp),
    )
    .await
    {
        Ok(Ok(s)) => Ok(Box::new(s)),
        Ok(Err(e)) => Err(format!("tls: {e}")),
        Err(_) => Err("net/http: TLS handshake timeout".into()),
    }
}

/// The path after `/proxy` (empty when the request named none), as the client sent it.
fn proxied_path<'a>(req: &'a Req, plural: &str, ns: &str, id: &str) -> &'a str {
    let marker = format!("/namespaces/{ns}/{plural}/{id}/proxy");
    match req.path.find(&marker) {
        Some(i) => &req.path[i + marker.len()..],
        None => "",
    }
}

fn query_string(req: &Req) -> String {
    let pairs: Vec<String> = req
        .query
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                super::kubelet::escape(k)
            } else {
                format!(
                    "{}={}",
                    super::kubelet::escape(k),
                    super::kubelet::escape(v)
                )
            }
        })
        .collect();
    pairs.join("&")
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), or carry the client's
/// CORS grants, which the proxied server does not get to set (upstream strips them).
fn end_to_end(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
            | "access-control-allow-credentials"
            | "access-control-allow-headers"
            | "access-control-allow-methods"
            | "access-control-allow-origin"
    )
}

async fn forward(
    state: &State,
    req: &Req,
    plural: &str,
    ns: &str,
    id: &str,
    loc: &Location,
) -> ApiResult {
    let rest = proxied_path(req, plural, ns, id);
    let query = query_string(req);
    let upgrade = crate::kubelet::server::is_upgrade_request(&req.headers);
    // An empty path is redirected to `…/proxy/` (kubernetes/kubernetes#4958), as upstream.
    if rest.is_empty() && !upgrade && matches!(req.method, Method::GET | Method::HEAD) {
        let location = match query.as_str() {
            "" => format!("{}/", req.path),
            q => format!("{}/?{q}", req.path),
        };
        let mut r = Response::new(http_body_util::Empty::new().boxed());
        *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(LOCATION, v);
        }
        return Ok(r);
    }
    let path = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match query.as_str() {
        "" => path.to_string(),
        q => format!("{path}?{q}"),
    };
    let host_port = loc.host_port();
    let io = connect(state, loc)
        .await
        .map_err(|why| unavailable(format!("error trying to reach service: {why}")))?;
    if upgrade {
        let Some(client) = &req.upgrade else {
            return Err(ApiError::BadRequest("Upgrade request required".into()));
        };
        return crate::kubelet::server::proxy_upgrade(
            io,
            &host_port,
            &path_and_query,
            req.method.clone(),
            &req.headers,
            client.clone(),
        )
        .await
        .map_err(|e| unavailable(format!("error trying to reach service: {e}")));
    }
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| unavailable(format!("error trying to reach service: {e}")))?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(req.method.clone())
        .uri(path_and_query.as_str());
    for (k, v) in &req.headers {
        if crate::kubelet::server::forwardable(k) && end_to_end(k) {
            builder = builder.header(k, v);
        }
    }
    // What upstream's rewriting transport tells the backend about the original request.
    builder = builder
        .header(hyper::header::HOST, host_port.as_str())
        .header("x-forwarded-uri", req.path.as_str())
        .header("x-forwarded-proto", "https");
    if let Some(h) = req.headers.get(hyper::header::HOST) {
        builder = builder.header("x-forwarded-host", h);
    }
    let request = builder
        .body(Full::new(req.body.clone()))
        .map_err(|e| ApiError::BadRequest(format!("cannot proxy this request: {e}")))?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| unavailable(format!("error trying to reach service: {e}")))?;
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(super::kubelet::relay(body));
    *out.status_mut() = parts.status;
    for (k, v) in &parts.headers {
        if end_to_end(k) {
            out.headers_mut().append(k, v.clone());
        }
    }
    // A redirect to the backend's own root stays inside the proxy, as upstream rewrites it.
    if let Some(l) = parts.headers.get(LOCATION).and_then(|v| v.to_str().ok())
        && l.starts_with('/')
    {
        let prefix = req.path.strip_suffix(rest).unwrap_or(&req.path);
        if let Ok(v) = HeaderValue::from_str(&format!("{prefix}{l}")) {
            out.headers_mut().insert(LOCATION, v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_split_like_upstream() {
        assert_eq!(split_scheme_name_port("web"), Some(("", "web", "")));
        assert_eq!(split_scheme_name_port("web:80"), Some(("", "web", "80")));
        assert_eq!(
            split_scheme_name_port("https:web:443"),
            Some(("https", "web", "443"))
        );
        assert_eq!(
            split_scheme_name_port("https:web:"),
            Some(("https", "web", ""))
        );
        assert_eq!(split_scheme_name_port("ftp:web:21"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
    }

    fn svc() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"ports": [
            {"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]}})
    }

    fn eps() -> Value {
        json!({"subsets": [{"addresses": [{"ip": "10.1.0.7"}],
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9091}]}]})
    }

    #[test]
    fn service_ports_resolve_by_number_or_name() {
        let l = service_location(&svc(), Some(&eps()), "web:80", false, "80").unwrap();
        assert_eq!((l.host.as_str(), l.port), ("10.1.0.7", 8080));
        let l = service_location(&svc(), Some(&eps()), "web:metrics", true, "metrics").unwrap();
        assert_eq!((l.port, l.https), (9091, true));
        let e = service_location(&svc(), Some(&eps()), "web:81", false, "81").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no service port 81 found for service \"web\""
        );
        let e = service_location(&svc(), None, "web", false, "").unwrap_err();
        assert_eq!(e.to_string(), "no endpoints available for service \"web\"");
        // No unnamed port: the request names none that exists.
        let e = service_location(&svc(), Some(&eps()), "web", false, "").unwrap_err();
        assert_eq!(e.to_string(), "no endpoints available for service \"web\"");
    }

    #[test]
    fn pods_default_to_their_first_container_port() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "ports": [{"containerPort": 8080}]}]},
            "status": {"podIP": "10.1.0.9"}});
        assert_eq!(pod_location(&pod, false, "").unwrap().port, 8080);
        assert_eq!(pod_location(&pod, false, "81").unwrap().port, 81);
        let bare =
            json!({"spec": {"containers": [{"name": "a"}]}, "status": {"podIP": "10.1.0.9"}});
        assert_eq!(pod_location(&bare, false, "").unwrap().port, 80);
        let pending = json!({"spec": {"containers": []}, "status": {}});
        assert!(matches!(
            pod_location(&pending, false, ""),
            Err(ApiError::BadRequest(_))
        ));
        let lo = json!({"spec": {"containers": []}, "status": {"podIP": "127.0.0.1"}});
        assert!(matches!(
            pod_location(&lo, false, ""),
            Err(ApiError::BadRequest(_))
        ));
    }
}
