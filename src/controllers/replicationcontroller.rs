//! Upstream's ReplicationController controller (the "replication manager"): a
//! ReplicationController is a ReplicaSet with a map selector in core/v1, so this module only
//! says how to read one as such; the sync, events and status are [`super::replicaset`]'s.
//!
//! Owns what that sync owns, for ReplicationControllers: the controller ownerReference of
//! matching pods, the pods it creates and deletes, their Events and the `status`. Never touches
//! a ReplicationController's spec or metadata.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSetStatus;
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::metrics::Metrics;
use super::replicaset::{self, Replicated};

pub const NAME: &str = "replicationcontroller-controller";
pub const ALIAS: &str = "replicationcontroller";

impl Replicated for ReplicationController {
    const CONTROLLER: &'static str = NAME;
    /// Upstream's queue name for this controller.
    const QUEUE: &'static str = "replicationmanager";
    const WHAT: &'static str = "replication controller";

    /// The map selector as `matchLabels` (an absent or empty one selects nothing).
    fn selector(&self) -> Option<LabelSelector> {
        let labels = self.spec.as_ref()?.selector.clone()?;
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
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
    /// The same fields under the same JSON names, conditions included.
    fn replica_status(&self) -> Option<ReplicaSetStatus> {
        let status = self.status.as_ref()?;
        serde_json::to_value(status)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
    }
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    replicaset::run_for::<ReplicationController>(client, metrics, concurrency).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ReplicationControllerCondition, ReplicationControllerSpec, ReplicationControllerStatus,
    };
    use kube::core::SelectorExt;

    #[test]
    fn map_selector_reads_as_match_labels() {
        let rc = ReplicationController {
            spec: Some(ReplicationControllerSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sel = replicaset::selector(rc.selector().as_ref())
            .unwrap()
            .unwrap();
        assert!(sel.matches(&[("app".to_string(), "web".to_string())].into()));
        assert!(!sel.matches(&[("app".to_string(), "db".to_string())].into()));
        let empty = ReplicationController::default();
        assert!(
            replicaset::selector(empty.selector().as_ref())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn status_reads_as_a_replica_sets() {
        let rc = ReplicationController {
            status: Some(ReplicationControllerStatus {
                replicas: 3,
                ready_replicas: Some(2),
                observed_generation: Some(4),
                conditions: Some(vec![ReplicationControllerCondition {
                    type_: "ReplicaFailure".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = rc.replica_status().unwrap();
        assert_eq!((s.replicas, s.ready_replicas), (3, Some(2)));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.conditions.unwrap()[0].type_, "ReplicaFailure");
    }
}
