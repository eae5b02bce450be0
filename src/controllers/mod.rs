//! The controller manager (`mk8s daemon controller-manager`): upstream kube-controller-manager's
//! controllers, run as an ordinary API client with a kubeconfig of its own.
//!
//! Owns port 10257 (health, metrics) and the `kube-system/kube-controller-manager` Lease it
//! leads through. Talks to the cluster only through the API server (kube-rs), so it never
//! touches the datastore, certificates or credential files other than reading its kubeconfig,
//! the root CA it publishes and its serving certificate. Serving, delegated auth and leader
//! election are [`crate::common::component`]'s. One file a controller
//! ([`root_ca`], [`serviceaccount`], [`namespace`], [`replicaset`], [`deployment`],
//! [`replicationcontroller`], [`daemonset`], [`statefulset`], [`garbagecollector`], [`job`],
//! [`cronjob`], [`ttl_after_finished`], [`endpoints`], [`endpointslice`], [`podgc`],
//! [`nodelifecycle`], [`disruption`], [`clusterrole_aggregation`]); each is level-triggered
//! and idempotent, so a restart or a second leader simply converges again. Each writes as its
//! own service account ([`credentials`]).

mod clusterrole_aggregation;
mod credentials;
mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod endpointslice;
mod garbagecollector;
mod job;
mod metrics;
mod namespace;
mod nodelifecycle;
mod podgc;
mod replicaset;
mod replicationcontroller;
mod root_ca;
mod serviceaccount;
mod statefulset;
mod ttl_after_finished;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::common::args::{ArgsError, Flag};
use crate::common::component::{self, ComponentError};
use crate::common::paths::Paths;

/// Upstream kube-controller-manager's secure port.
pub const DEFAULT_SECURE_PORT: u16 = 10257;
/// The Lease leader election uses, as upstream names it.
pub const LEADER_LEASE_NAME: &str = "kube-controller-manager";

/// The controllers this manager runs: upstream's canonical name and its `--controllers` alias.
pub const CONTROLLERS: &[(&str, &str)] = &[
    (root_ca::NAME, root_ca::ALIAS),
    (serviceaccount::NAME, serviceaccount::ALIAS),
    (namespace::NAME, namespace::ALIAS),
    (replicaset::NAME, replicaset::ALIAS),
    (deployment::NAME, deployment::ALIAS),
    (replicationcontroller::NAME, replicationcontroller::ALIAS),
    (daemonset::NAME, daemonset::ALIAS),
    (statefulset::NAME, statefulset::ALIAS),
    (garbagecollector::NAME, garbagecollector::ALIAS),
    (
        clusterrole_aggregation::NAME,
        clusterrole_aggregation::ALIAS,
    ),
    (job::NAME, job::ALIAS),
    (cronjob::NAME, cronjob::ALIAS),
    (ttl_after_finished::NAME, ttl_after_finished::ALIAS),
    (endpoints::NAME, endpoints::ALIAS),
    (endpointslice::NAME, endpointslice::ALIAS),
    (podgc::NAME, podgc::ALIAS),
    (nodelifecycle::NAME, nodelifecycle::ALIAS),
    (disruption::NAME, disruption::ALIAS),
];

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    Io(#[from] crate::common::fsutil::IoError),
    #[error("{}: no CA certificate in PEM form", path.display())]
    RootCa { path: PathBuf },
    #[error(transparent)]
    Component(#[from] ComponentError),
}

/// The controller manager's settings, from `args/kube-controller-manager` with upstream flag
/// names.
#[derive(Debug, Clone)]
pub struct Config {
    /// Kubeconfig, serving and leader election.
    pub common: component::Flags,
    /// The CA bundle published as `kube-root-ca.crt`; the kubeconfig's CA when unset (upstream).
    pub root_ca_file: Option<PathBuf>,
    /// Read by the service-account token controller (not run yet); kept so args files with it
    /// load.
    pub service_account_private_key_file: Option<PathBuf>,
    /// `--controllers`, as given.
    pub controllers: Vec<String>,
    /// `--use-service-account-credentials`: each controller acts as its own service account.
    pub use_service_account_credentials: bool,
    /// Where those accounts' tokens are kept (`$SNAP_COMMON/run/controller-manager`).
    pub token_dir: PathBuf,
    pub concurrent_namespace_syncs: u16,
    pub concurrent_serviceaccount_syncs: u16,
    pub concurrent_replicaset_syncs: u16,
    pub concurrent_deployment_syncs: u16,
    pub concurrent_rc_syncs: u16,
    pub concurrent_daemonset_syncs: u16,
    pub concurrent_statefulset_syncs: u16,
    pub concurrent_gc_syncs: u16,
    pub concurrent_job_syncs: u16,
    pub concurrent_cron_job_syncs: u16,
    pub concurrent_ttl_after_finished_syncs: u16,
    pub concurrent_endpoint_syncs: u16,
    pub concurrent_service_endpoint_syncs: u16,
    /// Terminated pods kept before the pod GC deletes the oldest (0 turns that off).
    pub terminated_pod_gc_threshold: u32,
    /// How long a node may go without renewing its Lease or status before it is Unknown.
    pub node_monitor_grace_period: Duration,
    /// How often the node lifecycle controller looks at every node.
    pub node_monitor_period: Duration,
}

/// The controller manager's settings for a data root: defaults, then the args file, then `cli`.
pub fn load_config(paths: &Paths, cli: &[String]) -> Result<Config, ControllerError> {
    let flags = crate::common::args::load(
        &paths.data_file("args/kube-controller-manager"),
        cli,
        &paths.vars(),
    )?;
    let mut config = Config::defaults(&paths.snap_data);
    config.token_dir = paths.run_dir().join("controller-manager");
    config.apply(&flags)?;
    Ok(config)
}

impl Config {
    pub fn defaults(snap_data: &Path) -> Self {
        Self {
            common: component::Flags::defaults(
                snap_data,
                "credentials/controller.config",
                DEFAULT_SECURE_PORT,
                LEADER_LEASE_NAME,
            ),
            root_ca_file: None,
            service_account_private_key_file: None,
            controllers: vec!["*".into()],
            use_service_account_credentials: false,
            token_dir: snap_data.join("run/controller-manager"),
            concurrent_namespace_syncs: 10,
            concurrent_serviceaccount_syncs: 5,
            concurrent_replicaset_syncs: 5,
            concurrent_deployment_syncs: 5,
            concurrent_rc_syncs: 5,
            concurrent_daemonset_syncs: 2,
            concurrent_statefulset_syncs: 5,
            concurrent_gc_syncs: 20,
            concurrent_job_syncs: 5,
            concurrent_cron_job_syncs: 5,
            concurrent_ttl_after_finished_syncs: 5,
            concurrent_endpoint_syncs: 5,
            concurrent_service_endpoint_syncs: 5,
            terminated_pod_gc_threshold: 12500,
            // Upstream raised it from 40 s to 50 s in 1.32 (kubernetes#126287).
            node_monitor_grace_period: Duration::from_secs(50),
            node_monitor_period: Duration::from_secs(5),
        }
    }

    /// Applies flags in order (later ones win), then checks what depends on several flags.
    pub fn apply(&mut self, flags: &[Flag]) -> Result<(), ArgsError> {
        for f in flags {
            if self.common.apply(f)? {
                continue;
            }
            let invalid = |why: &str| component::invalid(f, why);
            let path = || Some(PathBuf::from(&f.value)).filter(|p| !p.as_os_str().is_empty());
            let duration = |f: &Flag| match crate::common::args::parse_duration(&f.value) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(invalid("must be greater than zero")),
                Err(why) => Err(invalid(&why)),
            };
            let count = || match f.value.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(invalid("expected a number from 1 to 65535")),
            };
            match f.name.as_str() {
                "root-ca-file" => self.root_ca_file = path(),
                "use-service-account-credentials" => {
                    self.use_service_account_credentials = component::parse_bool(&f.value)
                        .ok_or_else(|| invalid("expected true or false"))?
                }
                "service-account-private-key-file" => {
                    self.service_account_private_key_file = path()
                }
                "controllers" => {
                    let list = crate::common::args::split_list(&f.value);
                    for c in &list {
                        let name = c.strip_prefix('-').unwrap_or(c);
                        if name != "*" && canonical(name).is_none() {
                            let known: Vec<&str> = CONTROLLERS.iter().map(|(_, a)| *a).collect();
                            return Err(invalid(&format!(
                                "{name:?} is not a known controller (known: *, {})",
                                known.join(", ")
                            )));
                        }
                    }
                    self.controllers = list;
                }
                "concurrent-namespace-syncs" => self.concurrent_namespace_syncs = count()?,
                "concurrent-serviceaccount-syncs" => {
                    self.concurrent_serviceaccount_syncs = count()?
                }
                "concurrent-replicaset-syncs" => self.concurrent_replicaset_syncs = count()?,
                "concurrent-deployment-syncs" => self.concurrent_deployment_syncs = count()?,
                "concurrent-rc-syncs" => self.concurrent_rc_syncs = count()?,
                "concurrent-daemonset-syncs" => self.concurrent_daemonset_syncs = count()?,
                "concurrent-statefulset-syncs" => self.concurrent_statefulset_syncs = count()?,
                "concurrent-gc-syncs" => self.concurrent_gc_syncs = count()?,
                "concurrent-job-syncs" => self.concurrent_job_syncs = count()?,
                "concurrent-cron-job-syncs" => self.concurrent_cron_job_syncs = count()?,
                "concurrent-ttl-after-finished-syncs" => {
                    self.concurrent_ttl_after_finished_syncs = count()?
                }
                "concurrent-endpoint-syncs" => self.concurrent_endpoint_syncs = count()?,
                "concurrent-service-endpoint-syncs" => {
                    self.concurrent_service_endpoint_syncs = count()?
                }
                "terminated-pod-gc-threshold" => {
                    self.terminated_pod_gc_threshold = match f.value.parse::<i64>() {
                        // Upstream: zero or less turns the terminated-pod GC off.
                        Ok(n) => n.clamp(0, i64::from(u32::MAX)) as u32,
                        Err(_) => return Err(invalid("expected a whole number")),
                    }
                }
                "node-monitor-grace-period" => self.node_monitor_grace_period = duration(f)?,
                "node-monitor-period" => self.node_monitor_period = duration(f)?,
                other => {
                    return Err(ArgsError::Unknown {
                        origin: f.origin.clone(),
                        flag: other.to_string(),
                    });
                }
            }
        }
        self.common.check()
    }

    /// Whether `--controllers` turns on the controller of this canonical name: named (or by its
    /// alias) turns it on, `-name` off, `*` turns on every default one (all of ours).
    pub fn enabled(&self, name: &str) -> bool {
        let mut star = false;
        for c in &self.controllers {
            match c.strip_prefix('-') {
                Some(off) if canonical(off) == Some(name) => return false,
                Some(_) => {}
                None if c == "*" => star = true,
                None if canonical(c) == Some(name) => return true,
                None => {}
            }
        }
        star
    }
}

/// A controller's canonical name from itself or its alias.
fn canonical(name: &str) -> Option<&'static str> {
    CONTROLLERS
        .iter()
        .find(|(n, a)| *n == name || *a == name)
        .map(|(n, _)| *n)
}

/// Per-object retry back-off of one controller: 100 ms doubling to 5 min, forgotten on success
/// (upstream's rate-limited queue, less its 5 ms start which would be a hot loop here).
pub(crate) struct Backoff {
    queue: &'static str,
    failures: Mutex<HashMap<String, u32>>,
    metrics: Arc<metrics::Metrics>,
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(300);

impl Backoff {
    fn new(queue: &'static str, metrics: Arc<metrics::Metrics>) -> Self {
        Self {
            queue,
            failures: Mutex::default(),
            metrics,
        }
    }

    /// Records a failure of `key`; the delay before its next try.
    fn failed(&self, key: &str) -> Duration {
        let n = {
            let mut f = self.failures.lock();
            let n = f.entry(key.to_string()).or_default();
            *n = n.saturating_add(1);
            *n
        };
        self.metrics.retry(self.queue);
        let exp = (n - 1).min(16);
        FIRST_RETRY.saturating_mul(1 << exp).min(MAX_RETRY)
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().remove(key);
    }

    /// A sync's outcome as the controller's next step: counted, the back-off forgotten on
    /// success, then a look after `Some(delay)` or on the next change.
    fn settle<E>(
        &self,
        controller: &'static str,
        key: &str,
        r: Result<Option<Duration>, E>,
    ) -> Result<kube::runtime::controller::Action, E> {
        use kube::runtime::controller::Action;
        self.metrics.sync(controller, r.is_ok());
        let again = r?;
        self.succeeded(key);
        Ok(again.map_or_else(Action::await_change, Action::requeue))
    }

    /// The error policy: logged, then tried again after this key's back-off.
    fn retry(
        &self,
        key: &str,
        what: &str,
        e: &dyn std::fmt::Display,
    ) -> kube::runtime::controller::Action {
        let delay = self.failed(key);
        tracing::warn!(error = %e, retry_in = ?delay, "{what}");
        kube::runtime::controller::Action::requeue(delay)
    }
}

/// The CA bundle to publish: `--root-ca-file`, else the kubeconfig's CA (upstream's fallback).
fn root_ca(config: &Config, kcfg: &kube::Config) -> Result<String, ControllerError> {
    let pem = match &config.root_ca_file {
        Some(p) => std::fs::read_to_string(p).map_err(crate::common::fsutil::io_err("read", p))?,
        None => kcfg
            .root_cert
            .iter()
            .flatten()
            .map(|d| pem_cert(d))
            .collect(),
    };
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(ControllerError::RootCa {
            path: config
                .root_ca_file
                .clone()
                .unwrap_or_else(|| config.common.kubeconfig.clone()),
        });
    }
    Ok(pem)
}

fn pem_cert(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Runs the controller manager until SIGTERM/SIGINT, or until it loses its lease (an error,
/// so the process exits non-zero as upstream's does).
pub async fn run(config: Config) -> Result<(), ControllerError> {
    let kcfg = config.common.kube_config().await?;
    let ca = root_ca(&config, &kcfg)?;
    let client = config.common.client(kcfg.clone())?;
    let token_dir = config
        .use_service_account_credentials
        .then(|| config.token_dir.clone());
    let clients = credentials::Clients::new(client.clone(), kcfg, token_dir);
    let metrics = Arc::new(metrics::Metrics::default());
    let m = metrics.clone();
    component::run(
        &config.common,
        "controller manager",
        client,
        metrics,
        || start(&config, clients, ca, m),
    )
    .await?;
    Ok(())
}

/// Writes a JSON merge patch of `obj` as an update (PUT) of the object or, with `status`, of
/// its status subresource: upstream's controllers update rather than patch, and their roles
/// grant no more. The cached object's resourceVersion makes it conditional; on a conflict the
/// patch is applied once more to a fresh read.
pub async fn update_merged<K>(
    api: &kube::Api<K>,
    obj: &K,
    patch: &serde_json::Value,
    status: bool,
) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use kube::ResourceExt;
    let merged = |base: &K| -> Result<K, kube::Error> {
        let mut v = serde_json::to_value(base).map_err(kube::Error::SerdeError)?;
        json_patch::merge(&mut v, patch);
        serde_json::from_value(v).map_err(kube::Error::SerdeError)
    };
    let name = obj.name_any();
    let put = |body: K| {
        let name = name.clone();
        async move {
            let pp = kube::api::PostParams::default();
            if status {
                api.replace_status(&name, &pp, &body).await
            } else {
                api.replace(&name, &pp, &body).await
            }
        }
    };
    match put(merged(obj)?).await {
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // The object itself, not `/status`: the roles grant `get` on the resource only.
            let fresh = api.get(&name).await?;
            put(merged(&fresh)?).await
        }
        r => r,
    }
}

/// Spawns a controller when `--controllers` enables it, with the client of its service
/// account (see [`credentials`]).
fn spawn<F, Fut>(
    set: &mut tokio::task::JoinSet<&'static str>,
    config: &Config,
    clients: &credentials::Clients,
    (name, account): (&'static str, &'static str),
    run: F,
) where
    F: FnOnce(kube::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if config.enabled(name) {
        let clients = clients.clone();
        set.spawn(async move {
            run(clients.for_account(account).await).await;
            name
        });
    }
}

/// Starts every enabled controller; each task ends only if its controller stops.
fn start(
    config: &Config,
    clients: credentials::Clients,
    ca: String,
    metrics: Arc<metrics::Metrics>,
) -> tokio::task::JoinSet<&'static str> {
    let mut set = tokio::task::JoinSet::new();
    let (set_, c, cl) = (&mut set, config, &clients);
    // (controller, its service account as upstream's bootstrap policy names it)
    let m = || metrics.clone();
    spawn(set_, c, cl, (root_ca::NAME, "root-ca-cert-publisher"), {
        let m = m();
        move |k| root_ca::run(k, ca, m)
    });
    spawn(
        set_,
        c,
        cl,
        (serviceaccount::NAME, "service-account-controller"),
        {
            let (m, n) = (m(), c.concurrent_serviceaccount_syncs);
            move |k| serviceaccount::run(k, m, n)
        },
    );
    spawn(set_, c, cl, (namespace::NAME, "namespace-controller"), {
        let (m, n) = (m(), c.concurrent_namespace_syncs);
        move |k| namespace::run(k, m, n)
    });
    spawn(set_, c, cl, (replicaset::NAME, "replicaset-controller"), {
        let (m, n) = (m(), c.concurrent_replicaset_syncs);
        move |k| replicaset::run(k, m, n)
    });
    spawn(set_, c, cl, (deployment::NAME, "deployment-controller"), {
        let (m, n) = (m(), c.concurrent_deployment_syncs);
        move |k| deployment::run(k, m, n)
    });
    // Upstream runs five aggregation workers, with no flag.
    spawn(
        set_,
        c,
        cl,
        (
            clusterrole_aggregation::NAME,
            "clusterrole-aggregation-controller",
        ),
        {
            let m = m();
            move |k| clusterrole_aggregation::run(k, m, 5)
        },
    );
    spawn(
        set_,
        c,
        cl,
        (replicationcontroller::NAME, "replication-controller"),
        {
            let (m, n) = (m(), c.concurrent_rc_syncs);
            move |k| replicationcontroller::run(k, m, n)
        },
    );
    spawn(set_, c, cl, (daemonset::NAME, "daemon-set-controller"), {
        let (m, n) = (m(), c.concurrent_daemonset_syncs);
        move |k| daemonset::run(k, m, n)
    });
    spawn(
        set_,
        c,
        cl,
        (statefulset::NAME, "statefulset-controller"),
        {
            let (m, n) = (m(), c.concurrent_statefulset_syncs);
            move |k| statefulset::run(k, m, n)
        },
    );
    spawn(set_, c, cl, (job::NAME, "job-controller"), {
        let (m, n) = (m(), c.concurrent_job_syncs);
        move |k| job::run(k, m, n)
    });
    spawn(set_, c, cl, (cronjob::NAME, "cronjob-controller"), {
        let (m, n) = (m(), c.concurrent_cron_job_syncs);
        move |k| cronjob::run(k, m, n)
    });
    spawn(
        set_,
        c,
        cl,
        (ttl_after_finished::NAME, "ttl-after-finished-controller"),
        {
            let (m, n) = (m(), c.concurrent_ttl_after_finished_syncs);
            move |k| ttl_after_finished::run(k, m, n)
        },
    );
    spawn(
        set_,
        c,
        cl,
        (garbagecollector::NAME, "generic-garbage-collector"),
        {
            let (m, n) = (m(), c.concurrent_gc_syncs);
            move |k| garbagecollector::run(k, m, n)
        },
    );
    spawn(set_, c, cl, (endpoints::NAME, "endpoint-controller"), {
        let (m, n) = (m(), c.concurrent_endpoint_syncs);
        move |k| endpoints::run(k, m, n)
    });
    spawn(
        set_,
        c,
        cl,
        (endpointslice::NAME, "endpointslice-controller"),
        {
            let (m, n) = (m(), c.concurrent_service_endpoint_syncs);
            move |k| endpointslice::run(k, m, n)
        },
    );
    spawn(set_, c, cl, (podgc::NAME, "pod-garbage-collector"), {
        let (m, n) = (m(), c.terminated_pod_gc_threshold);
        move |k| podgc::run(k, m, n)
    });
    spawn(set_, c, cl, (nodelifecycle::NAME, "node-controller"), {
        let (m, grace, period) = (m(), c.node_monitor_grace_period, c.node_monitor_period);
        move |k| nodelifecycle::run(k, m, grace, period)
    });
    spawn(set_, c, cl, (disruption::NAME, "disruption-controller"), {
        let m = m();
        move |k| disruption::run(k, m)
    });
    for (name, _) in CONTROLLERS {
        if config.enabled(name) {
            tracing::info!(controller = name, "started");
        } else {
            tracing::warn!(controller = name, "disabled by --controllers");
        }
    }
    set
}

/// Logs what a kube-runtime controller reports (failed reconciles were logged by their error
/// policy; watch errors are retried with back-off by the watcher itself).
fn log_outcome<K, E1, E2>(
    controller: &'static str,
    r: Result<
        (
            kube::runtime::reflector::ObjectRef<K>,
            kube::runtime::controller::Action,
        ),
        kube::runtime::controller::Error<E1, E2>,
    >,
) -> std::future::Ready<()>
where
    K: kube::Resource,
    K::DynamicType: std::fmt::Debug,
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    use kube::runtime::controller::Error as E;
    match r {
        Ok((obj, _)) => tracing::debug!(controller, object = %obj, "synced"),
        Err(E::ReconcilerFailed(..)) | Err(E::ObjectNotFound(_)) => {}
        Err(e) => tracing::warn!(controller, error = %e, "watch failed; retrying"),
    }
    std::future::ready(())
}

/// Whether the controller manager of a data root answers `/healthz` with `ok` (the
/// supervisor's readiness check).
pub async fn probe_ready(paths: &Paths) -> bool {
    match load_config(paths, &[]) {
        Ok(config) => component::probe_ready(config.common.secure_port).await,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(v: &[&str]) -> Vec<Flag> {
        v.iter()
            .enumerate()
            .map(|(i, s)| {
                let (n, val) = s.trim_start_matches("--").split_once('=').unwrap();
                Flag {
                    name: n.into(),
                    value: val.into(),
                    origin: format!("test {i}"),
                }
            })
            .collect()
    }

    #[test]
    fn defaults_are_upstreams() {
        let c = Config::defaults(Path::new("/d"));
        assert_eq!(c.common.listen_addr(), "0.0.0.0:10257".parse().unwrap());
        assert_eq!(
            c.common.kubeconfig,
            Path::new("/d/credentials/controller.config")
        );
        assert_eq!(c.common.leader.lease_duration, Duration::from_secs(15));
        assert_eq!(c.common.leader.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.common.leader.retry_period, Duration::from_secs(2));
        for (name, _) in CONTROLLERS {
            assert!(c.enabled(name));
        }
    }

    #[test]
    fn template_loads() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("data"), dir.path().join("common"));
        std::fs::create_dir_all(paths.data_file("args")).unwrap();
        std::fs::write(
            paths.data_file("args/kube-controller-manager"),
            include_str!("../../templates/args/kube-controller-manager"),
        )
        .unwrap();
        let c = load_config(&paths, &["--secure-port=1234".into()]).unwrap();
        assert_eq!(c.common.secure_port, 1234);
        assert_eq!(c.root_ca_file, Some(paths.data_file("certs/ca.crt")));
        assert_eq!(
            c.common.kubeconfig,
            paths.data_file("credentials/controller.config")
        );
        assert!(c.common.leader.enabled);
    }

    #[test]
    fn controllers_flag_follows_upstream() {
        let mut c = Config::defaults(Path::new("/d"));
        c.apply(&flags(&["--controllers=*,-namespace"])).unwrap();
        assert!(c.enabled(root_ca::NAME) && c.enabled(serviceaccount::NAME));
        assert!(!c.enabled(namespace::NAME));
        c.apply(&flags(&["--controllers=serviceaccount-controller"]))
            .unwrap();
        assert!(c.enabled(serviceaccount::NAME));
        assert!(!c.enabled(root_ca::NAME) && !c.enabled(namespace::NAME));
        let err = c
            .apply(&flags(&["--controllers=*,bogus"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"bogus\" is not a known controller"), "{err}");
    }

    #[test]
    fn service_and_node_flags_have_upstream_defaults_and_parse() {
        let mut c = Config::defaults(Path::new("/d"));
        assert_eq!(c.concurrent_endpoint_syncs, 5);
        assert_eq!(c.concurrent_service_endpoint_syncs, 5);
        assert_eq!(c.terminated_pod_gc_threshold, 12500);
        assert_eq!(c.node_monitor_grace_period, Duration::from_secs(50));
        assert_eq!(c.node_monitor_period, Duration::from_secs(5));
        c.apply(&flags(&[
            "--concurrent-endpoint-syncs=2",
            "--concurrent-service-endpoint-syncs=3",
            "--terminated-pod-gc-threshold=-1",
            "--node-monitor-grace-period=1m30s",
            "--node-monitor-period=500ms",
            "--controllers=endpoint,endpointslice,podgc,nodelifecycle,disruption",
        ]))
        .unwrap();
        assert_eq!(
            (
                c.concurrent_endpoint_syncs,
                c.concurrent_service_endpoint_syncs
            ),
            (2, 3)
        );
        assert_eq!(c.terminated_pod_gc_threshold, 0);
        assert_eq!(c.node_monitor_grace_period, Duration::from_secs(90));
        assert_eq!(c.node_monitor_period, Duration::from_millis(500));
        for name in [
            endpoints::NAME,
            endpointslice::NAME,
            podgc::NAME,
            nodelifecycle::NAME,
            disruption::NAME,
        ] {
            assert!(c.enabled(name), "{name}");
        }
        assert!(!c.enabled(replicaset::NAME));
        assert!(c.apply(&flags(&["--node-monitor-period=0s"])).is_err());
        assert!(
            c.apply(&flags(&["--node-monitor-grace-period=soon"]))
                .is_err()
        );
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        let mut c = Config::defaults(Path::new("/d"));
        let err = c.apply(&flags(&["--nope=1"])).unwrap_err().to_string();
        assert_eq!(err, "test 0: unknown flag '--nope'");
        let err = c
            .apply(&flags(&["--leader-elect-renew-deadline=20s"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("greater than --leader-elect-renew-deadline"),
            "{err}"
        );
        let mut c = Config::defaults(Path::new("/d"));
        assert!(c.apply(&flags(&["--leader-elect=maybe"])).is_err());
        assert!(c.apply(&flags(&["--secure-port=x"])).is_err());
        assert!(
            c.apply(&flags(&["--leader-elect-resource-lock=endpoints"]))
                .is_err()
        );
        c.apply(&flags(&[
            "--leader-elect=false",
            "--leader-elect-renew-deadline=20s",
        ]))
        .unwrap();
    }

    #[test]
    fn backoff_doubles_is_capped_and_forgets() {
        let b = Backoff::new("q", Arc::new(metrics::Metrics::default()));
        assert_eq!(b.failed("a"), Duration::from_millis(100));
        assert_eq!(b.failed("a"), Duration::from_millis(200));
        assert_eq!(b.failed("b"), Duration::from_millis(100));
        for _ in 0..40 {
            b.failed("a");
        }
        assert_eq!(b.failed("a"), MAX_RETRY);
        b.succeeded("a");
        assert_eq!(b.failed("a"), Duration::from_millis(100));
    }

    #[test]
    fn der_becomes_pem() {
        let pem = pem_cert(&[1u8; 100]);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
    }
}
