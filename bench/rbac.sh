#!/usr/bin/env bash
# What RBAC costs, measured in one run beside its anchor: the same API server and datastore
# with --authorization-mode=AlwaysAllow. In both, namespace `bench` holds 1,000 RoleBindings
# for other users plus the one that lets system:kube-proxy (proxy.crt) write there; creates
# of 1 KiB ConfigMaps by 32 proxy clients, and SubjectAccessReview round trips (decision +
# HTTPS). Figures (issue 9): create throughput RBAC/AlwaysAllow (goal >= 0.95, i.e. RBAC
# costs <= 5%), as the median of each round's ratio of its two adjacent runs; SAR p50 with
# 1,000 bindings minus the AlwaysAllow SAR p50 (the decision's cost). RBAC_ROUNDS rounds
# (default 5), which mode runs first alternating so that drifting load on the machine
# favours neither; medians.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
cargo bench --locked -q --bench apiserver_load --no-run 2>/dev/null
LOAD="$(ls -t target/release/deps/apiserver_load-* | grep -v '\.d$' | head -1)"
MK8S=target/release/mk8s

. bench/lib.sh

declare -A R
# run MODE: a fresh datastore and API server in MODE; fills R[MODE.figure].
run() {
    local mode="$1" data="$WORK/$1.$RANDOM"
    "$MK8S" bootstrap --data-dir "$data" >/dev/null
    bench_args "$data"
    sed -i "s/^--authorization-mode=.*/--authorization-mode=$mode/" "$data/args/kube-apiserver"
    "$MK8S" daemon datastore --data-dir "$data" >"$data.datastore.log" 2>&1 &
    local ds=$!; PIDS+=("$ds")
    "$MK8S" daemon apiserver --data-dir "$data" >"$data.apiserver.log" 2>&1 &
    local api=$!; PIDS+=("$api")
    local url="https://127.0.0.1:$A_PORT"
    for _ in $(seq 1 100); do
        curl -sf --cacert "$data/certs/ca.crt" "$url/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -sf --cacert "$data/certs/ca.crt" "$url/readyz" >/dev/null || { echo "bench: apiserver not ready ($mode)" >&2; cat "$data.apiserver.log" >&2; exit 1; }
    while read -r name value unit; do R["$mode.$name"]+="$value "; done < <(
        "$LOAD" bindings "$url" "$data/certs" 1000
        BENCH_CLIENT=proxy "$LOAD" create32 "$url" "$data/certs"
        "$LOAD" sar "$url" "$data/certs")
    kill "$api" "$ds"; wait "$api" "$ds" 2>/dev/null || true
}
ROUNDS="${RBAC_ROUNDS:-5}"
RATIOS=""
for i in $(seq 1 "$ROUNDS"); do
    # Which mode goes first alternates, so drift in the machine's load favours neither.
    if [ $((i % 2)) = 1 ]; then run AlwaysAllow; run RBAC,Node; else run RBAC,Node; run AlwaysAllow; fi
    a="$(echo "${R[AlwaysAllow.api_creates_32]}" | awk '{ print $NF }')"
    r="$(echo "${R[RBAC,Node.api_creates_32]}" | awk '{ print $NF }')"
    RATIOS+="$(awk -v r="$r" -v a="$a" 'BEGIN { printf "%.3f", r / a }') "
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for k in "${!R[@]}"; do R["$k"]="$(echo "${R[$k]}" | median)"; done

printf '%-34s %14s %14s\n' "rbac benchmark" "AlwaysAllow" "RBAC,Node"
for k in api_creates_32 create_p50 create_p99 sar_p50 sar_p99; do
    printf '%-34s %14s %14s\n' "$k" "${R[AlwaysAllow.$k]:-n/a}" "${R[RBAC,Node.$k]:-n/a}"
done
echo "ratio creates/s RBAC / AlwaysAllow, each round: $RATIOS"
echo "ratio creates/s RBAC / AlwaysAllow (median of the rounds' ratios): $(echo "$RATIOS" | median) (goal >= 0.95)"
awk -v r="${R[RBAC,Node.sar_p50]}" -v a="${R[AlwaysAllow.sar_p50]}" \
    'BEGIN { printf "decision cost with 1,000 RoleBindings (SAR p50 difference): %.3f ms\n", r - a }'
