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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
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
    #[error("replica set {namespace}/{name}: {cause}")]
    Api {
        namespace: String,
        name: String,
        cause: kube::Error,
    },
    #[error("replica set {namespace}/{name}: invalid selector: {cause}")]
    Selector {
        namespace: String,
        name: String,
        cause: String,
    },
    #[error("replica set {namespace}/{name}: {message}")]
    FailedCreate {
        namespace: String,
        name: String,
        message: String,
    },
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
        .filter(|o| matches!(selector(selector_of(o)), Ok(Some(s)) if s.matches(&labels)))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

fn is_ready(pod: &Pod) -> bool {
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
fn until_available(
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

fn phase(pod: &Pod) -> &str {
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
fn new_pod(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
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

fn api_err(rs: &ReplicaSet) -> impl Fn(kube::Error) -> ReplicaSetError + '_ {
    move |cause| ReplicaSetError::Api {
        namespace: rs.namespace().unwrap_or_default(),
        name: rs.name_any(),
        cause,
    }
}

/// The message upstream puts in FailedCreate: the API error as the client prints it.
fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Claims the pods of `rs` (adopting and releasing as upstream's `ClaimPods`); the active
/// pods it now controls.
async fn claim_pods(
    rs: &ReplicaSet,
    sel: Option<&Selector>,
    pods: Vec<Pod>,
    api: &Api<Pod>,
) -> Result<Vec<Pod>, ReplicaSetError> {
    let uid = rs.uid().unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut claimed = Vec::new();
    for pod in pods {
        let matches = sel
            .is_some_and(|s| s.matches(pod.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())));
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches || pod.metadata.deletion_timestamp.is_some() {
                    claimed.push(pod);
                } else if !deleting {
                    let patch = release_patch(&uid, &pod.metadata);
                    match api
                        .patch(&pod.name_any(), &PatchParams::default(), &patch)
                        .await
                    {
                        Ok(_) => tracing::info!(
                            pod = pod.name_any(),
                            "released from replica set {}",
                            rs.name_any()
                        ),
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                        Err(e) => return Err(api_err(rs)(e)),
                    }
                }
            }
            Some(_) => {}
            None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                let patch = adopt_patch(rs, &pod.metadata);
                match api
                    .patch(&pod.name_any(), &PatchParams::default(), &patch)
                    .await
                {
                    Ok(p) => claimed.push(p),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(api_err(rs)(e)),
                }
            }
            None => {}
        }
    }
    Ok(claimed.into_iter().filter(is_active).collect())
}

/// Creates up to `n` pods in doubling batches (upstream's slow start); the pods made, and the
/// first failure, after which no more batches go.
async fn create_pods(
    rs: &ReplicaSet,
    n: usize,
    api: &Api<Pod>,
    ctx: &Ctx,
) -> (Vec<Pod>, Option<String>) {
    let pod = new_pod(rs);
    let mut made = Vec::new();
    let mut left = n.min(BURST_REPLICAS);
    let mut batch = 1;
    let pp = PostParams::default();
    while left > 0 {
        let size = batch.min(left);
        let results = futures::future::join_all((0..size).map(|_| api.create(&pp, &pod))).await;
        let mut failure = None;
        for r in results {
            match r {
                Ok(p) => {
                    events::record(
                        &ctx.client,
                        NAME,
                        rs,
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
                        &ctx.client,
                        NAME,
                        rs,
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
        left -= size;
        batch *= 2;
    }
    (made, None)
}

async fn delete_pods(
    rs: &ReplicaSet,
    mut pods: Vec<Pod>,
    n: usize,
    api: &Api<Pod>,
    ctx: &Ctx,
) -> Result<Vec<String>, ReplicaSetError> {
    pods.sort_by_cached_key(deletion_rank);
    let mut gone = Vec::new();
    for pod in pods.into_iter().take(n.min(BURST_REPLICAS)) {
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
                    &ctx.client,
                    NAME,
                    rs,
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
                    &ctx.client,
                    NAME,
                    rs,
                    false,
                    "FailedDelete",
                    &format!("Error deleting: {}", error_message(&e)),
                )
                .await;
                return Err(api_err(rs)(e));
            }
        }
    }
    Ok(gone)
}

/// The status upstream's `calculateStatus` reports, and when to look again for pods that
/// become available after `minReadySeconds`.
fn calculate_status(
    rs: &ReplicaSet,
    pods: &[Pod],
    failure: Option<&str>,
) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut status = rs.status.clone().unwrap_or_default();
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
    status.observed_generation = rs.metadata.generation;
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

async fn sync(rs: &ReplicaSet, ctx: &Ctx) -> Result<Option<Duration>, ReplicaSetError> {
    let ns = rs.namespace().unwrap_or_default();
    let sel = selector(rs.spec.as_ref().map(|s| &s.selector)).map_err(|cause| {
        ReplicaSetError::Selector {
            namespace: ns.clone(),
            name: rs.name_any(),
            cause,
        }
    })?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let all = api
        .list(&ListParams::default())
        .await
        .map_err(api_err(rs))?
        .items;
    let mut pods = claim_pods(rs, sel.as_ref(), all, &api).await?;
    let mut failure = None;
    if rs.metadata.deletion_timestamp.is_none() && sel.is_some() {
        let want = rs
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize;
        // Status counts what this sync changed: the pods made, not those being deleted.
        if pods.len() < want {
            let (made, failed) = create_pods(rs, want - pods.len(), &api, ctx).await;
            pods.extend(made);
            failure = failed;
        } else if pods.len() > want {
            let gone = delete_pods(rs, pods.clone(), pods.len() - want, &api, ctx).await?;
            pods.retain(|p| !gone.contains(&p.name_any()));
        }
    }
    let (status, recheck) = calculate_status(rs, &pods, failure.as_deref());
    if rs.status.as_ref() != Some(&status) {
        let rss: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        // A merge patch keeps what it does not name: a cleared condition list must be null.
        if status.conditions.is_none() {
            body["conditions"] = json!(null);
        }
        let patch = json!({"status": body});
        match rss
            .patch_status(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(e) => return Err(api_err(rs)(e)),
        }
    }
    match failure {
        Some(message) => Err(ReplicaSetError::FailedCreate {
            namespace: ns,
            name: rs.name_any(),
            message,
        }),
        None => Ok(recheck),
    }
}

fn key(rs: &ReplicaSet) -> String {
    format!("{}/{}", rs.namespace().unwrap_or_default(), rs.name_any())
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, ReplicaSetError> {
    let result = sync(&rs, &ctx).await;
    ctx.backoff.settle(NAME, &key(&rs), result)
}

fn error_policy(rs: Arc<ReplicaSet>, e: &ReplicaSetError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&key(&rs), "replica set sync failed", e)
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let rss: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::new(QUEUE, metrics),
    });
    let controller = Controller::new(rss, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(pods, watcher::Config::default(), move |pod| {
            owners_of(&store, &pod.metadata, |rs: &ReplicaSet| {
                rs.spec.as_ref().map(|s| &s.selector)
            })
        })
        .with_config(RunConfig::default().concurrency(concurrency))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r))
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
