//! Discovery (`/api`, `/apis`, `/api/v1`, `/apis/<group>[/<version>]`, legacy and aggregated
//! v2) and the OpenAPI v3 documents kubectl reads before `apply`/`create -f`, all derived
//! from the resource table.

use serde_json::{Value, json};

use super::resources::{self, Resource};
use super::server::{Body, Req, bytes_response, json_response, not_found};
use hyper::Response;

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client's Accept prefers aggregated discovery v2.
fn wants_aggregated(req: &Req) -> bool {
    req.header("accept").is_some_and(|a| {
        a.split(',').next().is_some_and(|first| {
            let f = first.replace(' ', "");
            f.contains("as=APIGroupDiscoveryList") && f.contains("v=v2") && !f.contains("v=v2beta1")
        })
    })
}

fn resource_entry(r: &Resource) -> Value {
    let mut e = json!({
        "resource": r.plural,
        "singularResource": r.singular,
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        e["subresources"] = r
            .subresources
            .iter()
            .map(|s| {
                let (g, v, k) = r.sub_kind(s);
                json!({
                    "subresource": s,
                    "responseKind": {"group": g, "version": v, "kind": k},
                    "verbs": Resource::sub_verbs(s),
                })
            })
            .collect();
    }
    e
}

fn aggregated(groups: &[(&'static str, Vec<&'static str>)]) -> Response<Body> {
    let items: Vec<Value> = groups
        .iter()
        .map(|(g, versions)| {
            json!({
                "metadata": {"name": g, "creationTimestamp": null},
                "versions": versions.iter().map(|v| json!({
                    "version": v,
                    "freshness": "Current",
                    "resources": resources::in_group_version(g, v).map(resource_entry).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    });
    let mut b = serde_json::to_vec(&body).unwrap_or_default();
    b.push(b'\n');
    bytes_response(200, AGGREGATED_V2, b)
}

/// `/api`.
pub fn api(req: &Req, server_address: &str) -> Response<Body> {
    if wants_aggregated(req) {
        return aggregated(&[("", vec!["v1"])]);
    }
    json_response(
        200,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
        }),
    )
}

fn group_json(g: &str, versions: &[&str]) -> Value {
    let gv = |v: &str| json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({
        "name": g,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(versions.first().copied().unwrap_or("v1")),
    })
}

/// `/apis`.
pub fn apis(req: &Req) -> Response<Body> {
    let groups: Vec<_> = resources::groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .collect();
    if wants_aggregated(req) {
        return aggregated(&groups);
    }
    json_response(
        200,
        &json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": groups.iter().map(|(g, v)| group_json(g, v)).collect::<Vec<_>>(),
        }),
    )
}

/// `/apis/<group>`.
pub fn group(g: &str) -> Response<Body> {
    match resources::groups()
        .into_iter()
        .find(|(name, _)| *name == g && !g.is_empty())
    {
        Some((name, versions)) => {
            let mut v = group_json(name, &versions);
            v["kind"] = "APIGroup".into();
            v["apiVersion"] = "v1".into();
            json_response(200, &v)
        }
        None => not_found(),
    }
}

/// `/api/v1` or `/apis/<group>/<version>`: an `APIResourceList`.
pub fn resource_list(g: &str, v: &str) -> Response<Body> {
    let mut list = Vec::new();
    for r in resources::in_group_version(g, v) {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        list.push(e);
        for s in r.subresources {
            let (sg, sv, sk) = r.sub_kind(s);
            let mut e = json!({
                "name": format!("{}/{s}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": sk,
                "verbs": Resource::sub_verbs(s),
            });
            if sg != g || sv != v {
                e["group"] = sg.into();
                e["version"] = sv.into();
            }
            list.push(e);
        }
    }
    if list.is_empty() {
        return not_found();
    }
    let gv = if g.is_empty() {
        v.to_string()
    } else {
        format!("{g}/{v}")
    };
    json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    )
}

fn gv_key(g: &str, v: &str) -> String {
    if g.is_empty() {
        format!("api/{v}")
    } else {
        format!("apis/{g}/{v}")
    }
}

/// The OpenAPI v3 document of one group version: for each kind, the object paths with a
/// `patch` operation carrying its GVK and the `fieldValidation` parameter (which tells
/// kubectl the server validates fields), and a schema naming the kind.
fn openapi_gv_doc(g: &str, v: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let mut kinds = Vec::new();
    let mut any = false;
    for r in resources::in_group_version(g, v) {
        any = true;
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let prefix = if g.is_empty() {
            format!("/api/{v}")
        } else {
            format!("/apis/{g}/{v}")
        };
        let ns = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let schema_name = schema_name(r);
        let param = |n: &str| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let reference = json!({"$ref": format!("#/components/schemas/{schema_name}")});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        if !r.create_only {
            paths.insert(
                format!("{prefix}{ns}/{}/{{name}}", r.plural),
                json!({
                    "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk, "responses": ok},
                    "put": {"x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk,
                            "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                            "requestBody": {"content": {"application/json": {"schema": reference}}}, "responses": ok},
                    "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
                              "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation"), param("force")],
                              "requestBody": {"content": {
                                  "application/json-patch+json": {"schema": {"type": "object"}},
                                  "application/merge-patch+json": {"schema": {"type": "object"}},
                                  "application/apply-patch+yaml": {"schema": {"type": "object"}}}},
                              "responses": ok},
                    "delete": {"x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk, "responses": ok},
                }),
            );
        }
        paths.insert(
            format!("{prefix}{ns}/{}", r.plural),
            json!({
                "post": {"x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk,
                         "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                         "requestBody": {"content": {"application/json": {"schema": reference}}}, "responses": ok},
            }),
        );
        kinds.push((r.group, r.version, r.kind));
    }
    any.then(|| {
        json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": super::KUBE_GIT_VERSION},
            "paths": paths,
            "components": {"schemas": super::openapi::schemas(&kinds)},
        })
    })
}

/// Upstream's schema names (`io.k8s.api.core.v1.Pod`, `io.k8s.api.apps.v1.Deployment`).
fn schema_name(r: &Resource) -> String {
    super::openapi::schema_name(&format!(
        "{}.{}",
        super::protobuf::package(&r.api_version()),
        r.kind
    ))
}

fn hash(doc: &Value) -> String {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    format!("{:08X}", crc32fast::hash(&bytes))
}

/// Every group version's OpenAPI v3 document, serialised once: (`api/v1`, body, hash).
fn documents() -> &'static [(String, Vec<u8>, String)] {
    static DOCS: std::sync::OnceLock<Vec<(String, Vec<u8>, String)>> = std::sync::OnceLock::new();
    DOCS.get_or_init(|| {
        let mut out = Vec::new();
        for (g, versions) in resources::groups() {
            for v in versions {
                if let Some(doc) = openapi_gv_doc(g, v) {
                    let mut body = serde_json::to_vec(&doc).unwrap_or_default();
                    body.push(b'\n');
                    out.push((gv_key(g, v), body, hash(&doc)));
                }
            }
        }
        out
    })
}

/// `/openapi/v2` as JSON (Swagger 2.0: every kind's definition). kubectl asks for the
/// protobuf form only, and falls back to its built-in types when it is missing, so a
/// protobuf-only request is answered 404.
pub fn openapi_v2(req: &Req) -> Response<Body> {
    let accept = req.header("accept").unwrap_or("application/json");
    if !accept.contains("json") && !accept.contains("*/*") {
        return not_found();
    }
    static DOC: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(|| {
        let kinds: Vec<(&str, &str, &str)> = resources::RESOURCES
            .iter()
            .map(|r| (r.group, r.version, r.kind))
            .collect();
        let definitions = super::openapi::schemas(&kinds);
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": super::KUBE_GIT_VERSION},
            "paths": {},
            "definitions": definitions,
        });
        // Swagger 2.0 names its schemas `definitions`.
        let text = doc
            .to_string()
            .replace("#/components/schemas/", "#/definitions/");
        let mut b = text.into_bytes();
        b.push(b'\n');
        b
    });
    bytes_response(200, "application/json", body.clone())
}

/// `/openapi/v3`.
pub fn openapi_v3_root() -> Response<Body> {
    let mut paths = serde_json::Map::new();
    for (key, _, hash) in documents() {
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
        );
    }
    json_response(200, &json!({"paths": paths}))
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/<g>/<v>`.
pub fn openapi_v3_gv(rest: &str) -> Response<Body> {
    match documents().iter().find(|(key, _, _)| key == rest) {
        Some((_, body, _)) => bytes_response(200, "application/json", body.clone()),
        None => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_follow_upstream() {
        let name = |g, k| {
            schema_name(
                resources::RESOURCES
                    .iter()
                    .find(|r| r.group == g && r.kind == k)
                    .unwrap(),
            )
        };
        assert_eq!(name("", "Pod"), "io.k8s.api.core.v1.Pod");
        assert_eq!(name("apps", "Deployment"), "io.k8s.api.apps.v1.Deployment");
        assert_eq!(
            name("rbac.authorization.k8s.io", "Role"),
            "io.k8s.api.rbac.v1.Role"
        );
        assert_eq!(
            name("coordination.k8s.io", "Lease"),
            "io.k8s.api.coordination.v1.Lease"
        );
    }

    #[test]
    fn every_group_version_has_a_document() {
        for (g, versions) in resources::groups() {
            for v in versions {
                assert!(openapi_gv_doc(g, v).is_some());
            }
        }
    }
}
