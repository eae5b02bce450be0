#!/usr/bin/env bash
# README command 2: install what the tests need and run every test (unit + integration),
# then the .deb test on the release build, then the bootstrap, API server, pod, scheduler, RBAC,
# service proxy and DNS benchmarks. Build once: the tests reuse the same target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
. packaging/deps.sh
mk8s_install_packages test
cargo build --locked --all-targets
cargo test --locked --no-fail-fast
cargo build --release --locked
bash packaging/deb-test.sh
BENCH_RUNS="${BENCH_RUNS:-5}" bench/bootstrap.sh
bench/apiserver.sh
bench/pods.sh
bench/scheduler.sh
bench/rbac.sh
bench/services.sh
bench/dns.sh
