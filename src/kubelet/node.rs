//! The kubelet's Node object and its heartbeat: registers the Node with capacity read from the
//! host, keeps its status (conditions, addresses, nodeInfo, images) current, and renews the
//! node's Lease in `kube-node-lease` every 10 s. Writes only its own Node and Lease.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::KubeletError;
use crate::common::clock;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_DURATION_SECONDS: i32 = 40;
pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// Upstream's default maximum of pods on a node.
pub const DEFAULT_MAX_PODS: u32 = 110;
/// Upstream's default hard eviction threshold for memory, taken off allocatable.
const EVICTION_MEMORY_KI: u64 = 100 * 1024;

/// What the Node says about this host and runtime.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub address: IpAddr,
    pub hostname: String,
    pub kubelet_port: u16,
    pub max_pods: u32,
    pub labels: BTreeMap<String, String>,
    pub runtime_version: String,
    pub root_dir: std::path::PathBuf,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn meminfo_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let rest = l.strip_prefix(field)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
        })
        .unwrap_or(0)
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

/// Kubernetes' name for this machine's architecture.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// Size of the filesystem holding `dir`, in KiB, and how much is available.
fn fs_kib(dir: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let frag = s.fragment_size();
            (s.blocks() * frag / 1024, s.blocks_available() * frag / 1024)
        }
        Err(_) => (0, 0),
    }
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str, now: &str) -> Value {
    // Ready is "True" when fine; the pressure conditions are "False" when fine.
    let status = if kind == "Ready" { ok } else { !ok };
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    })
}

/// The status the kubelet reports, computed afresh.
pub fn node_status(facts: &NodeFacts, runtime_ready: Result<(), String>, images: Value) -> Value {
    let now = clock::now_rfc3339();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = meminfo_kib("MemTotal");
    let mem_avail = meminfo_kib("MemAvailable");
    let (disk, disk_avail) = fs_kib(&facts.root_dir);
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{mem}Ki"),
        "pods": facts.max_pods.to_string(),
        "ephemeral-storage": format!("{disk}Ki"),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    });
    // Upstream's defaults: memory.available<100Mi and nodefs.available<10% come off allocatable.
    let allocatable = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", mem.saturating_sub(EVICTION_MEMORY_KI)),
        "pods": facts.max_pods.to_string(),
        "ephemeral-storage": (disk * 1024 / 10 * 9).to_string(),
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    });
    let mem_pressure = mem_avail > 0 && mem_avail < EVICTION_MEMORY_KI;
    let disk_pressure = disk > 0 && disk_avail < disk / 10;
    let ready = match &runtime_ready {
        Ok(()) => condition(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
            &now,
        ),
        Err(why) => condition("Ready", false, "KubeletNotReady", why, &now),
    };
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": [
            if mem_pressure {
                condition("MemoryPressure", false, "KubeletHasInsufficientMemory", "kubelet has insufficient memory available", &now)
            } else {
                condition("MemoryPressure", true, "KubeletHasSufficientMemory", "kubelet has sufficient memory available", &now)
            },
            if disk_pressure {
                condition("DiskPressure", false, "KubeletHasDiskPressure", "kubelet has disk pressure", &now)
            } else {
                condition("DiskPressure", true, "KubeletHasNoDiskPressure", "kubelet has no disk pressure", &now)
            },
            condition("PIDPressure", true, "KubeletHasSufficientPID", "kubelet has sufficient PID available", &now),
            ready,
        ],
        "addresses": [
            {"type": "InternalIP", "address": facts.address.to_string()},
            {"type": "Hostname", "address": facts.hostname},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.kubelet_port}},
        "nodeInfo": {
            "machineID": read_trim("/etc/machine-id"),
            "systemUUID": read_trim("/sys/class/dmi/id/product_uuid"),
            "bootID": read_trim("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": kernel,
            "osImage": os_image(),
            "containerRuntimeVersion": facts.runtime_version,
            "kubeletVersion": crate::apiserver::KUBE_GIT_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": go_arch(),
        },
        "images": images,
    })
}

/// The labels upstream's kubelet sets on its Node, plus `--node-labels`.
pub fn node_labels(facts: &NodeFacts) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), facts.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), go_arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), go_arch().to_string()),
    ]);
    l.extend(facts.labels.clone());
    l
}

/// Creates the Node, or adopts the one already there (adding our labels); returns its uid.
pub async fn register(nodes: &Api<Node>, facts: &NodeFacts) -> Result<String, KubeletError> {
    let labels = node_labels(facts);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": facts.name, "labels": labels,
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
    }))
    .map_err(|e| KubeletError::Api(e.to_string()))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(n) => Ok(n.metadata.uid.unwrap_or_default()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": labels}});
            let n = nodes
                .patch(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(KubeletError::kube("update node"))?;
            Ok(n.metadata.uid.unwrap_or_default())
        }
        Err(e) => Err(KubeletError::kube("register node")(e)),
    }
}

/// Writes the node's status (conditions' transition times kept when the status is unchanged).
pub async fn update_status(
    nodes: &Api<Node>,
    facts: &NodeFacts,
    runtime_ready: Result<(), String>,
    images: Value,
) -> Result<(), KubeletError> {
    let mut status = node_status(facts, runtime_ready, images);
    if let Ok(current) = nodes.get_status(&facts.name).await {
        let old = current
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default();
        if let Some(conds) = status["conditions"].as_array_mut() {
            for c in conds {
                if let Some(prev) = old
                    .iter()
                    .find(|o| Some(o.type_.as_str()) == c["type"].as_str())
                    && Some(prev.status.as_str()) == c["status"].as_str()
                    && let Some(t) = &prev.last_transition_time
                {
                    c["lastTransitionTime"] = json!(t.0);
                }
            }
        }
    }
    nodes
        .patch_status(
            &facts.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .map_err(KubeletError::kube("update node status"))?;
    Ok(())
}

/// Creates or renews `kube-node-lease/<node>`, owned by the Node.
pub async fn renew_lease(
    leases: &Api<Lease>,
    node: &str,
    node_uid: &str,
) -> Result<(), KubeletError> {
    let now = clock::now_rfc3339_micro();
    match leases
        .get_opt(node)
        .await
        .map_err(KubeletError::kube("get lease"))?
    {
        Some(_) => {
            let patch = json!({"spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}});
            leases
                .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(KubeletError::kube("renew lease"))?;
        }
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": node, "namespace": LEASE_NAMESPACE,
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now},
            }))
            .map_err(|e| KubeletError::Api(e.to_string()))?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map_err(KubeletError::kube("create lease"))?;
        }
    }
    Ok(())
}
