//! Upstream's pod garbage collector: every 20 s it force-deletes terminated pods above
//! `--terminated-pod-gc-threshold` (oldest first), pods bound to a node that has been gone for
//! the 40 s quarantine, terminating pods that were never scheduled, and terminating pods on a
//! not-ready node tainted `node.kubernetes.io/out-of-service`. Pods not yet finished are first
//! marked `Failed` (with a `DisruptionTarget` condition for orphans) so no one waits on them.
//!
//! Owns only those deletions and status marks; never touches live pods on live nodes, nodes,
//! or anything else.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::metrics::Metrics;

pub const NAME: &str = "pod-garbage-collector-controller";
pub const ALIAS: &str = "podgc";

/// Upstream's `gcCheckPeriod`.
const CHECK_PERIOD: Duration = Duration::from_secs(20);
/// Upstream's `quarantineTime`: how long a node must stay missing before its pods go.
const QUARANTINE: Duration = Duration::from_secs(40);
const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

#[derive(Debug, thiserror::Error)]
pub enum PodGcError {
    #[error("pod gc: {what}: {cause}")]
    Api {
        what: &'static str,
        cause: kube::Error,
    },
    #[error("pod gc: pod {namespace}/{name}: {cause}")]
    Pod {
        namespace: String,
        name: String,
        cause: kube::Error,
    },
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The terminated pods to delete above `threshold`: evicted ones first, then oldest first
/// (upstream's `byEvictionAndCreationTimestamp`).
fn terminated_over_threshold(pods: &[Pod], threshold: u32) -> Vec<&Pod> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<&Pod> = pods.iter().filter(|p| terminal(p)).collect();
    let excess = terminated.len().saturating_sub(threshold as usize);
    if excess == 0 {
        return Vec::new();
    }
    terminated.sort_by_key(|p| {
        let evicted = p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted");
        (
            !evicted,
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.name_any(),
        )
    });
    terminated.truncate(excess);
    terminated
}

/// Terminating pods never bound to a node: no kubelet will ever finish them.
fn unscheduled_terminating(pods: &[Pod]) -> impl Iterator<Item = &Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && node_of(p).is_none())
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn out_of_service(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.key == OUT_OF_SERVICE_TAINT && t.effect == "NoExecute")
        })
}

/// The condition upstream puts on orphans before deleting them.
fn orphan_condition() -> PodCondition {
    PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByPodGC".into()),
        message: Some("PodGC: node no longer exists".into()),
        last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        ..Default::default()
    }
}

struct PodGc {
    client: kube::Client,
    threshold: u32,
    /// Nodes pods are bound to but the node list lacks, and since when.
    missing_since: HashMap<String, Instant>,
}

impl PodGc {
    /// Upstream's `markFailedAndDeletePodWithCondition`: a pod not yet finished becomes
    /// `Failed` (with `condition`), then it is deleted at once.
    async fn force_delete(
        &self,
        pod: &Pod,
        condition: Option<PodCondition>,
    ) -> Result<(), PodGcError> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let err = |cause| PodGcError::Pod {
            namespace: ns.clone(),
            name: name.clone(),
            cause,
        };
        tracing::info!(pod = %format!("{ns}/{name}"), "PodGC is force deleting Pod");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if !terminal(pod) {
            let mut status = json!({"phase": "Failed"});
            if let Some(c) = condition {
                // A merge patch replaces the list: keep the others, replace ours.
                let mut conds: Vec<PodCondition> = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                conds.retain(|x| x.type_ != c.type_);
                conds.push(c);
                status["conditions"] = json!(conds);
            }
            match api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => return Err(err(e)),
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(kube::api::Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    async fn pass(&mut self) -> Result<(), PodGcError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let nodes: Api<Node> = Api::all(self.client.clone());
        let lp = ListParams::default();
        let pods = pods
            .list(&lp)
            .await
            .map_err(|cause| PodGcError::Api {
                what: "list pods",
                cause,
            })?
            .items;
        let node_list = nodes
            .list(&lp)
            .await
            .map_err(|cause| PodGcError::Api {
                what: "list nodes",
                cause,
            })?
            .items;
        let mut first_error = None;
        let mut note = |r: Result<(), PodGcError>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "pod gc");
                first_error.get_or_insert(e);
            }
        };
        for pod in terminated_over_threshold(&pods, self.threshold) {
            note(self.force_delete(pod, None).await);
        }
        // Terminating pods on a node declared out of service: its kubelet will not finish them.
        let gone_nodes: HashSet<&str> = node_list
            .iter()
            .filter(|n| !node_ready(n) && out_of_service(n))
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        for pod in pods.iter().filter(|p| {
            p.metadata.deletion_timestamp.is_some()
                && node_of(p).is_some_and(|n| gone_nodes.contains(n))
        }) {
            note(self.force_delete(pod, None).await);
        }
        note(self.orphans(&pods, &node_list).await);
        for pod in unscheduled_terminating(&pods) {
            note(self.force_delete(pod, None).await);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Pods on nodes missing for longer than the quarantine (the node is read once more
    /// first, in case the list was stale).
    async fn orphans(&mut self, pods: &[Pod], node_list: &[Node]) -> Result<(), PodGcError> {
        let existing: HashSet<&str> = node_list
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        let missing: HashSet<&str> = pods
            .iter()
            .filter_map(node_of)
            .filter(|n| !existing.contains(n))
            .collect();
        self.missing_since
            .retain(|n, _| missing.contains(n.as_str()));
        let now = Instant::now();
        let nodes: Api<Node> = Api::all(self.client.clone());
        for node in missing {
            let since = *self.missing_since.entry(node.to_string()).or_insert(now);
            if now.duration_since(since) < QUARANTINE {
                continue;
            }
            match nodes.get_opt(node).await {
                Ok(Some(_)) => {
                    self.missing_since.remove(node);
                    continue;
                }
                Ok(None) => {}
                Err(cause) => {
                    return Err(PodGcError::Api {
                        what: "get node",
                        cause,
                    });
                }
            }
            for pod in pods.iter().filter(|p| node_of(p) == Some(node)) {
                tracing::info!(
                    pod = pod.name_any(),
                    node,
                    "Found orphaned Pod assigned to the Node, deleting"
                );
                self.force_delete(pod, Some(orphan_condition())).await?;
            }
            self.missing_since.remove(node);
        }
        Ok(())
    }
}

/// Runs a pass every 20 s, forever.
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, threshold: u32) {
    let mut gc = PodGc {
        client,
        threshold,
        missing_since: HashMap::new(),
    };
    let mut tick = tokio::time::interval(CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = gc.pass().await;
        metrics.sync(NAME, r.is_ok());
        if let Err(e) = r {
            tracing::warn!(error = %e, "pod gc pass failed; next pass in {CHECK_PERIOD:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn pod(name: &str, phase: &str, created: i64, node: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
                )),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn oldest_terminated_pods_go_first_and_evicted_before_them() {
        let mut evicted = pod("evicted", "Failed", 50, None);
        evicted.status.as_mut().unwrap().reason = Some("Evicted".into());
        let pods = [
            pod("new", "Succeeded", 30, None),
            pod("running", "Running", 1, None),
            pod("old", "Failed", 10, None),
            pod("mid", "Succeeded", 20, None),
            evicted,
        ];
        let names = |v: Vec<&Pod>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(
            names(terminated_over_threshold(&pods, 2)),
            ["evicted", "old"]
        );
        assert!(terminated_over_threshold(&pods, 4).is_empty());
        assert!(
            terminated_over_threshold(&pods, 0).is_empty(),
            "0 turns it off"
        );
    }

    #[test]
    fn only_unscheduled_terminating_pods_are_collected_as_such() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut a = pod("a", "Pending", 1, None);
        a.metadata.deletion_timestamp = Some(now.clone());
        let mut b = pod("b", "Running", 1, Some("n1"));
        b.metadata.deletion_timestamp = Some(now);
        let c = pod("c", "Pending", 1, None);
        let pods = [a, b, c];
        let names: Vec<String> = unscheduled_terminating(&pods)
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, ["a"]);
    }
}
