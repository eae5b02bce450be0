//! The RBAC and Node authorizers (`--authorization-mode=RBAC,Node`), upstream's bootstrap
//! policy (`rbac_policy.yaml`, created at start), and the escalation check on writes of roles
//! and bindings. Decisions are answered from watch-fed caches of Roles, ClusterRoles,
//! RoleBindings, ClusterRoleBindings and (for Node) pods; nothing here writes objects except
//! the bootstrap policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::admission::WatchedMap;
use super::authn::UserInfo;
use super::authz::{Attributes, Authorizer, Decision, Rules};
use super::server::State;
use super::status::ApiError;

/// One rule of a Role or ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Subject {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// A RoleBinding or ClusterRoleBinding, reduced to what decisions read.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    pub namespace: String,
    pub name: String,
    /// `Role` or `ClusterRole`.
    pub role_kind: String,
    pub role: String,
    pub subjects: Vec<Subject>,
}

type RuleSet = Arc<Vec<PolicyRule>>;

fn rules_of(role: &Value) -> RuleSet {
    Arc::new(serde_json::from_value(role["rules"].clone()).unwrap_or_default())
}

fn binding_of(b: &Value) -> Arc<Binding> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Arc::new(Binding {
        namespace: s(&b["metadata"]["namespace"]),
        name: s(&b["metadata"]["name"]),
        role_kind: s(&b["roleRef"]["kind"]),
        role: s(&b["roleRef"]["name"]),
        subjects: serde_json::from_value(b["subjects"].clone()).unwrap_or_default(),
    })
}

/// What a node's pods use: (node, namespace, service account, secrets, configmaps, claims).
#[derive(Debug, Clone, Default)]
pub struct PodRefs {
    node: String,
    namespace: String,
    service_account: String,
    secrets: Vec<String>,
    configmaps: Vec<String>,
    claims: Vec<String>,
}

fn pod_refs(pod: &Value) -> PodRefs {
    let mut r = PodRefs {
        node: pod["spec"]["nodeName"].as_str().unwrap_or_default().into(),
        namespace: pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .into(),
        service_account: pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .into(),
        ..Default::default()
    };
    if r.node.is_empty() {
        return r;
    }
    let add = |list: &mut Vec<String>, v: &Value| {
        if let Some(n) = v.as_str() {
            list.push(n.to_string());
        }
    };
    for s in pod["spec"]["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
    {
        add(&mut r.secrets, &s["name"]);
    }
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        add(&mut r.secrets, &v["secret"]["secretName"]);
        add(&mut r.configmaps, &v["configMap"]["name"]);
        add(&mut r.claims, &v["persistentVolumeClaim"]["claimName"]);
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(&mut r.secrets, &s["secret"]["name"]);
            add(&mut r.configmaps, &s["configMap"]["name"]);
        }
    }
    for kind in ["initContainers", "containers", "ephemeralContainers"] {
        for c in pod["spec"][kind].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                add(&mut r.secrets, &e["valueFrom"]["secretKeyRef"]["name"]);
                add(
                    &mut r.configmaps,
                    &e["valueFrom"]["configMapKeyRef"]["name"],
                );
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add(&mut r.secrets, &e["secretRef"]["name"]);
                add(&mut r.configmaps, &e["configMapRef"]["name"]);
            }
        }
    }
    r
}

/// The objects RBAC and Node decide from, each kept by a list and a watch.
pub struct Cache {
    cluster_roles: WatchedMap<RuleSet>,
    /// Keyed `namespace/name`.
    roles: WatchedMap<RuleSet>,
    cluster_bindings: WatchedMap<Arc<Binding>>,
    /// Keyed `namespace/name`.
    bindings: WatchedMap<Arc<Binding>>,
    pods: WatchedMap<Arc<PodRefs>>,
    /// (user, groups, namespace) → the bindings that name the user there, with their roles'
    /// rules, valid while the maps' generations add up to the same number. A request then
    /// looks at its user's few bindings, not at every binding in the namespace.
    applicable: parking_lot::Mutex<HashMap<UserKey, (u64, Applicable)>>,
}

type UserKey = (String, Vec<String>, String);
type Applicable = Arc<Vec<(Arc<Binding>, RuleSet)>>;
/// Past this many (user, namespace) pairs the derived cache starts over.
const APPLICABLE_MAX: usize = 4096;

impl Default for Cache {
    fn default() -> Self {
        Cache {
            cluster_roles: WatchedMap::new("/registry/clusterroles/", rules_of),
            roles: WatchedMap::new("/registry/roles/", rules_of),
            cluster_bindings: WatchedMap::new("/registry/clusterrolebindings/", binding_of),
            bindings: WatchedMap::new("/registry/rolebindings/", binding_of),
            pods: WatchedMap::new("/registry/pods/", |p| Arc::new(pod_refs(p))),
            applicable: Default::default(),
        }
    }
}

impl Cache {
    /// Follows the store for the life of the server (pods only when the Node mode is on).
    pub async fn run(&self, state: &State, with_pods: bool) {
        let pods = async {
            if with_pods {
                self.pods.run(state).await
            }
        };
        tokio::join!(
            self.cluster_roles.run(state),
            self.roles.run(state),
            self.cluster_bindings.run(state),
            self.bindings.run(state),
            pods,
        );
    }

    /// Whether every RBAC map holds a whole list (the server is not ready before).
    pub fn synced(&self) -> bool {
        self.cluster_roles.synced()
            && self.roles.synced()
            && self.cluster_bindings.synced()
            && self.bindings.synced()
    }

    fn role_rules(&self, b: &Binding) -> Option<RuleSet> {
        match b.role_kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&b.role),
            "Role" => self.roles.get(&format!("{}/{}", b.namespace, b.role)),
            _ => None,
        }
    }

    fn generation(&self) -> u64 {
        self.cluster_roles.generation()
            + self.roles.generation()
            + self.cluster_bindings.generation()
            + self.bindings.generation()
    }

    /// The bindings that name `user` (cluster-wide ones, then `namespace`'s) with their rules.
    fn applicable(&self, user: &UserInfo, namespace: &str) -> Applicable {
        // Read first: a change while this computes leaves the entry stale, never wrongly fresh.
        let generation = self.generation();
        let key = (
            user.name.clone(),
            user.groups.clone(),
            namespace.to_string(),
        );
        if let Some((g, list)) = self.applicable.lock().get(&key)
            && *g == generation
        {
            return list.clone();
        }
        let mut list = Vec::new();
        let mut take = |b: &Arc<Binding>| {
            if applies(b, user)
                && let Some(rules) = self.role_rules(b)
            {
                list.push((b.clone(), rules));
            }
            None::<()>
        };
        self.cluster_bindings.find_map(|_, b| take(b));
        if !namespace.is_empty() {
            let prefix = format!("{namespace}/");
            self.bindings
                .find_map(|key, b| key.starts_with(&prefix).then(|| take(b)).flatten());
        }
        let list = Arc::new(list);
        let mut cache = self.applicable.lock();
        if cache.len() >= APPLICABLE_MAX {
            cache.clear();
        }
        cache.insert(key, (generation, list.clone()));
        list
    }

    /// Visits the rules that apply to `user` in `namespace` (cluster-wide bindings, then the
    /// namespace's), until `f` gives an answer.
    fn visit<R>(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut f: impl FnMut(&Binding, &[PolicyRule]) -> Option<R>,
    ) -> Option<R> {
        self.applicable(user, namespace)
            .iter()
            .find_map(|(b, rules)| f(b, rules))
    }

    /// Every rule that applies to `user` in `namespace`.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut all = Vec::new();
        self.visit::<()>(user, namespace, |_, rules| {
            all.extend(rules.iter().cloned());
            None
        });
        all
    }
}

/// Whether a binding names `user`: as a User, through one of its groups, or as its service
/// account.
fn applies(b: &Binding, user: &UserInfo) -> bool {
    b.subjects
        .iter()
        .any(|s| subject_applies(s, &b.namespace, user))
}

/// A service account subject without a namespace means the binding's own.
fn subject_applies(s: &Subject, binding_ns: &str, user: &UserInfo) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = if s.namespace.is_empty() {
                binding_ns
            } else {
                &s.namespace
            };
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

/// Upstream's `RuleAllows`: verbs, groups, `resource/subresource` (or `*/subresource`),
/// resource names; or verbs and non-resource URLs (a trailing `*` is a prefix).
pub fn rule_allows(a: &Attributes, r: &PolicyRule) -> bool {
    if !has(&r.verbs, &a.verb) {
        return false;
    }
    if !a.resource_request {
        return r.non_resource_urls.iter().any(|u| {
            u == "*" || *u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
        });
    }
    if !has(&r.api_groups, &a.group) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = r.resources.iter().any(|x| {
        x == "*"
            || *x == combined
            || (!a.subresource.is_empty() && *x == format!("*/{}", a.subresource))
    });
    resource_ok
        && (r.resource_names.is_empty()
            || (!a.name.is_empty() && r.resource_names.contains(&a.name)))
}

/// The RBAC mode of `--authorization-mode`.
pub struct Rbac(pub Arc<Cache>);

impl Authorizer for Rbac {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        let found = self.0.visit(user, &attrs.namespace, |b, rules| {
            rules.iter().any(|r| rule_allows(attrs, r)).then(|| {
                let subject = b
                    .subjects
                    .iter()
                    .find(|s| subject_applies(s, &b.namespace, user))
                    .map(|s| format!("{} {:?}", s.kind, s.name))
                    .unwrap_or_default();
                let binding = if b.namespace.is_empty() {
                    format!("ClusterRoleBinding {:?}", b.name)
                } else {
                    format!("RoleBinding \"{}/{}\"", b.name, b.namespace)
                };
                format!(
                    "RBAC: allowed by {binding} of {} {:?} to {subject}",
                    b.role_kind, b.role
                )
            })
        });
        match found {
            Some(reason) => Decision {
                allowed: true,
                reason,
            },
            None => Decision {
                allowed: false,
                reason: String::new(),
            },
        }
    }

    fn rules(&self, user: &UserInfo, namespace: &str) -> Rules {
        let mut out = Rules::default();
        for r in self.0.rules_for(user, namespace) {
            if r.non_resource_urls.is_empty() {
                out.resource_rules.push(json!({
                    "verbs": r.verbs, "apiGroups": r.api_groups,
                    "resources": r.resources, "resourceNames": r.resource_names,
                }));
            } else {
                out.non_resource_rules
                    .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
            }
        }
        out
    }
}

/// The Node mode: a kubelet (`system:node:<name>` in `system:nodes`) may do what upstream's
/// node rules allow, but read only the secrets, configmaps and claims of pods bound to it,
/// request tokens only for their service accounts, and write only its own Node and Lease.
pub struct Node(pub Arc<Cache>);

impl Node {
    fn policy() -> &'static [PolicyRule] {
        static RULES: std::sync::OnceLock<Vec<PolicyRule>> = std::sync::OnceLock::new();
        RULES.get_or_init(|| {
            policy()
                .ok()
                .and_then(|p| {
                    p.cluster_roles
                        .into_iter()
                        .find(|r| r.name == "system:node")
                })
                .map(|r| r.rules)
                .unwrap_or_default()
        })
    }

    /// Whether a pod bound to `node` in `namespace` satisfies `uses`.
    fn pod_uses(&self, node: &str, namespace: &str, uses: impl Fn(&PodRefs) -> bool) -> bool {
        self.0
            .pods
            .find_map(|_, p| (p.node == node && p.namespace == namespace && uses(p)).then_some(()))
            .is_some()
    }
}

impl Authorizer for Node {
    fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        let no = Decision {
            allowed: false,
            reason: String::new(),
        };
        let Some(node) = user.name.strip_prefix("system:node:") else {
            return no;
        };
        if !user.groups.iter().any(|g| g == "system:nodes") {
            return no;
        }
        let denied = |why: String| Decision {
            allowed: false,
            reason: why,
        };
        if a.resource_request && a.group.is_empty() {
            let graph_read = |what: &str, pick: fn(&PodRefs) -> &Vec<String>| {
                // A list or watch of one object carries its name (field selector).
                if !matches!(a.verb.as_str(), "get" | "list" | "watch") || a.name.is_empty() {
                    return denied(format!("can only read individual {what}"));
                }
                let allowed = self.pod_uses(node, &a.namespace, |p| pick(p).contains(&a.name));
                Decision {
                    allowed,
                    reason: if allowed {
                        String::new()
                    } else {
                        format!("no relationship found between node '{node}' and this object")
                    },
                }
            };
            match (a.resource.as_str(), a.subresource.as_str()) {
                ("secrets", "") => return graph_read("resources", |p| &p.secrets),
                ("configmaps", "") => return graph_read("resources", |p| &p.configmaps),
                ("persistentvolumeclaims", "") => return graph_read("resources", |p| &p.claims),
                ("serviceaccounts", "token") => {
                    let allowed = a.verb == "create"
                        && self.pod_uses(node, &a.namespace, |p| p.service_account == a.name);
                    return Decision {
                        allowed,
                        reason: if allowed {
                            String::new()
                        } else {
                            format!("no relationship found between node '{node}' and this object")
                        },
                    };
                }
                ("nodes", _)
                    if matches!(a.verb.as_str(), "update" | "patch" | "delete")
                        && a.name != node =>
                {
                    return denied(format!("node '{node}' cannot modify node '{}'", a.name));
                }
                _ => {}
            }
        }
        if a.resource_request
            && a.group == "coordination.k8s.io"
            && a.resource == "leases"
            && a.verb != "create"
            && (a.namespace != "kube-node-lease" || a.name != node)
        {
            return denied(
                "can only access node lease with the same name as the requesting node".into(),
            );
        }
        if Self::policy().iter().any(|r| rule_allows(a, r)) {
            Decision {
                allowed: true,
                reason: String::new(),
            }
        } else {
            no
        }
    }

    fn rules(&self, _: &UserInfo, _: &str) -> Rules {
        // Upstream's Node authorizer lists no rules either.
        Rules {
            incomplete: true,
            ..Default::default()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bootstrap policy.

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Policy {
    cluster_roles: Vec<PolicyRole>,
    cluster_role_bindings: Vec<PolicyBinding>,
    roles: Vec<PolicyRole>,
    role_bindings: Vec<PolicyBinding>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyRole {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    rules: Vec<PolicyRule>,
    /// A label: the role aggregates the ClusterRoles that carry it set to "true".
    #[serde(default)]
    aggregate_from: Option<String>,
    /// Bound to the service account of the same name in kube-system (the role name after
    /// `system:controller:`).
    #[serde(default)]
    controller_account: bool,
}

#[derive(Debug, Deserialize)]
struct PolicySubject {
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PolicyBinding {
    name: String,
    #[serde(default)]
    namespace: String,
    role: String,
    subjects: Vec<PolicySubject>,
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const EVENTS: &[&str] = &["create", "patch", "update"];

fn policy() -> Result<Policy, String> {
    let mut p: Policy = serde_saphyr::from_str(include_str!("rbac_policy.yaml"))
        .map_err(|e| format!("rbac_policy.yaml: {e}"))?;
    for role in p.cluster_roles.iter_mut().chain(p.roles.iter_mut()) {
        let mut expanded = Vec::new();
        for mut r in std::mem::take(&mut role.rules) {
            let mut verbs = Vec::new();
            let mut events = false;
            for v in &r.verbs {
                match v.as_str() {
                    "READ" => verbs.extend(READ.iter().map(|s| s.to_string())),
                    "WRITE" => verbs.extend(WRITE.iter().map(|s| s.to_string())),
                    "EVENTS" => {
                        events = true;
                        verbs.extend(EVENTS.iter().map(|s| s.to_string()));
                    }
                    v => verbs.push(v.to_string()),
                }
            }
            r.verbs = verbs;
            expanded.push(r.clone());
            if events {
                r.api_groups = vec!["events.k8s.io".into()];
                expanded.push(r);
            }
        }
        role.rules = expanded;
    }
    Ok(p)
}

fn bootstrap_meta(name: &str, namespace: &str, labels: &BTreeMap<String, String>) -> Value {
    let mut labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    labels.insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    let mut meta = json!({
        "name": name, "labels": labels,
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    });
    if !namespace.is_empty() {
        meta["namespace"] = namespace.into();
    }
    meta
}

fn subjects_json(subjects: &[PolicySubject]) -> Value {
    subjects
        .iter()
        .map(|s| {
            if s.kind == "ServiceAccount" {
                json!({"kind": s.kind, "name": s.name, "namespace": s.namespace})
            } else {
                json!({"kind": s.kind, "name": s.name, "apiGroup": "rbac.authorization.k8s.io"})
            }
        })
        .collect()
}

/// Every object of the bootstrap policy: (resource plural, namespace, object).
fn policy_objects() -> Result<Vec<(&'static str, String, Value)>, String> {
    let p = policy()?;
    let api = "rbac.authorization.k8s.io/v1";
    let mut out = Vec::new();
    let role_ref = |kind: &str, name: &str| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name});
    for r in &p.cluster_roles {
        let mut obj = json!({
            "apiVersion": api, "kind": "ClusterRole",
            "metadata": bootstrap_meta(&r.name, "", &r.labels), "rules": r.rules,
        });
        if let Some(label) = &r.aggregate_from {
            obj["aggregationRule"] =
                json!({"clusterRoleSelectors": [{"matchLabels": {label.as_str(): "true"}}]});
        }
        out.push(("clusterroles", String::new(), obj));
        if r.controller_account {
            let account = r.name.trim_start_matches("system:controller:");
            out.push((
                "clusterrolebindings",
                String::new(),
                json!({
                    "apiVersion": api, "kind": "ClusterRoleBinding",
                    "metadata": bootstrap_meta(&r.name, "", &BTreeMap::new()),
                    "roleRef": role_ref("ClusterRole", &r.name),
                    "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "kube-system"}],
                }),
            ));
        }
    }
    for b in &p.cluster_role_bindings {
        out.push((
            "clusterrolebindings",
            String::new(),
            json!({
                "apiVersion": api, "kind": "ClusterRoleBinding",
                "metadata": bootstrap_meta(&b.name, "", &BTreeMap::new()),
                "roleRef": role_ref("ClusterRole", &b.role), "subjects": subjects_json(&b.subjects),
            }),
        ));
    }
    for r in &p.roles {
        out.push((
            "roles",
            r.namespace.clone(),
            json!({
                "apiVersion": api, "kind": "Role",
                "metadata": bootstrap_meta(&r.name, &r.namespace, &r.labels), "rules": r.rules,
            }),
        ));
    }
    for b in &p.role_bindings {
        out.push((
            "rolebindings",
            b.namespace.clone(),
            json!({
                "apiVersion": api, "kind": "RoleBinding",
                "metadata": bootstrap_meta(&b.name, &b.namespace, &BTreeMap::new()),
                "roleRef": role_ref("Role", &b.role), "subjects": subjects_json(&b.subjects),
            }),
        ));
    }
    Ok(out)
}

/// Creates the bootstrap roles and bindings that are missing (upstream's
/// `rbac/bootstrap-roles` hook). Existing ones are left as they are.
pub async fn ensure_policy(state: &State) -> Result<(), ApiError> {
    for (plural, ns, obj) in policy_objects().map_err(ApiError::Internal)? {
        let res = super::resources::find("rbac.authorization.k8s.io", "v1", plural)
            .ok_or_else(|| ApiError::Internal(format!("no {plural} resource")))?;
        let t = super::registry::Target {
            res,
            namespace: (!ns.is_empty()).then(|| ns.clone()),
            name: Some(super::registry::meta_str(&obj, "name").to_string()),
            sub: None,
        };
        let (existing, rev) = match super::registry::current(state, &t).await {
            Ok(found) => found,
            Err(ApiError::NotFound { .. }) => {
                super::registry::ensure_object(state, res, &ns, obj).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        match reconciled(&existing, &obj) {
            Reconciled::Unchanged => {}
            Reconciled::Update(merged) => {
                // Warned: the server changes objects a user may have edited on purpose.
                tracing::warn!(
                    "reconciling {plural} {}: adding what upstream's bootstrap policy holds",
                    super::registry::meta_str(&obj, "name")
                );
                super::registry::apply_update(
                    state,
                    &t,
                    &existing,
                    rev,
                    merged,
                    false,
                    Some("kube-apiserver"),
                )
                .await?;
            }
            Reconciled::Recreate => {
                // A binding's roleRef cannot change: it is replaced, as upstream does.
                tracing::warn!(
                    "recreating {plural} {}: its roleRef differs from the bootstrap policy",
                    super::registry::meta_str(&obj, "name")
                );
                super::registry::delete_stored(state, &t).await?;
                super::registry::ensure_object(state, res, &ns, obj).await?;
            }
        }
    }
    Ok(())
}

/// What starting the API server does to an existing bootstrap role or binding.
#[derive(Debug, PartialEq)]
enum Reconciled {
    Unchanged,
    Update(Value),
    Recreate,
}

/// Upstream's reconciliation of bootstrap policy (`auth reconcile` without
/// `--remove-extra-permissions/-subjects`): unless annotated
/// `rbac.authorization.kubernetes.io/autoupdate: "false"`, an existing object gains the
/// policy's missing labels, annotations, rules (or aggregation selectors) and subjects, and
/// keeps whatever was added to it.
fn reconciled(existing: &Value, desired: &Value) -> Reconciled {
    let meta = &existing["metadata"];
    if meta["annotations"]["rbac.authorization.kubernetes.io/autoupdate"].as_str() == Some("false")
    {
        return Reconciled::Unchanged;
    }
    if desired.get("roleRef").is_some() && existing["roleRef"] != desired["roleRef"] {
        return Reconciled::Recreate;
    }
    let mut out = existing.clone();
    let mut changed = false;
    for field in ["labels", "annotations"] {
        if let Some(want) = desired["metadata"][field].as_object() {
            let have = &mut out["metadata"][field];
            if !have.is_object() {
                *have = json!({});
            }
            for (k, v) in want {
                if have.get(k).is_none() {
                    have[k] = v.clone();
                    changed = true;
                }
            }
        }
    }
    let rules =
        |v: &Value| -> Vec<PolicyRule> { serde_json::from_value(v.clone()).unwrap_or_default() };
    if let Some(want) = desired["aggregationRule"]["clusterRoleSelectors"].as_array() {
        let have = &mut out["aggregationRule"]["clusterRoleSelectors"];
        if !have.is_array() {
            *have = json!([]);
        }
        for sel in want {
            if let Some(list) = have.as_array_mut()
                && !list.contains(sel)
            {
                list.push(sel.clone());
                changed = true;
            }
        }
    } else if desired.get("rules").is_some() {
        let have = rules(&existing["rules"]);
        let missing: Vec<PolicyRule> = rules(&desired["rules"])
            .into_iter()
            .filter(|r| !uncovered(&have, std::slice::from_ref(r)).is_empty())
            .collect();
        if !missing.is_empty() {
            let mut all = have;
            all.extend(missing);
            out["rules"] = serde_json::to_value(all).unwrap_or_default();
            changed = true;
        }
    }
    if let Some(want) = desired["subjects"].as_array() {
        let have = &mut out["subjects"];
        if !have.is_array() {
            *have = json!([]);
        }
        // Stored subjects carry defaulted fields: the same subject is the same kind, name and
        // namespace.
        let id = |v: &Value| {
            (
                v["kind"].as_str().unwrap_or("").to_string(),
                v["name"].as_str().unwrap_or("").to_string(),
                v["namespace"].as_str().unwrap_or("").to_string(),
            )
        };
        for subject in want {
            if let Some(list) = have.as_array_mut()
                && !list.iter().any(|x| id(x) == id(subject))
            {
                list.push(subject.clone());
                changed = true;
            }
        }
    }
    if changed {
        Reconciled::Update(out)
    } else {
        Reconciled::Unchanged
    }
}

// ---------------------------------------------------------------------------------------
// Escalation prevention.

/// Every (verb, group, resource, name) or (verb, url) a rule grants, one rule each.
fn atoms(r: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let one = |v: &str| vec![v.to_string()];
    for verb in &r.verbs {
        for url in &r.non_resource_urls {
            out.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..Default::default()
            });
        }
        for group in &r.api_groups {
            for res in &r.resources {
                let base = PolicyRule {
                    verbs: one(verb),
                    api_groups: one(group),
                    resources: one(res),
                    ..Default::default()
                };
                if r.resource_names.is_empty() {
                    out.push(base);
                } else {
                    for n in &r.resource_names {
                        out.push(PolicyRule {
                            resource_names: one(n),
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    out
}

fn covers_one(owner: &PolicyRule, want: &PolicyRule) -> bool {
    let all = |list: &[String], v: &[String]| v.iter().all(|x| has(list, x));
    if !all(&owner.verbs, &want.verbs) {
        return false;
    }
    if !want.non_resource_urls.is_empty() {
        return want.non_resource_urls.iter().all(|u| {
            owner.non_resource_urls.iter().any(|o| {
                o == "*" || o == u || o.strip_suffix('*').is_some_and(|p| u.starts_with(p))
            })
        });
    }
    let resources_ok = want.resources.iter().all(|res| {
        owner.resources.iter().any(|o| {
            o == "*"
                || o == res
                || res
                    .split_once('/')
                    .is_some_and(|(_, sub)| *o == format!("*/{sub}"))
        })
    });
    all(&owner.api_groups, &want.api_groups)
        && resources_ok
        && (owner.resource_names.is_empty()
            || all(&owner.resource_names, &want.resource_names) && !want.resource_names.is_empty())
}

/// The rules of `wanted` that `owned` does not cover (upstream's `Covers`).
pub fn uncovered(owned: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    wanted
        .iter()
        .flat_map(atoms)
        .filter(|w| !owned.iter().any(|o| covers_one(o, w)))
        .collect()
}

/// Upstream's rendering of a rule in escalation errors.
fn describe(r: &PolicyRule) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut parts = Vec::new();
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:[{}]", list(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:[{}]", list(&r.resources)));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:[{}]", list(&r.resource_names)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:[{}]", list(&r.non_resource_urls)));
    }
    parts.push(format!("Verbs:[{}]", list(&r.verbs)));
    format!("{{{}}}", parts.join(", "))
}

/// Refuses a write of a role or binding that grants more than `user` holds, unless it may
/// `escalate` (roles) or `bind` (bindings) or is in `system:masters` (upstream's
/// `EscalationAllowed`). `obj` is the object to be stored.
pub fn check_escalation(
    state: &State,
    user: &UserInfo,
    plural: &str,
    namespace: &str,
    obj: &Value,
) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let attrs = |verb: &str, resource: &str, name: &str| Attributes {
        verb: verb.into(),
        namespace: namespace.into(),
        group: "rbac.authorization.k8s.io".into(),
        resource: resource.into(),
        name: name.into(),
        resource_request: true,
        ..Default::default()
    };
    let wanted: Vec<PolicyRule> = match plural {
        "roles" | "clusterroles" => {
            if state
                .authz
                .authorize(user, &attrs("escalate", plural, name))
                .allowed
            {
                return Ok(());
            }
            serde_json::from_value(obj["rules"].clone()).unwrap_or_default()
        }
        "rolebindings" | "clusterrolebindings" => {
            let kind = obj["roleRef"]["kind"].as_str().unwrap_or_default();
            let role = obj["roleRef"]["name"].as_str().unwrap_or_default();
            let role_plural = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            let mut bind = attrs("bind", role_plural, role);
            if kind != "Role" && plural == "clusterrolebindings" {
                bind.namespace.clear();
            }
            if state.authz.authorize(user, &bind).allowed {
                return Ok(());
            }
            let binding = Binding {
                namespace: namespace.into(),
                role_kind: kind.into(),
                role: role.into(),
                ..Default::default()
            };
            match state.rbac.role_rules(&binding) {
                Some(rules) => rules.to_vec(),
                None => {
                    return Err(ApiError::Forbidden {
                        message: format!(
                            "{plural}.rbac.authorization.k8s.io {name:?} is forbidden: {} {role:?} not found",
                            if kind == "Role" {
                                "role.rbac.authorization.k8s.io"
                            } else {
                                "clusterrole.rbac.authorization.k8s.io"
                            }
                        ),
                        details: None,
                    });
                }
            }
        }
        _ => return Ok(()),
    };
    let owned = state.rbac.rules_for(user, namespace);
    let missing = uncovered(&owned, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let groups = user
        .groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    let listed = missing.iter().map(describe).collect::<Vec<_>>().join("\n");
    Err(ApiError::Forbidden {
        message: format!(
            "{plural}.rbac.authorization.k8s.io {name:?} is forbidden: user {:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{listed}",
            user.name
        ),
        details: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_objects_reconcile_as_upstream() {
        let want = json!({"metadata": {"name": "r", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]});
        assert_eq!(reconciled(&want, &want), Reconciled::Unchanged);
        // A user's extra rule stays; a missing one is added; labels come back.
        let edited = json!({"metadata": {"name": "r"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                      {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]});
        let Reconciled::Update(out) = reconciled(&edited, &want) else {
            panic!("not updated")
        };
        assert_eq!(out["rules"].as_array().unwrap().len(), 3);
        assert_eq!(out["rules"][1]["resources"], json!(["secrets"]));
        assert_eq!(
            out["metadata"]["labels"]["kubernetes.io/bootstrapping"],
            "rbac-defaults"
        );
        // A wider hand-made rule covers the policy's: nothing to add.
        let wider = json!({"metadata": want["metadata"].clone(),
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
        assert_eq!(reconciled(&wider, &want), Reconciled::Unchanged);
        // autoupdate=false: left alone whatever it holds.
        let mut frozen = edited.clone();
        frozen["metadata"]["annotations"] =
            json!({"rbac.authorization.kubernetes.io/autoupdate": "false"});
        assert_eq!(reconciled(&frozen, &want), Reconciled::Unchanged);

        let binding = json!({"metadata": {"name": "b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
            "subjects": [{"kind": "Group", "name": "system:nodes", "apiGroup": "rbac.authorization.k8s.io"}]});
        let mut extra = binding.clone();
        extra["subjects"] =
            json!([{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}]);
        let Reconciled::Update(out) = reconciled(&extra, &binding) else {
            panic!("subjects not added")
        };
        assert_eq!(out["subjects"].as_array().unwrap().len(), 2);
        let mut moved = binding.clone();
        moved["roleRef"]["name"] = "other".into();
        assert_eq!(reconciled(&moved, &binding), Reconciled::Recreate);

        let agg = json!({"metadata": {"name": "view"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "true"}}]}});
        let filled = json!({"metadata": {"name": "view"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "true"}}]},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
        assert_eq!(reconciled(&filled, &agg), Reconciled::Unchanged);
    }

    #[test]
    fn policy_loads_and_expands_shorthands() {
        let objs = policy_objects().unwrap();
        let admin = objs
            .iter()
            .find(|(p, _, o)| *p == "clusterroles" && o["metadata"]["name"] == "admin")
            .unwrap();
        assert_eq!(
            admin.2["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["rbac.authorization.k8s.io/aggregate-to-admin"],
            "true"
        );
        let node = Node::policy();
        assert!(node.iter().any(|r| r.api_groups == ["events.k8s.io"]));
        assert!(objs.iter().any(|(p, _, o)| *p == "clusterrolebindings"
            && o["subjects"][0]["name"] == "replicaset-controller"));
    }

    #[test]
    fn rules_match_like_upstream() {
        let r = |verbs: &[&str], groups: &[&str], res: &[&str], names: &[&str]| PolicyRule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: groups.iter().map(|s| s.to_string()).collect(),
            resources: res.iter().map(|s| s.to_string()).collect(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            non_resource_urls: vec![],
        };
        let a = |verb: &str, group: &str, res: &str, sub: &str, name: &str| Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            name: name.into(),
            resource_request: true,
            ..Default::default()
        };
        assert!(rule_allows(
            &a("get", "", "pods", "", ""),
            &r(&["get"], &[""], &["pods"], &[])
        ));
        assert!(!rule_allows(
            &a("get", "", "pods", "log", ""),
            &r(&["get"], &[""], &["pods"], &[])
        ));
        assert!(rule_allows(
            &a("get", "apps", "deployments", "scale", ""),
            &r(&["get"], &["*"], &["*/scale"], &[])
        ));
        assert!(!rule_allows(
            &a("list", "", "configmaps", "", ""),
            &r(&["list"], &[""], &["configmaps"], &["x"])
        ));
        assert!(rule_allows(
            &a("get", "", "configmaps", "", "x"),
            &r(&["get"], &[""], &["configmaps"], &["x"])
        ));
        let url = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/healthz/*".into()],
            ..Default::default()
        };
        let path = |p: &str| Attributes {
            verb: "get".into(),
            path: p.into(),
            ..Default::default()
        };
        assert!(rule_allows(&path("/healthz/etcd"), &url));
        assert!(!rule_allows(&path("/healthz"), &url));
    }

    #[test]
    fn coverage_breaks_rules_into_atoms() {
        let owned = vec![PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec!["".into()],
            resources: vec!["pods".into()],
            ..Default::default()
        }];
        let want = |verbs: &[&str]| {
            vec![PolicyRule {
                verbs: verbs.iter().map(|s| s.to_string()).collect(),
                api_groups: vec!["".into()],
                resources: vec!["pods".into()],
                ..Default::default()
            }]
        };
        assert!(uncovered(&owned, &want(&["get"])).is_empty());
        let missing = uncovered(&owned, &want(&["get", "delete"]));
        assert_eq!(missing.len(), 1);
        assert_eq!(
            describe(&missing[0]),
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#
        );
    }
}
