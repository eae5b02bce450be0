//! Pod workers: watches the pods bound to this node and drives each through CRI, one task a
//! pod: volumes, sandbox, init containers in order, containers, restarts with upstream's
//! back-off (10 s doubling to 5 min), graceful termination, and the pod's status (phase,
//! conditions, container statuses) written through the `status` subresource. Adopts running
//! pods after a kubelet restart and removes sandboxes of pods that no longer exist.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::cri::{Cri, CriError};
use super::env::EnvContext;
use super::probes::ProbeSet;
use super::runtime::{self, LABEL_CONTAINER_NAME, LABEL_POD_UID, SandboxSettings};
use super::volumes::PodVolumes;
use crate::common::clock;
use crate::common::events::Recorder;

const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often a worker looks at its pod's containers when nothing else wakes it.
const RESYNC: Duration = Duration::from_secs(1);

/// What the workers share with each other and with the kubelet's HTTP API.
pub struct Shared {
    pub client: Client,
    pub cri: Cri,
    pub events: Recorder,
    pub settings: SandboxSettings,
    pub root_dir: PathBuf,
    pub sync_frequency: Duration,
    pub host_ip: String,
    pub node_cpu: f64,
    pub node_memory: f64,
    /// Pods this kubelet runs, by uid, as last seen.
    pub pods: RwLock<HashMap<String, Pod>>,
    /// Running containers as `ns/pod/container`.
    pub running: RwLock<HashSet<String>>,
    /// The node's CPU samples for `/stats/summary`.
    pub cpu_samples: super::stats::NodeCpu,
}

/// Watches this node's pods and keeps one worker per pod.
pub async fn run(shared: Arc<Shared>) -> Result<(), super::KubeletError> {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let wc =
        watcher::Config::default().fields(&format!("spec.nodeName={}", shared.settings.node_name));
    let (reader, writer) = reflector::store();
    let mut stream = Box::pin(
        reflector::reflector(writer, watcher(api, wc))
            .default_backoff()
            .touched_objects(),
    );
    let mut workers: HashMap<String, (Arc<Notify>, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    // The store shows the first list only once all of it is in (kube's InitDone), while the
    // stream yields each pod before that: a worker started then would find its pod missing
    // and stop it. So workers start only once the store is ready.
    let mut ready = false;
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(pod)) if ready => ensure_worker(&shared, &reader, &mut workers, &pod),
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!("pod watch: {e}"),
                None => return Ok(()),
            },
            r = reader.wait_until_ready(), if !ready => {
                if r.is_err() {
                    return Ok(());
                }
                ready = true;
                for pod in reader.state() {
                    ensure_worker(&shared, &reader, &mut workers, &pod);
                }
                // Sandboxes of pods that no longer exist go.
                let live = reader.state().iter().filter_map(|p| p.uid()).collect();
                let shared = shared.clone();
                tokio::spawn(async move { remove_orphans(&shared, &live).await });
            }
            _ = tick.tick(), if ready => {
                let live: HashSet<String> = reader.state().iter().filter_map(|p| p.uid()).collect();
                for pod in reader.state() {
                    ensure_worker(&shared, &reader, &mut workers, &pod);
                }
                workers.retain(|uid, (notify, handle)| {
                    if !live.contains(uid) {
                        notify.notify_one();
                    }
                    !handle.is_finished()
                });
            }
        }
    }
}

fn ensure_worker(
    shared: &Arc<Shared>,
    reader: &Store<Pod>,
    workers: &mut HashMap<String, (Arc<Notify>, tokio::task::JoinHandle<()>)>,
    pod: &Pod,
) {
    let Some(uid) = pod.uid() else { return };
    match workers.get(&uid) {
        Some((n, h)) if !h.is_finished() => n.notify_one(),
        _ => {
            let notify = Arc::new(Notify::new());
            let w = Worker {
                shared: shared.clone(),
                reader: reader.clone(),
                ns: pod.namespace().unwrap_or_default(),
                name: pod.name_any(),
                uid: uid.clone(),
                notify: notify.clone(),
                sandbox: None,
                volumes: PodVolumes::default(),
                backoff: HashMap::new(),
                pull_backoff: HashMap::new(),
                waiting: HashMap::new(),
                last_status: None,
                start_time: None,
                sandbox_stopped: false,
                probes: ProbeSet::default(),
                mounted: None,
            };
            workers.insert(uid, (notify, tokio::spawn(w.run())));
        }
    }
}

/// Sandboxes whose pod this node no longer has: left by a deletion while the kubelet was down.
async fn remove_orphans(shared: &Shared, live: &HashSet<String>) {
    let mut rt = shared.cri.runtime.clone();
    let Ok(list) = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
    else {
        return;
    };
    for sb in list.into_inner().items {
        let uid = sb.labels.get(LABEL_POD_UID).cloned().unwrap_or_default();
        if live.contains(&uid) {
            continue;
        }
        // Ask the API server itself before removing anything a pod may still own.
        let (ns, name) = (
            sb.labels.get(super::runtime::LABEL_POD_NAMESPACE),
            sb.labels.get(super::runtime::LABEL_POD_NAME),
        );
        if let (Some(ns), Some(name)) = (ns, name) {
            match Api::<Pod>::namespaced(shared.client.clone(), ns)
                .get_opt(name)
                .await
            {
                Ok(Some(p)) if p.uid().as_deref() == Some(uid.as_str()) => continue,
                Ok(_) => {}
                Err(_) => continue,
            }
        }
        {
            tracing::info!("removing orphaned sandbox {} of pod uid {uid}", sb.id);
            let _ = rt
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: sb.id.clone(),
                })
                .await;
            let _ = rt
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: sb.id,
                })
                .await;
            PodVolumes::default().teardown(&shared.root_dir, &uid);
        }
    }
}

struct Backoff {
    delay: Duration,
    updated: Instant,
}

/// One pod's worker.
struct Worker {
    shared: Arc<Shared>,
    reader: Store<Pod>,
    ns: String,
    name: String,
    uid: String,
    notify: Arc<Notify>,
    sandbox: Option<(String, Vec<String>)>,
    volumes: PodVolumes,
    backoff: HashMap<String, Backoff>,
    /// Images whose last pull failed: no new pull until the back-off has passed.
    pull_backoff: HashMap<String, Backoff>,
    /// Why a container has not started (reason, message), until it does.
    waiting: HashMap<String, (String, String)>,
    last_status: Option<Value>,
    start_time: Option<String>,
    sandbox_stopped: bool,
    probes: ProbeSet,
    /// The pod's volume paths and when their content was last read from the API.
    mounted: Option<(HashMap<String, PathBuf>, Instant)>,
}

/// The latest CRI status of a container name, and the one before it.
#[derive(Default, Clone)]
struct History {
    latest: Option<cri::ContainerStatus>,
    previous: Option<cri::ContainerStatus>,
}

fn state_of(s: &cri::ContainerStatus) -> cri::ContainerState {
    cri::ContainerState::try_from(s.state).unwrap_or(cri::ContainerState::ContainerUnknown)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Worker {
    fn current(&self) -> Option<Arc<Pod>> {
        self.reader
            .get(&ObjectRef::new(&self.name).within(&self.ns))
            .filter(|p| p.uid().as_deref() == Some(self.uid.as_str()))
    }

    /// Whether the API server confirms the pod is gone: the cache alone never kills
    /// containers, and an API error counts as "not confirmed".
    async fn gone(&self) -> bool {
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.ns);
        match api.get_opt(&self.name).await {
            Ok(Some(p)) => p.uid().as_deref() != Some(self.uid.as_str()),
            Ok(None) => true,
            Err(e) => {
                tracing::warn!("pod {}/{}: {e}", self.ns, self.name);
                false
            }
        }
    }

    async fn run(mut self) {
        loop {
            let pod = self.current();
            let wait = match pod {
                None if !self.gone().await => Duration::from_secs(2),
                None => {
                    // Gone from the API (force-deleted): stop everything now.
                    if self.terminate(None, 0).await {
                        break;
                    }
                    Duration::from_secs(2)
                }
                Some(p) if p.metadata.deletion_timestamp.is_some() => {
                    let grace = p.metadata.deletion_grace_period_seconds.unwrap_or(30);
                    if !self.terminate(Some(&p), grace).await {
                        // containerd did not answer: the pod object stays until it has.
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                    let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.ns);
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(self.uid.clone()),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    match api.delete(&self.name, &dp).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => break,
                        Err(e) => {
                            tracing::warn!("delete pod {}/{}: {e}", self.ns, self.name);
                            Duration::from_secs(2)
                        }
                    }
                }
                Some(p) => {
                    self.shared
                        .pods
                        .write()
                        .insert(self.uid.clone(), (*p).clone());
                    self.sync(&p).await
                }
            };
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.shared.pods.write().remove(&self.uid);
        let prefix = format!("{}/{}/", self.ns, self.name);
        self.shared
            .running
            .write()
            .retain(|k| !k.starts_with(&prefix));
        self.shared.events.forget(&self.uid);
    }

    /// Stops the pod's containers (each with the grace period), then its sandboxes; false when
    /// containerd could not list them (the caller retries rather than forget them).
    async fn terminate(&mut self, pod: Option<&Pod>, grace: i64) -> bool {
        let mut rt = self.shared.cri.runtime.clone();
        let mut filter = HashMap::new();
        filter.insert(LABEL_POD_UID.to_string(), self.uid.clone());
        let sandboxes = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: filter.clone(),
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.into_inner().items);
        let containers = rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    label_selector: filter,
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.into_inner().containers);
        let (Ok(sandboxes), Ok(containers)) = (sandboxes, containers) else {
            tracing::warn!(
                "pod {}/{}: containerd did not list its containers",
                self.ns,
                self.name
            );
            return false;
        };
        let mut stops = Vec::new();
        for c in containers {
            if c.state != cri::ContainerState::ContainerRunning as i32 {
                continue;
            }
            let name = c
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            if let Some(p) = pod {
                self.shared
                    .events
                    .record(
                        p,
                        Some(&format!("spec.containers{{{name}}}")),
                        true,
                        "Killing",
                        &format!("Stopping container {name}"),
                    )
                    .await;
            }
            let hook = pod.and_then(|p| {
                let spec = p.spec.as_ref()?;
                let c = spec.containers.iter().find(|c| c.name == name)?;
                let pre = c.lifecycle.as_ref()?.pre_stop.clone()?;
                Some((p.clone(), c.clone(), pre))
            });
            let mut rt = rt.clone();
            let shared = self.shared.clone();
            let ip = self
                .sandbox
                .as_ref()
                .and_then(|s| s.1.first().cloned())
                .unwrap_or_default();
            stops.push(async move {
                let started = Instant::now();
                if let Some((p, spec, pre)) = hook {
                    // preStop runs within the grace period; what it leaves is StopContainer's.
                    let budget = Duration::from_secs(grace.max(0) as u64);
                    if let Err(why) = run_hook(&shared, &spec, &c.id, &ip, &pre, budget).await {
                        shared
                            .events
                            .record(
                                &p,
                                Some(&format!("spec.containers{{{name}}}")),
                                false,
                                "FailedPreStopHook",
                                &format!("PreStopHook failed: {why}"),
                            )
                            .await;
                    }
                }
                let left = (grace - started.elapsed().as_secs() as i64).max(0);
                if let Err(e) = rt
                    .stop_container(cri::StopContainerRequest {
                        container_id: c.id.clone(),
                        timeout: left,
                    })
                    .await
                {
                    tracing::warn!("stop container {}: {}", c.id, e.message());
                }
            });
        }
        futures::future::join_all(stops).await;
        for sb in sandboxes {
            let _ = rt
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: sb.id.clone(),
                })
                .await;
            if let Err(e) = rt
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: sb.id.clone(),
                })
                .await
            {
                tracing::warn!("remove sandbox {}: {}", sb.id, e.message());
            }
        }
        self.sandbox = None;
        self.volumes.teardown(&self.shared.root_dir, &self.uid);
        true
    }

    /// Finds a ready sandbox of this pod (adopting one a previous kubelet made) or runs one.
    async fn ensure_sandbox(&mut self, pod: &Pod) -> Result<(String, Vec<String>), String> {
        let mut rt = self.shared.cri.runtime.clone();
        if let Some((id, ips)) = &self.sandbox {
            let st = rt
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: false,
                })
                .await;
            if let Ok(st) = st
                && st.into_inner().status.map(|s| s.state)
                    == Some(cri::PodSandboxState::SandboxReady as i32)
            {
                return Ok((id.clone(), ips.clone()));
            }
        }
        let mut sel = HashMap::new();
        sel.insert(LABEL_POD_UID.to_string(), self.uid.clone());
        let existing = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: sel,
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.into_inner().items)
            // Never guess "none" on an error: that would start a second sandbox.
            .map_err(|e| format!("ListPodSandbox: {}", e.message()))?;
        let mut attempt = 0;
        for sb in &existing {
            let md = sb.metadata.clone().unwrap_or_default();
            attempt = attempt.max(md.attempt + 1);
            if sb.state == cri::PodSandboxState::SandboxReady as i32 {
                let ips = self.sandbox_ips(pod, &sb.id).await;
                self.sandbox = Some((sb.id.clone(), ips.clone()));
                return Ok((sb.id.clone(), ips));
            }
        }
        // A dead sandbox means its containers are gone too: start over with a new attempt.
        for sb in existing {
            let _ = rt
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: sb.id,
                })
                .await;
        }
        let config = runtime::sandbox_config(pod, &self.shared.settings, attempt);
        std::fs::create_dir_all(&config.log_directory).map_err(|e| e.to_string())?;
        let id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map_err(CriError::call("RunPodSandbox"))
            .map_err(|e| e.to_string())?
            .into_inner()
            .pod_sandbox_id;
        let ips = self.sandbox_ips(pod, &id).await;
        self.sandbox = Some((id.clone(), ips.clone()));
        Ok((id, ips))
    }

    /// The pod's addresses: the node's for a host-network pod (as upstream's kubelet), else
    /// what CNI gave its sandbox.
    async fn sandbox_ips(&self, pod: &Pod, id: &str) -> Vec<String> {
        if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            return vec![self.shared.host_ip.clone()];
        }
        let mut rt = self.shared.cri.runtime.clone();
        let st = rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            })
            .await;
        let Ok(st) = st else { return vec![] };
        let net = st.into_inner().status.and_then(|s| s.network);
        match net {
            Some(n) if !n.ip.is_empty() => std::iter::once(n.ip)
                .chain(n.additional_ips.into_iter().map(|p| p.ip))
                .collect(),
            _ => vec![],
        }
    }

    /// Latest and previous CRI status of each container name in the sandbox.
    /// An error is never read as "no containers", which would start duplicates.
    async fn histories(&self, sandbox: &str) -> Result<HashMap<String, History>, String> {
        let mut rt = self.shared.cri.runtime.clone();
        let list = rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: sandbox.to_string(),
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.into_inner().containers)
            .map_err(|e| format!("ListContainers: {}", e.message()))?;
        let mut by_name: HashMap<String, Vec<cri::Container>> = HashMap::new();
        for c in list {
            let name = c
                .labels
                .get(LABEL_CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            by_name.entry(name).or_default().push(c);
        }
        let mut out = HashMap::new();
        for (name, mut cs) in by_name {
            cs.sort_by_key(|c| {
                std::cmp::Reverse((
                    c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
                    c.created_at,
                ))
            });
            // Upstream keeps one dead container a name for `logs --previous`; older go.
            for old in cs.iter().skip(2) {
                let _ = rt
                    .remove_container(cri::RemoveContainerRequest {
                        container_id: old.id.clone(),
                    })
                    .await;
            }
            let mut h = History::default();
            for (i, c) in cs.iter().take(2).enumerate() {
                let st = rt
                    .container_status(cri::ContainerStatusRequest {
                        container_id: c.id.clone(),
                        verbose: false,
                    })
                    .await
                    .map_err(|e| format!("ContainerStatus {}: {}", c.id, e.message()))?
                    .into_inner()
                    .status;
                if i == 0 {
                    h.latest = st;
                } else {
                    h.previous = st;
                }
            }
            out.insert(name, h);
        }
        Ok(out)
    }

    fn restart_wanted(policy: &str, exit_code: i32) -> bool {
        match policy {
            "Never" => false,
            "OnFailure" => exit_code != 0,
            _ => true,
        }
    }

    /// Whether the container is still backing off after its last exit (and for how long).
    fn in_backoff(&mut self, name: &str, finished_at: i64) -> Option<Duration> {
        let b = self.backoff.get(name)?;
        if b.updated.elapsed() > 2 * MAX_BACKOFF {
            self.backoff.remove(name);
            return None;
        }
        let since = Duration::from_nanos((now_nanos() - finished_at).max(0) as u64);
        (since < b.delay).then(|| b.delay - since)
    }

    fn bump_backoff(&mut self, name: &str) {
        let delay = match self.backoff.get(name) {
            Some(b) => (b.delay * 2).min(MAX_BACKOFF),
            None => INITIAL_BACKOFF,
        };
        self.backoff.insert(
            name.to_string(),
            Backoff {
                delay,
                updated: Instant::now(),
            },
        );
    }

    /// One pass over the pod; returns when to look again.
    async fn sync(&mut self, pod: &Pod) -> Duration {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        if self.start_time.is_none() {
            self.start_time = Some(
                pod.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| {
                        clock::rfc3339(time::OffsetDateTime::from(std::time::SystemTime::from(t.0)))
                    })
                    .unwrap_or_else(clock::now_rfc3339),
            );
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            // Finished pods keep their containers (for logs) but release the sandbox and IP.
            if !self.sandbox_stopped
                && let Some((id, _)) = self.sandbox.clone()
            {
                let _ = self
                    .shared
                    .cri
                    .runtime
                    .clone()
                    .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                    .await;
                self.sandbox_stopped = true;
            }
            return Duration::from_secs(10);
        }
        let no_init = spec.init_containers.as_ref().is_none_or(|v| v.is_empty());
        let mut wake = RESYNC;
        let pod_ips = self
            .sandbox
            .as_ref()
            .map(|s| s.1.clone())
            .unwrap_or_default();
        let ctx = EnvContext {
            pod,
            host_ip: self.shared.host_ip.clone(),
            pod_ips: pod_ips.clone(),
            node_cpu: self.shared.node_cpu,
            node_memory: self.shared.node_memory,
        };
        // Volume content is re-read every --sync-frequency (upstream's configMap/secret
        // propagation), not on every pass over the pod.
        let fresh = self
            .mounted
            .as_ref()
            .filter(|(_, at)| at.elapsed() < self.shared.sync_frequency)
            .map(|(v, _)| v.clone());
        let setup = match fresh {
            Some(v) => Ok(v),
            None => {
                self.volumes
                    .setup(&self.shared.client, &self.shared.root_dir, &ctx)
                    .await
            }
        };
        let vols = match setup {
            Ok(v) => {
                if self
                    .mounted
                    .as_ref()
                    .is_none_or(|(_, at)| at.elapsed() >= self.shared.sync_frequency)
                {
                    self.mounted = Some((v.clone(), Instant::now()));
                }
                v
            }
            Err(e) => {
                self.shared
                    .events
                    .record(pod, None, false, "FailedMount", &e.to_string())
                    .await;
                self.write_status(pod, None, &HashMap::new(), no_init, &policy)
                    .await;
                return Duration::from_secs(2);
            }
        };
        let (sandbox, ips) = match self.ensure_sandbox(pod).await {
            Ok(s) => s,
            Err(e) => {
                self.shared
                    .events
                    .record(
                        pod,
                        None,
                        false,
                        "FailedCreatePodSandBox",
                        &format!("Failed to create pod sandbox: {e}"),
                    )
                    .await;
                self.write_status(pod, None, &HashMap::new(), no_init, &policy)
                    .await;
                return Duration::from_secs(5);
            }
        };
        let mut hist = match self.histories(&sandbox).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("pod {}/{}: {e}", self.ns, self.name);
                return RESYNC;
            }
        };
        let ctx = EnvContext {
            pod_ips: ips.clone(),
            ..ctx
        };
        // Init containers, one at a time, each to success.
        let mut initialized = true;
        for ic in spec.init_containers.clone().unwrap_or_default() {
            let h = hist.get(&ic.name).cloned().unwrap_or_default();
            match h
                .latest
                .as_ref()
                .map(|s| (state_of(s), s.exit_code, s.finished_at))
            {
                Some((cri::ContainerState::ContainerExited, 0, _)) => continue,
                Some((cri::ContainerState::ContainerExited, code, finished)) => {
                    initialized = false;
                    if policy != "Never" {
                        wake = wake.min(
                            self.restart(
                                pod, &ic, &h, code, finished, &sandbox, &vols, &ctx, true, "Always",
                            )
                            .await,
                        );
                    }
                    break;
                }
                Some(_) => {
                    initialized = false;
                    break;
                }
                None => {
                    initialized = false;
                    self.start(pod, &ic, 0, &sandbox, &vols, &ctx, true).await;
                    wake = Duration::from_millis(200);
                    break;
                }
            }
        }
        if initialized {
            for c in spec.containers.clone() {
                let h = hist.get(&c.name).cloned().unwrap_or_default();
                match h
                    .latest
                    .as_ref()
                    .map(|s| (state_of(s), s.exit_code, s.finished_at))
                {
                    None => {
                        self.start(pod, &c, 0, &sandbox, &vols, &ctx, false).await;
                        wake = Duration::from_millis(200);
                    }
                    Some((cri::ContainerState::ContainerExited, code, finished)) => {
                        if Self::restart_wanted(&policy, code) {
                            wake = wake.min(
                                self.restart(
                                    pod, &c, &h, code, finished, &sandbox, &vols, &ctx, false,
                                    &policy,
                                )
                                .await,
                            );
                        }
                    }
                    Some(_) => {
                        self.waiting.remove(&c.name);
                    }
                }
            }
        }
        if wake < RESYNC
            && let Ok(h) = self.histories(&sandbox).await
        {
            hist = h;
        }
        let live: HashSet<String> = hist
            .values()
            .filter_map(|h| h.latest.as_ref())
            .filter(|s| state_of(s) == cri::ContainerState::ContainerRunning)
            .map(|s| s.id.clone())
            .collect();
        self.probes.retain(&live);
        if let Some(ip) = ips.first() {
            for c in &spec.containers {
                if let Some(s) = hist.get(&c.name).and_then(|h| h.latest.as_ref())
                    && live.contains(&s.id)
                {
                    self.probes
                        .ensure(&self.shared, pod, c, &s.id, ip, &self.notify);
                }
            }
        }
        {
            let mut running = self.shared.running.write();
            for c in &spec.containers {
                let key = format!("{}/{}/{}", self.ns, self.name, c.name);
                let up = hist
                    .get(&c.name)
                    .and_then(|h| h.latest.as_ref())
                    .is_some_and(|s| state_of(s) == cri::ContainerState::ContainerRunning);
                if up {
                    running.insert(key);
                } else {
                    running.remove(&key);
                }
            }
        }
        self.write_status(pod, Some(&ips), &hist, initialized, &policy)
            .await;
        wake
    }

    /// Restarts an exited container unless it is backing off.
    #[allow(clippy::too_many_arguments)]
    async fn restart(
        &mut self,
        pod: &Pod,
        c: &Container,
        h: &History,
        _code: i32,
        finished: i64,
        sandbox: &str,
        vols: &HashMap<String, PathBuf>,
        ctx: &EnvContext<'_>,
        init: bool,
        _policy: &str,
    ) -> Duration {
        let attempt = h
            .latest
            .as_ref()
            .and_then(|s| s.metadata.as_ref())
            .map(|m| m.attempt + 1)
            .unwrap_or(0);
        if let Some(left) = self.in_backoff(&c.name, finished) {
            let delay = self
                .backoff
                .get(&c.name)
                .map(|b| b.delay)
                .unwrap_or(INITIAL_BACKOFF);
            let msg = format!(
                "back-off {} restarting failed container={} pod={}_{}({})",
                go_duration(delay),
                c.name,
                self.name,
                self.ns,
                self.uid
            );
            if self.waiting.get(&c.name).map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                self.shared
                    .events
                    .record(
                        pod,
                        Some(&field_path(c, init)),
                        false,
                        "BackOff",
                        &format!(
                            "Back-off restarting failed container {} in pod {}_{}({})",
                            c.name, self.name, self.ns, self.uid
                        ),
                    )
                    .await;
            }
            self.waiting
                .insert(c.name.clone(), ("CrashLoopBackOff".into(), msg));
            return left.min(RESYNC * 5);
        }
        self.bump_backoff(&c.name);
        self.start(pod, c, attempt, sandbox, vols, ctx, init).await;
        Duration::from_millis(200)
    }

    /// Creates and starts one container attempt, recording upstream's events; a failure is
    /// kept as the container's waiting reason.
    #[allow(clippy::too_many_arguments)]
    async fn start(
        &mut self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        sandbox: &str,
        vols: &HashMap<String, PathBuf>,
        ctx: &EnvContext<'_>,
        init: bool,
    ) {
        let fp = field_path(c, init);
        let image = c.image.clone().unwrap_or_default();
        let pull = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| "IfNotPresent".into());
        let image_ref = match self.ensure_image(pod, &fp, &image, &pull).await {
            Ok(r) => r,
            Err((reason, message)) => {
                // As upstream's startContainer: the reason again, as an error.
                self.shared
                    .events
                    .record(pod, Some(&fp), false, "Failed", &format!("Error: {reason}"))
                    .await;
                self.waiting.insert(c.name.clone(), (reason, message));
                return;
            }
        };
        let envs = match super::env::container_env(&self.shared.client, ctx, c).await {
            Ok(e) => e,
            Err(message) => {
                self.shared
                    .events
                    .record(
                        pod,
                        Some(&fp),
                        false,
                        "Failed",
                        &format!("Error: {message}"),
                    )
                    .await;
                self.waiting.insert(
                    c.name.clone(),
                    ("CreateContainerConfigError".into(), message),
                );
                return;
            }
        };
        let mut mounts = Vec::new();
        for m in c.volume_mounts.clone().unwrap_or_default() {
            let Some(host) = vols.get(&m.name) else {
                let message = format!(
                    "cannot find volume \"{}\" to mount into container \"{}\"",
                    m.name, c.name
                );
                self.waiting.insert(
                    c.name.clone(),
                    ("CreateContainerConfigError".into(), message),
                );
                return;
            };
            let mut host = host.clone();
            if let Some(sub) = m.sub_path.as_ref().filter(|s| !s.is_empty()) {
                host = host.join(sub);
                if !host.exists() {
                    let _ = std::fs::create_dir_all(&host);
                }
            }
            mounts.push(cri::Mount {
                container_path: m.mount_path.clone(),
                host_path: host.display().to_string(),
                readonly: m.read_only.unwrap_or(false),
                propagation: match m.mount_propagation.as_deref() {
                    Some("HostToContainer") => {
                        cri::MountPropagation::PropagationHostToContainer as i32
                    }
                    Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional as i32,
                    _ => cri::MountPropagation::PropagationPrivate as i32,
                },
                ..Default::default()
            });
        }
        let config = runtime::container_config(
            pod,
            c,
            attempt,
            &image_ref,
            &envs,
            mounts,
            self.shared.node_memory,
        );
        let sandbox_config = runtime::sandbox_config(pod, &self.shared.settings, 0);
        let mut rt = self.shared.cri.runtime.clone();
        let created = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                let message = e.message().to_string();
                self.shared
                    .events
                    .record(
                        pod,
                        Some(&fp),
                        false,
                        "Failed",
                        &format!("Error: {message}"),
                    )
                    .await;
                self.waiting
                    .insert(c.name.clone(), ("CreateContainerError".into(), message));
                return;
            }
        };
        self.shared
            .events
            .record(
                pod,
                Some(&fp),
                true,
                "Created",
                &format!("Created container {}", c.name),
            )
            .await;
        match rt
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            Ok(_) => {
                self.waiting.remove(&c.name);
                self.shared
                    .events
                    .record(
                        pod,
                        Some(&fp),
                        true,
                        "Started",
                        &format!("Started container {}", c.name),
                    )
                    .await;
                if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
                    // As upstream: the container counts as started only after its postStart
                    // hook; a failed hook kills it and the restart policy takes over.
                    let ip = ctx.pod_ips.first().cloned().unwrap_or_default();
                    if let Err(why) = run_hook(&self.shared, c, &id, &ip, hook, HOOK_TIMEOUT).await
                    {
                        self.shared
                            .events
                            .record(
                                pod,
                                Some(&fp),
                                false,
                                "FailedPostStartHook",
                                &format!("PostStartHook failed: {why}"),
                            )
                            .await;
                        let grace = pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.termination_grace_period_seconds)
                            .unwrap_or(30);
                        let _ = rt
                            .stop_container(cri::StopContainerRequest {
                                container_id: id,
                                timeout: grace,
                            })
                            .await;
                    }
                }
            }
            Err(e) => {
                // containerd records the failed start as an exit (StartError, 128); the
                // restart policy and back-off take it from there.
                self.waiting.remove(&c.name);
                self.shared
                    .events
                    .record(
                        pod,
                        Some(&fp),
                        false,
                        "Failed",
                        &format!("Error: {}", e.message()),
                    )
                    .await;
            }
        }
    }

    /// The image's reference if present (or pulled), else the waiting reason and message.
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        fp: &str,
        image: &str,
        policy: &str,
    ) -> Result<String, (String, String)> {
        let mut images = self.shared.cri.images.clone();
        let present = images
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().image);
        if let Some(img) = &present
            && policy != "Always"
        {
            self.shared
                .events
                .record(
                    pod,
                    Some(fp),
                    true,
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                )
                .await;
            return Ok(img.id.clone());
        }
        if policy == "Never" {
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            self.shared
                .events
                .record(pod, Some(fp), false, "ErrImageNeverPull", &message)
                .await;
            return Err(("ErrImageNeverPull".into(), message));
        }
        // Upstream's image back-off: 10 s after a failed pull, doubling to 5 min.
        if self
            .pull_backoff
            .get(image)
            .is_some_and(|b| b.updated.elapsed() < b.delay)
        {
            let message = format!("Back-off pulling image \"{image}\"");
            self.shared
                .events
                .record(pod, Some(fp), true, "BackOff", &message)
                .await;
            return Err(("ImagePullBackOff".into(), message));
        }
        self.shared
            .events
            .record(
                pod,
                Some(fp),
                true,
                "Pulling",
                &format!("Pulling image \"{image}\""),
            )
            .await;
        let pulled = tokio::time::timeout(
            Duration::from_secs(60),
            images.pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            }),
        )
        .await;
        if !matches!(pulled, Ok(Ok(_))) {
            let delay = match self.pull_backoff.get(image) {
                Some(b) => (b.delay * 2).min(MAX_BACKOFF),
                None => INITIAL_BACKOFF,
            };
            self.pull_backoff.insert(
                image.to_string(),
                Backoff {
                    delay,
                    updated: Instant::now(),
                },
            );
        }
        match pulled {
            Ok(Ok(r)) => {
                self.pull_backoff.remove(image);
                Ok(r.into_inner().image_ref)
            }
            failed => {
                // A CRI error as the kubelet's gRPC client words it.
                let message = match failed {
                    Ok(Err(e)) => {
                        format!("rpc error: code = {:?} desc = {}", e.code(), e.message())
                    }
                    _ => "rpc error: code = DeadlineExceeded desc = context deadline exceeded"
                        .to_string(),
                };
                self.shared
                    .events
                    .record(
                        pod,
                        Some(fp),
                        false,
                        "Failed",
                        &format!("Failed to pull image \"{image}\": {message}"),
                    )
                    .await;
                Err(("ErrImagePull".into(), message))
            }
        }
    }

    /// Builds the pod's status as upstream's kubelet does and writes it when it changed.
    async fn write_status(
        &mut self,
        pod: &Pod,
        ips: Option<&Vec<String>>,
        hist: &HashMap<String, History>,
        initialized: bool,
        policy: &str,
    ) {
        let spec = pod.spec.clone().unwrap_or_default();
        let init_statuses: Vec<Value> = spec
            .init_containers
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|c| self.container_status(c, hist.get(&c.name), true, initialized))
            .collect();
        let statuses: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| self.container_status(c, hist.get(&c.name), false, initialized))
            .collect();
        let init_failed_never = policy == "Never"
            && init_statuses.iter().any(|s| {
                s["state"]["terminated"]["exitCode"]
                    .as_i64()
                    .is_some_and(|c| c != 0)
            });
        let phase = if init_failed_never {
            "Failed"
        } else if !initialized {
            "Pending"
        } else {
            pod_phase(&statuses, policy)
        };
        let unready: Vec<&str> = statuses
            .iter()
            .filter(|s| s["ready"] != true)
            .filter_map(|s| s["name"].as_str())
            .collect();
        let incomplete: Vec<&str> = init_statuses
            .iter()
            .filter(|s| s["state"]["terminated"]["exitCode"] != 0)
            .filter_map(|s| s["name"].as_str())
            .collect();
        let old_conds = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let now = clock::now_rfc3339();
        let cond = |kind: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
            let status = if ok { "True" } else { "False" };
            let since = old_conds
                .iter()
                .find(|c| c.type_ == kind && c.status == status)
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| {
                    clock::rfc3339(time::OffsetDateTime::from(std::time::SystemTime::from(t.0)))
                })
                .unwrap_or_else(|| now.clone());
            let mut c = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
            if let Some(r) = reason {
                c["reason"] = json!(r);
            }
            if let Some(m) = message {
                c["message"] = json!(m);
            }
            c
        };
        let finished = phase == "Succeeded" || phase == "Failed";
        let ready = unready.is_empty() && initialized && !finished;
        let not_ready_msg = format!("containers with unready status: [{}]", unready.join(" "));
        let (ready_reason, ready_msg) = if ready {
            (None, None)
        } else if finished {
            (Some("PodCompleted"), None)
        } else {
            (Some("ContainersNotReady"), Some(not_ready_msg))
        };
        let conditions = json!([
            cond(
                "PodReadyToStartContainers",
                ips.is_some() && !finished,
                None,
                None
            ),
            if initialized {
                cond(
                    "Initialized",
                    true,
                    if finished && spec.init_containers.is_some() {
                        Some("PodCompleted")
                    } else {
                        None
                    },
                    None,
                )
            } else {
                cond(
                    "Initialized",
                    false,
                    Some("ContainersNotInitialized"),
                    Some(format!(
                        "containers with incomplete status: [{}]",
                        incomplete.join(" ")
                    )),
                )
            },
            cond("Ready", ready, ready_reason, ready_msg.clone()),
            cond("ContainersReady", ready, ready_reason, ready_msg),
            cond("PodScheduled", true, None, None),
        ]);
        let ips = ips.cloned().unwrap_or_default();
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.shared.host_ip,
            "hostIPs": [{"ip": self.shared.host_ip}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
        });
        if !ips.is_empty() {
            status["podIP"] = json!(ips[0]);
            status["podIPs"] = json!(ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>());
        }
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.ns);
        match api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
        {
            Ok(_) => self.last_status = Some(status),
            Err(e) => tracing::debug!("pod {}/{} status: {e}", self.ns, self.name),
        }
    }

    fn container_status(
        &self,
        c: &Container,
        h: Option<&History>,
        init: bool,
        initialized: bool,
    ) -> Value {
        let image = c.image.clone().unwrap_or_default();
        let mut out = json!({"name": c.name, "image": image, "imageID": "", "ready": false,
            "restartCount": 0, "started": false, "lastState": {}});
        let terminated = |s: &cri::ContainerStatus| {
            let mut t = json!({
                "exitCode": s.exit_code,
                "reason": if s.reason.is_empty() { if s.exit_code == 0 { "Completed" } else { "Error" } } else { s.reason.as_str() },
                "startedAt": clock::rfc3339_from_nanos(s.started_at),
                "finishedAt": clock::rfc3339_from_nanos(s.finished_at),
                "containerID": format!("containerd://{}", s.id),
            });
            if !s.message.is_empty() {
                t["message"] = json!(s.message);
            }
            t
        };
        let latest = h.and_then(|h| h.latest.as_ref());
        if let Some(s) = latest {
            let attempt = s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
            out["restartCount"] = json!(attempt);
            out["containerID"] = json!(format!("containerd://{}", s.id));
            out["imageID"] = json!(s.image_ref);
            if let Some(img) = &s.image
                && !img.image.is_empty()
                && !img.image.starts_with("sha256:")
            {
                out["image"] = json!(img.image);
            }
            match state_of(s) {
                cri::ContainerState::ContainerRunning => {
                    out["state"] =
                        json!({"running": {"startedAt": clock::rfc3339_from_nanos(s.started_at)}});
                    out["ready"] = json!(!init && self.probes.ready(c, &s.id));
                    out["started"] = json!(self.probes.started(c, &s.id));
                    if let Some(p) = h.and_then(|h| h.previous.as_ref()) {
                        out["lastState"] = json!({"terminated": terminated(p)});
                    }
                }
                cri::ContainerState::ContainerExited => match self.waiting.get(&c.name) {
                    Some((reason, message)) => {
                        out["state"] = json!({"waiting": {"reason": reason, "message": message}});
                        out["lastState"] = json!({"terminated": terminated(s)});
                    }
                    None => {
                        out["state"] = json!({"terminated": terminated(s)});
                        if let Some(p) = h.and_then(|h| h.previous.as_ref()) {
                            out["lastState"] = json!({"terminated": terminated(p)});
                        }
                    }
                },
                _ => {
                    out["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
                }
            }
        } else {
            let (reason, message) = match self.waiting.get(&c.name) {
                Some((r, m)) => (r.clone(), Some(m.clone())),
                None if !init && !initialized => ("PodInitializing".to_string(), None),
                None => ("ContainerCreating".to_string(), None),
            };
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            out["state"] = json!({"waiting": w});
        }
        out
    }
}

/// How long a postStart hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a lifecycle hook (exec, httpGet, tcpSocket or sleep) within `budget`.
async fn run_hook(
    shared: &Shared,
    c: &Container,
    id: &str,
    ip: &str,
    hook: &k8s_openapi::api::core::v1::LifecycleHandler,
    budget: Duration,
) -> Result<(), String> {
    if let Some(sleep) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(budget)).await;
        return Ok(());
    }
    let h = super::probes::Handler {
        exec: hook.exec.as_ref(),
        http_get: hook.http_get.as_ref(),
        tcp_socket: hook.tcp_socket.as_ref(),
        grpc: None,
    };
    match tokio::time::timeout(budget, h.run(shared, c, id, ip, budget)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "hook did not finish within {}",
            go_duration(budget)
        )),
    }
}

/// Upstream's pod phase from its containers' states and the restart policy.
fn pod_phase(statuses: &[Value], policy: &str) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let st = &s["state"];
        if st.get("running").is_some() {
            running += 1;
        } else if let Some(t) = st.get("terminated") {
            stopped += 1;
            if t["exitCode"] == 0 {
                succeeded += 1;
            }
        } else if s["lastState"].get("terminated").is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

fn field_path(c: &Container, init: bool) -> String {
    if init {
        format!("spec.initContainers{{{}}}", c.name)
    } else {
        format!("spec.containers{{{}}}", c.name)
    }
}

/// Go's `time.Duration` text for whole seconds and minutes (`10s`, `5m0s`).
pub(super) fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_as_upstream() {
        let run = json!({"state": {"running": {}}});
        let ok = json!({"state": {"terminated": {"exitCode": 0}}});
        let bad = json!({"state": {"terminated": {"exitCode": 1}}});
        let crash = json!({"state": {"waiting": {}}, "lastState": {"terminated": {"exitCode": 1}}});
        let wait = json!({"state": {"waiting": {}}});
        assert_eq!(pod_phase(std::slice::from_ref(&run), "Always"), "Running");
        assert_eq!(pod_phase(std::slice::from_ref(&ok), "Never"), "Succeeded");
        assert_eq!(pod_phase(std::slice::from_ref(&bad), "Never"), "Failed");
        assert_eq!(pod_phase(&[bad], "OnFailure"), "Running");
        assert_eq!(pod_phase(&[crash], "Always"), "Running");
        assert_eq!(pod_phase(&[wait, run], "Always"), "Pending");
        assert_eq!(pod_phase(&[ok], "Always"), "Running");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(20)), "20s");
    }
}
