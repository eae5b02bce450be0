//! `mk8s images`: import image archives into containerd and list its images, like
//! `microk8s images import`; no registry is needed. Owns what is printed; on disk only the
//! temporary spool file of `import -`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::common::paths::Paths;
use crate::kubelet::images;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Import image archives (`docker save` or OCI layout tar); `-` reads one from stdin
    Import {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List the images containerd has for Kubernetes
    #[command(visible_alias = "list")]
    Ls,
}

pub fn run(paths: &Paths, a: Args) -> anyhow::Result<ExitCode> {
    // Where the containerd component listens (design: $SNAP_COMMON/run/containerd.sock).
    let socket = paths.run_dir().join("containerd.sock");
    if !socket.exists() {
        anyhow::bail!(
            "mk8s is not running (no containerd socket at {}); run mk8s start",
            socket.display()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match a.action {
        Action::Import { files } => {
            for file in &files {
                let names = if file.as_os_str() == "-" {
                    let spool = spool_stdin()?;
                    rt.block_on(images::import(&socket, spool.path()))
                        .context("cannot import the archive from stdin")?
                } else {
                    import_file(&rt, &socket, file)?
                };
                if names.is_empty() {
                    eprintln!(
                        "warning: {} holds no named image for this platform",
                        display(file)
                    );
                }
                for name in names {
                    println!("Imported {name}");
                }
            }
        }
        Action::Ls => {
            let rows = rt.block_on(images::list(&socket))?;
            print_table(&rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn import_file(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
    file: &Path,
) -> anyhow::Result<Vec<String>> {
    // ctr's own message for a missing file is less clear than this.
    std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    rt.block_on(images::import(socket, file))
        .with_context(|| format!("cannot import {}", file.display()))
}

fn display(file: &Path) -> String {
    if file.as_os_str() == "-" {
        "stdin".into()
    } else {
        file.display().to_string()
    }
}

/// Copies stdin to a temporary file (removed when dropped): ctr is given a path.
fn spool_stdin() -> anyhow::Result<tempfile::NamedTempFile> {
    let mut spool = tempfile::Builder::new()
        .prefix("mk8s-image-")
        .suffix(".tar")
        .tempfile()
        .context("cannot create a temporary file for stdin")?;
    io::copy(&mut io::stdin().lock(), spool.as_file_mut()).context("cannot read stdin")?;
    Ok(spool)
}

fn print_table(rows: &[images::ImageRow]) {
    let head = ("IMAGE", "DIGEST", "SIZE");
    let w_name = rows
        .iter()
        .map(|r| r.name.len())
        .fold(head.0.len(), usize::max);
    let w_digest = rows
        .iter()
        .map(|r| r.digest.len())
        .fold(head.1.len(), usize::max);
    println!("{:w_name$}  {:w_digest$}  {}", head.0, head.1, head.2);
    for r in rows {
        println!("{:w_name$}  {:w_digest$}  {}", r.name, r.digest, r.size);
    }
}
