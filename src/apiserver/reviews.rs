//! Create-only review resources, answered from the active authenticator and authorizer and
//! never stored: TokenReview, SelfSubjectReview, (Self|Local)SubjectAccessReview,
//! SelfSubjectRulesReview, and the namespaced `bindings` collection.

use std::sync::Arc;

use hyper::Response;
use serde_json::{Value, json};

use super::authn::{Credentials, UserInfo};
use super::authz::attributes_from_review;
use super::registry::{ApiResult, Target, decode_body};
use super::server::{Body, Req, State, json_response};
use super::status::{ApiError, Cause};

fn created(v: Value) -> Response<Body> {
    json_response(201, &v)
}

pub async fn create(state: &Arc<State>, req: &Req, t: &Target) -> ApiResult {
    let r = t.res;
    let mut obj = decode_body(req, r.group, r.version, r.kind)?;
    let spec = obj["spec"].clone();
    match r.kind {
        "SelfSubjectReview" => {
            obj["status"] = json!({"userInfo": req.user.to_json()});
            Ok(created(obj))
        }
        "TokenReview" => {
            let token = spec["token"].as_str().unwrap_or("");
            if token.is_empty() {
                return Err(ApiError::invalid(
                    r.group,
                    r.kind,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: token is required".into(),
                        field: "spec.token".into(),
                    }],
                ));
            }
            let header = format!("Bearer {token}");
            let api_audiences = state
                .sa_tokens
                .as_ref()
                .map(|t| t.api_audiences())
                .unwrap_or_default();
            let requested =
                super::tokens::requested_audiences(&spec).unwrap_or_else(|| api_audiences.clone());
            // Static tokens are the API server's: good only where its audiences are asked for.
            let static_user = state
                .authn
                .authenticate(&Credentials {
                    authorization: Some(&header),
                    peer: None,
                    headers: None,
                })
                .map(|u| {
                    let granted: Vec<String> = requested
                        .iter()
                        .filter(|a| api_audiences.is_empty() || api_audiences.contains(a))
                        .cloned()
                        .collect();
                    (u, granted)
                })
                .filter(|(_, granted)| !granted.is_empty());
            let user = match static_user {
                Some(found) => Some(found),
                None => super::tokens::authenticate_for(state, token, &requested).await,
            };
            obj["status"] = match user {
                Some((u, granted)) => {
                    json!({"authenticated": true, "user": u.to_json(), "audiences": granted})
                }
                None => {
                    json!({"authenticated": false, "user": {}, "error": "invalid bearer token"})
                }
            };
            Ok(created(obj))
        }
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let user = if r.kind == "SelfSubjectAccessReview" {
                req.user.clone()
            } else {
                let name = spec["user"].as_str().unwrap_or("").to_string();
                let groups: Vec<String> = spec["groups"]
                    .as_array()
                    .map(|g| {
                        g.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if name.is_empty() && groups.is_empty() {
                    return Err(ApiError::invalid(
                        r.group,
                        r.kind,
                        "",
                        vec![Cause {
                            reason: "FieldValueRequired".into(),
                            message:
                                "Required value: at least one of user or group must be specified"
                                    .into(),
                            field: "spec.user".into(),
                        }],
                    ));
                }
                UserInfo {
                    name,
                    uid: spec["uid"].as_str().unwrap_or("").to_string(),
                    groups,
                    ..Default::default()
                }
            };
            let has_res = spec["resourceAttributes"].is_object();
            let has_non = spec["nonResourceAttributes"].is_object();
            if has_res == has_non {
                return Err(ApiError::invalid(r.group, r.kind, "", vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
                    field: "spec.resourceAttributes".into(),
                }]));
            }
            let mut attrs = attributes_from_review(&spec);
            if r.kind == "LocalSubjectAccessReview" {
                if attrs.namespace != t.namespace.clone().unwrap_or_default() {
                    return Err(ApiError::BadRequest(format!(
                        "spec.resourceAttributes.namespace must match namespace: {}",
                        t.namespace.clone().unwrap_or_default()
                    )));
                }
                attrs.namespace = t.namespace.clone().unwrap_or_default();
            }
            let d = state.authz.authorize(&user, &attrs);
            let mut status = json!({"allowed": d.allowed});
            if !d.reason.is_empty() {
                status["reason"] = d.reason.into();
            }
            obj["status"] = status;
            Ok(created(obj))
        }
        "SelfSubjectRulesReview" => {
            let ns = spec["namespace"].as_str().unwrap_or("");
            let rules = state.authz.rules(&req.user, ns);
            obj["status"] = json!({
                "resourceRules": rules.resource_rules,
                "nonResourceRules": rules.non_resource_rules,
                "incomplete": rules.incomplete,
            });
            Ok(created(obj))
        }
        "Binding" => {
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            super::registry::bind_pod(
                state,
                req,
                t.namespace.as_deref().unwrap_or(""),
                &name,
                &obj,
            )
            .await
        }
        other => Err(ApiError::MethodNotAllowed(format!(
            "{other} cannot be created here"
        ))),
    }
}
