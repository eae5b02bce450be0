//! `mk8s reset`: back to a fresh cluster. Removes the datastore's data (every object), keeps
//! the certificates and credentials, and starts again if mk8s was running.
//! `--destroy-storage` also removes `$SNAP_COMMON/default-storage` (hostpath volumes, as
//! MicroK8s's reset does). Asks first unless `--yes`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::common::paths::Paths;
use crate::{datastore, supervisor};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also remove persistent volumes stored on this host
    #[arg(long)]
    destroy_storage: bool,
    /// Do not ask for confirmation
    #[arg(short = 'y', long)]
    yes: bool,
}

pub fn run(paths: &Paths, a: Args) -> anyhow::Result<ExitCode> {
    let config = datastore::load_config(paths, &[])?;
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to reset without --yes: standard input is not a terminal");
        }
        print!("This removes every object in the cluster. Continue? [y/N] ");
        std::io::stdout().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Reset cancelled.");
            return Ok(ExitCode::from(super::EXIT_FAILURE));
        }
    }
    let was_running = supervisor::running(paths).is_some();
    if was_running {
        let _serialised = supervisor::cli_lock(paths)?;
        super::stop::stop_supervisor(paths, std::time::Duration::from_secs(60))?;
        println!("Stopped.");
    }
    let mut removed = vec![config.storage_dir.clone()];
    if a.destroy_storage {
        removed.push(paths.snap_common.join("default-storage"));
    }
    for dir in &removed {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => println!("Removed {}", dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot remove {}: {e}", dir.display()),
        }
    }
    if was_running {
        return super::start::run(paths, super::start::Args::default());
    }
    Ok(ExitCode::SUCCESS)
}
