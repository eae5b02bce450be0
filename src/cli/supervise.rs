//! `mk8s supervise`: the supervisor in the foreground, as the systemd unit runs it. On its own
//! it first prepares what `mk8s start` prepares (bootstrap, args files, port checks); `start`
//! has done that already when it runs it in the background, and says so with `--prepared`.

use std::process::ExitCode;

use crate::common::paths::Paths;
use crate::supervisor::{self, SupervisorError};

/// Exit code when another supervisor already runs for these roots: not a failure to retry
/// (the unit's `RestartPreventExitStatus=`).
pub const EXIT_ALREADY_RUNNING: u8 = 3;

#[derive(Debug, Default, clap::Args)]
pub struct Args {
    /// Skip the bootstrap and checks: `mk8s start` has just done them
    #[arg(long, hide = true)]
    pub prepared: bool,
}

pub fn run(paths: &Paths, a: Args) -> anyhow::Result<ExitCode> {
    if !a.prepared {
        let _serialised = supervisor::cli_lock(paths)?;
        if let Some(pid) = supervisor::running(paths) {
            return Ok(already_running(pid));
        }
        for line in super::start::prepare(paths)? {
            println!("{line}");
        }
    }
    match supervisor::run(paths) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(SupervisorError::AlreadyRunning(pid)) => Ok(already_running(pid)),
        Err(e) => Err(e.into()),
    }
}

fn already_running(pid: u32) -> ExitCode {
    eprintln!("error: mk8s is already running (supervisor pid {pid})");
    ExitCode::from(EXIT_ALREADY_RUNNING)
}
