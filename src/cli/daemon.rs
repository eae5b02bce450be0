//! `mk8s daemon <component>`: runs one component in the foreground, as the supervisor will.
//! Flags come from `$SNAP_DATA/args/<component>`, then from the command line.

use std::process::ExitCode;

use anyhow::Context;

use crate::common::paths::Paths;
use crate::{apiserver, controllers, datastore, dns, kubelet, proxy, scheduler};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Component {
    /// The etcd-v3-API datastore on 12379 and 19001
    Datastore,
    /// The Kubernetes API server on 16443
    Apiserver,
    /// The controller manager on 10257: root CA, service accounts, namespace deletion
    ControllerManager,
    /// The scheduler on 10259: binds pending pods to nodes
    Scheduler,
    /// containerd (Debian's binary) with mk8s's rendered config, on a unix socket
    Containerd,
    /// The kubelet on 10250/10255: runs this node's pods on containerd
    Kubelet,
    /// The service proxy: Services and EndpointSlices as nftables rules; health on 10256
    Proxy,
    /// Cluster DNS on the node's address, port 53 (while `mk8s enable dns` is on)
    Dns,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component to run
    #[arg(value_enum)]
    component: Component,
    /// Upstream-style flags (`--flag=value`), applied after the args file's
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "FLAGS"
    )]
    flags: Vec<String>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(paths: &Paths, a: Args) -> anyhow::Result<ExitCode> {
    match a.component {
        Component::Datastore => {
            let config = datastore::load_config(paths, &a.flags)?;
            runtime()?.block_on(datastore::run(config))?;
        }
        Component::Apiserver => {
            let config = apiserver::load_config(paths, &a.flags)?;
            runtime()?.block_on(apiserver::run(config))?;
        }
        Component::ControllerManager => {
            let config = controllers::load_config(paths, &a.flags)?;
            runtime()?.block_on(controllers::run(config))?;
        }
        Component::Scheduler => {
            let config = scheduler::load_config(paths, &a.flags)?;
            runtime()?.block_on(scheduler::run(config))?;
        }
        Component::Containerd => {
            let config = kubelet::containerd::load_config(paths, &a.flags)?;
            runtime()?.block_on(kubelet::containerd::run(config))?;
        }
        Component::Kubelet => {
            let config = kubelet::load_config(paths, &a.flags)?;
            runtime()?.block_on(kubelet::run(config))?;
        }
        Component::Proxy => {
            let config = proxy::load_config(paths, &a.flags)?;
            runtime()?.block_on(proxy::run(config))?;
        }
        Component::Dns => {
            let config = dns::load_config(paths, &a.flags)?;
            runtime()?.block_on(dns::run(config))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
