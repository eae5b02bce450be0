#!/usr/bin/env bash
# README command 2: install what the tests need and run every test (unit + integration),
# then the .deb test on the release build, then the bootstrap, API server, pod, scheduler, RBAC,
# service proxy and DNS benchmarks. Build once: the tests reuse the same target dir.
set -euo pipefail
cd "$(dirname "$0")/.."
. packaging/deps.sh
mk8s_install_packages test
# Each step's duration, so the run's time budget can be watched.
step() {
    local start=$SECONDS
    "$@"
    echo "[step took $((SECONDS - start)) s: $*]"
}
step cargo build --locked --all-targets
step cargo test --locked --no-fail-fast
step cargo build --release --locked
step bash packaging/deb-test.sh
BENCH_RUNS="${BENCH_RUNS:-5}" step bench/bootstrap.sh
step bench/apiserver.sh
step bench/pods.sh
step bench/scheduler.sh
step bench/rbac.sh
step bench/services.sh
step bench/dns.sh
