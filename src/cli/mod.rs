//! The user's commands. One file a command; each turns module errors into `anyhow` context.
//! Owns what is printed and the exit code, nothing on disk.

mod addons;
mod bootstrap;
mod config;
mod daemon;
mod dbctl;
mod dns_addon;
mod images;
mod inspect;
mod kubectl;
mod refresh_certs;
mod reset;
mod start;
mod status;
mod stop;
mod supervise;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::common::paths::{DEFAULT_SNAP_COMMON, DEFAULT_SNAP_DATA, Paths};

/// Exit code of a command that failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command line that could not be parsed.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "mk8s",
    version,
    about = "A single-node Kubernetes in one binary, used like MicroK8s",
    propagate_version = true
)]
struct Cli {
    /// State root ($SNAP_DATA): certs/, credentials/, args/
    #[arg(long, global = true, env = "MK8S_SNAP_DATA", default_value = DEFAULT_SNAP_DATA, value_name = "DIR")]
    data_dir: PathBuf,
    /// Runtime root ($SNAP_COMMON): pid files, logs
    #[arg(long, global = true, env = "MK8S_SNAP_COMMON", default_value = DEFAULT_SNAP_COMMON, value_name = "DIR")]
    common_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start mk8s: bootstrap if needed, run every component, wait until ready
    Start(start::Args),
    /// Stop every component (data is kept)
    Stop,
    /// Whether mk8s is running, and how
    Status(status::Args),
    /// Run kubectl against this cluster
    Kubectl(kubectl::Args),
    /// Enable addons (edits args files, restarts what reads them)
    Enable(addons::Args),
    /// Disable addons
    Disable(addons::Args),
    /// Collect logs, args, certificate expiries and problems into a tarball
    Inspect(inspect::Args),
    /// Back to a fresh cluster: remove every object (asks first unless --yes)
    Reset(reset::Args),
    /// Create the CA, certificates, tokens and kubeconfigs that are missing (idempotent)
    Bootstrap,
    /// Print the admin kubeconfig, with the server set to this host's LAN address
    Config(config::Args),
    /// Renew certificates, check their expiry, or undo the last renewal
    RefreshCerts(refresh_certs::Args),
    /// Back up or restore the datastore
    Dbctl(dbctl::Args),
    /// Import and list container images (no registry needed)
    Images(images::Args),
    /// Run one component in the foreground (what the supervisor starts)
    Daemon(daemon::Args),
    /// Run the supervisor in the foreground (what `start` runs in the background, and the
    /// systemd unit in the foreground)
    Supervise(supervise::Args),
    /// Print a shell completion script
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `mk8s manpage | man -l -`
    Manpage,
}

/// Parses the command line, runs the command, prints any error as one line.
pub fn main() -> ExitCode {
    use std::io::IsTerminal;
    // Daemons log to files through stderr: colour codes only for a person at a terminal.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MK8S_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let paths = Paths::new(cli.data_dir, cli.common_dir);
    let result = match cli.command {
        Command::Start(a) => start::run(&paths, a),
        Command::Stop => stop::run(&paths),
        Command::Status(a) => status::run(&paths, a),
        Command::Kubectl(a) => kubectl::run(&paths, a),
        Command::Enable(a) => addons::run(&paths, a, true),
        Command::Disable(a) => addons::run(&paths, a, false),
        Command::Reset(a) => reset::run(&paths, a),
        Command::Inspect(a) => inspect::run(&paths, a),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "mk8s", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map(|()| ExitCode::SUCCESS)
                .map_err(anyhow::Error::from)
        }
        Command::Supervise(a) => supervise::run(&paths, a),
        Command::Bootstrap => bootstrap::run(&paths),
        Command::Config(a) => config::run(&paths, a),
        Command::RefreshCerts(a) => refresh_certs::run(&paths, a),
        Command::Dbctl(a) => dbctl::run(&paths, a),
        Command::Images(a) => images::run(&paths, a),
        Command::Daemon(a) => daemon::run(&paths, a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Help and version go to stdout as clap prints them; a bad command line becomes one line.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid command line");
            eprintln!("{} (see 'mk8s --help')", first.trim_end());
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `YYYYmmdd-HHMMSS`, for file names a command makes.
fn file_stamp(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
