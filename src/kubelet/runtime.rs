//! Pods as CRI objects: the sandbox config (DNS, ports, cgroup parent, namespaces), container
//! configs (command, env, mounts, resources, security context) and the labels that tie CRI
//! objects back to pods, as upstream's kuberuntime builds them. Pure functions over the pod
//! spec; the pod worker ([`super::pods`]) makes the calls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;

pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const ANNOTATION_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";

/// Upstream's masked and read-only /proc and /sys paths for unprivileged containers.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Node-wide settings the sandbox needs.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub pod_logs_dir: PathBuf,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub resolv_conf: PathBuf,
    pub node_name: String,
}

/// `<pod-logs-dir>/<ns>_<name>_<uid>`, the directory CRI writes a pod's logs under.
pub fn log_dir(root: &Path, pod: &Pod) -> PathBuf {
    root.join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod
        .labels()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.insert(LABEL_POD_NAME.into(), pod.name_any());
    l.insert(
        LABEL_POD_NAMESPACE.into(),
        pod.namespace().unwrap_or_default(),
    );
    l.insert(LABEL_POD_UID.into(), pod.uid().unwrap_or_default());
    l
}

struct HostResolv {
    servers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

fn host_resolv(path: &Path) -> HostResolv {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut r = HostResolv {
        servers: vec![],
        searches: vec![],
        options: vec![],
    };
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => r.servers.extend(f.next().map(str::to_string)),
            Some("search") | Some("domain") => r.searches = f.map(str::to_string).collect(),
            Some("options") => r.options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    r
}

/// The pod's DNS as upstream decides it from `dnsPolicy`, `dnsConfig` and the kubelet flags.
pub fn dns_config(pod: &Pod, s: &SandboxSettings) -> cri::DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_net = spec.host_network.unwrap_or(false);
    let policy = spec
        .dns_policy
        .clone()
        .unwrap_or_else(|| "ClusterFirst".into());
    let cluster = !s.cluster_dns.is_empty()
        && (policy == "ClusterFirstWithHostNet" || (policy == "ClusterFirst" && !host_net));
    let mut cfg = cri::DnsConfig::default();
    if policy == "None" {
    } else if cluster {
        let ns = pod.namespace().unwrap_or_default();
        let d = &s.cluster_domain;
        cfg.servers = s.cluster_dns.clone();
        cfg.searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
        cfg.searches.extend(host_resolv(&s.resolv_conf).searches);
        cfg.options = vec!["ndots:5".into()];
    } else {
        let h = host_resolv(&s.resolv_conf);
        cfg.servers = h.servers;
        cfg.searches = h.searches;
        cfg.options = h.options;
    }
    if let Some(extra) = spec.dns_config {
        cfg.servers.extend(extra.nameservers.unwrap_or_default());
        cfg.searches.extend(extra.searches.unwrap_or_default());
        for o in extra.options.unwrap_or_default() {
            let text = match &o.value {
                Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = o.name.clone().unwrap_or_default();
            cfg.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            cfg.options.push(text);
        }
    }
    cfg.searches.dedup();
    cfg.searches.truncate(32);
    cfg
}

/// `/kubepods[/burstable|/besteffort]/pod<uid>`, the cgroupfs parent of the pod's QoS class.
pub fn cgroup_parent(pod: &Pod) -> String {
    let uid = pod.uid().unwrap_or_default();
    match pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
        Some("Guaranteed") => format!("/kubepods/pod{uid}"),
        Some("Burstable") => format!("/kubepods/burstable/pod{uid}"),
        _ => format!("/kubepods/besteffort/pod{uid}"),
    }
}

fn protocol(p: Option<&str>) -> i32 {
    match p {
        Some("UDP") => cri::Protocol::Udp as i32,
        Some("SCTP") => cri::Protocol::Sctp as i32,
        _ => cri::Protocol::Tcp as i32,
    }
}

fn ns_mode(node: bool) -> i32 {
    if node {
        cri::NamespaceMode::Node as i32
    } else {
        cri::NamespaceMode::Pod as i32
    }
}

/// The pod's sandbox, attempt `attempt`.
pub fn sandbox_config(pod: &Pod, s: &SandboxSettings, attempt: u32) -> cri::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_net = spec.host_network.unwrap_or(false);
    // A host-network pod shares the node's UTS namespace, so its hostname is the node's
    // already; containerd 1.6 would still put a name in the spec, which runc refuses without a
    // private UTS namespace. Empty, containerd writes the node's name to /etc/hostname.
    let hostname = if host_net {
        String::new()
    } else {
        let mut h = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
        h.truncate(63);
        h.trim_end_matches(['-', '.']).to_string()
    };
    let mut ports = Vec::new();
    for c in &spec.containers {
        for p in c.ports.clone().unwrap_or_default() {
            if let Some(hp) = p.host_port.filter(|h| *h > 0) {
                ports.push(cri::PortMapping {
                    protocol: protocol(p.protocol.as_deref()),
                    container_port: p.container_port,
                    host_port: hp,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    let psc = spec.security_context.clone().unwrap_or_default();
    let sysctls = psc
        .sysctls
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            namespace: pod.namespace().unwrap_or_default(),
            attempt,
        }),
        hostname,
        log_directory: log_dir(&s.pod_logs_dir, pod).display().to_string(),
        dns_config: Some(dns_config(pod, s)),
        port_mappings: ports,
        labels: pod_labels(pod),
        annotations: pod
            .annotations()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(pod),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: ns_mode(host_net),
                    pid: ns_mode(spec.host_pid.unwrap_or(false)),
                    ipc: ns_mode(spec.host_ipc.unwrap_or(false)),
                    ..Default::default()
                }),
                run_as_user: psc.run_as_user.map(|v| cri::Int64Value { value: v }),
                run_as_group: psc.run_as_group.map(|v| cri::Int64Value { value: v }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                privileged,
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        windows: None,
    }
}

fn quantity(
    map: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
    name: &str,
) -> Option<f64> {
    map.as_ref()
        .and_then(|m| m.get(name))
        .and_then(|q| crate::common::quantity::parse(&q.0))
}

/// cgroup values from requests and limits, and upstream's OOM score by QoS class.
pub fn linux_resources(pod: &Pod, c: &Container, node_memory: f64) -> cri::LinuxContainerResources {
    let res = c.resources.clone().unwrap_or_default();
    let req_cpu = quantity(&res.requests, "cpu");
    let lim_cpu = quantity(&res.limits, "cpu");
    let lim_mem = quantity(&res.limits, "memory");
    let req_mem = quantity(&res.requests, "memory").or(lim_mem);
    let shares = req_cpu
        .or(lim_cpu)
        .map(|cpu| ((cpu * 1024.0).round() as i64).max(2))
        .unwrap_or(2);
    let (period, quota) = match lim_cpu {
        Some(cpu) => (100_000, ((cpu * 100_000.0).round() as i64).max(1000)),
        None => (0, 0),
    };
    let oom = match pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
        Some("Guaranteed") => -997,
        Some("Burstable") => {
            let req = req_mem.unwrap_or(0.0);
            let score = if node_memory > 0.0 {
                1000 - (1000.0 * req / node_memory) as i64
            } else {
                999
            };
            score.clamp(2, 999)
        }
        _ => 1000,
    };
    cri::LinuxContainerResources {
        cpu_period: period,
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: lim_mem.map(|m| m as i64).unwrap_or(0),
        oom_score_adj: oom,
        ..Default::default()
    }
}

/// The CRI config of one container attempt.
#[allow(clippy::too_many_arguments)]
pub fn container_config(
    pod: &Pod,
    c: &Container,
    attempt: u32,
    image: &str,
    envs: &[(String, String)],
    mounts: Vec<cri::Mount>,
    node_memory: f64,
) -> cri::ContainerConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let vars: HashMap<&str, &str> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |n: &str| vars.get(n).map(|v| v.to_string());
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.clone()
            .unwrap_or_default()
            .iter()
            .map(|a| super::env::expand(a, &lookup))
            .collect()
    };
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = spec.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let mut labels = HashMap::from([
        (LABEL_POD_NAME.to_string(), pod.name_any()),
        (
            LABEL_POD_NAMESPACE.to_string(),
            pod.namespace().unwrap_or_default(),
        ),
        (LABEL_POD_UID.to_string(), pod.uid().unwrap_or_default()),
        (LABEL_CONTAINER_NAME.to_string(), c.name.clone()),
    ]);
    labels.retain(|_, v| !v.is_empty());
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: envs
            .iter()
            .map(|(k, v)| cri::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts,
        labels,
        annotations: HashMap::from([
            (ANNOTATION_RESTART_COUNT.to_string(), attempt.to_string()),
            (
                "io.kubernetes.container.terminationMessagePath".to_string(),
                c.termination_message_path
                    .clone()
                    .unwrap_or_else(|| "/dev/termination-log".into()),
            ),
        ]),
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(linux_resources(pod, c, node_memory)),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: caps.add.unwrap_or_default(),
                    drop_capabilities: caps.drop.unwrap_or_default(),
                    ..Default::default()
                }),
                privileged,
                namespace_options: Some(cri::NamespaceOption {
                    network: ns_mode(spec.host_network.unwrap_or(false)),
                    pid: if spec.host_pid.unwrap_or(false) {
                        cri::NamespaceMode::Node as i32
                    } else if spec.share_process_namespace.unwrap_or(false) {
                        cri::NamespaceMode::Pod as i32
                    } else {
                        cri::NamespaceMode::Container as i32
                    },
                    ipc: ns_mode(spec.host_ipc.unwrap_or(false)),
                    ..Default::default()
                }),
                run_as_user: sc
                    .run_as_user
                    .or(psc.run_as_user)
                    .map(|v| cri::Int64Value { value: v }),
                run_as_group: sc
                    .run_as_group
                    .or(psc.run_as_group)
                    .map(|v| cri::Int64Value { value: v }),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                no_new_privs: sc.allow_privilege_escalation == Some(false),
                masked_paths: if privileged {
                    vec![]
                } else {
                    MASKED_PATHS.iter().map(|s| s.to_string()).collect()
                },
                readonly_paths: if privileged {
                    vec![]
                } else {
                    READONLY_PATHS.iter().map(|s| s.to_string()).collect()
                },
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}
