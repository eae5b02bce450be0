//! core/v1 Events the workload controllers record about the objects they manage, with the
//! reporting component named as upstream names it (`replicaset-controller`, …).
//!
//! Owns only the Events it creates; best effort, as upstream's recorder: a failed write is
//! logged, never retried, never fails a sync.

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::common::clock;

/// Records one event about `obj` from `component`.
pub async fn record<K>(
    client: &kube::Client,
    component: &str,
    obj: &K,
    normal: bool,
    reason: &str,
    message: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let name = obj.name_any();
    let now = clock::now_rfc3339();
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": ns},
        "involvedObject": {
            "apiVersion": K::api_version(&()), "kind": K::kind(&()), "namespace": ns,
            "name": name, "uid": obj.uid(), "resourceVersion": obj.resource_version(),
        },
        "reason": reason, "message": message,
        "source": {"component": component},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "type": if normal { "Normal" } else { "Warning" },
        "reportingComponent": component,
        "reportingInstance": crate::common::host::node_name(),
    });
    let Ok(ev) = serde_json::from_value::<Event>(ev) else {
        return;
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(component, "event {reason} for {ns}/{name}: {e}");
    }
}
