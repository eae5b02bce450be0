//! The scheduling framework's filter and score plugins, as pure functions over a snapshot of
//! nodes and the pods bound (or assumed bound) to them: NodeName, NodeUnschedulable,
//! NodeResourcesFit, NodeAffinity (nodeSelector and required terms), TaintToleration,
//! NodePorts and InterPodAffinity; scores LeastAllocated, preferred node affinity, preferred
//! pod affinity and PreferNoSchedule taints. Reasons use upstream's words, because users read
//! them in `FailedScheduling` events.
//!
//! Owns no state and makes no API calls; the scheduling loop in [`super::queue`] feeds it.

use std::collections::{BTreeMap, HashMap};

pub use crate::common::labels::selects;
use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Taint, Toleration,
};
use kube::ResourceExt;

use crate::common::quantity;

/// Upstream's defaults for a container that requests nothing, used only when scoring.
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// What a pod asks for, or what a node offers: cpu in millicores, the rest in units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral: i64,
    pub pods: i64,
    /// Extended and hugepages resources by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    fn add_list(
        &mut self,
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) {
        for (name, q) in list.into_iter().flatten() {
            let Some(v) = quantity::parse(&q.0) else {
                continue;
            };
            match name.as_str() {
                "cpu" => self.milli_cpu += (v * 1000.0).ceil() as i64,
                "memory" => self.memory += v.ceil() as i64,
                "ephemeral-storage" => self.ephemeral += v.ceil() as i64,
                "pods" => self.pods += v as i64,
                other => *self.scalar.entry(other.to_string()).or_default() += v.ceil() as i64,
            }
        }
    }

    fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral += o.ephemeral;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral = self.ephemeral.max(o.ephemeral);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// A pod's effective requests, as upstream computes them: the sum over containers (and
/// restartable init containers, which keep running), at least the largest one-shot init
/// container plus the sidecars started before it, plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let requests = |c: &k8s_openapi::api::core::v1::Container| {
        let mut r = Resources::default();
        r.add_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        r
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            init_peak.max(&sidecars);
        } else {
            let mut with = sidecars.clone();
            with.add(&r);
            init_peak.max(&with);
        }
    }
    sum.add(&sidecars);
    sum.max(&init_peak);
    let mut overhead = Resources::default();
    overhead.add_list(spec.overhead.as_ref());
    sum.add(&overhead);
    sum
}

/// cpu and memory requests for scoring, with upstream's non-zero defaults per container.
fn non_zero_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = pod.spec.as_ref() else {
        return (0, 0);
    };
    let (mut cpu, mut mem) = (0, 0);
    for c in &spec.containers {
        let mut r = Resources::default();
        r.add_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        cpu += match req.is_some_and(|m| m.contains_key("cpu")) {
            true => r.milli_cpu,
            false => DEFAULT_MILLI_CPU,
        };
        mem += match req.is_some_and(|m| m.contains_key("memory")) {
            true => r.memory,
            false => DEFAULT_MEMORY,
        };
    }
    (cpu, mem)
}

/// A pod as the snapshot keeps it: what the plugins look at, computed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Pod,
    pub requests: Resources,
    pub non_zero: (i64, i64),
    /// (hostIP, protocol, hostPort) of each container port with a host port.
    pub host_ports: Vec<(String, String, i32)>,
    pub priority: i32,
}

impl PodInfo {
    pub fn new(pod: Pod) -> Self {
        let mut host_ports = Vec::new();
        if let Some(spec) = &pod.spec {
            for c in spec
                .init_containers
                .iter()
                .flatten()
                .chain(&spec.containers)
            {
                for p in c.ports.iter().flatten() {
                    if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                        let ip = p.host_ip.clone().filter(|s| !s.is_empty());
                        host_ports.push((
                            ip.unwrap_or_else(|| "0.0.0.0".into()),
                            p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            hp,
                        ));
                    }
                }
            }
        }
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        PodInfo {
            requests: pod_requests(&pod),
            non_zero: non_zero_requests(&pod),
            host_ports,
            priority,
            pod,
        }
    }

    /// What a pod placed on a node keeps: requests, ports and priority are computed already;
    /// the plugins still read its identity, labels, timestamps and affinity, nothing else.
    /// (A thousand full pods with managed fields would otherwise sit in the snapshot.)
    pub fn slim(mut self) -> Self {
        let m = &mut self.pod.metadata;
        m.managed_fields = None;
        m.annotations = None;
        m.owner_references = None;
        m.finalizers = None;
        self.pod.spec = self
            .pod
            .spec
            .take()
            .map(|s| k8s_openapi::api::core::v1::PodSpec {
                affinity: s.affinity,
                node_name: s.node_name,
                priority: s.priority,
                ..Default::default()
            });
        self.pod.status = None;
        self
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.namespace().unwrap_or_default(),
            self.pod.name_any()
        )
    }
}

/// A node and the pods on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Node,
    pub allocatable: Resources,
    pub pods: Vec<PodInfo>,
}

impl NodeInfo {
    pub fn new(node: Node) -> Self {
        let mut allocatable = Resources::default();
        allocatable.add_list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
        NodeInfo {
            node,
            allocatable,
            pods: Vec::new(),
        }
    }

    pub fn name(&self) -> String {
        self.node.name_any()
    }

    /// The sum of the requests of the pods on the node, with `pods` counting them.
    pub fn requested(&self) -> Resources {
        let mut r = Resources::default();
        for p in &self.pods {
            r.add(&p.requests);
        }
        r.pods = self.pods.len() as i64;
        r
    }

    fn labels(&self) -> &BTreeMap<String, String> {
        self.node.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

/// Why a node cannot take a pod. `resolvable` says whether removing pods (preemption) could
/// change the answer, as upstream's Unschedulable vs UnschedulableAndUnresolvable.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    pub text: String,
    pub resolvable: bool,
}

fn unresolvable(text: impl Into<String>) -> Reason {
    Reason {
        text: text.into(),
        resolvable: false,
    }
}

fn resolvable(text: impl Into<String>) -> Reason {
    Reason {
        text: text.into(),
        resolvable: true,
    }
}

/// Runs every filter; the reasons the node fails, empty when it fits. Like upstream, the
/// first failing filter in framework order decides.
pub fn filter(pod: &PodInfo, node: &NodeInfo, all: &[NodeInfo]) -> Vec<Reason> {
    let checks: [&dyn Fn() -> Vec<Reason>; 7] = [
        &|| node_name(pod, node),
        &|| node_unschedulable(pod, node),
        &|| node_affinity(pod, node),
        &|| node_ports(pod, node),
        &|| resources_fit(pod, node),
        &|| taint_toleration(pod, node),
        &|| inter_pod_affinity(pod, node, all),
    ];
    for check in checks {
        let r = check();
        if !r.is_empty() {
            return r;
        }
    }
    Vec::new()
}

pub(crate) fn node_name(pod: &PodInfo, node: &NodeInfo) -> Vec<Reason> {
    match pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        Some(n) if !n.is_empty() && n != node.name() => {
            vec![unresolvable("node(s) didn't match the requested node name")]
        }
        _ => vec![],
    }
}

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

fn node_unschedulable(pod: &PodInfo, node: &NodeInfo) -> Vec<Reason> {
    let unschedulable = node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if unschedulable && !tolerations(pod).iter().any(|t| tolerates(t, &taint)) {
        return vec![unresolvable("node(s) were unschedulable")];
    }
    vec![]
}

/// Whether a toleration tolerates a taint (upstream's `ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

pub(crate) fn taint_toleration(pod: &PodInfo, node: &NodeInfo) -> Vec<Reason> {
    let taints = node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    for taint in taints {
        if taint.effect != "NoSchedule" && taint.effect != "NoExecute" {
            continue;
        }
        if !tolerations(pod).iter().any(|t| tolerates(t, taint)) {
            return vec![unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ))];
        }
    }
    vec![]
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// A node selector term: every expression and field matches (an empty term matches nothing).
fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.labels();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let name = node.name();
            r.key == "metadata.name" && requirement_matches(r, Some(name.as_str()))
        })
}

pub(crate) fn node_affinity(pod: &PodInfo, node: &NodeInfo) -> Vec<Reason> {
    let spec = pod.pod.spec.as_ref();
    let labels = node.labels();
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok =
        required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)));
    if selector_ok && affinity_ok {
        vec![]
    } else {
        vec![unresolvable(
            "node(s) didn't match Pod's node affinity/selector",
        )]
    }
}

fn ports_conflict(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    a.2 == b.2 && a.1 == b.1 && (a.0 == b.0 || a.0 == "0.0.0.0" || b.0 == "0.0.0.0")
}

fn node_ports(pod: &PodInfo, node: &NodeInfo) -> Vec<Reason> {
    let used = node.pods.iter().flat_map(|p| &p.host_ports);
    for u in used {
        if pod.host_ports.iter().any(|w| ports_conflict(w, u)) {
            return vec![resolvable(
                "node(s) didn't have free ports for the requested pod ports",
            )];
        }
    }
    vec![]
}

fn resources_fit(pod: &PodInfo, node: &NodeInfo) -> Vec<Reason> {
    let used = node.requested();
    let alloc = &node.allocatable;
    let want = &pod.requests;
    let mut out = Vec::new();
    if used.pods + 1 > alloc.pods {
        out.push(resolvable("Too many pods"));
    }
    if want.milli_cpu > 0 && used.milli_cpu + want.milli_cpu > alloc.milli_cpu {
        out.push(resolvable("Insufficient cpu"));
    }
    if want.memory > 0 && used.memory + want.memory > alloc.memory {
        out.push(resolvable("Insufficient memory"));
    }
    if want.ephemeral > 0 && used.ephemeral + want.ephemeral > alloc.ephemeral {
        out.push(resolvable("Insufficient ephemeral-storage"));
    }
    for (name, v) in &want.scalar {
        let have = alloc.scalar.get(name).copied().unwrap_or(0);
        let taken = used.scalar.get(name).copied().unwrap_or(0);
        if *v > 0 && taken + v > have {
            out.push(resolvable(format!("Insufficient {name}")));
        }
    }
    out
}

/// Whether an existing pod is in scope of a term written in `owner_ns`.
fn term_selects(term: &PodAffinityTerm, owner_ns: &str, other: &Pod) -> bool {
    let ns = other.namespace().unwrap_or_default();
    let in_ns = match (&term.namespaces, &term.namespace_selector) {
        (Some(list), _) if !list.is_empty() => list.contains(&ns),
        // A namespace selector needs namespace labels we do not track; empty selects all.
        (_, Some(s)) if s.match_labels.is_none() && s.match_expressions.is_none() => true,
        (_, Some(_)) => false,
        _ => ns == owner_ns,
    };
    in_ns && selects(term.label_selector.as_ref(), other.labels())
}

/// Whether `node` and `other` share the term's topology domain.
fn same_domain(key: &str, node: &NodeInfo, other: &NodeInfo) -> bool {
    match (node.labels().get(key), other.labels().get(key)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn required_terms(pod: &Pod) -> (&[PodAffinityTerm], &[PodAffinityTerm]) {
    let a = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let aff = a
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[]);
    let anti = a
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[]);
    (aff, anti)
}

fn inter_pod_affinity(pod: &PodInfo, node: &NodeInfo, all: &[NodeInfo]) -> Vec<Reason> {
    let ns = pod.pod.namespace().unwrap_or_default();
    let (aff, anti) = required_terms(&pod.pod);
    // Existing pods' anti-affinity against the incoming pod.
    for other in all {
        for p in &other.pods {
            let pns = p.pod.namespace().unwrap_or_default();
            let (_, their_anti) = required_terms(&p.pod);
            for t in their_anti {
                if same_domain(&t.topology_key, node, other) && term_selects(t, &pns, &pod.pod) {
                    return vec![resolvable(
                        "node(s) didn't satisfy existing pods anti-affinity rules",
                    )];
                }
            }
        }
    }
    for t in anti {
        let hit = all.iter().any(|other| {
            same_domain(&t.topology_key, node, other)
                && other.pods.iter().any(|p| term_selects(t, &ns, &p.pod))
        });
        if hit {
            return vec![resolvable("node(s) didn't match pod anti-affinity rules")];
        }
    }
    for t in aff {
        if !node.labels().contains_key(&t.topology_key) {
            return vec![unresolvable("node(s) didn't match pod affinity rules")];
        }
        let hit = all.iter().any(|other| {
            same_domain(&t.topology_key, node, other)
                && other.pods.iter().any(|p| term_selects(t, &ns, &p.pod))
        });
        // Upstream lets the first pod of a group that selects itself in: nothing matches anywhere.
        let nowhere = !all
            .iter()
            .any(|o| o.pods.iter().any(|p| term_selects(t, &ns, &p.pod)));
        let first_of_group = nowhere && term_selects(t, &ns, &pod.pod);
        if !hit && !first_of_group {
            return vec![unresolvable("node(s) didn't match pod affinity rules")];
        }
    }
    vec![]
}

/// A node's score, higher is better: LeastAllocated (0–100), plus preferred node affinity
/// weights, preferred pod (anti-)affinity weights and minus one per untolerated
/// PreferNoSchedule taint.
pub fn score(pod: &PodInfo, node: &NodeInfo, all: &[NodeInfo]) -> i64 {
    let mut cpu_used = pod.non_zero.0;
    let mut mem_used = pod.non_zero.1;
    for p in &node.pods {
        cpu_used += p.non_zero.0;
        mem_used += p.non_zero.1;
    }
    let free = |used: i64, cap: i64| match cap {
        c if c <= 0 || used > c => 0,
        c => (c - used) * 100 / c,
    };
    let mut s =
        (free(cpu_used, node.allocatable.milli_cpu) + free(mem_used, node.allocatable.memory)) / 2;
    let a = pod.pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    if let Some(prefs) = a.and_then(|a| a.node_affinity.as_ref()).and_then(|n| {
        n.preferred_during_scheduling_ignored_during_execution
            .as_ref()
    }) {
        for p in prefs {
            if term_matches(&p.preference, node) {
                s += i64::from(p.weight);
            }
        }
    }
    let ns = pod.pod.namespace().unwrap_or_default();
    let weighted = |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
        let mut w = 0;
        for t in terms.into_iter().flatten() {
            let term = &t.pod_affinity_term;
            if all.iter().any(|o| {
                same_domain(&term.topology_key, node, o)
                    && o.pods.iter().any(|p| term_selects(term, &ns, &p.pod))
            }) {
                w += i64::from(t.weight);
            }
        }
        w
    };
    s += weighted(a.and_then(|a| a.pod_affinity.as_ref()).and_then(|p| {
        p.preferred_during_scheduling_ignored_during_execution
            .as_ref()
    }));
    s -= weighted(a.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|p| {
        p.preferred_during_scheduling_ignored_during_execution
            .as_ref()
    }));
    let taints = node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    s -= taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !tolerations(pod).iter().any(|x| tolerates(x, t)))
        .count() as i64;
    s
}

/// Upstream's FitError text: `0/N nodes are available: <count reason, …>.` followed by the
/// preemption outcome when there is one.
pub fn fit_error(
    total: usize,
    reasons: &HashMap<String, Vec<Reason>>,
    post: Option<&str>,
) -> String {
    let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
    for rs in reasons.values() {
        for r in rs {
            *histogram.entry(r.text.as_str()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = histogram
        .iter()
        .map(|(text, n)| format!("{n} {text}"))
        .collect();
    parts.sort();
    let mut msg = format!("0/{total} nodes are available:");
    if !parts.is_empty() {
        msg.push_str(&format!(" {}.", parts.join(", ")));
    }
    if let Some(p) = post {
        msg.push_str(&format!(" {p}."));
    }
    msg
}

/// The smallest set of lower-priority pods whose removal lets `pod` onto `node` (upstream's
/// default preemption on one node: remove every lower-priority pod, then put back as many as
/// still fit, highest priority first). None when even removing all of them does not help.
pub fn victims(pod: &PodInfo, node: &NodeInfo, all: &[NodeInfo]) -> Option<Vec<PodInfo>> {
    let (lower, keep): (Vec<PodInfo>, Vec<PodInfo>) = node
        .pods
        .iter()
        .cloned()
        .partition(|p| p.priority < pod.priority);
    if lower.is_empty() {
        return None;
    }
    let mut trial = NodeInfo {
        node: node.node.clone(),
        allocatable: node.allocatable.clone(),
        pods: keep,
    };
    let others = |t: &NodeInfo| -> Vec<NodeInfo> {
        all.iter()
            .map(|n| {
                if n.name() == t.name() {
                    t.clone()
                } else {
                    n.clone()
                }
            })
            .collect()
    };
    if !filter(pod, &trial, &others(&trial)).is_empty() {
        return None;
    }
    let mut candidates = lower;
    // Reprieve the most important first; among equals, the oldest.
    candidates.sort_by(|a, b| {
        b.priority.cmp(&a.priority).then_with(|| {
            a.pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
        })
    });
    let mut out = Vec::new();
    for c in candidates {
        trial.pods.push(c.clone());
        if !filter(pod, &trial, &others(&trial)).is_empty() {
            trial.pods.pop();
            out.push(c);
        }
    }
    out.sort_by_key(PodInfo::key);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(extra: serde_json::Value) -> NodeInfo {
        let mut n = json!({
            "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1", "zone": "a"}},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "10Gi"}},
        });
        json_patch::merge(&mut n, &extra);
        NodeInfo::new(serde_json::from_value(n).unwrap())
    }

    fn pod(name: &str, spec: serde_json::Value) -> PodInfo {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        });
        json_patch::merge(&mut p, &json!({"spec": spec}));
        PodInfo::new(serde_json::from_value(p).unwrap())
    }

    fn texts(r: Vec<Reason>) -> Vec<String> {
        r.into_iter().map(|r| r.text).collect()
    }

    #[test]
    fn requests_follow_upstream_rules() {
        let p = pod(
            "p",
            json!({
                "containers": [
                    {"name": "a", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                    {"name": "b", "image": "i", "resources": {"requests": {"cpu": "250m"}}},
                ],
                "initContainers": [
                    {"name": "big", "image": "i", "resources": {"requests": {"cpu": "1", "memory": "1Mi"}}},
                    {"name": "side", "image": "i", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
                ],
                "overhead": {"cpu": "10m"},
            }),
        );
        // max(containers 500m + sidecar 100m, init 1000m) + overhead 10m.
        assert_eq!(p.requests.milli_cpu, 1010);
        assert_eq!(p.requests.memory, 64 * 1024 * 1024);
        // b asks no memory: scoring counts it at the 200Mi default.
        assert_eq!(p.non_zero, (500, (64 + 200) * 1024 * 1024));
    }

    #[test]
    fn resources_and_fit_error_text() {
        let n = node(json!({}));
        let p = pod(
            "big",
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "3", "memory": "8Gi"}}}]}),
        );
        let r = filter(&p, &n, std::slice::from_ref(&n));
        assert_eq!(
            texts(r.clone()),
            ["Insufficient cpu", "Insufficient memory"]
        );
        let mut m = HashMap::new();
        m.insert("n1".to_string(), r);
        assert_eq!(
            fit_error(
                1,
                &m,
                Some(
                    "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
                )
            ),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
        );
        let mut full = node(json!({"status": {"allocatable": {"pods": "1"}}}));
        full.pods.push(pod("x", json!({})));
        assert_eq!(
            texts(filter(&pod("y", json!({})), &full, &[])),
            ["Too many pods"]
        );
    }

    #[test]
    fn selectors_affinity_and_taints() {
        let n = node(
            json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        let p = pod("p", json!({}));
        assert_eq!(
            texts(filter(&p, &n, &[])),
            ["node(s) had untolerated taint {dedicated: gpu}"]
        );
        let tol = pod(
            "p",
            json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}),
        );
        assert!(filter(&tol, &n, &[]).is_empty());
        let n = node(json!({}));
        let sel = pod("p", json!({"nodeSelector": {"zone": "b"}}));
        assert_eq!(
            texts(filter(&sel, &n, &[])),
            ["node(s) didn't match Pod's node affinity/selector"]
        );
        let aff = pod(
            "p",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
            ]}}}}),
        );
        assert!(filter(&aff, &n, &[]).is_empty());
        let cordoned = node(json!({"spec": {"unschedulable": true}}));
        assert_eq!(
            texts(filter(&p, &cordoned, &[])),
            ["node(s) were unschedulable"]
        );
        let other = pod("p", json!({"nodeName": "n2"}));
        assert_eq!(
            texts(filter(&other, &n, &[])),
            ["node(s) didn't match the requested node name"]
        );
    }

    #[test]
    fn host_ports_conflict() {
        let mut n = node(json!({}));
        n.pods.push(pod(
            "a",
            json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        ));
        let same = pod(
            "b",
            json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": "127.0.0.1"}]}]}),
        );
        assert_eq!(
            texts(filter(&same, &n, &[])),
            ["node(s) didn't have free ports for the requested pod ports"]
        );
        let udp = pod(
            "b",
            json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]}]}),
        );
        assert!(filter(&udp, &n, &[]).is_empty());
    }

    #[test]
    fn pod_anti_affinity_and_affinity_on_hostname() {
        let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"tier": "db"}}}
        ]}}});
        let mut n = node(json!({}));
        let mut db = pod("db1", anti.clone());
        db.pod.metadata.labels = Some([("tier".to_string(), "db".to_string())].into());
        let mut db2 = pod("db2", anti.clone());
        db2.pod.metadata.labels = db.pod.metadata.labels.clone();
        assert!(filter(&db, &n, std::slice::from_ref(&n)).is_empty());
        n.pods.push(db.clone());
        let all = vec![n.clone()];
        assert_eq!(
            texts(filter(&db2, &n, &all)),
            ["node(s) didn't satisfy existing pods anti-affinity rules"]
        );
        let aff = pod(
            "web",
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"tier": "cache"}}}
            ]}}}),
        );
        assert_eq!(
            texts(filter(&aff, &n, &all)),
            ["node(s) didn't match pod affinity rules"]
        );
        let mut cache = pod("cache", json!({}));
        cache.pod.metadata.labels = Some([("tier".to_string(), "cache".to_string())].into());
        n.pods.push(cache);
        let all = vec![n.clone()];
        assert!(filter(&aff, &n, &all).is_empty());
    }

    #[test]
    fn preemption_picks_the_fewest_lowest_victims() {
        let cpu = |c: &str| json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": c}}}]});
        let mut n = node(json!({}));
        for (name, prio) in [("low1", 0), ("low2", 0), ("high", 1000)] {
            let mut p = pod(name, cpu("600m"));
            p.priority = prio;
            n.pods.push(p);
        }
        let mut want = pod("want", cpu("1"));
        want.priority = 500;
        let all = vec![n.clone()];
        assert_eq!(texts(filter(&want, &n, &all)), ["Insufficient cpu"]);
        let v = victims(&want, &n, &all).unwrap();
        // 1800m used of 2000m: freeing one 600m pod leaves 1200m + 1000m > 2000m, so both go.
        assert_eq!(v.len(), 2);
        let mut small = pod("small", cpu("500m"));
        small.priority = 500;
        assert_eq!(victims(&small, &n, &all).unwrap().len(), 1);
        let mut equal = pod("eq", cpu("1"));
        equal.priority = 0;
        assert!(victims(&equal, &n, &all).is_none());
    }

    #[test]
    fn scores_prefer_free_nodes_and_preferences() {
        let n = node(json!({}));
        let p = pod("p", json!({}));
        let base = score(&p, &n, &[]);
        let pref = pod(
            "p",
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}
            ]}}}),
        );
        assert_eq!(score(&pref, &n, &[]), base + 10);
        let mut busy = node(json!({}));
        busy.pods.push(pod(
            "x",
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1500m", "memory": "3Gi"}}}]}),
        ));
        assert!(score(&p, &busy, &[]) < base);
    }
}
