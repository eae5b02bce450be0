//! Upstream's garbage collector: deletes objects whose owners (by `metadata.ownerReferences`
//! uid) are gone, and carries out the `foregroundDeletion` and `orphan` finalizers the API
//! server puts on an owner deleted with `propagationPolicy: Foreground` / `Orphan`.
//!
//! Owns the deletion of dependents, the removal of dangling ownerReferences, and the removal
//! of the `foregroundDeletion`/`orphan` finalizers; never touches other finalizers nor any
//! other field. Watches the kinds that carry ownerReferences in practice (a cache, so a sync
//! costs no API call unless an owner is missing from it); an owner of any other kind is looked
//! up through discovery and a GET. An owner is judged gone only after a GET confirms it (404,
//! or another uid under its name), never from the cache alone.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

use super::Backoff;
use super::metrics::Metrics;

pub const NAME: &str = "garbage-collector-controller";
pub const ALIAS: &str = "garbagecollector";
const QUEUE: &str = "garbage_collector_attempt_to_delete";

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
/// How often every watched object is looked at again (upstream resyncs its graph too).
const SWEEP: Duration = Duration::from_secs(30);
/// How soon an owner waiting in the foreground looks at its dependents again.
const FOREGROUND_RECHECK: Duration = Duration::from_secs(2);

/// The watched kinds: (group, version, kind, plural). All namespaced.
const WATCHED: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Pod", "pods"),
    ("", "v1", "Service", "services"),
    ("", "v1", "Endpoints", "endpoints"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "v1", "ReplicationController", "replicationcontrollers"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "ControllerRevision", "controllerrevisions"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
];

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("{what}: {cause}")]
    Api { what: String, cause: kube::Error },
    #[error("{what}: owner kind {api_version}/{kind} is not served: {cause}")]
    Discovery {
        what: String,
        api_version: String,
        kind: String,
        cause: kube::Error,
    },
}

/// A watched object: index into [`WATCHED`], namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Item {
    kind: usize,
    ns: String,
    name: String,
}

/// What an owner reference points at now.
#[derive(Debug, PartialEq)]
enum Owner {
    Solid,
    /// Being deleted in the foreground: its dependents go first.
    Waiting,
    Absent,
}

/// Upstream's work queue semantics: an item is queued once, and one that changes while being
/// processed is processed again afterwards (never twice at once).
#[derive(Default)]
struct Queue {
    pending: HashSet<Item>,
    active: HashSet<Item>,
    dirty: HashSet<Item>,
}

struct Gc {
    client: kube::Client,
    kinds: Vec<(ApiResource, Store<DynamicObject>)>,
    /// (apiVersion, kind) → resource and whether namespaced, from discovery.
    resolved: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
    queue: Mutex<Queue>,
    tx: tokio::sync::mpsc::UnboundedSender<Item>,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

fn resource(i: usize) -> ApiResource {
    let (g, v, k, p) = WATCHED[i];
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p)
}

fn has_gc_finalizer(o: &DynamicObject) -> bool {
    o.finalizers()
        .iter()
        .any(|f| f == FOREGROUND || f == ORPHAN)
}

fn interesting(o: &DynamicObject) -> bool {
    !o.owner_references().is_empty()
        || (o.metadata.deletion_timestamp.is_some() && has_gc_finalizer(o))
}

impl Gc {
    fn enqueue(&self, item: Item) {
        let mut q = self.queue.lock();
        if q.active.contains(&item) {
            q.dirty.insert(item);
        } else if q.pending.insert(item.clone()) {
            let _ = self.tx.send(item);
        }
    }

    fn enqueue_after(self: &Arc<Self>, item: Item, delay: Duration) {
        let gc = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            gc.enqueue(item);
        });
    }

    fn item_of(&self, kind: usize, o: &DynamicObject) -> Item {
        Item {
            kind,
            ns: o.namespace().unwrap_or_default(),
            name: o.name_any(),
        }
    }

    fn get(&self, item: &Item) -> Option<Arc<DynamicObject>> {
        let (ar, store) = &self.kinds[item.kind];
        store.get(&ObjectRef::new_with(&item.name, ar.clone()).within(&item.ns))
    }

    /// Every watched object naming `uid` as an owner, with its kind.
    fn dependents(&self, uid: &str) -> Vec<(usize, Arc<DynamicObject>)> {
        let mut out = Vec::new();
        for (i, (_, store)) in self.kinds.iter().enumerate() {
            for o in store.state() {
                if o.owner_references().iter().any(|r| r.uid == uid) {
                    out.push((i, o));
                }
            }
        }
        out
    }

    fn api(&self, kind: usize, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &self.kinds[kind].0)
    }

    /// The resource of an owner reference's kind: a watched one, else from discovery.
    async fn owner_resource(
        &self,
        what: &str,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), GcError> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        if let Some(i) = WATCHED
            .iter()
            .position(|(g, v, k, _)| *g == group && *v == version && *k == kind)
        {
            return Ok((resource(i), true));
        }
        let key = (api_version.to_string(), kind.to_string());
        if let Some(r) = self.resolved.lock().get(&key) {
            return Ok(r.clone());
        }
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|cause| GcError::Discovery {
                what: what.to_string(),
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                cause,
            })?;
        let r = (ar, caps.scope == Scope::Namespaced);
        self.resolved.lock().insert(key, r.clone());
        Ok(r)
    }

    /// Whether the owner a reference names exists with that uid, and in what state.
    async fn owner_state(
        &self,
        what: &str,
        ns: &str,
        r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Result<Owner, GcError> {
        let classify = |o: &DynamicObject| match o.metadata.deletion_timestamp.is_some()
            && o.finalizers().iter().any(|f| f == FOREGROUND)
        {
            true => Owner::Waiting,
            false => Owner::Solid,
        };
        let (group, version) = r
            .api_version
            .split_once('/')
            .unwrap_or(("", &r.api_version));
        if let Some(i) = WATCHED
            .iter()
            .position(|(g, v, k, _)| *g == group && *v == version && *k == r.kind)
        {
            let cached = self.get(&Item {
                kind: i,
                ns: ns.to_string(),
                name: r.name.clone(),
            });
            if let Some(o) = cached.filter(|o| o.uid().as_deref() == Some(r.uid.as_str())) {
                return Ok(classify(&o));
            }
        }
        let (ar, namespaced) = self.owner_resource(what, &r.api_version, &r.kind).await?;
        let api: Api<DynamicObject> = match namespaced {
            true => Api::namespaced_with(self.client.clone(), ns, &ar),
            false => Api::all_with(self.client.clone(), &ar),
        };
        match api.get_opt(&r.name).await {
            Ok(Some(o)) if o.uid().as_deref() == Some(r.uid.as_str()) => Ok(classify(&o)),
            Ok(_) => Ok(Owner::Absent),
            Err(cause) => Err(GcError::Api {
                what: format!("{what}: owner {} {}", r.kind, r.name),
                cause,
            }),
        }
    }

    async fn delete(
        &self,
        kind: usize,
        o: &DynamicObject,
        policy: PropagationPolicy,
    ) -> Result<(), GcError> {
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(kube::api::Preconditions {
                uid: o.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self
            .api(kind, &o.namespace().unwrap_or_default())
            .delete(&o.name_any(), &dp)
            .await
        {
            Ok(_) => {
                tracing::info!(kind = WATCHED[kind].2, object = %describe(o), "deleted: its owners are gone");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(cause) => Err(GcError::Api {
                what: format!("delete {} {}", WATCHED[kind].2, describe(o)),
                cause,
            }),
        }
    }

    /// Drops the ownerReferences naming any of `uids` (uid precondition: never another
    /// object's).
    async fn remove_refs(
        &self,
        kind: usize,
        o: &DynamicObject,
        uids: &[String],
    ) -> Result<(), GcError> {
        let kept: Vec<_> = o
            .owner_references()
            .iter()
            .filter(|r| !uids.contains(&r.uid))
            .collect();
        let refs = if kept.is_empty() {
            json!(null)
        } else {
            json!(kept)
        };
        let p = json!({"metadata": {"ownerReferences": refs, "uid": o.uid()}});
        match self
            .api(kind, &o.namespace().unwrap_or_default())
            .patch(&o.name_any(), &PatchParams::default(), &Patch::Merge(&p))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(cause) => Err(GcError::Api {
                what: format!(
                    "remove owner references of {} {}",
                    WATCHED[kind].2,
                    describe(o)
                ),
                cause,
            }),
        }
    }

    async fn remove_finalizer(
        &self,
        kind: usize,
        o: &DynamicObject,
        finalizer: &str,
    ) -> Result<(), GcError> {
        let rest: Vec<&String> = o.finalizers().iter().filter(|f| *f != finalizer).collect();
        let p = json!({"metadata": {"finalizers": rest, "resourceVersion": o.resource_version()}});
        match self
            .api(kind, &o.namespace().unwrap_or_default())
            .patch(&o.name_any(), &PatchParams::default(), &Patch::Merge(&p))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(cause) => Err(GcError::Api {
                what: format!(
                    "remove finalizer {finalizer} of {} {}",
                    WATCHED[kind].2,
                    describe(o)
                ),
                cause,
            }),
        }
    }

    /// One look at one object; when to look again, if it waits on something.
    async fn process(&self, item: &Item) -> Result<Option<Duration>, GcError> {
        let Some(o) = self.get(item) else {
            return Ok(None);
        };
        let uid = o.uid().unwrap_or_default();
        if o.metadata.deletion_timestamp.is_some() {
            if o.finalizers().iter().any(|f| f == ORPHAN) {
                for (k, d) in self.dependents(&uid) {
                    self.remove_refs(k, &d, std::slice::from_ref(&uid)).await?;
                }
                self.remove_finalizer(item.kind, &o, ORPHAN).await?;
            } else if o.finalizers().iter().any(|f| f == FOREGROUND) {
                let deps = self.dependents(&uid);
                for (k, d) in deps
                    .iter()
                    .filter(|(_, d)| d.metadata.deletion_timestamp.is_none())
                {
                    let policy = match self.dependents(&d.uid().unwrap_or_default()).is_empty() {
                        true => PropagationPolicy::Background,
                        false => PropagationPolicy::Foreground,
                    };
                    self.delete(*k, d, policy).await?;
                }
                let blocking = deps.iter().any(|(_, d)| {
                    d.owner_references()
                        .iter()
                        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
                });
                if blocking {
                    return Ok(Some(FOREGROUND_RECHECK));
                }
                self.remove_finalizer(item.kind, &o, FOREGROUND).await?;
            }
            return Ok(None);
        }
        let refs = o.owner_references().to_vec();
        if refs.is_empty() {
            return Ok(None);
        }
        let what = format!("{} {}", WATCHED[item.kind].2, describe(&o));
        let mut states = Vec::new();
        for r in &refs {
            states.push(self.owner_state(&what, &item.ns, r).await?);
        }
        let gone: Vec<String> = refs
            .iter()
            .zip(&states)
            .filter(|(_, s)| **s != Owner::Solid)
            .map(|(r, _)| r.uid.clone())
            .collect();
        if gone.is_empty() {
            return Ok(None);
        }
        if states.contains(&Owner::Solid) {
            // Some owner still holds it: only the references to the others go.
            return self.remove_refs(item.kind, &o, &gone).await.map(|()| None);
        }
        let policy = if states.contains(&Owner::Waiting) && !self.dependents(&uid).is_empty() {
            PropagationPolicy::Foreground
        } else if o.finalizers().iter().any(|f| f == ORPHAN) {
            PropagationPolicy::Orphan
        } else if o.finalizers().iter().any(|f| f == FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        self.delete(item.kind, &o, policy).await.map(|()| None)
    }

    /// A watch event: the object itself, and on deletion its dependents (their owner is
    /// gone) and its owners (one waiting in the foreground may now be free).
    fn observe(&self, kind: usize, event: watcher::Event<DynamicObject>) {
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) if interesting(&o) => {
                self.enqueue(self.item_of(kind, &o));
            }
            watcher::Event::Delete(o) => {
                for (k, d) in self.dependents(&o.uid().unwrap_or_default()) {
                    self.enqueue(self.item_of(k, &d));
                }
                let ns = o.namespace().unwrap_or_default();
                for r in o.owner_references() {
                    let (group, version) = r
                        .api_version
                        .split_once('/')
                        .unwrap_or(("", &r.api_version));
                    if let Some(i) = WATCHED
                        .iter()
                        .position(|(g, v, k, _)| *g == group && *v == version && *k == r.kind)
                    {
                        self.enqueue(Item {
                            kind: i,
                            ns: ns.clone(),
                            name: r.name.clone(),
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn sweep(&self) {
        for (i, (_, store)) in self.kinds.iter().enumerate() {
            for o in store.state().iter().filter(|o| interesting(o)) {
                self.enqueue(self.item_of(i, o));
            }
        }
    }

    async fn work(self: Arc<Self>, item: Item) {
        {
            let mut q = self.queue.lock();
            q.pending.remove(&item);
            q.active.insert(item.clone());
        }
        let key = format!("{}/{}/{}", WATCHED[item.kind].2, item.ns, item.name);
        let result = self.process(&item).await;
        self.metrics.sync(NAME, result.is_ok());
        let again = match result {
            Ok(later) => {
                self.backoff.succeeded(&key);
                later
            }
            Err(e) => {
                let delay = self.backoff.failed(&key);
                tracing::warn!(error = %e, retry_in = ?delay, "garbage collection failed");
                Some(delay)
            }
        };
        let dirty = {
            let mut q = self.queue.lock();
            q.active.remove(&item);
            q.dirty.remove(&item)
        };
        if dirty {
            self.enqueue(item.clone());
        }
        if let Some(delay) = again {
            self.enqueue_after(item, delay);
        }
    }
}

fn describe(o: &DynamicObject) -> String {
    match o.namespace() {
        Some(ns) => format!("{ns}/{}", o.name_any()),
        None => o.name_any(),
    }
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let mut kinds = Vec::new();
    let mut streams = Vec::new();
    for i in 0..WATCHED.len() {
        let ar = resource(i);
        let writer = reflector::store::Writer::new(ar.clone());
        kinds.push((ar.clone(), writer.as_reader()));
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .map(move |e| (i, e));
        streams.push(stream.boxed());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let gc = Arc::new(Gc {
        client,
        kinds,
        resolved: Mutex::default(),
        queue: Mutex::default(),
        tx,
        backoff: Backoff::new(QUEUE, metrics.clone()),
        metrics,
    });
    let workers = {
        let gc = gc.clone();
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
            .for_each_concurrent(usize::from(concurrency), move |item| gc.clone().work(item))
    };
    let events = async {
        let mut all = futures::stream::select_all(streams);
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                next = all.next() => match next {
                    Some((i, Ok(event))) => gc.observe(i, event),
                    Some((i, Err(e))) => tracing::debug!(kind = WATCHED[i].2, error = %e, "watch failed; retrying"),
                    None => return,
                },
                _ = sweep.tick() => gc.sweep(),
            }
        }
    };
    tokio::select! {
        () = workers => {}
        () = events => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_kinds_resolve() {
        let ar = resource(WATCHED.iter().position(|w| w.2 == "ReplicaSet").unwrap());
        assert_eq!(ar.api_version, "apps/v1");
        assert_eq!(ar.plural, "replicasets");
        let ar = resource(0);
        assert_eq!(
            (ar.api_version.as_str(), ar.plural.as_str()),
            ("v1", "pods")
        );
    }

    #[test]
    fn only_owned_or_finalizing_objects_are_queued() {
        let mut o = DynamicObject::new("x", &resource(0));
        assert!(!interesting(&o));
        o.metadata.finalizers = Some(vec![ORPHAN.into()]);
        assert!(!interesting(&o), "not being deleted yet");
        o.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        assert!(interesting(&o));
    }
}
