//! Authorization behind one trait. `AlwaysAllow` is the default (as MicroK8s); `RBAC` and
//! `Node` (src/apiserver/rbac.rs) join behind the same trait. Decides only; never reads or
//! writes storage itself.

use std::sync::Arc;

use super::authn::UserInfo;
use super::rbac::Cache;

/// Modes `--authorization-mode` accepts today.
pub const SUPPORTED_MODES: &[&str] = &["AlwaysAllow", "AlwaysDeny", "RBAC", "Node"];

/// What a request wants to do, as upstream's `authorizer.Attributes`.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub verb: String,
    pub namespace: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// The object's name, when the request names one.
    pub name: String,
    /// Set for non-resource requests (`/healthz`, `/api`…).
    pub path: String,
    pub resource_request: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// What a user may do in a namespace (`SelfSubjectRulesReview`).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub resource_rules: Vec<serde_json::Value>,
    pub non_resource_rules: Vec<serde_json::Value>,
    pub incomplete: bool,
}

pub trait Authorizer: Send + Sync {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision;
    fn rules(&self, user: &UserInfo, namespace: &str) -> Rules;
}

struct AlwaysAllow;
impl Authorizer for AlwaysAllow {
    fn authorize(&self, _: &UserInfo, _: &Attributes) -> Decision {
        Decision {
            allowed: true,
            reason: String::new(),
        }
    }
    fn rules(&self, _: &UserInfo, _: &str) -> Rules {
        Rules {
            resource_rules: vec![
                serde_json::json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
            ],
            non_resource_rules: vec![serde_json::json!({"verbs": ["*"], "nonResourceURLs": ["*"]})],
            incomplete: false,
        }
    }
}

struct AlwaysDeny;
impl Authorizer for AlwaysDeny {
    fn authorize(&self, _: &UserInfo, _: &Attributes) -> Decision {
        Decision {
            allowed: false,
            reason: "Everything is forbidden.".into(),
        }
    }
    fn rules(&self, _: &UserInfo, _: &str) -> Rules {
        Rules::default()
    }
}

/// Modes are tried in order; the first that allows wins (upstream's union authorizer, where
/// a mode that has no opinion passes to the next).
struct Union(Vec<Box<dyn Authorizer>>);
impl Authorizer for Union {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        let mut reasons = Vec::new();
        for a in &self.0 {
            let d = a.authorize(user, attrs);
            if d.allowed {
                return d;
            }
            if !d.reason.is_empty() {
                reasons.push(d.reason);
            }
        }
        Decision {
            allowed: false,
            reason: reasons.join(", "),
        }
    }
    fn rules(&self, user: &UserInfo, namespace: &str) -> Rules {
        let mut all = Rules::default();
        for a in &self.0 {
            let r = a.rules(user, namespace);
            all.resource_rules.extend(r.resource_rules);
            all.non_resource_rules.extend(r.non_resource_rules);
            all.incomplete |= r.incomplete;
        }
        all
    }
}

/// The authorizer for `--authorization-mode` (validated when flags are read); `RBAC` and
/// `Node` decide from `rbac`'s caches.
pub fn from_modes(modes: &[String], rbac: &Arc<Cache>) -> Box<dyn Authorizer> {
    let chain: Vec<Box<dyn Authorizer>> = modes
        .iter()
        .map(|m| -> Box<dyn Authorizer> {
            match m.as_str() {
                "AlwaysAllow" => Box::new(AlwaysAllow),
                "RBAC" => Box::new(super::rbac::Rbac(rbac.clone())),
                "Node" => Box::new(super::rbac::Node(rbac.clone())),
                _ => Box::new(AlwaysDeny),
            }
        })
        .collect();
    Box::new(Union(chain))
}

/// Upstream's forbidden text: `User "x" cannot list resource "pods" in API group "" in the
/// namespace "default"`.
pub fn forbidden_message(user: &UserInfo, a: &Attributes) -> String {
    if !a.resource_request {
        return format!(
            "User \"{}\" cannot {} path \"{}\"",
            user.name,
            a.verb.to_lowercase(),
            a.path
        );
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let mut m = format!(
        "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\"",
        user.name, a.verb, a.group
    );
    if a.namespace.is_empty() {
        m.push_str(" at the cluster scope");
    } else {
        m.push_str(&format!(" in the namespace \"{}\"", a.namespace));
    }
    m
}

/// Upstream's impersonation filter: `Impersonate-User`, `-Group`, `-Uid` and `-Extra-*`
/// headers make the request act as that user, once the requester may `impersonate` each
/// (users, groups, serviceaccounts, uids, userextras). Without the headers, `user` as is.
pub fn impersonate(
    authz: &dyn Authorizer,
    user: UserInfo,
    headers: &hyper::HeaderMap,
) -> Result<UserInfo, super::status::ApiError> {
    use super::status::ApiError;
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let target = values("impersonate-user").into_iter().next();
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid").into_iter().next();
    let mut extra = std::collections::BTreeMap::<String, Vec<String>>::new();
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix("impersonate-extra-")
            && let Ok(v) = v.to_str()
        {
            let key = percent_decode(key);
            extra.entry(key).or_default().push(v.to_string());
        }
    }
    let Some(target) = target else {
        if groups.is_empty() && uid.is_none() && extra.is_empty() {
            return Ok(user);
        }
        return Err(ApiError::BadRequest(
            "requested impersonation of groups, uid or extra without impersonating a user".into(),
        ));
    };
    let check = |attrs: Attributes, what: &str| -> Result<(), ApiError> {
        if authz.authorize(&user, &attrs).allowed {
            return Ok(());
        }
        let plural = if attrs.subresource.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        };
        Err(ApiError::forbidden(
            &attrs.group,
            &plural,
            what,
            &forbidden_message(&user, &attrs),
        ))
    };
    let ask = |resource: &str, group: &str, namespace: &str, name: &str| Attributes {
        verb: "impersonate".into(),
        namespace: namespace.into(),
        group: group.into(),
        resource: resource.into(),
        name: name.into(),
        resource_request: true,
        ..Default::default()
    };
    let mut new_groups = groups.clone();
    if let Some(sa) = target.strip_prefix("system:serviceaccount:")
        && let Some((ns, name)) = sa.split_once(':')
    {
        check(ask("serviceaccounts", "", ns, name), name)?;
        if groups.is_empty() {
            new_groups.push("system:serviceaccounts".into());
            new_groups.push(format!("system:serviceaccounts:{ns}"));
        }
    } else {
        check(ask("users", "", "", &target), &target)?;
    }
    for g in &groups {
        check(ask("groups", "", "", g), g)?;
    }
    if let Some(u) = &uid {
        check(ask("uids", "authentication.k8s.io", "", u), u)?;
    }
    for (k, vs) in &extra {
        for v in vs {
            let mut a = ask("userextras", "authentication.k8s.io", "", v);
            a.subresource = k.clone();
            check(a, v)?;
        }
    }
    if target != "system:anonymous" && !new_groups.iter().any(|g| g == "system:authenticated") {
        new_groups.push("system:authenticated".into());
    }
    Ok(UserInfo {
        name: target,
        uid: uid.unwrap_or_default(),
        groups: new_groups,
        extra,
    })
}

/// `%XX` escapes of an `Impersonate-Extra-` key.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(Ok(x)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16))
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Attributes from a SubjectAccessReview spec (`resourceAttributes` or
/// `nonResourceAttributes`).
pub fn attributes_from_review(spec: &serde_json::Value) -> Attributes {
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        Attributes {
            verb: s(r, "verb"),
            namespace: s(r, "namespace"),
            group: s(r, "group"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            name: s(r, "name"),
            path: String::new(),
            resource_request: true,
        }
    } else {
        let r = &spec["nonResourceAttributes"];
        Attributes {
            verb: s(r, "verb"),
            path: s(r, "path"),
            resource_request: false,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_text_matches_upstream() {
        let u = UserInfo {
            name: "bob".into(),
            uid: String::new(),
            groups: vec![],
            ..Default::default()
        };
        let a = Attributes {
            verb: "list".into(),
            namespace: "default".into(),
            resource: "pods".into(),
            resource_request: true,
            ..Default::default()
        };
        assert_eq!(
            forbidden_message(&u, &a),
            "User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let cache = Arc::new(Cache::default());
        let deny = from_modes(&["AlwaysDeny".into()], &cache);
        assert!(!deny.authorize(&u, &a).allowed);
        let allow = from_modes(&["AlwaysDeny".into(), "AlwaysAllow".into()], &cache);
        assert!(allow.authorize(&u, &a).allowed);
    }
}
