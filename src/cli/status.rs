//! `mk8s status`, like `microk8s status`: running or not, high availability, datastore nodes,
//! addons; `--format yaml` adds each component's state, pid and restarts.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::common::paths::Paths;
use crate::datastore;
use crate::supervisor::{
    self,
    status::{State, Status},
};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Pretty,
    Short,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Wait until every component is ready
    #[arg(long)]
    wait_ready: bool,
    /// Seconds to wait with --wait-ready (0: no limit)
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    #[arg(long, value_enum, default_value_t = Format::Pretty)]
    format: Format,
}

/// The state when every component is ready, if it is.
fn ready(paths: &Paths) -> Option<Status> {
    supervisor::running(paths)?;
    supervisor::status::read(&supervisor::status_path(paths)).filter(Status::all_running)
}

pub fn run(paths: &Paths, a: Args) -> anyhow::Result<ExitCode> {
    if a.wait_ready {
        let deadline = (a.timeout > 0).then(|| Instant::now() + Duration::from_secs(a.timeout));
        while ready(paths).is_none() {
            if deadline.is_some_and(|d| Instant::now() > d) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let running = supervisor::running(paths).is_some();
    let st = supervisor::status::read(&supervisor::status_path(paths)).filter(|_| running);
    let ready = st.as_ref().is_some_and(Status::all_running);
    let peer = datastore::load_config(paths, &[])
        .ok()
        .and_then(|c| c.advertise_peer_urls.first().cloned())
        .map(|u| u.trim_start_matches("https://").to_string())
        .unwrap_or_else(|| format!("127.0.0.1:{}", datastore::DEFAULT_PEER_PORT));
    match a.format {
        Format::Yaml => {
            println!("mk8s:\n  running: {ready}");
            println!(
                "high-availability:\n  enabled: false\n  nodes:\n  - address: {peer}\n    role: voter"
            );
            println!("components:");
            for c in st.iter().flat_map(|s| &s.components) {
                println!(
                    "- name: {}\n  state: {}\n  pid: {}\n  restarts: {}",
                    c.name,
                    state_name(c.state),
                    c.pid
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "null".into()),
                    c.restarts
                );
            }
            println!("addons:");
            for a in super::addons::ADDONS {
                let state = if a.enabled(paths) {
                    "enabled"
                } else {
                    "disabled"
                };
                println!(
                    "- name: {}
  status: {state}",
                    a.name
                );
            }
        }
        Format::Short | Format::Pretty if !ready => {
            println!("mk8s is not running");
            if let Some(st) = &st {
                for c in st.components.iter().filter(|c| !c.state.is_up()) {
                    println!("  {}: {}", c.name, state_name(c.state));
                }
            }
        }
        Format::Short => {
            println!("mk8s is running");
            for c in st.iter().flat_map(|s| &s.components) {
                println!("{}: {}", c.name, state_name(c.state));
            }
        }
        Format::Pretty => {
            println!("mk8s is running");
            println!("high-availability: no");
            println!("  datastore master nodes: {peer}");
            println!("  datastore standby nodes: none");
            println!("addons:");
            for enabled in [true, false] {
                println!("  {}:", if enabled { "enabled" } else { "disabled" });
                for a in super::addons::ADDONS
                    .iter()
                    .filter(|a| a.enabled(paths) == enabled)
                {
                    println!("    {:<20} # {}", a.name, a.description);
                }
            }
        }
    }
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAILURE)
    })
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Starting => "starting",
        State::Running => "running",
        State::Backoff => "restarting",
        State::Failed => "failed",
        State::Stopping => "stopping",
        State::Stopped => "stopped",
        State::Disabled => "disabled",
    }
}
