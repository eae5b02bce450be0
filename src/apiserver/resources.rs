//! The table of served resources: one row a resource, from which discovery, routing, storage
//! keys, printing and OpenAPI are derived. Adding a resource is adding a row.

/// What the registry knows of one resource.
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources beyond the object itself (`status`, `scale`, `binding`, `token`, …).
    pub subresources: &'static [&'static str],
    /// Storage prefix under `/registry/`, as upstream names it (`minions` for nodes).
    pub storage: &'static str,
    /// Whether `metadata.generation` counts spec changes.
    pub generation: bool,
    /// Only create is served (reviews): nothing is stored.
    pub create_only: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_sub(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        if self.create_only {
            &["create"]
        } else {
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }

    /// The kind a subresource answers with.
    pub fn sub_kind(&self, sub: &str) -> (&'static str, &'static str, &'static str) {
        match sub {
            "scale" => ("autoscaling", "v1", "Scale"),
            "binding" => ("", "v1", "Binding"),
            "token" => ("authentication.k8s.io", "v1", "TokenRequest"),
            "eviction" => ("policy", "v1", "Eviction"),
            "log" => ("", "v1", "Pod"),
            "exec" => ("", "v1", "PodExecOptions"),
            "attach" => ("", "v1", "PodAttachOptions"),
            "portforward" => ("", "v1", "PodPortForwardOptions"),
            "proxy" => match self.plural {
                "pods" => ("", "v1", "PodProxyOptions"),
                "services" => ("", "v1", "ServiceProxyOptions"),
                _ => ("", "v1", "NodeProxyOptions"),
            },
            _ => (self.group, self.version, self.kind),
        }
    }

    pub fn sub_verbs(sub: &str) -> &'static [&'static str] {
        match sub {
            "status" | "scale" | "approval" => &["get", "patch", "update"],
            "finalize" => &["update"],
            "log" => &["get"],
            // Connect verbs: GET (WebSocket) is `get`, POST (SPDY) is `create`.
            "exec" | "attach" | "portforward" => &["create", "get"],
            // Connect verbs, as upstream's discovery lists them.
            "proxy" => &["create", "delete", "get", "patch", "update"],
            _ => &["create"],
        }
    }
}

macro_rules! res {
    ($g:expr, $v:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr, $short:expr, $cat:expr, $sub:expr, $storage:expr, $gen:expr) => {
        Resource {
            group: $g,
            version: $v,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            storage: $storage,
            generation: $gen,
            create_only: false,
        }
    };
}

macro_rules! review {
    ($g:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr) => {
        Resource {
            group: $g,
            version: "v1",
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: &[],
            categories: &[],
            subresources: &[],
            storage: "",
            generation: false,
            create_only: true,
        }
    };
}

const NS: bool = true;
const CLUSTER: bool = false;
const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// Every served resource, grouped by API group in discovery order.
#[rustfmt::skip]
pub static RESOURCES: &[Resource] = &[
    review!("", "Binding", "bindings", "binding", NS),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", NS, &["cm"], NONE, NONE, "configmaps", false),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", NS, &["ep"], NONE, NONE, "services/endpoints", false),
    res!("", "v1", "Event", "events", "event", NS, &["ev"], NONE, NONE, "events", false),
    res!("", "v1", "LimitRange", "limitranges", "limitrange", NS, &["limits"], NONE, NONE, "limitranges", false),
    res!("", "v1", "Namespace", "namespaces", "namespace", CLUSTER, &["ns"], NONE, &["finalize", "status"], "namespaces", false),
    res!("", "v1", "Node", "nodes", "node", CLUSTER, &["no"], NONE, &["proxy", "status"], "minions", false),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", NS, &["pvc"], NONE, &["status"], "persistentvolumeclaims", false),
    res!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", CLUSTER, &["pv"], NONE, &["status"], "persistentvolumes", false),
    res!("", "v1", "Pod", "pods", "pod", NS, &["po"], ALL, &["attach", "binding", "exec", "log", "portforward", "proxy", "status"], "pods", false),
    res!("", "v1", "PodTemplate", "podtemplates", "podtemplate", NS, NONE, NONE, NONE, "podtemplates", false),
    res!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", NS, &["rc"], ALL, &["scale", "status"], "controllers", true),
    res!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", NS, &["quota"], NONE, &["status"], "resourcequotas", false),
    res!("", "v1", "Secret", "secrets", "secret", NS, NONE, NONE, NONE, "secrets", false),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", NS, &["sa"], NONE, &["token"], "serviceaccounts", false),
    res!("", "v1", "Service", "services", "service", NS, &["svc"], ALL, &["proxy", "status"], "services/specs", false),
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", NS, NONE, NONE, NONE, "controllerrevisions", false),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", NS, &["ds"], ALL, &["status"], "daemonsets", true),
    res!("apps", "v1", "Deployment", "deployments", "deployment", NS, &["deploy"], ALL, &["scale", "status"], "deployments", true),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", NS, &["rs"], ALL, &["scale", "status"], "replicasets", true),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", NS, &["sts"], ALL, &["scale", "status"], "statefulsets", true),
    review!("authentication.k8s.io", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", CLUSTER),
    review!("authentication.k8s.io", "TokenReview", "tokenreviews", "tokenreview", CLUSTER),
    review!("authorization.k8s.io", "LocalSubjectAccessReview", "localsubjectaccessreviews", "localsubjectaccessreview", NS),
    review!("authorization.k8s.io", "SelfSubjectAccessReview", "selfsubjectaccessreviews", "selfsubjectaccessreview", CLUSTER),
    review!("authorization.k8s.io", "SelfSubjectRulesReview", "selfsubjectrulesreviews", "selfsubjectrulesreview", CLUSTER),
    review!("authorization.k8s.io", "SubjectAccessReview", "subjectaccessreviews", "subjectaccessreview", CLUSTER),
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", NS, &["cj"], ALL, &["status"], "cronjobs", true),
    res!("batch", "v1", "Job", "jobs", "job", NS, NONE, ALL, &["status"], "jobs", true),
    res!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", CLUSTER, &["csr"], NONE, &["approval", "status"], "certificatesigningrequests", false),
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", NS, NONE, NONE, NONE, "leases", false),
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", NS, NONE, NONE, NONE, "endpointslices", false),
    res!("events.k8s.io", "v1", "Event", "events", "event", NS, &["ev"], NONE, NONE, "events", false),
    res!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", CLUSTER, NONE, NONE, NONE, "ingressclasses", false),
    res!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", NS, &["ing"], NONE, &["status"], "ingress", true),
    res!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", NS, &["netpol"], NONE, NONE, "networkpolicies", true),
    res!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", CLUSTER, NONE, NONE, NONE, "runtimeclasses", false),
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", NS, &["pdb"], NONE, &["status"], "poddisruptionbudgets", true),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", CLUSTER, NONE, NONE, NONE, "clusterrolebindings", false),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", CLUSTER, NONE, NONE, NONE, "clusterroles", false),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", NS, NONE, NONE, NONE, "rolebindings", false),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", NS, NONE, NONE, NONE, "roles", false),
    res!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", CLUSTER, &["pc"], NONE, NONE, "priorityclasses", false),
    res!("storage.k8s.io", "v1", "CSIDriver", "csidrivers", "csidriver", CLUSTER, NONE, NONE, NONE, "csidrivers", false),
    res!("storage.k8s.io", "v1", "CSINode", "csinodes", "csinode", CLUSTER, NONE, NONE, NONE, "csinodes", false),
    res!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", CLUSTER, &["sc"], NONE, NONE, "storageclasses", false),
    res!("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", "volumeattachment", CLUSTER, NONE, NONE, &["status"], "volumeattachments", false),
];

/// API groups kube-apiserver 1.32 serves itself; any other group is a custom resource.
pub const BUILTIN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "extensions",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "metrics.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// The resource a URL names, by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Every group (core first) with its versions, in discovery order.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version)
                }
            }
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// Resources of one group version.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Resource> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_is_unique_and_stored_somewhere() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "duplicate {}",
                    a.plural
                );
            }
            assert!(
                a.create_only || !a.storage.is_empty(),
                "{} has no storage",
                a.plural
            );
        }
        assert_eq!(groups()[0].0, "");
    }
}
