//! The DaemonSet, StatefulSet and ReplicationController controllers of the controller manager
//! against the API server, judged by the real kubectl. There is no scheduler or kubelet here:
//! the tests register Nodes themselves, bind daemon pods through `pods/binding` as the
//! scheduler would, and mark pods Running and Ready through the status subresource. The
//! whole-cluster scenario ([`daemonset_runs_on_the_node`]) runs in `pods.rs`'s cluster.

use std::time::Duration;

use crate::apiserver::Api;
use crate::cluster::Cluster;
use crate::controllers::{Kcm, eventually, get, jsonpath, stdout};
use crate::etcd::Kind;

const WAIT: Duration = Duration::from_secs(40);

/// (name, node, phase, deleting) of the pods matching `selector`, oldest first.
fn pods(api: &Api, selector: &str) -> Vec<(String, String, String, bool)> {
    get(
        api,
        &[
            "get",
            "pods",
            "-l",
            selector,
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ],
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (
            f[0].to_string(),
            f.get(1).unwrap_or(&"").to_string(),
            f.get(2).unwrap_or(&"").to_string(),
            !f.get(3).unwrap_or(&"").is_empty(),
        )
    })
    .collect()
}

fn live(api: &Api, selector: &str) -> Vec<String> {
    pods(api, selector)
        .into_iter()
        .filter(|p| !p.3)
        .map(|p| p.0)
        .collect()
}

/// Plays the kubelet: the pod becomes Running and Ready.
fn mark_ready(api: &Api, pod: &str) {
    let _ = api.kubectl(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
}

/// Plays the scheduler: binds the pod to the node through `pods/binding`.
fn bind(api: &Api, pod: &str, node: &str) {
    let binding = format!(
        r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"{pod}"}},"target":{{"kind":"Node","name":"{node}"}}}}"#
    );
    let _ = api.kubectl_stdin(
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{pod}/binding"),
            "-f",
            "-",
        ],
        &binding,
    );
}

/// Plays the scheduler and kubelet for daemon pods: each unbound one is bound to the node its
/// affinity names, then made Running and Ready; terminating ones are removed.
fn bind_and_ready(api: &Api, selector: &str) {
    let listed = get(
        api,
        &[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values[0]} {.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ],
    );
    for l in listed.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let (name, target, bound, phase, deleting) = (f[0], f[1], f[2], f[3], f[4]);
        if !deleting.is_empty() {
            // The kubelet's last word on a terminating pod: gone for good.
            let _ = api.kubectl(&["delete", "pod", name, "--grace-period=0", "--force"]);
            continue;
        }
        if bound.is_empty() {
            bind(api, name, target);
        }
        if phase != "Running" {
            mark_ready(api, name);
        }
    }
}

fn add_node(api: &Api, name: &str, extra_spec: &str) {
    api.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/hostname: {name}}}\nspec: {{{extra_spec}}}\n"
    ));
}

fn start() -> (Api, Kcm) {
    let api = Api::start(Kind::Mk8s);
    let kcm = Kcm::start(&api, "kcm");
    eventually(WAIT, "default service account", || {
        stdout(&api, &["get", "sa", "default"]).is_some()
    });
    (api, kcm)
}

const DAEMONSET: &str = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels: {app: agent}\n  template:\n    metadata:\n      labels: {app: agent}\n    spec:\n      tolerations:\n      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 30}\n      containers:\n      - name: agent\n        image: busybox:1.35\n";

#[test]
fn daemonset_runs_one_pod_per_eligible_node_and_rolls() {
    let (api, kcm) = start();
    add_node(&api, "node-a", "");
    add_node(
        &api,
        "node-gpu",
        "taints: [{key: dedicated, value: gpu, effect: NoSchedule}]",
    );
    // Cordoned: daemon pods tolerate node.kubernetes.io/unschedulable.
    add_node(&api, "node-cordoned", "unschedulable: true");
    api.apply(DAEMONSET);

    // One pod for each node it fits, none on the tainted one, pinned by affinity, unbound.
    eventually(WAIT, "2 daemon pods", || live(&api, "app=agent").len() == 2);
    std::thread::sleep(Duration::from_secs(1));
    let ps = live(&api, "app=agent");
    assert_eq!(ps.len(), 2, "no duplicates: {ps:?}");
    let mut targets: Vec<String> = ps
        .iter()
        .map(|p| {
            jsonpath(
                &api,
                &["pod", p],
                "{.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[*].matchFields[*].key}={.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[*].matchFields[*].values[*]}/{.spec.nodeName}",
            )
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        ["metadata.name=node-a/", "metadata.name=node-cordoned/"]
    );
    let tolerations = jsonpath(
        &api,
        &["pod", &ps[0]],
        "{range .spec.tolerations[*]}{.key}:{.operator}:{.effect}:{.tolerationSeconds}{\"\\n\"}{end}",
    );
    let mut tolerations: Vec<&str> = tolerations.lines().collect();
    tolerations.sort();
    assert_eq!(
        tolerations,
        [
            "node.kubernetes.io/disk-pressure:Exists:NoSchedule:",
            "node.kubernetes.io/memory-pressure:Exists:NoSchedule:",
            "node.kubernetes.io/not-ready:Exists:NoExecute:",
            "node.kubernetes.io/pid-pressure:Exists:NoSchedule:",
            "node.kubernetes.io/unreachable:Exists:NoExecute:",
            "node.kubernetes.io/unschedulable:Exists:NoSchedule:",
        ],
        "upstream's daemon tolerations (the user's not-ready one replaced)"
    );
    let hash = jsonpath(
        &api,
        &["pod", &ps[0]],
        "{.metadata.labels.controller-revision-hash}",
    );
    assert!(!hash.is_empty());
    assert_eq!(
        jsonpath(
            &api,
            &["pod", &ps[0]],
            "{.metadata.labels.pod-template-generation}/{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}"
        ),
        "1/DaemonSet/agent"
    );
    assert_eq!(
        jsonpath(
            &api,
            &["controllerrevision", &format!("agent-{hash}")],
            "{.revision}/{.metadata.ownerReferences[0].name}"
        ),
        "1/agent"
    );

    // Bound and ready: the rollout is complete, the status counts it.
    eventually(WAIT, "status counts 2 available", || {
        bind_and_ready(&api, "app=agent");
        jsonpath(
            &api,
            &["ds", "agent"],
            "{.status.desiredNumberScheduled}/{.status.currentNumberScheduled}/{.status.numberReady}/{.status.numberAvailable}/{.status.updatedNumberScheduled}/{.status.numberMisscheduled}/{.status.observedGeneration}",
        ) == "2/2/2/2/2/0/1"
    });
    api.k(&["rollout", "status", "daemonset/agent", "--timeout=20s"]);
    let events = get(
        &api,
        &[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.source.component}: {.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    assert!(
        events.contains("daemonset-controller: SuccessfulCreate: Created pod: agent-"),
        "{events}"
    );

    // A deleted daemon pod comes back on its node.
    let (first, ..) = pods(&api, "app=agent")
        .into_iter()
        .find(|p| p.1 == "node-a")
        .unwrap();
    api.k(&["delete", "pod", &first, "--grace-period=0", "--force"]);
    eventually(WAIT, "node-a's pod replaced", || {
        bind_and_ready(&api, "app=agent");
        let ps = pods(&api, "app=agent");
        ps.iter().any(|p| p.1 == "node-a" && p.0 != first && !p.3) && ps.len() == 2
    });

    // A new image rolls one node at a time (maxUnavailable 1), and the rollout completes.
    api.k(&["set", "image", "daemonset/agent", "agent=busybox:1.36"]);
    eventually(WAIT, "rolled to busybox:1.36", || {
        bind_and_ready(&api, "app=agent");
        let ps = live(&api, "app=agent");
        ps.len() == 2
            && ps.iter().all(|p| {
                jsonpath(&api, &["pod", p], "{.spec.containers[0].image}") == "busybox:1.36"
            })
            && jsonpath(
                &api,
                &["ds", "agent"],
                "{.status.updatedNumberScheduled}/{.status.numberAvailable}/{.status.observedGeneration}",
            ) == "2/2/2"
    });
    api.k(&["rollout", "status", "daemonset/agent", "--timeout=20s"]);
    let history = api.k(&["rollout", "history", "daemonset/agent"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        revisions.contains(&"1") && revisions.contains(&"2"),
        "{history}"
    );

    // Undo puts the first template back, as revision 3.
    api.k(&["rollout", "undo", "daemonset/agent"]);
    eventually(WAIT, "undone to busybox:1.35", || {
        bind_and_ready(&api, "app=agent");
        let ps = live(&api, "app=agent");
        ps.len() == 2
            && ps.iter().all(|p| {
                jsonpath(&api, &["pod", p], "{.spec.containers[0].image}") == "busybox:1.35"
            })
            && jsonpath(
                &api,
                &["ds", "agent"],
                "{.status.updatedNumberScheduled}/{.status.numberAvailable}",
            ) == "2/2"
    });
    api.k(&["rollout", "status", "daemonset/agent", "--timeout=20s"]);
    assert_eq!(
        jsonpath(
            &api,
            &["controllerrevision", &format!("agent-{hash}")],
            "{.revision}"
        ),
        "3"
    );

    // A node that gains an untolerated NoExecute taint loses its daemon pod.
    api.k(&["taint", "node", "node-cordoned", "evict=now:NoExecute"]);
    eventually(WAIT, "pod gone from the tainted node", || {
        let ps = pods(&api, "app=agent");
        !ps.iter().any(|p| p.1 == "node-cordoned" && !p.3)
            && jsonpath(&api, &["ds", "agent"], "{.status.desiredNumberScheduled}") == "1"
    });
    assert!(!kcm.log().contains("panicked"), "{}", kcm.log());
}

/// Plays the kubelet for terminating pods: gone for good.
fn finish_terminating(api: &Api, selector: &str) {
    for (name, _, _, deleting) in pods(api, selector) {
        if deleting {
            let _ = api.kubectl(&["delete", "pod", &name, "--grace-period=0", "--force"]);
        }
    }
}

const STATEFULSET: &str = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: web\nspec:\n  serviceName: web\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: busybox:1.35\n        volumeMounts: [{name: www, mountPath: /www}]\n  volumeClaimTemplates:\n  - metadata: {name: www}\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources: {requests: {storage: 1Gi}}\n";

#[test]
fn statefulset_comes_up_in_order_keeps_claims_and_scales_down_from_the_top() {
    let (api, kcm) = start();
    // Bound pods are deleted gracefully, so the order of removal can be watched.
    add_node(&api, "node-a", "");
    api.apply(STATEFULSET);

    // OrderedReady: each pod waits for the one before it to be Running and Ready.
    for (i, name) in ["web-0", "web-1", "web-2"].iter().enumerate() {
        eventually(WAIT, name, || live(&api, "app=web").len() == i + 1);
        std::thread::sleep(Duration::from_millis(1500));
        let up = live(&api, "app=web");
        assert_eq!(up.last().map(String::as_str), Some(*name), "{up:?}");
        assert_eq!(up.len(), i + 1, "the next one waits: {up:?}");
        // Its claim exists (unbound: there is no volume; the pod would stay Pending).
        let claim = format!("www-{name}");
        assert_eq!(
            jsonpath(&api, &["pvc", &claim], "{.metadata.labels.app}"),
            "web"
        );
        bind(&api, name, "node-a");
        mark_ready(&api, name);
    }
    let by_creation: Vec<String> = pods(&api, "app=web").into_iter().map(|p| p.0).collect();
    assert_eq!(by_creation, ["web-0", "web-1", "web-2"]);
    eventually(WAIT, "3 ready", || {
        jsonpath(
            &api,
            &["sts", "web"],
            "{.status.replicas}/{.status.readyReplicas}/{.status.availableReplicas}/{.status.currentReplicas}/{.status.updatedReplicas}/{.status.observedGeneration}",
        ) == "3/3/3/3/3/1"
    });
    api.k(&["rollout", "status", "statefulset/web", "--timeout=20s"]);
    let revision = jsonpath(&api, &["sts", "web"], "{.status.updateRevision}");
    assert_eq!(
        jsonpath(&api, &["sts", "web"], "{.status.currentRevision}"),
        revision
    );
    assert_eq!(
        jsonpath(
            &api,
            &["pod", "web-1"],
            "{.metadata.labels.statefulset\\.kubernetes\\.io/pod-name}/{.metadata.labels.apps\\.kubernetes\\.io/pod-index}/{.metadata.labels.controller-revision-hash}/{.spec.hostname}/{.spec.subdomain}/{.spec.volumes[?(@.name==\"www\")].persistentVolumeClaim.claimName}"
        ),
        format!("web-1/1/{revision}/web-1/web/www-web-1")
    );
    assert_eq!(
        jsonpath(&api, &["controllerrevision", &revision], "{.revision}"),
        "1"
    );

    // Scale down: the highest ordinal goes first, the next only once it is gone.
    api.k(&["scale", "statefulset", "web", "--replicas=1"]);
    eventually(WAIT, "web-2 terminating", || {
        pods(&api, "app=web").iter().any(|p| p.0 == "web-2" && p.3)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        pods(&api, "app=web").iter().any(|p| p.0 == "web-1" && !p.3),
        "web-1 waits for web-2"
    );
    eventually(WAIT, "down to web-0", || {
        finish_terminating(&api, "app=web");
        live(&api, "app=web") == ["web-0"] && pods(&api, "app=web").len() == 1
    });
    // Retain: the claims stay.
    let claims = get(&api, &["get", "pvc", "-o", "name"]);
    assert_eq!(claims.lines().count(), 3, "{claims}");

    // A new image rolls the remaining pod onto a new revision.
    api.k(&["set", "image", "statefulset/web", "web=busybox:1.36"]);
    eventually(WAIT, "web-0 at the new revision", || {
        finish_terminating(&api, "app=web");
        if jsonpath(&api, &["pod", "web-0"], "{.spec.nodeName}").is_empty() {
            bind(&api, "web-0", "node-a");
        }
        mark_ready(&api, "web-0");
        jsonpath(&api, &["pod", "web-0"], "{.spec.containers[0].image}") == "busybox:1.36"
            && jsonpath(
                &api,
                &["sts", "web"],
                "{.status.readyReplicas}/{.status.updatedReplicas}",
            ) == "1/1"
    });
    api.k(&["rollout", "status", "statefulset/web", "--timeout=20s"]);
    let now = jsonpath(&api, &["sts", "web"], "{.status.currentRevision}");
    assert_ne!(now, revision);
    let events = get(
        &api,
        &[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    for want in [
        "SuccessfulCreate: create Pod web-0 in StatefulSet web successful",
        "SuccessfulCreate: create Claim www-web-0 Pod web-0 in StatefulSet web success",
        "SuccessfulDelete: delete Pod web-2 in StatefulSet web successful",
    ] {
        assert!(events.contains(want), "{want}: {events}");
    }
    assert!(!kcm.log().contains("panicked"), "{}", kcm.log());
}

#[test]
fn replication_controller_keeps_its_replicas() {
    let (api, kcm) = start();
    api.apply(
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: cache\nspec:\n  replicas: 3\n  template:\n    metadata:\n      labels: {app: cache}\n    spec:\n      containers:\n      - name: c\n        image: busybox:1.35\n",
    );
    eventually(WAIT, "3 pods", || live(&api, "app=cache").len() == 3);
    let first = live(&api, "app=cache")[0].clone();
    assert_eq!(
        jsonpath(
            &api,
            &["pod", &first],
            "{.metadata.ownerReferences[0].apiVersion}/{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller}"
        ),
        "v1/ReplicationController/cache/true"
    );
    // One deleted (gone at once, as no kubelet confirms): replaced, and never more than 3.
    api.k(&["delete", "pod", &first, "--grace-period=0", "--force"]);
    eventually(WAIT, "replaced", || {
        let ps = live(&api, "app=cache");
        ps.len() == 3 && !ps.contains(&first)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(live(&api, "app=cache").len(), 3, "no duplicates");
    eventually(WAIT, "status counts 3 ready", || {
        for p in live(&api, "app=cache") {
            mark_ready(&api, &p);
        }
        jsonpath(
            &api,
            &["rc", "cache"],
            "{.status.replicas}/{.status.fullyLabeledReplicas}/{.status.readyReplicas}/{.status.availableReplicas}/{.status.observedGeneration}",
        ) == "3/3/3/3/1"
    });
    api.k(&["scale", "rc", "cache", "--replicas=1"]);
    eventually(WAIT, "scaled to 1", || live(&api, "app=cache").len() == 1);
    let events = get(
        &api,
        &[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.involvedObject.kind} {.source.component}: {.reason}{\"\\n\"}{end}",
        ],
    );
    assert!(
        events.contains("ReplicationController replicationcontroller-controller: SuccessfulCreate")
            && events.contains(
                "ReplicationController replicationcontroller-controller: SuccessfulDelete"
            ),
        "{events}"
    );
    assert!(!kcm.log().contains("panicked"), "{}", kcm.log());
}

/// The whole-cluster scenario: a DaemonSet runs one pod on the node, placed by the real
/// scheduler (the controller only pins it by affinity) and run by the real kubelet, and its
/// rollout completes; deleting it takes its pods and revisions along.
pub fn daemonset_runs_on_the_node(c: &Cluster) {
    let run = |args: &[&str]| {
        let out = c.kubectl_at(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let manifest = c.common.join("daemonset.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: node-agent\nspec:\n  selector:\n    matchLabels: {app: node-agent}\n  template:\n    metadata:\n      labels: {app: node-agent}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: agent\n        image: busybox:1.35\n        command: [sleep, '3600']\n",
    )
    .unwrap();
    run(&["apply", "-f", &manifest.display().to_string()]);
    run(&["rollout", "status", "daemonset/node-agent", "--timeout=90s"]);
    let listed = run(&[
        "get",
        "pods",
        "-l",
        "app=node-agent",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName}/{.status.phase}{\"\\n\"}{end}",
    ]);
    let nodes = run(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        [format!("{}/Running", nodes.trim())],
        "one Running pod on the node"
    );
    let status = run(&[
        "get",
        "ds",
        "node-agent",
        "-o",
        "jsonpath={.status.desiredNumberScheduled}/{.status.numberAvailable}",
    ]);
    assert_eq!(status, "1/1");
    run(&["delete", "ds", "node-agent", "--wait=true", "--timeout=60s"]);
    eventually(Duration::from_secs(60), "node-agent's pods gone", || {
        let out = c.kubectl_at(&["get", "pods", "-l", "app=node-agent", "-o", "name"]);
        out.status.success() && out.stdout.is_empty()
    });
}
