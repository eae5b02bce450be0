//! The generic registry: routes `/api/v1/…` and `/apis/<g>/<v>/…` requests to verbs over the
//! resource table, with upstream semantics for metadata, preconditions, status/spec split,
//! graceful deletion and finalizers. Objects are stored as JSON under
//! `/registry/<storage>/[<namespace>/]<name>`; `resourceVersion` is the key's mod revision.

use std::sync::Arc;

use base64::Engine;
use hyper::{Method, Response};
use serde_json::{Map, Value, json};

use super::authz::Attributes;
use super::resources::{self, Resource};
use super::selector::{FieldSelector, LabelSelector};
use super::server::{Body, Req, State, error_response, json_response, not_found};
use super::status::{self, ApiError, Cause};
use super::storage::{StorageError, Stored};
use super::{defaults, discovery, patch, protobuf, table};

/// What a resource URL names.
pub struct Target {
    pub res: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

pub type ApiResult = Result<Response<Body>, ApiError>;

pub async fn handle(state: &Arc<State>, req: Req, path: &str) -> Response<Body> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Discovery documents are non-resource paths.
    if segs.len() <= 3
        && !(segs.len() == 3 && segs[0] == "api")
        && let Some(denied) = super::server::authorize_path(state, &req, path)
    {
        return denied;
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => return discovery::api(&req, &state.config.server_address()),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis"] => return discovery::apis(&req),
        ["apis", g] => return discovery::group(g),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return not_found(),
    };
    if rest.is_empty() {
        return discovery::resource_list(group, version);
    }
    let (watch_path, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let Some(target) = parse_target(group, version, rest) else {
        return not_found();
    };
    let mut resp = match dispatch(state, &req, &target, watch_path).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    for w in req.warnings.lock().iter() {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = hyper::header::HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

fn parse_target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let find = |p: &str| resources::find(group, version, p);
    let t = |res, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| Target {
        res,
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        sub: sub.map(str::to_string),
    };
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            let res = find(plural)?;
            match tail {
                [] => t(res, Some(ns), None, None),
                [name] => t(res, Some(ns), Some(name), None),
                [name, sub] => t(res, Some(ns), Some(name), Some(sub)),
                // `services|pods/<name>/proxy/<path…>`: the path is the proxied one's.
                [name, "proxy", _, ..] => t(res, Some(ns), Some(name), Some("proxy")),
                _ => return None,
            }
        }
        [plural] => t(find(plural)?, None, None, None),
        [plural, name] => {
            let res = find(plural)?;
            if res.namespaced {
                return None;
            }
            t(res, None, Some(name), None)
        }
        [plural, name, sub] => {
            let res = find(plural)?;
            if res.namespaced {
                return None;
            }
            t(res, None, Some(name), Some(sub))
        }
        // `nodes/<name>/proxy/<path…>`: the path is the proxied one's.
        [plural, name, "proxy", _, ..] => {
            let res = find(plural)?;
            if res.namespaced {
                return None;
            }
            t(res, None, Some(name), Some("proxy"))
        }
        _ => return None,
    };
    if let Some(sub) = &target.sub
        && !target.res.has_sub(sub)
    {
        return None;
    }
    if target.name.as_deref().is_some_and(str::is_empty)
        || target.namespace.as_deref().is_some_and(str::is_empty)
    {
        return None;
    }
    Some(target)
}

async fn dispatch(state: &Arc<State>, req: &Req, t: &Target, watch_path: bool) -> ApiResult {
    // Connect-style subresources pass their query on; `watch` there is not a watch.
    let connect = matches!(
        t.sub.as_deref(),
        Some("log" | "proxy" | "exec" | "attach" | "portforward")
    );
    let watch = watch_path || (!connect && req.flag("watch")?);
    let verb = match (&req.method, t.name.is_some()) {
        (&Method::GET, _) if watch => "watch",
        (&Method::HEAD, true) if connect => "get",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::POST, true) if t.sub.is_some() => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        (m, _) => {
            return Err(ApiError::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource ({m})"
            )));
        }
    };
    if let Some(sub) = &t.sub
        && !Resource::sub_verbs(sub).contains(&verb)
    {
        return Err(ApiError::MethodNotAllowed(format!(
            "the server does not allow this method on the requested resource ({verb} {}/{sub})",
            t.res.plural
        )));
    }
    if t.res.create_only && verb != "create" {
        return Err(ApiError::MethodNotAllowed(
            "the server does not allow this method on the requested resource".into(),
        ));
    }
    // Namespaced collections may only be written inside a namespace.
    if t.res.namespaced && t.namespace.is_none() && !matches!(verb, "list" | "watch") {
        return Err(ApiError::NotFound {
            message: "the server could not find the requested resource".into(),
            details: None,
        });
    }
    let attrs = Attributes {
        verb: verb.to_string(),
        namespace: t.ns().to_string(),
        group: t.res.group.to_string(),
        resource: t.res.plural.to_string(),
        subresource: t.sub.clone().unwrap_or_default(),
        name: request_name(req, t, verb),
        path: req.path.clone(),
        resource_request: true,
    };
    let d = state.authz.authorize(&req.user, &attrs);
    if !d.allowed {
        let mut why = super::authz::forbidden_message(&req.user, &attrs);
        if !d.reason.is_empty() {
            why.push_str(&format!(": {}", d.reason));
        }
        return Err(ApiError::forbidden(
            t.res.group,
            t.res.plural,
            t.name(),
            &why,
        ));
    }
    if t.res.create_only {
        return super::reviews::create(state, req, t).await;
    }
    match t.sub.as_deref() {
        Some("log") => return super::kubelet::pod_log(state, req, t).await,
        Some("proxy") => {
            return match t.res.plural {
                "services" => super::proxy::service_proxy(state, req, t).await,
                "pods" => super::proxy::pod_proxy(state, req, t).await,
                _ => super::kubelet::node_proxy(state, req, t).await,
            };
        }
        Some("exec" | "attach" | "portforward") => {
            return super::kubelet::pod_stream(state, req, t).await;
        }
        _ => {}
    }
    check_query(req)?;
    match verb {
        "get" => get(state, req, t).await,
        "list" => list(state, req, t).await,
        "watch" => super::watch::watch(state, req, t).await,
        "create" => match t.sub.as_deref() {
            Some("binding") => bind(state, req, t).await,
            Some("token") => {
                let body = decode_body(req, "authentication.k8s.io", "v1", "TokenRequest")?;
                let out = super::tokens::token_request(state, t, body).await?;
                Ok(json_response(201, &out))
            }
            _ => create(state, req, t).await,
        },
        "update" => update(state, req, t).await,
        "patch" => patch_object(state, req, t).await,
        "delete" => delete(state, req, t).await,
        _ => delete_collection(state, req, t).await,
    }
}

/// Query parameters upstream accepts on resource requests; others are a 400.
const KNOWN_PARAMS: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "dryRun",
    "fieldManager",
    "fieldSelector",
    "fieldValidation",
    "force",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "includeObject",
    "labelSelector",
    "limit",
    "orphanDependents",
    "pretty",
    "propagationPolicy",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeout",
    "timeoutSeconds",
    "watch",
];

fn check_query(req: &Req) -> Result<(), ApiError> {
    for (k, _) in &req.query {
        if !KNOWN_PARAMS.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter: {k:?}"
            )));
        }
    }
    if let Some(d) = req.param("dryRun")
        && d != "All"
    {
        return Err(ApiError::BadRequest(format!(
            "dryRun: Unsupported value: {d:?}: supported values: \"All\""
        )));
    }
    Ok(())
}

pub fn key(res: &Resource, ns: &str, name: &str) -> String {
    if res.namespaced {
        format!("/registry/{}/{ns}/{name}", res.storage)
    } else {
        format!("/registry/{}/{name}", res.storage)
    }
}

/// The key prefix of a collection (all namespaces when `ns` is empty).
pub fn prefix(res: &Resource, ns: &str) -> String {
    if res.namespaced && !ns.is_empty() {
        format!("/registry/{}/{ns}/", res.storage)
    } else {
        format!("/registry/{}/", res.storage)
    }
}

/// A stored value as clients see it (with its resourceVersion).
pub fn decode_stored(s: &Stored) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&s.value).map_err(|e| {
        ApiError::Internal(format!("cannot decode the object stored at {}: {e}", s.key))
    })?;
    if !v.is_object() {
        return Err(ApiError::Internal(format!(
            "the value stored at {} is not an object",
            s.key
        )));
    }
    meta_mut(&mut v).insert("resourceVersion".into(), s.mod_revision.to_string().into());
    Ok(v)
}

/// A stored value as `res`'s served version.
pub fn decode_as(res: &Resource, s: &Stored) -> Result<Value, ApiError> {
    Ok(super::convert::to_served(res, decode_stored(s)?))
}

/// The stored bytes of an object of `res`'s served version.
fn encode_as(res: &Resource, v: &Value) -> Vec<u8> {
    if super::convert::differs(res) {
        encode(&super::convert::to_stored(res, v.clone()))
    } else {
        encode(v)
    }
}

/// The stored bytes of an object: without `resourceVersion` (the key's revision is) and
/// `selfLink`. Written straight from the value, as this is on every write's path.
fn encode(v: &Value) -> Vec<u8> {
    let skip = |k: &str| k == "resourceVersion" || k == "selfLink";
    let (Some(obj), Some(meta)) = (v.as_object(), v["metadata"].as_object()) else {
        return serde_json::to_vec(v).unwrap_or_default();
    };
    if !meta.keys().any(|k| skip(k)) {
        return serde_json::to_vec(v).unwrap_or_default();
    }
    let stripped: Map<String, Value> = meta
        .iter()
        .filter(|(k, _)| !skip(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out = Vec::with_capacity(1024);
    out.push(b'{');
    for (n, (k, x)) in obj.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, k);
        out.push(b':');
        let _ = if k == "metadata" {
            serde_json::to_writer(&mut out, &stripped)
        } else {
            serde_json::to_writer(&mut out, x)
        };
    }
    out.push(b'}');
    out
}

pub fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let Value::Object(obj) = v else {
        unreachable!("made an object above")
    };
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    let Value::Object(m) = meta else {
        unreachable!("made an object above")
    };
    m
}

pub fn meta_str<'a>(v: &'a Value, field: &str) -> &'a str {
    v["metadata"][field].as_str().unwrap_or("")
}

pub fn storage_err(e: StorageError, res: &Resource, name: &str) -> ApiError {
    match e {
        StorageError::Exists => ApiError::already_exists(res.group, res.plural, name),
        StorageError::NotFound => ApiError::not_found(res.group, res.plural, name),
        StorageError::Conflict(_) => ApiError::conflict(res.group, res.plural, name),
        StorageError::Compacted(rv) => ApiError::Gone(format!("too old resource version: {rv}")),
        other => ApiError::Internal(other.to_string()),
    }
}

pub use crate::common::clock::now_rfc3339;

fn rfc3339_in(secs: i64) -> String {
    let now = time::OffsetDateTime::now_utc();
    // Grace periods are client input: an absurd one must not overflow the clock.
    let later = now
        .checked_add(time::Duration::seconds(secs.clamp(0, 100 * 365 * 86_400)))
        .unwrap_or(now);
    crate::common::clock::rfc3339(later)
}

pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Upstream's generateName suffix: five characters without vowels or look-alikes.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Parses a request body into an object of the URL's kind (JSON; `apiVersion`/`kind` filled
/// in when absent, rejected when they name another type).
pub fn decode_body(req: &Req, group: &str, version: &str, kind: &str) -> Result<Value, ApiError> {
    let ct = req.header("content-type").unwrap_or("application/json");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let unrecognized = |why: String| {
        ApiError::BadRequest(format!(
            "the object provided is unrecognized (must be of type {kind}): {why}"
        ))
    };
    let mut v: Value = if media == "application/vnd.kubernetes.protobuf" {
        let (_, _, obj) = protobuf::decode(&req.body).map_err(|e| unrecognized(e.to_string()))?;
        obj
    } else {
        if !media.is_empty()
            && media != "application/json"
            && media != "*/*"
            && !media.ends_with("+json")
        {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/vnd.kubernetes.protobuf (got {ct})"
            )));
        }
        if req.body.iter().all(u8::is_ascii_whitespace) {
            return Err(unrecognized("the request body is empty".into()));
        }
        serde_json::from_slice(&req.body).map_err(|e| {
            unrecognized(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    };
    if !v.is_object() {
        return Err(unrecognized(
            "couldn't get version/kind; json parse error: the body is not a JSON object".into(),
        ));
    }
    let Some(obj) = v.as_object_mut() else {
        return Err(unrecognized("the body is not a JSON object".into()));
    };
    let want_api = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    match obj.get("apiVersion") {
        None | Some(Value::Null) => {
            obj.insert("apiVersion".into(), want_api.clone().into());
        }
        Some(Value::String(a)) if *a == want_api => {}
        Some(a) => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({}) does not match the expected API version ({want_api})",
                a.as_str().unwrap_or("?")
            )));
        }
    }
    match obj.get("kind") {
        None | Some(Value::Null) => {
            obj.insert("kind".into(), kind.into());
        }
        Some(Value::String(k)) if k == kind => {}
        Some(k) => {
            return Err(unrecognized(format!(
                "the kind in the data ({}) does not match the expected kind ({kind})",
                k.as_str().unwrap_or("?")
            )));
        }
    }
    match obj.get("metadata") {
        None | Some(Value::Null) => {
            obj.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => {
            return Err(unrecognized("metadata must be an object".into()));
        }
    }
    check_fields(req, &want_api, kind, &mut v)?;
    Ok(v)
}

/// `fieldValidation`: fields the kind does not have are dropped (as upstream's decoding
/// does) and, by mode, ignored, warned about (the default) or refused (`Strict`).
fn check_fields(req: &Req, api_version: &str, kind: &str, obj: &mut Value) -> Result<(), ApiError> {
    let mode = req.param("fieldValidation").unwrap_or("Warn");
    if !matches!(mode, "Ignore" | "Warn" | "Strict") {
        return Err(ApiError::BadRequest(format!(
            "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {mode:?}"
        )));
    }
    let version = api_version.rsplit('/').next().unwrap_or(api_version);
    let unknown = super::openapi::prune_unknown(api_version, kind, obj).map_err(|e| {
        ApiError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}"
        ))
    })?;
    if unknown.is_empty() || mode == "Ignore" {
        return Ok(());
    }
    let each: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if mode == "Strict" {
        return Err(ApiError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
            each.join(", ")
        )));
    }
    req.warnings.lock().extend(each);
    Ok(())
}

fn dry_run(req: &Req) -> bool {
    req.param("dryRun") == Some("All")
}

fn causes(list: Vec<defaults::Cause>) -> Vec<Cause> {
    list.into_iter()
        .map(|c| Cause {
            reason: c.reason.to_string(),
            message: c.message,
            field: c.field,
        })
        .collect()
}

/// Runs upstream defaulting and validation; 422 with every cause when invalid.
fn default_and_validate(
    res: &Resource,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    defaults::apply_defaults(res.group, res.kind, obj);
    let mut found = defaults::validate(res.group, res.kind, obj, old);
    if let Some(old) = old {
        for f in ["namespace", "uid", "creationTimestamp"] {
            if obj["metadata"][f] != old["metadata"][f] && !old["metadata"][f].is_null() {
                found.push(defaults::Cause {
                    reason: "FieldValueInvalid",
                    message: format!("Invalid value: {}: field is immutable", obj["metadata"][f]),
                    field: format!("metadata.{f}"),
                });
            }
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        let name = meta_str(obj, "name").to_string();
        Err(ApiError::invalid(res.group, res.kind, &name, causes(found)))
    }
}

/// A Job's generated selector and pod labels (upstream's PrepareForCreate), unless it asks to
/// choose its own with `manualSelector`.
fn select_job_pods(job: &mut Value) {
    if job["spec"]["manualSelector"] == true {
        return;
    }
    let uid = meta_str(job, "uid").to_string();
    let name = meta_str(job, "name").to_string();
    if !job["spec"]["selector"].is_object() {
        job["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    }
    let labels = &mut job["spec"]["template"]["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels[k] = v.clone().into();
    }
}

/// What a kind's status looks like on create (upstream's PrepareForCreate).
fn reset_status_on_create(res: &Resource, obj: &mut Value) {
    match (res.group, res.kind) {
        ("", "Pod") => {
            let qos = qos_class(&obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        ("", "Namespace")
        | ("", "Node")
        | ("", "PersistentVolume")
        | ("", "PersistentVolumeClaim") => {}
        ("", "Service") => obj["status"] = json!({"loadBalancer": {}}),
        _ if res.has_sub("status") => {
            obj["status"] = json!({});
        }
        _ => {}
    }
}

/// The pod's QoS class from its containers' requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c["resources"]["requests"].as_object();
        let lim = c["resources"]["limits"].as_object();
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = &c["resources"]["limits"][r];
            let q = &c["resources"]["requests"][r];
            if l.is_null() || (!q.is_null() && q != l) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

async fn get(state: &Arc<State>, req: &Req, t: &Target) -> ApiResult {
    let (obj, rev) = current(state, t).await?;
    let obj = match t.sub.as_deref() {
        Some("scale") => to_scale(t.res, &obj),
        _ => obj,
    };
    if req.wants_table() && t.sub.is_none() {
        return Ok(json_response(
            200,
            &to_table(
                t.res,
                &[obj],
                req,
                json!({"resourceVersion": rev.to_string()}),
            ),
        ));
    }
    Ok(json_response(200, &obj))
}

/// One Table row for an object (`includeObject` decides what the row carries).
fn table_row(res: &Resource, o: &Value, include: &str, now: time::OffsetDateTime) -> Value {
    let object = match include {
        "Object" => o.clone(),
        "None" => Value::Null,
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o["metadata"],
        }),
    };
    let mut row = json!({
        "cells": table::cells(res.group, res.plural, o, now),
        "object": object,
    });
    if let Some(c) = table::row_conditions(res.group, res.plural, o) {
        row["conditions"] = c;
    }
    row
}

fn table_of(res: &Resource, rows: Vec<Value>, list_meta: Value) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": table::column_definitions(res.group, res.plural),
        "rows": rows,
    })
}

/// A `meta.k8s.io/v1` Table of objects, rows as upstream's printers make them.
pub fn to_table(res: &Resource, items: &[Value], req: &Req, list_meta: Value) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let include = req.param("includeObject").unwrap_or("Metadata");
    let rows = items
        .iter()
        .map(|o| table_row(res, o, include, now))
        .collect();
    table_of(res, rows, list_meta)
}

/// The continue token: where the next page starts, at which revision (upstream's shape).
fn encode_continue(rv: i64, start: &str) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
}

fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let bad = || {
        ApiError::BadRequest("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)".into())
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v["rv"].as_i64().filter(|r| *r > 0).ok_or_else(bad)?;
    // Any start is safe: the read stays within the collection's key range.
    let start = v["start"].as_str().ok_or_else(bad)?.to_string();
    Ok((rv, start))
}

/// Keys read a round trip when a list has no limit.
const LIST_PAGE: i64 = 1000;

pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn from_req(req: &Req, res: &Resource) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(req.param("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = FieldSelector::parse(req.param("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        fields
            .check_supported(res.group, res.plural)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Self { labels, fields })
    }

    pub fn matches(&self, res: &Resource, obj: &Value) -> bool {
        self.labels.matches(obj["metadata"]["labels"].as_object())
            && self.fields.matches(res.group, res.plural, obj)
    }

    fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

fn parse_limit(req: &Req) -> Result<i64, ApiError> {
    match req.param("limit") {
        None | Some("") => Ok(0),
        Some(l) => l
            .parse::<i64>()
            .map(|n| n.max(0))
            .map_err(|_| ApiError::BadRequest(format!("invalid limit {l:?}"))),
    }
}

fn parse_rv(v: Option<&str>) -> Result<i64, ApiError> {
    match v {
        None | Some("") => Ok(0),
        Some(s) => s
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {s:?}"))),
    }
}

/// Reads the matching objects of a collection: (items, revision, continue, remaining).
pub async fn read_list(
    state: &State,
    req: &Req,
    t: &Target,
    sel: &Selectors,
) -> Result<(Vec<Value>, i64, String, Option<i64>), ApiError> {
    let mut items = Vec::new();
    let (revision, cont, remaining) = read_list_with(state, req, t, sel, |o| {
        items.push(o);
        Ok(())
    })
    .await?;
    Ok((items, revision, cont, remaining))
}

/// Reads the matching objects of a collection, handing each to `each` as it is read (so a
/// big list is never held whole): (revision, continue, remaining).
pub async fn read_list_with(
    state: &State,
    req: &Req,
    t: &Target,
    sel: &Selectors,
    mut each: impl FnMut(Value) -> Result<(), ApiError>,
) -> Result<(i64, String, Option<i64>), ApiError> {
    let limit = parse_limit(req)?;
    // `metadata.name=x` (kubectl wait/delete) reads only the keys starting with that name.
    let prefix = match sel.fields.exact_name() {
        Some(name) if !t.res.namespaced || !t.ns().is_empty() => key(t.res, t.ns(), name),
        _ => prefix(t.res, t.ns()),
    };
    let (mut revision, mut start) = match req.param("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let (rv, start) = decode_continue(c)?;
            (rv, format!("{prefix}{start}"))
        }
        None => {
            let rv = parse_rv(req.param("resourceVersion"))?;
            let exact = req.param("resourceVersionMatch") == Some("Exact");
            (if exact { rv } else { 0 }, String::new())
        }
    };
    let mut count: i64 = 0;
    let mut last_key = String::new();
    let mut remaining = None;
    // Unlimited lists are still read in pages at one revision, to bound each response.
    let fetch = if limit > 0 { limit } else { LIST_PAGE };
    loop {
        let page = state
            .storage
            .list(&prefix, &start, fetch, revision)
            .await
            .map_err(|e| match e {
                StorageError::Compacted(_) if req.param("continue").is_some() => ApiError::Gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                ),
                StorageError::Compacted(rv) => ApiError::Gone(format!("too old resource version: {rv}")),
                other => ApiError::Internal(other.to_string()),
            })?;
        if revision == 0 {
            revision = page.revision;
        }
        let n = page.items.len();
        for s in &page.items {
            last_key = s.key.clone();
            let obj = decode_as(t.res, s)?;
            if sel.matches(t.res, &obj) {
                count += 1;
                each(obj)?;
            }
        }
        if page.remaining == 0 || n == 0 {
            return Ok((revision, String::new(), None));
        }
        if limit > 0 && count >= limit {
            if sel.is_empty() {
                remaining = Some(page.remaining);
            }
            let after = last_key.strip_prefix(&prefix).unwrap_or(&last_key);
            let token = encode_continue(revision, &format!("{after}\u{0}"));
            return Ok((revision, token, remaining));
        }
        start = format!("{last_key}\u{0}");
    }
}

/// Lists bigger than this give their freed memory back to the OS once built.
const TRIM_AFTER_BYTES: usize = 4 * 1024 * 1024;

async fn list(state: &Arc<State>, req: &Req, t: &Target) -> ApiResult {
    let sel = Selectors::from_req(req, t.res)?;
    let list_meta = |revision: i64, cont: String, remaining: Option<i64>| {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if !cont.is_empty() {
            meta["continue"] = cont.into();
        }
        if let Some(r) = remaining {
            meta["remainingItemCount"] = r.into();
        }
        meta
    };
    if req.wants_table() {
        let now = time::OffsetDateTime::now_utc();
        let include = req.param("includeObject").unwrap_or("Metadata").to_string();
        let mut rows = Vec::new();
        let (revision, cont, remaining) = read_list_with(state, req, t, &sel, |o| {
            rows.push(table_row(t.res, &o, &include, now));
            Ok(())
        })
        .await?;
        let table = table_of(t.res, rows, list_meta(revision, cont, remaining));
        return Ok(json_response(200, &table));
    }
    // Each object is serialised as it is read; `metadata` follows `items` (key order is
    // free in JSON), since the list's revision and continue token are known only at the end.
    let mut out = format!(
        r#"{{"kind":"{}List","apiVersion":"{}","items":["#,
        t.res.kind,
        t.res.api_version()
    )
    .into_bytes();
    let mut first = true;
    let (revision, cont, remaining) = read_list_with(state, req, t, &sel, |o| {
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, &o)
            .map_err(|e| ApiError::Internal(format!("cannot encode the list: {e}")))
    })
    .await?;
    out.extend_from_slice(br#"],"metadata":"#);
    serde_json::to_writer(&mut out, &list_meta(revision, cont, remaining))
        .map_err(|e| ApiError::Internal(format!("cannot encode the list: {e}")))?;
    out.extend_from_slice(b"}\n");
    if out.len() > TRIM_AFTER_BYTES {
        crate::common::heap::trim();
    }
    Ok(super::server::bytes_response(200, "application/json", out))
}

async fn create(state: &Arc<State>, req: &Req, t: &Target) -> ApiResult {
    let mut obj = decode_body(req, t.res.group, t.res.version, t.res.kind)?;
    let manager = field_manager(req)?;
    no_escalation(state, req, t, &obj)?;
    let created =
        create_object(state, t.res, t.ns(), &mut obj, dry_run(req), Some(&manager)).await?;
    Ok(json_response(201, &created))
}

/// The name a request is about: the URL's, or for a list or watch of one object, the
/// `metadata.name=` of its field selector (as upstream's request info, so a kubelet may watch
/// the one secret its pod uses).
fn request_name(req: &Req, t: &Target, verb: &str) -> String {
    if !t.name().is_empty() || !matches!(verb, "list" | "watch") {
        return t.name().to_string();
    }
    let selector = req.param("fieldSelector").unwrap_or("");
    let mut names = selector.split(',').filter_map(|term| {
        let (k, v) = term.split_once('=')?;
        let v = v.strip_prefix('=').unwrap_or(v);
        (k.trim() == "metadata.name" && !k.ends_with('!')).then(|| v.trim().to_string())
    });
    match (names.next(), names.next()) {
        (Some(n), None) => n,
        _ => String::new(),
    }
}

/// Roles and bindings may grant only what their writer holds (src/apiserver/rbac.rs).
fn no_escalation(state: &State, req: &Req, t: &Target, obj: &Value) -> Result<(), ApiError> {
    if t.res.group != "rbac.authorization.k8s.io" || t.sub.is_some() {
        return Ok(());
    }
    super::rbac::check_escalation(state, &req.user, t.res.plural, t.ns(), obj)
}

/// Creates `obj` in `ns`: metadata, defaults, validation, admission, storage.
/// `manager` records the write in `managedFields` (None: the caller already did, as apply).
pub async fn create_object(
    state: &State,
    res: &'static Resource,
    ns: &str,
    obj: &mut Value,
    dry_run: bool,
    manager: Option<&str>,
) -> Result<Value, ApiError> {
    {
        let meta = meta_mut(obj);
        if res.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                None | Some("") => {
                    meta.insert("namespace".into(), ns.into());
                }
                Some(n) if n == ns => {}
                Some(_) => {
                    return Err(ApiError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ));
                }
            }
        } else {
            meta.remove("namespace");
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::BadRequest(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty()
            && let Some(g) = meta.get("generateName").and_then(Value::as_str)
            && !g.is_empty()
        {
            let g = g.chars().take(58).collect::<String>();
            meta.insert("name".into(), format!("{g}{}", name_suffix()).into());
        }
        meta.insert("uid".into(), new_uid().into());
        meta.insert("creationTimestamp".into(), now_rfc3339().into());
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("selfLink");
        if res.generation {
            meta.insert("generation".into(), 1.into());
        } else {
            meta.remove("generation");
        }
    }
    reset_status_on_create(res, obj);
    if res.group == "batch" && res.kind == "Job" {
        select_job_pods(obj);
    }
    if res.group.is_empty() && res.kind == "Pod" {
        super::admission::service_account(state, obj).await;
        super::admission::priority(state, obj).await?;
        super::admission::default_toleration_seconds(obj);
    }
    default_and_validate(res, obj, None)?;
    if let Some(m) = manager {
        meta_mut(obj).remove("managedFields");
        super::ssa::track_update(
            res.group,
            res.kind,
            &res.api_version(),
            None,
            obj,
            m,
            &now_rfc3339(),
        );
    }
    let name = meta_str(obj, "name").to_string();
    super::admission::admit_namespace(state, res, ns, &name).await?;
    let _alloc_guard;
    if res.group.is_empty() && res.kind == "Service" {
        _alloc_guard = state.service_alloc.lock().await;
        super::services::allocate(state, obj, None).await?;
    }
    if dry_run {
        return Ok(obj.clone());
    }
    let rev = state
        .storage
        .create(&key(res, ns, &name), encode_as(res, obj))
        .await
        .map_err(|e| storage_err(e, res, &name))?;
    meta_mut(obj).insert("resourceVersion".into(), rev.to_string().into());
    Ok(obj.clone())
}

/// The current object, or 404.
pub async fn current(state: &State, t: &Target) -> Result<(Value, i64), ApiError> {
    let stored = state
        .storage
        .get(&key(t.res, t.ns(), t.name()))
        .await
        .map_err(|e| storage_err(e, t.res, t.name()))?
        .ok_or_else(|| ApiError::not_found(t.res.group, t.res.plural, t.name()))?;
    let obj = decode_as(t.res, &stored)?;
    Ok((obj, stored.mod_revision))
}

async fn update(state: &Arc<State>, req: &Req, t: &Target) -> ApiResult {
    let (kg, kv, kk) = t.sub.as_deref().map(|s| t.res.sub_kind(s)).unwrap_or((
        t.res.group,
        t.res.version,
        t.res.kind,
    ));
    let body = decode_body(req, kg, kv, kk)?;
    let body_name = meta_str(&body, "name");
    if !body_name.is_empty() && body_name != t.name() {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            t.name()
        )));
    }
    if t.res.namespaced {
        let body_ns = meta_str(&body, "namespace");
        if !body_ns.is_empty() && body_ns != t.ns() {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
    }
    let (old, rev) = current(state, t).await?;
    let wanted_rv = meta_str(&body, "resourceVersion").to_string();
    if !wanted_rv.is_empty() && wanted_rv != rev.to_string() {
        return Err(ApiError::conflict(t.res.group, t.res.plural, t.name()));
    }
    let manager = field_manager(req)?;
    no_escalation(state, req, t, &body)?;
    let updated = apply_update(state, t, &old, rev, body, dry_run(req), Some(&manager)).await?;
    Ok(json_response(200, &updated))
}

/// Merges a client's new version (of the object or a subresource view) into the stored one
/// and writes it if anything changed.
pub async fn apply_update(
    state: &State,
    t: &Target,
    old: &Value,
    rev: i64,
    body: Value,
    dry_run: bool,
    manager: Option<&str>,
) -> Result<Value, ApiError> {
    let res = t.res;
    let mut new = match t.sub.as_deref() {
        None => {
            let mut n = body;
            if res.has_sub("status") {
                n["status"] = old["status"].clone();
                if old["status"].is_null()
                    && let Some(o) = n.as_object_mut()
                {
                    o.remove("status");
                }
            }
            n
        }
        Some("status") | Some("approval") => {
            let mut n = old.clone();
            n["status"] = body["status"].clone();
            if res.kind == "CertificateSigningRequest" && t.sub.as_deref() == Some("approval") {
                n["status"]["conditions"] = body["status"]["conditions"].clone();
            }
            n
        }
        Some("scale") => {
            let replicas = body["spec"]["replicas"].clone();
            if !replicas.is_i64() || replicas.as_i64().is_some_and(|r| r < 0) {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    t.name(),
                    vec![Cause {
                        reason: "FieldValueInvalid".into(),
                        message: format!(
                            "Invalid value: {replicas}: must be greater than or equal to 0"
                        ),
                        field: "spec.replicas".into(),
                    }],
                ));
            }
            let mut n = old.clone();
            n["spec"]["replicas"] = replicas;
            n
        }
        Some("finalize") => {
            let mut n = old.clone();
            n["spec"]["finalizers"] = body["spec"]["finalizers"].clone();
            n
        }
        Some(other) => {
            return Err(ApiError::MethodNotAllowed(format!(
                "the server does not allow this method on the requested resource ({other})"
            )));
        }
    };
    // A namespace's finalizers change only through `finalize`.
    if t.sub.is_none() && res.group.is_empty() && res.kind == "Namespace" {
        new["spec"]["finalizers"] = old["spec"]["finalizers"].clone();
        if old["spec"]["finalizers"].is_null()
            && let Some(spec) = new["spec"].as_object_mut()
        {
            spec.remove("finalizers");
        }
    }
    // Metadata the server owns is kept from the stored object.
    {
        let old_meta = old["metadata"].as_object().cloned().unwrap_or_default();
        let meta = meta_mut(&mut new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
            "generation",
        ] {
            match old_meta.get(f) {
                Some(v) => {
                    meta.insert(f.into(), v.clone());
                }
                None => {
                    meta.remove(f);
                }
            }
        }
        meta.insert(
            "resourceVersion".into(),
            old_meta
                .get("resourceVersion")
                .cloned()
                .unwrap_or(Value::Null),
        );
    }
    // Objects being deleted may only lose finalizers, not gain them (upstream).
    if !old["metadata"]["deletionTimestamp"].is_null() {
        let old_f: Vec<&Value> = old["metadata"]["finalizers"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        if let Some(newf) = new["metadata"]["finalizers"].as_array()
            && newf.iter().any(|f| !old_f.contains(&f))
        {
            return Err(ApiError::invalid(
                res.group,
                res.kind,
                t.name(),
                vec![Cause {
                    reason: "FieldValueForbidden".into(),
                    message:
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                    field: "metadata.finalizers".into(),
                }],
            ));
        }
    }
    default_and_validate(res, &mut new, Some(old))?;
    if let Some(m) = manager {
        // Ownership is the server's record: start from the stored entries, whatever the
        // client echoed back.
        match old["metadata"].get("managedFields") {
            Some(f) => {
                meta_mut(&mut new).insert("managedFields".into(), f.clone());
            }
            None => {
                meta_mut(&mut new).remove("managedFields");
            }
        }
        super::ssa::track_update(
            res.group,
            res.kind,
            &res.api_version(),
            Some(old),
            &mut new,
            m,
            &now_rfc3339(),
        );
    }
    if res.generation && spec_changed(old, &new) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        meta_mut(&mut new).insert("generation".into(), g.into());
    }
    // Held through the write, so two Services never get the same IP or node port.
    let _alloc_guard = if res.group.is_empty() && res.kind == "Service" {
        let g = state.service_alloc.lock().await;
        super::services::allocate(state, &mut new, Some(old)).await?;
        Some(g)
    } else {
        None
    };
    if new == *old {
        // Nothing changed: no write, same resourceVersion (kubectl apply twice is a no-op).
        return Ok(new);
    }
    if dry_run {
        return Ok(new);
    }
    let k = key(res, t.ns(), t.name());
    // The last finalizer leaving a deleted object completes the deletion.
    let finished = !new["metadata"]["deletionTimestamp"].is_null()
        && new["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|a| a.is_empty())
        && !(res.kind == "Namespace"
            && new["spec"]["finalizers"]
                .as_array()
                .is_some_and(|a| !a.is_empty()))
        && !(res.kind == "Pod"
            && res.group.is_empty()
            && new["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0)
                > 0);
    if finished {
        state
            .storage
            .delete(&k, rev)
            .await
            .map_err(|e| storage_err(e, res, t.name()))?;
        return Ok(new);
    }
    let new_rev = state
        .storage
        .update(&k, encode_as(res, &new), rev)
        .await
        .map_err(|e| storage_err(e, res, t.name()))?;
    meta_mut(&mut new).insert("resourceVersion".into(), new_rev.to_string().into());
    Ok(new)
}

fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

/// `autoscaling/v1` Scale view of a workload.
pub fn to_scale(res: &Resource, obj: &Value) -> Value {
    let selector = LabelSelector::from_json(&obj["spec"]["selector"])
        .map(|s| s.to_string())
        .unwrap_or_default();
    let selector = if res.kind == "ReplicationController" {
        obj["spec"]["selector"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    } else {
        selector
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// The manager a write is recorded under: `fieldManager`, else the User-Agent's product
/// (upstream's default).
fn field_manager(req: &Req) -> Result<String, ApiError> {
    let m = match req.param("fieldManager") {
        Some(m) => m.to_string(),
        None => req
            .header("user-agent")
            .and_then(|ua| ua.split('/').next())
            .filter(|p| !p.is_empty())
            .unwrap_or("unknown")
            .chars()
            .take(128)
            .collect(),
    };
    if m.chars().count() > 128 || m.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {m:?}: must be at most 128 printable characters"),
                field: "fieldManager".into(),
            }],
        ));
    }
    Ok(m)
}

/// Server-side apply (`application/apply-patch+yaml`): creates the object when absent.
async fn apply_patch(state: &Arc<State>, req: &Req, t: &Target) -> ApiResult {
    // Apply works on the object and on its status (what controllers apply).
    if t.sub.as_deref().is_some_and(|s| s != "status") {
        return Err(ApiError::UnsupportedMediaType(
            "apply patches are supported on objects and their status only".into(),
        ));
    }
    let Some(manager) = req.param("fieldManager").filter(|m| !m.is_empty()) else {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: is required for apply patch".into(),
                field: "fieldManager".into(),
            }],
        ));
    };
    let force = req.flag("force")?;
    let res = t.res;
    let mut applied: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => {
            let text = std::str::from_utf8(&req.body)
                .map_err(|_| ApiError::BadRequest("the apply body is not UTF-8".into()))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?
        }
    };
    if !applied.is_object() {
        return Err(ApiError::BadRequest(
            "the body of an apply patch must be an object".into(),
        ));
    }
    let api_version = res.api_version();
    for (field, want) in [("apiVersion", api_version.as_str()), ("kind", res.kind)] {
        match applied[field].as_str() {
            Some(v) if v == want => {}
            Some(v) => {
                return Err(ApiError::BadRequest(format!(
                    "the {field} in the data ({v}) does not match the expected {field} ({want})"
                )));
            }
            None => applied[field] = want.into(),
        }
    }
    let name = meta_str(&applied, "name").to_string();
    if !name.is_empty() && name != t.name() {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            t.name()
        )));
    }
    meta_mut(&mut applied).insert("name".into(), t.name().into());
    if res.namespaced {
        let ns = meta_str(&applied, "namespace");
        if !ns.is_empty() && ns != t.ns() {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        meta_mut(&mut applied).insert("namespace".into(), t.ns().into());
    }
    check_fields(req, &api_version, res.kind, &mut applied)?;
    if t.sub.is_some() {
        // Through `status`, only the status counts (upstream resets the rest).
        applied = json!({
            "apiVersion": applied["apiVersion"],
            "kind": applied["kind"],
            "metadata": {"name": applied["metadata"]["name"], "namespace": applied["metadata"]["namespace"]},
            "status": applied["status"],
        });
        if !res.namespaced
            && let Some(m) = applied["metadata"].as_object_mut()
        {
            m.remove("namespace");
        }
    }
    let stored = state
        .storage
        .get(&key(res, t.ns(), t.name()))
        .await
        .map_err(|e| storage_err(e, res, t.name()))?;
    let current = stored.as_ref().map(|s| decode_as(res, s)).transpose()?;
    let merged = super::ssa::apply(
        res.group,
        res.kind,
        &api_version,
        current.as_ref(),
        &applied,
        manager,
        force,
        &now_rfc3339(),
    )
    .map_err(|e| match e {
        super::ssa::SsaError::Conflicts { conflicts, message } => ApiError::ApplyConflict {
            message,
            details: super::status::Details::new(res.group, res.plural, t.name()),
            causes: conflicts
                .into_iter()
                .map(|(m, field)| Cause {
                    reason: "FieldManagerConflict".into(),
                    message: format!("conflict with {m:?}"),
                    field,
                })
                .collect(),
        },
        super::ssa::SsaError::Invalid(m) => ApiError::BadRequest(m),
    })?;
    no_escalation(state, req, t, &merged)?;
    match (current, stored) {
        (Some(old), Some(s)) => {
            let out =
                apply_update(state, t, &old, s.mod_revision, merged, dry_run(req), None).await?;
            Ok(json_response(200, &out))
        }
        _ if t.sub.is_some() => Err(ApiError::not_found(res.group, res.plural, t.name())),
        _ => {
            let mut obj = merged;
            let out = create_object(state, res, t.ns(), &mut obj, dry_run(req), None).await?;
            Ok(json_response(201, &out))
        }
    }
}

async fn patch_object(state: &Arc<State>, req: &Req, t: &Target) -> ApiResult {
    let ct = req.header("content-type").unwrap_or("");
    if ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/apply-patch+yaml")
    {
        return apply_patch(state, req, t).await;
    }
    if req.param("force").is_some() {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            vec![Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: may not be specified for non-apply patch".into(),
                field: "force".into(),
            }],
        ));
    }
    let manager = field_manager(req)?;
    let Some(ptype) = patch::PatchType::from_content_type(ct) else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"
        )));
    };
    // Retry when another writer wins between our read and write, as upstream does for patches
    // that do not pin a resourceVersion.
    for attempt in 0..5 {
        let (old, rev) = current(state, t).await?;
        let view = match t.sub.as_deref() {
            Some("scale") => to_scale(t.res, &old),
            _ => old.clone(),
        };
        let (pg, pk) = match t.sub.as_deref() {
            Some("scale") => ("autoscaling", "Scale"),
            _ => (t.res.group, t.res.kind),
        };
        let patched = patch::apply(pg, pk, ptype, &view, &req.body).map_err(|e| match e {
            patch::PatchError::BadRequest(m) => ApiError::BadRequest(m),
            patch::PatchError::Invalid(m) => ApiError::invalid(
                pg,
                pk,
                t.name(),
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: m,
                    field: String::new(),
                }],
            ),
            patch::PatchError::UnsupportedMediaType(m) => ApiError::UnsupportedMediaType(m),
        })?;
        if !patched.is_object() {
            return Err(ApiError::BadRequest(
                "the patched object is not an object".into(),
            ));
        }
        let mut patched = patched;
        let av = match t.sub.as_deref() {
            Some("scale") => "autoscaling/v1".to_string(),
            _ => t.res.api_version(),
        };
        if attempt == 0 {
            check_fields(req, &av, pk, &mut patched)?;
        } else {
            super::openapi::prune_unknown(&av, pk, &mut patched).map_err(ApiError::BadRequest)?;
        }
        // Only a resourceVersion the patch itself sets is a precondition; otherwise the
        // patch is re-applied to the newer object when another write wins (as upstream).
        let pinned = patch_sets_resource_version(ptype, &req.body);
        if pinned && meta_str(&patched, "resourceVersion") != rev.to_string() {
            return Err(ApiError::conflict(t.res.group, t.res.plural, t.name()));
        }
        if meta_str(&patched, "name") != t.name() && !meta_str(&patched, "name").is_empty() {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                meta_str(&patched, "name"),
                t.name()
            )));
        }
        no_escalation(state, req, t, &patched)?;
        match apply_update(state, t, &old, rev, patched, dry_run(req), Some(&manager)).await {
            Ok(o) => {
                let o = match t.sub.as_deref() {
                    Some("scale") => to_scale(t.res, &o),
                    _ => o,
                };
                return Ok(json_response(200, &o));
            }
            Err(ApiError::Conflict { .. }) if !pinned && attempt < 4 => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::conflict(t.res.group, t.res.plural, t.name()))
}

/// Whether a patch body sets `metadata.resourceVersion` (making it a precondition).
fn patch_sets_resource_version(ptype: patch::PatchType, body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    match ptype {
        patch::PatchType::Json => v.as_array().is_some_and(|ops| {
            ops.iter()
                .any(|op| op["path"] == "/metadata/resourceVersion" && op["op"] != "test")
        }),
        _ => v["metadata"]["resourceVersion"].is_string(),
    }
}

/// DeleteOptions from the body and query.
struct DeleteOptions {
    grace: Option<i64>,
    propagation: Option<String>,
    precondition_uid: Option<String>,
    precondition_rv: Option<String>,
    dry_run: bool,
}

fn delete_options(req: &Req) -> Result<DeleteOptions, ApiError> {
    let is_protobuf = req
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/vnd.kubernetes.protobuf"));
    let body: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else if is_protobuf {
        protobuf::decode(&req.body)
            .map(|(_, _, v)| v)
            .map_err(|e| ApiError::BadRequest(format!("cannot decode DeleteOptions: {e}")))?
    } else {
        serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })?
    };
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "DeleteOptions must be an object".into(),
        ));
    }
    let grace = match req.param("gracePeriodSeconds") {
        Some(g) => Some(
            g.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid gracePeriodSeconds {g:?}")))?,
        ),
        None => body["gracePeriodSeconds"].as_i64(),
    };
    let propagation = req
        .param("propagationPolicy")
        .map(str::to_string)
        .or_else(|| body["propagationPolicy"].as_str().map(str::to_string))
        .or_else(|| {
            (body["orphanDependents"].as_bool() == Some(true)
                || req.param("orphanDependents") == Some("true"))
            .then(|| "Orphan".to_string())
        });
    if let Some(p) = &propagation
        && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "DeleteOptions",
            "",
            vec![Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                ),
                field: "propagationPolicy".into(),
            }],
        ));
    }
    let dry = req.param("dryRun") == Some("All")
        || body["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        grace,
        propagation,
        precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_string),
        precondition_rv: body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        dry_run: dry,
    })
}

async fn delete(state: &Arc<State>, req: &Req, t: &Target) -> ApiResult {
    let opts = delete_options(req)?;
    let (obj, rev) = current(state, t).await?;
    let out = delete_one(state, t, obj, rev, &opts).await?;
    Ok(json_response(200, &out))
}

async fn delete_one(
    state: &State,
    t: &Target,
    obj: Value,
    rev: i64,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let res = t.res;
    let name = t.name().to_string();
    if let Some(uid) = &opts.precondition_uid
        && uid != meta_str(&obj, "uid")
    {
        return Err(ApiError::conflict_msg(
            res.group,
            res.plural,
            &name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&obj, "uid")
            ),
        ));
    }
    if let Some(rv) = &opts.precondition_rv
        && *rv != rev.to_string()
    {
        return Err(ApiError::conflict_msg(
            res.group,
            res.plural,
            &name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {rev}"
            ),
        ));
    }
    let is_pod = res.group.is_empty() && res.kind == "Pod";
    let is_ns = res.group.is_empty() && res.kind == "Namespace";
    if is_ns && matches!(name.as_str(), "default" | "kube-system" | "kube-public") {
        return Err(ApiError::forbidden(
            "",
            "namespaces",
            &name,
            "this namespace may not be deleted",
        ));
    }
    let mut finalizers: Vec<Value> = obj["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match opts.propagation.as_deref() {
        Some("Foreground") if !finalizers.contains(&json!("foregroundDeletion")) => {
            finalizers.push(json!("foregroundDeletion"))
        }
        Some("Orphan") if !finalizers.contains(&json!("orphan")) => {
            finalizers.push(json!("orphan"))
        }
        _ => {}
    }
    let grace = if is_pod {
        let unscheduled = obj["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
        let finished = matches!(
            obj["status"]["phase"].as_str(),
            Some("Succeeded") | Some("Failed")
        );
        if unscheduled || finished {
            0
        } else {
            opts.grace
                .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30)
                .max(0)
        }
    } else {
        0
    };
    let ns_finalizing = is_ns
        && obj["spec"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
    let already = !obj["metadata"]["deletionTimestamp"].is_null();
    if !finalizers.is_empty() || grace > 0 || ns_finalizing {
        if already
            && !(is_pod
                && grace
                    < obj["metadata"]["deletionGracePeriodSeconds"]
                        .as_i64()
                        .unwrap_or(0))
        {
            // Already being deleted: nothing more to do.
            return Ok(obj);
        }
        let mut new = obj.clone();
        {
            let meta = meta_mut(&mut new);
            meta.insert("deletionTimestamp".into(), rfc3339_in(grace).into());
            meta.insert("deletionGracePeriodSeconds".into(), grace.into());
            if !finalizers.is_empty() {
                meta.insert("finalizers".into(), Value::Array(finalizers));
            }
        }
        if is_ns {
            new["status"]["phase"] = "Terminating".into();
        }
        if opts.dry_run {
            return Ok(new);
        }
        let k = key(res, t.ns(), &name);
        let new_rev = state
            .storage
            .update(&k, encode_as(res, &new), rev)
            .await
            .map_err(|e| storage_err(e, res, &name))?;
        meta_mut(&mut new).insert("resourceVersion".into(), new_rev.to_string().into());
        return Ok(new);
    }
    if !opts.dry_run {
        state
            .storage
            .delete(&key(res, t.ns(), &name), rev)
            .await
            .map_err(|e| storage_err(e, res, &name))?;
    }
    if is_pod || (res.group.is_empty() && res.kind == "Service") || is_ns {
        Ok(obj)
    } else {
        Ok(status::success(
            res.group,
            res.plural,
            &name,
            meta_str(&obj, "uid"),
        ))
    }
}

async fn delete_collection(state: &Arc<State>, req: &Req, t: &Target) -> ApiResult {
    let opts = delete_options(req)?;
    let sel = Selectors::from_req(req, t.res)?;
    let (items, revision, _, _) = read_list(state, req, t, &sel).await?;
    let mut deleted = Vec::new();
    for obj in items {
        let name = meta_str(&obj, "name").to_string();
        let ns = meta_str(&obj, "namespace").to_string();
        let rev = obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let one = Target {
            res: t.res,
            namespace: t.res.namespaced.then_some(ns),
            name: Some(name),
            sub: None,
        };
        match delete_one(state, &one, obj, rev, &opts).await {
            Ok(o) => deleted.push(o),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", t.res.kind),
            "apiVersion": t.res.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
            "items": deleted,
        }),
    ))
}

/// `pods/<name>/binding`: assigns a pod to a node, once.
async fn bind(state: &Arc<State>, req: &Req, t: &Target) -> ApiResult {
    let body = decode_body(req, "", "v1", "Binding")?;
    bind_pod(state, req, t.ns(), t.name(), &body).await
}

/// Binds pod `name` to the node a Binding names (`target.name`).
pub async fn bind_pod(state: &State, req: &Req, ns: &str, name: &str, body: &Value) -> ApiResult {
    let node = body["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() || name.is_empty() {
        let field = if name.is_empty() {
            "metadata.name"
        } else {
            "target.name"
        };
        return Err(ApiError::invalid(
            "",
            "Binding",
            name,
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: field.into(),
            }],
        ));
    }
    let pods = Target {
        res: resources::find("", "v1", "pods")
            .ok_or_else(|| ApiError::Internal("no pods resource".into()))?,
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
        sub: None,
    };
    let mut bound = false;
    for _ in 0..5 {
        let (pod, rev) = current(state, &pods).await?;
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            return Err(ApiError::conflict_msg(
                "",
                "pods",
                name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(n) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict_msg(
                "",
                "pods",
                name,
                &format!("pod {name} is already assigned to node {n:?}"),
            ));
        }
        let mut new = pod.clone();
        new["spec"]["nodeName"] = node.clone().into();
        let mut conds: Vec<Value> = new["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| c["type"] != "PodScheduled");
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
        new["status"]["conditions"] = Value::Array(conds);
        if dry_run(req) {
            bound = true;
            break;
        }
        match state
            .storage
            .update(&key(pods.res, ns, name), encode(&new), rev)
            .await
        {
            Ok(_) => {
                bound = true;
                break;
            }
            Err(StorageError::Conflict(_)) => continue,
            Err(e) => return Err(storage_err(e, pods.res, name)),
        }
    }
    if !bound {
        return Err(ApiError::conflict("", "pods", name));
    }
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Used by bootstrap: makes sure an object exists (created when missing).
pub async fn ensure_object(
    state: &State,
    res: &'static Resource,
    ns: &str,
    mut obj: Value,
) -> Result<(), ApiError> {
    let name = meta_str(&obj, "name").to_string();
    if state
        .storage
        .get(&key(res, ns, &name))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .is_some()
    {
        return Ok(());
    }
    match create_object(state, res, ns, &mut obj, false, Some("kube-apiserver")).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes an object as the server itself (no finalizers, no grace): for bootstrap objects
/// that must be replaced.
pub async fn delete_stored(state: &State, t: &Target) -> Result<(), ApiError> {
    let (_, rev) = current(state, t).await?;
    state
        .storage
        .delete(&key(t.res, t.ns(), t.name()), rev)
        .await
        .map_err(|e| storage_err(e, t.res, t.name()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "default/cm-9\u{0}");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "default/cm-9\u{0}".to_string())
        );
        assert!(decode_continue("garbage!").is_err());
    }

    #[test]
    fn targets_parse_like_upstream_urls() {
        let t = parse_target("", "v1", &["namespaces", "default", "pods", "x", "status"]).unwrap();
        assert_eq!(
            (t.res.plural, t.ns(), t.name(), t.sub.as_deref()),
            ("pods", "default", "x", Some("status"))
        );
        let t = parse_target("", "v1", &["namespaces", "kube-system"]).unwrap();
        assert_eq!((t.res.plural, t.name()), ("namespaces", "kube-system"));
        let t = parse_target("", "v1", &["namespaces", "x", "finalize"]).unwrap();
        assert_eq!(t.sub.as_deref(), Some("finalize"));
        assert!(parse_target("", "v1", &["pods", "x"]).is_none());
        assert!(parse_target("", "v1", &["nosuch"]).is_none());
        assert!(parse_target("", "v1", &["namespaces", "d", "configmaps", "x", "bogus"]).is_none());
        let t = parse_target("", "v1", &["namespaces", "d", "pods", "x", "log"]).unwrap();
        assert_eq!(t.sub.as_deref(), Some("log"));
        let t = parse_target("", "v1", &["nodes", "n", "proxy", "metrics", "cadvisor"]).unwrap();
        assert_eq!((t.name(), t.sub.as_deref()), ("n", Some("proxy")));
        assert!(parse_target("", "v1", &["nodes", "n", "status", "x"]).is_none());
    }

    #[test]
    fn stored_bytes_drop_resource_version_and_self_link_only() {
        let v = json!({"kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "7",
            "selfLink": "/x", "labels": {"k": "v"}}, "data": {"a": "b"}});
        let back: Value = serde_json::from_slice(&encode(&v)).unwrap();
        assert_eq!(
            back,
            json!({"kind": "ConfigMap", "metadata": {"name": "a", "labels": {"k": "v"}}, "data": {"a": "b"}})
        );
        let plain = json!({"metadata": {"name": "a"}, "spec": [1]});
        assert_eq!(
            serde_json::from_slice::<Value>(&encode(&plain)).unwrap(),
            plain
        );
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "c"}]})),
            "BestEffort"
        );
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
    }
}
