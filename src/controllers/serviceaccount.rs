//! Upstream's service account controller: a ServiceAccount `default` in every active
//! namespace, recreated when deleted, so pods that name no service account can be admitted.
//!
//! Owns only the existence of ServiceAccounts named `default`; never changes one that exists
//! (users may edit theirs), and never creates in a namespace that is not `Active`.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::metrics::Metrics;
use super::root_ca::namespace_gone;
use super::{Backoff, log_outcome};

pub const NAME: &str = "serviceaccount-controller";
pub const ALIAS: &str = "serviceaccount";
const QUEUE: &str = "serviceaccount";

/// The service accounts every namespace gets (upstream's `ServiceAccountsToEnsure`).
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum ServiceAccountError {
    #[error("cannot create service account {namespace}/{DEFAULT_SERVICE_ACCOUNT}: {cause}")]
    Create {
        namespace: String,
        cause: kube::Error,
    },
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

/// Upstream syncs only namespaces whose phase is `Active`.
fn active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Active")
}

async fn sync(ns: &str, client: &kube::Client) -> Result<(), kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    if api.get_opt(DEFAULT_SERVICE_ACCOUNT).await?.is_some() {
        return Ok(());
    }
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_SERVICE_ACCOUNT.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => {
            tracing::info!(
                namespace = ns,
                "created service account {DEFAULT_SERVICE_ACCOUNT}"
            );
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) if namespace_gone(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ServiceAccountError> {
    if !active(&ns) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let result = sync(&name, &ctx.client).await;
    ctx.metrics.sync(NAME, result.is_ok());
    match result {
        Ok(()) => {
            ctx.backoff.succeeded(&name);
            Ok(Action::await_change())
        }
        Err(cause) => Err(ServiceAccountError::Create {
            namespace: name,
            cause,
        }),
    }
}

fn error_policy(ns: Arc<Namespace>, e: &ServiceAccountError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff
        .retry(&ns.name_any(), "service account sync failed", e)
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::new(QUEUE, metrics.clone()),
        metrics,
    });
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            accounts,
            watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SERVICE_ACCOUNT}")),
            |sa| sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
        )
        .with_config(RunConfig::default().concurrency(concurrency))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_namespaces_get_one() {
        let mut ns = Namespace::default();
        assert!(!active(&ns), "no phase yet");
        ns.status = Some(k8s_openapi::api::core::v1::NamespaceStatus {
            phase: Some("Active".into()),
            ..Default::default()
        });
        assert!(active(&ns));
        ns.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(!active(&ns));
    }
}
