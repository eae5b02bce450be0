//! The Job, CronJob and TTL-after-finished controllers against the API server, judged by the
//! real kubectl. As in `workloads`, there is no kubelet: the tests finish pods by setting
//! their phase through the status subresource. `job_runs_on_the_node` is the whole-cluster
//! scenario (`pods.rs` calls it), with busybox on the real kubelet.

use std::time::{Duration, Instant};

use crate::apiserver::Api;
use crate::cluster::Cluster;
use crate::controllers::{Kcm, eventually, get, jsonpath, stdout};
use crate::etcd::Kind;

const WAIT: Duration = Duration::from_secs(40);

/// `name phase deleting` of every pod of a job.
fn job_pods(api: &Api, job: &str) -> Vec<(String, String, bool)> {
    get(
        api,
        &[
            "get",
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-name={job}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ],
    )
    .lines()
    .filter_map(|l| {
        let mut it = l.split(' ');
        let name = it.next()?.to_string();
        let phase = it.next().unwrap_or("").to_string();
        let deleting = it.next().is_some_and(|d| !d.is_empty());
        Some((name, phase, deleting))
    })
    .collect()
}

/// Plays the kubelet: the pod ends in `phase`.
fn finish_pod(api: &Api, pod: &str, phase: &str) {
    let patch = format!(r#"{{"status":{{"phase":"{phase}"}}}}"#);
    let _ = api.kubectl(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

/// Finishes every running pod of `job` in `phase` until `done` holds.
fn finish_until(api: &Api, job: &str, phase: &str, what: &str, mut done: impl FnMut() -> bool) {
    eventually(Duration::from_secs(60), what, || {
        for (pod, p, deleting) in job_pods(api, job) {
            if !deleting && p != "Succeeded" && p != "Failed" {
                finish_pod(api, &pod, phase);
            }
        }
        done()
    });
}

fn conditions(api: &Api, job: &str) -> String {
    jsonpath(
        api,
        &["job", job],
        "{range .status.conditions[*]}{.type}={.status}/{.reason}/{.message}{\"\\n\"}{end}",
    )
}

fn events(api: &Api) -> String {
    get(
        api,
        &[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.source.component}: {.involvedObject.name}: {.reason}: {.message}{\"\\n\"}{end}",
        ],
    )
}

fn job_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: c\n        image: busybox:1.35\n        command: [\"true\"]\n"
    )
}

fn start() -> (Api, Kcm) {
    let api = Api::start(Kind::Mk8s);
    let kcm = Kcm::start(&api, "kcm");
    eventually(WAIT, "default service account", || {
        stdout(&api, &["get", "sa", "default"]).is_some()
    });
    (api, kcm)
}

#[test]
fn job_completes_counts_once_and_indexes() {
    let (api, kcm) = start();
    api.apply(&job_yaml("work", "  completions: 3\n  parallelism: 2\n"));
    eventually(WAIT, "2 pods", || job_pods(&api, "work").len() == 2);
    let first = job_pods(&api, "work")[0].0.clone();
    assert!(first.starts_with("work-"), "{first}");
    let meta = jsonpath(
        &api,
        &["pod", &first],
        "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller}/{.metadata.ownerReferences[0].blockOwnerDeletion} {.metadata.finalizers} {.metadata.labels.job-name}",
    );
    assert_eq!(
        meta,
        "Job/work/true/true [\"batch.kubernetes.io/job-tracking\"] work"
    );
    let uid = jsonpath(&api, &["job", "work"], "{.metadata.uid}");
    assert_eq!(
        jsonpath(
            &api,
            &["pod", &first],
            "{.metadata.labels.batch\\.kubernetes\\.io/controller-uid}"
        ),
        uid
    );

    // A pod that succeeds and is deleted while the controller is down is still counted: the
    // tracking finalizer keeps it until the next controller has counted it.
    drop(kcm);
    finish_pod(&api, &first, "Succeeded");
    api.k(&["delete", "pod", &first, "--wait=false"]);
    assert!(
        job_pods(&api, "work")
            .iter()
            .any(|(n, _, d)| *n == first && *d),
        "the finalizer holds the deleted pod"
    );
    let kcm = Kcm::start(&api, "kcm2");
    eventually(WAIT, "the deleted pod counted, then gone", || {
        jsonpath(&api, &["job", "work"], "{.status.succeeded}") == "1"
            && !job_pods(&api, "work").iter().any(|(n, _, _)| *n == first)
    });
    finish_until(&api, "work", "Succeeded", "work complete", || {
        conditions(&api, "work").contains("Complete=True")
    });
    api.k(&[
        "wait",
        "--for=condition=complete",
        "job/work",
        "--timeout=20s",
    ]);
    assert_eq!(
        jsonpath(
            &api,
            &["job", "work"],
            "{.status.succeeded} {.status.failed} {.status.active} {.status.ready}"
        ),
        "3   0"
    );
    let conds = conditions(&api, "work");
    assert!(
        conds.contains(
            "SuccessCriteriaMet=True/CompletionsReached/Reached expected number of succeeded pods"
        ),
        "{conds}"
    );
    assert!(
        jsonpath(&api, &["job", "work"], "{.status.completionTime}").ends_with('Z'),
        "completionTime set"
    );
    let ev = events(&api);
    assert_eq!(
        ev.matches("job-controller: work: SuccessfulCreate: Created pod: work-")
            .count(),
        3,
        "exactly three pods: {ev}"
    );
    assert!(
        ev.contains("job-controller: work: Completed: Job completed"),
        "{ev}"
    );
    let finalizers = get(
        &api,
        &[
            "get",
            "pods",
            "-l",
            "job-name=work",
            "-o",
            "jsonpath={.items[*].metadata.finalizers}",
        ],
    );
    assert_eq!(finalizers.trim(), "", "finalizers removed");
    let table = api.k(&["get", "job", "work"]);
    assert!(
        table.contains("Complete") && table.contains("3/3"),
        "{table}"
    );

    // Indexed: one pod an index, named and labelled by it, completedIndexes in intervals.
    api.apply(&job_yaml(
        "idx",
        "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
    ));
    eventually(WAIT, "3 indexed pods", || job_pods(&api, "idx").len() == 3);
    let mut seen = get(
        &api,
        &[
            "get",
            "pods",
            "-l",
            "job-name=idx",
            "-o",
            "jsonpath={range .items[*]}{.metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}:{.metadata.labels.batch\\.kubernetes\\.io/job-completion-index}:{.spec.hostname}:{.spec.containers[0].env[0].name}:{.metadata.name}{\"\\n\"}{end}",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect::<Vec<_>>();
    seen.sort();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (i, line) in seen.iter().enumerate() {
        let want = format!("{i}:{i}:idx-{i}:JOB_COMPLETION_INDEX:idx-{i}-");
        assert!(line.starts_with(&want), "{line} vs {want}");
    }
    let pod0 = seen[0].rsplit(':').next().unwrap().to_string();
    finish_pod(&api, &pod0, "Succeeded");
    eventually(WAIT, "index 0 completed", || {
        jsonpath(&api, &["job", "idx"], "{.status.completedIndexes}") == "0"
    });
    finish_until(&api, "idx", "Succeeded", "idx complete", || {
        conditions(&api, "idx").contains("Complete=True")
    });
    assert_eq!(
        jsonpath(
            &api,
            &["job", "idx"],
            "{.status.completedIndexes} {.status.succeeded}"
        ),
        "0-2 3"
    );
    assert_eq!(job_pods(&api, "idx").len(), 3);
    drop(kcm);
}

#[test]
fn job_fails_after_backoff_deadline_and_suspends() {
    let (api, _kcm) = start();
    // Every pod fails: backoffLimit 1 allows two pods, the second after upstream's 10 s.
    api.apply(&job_yaml("fail", "  backoffLimit: 1\n"));
    eventually(WAIT, "first pod", || job_pods(&api, "fail").len() == 1);
    let failed_at = Instant::now();
    finish_until(&api, "fail", "Failed", "a second pod", || {
        job_pods(&api, "fail").len() == 2
    });
    let waited = failed_at.elapsed();
    assert!(
        waited >= Duration::from_secs(9),
        "replaced after {waited:?}, not the 10 s back-off"
    );
    finish_until(&api, "fail", "Failed", "fail failed", || {
        conditions(&api, "fail").contains("Failed=True")
    });
    let conds = conditions(&api, "fail");
    assert!(
        conds.contains(
            "FailureTarget=True/BackoffLimitExceeded/Job has reached the specified backoff limit"
        ),
        "{conds}"
    );
    assert!(
        conds.contains(
            "Failed=True/BackoffLimitExceeded/Job has reached the specified backoff limit"
        ),
        "{conds}"
    );
    assert_eq!(
        jsonpath(
            &api,
            &["job", "fail"],
            "{.status.failed}/{.status.succeeded}"
        ),
        "2/"
    );
    assert_eq!(job_pods(&api, "fail").len(), 2, "backoffLimit+1 pods");
    api.k(&[
        "wait",
        "--for=condition=failed",
        "job/fail",
        "--timeout=10s",
    ]);
    let ev = events(&api);
    assert!(
        ev.contains(
            "job-controller: fail: BackoffLimitExceeded: Job has reached the specified backoff limit"
        ),
        "{ev}"
    );

    // activeDeadlineSeconds: the running pod is deleted and the Job fails.
    api.apply(&job_yaml("slow", "  activeDeadlineSeconds: 2\n"));
    eventually(WAIT, "slow failed", || {
        conditions(&api, "slow")
            .contains("Failed=True/DeadlineExceeded/Job was active longer than specified deadline")
    });
    eventually(WAIT, "slow's pod deleted", || {
        job_pods(&api, "slow").is_empty()
    });
    assert_eq!(jsonpath(&api, &["job", "slow"], "{.status.failed}"), "1");

    // suspend: no pods while suspended; resumed, they come.
    api.apply(&job_yaml(
        "later",
        "  suspend: true\n  parallelism: 2\n  completions: 2\n",
    ));
    eventually(WAIT, "later suspended", || {
        conditions(&api, "later").contains("Suspended=True/JobSuspended/Job suspended")
    });
    assert!(job_pods(&api, "later").is_empty());
    api.k(&[
        "patch",
        "job",
        "later",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    eventually(WAIT, "later resumed with 2 pods", || {
        job_pods(&api, "later").len() == 2
            && conditions(&api, "later").contains("Suspended=False/JobResumed/Job resumed")
    });
    api.k(&[
        "patch",
        "job",
        "later",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    eventually(WAIT, "later's pods deleted on suspend", || {
        job_pods(&api, "later").is_empty()
    });
    assert_eq!(
        jsonpath(&api, &["job", "later"], "{.status.failed}{.status.active}"),
        "",
        "suspended pods are not failures"
    );

    // Deleting a Job deletes its pods even though they carry the tracking finalizer.
    api.apply(&job_yaml("gone", ""));
    eventually(WAIT, "gone's pod", || job_pods(&api, "gone").len() == 1);
    api.k(&["delete", "job", "gone"]);
    eventually(WAIT, "gone's pod removed", || {
        job_pods(&api, "gone").is_empty()
    });
}

#[test]
fn cronjob_fires_and_ttl_deletes_finished_jobs() {
    let (api, kcm) = start();
    // TTL: a finished Job goes ttlSecondsAfterFinished later, its pods with it.
    api.apply(&job_yaml("short", "  ttlSecondsAfterFinished: 2\n"));
    finish_until(&api, "short", "Succeeded", "short complete", || {
        conditions(&api, "short").contains("Complete=True")
    });
    // Judged against the Job's own completion time: when the test sees it complete depends
    // on load, the TTL does not.
    let completed = unix_seconds(&jsonpath(
        &api,
        &["job", "short"],
        "{.status.completionTime}",
    ));
    eventually(WAIT, "short deleted", || {
        stdout(&api, &["get", "job", "short"]).is_none()
    });
    assert!(
        now_seconds() >= completed + 2,
        "deleted before its TTL (completed at {completed}, now {})",
        now_seconds()
    );
    eventually(WAIT, "short's pod deleted", || {
        job_pods(&api, "short").is_empty()
    });

    // A CronJob every minute: a Job named by the scheduled minute, owned by the CronJob.
    api.k(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox:1.35",
        "--schedule=*/1 * * * *",
        "--",
        "true",
    ]);
    let created = unix_seconds(&jsonpath(
        &api,
        &["cronjob", "tick"],
        "{.metadata.creationTimestamp}",
    ));
    let mut job = String::new();
    // Its first minute comes within 60 s; the slack is for a loaded machine, and a skipped
    // minute still fails below.
    let deadline = Instant::now() + Duration::from_secs(130);
    while job.is_empty() {
        assert!(
            Instant::now() < deadline,
            "tick's first job never came; controller-manager log:\n{}",
            kcm.log()
        );
        std::thread::sleep(Duration::from_millis(200));
        job = get(
            &api,
            &[
                "get",
                "jobs",
                "-o",
                "jsonpath={.items[?(@.metadata.ownerReferences[0].name==\"tick\")].metadata.name}",
            ],
        )
        .trim()
        .to_string();
    }
    let minutes: u64 = job.strip_prefix("tick-").unwrap().parse().unwrap();
    assert_eq!(
        minutes,
        created / 60 + 1,
        "{job} is not the first minute after the CronJob's creation at {created}"
    );
    assert_eq!(
        jsonpath(
            &api,
            &["job", &job],
            "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].controller}"
        ),
        "CronJob/true"
    );
    eventually(WAIT, "tick's status", || {
        jsonpath(&api, &["cronjob", "tick"], "{.status.active[0].name}") == job
            && !jsonpath(&api, &["cronjob", "tick"], "{.status.lastScheduleTime}").is_empty()
    });
    finish_until(&api, &job, "Succeeded", "tick's job complete", || {
        conditions(&api, &job).contains("Complete=True")
    });
    eventually(WAIT, "tick saw its job complete", || {
        jsonpath(&api, &["cronjob", "tick"], "{.status.active}").is_empty()
            && !jsonpath(&api, &["cronjob", "tick"], "{.status.lastSuccessfulTime}").is_empty()
    });
    let ev = events(&api);
    assert!(
        ev.contains(&format!(
            "cronjob-controller: tick: SuccessfulCreate: Created job {job}"
        )),
        "{ev}"
    );
    assert!(
        ev.contains(&format!(
            "cronjob-controller: tick: SawCompletedJob: Saw completed job: {job}, condition: Complete"
        )),
        "{ev}"
    );
    // A Job from the CronJob's template by hand.
    api.k(&["create", "job", "by-hand", "--from=cronjob/tick"]);
    eventually(WAIT, "by-hand's pod", || {
        job_pods(&api, "by-hand").len() == 1
    });
    api.k(&[
        "patch",
        "cronjob",
        "tick",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
}

/// Whole cluster: a Job's pod runs busybox on the real kubelet to completion, `kubectl wait`
/// sees it complete, and deleting the Job removes its pod.
pub fn job_runs_on_the_node(c: &Cluster) {
    let run = |args: &[&str]| {
        let out = c.kubectl_at(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kubectl {args:?}: {text}{err}");
        text
    };
    run(&[
        "create",
        "job",
        "e2e-job",
        "--image=busybox:1.35",
        "--",
        "sh",
        "-c",
        "echo job done",
    ]);
    run(&[
        "wait",
        "--for=condition=complete",
        "job/e2e-job",
        "--timeout=90s",
    ]);
    assert_eq!(run(&["logs", "job/e2e-job"]), "job done\n");
    assert_eq!(
        run(&[
            "get",
            "job",
            "e2e-job",
            "-o",
            "jsonpath={.status.succeeded}/{.status.failed}"
        ]),
        "1/"
    );
    run(&["delete", "job", "e2e-job"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = run(&["get", "pods", "-l", "job-name=e2e-job", "-o", "name"]);
        if pods.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "e2e-job's pod still there: {pods}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Seconds since the epoch of an RFC 3339 time, as the API server writes them.
fn unix_seconds(rfc3339: &str) -> u64 {
    let t: jiff::Timestamp = rfc3339
        .parse()
        .unwrap_or_else(|e| panic!("{rfc3339:?}: {e}"));
    t.as_second() as u64
}

fn now_seconds() -> u64 {
    jiff::Timestamp::now().as_second() as u64
}
