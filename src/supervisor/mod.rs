//! The supervisor (`mk8s supervise`): runs each component as a child process
//! (`mk8s daemon <name>`), in order, waiting for each one's readiness; restarts a dead child with
//! back-off (1 s doubling to 30 s, reset after 60 s healthy); stops them in reverse order.
//!
//! Also watches the host's addresses and the serving certificates' expiry ([`certwatch`]) and
//! has bootstrap renew them; the servers reload them, so that restarts nothing.
//!
//! Owns `$SNAP_COMMON/run/` (its lock, pid files, `status.json`) and `$SNAP_COMMON/var/log/`.
//! Knows components only by name, args file and readiness check; never touches their data
//! (certificates change only through bootstrap).

pub mod certwatch;
pub mod logs;
pub mod ports;
pub mod status;

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::common::fsutil::{IoError, io_err};
use crate::common::paths::Paths;
use status::{ComponentStatus, State, Status};

const LOCK_FILE: &str = "supervisor.lock";
/// Serialises `start` and `stop`, so two of them never interleave their checks and kills.
const CLI_LOCK_FILE: &str = "cli.lock";
const PID_FILE: &str = "supervisor.pid";
/// Where systemd listens for a `Type=notify` service's `READY=1`.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
pub const STATUS_FILE: &str = "status.json";

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const HEALTHY_RESETS_BACKOFF: Duration = Duration::from_secs(60);
/// How long a component gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// containerd's wrapper first stops every pod sandbox (a hundred take a while on two cores),
/// then containerd; killed early, it would leave shims, mounts and network namespaces.
const CONTAINERD_STOP_GRACE: Duration = Duration::from_secs(40);
const READY_POLL: Duration = Duration::from_millis(100);

/// A component's readiness check, as its clients would see it.
pub type Probe = fn(Paths) -> futures::future::BoxFuture<'static, bool>;

/// A component the supervisor runs.
pub struct ComponentDef {
    pub name: &'static str,
    /// Its file under `args/`, MicroK8s's name (`kube-apiserver` for the API server).
    pub args_file: &'static str,
    /// Default args content, installed when the file is missing.
    pub args_template: &'static str,
    /// The addresses it will listen on, read from its args (checked free before start).
    pub listens: fn(&Paths) -> Result<Vec<SocketAddr>, String>,
    pub probe: Probe,
    /// How long it gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// For a component an addon turns on: whether it is on (read from files, so a hand edit
    /// counts). Its args file is the addon's to install, and while off it is not run.
    pub enabled: Option<fn(&Paths) -> bool>,
}

impl ComponentDef {
    pub fn is_enabled(&self, paths: &Paths) -> bool {
        self.enabled.is_none_or(|f| f(paths))
    }
}

/// Every component, in start order (the others join as their issues land).
pub const COMPONENTS: &[ComponentDef] = &[
    ComponentDef {
        name: "containerd",
        args_file: "containerd",
        args_template: include_str!("../../templates/args/containerd"),
        listens: |paths| {
            Ok(crate::kubelet::containerd::metrics_addr(paths)?
                .into_iter()
                .collect())
        },
        probe: |paths| {
            Box::pin(async move { crate::kubelet::containerd::probe_ready(&paths).await })
        },
        stop_grace: CONTAINERD_STOP_GRACE,
        enabled: None,
    },
    ComponentDef {
        name: "datastore",
        args_file: "datastore",
        args_template: include_str!("../../templates/args/datastore"),
        listens: |paths| {
            let c = crate::datastore::load_config(paths, &[]).map_err(|e| e.to_string())?;
            Ok(c.listen_client
                .iter()
                .chain(&c.listen_peer)
                .copied()
                .collect())
        },
        probe: |paths| Box::pin(async move { probe_datastore(&paths).await }),
        stop_grace: STOP_GRACE,
        enabled: None,
    },
    ComponentDef {
        name: "apiserver",
        args_file: "kube-apiserver",
        args_template: include_str!("../../templates/args/kube-apiserver"),
        listens: |paths| {
            let c = crate::apiserver::load_config(paths, &[]).map_err(|e| e.to_string())?;
            Ok(vec![c.listen_addr()])
        },
        probe: |paths| Box::pin(async move { crate::apiserver::probe_ready(&paths).await }),
        stop_grace: STOP_GRACE,
        enabled: None,
    },
    ComponentDef {
        name: "controller-manager",
        args_file: "kube-controller-manager",
        args_template: include_str!("../../templates/args/kube-controller-manager"),
        listens: |paths| {
            let c = crate::controllers::load_config(paths, &[]).map_err(|e| e.to_string())?;
            Ok(vec![c.common.listen_addr()])
        },
        probe: |paths| Box::pin(async move { crate::controllers::probe_ready(&paths).await }),
        stop_grace: STOP_GRACE,
        enabled: None,
    },
    ComponentDef {
        name: "scheduler",
        args_file: "kube-scheduler",
        args_template: include_str!("../../templates/args/kube-scheduler"),
        listens: |paths| {
            let c = crate::scheduler::load_config(paths, &[]).map_err(|e| e.to_string())?;
            Ok(vec![c.common.listen_addr()])
        },
        probe: |paths| Box::pin(async move { crate::scheduler::probe_ready(&paths).await }),
        stop_grace: STOP_GRACE,
        enabled: None,
    },
    ComponentDef {
        name: "kubelet",
        args_file: "kubelet",
        args_template: include_str!("../../templates/args/kubelet"),
        listens: |paths| {
            let c = crate::kubelet::load_config(paths, &[]).map_err(|e| e.to_string())?;
            Ok(c.listens())
        },
        probe: |paths| Box::pin(async move { crate::kubelet::probe_ready(&paths).await }),
        stop_grace: STOP_GRACE,
        enabled: None,
    },
    ComponentDef {
        name: "proxy",
        args_file: "kube-proxy",
        args_template: include_str!("../../templates/args/kube-proxy"),
        listens: |paths| {
            let c = crate::proxy::load_config(paths, &[]).map_err(|e| e.to_string())?;
            Ok(c.listens())
        },
        probe: |paths| Box::pin(async move { crate::proxy::probe_ready(&paths).await }),
        stop_grace: STOP_GRACE,
        enabled: None,
    },
    ComponentDef {
        name: "dns",
        args_file: crate::dns::ARGS_FILE,
        args_template: include_str!("../../templates/args/dns"),
        listens: |paths| {
            let c = crate::dns::load_config(paths, &[]).map_err(|e| e.to_string())?;
            Ok(vec![c.listen_addr()])
        },
        probe: |paths| Box::pin(async move { crate::dns::probe_ready(&paths).await }),
        stop_grace: STOP_GRACE,
        enabled: Some(crate::dns::enabled),
    },
];

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("mk8s is already running (supervisor pid {0})")]
    AlreadyRunning(u32),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("mk8s is not running")]
    NotRunning,
    #[error("{0} is not a component")]
    UnknownComponent(String),
    #[error("{name} did not come back ready within {secs} s; see {log}")]
    RestartTimeout {
        name: String,
        secs: u64,
        log: String,
    },
}

fn restart_marker(paths: &Paths, name: &str) -> PathBuf {
    paths.run_dir().join(format!("restart.{name}"))
}

/// Asks the running supervisor to restart one component now (SIGHUP names it through a
/// marker file), without counting a crash or waiting out a back-off; returns once it is
/// ready again, or, for an addon's component that is now off, once it has stopped.
pub fn restart_component(
    paths: &Paths,
    name: &str,
    timeout: Duration,
) -> Result<(), SupervisorError> {
    let Some(def) = COMPONENTS.iter().find(|c| c.name == name) else {
        return Err(SupervisorError::UnknownComponent(name.into()));
    };
    let enabled = def.is_enabled(paths);
    let Some(pid) = running(paths).filter(|p| *p != 0) else {
        return Err(SupervisorError::NotRunning);
    };
    let before = status::read(&status_path(paths))
        .and_then(|s| s.components.into_iter().find(|c| c.name == name))
        .and_then(|c| c.pid);
    let marker = restart_marker(paths, name);
    crate::common::fsutil::write_atomic(&marker, b"", 0o644).map_err(io_err("write", &marker))?;
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGHUP);
    let deadline = Instant::now() + timeout;
    loop {
        let now = status::read(&status_path(paths))
            .and_then(|s| s.components.into_iter().find(|c| c.name == name));
        let done = match &now {
            Some(c) if enabled => c.state == State::Running && c.pid.is_some() && c.pid != before,
            Some(c) => c.state == State::Disabled,
            None => false,
        };
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(SupervisorError::RestartTimeout {
                name: name.into(),
                secs: timeout.as_secs(),
                log: log_path(paths, name).display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes every missing `args/<component>` from its template; returns those written.
pub fn install_args(paths: &Paths) -> Result<Vec<PathBuf>, SupervisorError> {
    let dir = paths.data_file("args");
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let mut written = Vec::new();
    for c in COMPONENTS.iter().filter(|c| c.enabled.is_none()) {
        let p = dir.join(c.args_file);
        if !p.exists() {
            crate::common::fsutil::write_atomic(&p, c.args_template.as_bytes(), 0o644)
                .map_err(io_err("write", &p))?;
            written.push(p);
        }
    }
    Ok(written)
}

/// Checks every component's args file and ports before anything starts, so a bad line or a
/// taken port is one clear error instead of a crash loop.
pub fn preflight(paths: &Paths) -> Result<(), String> {
    for c in COMPONENTS.iter().filter(|c| c.is_enabled(paths)) {
        for addr in (c.listens)(paths).map_err(|e| format!("{}: {e}", c.name))? {
            ports::check_free(addr).map_err(|e| format!("{}: {e}", c.name))?;
        }
    }
    Ok(())
}

/// Opens (creating) a file used only to hold a flock on.
fn open_lock_file(path: &Path) -> Result<File, SupervisorError> {
    Ok(OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?)
}

/// Held by `start` and `stop` for their whole run.
pub fn cli_lock(paths: &Paths) -> Result<Flock<File>, SupervisorError> {
    let dir = paths.run_dir();
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let p = dir.join(CLI_LOCK_FILE);
    Flock::lock(open_lock_file(&p)?, FlockArg::LockExclusive)
        .map_err(|(_, e)| io_err("lock", &p)(e.into()).into())
}

/// The running supervisor's pid, if one holds the lock (0 if its pid file does not name a
/// live `mk8s supervise` of these roots yet, so nobody signals a stranger).
pub fn running(paths: &Paths) -> Option<u32> {
    let lock = OpenOptions::new()
        .read(true)
        .open(paths.run_dir().join(LOCK_FILE))
        .ok()?;
    match Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
        // We got it: nobody holds it; dropping releases it.
        Ok(_) => None,
        Err(_) => Some(
            std::fs::read_to_string(paths.run_dir().join(PID_FILE))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .filter(|pid| is_ours(*pid, paths, b"supervise") || holds_lock(*pid, paths))
                .unwrap_or(0),
        ),
    }
}

pub fn status_path(paths: &Paths) -> PathBuf {
    paths.run_dir().join(STATUS_FILE)
}

pub fn log_path(paths: &Paths, component: &str) -> PathBuf {
    paths.log_dir().join(format!("{component}.log"))
}

fn component_pid_file(paths: &Paths, name: &str) -> PathBuf {
    paths.run_dir().join(format!("{name}.pid"))
}

/// Whether `pid` is a live `mk8s <command> … --common-dir <ours>`, so that a stale pid file
/// never makes us signal a stranger or another instance's process.
fn is_ours(pid: u32, paths: &Paths, command: &[u8]) -> bool {
    let common = paths.snap_common.as_os_str().as_encoded_bytes();
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
        args.first().is_some_and(|a| a.ends_with(b"mk8s"))
            && args.contains(&command)
            && args.contains(&common)
    })
}

/// Whether `pid` has this instance's supervisor lock open: how a supervisor run without the
/// roots on its command line (the systemd unit's plain `mk8s supervise`, which may take them
/// from the environment) is known for ours. Its open files are as good a proof as its roots.
fn holds_lock(pid: u32, paths: &Paths) -> bool {
    let Ok(lock) = std::fs::canonicalize(paths.run_dir().join(LOCK_FILE)) else {
        return false;
    };
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == lock))
    })
}

/// Kills components left behind by a supervisor that died without stopping them.
pub fn kill_orphans(paths: &Paths) -> Vec<(String, u32)> {
    let mut killed = Vec::new();
    for c in COMPONENTS {
        let pf = component_pid_file(paths, c.name);
        if let Some(pid) = std::fs::read_to_string(&pf)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            && is_ours(pid, paths, b"daemon")
        {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            // Wait for it to be gone, so its ports are free for the next start.
            wait_exited(pid, Duration::from_secs(5));
            killed.push((c.name.to_string(), pid));
        }
        let _ = std::fs::remove_file(&pf);
    }
    killed
}

/// Whether `pid` has finished exiting: no such process, or a zombie. A dying process drops its
/// cmdline (and so stops looking like ours) before it closes its files and sockets, so "not
/// ours any more" is not "gone".
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Waits up to `timeout` for `pid` to have exited; whether it did.
pub fn wait_exited(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !exited(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Takes the supervisor lock, retrying for a second: `running()` probes by holding it for an
/// instant, which must not make a starting supervisor give up.
fn take_lock(mut file: File) -> Option<Flock<File>> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Some(l),
            Err((f, _)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return None,
        }
    }
}

/// Runs the supervisor in the foreground until SIGTERM or SIGINT.
pub fn run(paths: &Paths) -> Result<(), SupervisorError> {
    let run_dir = paths.run_dir();
    let log_dir = paths.log_dir();
    std::fs::create_dir_all(&run_dir).map_err(io_err("create", &run_dir))?;
    std::fs::create_dir_all(&log_dir).map_err(io_err("create", &log_dir))?;
    let lock_path = run_dir.join(LOCK_FILE);
    let _lock = take_lock(open_lock_file(&lock_path)?)
        .ok_or_else(|| SupervisorError::AlreadyRunning(running(paths).unwrap_or(0)))?;
    let pid_path = run_dir.join(PID_FILE);
    crate::common::fsutil::write_atomic(
        &pid_path,
        std::process::id().to_string().as_bytes(),
        0o644,
    )
    .map_err(io_err("write", &pid_path))?;
    kill_orphans(paths);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("start the runtime for", &run_dir))?;
    let result = rt.block_on(supervise(paths.clone()));
    let _ = std::fs::remove_file(&pid_path);
    result
}

struct Shared {
    paths: Paths,
    status: Mutex<Status>,
}

impl Shared {
    /// Changes one component's entry and publishes the new status.
    fn update(&self, name: &str, f: impl FnOnce(&mut ComponentStatus)) {
        if let Some(c) = self
            .status
            .lock()
            .components
            .iter_mut()
            .find(|c| c.name == name)
        {
            f(c);
        }
        self.publish();
    }

    fn publish(&self) {
        let snapshot = self.status.lock().clone();
        if let Err(e) = status::write(&status_path(&self.paths), &snapshot) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
    }
}

async fn supervise(paths: Paths) -> Result<(), SupervisorError> {
    let shared = Arc::new(Shared {
        status: Mutex::new(Status {
            supervisor_pid: std::process::id(),
            components: COMPONENTS
                .iter()
                .map(|c| ComponentStatus {
                    name: c.name.to_string(),
                    state: State::Stopped,
                    pid: None,
                    restarts: 0,
                    last_error: None,
                    log: log_path(&paths, c.name).display().to_string(),
                })
                .collect(),
        }),
        paths: paths.clone(),
    });
    shared.publish();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io_err("handle signals in", &paths.snap_common))?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(io_err("handle signals in", &paths.snap_common))?;
    let mut tasks = Vec::new();
    let mut stoppers = Vec::new();
    let restarts: Vec<Arc<tokio::sync::Notify>> = COMPONENTS
        .iter()
        .map(|_| Arc::new(tokio::sync::Notify::new()))
        .collect();
    let start_all = async {
        for (c, restart) in COMPONENTS.iter().zip(&restarts) {
            let (stop_tx, stop_rx) = watch::channel(false);
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            tasks.push(tokio::spawn(keep_running(
                c.name,
                shared.clone(),
                stop_rx,
                ready_tx,
                restart.clone(),
            )));
            stoppers.push(stop_tx);
            // The next component may need this one (the API server needs the datastore).
            let _ = ready_rx.await;
        }
        notify_ready();
        // `restart_component` asks for restarts: a marker file a component, then SIGHUP.
        loop {
            hangup.recv().await;
            for (c, restart) in COMPONENTS.iter().zip(&restarts) {
                if std::fs::remove_file(restart_marker(&paths, c.name)).is_ok() {
                    tracing::info!(component = c.name, "restart requested");
                    restart.notify_waiters();
                }
            }
        }
    };
    let watch = tokio::spawn(certwatch::run(paths.clone()));
    tokio::select! {
        _ = start_all => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    watch.abort();
    tracing::info!("stopping components");
    for (stop, task) in stoppers.into_iter().zip(tasks).rev() {
        let _ = stop.send(true);
        let _ = task.await;
    }
    Ok(())
}

/// Tells systemd that every component is up, for the `Type=notify` unit: `READY=1` to
/// `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`). Without it, nothing.
fn notify_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let addr = match target.as_encoded_bytes().strip_prefix(b"@") {
            Some(name) => UnixAddr::from_abstract_name(name)?,
            None => UnixAddr::from_pathname(&target)?,
        };
        sock.send_to_addr(b"READY=1\n", &addr)
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, socket = ?target, "cannot tell systemd we are ready");
    }
}

/// Spawns `mk8s daemon <name>` with its output in its log; the child gets SIGTERM if we die.
fn spawn(name: &str, paths: &Paths) -> std::io::Result<tokio::process::Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("daemon")
        .arg(name)
        .arg("--data-dir")
        .arg(&paths.snap_data)
        .arg("--common-dir")
        .arg(&paths.snap_common)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The unit's readiness is ours to tell (containerd would tell it its own).
        .env_remove(NOTIFY_SOCKET)
        .kill_on_drop(true);
    // SAFETY: only an async-signal-safe prctl between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    cmd.spawn()
}

/// SIGTERM, then SIGKILL after the grace period.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

async fn keep_running(
    name: &'static str,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    ready_tx: tokio::sync::oneshot::Sender<()>,
    restart: Arc<tokio::sync::Notify>,
) {
    let paths = shared.paths.clone();
    let mut ready_tx = Some(ready_tx);
    let mut delay = FIRST_BACKOFF;
    let pid_file = component_pid_file(&paths, name);
    let def = COMPONENTS.iter().find(|c| c.name == name);
    loop {
        if *stop.borrow() {
            break;
        }
        if def.is_some_and(|d| !d.is_enabled(&paths)) {
            shared.update(name, |c| {
                c.state = State::Disabled;
                c.pid = None;
            });
            // Nothing waits for an addon that is off; a restart request re-checks.
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(());
            }
            tokio::select! {
                _ = restart.notified() => continue,
                _ = stop.changed() => break,
            }
        }
        shared.update(name, |c| {
            c.state = State::Starting;
            c.pid = None;
        });
        let started = Instant::now();
        let outcome = match spawn(name, &paths) {
            Err(e) => Err(format!("cannot start: {e}")),
            Ok(mut child) => {
                let pid = child.id();
                if let Some(pid) = pid {
                    let _ = crate::common::fsutil::write_atomic(
                        &pid_file,
                        pid.to_string().as_bytes(),
                        0o644,
                    );
                }
                shared.update(name, |c| c.pid = pid);
                // Without a log the pipes are still drained, or the child would block.
                let log = match logs::RotatingLog::open(&log_path(&paths, name)) {
                    Ok(log) => Some(Arc::new(Mutex::new(log))),
                    Err(e) => {
                        tracing::warn!(component = name, error = %e, "cannot open log");
                        None
                    }
                };
                if let Some(out) = child.stdout.take() {
                    tokio::spawn(logs::pump(out, log.clone()));
                }
                if let Some(err) = child.stderr.take() {
                    tokio::spawn(logs::pump(err, log));
                }
                let mut is_ready = false;
                let result = loop {
                    tokio::select! {
                        exit = child.wait() => {
                            break Err(match exit {
                                Ok(s) => format!("exited ({s})"),
                                Err(e) => format!("lost: {e}"),
                            });
                        }
                        _ = stop.changed() => {
                            shared.update(name, |c| c.state = State::Stopping);
                            terminate(&mut child, stop_grace(name)).await;
                            break Ok(Ended::Stopped);
                        }
                        _ = restart.notified() => {
                            shared.update(name, |c| c.state = State::Stopping);
                            terminate(&mut child, stop_grace(name)).await;
                            break Ok(Ended::Restart);
                        }
                        _ = tokio::time::sleep(READY_POLL), if !is_ready => {
                            if probe(name, &paths).await {
                                is_ready = true;
                                shared.update(name, |c| c.state = State::Running);
                                if let Some(tx) = ready_tx.take() {
                                    let _ = tx.send(());
                                }
                            }
                        }
                    }
                };
                let _ = std::fs::remove_file(&pid_file);
                result
            }
        };
        match outcome {
            Ok(Ended::Stopped) => break,
            Ok(Ended::Restart) => delay = FIRST_BACKOFF,
            Err(why) => {
                tracing::warn!(
                    component = name,
                    why,
                    "component stopped; restarting after back-off"
                );
                if started.elapsed() >= HEALTHY_RESETS_BACKOFF {
                    delay = FIRST_BACKOFF;
                }
                shared.update(name, |c| {
                    c.state = State::Backoff;
                    c.pid = None;
                    c.restarts += 1;
                    c.last_error = Some(why);
                });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => break,
                }
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
    shared.update(name, |c| {
        c.state = State::Stopped;
        c.pid = None;
    });
}

/// How a run of a component ended, other than by dying.
enum Ended {
    Stopped,
    /// Asked for: start again at once.
    Restart,
}

fn stop_grace(name: &str) -> Duration {
    COMPONENTS
        .iter()
        .find(|c| c.name == name)
        .map_or(STOP_GRACE, |c| c.stop_grace)
}

/// A component's readiness check, as its clients would see it.
pub async fn probe(name: &str, paths: &Paths) -> bool {
    match COMPONENTS.iter().find(|c| c.name == name) {
        Some(c) => (c.probe)(paths.clone()).await,
        None => false,
    }
}

async fn probe_datastore(paths: &Paths) -> bool {
    let Ok(config) = crate::datastore::load_config(paths, &[]) else {
        return false;
    };
    let Some(addr) = config.listen_client.first() else {
        return false;
    };
    let endpoint = crate::datastore::advertised("https", addr);
    let certs = paths.data_file("certs");
    let read = |f: &str| std::fs::read(certs.join(f)).ok();
    let (Some(ca), Some(cert), Some(key)) = (
        read("ca.crt"),
        read("apiserver-etcd-client.crt"),
        read("apiserver-etcd-client.key"),
    ) else {
        return false;
    };
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(ca))
        .identity(etcd_client::Identity::from_pem(cert, key))
        .domain_name("localhost");
    let opts = etcd_client::ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2));
    let check = async {
        let mut c = etcd_client::Client::connect([endpoint], Some(opts))
            .await
            .ok()?;
        c.get("health", None).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), check).await,
        Ok(Some(_))
    )
}

/// Opens a file for appending (the supervisor's own log, written by `start`).
pub fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}
