//! Objects every cluster starts with, created at API server start when missing: the
//! `default`, `kube-system`, `kube-public` and `kube-node-lease` namespaces, and the
//! `kubernetes` Service (first IP of the service range, port 443) with Endpoints and an
//! EndpointSlice pointing at this API server; the bootstrap RBAC policy.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::registry::ensure_object;
use super::resources;
use super::server::State;
use super::status::ApiError;

const NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

async fn ensure_all(state: &State) -> Result<(), ApiError> {
    let find = |g: &str, p: &str| {
        resources::find(g, "v1", p).ok_or_else(|| ApiError::Internal(format!("no {p} resource")))
    };
    for ns in NAMESPACES {
        ensure_object(
            state,
            find("", "namespaces")?,
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    // Upstream's built-in classes (the scheduling/bootstrap-system-priority-classes hook).
    let classes = resources::find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| ApiError::Internal("no priorityclasses resource".into()))?;
    for (name, value, description) in [
        (
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ] {
        ensure_object(
            state,
            classes,
            "",
            json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value, "description": description,
                "preemptionPolicy": "PreemptLowerPriority",
            }),
        )
        .await?;
    }
    let (net, _) = state.config.service_cluster_ip_range;
    let service_ip = Ipv4Addr::from(u32::from(net) + 1).to_string();
    let host = state
        .config
        .advertise_address
        .unwrap_or_else(crate::common::host::primary_address)
        .to_string();
    let port = state.config.secure_port;
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    ensure_object(state, find("", "services")?, "default", json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": service_ip, "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    })).await?;
    ensure_object(state, find("", "endpoints")?, "default", json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": host}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    })).await?;
    let family = if host.contains(':') { "IPv6" } else { "IPv4" };
    ensure_object(state, find("discovery.k8s.io", "endpointslices")?, "default", json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
        "addressType": family,
        "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })).await?;
    super::rbac::ensure_policy(state).await?;
    // Under RBAC, nobody's requests can be judged before the roles and bindings are read.
    let modes = &state.config.authorization_mode;
    if modes.iter().any(|m| m == "RBAC" || m == "Node") && !state.rbac.synced() {
        return Err(ApiError::Internal(
            "the RBAC caches have not been filled yet".into(),
        ));
    }
    Ok(())
}

/// Retries until the bootstrap objects exist, then marks the server ready.
pub async fn ensure(state: Arc<State>) {
    let mut delay = Duration::from_millis(100);
    loop {
        match ensure_all(&state).await {
            Ok(()) => {
                state.ready.store(true, Ordering::Relaxed);
                tracing::info!("bootstrap objects present; ready");
                return;
            }
            Err(e) => {
                tracing::warn!("cannot create the bootstrap objects yet: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
