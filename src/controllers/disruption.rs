//! Upstream's disruption controller: the status of every PodDisruptionBudget (policy/v1): how
//! many of its pods are healthy, how many must stay so (`minAvailable` / `maxUnavailable`, as a
//! number or a percentage of the pods' controllers' scale), and so how many voluntary
//! disruptions (evictions) are allowed now, with the `DisruptionAllowed` condition.
//!
//! Owns only PodDisruptionBudget `status`; never touches pods, their controllers, or a budget's
//! spec. The eviction subresource reads this status and records `disruptedPods`; this
//! controller expires those records after upstream's two minutes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::endpoints::pod_ready;
use super::metrics::Metrics;
use super::replicaset::controller_of;
use super::{Backoff, log_outcome};
use crate::common::events;

pub const NAME: &str = "disruption-controller";
pub const ALIAS: &str = "disruption";
const QUEUE: &str = "disruption";

/// Upstream's `DeletionTimeout`: how long an eviction's record keeps a pod from counting.
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum DisruptionError {
    #[error("pod disruption budget {namespace}/{name}: {cause}")]
    Api {
        namespace: String,
        name: String,
        cause: kube::Error,
    },
}

/// Why the expected pod count could not be worked out (upstream's messages).
#[derive(Debug, PartialEq)]
enum ScaleError {
    NoControllerRef(String),
    NoController(String),
    Api(String),
}

impl std::fmt::Display for ScaleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScaleError::NoControllerRef(p) => write!(f, "found no controller ref for pod {p:?}"),
            ScaleError::NoController(p) => write!(f, "found no controllers for pod {p:?}"),
            ScaleError::Api(e) => f.write_str(e),
        }
    }
}

/// Upstream's `GetScaledValueFromIntOrPercent`, rounding up; `None` for a malformed value.
fn scaled(v: &IntOrString, total: i32) -> Option<i32> {
    match v {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some(((pct * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// The scale of the controller (by uid) that runs a pod: a ReplicaSet's Deployment if it has
/// one, else the ReplicaSet, a StatefulSet or a ReplicationController.
async fn controller_scale(client: &kube::Client, pod: &Pod) -> Result<(String, i32), ScaleError> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let Some(r) = controller_of(&pod.metadata) else {
        return Err(ScaleError::NoControllerRef(name));
    };
    let api_err = |e: kube::Error| ScaleError::Api(e.to_string());
    let same = |uid: Option<String>| uid.as_deref() == Some(r.uid.as_str());
    match (r.api_version.as_str(), r.kind.as_str()) {
        ("apps/v1", "ReplicaSet") => {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
                .get_opt(&r.name)
                .await
                .map_err(api_err)?
                .filter(|rs| same(rs.uid()));
            let Some(rs) = rs else {
                return Err(ScaleError::NoController(name));
            };
            if let Some(d) = controller_of(&rs.metadata).filter(|d| d.kind == "Deployment") {
                let dep = Api::<Deployment>::namespaced(client.clone(), &ns)
                    .get_opt(&d.name)
                    .await
                    .map_err(api_err)?
                    .filter(|x| x.uid().as_deref() == Some(d.uid.as_str()));
                return match dep {
                    Some(dep) => Ok((
                        d.uid.clone(),
                        dep.spec.and_then(|s| s.replicas).unwrap_or(1),
                    )),
                    None => Err(ScaleError::NoController(name)),
                };
            }
            Ok((r.uid.clone(), rs.spec.and_then(|s| s.replicas).unwrap_or(1)))
        }
        ("apps/v1", "StatefulSet") => Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .get_opt(&r.name)
            .await
            .map_err(api_err)?
            .filter(|s| same(s.uid()))
            .map(|s| (r.uid.clone(), s.spec.and_then(|s| s.replicas).unwrap_or(1)))
            .ok_or(ScaleError::NoController(name)),
        ("v1", "ReplicationController") => {
            Api::<ReplicationController>::namespaced(client.clone(), &ns)
                .get_opt(&r.name)
                .await
                .map_err(api_err)?
                .filter(|s| same(s.uid()))
                .map(|s| (r.uid.clone(), s.spec.and_then(|s| s.replicas).unwrap_or(1)))
                .ok_or(ScaleError::NoController(name))
        }
        _ => Err(ScaleError::NoController(name)),
    }
}

/// Upstream's `getExpectedScale`: the sum of the scales of the pods' distinct controllers.
async fn expected_scale(client: &kube::Client, pods: &[Pod]) -> Result<i32, ScaleError> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    for pod in pods {
        if let Some(r) = controller_of(&pod.metadata)
            && scales.contains_key(&r.uid)
        {
            continue;
        }
        let (uid, scale) = controller_scale(client, pod).await?;
        // A ReplicaSet's pods count under their Deployment: key by the pod's controller too.
        if let Some(r) = controller_of(&pod.metadata) {
            scales.entry(r.uid.clone()).or_insert(0);
        }
        scales.insert(uid, scale);
    }
    Ok(scales.values().sum())
}

/// Upstream's `countHealthyPods`: ready pods not being deleted nor recently evicted.
fn count_healthy(pods: &[Pod], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            disrupted
                .get(&p.name_any())
                .is_none_or(|t| expires(t) <= now)
        })
        .filter(|p| pod_ready(p))
        .count() as i32
}

fn expires(t: &Time) -> Timestamp {
    t.0.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
        DELETION_TIMEOUT.as_secs() as i64,
    ))
    .unwrap_or(t.0)
}

/// Upstream's `buildDisruptedPodMap`: records of pods still there, not yet deleting and not
/// expired; and when the next one expires.
fn live_disruptions(
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Duration>) {
    let mut out = BTreeMap::new();
    let mut next: Option<Duration> = None;
    let recorded = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    for (name, t) in recorded {
        let Some(pod) = pods.iter().find(|p| p.name_any() == name) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() || expires(&t) <= now {
            continue;
        }
        let left = Duration::from_secs((expires(&t).as_second() - now.as_second()).max(1) as u64);
        next = Some(next.map_or(left, |n| n.min(left)));
        out.insert(name, t);
    }
    (out, next)
}

/// The status for these counts, keeping the condition's transition time when it holds.
fn status_for(
    pdb: &PodDisruptionBudget,
    counts: Result<(i32, i32, i32), String>,
    disrupted: BTreeMap<String, Time>,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let old = pdb.status.clone().unwrap_or_default();
    let (healthy, desired, expected, cond_status, reason, message) = match counts {
        Ok((healthy, desired, expected)) => {
            let allowed = if expected <= 0 {
                0
            } else {
                (healthy - desired).max(0)
            };
            let (s, r) = if allowed > 0 {
                ("True", "SufficientPods")
            } else {
                ("False", "InsufficientPods")
            };
            (healthy, desired, expected, s, r, String::new())
        }
        // Upstream's failSafe: counts kept, nothing allowed.
        Err(msg) => (
            old.current_healthy,
            old.desired_healthy,
            old.expected_pods,
            "False",
            "SyncFailed",
            msg,
        ),
    };
    let allowed = if cond_status == "True" {
        (healthy - desired).max(0)
    } else {
        0
    };
    let mut conds: Vec<Condition> = old.conditions.clone().unwrap_or_default();
    let generation = pdb.metadata.generation;
    match conds.iter_mut().find(|c| c.type_ == "DisruptionAllowed") {
        Some(c) => {
            if c.status != cond_status {
                c.last_transition_time = Time(now);
            }
            c.status = cond_status.into();
            c.reason = reason.into();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conds.push(Condition {
            type_: "DisruptionAllowed".into(),
            status: cond_status.into(),
            reason: reason.into(),
            message,
            last_transition_time: Time(now),
            observed_generation: generation,
        }),
    }
    PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: generation,
        conditions: Some(conds),
    }
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
}

fn api_err(pdb: &PodDisruptionBudget) -> impl Fn(kube::Error) -> DisruptionError + '_ {
    move |cause| DisruptionError::Api {
        namespace: pdb.namespace().unwrap_or_default(),
        name: pdb.name_any(),
        cause,
    }
}

fn selector_of(pdb: &PodDisruptionBudget) -> Option<Selector> {
    // policy/v1: an empty selector selects every pod of the namespace, a missing one none.
    let s = pdb.spec.as_ref()?.selector.clone()?;
    Selector::try_from(s).ok()
}

/// Upstream's `getExpectedPodCount`: (desired healthy, expected pods).
async fn expected(
    client: &kube::Client,
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
) -> Result<(i32, i32), String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    let invalid = |v: &IntOrString| format!("invalid value for IntOrString: invalid value {v:?}");
    if let Some(max) = &spec.max_unavailable {
        let expected = expected_scale(client, pods)
            .await
            .map_err(|e| e.to_string())?;
        let max = scaled(max, expected).ok_or_else(|| invalid(max))?;
        return Ok(((expected - max).max(0), expected));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((*n, pods.len() as i32)),
        Some(min @ IntOrString::String(_)) => {
            let expected = expected_scale(client, pods)
                .await
                .map_err(|e| e.to_string())?;
            Ok((scaled(min, expected).ok_or_else(|| invalid(min))?, expected))
        }
        None => Ok((0, 0)),
    }
}

async fn sync(pdb: &PodDisruptionBudget, ctx: &Ctx) -> Result<Option<Duration>, DisruptionError> {
    let ns = pdb.namespace().unwrap_or_default();
    let pods: Vec<Pod> = match selector_of(pdb) {
        Some(sel) => Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map_err(api_err(pdb))?
            .items
            .into_iter()
            .filter(|p| sel.matches(p.labels()))
            .collect(),
        None => Vec::new(),
    };
    if pods.is_empty() {
        events::record(
            &ctx.client,
            NAME,
            pdb,
            true,
            "NoPods",
            "No matching pods found",
        )
        .await;
    }
    let now = Timestamp::now();
    let (disrupted, recheck) = live_disruptions(pdb, &pods, now);
    let counts = match expected(&ctx.client, pdb, &pods).await {
        Ok((desired, expected)) => Ok((count_healthy(&pods, &disrupted, now), desired, expected)),
        Err(msg) => {
            events::record(
                &ctx.client,
                NAME,
                pdb,
                false,
                "CalculateExpectedPodCountFailed",
                &format!("Failed to calculate the number of expected pods: {msg}"),
            )
            .await;
            Err(msg)
        }
    };
    let status = status_for(pdb, counts, disrupted, now);
    if pdb.status.as_ref() != Some(&status) {
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        if status.disrupted_pods.is_none() {
            body["disruptedPods"] = json!(null);
        }
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        match super::update_merged(&api, pdb, &json!({"status": body}), true).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api_err(pdb)(e)),
        }
    }
    Ok(recheck)
}

fn key(pdb: &PodDisruptionBudget) -> String {
    format!("{}/{}", pdb.namespace().unwrap_or_default(), pdb.name_any())
}

async fn reconcile(
    pdb: Arc<PodDisruptionBudget>,
    ctx: Arc<Ctx>,
) -> Result<Action, DisruptionError> {
    let result = sync(&pdb, &ctx).await;
    ctx.backoff.settle(NAME, &key(&pdb), result)
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, e: &DisruptionError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff
        .retry(&key(&pdb), "pod disruption budget sync failed", e)
}

/// The budgets whose selector matches a pod.
fn budgets_of(
    store: &Store<PodDisruptionBudget>,
    pod: &Pod,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    store
        .state()
        .iter()
        .filter(|b| b.namespace() == pod.namespace())
        .filter(|b| selector_of(b).is_some_and(|s| s.matches(pod.labels())))
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>) {
    let pdbs: Api<PodDisruptionBudget> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::new(QUEUE, metrics),
    });
    let controller = Controller::new(pdbs, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(pods, watcher::Config::default(), move |pod| {
            budgets_of(&store, &pod)
        })
        .with_config(RunConfig::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use kube::api::ObjectMeta;

    fn pdb(spec: PodDisruptionBudgetSpec) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("b".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Some(2));
        assert_eq!(scaled(&IntOrString::String("34%".into()), 3), Some(2));
        assert_eq!(scaled(&IntOrString::String("33%".into()), 3), Some(1));
        assert_eq!(scaled(&IntOrString::Int(2), 3), Some(2));
        assert_eq!(scaled(&IntOrString::String("half".into()), 3), None);
    }

    #[test]
    fn status_allows_what_is_above_desired() {
        let now = Timestamp::now();
        let b = pdb(PodDisruptionBudgetSpec::default());
        let s = status_for(&b, Ok((3, 2, 3)), BTreeMap::new(), now);
        assert_eq!(
            (s.current_healthy, s.desired_healthy, s.expected_pods),
            (3, 2, 3)
        );
        assert_eq!(s.disruptions_allowed, 1);
        assert_eq!(s.observed_generation, Some(3));
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "SufficientPods")
        );
        let b = PodDisruptionBudget {
            status: Some(s),
            ..b
        };
        let s = status_for(&b, Ok((1, 2, 3)), BTreeMap::new(), now);
        assert_eq!(s.disruptions_allowed, 0);
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InsufficientPods")
        );
        let s = status_for(
            &b,
            Err("found no controller ref for pod \"x\"".into()),
            BTreeMap::new(),
            now,
        );
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.reason.as_str(), s.disruptions_allowed),
            ("SyncFailed", 0)
        );
        assert_eq!(c.message, "found no controller ref for pod \"x\"");
    }
}
