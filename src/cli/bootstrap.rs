//! `mk8s bootstrap`: the first-start setup and nothing else.

use std::process::ExitCode;

use anyhow::Context;

use crate::bootstrap::{self, Host};
use crate::common::paths::Paths;

pub fn run(paths: &Paths) -> anyhow::Result<ExitCode> {
    let done = bootstrap::bootstrap(paths, &Host::detect())
        .with_context(|| format!("bootstrap of {} failed", paths.snap_data.display()))?;
    if done.written.is_empty() {
        println!(
            "mk8s is already bootstrapped in {}: every certificate and credential is in place",
            paths.snap_data.display()
        );
    } else {
        println!(
            "Bootstrapped {}: wrote {} files",
            paths.snap_data.display(),
            done.written.len()
        );
        for f in &done.written {
            println!("  {f}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
