//! Upstream's node lifecycle controller with its taint-based eviction (upstream 1.29+ runs the
//! latter as a controller of its own, `taint-eviction-controller`): every
//! `--node-monitor-period` it looks at each Node and its Lease in `kube-node-lease`. A node
//! whose kubelet has posted neither status nor a Lease renewal for `--node-monitor-grace-period`
//! gets its Ready (and pressure) conditions set to Unknown ("Kubelet stopped posting node
//! status."), its pods marked not ready, and the taints `node.kubernetes.io/unreachable`
//! (`not-ready` when Ready is False) with NoSchedule and NoExecute; they go when it recovers.
//! Pods on a node with a NoExecute taint they do not tolerate are deleted, those that tolerate
//! it for `tolerationSeconds` once that time has passed.
//!
//! Owns the node conditions it sets to Unknown, the condition taints listed in
//! [`CONDITION_TAINTS`], and those pod status marks and deletions; never touches other taints,
//! a node's other status, or Leases.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::metrics::Metrics;
use crate::common::events;

pub const NAME: &str = "node-lifecycle-controller";
pub const ALIAS: &str = "nodelifecycle";

pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// Upstream's `--node-startup-grace-period` default: a node that never posted Ready gets this
/// long from its creation.
const STARTUP_GRACE: Duration = Duration::from_secs(60);
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The NoSchedule taints upstream derives from node conditions (`nodeConditionToTaintKeyStatusMap`)
/// and `spec.unschedulable`: (condition, status, taint key).
const CONDITION_TAINTS: &[(&str, &str, &str)] = &[
    ("Ready", "False", NOT_READY_TAINT),
    ("Ready", "Unknown", UNREACHABLE_TAINT),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Conditions set to Unknown when the kubelet goes quiet (upstream's list).
const MONITORED_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

#[derive(Debug, thiserror::Error)]
pub enum NodeLifecycleError {
    #[error("node lifecycle: {what}: {cause}")]
    Api { what: String, cause: kube::Error },
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> NodeLifecycleError {
    let what = what.into();
    move |cause| NodeLifecycleError::Api { what, cause }
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_))
}

fn ready_status(node: &Node) -> &str {
    condition(node, "Ready").map_or("Unknown", |c| c.status.as_str())
}

/// What was last seen of a node, and when (on this controller's clock) it last changed.
struct Health {
    status: serde_json::Value,
    lease_renew: Option<Timestamp>,
    probed: Instant,
}

/// The conditions of a node whose kubelet went quiet (upstream's `tryUpdateNodeHealth`): the
/// monitored ones Unknown; `None` if nothing changes.
fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conds: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for type_ in MONITORED_CONDITIONS {
        match conds.iter_mut().find(|c| c.type_ == *type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conds.push(NodeCondition {
                    type_: (*type_).into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conds)
}

/// The node's taints with the condition taints made to match its conditions: NoSchedule ones
/// for every condition upstream maps, NoExecute `not-ready`/`unreachable` for Ready False /
/// Unknown. Existing matching taints are kept as they are (their `timeAdded` too).
fn desired_taints(node: &Node, now: Timestamp) -> Vec<Taint> {
    let mut want: Vec<(String, &str)> = Vec::new();
    for (cond, status, key) in CONDITION_TAINTS {
        if condition(node, cond).is_some_and(|c| c.status == *status) {
            want.push(((*key).to_string(), "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        want.push((UNSCHEDULABLE_TAINT.to_string(), "NoSchedule"));
    }
    match ready_status(node) {
        "False" => want.push((NOT_READY_TAINT.to_string(), "NoExecute")),
        "Unknown" if condition(node, "Ready").is_some() => {
            want.push((UNREACHABLE_TAINT.to_string(), "NoExecute"))
        }
        _ => {}
    }
    let owned = |t: &Taint| {
        (t.effect == "NoSchedule"
            && (t.key == UNSCHEDULABLE_TAINT
                || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == t.key)))
            || (t.effect == "NoExecute" && (t.key == NOT_READY_TAINT || t.key == UNREACHABLE_TAINT))
    };
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !owned(t) || want.iter().any(|(k, e)| *k == t.key && *e == t.effect))
        .cloned()
        .collect();
    for (key, effect) in want {
        if !out.iter().any(|t| t.key == key && t.effect == effect) {
            out.push(Taint {
                key,
                effect: effect.into(),
                time_added: (effect == "NoExecute").then_some(Time(now)),
                value: None,
            });
        }
    }
    out
}

/// Upstream's `ToleratesTaint`.
fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    if t.key
        .as_deref()
        .is_some_and(|k| !k.is_empty() && k != taint.key)
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// When a pod on a node with these taints must go (upstream's taint eviction): now if a
/// NoExecute taint is not tolerated, else the earliest `timeAdded + tolerationSeconds` among the
/// tolerations used; `None` if it may stay.
fn eviction_time(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Timestamp> {
    let tolerations: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let mut at: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(now);
        }
        // Any toleration without a limit tolerates the taint forever.
        if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let secs = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .min()
            .unwrap_or(0)
            .max(0);
        let added = taint.time_added.as_ref().map_or(now, |t| t.0);
        let due = added
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
            .unwrap_or(now);
        at = Some(at.map_or(due, |a| a.min(due)));
    }
    at
}

struct NodeLifecycle {
    client: kube::Client,
    grace: Duration,
    health: HashMap<String, Health>,
}

impl NodeLifecycle {
    async fn pass(&mut self) -> Result<(), NodeLifecycleError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let lp = ListParams::default();
        let nodes = nodes.list(&lp).await.map_err(api_err("list nodes"))?.items;
        let leases: HashMap<String, Option<Timestamp>> = leases
            .list(&lp)
            .await
            .map_err(api_err("list leases"))?
            .items
            .into_iter()
            .map(|l| {
                let renew = l
                    .spec
                    .as_ref()
                    .and_then(|s| s.renew_time.as_ref())
                    .map(|t| t.0);
                (l.name_any(), renew)
            })
            .collect();
        self.health
            .retain(|n, _| nodes.iter().any(|x| x.name_any() == *n));
        let mut first_error = None;
        for node in nodes {
            let lease = leases.get(&node.name_any()).copied().flatten();
            if let Err(e) = self.monitor(node, lease).await {
                tracing::warn!(error = %e, "node lifecycle");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn monitor(
        &mut self,
        mut node: Node,
        lease: Option<Timestamp>,
    ) -> Result<(), NodeLifecycleError> {
        let name = node.name_any();
        let now = Instant::now();
        let status = serde_json::to_value(&node.status).unwrap_or_default();
        // The first sight counts as a heartbeat, except for a node that never posted Ready:
        // its grace runs from its creation (upstream's startup grace).
        let h = self.health.entry(name.clone()).or_insert_with(|| Health {
            status: status.clone(),
            lease_renew: lease,
            probed: now,
        });
        if h.status != status || lease.is_some_and(|l| h.lease_renew.is_none_or(|s| l > s)) {
            h.status = status;
            h.lease_renew = lease;
            h.probed = now;
        }
        let (grace, since) = match condition(&node, "Ready") {
            Some(_) => (self.grace, h.probed.elapsed()),
            None => {
                let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
                let age = created.map_or(Duration::ZERO, |c| {
                    Duration::from_secs(
                        Timestamp::now()
                            .as_second()
                            .saturating_sub(c.as_second())
                            .max(0) as u64,
                    )
                });
                (STARTUP_GRACE, age.min(h.probed.elapsed().max(age)))
            }
        };
        let was_ready = ready_status(&node) == "True";
        if since > grace
            && let Some(conds) = unknown_conditions(&node, Timestamp::now())
        {
            let api: Api<Node> = Api::all(self.client.clone());
            let patch = json!({"status": {"conditions": conds}});
            let updated = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map_err(api_err(format!("update node {name} status")))?;
            tracing::info!(
                node = name,
                "node's kubelet stopped posting node status; Ready is Unknown"
            );
            if let Some(h) = self.health.get_mut(&name) {
                h.status = serde_json::to_value(&updated.status).unwrap_or_default();
            }
            node = updated;
            if was_ready {
                events::record(
                    &self.client,
                    NAME,
                    &node,
                    true,
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                )
                .await;
            }
        }
        // A node that never posted Ready is left alone until its startup grace ends (upstream
        // marks pods only once the node has a Ready condition that is not True).
        if condition(&node, "Ready").is_some() && ready_status(&node) != "True" {
            self.mark_pods_not_ready(&name).await?;
        }
        self.taint(&node).await?;
        self.evict(&node).await
    }

    async fn taint(&self, node: &Node) -> Result<(), NodeLifecycleError> {
        let name = node.name_any();
        let want = desired_taints(node, Timestamp::now());
        let have = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if want == have {
            return Ok(());
        }
        let api: Api<Node> = Api::all(self.client.clone());
        // The resourceVersion makes a concurrent taint edit a conflict, retried next pass.
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"taints": if want.is_empty() { json!(null) } else { json!(want) }},
        });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(api_err(format!("taint node {name}")))?;
        tracing::info!(node = name, taints = ?want.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "node taints updated");
        Ok(())
    }

    fn pods_on(&self, node: &str) -> (Api<Pod>, ListParams) {
        (
            Api::all(self.client.clone()),
            ListParams::default().fields(&format!("spec.nodeName={node}")),
        )
    }

    /// Upstream's `MarkPodsNotReady`: the Ready condition of the node's pods becomes False.
    async fn mark_pods_not_ready(&self, node: &str) -> Result<(), NodeLifecycleError> {
        let (api, lp) = self.pods_on(node);
        let pods = api
            .list(&lp)
            .await
            .map_err(api_err(format!("list pods on {node}")))?;
        for pod in pods.items {
            let mut conds: Vec<PodCondition> = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let Some(c) = conds
                .iter_mut()
                .find(|c| c.type_ == "Ready" && c.status != "False")
            else {
                continue;
            };
            c.status = "False".into();
            c.last_transition_time = Some(Time(Timestamp::now()));
            let ns = pod.namespace().unwrap_or_default();
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let patch = json!({"status": {"conditions": conds}});
            match pods
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
            {
                Ok(_) => {
                    events::record(
                        &self.client,
                        NAME,
                        &pod,
                        false,
                        "NodeNotReady",
                        "Node is not ready",
                    )
                    .await;
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(api_err(format!(
                        "mark pod {ns}/{} not ready",
                        pod.name_any()
                    ))(e));
                }
            }
        }
        Ok(())
    }

    /// Taint-based eviction of the node's pods that do not tolerate its NoExecute taints (or no
    /// longer: their tolerationSeconds have run out).
    async fn evict(&self, node: &Node) -> Result<(), NodeLifecycleError> {
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if taints.is_empty() {
            return Ok(());
        }
        let (api, lp) = self.pods_on(&node.name_any());
        let pods = api
            .list(&lp)
            .await
            .map_err(api_err(format!("list pods on {}", node.name_any())))?;
        let now = Timestamp::now();
        for pod in pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            if eviction_time(pod, &taints, now).is_none_or(|at| at > now) {
                continue;
            }
            let ns = pod.namespace().unwrap_or_default();
            let name = pod.name_any();
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            events::record(
                &self.client,
                "taint-eviction-controller",
                pod,
                true,
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {ns}/{name}"),
            )
            .await;
            let mut conds: Vec<PodCondition> = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            conds.retain(|c| c.type_ != "DisruptionTarget");
            conds.push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                reason: Some("DeletionByTaintManager".into()),
                message: Some("Taint manager: deleting due to NoExecute taint".into()),
                last_transition_time: Some(Time(now)),
                ..Default::default()
            });
            let patch = json!({"status": {"conditions": conds}});
            let err = api_err(format!("evict pod {ns}/{name}"));
            match pods
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => continue,
                Err(e) => return Err(err(e)),
            }
            match pods.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(pod = %format!("{ns}/{name}"), "evicted by NoExecute taint")
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }
}

/// Runs a pass every `period`, forever.
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, grace: Duration, period: Duration) {
    let mut c = NodeLifecycle {
        client,
        grace,
        health: HashMap::new(),
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = c.pass().await;
        metrics.sync(NAME, r.is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, PodSpec};
    use kube::api::ObjectMeta;

    fn node(ready: Option<&str>, taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: ready.map(|s| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: s.into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn keys(t: &[Taint]) -> Vec<String> {
        t.iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn taints_follow_ready_and_leave_others_alone() {
        let now = Timestamp::now();
        let mine = taint("example.com/x", "NoSchedule");
        let n = node(Some("Unknown"), vec![mine.clone()]);
        assert_eq!(
            keys(&desired_taints(&n, now)),
            [
                "example.com/x:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        let n = node(Some("False"), desired_taints(&n, now));
        assert_eq!(
            keys(&desired_taints(&n, now)),
            [
                "example.com/x:NoSchedule",
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/not-ready:NoExecute"
            ]
        );
        let n = node(Some("True"), desired_taints(&n, now));
        assert_eq!(keys(&desired_taints(&n, now)), ["example.com/x:NoSchedule"]);
    }

    #[test]
    fn quiet_kubelet_makes_conditions_unknown_once() {
        let now = Timestamp::now();
        let n = node(Some("True"), vec![]);
        let conds = unknown_conditions(&n, now).unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            ready.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        let never = conds.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(never.reason.as_deref(), Some("NodeStatusNeverUpdated"));
        let mut n = n;
        n.status.as_mut().unwrap().conditions = Some(conds);
        assert!(unknown_conditions(&n, now).is_none());
    }

    #[test]
    fn tolerations_delay_or_prevent_eviction() {
        let now = Timestamp::now();
        let mut t = taint(UNREACHABLE_TAINT, "NoExecute");
        t.time_added = Some(Time(now));
        let pod = |tols: Vec<Toleration>| Pod {
            spec: Some(PodSpec {
                tolerations: Some(tols),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tol = |key: Option<&str>, secs: Option<i64>| Toleration {
            key: key.map(str::to_string),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            ..Default::default()
        };
        let taints = [t];
        assert_eq!(eviction_time(&pod(vec![]), &taints, now), Some(now));
        let due = eviction_time(
            &pod(vec![tol(Some(UNREACHABLE_TAINT), Some(300))]),
            &taints,
            now,
        )
        .unwrap();
        assert_eq!(due.as_second() - now.as_second(), 300);
        assert_eq!(
            eviction_time(&pod(vec![tol(None, None)]), &taints, now),
            None
        );
        assert_eq!(
            eviction_time(
                &pod(vec![tol(Some(NOT_READY_TAINT), Some(300))]),
                &taints,
                now
            ),
            Some(now)
        );
    }
}
