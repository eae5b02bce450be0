//! OpenAPI v3 schemas of the served kinds, built from the protobuf field tables
//! ([`super::pbschema`]): properties, types and the API documentation `kubectl explain`
//! prints, named as upstream names them (`io.k8s.api.core.v1.Pod`).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::gofmt::json_type;
use super::pbschema::MESSAGES;
use super::protobuf::{Kind, message_index, package};

/// `api.core.v1.Pod` → `io.k8s.api.core.v1.Pod`.
pub fn schema_name(message: &str) -> String {
    format!("io.k8s.{message}")
}

fn reference(i: u16) -> Value {
    let name = MESSAGES
        .get(usize::from(i))
        .map(|m| schema_name(m.name))
        .unwrap_or_default();
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn property(kind: &Kind, repeated: bool, doc: &str) -> Value {
    let scalar = |t: &str, f: Option<&str>| {
        let mut v = json!({"type": t});
        if let Some(f) = f {
            v["format"] = f.into();
        }
        v
    };
    let item = match kind {
        Kind::Str => scalar("string", None),
        Kind::Bytes => scalar("string", Some("byte")),
        Kind::Bool => scalar("boolean", None),
        Kind::Int32 => scalar("integer", Some("int32")),
        Kind::Int64 => scalar("integer", Some("int64")),
        Kind::Msg(i) => json!({"allOf": [reference(*i)]}),
        Kind::MapStr => json!({"type": "object", "additionalProperties": {"type": "string"}}),
        Kind::MapBytes => {
            json!({"type": "object", "additionalProperties": {"type": "string", "format": "byte"}})
        }
        Kind::MapMsg(i) => {
            json!({"type": "object", "additionalProperties": {"allOf": [reference(*i)]}})
        }
    };
    let mut v = if repeated {
        let inner = match item.get("allOf") {
            Some(_) => item["allOf"][0].clone(),
            None => item,
        };
        json!({"type": "array", "items": inner})
    } else {
        item
    };
    if !doc.is_empty() {
        v["description"] = doc.into();
    }
    v
}

/// Types whose JSON form is a scalar, as upstream's OpenAPI describes them.
fn special(name: &str) -> Option<Value> {
    Some(match name {
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            json!({"type": "string", "format": "date-time"})
        }
        "apimachinery.pkg.api.resource.Quantity" => json!({"type": "string"}),
        "apimachinery.pkg.util.intstr.IntOrString" => {
            json!({"type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": true})
        }
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            json!({"type": "object"})
        }
        _ => return None,
    })
}

fn message_schema(i: usize) -> Value {
    let Some(m) = MESSAGES.get(i) else {
        return json!({"type": "object"});
    };
    let mut s = special(m.name).unwrap_or_else(|| {
        let mut props = Map::new();
        for f in m.fields {
            if f.inline {
                // Inline structs contribute their fields to this object.
                if let Kind::Msg(j) = f.kind
                    && let Some(inner) = MESSAGES.get(usize::from(j))
                {
                    for g in inner.fields {
                        props.insert(g.json.to_string(), property(&g.kind, g.repeated, g.doc));
                    }
                }
                continue;
            }
            props.insert(f.json.to_string(), property(&f.kind, f.repeated, f.doc));
        }
        json!({"type": "object", "properties": props})
    });
    if !m.doc.is_empty() {
        s["description"] = m.doc.into();
    }
    s
}

fn referenced(i: usize, seen: &mut BTreeSet<usize>) {
    if !seen.insert(i) {
        return;
    }
    let Some(m) = MESSAGES.get(i) else { return };
    for f in m.fields {
        if let Kind::Msg(j) | Kind::MapMsg(j) = f.kind {
            referenced(usize::from(j), seen);
        }
    }
}

/// `components.schemas` for the given kinds (group, version, kind) and everything they use.
pub fn schemas(kinds: &[(&str, &str, &str)]) -> Map<String, Value> {
    let mut seen = BTreeSet::new();
    let mut tops = Vec::new();
    for (g, v, k) in kinds {
        let api_version = if g.is_empty() {
            v.to_string()
        } else {
            format!("{g}/{v}")
        };
        if let Some(i) = message_index(&format!("{}.{k}", package(&api_version))) {
            referenced(i, &mut seen);
            tops.push((i, json!({"group": g, "version": v, "kind": k})));
        }
    }
    let mut out = Map::new();
    for i in &seen {
        if let Some(m) = MESSAGES.get(*i) {
            out.insert(schema_name(m.name), message_schema(*i));
        }
    }
    for (i, gvk) in tops {
        let Some(m) = MESSAGES.get(i) else { continue };
        if let Some(s) = out.get_mut(&schema_name(m.name)) {
            s["x-kubernetes-group-version-kind"] = json!([gvk]);
            if let Some(props) = s["properties"].as_object_mut() {
                props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values."}));
                props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase."}));
            }
        }
    }
    out
}

/// Removes the fields of `obj` its kind does not have (as decoding into upstream's Go types
/// drops them) and returns their paths (`spec.containers[0].foo`), for `fieldValidation`;
/// a value of the wrong JSON type is an error, as Go's decoding fails on it. Kinds without a
/// schema are left alone.
pub fn prune_unknown(
    api_version: &str,
    kind: &str,
    obj: &mut Value,
) -> Result<Vec<String>, String> {
    let mut unknown = Vec::new();
    if let Some(i) = message_index(&format!("{}.{kind}", package(api_version)))
        && let Some(map) = obj.as_object_mut()
    {
        prune_message(i, map, "", &mut unknown, 0, true)?;
    }
    Ok(unknown)
}

/// Nesting beyond which pruning stops (bodies are bounded; this bounds the recursion).
const MAX_PRUNE_DEPTH: usize = 64;

/// Whether a value has a kind's JSON shape (null stands for the zero value anywhere).
fn scalar_ok(kind: &Kind, v: &Value) -> bool {
    match (kind, v) {
        (_, Value::Null) => true,
        (Kind::Str | Kind::Bytes, Value::String(_)) => true,
        (Kind::Bool, Value::Bool(_)) => true,
        (Kind::Int32 | Kind::Int64, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (Kind::MapStr | Kind::MapBytes, Value::Object(m)) => {
            m.values().all(|x| x.is_string() || x.is_null())
        }
        _ => false,
    }
}

fn go_type(kind: &Kind) -> String {
    match kind {
        Kind::Str => "string".into(),
        Kind::Bytes => "[]uint8".into(),
        Kind::Bool => "bool".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::MapStr => "map[string]string".into(),
        Kind::MapBytes => "map[string][]uint8".into(),
        Kind::Msg(j) | Kind::MapMsg(j) => MESSAGES
            .get(usize::from(*j))
            .map(|m| {
                let mut parts = m.name.rsplitn(3, '.');
                let kind = parts.next().unwrap_or("");
                let version = parts.next().unwrap_or("");
                format!("{version}.{kind}")
            })
            .unwrap_or_default(),
    }
}

/// Whether a value may stand where a message of index `j` is expected.
fn message_ok(j: usize, v: &Value) -> bool {
    let name = MESSAGES.get(j).map(|m| m.name).unwrap_or("");
    match name {
        // Quantities and int-or-strings read numbers too.
        "apimachinery.pkg.api.resource.Quantity" | "apimachinery.pkg.util.intstr.IntOrString" => {
            v.is_string() || v.is_number() || v.is_null()
        }
        _ => match special(name) {
            Some(s) if s["type"] == "string" => v.is_string() || v.is_null(),
            Some(_) => true,
            None => v.is_object() || v.is_null(),
        },
    }
}

fn prune_message(
    i: usize,
    obj: &mut Map<String, Value>,
    path: &str,
    unknown: &mut Vec<String>,
    depth: usize,
    top: bool,
) -> Result<(), String> {
    let Some(m) = MESSAGES.get(i) else {
        return Ok(());
    };
    if depth > MAX_PRUNE_DEPTH || special(m.name).is_some() {
        return Ok(());
    }
    let field = |name: &str| {
        m.fields.iter().find_map(|f| {
            if f.json == name && !f.inline {
                return Some(f);
            }
            match (f.inline, &f.kind) {
                (true, Kind::Msg(j)) => MESSAGES
                    .get(usize::from(*j))
                    .and_then(|inner| inner.fields.iter().find(|g| g.json == name)),
                _ => None,
            }
        })
    };
    let owner = m.name.rsplit('.').next().unwrap_or(m.name);
    let keys: Vec<String> = obj.keys().cloned().collect();
    for k in keys {
        if top && (k == "apiVersion" || k == "kind") {
            continue;
        }
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        let Some(f) = field(&k) else {
            obj.remove(&k);
            unknown.push(p);
            continue;
        };
        let Some(v) = obj.get_mut(&k) else { continue };
        let wrong = |v: &Value, t: String| {
            format!(
                "json: cannot unmarshal {} into Go struct field {owner}.{p} of type {t}",
                json_type(v)
            )
        };
        if f.repeated && !(v.is_array() || v.is_null()) {
            return Err(wrong(v, format!("[]{}", go_type(&f.kind))));
        }
        match (&f.kind, f.repeated) {
            (Kind::Msg(j), false) => {
                let j = usize::from(*j);
                if !message_ok(j, v) {
                    return Err(wrong(v, go_type(&f.kind)));
                }
                if let Some(o) = v.as_object_mut() {
                    prune_message(j, o, &p, unknown, depth + 1, false)?;
                }
            }
            (Kind::Msg(j), true) => {
                let j = usize::from(*j);
                for (n, item) in v.as_array_mut().into_iter().flatten().enumerate() {
                    if !message_ok(j, item) {
                        return Err(wrong(item, go_type(&f.kind)));
                    }
                    if let Some(o) = item.as_object_mut() {
                        prune_message(j, o, &format!("{p}[{n}]"), unknown, depth + 1, false)?;
                    }
                }
            }
            (Kind::MapMsg(j), _) => {
                let j = usize::from(*j);
                if !(v.is_object() || v.is_null()) {
                    return Err(wrong(v, format!("map[string]{}", go_type(&f.kind))));
                }
                for (key, item) in v.as_object_mut().into_iter().flatten() {
                    if !message_ok(j, item) {
                        return Err(wrong(item, go_type(&f.kind)));
                    }
                    if let Some(o) = item.as_object_mut() {
                        prune_message(j, o, &format!("{p}.{key}"), unknown, depth + 1, false)?;
                    }
                }
            }
            (kind, true) => {
                for item in v.as_array().into_iter().flatten() {
                    if !scalar_ok(kind, item) {
                        return Err(wrong(item, go_type(kind)));
                    }
                }
            }
            (kind, false) => {
                if !scalar_ok(kind, v) {
                    return Err(wrong(v, go_type(kind)));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_schema_reaches_containers_and_metadata() {
        let s = schemas(&[("", "v1", "Pod")]);
        let pod = &s["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert!(
            pod["description"]
                .as_str()
                .unwrap()
                .starts_with("Pod is a collection")
        );
        assert!(pod["properties"]["spec"]["allOf"][0]["$ref"].is_string());
        let spec = &s["io.k8s.api.core.v1.PodSpec"];
        assert_eq!(spec["properties"]["containers"]["type"], "array");
        assert!(s.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert_eq!(
            s["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
            "int-or-string"
        );
        // Inline structs: a Volume has configMap directly.
        assert!(s["io.k8s.api.core.v1.Volume"]["properties"]["configMap"].is_object());
    }

    #[test]
    fn unknown_fields_are_removed_and_named() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "bogus": 1},
            "spec": {"replicas": 1, "replica": 2, "template": {"spec": {"containers": [
                {"name": "c", "image": "i", "imagePullPolicy": "Always", "imag": "typo",
                 "resources": {"limits": {"cpu": "1"}}}],
                "volumes": [{"name": "v", "configMap": {"name": "cm"}, "nope": {}}]}}}});
        let unknown = prune_unknown("apps/v1", "Deployment", &mut d).unwrap();
        assert_eq!(
            unknown,
            [
                "metadata.bogus",
                "spec.replica",
                "spec.template.spec.containers[0].imag",
                "spec.template.spec.volumes[0].nope"
            ]
        );
        assert!(d["spec"].get("replica").is_none());
        assert_eq!(
            d["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
            "cm"
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
        let mut cm = json!({"data": {"a": "b"}, "extra": true});
        assert_eq!(
            prune_unknown("v1", "ConfigMap", &mut cm).unwrap(),
            ["extra"]
        );
        let mut bad = json!({"spec": "x"});
        assert_eq!(
            prune_unknown("batch/v1", "Job", &mut bad).unwrap_err(),
            "json: cannot unmarshal string into Go struct field Job.spec of type v1.JobSpec"
        );
        let mut bad = json!({"spec": {"containers": ["x"]}});
        assert!(prune_unknown("v1", "Pod", &mut bad).is_err());
        let mut bad = json!({"spec": {"replicas": "3"}});
        assert!(prune_unknown("apps/v1", "Deployment", &mut bad).is_err());
        let mut ok = json!({"spec": {"template": {"spec": {"containers": [{"name": "c",
            "resources": {"limits": {"cpu": 1}}, "ports": [{"containerPort": 80}],
            "livenessProbe": {"httpGet": {"port": "http"}}}]}}}});
        assert!(prune_unknown("apps/v1", "Deployment", &mut ok).is_ok());
    }
}
