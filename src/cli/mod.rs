//! The user's commands. One file a command; each turns module errors into `anyhow` context.
//! Owns what is printed and the exit code, nothing on disk.

mod bootstrap;
mod config;
mod daemon;
mod dbctl;
mod refresh_certs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::common::paths::{DEFAULT_SNAP_DATA, Paths};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the CA, certificates, tokens and kubeconfigs that are missing (idempotent)
    Bootstrap,
    /// Print the admin kubeconfig, with the server set to this host's LAN address
    Config(config::Args),
    /// Renew certificates, check their expiry, or undo the last renewal
    RefreshCerts(refresh_certs::Args),
    /// Back up or restore the datastore
    Dbctl(dbctl::Args),
    /// Run one component in the foreground (what the supervisor starts)
    Daemon(daemon::Args),
}

/// Parses the command line, runs the command, prints any error as one line.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MK8S_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let paths = Paths::new(cli.data_dir);
    let result = match cli.command {
        Command::Bootstrap => bootstrap::run(&paths),
        Command::Config(a) => config::run(&paths, a),
        Command::RefreshCerts(a) => refresh_certs::run(&paths, a),
        Command::Dbctl(a) => dbctl::run(&paths, a),
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

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
