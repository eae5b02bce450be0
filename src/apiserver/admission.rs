//! Admission that needs other objects: NamespaceLifecycle (no new content in a missing or
//! terminating namespace), ServiceAccount (default account, token volume) and Priority
//! (`spec.priority` from the PriorityClass); and DefaultTolerationSeconds, which needs none. Namespaces and priority classes are answered from
//! watch-fed caches ([`WatchedMap`]), with a read of the store on a miss (an object created a
//! moment ago may not have reached the cache yet).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;

use super::registry::{decode_stored, key};
use super::resources::{self, Resource};
use super::server::State;
use super::status::ApiError;
use super::storage::Change;

const NAMESPACES: &str = "/registry/namespaces/";
const PRIORITY_CLASSES: &str = "/registry/priorityclasses/";

/// Objects under one key prefix, by name, reduced to what admission reads, kept in step with
/// the store by a list and a watch. A miss is not an answer: an object created a moment ago
/// may not have arrived, so callers read the store then.
pub struct WatchedMap<V> {
    prefix: &'static str,
    reduce: fn(&Value) -> V,
    map: RwLock<HashMap<String, V>>,
    /// Whether the map holds a whole list (so it can answer "none of them").
    synced: AtomicBool,
    /// Bumped by every change, so what is derived from the map knows when it is stale.
    generation: AtomicU64,
}

/// Namespace name → whether it is terminating.
pub type NamespaceCache = WatchedMap<bool>;
/// PriorityClass name → (value, globalDefault, preemptionPolicy).
pub type PriorityClassCache = WatchedMap<(i64, bool, Option<String>)>;

pub fn namespace_cache() -> NamespaceCache {
    WatchedMap::new(NAMESPACES, terminating)
}

pub fn priority_class_cache() -> PriorityClassCache {
    WatchedMap::new(PRIORITY_CLASSES, |c| {
        (
            c["value"].as_i64().unwrap_or(0),
            c["globalDefault"] == true,
            c["preemptionPolicy"].as_str().map(str::to_string),
        )
    })
}

fn terminating(ns: &Value) -> bool {
    ns["status"]["phase"] == "Terminating" || !ns["metadata"]["deletionTimestamp"].is_null()
}

impl<V: Clone> WatchedMap<V> {
    pub fn new(prefix: &'static str, reduce: fn(&Value) -> V) -> Self {
        WatchedMap {
            prefix,
            reduce,
            map: RwLock::default(),
            synced: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }

    /// Changes seen so far (each list and each watched change counts one).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn name_of(&self, key: &str) -> String {
        key.strip_prefix(self.prefix).unwrap_or(key).to_string()
    }

    pub fn get(&self, name: &str) -> Option<V> {
        self.map.read().get(name).cloned()
    }

    /// Whether the map holds a whole list.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The first `Some` that `f` gives for an entry (by name), under one read lock: no copy
    /// of the map per question.
    pub fn find_map<R>(&self, mut f: impl FnMut(&str, &V) -> Option<R>) -> Option<R> {
        self.map.read().iter().find_map(|(k, v)| f(k, v))
    }

    /// Every entry, when the map holds a whole list.
    pub fn all(&self) -> Option<Vec<(String, V)>> {
        self.synced.load(Ordering::Acquire).then(|| {
            self.map
                .read()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// Keeps the map in step with the store: list, then watch from the list's revision; on any
    /// error, start over. The entries stay meanwhile (the next list replaces them), as an
    /// informer's cache does, so authorization does not flap while the datastore restarts.
    pub async fn run(&self, state: &State) {
        loop {
            if let Err(e) = self.follow(state).await {
                tracing::debug!("{} cache restarts: {e}", self.prefix);
            }
            self.synced.store(false, Ordering::Release);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn follow(&self, state: &State) -> Result<(), super::storage::StorageError> {
        let page = state.storage.list(self.prefix, "", 0, 0).await?;
        {
            let mut map = self.map.write();
            map.clear();
            for s in &page.items {
                if let Ok(v) = decode_stored(s) {
                    map.insert(self.name_of(&s.key), (self.reduce)(&v));
                }
            }
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.synced.store(true, Ordering::Release);
        let mut w = state
            .storage
            .watch(self.prefix, false, page.revision)
            .await?;
        while let Some(change) = w.next().await? {
            match change {
                Change::Put { current, .. } => {
                    if let Ok(v) = decode_stored(&current) {
                        let name = self.name_of(&current.key);
                        self.map.write().insert(name, (self.reduce)(&v));
                        self.generation.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Change::Delete { previous, .. } => {
                    if let Some(p) = previous {
                        self.map.write().remove(&self.name_of(&p.key));
                        self.generation.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Change::Progress(_) => {}
            }
        }
        Ok(())
    }
}

/// Runs the admission caches for the life of the server.
pub async fn run_cache(state: Arc<State>) {
    let modes = &state.config.authorization_mode;
    let rbac = async {
        if modes.iter().any(|m| m == "RBAC" || m == "Node") {
            state
                .rbac
                .run(&state, modes.iter().any(|m| m == "Node"))
                .await
        }
    };
    tokio::join!(
        state.namespaces.run(&state),
        state.priority_classes.run(&state),
        rbac
    );
}

/// NamespaceLifecycle: the namespace must exist and not be terminating.
pub async fn admit_namespace(
    state: &State,
    res: &Resource,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    if !res.namespaced {
        return Ok(());
    }
    let cached = state.namespaces.get(ns);
    let is_terminating = match cached {
        Some(t) => t,
        None => {
            let ns_res = resources::find("", "v1", "namespaces")
                .ok_or_else(|| ApiError::Internal("no namespaces resource".into()))?;
            let stored = state
                .storage
                .get(&key(ns_res, "", ns))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .ok_or_else(|| ApiError::not_found("", "namespaces", ns))?;
            terminating(&decode_stored(&stored)?)
        }
    };
    if is_terminating {
        return Err(ApiError::forbidden(
            res.group,
            res.plural,
            name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        ));
    }
    Ok(())
}

/// Where the service-account token volume is mounted in every container.
const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// ServiceAccount admission for a new pod: the `default` service account when none is named,
/// and, unless the pod or its service account opts out, the projected `kube-api-access-*`
/// volume (token, cluster CA, namespace) mounted read-only in every container. The
/// account's existence is not required yet: the controller that creates `default` in every
/// namespace belongs to the controller manager.
pub async fn service_account(state: &State, pod: &mut Value) {
    let spec = &mut pod["spec"];
    if !spec.is_object() {
        return;
    }
    let name = match spec["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        Some(n) => n.to_string(),
        None => {
            spec["serviceAccountName"] = "default".into();
            "default".to_string()
        }
    };
    if spec["automountServiceAccountToken"] == false {
        return;
    }
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if let Some(sa_res) = resources::find("", "v1", "serviceaccounts")
        && let Ok(Some(s)) = state.storage.get(&key(sa_res, &ns, &name)).await
        && let Ok(sa) = decode_stored(&s)
        && sa["automountServiceAccountToken"] == false
        && pod["spec"]["automountServiceAccountToken"].is_null()
    {
        return;
    }
    let spec = &mut pod["spec"];
    let mounted = ["initContainers", "containers"].iter().any(|k| {
        spec[k].as_array().into_iter().flatten().any(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == TOKEN_MOUNT_PATH)
        })
    });
    if mounted {
        return;
    }
    let volume = format!("kube-api-access-{}", super::registry::name_suffix());
    let projected = serde_json::json!({
        "name": volume,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    match spec["volumes"].as_array_mut() {
        Some(v) => v.push(projected),
        None => spec["volumes"] = Value::Array(vec![projected]),
    }
    let mount =
        serde_json::json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    for k in ["initContainers", "containers"] {
        for c in spec[k].as_array_mut().into_iter().flatten() {
            match c["volumeMounts"].as_array_mut() {
                Some(m) => m.push(mount.clone()),
                None => c["volumeMounts"] = Value::Array(vec![mount.clone()]),
            }
        }
    }
}

/// Priority admission for a new pod (upstream's `Priority` plugin): `spec.priority` and
/// `spec.preemptionPolicy` from the PriorityClass `priorityClassName` names, else from the
/// class marked `globalDefault`, else 0. A class that does not exist, or a `spec.priority`
/// that differs from what the class says, is refused (403) as upstream refuses it.
pub async fn priority(state: &State, pod: &mut Value) -> Result<(), ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let forbidden = |why: String| ApiError::forbidden("", "pods", &name, &why);
    let res = resources::find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| ApiError::Internal("no priorityclasses resource".into()))?;
    let class_name = pod["spec"]["priorityClassName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    // (name, value, preemptionPolicy) of the class that applies, if any.
    let class: Option<(String, i64, Option<String>)> = match &class_name {
        Some(c) => match state.priority_classes.get(c) {
            Some((v, _, p)) => Some((c.clone(), v, p)),
            None => {
                let stored = state
                    .storage
                    .get(&key(res, "", c))
                    .await
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                match stored.map(|s| decode_stored(&s)) {
                    Some(Ok(v)) => {
                        let (value, _, policy) = (state.priority_classes.reduce)(&v);
                        Some((c.clone(), value, policy))
                    }
                    Some(Err(e)) => return Err(e),
                    None => {
                        return Err(forbidden(format!(
                            "no PriorityClass with name {c} was found"
                        )));
                    }
                }
            }
        },
        None => {
            let all = match state.priority_classes.all() {
                Some(all) => all,
                None => {
                    let page = state
                        .storage
                        .list(&super::registry::prefix(res, ""), "", 0, 0)
                        .await
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    page.items
                        .iter()
                        .filter_map(|s| {
                            let v = decode_stored(s).ok()?;
                            let name = v["metadata"]["name"].as_str()?.to_string();
                            Some((name, (state.priority_classes.reduce)(&v)))
                        })
                        .collect()
                }
            };
            all.into_iter()
                .filter(|(_, (_, default, _))| *default)
                .min_by_key(|(_, (v, _, _))| *v)
                .map(|(n, (v, _, p))| (n, v, p))
        }
    };
    let value = class.as_ref().map_or(0, |c| c.1);
    let spec = &mut pod["spec"];
    if let Some(given) = spec["priority"].as_i64()
        && given != value
    {
        return Err(forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
        )));
    }
    if let Some((name, _, policy)) = &class {
        if class_name.is_none() {
            spec["priorityClassName"] = name.clone().into();
        }
        spec["preemptionPolicy"] = policy.as_deref().unwrap_or("PreemptLowerPriority").into();
    }
    spec["priority"] = value.into();
    Ok(())
}

/// Upstream's `--default-not-ready-toleration-seconds` / `--default-unreachable-toleration-seconds`.
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// DefaultTolerationSeconds admission for a new pod: unless it already tolerates them, the pod
/// tolerates the `not-ready` and `unreachable` NoExecute taints for 300 s, so the node lifecycle
/// controller's taint eviction moves it only after five minutes.
pub fn default_toleration_seconds(pod: &mut Value) {
    let spec = &mut pod["spec"];
    if !spec.is_object() {
        return;
    }
    let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    let mut added = false;
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = tolerations.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let e = t["effect"].as_str().unwrap_or("");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        });
        if !tolerated {
            tolerations.push(serde_json::json!({
                "key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
            added = true;
        }
    }
    if added {
        spec["tolerations"] = Value::Array(tolerations);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_tolerations_are_added_unless_present() {
        let mut pod = json!({"spec": {"containers": []}});
        default_toleration_seconds(&mut pod);
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0],
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        );
        assert_eq!(t[1]["key"], "node.kubernetes.io/unreachable");
        // A pod that tolerates everything gets nothing more.
        let mut pod = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 1);
        let mut pod = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]}});
        default_toleration_seconds(&mut pod);
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 10);
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
    }
}
