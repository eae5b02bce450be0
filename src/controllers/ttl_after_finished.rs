//! Upstream's TTL-after-finished controller: deletes a finished Job (`Complete` or `Failed`)
//! `spec.ttlSecondsAfterFinished` seconds after it finished, with foreground propagation so
//! its pods go first.
//!
//! Owns only those deletions; never changes a Job, and leaves Jobs without the field, not yet
//! finished, or already being deleted alone. The Job is read again before the delete, and
//! the delete is conditional on its uid and resourceVersion, so a Job changed meanwhile (its
//! TTL extended, say) is looked at again instead.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PropagationPolicy};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::job::finish_time;
use super::metrics::Metrics;
use super::{Backoff, log_outcome};

pub const NAME: &str = "ttl-after-finished-controller";
pub const ALIAS: &str = "ttl-after-finished";
const QUEUE: &str = "ttl_jobs_to_delete";

#[derive(Debug, thiserror::Error)]
pub enum TtlError {
    #[error("job {namespace}/{name}: {cause}")]
    Api {
        namespace: String,
        name: String,
        cause: kube::Error,
    },
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
}

/// How long until a Job expires: `None` if it never does (no TTL, not finished, being
/// deleted), zero if it has.
fn time_left(job: &Job, now: Timestamp) -> Option<Duration> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    // A finished Job whose condition has no time counts from now, as upstream warns and does.
    let finished = finish_time(job)?.unwrap_or(now);
    let expires = finished.as_millisecond() + i64::from(ttl) * 1000;
    Some(Duration::from_millis(
        (expires - now.as_millisecond()).max(0).unsigned_abs(),
    ))
}

async fn sync(cached: &Job, ctx: &Ctx) -> Result<Option<Duration>, TtlError> {
    match time_left(cached, Timestamp::now()) {
        None => return Ok(None),
        Some(left) if !left.is_zero() => return Ok(Some(left)),
        Some(_) => {}
    }
    let ns = cached.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let err = |cause| TtlError::Api {
        namespace: ns.clone(),
        name: cached.name_any(),
        cause,
    };
    let Some(job) = api.get_opt(&cached.name_any()).await.map_err(err)? else {
        return Ok(None);
    };
    match time_left(&job, Timestamp::now()) {
        None => return Ok(None),
        Some(left) if !left.is_zero() => return Ok(Some(left)),
        Some(_) => {}
    }
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(kube::api::Preconditions {
            uid: job.uid(),
            resource_version: job.resource_version(),
        }),
        ..Default::default()
    };
    match api.delete(&job.name_any(), &dp).await {
        Ok(_) => {
            tracing::info!(job = %format!("{ns}/{}", job.name_any()), "deleted finished job past its TTL");
            Ok(None)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        // Changed since read: the watch brings the new version.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(e) => Err(err(e)),
    }
}

fn key(job: &Job) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, TtlError> {
    let result = sync(&job, &ctx).await;
    ctx.backoff.settle(NAME, &key(&job), result)
}

fn error_policy(job: Arc<Job>, e: &TtlError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff
        .retry(&key(&job), "ttl-after-finished sync failed", e)
}

/// Runs until the watch stream ends (it does not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let jobs: Api<Job> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::new(QUEUE, metrics),
    });
    Controller::new(jobs, watcher::Config::default())
        .with_config(RunConfig::default().concurrency(concurrency))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn job(ttl: Option<i32>, cond: Option<(&str, i64)>) -> Job {
        Job {
            spec: Some(JobSpec {
                ttl_seconds_after_finished: ttl,
                ..Default::default()
            }),
            status: cond.map(|(t, at)| JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: t.into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::from_second(at).unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn finished_jobs_expire_ttl_after_their_condition() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(time_left(&job(None, Some(("Complete", 900))), now), None);
        assert_eq!(time_left(&job(Some(10), None), now), None);
        assert_eq!(
            time_left(&job(Some(10), Some(("SuccessCriteriaMet", 900))), now),
            None
        );
        assert_eq!(
            time_left(&job(Some(150), Some(("Complete", 900))), now),
            Some(Duration::from_secs(50))
        );
        assert_eq!(
            time_left(&job(Some(10), Some(("Failed", 900))), now),
            Some(Duration::ZERO)
        );
        let mut deleting = job(Some(0), Some(("Complete", 900)));
        deleting.metadata.deletion_timestamp = Some(Time(now));
        assert_eq!(time_left(&deleting, now), None);
    }
}
