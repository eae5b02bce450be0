//! Load generator for `bench/pods.sh`. Two phases, printing one `name value unit` line per
//! figure:
//!
//! - `cri SOCKET IMAGE`: the anchor. Drives containerd's CRI directly, as a kubelet would at
//!   best: RunPodSandbox + CreateContainer + StartContainer for one pod at a time (20 times)
//!   and for 30 pods at once, then removes them.
//! - `api KUBECONFIG NODE IMAGE`: the same pods through mk8s: create a Pod bound to the node
//!   and time until its status says Running (the kubelet did the same CRI calls, plus volumes,
//!   events and the status write), one at a time (20) and 30 at once.
//!
//! Usage: pods_load cri <socket> <image> | pods_load api <kubeconfig> <node> <image>

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;

const SINGLE: usize = 20;
const AT_ONCE: usize = 30;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn report(prefix: &str, mut v: Vec<f64>) {
    println!("{prefix}_p50 {:.0} ms", pct(&mut v, 0.5));
    println!("{prefix}_p99 {:.0} ms", pct(&mut v, 0.99));
}

async fn cri_client(
    socket: String,
) -> cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::try_from("http://[::1]:0")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let s = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(s).await?))
            }
        }))
        .await
        .expect("connect to containerd");
    cri::runtime_service_client::RuntimeServiceClient::new(ch)
}

/// One pod straight through CRI; returns its sandbox id and the time it took.
async fn cri_pod(
    mut rt: cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    image: String,
    n: usize,
    logs: String,
) -> (String, f64) {
    let t0 = Instant::now();
    let meta = cri::PodSandboxMetadata {
        name: format!("anchor-{n}"),
        uid: format!("anchor-uid-{n}-{}", std::process::id()),
        namespace: "bench-anchor".into(),
        attempt: 0,
    };
    let config = cri::PodSandboxConfig {
        metadata: Some(meta),
        hostname: format!("anchor-{n}"),
        log_directory: format!("{logs}/anchor-{n}"),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/podanchor{n}"),
            ..Default::default()
        }),
        labels: HashMap::from([("mk8s.bench".to_string(), "anchor".to_string())]),
        ..Default::default()
    };
    let sb = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let c = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "3600".into()],
                log_path: "c/0.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(config),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest { container_id: c })
        .await
        .expect("StartContainer");
    (sb, t0.elapsed().as_secs_f64() * 1000.0)
}

async fn cri_cleanup(
    rt: &mut cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    ids: Vec<String>,
) {
    for id in ids {
        let _ = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        let _ = rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await;
    }
}

async fn phase_cri(socket: String, image: String) {
    let logs = std::env::temp_dir().join(format!("mk8s-bench-anchor-{}", std::process::id()));
    let logs = logs.display().to_string();
    let mut rt = cri_client(socket).await;
    let mut single = Vec::new();
    for n in 0..SINGLE {
        let (id, ms) = cri_pod(rt.clone(), image.clone(), n, logs.clone()).await;
        single.push(ms);
        cri_cleanup(&mut rt, vec![id]).await;
    }
    report("cri_single", single);
    let all = futures::future::join_all(
        (0..AT_ONCE).map(|n| cri_pod(rt.clone(), image.clone(), 100 + n, logs.clone())),
    )
    .await;
    let (ids, times): (Vec<String>, Vec<f64>) = all.into_iter().unzip();
    report("cri_30", times);
    cri_cleanup(&mut rt, ids).await;
    let _ = std::fs::remove_dir_all(&logs);
}

fn bench_pod(name: &str, node: &str, image: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]},
    }))
    .expect("pod")
}

/// The footprint of `$KUBELET_PID`, if set: (VmRSS, RssAnon, Pss) in KiB. RSS counts every
/// page of the shared mk8s binary the kubelet has mapped; RssAnon is its own heap and stacks;
/// PSS shares the binary's pages out among the daemons that map them.
fn kubelet_footprint_kib() -> Option<(u64, u64, u64)> {
    let pid = std::env::var("KUBELET_PID").ok()?;
    let field = |text: &str, key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some((
        field(&status, "VmRSS:")?,
        field(&status, "RssAnon:")?,
        field(&rollup, "Pss:")?,
    ))
}

fn print_footprint(when: &str) {
    if let Some((rss, anon, pss)) = kubelet_footprint_kib() {
        let mib = |k: u64| k as f64 / 1024.0;
        println!("kubelet_rss_{when} {:.1} MiB", mib(rss));
        println!("kubelet_anon_{when} {:.1} MiB", mib(anon));
        println!("kubelet_pss_{when} {:.1} MiB", mib(pss));
    }
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Creates `names` at once and returns each one's create → Running time.
async fn api_batch(pods: &Api<Pod>, names: Vec<String>, node: &str, image: &str) -> Vec<f64> {
    let wc = watcher::Config::default().labels("bench=pods");
    let mut stream = Box::pin(watcher::watcher(pods.clone(), wc).default_backoff_applied());
    // The first event of a fresh watch is the initial list: start timing after it.
    let mut started: HashMap<String, Instant> = HashMap::new();
    let creates = names.iter().map(|n| {
        let pod = bench_pod(n, node, image);
        async move {
            let t0 = Instant::now();
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("create pod");
            (pod.metadata.name.unwrap_or_default(), t0)
        }
    });
    for (n, t0) in futures::future::join_all(creates).await {
        started.insert(n, t0);
    }
    let mut out = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while out.len() < names.len() && Instant::now() < deadline {
        let Ok(Some(Ok(p))) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await
        else {
            continue;
        };
        let name = p.metadata.name.clone().unwrap_or_default();
        if running(&p)
            && !out.contains_key(&name)
            && let Some(t0) = started.get(&name)
        {
            out.insert(name, t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    assert_eq!(
        out.len(),
        names.len(),
        "pods never ran: {:?}",
        names
            .iter()
            .filter(|n| !out.contains_key(*n))
            .collect::<Vec<_>>()
    );
    if names.len() > 1 {
        // Let the kubelet settle with every pod running, then read its footprint.
        tokio::time::sleep(Duration::from_secs(5)).await;
        print_footprint("30");
    }
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for n in &names {
        let _ = pods.delete(n, &dp).await;
    }
    // Wait until they are gone, so the next batch starts on an idle node.
    for _ in 0..600 {
        let left = pods
            .list(&Default::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out.into_values().collect()
}

trait Applied: futures::Stream + Sized {
    fn default_backoff_applied(
        self,
    ) -> futures::stream::BoxStream<'static, Result<Pod, watcher::Error>>;
}
impl<S> Applied for S
where
    S: futures::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + 'static,
{
    fn default_backoff_applied(
        self,
    ) -> futures::stream::BoxStream<'static, Result<Pod, watcher::Error>> {
        use kube::runtime::WatchStreamExt;
        self.default_backoff().applied_objects().boxed()
    }
}

async fn phase_api(kubeconfig: String, node: String, image: String) {
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(cfg).expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    print_footprint("idle");
    let mut single = Vec::new();
    for n in 0..SINGLE {
        single.extend(api_batch(&pods, vec![format!("single-{n}")], &node, &image).await);
    }
    report("api_single", single);
    let names = (0..AT_ONCE).map(|n| format!("batch-{n}")).collect();
    report("api_30", api_batch(&pods, names, &node, &image).await);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["cri", socket, image] => rt.block_on(phase_cri(socket.to_string(), image.to_string())),
        ["api", kubeconfig, node, image] => rt.block_on(phase_api(
            kubeconfig.to_string(),
            node.to_string(),
            image.to_string(),
        )),
        _ => {
            eprintln!(
                "usage: pods_load cri <socket> <image> | pods_load api <kubeconfig> <node> <image>"
            );
            std::process::exit(2);
        }
    }
}
