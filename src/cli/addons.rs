//! `mk8s enable NAME…` / `mk8s disable NAME…`, as `microk8s enable`: an addon changes args
//! files and restarts the components that read them; whether it is enabled is read back from
//! those files, so `status` and a hand edit never disagree.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::common::args;
use crate::common::paths::Paths;
use crate::supervisor;

/// How long a restarted component has to be ready again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Addons, e.g. rbac
    #[arg(required = true, value_name = "ADDON")]
    names: Vec<String>,
}

/// One flag an addon sets in a component's args file.
struct FlagChange {
    /// The supervisor's component name (its args file is `args_file`).
    component: &'static str,
    args_file: &'static str,
    flag: &'static str,
    enabled: &'static str,
    disabled: &'static str,
}

pub struct Addon {
    pub name: &'static str,
    pub description: &'static str,
    flags: &'static [FlagChange],
}

pub const ADDONS: &[Addon] = &[Addon {
    name: "rbac",
    description: "Role-Based Access Control for authorisation",
    flags: &[
        FlagChange {
            component: "apiserver",
            args_file: "kube-apiserver",
            flag: "authorization-mode",
            enabled: "RBAC,Node",
            disabled: "AlwaysAllow",
        },
        // The kubelet's API is locked down with the rest: callers need `nodes/proxy`,
        // `nodes/stats`… (asked of the API server), and may bring a token instead of a cert.
        FlagChange {
            component: "kubelet",
            args_file: "kubelet",
            flag: "authorization-mode",
            enabled: "Webhook",
            disabled: "AlwaysAllow",
        },
        FlagChange {
            component: "kubelet",
            args_file: "kubelet",
            flag: "authentication-token-webhook",
            enabled: "true",
            disabled: "false",
        },
    ],
}];

fn flag_value(paths: &Paths, f: &FlagChange) -> Option<String> {
    let file = paths.data_file("args").join(f.args_file);
    args::load(&file, &[], &paths.vars())
        .ok()?
        .into_iter()
        .rev()
        .find(|x| x.name == f.flag)
        .map(|x| x.value)
}

impl Addon {
    /// Whether every flag of the addon has its enabled value.
    pub fn enabled(&self, paths: &Paths) -> bool {
        self.flags
            .iter()
            .all(|f| flag_value(paths, f).as_deref() == Some(f.enabled))
    }
}

fn find(name: &str) -> anyhow::Result<&'static Addon> {
    ADDONS.iter().find(|a| a.name == name).with_context(|| {
        let known: Vec<&str> = ADDONS.iter().map(|a| a.name).collect();
        format!("addon {name:?} not found; available: {}", known.join(", "))
    })
}

pub fn run(paths: &Paths, a: Args, enable: bool) -> anyhow::Result<ExitCode> {
    let addons: Vec<&Addon> = a
        .names
        .iter()
        .map(|n| find(n))
        .collect::<anyhow::Result<_>>()?;
    let _serialised = supervisor::cli_lock(paths)?;
    for addon in addons {
        let verb = if enable { "Enabling" } else { "Disabling" };
        if addon.enabled(paths) == enable {
            println!(
                "Addon {} is already {}",
                addon.name,
                if enable { "enabled" } else { "disabled" }
            );
            continue;
        }
        println!("{verb} {}", addon.name);
        let mut restart = Vec::new();
        for f in addon.flags {
            let file = paths.data_file("args").join(f.args_file);
            let value = if enable { f.enabled } else { f.disabled };
            args::set_flag(&file, f.flag, Some(value))
                .with_context(|| format!("cannot set --{} in {}", f.flag, file.display()))?;
            if !restart.contains(&f.component) {
                restart.push(f.component);
            }
        }
        if supervisor::running(paths).is_some() {
            for c in restart {
                println!("Restarting {c}");
                supervisor::restart_component(paths, c, RESTART_TIMEOUT)
                    .with_context(|| format!("cannot restart {c}"))?;
            }
        }
        println!(
            "{} is {}",
            addon.name,
            if enable { "enabled" } else { "disabled" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
