#!/usr/bin/env bash
# README command 1: install system packages, build mk8s, install it, and start it: PKI and
# credentials on first run, then every component that exists, waiting until ready.
set -euo pipefail
cd "$(dirname "$0")/.."
. packaging/deps.sh
mk8s_install_packages build
cargo build --release --locked
install -m 0755 target/release/mk8s /usr/local/bin/mk8s
mk8s start
mk8s status
