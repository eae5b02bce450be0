//! Upstream (kube-apiserver 1.32) defaulting and validation of built-in kinds, on
//! `serde_json::Value`.
//!
//! This module owns only what `pkg/apis/*/v1/defaults.go` and `pkg/apis/*/validation`
//! do upstream. It must not touch storage, HTTP, or metadata the registry manages
//! (uid, resourceVersion, creationTimestamp, generation are set by the caller), nor
//! allocate cluster IPs or node ports, nor generate a Job's selector and labels.
//!
//! Every function here accepts any JSON shape: a field of the wrong type is either
//! reported as invalid or ignored, never a panic.
//!
//! Defaulted: Pod (and every pod template: PodTemplate, ReplicationController, Deployment,
//! ReplicaSet, StatefulSet, DaemonSet, Job, CronJob), Service, Secret (including the v1
//! conversion of `stringData` into `data`), Namespace, PersistentVolume(Claim), Endpoints,
//! EndpointSlice, LimitRange, Node, RoleBinding, ClusterRoleBinding, NetworkPolicy,
//! IngressClass, PriorityClass, StorageClass, CSIDriver.
//!
//! Validated beyond metadata (name per kind, labels, annotations, finalizers, owner
//! references): Pod (create and update), PodTemplate, ReplicationController, Service,
//! ConfigMap, Secret, Namespace, PersistentVolume(Claim), Endpoints, Deployment,
//! ReplicaSet, StatefulSet, DaemonSet, ControllerRevision, Job, CronJob, Role,
//! ClusterRole, RoleBinding, ClusterRoleBinding, EndpointSlice. Other kinds get the
//! metadata checks only; review kinds and Binding get none.
//!
//! As upstream: `enableServiceLinks` and requests-from-limits are Pod-only defaults (not
//! templates); Job templates are defaulted to `restartPolicy: Always` like any pod spec, which
//! Job validation then rejects with upstream's "Required value: valid values: ..." text.

use super::gofmt::go_quote;
use serde_json::{Map, Value, json};

/// One field error, as in metav1.StatusCause.
///
/// `reason` is one of "FieldValueRequired", "FieldValueInvalid", "FieldValueNotSupported",
/// "FieldValueDuplicate", "FieldValueTooLong", "FieldValueForbidden" (and, for a volume
/// mount naming no volume, "FieldValueNotFound"); `message` is the text upstream prints
/// (e.g. `Required value`, `Invalid value: "Foo": ...`); `field` is the path
/// (e.g. "spec.containers[0].image").
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

/// Applies upstream defaults in place (group "" = core, kind e.g. "Pod").
pub fn apply_defaults(group: &str, kind: &str, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    default_object(group, kind, obj);
}

/// Validates a (defaulted) object; `old` is `Some` on update (immutable-field checks).
pub fn validate(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    // Upstream defaults every object it reads from storage, so an old object stored before
    // a default existed still compares equal to its defaulted update.
    let old = old.map(|o| {
        let mut o = o.clone();
        apply_defaults(group, kind, &mut o);
        o
    });
    validate_object(group, kind, obj, old.as_ref())
}

/// The name rule of a kind, as upstream: causes for field "metadata.name".
pub fn validate_name(group: &str, kind: &str, name: &str) -> Vec<Cause> {
    let q = go_quote(name);
    name_rule(group, kind)
        .check(name)
        .into_iter()
        .map(|m| invalid("metadata.name", &q, &m))
        .collect()
}

// ---------------------------------------------------------------------------
// Causes and Go-style value printing
// ---------------------------------------------------------------------------

type Errs = Vec<Cause>;

fn cause(reason: &'static str, field: &str, message: String) -> Cause {
    Cause {
        reason,
        message,
        field: field.to_string(),
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

/// `field.Required`: "Required value[: detail]".
fn required(field: &str, detail: &str) -> Cause {
    cause(
        "FieldValueRequired",
        field,
        with_detail("Required value".into(), detail),
    )
}

/// `field.Invalid`; `bad` is the already printed value (see [`go_quote`], [`go_value`]).
fn invalid(field: &str, bad: &str, detail: &str) -> Cause {
    cause(
        "FieldValueInvalid",
        field,
        with_detail(format!("Invalid value: {bad}"), detail),
    )
}

/// `field.NotSupported` with the valid values quoted and comma-separated.
fn not_supported(field: &str, bad: &str, valid: &[&str]) -> Cause {
    let detail = if valid.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
        format!("supported values: {}", list.join(", "))
    };
    cause(
        "FieldValueNotSupported",
        field,
        with_detail(format!("Unsupported value: {bad}"), &detail),
    )
}

fn duplicate(field: &str, bad: &str) -> Cause {
    cause(
        "FieldValueDuplicate",
        field,
        format!("Duplicate value: {bad}"),
    )
}

fn forbidden(field: &str, detail: &str) -> Cause {
    cause(
        "FieldValueForbidden",
        field,
        with_detail("Forbidden".into(), detail),
    )
}

fn not_found(field: &str, bad: &str) -> Cause {
    cause("FieldValueNotFound", field, format!("Not found: {bad}"))
}

/// `field.TooLong` as of 1.32: "Too long: may not be more than N bytes".
fn too_long(field: &str, max: usize) -> Cause {
    let unit = if max == 1 { "byte" } else { "bytes" };
    cause(
        "FieldValueTooLong",
        field,
        format!("Too long: may not be more than {max} {unit}"),
    )
}

/// "field is immutable" for a changed value.
fn immutable(field: &str, new: &Value) -> Cause {
    invalid(field, &go_value(new), "field is immutable")
}

/// How upstream prints a bad value of a simple field: strings quoted, numbers and bools
/// bare, null as `null`, anything else as compact JSON.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// `%#v` of a `map[string]string` (keys sorted, as Go's fmt prints maps).
fn go_string_map(v: &Value) -> String {
    match v.as_object() {
        None => "map[string]string(nil)".into(),
        Some(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| {
                    let val = m.get(k.as_str()).map(value_text).unwrap_or_default();
                    format!("{}:{}", go_quote(k), go_quote(&val))
                })
                .collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
    }
}

/// A scalar as text (strings bare), for places upstream holds a string.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The String() of a metav1.LabelSelector (gogo-protobuf generated), which upstream prints
/// for selector causes.
fn label_selector_string(sel: &Value) -> String {
    if sel.is_null() {
        return "nil".into();
    }
    let mut labels = String::from("map[string]string{");
    if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        for k in keys {
            let val = m.get(k.as_str()).map(value_text).unwrap_or_default();
            labels.push_str(&format!("{k}: {val},"));
        }
    }
    labels.push('}');
    let mut exprs = String::from("[]LabelSelectorRequirement{");
    for e in arr(sel, "matchExpressions") {
        let values: Vec<String> = arr(e, "values").iter().map(value_text).collect();
        exprs.push_str(&format!(
            "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
            s(e, "key"),
            s(e, "operator"),
            values.join(" ")
        ));
    }
    exprs.push('}');
    format!("&LabelSelector{{MatchLabels:{labels},MatchExpressions:{exprs},}}")
}

// ---------------------------------------------------------------------------
// JSON accessors that never panic
// ---------------------------------------------------------------------------

/// A string field, "" when absent or not a string.
fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// An array field's items, empty when absent or not an array.
fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A field that is present and not null.
fn present<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// Whether a field is absent, null, "", 0, false, or an empty array/object.
fn is_empty_field(v: &Value, key: &str) -> bool {
    match v.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(x)) => x.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::Bool(b)) => !b,
    }
}

/// An integer field (also accepting integral floats).
fn int(v: &Value, key: &str) -> Option<i64> {
    let x = v.get(key)?;
    x.as_i64()
        .or_else(|| x.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

/// A mutable object field, created (or replaced when not an object) as `{}`.
fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let m = v.as_object_mut()?;
    let slot = m.entry(key.to_string()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    Some(slot)
}

/// Sets `key` to `val` when it is absent or null.
fn set_default(v: &mut Value, key: &str, val: Value) {
    if let Some(m) = v.as_object_mut() {
        match m.get(key) {
            None | Some(Value::Null) => {
                m.insert(key.to_string(), val);
            }
            _ => {}
        }
    }
}

/// Sets `key` to `val` when it is absent, null or "".
fn set_default_str(v: &mut Value, key: &str, val: &str) {
    if let Some(m) = v.as_object_mut() {
        match m.get(key) {
            None | Some(Value::Null) => {
                m.insert(key.to_string(), val.into());
            }
            Some(Value::String(x)) if x.is_empty() => {
                m.insert(key.to_string(), val.into());
            }
            _ => {}
        }
    }
}

/// Mutable items of an array field (none when absent or not an array).
fn items_mut<'a>(v: &'a mut Value, key: &str) -> std::slice::IterMut<'a, Value> {
    match v.get_mut(key).and_then(Value::as_array_mut) {
        Some(a) => a.iter_mut(),
        None => <&mut [Value]>::default().iter_mut(),
    }
}

fn empty_map() -> Map<String, Value> {
    Map::new()
}

// ---------------------------------------------------------------------------
// Name and key formats (k8s.io/apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const CONFIG_MAP_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// `validation.RegexError`.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns_label(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1035(v: &str) -> bool {
    matches_dns_label(v) && v.as_bytes()[0].is_ascii_lowercase()
}

fn matches_subdomain(v: &str) -> bool {
    !v.is_empty() && v.split('.').all(matches_dns_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

fn is_dns1123_label(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns_label(v) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

fn is_dns1123_subdomain(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !matches_subdomain(v) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

fn is_dns1035_label(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns1035(v) {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `validation.IsQualifiedName` (label keys, annotation keys, finalizers).
fn is_qualified_name(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = v.split('/').collect();
    let name = match parts.as_slice() {
        [n] => *n,
        [prefix, n] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            *n
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `validation.IsValidLabelValue`.
fn is_valid_label_value(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !v.is_empty() && !matches_qualified_name(v) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `validation.IsConfigMapKey` (ConfigMap and Secret data keys).
fn is_config_map_key(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 253 {
        errs.push(max_len_error(253));
    }
    let ok = !v.is_empty()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if !ok {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            CONFIG_MAP_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if v == "." {
        errs.push("must not be '.'".into());
    } else if v == ".." {
        errs.push("must not be '..'".into());
    } else if v.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

/// `validation.IsValidPortName` (IANA_SVC_NAME).
fn is_valid_port_name(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 15 {
        errs.push(max_len_error(15));
    }
    if v.is_empty()
        || !v
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !v.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if v.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if v.starts_with('-') || v.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

/// `validation.IsValidPortNum`.
fn is_valid_port_num(p: i64) -> Vec<String> {
    if (1..=65535).contains(&p) {
        Vec::new()
    } else {
        vec![inclusive_range_error(1, 65535)]
    }
}

/// `path.IsValidPathSegmentName` (RBAC object names).
fn is_valid_path_segment_name(v: &str) -> Vec<String> {
    for bad in [".", ".."] {
        if v == bad {
            return vec![format!("may not be '{bad}'")];
        }
    }
    let mut errs = Vec::new();
    for bad in ["/", "%"] {
        if v.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

/// `validation.IsValidIP` (only the textual forms Go's parser accepts).
fn is_valid_ip(v: &str) -> bool {
    v.parse::<std::net::IpAddr>().is_ok()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    PathSegment,
    /// Anything goes (beyond being present).
    Any,
}

impl NameRule {
    fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Subdomain => is_dns1123_subdomain(name),
            NameRule::Label => is_dns1123_label(name),
            NameRule::Dns1035 => is_dns1035_label(name),
            NameRule::PathSegment => is_valid_path_segment_name(name),
            NameRule::Any => Vec::new(),
        }
    }
}

/// The `ValidateXxxName` upstream passes to ValidateObjectMeta for a kind.
fn name_rule(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("apps", "StatefulSet") => NameRule::Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        ("certificates.k8s.io", "CertificateSigningRequest") => NameRule::Any,
        _ => NameRule::Subdomain,
    }
}

/// Kinds that are never stored and whose names upstream does not validate.
fn is_virtual_kind(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Binding")
            | ("authentication.k8s.io", _)
            | ("authorization.k8s.io", _)
            | ("autoscaling", "Scale")
            | ("policy", "Eviction")
    )
}

// ---------------------------------------------------------------------------
// Object metadata (k8s.io/apimachinery/pkg/api/validation/objectmeta.go)
// ---------------------------------------------------------------------------

/// `ValidateLabels`: every key a qualified name, every value a label value.
fn validate_labels(labels: Option<&Value>, field: &str) -> Errs {
    let mut errs = Errs::new();
    let Some(labels) = labels.filter(|v| !v.is_null()) else {
        return errs;
    };
    let Some(m) = labels.as_object() else {
        errs.push(invalid(
            field,
            &go_value(labels),
            "must be a map of strings",
        ));
        return errs;
    };
    for (k, v) in m {
        for msg in is_qualified_name(k) {
            errs.push(invalid(field, &go_quote(k), &msg));
        }
        match v {
            Value::String(val) => {
                for msg in is_valid_label_value(val) {
                    errs.push(invalid(field, &go_quote(val), &msg));
                }
            }
            Value::Null => {}
            other => errs.push(invalid(field, &go_value(other), "must be a string")),
        }
    }
    errs
}

/// `ValidateAnnotations`: keys are qualified names (case-insensitively), total size ≤ 256 KiB.
fn validate_annotations(annotations: Option<&Value>, field: &str) -> Errs {
    let mut errs = Errs::new();
    let Some(ann) = annotations.filter(|v| !v.is_null()) else {
        return errs;
    };
    let Some(m) = ann.as_object() else {
        errs.push(invalid(field, &go_value(ann), "must be a map of strings"));
        return errs;
    };
    let mut total = 0usize;
    for (k, v) in m {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(invalid(field, &go_quote(k), &msg));
        }
        total += k.len();
        match v {
            Value::String(val) => total += val.len(),
            Value::Null => {}
            other => errs.push(invalid(field, &go_value(other), "must be a string")),
        }
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// `ValidateFinalizers`: qualified names; `orphan` and `foregroundDeletion` exclude each other.
/// With `standard_only` (a namespace's spec.finalizers), unprefixed names must be standard.
fn validate_finalizers(finalizers: Option<&Value>, field: &str, standard_only: bool) -> Errs {
    let mut errs = Errs::new();
    let Some(list) = finalizers.and_then(Value::as_array) else {
        return errs;
    };
    let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    for f in list {
        let Some(name) = f.as_str() else {
            errs.push(invalid(field, &go_value(f), "must be a string"));
            continue;
        };
        let msgs = is_qualified_name(name);
        if !msgs.is_empty() {
            for msg in msgs {
                errs.push(invalid(field, &go_quote(name), &msg));
            }
        } else if standard_only
            && !name.contains('/')
            && !matches!(name, "kubernetes" | "orphan" | "foregroundDeletion")
        {
            errs.push(invalid(
                field,
                &go_quote(name),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    if names.contains(&"orphan") && names.contains(&"foregroundDeletion") {
        let printed: Vec<String> = names.iter().map(|n| go_quote(n)).collect();
        errs.push(invalid(
            field,
            &format!("[]string{{{}}}", printed.join(", ")),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// `ValidateObjectMeta` for a stored object: name per kind, labels, annotations,
/// finalizers, owner references.
fn validate_object_meta(group: &str, kind: &str, obj: &Value, check_name: bool) -> Errs {
    let mut errs = Errs::new();
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    if !meta.is_null() && !meta.is_object() {
        errs.push(invalid("metadata", &go_value(meta), "must be an object"));
        return errs;
    }
    match meta.get("name") {
        None | Some(Value::Null) => {
            errs.push(required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
        Some(Value::String(n)) if n.is_empty() => {
            errs.push(required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
        Some(Value::String(n)) => {
            if check_name {
                errs.extend(validate_name(group, kind, n));
            }
        }
        Some(other) => errs.push(invalid(
            "metadata.name",
            &go_value(other),
            "must be a string",
        )),
    }
    if let Some(g) = int(meta, "generation")
        && g < 0
    {
        errs.push(invalid(
            "metadata.generation",
            &g.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    errs.extend(validate_labels(meta.get("labels"), "metadata.labels"));
    errs.extend(validate_annotations(
        meta.get("annotations"),
        "metadata.annotations",
    ));
    errs.extend(validate_finalizers(
        meta.get("finalizers"),
        "metadata.finalizers",
        false,
    ));
    for (i, r) in arr(meta, "ownerReferences").iter().enumerate() {
        let base = format!("metadata.ownerReferences[{i}]");
        if s(r, "apiVersion").is_empty() {
            errs.push(invalid(
                &format!("{base}.apiVersion"),
                &go_quote(s(r, "apiVersion")),
                "version must not be empty",
            ));
        }
        if s(r, "kind").is_empty() {
            errs.push(invalid(
                &format!("{base}.kind"),
                &go_quote(s(r, "kind")),
                "kind must not be empty",
            ));
        }
        if s(r, "name").is_empty() {
            errs.push(invalid(
                &format!("{base}.name"),
                &go_quote(s(r, "name")),
                "name must not be empty",
            ));
        }
        if s(r, "uid").is_empty() {
            errs.push(invalid(
                &format!("{base}.uid"),
                &go_quote(s(r, "uid")),
                "uid must not be empty",
            ));
        }
    }
    errs
}

// ---------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------

fn default_object(group: &str, kind: &str, obj: &mut Value) {
    match (group, kind) {
        ("", "Pod") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_pod_spec(spec, true);
            }
        }
        ("", "PodTemplate") => default_template(obj.get_mut("template")),
        ("", "ReplicationController") => default_replication_controller(obj),
        ("", "Service") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_service(spec);
            }
        }
        ("", "Secret") => default_secret(obj),
        ("", "Namespace") => default_namespace(obj),
        ("", "PersistentVolumeClaim") => default_pvc(obj),
        ("", "PersistentVolume") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = obj_mut(obj, "status") {
                set_default_str(status, "phase", "Pending");
            }
        }
        ("", "Endpoints") => {
            for subset in items_mut(obj, "subsets") {
                for p in items_mut(subset, "ports") {
                    if p.is_object() {
                        set_default_str(p, "protocol", "TCP");
                    }
                }
            }
        }
        ("", "LimitRange") => {
            if let Some(spec) = obj.get_mut("spec").filter(|x| x.is_object()) {
                default_limit_range(spec);
            }
        }
        ("", "Node") => {
            if let Some(status) = obj.get_mut("status").filter(|x| x.is_object()) {
                let cap = status.get("capacity").filter(|c| c.is_object()).cloned();
                if let Some(cap) = cap {
                    set_default(status, "allocatable", cap);
                }
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            for p in items_mut(obj, "ports") {
                if p.is_object() {
                    set_default(p, "name", json!(""));
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
        ("apps", "Deployment") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_deployment(spec);
            }
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_replicas(spec);
                default_template(spec.get_mut("template"));
            }
        }
        ("apps", "StatefulSet") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_stateful_set(spec);
            }
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_daemon_set(spec);
            }
        }
        ("batch", "Job") => default_job(obj),
        ("batch", "CronJob") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_cron_job(spec);
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => default_binding(obj),
        ("networking.k8s.io", "NetworkPolicy") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_network_policy(spec);
            }
        }
        ("networking.k8s.io", "IngressClass") => {
            if let Some(p) = obj
                .get_mut("spec")
                .and_then(|s| s.get_mut("parameters"))
                .filter(|p| p.is_object())
            {
                set_default(p, "scope", json!("Cluster"));
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            set_default(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        ("storage.k8s.io", "StorageClass") => {
            set_default(obj, "reclaimPolicy", json!("Delete"));
            set_default(obj, "volumeBindingMode", json!("Immediate"));
        }
        ("storage.k8s.io", "CSIDriver") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "attachRequired", json!(true));
                set_default(spec, "podInfoOnMount", json!(false));
                set_default(spec, "storageCapacity", json!(false));
                set_default(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
                if is_empty_field(spec, "volumeLifecycleModes")
                    && let Some(m) = spec.as_object_mut()
                {
                    m.insert("volumeLifecycleModes".into(), json!(["Persistent"]));
                }
                set_default(spec, "requiresRepublish", json!(false));
                set_default(spec, "seLinuxMount", json!(false));
            }
        }
        _ => {}
    }
}

fn validate_object(group: &str, kind: &str, obj: &Value, old: Option<&Value>) -> Errs {
    if is_virtual_kind(group, kind) {
        return Errs::new();
    }
    if !obj.is_object() {
        return vec![invalid("", &go_value(obj), "must be an object")];
    }
    // StatefulSet names are not revalidated on update (older ones may be subdomains).
    let check_name = !(group == "apps" && kind == "StatefulSet" && old.is_some());
    let mut errs = validate_object_meta(group, kind, obj, check_name);
    let e = &mut errs;
    match (group, kind) {
        ("", "Pod") => {
            validate_pod_only(obj, e);
            match old {
                None => {
                    let spec = obj.get("spec").unwrap_or(&Value::Null);
                    if !arr(spec, "ephemeralContainers").is_empty() {
                        e.push(forbidden(
                            "spec.ephemeralContainers",
                            "cannot be set on create",
                        ));
                    }
                    if !s(spec, "nodeName").is_empty() && !arr(spec, "schedulingGates").is_empty() {
                        e.push(forbidden(
                            "spec.nodeName",
                            "cannot be set until all schedulingGates have been cleared",
                        ));
                    }
                }
                Some(old) => validate_pod_update(obj, old, e),
            }
        }
        ("", "PodTemplate") => validate_pod_template(obj.get("template"), "template", e),
        ("", "ReplicationController") => validate_replication_controller(obj, e),
        ("", "Service") => validate_service(obj, old, e),
        ("", "ConfigMap") => validate_config_map(obj, old, e),
        ("", "Secret") => validate_secret(obj, old, e),
        ("", "Namespace") => validate_namespace(obj, e),
        ("", "PersistentVolumeClaim") => validate_pvc(obj, old, e),
        ("", "PersistentVolume") => validate_pv(obj, e),
        ("", "Endpoints") => validate_endpoints(obj, e),
        ("apps", "Deployment") => validate_deployment(obj, old, e),
        ("apps", "ReplicaSet") => validate_replica_set(obj, old, e),
        ("apps", "StatefulSet") => validate_stateful_set(obj, old, e),
        ("apps", "DaemonSet") => validate_daemon_set(obj, old, e),
        ("apps", "ControllerRevision") => {
            if obj.get("data").is_none_or(Value::is_null) {
                e.push(required("data", "data is mandatory"));
            }
            nonnegative(obj, "revision", "revision", e);
            if let Some(old) = old
                && !sem_eq(obj.get("data"), old.get("data"))
            {
                e.push(immutable("data", obj.get("data").unwrap_or(&Value::Null)));
            }
        }
        ("batch", "Job") => validate_job(obj, old, e),
        ("batch", "CronJob") => validate_cron_job(obj, old, e),
        ("rbac.authorization.k8s.io", "Role") => validate_role_rules(obj, true, e),
        ("rbac.authorization.k8s.io", "ClusterRole") => validate_role_rules(obj, false, e),
        ("rbac.authorization.k8s.io", "RoleBinding") => validate_role_binding(obj, old, true, e),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            validate_role_binding(obj, old, false, e)
        }
        ("discovery.k8s.io", "EndpointSlice") => validate_endpoint_slice(obj, old, e),
        _ => {}
    }
    errs
}

// ---------------------------------------------------------------------------
// Pod defaults (pkg/apis/core/v1/defaults.go, zz_generated.defaults.go)
// ---------------------------------------------------------------------------

/// `SetDefaults_Container`'s pull policy: Always for `:latest` or an untagged,
/// undigested image; IfNotPresent otherwise (including unparsable references).
fn default_pull_policy(image: &str) -> &'static str {
    if image.is_empty() || image.trim() != image {
        return "IfNotPresent";
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    // The tag follows the last ':' that comes after the last '/'.
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    // Docker references must have a lowercase repository path (the domain may be mixed case).
    let path = match repo.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => repo,
    };
    if path.is_empty() || path.bytes().any(|c| c.is_ascii_uppercase()) {
        return "IfNotPresent";
    }
    match (tag, digest) {
        (Some("latest"), _) => "Always",
        (None, None) => "Always",
        _ => "IfNotPresent",
    }
}

fn default_field_ref(holder: &mut Value) {
    if let Some(fr) = holder.get_mut("fieldRef").filter(|f| f.is_object()) {
        set_default_str(fr, "apiVersion", "v1");
    }
}

fn default_http_get(handler: &mut Value) {
    if let Some(h) = handler.get_mut("httpGet").filter(|h| h.is_object()) {
        set_default_str(h, "path", "/");
        set_default_str(h, "scheme", "HTTP");
    }
}

fn default_probe(probe: &mut Value) {
    if !probe.is_object() {
        return;
    }
    set_default(probe, "timeoutSeconds", json!(1));
    set_default(probe, "periodSeconds", json!(10));
    set_default(probe, "successThreshold", json!(1));
    set_default(probe, "failureThreshold", json!(3));
    default_http_get(probe);
    if let Some(g) = probe.get_mut("grpc").filter(|g| g.is_object()) {
        set_default(g, "service", json!(""));
    }
}

fn default_container(c: &mut Value, pod_only: bool, host_network: bool) {
    if !c.is_object() {
        return;
    }
    if is_empty_field(c, "imagePullPolicy") {
        let policy = default_pull_policy(s(c, "image"));
        set_default_str(c, "imagePullPolicy", policy);
    }
    set_default_str(c, "terminationMessagePath", "/dev/termination-log");
    set_default_str(c, "terminationMessagePolicy", "File");
    for p in items_mut(c, "ports") {
        if !p.is_object() {
            continue;
        }
        set_default_str(p, "protocol", "TCP");
        if host_network && int(p, "hostPort").unwrap_or(0) == 0 {
            let cp = p.get("containerPort").cloned().unwrap_or(Value::Null);
            if !cp.is_null()
                && let Some(m) = p.as_object_mut()
            {
                m.insert("hostPort".into(), cp);
            }
        }
    }
    for e in items_mut(c, "env") {
        if let Some(vf) = e.get_mut("valueFrom").filter(|v| v.is_object()) {
            default_field_ref(vf);
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(key) {
            default_probe(p);
        }
    }
    if let Some(lc) = c.get_mut("lifecycle").filter(|l| l.is_object()) {
        for key in ["postStart", "preStop"] {
            if let Some(h) = lc.get_mut(key).filter(|h| h.is_object()) {
                default_http_get(h);
            }
        }
    }
    // Go always serializes the (non-pointer) resources struct.
    if let Some(res) = obj_mut(c, "resources")
        && pod_only
    {
        // SetDefaults_Pod: requests default to limits, only on Pods (not templates).
        let limits = res.get("limits").and_then(Value::as_object).cloned();
        if let Some(limits) = limits.filter(|l| !l.is_empty())
            && let Some(req) = obj_mut(res, "requests").and_then(Value::as_object_mut)
        {
            for (k, v) in limits {
                req.entry(k).or_insert(v);
            }
        }
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn default_items_field_refs(src: &mut Value) {
    for item in items_mut(src, "items") {
        default_field_ref(item);
    }
}

fn default_volume(v: &mut Value) {
    if !v.is_object() {
        return;
    }
    if VOLUME_SOURCES.iter().all(|k| present(v, k).is_none()) {
        if let Some(m) = v.as_object_mut() {
            m.insert("emptyDir".into(), json!({}));
        }
        return;
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(src) = v.get_mut(key).filter(|x| x.is_object()) {
            set_default(src, "defaultMode", json!(420));
            default_items_field_refs(src);
        }
    }
    if let Some(p) = v.get_mut("projected").filter(|x| x.is_object()) {
        for source in items_mut(p, "sources") {
            if let Some(d) = source.get_mut("downwardAPI").filter(|x| x.is_object()) {
                default_items_field_refs(d);
            }
            if let Some(t) = source
                .get_mut("serviceAccountToken")
                .filter(|x| x.is_object())
            {
                set_default(t, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(h) = v.get_mut("hostPath").filter(|x| x.is_object()) {
        set_default(h, "type", json!(""));
    }
    if let Some(i) = v.get_mut("iscsi").filter(|x| x.is_object()) {
        set_default_str(i, "iscsiInterface", "default");
    }
    if let Some(r) = v.get_mut("rbd").filter(|x| x.is_object()) {
        set_default_str(r, "pool", "rbd");
        set_default_str(r, "user", "admin");
        set_default_str(r, "keyring", "/etc/ceph/keyring");
    }
    if let Some(a) = v.get_mut("azureDisk").filter(|x| x.is_object()) {
        set_default(a, "cachingMode", json!("ReadWrite"));
        set_default(a, "fsType", json!("ext4"));
        set_default(a, "readOnly", json!(false));
        set_default(a, "kind", json!("Shared"));
    }
    if let Some(sc) = v.get_mut("scaleIO").filter(|x| x.is_object()) {
        set_default_str(sc, "storageMode", "ThinProvisioned");
        set_default_str(sc, "fsType", "xfs");
    }
    if let Some(e) = v.get_mut("ephemeral").filter(|x| x.is_object())
        && let Some(t) = e.get_mut("volumeClaimTemplate").filter(|x| x.is_object())
        && let Some(spec) = t.get_mut("spec").filter(|x| x.is_object())
    {
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
}

/// `SetDefaults_PodSpec` and everything nested in it; `pod_only` adds `SetDefaults_Pod`.
fn default_pod_spec(spec: &mut Value, pod_only: bool) {
    if !spec.is_object() {
        return;
    }
    set_default_str(spec, "dnsPolicy", "ClusterFirst");
    set_default_str(spec, "restartPolicy", "Always");
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default_str(spec, "schedulerName", "default-scheduler");
    if pod_only {
        set_default(spec, "enableServiceLinks", json!(true));
    }
    let host_network = pod_only && spec.get("hostNetwork") == Some(&Value::Bool(true));
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        let hn = host_network && key != "ephemeralContainers";
        for c in items_mut(spec, key) {
            default_container(c, pod_only && key != "ephemeralContainers", hn);
        }
    }
    for v in items_mut(spec, "volumes") {
        default_volume(v);
    }
}

/// Defaults of a PodTemplateSpec's spec (templates never get the Pod-only defaults).
fn default_template(template: Option<&mut Value>) {
    if let Some(t) = template.filter(|t| t.is_object())
        && let Some(spec) = t.get_mut("spec")
    {
        default_pod_spec(spec, false);
    }
}

// ---------------------------------------------------------------------------
// Defaults of other kinds
// ---------------------------------------------------------------------------

fn default_replicas(spec: &mut Value) {
    set_default(spec, "replicas", json!(1));
}

fn default_deployment(spec: &mut Value) {
    default_replicas(spec);
    if let Some(strategy) = obj_mut(spec, "strategy") {
        set_default_str(strategy, "type", "RollingUpdate");
        if s(strategy, "type") == "RollingUpdate"
            && let Some(ru) = obj_mut(strategy, "rollingUpdate")
        {
            set_default(ru, "maxUnavailable", json!("25%"));
            set_default(ru, "maxSurge", json!("25%"));
        }
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    default_template(spec.get_mut("template"));
}

fn default_stateful_set(spec: &mut Value) {
    set_default_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(us) = obj_mut(spec, "updateStrategy") {
        if is_empty_field(us, "type") {
            set_default_str(us, "type", "RollingUpdate");
            set_default(us, "rollingUpdate", json!({}));
        }
        if s(us, "type") == "RollingUpdate"
            && let Some(ru) = us.get_mut("rollingUpdate").filter(|r| r.is_object())
        {
            set_default(ru, "partition", json!(0));
        }
    }
    if let Some(p) = obj_mut(spec, "persistentVolumeClaimRetentionPolicy") {
        set_default_str(p, "whenDeleted", "Retain");
        set_default_str(p, "whenScaled", "Retain");
    }
    default_replicas(spec);
    set_default(spec, "revisionHistoryLimit", json!(10));
    default_template(spec.get_mut("template"));
    for pvc in items_mut(spec, "volumeClaimTemplates") {
        default_pvc(pvc);
    }
}

fn default_daemon_set(spec: &mut Value) {
    if let Some(us) = obj_mut(spec, "updateStrategy") {
        set_default_str(us, "type", "RollingUpdate");
        if s(us, "type") == "RollingUpdate"
            && let Some(ru) = obj_mut(us, "rollingUpdate")
        {
            set_default(ru, "maxUnavailable", json!(1));
            set_default(ru, "maxSurge", json!(0));
        }
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    default_template(spec.get_mut("template"));
}

/// `SetDefaults_Job` (the generated selector and labels are the registry's business).
fn default_job(obj: &mut Value) {
    let template_labels = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.is_object())
        .cloned();
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    if present(spec, "completions").is_none() && present(spec, "parallelism").is_none() {
        set_default(spec, "completions", json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    if present(spec, "backoffLimitPerIndex").is_some() {
        set_default(spec, "backoffLimit", json!(i32::MAX));
    } else {
        set_default(spec, "backoffLimit", json!(6));
    }
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let has_failure_policy = present(spec, "podFailurePolicy").is_some();
    if let Some(pfp) = spec.get_mut("podFailurePolicy").filter(|p| p.is_object()) {
        for rule in items_mut(pfp, "rules") {
            for pattern in items_mut(rule, "onPodConditions") {
                set_default_str(pattern, "status", "True");
            }
        }
    }
    let replacement = if has_failure_policy {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    default_template(spec.get_mut("template"));
    if let Some(labels) = template_labels
        && let Some(meta) = obj_mut(obj, "metadata")
        && is_empty_field(meta, "labels")
        && let Some(m) = meta.as_object_mut()
    {
        m.insert("labels".into(), labels);
    }
}

fn default_cron_job(spec: &mut Value) {
    set_default_str(spec, "concurrencyPolicy", "Allow");
    set_default(spec, "suspend", json!(false));
    set_default(spec, "successfulJobsHistoryLimit", json!(3));
    set_default(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(jt) = spec.get_mut("jobTemplate").filter(|j| j.is_object())
        && let Some(js) = jt.get_mut("spec").filter(|j| j.is_object())
    {
        default_template(js.get_mut("template"));
    }
}

fn default_replication_controller(obj: &mut Value) {
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.is_object())
        .cloned();
    if let Some(labels) = labels {
        if let Some(spec) = obj_mut(obj, "spec")
            && is_empty_field(spec, "selector")
            && let Some(m) = spec.as_object_mut()
        {
            m.insert("selector".into(), labels.clone());
        }
        if let Some(meta) = obj_mut(obj, "metadata")
            && is_empty_field(meta, "labels")
            && let Some(m) = meta.as_object_mut()
        {
            m.insert("labels".into(), labels);
        }
    }
    if let Some(spec) = obj_mut(obj, "spec") {
        default_replicas(spec);
        default_template(spec.get_mut("template"));
    }
}

fn default_service(spec: &mut Value) {
    set_default_str(spec, "sessionAffinity", "None");
    if s(spec, "sessionAffinity") == "None"
        && let Some(m) = spec.as_object_mut()
    {
        m.remove("sessionAffinityConfig");
    }
    if s(spec, "sessionAffinity") == "ClientIP"
        && spec
            .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
            .is_none_or(Value::is_null)
        && let Some(m) = spec.as_object_mut()
    {
        m.insert(
            "sessionAffinityConfig".into(),
            json!({"clientIP": {"timeoutSeconds": 10800}}),
        );
    }
    set_default_str(spec, "type", "ClusterIP");
    for p in items_mut(spec, "ports") {
        if !p.is_object() {
            continue;
        }
        set_default_str(p, "protocol", "TCP");
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::String(x)) => x.is_empty(),
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            _ => false,
        };
        if unset
            && let Some(port) = p.get("port").filter(|x| x.is_number()).cloned()
            && let Some(m) = p.as_object_mut()
        {
            m.insert("targetPort".into(), port);
        }
    }
    let ty = s(spec, "type").to_string();
    let externally_accessible = ty == "LoadBalancer"
        || ty == "NodePort"
        || (ty == "ClusterIP" && !arr(spec, "externalIPs").is_empty());
    if externally_accessible {
        set_default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

fn default_pvc(pvc: &mut Value) {
    if !pvc.is_object() {
        return;
    }
    if let Some(spec) = obj_mut(pvc, "spec") {
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = obj_mut(pvc, "status") {
        set_default_str(status, "phase", "Pending");
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Go's `base64.StdEncoding.DecodeString` acceptance: the error names the byte offset.
fn base64_check(text: &str) -> Result<usize, String> {
    let b = text.as_bytes();
    // Go ignores '\r' and '\n'.
    let clean: Vec<(usize, u8)> = b
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, c)| *c != b'\r' && *c != b'\n')
        .collect();
    let bad = |i: usize| Err(format!("illegal base64 data at input byte {i}"));
    let mut len = 0usize;
    let mut pad_at: Option<usize> = None;
    for (k, &(i, c)) in clean.iter().enumerate() {
        if c == b'=' {
            if pad_at.is_none() {
                // Padding may only start in the 3rd or 4th position of a quantum.
                if k % 4 < 2 {
                    return bad(i);
                }
                pad_at = Some(k);
            }
            continue;
        }
        if pad_at.is_some() || !B64.contains(&c) {
            return bad(i);
        }
        len += 1;
    }
    let total = clean.len();
    match pad_at {
        Some(p) => {
            if !total.is_multiple_of(4)
                || (p % 4 == 2 && total - p != 2)
                || (p % 4 == 3 && total - p != 1)
            {
                return bad(b.len());
            }
        }
        None => {
            if !total.is_multiple_of(4) {
                return bad(b.len().saturating_sub(total % 4));
            }
        }
    }
    Ok(len * 3 / 4)
}

fn default_secret(obj: &mut Value) {
    set_default_str(obj, "type", "Opaque");
    // v1 → internal conversion: stringData overwrites data and is not kept.
    let string_data = obj
        .as_object_mut()
        .and_then(|m| m.remove("stringData"))
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_else(empty_map);
    if !string_data.is_empty()
        && let Some(data) = obj_mut(obj, "data").and_then(Value::as_object_mut)
    {
        for (k, v) in string_data {
            data.insert(k, json!(base64_encode(value_text(&v).as_bytes())));
        }
    }
}

fn default_namespace(obj: &mut Value) {
    let deleting = obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null());
    if !deleting && let Some(spec) = obj_mut(obj, "spec") {
        set_default(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = obj_mut(obj, "status") {
        set_default_str(status, "phase", "Active");
    }
}

fn default_limit_range(spec: &mut Value) {
    for item in items_mut(spec, "limits") {
        if s(item, "type") != "Container" {
            continue;
        }
        let get = |it: &Value, k: &str| it.get(k).and_then(Value::as_object).cloned();
        let max = get(item, "max").unwrap_or_default();
        let min = get(item, "min").unwrap_or_default();
        let mut default = get(item, "default").unwrap_or_default();
        let mut default_request = get(item, "defaultRequest").unwrap_or_default();
        for (k, v) in max {
            default.entry(k).or_insert(v);
        }
        for (k, v) in &default {
            default_request.entry(k.clone()).or_insert(v.clone());
        }
        for (k, v) in min {
            default_request.entry(k).or_insert(v);
        }
        if let Some(m) = item.as_object_mut() {
            if !default.is_empty() {
                m.insert("default".into(), Value::Object(default));
            }
            if !default_request.is_empty() {
                m.insert("defaultRequest".into(), Value::Object(default_request));
            }
        }
    }
}

fn default_binding(obj: &mut Value) {
    if let Some(rr) = obj.get_mut("roleRef").filter(|r| r.is_object()) {
        set_default_str(rr, "apiGroup", "rbac.authorization.k8s.io");
    }
    for subj in items_mut(obj, "subjects") {
        if matches!(s(subj, "kind"), "User" | "Group") {
            set_default_str(subj, "apiGroup", "rbac.authorization.k8s.io");
        }
    }
}

fn default_network_policy(spec: &mut Value) {
    for dir in ["ingress", "egress"] {
        for rule in items_mut(spec, dir) {
            for p in items_mut(rule, "ports") {
                if p.is_object() {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
    }
    if is_empty_field(spec, "policyTypes") {
        let mut types = vec![json!("Ingress")];
        if !arr(spec, "egress").is_empty() {
            types.push(json!("Egress"));
        }
        if let Some(m) = spec.as_object_mut() {
            m.insert("policyTypes".into(), Value::Array(types));
        }
    }
}

// ---------------------------------------------------------------------------
// Pod spec validation (pkg/apis/core/validation: ValidatePodSpec and friends)
// ---------------------------------------------------------------------------

/// The items of an array field; a present non-array is reported as invalid.
fn list<'a>(v: &'a Value, key: &str, path: &str, errs: &mut Errs) -> &'a [Value] {
    match v.get(key) {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(other) => {
            errs.push(invalid(path, &go_value(other), "must be a list"));
            &[]
        }
    }
}

/// A string field; a present non-string is reported as invalid (and read as "").
fn string<'a>(v: &'a Value, key: &str, path: &str, errs: &mut Errs) -> &'a str {
    match v.get(key) {
        None | Some(Value::Null) => "",
        Some(Value::String(x)) => x,
        Some(other) => {
            errs.push(invalid(path, &go_value(other), "must be a string"));
            ""
        }
    }
}

/// `ValidateNonnegativeField` on an optional integer field.
fn nonnegative(v: &Value, key: &str, path: &str, errs: &mut Errs) {
    match v.get(key) {
        None | Some(Value::Null) => {}
        Some(x) => match x.as_i64() {
            Some(n) if n < 0 => errs.push(invalid(
                path,
                &n.to_string(),
                "must be greater than or equal to 0",
            )),
            Some(_) => {}
            None => errs.push(invalid(path, &go_value(x), "must be an integer")),
        },
    }
}

/// An IntOrString port: a number in 1–65535 or an IANA service name.
fn validate_port_num_or_name(v: &Value, path: &str, errs: &mut Errs) {
    match v {
        Value::Number(n) => {
            let p = n.as_i64().unwrap_or(0);
            for m in is_valid_port_num(p) {
                errs.push(invalid(path, &n.to_string(), &m));
            }
        }
        Value::String(name) => {
            for m in is_valid_port_name(name) {
                errs.push(invalid(path, &go_quote(name), &m));
            }
        }
        Value::Null => {
            for m in is_valid_port_num(0) {
                errs.push(invalid(path, "0", &m));
            }
        }
        other => errs.push(invalid(
            path,
            &go_value(other),
            "must be an integer or a string",
        )),
    }
}

fn validate_handler(h: &Value, path: &str, probe: bool, errs: &mut Errs) {
    let kinds: &[&str] = if probe {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    } else {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    };
    let mut n = 0;
    for k in kinds {
        let Some(x) = present(h, k) else { continue };
        let p = format!("{path}.{k}");
        if n > 0 {
            errs.push(forbidden(&p, "may not specify more than 1 handler type"));
            continue;
        }
        n += 1;
        match *k {
            "exec" if arr(x, "command").is_empty() => {
                errs.push(required(&format!("{p}.command"), ""));
            }
            "httpGet" => {
                if s(x, "path").is_empty() {
                    errs.push(required(&format!("{p}.path"), ""));
                }
                validate_port_num_or_name(
                    x.get("port").unwrap_or(&Value::Null),
                    &format!("{p}.port"),
                    errs,
                );
                let scheme = s(x, "scheme");
                if scheme != "HTTP" && scheme != "HTTPS" {
                    errs.push(not_supported(
                        &format!("{p}.scheme"),
                        &go_quote(scheme),
                        &["HTTP", "HTTPS"],
                    ));
                }
            }
            "tcpSocket" | "grpc" => validate_port_num_or_name(
                x.get("port").unwrap_or(&Value::Null),
                &format!("{p}.port"),
                errs,
            ),
            _ => {}
        }
    }
    if n == 0 {
        errs.push(required(path, "must specify a handler type"));
    }
}

/// `validateLivenessProbe` / `validateReadinessProbe` / `validateStartupProbe`.
fn validate_probe(c: &Value, key: &str, base: &str, errs: &mut Errs) {
    let Some(p) = present(c, key) else { return };
    let path = format!("{base}.{key}");
    if !p.is_object() {
        errs.push(invalid(&path, &go_value(p), "must be an object"));
        return;
    }
    validate_handler(p, &path, true, errs);
    for f in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        nonnegative(p, f, &format!("{path}.{f}"), errs);
    }
    if let Some(t) = int(p, "terminationGracePeriodSeconds") {
        if key == "readinessProbe" {
            errs.push(invalid(
                &format!("{path}.terminationGracePeriodSeconds"),
                &t.to_string(),
                "must not be set for readinessProbes",
            ));
        } else if t <= 0 {
            errs.push(invalid(
                &format!("{path}.terminationGracePeriodSeconds"),
                &t.to_string(),
                "must be greater than 0",
            ));
        }
    }
    if key != "readinessProbe"
        && let Some(st) = int(p, "successThreshold")
        && st != 1
    {
        errs.push(invalid(
            &format!("{path}.successThreshold"),
            &st.to_string(),
            "must be 1",
        ));
    }
}

fn validate_container_ports(c: &Value, base: &str, errs: &mut Errs) {
    let path = format!("{base}.ports");
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in list(c, "ports", &path, errs).iter().enumerate() {
        let idx = format!("{path}[{i}]");
        let name = s(port, "name");
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(invalid(&format!("{idx}.name"), &go_quote(name), &m));
                }
            } else if names.contains(&name) {
                errs.push(duplicate(&format!("{idx}.name"), &go_quote(name)));
            } else {
                names.push(name);
            }
        }
        match int(port, "containerPort") {
            None | Some(0) => errs.push(required(&format!("{idx}.containerPort"), "")),
            Some(p) => {
                for m in is_valid_port_num(p) {
                    errs.push(invalid(&format!("{idx}.containerPort"), &p.to_string(), &m));
                }
            }
        }
        if let Some(hp) = int(port, "hostPort").filter(|p| *p != 0) {
            for m in is_valid_port_num(hp) {
                errs.push(invalid(&format!("{idx}.hostPort"), &hp.to_string(), &m));
            }
        }
        let proto = s(port, "protocol");
        if proto.is_empty() {
            errs.push(required(&format!("{idx}.protocol"), ""));
        } else if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            errs.push(not_supported(
                &format!("{idx}.protocol"),
                &go_quote(proto),
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
}

fn validate_env(c: &Value, base: &str, errs: &mut Errs) {
    let path = format!("{base}.env");
    for (i, ev) in list(c, "env", &path, errs).iter().enumerate() {
        let idx = format!("{path}[{i}]");
        let name = s(ev, "name");
        if name.is_empty() {
            errs.push(required(&format!("{idx}.name"), ""));
        } else if name
            .chars()
            .any(|ch| !(' '..='~').contains(&ch) || ch == '=')
        {
            errs.push(invalid(
                &format!("{idx}.name"),
                &go_quote(name),
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
        let Some(vf) = present(ev, "valueFrom") else {
            continue;
        };
        let vf_path = format!("{idx}.valueFrom");
        let mut sources = 0;
        for key in [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
        ] {
            let Some(src) = present(vf, key) else {
                continue;
            };
            sources += 1;
            let p = format!("{vf_path}.{key}");
            match key {
                "fieldRef" => {
                    if s(src, "apiVersion").is_empty() {
                        errs.push(required(&format!("{p}.apiVersion"), ""));
                    }
                    if s(src, "fieldPath").is_empty() {
                        errs.push(required(&format!("{p}.fieldPath"), ""));
                    }
                }
                "resourceFieldRef" => {
                    if s(src, "resource").is_empty() {
                        errs.push(required(&format!("{p}.resource"), ""));
                    }
                }
                _ => {
                    let n = s(src, "name");
                    for m in is_dns1123_subdomain(n) {
                        errs.push(invalid(&format!("{p}.name"), &go_quote(n), &m));
                    }
                    let k = s(src, "key");
                    if k.is_empty() {
                        errs.push(required(&format!("{p}.key"), ""));
                    } else {
                        for m in is_config_map_key(k) {
                            errs.push(invalid(&format!("{p}.key"), &go_quote(k), &m));
                        }
                    }
                }
            }
        }
        if sources == 0 {
            errs.push(invalid(
                &vf_path,
                "\"\"",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !s(ev, "value").is_empty() {
            errs.push(invalid(
                &vf_path,
                "\"\"",
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(invalid(
                &vf_path,
                "\"\"",
                "may not have more than one field specified at a time",
            ));
        }
    }
    let path = format!("{base}.envFrom");
    for (i, ef) in list(c, "envFrom", &path, errs).iter().enumerate() {
        let idx = format!("{path}[{i}]");
        let prefix = s(ef, "prefix");
        if prefix
            .chars()
            .any(|ch| !(' '..='~').contains(&ch) || ch == '=')
        {
            errs.push(invalid(
                &format!("{idx}.prefix"),
                &go_quote(prefix),
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
        let mut sources = 0;
        for key in ["configMapRef", "secretRef"] {
            let Some(src) = present(ef, key) else {
                continue;
            };
            sources += 1;
            let n = s(src, "name");
            let p = format!("{idx}.{key}.name");
            if n.is_empty() {
                errs.push(required(&p, ""));
            } else {
                for m in is_dns1123_subdomain(n) {
                    errs.push(invalid(&p, &go_quote(n), &m));
                }
            }
        }
        if sources == 0 {
            errs.push(invalid(
                &path,
                "\"\"",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if sources > 1 {
            errs.push(invalid(
                &path,
                "\"\"",
                "may not have more than one field specified at a time",
            ));
        }
    }
}

fn validate_volume_mounts(c: &Value, base: &str, volumes: &[String], errs: &mut Errs) {
    let path = format!("{base}.volumeMounts");
    let mut mount_points: Vec<&str> = Vec::new();
    for (i, m) in list(c, "volumeMounts", &path, errs).iter().enumerate() {
        let idx = format!("{path}[{i}]");
        let name = s(m, "name");
        if name.is_empty() {
            errs.push(required(&format!("{idx}.name"), ""));
        }
        if !volumes.iter().any(|v| v == name) {
            errs.push(not_found(&format!("{idx}.name"), &go_quote(name)));
        }
        let mp = s(m, "mountPath");
        if mp.is_empty() {
            errs.push(required(&format!("{idx}.mountPath"), ""));
        }
        if mount_points.contains(&mp) {
            errs.push(invalid(
                &format!("{idx}.mountPath"),
                &go_quote(mp),
                "must be unique",
            ));
        }
        mount_points.push(mp);
        if !s(m, "subPath").is_empty() && !s(m, "subPathExpr").is_empty() {
            errs.push(invalid(
                &format!("{idx}.subPathExpr"),
                &go_quote(s(m, "subPathExpr")),
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
    }
}

/// A resource.Quantity as a number, or None when it does not match upstream's syntax.
fn parse_quantity(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(x) => crate::common::quantity::parse(x),
        _ => None,
    }
}

const QUANTITY_REGEX_ERR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_overcommit_allowed(name: &str) -> bool {
    is_native_resource(name) && !name.starts_with("hugepages-")
}

/// `ValidateResourceRequirements` (names, non-negative quantities, requests ≤ limits).
fn validate_resources(c: &Value, base: &str, errs: &mut Errs) {
    let Some(res) = present(c, "resources") else {
        return;
    };
    let path = format!("{base}.resources");
    let lim_path = format!("{path}.limits");
    let req_path = format!("{path}.requests");
    let limits = res.get("limits").and_then(Value::as_object);
    let requests = res.get("requests").and_then(Value::as_object);
    let check_name = |name: &str, p: &str, errs: &mut Errs| {
        for m in is_qualified_name(name) {
            errs.push(invalid(p, &go_quote(name), &m));
        }
        if is_native_resource(name)
            && !matches!(name, "cpu" | "memory" | "ephemeral-storage")
            && !name.starts_with("hugepages-")
        {
            errs.push(invalid(
                p,
                &go_quote(name),
                "must be a standard resource for containers",
            ));
        }
    };
    let check_qty = |q: &Value, p: &str, errs: &mut Errs| -> Option<f64> {
        match parse_quantity(q) {
            None => {
                errs.push(invalid(p, &go_value(q), QUANTITY_REGEX_ERR));
                None
            }
            Some(x) if x < 0.0 => {
                errs.push(invalid(
                    p,
                    &go_quote(&value_text(q)),
                    "must be greater than or equal to 0",
                ));
                Some(x)
            }
            Some(x) => Some(x),
        }
    };
    for (name, q) in limits.into_iter().flatten() {
        let p = format!("{lim_path}[{name}]");
        check_name(name, &p, errs);
        check_qty(q, &p, errs);
    }
    for (name, q) in requests.into_iter().flatten() {
        let p = format!("{req_path}[{name}]");
        check_name(name, &p, errs);
        let Some(req) = check_qty(q, &p, errs) else {
            continue;
        };
        match limits.and_then(|l| l.get(name)) {
            Some(lq) => {
                let Some(lim) = parse_quantity(lq) else {
                    continue;
                };
                let shown = go_quote(&value_text(q));
                if req != lim && !is_overcommit_allowed(name) {
                    errs.push(invalid(
                        &req_path,
                        &shown,
                        &format!("must be equal to {name} limit of {}", value_text(lq)),
                    ));
                } else if req > lim {
                    errs.push(invalid(
                        &req_path,
                        &shown,
                        &format!(
                            "must be less than or equal to {name} limit of {}",
                            value_text(lq)
                        ),
                    ));
                }
            }
            None => {
                if !is_overcommit_allowed(name) {
                    errs.push(required(
                        &lim_path,
                        "Limit must be set for non overcommitable resources",
                    ));
                }
            }
        }
    }
}

/// `validateContainerCommon` plus the per-kind checks of regular and init containers.
fn validate_container(
    c: &Value,
    base: &str,
    volumes: &[String],
    kind: ContainerKind,
    errs: &mut Errs,
) {
    if !c.is_object() {
        errs.push(invalid(base, &go_value(c), "must be an object"));
        return;
    }
    let name = string(c, "name", &format!("{base}.name"), errs);
    if name.is_empty() {
        errs.push(required(&format!("{base}.name"), ""));
    } else {
        for m in is_dns1123_label(name) {
            errs.push(invalid(&format!("{base}.name"), &go_quote(name), &m));
        }
    }
    if string(c, "image", &format!("{base}.image"), errs).is_empty() {
        errs.push(required(&format!("{base}.image"), ""));
    }
    let tmp = s(c, "terminationMessagePolicy");
    match tmp {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(required(&format!("{base}.terminationMessagePolicy"), "")),
        other => errs.push(not_supported(
            &format!("{base}.terminationMessagePolicy"),
            &go_quote(other),
            &["File", "FallbackToLogsOnError"],
        )),
    }
    validate_container_ports(c, base, errs);
    validate_env(c, base, errs);
    validate_volume_mounts(c, base, volumes, errs);
    match s(c, "imagePullPolicy") {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(required(&format!("{base}.imagePullPolicy"), "")),
        other => errs.push(not_supported(
            &format!("{base}.imagePullPolicy"),
            &go_quote(other),
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    validate_resources(c, base, errs);
    let restartable_init = kind == ContainerKind::Init && s(c, "restartPolicy") == "Always";
    match kind {
        ContainerKind::Regular => {
            if let Some(lc) = present(c, "lifecycle") {
                for k in ["postStart", "preStop"] {
                    if let Some(h) = present(lc, k) {
                        validate_handler(h, &format!("{base}.lifecycle.{k}"), false, errs);
                    }
                }
            }
            for p in ["livenessProbe", "readinessProbe", "startupProbe"] {
                validate_probe(c, p, base, errs);
            }
            if present(c, "restartPolicy").is_some() {
                errs.push(forbidden(
                    &format!("{base}.restartPolicy"),
                    "may not be set for non-init containers",
                ));
            }
        }
        ContainerKind::Init => {
            if let Some(rp) = present(c, "restartPolicy")
                && rp != "Always"
            {
                errs.push(not_supported(
                    &format!("{base}.restartPolicy"),
                    &go_value(rp),
                    &["Always"],
                ));
            }
            for k in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if present(c, k).is_none() {
                    continue;
                }
                if restartable_init {
                    if k == "lifecycle" {
                        continue;
                    }
                    validate_probe(c, k, base, errs);
                } else {
                    errs.push(forbidden(
                        &format!("{base}.{k}"),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
        ContainerKind::Ephemeral => {}
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ContainerKind {
    Regular,
    Init,
    Ephemeral,
}

/// `ValidateVolumes`: returns the names of the valid volumes (for mount checks).
fn validate_volumes(spec: &Value, base: &str, errs: &mut Errs) -> Vec<String> {
    let path = format!("{base}.volumes");
    let mut names: Vec<String> = Vec::new();
    for (i, vol) in list(spec, "volumes", &path, errs).iter().enumerate() {
        let idx = format!("{path}[{i}]");
        let mut el = Errs::new();
        let mut n = 0;
        for key in VOLUME_SOURCES {
            let Some(src) = present(vol, key) else {
                continue;
            };
            let p = format!("{idx}.{key}");
            if n > 0 {
                el.push(forbidden(&p, "may not specify more than 1 volume type"));
                continue;
            }
            n += 1;
            let req_field = match *key {
                "hostPath" => Some("path"),
                "secret" => Some("secretName"),
                "configMap" => Some("name"),
                "persistentVolumeClaim" => Some("claimName"),
                "nfs" => Some("server"),
                "csi" => Some("driver"),
                _ => None,
            };
            if let Some(f) = req_field
                && s(src, f).is_empty()
            {
                el.push(required(&format!("{p}.{f}"), ""));
            }
            if *key == "nfs" {
                let np = s(src, "path");
                if np.is_empty() {
                    el.push(required(&format!("{p}.path"), ""));
                } else if !np.starts_with('/') {
                    el.push(invalid(
                        &format!("{p}.path"),
                        &go_quote(np),
                        "must be an absolute path",
                    ));
                }
            }
            if let Some(mode) = int(src, "defaultMode")
                && !(0..=0o777).contains(&mode)
            {
                el.push(invalid(
                    &format!("{p}.defaultMode"),
                    &mode.to_string(),
                    "must be a number between 0 and 0777 (octal), both inclusive",
                ));
            }
        }
        if n == 0 {
            el.push(required(&idx, "must specify a volume type"));
        }
        let name = s(vol, "name");
        if name.is_empty() {
            el.push(required(&format!("{idx}.name"), ""));
        } else {
            for m in is_dns1123_label(name) {
                el.push(invalid(&format!("{idx}.name"), &go_quote(name), &m));
            }
        }
        if names.iter().any(|x| x == name) {
            el.push(duplicate(&format!("{idx}.name"), &go_quote(name)));
        }
        if el.is_empty() {
            names.push(name.to_string());
        } else {
            errs.extend(el);
        }
    }
    names
}

fn validate_tolerations(spec: &Value, base: &str, errs: &mut Errs) {
    let path = format!("{base}.tolerations");
    for (i, t) in list(spec, "tolerations", &path, errs).iter().enumerate() {
        let idx = format!("{path}[{i}]");
        let key = s(t, "key");
        let op = s(t, "operator");
        let effect = s(t, "effect");
        let value = s(t, "value");
        if !key.is_empty() {
            for m in is_qualified_name(key) {
                errs.push(invalid(&format!("{idx}.key"), &go_quote(key), &m));
            }
        }
        if key.is_empty() && op != "Exists" {
            errs.push(invalid(
                &format!("{idx}.operator"),
                &go_quote(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if present(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            errs.push(invalid(
                &format!("{idx}.effect"),
                &go_quote(effect),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "" | "Equal" => {
                let msgs = is_valid_label_value(value);
                if !msgs.is_empty() {
                    errs.push(invalid(
                        &format!("{idx}.operator"),
                        &go_quote(value),
                        &msgs.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !value.is_empty() {
                    let shown = format!(
                        "core.Toleration{{Key:{}, Operator:{}, Value:{}, Effect:{}, TolerationSeconds:{}}}",
                        go_quote(key),
                        go_quote(op),
                        go_quote(value),
                        go_quote(effect),
                        int(t, "tolerationSeconds")
                            .map_or("(*int64)(nil)".to_string(), |x| format!("(*int64)({x})"))
                    );
                    errs.push(invalid(
                        &format!("{idx}.operator"),
                        &shown,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(not_supported(
                &format!("{idx}.operator"),
                &go_quote(other),
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            errs.push(not_supported(
                &format!("{idx}.effect"),
                &go_quote(effect),
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ));
        }
    }
}

/// `ValidatePodSpec`; `is_pod` adds the pod-only container checks and host-port rule.
fn validate_pod_spec(spec: &Value, base: &str, is_pod: bool, errs: &mut Errs) {
    if !spec.is_object() {
        if spec.is_null() {
            errs.push(required(&format!("{base}.containers"), ""));
        } else {
            errs.push(invalid(base, &go_value(spec), "must be an object"));
        }
        return;
    }
    if present(spec, "terminationGracePeriodSeconds").is_none() {
        errs.push(required(
            &format!("{base}.terminationGracePeriodSeconds"),
            "",
        ));
    }
    let volumes = validate_volumes(spec, base, errs);
    // Regular containers.
    let cpath = format!("{base}.containers");
    let containers = list(spec, "containers", &cpath, errs);
    if containers.is_empty() {
        errs.push(required(&cpath, ""));
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let idx = format!("{cpath}[{i}]");
        validate_container(c, &idx, &volumes, ContainerKind::Regular, errs);
        let name = s(c, "name");
        if names.contains(&name) {
            errs.push(duplicate(&format!("{idx}.name"), &go_quote(name)));
        } else {
            names.push(name);
        }
    }
    check_host_port_conflicts(containers, &cpath, errs);
    // Init containers: unique among regular and init containers.
    let ipath = format!("{base}.initContainers");
    let inits = list(spec, "initContainers", &ipath, errs);
    for (i, c) in inits.iter().enumerate() {
        let idx = format!("{ipath}[{i}]");
        validate_container(c, &idx, &volumes, ContainerKind::Init, errs);
        let name = s(c, "name");
        if names.contains(&name) {
            errs.push(duplicate(&format!("{idx}.name"), &go_quote(name)));
        } else if !name.is_empty() {
            names.push(name);
        }
        check_host_port_conflicts(std::slice::from_ref(c), &ipath, errs);
    }
    // Ephemeral containers: unique across all kinds, targets must exist.
    let epath = format!("{base}.ephemeralContainers");
    let others = names.clone();
    for (i, c) in list(spec, "ephemeralContainers", &epath, errs)
        .iter()
        .enumerate()
    {
        let idx = format!("{epath}[{i}]");
        validate_container(c, &idx, &volumes, ContainerKind::Ephemeral, errs);
        let name = s(c, "name");
        if names.contains(&name) {
            errs.push(duplicate(&format!("{idx}.name"), &go_quote(name)));
        } else {
            names.push(name);
        }
        let target = s(c, "targetContainerName");
        if !target.is_empty() && !others.contains(&target) {
            errs.push(not_found(
                &format!("{idx}.targetContainerName"),
                &go_quote(target),
            ));
        }
    }
    // hostNetwork: hostPort must equal containerPort (0 allowed in templates).
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        for (i, c) in containers.iter().enumerate() {
            for (j, p) in arr(c, "ports").iter().enumerate() {
                let hp = int(p, "hostPort").unwrap_or(0);
                let cp = int(p, "containerPort").unwrap_or(0);
                if (is_pod || hp != 0) && hp != cp {
                    errs.push(invalid(
                        &format!("{cpath}[{i}].ports[{j}].hostPort"),
                        &hp.to_string(),
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
    match s(spec, "restartPolicy") {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(required(&format!("{base}.restartPolicy"), "")),
        other => errs.push(not_supported(
            &format!("{base}.restartPolicy"),
            &go_quote(other),
            &["Always", "OnFailure", "Never"],
        )),
    }
    let dns = s(spec, "dnsPolicy");
    match dns {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.push(required(&format!("{base}.dnsPolicy"), "")),
        other => errs.push(not_supported(
            &format!("{base}.dnsPolicy"),
            &go_quote(other),
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    errs.extend(validate_labels(
        spec.get("nodeSelector"),
        &format!("{base}.nodeSelector"),
    ));
    let dns_config = present(spec, "dnsConfig");
    if dns == "None" {
        match dns_config {
            None => errs.push(required(
                &format!("{base}.dnsConfig"),
                "must provide `dnsConfig` when `dnsPolicy` is None",
            )),
            Some(dc) if arr(dc, "nameservers").is_empty() => errs.push(required(
                &format!("{base}.dnsConfig.nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            )),
            _ => {}
        }
    }
    if let Some(dc) = dns_config {
        for (i, ns) in arr(dc, "nameservers").iter().enumerate() {
            let ip = value_text(ns);
            if !is_valid_ip(&ip) {
                errs.push(invalid(
                    &format!("{base}.dnsConfig.nameservers[{i}]"),
                    &go_quote(&ip),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ));
            }
        }
    }
    for (field, rule) in [
        ("serviceAccountName", NameRule::Subdomain),
        ("nodeName", NameRule::Subdomain),
        ("priorityClassName", NameRule::Subdomain),
    ] {
        let v = s(spec, field);
        if !v.is_empty() {
            for m in rule.check(v) {
                errs.push(invalid(&format!("{base}.{field}"), &go_quote(v), &m));
            }
        }
    }
    if let Some(ads) = present(spec, "activeDeadlineSeconds") {
        let ok = ads
            .as_i64()
            .is_some_and(|v| (1..=i64::from(i32::MAX)).contains(&v));
        if !ok {
            errs.push(invalid(
                &format!("{base}.activeDeadlineSeconds"),
                &go_value(ads),
                &inclusive_range_error(1, i64::from(i32::MAX)),
            ));
        }
    }
    for field in ["hostname", "subdomain"] {
        let v = s(spec, field);
        if !v.is_empty() {
            for m in is_dns1123_label(v) {
                errs.push(invalid(&format!("{base}.{field}"), &go_quote(v), &m));
            }
        }
    }
    validate_tolerations(spec, base, errs);
    if let Some(pp) = present(spec, "preemptionPolicy") {
        let v = value_text(pp);
        if v != "PreemptLowerPriority" && v != "Never" {
            errs.push(not_supported(
                &format!("{base}.preemptionPolicy"),
                &go_quote(&v),
                &["PreemptLowerPriority", "Never"],
            ));
        }
    }
}

/// `checkHostPortConflicts`: the same protocol/hostIP/hostPort twice.
fn check_host_port_conflicts(containers: &[Value], path: &str, errs: &mut Errs) {
    let mut seen: Vec<String> = Vec::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, p) in arr(c, "ports").iter().enumerate() {
            let hp = int(p, "hostPort").unwrap_or(0);
            if hp == 0 {
                continue;
            }
            let key = format!("{}/{}/{hp}", s(p, "protocol"), s(p, "hostIP"));
            if seen.contains(&key) {
                errs.push(duplicate(
                    &format!("{path}[{ci}].ports[{pi}].hostPort"),
                    &go_quote(&key),
                ));
            } else {
                seen.push(key);
            }
        }
    }
}

/// `ValidatePodTemplateSpec` (labels are reported at `<path>.labels`, as upstream does).
fn validate_pod_template(template: Option<&Value>, path: &str, errs: &mut Errs) {
    let Some(t) = template.filter(|t| !t.is_null()) else {
        errs.push(required(path, ""));
        return;
    };
    let meta = t.get("metadata").unwrap_or(&Value::Null);
    errs.extend(validate_labels(
        meta.get("labels"),
        &format!("{path}.labels"),
    ));
    errs.extend(validate_annotations(
        meta.get("annotations"),
        &format!("{path}.annotations"),
    ));
    let spec = t.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(spec, &format!("{path}.spec"), false, errs);
    if !arr(spec, "ephemeralContainers").is_empty() {
        errs.push(forbidden(
            &format!("{path}.spec.ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
}

/// Pod create checks beyond the spec: image whitespace, projected tokens need an SA.
fn validate_pod_only(obj: &Value, errs: &mut Errs) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(spec, "spec", true, errs);
    if s(spec, "serviceAccountName").is_empty() {
        for (vi, vol) in arr(spec, "volumes").iter().enumerate() {
            if let Some(p) = present(vol, "projected") {
                for (si, src) in arr(p, "sources").iter().enumerate() {
                    if present(src, "serviceAccountToken").is_some() {
                        errs.push(forbidden(
                            &format!(
                                "spec.volumes[{vi}].projected.sources[{si}].serviceAccountToken"
                            ),
                            "must not be specified when serviceAccountName is not set",
                        ));
                    }
                }
            }
        }
    }
    for key in ["containers", "initContainers"] {
        for (i, c) in arr(spec, key).iter().enumerate() {
            let image = s(c, "image");
            if image.trim() != image {
                errs.push(invalid(
                    &format!("spec.{key}[{i}].image"),
                    &go_quote(image),
                    "must not have leading or trailing whitespace",
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Updates: semantic equality and pod spec mutability
// ---------------------------------------------------------------------------

/// `apiequality.Semantic.DeepEqual` on JSON: null, empty lists and empty maps equal absence.
fn normalized(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Array(a) => {
            let items: Vec<Value> = a
                .iter()
                .map(|x| normalized(x).unwrap_or(Value::Null))
                .collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        Value::Object(m) => {
            let out: Map<String, Value> = m
                .iter()
                .filter_map(|(k, x)| normalized(x).map(|x| (k.clone(), x)))
                .collect();
            (!out.is_empty()).then_some(Value::Object(out))
        }
        other => Some(other.clone()),
    }
}

fn sem_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    normalized(a.unwrap_or(&Value::Null)) == normalized(b.unwrap_or(&Value::Null))
}

/// The differing leaves of two values, as `-path: old` / `+path: new` lines.
fn json_diff(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<String>) {
    if out.len() > 40 || sem_eq(old, new) {
        return;
    }
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                json_diff(
                    &format!("{path}.{k}"),
                    a.get(k.as_str()),
                    b.get(k.as_str()),
                    out,
                );
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                json_diff(&format!("{path}[{i}]"), Some(x), Some(y), out);
            }
        }
        _ => {
            if let Some(o) = old.filter(|o| !o.is_null()) {
                out.push(format!("-\t{path}: {o}"));
            }
            if let Some(n) = new.filter(|n| !n.is_null()) {
                out.push(format!("+\t{path}: {n}"));
            }
        }
    }
}

fn diff_text(root: &str, old: &Value, new: &Value) -> String {
    let mut lines = Vec::new();
    json_diff(root, Some(old), Some(new), &mut lines);
    lines.join("\n")
}

/// `ValidatePodUpdate` beyond the create checks.
fn validate_pod_update(new: &Value, old: &Value, errs: &mut Errs) {
    let null = Value::Null;
    let ns = new.get("spec").unwrap_or(&null);
    let os = old.get("spec").unwrap_or(&null);
    for key in ["containers", "initContainers"] {
        let path = format!("spec.{key}");
        let nc = arr(ns, key);
        if nc.len() != arr(os, key).len() {
            errs.push(forbidden(
                &path,
                "pod updates may not add or remove containers",
            ));
            return;
        }
        for (i, c) in nc.iter().enumerate() {
            let image = s(c, "image");
            if image.is_empty() {
                errs.push(required(&format!("{path}[{i}].image"), ""));
            }
        }
    }
    let new_ads = present(ns, "activeDeadlineSeconds");
    let old_ads = present(os, "activeDeadlineSeconds");
    match (new_ads, old_ads) {
        (Some(n), old_ads) => {
            let nv = n.as_i64().unwrap_or(-1);
            if !(0..=i64::from(i32::MAX)).contains(&nv) {
                errs.push(invalid(
                    "spec.activeDeadlineSeconds",
                    &go_value(n),
                    &inclusive_range_error(0, i64::from(i32::MAX)),
                ));
                return;
            }
            if let Some(ov) = old_ads.and_then(Value::as_i64)
                && ov < nv
            {
                errs.push(invalid(
                    "spec.activeDeadlineSeconds",
                    &nv.to_string(),
                    "must be less than or equal to previous value",
                ));
                return;
            }
        }
        (None, Some(_)) => errs.push(invalid(
            "spec.activeDeadlineSeconds",
            "null",
            "must not update from a positive integer to nil value",
        )),
        (None, None) => {}
    }
    // Existing tolerations may only change their tolerationSeconds.
    let new_tols = arr(ns, "tolerations");
    for ot in arr(os, "tolerations") {
        let found = new_tols.iter().any(|nt| {
            let mut a = ot.clone();
            let mut b = nt.clone();
            if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object_mut()) {
                a.remove("tolerationSeconds");
                b.remove("tolerationSeconds");
            }
            sem_eq(Some(&a), Some(&b))
        });
        if !found {
            errs.push(forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    // Scheduling gates may only be removed.
    let old_gates: Vec<&str> = arr(os, "schedulingGates")
        .iter()
        .map(|g| s(g, "name"))
        .collect();
    for (i, g) in arr(ns, "schedulingGates").iter().enumerate() {
        let name = s(g, "name");
        if !old_gates.contains(&name) {
            errs.push(forbidden(
                &format!("spec.schedulingGates[{i}].name"),
                &format!("only deletion is allowed, but found new scheduling gate '{name}'"),
            ));
        }
    }
    if sem_eq(Some(ns), Some(os)) {
        return;
    }
    // Munge the updatable fields back to their old values and compare the rest.
    let mut munged = ns.clone();
    if let Some(m) = munged.as_object_mut() {
        for key in ["containers", "initContainers"] {
            if let Some(list) = m.get_mut(key).and_then(Value::as_array_mut) {
                for (i, c) in list.iter_mut().enumerate() {
                    let old_image = arr(os, key).get(i).and_then(|o| o.get("image")).cloned();
                    if let Some(cm) = c.as_object_mut() {
                        match old_image {
                            Some(img) => cm.insert("image".into(), img),
                            None => cm.remove("image"),
                        };
                    }
                }
            }
        }
        for key in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
            match os.get(key) {
                Some(v) => m.insert(key.into(), v.clone()),
                None => m.remove(key),
            };
        }
        let old_grace = int(os, "terminationGracePeriodSeconds");
        if old_grace.is_some_and(|g| g < 0)
            && int(ns, "terminationGracePeriodSeconds") == Some(1)
            && let Some(g) = os.get("terminationGracePeriodSeconds")
        {
            m.insert("terminationGracePeriodSeconds".into(), g.clone());
        }
        // Gated pods may gain node selectors and node affinity.
        if !arr(os, "schedulingGates").is_empty() {
            match os.get("nodeSelector") {
                Some(v) => m.insert("nodeSelector".into(), v.clone()),
                None => m.remove("nodeSelector"),
            };
            let old_na = os.pointer("/affinity/nodeAffinity").cloned();
            if let Some(aff) = m.get_mut("affinity").and_then(Value::as_object_mut) {
                match old_na {
                    Some(na) => aff.insert("nodeAffinity".into(), na),
                    None => aff.remove("nodeAffinity"),
                };
            } else if let Some(na) = old_na {
                m.insert("affinity".into(), json!({ "nodeAffinity": na }));
            }
        }
    }
    if !sem_eq(Some(&munged), Some(os)) {
        errs.push(forbidden(
            "spec",
            &format!(
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n{}",
                diff_text("spec", os, &munged)
            ),
        ));
    }
}

// ---------------------------------------------------------------------------
// Label selectors (metav1.LabelSelector)
// ---------------------------------------------------------------------------

/// `ValidateLabelSelector`.
fn validate_label_selector(sel: &Value, path: &str, errs: &mut Errs) {
    if sel.is_null() {
        return;
    }
    if !sel.is_object() {
        errs.push(invalid(path, &go_value(sel), "must be an object"));
        return;
    }
    errs.extend(validate_labels(
        sel.get("matchLabels"),
        &format!("{path}.matchLabels"),
    ));
    let mpath = format!("{path}.matchExpressions");
    for (i, e) in list(sel, "matchExpressions", &mpath, errs)
        .iter()
        .enumerate()
    {
        let idx = format!("{mpath}[{i}]");
        let values = arr(e, "values");
        match s(e, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(required(
                        &format!("{idx}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(forbidden(
                        &format!("{idx}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(invalid(
                &format!("{idx}.operator"),
                &go_quote(other),
                "not a valid selector operator",
            )),
        }
        let key = s(e, "key");
        for m in is_qualified_name(key) {
            errs.push(invalid(&format!("{idx}.key"), &go_quote(key), &m));
        }
        for (vi, v) in values.iter().enumerate() {
            let v = value_text(v);
            for m in is_valid_label_value(&v) {
                errs.push(invalid(&format!("{idx}.values[{vi}]"), &go_quote(&v), &m));
            }
        }
    }
}

/// A selector as `metav1.LabelSelectorAsSelector` builds it.
enum Selector<'a> {
    /// A nil selector: matches nothing, and is not "empty".
    Nothing,
    /// `{}`: matches everything.
    Everything,
    Some(&'a Value),
}

/// `LabelSelectorAsSelector`; `Err` when it would fail to convert.
fn as_selector(sel: &Value) -> Result<Selector<'_>, ()> {
    if sel.is_null() {
        return Ok(Selector::Nothing);
    }
    if !sel.is_object() {
        return Err(());
    }
    let labels = sel.get("matchLabels").and_then(Value::as_object);
    let exprs = arr(sel, "matchExpressions");
    if labels.is_none_or(Map::is_empty) && exprs.is_empty() {
        return Ok(Selector::Everything);
    }
    for (k, v) in labels.into_iter().flatten() {
        if !is_qualified_name(k).is_empty()
            || !v
                .as_str()
                .is_some_and(|v| is_valid_label_value(v).is_empty())
        {
            return Err(());
        }
    }
    for e in exprs {
        let n = arr(e, "values").len();
        let ok = match s(e, "operator") {
            "In" | "NotIn" => n > 0,
            "Exists" | "DoesNotExist" => n == 0,
            _ => false,
        };
        if !ok || !is_qualified_name(s(e, "key")).is_empty() {
            return Err(());
        }
    }
    Ok(Selector::Some(sel))
}

impl Selector<'_> {
    fn is_empty(&self) -> bool {
        matches!(self, Selector::Everything)
    }

    fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Selector::Nothing => false,
            Selector::Everything => true,
            Selector::Some(sel) => {
                let labels_ok = sel
                    .get("matchLabels")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .all(|(k, v)| get(k) == v.as_str());
                labels_ok
                    && arr(sel, "matchExpressions").iter().all(|e| {
                        let key = s(e, "key");
                        let in_values =
                            || get(key).is_some_and(|l| arr(e, "values").iter().any(|v| v == l));
                        match s(e, "operator") {
                            "In" => in_values(),
                            "NotIn" => !in_values(),
                            "Exists" => get(key).is_some(),
                            "DoesNotExist" => get(key).is_none(),
                            _ => false,
                        }
                    })
            }
        }
    }
}

fn template_labels(template: &Value) -> &Value {
    template.pointer("/metadata/labels").unwrap_or(&Value::Null)
}

/// "`selector` does not match template `labels`" unless an empty selector.
fn check_selector_matches(sel: &Selector, template: &Value, path: &str, errs: &mut Errs) {
    let labels = template_labels(template);
    if !sel.is_empty() && !sel.matches(labels) {
        errs.push(invalid(
            &format!("{path}.metadata.labels"),
            &go_string_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
}

// ---------------------------------------------------------------------------
// Workloads (pkg/apis/apps/validation, ReplicationController)
// ---------------------------------------------------------------------------

fn int_or_string_text(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Number(n) => n.to_string(),
        Value::Null => "0".into(),
        other => other.to_string(),
    }
}

/// `getIntOrPercentValue` and whether it was a valid percent.
fn int_or_percent(v: &Value) -> (i64, bool) {
    match v {
        Value::String(x) => match x.strip_suffix('%') {
            Some(n) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
                (n.parse().unwrap_or(i64::MAX), true)
            }
            _ => (x.parse().unwrap_or(0), false),
        },
        Value::Number(n) => (n.as_i64().unwrap_or(0), false),
        _ => (0, false),
    }
}

/// `ValidatePositiveIntOrPercent`.
fn validate_positive_int_or_percent(v: &Value, path: &str, errs: &mut Errs) {
    match v {
        Value::String(x) => {
            if !int_or_percent(v).1 {
                errs.push(invalid(
                    path,
                    x,
                    &regex_error(
                        "a valid percent string must be a numeric string followed by an ending '%'",
                        "[0-9]+%",
                        &["1%", "93%"],
                    ),
                ));
            }
        }
        Value::Number(n) => {
            if n.as_i64().is_none_or(|x| x < 0) {
                errs.push(invalid(
                    path,
                    &n.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
        }
        Value::Null => {}
        other => errs.push(invalid(
            path,
            &other.to_string(),
            "must be an integer or percentage (e.g '5%')",
        )),
    }
}

/// `IsNotMoreThan100Percent`.
fn not_more_than_100_percent(v: &Value, path: &str, errs: &mut Errs) {
    let (n, pct) = int_or_percent(v);
    if pct && n > 100 {
        errs.push(invalid(
            path,
            &int_or_string_text(v),
            "must not be greater than 100%",
        ));
    }
}

/// Selector checks of Deployment/ReplicaSet/StatefulSet; returns the selector to match.
fn required_selector<'a>(spec: &'a Value, kind: &str, errs: &mut Errs) -> Option<Selector<'a>> {
    let sel = spec.get("selector").unwrap_or(&Value::Null);
    if sel.is_null() {
        errs.push(required("spec.selector", ""));
    } else {
        validate_label_selector(sel, "spec.selector", errs);
        let n = sel
            .get("matchLabels")
            .and_then(Value::as_object)
            .map_or(0, Map::len)
            + arr(sel, "matchExpressions").len();
        if n == 0 {
            errs.push(invalid(
                "spec.selector",
                &label_selector_string(sel),
                &format!("empty selector is invalid for {kind}"),
            ));
        }
    }
    match as_selector(sel) {
        Ok(s) => Some(s),
        Err(()) => {
            let detail = if kind == "statefulset" {
                ""
            } else {
                "invalid label selector"
            };
            errs.push(invalid(
                "spec.selector",
                &label_selector_string(sel),
                detail,
            ));
            None
        }
    }
}

/// `ValidatePodTemplateSpecForReplicaSet` (also Deployment), with the RC's wording for RCs.
fn validate_template_for_replicas(spec: &Value, sel: &Selector, owner: &str, errs: &mut Errs) {
    // The RC template is a pointer upstream; the apps ones are structs (validated when empty).
    let empty = json!({});
    let t = match present(spec, "template") {
        Some(t) => t,
        None if owner == "ReplicationController" => {
            errs.push(required("spec.template", ""));
            return;
        }
        None => &empty,
    };
    check_selector_matches(sel, t, "spec.template", errs);
    validate_pod_template(Some(t), "spec.template", errs);
    let ps = t.get("spec").unwrap_or(&Value::Null);
    let rp = s(ps, "restartPolicy");
    if rp != "Always" {
        errs.push(not_supported(
            "spec.template.spec.restartPolicy",
            &go_quote(rp),
            &["Always"],
        ));
    }
    if let Some(ads) = present(ps, "activeDeadlineSeconds") {
        if owner == "ReplicationController" {
            errs.push(invalid(
                "spec.template.spec.activeDeadlineSeconds",
                &go_value(ads),
                "activeDeadlineSeconds in ReplicationController is not Supported",
            ));
        } else {
            errs.push(forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                &format!("activeDeadlineSeconds in {owner} is not Supported"),
            ));
        }
    }
}

fn validate_deployment(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    nonnegative(spec, "replicas", "spec.replicas", errs);
    if let Some(sel) = required_selector(spec, "deployment", errs) {
        validate_template_for_replicas(spec, &sel, "ReplicaSet", errs);
    }
    // Strategy.
    let strategy = spec.get("strategy").unwrap_or(&null);
    let ru = present(strategy, "rollingUpdate");
    match s(strategy, "type") {
        "Recreate" => {
            if ru.is_some() {
                errs.push(forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match ru {
            None => errs.push(required(
                "spec.strategy.rollingUpdate",
                "this should be defaulted and never be nil",
            )),
            Some(ru) => {
                let mu = ru.get("maxUnavailable").unwrap_or(&null);
                let ms = ru.get("maxSurge").unwrap_or(&null);
                validate_positive_int_or_percent(
                    mu,
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    errs,
                );
                validate_positive_int_or_percent(ms, "spec.strategy.rollingUpdate.maxSurge", errs);
                if int_or_percent(mu).0 == 0 && int_or_percent(ms).0 == 0 {
                    errs.push(invalid(
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        &int_or_string_text(mu),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                not_more_than_100_percent(mu, "spec.strategy.rollingUpdate.maxUnavailable", errs);
            }
        },
        other => {
            let ru_text = if ru.is_some() {
                "(*apps.RollingUpdateDeployment)(0xc000000000)"
            } else {
                "(*apps.RollingUpdateDeployment)(nil)"
            };
            errs.push(not_supported(
                "spec.strategy",
                &format!(
                    "apps.DeploymentStrategy{{Type:{}, RollingUpdate:{ru_text}}}",
                    go_quote(other)
                ),
                &["Recreate", "RollingUpdate"],
            ));
        }
    }
    nonnegative(spec, "minReadySeconds", "spec.minReadySeconds", errs);
    nonnegative(
        spec,
        "revisionHistoryLimit",
        "spec.revisionHistoryLimit",
        errs,
    );
    if let Some(rb) = present(spec, "rollbackTo") {
        nonnegative(rb, "revision", "spec.rollback.version", errs);
    }
    if let Some(pds) = int(spec, "progressDeadlineSeconds") {
        nonnegative(
            spec,
            "progressDeadlineSeconds",
            "spec.progressDeadlineSeconds",
            errs,
        );
        if pds <= int(spec, "minReadySeconds").unwrap_or(0) {
            errs.push(invalid(
                "spec.progressDeadlineSeconds",
                &pds.to_string(),
                "must be greater than minReadySeconds",
            ));
        }
    }
    selector_immutable(obj, old, errs);
}

/// apps/v1 strategies forbid changing `spec.selector`.
fn selector_immutable(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let Some(old) = old else { return };
    let new_sel = obj.pointer("/spec/selector");
    let old_sel = old.pointer("/spec/selector");
    if !sem_eq(new_sel, old_sel) {
        errs.push(invalid(
            "spec.selector",
            &label_selector_string(new_sel.unwrap_or(&Value::Null)),
            "field is immutable",
        ));
    }
}

fn validate_replica_set(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    nonnegative(spec, "replicas", "spec.replicas", errs);
    nonnegative(spec, "minReadySeconds", "spec.minReadySeconds", errs);
    // Upstream says "deployment" here too.
    if let Some(sel) = required_selector(spec, "deployment", errs) {
        validate_template_for_replicas(spec, &sel, "ReplicaSet", errs);
    }
    selector_immutable(obj, old, errs);
}

fn validate_replication_controller(obj: &Value, errs: &mut Errs) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    nonnegative(spec, "minReadySeconds", "spec.minReadySeconds", errs);
    let sel = spec.get("selector").unwrap_or(&Value::Null);
    if sel.as_object().is_none_or(Map::is_empty) {
        errs.push(required("spec.selector", ""));
    }
    errs.extend(validate_labels(Some(sel), "spec.selector"));
    nonnegative(spec, "replicas", "spec.replicas", errs);
    // An RC selector is a plain map: match it as matchLabels.
    let wrapped = json!({ "matchLabels": sel });
    let as_sel = if sel.as_object().is_some_and(|m| !m.is_empty()) {
        Selector::Some(&wrapped)
    } else {
        Selector::Everything
    };
    validate_template_for_replicas(spec, &as_sel, "ReplicationController", errs);
}

fn validate_stateful_set(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    match s(spec, "podManagementPolicy") {
        "OrderedReady" | "Parallel" => {}
        "" => errs.push(required("spec.podManagementPolicy", "")),
        other => errs.push(invalid(
            "spec.podManagementPolicy",
            &go_quote(other),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let us = spec.get("updateStrategy").unwrap_or(&null);
    let ru = present(us, "rollingUpdate");
    match s(us, "type") {
        "" => errs.push(required("spec.updateStrategy", "")),
        "OnDelete" => {
            if let Some(ru) = ru {
                errs.push(invalid(
                    "spec.updateStrategy.rollingUpdate",
                    &format!(
                        "apps.RollingUpdateStatefulSetStrategy{{Partition:{}, MaxUnavailable:(*intstr.IntOrString)(nil)}}",
                        int(ru, "partition").unwrap_or(0)
                    ),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(ru) = ru {
                nonnegative(ru, "partition", "spec.updateStrategy.rollingUpdate.partition", errs);
                if let Some(mu) = present(ru, "maxUnavailable") {
                    let p = "spec.updateStrategy.rollingUpdate.maxUnavailable";
                    validate_positive_int_or_percent(mu, p, errs);
                    if int_or_percent(mu).0 == 0 {
                        errs.push(invalid(p, &int_or_string_text(mu), "cannot be 0"));
                    }
                    not_more_than_100_percent(mu, p, errs);
                }
            }
        }
        other => errs.push(invalid(
            "spec.updateStrategy",
            &format!(
                "apps.StatefulSetUpdateStrategy{{Type:{}, RollingUpdate:(*apps.RollingUpdateStatefulSetStrategy)(nil)}}",
                go_quote(other)
            ),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    if let Some(p) = present(spec, "persistentVolumeClaimRetentionPolicy") {
        for f in ["whenDeleted", "whenScaled"] {
            let v = s(p, f);
            if v != "Retain" && v != "Delete" {
                errs.push(not_supported(
                    &format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                    &go_quote(v),
                    &["Retain", "Delete"],
                ));
            }
        }
    }
    nonnegative(spec, "replicas", "spec.replicas", errs);
    nonnegative(spec, "minReadySeconds", "spec.minReadySeconds", errs);
    if let Some(o) = present(spec, "ordinals") {
        nonnegative(o, "start", "spec.ordinals.start", errs);
    }
    let template = spec.get("template").unwrap_or(&null);
    if let Some(sel) = required_selector(spec, "statefulset", errs) {
        if template.is_null() {
            errs.push(required("spec.template", ""));
        } else {
            check_selector_matches(&sel, template, "spec.template", errs);
            let meta = template.get("metadata").unwrap_or(&null);
            errs.extend(validate_labels(meta.get("labels"), "spec.template.labels"));
            errs.extend(validate_annotations(
                meta.get("annotations"),
                "spec.template.annotations",
            ));
        }
    }
    let ps = template.get("spec").unwrap_or(&null);
    let rp = s(ps, "restartPolicy");
    if rp != "Always" {
        errs.push(not_supported(
            "spec.template.spec.restartPolicy",
            &go_quote(rp),
            &["Always"],
        ));
    }
    if present(ps, "activeDeadlineSeconds").is_some() {
        errs.push(forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in StatefulSet is not Supported",
        ));
    }
    if let Some(old) = old {
        let mut a = spec.clone();
        let mut b = old.get("spec").cloned().unwrap_or(Value::Null);
        for x in [&mut a, &mut b] {
            if let Some(m) = x.as_object_mut() {
                for k in [
                    "replicas",
                    "template",
                    "updateStrategy",
                    "minReadySeconds",
                    "ordinals",
                    "revisionHistoryLimit",
                    "persistentVolumeClaimRetentionPolicy",
                ] {
                    m.remove(k);
                }
            }
        }
        if !sem_eq(Some(&a), Some(&b)) {
            errs.push(forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
}

fn validate_daemon_set(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let sel = spec.get("selector").unwrap_or(&null);
    validate_label_selector(sel, "spec.selector", errs);
    let template = spec.get("template").unwrap_or(&null);
    if let Ok(selector) = as_selector(sel)
        && !selector.matches(template_labels(template))
    {
        errs.push(invalid(
            "spec.template.metadata.labels",
            &go_string_map(template_labels(template)),
            "`selector` does not match template `labels`",
        ));
    }
    if !sel.is_null()
        && sel
            .get("matchLabels")
            .and_then(Value::as_object)
            .map_or(0, Map::len)
            + arr(sel, "matchExpressions").len()
            == 0
    {
        errs.push(invalid(
            "spec.selector",
            &label_selector_string(sel),
            "empty selector is invalid for daemonset",
        ));
    }
    validate_pod_template(Some(template), "spec.template", errs);
    let ps = template.get("spec").unwrap_or(&null);
    let rp = s(ps, "restartPolicy");
    if rp != "Always" {
        errs.push(not_supported(
            "spec.template.spec.restartPolicy",
            &go_quote(rp),
            &["Always"],
        ));
    }
    if present(ps, "activeDeadlineSeconds").is_some() {
        errs.push(forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in DaemonSet is not Supported",
        ));
    }
    nonnegative(spec, "minReadySeconds", "spec.minReadySeconds", errs);
    nonnegative(spec, "templateGeneration", "spec.templateGeneration", errs);
    let us = spec.get("updateStrategy").unwrap_or(&null);
    let ty = s(us, "type");
    match ty {
        "OnDelete" => {}
        "RollingUpdate" => match present(us, "rollingUpdate") {
            None => errs.push(required("spec.updateStrategy.rollingUpdate", "")),
            Some(ru) => {
                let mu = ru.get("maxUnavailable").unwrap_or(&null);
                let ms = ru.get("maxSurge").unwrap_or(&null);
                let pu = "spec.updateStrategy.rollingUpdate.maxUnavailable";
                let psu = "spec.updateStrategy.rollingUpdate.maxSurge";
                validate_positive_int_or_percent(mu, pu, errs);
                validate_positive_int_or_percent(ms, psu, errs);
                not_more_than_100_percent(mu, pu, errs);
                not_more_than_100_percent(ms, psu, errs);
                let has_u = int_or_percent(mu).0 != 0;
                let has_s = int_or_percent(ms).0 != 0;
                if has_u && has_s {
                    errs.push(invalid(
                        psu,
                        &int_or_string_text(ms),
                        "may not be set when maxUnavailable is non-zero",
                    ));
                } else if !has_u && !has_s {
                    errs.push(required(pu, "cannot be 0 when maxSurge is 0"));
                }
            }
        },
        other => {
            let ru_text = if present(us, "rollingUpdate").is_some() {
                "(*apps.RollingUpdateDaemonSet)(0xc000000000)"
            } else {
                "(*apps.RollingUpdateDaemonSet)(nil)"
            };
            errs.push(not_supported(
                "spec.updateStrategy",
                &format!(
                    "apps.DaemonSetUpdateStrategy{{Type:{}, RollingUpdate:{ru_text}}}",
                    go_quote(other)
                ),
                &["RollingUpdate", "OnDelete"],
            ));
        }
    }
    nonnegative(
        spec,
        "revisionHistoryLimit",
        "spec.revisionHistoryLimit",
        errs,
    );
    selector_immutable(obj, old, errs);
}

// ---------------------------------------------------------------------------
// Jobs and CronJobs (pkg/apis/batch/validation)
// ---------------------------------------------------------------------------

/// `validateJobSpec`: everything but the selector; `base` is "spec" or "spec.jobTemplate.spec".
fn validate_job_spec(spec: &Value, base: &str, errs: &mut Errs) {
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        nonnegative(spec, f, &format!("{base}.{f}"), errs);
    }
    let mode = present(spec, "completionMode");
    if let Some(m) = mode {
        let mv = value_text(m);
        if mv != "NonIndexed" && mv != "Indexed" {
            errs.push(not_supported(
                &format!("{base}.completionMode"),
                &go_quote(&mv),
                &["NonIndexed", "Indexed"],
            ));
        }
        if mv == "Indexed" {
            if present(spec, "completions").is_none() {
                errs.push(required(
                    &format!("{base}.completions"),
                    "when completion mode is Indexed",
                ));
            }
            if let Some(p) = int(spec, "parallelism")
                && p > 100_000
            {
                errs.push(invalid(
                    &format!("{base}.parallelism"),
                    &p.to_string(),
                    "must be less than or equal to 100000 when completion mode is Indexed",
                ));
            }
        }
    }
    if mode.is_none_or(|m| m == "NonIndexed") {
        for f in ["backoffLimitPerIndex", "maxFailedIndexes"] {
            if let Some(v) = present(spec, f) {
                errs.push(invalid(
                    &format!("{base}.{f}"),
                    &go_value(v),
                    "requires indexed completion mode",
                ));
            }
        }
    }
    let has_pfp = present(spec, "podFailurePolicy").is_some();
    if let Some(prp) = present(spec, "podReplacementPolicy") {
        let v = value_text(prp);
        let p = format!("{base}.podReplacementPolicy");
        if has_pfp {
            if v != "Failed" {
                errs.push(not_supported(&p, &go_quote(&v), &["Failed"]));
            }
        } else if v != "Failed" && v != "TerminatingOrFailed" {
            errs.push(not_supported(
                &p,
                &go_quote(&v),
                &["Failed", "TerminatingOrFailed"],
            ));
        }
    }
    let tpath = format!("{base}.template");
    validate_pod_template(spec.get("template"), &tpath, errs);
    let rp = spec
        .pointer("/template/spec/restartPolicy")
        .map(value_text)
        .unwrap_or_default();
    let rp_path = format!("{tpath}.spec.restartPolicy");
    if rp == "Always" || rp.is_empty() {
        errs.push(required(&rp_path, "valid values: \"OnFailure\", \"Never\""));
    } else if rp != "OnFailure" && rp != "Never" {
        errs.push(not_supported(
            &rp_path,
            &go_quote(&rp),
            &["OnFailure", "Never"],
        ));
    } else if has_pfp && rp != "Never" {
        errs.push(invalid(
            &rp_path,
            &go_quote(&rp),
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
}

fn validate_job(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    validate_job_spec(spec, "spec", errs);
    let sel = spec.get("selector").unwrap_or(&null);
    let manual = spec.get("manualSelector") == Some(&Value::Bool(true));
    // The registry generates the selector of a non-manual Job; until it has, skip its checks.
    if !sel.is_null() || manual {
        if sel.is_null() {
            errs.push(required("spec.selector", ""));
        } else {
            validate_label_selector(sel, "spec.selector", errs);
        }
        if let Ok(selector) = as_selector(sel) {
            let t = spec.get("template").unwrap_or(&null);
            if !selector.matches(template_labels(t)) {
                errs.push(invalid(
                    "spec.template.metadata.labels",
                    &go_string_map(template_labels(t)),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if s(spec, "completionMode") == "Indexed"
        && let Some(c) = int(spec, "completions").filter(|c| *c > 0)
    {
        let host = format!("{name}-{}", c - 1);
        if !is_dns1123_label(&host).is_empty() {
            errs.push(invalid(
                "metadata.name",
                &go_quote(name),
                &format!("will not able to create pod with invalid DNS label: {host}"),
            ));
        }
    }
    let Some(old) = old else { return };
    let os = old.get("spec").unwrap_or(&null);
    // Completions may change only for Indexed Jobs, in tandem with parallelism.
    let completions_path = "spec.completions";
    if !sem_eq(spec.get("completions"), os.get("completions")) {
        if s(spec, "completionMode") == "Indexed" {
            if let Some(c) = int(spec, "completions")
                && Some(c) != int(spec, "parallelism")
            {
                errs.push(invalid(
                    completions_path,
                    &c.to_string(),
                    "can only be modified in tandem with spec.parallelism",
                ));
            }
        } else {
            errs.push(immutable(
                completions_path,
                spec.get("completions").unwrap_or(&null),
            ));
        }
    }
    if !sem_eq(spec.get("selector"), os.get("selector"))
        && !os.get("selector").is_none_or(Value::is_null)
    {
        errs.push(invalid(
            "spec.selector",
            &label_selector_string(sel),
            "field is immutable",
        ));
    }
    // The template is immutable, except scheduling directives of never-started suspended Jobs.
    let mut new_t = spec.get("template").cloned().unwrap_or(Value::Null);
    let mut old_t = os.get("template").cloned().unwrap_or(Value::Null);
    let mutable_scheduling = os.get("suspend") == Some(&Value::Bool(true))
        && old.pointer("/status/startTime").is_none_or(Value::is_null);
    if mutable_scheduling {
        for t in [&mut new_t, &mut old_t] {
            if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("labels");
                m.remove("annotations");
            }
            if let Some(m) = t.get_mut("spec").and_then(Value::as_object_mut) {
                for k in ["nodeSelector", "tolerations", "affinity", "schedulingGates"] {
                    m.remove(k);
                }
            }
        }
    }
    if !sem_eq(Some(&new_t), Some(&old_t)) {
        let shown = spec
            .get("template")
            .map(Value::to_string)
            .unwrap_or_default();
        errs.push(invalid("spec.template", &shown, "field is immutable"));
    }
    for f in [
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ] {
        if !sem_eq(spec.get(f), os.get(f)) {
            errs.push(immutable(
                &format!("spec.{f}"),
                spec.get(f).unwrap_or(&null),
            ));
        }
    }
}

fn validate_cron_job(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let old_spec = old.and_then(|o| o.get("spec"));
    let schedule = s(spec, "schedule");
    if schedule.is_empty() {
        errs.push(required("spec.schedule", ""));
    } else {
        if let Err(e) = parse_cron(schedule) {
            errs.push(invalid("spec.schedule", &go_quote(schedule), &e));
        }
        let allow_tz = old_spec.is_some_and(|o| s(o, "schedule").contains("TZ"));
        if allow_tz && schedule.contains("TZ") && present(spec, "timeZone").is_some() {
            errs.push(invalid(
                "spec.schedule",
                &go_quote(schedule),
                "cannot use both timeZone field and TZ or CRON_TZ in schedule",
            ));
        } else if !allow_tz && schedule.contains("TZ") {
            errs.push(invalid(
                "spec.schedule",
                &go_quote(schedule),
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    nonnegative(
        spec,
        "startingDeadlineSeconds",
        "spec.startingDeadlineSeconds",
        errs,
    );
    let tz_changed = old_spec.is_none_or(|o| !sem_eq(o.get("timeZone"), spec.get("timeZone")));
    if tz_changed && let Some(tz) = present(spec, "timeZone") {
        let tz = value_text(tz);
        let valid_part = |p: &str| {
            !p.is_empty()
                && p.len() <= 14
                && p != "."
                && p != ".."
                && !p.starts_with('-')
                && p.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b".-_+".contains(&c))
        };
        if tz.is_empty() {
            errs.push(invalid(
                "spec.timeZone",
                &go_quote(&tz),
                "timeZone must be nil or non-empty string",
            ));
        } else if !tz.split('/').all(valid_part) {
            errs.push(invalid(
                "spec.timeZone",
                &go_quote(&tz),
                &format!("unknown time zone {tz}"),
            ));
        } else if tz.eq_ignore_ascii_case("Local") {
            errs.push(invalid(
                "spec.timeZone",
                &go_quote(&tz),
                "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
            ));
        }
    }
    match s(spec, "concurrencyPolicy") {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errs.push(required("spec.concurrencyPolicy", "")),
        other => errs.push(not_supported(
            "spec.concurrencyPolicy",
            &go_quote(other),
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let jt_spec = spec.pointer("/jobTemplate/spec").unwrap_or(&null);
    validate_job_spec(jt_spec, "spec.jobTemplate.spec", errs);
    if let Some(sel) = present(jt_spec, "selector") {
        errs.push(invalid(
            "spec.jobTemplate.spec.selector",
            &label_selector_string(sel),
            "`selector` will be auto-generated",
        ));
    }
    if jt_spec.get("manualSelector") == Some(&Value::Bool(true)) {
        errs.push(not_supported(
            "spec.jobTemplate.spec.manualSelector",
            "true",
            &["nil", "false"],
        ));
    }
    nonnegative(
        spec,
        "successfulJobsHistoryLimit",
        "spec.successfulJobsHistoryLimit",
        errs,
    );
    nonnegative(
        spec,
        "failedJobsHistoryLimit",
        "spec.failedJobsHistoryLimit",
        errs,
    );
    if old.is_none() {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if name.len() > 52 {
            errs.push(invalid(
                "metadata.name",
                &go_quote(name),
                "must be no more than 52 characters",
            ));
        }
    }
}

/// robfig/cron's standard parser (5 fields or a descriptor), with its error texts.
fn parse_cron(spec: &str) -> Result<(), String> {
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    let mut spec = spec;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let eq = spec.find('=').unwrap_or(0);
        let Some(sp) = spec.find(' ') else {
            return Err(format!(
                "provided bad location {}: unknown time zone",
                &spec[eq + 1..]
            ));
        };
        spec = spec[sp..].trim();
    }
    if let Some(d) = spec.strip_prefix('@') {
        return match d {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ if d.starts_with("every ") => {
                let dur = &d["every ".len()..];
                if is_go_duration(dur) {
                    Ok(())
                } else {
                    Err(format!(
                        "failed to parse duration {spec}: time: invalid duration {}",
                        go_quote(dur)
                    ))
                }
            }
            _ => Err(format!("unrecognized descriptor: {spec}")),
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    const MONTHS: &[&str] = &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let bounds: [(u64, u64, &[&str], u64); 5] = [
        (0, 59, &[], 0),
        (0, 23, &[], 0),
        (1, 31, &[], 0),
        (1, 12, MONTHS, 1),
        (0, 6, DAYS, 0),
    ];
    for (f, (min, max, names, offset)) in fields.iter().zip(bounds) {
        for expr in f.split(',') {
            cron_range(expr, min, max, names, offset)?;
        }
    }
    Ok(())
}

fn cron_int(expr: &str) -> Result<u64, String> {
    match expr.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {expr}")),
        Ok(n) => Ok(n.unsigned_abs()),
        Err(_) => Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing {}: invalid syntax",
            go_quote(expr)
        )),
    }
}

fn cron_range(expr: &str, min: u64, max: u64, names: &[&str], offset: u64) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let parse = |x: &str| -> Result<u64, String> {
        let lower = x.to_ascii_lowercase();
        match names.iter().position(|n| *n == lower) {
            Some(i) => Ok(i as u64 + offset),
            None => cron_int(x),
        }
    };
    let (start, mut end) = if low_high[0] == "*" || low_high[0] == "?" {
        (min, max)
    } else {
        let start = parse(low_high[0])?;
        match low_high.len() {
            1 => (start, start),
            2 => (start, parse(low_high[1])?),
            _ => return Err(format!("too many hyphens: {expr}")),
        }
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = cron_int(range_and_step[1])?;
            if single {
                end = max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({min}): {expr}"
        ));
    }
    if end > max {
        return Err(format!(
            "end of range ({end}) above maximum ({max}): {expr}"
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

/// Go's `time.ParseDuration` syntax: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` with known units.
fn is_go_duration(d: &str) -> bool {
    let d = d.strip_prefix(['-', '+']).unwrap_or(d);
    if d == "0" {
        return true;
    }
    let mut rest = d;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." {
            return false;
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        if !matches!(
            &rest[..unit_len],
            "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h"
        ) {
            return false;
        }
        rest = &rest[unit_len..];
    }
    true
}

// ---------------------------------------------------------------------------
// Services (ValidateService, ValidateServiceUpdate)
// ---------------------------------------------------------------------------

/// The cluster IPs a service asks for: `clusterIPs`, else `[clusterIP]`.
fn cluster_ips(spec: &Value) -> Vec<String> {
    let ips: Vec<String> = arr(spec, "clusterIPs").iter().map(value_text).collect();
    if !ips.is_empty() {
        return ips;
    }
    let ip = s(spec, "clusterIP");
    if ip.is_empty() {
        Vec::new()
    } else {
        vec![ip.to_string()]
    }
}

fn is_headless(spec: &Value) -> bool {
    let ips = cluster_ips(spec);
    ips.len() == 1 && ips[0] == "None"
}

fn go_string_slice(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|i| go_quote(i)).collect();
    format!("[]string{{{}}}", q.join(", "))
}

fn validate_service(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let old_spec = old.and_then(|o| o.get("spec"));
    let ty = s(spec, "type");
    let headless = is_headless(spec);
    let ports = list(spec, "ports", "spec.ports", errs);
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(required("spec.ports", ""));
    }
    match ty {
        "LoadBalancer" | "NodePort" => {
            if headless {
                errs.push(invalid(
                    "spec.clusterIPs[0]",
                    "\"None\"",
                    &format!("may not be set to 'None' for {ty} services"),
                ));
            }
            if ty == "LoadBalancer" {
                for (i, p) in ports.iter().enumerate() {
                    if int(p, "port") == Some(10250) {
                        errs.push(invalid(
                            &format!("spec.ports[{i}]"),
                            "10250",
                            "may not expose port 10250 externally since it is used by kubelet",
                        ));
                    }
                }
            }
        }
        "ExternalName" => {
            // A type change drops these upstream (dropTypeDependentFields) when unchanged.
            let carried = |f: &str| {
                old_spec.is_some_and(|o| {
                    s(o, "type") != "ExternalName" && sem_eq(o.get(f), spec.get(f))
                })
            };
            let ips_carried = carried("clusterIP") && carried("clusterIPs");
            if !cluster_ips(spec).is_empty() && !ips_carried {
                errs.push(forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() && !carried("ipFamilies") {
                errs.push(forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                ));
            }
            if present(spec, "ipFamilyPolicy").is_some() && !carried("ipFamilyPolicy") {
                errs.push(forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                ));
            }
            let cname = s(spec, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(required("spec.externalName", ""));
            } else {
                for m in is_dns1123_subdomain(cname) {
                    errs.push(invalid("spec.externalName", &go_quote(cname), &m));
                }
            }
        }
        _ => {}
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let idx = format!("spec.ports[{i}]");
        let name = s(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(required(&format!("{idx}.name"), ""));
        } else if !name.is_empty() {
            for m in is_dns1123_label(name) {
                errs.push(invalid(&format!("{idx}.name"), &go_quote(name), &m));
            }
            if names.contains(&name) {
                errs.push(duplicate(&format!("{idx}.name"), &go_quote(name)));
            } else {
                names.push(name);
            }
        }
        let port = int(p, "port").unwrap_or(0);
        for m in is_valid_port_num(port) {
            errs.push(invalid(&format!("{idx}.port"), &port.to_string(), &m));
        }
        let proto = s(p, "protocol");
        if proto.is_empty() {
            errs.push(required(&format!("{idx}.protocol"), ""));
        } else if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            errs.push(not_supported(
                &format!("{idx}.protocol"),
                &go_quote(proto),
                &["SCTP", "TCP", "UDP"],
            ));
        }
        validate_port_num_or_name(
            p.get("targetPort").unwrap_or(&null),
            &format!("{idx}.targetPort"),
            errs,
        );
        if let Some(ap) = present(p, "appProtocol") {
            let ap = value_text(ap);
            for m in is_qualified_name(&ap) {
                errs.push(invalid(&format!("{idx}.appProtocol"), &go_quote(&ap), &m));
            }
        }
    }
    if let Some(sel) = present(spec, "selector") {
        errs.extend(validate_labels(Some(sel), "spec.selector"));
    }
    let affinity = s(spec, "sessionAffinity");
    match affinity {
        "" => errs.push(required("spec.sessionAffinity", "")),
        "ClientIP" => {
            let cfg = spec.get("sessionAffinityConfig").unwrap_or(&null);
            let detail = "when session affinity type is ClientIP";
            if cfg.is_null() {
                errs.push(required("spec.sessionAffinityConfig", detail));
            } else if present(cfg, "clientIP").is_none() {
                errs.push(required("spec.sessionAffinityConfig.clientIP", detail));
            } else {
                match int(&cfg["clientIP"], "timeoutSeconds") {
                    None => errs.push(required(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        detail,
                    )),
                    Some(t) if t <= 0 || t > 86400 => errs.push(invalid(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        &t.to_string(),
                        "must be greater than 0 and less than 86400",
                    )),
                    Some(_) => {}
                }
            }
        }
        "None" => {
            if present(spec, "sessionAffinityConfig").is_some() {
                errs.push(forbidden(
                    "spec.sessionAffinityConfig",
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => errs.push(not_supported(
            "spec.sessionAffinity",
            &go_quote(other),
            &["ClientIP", "None"],
        )),
    }
    for (i, ip) in cluster_ips(spec).iter().enumerate() {
        if ip != "None" && !is_valid_ip(ip) {
            errs.push(invalid(
                &format!("spec.clusterIPs[{i}]"),
                &go_quote(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let ip = value_text(ip);
        if !is_valid_ip(&ip) {
            errs.push(invalid(
                &format!("spec.externalIPs[{i}]"),
                &go_quote(&ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    match ty {
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName" => {}
        "" => errs.push(required("spec.type", "")),
        other => errs.push(not_supported(
            "spec.type",
            &go_quote(other),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        )),
    }
    // Fields left over from an earlier type are dropped upstream before validation
    // (dropTypeDependentFields); tolerate the ones carried over unchanged from `old`.
    let old_port = |i: usize, f: &str| {
        old_spec
            .and_then(|o| arr(o, "ports").get(i))
            .and_then(|p| int(p, f))
    };
    if ty == "ClusterIP" {
        for (i, p) in ports.iter().enumerate() {
            let np = int(p, "nodePort").unwrap_or(0);
            if np != 0 && old_port(i, "nodePort") != Some(np) {
                errs.push(forbidden(
                    &format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports: Vec<(String, i64)> = Vec::new();
    let mut port_keys: Vec<(String, i64)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let proto = s(p, "protocol").to_string();
        let np = int(p, "nodePort").unwrap_or(0);
        if np != 0 {
            let key = (proto.clone(), np);
            if node_ports.contains(&key) {
                errs.push(duplicate(
                    &format!("spec.ports[{i}].nodePort"),
                    &np.to_string(),
                ));
            }
            node_ports.push(key);
        }
        let port = int(p, "port").unwrap_or(0);
        let key = (proto.clone(), port);
        if port_keys.contains(&key) {
            errs.push(duplicate(
                &format!("spec.ports[{i}]"),
                &format!(
                    "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
                    go_quote(&proto)
                ),
            ));
        }
        port_keys.push(key);
    }
    let externally_accessible = ty == "LoadBalancer"
        || ty == "NodePort"
        || (ty == "ClusterIP" && !arr(spec, "externalIPs").is_empty());
    let etp = s(spec, "externalTrafficPolicy");
    if !etp.is_empty() {
        let carried = old_spec.is_some_and(|o| s(o, "externalTrafficPolicy") == etp);
        if !externally_accessible {
            if !carried {
                errs.push(invalid(
                    "spec.externalTrafficPolicy",
                    &go_quote(etp),
                    "may only be set for externally-accessible services",
                ));
            }
        } else if etp != "Cluster" && etp != "Local" {
            errs.push(not_supported(
                "spec.externalTrafficPolicy",
                &go_quote(etp),
                &["Cluster", "Local"],
            ));
        }
    } else if externally_accessible {
        errs.push(required("spec.externalTrafficPolicy", ""));
    }
    match present(spec, "internalTrafficPolicy") {
        None => {
            if matches!(ty, "NodePort" | "LoadBalancer" | "ClusterIP") {
                errs.push(required(
                    "spec.internalTrafficPolicy",
                    &format!("must be specified when `type` is '{ty}'"),
                ));
            }
        }
        Some(itp) => {
            let v = value_text(itp);
            if v != "Cluster" && v != "Local" {
                errs.push(not_supported(
                    "spec.internalTrafficPolicy",
                    &go_quote(&v),
                    &["Cluster", "Local"],
                ));
            }
        }
    }
    // Updates: the primary cluster IP may not change once set (except via ExternalName).
    if let Some(os) = old_spec
        && ty != "ExternalName"
        && s(os, "type") != "ExternalName"
        && !(headless && is_headless(os))
    {
        let new_ips = cluster_ips(spec);
        let old_ips = cluster_ips(os);
        for (i, (n, o)) in new_ips.iter().zip(old_ips.iter()).enumerate() {
            if n != o {
                errs.push(invalid(
                    &format!("spec.clusterIPs[{i}]"),
                    &go_string_slice(&new_ips),
                    "may not change once set",
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// ConfigMaps, Secrets, Namespaces, volumes, RBAC and the rest
// ---------------------------------------------------------------------------

/// Data keys and total size of a ConfigMap or Secret; returns the total size.
fn validate_data_keys(obj: &Value, key: &str, base64: bool, errs: &mut Errs) -> usize {
    let mut total = 0;
    let Some(data) = present(obj, key) else {
        return 0;
    };
    let Some(m) = data.as_object() else {
        errs.push(invalid(key, &go_value(data), "must be a map of strings"));
        return 0;
    };
    for (k, v) in m {
        let path = format!("{key}[{k}]");
        for msg in is_config_map_key(k) {
            errs.push(invalid(&path, &go_quote(k), &msg));
        }
        let text = match v {
            Value::String(x) => x.as_str(),
            Value::Null => "",
            other => {
                errs.push(invalid(&path, &go_value(other), "must be a string"));
                continue;
            }
        };
        if base64 {
            match base64_check(text) {
                Ok(n) => total += n,
                Err(e) => errs.push(invalid(&path, "\"<secret contents redacted>\"", &e)),
            }
        } else {
            total += text.len();
        }
    }
    total
}

fn validate_config_map(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    if let Some(old) = old
        && old.get("immutable") == Some(&Value::Bool(true))
    {
        if obj.get("immutable") != Some(&Value::Bool(true)) {
            errs.push(forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
        for f in ["data", "binaryData"] {
            if !sem_eq(obj.get(f), old.get(f)) {
                errs.push(forbidden(f, "field is immutable when `immutable` is set"));
            }
        }
    }
    let mut total = validate_data_keys(obj, "data", false, errs);
    if let Some(bin) = obj.get("binaryData").and_then(Value::as_object) {
        let data = obj.get("data").and_then(Value::as_object);
        for k in bin.keys() {
            if data.is_some_and(|d| d.contains_key(k)) {
                errs.push(invalid(
                    &format!("data[{k}]"),
                    &go_quote(k),
                    "duplicate of key present in binaryData",
                ));
            }
        }
    }
    total += validate_data_keys(obj, "binaryData", true, errs);
    if total > MAX_SECRET_SIZE {
        errs.push(too_long("", MAX_SECRET_SIZE));
    }
}

fn validate_secret(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let total = validate_data_keys(obj, "data", true, errs);
    if total > MAX_SECRET_SIZE {
        errs.push(too_long("data", MAX_SECRET_SIZE));
    }
    let data = obj.get("data").and_then(Value::as_object);
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let ty = s(obj, "type");
    match ty {
        "kubernetes.io/service-account-token" => {
            let ann = obj
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if ann.is_empty() {
                errs.push(required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let key = if ty == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            if !has(key) {
                errs.push(required(&format!("data[{key}]"), ""));
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(required("data[username]", ""));
            errs.push(required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" => {
            let empty = data
                .and_then(|d| d.get("ssh-privatekey"))
                .is_none_or(|v| v.as_str().is_none_or(str::is_empty));
            if empty {
                errs.push(required("data[ssh-privatekey]", ""));
            }
        }
        "kubernetes.io/tls" => {
            if !has("tls.crt") {
                errs.push(required("data[tls.crt]", ""));
            }
            if !has("tls.key") {
                errs.push(required("data[tls.key]", ""));
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        let old_ty = s(old, "type");
        if ty != old_ty {
            errs.push(immutable("type", obj.get("type").unwrap_or(&Value::Null)));
        }
        if old.get("immutable") == Some(&Value::Bool(true)) {
            if obj.get("immutable") != Some(&Value::Bool(true)) {
                errs.push(forbidden(
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
            if !sem_eq(obj.get("data"), old.get("data")) {
                errs.push(forbidden(
                    "data",
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
}

fn validate_namespace(obj: &Value, errs: &mut Errs) {
    errs.extend(validate_finalizers(
        obj.pointer("/spec/finalizers"),
        "spec.finalizers",
        true,
    ));
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn validate_access_modes(spec: &Value, errs: &mut Errs) {
    let modes = arr(spec, "accessModes");
    if modes.is_empty() {
        errs.push(required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    for m in modes {
        let m = value_text(m);
        if !ACCESS_MODES.contains(&m.as_str()) {
            errs.push(not_supported(
                "spec.accessModes",
                &go_quote(&m),
                ACCESS_MODES,
            ));
        }
    }
    if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
        errs.push(forbidden(
            "spec.accessModes",
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn validate_volume_mode(spec: &Value, errs: &mut Errs) {
    if let Some(vm) = present(spec, "volumeMode") {
        let v = value_text(vm);
        if v != "Block" && v != "Filesystem" {
            errs.push(not_supported(
                "spec.volumeMode",
                &go_quote(&v),
                &["Block", "Filesystem"],
            ));
        }
    }
}

fn validate_pvc(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    validate_access_modes(spec, errs);
    if let Some(sel) = present(spec, "selector") {
        validate_label_selector(sel, "spec.selector", errs);
    }
    match spec.pointer("/resources/requests/storage") {
        None | Some(Value::Null) => errs.push(required("spec.resources[storage]", "")),
        Some(q) => match parse_quantity(q) {
            None => errs.push(invalid(
                "spec.resources[storage]",
                &go_value(q),
                QUANTITY_REGEX_ERR,
            )),
            Some(x) if x <= 0.0 => errs.push(invalid(
                "spec.resources[storage]",
                &go_quote(&value_text(q)),
                "must be greater than zero",
            )),
            Some(_) => {}
        },
    }
    validate_volume_mode(spec, errs);
    let Some(old) = old else { return };
    let os = old.get("spec").unwrap_or(&null);
    let mut a = spec.clone();
    let mut b = os.clone();
    if s(os, "volumeName").is_empty()
        && let (Some(am), Some(bm)) = (a.as_object_mut(), b.as_object_mut())
    {
        am.remove("volumeName");
        bm.remove("volumeName");
    }
    let bound = old.pointer("/status/phase") == Some(&json!("Bound"));
    for x in [&mut a, &mut b] {
        if bound
            && let Some(req) = x
                .pointer_mut("/resources/requests")
                .and_then(Value::as_object_mut)
        {
            req.remove("storage");
        }
    }
    if !sem_eq(Some(&a), Some(&b)) {
        errs.push(forbidden(
            "spec",
            &format!(
                "spec is immutable after creation except resources.requests for bound claims\n{}",
                diff_text("spec", &b, &a)
            ),
        ));
    }
    let new_size = spec
        .pointer("/resources/requests/storage")
        .and_then(parse_quantity);
    let old_size = os
        .pointer("/resources/requests/storage")
        .and_then(parse_quantity);
    if let (Some(n), Some(o)) = (new_size, old_size)
        && n < o
    {
        errs.push(forbidden(
            "spec.resources.requests.storage",
            "field can not be less than previous value",
        ));
    }
}

fn validate_pv(obj: &Value, errs: &mut Errs) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    validate_access_modes(spec, errs);
    match spec.pointer("/capacity") {
        Some(Value::Object(c)) if !c.is_empty() => {
            if c.keys().any(|k| k != "storage") || !c.contains_key("storage") {
                errs.push(not_supported(
                    "spec.capacity",
                    &format!("{:?}", c.keys().collect::<Vec<_>>()),
                    &["storage"],
                ));
            }
        }
        _ => errs.push(required("spec.capacity", "")),
    }
    let rp = s(spec, "persistentVolumeReclaimPolicy");
    if !rp.is_empty() && !matches!(rp, "Delete" | "Recycle" | "Retain") {
        errs.push(not_supported(
            "spec.persistentVolumeReclaimPolicy",
            &go_quote(rp),
            &["Delete", "Recycle", "Retain"],
        ));
    }
    const PV_SOURCES: &[&str] = &[
        "hostPath",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "glusterfs",
        "nfs",
        "rbd",
        "quobyte",
        "cephfs",
        "iscsi",
        "cinder",
        "fc",
        "flocker",
        "flexVolume",
        "azureFile",
        "vsphereVolume",
        "azureDisk",
        "photonPersistentDisk",
        "portworxVolume",
        "scaleIO",
        "local",
        "storageos",
        "csi",
    ];
    let n = PV_SOURCES
        .iter()
        .filter(|k| present(spec, k).is_some())
        .count();
    if n == 0 {
        errs.push(required("spec", "must specify a volume type"));
    } else if n > 1 {
        errs.push(forbidden("spec", "may not specify more than 1 volume type"));
    }
    validate_volume_mode(spec, errs);
}

fn validate_role_rules(obj: &Value, namespaced: bool, errs: &mut Errs) {
    for (i, r) in arr(obj, "rules").iter().enumerate() {
        let idx = format!("rules[{i}]");
        if arr(r, "verbs").is_empty() {
            errs.push(required(
                &format!("{idx}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let has_urls = !arr(r, "nonResourceURLs").is_empty();
        if has_urls {
            if namespaced {
                errs.push(invalid(
                    &format!("{idx}.nonResourceURLs"),
                    &go_string_slice(
                        &arr(r, "nonResourceURLs")
                            .iter()
                            .map(value_text)
                            .collect::<Vec<_>>(),
                    ),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !arr(r, "apiGroups").is_empty()
                || !arr(r, "resources").is_empty()
                || !arr(r, "resourceNames").is_empty()
            {
                errs.push(invalid(
                    &format!("{idx}.nonResourceURLs"),
                    &go_string_slice(
                        &arr(r, "nonResourceURLs")
                            .iter()
                            .map(value_text)
                            .collect::<Vec<_>>(),
                    ),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if arr(r, "apiGroups").is_empty() {
            errs.push(required(
                &format!("{idx}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if arr(r, "resources").is_empty() {
            errs.push(required(
                &format!("{idx}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

fn validate_role_binding(obj: &Value, old: Option<&Value>, namespaced: bool, errs: &mut Errs) {
    let null = Value::Null;
    let rr = obj.get("roleRef").unwrap_or(&null);
    let group = s(rr, "apiGroup");
    if group != "rbac.authorization.k8s.io" {
        errs.push(not_supported(
            "roleRef.apiGroup",
            &go_quote(group),
            &["rbac.authorization.k8s.io"],
        ));
    }
    let kind = s(rr, "kind");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind) {
        errs.push(not_supported("roleRef.kind", &go_quote(kind), kinds));
    }
    let name = s(rr, "name");
    if name.is_empty() {
        errs.push(required("roleRef.name", ""));
    } else {
        for m in is_valid_path_segment_name(name) {
            errs.push(invalid("roleRef.name", &go_quote(name), &m));
        }
    }
    for (i, subj) in arr(obj, "subjects").iter().enumerate() {
        let idx = format!("subjects[{i}]");
        let sname = s(subj, "name");
        if sname.is_empty() {
            errs.push(required(&format!("{idx}.name"), ""));
        }
        let group = s(subj, "apiGroup");
        match s(subj, "kind") {
            "ServiceAccount" => {
                if !sname.is_empty() {
                    for m in is_dns1123_subdomain(sname) {
                        errs.push(invalid(&format!("{idx}.name"), &go_quote(sname), &m));
                    }
                }
                if !group.is_empty() {
                    errs.push(not_supported(
                        &format!("{idx}.apiGroup"),
                        &go_quote(group),
                        &[""],
                    ));
                }
                if !namespaced && s(subj, "namespace").is_empty() {
                    errs.push(required(&format!("{idx}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != "rbac.authorization.k8s.io" {
                    errs.push(not_supported(
                        &format!("{idx}.apiGroup"),
                        &go_quote(group),
                        &["rbac.authorization.k8s.io"],
                    ));
                }
            }
            other => errs.push(not_supported(
                &format!("{idx}.kind"),
                &go_quote(other),
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    if let Some(old) = old
        && !sem_eq(obj.get("roleRef"), old.get("roleRef"))
    {
        errs.push(invalid(
            "roleRef",
            &format!(
                "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
                go_quote(group),
                go_quote(kind),
                go_quote(name)
            ),
            "cannot change roleRef",
        ));
    }
}

fn validate_endpoints(obj: &Value, errs: &mut Errs) {
    for (i, subset) in arr(obj, "subsets").iter().enumerate() {
        let base = format!("subsets[{i}]");
        for key in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr(subset, key).iter().enumerate() {
                let ip = s(a, "ip");
                if !is_valid_ip(ip) {
                    errs.push(invalid(
                        &format!("{base}.{key}[{j}].ip"),
                        &go_quote(ip),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    ));
                }
            }
        }
        let ports = arr(subset, "ports");
        for (j, p) in ports.iter().enumerate() {
            let idx = format!("{base}.ports[{j}]");
            let name = s(p, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(required(&format!("{idx}.name"), ""));
            } else if !name.is_empty() {
                for m in is_dns1123_label(name) {
                    errs.push(invalid(&format!("{idx}.name"), &go_quote(name), &m));
                }
            }
            let port = int(p, "port").unwrap_or(0);
            for m in is_valid_port_num(port) {
                errs.push(invalid(&format!("{idx}.port"), &port.to_string(), &m));
            }
            let proto = s(p, "protocol");
            if proto.is_empty() {
                errs.push(required(&format!("{idx}.protocol"), ""));
            } else if !matches!(proto, "TCP" | "UDP" | "SCTP") {
                errs.push(not_supported(
                    &format!("{idx}.protocol"),
                    &go_quote(proto),
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
    }
}

fn validate_endpoint_slice(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let at = s(obj, "addressType");
    if at.is_empty() {
        errs.push(required("addressType", ""));
    } else if !matches!(at, "IPv4" | "IPv6" | "FQDN") {
        errs.push(not_supported(
            "addressType",
            &go_quote(at),
            &["FQDN", "IPv4", "IPv6"],
        ));
    }
    for (i, e) in arr(obj, "endpoints").iter().enumerate() {
        let addrs = arr(e, "addresses");
        let p = format!("endpoints[{i}].addresses");
        if addrs.is_empty() || addrs.len() > 100 {
            errs.push(required(
                &p,
                "must contain at least 1 address and no more than 100",
            ));
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = value_text(a);
            let ok = match at {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => is_dns1123_subdomain(&a).is_empty(),
            };
            if !ok {
                errs.push(invalid(
                    &format!("{p}[{j}]"),
                    &go_quote(&a),
                    "must be a valid address",
                ));
            }
        }
    }
    for (i, port) in arr(obj, "ports").iter().enumerate() {
        let idx = format!("ports[{i}]");
        let name = s(port, "name");
        if !name.is_empty() {
            for m in is_dns1123_label(name) {
                errs.push(invalid(&format!("{idx}.name"), &go_quote(name), &m));
            }
        }
        let proto = s(port, "protocol");
        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            errs.push(not_supported(
                &format!("{idx}.protocol"),
                &go_quote(proto),
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
    if let Some(old) = old
        && s(old, "addressType") != at
    {
        errs.push(immutable(
            "addressType",
            obj.get("addressType").unwrap_or(&Value::Null),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(group: &str, kind: &str, v: Value) -> Value {
        let mut v = v;
        apply_defaults(group, kind, &mut v);
        v
    }

    #[test]
    fn pod_defaults() {
        let p = defaulted(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "c", "image": "nginx", "ports": [{"containerPort": 80}],
                 "livenessProbe": {"httpGet": {"port": 80}},
                 "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "resources": {"limits": {"cpu": "1"}}}
            ], "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}]}}),
        );
        let spec = &p["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["enableServiceLinks"], true);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["resources"]["requests"]["cpu"], "1");
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                   "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 420);
    }

    #[test]
    fn pull_policy() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/app:v1"), "IfNotPresent");
        assert_eq!(default_pull_policy("nginx@sha256:abc"), "IfNotPresent");
        assert_eq!(default_pull_policy("nginx:latest@sha256:abc"), "Always");
        assert_eq!(default_pull_policy(""), "IfNotPresent");
        assert_eq!(default_pull_policy("Nginx"), "IfNotPresent");
    }

    #[test]
    fn deployment_defaults() {
        let d = defaulted(
            "apps",
            "Deployment",
            json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}}),
        );
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        let ps = &spec["template"]["spec"];
        assert_eq!(ps["restartPolicy"], "Always");
        assert!(ps.get("enableServiceLinks").is_none());
        assert_eq!(ps["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(ps["containers"][0]["resources"], json!({}));
    }

    #[test]
    fn service_defaults() {
        let svc = defaulted(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}, {"port": 81, "targetPort": "http"}]}}),
        );
        let spec = &svc["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ports"][1]["targetPort"], "http");
        assert!(spec.get("externalTrafficPolicy").is_none());
        let np = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
        );
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    }

    #[test]
    fn other_defaults() {
        let sts = defaulted(
            "apps",
            "StatefulSet",
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "d"}}]}}),
        );
        assert_eq!(sts["spec"]["replicas"], 1);
        assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            sts["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            sts["spec"]["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        let ds = defaulted("apps", "DaemonSet", json!({"spec": {}}));
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        let job = defaulted(
            "batch",
            "Job",
            json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {}}}}),
        );
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["parallelism"], 1);
        assert_eq!(job["spec"]["backoffLimit"], 6);
        assert_eq!(job["spec"]["completionMode"], "NonIndexed");
        assert_eq!(job["spec"]["suspend"], false);
        assert_eq!(job["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(job["metadata"]["labels"], json!({"a": "b"}));
        let cj = defaulted("batch", "CronJob", json!({"spec": {}}));
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        let sec = defaulted(
            "",
            "Secret",
            json!({"stringData": {"a": "hello"}, "data": {"b": "eA=="}}),
        );
        assert_eq!(sec["type"], "Opaque");
        assert_eq!(sec["data"], json!({"a": "aGVsbG8=", "b": "eA=="}));
        assert!(sec.get("stringData").is_none());
        let ns = defaulted("", "Namespace", json!({"metadata": {"name": "n"}}));
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        let rb = defaulted(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            json!({"roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "s"}]}),
        );
        assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
        assert!(rb["subjects"][1].get("apiGroup").is_none());
        assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
        let rc = defaulted(
            "",
            "ReplicationController",
            json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}),
        );
        assert_eq!(rc["spec"]["selector"], json!({"a": "b"}));
        assert_eq!(rc["spec"]["replicas"], 1);
    }

    #[test]
    fn defaults_never_panic_on_odd_shapes() {
        for v in [
            json!(null),
            json!([]),
            json!({"spec": 5}),
            json!({"spec": {"containers": "x", "volumes": [1, null, "a"], "template": []}}),
            json!({"spec": {"template": {"spec": {"containers": [7]}}, "ports": [1]}}),
            json!({"metadata": 3, "stringData": 4, "data": "x"}),
        ] {
            for (g, k) in [
                ("", "Pod"),
                ("", "Service"),
                ("", "Secret"),
                ("", "Namespace"),
                ("", "ReplicationController"),
                ("apps", "Deployment"),
                ("apps", "StatefulSet"),
                ("apps", "DaemonSet"),
                ("batch", "Job"),
                ("batch", "CronJob"),
                ("rbac.authorization.k8s.io", "RoleBinding"),
            ] {
                let _ = defaulted(g, k, v.clone());
            }
        }
    }

    fn valid_pod() -> Value {
        defaulted(
            "",
            "Pod",
            json!({"metadata": {"name": "p", "namespace": "default"},
                   "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}),
        )
    }

    fn causes(
        group: &str,
        kind: &str,
        obj: &Value,
        old: Option<&Value>,
    ) -> Vec<(String, String, String)> {
        validate(group, kind, obj, old)
            .into_iter()
            .map(|c| (c.reason.to_string(), c.field, c.message))
            .collect()
    }

    #[test]
    fn names() {
        assert!(validate_name("", "Pod", "my-pod.x").is_empty());
        let c = validate_name("", "Pod", "Foo");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].reason, "FieldValueInvalid");
        assert_eq!(c[0].field, "metadata.name");
        assert_eq!(
            c[0].message,
            "Invalid value: \"Foo\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        let c = validate_name("", "Namespace", "a.b");
        assert_eq!(
            c[0].message,
            "Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        );
        let c = validate_name("", "Service", "1abc");
        assert!(c[0].message.contains("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character"));
        let long = "a".repeat(254);
        let c = validate_name("", "ConfigMap", &long);
        assert_eq!(c.len(), 1);
        assert!(
            c[0].message
                .ends_with(": must be no more than 253 characters")
        );
        let c = validate_name("", "Namespace", &"a".repeat(64));
        assert!(
            c[0].message
                .ends_with(": must be no more than 63 characters")
        );
        assert!(
            validate_name("rbac.authorization.k8s.io", "ClusterRole", "system:admin").is_empty()
        );
        assert_eq!(
            validate_name("rbac.authorization.k8s.io", "Role", "a/b")[0].message,
            "Invalid value: \"a/b\": may not contain '/'"
        );
        let pod = json!({"metadata": {}, "spec": {}});
        let c = causes("", "Pod", &pod, None);
        assert!(c.contains(&(
            "FieldValueRequired".into(),
            "metadata.name".into(),
            "Required value: name or generateName is required".into()
        )));
    }

    #[test]
    fn valid_objects_have_no_causes() {
        assert_eq!(causes("", "Pod", &valid_pod(), None), vec![]);
        let d = defaulted(
            "apps",
            "Deployment",
            json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "x"}},
                "template": {"metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}}),
        );
        assert_eq!(causes("apps", "Deployment", &d, None), vec![]);
        assert_eq!(causes("apps", "Deployment", &d, Some(&d)), vec![]);
        let svc = defaulted(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}),
        );
        assert_eq!(causes("", "Service", &svc, None), vec![]);
        let job = defaulted(
            "batch",
            "Job",
            json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}}),
        );
        assert_eq!(causes("batch", "Job", &job, None), vec![]);
        let cj = defaulted(
            "batch",
            "CronJob",
            json!({"metadata": {"name": "cj"}, "spec": {"schedule": "*/5 * * * 1-5", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
        );
        assert_eq!(causes("batch", "CronJob", &cj, None), vec![]);
        let sts = defaulted(
            "apps",
            "StatefulSet",
            json!({"metadata": {"name": "s"}, "spec": {"serviceName": "s", "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        );
        assert_eq!(causes("apps", "StatefulSet", &sts, None), vec![]);
        let ds = defaulted(
            "apps",
            "DaemonSet",
            json!({"metadata": {"name": "s"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        );
        assert_eq!(causes("apps", "DaemonSet", &ds, None), vec![]);
        let ns = defaulted("", "Namespace", json!({"metadata": {"name": "team-a"}}));
        assert_eq!(causes("", "Namespace", &ns, None), vec![]);
        let sec = defaulted(
            "",
            "Secret",
            json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}),
        );
        assert_eq!(causes("", "Secret", &sec, None), vec![]);
        let rb = defaulted(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            json!({"metadata": {"name": "rb"}, "roleRef": {"kind": "Role", "name": "r"},
                   "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "default"}]}),
        );
        assert_eq!(
            causes("rbac.authorization.k8s.io", "RoleBinding", &rb, None),
            vec![]
        );
        let pvc = defaulted(
            "",
            "PersistentVolumeClaim",
            json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        );
        assert_eq!(causes("", "PersistentVolumeClaim", &pvc, None), vec![]);
    }

    #[test]
    fn pod_causes() {
        let mut p = valid_pod();
        p["spec"]["containers"] = json!([]);
        assert_eq!(
            causes("", "Pod", &p, None),
            vec![(
                "FieldValueRequired".into(),
                "spec.containers".into(),
                "Required value".into()
            )]
        );
        let mut p = valid_pod();
        p["spec"]["containers"] = json!([
            {"name": "c", "image": "a", "imagePullPolicy": "x", "terminationMessagePolicy": "File", "ports": [{"containerPort": 70000, "protocol": "TCP"}]},
            {"name": "c", "image": "", "imagePullPolicy": "Always", "terminationMessagePolicy": "File"}
        ]);
        p["spec"]["restartPolicy"] = json!("Sometimes");
        let c = causes("", "Pod", &p, None);
        assert!(c.contains(&(
            "FieldValueNotSupported".into(),
            "spec.containers[0].imagePullPolicy".into(),
            "Unsupported value: \"x\": supported values: \"Always\", \"IfNotPresent\", \"Never\"".into()
        )));
        assert!(c.contains(&(
            "FieldValueInvalid".into(),
            "spec.containers[0].ports[0].containerPort".into(),
            "Invalid value: 70000: must be between 1 and 65535, inclusive".into()
        )));
        assert!(c.contains(&(
            "FieldValueRequired".into(),
            "spec.containers[1].image".into(),
            "Required value".into()
        )));
        assert!(c.contains(&(
            "FieldValueDuplicate".into(),
            "spec.containers[1].name".into(),
            "Duplicate value: \"c\"".into()
        )));
        assert!(c.contains(&(
            "FieldValueNotSupported".into(),
            "spec.restartPolicy".into(),
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"".into()
        )));
        let mut p = valid_pod();
        p["spec"]["containers"][0]["name"] = json!("Bad_Name");
        p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "nope", "mountPath": "/x"}]);
        p["metadata"]["labels"] = json!({"bad key!": "v", "ok": "-bad"});
        let c = causes("", "Pod", &p, None);
        assert!(c.iter().any(|(_, f, m)| f == "spec.containers[0].name"
            && m.starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 label")));
        assert!(c.contains(&(
            "FieldValueNotFound".into(),
            "spec.containers[0].volumeMounts[0].name".into(),
            "Not found: \"nope\"".into()
        )));
        assert!(c.iter().any(|(_, f, m)| f == "metadata.labels"
            && m.starts_with(
                "Invalid value: \"bad key!\": name part must consist of alphanumeric characters"
            )));
        assert!(c.iter().any(|(_, f, m)| f == "metadata.labels"
            && m.starts_with("Invalid value: \"-bad\": a valid label must be an empty string")));
        let mut p = valid_pod();
        p["metadata"]["annotations"] = json!({"big": "x".repeat(300 * 1024)});
        assert!(causes("", "Pod", &p, None).contains(&(
            "FieldValueTooLong".into(),
            "metadata.annotations".into(),
            "Too long: may not be more than 262144 bytes".into()
        )));
    }

    #[test]
    fn pod_updates() {
        let old = valid_pod();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:1.26");
        new["spec"]["activeDeadlineSeconds"] = json!(30);
        new["spec"]["tolerations"] =
            json!([{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]);
        new["metadata"]["labels"] = json!({"a": "b"});
        assert_eq!(causes("", "Pod", &new, Some(&old)), vec![]);
        let mut bad = old.clone();
        bad["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
        let c = validate("", "Pod", &bad, Some(&old));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].field, "spec");
        assert_eq!(c[0].reason, "FieldValueForbidden");
        assert!(c[0].message.starts_with("Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"));
        let mut more = old.clone();
        more["spec"]["containers"] = json!([old["spec"]["containers"][0].clone(), {"name": "d", "image": "x", "imagePullPolicy": "Always", "terminationMessagePolicy": "File"}]);
        let c = validate("", "Pod", &more, Some(&old));
        assert!(c.iter().any(|c| c.field == "spec.containers"
            && c.message == "Forbidden: pod updates may not add or remove containers"));
        // Status-only changes are fine.
        let mut st = old.clone();
        st["status"] = json!({"phase": "Running"});
        assert_eq!(causes("", "Pod", &st, Some(&old)), vec![]);
    }

    #[test]
    fn workload_causes() {
        let d = defaulted(
            "apps",
            "Deployment",
            json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "y"}},
                "template": {"metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
        );
        assert_eq!(
            causes("apps", "Deployment", &d, None),
            vec![(
                "FieldValueInvalid".into(),
                "spec.template.metadata.labels".into(),
                "Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`".into()
            )]
        );
        let mut nosel = d.clone();
        nosel["spec"].as_object_mut().map(|m| m.remove("selector"));
        let c = causes("apps", "Deployment", &nosel, None);
        assert_eq!(
            c[0],
            (
                "FieldValueRequired".into(),
                "spec.selector".into(),
                "Required value".into()
            )
        );
        assert_eq!(c[1].1, "spec.template.metadata.labels");
        let mut neg = d.clone();
        neg["spec"]["replicas"] = json!(-1);
        neg["spec"]["selector"] = json!({"matchLabels": {"app": "x"}});
        assert_eq!(
            causes("apps", "Deployment", &neg, None),
            vec![(
                "FieldValueInvalid".into(),
                "spec.replicas".into(),
                "Invalid value: -1: must be greater than or equal to 0".into()
            )]
        );
        // Selector changes on update.
        let mut old = d.clone();
        old["spec"]["selector"] = json!({"matchLabels": {"app": "x"}});
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "x", "tier": "web"}});
        new["spec"]["template"]["metadata"]["labels"] = json!({"app": "x", "tier": "web"});
        assert_eq!(
            causes("apps", "Deployment", &new, Some(&old)),
            vec![(
                "FieldValueInvalid".into(),
                "spec.selector".into(),
                "Invalid value: &LabelSelector{MatchLabels:map[string]string{app: x,tier: web,},MatchExpressions:[]LabelSelectorRequirement{},}: field is immutable".into()
            )]
        );
        let mut rs = old.clone();
        rs["spec"].as_object_mut().map(|m| m.remove("strategy"));
        assert_eq!(causes("apps", "ReplicaSet", &rs, None), vec![]);
        let mut sts_old = defaulted(
            "apps",
            "StatefulSet",
            json!({"metadata": {"name": "s"}, "spec": {"serviceName": "s", "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
        );
        let mut sts_new = sts_old.clone();
        sts_new["spec"]["serviceName"] = json!("other");
        sts_new["spec"]["replicas"] = json!(3);
        let c = causes("apps", "StatefulSet", &sts_new, Some(&sts_old));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1, "spec");
        sts_old["spec"]["replicas"] = json!(5);
        sts_new["spec"]["serviceName"] = json!("s");
        assert_eq!(
            causes("apps", "StatefulSet", &sts_new, Some(&sts_old)),
            vec![]
        );
        // Jobs need OnFailure or Never (Always is what defaulting leaves).
        let job = defaulted(
            "batch",
            "Job",
            json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "b"}]}}}}),
        );
        assert_eq!(
            causes("batch", "Job", &job, None),
            vec![(
                "FieldValueRequired".into(),
                "spec.template.spec.restartPolicy".into(),
                "Required value: valid values: \"OnFailure\", \"Never\"".into()
            )]
        );
        let mut cj = defaulted(
            "batch",
            "CronJob",
            json!({"metadata": {"name": "cj"}, "spec": {"schedule": "61 * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "b"}]}}}}}}),
        );
        assert_eq!(
            causes("batch", "CronJob", &cj, None),
            vec![(
                "FieldValueInvalid".into(),
                "spec.schedule".into(),
                "Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61".into()
            )]
        );
        cj["spec"]["schedule"] = json!("* * *");
        assert_eq!(
            causes("batch", "CronJob", &cj, None)[0].2,
            "Invalid value: \"* * *\": expected exactly 5 fields, found 3: [* * *]"
        );
        for ok in [
            "@hourly",
            "0 0 * * SUN",
            "*/15 1-5 1,15 jan-mar *",
            "@every 1h30m",
        ] {
            assert_eq!(parse_cron(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn service_causes() {
        let svc = defaulted(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {}}),
        );
        assert_eq!(
            causes("", "Service", &svc, None),
            vec![(
                "FieldValueRequired".into(),
                "spec.ports".into(),
                "Required value".into()
            )]
        );
        let headless = defaulted(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "None"}}),
        );
        assert_eq!(causes("", "Service", &headless, None), vec![]);
        let ext = defaulted(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"type": "ExternalName"}}),
        );
        assert_eq!(
            causes("", "Service", &ext, None),
            vec![(
                "FieldValueRequired".into(),
                "spec.externalName".into(),
                "Required value".into()
            )]
        );
        let bad = defaulted(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"type": "Weird", "ports": [{"port": 0}]}}),
        );
        let c = causes("", "Service", &bad, None);
        assert!(c.contains(&(
            "FieldValueNotSupported".into(),
            "spec.type".into(),
            "Unsupported value: \"Weird\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"".into()
        )));
        assert!(c.contains(&(
            "FieldValueInvalid".into(),
            "spec.ports[0].port".into(),
            "Invalid value: 0: must be between 1 and 65535, inclusive".into()
        )));
        let mut old = defaulted(
            "",
            "Service",
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
        );
        old["spec"]["clusterIP"] = json!("10.152.183.10");
        old["spec"]["clusterIPs"] = json!(["10.152.183.10"]);
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.152.183.11");
        new["spec"]["clusterIPs"] = json!(["10.152.183.11"]);
        assert_eq!(
            causes("", "Service", &new, Some(&old)),
            vec![(
                "FieldValueInvalid".into(),
                "spec.clusterIPs[0]".into(),
                "Invalid value: []string{\"10.152.183.11\"}: may not change once set".into()
            )]
        );
    }

    #[test]
    fn config_and_secret_causes() {
        let cm = json!({"metadata": {"name": "c"}, "data": {"bad key": "v", "ok": "v"}, "immutable": true});
        let c = causes("", "ConfigMap", &cm, None);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1, "data[bad key]");
        assert!(c[0].2.starts_with("Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
        let old = json!({"metadata": {"name": "c"}, "data": {"ok": "v"}, "immutable": true});
        let new = json!({"metadata": {"name": "c"}, "data": {"ok": "w"}, "immutable": true});
        assert_eq!(
            causes("", "ConfigMap", &new, Some(&old)),
            vec![(
                "FieldValueForbidden".into(),
                "data".into(),
                "Forbidden: field is immutable when `immutable` is set".into()
            )]
        );
        let sec = defaulted(
            "",
            "Secret",
            json!({"metadata": {"name": "s"}, "data": {"k": "not base64!"}}),
        );
        let c = causes("", "Secret", &sec, None);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1, "data[k]");
        let big =
            json!({"metadata": {"name": "c"}, "data": {"a": "x".repeat(MAX_SECRET_SIZE + 1)}});
        assert_eq!(
            causes("", "ConfigMap", &big, None)[0].0,
            "FieldValueTooLong"
        );
        let tls = defaulted(
            "",
            "Secret",
            json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": ""}}),
        );
        assert_eq!(
            causes("", "Secret", &tls, None),
            vec![(
                "FieldValueRequired".into(),
                "data[tls.key]".into(),
                "Required value".into()
            )]
        );
        let mut changed = tls.clone();
        changed["type"] = json!("Opaque");
        assert!(causes("", "Secret", &changed, Some(&tls)).contains(&(
            "FieldValueInvalid".into(),
            "type".into(),
            "Invalid value: \"Opaque\": field is immutable".into()
        )));
    }

    #[test]
    fn validate_never_panics_on_odd_shapes() {
        let shapes = [
            json!(null),
            json!(3),
            json!({}),
            json!({"metadata": [], "spec": "x"}),
            json!({"metadata": {"name": 5, "labels": "x", "annotations": [1]}, "spec": {"containers": {"a": 1}}}),
            json!({"metadata": {"name": "a"}, "spec": {"containers": [1, "x", null, {"name": 3, "ports": "p", "env": [1], "resources": {"limits": {"cpu": []}, "requests": {"cpu": "2"}}}],
                "volumes": [1, {"name": "v", "secret": 3}], "tolerations": "t", "template": 1,
                "selector": "s", "strategy": [], "updateStrategy": {"type": 1, "rollingUpdate": 2}, "ports": [{"port": "x", "targetPort": []}],
                "jobTemplate": 4, "schedule": 5}, "data": {"a": 1}, "roleRef": 1, "subjects": [1], "rules": [1], "subsets": [1], "ports": [1]}),
        ];
        let kinds = [
            ("", "Pod"),
            ("", "PodTemplate"),
            ("", "ReplicationController"),
            ("", "Service"),
            ("", "ConfigMap"),
            ("", "Secret"),
            ("", "Namespace"),
            ("", "PersistentVolumeClaim"),
            ("", "PersistentVolume"),
            ("", "Endpoints"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("apps", "StatefulSet"),
            ("apps", "DaemonSet"),
            ("apps", "ControllerRevision"),
            ("batch", "Job"),
            ("batch", "CronJob"),
            ("rbac.authorization.k8s.io", "Role"),
            ("rbac.authorization.k8s.io", "RoleBinding"),
            ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("networking.k8s.io", "Ingress"),
        ];
        for v in &shapes {
            for (g, k) in kinds {
                let mut d = v.clone();
                apply_defaults(g, k, &mut d);
                let _ = validate(g, k, v, None);
                let _ = validate(g, k, &d, Some(v));
                let _ = validate(g, k, v, Some(&d));
            }
        }
        for weird in [
            "",
            "-",
            "a/b/c",
            "/x",
            "ÿ",
            "..",
            "a..b",
            "@every",
            "TZ=x",
            "1-2-3 * * * *",
            "*/0 * * * *",
            "ü:tag",
            "a@",
            ":",
            "/",
            "é/ü:ß@x",
            "@every 1é",
            "TZ=",
            "CRON_TZ=UTC 0 0 * * *",
            "1ü",
            "=",
        ] {
            let _ = validate_name("", "Pod", weird);
            let _ = is_qualified_name(weird);
            let _ = parse_cron(weird);
            let _ = default_pull_policy(weird);
            let _ = base64_check(weird);
            let _ = parse_quantity(&json!(weird));
        }
    }

    #[test]
    fn bootstrap_objects_are_valid() {
        for (g, k, v) in [
            (
                "",
                "Namespace",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-node-lease"}}),
            ),
            (
                "",
                "Service",
                json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": "10.152.183.1", "sessionAffinity": "None",
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 16443}]}}),
            ),
            (
                "",
                "Endpoints",
                json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"name": "https", "port": 16443, "protocol": "TCP"}]}]}),
            ),
            (
                "discovery.k8s.io",
                "EndpointSlice",
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "kubernetes", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
                "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true}}],
                "ports": [{"name": "https", "port": 16443, "protocol": "TCP"}]}),
            ),
        ] {
            let d = defaulted(g, k, v);
            assert_eq!(causes(g, k, &d, None), vec![], "{k}");
            assert_eq!(causes(g, k, &d, Some(&d)), vec![], "{k} update");
        }
    }

    #[test]
    fn undefaulted_old_objects_compare_defaulted() {
        let old = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let mut new = old.clone();
        new["status"] = json!({"phase": "Running"});
        apply_defaults("", "Pod", &mut new);
        assert_eq!(causes("", "Pod", &new, Some(&old)), vec![]);
    }

    #[test]
    fn base64() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert!(base64_check("Zm9v").is_ok());
        assert!(base64_check("Zg==").is_ok());
        assert!(base64_check("Zm8=").is_ok());
        assert!(base64_check("").is_ok());
        assert!(base64_check("Zm9").is_err());
        assert!(base64_check("Z!9v").is_err());
        assert!(base64_check("Zg=a").is_err());
    }
}
