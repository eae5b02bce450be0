#!/usr/bin/env bash
# README command 1: install system packages, build mk8s, install it, and set up the cluster's
# PKI and credentials (`mk8s bootstrap`). Starting daemons arrives with the supervisor.
set -euo pipefail
cd "$(dirname "$0")/.."
. packaging/deps.sh
mk8s_install_packages build
cargo build --release --locked
install -m 0755 target/release/mk8s /usr/local/bin/mk8s
mk8s bootstrap
mk8s refresh-certs --check
