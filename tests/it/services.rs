//! The service-side controllers of the controller manager (endpoints, EndpointSlices, pod GC,
//! node lifecycle, disruption) against the API server, judged by the real kubectl. As in
//! `workloads`, there is no kubelet: the tests play it, giving pods IPs and readiness through
//! the status subresource and renewing a Node's Lease. `endpoint_slice_lists_running_pods`
//! is the whole-cluster scenario, run from `pods.rs`.

use std::time::{Duration, Instant};

use crate::apiserver::Api;
use crate::cluster::Cluster;
use crate::controllers::{Kcm, eventually, stdout};
use crate::etcd::Kind;

const WAIT: Duration = Duration::from_secs(40);

fn jp(api: &Api, what: &[&str], path: &str) -> String {
    let p = format!("jsonpath={path}");
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["-o", p.as_str()]);
    stdout(api, &args).unwrap_or_default()
}

/// Live (not deleting) pods matching `selector`, by name.
fn live_pods(api: &Api, selector: &str) -> Vec<String> {
    let out = jp(
        api,
        &["pods", "-l", selector],
        "{range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    );
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| l.ends_with(' '))
        .map(|l| l.trim().to_string())
        .collect();
    v.sort();
    v
}

/// Plays the kubelet for one pod: Running with `ip`, Ready as given.
fn post_pod_status(api: &Api, pod: &str, ip: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let body = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"{status}"}}]}}}}"#
    );
    api.k(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &body,
    ]);
}

/// The (ready, not ready) IPs of an Endpoints object, each sorted and comma-joined.
fn endpoint_ips(api: &Api, name: &str) -> (String, String) {
    let get = |field: &str| {
        let mut ips: Vec<String> = jp(
            api,
            &["endpoints", name],
            &format!("{{range .subsets[*]}}{{range .{field}[*]}}{{.ip}} {{end}}{{end}}"),
        )
        .split_whitespace()
        .map(str::to_string)
        .collect();
        ips.sort();
        ips.join(",")
    };
    (get("addresses"), get("notReadyAddresses"))
}

/// `ip=ready/serving/terminating` for every endpoint of a Service's slices, sorted.
fn slice_endpoints(api: &Api, svc: &str) -> String {
    let sel = format!("kubernetes.io/service-name={svc}");
    let mut v: Vec<String> = jp(
        api,
        &["endpointslices", "-l", &sel],
        "{range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready}/{.conditions.serving}/{.conditions.terminating}{\"\\n\"}{end}",
    )
    .lines()
    .map(str::to_string)
    .collect();
    v.sort();
    v.join(" ")
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: web
        image: busybox:1.35
        command: [httpd, -f, -p, "8080"]
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, labels: {tier: front}}
spec:
  selector: {app: web}
  ports: [{name: web, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: manual}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: manual}
subsets: [{addresses: [{ip: 192.0.2.1}], ports: [{port: 80}]}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web-half}
spec:
  maxUnavailable: 50%
  selector: {matchLabels: {app: web}}
"#;

#[test]
fn endpoints_slices_and_budgets_follow_pods() {
    let api = Api::start(Kind::Mk8s);
    let kcm = Kcm::start(&api, "kcm");
    eventually(WAIT, "default service account", || {
        stdout(&api, &["get", "sa", "default"]).is_some()
    });
    api.apply(WEB);
    eventually(WAIT, "3 pods", || live_pods(&api, "app=web").len() == 3);
    let pods = live_pods(&api, "app=web");
    let ips: Vec<String> = (0..3).map(|i| format!("10.1.0.{}", 10 + i)).collect();
    // Two ready, one not.
    for (i, (pod, ip)) in pods.iter().zip(&ips).enumerate() {
        post_pod_status(&api, pod, ip, i < 2);
    }
    let all_ips = ips.join(",");
    eventually(WAIT, "endpoints split by readiness", || {
        endpoint_ips(&api, "web") == (ips[..2].join(","), ips[2].clone())
    });
    // The named targetPort resolved against the container port.
    assert_eq!(
        jp(&api, &["endpoints", "web"], "{.subsets[0].ports[0].port}"),
        "8080"
    );
    assert_eq!(
        jp(&api, &["endpoints", "web"], "{.metadata.labels.tier}"),
        "front"
    );
    assert!(
        !jp(
            &api,
            &["endpoints", "web"],
            "{.metadata.annotations.endpoints\\.kubernetes\\.io/last-change-trigger-time}"
        )
        .is_empty()
    );
    let want = format!(
        "{}=true/true/false {}=true/true/false {}=false/false/false",
        ips[0], ips[1], ips[2]
    );
    eventually(WAIT, "slice conditions", || {
        slice_endpoints(&api, "web") == want
    });
    let slice = jp(
        &api,
        &["endpointslices", "-l", "kubernetes.io/service-name=web"],
        "{.items[0].metadata.name} {.items[0].addressType} {.items[0].metadata.labels.endpointslice\\.kubernetes\\.io/managed-by} {.items[0].metadata.ownerReferences[0].kind}/{.items[0].metadata.ownerReferences[0].name} {.items[0].ports[0].name}:{.items[0].ports[0].port} {.items[0].endpoints[0].targetRef.kind}",
    );
    let parts: Vec<&str> = slice.split(' ').collect();
    assert!(parts[0].starts_with("web-"), "{slice}");
    assert_eq!(
        parts[1..],
        [
            "IPv4",
            "endpointslice-controller.k8s.io",
            "Service/web",
            "web:8080",
            "Pod"
        ],
        "{slice}"
    );
    // What a user sees.
    let table = api.k(&["get", "endpoints", "web"]);
    assert!(table.contains(&format!("{}:8080", ips[0])), "{table}");
    let table = api.k(&["get", "endpointslices"]);
    assert!(table.contains("IPv4") && table.contains("8080"), "{table}");
    let describe = api.k(&["describe", "service", "web"]);
    assert!(describe.contains(&ips[0]), "{describe}");

    // The budgets: minAvailable 2 of 3 pods, maxUnavailable 50% of the Deployment's 3.
    post_pod_status(&api, &pods[2], &ips[2], true);
    eventually(WAIT, "all ready", || endpoint_ips(&api, "web").0 == all_ips);
    let status = "{.status.currentHealthy} {.status.desiredHealthy} {.status.expectedPods} {.status.disruptionsAllowed} {.status.observedGeneration} {.status.conditions[0].type}={.status.conditions[0].status}/{.status.conditions[0].reason}";
    eventually(WAIT, "pdb status", || {
        jp(&api, &["pdb", "web"], status) == "3 2 3 1 1 DisruptionAllowed=True/SufficientPods"
    });
    eventually(WAIT, "percent pdb status", || {
        jp(&api, &["pdb", "web-half"], status) == "3 1 3 2 1 DisruptionAllowed=True/SufficientPods"
    });
    let table = api.k(&["get", "pdb", "web"]);
    assert!(
        table.lines().nth(1).unwrap_or("").contains(" 2 "),
        "{table}"
    );

    // Scale down: the surplus pods leave endpoints, slices and the budget's count.
    api.k(&["scale", "deployment", "web", "--replicas=1"]);
    eventually(WAIT, "1 pod", || live_pods(&api, "app=web").len() == 1);
    let left = live_pods(&api, "app=web");
    let left_ip = jp(&api, &["pod", &left[0]], "{.status.podIP}");
    eventually(WAIT, "1 endpoint", || {
        endpoint_ips(&api, "web") == (left_ip.clone(), String::new())
            && slice_endpoints(&api, "web") == format!("{left_ip}=true/true/false")
    });
    eventually(WAIT, "budget follows", || {
        jp(&api, &["pdb", "web"], status) == "1 2 1 0 1 DisruptionAllowed=False/InsufficientPods"
    });

    // Converged means quiet: no controller rewrites what it already wrote.
    let versions = || {
        [
            jp(&api, &["endpoints", "web"], "{.metadata.resourceVersion}"),
            jp(
                &api,
                &["endpointslices", "-l", "kubernetes.io/service-name=web"],
                "{.items[*].metadata.resourceVersion}",
            ),
            jp(&api, &["pdb"], "{.items[*].metadata.resourceVersion}"),
        ]
    };
    let before = versions();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(before, versions());

    // Nothing here touches the Service without selector, nor the API server's `kubernetes`.
    assert_eq!(endpoint_ips(&api, "manual").0, "192.0.2.1");
    assert_eq!(
        jp(
            &api,
            &["endpointslices", "-l", "kubernetes.io/service-name=manual"],
            "{.items[*].metadata.name}"
        ),
        ""
    );
    assert!(!endpoint_ips(&api, "kubernetes").0.is_empty());

    // A Service that selects nothing gets an empty placeholder slice.
    api.k(&["create", "service", "clusterip", "empty", "--tcp=80:80"]);
    eventually(WAIT, "placeholder slice", || {
        jp(
            &api,
            &["endpointslices", "-l", "kubernetes.io/service-name=empty"],
            "{.items[*].metadata.name}/{.items[*].endpoints}",
        )
        .starts_with("empty-")
    });
    eventually(WAIT, "empty endpoints", || {
        stdout(&api, &["get", "endpoints", "empty"]).is_some()
    });

    // The Service goes: its Endpoints and slices go too.
    api.k(&["delete", "service", "web"]);
    eventually(WAIT, "endpoints deleted", || {
        stdout(&api, &["get", "endpoints", "web"]).is_none()
    });
    eventually(WAIT, "slices collected", || {
        jp(
            &api,
            &["endpointslices", "-l", "kubernetes.io/service-name=web"],
            "{.items[*].metadata.name}",
        )
        .is_empty()
    });
    assert_eq!(endpoint_ips(&api, "manual").0, "192.0.2.1");
    drop(kcm);
}

/// The controller manager's args file with short node-monitor periods, so a quiet node is
/// noticed in seconds.
fn fast_node_monitor(api: &Api) {
    let args = api.etcd.data.path.join("args/kube-controller-manager");
    std::fs::write(
        args,
        format!(
            "{}--node-monitor-grace-period=4s\n--node-monitor-period=1s\n",
            include_str!("../../templates/args/kube-controller-manager")
        ),
    )
    .unwrap();
}

fn now_micro() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn renew_lease(api: &Api) {
    let body = format!(r#"{{"spec":{{"renewTime":"{}"}}}}"#, now_micro());
    api.k(&[
        "patch",
        "lease",
        "n1",
        "-n",
        "kube-node-lease",
        "--type=merge",
        "-p",
        &body,
    ]);
}

fn post_node_ready(api: &Api) {
    let t = now_micro();
    let body = format!(
        r#"{{"status":{{"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status","lastHeartbeatTime":"{t}","lastTransitionTime":"{t}"}}]}}}}"#
    );
    api.k(&[
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=merge",
        "-p",
        &body,
    ]);
}

fn taints(api: &Api) -> String {
    jp(
        api,
        &["node", "n1"],
        "{range .spec.taints[*]}{.key}:{.effect} {end}",
    )
    .trim()
    .to_string()
}

const NODE: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: n1, namespace: kube-node-lease}
spec: {holderIdentity: n1, leaseDurationSeconds: 40}
---
apiVersion: v1
kind: Pod
metadata: {name: patient}
spec:
  nodeName: n1
  containers: [{name: c, image: busybox:1.35}]
---
apiVersion: v1
kind: Pod
metadata: {name: impatient}
spec:
  nodeName: n1
  tolerations:
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
  containers: [{name: c, image: busybox:1.35}]
---
apiVersion: v1
kind: Pod
metadata: {name: orphan}
spec:
  nodeName: ghost
  containers: [{name: c, image: busybox:1.35}]
"#;

#[test]
fn quiet_nodes_are_tainted_and_orphans_collected() {
    let api = Api::start(Kind::Mk8s);
    fast_node_monitor(&api);
    eventually(WAIT, "default namespace", || {
        stdout(&api, &["get", "ns", "kube-node-lease"]).is_some()
    });
    api.apply(NODE);
    post_node_ready(&api);
    renew_lease(&api);
    let kcm = Kcm::start(&api, "kcm");
    // DefaultTolerationSeconds admission: 300 s for both taints unless the pod says otherwise.
    assert_eq!(
        jp(
            &api,
            &["pod", "patient"],
            "{range .spec.tolerations[*]}{.key}={.tolerationSeconds} {end}"
        ),
        "node.kubernetes.io/not-ready=300 node.kubernetes.io/unreachable=300 "
    );
    assert_eq!(
        jp(
            &api,
            &["pod", "impatient"],
            "{range .spec.tolerations[*]}{.key}={.tolerationSeconds} {end}"
        ),
        "node.kubernetes.io/unreachable=2 node.kubernetes.io/not-ready=300 "
    );

    // A kubelet that renews its Lease keeps the node Ready and untainted past the grace.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        renew_lease(&api);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        jp(
            &api,
            &["node", "n1"],
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "True"
    );
    assert_eq!(taints(&api), "", "{}", kcm.log());

    // It stops: Unknown, with the unreachable taints, and the impatient pod is evicted.
    eventually(Duration::from_secs(20), "node Unknown", || {
        jp(
            &api,
            &["node", "n1"],
            "{.status.conditions[?(@.type==\"Ready\")].status}/{.status.conditions[?(@.type==\"Ready\")].reason}/{.status.conditions[?(@.type==\"Ready\")].message}",
        ) == "Unknown/NodeStatusUnknown/Kubelet stopped posting node status."
    });
    eventually(Duration::from_secs(10), "unreachable taints", || {
        taints(&api)
            == "node.kubernetes.io/unreachable:NoSchedule node.kubernetes.io/unreachable:NoExecute"
    });
    eventually(Duration::from_secs(15), "impatient pod evicted", || {
        !jp(&api, &["pod", "impatient"], "{.metadata.deletionTimestamp}").is_empty()
    });
    assert_eq!(
        jp(
            &api,
            &["pod", "impatient"],
            "{.status.conditions[?(@.type==\"DisruptionTarget\")].reason}"
        ),
        "DeletionByTaintManager"
    );
    assert_eq!(
        jp(&api, &["pod", "patient"], "{.metadata.deletionTimestamp}"),
        "",
        "tolerates for 300 s"
    );
    let events = api.k(&["get", "events", "-A"]);
    assert!(events.contains("NodeNotReady"), "{events}");
    assert!(events.contains("TaintManagerEviction"), "{events}");

    // It comes back: Ready again, taints gone.
    renew_lease(&api);
    post_node_ready(&api);
    eventually(Duration::from_secs(15), "taints removed", || {
        renew_lease(&api);
        taints(&api).is_empty()
    });

    // The pod bound to a node that does not exist is collected after the 40 s quarantine.
    eventually(Duration::from_secs(150), "orphan collected", || {
        std::thread::sleep(Duration::from_millis(500));
        stdout(&api, &["get", "pod", "orphan"]).is_none()
    });
    assert!(stdout(&api, &["get", "pod", "patient"]).is_some());
    drop(kcm);
}

/// kubectl on the whole cluster must succeed; its stdout.
fn ck(c: &Cluster, args: &[&str]) -> String {
    let out = c.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whole-cluster scenario: a Deployment behind a Service gets an EndpointSlice listing its
/// running pods' real IPs.
pub fn endpoint_slice_lists_running_pods(c: &Cluster) {
    ck(
        c,
        &[
            "create",
            "deployment",
            "svc-web",
            "--image=busybox:1.35",
            "--replicas=2",
            "--port=8080",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
        ],
    );
    ck(
        c,
        &[
            "expose",
            "deployment",
            "svc-web",
            "--port=80",
            "--target-port=8080",
        ],
    );
    let result = std::panic::catch_unwind(|| {
        ck(
            c,
            &["rollout", "status", "deployment/svc-web", "--timeout=120s"],
        );
        let mut pod_ips: Vec<String> = ck(
            c,
            &[
                "get",
                "pods",
                "-l",
                "app=svc-web",
                "-o",
                "jsonpath={.items[*].status.podIP}",
            ],
        )
        .split_whitespace()
        .map(str::to_string)
        .collect();
        pod_ips.sort();
        assert_eq!(pod_ips.len(), 2, "{pod_ips:?}");
        assert!(
            pod_ips.iter().all(|ip| ip.starts_with("10.1.")),
            "{pod_ips:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut listed: Vec<String> = ck(
                c,
                &[
                    "get",
                    "endpointslices",
                    "-l",
                    "kubernetes.io/service-name=svc-web",
                    "-o",
                    "jsonpath={range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]} {end}",
                ],
            )
            .split_whitespace()
                .map(str::to_string)
                .collect();
            listed.sort();
            if listed == pod_ips {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slice lists {listed:?}, pods have {pod_ips:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let eps = ck(c, &["get", "endpoints", "svc-web"]);
        assert!(eps.contains(&format!("{}:8080", pod_ips[0])), "{eps}");
    });
    ck(c, &["delete", "service", "svc-web"]);
    ck(c, &["delete", "deployment", "svc-web"]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
