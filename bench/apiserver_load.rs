//! Load generator for `bench/apiserver.sh`: drives the API server over HTTPS (admin client
//! certificate, one keep-alive HTTP/1.1 connection a client) and, for the anchor, the same
//! datastore with raw etcd puts. Prints one `name value unit` line per figure.
//!
//! Usage: apiserver_load <phase> <url-or-endpoint> <certs-dir> [n]
//! Phases: raw32 (etcd puts of 1 KiB, 32 clients), create32 (ConfigMaps of 1 KiB through the
//! API, 32 clients: rate, p50, p99), fill N (N ConfigMaps in namespace `fill`), list (GET of
//! namespace `fill`, p50 of 5), watch100 (event delivery p99 to 100 watchers), bindings N
//! (N RoleBindings of `system:aggregate-to-view` in namespace `bench` to other users, then
//! `system:aggregate-to-edit` (what `edit` aggregates; no controller manager runs here) for
//! `system:kube-proxy`), sar (SubjectAccessReview round trips for that user, p50/p99).
//! `BENCH_CLIENT=proxy` makes create32 send its creates with `proxy.crt` instead of
//! `admin.crt`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const SECONDS: u64 = 5;
const CLIENTS: usize = 32;

fn tls(certs: &str) -> Arc<rustls::ClientConfig> {
    tls_as(certs, "admin")
}

fn tls_as(certs: &str, who: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(format!("{certs}/ca.crt")).expect("ca") {
        roots.add(c.expect("ca cert")).expect("add ca");
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(format!("{certs}/{who}.crt"))
            .expect("client certificate")
            .map(|c| c.expect("cert"))
            .collect();
    let key = PrivateKeyDer::from_pem_file(format!("{certs}/{who}.key")).expect("client key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client cert"),
    )
}

async fn conn(url: &str, tls: Arc<rustls::ClientConfig>) -> SendRequest<Full<Bytes>> {
    let addr = url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("tls");
    let (sender, c) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(c);
    sender
}

async fn request(
    s: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, Bytes) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    s.ready().await.expect("connection");
    let resp = s.send_request(req).await.expect("send");
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (code, body)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn cm(name: &str, ns: &str, payload: &str) -> Vec<u8> {
    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns}, "data": {"v": payload}})
    .to_string()
    .into_bytes()
}

async fn ensure_ns(url: &str, tls: Arc<rustls::ClientConfig>, ns: &str) {
    let mut s = conn(url, tls).await;
    let body =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    let (code, _) = request(
        &mut s,
        "POST",
        "/api/v1/namespaces",
        body.to_string().into_bytes(),
    )
    .await;
    assert!(code == 201 || code == 409, "namespace {ns}: {code}");
}

async fn create32(url: &str, certs: &str) {
    ensure_ns(url, tls(certs), "bench").await;
    let who = std::env::var("BENCH_CLIENT").unwrap_or_else(|_| "admin".into());
    let tls = tls_as(certs, &who);
    let stop = Arc::new(AtomicBool::new(false));
    let payload = "x".repeat(1024);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (url, tls, stop, payload) =
            (url.to_string(), tls.clone(), stop.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = conn(&url, tls).await;
            let mut lat = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (code, _) = request(
                    &mut s,
                    "POST",
                    "/api/v1/namespaces/bench/configmaps",
                    cm(&format!("c{c}-{n}"), "bench", &payload),
                )
                .await;
                assert_eq!(code, 201);
                lat.push(t.elapsed());
                n += 1;
            }
            lat
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    println!("api_creates_32 {:.0} creates/s", all.len() as f64 / secs);
    println!("create_p50 {:.2} ms", percentile(&all, 0.5));
    println!("create_p99 {:.2} ms", percentile(&all, 0.99));
}

async fn raw32(endpoint: &str, certs: &str) {
    let read = |f: &str| std::fs::read(format!("{certs}/{f}")).expect("read cert");
    let opts = etcd_client::ConnectOptions::new().with_tls(
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read("ca.crt")))
            .identity(etcd_client::Identity::from_pem(
                read("apiserver-etcd-client.crt"),
                read("apiserver-etcd-client.key"),
            ))
            .domain_name("localhost"),
    );
    // The API server's own shape: one client connection shared by every request.
    let client = etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .expect("connect");
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let value = vec![b'x'; 1024 + 150];
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut kv = client.kv_client();
            let (count, stop, value) = (count.clone(), stop.clone(), value.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    kv.put(format!("/bench/raw/{c}/{n}"), value.clone(), None)
                        .await
                        .expect("put");
                    count.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client");
    }
    println!(
        "raw_puts_32 {:.0} puts/s",
        count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    );
}

async fn fill(url: &str, certs: &str, n: usize) {
    let tls = tls(certs);
    ensure_ns(url, tls.clone(), "fill").await;
    let next = Arc::new(AtomicU64::new(0));
    let payload = "x".repeat(1024);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, tls, next, payload) =
                (url.to_string(), tls.clone(), next.clone(), payload.clone());
            tokio::spawn(async move {
                let mut s = conn(&url, tls).await;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n {
                        return;
                    }
                    let (code, _) = request(
                        &mut s,
                        "POST",
                        "/api/v1/namespaces/fill/configmaps",
                        cm(&format!("f{i:06}"), "fill", &payload),
                    )
                    .await;
                    assert_eq!(code, 201);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
    println!("fill_{n} {:.1} s", start.elapsed().as_secs_f64());
}

async fn list(url: &str, certs: &str) {
    let mut s = conn(url, tls(certs)).await;
    let mut lat = Vec::new();
    let mut items = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (code, body) = request(
            &mut s,
            "GET",
            "/api/v1/namespaces/fill/configmaps",
            Vec::new(),
        )
        .await;
        lat.push(t.elapsed());
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("list json");
        items = v["items"].as_array().map(Vec::len).unwrap_or(0);
    }
    lat.sort();
    println!("list_{items}_p50 {:.1} ms", percentile(&lat, 0.5));
}

/// 100 watchers of namespace `watch`; 200 creates 20 ms apart; delivery latency p99.
async fn watch100(url: &str, certs: &str) {
    let tls = tls(certs);
    ensure_ns(url, tls.clone(), "watch").await;
    let start = Instant::now();
    let seen: Arc<parking_lot::Mutex<Vec<Duration>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (url, tls, seen) = (url.to_string(), tls.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = conn(&url, tls).await;
            let req = hyper::Request::get(
                "/api/v1/namespaces/watch/configmaps?watch=true&timeoutSeconds=30",
            )
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .expect("request");
            let mut body = s.send_request(req).await.expect("watch").into_body();
            let mut buf = Vec::new();
            let mut got = 0;
            while got < 200 {
                let Some(Ok(frame)) = body.frame().await else {
                    break;
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let now = start.elapsed();
                    let v: serde_json::Value = serde_json::from_slice(&line).expect("event");
                    let sent: u64 = v["object"]["data"]["sent"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    seen.lock()
                        .push(now.saturating_sub(Duration::from_micros(sent)));
                    got += 1;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut s = conn(url, tls).await;
    for i in 0..200 {
        let sent = start.elapsed().as_micros().to_string();
        let (code, _) = request(
            &mut s,
            "POST",
            "/api/v1/namespaces/watch/configmaps",
            serde_json::json!({"metadata": {"name": format!("w{i}")}, "data": {"sent": sent}})
                .to_string()
                .into_bytes(),
        )
        .await;
        assert_eq!(code, 201);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let mut all = seen.lock().clone();
    all.sort();
    println!("watch_100_events {} events", all.len());
    println!("watch_100_p99 {:.2} ms", percentile(&all, 0.99));
}

/// N RoleBindings of `view` to other users in namespace `bench`, then the one that lets
/// `system:kube-proxy` write there.
async fn bindings(url: &str, certs: &str, n: usize) {
    let tls = tls(certs);
    ensure_ns(url, tls.clone(), "bench").await;
    let mut s = conn(url, tls).await;
    let binding = |name: &str, role: &str, user: &str| {
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": "bench"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
        .to_string()
        .into_bytes()
    };
    let path = "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings";
    for i in 0..n {
        let (code, _) = request(
            &mut s,
            "POST",
            path,
            binding(
                &format!("rb-{i}"),
                "system:aggregate-to-view",
                &format!("user-{i}"),
            ),
        )
        .await;
        assert_eq!(code, 201, "rolebinding {i}");
    }
    let (code, _) = request(
        &mut s,
        "POST",
        path,
        binding(
            "bench-writer",
            "system:aggregate-to-edit",
            "system:kube-proxy",
        ),
    )
    .await;
    assert_eq!(code, 201, "bench-writer");
    // The authorizer's caches follow by watch; the first SAR that says yes proves it.
    let t = Instant::now();
    while !sar_once(&mut s).await {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "binding never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("rolebindings {} bindings", n + 1);
}

async fn sar_once(s: &mut SendRequest<Full<Bytes>>) -> bool {
    let body = serde_json::json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "system:kube-proxy", "groups": ["system:authenticated"],
                 "resourceAttributes": {"verb": "create", "resource": "configmaps", "namespace": "bench"}}});
    let (code, out) = request(
        s,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 201, "subjectaccessreview");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("review");
    v["status"]["allowed"] == true
}

/// Sequential SubjectAccessReviews: the decision plus one HTTPS round trip each.
async fn sar(url: &str, certs: &str) {
    let mut s = conn(url, tls(certs)).await;
    let mut lat = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        assert!(sar_once(&mut s).await, "not allowed");
        lat.push(t.elapsed());
    }
    lat.sort();
    println!("sar_p50 {:.3} ms", percentile(&lat, 0.5));
    println!("sar_p99 {:.3} ms", percentile(&lat, 0.99));
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["raw32", ep, certs] => rt.block_on(raw32(ep, certs)),
        ["create32", url, certs] => rt.block_on(create32(url, certs)),
        ["fill", url, certs, n] => rt.block_on(fill(url, certs, n.parse().expect("n"))),
        ["list", url, certs] => rt.block_on(list(url, certs)),
        ["watch100", url, certs] => rt.block_on(watch100(url, certs)),
        ["bindings", url, certs, n] => rt.block_on(bindings(url, certs, n.parse().expect("n"))),
        ["sar", url, certs] => rt.block_on(sar(url, certs)),
        _ => {
            eprintln!(
                "usage: apiserver_load raw32|create32|fill N|list|watch100|bindings N|sar <url> <certs-dir> [n]"
            );
            std::process::exit(2);
        }
    }
}
