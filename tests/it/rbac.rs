//! `mk8s enable rbac` on a whole cluster: the RBAC and Node authorizers with upstream's
//! bootstrap policy, judged by the real kubectl (tokens, impersonation, `auth can-i`, service
//! account tokens, escalation checks), and `mk8s disable rbac` back to AlwaysAllow.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;

const BOB: &str = "bob-token-7c1e0f8a94d2b6";

/// kubectl at the cluster with only a bearer token (no kubeconfig credentials).
fn as_token(c: &Cluster, token: &str, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig=/dev/null")
        .arg(format!("--server=https://127.0.0.1:{}", c.api_port))
        .arg(format!(
            "--certificate-authority={}",
            c.data.join("certs/ca.crt").display()
        ))
        .arg(format!("--token={token}"))
        .args(args)
        .output()
        .unwrap()
}

fn admin(c: &Cluster, args: &[&str]) -> Output {
    let server = format!("--server=https://127.0.0.1:{}", c.api_port);
    let mut all = vec![server.as_str()];
    all.extend_from_slice(args);
    c.kubectl(&all)
}

fn admin_ok(c: &Cluster, args: &[&str]) -> String {
    let out = admin(c, args);
    assert!(out.status.success(), "kubectl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Authorization is answered from watch-fed caches: a new binding takes a moment.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (user, groups, verb, what, namespace, upstream's answer).
type Case = (
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
    &'static str,
    bool,
);

/// Upstream's decisions for the bootstrap policy.
const TABLE: &[Case] = &[
    ("admin", &["system:masters"], "delete", "nodes", "", true),
    (
        "admin",
        &["system:masters"],
        "escalate",
        "clusterroles.rbac.authorization.k8s.io",
        "",
        true,
    ),
    ("nobody", &[], "get", "pods", "default", false),
    ("nobody", &[], "list", "namespaces", "", false),
    (
        "nobody",
        &[],
        "create",
        "selfsubjectaccessreviews.authorization.k8s.io",
        "",
        true,
    ),
    (
        "nobody",
        &[],
        "create",
        "selfsubjectrulesreviews.authorization.k8s.io",
        "",
        true,
    ),
    (
        "nobody",
        &[],
        "create",
        "selfsubjectreviews.authentication.k8s.io",
        "",
        true,
    ),
    (
        "nobody",
        &[],
        "create",
        "subjectaccessreviews.authorization.k8s.io",
        "",
        false,
    ),
    ("nobody", &[], "get", "/version", "", true),
    ("nobody", &[], "get", "/healthz", "", true),
    ("nobody", &[], "get", "/apis/apps", "", true),
    ("nobody", &[], "get", "/metrics", "", false),
    ("mon", &["system:monitoring"], "get", "/metrics", "", true),
    (
        "mon",
        &["system:monitoring"],
        "get",
        "/readyz/etcd",
        "",
        true,
    ),
    (
        "mon",
        &["system:monitoring"],
        "get",
        "/debug/pprof",
        "",
        false,
    ),
    (
        "system:kube-scheduler",
        &[],
        "create",
        "pods --subresource=binding",
        "default",
        true,
    ),
    ("system:kube-scheduler", &[], "list", "nodes", "", true),
    ("system:kube-scheduler", &[], "watch", "pods", "", true),
    (
        "system:kube-scheduler",
        &[],
        "update",
        "pods --subresource=status",
        "default",
        true,
    ),
    (
        "system:kube-scheduler",
        &[],
        "delete",
        "pods",
        "default",
        true,
    ),
    (
        "system:kube-scheduler",
        &[],
        "create",
        "pods",
        "default",
        false,
    ),
    (
        "system:kube-scheduler",
        &[],
        "create",
        "leases.coordination.k8s.io",
        "kube-system",
        true,
    ),
    (
        "system:kube-scheduler",
        &[],
        "update",
        "leases.coordination.k8s.io/kube-scheduler",
        "kube-system",
        true,
    ),
    (
        "system:kube-scheduler",
        &[],
        "update",
        "leases.coordination.k8s.io/kube-controller-manager",
        "kube-system",
        false,
    ),
    (
        "system:kube-scheduler",
        &[],
        "list",
        "poddisruptionbudgets.policy",
        "",
        true,
    ),
    (
        "system:kube-scheduler",
        &[],
        "get",
        "secrets",
        "default",
        false,
    ),
    (
        "system:kube-scheduler",
        &[],
        "create",
        "events",
        "default",
        true,
    ),
    (
        "system:kube-scheduler",
        &[],
        "patch",
        "events.events.k8s.io",
        "default",
        true,
    ),
    (
        "system:kube-controller-manager",
        &[],
        "list",
        "secrets",
        "",
        true,
    ),
    (
        "system:kube-controller-manager",
        &[],
        "watch",
        "deployments.apps",
        "",
        true,
    ),
    (
        "system:kube-controller-manager",
        &[],
        "create",
        "serviceaccounts --subresource=token",
        "kube-system",
        true,
    ),
    (
        "system:kube-controller-manager",
        &[],
        "delete",
        "pods",
        "default",
        false,
    ),
    (
        "system:kube-controller-manager",
        &[],
        "update",
        "leases.coordination.k8s.io/kube-controller-manager",
        "kube-system",
        true,
    ),
    (
        "system:kube-proxy",
        &[],
        "list",
        "endpointslices.discovery.k8s.io",
        "",
        true,
    ),
    ("system:kube-proxy", &[], "watch", "services", "", true),
    ("system:kube-proxy", &[], "get", "nodes", "", true),
    ("system:kube-proxy", &[], "get", "pods", "default", false),
    (
        "system:kube-proxy",
        &[],
        "create",
        "services",
        "default",
        false,
    ),
    (
        "system:serviceaccount:kube-system:replicaset-controller",
        &[],
        "create",
        "pods",
        "default",
        true,
    ),
    (
        "system:serviceaccount:kube-system:replicaset-controller",
        &[],
        "update",
        "replicasets.apps --subresource=status",
        "default",
        true,
    ),
    (
        "system:serviceaccount:kube-system:replicaset-controller",
        &[],
        "delete",
        "deployments.apps",
        "default",
        false,
    ),
    (
        "system:serviceaccount:kube-system:deployment-controller",
        &[],
        "create",
        "replicasets.apps",
        "default",
        true,
    ),
    (
        "system:serviceaccount:kube-system:generic-garbage-collector",
        &[],
        "delete",
        "configmaps",
        "default",
        true,
    ),
    (
        "system:serviceaccount:kube-system:generic-garbage-collector",
        &[],
        "create",
        "configmaps",
        "default",
        false,
    ),
    (
        "system:serviceaccount:kube-system:namespace-controller",
        &[],
        "deletecollection",
        "pods",
        "x",
        true,
    ),
    (
        "system:serviceaccount:kube-system:namespace-controller",
        &[],
        "update",
        "namespaces --subresource=finalize",
        "",
        true,
    ),
    (
        "system:serviceaccount:kube-system:job-controller",
        &[],
        "update",
        "jobs.batch --subresource=status",
        "default",
        true,
    ),
    (
        "system:serviceaccount:kube-system:disruption-controller",
        &[],
        "get",
        "deployments.apps --subresource=scale",
        "default",
        true,
    ),
    (
        "system:serviceaccount:kube-system:root-ca-cert-publisher",
        &[],
        "create",
        "configmaps",
        "default",
        true,
    ),
    (
        "system:serviceaccount:kube-system:root-ca-cert-publisher",
        &[],
        "delete",
        "configmaps",
        "default",
        false,
    ),
    (
        "system:serviceaccount:kube-system:clusterrole-aggregation-controller",
        &[],
        "escalate",
        "clusterroles.rbac.authorization.k8s.io",
        "",
        true,
    ),
    (
        "system:serviceaccount:kube-system:kube-dns",
        &[],
        "list",
        "endpointslices.discovery.k8s.io",
        "",
        true,
    ),
    (
        "system:serviceaccount:default:default",
        &[],
        "get",
        "pods",
        "default",
        false,
    ),
];

/// `curl` at the kubelet's API port with a bearer token, or with the admin's certificate.
fn kubelet_get(c: &Cluster, path: &str, token: Option<&str>) -> (String, String) {
    let args = std::fs::read_to_string(c.data.join("args/kubelet")).unwrap();
    let port = args
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("--port="))
        .unwrap()
        .to_string();
    let certs = c.data.join("certs");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(certs.join("ca.crt"));
    match token {
        Some(t) => {
            cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
        }
        None => {
            cmd.arg("--cert")
                .arg(certs.join("admin.crt"))
                .arg("--key")
                .arg(certs.join("admin.key"));
        }
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

/// Under RBAC the kubelet asks the API server about every caller (SubjectAccessReview as
/// `nodes/<subresource>`), and takes tokens it has the API server review.
fn kubelet_api_is_authorized(c: &Cluster) {
    let (code, body) = kubelet_get(c, "/pods", None);
    assert_eq!(code, "200", "system:masters may: {body}");
    let (code, body) = kubelet_get(c, "/pods", Some(BOB));
    assert_eq!(code, "403", "{body}");
    assert_eq!(
        body,
        "Forbidden (user=bob, verb=get, resource=nodes, subresource=proxy)"
    );
    let (code, _) = kubelet_get(c, "/pods", Some("not-a-token"));
    assert_eq!(code, "401");
    admin_ok(
        c,
        &[
            "create",
            "clusterrole",
            "node-stats",
            "--verb=get",
            "--resource=nodes/stats",
        ],
    );
    admin_ok(
        c,
        &[
            "create",
            "clusterrolebinding",
            "bob-node-stats",
            "--clusterrole=node-stats",
            "--user=bob",
        ],
    );
    // Decisions are cached for ten seconds; the first one for /stats was never asked.
    eventually("bob to read the kubelet's stats", || {
        kubelet_get(c, "/stats/summary", Some(BOB)).0 != "403"
    });
    let (code, body) = kubelet_get(c, "/pods", Some(BOB));
    assert_eq!(code, "403", "stats is not proxy: {body}");
}

fn can_i(c: &Cluster, user: &str, groups: &[&str], verb: &str, what: &str, ns: &str) -> bool {
    // `what` is kubectl's TYPE[/NAME] or URL, with any further flags (`--subresource=`).
    let mut args = vec!["auth".to_string(), "can-i".into(), verb.into()];
    args.extend(what.split_whitespace().map(str::to_string));
    args.push(format!("--as={user}"));
    for g in groups {
        args.push(format!("--as-group={g}"));
    }
    if user.starts_with("system:serviceaccount:") && groups.is_empty() {
        let ns = user.split(':').nth(2).unwrap_or_default();
        args.push("--as-group=system:serviceaccounts".into());
        args.push(format!("--as-group=system:serviceaccounts:{ns}"));
    }
    if ns.is_empty() {
        if !what.starts_with('/') {
            args.push("--all-namespaces".into());
        }
    } else {
        args.push(format!("--namespace={ns}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = admin(c, &refs);
    // "no - <reason>" when the authorizer gave one.
    let said = String::from_utf8_lossy(&out.stdout);
    let said = said.split(" - ").next().unwrap_or_default().trim();
    assert!(said == "yes" || said == "no", "can-i {args:?}: {out:?}");
    said == "yes"
}

#[test]
fn enable_rbac_restricts_and_roles_grant() {
    let c = Cluster::new();
    c.ok(&["bootstrap"]);
    let tokens = c.data.join("credentials/known_tokens.csv");
    let mut csv = std::fs::read_to_string(&tokens).unwrap();
    csv.push_str(&format!("{BOB},bob,bob-uid\n"));
    std::fs::write(&tokens, csv).unwrap();
    c.ok(&["start"]);
    let status = c.ok(&["status", "--wait-ready", "--timeout", "60"]);
    let disabled = status.split("  disabled:\n").nth(1).unwrap_or_default();
    assert!(
        disabled.contains("\n    rbac ") || disabled.starts_with("    rbac "),
        "{status}"
    );
    // Under AlwaysAllow anyone authenticated may do anything.
    assert!(as_token(&c, BOB, &["get", "pods"]).status.success());
    // The aggregated roles are filled by the controller manager.
    eventually("view to be aggregated", || {
        admin_ok(
            &c,
            &[
                "get",
                "clusterrole",
                "view",
                "-o",
                "jsonpath={.rules[*].resources}",
            ],
        )
        .contains("pods")
    });

    // Bootstrap policy is reconciled when the API server starts: a stripped role gets its
    // rules back, one marked autoupdate=false is left as it is.
    for role in ["system:discovery", "system:heapster"] {
        admin_ok(
            &c,
            &[
                "patch",
                "clusterrole",
                role,
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/rules","value":[]}]"#,
            ],
        );
    }
    admin_ok(
        &c,
        &[
            "annotate",
            "--overwrite",
            "clusterrole",
            "system:heapster",
            "rbac.authorization.kubernetes.io/autoupdate=false",
        ],
    );

    let out = c.ok(&["enable", "rbac"]);
    assert!(out.ends_with("rbac is enabled\n"), "{out}");
    assert!(c.ok(&["enable", "rbac"]).contains("already enabled"));
    let rules = |role: &str| {
        admin_ok(
            &c,
            &[
                "get",
                "clusterrole",
                role,
                "-o",
                "jsonpath={.rules[*].nonResourceURLs}",
            ],
        )
    };
    assert!(
        rules("system:discovery").contains("/openapi"),
        "{}",
        rules("system:discovery")
    );
    let heapster = admin_ok(
        &c,
        &[
            "get",
            "clusterrole",
            "system:heapster",
            "-o",
            "jsonpath={.rules}",
        ],
    );
    assert!(
        heapster == "[]" || heapster.is_empty(),
        "autoupdate=false is left alone: {heapster}"
    );
    // Idempotent: the restart touched only what was changed.
    let log = std::fs::read_to_string(c.common.join("var/log/apiserver.log")).unwrap();
    let touched: Vec<&str> = log.lines().filter(|l| l.contains("reconciling ")).collect();
    assert_eq!(touched.len(), 1, "{touched:#?}");
    assert!(touched[0].contains("system:discovery"), "{touched:#?}");
    let args = std::fs::read_to_string(c.data.join("args/kube-apiserver")).unwrap();
    assert!(
        args.contains("\n--authorization-mode=RBAC,Node\n"),
        "{args}"
    );
    assert!(!args.contains("AlwaysAllow"), "{args}");
    let yaml = c.ok(&["status", "--format", "yaml"]);
    assert!(yaml.contains("- name: rbac\n  status: enabled"), "{yaml}");
    assert!(
        yaml.contains("restarts: 0"),
        "a requested restart is no crash: {yaml}"
    );

    // The admin (system:masters) still does everything.
    admin_ok(&c, &["get", "pods", "--all-namespaces"]);
    admin_ok(&c, &["create", "namespace", "team"]);

    // A token user with no binding: upstream's 403.
    let denied = as_token(&c, BOB, &["get", "pods", "-n", "default"]);
    assert!(!denied.status.success());
    assert_eq!(
        stderr(&denied).trim(),
        "Error from server (Forbidden): pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"",
    );
    let bad = as_token(&c, "not-a-token", &["get", "pods"]);
    assert!(stderr(&bad).contains("Unauthorized"), "{bad:?}");

    // view in one namespace: read there, not write, not elsewhere.
    admin_ok(
        &c,
        &[
            "create",
            "rolebinding",
            "bob-view",
            "--clusterrole=view",
            "--user=bob",
            "-n",
            "default",
        ],
    );
    eventually("bob to read pods", || {
        as_token(&c, BOB, &["get", "pods", "-n", "default"])
            .status
            .success()
    });
    let write = as_token(&c, BOB, &["create", "configmap", "x", "-n", "default"]);
    assert!(
        stderr(&write).contains("configmaps is forbidden: User \"bob\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""),
        "{write:?}"
    );
    assert!(
        !as_token(&c, BOB, &["get", "pods", "-n", "team"])
            .status
            .success()
    );
    let list = admin_ok(
        &c,
        &["auth", "can-i", "--list", "--as=bob", "-n", "default"],
    );
    let pods = list
        .lines()
        .find(|l| l.starts_with("pods "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(pods.contains("[get list watch]"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("selfsubjectaccessreviews.authorization.k8s.io")),
        "{list}"
    );
    assert!(
        !list.contains("secrets "),
        "view does not read secrets: {list}"
    );
    // Impersonation needs `impersonate`: bob may not.
    let imp = as_token(&c, BOB, &["get", "pods", "--as=admin"]);
    assert!(
        stderr(&imp).contains("users \"admin\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{imp:?}"
    );

    // A service account token, authorized through its RoleBinding.
    admin_ok(&c, &["create", "serviceaccount", "robot", "-n", "team"]);
    admin_ok(
        &c,
        &[
            "create",
            "rolebinding",
            "robot-admin",
            "--clusterrole=admin",
            "--serviceaccount=team:robot",
            "-n",
            "team",
        ],
    );
    let token = admin_ok(&c, &["create", "token", "robot", "-n", "team"]);
    let token = token.trim();
    eventually("robot to write in team", || {
        as_token(&c, token, &["create", "configmap", "c1", "-n", "team"])
            .status
            .success()
    });
    assert!(
        !as_token(&c, token, &["get", "pods", "-n", "default"])
            .status
            .success()
    );
    // Escalation: robot may grant in a role only what it holds itself.
    let ok = as_token(
        &c,
        token,
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get",
            "--resource=pods",
            "-n",
            "team",
        ],
    );
    assert!(ok.status.success(), "{ok:?}");
    let esc = as_token(
        &c,
        token,
        &[
            "create",
            "role",
            "node-reader",
            "--verb=get",
            "--resource=nodes",
            "-n",
            "team",
        ],
    );
    assert!(!esc.status.success());
    assert!(
        stderr(&esc).contains("roles.rbac.authorization.k8s.io \"node-reader\" is forbidden: user \"system:serviceaccount:team:robot\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:team\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}"),
        "{esc:?}"
    );
    let bind = as_token(
        &c,
        token,
        &[
            "create",
            "rolebinding",
            "robot-root",
            "--clusterrole=cluster-admin",
            "--serviceaccount=team:robot",
            "-n",
            "team",
        ],
    );
    assert!(
        stderr(&bind).contains("is attempting to grant RBAC permissions not currently held"),
        "{bind:?}"
    );

    // The bootstrap policy decides as upstream's does.
    let mut wrong = Vec::new();
    for (user, groups, verb, what, ns, want) in TABLE {
        if can_i(&c, user, groups, verb, what, ns) != *want {
            wrong.push(format!("{user} {verb} {what} in {ns:?}: want {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} differ: {wrong:#?}",
        wrong.len(),
        TABLE.len()
    );

    // Node: a kubelet reads only what the pods bound to it use. The node is made up, so no
    // kubelet runs the pod.
    admin_ok(
        &c,
        &[
            "create",
            "secret",
            "generic",
            "used",
            "--from-literal=k=v",
            "-n",
            "team",
        ],
    );
    admin_ok(
        &c,
        &[
            "create",
            "secret",
            "generic",
            "unrelated",
            "--from-literal=k=v",
            "-n",
            "team",
        ],
    );
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: on-ghost, namespace: team}\nspec:\n  nodeName: ghost\n  containers: [{name: c, image: busybox:1.35}]\n  volumes: [{name: s, secret: {secretName: used}}]\n";
    let mut apply = Command::new(env!("CARGO_BIN_EXE_mk8s"));
    apply
        .arg("--data-dir")
        .arg(&c.data)
        .arg("--common-dir")
        .arg(&c.common)
        .args([
            "kubectl",
            &format!("--server=https://127.0.0.1:{}", c.api_port),
            "create",
            "-f",
            "-",
        ])
        .env("HOME", c.common.as_os_str())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = apply.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pod.as_bytes())
        .unwrap();
    let created = child.wait_with_output().unwrap();
    assert!(created.status.success(), "{created:?}");
    let ghost = |verb: &str, what: &str, ns: &str| {
        can_i(&c, "system:node:ghost", &["system:nodes"], verb, what, ns)
    };
    eventually("the node to read its pod's secret", || {
        ghost("get", "secrets/used", "team")
    });
    assert!(!ghost("get", "secrets/unrelated", "team"));
    assert!(!ghost("list", "secrets", "team"));
    assert!(ghost("list", "pods", ""));
    assert!(ghost("update", "nodes/ghost", ""));
    assert!(!ghost("update", "nodes/other", ""));
    assert!(ghost(
        "update",
        "leases.coordination.k8s.io/ghost",
        "kube-node-lease"
    ));
    assert!(!ghost(
        "update",
        "leases.coordination.k8s.io/other",
        "kube-node-lease"
    ));
    assert!(
        !can_i(&c, "system:node:ghost", &[], "list", "pods", ""),
        "not in system:nodes"
    );
    admin_ok(
        &c,
        &[
            "delete",
            "pod",
            "on-ghost",
            "-n",
            "team",
            "--grace-period=0",
            "--force",
        ],
    );

    kubelet_api_is_authorized(&c);

    let out = c.ok(&["disable", "rbac"]);
    assert!(out.ends_with("rbac is disabled\n"), "{out}");
    let (code, _) = kubelet_get(&c, "/pods", Some(BOB));
    assert_eq!(
        code, "000",
        "without the webhook a client certificate is required"
    );
    assert!(
        as_token(&c, BOB, &["get", "pods", "-n", "team"])
            .status
            .success()
    );
    c.ok(&["stop"]);
}
