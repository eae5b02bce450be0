//! Upstream's namespace controller (the `kubernetes` namespace finalizer): for a namespace being
//! deleted, deletes every namespaced object of every resource discovery lists as listable and
//! deletable, waits until none remain, records progress in the namespace's conditions as
//! upstream words them, then removes the `kubernetes` finalizer through
//! `PUT /api/v1/namespaces/{name}/finalize`; the API server then deletes the namespace.
//!
//! Owns the `kubernetes` entry of `spec.finalizers` and the five `NamespaceDeletion*` /
//! `Namespace*Remaining` conditions; never touches a namespace that is not being deleted, nor
//! other finalizers (a namespace with others waits for their owners).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersion};
use kube::discovery::{Scope, verbs};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::metrics::Metrics;
use super::{Backoff, log_outcome};

pub const NAME: &str = "namespace-controller";
pub const ALIAS: &str = "namespace";
const QUEUE: &str = "namespace";

/// The finalizer this controller stands for.
pub const FINALIZER: &str = "kubernetes";
/// How long upstream assumes objects with finalizers need to go away.
const FINALIZER_ESTIMATE_SECONDS: i64 = 15;
/// Resources worked on at once while emptying a namespace.
const PARALLEL_RESOURCES: usize = 8;
/// Attempts at a namespace write that conflicts with another writer.
const CONFLICT_RETRIES: usize = 5;

pub const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
pub const GV_PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
pub const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
pub const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
pub const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// Condition types in upstream's order, with their reason and message when all is well.
const CONDITIONS: &[(&str, &str, &str)] = &[
    (
        DISCOVERY_FAILURE,
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        GV_PARSING_FAILURE,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        CONTENT_FAILURE,
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        CONTENT_REMAINING,
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        FINALIZERS_REMAINING,
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("cannot read namespace {namespace}: {cause}")]
    Get {
        namespace: String,
        cause: kube::Error,
    },
    #[error("cannot update the status of namespace {namespace}: {cause}")]
    Status {
        namespace: String,
        cause: kube::Error,
    },
    #[error("cannot delete the content of namespace {namespace}: {}", errors.join("; "))]
    Content {
        namespace: String,
        errors: Vec<String>,
    },
    #[error("cannot finalize namespace {namespace}: {cause}")]
    Finalize {
        namespace: String,
        cause: kube::Error,
    },
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

/// A resource to empty: its API coordinates and whether it can be deleted as a collection.
#[derive(Debug, Clone)]
struct Target {
    ar: ApiResource,
    delete_collection: bool,
}

impl Target {
    /// Upstream's `GroupVersionResource.String()`: `apps/v1, Resource=deployments`.
    fn gvr(&self) -> String {
        format!(
            "{}/{}, Resource={}",
            self.ar.group, self.ar.version, self.ar.plural
        )
    }
}

/// Discovery as upstream's `ServerPreferredNamespacedResources`: the preferred version of
/// every group, namespaced resources that can be listed and deleted. Groups that fail are
/// reported and skipped; the rest are still worked on.
async fn discover(client: &kube::Client) -> (Vec<Target>, Vec<String>) {
    let mut gvs = vec![GroupVersion::gv("", "v1")];
    let mut failures = Vec::new();
    match client.list_api_groups().await {
        Ok(list) => {
            for g in list.groups {
                let preferred = g
                    .preferred_version
                    .map(|v| v.version)
                    .or_else(|| g.versions.first().map(|v| v.version.clone()));
                match preferred {
                    Some(v) => gvs.push(GroupVersion::gv(&g.name, &v)),
                    None => failures.push(format!("{}: no versions", g.name)),
                }
            }
        }
        Err(e) => failures.push(format!("/apis: {e}")),
    }
    let found = futures::stream::iter(gvs)
        .map(|gv| async move {
            let r = kube::discovery::pinned_group(client, &gv).await;
            (gv, r)
        })
        .buffer_unordered(PARALLEL_RESOURCES)
        .collect::<Vec<_>>()
        .await;
    let mut targets = Vec::new();
    for (gv, r) in found {
        match r {
            Ok(group) => {
                for (ar, caps) in group.recommended_resources() {
                    if caps.scope == Scope::Namespaced
                        && caps.supports_operation(verbs::DELETE)
                        && caps.supports_operation(verbs::LIST)
                    {
                        targets.push(Target {
                            ar,
                            delete_collection: caps.supports_operation(verbs::DELETE_COLLECTION),
                        });
                    }
                }
            }
            Err(e) => failures.push(format!("{}: {e}", gv.api_version())),
        }
    }
    failures.sort();
    (targets, failures)
}

/// How one resource's emptying went (upstream's `gvrDeletionMetadata`).
#[derive(Debug, Default)]
struct Emptied {
    estimate: i64,
    remaining: usize,
    finalizers: BTreeMap<String, usize>,
}

fn not_supported(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 405)
}

/// Seconds the namespace's pods may still need to terminate gracefully, counted from when
/// the namespace's deletion began (upstream's `estimateGracefulTerminationForPods`).
async fn pod_estimate(
    client: &kube::Client,
    ns: &str,
    deleted_at: &Time,
) -> Result<i64, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut estimate = 0;
    for p in pods.list(&ListParams::default()).await? {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            continue;
        }
        let grace = p
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(0);
        estimate = estimate.max(grace);
    }
    let since = k8s_openapi::jiff::Timestamp::now()
        .duration_since(deleted_at.0)
        .as_secs();
    Ok(if since >= estimate { 0 } else { estimate })
}

/// Deletes every object of one resource in `ns` and counts what is left.
async fn empty_resource(
    client: &kube::Client,
    t: &Target,
    ns: &str,
    deleted_at: &Time,
) -> Result<Emptied, (Emptied, String)> {
    let fail = |estimate: i64, e: kube::Error| {
        (
            Emptied {
                estimate,
                ..Default::default()
            },
            e.to_string(),
        )
    };
    let estimate = if t.ar.group.is_empty() && t.ar.plural == "pods" {
        pod_estimate(client, ns, deleted_at)
            .await
            .map_err(|e| fail(0, e))?
    } else {
        0
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &t.ar);
    // Dependents go too, in the background: nothing in the namespace may survive it.
    let dp = DeleteParams::background();
    let mut collection_done = false;
    if t.delete_collection {
        match api.delete_collection(&dp, &ListParams::default()).await {
            Ok(_) => collection_done = true,
            Err(e) if not_supported(&e) => {}
            Err(e) => return Err(fail(estimate, e)),
        }
    }
    if !collection_done {
        let items = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) if not_supported(&e) => return Ok(Emptied::default()),
            Err(e) => return Err(fail(estimate, e)),
        };
        for item in items {
            match api.delete(&item.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if not_supported(&e) => {}
                Err(e) => return Err(fail(estimate, e)),
            }
        }
    }
    let left = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) if not_supported(&e) => return Ok(Emptied::default()),
        Err(e) => return Err(fail(estimate, e)),
    };
    if left.is_empty() {
        return Ok(Emptied::default());
    }
    let mut finalizers = BTreeMap::new();
    for item in &left {
        for f in item.finalizers() {
            *finalizers.entry(f.clone()).or_default() += 1;
        }
    }
    let remaining = left.len();
    if estimate != 0 {
        return Ok(Emptied {
            estimate,
            remaining,
            finalizers,
        });
    }
    // Objects waiting on finalizers are normal: give their owners time.
    if !finalizers.is_empty() {
        return Ok(Emptied {
            estimate: FINALIZER_ESTIMATE_SECONDS,
            remaining,
            finalizers,
        });
    }
    Err((
        Emptied {
            estimate,
            remaining,
            finalizers,
        },
        format!(
            "unexpected items still remain in namespace: {ns} for gvr: {}",
            t.gvr()
        ),
    ))
}

/// The result of one pass over a namespace's content.
#[derive(Debug, Default)]
struct Pass {
    estimate: i64,
    discovery_failures: Vec<String>,
    content_errors: Vec<String>,
    /// `resource.group` → objects left.
    remaining: BTreeMap<String, usize>,
    finalizers: BTreeMap<String, usize>,
}

async fn delete_all_content(client: &kube::Client, ns: &str, deleted_at: &Time) -> Pass {
    let (targets, discovery_failures) = discover(client).await;
    let results = futures::stream::iter(targets)
        .map(|t| async move {
            let r = empty_resource(client, &t, ns, deleted_at).await;
            (t, r)
        })
        .buffer_unordered(PARALLEL_RESOURCES)
        .collect::<Vec<_>>()
        .await;
    let mut pass = Pass {
        discovery_failures,
        ..Default::default()
    };
    for (t, r) in results {
        let emptied = match r {
            Ok(e) => e,
            Err((e, why)) => {
                pass.content_errors.push(why);
                e
            }
        };
        pass.estimate = pass.estimate.max(emptied.estimate);
        if emptied.remaining > 0 {
            // Upstream's quirk kept: core resources read `pods.` (empty group after the dot).
            *pass
                .remaining
                .entry(format!("{}.{}", t.ar.plural, t.ar.group))
                .or_default() += emptied.remaining;
            for (f, n) in emptied.finalizers {
                *pass.finalizers.entry(f).or_default() += n;
            }
        }
    }
    pass.content_errors.sort();
    pass
}

fn condition(kind: &str, status: &str, reason: &str, message: String) -> NamespaceCondition {
    NamespaceCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
    }
}

/// The failing conditions of a pass (the others are set to their "all well" form).
fn failing_conditions(pass: &Pass) -> Vec<NamespaceCondition> {
    let mut out = Vec::new();
    if !pass.discovery_failures.is_empty() {
        out.push(condition(
            DISCOVERY_FAILURE,
            "True",
            "DiscoveryFailed",
            format!(
                "Discovery failed for some groups, {} failing: unable to retrieve the complete list of server APIs: {}",
                pass.discovery_failures.len(),
                pass.discovery_failures.join(", ")
            ),
        ));
    }
    if !pass.content_errors.is_empty() {
        out.push(condition(
            CONTENT_FAILURE,
            "True",
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                pass.content_errors.len(),
                pass.content_errors.join(", ")
            ),
        ));
    }
    if !pass.remaining.is_empty() {
        let list: Vec<String> = pass
            .remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        out.push(condition(
            CONTENT_REMAINING,
            "True",
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", list.join(", ")),
        ));
    }
    if !pass.finalizers.is_empty() {
        let list: Vec<String> = pass
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        out.push(condition(
            FINALIZERS_REMAINING,
            "True",
            "SomeFinalizersRemain",
            format!("Some finalizers are remaining: {}", list.join(", ")),
        ));
    }
    out
}

/// Upstream's `updateConditions`: every type present, the transition time moved only when
/// the status flips. Whether anything changed.
fn update_conditions(
    current: &mut Vec<NamespaceCondition>,
    failing: &[NamespaceCondition],
) -> bool {
    let mut changed = false;
    for (kind, ok_reason, ok_message) in CONDITIONS {
        let new = failing
            .iter()
            .find(|c| c.type_ == *kind)
            .cloned()
            .unwrap_or_else(|| condition(kind, "False", ok_reason, ok_message.to_string()));
        match current.iter_mut().find(|c| c.type_ == *kind) {
            None => {
                current.push(new);
                changed = true;
            }
            Some(old)
                if old.status != new.status
                    || old.reason != new.reason
                    || old.message != new.message =>
            {
                if old.status != new.status {
                    old.last_transition_time = new.last_transition_time;
                }
                old.status = new.status;
                old.reason = new.reason;
                old.message = new.message;
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed
}

/// The finalizers left once ours is gone, sorted as upstream's set leaves them.
fn without_ours(ns: &Namespace) -> Vec<String> {
    let mut rest: Vec<String> = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    rest.sort();
    rest.dedup();
    rest
}

fn has_ours(ns: &Namespace) -> bool {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Removes our finalizer, re-reading and retrying on conflicts.
async fn finalize(api: &Api<Namespace>, mut ns: Namespace) -> Result<(), kube::Error> {
    let name = ns.name_any();
    let mut attempt = 0;
    loop {
        if !has_ours(&ns) {
            return Ok(());
        }
        let mut body = ns.clone();
        body.spec.get_or_insert_with(Default::default).finalizers = Some(without_ours(&ns));
        match api
            .replace_subresource("finalize", &name, &PostParams::default(), &body)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < CONFLICT_RETRIES => {
                attempt += 1;
                let latest = match api.get_opt(&name).await? {
                    Some(l) => l,
                    None => return Ok(()),
                };
                // A namespace recreated under the same name is not ours to finalize.
                if latest.uid() != ns.uid() {
                    return Ok(());
                }
                ns = latest;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn reconcile(cached: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, NamespaceError> {
    if cached.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = cached.name_any();
    let result = sync(&name, &ctx).await;
    ctx.metrics.sync(NAME, result.is_ok());
    if result.is_ok() {
        ctx.backoff.succeeded(&name);
    }
    result
}

async fn sync(name: &str, ctx: &Ctx) -> Result<Action, NamespaceError> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    // Several writers touch a terminating namespace: work from its latest state.
    let get = |cause| NamespaceError::Get {
        namespace: name.to_string(),
        cause,
    };
    let Some(mut ns) = api.get_opt(name).await.map_err(get)? else {
        return Ok(Action::await_change());
    };
    let Some(deleted_at) = ns.metadata.deletion_timestamp.clone() else {
        return Ok(Action::await_change());
    };
    let status_err = |cause| NamespaceError::Status {
        namespace: name.to_string(),
        cause,
    };
    if ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating") {
        ns.status.get_or_insert_with(Default::default).phase = Some("Terminating".into());
        ns = match api.replace_status(name, &PostParams::default(), &ns).await {
            Ok(n) => n,
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(status_err(e)),
        };
    }

    let pass = delete_all_content(&ctx.client, name, &deleted_at).await;
    // Always recorded: a condition that failed before and is fine now must say so.
    let mut conditions = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if update_conditions(&mut conditions, &failing_conditions(&pass)) {
        ns.status.get_or_insert_with(Default::default).conditions = Some(conditions);
        match api.replace_status(name, &PostParams::default(), &ns).await {
            Ok(n) => ns = n,
            // Upstream only logs this; the next pass writes them again.
            Err(e) => {
                tracing::warn!(namespace = name, error = %e, "cannot update namespace conditions")
            }
        }
    }
    let mut errors = pass.discovery_failures.clone();
    errors.extend(pass.content_errors.iter().cloned());
    if !errors.is_empty() {
        return Err(NamespaceError::Content {
            namespace: name.to_string(),
            errors,
        });
    }
    if pass.estimate > 0 {
        // Upstream waits half the estimate; at least a second here so it is never a spin.
        let wait = Duration::from_secs(u64::try_from(pass.estimate / 2).unwrap_or(0).max(1));
        tracing::info!(
            namespace = name,
            estimate = pass.estimate,
            "content remains; checking again in {wait:?}"
        );
        return Ok(Action::requeue(wait));
    }
    if has_ours(&ns) {
        finalize(&api, ns)
            .await
            .map_err(|cause| NamespaceError::Finalize {
                namespace: name.to_string(),
                cause,
            })?;
        ctx.metrics.namespace_finalized();
        tracing::info!(
            namespace = name,
            "namespace content removed; finalizer released"
        );
    }
    Ok(Action::await_change())
}

fn error_policy(ns: Arc<Namespace>, e: &NamespaceError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff
        .retry(&ns.name_any(), "namespace deletion incomplete", e)
}

/// Runs until the namespace watch ends (it does not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::new(QUEUE, metrics.clone()),
        metrics,
    });
    Controller::new(namespaces, watcher::Config::default())
        .with_config(RunConfig::default().concurrency(concurrency))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_conditions_are_written_ok_when_all_is_well() {
        let mut conds = Vec::new();
        assert!(update_conditions(
            &mut conds,
            &failing_conditions(&Pass::default())
        ));
        let kinds: Vec<&str> = conds.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            kinds,
            [
                DISCOVERY_FAILURE,
                GV_PARSING_FAILURE,
                CONTENT_FAILURE,
                CONTENT_REMAINING,
                FINALIZERS_REMAINING
            ]
        );
        assert!(conds.iter().all(|c| c.status == "False"));
        assert_eq!(
            conds[0].message.as_deref(),
            Some("All resources successfully discovered")
        );
        // The same pass again changes nothing.
        assert!(!update_conditions(
            &mut conds,
            &failing_conditions(&Pass::default())
        ));
    }

    #[test]
    fn remaining_content_and_finalizers_are_reported_as_upstream() {
        let pass = Pass {
            estimate: 15,
            remaining: [
                ("pods.".to_string(), 2),
                ("deployments.apps".to_string(), 1),
            ]
            .into(),
            finalizers: [("example.com/keep".to_string(), 1)].into(),
            ..Default::default()
        };
        let mut conds = Vec::new();
        update_conditions(&mut conds, &failing_conditions(&pass));
        let get = |k: &str| conds.iter().find(|c| c.type_ == k).unwrap();
        assert_eq!(get(CONTENT_REMAINING).status, "True");
        assert_eq!(
            get(CONTENT_REMAINING).message.as_deref(),
            Some(
                "Some resources are remaining: deployments.apps has 1 resource instances, pods. has 2 resource instances"
            )
        );
        assert_eq!(
            get(FINALIZERS_REMAINING).message.as_deref(),
            Some("Some finalizers are remaining: example.com/keep in 1 resource instances")
        );
        assert_eq!(get(CONTENT_FAILURE).status, "False");
        // Content gone: the conditions flip back.
        assert!(update_conditions(
            &mut conds,
            &failing_conditions(&Pass::default())
        ));
        assert!(conds.iter().all(|c| c.status == "False"));
    }

    #[test]
    fn only_our_finalizer_is_removed() {
        let ns = Namespace {
            spec: Some(k8s_openapi::api::core::v1::NamespaceSpec {
                finalizers: Some(vec![
                    "z.example/x".into(),
                    FINALIZER.into(),
                    "a.example/y".into(),
                ]),
            }),
            ..Default::default()
        };
        assert!(has_ours(&ns));
        assert_eq!(without_ours(&ns), ["a.example/y", "z.example/x"]);
    }

    #[test]
    fn gvr_prints_as_upstream() {
        let t = Target {
            ar: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                plural: "configmaps".into(),
            },
            delete_collection: true,
        };
        assert_eq!(t.gvr(), "/v1, Resource=configmaps");
    }
}
