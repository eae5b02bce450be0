//! The kubelet's Summary API (`/stats/summary`, stats/v1alpha1 as metrics-server reads it):
//! node CPU from the root cpuacct cgroup, memory from /proc/meminfo, filesystem from the
//! kubelet's root dir, and per-pod and per-container CPU, memory and writable-layer usage from
//! CRI `ListContainerStats`. Reads only; owns nothing.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use k8s_cri::v1 as cri;
use kube::ResourceExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::pods::Shared;
use super::runtime::{LABEL_CONTAINER_NAME, LABEL_POD_UID};
use crate::common::clock;

const CPUACCT_USAGE: &str = "/sys/fs/cgroup/cpuacct/cpuacct.usage";

/// The node's CPU usage between two requests (usageNanoCores needs two samples).
#[derive(Default)]
pub struct NodeCpu {
    last: Mutex<Option<(Instant, u64, u64)>>,
}

impl NodeCpu {
    /// (usageCoreNanoSeconds, usageNanoCores) now.
    fn sample(&self) -> (u64, u64) {
        let total: u64 = std::fs::read_to_string(CPUACCT_USAGE)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let now = Instant::now();
        let mut last = self.last.lock();
        let rate = match *last {
            // Keep the previous rate for requests closer than a second apart.
            Some((at, _, rate)) if now.duration_since(at).as_millis() < 1000 => rate,
            Some((at, prev, _)) => {
                let secs = now.duration_since(at).as_secs_f64();
                (total.saturating_sub(prev) as f64 / secs) as u64
            }
            None => 0,
        };
        if last.is_none_or(|(at, _, _)| now.duration_since(at).as_millis() >= 1000) {
            *last = Some((now, total, rate));
        }
        (total, rate)
    }
}

fn meminfo() -> HashMap<String, u64> {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kib: u64 = v.split_whitespace().next()?.parse().ok()?;
            Some((k.to_string(), kib * 1024))
        })
        .collect()
}

fn fs_stats(dir: &Path, now: &str) -> Value {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let frag = s.fragment_size();
            let cap = s.blocks() * frag;
            let avail = s.blocks_available() * frag;
            json!({
                "time": now,
                "availableBytes": avail,
                "capacityBytes": cap,
                "usedBytes": cap.saturating_sub(s.blocks_free() * frag),
                "inodesFree": s.files_free(),
                "inodes": s.files(),
                "inodesUsed": s.files().saturating_sub(s.files_free()),
            })
        }
        Err(_) => json!({"time": now}),
    }
}

fn value(v: &Option<cri::UInt64Value>) -> u64 {
    v.as_ref().map(|v| v.value).unwrap_or(0)
}

/// The Summary as metrics-server and `kubectl get --raw …/proxy/stats/summary` read it.
pub async fn summary(shared: &Shared, node_cpu: &NodeCpu) -> Value {
    let now = clock::now_rfc3339();
    let (cpu_total, cpu_rate) = node_cpu.sample();
    let mem = meminfo();
    let total = mem.get("MemTotal").copied().unwrap_or(0);
    let avail = mem.get("MemAvailable").copied().unwrap_or(0);
    let free = mem.get("MemFree").copied().unwrap_or(0);
    let stats = shared
        .cri
        .runtime
        .clone()
        .list_container_stats(cri::ListContainerStatsRequest { filter: None })
        .await
        .map(|r| r.into_inner().stats)
        .unwrap_or_default();
    let mut by_pod: HashMap<String, Vec<cri::ContainerStats>> = HashMap::new();
    for s in stats {
        let uid = s
            .attributes
            .as_ref()
            .and_then(|a| a.labels.get(LABEL_POD_UID).cloned())
            .unwrap_or_default();
        by_pod.entry(uid).or_default().push(s);
    }
    let running = shared.running.read().clone();
    let mut pods = Vec::new();
    for pod in shared.pods.read().values() {
        let uid = pod.uid().unwrap_or_default();
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let start = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| clock::rfc3339(time::OffsetDateTime::from(std::time::SystemTime::from(t.0))));
        let (mut p_cpu, mut p_rate, mut p_ws, mut p_usage, mut p_rss) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        let mut containers = Vec::new();
        for s in by_pod.get(&uid).into_iter().flatten() {
            let cname = s
                .attributes
                .as_ref()
                .and_then(|a| a.labels.get(LABEL_CONTAINER_NAME).cloned())
                .unwrap_or_default();
            // Only the running attempt counts; exited ones keep stale numbers.
            if !running.contains(&format!("{ns}/{name}/{cname}")) {
                continue;
            }
            let cpu = s.cpu.unwrap_or_default();
            let m = s.memory.unwrap_or_default();
            let (core_ns, rate) = (
                value(&cpu.usage_core_nano_seconds),
                value(&cpu.usage_nano_cores),
            );
            let (ws, usage, rss) = (
                value(&m.working_set_bytes),
                value(&m.usage_bytes),
                value(&m.rss_bytes),
            );
            p_cpu += core_ns;
            p_rate += rate;
            p_ws += ws;
            p_usage += usage;
            p_rss += rss;
            let rootfs = s
                .writable_layer
                .as_ref()
                .map(|w| json!({"time": now, "usedBytes": value(&w.used_bytes), "inodesUsed": value(&w.inodes_used)}))
                .unwrap_or_else(|| json!({"time": now}));
            containers.push(json!({
                "name": cname,
                "startTime": start,
                "cpu": {"time": now, "usageNanoCores": rate, "usageCoreNanoSeconds": core_ns},
                "memory": {"time": now, "usageBytes": usage, "workingSetBytes": ws, "rssBytes": rss,
                    "pageFaults": value(&m.page_faults), "majorPageFaults": value(&m.major_page_faults)},
                "rootfs": rootfs,
            }));
        }
        pods.push(json!({
            "podRef": {"name": name, "namespace": ns, "uid": uid},
            "startTime": start,
            "containers": containers,
            "cpu": {"time": now, "usageNanoCores": p_rate, "usageCoreNanoSeconds": p_cpu},
            "memory": {"time": now, "usageBytes": p_usage, "workingSetBytes": p_ws, "rssBytes": p_rss},
        }));
    }
    json!({
        "node": {
            "nodeName": shared.settings.node_name,
            "startTime": now,
            "cpu": {"time": now, "usageNanoCores": cpu_rate, "usageCoreNanoSeconds": cpu_total},
            "memory": {"time": now, "availableBytes": avail, "usageBytes": total.saturating_sub(free),
                "workingSetBytes": total.saturating_sub(avail)},
            "fs": fs_stats(&shared.root_dir, &now),
        },
        "pods": pods,
    })
}
