//! Authorization behind one trait. `AlwaysAllow` is the default (as MicroK8s); the RBAC and
//! Node authorizers join behind the same trait in their own issue. Decides only; never
//! reads or writes storage itself.

use super::authn::UserInfo;

/// Modes `--authorization-mode` accepts today.
pub const SUPPORTED_MODES: &[&str] = &["AlwaysAllow", "AlwaysDeny"];

/// What a request wants to do, as upstream's `authorizer.Attributes`.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub verb: String,
    pub namespace: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
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

/// The authorizer for `--authorization-mode` (validated when flags are read).
pub fn from_modes(modes: &[String]) -> Box<dyn Authorizer> {
    let chain: Vec<Box<dyn Authorizer>> = modes
        .iter()
        .map(|m| -> Box<dyn Authorizer> {
            match m.as_str() {
                "AlwaysAllow" => Box::new(AlwaysAllow),
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
        let deny = from_modes(&["AlwaysDeny".into()]);
        assert!(!deny.authorize(&u, &a).allowed);
        let allow = from_modes(&["AlwaysDeny".into(), "AlwaysAllow".into()]);
        assert!(allow.authorize(&u, &a).allowed);
    }
}
