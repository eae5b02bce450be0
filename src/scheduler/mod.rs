//! The scheduler (`mk8s daemon scheduler`): upstream kube-scheduler's default profile, run as
//! an ordinary API client with a kubeconfig of its own. Binds pods whose `schedulerName` is
//! `default-scheduler` through the `binding` subresource, after the filters and scores in
//! [`plugins`]; the loop and its queue are [`queue`].
//!
//! Owns port 10259 (health, metrics) and the `kube-system/kube-scheduler` Lease it leads
//! through; talks to the cluster only through the API server, never to the datastore or the
//! kubelet. Serving, delegated auth and leader election are [`crate::common::component`]'s.

pub(crate) mod plugins;
mod queue;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::common::args::{ArgsError, Flag};
use crate::common::component::{self, ComponentError};
use crate::common::paths::Paths;

/// Upstream kube-scheduler's secure port.
pub const DEFAULT_SECURE_PORT: u16 = 10259;
/// The one profile: pods naming another scheduler are left to it.
pub const SCHEDULER_NAME: &str = "default-scheduler";

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    Component(#[from] ComponentError),
}

/// The scheduler's settings, from `args/kube-scheduler` with upstream flag names.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kubeconfig, serving and leader election.
    pub common: component::Flags,
}

/// Defaults, then the args file, then `cli`.
pub fn load_config(paths: &Paths, cli: &[String]) -> Result<Config, SchedulerError> {
    let flags =
        crate::common::args::load(&paths.data_file("args/kube-scheduler"), cli, &paths.vars())?;
    let mut config = Config::defaults(&paths.snap_data);
    config.apply(&flags)?;
    Ok(config)
}

impl Config {
    pub fn defaults(snap_data: &std::path::Path) -> Self {
        Config {
            common: component::Flags::defaults(
                snap_data,
                "credentials/scheduler.config",
                DEFAULT_SECURE_PORT,
                "kube-scheduler",
            ),
        }
    }

    pub fn apply(&mut self, flags: &[Flag]) -> Result<(), ArgsError> {
        for f in flags {
            if self.common.apply(f)? {
                continue;
            }
            return Err(ArgsError::Unknown {
                origin: f.origin.clone(),
                flag: f.name.clone(),
            });
        }
        self.common.check()
    }
}

/// `/metrics`, named as upstream names them.
#[derive(Default)]
pub struct Metrics {
    leader: AtomicBool,
    /// result ("scheduled" | "unschedulable" | "error") → attempts.
    attempts: Mutex<BTreeMap<&'static str, u64>>,
    backoff: AtomicUsize,
    active: AtomicUsize,
    unschedulable: AtomicUsize,
}

impl Metrics {
    fn attempt(&self, result: &'static str) {
        *self.attempts.lock().entry(result).or_default() += 1;
    }

    fn set_pending(&self, backoff: usize, active: usize, unschedulable: usize) {
        self.backoff
            .store(backoff.saturating_sub(unschedulable), Ordering::Relaxed);
        self.active.store(active, Ordering::Relaxed);
        self.unschedulable.store(unschedulable, Ordering::Relaxed);
    }
}

impl component::Metrics for Metrics {
    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP leader_election_master_status Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease.\n");
        out.push_str("# TYPE leader_election_master_status gauge\n");
        out.push_str(&format!(
            "leader_election_master_status{{name=\"kube-scheduler\"}} {}\n",
            u8::from(self.leader.load(Ordering::Relaxed))
        ));
        out.push_str("# HELP scheduler_schedule_attempts_total Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.\n");
        out.push_str("# TYPE scheduler_schedule_attempts_total counter\n");
        for (result, n) in self.attempts.lock().iter() {
            out.push_str(&format!(
                "scheduler_schedule_attempts_total{{profile=\"{SCHEDULER_NAME}\",result=\"{result}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP scheduler_pending_pods Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods.\n");
        out.push_str("# TYPE scheduler_pending_pods gauge\n");
        for (q, v) in [
            ("active", &self.active),
            ("backoff", &self.backoff),
            ("unschedulable", &self.unschedulable),
        ] {
            out.push_str(&format!(
                "scheduler_pending_pods{{queue=\"{q}\"}} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        out
    }

    fn set_leader(&self, leading: bool) {
        self.leader.store(leading, Ordering::Relaxed);
    }
}

/// Runs the scheduler until SIGTERM/SIGINT or until it loses its lease.
pub async fn run(config: Config) -> Result<(), SchedulerError> {
    let kcfg = config.common.kube_config().await?;
    let client = config.common.client(kcfg)?;
    let metrics = Arc::new(Metrics::default());
    let m = metrics.clone();
    let c = client.clone();
    component::run(&config.common, "scheduler", client, metrics, move || {
        let mut set = tokio::task::JoinSet::new();
        set.spawn(async move {
            queue::Scheduler::new(c, SCHEDULER_NAME.into(), m)
                .run()
                .await;
            "the scheduling loop"
        });
        set
    })
    .await?;
    Ok(())
}

/// Whether the scheduler of a data root answers `/healthz` with `ok`.
pub async fn probe_ready(paths: &Paths) -> bool {
    match load_config(paths, &[]) {
        Ok(config) => component::probe_ready(config.common.secure_port).await,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::component::Metrics as _;

    #[test]
    fn template_loads_with_upstream_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("data"), dir.path().join("common"));
        std::fs::create_dir_all(paths.data_file("args")).unwrap();
        std::fs::write(
            paths.data_file("args/kube-scheduler"),
            include_str!("../../templates/args/kube-scheduler"),
        )
        .unwrap();
        let c = load_config(&paths, &["--secure-port=1234".into()]).unwrap();
        assert_eq!(c.common.secure_port, 1234);
        assert_eq!(
            c.common.kubeconfig,
            paths.data_file("credentials/scheduler.config")
        );
        assert_eq!(c.common.leader.resource_name, "kube-scheduler");
        assert!(c.common.leader.enabled);
        let err = load_config(&paths, &["--nope=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown flag '--nope'"), "{err}");
    }

    #[test]
    fn metrics_render() {
        let m = Metrics::default();
        m.set_leader(true);
        m.attempt("scheduled");
        m.attempt("scheduled");
        m.set_pending(3, 2, 1);
        let out = m.render();
        assert!(out.contains("leader_election_master_status{name=\"kube-scheduler\"} 1"));
        assert!(out.contains(
            "scheduler_schedule_attempts_total{profile=\"default-scheduler\",result=\"scheduled\"} 2"
        ));
        assert!(out.contains("scheduler_pending_pods{queue=\"unschedulable\"} 1"));
        assert!(out.contains("scheduler_pending_pods{queue=\"backoff\"} 2"));
    }
}
