//! Upstream's ReplicaSet controller: keeps `spec.replicas` active pods that match a
//! ReplicaSet's selector and name it as their controller, and reports them in its status.
//!
//! Owns the controller ownerReference of matching pods (adopting orphans, releasing pods that
//! stop matching), the pods it creates from the template and deletes as surplus, the Events
//! `SuccessfulCreate`/`SuccessfulDelete`/`FailedCreate`, and the ReplicaSet's `status`. Never
//! touches pods another controller owns, nor the ReplicaSet's spec or metadata.
//!
//! Pods are listed from the API server on every sync rather than from a cache, so a burst of
//! syncs never counts pods it just created as missing (upstream needs expectations for that).
//!
//! The sync is generic over [`Replicated`]: the ReplicationController controller
//! ([`super::replicationcontroller`]) runs this same code, as upstream's replication manager
//! runs the ReplicaSet controller through a conversion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::metrics::Metrics;
use super::{Backoff, log_outcome};
use crate::common::events;

pub const NAME: &str = "replicaset-controller";
pub const ALIAS: &str = "replicaset";
const QUEUE: &str = "replicaset";

/// Upstream's `BurstReplicas`: pods created or deleted in one sync at most.
const BURST_REPLICAS: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaSetError {
    #[error("{kind} {namespace}/{name}: {cause}")]
    Api {
        kind: &'static str,
        namespace: String,
        name: String,
        cause: kube::Error,
    },
    #[error("{kind} {namespace}/{name}: invalid selector: {cause}")]
    Selector {
        kind: &'static str,
        namespace: String,
        name: String,
        cause: String,
    },
    #[error("{kind} {namespace}/{name}: {message}")]
    FailedCreate {
        kind: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
}

/// What the replica-keeping sync reads of its owner: a ReplicaSet, or a ReplicationController
/// seen as one (its map selector is a `matchLabels` one, its status has the same fields).
pub(super) trait Replicated:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The controller's name: the source of its events.
    const CONTROLLER: &'static str;
    /// The work queue's name in metrics.
    const QUEUE: &'static str;
    /// The kind in words, for error messages.
    const WHAT: &'static str;
    fn selector(&self) -> Option<LabelSelector>;
    fn replicas(&self) -> Option<i32>;
    fn min_ready_seconds(&self) -> Option<i32>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn replica_status(&self) -> Option<ReplicaSetStatus>;
}

impl Replicated for ReplicaSet {
    const CONTROLLER: &'static str = NAME;
    const QUEUE: &'static str = QUEUE;
    const WHAT: &'static str = "replica set";
    fn selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().map(|s| s.selector.clone())
    }
    fn replicas(&self) -> Option<i32> {
        self.spec.as_ref().and_then(|s| s.replicas)
    }
    fn min_ready_seconds(&self) -> Option<i32> {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }
    fn replica_status(&self) -> Option<ReplicaSetStatus> {
        self.status.clone()
    }
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
}

/// The selector of a workload as kube's matcher; `None` selects nothing (upstream: an empty
/// or missing selector never matches in controllers).
pub(super) fn selector(s: Option<&LabelSelector>) -> Result<Option<Selector>, String> {
    let Some(s) = s else { return Ok(None) };
    if s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    {
        return Ok(None);
    }
    Selector::try_from(s.clone())
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The controller ownerReference of `meta`, if any.
pub(super) fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The controller ownerReference naming `owner`, as upstream's `NewControllerRef`.
pub(super) fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The patch that makes `owner` the controller of an object (adoption); the uid precondition
/// makes it fail rather than adopt an object replaced under the same name.
pub(super) fn adopt_patch<K: Resource<DynamicType = ()>>(
    owner: &K,
    meta: &ObjectMeta,
) -> Patch<serde_json::Value> {
    let mut refs: Vec<OwnerReference> = meta.owner_references.clone().unwrap_or_default();
    refs.push(controller_ref(owner));
    Patch::Merge(json!({"metadata": {
        "ownerReferences": refs, "uid": meta.uid, "resourceVersion": meta.resource_version,
    }}))
}

/// The patch that drops `owner_uid` from an object's ownerReferences (release).
pub(super) fn release_patch(owner_uid: &str, meta: &ObjectMeta) -> Patch<serde_json::Value> {
    let refs: Vec<&OwnerReference> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .collect();
    let refs = if refs.is_empty() {
        json!(null)
    } else {
        json!(refs)
    };
    Patch::Merge(json!({"metadata": {
        "ownerReferences": refs, "uid": meta.uid, "resourceVersion": meta.resource_version,
    }}))
}

/// Maps a dependent to the owners that should sync on its change: its controller of kind
/// `K`, else (an orphan) every `K` in its namespace whose selector matches it.
pub(super) fn owners_of<K, F>(
    store: &Store<K>,
    meta: &ObjectMeta,
    selector_of: F,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    F: Fn(&K) -> Option<&LabelSelector>,
{
    owners_by(store, meta, |k| selector_of(k).cloned())
}

/// [`owners_of`] for owners whose selector is computed (a ReplicationController's map).
pub(super) fn owners_by<K, F>(
    store: &Store<K>,
    meta: &ObjectMeta,
    selector_of: F,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    F: Fn(&K) -> Option<LabelSelector>,
{
    let ns = meta.namespace.clone().unwrap_or_default();
    if let Some(r) = controller_of(meta) {
        return match r.kind == K::kind(&()) && r.api_version == K::api_version(&()) {
            true => vec![ObjectRef::new(&r.name).within(&ns)],
            false => vec![],
        };
    }
    let labels = meta.labels.clone().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns.as_str()))
        .filter(|o| matches!(selector(selector_of(o).as_ref()), Ok(Some(s)) if s.matches(&labels)))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

pub(super) fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the pod's Ready condition last turned True, if it is True.
fn ready_since(pod: &Pod) -> Option<Option<k8s_openapi::jiff::Timestamp>> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Seconds until a ready pod counts as available (0: available now); `None` if not ready.
pub(super) fn until_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<i64> {
    let since = ready_since(pod)?;
    if min_ready_seconds <= 0 {
        return Some(0);
    }
    let Some(since) = since else { return Some(0) };
    let ready_for = now.as_second() - since.as_second();
    Some((i64::from(min_ready_seconds) - ready_for).max(0))
}

pub(super) fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Upstream's `IsPodActive`: not finished and not being deleted.
pub(super) fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// Upstream's `ActivePods` order: the pods to delete first sort first (unscheduled, pending,
/// not ready, ready for less time, more restarts, newer).
pub(super) type Rank = (
    bool,
    i32,
    bool,
    std::cmp::Reverse<Option<i64>>,
    std::cmp::Reverse<i32>,
    std::cmp::Reverse<Option<i64>>,
);

pub(super) fn deletion_rank(pod: &Pod) -> Rank {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase_rank = match phase(pod) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let ready = is_ready(pod);
    // Ready for less time first: a later transition sorts first.
    let ready_at = std::cmp::Reverse(ready_since(pod).flatten().map(|t| t.as_second()));
    let restarts = std::cmp::Reverse(
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
            .unwrap_or(0),
    );
    let created = std::cmp::Reverse(
        pod.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
    );
    (scheduled, phase_rank, ready, ready_at, restarts, created)
}

/// The pod the ReplicaSet creates from its template.
fn new_pod<R: Replicated>(rs: &R) -> Pod {
    let template = rs.template().cloned().unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref(rs)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn api_err<R: Replicated>(rs: &R) -> impl Fn(kube::Error) -> ReplicaSetError + '_ {
    move |cause| ReplicaSetError::Api {
        kind: R::WHAT,
        namespace: rs.namespace().unwrap_or_default(),
        name: rs.name_any(),
        cause,
    }
}

/// The message upstream puts in FailedCreate: the API error as the client prints it.
pub(super) fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Upstream's `ClaimObjects`: adopts orphans that match `sel` and releases objects that no
/// longer do; the objects `owner` now controls (those being deleted included).
pub(super) async fn claim<K, T>(
    owner: &K,
    sel: Option<&Selector>,
    objs: Vec<T>,
    api: &Api<T>,
) -> Result<Vec<T>, kube::Error>
where
    K: Resource<DynamicType = ()>,
    T: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let uid = owner.uid().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let mut claimed = Vec::new();
    for obj in objs {
        let meta = obj.meta();
        let matches =
            sel.is_some_and(|s| s.matches(meta.labels.as_ref().unwrap_or(&BTreeMap::new())));
        match controller_of(meta) {
            Some(r) if r.uid == uid => {
                if matches || meta.deletion_timestamp.is_some() {
                    claimed.push(obj);
                } else if !deleting {
                    let patch = release_patch(&uid, meta);
                    match api
                        .patch(&obj.name_any(), &PatchParams::default(), &patch)
                        .await
                    {
                        Ok(_) => tracing::info!(
                            object = obj.name_any(),
                            "released from {} {}",
                            K::kind(&()),
                            owner.name_any()
                        ),
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(_) => {}
            None if matches && !deleting && meta.deletion_timestamp.is_none() => {
                let patch = adopt_patch(owner, meta);
                match api
                    .patch(&obj.name_any(), &PatchParams::default(), &patch)
                    .await
                {
                    Ok(o) => claimed.push(o),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            None => {}
        }
    }
    Ok(claimed)
}

/// Creates `pods` (at most [`BURST_REPLICAS`]) in doubling batches (upstream's slow start),
/// recording `SuccessfulCreate`/`FailedCreate` on `owner` as `controller`; the pods made, and
/// the first failure, after which no more batches go.
pub(super) async fn create_pods<K>(
    owner: &K,
    controller: &'static str,
    pods: Vec<Pod>,
    api: &Api<Pod>,
    client: &kube::Client,
) -> (Vec<Pod>, Option<String>)
where
    K: Resource<DynamicType = ()>,
{
    let mut made = Vec::new();
    let mut left: std::collections::VecDeque<Pod> = pods.into_iter().take(BURST_REPLICAS).collect();
    let mut batch = 1;
    let pp = &PostParams::default();
    while !left.is_empty() {
        let size = batch.min(left.len());
        let results = futures::future::join_all(
            left.drain(..size)
                .map(|p| async move { api.create(pp, &p).await }),
        )
        .await;
        let mut failure = None;
        for r in results {
            match r {
                Ok(p) => {
                    events::record(
                        client,
                        controller,
                        owner,
                        true,
                        "SuccessfulCreate",
                        &format!("Created pod: {}", p.name_any()),
                    )
                    .await;
                    made.push(p);
                }
                Err(e) => {
                    let msg = error_message(&e);
                    events::record(
                        client,
                        controller,
                        owner,
                        false,
                        "FailedCreate",
                        &format!("Error creating: {msg}"),
                    )
                    .await;
                    failure.get_or_insert(msg);
                }
            }
        }
        if failure.is_some() {
            return (made, failure);
        }
        batch *= 2;
    }
    (made, None)
}

/// Deletes `pods` (at most [`BURST_REPLICAS`]), recording `SuccessfulDelete`/`FailedDelete` on
/// `owner` as `controller`; the names gone (or already gone).
pub(super) async fn delete_pods<K>(
    owner: &K,
    controller: &'static str,
    pods: Vec<Pod>,
    api: &Api<Pod>,
    client: &kube::Client,
) -> Result<Vec<String>, kube::Error>
where
    K: Resource<DynamicType = ()>,
{
    let mut gone = Vec::new();
    for pod in pods.into_iter().take(BURST_REPLICAS) {
        let name = pod.name_any();
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {
                events::record(
                    client,
                    controller,
                    owner,
                    true,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                )
                .await;
                gone.push(name);
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => gone.push(name),
            Err(e) => {
                events::record(
                    client,
                    controller,
                    owner,
                    false,
                    "FailedDelete",
                    &format!("Error deleting: {}", error_message(&e)),
                )
                .await;
                return Err(e);
            }
        }
    }
    Ok(gone)
}

/// The status upstream's `calculateStatus` reports, and when to look again for pods that
/// become available after `minReadySeconds`.
fn calculate_status<R: Replicated>(
    rs: &R,
    pods: &[Pod],
    failure: Option<&str>,
) -> (ReplicaSetStatus, Option<Duration>) {
    let min_ready = rs.min_ready_seconds().unwrap_or(0);
    let template_labels = rs
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut status = rs.replica_status().unwrap_or_default();
    let (mut fully, mut ready, mut available) = (0, 0, 0);
    let mut recheck: Option<i64> = None;
    for p in pods {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            fully += 1;
        }
        if is_ready(p) {
            ready += 1;
            match until_available(p, min_ready, now) {
                Some(0) => available += 1,
                Some(s) => recheck = Some(recheck.map_or(s, |r| r.min(s))),
                None => {}
            }
        }
    }
    status.replicas = pods.len() as i32;
    status.fully_labeled_replicas = Some(fully);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.observed_generation = rs.meta().generation;
    let mut conds: Vec<ReplicaSetCondition> = status.conditions.take().unwrap_or_default();
    match failure {
        Some(msg) => {
            let existing = conds.iter().position(|c| c.type_ == "ReplicaFailure");
            let cond = ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some("FailedCreate".into()),
                message: Some(msg.to_string()),
                last_transition_time: Some(Time(now)),
            };
            match existing {
                Some(i) if conds[i].status == "True" => {
                    conds[i].reason = cond.reason;
                    conds[i].message = cond.message;
                }
                Some(i) => conds[i] = cond,
                None => conds.push(cond),
            }
        }
        None => conds.retain(|c| c.type_ != "ReplicaFailure"),
    }
    status.conditions = (!conds.is_empty()).then_some(conds);
    (status, recheck.map(|s| Duration::from_secs(s as u64 + 1)))
}

async fn sync<R: Replicated>(rs: &R, ctx: &Ctx) -> Result<Option<Duration>, ReplicaSetError> {
    let ns = rs.namespace().unwrap_or_default();
    let sel = selector(rs.selector().as_ref()).map_err(|cause| ReplicaSetError::Selector {
        kind: R::WHAT,
        namespace: ns.clone(),
        name: rs.name_any(),
        cause,
    })?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let all = api
        .list(&ListParams::default())
        .await
        .map_err(api_err(rs))?
        .items;
    let mut pods: Vec<Pod> = claim(rs, sel.as_ref(), all, &api)
        .await
        .map_err(api_err(rs))?
        .into_iter()
        .filter(is_active)
        .collect();
    let mut failure = None;
    if rs.meta().deletion_timestamp.is_none() && sel.is_some() {
        let want = rs.replicas().unwrap_or(1).max(0) as usize;
        // Status counts what this sync changed: the pods made, not those being deleted.
        if pods.len() < want {
            let new = vec![new_pod(rs); want - pods.len()];
            let (made, failed) = create_pods(rs, R::CONTROLLER, new, &api, &ctx.client).await;
            pods.extend(made);
            failure = failed;
        } else if pods.len() > want {
            let mut surplus = pods.clone();
            surplus.sort_by_cached_key(deletion_rank);
            surplus.truncate(pods.len() - want);
            let gone = delete_pods(rs, R::CONTROLLER, surplus, &api, &ctx.client)
                .await
                .map_err(api_err(rs))?;
            pods.retain(|p| !gone.contains(&p.name_any()));
        }
    }
    let (status, recheck) = calculate_status(rs, &pods, failure.as_deref());
    if rs.replica_status().as_ref() != Some(&status) {
        let owners: Api<R> = Api::namespaced(ctx.client.clone(), &ns);
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        // A merge patch keeps what it does not name: a cleared condition list must be null.
        if status.conditions.is_none() {
            body["conditions"] = json!(null);
        }
        let patch = json!({"status": body});
        match super::update_merged(&owners, rs, &patch, true).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(e) => return Err(api_err(rs)(e)),
        }
    }
    match failure {
        Some(message) => Err(ReplicaSetError::FailedCreate {
            kind: R::WHAT,
            namespace: ns,
            name: rs.name_any(),
            message,
        }),
        None => Ok(recheck),
    }
}

fn key<R: Replicated>(rs: &R) -> String {
    format!("{}/{}", rs.namespace().unwrap_or_default(), rs.name_any())
}

async fn reconcile<R: Replicated>(rs: Arc<R>, ctx: Arc<Ctx>) -> Result<Action, ReplicaSetError> {
    let result = sync(rs.as_ref(), &ctx).await;
    ctx.backoff.settle(R::CONTROLLER, &key(rs.as_ref()), result)
}

fn error_policy<R: Replicated>(rs: Arc<R>, e: &ReplicaSetError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff
        .retry(&key(rs.as_ref()), "replica sync failed", e)
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    run_for::<ReplicaSet>(client, metrics, concurrency).await;
}

/// Runs the controller of one [`Replicated`] kind.
pub(super) async fn run_for<R: Replicated>(
    client: kube::Client,
    metrics: Arc<Metrics>,
    concurrency: u16,
) {
    let owners: Api<R> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::new(R::QUEUE, metrics),
    });
    let controller = Controller::new(owners, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(pods, watcher::Config::default(), move |pod| {
            owners_by(&store, &pod.metadata, |r: &R| r.selector())
        })
        .with_config(RunConfig::default().concurrency(concurrency))
        .run(reconcile::<R>, error_policy::<R>, ctx)
        .for_each(|r| log_outcome(R::CONTROLLER, r))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

    fn pod(
        name: &str,
        node: Option<&str>,
        phase: &str,
        ready_secs_ago: Option<i64>,
        created: i64,
    ) -> Pod {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let ts = |s: i64| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(ts(created)),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_secs_ago.map(|ago| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(ts(now - ago)),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn surplus_pods_go_in_upstreams_order() {
        let mut pods = [
            pod("ready-old", Some("n"), "Running", Some(100), 1),
            pod("unscheduled", None, "Pending", None, 1),
            pod("ready-new", Some("n"), "Running", Some(10), 5),
            pod("running-not-ready", Some("n"), "Running", None, 1),
            pod("pending", Some("n"), "Pending", None, 1),
        ];
        pods.sort_by_cached_key(deletion_rank);
        let names: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "running-not-ready",
                "ready-new",
                "ready-old"
            ]
        );
    }

    #[test]
    fn available_honours_min_ready_seconds() {
        let now = k8s_openapi::jiff::Timestamp::now();
        let p = pod("a", Some("n"), "Running", Some(3), 1);
        assert_eq!(until_available(&p, 0, now), Some(0));
        assert_eq!(until_available(&p, 10, now), Some(7));
        assert_eq!(until_available(&p, 2, now), Some(0));
        assert_eq!(
            until_available(&pod("b", None, "Pending", None, 1), 0, now),
            None
        );
    }

    #[test]
    fn failed_creates_set_replica_failure_until_one_succeeds() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        let (status, _) = calculate_status(&rs, &[], Some("pods \"x\" is forbidden"));
        let c = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(c.type_, "ReplicaFailure");
        assert_eq!(c.status, "True");
        assert_eq!(c.reason.as_deref(), Some("FailedCreate"));
        assert_eq!(c.message.as_deref(), Some("pods \"x\" is forbidden"));
        assert_eq!(status.observed_generation, Some(2));
        let rs = ReplicaSet {
            status: Some(status),
            ..rs
        };
        let (status, _) = calculate_status(&rs, &[], None);
        assert!(status.conditions.is_none());
    }

    #[test]
    fn empty_selector_selects_nothing() {
        assert!(selector(None).unwrap().is_none());
        assert!(selector(Some(&LabelSelector::default())).unwrap().is_none());
        let s = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        let s = selector(Some(&s)).unwrap().unwrap();
        assert!(s.matches(&[("app".to_string(), "web".to_string())].into()));
        assert!(!s.matches(&BTreeMap::new()));
    }
}
