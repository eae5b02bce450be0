//! `mk8s kubectl …`: the installed kubectl with the admin kubeconfig; arguments, terminal and
//! exit code pass straight through (the process becomes kubectl).

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::bail;

use crate::common::paths::Paths;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arguments for kubectl
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<String>,
}

pub fn run(paths: &Paths, a: Args) -> anyhow::Result<ExitCode> {
    let kubeconfig = paths.data_file("credentials/client.config");
    if !kubeconfig.exists() {
        bail!(
            "{} is missing: run 'mk8s start' first",
            kubeconfig.display()
        );
    }
    let Some(kubectl) = find_in_path("kubectl") else {
        bail!("kubectl is not installed (mk8s runs the kubectl on PATH; install kubectl 1.32)");
    };
    let err = std::process::Command::new(&kubectl)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(&a.args)
        .exec();
    bail!("cannot run {}: {err}", kubectl.display())
}

fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}
