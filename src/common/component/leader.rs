//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` does
//! it: one holder at a time, every write conditional on the Lease's resourceVersion, and a
//! holder considered alive until its record has not changed for a lease duration as *we*
//! observed it (local clock only, so clock skew between machines does not matter).
//!
//! Owns the one Lease named by `--leader-elect-resource-{namespace,name}`; touches nothing else.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use super::{ComponentError, LeaderElection};

/// Upstream's jitter factor on the retry period.
const JITTER: f64 = 1.2;

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderElection,
    identity: String,
    /// The last record seen and when we first saw it so.
    observed: Option<(LeaseSpec, Instant)>,
    /// Whether the last successful write made us the holder.
    leading: bool,
    logged_waiting: bool,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    pub fn new(client: kube::Client, cfg: &LeaderElection, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.resource_namespace),
            cfg: cfg.clone(),
            identity,
            observed: None,
            leading: false,
            logged_waiting: false,
        }
    }

    fn lease_key(&self) -> String {
        format!("{}/{}", self.cfg.resource_namespace, self.cfg.resource_name)
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.cfg.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// One attempt to take or renew the lease: Ok(true) if we hold it now.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let stamp = now();
        let mine = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_seconds()),
            acquire_time: Some(stamp.clone()),
            renew_time: Some(stamp),
            lease_transitions: Some(0),
            ..Default::default()
        };
        let Some(mut lease) = self.api.get_opt(&self.cfg.resource_name).await? else {
            let new = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.resource_name.clone()),
                    namespace: Some(self.cfg.resource_namespace.clone()),
                    ..Default::default()
                },
                spec: Some(mine.clone()),
            };
            return match self.api.create(&PostParams::default(), &new).await {
                Ok(_) => {
                    self.observed = Some((mine, Instant::now()));
                    Ok(true)
                }
                // Someone created it first: they lead; look again next round.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let record = lease.spec.clone().unwrap_or_default();
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != record)
        {
            self.observed = Some((record.clone(), Instant::now()));
        }
        let holder = record.holder_identity.clone().unwrap_or_default();
        let is_mine = holder == self.identity;
        if !holder.is_empty() && !is_mine {
            let duration = record
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.cfg.lease_duration);
            let seen = self.observed.as_ref().map(|(_, t)| *t);
            if seen.is_some_and(|t| t.elapsed() < duration) {
                return Ok(false);
            }
        }
        let mut spec = mine;
        if is_mine {
            spec.acquire_time = record.acquire_time.clone();
            spec.lease_transitions = record.lease_transitions;
        } else {
            spec.lease_transitions = Some(record.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(spec.clone());
        // The update carries the resourceVersion we read: 409 if anyone wrote in between.
        match self
            .api
            .replace(&self.cfg.resource_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = Some((spec, Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Returns once we hold the lease, trying every retry period (with jitter).
    pub async fn acquire(&mut self) {
        tracing::info!(lease = %self.lease_key(), identity = %self.identity, "attempting to acquire leader lease");
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    self.leading = true;
                    tracing::info!(lease = %self.lease_key(), identity = %self.identity, "successfully acquired lease");
                    return;
                }
                Ok(false) => {
                    if !self.logged_waiting {
                        let holder = self
                            .observed
                            .as_ref()
                            .and_then(|(r, _)| r.holder_identity.clone())
                            .unwrap_or_default();
                        tracing::info!(lease = %self.lease_key(), %holder, "lease is held by another instance; waiting");
                        self.logged_waiting = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %self.lease_key(), error = %e, "error retrieving or updating the lease")
                }
            }
            tokio::time::sleep(self.jittered()).await;
        }
    }

    fn jittered(&self) -> Duration {
        let f = 1.0 + rand::random::<f64>() * (JITTER - 1.0);
        self.cfg.retry_period.mul_f64(f)
    }

    /// Renews every retry period; returns the error to exit with once a renewal has not
    /// succeeded for the renew deadline.
    pub async fn keep_renewing(&mut self) -> ComponentError {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            let left = self.cfg.renew_deadline.saturating_sub(last_ok.elapsed());
            let attempt = tokio::time::timeout(left, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => last_ok = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %self.lease_key(), "failed to renew lease: held by another instance")
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.lease_key(), error = %e, "failed to renew lease")
                }
                Err(_) => {}
            }
            if last_ok.elapsed() >= self.cfg.renew_deadline {
                self.leading = false;
                tracing::error!(lease = %self.lease_key(), "leaderelection lost");
                return ComponentError::LeaderLost {
                    namespace: self.cfg.resource_namespace.clone(),
                    name: self.cfg.resource_name.clone(),
                    deadline: self.cfg.renew_deadline,
                };
            }
        }
    }

    /// Gives the lease up if we hold it (client-go's ReleaseOnCancel): empty holder, one-second
    /// duration, so the next instance takes over at once.
    pub async fn release(&mut self) {
        if !self.leading {
            return;
        }
        self.leading = false;
        let attempt = async {
            let mut lease = self.api.get(&self.cfg.resource_name).await?;
            let record = lease.spec.clone().unwrap_or_default();
            if record.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            let stamp = now();
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(1),
                acquire_time: Some(stamp.clone()),
                renew_time: Some(stamp),
                lease_transitions: record.lease_transitions,
                ..Default::default()
            });
            self.api
                .replace(&self.cfg.resource_name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(self.cfg.renew_deadline, attempt).await {
            Ok(Ok(())) => tracing::info!(lease = %self.lease_key(), "released leader lease"),
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.lease_key(), error = %e, "cannot release the lease")
            }
            Err(_) => tracing::warn!(lease = %self.lease_key(), "timed out releasing the lease"),
        }
    }
}
