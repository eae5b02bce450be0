//! Upstream's root CA certificate publisher: a ConfigMap `kube-root-ca.crt` with key `ca.crt`
//! (the `--root-ca-file` bundle) in every namespace that is not terminating, recreated when
//! deleted and restored when edited; pods' projected service-account volumes read it.
//!
//! Owns only ConfigMaps named `kube-root-ca.crt`: their `ca.crt` data and the description
//! annotation. Leaves other keys' owners, labels and annotations alone, as upstream does.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::metrics::Metrics;
use super::{Backoff, log_outcome};

pub const NAME: &str = "root-ca-certificate-publisher-controller";
pub const ALIAS: &str = "root-ca-cert-publisher";
const QUEUE: &str = "root_ca_cert_publisher";

pub const CONFIGMAP_NAME: &str = "kube-root-ca.crt";
pub const CA_KEY: &str = "ca.crt";
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

#[derive(Debug, thiserror::Error)]
pub enum RootCaError {
    #[error("cannot sync {CONFIGMAP_NAME} in namespace {namespace}: {cause}")]
    Sync {
        namespace: String,
        cause: kube::Error,
    },
}

struct Ctx {
    client: kube::Client,
    ca: String,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

/// Whether the namespace is being deleted (nothing may be created in it then).
pub fn terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Whether a create failed only because the namespace is gone or going: nothing to retry.
pub fn namespace_gone(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 404
                || (s.code == 403
                    && (s.message.contains("because it is being terminated")
                        || s.details.as_ref().is_some_and(|d| {
                            d.causes.iter().any(|c| c.reason == "NamespaceTerminating")
                        })))
        }
        _ => false,
    }
}

/// What the ConfigMap must hold; None if `cm` already does.
fn wanted(cm: &ConfigMap, ca: &str) -> Option<ConfigMap> {
    let data: BTreeMap<String, String> = [(CA_KEY.to_string(), ca.to_string())].into();
    let described = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
        .is_some_and(|d| !d.is_empty());
    if cm.data.as_ref() == Some(&data) && described {
        return None;
    }
    let mut fixed = cm.clone();
    fixed.data = Some(data);
    fixed
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
    Some(fixed)
}

fn fresh(ca: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP_NAME.into()),
            annotations: Some([(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into())].into()),
            ..Default::default()
        },
        data: Some([(CA_KEY.to_string(), ca.to_string())].into()),
        ..Default::default()
    }
}

async fn sync(ns: &str, ctx: &Ctx) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(CONFIGMAP_NAME).await? {
        None => match api.create(&PostParams::default(), &fresh(&ctx.ca)).await {
            Ok(_) => {
                tracing::info!(namespace = ns, "published {CONFIGMAP_NAME}");
                Ok(())
            }
            // Don't retry a create in a namespace that is gone or terminating (upstream).
            Err(e) if namespace_gone(&e) => Ok(()),
            // Created meanwhile: its watch event brings us back to check its content.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        },
        Some(cm) => match wanted(&cm, &ctx.ca) {
            None => Ok(()),
            Some(fixed) => {
                // Carries the resourceVersion read: a concurrent edit is a 409 and a retry.
                api.replace(CONFIGMAP_NAME, &PostParams::default(), &fixed)
                    .await?;
                tracing::info!(namespace = ns, "restored {CONFIGMAP_NAME}");
                Ok(())
            }
        },
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, RootCaError> {
    let name = ns.name_any();
    if terminating(&ns) {
        return Ok(Action::await_change());
    }
    let result = sync(&name, &ctx).await;
    let code = match &result {
        Ok(()) => 200,
        Err(kube::Error::Api(s)) if s.code != 0 => s.code,
        Err(_) => 500,
    };
    ctx.metrics.root_ca_sync(code);
    ctx.metrics.sync(NAME, result.is_ok());
    match result {
        Ok(()) => {
            ctx.backoff.succeeded(&name);
            Ok(Action::await_change())
        }
        Err(cause) => Err(RootCaError::Sync {
            namespace: name,
            cause,
        }),
    }
}

fn error_policy(ns: Arc<Namespace>, e: &RootCaError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff
        .retry(&ns.name_any(), "root CA publisher sync failed", e)
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, ca: String, metrics: Arc<Metrics>) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let configmaps: Api<ConfigMap> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        ca,
        backoff: Backoff::new(QUEUE, metrics.clone()),
        metrics,
    });
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            configmaps,
            watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}")),
            |cm| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
        )
        .with_config(RunConfig::default().concurrency(5))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edited_data_and_annotation_are_restored_others_kept() {
        let ca = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n";
        let good = fresh(ca);
        assert!(wanted(&good, ca).is_none());

        let mut edited = good.clone();
        edited.data = Some([("ca.crt".to_string(), "junk".to_string())].into());
        edited
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("mine".into(), "keep".into());
        let fixed = wanted(&edited, ca).unwrap();
        assert_eq!(fixed.data.unwrap()["ca.crt"], ca);
        let ann = fixed.metadata.annotations.unwrap();
        assert_eq!(ann["mine"], "keep");
        assert_eq!(ann[DESCRIPTION_ANNOTATION], DESCRIPTION);

        let mut bare = good;
        bare.metadata.annotations = None;
        assert!(wanted(&bare, ca).is_some());
    }

    #[test]
    fn terminating_namespaces_are_recognised() {
        let mut ns = Namespace::default();
        assert!(!terminating(&ns));
        ns.status = Some(k8s_openapi::api::core::v1::NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        });
        assert!(terminating(&ns));
    }
}
