//! Upstream's Job controller: runs a Job's pods to `spec.completions` successes (NonIndexed or
//! Indexed), recreates failed ones with upstream's back-off until `backoffLimit`, enforces
//! `activeDeadlineSeconds` and `suspend`, and reports it all in the Job's status.
//!
//! Owns the pods it creates (controller ownerReference, the `batch.kubernetes.io/job-tracking`
//! finalizer, completion-index annotation, label, hostname and `JOB_COMPLETION_INDEX`), the
//! removal of that finalizer, the Job's `status`, and the Events `SuccessfulCreate`,
//! `SuccessfulDelete`, `FailedCreate`, `Completed`, `Suspended`, `Resumed` and the failure
//! reasons. Never touches a Job's spec or metadata, nor pods another controller owns.
//!
//! Counting is exactly once across restarts, as upstream's: a finished pod is first written to
//! `status.uncountedTerminatedPods`, then its finalizer is removed, then it moves into the
//! counters; a pod without the finalizer has been counted. The Job and its pods are read from
//! the API server on every sync, never from a cache, so a sync never works on counts older
//! than its own last write. Not done (yet): `podFailurePolicy`, `backoffLimitPerIndex`,
//! `successPolicy`, adoption of orphan pods matching a manual selector.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;

use super::metrics::Metrics;
use super::replicaset::{controller_of, controller_ref, deletion_rank, is_active};
use super::{Backoff, log_outcome};
use crate::common::events;

pub const NAME: &str = "job-controller";
pub const ALIAS: &str = "job";
const QUEUE: &str = "job";

/// Keeps a finished pod from disappearing before the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) naming an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Upstream's `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`.
const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);
/// Upstream's `MaxPodCreateDeletePerSync` and `MaxUncountedPods`.
const MAX_POD_CREATE_DELETE_PER_SYNC: usize = 500;
const MAX_UNCOUNTED_PODS: usize = 500;
/// Upstream's `names.MaxGeneratedNameLength`: a name's room before the random suffix.
const MAX_GENERATED_NAME_LENGTH: usize = 58;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {namespace}/{name}: {cause}")]
    Api {
        namespace: String,
        name: String,
        cause: kube::Error,
    },
    #[error("job {namespace}/{name}: {message}")]
    FailedCreate {
        namespace: String,
        name: String,
        message: String,
    },
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
    /// When this controller first saw a finished pod that says nothing of when it finished,
    /// by Job uid and pod uid (upstream's fallback to "now" for the back-off record).
    first_seen_finished: Mutex<HashMap<String, HashMap<String, Timestamp>>>,
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn tracked(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
}

fn condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Upstream's `IsJobFinished`: a True `Complete` or `Failed` condition.
pub(super) fn is_finished(job: &Job) -> bool {
    finish_time(job).is_some()
}

/// When a finished Job finished: its `Complete`/`Failed` condition's transition time.
pub(super) fn finish_time(job: &Job) -> Option<Option<Timestamp>> {
    ["Complete", "Failed"]
        .iter()
        .find_map(|t| condition(job, t))
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

fn suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

/// Upstream's `onlyReplaceFailedPods`: terminating pods are not yet failures.
fn only_replace_failed(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    spec.and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
        || spec.is_some_and(|s| s.pod_failure_policy.is_some())
}

/// Upstream's `isPodFailed`: Failed, or (by default) deleted before it succeeded.
fn pod_failed(pod: &Pod, job: &Job) -> bool {
    match phase(pod) {
        "Failed" => true,
        "Succeeded" => false,
        _ => !only_replace_failed(job) && pod.metadata.deletion_timestamp.is_some(),
    }
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// The completion index a pod's annotation names, if valid for `completions`.
fn completion_index(pod: &Pod, completions: i32) -> Option<i32> {
    pod.annotations()
        .get(COMPLETION_INDEX)?
        .parse::<i32>()
        .ok()
        .filter(|i| (0..completions).contains(i))
}

/// Upstream's `orderedIntervals.String()`: `0-2,4,6,7`.
fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(first) = it.next() {
        let mut last = first;
        while it.peek() == Some(&(last + 1)) {
            last += 1;
            it.next();
        }
        out.push(match last - first {
            0 => first.to_string(),
            1 => format!("{first},{last}"),
            _ => format!("{first}-{last}"),
        });
    }
    out.join(",")
}

/// `status.completedIndexes` as a set; indexes at or past `completions` are dropped.
fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            set.extend((a.max(0)..=b.min(completions - 1)).filter(|i| *i >= 0));
        }
    }
    set
}

/// Upstream's `podGenerateNameWithIndex`.
fn indexed_generate_name(job: &str, index: i32) -> String {
    let suffix = format!("-{index}-");
    if job.len() + suffix.len() <= MAX_GENERATED_NAME_LENGTH {
        return format!("{job}{suffix}");
    }
    let keep = MAX_GENERATED_NAME_LENGTH.saturating_sub(suffix.len());
    let cut = (0..=keep.min(job.len()))
        .rev()
        .find(|i| job.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}{suffix}", &job[..cut])
}

/// The pod the Job creates from its template, with the tracking finalizer and, for an
/// Indexed Job, the completion index as annotation, label, hostname and env var.
fn new_pod(job: &Job, index: Option<i32>) -> Pod {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    let mut finalizers = tm.finalizers.unwrap_or_default();
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.into());
    }
    let mut spec = template.spec.unwrap_or_default();
    let name = job.name_any();
    let generate_name = match index {
        Some(i) => {
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            spec.hostname = Some(format!("{name}-{i}"));
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..Default::default()
                }),
            };
            let containers = spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten());
            for c in containers {
                let envs = c.env.get_or_insert_with(Vec::new);
                if !envs.iter().any(|e| e.name == env.name) {
                    envs.push(env.clone());
                }
            }
            indexed_generate_name(&name, i)
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: (!labels.is_empty()).then_some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![controller_ref(job)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// When a finished pod finished: its containers' last finish, else its Ready=False
/// transition, else its deletion (upstream's `getFinishedTime`); `None` if it does not say.
fn pod_finish_time(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .chain(status.and_then(|s| s.init_container_statuses.as_ref()))
        .flatten();
    let from_containers = containers
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    from_containers
        .or_else(|| {
            status?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")?
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
        })
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
}

/// Upstream's pod-failure back-off: 10 s doubling per failure since the last success, capped
/// at 10 min, counted from the last failure; the time still to wait before a new pod.
fn backoff_remaining(
    failures_since_success: u32,
    last_failure: Timestamp,
    now: Timestamp,
) -> Duration {
    if failures_since_success == 0 {
        return Duration::ZERO;
    }
    let exp = (failures_since_success - 1).min(16);
    let delay = POD_FAILURE_BACKOFF
        .saturating_mul(1 << exp)
        .min(MAX_POD_FAILURE_BACKOFF);
    let elapsed = now.as_millisecond() - last_failure.as_millisecond();
    let elapsed = Duration::from_millis(elapsed.max(0).unsigned_abs());
    delay.saturating_sub(elapsed)
}

/// Upstream's `pastBackoffLimitOnFailure`: container restarts of running pods (restartPolicy
/// OnFailure) reaching the limit.
fn past_backoff_limit_on_failure(job: &Job, pods: &[Pod], limit: i32) -> bool {
    let on_failure = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i32 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: (!reason.is_empty()).then(|| reason.to_string()),
        message: (!message.is_empty()).then(|| message.to_string()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's `ensureJobConditionStatus`: sets a condition's status (adding it only if True);
/// whether anything changed.
fn ensure_condition(
    conds: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => false,
        Some(c) => {
            *c = new_condition(type_, status, reason, message, now);
            true
        }
        None if status == "True" => {
            conds.push(new_condition(type_, status, reason, message, now));
            true
        }
        None => false,
    }
}

fn api_err(job: &Job) -> impl Fn(kube::Error) -> JobError + '_ {
    move |cause| JobError::Api {
        namespace: job.namespace().unwrap_or_default(),
        name: job.name_any(),
        cause,
    }
}

fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Removes the tracking finalizer from a pod; `Ok(true)` once it is gone (or the pod is).
/// The resourceVersion makes a concurrent change of the list fail the patch (409, tried on
/// the next sync) rather than drop another finalizer.
async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<bool, kube::Error> {
    if !tracked(pod) {
        return Ok(true);
    }
    let rest: Vec<&String> = pod
        .finalizers()
        .iter()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    let rest = if rest.is_empty() {
        json!(null)
    } else {
        json!(rest)
    };
    let patch = json!({"metadata": {
        "finalizers": rest, "resourceVersion": pod.metadata.resource_version,
    }});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn delete_pod(api: &Api<Pod>, job: &Job, pod: &Pod, ctx: &Ctx) -> Result<bool, JobError> {
    let name = pod.name_any();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {
            let msg = format!("Deleted pod: {name}");
            events::record(&ctx.client, NAME, job, true, "SuccessfulDelete", &msg).await;
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(true),
        Err(e) => {
            let msg = format!("Error deleting: {}", error_message(&e));
            events::record(&ctx.client, NAME, job, false, "FailedDelete", &msg).await;
            Err(api_err(job)(e))
        }
    }
}

/// Creates one pod for each entry of `indexes` (`None`: NonIndexed) in doubling batches
/// (upstream's slow start); how many were made, and the first failure.
async fn create_pods(
    job: &Job,
    indexes: &[Option<i32>],
    api: &Api<Pod>,
    ctx: &Ctx,
) -> (usize, Option<String>) {
    let pp = PostParams::default();
    let (mut made, mut batch, mut next) = (0, 1, 0);
    while next < indexes.len() {
        let chunk = &indexes[next..(next + batch).min(indexes.len())];
        let results = futures::future::join_all(chunk.iter().map(|ix| {
            let pod = new_pod(job, *ix);
            let pp = &pp;
            async move { api.create(pp, &pod).await }
        }))
        .await;
        let mut failure = None;
        for r in results {
            match r {
                Ok(p) => {
                    let msg = format!("Created pod: {}", p.name_any());
                    events::record(&ctx.client, NAME, job, true, "SuccessfulCreate", &msg).await;
                    made += 1;
                }
                Err(e) => {
                    let msg = error_message(&e);
                    let text = format!("Error creating: {msg}");
                    events::record(&ctx.client, NAME, job, false, "FailedCreate", &text).await;
                    failure.get_or_insert(msg);
                }
            }
        }
        if failure.is_some() {
            return (made, failure);
        }
        next += chunk.len();
        batch *= 2;
    }
    (made, None)
}

/// What ends the Job, once its pods are gone: a pending `Complete` or `Failed` condition.
#[derive(Clone, Debug, PartialEq)]
struct Finish {
    success: bool,
    reason: String,
    message: String,
}

/// The pods of one sync, read once.
struct View<'a> {
    job: &'a Job,
    pods: Vec<Pod>,
    indexed: bool,
    completions: Option<i32>,
}

impl View<'_> {
    fn active(&self) -> Vec<&Pod> {
        self.pods.iter().filter(|p| is_active(p)).collect()
    }

    /// The active pods to delete so that at most `want` stay: for an Indexed Job first those
    /// with an invalid or duplicate index, then in upstream's deletion order.
    fn pods_to_delete(&self, want: usize) -> Vec<&Pod> {
        let mut active = self.active();
        let mut out = Vec::new();
        if self.indexed {
            let c = self.completions.unwrap_or(0);
            let mut seen = HashSet::new();
            active.sort_by_key(|p| std::cmp::Reverse(is_ready(p)));
            active.retain(|p| match completion_index(p, c) {
                Some(i) if seen.insert(i) => true,
                _ => {
                    out.push(*p);
                    false
                }
            });
        }
        active.sort_by_cached_key(|p| deletion_rank(p));
        let surplus = active.len().saturating_sub(want);
        out.extend(active.into_iter().take(surplus));
        out.truncate(MAX_POD_CREATE_DELETE_PER_SYNC);
        out
    }
}

async fn sync(cached: &Job, ctx: &Ctx) -> Result<Option<Duration>, JobError> {
    let ns = cached.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    // The cache may not have our own last status write yet; counting from it could recount.
    let Some(job) = jobs
        .get_opt(&cached.name_any())
        .await
        .map_err(api_err(cached))?
    else {
        ctx.first_seen_finished
            .lock()
            .remove(&cached.uid().unwrap_or_default());
        return Ok(None);
    };
    let job = &job;
    let uid = job.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default())
        .await
        .map_err(api_err(job))?
        .items
        .into_iter()
        .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid && r.kind == "Job"))
        .collect();
    if is_finished(job) {
        // A sync that stopped midway may have left finalizers behind.
        for p in pods.iter().filter(|p| tracked(p)) {
            remove_finalizer(&pods_api, p).await.map_err(api_err(job))?;
        }
        ctx.first_seen_finished.lock().remove(&uid);
        return Ok(None);
    }
    let spec = job.spec.clone().unwrap_or_default();
    let mode = spec.completion_mode.as_deref().unwrap_or("NonIndexed");
    if mode != "NonIndexed" && mode != "Indexed" {
        let msg = "Skipped Job sync because completion mode is unknown";
        events::record(&ctx.client, NAME, job, false, "UnknownCompletionMode", msg).await;
        return Ok(None);
    }
    let now = Timestamp::now();
    let view = View {
        job,
        pods,
        indexed: mode == "Indexed",
        completions: spec.completions,
    };
    let old_status = job.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let unc = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut unc_succeeded: Vec<String> = unc.succeeded.unwrap_or_default();
    let mut unc_failed: Vec<String> = unc.failed.unwrap_or_default();
    let uid_of = |p: &Pod| p.uid().unwrap_or_default();

    let active_pods = view.active();
    let mut active = active_pods.len();
    let mut ready = active_pods.iter().filter(|p| is_ready(p)).count();
    let mut terminating_count = view.pods.iter().filter(|p| terminating(p)).count();
    let new_succeeded = view
        .pods
        .iter()
        .filter(|p| tracked(p) && phase(p) == "Succeeded" && !unc_succeeded.contains(&uid_of(p)))
        .count();
    let new_failed = view
        .pods
        .iter()
        .filter(|p| tracked(p) && pod_failed(p, job) && !unc_failed.contains(&uid_of(p)))
        .count();
    let counted_succeeded = status.succeeded.unwrap_or(0);
    let counted_failed = status.failed.unwrap_or(0);
    let mut succeeded = counted_succeeded + (new_succeeded + unc_succeeded.len()) as i32;
    let failed = counted_failed + (new_failed + unc_failed.len()) as i32;

    if status.start_time.is_none() && !suspended(job) {
        status.start_time = Some(Time(now));
    }
    let mut conds = status.conditions.take().unwrap_or_default();
    let mut recheck: Option<Duration> = None;
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let mut finish: Option<Finish> = None;
    if let Some(c) = condition(job, "SuccessCriteriaMet") {
        finish = Some(Finish {
            success: true,
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        });
    } else if let Some(c) = condition(job, "FailureTarget") {
        finish = Some(Finish {
            success: false,
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        });
    } else if failed > backoff_limit
        || past_backoff_limit_on_failure(job, &view.pods, backoff_limit)
    {
        finish = Some(Finish {
            success: false,
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
        });
    } else if let (Some(ads), Some(start)) = (spec.active_deadline_seconds, &status.start_time)
        && !suspended(job)
    {
        let deadline = start.0.as_millisecond() + ads * 1000;
        let left = deadline - now.as_millisecond();
        if left <= 0 {
            finish = Some(Finish {
                success: false,
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
            });
        } else {
            recheck = Some(Duration::from_millis(left.unsigned_abs()));
        }
    }

    let completions = spec.completions.unwrap_or(0);
    let mut succeeded_indexes = BTreeSet::new();
    if view.indexed {
        succeeded_indexes = parse_indexes(
            status.completed_indexes.as_deref().unwrap_or(""),
            completions,
        );
        succeeded_indexes.extend(
            view.pods
                .iter()
                .filter(|p| phase(p) == "Succeeded" && tracked(p))
                .filter_map(|p| completion_index(p, completions)),
        );
        succeeded = succeeded_indexes.len() as i32;
    }

    let mut create_failure = None;
    if finish.is_some() {
        // Upstream deletes the active pods keeping their finalizers; they count as failed.
        let mut deleted = 0;
        let mut deleted_ready = 0;
        for p in &active_pods {
            if delete_pod(&pods_api, job, p, ctx).await? {
                deleted += 1;
                deleted_ready += usize::from(is_ready(p));
            }
        }
        active -= deleted;
        ready -= deleted_ready;
        terminating_count += deleted;
    } else {
        let mut managed = false;
        if job.metadata.deletion_timestamp.is_none() {
            managed = true;
            let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
            if suspended(job) {
                // A suspended Job's pods are not failures: finalizers go before the delete.
                for p in view.pods_to_delete(0) {
                    remove_finalizer(&pods_api, p).await.map_err(api_err(job))?;
                    if delete_pod(&pods_api, job, p, ctx).await? {
                        active -= 1;
                        ready -= usize::from(is_ready(p));
                        terminating_count += 1;
                    }
                }
            } else {
                let want = match spec.completions {
                    None if succeeded > 0 => active,
                    None => parallelism,
                    Some(c) => ((c - succeeded).max(0) as usize).min(parallelism),
                };
                let surplus = view.pods_to_delete(want);
                if !surplus.is_empty() {
                    for p in surplus {
                        remove_finalizer(&pods_api, p).await.map_err(api_err(job))?;
                        if delete_pod(&pods_api, job, p, ctx).await? {
                            active -= 1;
                            ready -= usize::from(is_ready(p));
                            terminating_count += 1;
                        }
                    }
                } else if want > active {
                    let wait = backoff_wait(&view, ctx, &uid, now);
                    if wait > Duration::ZERO {
                        recheck = Some(recheck.map_or(wait, |r| r.min(wait)));
                    } else {
                        let n = (want - active).min(MAX_POD_CREATE_DELETE_PER_SYNC);
                        let indexes: Vec<Option<i32>> = if view.indexed {
                            let busy: HashSet<i32> = active_pods
                                .iter()
                                .filter_map(|p| completion_index(p, completions))
                                .collect();
                            (0..completions)
                                .filter(|i| !succeeded_indexes.contains(i) && !busy.contains(i))
                                .take(n)
                                .map(Some)
                                .collect()
                        } else {
                            vec![None; n]
                        };
                        let (made, failure) = create_pods(job, &indexes, &pods_api, ctx).await;
                        active += made;
                        create_failure = failure;
                    }
                }
            }
        }
        let complete = match spec.completions {
            None => succeeded > 0 && active == 0,
            Some(c) => succeeded >= c && active == 0,
        };
        if complete {
            finish = Some(Finish {
                success: true,
                reason: "CompletionsReached".into(),
                message: "Reached expected number of succeeded pods".into(),
            });
        } else if managed {
            let changed = if suspended(job) {
                ensure_condition(
                    &mut conds,
                    "Suspended",
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                )
            } else {
                ensure_condition(
                    &mut conds,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                    now,
                )
            };
            if changed && suspended(job) {
                events::record(&ctx.client, NAME, job, true, "Suspended", "Job suspended").await;
            } else if changed {
                events::record(&ctx.client, NAME, job, true, "Resumed", "Job resumed").await;
                // The deadline counts from the resume (upstream resets startTime).
                status.start_time = Some(Time(now));
            }
        }
    }

    // Track finished pods: into uncounted, finalizer off, then into the counters.
    let failing = finish.as_ref().is_some_and(|f| !f.success);
    let mut to_release: Vec<&Pod> = Vec::new();
    let mut reached_max = false;
    for p in view.pods.iter().filter(|p| tracked(p)) {
        let considered_failed = pod_failed(p, job);
        let can_release = job.metadata.deletion_timestamp.is_some()
            || finish.is_some()
            || phase(p) == "Succeeded"
            || considered_failed;
        if !can_release {
            continue;
        }
        to_release.push(p);
        let pid = uid_of(p);
        if phase(p) == "Succeeded" && !unc_failed.contains(&pid) {
            if view.indexed {
                if let Some(i) = completion_index(p, completions) {
                    succeeded_indexes.insert(i);
                }
            } else if !unc_succeeded.contains(&pid) {
                unc_succeeded.push(pid);
            }
        } else if (considered_failed || failing)
            && !unc_failed.contains(&pid)
            && (!view.indexed || completion_index(p, completions).is_some())
        {
            unc_failed.push(pid);
        }
        if unc_succeeded.len() + unc_failed.len() >= MAX_UNCOUNTED_PODS {
            reached_max = true;
            break;
        }
    }
    if view.indexed {
        status.completed_indexes = Some(format_indexes(&succeeded_indexes));
        status.succeeded = Some(succeeded_indexes.len() as i32).filter(|n| *n > 0);
    }
    // Final condition to set once the pods are gone.
    let mut final_cond = None;
    if let Some(f) = &finish {
        let interim = if f.success {
            "SuccessCriteriaMet"
        } else {
            "FailureTarget"
        };
        if !conds
            .iter()
            .any(|c| c.type_ == interim && c.status == "True")
        {
            conds.push(new_condition(interim, "True", &f.reason, &f.message, now));
        }
        final_cond = Some(if f.success { "Complete" } else { "Failed" });
    }
    status.active = Some(active as i32).filter(|n| *n > 0);
    status.ready = Some(ready as i32);
    status.terminating = Some(terminating_count as i32);
    status.conditions = (!conds.is_empty()).then_some(conds);
    set_uncounted(&mut status, &unc_succeeded, &unc_failed);
    let mut current = job.clone();
    if current.status.as_ref() != Some(&status) {
        current = write_status(&jobs, &current, &status).await?;
    }

    let mut still_tracked: HashSet<String> = view
        .pods
        .iter()
        .filter(|p| tracked(p))
        .map(uid_of)
        .collect();
    for p in &to_release {
        if remove_finalizer(&pods_api, p).await.map_err(api_err(job))? {
            still_tracked.remove(&uid_of(p));
        }
    }
    let mut status = current.status.clone().unwrap_or_default();
    let moved_s = unc_succeeded
        .iter()
        .filter(|u| !still_tracked.contains(*u))
        .count() as i32;
    let moved_f = unc_failed
        .iter()
        .filter(|u| !still_tracked.contains(*u))
        .count() as i32;
    unc_succeeded.retain(|u| still_tracked.contains(u));
    unc_failed.retain(|u| still_tracked.contains(u));
    if !view.indexed {
        status.succeeded = Some(counted_succeeded + moved_s).filter(|n| *n > 0);
    }
    status.failed = Some(counted_failed + moved_f).filter(|n| *n > 0);
    set_uncounted(&mut status, &unc_succeeded, &unc_failed);
    let finished_now = match (final_cond, &finish) {
        (Some(t), Some(f))
            if !reached_max
                && unc_succeeded.is_empty()
                && unc_failed.is_empty()
                && terminating_count == 0 =>
        {
            let mut conds = status.conditions.take().unwrap_or_default();
            ensure_condition(&mut conds, t, "True", &f.reason, &f.message, now);
            status.conditions = Some(conds);
            if f.success {
                status.completion_time = Some(Time(now));
            }
            true
        }
        _ => false,
    };
    if current.status.as_ref() != Some(&status) {
        write_status(&jobs, &current, &status).await?;
    }
    if finished_now && let Some(f) = &finish {
        if f.success {
            if let Some(c) = spec.completions
                && status.succeeded.unwrap_or(0) > c
            {
                let msg = "Too many succeeded pods running after completion count reached";
                events::record(&ctx.client, NAME, job, false, "TooManySucceededPods", msg).await;
            }
            events::record(&ctx.client, NAME, job, true, "Completed", "Job completed").await;
        } else {
            events::record(&ctx.client, NAME, job, false, &f.reason, &f.message).await;
        }
        ctx.first_seen_finished.lock().remove(&uid);
        return Ok(None);
    }
    if let Some(message) = create_failure {
        return Err(JobError::FailedCreate {
            namespace: ns,
            name: job.name_any(),
            message,
        });
    }
    Ok(recheck)
}

fn set_uncounted(status: &mut JobStatus, succeeded: &[String], failed: &[String]) {
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: (!succeeded.is_empty()).then(|| succeeded.to_vec()),
        failed: (!failed.is_empty()).then(|| failed.to_vec()),
    });
}

/// The time still to wait before replacing failed pods, from the pods themselves (so a
/// restarted controller keeps the back-off): failures since the last success, counted from
/// the last failure.
fn backoff_wait(view: &View<'_>, ctx: &Ctx, job_uid: &str, now: Timestamp) -> Duration {
    let mut seen = ctx.first_seen_finished.lock();
    let seen = seen.entry(job_uid.to_string()).or_default();
    let mut finished_at = |p: &Pod| {
        pod_finish_time(p)
            .unwrap_or_else(|| *seen.entry(p.uid().unwrap_or_default()).or_insert(now))
    };
    let last_success = view
        .pods
        .iter()
        .filter(|p| phase(p) == "Succeeded")
        .map(&mut finished_at)
        .max();
    let failures: Vec<Timestamp> = view
        .pods
        .iter()
        .filter(|p| pod_failed(p, view.job))
        .map(&mut finished_at)
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    match failures.iter().max() {
        Some(last) => backoff_remaining(failures.len() as u32, *last, now),
        None => Duration::ZERO,
    }
}

/// Writes a Job's status with its resourceVersion (a stale view fails with 409 and is retried,
/// never overwrites counts); the Job as stored now.
async fn write_status(api: &Api<Job>, job: &Job, status: &JobStatus) -> Result<Job, JobError> {
    let mut next = job.clone();
    next.status = Some(status.clone());
    api.replace_status(&job.name_any(), &PostParams::default(), &next)
        .await
        .map_err(api_err(job))
}

fn key(job: &Job) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, JobError> {
    let result = sync(&job, &ctx).await;
    ctx.backoff.settle(NAME, &key(&job), result)
}

fn error_policy(job: Arc<Job>, e: &JobError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&key(&job), "job sync failed", e)
}

/// Upstream's orphan-pod cleanup: a pod still carrying the tracking finalizer whose Job is
/// gone (deleted with background propagation) would never go away; its finalizer is removed
/// once a GET confirms the Job is gone or replaced.
async fn release_orphans(client: kube::Client, store: Store<Job>) {
    let pods: Api<Pod> = Api::all(client.clone());
    // Pods of non-manual selectors carry this label; the watch need not see every pod.
    let cfg = watcher::Config::default().labels("batch.kubernetes.io/controller-uid");
    watcher(pods, cfg)
        .default_backoff()
        .applied_objects()
        .for_each(|pod| {
            let (client, store) = (client.clone(), store.clone());
            async move {
                let Ok(pod) = pod else { return };
                if !tracked(&pod) {
                    return;
                }
                let ns = pod.namespace().unwrap_or_default();
                let owner = controller_of(&pod.metadata).filter(|r| r.kind == "Job");
                if let Some(r) = owner {
                    let cached = store.get(&ObjectRef::new(&r.name).within(&ns));
                    if cached.is_some_and(|j| j.uid().as_deref() == Some(r.uid.as_str())) {
                        return;
                    }
                    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
                    match jobs.get_opt(&r.name).await {
                        Ok(Some(j)) if j.uid().as_deref() == Some(r.uid.as_str()) => return,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, pod = pod.name_any(), "looking up a pod's job");
                            return;
                        }
                    }
                }
                let api: Api<Pod> = Api::namespaced(client, &ns);
                if let Err(e) = remove_finalizer(&api, &pod).await {
                    tracing::warn!(error = %e, pod = pod.name_any(), "releasing an orphan job pod");
                }
            }
        })
        .await;
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        backoff: Backoff::new(QUEUE, metrics),
        first_seen_finished: Mutex::default(),
    });
    let controller = Controller::new(jobs, watcher::Config::default());
    let store = controller.store();
    let main = controller
        .owns(pods, watcher::Config::default())
        .with_config(RunConfig::default().concurrency(concurrency))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r));
    futures::join!(main, release_orphans(client, store));
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus, PodTemplateSpec};

    fn job(indexed: bool) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                completions: Some(3),
                completion_mode: Some(if indexed { "Indexed" } else { "NonIndexed" }.into()),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("job-name".to_string(), "pi".to_string())].into()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(phase: &str, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                deletion_timestamp: deleting.then(|| Time(Timestamp::now())),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn completed_indexes_use_upstreams_intervals() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7, 9].into();
        assert_eq!(format_indexes(&set), "0-2,4,6,7,9");
        assert_eq!(parse_indexes("0-2,4,6,7,9", 10), set);
        assert_eq!(parse_indexes("0-2,4,6,7,9", 5), [0, 1, 2, 4].into());
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert!(parse_indexes("", 3).is_empty());
    }

    #[test]
    fn pods_carry_the_finalizer_and_their_index() {
        let p = new_pod(&job(true), Some(2));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(p.annotations()[COMPLETION_INDEX], "2");
        assert_eq!(p.labels()[COMPLETION_INDEX], "2");
        assert_eq!(p.labels()["job-name"], "pi");
        assert!(tracked(&p));
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
        let owner = &p.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
        let p = new_pod(&job(false), None);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
        assert!(!p.annotations().contains_key(COMPLETION_INDEX));
        assert_eq!(
            indexed_generate_name(&"a".repeat(60), 12),
            format!("{}-12-", "a".repeat(54))
        );
    }

    #[test]
    fn failure_back_off_doubles_to_ten_minutes() {
        let now = Timestamp::now();
        assert_eq!(backoff_remaining(0, now, now), Duration::ZERO);
        assert_eq!(backoff_remaining(1, now, now), Duration::from_secs(10));
        assert_eq!(backoff_remaining(3, now, now), Duration::from_secs(40));
        assert_eq!(backoff_remaining(20, now, now), Duration::from_secs(600));
        let earlier = Timestamp::from_second(now.as_second() - 15).unwrap();
        assert!(backoff_remaining(2, earlier, now) <= Duration::from_secs(5));
        assert_eq!(backoff_remaining(1, earlier, now), Duration::ZERO);
    }

    #[test]
    fn deleted_pods_fail_unless_only_failed_are_replaced() {
        let mut j = job(false);
        assert!(pod_failed(&pod("Failed", false), &j));
        assert!(pod_failed(&pod("Running", true), &j));
        assert!(!pod_failed(&pod("Succeeded", true), &j));
        assert!(!pod_failed(&pod("Running", false), &j));
        j.spec.as_mut().unwrap().pod_replacement_policy = Some("Failed".into());
        assert!(!pod_failed(&pod("Running", true), &j));
    }

    #[test]
    fn conditions_are_added_only_when_true() {
        let now = Timestamp::now();
        let mut conds = Vec::new();
        assert!(!ensure_condition(
            &mut conds,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now
        ));
        assert!(ensure_condition(
            &mut conds,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now
        ));
        assert!(!ensure_condition(
            &mut conds,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now
        ));
        assert!(ensure_condition(
            &mut conds,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now
        ));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].reason.as_deref(), Some("JobResumed"));
    }
}
