//! Upstream's Deployment controller: rolls a Deployment's pod template out through
//! ReplicaSets it controls (`<deployment>-<pod-template-hash>`), by the RollingUpdate or
//! Recreate strategy, scales them proportionally, keeps `revisionHistoryLimit` old ones, and
//! reports status and the Available/Progressing/ReplicaFailure conditions as upstream words
//! them.
//!
//! Owns the ReplicaSets it controls (their creation, `spec.replicas`, `minReadySeconds` and the
//! `deployment.kubernetes.io/*` annotations), the Deployment's status and its
//! `deployment.kubernetes.io/revision` annotation, and `ScalingReplicaSet` events. Never
//! touches pods (the ReplicaSet controller does) nor the Deployment's spec; `kubectl rollout
//! undo` is kubectl's own doing (it copies an old template into the spec).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::metrics::Metrics;
use super::replicaset::{
    adopt_patch, controller_of, controller_ref, owners_of, release_patch, selector,
};
use super::{Backoff, log_outcome};
use crate::common::events;

pub const NAME: &str = "deployment-controller";
pub const ALIAS: &str = "deployment";
const QUEUE: &str = "deployment";

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const HASH_LABEL: &str = "pod-template-hash";
/// Annotations a Deployment never copies to its ReplicaSets (upstream's `skipCopyAnnotation`).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

const AVAILABLE: &str = "Available";
const PROGRESSING: &str = "Progressing";
const REPLICA_FAILURE: &str = "ReplicaFailure";

#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error("deployment {namespace}/{name}: {cause}")]
    Api {
        namespace: String,
        name: String,
        cause: kube::Error,
    },
    #[error("deployment {namespace}/{name}: invalid selector: {cause}")]
    Selector {
        namespace: String,
        name: String,
        cause: String,
    },
    #[error(
        "deployment {namespace}/{name}: replica set {rs} exists with another template (hash collision)"
    )]
    Collision {
        namespace: String,
        name: String,
        rs: String,
    },
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
}

/// Upstream's `rand.SafeEncodeString` alphabet: no vowels, no look-alikes.
const SAFE_ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template-hash of a template: FNV-32a over its canonical JSON (keys sorted, so stable
/// across restarts and versions of this program) and the collision count, rendered as upstream
/// renders its hash (the decimal digits mapped through the safe alphabet).
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(
        serde_json::to_string(&canonical(template))
            .unwrap_or_default()
            .as_bytes(),
    );
    if let Some(c) = collision_count {
        feed(c.to_string().as_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| char::from(SAFE_ALPHANUMS[usize::from(b) % SAFE_ALPHANUMS.len()]))
        .collect()
}

/// A template as JSON with object keys sorted at every level and zero values (`false`, `0`,
/// `""`, `null`) dropped from objects: Go compares templates as structs, where an explicit
/// zero and an absent field are the same, and writers differ in which they send.
fn canonical(template: &PodTemplateSpec) -> serde_json::Value {
    fn zero(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Null => true,
            serde_json::Value::Bool(b) => !b,
            serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
            serde_json::Value::String(s) => s.is_empty(),
            _ => false,
        }
    }
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: BTreeMap<String, serde_json::Value> = m
                    .into_iter()
                    .filter(|(_, v)| !zero(v))
                    .map(|(k, v)| (k, sort(v)))
                    .collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    sort(serde_json::to_value(template).unwrap_or_default())
}

/// Upstream's `EqualIgnoreHash`: the templates are equal once the hash label is dropped.
fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        let meta = t.metadata.get_or_insert_with(Default::default);
        if let Some(l) = meta.labels.as_mut() {
            l.remove(HASH_LABEL);
        }
        if meta.labels.as_ref().is_some_and(BTreeMap::is_empty) {
            meta.labels = None;
        }
        canonical(&t)
    };
    strip(a) == strip(b)
}

/// Upstream's `GetScaledValueFromIntOrPercent`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return 0;
            };
            let x = p * i64::from(total);
            let v = if round_up {
                (x + 99).div_euclid(100)
            } else {
                x.div_euclid(100)
            };
            v as i32
        }
    }
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// Upstream's `ResolveFenceposts`: (maxSurge, maxUnavailable) for the desired count.
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let pct = IntOrString::String("25%".into());
    let surge = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&pct);
    let unavailable = ru.and_then(|r| r.max_unavailable.as_ref()).unwrap_or(&pct);
    let desired = replicas(d);
    let s = scaled_value(surge, desired, true);
    let u = scaled_value(unavailable, desired, false);
    if s == 0 && u == 0 { (0, 1) } else { (s, u) }
}

fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn rs_status(
    rs: &ReplicaSet,
    f: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32,
) -> i32 {
    rs.status.as_ref().map(f).unwrap_or(0)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs_status(rs, |s| s.available_replicas.unwrap_or(0))
}

fn annotation(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> (Option<i128>, String) {
    (
        rs.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_nanosecond()),
        rs.name_any(),
    )
}

fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|s| s != i32::MAX)
}

fn condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().flatten().find(|c| c.type_ == type_)
}

fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Upstream's `SetDeploymentCondition`: same status and reason is no change; same status
/// keeps its transition time.
fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conds = s.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

fn remove_condition(s: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = s.conditions.as_mut() {
        c.retain(|x| x.type_ != type_);
    }
}

/// One sync of one Deployment; a working copy whose status is written once at the end.
struct Sync<'a> {
    ctx: &'a Ctx,
    d: Deployment,
    ns: String,
    name: String,
    rss: Api<ReplicaSet>,
}

type Result<T> = std::result::Result<T, DeploymentError>;

impl Sync<'_> {
    fn err(&self, cause: kube::Error) -> DeploymentError {
        DeploymentError::Api {
            namespace: self.ns.clone(),
            name: self.name.clone(),
            cause,
        }
    }

    /// Upstream's `getReplicaSetsForDeployment`: lists, adopts and releases.
    async fn claim(&self, sel: Option<&Selector>) -> Result<Vec<ReplicaSet>> {
        let uid = self.d.uid().unwrap_or_default();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let list = self
            .rss
            .list(&ListParams::default())
            .await
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for rs in list.items {
            let matches = sel.is_some_and(|s| {
                s.matches(rs.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
            });
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches || rs.metadata.deletion_timestamp.is_some() {
                        out.push(rs);
                    } else if !deleting {
                        let p = release_patch(&uid, &rs.metadata);
                        match self
                            .rss
                            .patch(&rs.name_any(), &PatchParams::default(), &p)
                            .await
                        {
                            Ok(_) | Err(kube::Error::Api(_)) => {}
                            Err(e) => return Err(self.err(e)),
                        }
                    }
                }
                None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                    let p = adopt_patch(&self.d, &rs.metadata);
                    match self
                        .rss
                        .patch(&rs.name_any(), &PatchParams::default(), &p)
                        .await
                    {
                        Ok(rs) => out.push(rs),
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                        Err(e) => return Err(self.err(e)),
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The annotations a new or current ReplicaSet carries from the Deployment.
    fn copied_annotations(&self, rs: &mut BTreeMap<String, String>) -> bool {
        let mut changed = false;
        for (k, v) in self.d.metadata.annotations.iter().flatten() {
            if NOT_COPIED.contains(&k.as_str()) {
                continue;
            }
            if rs.get(k) != Some(v) {
                rs.insert(k.clone(), v.clone());
                changed = true;
            }
        }
        changed
    }

    /// Upstream's `getAllReplicaSetsAndSyncRevision`: (new, old), the new one created when
    /// asked and missing.
    async fn new_and_old(
        &mut self,
        all: Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>)> {
        let template = self
            .d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut all = all;
        all.sort_by_key(created);
        let new_idx = all.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &template))
        });
        let existing = new_idx.map(|i| all.remove(i));
        let old = all;
        let max_old = old.iter().map(revision).max().unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(mut rs) = existing {
            let mut ann = rs.metadata.annotations.clone().unwrap_or_default();
            let mut changed = self.copied_annotations(&mut ann);
            if revision(&rs) < new_revision {
                ann.insert(REVISION.into(), new_revision.to_string());
                changed = true;
            }
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
            if changed || min_ready.unwrap_or(0) != rs_min_ready.unwrap_or(0) {
                let p = json!({"metadata": {"annotations": ann}, "spec": {"minReadySeconds": min_ready.unwrap_or(0)}});
                rs = self
                    .rss
                    .patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&p))
                    .await
                    .map_err(|e| self.err(e))?;
            }
            self.set_revision(&revision(&rs).to_string()).await?;
            let deadline = has_progress_deadline(&self.d);
            let status = self.d.status.get_or_insert_with(Default::default);
            if deadline && condition(status, PROGRESSING).is_none() {
                let msg = format!("Found new replica set {:?}", rs.name_any());
                set_condition(
                    status,
                    new_condition(PROGRESSING, "True", "FoundNewReplicaSet", msg),
                );
            }
            return Ok((Some(rs), old));
        }
        if !create {
            return Ok((None, old));
        }
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = pod_template_hash(&template, collision);
        let mut new_template = template.clone();
        new_template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut sel = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        sel.match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let rs_name = format!("{}-{hash}", self.name);
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs_name.clone()),
                namespace: Some(self.ns.clone()),
                labels: new_template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone()),
                owner_references: Some(vec![controller_ref(&self.d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.d.spec.as_ref().and_then(|s| s.min_ready_seconds),
                selector: sel,
                template: Some(new_template),
            }),
            status: None,
        };
        let all_old: Vec<&ReplicaSet> = old.iter().collect();
        let new_replicas = self.new_rs_new_replicas(&all_old, &new_rs);
        let mut ann = BTreeMap::new();
        self.copied_annotations(&mut ann);
        ann.insert(REVISION.into(), new_revision.to_string());
        ann.insert(DESIRED_REPLICAS.into(), replicas(&self.d).to_string());
        ann.insert(
            MAX_REPLICAS.into(),
            (replicas(&self.d) + max_surge(&self.d)).to_string(),
        );
        new_rs.metadata.annotations = Some(ann);
        if let Some(s) = new_rs.spec.as_mut() {
            s.replicas = Some(new_replicas);
        }
        let created = match self.rss.create(&PostParams::default(), &new_rs).await {
            Ok(rs) => rs,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours from an earlier sync whose answer was lost, or a true hash collision.
                let found = self.rss.get(&rs_name).await.map_err(|e| self.err(e))?;
                let ours = controller_of(&found.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = found
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &template));
                if ours && same {
                    return Ok((Some(found), old));
                }
                let status = self.d.status.get_or_insert_with(Default::default);
                status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                let p = json!({"status": {"collisionCount": status.collision_count}});
                let deploys: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &self.ns);
                let _ = super::update_merged(&deploys, &self.d, &p, true).await;
                return Err(DeploymentError::Collision {
                    namespace: self.ns.clone(),
                    name: self.name.clone(),
                    rs: rs_name,
                });
            }
            Err(e) => {
                let msg = match &e {
                    kube::Error::Api(s) => s.message.clone(),
                    other => other.to_string(),
                };
                if has_progress_deadline(&self.d) {
                    let status = self.d.status.get_or_insert_with(Default::default);
                    set_condition(
                        status,
                        new_condition(
                            PROGRESSING,
                            "False",
                            "ReplicaSetCreateError",
                            format!("Failed to create new replica set {rs_name:?}: {msg}"),
                        ),
                    );
                    self.write_status(None).await?;
                }
                events::record(
                    &self.ctx.client,
                    NAME,
                    &self.d,
                    false,
                    "FailedCreate",
                    &format!("Failed to create new replica set {rs_name:?}: {msg}"),
                )
                .await;
                return Err(self.err(e));
            }
        };
        if new_replicas > 0 {
            events::record(
                &self.ctx.client,
                NAME,
                &self.d,
                true,
                "ScalingReplicaSet",
                &format!("Scaled up replica set {rs_name} to {new_replicas}"),
            )
            .await;
        }
        self.set_revision(&new_revision.to_string()).await?;
        if has_progress_deadline(&self.d) {
            let status = self.d.status.get_or_insert_with(Default::default);
            set_condition(
                status,
                new_condition(
                    PROGRESSING,
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set {rs_name:?}"),
                ),
            );
        }
        Ok((Some(created), old))
    }

    /// Keeps the Deployment's revision annotation at its new ReplicaSet's.
    async fn set_revision(&mut self, rev: &str) -> Result<()> {
        if annotation(&self.d.metadata, REVISION).as_deref() == Some(rev) {
            return Ok(());
        }
        let deploys: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let p = json!({"metadata": {"annotations": {REVISION: rev}}});
        super::update_merged(&deploys, &self.d, &p, false)
            .await
            .map_err(|e| self.err(e))?;
        self.d
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(REVISION.into(), rev.into());
        Ok(())
    }

    /// Upstream's `NewRSNewReplicas`.
    fn new_rs_new_replicas(&self, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
        let desired = replicas(&self.d);
        if !is_rolling(&self.d) {
            return desired;
        }
        let current: i32 = all.iter().map(|r| rs_replicas(r)).sum::<i32>()
            + if all.iter().any(|r| r.metadata.name == new.metadata.name) {
                0
            } else {
                rs_replicas(new)
            };
        let max_total = desired + max_surge(&self.d);
        if current >= max_total {
            return rs_replicas(new);
        }
        let up = (max_total - current).min(desired - rs_replicas(new));
        rs_replicas(new) + up
    }

    /// Upstream's `scaleReplicaSet`: sets the size and the replica annotations; whether the
    /// size changed.
    async fn scale(&self, rs: &mut ReplicaSet, to: i32) -> Result<bool> {
        let from = rs_replicas(rs);
        let desired = replicas(&self.d).to_string();
        let max = (replicas(&self.d) + max_surge(&self.d)).to_string();
        let size = from != to;
        let ann = annotation(&rs.metadata, DESIRED_REPLICAS) != Some(desired.clone())
            || annotation(&rs.metadata, MAX_REPLICAS) != Some(max.clone());
        if !size && !ann {
            return Ok(false);
        }
        let p = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
            "spec": {"replicas": to},
        });
        *rs = self
            .rss
            .patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&p))
            .await
            .map_err(|e| self.err(e))?;
        if size {
            let op = if from < to { "up" } else { "down" };
            let msg = format!(
                "Scaled {op} replica set {} to {to} from {from}",
                rs.name_any()
            );
            events::record(
                &self.ctx.client,
                NAME,
                &self.d,
                true,
                "ScalingReplicaSet",
                &msg,
            )
            .await;
        }
        Ok(size)
    }

    /// Upstream's `scale`: a scaling event, or a paused Deployment, sizes its ReplicaSets
    /// without rolling.
    async fn scale_sets(&self, new: &mut Option<ReplicaSet>, old: &mut [ReplicaSet]) -> Result<()> {
        let desired = replicas(&self.d);
        // FindActiveOrLatest
        old.sort_by_key(|r| std::cmp::Reverse(created(r)));
        let active: Vec<usize> = old
            .iter()
            .enumerate()
            .filter(|(_, r)| rs_replicas(r) > 0)
            .map(|(i, _)| i)
            .collect();
        let new_active = new.as_ref().is_some_and(|r| rs_replicas(r) > 0);
        let n_active = active.len() + usize::from(new_active);
        if n_active <= 1 {
            let target = match (n_active, new_active) {
                (1, true) | (0, _) if new.is_some() => new.as_mut(),
                (1, false) => old.get_mut(active[0]),
                _ => old.first_mut(),
            };
            if let Some(rs) = target {
                self.scale(rs, desired).await?;
            }
            return Ok(());
        }
        let saturated = new.as_ref().is_some_and(|r| {
            annotation(&r.metadata, DESIRED_REPLICAS) == Some(desired.to_string())
                && rs_replicas(r) == desired
                && rs_available(r) == desired
        });
        if saturated {
            for rs in old.iter_mut().filter(|r| rs_replicas(r) > 0) {
                self.scale(rs, 0).await?;
            }
            return Ok(());
        }
        if !is_rolling(&self.d) {
            return Ok(());
        }
        // Proportional scaling over the active sets.
        let mut sets: Vec<&mut ReplicaSet> =
            old.iter_mut().filter(|r| rs_replicas(r) > 0).collect();
        if let Some(n) = new.as_mut().filter(|r| rs_replicas(r) > 0) {
            sets.push(n);
        }
        let all_replicas: i32 = sets.iter().map(|r| rs_replicas(r)).sum();
        let allowed = if desired > 0 {
            desired + max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - all_replicas;
        if to_add > 0 {
            sets.sort_by_key(|r| {
                (
                    std::cmp::Reverse(rs_replicas(r)),
                    std::cmp::Reverse(created(r)),
                )
            });
        } else {
            sets.sort_by_key(|r| (std::cmp::Reverse(rs_replicas(r)), created(r)));
        }
        let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::new();
        for rs in &sets {
            let mut size = rs_replicas(rs);
            if to_add != 0 && to_add != added && size != 0 {
                let fraction = if desired == 0 {
                    -size
                } else {
                    let annotated = annotation(&rs.metadata, MAX_REPLICAS)
                        .and_then(|v| v.parse::<i32>().ok())
                        .unwrap_or(status_replicas);
                    let target = f64::from(size) * f64::from(allowed) / f64::from(annotated.max(1));
                    target.round() as i32 - size
                };
                let left = to_add - added;
                let p = if to_add > 0 {
                    fraction.min(left)
                } else {
                    fraction.max(left)
                };
                size += p;
                added += p;
            }
            sizes.push(size);
        }
        if let Some(first) = sizes.first_mut()
            && to_add != 0
        {
            *first = (*first + to_add - added).max(0);
        }
        for (rs, size) in sets.into_iter().zip(sizes) {
            self.scale(rs, size).await?;
        }
        Ok(())
    }

    /// Upstream's `calculateStatus`.
    fn calculate_status(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> DeploymentStatus {
        let all: Vec<&ReplicaSet> = old.iter().chain(new).collect();
        let available: i32 = all.iter().map(|r| rs_available(r)).sum();
        let total: i32 = all.iter().map(|r| rs_replicas(r)).sum();
        let mut s = self.d.status.clone().unwrap_or_default();
        s.observed_generation = self.d.metadata.generation;
        s.replicas = Some(all.iter().map(|r| rs_status(r, |s| s.replicas)).sum());
        s.updated_replicas = Some(new.map_or(0, |r| rs_status(r, |s| s.replicas)));
        s.ready_replicas = Some(
            all.iter()
                .map(|r| rs_status(r, |s| s.ready_replicas.unwrap_or(0)))
                .sum(),
        );
        s.available_replicas = Some(available);
        s.unavailable_replicas = Some((total - available).max(0));
        if available >= replicas(&self.d) - max_unavailable(&self.d) {
            set_condition(
                &mut s,
                new_condition(
                    AVAILABLE,
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.".into(),
                ),
            );
        } else {
            set_condition(
                &mut s,
                new_condition(
                    AVAILABLE,
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.".into(),
                ),
            );
        }
        s
    }

    fn complete(&self, s: &DeploymentStatus) -> bool {
        let r = replicas(&self.d);
        s.updated_replicas == Some(r)
            && s.replicas == Some(r)
            && s.available_replicas == Some(r)
            && s.observed_generation >= self.d.metadata.generation
    }

    /// Writes `status` if it differs from what the API holds (the cached object's).
    async fn write_status(&self, status: Option<DeploymentStatus>) -> Result<()> {
        let status = status.or_else(|| self.d.status.clone()).unwrap_or_default();
        let deploys: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let p = json!({"status": status});
        match super::update_merged(&deploys, &self.d, &p, true).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Upstream's `syncRolloutStatus`; when to look again for the progress deadline.
    async fn rollout_status(
        &mut self,
        original: &Option<DeploymentStatus>,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<Option<Duration>> {
        let mut s = self.calculate_status(new, old);
        if !has_progress_deadline(&self.d) {
            remove_condition(&mut s, PROGRESSING);
        }
        let cur = condition(&s, PROGRESSING).cloned();
        let is_complete = s.replicas == s.updated_replicas
            && cur.as_ref().and_then(|c| c.reason.as_deref()) == Some("NewReplicaSetAvailable");
        let deadline = self
            .d
            .spec
            .as_ref()
            .and_then(|x| x.progress_deadline_seconds)
            .unwrap_or(600);
        let now = k8s_openapi::jiff::Timestamp::now();
        let old_status = self.d.status.clone().unwrap_or_default();
        let mut recheck = None;
        if has_progress_deadline(&self.d) && !is_complete {
            let what = |verb: &str| match new {
                Some(rs) => format!("ReplicaSet {:?} {verb}", rs.name_any()),
                None => format!("Deployment {:?} {verb}", self.name),
            };
            let old_old =
                old_status.replicas.unwrap_or(0) - old_status.updated_replicas.unwrap_or(0);
            let new_old = s.replicas.unwrap_or(0) - s.updated_replicas.unwrap_or(0);
            let progressing = s.updated_replicas > old_status.updated_replicas
                || new_old < old_old
                || s.ready_replicas > old_status.ready_replicas
                || s.available_replicas > old_status.available_replicas;
            let timed_out = cur.as_ref().is_some_and(|c| match c.reason.as_deref() {
                Some("NewReplicaSetAvailable") => false,
                Some("ProgressDeadlineExceeded") => true,
                _ => c
                    .last_update_time
                    .as_ref()
                    .is_some_and(|t| t.0.as_second() + i64::from(deadline) < now.as_second()),
            });
            if self.complete(&s) {
                set_condition(
                    &mut s,
                    new_condition(
                        PROGRESSING,
                        "True",
                        "NewReplicaSetAvailable",
                        what("has successfully progressed."),
                    ),
                );
            } else if progressing {
                let mut c = new_condition(
                    PROGRESSING,
                    "True",
                    "ReplicaSetUpdated",
                    what("is progressing."),
                );
                if let Some(cur) = cur.as_ref().filter(|c| c.status == "True") {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove_condition(&mut s, PROGRESSING);
                set_condition(&mut s, c);
            } else if timed_out {
                set_condition(
                    &mut s,
                    new_condition(
                        PROGRESSING,
                        "False",
                        "ProgressDeadlineExceeded",
                        what("has timed out progressing."),
                    ),
                );
            }
            // Look again when the deadline would pass (upstream's requeueStuckDeployment).
            if let Some(c) = condition(&s, PROGRESSING)
                && c.status == "True"
                && c.reason.as_deref() != Some("NewReplicaSetAvailable")
                && let Some(t) = &c.last_update_time
            {
                let left = t.0.as_second() + i64::from(deadline) - now.as_second();
                recheck = Some(Duration::from_secs(left.max(0) as u64 + 1));
            }
        }
        let failure = old
            .iter()
            .chain(new)
            .filter_map(|r| {
                r.status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_ == REPLICA_FAILURE)
                    .cloned()
            })
            .next();
        match failure {
            Some(f) => set_condition(
                &mut s,
                new_condition(
                    REPLICA_FAILURE,
                    &f.status,
                    f.reason.as_deref().unwrap_or(""),
                    f.message.unwrap_or_default(),
                ),
            ),
            None => remove_condition(&mut s, REPLICA_FAILURE),
        }
        if original.as_ref() != Some(&s) {
            self.write_status(Some(s.clone())).await?;
        }
        self.d.status = Some(s);
        Ok(recheck)
    }

    /// Upstream's `cleanupDeployment`: keeps `revisionHistoryLimit` old, empty ReplicaSets.
    async fn cleanup(&self, old: &[ReplicaSet]) -> Result<()> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|r| (revision(r), created(r)));
        for rs in cleanable.into_iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_status(rs, |s| s.replicas) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            match self
                .rss
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(())
    }

    /// Upstream's `rolloutRolling`.
    async fn rolling(
        &mut self,
        original: &Option<DeploymentStatus>,
        all: Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let (new, mut old) = self.new_and_old(all, true).await?;
        let Some(mut new) = new else {
            return self.rollout_status(original, None, &old).await;
        };
        // reconcileNewReplicaSet
        let desired = replicas(&self.d);
        let scaled_up = if rs_replicas(&new) > desired {
            self.scale(&mut new, desired).await?
        } else if rs_replicas(&new) < desired {
            let olds: Vec<&ReplicaSet> = old.iter().collect();
            let to = self.new_rs_new_replicas(&olds, &new);
            self.scale(&mut new, to).await?
        } else {
            false
        };
        if scaled_up {
            return self.rollout_status(original, Some(&new), &old).await;
        }
        if self.scale_down_old(&new, &mut old).await? {
            return self.rollout_status(original, Some(&new), &old).await;
        }
        let s = self.calculate_status(Some(&new), &old);
        if self.complete(&s) {
            self.cleanup(&old).await?;
        }
        self.rollout_status(original, Some(&new), &old).await
    }

    /// Upstream's `reconcileOldReplicaSets`: whether any old set was scaled down.
    async fn scale_down_old(&self, new: &ReplicaSet, old: &mut [ReplicaSet]) -> Result<bool> {
        let old_count: i32 = old.iter().map(rs_replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count = old_count + rs_replicas(new);
        let min_available = replicas(&self.d) - max_unavailable(&self.d);
        let new_unavailable = rs_replicas(new) - rs_available(new);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        old.sort_by_key(created);
        // cleanupUnhealthyReplicas
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let unhealthy = rs_replicas(rs) - rs_available(rs);
            if rs_replicas(rs) == 0 || unhealthy <= 0 {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(unhealthy);
            let to = rs_replicas(rs) - down;
            self.scale(rs, to).await?;
            cleaned += down;
        }
        // scaleDownOldReplicaSetsForRollingUpdate
        let available: i32 = old.iter().map(rs_available).sum::<i32>() + rs_available(new);
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in old.iter_mut() {
                if scaled >= total {
                    break;
                }
                if rs_replicas(rs) == 0 {
                    continue;
                }
                let down = rs_replicas(rs).min(total - scaled);
                let to = rs_replicas(rs) - down;
                self.scale(rs, to).await?;
                scaled += down;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    /// Upstream's `rolloutRecreate`.
    async fn recreate(
        &mut self,
        original: &Option<DeploymentStatus>,
        all: Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let (new, mut old) = self.new_and_old(all, false).await?;
        let mut scaled_down = false;
        for rs in old.iter_mut().filter(|r| rs_replicas(r) > 0) {
            scaled_down |= self.scale(rs, 0).await?;
        }
        if scaled_down {
            return self.rollout_status(original, new.as_ref(), &old).await;
        }
        if self.old_pods_running(new.as_ref(), &old).await? {
            return self.rollout_status(original, new.as_ref(), &old).await;
        }
        let (new, old) = match new {
            Some(n) => (Some(n), old),
            None => {
                let mut all = old;
                all.extend(new);
                self.new_and_old(all, true).await?
            }
        };
        let mut new = new;
        if let Some(rs) = new.as_mut() {
            self.scale(rs, replicas(&self.d)).await?;
        }
        let s = self.calculate_status(new.as_ref(), &old);
        if self.complete(&s) {
            self.cleanup(&old).await?;
        }
        self.rollout_status(original, new.as_ref(), &old).await
    }

    /// Whether pods of any set but the new one are still there (Recreate waits for them).
    async fn old_pods_running(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Result<bool> {
        if old
            .iter()
            .map(|r| rs_status(r, |s| s.replicas))
            .sum::<i32>()
            > 0
        {
            return Ok(true);
        }
        let uids: Vec<String> = old.iter().filter_map(|r| r.uid()).collect();
        let new_uid = new.and_then(|r| r.uid());
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| self.err(e))?;
        Ok(list.items.iter().any(|p| {
            let owner = controller_of(&p.metadata).map(|r| r.uid.clone());
            owner.is_some()
                && owner != new_uid
                && owner.as_ref().is_some_and(|u| uids.contains(u))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        }))
    }

    /// Upstream's `checkPausedConditions`.
    fn paused_conditions(&mut self) {
        if !has_progress_deadline(&self.d) {
            return;
        }
        let paused = self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let status = self.d.status.get_or_insert_with(Default::default);
        let reason = condition(status, PROGRESSING).and_then(|c| c.reason.clone());
        if reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return;
        }
        let paused_cond = reason.as_deref() == Some("DeploymentPaused");
        if paused && !paused_cond {
            set_condition(
                status,
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                ),
            );
        } else if !paused && paused_cond {
            set_condition(
                status,
                new_condition(
                    PROGRESSING,
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                ),
            );
        }
    }

    /// Upstream's `sync`: scaling and status only (paused, or a scaling event).
    async fn sync_only(
        &mut self,
        original: &Option<DeploymentStatus>,
        all: Vec<ReplicaSet>,
        scale: bool,
    ) -> Result<Option<Duration>> {
        let (mut new, mut old) = self.new_and_old(all, false).await?;
        if scale {
            self.scale_sets(&mut new, &mut old).await?;
            if self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
                self.cleanup(&old).await?;
            }
        }
        let s = self.calculate_status(new.as_ref(), &old);
        if original.as_ref() != Some(&s) {
            self.write_status(Some(s)).await?;
        }
        Ok(None)
    }

    /// Upstream's `isScalingEvent`.
    fn is_scaling_event(&self, all: &[ReplicaSet]) -> bool {
        let desired = replicas(&self.d).to_string();
        all.iter()
            .filter(|r| rs_replicas(r) > 0)
            .filter_map(|r| annotation(&r.metadata, DESIRED_REPLICAS))
            .any(|v| v != desired)
    }

    async fn run(&mut self) -> Result<Option<Duration>> {
        let original = self.d.status.clone();
        let sel = self.d.spec.as_ref().map(|s| &s.selector);
        let sel = selector(sel).map_err(|cause| DeploymentError::Selector {
            namespace: self.ns.clone(),
            name: self.name.clone(),
            cause,
        })?;
        let Some(sel) = sel else {
            events::record(
                &self.ctx.client,
                NAME,
                &self.d,
                false,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            .await;
            return Ok(None);
        };
        let all = self.claim(Some(&sel)).await?;
        if self.d.metadata.deletion_timestamp.is_some() {
            return self.sync_only(&original, all, false).await;
        }
        self.paused_conditions();
        if self.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            return self.sync_only(&original, all, true).await;
        }
        if self.is_scaling_event(&all) {
            return self.sync_only(&original, all, true).await;
        }
        if is_rolling(&self.d) {
            self.rolling(&original, all).await
        } else {
            self.recreate(&original, all).await
        }
    }
}

fn key(d: &Deployment) -> String {
    format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())
}

async fn reconcile(
    d: Arc<Deployment>,
    ctx: Arc<Ctx>,
) -> std::result::Result<Action, DeploymentError> {
    let ns = d.namespace().unwrap_or_default();
    let mut sync = Sync {
        ctx: &ctx,
        d: d.as_ref().clone(),
        name: d.name_any(),
        rss: Api::namespaced(ctx.client.clone(), &ns),
        ns,
    };
    let result = sync.run().await;
    ctx.backoff.settle(NAME, &key(&d), result)
}

fn error_policy(d: Arc<Deployment>, e: &DeploymentError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&key(&d), "deployment sync failed", e)
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let deploys: Api<Deployment> = Api::all(client.clone());
    let rss: Api<ReplicaSet> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::new(QUEUE, metrics),
    });
    let controller = Controller::new(deploys, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(rss, watcher::Config::default(), move |rs| {
            owners_of(&store, &rs.metadata, |d: &Deployment| {
                d.spec.as_ref().map(|s| &s.selector)
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
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};

    fn deploy(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn surge_rounds_up_unavailable_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        let d = deploy(3, pct("25%"), pct("25%"));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (1, 0));
        let d = deploy(10, pct("25%"), pct("25%"));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
        // Both zero would never progress: upstream allows one unavailable.
        let d = deploy(3, IntOrString::Int(0), pct("10%"));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 1));
        let d = deploy(2, IntOrString::Int(1), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d), 2);
    }

    #[test]
    fn hash_is_stable_safe_and_template_sensitive() {
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: None,
        };
        let h = pod_template_hash(&t, None);
        assert_eq!(h, pod_template_hash(&t.clone(), None));
        assert!(h.bytes().all(|b| SAFE_ALPHANUMS.contains(&b)), "{h}");
        assert_ne!(h, pod_template_hash(&t, Some(1)));
        let mut u = t.clone();
        u.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), h.clone());
        assert!(equal_ignore_hash(&u, &t));
        u.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("x".into(), "y".into());
        assert!(!equal_ignore_hash(&u, &t));
        assert_ne!(pod_template_hash(&u, None), h);
    }
}
