//! Admission that needs other objects: NamespaceLifecycle (no new content in a missing or
//! terminating namespace), answered from a watch-fed cache of namespaces, with a read of the
//! store on a miss (a namespace created a moment ago may not have reached the cache yet).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;

use super::registry::{decode_stored, key};
use super::resources::{self, Resource};
use super::server::State;
use super::status::ApiError;
use super::storage::Change;

const PREFIX: &str = "/registry/namespaces/";

/// Namespace name → whether it is terminating.
#[derive(Default)]
pub struct NamespaceCache {
    map: RwLock<HashMap<String, bool>>,
}

fn terminating(ns: &Value) -> bool {
    ns["status"]["phase"] == "Terminating" || !ns["metadata"]["deletionTimestamp"].is_null()
}

fn name_of(key: &str) -> String {
    key.strip_prefix(PREFIX).unwrap_or(key).to_string()
}

/// Keeps the cache in step with the store: list, then watch from the list's revision;
/// on any error, start over.
pub async fn run_cache(state: Arc<State>) {
    loop {
        if let Err(e) = follow(&state).await {
            tracing::debug!("namespace cache restarts: {e}");
        }
        state.namespaces.map.write().clear();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow(state: &State) -> Result<(), super::storage::StorageError> {
    let page = state.storage.list(PREFIX, "", 0, 0).await?;
    {
        let mut map = state.namespaces.map.write();
        map.clear();
        for s in &page.items {
            if let Ok(ns) = decode_stored(s) {
                map.insert(name_of(&s.key), terminating(&ns));
            }
        }
    }
    let mut w = state.storage.watch(PREFIX, false, page.revision).await?;
    while let Some(change) = w.next().await? {
        match change {
            Change::Put { current, .. } => {
                if let Ok(ns) = decode_stored(&current) {
                    state
                        .namespaces
                        .map
                        .write()
                        .insert(name_of(&current.key), terminating(&ns));
                }
            }
            Change::Delete { previous, .. } => {
                if let Some(p) = previous {
                    state.namespaces.map.write().remove(&name_of(&p.key));
                }
            }
            Change::Progress(_) => {}
        }
    }
    Ok(())
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
    let cached = state.namespaces.map.read().get(ns).copied();
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
    let class = match &class_name {
        Some(c) => {
            let stored = state
                .storage
                .get(&key(res, "", c))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            match stored.map(|s| decode_stored(&s)) {
                Some(Ok(v)) => Some(v),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(forbidden(format!(
                        "no PriorityClass with name {c} was found"
                    )));
                }
            }
        }
        None => {
            let page = state
                .storage
                .list(&super::registry::prefix(res, ""), "", 0, 0)
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            page.items
                .iter()
                .filter_map(|s| decode_stored(s).ok())
                .filter(|c| c["globalDefault"] == true)
                .min_by_key(|c| c["value"].as_i64().unwrap_or(0))
        }
    };
    let value = class
        .as_ref()
        .and_then(|c| c["value"].as_i64())
        .unwrap_or(0);
    let spec = &mut pod["spec"];
    if let Some(given) = spec["priority"].as_i64()
        && given != value
    {
        return Err(forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
        )));
    }
    if let Some(c) = &class {
        if class_name.is_none() {
            spec["priorityClassName"] = c["metadata"]["name"].clone();
        }
        spec["preemptionPolicy"] = c["preemptionPolicy"]
            .as_str()
            .unwrap_or("PreemptLowerPriority")
            .into();
    }
    spec["priority"] = value.into();
    Ok(())
}
