//! Upstream's DaemonSet controller: one pod of a DaemonSet on every node that should run it
//! (nodeName, nodeSelector, required node affinity, and taints against its tolerations, judged
//! by the scheduler's own filters), rolled to a new template by RollingUpdate (maxUnavailable,
//! maxSurge) or left for the user to delete (OnDelete), and the ControllerRevision history that
//! `kubectl rollout history/undo daemonset` reads.
//!
//! Owns the controller ownerReference of matching pods and ControllerRevisions, the pods it
//! creates and deletes, its ControllerRevisions, the Events `SuccessfulCreate`/`FailedCreate`/
//! `SuccessfulDelete`/`FailedDelete`/`FailedDaemonPod`/`SelectingAll`, and the DaemonSet's
//! `status`. Never binds a pod: as upstream since 1.12, a pod gets a required node affinity
//! on `metadata.name` and the default scheduler binds it. Never touches nodes, nor a
//! DaemonSet's spec or metadata.
//!
//! The revision-history helpers ([`sync_history`], [`cleanup_history`]) are shared with the
//! StatefulSet controller, whose revisions have the same shape.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::Selector;
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

use super::deployment::{pod_template_hash, scaled_value};
use super::metrics::Metrics;
use super::replicaset::{
    claim, controller_ref, create_pods, delete_pods, is_ready, owners_of, phase, selector,
    until_available,
};
use super::{Backoff, log_outcome};
use crate::common::events;
use crate::scheduler::plugins::{self, NodeInfo, PodInfo};

pub const NAME: &str = "daemonset-controller";
pub const ALIAS: &str = "daemonset";
const QUEUE: &str = "daemonset";

/// The label naming the revision a pod (or a revision itself) was made from.
pub(super) const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The DaemonSet generation a pod was made at (upstream still sets it).
const GENERATION_LABEL: &str = "pod-template-generation";
/// The annotation upstream's API server keeps the template generation in, when present.
const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";
/// Upstream's default `revisionHistoryLimit`.
pub(super) const DEFAULT_HISTORY_LIMIT: i32 = 10;
/// Upstream's back-off before replacing a failed daemon pod on the same node again.
const FAILED_POD_FIRST: Duration = Duration::from_secs(1);
const FAILED_POD_MAX: Duration = Duration::from_secs(900);

#[derive(Debug, thiserror::Error)]
pub enum DaemonSetError {
    #[error("daemon set {namespace}/{name}: {cause}")]
    Api {
        namespace: String,
        name: String,
        cause: kube::Error,
    },
    #[error("daemon set {namespace}/{name}: {cause}")]
    History {
        namespace: String,
        name: String,
        cause: HistoryError,
    },
    #[error("daemon set {namespace}/{name}: {message}")]
    FailedCreate {
        namespace: String,
        name: String,
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(
        "controller revision {name} exists with another template; collisionCount is now {count}"
    )]
    Collision { name: String, count: i32 },
}

// ---------------------------------------------------------------------------
// Revision history (shared with the StatefulSet controller)
// ---------------------------------------------------------------------------

/// The data upstream stores in a revision: the strategic-merge patch that puts the template
/// back, which is what `kubectl rollout undo` applies to the owner.
pub(super) fn revision_data(template: &PodTemplateSpec) -> serde_json::Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

pub(super) fn revision_template(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let t = cr.data.as_ref()?.0.pointer("/spec/template")?.clone();
    serde_json::from_value(t).ok()
}

/// An owner's revisions after [`sync_history`].
pub(super) struct History {
    /// The revision of the owner's current template.
    pub current: ControllerRevision,
    /// Every revision the owner controls, `current` included.
    pub all: Vec<ControllerRevision>,
}

/// Upstream's `constructHistory`: claims the owner's ControllerRevisions, finds the one holding
/// `template` (renumbered as the newest when it is an older one, as after an undo, its
/// duplicates deleted) or creates it as `<owner>-<hash>`. A name taken by another template is
/// a hash collision: the caller bumps `status.collisionCount` and tries again.
pub(super) async fn sync_history<K>(
    owner: &K,
    sel: Option<&Selector>,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
    client: &kube::Client,
) -> Result<History, HistoryError>
where
    K: Resource<DynamicType = ()>,
{
    let ns = owner.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let listed = api.list(&ListParams::default()).await?.items;
    let mut owned = claim(owner, sel, listed, &api).await?;
    owned.retain(|r| r.metadata.deletion_timestamp.is_none());
    owned.sort_by_key(|r| r.revision);
    let newest = owned.last().map_or(0, |r| r.revision);
    let want = pod_template_hash(template, None);
    let (mut equal, mut all): (Vec<_>, Vec<_>) = owned
        .into_iter()
        .partition(|r| revision_template(r).is_some_and(|t| pod_template_hash(&t, None) == want));
    if let Some(mut current) = equal.pop() {
        for dup in equal {
            match api.delete(&dup.name_any(), &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if current.revision < newest {
            let patch = json!({"revision": newest + 1});
            current = api
                .patch(
                    &current.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        all.push(current.clone());
        return Ok(History { current, all });
    }
    let hash = pod_template_hash(template, collision_count);
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), hash.clone());
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", owner.name_any())),
            namespace: Some(ns),
            labels: Some(labels),
            annotations: owner.meta().annotations.clone(),
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        data: Some(RawExtension(revision_data(template))),
        revision: newest + 1,
    };
    match api.create(&PostParams::default(), &revision).await {
        Ok(current) => {
            all.push(current.clone());
            Ok(History { current, all })
        }
        // Not one of ours with this template (that one was found above): a collision.
        Err(kube::Error::Api(s)) if s.code == 409 => Err(HistoryError::Collision {
            name: revision.name_any(),
            count: collision_count.unwrap_or(0).saturating_add(1),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Upstream's `cleanupHistory`: deletes the oldest revisions beyond `limit` that are neither
/// current nor `in_use` by a live pod.
pub(super) async fn cleanup_history(
    history: &History,
    limit: i32,
    in_use: impl Fn(&ControllerRevision) -> bool,
    client: &kube::Client,
) -> Result<(), kube::Error> {
    let current = history.current.name_any();
    let mut old: Vec<&ControllerRevision> = history
        .all
        .iter()
        .filter(|r| r.name_any() != current && !in_use(r))
        .collect();
    let excess = old.len().saturating_sub(limit.max(0) as usize);
    old.sort_by_key(|r| r.revision);
    for r in old.into_iter().take(excess) {
        let api: Api<ControllerRevision> =
            Api::namespaced(client.clone(), &r.namespace().unwrap_or_default());
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Daemon pods
// ---------------------------------------------------------------------------

/// Upstream's `AddOrUpdateDaemonPodTolerations`: daemon pods stay through not-ready,
/// unreachable, pressure and cordoned nodes (and network-unavailable with host networking).
/// A toleration that matches one of these but for its seconds is replaced, as upstream.
fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        let same = |x: &Toleration| {
            x.key == t.key
                && x.effect == t.effect
                && x.operator == t.operator
                && x.value.as_deref().unwrap_or("").is_empty()
        };
        match list.iter().position(same) {
            Some(i) => list[i] = t,
            None => list.push(t),
        }
    }
}

/// The template generation: upstream's annotation when the API server keeps it, else the
/// object's generation (which moves with every template change too).
fn template_generation(ds: &DaemonSet) -> Option<String> {
    ds.annotations()
        .get(TEMPLATE_GENERATION)
        .cloned()
        .or_else(|| ds.metadata.generation.map(|g| g.to_string()))
}

/// The template daemon pods are made from, as upstream's `CreatePodTemplate`: the daemon
/// tolerations, and the generation and revision labels.
fn daemon_template(ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
    let mut t = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    add_daemon_tolerations(t.spec.get_or_insert_with(Default::default));
    let labels = t
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    if let Some(g) = template_generation(ds) {
        labels.insert(GENERATION_LABEL.into(), g);
    }
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    t
}

/// Upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required node terms become the
/// one that names the node (the node's fitness was checked already).
fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let mut a = affinity.unwrap_or_default();
    let na = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
            match_expressions: None,
        }],
    });
    a
}

fn daemon_pod(ds: &DaemonSet, template: &PodTemplateSpec, node: &str) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref(ds)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Upstream's `GetTargetNodeName`: the node a pod is bound to, else the one its daemon
/// affinity names.
fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// Upstream's `NodeShouldRunDaemonPod`: (should run a daemon pod, should keep one it has).
/// A pod kept on a node is only evicted by a NoExecute taint it does not tolerate.
fn should_run(probe: &PodInfo, node: &Node) -> (bool, bool) {
    let info = NodeInfo::new(node.clone());
    if !plugins::node_name(probe, &info).is_empty()
        || !plugins::node_affinity(probe, &info).is_empty()
    {
        return (false, false);
    }
    if plugins::taint_toleration(probe, &info).is_empty() {
        return (true, true);
    }
    let tolerations = probe
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let keep = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| plugins::tolerates(t, taint)));
    (false, keep)
}

fn is_available(pod: &Pod, min_ready: i32, now: k8s_openapi::jiff::Timestamp) -> bool {
    until_available(pod, min_ready, now) == Some(0)
}

/// Upstream's `IsPodUpdated`: made from the current revision (or template generation).
fn is_updated(pod: &Pod, hash: &str, generation: Option<&str>) -> bool {
    let labels = pod.labels();
    (!hash.is_empty() && labels.get(REVISION_HASH_LABEL).map(String::as_str) == Some(hash))
        || generation.is_some_and(|g| labels.get(GENERATION_LABEL).map(String::as_str) == Some(g))
}

/// Upstream's `podByCreationTimestampAndPhase`: running first, then oldest, then by name.
fn oldest_first(pods: &mut [&Pod]) {
    pods.sort_by_cached_key(|p| {
        (
            phase(p) != "Running",
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.name_any(),
        )
    });
}

/// Upstream's `findUpdatedPodsOnNode`: the node's one new and one old live pod; `None` when
/// there are more of either (the manage step sorts that out first).
fn new_and_old<'a>(
    pods: &'a [Pod],
    hash: &str,
    generation: Option<&str>,
) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let slot = if is_updated(p, hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.replace(p).is_some() {
            return None;
        }
    }
    Some((new, old))
}

/// Back-off of replacing failed daemon pods, by DaemonSet and node: (last try, delay).
#[derive(Default)]
struct FailedPods(Mutex<HashMap<String, (Instant, Duration)>>);

impl FailedPods {
    /// How long until the node's next replacement may go, if it is still backing off.
    fn waiting(&self, key: &str) -> Option<Duration> {
        let m = self.0.lock();
        let (at, delay) = m.get(key)?;
        delay.checked_sub(at.elapsed()).filter(|d| !d.is_zero())
    }

    fn next(&self, key: &str) {
        let mut m = self.0.lock();
        let e = m
            .entry(key.to_string())
            .or_insert((Instant::now(), Duration::ZERO));
        e.1 = if e.1.is_zero() {
            FAILED_POD_FIRST
        } else {
            (e.1 * 2).min(FAILED_POD_MAX)
        };
        e.0 = Instant::now();
    }
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
    failed: FailedPods,
}

fn key(ds: &DaemonSet) -> String {
    format!("{}/{}", ds.namespace().unwrap_or_default(), ds.name_any())
}

/// What one sync decided about the nodes.
#[derive(Default)]
struct Plan {
    create_on: Vec<String>,
    delete: Vec<Pod>,
    recheck: Option<Duration>,
}

impl Plan {
    fn recheck_in(&mut self, d: Duration) {
        self.recheck = Some(self.recheck.map_or(d, |r| r.min(d)));
    }
}

/// One DaemonSet's view of the cluster for a sync.
struct View<'a> {
    ds: &'a DaemonSet,
    nodes: Vec<(Node, bool, bool)>,
    /// Live daemon pods by the node they are on (or meant for).
    by_node: BTreeMap<String, Vec<Pod>>,
    hash: String,
    generation: Option<String>,
    min_ready: i32,
}

impl View<'_> {
    fn surge_allowed(&self) -> bool {
        self.max_surge_spec()
            .is_some_and(|s| scaled_value(&s, 1, true) > 0)
    }

    fn max_surge_spec(&self) -> Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString> {
        let s = self.ds.spec.as_ref()?.update_strategy.as_ref()?;
        if s.type_.as_deref() != Some("RollingUpdate") {
            return None;
        }
        s.rolling_update.as_ref()?.max_surge.clone()
    }

    fn on(&self, node: &str) -> &[Pod] {
        self.by_node.get(node).map_or(&[], Vec::as_slice)
    }

    /// Upstream's `manage`/`podsShouldBeOnNode`: which nodes need a pod and which pods go.
    fn manage(&self, ctx: &Ctx, plan: &mut Plan, failed_events: &mut Vec<String>) {
        let ns = self.ds.namespace().unwrap_or_default();
        for (node, run, keep) in &self.nodes {
            let name = node.name_any();
            let pods = self.on(&name);
            if *run && pods.is_empty() {
                plan.create_on.push(name);
                continue;
            }
            if !*keep {
                plan.delete.extend(
                    pods.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .cloned(),
                );
                continue;
            }
            let mut running = Vec::new();
            for p in pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
            {
                match phase(p) {
                    "Failed" => {
                        let k = format!("{}/{name}", key(self.ds));
                        if let Some(wait) = ctx.failed.waiting(&k) {
                            plan.recheck_in(wait);
                            continue;
                        }
                        ctx.failed.next(&k);
                        failed_events.push(format!(
                            "Found failed daemon pod {ns}/{} on node {name}, will try to kill it",
                            p.name_any()
                        ));
                        plan.delete.push(p.clone());
                    }
                    "Succeeded" => plan.delete.push(p.clone()),
                    _ => running.push(p),
                }
            }
            if running.len() <= 1 {
                continue;
            }
            oldest_first(&mut running);
            if !self.surge_allowed() {
                plan.delete
                    .extend(running[1..].iter().map(|p| (*p).clone()));
                continue;
            }
            // With surge, a new pod and an old one may overlap until the new one is ready.
            let (mut newest, mut oldest) = (None, None);
            for p in running {
                let slot = if p.labels().get(REVISION_HASH_LABEL) == Some(&self.hash) {
                    &mut newest
                } else {
                    &mut oldest
                };
                if slot.is_none() {
                    *slot = Some(p);
                } else {
                    plan.delete.push(p.clone());
                }
            }
            if let (Some(n), Some(o)) = (newest, oldest)
                && (!is_ready(o) || is_ready(n))
            {
                plan.delete.push(o.clone());
            }
        }
    }

    /// Upstream's `updatedDesiredNodeCounts`: (desired, maxSurge, maxUnavailable).
    fn budgets(&self) -> (i32, i32, i32) {
        let desired = self.nodes.iter().filter(|(_, run, _)| *run).count() as i32;
        let ru = self
            .ds
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|s| s.rolling_update.as_ref());
        let scaled = |v: Option<&k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>| {
            v.map_or(0, |v| scaled_value(v, desired, true))
        };
        let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()));
        let mut unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()));
        if desired > 0 && surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        (desired, surge, unavailable)
    }

    /// Upstream's `rollingUpdate`: old pods to delete, and nodes to surge a new pod onto.
    fn rolling_update(&self, plan: &mut Plan) {
        let now = k8s_openapi::jiff::Timestamp::now();
        let (_, max_surge, max_unavailable) = self.budgets();
        let generation = self.generation.as_deref();
        let available = |p: &Pod| is_available(p, self.min_ready, now);
        let running = self.nodes.iter().filter(|(_, run, _)| *run);
        if max_surge == 0 {
            let (mut unavailable, mut now_ok, mut candidates) = (0, Vec::new(), Vec::new());
            for (node, _, _) in running {
                let Some((new, old)) =
                    new_and_old(self.on(&node.name_any()), &self.hash, generation)
                else {
                    unavailable += 1;
                    continue;
                };
                match (new, old) {
                    (None, None) | (Some(_), Some(_)) => unavailable += 1,
                    (Some(n), None) => {
                        if !available(n) {
                            unavailable += 1;
                        }
                    }
                    (None, Some(o)) if !available(o) => now_ok.push(o.clone()),
                    (None, Some(_)) if unavailable >= max_unavailable => {}
                    (None, Some(o)) => candidates.push(o.clone()),
                }
            }
            let room = (max_unavailable - unavailable).max(0) as usize;
            candidates.truncate(room);
            plan.delete.extend(now_ok);
            plan.delete.extend(candidates);
            return;
        }
        let mut surged = 0;
        for (node, _, _) in running {
            let name = node.name_any();
            let Some((new, old)) = new_and_old(self.on(&name), &self.hash, generation) else {
                surged += 1;
                continue;
            };
            match (new, old) {
                (_, None) => {}
                (None, Some(o)) if !available(o) => plan.create_on.push(name),
                (None, Some(_)) if surged >= max_surge => {}
                (None, Some(_)) => {
                    surged += 1;
                    plan.create_on.push(name);
                }
                (Some(n), Some(_)) if !available(n) => surged += 1,
                (Some(_), Some(o)) => plan.delete.push(o.clone()),
            }
        }
    }

    /// Upstream's `updateDaemonSetStatus`; when to look again for pods that become available.
    fn status(&self, collision_count: Option<i32>) -> (DaemonSetStatus, Option<Duration>) {
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut s = self.ds.status.clone().unwrap_or_default();
        let (mut desired, mut current, mut mis, mut ready, mut available, mut updated) =
            (0, 0, 0, 0, 0, 0);
        let mut recheck: Option<i64> = None;
        for (node, run, _) in &self.nodes {
            let mut pods: Vec<&Pod> = self.on(&node.name_any()).iter().collect();
            if !run {
                mis += i32::from(!pods.is_empty());
                continue;
            }
            desired += 1;
            if pods.is_empty() {
                continue;
            }
            current += 1;
            pods.sort_by_cached_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let pod = pods[0];
            if is_ready(pod) {
                ready += 1;
                match until_available(pod, self.min_ready, now) {
                    Some(0) => available += 1,
                    Some(secs) => recheck = Some(recheck.map_or(secs, |r| r.min(secs))),
                    None => {}
                }
            }
            if is_updated(pod, &self.hash, self.generation.as_deref()) {
                updated += 1;
            }
        }
        let nonzero = |v: i32| (v != 0).then_some(v);
        s.desired_number_scheduled = desired;
        s.current_number_scheduled = current;
        s.number_misscheduled = mis;
        s.number_ready = ready;
        s.number_available = nonzero(available);
        s.number_unavailable = nonzero(desired - available);
        s.updated_number_scheduled = nonzero(updated);
        s.observed_generation = self.ds.metadata.generation;
        s.collision_count = collision_count;
        (s, recheck.map(|r| Duration::from_secs(r as u64 + 1)))
    }
}

/// Writes `status` through the status subresource, zero counts as absent (as upstream's
/// omitempty fields read back).
async fn write_status(
    ds: &DaemonSet,
    status: &DaemonSetStatus,
    client: &kube::Client,
) -> Result<(), kube::Error> {
    if ds.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &ds.namespace().unwrap_or_default());
    let body = json!({"status": {
        "desiredNumberScheduled": status.desired_number_scheduled,
        "currentNumberScheduled": status.current_number_scheduled,
        "numberMisscheduled": status.number_misscheduled,
        "numberReady": status.number_ready,
        "numberAvailable": status.number_available,
        "numberUnavailable": status.number_unavailable,
        "updatedNumberScheduled": status.updated_number_scheduled,
        "observedGeneration": status.observed_generation,
        "collisionCount": status.collision_count,
    }});
    match super::update_merged(&api, ds, &body, true).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn sync(ds: &DaemonSet, ctx: &Ctx) -> Result<Option<Duration>, DaemonSetError> {
    let ns = ds.namespace().unwrap_or_default();
    let api_err = |cause| DaemonSetError::Api {
        namespace: ns.clone(),
        name: ds.name_any(),
        cause,
    };
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(None);
    };
    // Upstream refuses an empty selector (validation does too, so this is old data).
    let sel = match selector(Some(&spec.selector)) {
        Ok(Some(s)) => s,
        _ => {
            events::record(
                &ctx.client,
                NAME,
                ds,
                false,
                "SelectingAll",
                "This daemon set is selecting all pods. A non-empty selector is required.",
            )
            .await;
            return Ok(None);
        }
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let listed = pods_api
        .list(&ListParams::default())
        .await
        .map_err(api_err)?
        .items;
    let pods = claim(ds, Some(&sel), listed, &pods_api)
        .await
        .map_err(api_err)?;
    let collision = ds.status.as_ref().and_then(|s| s.collision_count);
    let history = match sync_history(ds, Some(&sel), &spec.template, collision, &ctx.client).await {
        Ok(h) => h,
        Err(cause) => {
            if let HistoryError::Collision { count, .. } = &cause {
                let mut s = ds.status.clone().unwrap_or_default();
                s.collision_count = Some(*count);
                write_status(ds, &s, &ctx.client).await.map_err(api_err)?;
            }
            return Err(DaemonSetError::History {
                namespace: ns.clone(),
                name: ds.name_any(),
                cause,
            });
        }
    };
    let hash = history
        .current
        .labels()
        .get(REVISION_HASH_LABEL)
        .cloned()
        .unwrap_or_default();
    let template = daemon_template(ds, &hash);
    let probe = PodInfo::new(Pod {
        metadata: template.metadata.clone().unwrap_or_default(),
        spec: template.spec.clone(),
        status: None,
    });
    let nodes = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api_err)?
        .items
        .into_iter()
        .map(|n| {
            let (run, keep) = should_run(&probe, &n);
            (n, run, keep)
        })
        .collect();
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in pods {
        let finished = matches!(phase(&p), "Succeeded" | "Failed");
        if finished && p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(n) = target_node(&p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let mut view = View {
        ds,
        nodes,
        by_node,
        hash,
        generation: template_generation(ds),
        min_ready: spec.min_ready_seconds.unwrap_or(0),
    };
    let mut plan = Plan::default();
    let mut failed_events = Vec::new();
    view.manage(ctx, &mut plan, &mut failed_events);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    // As upstream's expectations: a rollout step waits until the manage step's changes are seen.
    if plan.create_on.is_empty() && plan.delete.is_empty() && rolling {
        view.rolling_update(&mut plan);
    }
    for msg in failed_events {
        events::record(&ctx.client, NAME, ds, false, "FailedDaemonPod", &msg).await;
    }
    let new: Vec<Pod> = plan
        .create_on
        .iter()
        .map(|n| daemon_pod(ds, &template, n))
        .collect();
    let (made, failure) = create_pods(ds, NAME, new, &pods_api, &ctx.client).await;
    let gone = delete_pods(
        ds,
        NAME,
        std::mem::take(&mut plan.delete),
        &pods_api,
        &ctx.client,
    )
    .await
    .map_err(api_err)?;
    for pods in view.by_node.values_mut() {
        pods.retain(|p| !gone.contains(&p.name_any()));
    }
    for p in made {
        if let Some(n) = target_node(&p) {
            view.by_node.entry(n).or_default().push(p);
        }
    }
    let limit = spec.revision_history_limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    let live: Vec<String> = view
        .by_node
        .values()
        .flatten()
        .filter_map(|p| p.labels().get(REVISION_HASH_LABEL).cloned())
        .collect();
    cleanup_history(
        &history,
        limit,
        |r| {
            r.labels()
                .get(REVISION_HASH_LABEL)
                .is_some_and(|h| live.contains(h))
        },
        &ctx.client,
    )
    .await
    .map_err(api_err)?;
    let (status, recheck) = view.status(collision);
    write_status(ds, &status, &ctx.client)
        .await
        .map_err(api_err)?;
    if let Some(message) = failure {
        return Err(DaemonSetError::FailedCreate {
            namespace: ns,
            name: ds.name_any(),
            message,
        });
    }
    Ok(match (recheck, plan.recheck) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, DaemonSetError> {
    let result = sync(&ds, &ctx).await;
    ctx.backoff.settle(NAME, &key(&ds), result)
}

fn error_policy(ds: Arc<DaemonSet>, e: &DaemonSetError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&key(&ds), "daemon set sync failed", e)
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let dss: Api<DaemonSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::new(QUEUE, metrics),
        failed: FailedPods::default(),
    });
    let controller = Controller::new(dss, watcher::Config::default());
    let (by_pod, by_node) = (controller.store(), controller.store());
    controller
        .watches(pods, watcher::Config::default(), move |pod| {
            owners_of(&by_pod, &pod.metadata, |d: &DaemonSet| {
                d.spec.as_ref().map(|s| &s.selector)
            })
        })
        // A node's labels, taints or arrival change where every DaemonSet should run.
        .watches(nodes, watcher::Config::default(), move |_| {
            by_node
                .state()
                .iter()
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(RunConfig::default().concurrency(concurrency))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r))
        .await;
}
