//! The scheduling loop: watches nodes and pods, keeps a snapshot of what each node runs (bound
//! pods plus pods it has just bound itself, "assumed", until the watch shows them), and takes
//! pending pods one at a time, highest priority first, through the plugins. Bindings go out
//! concurrently so the loop never waits on the API server; a pod that fits nowhere gets
//! `PodScheduled=False`, a `FailedScheduling` event, and is retried with back-off when the
//! cluster changes (a node, a pod freeing room), or after five minutes regardless.
//!
//! Owns only its in-memory queue; writes bindings, pod conditions, nominated nodes, events,
//! and deletes preemption victims, all through the API server.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use super::Metrics;
use super::plugins::{self, NodeInfo, PodInfo, Reason};
use crate::common::events::Recorder;

/// Upstream's per-pod back-off: 1 s doubling to 10 s.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long an unschedulable pod waits without any cluster change (upstream's
/// `podMaxInUnschedulablePodsDuration`).
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(300);
/// Bindings in flight at once.
const BIND_CONCURRENCY: usize = 32;
/// An assumed pod the watch never confirms is forgotten after this.
const ASSUME_TTL: Duration = Duration::from_secs(30);

struct Pending {
    pod: Pod,
    attempts: u32,
    /// When it may be tried again.
    next_try: Instant,
    last_try: Option<Instant>,
    /// Waiting for a cluster change rather than for its back-off.
    unschedulable: bool,
    /// The PodScheduled=False (reason, message) last written, so it is not rewritten.
    written: Option<(String, String)>,
}

enum Bound {
    Ok {
        uid: String,
    },
    Failed {
        uid: String,
        code: u16,
        message: String,
    },
}

pub struct Scheduler {
    client: kube::Client,
    name: String,
    events: Recorder,
    metrics: Arc<Metrics>,
    nodes: Vec<NodeInfo>,
    /// uid → node of every pod in the snapshot.
    placed: HashMap<String, String>,
    /// uid → (node, when) of pods bound by us and not yet seen bound.
    assumed: HashMap<String, (String, Instant)>,
    pending: HashMap<String, Pending>,
    in_flight: HashSet<String>,
    bind_tx: mpsc::UnboundedSender<Bound>,
    bind_rx: mpsc::UnboundedReceiver<Bound>,
    permits: Arc<Semaphore>,
}

fn uid(p: &Pod) -> String {
    p.uid().unwrap_or_default()
}

fn terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn node_name(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn key(p: &Pod) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

impl Scheduler {
    pub fn new(client: kube::Client, name: String, metrics: Arc<Metrics>) -> Self {
        let (bind_tx, bind_rx) = mpsc::unbounded_channel();
        Scheduler {
            events: Recorder::new(client.clone(), &name, None),
            client,
            name,
            metrics,
            nodes: Vec::new(),
            placed: HashMap::new(),
            assumed: HashMap::new(),
            pending: HashMap::new(),
            in_flight: HashSet::new(),
            bind_tx,
            bind_rx,
            permits: Arc::new(Semaphore::new(BIND_CONCURRENCY)),
        }
    }

    fn ours(&self, p: &Pod) -> bool {
        p.spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler")
            == self.name
    }

    /// Runs until the watches end (never, in practice: they retry with back-off).
    pub async fn run(mut self) {
        let pods = watcher::watcher(
            Api::<Pod>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff();
        let nodes = watcher::watcher(
            Api::<Node>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff();
        let mut pods = std::pin::pin!(pods);
        let mut nodes = std::pin::pin!(nodes);
        let mut pod_list: Option<Vec<Pod>> = None;
        let mut node_list: Option<Vec<Node>> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                ev = pods.next() => match ev {
                    Some(Ok(Event::Init)) => pod_list = Some(Vec::new()),
                    Some(Ok(Event::InitApply(p))) => pod_list.get_or_insert_default().push(p),
                    Some(Ok(Event::InitDone)) => {
                        let list = pod_list.take().unwrap_or_default();
                        self.relist_pods(list);
                    }
                    Some(Ok(Event::Apply(p))) => self.pod_changed(p),
                    Some(Ok(Event::Delete(p))) => self.pod_deleted(&p),
                    Some(Err(e)) => tracing::warn!("pod watch: {e}"),
                    None => return,
                },
                ev = nodes.next() => match ev {
                    Some(Ok(Event::Init)) => node_list = Some(Vec::new()),
                    Some(Ok(Event::InitApply(n))) => node_list.get_or_insert_default().push(n),
                    Some(Ok(Event::InitDone)) => {
                        let list = node_list.take().unwrap_or_default();
                        self.relist_nodes(list);
                    }
                    Some(Ok(Event::Apply(n))) => self.node_changed(n),
                    Some(Ok(Event::Delete(n))) => {
                        self.nodes.retain(|x| x.name() != n.name_any());
                    }
                    Some(Err(e)) => tracing::warn!("node watch: {e}"),
                    None => return,
                },
                Some(b) = self.bind_rx.recv() => self.bound(b),
                _ = tick.tick() => {}
            }
            // Drain whatever else is ready before scheduling, so a burst is seen whole.
            while let Ok(b) = self.bind_rx.try_recv() {
                self.bound(b);
            }
            self.schedule_due().await;
        }
    }

    fn node_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        self.nodes.iter_mut().find(|n| n.name() == name)
    }

    /// Removes a pod from the snapshot.
    fn unplace(&mut self, uid: &str) {
        if let Some(node) = self.placed.remove(uid)
            && let Some(n) = self.node_mut(&node)
        {
            n.pods.retain(|p| p.pod.uid().as_deref() != Some(uid));
        }
    }

    fn place(&mut self, node: &str, info: PodInfo) {
        let uid = uid(&info.pod);
        self.unplace(&uid);
        if let Some(n) = self.node_mut(node) {
            n.pods.push(info);
            self.placed.insert(uid, node.to_string());
        }
    }

    /// Room may have been made: unschedulable pods get their next try after their back-off.
    fn cluster_changed(&mut self) {
        for p in self.pending.values_mut() {
            if p.unschedulable {
                p.unschedulable = false;
                let due = p
                    .last_try
                    .map(|t| t + backoff(p.attempts))
                    .unwrap_or_else(Instant::now);
                p.next_try = p.next_try.min(due);
            }
        }
    }

    fn relist_nodes(&mut self, list: Vec<Node>) {
        let names: HashSet<String> = list.iter().map(|n| n.name_any()).collect();
        self.nodes.retain(|n| names.contains(&n.name()));
        for n in list {
            self.node_changed(n);
        }
    }

    fn node_changed(&mut self, node: Node) {
        let name = node.name_any();
        match self.node_mut(&name) {
            Some(n) => {
                let pods = std::mem::take(&mut n.pods);
                *n = NodeInfo::new(node);
                n.pods = pods;
            }
            None => {
                self.nodes.push(NodeInfo::new(node));
                // Pods bound to it before it was seen.
                let waiting: Vec<(String, String)> = self
                    .placed
                    .iter()
                    .filter(|(_, n)| **n == name)
                    .map(|(u, n)| (u.clone(), n.clone()))
                    .collect();
                for (u, _) in waiting {
                    self.placed.remove(&u);
                }
            }
        }
        self.cluster_changed();
    }

    fn relist_pods(&mut self, list: Vec<Pod>) {
        let live: HashSet<String> = list.iter().map(uid).collect();
        let gone: Vec<String> = self
            .placed
            .keys()
            .filter(|u| !live.contains(*u) && !self.assumed.contains_key(*u))
            .cloned()
            .collect();
        for u in gone {
            self.unplace(&u);
        }
        self.pending.retain(|u, _| live.contains(u));
        for p in list {
            self.pod_changed(p);
        }
        self.cluster_changed();
    }

    fn pod_changed(&mut self, pod: Pod) {
        let u = uid(&pod);
        if let Some(node) = node_name(&pod).map(str::to_string) {
            self.pending.remove(&u);
            self.assumed.remove(&u);
            if terminal(&pod) {
                if self.placed.contains_key(&u) {
                    self.unplace(&u);
                    self.cluster_changed();
                }
            } else {
                let changed_labels = self
                    .placed
                    .get(&u)
                    .and_then(|n| self.nodes.iter().find(|x| x.name() == *n))
                    .and_then(|n| n.pods.iter().find(|p| uid(&p.pod) == u))
                    .is_none_or(|p| p.pod.metadata.labels != pod.metadata.labels);
                self.place(&node, PodInfo::new(pod).slim());
                if changed_labels {
                    // Affinity rules of waiting pods may now be met.
                    self.cluster_changed();
                }
            }
            return;
        }
        if !self.ours(&pod)
            || terminal(&pod)
            || self.in_flight.contains(&u)
            || self.assumed.contains_key(&u)
        {
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            self.pending.remove(&u);
            return;
        }
        match self.pending.get_mut(&u) {
            Some(p) => p.pod = pod,
            None => {
                self.pending.insert(
                    u,
                    Pending {
                        pod,
                        attempts: 0,
                        next_try: Instant::now(),
                        last_try: None,
                        unschedulable: false,
                        written: None,
                    },
                );
            }
        }
    }

    fn pod_deleted(&mut self, pod: &Pod) {
        let u = uid(pod);
        self.pending.remove(&u);
        self.assumed.remove(&u);
        if self.placed.contains_key(&u) {
            self.unplace(&u);
            self.cluster_changed();
        }
    }

    fn bound(&mut self, b: Bound) {
        match b {
            Bound::Ok { uid } => {
                self.in_flight.remove(&uid);
                self.metrics.attempt("scheduled");
            }
            Bound::Failed { uid, code, message } => {
                self.in_flight.remove(&uid);
                self.assumed.remove(&uid);
                self.unplace(&uid);
                self.metrics.attempt("error");
                // 404: gone; 409: bound elsewhere or being deleted. The watch tells the rest.
                if code != 404 && code != 409 {
                    tracing::warn!("binding pod uid {uid}: {message}");
                }
                self.cluster_changed();
            }
        }
    }

    /// Tries every pending pod whose time has come, most important first.
    async fn schedule_due(&mut self) {
        let now = Instant::now();
        // Assumptions the watch never confirmed (the pod vanished unseen) lapse.
        let stale: Vec<String> = self
            .assumed
            .iter()
            .filter(|(u, (_, at))| at.elapsed() > ASSUME_TTL && !self.in_flight.contains(*u))
            .map(|(u, _)| u.clone())
            .collect();
        for u in stale {
            self.assumed.remove(&u);
            self.unplace(&u);
        }
        let mut due: Vec<(i32, Option<k8s_openapi::jiff::Timestamp>, String)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_try <= now)
            .map(|(u, p)| {
                (
                    p.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
                    p.pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    u.clone(),
                )
            })
            .collect();
        due.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        self.metrics.set_pending(
            self.pending.len() - due.len(),
            due.len(),
            self.pending.values().filter(|p| p.unschedulable).count(),
        );
        for (_, _, u) in due {
            self.schedule_one(&u).await;
        }
    }

    /// Nodes with the pods nominated to them that outrank (or equal) `pod` added, so freed
    /// room waits for the pod that preempted for it.
    fn snapshot_for(&self, pod: &PodInfo) -> Vec<NodeInfo> {
        let nominated: Vec<(&str, PodInfo)> = self
            .pending
            .values()
            .filter(|p| uid(&p.pod) != uid(&pod.pod))
            .filter_map(|p| {
                let n = p.pod.status.as_ref()?.nominated_node_name.as_deref()?;
                let info = PodInfo::new(p.pod.clone());
                (info.priority >= pod.priority).then_some((n, info))
            })
            .collect();
        if nominated.is_empty() {
            return self.nodes.clone();
        }
        let mut nodes = self.nodes.clone();
        for (n, info) in nominated {
            if let Some(node) = nodes.iter_mut().find(|x| x.name() == n) {
                node.pods.push(info);
            }
        }
        nodes
    }

    async fn schedule_one(&mut self, u: &str) {
        let Some(p) = self.pending.get_mut(u) else {
            return;
        };
        p.attempts += 1;
        p.last_try = Some(Instant::now());
        let pod = p.pod.clone();
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty())
        {
            // Gated pods wait for a change to their own spec, which the watch brings.
            p.next_try = Instant::now() + UNSCHEDULABLE_RETRY;
            p.unschedulable = true;
            self.set_condition(
                u,
                "SchedulingGated",
                "Scheduling is blocked due to non-empty scheduling gates",
            )
            .await;
            return;
        }
        let info = PodInfo::new(pod.clone());
        let nominated = self.pending.values().any(|p| {
            p.pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.as_ref())
                .is_some()
        });
        let snapshot = nominated.then(|| self.snapshot_for(&info));
        let all: &[NodeInfo] = snapshot.as_deref().unwrap_or(&self.nodes);
        let mut reasons: HashMap<String, Vec<Reason>> = HashMap::new();
        let mut best: Option<(i64, String)> = None;
        for n in all {
            let r = plugins::filter(&info, n, all);
            if r.is_empty() {
                let s = plugins::score(&info, n, all);
                if best.as_ref().is_none_or(|(b, _)| s > *b) {
                    best = Some((s, n.name()));
                }
            } else {
                reasons.insert(n.name(), r);
            }
        }
        if let Some((_, node)) = best {
            self.assume_and_bind(u, pod, info, node);
            return;
        }
        let all = snapshot.unwrap_or_else(|| self.nodes.clone());
        let post = self.preempt(&info, &all).await;
        let msg = plugins::fit_error(all.len(), &reasons, post.as_deref());
        self.metrics.attempt("unschedulable");
        self.events
            .record(&pod, None, false, "FailedScheduling", &msg)
            .await;
        if let Some(p) = self.pending.get_mut(u) {
            p.unschedulable = true;
            p.next_try = Instant::now() + UNSCHEDULABLE_RETRY;
        }
        self.set_condition(u, "Unschedulable", &msg).await;
    }

    fn assume_and_bind(&mut self, u: &str, pod: Pod, info: PodInfo, node: String) {
        self.pending.remove(u);
        self.place(&node, info.slim());
        self.assumed
            .insert(u.to_string(), (node.clone(), Instant::now()));
        self.in_flight.insert(u.to_string());
        let (client, tx, permits, events) = (
            self.client.clone(),
            self.bind_tx.clone(),
            self.permits.clone(),
            self.events.clone(),
        );
        let u = u.to_string();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let ns = pod.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client, &ns);
            let binding = Binding {
                metadata: kube::api::ObjectMeta {
                    name: Some(pod.name_any()),
                    namespace: Some(ns.clone()),
                    uid: pod.uid(),
                    ..Default::default()
                },
                target: ObjectReference {
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..Default::default()
                },
            };
            let res: Result<serde_json::Value, kube::Error> = api
                .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
                .await;
            let msg = match res {
                Ok(_) => {
                    events
                        .record(
                            &pod,
                            None,
                            true,
                            "Scheduled",
                            &format!("Successfully assigned {} to {node}", key(&pod)),
                        )
                        .await;
                    Bound::Ok { uid: u }
                }
                Err(kube::Error::Api(s)) => Bound::Failed {
                    uid: u,
                    code: s.code,
                    message: s.message,
                },
                Err(e) => Bound::Failed {
                    uid: u,
                    code: 0,
                    message: e.to_string(),
                },
            };
            let _ = tx.send(msg);
        });
    }

    /// Upstream's default preemption on the nodes where only removable pods stand in the way:
    /// evicts the fewest lower-priority pods and nominates the node. Returns the PostFilter
    /// text for the event when nothing was preempted.
    async fn preempt(&mut self, pod: &PodInfo, all: &[NodeInfo]) -> Option<String> {
        let total = all.len();
        if pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.preemption_policy.as_deref())
            == Some("Never")
        {
            return Some(format!(
                "preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."
            ));
        }
        let u = uid(&pod.pod);
        // Victims already on their way out: wait for them rather than evict more.
        if let Some(n) = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            && all.iter().any(|x| {
                x.name() == n
                    && x.pods.iter().any(|p| {
                        p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_some()
                    })
            })
        {
            return None;
        }
        let mut helpless = 0;
        let mut no_victims = 0;
        for n in all {
            let r = plugins::filter(pod, n, all);
            if r.iter().any(|r| !r.resolvable) {
                helpless += 1;
                continue;
            }
            match plugins::victims(pod, n, all) {
                Some(v) if !v.is_empty() => {
                    let node = n.name();
                    for victim in &v {
                        self.evict(victim, &pod.pod, &node).await;
                    }
                    self.nominate(&u, &pod.pod, &node).await;
                    return None;
                }
                _ => no_victims += 1,
            }
        }
        let mut parts = Vec::new();
        if no_victims > 0 {
            parts.push(format!(
                "{no_victims} No preemption victims found for incoming pod"
            ));
        }
        if helpless > 0 {
            parts.push(format!(
                "{helpless} Preemption is not helpful for scheduling"
            ));
        }
        parts.sort();
        Some(format!(
            "preemption: 0/{total} nodes are available: {}.",
            parts.join(", ")
        ))
    }

    async fn evict(&self, victim: &PodInfo, by: &Pod, node: &str) {
        let ns = victim.pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let cond = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": format!("{}: preempting to accommodate a higher priority pod", self.name),
            "lastTransitionTime": crate::common::clock::now_rfc3339(),
        }]}});
        let name = victim.pod.name_any();
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&cond))
            .await
        {
            tracing::debug!("condition on victim {ns}/{name}: {e}");
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                self.events
                    .record(
                        &victim.pod,
                        None,
                        true,
                        "Preempted",
                        &format!("Preempted by pod {} on node {node}", uid(by)),
                    )
                    .await;
            }
            Err(e) => tracing::warn!("preempting {ns}/{name}: {e}"),
        }
    }

    async fn nominate(&mut self, u: &str, pod: &Pod, node: &str) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": {"nominatedNodeName": node}});
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(p) => {
                if let Some(x) = self.pending.get_mut(u) {
                    x.pod = p;
                }
            }
            Err(e) => tracing::warn!("nominating {} for {}: {e}", node, key(pod)),
        }
    }

    /// Writes PodScheduled=False with this reason and message, unless it already says so.
    async fn set_condition(&mut self, u: &str, reason: &str, message: &str) {
        let Some(p) = self.pending.get_mut(u) else {
            return;
        };
        let want = (reason.to_string(), message.to_string());
        if p.written.as_ref() == Some(&want) {
            return;
        }
        let already = p
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
            .is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some(reason)
                    && c.message.as_deref() == Some(message)
            });
        p.written = Some(want);
        if already {
            return;
        }
        let pod = p.pod.clone();
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
            "lastProbeTime": null, "lastTransitionTime": crate::common::clock::now_rfc3339(),
        }]}});
        if let Err(e) = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            tracing::debug!("PodScheduled on {}: {e}", key(&pod));
            if let Some(p) = self.pending.get_mut(u) {
                p.written = None;
            }
        }
    }
}

fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(8);
    INITIAL_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_upstreams() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(5), MAX_BACKOFF);
        assert_eq!(backoff(50), MAX_BACKOFF);
    }
}
