//! The proxy's plain-HTTP endpoints, as upstream serves them: `/healthz` and `/livez` on the
//! health port (200 while the rules were synced within two sync periods, else 503, with
//! upstream's JSON body), and `/metrics` (Prometheus text) plus the same `/healthz` on the
//! metrics port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upstream's `kubeproxy_sync_proxy_rules_duration_seconds` buckets: 1 ms doubling, 15 of them.
const BUCKETS: usize = 15;

#[derive(Default)]
struct Synced {
    last: Option<(Instant, jiff::Timestamp)>,
    last_duration: Duration,
    /// Cumulative histogram counts, one per bucket (`le = 0.001 × 2^i`).
    buckets: [u64; BUCKETS],
    count: u64,
    sum: f64,
    failures: u64,
    ports: usize,
    endpoints: usize,
}

/// What the sync loop reports and the endpoints show.
pub struct State {
    sync_period: Duration,
    inner: Mutex<Synced>,
}

impl State {
    pub fn new(sync_period: Duration) -> Self {
        State {
            sync_period,
            inner: Mutex::new(Synced::default()),
        }
    }

    pub fn synced(&self, took: Duration, ports: usize, endpoints: usize) {
        let mut s = self.inner.lock();
        s.last = Some((Instant::now(), jiff::Timestamp::now()));
        s.last_duration = took;
        let secs = took.as_secs_f64();
        for (i, b) in s.buckets.iter_mut().enumerate() {
            if secs <= 0.001 * f64::from(1u32 << i) {
                *b += 1;
            }
        }
        s.count += 1;
        s.sum += secs;
        s.ports = ports;
        s.endpoints = endpoints;
    }

    pub fn failed(&self) {
        self.inner.lock().failures += 1;
    }

    /// Upstream's health: synced at least once, and not longer ago than two periods.
    fn health(&self) -> (StatusCode, String) {
        let s = self.inner.lock();
        let now = jiff::Timestamp::now();
        let (healthy, last) = match s.last {
            Some((at, ts)) => (at.elapsed() <= self.sync_period * 2, ts.to_string()),
            None => (false, String::new()),
        };
        let body = serde_json::json!({
            "lastUpdated": last,
            "currentTime": now.to_string(),
            "nodeEligible": true,
        })
        .to_string();
        let code = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, body)
    }

    fn metrics(&self) -> String {
        let s = self.inner.lock();
        let mut out = String::new();
        out.push_str("# HELP kubeproxy_sync_proxy_rules_duration_seconds SyncProxyRules latency in seconds\n");
        out.push_str("# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram\n");
        for (i, n) in s.buckets.iter().enumerate() {
            out.push_str(&format!(
                "kubeproxy_sync_proxy_rules_duration_seconds_bucket{{le=\"{}\"}} {n}\n",
                0.001 * f64::from(1u32 << i)
            ));
        }
        out.push_str(&format!(
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{{le=\"+Inf\"}} {}\n",
            s.count
        ));
        out.push_str(&format!(
            "kubeproxy_sync_proxy_rules_duration_seconds_sum {}\n",
            s.sum
        ));
        out.push_str(&format!(
            "kubeproxy_sync_proxy_rules_duration_seconds_count {}\n",
            s.count
        ));
        out.push_str("# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time proxy rules were successfully synced\n");
        out.push_str("# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge\n");
        let last = s.last.map(|(_, ts)| ts.as_millisecond() as f64 / 1000.0);
        out.push_str(&format!(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds {}\n",
            last.unwrap_or(0.0)
        ));
        out.push_str("# HELP kubeproxy_sync_proxy_rules_nftables_sync_failures_total Cumulative proxy nftables sync failures\n");
        out.push_str("# TYPE kubeproxy_sync_proxy_rules_nftables_sync_failures_total counter\n");
        out.push_str(&format!(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures_total {}\n",
            s.failures
        ));
        out.push_str("# HELP mk8s_proxy_last_sync_duration_seconds Duration of the last successful sync (rules built and applied)\n");
        out.push_str("# TYPE mk8s_proxy_last_sync_duration_seconds gauge\n");
        out.push_str(&format!(
            "mk8s_proxy_last_sync_duration_seconds {}\n",
            s.last_duration.as_secs_f64()
        ));
        out.push_str("# HELP mk8s_proxy_service_ports Service ports in the last synced ruleset\n");
        out.push_str("# TYPE mk8s_proxy_service_ports gauge\n");
        out.push_str(&format!("mk8s_proxy_service_ports {}\n", s.ports));
        out.push_str("# HELP mk8s_proxy_endpoints Endpoints in the last synced ruleset\n");
        out.push_str("# TYPE mk8s_proxy_endpoints gauge\n");
        out.push_str(&format!("mk8s_proxy_endpoints {}\n", s.endpoints));
        out
    }
}

fn respond(state: &State, metrics_port: bool, path: &str) -> Response<Full<Bytes>> {
    let (code, body, kind) = match path {
        "/healthz" | "/livez" => {
            let (code, body) = state.health();
            (code, body, "application/json")
        }
        "/metrics" if metrics_port => (
            StatusCode::OK,
            state.metrics(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "404 page not found\n".to_string(),
            "text/plain; charset=utf-8",
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves one port until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<State>, metrics_port: bool) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let state = state.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let r = respond(&state, metrics_port, req.uri().path());
                        async move { Ok::<_, Infallible>(r) }
                    });
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// A plain HTTP/1.0 GET (the readiness probe): status and body.
pub async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}
