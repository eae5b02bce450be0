//! Upstream's StatefulSet controller: pods with stable names `<set>-<ordinal>` and stable
//! storage (a PersistentVolumeClaim `<claim>-<set>-<ordinal>` from each volumeClaimTemplate),
//! created in order and each waited for until Running and Ready (OrderedReady) or all at once
//! (Parallel), removed from the highest ordinal down, and rolled to a new template from the
//! highest ordinal down to the partition (RollingUpdate) or left for the user to delete
//! (OnDelete), with the ControllerRevision history `kubectl rollout` reads.
//!
//! Owns the controller ownerReference of its pods and ControllerRevisions, the pods it creates
//! and deletes, the claims it creates (kept on scale-down and deletion: the default `Retain`
//! retention; `whenDeleted: Delete` makes the set their owner so the garbage collector takes
//! them), its ControllerRevisions, the Events `SuccessfulCreate`/`FailedCreate`/
//! `SuccessfulDelete`/`FailedDelete`, and the StatefulSet's `status`. Never binds pods or
//! claims, nor touches a StatefulSet's spec or metadata. A claim that cannot bind leaves its
//! pod Pending (the scheduler says why); the set simply waits for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::daemonset::{
    DEFAULT_HISTORY_LIMIT, History, HistoryError, cleanup_history, revision_template, sync_history,
};
use super::metrics::Metrics;
use super::replicaset::{
    claim, controller_ref, error_message, is_ready, owners_of, phase, selector, until_available,
};
use super::{Backoff, log_outcome};
use crate::common::events;

pub const NAME: &str = "statefulset-controller";
pub const ALIAS: &str = "statefulset";
const QUEUE: &str = "statefulset";

const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
const REVISION_LABEL: &str = "controller-revision-hash";

#[derive(Debug, thiserror::Error)]
pub enum StatefulSetError {
    #[error("stateful set {namespace}/{name}: {cause}")]
    Api {
        namespace: String,
        name: String,
        cause: kube::Error,
    },
    #[error("stateful set {namespace}/{name}: {cause}")]
    History {
        namespace: String,
        name: String,
        cause: HistoryError,
    },
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
}

fn key(sts: &StatefulSet) -> String {
    format!("{}/{}", sts.namespace().unwrap_or_default(), sts.name_any())
}

/// The ordinal of a pod of `set` (upstream's `getParentNameAndOrdinal`), if it is one.
fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let digits = pod.strip_prefix(set)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

fn revision_of(pod: &Pod) -> &str {
    pod.labels().get(REVISION_LABEL).map_or("", String::as_str)
}

/// Upstream's `isHealthy`: Running, Ready (for `minReadySeconds`) and not terminating.
fn healthy(pod: &Pod, min_ready: i32) -> bool {
    phase(pod) == "Running"
        && pod.metadata.deletion_timestamp.is_none()
        && until_available(pod, min_ready, k8s_openapi::jiff::Timestamp::now()) == Some(0)
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// The claims of one ordinal, from the templates: named `<claim>-<set>-<ordinal>`, labelled
/// with the set's selector, owned by the set only under `whenDeleted: Delete`.
fn claims_for(sts: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = sts.spec.as_ref() else {
        return vec![];
    };
    let delete_with_set = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    let owner = OwnerReference {
        controller: None,
        ..controller_ref(sts)
    };
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let mut pvc = t.clone();
            let tm = t.metadata.clone();
            let mut labels = tm.labels.unwrap_or_default();
            labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
            pvc.metadata = ObjectMeta {
                name: Some(claim_name(&t.name_any(), &sts.name_any(), ordinal)),
                namespace: sts.namespace(),
                labels: Some(labels),
                annotations: tm.annotations,
                owner_references: delete_with_set.then(|| vec![owner.clone()]),
                ..Default::default()
            };
            pvc.status = None;
            pvc
        })
        .collect()
}

/// Upstream's `newVersionedStatefulSetPod`: the pod of `ordinal` from `template` (of
/// `revision`), with its identity (name, labels, hostname, subdomain) and claims.
fn new_pod(sts: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let name = format!("{}-{ordinal}", sts.name_any());
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    let service = sts.spec.as_ref().and_then(|s| s.service_name.clone());
    if let Some(svc) = service.filter(|s| !s.is_empty()) {
        spec.subdomain = Some(svc);
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for t in sts
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
    {
        let claim = t.name_any();
        volumes.retain(|v| v.name != claim);
        volumes.push(Volume {
            name: claim.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&claim, &sts.name_any(), ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if volumes.is_empty() {
        spec.volumes = None;
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.namespace(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref(sts)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// One sync's work on one StatefulSet.
struct Sync<'a> {
    sts: &'a StatefulSet,
    ctx: &'a Ctx,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
}

impl Sync<'_> {
    fn api_err(&self) -> impl Fn(kube::Error) -> StatefulSetError + '_ {
        move |cause| StatefulSetError::Api {
            namespace: self.sts.namespace().unwrap_or_default(),
            name: self.sts.name_any(),
            cause,
        }
    }

    async fn event(&self, normal: bool, reason: &str, message: String) {
        events::record(&self.ctx.client, NAME, self.sts, normal, reason, &message).await;
    }

    /// Creates the pod's missing claims (upstream's `createPersistentVolumeClaims`).
    async fn ensure_claims(&self, ordinal: i32, pod: &str) -> Result<(), StatefulSetError> {
        let set = self.sts.name_any();
        for pvc in claims_for(self.sts, ordinal) {
            let name = pvc.name_any();
            if self
                .claims
                .get_opt(&name)
                .await
                .map_err(self.api_err())?
                .is_some()
            {
                continue;
            }
            match self.claims.create(&PostParams::default(), &pvc).await {
                Ok(_) => {
                    self.event(
                        true,
                        "SuccessfulCreate",
                        format!("create Claim {name} Pod {pod} in StatefulSet {set} success"),
                    )
                    .await
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    self.event(
                        false,
                        "FailedCreate",
                        format!(
                            "create Claim {name} for Pod {pod} in StatefulSet {set} failed error: {}",
                            error_message(&e)
                        ),
                    )
                    .await;
                    return Err(self.api_err()(e));
                }
            }
        }
        Ok(())
    }

    async fn create(&self, pod: Pod, ordinal: i32) -> Result<Pod, StatefulSetError> {
        let (name, set) = (pod.name_any(), self.sts.name_any());
        self.ensure_claims(ordinal, &name).await?;
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                self.event(
                    true,
                    "SuccessfulCreate",
                    format!("create Pod {name} in StatefulSet {set} successful"),
                )
                .await;
                Ok(p)
            }
            Err(e) => {
                self.event(
                    false,
                    "FailedCreate",
                    format!(
                        "create Pod {name} in StatefulSet {set} failed error: {}",
                        error_message(&e)
                    ),
                )
                .await;
                Err(self.api_err()(e))
            }
        }
    }

    async fn delete(&self, pod: &Pod) -> Result<(), StatefulSetError> {
        let (name, set) = (pod.name_any(), self.sts.name_any());
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pods.delete(&name, &dp).await {
            Ok(_) => {
                self.event(
                    true,
                    "SuccessfulDelete",
                    format!("delete Pod {name} in StatefulSet {set} successful"),
                )
                .await;
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => {
                self.event(
                    false,
                    "FailedDelete",
                    format!(
                        "delete Pod {name} in StatefulSet {set} failed error: {}",
                        error_message(&e)
                    ),
                )
                .await;
                Err(self.api_err()(e))
            }
        }
    }
}

/// The revisions a sync works with: the one pods are at, the one they go to.
struct Revisions {
    current: ControllerRevision,
    update: ControllerRevision,
}

impl Revisions {
    fn from(sts: &StatefulSet, history: &History) -> Self {
        let update = history.current.clone();
        let named = sts
            .status
            .as_ref()
            .and_then(|s| s.current_revision.as_deref());
        let current = history
            .all
            .iter()
            .find(|r| Some(r.name_any().as_str()) == named)
            .cloned()
            .unwrap_or_else(|| update.clone());
        Revisions { current, update }
    }
}

/// Upstream's `computeReplicaStatus` and `completeRollingUpdate`.
fn compute_status(
    sts: &StatefulSet,
    pods: &[Pod],
    revs: &Revisions,
    collision_count: Option<i32>,
) -> StatefulSetStatus {
    let spec = sts.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let now = k8s_openapi::jiff::Timestamp::now();
    let (current, update) = (revs.current.name_any(), revs.update.name_any());
    let mut s = StatefulSetStatus {
        observed_generation: sts.metadata.generation,
        current_revision: Some(current.clone()),
        update_revision: Some(update.clone()),
        collision_count,
        conditions: sts.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut ready, mut available, mut cur, mut upd) = (0, 0, 0, 0);
    for p in pods {
        if !phase(p).is_empty() {
            s.replicas += 1;
        }
        if phase(p) == "Running" && is_ready(p) {
            ready += 1;
            if until_available(p, min_ready, now) == Some(0) {
                available += 1;
            }
        }
        if !phase(p).is_empty() && !terminating(p) {
            cur += i32::from(revision_of(p) == current);
            upd += i32::from(revision_of(p) == update);
        }
    }
    s.ready_replicas = Some(ready);
    s.available_replicas = Some(available);
    s.current_replicas = Some(cur);
    s.updated_replicas = Some(upd);
    let rolling = spec
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    if rolling && upd == s.replicas && ready == s.replicas {
        s.current_replicas = Some(upd);
        s.current_revision = Some(update);
    }
    s
}

async fn write_status(
    sts: &StatefulSet,
    status: &StatefulSetStatus,
    client: &kube::Client,
) -> Result<(), kube::Error> {
    if sts.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<StatefulSet> =
        Api::namespaced(client.clone(), &sts.namespace().unwrap_or_default());
    let patch = json!({"status": status});
    match super::update_merged(&api, sts, &patch, true).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Upstream's `updateStatefulSet` for one pass: creates, replaces, removes and updates pods,
/// stopping where OrderedReady must wait; the pods as this pass left them.
async fn converge(
    s: &Sync<'_>,
    mut slots: BTreeMap<i32, Pod>,
    mut condemned: Vec<Pod>,
    revs: &Revisions,
) -> Result<Vec<Pod>, StatefulSetError> {
    let sts = s.sts;
    let spec = sts.spec.clone().unwrap_or_default();
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition);
    let current_replicas = sts
        .status
        .as_ref()
        .and_then(|s| s.current_replicas)
        .unwrap_or(0);
    let current_template =
        revision_template(&revs.current).unwrap_or_else(|| spec.template.clone());
    let (current, update) = (revs.current.name_any(), revs.update.name_any());
    let mut blocked = false;
    for ordinal in start..start + replicas {
        let index = ordinal - start;
        match slots.get(&ordinal) {
            None => {
                // A rolling update in progress recreates pods below it at the current revision.
                let at_current = rolling
                    && match partition {
                        Some(p) => index < p,
                        None => index < current_replicas,
                    };
                let pod = if at_current && current != update {
                    new_pod(sts, &current_template, &current, ordinal)
                } else {
                    new_pod(sts, &spec.template, &update, ordinal)
                };
                let made = s.create(pod, ordinal).await?;
                slots.insert(ordinal, made);
                blocked = !parallel;
            }
            Some(p) if finished(p) && !terminating(p) => {
                s.delete(p).await?;
                slots.remove(&ordinal);
                blocked = !parallel;
            }
            Some(p) if terminating(p) || !healthy(p, min_ready) => blocked = !parallel,
            Some(p) => {
                let name = p.name_any();
                s.ensure_claims(ordinal, &name).await?;
            }
        }
        if blocked {
            break;
        }
    }
    if !blocked {
        condemned.sort_by_key(|p| std::cmp::Reverse(ordinal_of(&sts.name_any(), &p.name_any())));
        let first_unhealthy = condemned
            .iter()
            .find(|p| !healthy(p, min_ready))
            .map(|p| p.name_any());
        let mut gone = Vec::new();
        for p in &condemned {
            if terminating(p) {
                if parallel {
                    continue;
                }
                blocked = true;
                break;
            }
            if !parallel && first_unhealthy.as_ref().is_some_and(|u| *u != p.name_any()) {
                blocked = true;
                break;
            }
            s.delete(p).await?;
            gone.push(p.name_any());
            if !parallel {
                blocked = true;
                break;
            }
        }
        condemned.retain(|p| !gone.contains(&p.name_any()));
    }
    // RollingUpdate: from the top down to the partition, one pod at a time.
    if !blocked && rolling {
        let floor = start + partition.unwrap_or(0).max(0);
        for ordinal in (floor..start + replicas).rev() {
            let Some(p) = slots.get(&ordinal) else {
                break;
            };
            if revision_of(p) != update && !terminating(p) {
                s.delete(p).await?;
                slots.remove(&ordinal);
                break;
            }
            if !healthy(p, min_ready) {
                break;
            }
        }
    }
    Ok(slots.into_values().chain(condemned).collect())
}

async fn sync(sts: &StatefulSet, ctx: &Ctx) -> Result<Option<Duration>, StatefulSetError> {
    let ns = sts.namespace().unwrap_or_default();
    let api_err = |cause| StatefulSetError::Api {
        namespace: ns.clone(),
        name: sts.name_any(),
        cause,
    };
    let Some(spec) = sts.spec.as_ref() else {
        return Ok(None);
    };
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let Ok(Some(sel)) = selector(Some(&spec.selector)) else {
        return Ok(None);
    };
    let s = Sync {
        sts,
        ctx,
        pods: Api::namespaced(ctx.client.clone(), &ns),
        claims: Api::namespaced(ctx.client.clone(), &ns),
    };
    let listed = s
        .pods
        .list(&ListParams::default())
        .await
        .map_err(api_err)?
        .items;
    let set = sts.name_any();
    // Upstream's `isMemberOf`: only pods named as this set's are claimed.
    let members: Vec<Pod> = listed
        .into_iter()
        .filter(|p| ordinal_of(&set, &p.name_any()).is_some())
        .collect();
    let pods = claim(sts, Some(&sel), members, &s.pods)
        .await
        .map_err(api_err)?;
    let collision = sts.status.as_ref().and_then(|s| s.collision_count);
    let history = match sync_history(sts, Some(&sel), &spec.template, collision, &ctx.client).await
    {
        Ok(h) => h,
        Err(cause) => {
            if let HistoryError::Collision { count, .. } = &cause {
                let mut st = sts.status.clone().unwrap_or_default();
                st.collision_count = Some(*count);
                write_status(sts, &st, &ctx.client).await.map_err(api_err)?;
            }
            return Err(StatefulSetError::History {
                namespace: ns.clone(),
                name: set,
                cause,
            });
        }
    };
    let revs = Revisions::from(sts, &history);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let (mut slots, mut condemned) = (BTreeMap::new(), Vec::new());
    for p in pods {
        match ordinal_of(&set, &p.name_any()) {
            Some(o) if (start..start + replicas).contains(&o) => {
                slots.insert(o, p);
            }
            _ => condemned.push(p),
        }
    }
    let pods = converge(&s, slots, condemned, &revs).await?;
    let status = compute_status(sts, &pods, &revs, collision);
    write_status(sts, &status, &ctx.client)
        .await
        .map_err(api_err)?;
    let current = status.current_revision.clone().unwrap_or_default();
    let live: Vec<String> = pods.iter().map(|p| revision_of(p).to_string()).collect();
    let limit = spec.revision_history_limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    cleanup_history(
        &history,
        limit,
        |r| r.name_any() == current || live.contains(&r.name_any()),
        &ctx.client,
    )
    .await
    .map_err(api_err)?;
    // Pods waiting out minReadySeconds change nothing the watch would see.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    Ok((min_ready > 0).then(|| Duration::from_secs(1)))
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, StatefulSetError> {
    let result = sync(&sts, &ctx).await;
    ctx.backoff.settle(NAME, &key(&sts), result)
}

fn error_policy(sts: Arc<StatefulSet>, e: &StatefulSetError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&key(&sts), "stateful set sync failed", e)
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::new(QUEUE, metrics),
    });
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(pods, watcher::Config::default(), move |pod| {
            owners_of(&store, &pod.metadata, |s: &StatefulSet| {
                s.spec.as_ref().map(|s| &s.selector)
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

    #[test]
    fn ordinals_come_from_names_of_this_set_only() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-api-1"), None);
    }
}
