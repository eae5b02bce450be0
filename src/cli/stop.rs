//! `mk8s stop`: stops the supervisor, which stops every component in reverse order; data is
//! kept. Not running is not an error (as `microk8s stop`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::paths::Paths;
use crate::supervisor;

/// Long enough for every component's own grace period.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(paths: &Paths) -> anyhow::Result<ExitCode> {
    let _serialised = supervisor::cli_lock(paths)?;
    if supervisor::running(paths).is_none() {
        let orphans = supervisor::kill_orphans(paths);
        for (name, pid) in &orphans {
            println!("Stopped a leftover {name} (pid {pid})");
        }
        println!("mk8s is not running");
        return Ok(ExitCode::SUCCESS);
    }
    stop_supervisor(paths, STOP_TIMEOUT)?;
    println!("Stopped.");
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM to the supervisor; SIGKILL to it and its components if it does not finish in time.
pub fn stop_supervisor(paths: &Paths, timeout: Duration) -> anyhow::Result<()> {
    let Some(pid) = supervisor::running(paths) else {
        supervisor::kill_orphans(paths);
        return Ok(());
    };
    if pid != 0 {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + timeout;
    while supervisor::running(paths).is_some() {
        if Instant::now() > deadline {
            if pid != 0 {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            supervisor::kill_orphans(paths);
            anyhow::bail!(
                "the supervisor (pid {pid}) did not stop in {} s; killed it",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The lock goes with the supervisor's files, a moment before the process is gone.
    if pid != 0 && !supervisor::wait_exited(pid, Duration::from_secs(5)) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        supervisor::wait_exited(pid, Duration::from_secs(5));
    }
    supervisor::kill_orphans(paths);
    Ok(())
}
