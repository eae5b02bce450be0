//! `mk8s refresh-certs`: renew a certificate, check expiries, or undo the last renewal,
//! with MicroK8s's options and messages.

use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::bootstrap::{self, Host, RefreshTarget};
use crate::common::paths::Paths;

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
        print_restart(done.restart);
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
    print_restart(done.restart);
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

/// Names the components that read the new files. Restarting them is the supervisor's job
/// once it runs them; until then a running component keeps the files it loaded.
fn print_restart(components: &[&str]) {
    println!(
        "Components that must restart to use them: {}",
        components.join(", ")
    );
}
