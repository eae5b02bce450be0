//! `mk8s dbctl`: back up the datastore while it serves, restore it while it is stopped
//! (MicroK8s's `microk8s dbctl`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::common::paths::Paths;
use crate::datastore::{self, dbctl};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Save a consistent snapshot of the running datastore (default: ./mk8s-datastore-<time>.db)
    Backup {
        /// File to write
        file: Option<PathBuf>,
    },
    /// Replace the stopped datastore's data with a backup (or an `etcdctl snapshot save` file)
    Restore {
        /// Backup file to restore
        file: PathBuf,
    },
}

pub fn run(paths: &Paths, a: Args) -> anyhow::Result<ExitCode> {
    let config = datastore::load_config(paths, &[])?;
    match a.action {
        Action::Backup { file } => {
            let file = file.unwrap_or_else(|| {
                let stamp = super::file_stamp(time::OffsetDateTime::now_utc());
                PathBuf::from(format!("mk8s-datastore-{stamp}.db"))
            });
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let bytes = rt.block_on(dbctl::backup(&config, &paths.data_file("certs"), &file))?;
            println!(
                "Backed up the datastore to {} ({bytes} bytes)",
                file.display()
            );
        }
        Action::Restore { file } => {
            let live = dbctl::restore(&config, &file)?;
            println!("Restored {} into {}", file.display(), live.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
