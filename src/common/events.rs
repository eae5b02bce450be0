//! core/v1 Events a component records about the objects it acts on (the kubelet about pods,
//! the scheduler about pods it binds or cannot place, controllers about what they own), with
//! the component's name as source. A repeat of the same event bumps its count instead of
//! creating a new object, as upstream's event correlator does.
//!
//! Owns only the Event objects it creates; events are best effort and never fail the caller.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

use crate::common::clock;

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    /// The node the component runs on, when it is a per-node one (the kubelet).
    host: Option<String>,
    seen: Arc<Mutex<HashMap<String, (String, i32)>>>,
}

impl Recorder {
    pub fn new(client: Client, component: &str, host: Option<String>) -> Self {
        Recorder {
            client,
            component: component.to_string(),
            host,
            seen: Arc::default(),
        }
    }

    /// Records an event in the background, so a pod's start never waits on it; failures are
    /// logged, never fatal (events are best effort upstream too).
    pub async fn record<K>(
        &self,
        obj: &K,
        field_path: Option<&str>,
        normal: bool,
        reason: &str,
        message: &str,
    ) where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let (this, obj) = (self.clone(), obj.clone());
        let (fp, reason, message) = (
            field_path.map(str::to_string),
            reason.to_string(),
            message.to_string(),
        );
        tokio::spawn(async move {
            this.write(&obj, fp.as_deref(), normal, &reason, &message)
                .await
        });
    }

    async fn write<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        field_path: Option<&str>,
        normal: bool,
        reason: &str,
        message: &str,
    ) {
        // Events of cluster-scoped objects live in `default`, as upstream puts them.
        let obj_ns = obj.namespace();
        let ns = obj_ns.clone().unwrap_or_else(|| "default".into());
        let uid = obj.uid().unwrap_or_default();
        let key = format!("{uid}/{}/{reason}/{message}", field_path.unwrap_or(""));
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let now = clock::now_rfc3339();
        let repeat = self.seen.lock().get(&key).cloned();
        if let Some((name, count)) = repeat {
            let patch = json!({"count": count + 1, "lastTimestamp": now});
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                self.seen.lock().insert(key, (name, count + 1));
                return;
            }
        }
        let what = What {
            component: &self.component,
            host: self.host.as_deref(),
            field_path,
            normal,
            reason,
            message,
        };
        if let Some(name) = create(&self.client, obj, &what).await {
            let mut seen = self.seen.lock();
            if seen.len() > 4096 {
                seen.clear();
            }
            seen.insert(key, (name, 1));
        }
    }

    /// Forgets an object's events (it is gone).
    pub fn forget(&self, uid: &str) {
        self.seen.lock().retain(|k, _| !k.starts_with(uid));
    }
}

/// One event's content.
struct What<'a> {
    component: &'a str,
    host: Option<&'a str>,
    field_path: Option<&'a str>,
    normal: bool,
    reason: &'a str,
    message: &'a str,
}

/// Creates one Event about `obj`; its name, or None when the write failed (logged).
async fn create<K: Resource<DynamicType = ()>>(
    client: &Client,
    obj: &K,
    w: &What<'_>,
) -> Option<String> {
    // Events of cluster-scoped objects live in `default`, as upstream puts them.
    let obj_ns = obj.namespace();
    let ns = obj_ns.clone().unwrap_or_else(|| "default".into());
    let now = clock::now_rfc3339();
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let name = format!("{}.{:x}", obj.name_any(), nanos);
    let mut involved = json!({
        "apiVersion": K::api_version(&()), "kind": K::kind(&()), "name": obj.name_any(),
        "uid": obj.uid(), "resourceVersion": obj.resource_version(),
    });
    if let Some(n) = &obj_ns {
        involved["namespace"] = json!(n);
    }
    if let Some(fp) = w.field_path {
        involved["fieldPath"] = json!(fp);
    }
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": involved,
        "reason": w.reason, "message": w.message,
        "source": {"component": w.component, "host": w.host},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "type": if w.normal { "Normal" } else { "Warning" },
        "reportingComponent": w.component,
        "reportingInstance": w.host.map(str::to_string).unwrap_or_else(crate::common::host::node_name),
    });
    let ev = serde_json::from_value::<Event>(ev).ok()?;
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    match api.create(&PostParams::default(), &ev).await {
        Ok(_) => Some(name),
        Err(e) => {
            tracing::debug!(
                component = w.component,
                "event {} for {ns}/{}: {e}",
                w.reason,
                obj.name_any()
            );
            None
        }
    }
}

/// Records one event about `obj` from `component`, waiting for the write (controllers, whose
/// syncs are already off the hot path); no repeat counting.
pub async fn record<K: Resource<DynamicType = ()>>(
    client: &Client,
    component: &str,
    obj: &K,
    normal: bool,
    reason: &str,
    message: &str,
) {
    let what = What {
        component,
        host: None,
        field_path: None,
        normal,
        reason,
        message,
    };
    create(client, obj, &what).await;
}
