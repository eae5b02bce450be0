//! Upstream's clusterrole-aggregation controller: a ClusterRole with an `aggregationRule` gets
//! the rules of every other ClusterRole its selectors match (ordered by role name, each rule
//! once), so `admin`, `edit` and `view` grow with the roles labelled to join them.
//!
//! Owns only the `rules` of aggregated ClusterRoles; never touches a role without an
//! aggregation rule.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::metrics::Metrics;
use super::{Backoff, log_outcome};
use crate::common::labels::selects;

pub const NAME: &str = "clusterrole-aggregation-controller";
pub const ALIAS: &str = "clusterrole-aggregation";
const QUEUE: &str = "ClusterRoleAggregator";

#[derive(Debug, thiserror::Error)]
pub enum AggregationError {
    #[error("cannot update the rules of clusterrole {name}: {cause}")]
    Update { name: String, cause: kube::Error },
}

struct Ctx {
    api: Api<ClusterRole>,
    store: Store<ClusterRole>,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

/// The rules `role` should hold: those of the roles its selectors match, by name, deduplicated.
fn aggregated(role: &ClusterRole, all: &[Arc<ClusterRole>]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .as_deref()
        .unwrap_or(&[]);
    let mut sources: Vec<&Arc<ClusterRole>> = all
        .iter()
        .filter(|r| r.name_any() != role.name_any())
        .filter(|r| selectors.iter().any(|s| selects(Some(s), r.labels())))
        .collect();
    sources.sort_by_key(|r| r.name_any());
    let mut rules: Vec<PolicyRule> = Vec::new();
    for r in sources {
        for rule in r.rules.iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

async fn reconcile(role: Arc<ClusterRole>, ctx: Arc<Ctx>) -> Result<Action, AggregationError> {
    let Some(want) = aggregated(&role, &ctx.store.state()) else {
        return Ok(Action::await_change());
    };
    let name = role.name_any();
    if role.rules.as_deref().unwrap_or(&[]) == want.as_slice() {
        return Ok(Action::await_change());
    }
    let patch = serde_json::json!({"rules": want});
    let result = ctx
        .api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    ctx.metrics.sync(NAME, result.is_ok());
    match result {
        Ok(_) => {
            tracing::info!(clusterrole = %name, rules = want.len(), "aggregated rules");
            ctx.backoff.succeeded(&name);
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(cause) => Err(AggregationError::Update { name, cause }),
    }
}

fn error_policy(role: Arc<ClusterRole>, e: &AggregationError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff
        .retry(&role.name_any(), "clusterrole aggregation failed", e)
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let api: Api<ClusterRole> = Api::all(client);
    let controller = Controller::new(api.clone(), watcher::Config::default());
    let store = controller.store();
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        store: store.clone(),
        backoff: Backoff::new(QUEUE, metrics.clone()),
        metrics,
    });
    // Any role's change may change what an aggregated role should hold.
    controller
        .watches(api, watcher::Config::default(), move |_| {
            store
                .state()
                .iter()
                .filter(|r| r.aggregation_rule.is_some())
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(RunConfig::default().concurrency(concurrency))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::AggregationRule;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn role(name: &str, label: Option<&str>, verbs: &[&str]) -> Arc<ClusterRole> {
        let mut r = ClusterRole::default();
        r.metadata.name = Some(name.into());
        if let Some(l) = label {
            r.metadata.labels = Some([(l.to_string(), "true".to_string())].into());
        }
        r.rules = Some(vec![PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["pods".into()]),
            ..Default::default()
        }]);
        Arc::new(r)
    }

    #[test]
    fn unions_matching_roles_by_name_once() {
        let mut agg = ClusterRole::default();
        agg.metadata.name = Some("view".into());
        agg.aggregation_rule = Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some([("agg".to_string(), "true".to_string())].into()),
                ..Default::default()
            }]),
        });
        let all = vec![
            role("b", Some("agg"), &["list"]),
            role("a", Some("agg"), &["get"]),
            role("c", Some("agg"), &["get"]),
            role("other", None, &["delete"]),
        ];
        let rules = aggregated(&agg, &all).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].verbs, ["get"]);
        assert_eq!(rules[1].verbs, ["list"]);
        assert!(aggregated(&role("plain", None, &[]), &all).is_none());
    }
}
