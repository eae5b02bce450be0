//! Load generator for `bench/datastore.sh`: drives any etcd-v3-API server over mutual TLS
//! with the `etcd-client` crate and prints one `name value unit` line per figure.
//!
//! Usage: datastore_load <endpoint> <certs-dir> <phase>
//! Phases: put1 (1 client), put64 (64 clients), range1000 (p50/p99), watch100 (p99),
//! load100k (100,000 keys of 1 KiB with 64 clients).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions, WatchOptions,
};

const PUT_SECONDS: u64 = 5;

async fn connect(endpoint: &str, certs: &str) -> Client {
    let read = |f: &str| std::fs::read(format!("{certs}/{f}")).expect("read cert");
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(
            read("apiserver-etcd-client.crt"),
            read("apiserver-etcd-client.key"),
        ))
        .domain_name("localhost");
    let opts = ConnectOptions::new().with_tls(tls);
    Client::connect([endpoint], Some(opts))
        .await
        .expect("connect")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Puts for PUT_SECONDS from `clients` concurrent clients over `conns` connections.
async fn put_throughput(endpoint: &str, certs: &str, clients: usize, conns: usize) -> f64 {
    let mut pool = Vec::new();
    for _ in 0..conns {
        pool.push(connect(endpoint, certs).await);
    }
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let value = vec![b'v'; 256];
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let mut client = pool[c % conns].clone();
            let (count, stop, value) = (count.clone(), stop.clone(), value.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if client
                        .put(format!("bench/put/{c}/{n}"), value.clone(), None)
                        .await
                        .is_ok()
                    {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(PUT_SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn range_latency(endpoint: &str, certs: &str) -> (f64, f64) {
    let mut c = connect(endpoint, certs).await;
    for i in 0..1000 {
        c.put(format!("bench/range/{i:04}"), vec![b'r'; 256], None)
            .await
            .expect("put");
    }
    let mut lat = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        let r = c
            .get("bench/range/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("range");
        lat.push(t.elapsed());
        assert_eq!(r.kvs().len(), 1000);
    }
    lat.sort();
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

async fn watch_latency(endpoint: &str, certs: &str) -> f64 {
    let writer = connect(endpoint, certs).await;
    let mut streams = Vec::new();
    for w in 0..100 {
        // Ten watchers a connection, as a busy client would multiplex them.
        let mut c = if w % 10 == 0 {
            connect(endpoint, certs).await
        } else {
            writer.clone()
        };
        let mut s = c
            .watch("bench/watch/", Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch");
        let _created = s.message().await.expect("created");
        streams.push(s);
    }
    let sent: Arc<parking_lot::Mutex<Vec<Instant>>> = Arc::default();
    let events = 200usize;
    let latencies: Arc<parking_lot::Mutex<Vec<Duration>>> = Arc::default();
    let mut readers = Vec::new();
    for mut s in streams {
        let (sent, latencies) = (sent.clone(), latencies.clone());
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            while got < events {
                let Ok(Some(resp)) = s.message().await else {
                    return;
                };
                let now = Instant::now();
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let idx: usize = kv
                        .key_str()
                        .unwrap_or("")
                        .rsplit('/')
                        .next()
                        .unwrap_or("0")
                        .parse()
                        .unwrap_or(0);
                    if let Some(t) = sent.lock().get(idx) {
                        latencies.lock().push(now.duration_since(*t));
                    }
                    got += 1;
                }
            }
        }));
    }
    let mut w = writer.clone();
    for i in 0..events {
        sent.lock().push(Instant::now());
        w.put(format!("bench/watch/{i}"), "x", None)
            .await
            .expect("put");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(30), r).await;
    }
    let mut lat = latencies.lock().clone();
    lat.sort();
    percentile(&lat, 0.99)
}

async fn load_100k(endpoint: &str, certs: &str) -> f64 {
    let mut pool = Vec::new();
    for _ in 0..8 {
        pool.push(connect(endpoint, certs).await);
    }
    let start = Instant::now();
    let value = vec![b'k'; 1024];
    let tasks: Vec<_> = (0..64)
        .map(|c| {
            let mut client = pool[c % 8].clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut i = c;
                while i < 100_000 {
                    client
                        .put(format!("bench/load/{i:06}"), value.clone(), None)
                        .await
                        .expect("put");
                    i += 64;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [endpoint, certs, phase] = args.as_slice() else {
        eprintln!(
            "usage: datastore_load <endpoint> <certs-dir> put1|put64|range1000|watch100|load100k"
        );
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match phase.as_str() {
            "put1" => println!(
                "put_1_client {:.0} puts/s",
                put_throughput(endpoint, certs, 1, 1).await
            ),
            "put64" => println!(
                "put_64_clients {:.0} puts/s",
                put_throughput(endpoint, certs, 64, 8).await
            ),
            "range1000" => {
                let (p50, p99) = range_latency(endpoint, certs).await;
                println!("range_1000_p50 {p50:.2} ms");
                println!("range_1000_p99 {p99:.2} ms");
            }
            "watch100" => println!(
                "watch_100_p99 {:.2} ms",
                watch_latency(endpoint, certs).await
            ),
            "load100k" => println!("load_100k {:.1} s", load_100k(endpoint, certs).await),
            other => {
                eprintln!("unknown phase {other}");
                std::process::exit(2);
            }
        }
    });
}
