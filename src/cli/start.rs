//! `mk8s start`: bootstrap if needed, start the supervisor in the background, and return once
//! every component is ready, one plain line a step.

use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bootstrap::{self, Host};
use crate::common::paths::Paths;
use crate::supervisor::{self, logs, status::State};

/// Seconds `start` waits for every component to be ready.
const DEFAULT_START_TIMEOUT: u64 = 120;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds to wait for every component to be ready
    #[arg(long, default_value_t = DEFAULT_START_TIMEOUT)]
    timeout: u64,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_START_TIMEOUT,
        }
    }
}

pub fn run(paths: &Paths, a: Args) -> anyhow::Result<ExitCode> {
    let _serialised = supervisor::cli_lock(paths)?;
    if let Some(pid) = supervisor::running(paths) {
        println!("mk8s is already running (supervisor pid {pid})");
        return Ok(ExitCode::SUCCESS);
    }
    let done = bootstrap::bootstrap(paths, &Host::detect())
        .with_context(|| format!("bootstrap of {} failed", paths.snap_data.display()))?;
    if !done.written.is_empty() {
        println!(
            "Created certificates and credentials in {}",
            paths.snap_data.display()
        );
    }
    for p in supervisor::install_args(paths)? {
        println!("Installed {}", p.display());
    }
    let killed = supervisor::kill_orphans(paths);
    for (name, pid) in &killed {
        println!("Stopped a leftover {name} (pid {pid})");
    }
    let mut check = supervisor::preflight(paths);
    if !killed.is_empty() {
        // What they started (containerd under its wrapper) lets go of its ports a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while check.is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            check = supervisor::preflight(paths);
        }
    }
    if let Err(why) = check {
        bail!("{why}");
    }
    for dir in [paths.run_dir(), paths.log_dir()] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(supervisor::status_path(paths));

    let log_path = paths.log_dir().join("supervisor.log");
    let log = supervisor::open_append(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the mk8s binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("supervise")
        .arg("--data-dir")
        .arg(&paths.snap_data)
        .arg("--common-dir")
        .arg(&paths.snap_common)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot share the log")?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the supervisor from our terminal.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().context("cannot start the supervisor")?;

    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let mut announced: Vec<String> = Vec::new();
    let started = Instant::now();
    loop {
        if let Ok(Some(exit)) = child.try_wait() {
            bail!(
                "the supervisor exited ({exit}); last lines of {}: {}",
                log_path.display(),
                logs::tail(&log_path, 5).replace('\n', " | ")
            );
        }
        if let Some(st) = supervisor::status::read(&supervisor::status_path(paths)) {
            for c in &st.components {
                if c.state == State::Running && !announced.contains(&c.name) {
                    println!(
                        "Started {} ({:.1} s)",
                        c.name,
                        started.elapsed().as_secs_f64()
                    );
                    announced.push(c.name.clone());
                }
            }
            if let Some(bad) = st.components.iter().find(|c| c.restarts >= 3) {
                let tail = logs::tail(std::path::Path::new(&bad.log), 5);
                stop_after_failure(paths);
                bail!(
                    "{} failed to start ({}); last lines of {}: {}",
                    bad.name,
                    bad.last_error.as_deref().unwrap_or("no reason given"),
                    bad.log,
                    tail.replace('\n', " | ")
                );
            }
            if st.all_running() && !st.components.is_empty() {
                println!("mk8s is running");
                return Ok(ExitCode::SUCCESS);
            }
        }
        if Instant::now() > deadline {
            let st = supervisor::status::read(&supervisor::status_path(paths));
            let waiting: Vec<String> = st
                .map(|s| {
                    s.components
                        .into_iter()
                        .filter(|c| !c.state.is_up())
                        .map(|c| c.name)
                        .collect()
                })
                .unwrap_or_default();
            stop_after_failure(paths);
            bail!(
                "not ready after {} s: {}",
                a.timeout,
                if waiting.is_empty() {
                    "the supervisor".to_string()
                } else {
                    waiting.join(", ")
                }
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A failed start leaves nothing running.
fn stop_after_failure(paths: &Paths) {
    if let Err(e) = super::stop::stop_supervisor(paths, Duration::from_secs(30)) {
        eprintln!("warning: {e:#}");
    }
}
