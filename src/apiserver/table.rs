//! Server-side printing: owns how objects are printed as metav1 Table rows (the columns and
//! cells per resource, mirroring kube-apiserver 1.32's `pkg/printers/internalversion` and the
//! default `pkg/registry/rest/table.go`); must not touch storage or HTTP.
//!
//! Objects arrive as stored JSON (external v1 shape), so every accessor here tolerates missing
//! or oddly-typed fields and falls back to the value upstream's internal type would hold
//! (zero value, or the API default where upstream relies on defaulting having run).

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One metav1 TableColumnDefinition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// "string" | "integer" | "date" | "boolean" | "number"
    pub type_: &'static str,
    /// "name" for Name columns, else "".
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i32,
}

impl Column {
    fn to_json(self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Column definitions
// ---------------------------------------------------------------------------------------------

/// metav1.ObjectMeta{}.SwaggerDoc()["name"]
const D_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
/// metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]
const D_AGE: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const D_CONTAINERS: &str = "Names of each container in the template.";
const D_IMAGES: &str = "Images referenced by each container in the template.";
const D_SELECTOR: &str = "A label query over pods that are managed by this object. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const D_REPLICAS_SPEC: &str = "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1.";
const D_REPLICAS_STATUS: &str = "Replicas is the most recently observed number of replicas.";
const D_READY_REPLICAS: &str =
    "readyReplicas is the number of pods targeted by this object with a Ready Condition.";

/// A priority-0 column.
const fn c(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

/// A priority-1 (`-o wide`) column.
const fn w(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: D_NAME,
    priority: 0,
};
const AGE: Column = c("Age", "string", D_AGE);
const CONTAINERS: Column = w("Containers", "string", D_CONTAINERS);
const IMAGES: Column = w("Images", "string", D_IMAGES);

const DEFAULT_COLUMNS: &[Column] = &[NAME, c("Created At", "date", D_AGE)];

const POD_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    c(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    c(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    w(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    w(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
    ),
    w(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
    ),
    w(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
    ),
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    c("Status", "string", "The status of the node"),
    c("Roles", "string", "The roles of the node"),
    AGE,
    c("Version", "string", "Kubelet Version reported by the node."),
    w(
        "Internal-IP",
        "string",
        "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses",
    ),
    w(
        "External-IP",
        "string",
        "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses",
    ),
    w(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    w(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    w(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    c("Status", "string", "The status of the namespace"),
    AGE,
];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Type",
        "string",
        "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer.",
    ),
    c(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    c(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    c(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
    ),
    AGE,
    w(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
    ),
];

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share.",
    ),
    AGE,
];

const ENDPOINTSLICE_COLUMNS: &[Column] = &[
    NAME,
    c(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type.",
    ),
    c(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    c(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

const CONFIGMAP_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Data",
        "string",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    AGE,
];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
    ),
    c(
        "Data",
        "string",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    AGE,
];

const SERVICEACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
    ),
    AGE,
];

const EVENT_COLUMNS: &[Column] = &[
    c(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    c(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    c(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    c("Object", "string", "The object that this event is about."),
    w(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    ),
    w(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    c(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    w(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    w(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        priority: 1,
        ..NAME
    },
];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    c("Ready", "string", "Number of the pod with ready state"),
    c(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    c(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    w("Selector", "string", D_SELECTOR),
];

const REPLICASET_COLUMNS: &[Column] = &[
    NAME,
    c("Desired", "integer", D_REPLICAS_SPEC),
    c("Current", "integer", D_REPLICAS_STATUS),
    c("Ready", "integer", D_READY_REPLICAS),
    AGE,
    CONTAINERS,
    IMAGES,
    w("Selector", "string", D_SELECTOR),
];

const STATEFULSET_COLUMNS: &[Column] = &[
    NAME,
    c("Ready", "string", "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

const DAEMONSET_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
    ),
    c(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
    ),
    c(
        "Ready",
        "integer",
        "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
    ),
    c(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod",
    ),
    c(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
    ),
    c(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    w("Selector", "string", D_SELECTOR),
];

const JOB_COLUMNS: &[Column] = &[
    NAME,
    c("Status", "string", "Status of the job."),
    c(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    c("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    w("Selector", "string", D_SELECTOR),
];

const CRONJOB_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Schedule",
        "string",
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
    ),
    c(
        "Timezone",
        "string",
        "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
    ),
    c(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.",
    ),
    c(
        "Active",
        "integer",
        "A list of pointers to currently running jobs.",
    ),
    c(
        "Last Schedule",
        "string",
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    w("Selector", "string", D_SELECTOR),
];

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

const PV_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Capacity",
        "string",
        "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity",
    ),
    c(
        "Access Modes",
        "string",
        "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes",
    ),
    c(
        "Reclaim Policy",
        "string",
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated).",
    ),
    c(
        "Status",
        "string",
        "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase",
    ),
    c(
        "Claim",
        "string",
        "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
    ),
    c("StorageClass", "string", "StorageClass of the pv"),
    c(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pv",
    ),
    c(
        "Reason",
        "string",
        "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
    ),
    AGE,
    w(
        "VolumeMode",
        "string",
        "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.",
    ),
];

const PVC_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Status",
        "string",
        "phase represents the current phase of PersistentVolumeClaim.",
    ),
    c(
        "Volume",
        "string",
        "volumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    c(
        "Capacity",
        "string",
        "capacity represents the actual resources of the underlying volume.",
    ),
    c(
        "Access Modes",
        "string",
        "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1",
    ),
    c("StorageClass", "string", "StorageClass of the pvc"),
    c(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pvc",
    ),
    AGE,
    w(
        "VolumeMode",
        "string",
        "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.",
    ),
];

const ROLEBINDING_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Role",
        "string",
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
    ),
    AGE,
    w("Users", "string", "Users in the roleBinding"),
    w("Groups", "string", "Groups in the roleBinding"),
    w(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the roleBinding",
    ),
];

const CLUSTERROLEBINDING_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Role",
        "string",
        "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error.",
    ),
    AGE,
    w("Users", "string", "Users in the clusterRoleBinding"),
    w("Groups", "string", "Groups in the clusterRoleBinding"),
    w(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the clusterRoleBinding",
    ),
];

const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    c(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    c(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    c("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

const STORAGECLASS_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Provisioner",
        "string",
        "provisioner indicates the type of the provisioner.",
    ),
    c(
        "ReclaimPolicy",
        "string",
        "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete.",
    ),
    c(
        "VolumeBindingMode",
        "string",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature.",
    ),
    c(
        "AllowVolumeExpansion",
        "string",
        "allowVolumeExpansion shows whether the storage class allow volume expand.",
    ),
    AGE,
];

const RC_COLUMNS: &[Column] = &[
    NAME,
    c("Desired", "integer", D_REPLICAS_SPEC),
    c("Current", "integer", D_REPLICAS_STATUS),
    c("Ready", "integer", D_READY_REPLICAS),
    AGE,
    CONTAINERS,
    IMAGES,
    w(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the Replicas count. If Selector is empty, it is defaulted to the labels present on the Pod template. Label keys and values that must match in order to be controlled by this replication controller, if empty defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels#label-selectors",
    ),
];

const PRIORITYCLASS_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Value",
        "integer",
        "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec.",
    ),
    c(
        "Global-Default",
        "boolean",
        "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.",
    ),
    AGE,
    // Upstream gives this column priority 0 (it is shown without -o wide).
    c(
        "PreemptionPolicy",
        "string",
        "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset.",
    ),
];

const PDB_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    c(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    c(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

const CSR_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    c(
        "SignerName",
        "string",
        "Requested signer for the request. It is a qualified name in the form: `scope-hostname.io/name`.",
    ),
    c("Requestor", "string", "Base64-encoded PKCS#10 CSR data"),
    c(
        "RequestedDuration",
        "string",
        "expirationSeconds is the requested duration of validity of the issued certificate.",
    ),
    c(
        "Condition",
        "string",
        "Conditions applied to the request, such as approval or denial.",
    ),
];

const INGRESSCLASS_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    c(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    AGE,
];

const NETWORKPOLICY_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Pod-Selector",
        "string",
        "Selects the pods to which this NetworkPolicy object applies.",
    ),
    AGE,
];

const CONTROLLERREVISION_COLUMNS: &[Column] = &[
    NAME,
    c("Controller", "string", "Controller of the object"),
    c(
        "Revision",
        "string",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

const RUNTIMECLASS_COLUMNS: &[Column] = &[NAME, c("Handler", "string", ""), AGE];

const WEBHOOK_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Webhooks",
        "integer",
        "Webhooks indicates the number of webhooks registered in this configuration",
    ),
    AGE,
];

const PODTEMPLATE_COLUMNS: &[Column] = &[
    NAME,
    c("Containers", "string", D_CONTAINERS),
    c("Images", "string", D_IMAGES),
    c("Pod Labels", "string", "The labels for the pod template."),
];

const RESOURCEQUOTA_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Request",
        "string",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
    ),
    c(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
    ),
    AGE,
];

const HPA_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Reference",
        "string",
        "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count.",
    ),
    c(
        "Targets",
        "string",
        "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used).",
    ),
    c(
        "MinPods",
        "string",
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
    ),
    c(
        "MaxPods",
        "string",
        "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up. It cannot be less that minReplicas.",
    ),
    c(
        "Replicas",
        "string",
        "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler.",
    ),
    AGE,
];

const CSIDRIVER_COLUMNS: &[Column] = &[
    NAME,
    c(
        "AttachRequired",
        "boolean",
        "attachRequired indicates this CSI volume driver requires an attach operation.",
    ),
    c(
        "PodInfoOnMount",
        "boolean",
        "podInfoOnMount indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations.",
    ),
    c(
        "StorageCapacity",
        "boolean",
        "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report.",
    ),
    c(
        "TokenRequests",
        "string",
        "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication.",
    ),
    c(
        "RequiresRepublish",
        "boolean",
        "requiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume.",
    ),
    c(
        "Modes",
        "string",
        "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports.",
    ),
    AGE,
];

const CSINODE_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Drivers",
        "integer",
        "Drivers indicates the number of CSI drivers registered on the node",
    ),
    AGE,
];

const VOLUMEATTACHMENT_COLUMNS: &[Column] = &[
    NAME,
    Column {
        name: "Attacher",
        type_: "string",
        format: "name",
        description: "attacher indicates the name of the volume driver that MUST handle this request.",
        priority: 0,
    },
    c(
        "PV",
        "string",
        "persistentVolumeName represents the name of the persistent volume to attach.",
    ),
    c(
        "Node",
        "string",
        "nodeName represents the node that the volume should be attached to.",
    ),
    c(
        "Attached",
        "boolean",
        "attached indicates the volume is successfully attached.",
    ),
    AGE,
];

const FLOWSCHEMA_COLUMNS: &[Column] = &[
    NAME,
    c(
        "PriorityLevel",
        "string",
        "`name` is the name of the priority level configuration being referenced Required.",
    ),
    c(
        "MatchingPrecedence",
        "string",
        "`matchingPrecedence` is used to choose among the FlowSchemas that match a given request.",
    ),
    c(
        "DistinguisherMethod",
        "string",
        "`distinguisherMethod` defines how to compute the flow distinguisher for requests that match this schema.",
    ),
    AGE,
    c(
        "MissingPL",
        "string",
        "references a broken or non-existent PriorityLevelConfiguration",
    ),
];

const PRIORITYLEVEL_COLUMNS: &[Column] = &[
    NAME,
    c(
        "Type",
        "string",
        "`type` indicates whether this priority level is subject to limitation on request execution.",
    ),
    c(
        "NominalConcurrencyShares",
        "string",
        "`nominalConcurrencyShares` (NCS) contributes to the computation of the NominalConcurrencyLimit (NominalCL) of this level.",
    ),
    c(
        "Queues",
        "string",
        "`queues` is the number of queues for this priority level.",
    ),
    c(
        "HandSize",
        "string",
        "`handSize` is a small positive number that configures the shuffle sharding of requests into queues.",
    ),
    c(
        "QueueLengthLimit",
        "string",
        "`queueLengthLimit` is the maximum number of requests allowed to be waiting in a given queue of this priority level at a time.",
    ),
    AGE,
];

const COMPONENTSTATUS_COLUMNS: &[Column] = &[
    NAME,
    c("Status", "string", "Status of the component conditions"),
    c("Message", "string", "Message of the component conditions"),
    c("Error", "string", "Error of the component conditions"),
];

/// Which upstream printer handles a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    Node,
    Namespace,
    Service,
    Endpoints,
    EndpointSlice,
    ConfigMap,
    Secret,
    ServiceAccount,
    Event,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    Lease,
    PersistentVolume,
    PersistentVolumeClaim,
    RoleBinding,
    ClusterRoleBinding,
    Ingress,
    StorageClass,
    ReplicationController,
    PriorityClass,
    PodDisruptionBudget,
    CertificateSigningRequest,
    IngressClass,
    NetworkPolicy,
    ControllerRevision,
    RuntimeClass,
    Webhook,
    PodTemplate,
    ResourceQuota,
    HorizontalPodAutoscaler,
    CsiDriver,
    CsiNode,
    VolumeAttachment,
    FlowSchema,
    PriorityLevel,
    ComponentStatus,
    Default,
}

fn printer(group: &str, resource: &str) -> Printer {
    use Printer as P;
    match (group, resource) {
        ("", "pods") => P::Pod,
        ("", "nodes") => P::Node,
        ("", "namespaces") => P::Namespace,
        ("", "services") => P::Service,
        ("", "endpoints") => P::Endpoints,
        ("discovery.k8s.io", "endpointslices") => P::EndpointSlice,
        ("", "configmaps") => P::ConfigMap,
        ("", "secrets") => P::Secret,
        ("", "serviceaccounts") => P::ServiceAccount,
        // events.k8s.io shares the core Event storage (and so its printer) upstream.
        ("" | "events.k8s.io", "events") => P::Event,
        ("apps", "deployments") => P::Deployment,
        ("apps", "replicasets") => P::ReplicaSet,
        ("apps", "statefulsets") => P::StatefulSet,
        ("apps", "daemonsets") => P::DaemonSet,
        ("apps", "controllerrevisions") => P::ControllerRevision,
        ("batch", "jobs") => P::Job,
        ("batch", "cronjobs") => P::CronJob,
        ("coordination.k8s.io", "leases") => P::Lease,
        ("", "persistentvolumes") => P::PersistentVolume,
        ("", "persistentvolumeclaims") => P::PersistentVolumeClaim,
        ("", "replicationcontrollers") => P::ReplicationController,
        ("", "podtemplates") => P::PodTemplate,
        ("", "resourcequotas") => P::ResourceQuota,
        ("", "componentstatuses") => P::ComponentStatus,
        ("rbac.authorization.k8s.io", "rolebindings") => P::RoleBinding,
        ("rbac.authorization.k8s.io", "clusterrolebindings") => P::ClusterRoleBinding,
        ("networking.k8s.io", "ingresses") => P::Ingress,
        ("networking.k8s.io", "ingressclasses") => P::IngressClass,
        ("networking.k8s.io", "networkpolicies") => P::NetworkPolicy,
        ("storage.k8s.io", "storageclasses") => P::StorageClass,
        ("storage.k8s.io", "csidrivers") => P::CsiDriver,
        ("storage.k8s.io", "csinodes") => P::CsiNode,
        ("storage.k8s.io", "volumeattachments") => P::VolumeAttachment,
        ("scheduling.k8s.io", "priorityclasses") => P::PriorityClass,
        ("policy", "poddisruptionbudgets") => P::PodDisruptionBudget,
        ("certificates.k8s.io", "certificatesigningrequests") => P::CertificateSigningRequest,
        ("node.k8s.io", "runtimeclasses") => P::RuntimeClass,
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations" | "validatingwebhookconfigurations",
        ) => P::Webhook,
        ("autoscaling", "horizontalpodautoscalers") => P::HorizontalPodAutoscaler,
        ("flowcontrol.apiserver.k8s.io", "flowschemas") => P::FlowSchema,
        ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations") => P::PriorityLevel,
        _ => P::Default,
    }
}

/// Columns for a resource (group "" = core, `resource` = plural e.g. "pods"). Unknown → the
/// default table (Name, Created At).
pub fn columns(group: &str, resource: &str) -> &'static [Column] {
    use Printer as P;
    match printer(group, resource) {
        P::Pod => POD_COLUMNS,
        P::Node => NODE_COLUMNS,
        P::Namespace => NAMESPACE_COLUMNS,
        P::Service => SERVICE_COLUMNS,
        P::Endpoints => ENDPOINTS_COLUMNS,
        P::EndpointSlice => ENDPOINTSLICE_COLUMNS,
        P::ConfigMap => CONFIGMAP_COLUMNS,
        P::Secret => SECRET_COLUMNS,
        P::ServiceAccount => SERVICEACCOUNT_COLUMNS,
        P::Event => EVENT_COLUMNS,
        P::Deployment => DEPLOYMENT_COLUMNS,
        P::ReplicaSet => REPLICASET_COLUMNS,
        P::StatefulSet => STATEFULSET_COLUMNS,
        P::DaemonSet => DAEMONSET_COLUMNS,
        P::Job => JOB_COLUMNS,
        P::CronJob => CRONJOB_COLUMNS,
        P::Lease => LEASE_COLUMNS,
        P::PersistentVolume => PV_COLUMNS,
        P::PersistentVolumeClaim => PVC_COLUMNS,
        P::RoleBinding => ROLEBINDING_COLUMNS,
        P::ClusterRoleBinding => CLUSTERROLEBINDING_COLUMNS,
        P::Ingress => INGRESS_COLUMNS,
        P::StorageClass => STORAGECLASS_COLUMNS,
        P::ReplicationController => RC_COLUMNS,
        P::PriorityClass => PRIORITYCLASS_COLUMNS,
        P::PodDisruptionBudget => PDB_COLUMNS,
        P::CertificateSigningRequest => CSR_COLUMNS,
        P::IngressClass => INGRESSCLASS_COLUMNS,
        P::NetworkPolicy => NETWORKPOLICY_COLUMNS,
        P::ControllerRevision => CONTROLLERREVISION_COLUMNS,
        P::RuntimeClass => RUNTIMECLASS_COLUMNS,
        P::Webhook => WEBHOOK_COLUMNS,
        P::PodTemplate => PODTEMPLATE_COLUMNS,
        P::ResourceQuota => RESOURCEQUOTA_COLUMNS,
        P::HorizontalPodAutoscaler => HPA_COLUMNS,
        P::CsiDriver => CSIDRIVER_COLUMNS,
        P::CsiNode => CSINODE_COLUMNS,
        P::VolumeAttachment => VOLUMEATTACHMENT_COLUMNS,
        P::FlowSchema => FLOWSCHEMA_COLUMNS,
        P::PriorityLevel => PRIORITYLEVEL_COLUMNS,
        P::ComponentStatus => COMPONENTSTATUS_COLUMNS,
        P::Default => DEFAULT_COLUMNS,
    }
}

/// JSON of the columnDefinitions array for the Table response.
pub fn column_definitions(group: &str, resource: &str) -> Value {
    Value::Array(
        columns(group, resource)
            .iter()
            .map(|c| c.to_json())
            .collect(),
    )
}

/// Cells for one object, in column order, every column filled (the server always fills wide
/// columns, as upstream runs its printers with Wide=true). `now` is used for ages.
pub fn cells(group: &str, resource: &str, obj: &Value, now: OffsetDateTime) -> Vec<Value> {
    use Printer as P;
    match printer(group, resource) {
        P::Pod => pod_cells(obj, now),
        P::Node => node_cells(obj, now),
        P::Namespace => vec![
            name_cell(obj),
            sv(or_default(st(obj, &["status", "phase"]), "Active")),
            age_cell(obj, now),
        ],
        P::Service => service_cells(obj, now),
        P::Endpoints => vec![
            name_cell(obj),
            Value::String(format_endpoints(obj)),
            age_cell(obj, now),
        ],
        P::EndpointSlice => endpointslice_cells(obj, now),
        P::ConfigMap => vec![
            name_cell(obj),
            json!((map_len(obj, &["data"]) + map_len(obj, &["binaryData"])) as i64),
            age_cell(obj, now),
        ],
        P::Secret => vec![
            name_cell(obj),
            sv(or_default(st(obj, &["type"]), "Opaque")),
            json!(map_len(obj, &["data"]) as i64),
            age_cell(obj, now),
        ],
        P::ServiceAccount => vec![
            name_cell(obj),
            json!(list(obj, &["secrets"]).len() as i64),
            age_cell(obj, now),
        ],
        P::Event => event_cells(obj, now),
        P::Deployment => deployment_cells(obj, now),
        P::ReplicaSet => replicaset_cells(obj, now),
        P::StatefulSet => statefulset_cells(obj, now),
        P::DaemonSet => daemonset_cells(obj, now),
        P::Job => job_cells(obj, now),
        P::CronJob => cronjob_cells(obj, now),
        P::Lease => vec![
            name_cell(obj),
            sv(st(obj, &["spec", "holderIdentity"])),
            age_cell(obj, now),
        ],
        P::PersistentVolume => pv_cells(obj, now),
        P::PersistentVolumeClaim => pvc_cells(obj, now),
        P::RoleBinding | P::ClusterRoleBinding => binding_cells(obj, now),
        P::Ingress => ingress_cells(obj, now),
        P::StorageClass => storageclass_cells(obj, now),
        P::ReplicationController => rc_cells(obj, now),
        P::PriorityClass => vec![
            name_cell(obj),
            json!(int(obj, &["value"])),
            Value::Bool(boolean(obj, &["globalDefault"]).unwrap_or(false)),
            age_cell(obj, now),
            sv(or_default(
                st(obj, &["preemptionPolicy"]),
                "PreemptLowerPriority",
            )),
        ],
        P::PodDisruptionBudget => pdb_cells(obj, now),
        P::CertificateSigningRequest => csr_cells(obj, now),
        P::IngressClass => ingressclass_cells(obj, now),
        P::NetworkPolicy => vec![
            name_cell(obj),
            Value::String(format_label_selector(at(obj, &["spec", "podSelector"]))),
            age_cell(obj, now),
        ],
        P::ControllerRevision => controllerrevision_cells(obj, now),
        P::RuntimeClass => vec![
            name_cell(obj),
            sv(st(obj, &["handler"])),
            age_cell(obj, now),
        ],
        P::Webhook => vec![
            name_cell(obj),
            json!(list(obj, &["webhooks"]).len() as i64),
            age_cell(obj, now),
        ],
        P::PodTemplate => {
            let (names, images) = container_cells(list(obj, &["template", "spec", "containers"]));
            vec![
                name_cell(obj),
                Value::String(names),
                Value::String(images),
                Value::String(format_labels(at(obj, &["template", "metadata", "labels"]))),
            ]
        }
        P::ResourceQuota => resourcequota_cells(obj, now),
        P::HorizontalPodAutoscaler => hpa_cells(obj, now),
        P::CsiDriver => csidriver_cells(obj, now),
        P::CsiNode => vec![
            name_cell(obj),
            json!(list(obj, &["spec", "drivers"]).len() as i64),
            age_cell(obj, now),
        ],
        P::VolumeAttachment => vec![
            name_cell(obj),
            sv(st(obj, &["spec", "attacher"])),
            sv(st(obj, &["spec", "source", "persistentVolumeName"])),
            sv(st(obj, &["spec", "nodeName"])),
            Value::Bool(boolean(obj, &["status", "attached"]).unwrap_or(false)),
            age_cell(obj, now),
        ],
        P::FlowSchema => flowschema_cells(obj, now),
        P::PriorityLevel => prioritylevel_cells(obj, now),
        P::ComponentStatus => componentstatus_cells(obj),
        P::Default => vec![name_cell(obj), Value::String(created_at(obj))],
    }
}

/// Optional row conditions: upstream marks Succeeded/Failed pods `Completed`; None otherwise.
pub fn row_conditions(group: &str, resource: &str, obj: &Value) -> Option<Value> {
    if printer(group, resource) != Printer::Pod {
        return None;
    }
    let (reason, message) = match st(obj, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{
        "type": "Completed",
        "status": "True",
        "reason": reason,
        "message": message,
    }]))
}

// ---------------------------------------------------------------------------------------------
// Durations and ages
// ---------------------------------------------------------------------------------------------

/// Upstream's human duration (apimachinery `duration.HumanDuration`) for a non-negative
/// duration: ~2-3 significant figures.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, dy);
    }
    format!("{}y", hours / 24 / 365)
}

/// HumanDuration for a signed duration: upstream tolerates up to ~2s of clock skew ("0s")
/// before answering `<invalid>`.
fn signed_human_duration(d: time::Duration) -> String {
    // Go's int(d.Seconds()) truncates toward zero, as whole_seconds does.
    let seconds = d.whole_seconds();
    if seconds < -1 {
        "<invalid>".to_string()
    } else if d.is_negative() {
        "0s".to_string()
    } else {
        human_duration(d.unsigned_abs())
    }
}

/// The age cell for a timestamp: `<unknown>` for a missing (or zero) timestamp, `<invalid>`
/// if it lies more than a second in the future.
pub fn age(ts: Option<&str>, now: OffsetDateTime) -> String {
    match ts.and_then(parse_time) {
        Some(t) => since(t, now),
        None => "<unknown>".to_string(),
    }
}

fn since(t: OffsetDateTime, now: OffsetDateTime) -> String {
    signed_human_duration(now - t)
}

/// Parses an RFC3339 timestamp; Go's zero time (year 1) counts as unset, like `IsZero`.
fn parse_time(s: &str) -> Option<OffsetDateTime> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    if t == zero_time() { None } else { Some(t) }
}

fn zero_time() -> OffsetDateTime {
    // 0001-01-01T00:00:00Z; built from a Unix offset so no fallible constructor is needed.
    OffsetDateTime::from_unix_timestamp(-62_135_596_800).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC3339 in UTC without fractional seconds, as Go's `time.RFC3339` prints.
fn rfc3339_utc(t: OffsetDateTime) -> String {
    crate::common::clock::rfc3339(t)
}

/// The default table's "Created At" cell (`CreationTimestamp.UTC().Format(RFC3339)`).
fn created_at(obj: &Value) -> String {
    match at(obj, &["metadata", "creationTimestamp"]).and_then(Value::as_str) {
        Some(s) => match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => rfc3339_utc(t),
            // Not parseable: show what is stored rather than inventing a time.
            Err(_) => s.to_string(),
        },
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// JSON accessors (never panic; missing or mistyped → zero value)
// ---------------------------------------------------------------------------------------------

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.as_object()?.get(*key)?;
    }
    if cur.is_null() { None } else { Some(cur) }
}

fn st<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

fn int_opt(v: &Value, path: &[&str]) -> Option<i64> {
    match at(v, path)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn int(v: &Value, path: &[&str]) -> i64 {
    int_opt(v, path).unwrap_or(0)
}

fn boolean(v: &Value, path: &[&str]) -> Option<bool> {
    at(v, path).and_then(Value::as_bool)
}

fn list<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn map_len(v: &Value, path: &[&str]) -> usize {
    at(v, path)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

/// A scalar rendered as Go would print it (string as is, numbers/bools in decimal/text).
fn scalar(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// `resource.Quantity.String()` of a possibly missing quantity (zero value prints "0").
fn quantity(v: Option<&Value>) -> String {
    let s = scalar(v);
    if s.is_empty() { "0".to_string() } else { s }
}

/// The value upstream's defaulting would have stored when the field is empty/missing.
fn or_default<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

fn sv(s: &str) -> Value {
    Value::String(s.to_string())
}

fn name_cell(obj: &Value) -> Value {
    sv(st(obj, &["metadata", "name"]))
}

fn age_cell(obj: &Value, now: OffsetDateTime) -> Value {
    Value::String(age(
        at(obj, &["metadata", "creationTimestamp"]).and_then(Value::as_str),
        now,
    ))
}

fn ts_at(v: &Value, path: &[&str]) -> Option<OffsetDateTime> {
    at(v, path).and_then(Value::as_str).and_then(parse_time)
}

/// `translateTimestampSince` of a field.
fn age_at(v: &Value, path: &[&str], now: OffsetDateTime) -> String {
    match ts_at(v, path) {
        Some(t) => since(t, now),
        None => "<unknown>".to_string(),
    }
}

fn has(v: &Value, path: &[&str]) -> bool {
    at(v, path).is_some()
}

// ---------------------------------------------------------------------------------------------
// Shared formatting (labels, selectors, containers)
// ---------------------------------------------------------------------------------------------

/// `labels.FormatLabels`: sorted `k=v` joined by ",", `<none>` when empty.
fn format_labels(m: Option<&Value>) -> String {
    let Some(map) = m.and_then(Value::as_object) else {
        return "<none>".to_string();
    };
    if map.is_empty() {
        return "<none>".to_string();
    }
    let mut pairs: Vec<(&String, String)> = map.iter().map(|(k, v)| (k, scalar(Some(v)))).collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `metav1.LabelSelectorAsSelector(sel).String()`; Err when the selector is invalid.
fn selector_string(sel: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = sel else {
        return Ok(String::new());
    };
    if !sel.is_object() {
        return Err(());
    }
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = at(sel, &["matchLabels"]).and_then(Value::as_object) {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", scalar(Some(v)))));
        }
    }
    for e in list(sel, &["matchExpressions"]) {
        let key = st(e, &["key"]);
        let mut values: Vec<String> = list(e, &["values"])
            .iter()
            .map(|v| scalar(Some(v)))
            .collect();
        values.sort();
        let text = match st(e, &["operator"]) {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        reqs.push((key.to_string(), text));
    }
    // The internal selector keeps requirements sorted by key.
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when invalid.
fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
        Err(()) => "<error>".to_string(),
    }
}

/// `layoutContainerCells`: names and images joined by ",".
fn container_cells(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| st(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| st(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// Wide cells shared by the workload printers: Containers, Images (from a pod template).
fn template_cells(obj: &Value, template: &[&str]) -> (Value, Value) {
    let mut path: Vec<&str> = template.to_vec();
    path.extend_from_slice(&["spec", "containers"]);
    let (names, images) = container_cells(list(obj, &path));
    (Value::String(names), Value::String(images))
}

/// `listWithMoreString`-style list: first 3 items, then ` + N more...`.
fn list_with_more(items: &[String], empty: &str) -> String {
    const MAX: usize = 3;
    if items.len() > MAX {
        return format!("{} + {} more...", items[..MAX].join(","), items.len() - MAX);
    }
    if items.is_empty() {
        return empty.to_string();
    }
    items.join(",")
}

/// `net.JoinHostPort`: brackets IPv6 literals.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Load-balancer ingress points (IP, else hostname), sorted and de-duplicated. The server
/// prints with Wide=true, so upstream's 16-character clipping never applies.
fn load_balancer_string(obj: &Value) -> String {
    let mut set = BTreeSet::new();
    for ing in list(obj, &["status", "loadBalancer", "ingress"]) {
        let ip = st(ing, &["ip"]);
        let host = st(ing, &["hostname"]);
        if !ip.is_empty() {
            set.insert(ip.to_string());
        } else if !host.is_empty() {
            set.insert(host.to_string());
        }
    }
    set.into_iter().collect::<Vec<_>>().join(",")
}

// ---------------------------------------------------------------------------------------------
// Per-resource printers
// ---------------------------------------------------------------------------------------------

/// Present and an object (a `null` or absent state counts as unset, like a nil pointer).
fn obj_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    at(v, path).filter(|x| x.is_object())
}

fn pod_cells(pod: &Value, now: OffsetDateTime) -> Vec<Value> {
    let init_specs = list(pod, &["spec", "initContainers"]);
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| st(c, &["name"]) == name && st(c, &["restartPolicy"]) == "Always")
    };
    let total = list(pod, &["spec", "containers"]).len()
        + init_specs
            .iter()
            .filter(|c| st(c, &["restartPolicy"]) == "Always")
            .count();
    let mut ready = 0usize;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<OffsetDateTime> = None;
    let mut last_sidecar_restart: Option<OffsetDateTime> = None;
    let newer = |cur: Option<OffsetDateTime>, t: Option<OffsetDateTime>| match (cur, t) {
        (Some(a), Some(b)) if b > a => Some(b),
        (None, Some(b)) => Some(b),
        (a, _) => a,
    };

    let phase = st(pod, &["status", "phase"]);
    let mut reason = phase.to_string();
    let status_reason = st(pod, &["status", "reason"]);
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    let conditions = list(pod, &["status", "conditions"]);
    if conditions
        .iter()
        .any(|c| st(c, &["type"]) == "PodScheduled" && st(c, &["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (i, cs) in list(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = int(cs, &["restartCount"]);
        let finished = ts_at(cs, &["lastState", "terminated", "finishedAt"]);
        restarts = restarts.saturating_add(count);
        last_restart = newer(last_restart, finished);
        let sidecar = is_sidecar(st(cs, &["name"]));
        if sidecar {
            sidecar_restarts = sidecar_restarts.saturating_add(count);
            last_sidecar_restart = newer(last_sidecar_restart, finished);
        }
        let terminated = obj_at(cs, &["state", "terminated"]);
        let waiting_reason = st(cs, &["state", "waiting", "reason"]);
        match terminated {
            Some(t) if int(t, &["exitCode"]) == 0 => continue,
            _ if sidecar && boolean(cs, &["started"]) == Some(true) => {
                if boolean(cs, &["ready"]) == Some(true) {
                    ready += 1;
                }
                continue;
            }
            Some(t) => {
                let r = st(t, &["reason"]);
                reason = if !r.is_empty() {
                    format!("Init:{r}")
                } else if int(t, &["signal"]) != 0 {
                    format!("Init:Signal:{}", int(t, &["signal"]))
                } else {
                    format!("Init:ExitCode:{}", int(t, &["exitCode"]))
                };
            }
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                reason = format!("Init:{waiting_reason}");
            }
            None => reason = format!("Init:{}/{}", i, init_specs.len()),
        }
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .find(|c| st(c, &["type"]) == "Initialized")
        .is_some_and(|c| st(c, &["status"]) == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in list(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts = restarts.saturating_add(int(cs, &["restartCount"]));
            last_restart = newer(
                last_restart,
                ts_at(cs, &["lastState", "terminated", "finishedAt"]),
            );
            let waiting_reason = st(cs, &["state", "waiting", "reason"]);
            let terminated = obj_at(cs, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let r = st(t, &["reason"]);
                reason = if !r.is_empty() {
                    r.to_string()
                } else if int(t, &["signal"]) != 0 {
                    format!("Signal:{}", int(t, &["signal"]))
                } else {
                    format!("ExitCode:{}", int(t, &["exitCode"]))
                };
            } else if boolean(cs, &["ready"]) == Some(true)
                && obj_at(cs, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        // A Completed container alongside a still-running one: the pod is not done yet.
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| st(c, &["type"]) == "Ready" && st(c, &["status"]) == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    let deleting = has(pod, &["metadata", "deletionTimestamp"]);
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(t, now)),
        _ => restarts.to_string(),
    };

    // The v1→internal conversion fills podIPs from podIP when only the latter is set.
    let mut ip = list(pod, &["status", "podIPs"])
        .first()
        .map(|p| st(p, &["ip"]))
        .unwrap_or("");
    if ip.is_empty() {
        ip = st(pod, &["status", "podIP"]);
    }
    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    let gates = list(pod, &["spec", "readinessGates"]);
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                let t = st(g, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| st(c, &["type"]) == t)
                    .is_some_and(|c| st(c, &["status"]) == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };

    vec![
        name_cell(pod),
        Value::String(format!("{ready}/{total}")),
        Value::String(reason),
        Value::String(restarts_cell),
        age_cell(pod, now),
        Value::String(or_none(ip)),
        Value::String(or_none(st(pod, &["spec", "nodeName"]))),
        Value::String(or_none(st(pod, &["status", "nominatedNodeName"]))),
        Value::String(gates_cell),
    ]
}

fn node_cells(node: &Value, now: OffsetDateTime) -> Vec<Value> {
    // Upstream builds a type→condition map, so the last Ready condition wins.
    let mut status: Vec<&str> = Vec::new();
    if let Some(cond) = list(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| st(c, &["type"]) == "Ready")
    {
        status.push(if st(cond, &["status"]) == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if boolean(node, &["spec", "unschedulable"]) == Some(true) {
        status.push("SchedulingDisabled");
    }

    let mut roles = BTreeSet::new();
    if let Some(labels) = at(node, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                let v = scalar(Some(v));
                if !v.is_empty() {
                    roles.insert(v);
                }
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };

    let address = |kind: &str| {
        list(node, &["status", "addresses"])
            .iter()
            .find(|a| st(a, &["type"]) == kind)
            .map_or_else(|| "<none>".to_string(), |a| st(a, &["address"]).to_string())
    };
    let info = |field: &str| {
        let v = st(node, &["status", "nodeInfo", field]);
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };

    vec![
        name_cell(node),
        Value::String(status.join(",")),
        Value::String(roles),
        age_cell(node, now),
        sv(st(node, &["status", "nodeInfo", "kubeletVersion"])),
        Value::String(address("InternalIP")),
        Value::String(address("ExternalIP")),
        Value::String(info("osImage")),
        Value::String(info("kernelVersion")),
        Value::String(info("containerRuntimeVersion")),
    ]
}

/// The Service type, defaulted to ClusterIP as upstream defaulting would have stored it.
fn service_type(svc: &Value) -> &str {
    match st(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        t => t,
    }
}

fn service_external_ip(svc: &Value) -> String {
    let external: Vec<String> = list(svc, &["spec", "externalIPs"])
        .iter()
        .map(|v| scalar(Some(v)))
        .collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_string(svc);
            if !external.is_empty() {
                let mut all: Vec<String> = Vec::new();
                if !lb.is_empty() {
                    all.extend(lb.split(',').map(str::to_string));
                }
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => st(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `makePortString`: `port/PROTO` or `port:nodePort/PROTO`, joined by ",".
fn service_ports(svc: &Value) -> String {
    list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int(p, &["port"]);
            let proto = match st(p, &["protocol"]) {
                "" => "TCP",
                x => x,
            };
            let node_port = int(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn service_cells(svc: &Value, now: OffsetDateTime) -> Vec<Value> {
    let mut cluster_ip = list(svc, &["spec", "clusterIPs"])
        .first()
        .map(|v| scalar(Some(v)))
        .unwrap_or_default();
    if cluster_ip.is_empty() {
        // Only clusterIP stored: upstream's create path would have mirrored it into clusterIPs.
        cluster_ip = st(svc, &["spec", "clusterIP"]).to_string();
    }
    if cluster_ip.is_empty() {
        cluster_ip = "<none>".to_string();
    }
    let mut ports = service_ports(svc);
    if ports.is_empty() {
        ports = "<none>".to_string();
    }
    vec![
        name_cell(svc),
        sv(service_type(svc)),
        Value::String(cluster_ip),
        Value::String(service_external_ip(svc)),
        Value::String(ports),
        age_cell(svc, now),
        Value::String(format_labels(at(svc, &["spec", "selector"]))),
    ]
}

/// `formatEndpoints(ep, nil)`: up to three `ip:port`, then ` + N more...`; `<none>` without
/// subsets.
fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = list(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut items: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addrs = list(ss, &["addresses"]);
        let ports = list(ss, &["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addrs.len();
            for a in addrs {
                if items.len() == MAX {
                    more = true;
                    break;
                }
                items.push(st(a, &["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if items.len() == MAX {
                    more = true;
                    break;
                }
                items.push(join_host_port(st(a, &["ip"]), int(p, &["port"])));
            }
        }
    }
    let joined = items.join(",");
    if more {
        format!("{joined} + {} more...", count.saturating_sub(MAX))
    } else {
        joined
    }
}

fn endpointslice_cells(es: &Value, now: OffsetDateTime) -> Vec<Value> {
    let ports: Vec<String> = list(es, &["ports"])
        .iter()
        .map(|p| match int_opt(p, &["port"]) {
            Some(n) => n.to_string(),
            None => match at(p, &["name"]).and_then(Value::as_str) {
                Some(name) => name.to_string(),
                None => "*".to_string(),
            },
        })
        .collect();
    let endpoints: Vec<String> = list(es, &["endpoints"])
        .iter()
        .flat_map(|e| list(e, &["addresses"]).iter().map(|a| scalar(Some(a))))
        .collect();
    vec![
        name_cell(es),
        sv(st(es, &["addressType"])),
        Value::String(list_with_more(&ports, "<unset>")),
        Value::String(list_with_more(&endpoints, "<unset>")),
        age_cell(es, now),
    ]
}

/// First non-empty string among alternative paths (events come in core and events.k8s.io
/// shapes).
fn first_str<'a>(v: &'a Value, paths: &[&[&str]]) -> &'a str {
    paths
        .iter()
        .map(|p| st(v, p))
        .find(|s| !s.is_empty())
        .unwrap_or("")
}

fn event_cells(ev: &Value, now: OffsetDateTime) -> Vec<Value> {
    let first_ts =
        ts_at(ev, &["firstTimestamp"]).or_else(|| ts_at(ev, &["deprecatedFirstTimestamp"]));
    let first = match first_ts {
        Some(t) => since(t, now),
        None => age_at(ev, &["eventTime"], now),
    };
    let last_ts = ts_at(ev, &["lastTimestamp"]).or_else(|| ts_at(ev, &["deprecatedLastTimestamp"]));
    let mut last = match last_ts {
        Some(t) => since(t, now),
        None => first.clone(),
    };
    let mut count = int_opt(ev, &["count"])
        .or_else(|| int_opt(ev, &["deprecatedCount"]))
        .unwrap_or(0);
    if obj_at(ev, &["series"]).is_some() {
        last = age_at(ev, &["series", "lastObservedTime"], now);
        count = int(ev, &["series", "count"]);
    } else if count == 0 {
        // Singleton events don't have a count set in the new API.
        count = 1;
    }

    let kind = first_str(ev, &[&["involvedObject", "kind"], &["regarding", "kind"]]);
    let obj_name = first_str(ev, &[&["involvedObject", "name"], &["regarding", "name"]]);
    let target = if obj_name.is_empty() {
        kind.to_lowercase()
    } else {
        format!("{}/{obj_name}", kind.to_lowercase())
    };
    let field_path = first_str(
        ev,
        &[
            &["involvedObject", "fieldPath"],
            &["regarding", "fieldPath"],
        ],
    );
    let component = first_str(
        ev,
        &[
            &["source", "component"],
            &["deprecatedSource", "component"],
            &["reportingComponent"],
            &["reportingController"],
        ],
    );
    let host = first_str(
        ev,
        &[
            &["source", "host"],
            &["deprecatedSource", "host"],
            &["reportingInstance"],
        ],
    );
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    let message = first_str(ev, &[&["message"], &["note"]]).trim().to_string();

    vec![
        Value::String(last),
        sv(st(ev, &["type"])),
        sv(st(ev, &["reason"])),
        Value::String(target),
        sv(field_path),
        Value::String(source),
        Value::String(message),
        Value::String(first),
        json!(count),
        name_cell(ev),
    ]
}

/// spec.replicas as stored, or the API default of 1 that defaulting would have written.
fn desired_replicas(obj: &Value) -> i64 {
    int_opt(obj, &["spec", "replicas"]).unwrap_or(1)
}

fn deployment_cells(d: &Value, now: OffsetDateTime) -> Vec<Value> {
    let (names, images) = template_cells(d, &["spec", "template"]);
    // Deployments print the raw selector string (no `<none>`), `<invalid>` on error.
    let selector =
        selector_string(at(d, &["spec", "selector"])).unwrap_or_else(|()| "<invalid>".to_string());
    vec![
        name_cell(d),
        Value::String(format!(
            "{}/{}",
            int(d, &["status", "readyReplicas"]),
            desired_replicas(d)
        )),
        json!(int(d, &["status", "updatedReplicas"])),
        json!(int(d, &["status", "availableReplicas"])),
        age_cell(d, now),
        names,
        images,
        Value::String(selector),
    ]
}

fn replicaset_cells(rs: &Value, now: OffsetDateTime) -> Vec<Value> {
    let (names, images) = template_cells(rs, &["spec", "template"]);
    vec![
        name_cell(rs),
        json!(desired_replicas(rs)),
        json!(int(rs, &["status", "replicas"])),
        json!(int(rs, &["status", "readyReplicas"])),
        age_cell(rs, now),
        names,
        images,
        Value::String(format_label_selector(at(rs, &["spec", "selector"]))),
    ]
}

fn rc_cells(rc: &Value, now: OffsetDateTime) -> Vec<Value> {
    let (names, images) = template_cells(rc, &["spec", "template"]);
    vec![
        name_cell(rc),
        json!(desired_replicas(rc)),
        json!(int(rc, &["status", "replicas"])),
        json!(int(rc, &["status", "readyReplicas"])),
        age_cell(rc, now),
        names,
        images,
        // RC selectors are plain label maps.
        Value::String(format_labels(at(rc, &["spec", "selector"]))),
    ]
}

fn statefulset_cells(ss: &Value, now: OffsetDateTime) -> Vec<Value> {
    let (names, images) = template_cells(ss, &["spec", "template"]);
    vec![
        name_cell(ss),
        Value::String(format!(
            "{}/{}",
            int(ss, &["status", "readyReplicas"]),
            desired_replicas(ss)
        )),
        age_cell(ss, now),
        names,
        images,
    ]
}

fn daemonset_cells(ds: &Value, now: OffsetDateTime) -> Vec<Value> {
    let (names, images) = template_cells(ds, &["spec", "template"]);
    vec![
        name_cell(ds),
        json!(int(ds, &["status", "desiredNumberScheduled"])),
        json!(int(ds, &["status", "currentNumberScheduled"])),
        json!(int(ds, &["status", "numberReady"])),
        json!(int(ds, &["status", "updatedNumberScheduled"])),
        json!(int(ds, &["status", "numberAvailable"])),
        Value::String(format_labels(at(
            ds,
            &["spec", "template", "spec", "nodeSelector"],
        ))),
        age_cell(ds, now),
        names,
        images,
        Value::String(format_label_selector(at(ds, &["spec", "selector"]))),
    ]
}

/// True when the condition of that type exists and is True (first match decides).
fn has_condition(obj: &Value, type_: &str) -> bool {
    list(obj, &["status", "conditions"])
        .iter()
        .find(|c| st(c, &["type"]) == type_)
        .is_some_and(|c| st(c, &["status"]) == "True")
}

fn job_cells(job: &Value, now: OffsetDateTime) -> Vec<Value> {
    let succeeded = int(job, &["status", "succeeded"]);
    let completions = match int_opt(job, &["spec", "completions"]) {
        Some(n) => format!("{succeeded}/{n}"),
        None => {
            let parallelism = int(job, &["spec", "parallelism"]);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let duration = match (
        ts_at(job, &["status", "startTime"]),
        ts_at(job, &["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => signed_human_duration(now - start),
        (Some(start), Some(done)) => signed_human_duration(done - start),
    };
    let status = if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if has(job, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = template_cells(job, &["spec", "template"]);
    vec![
        name_cell(job),
        sv(status),
        Value::String(completions),
        Value::String(duration),
        age_cell(job, now),
        names,
        images,
        Value::String(format_label_selector(at(job, &["spec", "selector"]))),
    ]
}

fn cronjob_cells(cj: &Value, now: OffsetDateTime) -> Vec<Value> {
    let last_schedule = if has(cj, &["status", "lastScheduleTime"]) {
        age_at(cj, &["status", "lastScheduleTime"], now)
    } else {
        "<none>".to_string()
    };
    let tz = match at(cj, &["spec", "timeZone"]).and_then(Value::as_str) {
        Some(tz) => tz.to_string(),
        None => "<none>".to_string(),
    };
    // printBoolPtr: the cell is the string True/False/<unset> despite the boolean column.
    let suspend = match boolean(cj, &["spec", "suspend"]) {
        Some(true) => "True",
        Some(false) => "False",
        // Defaulting stores false; unset only for objects that skipped it.
        None => "False",
    };
    let (names, images) = template_cells(cj, &["spec", "jobTemplate", "spec", "template"]);
    vec![
        name_cell(cj),
        sv(st(cj, &["spec", "schedule"])),
        Value::String(tz),
        sv(suspend),
        json!(list(cj, &["status", "active"]).len() as i64),
        Value::String(last_schedule),
        age_cell(cj, now),
        names,
        images,
        Value::String(format_label_selector(at(
            cj,
            &["spec", "jobTemplate", "spec", "selector"],
        ))),
    ]
}

/// `helper.GetAccessModesAsString`: RWO, ROX, RWX, RWOP in that order, de-duplicated.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(long, _)| has(long))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The beta storage-class annotation wins over spec.storageClassName.
fn storage_class(obj: &Value) -> String {
    if let Some(v) = at(obj, &["metadata", "annotations"])
        .and_then(Value::as_object)
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
    {
        return scalar(Some(v));
    }
    st(obj, &["spec", "storageClassName"]).to_string()
}

fn unset_or(v: Option<&Value>) -> String {
    match v.and_then(Value::as_str) {
        Some(s) => s.to_string(),
        None => "<unset>".to_string(),
    }
}

fn pv_cells(pv: &Value, now: OffsetDateTime) -> Vec<Value> {
    let claim = if obj_at(pv, &["spec", "claimRef"]).is_some() {
        format!(
            "{}/{}",
            st(pv, &["spec", "claimRef", "namespace"]),
            st(pv, &["spec", "claimRef", "name"])
        )
    } else {
        String::new()
    };
    let phase = if has(pv, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else {
        or_default(st(pv, &["status", "phase"]), "Pending")
    };
    vec![
        name_cell(pv),
        Value::String(quantity(at(pv, &["spec", "capacity", "storage"]))),
        Value::String(access_modes(list(pv, &["spec", "accessModes"]))),
        sv(or_default(
            st(pv, &["spec", "persistentVolumeReclaimPolicy"]),
            "Retain",
        )),
        sv(phase),
        Value::String(claim),
        Value::String(storage_class(pv)),
        Value::String(unset_or(at(pv, &["spec", "volumeAttributesClassName"]))),
        sv(st(pv, &["status", "reason"])),
        age_cell(pv, now),
        sv(or_default(st(pv, &["spec", "volumeMode"]), "Filesystem")),
    ]
}

fn pvc_cells(pvc: &Value, now: OffsetDateTime) -> Vec<Value> {
    let phase = if has(pvc, &["metadata", "deletionTimestamp"]) {
        "Terminating"
    } else {
        or_default(st(pvc, &["status", "phase"]), "Pending")
    };
    let volume = st(pvc, &["spec", "volumeName"]);
    // Capacity and access modes are only shown once the claim is bound to a volume.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(at(pvc, &["status", "capacity", "storage"])),
            access_modes(list(pvc, &["status", "accessModes"])),
        )
    };
    let class = match at(pvc, &["metadata", "annotations"])
        .and_then(Value::as_object)
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
    {
        Some(v) => scalar(Some(v)),
        None => st(pvc, &["spec", "storageClassName"]).to_string(),
    };
    vec![
        name_cell(pvc),
        sv(phase),
        sv(volume),
        Value::String(capacity),
        Value::String(modes),
        Value::String(class),
        Value::String(unset_or(at(pvc, &["spec", "volumeAttributesClassName"]))),
        age_cell(pvc, now),
        sv(or_default(st(pvc, &["spec", "volumeMode"]), "Filesystem")),
    ]
}

fn binding_cells(b: &Value, now: OffsetDateTime) -> Vec<Value> {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for s in list(b, &["subjects"]) {
        let name = st(s, &["name"]);
        match st(s, &["kind"]) {
            "ServiceAccount" => sas.push(format!("{}/{name}", st(s, &["namespace"]))),
            "User" => users.push(name.to_string()),
            "Group" => groups.push(name.to_string()),
            _ => {}
        }
    }
    vec![
        name_cell(b),
        Value::String(format!(
            "{}/{}",
            st(b, &["roleRef", "kind"]),
            st(b, &["roleRef", "name"])
        )),
        age_cell(b, now),
        Value::String(users.join(", ")),
        Value::String(groups.join(", ")),
        Value::String(sas.join(", ")),
    ]
}

fn ingress_cells(ing: &Value, now: OffsetDateTime) -> Vec<Value> {
    const MAX: usize = 3;
    let class = match at(ing, &["spec", "ingressClassName"]).and_then(Value::as_str) {
        Some(c) => c.to_string(),
        None => "<none>".to_string(),
    };
    // formatHosts: hosts of the first three rules (empty hosts skipped), `*` if none.
    let rules = list(ing, &["spec", "rules"]);
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for r in rules {
        if hosts.len() == MAX {
            more = true;
        }
        let h = st(r, &["host"]);
        if !more && !h.is_empty() {
            hosts.push(h);
        }
    }
    let hosts = if hosts.is_empty() {
        "*".to_string()
    } else if more {
        format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
    } else {
        hosts.join(",")
    };
    let ports = if list(ing, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name_cell(ing),
        Value::String(class),
        Value::String(hosts),
        Value::String(load_balancer_string(ing)),
        sv(ports),
        age_cell(ing, now),
    ]
}

fn storageclass_cells(sc: &Value, now: OffsetDateTime) -> Vec<Value> {
    let annotations = at(sc, &["metadata", "annotations"]).and_then(Value::as_object);
    let is_default = annotations.is_some_and(|a| {
        [
            "storageclass.kubernetes.io/is-default-class",
            "storageclass.beta.kubernetes.io/is-default-class",
        ]
        .iter()
        .any(|k| a.get(*k).and_then(Value::as_str) == Some("true"))
    });
    let mut name = st(sc, &["metadata", "name"]).to_string();
    if is_default {
        name.push_str(" (default)");
    }
    // Unset policies print their API defaults.
    let reclaim = at(sc, &["reclaimPolicy"])
        .and_then(Value::as_str)
        .unwrap_or("Delete");
    let binding = at(sc, &["volumeBindingMode"])
        .and_then(Value::as_str)
        .unwrap_or("Immediate");
    vec![
        Value::String(name),
        sv(st(sc, &["provisioner"])),
        sv(reclaim),
        sv(binding),
        Value::Bool(boolean(sc, &["allowVolumeExpansion"]).unwrap_or(false)),
        age_cell(sc, now),
    ]
}

fn pdb_cells(pdb: &Value, now: OffsetDateTime) -> Vec<Value> {
    let int_or_string = |path: &[&str]| match at(pdb, path) {
        Some(v) => scalar(Some(v)),
        None => "N/A".to_string(),
    };
    vec![
        name_cell(pdb),
        Value::String(int_or_string(&["spec", "minAvailable"])),
        Value::String(int_or_string(&["spec", "maxUnavailable"])),
        json!(int(pdb, &["status", "disruptionsAllowed"])),
        age_cell(pdb, now),
    ]
}

fn csr_cells(csr: &Value, now: OffsetDateTime) -> Vec<Value> {
    let (mut approved, mut denied, mut failed) = (false, false, false);
    for c in list(csr, &["status", "conditions"]) {
        match st(c, &["type"]) {
            "Approved" => approved = true,
            "Denied" => denied = true,
            "Failed" => failed = true,
            _ => {}
        }
    }
    // Order of precedence as upstream's extractCSRStatus.
    let mut status = if denied {
        "Denied"
    } else if approved {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if failed {
        status.push_str(",Failed");
    }
    if !st(csr, &["status", "certificate"]).is_empty() {
        status.push_str(",Issued");
    }
    let signer = match st(csr, &["spec", "signerName"]) {
        "" => "<none>",
        s => s,
    };
    let requested = match int_opt(csr, &["spec", "expirationSeconds"]) {
        Some(secs) => signed_human_duration(time::Duration::seconds(secs)),
        None => "<none>".to_string(),
    };
    vec![
        name_cell(csr),
        age_cell(csr, now),
        sv(signer),
        sv(st(csr, &["spec", "username"])),
        Value::String(requested),
        Value::String(status),
    ]
}

fn ingressclass_cells(ic: &Value, now: OffsetDateTime) -> Vec<Value> {
    let parameters = match obj_at(ic, &["spec", "parameters"]) {
        Some(p) => {
            let mut s = st(p, &["kind"]).to_string();
            if let Some(g) = at(p, &["apiGroup"]).and_then(Value::as_str) {
                s.push('.');
                s.push_str(g);
            }
            format!("{s}/{}", st(p, &["name"]))
        }
        None => "<none>".to_string(),
    };
    vec![
        name_cell(ic),
        sv(st(ic, &["spec", "controller"])),
        Value::String(parameters),
        age_cell(ic, now),
    ]
}

fn controllerrevision_cells(cr: &Value, now: OffsetDateTime) -> Vec<Value> {
    let controller = list(cr, &["metadata", "ownerReferences"])
        .iter()
        .find(|o| boolean(o, &["controller"]) == Some(true))
        .map_or_else(
            || "<none>".to_string(),
            |o| {
                let kind = st(o, &["kind"]);
                let name = st(o, &["name"]);
                // The group is the apiVersion's part before "/" (none for core "v1").
                let group = st(o, &["apiVersion"])
                    .split_once('/')
                    .map_or("", |(g, _)| g);
                if kind.is_empty() && group.is_empty() {
                    name.to_string()
                } else if group.is_empty() {
                    format!("{}/{name}", kind.to_lowercase())
                } else {
                    format!("{}.{}/{name}", kind.to_lowercase(), group.to_lowercase())
                }
            },
        );
    vec![
        name_cell(cr),
        Value::String(controller),
        json!(int(cr, &["revision"])),
        age_cell(cr, now),
    ]
}

fn resourcequota_cells(rq: &Value, now: OffsetDateTime) -> Vec<Value> {
    let mut requests: Vec<String> = Vec::new();
    let mut limits: Vec<String> = Vec::new();
    if let Some(hard) = at(rq, &["status", "hard"]).and_then(Value::as_object) {
        let mut names: Vec<&String> = hard.keys().collect();
        names.sort();
        for res in names {
            let used = quantity(at(rq, &["status", "used", res]));
            let limit = quantity(hard.get(res));
            let text = format!("{res}: {used}/{limit}");
            // Resources named "limits.*" go to the Limit column.
            if res.split('.').count() > 1 && res.split('.').next() == Some("limits") {
                limits.push(text);
            } else {
                requests.push(text);
            }
        }
    }
    vec![
        name_cell(rq),
        Value::String(requests.join(", ")),
        Value::String(limits.join(", ")),
        age_cell(rq, now),
    ]
}

/// `formatHPAMetrics` over autoscaling/v2 metrics (or the v1 CPU target).
fn hpa_metrics(hpa: &Value) -> String {
    const MAX: usize = 2;
    let specs = list(hpa, &["spec", "metrics"]);
    let statuses = list(hpa, &["status", "currentMetrics"]);
    if specs.is_empty() {
        // autoscaling/v1 objects carry a single CPU utilization target instead.
        if let Some(target) = int_opt(hpa, &["spec", "targetCPUUtilizationPercentage"]) {
            let current = int_opt(hpa, &["status", "currentCPUUtilizationPercentage"])
                .map_or_else(|| "<unknown>".to_string(), |c| format!("{c}%"));
            return format!("cpu: {current}/{target}%");
        }
        return "<none>".to_string();
    }
    let q = |v: &Value, path: &[&str]| scalar(at(v, path));
    let mut items: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let cur = |section: &str, field: &str| {
            status
                .and_then(|s| at(s, &[section, "current", field]))
                .map(|v| scalar(Some(v)))
        };
        let item = match st(spec, &["type"]) {
            kind @ ("External" | "Object") => {
                let section = if kind == "External" {
                    "external"
                } else {
                    "object"
                };
                if has(spec, &[section, "target", "averageValue"]) {
                    let current =
                        cur(section, "averageValue").unwrap_or_else(|| "<unknown>".to_string());
                    format!(
                        "{current}/{} (avg)",
                        q(spec, &[section, "target", "averageValue"])
                    )
                } else {
                    let current = if status.and_then(|s| obj_at(s, &[section])).is_some() {
                        cur(section, "value").unwrap_or_else(|| "0".to_string())
                    } else {
                        "<unknown>".to_string()
                    };
                    format!("{current}/{}", q(spec, &[section, "target", "value"]))
                }
            }
            "Pods" => {
                let current = if status.and_then(|s| obj_at(s, &["pods"])).is_some() {
                    cur("pods", "averageValue").unwrap_or_else(|| "0".to_string())
                } else {
                    "<unknown>".to_string()
                };
                format!("{current}/{}", q(spec, &["pods", "target", "averageValue"]))
            }
            kind @ ("Resource" | "ContainerResource") => {
                let section = if kind == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let res = st(spec, &[section, "name"]);
                if has(spec, &[section, "target", "averageValue"]) {
                    let current = if status.and_then(|s| obj_at(s, &[section])).is_some() {
                        cur(section, "averageValue").unwrap_or_else(|| "0".to_string())
                    } else {
                        "<unknown>".to_string()
                    };
                    format!(
                        "{res}: {current}/{}",
                        q(spec, &[section, "target", "averageValue"])
                    )
                } else {
                    let current = cur(section, "averageUtilization")
                        .map_or_else(|| "<unknown>".to_string(), |c| format!("{c}%"));
                    let target = int_opt(spec, &[section, "target", "averageUtilization"])
                        .map_or_else(|| "<auto>".to_string(), |t| format!("{t}%"));
                    format!("{res}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        items.push(item);
    }
    if items.len() > MAX {
        format!(
            "{} + {} more...",
            items[..MAX].join(", "),
            items.len() - MAX
        )
    } else {
        items.join(", ")
    }
}

fn hpa_cells(hpa: &Value, now: OffsetDateTime) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        st(hpa, &["spec", "scaleTargetRef", "kind"]),
        st(hpa, &["spec", "scaleTargetRef", "name"])
    );
    // minReplicas defaults to 1 in every autoscaling version.
    let min_pods = int_opt(hpa, &["spec", "minReplicas"])
        .unwrap_or(1)
        .to_string();
    vec![
        name_cell(hpa),
        Value::String(reference),
        Value::String(hpa_metrics(hpa)),
        Value::String(min_pods),
        json!(int(hpa, &["spec", "maxReplicas"])),
        json!(int(hpa, &["status", "currentReplicas"])),
        age_cell(hpa, now),
    ]
}

fn csidriver_cells(d: &Value, now: OffsetDateTime) -> Vec<Value> {
    let modes: Vec<String> = list(d, &["spec", "volumeLifecycleModes"])
        .iter()
        .map(|m| scalar(Some(m)))
        .collect();
    let modes = if modes.is_empty() {
        "<none>".to_string()
    } else {
        modes.join(",")
    };
    let tokens = match at(d, &["spec", "tokenRequests"]).and_then(Value::as_array) {
        Some(t) => t
            .iter()
            .map(|x| st(x, &["audience"]))
            .collect::<Vec<_>>()
            .join(","),
        None => "<unset>".to_string(),
    };
    vec![
        name_cell(d),
        Value::Bool(boolean(d, &["spec", "attachRequired"]).unwrap_or(true)),
        Value::Bool(boolean(d, &["spec", "podInfoOnMount"]).unwrap_or(false)),
        Value::Bool(boolean(d, &["spec", "storageCapacity"]).unwrap_or(false)),
        Value::String(tokens),
        Value::Bool(boolean(d, &["spec", "requiresRepublish"]).unwrap_or(false)),
        Value::String(modes),
        age_cell(d, now),
    ]
}

fn flowschema_cells(fs: &Value, now: OffsetDateTime) -> Vec<Value> {
    let distinguisher = match obj_at(fs, &["spec", "distinguisherMethod"]) {
        Some(d) => st(d, &["type"]).to_string(),
        None => "<none>".to_string(),
    };
    let missing = list(fs, &["status", "conditions"])
        .iter()
        .find(|c| st(c, &["type"]) == "Dangling")
        .map_or_else(|| "?".to_string(), |c| st(c, &["status"]).to_string());
    vec![
        name_cell(fs),
        sv(st(fs, &["spec", "priorityLevelConfiguration", "name"])),
        json!(int(fs, &["spec", "matchingPrecedence"])),
        Value::String(distinguisher),
        age_cell(fs, now),
        Value::String(missing),
    ]
}

fn prioritylevel_cells(pl: &Value, now: OffsetDateTime) -> Vec<Value> {
    let none = || sv("<none>");
    let (mut ncs, mut queues, mut hand, mut qll) = (none(), none(), none(), none());
    if obj_at(pl, &["spec", "limited"]).is_some() {
        ncs = json!(int(pl, &["spec", "limited", "nominalConcurrencyShares"]));
        let queuing = ["spec", "limited", "limitResponse", "queuing"];
        if obj_at(pl, &queuing).is_some() {
            let field = |f: &str| {
                let mut p = queuing.to_vec();
                p.push(f);
                json!(int(pl, &p))
            };
            queues = field("queues");
            hand = field("handSize");
            qll = field("queueLengthLimit");
        }
    }
    vec![
        name_cell(pl),
        sv(st(pl, &["spec", "type"])),
        ncs,
        queues,
        hand,
        qll,
        age_cell(pl, now),
    ]
}

fn componentstatus_cells(cs: &Value) -> Vec<Value> {
    let (mut status, mut message, mut error) = ("Unknown", "", "");
    if let Some(c) = list(cs, &["conditions"])
        .iter()
        .find(|c| st(c, &["type"]) == "Healthy")
    {
        status = if st(c, &["status"]) == "True" {
            "Healthy"
        } else {
            "Unhealthy"
        };
        message = st(c, &["message"]);
        error = st(c, &["error"]);
    }
    vec![name_cell(cs), sv(status), sv(message), sv(error)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2024-06-01T12:00:00Z", &Rfc3339).unwrap()
    }

    fn ago(secs: i64) -> String {
        rfc3339_utc(now() - time::Duration::seconds(secs))
    }

    fn strs(cells: &[Value]) -> Vec<String> {
        cells
            .iter()
            .map(|c| match c {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn human_duration_boundaries() {
        let h = |s: u64| human_duration(Duration::from_secs(s));
        assert_eq!(h(0), "0s");
        assert_eq!(h(119), "119s");
        assert_eq!(h(120), "2m");
        assert_eq!(h(121), "2m1s");
        assert_eq!(h(599), "9m59s");
        assert_eq!(h(600), "10m");
        assert_eq!(h(3 * 3600 - 1), "179m");
        assert_eq!(h(3 * 3600), "3h");
        assert_eq!(h(3 * 3600 + 60), "3h1m");
        assert_eq!(h(8 * 3600 - 1), "7h59m");
        assert_eq!(h(8 * 3600), "8h");
        assert_eq!(h(48 * 3600 - 1), "47h");
        assert_eq!(h(48 * 3600), "2d");
        assert_eq!(h(49 * 3600), "2d1h");
        assert_eq!(h(8 * 86400 - 1), "7d23h");
        assert_eq!(h(8 * 86400), "8d");
        assert_eq!(h(2 * 365 * 86400 - 1), "729d");
        assert_eq!(h(2 * 365 * 86400), "2y");
        assert_eq!(h(2 * 365 * 86400 + 86400), "2y1d");
        assert_eq!(h(8 * 365 * 86400), "8y");
        assert_eq!(h(9 * 365 * 86400 + 86400), "9y");
        assert_eq!(human_duration(Duration::from_millis(1999)), "1s");
    }

    #[test]
    fn age_cells() {
        assert_eq!(age(None, now()), "<unknown>");
        assert_eq!(age(Some(""), now()), "<unknown>");
        assert_eq!(age(Some("garbage"), now()), "<unknown>");
        assert_eq!(age(Some("0001-01-01T00:00:00Z"), now()), "<unknown>");
        assert_eq!(age(Some(&ago(3600)), now()), "60m");
        assert_eq!(age(Some(&ago(-1)), now()), "0s");
        assert_eq!(age(Some(&ago(-2)), now()), "<invalid>");
        assert_eq!(age(Some("2024-06-01T11:59:00.5+00:00"), now()), "59s");
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "p", "creationTimestamp": ago(60)},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": status,
        })
    }

    fn pod_status(p: &Value) -> (String, String, String) {
        let c = strs(&cells("", "pods", p, now()));
        (c[1].clone(), c[2].clone(), c[3].clone())
    }

    #[test]
    fn pod_container_creating() {
        let p = pod(json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]
        }));
        assert_eq!(
            pod_status(&p),
            ("0/1".into(), "ContainerCreating".into(), "0".into())
        );
        let c = strs(&cells("", "pods", &p, now()));
        assert_eq!(c.len(), POD_COLUMNS.len());
        assert_eq!(c[0], "p");
        assert_eq!(c[4], "60s");
        assert_eq!(&c[5..], ["<none>", "<none>", "<none>", "<none>"]);
    }

    #[test]
    fn pod_crash_loop_with_restart_age() {
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [{"name": "c", "ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                    "finishedAt": ago(300)}}}]
        }));
        assert_eq!(
            pod_status(&p),
            ("0/1".into(), "CrashLoopBackOff".into(), "3 (5m ago)".into())
        );
    }

    #[test]
    fn pod_running_and_wide_cells() {
        let mut p = pod(json!({
            "phase": "Running",
            "podIP": "10.0.0.5",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "gate", "status": "True"}],
            "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": ago(30)}}}]
        }));
        p["spec"]["nodeName"] = json!("node-1");
        p["spec"]["readinessGates"] = json!([{"conditionType": "gate"}]);
        let c = strs(&cells("", "pods", &p, now()));
        assert_eq!(c[1..4], ["1/1", "Running", "0"]);
        assert_eq!(&c[5..], ["10.0.0.5", "node-1", "<none>", "1/1"]);
        assert_eq!(row_conditions("", "pods", &p), None);
    }

    #[test]
    fn pod_completed() {
        let p = pod(json!({
            "phase": "Succeeded",
            "containerStatuses": [{"name": "c", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]
        }));
        assert_eq!(
            pod_status(&p),
            ("0/1".into(), "Completed".into(), "0".into())
        );
        let conds = row_conditions("", "pods", &p).unwrap();
        assert_eq!(conds[0]["type"], "Completed");
        assert_eq!(conds[0]["reason"], "Succeeded");
        assert_eq!(conds[0]["status"], "True");
    }

    #[test]
    fn pod_completed_with_running_sibling() {
        let mut p = pod(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [
                {"name": "a", "ready": true, "state": {"running": {}}},
                {"name": "b", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ]
        }));
        p["spec"]["containers"] = json!([{"name": "a"}, {"name": "b"}]);
        assert_eq!(pod_status(&p).1, "NotReady");
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        assert_eq!(pod_status(&p).1, "Running");
    }

    #[test]
    fn pod_init_states() {
        let mut p = pod(json!({
            "phase": "Pending",
            "initContainerStatuses": [{"name": "init", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}}],
            "containerStatuses": [{"name": "c", "ready": false,
                "state": {"waiting": {"reason": "PodInitializing"}}}]
        }));
        p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
        assert_eq!(
            pod_status(&p),
            ("0/1".into(), "Init:0/1".into(), "0".into())
        );

        p["status"]["initContainerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        p["status"]["initContainerStatuses"][0]["restartCount"] = json!(2);
        assert_eq!(
            pod_status(&p),
            ("0/1".into(), "Init:CrashLoopBackOff".into(), "2".into())
        );

        p["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 1}});
        assert_eq!(pod_status(&p).1, "Init:ExitCode:1");
        p["status"]["initContainerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 137, "signal": 9}});
        assert_eq!(pod_status(&p).1, "Init:Signal:9");

        // Finished init container: regular containers decide.
        p["status"]["initContainerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        assert_eq!(pod_status(&p).1, "PodInitializing");
    }

    #[test]
    fn pod_sidecar_counts_toward_ready() {
        let mut p = pod(json!({
            "phase": "Running",
            "initContainerStatuses": [{"name": "side", "ready": true, "started": true,
                "restartCount": 1, "state": {"running": {}}}],
            "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                "state": {"running": {}}}]
        }));
        p["spec"]["initContainers"] = json!([{"name": "side", "restartPolicy": "Always"}]);
        assert_eq!(pod_status(&p), ("2/2".into(), "Running".into(), "1".into()));
    }

    #[test]
    fn pod_terminating_and_gated() {
        let mut p = pod(json!({
            "phase": "Running",
            "containerStatuses": [{"name": "c", "ready": true, "state": {"running": {}}}]
        }));
        p["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(pod_status(&p).1, "Terminating");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(pod_status(&p).1, "Unknown");

        let g = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]
        }));
        assert_eq!(pod_status(&g).1, "SchedulingGated");
    }

    #[test]
    fn pod_odd_types_do_not_panic() {
        for v in [
            json!(null),
            json!([]),
            json!({"status": "x", "spec": 3, "metadata": []}),
            json!({"status": {"containerStatuses": [1, "x", null, {"state": 5}]},
                   "spec": {"initContainers": "x"}}),
        ] {
            let c = cells("", "pods", &v, now());
            assert_eq!(c.len(), POD_COLUMNS.len());
            assert_eq!(c[4], "<unknown>");
        }
    }

    #[test]
    fn every_printer_fills_every_column() {
        let resources = [
            ("", "pods"),
            ("", "nodes"),
            ("", "namespaces"),
            ("", "services"),
            ("", "endpoints"),
            ("discovery.k8s.io", "endpointslices"),
            ("", "configmaps"),
            ("", "secrets"),
            ("", "serviceaccounts"),
            ("", "events"),
            ("events.k8s.io", "events"),
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("apps", "statefulsets"),
            ("apps", "daemonsets"),
            ("apps", "controllerrevisions"),
            ("batch", "jobs"),
            ("batch", "cronjobs"),
            ("coordination.k8s.io", "leases"),
            ("", "persistentvolumes"),
            ("", "persistentvolumeclaims"),
            ("", "replicationcontrollers"),
            ("", "podtemplates"),
            ("", "resourcequotas"),
            ("", "componentstatuses"),
            ("rbac.authorization.k8s.io", "rolebindings"),
            ("rbac.authorization.k8s.io", "clusterrolebindings"),
            ("rbac.authorization.k8s.io", "roles"),
            ("networking.k8s.io", "ingresses"),
            ("networking.k8s.io", "ingressclasses"),
            ("networking.k8s.io", "networkpolicies"),
            ("storage.k8s.io", "storageclasses"),
            ("storage.k8s.io", "csidrivers"),
            ("storage.k8s.io", "csinodes"),
            ("storage.k8s.io", "volumeattachments"),
            ("scheduling.k8s.io", "priorityclasses"),
            ("policy", "poddisruptionbudgets"),
            ("certificates.k8s.io", "certificatesigningrequests"),
            ("node.k8s.io", "runtimeclasses"),
            (
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
            ),
            ("autoscaling", "horizontalpodautoscalers"),
            ("flowcontrol.apiserver.k8s.io", "flowschemas"),
            (
                "flowcontrol.apiserver.k8s.io",
                "prioritylevelconfigurations",
            ),
            ("example.com", "widgets"),
        ];
        let odd = [
            json!({}),
            json!(null),
            json!({"metadata": {"name": 5}, "spec": [], "status": "x"}),
        ];
        for (g, r) in resources {
            let cols = columns(g, r);
            assert_eq!(
                column_definitions(g, r).as_array().unwrap().len(),
                cols.len()
            );
            assert!(
                cols.iter().filter(|c| c.format == "name").count() >= 1,
                "{g}/{r}"
            );
            for o in &odd {
                assert_eq!(cells(g, r, o, now()).len(), cols.len(), "{g}/{r}");
            }
        }
    }

    #[test]
    fn deployment_ready_and_wide() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(7200)},
            "spec": {"replicas": 3,
                "selector": {"matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                "template": {"spec": {"containers": [
                    {"name": "nginx", "image": "nginx:1"}, {"name": "side", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let c = cells("apps", "deployments", &d, now());
        assert_eq!(c[1], "2/3");
        assert_eq!(c[2], json!(3));
        assert_eq!(c[3], json!(2));
        assert_eq!(c[4], "120m");
        assert_eq!(c[5], "nginx,side");
        assert_eq!(c[6], "nginx:1,busybox");
        assert_eq!(c[7], "app=web,tier in (a,b)");
        let cols = columns("apps", "deployments");
        assert_eq!(
            cols.iter().map(|c| c.name).collect::<Vec<_>>(),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(cols[5].priority, 1);
        // Missing status: 0 ready of the defaulted 1 replica.
        let bare = json!({"metadata": {"name": "x"}});
        assert_eq!(cells("apps", "deployments", &bare, now())[1], "0/1");
    }

    #[test]
    fn service_ports_and_external_ip() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(30)},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP"},
                          {"port": 443, "nodePort": 30443, "protocol": "TCP"}]}
        });
        let c = strs(&cells("", "services", &svc, now()));
        assert_eq!(
            c,
            [
                "web",
                "NodePort",
                "10.96.0.10",
                "<none>",
                "80/TCP,443:30443/TCP",
                "30s",
                "app=web"
            ]
        );

        let lb = json!({"metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.11"]}});
        let c = strs(&cells("", "services", &lb, now()));
        assert_eq!(c[3], "<pending>");
        assert_eq!(c[4], "<none>");
        assert_eq!(c[6], "<none>");

        let lb2 = json!({"metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "externalIPs": ["5.6.7.8"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "a.example"}]}}});
        assert_eq!(
            cells("", "services", &lb2, now())[3],
            "1.2.3.4,a.example,5.6.7.8"
        );

        let ext = json!({"metadata": {"name": "e"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        let c = strs(&cells("", "services", &ext, now()));
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "db.example.com");

        let plain = json!({"metadata": {"name": "p"},
            "spec": {"clusterIP": "None", "externalIPs": ["1.1.1.1"], "ports": [{"port": 53, "protocol": "UDP"}]}});
        let c = strs(&cells("", "services", &plain, now()));
        assert_eq!(c[1..5], ["ClusterIP", "None", "1.1.1.1", "53/UDP"]);
    }

    #[test]
    fn node_status_and_roles() {
        let n = json!({
            "metadata": {"name": "n1", "creationTimestamp": ago(86400 * 3),
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "",
                           "kubernetes.io/role": "worker", "other": "x"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}, {"type": "Hostname", "address": "n1"}],
                "nodeInfo": {"kubeletVersion": "v1.32.4", "osImage": "Debian", "kernelVersion": "6.1",
                             "containerRuntimeVersion": "containerd://1.7"}}
        });
        let c = strs(&cells("", "nodes", &n, now()));
        assert_eq!(
            c,
            [
                "n1",
                "Ready,SchedulingDisabled",
                "control-plane,master,worker",
                "3d",
                "v1.32.4",
                "192.168.1.2",
                "<none>",
                "Debian",
                "6.1",
                "containerd://1.7"
            ]
        );
        let bare = json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let c = strs(&cells("", "nodes", &bare, now()));
        assert_eq!(c[1..3], ["NotReady", "<none>"]);
        assert_eq!(c[7], "<unknown>");
        let none = json!({"metadata": {"name": "n3"}});
        assert_eq!(cells("", "nodes", &none, now())[1], "Unknown");
    }

    #[test]
    fn configmap_and_secret_data_counts() {
        let cm = json!({"metadata": {"name": "cm", "creationTimestamp": ago(5)},
            "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        let c = cells("", "configmaps", &cm, now());
        assert_eq!(c, vec![json!("cm"), json!(3), json!("5s")]);
        let s = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
        let c = cells("", "secrets", &s, now());
        assert_eq!(c[1..3], [json!("Opaque"), json!(1)]);
        let sa = json!({"metadata": {"name": "default"}});
        assert_eq!(cells("", "serviceaccounts", &sa, now())[1], json!(0));
    }

    #[test]
    fn default_table_for_roles_and_unknown() {
        for (g, r) in [
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "clusterroles"),
            ("example.com", "widgets"),
        ] {
            let cols = columns(g, r);
            assert_eq!(cols.len(), 2);
            assert_eq!((cols[0].name, cols[0].format), ("Name", "name"));
            assert_eq!((cols[1].name, cols[1].type_), ("Created At", "date"));
        }
        let role = json!({"metadata": {"name": "r", "creationTimestamp": "2024-01-02T03:04:05Z"}});
        assert_eq!(
            cells("rbac.authorization.k8s.io", "roles", &role, now()),
            vec![json!("r"), json!("2024-01-02T03:04:05Z")]
        );
        let defs = column_definitions("rbac.authorization.k8s.io", "roles");
        assert_eq!(defs[0]["name"], "Name");
        assert_eq!(defs[0]["format"], "name");
        assert_eq!(defs[0]["priority"], 0);
        assert_eq!(defs[1]["type"], "date");
        assert_eq!(defs[1]["format"], "");
        assert_eq!(
            row_conditions("rbac.authorization.k8s.io", "roles", &role),
            None
        );
    }

    #[test]
    fn events_both_shapes() {
        let core = json!({
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{c}"},
            "reason": "Pulled", "type": "Normal", "message": " pulled \n",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(60), "count": 4
        });
        let c = strs(&cells("", "events", &core, now()));
        assert_eq!(
            c,
            [
                "60s",
                "Normal",
                "Pulled",
                "pod/web-1",
                "spec.containers{c}",
                "kubelet, n1",
                "pulled",
                "10m",
                "4",
                "e1"
            ]
        );
        let v1 = json!({
            "metadata": {"name": "e2"},
            "regarding": {"kind": "Node", "name": "n1"},
            "reason": "Started", "type": "Normal", "note": "hi",
            "reportingController": "ctrl", "eventTime": ago(30)
        });
        let c = strs(&cells("events.k8s.io", "events", &v1, now()));
        assert_eq!(c[0], "30s");
        assert_eq!(c[3], "node/n1");
        assert_eq!(c[5], "ctrl");
        assert_eq!(c[6], "hi");
        assert_eq!(c[8], "1");
        let cols = columns("", "events");
        assert_eq!(cols[0].name, "Last Seen");
        assert_eq!((cols[9].name, cols[9].priority), ("Name", 1));
    }

    #[test]
    fn jobs_and_cronjobs() {
        let j = json!({
            "metadata": {"name": "j", "creationTimestamp": ago(600)},
            "spec": {"completions": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u"}},
                     "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 1, "startTime": ago(600), "completionTime": ago(540),
                       "conditions": [{"type": "Complete", "status": "True"}]}
        });
        let c = strs(&cells("batch", "jobs", &j, now()));
        assert_eq!(
            c,
            [
                "j",
                "Complete",
                "1/1",
                "60s",
                "10m",
                "pi",
                "perl",
                "batch.kubernetes.io/controller-uid=u"
            ]
        );
        let running = json!({"metadata": {"name": "r"}, "spec": {"parallelism": 2},
            "status": {"startTime": ago(30)}});
        let c = strs(&cells("batch", "jobs", &running, now()));
        assert_eq!(c[1..4], ["Running", "0/1 of 2", "30s"]);

        let cj = json!({"metadata": {"name": "cj"},
            "spec": {"schedule": "*/1 * * * *", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
            "status": {"active": [{"name": "a"}], "lastScheduleTime": ago(45)}});
        let c = cells("batch", "cronjobs", &cj, now());
        assert_eq!(
            c[1..6],
            [
                json!("*/1 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("45s")
            ]
        );
        assert_eq!(c[9], "<none>");
    }

    #[test]
    fn endpoints_formatting() {
        let ep = json!({"metadata": {"name": "e"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}
        ]});
        assert_eq!(
            cells("", "endpoints", &ep, now())[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        let none = json!({"metadata": {"name": "e"}});
        assert_eq!(cells("", "endpoints", &none, now())[1], "<none>");
        let v6 = json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 53}]}]});
        assert_eq!(cells("", "endpoints", &v6, now())[1], "[fd00::1]:53");

        let es = json!({"metadata": {"name": "s"}, "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "x"}, {}],
            "endpoints": [{"addresses": ["1.1.1.1"]}]});
        let c = strs(&cells("discovery.k8s.io", "endpointslices", &es, now()));
        assert_eq!(c[1..4], ["IPv4", "80,x,*", "1.1.1.1"]);
        let empty = json!({"addressType": "IPv4"});
        assert_eq!(
            cells("discovery.k8s.io", "endpointslices", &empty, now())[2],
            "<unset>"
        );
    }

    #[test]
    fn storage_rbac_ingress_misc() {
        let sc = json!({"metadata": {"name": "local", "annotations":
            {"storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "rancher.io/local-path"});
        let c = cells("storage.k8s.io", "storageclasses", &sc, now());
        assert_eq!(
            c[..5],
            [
                json!("local (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("Immediate"),
                json!(false)
            ]
        );

        let rb = json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                         {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"},
                         {"kind": "User", "name": "bob"}]});
        let c = strs(&cells(
            "rbac.authorization.k8s.io",
            "rolebindings",
            &rb,
            now(),
        ));
        assert_eq!(c[1], "ClusterRole/view");
        assert_eq!(c[3..], ["alice, bob", "devs", "ns/sa"]);

        let ing = json!({"metadata": {"name": "i"}, "spec": {"rules": [{"host": "a.com"}, {}],
            "tls": [{"hosts": ["a.com"]}]}});
        let c = strs(&cells("networking.k8s.io", "ingresses", &ing, now()));
        assert_eq!(c[1..5], ["<none>", "a.com", "", "80, 443"]);

        let pvc = json!({"metadata": {"name": "c"}, "spec": {"volumeName": "pv1", "storageClassName": "local"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
        let c = strs(&cells("", "persistentvolumeclaims", &pvc, now()));
        assert_eq!(c[1..7], ["Bound", "pv1", "1Gi", "RWO", "local", "<unset>"]);
        assert_eq!(c[8], "Filesystem");

        let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Delete",
            "claimRef": {"namespace": "ns", "name": "c"}, "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        let c = strs(&cells("", "persistentvolumes", &pv, now()));
        assert_eq!(
            c[1..9],
            [
                "1Gi", "RWO,RWX", "Delete", "Bound", "ns/c", "", "<unset>", ""
            ]
        );
        assert_eq!(c[10], "Filesystem");

        let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": 1}, "status": {"disruptionsAllowed": 0}});
        let c = cells("policy", "poddisruptionbudgets", &pdb, now());
        assert_eq!(c[1..4], [json!("1"), json!("N/A"), json!(0)]);

        let pc = json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
        let c = cells("scheduling.k8s.io", "priorityclasses", &pc, now());
        assert_eq!(c[1..3], [json!(1000), json!(false)]);
        assert_eq!(c[4], "Never");

        let csr = json!({"metadata": {"name": "c"}, "spec": {"signerName": "kubernetes.io/kube-apiserver-client",
            "username": "alice", "expirationSeconds": 86400},
            "status": {"conditions": [{"type": "Approved"}], "certificate": "Zm9v"}});
        let c = strs(&cells(
            "certificates.k8s.io",
            "certificatesigningrequests",
            &csr,
            now(),
        ));
        assert_eq!(
            c[2..],
            [
                "kubernetes.io/kube-apiserver-client",
                "alice",
                "24h",
                "Approved,Issued"
            ]
        );

        let rc = json!({"metadata": {"name": "rc"}, "spec": {"replicas": 2, "selector": {"app": "x"},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}});
        let c = strs(&cells("", "replicationcontrollers", &rc, now()));
        assert_eq!(c[1..4], ["2", "2", "1"]);
        assert_eq!(c[5..], ["c", "i", "app=x"]);

        let hpa = json!({"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}]},
            "status": {"currentReplicas": 1, "currentMetrics": [{"type": "Resource",
            "resource": {"name": "cpu", "current": {"averageUtilization": 10}}}]}});
        let c = strs(&cells(
            "autoscaling",
            "horizontalpodautoscalers",
            &hpa,
            now(),
        ));
        assert_eq!(c[1..6], ["Deployment/web", "cpu: 10%/50%", "1", "5", "1"]);
    }

    /// Every leaf and subtree replaced by values of the wrong type must still yield a full row.
    #[test]
    fn mutated_fields_never_panic() {
        fn paths(v: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
            match v {
                Value::Object(m) => {
                    for (k, child) in m {
                        let mut p = prefix.clone();
                        p.push(k.clone());
                        out.push(p.clone());
                        paths(child, p, out);
                    }
                }
                Value::Array(a) => {
                    for (i, child) in a.iter().enumerate() {
                        let mut p = prefix.clone();
                        p.push(i.to_string());
                        out.push(p.clone());
                        paths(child, p, out);
                    }
                }
                _ => {}
            }
        }
        fn set(v: &mut Value, path: &[String], new: Value) {
            let mut cur = v;
            for key in path {
                cur = match cur {
                    Value::Object(m) => m.get_mut(key).unwrap(),
                    Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
                    _ => unreachable!(),
                };
            }
            *cur = new;
        }
        let samples: Vec<(&str, &str, Value)> = vec![
            ("", "pods", {
                let mut p = pod(json!({
                    "phase": "Running", "podIPs": [{"ip": "1.2.3.4"}], "reason": "x",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "initContainerStatuses": [{"name": "i", "started": true, "ready": true,
                        "restartCount": 1, "state": {"terminated": {"exitCode": 0}},
                        "lastState": {"terminated": {"finishedAt": ago(10)}}}],
                    "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2,
                        "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": ago(5)}}}]
                }));
                p["spec"]["initContainers"] = json!([{"name": "i", "restartPolicy": "Always"}]);
                p["spec"]["readinessGates"] = json!([{"conditionType": "g"}]);
                p["metadata"]["deletionTimestamp"] = json!(ago(1));
                p
            }),
            (
                "",
                "services",
                json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer",
                "clusterIPs": ["1.1.1.1"], "externalIPs": ["2.2.2.2"], "selector": {"a": "b"},
                "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "3.3.3.3"}]}}}),
            ),
            (
                "",
                "nodes",
                json!({"metadata": {"name": "n", "labels": {"kubernetes.io/role": "x"}},
                "spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "1.1.1.1"}], "nodeInfo": {"osImage": "o"}}}),
            ),
            (
                "",
                "events",
                json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"},
                "series": {"count": 2, "lastObservedTime": ago(3)}, "source": {"component": "c", "host": "h"},
                "firstTimestamp": ago(9), "message": "m"}),
            ),
            (
                "apps",
                "deployments",
                json!({"metadata": {"name": "d"}, "spec": {"replicas": 2,
                "selector": {"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]},
                "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}, "status": {"readyReplicas": 1}}),
            ),
            (
                "batch",
                "jobs",
                json!({"metadata": {"name": "j"}, "spec": {"completions": 2, "parallelism": 2},
                "status": {"startTime": ago(9), "completionTime": ago(1), "conditions": [{"type": "Failed", "status": "True"}]}}),
            ),
            (
                "autoscaling",
                "horizontalpodautoscalers",
                json!({"metadata": {"name": "h"},
                "spec": {"minReplicas": 1, "maxReplicas": 3, "metrics": [
                    {"type": "Pods", "pods": {"target": {"averageValue": "1"}}},
                    {"type": "Object", "object": {"target": {"value": "2"}}},
                    {"type": "External", "external": {"target": {"averageValue": "3"}}}]},
                "status": {"currentMetrics": [{"pods": {"current": {"averageValue": "1"}}}]}}),
            ),
            (
                "",
                "persistentvolumeclaims",
                json!({"metadata": {"name": "c", "annotations":
                {"volume.beta.kubernetes.io/storage-class": "x"}}, "spec": {"volumeName": "v"},
                "status": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}}),
            ),
        ];
        let replacements = [
            json!(null),
            json!(7),
            json!(-1.5),
            json!("s"),
            json!([1]),
            json!({"x": 1}),
            json!(true),
        ];
        for (g, r, obj) in samples {
            let want = columns(g, r).len();
            let mut all = Vec::new();
            paths(&obj, Vec::new(), &mut all);
            for path in &all {
                for new in &replacements {
                    let mut o = obj.clone();
                    set(&mut o, path, new.clone());
                    assert_eq!(cells(g, r, &o, now()).len(), want, "{g}/{r} {path:?}");
                }
            }
        }
    }
}
