//! containerd as an mk8s component (`mk8s daemon containerd`): renders
//! `args/containerd.toml` from `args/containerd-template.toml` and the CNI config under
//! `args/cni-network/`, runs Debian's `containerd` binary with the flags of `args/containerd`,
//! and on SIGTERM stops and removes every pod sandbox through CRI before stopping containerd,
//! so `mk8s stop` leaves no container running. Never touches a system containerd: root, state
//! and socket all live under `$SNAP_COMMON`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::args::{self, ArgsError};
use crate::common::fsutil::{IoError, io_err, write_atomic};
use crate::common::paths::Paths;

use super::cri::Cri;

pub const TEMPLATE: &str = include_str!("../../templates/containerd-template.toml");
pub const CNI_CONFLIST: &str = include_str!("../../templates/cni/10-mk8s.conflist");
pub const CNI_CONFLIST_NAME: &str = "10-mk8s.conflist";
/// How long stopping all sandboxes may take before containerd is stopped anyway (inside the
/// supervisor's 40 s stop grace for this component).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(
        "cannot run {0}: {1} (install Debian's containerd, runc and containernetworking-plugins)"
    )]
    Spawn(String, std::io::Error),
    #[error("containerd exited: {0}")]
    Exited(std::process::ExitStatus),
}

/// What `mk8s daemon containerd` runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub binary: PathBuf,
    /// Flags for containerd, from `args/containerd` then the command line.
    pub flags: Vec<String>,
    pub socket: PathBuf,
    paths: Paths,
}

/// containerd's socket under `$SNAP_COMMON/run`.
pub fn socket(paths: &Paths) -> PathBuf {
    paths.run_dir().join("containerd.sock")
}

/// Reads `args/containerd`; `--binary=PATH` (ours, not containerd's) picks the executable.
pub fn load_config(paths: &Paths, cli: &[String]) -> Result<Config, ContainerdError> {
    let flags = args::load(&paths.data_file("args/containerd"), cli, &paths.vars())?;
    let mut binary = PathBuf::from("/usr/bin/containerd");
    let mut out = Vec::new();
    let mut has_config = false;
    for f in flags {
        if f.name == "binary" {
            binary = PathBuf::from(f.value);
        } else {
            has_config |= f.name == "config" || f.name == "c";
            out.push(format!("--{}={}", f.name, f.value));
        }
    }
    // Without --config containerd would take the system's /etc/containerd and /run/containerd.
    if !has_config {
        out.insert(
            0,
            format!(
                "--config={}",
                paths.data_file("args/containerd.toml").display()
            ),
        );
    }
    Ok(Config {
        binary,
        flags: out,
        socket: socket(paths),
        paths: paths.clone(),
    })
}

/// Installs the template and CNI config when missing, and renders `args/containerd.toml`.
pub fn render(paths: &Paths) -> Result<(), ContainerdError> {
    let vars = paths.vars();
    let args_dir = paths.data_file("args");
    std::fs::create_dir_all(&args_dir).map_err(io_err("create", &args_dir))?;
    let template = args_dir.join("containerd-template.toml");
    if !template.exists() {
        write_atomic(&template, TEMPLATE.as_bytes(), 0o644).map_err(io_err("write", &template))?;
    }
    let text = std::fs::read_to_string(&template).map_err(io_err("read", &template))?;
    let out = args_dir.join("containerd.toml");
    write_atomic(&out, vars.expand(&text).as_bytes(), 0o644).map_err(io_err("write", &out))?;
    let cni_dir = args_dir.join("cni-network");
    std::fs::create_dir_all(&cni_dir).map_err(io_err("create", &cni_dir))?;
    let conflist = cni_dir.join(CNI_CONFLIST_NAME);
    if !conflist.exists() {
        write_atomic(&conflist, vars.expand(CNI_CONFLIST).as_bytes(), 0o644)
            .map_err(io_err("write", &conflist))?;
    }
    for dir in [
        paths.run_dir(),
        paths.snap_common.join("var/lib/containerd"),
    ] {
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    }
    Ok(())
}

/// Runs containerd until it exits or SIGTERM/SIGINT arrives.
pub async fn run(config: Config) -> Result<(), ContainerdError> {
    render(&config.paths)?;
    let mut cmd = tokio::process::Command::new(&config.binary);
    cmd.args(&config.flags).kill_on_drop(true);
    // SAFETY: only an async-signal-safe prctl between fork and exec: containerd dies with us.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| ContainerdError::Spawn(config.binary.display().to_string(), e))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io_err("watch signals of", Path::new("containerd")))?;
    tokio::select! {
        status = child.wait() => {
            let status = status.map_err(io_err("wait for", &config.binary))?;
            return Err(ContainerdError::Exited(status));
        }
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping every pod sandbox before containerd");
    if tokio::time::timeout(DRAIN_TIMEOUT, remove_all_sandboxes(&config.socket))
        .await
        .is_err()
    {
        tracing::warn!("pod sandboxes did not all stop within {DRAIN_TIMEOUT:?}");
    }
    // With every pod down, their volume mounts (memory emptyDirs) go too.
    if let Ok(kubelet) = super::load_config(&config.paths, &[]) {
        super::volumes::unmount_under(&kubelet.root_dir.join("pods"));
    }
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    // A sandbox's /dev/shm outlives a containerd stopped mid-removal: release what is left.
    super::volumes::unmount_under(&config.paths.run_dir().join("containerd"));
    Ok(())
}

/// Stops and removes every sandbox (their containers go with them), all at once. A
/// RunPodSandbox still in flight when the kubelet stopped lands a moment later, so the list is
/// read again until it has stayed empty across a short wait.
async fn remove_all_sandboxes(socket: &Path) {
    let Ok(cri) = Cri::connect(socket).await else {
        return;
    };
    let mut quiet = 0;
    for _ in 0..20 {
        let list = cri
            .runtime
            .clone()
            .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest { filter: None })
            .await;
        let Ok(list) = list else { return };
        let items = list.into_inner().items;
        if items.is_empty() {
            quiet += 1;
            if quiet == 2 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            continue;
        }
        quiet = 0;
        let stops = items.into_iter().map(|sb| {
            let mut rt = cri.runtime.clone();
            async move {
                let id = sb.id;
                if let Err(e) = rt
                    .stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await
                {
                    tracing::warn!("stop sandbox {id}: {}", e.message());
                }
                if let Err(e) = rt
                    .remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await
                {
                    tracing::warn!("remove sandbox {id}: {}", e.message());
                }
            }
        });
        futures::future::join_all(stops).await;
    }
}

/// The `[metrics] address` of the template (MicroK8s's port map has 127.0.0.1:1338).
pub fn metrics_addr(paths: &Paths) -> Result<Option<std::net::SocketAddr>, String> {
    let template = paths.data_file("args/containerd-template.toml");
    let text = std::fs::read_to_string(&template).unwrap_or_else(|_| TEMPLATE.to_string());
    let mut in_metrics = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_metrics = line == "[metrics]";
        } else if in_metrics
            && let Some(v) = line.strip_prefix("address")
            && let Some(v) = v.trim_start().strip_prefix('=')
        {
            let v = v.trim().trim_matches('"');
            if v.is_empty() {
                return Ok(None);
            }
            return v
                .parse()
                .map(Some)
                .map_err(|e| format!("{}: metrics address {v:?}: {e}", template.display()));
        }
    }
    Ok(None)
}

/// Ready when CRI answers Version on the socket.
pub async fn probe_ready(paths: &Paths) -> bool {
    let sock = socket(paths);
    if !sock.exists() {
        return false;
    }
    match Cri::connect(&sock).await {
        Ok(mut cri) => cri.version().await.is_ok(),
        Err(_) => false,
    }
}
