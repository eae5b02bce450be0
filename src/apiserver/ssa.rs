//! Server-side apply and `metadata.managedFields` tracking, with the semantics of
//! kube-apiserver 1.32 (`k8s.io/apimachinery/pkg/util/managedfields` over
//! sigs.k8s.io/structured-merge-diff v4).
//!
//! Owns only pure steps on objects held as `serde_json::Value`:
//! - [`apply`]: merge an applied configuration into the stored object, prune the fields the
//!   manager stopped applying, detect conflicts with other managers, record ownership;
//! - [`track_update`]: record in `metadata.managedFields` the fields an ordinary
//!   create/update/patch changed.
//!
//! It never touches storage or HTTP: the caller maps [`SsaError`] to a Status (409 for
//! conflicts, 400/422 for an invalid configuration), then defaults, validates and stores the
//! result; resourceVersion, uid, timestamps and status resets stay with the caller.
//!
//! Upstream derives the structure of objects (which maps are structs, which lists merge by
//! which keys, which structs are atomic) from the OpenAPI schema. Here a static table of the
//! built-in types' `+listType`/`+listMapKey`/`+mapType`/`+structType` markers stands in for
//! it; unknown kinds and fields are treated like a structural CRD schema (objects granular,
//! lists atomic). Multi-version conversion and subresources are not modelled: every manager's
//! set is read at the request's version and `status` is never owned through the main resource.

use super::gofmt::go_quote;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Number, Value};

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsaError {
    /// 409: one `(manager, field path)` per conflicting field, the path in upstream's printed
    /// form (`.data.a`, `.spec.template.spec.containers[name="c"].image`); `message` is
    /// upstream's full text (`Apply failed with 1 conflict: conflict with "m" using v1: .data.a`).
    #[error("{message}")]
    Conflicts {
        conflicts: Vec<(String, String)>,
        message: String,
    },
    /// 400/422: the applied configuration is not a valid object (not an object, wrong kind or
    /// version, a list where a map is expected, list items without their keys, duplicates...).
    #[error("{0}")]
    Invalid(String),
}

/// Server-side apply of `applied` (the client's full intent, already parsed from JSON/YAML) by
/// `manager`. `current` is the stored object (`None` when absent: the result is created).
/// `api_version` e.g. "apps/v1", `now` an RFC3339 time.
///
/// Returns the new object including its updated `metadata.managedFields` (the caller then
/// defaults/validates/stores it; resourceVersion/uid etc. are the caller's). When nothing
/// changes the result equals `current` exactly, so the caller can detect the no-op.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    group: &str,
    kind: &str,
    api_version: &str,
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, SsaError> {
    let (root, _) = root_schema(group, kind);
    check_applied(kind, api_version, applied)?;
    let config_set = typed_set_strict(root, applied).map_err(|e| {
        SsaError::Invalid(format!(
            "failed to create typed patch object ({}/{}; {}): {e}",
            meta_str(applied, "namespace"),
            meta_str(applied, "name"),
            gvk_string(str_at(applied, "apiVersion"), str_at(applied, "kind")),
        ))
    })?;
    let mut live = current
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    let managed = current.map(decode_managed).and_then(Result::ok);
    let managed = managed.unwrap_or_default();
    remove_managed_fields(&mut live);

    let op = ApplyOp {
        root,
        live: &live,
        config: applied,
        config_set: &config_set,
        manager,
        api_version,
        now,
    };
    let (mut obj, managed) = match op.run(managed.clone(), force) {
        Ok(done) => done,
        // `kubectl apply --server-side` takes over fields it last applied client-side.
        Err(conflicts) if manager == "kubectl" => {
            let Some(allowed) = allowed_from_last_applied(root, &live, api_version) else {
                return Err(conflict_error(conflicts));
            };
            let rest: Vec<Conflict> = conflicts
                .into_iter()
                .filter(|c| !allowed.has(&c.path))
                .collect();
            if !rest.is_empty() {
                return Err(conflict_error(rest));
            }
            op.run(managed, true).map_err(conflict_error)?
        }
        Err(conflicts) => return Err(conflict_error(conflicts)),
    };
    if manager == "kubectl" && has_last_applied(&obj) {
        let value = build_last_applied(applied);
        set_last_applied(&mut obj, value);
    }
    encode_managed(&mut obj, &managed);
    Ok(obj)
}

/// For ordinary writes (create/update/patch): records in `new.metadata.managedFields` that
/// `manager` (operation "Update") now owns the fields it changed relative to `old` (all of
/// new's fields when `old` is None), removing those fields from other managers' sets; drops
/// empty entries. Upstream uses the request's fieldManager or a default derived from the
/// User-Agent (e.g. "kubectl-edit", "kube-controller-manager"); the caller supplies it.
///
/// Like upstream, managedFields sent in `new` replace the stored ones when they decode and are
/// not empty (so a client can edit them), `[]` or `[{}]` resets them, and otherwise (absent,
/// null, undecodable) `old`'s are kept.
pub fn track_update(
    group: &str,
    kind: &str,
    api_version: &str,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    now: &str,
) {
    if !new.is_object() {
        return;
    }
    let (root, builtin) = root_schema(group, kind);
    let mut managed = if is_reset_managed_fields(new) {
        Managed::new()
    } else {
        match decode_managed(new) {
            Ok(m) if !m.is_empty() => m,
            _ => old
                .map(decode_managed)
                .and_then(Result::ok)
                .unwrap_or_default(),
        }
    };
    remove_managed_fields(new);
    let live = match old {
        Some(old) => {
            let mut live = old.clone();
            remove_managed_fields(&mut live);
            live
        }
        None => zero_object(root, builtin, new),
    };
    // Upstream runs the update as a temporary manager, then folds its set into the entry of
    // `manager`; the temporary name cannot collide with a (JSON) manager identifier.
    let Ok(cmp) = update_managers(root, &live, new, &mut managed, "current-operation", true) else {
        return;
    };
    let changed = cmp
        .modified
        .union(&cmp.added)
        .difference(&cmp.removed)
        .recursive_difference(&ignored_fields())
        .difference(&strip_set());
    if !changed.is_empty() {
        let mut entry = Entry {
            manager: manager.to_owned(),
            operation: UPDATE.to_owned(),
            api_version: api_version.to_owned(),
            subresource: String::new(),
            time: Some(now.to_owned()),
            set: changed,
        };
        let id = entry.id();
        if let Some(previous) = managed.get(&id) {
            entry.set = entry.set.union(&previous.set);
        }
        managed.insert(id, entry);
    }
    cap_managers(&mut managed);
    encode_managed(new, &managed);
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

/// The structure structured-merge-diff needs from a type.
#[derive(Debug, Clone, Copy)]
enum Ty {
    /// Scalars and atomic structs, maps and lists: owned and replaced as a whole.
    Leaf,
    /// A struct: granular, its keys are declared fields. Fields not listed are [`Ty::Any`].
    Struct(&'static [F]),
    /// A granular map whose keys are not declared fields (labels, data, limits...).
    Map(&'static Ty),
    /// `+listType=map`: items identified by their key fields (with schema defaults).
    Assoc(&'static [Key], &'static Ty),
    /// `+listType=set`: scalar items identified by their value.
    Set,
    /// Not described: objects are granular structs, lists atomic, scalars leaves.
    Any,
}

#[derive(Debug, Clone, Copy)]
struct F {
    name: &'static str,
    ty: Ty,
    /// Present in the Go zero value of the parent (a non-pointer struct, or a field without
    /// `omitempty`): upstream's create compares against that zero value.
    zero: bool,
}

#[derive(Debug, Clone, Copy)]
struct Key {
    name: &'static str,
    /// The schema default used when an item omits the key (`protocol: TCP`).
    default: Option<&'static str>,
}

macro_rules! fld {
    ($name:literal, $ty:expr) => {
        F {
            name: $name,
            ty: $ty,
            zero: false,
        }
    };
}

macro_rules! zero {
    ($name:literal, $ty:expr) => {
        F {
            name: $name,
            ty: $ty,
            zero: true,
        }
    };
}

macro_rules! key {
    ($name:literal) => {
        Key {
            name: $name,
            default: None,
        }
    };
    ($name:literal = $default:literal) => {
        Key {
            name: $name,
            default: Some($default),
        }
    };
}

impl Ty {
    /// The type of the child `name` of a map-like type, and whether it is a declared field.
    fn field(self, name: &str) -> (Ty, bool) {
        match self {
            Ty::Struct(fields) => (
                fields
                    .iter()
                    .find(|f| f.name == name)
                    .map_or(Ty::Any, |f| f.ty),
                true,
            ),
            Ty::Map(elem) => (*elem, false),
            _ => (Ty::Any, true),
        }
    }

    /// The type of the items of a list type.
    fn item(self) -> Ty {
        match self {
            Ty::Assoc(_, elem) => *elem,
            Ty::Set => Ty::Leaf,
            _ => Ty::Any,
        }
    }

    /// How a value of this type is walked.
    fn shape(self, v: &Value) -> Shape {
        match (self, v) {
            (Ty::Struct(_) | Ty::Map(_), Value::Object(_) | Value::Null) => Shape::Map,
            (Ty::Any, Value::Object(_)) => Shape::Map,
            (Ty::Assoc(..) | Ty::Set, Value::Array(_) | Value::Null) => Shape::List,
            _ => Shape::Leaf,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Leaf,
    Map,
    List,
}

/// Maps of strings or quantities (labels, annotations, limits...).
const STRINGS: Ty = Ty::Map(&Ty::Leaf);
/// `metav1.LabelSelector` is `+structType=atomic`.
const SELECTOR: Ty = Ty::Leaf;

const OBJECT_META: &[F] = &[
    fld!("annotations", STRINGS),
    fld!("finalizers", Ty::Set),
    fld!("labels", STRINGS),
    fld!("managedFields", Ty::Leaf),
    // OwnerReference is `+structType=atomic`.
    fld!("ownerReferences", Ty::Assoc(&[key!("uid")], &Ty::Leaf)),
];
const META: Ty = Ty::Struct(OBJECT_META);

const RESOURCES: &[F] = &[
    fld!("claims", Ty::Assoc(&[key!("name")], &Ty::Any)),
    fld!("limits", STRINGS),
    fld!("requests", STRINGS),
];

/// The key selectors and references of env vars are `+structType=atomic`.
const ENV_VAR: &[F] = &[fld!(
    "valueFrom",
    Ty::Struct(&[
        fld!("configMapKeyRef", Ty::Leaf),
        fld!("fieldRef", Ty::Leaf),
        fld!("fileKeyRef", Ty::Leaf),
        fld!("resourceFieldRef", Ty::Leaf),
        fld!("secretKeyRef", Ty::Leaf),
    ])
)];

const CONTAINER: &[F] = &[
    fld!("env", Ty::Assoc(&[key!("name")], &Ty::Struct(ENV_VAR))),
    fld!(
        "ports",
        Ty::Assoc(&[key!("containerPort"), key!("protocol" = "TCP")], &Ty::Any)
    ),
    zero!("resources", Ty::Struct(RESOURCES)),
    fld!("volumeDevices", Ty::Assoc(&[key!("devicePath")], &Ty::Any)),
    fld!("volumeMounts", Ty::Assoc(&[key!("mountPath")], &Ty::Any)),
];
const CONTAINERS: Ty = Ty::Assoc(&[key!("name")], &Ty::Struct(CONTAINER));

const PVC_SPEC: &[F] = &[
    fld!("dataSource", Ty::Leaf),
    zero!(
        "resources",
        Ty::Struct(&[fld!("limits", STRINGS), fld!("requests", STRINGS)])
    ),
    fld!("selector", SELECTOR),
];

/// Volume sources whose `secretRef` is an atomic LocalObjectReference/SecretReference.
const SECRET_REF: Ty = Ty::Struct(&[fld!("secretRef", Ty::Leaf)]);

const VOLUME: &[F] = &[
    fld!("cephfs", SECRET_REF),
    fld!("cinder", SECRET_REF),
    fld!("csi", Ty::Struct(&[fld!("nodePublishSecretRef", Ty::Leaf)])),
    fld!(
        "ephemeral",
        Ty::Struct(&[fld!(
            "volumeClaimTemplate",
            Ty::Struct(&[zero!("metadata", META), zero!("spec", Ty::Struct(PVC_SPEC))])
        )])
    ),
    fld!("flexVolume", SECRET_REF),
    fld!("iscsi", SECRET_REF),
    fld!("rbd", SECRET_REF),
    fld!("scaleIO", SECRET_REF),
    fld!("storageos", SECRET_REF),
];

const POD_SPEC: &[F] = &[
    fld!(
        "affinity",
        Ty::Struct(&[fld!(
            "nodeAffinity",
            // NodeSelector is `+structType=atomic`.
            Ty::Struct(&[fld!(
                "requiredDuringSchedulingIgnoredDuringExecution",
                Ty::Leaf
            )])
        )])
    ),
    zero!("containers", CONTAINERS),
    fld!("ephemeralContainers", CONTAINERS),
    fld!("hostAliases", Ty::Assoc(&[key!("ip")], &Ty::Any)),
    fld!("imagePullSecrets", Ty::Assoc(&[key!("name")], &Ty::Leaf)),
    fld!("initContainers", CONTAINERS),
    fld!("nodeSelector", Ty::Leaf),
    fld!("resourceClaims", Ty::Assoc(&[key!("name")], &Ty::Any)),
    fld!("resources", Ty::Struct(RESOURCES)),
    fld!("schedulingGates", Ty::Assoc(&[key!("name")], &Ty::Any)),
    fld!(
        "topologySpreadConstraints",
        Ty::Assoc(
            &[key!("topologyKey"), key!("whenUnsatisfiable")],
            &Ty::Struct(&[fld!("labelSelector", SELECTOR)])
        )
    ),
    fld!("volumes", Ty::Assoc(&[key!("name")], &Ty::Struct(VOLUME))),
];
const TEMPLATE: Ty = Ty::Struct(&[zero!("metadata", META), zero!("spec", Ty::Struct(POD_SPEC))]);
const JOB_SPEC: &[F] = &[fld!("selector", SELECTOR), zero!("template", TEMPLATE)];

/// Object roots: `metadata`, `spec` and `status` are non-pointer structs in the built-in types.
const fn kind_root(spec: Ty) -> [F; 3] {
    [
        zero!("metadata", META),
        zero!("spec", spec),
        zero!("status", Ty::Any),
    ]
}

const POD: &[F] = &kind_root(Ty::Struct(POD_SPEC));
const POD_TEMPLATE: &[F] = &[zero!("metadata", META), zero!("template", TEMPLATE)];
const REPLICATION_CONTROLLER: &[F] = &kind_root(Ty::Struct(&[
    fld!("selector", Ty::Leaf),
    fld!("template", TEMPLATE),
]));
const DEPLOYMENT: &[F] = &kind_root(Ty::Struct(&[
    zero!("selector", SELECTOR),
    zero!("strategy", Ty::Any),
    zero!("template", TEMPLATE),
]));
const REPLICA_SET: &[F] = &kind_root(Ty::Struct(&[
    zero!("selector", SELECTOR),
    zero!("template", TEMPLATE),
]));
const STATEFUL_SET: &[F] = &kind_root(Ty::Struct(&[
    zero!("selector", SELECTOR),
    zero!("template", TEMPLATE),
    zero!("updateStrategy", Ty::Any),
    fld!("volumeClaimTemplates", Ty::Leaf),
]));
const DAEMON_SET: &[F] = &kind_root(Ty::Struct(&[
    zero!("selector", SELECTOR),
    zero!("template", TEMPLATE),
    zero!("updateStrategy", Ty::Any),
]));
const JOB: &[F] = &kind_root(Ty::Struct(JOB_SPEC));
const CRON_JOB: &[F] = &kind_root(Ty::Struct(&[zero!(
    "jobTemplate",
    Ty::Struct(&[zero!("metadata", META), zero!("spec", Ty::Struct(JOB_SPEC))])
)]));
const SERVICE: &[F] = &kind_root(Ty::Struct(&[
    fld!(
        "ports",
        Ty::Assoc(&[key!("port"), key!("protocol" = "TCP")], &Ty::Any)
    ),
    // `+mapType=atomic`
    fld!("selector", Ty::Leaf),
]));
const SERVICE_ACCOUNT: &[F] = &[
    zero!("metadata", META),
    fld!("imagePullSecrets", Ty::Leaf),
    // ObjectReference is `+structType=atomic`.
    fld!("secrets", Ty::Assoc(&[key!("name")], &Ty::Leaf)),
];
const NODE: &[F] = &kind_root(Ty::Struct(&[fld!("podCIDRs", Ty::Set)]));
const PVC: &[F] = &kind_root(Ty::Struct(PVC_SPEC));
const PV: &[F] = &kind_root(Ty::Struct(&[fld!(
    "nodeAffinity",
    Ty::Struct(&[fld!("required", Ty::Leaf)])
)]));
const EVENT: &[F] = &[
    zero!("metadata", META),
    zero!("involvedObject", Ty::Leaf),
    fld!("related", Ty::Leaf),
    zero!("source", Ty::Any),
];
const ROLE_BINDING: &[F] = &[zero!("metadata", META), zero!("roleRef", Ty::Any)];
const WEBHOOK_CONFIGURATION: &[F] = &[
    zero!("metadata", META),
    fld!(
        "webhooks",
        Ty::Assoc(
            &[key!("name")],
            &Ty::Struct(&[
                zero!("clientConfig", Ty::Any),
                fld!("matchConditions", Ty::Assoc(&[key!("name")], &Ty::Any)),
                fld!("namespaceSelector", SELECTOR),
                fld!("objectSelector", SELECTOR),
            ])
        )
    ),
];
const CSI_NODE: &[F] = &kind_root(Ty::Struct(&[fld!(
    "drivers",
    Ty::Assoc(&[key!("name")], &Ty::Any)
)]));
const NETWORK_POLICY: &[F] = &kind_root(Ty::Struct(&[zero!("podSelector", SELECTOR)]));
const POD_DISRUPTION_BUDGET: &[F] = &kind_root(Ty::Struct(&[fld!("selector", SELECTOR)]));
const HORIZONTAL_POD_AUTOSCALER: &[F] = &kind_root(Ty::Struct(&[zero!("scaleTargetRef", Ty::Any)]));
/// Built-in kinds without list-type or atomic markers beyond their metadata.
const GENERIC: &[F] = &kind_root(Ty::Any);
/// Custom resources: only `metadata` is known; nothing exists in their "zero value".
const CUSTOM: &[F] = &[fld!("metadata", META)];

/// The root type of a kind, and whether the kind is built in.
fn root_schema(group: &str, kind: &str) -> (Ty, bool) {
    if !super::resources::BUILTIN_GROUPS.contains(&group) {
        return (Ty::Struct(CUSTOM), false);
    }
    let fields = match (group, kind) {
        ("", "Pod") => POD,
        ("", "PodTemplate") => POD_TEMPLATE,
        ("", "ReplicationController") => REPLICATION_CONTROLLER,
        ("apps", "Deployment") => DEPLOYMENT,
        ("apps", "ReplicaSet") => REPLICA_SET,
        ("apps", "StatefulSet") => STATEFUL_SET,
        ("apps", "DaemonSet") => DAEMON_SET,
        ("batch", "Job") => JOB,
        ("batch", "CronJob") => CRON_JOB,
        ("", "Service") => SERVICE,
        ("", "ServiceAccount") => SERVICE_ACCOUNT,
        ("", "Node") => NODE,
        ("", "PersistentVolumeClaim") => PVC,
        ("", "PersistentVolume") => PV,
        ("", "Event") => EVENT,
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => ROLE_BINDING,
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration",
        ) => WEBHOOK_CONFIGURATION,
        ("storage.k8s.io", "CSINode") => CSI_NODE,
        ("networking.k8s.io", "NetworkPolicy") => NETWORK_POLICY,
        ("policy", "PodDisruptionBudget") => POD_DISRUPTION_BUDGET,
        ("autoscaling", "HorizontalPodAutoscaler") => HORIZONTAL_POD_AUTOSCALER,
        _ => GENERIC,
    };
    (Ty::Struct(fields), true)
}

/// The object upstream compares a created object against: the Go zero value of the kind (its
/// non-pointer structs present, empty) for built-in kinds, an empty object for custom ones.
/// Only the parts present in `new` matter, so only those are built.
fn zero_object(root: Ty, builtin: bool, new: &Value) -> Value {
    if builtin {
        zero_value(root, new, 0)
    } else {
        Value::Object(Map::new())
    }
}

fn zero_value(ty: Ty, new: &Value, depth: usize) -> Value {
    let mut out = Map::new();
    if let (Ty::Struct(fields), Some(new)) = (ty, new.as_object())
        && depth < MAX_DEPTH
    {
        for f in fields.iter().filter(|f| f.zero) {
            if let Some(v) = new.get(f.name) {
                let zero = match f.ty {
                    Ty::Struct(_) => zero_value(f.ty, v, depth + 1),
                    Ty::Any if v.is_object() => Value::Object(Map::new()),
                    _ => Value::Null,
                };
                out.insert(f.name.to_owned(), zero);
            }
        }
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// Values: upstream ordering and equality, Go's JSON and quoting
// ---------------------------------------------------------------------------------------------

/// Recursion cap for every walk over objects and field sets (serde_json reads at most 128
/// levels); deeper parts are treated as opaque leaves.
const MAX_DEPTH: usize = 160;

/// The rank of a value's type in structured-merge-diff's `value.Compare`.
fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

fn number_cmp(a: &Number, b: &Number) -> Ordering {
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(x), Some(y), _, _) => x.cmp(&y),
        (_, _, Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

/// structured-merge-diff's `value.Compare`: numbers < strings < bools < lists < maps < null;
/// ints and floats compare numerically.
fn value_cmp(a: &Value, b: &Value, depth: usize) -> Ordering {
    if depth > MAX_DEPTH {
        return Ordering::Equal;
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let c = value_cmp(p, q, depth + 1);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            for ((kp, p), (kq, q)) in x.iter().zip(y) {
                let c = kp.cmp(kq).then_with(|| value_cmp(p, q, depth + 1));
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// structured-merge-diff's `value.Equals` (ints and floats compare numerically).
fn value_eq(a: &Value, b: &Value) -> bool {
    value_cmp(a, b, 0) == Ordering::Equal
}

/// A value usable in ordered sets, ordered like upstream.
#[derive(Debug, Clone)]
struct Val(Value);

impl PartialEq for Val {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Val {}
impl PartialOrd for Val {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Val {
    fn cmp(&self, other: &Self) -> Ordering {
        value_cmp(&self.0, &other.0, 0)
    }
}

/// Go's `encoding/json` string encoding (HTML-safe, like kube-apiserver's encoders).
fn go_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `encoding/json` number formatting (floats: shortest form, exponent outside
/// [1e-6, 1e21)).
fn go_json_number(n: &Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else {
        let f = n.as_f64().unwrap_or(0.0);
        let abs = f.abs();
        if abs == 0.0 || (1e-6..1e21).contains(&abs) {
            out.push_str(&format!("{f}"));
        } else {
            let s = format!("{f:e}");
            match s.split_once('e') {
                Some((mantissa, exp)) if !exp.starts_with('-') => {
                    out.push_str(&format!("{mantissa}e+{exp}"));
                }
                _ => out.push_str(&s),
            }
        }
    }
}

/// Go's `encoding/json` encoding of a decoded JSON value (map keys sorted).
fn go_json(v: &Value, out: &mut String, depth: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => go_json_number(n, out),
        Value::String(s) => go_json_str(s, out),
        _ if depth > MAX_DEPTH => out.push_str("null"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json(item, out, depth + 1);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_str(k, out);
                out.push(':');
                if let Some(item) = map.get(k) {
                    go_json(item, out, depth + 1);
                }
            }
            out.push('}');
        }
    }
}

fn to_go_json(v: &Value) -> String {
    let mut out = String::new();
    go_json(v, &mut out, 0);
    out
}

/// structured-merge-diff's `value.ToString`, used in printed paths.
fn value_to_string(v: &Value, depth: usize) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => go_quote(s),
        _ if depth > MAX_DEPTH => String::new(),
        Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|i| value_to_string(i, depth + 1))
                .collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}={}", value_to_string(v, depth + 1)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// Roughly Go's `%v` of a decoded value, as upstream prints it in type errors (`&{...}`).
fn go_value(v: &Value, depth: usize) -> String {
    match v {
        Value::Null => "<nil>".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ if depth > 8 => "...".to_owned(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|i| go_value(i, depth + 1)).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_value(v, depth + 1)))
                .collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paths and field sets
// ---------------------------------------------------------------------------------------------

/// A path element, ordered like upstream's: fields < keys < values < indexes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Pe {
    /// `f:<name>`: a struct field or map key.
    Field(String),
    /// `k:{...}`: an associative-list item by its key fields, sorted by name.
    Key(Vec<(String, Val)>),
    /// `v:<json>`: a set-list item.
    Value(Val),
    /// `i:<n>`: a list item that has no identity (only for malformed stored objects).
    Index(usize),
}

impl Pe {
    /// The FieldsV1 key.
    fn serialize(&self) -> String {
        let mut out = String::new();
        match self {
            Pe::Field(name) => {
                out.push_str("f:");
                out.push_str(name);
            }
            Pe::Key(fields) => {
                out.push_str("k:{");
                for (i, (name, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    go_json_str(name, &mut out);
                    out.push(':');
                    go_json(&v.0, &mut out, 0);
                }
                out.push('}');
            }
            Pe::Value(v) => {
                out.push_str("v:");
                go_json(&v.0, &mut out, 0);
            }
            Pe::Index(i) => out.push_str(&format!("i:{i}")),
        }
        out
    }

    /// Parses a FieldsV1 key; `Ok(None)` for kinds of element this version does not know
    /// (upstream drops those).
    fn deserialize(s: &str) -> Result<Option<Pe>, String> {
        let (kind, rest) = match (s.get(..2), s.get(2..)) {
            (Some(kind), Some(rest)) => (kind, rest),
            _ => return Err("key must be 2 characters long".to_owned()),
        };
        if !kind.ends_with(':') {
            return Err("missing colon".to_owned());
        }
        let parse = |s: &str| serde_json::from_str::<Value>(s).map_err(|e| e.to_string());
        Ok(Some(match kind {
            "f:" => Pe::Field(rest.to_owned()),
            "v:" => Pe::Value(Val(parse(rest)?)),
            "k:" => match parse(rest)? {
                Value::Object(map) => {
                    let mut fields: Vec<(String, Val)> =
                        map.into_iter().map(|(k, v)| (k, Val(v))).collect();
                    fields.sort_by(|a, b| a.0.cmp(&b.0));
                    Pe::Key(fields)
                }
                _ => return Err(format!("invalid key {rest:?}")),
            },
            "i:" => Pe::Index(
                rest.parse()
                    .map_err(|_| format!("invalid index {rest:?}"))?,
            ),
            _ => return Ok(None),
        }))
    }
}

impl std::fmt::Display for Pe {
    /// Upstream's `PathElement.String()`: `.name`, `[k=v,...]`, `[=v]`, `[i]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pe::Field(name) => write!(f, ".{name}"),
            Pe::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value_to_string(&v.0, 0)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            Pe::Value(v) => write!(f, "[={}]", value_to_string(&v.0, 0)),
            Pe::Index(i) => write!(f, "[{i}]"),
        }
    }
}

fn path_string(path: &[Pe]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of paths, as a trie: `members` end here, `children` continue (never empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldSet {
    members: BTreeSet<Pe>,
    children: BTreeMap<Pe, FieldSet>,
}

impl FieldSet {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    fn insert(&mut self, path: &[Pe]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether `path` is a member.
    fn has(&self, path: &[Pe]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// The paths below `pe` (upstream's `WithPrefix`).
    fn child(&self, pe: &Pe) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let diff = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !diff.is_empty() {
                out.children.insert(pe.clone(), diff);
            }
        }
        out
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let both = c.intersection(o);
                if !both.is_empty() {
                    out.children.insert(pe.clone(), both);
                }
            }
        }
        out
    }

    /// Removes the members of `other` and everything below them.
    fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if other.members.contains(pe) {
                continue;
            }
            let diff = match other.children.get(pe) {
                Some(o) => c.recursive_difference(o),
                None => c.clone(),
            };
            if !diff.is_empty() {
                out.children.insert(pe.clone(), diff);
            }
        }
        out
    }

    /// Every member path in upstream's iteration order (members, then children, per level).
    fn paths(&self) -> Vec<Vec<Pe>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<Pe>, out: &mut Vec<Vec<Pe>>) {
        for pe in &self.members {
            let mut path = prefix.clone();
            path.push(pe.clone());
            out.push(path);
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The FieldsV1 form: `{"f:data": {".": {}, "f:a": {}}}`.
    fn to_fields_v1(&self) -> Value {
        Value::Object(self.emit(false))
    }

    fn emit(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self && !self.is_empty() {
            out.insert(".".to_owned(), Value::Object(Map::new()));
        }
        for pe in &self.members {
            if !self.children.contains_key(pe) {
                out.insert(pe.serialize(), Value::Object(Map::new()));
            }
        }
        for (pe, c) in &self.children {
            let is_member = self.members.contains(pe);
            out.insert(pe.serialize(), Value::Object(c.emit(is_member)));
        }
        out
    }

    fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        Ok(read_fields_v1(v, 0)?.0.unwrap_or_default())
    }
}

/// Reads one FieldsV1 level: the set below it (if any) and whether the level itself is a
/// member (it is when marked with `"."` or when it has nothing below it).
fn read_fields_v1(v: &Value, depth: usize) -> Result<(Option<FieldSet>, bool), String> {
    let Some(map) = v.as_object() else {
        return Err(format!("expected an object, got {}", to_go_json(v)));
    };
    if depth > MAX_DEPTH {
        return Ok((None, true));
    }
    let mut children: Option<FieldSet> = None;
    let mut is_member = false;
    for (key, sub) in map {
        if key == "." {
            is_member = true;
            continue;
        }
        let Some(pe) = Pe::deserialize(key).map_err(|e| format!("parsing {key:?}: {e}"))? else {
            continue;
        };
        let (grandchildren, child_is_member) = read_fields_v1(sub, depth + 1)?;
        let set = children.get_or_insert_with(FieldSet::default);
        if child_is_member {
            set.members.insert(pe.clone());
        }
        if let Some(g) = grandchildren {
            set.children.insert(pe, g);
        }
    }
    if children.is_none() {
        is_member = true;
    }
    Ok((children, is_member))
}

// ---------------------------------------------------------------------------------------------
// Typed walks: field sets and validation
// ---------------------------------------------------------------------------------------------

/// The identity of a list item (upstream's `listItemToPathElement`).
fn item_pe(ty: Ty, item: &Value) -> Result<Pe, String> {
    match ty {
        Ty::Assoc(keys, _) => {
            let map = match item {
                Value::Object(map) => map,
                Value::Null => {
                    return Err("associative list with keys may not have a null element".into());
                }
                _ => return Err("associative list with keys may not have non-map elements".into()),
            };
            let mut fields = Vec::with_capacity(keys.len());
            for k in keys {
                let v = match (map.get(k.name), k.default) {
                    (Some(v), _) => v.clone(),
                    (None, Some(default)) => Value::String(default.to_owned()),
                    (None, None) => {
                        return Err(format!(
                            "associative list with keys has an element that omits key field {} (and doesn't have default value)",
                            go_quote(k.name)
                        ));
                    }
                };
                fields.push((k.name.to_owned(), Val(v)));
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(Pe::Key(fields))
        }
        _ => match item {
            Value::Object(_) => {
                Err("associative list without keys has an element that's a map type".into())
            }
            Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
            v => Ok(Pe::Value(Val(v.clone()))),
        },
    }
}

/// The identity of a list item of a stored object: malformed items get their index.
fn item_pe_lenient(ty: Ty, i: usize, item: &Value) -> Pe {
    item_pe(ty, item).unwrap_or(Pe::Index(i))
}

/// Collects upstream's `ToFieldSet` of a value and, when `errors` is given, validates it like
/// `ObjectToTyped` does for an applied configuration.
struct SetWalk<'a> {
    set: FieldSet,
    path: Vec<Pe>,
    errors: Option<&'a mut Vec<String>>,
}

impl SetWalk<'_> {
    fn error(&mut self, msg: String) {
        let path = path_string(&self.path);
        if let Some(errors) = self.errors.as_deref_mut() {
            errors.push(if path.is_empty() {
                msg
            } else {
                format!("{path}: {msg}")
            });
        }
    }

    fn walk(&mut self, ty: Ty, v: &Value, depth: usize) {
        let shape = if depth > MAX_DEPTH {
            Shape::Leaf
        } else {
            ty.shape(v)
        };
        match shape {
            Shape::Leaf => {
                match (ty, v) {
                    (Ty::Struct(_) | Ty::Map(_), v) if !v.is_object() && !v.is_null() => {
                        self.error(format!("expected map, got &{{{}}}", go_value(v, 0)));
                    }
                    (Ty::Assoc(..) | Ty::Set, v) if !v.is_array() && !v.is_null() => {
                        self.error(format!("expected list, got &{{{}}}", go_value(v, 0)));
                    }
                    _ => {}
                }
                self.set.insert(&self.path);
            }
            Shape::Map => {
                let Some(map) = v.as_object() else { return };
                for (k, child) in map {
                    let (child_ty, declared) = ty.field(k);
                    self.path.push(Pe::Field(k.clone()));
                    self.walk(child_ty, child, depth + 1);
                    if !declared {
                        self.set.insert(&self.path);
                    }
                    self.path.pop();
                }
            }
            Shape::List => {
                let Some(items) = v.as_array() else { return };
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    let pe = match item_pe(ty, item) {
                        Ok(pe) => pe,
                        Err(e) => {
                            self.error(format!("element {i}: {e}"));
                            if self.errors.is_some() {
                                continue;
                            }
                            Pe::Index(i)
                        }
                    };
                    if !seen.insert(pe.clone()) && self.errors.is_some() {
                        self.error(format!("duplicate entries for key {pe}"));
                        continue;
                    }
                    self.path.push(pe);
                    self.walk(ty.item(), item, depth + 1);
                    self.set.insert(&self.path);
                    self.path.pop();
                }
            }
        }
    }
}

/// The field set of a stored or merged object (never fails).
fn typed_set(root: Ty, v: &Value) -> FieldSet {
    let mut w = SetWalk {
        set: FieldSet::default(),
        path: Vec::new(),
        errors: None,
    };
    w.walk(root, v, 0);
    w.set
}

/// The field set of an applied configuration, or upstream's validation error text.
fn typed_set_strict(root: Ty, v: &Value) -> Result<FieldSet, String> {
    let mut errors = Vec::new();
    let mut w = SetWalk {
        set: FieldSet::default(),
        path: Vec::new(),
        errors: Some(&mut errors),
    };
    w.walk(root, v, 0);
    let set = w.set;
    match errors.len() {
        0 => Ok(set),
        1 => Err(errors.remove(0)),
        _ => Err(format!("errors:\n  {}", errors.join("\n  "))),
    }
}

/// Upstream's `EnsureNamedFieldsAreMembers`: struct fields that have something below them
/// become members too (map keys and list items do not).
fn ensure_named(s: &FieldSet, ty: Ty, depth: usize) -> FieldSet {
    let mut out = FieldSet {
        members: s.members.clone(),
        children: BTreeMap::new(),
    };
    for (pe, c) in &s.children {
        let child_ty = match (pe, ty) {
            (Pe::Field(name), Ty::Struct(_) | Ty::Map(_) | Ty::Any) => {
                let (child_ty, declared) = ty.field(name);
                if declared {
                    out.members.insert(pe.clone());
                }
                child_ty
            }
            (Pe::Key(_), _) => ty.item(),
            _ => Ty::Any,
        };
        let child = if depth > MAX_DEPTH {
            c.clone()
        } else {
            ensure_named(c, child_ty, depth + 1)
        };
        out.children.insert(pe.clone(), child);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Typed walks: compare, merge, remove
// ---------------------------------------------------------------------------------------------

static NULL: Value = Value::Null;

/// Upstream's `Comparison` of two objects.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Comparison {
    fn exclude(&mut self, ignored: &FieldSet) {
        self.added = self.added.recursive_difference(ignored);
        self.modified = self.modified.recursive_difference(ignored);
        self.removed = self.removed.recursive_difference(ignored);
    }
}

fn compare(root: Ty, lhs: &Value, rhs: &Value) -> Comparison {
    let mut out = Comparison::default();
    compare_walk(root, Some(lhs), Some(rhs), &mut Vec::new(), &mut out, 0);
    out
}

/// Indexes list items by identity, in order; a repeated identity maps to null (upstream does
/// not merge duplicated items).
fn index_items(ty: Ty, items: &[Value]) -> (Vec<Pe>, BTreeMap<Pe, &Value>) {
    let mut order = Vec::with_capacity(items.len());
    let mut seen: BTreeMap<Pe, &Value> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let pe = item_pe_lenient(ty, i, item);
        if let Some(slot) = seen.get_mut(&pe) {
            *slot = &NULL;
        } else {
            seen.insert(pe.clone(), item);
            order.push(pe);
        }
    }
    (order, seen)
}

fn compare_walk(
    ty: Ty,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    path: &mut Vec<Pe>,
    out: &mut Comparison,
    depth: usize,
) {
    let shape = match (lhs, rhs) {
        (None, None) => return,
        _ if depth > MAX_DEPTH => Shape::Leaf,
        (Some(l), Some(r)) if ty.shape(l) != ty.shape(r) => Shape::Leaf,
        (Some(v), _) | (None, Some(v)) => ty.shape(v),
    };
    let leaf = |out: &mut Comparison, path: &[Pe]| match (lhs, rhs) {
        (None, _) => out.added.insert(path),
        (_, None) => out.removed.insert(path),
        (Some(l), Some(r)) if !value_eq(l, r) => out.modified.insert(path),
        _ => {}
    };
    match shape {
        Shape::Leaf => return leaf(out, path),
        Shape::Map => {
            let l = lhs.and_then(Value::as_object);
            let r = rhs.and_then(Value::as_object);
            if l.is_none_or(Map::is_empty) && r.is_none_or(Map::is_empty) {
                return leaf(out, path);
            }
            let mut keys: BTreeSet<&String> = BTreeSet::new();
            keys.extend(l.into_iter().flat_map(Map::keys));
            keys.extend(r.into_iter().flat_map(Map::keys));
            for k in keys {
                path.push(Pe::Field(k.clone()));
                let child_ty = ty.field(k).0;
                let (lc, rc) = (l.and_then(|m| m.get(k)), r.and_then(|m| m.get(k)));
                compare_walk(child_ty, lc, rc, path, out, depth + 1);
                path.pop();
            }
        }
        Shape::List => {
            let l = lhs.and_then(Value::as_array);
            let r = rhs.and_then(Value::as_array);
            if l.is_none_or(Vec::is_empty) && r.is_none_or(Vec::is_empty) {
                return leaf(out, path);
            }
            let (l_order, l_items) = index_items(ty, l.map_or(&[], Vec::as_slice));
            let (r_order, r_items) = index_items(ty, r.map_or(&[], Vec::as_slice));
            let mut all: Vec<&Pe> = l_order.iter().collect();
            all.extend(r_order.iter().filter(|pe| !l_items.contains_key(*pe)));
            for pe in all {
                path.push(pe.clone());
                let (lc, rc) = (l_items.get(pe).copied(), r_items.get(pe).copied());
                compare_walk(ty.item(), lc, rc, path, out, depth + 1);
                path.pop();
            }
        }
    }
    // Upstream's post-item hook: a container appearing or disappearing is a change of its own.
    match (lhs, rhs) {
        (None, _) => out.added.insert(path),
        (_, None) => out.removed.insert(path),
        _ => {}
    }
}

/// Upstream's `Merge` of an applied configuration into the live object: the configuration
/// wins on leaves, maps and associative lists merge item by item, list order follows the
/// configuration for the items it lists.
fn merge(ty: Ty, lhs: &Value, rhs: &Value, depth: usize) -> Value {
    let shape = if depth > MAX_DEPTH || ty.shape(lhs) != ty.shape(rhs) {
        Shape::Leaf
    } else {
        ty.shape(rhs)
    };
    match shape {
        Shape::Leaf => rhs.clone(),
        Shape::Map => {
            let (l, r) = (lhs.as_object(), rhs.as_object());
            if l.is_none_or(Map::is_empty) && r.is_none_or(Map::is_empty) {
                return rhs.clone();
            }
            let mut out = l.cloned().unwrap_or_default();
            for (k, rv) in r.into_iter().flatten() {
                let merged = match out.get(k) {
                    Some(lv) => merge(ty.field(k).0, lv, rv, depth + 1),
                    None => rv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        Shape::List => {
            let (l, r) = (
                lhs.as_array().map_or(&[][..], Vec::as_slice),
                rhs.as_array().map_or(&[][..], Vec::as_slice),
            );
            if l.is_empty() && r.is_empty() {
                return rhs.clone();
            }
            Value::Array(merge_items(ty, l, r, depth))
        }
    }
}

fn merge_item(ty: Ty, lhs: Option<&Value>, rhs: Option<&Value>, depth: usize) -> Option<Value> {
    match (lhs, rhs) {
        (Some(l), Some(r)) => Some(merge(ty.item(), l, r, depth + 1)),
        (None, Some(v)) | (Some(v), None) => Some(v.clone()),
        (None, None) => None,
    }
}

/// Upstream's `visitListItems` of the merging walker: shared items take the configuration's
/// relative order, items only in the live list keep their place.
fn merge_items(ty: Ty, lhs: &[Value], rhs: &[Value], depth: usize) -> Vec<Value> {
    let (r_order, r_items) = index_items(ty, rhs);
    let l_order: Vec<Pe> = lhs
        .iter()
        .enumerate()
        .map(|(i, item)| item_pe_lenient(ty, i, item))
        .collect();
    let (_, l_items) = index_items(ty, lhs);
    let mut shared = r_order.iter().filter(|pe| l_items.contains_key(*pe));
    let mut next_shared = shared.next();
    let mut merged_rhs: BTreeSet<&Pe> = BTreeSet::new();
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let (mut li, mut ri) = (0, 0);
    while li < l_order.len() || ri < r_order.len() {
        let before = (li, ri);
        if li < l_order.len() && ri < r_order.len() {
            let pe = &l_order[li];
            if *pe == r_order[ri] {
                merged_rhs.insert(pe);
                out.extend(merge_item(
                    ty,
                    l_items.get(pe).copied(),
                    r_items.get(pe).copied(),
                    depth,
                ));
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if r_items.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < l_order.len() {
            let pe = &l_order[li];
            if !r_items.contains_key(pe) {
                out.push(lhs[li].clone());
                li += 1;
                continue;
            }
            if merged_rhs.contains(pe) {
                li += 1;
                continue;
            }
        }
        if ri < r_order.len() {
            let pe = &r_order[ri];
            merged_rhs.insert(pe);
            out.extend(merge_item(
                ty,
                l_items.get(pe).copied(),
                r_items.get(pe).copied(),
                depth,
            ));
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
        }
        if (li, ri) == before && li < lhs.len() {
            // Cannot happen with a validated configuration; never loop, never lose an item.
            out.push(lhs[li].clone());
            li += 1;
        }
    }
    out
}

/// Upstream's `RemoveItems`: drops the member paths of `remove` (with everything below them).
/// `None` is upstream's nil result (a container left empty), which the parent drops, as the
/// typed round trip of built-in objects does.
fn remove_items(ty: Ty, v: &Value, remove: &FieldSet, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return Some(v.clone());
    }
    match ty.shape(v) {
        // Atomic values are removed whole or not at all. Paths below one only come from sets
        // recorded with another schema (upstream reconciles those with the schema first), so
        // the value is kept rather than lost.
        Shape::Leaf => Some(v.clone()),
        Shape::Map => {
            let map = v.as_object().filter(|m| !m.is_empty())?;
            let mut out = Map::new();
            for (k, child) in map {
                let pe = Pe::Field(k.clone());
                if remove.members.contains(&pe) {
                    continue;
                }
                let kept = match remove.child(&pe) {
                    Some(sub) => remove_items(ty.field(k).0, child, sub, depth + 1),
                    None => Some(child.clone()),
                };
                if let Some(kept) = kept {
                    out.insert(k.clone(), kept);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Shape::List => {
            let items = v.as_array().filter(|a| !a.is_empty())?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let pe = item_pe_lenient(ty, i, item);
                if remove.members.contains(&pe) {
                    continue;
                }
                out.push(match remove.child(&pe) {
                    Some(sub) => {
                        remove_items(ty.item(), item, sub, depth + 1).unwrap_or(Value::Null)
                    }
                    None => item.clone(),
                });
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// managedFields entries
// ---------------------------------------------------------------------------------------------

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";
/// Upstream's `DefaultMaxUpdateManagers`, and the manager older updates are merged into.
const MAX_UPDATE_MANAGERS: usize = 10;
const ANCIENT_CHANGES: &str = "ancient-changes";

/// One manager's entry (upstream keeps sets by identifier and times beside them).
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
    time: Option<String>,
    set: FieldSet,
}

/// Entries by manager identifier ([`Entry::id`]).
type Managed = BTreeMap<String, Entry>;

impl Entry {
    fn applied(&self) -> bool {
        self.operation == APPLY
    }

    /// Upstream's `BuildManagerIdentifier`: the Go JSON of the entry without its fields and
    /// time, and without the apiVersion for appliers (who keep one entry across versions).
    fn id(&self) -> String {
        let mut out = String::from("{");
        let mut field = |name: &str, value: &str| {
            if !value.is_empty() {
                if out.len() > 1 {
                    out.push(',');
                }
                go_json_str(name, &mut out);
                out.push(':');
                go_json_str(value, &mut out);
            }
        };
        field("manager", &self.manager);
        field("operation", &self.operation);
        field(
            "apiVersion",
            if self.applied() {
                ""
            } else {
                &self.api_version
            },
        );
        field("subresource", &self.subresource);
        out.push('}');
        out
    }

    /// Upstream's `printManager` (conflict messages); identifiers carry no time.
    fn printed(&self) -> String {
        let mut out = go_quote(&self.manager);
        if !self.subresource.is_empty() {
            out = format!("{out} with subresource {}", go_quote(&self.subresource));
        }
        if self.applied() {
            out
        } else {
            format!("{out} using {}", self.api_version)
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.manager.is_empty() {
            m.insert("manager".into(), Value::String(self.manager.clone()));
        }
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(time) = &self.time {
            m.insert("time".into(), Value::String(time.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert(
                "subresource".into(),
                Value::String(self.subresource.clone()),
            );
        }
        Value::Object(m)
    }

    fn from_json(i: usize, v: &Value) -> Result<Entry, String> {
        let Some(m) = v.as_object() else {
            return Err(format!("managed fields entry {i} is not an object"));
        };
        let string = |name: &str| match m.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "invalid {name} {} in managed fields entry {i}",
                to_go_json(other)
            )),
        };
        let operation = string("operation")?;
        if operation != APPLY && operation != UPDATE {
            return Err("operation must be `Apply` or `Update`".into());
        }
        let api_version = string("apiVersion")?;
        if api_version.is_empty() {
            return Err("apiVersion must not be empty".into());
        }
        match string("fieldsType")?.as_str() {
            "FieldsV1" => {}
            "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
            other => {
                return Err(format!(
                    "invalid fieldsType {} in managed fields entry {i}",
                    go_quote(other)
                ));
            }
        }
        let set = match m.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::default(),
            Some(fields) => FieldSet::from_fields_v1(fields)
                .map_err(|e| format!("error decoding versioned set from entry {i}: {e}"))?,
        };
        let time = string("time")?;
        Ok(Entry {
            manager: string("manager")?,
            operation,
            api_version,
            subresource: string("subresource")?,
            time: (!time.is_empty()).then_some(time),
            set,
        })
    }
}

/// Upstream's `DecodeManagedFields` of `metadata.managedFields`.
fn decode_managed(obj: &Value) -> Result<Managed, String> {
    let mut out = Managed::new();
    match obj.get("metadata").and_then(|m| m.get("managedFields")) {
        None | Some(Value::Null) => {}
        Some(Value::Array(entries)) => {
            for (i, e) in entries.iter().enumerate() {
                let entry = Entry::from_json(i, e)?;
                out.insert(entry.id(), entry);
            }
        }
        Some(_) => return Err("managedFields must be a list".into()),
    }
    Ok(out)
}

/// Upstream's `isResetManagedFields`: an empty list, or a list of one empty entry.
fn is_reset_managed_fields(obj: &Value) -> bool {
    let empty = |v: &Value| v.is_null() || v.as_str() == Some("");
    match obj.get("metadata").and_then(|m| m.get("managedFields")) {
        Some(Value::Array(entries)) => match entries.as_slice() {
            [] => true,
            [Value::Object(entry)] => entry.values().all(empty),
            _ => false,
        },
        _ => false,
    }
}

fn remove_managed_fields(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
}

/// Upstream's `EncodeObjectManagedFields`: entries sorted by operation (Apply first), time
/// (in seconds), manager, apiVersion and subresource; no entries, no field.
fn encode_managed(obj: &mut Value, managed: &Managed) {
    let mut entries: Vec<&Entry> = managed.values().collect();
    entries.sort_by(|p, q| {
        p.operation
            .cmp(&q.operation)
            .then_with(|| entry_seconds(p).cmp(&entry_seconds(q)))
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.subresource.cmp(&q.subresource))
    });
    let Some(obj) = obj.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        return;
    }
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Some(meta) = meta.as_object_mut() {
        let list = entries.into_iter().map(Entry::to_json).collect();
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

fn entry_seconds(e: &Entry) -> i64 {
    e.time.as_deref().map_or(0, unix_seconds)
}

/// Seconds since the epoch of an RFC3339 time (0 when it does not parse).
fn unix_seconds(t: &str) -> i64 {
    fn num(s: &str, range: std::ops::Range<usize>) -> Option<i64> {
        let part = s.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    }
    let parse = || -> Option<i64> {
        let (y, mo, d) = (num(t, 0..4)?, num(t, 5..7)?, num(t, 8..10)?);
        let (h, mi, s) = (num(t, 11..13)?, num(t, 14..16)?, num(t, 17..19)?);
        // Days from the civil date (Howard Hinnant's algorithm).
        let y = if mo <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let mut rest = t.get(19..)?;
        if let Some(frac) = rest.strip_prefix('.') {
            rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
        }
        let offset = match rest {
            "Z" | "z" => 0,
            _ => {
                let sign = match rest.get(..1)? {
                    "+" => 1,
                    "-" => -1,
                    _ => return None,
                };
                sign * (num(rest, 1..3)? * 3600 + num(rest, 4..6)? * 60)
            }
        };
        Some(days * 86_400 + h * 3600 + mi * 60 + s - offset)
    };
    parse().unwrap_or(0)
}

/// Upstream's `capManagersManager`: past ten Update entries, the oldest are merged into one
/// "ancient-changes" entry per apiVersion.
fn cap_managers(managed: &mut Managed) {
    let mut updaters: Vec<(i64, String)> = managed
        .iter()
        .filter(|(_, e)| !e.applied())
        .map(|(id, e)| (entry_seconds(e), id.clone()))
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort();
    let mut length = updaters.len();
    let mut first_of_version: HashMap<String, String> = HashMap::new();
    for (_, id) in updaters {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let Some(entry) = managed.get(&id).cloned() else {
            continue;
        };
        let mut bucket = Entry {
            manager: ANCIENT_CHANGES.to_owned(),
            operation: UPDATE.to_owned(),
            api_version: entry.api_version.clone(),
            subresource: String::new(),
            time: None,
            set: FieldSet::default(),
        };
        let bucket_id = bucket.id();
        let Some(first) = first_of_version.get(&entry.api_version) else {
            first_of_version.insert(entry.api_version.clone(), id);
            continue;
        };
        if let Some(existing) = managed.get(&bucket_id) {
            bucket.set = existing.set.clone();
        } else if let Some(first) = managed.remove(first) {
            bucket.set = first.set;
        }
        bucket.set = entry.set.union(&bucket.set);
        bucket.time = entry.time.clone();
        managed.remove(&id);
        managed.insert(bucket_id, bucket);
        length -= 1;
    }
}

/// One conflicting field.
#[derive(Debug, Clone)]
struct Conflict {
    id: String,
    manager: String,
    printed: String,
    path: Vec<Pe>,
}

/// Upstream's `NewConflictError` message, grouped by manager identifier.
fn conflict_error(mut conflicts: Vec<Conflict>) -> SsaError {
    conflicts.sort_by(|a, b| a.id.cmp(&b.id));
    let message = match conflicts.as_slice() {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.printed,
            path_string(&one.path)
        ),
        all => {
            let mut lines: Vec<String> = Vec::new();
            for (i, c) in all.iter().enumerate() {
                if i == 0 || all[i - 1].id != c.id {
                    lines.push(format!("conflicts with {}:", c.printed));
                }
                lines.push(format!("- {}", path_string(&c.path)));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                all.len(),
                lines.join("\n")
            )
        }
    };
    SsaError::Conflicts {
        conflicts: conflicts
            .into_iter()
            .map(|c| (c.manager, path_string(&c.path)))
            .collect(),
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Apply and update
// ---------------------------------------------------------------------------------------------

/// `status` is reset on the main resource: never owned, never a conflict through it.
fn ignored_fields() -> FieldSet {
    let mut s = FieldSet::default();
    s.insert(&[Pe::Field("status".into())]);
    s
}

/// Upstream's `stripMetaManager` set: identity and server-owned fields nobody owns.
fn strip_set() -> FieldSet {
    let mut s = FieldSet::default();
    for top in ["apiVersion", "kind", "metadata"] {
        s.insert(&[Pe::Field(top.into())]);
    }
    for field in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        s.insert(&[Pe::Field("metadata".into()), Pe::Field(field.into())]);
    }
    s
}

fn str_at<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get(field).and_then(Value::as_str).unwrap_or("")
}

fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `schema.GroupVersionKind.String()` of an apiVersion and kind: `apps/v1, Kind=Deployment`,
/// `/v1, Kind=ConfigMap`.
fn gvk_string(api_version: &str, kind: &str) -> String {
    let (group, version) = split_api_version(api_version);
    format!("{group}/{version}, Kind={kind}")
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) if !version.contains('/') => (group, version),
        Some(_) => ("", ""),
        None => ("", api_version),
    }
}

/// The checks upstream makes before merging: the configuration is an object of the request's
/// kind and version, without managedFields.
fn check_applied(kind: &str, api_version: &str, applied: &Value) -> Result<(), SsaError> {
    let type_name = match applied {
        Value::Object(_) | Value::Null => None,
        Value::Array(_) => Some("array"),
        Value::String(_) => Some("string"),
        Value::Number(_) => Some("number"),
        Value::Bool(_) => Some("bool"),
    };
    if let Some(t) = type_name {
        return Err(SsaError::Invalid(format!(
            "error decoding YAML: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {t} into Go value of type map[string]interface {{}}"
        )));
    }
    let (av, k) = (str_at(applied, "apiVersion"), str_at(applied, "kind"));
    if split_api_version(av) != split_api_version(api_version) || k != kind {
        return Err(SsaError::Invalid(format!(
            "invalid object type: {}",
            gvk_string(av, k)
        )));
    }
    let managed = applied.get("metadata").and_then(|m| m.get("managedFields"));
    if managed.is_some_and(|m| !m.is_null()) {
        return Err(SsaError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    Ok(())
}

/// Upstream's `Updater.update`: other managers lose the fields that changed (a conflict
/// unless `force`) and the fields that were removed; empty entries go.
fn update_managers(
    root: Ty,
    old: &Value,
    new: &Value,
    managed: &mut Managed,
    workflow: &str,
    force: bool,
) -> Result<Comparison, Vec<Conflict>> {
    let mut cmp = compare(root, old, new);
    cmp.exclude(&ignored_fields());
    let changed = cmp.modified.union(&cmp.added);
    let mut conflicts: Vec<(String, FieldSet)> = Vec::new();
    for (id, entry) in managed.iter() {
        if id == workflow {
            continue;
        }
        let taken = entry.set.intersection(&changed);
        if !taken.is_empty() {
            conflicts.push((id.clone(), taken));
        }
    }
    if !force && !conflicts.is_empty() {
        let mut out = Vec::new();
        for (id, taken) in conflicts {
            let Some(entry) = managed.get(&id) else {
                continue;
            };
            for path in taken.paths() {
                out.push(Conflict {
                    id: id.clone(),
                    manager: entry.manager.clone(),
                    printed: entry.printed(),
                    path,
                });
            }
        }
        return Err(out);
    }
    for (id, taken) in conflicts {
        if let Some(entry) = managed.get_mut(&id) {
            entry.set = entry.set.difference(&taken);
        }
    }
    if !cmp.removed.is_empty() {
        for (id, entry) in managed.iter_mut() {
            if id != workflow {
                entry.set = entry.set.difference(&cmp.removed);
            }
        }
    }
    managed.retain(|_, e| !e.set.is_empty());
    Ok(cmp)
}

/// One apply attempt (upstream's chain below the last-applied handling).
struct ApplyOp<'a> {
    root: Ty,
    live: &'a Value,
    config: &'a Value,
    config_set: &'a FieldSet,
    manager: &'a str,
    api_version: &'a str,
    now: &'a str,
}

impl ApplyOp<'_> {
    fn run(&self, mut managed: Managed, force: bool) -> Result<(Value, Managed), Vec<Conflict>> {
        let merged = merge(self.root, self.live, self.config, 0);
        let mut entry = Entry {
            manager: self.manager.to_owned(),
            operation: APPLY.to_owned(),
            api_version: self.api_version.to_owned(),
            subresource: String::new(),
            time: None,
            set: self.config_set.recursive_difference(&ignored_fields()),
        };
        let id = entry.id();
        let last = managed.get(&id).map(|e| e.set.clone());
        entry.time = managed.get(&id).and_then(|e| e.time.clone());
        managed.insert(id.clone(), entry);
        let new = match last {
            Some(last) if !last.is_empty() => prune(self.root, &merged, &managed, &last),
            _ => merged,
        };
        update_managers(self.root, self.live, &new, &mut managed, &id, force)?;
        let noop = value_eq(self.live, &new);
        if let Some(entry) = managed.get_mut(&id) {
            entry.set = entry.set.difference(&strip_set());
            if !noop {
                entry.time = Some(self.now.to_owned());
            }
            if entry.set.is_empty() {
                managed.remove(&id);
            }
        }
        cap_managers(&mut managed);
        Ok((if noop { self.live.clone() } else { new }, managed))
    }
}

/// Upstream's `Updater.prune`: removes what the applier owned last time and no longer applies,
/// unless someone else (or its new configuration) still owns it.
fn prune(root: Ty, merged: &Value, managed: &Managed, last: &FieldSet) -> Value {
    let named = |s: &FieldSet| ensure_named(s, root, 0);
    let last = named(last);
    let pruned = remove_items(root, merged, &last, 0).unwrap_or_else(empty_object);
    // Add back what anyone owns.
    let owned = managed
        .values()
        .fold(FieldSet::default(), |acc, e| acc.union(&e.set));
    let merged_set = named(&typed_set(root, merged));
    let pruned_set = named(&typed_set(root, &pruned));
    let lost = merged_set.difference(&pruned_set.union(&named(&owned)));
    let pruned = remove_items(root, merged, &lost, 0).unwrap_or_else(empty_object);
    // Add back what the applier did not own last time.
    let pruned_set = named(&typed_set(root, &pruned));
    let dangling = merged_set.difference(&pruned_set).intersection(&last);
    remove_items(root, merged, &dangling, 0).unwrap_or_else(empty_object)
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

// ---------------------------------------------------------------------------------------------
// kubectl's client-side apply annotation
// ---------------------------------------------------------------------------------------------

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Upstream's `TotalAnnotationSizeLimitB`.
const ANNOTATIONS_SIZE_LIMIT: usize = 256 * 1024;

fn last_applied(obj: &Value) -> Option<&str> {
    obj.get("metadata")?
        .get("annotations")?
        .get(LAST_APPLIED)?
        .as_str()
        .filter(|s| !s.is_empty())
}

fn has_last_applied(obj: &Value) -> bool {
    last_applied(obj).is_some()
}

/// Upstream's `lastAppliedManager`: the fields of the last client-side applied configuration
/// that still hold their applied values; "kubectl" may take them over without conflicts.
fn allowed_from_last_applied(root: Ty, live: &Value, api_version: &str) -> Option<FieldSet> {
    let last: Value = serde_json::from_str(last_applied(live)?).ok()?;
    if !last.is_object()
        || str_at(&last, "kind").is_empty()
        || str_at(&last, "apiVersion") != api_version
    {
        return None;
    }
    let set = typed_set_strict(root, &last).ok()?;
    let cmp = compare(root, &last, live);
    Some(
        set.difference(&cmp.modified)
            .difference(&cmp.added)
            .difference(&cmp.removed),
    )
}

/// Upstream's `buildLastApplied`: the applied configuration without the annotation itself, as
/// Go's JSON encoder writes it (with its trailing newline).
fn build_last_applied(applied: &Value) -> String {
    let mut obj = applied.clone();
    if let Some(annotations) = obj
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        annotations.remove(LAST_APPLIED);
    }
    let mut out = to_go_json(&obj);
    out.push('\n');
    out
}

/// Upstream's `setLastApplied`: dropped when the annotations would grow past their limit.
fn set_last_applied(obj: &mut Value, value: String) {
    let Some(obj) = obj.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    let Some(annotations) = annotations.as_object_mut() else {
        return;
    };
    annotations.insert(LAST_APPLIED.to_owned(), Value::String(value));
    let size: usize = annotations
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if size > ANNOTATIONS_SIZE_LIMIT {
        annotations.remove(LAST_APPLIED);
    }
    if annotations.is_empty() {
        meta.remove("annotations");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: &str = "2024-05-01T10:00:00Z";
    const T1: &str = "2024-05-01T10:01:00Z";
    const T2: &str = "2024-05-01T10:02:00Z";

    fn cm(data: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "default"},
            "data": data,
        })
    }

    fn apply_cm(
        current: Option<&Value>,
        data: Value,
        manager: &str,
        force: bool,
        now: &str,
    ) -> Result<Value, SsaError> {
        apply(
            "",
            "ConfigMap",
            "v1",
            current,
            &cm(data),
            manager,
            force,
            now,
        )
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": image}]},
                },
            },
        })
    }

    fn apply_deploy(
        current: Option<&Value>,
        config: &Value,
        manager: &str,
        force: bool,
        now: &str,
    ) -> Result<Value, SsaError> {
        apply(
            "apps",
            "Deployment",
            "apps/v1",
            current,
            config,
            manager,
            force,
            now,
        )
    }

    fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
        obj["metadata"]["managedFields"]
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager && e["operation"] == operation)
    }

    fn fields<'a>(obj: &'a Value, manager: &str, operation: &str) -> &'a Value {
        entry(obj, manager, operation).map_or(&Value::Null, |e| &e["fieldsV1"])
    }

    fn conflict(result: Result<Value, SsaError>) -> (Vec<(String, String)>, String) {
        match result {
            Err(SsaError::Conflicts { conflicts, message }) => (conflicts, message),
            other => panic!("expected conflicts, got {other:?}"),
        }
    }

    fn invalid(result: Result<Value, SsaError>) -> String {
        match result {
            Err(SsaError::Invalid(message)) => message,
            other => panic!("expected an invalid configuration, got {other:?}"),
        }
    }

    #[test]
    fn apply_creates_the_object_with_an_apply_entry() {
        let obj = apply_cm(None, json!({"a": "1"}), "kubectl", false, T0).unwrap();
        assert_eq!(obj["data"], json!({"a": "1"}));
        assert_eq!(obj["metadata"]["name"], "cm");
        assert_eq!(
            obj["metadata"]["managedFields"],
            json!([{
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": "v1",
                "time": T0,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:a": {}}},
            }])
        );
    }

    #[test]
    fn reapplying_the_same_configuration_changes_nothing() {
        let obj = apply_cm(None, json!({"a": "1", "b": "2"}), "kubectl", false, T0).unwrap();
        let again = apply_cm(
            Some(&obj),
            json!({"a": "1", "b": "2"}),
            "kubectl",
            false,
            T1,
        )
        .unwrap();
        assert_eq!(again, obj);
        assert_eq!(again.to_string(), obj.to_string());
    }

    #[test]
    fn a_changed_value_updates_the_time() {
        let obj = apply_cm(None, json!({"a": "1"}), "kubectl", false, T0).unwrap();
        let changed = apply_cm(Some(&obj), json!({"a": "2"}), "kubectl", false, T1).unwrap();
        assert_eq!(changed["data"], json!({"a": "2"}));
        assert_eq!(entry(&changed, "kubectl", "Apply").unwrap()["time"], T1);
    }

    #[test]
    fn fields_dropped_from_the_configuration_are_removed() {
        let obj = apply_cm(None, json!({"a": "1", "b": "2"}), "kubectl", false, T0).unwrap();
        let obj = apply_cm(Some(&obj), json!({"a": "1"}), "kubectl", false, T1).unwrap();
        assert_eq!(obj["data"], json!({"a": "1"}));
        assert_eq!(
            fields(&obj, "kubectl", "Apply"),
            &json!({"f:data": {"f:a": {}}})
        );

        // Nothing left to apply: the map goes, and so does the manager's entry.
        let config = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "default"},
        });
        let obj = apply(
            "",
            "ConfigMap",
            "v1",
            Some(&obj),
            &config,
            "kubectl",
            false,
            T2,
        )
        .unwrap();
        assert!(obj.get("data").is_none(), "{obj}");
        assert!(obj["metadata"].get("managedFields").is_none(), "{obj}");
    }

    #[test]
    fn fields_someone_else_owns_are_not_removed() {
        let obj = apply_cm(None, json!({"a": "1", "b": "2"}), "one", false, T0).unwrap();
        let obj = apply_cm(Some(&obj), json!({"b": "2"}), "two", false, T1).unwrap();
        let obj = apply_cm(Some(&obj), json!({"a": "1"}), "one", false, T2).unwrap();
        assert_eq!(obj["data"], json!({"a": "1", "b": "2"}));
        assert_eq!(
            fields(&obj, "one", "Apply"),
            &json!({"f:data": {"f:a": {}}})
        );
        assert_eq!(
            fields(&obj, "two", "Apply"),
            &json!({"f:data": {"f:b": {}}})
        );
    }

    #[test]
    fn appliers_conflict_on_different_values() {
        let obj = apply_cm(None, json!({"a": "1"}), "one", false, T0).unwrap();
        let (conflicts, message) =
            conflict(apply_cm(Some(&obj), json!({"a": "2"}), "two", false, T1));
        assert_eq!(conflicts, vec![("one".to_owned(), ".data.a".to_owned())]);
        assert_eq!(
            message,
            r#"Apply failed with 1 conflict: conflict with "one": .data.a"#
        );
    }

    #[test]
    fn appliers_share_equal_values() {
        let obj = apply_cm(None, json!({"a": "1"}), "one", false, T0).unwrap();
        let obj = apply_cm(Some(&obj), json!({"a": "1"}), "two", false, T1).unwrap();
        assert_eq!(
            fields(&obj, "one", "Apply"),
            &json!({"f:data": {"f:a": {}}})
        );
        assert_eq!(
            fields(&obj, "two", "Apply"),
            &json!({"f:data": {"f:a": {}}})
        );
        // The object did not change: the new entry gets no time, like upstream.
        assert!(entry(&obj, "two", "Apply").unwrap().get("time").is_none());
    }

    #[test]
    fn force_takes_ownership() {
        let obj = apply_cm(None, json!({"a": "1", "b": "1"}), "one", false, T0).unwrap();
        let obj = apply_cm(Some(&obj), json!({"a": "2"}), "two", true, T1).unwrap();
        assert_eq!(obj["data"], json!({"a": "2", "b": "1"}));
        assert_eq!(
            fields(&obj, "one", "Apply"),
            &json!({"f:data": {"f:b": {}}})
        );
        assert_eq!(
            fields(&obj, "two", "Apply"),
            &json!({"f:data": {"f:a": {}}})
        );
        // The former owner no longer conflicts with the new value and cannot remove it.
        let obj = apply_cm(Some(&obj), json!({"b": "1"}), "one", false, T2).unwrap();
        assert_eq!(obj["data"], json!({"a": "2", "b": "1"}));
    }

    #[test]
    fn entries_are_ordered_like_upstream() {
        let obj = apply_cm(None, json!({"a": "1"}), "zeta", false, T0).unwrap();
        let mut obj = apply_cm(Some(&obj), json!({"b": "1"}), "alpha", false, T2).unwrap();
        let old = obj.clone();
        obj["data"]["c"] = json!("1");
        track_update("", "ConfigMap", "v1", Some(&old), &mut obj, "editor", T1);
        let order: Vec<(&str, &str)> = obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap(),
                    e["operation"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![("zeta", "Apply"), ("alpha", "Apply"), ("editor", "Update")]
        );
    }
    /// What `kubectl apply` (client-side) creates: the object with its annotation, written by
    /// an ordinary create under "kubectl-client-side-apply".
    fn client_side_applied(data: Value) -> Value {
        let mut obj = cm(data);
        let last = build_last_applied(&obj);
        obj["metadata"]["annotations"] = json!({LAST_APPLIED: last});
        track_update(
            "",
            "ConfigMap",
            "v1",
            None,
            &mut obj,
            "kubectl-client-side-apply",
            T0,
        );
        obj
    }

    #[test]
    fn client_side_apply_is_tracked_as_an_update() {
        let obj = client_side_applied(json!({"a": "1", "b": "2"}));
        assert_eq!(
            obj["metadata"]["annotations"][LAST_APPLIED],
            "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"1\",\"b\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"cm\",\"namespace\":\"default\"}}\n"
        );
        assert_eq!(
            entry(&obj, "kubectl-client-side-apply", "Update").unwrap(),
            &json!({
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "v1",
                "time": T0,
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:data": {".": {}, "f:a": {}, "f:b": {}},
                    "f:metadata": {"f:annotations": {
                        ".": {},
                        "f:kubectl.kubernetes.io/last-applied-configuration": {},
                    }},
                },
            })
        );
    }

    #[test]
    fn server_side_apply_conflicts_with_client_side_apply_on_changed_values_only() {
        let obj = client_side_applied(json!({"a": "1", "b": "2"}));
        let (conflicts, message) =
            conflict(apply_cm(Some(&obj), json!({"a": "9"}), "other", false, T1));
        assert_eq!(
            conflicts,
            vec![("kubectl-client-side-apply".to_owned(), ".data.a".to_owned())]
        );
        assert_eq!(
            message,
            r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .data.a"#
        );

        // Equal values: no conflict, both own the field.
        let same = apply_cm(Some(&obj), json!({"a": "1"}), "other", false, T1).unwrap();
        assert_eq!(same["data"], obj["data"]);
        assert_eq!(
            fields(&same, "other", "Apply"),
            &json!({"f:data": {"f:a": {}}})
        );
        assert_eq!(
            fields(&same, "kubectl-client-side-apply", "Update")["f:data"],
            json!({".": {}, "f:a": {}, "f:b": {}})
        );
    }

    #[test]
    fn kubectl_server_side_takes_over_its_client_side_apply() {
        let obj = client_side_applied(json!({"a": "1", "b": "2"}));
        let obj = apply_cm(
            Some(&obj),
            json!({"a": "9", "b": "2"}),
            "kubectl",
            false,
            T1,
        )
        .unwrap();
        assert_eq!(obj["data"], json!({"a": "9", "b": "2"}));
        assert_eq!(
            fields(&obj, "kubectl", "Apply"),
            &json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
        assert_eq!(
            fields(&obj, "kubectl-client-side-apply", "Update")["f:data"],
            json!({".": {}, "f:b": {}})
        );
        // The annotation follows the server-side applied configuration.
        assert_eq!(
            obj["metadata"]["annotations"][LAST_APPLIED],
            "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"9\",\"b\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"cm\",\"namespace\":\"default\"}}\n"
        );

        // A value changed by someone else since the client-side apply still conflicts.
        let mut edited = client_side_applied(json!({"a": "1"}));
        let old = edited.clone();
        edited["data"]["a"] = json!("5");
        track_update(
            "",
            "ConfigMap",
            "v1",
            Some(&old),
            &mut edited,
            "kubectl-edit",
            T1,
        );
        let (conflicts, _) = conflict(apply_cm(
            Some(&edited),
            json!({"a": "9"}),
            "kubectl",
            false,
            T2,
        ));
        assert_eq!(
            conflicts,
            vec![("kubectl-edit".to_owned(), ".data.a".to_owned())]
        );
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let obj = client_side_applied(json!({"a": "1", "b": "2"}));
        let mut new = obj.clone();
        new["data"]["a"] = json!("3");
        new["data"].as_object_mut().unwrap().remove("b");
        track_update(
            "",
            "ConfigMap",
            "v1",
            Some(&obj),
            &mut new,
            "kubectl-edit",
            T1,
        );
        assert_eq!(
            fields(&new, "kubectl-edit", "Update"),
            &json!({"f:data": {"f:a": {}}})
        );
        assert_eq!(
            fields(&new, "kubectl-client-side-apply", "Update")["f:data"],
            json!({}),
            "the map itself stays owned"
        );

        // No change: nothing moves, no time changes.
        let mut again = new.clone();
        track_update(
            "",
            "ConfigMap",
            "v1",
            Some(&new),
            &mut again,
            "kubectl-edit",
            T2,
        );
        assert_eq!(again, new);
    }

    #[test]
    fn managed_fields_can_be_reset_but_not_dropped_by_accident() {
        let obj = client_side_applied(json!({"a": "1"}));
        let mut dropped = obj.clone();
        dropped["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        track_update(
            "",
            "ConfigMap",
            "v1",
            Some(&obj),
            &mut dropped,
            "kubectl-edit",
            T1,
        );
        assert_eq!(dropped, obj);

        for reset in [json!([]), json!([{}])] {
            let mut new = obj.clone();
            new["metadata"]["managedFields"] = reset;
            track_update(
                "",
                "ConfigMap",
                "v1",
                Some(&obj),
                &mut new,
                "kubectl-edit",
                T1,
            );
            assert!(new["metadata"].get("managedFields").is_none(), "{new}");
        }
    }

    #[test]
    fn deep_paths_are_printed_like_upstream() {
        let obj = apply_deploy(None, &deployment(1, "nginx:1"), "one", false, T0).unwrap();
        let (conflicts, message) = conflict(apply_deploy(
            Some(&obj),
            &deployment(1, "nginx:2"),
            "two",
            false,
            T1,
        ));
        assert_eq!(
            conflicts,
            vec![(
                "one".to_owned(),
                r#".spec.template.spec.containers[name="c"].image"#.to_owned()
            )]
        );
        assert_eq!(
            message,
            r#"Apply failed with 1 conflict: conflict with "one": .spec.template.spec.containers[name="c"].image"#
        );
    }

    #[test]
    fn several_conflicts_are_grouped_by_manager() {
        let mut created = deployment(1, "nginx:1");
        track_update(
            "apps",
            "Deployment",
            "apps/v1",
            None,
            &mut created,
            "kubectl-create",
            T0,
        );
        let mut obj = created.clone();
        obj["metadata"]["labels"] = json!({"team": "a"});
        track_update(
            "apps",
            "Deployment",
            "apps/v1",
            Some(&created),
            &mut obj,
            "kubectl-label",
            T1,
        );

        let mut config = deployment(3, "nginx:2");
        config["metadata"]["labels"] = json!({"team": "b"});
        let (conflicts, message) = conflict(apply_deploy(Some(&obj), &config, "mgr", false, T2));
        assert_eq!(conflicts.len(), 3);
        assert_eq!(
            message,
            "Apply failed with 3 conflicts: conflicts with \"kubectl-create\" using apps/v1:\n\
             - .spec.replicas\n\
             - .spec.template.spec.containers[name=\"c\"].image\n\
             conflicts with \"kubectl-label\" using apps/v1:\n\
             - .metadata.labels.team"
        );

        let forced = apply_deploy(Some(&obj), &config, "mgr", true, T2).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        // Upstream keeps the updater's ownership of the map it created.
        assert_eq!(
            fields(&forced, "kubectl-label", "Update"),
            &json!({"f:metadata": {"f:labels": {}}})
        );
    }

    #[test]
    fn containers_merge_by_name() {
        let obj = apply_deploy(None, &deployment(1, "nginx:1"), "one", false, T0).unwrap();
        let mut sidecar = deployment(1, "nginx:1");
        sidecar["spec"] = json!({"template": {"spec": {"containers": [
            {"name": "log", "image": "busybox", "ports": [{"containerPort": 80}]},
        ]}}});
        let obj = apply_deploy(Some(&obj), &sidecar, "two", false, T1).unwrap();
        let names: Vec<&Value> = obj["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, vec!["c", "log"]);
        assert_eq!(
            fields(&obj, "two", "Apply"),
            &json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"log\"}": {
                    ".": {},
                    "f:image": {},
                    "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                        ".": {},
                        "f:containerPort": {},
                    }},
                },
            }}}}})
        );

        // "one" drops nothing it did not own; dropping its own container removes it.
        let mut only_replicas = deployment(2, "nginx:1");
        only_replicas["spec"]["template"]["spec"]["containers"] = json!([]);
        let obj = apply_deploy(Some(&obj), &only_replicas, "one", false, T2).unwrap();
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"],
            json!([{"name": "log", "image": "busybox", "ports": [{"containerPort": 80}]}])
        );
        assert_eq!(obj["spec"]["replicas"], 2);
    }
    #[test]
    fn create_records_fields_like_upstream() {
        let mut obj = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                         "uid": "u", "resourceVersion": "1", "creationTimestamp": T0},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{"name": "nginx", "image": "nginx", "resources": {},
                                        "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
                        "restartPolicy": "Always",
                    },
                },
            },
            "status": {"replicas": 0},
        });
        track_update(
            "apps",
            "Deployment",
            "apps/v1",
            None,
            &mut obj,
            "kubectl-create",
            T0,
        );
        assert_eq!(
            fields(&obj, "kubectl-create", "Update"),
            &json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:strategy": {
                        "f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}},
                        "f:type": {},
                    },
                    "f:template": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {
                            "f:containers": {"k:{\"name\":\"nginx\"}": {
                                ".": {},
                                "f:image": {},
                                "f:name": {},
                                "f:ports": {
                                    ".": {},
                                    "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                        ".": {},
                                        "f:containerPort": {},
                                        "f:protocol": {},
                                    },
                                },
                                "f:resources": {},
                            }},
                            "f:restartPolicy": {},
                        },
                    },
                },
            })
        );

        // Custom resources have no zero value: their top-level maps are created too.
        let mut cr = json!({"apiVersion": "example.com/v1", "kind": "Widget",
                            "metadata": {"name": "w"}, "spec": {"size": 1}});
        track_update(
            "example.com",
            "Widget",
            "example.com/v1",
            None,
            &mut cr,
            "m",
            T0,
        );
        assert_eq!(
            fields(&cr, "m", "Update"),
            &json!({"f:spec": {".": {}, "f:size": {}}})
        );
    }

    #[test]
    fn apply_sets_skip_identity_status_and_use_list_identities() {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": "x"}, "finalizers": ["example.com/f"],
                         "ownerReferences": [{"uid": "123", "kind": "ReplicaSet", "name": "r",
                                              "apiVersion": "apps/v1"}]},
            "spec": {
                "containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "1"}],
                                "command": ["sh"]}],
                "nodeSelector": {"disk": "ssd"},
                "imagePullSecrets": [{"name": "s"}],
            },
            "status": {"phase": "Running"},
        });
        let obj = apply("", "Pod", "v1", None, &config, "m", false, T0).unwrap();
        assert_eq!(
            fields(&obj, "m", "Apply"),
            &json!({
                "f:metadata": {
                    "f:finalizers": {"v:\"example.com/f\"": {}},
                    "f:labels": {"f:app": {}},
                    "f:ownerReferences": {"k:{\"uid\":\"123\"}": {}},
                },
                "f:spec": {
                    "f:containers": {"k:{\"name\":\"c\"}": {
                        ".": {},
                        "f:command": {},
                        "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}},
                        "f:image": {},
                        "f:name": {},
                    }},
                    "f:imagePullSecrets": {"k:{\"name\":\"s\"}": {}},
                    "f:nodeSelector": {},
                },
            })
        );
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let msg = invalid(apply_deploy(None, &json!([1]), "m", false, T0));
        assert!(msg.starts_with("error decoding YAML:"), "{msg}");

        let msg = invalid(apply(
            "",
            "Secret",
            "v1",
            None,
            &cm(json!({})),
            "m",
            false,
            T0,
        ));
        assert_eq!(msg, "invalid object type: /v1, Kind=ConfigMap");

        let mut with_managed = cm(json!({}));
        with_managed["metadata"]["managedFields"] = json!([]);
        let msg = invalid(apply(
            "",
            "ConfigMap",
            "v1",
            None,
            &with_managed,
            "m",
            false,
            T0,
        ));
        assert_eq!(msg, "metadata.managedFields must be nil");

        let mut nameless = deployment(1, "i");
        nameless["spec"]["template"]["spec"]["containers"] = json!([{"image": "i"}]);
        assert_eq!(
            invalid(apply_deploy(None, &nameless, "m", false, T0)),
            "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): \
             .spec.template.spec.containers: element 0: associative list with keys has an \
             element that omits key field \"name\" (and doesn't have default value)"
        );

        let mut twice = deployment(1, "i");
        twice["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "c"}, {"name": "c", "image": "j"}]);
        let msg = invalid(apply_deploy(None, &twice, "m", false, T0));
        assert!(
            msg.ends_with(".spec.template.spec.containers: duplicate entries for key [name=\"c\"]"),
            "{msg}"
        );

        let mut list_spec = deployment(1, "i");
        list_spec["spec"] = json!([1]);
        let msg = invalid(apply_deploy(None, &list_spec, "m", false, T0));
        assert!(msg.ends_with(".spec: expected map, got &{[1]}"), "{msg}");

        let mut map_list = deployment(1, "i");
        map_list["spec"]["template"]["spec"]["containers"] = json!({"name": "c"});
        let msg = invalid(apply_deploy(None, &map_list, "m", false, T0));
        assert!(
            msg.contains(".spec.template.spec.containers: expected list"),
            "{msg}"
        );
    }

    #[test]
    fn fields_v1_round_trips() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}}},
                       "f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {}}},
            "f:finalizers": {"v:\"a\"": {}, "v:3": {}},
            "i:2": {},
            "x:future": {},
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        let mut expected = v.clone();
        expected.as_object_mut().unwrap().remove("x:future");
        assert_eq!(set.to_fields_v1(), expected);
        assert!(set.has(&[Pe::Field("metadata".into()), Pe::Field("labels".into())]));
        assert!(!set.has(&[Pe::Field("metadata".into())]));
        assert!(FieldSet::from_fields_v1(&json!({"x": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"k:[1]": {}})).is_err());
    }

    #[test]
    fn old_update_entries_are_merged_into_ancient_changes() {
        let mut obj = cm(json!({}));
        for i in 0..12 {
            let old = obj.clone();
            obj["data"][format!("k{i}")] = json!("v");
            let now = format!("2024-05-01T10:{i:02}:00Z");
            track_update(
                "",
                "ConfigMap",
                "v1",
                Some(&old),
                &mut obj,
                &format!("m{i}"),
                &now,
            );
        }
        let entries = obj["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 10);
        let ancient = entry(&obj, "ancient-changes", "Update").unwrap();
        assert_eq!(
            ancient["fieldsV1"],
            json!({"f:data": {"f:k0": {}, "f:k1": {}, "f:k2": {}}})
        );
        assert_eq!(ancient["time"], "2024-05-01T10:02:00Z");
        assert!(entry(&obj, "m0", "Update").is_none());
        assert!(entry(&obj, "m3", "Update").is_some());
    }

    #[test]
    fn malformed_input_never_panics() {
        let mut garbage = cm(json!({"a": "1"}));
        garbage["metadata"]["managedFields"] = json!([{"manager": 1}, "x", {"fieldsV1": []}]);
        let obj = apply_cm(Some(&garbage), json!({"a": "2"}), "m", false, T1).unwrap();
        assert_eq!(obj["data"]["a"], "2");

        let mut deep = json!("leaf");
        for _ in 0..300 {
            deep = json!({"x": [deep]});
        }
        let mut config = cm(json!({}));
        config["data"] = deep.clone();
        let _ = apply("", "ConfigMap", "v1", None, &config, "m", false, T0);
        let mut new = config.clone();
        track_update("", "ConfigMap", "v1", Some(&config), &mut new, "m", T0);

        for weird in [
            json!(null),
            json!([1, 2]),
            json!("s"),
            json!({"metadata": 3}),
        ] {
            let mut new = weird.clone();
            track_update(
                "apps",
                "Deployment",
                "apps/v1",
                Some(&weird),
                &mut new,
                "m",
                T0,
            );
            track_update("apps", "Deployment", "apps/v1", None, &mut new, "m", T0);
            let _ = apply(
                "apps",
                "Deployment",
                "apps/v1",
                Some(&weird),
                &weird,
                "m",
                false,
                T0,
            );
        }

        // Stored lists whose items lack their keys are kept as they are.
        let mut stored = deployment(1, "i");
        stored["spec"]["template"]["spec"]["containers"] = json!([{"image": "x"}, 5, null]);
        let obj = apply_deploy(Some(&stored), &deployment(1, "i"), "m", false, T0).unwrap();
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"],
            json!([{"image": "x"}, 5, null, {"name": "c", "image": "i"}])
        );
    }

    #[test]
    fn go_formatting_helpers() {
        assert_eq!(
            to_go_json(&json!({"b": "<&>", "a": [1.5, 1e21, 2e-7, 3]})),
            r#"{"a":[1.5,1e+21,2e-7,3],"b":"\u003c\u0026\u003e"}"#
        );
        assert_eq!(go_quote("a\"b\n\u{1}"), r#""a\"b\n\x01""#);
        assert_eq!(unix_seconds("1970-01-02T00:00:01Z"), 86_401);
        assert_eq!(
            unix_seconds("2024-05-01T12:00:00.5+02:00"),
            unix_seconds("2024-05-01T10:00:00Z")
        );
        assert_eq!(unix_seconds("garbage"), 0);
        let pe = Pe::Key(vec![
            ("port".into(), Val(json!(80))),
            ("protocol".into(), Val(json!("TCP"))),
        ]);
        assert_eq!(pe.to_string(), r#"[port=80,protocol="TCP"]"#);
        assert_eq!(Pe::Value(Val(json!("a"))).to_string(), r#"[="a"]"#);
        assert!(Pe::Field("z".into()) < Pe::Key(vec![]));
        assert!(Val(json!(1)) < Val(json!("a")) && Val(json!(2)) == Val(json!(2.0)));
    }

    #[test]
    fn status_is_never_owned_through_the_main_resource() {
        let mut config = deployment(1, "i");
        config["status"] = json!({"replicas": 5});
        let obj = apply_deploy(None, &config, "m", false, T0).unwrap();
        assert!(fields(&obj, "m", "Apply").get("f:status").is_none());
        let mut new = obj.clone();
        new["status"]["replicas"] = json!(1);
        track_update(
            "apps",
            "Deployment",
            "apps/v1",
            Some(&obj),
            &mut new,
            "controller",
            T1,
        );
        assert!(entry(&new, "controller", "Update").is_none());
    }
    #[test]
    fn reapply_after_defaulting_is_a_no_op_and_keeps_defaults() {
        let config = deployment(2, "nginx:1");
        let mut stored = apply_deploy(None, &config, "kubectl", false, T0).unwrap();
        // What the caller's defaulting adds after apply: unowned fields.
        stored["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        stored["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] =
            json!("IfNotPresent");
        stored["metadata"]["uid"] = json!("u-1");
        let again = apply_deploy(Some(&stored), &config, "kubectl", false, T1).unwrap();
        assert_eq!(again, stored);
        // Someone else may change the defaulted fields without conflicts.
        let mut other = deployment(2, "nginx:1");
        other["spec"] = json!({"strategy": {"type": "Recreate"}});
        let changed = apply_deploy(Some(&stored), &other, "tuner", false, T1).unwrap();
        assert_eq!(changed["spec"]["strategy"]["type"], "Recreate");
    }

    #[test]
    fn list_order_follows_the_configuration_for_its_items() {
        let mut config = deployment(1, "i");
        config["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]);
        let obj = apply_deploy(None, &config, "m", false, T0).unwrap();
        config["spec"]["template"]["spec"]["containers"] = json!([{"name": "c"}, {"name": "a"}]);
        let mut other = deployment(1, "i");
        other["spec"] = json!({"template": {"spec": {"containers": [{"name": "b"}]}}});
        let obj = apply_deploy(Some(&obj), &other, "keeper", false, T1).unwrap();
        let obj = apply_deploy(Some(&obj), &config, "m", false, T2).unwrap();
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b"}, {"name": "c"}, {"name": "a"}])
        );
    }

    #[test]
    fn multi_key_items_print_all_their_keys() {
        let service = |target: i64| {
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "s", "namespace": "default"},
                "spec": {"ports": [{"port": 80, "targetPort": target}], "selector": {"app": "x"}},
            })
        };
        let obj = apply("", "Service", "v1", None, &service(8080), "one", false, T0).unwrap();
        assert_eq!(
            fields(&obj, "one", "Apply"),
            &json!({"f:spec": {
                "f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {
                    ".": {}, "f:port": {}, "f:targetPort": {},
                }},
                "f:selector": {},
            }})
        );
        let (conflicts, _) = conflict(apply(
            "",
            "Service",
            "v1",
            Some(&obj),
            &service(9090),
            "two",
            false,
            T1,
        ));
        assert_eq!(
            conflicts,
            vec![(
                "one".to_owned(),
                r#".spec.ports[port=80,protocol="TCP"].targetPort"#.to_owned()
            )]
        );
    }
}
