//! `mk8s inspect`: a tarball for a bug report, as `microk8s inspect` makes: the supervisor's
//! state, every component's args file and log tail, certificate expiries, versions, and a list
//! of problems found (ports taken, certificates expiring, components restarting or down).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::bootstrap;
use crate::common::paths::Paths;
use crate::datastore;
use crate::supervisor::{self, COMPONENTS};

/// Log lines kept per component.
const LOG_TAIL_LINES: usize = 2000;
/// A certificate this close to expiry is a problem.
const EXPIRY_WARNING_DAYS: i64 = 30;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the report (default: $SNAP_DATA/inspection-report-<time>.tar.gz)
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Everything wrong that can be seen from here, one line each.
fn problems(paths: &Paths) -> Vec<String> {
    let mut found = Vec::new();
    let running = supervisor::running(paths).is_some();
    let status = supervisor::status::read(&supervisor::status_path(paths)).filter(|_| running);
    if running {
        for c in status.iter().flat_map(|s| &s.components) {
            if !c.state.is_up() {
                found.push(format!(
                    "{} is not running ({:?}): {}",
                    c.name,
                    c.state,
                    c.last_error.as_deref().unwrap_or("no error recorded")
                ));
            }
            if c.restarts >= 3 {
                found.push(format!(
                    "{} is crash-looping: restarted {} times",
                    c.name, c.restarts
                ));
            }
        }
    } else {
        // Stopped: the ports the components need must be free for the next start.
        if let Err(why) = supervisor::preflight(paths) {
            found.push(why);
        }
    }
    match bootstrap::check(paths) {
        Ok(expiries) => {
            for e in expiries
                .into_iter()
                .filter(|e| e.days < EXPIRY_WARNING_DAYS)
            {
                found.push(format!(
                    "the {} certificate expires in {} days: run mk8s refresh-certs",
                    e.label, e.days
                ));
            }
        }
        Err(e) => found.push(format!("certificates: {e}")),
    }
    found
}

fn versions() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut out = format!(
        "mk8s {}\netcd API {}\nkernel {}\n",
        env!("CARGO_PKG_VERSION"),
        datastore::ETCD_VERSION,
        kernel.trim()
    );
    for tool in [
        ["containerd", "--version"],
        ["runc", "--version"],
        ["kubectl", "version"],
    ] {
        let line = std::process::Command::new(tool[0])
            .arg(tool[1])
            .args(if tool[0] == "kubectl" {
                &["--client"][..]
            } else {
                &[][..]
            })
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_else(|| "not installed".into());
        out.push_str(&format!("{}: {line}\n", tool[0]));
    }
    out
}

/// What the real kubectl says about the cluster (`get nodes`, `get pods -A`…), or why it
/// could not say it; bounded so a hung API server cannot hang the report.
fn cluster_summary(paths: &Paths, args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(paths.data_file("credentials/client.config"))
        .arg("--request-timeout=5s")
        .args(args)
        .output();
    match out {
        Ok(o) => {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text
        }
        Err(e) => format!("cannot run kubectl: {e}\n"),
    }
}

pub fn run(paths: &Paths, a: Args) -> anyhow::Result<ExitCode> {
    let now = time::OffsetDateTime::now_utc();
    let output = a.output.unwrap_or_else(|| {
        paths.data_file(format!(
            "inspection-report-{}.tar.gz",
            super::file_stamp(now)
        ))
    });
    let found = problems(paths);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut problems_txt = found.join("\n");
    problems_txt.push('\n');
    files.push(("problems.txt".into(), problems_txt.into_bytes()));
    files.push(("versions.txt".into(), versions().into_bytes()));
    let certs = match bootstrap::check(paths) {
        Ok(list) => list
            .iter()
            .map(|e| {
                format!(
                    "The {} certificate will expire in {} days.\n",
                    e.label, e.days
                )
            })
            .collect::<String>(),
        Err(e) => format!("{e}\n"),
    };
    files.push(("certificates.txt".into(), certs.into_bytes()));
    if let Ok(status) = std::fs::read(supervisor::status_path(paths)) {
        files.push(("supervisor/status.json".into(), status));
    }
    for c in COMPONENTS {
        if let Ok(args) = std::fs::read(paths.data_file(format!("args/{}", c.args_file))) {
            files.push((format!("args/{}", c.args_file), args));
        }
    }
    for (file, what) in [
        ("k8s/nodes.txt", &["get", "nodes", "-o", "wide"][..]),
        ("k8s/pods.txt", &["get", "pods", "-A", "-o", "wide"][..]),
        ("k8s/events.txt", &["get", "events", "-A"][..]),
    ] {
        files.push((file.into(), cluster_summary(paths, what).into_bytes()));
    }
    for name in COMPONENTS.iter().map(|c| c.name).chain(["supervisor"]) {
        let log = supervisor::logs::tail(&supervisor::log_path(paths, name), LOG_TAIL_LINES);
        files.push((format!("logs/{name}.log"), log.into_bytes()));
    }

    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let gz = flate2::write::GzEncoder::new(tmp.as_file(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (name, data) in &files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(now.unix_timestamp().max(0) as u64);
            header.set_cksum();
            tar.append_data(
                &mut header,
                format!("inspection-report/{name}"),
                data.as_slice(),
            )
            .context("cannot write the report")?;
        }
        tar.into_inner()
            .and_then(|gz| gz.finish())
            .and_then(|mut f| f.flush())
            .context("cannot finish the report")?;
    }
    tmp.as_file().sync_all().context("cannot sync the report")?;
    tmp.persist(&output)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", output.display()))?;

    if found.is_empty() {
        println!("No problems found.");
    } else {
        println!("Problems found:");
        for p in &found {
            println!("  - {p}");
        }
    }
    println!("Report tarball is at {}", output.display());
    Ok(ExitCode::SUCCESS)
}
