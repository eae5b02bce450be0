//! `mk8s start`: bootstrap if needed, start the supervisor in the background, and return once
//! every component is ready: a spinner naming the component waited for on a terminal, one
//! plain line a step otherwise.

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bootstrap::{self, Host};
use crate::common::paths::Paths;
use crate::supervisor::status::{State, Status};
use crate::supervisor::{self, logs};

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
    for line in prepare(paths)? {
        println!("{line}");
    }
    let progress = Progress::new();

    let log_path = paths.log_dir().join("supervisor.log");
    let log = supervisor::open_append(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the mk8s binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("supervise")
        .arg("--prepared")
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
                    progress.line(&format!(
                        "Started {} ({:.1} s)",
                        c.name,
                        started.elapsed().as_secs_f64()
                    ));
                    announced.push(c.name.clone());
                }
            }
            progress.show(&st);
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
                drop(progress);
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

/// What must be true before a supervisor starts: certificates and credentials, every args
/// file, no leftover component, free ports. Returns what it did, a line each. The caller holds
/// the CLI lock and has checked that no supervisor runs.
pub fn prepare(paths: &Paths) -> anyhow::Result<Vec<String>> {
    let mut did = Vec::new();
    let done = bootstrap::bootstrap(paths, &Host::detect())
        .with_context(|| format!("bootstrap of {} failed", paths.snap_data.display()))?;
    if !done.written.is_empty() {
        did.push(format!(
            "Created certificates and credentials in {}",
            paths.snap_data.display()
        ));
    }
    for p in supervisor::install_args(paths)? {
        did.push(format!("Installed {}", p.display()));
    }
    let killed = supervisor::kill_orphans(paths);
    for (name, pid) in &killed {
        did.push(format!("Stopped a leftover {name} (pid {pid})"));
    }
    let mut check = supervisor::preflight(paths);
    if !killed.is_empty() {
        // What they started (containerd under its wrapper) lets go of its ports a moment later.
        let deadline = Instant::now() + Duration::from_secs(10);
        while check.is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
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
    Ok(did)
}

/// How `start` shows its steps. On a terminal, a spinner with the count of components up and
/// the one waited for, the steps printed above it; otherwise one plain line a step, which
/// scripts (and the tests) read.
enum Progress {
    Plain,
    Terminal(indicatif::ProgressBar),
}

impl Progress {
    fn new() -> Self {
        if !std::io::stdout().is_terminal() {
            return Progress::Plain;
        }
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stdout());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_length(supervisor::COMPONENTS.len() as u64);
        bar.set_message("Starting the supervisor");
        bar.enable_steady_tick(Duration::from_millis(100));
        Progress::Terminal(bar)
    }

    /// A finished step: a line that stays.
    fn line(&self, text: &str) {
        match self {
            Progress::Plain => println!("{text}"),
            Progress::Terminal(bar) => bar.println(text),
        }
    }

    /// The spinner follows the supervisor's status; plain output shows only finished steps.
    fn show(&self, st: &Status) {
        if let Progress::Terminal(bar) = self {
            bar.set_length(st.components.len() as u64);
            bar.set_position(st.components.iter().filter(|c| c.state.is_up()).count() as u64);
            bar.set_message(waiting_for(st));
        }
    }
}

impl Drop for Progress {
    /// The spinner goes before the final line or the error is printed.
    fn drop(&mut self) {
        if let Progress::Terminal(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// What the spinner says: the first component in start order that is not up yet, and why.
fn waiting_for(st: &Status) -> String {
    let Some(c) = st.components.iter().find(|c| !c.state.is_up()) else {
        return "Every component is up".to_string();
    };
    match c.state {
        State::Backoff | State::Failed => format!(
            "Restarting {} ({} restarts: {})",
            c.name,
            c.restarts,
            c.last_error.as_deref().unwrap_or("no reason given")
        ),
        _ => format!("Waiting for {} to be ready", c.name),
    }
}

/// A failed start leaves nothing running.
fn stop_after_failure(paths: &Paths) {
    if let Err(e) = super::stop::stop_supervisor(paths, Duration::from_secs(30)) {
        eprintln!("warning: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::status::ComponentStatus;

    fn component(name: &str, state: State, restarts: u32, error: Option<&str>) -> ComponentStatus {
        ComponentStatus {
            name: name.into(),
            state,
            pid: None,
            restarts,
            last_error: error.map(String::from),
            log: format!("/var/log/{name}.log"),
        }
    }

    #[test]
    fn spinner_names_the_first_component_not_up() {
        let mut st = Status {
            supervisor_pid: 1,
            components: vec![
                component("containerd", State::Running, 0, None),
                component("datastore", State::Starting, 0, None),
                component("apiserver", State::Stopped, 0, None),
                component("dns", State::Disabled, 0, None),
            ],
        };
        assert_eq!(waiting_for(&st), "Waiting for datastore to be ready");
        st.components[1] = component("datastore", State::Backoff, 2, Some("exit status: 1"));
        assert_eq!(
            waiting_for(&st),
            "Restarting datastore (2 restarts: exit status: 1)"
        );
        st.components[1].state = State::Running;
        st.components[2].state = State::Running;
        assert_eq!(waiting_for(&st), "Every component is up");
    }
}
