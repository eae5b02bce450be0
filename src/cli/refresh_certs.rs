//! `mk8s refresh-certs`: renew a certificate, check expiries, or undo the last renewal,
//! with MicroK8s's options and messages.

use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::bootstrap::{self, Host, RefreshTarget};
use crate::common::paths::Paths;
use crate::supervisor;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The certificate to renew: server.crt, front-proxy-client.crt or ca.crt
    #[arg(short = 'c', long, value_name = "CERT", conflicts_with_all = ["check", "undo"])]
    cert: Option<String>,
    /// Print how many days each certificate has left
    #[arg(short = 'e', long, conflicts_with = "undo")]
    check: bool,
    /// Restore the certificates the last refresh replaced
    #[arg(short = 'u', long)]
    undo: bool,
}

pub fn run(paths: &Paths, args: Args) -> anyhow::Result<ExitCode> {
    if args.check {
        for e in bootstrap::check(paths)? {
            if e.days >= 0 {
                println!(
                    "The {} certificate will expire in {} days.",
                    e.label, e.days
                );
            } else {
                println!("The {} certificate expired {} days ago.", e.label, -e.days);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.undo {
        let done = bootstrap::undo(paths).context("cannot undo the last refresh")?;
        println!(
            "Restored {} files from {}",
            done.written.len(),
            done.backup_dir.display()
        );
        restart(paths, done.restart)?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(cert) = args.cert else {
        print_choices();
        return Ok(ExitCode::from(super::EXIT_FAILURE));
    };
    let Some(target) = RefreshTarget::from_file_name(&cert) else {
        let valid: Vec<_> = RefreshTarget::ALL.iter().map(|t| t.file_name()).collect();
        bail!(
            "unknown certificate '{cert}' for --cert: valid choices are {}",
            valid.join(", ")
        );
    };
    let done = bootstrap::refresh(paths, &Host::detect(), target)
        .with_context(|| format!("cannot refresh {cert}"))?;
    println!(
        "Took a backup of the current certificates under {}/",
        done.backup_dir.display()
    );
    println!(
        "Created new certificates: wrote {} files",
        done.written.len()
    );
    restart(paths, done.restart)?;
    Ok(ExitCode::SUCCESS)
}

fn print_choices() {
    eprintln!("Please use the '--cert' flag to select the certificate you need refreshed.");
    eprintln!();
    eprintln!("Available certificate options:");
    for t in RefreshTarget::ALL {
        eprintln!("'{}': {}", t.file_name(), t.describe());
    }
}

/// How long a restarted component has to be ready again.
const RESTART_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// Restarts, one by one, the running components that read the new files (the supervisor
/// does it on request: no crash counted, no back-off); nothing runs: the next start uses them.
fn restart(paths: &Paths, components: &[&str]) -> anyhow::Result<()> {
    if supervisor::running(paths).is_none() {
        println!("mk8s is not running: the new certificates are used when it starts");
        return Ok(());
    }
    let _serialised = supervisor::cli_lock(paths)?;
    for c in components
        .iter()
        .filter(|c| supervisor::COMPONENTS.iter().any(|d| d.name == **c))
    {
        println!("Restarting {c}");
        supervisor::restart_component(paths, c, RESTART_TIMEOUT)
            .with_context(|| format!("cannot restart {c}"))?;
    }
    Ok(())
}
