//! `mk8s config`: the admin kubeconfig for use from another machine, as `microk8s config`.

use std::net::IpAddr;
use std::process::ExitCode;

use crate::bootstrap::{self, credentials::apiserver_port};
use crate::common::{host, paths::Paths};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the loopback address (https://127.0.0.1:16443) instead of the LAN address
    #[arg(short = 'l', long)]
    use_loopback: bool,
}

pub fn run(paths: &Paths, args: Args) -> anyhow::Result<ExitCode> {
    let ip = if args.use_loopback {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host::primary_address()
    };
    let port = apiserver_port(paths);
    let server = match ip {
        IpAddr::V4(v4) => format!("https://{v4}:{port}"),
        IpAddr::V6(v6) => format!("https://[{v6}]:{port}"),
    };
    print!("{}", bootstrap::admin_kubeconfig(paths, &server)?);
    Ok(ExitCode::SUCCESS)
}
