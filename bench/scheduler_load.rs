//! Load generator for `bench/scheduler.sh`, printing one `name value unit` line per figure.
//!
//! - `fill KUBECONFIG N`: creates N pending pods (no nodeName, an image that never runs,
//!   small requests) with 16 clients, and a Node object `bench-node` (no kubelet) with room
//!   for them; prints the create rate.
//! - `bind KUBECONFIG N`: waits (watching) until N pods are bound; prints the time from the
//!   first bound pod to the last, and the rate. Started just before the scheduler, so the
//!   scheduler's own start and first list are included in `bind_total`.
//!
//! Usage: scheduler_load fill <kubeconfig> <n> | scheduler_load bind <kubeconfig> <n>

use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;

const CLIENTS: usize = 16;

async fn client(kubeconfig: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    kube::Client::try_from(cfg).expect("client")
}

async fn fill(kubeconfig: &str, n: usize) {
    let c = client(kubeconfig).await;
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench-node", "labels": {"kubernetes.io/hostname": "bench-node"}},
        "status": {
            "capacity": {"cpu": "1000", "memory": "1000Gi", "pods": "5000"},
            "allocatable": {"cpu": "1000", "memory": "1000Gi", "pods": "5000"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }))
    .expect("node");
    let nodes: Api<Node> = Api::all(c.clone());
    let created = nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("node");
    // Node status is a subresource: set allocatable through it.
    let mut with_status = created.clone();
    with_status.status = node.status.clone();
    nodes
        .replace_status("bench-node", &PostParams::default(), &with_status)
        .await
        .expect("node status");
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CLIENTS {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(c, "default");
            let mut i = w;
            while i < n {
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("p-{i}")},
                    "spec": {"containers": [{
                        "name": "c", "image": "mk8s.invalid/never:0",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    }]},
                }))
                .expect("pod");
                pods.create(&PostParams::default(), &pod)
                    .await
                    .expect("create pod");
                i += CLIENTS;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let s = t0.elapsed().as_secs_f64();
    println!("create_{n} {:.0} pods/s", n as f64 / s);
}

async fn bind(kubeconfig: &str, n: usize) {
    let c = client(kubeconfig).await;
    let pods: Api<Pod> = Api::namespaced(c, "default");
    let t0 = Instant::now();
    let mut first = None;
    let mut bound = std::collections::HashSet::new();
    let mut stream = std::pin::pin!(watcher(pods, watcher::Config::default()));
    while let Some(ev) = stream.next().await {
        let p = match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            Ok(_) => continue,
            Err(e) => panic!("watch: {e}"),
        };
        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
            first.get_or_insert_with(Instant::now);
            bound.insert(p.metadata.name.unwrap_or_default());
            if bound.len() >= n {
                break;
            }
        }
    }
    let end = Instant::now();
    let span = end
        .duration_since(first.unwrap_or(t0))
        .as_secs_f64()
        .max(1e-3);
    println!("bind_span {:.2} s", span);
    println!("bind_rate {:.0} pods/s", n as f64 / span);
    println!("bind_total {:.2} s", end.duration_since(t0).as_secs_f64());
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n = |s: &str| s.parse::<usize>().expect("count");
    match a.get(1).map(String::as_str) {
        Some("fill") if a.len() == 4 => fill(&a[2], n(&a[3])).await,
        Some("bind") if a.len() == 4 => bind(&a[2], n(&a[3])).await,
        _ => {
            eprintln!("usage: scheduler_load fill|bind <kubeconfig> <n>");
            std::process::exit(2);
        }
    }
}
