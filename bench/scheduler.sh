#!/usr/bin/env bash
# Scheduler throughput (issue 7): 1,000 pending pods (no nodeName, an image that never runs)
# on a datastore + API server + controller manager, with a Node object and no kubelet; then
# the scheduler starts and binds them all. Figures: pods bound per second from the first
# binding to the last, total time including the scheduler's start and first list, scheduler
# RSS with 1,000 pods in its snapshot. Anchor: upstream kube-scheduler's throughput threshold
# in scheduler_perf (SchedulingBasic/5000Nodes_10000Pods: 270 pods/s average, from
# test/integration/scheduler_perf/config/performance-config.yaml); kube-scheduler itself is
# not installed here to run beside ours. Goal: >= 300 pods/s.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000}"
ANCHOR=270
cargo build --release --locked -q
cargo bench --locked -q --bench scheduler_load --no-run 2>/dev/null
LOAD="$(ls -t target/release/deps/scheduler_load-* | grep -v '\.d$' | head -1)"
MK8S=target/release/mk8s

. bench/lib.sh

bench_args "$WORK/data"
"$MK8S" bootstrap --data-dir "$WORK/data" >/dev/null
CERTS="$WORK/data/certs"
KC="$WORK/data/credentials/client.config"
"$MK8S" daemon datastore --data-dir "$WORK/data" >"$WORK/datastore.log" 2>&1 &
PIDS+=($!)
"$MK8S" daemon apiserver --data-dir "$WORK/data" >"$WORK/apiserver.log" 2>&1 &
PIDS+=($!)
URL="https://127.0.0.1:$A_PORT"
for _ in $(seq 1 100); do
    curl -sf --cacert "$CERTS/ca.crt" "$URL/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf --cacert "$CERTS/ca.crt" "$URL/readyz" >/dev/null || { echo "bench: apiserver not ready" >&2; cat "$WORK/apiserver.log" >&2; exit 1; }
"$MK8S" daemon controller-manager --data-dir "$WORK/data" >"$WORK/kcm.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    kubectl --kubeconfig "$KC" get serviceaccount default >/dev/null 2>&1 && break
    sleep 0.2
done

declare -A R
collect() { while read -r name value unit; do R["$name"]="$value $unit"; R["$name.v"]="$value"; done; }
"$LOAD" fill "$KC" "$N" >"$WORK/fill"
collect <"$WORK/fill"
"$LOAD" bind "$KC" "$N" >"$WORK/bind" &
BIND_PID=$!; PIDS+=("$BIND_PID")
sleep 0.5
"$MK8S" daemon scheduler --data-dir "$WORK/data" >"$WORK/scheduler.log" 2>&1 &
SCHED_PID=$!; PIDS+=("$SCHED_PID")
wait "$BIND_PID" || { echo "bench: binding did not finish" >&2; tail -20 "$WORK/scheduler.log" >&2; exit 1; }
collect <"$WORK/bind"
RSS="$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$SCHED_PID/status")"
BOUND="$(kubectl --kubeconfig "$KC" get pods -o 'jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -c bench-node || true)"

printf 'scheduler benchmark: %s pending pods, one node, no kubelet\n' "$N"
printf '  %-34s %14s\n' "pods created (16 clients)" "${R[create_$N]:-n/a}"
printf '  %-34s %14s\n' "pods bound (first to last)" "${R[bind_rate]:-n/a}"
printf '  %-34s %14s\n' "  anchor: upstream threshold" "$ANCHOR pods/s"
printf '  %-34s %14s\n' "  ratio mk8s / anchor" "$(awk -v a="${R[bind_rate.v]:-0}" -v b="$ANCHOR" 'BEGIN {printf "%.2f", a / b}')"
printf '  %-34s %14s\n' "scheduler start to all bound" "${R[bind_total]:-n/a}"
printf '  %-34s %14s\n' "pods on bench-node (checked)" "$BOUND"
printf '  %-34s %14s\n' "scheduler RSS with $N pods" "$RSS MiB"
printf '  goal: >= 300 pods/s bound\n'
[ "$BOUND" = "$N" ] || { echo "bench: only $BOUND of $N pods bound" >&2; exit 1; }
