//! The workload controllers (ReplicaSet, Deployment, garbage collector) of the controller
//! manager against the API server, judged by the real kubectl. There is no scheduler or
//! kubelet here: the tests play the kubelet by marking pods Running and Ready through the
//! status subresource.

use std::time::Duration;

use crate::apiserver::Api;
use crate::controllers::{Kcm, eventually, get, jsonpath, stdout};
use crate::etcd::Kind;

const WAIT: Duration = Duration::from_secs(40);

/// Names of the pods matching `selector`, not being deleted.
fn pods(api: &Api, selector: &str) -> Vec<String> {
    get(
        api,
        &[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ],
    )
    .lines()
    .filter(|l| l.ends_with(' '))
    .map(|l| l.trim().to_string())
    .collect()
}

/// Plays the kubelet: every pod matching `selector` becomes Running and Ready.
fn mark_ready(api: &Api, selector: &str) {
    let not_ready = get(
        api,
        &[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.phase}{\"\\n\"}{end}",
        ],
    );
    for line in not_ready.lines() {
        let Some((name, phase)) = line.split_once('=') else {
            continue;
        };
        if phase == "Running" {
            continue;
        }
        let _ = api.kubectl(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ]);
    }
}

/// Marks pods ready until `check` holds.
fn ready_until(api: &Api, selector: &str, what: &str, mut check: impl FnMut() -> bool) {
    eventually(WAIT, what, || {
        mark_ready(api, selector);
        check()
    });
}

fn replica_sets(api: &Api, selector: &str) -> Vec<(String, String, String)> {
    get(
        api,
        &[
            "get",
            "rs",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.replicas} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}{\"\\n\"}{end}",
        ],
    )
    .lines()
    .filter_map(|l| {
        let mut it = l.split(' ');
        Some((
            it.next()?.to_string(),
            it.next()?.to_string(),
            it.next()?.to_string(),
        ))
    })
    .collect()
}

#[test]
fn deployment_rolls_out_scales_updates_and_undoes() {
    let api = Api::start(Kind::Mk8s);
    let kcm = Kcm::start(&api, "kcm");
    eventually(WAIT, "default service account", || {
        stdout(&api, &["get", "sa", "default"]).is_some()
    });
    api.k(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.35",
        "--replicas=3",
        "--",
        "httpd",
        "-f",
    ]);
    eventually(WAIT, "3 pods", || pods(&api, "app=web").len() == 3);
    let rs = replica_sets(&api, "app=web");
    assert_eq!(rs.len(), 1, "{rs:?}");
    let (rs1, _, rev) = rs[0].clone();
    assert_eq!(rev, "1");
    let hash = rs1.strip_prefix("web-").unwrap();
    let owner = jsonpath(
        &api,
        &["pod", &pods(&api, "app=web")[0]],
        "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller}/{.metadata.ownerReferences[0].blockOwnerDeletion}",
    );
    assert_eq!(owner, format!("ReplicaSet/{rs1}/true/true"));
    assert_eq!(
        jsonpath(&api, &["rs", &rs1], "{.metadata.ownerReferences[0].name}"),
        "web"
    );
    assert_eq!(
        jsonpath(
            &api,
            &["rs", &rs1],
            "{.spec.selector.matchLabels.pod-template-hash}"
        ),
        hash
    );
    assert_eq!(
        jsonpath(
            &api,
            &["deploy", "web"],
            "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ),
        "1"
    );
    ready_until(&api, "app=web", "3 available", || {
        jsonpath(&api, &["deploy", "web"], "{.status.availableReplicas}") == "3"
    });
    api.k(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    let conds = jsonpath(
        &api,
        &["deploy", "web"],
        "{range .status.conditions[*]}{.type}={.status}/{.reason}{\"\\n\"}{end}",
    );
    assert!(
        conds.contains("Available=True/MinimumReplicasAvailable"),
        "{conds}"
    );
    assert!(
        conds.contains("Progressing=True/NewReplicaSetAvailable"),
        "{conds}"
    );
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
        events.contains(&format!(
            "deployment-controller: ScalingReplicaSet: Scaled up replica set {rs1} to 3"
        )),
        "{events}"
    );
    assert!(
        events.contains("replicaset-controller: SuccessfulCreate: Created pod: web-"),
        "{events}"
    );

    // Scale up and down: pods follow.
    api.k(&["scale", "deployment", "web", "--replicas=5"]);
    eventually(WAIT, "5 pods", || pods(&api, "app=web").len() == 5);
    api.k(&["scale", "deployment", "web", "--replicas=1"]);
    eventually(WAIT, "1 pod", || pods(&api, "app=web").len() == 1);
    ready_until(&api, "app=web", "1 available", || {
        jsonpath(
            &api,
            &["deploy", "web"],
            "{.status.replicas}/{.status.availableReplicas}",
        ) == "1/1"
    });
    api.k(&["scale", "deployment", "web", "--replicas=3"]);
    ready_until(&api, "app=web", "3 available again", || {
        jsonpath(&api, &["deploy", "web"], "{.status.availableReplicas}") == "3"
    });

    // A new image: a second ReplicaSet (revision 2) takes over.
    api.k(&["set", "image", "deployment/web", "busybox=busybox:1.36"]);
    ready_until(&api, "app=web", "revision 2 rolled out", || {
        let rs = replica_sets(&api, "app=web");
        rs.len() == 2
            && rs.iter().any(|(n, r, v)| n == &rs1 && r == "0" && v == "1")
            && rs.iter().any(|(n, r, v)| n != &rs1 && r == "3" && v == "2")
            && jsonpath(
                &api,
                &["deploy", "web"],
                "{.status.updatedReplicas}/{.status.availableReplicas}/{.status.replicas}",
            ) == "3/3/3"
    });
    api.k(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    let history = api.k(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        revisions.contains(&"1") && revisions.contains(&"2"),
        "{history}"
    );
    assert_eq!(
        pods(&api, "app=web")
            .iter()
            .map(|p| jsonpath(&api, &["pod", p], "{.spec.containers[0].image}"))
            .collect::<Vec<_>>(),
        vec!["busybox:1.36"; 3]
    );

    // Undo: the first template again, on the first ReplicaSet, as revision 3.
    api.k(&["rollout", "undo", "deployment/web"]);
    ready_until(&api, "app=web", "undo rolled out", || {
        let rs = replica_sets(&api, "app=web");
        rs.iter().any(|(n, r, v)| n == &rs1 && r == "3" && v == "3")
            && jsonpath(
                &api,
                &["deploy", "web"],
                "{.status.updatedReplicas}/{.status.availableReplicas}/{.status.replicas}",
            ) == "3/3/3"
    });
    api.k(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert_eq!(
        jsonpath(
            &api,
            &["deploy", "web"],
            "{.spec.template.spec.containers[0].image}"
        ),
        "busybox:1.35"
    );

    // Paused: a template change waits for resume.
    api.k(&["rollout", "pause", "deployment/web"]);
    api.k(&["set", "image", "deployment/web", "busybox=busybox:1.37"]);
    eventually(WAIT, "paused condition", || {
        jsonpath(
            &api,
            &["deploy", "web"],
            "{.status.conditions[?(@.type==\"Progressing\")].reason}",
        ) == "DeploymentPaused"
    });
    assert_eq!(replica_sets(&api, "app=web").len(), 2);
    api.k(&["rollout", "resume", "deployment/web"]);
    ready_until(&api, "app=web", "resumed rollout done", || {
        replica_sets(&api, "app=web").len() == 3
            && jsonpath(
                &api,
                &["deploy", "web"],
                "{.status.updatedReplicas}/{.status.availableReplicas}/{.status.replicas}",
            ) == "3/3/3"
    });
    api.k(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    drop(kcm);
}

#[test]
fn deleting_owners_cascades_in_background_foreground_and_orphans() {
    let api = Api::start(Kind::Mk8s);
    let kcm = Kcm::start(&api, "kcm");
    eventually(WAIT, "default service account", || {
        stdout(&api, &["get", "sa", "default"]).is_some()
    });
    for name in ["bg", "fg", "orph"] {
        api.k(&[
            "create",
            "deployment",
            name,
            "--image=busybox:1.35",
            "--replicas=2",
        ]);
    }
    for name in ["bg", "fg", "orph"] {
        let sel = format!("app={name}");
        eventually(WAIT, "2 pods each", || pods(&api, &sel).len() == 2);
    }

    // Background (kubectl's default): the deployment goes, then its ReplicaSet and pods.
    api.k(&["delete", "deployment", "bg"]);
    eventually(WAIT, "bg's ReplicaSet and pods gone", || {
        replica_sets(&api, "app=bg").is_empty() && pods(&api, "app=bg").is_empty()
    });

    // Foreground: dependents first, then the deployment.
    api.k(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=30s",
    ]);
    assert!(replica_sets(&api, "app=fg").is_empty());
    assert!(pods(&api, "app=fg").is_empty());
    assert!(api.k_err(&["get", "deployment", "fg"]).contains("NotFound"));

    // Orphan: the ReplicaSet stays, without its owner reference, and keeps its pods.
    api.k(&[
        "delete",
        "deployment",
        "orph",
        "--cascade=orphan",
        "--timeout=30s",
    ]);
    assert!(
        api.k_err(&["get", "deployment", "orph"])
            .contains("NotFound")
    );
    let rs = replica_sets(&api, "app=orph");
    assert_eq!(rs.len(), 1);
    assert_eq!(
        jsonpath(&api, &["rs", &rs[0].0], "{.metadata.ownerReferences}"),
        ""
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pods(&api, "app=orph").len(), 2);

    // A dependent created with an owner that does not exist is collected.
    api.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dangling\n  ownerReferences:\n  - apiVersion: apps/v1\n    kind: ReplicaSet\n    name: nope\n    uid: 6a4b7e0c-0000-4000-8000-000000000001\ndata: {}\n",
    );
    eventually(WAIT, "dangling configmap collected", || {
        stdout(&api, &["get", "cm", "dangling"]).is_none()
    });
    drop(kcm);
}

#[test]
fn replicaset_adopts_orphans_and_releases_relabelled_pods() {
    let api = Api::start(Kind::Mk8s);
    let kcm = Kcm::start(&api, "kcm");
    eventually(WAIT, "default service account", || {
        stdout(&api, &["get", "sa", "default"]).is_some()
    });
    // An orphan pod with matching labels is adopted, so only one more is created.
    api.k(&["run", "stray", "--image=busybox:1.35", "--labels=app=cache"]);
    api.apply(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: cache\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: cache}\n  template:\n    metadata:\n      labels: {app: cache}\n    spec:\n      containers:\n      - name: c\n        image: busybox:1.35\n",
    );
    eventually(WAIT, "stray adopted", || {
        jsonpath(
            &api,
            &["pod", "stray"],
            "{.metadata.ownerReferences[0].name}",
        ) == "cache"
    });
    eventually(WAIT, "2 pods", || pods(&api, "app=cache").len() == 2);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pods(&api, "app=cache").len(), 2, "no duplicates");
    ready_until(&api, "app=cache", "status counts", || {
        jsonpath(
            &api,
            &["rs", "cache"],
            "{.status.replicas}/{.status.fullyLabeledReplicas}/{.status.readyReplicas}/{.status.availableReplicas}/{.status.observedGeneration}",
        ) == "2/2/2/2/1"
    });

    // Relabelled: released (no owner) and replaced.
    api.k(&["label", "pod", "stray", "app=other", "--overwrite"]);
    eventually(WAIT, "stray released and replaced", || {
        jsonpath(&api, &["pod", "stray"], "{.metadata.ownerReferences}").is_empty()
            && pods(&api, "app=cache").len() == 2
            && !pods(&api, "app=cache").contains(&"stray".to_string())
    });

    assert!(!kcm.log().contains("panicked"), "{}", kcm.log());
}
