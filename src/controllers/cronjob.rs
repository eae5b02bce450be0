//! Upstream's CronJob controller: creates a Job `<cronjob>-<scheduled minutes since epoch>`
//! from `spec.jobTemplate` at each time of the cron schedule (in `spec.timeZone`, else the
//! controller manager's), honouring `concurrencyPolicy`, `startingDeadlineSeconds` and
//! `suspend`, and keeps `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` finished Jobs.
//!
//! Owns the Jobs it creates (controller ownerReference), their deletion for `Replace` and the
//! history limits, the CronJob's `status` (`active`, `lastScheduleTime`,
//! `lastSuccessfulTime`) and the Events `SuccessfulCreate`, `SawCompletedJob`,
//! `SuccessfulDelete`, `MissingJob`, `JobAlreadyActive`, `UnparseableSchedule`,
//! `UnknownTimeZone`, `MissSchedule`, `TooManyMissedTimes`. Never touches the CronJob's spec
//! nor a Job's pods (the Job and garbage collector controllers do).
//!
//! Schedules are robfig/cron's "standard" ones, as upstream parses them: five fields with
//! names, ranges, steps and lists, `?`, the day-of-month/day-of-week "either" rule, and the
//! `@yearly`…`@hourly` descriptors. `@every <duration>` is rejected as unparseable here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};

use super::job::is_finished;
use super::metrics::Metrics;
use super::replicaset::{controller_of, controller_ref};
use super::{Backoff, log_outcome};
use crate::common::events;

pub const NAME: &str = "cronjob-controller";
pub const ALIAS: &str = "cronjob";
const QUEUE: &str = "cronjob";

/// The annotation upstream puts on each Job: its scheduled time, RFC 3339 in the CronJob's zone.
const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this is worth a warning (upstream's 100).
const TOO_MANY_MISSED: u32 = 100;
/// How far ahead a next time is looked for before a schedule counts as never firing.
const SEARCH_YEARS: i16 = 5;

#[derive(Debug, thiserror::Error)]
pub enum CronJobError {
    #[error("cron job {namespace}/{name}: {cause}")]
    Api {
        namespace: String,
        name: String,
        cause: kube::Error,
    },
}

/// A parsed schedule: one bit a permitted value per field, as robfig/cron keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Whether day-of-month or day-of-week was `*`/`?`: then both must match, else either.
    dom_star: bool,
    dow_star: bool,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's bits and whether it was a bare `*`/`?` (robfig's star bit).
fn parse_field(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    first: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for expr in field.split(',') {
        let (range, step) = match expr.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| format!("failed to parse int from {s}"))?;
                if s == 0 {
                    return Err(format!("step of range should be a positive number: {expr}"));
                }
                (r, Some(s))
            }
            None => (expr, None),
        };
        let value = |v: &str| -> Result<u32, String> {
            let lower = v.to_ascii_lowercase();
            match names.iter().position(|n| *n == lower) {
                Some(i) => Ok(i as u32 + first),
                None => v
                    .parse::<u32>()
                    .map_err(|_| format!("failed to parse int from {v}")),
            }
        };
        let (lo, hi, is_star) = if range == "*" || range == "?" {
            (min, max, true)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?, false)
        } else {
            let v = value(range)?;
            // `N/step` means `N-max/step`.
            (v, if step.is_some() { max } else { v }, false)
        };
        if lo < min {
            return Err(format!(
                "beginning of range ({lo}) below minimum ({min}): {expr}"
            ));
        }
        if hi > max {
            return Err(format!("end of range ({hi}) above maximum ({max}): {expr}"));
        }
        if lo > hi {
            return Err(format!(
                "beginning of range ({lo}) beyond end of range ({hi}): {expr}"
            ));
        }
        let step = step.unwrap_or(1);
        star |= is_star && step == 1;
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parses a standard cron spec as robfig/cron's `ParseStandard` does.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let expanded = match spec {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(format!("unrecognized descriptor: {s}")),
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {spec}",
                fields.len()
            ));
        }
        let (minute, _) = parse_field(fields[0], 0, 59, &[], 0)?;
        let (hour, _) = parse_field(fields[1], 0, 23, &[], 0)?;
        let (dom, dom_star) = parse_field(fields[2], 1, 31, &[], 0)?;
        let (month, _) = parse_field(fields[3], 1, 12, MONTHS, 1)?;
        let (dow, dow_star) = parse_field(fields[4], 0, 6, DAYS, 0)?;
        Ok(Schedule {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
        })
    }

    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.dom & (1 << dt.day()) != 0;
        let dow = self.dow & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first schedule time strictly after `after`, in wall-clock time of `tz`.
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        let mut dt = start
            .date()
            .at(start.hour(), start.minute(), 0, 0)
            .checked_add(SignedDuration::from_mins(1))
            .ok()?;
        let last_year = start.year().saturating_add(SEARCH_YEARS);
        while dt.year() <= last_year {
            if self.month & (1 << dt.month()) == 0 {
                dt = dt
                    .date()
                    .first_of_month()
                    .checked_add(Span::new().months(1))
                    .ok()?
                    .at(0, 0, 0, 0);
                continue;
            }
            if !self.day_matches(dt) {
                dt = dt.date().tomorrow().ok()?.at(0, 0, 0, 0);
                continue;
            }
            if self.hour & (1 << dt.hour()) == 0 {
                dt = dt
                    .date()
                    .at(dt.hour(), 0, 0, 0)
                    .checked_add(SignedDuration::from_hours(1))
                    .ok()?;
                continue;
            }
            if self.minute & (1 << dt.minute()) == 0 {
                dt = dt.checked_add(SignedDuration::from_mins(1)).ok()?;
                continue;
            }
            let ts = tz.to_ambiguous_zoned(dt).compatible().ok()?.timestamp();
            if ts > after {
                return Some(ts);
            }
            // A repeated wall-clock hour (DST fold) maps back before `after`.
            dt = dt.checked_add(SignedDuration::from_mins(1)).ok()?;
        }
        None
    }

    /// Upstream's `mostRecentScheduleTime`: the latest schedule time in `(earliest, now]` and
    /// how many there were (counting stops past [`TOO_MANY_MISSED`]).
    fn most_recent(
        &self,
        earliest: Timestamp,
        now: Timestamp,
        tz: &TimeZone,
    ) -> (Option<Timestamp>, u32) {
        let mut latest = None;
        let mut missed = 0u32;
        let mut t = earliest;
        while let Some(n) = self.next(t, tz) {
            if n > now {
                break;
            }
            latest = Some(n);
            missed += 1;
            t = n;
            if missed > TOO_MANY_MISSED {
                // Only the latest matters now; jump to a year before `now` to find it fast.
                let year_ago = Timestamp::from_second(now.as_second() - 366 * 24 * 3600).ok();
                if let Some(y) = year_ago.filter(|y| *y > t) {
                    t = y;
                }
                while let Some(n) = self.next(t, tz) {
                    if n > now {
                        break;
                    }
                    latest = Some(n);
                    t = n;
                }
                break;
            }
        }
        (latest, missed)
    }
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
}

fn api_err(cj: &CronJob) -> impl Fn(kube::Error) -> CronJobError + '_ {
    move |cause| CronJobError::Api {
        namespace: cj.namespace().unwrap_or_default(),
        name: cj.name_any(),
        cause,
    }
}

/// The finished condition of a Job: `Complete` or `Failed`.
fn finished_type(job: &Job) -> Option<&'static str> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    ["Complete", "Failed"]
        .into_iter()
        .find(|t| conds.iter().any(|c| c.type_ == *t && c.status == "True"))
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Go's RFC 3339 of a time in a zone (`Z` for UTC).
fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job for one scheduled time, as upstream's `getJobFromTemplate2`.
fn job_for(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339_in(scheduled, tz));
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", cj.name_any(), scheduled.as_second() / 60)),
            namespace: cj.namespace(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

async fn delete_job(
    api: &Api<Job>,
    cj: &CronJob,
    name: &str,
    ctx: &Ctx,
) -> Result<(), CronJobError> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {
            let msg = format!("Deleted job {name}");
            events::record(&ctx.client, NAME, cj, true, "SuccessfulDelete", &msg).await;
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => {
            let msg = format!("Deleted job {name}: {e}");
            events::record(&ctx.client, NAME, cj, false, "FailedDelete", &msg).await;
            Err(api_err(cj)(e))
        }
    }
}

/// Deletes the oldest finished Jobs beyond the history limits.
async fn clean_history(
    cj: &CronJob,
    jobs: &[Job],
    api: &Api<Job>,
    ctx: &Ctx,
) -> Result<HashSet<String>, CronJobError> {
    let spec = cj.spec.as_ref();
    let mut gone = HashSet::new();
    for (kind, limit) in [
        (
            "Complete",
            spec.and_then(|s| s.successful_jobs_history_limit),
        ),
        ("Failed", spec.and_then(|s| s.failed_jobs_history_limit)),
    ] {
        let Some(limit) = limit else { continue };
        let mut done: Vec<&Job> = jobs
            .iter()
            .filter(|j| finished_type(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
            .collect();
        let surplus = done.len().saturating_sub(limit.max(0) as usize);
        done.sort_by_key(|j| {
            let start = j.status.as_ref().and_then(|s| s.start_time.as_ref());
            (
                start.is_some(),
                start
                    .or(j.metadata.creation_timestamp.as_ref())
                    .map(|t| t.0),
            )
        });
        for j in done.into_iter().take(surplus) {
            delete_job(api, cj, &j.name_any(), ctx).await?;
            gone.insert(j.name_any());
        }
    }
    Ok(gone)
}

async fn sync(cached: &CronJob, ctx: &Ctx) -> Result<Option<Duration>, CronJobError> {
    let ns = cached.namespace().unwrap_or_default();
    let cjs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    // A cached status could be older than our own last schedule: read it fresh.
    let Some(cj) = cjs
        .get_opt(&cached.name_any())
        .await
        .map_err(api_err(cached))?
    else {
        return Ok(None);
    };
    let cj = &cj;
    let uid = cj.uid().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let jobs: Vec<Job> = api
        .list(&ListParams::default())
        .await
        .map_err(api_err(cj))?
        .items
        .into_iter()
        .filter(|j| controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
        .collect();
    let mut status = cj.status.clone().unwrap_or_default();
    let mut active = status.active.take().unwrap_or_default();
    let in_active = |active: &[ObjectReference], j: &Job| active.iter().any(|r| r.uid == j.uid());
    for j in &jobs {
        let finished = finished_type(j);
        if finished.is_none() && !in_active(&active, j) {
            active.push(job_ref(j));
        }
        if let Some(kind) = finished {
            if in_active(&active, j) {
                let msg = format!("Saw completed job: {}, condition: {kind}", j.name_any());
                events::record(&ctx.client, NAME, cj, true, "SawCompletedJob", &msg).await;
                active.retain(|r| r.uid != j.uid());
            }
            let completed = j.status.as_ref().and_then(|s| s.completion_time.clone());
            if kind == "Complete"
                && let Some(t) = completed
                && status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|l| l.0 < t.0)
            {
                status.last_successful_time = Some(t);
            }
        }
    }
    let mut missing = Vec::new();
    active.retain(|r| {
        let present = jobs.iter().any(|j| j.uid() == r.uid);
        if !present {
            missing.push(r.name.clone().unwrap_or_default());
        }
        present
    });
    for name in missing {
        let msg = format!("Active job went missing: {name}");
        events::record(&ctx.client, NAME, cj, true, "MissingJob", &msg).await;
    }
    let gone = clean_history(cj, &jobs, &api, ctx).await?;
    let spec = cj.spec.clone().unwrap_or_default();
    let result = schedule(cj, &spec, &jobs, &gone, &mut active, &mut status, &api, ctx).await;
    status.active = (!active.is_empty()).then_some(active);
    if cj.status.clone().unwrap_or_default() != status {
        let mut next = cj.clone();
        next.status = Some(status);
        match cjs
            .replace_status(&cj.name_any(), &PostParams::default(), &next)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(e) => return Err(api_err(cj)(e)),
        }
    }
    result
}

/// Starts the Job due now, if any; when to look again.
#[allow(clippy::too_many_arguments)]
async fn schedule(
    cj: &CronJob,
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
    jobs: &[Job],
    gone: &HashSet<String>,
    active: &mut Vec<ObjectReference>,
    status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
    api: &Api<Job>,
    ctx: &Ctx,
) -> Result<Option<Duration>, CronJobError> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let tz = match spec.time_zone.as_deref() {
        None => TimeZone::system(),
        Some(name) => match TimeZone::get(name) {
            Ok(tz) => tz,
            Err(e) => {
                let msg = format!("invalid timeZone: {name:?}: {e}");
                events::record(&ctx.client, NAME, cj, false, "UnknownTimeZone", &msg).await;
                return Ok(None);
            }
        },
    };
    let sched = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("unparseable schedule: {:?} : {e}", spec.schedule);
            events::record(&ctx.client, NAME, cj, false, "UnparseableSchedule", &msg).await;
            return Ok(None);
        }
    };
    if spec.suspend == Some(true) {
        return Ok(None);
    }
    let now = Timestamp::now();
    let requeue = |now: Timestamp| {
        sched.next(now, &tz).map(|n| {
            let ms = (n.as_millisecond() - now.as_millisecond())
                .max(0)
                .unsigned_abs();
            Duration::from_millis(ms + 100)
        })
    };
    let mut earliest = status
        .last_schedule_time
        .as_ref()
        .or(cj.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    if let Some(d) = spec.starting_deadline_seconds
        && let Ok(deadline) = Timestamp::from_second(now.as_second() - d)
        && deadline > earliest
    {
        earliest = deadline;
    }
    let (scheduled, missed) = sched.most_recent(earliest, now, &tz);
    if missed > TOO_MANY_MISSED {
        let msg = format!(
            "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
        );
        events::record(&ctx.client, NAME, cj, false, "TooManyMissedTimes", &msg).await;
    }
    let Some(scheduled) = scheduled else {
        return Ok(requeue(now));
    };
    if let Some(d) = spec.starting_deadline_seconds
        && scheduled.as_second() + d < now.as_second()
    {
        let when = scheduled
            .to_zoned(tz.clone())
            .strftime("%a, %d %b %Y %H:%M:%S %z");
        let msg = format!("Missed scheduled time to start a job: {when}");
        events::record(&ctx.client, NAME, cj, false, "MissSchedule", &msg).await;
        return Ok(requeue(now));
    }
    let job = job_for(cj, scheduled, &tz);
    let name = job.name_any();
    if jobs.iter().any(|j| j.name_any() == name) || gone.contains(&name) {
        // Already started (and maybe already cleaned up): nothing due.
        return Ok(requeue(now));
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            let msg = "Not starting job because prior execution is running and concurrency policy is Forbid";
            events::record(&ctx.client, NAME, cj, true, "JobAlreadyActive", msg).await;
            return Ok(requeue(now));
        }
        Some("Replace") => {
            for r in std::mem::take(active) {
                delete_job(api, cj, r.name.as_deref().unwrap_or_default(), ctx).await?;
            }
        }
        _ => {}
    }
    let created = match api.create(&PostParams::default(), &job).await {
        Ok(j) => {
            let msg = format!("Created job {}", j.name_any());
            events::record(&ctx.client, NAME, cj, true, "SuccessfulCreate", &msg).await;
            Some(j)
        }
        // Made by an earlier sync whose status write was lost: take it as ours if it is.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            api.get_opt(&name).await.map_err(api_err(cj))?.filter(|j| {
                controller_of(&j.metadata).is_some_and(|r| Some(&r.uid) == cj.meta().uid.as_ref())
            })
        }
        Err(e) => {
            let msg = format!(
                "Error creating job: {}",
                match &e {
                    kube::Error::Api(s) => s.message.clone(),
                    other => other.to_string(),
                }
            );
            events::record(&ctx.client, NAME, cj, false, "FailedCreate", &msg).await;
            return Err(api_err(cj)(e));
        }
    };
    if let Some(j) = created {
        if !is_finished(&j) && !active.iter().any(|r| r.uid == j.uid()) {
            active.push(job_ref(&j));
        }
        status.last_schedule_time = Some(Time(scheduled));
    }
    Ok(requeue(now))
}

fn key(cj: &CronJob) -> String {
    format!("{}/{}", cj.namespace().unwrap_or_default(), cj.name_any())
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, CronJobError> {
    let result = sync(&cj, &ctx).await;
    ctx.backoff.settle(NAME, &key(&cj), result)
}

fn error_policy(cj: Arc<CronJob>, e: &CronJobError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff.retry(&key(&cj), "cron job sync failed", e)
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let cjs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::new(QUEUE, metrics),
    });
    Controller::new(cjs, watcher::Config::default())
        .owns(jobs, watcher::Config::default())
        .with_config(RunConfig::default().concurrency(concurrency))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str, tz: &str) -> String {
        let tz = TimeZone::get(tz).unwrap();
        Schedule::parse(spec)
            .unwrap()
            .next(at(after), &tz)
            .unwrap()
            .to_string()
    }

    #[test]
    fn next_times_follow_robfig_cron() {
        assert_eq!(
            next("*/1 * * * *", "2024-03-01T10:00:30Z", "UTC"),
            "2024-03-01T10:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-03-01T10:15:00Z", "UTC"),
            "2024-03-01T10:30:00Z"
        );
        assert_eq!(
            next("@hourly", "2024-03-01T10:15:00Z", "UTC"),
            "2024-03-01T11:00:00Z"
        );
        assert_eq!(
            next("@daily", "2024-12-31T23:59:00Z", "UTC"),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "2024-03-01T00:00:00Z", "UTC"),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            next("0 9 * * mon-fri", "2024-03-01T09:00:00Z", "UTC"),
            "2024-03-04T09:00:00Z"
        );
        assert_eq!(
            next("30 2 29 feb *", "2024-03-01T00:00:00Z", "UTC"),
            "2028-02-29T02:30:00Z"
        );
        // Day of month and day of week both restricted: either matches.
        assert_eq!(
            next("0 0 13 * fri", "2024-09-01T00:00:00Z", "UTC"),
            "2024-09-06T00:00:00Z"
        );
        // `N/step` runs from N to the maximum.
        assert_eq!(
            next("50/5 * * * *", "2024-03-01T10:56:00Z", "UTC"),
            "2024-03-01T11:50:00Z"
        );
        // In a zone: 09:00 in Tokyo is 00:00 UTC.
        assert_eq!(
            next("0 9 * * *", "2024-03-01T01:00:00Z", "Asia/Tokyo"),
            "2024-03-02T00:00:00Z"
        );
    }

    #[test]
    fn bad_schedules_are_errors() {
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "* * * * 8",
            "@every 5m",
            "@often",
            "*/0 * * * *",
            "5-1 * * * *",
            "x * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Schedule::parse("0 0 ? * SUN").is_ok());
    }

    #[test]
    fn most_recent_counts_missed_times() {
        let s = Schedule::parse("*/1 * * * *").unwrap();
        let utc = TimeZone::UTC;
        let (t, n) = s.most_recent(at("2024-03-01T10:00:00Z"), at("2024-03-01T10:03:30Z"), &utc);
        assert_eq!(
            (t.unwrap().to_string().as_str(), n),
            ("2024-03-01T10:03:00Z", 3)
        );
        let (t, n) = s.most_recent(at("2024-03-01T10:00:00Z"), at("2024-03-01T10:00:59Z"), &utc);
        assert_eq!((t, n), (None, 0));
        let (t, n) = s.most_recent(at("2024-01-01T00:00:00Z"), at("2024-03-01T10:03:30Z"), &utc);
        assert_eq!(t.unwrap().to_string(), "2024-03-01T10:03:00Z");
        assert!(n > TOO_MANY_MISSED);
    }

    #[test]
    fn jobs_are_named_by_scheduled_minute() {
        let cj = CronJob {
            metadata: ObjectMeta {
                name: Some("tick".into()),
                namespace: Some("default".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let j = job_for(&cj, at("2024-03-01T10:03:00Z"), &TimeZone::UTC);
        assert_eq!(
            j.name_any(),
            format!("tick-{}", at("2024-03-01T10:03:00Z").as_second() / 60)
        );
        assert_eq!(j.annotations()[SCHEDULED_TIMESTAMP], "2024-03-01T10:03:00Z");
        let owner = &j.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("CronJob", Some(true))
        );
    }
}
