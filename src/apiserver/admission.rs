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
