//! mk8s: a single-node Kubernetes distribution in one binary. This file only parses the
//! command line, runs the command and turns its outcome into one line and an exit code.

mod apiserver;
mod bootstrap;
mod cli;
mod common;
mod controllers;
mod datastore;
mod dns;
mod kubelet;
mod proxy;
mod scheduler;
mod supervisor;

fn main() -> std::process::ExitCode {
    cli::main()
}
