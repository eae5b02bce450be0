//! Events the kubelet records about pods (core/v1 Events, source `kubelet` on this node), with
//! upstream's reasons and words. A repeat of the same event bumps its count instead of
//! creating a new object, as upstream's event correlator does.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

use crate::common::clock;

#[derive(Clone)]
pub struct Recorder {
    client: Client,
    node: String,
    seen: Arc<Mutex<HashMap<String, (String, i32)>>>,
}

impl Recorder {
    pub fn new(client: Client, node: String) -> Self {
        Recorder {
            client,
            node,
            seen: Arc::default(),
        }
    }

    /// Records an event in the background, so a pod's start never waits on it; failures are
    /// logged, never fatal (events are best effort upstream too).
    pub async fn record(
        &self,
        pod: &Pod,
        field_path: Option<&str>,
        normal: bool,
        reason: &str,
        message: &str,
    ) {
        let (this, pod) = (self.clone(), pod.clone());
        let (fp, reason, message) = (
            field_path.map(str::to_string),
            reason.to_string(),
            message.to_string(),
        );
        tokio::spawn(async move {
            this.write(&pod, fp.as_deref(), normal, &reason, &message)
                .await
        });
    }

    async fn write(
        &self,
        pod: &Pod,
        field_path: Option<&str>,
        normal: bool,
        reason: &str,
        message: &str,
    ) {
        let ns = pod.namespace().unwrap_or_default();
        let uid = pod.uid().unwrap_or_default();
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
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let name = format!("{}.{:x}", pod.name_any(), nanos);
        let mut involved = json!({
            "apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": pod.name_any(), "uid": uid,
            "resourceVersion": pod.resource_version(),
        });
        if let Some(fp) = field_path {
            involved["fieldPath"] = json!(fp);
        }
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": involved,
            "reason": reason, "message": message,
            "source": {"component": "kubelet", "host": self.node},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "type": if normal { "Normal" } else { "Warning" },
            "reportingComponent": "kubelet", "reportingInstance": self.node,
        });
        let Ok(ev) = serde_json::from_value::<Event>(ev) else {
            return;
        };
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => {
                let mut seen = self.seen.lock();
                if seen.len() > 4096 {
                    seen.clear();
                }
                seen.insert(key, (name, 1));
            }
            Err(e) => tracing::debug!("event {reason} for {ns}/{}: {e}", pod.name_any()),
        }
    }

    /// Forgets a pod's events (it is gone).
    pub fn forget(&self, uid: &str) {
        self.seen.lock().retain(|k, _| !k.starts_with(uid));
    }
}
