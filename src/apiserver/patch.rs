//! Applying PATCH bodies to stored objects: JSON patch (RFC 6902), JSON merge patch (RFC 7396)
//! and Kubernetes strategic merge patch for built-in kinds.
//!
//! Owns only the pure step `(current object, patch body) -> patched object`, with upstream's
//! error wording. It never touches storage or HTTP: the caller reads the object, maps
//! [`PatchError`] to a Status (400, 422, 415), and runs defaulting, admission, validation and
//! the write. Server-side apply (`application/apply-patch+yaml`) is not handled here.
//!
//! Strategic merge patch follows apimachinery's `strategicpatch` as the server runs it
//! (`StrategicMergeMapPatch`), driven by a static table of the `patchStrategy` /
//! `patchMergeKey` struct tags of the built-in types instead of Go reflection.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Number, Value};

/// The patch formats this module applies, chosen by the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    /// The patch type a Content-Type names; parameters (`;charset=utf-8`) and case are ignored.
    /// Apply patches are not handled here, so they answer `None` like any unknown type.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let essence = ct.split_once(';').map_or(ct, |(media, _)| media).trim();
        [
            ("application/json-patch+json", PatchType::Json),
            ("application/merge-patch+json", PatchType::Merge),
            (
                "application/strategic-merge-patch+json",
                PatchType::Strategic,
            ),
        ]
        .into_iter()
        .find(|(media, _)| essence.eq_ignore_ascii_case(media))
        .map(|(_, ptype)| ptype)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// body is not valid JSON / wrong shape -> the server answers 400 BadRequest with this message
    #[error("{0}")]
    BadRequest(String),
    /// patch is well-formed but cannot apply (json-patch test op failed, path missing, bad $patch
    /// directive, ...) -> 422 Invalid
    #[error("{0}")]
    Invalid(String),
    /// strategic merge patch for a kind without patch metadata (custom resources) -> 415
    #[error("{0}")]
    UnsupportedMediaType(String),
}

/// `group` is "" for core, `kind` e.g. "Deployment". Returns the patched object.
pub fn apply(
    group: &str,
    kind: &str,
    ptype: PatchType,
    original: &Value,
    body: &[u8],
) -> Result<Value, PatchError> {
    match ptype {
        PatchType::Json => apply_json_patch(original, body),
        PatchType::Merge => apply_merge_patch(original, body),
        PatchType::Strategic => apply_strategic_patch(group, kind, original, body),
    }
}

/// Upstream's limit on operations in one JSON patch (it answers 413; we answer 400).
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;
/// Bytes `copy` operations may add in one JSON patch: each copy can double the object.
const MAX_COPIED_BYTES: usize = 8 * 1024 * 1024;
/// Deepest nesting serde_json reads back, so a patched object can still be decoded.
const MAX_OBJECT_DEPTH: usize = 127;
/// Recursion cap for strategic merge patch.
const MAX_MERGE_DEPTH: usize = 100;

const UNSUPPORTED_SMP: &str = "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

fn decode_error(e: serde_json::Error) -> PatchError {
    PatchError::BadRequest(format!("error decoding patch: {e}"))
}

fn invalid(msg: impl Into<String>) -> PatchError {
    PatchError::Invalid(msg.into())
}

fn bad_request(msg: &str) -> PatchError {
    PatchError::BadRequest(msg.to_owned())
}

/// Merge and strategic patches must be JSON objects.
fn decode_object(body: &[u8]) -> Result<Map<String, Value>, PatchError> {
    serde_json::from_slice(body).map_err(decode_error)
}

// ---------------------------------------------------------------------------------------------
// JSON patch and merge patch
// ---------------------------------------------------------------------------------------------

fn apply_json_patch(original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    use json_patch::PatchOperation as Op;

    let patch: json_patch::Patch = serde_json::from_slice(body).map_err(decode_error)?;
    if patch.0.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::BadRequest(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            patch.0.len()
        )));
    }
    let mut doc = original.clone();
    // An upper bound on the document's nesting, kept cheaply per operation; the exact depth is
    // only measured when the bound passes the limit. Each operation can at most about double
    // the depth, so a rejected document is still shallow enough to drop without recursion
    // trouble.
    let mut depth_bound = nesting_depth(&doc);
    let mut copied = 0usize;
    for (i, op) in patch.0.iter().enumerate() {
        let reach = match op {
            Op::Add(o) => o.path.count() + nesting_depth(&o.value),
            Op::Replace(o) => o.path.count() + nesting_depth(&o.value),
            Op::Move(o) => o.path.count() + depth_bound,
            Op::Copy(o) => {
                if let Some(src) = doc.pointer(o.from.as_str()) {
                    let budget = MAX_COPIED_BYTES - copied;
                    match json_size_within(src, budget) {
                        Some(n) => copied += n,
                        None => {
                            return Err(invalid(format!(
                                "operation '/{i}' failed at path '{}': copy operations would add more than {MAX_COPIED_BYTES} bytes",
                                o.path
                            )));
                        }
                    }
                }
                o.path.count() + depth_bound
            }
            Op::Remove(_) | Op::Test(_) => 0,
        };
        // Applied one at a time to track growth; `doc` is our copy, so a failure midway is
        // simply dropped (no undo needed).
        json_patch::patch_unsafe(&mut doc, std::slice::from_ref(op)).map_err(|e| {
            invalid(format!(
                "operation '/{i}' failed at path '{}': {}",
                e.path, e.kind
            ))
        })?;
        depth_bound = depth_bound.max(reach);
        if depth_bound > MAX_OBJECT_DEPTH {
            depth_bound = nesting_depth(&doc);
            if depth_bound > MAX_OBJECT_DEPTH {
                return Err(invalid(format!(
                    "operation '/{i}' failed: the patched object would be nested deeper than {MAX_OBJECT_DEPTH} levels"
                )));
            }
        }
    }
    Ok(doc)
}

fn apply_merge_patch(original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    // serde_json's own recursion limit bounds the patch, and so json_patch::merge's recursion.
    let patch = Value::Object(decode_object(body)?);
    let mut doc = original.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}

/// Nesting of containers: a scalar is 0, `{}` is 1. Iterative, so any depth is safe.
fn nesting_depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(m) => stack.extend(m.values().map(|c| (c, d + 1))),
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, d + 1))),
            _ => continue,
        }
        max = max.max(d + 1);
    }
    max
}

/// The serialized size of `v`, or `None` once it passes `budget` (stops writing there).
fn json_size_within(v: &Value, budget: usize) -> Option<usize> {
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self
                .0
                .checked_sub(buf.len())
                .ok_or_else(|| std::io::Error::other("over budget"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = Budget(budget);
    serde_json::to_writer(&mut w, v).ok()?;
    Some(budget - w.0)
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch: schema
// ---------------------------------------------------------------------------------------------

/// How a list field merges: upstream's `patchStrategy` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// No tag: the patch's list replaces the whole list.
    Atomic,
    /// `patchStrategy:"merge"`: by `patchMergeKey` for lists of maps, as a set for primitives.
    Merge(Option<&'static str>),
}

/// Patch metadata of one field: its list strategy and the fields of its (element) type.
#[derive(Debug, Clone, Copy)]
struct Meta {
    list: ListStrategy,
    ty: Option<Fields>,
}

impl Meta {
    /// Unknown fields: plain maps, atomic lists.
    const PLAIN: Meta = Meta {
        list: ListStrategy::Atomic,
        ty: None,
    };

    fn merge_key(&self) -> Option<&'static str> {
        match self.list {
            ListStrategy::Merge(key) => key,
            ListStrategy::Atomic => None,
        }
    }
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    meta: Meta,
}

/// A struct type: only fields with patch metadata (or leading to some) are listed.
type Fields = &'static [Field];

const fn nested(name: &'static str, ty: Fields) -> Field {
    Field {
        name,
        meta: Meta {
            list: ListStrategy::Atomic,
            ty: Some(ty),
        },
    }
}

const fn merge_by(name: &'static str, key: &'static str, ty: Option<Fields>) -> Field {
    Field {
        name,
        meta: Meta {
            list: ListStrategy::Merge(Some(key)),
            ty,
        },
    }
}

const fn merge_set(name: &'static str) -> Field {
    Field {
        name,
        meta: Meta {
            list: ListStrategy::Merge(None),
            ty: None,
        },
    }
}

fn lookup(ty: Option<Fields>, name: &str) -> Meta {
    ty.and_then(|fields| fields.iter().find(|f| f.name == name))
        .map_or(Meta::PLAIN, |f| f.meta)
}

// Tags as in k8s.io/api and k8s.io/apimachinery types.go. `patchStrategy:"retainKeys"` (and
// "merge,retainKeys") needs no entry beyond its merge part: the server only acts on the
// `$retainKeys` directive the client sends.

const OBJECT_META: Fields = &[
    merge_set("finalizers"),
    merge_by("ownerReferences", "uid", None),
];

const CONTAINER: Fields = &[
    merge_by("ports", "containerPort", None),
    merge_by("env", "name", None),
    merge_by("volumeMounts", "mountPath", None),
    merge_by("volumeDevices", "devicePath", None),
];

const POD_SPEC: Fields = &[
    merge_by("volumes", "name", None), // merge,retainKeys
    merge_by("initContainers", "name", Some(CONTAINER)),
    merge_by("containers", "name", Some(CONTAINER)),
    merge_by("ephemeralContainers", "name", Some(CONTAINER)),
    merge_by("imagePullSecrets", "name", None),
    merge_by("hostAliases", "ip", None),
    merge_by("topologySpreadConstraints", "topologyKey", None),
    merge_by("schedulingGates", "name", None),
    merge_by("resourceClaims", "name", None), // merge,retainKeys
];

const POD_STATUS: Fields = &[
    merge_by("conditions", "type", None),
    merge_by("podIPs", "ip", None),
    merge_by("hostIPs", "ip", None),
    merge_by("resourceClaimStatuses", "name", None), // merge,retainKeys
];

const POD: Fields = &[
    nested("metadata", OBJECT_META),
    nested("spec", POD_SPEC),
    nested("status", POD_STATUS),
];

const POD_TEMPLATE_SPEC: Fields = &[nested("metadata", OBJECT_META), nested("spec", POD_SPEC)];

const POD_TEMPLATE: Fields = &[
    nested("metadata", OBJECT_META),
    nested("template", POD_TEMPLATE_SPEC),
];

/// Statuses whose only tagged field is `conditions` (merge by type).
const CONDITIONS_STATUS: Fields = &[merge_by("conditions", "type", None)];

/// Specs whose only tagged path is `template` (Deployment's `strategy` is retainKeys only).
const TEMPLATED_SPEC: Fields = &[nested("template", POD_TEMPLATE_SPEC)];

/// ReplicationController, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job.
const WORKLOAD: Fields = &[
    nested("metadata", OBJECT_META),
    nested("spec", TEMPLATED_SPEC),
    nested("status", CONDITIONS_STATUS),
];

const JOB_TEMPLATE_SPEC: Fields = &[
    nested("metadata", OBJECT_META),
    nested("spec", TEMPLATED_SPEC),
];

const CRON_JOB: Fields = &[
    nested("metadata", OBJECT_META),
    nested("spec", &[nested("jobTemplate", JOB_TEMPLATE_SPEC)]),
];

const SERVICE: Fields = &[
    nested("metadata", OBJECT_META),
    nested("spec", &[merge_by("ports", "port", None)]),
    nested("status", CONDITIONS_STATUS),
];

const NODE: Fields = &[
    nested("metadata", OBJECT_META),
    nested("spec", &[merge_set("podCIDRs")]),
    nested(
        "status",
        &[
            merge_by("conditions", "type", None),
            merge_by("addresses", "type", None),
        ],
    ),
];

/// Namespace, PersistentVolumeClaim, PodDisruptionBudget, HorizontalPodAutoscaler.
const WITH_CONDITIONS: Fields = &[
    nested("metadata", OBJECT_META),
    nested("status", CONDITIONS_STATUS),
];

const SERVICE_ACCOUNT: Fields = &[
    nested("metadata", OBJECT_META),
    merge_by("secrets", "name", None),
];

const CSI_NODE: Fields = &[
    nested("metadata", OBJECT_META),
    nested("spec", &[merge_by("drivers", "name", None)]),
];

const WEBHOOK_CONFIGURATION: Fields = &[
    nested("metadata", OBJECT_META),
    merge_by("webhooks", "name", None),
];

/// Built-in kinds without tagged fields beyond their metadata.
const GENERIC: Fields = &[nested("metadata", OBJECT_META)];

/// Patch metadata of a kind; `None` for kinds outside the built-in groups (custom resources).
fn schema_for(group: &str, kind: &str) -> Option<Fields> {
    if !super::resources::BUILTIN_GROUPS.contains(&group) {
        return None;
    }
    Some(match (group, kind) {
        ("", "Pod") => POD,
        ("", "PodTemplate") => POD_TEMPLATE,
        ("", "ReplicationController")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job") => WORKLOAD,
        ("batch", "CronJob") => CRON_JOB,
        ("", "Service") => SERVICE,
        ("", "Node") => NODE,
        ("", "Namespace" | "PersistentVolumeClaim")
        | ("policy", "PodDisruptionBudget")
        | ("autoscaling", "HorizontalPodAutoscaler") => WITH_CONDITIONS,
        ("", "ServiceAccount") => SERVICE_ACCOUNT,
        ("storage.k8s.io", "CSINode") => CSI_NODE,
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration",
        ) => WEBHOOK_CONFIGURATION,
        _ => GENERIC,
    })
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch: merging
// ---------------------------------------------------------------------------------------------

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

// apimachinery's mergepatch errors that kube-apiserver answers with 400.
const ERR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_SET_ORDER: &str = "invalid patch format of setElementOrder list";

fn apply_strategic_patch(
    group: &str,
    kind: &str,
    original: &Value,
    body: &[u8],
) -> Result<Value, PatchError> {
    // Upstream rejects the content type before reading the body.
    let schema = schema_for(group, kind)
        .ok_or_else(|| PatchError::UnsupportedMediaType(UNSUPPORTED_SMP.into()))?;
    let patch = decode_object(body)?;
    let original = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    // A top-level `$patch: delete` leaves an empty object, as upstream.
    let merged = merge_map(original, patch, Some(schema), 0)?.unwrap_or_default();
    Ok(Value::Object(merged))
}

fn check_depth(depth: usize) -> Result<(), PatchError> {
    if depth > MAX_MERGE_DEPTH {
        return Err(invalid(format!(
            "strategic merge patch is nested deeper than {MAX_MERGE_DEPTH} levels"
        )));
    }
    Ok(())
}

/// The field a parallel-list directive key (`$setElementOrder/containers`) names.
fn directive_field<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    key.split_once('/')
        .and_then(|(head, field)| (head == prefix).then_some(field))
}

fn no_merge_key(item: &Value, key: &str) -> PatchError {
    invalid(format!(
        "map: {item} does not contain declared merge key: {key}"
    ))
}

fn unknown_patch_type(directive: &Value, map: &Map<String, Value>) -> PatchError {
    let directive = directive
        .as_str()
        .map_or_else(|| directive.to_string(), str::to_owned);
    invalid(format!(
        "unknown patch type: {directive} in map: {}",
        Value::Object(map.clone())
    ))
}

/// Merges `patch` into `original`; `None` means the map is deleted (`$patch: delete`).
fn merge_map(
    original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ty: Option<Fields>,
    depth: usize,
) -> Result<Option<Map<String, Value>>, PatchError> {
    check_depth(depth)?;
    if let Some(directive) = patch.get(DIRECTIVE) {
        return match directive.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE);
                // The rest is merged into nothing, which drops nulls and nested directives as
                // upstream's typed decoding would.
                merge_fields(Map::new(), patch, ty, depth).map(Some)
            }
            Some("delete") => Ok(None),
            _ => Err(unknown_patch_type(directive, &patch)),
        };
    }
    merge_fields(original, patch, ty, depth).map(Some)
}

/// `mergeMap` after its `$patch` check: `$retainKeys`, then `$setElementOrder` lists, then the
/// fields, then `$deleteFromPrimitiveList` lists.
fn merge_fields(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ty: Option<Fields>,
    depth: usize,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(retain) = patch.remove(RETAIN_KEYS) {
        apply_retain_keys(&mut original, &patch, &retain)?;
    }

    let order_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for order_key in order_keys {
        let Some(order) = patch.remove(&order_key) else {
            continue;
        };
        let field = directive_field(&order_key, SET_ELEMENT_ORDER)
            .ok_or_else(|| bad_request(ERR_SET_ORDER))?;
        let Value::Array(order) = order else {
            return Err(bad_request(ERR_SET_ORDER));
        };
        let patch_list = match patch.remove(field) {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(_) => return Err(bad_request(ERR_SET_ORDER)),
        };
        merge_ordered_list(
            &mut original,
            field,
            patch_list,
            &order,
            lookup(ty, field),
            depth,
        )?;
    }

    let mut deletions = Vec::new();
    for (key, value) in patch {
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let field = directive_field(&key, DELETE_FROM_PRIMITIVE_LIST)
                .ok_or_else(|| bad_request(ERR_PRIMITIVE_LIST))?;
            let Value::Array(values) = value else {
                return Err(bad_request(ERR_PRIMITIVE_LIST));
            };
            deletions.push((field.to_owned(), values));
            continue;
        }
        if value.is_null() {
            original.remove(&key);
            continue;
        }
        let meta = lookup(ty, &key);
        let merged = match (original.get_mut(&key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                merge_map(std::mem::take(o), p, meta.ty, depth + 1)?.map(Value::Object)
            }
            (Some(Value::Array(o)), Value::Array(p)) => Some(Value::Array(merge_list(
                std::mem::take(o),
                p,
                meta,
                depth + 1,
            )?)),
            (_, value) => normalize(value, meta, depth + 1)?,
        };
        match merged {
            Some(v) => {
                original.insert(key, v);
            }
            // `$patch: delete` on a map field removes it (upstream leaves `{}`, which typed
            // decoding mostly turns into "unset").
            None => {
                original.remove(&key);
            }
        }
    }

    for (field, values) in deletions {
        // Nothing to delete from a missing list (upstream would store the deletion list).
        if let Some(Value::Array(list)) = original.get_mut(&field) {
            let doomed: HashSet<Id> = values.iter().map(id_of).collect();
            list.retain(|v| !doomed.contains(&id_of(v)));
        }
    }
    Ok(original)
}

/// `$retainKeys`: every field the patch sets must be listed, and unlisted fields are cleared.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
) -> Result<(), PatchError> {
    let Value::Array(retain) = retain else {
        return Err(bad_request(ERR_RETAIN_KEYS));
    };
    let keep: HashSet<&str> = retain.iter().filter_map(Value::as_str).collect();
    let unlisted = patch.iter().any(|(k, v)| {
        !v.is_null()
            && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            && !k.starts_with(SET_ELEMENT_ORDER)
            && !keep.contains(k.as_str())
    });
    if unlisted {
        return Err(bad_request(ERR_RETAIN_KEYS));
    }
    original.retain(|k, _| keep.contains(k.as_str()));
    Ok(())
}

/// A value merged into nothing: drops nulls in maps and applies (and strips) directives.
fn normalize(value: Value, meta: Meta, depth: usize) -> Result<Option<Value>, PatchError> {
    Ok(match value {
        Value::Object(m) => merge_map(Map::new(), m, meta.ty, depth)?.map(Value::Object),
        Value::Array(l) => Some(Value::Array(merge_list(Vec::new(), l, meta, depth)?)),
        other => Some(other),
    })
}

/// `mergeSliceHandler`: merge lists merge, all others are replaced by the patch's list.
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    meta: Meta,
    depth: usize,
) -> Result<Vec<Value>, PatchError> {
    check_depth(depth)?;
    let ListStrategy::Merge(key) = meta.list else {
        let item_meta = Meta {
            list: ListStrategy::Atomic,
            ty: meta.ty,
        };
        let mut out = Vec::with_capacity(patch.len());
        for item in patch {
            out.extend(normalize(item, item_meta, depth + 1)?);
        }
        return Ok(out);
    };
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if element_kind(&original, &patch)? != ElementKind::Object {
        return Ok(merge_primitives(original, patch));
    }
    let key = key.ok_or_else(|| invalid("cannot merge lists without merge key for type map"))?;
    merge_keyed(original, patch, key, meta.ty, depth)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl ElementKind {
    fn of(v: &Value) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::Bool(_) => Self::Bool,
            Value::Number(_) => Self::Number,
            Value::String(_) => Self::String,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Object,
        }
    }
}

/// `sliceElementType`: all items of both lists must be of one kind, and not lists.
fn element_kind(original: &[Value], patch: &[Value]) -> Result<ElementKind, PatchError> {
    let mut kind = None;
    for v in original.iter().chain(patch) {
        let k = ElementKind::of(v);
        if k == ElementKind::Array {
            return Err(invalid("lists of lists are not supported"));
        }
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return Err(invalid("list element types are not identical"));
            }
            Some(_) => {}
        }
    }
    Ok(kind.unwrap_or(ElementKind::Null))
}

/// A set-merged list of primitives (`finalizers`): the union, ordered as upstream orders it.
fn merge_primitives(original: Vec<Value>, patch: Vec<Value>) -> Vec<Value> {
    let server_order = positions(&original, None);
    let patch_order = positions(&patch, None);
    let mut seen = HashSet::new();
    let (mut in_patch, mut server_only) = (Vec::new(), Vec::new());
    for v in original.into_iter().chain(patch) {
        let id = id_of(&v);
        if !seen.insert(id.clone()) {
            continue;
        }
        if patch_order.contains_key(&id) {
            in_patch.push(v);
        } else {
            server_only.push(v);
        }
    }
    order_items(in_patch, server_only, &patch_order, &server_order, None)
}

/// A list of maps merged by `key` (`mergeSlice` for maps).
fn merge_keyed(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    ty: Option<Fields>,
    depth: usize,
) -> Result<Vec<Value>, PatchError> {
    // Directive items first (`mergeSliceWithSpecialElements`).
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(map) = item else {
            return Err(invalid("list element types are not identical"));
        };
        let Some(directive) = map.get(DIRECTIVE) else {
            plain.push(map);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let target = map
                    .get(key)
                    .map(id_of)
                    .ok_or_else(|| no_merge_key(&Value::Object(map.clone()), key))?;
                original.retain(|o| item_id(o, Some(key)).as_ref() != Some(&target));
            }
            // The remaining items become the whole list; other directives are still checked.
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(invalid(
                    "merging lists cannot yet be specified in the patch",
                ));
            }
            _ => return Err(unknown_patch_type(directive, &map)),
        }
    }
    if replace {
        let mut out = Vec::with_capacity(plain.len());
        for map in plain {
            out.push(Value::Object(merge_fields(Map::new(), map, ty, depth + 1)?));
        }
        return Ok(out);
    }

    // Upstream orders server-only items by the list as it stood before appending.
    let server_order = positions(&original, Some(key));
    let mut index: HashMap<Id, usize> = HashMap::new();
    for (i, o) in original.iter().enumerate() {
        if let Some(id) = item_id(o, Some(key)) {
            index.entry(id).or_insert(i);
        }
    }
    let mut patch_order = HashMap::new();
    for map in plain {
        let id = map
            .get(key)
            .map(id_of)
            .ok_or_else(|| no_merge_key(&Value::Object(map.clone()), key))?;
        let next = patch_order.len();
        patch_order.entry(id.clone()).or_insert(next);
        match index.get(&id) {
            Some(&i) => {
                let current = match std::mem::take(&mut original[i]) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                original[i] = Value::Object(merge_fields(current, map, ty, depth + 1)?);
            }
            None => {
                index.insert(id, original.len());
                original.push(Value::Object(merge_fields(Map::new(), map, ty, depth + 1)?));
            }
        }
    }

    let (mut in_patch, mut server_only) = (Vec::new(), Vec::new());
    for item in original {
        let id = item_id(&item, Some(key)).ok_or_else(|| no_merge_key(&item, key))?;
        if patch_order.contains_key(&id) {
            in_patch.push(item);
        } else {
            server_only.push(item);
        }
    }
    Ok(order_items(
        in_patch,
        server_only,
        &patch_order,
        &server_order,
        Some(key),
    ))
}

/// A list with a `$setElementOrder/<field>` directive (`mergePatchIntoOriginal`): merged as
/// usual, then reordered as the directive lists; items it does not name keep their place
/// relative to the live list.
fn merge_ordered_list(
    original: &mut Map<String, Value>,
    field: &str,
    patch_list: Option<Vec<Value>>,
    order: &[Value],
    meta: Meta,
    depth: usize,
) -> Result<(), PatchError> {
    let key = meta.merge_key();
    validate_set_order(patch_list.as_deref().unwrap_or_default(), order, key)?;
    let original_list = match original.get_mut(field) {
        Some(Value::Array(list)) => Some(std::mem::take(list)),
        _ => None,
    };
    let server_order = original_list
        .as_deref()
        .map(|l| positions(l, key))
        .unwrap_or_default();
    let merged = match (original_list, patch_list) {
        (Some(o), None) => o,
        (o, Some(p)) => merge_list(o.unwrap_or_default(), p, meta, depth + 1)?,
        (None, None) => return Ok(()),
    };

    let mut order_pos = HashMap::new();
    for item in order {
        let id = match key {
            Some(k) => match item {
                Value::Object(m) => m.get(k).map(id_of).ok_or_else(|| no_merge_key(item, k))?,
                _ => return Err(bad_request(ERR_SET_ORDER)),
            },
            None => id_of(item),
        };
        let next = order_pos.len();
        order_pos.entry(id).or_insert(next);
    }
    let (mut in_order, mut server_only) = (Vec::new(), Vec::new());
    for item in merged {
        let id = item_id(&item, key).ok_or_else(|| no_merge_key(&item, key.unwrap_or_default()))?;
        if order_pos.contains_key(&id) {
            in_order.push(item);
        } else {
            server_only.push(item);
        }
    }
    let ordered = order_items(in_order, server_only, &order_pos, &server_order, key);
    original.insert(field.to_owned(), Value::Array(ordered));
    Ok(())
}

/// `validatePatchWithSetOrderList`: the patch's items (directive items aside) must appear in
/// the `$setElementOrder` list, in the same relative order.
fn validate_set_order(
    patch_list: &[Value],
    order: &[Value],
    key: Option<&str>,
) -> Result<(), PatchError> {
    if patch_list.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mismatch = || {
        invalid(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER} list:\n{}\n",
            Value::Array(patch_list.to_vec()),
            Value::Array(order.to_vec())
        ))
    };
    let mut remaining = order.iter();
    for item in patch_list {
        if item.get(DIRECTIVE).is_some() {
            continue;
        }
        loop {
            let Some(o) = remaining.next() else {
                return Err(mismatch());
            };
            if same_key(item, o, key)? {
                break;
            }
        }
    }
    Ok(())
}

/// `mergeKeyValueEqual`.
fn same_key(a: &Value, b: &Value, key: Option<&str>) -> Result<bool, PatchError> {
    let Some(key) = key else {
        return Ok(a == b);
    };
    let (Value::Object(am), Value::Object(bm)) = (a, b) else {
        return Err(bad_request(ERR_SET_ORDER));
    };
    let left = am.get(key).ok_or_else(|| no_merge_key(a, key))?;
    let right = bm.get(key).ok_or_else(|| no_merge_key(b, key))?;
    Ok(left == right)
}

/// `normalizeElementOrder`: items the patch names sorted by the patch's order, the others by
/// the live list's, then interleaved by `mergeSortedSlice`'s rule: a server-only item goes
/// before a patch item only when the live list has both and it comes first there.
fn order_items(
    mut in_patch: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &HashMap<Id, usize>,
    server_order: &HashMap<Id, usize>,
    key: Option<&str>,
) -> Vec<Value> {
    let pos = |order: &HashMap<Id, usize>, v: &Value| {
        item_id(v, key).and_then(|id| order.get(&id).copied())
    };
    in_patch.sort_by_cached_key(|v| pos(patch_order, v).unwrap_or(usize::MAX));
    server_only.sort_by_cached_key(|v| pos(server_order, v).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(in_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = in_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (pos(server_order, l), pos(server_order, r)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// A hashable identity for list items and merge-key values (Go `==` on decoded JSON).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Id {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    /// Maps and lists, by their JSON text.
    Json(String),
}

fn id_of(v: &Value) -> Id {
    match v {
        Value::Null => Id::Null,
        Value::Bool(b) => Id::Bool(*b),
        Value::Number(n) => Id::Number(n.clone()),
        Value::String(s) => Id::String(s.clone()),
        other => Id::Json(other.to_string()),
    }
}

/// An item's identity in a list: its merge key's value for maps in a keyed list, else itself.
/// `None` for a map missing its merge key.
fn item_id(item: &Value, key: Option<&str>) -> Option<Id> {
    match (key, item) {
        (Some(k), Value::Object(m)) => m.get(k).map(id_of),
        _ => Some(id_of(item)),
    }
}

/// First position of each identity in `list`.
fn positions(list: &[Value], key: Option<&str>) -> HashMap<Id, usize> {
    let mut out = HashMap::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        if let Some(id) = item_id(item, key) {
            out.entry(id).or_insert(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(group: &str, kind: &str, original: Value, patch: Value) -> Result<Value, PatchError> {
        apply(
            group,
            kind,
            PatchType::Strategic,
            &original,
            patch.to_string().as_bytes(),
        )
    }

    fn deployment(containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
            "spec": {
                "replicas": 1,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": containers}
                }
            }
        })
    }

    fn containers(v: &Value) -> &Value {
        &v["spec"]["template"]["spec"]["containers"]
    }

    fn is_bad_request(r: &Result<Value, PatchError>) -> bool {
        matches!(r, Err(PatchError::BadRequest(_)))
    }

    fn is_invalid(r: &Result<Value, PatchError>) -> bool {
        matches!(r, Err(PatchError::Invalid(_)))
    }

    // --- content types ---

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("Application/Merge-Patch+JSON; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type(" application/strategic-merge-patch+json ;charset=UTF-8"),
            Some(PatchType::Strategic)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            None
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
        assert_eq!(PatchType::from_content_type(""), None);
    }

    // --- JSON patch ---

    #[test]
    fn json_patch_applies_operations() {
        let orig = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v"}});
        let body = br#"[
            {"op": "test", "path": "/metadata/labels/x", "value": "1"},
            {"op": "replace", "path": "/metadata/labels/x", "value": "2"},
            {"op": "add", "path": "/data/n", "value": "m"},
            {"op": "remove", "path": "/data/k"},
            {"op": "copy", "from": "/data/n", "path": "/data/c"},
            {"op": "move", "from": "/data/c", "path": "/data/d"}
        ]"#;
        let out = apply("", "ConfigMap", PatchType::Json, &orig, body).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"name": "a", "labels": {"x": "2"}}, "data": {"n": "m", "d": "m"}})
        );
    }

    #[test]
    fn json_patch_test_failure_is_invalid() {
        let orig = json!({"metadata": {"labels": {"x": "1"}}});
        let body = br#"[{"op": "add", "path": "/a", "value": 1},
                        {"op": "test", "path": "/metadata/labels/x", "value": "2"}]"#;
        let err = apply("", "Pod", PatchType::Json, &orig, body).unwrap_err();
        assert_eq!(
            err,
            PatchError::Invalid(
                "operation '/1' failed at path '/metadata/labels/x': value did not match".into()
            )
        );
    }

    #[test]
    fn json_patch_missing_path_is_invalid() {
        let orig = json!({"metadata": {}});
        let body = br#"[{"op": "remove", "path": "/spec/replicas"}]"#;
        let r = apply("apps", "Deployment", PatchType::Json, &orig, body);
        assert!(is_invalid(&r), "{r:?}");
    }

    #[test]
    fn json_patch_bad_bodies_are_bad_requests() {
        let orig = json!({});
        for body in [
            &b"{\"op\": \"add\"}"[..],
            b"not json",
            b"",
            b"[{\"op\": \"frobnicate\", \"path\": \"/a\"}]",
            b"[{\"op\": \"add\", \"value\": 1}]",
        ] {
            let r = apply("", "Pod", PatchType::Json, &orig, body);
            match r {
                Err(PatchError::BadRequest(msg)) => {
                    assert!(msg.starts_with("error decoding patch: "), "{msg}")
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn json_patch_operation_limit() {
        let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "", "value": {}}))
            .collect();
        let body = Value::Array(ops).to_string();
        let r = apply("", "Pod", PatchType::Json, &json!({}), body.as_bytes());
        assert!(is_bad_request(&r));
    }

    #[test]
    fn json_patch_copy_blowup_is_refused() {
        let orig = json!({"a": "x".repeat(100_000)});
        let ops: Vec<Value> = (0..40)
            .map(|i| json!({"op": "copy", "from": "", "path": format!("/k{i}")}))
            .collect();
        let body = Value::Array(ops).to_string();
        let r = apply("", "ConfigMap", PatchType::Json, &orig, body.as_bytes());
        assert!(is_invalid(&r), "{r:?}");
    }

    #[test]
    fn json_patch_cannot_nest_past_the_limit() {
        fn nest(n: usize) -> Value {
            (0..n).fold(json!({}), |v, _| json!({"a": v}))
        }
        // Each add goes to the bottom of the last: the depth grows by ~60 per operation.
        let ops: Vec<Value> = (0..4)
            .map(|i| json!({"op": "add", "path": "/a".repeat(i * 61 + 1), "value": nest(60)}))
            .collect();
        let body = Value::Array(ops).to_string();
        let r = apply(
            "",
            "ConfigMap",
            PatchType::Json,
            &json!({}),
            body.as_bytes(),
        );
        assert!(is_invalid(&r), "{r:?}");
        // Shallower growth is fine.
        let body = json!([{"op": "add", "path": "/a", "value": nest(100)}]).to_string();
        let out = apply(
            "",
            "ConfigMap",
            PatchType::Json,
            &json!({}),
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(nesting_depth(&out), 102);
    }

    // --- merge patch ---

    #[test]
    fn merge_patch_rfc7396() {
        let orig =
            deployment(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
        let patch = json!({
            "metadata": {"labels": {"tier": null, "new": "yes"}},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:2"}]}}}
        });
        let out = apply(
            "apps",
            "Deployment",
            PatchType::Merge,
            &orig,
            patch.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "new": "yes"})
        );
        // Lists are replaced wholesale in a merge patch.
        assert_eq!(containers(&out), &json!([{"name": "a", "image": "a:2"}]));
    }

    #[test]
    fn merge_patch_non_object_is_bad_request() {
        for body in [&b"[1, 2]"[..], b"null", b"\"x\"", b"{", b""] {
            let r = apply("", "Pod", PatchType::Merge, &json!({}), body);
            match r {
                Err(PatchError::BadRequest(msg)) => {
                    assert!(msg.starts_with("error decoding patch: "), "{msg}")
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    // --- strategic merge patch ---

    #[test]
    fn smp_set_image_with_set_element_order() {
        let orig = deployment(json!([
            {"name": "sidecar", "image": "busybox"},
            {"name": "c", "image": "nginx:1", "ports": [{"containerPort": 80}]}
        ]));
        let body = br#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"c"}],"containers":[{"image":"nginx:2","name":"c"}]}}}}"#;
        let out = apply("apps", "Deployment", PatchType::Strategic, &orig, body).unwrap();
        assert_eq!(
            containers(&out),
            &json!([
                {"name": "sidecar", "image": "busybox"},
                {"name": "c", "image": "nginx:2", "ports": [{"containerPort": 80}]}
            ])
        );
        assert_eq!(out["spec"]["replicas"], json!(1));
        assert!(
            out["spec"]["template"]["spec"]
                .get("$setElementOrder/containers")
                .is_none()
        );
    }

    #[test]
    fn smp_null_removes_label() {
        let orig = deployment(json!([]));
        let out = smp(
            "apps",
            "Deployment",
            orig,
            json!({"metadata": {"labels": {"tier": null, "missing": null}}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn smp_delete_directive_removes_container() {
        let orig = deployment(json!([
            {"name": "a", "image": "a"},
            {"name": "b", "image": "b"}
        ]));
        let out = smp(
            "apps",
            "Deployment",
            orig,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}}}),
        )
        .unwrap();
        assert_eq!(containers(&out), &json!([{"name": "b", "image": "b"}]));
    }

    #[test]
    fn smp_delete_directive_on_missing_list_leaves_no_trace() {
        let orig = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        let out = smp(
            "",
            "Pod",
            orig,
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}]}]}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["containers"], json!([{"name": "a", "env": []}]));
    }

    #[test]
    fn smp_finalizers_union_in_upstream_order() {
        let orig = json!({"metadata": {"name": "x", "finalizers": ["a", "b", "c"]}});
        let out = smp(
            "",
            "ConfigMap",
            orig.clone(),
            json!({"metadata": {"finalizers": ["b", "d"]}}),
        )
        .unwrap();
        // mergeSortedSlice: "c" comes after "d" because the live list does not place "d".
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "d", "c"]));

        let out = smp(
            "",
            "ConfigMap",
            orig,
            json!({"metadata": {"finalizers": ["a", "b"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));

        // A new item with no setElementOrder goes in front, as upstream.
        let out = smp(
            "",
            "ConfigMap",
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": ["z"]}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["z", "a"]));
    }

    #[test]
    fn smp_delete_from_primitive_list() {
        let orig = json!({"metadata": {"name": "x", "finalizers": ["a", "b", "c"]}});
        let out = smp(
            "",
            "Secret",
            orig,
            json!({"metadata": {
                "$setElementOrder/finalizers": ["a", "c"],
                "$deleteFromPrimitiveList/finalizers": ["b"]
            }}),
        )
        .unwrap();
        assert_eq!(
            out["metadata"],
            json!({"name": "x", "finalizers": ["a", "c"]})
        );

        // Deleting from a list that is not there changes nothing.
        let out = smp(
            "",
            "Secret",
            json!({"metadata": {"name": "x"}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {"name": "x"}}));

        let r = smp(
            "",
            "Secret",
            json!({}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "b"}}),
        );
        assert_eq!(r, Err(PatchError::BadRequest(ERR_PRIMITIVE_LIST.into())));
        let r = smp(
            "",
            "Secret",
            json!({}),
            json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["b"]}}),
        );
        assert_eq!(r, Err(PatchError::BadRequest(ERR_PRIMITIVE_LIST.into())));
    }

    #[test]
    fn smp_env_merges_by_name() {
        let orig = deployment(json!([{
            "name": "c",
            "image": "i",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
        }]));
        let out = smp(
            "apps",
            "Deployment",
            orig,
            json!({"spec": {"template": {"spec": {"containers": [{
                "name": "c",
                "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]
            }]}}}}),
        )
        .unwrap();
        assert_eq!(
            containers(&out),
            &json!([{
                "name": "c",
                "image": "i",
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "B", "value": "3"},
                    {"name": "C", "value": "4"}
                ]
            }])
        );
    }

    #[test]
    fn smp_kubectl_apply_three_way_patch() {
        // What kubectl apply sends after dropping env B, changing A and adding a port.
        let orig = deployment(json!([{
            "name": "c",
            "image": "i",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "ports": [{"containerPort": 80, "protocol": "TCP"}]
        }]));
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "c"}],
            "containers": [{
                "$setElementOrder/env": [{"name": "A"}],
                "$setElementOrder/ports": [{"containerPort": 80}, {"containerPort": 443}],
                "env": [{"name": "A", "value": "9"}, {"$patch": "delete", "name": "B"}],
                "name": "c",
                "ports": [{"containerPort": 443, "protocol": "TCP"}]
            }]
        }}}});
        let out = smp("apps", "Deployment", orig, patch).unwrap();
        assert_eq!(
            containers(&out),
            &json!([{
                "name": "c",
                "image": "i",
                "env": [{"name": "A", "value": "9"}],
                "ports": [
                    {"containerPort": 80, "protocol": "TCP"},
                    {"containerPort": 443, "protocol": "TCP"}
                ]
            }])
        );
    }

    #[test]
    fn smp_set_element_order_reorders() {
        let orig = deployment(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
        let out = smp(
            "apps",
            "Deployment",
            orig.clone(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]
            }}}}),
        )
        .unwrap();
        assert_eq!(
            containers(&out),
            &json!([{"name": "c"}, {"name": "a"}, {"name": "b"}])
        );

        // A new item placed by the order list, and an unnamed live item keeping its place.
        let out = smp(
            "apps",
            "Deployment",
            orig,
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "d"}, {"name": "c"}],
                "containers": [{"name": "d", "image": "new"}]
            }}}}),
        )
        .unwrap();
        assert_eq!(
            containers(&out),
            // "b" is unnamed: it stays before "c" (its live successor) but after the new "d".
            &json!([{"name": "a"}, {"name": "d", "image": "new"}, {"name": "b"}, {"name": "c"}])
        );
    }

    #[test]
    fn smp_set_element_order_mismatch_is_invalid() {
        let orig = deployment(json!([{"name": "a"}, {"name": "b"}]));
        let r = smp(
            "apps",
            "Deployment",
            orig.clone(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"name": "b", "image": "x"}]
            }}}}),
        );
        assert!(is_invalid(&r), "{r:?}");

        // Items in the wrong relative order are refused too.
        let r = smp(
            "apps",
            "Deployment",
            orig.clone(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b", "image": "x"}, {"name": "a", "image": "y"}]
            }}}}),
        );
        assert!(is_invalid(&r), "{r:?}");

        let r = smp(
            "apps",
            "Deployment",
            orig,
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": "a"}}}}),
        );
        assert_eq!(r, Err(PatchError::BadRequest(ERR_SET_ORDER.into())));
    }

    #[test]
    fn smp_replace_directive_in_list_replaces_list() {
        let orig = deployment(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]));
        let out = smp(
            "apps",
            "Deployment",
            orig,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "z", "image": "z", "args": null},
                {"$patch": "replace"}
            ]}}}}),
        )
        .unwrap();
        assert_eq!(containers(&out), &json!([{"name": "z", "image": "z"}]));
    }

    #[test]
    fn smp_replace_and_delete_directives_on_maps() {
        let orig = json!({
            "metadata": {"name": "p", "labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "c"}], "securityContext": {"runAsUser": 1}}
        });
        let out = smp(
            "",
            "Pod",
            orig,
            json!({
                "metadata": {"labels": {"$patch": "replace", "c": "3"}},
                "spec": {"securityContext": {"$patch": "delete"}}
            }),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "metadata": {"name": "p", "labels": {"c": "3"}},
                "spec": {"containers": [{"name": "c"}]}
            })
        );
    }

    #[test]
    fn smp_bad_directives_are_invalid() {
        let orig = deployment(json!([{"name": "a"}]));
        for patch in [
            json!({"metadata": {"labels": {"$patch": "frobnicate"}}}),
            json!({"metadata": {"labels": {"$patch": "merge"}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "frob"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"image": "no-name"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": ["a"]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [["a"]]}}}}),
        ] {
            let r = smp("apps", "Deployment", orig.clone(), patch.clone());
            assert!(is_invalid(&r), "{patch}: {r:?}");
        }
    }

    #[test]
    fn smp_retain_keys() {
        let orig = json!({
            "metadata": {"name": "d"},
            "spec": {
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {"spec": {
                    "containers": [{"name": "c"}],
                    "volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "secret": {"secretName": "s"}}]
                }}
            }
        });
        let out = smp(
            "apps",
            "Deployment",
            orig.clone(),
            json!({"spec": {
                "strategy": {"$retainKeys": ["type"], "rollingUpdate": null, "type": "Recreate"},
                "template": {"spec": {"volumes": [
                    {"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "name": "v"}
                ]}}
            }}),
        )
        .unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "v", "configMap": {"name": "cm"}}, {"name": "w", "secret": {"secretName": "s"}}])
        );

        // A patched field missing from $retainKeys is malformed.
        let r = smp(
            "apps",
            "Deployment",
            orig.clone(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}}),
        );
        assert_eq!(r, Err(PatchError::BadRequest(ERR_RETAIN_KEYS.into())));
        let r = smp(
            "apps",
            "Deployment",
            orig,
            json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
        );
        assert_eq!(r, Err(PatchError::BadRequest(ERR_RETAIN_KEYS.into())));
    }

    #[test]
    fn smp_ports_owner_references_and_tolerations() {
        let orig = json!({
            "metadata": {"name": "p", "ownerReferences": [
                {"uid": "1", "name": "rs", "controller": true},
                {"uid": "2", "name": "other"}
            ]},
            "spec": {
                "containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}],
                "tolerations": [{"key": "a", "operator": "Exists"}]
            }
        });
        let out = smp(
            "",
            "Pod",
            orig,
            json!({
                "metadata": {"ownerReferences": [{"uid": "2", "name": "renamed"}]},
                "spec": {
                    "containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
                    "tolerations": [{"key": "b", "operator": "Exists"}]
                }
            }),
        )
        .unwrap();
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "rs", "controller": true}, {"uid": "2", "name": "renamed"}])
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}])
        );
        // No patch strategy: replaced.
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "b", "operator": "Exists"}])
        );
    }

    #[test]
    fn smp_service_ports_merge_by_port() {
        let orig = json!({"metadata": {"name": "s"}, "spec": {"ports": [
            {"port": 80, "targetPort": 8080, "name": "http"},
            {"port": 443, "targetPort": 8443, "name": "https"}
        ]}});
        let out = smp(
            "",
            "Service",
            orig,
            json!({"spec": {"ports": [{"port": 443, "targetPort": 9443}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([
                {"port": 80, "targetPort": 8080, "name": "http"},
                {"port": 443, "targetPort": 9443, "name": "https"}
            ])
        );
    }

    #[test]
    fn smp_status_conditions_merge_by_type() {
        let orig = json!({
            "metadata": {"name": "n"},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "False"},
                    {"type": "MemoryPressure", "status": "False"}
                ],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]
            }
        });
        let out = smp(
            "",
            "Node",
            orig,
            json!({"status": {
                "$setElementOrder/conditions": [{"type": "Ready"}, {"type": "MemoryPressure"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n"}]
            }}),
        )
        .unwrap();
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}])
        );
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "10.0.0.1"}])
        );
    }

    #[test]
    fn smp_pod_template_paths() {
        let cron = json!({"metadata": {"name": "cj"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]
        }}}}}});
        let out = smp(
            "batch",
            "CronJob",
            cron,
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "b", "image": "2"}]
            }}}}}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}])
        );

        let sa = json!({"metadata": {"name": "sa"}, "secrets": [{"name": "a"}]});
        let out = smp(
            "",
            "ServiceAccount",
            sa,
            json!({"secrets": [{"name": "b"}]}),
        )
        .unwrap();
        assert_eq!(out["secrets"], json!([{"name": "b"}, {"name": "a"}]));
    }

    #[test]
    fn smp_unknown_kind_in_builtin_group_is_plain() {
        let orig = json!({"metadata": {"name": "r", "finalizers": ["a"]}, "rules": [{"verbs": ["get"]}], "x": {"y": 1}});
        let out = smp(
            "rbac.authorization.k8s.io",
            "Role",
            orig,
            json!({"metadata": {"finalizers": ["b"]}, "rules": [{"verbs": ["list"]}], "x": {"z": 2}}),
        )
        .unwrap();
        assert_eq!(out["rules"], json!([{"verbs": ["list"]}]));
        assert_eq!(out["x"], json!({"y": 1, "z": 2}));
        // Metadata still has its tags.
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "a"]));
    }

    #[test]
    fn smp_unknown_group_is_unsupported_media_type() {
        let r = smp("example.com", "Widget", json!({}), json!({"spec": {}}));
        assert_eq!(
            r,
            Err(PatchError::UnsupportedMediaType(UNSUPPORTED_SMP.into()))
        );
        // Checked before the body is read.
        let r = apply(
            "stable.example.com",
            "CronTab",
            PatchType::Strategic,
            &json!({}),
            b"garbage",
        );
        assert!(matches!(r, Err(PatchError::UnsupportedMediaType(_))));
    }

    #[test]
    fn smp_non_object_body_is_bad_request() {
        for body in [&b"[]"[..], b"null", b"{"] {
            let r = apply("", "Pod", PatchType::Strategic, &json!({}), body);
            assert!(is_bad_request(&r), "{r:?}");
        }
    }

    #[test]
    fn smp_new_fields_lose_nulls_and_directives() {
        let orig = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        let out = smp(
            "",
            "Pod",
            orig,
            json!({"spec": {
                "securityContext": {"runAsUser": 1, "fsGroup": null},
                "volumes": [{"name": "v", "$retainKeys": ["name", "emptyDir"], "emptyDir": {}}],
                "tolerations": [{"key": "k", "value": null}]
            }}),
        )
        .unwrap();
        assert_eq!(
            out["spec"],
            json!({
                "containers": [{"name": "c"}],
                "securityContext": {"runAsUser": 1},
                "volumes": [{"name": "v", "emptyDir": {}}],
                "tolerations": [{"key": "k"}]
            })
        );
    }

    #[test]
    fn smp_type_change_replaces() {
        let orig = json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "x": [1]});
        let out = smp(
            "",
            "ConfigMap",
            orig,
            json!({"data": "flat", "x": {"k": 1}}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"name": "c"}, "data": "flat", "x": {"k": 1}})
        );
    }

    #[test]
    fn smp_mixed_element_types_are_invalid() {
        let orig = json!({"metadata": {"finalizers": ["a"]}});
        let r = smp("", "Pod", orig, json!({"metadata": {"finalizers": [1]}}));
        assert!(is_invalid(&r), "{r:?}");
    }

    #[test]
    fn smp_top_level_directives() {
        let orig = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        let out = smp(
            "",
            "ConfigMap",
            orig.clone(),
            json!({"$patch": "replace", "metadata": {"name": "c"}, "data": {"b": "2"}}),
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {"name": "c"}, "data": {"b": "2"}}));
        let out = smp("", "ConfigMap", orig, json!({"$patch": "delete"})).unwrap();
        assert_eq!(out, json!({}));
    }

    #[test]
    fn smp_deep_nesting_is_invalid_not_a_crash() {
        let deep = (0..110).fold(json!("x"), |v, _| json!({"a": v}));
        let r = smp("", "ConfigMap", deep.clone(), json!({"data": deep}));
        assert!(is_ok_or_invalid(&r), "{r:?}");
        let r = smp(
            "",
            "ConfigMap",
            json!({"data": deep.clone()}),
            json!({"data": deep}),
        );
        assert!(is_invalid(&r), "{r:?}");
        // Deeper than serde_json reads is a decoding error.
        let body = format!("{}{}", "{\"a\":".repeat(200), "}".repeat(200));
        let r = apply(
            "",
            "ConfigMap",
            PatchType::Strategic,
            &json!({}),
            body.as_bytes(),
        );
        assert!(is_bad_request(&r), "{r:?}");
    }

    fn is_ok_or_invalid(r: &Result<Value, PatchError>) -> bool {
        r.is_ok() || is_invalid(r)
    }

    #[test]
    fn nesting_depth_counts_containers() {
        assert_eq!(nesting_depth(&json!(1)), 0);
        assert_eq!(nesting_depth(&json!({})), 1);
        assert_eq!(nesting_depth(&json!({"a": [1, {"b": []}]})), 4);
        // The limit is what serde_json reads back.
        let deepest = (1..MAX_OBJECT_DEPTH).fold(json!([]), |v, _| json!([v]));
        assert_eq!(nesting_depth(&deepest), MAX_OBJECT_DEPTH);
        assert!(serde_json::from_str::<Value>(&deepest.to_string()).is_ok());
        let deeper = json!([deepest]).to_string();
        assert!(serde_json::from_str::<Value>(&deeper).is_err());
    }
}
