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
    /// `None`: the flag is removed.
    disabled: Option<&'static str>,
}

/// What an addon does besides setting flags: objects in the API, files of its own.
struct Hooks {
    /// Whether its own part is on (besides its flags).
    enabled: fn(&Paths) -> bool,
    /// Before the flags are set and components restarted; the cluster is running.
    enable: fn(&Paths) -> anyhow::Result<()>,
    /// After the flags are reset and components restarted.
    disable: fn(&Paths) -> anyhow::Result<()>,
}

pub struct Addon {
    pub name: &'static str,
    pub description: &'static str,
    flags: &'static [FlagChange],
    /// Supervised components of its own, started while it is on (after the flags' restarts).
    components: &'static [&'static str],
    hooks: Option<Hooks>,
}

pub const ADDONS: &[Addon] = &[
    Addon {
        name: "dns",
        description: "CoreDNS-compatible cluster DNS (hickory-server)",
        flags: &[FlagChange {
            component: "kubelet",
            args_file: "kubelet",
            flag: "cluster-dns",
            enabled: crate::dns::SERVICE_IP,
            disabled: None,
        }],
        components: &["dns"],
        hooks: Some(Hooks {
            enabled: super::dns_addon::installed,
            enable: super::dns_addon::enable,
            disable: super::dns_addon::disable,
        }),
    },
    Addon {
        name: "rbac",
        description: "Role-Based Access Control for authorisation",
        flags: &[
            FlagChange {
                component: "apiserver",
                args_file: "kube-apiserver",
                flag: "authorization-mode",
                enabled: "RBAC,Node",
                disabled: Some("AlwaysAllow"),
            },
            // The kubelet's API is locked down with the rest: callers need `nodes/proxy`,
            // `nodes/stats`… (asked of the API server), and may bring a token instead of a cert.
            FlagChange {
                component: "kubelet",
                args_file: "kubelet",
                flag: "authorization-mode",
                enabled: "Webhook",
                disabled: Some("AlwaysAllow"),
            },
            FlagChange {
                component: "kubelet",
                args_file: "kubelet",
                flag: "authentication-token-webhook",
                enabled: "true",
                disabled: Some("false"),
            },
        ],
        components: &[],
        hooks: None,
    },
];

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
            && self.hooks.as_ref().is_none_or(|h| (h.enabled)(paths))
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
        let running = supervisor::running(paths).is_some();
        if let Some(h) = &addon.hooks {
            anyhow::ensure!(
                running,
                "mk8s is not running; `mk8s start` first ({} needs the API server)",
                addon.name
            );
            if enable {
                (h.enable)(paths)?;
            }
        }
        let mut restart = Vec::new();
        for f in addon.flags {
            let file = paths.data_file("args").join(f.args_file);
            let value = if enable { Some(f.enabled) } else { f.disabled };
            args::set_flag(&file, f.flag, value)
                .with_context(|| format!("cannot set --{} in {}", f.flag, file.display()))?;
            if !restart.contains(&f.component) {
                restart.push(f.component);
            }
        }
        restart.extend(addon.components);
        if running {
            for c in restart {
                println!(
                    "{} {c}",
                    if addon.components.contains(&c) && !enable {
                        "Stopping"
                    } else {
                        "Restarting"
                    }
                );
                supervisor::restart_component(paths, c, RESTART_TIMEOUT)
                    .with_context(|| format!("cannot restart {c}"))?;
            }
        }
        if let Some(h) = &addon.hooks
            && !enable
        {
            (h.disable)(paths)?;
        }
        println!(
            "{} is {}",
            addon.name,
            if enable { "enabled" } else { "disabled" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
